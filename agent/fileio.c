/* agent/fileio.c — whole-file reads with the project's checks in one place. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(int rc, int fd, char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int fail(int rc, int fd, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (fd >= 0)
		close(fd);
	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

int fileio_read(const char *path, size_t max, unsigned flags, char **out, size_t *len,
		struct stat *st_out, char *err, size_t errlen)
{
	struct stat st;
	size_t got = 0;
	char *buf;
	int fd, rc;

	*out = NULL;
	*len = 0;
	/* O_NONBLOCK: a FIFO in place of the file must not hang us before fstat refuses it. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
			      ((flags & FILEIO_NOFOLLOW) ? O_NOFOLLOW : 0));
	if (fd < 0) {
		rc = -errno;
		return fail(rc, -1, err, errlen, "%s: %s", path, strerror(-rc));
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		return fail(rc, fd, err, errlen, "%s: %s", path, strerror(-rc));
	}
	if (!S_ISREG(st.st_mode))
		return fail(-EINVAL, fd, err, errlen, "%s: not a regular file", path);
	if ((flags & FILEIO_OWNED) && st.st_uid != geteuid())
		return fail(-EPERM, fd, err, errlen,
			    "%s: owned by uid %u, not by clawd's uid %u (mode %04o)", path,
			    (unsigned)st.st_uid, (unsigned)geteuid(), (unsigned)(st.st_mode & 07777));
	if ((flags & FILEIO_PRIVATE) && (st.st_mode & 077))
		return fail(-EPERM, fd, err, errlen,
			    "%s: mode %04o lets others read or change it (use 0600 or 0400)", path,
			    (unsigned)(st.st_mode & 07777));
	if ((uint64_t)st.st_size > max)
		return fail(-EFBIG, fd, err, errlen, "%s: larger than %zu bytes", path, max);
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return fail(-ENOMEM, fd, err, errlen, "%s: out of memory", path);
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			free(buf);
			return fail(rc, fd, err, errlen, "%s: %s", path, strerror(-rc));
		}
		if (r == 0)
			break; /* truncated while we read: take what is there */
		got += (size_t)r;
	}
	close(fd);
	buf[got] = '\0';
	*out = buf;
	*len = got;
	if (st_out)
		*st_out = st;
	return 0;
}
