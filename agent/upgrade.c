/* agent/upgrade.c — zero-downtime binary upgrade: spawn the new clawd, hand it the listening sockets over SCM_RIGHTS, wait for it, step aside. */
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "agent.h"
#include "config.h"
#include "control.h"
#include "log.h"
#include "reload.h"
#include "sdnotify.h"
#include "worker.h"

extern char **environ;

#define OFFER_RECV_MS 5000   /* N: the offer is sent right after the spawn */
#define GO_WAIT_MS 30000     /* N: O answers READY at once; this only bounds a stuck O */
#define DONE_WAIT_MS 5000    /* O: N renames a socket and writes a file before DONE */
#define TERM_WAIT_MS 3000    /* O: a failed N gets this long after SIGTERM before SIGKILL */
#define TAIL_MAX 2048        /* O: the end of N's stderr kept for the failure reason */

/* ---- wire format ---------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return get16(p) | (uint32_t)get16(p + 2) << 16;
}

ssize_t upgrade_encode(const struct upgrade_hdr *h, const struct upgrade_entry *e, void *buf,
		       size_t len)
{
	size_t need = UPGRADE_HDR_SIZE + (size_t)h->count * UPGRADE_ENTRY_SIZE;
	uint8_t *p = buf;

	if (h->count > UPGRADE_MAX_PER_MSG)
		return -EINVAL;
	if (need > len)
		return -ENOSPC;
	memcpy(p, UPGRADE_MAGIC, 4);
	put16(p + 4, h->version);
	put16(p + 6, h->type);
	put32(p + 8, h->count);
	put32(p + 12, h->flags);
	put32(p + 16, h->pid);
	put32(p + 20, h->total);
	p += UPGRADE_HDR_SIZE;
	for (uint32_t i = 0; i < h->count; i++, p += UPGRADE_ENTRY_SIZE) {
		if (e[i].addr.len > UPGRADE_ADDR_MAX)
			return -EINVAL;
		put16(p, e[i].kind);
		put16(p + 2, e[i].worker);
		put16(p + 4, e[i].addr.ss.ss_family);
		put16(p + 6, (uint16_t)e[i].addr.len);
		memset(p + 8, 0, UPGRADE_ADDR_MAX);
		memcpy(p + 8, &e[i].addr.ss, e[i].addr.len);
	}
	return (ssize_t)need;
}

int upgrade_decode(const void *buf, size_t len, struct upgrade_hdr *h, struct upgrade_entry *e,
		   unsigned max)
{
	const uint8_t *p = buf;

	if (len < UPGRADE_HDR_SIZE || memcmp(p, UPGRADE_MAGIC, 4))
		return -EPROTO;
	h->version = get16(p + 4);
	if (h->version != UPGRADE_PROTO_VERSION)
		return -EPROTONOSUPPORT;
	h->type = get16(p + 6);
	h->count = get32(p + 8);
	h->flags = get32(p + 12);
	h->pid = get32(p + 16);
	h->total = get32(p + 20);
	if (h->type < UPGRADE_MSG_OFFER || h->type > UPGRADE_MSG_DONE)
		return -EPROTO;
	if (h->count && h->type != UPGRADE_MSG_OFFER)
		return -EPROTO;
	if (h->count > max || h->count > UPGRADE_MAX_PER_MSG)
		return -EMSGSIZE;
	if (len != UPGRADE_HDR_SIZE + (size_t)h->count * UPGRADE_ENTRY_SIZE)
		return -EPROTO;
	p += UPGRADE_HDR_SIZE;
	for (uint32_t i = 0; i < h->count; i++, p += UPGRADE_ENTRY_SIZE) {
		uint16_t fam = get16(p + 4), alen = get16(p + 6);

		e[i].kind = get16(p);
		e[i].worker = get16(p + 2);
		if (e[i].kind != UPGRADE_KIND_LISTENER && e[i].kind != UPGRADE_KIND_ADMIN)
			return -EPROTO;
		if (!(fam == AF_INET && alen == sizeof(struct sockaddr_in)) &&
		    !(fam == AF_INET6 && alen == sizeof(struct sockaddr_in6)))
			return -EPROTO;
		memset(&e[i].addr, 0, sizeof(e[i].addr));
		memcpy(&e[i].addr.ss, p + 8, alen);
		e[i].addr.len = alen;
		if (e[i].addr.ss.ss_family != fam)
			return -EPROTO;
	}
	return 0;
}

/* ---- plumbing shared by both sides ------------------------------------------------ */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int left_ms(uint64_t deadline)
{
	uint64_t now = now_ms();

	return now >= deadline ? 0 : (int)(deadline - now);
}

static bool same_addr(const struct net_addr *a, const struct net_addr *b)
{
	return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
}

/* Sends one message with fds attached; waits for room until deadline. */
static int msg_send(int fd, const struct upgrade_hdr *h, const struct upgrade_entry *e,
		    const int *fds, unsigned nfds, uint64_t deadline)
{
	uint8_t buf[UPGRADE_MSG_MAX];
	union {
		char b[CMSG_SPACE(sizeof(int) * UPGRADE_MAX_PER_MSG)];
		struct cmsghdr align;
	} ctl;
	ssize_t len = upgrade_encode(h, e, buf, sizeof(buf));
	struct iovec iov;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (len < 0)
		return (int)len;
	iov.iov_base = buf;
	iov.iov_len = (size_t)len;
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		m.msg_control = ctl.b;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };

		if (sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT) == len)
			return 0;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		if (poll(&p, 1, left_ms(deadline)) == 0)
			return -ETIMEDOUT;
	}
}

/*
 * Receives one message; fds (up to max) are returned close-on-exec. -ECONNRESET
 * when the peer is gone, -ETIMEDOUT at the deadline.
 */
static int msg_recv(int fd, struct upgrade_hdr *h, struct upgrade_entry *e, unsigned max, int *fds,
		    unsigned *nfds, uint64_t deadline)
{
	uint8_t buf[UPGRADE_MSG_MAX];
	union {
		char b[CMSG_SPACE(sizeof(int) * UPGRADE_MAX_PER_MSG)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;
	int rc;

	*nfds = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		m.msg_control = ctl.b;
		m.msg_controllen = sizeof(ctl.b);
		n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n >= 0)
			break;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		if (poll(&p, 1, left_ms(deadline)) == 0)
			return -ETIMEDOUT;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			unsigned k = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			for (unsigned i = 0; i < k; i++) {
				int f;

				memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (*nfds < max)
					fds[(*nfds)++] = f;
				else
					close(f);
			}
		}
	if (n == 0)
		return -ECONNRESET;
	rc = upgrade_decode(buf, (size_t)n, h, e, max);
	if (!rc && ((m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || *nfds != h->count))
		rc = -EPROTO;
	if (rc) {
		for (unsigned i = 0; i < *nfds; i++)
			close(fds[i]);
		*nfds = 0;
	}
	return rc;
}

static int send_simple(int fd, uint16_t type, uint64_t deadline)
{
	struct upgrade_hdr h = { .version = UPGRADE_PROTO_VERSION, .type = type,
				 .pid = (uint32_t)getpid() };

	return msg_send(fd, &h, NULL, NULL, 0, deadline);
}

/* ---- every clawd ------------------------------------------------------------------ */

static int g_argc;
static char **g_argv;        /* a copy: getopt may reorder main's */
static char g_exe[PATH_MAX]; /* /proc/self/exe at start: the path, even if the file is replaced */

void upgrade_init(int argc, char **argv)
{
	ssize_t n = readlink("/proc/self/exe", g_exe, sizeof(g_exe) - 1);

	g_exe[n > 0 ? n : 0] = '\0';
	g_argc = argc;
	g_argv = calloc((size_t)argc + 1, sizeof(*g_argv));
	for (int i = 0; g_argv && i < argc; i++)
		g_argv[i] = argv[i];
}

/* Written whole under a temporary name, then renamed: a reader never sees it half done. */
static int pid_file_write(const char *path)
{
	char tmp[PATH_MAX], buf[32];
	int fd, n;

	if (snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (write(fd, buf, (size_t)n) != n || close(fd) < 0 || rename(tmp, path) < 0) {
		int e = errno ? -errno : -EIO;

		unlink(tmp);
		return e;
	}
	return 0;
}

void upgrade_pid_file_release(const char *path)
{
	char buf[32];
	ssize_t n;
	int fd;

	if (!path || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	if (atoi(buf) == (int)getpid())
		unlink(path);
}

/* ---- the new clawd (N) ----------------------------------------------------------- */

static struct {
	bool on;                    /* started by an upgrade, handover not finished */
	int sock;                   /* the protocol socket */
	int stderr_fd;              /* O's stderr, ours once we commit */
	uint32_t from;              /* O's pid */
	unsigned n;                 /* entries received */
	struct upgrade_entry *e;    /* [n] */
	int *fds;                   /* [n]; -1 once taken */
} g_child = { .sock = -1, .stderr_fd = -1 };

bool upgrade_is_child(void)
{
	return g_child.on;
}

static int env_fd(const char *name)
{
	const char *s = getenv(name);
	char *end;
	long v;

	if (!s)
		return -ENOENT;
	v = strtol(s, &end, 10);
	if (*end || v < 0 || v > INT_MAX || fcntl((int)v, F_SETFD, FD_CLOEXEC) < 0)
		return -EBADF;
	return (int)v;
}

static void child_forget(void)
{
	for (unsigned i = 0; i < g_child.n; i++)
		if (g_child.fds[i] >= 0)
			close(g_child.fds[i]);
	free(g_child.e);
	free(g_child.fds);
	g_child.e = NULL;
	g_child.fds = NULL;
	g_child.n = 0;
}

static int recv_offer(char *err, size_t errlen)
{
	uint64_t deadline = now_ms() + OFFER_RECV_MS;
	uint32_t total = 0;

	for (;;) {
		struct upgrade_entry e[UPGRADE_MAX_PER_MSG];
		int fds[UPGRADE_MAX_PER_MSG];
		struct upgrade_hdr h;
		unsigned nfds;
		int rc = msg_recv(g_child.sock, &h, e, UPGRADE_MAX_PER_MSG, fds, &nfds, deadline);

		if (!rc && (h.type != UPGRADE_MSG_OFFER || (g_child.n && h.total != total) ||
			    g_child.n + h.count > h.total))
			rc = -EPROTO;
		if (rc) {
			for (unsigned i = 0; i < nfds; i++)
				close(fds[i]);
			snprintf(err, errlen, "upgrade: receiving the sockets from the running clawd: %s",
				 strerror(-rc));
			return rc;
		}
		total = h.total;
		g_child.from = h.pid;
		if (h.count) {
			struct upgrade_entry *ne = realloc(g_child.e, (g_child.n + h.count) * sizeof(*ne));
			int *nf = ne ? realloc(g_child.fds, (g_child.n + h.count) * sizeof(*nf)) : NULL;

			if (ne)
				g_child.e = ne;
			if (nf)
				g_child.fds = nf;
			if (!ne || !nf) {
				for (unsigned i = 0; i < nfds; i++)
					close(fds[i]);
				snprintf(err, errlen, "upgrade: out of memory");
				return -ENOMEM;
			}
			memcpy(g_child.e + g_child.n, e, h.count * sizeof(*e));
			memcpy(g_child.fds + g_child.n, fds, h.count * sizeof(*fds));
			g_child.n += h.count;
		}
		if (h.flags & UPGRADE_F_LAST)
			return g_child.n == total ? 0 : -EPROTO;
	}
}

int upgrade_child_init(const struct config *cfg, unsigned nworkers, char *err, size_t errlen)
{
	int fd = env_fd(UPGRADE_ENV_FD), efd = env_fd(UPGRADE_ENV_STDERR);
	int rc;

	if (fd == -ENOENT)
		return 0;
	unsetenv(UPGRADE_ENV_FD);
	unsetenv(UPGRADE_ENV_STDERR);
	if (fd < 0 || efd < 0) {
		snprintf(err, errlen, "upgrade: %s or %s does not name an open descriptor",
			 UPGRADE_ENV_FD, UPGRADE_ENV_STDERR);
		return -EBADF;
	}
	g_child.on = true;
	g_child.sock = fd;
	g_child.stderr_fd = efd;
	rc = recv_offer(err, errlen);
	if (rc)
		return rc;
	/*
	 * Each handed-over SO_REUSEPORT socket gets its share of new connections
	 * from the kernel: one nobody polls would queue them until it closes and
	 * then reset them. So every socket of a kept listener needs a worker.
	 */
	for (unsigned i = 0; i < cfg->nlisteners; i++) {
		unsigned have = 0;
		char addr[NET_ADDR_STRLEN];

		for (unsigned k = 0; k < g_child.n; k++)
			have += g_child.e[k].kind == UPGRADE_KIND_LISTENER &&
				same_addr(&g_child.e[k].addr, &cfg->listeners[i].addr);
		if (have > nworkers) {
			snprintf(err, errlen,
				 "upgrade: listener %s %s has %u sockets (one per old worker), the new config "
				 "%u workers: keep workers >= %u or restart",
				 cfg->listeners[i].name,
				 net_addr_format((const struct sockaddr *)&cfg->listeners[i].addr.ss, addr,
						 sizeof(addr)),
				 have, nworkers, have);
			return -EXDEV;
		}
	}
	log_notice("upgrade: received %u sockets from clawd pid %u", g_child.n, g_child.from);
	return 0;
}

static int take(uint16_t kind, const struct net_addr *addr)
{
	for (unsigned i = 0; i < g_child.n; i++)
		if (g_child.fds[i] >= 0 && g_child.e[i].kind == kind &&
		    same_addr(&g_child.e[i].addr, addr)) {
			int fd = g_child.fds[i];

			g_child.fds[i] = -1;
			return fd;
		}
	return -ENOENT;
}

int upgrade_take_listener(const struct cfg_listener *l, unsigned worker)
{
	int fd;

	(void)worker; /* sockets of one address are interchangeable (SO_REUSEPORT group) */
	if (!g_child.on || (fd = take(UPGRADE_KIND_LISTENER, &l->addr)) < 0)
		return -ENOENT;
	/* A listening socket takes a new backlog from listen(2) again. */
	if (listen(fd, (int)l->backlog) < 0)
		log_warn("upgrade: listener %s: backlog %u: %s", l->name, l->backlog, strerror(errno));
	return fd;
}

int upgrade_take_admin(const struct net_addr *addr)
{
	return g_child.on ? take(UPGRADE_KIND_ADMIN, addr) : -ENOENT;
}

const char *upgrade_control_path(const char *path, char *buf, size_t len)
{
	if (!g_child.on || !path)
		return path;
	snprintf(buf, len, "%s%s", path, UPGRADE_CTL_SUFFIX);
	return buf;
}

int upgrade_child_ready(struct control *ctl, const char *ctl_path, const char *pid_file, char *err,
			size_t errlen)
{
	struct upgrade_hdr h;
	struct upgrade_entry e[1];
	unsigned unused = 0, nfds;
	int fds[1], rc;

	if (!g_child.on)
		return 0;
	for (unsigned i = 0; i < g_child.n; i++)
		unused += g_child.fds[i] >= 0;
	/* Sockets the new configuration has no listener for: the old process closes its copies too. */
	child_forget();
	if (unused)
		log_notice("upgrade: %u inherited sockets not in the new configuration closed", unused);
	rc = send_simple(g_child.sock, UPGRADE_MSG_READY, now_ms() + GO_WAIT_MS);
	if (!rc)
		rc = msg_recv(g_child.sock, &h, e, 0, fds, &nfds, now_ms() + GO_WAIT_MS);
	if (!rc && h.type != UPGRADE_MSG_GO)
		rc = h.type == UPGRADE_MSG_ABORT ? -ECANCELED : -EPROTO;
	if (rc) {
		snprintf(err, errlen, "upgrade: the running clawd (pid %u) called the upgrade off: %s",
			 g_child.from, rc == -ECANCELED ? "aborted" : strerror(-rc));
		close(g_child.sock);
		g_child.sock = -1;
		g_child.on = false;
		return rc;
	}
	/* Committed: from here on this process is clawd, whatever fails is only logged. */
	if (ctl && ctl_path && (rc = control_rename(ctl, ctl_path)))
		log_err("upgrade: control socket %s: %s; clawctl must use %s%s", ctl_path, strerror(-rc),
			ctl_path, UPGRADE_CTL_SUFFIX);
	if (pid_file && (rc = pid_file_write(pid_file)))
		log_warn("pid_file %s: %s", pid_file, strerror(-rc));
	/* Before DONE, so before the old process can exit: systemd follows us, not it. */
	sdnotify_mainpid(getpid());
	/* Our log goes where the old process's went; the pipe it read closes here. */
	if (dup2(g_child.stderr_fd, STDERR_FILENO) < 0)
		log_warn("upgrade: restoring stderr: %s", strerror(errno));
	close(g_child.stderr_fd);
	g_child.stderr_fd = -1;
	if ((rc = send_simple(g_child.sock, UPGRADE_MSG_DONE, now_ms() + DONE_WAIT_MS)))
		log_warn("upgrade: telling the old clawd we are done: %s", strerror(-rc));
	close(g_child.sock);
	g_child.sock = -1;
	g_child.on = false;
	log_notice("upgrade: took over from clawd pid %u", g_child.from);
	return 0;
}

/* ---- the running clawd (O) --------------------------------------------------------- */

struct upgrader {
	struct agent *a;
	struct reloader *r;       /* held during a handover: the listener set stays put */
	struct admin *admin;      /* its socket is handed over too; NULL when off */
	pthread_mutex_t lock;     /* one upgrade at a time (SIGUSR2 and the control socket) */
	_Atomic bool done;        /* handed over: main drains and exits */
	_Atomic pid_t new_pid;
	unsigned sockets;         /* handed over by the last success */
};

/* What one upgrade attempt tracks. */
struct attempt {
	pid_t pid;
	int sock;                  /* our end of the protocol socket */
	int err_rd;                /* N's stderr until it commits */
	bool exited;
	int status;                /* waitpid status once exited */
	char tail[TAIL_MAX + 1];   /* the end of what N wrote */
	size_t tail_len;
};

int upgrade_create(struct upgrader **out, struct agent *a, struct reloader *r, struct admin *admin)
{
	struct upgrader *u = calloc(1, sizeof(*u));

	if (!u)
		return -ENOMEM;
	u->a = a;
	u->r = r;
	u->admin = admin;
	pthread_mutex_init(&u->lock, NULL);
	*out = u;
	return 0;
}

void upgrade_free(struct upgrader *u)
{
	if (!u)
		return;
	pthread_mutex_destroy(&u->lock);
	free(u);
}

bool upgrade_handed_over(const struct upgrader *u)
{
	return u && atomic_load(&u->done);
}

pid_t upgrade_new_pid(const struct upgrader *u)
{
	return u ? atomic_load(&u->new_pid) : 0;
}

/* Forwards what N wrote to our stderr (the same place its log goes after) and keeps the end. */
static void pump(struct attempt *t)
{
	char buf[4096];
	ssize_t n;

	while (t->err_rd >= 0 && (n = read(t->err_rd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				break;
			return;
		}
		if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
			/* nowhere to say it */
		}
		if ((size_t)n >= TAIL_MAX) {
			memcpy(t->tail, buf + n - TAIL_MAX, TAIL_MAX);
			t->tail_len = TAIL_MAX;
		} else {
			size_t keep = t->tail_len + (size_t)n > TAIL_MAX ? TAIL_MAX - (size_t)n : t->tail_len;

			memmove(t->tail, t->tail + t->tail_len - keep, keep);
			memcpy(t->tail + keep, buf, (size_t)n);
			t->tail_len = keep + (size_t)n;
		}
		t->tail[t->tail_len] = '\0';
	}
	close(t->err_rd);
	t->err_rd = -1;
}

static bool reap(struct attempt *t)
{
	if (!t->exited && waitpid(t->pid, &t->status, WNOHANG) == t->pid)
		t->exited = true;
	return t->exited;
}

/* Waits for a message from N until deadline, forwarding its stderr and watching it exit. */
static int wait_msg(struct attempt *t, struct upgrade_hdr *h, uint64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = t->sock, .events = POLLIN },
				       { .fd = t->err_rd, .events = POLLIN } };
		struct upgrade_entry e[1];
		int fds[1], rc;
		unsigned nfds;

		if (poll(p, 2, left_ms(deadline) < 100 ? left_ms(deadline) : 100) < 0 && errno != EINTR)
			return -errno;
		if (p[1].revents)
			pump(t);
		if (p[0].revents) {
			rc = msg_recv(t->sock, h, e, 0, fds, &nfds, now_ms());
			if (rc != -ETIMEDOUT)
				return rc;
		}
		if (reap(t))
			return -ECHILD;
		if (!left_ms(deadline))
			return -ETIMEDOUT;
	}
}

/* The last line N wrote, without the log's time stamp: the reason, most of the time. */
static const char *last_line(struct attempt *t)
{
	char *s = t->tail, *end = s + t->tail_len, *p, *c;

	while (end > s && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
		end--;
	*end = '\0';
	p = end;
	while (p > s && p[-1] != '\n')
		p--;
	/* "2024-01-01T00:00:00.000Z clawd error: reason" -> "error: reason" */
	if ((c = strstr(p, "Z clawd ")) && c - p < 32)
		p = c + 8;
	return p;
}

static void describe_exit(struct attempt *t, const char *path, const char *when, char *msg,
			  size_t msglen)
{
	const char *line = last_line(t);
	char how[64];

	if (WIFSIGNALED(t->status))
		snprintf(how, sizeof(how), "was killed by signal %d", WTERMSIG(t->status));
	else
		snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(t->status));
	snprintf(msg, msglen, "upgrade: new clawd %s (pid %d) %s %s%s%s", path, (int)t->pid, how, when,
		 *line ? ": " : " (no output)", line);
	/* The whole of it is in our log; the control reply may only have room for the start. */
	log_err("upgrade: pid %d: last output: %s", (int)t->pid, *line ? line : "(none)");
}

/* The upgrade is off: N is told, then stopped; whatever it wrote is forwarded. */
static void abort_child(struct attempt *t)
{
	uint64_t deadline;

	if (t->sock >= 0)
		send_simple(t->sock, UPGRADE_MSG_ABORT, now_ms());
	if (!reap(t))
		kill(t->pid, SIGTERM);
	deadline = now_ms() + TERM_WAIT_MS;
	while (!reap(t) && left_ms(deadline)) {
		struct pollfd p = { .fd = t->err_rd, .events = POLLIN };

		poll(&p, 1, 50);
		if (p.revents)
			pump(t);
	}
	if (!t->exited) {
		kill(t->pid, SIGKILL);
		if (waitpid(t->pid, &t->status, 0) == t->pid)
			t->exited = true;
	}
	pump(t);
}

/* Every listening socket the workers poll, with its configured address, and the admin one. */
static int collect(struct upgrader *u, struct upgrade_entry **pe, int **pf, unsigned *pn, char *msg,
		   size_t msglen)
{
	struct worker_set *ws = u->a->workers;
	unsigned cap = 1, n = 0;
	struct upgrade_entry *e;
	int *f;

	for (unsigned i = 0; i < ws->n; i++) {
		if (atomic_load(&ws->workers[i].publish)) {
			snprintf(msg, msglen, "upgrade: worker %u is still applying a reload; try again", i);
			return -EAGAIN;
		}
		cap += ws->workers[i].cur->snap->cfg->nlisteners;
	}
	e = calloc(cap, sizeof(*e));
	f = calloc(cap, sizeof(*f));
	if (!e || !f) {
		free(e);
		free(f);
		snprintf(msg, msglen, "upgrade: out of memory");
		return -ENOMEM;
	}
	/* Reading another thread's listeners is safe here: reloads are held and none is pending. */
	for (unsigned i = 0; i < ws->n; i++) {
		struct worker *w = &ws->workers[i];
		const struct config *cfg = w->cur->snap->cfg;

		for (unsigned k = 0; k < cfg->nlisteners; k++) {
			if (!w->listeners[k] || w->listeners[k]->fd < 0)
				continue;
			e[n] = (struct upgrade_entry){ .kind = UPGRADE_KIND_LISTENER, .worker = (uint16_t)w->id,
						       .addr = cfg->listeners[k].addr };
			f[n++] = w->listeners[k]->fd;
		}
	}
	if (u->admin && admin_listen_fd(u->admin) >= 0) {
		int fd = admin_listen_fd(u->admin);

		/*
		 * Both processes poll it until we stop ours: whichever loses the race for a
		 * connection must get EAGAIN from accept, not block in it.
		 */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		e[n] = (struct upgrade_entry){ .kind = UPGRADE_KIND_ADMIN,
					       .addr = u->a->snap->cfg->admin.addr };
		f[n++] = fd;
	}
	*pe = e;
	*pf = f;
	*pn = n;
	return 0;
}

/* environ without our own variables, plus the two that tell N where its descriptors are. */
static char **child_env(void)
{
	static char fd_var[] = UPGRADE_ENV_FD "=3", err_var[] = UPGRADE_ENV_STDERR "=4";
	size_t n = 0, k = 0;
	char **env;

	while (environ[n])
		n++;
	env = calloc(n + 3, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], UPGRADE_ENV_FD "=", strlen(UPGRADE_ENV_FD) + 1) &&
		    strncmp(environ[i], UPGRADE_ENV_STDERR "=", strlen(UPGRADE_ENV_STDERR) + 1))
			env[k++] = environ[i];
	env[k++] = fd_var;
	env[k++] = err_var;
	return env;
}

static int spawn(struct attempt *t, const char *path, char *msg, size_t msglen)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	int sv[2] = { -1, -1 }, ep[2] = { -1, -1 }, cs = -1, ce = -1, cerr = -1, rc;
	char **env = NULL;
	sigset_t none;

	_Static_assert(UPGRADE_CHILD_FD == 3 && UPGRADE_CHILD_STDERR_FD == 4, "child_env's numbers");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
		rc = errno;
		goto out;
	}
	/* Above the numbers dup2 writes to, so that no action overwrites the source of another. */
	cs = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
	ce = fcntl(ep[1], F_DUPFD_CLOEXEC, 10);
	cerr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 10);
	env = child_env();
	if (cs < 0 || ce < 0 || cerr < 0 || !env || !g_argv) {
		rc = env && g_argv ? errno : ENOMEM;
		goto out;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, cs, UPGRADE_CHILD_FD);
	posix_spawn_file_actions_adddup2(&fa, cerr, UPGRADE_CHILD_STDERR_FD);
	posix_spawn_file_actions_adddup2(&fa, ce, STDERR_FILENO);
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	/* Our threads block the signals main waits for; the new process starts with none blocked. */
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
	rc = posix_spawn(&t->pid, path, &fa, &at, g_argv, env);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
out:
	if (rc) {
		snprintf(msg, msglen, "upgrade: cannot start %s: %s", path, strerror(rc));
		if (sv[0] >= 0)
			close(sv[0]);
		if (ep[0] >= 0)
			close(ep[0]);
	} else {
		t->sock = sv[0];
		t->err_rd = ep[0];
		fcntl(t->err_rd, F_SETFL, O_NONBLOCK);
	}
	{
		int ends[] = { sv[1], ep[1], cs, ce, cerr }; /* the child's copies */

		for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
			if (ends[i] >= 0)
				close(ends[i]);
	}
	free(env);
	return -rc;
}

static int send_offer(struct attempt *t, const struct upgrade_entry *e, const int *f, unsigned n,
		      uint64_t deadline)
{
	unsigned off = 0;

	do {
		unsigned k = n - off < UPGRADE_MAX_PER_MSG ? n - off : UPGRADE_MAX_PER_MSG;
		struct upgrade_hdr h = { .version = UPGRADE_PROTO_VERSION, .type = UPGRADE_MSG_OFFER,
					 .count = k, .pid = (uint32_t)getpid(), .total = n,
					 .flags = off + k == n ? UPGRADE_F_LAST : 0 };
		int rc = msg_send(t->sock, &h, e + off, f + off, k, deadline);

		if (rc)
			return rc;
		off += k;
	} while (off < n);
	return 0;
}

static int handover(struct upgrader *u, const char *path, uint64_t timeout_ms,
		    const struct upgrade_entry *e, const int *f, unsigned n, char *msg, size_t msglen)
{
	struct attempt *t = calloc(1, sizeof(*t));
	uint64_t deadline = now_ms() + timeout_ms;
	struct upgrade_hdr h;
	int rc;

	if (!t) {
		snprintf(msg, msglen, "upgrade: out of memory");
		return -ENOMEM;
	}
	t->sock = t->err_rd = -1;
	if ((rc = spawn(t, path, msg, msglen))) {
		free(t);
		return rc;
	}
	log_notice("upgrade: started %s (pid %d); handing over %u listening sockets", path, (int)t->pid, n);
	rc = send_offer(t, e, f, n, deadline);
	if (!rc)
		rc = wait_msg(t, &h, deadline);
	if (!rc && h.type != UPGRADE_MSG_READY)
		rc = -EPROTO;
	if (rc) {
		bool late = rc == -ETIMEDOUT;

		abort_child(t);
		if (late)
			snprintf(msg, msglen, "upgrade: new clawd %s (pid %d) was not ready within %llu ms and "
				 "was stopped%s%s", path, (int)t->pid, (unsigned long long)timeout_ms,
				 *last_line(t) ? ": " : "", last_line(t));
		else
			describe_exit(t, path, rc == -ECHILD || rc == -ECONNRESET || rc == -EPIPE
					       ? "before ready" : "after a protocol error", msg, msglen);
		goto out;
	}
	/* The commit point: from GO on, the new process owns the service. */
	rc = send_simple(t->sock, UPGRADE_MSG_GO, now_ms() + DONE_WAIT_MS);
	if (!rc)
		rc = wait_msg(t, &h, now_ms() + DONE_WAIT_MS);
	if (!rc && h.type != UPGRADE_MSG_DONE)
		rc = -EPROTO;
	if (rc) {
		abort_child(t);
		describe_exit(t, path, "after it was ready, before it confirmed the takeover", msg, msglen);
		goto out;
	}
	/* N gave stderr back: the pipe ends; whatever is still in it comes through. */
	{
		uint64_t d = now_ms() + 500;

		while (t->err_rd >= 0 && left_ms(d)) {
			struct pollfd p = { .fd = t->err_rd, .events = POLLIN };

			if (poll(&p, 1, left_ms(d)) > 0)
				pump(t);
		}
	}
	u->sockets = n;
	atomic_store(&u->new_pid, t->pid);
	atomic_store(&u->done, true);
	snprintf(msg, msglen, "upgraded: clawd pid %d (%s) took over %u listening sockets from pid %d, "
		 "which stops accepting, drains and exits", (int)t->pid, path, n, (int)getpid());
out:
	if (t->err_rd >= 0)
		close(t->err_rd);
	if (t->sock >= 0)
		close(t->sock);
	free(t);
	return rc;
}

int upgrade_run(struct upgrader *u, const char *binary, uint64_t timeout_ms, char *msg,
		size_t msglen)
{
	const char *path = binary ? binary : g_exe;
	struct upgrade_entry *e = NULL;
	int *f = NULL, rc;
	unsigned n = 0;

	if (pthread_mutex_trylock(&u->lock)) {
		snprintf(msg, msglen, "upgrade: another upgrade is in progress");
		return -EBUSY;
	}
	if (atomic_load(&u->done)) {
		snprintf(msg, msglen, "upgrade: already handed over to pid %d; this process is draining",
			 (int)atomic_load(&u->new_pid));
		rc = -EALREADY;
		goto out;
	}
	if (atomic_load(&u->a->state) != AGENT_RUNNING) {
		snprintf(msg, msglen, "upgrade: clawd is not running (starting or draining)");
		rc = -EAGAIN;
		goto out;
	}
	if (!path[0]) {
		snprintf(msg, msglen, "upgrade: the path clawd was started from is unknown; give --binary");
		rc = -ENOENT;
		goto out;
	}
	if (access(path, X_OK) < 0) {
		rc = -errno;
		snprintf(msg, msglen, "upgrade: %s: %s", path, strerror(errno));
		goto out;
	}
	if (u->r)
		reload_hold(u->r);
	rc = collect(u, &e, &f, &n, msg, msglen);
	if (!rc)
		rc = handover(u, path, timeout_ms, e, f, n, msg, msglen);
	if (u->r)
		reload_release(u->r);
	/* The descriptors stay the workers': they close them when they stop accepting. */
	free(e);
	free(f);
out:
	pthread_mutex_unlock(&u->lock);
	if (rc)
		log_err("%s; this process keeps serving", msg);
	else
		log_notice("%s", msg);
	return rc;
}

static int cmd_upgrade(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		       size_t errlen)
{
	struct upgrader *u = ctx;
	const char *bin = jsonr_get_str(req->j, req->args, "binary");
	int64_t t = jsonr_get_int(req->j, req->args, "timeout_ms", UPGRADE_DEFAULT_TIMEOUT_MS);
	char msg[1024];
	int rc;

	if (t <= 0 || t > UPGRADE_MAX_TIMEOUT_MS) {
		snprintf(err, errlen, "upgrade: timeout_ms must be 1..%d", UPGRADE_MAX_TIMEOUT_MS);
		return -EINVAL;
	}
	if (bin && bin[0] != '/') {
		snprintf(err, errlen, "upgrade: binary must be an absolute path");
		return -EINVAL;
	}
	/* Running a program of one's choice as clawd's user is for root and that user only. */
	if (bin && req->uid != 0 && req->uid != geteuid()) {
		snprintf(err, errlen, "upgrade: --binary needs root or clawd's own user; control group "
			 "members may upgrade to the installed binary only");
		return -EPERM;
	}
	rc = upgrade_run(u, bin, (uint64_t)t, msg, sizeof(msg));
	if (rc) {
		snprintf(err, errlen, "%s", msg);
		return rc;
	}
	jsonw_str(w, "message", msg);
	jsonw_i64(w, "old_pid", getpid());
	jsonw_i64(w, "new_pid", atomic_load(&u->new_pid));
	jsonw_str(w, "binary", bin ? bin : g_exe);
	jsonw_u64(w, "sockets", u->sockets);
	return 0;
}

int upgrade_register_commands(struct upgrader *u, struct control *c)
{
	return control_register(c, "upgrade", cmd_upgrade, u);
}
