/*
 * flint's guest init for OCI bundles: declarations shared by its parts.
 *
 *   flint-init.c  main(): PID 1 (consoles, the root file system, the exit status) and the
 *                 --print-spec and --agent-test test modes
 *   spec.c        reading, checking and printing the run spec (/flint/spec)
 *   container.c   the process's side: namespaces, mounts, devices, credentials, exec
 *   agent.c       the init's loop while the workload runs: reaping, and the host's requests
 *                 over virtio-vsock (signals, exec)
 *   util.c        error messages and small file helpers
 */
#ifndef FLINT_INIT_H
#define FLINT_INIT_H

#define _GNU_SOURCE

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/filter.h>

/* Exit statuses, as container runtimes use them. */
#define EXIT_SETUP_FAILED 125 /* the init could not set up or start the process */
#define EXIT_CANNOT_EXEC 126  /* the program exists but cannot be executed */
#define EXIT_NOT_FOUND 127    /* no such program */

/* virtio-fs tags are at most this long (the device's tag field). */
#define FS_TAG_MAX 36

/* The most a `file` record carries, and all of them together (src/spec.rs: FILE_MAX). */
#define FILE_CONTENT_MAX (64u << 10)
#define FILES_TOTAL_MAX (256u << 10)

enum mount_kind {
	MOUNT_NEW,   /* `mount`: a new file system */
	MOUNT_SHARE, /* `fs-mount`: bind `subpath` of the share `tag` */
	MOUNT_FILE,  /* `file`: bind a file made of `content` */
};

/*
 * A mount performed inside the new root, in order: a new file system (the `mount` record), a
 * bind from a virtio-fs share (`fs-mount`) or of a file from the spec (`file`), one list so
 * that the bundle's order holds.
 */
struct spec_mount {
	enum mount_kind kind;
	const char *tag;     /* fs-mount: the share's virtio-fs tag */
	const char *subpath; /* fs-mount: "" (the whole share) or one name in it */
	const char *destination;
	const char *fstype;  /* mount only */
	const char *source;  /* mount only */
	unsigned long flags; /* MS_* */
	const char *data;    /* "" for none */
	mode_t mode;         /* file only: permission bits */
	const char *content; /* file only */
};

struct spec_rlimit {
	unsigned resource; /* RLIMIT_* */
	uint64_t soft;
	uint64_t hard;
};

/* Capability sets, bit N = capability N. */
struct spec_caps {
	uint64_t bounding;
	uint64_t effective;
	uint64_t inheritable;
	uint64_t permitted;
	uint64_t ambient;
};

struct spec_sysctl {
	const char *key; /* dotted: net.ipv4.ip_forward */
	const char *value;
};

/*
 * The parsed run spec (see src/oci/spec.rs for the format). Strings point into the spec's
 * buffer; lists are arrays with a count.
 */
struct run_spec {
	const char **args; /* at least one; followed by NULL, for execve */
	size_t n_args;
	const char **env; /* "K=V"; followed by NULL, for execve */
	size_t n_env;
	const char *cwd; /* absolute */
	uid_t uid;
	gid_t gid;
	gid_t *groups; /* additional groups */
	size_t n_groups;
	bool has_umask;
	mode_t umask;
	const char *hostname; /* NULL: leave it */
	bool terminal;
	bool root_readonly;
	const char *root_fs; /* the virtio-fs share that is the root (a live root); NULL: /dev/vda */
	bool no_new_privileges;
	struct spec_rlimit *rlimits;
	size_t n_rlimits;
	bool has_caps; /* false: keep root's full capabilities */
	struct spec_caps caps;
	bool has_oom_score_adj;
	int oom_score_adj; /* -1000 to 1000 */
	uint64_t pids_limit; /* 0: no pids cgroup */
	unsigned seccomp_flags; /* SECCOMP_FILTER_FLAG_* */
	struct sock_filter *seccomp; /* NULL: no filter */
	size_t n_seccomp;
	struct spec_mount *mounts;
	size_t n_mounts;
	const char **masked;
	size_t n_masked;
	const char **readonly;
	size_t n_readonly;
	struct spec_sysctl *sysctls;
	size_t n_sysctls;
};

/* spec.c */

/*
 * Reads and checks the spec at `path`. On failure returns -1 with the reason in `error`
 * (without the "flint-init: error: " prefix): the caller prints it once it has a console.
 */
int spec_load(const char *path, struct run_spec *spec, char *error, size_t error_size);

/*
 * Parses and checks the `len` bytes at `data` as a spec. Its strings point into `data`, which
 * must outlive it. On failure returns -1 with the reason in `why`.
 */
int spec_parse(const char *data, size_t len, struct run_spec *spec, char *why, size_t why_size);

/* Frees what spec_parse allocated (not the data), even for a spec it refused. */
void spec_free(struct run_spec *spec);

/* Prints the spec to stdout one item a line (the --print-spec format, see spec.c). */
void spec_print(const struct run_spec *spec);

/* container.c */

/*
 * Runs in the first process of the new PID namespace: sets up the container inside the
 * root file system mounted at `root` and executes the process. `console` is the open
 * /dev/ttyS0. Never returns: on failure it prints why and exits with EXIT_SETUP_FAILED,
 * EXIT_CANNOT_EXEC or EXIT_NOT_FOUND.
 */
__attribute__((noreturn)) void run_container(const struct run_spec *spec, int console,
					     const char *root);

/*
 * The process's last steps, shared by the workload and the agent's exec: the spec's umask,
 * seccomp filter, user, groups and capabilities, no_new_privs and working directory (runc's
 * order), then execve. Never returns (as run_container).
 */
__attribute__((noreturn)) void start_process(const struct run_spec *spec);

/* The spec's resource limits (setrlimit), for the process about to start. */
void set_rlimits(const struct run_spec *spec);

/* Writes `value` to the file `path` (in /proc or a cgroup) or dies; `what` is for the message. */
void write_value(const char *path, const char *value, const char *what);

/*
 * For a process on its way to exec: prints "WHAT: strerror(errno)" (just "WHAT" if errno is
 * 0) and exits with EXIT_SETUP_FAILED.
 */
__attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...);

/*
 * The workload's pids cgroup (linux.resources.pids.limit): cgroup2 is mounted at CGROUP_DIR
 * while a process joins CONTAINER_CGROUP.
 */
#define CGROUP_DIR "/flint/cgroup"
#define CONTAINER_CGROUP CGROUP_DIR "/container"

/* agent.c: the protocol is documented in src/agent.rs, which must stay in step. */

#define AGENT_PORT 1024			  /* the vsock port the agent listens on */
#define AGENT_HEADER_SIZE 5		  /* type (1 byte), payload length (4, little-endian) */
#define AGENT_DATA_MAX (64u << 10)	  /* the most a STDIN, STDOUT, STDERR or ERROR frame carries */
#define AGENT_EXEC_SPEC_MAX (1u << 20) /* the most an EXEC frame carries */
#define AGENT_MAX_EXECS 16		  /* exec'd processes at once */
#define AGENT_MAX_PENDING 8		  /* connections reading a request or sending a last reply */
#define AGENT_REQUEST_TIMEOUT_MS 10000 /* for each of those */

enum agent_frame {
	/* host to guest: requests, the first frame of a connection */
	AGENT_EXEC = 0x01,
	AGENT_SIGNAL = 0x02, /* also host to guest in an exec session: to its process */
	/* host to guest, in an exec session */
	AGENT_STDIN = 0x10,
	AGENT_STDIN_EOF = 0x11,
	AGENT_RESIZE = 0x12,
	/* guest to host */
	AGENT_OK = 0x80,
	AGENT_ERROR = 0x81,
	AGENT_STARTED = 0x82,
	AGENT_STDOUT = 0x83,
	AGENT_STDERR = 0x84,
	AGENT_EXIT = 0x85,
};

struct agent_options {
	pid_t workload;		/* the container's process (the init's child) */
	bool pids_cgroup;	/* the workload is in CONTAINER_CGROUP: exec'd processes join it */
	int request_timeout_ms; /* AGENT_REQUEST_TIMEOUT_MS; shorter in the host's tests */
	int console_tty;	/* the workload's terminal, kept at the host's size; -1: none */
};

/* How often the init reads the host terminal's size while the workload has a terminal. */
#define CONSOLE_SIZE_POLL_MS 250

/*
 * Gives the terminal `tty` the host terminal's size (the VMM's console size port) if it
 * changed since the last call; nothing without a terminal on either side.
 */
void console_size_sync(int tty);

/*
 * The agent's listening socket: AF_VSOCK, port AGENT_PORT, any CID; -1 if the VM has no
 * vsock device (the init then does without the agent).
 */
int agent_listen_vsock(void);

/* A listening Unix socket at `path`, for the --agent-test mode; -1 with errno on failure. */
int agent_listen_unix(const char *path);

/*
 * The init's loop while the workload runs: reaps children, serves the host's connections on
 * `listener` (any listening stream socket), and returns the workload's status as a shell
 * reports it once it has exited. Exec'd processes still running are killed then.
 */
int agent_supervise(int listener, const struct agent_options *options);

/* util.c */

/* Where the init's own error messages go: the stderr console (standard error until then). */
extern int error_fd;

/*
 * Prints "flint-init: error: WHAT: STRERROR(errnum)" as one line to error_fd; no ": ..."
 * part if errnum is 0.
 */
__attribute__((format(printf, 2, 3))) void print_error(int errnum, const char *fmt, ...);
/* print_error with a va_list. */
__attribute__((format(printf, 2, 0))) void vprint_error(int errnum, const char *fmt, va_list ap);

/* Writes all of buf, retrying after signals and short writes; -1 with errno on failure. */
int write_all(int fd, const void *buf, size_t len);

/* Creates the directory `path` and any missing parents, like mkdir -p; -1 with errno. */
int mkdir_p(const char *path, mode_t mode);

#endif
