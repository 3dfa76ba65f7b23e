/* firstline: run a command and time it, in microseconds, from launch to the first output line
 * containing PATTERN and to its exit.
 *
 *   firstline PATTERN CMD [ARGS...]
 *
 * Prints the command's output as it comes, then one line:
 *   firstline first_us=N exit_us=M maxrss_kib=R code=C   (first_us=-1 if PATTERN never showed)
 * maxrss_kib is the command's peak resident set (for a VMM: its own memory plus the guest
 * memory it touched).
 * and exits with the command's exit code. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: firstline PATTERN CMD [ARGS...]\n");
        return 2;
    }
    int p[2];
    if (pipe(p) != 0)
        return 2;
    long long t0 = now_us();
    pid_t pid = fork();
    if (pid < 0)
        return 2;
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        execvp(argv[2], argv + 2);
        perror("firstline: exec");
        _exit(127);
    }
    close(p[1]);
    FILE *in = fdopen(p[0], "r");
    char line[4096];
    long long first = -1;
    while (fgets(line, sizeof line, in)) {
        if (first < 0 && strstr(line, argv[1]))
            first = now_us() - t0;
        fputs(line, stdout);
    }
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    wait4(pid, &status, 0, &ru);
    long long end = now_us() - t0;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("firstline first_us=%lld exit_us=%lld maxrss_kib=%ld code=%d\n", first, end, ru.ru_maxrss, code);
    return code;
}
