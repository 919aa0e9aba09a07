/* agent/sdnotify.c — systemd readiness protocol (sd_notify) without libsystemd: one datagram to $NOTIFY_SOCKET. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sdnotify.h"

int sdnotify_send(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t plen, slen;
	socklen_t alen;
	ssize_t n;
	int fd, err = 0;

	if (!path || !*path)
		return 0;
	if (!state)
		return -EINVAL;
	plen = strlen(path);
	if (path[0] != '/' && path[0] != '@') {
		/* "vsock:CID:PORT" is for VMs; clawd does not run as one's init */
		log_warn("sd_notify: NOTIFY_SOCKET %s: only a path or @abstract name is supported", path);
		return -EAFNOSUPPORT;
	}
	if (plen > sizeof(sa.sun_path) || (path[0] == '/' && plen == sizeof(sa.sun_path))) {
		log_warn("sd_notify: NOTIFY_SOCKET %s: name too long", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract: the length, not a NUL, ends the name */
	alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/'));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	slen = strlen(state);
	n = sendto(fd, state, slen, MSG_NOSIGNAL, (struct sockaddr *)&sa, alen);
	if (n < 0)
		err = -errno;
	else if ((size_t)n != slen)
		err = -EMSGSIZE;
	close(fd);
	if (err) {
		/* systemd waits for READY=1 until TimeoutStartSec: say why it will not come. */
		log_warn("sd_notify: %s: %s", path, strerror(-err));
		return err;
	}
	return 1;
}

int sdnotify_ready(void)
{
	return sdnotify_send("READY=1\nSTATUS=serving");
}

int sdnotify_reloading(void)
{
	struct timespec ts;
	char buf[64];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
	return sdnotify_send(buf);
}

int sdnotify_stopping(void)
{
	return sdnotify_send("STOPPING=1\nSTATUS=draining");
}

int sdnotify_mainpid(pid_t pid)
{
	char buf[64];

	snprintf(buf, sizeof(buf), "MAINPID=%ld\nREADY=1\nSTATUS=serving (upgraded)", (long)pid);
	return sdnotify_send(buf);
}
