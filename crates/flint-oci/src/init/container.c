/*
 * flint's guest init: the process's side. Runs as PID 1 of a new PID namespace, in its own
 * mount namespace, and turns the guest into what a container runtime would have given the
 * process: the bundle's root, its mounts (new file systems, binds of virtio-fs shares and of
 * small files copied into the spec) and devices, hidden and read-only paths, sysctls,
 * hostname, OOM score, a pids cgroup, limits, credentials, capabilities and seccomp filter;
 * then executes it.
 *
 * Any failure is fatal: the message names what failed and the exit status is
 * EXIT_SETUP_FAILED (the parent reports it as the VM's status).
 *
 * The last steps (start_process: credentials, seccomp, exec) are also those of a process the
 * agent starts in the running container (agent.c), so that both are set up alike.
 */
#include "flint-init.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* Where execvp would look when the spec's env has no PATH (runc's and crun's default). */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprint_error(errno, fmt, ap);
	va_end(ap);
	_exit(EXIT_SETUP_FAILED);
}

/*
 * Makes the root file system mounted at `root` this namespace's root. pivot_root cannot be
 * used: the old root is the initramfs, which cannot be unmounted. So the new root is moved
 * over "/" and entered with chroot, as switch_root does; the initramfs stays underneath,
 * unreachable from the new root.
 */
static void enter_root(const char *root)
{
	if (chdir(root) < 0)
		die("chdir to the root %s", root);
	if (mount(".", "/", NULL, MS_MOVE, NULL) < 0)
		die("move the root %s to /", root);
	if (chroot(".") < 0)
		die("chroot to the root");
	if (chdir("/") < 0)
		die("chdir to /");
}

/* The bits a bind remount applies (a bind takes none of the flags it is made with). */
#define PER_MOUNT_FLAGS                                                                   \
	(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME | \
	 MS_STRICTATIME)

/*
 * One `mount` record: a new file system (proc, tmpfs, ...). Bind mounts and propagation
 * flags are refused: the host sends binds as `fs-mount` records (mount_share), there is no
 * other mount namespace to propagate to, and mount(2) would read them as requests to bind
 * or to change an existing mount's propagation, not to mount anything.
 */
static void mount_one(const struct spec_mount *m)
{
	const unsigned long refused =
		MS_BIND | MS_MOVE | MS_REMOUNT | MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE;
	/* A cgroup-v2 guest has no v1 hierarchies: mount what crun mounts on such a host. */
	const char *type = strcmp(m->fstype, "cgroup") == 0 ? "cgroup2" : m->fstype;

	if (m->flags & refused) {
		errno = 0;
		die("mount %s on %s (type %s): flags %#lx include bind, move, remount or "
		    "propagation flags, which flint-init does not support",
		    m->source, m->destination, type, m->flags & refused);
	}
	if (mkdir_p(m->destination, 0755) < 0)
		die("create the mount point %s", m->destination);
	/*
	 * Read-only as a property of this mount, not of the file system: a cgroup2 or sysfs
	 * superblock is the whole guest's, and made read-only it would be so for the init too
	 * (whose agent joins exec'd processes to the workload's cgroup).
	 */
	unsigned long flags = m->flags & ~(unsigned long)MS_RDONLY;
	if (mount(m->source, m->destination, type, flags, m->data[0] ? m->data : NULL) < 0)
		die("mount %s on %s (type %s)", m->source, m->destination, type);
	if ((m->flags & MS_RDONLY) &&
	    mount(NULL, m->destination, NULL,
		  MS_REMOUNT | MS_BIND | (m->flags & PER_MOUNT_FLAGS), NULL) < 0)
		die("make the mount on %s read-only", m->destination);
}

/*
 * Where the virtio-fs shares of the `fs-mount` records are mounted, one directory per tag: in
 * the initramfs, which the new root hides, so the binds reach them through a descriptor.
 */
#define SHARES_DIR "/flint/fs"


/*
 * Mounts each share the `fs-mount` records use, once, at SHARES_DIR/TAG, before the root is
 * entered, and returns an O_PATH descriptor of SHARES_DIR (-1 if there are none). A share is
 * read-only if its first use is: flint gives a read-only bind a share of its own, read-only
 * on the host too.
 */
static int mount_shares(const struct run_spec *s)
{
	bool any = false;
	for (size_t i = 0; i < s->n_mounts; i++) {
		const struct spec_mount *m = &s->mounts[i];
		if (m->kind != MOUNT_SHARE)
			continue;
		any = true;
		bool mounted = false;
		for (size_t j = 0; j < i && !mounted; j++)
			mounted = s->mounts[j].kind == MOUNT_SHARE &&
				  strcmp(s->mounts[j].tag, m->tag) == 0;
		if (mounted)
			continue;
		char dir[sizeof SHARES_DIR + 1 + FS_TAG_MAX];
		snprintf(dir, sizeof dir, "%s/%s", SHARES_DIR, m->tag);
		if (mkdir_p(dir, 0755) < 0)
			die("create %s for the virtio-fs share %s", dir, m->tag);
		if (mount(m->tag, dir, "virtiofs", m->flags & MS_RDONLY, NULL) < 0)
			die("mount the virtio-fs share %s on %s (for %s)", m->tag, dir,
			    m->destination);
	}
	if (!any)
		return -1;
	int fd = open(SHARES_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		die("open %s", SHARES_DIR);
	return fd;
}

/*
 * Creates the mount point `path` for a bind of a directory (`dir`) or a file, as crun does:
 * a directory and its parents, or the parents and an empty file. Something already there is
 * left for the bind to accept or refuse.
 */
static int create_mount_point(const char *path, bool dir)
{
	if (dir)
		return mkdir_p(path, 0755);
	struct stat st;
	if (stat(path, &st) == 0)
		return 0;
	if (errno != ENOENT)
		return -1;
	char parent[PATH_MAX];
	size_t len = strlen(path);
	if (len >= sizeof parent) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(parent, path, len + 1);
	char *slash = strrchr(parent, '/');
	if (slash != NULL && slash != parent) {
		*slash = '\0';
		if (mkdir_p(parent, 0755) < 0)
			return -1;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0644);
	if (fd < 0)
		return errno == EEXIST ? 0 : -1;
	return close(fd);
}

/*
 * Binds `source` (a path under the directory `dir`, one of the init's own outside the new root)
 * onto m->destination inside the new root, then remounts it with m's per-mount flags; `what`
 * names the source in messages. The bind is cloned with open_tree and attached with
 * move_mount, so that the destination is resolved in the new root as a `mount` record's is,
 * in the bundle's order among them.
 */
static void bind_into_root(int dir, const char *source, const char *what,
			   const struct spec_mount *m)
{
	const unsigned long refused = ~(unsigned long)PER_MOUNT_FLAGS;
	if (m->flags & refused) {
		errno = 0;
		die("bind %s on %s: flags %#lx are not per-mount flags, which flint-init does not "
		    "support on a bind",
		    what, m->destination, m->flags & refused);
	}
	/* No symlink is followed: one would lead out of the share, into the new root. */
	int tree = open_tree(dir, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
	if (tree < 0)
		die("bind %s on %s", what, m->destination);
	struct stat st;
	if (fstat(tree, &st) < 0)
		die("stat %s (for %s)", what, m->destination);
	if (create_mount_point(m->destination, S_ISDIR(st.st_mode)) < 0)
		die("create the mount point %s (for %s)", m->destination, what);
	if (move_mount(tree, "", AT_FDCWD, m->destination, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		die("bind %s on %s", what, m->destination);
	close(tree);
	unsigned long flags = m->flags & PER_MOUNT_FLAGS;
	if (flags != 0 && mount(NULL, m->destination, NULL, MS_REMOUNT | MS_BIND | flags,
				m->data[0] ? m->data : NULL) < 0)
		die("remount %s (%s) with flags %#lx", m->destination, what, flags);
}

/*
 * One `fs-mount` record, inside the new root: a bind of SUBPATH of the share (mounted by
 * mount_shares and reached through `shares`, a descriptor of SHARES_DIR) onto DEST.
 */
static void mount_share(const struct spec_mount *m, int shares)
{
	char source[2 * PATH_MAX];
	if (m->subpath[0] != '\0')
		snprintf(source, sizeof source, "%s/%s", m->tag, m->subpath);
	else
		snprintf(source, sizeof source, "%s", m->tag);
	char what[64 + FS_TAG_MAX + PATH_MAX];
	snprintf(what, sizeof what, "%s of the virtio-fs share %s",
		 m->subpath[0] ? m->subpath : "/", m->tag);
	bind_into_root(shares, source, what, m);
}

/*
 * Where the `file` records' files are made, one per record (named by its index), in a tmpfs:
 * in the initramfs, which the new root hides, so the binds reach them through a descriptor.
 * Neither the image (read-only) nor a live root (the host's directory) is written.
 */
#define FILES_DIR "/flint/files"

/* Makes the `file` records' files and returns an O_PATH descriptor of FILES_DIR (-1: none). */
static int make_files(const struct run_spec *s)
{
	bool any = false;
	for (size_t i = 0; i < s->n_mounts; i++) {
		const struct spec_mount *m = &s->mounts[i];
		if (m->kind != MOUNT_FILE)
			continue;
		if (!any) {
			if (mkdir_p(FILES_DIR, 0755) < 0)
				die("create %s", FILES_DIR);
			if (mount("tmpfs", FILES_DIR, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
				die("mount a tmpfs on %s", FILES_DIR);
			any = true;
		}
		char path[sizeof FILES_DIR + 24];
		snprintf(path, sizeof path, "%s/%zu", FILES_DIR, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, m->mode);
		if (fd < 0 || write_all(fd, m->content, strlen(m->content)) < 0 ||
		    fchmod(fd, m->mode) < 0 || close(fd) < 0)
			die("write %s (for %s)", path, m->destination);
	}
	if (!any)
		return -1;
	int fd = open(FILES_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		die("open %s", FILES_DIR);
	return fd;
}

/* One `file` record, inside the new root: its file (see make_files) bound onto DEST. */
static void mount_file(const struct spec_mount *m, size_t index, int files)
{
	char source[24];
	snprintf(source, sizeof source, "%zu", index);
	bind_into_root(files, source, "the file from the run spec", m);
}

/* Creates a device or link in /dev unless it is there already or /dev is read-only. */
static void create_in_dev(int result, const char *path)
{
	if (result < 0 && errno != EEXIST && errno != EROFS)
		die("create %s", path);
}

/*
 * The devices and links every container has (runc and crun create the same), unless /dev
 * already has them, as a devtmpfs does. For a terminal, /dev/console is the terminal too;
 * `console_path` is an O_PATH descriptor of ttyS0 opened in this mount namespace (a bind
 * mount's source must belong to the namespace, the parent's descriptor does not), bound
 * through /proc because the path /dev/ttyS0 is not reachable from the new root.
 */
static void create_devices(int console_path)
{
	static const struct {
		const char *path;
		unsigned major, minor;
	} devices[] = {
		{"/dev/null", 1, 3},    {"/dev/zero", 1, 5},	{"/dev/full", 1, 7},
		{"/dev/random", 1, 8},  {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0},
	};
	static const struct {
		const char *path, *target;
	} links[] = {
		{"/dev/fd", "/proc/self/fd"},
		{"/dev/stdin", "/proc/self/fd/0"},
		{"/dev/stdout", "/proc/self/fd/1"},
		{"/dev/stderr", "/proc/self/fd/2"},
	};
	struct stat st;

	/* Without a /dev mount, in an image without /dev (runc creates it too). */
	create_in_dev(mkdir("/dev", 0755), "/dev");
	if (lstat("/dev/null", &st) < 0 && errno == ENOENT)
		for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++)
			create_in_dev(mknod(devices[i].path, S_IFCHR | 0666,
					    makedev(devices[i].major, devices[i].minor)),
				      devices[i].path);
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
		create_in_dev(symlink(links[i].target, links[i].path), links[i].path);
	if (lstat("/dev/pts/ptmx", &st) == 0)
		create_in_dev(symlink("pts/ptmx", "/dev/ptmx"), "/dev/ptmx");

	if (console_path >= 0) {
		char source[64];
		snprintf(source, sizeof source, "/proc/self/fd/%d", console_path);
		/* An empty file to bind onto, unless there is something already (a devtmpfs's). */
		int fd = open("/dev/console", O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			die("create /dev/console");
		if (fd >= 0)
			close(fd);
		if (mount(source, "/dev/console", NULL, MS_BIND, NULL) < 0)
			die("bind the console /dev/ttyS0 onto /dev/console (is /proc mounted?)");
	}
}

/* Writes each sysctl to /proc/sys/KEY, the key's dots as slashes. */
static void write_sysctls(const struct run_spec *s)
{
	for (size_t i = 0; i < s->n_sysctls; i++) {
		const struct spec_sysctl *sc = &s->sysctls[i];
		char path[PATH_MAX];
		int n = snprintf(path, sizeof path, "/proc/sys/%s", sc->key);
		if (n < 0 || (size_t)n >= sizeof path) {
			errno = ENAMETOOLONG;
			die("sysctl %s", sc->key);
		}
		for (char *c = path + strlen("/proc/sys/"); *c; c++)
			if (*c == '.')
				*c = '/';
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write_all(fd, sc->value, strlen(sc->value)) < 0)
			die("sysctl %s (%s)", sc->key, path);
		if (close(fd) < 0)
			die("sysctl %s (%s)", sc->key, path);
	}
}

/* stat() for the path lists: false if the path does not exist (it is then skipped). */
static bool path_exists(const char *path, struct stat *st)
{
	if (stat(path, st) == 0)
		return true;
	if (errno == ENOENT || errno == ENOTDIR)
		return false;
	die("stat %s", path);
}

/*
 * The MS_* flags of the mount at `path` that a remount must repeat: a bind remount sets the
 * mount's flags to exactly what it is given, and making /proc/sys read-only must not also
 * make it suid, dev and exec.
 */
static unsigned long kept_mount_flags(const char *path)
{
	static const struct {
		unsigned long st, ms;
	} map[] = {
		{ST_NOSUID, MS_NOSUID},	    {ST_NODEV, MS_NODEV},
		{ST_NOEXEC, MS_NOEXEC},	    {ST_NOATIME, MS_NOATIME},
		{ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME},
	};
	struct statvfs sv;
	if (statvfs(path, &sv) < 0)
		die("statvfs %s", path);
	unsigned long flags = 0;
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (sv.f_flag & map[i].st)
			flags |= map[i].ms;
	return flags;
}

/* linux.readonlyPaths: each bound onto itself (with what is mounted below) read-only. */
static void make_readonly_paths(const struct run_spec *s)
{
	for (size_t i = 0; i < s->n_readonly; i++) {
		const char *path = s->readonly[i];
		struct stat st;
		if (!path_exists(path, &st))
			continue;
		if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
			die("bind %s onto itself", path);
		unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC;
		if (mount(path, path, NULL, flags | kept_mount_flags(path), NULL) < 0)
			die("make %s read-only", path);
	}
}

/*
 * linux.maskedPaths: a file gets /dev/null bound over it, a directory an empty read-only
 * tmpfs.
 */
static void mask_paths(const struct run_spec *s)
{
	for (size_t i = 0; i < s->n_masked; i++) {
		const char *path = s->masked[i];
		struct stat st;
		if (!path_exists(path, &st))
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL) < 0)
				die("mask the directory %s", path);
		} else if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0) {
			die("mask %s", path);
		}
	}
}

void write_value(const char *path, const char *value, const char *what)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write_all(fd, value, strlen(value)) < 0 || close(fd) < 0)
		die("%s (write %s to %s)", what, value, path);
}

/*
 * A proc and a cgroup2 (CGROUP_DIR) of the init's own, before the root is entered (it may
 * have neither).
 */
#define PROC_DIR "/flint/proc"

/* process.oomScoreAdj, while the init may still lower it (CAP_SYS_RESOURCE); exec keeps it. */
static void set_oom_score_adj(const struct run_spec *s)
{
	if (!s->has_oom_score_adj)
		return;
	if (mkdir_p(PROC_DIR, 0755) < 0)
		die("create %s", PROC_DIR);
	if (mount("proc", PROC_DIR, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		die("mount proc on %s", PROC_DIR);
	char value[16];
	snprintf(value, sizeof value, "%d", s->oom_score_adj);
	write_value(PROC_DIR "/self/oom_score_adj", value, "set the OOM score adjustment");
	if (umount2(PROC_DIR, MNT_DETACH) < 0)
		die("unmount %s", PROC_DIR);
}

/*
 * linux.resources.pids.limit: the process joins a cgroup (v2) of its own whose pids.max is the
 * limit, then a cgroup namespace rooted there, so that the bundle's cgroup mount shows that
 * cgroup and its limit, as in a container. A kernel without cgroup namespaces (EINVAL) still
 * enforces the limit; one without the pids controller cannot, and the run fails.
 */
static void join_pids_cgroup(const struct run_spec *s)
{
	if (s->pids_limit == 0)
		return;
	if (mkdir_p(CGROUP_DIR, 0755) < 0)
		die("create %s", CGROUP_DIR);
	if (mount("cgroup2", CGROUP_DIR, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		die("mount cgroup2 on %s", CGROUP_DIR);
	write_value(CGROUP_DIR "/cgroup.subtree_control", "+pids",
		    "enable the pids controller (the guest kernel needs CONFIG_CGROUP_PIDS)");
	if (mkdir(CONTAINER_CGROUP, 0755) < 0 && errno != EEXIST)
		die("create the cgroup %s", CONTAINER_CGROUP);
	char value[24];
	snprintf(value, sizeof value, "%" PRIu64, s->pids_limit);
	write_value(CONTAINER_CGROUP "/pids.max", value, "set the pids limit");
	write_value(CONTAINER_CGROUP "/cgroup.procs", "0", "join the pids cgroup");
	if (umount2(CGROUP_DIR, MNT_DETACH) < 0)
		die("unmount %s", CGROUP_DIR);
	if (unshare(CLONE_NEWCGROUP) < 0 && errno != EINVAL)
		die("unshare the cgroup namespace");
}

/* linux.seccomp: the filter the host compiled (src/seccomp.rs). */
static void install_seccomp(const struct run_spec *s)
{
	if (s->seccomp == NULL)
		return;
	struct sock_fprog prog = {.len = (unsigned short)s->n_seccomp, .filter = s->seccomp};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, s->seccomp_flags, &prog) < 0)
		die("install the seccomp filter (linux.seccomp)");
}

void set_rlimits(const struct run_spec *s)
{
	for (size_t i = 0; i < s->n_rlimits; i++) {
		const struct spec_rlimit *r = &s->rlimits[i];
		struct rlimit limit = {.rlim_cur = r->soft, .rlim_max = r->hard};
		if (setrlimit((__rlimit_resource_t)r->resource, &limit) < 0)
			die("set resource limit %u to %llu/%llu", r->resource,
			    (unsigned long long)r->soft, (unsigned long long)r->hard);
	}
}

/*
 * Makes the console the terminal of the process, in the foreground. The init leads the
 * session and holds the console as its controlling terminal (see flint-init.c): the process
 * gets its own process group, made the terminal's foreground group. tcsetpgrp from a
 * background group raises SIGTTOU, which is blocked meanwhile, as shells do.
 */
static void take_terminal(int console)
{
	sigset_t ttou, saved;
	sigemptyset(&ttou);
	sigaddset(&ttou, SIGTTOU);
	if (sigprocmask(SIG_BLOCK, &ttou, &saved) < 0)
		die("block SIGTTOU");
	if (setpgid(0, 0) < 0)
		die("create a process group");
	if (tcsetpgrp(console, getpgrp()) < 0)
		die("make the process the terminal's foreground");
	if (sigprocmask(SIG_SETMASK, &saved, NULL) < 0)
		die("restore the signal mask");
	if (dup2(console, STDERR_FILENO) < 0)
		die("make the terminal the standard error");
}

/* The highest capability this kernel knows: PR_CAPBSET_READ is EINVAL beyond it. */
static unsigned last_capability(void)
{
	unsigned last = 0;
	while (last < 63 && prctl(PR_CAPBSET_READ, last + 1, 0, 0, 0) >= 0)
		last++;
	return last;
}

/*
 * Limits the bounding set to the spec's. Needs CAP_SETPCAP in the effective set, so it runs
 * before setuid() clears that.
 */
static void limit_bounding_set(uint64_t keep, unsigned last)
{
	for (unsigned c = 0; c <= last; c++)
		if (!(keep & (UINT64_C(1) << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
			die("drop capability %u from the bounding set", c);
}

/*
 * Sets the effective, permitted and inheritable sets, then raises the ambient ones (which
 * must be permitted and inheritable by then). Capabilities this kernel does not know are
 * left out, as runc does.
 */
static void set_capabilities(const struct spec_caps *caps, unsigned last)
{
	uint64_t known = last >= 63 ? UINT64_MAX : (UINT64_C(1) << (last + 1)) - 1;
	struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	for (int i = 0; i < 2; i++) {
		data[i].effective = (uint32_t)((caps->effective & known) >> (32 * i));
		data[i].permitted = (uint32_t)((caps->permitted & known) >> (32 * i));
		data[i].inheritable = (uint32_t)((caps->inheritable & known) >> (32 * i));
	}
	if (syscall(SYS_capset, &header, data) < 0)
		die("set the capabilities");
	for (unsigned c = 0; c <= last; c++)
		if ((caps->ambient & (UINT64_C(1) << c)) &&
		    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
			die("raise ambient capability %u", c);
}

/*
 * Becomes the spec's user, with its capabilities if it has any (else setuid's usual rule:
 * root keeps all, another user none). PR_SET_KEEPCAPS keeps the permitted set across
 * setuid() to a non-root user, for capset() to choose from; execve() clears the flag.
 */
static void switch_user(const struct run_spec *s)
{
	unsigned last = last_capability();
	if (setgroups(s->n_groups, s->groups) < 0)
		die("set the additional groups");
	if (s->has_caps) {
		limit_bounding_set(s->caps.bounding, last);
		if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
			die("keep capabilities across setuid");
	}
	if (setgid(s->gid) < 0)
		die("setgid %u", (unsigned)s->gid);
	if (setuid(s->uid) < 0)
		die("setuid %u", (unsigned)s->uid);
	if (s->has_caps)
		set_capabilities(&s->caps, last);
}

/*
 * execve() of `name` in each directory of `path` in turn, as execvp does (an empty entry is
 * the working directory); returns the errno to report if none could be executed.
 */
static int exec_in_path(const char *name, const char *path, char *const argv[],
			char *const envp[])
{
	size_t name_len = strlen(name);
	int result = ENOENT;
	if (name_len == 0)
		return ENOENT;
	for (const char *dir = path;; dir++) {
		const char *colon = strchrnul(dir, ':');
		size_t dir_len = (size_t)(colon - dir);
		char file[PATH_MAX];
		if (dir_len + 1 + name_len < sizeof file) {
			memcpy(file, dir, dir_len);
			file[dir_len] = '/';
			memcpy(file + dir_len + 1, name, name_len + 1);
			execve(dir_len == 0 ? name : file, argv, envp);
			switch (errno) {
			case EACCES:
				/* Found but not executable: report it unless a later one runs. */
				result = EACCES;
				break;
			case ENOENT:
			case ENOTDIR:
			case ESTALE:
			case ENODEV:
			case ETIMEDOUT:
				break;
			default:
				return errno;
			}
		}
		dir = colon;
		if (*dir == '\0')
			return result;
	}
}

/*
 * The spec's environment, with HOME added when it has none, as runc and crun do: the home
 * directory of the process's user in the container's /etc/passwd, else "/". Read while the
 * init is still root (the user may not read the file).
 */
static const char **with_home(const struct run_spec *s)
{
	for (size_t i = 0; i < s->n_env; i++) {
		if (strncmp(s->env[i], "HOME=", 5) == 0)
			return s->env;
	}
	static char home[PATH_MAX + sizeof("HOME=")];
	snprintf(home, sizeof(home), "HOME=/");
	FILE *f = fopen("/etc/passwd", "re");
	if (f != NULL) {
		char line[4096];
		while (fgets(line, sizeof(line), f) != NULL) {
			/* name:password:uid:gid:gecos:home:shell */
			char *field[7];
			size_t n = 0;
			char *p = line;
			field[n++] = p;
			while (n < 7 && (p = strchr(p, ':')) != NULL) {
				*p++ = '\0';
				field[n++] = p;
			}
			if (n < 7)
				continue;
			char *end;
			errno = 0;
			unsigned long uid = strtoul(field[2], &end, 10);
			if (end == field[2] || *end != '\0' || errno != 0 || uid != s->uid)
				continue;
			if (field[5][0] == '/')
				snprintf(home, sizeof(home), "HOME=%s", field[5]);
			break;
		}
		fclose(f);
	}
	const char **env = calloc(s->n_env + 2, sizeof(*env));
	if (env == NULL)
		die("allocate the environment");
	memcpy(env, s->env, s->n_env * sizeof(*env));
	env[s->n_env] = home;
	env[s->n_env + 1] = NULL;
	return env;
}

/*
 * Executes the process with the spec's environment (`envp`: with HOME, see with_home). Like
 * runc and crun, a program name without a slash is looked up in the PATH of that
 * environment, not the init's.
 */
__attribute__((noreturn)) static void exec_process(const struct run_spec *s, const char **env)
{
	const char *program = s->args[0];
	char *const *argv = (char *const *)s->args;
	char *const *envp = (char *const *)env;
	int errnum;
	if (strchr(program, '/') != NULL) {
		execve(program, argv, envp);
		errnum = errno;
	} else {
		/* The first PATH, as getenv() would find it in the process. */
		const char *path = DEFAULT_PATH;
		for (size_t i = 0; i < s->n_env; i++) {
			if (strncmp(s->env[i], "PATH=", 5) == 0) {
				path = s->env[i] + 5;
				break;
			}
		}
		errnum = exec_in_path(program, path, argv, envp);
	}
	print_error(errnum, "exec %s", program);
	_exit(errnum == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC);
}

void run_container(const struct run_spec *s, int console, const char *root)
{
	/* The mounts below stay in this namespace; the parent's is left as it is. */
	if (unshare(CLONE_NEWNS) < 0)
		die("unshare the mount namespace");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("make the mounts private");
	/* Modes below are exact (0666 devices); the process's umask is set before exec. */
	umask(0);

	int console_path = -1;
	if (s->terminal && (console_path = open("/dev/ttyS0", O_PATH | O_CLOEXEC)) < 0)
		die("open /dev/ttyS0");

	set_oom_score_adj(s);
	join_pids_cgroup(s);
	int shares = mount_shares(s);
	int files = make_files(s);
	enter_root(root);
	for (size_t i = 0; i < s->n_mounts; i++) {
		switch (s->mounts[i].kind) {
		case MOUNT_SHARE:
			mount_share(&s->mounts[i], shares);
			break;
		case MOUNT_FILE:
			mount_file(&s->mounts[i], i, files);
			break;
		case MOUNT_NEW:
			mount_one(&s->mounts[i]);
			break;
		}
	}
	if (shares >= 0)
		close(shares);
	if (files >= 0)
		close(files);
	create_devices(console_path);
	/*
	 * Sysctls go before the read-only paths, which usually include /proc/sys; masking comes
	 * last (runc's order), so that nothing is bound over a masked path's /dev/null.
	 */
	write_sysctls(s);
	make_readonly_paths(s);
	mask_paths(s);
	if (s->hostname != NULL && sethostname(s->hostname, strlen(s->hostname)) < 0)
		die("set the hostname %s", s->hostname);
	set_rlimits(s);
	if (s->terminal)
		take_terminal(console);
	start_process(s);
}

void start_process(const struct run_spec *s)
{
	umask(s->has_umask ? s->umask : 022);
	const char **env = with_home(s);
	/*
	 * runc's order: without no_new_privs, installing a filter needs CAP_SYS_ADMIN, so it goes
	 * before the user changes and the profile must allow the rest (setgroups, prctl, setgid,
	 * setuid, capset, chdir, execve); with it, as late as possible, right before execve.
	 */
	if (!s->no_new_privileges)
		install_seccomp(s);
	switch_user(s);
	if (s->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		die("set no_new_privs");
	if (chdir(s->cwd) < 0)
		die("chdir to the working directory %s", s->cwd);
	if (s->no_new_privileges)
		install_seccomp(s);
	exec_process(s, env);
}
