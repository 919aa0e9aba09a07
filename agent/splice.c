/* agent/splice.c — sockmap splice: the program's lifetime, hand-off of connections into the SOCKHASH, FIN/RST propagation, the paused relay, accounting. */
#include "splice.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "control.h"
#include "lb.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "openclaw/splice.h"
#include "sk_splice.skel.h"
#include "sni_peek.h"
#include "sni_route.h"
#include "worker.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

#define RELAY_BUF (64 * 1024)   /* userspace relay buffer per direction */
#define FAST_MS 2               /* re-check period while a direction drains or relays */
#define SLOW_MS 50              /* re-check period otherwise (pauses, idle timeout), on a shared grid */
#define IDLE_MAX_MS 400         /* longest re-check period, for a connection where nothing moves */
/* include/net/tcp_states.h (netinet/tcp.h would clash with linux/tcp.h) */
#define SPLICE_TCP_ESTABLISHED 1

/* SIO_PEEK and SIO_PEEK_TIMER: tcp mode, waiting for the ClientHello (side 0 only). */
enum sio_kind { SIO_POLL, SIO_SEND, SIO_RECV, SIO_TIMER, SIO_CONNECT, SIO_PEEK, SIO_PEEK_TIMER, SIO_N };

struct splice_conn;

/* One io_uring operation slot; its address is the user_data (16-byte aligned). */
struct splice_io {
	struct splice_conn *c;
	uint8_t kind;  /* enum sio_kind */
	uint8_t side;  /* 0 client, 1 backend */
} __attribute__((aligned(16)));

/* Bytes read on side i and written to side !i. */
struct splice_dir {
	bool eof;          /* side i sent its FIN */
	bool shut;         /* we shut the write side of !i */
	bool send_busy;    /* a relay send to !i is in flight */
	bool recv_busy;    /* a relay recv on i is in flight (userspace mode) */
	char *buf;         /* relay buffer, allocated on first use */
	uint32_t len, off; /* bytes in buf / already sent */
	uint64_t user;     /* bytes clawd relayed in this direction after the hand-off */
	uint64_t w0;       /* bytes written to !i before the hand-off (TCP_INFO + SIOCOUTQ) */
};

struct splice_conn {
	struct splice_io io[2][SIO_N];
	struct worker *w;
	struct wgen *gen;     /* the configuration it was accepted or handed off with (a reference) */
	int fd[2];
	uint64_t cookie[2];
	bool in_map[2];
	bool kernel;          /* relayed by the program; false = userspace relay */
	bool connected;
	bool closing;
	bool poll_armed[2];
	bool rdhup_seen[2];
	bool timer_armed;
	bool lb_begun;
	int pending;
	struct splice_dir d[2];
	uint64_t start_ns, start_real_ns, last_ms, last_total;
	unsigned period_ms;   /* next re-check period when nothing is busy: SLOW_MS, doubled while idle */
	unsigned listener;
	int route, pool, server;
	uint64_t first_in, first_out;
	struct sockaddr_storage peer;
	socklen_t peer_len;   /* tcp mode: getpeername's length (the LB hash covers it) */
	char peer_s[NET_ADDR_STRLEN + 8];
	struct __kernel_timespec ts;
	const char *error;
	bool tcp;             /* accepted on a pure L4 listener (access log method TCP) */
	bool peeking;         /* tcp mode with SNI routes: waiting for the ClientHello */
	bool peek_timer;      /* the peek's deadline (SIO_PEEK_TIMER) is armed */
	uint32_t peek_len;    /* bytes the last peek saw */
	uint8_t *peek_buf;    /* SNI_PEEK_MAX bytes, while peeking */
	struct __kernel_timespec peek_ts;
	char sni[SNI_HOST_MAX + 1]; /* the server name the client asked for, "" = none (yet) */
	struct dlist node;    /* in sp->conns (control's view), when listed */
	struct dlist wnode;   /* in its worker's list, for drain */
} __attribute__((aligned(16)));

#define SPLICE_MAX_WORKERS 1024

/* Each worker's connections; only that worker touches its list (no lock). */
static struct dlist g_wlists[SPLICE_MAX_WORKERS];

struct splice {
	struct sk_splice *skel;
	int hash_fd, conns_fd, delivered_fd, stats_fd, prog_fd;
	bool attached;
	struct cfg_splice cfg;
	pthread_mutex_t lock;  /* conns list: workers add/remove, the control thread reads */
	struct dlist conns;
	unsigned nconns;
	_Atomic uint64_t spliced, fallbacks, insert_fails, refused, closed, resets, idle_closed;
	_Atomic uint64_t relayed_bytes, bytes_c2b, bytes_b2c;
	_Atomic uint64_t duration_ms;  /* summed lifetime of closed spliced connections */
};

static struct splice *g_sp;            /* the loaded program, or NULL */
static _Atomic int g_mode = -1;        /* enum cfg_splice_enabled of the running config */
static _Atomic bool g_warned;          /* the fallback was logged */
static _Atomic uint64_t g_fallbacks;   /* connections relayed in userspace because splice was unavailable */
static char g_why[512];                /* why the program is not loaded */

/* The snapshot a connection runs with (its own, held until it is freed). */
static struct snapshot *conn_snap(const struct splice_conn *c)
{
	return c->gen->snap;
}

static uint64_t now_realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int splice_wanted(const struct config *cfg, int route)
{
	return route >= 0 && cfg->routes[route].mode == CFG_MODE_SPLICE;
}

static void fallback_once(const char *why)
{
	atomic_fetch_add(&g_fallbacks, 1);
	if (!atomic_exchange(&g_warned, true))
		log_warn("splice: relaying in userspace instead (%s); counted in splice.stats fallbacks, said once",
			 why);
}

/* ---- program lifetime ------------------------------------------------------------- */

static int prepare_dir(const char *dir, char *err, size_t errlen)
{
	char tmp[256];
	struct statfs fs;

	snprintf(tmp, sizeof(tmp), "%s", dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) && errno != EEXIST) {
			snprintf(err, errlen, "splice: pin_dir %s: %s", tmp, strerror(errno));
			return -errno;
		}
		*p = '/';
	}
	if (mkdir(tmp, 0700) && errno != EEXIST) {
		snprintf(err, errlen, "splice: pin_dir %s: %s", tmp, strerror(errno));
		return -errno;
	}
	if (statfs(dir, &fs) || fs.f_type != BPF_FS_MAGIC) {
		snprintf(err, errlen, "splice: pin_dir %s is not on a bpf file system", dir);
		return -ENOTSUP;
	}
	return 0;
}

/* Verifier log kept for a failed load: its last lines name the reason. */
#define SPLICE_VLOG_SIZE (1u << 20)

/*
 * The verifier's own reason in log: its last line that is not one of the
 * statistics it prints at the end; "" when there is none (the failure came
 * before the verifier, e.g. CO-RE without kernel BTF).
 */
static void verifier_reason(char *log, char *out, size_t outlen)
{
	char *end = log ? log + strlen(log) : NULL;

	out[0] = '\0';
	while (end && end > log) {
		char *line = end;
		size_t n;

		while (line > log && line[-1] != '\n')
			line--;
		n = (size_t)(end - line);
		while (n && (line[n - 1] == '\n' || line[n - 1] == ' '))
			n--;
		end = line > log ? line - 1 : log;
		if (!n || !strncmp(line, "processed ", 10) || !strncmp(line, "verification time", 17) ||
		    !strncmp(line, "stack depth", 11) || !strncmp(line, "-- END PROG LOAD LOG --", 23))
			continue;
		snprintf(out, outlen, "%.*s", (int)(n < 200 ? n : 200), line);
		return;
	}
}

/*
 * err for a program that did not load, saying what the kernel must offer:
 * the program reads kernel memory with bpf_probe_read_kernel() and TCP
 * state through BTF (docs/splice.md, "Retransmissions and the verdict").
 */
static void load_failure(int rc, char *vlog, char *err, size_t errlen)
{
	char why[208];

	verifier_reason(vlog, why, sizeof(why));
	if (why[0]) {
		/* libbpf prints the log only into a buffer of its own: its tail, for whoever debugs. */
		const char *tail = vlog + strlen(vlog);

		for (int lines = 0; tail > vlog && lines <= 30; tail--)
			lines += tail[-1] == '\n';
		tail += *tail == '\n';
		log_warn("splice: verifier log of splice_verdict, last lines:\n%s", tail);
	}
	if (rc == -EPERM || rc == -EACCES)
		snprintf(err, errlen,
			 "splice: the kernel refused the verdict program (%s%s%s): loading it needs CAP_BPF, "
			 "CAP_NET_ADMIN and CAP_PERFMON (or root)",
			 strerror(-rc), why[0] ? ": " : "", why);
	else if (why[0])
		snprintf(err, errlen,
			 "splice: the kernel's verifier refused the verdict program (%s: %s): it needs Linux 6.1 "
			 "or later with BTF, and bpf_probe_read_kernel (refused under lockdown=confidentiality)",
			 strerror(-rc), why);
	else
		snprintf(err, errlen,
			 "splice: loading the verdict program: %s (it needs Linux 6.1 or later with BTF in "
			 "/sys/kernel/btf/vmlinux; libbpf said why above)",
			 strerror(-rc));
}

static int load(struct splice *sp, char *err, size_t errlen)
{
	struct bpf_map *m;
	char path[320], *vlog;
	int rc;

	if ((rc = prepare_dir(sp->cfg.pin_dir, err, errlen)))
		return rc;
	sp->skel = sk_splice__open();
	if (!sp->skel) {
		rc = -errno;
		snprintf(err, errlen, "splice: opening the program: %s", strerror(-rc));
		return rc;
	}
	bpf_map__set_max_entries(sp->skel->maps.splice_socks, sp->cfg.max_connections * 2);
	bpf_map__set_max_entries(sp->skel->maps.splice_conns, sp->cfg.max_connections * 2);
	bpf_map__set_max_entries(sp->skel->maps.splice_delivered, sp->cfg.max_connections * 2);
	bpf_object__for_each_map(m, sp->skel->obj) {
		if (!strcmp(bpf_map__name(m), ".bss") || strchr(bpf_map__name(m), '.'))
			continue;
		snprintf(path, sizeof(path), "%s/%s", sp->cfg.pin_dir, bpf_map__name(m));
		/* Connections do not survive clawd: stale pins of an earlier run go. */
		unlink(path);
		bpf_map__set_pin_path(m, path);
	}
	/* libbpf fills it (retrying at log level 1) only when the load fails. */
	vlog = calloc(1, SPLICE_VLOG_SIZE);
	if (vlog)
		bpf_program__set_log_buf(sp->skel->progs.splice_verdict, vlog, SPLICE_VLOG_SIZE);
	rc = sk_splice__load(sp->skel);
	if (rc) {
		load_failure(rc, vlog, err, errlen);
		free(vlog);
		return rc;
	}
	bpf_program__set_log_buf(sp->skel->progs.splice_verdict, NULL, 0);
	free(vlog);
	sp->hash_fd = bpf_map__fd(sp->skel->maps.splice_socks);
	sp->conns_fd = bpf_map__fd(sp->skel->maps.splice_conns);
	sp->delivered_fd = bpf_map__fd(sp->skel->maps.splice_delivered);
	sp->stats_fd = bpf_map__fd(sp->skel->maps.splice_stats);
	sp->prog_fd = bpf_program__fd(sp->skel->progs.splice_verdict);
	if (bpf_prog_attach(sp->prog_fd, sp->hash_fd, BPF_SK_SKB_STREAM_VERDICT, 0)) {
		rc = -errno;
		snprintf(err, errlen, "splice: attaching the verdict program to the SOCKHASH: %s",
			 strerror(-rc));
		return rc;
	}
	sp->attached = true;
	return 0;
}

/* Whether m's pin path still holds m: after a binary upgrade it holds the new clawd's map. */
static bool pin_is_ours(const struct bpf_map *m)
{
	struct bpf_map_info a = { 0 }, b = { 0 };
	__u32 la = sizeof(a), lb = sizeof(b);
	const char *path = bpf_map__pin_path(m);
	int fd = path ? bpf_obj_get(path) : -1;
	bool ours;

	if (fd < 0)
		return false;
	ours = !bpf_obj_get_info_by_fd(bpf_map__fd(m), &a, &la) && !bpf_obj_get_info_by_fd(fd, &b, &lb) &&
	       a.id == b.id;
	close(fd);
	return ours;
}

static void destroy(struct splice *sp)
{
	if (!sp)
		return;
	if (sp->attached)
		bpf_prog_detach2(sp->prog_fd, sp->hash_fd, BPF_SK_SKB_STREAM_VERDICT);
	if (sp->skel) {
		struct bpf_map *m;

		/* Nothing outlives clawd here (connections close with it): leave no pins. */
		bpf_object__for_each_map(m, sp->skel->obj)
			if (bpf_map__is_pinned(m) && pin_is_ours(m))
				bpf_map__unpin(m, NULL);
		sk_splice__destroy(sp->skel);
	}
	pthread_mutex_destroy(&sp->lock);
	free(sp);
}

int splice_start(const struct config *cfg, char *err, size_t errlen)
{
	bool used = false;
	struct splice *sp;
	int rc;

	atomic_store(&g_mode, (int)cfg->splice.enabled);
	for (unsigned i = 0; i < cfg->nroutes; i++)
		used |= cfg->routes[i].mode != CFG_MODE_HTTP;
	if (!used)
		return 0;
	if (cfg->splice.enabled == CFG_SPLICE_OFF) {
		snprintf(g_why, sizeof(g_why), "splice.enabled is off");
		return 0;
	}
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	sp->cfg = cfg->splice;
	pthread_mutex_init(&sp->lock, NULL);
	dlist_init(&sp->conns);
	rc = load(sp, err, errlen);
	if (rc) {
		snprintf(g_why, sizeof(g_why), "%s", err);
		destroy(sp);
		if (cfg->splice.enabled == CFG_SPLICE_REQUIRED)
			return rc;
		log_warn("%s; splice and tcp routes are relayed in userspace", err);
		err[0] = '\0';
		return 0;
	}
	log_notice("splice: verdict program attached, maps pinned in %s, budget %" PRIu64
		   " bytes per direction", sp->cfg.pin_dir, sp->cfg.budget);
	__atomic_store_n(&g_sp, sp, __ATOMIC_RELEASE);
	return 0;
}

void splice_stop(void)
{
	struct splice *sp = __atomic_exchange_n(&g_sp, NULL, __ATOMIC_ACQ_REL);
	unsigned n;

	if (!sp)
		return;
	pthread_mutex_lock(&sp->lock);
	n = sp->nconns;
	pthread_mutex_unlock(&sp->lock);
	if (n) {
		/* Detaching now would strand live connections: the program stays with the
		 * pinned map until the last socket closes with the process. */
		log_notice("splice: %u connections still spliced; program left attached", n);
		return;
	}
	destroy(sp);
}

/* ---- per-connection plumbing ------------------------------------------------------ */

static struct splice *sp_get(void)
{
	return __atomic_load_n(&g_sp, __ATOMIC_ACQUIRE);
}

static void sq_poll(struct splice_conn *c, int side, unsigned mask)
{
	struct io_uring_sqe *sqe = worker_sqe(c->w);

	io_uring_prep_poll_add(sqe, c->fd[side], mask);
	io_uring_sqe_set_data64(sqe, op_data(&c->io[side][SIO_POLL], OP_SPLICE));
	c->poll_armed[side] = true;
	c->pending++;
}

/* Hang-up and errors only: a readable event never stops firing on a spliced socket. */
static void arm_poll(struct splice_conn *c, int side)
{
	unsigned mask = POLLHUP | POLLERR;

	if (c->poll_armed[side] || c->closing)
		return;
	if (!c->rdhup_seen[side])
		mask |= POLLRDHUP;
	sq_poll(c, side, mask);
}

/*
 * Periods of SLOW_MS and more end on a grid of SLOW_MS in CLOCK_MONOTONIC
 * (0.5 to 1.5 periods from now), so the checks of all of a worker's spliced
 * connections come due together and cost the worker at most one wake-up per
 * SLOW_MS, not one per connection. A longer period (an idle connection)
 * starts at one of its period / SLOW_MS slots, chosen per connection, so
 * the idle ones do not all come due in the same wake-up.
 */
static void arm_timer(struct splice_conn *c, unsigned ms)
{
	struct io_uring_sqe *sqe;
	unsigned flags = 0;

	if (c->timer_armed || c->closing)
		return;
	if (ms >= SLOW_MS) {
		struct timespec now;
		uint64_t t, p = (uint64_t)ms * 1000000, at, phase;
		uint64_t spread = c->cookie[0] ^ ((uintptr_t)c >> 6);

		phase = spread % (ms / SLOW_MS) * SLOW_MS * 1000000ull;
		clock_gettime(CLOCK_MONOTONIC, &now);
		t = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
		at = (t - phase) / p * p + p + phase; /* the next grid point of this slot after t */
		if (at - t < p / 2)
			at += p;
		c->ts.tv_sec = (long long)(at / 1000000000ull);
		c->ts.tv_nsec = (long long)(at % 1000000000ull);
		flags = IORING_TIMEOUT_ABS;
	} else {
		c->ts.tv_sec = ms / 1000;
		c->ts.tv_nsec = (long)(ms % 1000) * 1000000;
	}
	sqe = worker_sqe(c->w);
	io_uring_prep_timeout(sqe, &c->ts, 0, flags);
	io_uring_sqe_set_data64(sqe, op_data(&c->io[0][SIO_TIMER], OP_SPLICE));
	c->timer_armed = true;
	c->pending++;
}

/* Bytes ever written to fd's send side: acknowledged plus still queued (never more than true). */
static int64_t written_bytes(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	int outq = 0;

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || ioctl(fd, SIOCOUTQ, &outq) < 0)
		return -1;
	/* Read acked first, queue second: an ack in between only lowers the sum. */
	return (int64_t)ti.tcpi_bytes_acked + outq;
}

/* Same, exact: nothing writes to fd while this runs (before the hand-off). */
static int64_t written_bytes_stable(int fd)
{
	int64_t a = written_bytes(fd), b;

	for (int i = 0; i < 8; i++) {
		b = written_bytes(fd);
		if (a == b)
			return a;
		a = b;
	}
	return a;
}

static int read_sock(struct splice *sp, uint64_t cookie, struct splice_sock *out)
{
	return bpf_map_lookup_elem(sp->conns_fd, &cookie, out) ? -errno : 0;
}

static void conn_free(struct splice_conn *c)
{
	struct worker *w = c->w;
	struct wgen *g = c->gen;

	dlist_del(&c->wnode);
	w->nclients--; /* counted with the worker's clients: a drain waits for us */
	for (int i = 0; i < 2; i++) {
		if (c->fd[i] >= 0)
			close(c->fd[i]);
		free(c->d[i].buf);
	}
	free(c->peek_buf);
	free(c);
	/* Its generation may die here: the worker must not keep serving from it. */
	if (w->gen == g && g != w->cur)
		worker_enter(w, w->cur);
	worker_gen_put(w, g);
}

static void log_conn(struct splice_conn *c, uint64_t in, uint64_t out)
{
	const struct config *cfg = conn_snap(c)->cfg;
	struct alog_entry e = { 0 };
	static const char m_splice[] = "SPLICE", m_tcp[] = "TCP";
	bool tcp = c->tcp || (c->route >= 0 && cfg->routes[c->route].mode == CFG_MODE_TCP);

	if (!c->w->alog)
		return;
	e.start_realtime_ns = c->start_real_ns;
	e.client = (struct sockaddr *)&c->peer;
	e.method = tcp ? m_tcp : m_splice;
	e.method_len = tcp ? 3 : 6;
	/* A listener with SNI routes logs the server name the client asked for. */
	e.path = c->sni[0] ? c->sni : "*";
	e.path_len = strlen(e.path);
	e.bytes_in = in;
	e.bytes_out = out;
	e.route = c->route >= 0 ? cfg->routes[c->route].name : NULL;
	e.upstream = c->pool >= 0 && c->server >= 0 ? conn_snap(c)->server_names[c->pool][c->server]
						     : NULL;
	e.upstream_ns = -1;
	e.total_ns = c->w->now_ns - c->start_ns;
	e.error = c->error;
	e.listener = cfg->listeners[c->listener].name;
	alog_write(c->w->alog, &e);
}

/*
 * Bytes carried each way since the hand-off: kernel counters plus clawd's
 * relay. s[i], when not NULL, is side i's entry already read by the caller.
 */
static void conn_bytes(struct splice *sp, struct splice_conn *c, const struct splice_sock *s[2],
		       uint64_t *c2b, uint64_t *b2c)
{
	uint64_t v[2] = { c->d[0].user, c->d[1].user };

	for (int i = 0; i < 2 && sp && c->kernel; i++) {
		struct splice_sock e;

		if (s && s[i])
			v[i] = s[i]->redirected + s[i]->passed;
		else if (read_sock(sp, c->cookie[i], &e) == 0)
			v[i] = e.redirected + e.passed;
	}
	*c2b = v[0];
	*b2c = v[1];
}

/* Ends the connection: map entries out, RST both peers when reset, log, free when idle. */
static void conn_close(struct splice_conn *c, bool reset, const char *why)
{
	struct splice *sp = sp_get();
	uint64_t c2b = 0, b2c = 0;

	if (c->closing)
		return;
	c->closing = true;
	if (why && !c->error)
		c->error = why;
	conn_bytes(sp, c, NULL, &c2b, &b2c);
	for (int i = 0; i < 2 && sp; i++) {
		if (c->in_map[i]) {
			bpf_map_delete_elem(sp->hash_fd, &c->cookie[i]);
			bpf_map_delete_elem(sp->conns_fd, &c->cookie[i]);
			bpf_map_delete_elem(sp->delivered_fd, &c->cookie[i]);
			c->in_map[i] = false;
		}
	}
	if (reset) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		for (int i = 0; i < 2; i++)
			if (c->fd[i] >= 0)
				setsockopt(c->fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	if (c->lb_begun) {
		lb_end(&conn_snap(c)->pools[c->pool], c->server, 0, c->w->now_ns);
		c->lb_begun = false;
	}
	log_conn(c, c->first_in + c2b, c->first_out + b2c);
	if (sp) {
		atomic_fetch_add(&sp->closed, 1);
		atomic_fetch_add(&sp->bytes_c2b, c2b);
		atomic_fetch_add(&sp->bytes_b2c, b2c);
		atomic_fetch_add(&sp->duration_ms, (c->w->now_ns - c->start_ns) / 1000000);
		if (reset)
			atomic_fetch_add(&sp->resets, 1);
	}
	if (c->node.next && sp) {
		pthread_mutex_lock(&sp->lock);
		dlist_del(&c->node);
		sp->nconns--;
		pthread_mutex_unlock(&sp->lock);
		c->node.next = NULL;
	}
	for (int i = 0; i < 2; i++) {
		if (c->fd[i] < 0)
			continue;
		if (c->pending) {
			struct io_uring_sqe *sqe = worker_sqe(c->w);

			io_uring_prep_cancel_fd(sqe, c->fd[i], IORING_ASYNC_CANCEL_ALL);
			io_uring_sqe_set_data64(sqe, OP_IGNORE);
		}
	}
	if (c->timer_armed) {
		struct io_uring_sqe *sqe = worker_sqe(c->w);

		io_uring_prep_timeout_remove(sqe, op_data(&c->io[0][SIO_TIMER], OP_SPLICE), 0);
		io_uring_sqe_set_data64(sqe, OP_IGNORE);
	}
	/* Freed by splice_complete once the last operation has come back. */
}

static void relay_send(struct splice_conn *c, int i)
{
	struct splice_dir *d = &c->d[i];
	struct io_uring_sqe *sqe = worker_sqe(c->w);

	io_uring_prep_send(sqe, c->fd[!i], d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_data(&c->io[i][SIO_SEND], OP_SPLICE));
	d->send_busy = true;
	c->pending++;
}

static void relay_recv(struct splice_conn *c, int i)
{
	struct splice_dir *d = &c->d[i];
	struct io_uring_sqe *sqe = worker_sqe(c->w);

	io_uring_prep_recv(sqe, c->fd[i], d->buf, RELAY_BUF, 0);
	sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	io_uring_sqe_set_data64(sqe, op_data(&c->io[i][SIO_RECV], OP_SPLICE));
	d->recv_busy = true;
	c->pending++;
}

static bool dir_buf(struct splice_dir *d)
{
	if (!d->buf)
		d->buf = malloc(RELAY_BUF);
	return d->buf != NULL;
}

static void maybe_done(struct splice_conn *c)
{
	if (c->d[0].shut && c->d[1].shut)
		conn_close(c, false, NULL);
}

/* The sender of direction i is done and everything reached !i: pass the FIN on. */
static void dir_shut(struct splice_conn *c, int i)
{
	if (c->d[i].shut)
		return;
	c->d[i].shut = true;
	shutdown(c->fd[!i], SHUT_WR);
	maybe_done(c);
}

/*
 * Kernel mode: moves bytes the program left on socket i (budget, or the
 * insertion window) to !i once everything redirected before them has been
 * written, then passes a FIN on. Returns true while work remains. pre, when
 * not NULL, is side i's entry just read by the caller.
 */
static bool dir_progress(struct splice *sp, struct splice_conn *c, int i, const struct splice_sock *pre)
{
	struct splice_dir *d = &c->d[i];
	struct splice_sock s;
	int64_t w;
	ssize_t n;

	if (d->shut || d->send_busy || c->closing)
		return d->send_busy;
	if (pre)
		s = *pre;
	else if (read_sock(sp, c->cookie[i], &s))
		return false;
	if (s.passed == d->user && !d->eof)
		return false;
	/* Ordering: redirected bytes still in the peer's backlog go first. */
	w = written_bytes(c->fd[!i]);
	if (w < 0 || w - (int64_t)d->w0 - (int64_t)d->user < (int64_t)s.redirected)
		return true;
	if (s.passed > d->user) {
		uint64_t want = s.passed - d->user;
		int outq = 0;

		/* The relay obeys the same budget: written but unacknowledged bytes. */
		if (ioctl(c->fd[!i], SIOCOUTQ, &outq) < 0 || (uint64_t)outq + RELAY_BUF > sp->cfg.budget)
			return true;
		/*
		 * recv on a socket with a verdict program reads the psock queue only
		 * (tcp_bpf_recvmsg_parser), where the passed bytes are first, in order;
		 * at most `want` of them are taken. SIOCINQ is no guide here: it is
		 * rcv_nxt - copied_seq, and that recvmsg overwrites copied_seq with a
		 * value read before it ran the verdict, so it can stay off for good.
		 */
		if (!dir_buf(d))
			return true;
		n = recv(c->fd[i], d->buf, want < RELAY_BUF ? want : RELAY_BUF, MSG_DONTWAIT);
		if (n <= 0)
			return true;
		d->len = (uint32_t)n;
		d->off = 0;
		relay_send(c, i);
		return true;
	}
	if (d->eof)
		dir_shut(c, i);
	return false;
}

/*
 * The periodic check: a broken entry, paused bytes to move, the idle timeout.
 * One map read per side serves all three. A connection where nothing moves
 * is checked less and less often (up to IDLE_MAX_MS, back to SLOW_MS near
 * its idle deadline and as soon as a byte moves).
 */
static void conn_check(struct splice_conn *c)
{
	struct splice *sp = sp_get();
	const struct config *cfg = conn_snap(c)->cfg;
	struct splice_sock s[2];
	const struct splice_sock *have[2] = { NULL, NULL };
	uint64_t c2b, b2c, quiet;
	unsigned next;
	bool busy = false;

	if (c->closing)
		return;
	for (int i = 0; i < 2 && c->kernel && sp; i++) {
		if (read_sock(sp, c->cookie[i], &s[i]) == 0)
			have[i] = &s[i];
		if (have[i] && s[i].state == SPLICE_BROKEN) {
			char addr[NET_ADDR_STRLEN + 8];

			/* The program dropped an skb rather than deliver bytes twice. */
			net_addr_format((struct sockaddr *)&c->peer, addr, sizeof(addr));
			log_warn("splice: client %s: a retransmitted segment's already-delivered head could not be trimmed; connection reset",
				 addr);
			conn_close(c, true, "splice: overlapping retransmission not trimmed");
			return;
		}
	}
	if (c->kernel && sp)
		for (int i = 0; i < 2 && !c->closing; i++)
			busy |= dir_progress(sp, c, i, have[i]);
	if (c->closing)
		return;
	conn_bytes(sp, c, have, &c2b, &b2c);
	quiet = c->w->now_ms - c->last_ms;
	if (c2b + b2c != c->last_total) {
		c->last_total = c2b + b2c;
		c->last_ms = c->w->now_ms;
		c->period_ms = SLOW_MS;
		quiet = 0;
	} else if (cfg->splice.idle_ms && quiet >= cfg->splice.idle_ms) {
		if (sp)
			atomic_fetch_add(&sp->idle_closed, 1);
		conn_close(c, false, "splice idle timeout");
		return;
	} else if (!busy && c->period_ms < IDLE_MAX_MS) {
		c->period_ms = c->period_ms * 2 < IDLE_MAX_MS ? c->period_ms * 2 : IDLE_MAX_MS;
	}
	next = c->period_ms;
	/* The timer may end up to 1.5 periods away: near the deadline, fine steps again. */
	if (cfg->splice.idle_ms && cfg->splice.idle_ms - quiet < (uint64_t)next * 2)
		next = SLOW_MS;
	arm_timer(c, busy ? FAST_MS : next);
}

/* A hang-up or error on one side. */
static void on_poll(struct splice_conn *c, int i, int res)
{
	int soerr = 0;
	socklen_t len = sizeof(soerr);

	c->poll_armed[i] = false;
	if (c->closing || res == -ECANCELED)
		return;
	if (res < 0) {
		conn_close(c, true, "splice: poll failed");
		return;
	}
	getsockopt(c->fd[i], SOL_SOCKET, SO_ERROR, &soerr, &len);
	if (soerr || (res & POLLERR)) {
		/* A reset on one side resets the other. */
		conn_close(c, true, i ? "backend reset" : "client reset");
		return;
	}
	if (res & (POLLRDHUP | POLLHUP)) {
		c->rdhup_seen[i] = true;
		c->d[i].eof = true;
	}
	if (c->kernel) {
		struct splice *sp = sp_get();

		if (sp)
			dir_progress(sp, c, i, NULL);
	}
	if (c->closing)
		return;
	/* POLLHUP stays set once both directions of i are shut: stop watching then. */
	if (!(res & POLLHUP))
		arm_poll(c, i);
	arm_timer(c, FAST_MS);
}

static void on_send(struct splice_conn *c, int i, int res)
{
	struct splice_dir *d = &c->d[i];

	d->send_busy = false;
	if (c->closing)
		return;
	if (res < 0) {
		conn_close(c, true, i ? "client went away" : "backend went away");
		return;
	}
	d->off += (uint32_t)res;
	if (d->off < d->len) {
		relay_send(c, i);
		return;
	}
	d->user += d->len;
	c->last_ms = c->w->now_ms;
	if (c->kernel) {
		struct splice *sp = sp_get();

		atomic_fetch_add(&sp->relayed_bytes, d->len);
		/* Only now may the program redirect again: these bytes are in !i's queue. */
		bpf_map_update_elem(sp->delivered_fd, &c->cookie[i], &d->user, BPF_ANY);
		dir_progress(sp, c, i, NULL);
		return;
	}
	relay_recv(c, i);
}

static void on_recv(struct splice_conn *c, int i, int res)
{
	struct splice_dir *d = &c->d[i];

	d->recv_busy = false;
	if (c->closing)
		return;
	if (res == -EAGAIN || res == -EINTR || res == -ENOBUFS) {
		relay_recv(c, i);
		return;
	}
	if (res < 0) {
		conn_close(c, true, i ? "backend reset" : "client reset");
		return;
	}
	if (res == 0) {
		d->eof = true;
		dir_shut(c, i);
		return;
	}
	d->len = (uint32_t)res;
	d->off = 0;
	relay_send(c, i);
}

/*
 * A larger send buffer cuts the 4 ms back-off of the redirect path when the
 * destination is full. The receive buffer is pinned to the budget (the kernel
 * doubles the value): bytes the program leaves on a socket while paused are
 * charged to it, so TCP's window closes once that much is waiting.
 */
static void set_bufs(int fd, uint64_t sndbuf, uint64_t budget)
{
	int v = (int)sndbuf, r = (int)(budget / 2);

	if (sndbuf)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &r, sizeof(r));
}

/*
 * Userspace relay of both directions (tcp mode without the program, and a
 * splice hand-off that cannot use the kernel). Bytes already in a direction's
 * buffer (preload()) go out before anything is read on that side.
 */
static void start_user(struct splice_conn *c)
{
	c->kernel = false;
	for (int i = 0; i < 2; i++) {
		if (!dir_buf(&c->d[i])) {
			conn_close(c, true, "out of memory");
			return;
		}
	}
	for (int i = 0; i < 2; i++) {
		if (c->d[i].len > c->d[i].off)
			relay_send(c, i);
		else
			relay_recv(c, i);
	}
	arm_timer(c, SLOW_MS);
}

/* Puts n bytes clawd already read from side i in front of direction i's relay. */
static int preload(struct splice_conn *c, int i, const char *p, size_t n)
{
	struct splice_dir *d = &c->d[i];

	if (!n)
		return 0;
	d->buf = malloc(n > RELAY_BUF ? n : RELAY_BUF);
	if (!d->buf)
		return -ENOMEM;
	memcpy(d->buf, p, n);
	d->len = (uint32_t)n;
	d->off = 0;
	return 0;
}

/* SO_RCVLOWAT on both sockets (the kernel caps it at half the receive buffer). */
static void set_lowat(struct splice_conn *c, int v)
{
	for (int i = 0; i < 2; i++)
		setsockopt(c->fd[i], SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v));
}

/*
 * Puts both sockets in the SOCKHASH, backend first. Until both are in, a high
 * SO_RCVLOWAT keeps the verdict from running (tcp_data_ready() waits for that
 * many bytes), so no byte is left on the first socket's psock queue for want
 * of a peer: removing a socket from the map frees that queue, and its bytes
 * would be lost to the userspace fallback (see docs/splice.md).
 */
static int insert(struct splice *sp, struct splice_conn *c)
{
	socklen_t len = sizeof(uint64_t);

	for (int i = 0; i < 2; i++) {
		if (getsockopt(c->fd[i], SOL_SOCKET, SO_COOKIE, &c->cookie[i], &len))
			return -errno;
		set_bufs(c->fd[i], sp->cfg.sndbuf, sp->cfg.budget);
	}
	for (int i = 0; i < 2; i++) {
		struct splice_sock s = { .peer = c->cookie[!i], .budget = sp->cfg.budget };
		uint64_t zero = 0;
		int64_t w = written_bytes_stable(c->fd[!i]);

		if (w < 0)
			return -errno;
		c->d[i].w0 = (uint64_t)w;
		if (bpf_map_update_elem(sp->conns_fd, &c->cookie[i], &s, BPF_ANY) ||
		    bpf_map_update_elem(sp->delivered_fd, &c->cookie[i], &zero, BPF_ANY))
			return -errno;
	}
	set_lowat(c, INT_MAX);
	for (int k = 0; k < 2; k++) {
		int i = 1 - k; /* backend, then client */
		uint64_t fdv = (uint64_t)c->fd[i]; /* the SOCKHASH value is 8 bytes wide */

		if (bpf_map_update_elem(sp->hash_fd, &c->cookie[i], &fdv, BPF_NOEXIST)) {
			int rc = -errno;
			bool stranded = false;

			for (int j = 0; j < 2; j++) {
				struct splice_sock s;

				/* A verdict despite the gate (memory pressure, FIN) left bytes on
				 * the psock queue: they leave with the entry, so no fallback. */
				if (c->in_map[j] && read_sock(sp, c->cookie[j], &s) == 0 &&
				    (s.passed || s.redirected))
					stranded = true;
				if (c->in_map[j])
					bpf_map_delete_elem(sp->hash_fd, &c->cookie[j]);
				c->in_map[j] = false;
				bpf_map_delete_elem(sp->conns_fd, &c->cookie[j]);
				bpf_map_delete_elem(sp->delivered_fd, &c->cookie[j]);
			}
			set_lowat(c, 1);
			return stranded ? -EPIPE : rc;
		}
		c->in_map[i] = true;
	}
	/* Bytes queued before insertion sit until the next packet; this re-runs data_ready. */
	set_lowat(c, 1);
	return 0;
}

static struct splice_conn *conn_new(struct worker *w, int cfd, int ufd)
{
	struct splice_conn *c = aligned_alloc(16, sizeof(*c));

	if (!c)
		return NULL;
	memset(c, 0, sizeof(*c));
	c->w = w;
	c->gen = worker_gen_get(w->gen);
	c->fd[0] = cfd;
	c->fd[1] = ufd;
	for (int i = 0; i < 2; i++)
		for (int k = 0; k < SIO_N; k++) {
			c->io[i][k].c = c;
			c->io[i][k].kind = (uint8_t)k;
			c->io[i][k].side = (uint8_t)i;
		}
	if (!g_wlists[w->id % SPLICE_MAX_WORKERS].next)
		dlist_init(&g_wlists[w->id % SPLICE_MAX_WORKERS]);
	dlist_add_tail(&g_wlists[w->id % SPLICE_MAX_WORKERS], &c->wnode);
	w->nclients++;
	c->start_ns = w->now_ns;
	c->start_real_ns = now_realtime_ns();
	c->last_ms = w->now_ms;
	c->period_ms = SLOW_MS;
	c->route = c->pool = c->server = -1;
	return c;
}

static void conn_list_add(struct splice *sp, struct splice_conn *c)
{
	if (!sp)
		return;
	pthread_mutex_lock(&sp->lock);
	dlist_add_tail(&sp->conns, &c->node);
	sp->nconns++;
	pthread_mutex_unlock(&sp->lock);
}

/*
 * Whether side i's peer has already closed or reset (the socket left
 * ESTABLISHED). The SOCKHASH takes only established sockets, so inserting
 * such a socket fails; that is an ordinary close (a port check, a client
 * that sent its last bytes and left), not a fallback.
 */
static bool side_closed(const struct splice_conn *c, int i)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	return c->fd[i] >= 0 && getsockopt(c->fd[i], IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
	       ti.tcpi_state != SPLICE_TCP_ESTABLISHED;
}

/* Kernel mode from now on; returns -errno when the sockets cannot be inserted. */
static int start_kernel(struct splice *sp, struct splice_conn *c)
{
	int rc = insert(sp, c);

	if (rc)
		return rc;
	c->kernel = true;
	atomic_fetch_add(&sp->spliced, 1);
	conn_list_add(sp, c);
	arm_poll(c, 0);
	arm_poll(c, 1);
	arm_timer(c, FAST_MS);
	return 0;
}

void splice_fallback(const char *why)
{
	struct splice *sp = sp_get();

	if (sp)
		atomic_fetch_add(&sp->fallbacks, 1);
	else
		atomic_fetch_add(&g_fallbacks, 1);
	if (!atomic_exchange(&g_warned, true))
		log_warn("splice: a connection stays in HTTP instead (%s); counted in splice.stats fallbacks, said once",
			 why);
}

/* A new connection of the splice module for cfd/ufd (dups), with o's origin. */
static struct splice_conn *handoff_conn(struct worker *w, int cfd, int ufd, const struct splice_origin *o)
{
	struct splice_conn *c;
	int dc, du;

	dc = fcntl(cfd, F_DUPFD_CLOEXEC, 0);
	du = fcntl(ufd, F_DUPFD_CLOEXEC, 0);
	c = dc >= 0 && du >= 0 ? conn_new(w, dc, du) : NULL;
	if (!c) {
		if (dc >= 0)
			close(dc);
		if (du >= 0)
			close(du);
		return NULL;
	}
	c->listener = o->listener;
	c->route = o->route;
	c->pool = o->pool;
	c->server = o->server;
	c->first_in = o->first_in;
	c->first_out = o->first_out;
	memcpy(&c->peer, o->client, sizeof(c->peer));
	return c;
}

/*
 * The userspace relay for a splice-mode connection that cannot be spliced
 * but has become a byte stream (bytes went past the HTTP exchange): to_b
 * still goes to the backend and to_c to the client, first, then both ways.
 */
static int handoff_user(struct worker *w, int cfd, int ufd, const char *to_b, size_t to_b_len,
			const char *to_c, size_t to_c_len, const struct splice_origin *o)
{
	struct splice_conn *c = handoff_conn(w, cfd, ufd, o);

	if (!c)
		return -EIO;
	if (preload(c, 0, to_b, to_b_len) || preload(c, 1, to_c, to_c_len)) {
		conn_free(c); /* nothing armed yet; the caller closes the client */
		return -EIO;
	}
	c->connected = true;
	conn_list_add(sp_get(), c);
	start_user(c);
	return 0;
}

/* Writes all n bytes at once, or says how many went (the socket's buffer was full). */
static size_t send_now(int fd, const char *p, size_t n)
{
	ssize_t k = n ? send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL) : 0;

	return k > 0 ? (size_t)k : 0;
}

int splice_handoff(struct worker *w, int cfd, int ufd, const char *extra, size_t extra_len,
		   const char *early, size_t early_len, const struct splice_origin *o)
{
	struct splice *sp = sp_get();
	int required = atomic_load(&g_mode) == CFG_SPLICE_REQUIRED;
	struct splice_conn *c;
	size_t n;
	int rc;

	if (!sp) {
		fallback_once(g_why[0] ? g_why : "the splice program is not loaded");
		if (required)
			return -EPERM;
		/* Backend bytes past the response are no HTTP request: relay them. */
		return early_len ? handoff_user(w, cfd, ufd, extra, extra_len, early, early_len, o) : -EAGAIN;
	}
	/* Pipelined bytes go to the backend first; a partial write keeps HTTP in charge. */
	n = send_now(ufd, extra, extra_len);
	if (n != extra_len) {
		atomic_fetch_add(&sp->fallbacks, 1);
		if (n == 0 && !early_len)
			return -EAGAIN;
		return handoff_user(w, cfd, ufd, extra + n, extra_len - n, early, early_len, o);
	}
	/* Then what the backend sent behind its response goes to the client, in order. */
	n = send_now(cfd, early, early_len);
	if (n != early_len) {
		atomic_fetch_add(&sp->fallbacks, 1);
		return handoff_user(w, cfd, ufd, NULL, 0, early + n, early_len - n, o);
	}
	c = handoff_conn(w, cfd, ufd, o);
	if (!c)
		return extra_len || early_len ? -EIO : (required ? -EPERM : -EAGAIN);
	c->first_in += extra_len;
	c->first_out += early_len;
	rc = start_kernel(sp, c);
	if (rc == 0)
		return 0;
	if (rc != -EPIPE && side_closed(c, 0)) {
		/* The client left right after the exchange: HTTP sees its close as usual. */
		if ((extra_len || early_len) && !required) {
			c->connected = true;
			conn_list_add(sp, c);
			start_user(c); /* bytes went past the exchange: a byte stream to the end */
			return 0;
		}
		conn_free(c);
		return extra_len || early_len ? -EIO : -EAGAIN;
	}
	atomic_fetch_add(&sp->insert_fails, 1);
	log_warn("splice: route %s: inserting the sockets: %s (%s)", w->snap->cfg->routes[o->route].name,
		 strerror(-rc),
		 rc == -EPIPE ? "connection reset"
		 : required  ? "required: connection closed"
		 : extra_len || early_len ? "relayed in userspace" : "staying in HTTP");
	if (rc == -EPIPE || required) {
		conn_free(c); /* closes the dups only */
		if (rc == -EPIPE)
			return -EIO; /* bytes went with the map entry: only closing is honest */
		atomic_fetch_add(&sp->refused, 1);
		return -EPERM;
	}
	atomic_fetch_add(&sp->fallbacks, 1);
	if (extra_len || early_len) {
		/* Bytes went past the exchange already: HTTP cannot take over again. */
		c->connected = true;
		conn_list_add(sp, c);
		start_user(c);
		return 0;
	}
	conn_free(c);
	return -EAGAIN;
}

/* ---- tcp mode ----------------------------------------------------------------------- */

static void tcp_connected(struct splice_conn *c, int res)
{
	struct splice *sp = sp_get();
	int required = atomic_load(&g_mode) == CFG_SPLICE_REQUIRED;
	int rc;

	if (c->closing)
		return;
	if (res < 0) {
		log_warn("route %s: tcp: connect to %s: %s", conn_snap(c)->cfg->routes[c->route].name,
			 conn_snap(c)->server_names[c->pool][c->server], strerror(-res));
		conn_close(c, true, "backend connect failed");
		return;
	}
	c->connected = true;
	if (!sp) {
		if (required) {
			conn_close(c, true, "splice required but not loaded");
			return;
		}
		fallback_once(g_why[0] ? g_why : "the splice program is not loaded");
		start_user(c);
		return;
	}
	rc = start_kernel(sp, c);
	if (rc == 0)
		return;
	if (rc != -EPIPE && (side_closed(c, 0) || side_closed(c, 1))) {
		/*
		 * An ordinary close (a port check connects and closes at once):
		 * not a fallback. Bytes sent before the FIN still reach the other
		 * side and the close is passed on, through the relay; with
		 * required, which never relays, the connection just closes.
		 */
		if (required) {
			conn_close(c, false, "closed before the hand-off");
			return;
		}
		conn_list_add(sp, c);
		start_user(c);
		return;
	}
	atomic_fetch_add(&sp->insert_fails, 1);
	if (rc == -EPIPE) {
		log_warn("splice: route %s: inserting the sockets failed after the verdict ran on the backend; connection reset",
			 conn_snap(c)->cfg->routes[c->route].name);
		conn_close(c, true, "splice insert failed");
		return;
	}
	if (required) {
		atomic_fetch_add(&sp->refused, 1);
		log_warn("splice: route %s: inserting the sockets: %s (required: connection closed)",
			 conn_snap(c)->cfg->routes[c->route].name, strerror(-rc));
		conn_close(c, true, "splice insert failed");
		return;
	}
	fallback_once("a socket could not be inserted into the SOCKHASH"); /* counts it too */
	conn_list_add(sp, c);
	start_user(c);
}

/*
 * Picks a server of route's pool and starts the connect. On failure the
 * connection is marked closing (and logged when it is a decision worth a
 * line); the caller frees it once nothing is pending.
 */
static void tcp_begin(struct splice_conn *c, int route)
{
	struct worker *w = c->w;
	const struct config *cfg = conn_snap(c)->cfg;
	const struct cfg_route *r = &cfg->routes[route];
	struct lb_pool *p = &conn_snap(c)->pools[r->upstream];
	uint64_t hash = 1469598103934665603ull;
	int s, ufd, one = 1;

	c->route = route;
	c->pool = r->upstream;
	/* ip_hash and consistent_hash see the client address (no request here). */
	for (socklen_t i = 0; i < c->peer_len && i < 24; i++)
		hash = (hash ^ ((unsigned char *)&c->peer)[i]) * 1099511628211ull;
	s = lb_pick(p, &c->gen->lb[c->pool], hash, NULL, 0, w->now_ns);
	if (s < 0) {
		c->error = "no backend available";
		c->closing = true;
		log_conn(c, 0, 0);
		return;
	}
	c->server = s;
	const struct cfg_server *srv = &cfg->upstreams[c->pool].servers[s];

	ufd = socket(srv->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ufd < 0) {
		c->closing = true;
		return;
	}
	c->fd[1] = ufd;
	setsockopt(c->fd[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	lb_begin(p, s);
	c->lb_begun = true;
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_prep_connect(sqe, ufd, (const struct sockaddr *)&srv->addr.ss, srv->addr.len);
	io_uring_sqe_set_data64(sqe, op_data(&c->io[1][SIO_CONNECT], OP_SPLICE));
	c->pending++;
}

/* ---- SNI: the ClientHello peeked on the worker's ring ------------------------------- */

#define SNI_MAX_SLOTS 256 /* listener names ever counted (reloads add names, never remove) */

/* openclaw_tcp_sni_total for one listener name; slots are appended, never moved. */
struct sni_slot {
	char name[64];
	_Atomic uint64_t n[SNI_ROUTE_N];
	_Atomic bool warned[SNI_ROUTE_N]; /* the failure was logged for this listener */
};

static struct sni_slot g_sni[SNI_MAX_SLOTS];
static _Atomic unsigned g_nsni;        /* slots published (names written before the count) */
static pthread_mutex_t g_sni_lock = PTHREAD_MUTEX_INITIALIZER; /* appending a name */

/* The slot of listener name, created on first use; NULL when the table is full. */
static struct sni_slot *sni_slot(const char *name)
{
	unsigned n = atomic_load_explicit(&g_nsni, memory_order_acquire);
	struct sni_slot *sl = NULL;

	for (unsigned i = 0; i < n; i++)
		if (!strcmp(g_sni[i].name, name))
			return &g_sni[i];
	pthread_mutex_lock(&g_sni_lock);
	n = atomic_load_explicit(&g_nsni, memory_order_relaxed);
	for (unsigned i = 0; i < n && !sl; i++)
		if (!strcmp(g_sni[i].name, name))
			sl = &g_sni[i];
	if (!sl && n < SNI_MAX_SLOTS) {
		sl = &g_sni[n];
		snprintf(sl->name, sizeof(sl->name), "%s", name);
		atomic_store_explicit(&g_nsni, n + 1, memory_order_release);
	}
	pthread_mutex_unlock(&g_sni_lock);
	return sl;
}

/* Counts one peek outcome; a failure is logged once per listener and reason. */
static void sni_count(struct splice_conn *c, enum sni_route_result why)
{
	const char *lname = conn_snap(c)->cfg->listeners[c->listener].name;
	struct sni_slot *sl = sni_slot(lname);

	if (!sl)
		return;
	atomic_fetch_add_explicit(&sl->n[why], 1, memory_order_relaxed);
	if (why <= SNI_ROUTE_DEFAULT || atomic_exchange(&sl->warned[why], true))
		return;
	if (why == SNI_ROUTE_NO_MATCH)
		log_warn("listener %s: tcp: server name \"%s\" matches no route and there is no default route; connection closed (said once per listener and reason, counted in openclaw_tcp_sni_total)",
			 lname, c->sni[0] ? c->sni : "(none)");
	else
		log_warn("listener %s: tcp: ClientHello %s; connection closed (said once per listener and reason, counted in openclaw_tcp_sni_total)",
			 lname,
			 why == SNI_ROUTE_MALFORMED ? "malformed (not TLS?)"
			 : why == SNI_ROUTE_TOO_BIG ? "larger than 16 KiB"
			 : why == SNI_ROUTE_TIMEOUT ? "not complete within timeouts.client_header"
						    : "cut short: the client closed");
}

/* The peek is over: its timer goes, its buffer too, and the socket wakes on any byte again. */
static void peek_end(struct splice_conn *c)
{
	int one = 1;

	if (c->peek_timer) {
		struct io_uring_sqe *sqe = worker_sqe(c->w);

		io_uring_prep_timeout_remove(sqe, op_data(&c->io[0][SIO_PEEK_TIMER], OP_SPLICE), 0);
		io_uring_sqe_set_data64(sqe, OP_IGNORE);
		c->peek_timer = false; /* its completion still comes (counted in pending) */
	}
	free(c->peek_buf);
	c->peek_buf = NULL;
	c->peeking = false;
	setsockopt(c->fd[0], SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
}

/* Closes a connection whose peek failed: counted, logged once, one access-log line. */
static void peek_fail(struct splice_conn *c, enum sni_route_result why, const char *error)
{
	peek_end(c);
	if (why < SNI_ROUTE_N)
		sni_count(c, why);
	c->error = error;
	c->closing = true;
	log_conn(c, c->peek_len, 0);
	if (c->pending) {
		struct io_uring_sqe *sqe = worker_sqe(c->w);

		io_uring_prep_cancel_fd(sqe, c->fd[0], IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, OP_IGNORE);
	}
	/* Freed once the cancelled poll and the removed timer have come back. */
}

/* Waits (on the ring) until the client socket has more than peek_len bytes or hangs up. */
static void peek_arm(struct splice_conn *c)
{
	struct io_uring_sqe *sqe = worker_sqe(c->w);

	io_uring_prep_poll_add(sqe, c->fd[0], POLLIN | POLLRDHUP);
	io_uring_sqe_set_data64(sqe, op_data(&c->io[0][SIO_PEEK], OP_SPLICE));
	c->pending++;
}

static const char *const peek_errors[SNI_ROUTE_N] = {
	[SNI_ROUTE_NO_MATCH] = "sni: no route for the server name",
	[SNI_ROUTE_MALFORMED] = "sni: malformed ClientHello",
	[SNI_ROUTE_TOO_BIG] = "sni: ClientHello too big",
	[SNI_ROUTE_TIMEOUT] = "sni: ClientHello timeout",
	[SNI_ROUTE_CLOSED] = "sni: client closed before its ClientHello",
};

/*
 * The client socket is readable (or hung up): peek what it has sent
 * (MSG_PEEK consumes nothing: the backend gets the ClientHello intact) and
 * parse it. Incomplete: SO_RCVLOWAT one past what is there, so the
 * level-triggered poll sleeps until a new byte arrives instead of firing on
 * the same unconsumed bytes.
 */
static void on_peek(struct splice_conn *c, int res)
{
	const struct config *cfg = conn_snap(c)->cfg;
	enum sni_peek_result pr;
	enum sni_route_result why;
	bool hup = res > 0 && (res & (POLLRDHUP | POLLHUP | POLLERR));
	ssize_t n;
	int route;

	if (c->closing || !c->peeking)
		return;
	if (res < 0) {
		peek_fail(c, SNI_ROUTE_CLOSED, peek_errors[SNI_ROUTE_CLOSED]);
		return;
	}
	n = recv(c->fd[0], c->peek_buf, SNI_PEEK_MAX, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR) && !hup) {
		peek_arm(c);
		return;
	}
	if (n <= 0) {
		peek_fail(c, SNI_ROUTE_CLOSED, peek_errors[SNI_ROUTE_CLOSED]);
		return;
	}
	c->peek_len = (uint32_t)n;
	pr = sni_peek_parse(c->peek_buf, (size_t)n, SNI_PEEK_MAX, c->sni);
	if (pr == SNI_PEEK_NEED_MORE) {
		int lowat = (int)n + 1;

		if (hup) {
			/* Nothing more can come: half a ClientHello and a FIN (or an error). */
			peek_fail(c, SNI_ROUTE_CLOSED, peek_errors[SNI_ROUTE_CLOSED]);
			return;
		}
		if (n >= SNI_PEEK_MAX) {
			peek_fail(c, SNI_ROUTE_TOO_BIG, peek_errors[SNI_ROUTE_TOO_BIG]);
			return;
		}
		setsockopt(c->fd[0], SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
		peek_arm(c);
		return;
	}
	if (pr != SNI_PEEK_FOUND)
		c->sni[0] = '\0';
	route = sni_route_choose(&cfg->listeners[c->listener], cfg->routes, pr, c->sni, &why);
	if (route < 0) {
		peek_fail(c, why, peek_errors[why]);
		return;
	}
	peek_end(c);
	sni_count(c, why);
	tcp_begin(c, route);
}

/* The peek's deadline (timeouts.client_header) passed, or its timer was removed. */
static void on_peek_timer(struct splice_conn *c, int res)
{
	if (res == -ECANCELED || c->closing || !c->peeking)
		return;
	c->peek_timer = false;
	peek_fail(c, SNI_ROUTE_TIMEOUT, peek_errors[SNI_ROUTE_TIMEOUT]);
}

/* Starts the peek: the ClientHello must be complete within timeouts.client_header. */
static void peek_start(struct splice_conn *c)
{
	uint64_t ms = conn_snap(c)->cfg->timeouts.client_header_ms;
	struct io_uring_sqe *sqe;

	c->peek_buf = malloc(SNI_PEEK_MAX);
	if (!c->peek_buf) {
		c->closing = true;
		return;
	}
	c->peeking = true;
	c->peek_ts.tv_sec = (long long)(ms / 1000);
	c->peek_ts.tv_nsec = (long long)(ms % 1000) * 1000000;
	sqe = worker_sqe(c->w);
	io_uring_prep_timeout(sqe, &c->peek_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, op_data(&c->io[0][SIO_PEEK_TIMER], OP_SPLICE));
	c->peek_timer = true;
	c->pending++;
	peek_arm(c);
}

void splice_accept_tcp(struct worker *w, unsigned listener, int fd)
{
	const struct cfg_listener *l = &w->snap->cfg->listeners[listener];
	struct splice_conn *c;
	socklen_t plen;

	c = conn_new(w, fd, -1);
	if (!c) {
		close(fd);
		return;
	}
	c->listener = listener;
	c->tcp = true;
	plen = sizeof(c->peer);
	if (getpeername(fd, (struct sockaddr *)&c->peer, &plen) == 0)
		c->peer_len = plen;
	if (w->draining) {
		conn_free(c);
		return;
	}
	/* Only a listener with match.sni routes waits for the ClientHello; else bytes flow at once. */
	if (l->sni_peek)
		peek_start(c);
	else
		tcp_begin(c, l->tcp_default);
	if (c->closing && !c->pending)
		conn_free(c);
}

void splice_drain(struct worker *w)
{
	struct dlist *head = &g_wlists[w->id % SPLICE_MAX_WORKERS], *pos, *tmp;

	if (!head->next)
		return;
	dlist_for_each_safe(pos, tmp, head) {
		struct splice_conn *c = dlist_entry(pos, struct splice_conn, wnode);

		if (c->closing || !c->peeking)
			continue;
		/* Not an SNI outcome: not counted in openclaw_tcp_sni_total. */
		peek_fail(c, SNI_ROUTE_N, "shutdown: draining");
		if (!c->pending)
			conn_free(c);
	}
}

void splice_complete(struct worker *w, void *obj, int res, unsigned flags)
{
	struct splice_io *io = obj;
	struct splice_conn *c = io->c;
	int i = io->side;

	/* Its own configuration (dispatch() goes back to the newest afterwards). */
	worker_enter(w, c->gen);
	c->pending--;
	switch (io->kind) {
	case SIO_POLL:
		on_poll(c, i, res);
		break;
	case SIO_SEND:
		on_send(c, i, res);
		break;
	case SIO_RECV:
		on_recv(c, i, res);
		break;
	case SIO_TIMER:
		c->timer_armed = false;
		if (!c->closing)
			conn_check(c);
		break;
	case SIO_CONNECT:
		tcp_connected(c, res);
		break;
	case SIO_PEEK:
		on_peek(c, res);
		break;
	case SIO_PEEK_TIMER:
		on_peek_timer(c, res);
		break;
	}
	if (c->closing && !c->pending)
		conn_free(c);
}

void splice_close_all(struct worker *w)
{
	struct dlist *head = &g_wlists[w->id % SPLICE_MAX_WORKERS], *pos, *tmp;

	if (!head->next)
		return;
	dlist_for_each_safe(pos, tmp, head) {
		struct splice_conn *c = dlist_entry(pos, struct splice_conn, wnode);

		if (c->closing)
			continue;
		if (c->peeking)
			peek_fail(c, SNI_ROUTE_N, "shutdown: drain time over");
		else
			conn_close(c, false, "shutdown: drain time over");
		if (!c->pending)
			conn_free(c);
	}
}

/* ---- control ------------------------------------------------------------------------ */

static int cmd_list(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		    size_t errlen)
{
	struct splice *sp = sp_get();
	struct dlist *pos, *tmp;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;

	jsonw_arr_begin(w, "connections");
	if (sp) {
		pthread_mutex_lock(&sp->lock);
		dlist_for_each_safe(pos, tmp, &sp->conns) {
			struct splice_conn *c = dlist_entry(pos, struct splice_conn, node);
			char addr[NET_ADDR_STRLEN + 8];
			uint64_t c2b, b2c;
			struct splice_sock s;

			conn_bytes(sp, c, NULL, &c2b, &b2c);
			jsonw_obj_begin(w);
			net_addr_format((struct sockaddr *)&c->peer, addr, sizeof(addr));
			jsonw_str(w, "client", addr);
			jsonw_str(w, "backend", c->pool >= 0 && c->server >= 0
							 ? conn_snap(c)->server_names[c->pool][c->server]
							 : "");
			jsonw_str(w, "route", c->route >= 0 ? conn_snap(c)->cfg->routes[c->route].name : "");
			jsonw_str(w, "sni", c->sni);
			jsonw_str(w, "path", c->kernel ? "kernel" : "userspace");
			jsonw_u64(w, "bytes_to_backend", c->first_in + c2b);
			jsonw_u64(w, "bytes_to_client", c->first_out + b2c);
			jsonw_u64(w, "relayed_bytes", c->d[0].user + c->d[1].user);
			jsonw_u64(w, "pauses", c->kernel && read_sock(sp, c->cookie[0], &s) == 0
						       ? s.pauses
						       : 0);
			uint64_t dup = 0;

			for (int i = 0; i < 2 && c->kernel; i++)
				if (read_sock(sp, c->cookie[i], &s) == 0)
					dup += s.dup_bytes;
			jsonw_u64(w, "dup_bytes_trimmed", dup);
			jsonw_u64(w, "age_ms", (now - c->start_ns) / 1000000);
			jsonw_u64(w, "client_cookie", c->cookie[0]);
			jsonw_u64(w, "backend_cookie", c->cookie[1]);
			jsonw_obj_end(w);
		}
		pthread_mutex_unlock(&sp->lock);
	}
	jsonw_arr_end(w);
	return 0;
}

/* Sums the per-CPU kernel counters into sum[SPLICE_C_N]; -errno when unreadable. */
static int kernel_counters(struct splice *sp, uint64_t *sum)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t *vals;

	memset(sum, 0, SPLICE_C_N * sizeof(*sum));
	if (ncpu <= 0)
		return -EINVAL;
	vals = calloc((size_t)ncpu, sizeof(uint64_t));
	if (!vals)
		return -ENOMEM;
	for (uint32_t k = 0; k < SPLICE_C_N; k++)
		if (bpf_map_lookup_elem(sp->stats_fd, &k, vals) == 0)
			for (int cpu = 0; cpu < ncpu; cpu++)
				sum[k] += vals[cpu];
	free(vals);
	return 0;
}

/* openclaw_tcp_sni_total{listener,result}: every listener that ever peeked a ClientHello. */
static void sni_collect(struct metrics_out *o)
{
	unsigned n = atomic_load_explicit(&g_nsni, memory_order_acquire);

	if (!n)
		return;
	metrics_family(o, "openclaw_tcp_sni_total", "counter",
		       "Connections of tcp listeners with SNI routes, by how the ClientHello's server name routed them.");
	for (unsigned i = 0; i < n; i++)
		for (int r = 0; r < SNI_ROUTE_N; r++)
			metrics_sample_u64(o, "openclaw_tcp_sni_total",
					   (const char *[]){ "listener", g_sni[i].name, "result",
							     sni_route_result_name(r), NULL },
					   atomic_load_explicit(&g_sni[i].n[r], memory_order_relaxed));
}

static void collect(void *ctx, struct metrics_out *o)
{
	struct splice *sp = sp_get();
	uint64_t k[SPLICE_C_N];
	unsigned active;

	metrics_family(o, "openclaw_splice_fallbacks_total", "counter",
		       "Connections of splice/tcp routes relayed in userspace instead (program off or insert refused).");
	metrics_sample_u64(o, "openclaw_splice_fallbacks_total", NULL,
			   atomic_load(&g_fallbacks) + (sp ? atomic_load(&sp->fallbacks) : 0));
	sni_collect(o);
	if (!sp)
		return;
	pthread_mutex_lock(&sp->lock);
	active = sp->nconns;
	pthread_mutex_unlock(&sp->lock);
	metrics_family(o, "openclaw_splice_active", "gauge", "Connections relayed by the splice module now.");
	metrics_sample_u64(o, "openclaw_splice_active", NULL, active);
	metrics_family(o, "openclaw_splice_connections_total", "counter",
		       "Spliced connections by outcome.");
	metrics_sample_u64(o, "openclaw_splice_connections_total",
			   (const char *[]){ "event", "spliced", NULL }, atomic_load(&sp->spliced));
	metrics_sample_u64(o, "openclaw_splice_connections_total",
			   (const char *[]){ "event", "closed", NULL }, atomic_load(&sp->closed));
	metrics_sample_u64(o, "openclaw_splice_connections_total",
			   (const char *[]){ "event", "reset", NULL }, atomic_load(&sp->resets));
	metrics_sample_u64(o, "openclaw_splice_connections_total",
			   (const char *[]){ "event", "idle_timeout", NULL }, atomic_load(&sp->idle_closed));
	metrics_sample_u64(o, "openclaw_splice_connections_total",
			   (const char *[]){ "event", "insert_failed", NULL }, atomic_load(&sp->insert_fails));
	metrics_sample_u64(o, "openclaw_splice_connections_total",
			   (const char *[]){ "event", "refused", NULL }, atomic_load(&sp->refused));
	metrics_family(o, "openclaw_splice_bytes_total", "counter",
		       "Bytes carried by closed spliced connections after the hand-off, from the kernel's counters.");
	metrics_sample_u64(o, "openclaw_splice_bytes_total",
			   (const char *[]){ "direction", "to_backend", NULL }, atomic_load(&sp->bytes_c2b));
	metrics_sample_u64(o, "openclaw_splice_bytes_total",
			   (const char *[]){ "direction", "to_client", NULL }, atomic_load(&sp->bytes_b2c));
	metrics_family(o, "openclaw_splice_connection_seconds_total", "counter",
		       "Summed lifetime of closed spliced connections.");
	metrics_sample_f64(o, "openclaw_splice_connection_seconds_total", NULL,
			   atomic_load(&sp->duration_ms) / 1000.0);
	metrics_family(o, "openclaw_splice_relayed_bytes_total", "counter",
		       "Bytes clawd moved itself while the budget paused a direction.");
	metrics_sample_u64(o, "openclaw_splice_relayed_bytes_total", NULL, atomic_load(&sp->relayed_bytes));
	if (kernel_counters(sp, k))
		return;
	metrics_family(o, "openclaw_splice_kernel_bytes_total", "counter",
		       "Bytes seen by the verdict program: redirected to the peer, or left on the socket (budget).");
	metrics_sample_u64(o, "openclaw_splice_kernel_bytes_total",
			   (const char *[]){ "verdict", "redirect", NULL }, k[SPLICE_C_REDIRECT_BYTES]);
	metrics_sample_u64(o, "openclaw_splice_kernel_bytes_total",
			   (const char *[]){ "verdict", "pass", NULL }, k[SPLICE_C_PASS_BYTES]);
	metrics_family(o, "openclaw_splice_duplicate_bytes_total", "counter",
		       "Already-delivered bytes at the head of retransmitted skbs that the program trimmed instead of delivering twice.");
	metrics_sample_u64(o, "openclaw_splice_duplicate_bytes_total", NULL, k[SPLICE_C_DUP_BYTES]);
	metrics_family(o, "openclaw_splice_fin_drops_total", "counter",
		       "Zero-length (FIN) skbs the program dropped instead of redirecting.");
	metrics_sample_u64(o, "openclaw_splice_fin_drops_total", NULL, k[SPLICE_C_FIN_DROPS]);
}

int splice_register_metrics(struct metrics *m)
{
	return m ? metrics_register(m, collect, NULL) : 0;
}

/* "sni": { listener: { routed: n, default: n, ... } } for splice.stats. */
static void sni_stats(struct jsonw *w)
{
	unsigned n = atomic_load_explicit(&g_nsni, memory_order_acquire);

	jsonw_obj_begin_key(w, "sni");
	for (unsigned i = 0; i < n; i++) {
		jsonw_obj_begin_key(w, g_sni[i].name);
		for (int r = 0; r < SNI_ROUTE_N; r++)
			jsonw_u64(w, sni_route_result_name(r),
				  atomic_load_explicit(&g_sni[i].n[r], memory_order_relaxed));
		jsonw_obj_end(w);
	}
	jsonw_obj_end(w);
}

static int cmd_stats(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		     size_t errlen)
{
	struct splice *sp = sp_get();
	static const char *const names[SPLICE_C_N] = {
		"redirect_packets", "redirect_bytes", "pass_packets", "pass_bytes",
		"fin_drops",        "no_peer",        "redirect_fail",    "dup_bytes",
		"dup_failures",
	};
	uint64_t k[SPLICE_C_N];

	jsonw_bool(w, "loaded", sp != NULL);
	jsonw_str(w, "enabled", (const char *[]){ "auto", "off", "required" }[atomic_load(&g_mode) < 0 ? 0 : atomic_load(&g_mode)]);
	if (!sp)
		jsonw_str(w, "reason", g_why[0] ? g_why : "no route uses splice or tcp mode");
	jsonw_u64(w, "fallbacks", atomic_load(&g_fallbacks) + (sp ? atomic_load(&sp->fallbacks) : 0));
	sni_stats(w);
	if (!sp)
		return 0;
	pthread_mutex_lock(&sp->lock);
	jsonw_u64(w, "active", sp->nconns);
	pthread_mutex_unlock(&sp->lock);
	jsonw_u64(w, "spliced", atomic_load(&sp->spliced));
	jsonw_u64(w, "closed", atomic_load(&sp->closed));
	jsonw_u64(w, "resets", atomic_load(&sp->resets));
	jsonw_u64(w, "idle_closed", atomic_load(&sp->idle_closed));
	jsonw_u64(w, "insert_failures", atomic_load(&sp->insert_fails));
	jsonw_u64(w, "refused", atomic_load(&sp->refused));
	jsonw_u64(w, "relayed_bytes", atomic_load(&sp->relayed_bytes));
	jsonw_u64(w, "bytes_to_backend", atomic_load(&sp->bytes_c2b));
	jsonw_u64(w, "bytes_to_client", atomic_load(&sp->bytes_b2c));
	jsonw_u64(w, "budget", sp->cfg.budget);
	jsonw_str(w, "pin_dir", sp->cfg.pin_dir);
	jsonw_u64(w, "connection_seconds", atomic_load(&sp->duration_ms) / 1000);
	jsonw_obj_begin_key(w, "kernel");
	if (kernel_counters(sp, k) == 0)
		for (uint32_t i = 0; i < SPLICE_C_N; i++)
			jsonw_u64(w, names[i], k[i]);
	jsonw_obj_end(w);
	return 0;
}

void splice_status(struct jsonw *w)
{
	struct splice *sp = sp_get();
	int mode = atomic_load(&g_mode);

	jsonw_obj_begin_key(w, "splice");
	jsonw_str(w, "enabled", (const char *[]){ "auto", "off", "required" }[mode < 0 ? 0 : mode]);
	jsonw_bool(w, "loaded", sp != NULL);
	jsonw_bool(w, "attached", sp && sp->attached);
	if (!sp)
		jsonw_str(w, "reason", g_why[0] ? g_why : "no route uses splice or tcp mode");
	if (sp) {
		pthread_mutex_lock(&sp->lock);
		jsonw_u64(w, "active", sp->nconns);
		pthread_mutex_unlock(&sp->lock);
		jsonw_u64(w, "spliced", atomic_load(&sp->spliced));
	} else {
		jsonw_u64(w, "active", 0);
		jsonw_u64(w, "spliced", 0);
	}
	jsonw_u64(w, "fallbacks", atomic_load(&g_fallbacks) + (sp ? atomic_load(&sp->fallbacks) : 0));
	jsonw_obj_end(w);
}

int splice_register_commands(struct control *ctl)
{
	int rc = control_register(ctl, "splice.list", cmd_list, NULL);

	return rc ? rc : control_register(ctl, "splice.stats", cmd_stats, NULL);
}
