/* blkbench: block device throughput and latency, run inside a guest.
 *
 *   blkbench DEVICE [SEQ_MIB] [RAND_OPS] [DEPTH]
 *
 * O_DIRECT, queue depth 1, so each number is one request's round trip through the VMM's device:
 * sequential write and read in 1 MiB requests over SEQ_MIB MiB, then RAND_OPS random 4 KiB
 * reads and writes. With DEPTH > 1, the random tests run again with DEPTH processes issuing
 * requests at once (queue depth DEPTH: the guest's driver touches the device's registers while
 * the VMM is busy with other requests), as rand-read-4k-qdDEPTH and rand-write-4k-qdDEPTH.
 * One line per test:
 *   blkbench TEST mib_s=X iops=Y lat_avg_us=Z lat_p50_us=P lat_p99_us=Q bytes=B ops=N
 * DEVICE may be a plain file too (a container's view of a host directory); where O_DIRECT is
 * refused (tmpfs), it is opened without, and a first line says which:
 *   blkbench-open direct=1|0
 * Every page written carries its own offset (and a tag) in its first 8 bytes; after the tests
 * the whole device is read back, and every page must hold its stamp or never have been written
 * (zeros; pages in the sequential range must all be stamped). The last line, the run's proof
 * that the data moved is the data meant:
 *   blkbench-verify pages=N ok          (or exit 1 with "blkbench: data mismatch ...")
 * Writes go to the device: give it a scratch disk (zeroed, for the check to be exact).
 * BENCH_CORRUPT=1 in the environment writes one page wrong before the check (the check's own
 * test: the run must then fail). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>

#include "benchlib.h"

/* xorshift64: reproducible offsets without libc's rand state. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

#define PAGE 4096
#define STAMP_TAG 0x666c696e74626b00ull /* "flintbk" */

/* Marks each page of buf, which is written at off, with its own offset. */
static void stamp(char *buf, off_t off, size_t bs) {
    for (size_t p = 0; p < bs; p += PAGE) {
        uint64_t v = ((uint64_t)off + p) ^ STAMP_TAG;
        memcpy(buf + p, &v, sizeof v);
    }
}

static void report(const char *test, double *lat, long n, size_t bs, double total_us) {
    qsort(lat, n, sizeof(double), cmp_double);
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += lat[i];
    printf("blkbench %s mib_s=%.1f iops=%.0f lat_avg_us=%.1f lat_p50_us=%.1f lat_p99_us=%.1f bytes=%lld ops=%ld\n",
           test, (double)n * bs / (1 << 20) / (total_us / 1e6), n / (total_us / 1e6), sum / n, lat[n / 2],
           lat[(long)(n * 0.99) < n ? (long)(n * 0.99) : n - 1], (long long)n * (long long)bs, n);
    fflush(stdout);
}

static int run(int fd, const char *test, int write, int random, size_t bs, long n, uint64_t dev_size,
               char *buf, double *lat) {
    uint64_t blocks = dev_size / bs;
    double start = now_us();
    for (long i = 0; i < n; i++) {
        off_t off = (off_t)((random ? next_rand() % blocks : (uint64_t)i % blocks) * bs);
        if (write)
            stamp(buf, off, bs);
        double t0 = now_us();
        ssize_t r = write ? pwrite(fd, buf, bs, off) : pread(fd, buf, bs, off);
        lat[i] = now_us() - t0;
        if (r != (ssize_t)bs) {
            fprintf(stderr, "blkbench: %s at %lld: %s\n", test, (long long)off, r < 0 ? strerror(errno) : "short");
            return 1;
        }
    }
    if (write && fdatasync(fd) != 0) {
        fprintf(stderr, "blkbench: fdatasync: %s\n", strerror(errno));
        return 1;
    }
    report(test, lat, n, bs, now_us() - start);
    return 0;
}

static uint64_t xorshift(uint64_t *state) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* The random test with `depth` processes, each doing every depth-th request. */
static int run_depth(int fd, const char *test, int write, size_t bs, long n, uint64_t dev_size, int depth) {
    double *lat = mmap(NULL, sizeof(double) * (size_t)n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (lat == MAP_FAILED)
        return 1;
    uint64_t blocks = dev_size / bs;
    double start = now_us();
    for (int j = 0; j < depth; j++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            char *buf;
            if (posix_memalign((void **)&buf, 4096, bs) != 0)
                _exit(1);
            memset(buf, 0x5a, bs);
            uint64_t state = 0x9e3779b97f4a7c15ull ^ ((uint64_t)(j + 1) * 0x2545f4914f6cdd1dull);
            for (long i = j; i < n; i += depth) {
                off_t off = (off_t)((xorshift(&state) % blocks) * bs);
                if (write)
                    stamp(buf, off, bs);
                double t0 = now_us();
                ssize_t r = write ? pwrite(fd, buf, bs, off) : pread(fd, buf, bs, off);
                lat[i] = now_us() - t0;
                if (r != (ssize_t)bs) {
                    fprintf(stderr, "blkbench: %s at %lld: %s\n", test, (long long)off, r < 0 ? strerror(errno) : "short");
                    _exit(1);
                }
            }
            _exit(0);
        }
    }
    int rc = 0, status;
    while (wait(&status) > 0)
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            rc = 1;
    if (write && fdatasync(fd) != 0) {
        fprintf(stderr, "blkbench: fdatasync: %s\n", strerror(errno));
        rc = 1;
    }
    if (rc == 0)
        report(test, lat, n, bs, now_us() - start);
    munmap(lat, sizeof(double) * (size_t)n);
    return rc;
}

/* Reads the whole device back: each page holds its stamp, or zeros if never written; the
 * first seq_bytes must all be stamped. */
static int verify(int fd, uint64_t size, uint64_t seq_bytes, char *buf) {
    long stamped = 0;
    for (uint64_t off = 0; off < size; off += 1 << 20) {
        size_t len = size - off < (1 << 20) ? (size_t)(size - off) : (size_t)1 << 20;
        if (pread(fd, buf, len, (off_t)off) != (ssize_t)len) {
            fprintf(stderr, "blkbench: verify: read at %llu: %s\n", (unsigned long long)off, strerror(errno));
            return 1;
        }
        for (size_t p = 0; p + PAGE <= len; p += PAGE) {
            uint64_t v, want = (off + p) ^ STAMP_TAG;
            memcpy(&v, buf + p, sizeof v);
            if (v == want) {
                stamped++;
            } else if (v != 0 || off + p < seq_bytes) {
                fprintf(stderr, "blkbench: data mismatch at offset %llu: page holds %016llx, expected %016llx%s\n",
                        (unsigned long long)(off + p), (unsigned long long)v, (unsigned long long)want,
                        off + p < seq_bytes ? "" : " or zeros");
                return 1;
            }
        }
    }
    printf("blkbench-verify pages=%ld ok\n", stamped);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: blkbench DEVICE [SEQ_MIB] [RAND_OPS] [DEPTH]\n");
        return 2;
    }
    long seq_mib = argc > 2 ? atol(argv[2]) : 64;
    long rand_ops = argc > 3 ? atol(argv[3]) : 2000;
    int depth = argc > 4 ? atoi(argv[4]) : 1;
    if (depth < 1 || depth > 256) {
        fprintf(stderr, "blkbench: DEPTH must be 1 to 256\n");
        return 2;
    }
    int direct = 1;
    int fd = open(argv[1], O_RDWR | O_DIRECT);
    if (fd < 0 && errno == EINVAL) {
        direct = 0;
        fd = open(argv[1], O_RDWR);
    }
    if (fd < 0) {
        fprintf(stderr, "blkbench: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    uint64_t size = 0;
    /* A block device answers BLKGETSIZE64; a plain file (for trying it on the host) its size. */
    if (ioctl(fd, BLKGETSIZE64, &size) != 0)
        size = (uint64_t)lseek(fd, 0, SEEK_END);
    if (size < (1 << 20)) {
        fprintf(stderr, "blkbench: %s: cannot size it or smaller than 1 MiB\n", argv[1]);
        return 1;
    }
    if ((uint64_t)seq_mib << 20 > size)
        seq_mib = size >> 20;
    printf("blkbench-open direct=%d\n", direct);
    char *buf;
    if (posix_memalign((void **)&buf, 4096, 1 << 20) != 0)
        return 1;
    memset(buf, 0x5a, 1 << 20);
    long max_n = seq_mib > rand_ops ? seq_mib : rand_ops;
    double *lat = malloc(sizeof(double) * (size_t)max_n);
    if (!lat)
        return 1;
    int rc = 0;
    rc |= run(fd, "seq-write-1m", 1, 0, 1 << 20, seq_mib, size, buf, lat);
    rc |= run(fd, "seq-read-1m", 0, 0, 1 << 20, seq_mib, size, buf, lat);
    rc |= run(fd, "rand-read-4k", 0, 1, 4096, rand_ops, size, buf, lat);
    rc |= run(fd, "rand-write-4k", 1, 1, 4096, rand_ops, size, buf, lat);
    if (depth > 1) {
        char name[32];
        snprintf(name, sizeof name, "rand-read-4k-qd%d", depth);
        rc |= run_depth(fd, name, 0, 4096, rand_ops, size, depth);
        snprintf(name, sizeof name, "rand-write-4k-qd%d", depth);
        rc |= run_depth(fd, name, 1, 4096, rand_ops, size, depth);
    }
    const char *corrupt = getenv("BENCH_CORRUPT");
    if (rc == 0 && corrupt && strcmp(corrupt, "1") == 0) {
        memset(buf, 0xa5, PAGE);
        if (pwrite(fd, buf, PAGE, 0) != PAGE)
            rc = 1;
    }
    if (rc == 0)
        rc = verify(fd, size, (uint64_t)seq_mib << 20, buf);
    close(fd);
    return rc;
}
