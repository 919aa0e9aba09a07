/* agent/health.c — server health: the check thread and its io_uring, passive ejection, slow start, state changes and their log lines. */
#include "health.h"

#include <errno.h>
#include <inttypes.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "health_int.h"
#include "http1.h"
#include "breaker.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "tls_client.h"
#include "worker.h"

#define NS_PER_MS 1000000ULL
#define HC_RING_ENTRIES 256
#define HC_BUF_HEAD (8u << 10)   /* enough for any sane status line and head */
#define HC_BUF_BODY (64u << 10)  /* body_contains looks this far */

/* io_uring user_data = check pointer | operation (checks are 16-byte aligned). */
enum hc_op { HOP_IGNORE = 0, HOP_CONNECT, HOP_SEND, HOP_RECV, HOP_STOP };
#define HOP_MASK 0xfull

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* "upstream api 10.0.0.1:80", the prefix of every line about one server. */
static const char *srv_label(const struct lb_pool *p, unsigned i, char *buf, size_t len)
{
	char a[NET_ADDR_STRLEN];

	snprintf(buf, len, "upstream %s %s", p->cfg->name,
		 net_addr_format((const struct sockaddr *)&p->cfg->servers[i].addr.ss, a, sizeof(a)));
	return buf;
}

static const char *reason_name(int r)
{
	switch (r) {
	case LB_EJECT_CONNECT:
		return "connect failures";
	case LB_EJECT_5XX:
		return "5xx responses";
	case LB_EJECT_TIMEOUT:
		return "timeouts";
	}
	return "";
}

/* ---- passive outlier detection (workers) ------------------------------------ */

/* Servers of p that may be ejected at once: the configured share, at least one when any. */
static uint32_t max_ejected(const struct lb_pool *p)
{
	uint32_t pct = p->cfg->outlier.max_ejected_percent;
	uint32_t n = (uint32_t)((uint64_t)p->nservers * pct / 100);

	return pct && !n ? 1 : n;
}

void health_observe(struct lb_pool *p, int idx, enum health_outcome o, uint64_t now_ns)
{
	const struct cfg_outlier *oc;
	struct lb_server *s;
	uint32_t n, cur, k;
	uint64_t ms;
	bool no = false;
	char who[160];

	if (!p || !p->cfg || idx < 0 || (unsigned)idx >= p->nservers)
		return;
	oc = &p->cfg->outlier;
	if (!oc->consecutive_failures)
		return;
	s = &p->servers[idx];
	if (o == HEALTH_OK) {
		/* Read first: a healthy server's line is not written on every response. */
		if (atomic_load_explicit(&s->fails, memory_order_relaxed))
			atomic_store_explicit(&s->fails, 0, memory_order_relaxed);
		return;
	}
	n = atomic_fetch_add_explicit(&s->fails, 1, memory_order_relaxed) + 1;
	if (n < oc->consecutive_failures || atomic_load_explicit(&s->ejected, memory_order_relaxed))
		return;
	/* Claim one of the pool's ejection slots before ejecting, so the share holds across workers. */
	cur = atomic_load_explicit(&p->nejected, memory_order_relaxed);
	do {
		if (cur >= max_ejected(p))
			return;
	} while (!atomic_compare_exchange_weak_explicit(&p->nejected, &cur, cur + 1,
							memory_order_relaxed, memory_order_relaxed));
	if (!atomic_compare_exchange_strong_explicit(&s->ejected, &no, true, memory_order_acq_rel,
						     memory_order_relaxed)) {
		lb_counter_dec(&p->nejected);
		return;
	}
	k = atomic_fetch_add_explicit(&s->ejections, 1, memory_order_relaxed) + 1;
	atomic_fetch_add_explicit(&s->ejected_total, 1, memory_order_relaxed);
	ms = oc->base_ejection_ms * k;
	if (ms > oc->max_ejection_ms || ms / k != oc->base_ejection_ms)
		ms = oc->max_ejection_ms;
	atomic_store_explicit(&s->eject_reason,
			      o == HEALTH_5XX ? LB_EJECT_5XX
			      : o == HEALTH_TIMEOUT ? LB_EJECT_TIMEOUT : LB_EJECT_CONNECT,
			      memory_order_relaxed);
	atomic_store_explicit(&s->ejected_at_ns, now_ns, memory_order_relaxed);
	atomic_store_explicit(&s->ejected_until_ns, now_ns + ms * NS_PER_MS, memory_order_release);
	atomic_store_explicit(&s->fails, 0, memory_order_relaxed);
	log_warn("%s: ejected for %" PRIu64 " ms (%u consecutive %s; ejection %u)",
		 srv_label(p, (unsigned)idx, who, sizeof(who)), ms, n,
		 reason_name(atomic_load_explicit(&s->eject_reason, memory_order_relaxed)), k);
}

/* Starts a slow start, publishing the low weight at once: the first picks must not see the full one. */
static void ramp_begin(struct lb_pool *p, struct lb_server *s, uint64_t now_ns)
{
	if (!p->cfg->slow_start_ms)
		return;
	atomic_store_explicit(&s->ramp_start_ns, now_ns, memory_order_relaxed);
	atomic_store_explicit(&s->eff_weight, health_eff_weight(s, p->cfg->slow_start_ms, now_ns),
			      memory_order_relaxed);
}

/* Ends an ejection (timer, check pass or operator); true when this call ended it. */
static bool uneject(struct lb_pool *p, unsigned i, uint64_t now_ns)
{
	struct lb_server *s = &p->servers[i];
	bool yes = true;

	if (!atomic_compare_exchange_strong_explicit(&s->ejected, &yes, false, memory_order_acq_rel,
						     memory_order_relaxed))
		return false;
	lb_counter_dec(&p->nejected);
	atomic_store_explicit(&s->fails, 0, memory_order_relaxed);
	atomic_store_explicit(&s->ejected_until_ns, now_ns, memory_order_relaxed);
	ramp_begin(p, s, now_ns);
	return true;
}

/* ---- active check results, weights, upkeep ---------------------------------- */

int health_result(struct lb_pool *p, unsigned i, struct health_track *t, bool ok,
		  const char *detail, uint64_t started_ns, uint64_t now_ns)
{
	const struct cfg_health *hc = &p->cfg->health;
	struct lb_server *s = &p->servers[i];
	bool down = atomic_load_explicit(&s->down, memory_order_relaxed);
	char who[160];

	t->checks++;
	t->failed += !ok;
	t->last_at_ns = now_ns;
	t->last_ok = ok;
	snprintf(t->last, sizeof(t->last), "%s", detail ? detail : "");
	if (!ok) {
		t->ok_streak = 0;
		t->fail_streak++;
		if (!down && t->fail_streak >= hc->fall) {
			atomic_store_explicit(&s->down, true, memory_order_release);
			atomic_store_explicit(&s->ramp_start_ns, 0, memory_order_relaxed);
			log_warn("%s: down (%u failed check%s: %s)", srv_label(p, i, who, sizeof(who)),
				 t->fail_streak, t->fail_streak == 1 ? "" : "s", t->last);
			return -1;
		}
		return 0;
	}
	t->fail_streak = 0;
	t->ok_streak++;
	if (down && t->ok_streak >= hc->rise) {
		/* Recovering while ejected: the check vouches for it, so both end here. */
		if (atomic_load_explicit(&s->ejected, memory_order_relaxed))
			uneject(p, i, now_ns);
		ramp_begin(p, s, now_ns);
		atomic_store_explicit(&s->down, false, memory_order_release);
		log_notice("%s: up (%u passed check%s%s)", srv_label(p, i, who, sizeof(who)),
			   t->ok_streak, t->ok_streak == 1 ? "" : "s",
			   p->cfg->slow_start_ms ? ", slow start" : "");
		return 1;
	}
	/*
	 * A pass re-admits an ejected server before its timer ends, but only a
	 * check that began after the ejection: an older one says nothing about it.
	 */
	if (!down && atomic_load_explicit(&s->ejected, memory_order_acquire) &&
	    started_ns >= atomic_load_explicit(&s->ejected_at_ns, memory_order_relaxed) &&
	    uneject(p, i, now_ns)) {
		log_notice("%s: re-admitted by a passed health check (%s)",
			   srv_label(p, i, who, sizeof(who)), t->last);
		return 1;
	}
	return 0;
}

uint32_t health_eff_weight(const struct lb_server *s, uint64_t slow_start_ms, uint64_t now_ns)
{
	uint32_t base = atomic_load_explicit(&s->weight_rt, memory_order_relaxed);
	uint64_t full, rs, el, span, w;

	if (!base)
		base = s->weight ? s->weight : 1;
	full = (uint64_t)base * LB_WEIGHT_SCALE;
	rs = atomic_load_explicit(&s->ramp_start_ns, memory_order_relaxed);
	if (!slow_start_ms || !rs)
		return (uint32_t)full;
	span = slow_start_ms * NS_PER_MS;
	el = now_ns > rs ? now_ns - rs : 0;
	if (el >= span)
		return (uint32_t)full;
	/* 10% at the start, linear to 100% at the end of slow_start. */
	w = full * 10 / 100 + (full * 90 / 100) * el / span;
	return w ? (uint32_t)w : 1;
}

void health_tick(struct lb_pool *p, uint64_t now_ns)
{
	const struct cfg_upstream *u = p->cfg;
	char who[160];

	for (unsigned i = 0; i < p->nservers; i++) {
		struct lb_server *s = &p->servers[i];
		uint64_t until = atomic_load_explicit(&s->ejected_until_ns, memory_order_acquire);
		uint64_t rs;
		uint32_t w;

		if (atomic_load_explicit(&s->ejected, memory_order_acquire) && now_ns >= until &&
		    uneject(p, i, now_ns))
			log_notice("%s: ejection over, back in rotation%s",
				   srv_label(p, i, who, sizeof(who)), u->slow_start_ms ? " (slow start)" : "");
		/* A server that stayed in for max_ejection starts again from base_ejection. */
		if (!atomic_load_explicit(&s->ejected, memory_order_relaxed) &&
		    atomic_load_explicit(&s->ejections, memory_order_relaxed) && until &&
		    now_ns >= until + u->outlier.max_ejection_ms * NS_PER_MS)
			atomic_store_explicit(&s->ejections, 0, memory_order_relaxed);
		w = health_eff_weight(s, u->slow_start_ms, now_ns);
		if (atomic_load_explicit(&s->eff_weight, memory_order_relaxed) != w)
			atomic_store_explicit(&s->eff_weight, w, memory_order_relaxed);
		rs = atomic_load_explicit(&s->ramp_start_ns, memory_order_relaxed);
		if (rs && now_ns >= rs + u->slow_start_ms * NS_PER_MS)
			atomic_store_explicit(&s->ramp_start_ns, 0, memory_order_relaxed);
	}
}

const char *health_state_name(const struct lb_server *s)
{
	if (atomic_load_explicit(&s->down, memory_order_relaxed))
		return "down";
	if (atomic_load_explicit(&s->ejected, memory_order_relaxed))
		return "ejected";
	if (atomic_load_explicit(&s->draining, memory_order_relaxed))
		return "draining";
	return "up";
}

/* ---- the check thread ----------------------------------------------------------- */

/* Random number for jitter (xorshift64; the thread's own state). */
static uint64_t hc_rand(struct health *h)
{
	h->rng ^= h->rng << 13;
	h->rng ^= h->rng >> 7;
	h->rng ^= h->rng << 17;
	return h->rng;
}

/* interval ± jitter%, in ns. */
static uint64_t hc_interval(struct health *h, const struct cfg_health *hc)
{
	uint64_t base = hc->interval_ms * NS_PER_MS;
	uint64_t span = base * hc->jitter_pct / 100;

	if (!span)
		return base;
	return base - span + hc_rand(h) % (2 * span + 1);
}

static struct io_uring_sqe *hc_sqe(struct health *h)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&h->ring);

	if (!sqe) {
		io_uring_submit(&h->ring);
		sqe = io_uring_get_sqe(&h->ring);
	}
	return sqe;
}

/* Tags sqe with the check and op and links a timeout for what is left of the check's time. */
static void hc_arm(struct hcheck *k, struct io_uring_sqe *sqe, enum hc_op op, uint64_t now)
{
	uint64_t left = k->deadline_ns > now ? k->deadline_ns - now : 1;
	struct io_uring_sqe *t;

	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)k | op);
	sqe->flags |= IOSQE_IO_LINK;
	k->pending++;
	k->ts.tv_sec = (long long)(left / 1000000000ULL);
	k->ts.tv_nsec = (long long)(left % 1000000000ULL);
	t = hc_sqe(k->h);
	io_uring_prep_link_timeout(t, &k->ts, 0);
	io_uring_sqe_set_data64(t, HOP_IGNORE);
}

static void hc_finish(struct hcheck *k, bool ok, const char *detail, uint64_t now)
{
	struct health *h = k->h;

	if (k->fd >= 0)
		close(k->fd);
	k->fd = -1;
	tls_up_free(k->tls);
	k->tls = NULL;
	k->st = HC_IDLE;
	k->next_ns = k->started_ns + hc_interval(h, &k->p->cfg->health);
	if (k->next_ns <= now)
		k->next_ns = now + 1;
	pthread_mutex_lock(&h->lock);
	health_result(k->p, k->idx, &k->t, ok, detail, k->started_ns, now);
	pthread_mutex_unlock(&h->lock);
}

static void hc_fail_errno(struct hcheck *k, const char *step, int res, uint64_t now)
{
	char d[HEALTH_DETAIL_MAX];

	if (res == -ECANCELED || res == -ETIME)
		snprintf(d, sizeof(d), "timeout (%s, %" PRIu64 "ms)", step,
			 k->p->cfg->health.timeout_ms);
	else
		snprintf(d, sizeof(d), "%s: %s", step, strerror(-res));
	hc_finish(k, false, d, now);
}

static void hc_send(struct hcheck *k, uint64_t now)
{
	struct io_uring_sqe *sqe = hc_sqe(k->h);

	k->st = HC_SEND;
	io_uring_prep_send(sqe, k->fd, k->req + k->sent, k->req_len - k->sent, MSG_NOSIGNAL);
	hc_arm(k, sqe, HOP_SEND, now);
}

static void hc_recv(struct hcheck *k, uint64_t now)
{
	struct io_uring_sqe *sqe = hc_sqe(k->h);

	k->st = HC_RECV;
	if (k->tls) {
		size_t len;
		char *p = tls_up_in_space(k->tls, &len); /* ciphertext; hc_tls_recv decrypts into buf */

		io_uring_prep_recv(sqe, k->fd, p, len, 0);
	} else {
		io_uring_prep_recv(sqe, k->fd, k->buf + k->len, k->cap - k->len, 0);
	}
	hc_arm(k, sqe, HOP_RECV, now);
}

static void hc_start(struct hcheck *k, uint64_t now)
{
	const struct cfg_server *srv = &k->p->cfg->servers[k->idx];
	struct io_uring_sqe *sqe;

	k->started_ns = now;
	k->deadline_ns = now + k->p->cfg->health.timeout_ms * NS_PER_MS;
	k->len = k->sent = 0;
	k->fd = socket(srv->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (k->fd < 0) {
		hc_fail_errno(k, "socket", -errno, now);
		return;
	}
	k->st = HC_CONNECT;
	sqe = hc_sqe(k->h);
	io_uring_prep_connect(sqe, k->fd, (const struct sockaddr *)&srv->addr.ss, srv->addr.len);
	hc_arm(k, sqe, HOP_CONNECT, now);
}

static bool status_expected(const struct cfg_health *hc, unsigned st)
{
	for (unsigned i = 0; i < hc->nexpect; i++)
		if (st >= hc->expect[i].lo && st <= hc->expect[i].hi)
			return true;
	return false;
}

/* Judges what has arrived so far; keeps reading when it cannot tell yet. */
static void hc_evaluate(struct hcheck *k, bool eof, uint64_t now)
{
	const struct cfg_health *hc = &k->p->cfg->health;
	struct http1_limits lim = { .request_line = HC_BUF_HEAD, .header_size = HC_BUF_HEAD,
				    .header_count = HTTP1_MAX_HEADERS };
	struct http1_response resp;
	char d[HEALTH_DETAIL_MAX];
	bool head = !strcmp(hc->method, "HEAD");
	int r = http1_parse_response(k->buf, k->len, &lim, head, &resp);
	size_t blen;
	bool done;

	if (r < 0) {
		snprintf(d, sizeof(d), "malformed response: %s", resp.error ? resp.error : "?");
		hc_finish(k, false, d, now);
		return;
	}
	if (r == 0) {
		if (eof || k->len == k->cap || k->len >= HC_BUF_HEAD) {
			hc_finish(k, false, eof ? "closed before a complete response head"
						: "response head too large", now);
			return;
		}
		hc_recv(k, now);
		return;
	}
	if (!status_expected(hc, resp.status)) {
		snprintf(d, sizeof(d), "status %u", resp.status);
		hc_finish(k, false, d, now);
		return;
	}
	snprintf(d, sizeof(d), "status %u", resp.status);
	if (!hc->body_contains) {
		hc_finish(k, true, d, now);
		return;
	}
	blen = k->len - (size_t)r;
	if (memmem(k->buf + r, blen, hc->body_contains, strlen(hc->body_contains))) {
		hc_finish(k, true, d, now);
		return;
	}
	done = eof || k->len == k->cap || resp.body == HTTP1_BODY_NONE ||
	       (resp.body == HTTP1_BODY_LENGTH && blen >= resp.content_length);
	if (!done) {
		hc_recv(k, now);
		return;
	}
	snprintf(d, sizeof(d), "status %u, body lacks \"%.40s\"", resp.status, hc->body_contains);
	hc_finish(k, false, d, now);
}

/* ---- checks of a TLS pool (tls_client.h): handshake on this ring, then request and response encrypted ---- */

/* Sends queued ciphertext; with nothing queued, reads (the handshake's next flight, or the response). */
static void hc_tls_pump(struct hcheck *k, uint64_t now)
{
	struct io_uring_sqe *sqe;
	const char *p;
	size_t n = tls_up_out_next(k->tls, &p);

	if (!n) {
		hc_recv(k, now);
		return;
	}
	k->st = HC_SEND;
	sqe = hc_sqe(k->h);
	io_uring_prep_send(sqe, k->fd, p, n, MSG_NOSIGNAL);
	hc_arm(k, sqe, HOP_SEND, now);
}

static void hc_tls_step(struct hcheck *k, uint64_t now)
{
	char d[HEALTH_DETAIL_MAX];

	if (!tls_up_ready(k->tls)) {
		int r = tls_up_handshake(k->tls);

		if (r == -EPROTO) {
			snprintf(d, sizeof(d), "TLS: %s", tls_up_reason(k->tls));
			hc_finish(k, false, d, now);
			return;
		}
		if (r == 1 && k->p->cfg->health.type == CFG_HEALTH_TCP) {
			hc_finish(k, true, "TLS handshake done", now);
			return;
		}
	}
	if (tls_up_ready(k->tls) && k->sent < k->req_len) {
		if (tls_up_write(k->tls, k->req, k->req_len)) {
			hc_finish(k, false, "TLS: cannot encrypt the request", now);
			return;
		}
		k->sent = k->req_len;
	}
	hc_tls_pump(k, now);
}

static void hc_tls_begin(struct hcheck *k, uint64_t now)
{
	const struct cfg_server *srv = &k->p->cfg->servers[k->idx];

	k->tls = tls_up_new(k->p->cfg->tls->ctx, (const struct sockaddr *)&srv->addr.ss,
			    k->h->snap->server_names[k->p - k->h->snap->pools][k->idx], NULL, TLS_UP_QUIET);
	if (k->tls && srv->sni[0] && tls_up_set_server_name(k->tls, srv->sni)) {
		tls_up_free(k->tls);
		k->tls = NULL;
	}
	if (!k->tls) {
		hc_finish(k, false, "TLS: out of memory", now);
		return;
	}
	hc_tls_step(k, now);
}

static void hc_tls_recv(struct hcheck *k, int res, uint64_t now)
{
	bool ready = tls_up_ready(k->tls);
	ssize_t n;

	if (res < 0 || (res == 0 && !ready)) {
		if (res == 0)
			hc_finish(k, false, "TLS: closed during the handshake", now);
		else
			hc_fail_errno(k, ready ? "response" : "TLS handshake", res, now);
		return;
	}
	if (res == 0) {
		hc_evaluate(k, true, now);
		return;
	}
	tls_up_in_commit(k->tls, (size_t)res);
	if (!ready) {
		hc_tls_step(k, now);
		return;
	}
	n = tls_up_read(k->tls, k->buf + k->len, k->cap - k->len);
	if (n == TLS_UP_WANT) {
		hc_recv(k, now);
		return;
	}
	if (n < 0) {
		hc_finish(k, false, "TLS: bad record from the server", now);
		return;
	}
	k->len += (uint32_t)n;
	hc_evaluate(k, n == 0, now);
}

static void hc_complete(struct hcheck *k, enum hc_op op, int res, uint64_t now)
{
	k->pending--;
	if (k->h->stopping || k->retired)
		return;
	switch (op) {
	case HOP_CONNECT:
		if (res < 0) {
			hc_fail_errno(k, "connect", res, now);
		} else if (k->p->cfg->tls) {
			hc_tls_begin(k, now); /* the check speaks TLS, as the proxy does */
		} else if (k->p->cfg->health.type == CFG_HEALTH_TCP) {
			hc_finish(k, true, "connected", now);
		} else {
			hc_send(k, now);
		}
		return;
	case HOP_SEND:
		if (res < 0) {
			hc_fail_errno(k, "send", res, now);
			return;
		}
		if (k->tls) {
			tls_up_out_sent(k->tls, (size_t)res);
			hc_tls_pump(k, now);
			return;
		}
		k->sent += (uint32_t)res;
		if (k->sent < k->req_len)
			hc_send(k, now);
		else
			hc_recv(k, now);
		return;
	case HOP_RECV:
		if (k->tls) {
			hc_tls_recv(k, res, now);
			return;
		}
		if (res < 0) {
			hc_fail_errno(k, "response", res, now);
			return;
		}
		k->len += (uint32_t)res;
		hc_evaluate(k, res == 0, now);
		return;
	default:
		return;
	}
}

/* ---- following published pools (reload, backends add/remove) ------------------------------- */

static int hc_build_request(struct hcheck *k);

/* Frees the checks of snap's pools (their operations must all have returned). */
static void hc_checks_free(const struct snapshot *snap, struct hcheck **checks)
{
	for (unsigned p = 0; checks && p < snap->cfg->nupstreams; p++) {
		for (unsigned i = 0; checks[p] && i < snap->pools[p].nservers; i++) {
			struct hcheck *k = &checks[p][i];

			if (k->fd >= 0)
				close(k->fd);
			tls_up_free(k->tls);
			free(k->req);
			free(k->buf);
		}
		free(checks[p]);
	}
	free(checks);
}

/*
 * Frees the replaced checks whose operations have all returned; returns how
 * many operations are still out. stopping: also cuts the rest short.
 */
static unsigned hc_old_reap(struct health *h, bool stopping)
{
	struct hc_old **pp = &h->old;
	unsigned total = 0;

	while (*pp) {
		struct hc_old *o = *pp;
		unsigned n = 0;

		for (unsigned p = 0; p < o->snap->cfg->nupstreams; p++)
			for (unsigned i = 0; i < o->snap->pools[p].nservers; i++) {
				struct hcheck *k = &o->checks[p][i];

				n += (unsigned)k->pending;
				if (stopping && k->pending && k->fd >= 0)
					shutdown(k->fd, SHUT_RDWR);
			}
		if (n) {
			total += n;
			pp = &o->next;
			continue;
		}
		*pp = o->next;
		hc_checks_free(o->snap, o->checks);
		snapshot_put(o->snap);
		free(o);
	}
	return total;
}

/*
 * Moves the thread to the pools of h->adopt: new checks for every server,
 * the history, schedule and operator state of servers kept by address, a
 * first check soon for new ones. Checks in flight on the old pools are cut
 * short (their results would land on pools no longer served) and freed when
 * their operations return. The thread's own: no check runs meanwhile.
 */
static void hc_adopt(struct health *h, uint64_t now)
{
	struct snapshot *ns, *os = h->snap;
	struct hcheck **nc = NULL;
	struct hc_old *old = NULL;
	bool put_adopt = false;
	unsigned np = 0;

	pthread_mutex_lock(&h->lock);
	ns = h->adopt;
	if (ns && ns->pools == os->pools) {
		/* A reload that kept the pools: nothing to move. */
		h->adopt = NULL;
		pthread_mutex_unlock(&h->lock);
		snapshot_put(ns);
		return;
	}
	if (ns)
		snapshot_get(ns);
	pthread_mutex_unlock(&h->lock);
	if (!ns)
		return;
	np = ns->cfg->nupstreams;
	nc = calloc(np ? np : 1, sizeof(*nc));
	old = calloc(1, sizeof(*old));
	if (!nc || !old)
		goto nomem;
	for (unsigned p = 0; p < np; p++) {
		struct lb_pool *lp = &ns->pools[p];
		const struct cfg_health *hc = &lp->cfg->health;
		int op = config_upstream_index(os->cfg, lp->cfg->name);

		nc[p] = aligned_alloc(16, sizeof(struct hcheck) * (lp->nservers ? lp->nservers : 1));
		if (!nc[p])
			goto nomem;
		memset(nc[p], 0, sizeof(struct hcheck) * lp->nservers);
		for (unsigned i = 0; i < lp->nservers; i++) {
			struct hcheck *k = &nc[p][i];
			int oi = op >= 0 ? snapshot_server_match(&os->pools[op], lp, i) : -1;
			const struct hcheck *o = oi >= 0 ? &h->checks[op][oi] : NULL;

			k->h = h;
			k->p = lp;
			k->idx = i;
			k->fd = -1;
			if (hc->type == CFG_HEALTH_NONE)
				continue;
			if (hc_build_request(k))
				goto nomem;
			/* A kept server goes on at its own pace; a new one, or one cut short, is checked soon. */
			if (o && o->st == HC_IDLE && o->next_ns &&
			    os->pools[op].cfg->health.type != CFG_HEALTH_NONE)
				k->next_ns = o->next_ns;
			else
				k->next_ns = now + hc_rand(h) % (hc->interval_ms * NS_PER_MS / 10 + 1);
		}
	}
	for (unsigned p = 0; p < os->cfg->nupstreams; p++)
		for (unsigned i = 0; i < os->pools[p].nservers; i++) {
			struct hcheck *k = &h->checks[p][i];

			if (k->pending) {
				k->retired = true;
				if (k->fd >= 0)
					shutdown(k->fd, SHUT_RDWR);
			}
		}
	pthread_mutex_lock(&h->lock);
	/*
	 * The new pools were filled from the old ones when the snapshot was
	 * built; checks and operator commands kept acting on the old ones until
	 * now, so their latest word is copied (the lock holds commands off).
	 */
	for (unsigned p = 0; p < np; p++) {
		struct lb_pool *lp = &ns->pools[p];
		int op = config_upstream_index(os->cfg, lp->cfg->name);

		for (unsigned i = 0; i < lp->nservers; i++) {
			int oi = op >= 0 ? snapshot_server_match(&os->pools[op], lp, i) : -1;
			struct lb_server *d = &lp->servers[i];
			const struct lb_server *s;

			if (oi >= 0) {
				s = &os->pools[op].servers[oi];
				nc[p][i].t = h->checks[op][oi].t;
				atomic_store(&d->down, atomic_load(&s->down));
				atomic_store(&d->draining, atomic_load(&s->draining));
				atomic_store(&d->weight_rt, atomic_load(&s->weight_rt));
				atomic_store(&d->ramp_start_ns, atomic_load(&s->ramp_start_ns));
			}
			/* Nothing would ever bring it up again. */
			if (lp->cfg->health.type == CFG_HEALTH_NONE)
				atomic_store(&d->down, false);
			atomic_store(&d->eff_weight, health_eff_weight(d, lp->cfg->slow_start_ms, now));
		}
	}
	old->snap = os;
	old->checks = h->checks;
	old->next = h->old;
	h->old = old;
	h->snap = ns;
	h->checks = nc;
	if (h->adopt == ns) {
		h->adopt = NULL;
		put_adopt = true;
	}
	pthread_mutex_unlock(&h->lock);
	if (put_adopt)
		snapshot_put(ns); /* h->adopt's reference; h->snap keeps ours */
	log_notice("health: checking the rebuilt pools (%u upstreams)", np);
	return;
nomem:
	log_err("health: out of memory moving to rebuilt pools; checks stay on the previous ones");
	for (unsigned p = 0; nc && p < np; p++) {
		for (unsigned i = 0; nc[p] && i < ns->pools[p].nservers; i++) {
			free(nc[p][i].req);
			free(nc[p][i].buf);
		}
		free(nc[p]);
	}
	free(nc);
	free(old);
	pthread_mutex_lock(&h->lock);
	if (h->adopt == ns) {
		h->adopt = NULL;
		put_adopt = true;
	}
	pthread_mutex_unlock(&h->lock);
	if (put_adopt)
		snapshot_put(ns);
	snapshot_put(ns);
}

void health_adopt(struct health *h, struct snapshot *snap)
{
	struct timespec ts = { 0, 5 * 1000000 };

	if (!h || !snap || !h->running)
		return;
	pthread_mutex_lock(&h->lock);
	if (snap->pools == h->snap->pools && !h->adopt) {
		/* A reload that kept the pools: the thread already checks them. */
		pthread_mutex_unlock(&h->lock);
		return;
	}
	if (h->adopt)
		snapshot_put(h->adopt);
	snapshot_get(snap);
	h->adopt = snap;
	pthread_mutex_unlock(&h->lock);
	/* The thread looks every tick (HEALTH_TICK_MS); a command that follows should see the new pools. */
	for (int i = 0; i < 100; i++) {
		bool done;

		pthread_mutex_lock(&h->lock);
		done = h->adopt != snap;
		pthread_mutex_unlock(&h->lock);
		if (done)
			return;
		nanosleep(&ts, NULL);
	}
	log_warn("health: the check thread has not moved to the new pools within 500 ms; it will");
}

static void *health_main(void *arg)
{
	struct health *h = arg;
	uint64_t next_tick = 0;
	struct io_uring_sqe *sqe;
	unsigned inflight;

	sqe = hc_sqe(h);
	io_uring_prep_read(sqe, h->stop_fd, &h->stop_buf, sizeof(h->stop_buf), 0);
	io_uring_sqe_set_data64(sqe, HOP_STOP);
	while (!h->stopping) {
		struct config *cfg = h->snap->cfg;
		uint64_t now = mono_ns(), wake;
		struct __kernel_timespec ts;
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;

		if (now >= next_tick) {
			for (unsigned p = 0; p < cfg->nupstreams; p++)
				health_tick(&h->snap->pools[p], now);
			next_tick = now + HEALTH_TICK_MS * NS_PER_MS;
		}
		wake = next_tick;
		for (unsigned p = 0; p < cfg->nupstreams; p++) {
			if (cfg->upstreams[p].health.type == CFG_HEALTH_NONE)
				continue;
			for (unsigned i = 0; i < cfg->upstreams[p].nservers; i++) {
				struct hcheck *k = &h->checks[p][i];

				if (k->st == HC_IDLE && now >= k->next_ns)
					hc_start(k, now);
				if (k->st == HC_IDLE && k->next_ns < wake)
					wake = k->next_ns;
			}
		}
		now = mono_ns();
		wake = wake > now ? wake - now : 1000;
		ts.tv_sec = (long long)(wake / 1000000000ULL);
		ts.tv_nsec = (long long)(wake % 1000000000ULL);
		io_uring_submit_and_wait_timeout(&h->ring, &cqe, 1, &ts, NULL);
		now = mono_ns();
		io_uring_for_each_cqe(&h->ring, head, cqe) {
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			enum hc_op op = (enum hc_op)(ud & HOP_MASK);

			seen++;
			if (op == HOP_STOP)
				h->stopping = true;
			else if (op != HOP_IGNORE)
				hc_complete((struct hcheck *)(uintptr_t)(ud & ~HOP_MASK), op, cqe->res, now);
		}
		io_uring_cq_advance(&h->ring, seen);
		/* Pools rebuilt by a reload or backends add/remove: checks follow them (at most a tick late). */
		hc_adopt(h, now);
		hc_old_reap(h, false);
	}
	/*
	 * Operations still in flight point into our buffers: end them (a
	 * shutdown completes a pending connect/recv) and wait until they are back.
	 */
	for (int round = 0; round < 100; round++) {
		struct __kernel_timespec ts = { .tv_nsec = 10000000 };
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;

		inflight = 0;
		for (unsigned p = 0; p < h->snap->cfg->nupstreams; p++)
			for (unsigned i = 0; h->checks[p] && i < h->snap->cfg->upstreams[p].nservers; i++) {
				struct hcheck *k = &h->checks[p][i];

				inflight += (unsigned)k->pending;
				if (k->pending && k->fd >= 0)
					shutdown(k->fd, SHUT_RDWR);
			}
		inflight += hc_old_reap(h, true);
		if (!inflight)
			break;
		io_uring_submit_and_wait_timeout(&h->ring, &cqe, 1, &ts, NULL);
		io_uring_for_each_cqe(&h->ring, head, cqe) {
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			enum hc_op op = (enum hc_op)(ud & HOP_MASK);

			seen++;
			if (op != HOP_IGNORE && op != HOP_STOP)
				hc_complete((struct hcheck *)(uintptr_t)(ud & ~HOP_MASK), op, cqe->res, 0);
		}
		io_uring_cq_advance(&h->ring, seen);
	}
	return NULL;
}

/* The request a check sends: fixed for the life of the snapshot. */
static int hc_build_request(struct hcheck *k)
{
	const struct cfg_upstream *u = k->p->cfg;
	const struct cfg_health *hc = &u->health;
	char a[NET_ADDR_STRLEN];
	int n;

	if (hc->type != CFG_HEALTH_HTTP)
		return 0;
	net_addr_format((const struct sockaddr *)&u->servers[k->idx].addr.ss, a, sizeof(a));
	n = snprintf(NULL, 0,
		     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: openclaw-health/1\r\n"
		     "Accept: */*\r\nConnection: close\r\n\r\n",
		     hc->method, hc->path, hc->host ? hc->host : a);
	k->req = malloc((size_t)n + 1);
	if (!k->req)
		return -ENOMEM;
	snprintf(k->req, (size_t)n + 1,
		 "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: openclaw-health/1\r\n"
		 "Accept: */*\r\nConnection: close\r\n\r\n",
		 hc->method, hc->path, hc->host ? hc->host : a);
	k->req_len = (uint32_t)n;
	k->cap = hc->body_contains ? HC_BUF_BODY : HC_BUF_HEAD;
	k->buf = malloc(k->cap);
	return k->buf ? 0 : -ENOMEM;
}

static void health_free(struct health *h)
{
	const struct config *cfg = h->snap ? h->snap->cfg : NULL;

	for (unsigned p = 0; cfg && h->checks && p < cfg->nupstreams; p++) {
		for (unsigned i = 0; h->checks[p] && i < cfg->upstreams[p].nservers; i++) {
			struct hcheck *k = &h->checks[p][i];

			if (k->fd >= 0)
				close(k->fd);
			tls_up_free(k->tls);
			free(k->req);
			free(k->buf);
		}
		free(h->checks[p]);
	}
	free(h->checks);
	while (h->old) {
		struct hc_old *o = h->old;

		h->old = o->next;
		hc_checks_free(o->snap, o->checks);
		snapshot_put(o->snap);
		free(o);
	}
	if (h->adopt)
		snapshot_put(h->adopt);
	if (h->ring_ok)
		io_uring_queue_exit(&h->ring);
	if (h->stop_fd >= 0)
		close(h->stop_fd);
	if (h->snap)
		snapshot_put(h->snap);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

int health_start(struct health **out, struct snapshot *snap, char *err, size_t errlen)
{
	const struct config *cfg = snap->cfg;
	struct health *h = calloc(1, sizeof(*h));
	uint64_t now = mono_ns();
	int rc;

	*out = NULL;
	if (!h) {
		snprintf(err, errlen, "health: out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&h->lock, NULL);
	h->stop_fd = -1;
	snapshot_get(snap);
	h->snap = snap;
	h->rng = now | 1;
	snprintf(h->state_path, sizeof(h->state_path), "%s/%s", cfg->state_dir, HEALTH_STATE_FILE);
	h->checks = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*h->checks));
	if (!h->checks)
		goto nomem;
	for (unsigned p = 0; p < cfg->nupstreams; p++) {
		const struct cfg_upstream *u = &cfg->upstreams[p];

		h->checks[p] = aligned_alloc(16, sizeof(struct hcheck) * u->nservers);
		if (!h->checks[p])
			goto nomem;
		memset(h->checks[p], 0, sizeof(struct hcheck) * u->nservers);
		for (unsigned i = 0; i < u->nservers; i++) {
			struct hcheck *k = &h->checks[p][i];

			k->h = h;
			k->p = &snap->pools[p];
			k->idx = i;
			k->fd = -1;
			if (u->health.type == CFG_HEALTH_NONE)
				continue;
			if (hc_build_request(k))
				goto nomem;
			/* First checks spread over a tenth of the interval, not all at once. */
			k->next_ns = now + hc_rand(h) % (u->health.interval_ms * NS_PER_MS / 10 + 1);
		}
	}
	health_state_load(h);
	h->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (h->stop_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "health: eventfd: %s", strerror(-rc));
		health_free(h);
		return rc;
	}
	rc = io_uring_queue_init(HC_RING_ENTRIES, &h->ring, 0);
	if (rc < 0) {
		snprintf(err, errlen, "health: io_uring: %s", strerror(-rc));
		health_free(h);
		return rc;
	}
	h->ring_ok = true;
	rc = pthread_create(&h->thread, NULL, health_main, h);
	if (rc) {
		snprintf(err, errlen, "health: thread: %s", strerror(rc));
		health_free(h);
		return -rc;
	}
	h->running = true;
	*out = h;
	return 0;
nomem:
	snprintf(err, errlen, "health: out of memory");
	health_free(h);
	return -ENOMEM;
}

void health_stop(struct health *h)
{
	uint64_t one = 1;

	if (!h)
		return;
	if (h->running) {
		if (write(h->stop_fd, &one, sizeof(one)) != sizeof(one))
			log_warn("health: cannot wake the check thread: %s", strerror(errno));
		pthread_join(h->thread, NULL);
	}
	health_free(h);
}

/* ---- metrics ------------------------------------------------------------------------------ */

static void collect(void *ctx, struct metrics_out *o)
{
	struct health *h = ctx;
	const struct snapshot *sn;
	const struct config *cfg;
	static const char *const states[] = { "up", "down", "ejected", "draining" };

	/* Held throughout: the check thread swaps h->snap and the checks under it (hc_adopt). */
	pthread_mutex_lock(&h->lock);
	sn = h->snap;
	cfg = sn->cfg;

	metrics_family(o, "openclaw_upstream_server_up", "gauge",
		       "1 when the server takes new requests (not down, ejected or draining), else 0.");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned i = 0; i < sn->pools[p].nservers; i++)
			metrics_sample_u64(o, "openclaw_upstream_server_up",
					   (const char *const[]){ "upstream", cfg->upstreams[p].name, "server", sn->server_names[p][i], NULL },
					   strcmp(health_state_name(&sn->pools[p].servers[i]), "up") == 0);
	metrics_family(o, "openclaw_upstream_server_state", "gauge",
		       "The server's state, one series per state: 1 for the current one (down > ejected > draining > up).");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned i = 0; i < sn->pools[p].nservers; i++) {
			const char *cur = health_state_name(&sn->pools[p].servers[i]);

			for (unsigned k = 0; k < sizeof(states) / sizeof(states[0]); k++)
				metrics_sample_u64(o, "openclaw_upstream_server_state",
						   (const char *const[]){ "upstream", cfg->upstreams[p].name, "server", sn->server_names[p][i], "state", states[k], NULL },
						   strcmp(cur, states[k]) == 0);
		}
	metrics_family(o, "openclaw_health_checks_total", "counter",
		       "Active health checks completed, by result (ok, fail).");
	/* The check history is the health thread's, read under its lock (never on the request path). */
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned i = 0; h->checks[p] && i < sn->pools[p].nservers; i++) {
			const struct health_track *t = &h->checks[p][i].t;

			metrics_sample_u64(o, "openclaw_health_checks_total",
					   (const char *const[]){ "upstream", cfg->upstreams[p].name, "server", sn->server_names[p][i], "result", "ok", NULL },
					   t->checks - t->failed);
			metrics_sample_u64(o, "openclaw_health_checks_total",
					   (const char *const[]){ "upstream", cfg->upstreams[p].name, "server", sn->server_names[p][i], "result", "fail", NULL },
					   t->failed);
		}
	metrics_family(o, "openclaw_upstream_ejections_total", "counter",
		       "Passive outlier ejections of the server (live traffic failures).");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned i = 0; i < sn->pools[p].nservers; i++)
			metrics_sample_u64(o, "openclaw_upstream_ejections_total",
					   (const char *const[]){ "upstream", cfg->upstreams[p].name, "server", sn->server_names[p][i], NULL },
					   atomic_load_explicit(&sn->pools[p].servers[i].ejected_total, memory_order_relaxed));
	metrics_family(o, "openclaw_breaker_trips_total", "counter",
		       "Requests refused with 503 by a circuit breaker, by kind; server=\"\" is the pool's own breaker.");
	for (unsigned p = 0; p < cfg->nupstreams; p++) {
		const struct lb_pool *lp = &sn->pools[p];

		for (unsigned t = 0; t < LB_TRIP_N; t++) {
			metrics_sample_u64(o, "openclaw_breaker_trips_total",
					   (const char *const[]){ "upstream", cfg->upstreams[p].name, "server", "", "kind", breaker_trip_name((enum lb_trip)t), NULL },
					   atomic_load_explicit(&lp->trips[t], memory_order_relaxed));
			for (unsigned i = 0; i < lp->nservers; i++)
				metrics_sample_u64(o, "openclaw_breaker_trips_total",
						   (const char *const[]){ "upstream", cfg->upstreams[p].name, "server", sn->server_names[p][i], "kind", breaker_trip_name((enum lb_trip)t), NULL },
						   atomic_load_explicit(&lp->servers[i].trips[t], memory_order_relaxed));
		}
	}
	pthread_mutex_unlock(&h->lock);
}

int health_register_metrics(struct health *h, struct metrics *m)
{
	return h && m ? metrics_register(m, collect, h) : 0;
}
