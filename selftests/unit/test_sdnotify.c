/* selftests/unit/test_sdnotify.c — sd_notify without libsystemd: path and abstract sockets, message text, refusals. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "sdnotify.h"
#include "test.h"

static char dir[64];

/* Binds a datagram socket at name ("/path" or "@abstract"); returns the fd. */
static int bind_dgram(const char *name)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { 2, 0 };
	size_t n = strlen(name);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memcpy(sa.sun_path, name, n);
	if (name[0] == '@')
		sa.sun_path[0] = '\0';
	if (bind(fd, (struct sockaddr *)&sa,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (name[0] == '/'))) < 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Receives one datagram into buf (NUL-terminated); its length or -1. */
static ssize_t recv_msg(int fd, char *buf, size_t len)
{
	ssize_t n = recv(fd, buf, len - 1, 0);

	buf[n > 0 ? n : 0] = '\0';
	return n;
}

static void test_unset_is_a_no_op(void)
{
	unsetenv("NOTIFY_SOCKET");
	ASSERT_EQ(sdnotify_send("READY=1"), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	ASSERT_EQ(sdnotify_ready(), 0);
}

static void test_path_socket(void)
{
	char path[128], buf[256];
	int fd;

	snprintf(path, sizeof(path), "%s/notify", dir);
	fd = bind_dgram(path);
	ASSERT_GE(fd, 0);
	setenv("NOTIFY_SOCKET", path, 1);
	ASSERT_EQ(sdnotify_ready(), 1);
	ASSERT_GT(recv_msg(fd, buf, sizeof(buf)), 0);
	ASSERT_STREQ(buf, "READY=1\nSTATUS=serving");
	ASSERT_EQ(sdnotify_stopping(), 1);
	ASSERT_GT(recv_msg(fd, buf, sizeof(buf)), 0);
	ASSERT_STREQ(buf, "STOPPING=1\nSTATUS=draining");
	/* Left in the environment: an upgraded clawd inherits it. */
	ASSERT_STREQ(getenv("NOTIFY_SOCKET"), path);
	close(fd);
	unlink(path);
}

static void test_abstract_socket(void)
{
	char name[64], buf[256], want[64];
	int fd;

	snprintf(name, sizeof(name), "@clawd-test-sdnotify-%d", (int)getpid());
	fd = bind_dgram(name);
	ASSERT_GE(fd, 0);
	setenv("NOTIFY_SOCKET", name, 1);
	ASSERT_EQ(sdnotify_mainpid(4242), 1);
	ASSERT_GT(recv_msg(fd, buf, sizeof(buf)), 0);
	snprintf(want, sizeof(want), "MAINPID=4242\nREADY=1\n");
	ASSERT_EQ(strncmp(buf, want, strlen(want)), 0);
	ASSERT_EQ(sdnotify_reloading(), 1);
	ASSERT_GT(recv_msg(fd, buf, sizeof(buf)), 0);
	ASSERT_EQ(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27), 0);
	ASSERT_GT(strtoull(buf + 27, NULL, 10), 0);
	close(fd);
}

static void test_refusals(void)
{
	char path[128], longname[200];

	setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
	ASSERT_EQ(sdnotify_send("READY=1"), -EAFNOSUPPORT);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	setenv("NOTIFY_SOCKET", longname, 1);
	ASSERT_EQ(sdnotify_send("READY=1"), -ENAMETOOLONG);
	/* Nobody bound there: the error comes back, nothing is sent anywhere else. */
	snprintf(path, sizeof(path), "%s/absent", dir);
	setenv("NOTIFY_SOCKET", path, 1);
	ASSERT_EQ(sdnotify_send("READY=1"), -ENOENT);
	setenv("NOTIFY_SOCKET", "/tmp", 1);
	ASSERT_LT(sdnotify_send(NULL), 0);
	unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/clawd-sdnotify-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_unset_is_a_no_op);
	RUN(test_path_socket);
	RUN(test_abstract_socket);
	RUN(test_refusals);
	rmdir(dir);
	return test_done();
}
