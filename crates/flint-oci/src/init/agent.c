/*
 * flint's guest init: its loop while the workload runs, and the agent. The init reaps its
 * children (SIGCHLD through a signalfd) and serves the host's connections on the vsock port
 * AGENT_PORT (src/agent.rs documents the protocol): a signal for the workload, or a second
 * process started inside the running container (`exec`), whose stdio it relays.
 *
 * Everything happens in one poll loop over non-blocking descriptors, so no connection can
 * hold up another or the workload's exit: the workload's status is returned as soon as it is
 * reaped, whatever the connections are doing (their processes are then cut off). Each
 * connection buffers a bounded amount: one frame of input, and OUT_CAP bytes of frames for
 * the host; a process's output is read only while there is room, so a host that stops
 * reading stops that process's output pipe, not the init. A host that breaks the protocol
 * loses its connection. The agent prints nothing: the init's console is the workload's.
 */
#include "flint-init.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* Frames queued for the host, per connection. */
#define OUT_CAP (64u << 10)
/* The most one read of a process's output takes (one STDOUT or STDERR frame). */
#define READ_CHUNK (16u << 10)
/* What a child reports before it could exec, kept for the ERROR frame. */
#define ERROR_TEXT_MAX 1024
#define MAX_CONNS (AGENT_MAX_EXECS + AGENT_MAX_PENDING)
/* The highest signal number (SIGRTMAX on Linux). */
#define SIGNAL_MAX 64

enum conn_state {
	CONN_FREE,
	CONN_REQUEST,  /* reading the request, the first frame */
	CONN_STARTING, /* an exec's child is on its way to execve */
	CONN_RUNNING,  /* relaying, until the process has exited and its output is sent */
	CONN_CLOSING,  /* sending the last frames, then closing */
	CONN_DETACHED, /* the host is gone; the process keeps its slot until it is reaped */
};

struct conn {
	enum conn_state state;
	int sock;
	long long deadline; /* CONN_REQUEST and CONN_CLOSING: monotonic milliseconds */

	/* The frame being read: its header, then its payload. */
	unsigned char head[AGENT_HEADER_SIZE];
	size_t head_got;
	unsigned char *body;
	size_t body_len, body_got, body_cap;

	/* Frames for the host, out[out_off, out_len); allocated on first use. */
	unsigned char *out;
	size_t out_off, out_len;

	/* An exec's process. */
	pid_t pid; /* in the init's PID namespace; 0: none */
	bool reaped;
	int exit_code;		/* once reaped: the exit code or 128+signal */
	uint32_t container_pid; /* as the container sees it, reported by the child */
	bool have_pid;
	int status_fd;	  /* the child's status channel, until it closes (at execve) */
	bool terminal;	  /* in_fd and out_fd are a pty's master */
	int in_fd;	  /* where STDIN data goes; -1 once closed */
	int out_fd;	  /* the process's stdout (and stderr, with a terminal); -1 once done */
	int err_fd;	  /* its stderr; -1 with a terminal or once done */
	unsigned char *input; /* one STDIN frame's data, not all written yet */
	size_t input_off, input_len;
	char error[ERROR_TEXT_MAX]; /* what the child reported before it could exec */
	size_t error_len;
};

static struct conn conns[MAX_CONNS];
static const struct agent_options *opts;
/* The signal mask the init had before the loop blocked SIGCHLD: its children get it back. */
static sigset_t child_mask;

static long long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* The status of a wait as a shell reports it: the exit code, or 128+N if signal N killed it. */
static int exit_code(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return EXIT_SETUP_FAILED;
}

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static bool has_process(const struct conn *c)
{
	return c->state == CONN_STARTING || c->state == CONN_RUNNING || c->state == CONN_DETACHED;
}

static bool is_pending(const struct conn *c)
{
	return c->state == CONN_REQUEST || c->state == CONN_CLOSING;
}

static size_t count(bool (*which)(const struct conn *))
{
	size_t n = 0;
	for (size_t i = 0; i < MAX_CONNS; i++)
		n += which(&conns[i]);
	return n;
}

/* Drops what the connection holds but its process. */
static void release(struct conn *c)
{
	close_fd(&c->sock);
	close_fd(&c->status_fd);
	close_fd(&c->in_fd);
	close_fd(&c->out_fd);
	close_fd(&c->err_fd);
	free(c->body);
	free(c->out);
	free(c->input);
	c->body = c->out = c->input = NULL;
}

static void conn_free(struct conn *c)
{
	release(c);
	*c = (struct conn){.state = CONN_FREE, .sock = -1, .status_fd = -1, .in_fd = -1,
			   .out_fd = -1, .err_fd = -1};
}

/*
 * The host is gone or broke the protocol: the connection ends. A process still running
 * loses its stdio as if its terminal or pipes went away (EOF on stdin, EPIPE on output, a
 * hangup for a terminal) and keeps its slot until it is reaped.
 */
static void host_gone(struct conn *c)
{
	if (c->pid > 0 && !c->reaped) {
		release(c);
		c->state = CONN_DETACHED;
		return;
	}
	conn_free(c);
}

/* Room for a frame with a payload of `len` bytes in the output queue. */
static bool room_for(struct conn *c, size_t len)
{
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	return OUT_CAP - (c->out_len - c->out_off) >= AGENT_HEADER_SIZE + len;
}

/* Queues a frame (the caller checked room_for); false if out of memory. */
static bool queue_frame(struct conn *c, uint8_t type, const void *payload, size_t len)
{
	if (c->out == NULL && (c->out = malloc(OUT_CAP)) == NULL)
		return false;
	if (!room_for(c, len))
		return false;
	if (OUT_CAP - c->out_len < AGENT_HEADER_SIZE + len) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	unsigned char *p = c->out + c->out_len;
	p[0] = type;
	put_le32(p + 1, (uint32_t)len);
	if (len > 0)
		memcpy(p + AGENT_HEADER_SIZE, payload, len);
	c->out_len += AGENT_HEADER_SIZE + len;
	return true;
}

static bool queue_u32(struct conn *c, uint8_t type, uint32_t value)
{
	unsigned char payload[4];
	put_le32(payload, value);
	return queue_frame(c, type, payload, sizeof payload);
}

/* After the last frame: the connection closes once they are sent, or at its deadline. */
static void closing(struct conn *c)
{
	free(c->body);
	c->body = NULL;
	c->state = CONN_CLOSING;
	c->deadline = now_ms() + opts->request_timeout_ms;
}

/* Answers the request with an ERROR frame, then closes. */
__attribute__((format(printf, 2, 3))) static void refuse(struct conn *c, const char *fmt, ...)
{
	char text[ERROR_TEXT_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	queue_frame(c, AGENT_ERROR, text, strlen(text));
	closing(c);
}

/* Sends what is queued, as far as the socket takes it. */
static void flush(struct conn *c)
{
	while (c->sock >= 0 && c->out_off < c->out_len) {
		ssize_t n = send(c->sock, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				host_gone(c);
			return;
		}
		c->out_off += (size_t)n;
	}
}

/* A file system of `type` at `dir` in the init's mount namespace, unless one is there. */
static int ensure_mounted(const char *dir, const char *type, unsigned long magic,
			  unsigned long flags, const char *data)
{
	struct statfs sf;
	if (statfs(dir, &sf) == 0 && (unsigned long)sf.f_type == magic)
		return 0;
	if (mkdir_p(dir, 0755) < 0)
		return -1;
	return mount(type, dir, type, flags, data);
}

/*
 * A pty from the init's devpts (mounted on first use; the initramfs's /dev is a devtmpfs,
 * whose ptmx opens the devpts mounted at /dev/pts): the master non-blocking for the loop,
 * the slave for the process.
 */
static int open_pty(int *master, int *slave)
{
	/* Not nodev: the process may reopen its terminal (/dev/stdin is /proc/self/fd/0). */
	if (ensure_mounted("/dev/pts", "devpts", DEVPTS_SUPER_MAGIC, MS_NOSUID | MS_NOEXEC,
			   "mode=0620,ptmxmode=0666") < 0)
		return -1;
	int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (m < 0)
		return -1;
	int unlock = 0;
	int s = -1;
	if (ioctl(m, TIOCSPTLCK, &unlock) < 0 ||
	    (s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		int saved = errno;
		close(m);
		errno = saved;
		return -1;
	}
	*master = m;
	*slave = s;
	return 0;
}

/*
 * Joins the workload's namespaces, mount last (its /proc/PID/ns paths are the init's). A
 * namespace the process shares already is left alone: in the guest, the PID namespace (the
 * init unshared it for the workload, so every child of the init is born in it) and those the
 * workload does not have of its own; on the host, in the tests, all of them. After the mount
 * namespace, the root and working directory are the container's root (setns follows the
 * mounts stacked on the namespace's root, where the workload's root was moved).
 */
static void enter_container(void)
{
	static const struct {
		const char *name;
		int type;
		bool always; /* every kernel has it: missing means the workload is gone */
	} kinds[] = {
		{"ipc", CLONE_NEWIPC, false}, {"uts", CLONE_NEWUTS, false},
		{"cgroup", CLONE_NEWCGROUP, false}, {"pid", CLONE_NEWPID, true},
		{"mnt", CLONE_NEWNS, true},
	};
	enum { N = sizeof kinds / sizeof kinds[0], PID = 3 };
	int fds[N];

	/* Before the cgroup namespace: the pids limit counts the process too. */
	if (opts->pids_cgroup)
		write_value(CONTAINER_CGROUP "/cgroup.procs", "0", "join the container's pids cgroup");
	for (size_t i = 0; i < N; i++) {
		char theirs[64], ours[64];
		snprintf(theirs, sizeof theirs, "/proc/%d/ns/%s", (int)opts->workload, kinds[i].name);
		snprintf(ours, sizeof ours, "/proc/self/ns/%s", kinds[i].name);
		fds[i] = open(theirs, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0) {
			if (errno == ENOENT && !kinds[i].always)
				continue;
			die("open %s (the container's %s namespace)", theirs, kinds[i].name);
		}
		struct stat a, b;
		if (fstat(fds[i], &a) < 0 || stat(ours, &b) < 0)
			die("stat %s", ours);
		if (a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			close_fd(&fds[i]);
	}
	if (fds[PID] >= 0) {
		errno = 0;
		die("the process was not born in the container's PID namespace");
	}
	for (size_t i = 0; i < N; i++) {
		if (fds[i] >= 0 && setns(fds[i], kinds[i].type) < 0)
			die("enter the container's %s namespace", kinds[i].name);
		close_fd(&fds[i]);
	}
}

/* Makes `stdio` the process's descriptors 0, 1 and 2 (they are above 2: see agent_supervise). */
static void set_stdio(const int stdio[3])
{
	for (int i = 0; i < 3; i++)
		if (dup2(stdio[i], i) < 0)
			die("set up the standard descriptors");
}

/*
 * The exec's child: enters the container and becomes the process. Until execve, messages go
 * to the status channel (the agent turns them into an ERROR frame); the first message is the
 * process's PID in the container, 4 bytes.
 */
__attribute__((noreturn)) static void exec_child(const struct run_spec *s, int status,
						 const int stdio[3])
{
	error_fd = status;
	/* Not the init's: SIGCHLD blocked for its signalfd, SIGPIPE ignored for its writes. */
	signal(SIGPIPE, SIG_DFL);
	sigprocmask(SIG_SETMASK, &child_mask, NULL);
	/* A session of its own: never the init's, whose terminal may be the workload's console. */
	if (setsid() < 0)
		die("create a session");
	if (s->terminal && ioctl(stdio[0], TIOCSCTTY, 0) < 0)
		die("make the pty the controlling terminal");
	set_stdio(stdio);
	if (s->terminal && fchown(STDIN_FILENO, s->uid, (gid_t)-1) < 0)
		die("give the pty to user %u", (unsigned)s->uid);
	if (s->has_oom_score_adj) {
		/* The init's /proc: the container's may not be mounted. */
		char value[16];
		snprintf(value, sizeof value, "%d", s->oom_score_adj);
		write_value("/proc/self/oom_score_adj", value, "set the OOM score adjustment");
	}
	enter_container();
	unsigned char pid[4];
	put_le32(pid, (uint32_t)getpid());
	if (write_all(status, pid, sizeof pid) < 0)
		die("report the process's pid");
	set_rlimits(s);
	start_process(s);
}

/*
 * A spec for exec has the process's records only: what the others describe (the root, the
 * mounts, the guest's settings) belongs to the running container.
 */
static const char *container_record(const struct run_spec *s)
{
	if (s->hostname != NULL)
		return "hostname";
	if (s->root_readonly)
		return "root-readonly";
	if (s->root_fs != NULL)
		return "root-fs";
	if (s->pids_limit != 0)
		return "pids-limit";
	if (s->n_mounts != 0)
		return "mount, fs-mount or file";
	if (s->n_masked != 0)
		return "masked";
	if (s->n_readonly != 0)
		return "readonly-path";
	if (s->n_sysctls != 0)
		return "sysctl";
	return NULL;
}

/*
 * The process's stdio: a pty (the master is the agent's, twice: one for input, one for
 * output) or three pipes. The agent's ends go to the connection, non-blocking; the child's
 * to `child`, which the caller closes after the fork. -1 with errno on failure.
 */
static int make_stdio(struct conn *c, bool terminal, int child[3])
{
	if (terminal) {
		int master, slave;
		if (open_pty(&master, &slave) < 0)
			return -1;
		c->out_fd = master;
		child[0] = slave;
		c->in_fd = fcntl(master, F_DUPFD_CLOEXEC, 0);
		return c->in_fd < 0 ? -1 : 0;
	}
	int *ours[3] = {&c->in_fd, &c->out_fd, &c->err_fd};
	for (int i = 0; i < 3; i++) {
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0)
			return -1;
		/* The agent writes stdin's pipe and reads the others. */
		*ours[i] = i == 0 ? p[1] : p[0];
		child[i] = i == 0 ? p[0] : p[1];
		if (fcntl(*ours[i], F_SETFL, O_NONBLOCK) < 0)
			return -1;
	}
	return 0;
}

/* The EXEC request: parses the spec, forks the child, and waits for its status channel. */
static void start_exec(struct conn *c, unsigned char *body, size_t len)
{
	struct run_spec s;
	char why[512];
	int child[3] = {-1, -1, -1}; /* the child's stdio; with a terminal, just [0] */
	int status[2] = {-1, -1};

	if (spec_parse((const char *)body, len, &s, why, sizeof why) < 0) {
		refuse(c, "bad exec spec: %s", why);
		goto out;
	}
	const char *record = container_record(&s);
	if (record != NULL) {
		refuse(c, "bad exec spec: a %s record; an exec spec has only the process's records",
		       record);
		goto out;
	}
	if (count(has_process) >= AGENT_MAX_EXECS) {
		refuse(c, "%d exec'd processes are running already, the most there may be",
		       AGENT_MAX_EXECS);
		goto out;
	}
	/* The child reads the workload's /proc/PID/ns before it enters the container. */
	if (ensure_mounted("/proc", "proc", PROC_SUPER_MAGIC, MS_NOSUID | MS_NODEV | MS_NOEXEC,
			   NULL) < 0) {
		refuse(c, "mount /proc in the guest: %s", strerror(errno));
		goto out;
	}
	if (opts->pids_cgroup &&
	    ensure_mounted(CGROUP_DIR, "cgroup2", CGROUP2_SUPER_MAGIC,
			   MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
		refuse(c, "mount cgroup2 on %s: %s", CGROUP_DIR, strerror(errno));
		goto out;
	}
	if (make_stdio(c, s.terminal, child) < 0) {
		refuse(c, "create the process's %s: %s", s.terminal ? "pty" : "pipes",
		       strerror(errno));
		goto out;
	}
	/* Datagrams keep the PID message apart from an error message. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, status) < 0 ||
	    fcntl(status[0], F_SETFL, O_NONBLOCK) < 0) {
		refuse(c, "create the status channel: %s", strerror(errno));
		goto out;
	}
	pid_t pid = fork();
	if (pid < 0) {
		refuse(c, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		int stdio[3] = {child[0], child[1], child[2]};
		if (s.terminal)
			stdio[1] = stdio[2] = child[0];
		exec_child(&s, status[1], stdio);
	}
	c->pid = pid;
	c->terminal = s.terminal;
	c->status_fd = status[0];
	status[0] = -1;
	c->state = CONN_STARTING;
out:
	if (c->state != CONN_STARTING) {
		close_fd(&c->in_fd);
		close_fd(&c->out_fd);
		close_fd(&c->err_fd);
	}
	close_fd(&status[0]);
	close_fd(&status[1]);
	for (int i = 0; i < 3; i++)
		close_fd(&child[i]);
	spec_free(&s);
	free(body);
}

/* The SIGNAL request: for the workload. */
static void signal_workload(struct conn *c, uint32_t sig)
{
	if (sig < 1 || sig > SIGNAL_MAX)
		refuse(c, "signal %u is not one of 1 to %d", (unsigned)sig, SIGNAL_MAX);
	else if (kill(opts->workload, (int)sig) < 0)
		refuse(c, "signal %u to the container's process: %s", (unsigned)sig, strerror(errno));
	else {
		queue_frame(c, AGENT_OK, NULL, 0);
		closing(c);
	}
}

/* Writes the pending STDIN data, as far as the process takes it. */
static void write_input(struct conn *c)
{
	while (c->input != NULL && c->in_fd >= 0 && c->input_off < c->input_len) {
		ssize_t n = write(c->in_fd, c->input + c->input_off, c->input_len - c->input_off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			/* EPIPE: the process closed its stdin, as it may; what follows is dropped. */
			close_fd(&c->in_fd);
			break;
		}
		c->input_off += (size_t)n;
	}
	free(c->input);
	c->input = NULL;
}

/* Whether a frame of `type` with `len` bytes may come in the connection's state. */
static bool frame_allowed(enum conn_state state, uint8_t type, uint32_t len)
{
	if (state == CONN_REQUEST) {
		switch (type) {
		case AGENT_EXEC:
			return len >= 1 && len <= AGENT_EXEC_SPEC_MAX;
		case AGENT_SIGNAL:
			return len == 4;
		default:
			return false;
		}
	}
	switch (type) {
	case AGENT_STDIN:
		return len <= AGENT_DATA_MAX;
	case AGENT_STDIN_EOF:
		return len == 0;
	case AGENT_RESIZE:
	case AGENT_SIGNAL:
		return len == 4;
	default:
		return false;
	}
}

/* A whole frame from the host; takes `body` (NULL for an empty payload). */
static void handle_frame(struct conn *c, uint8_t type, unsigned char *body, size_t len)
{
	if (c->state == CONN_REQUEST) {
		if (type == AGENT_EXEC) {
			start_exec(c, body, len);
			return;
		}
		signal_workload(c, get_le32(body));
		free(body);
		return;
	}
	switch (type) {
	case AGENT_STDIN:
		if (c->in_fd >= 0 && len > 0) {
			c->input = body;
			c->input_off = 0;
			c->input_len = len;
			write_input(c);
			return;
		}
		break;
	case AGENT_STDIN_EOF:
		/* A terminal has no end of input but its EOF character, which comes as data. */
		if (!c->terminal)
			close_fd(&c->in_fd);
		break;
	case AGENT_RESIZE:
		if (c->terminal && c->in_fd >= 0) {
			struct winsize ws = {.ws_row = (unsigned short)(body[0] | body[1] << 8),
					     .ws_col = (unsigned short)(body[2] | body[3] << 8)};
			ioctl(c->in_fd, TIOCSWINSZ, &ws);
		}
		break;
	case AGENT_SIGNAL: {
		uint32_t sig = get_le32(body);
		if (c->pid > 0 && !c->reaped && sig >= 1 && sig <= SIGNAL_MAX)
			kill(c->pid, (int)sig);
		break;
	}
	}
	free(body);
}

/*
 * Reads what the host sent and handles each whole frame, until the socket has nothing more,
 * the connection changes state or a STDIN frame waits to be written (then nothing more is
 * read: one frame of input is all a connection holds).
 */
static void receive(struct conn *c)
{
	for (;;) {
		enum conn_state state = c->state;
		if ((state != CONN_REQUEST && state != CONN_STARTING && state != CONN_RUNNING) ||
		    c->input != NULL)
			return;
		unsigned char *dst;
		size_t want;
		if (c->head_got < AGENT_HEADER_SIZE) {
			dst = c->head + c->head_got;
			want = AGENT_HEADER_SIZE - c->head_got;
		} else {
			/* The payload's buffer grows with what arrives, not with what is announced. */
			if (c->body_got == c->body_cap) {
				size_t cap = c->body_cap ? 2 * c->body_cap : 4096;
				if (cap > c->body_len)
					cap = c->body_len;
				unsigned char *bigger = realloc(c->body, cap);
				if (bigger == NULL) {
					host_gone(c);
					return;
				}
				c->body = bigger;
				c->body_cap = cap;
			}
			dst = c->body + c->body_got;
			want = c->body_cap - c->body_got;
		}
		ssize_t n = recv(c->sock, dst, want, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			host_gone(c);
			return;
		}
		if (c->head_got < AGENT_HEADER_SIZE) {
			c->head_got += (size_t)n;
			if (c->head_got < AGENT_HEADER_SIZE)
				continue;
			c->body_len = get_le32(c->head + 1);
			if (!frame_allowed(state, c->head[0], (uint32_t)c->body_len)) {
				host_gone(c);
				return;
			}
		} else {
			c->body_got += (size_t)n;
		}
		if (c->body_got == c->body_len) {
			unsigned char *body = c->body;
			uint8_t type = c->head[0];
			size_t len = c->body_len;
			c->body = NULL;
			c->head_got = c->body_len = c->body_got = c->body_cap = 0;
			handle_frame(c, type, body, len);
		}
	}
}

/* The status channel closed: the child exec'd (STARTED), or it could not (ERROR). */
static void child_ready(struct conn *c)
{
	close_fd(&c->status_fd);
	c->state = CONN_RUNNING;
	if (c->error_len == 0 && c->have_pid) {
		queue_u32(c, AGENT_STARTED, c->container_pid);
		return;
	}
	/* The message without the init's prefix and newline; the EXIT frame follows. */
	static const char prefix[] = "flint-init: error: ";
	const char *text = c->error;
	size_t len = c->error_len;
	if (len >= sizeof prefix - 1 && memcmp(text, prefix, sizeof prefix - 1) == 0) {
		text += sizeof prefix - 1;
		len -= sizeof prefix - 1;
	}
	while (len > 0 && text[len - 1] == '\n')
		len--;
	if (len == 0) {
		text = "the process ended before it could start";
		len = strlen(text);
	}
	queue_frame(c, AGENT_ERROR, text, len);
	close_fd(&c->in_fd);
	close_fd(&c->out_fd);
	close_fd(&c->err_fd);
}

/* Reads the child's status channel: its PID, an error message, or the end. */
static void read_status(struct conn *c)
{
	while (c->status_fd >= 0) {
		char msg[ERROR_TEXT_MAX];
		ssize_t n = recv(c->status_fd, msg, sizeof msg, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			child_ready(c);
			return;
		}
		if (n == 4 && !c->have_pid && c->error_len == 0) {
			c->container_pid = get_le32((const unsigned char *)msg);
			c->have_pid = true;
		} else if (c->error_len == 0) {
			size_t len = (size_t)n < sizeof c->error ? (size_t)n : sizeof c->error;
			memcpy(c->error, msg, len);
			c->error_len = len;
		}
	}
}

/*
 * Reads the process's output from `*fd` into a STDOUT or STDERR frame, if there is room.
 * `drain`: the process has exited, so "nothing now" means nothing more (a descendant that
 * kept the pipe gets no more of the host's attention).
 */
static void read_output(struct conn *c, int *fd, uint8_t type, bool drain)
{
	while (*fd >= 0 && room_for(c, READ_CHUNK)) {
		unsigned char buf[READ_CHUNK];
		ssize_t n = read(*fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && !drain)
			return;
		/* EOF, or EIO from a pty's master once the slave has no other end. */
		if (n <= 0) {
			close_fd(fd);
			return;
		}
		if (!queue_frame(c, type, buf, (size_t)n)) {
			host_gone(c);
			return;
		}
		if (!drain)
			return;
	}
}

/* What a connection does without being asked: finish after its process, close when done. */
static void progress(struct conn *c)
{
	if (c->state == CONN_RUNNING && c->reaped) {
		read_output(c, &c->out_fd, AGENT_STDOUT, true);
		if (c->state == CONN_RUNNING)
			read_output(c, &c->err_fd, AGENT_STDERR, true);
		if (c->state == CONN_RUNNING && c->out_fd < 0 && c->err_fd < 0 && room_for(c, 4)) {
			close_fd(&c->in_fd);
			free(c->input);
			c->input = NULL;
			queue_u32(c, AGENT_EXIT, (uint32_t)c->exit_code);
			closing(c);
		}
	}
	if (c->state != CONN_FREE && c->state != CONN_DETACHED)
		flush(c);
	if (c->state == CONN_CLOSING && c->out_off == c->out_len)
		conn_free(c);
}

/* An exec's child has exited. */
static void exec_exited(struct conn *c, int code)
{
	c->reaped = true;
	c->exit_code = code;
	if (c->state == CONN_STARTING)
		read_status(c); /* all it sent is there: its end closed when it exited */
	if (c->state == CONN_STARTING)
		child_ready(c);
	if (c->state == CONN_DETACHED)
		conn_free(c);
}

/* Reaps every child that has exited; true with the status if one was the workload. */
static bool reap(int *workload_status)
{
	for (;;) {
		int wstatus;
		pid_t pid = waitpid(-1, &wstatus, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			return false;
		if (pid == opts->workload) {
			*workload_status = exit_code(wstatus);
			return true;
		}
		for (size_t i = 0; i < MAX_CONNS; i++)
			if (conns[i].pid == pid && !conns[i].reaped)
				exec_exited(&conns[i], exit_code(wstatus));
	}
}

static void accept_all(int listener)
{
	for (;;) {
		int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;
		}
		struct conn *c = NULL;
		if (count(is_pending) < AGENT_MAX_PENDING)
			for (size_t i = 0; i < MAX_CONNS && c == NULL; i++)
				if (conns[i].state == CONN_FREE)
					c = &conns[i];
		if (c == NULL) {
			/* Over the bounds: the host sees the connection end at once. */
			close(fd);
			continue;
		}
		c->state = CONN_REQUEST;
		c->sock = fd;
		c->deadline = now_ms() + opts->request_timeout_ms;
	}
}

/* A descriptor in the poll set: which connection's, and which of its descriptors. */
enum role { ROLE_SOCK, ROLE_STATUS, ROLE_IN, ROLE_OUT, ROLE_ERR, ROLES };

int agent_supervise(int listener, const struct agent_options *options)
{
	opts = options;
	for (size_t i = 0; i < MAX_CONNS; i++)
		conn_free(&conns[i]);
	/*
	 * Descriptors 0 to 2 must be open, so that no pipe or pty the agent makes is one of them:
	 * a child moves its own onto them.
	 */
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
			return EXIT_SETUP_FAILED;

	/* Blocked first, then reaped: a child that exited before is still a zombie to reap. */
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &child_mask);
	int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0) {
		/* No loop without it: just wait, as the init does without the agent. */
		close(listener);
		for (;;) {
			int wstatus;
			pid_t pid = waitpid(-1, &wstatus, 0);
			if (pid == opts->workload)
				return exit_code(wstatus);
			if (pid < 0 && errno != EINTR)
				return EXIT_SETUP_FAILED;
		}
	}
	/* EPIPE instead: a pipe's reader may go away (PID 1 ignores it anyway, a test does not). */
	signal(SIGPIPE, SIG_IGN);

	int status;
	long long next_size = now_ms() + CONSOLE_SIZE_POLL_MS;
	for (;;) {
		if (reap(&status))
			break;
		for (size_t i = 0; i < MAX_CONNS; i++)
			progress(&conns[i]);

		struct pollfd fds[2 + MAX_CONNS * ROLES];
		short at[MAX_CONNS][ROLES]; /* each descriptor's index in fds, -1 if not polled */
		nfds_t n = 0;
		fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
		fds[n++] = (struct pollfd){.fd = listener, .events = POLLIN};
		long long now = now_ms(), next = -1;
		for (size_t i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &conns[i];
			short want[ROLES] = {0};
			bool reading = c->state == CONN_REQUEST || c->state == CONN_STARTING ||
				       c->state == CONN_RUNNING;
			if (reading && c->input == NULL)
				want[ROLE_SOCK] |= POLLIN;
			if (c->sock >= 0 && c->out_off < c->out_len)
				want[ROLE_SOCK] |= POLLOUT;
			if (c->state == CONN_STARTING)
				want[ROLE_STATUS] = POLLIN;
			if (c->input != NULL)
				want[ROLE_IN] = POLLOUT;
			if (c->state == CONN_RUNNING && room_for(c, READ_CHUNK)) {
				want[ROLE_OUT] = POLLIN;
				want[ROLE_ERR] = POLLIN;
			}
			int fd[ROLES] = {c->sock, c->status_fd, c->in_fd, c->out_fd, c->err_fd};
			for (int r = 0; r < ROLES; r++) {
				at[i][r] = -1;
				if (want[r] && fd[r] >= 0) {
					at[i][r] = (short)n;
					fds[n++] = (struct pollfd){.fd = fd[r], .events = want[r]};
				}
			}
			if (is_pending(c) && (next < 0 || c->deadline < next))
				next = c->deadline;
		}
		if (opts->console_tty >= 0 && (next < 0 || next_size < next))
			next = next_size;
		int timeout = -1;
		if (next >= 0)
			timeout = next <= now ? 0 : (int)(next - now);
		if (poll(fds, n, timeout) < 0)
			continue; /* EINTR, or ENOMEM for a moment */
		if (opts->console_tty >= 0 && now_ms() >= next_size) {
			console_size_sync(opts->console_tty);
			next_size = now_ms() + CONSOLE_SIZE_POLL_MS;
		}

		if (fds[0].revents) {
			struct signalfd_siginfo info;
			while (read(sfd, &info, sizeof info) > 0)
				continue;
		}
		const short any = POLLIN | POLLOUT | POLLHUP | POLLERR | POLLNVAL;
		for (size_t i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &conns[i];
			short ev[ROLES];
			for (int r = 0; r < ROLES; r++)
				ev[r] = at[i][r] >= 0 ? fds[at[i][r]].revents : 0;
			if (ev[ROLE_STATUS] & any)
				read_status(c);
			if (ev[ROLE_IN] & any)
				write_input(c);
			if (ev[ROLE_OUT] & any)
				read_output(c, &c->out_fd, AGENT_STDOUT, false);
			if (c->state == CONN_RUNNING && (ev[ROLE_ERR] & any))
				read_output(c, &c->err_fd, AGENT_STDERR, false);
			if (c->state != CONN_FREE && (ev[ROLE_SOCK] & (POLLOUT | POLLHUP | POLLERR)))
				flush(c);
			if (ev[ROLE_SOCK] & (POLLIN | POLLHUP | POLLERR))
				receive(c);
		}
		if (fds[1].revents)
			accept_all(listener);
		now = now_ms();
		for (size_t i = 0; i < MAX_CONNS; i++)
			if (is_pending(&conns[i]) && conns[i].deadline <= now)
				conn_free(&conns[i]);
	}

	/* The workload has ended, and with it the container: so do the exec'd processes. */
	for (size_t i = 0; i < MAX_CONNS; i++) {
		if (conns[i].pid > 0 && !conns[i].reaped)
			kill(conns[i].pid, SIGKILL);
		conn_free(&conns[i]);
	}
	close(sfd);
	close(listener);
	return status;
}

int agent_listen_vsock(void)
{
	/*
	 * The vsock core and its transports are built into flint's kernel whether or not the VM
	 * has the device: only a device gives the guest a CID of its own (above 2; without one
	 * the local CID is VMADDR_CID_ANY, or the loopback transport's 1).
	 */
	int dev = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
	if (dev >= 0) {
		unsigned int cid = VMADDR_CID_ANY;
		int got = ioctl(dev, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
		close(dev);
		if (got < 0 || cid == VMADDR_CID_ANY || cid <= VMADDR_CID_HOST)
			return -1;
	}
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_vm addr = {
		.svm_family = AF_VSOCK,
		.svm_port = AGENT_PORT,
		.svm_cid = VMADDR_CID_ANY,
	};
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 16) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int agent_listen_unix(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof addr.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 16) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}
