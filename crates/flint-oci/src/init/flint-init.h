/*
 * flint's guest init for OCI bundles: declarations shared by its parts.
 *
 *   flint-init.c  main(): PID 1 (consoles, the root file system, the exit status) and the
 *                 --print-spec test mode
 *   spec.c        reading, checking and printing the run spec (/flint/spec)
 *   container.c   the process's side: namespaces, mounts, devices, credentials, exec
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

/* Exit statuses, as container runtimes use them. */
#define EXIT_SETUP_FAILED 125 /* the init could not set up or start the process */
#define EXIT_CANNOT_EXEC 126  /* the program exists but cannot be executed */
#define EXIT_NOT_FOUND 127    /* no such program */

/* virtio-fs tags are at most this long (the device's tag field). */
#define FS_TAG_MAX 36

/*
 * A mount performed inside the new root, in order: a new file system (the `mount` record) or
 * a bind from a virtio-fs share (`fs-mount`), one list so that the bundle's order holds.
 */
struct spec_mount {
	bool share;          /* fs-mount: bind `subpath` of the share `tag` */
	const char *tag;     /* fs-mount: the share's virtio-fs tag */
	const char *subpath; /* fs-mount: "" (the whole share) or one name in it */
	const char *destination;
	const char *fstype;  /* mount only */
	const char *source;  /* mount only */
	unsigned long flags; /* MS_* */
	const char *data;    /* "" for none */
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
