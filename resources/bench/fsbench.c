/* fsbench: file I/O on a directory, the same program wherever the directory comes from (a
 * virtio-fs share or an ext4 disk in a guest, a bind mount in a container, a host directory).
 *
 *   fsbench prepare DIR MIB              write DIR/fsbench-read.dat: MIB MiB, fsync'd
 *   fsbench run DIR MIB FILES [TIMEOUT]  the three tests below, one line each
 *
 * run, in this order:
 *   seq-write    DIR/fsbench-write.tmp: MIB writes of 1 MiB, then fsync and close; timed from
 *                the open to the end of the close; the file is removed afterwards (untimed).
 *   seq-read     sync, then drop the page cache (writes 3 to /proc/sys/vm/drop_caches; where
 *                that is refused, as in a container, the caller must drop it before starting)
 *                and POSIX_FADV_DONTNEED on the file, then DIR/fsbench-read.dat (made by
 *                `prepare` with the same MIB) read in 1 MiB reads to its end; the tag at the
 *                start of each MiB is checked, so a wrong or short file is an error.
 *   small-files  in a new directory DIR/fsbench-small/: FILES files of 1 KiB created (openat
 *                O_CREAT|O_EXCL, write, close), then each stat'ed (fstatat), then each unlinked
 *                (unlinkat), all by name relative to the directory; no fsync.
 *                files_s is FILES over the time of the three phases together.
 * Output (stdout):
 *   fsbench seq-write mib_s=X secs=S
 *   fsbench seq-read mib_s=X secs=S cache_dropped=0|1
 *   fsbench small-files files_s=X create_s=C stat_s=T unlink_s=U secs=S
 * Errors: one line "fsbench: error: ..." on stderr and exit status 1; after TIMEOUT seconds
 * (default: none) "fsbench: error: timed out ..." and exit status 124. Leftovers of a failed run
 * (fsbench-write.tmp, fsbench-small/) make the next run fail: remove them. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "benchlib.h"

#define MIB (1 << 20)
#define SMALL_BYTES 1024
#define READ_FILE "fsbench-read.dat"
#define WRITE_FILE "fsbench-write.tmp"
#define SMALL_DIR "fsbench-small"
/* The tag at the start of each MiB of the read file: this constant XOR the MiB's index. */
#define TAG 0x66736265e5c4a701ull

static char *buf;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fsbench: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "fsbench: error: timed out (the TIMEOUT argument)\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(124);
}

/* A positive number no larger than max, or an error naming what it is. */
static long number(const char *s, const char *what, long max) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > max)
        die("%s must be a number from 1 to %ld, not '%s'", what, max, s);
    return v;
}

static void fill(char *p, size_t n, uint64_t seed) {
    uint64_t x = seed | 1;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
}

static void write_all(int fd, const char *p, size_t n, const char *path) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write %s: %s", path, w < 0 ? strerror(errno) : "wrote nothing");
        p += w;
        n -= (size_t)w;
    }
}

/* Reads up to n bytes (fewer only at the end of the file); the count. */
static size_t read_full(int fd, char *p, size_t n, const char *path) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read %s: %s", path, strerror(errno));
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return got;
}

static void path_of(char *out, const char *dir, const char *name) {
    if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
        die("%s/%s: path too long", dir, name);
}

static void prepare(const char *dir, long mib) {
    char path[PATH_MAX], tmp[PATH_MAX];
    path_of(path, dir, READ_FILE);
    path_of(tmp, dir, READ_FILE ".part");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die("%s: %s", tmp, strerror(errno));
    fill(buf, MIB, 0x2545f4914f6cdd1dull);
    for (long i = 0; i < mib; i++) {
        uint64_t tag = TAG ^ (uint64_t)i;
        memcpy(buf, &tag, 8);
        write_all(fd, buf, MIB, tmp);
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        die("fsync/close %s: %s", tmp, strerror(errno));
    if (rename(tmp, path) != 0)
        die("rename %s to %s: %s", tmp, path, strerror(errno));
    printf("fsbench prepared %s mib=%ld\n", path, mib);
}

static void seq_write(const char *dir, long mib) {
    char path[PATH_MAX];
    path_of(path, dir, WRITE_FILE);
    fill(buf, MIB, 0x9e3779b97f4a7c15ull);
    double t0 = now_us();
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        die("%s: %s%s", path, strerror(errno), errno == EEXIST ? " (left by an earlier run: remove it)" : "");
    for (long i = 0; i < mib; i++) {
        buf[0] = (char)i; /* no two writes alike */
        write_all(fd, buf, MIB, path);
    }
    if (fsync(fd) != 0)
        die("fsync %s: %s", path, strerror(errno));
    if (close(fd) != 0)
        die("close %s: %s", path, strerror(errno));
    double secs = (now_us() - t0) / 1e6;
    if (unlink(path) != 0)
        die("unlink %s: %s", path, strerror(errno));
    printf("fsbench seq-write mib_s=%.1f secs=%.4f\n", mib / secs, secs);
    fflush(stdout);
}

/* 1 if the whole page cache was dropped, 0 if this process may not (a container's /proc/sys
 * is read-only). */
static int drop_caches(void) {
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd < 0)
        return 0;
    int ok = write(fd, "3\n", 2) == 2;
    close(fd);
    return ok;
}

static void seq_read(const char *dir, long mib) {
    char path[PATH_MAX];
    path_of(path, dir, READ_FILE);
    int dropped = drop_caches();
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("%s: %s%s", path, strerror(errno), errno == ENOENT ? " (make it with `fsbench prepare DIR MIB`)" : "");
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    double t0 = now_us();
    fd = open(path, O_RDONLY);
    if (fd < 0)
        die("%s: %s", path, strerror(errno));
    long i = 0;
    size_t got;
    while ((got = read_full(fd, buf, MIB, path)) > 0) {
        uint64_t tag;
        memcpy(&tag, buf, 8);
        if (got != MIB || i >= mib || tag != (TAG ^ (uint64_t)i))
            die("%s is not the file `fsbench prepare DIR %ld` makes (at MiB %ld)", path, mib, i);
        i++;
    }
    close(fd);
    double secs = (now_us() - t0) / 1e6;
    if (i != mib)
        die("%s has %ld MiB, not %ld: make it with `fsbench prepare DIR %ld`", path, i, mib, mib);
    printf("fsbench seq-read mib_s=%.1f secs=%.4f cache_dropped=%d\n", mib / secs, secs, dropped);
    fflush(stdout);
}

static void small_files(const char *dir, long files) {
    char sub[PATH_MAX], name[32];
    path_of(sub, dir, SMALL_DIR);
    if (mkdir(sub, 0755) != 0)
        die("mkdir %s: %s%s", sub, strerror(errno), errno == EEXIST ? " (left by an earlier run: remove it)" : "");
    /* Names relative to the directory (openat and friends), as a program working in it would. */
    int dfd = open(sub, O_RDONLY | O_DIRECTORY);
    if (dfd < 0)
        die("%s: %s", sub, strerror(errno));
    fill(buf, SMALL_BYTES, 0x853c49e6748fea9bull);
    double t0 = now_us();
    for (long i = 0; i < files; i++) {
        snprintf(name, sizeof name, "f%ld", i);
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0)
            die("create %s/%s: %s", sub, name, strerror(errno));
        write_all(fd, buf, SMALL_BYTES, name);
        if (close(fd) != 0)
            die("close %s/%s: %s", sub, name, strerror(errno));
    }
    double t1 = now_us();
    for (long i = 0; i < files; i++) {
        struct stat st;
        snprintf(name, sizeof name, "f%ld", i);
        if (fstatat(dfd, name, &st, 0) != 0)
            die("stat %s/%s: %s", sub, name, strerror(errno));
        if (st.st_size != SMALL_BYTES)
            die("stat %s/%s: %lld bytes, not %d", sub, name, (long long)st.st_size, SMALL_BYTES);
    }
    double t2 = now_us();
    for (long i = 0; i < files; i++) {
        snprintf(name, sizeof name, "f%ld", i);
        if (unlinkat(dfd, name, 0) != 0)
            die("unlink %s/%s: %s", sub, name, strerror(errno));
    }
    double t3 = now_us();
    close(dfd);
    if (rmdir(sub) != 0)
        die("rmdir %s: %s", sub, strerror(errno));
    double secs = (t3 - t0) / 1e6;
    printf("fsbench small-files files_s=%.1f create_s=%.1f stat_s=%.1f unlink_s=%.1f secs=%.4f\n",
           files / secs, files / ((t1 - t0) / 1e6), files / ((t2 - t1) / 1e6), files / ((t3 - t2) / 1e6),
           secs);
    fflush(stdout);
}

static void usage(void) {
    fprintf(stderr, "usage: fsbench prepare DIR MIB\n"
                    "       fsbench run DIR MIB FILES [TIMEOUT_SECONDS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 4)
        usage();
    const char *dir = argv[2];
    struct stat st;
    if (stat(dir, &st) != 0)
        die("%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        die("%s: not a directory", dir);
    /* 64 GiB and a million files: beyond what these tests are for. */
    long mib = number(argv[3], "MIB", 65536);
    buf = malloc(MIB);
    if (!buf)
        die("out of memory");
    if (strcmp(argv[1], "prepare") == 0 && argc == 4) {
        prepare(dir, mib);
        return 0;
    }
    if (strcmp(argv[1], "run") != 0 || argc < 5 || argc > 6)
        usage();
    long files = number(argv[4], "FILES", 1000000);
    if (argc == 6) {
        signal(SIGALRM, on_alarm);
        alarm((unsigned)number(argv[5], "TIMEOUT", 86400));
    }
    seq_write(dir, mib);
    seq_read(dir, mib);
    small_files(dir, files);
    return 0;
}
