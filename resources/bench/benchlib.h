/* Shared by the guest-side benchmark programs (blkbench, netbench): a monotonic clock in
 * microseconds and a comparison for sorting latencies. */
#ifndef FLINT_BENCHLIB_H
#define FLINT_BENCHLIB_H
#include <time.h>

static inline double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
#endif
