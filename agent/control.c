/* agent/control.c — the control socket server: one thread, poll(2), one JSON line in, one out. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#define MAX_CMDS 64
#define MAX_PEERS 32
#define REQ_NODES 4096

struct peer {
	int fd;
	uid_t uid;
	pid_t pid;
	char *buf;     /* partial request line */
	size_t len;
};

struct command {
	const char *name;
	control_fn fn;
	void *ctx;
};

struct control {
	char *path;
	ino_t ino;              /* the socket file's inode: unlinked at close only while it is still ours */
	int fd;
	int stop_fd;
	gid_t group;
	pthread_t thread;
	bool running;
	struct command cmds[MAX_CMDS];
	unsigned ncmds;
	struct peer peers[MAX_PEERS];
	char *reply;            /* CONTROL_MAX_REPLY bytes */
	struct jsonr_node *nodes;
	char *strbuf;
};

int control_peer_allowed(uid_t uid, gid_t gid, gid_t group)
{
	if (uid == 0 || uid == geteuid())
		return 1;
	if (group == (gid_t)-1)
		return 0;
	if (gid == group)
		return 1;
	/* Supplementary groups come from the user database, as login would set them. */
	struct passwd pw, *res = NULL;
	char buf[4096];
	gid_t groups[256];
	int n = 256;

	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) || !res)
		return 0;
	if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
		return 0;
	for (int i = 0; i < n; i++)
		if (groups[i] == group)
			return 1;
	return 0;
}

int control_open(struct control **out, const char *path, gid_t group, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct control *c;
	struct stat st;
	int fd, e;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "control socket %s: path too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	/* A socket file may be left over from a crash; one with a live agent behind it is not. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "control socket %s: exists and is not a socket", path);
			return -EEXIST;
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(fd);
			snprintf(err, errlen, "control socket %s: another clawd is answering there", path);
			return -EADDRINUSE;
		}
		if (fd >= 0)
			close(fd);
		unlink(path);
	}
	/* The directory (e.g. /run/openclaw) is created when missing. */
	char dir[sizeof(sa.sun_path)];
	strcpy(dir, path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			e = -errno;
			snprintf(err, errlen, "control socket %s: mkdir %s: %s", path, dir, strerror(-e));
			return e;
		}
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		e = -errno;
		snprintf(err, errlen, "control socket: %s", strerror(-e));
		return e;
	}
	/* Bind under a tight umask so the socket is never briefly open to everyone. */
	mode_t old = umask(0117);
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0 || listen(fd, 16) < 0) {
		e = -errno;
		snprintf(err, errlen, "control socket %s: %s", path, strerror(-e));
		close(fd);
		return e;
	}
	chmod(path, 0660);
	if (group != (gid_t)-1 && chown(path, (uid_t)-1, group) < 0) {
		e = -errno;
		snprintf(err, errlen, "control socket %s: chown to group %u: %s", path,
			 (unsigned)group, strerror(-e));
		close(fd);
		unlink(path);
		return e;
	}
	c = calloc(1, sizeof(*c));
	if (c) {
		c->reply = malloc(CONTROL_MAX_REPLY);
		c->nodes = calloc(REQ_NODES, sizeof(*c->nodes));
		c->strbuf = malloc(CONTROL_MAX_LINE + 1);
		c->path = strdup(path);
	}
	if (!c || !c->reply || !c->nodes || !c->strbuf || !c->path) {
		if (c) {
			free(c->reply);
			free(c->nodes);
			free(c->strbuf);
			free(c->path);
			free(c);
		}
		close(fd);
		unlink(path);
		snprintf(err, errlen, "control socket: out of memory");
		return -ENOMEM;
	}
	c->fd = fd;
	c->group = group;
	if (lstat(path, &st) == 0)
		c->ino = st.st_ino;
	c->stop_fd = eventfd(0, EFD_CLOEXEC);
	for (int i = 0; i < MAX_PEERS; i++)
		c->peers[i].fd = -1;
	*out = c;
	return 0;
}

int control_register(struct control *c, const char *cmd, control_fn fn, void *ctx)
{
	if (c->ncmds == MAX_CMDS)
		return -ENOSPC;
	c->cmds[c->ncmds++] = (struct command){ cmd, fn, ctx };
	return 0;
}

/* Writes all of buf, waiting at most a couple of seconds for a slow reader. */
static void write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };

			if (poll(&p, 1, 2000) <= 0)
				return;
			continue;
		}
		if (n <= 0)
			return;
		buf += n;
		len -= n;
	}
}

static void reply_error(struct control *c, struct peer *p, const char *why)
{
	struct jsonw w;

	jsonw_init(&w, c->reply, CONTROL_MAX_REPLY - 1);
	jsonw_obj_begin(&w);
	jsonw_bool(&w, "ok", false);
	jsonw_str(&w, "error", why);
	jsonw_obj_end(&w);
	long n = jsonw_finish(&w);
	c->reply[n++] = '\n';
	write_all(p->fd, c->reply, n);
}

static void handle_line(struct control *c, struct peer *p, const char *line, size_t len)
{
	struct jsonr j;
	struct jsonw w;
	struct control_req req = { .j = &j, .uid = p->uid, .pid = p->pid };
	char err[256] = "";
	const char *cmd;

	if (jsonr_parse(&j, line, len, c->nodes, REQ_NODES, c->strbuf, CONTROL_MAX_LINE + 1)) {
		snprintf(err, sizeof(err), "bad request: %s at byte %zu", j.err, j.err_off);
		reply_error(c, p, err);
		return;
	}
	req.args = &j.nodes[0];
	cmd = jsonr_get_str(&j, req.args, "cmd");
	if (!cmd) {
		reply_error(c, p, "bad request: no \"cmd\"");
		return;
	}
	for (unsigned i = 0; i < c->ncmds; i++) {
		if (strcmp(c->cmds[i].name, cmd))
			continue;
		jsonw_init(&w, c->reply, CONTROL_MAX_REPLY - 1);
		jsonw_obj_begin(&w);
		jsonw_bool(&w, "ok", true);
		int rc = c->cmds[i].fn(c->cmds[i].ctx, &req, &w, err, sizeof(err));
		if (rc < 0) {
			if (!err[0])
				snprintf(err, sizeof(err), "%s: %s", cmd, strerror(-rc));
			log_info("control: uid %u: %s refused: %s", (unsigned)p->uid, cmd, err);
			reply_error(c, p, err);
			return;
		}
		jsonw_obj_end(&w);
		long n = jsonw_finish(&w);
		if (n < 0) {
			reply_error(c, p, "reply too large");
			return;
		}
		c->reply[n++] = '\n';
		write_all(p->fd, c->reply, n);
		return;
	}
	snprintf(err, sizeof(err), "unknown command \"%.64s\"", cmd);
	reply_error(c, p, err);
}

static void peer_close(struct peer *p)
{
	close(p->fd);
	p->fd = -1;
	free(p->buf);
	p->buf = NULL;
	p->len = 0;
}

static void peer_accept(struct control *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct peer *p = NULL;

	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		close(fd);
		return;
	}
	for (int i = 0; i < MAX_PEERS; i++)
		if (c->peers[i].fd < 0) {
			p = &c->peers[i];
			break;
		}
	struct peer tmp = { .fd = fd, .uid = cred.uid, .pid = cred.pid };
	if (!control_peer_allowed(cred.uid, cred.gid, c->group)) {
		char why[160];

		snprintf(why, sizeof(why),
			 "permission denied: uid %u is neither root nor in the control group",
			 (unsigned)cred.uid);
		log_warn("control: refused pid %d uid %u: not root or in the control group",
			 (int)cred.pid, (unsigned)cred.uid);
		reply_error(c, &tmp, why);
		close(fd);
		return;
	}
	if (!p) {
		reply_error(c, &tmp, "busy: too many control connections");
		close(fd);
		return;
	}
	*p = tmp;
}

static void peer_read(struct control *c, struct peer *p)
{
	char chunk[16384];
	ssize_t n = recv(p->fd, chunk, sizeof(chunk), 0);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		peer_close(p);
		return;
	}
	if (p->len + n > CONTROL_MAX_LINE + 1) {
		reply_error(c, p, "request line too long");
		peer_close(p);
		return;
	}
	char *nb = realloc(p->buf, p->len + n);
	if (!nb) {
		peer_close(p);
		return;
	}
	p->buf = nb;
	memcpy(p->buf + p->len, chunk, n);
	p->len += n;
	for (;;) {
		char *nl = memchr(p->buf, '\n', p->len);

		if (!nl)
			return;
		size_t line = nl - p->buf;
		handle_line(c, p, p->buf, line);
		memmove(p->buf, nl + 1, p->len - line - 1);
		p->len -= line + 1;
	}
}

static void *control_main(void *arg)
{
	struct control *c = arg;

	for (;;) {
		struct pollfd pfd[MAX_PEERS + 2];
		int map[MAX_PEERS + 2];
		int n = 0;

		pfd[n++] = (struct pollfd){ .fd = c->stop_fd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
		for (int i = 0; i < MAX_PEERS; i++)
			if (c->peers[i].fd >= 0) {
				map[n] = i;
				pfd[n++] = (struct pollfd){ .fd = c->peers[i].fd, .events = POLLIN };
			}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents)
			peer_accept(c);
		for (int i = 2; i < n; i++)
			if (pfd[i].revents)
				peer_read(c, &c->peers[map[i]]);
	}
	return NULL;
}

int control_start(struct control *c)
{
	int err = pthread_create(&c->thread, NULL, control_main, c);

	if (err)
		return -err;
	c->running = true;
	return 0;
}

void control_close(struct control *c)
{
	uint64_t one = 1;

	if (!c)
		return;
	if (c->running) {
		if (write(c->stop_fd, &one, sizeof(one)) < 0)
			log_warn("control: cannot signal stop: %s", strerror(errno));
		pthread_join(c->thread, NULL);
	}
	for (int i = 0; i < MAX_PEERS; i++)
		if (c->peers[i].fd >= 0)
			peer_close(&c->peers[i]);
	close(c->fd);
	close(c->stop_fd);
	/* After a binary upgrade the path names the new clawd's socket: leave it (upgrade.c). */
	struct stat st;
	if (lstat(c->path, &st) == 0 && st.st_ino == c->ino)
		unlink(c->path);
	free(c->path);
	free(c->reply);
	free(c->nodes);
	free(c->strbuf);
	free(c);
}

int control_rename(struct control *c, const char *path)
{
	struct sockaddr_un sa;
	char *np;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	np = strdup(path);
	if (!np)
		return -ENOMEM;
	/* rename(2) replaces the old socket file atomically: a client connects to one or the other. */
	if (rename(c->path, np) < 0) {
		int e = -errno;

		free(np);
		return e;
	}
	free(c->path);
	c->path = np;
	return 0;
}
