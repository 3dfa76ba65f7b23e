/*
 * ptyrun ROWS COLS CMD [ARG...]: runs CMD on a new pseudo-terminal of ROWS x COLS as its
 * controlling terminal (stdin, stdout and stderr), as a user's terminal would, relaying this
 * process's stdin to it and its output to stdout; exits with CMD's status (128+N if signal N
 * ended it). The lab has no terminal of its own: the runtime tests run `podman run -t` under
 * it to see the size and Ctrl-C reach the workload.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: ptyrun ROWS COLS CMD [ARG...]\n");
		return 2;
	}
	int master = posix_openpt(O_RDWR | O_NOCTTY);
	if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
		perror("ptyrun: posix_openpt");
		return 1;
	}
	struct winsize ws = {.ws_row = (unsigned short)atoi(argv[1]),
			     .ws_col = (unsigned short)atoi(argv[2])};
	if (ioctl(master, TIOCSWINSZ, &ws) < 0) {
		perror("ptyrun: TIOCSWINSZ");
		return 1;
	}
	const char *name = ptsname(master);
	pid_t child = fork();
	if (child < 0) {
		perror("ptyrun: fork");
		return 1;
	}
	if (child == 0) {
		setsid();
		int slave = open(name, O_RDWR);
		if (slave < 0 || ioctl(slave, TIOCSCTTY, 0) < 0) {
			perror("ptyrun: the slave");
			_exit(1);
		}
		dup2(slave, 0);
		dup2(slave, 1);
		dup2(slave, 2);
		if (slave > 2)
			close(slave);
		close(master);
		execvp(argv[3], argv + 3);
		perror("ptyrun: exec");
		_exit(127);
	}
	/* Relay until the terminal's last user closes it (EIO on the master). */
	int in_open = 1;
	char buf[4096];
	for (;;) {
		struct pollfd fds[2] = {{.fd = master, .events = POLLIN},
					{.fd = in_open ? 0 : -1, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[1].revents) {
			ssize_t n = read(0, buf, sizeof buf);
			if (n <= 0)
				in_open = 0;
			else if (write(master, buf, (size_t)n) < 0)
				break;
		}
		if (fds[0].revents) {
			ssize_t n = read(master, buf, sizeof buf);
			if (n <= 0)
				break;
			if (write(1, buf, (size_t)n) < 0)
				break;
		}
	}
	int status;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			return 1;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}
