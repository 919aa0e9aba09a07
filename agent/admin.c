/* agent/admin.c — the admin listener: a blocking accept loop answering /metrics, /healthz and /readyz. */
#include "admin.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "forward.h"
#include "http1.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "upgrade.h"

#define ADMIN_HEAD_MAX 8192   /* a scraper's request head is tiny */
#define ADMIN_TIMEOUT_MS 5000 /* a client gets this long to send its head and take the answer */
#define ADMIN_TOKEN_MAX 512

struct admin {
	int fd;
	int stop_pipe[2];  /* written by admin_stop: wakes the poll */
	pthread_t thread;
	bool running;
	struct agent *a;
	char token[ADMIN_TOKEN_MAX + 1]; /* empty: no token required */
	char addr[NET_ADDR_STRLEN];
};

bool admin_token_eq(const char *got, size_t got_len, const char *want)
{
	size_t want_len = strlen(want);
	unsigned char diff = got_len != want_len;

	/* Time independent of where the first difference is. */
	for (size_t i = 0; i < want_len; i++)
		diff |= (unsigned char)(want[i] ^ (i < got_len ? got[i] : 0));
	return diff == 0;
}

static int read_token(struct admin *ad, const char *path, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0) {
		snprintf(err, errlen, "admin.bearer_token_file %s: %s", path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077)) {
		snprintf(err, errlen, "admin.bearer_token_file %s: must be a regular file of mode 0600 or stricter",
			 path);
		close(fd);
		return -EPERM;
	}
	n = read(fd, ad->token, ADMIN_TOKEN_MAX);
	close(fd);
	if (n < 0) {
		snprintf(err, errlen, "admin.bearer_token_file %s: %s", path, strerror(errno));
		return -EIO;
	}
	ad->token[n] = '\0';
	/* The file usually ends with a newline; the token is the first line. */
	ad->token[strcspn(ad->token, "\r\n")] = '\0';
	if (!ad->token[0] || strspn(ad->token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					       "0123456789-._~+/=") != strlen(ad->token)) {
		snprintf(err, errlen, "admin.bearer_token_file %s: empty, or not a token (RFC 6750 characters only)",
			 path);
		return -EINVAL;
	}
	return 0;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void respond(int fd, int status, const char *ctype, const char *body, size_t len,
		    bool head_only, const char *extra)
{
	char head[512];
	ssize_t n = forward_local_response(head, sizeof(head), status, ctype, NULL, len, false, true,
					   extra);

	if (n < 0)
		return;
	send_all(fd, head, (size_t)n);
	if (!head_only && len)
		send_all(fd, body, len);
}

static bool authorized(const struct admin *ad, const struct http1_request *req)
{
	const struct http1_header *h;

	if (!ad->token[0])
		return true;
	h = http1_find_header(req->headers, req->nheaders, "Authorization");
	if (!h || h->value_len < 7 || !http1_casecmp_eq(h->value, 7, "bearer "))
		return false;
	return admin_token_eq(h->value + 7, h->value_len - 7, ad->token);
}

static bool path_is(const struct http1_request *req, const char *p)
{
	return req->path_len == strlen(p) && !memcmp(req->path, p, req->path_len);
}

static void serve(struct admin *ad, int fd)
{
	static const struct http1_limits lim = { .request_line = 2048, .header_size = ADMIN_HEAD_MAX,
						 .header_count = 64 };
	static const char text[] = "text/plain; charset=utf-8";
	struct http1_request *req = malloc(sizeof(*req));
	char buf[ADMIN_HEAD_MAX];
	size_t len = 0;
	int r = 0;

	if (!req)
		return;
	/* One request per connection: scrapers and probes do not need keep-alive. */
	while (len < sizeof(buf)) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, ADMIN_TIMEOUT_MS) <= 0)
			goto out;
		n = recv(fd, buf + len, sizeof(buf) - len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto out;
		len += (size_t)n;
		r = http1_parse_request(buf, len, &lim, req);
		if (r != 0)
			break;
	}
	if (r <= 0) {
		int status = r < 0 ? -r : 431;
		char body[64];
		int bl = snprintf(body, sizeof(body), "%d %s\n", status, http1_reason(status));

		respond(fd, status, text, body, (size_t)bl, false, NULL);
		goto out;
	}
	bool get = http1_casecmp_eq(req->method, req->method_len, "GET");
	bool head = http1_casecmp_eq(req->method, req->method_len, "HEAD");

	if (!path_is(req, "/metrics") && !path_is(req, "/healthz") && !path_is(req, "/readyz")) {
		respond(fd, 404, text, "404 Not Found\n", 14, head, NULL);
		goto out;
	}
	if (!get && !head) {
		respond(fd, 405, text, "405 Method Not Allowed\n", 23, false, "Allow: GET, HEAD\r\n");
		goto out;
	}
	if (!authorized(ad, req)) {
		respond(fd, 401, text, "401 Unauthorized\n", 17, head,
			"WWW-Authenticate: Bearer realm=\"clawd admin\"\r\n");
		goto out;
	}
	if (path_is(req, "/healthz")) {
		respond(fd, 200, text, "ok\n", 3, head, NULL);
	} else if (path_is(req, "/readyz")) {
		int st = atomic_load(&ad->a->state);

		if (st == AGENT_RUNNING)
			respond(fd, 200, text, "ready\n", 6, head, NULL);
		else
			respond(fd, 503, text, st == AGENT_DRAINING ? "draining\n" : "starting\n",
				st == AGENT_DRAINING ? 9 : 9, head, NULL);
	} else {
		char *body = NULL;
		size_t blen = 0;

		if (metrics_render(ad->a, &body, &blen)) {
			respond(fd, 503, text, "503 out of memory\n", 18, head, NULL);
			goto out;
		}
		respond(fd, 200, "text/plain; version=0.0.4; charset=utf-8", body, blen, head, NULL);
		free(body);
	}
out:
	free(req);
}

static void *admin_main(void *arg)
{
	struct admin *ad = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = ad->fd, .events = POLLIN },
				       { .fd = ad->stop_pipe[0], .events = POLLIN } };
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("admin %s: poll: %s", ad->addr, strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(ad->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		/* Sends block at most this long: a stuck scraper cannot hold the thread. */
		struct timeval tv = { .tv_sec = ADMIN_TIMEOUT_MS / 1000 };

		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		serve(ad, fd);
		close(fd);
	}
	return NULL;
}

int admin_start(struct admin **out, const struct cfg_admin *cfg, struct agent *a, char *err,
		size_t errlen)
{
	struct admin *ad;
	const struct sockaddr *sa = (const struct sockaddr *)&cfg->addr.ss;
	int one = 1, rc;

	*out = NULL;
	if (!cfg->enabled)
		return 0;
	ad = calloc(1, sizeof(*ad));
	if (!ad)
		return -ENOMEM;
	ad->a = a;
	ad->fd = ad->stop_pipe[0] = ad->stop_pipe[1] = -1;
	net_addr_format(sa, ad->addr, sizeof(ad->addr));
	if (cfg->token_file && (rc = read_token(ad, cfg->token_file, err, errlen)))
		goto fail;
	if (pipe2(ad->stop_pipe, O_CLOEXEC) < 0)
		goto fail_errno;
	/* Binary upgrade: the old clawd's socket, already listening (upgrade.h). */
	ad->fd = upgrade_take_admin(&cfg->addr);
	if (ad->fd >= 0)
		goto listening;
	/* Non-blocking: after an upgrade hand-over two processes poll it, and the loser of
	 * an accept race must get EAGAIN rather than block. */
	ad->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ad->fd < 0)
		goto fail_errno;
	setsockopt(ad->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ad->fd, sa, cfg->addr.len) < 0 || listen(ad->fd, 64) < 0)
		goto fail_errno;
listening:
	rc = -pthread_create(&ad->thread, NULL, admin_main, ad);
	if (rc) {
		snprintf(err, errlen, "admin %s: thread: %s", ad->addr, strerror(-rc));
		goto fail;
	}
	ad->running = true;
	log_notice("admin: listening on %s (/metrics, /healthz, /readyz%s)", ad->addr,
		   ad->token[0] ? "; bearer token required" : "");
	*out = ad;
	return 0;
fail_errno:
	rc = -errno;
	snprintf(err, errlen, "admin %s: %s", ad->addr, strerror(errno));
fail:
	admin_stop(ad);
	return rc;
}

int admin_listen_fd(const struct admin *ad)
{
	return ad ? ad->fd : -1;
}

void admin_stop(struct admin *ad)
{
	if (!ad)
		return;
	if (ad->running) {
		char c = 1;

		if (write(ad->stop_pipe[1], &c, 1) != 1)
			log_warn("admin %s: cannot signal stop", ad->addr);
		pthread_join(ad->thread, NULL);
	}
	if (ad->fd >= 0)
		close(ad->fd);
	if (ad->stop_pipe[0] >= 0) {
		close(ad->stop_pipe[0]);
		close(ad->stop_pipe[1]);
	}
	explicit_bzero(ad->token, sizeof(ad->token));
	free(ad);
}
