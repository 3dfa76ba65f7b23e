/* flint's guest init: error messages and small file helpers. */
#include "flint-init.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int error_fd = STDERR_FILENO;

void print_error(int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprint_error(errnum, fmt, ap);
	va_end(ap);
}

void vprint_error(int errnum, const char *fmt, va_list ap)
{
	/*
	 * One write of one line, so that a message is never interleaved with the process's
	 * output on a shared console.
	 */
	char line[1024];
	static const char prefix[] = "flint-init: error: ";
	size_t len = sizeof prefix - 1;
	memcpy(line, prefix, len);

	vsnprintf(line + len, sizeof line - len, fmt, ap);
	len = strlen(line);
	if (errnum != 0)
		snprintf(line + len, sizeof line - len, ": %s", strerror(errnum));
	len = strlen(line);

	/* Paths in the message come from the spec: keep a newline in one from splitting it. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20)
			line[i] = '?';
	if (len > sizeof line - 1)
		len = sizeof line - 1;
	line[len++] = '\n';
	write_all(error_fd, line, len);
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);
	if (len == 0) {
		errno = ENOENT;
		return -1;
	}
	if (len >= sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, len + 1);

	/*
	 * Create each prefix that ends before a '/' and then the whole path. EEXIST is fine, for
	 * a directory or a symlink to one; if something else is in the way, the next mkdir (or
	 * the caller's mount) fails with ENOTDIR. mkdir reports EEXIST before EROFS, so existing
	 * directories on a read-only root pass too.
	 */
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -1;
		*p = c;
		if (c == '\0')
			return 0;
	}
}
