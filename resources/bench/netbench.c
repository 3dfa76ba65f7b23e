/* netbench: TCP throughput and round-trip latency between a guest and its host.
 *
 *   netbench server [PORT]
 *   netbench client HOST [PORT] [MIB] [PINGS]
 *
 * The server (default port 5201) serves one connection at a time, forever, until a client
 * asks it to quit. Each connection starts with a 9-byte request: an opcode and a 64-bit
 * little-endian argument.
 *   'S' sink:   the client sends bytes until it shuts down its side; the server answers with
 *               the count it received and where the data first differed from the stream
 *               (8 bytes each; 0, or the offset + 1), so the client's clock stops only once
 *               everything arrived.
 *   'G' source: the server sends ARG bytes and closes.
 *   'P' ping:   the server echoes every byte back until the client closes.
 *   'Q' quit:   the server exits.
 *
 * The client runs three tests against a server and prints one line for each:
 *   netbench tx mib_s=X secs=S          MIB MiB client -> server (default 64)
 *   netbench rx mib_s=X secs=S          MIB MiB server -> client
 *   netbench rr lat_avg_us=A lat_p50_us=P lat_p99_us=Q rr_s=R
 *                                       PINGS round trips of 1 byte (default 2000), TCP_NODELAY
 * Every stream is a known one (byte i is i % 251): each end checks what it received, and a byte
 * that differs fails the test ("data mismatch"), as does a round trip that echoes another byte.
 * BENCH_CORRUPT=1 in the client's environment makes it send one wrong byte (the check's own
 * test: the run must then fail).
 * Every socket has 30 s send and receive timeouts: a stalled network fails instead of hanging.
 * The server also logs what it saw ("netbench-server ...") on stdout. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "benchlib.h"

#define BUF_SIZE (128 * 1024)
#define IO_TIMEOUT_S 30
#define WARMUP_PINGS 20

static char buf[BUF_SIZE];
/* The stream's bytes repeat every PERIOD: the bytes at stream offset o are pattern + o % PERIOD. */
#define PERIOD 251
static char pattern[BUF_SIZE + PERIOD];
/* BENCH_CORRUPT=1: the byte at this offset of the client's tx stream is sent wrong. */
static uint64_t corrupt_at = UINT64_MAX;

static void fail(const char *what) {
    fprintf(stderr, "netbench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void set_opts(int fd) {
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Writes all of p[0..n); 0 on success, -1 on error. */
static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes; 0 on success, -1 on error or early EOF. */
static int read_all(int fd, void *p, size_t n) {
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EPIPE;
            return -1;
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Reads until EOF; returns the byte count, or -1 on error. *bad is 0 if every byte was the
 * stream's, else the offset of the first that was not, plus one. */
static long long drain(int fd, uint64_t *bad) {
    long long total = 0;
    *bad = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return total;
        const char *want = pattern + total % PERIOD;
        if (*bad == 0 && memcmp(buf, want, (size_t)r) != 0) {
            ssize_t i = 0;
            while (buf[i] == want[i])
                i++;
            *bad = (uint64_t)(total + i) + 1;
        }
        total += r;
    }
}

/* Sends n bytes of buf; 0 on success. */
static int send_bytes(int fd, uint64_t n) {
    uint64_t sent = 0;
    while (n > 0) {
        size_t chunk = n < sizeof(buf) ? (size_t)n : sizeof(buf);
        const char *p = pattern + sent % PERIOD;
        if (corrupt_at >= sent && corrupt_at < sent + chunk) {
            memcpy(buf, p, chunk);
            buf[corrupt_at - sent] ^= 0x55;
            p = buf;
        }
        if (write_all(fd, p, chunk) != 0)
            return -1;
        n -= chunk;
        sent += chunk;
    }
    return 0;
}

/* ---- server ---- */

static int serve_one(int fd) {
    unsigned char req[9];
    if (read_all(fd, req, sizeof(req)) != 0) {
        printf("netbench-server short request: %s\n", strerror(errno));
        return 0;
    }
    uint64_t arg = get_u64(req + 1);
    double t0 = now_us();
    switch (req[0]) {
    case 'S': {
        uint64_t bad;
        long long n = drain(fd, &bad);
        unsigned char reply[16];
        put_u64(reply, n < 0 ? 0 : (uint64_t)n);
        put_u64(reply + 8, bad);
        double secs = (now_us() - t0) / 1e6;
        if (n < 0 || write_all(fd, reply, sizeof(reply)) != 0)
            printf("netbench-server sink failed: %s\n", strerror(errno));
        else if (bad)
            printf("netbench-server sink failed: data mismatch at byte %llu\n", (unsigned long long)bad - 1);
        else
            printf("netbench-server sink bytes=%lld secs=%.3f mib_s=%.1f\n", n, secs, n / 1048576.0 / secs);
        break;
    }
    case 'G':
        if (send_bytes(fd, arg) != 0)
            printf("netbench-server source failed: %s\n", strerror(errno));
        else
            printf("netbench-server source bytes=%llu\n", (unsigned long long)arg);
        break;
    case 'P': {
        long rounds = 0;
        for (;;) {
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0 || write_all(fd, buf, (size_t)r) != 0)
                break;
            rounds++;
        }
        printf("netbench-server ping rounds=%ld\n", rounds);
        break;
    }
    case 'Q':
        printf("netbench-server quit\n");
        return 1;
    default:
        printf("netbench-server unknown request %d\n", req[0]);
    }
    return 0;
}

static int server(int port) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0)
        fail("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        fail("bind");
    if (listen(lfd, 4) != 0)
        fail("listen");
    printf("netbench-server listening on %d\n", port);
    fflush(stdout);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            fail("accept");
        }
        set_opts(fd);
        int quit = serve_one(fd);
        fflush(stdout);
        close(fd);
        if (quit)
            return 0;
    }
}

/* ---- client ---- */

static const char *host;
static int port;

/* Connects (retrying for up to 10 s while the peer is not there yet) and sends the request. */
static int open_request(char op, uint64_t arg) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "netbench: not an IPv4 address: %s\n", host);
        exit(2);
    }
    double deadline = now_us() + 10e6;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            fail("socket");
        set_opts(fd);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            unsigned char req[9];
            req[0] = (unsigned char)op;
            put_u64(req + 1, arg);
            if (write_all(fd, req, sizeof(req)) != 0)
                fail("send request");
            return fd;
        }
        int e = errno;
        close(fd);
        if (now_us() > deadline || (e != ECONNREFUSED && e != EHOSTUNREACH && e != ENETUNREACH && e != EINTR)) {
            errno = e;
            fail("connect");
        }
        usleep(100 * 1000);
    }
}

static int client_tx(uint64_t bytes) {
    double t0 = now_us();
    int fd = open_request('S', 0);
    if (send_bytes(fd, bytes) != 0)
        fail("tx: send");
    shutdown(fd, SHUT_WR);
    unsigned char reply[16];
    if (read_all(fd, reply, sizeof(reply)) != 0)
        fail("tx: server's count");
    double secs = (now_us() - t0) / 1e6;
    close(fd);
    uint64_t got = get_u64(reply), bad = get_u64(reply + 8);
    if (bad) {
        fprintf(stderr, "netbench: tx: data mismatch: the server received another byte at %llu\n",
                (unsigned long long)bad - 1);
        return 1;
    }
    if (got != bytes) {
        fprintf(stderr, "netbench: tx: server received %llu of %llu bytes\n", (unsigned long long)got,
                (unsigned long long)bytes);
        return 1;
    }
    printf("netbench tx mib_s=%.1f secs=%.3f bytes=%llu\n", bytes / 1048576.0 / secs, secs, (unsigned long long)bytes);
    fflush(stdout);
    return 0;
}

static int client_rx(uint64_t bytes) {
    double t0 = now_us();
    int fd = open_request('G', bytes);
    uint64_t bad;
    long long got = drain(fd, &bad);
    double secs = (now_us() - t0) / 1e6;
    if (got < 0)
        fail("rx: receive");
    close(fd);
    if (bad) {
        fprintf(stderr, "netbench: rx: data mismatch: another byte at %llu\n", (unsigned long long)bad - 1);
        return 1;
    }
    if ((uint64_t)got != bytes) {
        fprintf(stderr, "netbench: rx: received %lld of %llu bytes\n", got, (unsigned long long)bytes);
        return 1;
    }
    printf("netbench rx mib_s=%.1f secs=%.3f bytes=%llu\n", bytes / 1048576.0 / secs, secs, (unsigned long long)bytes);
    fflush(stdout);
    return 0;
}

static int client_rr(long pings) {
    double *lat = malloc(sizeof(double) * (size_t)pings);
    if (!lat)
        return 1;
    int fd = open_request('P', 0);
    double start = 0;
    for (long i = -WARMUP_PINGS; i < pings; i++) {
        char c = (char)i, back;
        if (i == 0)
            start = now_us();
        double t0 = now_us();
        if (write_all(fd, &c, 1) != 0 || read_all(fd, &back, 1) != 0)
            fail("rr: ping");
        if (back != c) {
            fprintf(stderr, "netbench: rr: data mismatch: round trip %ld came back as another byte\n", i);
            close(fd);
            free(lat);
            return 1;
        }
        if (i >= 0)
            lat[i] = now_us() - t0;
    }
    double total = now_us() - start;
    close(fd);
    qsort(lat, (size_t)pings, sizeof(double), cmp_double);
    double sum = 0;
    for (long i = 0; i < pings; i++)
        sum += lat[i];
    long p99 = (long)(pings * 0.99) < pings ? (long)(pings * 0.99) : pings - 1;
    printf("netbench rr lat_avg_us=%.1f lat_p50_us=%.1f lat_p99_us=%.1f rr_s=%.0f ops=%ld\n", sum / pings,
           lat[pings / 2], lat[p99], pings / (total / 1e6), pings);
    fflush(stdout);
    free(lat);
    return 0;
}

int main(int argc, char **argv) {
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (char)(i % PERIOD);
    signal(SIGPIPE, SIG_IGN);
    memset(buf, 0x5a, sizeof(buf));
    if (argc >= 2 && strcmp(argv[1], "server") == 0) {
        return server(argc > 2 ? atoi(argv[2]) : 5201);
    }
    if (argc >= 3 && strcmp(argv[1], "client") == 0) {
        host = argv[2];
        port = argc > 3 ? atoi(argv[3]) : 5201;
        long mib = argc > 4 ? atol(argv[4]) : 64;
        long pings = argc > 5 ? atol(argv[5]) : 2000;
        if (port <= 0 || port > 65535 || mib <= 0 || pings <= 0) {
            fprintf(stderr, "netbench: PORT, MIB and PINGS must be positive\n");
            return 2;
        }
        const char *corrupt = getenv("BENCH_CORRUPT");
        if (corrupt && strcmp(corrupt, "1") == 0)
            corrupt_at = 12345;
        int rc = 0;
        rc |= client_tx((uint64_t)mib << 20);
        rc |= client_rx((uint64_t)mib << 20);
        rc |= client_rr(pings);
        return rc;
    }
    if (argc >= 3 && strcmp(argv[1], "quit") == 0) {
        /* netbench quit HOST [PORT]: stops a server. */
        host = argv[2];
        port = argc > 3 ? atoi(argv[3]) : 5201;
        close(open_request('Q', 0));
        return 0;
    }
    fprintf(stderr, "usage: netbench server [PORT]\n"
                    "       netbench client HOST [PORT] [MIB] [PINGS]\n"
                    "       netbench quit HOST [PORT]\n");
    return 2;
}
