/* selftests/unit/test_control.c — the control socket: request/reply, errors, stale sockets, peer policy. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "test.h"

static char dir[64], path[128];

static int cmd_echo(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		    size_t errlen)
{
	const char *v = jsonr_get_str(req->j, req->args, "value");

	(*(int *)ctx)++;
	if (!v) {
		snprintf(err, errlen, "echo: \"value\" is required");
		return -EINVAL;
	}
	jsonw_str(w, "value", v);
	jsonw_u64(w, "uid", req->uid);
	return 0;
}

/* One request line → the reply line (without its newline). */
static char *call(const char *req)
{
	static char buf[8192];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	size_t len = 0;

	strcpy(sa.sun_path, path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return NULL;
	}
	if (write(fd, req, strlen(req)) < 0) {
		close(fd);
		return NULL;
	}
	while (len < sizeof(buf) - 1) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (n <= 0)
			break;
		len += n;
		if (memchr(buf, '\n', len))
			break;
	}
	close(fd);
	buf[len] = '\0';
	char *nl = strchr(buf, '\n');
	if (!nl)
		return NULL;
	*nl = '\0';
	return buf;
}

static struct control *ctl;
static int calls;

static void test_open_creates_socket_0660(void)
{
	char err[256];
	struct stat st;

	ASSERT_EQ(control_open(&ctl, path, (gid_t)-1, err, sizeof(err)), 0);
	ASSERT_EQ(control_register(ctl, "echo", cmd_echo, &calls), 0);
	ASSERT_EQ(control_start(ctl), 0);
	ASSERT_EQ(stat(path, &st), 0);
	ASSERT_TRUE(S_ISSOCK(st.st_mode));
	ASSERT_EQ(st.st_mode & 0777, 0660);
}

static void test_command_round_trip(void)
{
	char *r = call("{\"cmd\":\"echo\",\"value\":\"hi \\\"there\\\"\"}\n");

	ASSERT_STREQ(r, "{\"ok\":true,\"value\":\"hi \\\"there\\\"\",\"uid\":0}");
	ASSERT_EQ(calls, 1);
}

static void test_handler_error_is_reported(void)
{
	ASSERT_STREQ(call("{\"cmd\":\"echo\"}\n"),
		     "{\"ok\":false,\"error\":\"echo: \\\"value\\\" is required\"}");
}

static void test_unknown_command_and_bad_json(void)
{
	ASSERT_STREQ(call("{\"cmd\":\"nope\"}\n"),
		     "{\"ok\":false,\"error\":\"unknown command \\\"nope\\\"\"}");
	ASSERT_STRSTR(call("{\"cmd\":\n"), "\"ok\":false,\"error\":\"bad request:");
	ASSERT_STREQ(call("[1]\n"), "{\"ok\":false,\"error\":\"bad request: no \\\"cmd\\\"\"}");
}

static void test_second_agent_refused_while_first_answers(void)
{
	struct control *other = NULL;
	char err[256];

	ASSERT_EQ(control_open(&other, path, (gid_t)-1, err, sizeof(err)), -EADDRINUSE);
	ASSERT_STRSTR(err, "another clawd is answering there");
}

static void test_stale_socket_is_replaced(void)
{
	char err[256];

	control_close(ctl);
	ctl = NULL;
	/* A socket file with nobody behind it, as a crash leaves it. */
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(sa.sun_path, path);
	ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	ASSERT_EQ(control_open(&ctl, path, (gid_t)-1, err, sizeof(err)), 0);
	ASSERT_EQ(control_register(ctl, "echo", cmd_echo, &calls), 0);
	ASSERT_EQ(control_start(ctl), 0);
	ASSERT_STRSTR(call("{\"cmd\":\"echo\",\"value\":\"x\"}\n"), "\"ok\":true");
}

static void test_non_socket_path_refused(void)
{
	char other[160], err[256];
	struct control *c2 = NULL;

	snprintf(other, sizeof(other), "%s/file", dir);
	FILE *f = fopen(other, "w");
	ASSERT_TRUE(f != NULL);
	fclose(f);
	ASSERT_EQ(control_open(&c2, other, (gid_t)-1, err, sizeof(err)), -EEXIST);
	ASSERT_STRSTR(err, "is not a socket");
	unlink(other);
}

static void test_peer_policy(void)
{
	ASSERT_TRUE(control_peer_allowed(0, 0, (gid_t)-1));
	ASSERT_FALSE(control_peer_allowed(65534, 65534, (gid_t)-1));
	ASSERT_TRUE(control_peer_allowed(65534, 4242, 4242));
	ASSERT_FALSE(control_peer_allowed(65534, 65534, 4242));
}

static void test_close_removes_socket(void)
{
	control_close(ctl);
	ctl = NULL;
	ASSERT_EQ(access(path, F_OK), -1);
}

int main(void)
{
	strcpy(dir, "/tmp/openclaw-ctl.XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	snprintf(path, sizeof(path), "%s/clawd.sock", dir);
	RUN(test_open_creates_socket_0660);
	RUN(test_command_round_trip);
	RUN(test_handler_error_is_reported);
	RUN(test_unknown_command_and_bad_json);
	RUN(test_second_agent_refused_while_first_answers);
	RUN(test_stale_socket_is_replaced);
	RUN(test_non_socket_path_refused);
	RUN(test_peer_policy);
	RUN(test_close_removes_socket);
	control_close(ctl);
	rmdir(dir);
	return test_done();
}
