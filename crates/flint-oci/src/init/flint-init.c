/*
 * flint-init: the init (PID 1) of the microVM flint boots for an OCI bundle
 * (`flint run --oci-bundle DIR`). The host puts it in a generated initramfs with the run
 * spec, /flint/spec (src/oci/spec.rs). It
 *
 *   1. mounts devtmpfs and tells the VMM's boot timer that user space has started;
 *   2. opens the consoles: ttyS0 is the process's stdin and stdout, ttyS1 its stderr (or,
 *      with a terminal, ttyS0 is all three);
 *   3. reads the run spec;
 *   4. mounts the root: the bundle's image (/dev/vda, ext4, read-only) under a tmpfs overlay,
 *      or the image alone if the root is read-only; or, for a live root (`root-fs`), the
 *      virtio-fs share of the bundle's rootfs, as it is;
 *   5. listens on the vsock port of its agent, if the VM has a vsock device (agent.c), and
 *      starts the process in new PID and mount namespaces (container.c);
 *   6. waits for it (serving the agent's connections meanwhile: signals for the process,
 *      exec of another process in its container), and reports its exit status on the
 *      exit-status port, which ends the VM with that status (flint exits with it). A setup
 *      failure reports 125.
 *
 * On success it prints nothing: the process's output must be exactly what it would be in a
 * container. A PID 1 must never exit (the kernel would panic), so every path ends in
 * halt_with_status().
 *
 * With `--print-spec FILE` it is an ordinary program that parses FILE and prints what it
 * read, for the host's unit tests (src/init_tests.rs); with `--agent-test`, it runs the
 * agent on a Unix socket for a program of the test's (src/agent_tests.rs).
 */
#include "flint-init.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define SPEC_PATH "/flint/spec"

/* The VMM's boot timer (Firecracker's too): this byte written at this physical address. */
#define BOOT_TIMER_ADDR 0xd0000000
#define BOOT_TIMER_MAGIC 123

/* One byte written here ends the VM with it as the status (src/devices/guest_ports.rs). */
#define EXIT_STATUS_PORT 0x501
/* A write here tells the VMM that the console is open and set up: input may come now. */
#define CONSOLE_READY_PORT 0x502
/* A write here tells the VMM that a warm guest waits for its workload: snapshot it now. */
#define WARM_READY_PORT 0x503
/* The host terminal's size, read as 32 bits: rows << 16 | columns (0: no terminal). */
#define CONSOLE_SIZE_PORT 0x504

/*
 * The warm start (flint_oci::warm on the host). An initramfs with this file and no spec
 * boots to a wait: the root disk (/dev/vda) and the spec disk (/dev/vdb) are empty, and the
 * VMM snapshots the guest there. A restore gives both disks their contents and announces
 * the new sizes; the spec disk starts with a header (the layout below, little-endian) that
 * also carries fresh entropy and the host's time, so that clones of one snapshot differ.
 */
#define WARM_MARK "/flint/warm"
#define WARM_MAGIC "FLNTWARM"
#define WARM_HEADER_SIZE 512
#define WARM_SEED_BYTES 32
struct warm_header {
	char magic[8];
	uint32_t spec_len;
	uint32_t seed_len;
	uint64_t time_sec;
	uint64_t time_nsec;
	unsigned char seed[WARM_SEED_BYTES];
};
/* Big enough for any spec flint writes (the host caps it at the same size). */
#define WARM_SPEC_MAX (1u << 20)

/* The consoles, kept open (close-on-exec) to drain them at the end; -1 until opened. */
static struct {
	int out; /* ttyS0 */
	int err; /* ttyS1, or ttyS0 if there is no ttyS1 */
} consoles = {-1, -1};

/*
 * Writes `value` to the VMM's I/O port `port` (ioperm for the moment of the outb: the process
 * must not inherit the access). Returns -1 if the port cannot be reached.
 */
static int port_write(unsigned short port, unsigned char value)
{
	if (ioperm(port, 1, 1) < 0)
		return -1;
	outb(value, port);
	ioperm(port, 1, 0);
	return 0;
}

void console_size_sync(int tty)
{
	static uint32_t last;
	if (tty < 0 || ioperm(CONSOLE_SIZE_PORT, 4, 1) < 0)
		return;
	uint32_t size = inl(CONSOLE_SIZE_PORT);
	ioperm(CONSOLE_SIZE_PORT, 4, 0);
	/* 0: the host has no terminal; all ones: no such port (another VMM). */
	if (size == 0 || size == UINT32_MAX || size == last)
		return;
	last = size;
	struct winsize ws = {.ws_row = (unsigned short)(size >> 16),
			     .ws_col = (unsigned short)(size & 0xffff)};
	/* The kernel sends the terminal's foreground process group SIGWINCH. */
	ioctl(tty, TIOCSWINSZ, &ws);
}

/* Waits until everything written to the console `fd` (if open) has left the UART. */
static void drain(int fd)
{
	while (fd >= 0 && tcdrain(fd) < 0 && errno == EINTR)
		continue;
}

/*
 * Reports `status` to the VMM and stops the VM. The output must have left the guest first:
 * the VMM exits as soon as the status arrives.
 */
__attribute__((noreturn)) static void halt_with_status(int status)
{
	/*
	 * With a terminal, the process's group was the foreground one: tcdrain from a background
	 * group raises SIGTTOU, which PID 1 does not get, and fails with EIO without draining,
	 * unless SIGTTOU is blocked.
	 */
	sigset_t ttou;
	sigemptyset(&ttou);
	sigaddset(&ttou, SIGTTOU);
	sigprocmask(SIG_BLOCK, &ttou, NULL);
	drain(consoles.out);
	if (consoles.err != consoles.out)
		drain(consoles.err);
	sync();

	port_write(EXIT_STATUS_PORT, (unsigned char)status);
	/*
	 * Only reached if the VMM has no exit-status port: reboot (flint's kernel command line
	 * has reboot=k, a reset through the i8042, which flint treats as power-off).
	 */
	reboot(RB_AUTOBOOT);
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

/* Prints "WHAT: strerror(errno)" and halts with status 125. */
__attribute__((noreturn, format(printf, 1, 2))) static void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprint_error(errno, fmt, ap);
	va_end(ap);
	halt_with_status(EXIT_SETUP_FAILED);
}

/* Tells the VMM's boot timer that user space has started; the VMM may not have one. */
static void mark_boot_time(void)
{
	const size_t page_size = 4096;
	int fd = open("/dev/mem", O_RDWR | O_SYNC | O_CLOEXEC);
	if (fd < 0)
		return;
	void *page = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, BOOT_TIMER_ADDR);
	close(fd);
	if (page == MAP_FAILED)
		return;
	*(volatile unsigned char *)page = BOOT_TIMER_MAGIC;
	munmap(page, page_size);
}

/* The size of the block device open as `fd`, or 0 if it cannot be read. */
static uint64_t disk_size(int fd)
{
	uint64_t size = 0;
	if (ioctl(fd, BLKGETSIZE64, &size) < 0)
		return 0;
	return size;
}

static void read_exactly(int fd, void *buf, size_t len, const char *what)
{
	char *p = buf;
	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			fatal("read %s", what);
		}
		p += n;
		len -= (size_t)n;
	}
}

/* Mixes the host's seed into the kernel's pool, credited, and makes the RNG use it now. */
static void add_entropy(const unsigned char *seed, size_t len)
{
	struct {
		int entropy_count;
		int buf_size;
		unsigned char buf[WARM_SEED_BYTES];
	} info = {.entropy_count = (int)len * 8, .buf_size = (int)len};
	memcpy(info.buf, seed, len);
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		fatal("open /dev/urandom");
	if (ioctl(fd, RNDADDENTROPY, &info) < 0)
		fatal("add the host's entropy (RNDADDENTROPY)");
	if (ioctl(fd, RNDRESEEDCRNG) < 0)
		fatal("reseed the RNG (RNDRESEEDCRNG)");
	close(fd);
}

/*
 * A warm guest: tells the VMM it may snapshot, waits until it is restored with a workload
 * (both disks have a size), then writes the spec where a cold boot finds it, takes the
 * seed and sets the clock. The snapshot is taken in the wait below; nothing before it
 * may depend on the workload.
 */
static void warm_start(void)
{
	int root = open("/dev/vda", O_RDONLY | O_CLOEXEC);
	int spec = open("/dev/vdb", O_RDONLY | O_CLOEXEC);
	if (root < 0 || spec < 0)
		fatal("open the warm guest's disks /dev/vda and /dev/vdb");
	if (port_write(WARM_READY_PORT, 1) < 0)
		fatal("reach the VMM's warm-start port");
	/*
	 * The driver learns the sizes from a config-change interrupt, in a work item: poll for
	 * them (the interrupt is pending when the restored vCPU starts, so this is short).
	 */
	const struct timespec tick = {.tv_sec = 0, .tv_nsec = 50 * 1000};
	while (disk_size(root) == 0 || disk_size(spec) < WARM_HEADER_SIZE)
		nanosleep(&tick, NULL);
	close(root);

	union {
		struct warm_header h;
		unsigned char bytes[WARM_HEADER_SIZE];
	} head;
	read_exactly(spec, head.bytes, sizeof head.bytes, "the spec disk's header");
	if (memcmp(head.h.magic, WARM_MAGIC, sizeof head.h.magic) != 0 ||
	    head.h.spec_len > WARM_SPEC_MAX || head.h.seed_len > WARM_SEED_BYTES ||
	    disk_size(spec) < WARM_HEADER_SIZE + (uint64_t)head.h.spec_len) {
		errno = EINVAL;
		fatal("the spec disk /dev/vdb has no valid header");
	}
	char *text = malloc(head.h.spec_len + 1u);
	if (text == NULL)
		fatal("allocate the spec");
	read_exactly(spec, text, head.h.spec_len, "the spec disk");
	close(spec);
	int out = open(SPEC_PATH, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0 || write_all(out, text, head.h.spec_len) < 0 || close(out) < 0)
		fatal("write %s", SPEC_PATH);
	free(text);

	add_entropy(head.h.seed, head.h.seed_len);
	const struct timespec now = {.tv_sec = (time_t)head.h.time_sec,
				     .tv_nsec = (long)head.h.time_nsec};
	if (clock_settime(CLOCK_REALTIME, &now) < 0)
		fatal("set the clock to the host's");
}

/*
 * Opens a console above the standard descriptors, close-on-exec: 0, 1 and 2 are the kernel's
 * /dev/console, or closed if the initramfs has none, and are then made copies of these.
 */
static int open_console(const char *path)
{
	int fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0 || fd > STDERR_FILENO)
		return fd;
	int high = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
	int saved = errno;
	close(fd);
	errno = saved;
	return high;
}

static void open_consoles(void)
{
	consoles.out = open_console("/dev/ttyS0");
	if (consoles.out < 0)
		fatal("open /dev/ttyS0");
	consoles.err = open_console("/dev/ttyS1");
	if (consoles.err < 0)
		consoles.err = consoles.out;
	error_fd = consoles.err;
	/* What the process inherits; with a terminal, it makes stderr ttyS0 too (container.c). */
	if (dup2(consoles.out, STDIN_FILENO) < 0 || dup2(consoles.out, STDOUT_FILENO) < 0 ||
	    dup2(consoles.err, STDERR_FILENO) < 0)
		fatal("set up the standard file descriptors");
}

/* Clears OPOST: output leaves as written ("\n" stays "\n", no "\r\n"). */
static void make_output_raw(int fd, const char *name)
{
	struct termios t;
	if (tcgetattr(fd, &t) < 0)
		fatal("get the terminal modes of %s", name);
	t.c_oflag &= ~OPOST;
	if (tcsetattr(fd, TCSANOW, &t) < 0)
		fatal("set the terminal modes of %s", name);
}

/*
 * Without a terminal the consoles stand for pipes: the process's output must reach the VMM
 * byte for byte, and its input arrive as sent, not echoed, with no signal, flow-control or
 * line-editing characters. Input stays line-buffered (canonical), only so that the VMM can
 * end it with ^D (VEOF) when its own input ends.
 *
 * With a terminal, ttyS0 keeps the kernel's cooked modes, like a fresh pty, and ttyS1 its
 * "\n" to "\r\n" (the user's terminal is in raw mode then). The init, not the process,
 * becomes the session leader with ttyS0 as its controlling terminal (the process gets the
 * foreground process group, see container.c): when a session leader exits, the kernel
 * hangs up its controlling terminal (ptys excepted), and the hangup discards output still
 * queued in the UART driver, the process's last words.
 *
 * This runs right after the consoles are opened: input already waiting in the UART arrives
 * as soon as ttyS0 is open and is handled with the modes of the moment (echoed, if ECHO is
 * on).
 */
static void set_console_modes(bool terminal)
{
	if (terminal) {
		/* setsid fails if PID 1 leads a session already, which is as good. */
		if (setsid() < 0 && getsid(0) != getpid())
			fatal("setsid");
		if (ioctl(consoles.out, TIOCSCTTY, 0) < 0)
			fatal("make /dev/ttyS0 the controlling terminal");
		return;
	}

	struct termios t;
	if (tcgetattr(consoles.out, &t) < 0)
		fatal("get the terminal modes of /dev/ttyS0");
	t.c_oflag &= ~OPOST;
	t.c_lflag |= ICANON;
	t.c_lflag &= ~(ECHO | ECHONL | ISIG | IEXTEN);
	t.c_iflag &= ~(ICRNL | INLCR | IGNCR | IXON);
	/* Canonical mode would still erase a character on DEL and a line on ^U. */
	t.c_cc[VERASE] = _POSIX_VDISABLE;
	t.c_cc[VKILL] = _POSIX_VDISABLE;
	if (tcsetattr(consoles.out, TCSANOW, &t) < 0)
		fatal("set the terminal modes of /dev/ttyS0");
	if (consoles.err != consoles.out)
		make_output_raw(consoles.err, "/dev/ttyS1");
}

/*
 * Mounts the bundle's root file system and returns where: the image (the first virtio
 * disk) read-only, and over it, unless the root is read-only, an overlay whose upper layer
 * is a tmpfs, so that the process can write and the image (shared by every run of the
 * bundle) stays as it is.
 *
 * A live root (`share`, the root-fs tag) is the bundle's rootfs directory itself, shared by
 * the host: no overlay, the process's writes land in it as with crun. There is no root disk
 * then, and /dev/vda is not touched.
 */
static const char *mount_root(bool readonly, const char *share)
{
	if (share != NULL) {
		if (mkdir_p("/mnt/root", 0755) < 0)
			fatal("create /mnt/root");
		if (mount(share, "/mnt/root", "virtiofs", readonly ? MS_RDONLY : 0, NULL) < 0)
			fatal("mount the root, the virtio-fs share %s, on /mnt/root", share);
		return "/mnt/root";
	}
	if (mkdir_p("/mnt/lower", 0755) < 0)
		fatal("create /mnt/lower");
	if (mount("/dev/vda", "/mnt/lower", "ext4", MS_RDONLY, NULL) < 0)
		fatal("mount the root image /dev/vda (ext4) on /mnt/lower");
	if (readonly)
		return "/mnt/lower";

	if (mkdir_p("/mnt/rw", 0755) < 0 || mkdir_p("/mnt/root", 0755) < 0)
		fatal("create /mnt/rw and /mnt/root");
	if (mount("tmpfs", "/mnt/rw", "tmpfs", 0, "mode=0755") < 0)
		fatal("mount a tmpfs on /mnt/rw");
	if (mkdir("/mnt/rw/upper", 0755) < 0 || mkdir("/mnt/rw/work", 0755) < 0)
		fatal("create the overlay's directories in /mnt/rw");
	if (mount("overlay", "/mnt/root", "overlay", 0,
		  "lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work") < 0)
		fatal("mount the root overlay on /mnt/root");
	return "/mnt/root";
}

/*
 * Waits for the process and returns its status as a shell reports it: the exit code, or
 * 128+N if signal N killed it. Other children (none are expected: the process's
 * descendants belong to its PID namespace) are reaped on the way.
 */
static int wait_for(pid_t child)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			print_error(errno, "wait for the process");
			return EXIT_SETUP_FAILED;
		}
		if (pid != child)
			continue;
		if (WIFEXITED(status))
			return WEXITSTATUS(status);
		if (WIFSIGNALED(status))
			return 128 + WTERMSIG(status);
	}
}

__attribute__((noreturn)) static void run_init(void)
{
	/* The initramfs has no device nodes; everything below needs some. */
	if (mkdir("/dev", 0755) < 0 && errno != EEXIST)
		fatal("create /dev");
	if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, NULL) < 0)
		fatal("mount devtmpfs on /dev");
	mark_boot_time();
	if (access(WARM_MARK, F_OK) == 0) {
		warm_start();
		/* For the restored VM's boot timer: its user space starts now. */
		mark_boot_time();
	}

	/* Read first, so that the console modes are set as soon as the consoles are open. */
	struct run_spec spec = {0};
	char spec_error[1024];
	bool have_spec = spec_load(SPEC_PATH, &spec, spec_error, sizeof spec_error) == 0;
	open_consoles();
	set_console_modes(have_spec && spec.terminal);
	/* Without the port (another VMM), input simply was never held. */
	port_write(CONSOLE_READY_PORT, 1);
	if (!have_spec) {
		print_error(0, "%s", spec_error);
		halt_with_status(EXIT_SETUP_FAILED);
	}

	const char *root = mount_root(spec.root_readonly, spec.root_fs);
	/*
	 * Before the process starts, so that a host client may connect as soon as it runs; after
	 * the spec is read, so after a warm start's restore: no snapshot holds the socket.
	 */
	int listener = agent_listen_vsock();
	/*
	 * The process is PID 1 of its own PID namespace, as in a container: it sees only its own
	 * processes, and when it ends, the kernel ends the ones it leaves behind.
	 */
	if (unshare(CLONE_NEWPID) < 0)
		fatal("unshare the PID namespace");
	/* A terminal starts with the host's size, and follows it (agent_supervise). */
	int tty = spec.terminal ? consoles.out : -1;
	console_size_sync(tty);
	pid_t child = fork();
	if (child < 0)
		fatal("fork");
	if (child == 0)
		run_container(&spec, consoles.out, root);
	if (listener < 0 && tty < 0)
		halt_with_status(wait_for(child));
	const struct agent_options options = {
		.workload = child,
		.pids_cgroup = spec.pids_limit != 0,
		.request_timeout_ms = AGENT_REQUEST_TIMEOUT_MS,
		.console_tty = tty,
	};
	halt_with_status(agent_supervise(listener, &options));
}

/* --print-spec FILE: the test mode (see spec_print). */
static int print_spec(int argc, char **argv)
{
	if (argc != 3) {
		print_error(0, "usage: flint-init --print-spec FILE");
		return 2;
	}
	struct run_spec spec;
	char error[1024];
	if (spec_load(argv[2], &spec, error, sizeof error) < 0) {
		print_error(0, "%s", error);
		return EXIT_SETUP_FAILED;
	}
	spec_print(&spec);
	if (fflush(stdout) != 0) {
		print_error(errno, "write to standard output");
		return 1;
	}
	return 0;
}

/*
 * --agent-test SOCKET TIMEOUT_MS PROGRAM [ARG...]: the init's loop and agent as in a guest,
 * but listening on the Unix socket SOCKET, with PROGRAM (executed as it is) as the workload
 * and TIMEOUT_MS as the request timeout; exits with the workload's status. PROGRAM shares
 * the test's namespaces, so an exec'd process enters none.
 */
static int agent_test(int argc, char **argv)
{
	if (argc < 5) {
		print_error(0, "usage: flint-init --agent-test SOCKET TIMEOUT_MS PROGRAM [ARG...]");
		return 2;
	}
	char *end;
	long timeout = strtol(argv[3], &end, 10);
	if (*end != '\0' || timeout < 1 || timeout > AGENT_REQUEST_TIMEOUT_MS) {
		print_error(0, "--agent-test: TIMEOUT_MS %s is not 1 to %d", argv[3],
			    AGENT_REQUEST_TIMEOUT_MS);
		return 2;
	}
	int listener = agent_listen_unix(argv[2]);
	if (listener < 0) {
		print_error(errno, "listen on %s", argv[2]);
		return EXIT_SETUP_FAILED;
	}
	pid_t child = fork();
	if (child < 0) {
		print_error(errno, "fork");
		return EXIT_SETUP_FAILED;
	}
	if (child == 0) {
		/* A test that fails kills the init: the workload must not outlive it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execvp(argv[4], argv + 4);
		print_error(errno, "exec %s", argv[4]);
		_exit(EXIT_NOT_FOUND);
	}
	const struct agent_options options = {
		.workload = child,
		.request_timeout_ms = (int)timeout,
		/* Never the size port on a host. */
		.console_tty = -1,
	};
	return agent_supervise(listener, &options);
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "--print-spec") == 0)
		return print_spec(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "--agent-test") == 0)
		return agent_test(argc, argv);
	if (getpid() != 1) {
		print_error(0, "flint-init runs as PID 1 in a flint guest (or: --print-spec FILE)");
		return 2;
	}
	run_init();
}
