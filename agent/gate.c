/* agent/gate.c — admission after routing: API keys from an atomically published index, GCRA limits, quotas, key commands. */
#include "gate.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "jsonw.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "parse.h"
#include "ratelimit.h"

#define GATE_TICK_MS 1000      /* reclamation of old indexes */
#define GATE_FLUSH_MS 5000     /* last-used times and quota counters to the store */
#define GATE_RL_SLOTS (1u << 20) /* limiter buckets: 16 MiB, shared by every worker */
#define QUOTA_SHIFT 44         /* quota word: period index << 44 | count */
#define QUOTA_COUNT ((1ull << QUOTA_SHIFT) - 1)
#define AUDIT_FILE "audit.log"
#define DEFAULT_GRACE_MS (24ull * 3600 * 1000)
#define GATE_ROUTE_SLOTS 1024  /* route names with counters, ever (reloads add, never remove) */

/* Long-lived per-key counters: they survive index rebuilds and are flushed to the store. */
struct gate_usage {
	char id[KEYS_ID_LEN + 1];
	_Atomic uint64_t day;       /* UTC day << 44 | requests admitted that day */
	_Atomic uint64_t month;     /* year*12+month << 44 | requests that month */
	_Atomic int64_t last_used;  /* wall seconds; written by workers at most once a second each */
	uint64_t saved_day, saved_month; /* values at the last flush (control side only) */
	int64_t saved_used;
	struct gate_usage *next;
};

/* One key as the request path sees it: immutable once published. */
struct gate_key {
	char id[KEYS_ID_LEN + 1];
	uint8_t hash[KEYS_HASH_LEN];
	uint8_t old_hash[KEYS_HASH_LEN];
	int64_t old_until, expires, revoked; /* wall seconds, 0 = none */
	char tier[KEYS_TIER_MAX + 1];
	bool limited;                /* a rate applies (tier or override) */
	struct rl_limit limit;
	uint64_t quota_day, quota_month; /* 0 = none */
	uint64_t *scopes;            /* hashes of the route names it may call (scope_hash), NULL = every route */
	unsigned nscopes;
	uint64_t bucket;             /* limiter hash of this key's own bucket */
	struct gate_usage *use;
};

/* The published index: open addressing id → key. Never changed after publication. */
struct gate_index {
	struct gate_key *keys;
	unsigned nkeys;
	struct gate_key **slots;
	size_t mask;
	uint64_t *words;             /* every key's scope hashes, back to back */
	size_t nwords;
};

/* An index no longer current, freed once every worker has been seen outside it. */
struct gate_retired {
	struct gate_index *idx;
	uint64_t *seqs;              /* each worker's sequence when it was retired */
	struct gate_retired *next;
};

/* Per-worker critical-section counter: odd while the worker reads the index. */
struct gate_wslot {
	_Atomic uint64_t seq;
} __attribute__((aligned(64)));

/*
 * Admission results for /metrics, per worker and route: written by that
 * worker only (relaxed load + store, no locked instruction), summed at scrape.
 * Kept by route name, so they survive reloads that move, add or drop routes.
 */
enum gate_auth_result {
	GA_OK, GA_MISSING, GA_MALFORMED, GA_UNKNOWN_KEY, GA_WRONG_SECRET, GA_REVOKED, GA_EXPIRED,
	GA_OUT_OF_SCOPE, GA_JWT /* + enum jwt_err */, GA_N = GA_JWT + JWT_ERR_N
};
/* Limit kinds: the key's own tier limit, then enum cfg_limit_key + 1. */
enum { GL_KEY_TIER, GL_IP, GL_API_KEY, GL_HEADER, GL_JWT_CLAIM, GL_N };
enum { GQ_DAY, GQ_MONTH, GQ_N };
#define GATE_MSTATS (GA_N + GL_N + GQ_N) /* counters per route */

/*
 * One route name's counters: open addressing by name hash. Slots are only
 * added (by the control side, under g->lock, before a configuration naming
 * them is published), so workers find them without a lock.
 */
struct gate_rslot {
	_Atomic(char *) name;        /* NULL = free; set last, with release */
	_Atomic uint64_t *st;        /* [worker][GATE_MSTATS], 64-byte aligned */
};

struct gate {
	const struct config *cfg;    /* the served configuration: tiers, routes for commands (cfg_lock) */
	pthread_rwlock_t cfg_lock;   /* commands and scrapes read cfg; gate_reload swaps it */
	struct gate_rslot *rslots;   /* [GATE_ROUTE_SLOTS] per route name counters */
	unsigned nworkers;
	struct gate_wslot *wslots;
	_Atomic(struct gate_index *) cur;
	struct gate_retired *retired;
	struct rl_table rl;
	uint64_t seed;               /* hash seed for limiter buckets and the index */
	struct keystore *ks;         /* NULL when no key store is configured */
	struct gate_usage *usage;    /* every key's counters, control side list */
	pthread_mutex_t lock;        /* store, usage list, publication, audit log */
	pthread_cond_t cond;
	pthread_t thread;
	bool running, stopping;
	int audit_fd;
	char audit_path[512];
};

/* ---- small helpers ------------------------------------------------------------------ */

static int64_t wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return ts.tv_sec;
}

static uint32_t month_of(int64_t sec)
{
	static __thread int64_t cached_day = -1;
	static __thread uint32_t cached_month;
	int64_t day = sec / 86400;

	/* gmtime_r per request would show in profiles; the month changes once a day at most. */
	if (day != cached_day) {
		time_t t = (time_t)sec;
		struct tm tm;

		gmtime_r(&t, &tm);
		cached_month = (uint32_t)((tm.tm_year + 1900) * 12 + tm.tm_mon);
		cached_day = day;
	}
	return cached_month;
}

/* Seconds from sec to the start of the next UTC month. */
static int64_t secs_to_month_end(int64_t sec)
{
	time_t t = (time_t)sec;
	struct tm tm;

	gmtime_r(&t, &tm);
	tm.tm_mday = 1;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_mon += 1;
	return (int64_t)timegm(&tm) - sec;
}

bool gate_header_add(char *buf, size_t cap, const char *name, const char *value, size_t vlen)
{
	size_t len = strlen(buf), nlen = strlen(name);

	for (size_t i = 0; i < vlen; i++)
		if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f)
			return false;
	if (len + nlen + 2 + vlen + 2 + 1 > cap)
		return false;
	memcpy(buf + len, name, nlen);
	memcpy(buf + len + nlen, ": ", 2);
	memcpy(buf + len + nlen + 2, value, vlen);
	memcpy(buf + len + nlen + 2 + vlen, "\r\n", 3);
	return true;
}

static void header_u64(char *buf, size_t cap, const char *name, uint64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%" PRIu64, v);

	gate_header_add(buf, cap, name, num, (size_t)n);
}

bool gate_claim_add(struct gate_verdict *v, const char *name, const char *value, size_t len)
{
	size_t nlen = strlen(name);

	if (v->claims_len + nlen + 1 + len + 1 > sizeof(v->claims) || memchr(value, 0, len))
		return false;
	memcpy(v->claims + v->claims_len, name, nlen + 1);
	memcpy(v->claims + v->claims_len + nlen + 1, value, len);
	v->claims[v->claims_len + nlen + 1 + len] = '\0';
	v->claims_len += nlen + 1 + len + 1;
	return true;
}

const char *gate_claim_get(const struct gate_verdict *v, const char *name)
{
	size_t off = 0;

	while (off < v->claims_len) {
		const char *n = v->claims + off, *val = n + strlen(n) + 1;

		if (!strcmp(n, name))
			return val;
		off = (size_t)(val + strlen(val) + 1 - v->claims);
	}
	return NULL;
}

size_t gate_credential(const struct cfg_auth *a, const struct http1_request *req, const char **out)
{
	const struct http1_header *h;

	*out = NULL;
	switch (a->source) {
	case CFG_CRED_HEADER:
		h = http1_find_header(req->headers, req->nheaders, a->name);
		if (!h)
			return 0;
		*out = h->value;
		return h->value_len;
	case CFG_CRED_BEARER:
		h = http1_find_header(req->headers, req->nheaders, "Authorization");
		if (!h || h->value_len < 7 || !http1_casecmp_eq(h->value, 7, "bearer "))
			return 0;
		{
			const char *p = h->value + 7, *end = h->value + h->value_len;

			while (p < end && *p == ' ')
				p++;
			*out = p;
			return (size_t)(end - p);
		}
	case CFG_CRED_QUERY: {
		const char *p = req->query, *end = req->query + req->query_len;
		size_t nlen = strlen(a->name);

		if (!p)
			return 0;
		while (p < end) {
			const char *amp = memchr(p, '&', (size_t)(end - p));
			const char *stop = amp ? amp : end;

			if ((size_t)(stop - p) > nlen && p[nlen] == '=' && !memcmp(p, a->name, nlen)) {
				*out = p + nlen + 1;
				return (size_t)(stop - *out);
			}
			p = stop + 1;
		}
		return 0;
	}
	}
	return 0;
}

/* ---- the index: build, publish, reclaim ------------------------------------------------ */

static void index_free(struct gate_index *x)
{
	if (!x)
		return;
	free(x->keys);
	free(x->slots);
	free(x->words);
	free(x);
}

static struct gate_usage *usage_find(struct gate *g, const char *id, bool create)
{
	struct gate_usage *u;

	for (u = g->usage; u; u = u->next)
		if (!strcmp(u->id, id))
			return u;
	if (!create)
		return NULL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	snprintf(u->id, sizeof(u->id), "%s", id);
	u->next = g->usage;
	g->usage = u;
	return u;
}

/* The limits a key runs under: its overrides, else its tier's. */
static void key_effective(const struct gate *g, const struct key_record *r, struct gate_key *k)
{
	int ti = config_tier_index(g->cfg, r->tier);
	const struct cfg_tier *t = ti >= 0 ? &g->cfg->tiers[ti] : NULL;
	struct cfg_rate rate = { 0, 0 };
	uint64_t burst = r->burst;

	if (r->rate_count) {
		rate.count = r->rate_count;
		rate.per_ms = r->rate_per_ms;
	} else if (t && t->rate.count) {
		rate = t->rate;
		if (!burst)
			burst = t->burst;
	}
	k->limited = rate.count > 0;
	if (k->limited)
		k->limit = rl_limit_of(&rate, burst);
	k->quota_day = r->has_quota_day ? r->quota_day : t ? t->quota_day : 0;
	k->quota_month = r->has_quota_month ? r->quota_month : t ? t->quota_month : 0;
}

/* A key's own bucket; the limit is part of it, so a changed rate starts a fresh bucket. */
static uint64_t key_bucket(const struct gate *g, const char *id, const struct rl_limit *l)
{
	return rl_hash(g->seed ^ 0x6b6579ull ^ (l->interval_us << 20) ^ l->burst, id, KEYS_ID_LEN);
}

struct build_ctx {
	struct gate *g;
	struct gate_index *x;
	unsigned cap;
	size_t wcap;
	int err;
};

static uint64_t scope_hash(const struct gate *g, const char *route)
{
	return rl_hash(g->seed ^ 0x73636f7065ull, route, strlen(route));
}

static bool scope_allows(const struct gate *g, const struct gate_key *k, const char *route)
{
	uint64_t h = scope_hash(g, route);

	for (unsigned i = 0; i < k->nscopes; i++)
		if (k->scopes[i] == h)
			return true;
	return false;
}

/* The counters slot of route name, or -1 (none yet, or the table is full). Lock-free. */
static int rslot_find(const struct gate *g, const char *name)
{
	size_t h = rl_hash(g->seed ^ 0x72736c6f74ull, name, strlen(name)) & (GATE_ROUTE_SLOTS - 1);

	for (unsigned n = 0; n < GATE_ROUTE_SLOTS; n++, h = (h + 1) & (GATE_ROUTE_SLOTS - 1)) {
		const char *s = atomic_load_explicit(&g->rslots[h].name, memory_order_acquire);

		if (!s)
			return -1;
		if (!strcmp(s, name))
			return (int)h;
	}
	return -1;
}

/* Gives every route of cfg a counters slot (kept when the name had one). Caller holds g->lock. */
static void rslots_add(struct gate *g, const struct config *cfg)
{
	size_t per = (size_t)(g->nworkers ? g->nworkers : 1) * GATE_MSTATS * sizeof(uint64_t);

	for (unsigned i = 0; i < cfg->nroutes; i++) {
		const char *name = cfg->routes[i].name;
		size_t h = rl_hash(g->seed ^ 0x72736c6f74ull, name, strlen(name)) & (GATE_ROUTE_SLOTS - 1);
		unsigned n;

		if (rslot_find(g, name) >= 0)
			continue;
		for (n = 0; n < GATE_ROUTE_SLOTS && atomic_load(&g->rslots[h].name); n++)
			h = (h + 1) & (GATE_ROUTE_SLOTS - 1);
		if (n == GATE_ROUTE_SLOTS) {
			log_warn("gate: more than %u route names since start: route %s has no auth "
				 "and limit counters until a restart", GATE_ROUTE_SLOTS, name);
			continue;
		}
		{
			_Atomic uint64_t *st = aligned_alloc(64, per);
			char *copy = strdup(name);

			if (!st || !copy) {
				free(st);
				free(copy);
				log_warn("gate: out of memory: route %s has no auth and limit counters", name);
				continue;
			}
			memset((void *)st, 0, per);
			g->rslots[h].st = st;
			atomic_store_explicit(&g->rslots[h].name, copy, memory_order_release);
		}
	}
}

static int build_one(void *arg, const struct key_record *r)
{
	struct build_ctx *b = arg;
	struct gate *g = b->g;
	struct gate_index *x = b->x;
	struct gate_key *k;

	if (x->nkeys == b->cap) {
		unsigned ncap = b->cap ? b->cap * 2 : 64;
		struct gate_key *nk = realloc(x->keys, ncap * sizeof(*nk));

		if (!nk)
			return -ENOMEM;
		x->keys = nk;
		b->cap = ncap;
	}
	k = &x->keys[x->nkeys];
	memset(k, 0, sizeof(*k));
	memcpy(k->id, r->id, sizeof(k->id));
	memcpy(k->hash, r->hash, KEYS_HASH_LEN);
	memcpy(k->old_hash, r->old_hash, KEYS_HASH_LEN);
	k->old_until = r->old_until;
	k->expires = r->expires;
	k->revoked = r->revoked;
	snprintf(k->tier, sizeof(k->tier), "%s", r->tier);
	key_effective(g, r, k);
	k->bucket = key_bucket(g, k->id, &k->limit);
	k->use = usage_find(g, r->id, true);
	if (!k->use)
		return -ENOMEM;
	/* Scopes are stored as offsets now and turned into pointers once the array stops moving. */
	k->scopes = NULL;
	if (r->scopes[0]) {
		char buf[KEYS_SCOPES_MAX + 1], *save = NULL;
		size_t first = x->nwords;

		/* By name, not route index: a reload that moves or adds routes keeps scopes right. */
		snprintf(buf, sizeof(buf), "%s", r->scopes);
		for (char *s = strtok_r(buf, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
			if (x->nwords == b->wcap) {
				size_t ncap = b->wcap ? b->wcap * 2 : 64;
				uint64_t *nw = realloc(x->words, ncap * sizeof(*nw));

				if (!nw)
					return -ENOMEM;
				x->words = nw;
				b->wcap = ncap;
			}
			x->words[x->nwords++] = scope_hash(g, s);
		}
		k->nscopes = (unsigned)(x->nwords - first);
		k->scopes = (uint64_t *)(uintptr_t)(1 + first); /* fixed up below */
	}
	x->nkeys++;
	return 0;
}

static int index_build(struct gate *g, struct gate_index **out)
{
	struct gate_index *x = calloc(1, sizeof(*x));
	struct build_ctx b = { .g = g, .x = x };
	size_t n = 16;
	int rc;

	if (!x)
		return -ENOMEM;
	rc = keys_each(g->ks, build_one, &b);
	if (rc) {
		index_free(x);
		return rc;
	}
	while (n < (size_t)x->nkeys * 2)
		n <<= 1;
	x->slots = calloc(n, sizeof(*x->slots));
	if (!x->slots) {
		index_free(x);
		return -ENOMEM;
	}
	x->mask = n - 1;
	for (unsigned i = 0; i < x->nkeys; i++) {
		struct gate_key *k = &x->keys[i];
		size_t h = rl_hash(g->seed, k->id, KEYS_ID_LEN) & x->mask;

		if (k->scopes)
			k->scopes = &x->words[(size_t)(uintptr_t)k->scopes - 1];
		while (x->slots[h])
			h = (h + 1) & x->mask;
		x->slots[h] = k;
	}
	*out = x;
	return 0;
}

static const struct gate_key *index_find(const struct gate *g, const struct gate_index *x,
					 const char *id)
{
	size_t h;

	if (!x || !x->nkeys)
		return NULL;
	h = rl_hash(g->seed, id, KEYS_ID_LEN) & x->mask;
	while (x->slots[h]) {
		if (!memcmp(x->slots[h]->id, id, KEYS_ID_LEN))
			return x->slots[h];
		h = (h + 1) & x->mask;
	}
	return NULL;
}

/* Frees retired indexes that no worker can still be reading. Caller holds g->lock. */
static void reclaim(struct gate *g)
{
	struct gate_retired **pp = &g->retired;

	while (*pp) {
		struct gate_retired *r = *pp;
		bool busy = false;

		for (unsigned i = 0; i < g->nworkers && !busy; i++) {
			uint64_t s = atomic_load(&g->wslots[i].seq);

			/* Odd and unchanged: that worker entered before the swap and is still inside. */
			busy = (r->seqs[i] & 1) && s == r->seqs[i];
		}
		if (busy) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		index_free(r->idx);
		free(r->seqs);
		free(r);
	}
}

/* Rebuilds the index from the store and swaps it in. Caller holds g->lock. */
static int republish(struct gate *g)
{
	struct gate_index *x, *old;
	struct gate_retired *r;
	int rc = index_build(g, &x);

	if (rc)
		return rc;
	r = calloc(1, sizeof(*r));
	if (r)
		r->seqs = calloc(g->nworkers ? g->nworkers : 1, sizeof(*r->seqs));
	if (!r || !r->seqs) {
		free(r);
		index_free(x);
		return -ENOMEM;
	}
	/* seq_cst swap then seq_cst loads of the workers' counters: pairs with gate_enter. */
	old = atomic_exchange(&g->cur, x);
	for (unsigned i = 0; i < g->nworkers; i++)
		r->seqs[i] = atomic_load(&g->wslots[i].seq);
	r->idx = old;
	r->next = g->retired;
	g->retired = r;
	reclaim(g);
	return 0;
}

static inline struct gate_index *gate_enter(struct gate *g, unsigned worker, uint64_t *seq)
{
	struct gate_wslot *ws = &g->wslots[worker];

	*seq = atomic_load_explicit(&ws->seq, memory_order_relaxed);
	atomic_store(&ws->seq, *seq + 1); /* seq_cst: ordered before the pointer load */
	return atomic_load(&g->cur);
}

static inline void gate_leave(struct gate *g, unsigned worker, uint64_t seq)
{
	atomic_store_explicit(&g->wslots[worker].seq, seq + 2, memory_order_release);
}

/* ---- quotas ------------------------------------------------------------------------------- */

/* Counts one request in period idx; false (nothing counted) when quota is reached. */
static bool quota_take(_Atomic uint64_t *word, uint64_t idx, uint64_t quota)
{
	uint64_t w = atomic_load_explicit(word, memory_order_relaxed), nw;

	do {
		if ((w >> QUOTA_SHIFT) != idx)
			nw = idx << QUOTA_SHIFT | 1;
		else if ((w & QUOTA_COUNT) >= quota)
			return false;
		else
			nw = w + 1;
	} while (!atomic_compare_exchange_weak_explicit(word, &w, nw, memory_order_relaxed,
							memory_order_relaxed));
	return true;
}

static void quota_give_back(_Atomic uint64_t *word, uint64_t idx)
{
	uint64_t w = atomic_load_explicit(word, memory_order_relaxed);

	while ((w >> QUOTA_SHIFT) == idx && (w & QUOTA_COUNT) &&
	       !atomic_compare_exchange_weak_explicit(word, &w, w - 1, memory_order_relaxed,
						      memory_order_relaxed))
		;
}

static uint64_t quota_used(const _Atomic uint64_t *word, uint64_t idx)
{
	uint64_t w = atomic_load_explicit(word, memory_order_relaxed);

	return (w >> QUOTA_SHIFT) == idx ? (w & QUOTA_COUNT) : 0;
}

/* ---- the admission hook ------------------------------------------------------------------- */

/* Only worker `worker` writes its counters: a relaxed load + store is enough, and takes no lock. */
static inline void mstat_bump(_Atomic uint64_t *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

static void verdict_reset(struct gate_verdict *v)
{
	v->status = 0;
	v->error = NULL;
	v->strip_header = NULL;
	v->strip_query = NULL;
	v->key_id[0] = '\0';
	v->tier = NULL;
	v->up_headers[0] = '\0';
	v->resp_headers[0] = '\0';
	v->claims_len = 0;
}

static int deny_auth(struct gate_verdict *v, const struct cfg_route *r, int status,
		     const char *why, bool presented)
{
	char val[256];
	int n;

	v->status = status;
	v->error = why;
	if (status != 401)
		return status;
	if (r->auth.source == CFG_CRED_BEARER)
		n = snprintf(val, sizeof(val), "Bearer realm=\"%s\"%s", r->name,
			     presented ? ", error=\"invalid_token\"" : "");
	else
		n = snprintf(val, sizeof(val), "ApiKey realm=\"%s\", in=\"%s\", name=\"%s\"", r->name,
			     r->auth.source == CFG_CRED_QUERY ? "query" : "header", r->auth.name);
	gate_header_add(v->resp_headers, sizeof(v->resp_headers), "WWW-Authenticate", val,
			(size_t)n);
	return status;
}

static bool limit_same(const struct cfg_rate_limit *a, const struct cfg_rate_limit *b)
{
	struct rl_limit x = rl_limit_of(&a->rate, a->burst), y = rl_limit_of(&b->rate, b->burst);

	return a->key == b->key && x.interval_us == y.interval_us && x.burst == y.burst &&
	       a->v6_prefix == b->v6_prefix && !strcmp(a->name ? a->name : "", b->name ? b->name : "");
}

/*
 * The bucket family of limit li of route rt: its route's name, key kind and
 * name, interval, burst and v6 prefix (and which of identical limits it is),
 * never indexes. So a reload keeps the buckets of every limit it left alone,
 * wherever the route moved, and a changed limit starts with fresh buckets.
 */
static uint64_t limit_seed(const struct gate *g, const struct cfg_route *rt, unsigned li)
{
	const struct cfg_rate_limit *l = &rt->rate_limits[li];
	struct rl_limit lim = rl_limit_of(&l->rate, l->burst);
	uint64_t v[5] = { lim.interval_us, lim.burst, l->v6_prefix, (uint64_t)l->key, 0 };
	uint64_t s = rl_hash(g->seed ^ 0x6c696d6974ull, rt->name, strlen(rt->name));

	for (unsigned j = 0; j < li; j++)
		v[4] += limit_same(&rt->rate_limits[j], l);
	if (l->name)
		s = rl_hash(s, l->name, strlen(l->name));
	return rl_hash(s, v, sizeof(v));
}

/* Bucket hash of limit li of route rt for this request; false when the limit does not apply. */
static bool limit_bucket(const struct gate *g, const struct cfg_route *rt, unsigned li,
			 const struct cfg_rate_limit *l, const struct http1_request *req,
			 const struct sockaddr *peer, const struct gate_verdict *v, uint64_t *out)
{
	uint64_t seed = limit_seed(g, rt, li);
	uint8_t a[16];
	const struct http1_header *h;
	const char *s;

	switch (l->key) {
	case CFG_LIMIT_IP:
		if (peer->sa_family == AF_INET) {
			memcpy(a, &((const struct sockaddr_in *)peer)->sin_addr, 4);
			*out = rl_hash(seed, a, 4);
			return true;
		}
		if (peer->sa_family == AF_INET6) {
			const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)peer;

			if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
				*out = rl_hash(seed, &s6->sin6_addr.s6_addr[12], 4);
				return true;
			}
			memcpy(a, &s6->sin6_addr, 16);
			for (unsigned bit = l->v6_prefix; bit < 128; bit++)
				a[bit / 8] &= (uint8_t)~(0x80 >> (bit % 8));
			*out = rl_hash(seed ^ 6, a, 16);
			return true;
		}
		return false;
	case CFG_LIMIT_API_KEY:
		if (!v->key_id[0])
			return false;
		*out = rl_hash(seed, v->key_id, KEYS_ID_LEN);
		return true;
	case CFG_LIMIT_HEADER:
		h = http1_find_header(req->headers, req->nheaders, l->name);
		*out = h ? rl_hash(seed, h->value, h->value_len) : rl_hash(seed ^ 1, "", 0);
		return true;
	case CFG_LIMIT_JWT_CLAIM:
		s = gate_claim_get(v, l->name);
		*out = s ? rl_hash(seed, s, strlen(s)) : rl_hash(seed ^ 1, "", 0);
		return true;
	}
	return false;
}

/* Keeps the most restrictive result for the RateLimit-* headers. */
static void keep_tightest(struct rl_result *best, bool *have, const struct rl_result *r)
{
	if (!*have || r->remaining < best->remaining ||
	    (r->remaining == best->remaining && r->reset_us > best->reset_us)) {
		*best = *r;
		*have = true;
	}
}

static void ratelimit_headers(struct gate_verdict *v, const struct rl_result *r)
{
	header_u64(v->resp_headers, sizeof(v->resp_headers), "RateLimit-Limit", r->limit);
	header_u64(v->resp_headers, sizeof(v->resp_headers), "RateLimit-Remaining", r->remaining);
	header_u64(v->resp_headers, sizeof(v->resp_headers), "RateLimit-Reset",
		   (r->reset_us + 999999) / 1000000);
}

static int deny_limit(struct gate_verdict *v, const struct rl_result *r, uint64_t retry_s,
		      const char *why)
{
	v->status = 429;
	v->error = why;
	/* Retry-After is whole seconds (RFC 9110): round up so a retry on time succeeds. */
	header_u64(v->resp_headers, sizeof(v->resp_headers), "Retry-After", retry_s ? retry_s : 1);
	if (r)
		ratelimit_headers(v, r);
	return 429;
}

/* Checks an api_key credential against the index; fills v on success, returns 0 or the denial. */
static int check_api_key(struct gate *g, const struct gate_index *x, const struct cfg_route *r,
			 unsigned ri, const struct http1_request *req, struct gate_verdict *v,
			 int64_t now_s, const struct gate_key **kout, unsigned *why)
{
	char id[KEYS_ID_LEN + 1];
	uint8_t secret[KEYS_SECRET_BYTES], hash[KEYS_HASH_LEN];
	const struct gate_key *k;
	const char *cred;
	size_t len = gate_credential(&r->auth, req, &cred);
	bool ok;

	/* Whatever happens next, the credential does not travel upstream. */
	if (r->auth.source == CFG_CRED_QUERY)
		v->strip_query = r->auth.name;
	else
		v->strip_header = r->auth.source == CFG_CRED_BEARER ? "Authorization" : r->auth.name;
	if (!len)
		return *why = GA_MISSING, deny_auth(v, r, 401, "auth: no API key", false);
	if (keys_parse(cred, len, id, secret))
		return *why = GA_MALFORMED, deny_auth(v, r, 401, "auth: malformed API key", true);
	k = index_find(g, x, id);
	keys_hash(secret, hash);
	memset(secret, 0, sizeof(secret));
	if (!k)
		return *why = GA_UNKNOWN_KEY, deny_auth(v, r, 401, "auth: unknown API key", true);
	ok = keys_hash_eq(hash, k->hash);
	if (!ok && k->old_until && now_s < k->old_until)
		ok = keys_hash_eq(hash, k->old_hash);
	if (!ok)
		return *why = GA_WRONG_SECRET, deny_auth(v, r, 401, "auth: wrong secret for key", true);
	if (k->revoked && now_s >= k->revoked)
		return *why = GA_REVOKED, deny_auth(v, r, 401, "auth: key revoked", true);
	if (k->expires && now_s >= k->expires)
		return *why = GA_EXPIRED, deny_auth(v, r, 401, "auth: key expired", true);
	memcpy(v->key_id, k->id, sizeof(v->key_id));
	v->tier = k->tier;
	if (k->scopes && !scope_allows(g, k, r->name))
		return *why = GA_OUT_OF_SCOPE, deny_auth(v, r, 403, "auth: route outside the key's scopes", true);
	*kout = k;
	return 0;
}

/* Claim headers always fit (jwt_check sizes them), so a client can never supply one itself. */
_Static_assert(GATE_UP_HEADERS_MAX >= JWT_HEADERS_BUDGET, "claim headers must fit up_headers");

/*
 * Validates a jwt route's token (agent/jwt.h); on success adds its claim
 * headers upstream and its wanted claims for jwt_claim limits. Returns 0 or
 * the denial: 401 with WWW-Authenticate, the reason code in v->error.
 */
static int check_jwt(const struct cfg_route *r, const struct http1_request *req,
		     struct gate_verdict *v, unsigned *why)
{
	struct jwt_result res;
	char chal[128];
	enum jwt_err e;
	int n;

	/* Whatever happens next, the token does not travel upstream unless the route says so. */
	if (!jwt_policy(r->auth.jwt)->forward_token)
		v->strip_header = jwt_token_header(r->auth.jwt);
	e = jwt_authenticate(r->auth.jwt, req, &res);
	*why = GA_JWT + (unsigned)e;
	if (e) {
		v->status = jwt_err_status(e);
		v->error = jwt_err_log(e);
		n = jwt_www_authenticate(e, chal, sizeof(chal));
		if (n > 0)
			gate_header_add(v->resp_headers, sizeof(v->resp_headers), "WWW-Authenticate",
					chal, (size_t)n);
		return v->status;
	}
	for (unsigned i = 0; i < res.nheaders; i++)
		if (!gate_header_add(v->up_headers, sizeof(v->up_headers), res.headers[i].name,
				     res.headers[i].value, res.headers[i].value_len)) {
			v->status = 500;
			v->error = "auth: jwt claim headers do not fit";
			*why = GA_JWT + JWT_ERR_INTERNAL;
			return 500;
		}
	/* A claim that does not fit leaves its limit on the shared "absent" bucket: stricter, not looser. */
	for (unsigned i = 0; i < res.nclaims; i++)
		gate_claim_add(v, res.claims[i].name, res.claims[i].value, res.claims[i].value_len);
	return 0;
}

int gate_check(struct gate *g, unsigned worker, const struct config *cfg, int route,
	       const struct http1_request *req, const struct sockaddr *peer, uint64_t now_ns,
	       struct gate_verdict *v)
{
	const struct cfg_route *r;
	const struct gate_key *k = NULL;
	struct gate_index *x = NULL;
	struct rl_result res, best = { 0 };
	bool have = false;
	uint64_t now_us = now_ns / 1000, seq = 0;
	int64_t now_s;
	unsigned why = GA_N, stat = GATE_MSTATS; /* auth result, then the refusing limit */
	int rc = 0, slot;

	verdict_reset(v);
	if (route < 0 || (unsigned)route >= cfg->nroutes)
		return 0;
	r = &cfg->routes[route];
	if (r->auth.type == CFG_AUTH_NONE && !r->nrate_limits)
		return 0;
	if (!g) {
		v->status = 503;
		v->error = "admission not ready";
		return 503;
	}
	now_s = wall_now();
	if (r->auth.type == CFG_AUTH_API_KEY) {
		x = gate_enter(g, worker, &seq);
		rc = check_api_key(g, x, r, (unsigned)route, req, v, now_s, &k, &why);
		if (rc)
			goto out;
		why = GA_OK;
	} else if (r->auth.type == CFG_AUTH_JWT) {
		rc = check_jwt(r, req, v, &why);
		if (rc)
			goto out;
		why = GA_OK;
	}

	/* The key's own limit (tier or override): one bucket per key across routes. */
	if (k && k->limited) {
		rl_acquire(&g->rl, k->bucket, &k->limit, now_us, &res);
		keep_tightest(&best, &have, &res);
		if (!res.allowed) {
			rc = deny_limit(v, &res, (res.retry_after_us + 999999) / 1000000,
					"limit: key rate over its tier");
			stat = GA_N + GL_KEY_TIER;
			goto out;
		}
	}
	for (unsigned i = 0; i < r->nrate_limits; i++) {
		const struct cfg_rate_limit *l = &r->rate_limits[i];
		struct rl_limit lim = rl_limit_of(&l->rate, l->burst);
		uint64_t h;

		if (!limit_bucket(g, r, i, l, req, peer, v, &h))
			continue;
		rl_acquire(&g->rl, h, &lim, now_us, &res);
		keep_tightest(&best, &have, &res);
		if (!res.allowed) {
			rc = deny_limit(v, &res, (res.retry_after_us + 999999) / 1000000,
					"limit: route rate limit");
			stat = GA_N + GL_IP + (unsigned)l->key;
			goto out;
		}
	}
	if (k && (k->quota_day || k->quota_month)) {
		uint64_t day = (uint64_t)now_s / 86400, month = month_of(now_s);

		if (k->quota_day && !quota_take(&k->use->day, day, k->quota_day)) {
			rc = deny_limit(v, NULL, (uint64_t)(86400 - now_s % 86400),
					"quota: daily quota used up");
			stat = GA_N + GL_N + GQ_DAY;
			goto out;
		}
		if (k->quota_month && !quota_take(&k->use->month, month, k->quota_month)) {
			if (k->quota_day)
				quota_give_back(&k->use->day, day);
			rc = deny_limit(v, NULL, (uint64_t)secs_to_month_end(now_s),
					"quota: monthly quota used up");
			stat = GA_N + GL_N + GQ_MONTH;
			goto out;
		}
	}
	if (k) {
		/* Off the request path: a relaxed store, at most once a second per worker. */
		if (atomic_load_explicit(&k->use->last_used, memory_order_relaxed) != now_s)
			atomic_store_explicit(&k->use->last_used, now_s, memory_order_relaxed);
		if (r->auth.hdr_key_id)
			gate_header_add(v->up_headers, sizeof(v->up_headers), r->auth.hdr_key_id,
					k->id, KEYS_ID_LEN);
		if (r->auth.hdr_tier)
			gate_header_add(v->up_headers, sizeof(v->up_headers), r->auth.hdr_tier,
					k->tier, strlen(k->tier));
	}
	if (have && r->rate_limit_headers)
		ratelimit_headers(v, &best);
out:
	if (worker < g->nworkers && (slot = rslot_find(g, r->name)) >= 0) {
		_Atomic uint64_t *ms = g->rslots[slot].st + (size_t)worker * GATE_MSTATS;

		if (why < GA_N)
			mstat_bump(&ms[why]);
		if (stat < GATE_MSTATS)
			mstat_bump(&ms[stat]);
	}
	if (x)
		gate_leave(g, worker, seq);
	/* The tier string lives in the index, which may go away once we left it. */
	if (x)
		v->tier = NULL;
	return rc;
}

/* ---- flushing and the maintenance thread --------------------------------------------------- */

/* Writes changed last-used times and quota counters. Caller holds g->lock. */
static void flush(struct gate *g)
{
	size_t n = 0, cap = 0, nt = 0;
	struct key_usage_row *rows = NULL;
	const char **ids = NULL;
	int64_t *when = NULL;

	if (!g->ks)
		return;
	for (struct gate_usage *u = g->usage; u; u = u->next)
		cap++;
	if (!cap)
		return;
	rows = calloc(cap, sizeof(*rows));
	ids = calloc(cap, sizeof(*ids));
	when = calloc(cap, sizeof(*when));
	if (!rows || !ids || !when)
		goto out;
	for (struct gate_usage *u = g->usage; u; u = u->next) {
		uint64_t d = atomic_load(&u->day), m = atomic_load(&u->month);
		int64_t used = atomic_load(&u->last_used);

		if (d != u->saved_day || m != u->saved_month) {
			struct key_usage_row *row = &rows[n++];

			snprintf(row->id, sizeof(row->id), "%s", u->id);
			row->day = (uint32_t)(d >> QUOTA_SHIFT);
			row->day_count = d & QUOTA_COUNT;
			row->month = (uint32_t)(m >> QUOTA_SHIFT);
			row->month_count = m & QUOTA_COUNT;
			u->saved_day = d;
			u->saved_month = m;
		}
		if (used != u->saved_used) {
			ids[nt] = u->id;
			when[nt++] = used;
			u->saved_used = used;
		}
	}
	if (keys_usage_save(g->ks, rows, n))
		log_warn("key store: cannot save quota counters");
	if (keys_touch(g->ks, ids, when, nt))
		log_warn("key store: cannot save last-used times");
out:
	free(rows);
	free(ids);
	free(when);
}

static void *gate_main(void *arg)
{
	struct gate *g = arg;
	uint64_t since_flush = 0;

	pthread_mutex_lock(&g->lock);
	while (!g->stopping) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += GATE_TICK_MS / 1000;
		pthread_cond_timedwait(&g->cond, &g->lock, &ts);
		if (g->stopping)
			break;
		reclaim(g);
		since_flush += GATE_TICK_MS;
		if (since_flush >= GATE_FLUSH_MS) {
			flush(g);
			since_flush = 0;
		}
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

static int load_usage(void *arg, const struct key_usage_row *row)
{
	struct gate *g = arg;
	struct gate_usage *u = usage_find(g, row->id, true);

	if (!u)
		return -ENOMEM;
	atomic_store(&u->day, (uint64_t)row->day << QUOTA_SHIFT | (row->day_count & QUOTA_COUNT));
	atomic_store(&u->month,
		     (uint64_t)row->month << QUOTA_SHIFT | (row->month_count & QUOTA_COUNT));
	u->saved_day = atomic_load(&u->day);
	u->saved_month = atomic_load(&u->month);
	return 0;
}

static bool gate_needed(const struct config *cfg, bool *store)
{
	bool any = cfg->ntiers > 0;

	*store = cfg->ntiers > 0;
	for (unsigned i = 0; i < cfg->nroutes; i++) {
		if (cfg->routes[i].auth.type == CFG_AUTH_API_KEY)
			*store = true;
		if (cfg->routes[i].auth.type != CFG_AUTH_NONE || cfg->routes[i].nrate_limits)
			any = true;
	}
	return any;
}

/*
 * Opens the key store in cfg's state_dir, loads the quota counters and
 * publishes the first index. Caller holds g->lock, or runs before the gate is
 * shared. On failure nothing is left open.
 */
static int store_open(struct gate *g, const struct config *cfg, char *err, size_t errlen)
{
	int rc;

	if (mkdir(cfg->state_dir, 0750) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "state_dir %s: %s", cfg->state_dir, strerror(-rc));
		return rc;
	}
	if ((rc = keys_open(cfg->state_dir, &g->ks, err, errlen)))
		return rc;
	if ((rc = keys_usage_load(g->ks, load_usage, g))) {
		snprintf(err, errlen, "%s/%s: cannot read quota counters", cfg->state_dir, KEYS_DB_FILE);
		goto fail;
	}
	if ((rc = republish(g))) {
		snprintf(err, errlen, "%s/%s: cannot read keys: %s", cfg->state_dir, KEYS_DB_FILE,
			 strerror(-rc));
		goto fail;
	}
	snprintf(g->audit_path, sizeof(g->audit_path), "%s/%s", cfg->state_dir, AUDIT_FILE);
	g->audit_fd = open(g->audit_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (g->audit_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", g->audit_path, strerror(-rc));
		goto fail;
	}
	return 0;
fail:
	keys_close(g->ks);
	g->ks = NULL;
	return rc;
}

static void gate_free(struct gate *g)
{
	struct gate_index *x = atomic_load(&g->cur);

	index_free(x);
	while (g->retired) {
		struct gate_retired *r = g->retired;

		g->retired = r->next;
		index_free(r->idx);
		free(r->seqs);
		free(r);
	}
	while (g->usage) {
		struct gate_usage *u = g->usage;

		g->usage = u->next;
		free(u);
	}
	keys_close(g->ks);
	rl_free(&g->rl);
	if (g->audit_fd >= 0)
		close(g->audit_fd);
	free(g->wslots);
	for (unsigned i = 0; g->rslots && i < GATE_ROUTE_SLOTS; i++) {
		free(atomic_load(&g->rslots[i].name));
		free((void *)g->rslots[i].st);
	}
	free(g->rslots);
	pthread_rwlock_destroy(&g->cfg_lock);
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cond);
	free(g);
}

int gate_start(struct gate **out, const struct config *cfg, unsigned nworkers, char *err,
	       size_t errlen)
{
	pthread_condattr_t ca;
	struct gate *g;
	bool store = false;
	int rc;

	*out = NULL;
	/* Made even when nothing needs it yet, so a reload can turn auth and limits on. */
	gate_needed(cfg, &store);
	g = calloc(1, sizeof(*g));
	if (!g) {
		snprintf(err, errlen, "gate: out of memory");
		return -ENOMEM;
	}
	g->cfg = cfg;
	g->audit_fd = -1;
	g->nworkers = nworkers;
	pthread_mutex_init(&g->lock, NULL);
	pthread_rwlock_init(&g->cfg_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cond, &ca);
	pthread_condattr_destroy(&ca);
	g->wslots = aligned_alloc(64, sizeof(*g->wslots) * (nworkers ? nworkers : 1));
	g->rslots = calloc(GATE_ROUTE_SLOTS, sizeof(*g->rslots));
	if (!g->wslots || !g->rslots || rl_init(&g->rl, GATE_RL_SLOTS)) {
		snprintf(err, errlen, "gate: out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	memset(g->wslots, 0, sizeof(*g->wslots) * (nworkers ? nworkers : 1));
	if (getrandom(&g->seed, sizeof(g->seed), 0) != (ssize_t)sizeof(g->seed)) {
		snprintf(err, errlen, "gate: getrandom failed");
		rc = -EIO;
		goto fail;
	}
	rslots_add(g, cfg);
	if (store && (rc = store_open(g, cfg, err, errlen)))
		goto fail;
	rc = -pthread_create(&g->thread, NULL, gate_main, g);
	if (rc) {
		snprintf(err, errlen, "gate: thread: %s", strerror(-rc));
		goto fail;
	}
	g->running = true;
	if (g->ks) {
		struct gate_index *x = atomic_load(&g->cur);

		log_notice("key store %s/%s: %u keys", cfg->state_dir, KEYS_DB_FILE,
			   x ? x->nkeys : 0);
	}
	*out = g;
	return 0;
fail:
	gate_free(g);
	return rc;
}

int gate_reload(struct gate *g, const struct config *cfg, char *err, size_t errlen)
{
	bool store = false, opened = false;
	int rc = 0;

	gate_needed(cfg, &store);
	pthread_rwlock_wrlock(&g->cfg_lock);
	pthread_mutex_lock(&g->lock);
	if (store && !g->ks) {
		/* The first api_key route or tier: the store opens now (state_dir cannot change live). */
		if ((rc = store_open(g, cfg, err, errlen))) {
			pthread_mutex_unlock(&g->lock);
			pthread_rwlock_unlock(&g->cfg_lock);
			return rc;
		}
		opened = true;
	}
	rslots_add(g, cfg);
	g->cfg = cfg;
	/* Tiers may have changed: every key's limits are worked out again (buckets with them). */
	if (g->ks && !opened && (rc = republish(g)))
		log_warn("gate: reload: cannot rebuild the key index (%s): keys keep their old tier "
			 "limits until the next key change", strerror(-rc));
	pthread_mutex_unlock(&g->lock);
	pthread_rwlock_unlock(&g->cfg_lock);
	if (opened) {
		struct gate_index *x = atomic_load(&g->cur);

		log_notice("key store %s/%s: %u keys", cfg->state_dir, KEYS_DB_FILE, x ? x->nkeys : 0);
	}
	return 0;
}

void gate_stop(struct gate *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->stopping = true;
	pthread_cond_signal(&g->cond);
	pthread_mutex_unlock(&g->lock);
	if (g->running)
		pthread_join(g->thread, NULL);
	pthread_mutex_lock(&g->lock);
	flush(g);
	pthread_mutex_unlock(&g->lock);
	gate_free(g);
}

/* ---- control commands (control thread) ------------------------------------------------------ */

static void iso_time(int64_t sec, char *buf, size_t len)
{
	time_t t = (time_t)sec;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void json_time(struct jsonw *w, const char *key, int64_t sec)
{
	char buf[32];

	if (!sec) {
		jsonw_null(w, key);
		return;
	}
	iso_time(sec, buf, sizeof(buf));
	jsonw_str(w, key, buf);
}

/* One JSON line per management action: time, uid, action, key id and what changed; never a secret. */
static void audit(struct gate *g, const struct control_req *req, const char *action,
		  const char *id, const char *detail_key, const char *detail)
{
	char buf[1024], when[32];
	struct jsonw w;
	long n;

	if (g->audit_fd < 0)
		return;
	iso_time(wall_now(), when, sizeof(when));
	jsonw_init(&w, buf, sizeof(buf) - 1);
	jsonw_obj_begin(&w);
	jsonw_str(&w, "time", when);
	jsonw_u64(&w, "uid", (uint64_t)req->uid);
	jsonw_i64(&w, "pid", (int64_t)req->pid);
	jsonw_str(&w, "action", action);
	jsonw_str(&w, "key", id);
	if (detail_key && detail)
		jsonw_str(&w, detail_key, detail);
	jsonw_obj_end(&w);
	n = jsonw_finish(&w);
	if (n < 0)
		return;
	buf[n] = '\n';
	if (write(g->audit_fd, buf, (size_t)n + 1) != n + 1)
		log_warn("%s: audit write failed: %s", g->audit_path, strerror(errno));
}

static int need_store(struct gate *g, char *err, size_t errlen)
{
	if (g && g->ks)
		return 0;
	snprintf(err, errlen, "the key store is off: define tiers or a route with auth: api_key");
	return -ENOTSUP;
}

/* scopes: a list of route names or one comma-separated string; each must name a route. */
static int read_scopes(struct gate *g, const struct control_req *req, char *out, size_t cap,
		       bool *given, char *err, size_t errlen)
{
	const struct jsonr_node *n = jsonr_get(req->j, req->args, "scopes");
	char buf[KEYS_SCOPES_MAX + 1], *save = NULL;
	size_t len = 0;

	*given = n != NULL;
	out[0] = '\0';
	if (!n)
		return 0;
	if (n->type == JSONR_STRING) {
		snprintf(buf, sizeof(buf), "%s", n->str);
	} else if (n->type == JSONR_ARRAY) {
		buf[0] = '\0';
		for (const struct jsonr_node *e = jsonr_child(req->j, n); e; e = jsonr_next(req->j, e)) {
			if (e->type != JSONR_STRING) {
				snprintf(err, errlen, "scopes: expected route names");
				return -EINVAL;
			}
			if (strlen(buf) + strlen(e->str) + 2 > sizeof(buf)) {
				snprintf(err, errlen, "scopes: longer than %d bytes", KEYS_SCOPES_MAX);
				return -EINVAL;
			}
			if (buf[0])
				strcat(buf, ",");
			strcat(buf, e->str);
		}
	} else {
		snprintf(err, errlen, "scopes: expected a list of route names");
		return -EINVAL;
	}
	for (char *s = strtok_r(buf, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
		bool found = false;

		for (unsigned i = 0; i < g->cfg->nroutes && !found; i++)
			found = !strcmp(g->cfg->routes[i].name, s);
		if (!found) {
			snprintf(err, errlen, "scopes: no route named \"%s\"", s);
			return -EINVAL;
		}
		if (len + strlen(s) + 2 > cap) {
			snprintf(err, errlen, "scopes: longer than %d bytes", KEYS_SCOPES_MAX);
			return -EINVAL;
		}
		len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "," : "", s);
	}
	return 0;
}

static int read_tier(struct gate *g, const char *tier, char *err, size_t errlen)
{
	if (!tier || !*tier) {
		snprintf(err, errlen, "tier: required");
		return -EINVAL;
	}
	if (config_tier_index(g->cfg, tier) < 0) {
		snprintf(err, errlen, "tier: no tier named \"%s\" in the configuration", tier);
		return -EINVAL;
	}
	return 0;
}

static int read_duration(const struct control_req *req, const char *key, uint64_t *ms, bool *given,
			 char *err, size_t errlen)
{
	const char *s = jsonr_get_str(req->j, req->args, key);

	*given = s != NULL;
	if (!s)
		return 0;
	if (parse_duration_ms(s, ms)) {
		snprintf(err, errlen, "%s: expected a duration such as 90d, 24h or 30m, got \"%s\"", key,
			 s);
		return -EINVAL;
	}
	return 0;
}

static void write_key(struct gate *g, struct jsonw *w, const struct key_record *r, bool detail)
{
	int64_t now = wall_now();
	const char *state = r->revoked && now >= r->revoked ? "revoked" :
			    r->expires && now >= r->expires ? "expired" : "active";
	char rate[32];

	jsonw_str(w, "id", r->id);
	jsonw_str(w, "name", r->name);
	jsonw_str(w, "tier", r->tier);
	jsonw_arr_begin(w, "scopes");
	if (r->scopes[0]) {
		char buf[KEYS_SCOPES_MAX + 1], *save = NULL;

		snprintf(buf, sizeof(buf), "%s", r->scopes);
		for (char *s = strtok_r(buf, ",", &save); s; s = strtok_r(NULL, ",", &save))
			jsonw_str(w, NULL, s);
	}
	jsonw_arr_end(w);
	jsonw_str(w, "state", state);
	json_time(w, "created", r->created);
	json_time(w, "expires", r->expires);
	json_time(w, "revoked", r->revoked);
	{
		struct gate_usage *u = usage_find(g, r->id, false);
		int64_t lu = u && atomic_load(&u->last_used) > r->last_used ? atomic_load(&u->last_used)
									    : r->last_used;

		json_time(w, "last_used", lu);
	}
	if (!detail)
		return;
	json_time(w, "old_secret_until", r->old_until > now ? r->old_until : 0);
	{
		struct gate_key k = { 0 };
		struct gate_usage *u = usage_find(g, r->id, false);
		int64_t s = now;

		key_effective(g, r, &k);
		if (k.limited) {
			struct cfg_rate cr = { .count = r->rate_count, .per_ms = r->rate_per_ms };
			int ti = config_tier_index(g->cfg, r->tier);

			if (!cr.count && ti >= 0)
				cr = g->cfg->tiers[ti].rate;
			jsonw_str(w, "rate", rl_format_rate(&cr, rate, sizeof(rate)));
			jsonw_u64(w, "burst", k.limit.burst);
		} else {
			jsonw_null(w, "rate");
			jsonw_null(w, "burst");
		}
		jsonw_str(w, "limits_from", r->rate_count ? "key" : "tier");
		jsonw_u64(w, "quota_day", k.quota_day);
		jsonw_u64(w, "quota_month", k.quota_month);
		jsonw_u64(w, "used_today", u ? quota_used(&u->day, (uint64_t)s / 86400) : 0);
		jsonw_u64(w, "used_this_month", u ? quota_used(&u->month, month_of(s)) : 0);
	}
}

static int cmd_keys_create(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			   size_t errlen)
{
	struct gate *g = ctx;
	const char *name = jsonr_get_str(req->j, req->args, "name");
	const char *tier = jsonr_get_str(req->j, req->args, "tier");
	struct key_record *r;
	uint8_t secret[KEYS_SECRET_BYTES];
	char token[KEYS_TOKEN_LEN + 1];
	uint64_t exp_ms = 0;
	bool has_exp, has_scopes;
	int rc;

	if ((rc = need_store(g, err, errlen)))
		return rc;
	if (!name || !*name || strlen(name) > KEYS_NAME_MAX) {
		snprintf(err, errlen, "name: required, 1 to %d bytes", KEYS_NAME_MAX);
		return -EINVAL;
	}
	if ((rc = read_tier(g, tier, err, errlen)))
		return rc;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if ((rc = read_scopes(g, req, r->scopes, sizeof(r->scopes), &has_scopes, err, errlen)) ||
	    (rc = read_duration(req, "expires", &exp_ms, &has_exp, err, errlen)))
		goto out;
	if (has_exp && !exp_ms) {
		snprintf(err, errlen, "expires: must be more than 0");
		rc = -EINVAL;
		goto out;
	}
	snprintf(r->name, sizeof(r->name), "%s", name);
	snprintf(r->tier, sizeof(r->tier), "%s", tier);
	r->created = wall_now();
	r->expires = has_exp ? r->created + (int64_t)((exp_ms + 999) / 1000) : 0;
	pthread_mutex_lock(&g->lock);
	for (int tries = 0; tries < 4; tries++) {
		if ((rc = keys_generate(r->id, secret)))
			break;
		keys_hash(secret, r->hash);
		rc = keys_insert(g->ks, r);
		if (rc != -EEXIST)
			break; /* a 60-bit id collision is astronomically rare; retry anyway */
	}
	if (!rc)
		rc = republish(g);
	if (!rc)
		audit(g, req, "keys.create", r->id, "tier", r->tier);
	pthread_mutex_unlock(&g->lock);
	if (rc) {
		snprintf(err, errlen, "key store: cannot create the key: %s", strerror(-rc));
		goto out;
	}
	keys_format(r->id, secret, token);
	write_key(g, w, r, false);
	/* The only time the secret leaves clawd: in this reply, to the operator. */
	jsonw_str(w, "key", token);
out:
	memset(secret, 0, sizeof(secret));
	memset(token, 0, sizeof(token));
	free(r);
	return rc;
}

struct list_ctx {
	struct gate *g;
	struct jsonw *w;
};

static int list_one(void *arg, const struct key_record *r)
{
	struct list_ctx *l = arg;

	jsonw_obj_begin(l->w);
	write_key(l->g, l->w, r, false);
	jsonw_obj_end(l->w);
	return 0;
}

static int cmd_keys_list(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			 size_t errlen)
{
	struct gate *g = ctx;
	struct list_ctx l = { g, w };
	int rc;

	if ((rc = need_store(g, err, errlen)))
		return rc;
	pthread_mutex_lock(&g->lock);
	jsonw_arr_begin(w, "keys");
	rc = keys_each(g->ks, list_one, &l);
	jsonw_arr_end(w);
	pthread_mutex_unlock(&g->lock);
	if (rc)
		snprintf(err, errlen, "key store: %s", strerror(-rc));
	return rc;
}

/* Keys by state at one instant, for gate_status. */
struct key_census {
	int64_t now;
	uint64_t active, revoked, expired;
};

static int census_one(void *arg, const struct key_record *r)
{
	struct key_census *kc = arg;

	/* Same precedence as admission: a revoked key is refused as revoked even when also expired. */
	if (r->revoked && kc->now >= r->revoked)
		kc->revoked++;
	else if (r->expires && kc->now >= r->expires)
		kc->expired++;
	else
		kc->active++;
	return 0;
}

void gate_status(struct gate *g, struct jsonw *w)
{
	struct key_census kc = { .now = wall_now() };
	char path[PATH_MAX];
	bool store = false;
	int rc = 0;

	jsonw_obj_begin_key(w, "keys");
	if (!g) {
		jsonw_null(w, "store");
		jsonw_obj_end(w);
		return;
	}
	pthread_rwlock_rdlock(&g->cfg_lock);
	pthread_mutex_lock(&g->lock);
	if ((store = g->ks != NULL)) {
		snprintf(path, sizeof(path), "%s/%s", g->cfg->state_dir, KEYS_DB_FILE);
		rc = keys_each(g->ks, census_one, &kc);
	}
	pthread_mutex_unlock(&g->lock);
	pthread_rwlock_unlock(&g->cfg_lock);
	if (!store) {
		jsonw_null(w, "store");
	} else {
		jsonw_str(w, "store", path);
		if (rc)
			jsonw_str(w, "error", strerror(-rc));
		jsonw_u64(w, "active", kc.active);
		jsonw_u64(w, "revoked", kc.revoked);
		jsonw_u64(w, "expired", kc.expired);
	}
	jsonw_obj_end(w);
}

/* Reads the "id" argument and its record. Caller holds g->lock. */
static int load_key(struct gate *g, const struct control_req *req, struct key_record *r, char *err,
		    size_t errlen)
{
	const char *id = jsonr_get_str(req->j, req->args, "id");
	int rc;

	if (!id || !keys_id_valid(id)) {
		snprintf(err, errlen, "id: expected a key id (12 characters a-z, 2-7)");
		return -EINVAL;
	}
	rc = keys_get(g->ks, id, r);
	if (rc == -ENOENT)
		snprintf(err, errlen, "no key with id %s", id);
	else if (rc)
		snprintf(err, errlen, "key store: %s", strerror(-rc));
	return rc;
}

static int cmd_keys_show(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			 size_t errlen)
{
	struct gate *g = ctx;
	struct key_record *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return -ENOMEM;
	if ((rc = need_store(g, err, errlen)))
		goto out;
	pthread_mutex_lock(&g->lock);
	rc = load_key(g, req, r, err, errlen);
	if (!rc)
		write_key(g, w, r, true);
	pthread_mutex_unlock(&g->lock);
out:
	free(r);
	return rc;
}

static int cmd_keys_revoke(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			   size_t errlen)
{
	struct gate *g = ctx;
	struct key_record *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return -ENOMEM;
	if ((rc = need_store(g, err, errlen)))
		goto out;
	pthread_mutex_lock(&g->lock);
	rc = load_key(g, req, r, err, errlen);
	if (!rc && r->revoked) {
		snprintf(err, errlen, "key %s is already revoked", r->id);
		rc = -EALREADY;
	}
	if (!rc) {
		r->revoked = wall_now();
		rc = keys_update(g->ks, r);
		if (!rc)
			rc = republish(g);
		if (rc)
			snprintf(err, errlen, "key store: %s", strerror(-rc));
		else
			audit(g, req, "keys.revoke", r->id, NULL, NULL);
	}
	if (!rc)
		write_key(g, w, r, false);
	pthread_mutex_unlock(&g->lock);
out:
	free(r);
	return rc;
}

static int cmd_keys_rotate(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			   size_t errlen)
{
	struct gate *g = ctx;
	struct key_record *r = calloc(1, sizeof(*r));
	uint8_t secret[KEYS_SECRET_BYTES];
	char token[KEYS_TOKEN_LEN + 1], grace_s[32];
	uint64_t grace_ms = DEFAULT_GRACE_MS;
	bool given;
	int rc;

	if (!r)
		return -ENOMEM;
	if ((rc = need_store(g, err, errlen)) ||
	    (rc = read_duration(req, "grace", &grace_ms, &given, err, errlen)))
		goto out;
	if (!given)
		grace_ms = DEFAULT_GRACE_MS;
	pthread_mutex_lock(&g->lock);
	rc = load_key(g, req, r, err, errlen);
	if (!rc && r->revoked) {
		snprintf(err, errlen, "key %s is revoked: create a new key instead", r->id);
		rc = -EINVAL;
	}
	if (!rc && !(rc = keys_generate(token, secret))) {
		int64_t now = wall_now();

		/* The current secret becomes the old one; an older one still in grace ends now. */
		memcpy(r->old_hash, r->hash, KEYS_HASH_LEN);
		r->old_until = grace_ms ? now + (int64_t)((grace_ms + 999) / 1000) : 0;
		keys_hash(secret, r->hash);
		rc = keys_update(g->ks, r);
		if (!rc)
			rc = republish(g);
		if (rc) {
			snprintf(err, errlen, "key store: %s", strerror(-rc));
		} else {
			snprintf(grace_s, sizeof(grace_s), "%" PRIu64 "s", (grace_ms + 999) / 1000);
			audit(g, req, "keys.rotate", r->id, "grace", grace_s);
		}
	}
	pthread_mutex_unlock(&g->lock);
	if (!rc) {
		keys_format(r->id, secret, token);
		write_key(g, w, r, false);
		json_time(w, "old_secret_until", r->old_until);
		jsonw_str(w, "key", token);
	}
out:
	memset(secret, 0, sizeof(secret));
	memset(token, 0, sizeof(token));
	free(r);
	return rc;
}

static int cmd_keys_set(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			size_t errlen)
{
	struct gate *g = ctx;
	struct key_record *r = calloc(1, sizeof(*r));
	const char *tier = jsonr_get_str(req->j, req->args, "tier");
	const char *rate = jsonr_get_str(req->j, req->args, "rate");
	const struct jsonr_node *burst = jsonr_get(req->j, req->args, "burst");
	char scopes[KEYS_SCOPES_MAX + 1], what[256] = "";
	struct cfg_rate cr = { 0, 0 };
	bool has_scopes;
	int rc;

	if (!r)
		return -ENOMEM;
	if ((rc = need_store(g, err, errlen)))
		goto out;
	if (tier && (rc = read_tier(g, tier, err, errlen)))
		goto out;
	/* "tier" as a rate drops the override and returns to the tier's limits. */
	if (rate && strcmp(rate, "tier") && rl_parse_rate(rate, &cr)) {
		snprintf(err, errlen, "rate: expected a rate such as 100/s, 6000/m or \"tier\", got \"%s\"",
			 rate);
		rc = -EINVAL;
		goto out;
	}
	if (burst && (burst->type != JSONR_NUMBER || !burst->is_int || burst->i < 0 ||
		      burst->i > 1000000)) {
		snprintf(err, errlen, "burst: expected an integer 0..1000000 (0: the rate's count)");
		rc = -EINVAL;
		goto out;
	}
	if ((rc = read_scopes(g, req, scopes, sizeof(scopes), &has_scopes, err, errlen)))
		goto out;
	if (!tier && !rate && !burst && !has_scopes) {
		snprintf(err, errlen, "nothing to change: give tier, rate, burst or scopes");
		rc = -EINVAL;
		goto out;
	}
	pthread_mutex_lock(&g->lock);
	rc = load_key(g, req, r, err, errlen);
	if (!rc) {
		if (tier) {
			snprintf(r->tier, sizeof(r->tier), "%s", tier);
			snprintf(what + strlen(what), sizeof(what) - strlen(what), "tier=%s ", tier);
		}
		if (rate) {
			r->rate_count = cr.count;
			r->rate_per_ms = cr.per_ms;
			snprintf(what + strlen(what), sizeof(what) - strlen(what), "rate=%s ", rate);
		}
		if (burst) {
			r->burst = (uint64_t)burst->i;
			snprintf(what + strlen(what), sizeof(what) - strlen(what), "burst=%" PRIu64 " ",
				 r->burst);
		}
		if (has_scopes) {
			memcpy(r->scopes, scopes, sizeof(scopes));
			snprintf(what + strlen(what), sizeof(what) - strlen(what), "scopes=%.120s ",
				 scopes[0] ? scopes : "*");
		}
		if (what[0])
			what[strlen(what) - 1] = '\0';
		rc = keys_update(g->ks, r);
		if (!rc)
			rc = republish(g);
		if (rc)
			snprintf(err, errlen, "key store: %s", strerror(-rc));
		else
			audit(g, req, "keys.set", r->id, "changed", what);
	}
	if (!rc)
		write_key(g, w, r, true);
	pthread_mutex_unlock(&g->lock);
out:
	free(r);
	return rc;
}

static void write_result(struct jsonw *w, const struct rl_result *res)
{
	jsonw_u64(w, "limit", res->limit);
	jsonw_u64(w, "remaining", res->remaining);
	jsonw_ms(w, "reset_ms", res->reset_us * 1000);
}

static int cmd_limits_show(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			   size_t errlen)
{
	struct gate *g = ctx;
	const char *id = jsonr_get_str(req->j, req->args, "key");
	const char *ip = jsonr_get_str(req->j, req->args, "ip");
	struct timespec ts;
	uint64_t now_us;
	struct rl_result res;
	char rate[32];

	if (!g) {
		snprintf(err, errlen, "no limits configured");
		return -ENOTSUP;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
	jsonw_u64(w, "table_slots", g->rl.mask + 1);
	jsonw_u64(w, "evictions", atomic_load(&g->rl.evictions));
	jsonw_u64(w, "table_full", atomic_load(&g->rl.full));
	if (id) {
		struct key_record *r = calloc(1, sizeof(*r));
		struct gate_key k = { 0 };
		int rc;

		if (!r)
			return -ENOMEM;
		if ((rc = need_store(g, err, errlen))) {
			free(r);
			return rc;
		}
		if (!keys_id_valid(id)) {
			snprintf(err, errlen, "key: expected a key id (12 characters a-z, 2-7)");
			free(r);
			return -EINVAL;
		}
		pthread_mutex_lock(&g->lock);
		rc = keys_get(g->ks, id, r);
		pthread_mutex_unlock(&g->lock);
		if (rc)
			snprintf(err, errlen, rc == -ENOENT ? "no key with id %s" : "key store: cannot read %s",
				 id);
		if (rc) {
			free(r);
			return rc;
		}
		key_effective(g, r, &k);
		jsonw_str(w, "key", r->id);
		jsonw_str(w, "tier", r->tier);
		if (k.limited) {
			rl_peek(&g->rl, key_bucket(g, r->id, &k.limit), &k.limit, now_us, &res);
			jsonw_u64(w, "interval_us", k.limit.interval_us);
			write_result(w, &res);
		}
		{
			struct gate_usage *u;
			int64_t s = wall_now();

			pthread_mutex_lock(&g->lock);
			u = usage_find(g, r->id, false);
			jsonw_u64(w, "quota_day", k.quota_day);
			jsonw_u64(w, "used_today", u ? quota_used(&u->day, (uint64_t)s / 86400) : 0);
			jsonw_u64(w, "quota_month", k.quota_month);
			jsonw_u64(w, "used_this_month", u ? quota_used(&u->month, month_of(s)) : 0);
			pthread_mutex_unlock(&g->lock);
		}
		jsonw_arr_begin(w, "routes");
		for (unsigned ri = 0; ri < g->cfg->nroutes; ri++) {
			const struct cfg_route *rt = &g->cfg->routes[ri];

			for (unsigned li = 0; li < rt->nrate_limits; li++) {
				const struct cfg_rate_limit *l = &rt->rate_limits[li];
				struct rl_limit lim = rl_limit_of(&l->rate, l->burst);
				uint64_t seed = limit_seed(g, rt, li);

				if (l->key != CFG_LIMIT_API_KEY)
					continue;
				rl_peek(&g->rl, rl_hash(seed, r->id, KEYS_ID_LEN), &lim, now_us, &res);
				jsonw_obj_begin(w);
				jsonw_str(w, "route", rt->name);
				jsonw_str(w, "rate", rl_format_rate(&l->rate, rate, sizeof(rate)));
				write_result(w, &res);
				jsonw_obj_end(w);
			}
		}
		jsonw_arr_end(w);
		free(r);
		return 0;
	}
	if (ip) {
		struct net_addr a;
		const char *why = "invalid";

		if (net_addr_parse(ip, 1, &a, &why)) {
			snprintf(err, errlen, "ip: \"%s\": %s", ip, why);
			return -EINVAL;
		}
		jsonw_str(w, "ip", ip);
		jsonw_arr_begin(w, "routes");
		for (unsigned ri = 0; ri < g->cfg->nroutes; ri++) {
			const struct cfg_route *rt = &g->cfg->routes[ri];

			for (unsigned li = 0; li < rt->nrate_limits; li++) {
				const struct cfg_rate_limit *l = &rt->rate_limits[li];
				struct rl_limit lim = rl_limit_of(&l->rate, l->burst);
				struct gate_verdict *none = NULL;
				uint64_t h;

				if (l->key != CFG_LIMIT_IP ||
				    !limit_bucket(g, rt, li, l, NULL, (struct sockaddr *)&a.ss, none, &h))
					continue;
				rl_peek(&g->rl, h, &lim, now_us, &res);
				jsonw_obj_begin(w);
				jsonw_str(w, "route", rt->name);
				jsonw_str(w, "rate", rl_format_rate(&l->rate, rate, sizeof(rate)));
				write_result(w, &res);
				jsonw_obj_end(w);
			}
		}
		jsonw_arr_end(w);
		return 0;
	}
	/* No selector: the configured limits. */
	jsonw_arr_begin(w, "tiers");
	for (unsigned i = 0; i < g->cfg->ntiers; i++) {
		const struct cfg_tier *t = &g->cfg->tiers[i];

		jsonw_obj_begin(w);
		jsonw_str(w, "name", t->name);
		if (t->rate.count)
			jsonw_str(w, "rate", rl_format_rate(&t->rate, rate, sizeof(rate)));
		else
			jsonw_null(w, "rate");
		jsonw_u64(w, "burst", t->burst);
		jsonw_u64(w, "quota_day", t->quota_day);
		jsonw_u64(w, "quota_month", t->quota_month);
		jsonw_obj_end(w);
	}
	jsonw_arr_end(w);
	jsonw_arr_begin(w, "routes");
	for (unsigned ri = 0; ri < g->cfg->nroutes; ri++) {
		const struct cfg_route *rt = &g->cfg->routes[ri];
		static const char *const kinds[] = { "ip", "api_key", "header", "jwt_claim" };

		for (unsigned li = 0; li < rt->nrate_limits; li++) {
			const struct cfg_rate_limit *l = &rt->rate_limits[li];

			jsonw_obj_begin(w);
			jsonw_str(w, "route", rt->name);
			jsonw_str(w, "key", kinds[l->key]);
			if (l->name)
				jsonw_str(w, "name", l->name);
			jsonw_str(w, "rate", rl_format_rate(&l->rate, rate, sizeof(rate)));
			jsonw_u64(w, "burst", rl_limit_of(&l->rate, l->burst).burst);
			jsonw_obj_end(w);
		}
	}
	jsonw_arr_end(w);
	return 0;
}

/* A key or limit command, run with the configuration held against a reload swapping it. */
struct gate_cmd {
	struct gate *g;
	control_fn fn;
};

static int cmd_locked(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		      size_t errlen)
{
	struct gate_cmd *gc = ctx;
	int rc;

	if (!gc->g)
		return gc->fn(NULL, req, w, err, errlen);
	pthread_rwlock_rdlock(&gc->g->cfg_lock);
	rc = gc->fn(gc->g, req, w, err, errlen);
	pthread_rwlock_unlock(&gc->g->cfg_lock);
	return rc;
}

int gate_register_commands(struct gate *g, struct control *c)
{
	static const struct {
		const char *name;
		control_fn fn;
	} cmds[] = {
		{ "keys.create", cmd_keys_create }, { "keys.list", cmd_keys_list },
		{ "keys.show", cmd_keys_show },     { "keys.revoke", cmd_keys_revoke },
		{ "keys.rotate", cmd_keys_rotate }, { "keys.set", cmd_keys_set },
		{ "limits.show", cmd_limits_show },
	};
	/* Lives as long as the process: the control socket may call them until exit. */
	static struct gate_cmd ctxs[sizeof(cmds) / sizeof(cmds[0])];
	int rc;

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		ctxs[i] = (struct gate_cmd){ g, cmds[i].fn };
		if ((rc = control_register(c, cmds[i].name, cmd_locked, &ctxs[i])))
			return rc;
	}
	return 0;
}

/* ---- metrics ------------------------------------------------------------------------------ */

static const char *const ga_names[GA_JWT] = {
	"ok", "missing", "malformed", "unknown_key", "wrong_secret", "revoked", "expired",
	"out_of_scope",
};
static const char *const gl_names[GL_N] = { "key_tier", "ip", "api_key", "header", "jwt_claim" };
static const char *const gq_names[GQ_N] = { "day", "month" };

/* Sum of counter c of route ri over every worker (racy reads of relaxed stores: fine for a scrape). */
static uint64_t mstat_sum(const struct gate *g, unsigned ri, unsigned c)
{
	int slot = rslot_find(g, g->cfg->routes[ri].name);
	uint64_t n = 0;

	for (unsigned w = 0; slot >= 0 && w < g->nworkers; w++)
		n += atomic_load_explicit(&g->rslots[slot].st[(size_t)w * GATE_MSTATS + c],
					  memory_order_relaxed);
	return n;
}

static void collect_locked(const struct gate *g, struct metrics_out *o)
{
	const struct config *cfg = g->cfg;
	char jname[48];

	metrics_family(o, "openclaw_auth_results_total", "counter",
		       "Authentication outcomes of api_key and jwt routes by result (ok or the refusal reason).");
	for (unsigned ri = 0; ri < cfg->nroutes; ri++) {
		const struct cfg_route *r = &cfg->routes[ri];

		if (r->auth.type == CFG_AUTH_NONE)
			continue;
		for (unsigned c = 0; c < GA_N; c++) {
			const char *name;

			/* Each route lists only the results its auth type can produce (bounded, stable series). */
			if (c == GA_OK)
				name = "ok";
			else if (r->auth.type == CFG_AUTH_API_KEY && c < GA_JWT)
				name = ga_names[c];
			else if (r->auth.type == CFG_AUTH_JWT && c > GA_JWT) {
				snprintf(jname, sizeof(jname), "jwt_%s", jwt_err_name((enum jwt_err)(c - GA_JWT)));
				name = jname;
			} else
				continue;
			metrics_sample_u64(o, "openclaw_auth_results_total",
					   (const char *const[]){ "route", r->name, "result", name, NULL },
					   mstat_sum(g, ri, c));
		}
	}
	metrics_family(o, "openclaw_ratelimit_rejections_total", "counter",
		       "Requests refused with 429 by a rate limit, by route and the limit's key kind.");
	for (unsigned ri = 0; ri < cfg->nroutes; ri++) {
		const struct cfg_route *r = &cfg->routes[ri];

		/* key_tier applies on any api_key route; the others only where the route has such a limit. */
		for (unsigned c = 0; c < GL_N; c++) {
			bool used = c == GL_KEY_TIER && r->auth.type == CFG_AUTH_API_KEY;

			for (unsigned i = 0; !used && i < r->nrate_limits; i++)
				used = (unsigned)r->rate_limits[i].key + GL_IP == c;
			if (used)
				metrics_sample_u64(o, "openclaw_ratelimit_rejections_total",
						   (const char *const[]){ "route", r->name, "key", gl_names[c], NULL },
						   mstat_sum(g, ri, GA_N + c));
		}
	}
	metrics_family(o, "openclaw_quota_rejections_total", "counter",
		       "Requests refused with 429 because the key's daily or monthly quota was used up.");
	for (unsigned ri = 0; ri < cfg->nroutes; ri++) {
		const struct cfg_route *r = &cfg->routes[ri];

		if (r->auth.type != CFG_AUTH_API_KEY)
			continue;
		for (unsigned c = 0; c < GQ_N; c++)
			metrics_sample_u64(o, "openclaw_quota_rejections_total",
					   (const char *const[]){ "route", r->name, "period", gq_names[c], NULL },
					   mstat_sum(g, ri, GA_N + GL_N + c));
	}
}

static void collect(void *ctx, struct metrics_out *o)
{
	struct gate *g = ctx;

	pthread_rwlock_rdlock(&g->cfg_lock);
	collect_locked(g, o);
	pthread_rwlock_unlock(&g->cfg_lock);
}

int gate_register_metrics(struct gate *g, struct metrics *m)
{
	return g && m ? metrics_register(m, collect, g) : 0;
}
