/* agent/metrics.c — per-worker counters and histograms, summed on scrape into Prometheus text format 0.0.4. */
#include "metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accesslog.h"
#include "agent.h"
#include "control.h"
#include "jsonw.h"
#include "guard.h"
#include "http1.h"
#include "log.h"
#include "netaddr.h"
#include "reload.h"

/* Single writer: a relaxed load and store, never a locked instruction on the request path. */
static inline void bump(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint64_t rd(const _Atomic uint64_t *c)
{
	return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed);
}

static const char *const method_names[MM_N] = { "GET",   "HEAD",    "POST",  "PUT",
						 "DELETE", "PATCH", "OPTIONS", "other" };
static const char *const class_names[MC_N] = { "1xx", "2xx", "3xx", "4xx", "5xx", "none" };
static const char *const error_names[ME_N] = {
	[ME_NO_ROUTE] = "no_route",
	[ME_BAD_REQUEST] = "bad_request",
	[ME_HEAD_TOO_LARGE] = "head_too_large",
	[ME_BODY_TOO_LARGE] = "body_too_large",
	[ME_CLIENT_TIMEOUT] = "client_timeout",
	[ME_CONNECT_TIMEOUT] = "connect_timeout",
	[ME_CONNECT_FAILED] = "connect_failed",
	[ME_RESPONSE_TIMEOUT] = "response_timeout",
	[ME_NO_SERVER] = "no_server",
	[ME_BAD_GATEWAY] = "bad_gateway",
	[ME_CLIENT_CLOSED] = "client_closed",
	[ME_RESPONSE_STALLED] = "response_stalled",
	[ME_SHUTDOWN] = "shutdown",
	[ME_OTHER] = "other",
};

enum metrics_method metrics_method_of(const char *m, size_t n)
{
	for (int i = 0; i < MM_OTHER; i++)
		if (m && strlen(method_names[i]) == n && !memcmp(m, method_names[i], n))
			return (enum metrics_method)i;
	return MM_OTHER;
}

enum metrics_class metrics_class_of(int status)
{
	return status >= 100 && status <= 599 ? (enum metrics_class)(status / 100 - 1) : MC_NONE;
}

const char *metrics_error_name(enum metrics_error e)
{
	return e < ME_N ? error_names[e] : "other";
}

static bool starts(const char *s, const char *prefix)
{
	return !strncmp(s, prefix, strlen(prefix));
}

/* The proxy's error strings (proxy.c) map onto a fixed set of reasons. */
enum metrics_error metrics_error_of(int status, const char *error)
{
	if (!error)
		error = "";
	if (!strcmp(error, "no route"))
		return ME_NO_ROUTE;
	if (starts(error, "shutdown"))
		return ME_SHUTDOWN;
	if (starts(error, "client closed") || starts(error, "client went away"))
		return ME_CLIENT_CLOSED;
	if (starts(error, "response stalled"))
		return ME_RESPONSE_STALLED;
	if (!strcmp(error, "backend connect timeout"))
		return ME_CONNECT_TIMEOUT;
	if (!strcmp(error, "backend connect failed") || !strcmp(error, "no backend reachable") ||
	    !strcmp(error, "cannot create backend socket"))
		return ME_CONNECT_FAILED;
	if (!strcmp(error, "backend response timeout") || !strcmp(error, "request timeout"))
		return ME_RESPONSE_TIMEOUT;
	if (!strcmp(error, "no server available"))
		return ME_NO_SERVER;
	switch (status) {
	case 408:
		return ME_CLIENT_TIMEOUT;
	case 413:
		return ME_BODY_TOO_LARGE;
	case 414:
	case 431:
		return ME_HEAD_TOO_LARGE;
	case 502:
		return ME_BAD_GATEWAY;
	case 503:
		return ME_NO_SERVER;
	case 504:
		return ME_RESPONSE_TIMEOUT;
	}
	if (status >= 400 && status < 500)
		return ME_BAD_REQUEST;
	if (starts(error, "backend"))
		return ME_BAD_GATEWAY;
	return ME_OTHER;
}

unsigned metrics_bucket(const uint64_t *bounds_us, unsigned nbounds, uint64_t ns)
{
	unsigned i = 0;

	/* A dozen bounds or so: a linear scan beats a binary search's branches. */
	while (i < nbounds && ns > bounds_us[i] * 1000)
		i++;
	return i;
}

/* ---- slot tables: names that keep their counters across reloads ------------------ */

#define MT_CHUNK 64          /* slots per chunk: a chunk is allocated when its first slot is */
#define MT_MAX_CHUNKS 1024   /* so at most 65536 names per table */
#define MT_MAX_SLOTS (MT_CHUNK * MT_MAX_CHUNKS)
#define MK_MAX 10000         /* admin.per_key_labels_max upper bound (config.c checks it too) */

/*
 * One kind of label set. Names and the hash are touched under m->lock only
 * (map building, scrapes); counters are [worker][slot][words], each worker's
 * in chunks of its own that never move once allocated, so a worker writes a
 * slot of its map without a lock and a scrape reads it racily but safely.
 */
struct metrics_table {
	unsigned words;            /* u64 counters per slot */
	unsigned nslots;           /* slots given out */
	unsigned ncap;             /* capacity of names */
	char **names;              /* [slot] its name */
	int32_t *hash;             /* open addressing: slot, or -1 = free; hcap entries */
	unsigned hcap;             /* power of two, above twice nslots */
	_Atomic uint64_t **chunks; /* [worker * MT_MAX_CHUNKS + chunk]: MT_CHUNK * words counters */
	bool full_logged;          /* "table full" was logged */
};

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static struct metrics_table *table_new(unsigned words, unsigned nworkers)
{
	struct metrics_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->words = words;
	t->hcap = 64;
	t->hash = malloc(t->hcap * sizeof(*t->hash));
	t->chunks = calloc((size_t)nworkers * MT_MAX_CHUNKS, sizeof(*t->chunks));
	if (!t->hash || !t->chunks) {
		free(t->hash);
		free(t->chunks);
		free(t);
		return NULL;
	}
	memset(t->hash, 0xff, t->hcap * sizeof(*t->hash));
	return t;
}

static void table_free(struct metrics_table *t, unsigned nworkers)
{
	if (!t)
		return;
	for (size_t i = 0; i < (size_t)nworkers * MT_MAX_CHUNKS; i++)
		free((void *)t->chunks[i]);
	for (unsigned s = 0; s < t->nslots; s++)
		free(t->names[s]);
	free(t->names);
	free(t->hash);
	free(t->chunks);
	free(t);
}

/* The slot of name, or -1. Caller holds m->lock. */
static int32_t table_find(const struct metrics_table *t, const char *name)
{
	for (uint32_t h = name_hash(name) & (t->hcap - 1);; h = (h + 1) & (t->hcap - 1)) {
		int32_t s = t->hash[h];

		if (s < 0)
			return -1;
		if (!strcmp(t->names[s], name))
			return s;
	}
}

static void table_hash_put(struct metrics_table *t, int32_t s)
{
	uint32_t h = name_hash(t->names[s]) & (t->hcap - 1);

	while (t->hash[h] >= 0)
		h = (h + 1) & (t->hcap - 1);
	t->hash[h] = s;
}

/* The slot of name, given now when new. >= 0, -ENOSPC (table full) or -ENOMEM. Caller holds m->lock. */
static int32_t table_slot(struct metrics_table *t, unsigned nworkers, const char *name)
{
	int32_t s = table_find(t, name);

	if (s >= 0)
		return s;
	if (t->nslots == MT_MAX_SLOTS)
		return -ENOSPC;
	if ((t->nslots + 1) * 2 > t->hcap) {
		int32_t *nh = malloc(t->hcap * 2 * sizeof(*nh));

		if (!nh)
			return -ENOMEM;
		free(t->hash);
		t->hash = nh;
		t->hcap *= 2;
		memset(t->hash, 0xff, t->hcap * sizeof(*t->hash));
		for (unsigned i = 0; i < t->nslots; i++)
			table_hash_put(t, (int32_t)i);
	}
	if (t->nslots == t->ncap) {
		unsigned ncap = t->ncap ? t->ncap * 2 : 16;
		char **nn = realloc(t->names, ncap * sizeof(*nn));

		if (!nn)
			return -ENOMEM;
		t->names = nn;
		t->ncap = ncap;
	}
	s = (int32_t)t->nslots;
	if (s % MT_CHUNK == 0) {
		size_t bytes = (size_t)MT_CHUNK * t->words * sizeof(uint64_t);

		/* Every worker's chunk first: a slot exists only once all of them do. */
		for (unsigned w = 0; w < nworkers; w++) {
			_Atomic uint64_t **c = &t->chunks[(size_t)w * MT_MAX_CHUNKS + (size_t)s / MT_CHUNK];

			if (*c)
				continue;
			/* 64-byte aligned and a multiple of it: workers never share a cache line. */
			*c = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
			if (!*c)
				return -ENOMEM;
			memset((void *)*c, 0, bytes);
		}
	}
	t->names[s] = strdup(name);
	if (!t->names[s])
		return -ENOMEM;
	t->nslots++;
	table_hash_put(t, s);
	return s;
}

static inline _Atomic uint64_t *cell(const struct metrics_table *t, unsigned w, int32_t s)
{
	return t->chunks[(size_t)w * MT_MAX_CHUNKS + (size_t)s / MT_CHUNK] +
	       (size_t)(s % MT_CHUNK) * t->words;
}

/* "a\nb": the name of a label set with two parts (listener and route, pool and server). */
static const char *join(char *buf, size_t len, const char *a, const char *b)
{
	int n = snprintf(buf, len, "%s\n%s", a, b);

	return n >= 0 && (size_t)n < len ? buf : NULL;
}

#define JOIN_MAX 1024 /* names longer than this are not counted (config names are far shorter) */

static void server_name(const struct cfg_upstream *u, unsigned s, char *buf, size_t len)
{
	net_addr_format((const struct sockaddr *)&u->servers[s].addr.ss, buf, len);
}

/* ---- set-up --------------------------------------------------------------------- */

static unsigned hist_words(unsigned nbounds)
{
	return nbounds + 3; /* buckets (+Inf last), count, sum in ns */
}

int metrics_create(struct metrics **out, const struct config *cfg, unsigned nworkers)
{
	struct metrics *m = calloc(1, sizeof(*m));
	unsigned words[MT_N] = {
		[MT_LISTENER] = 2,
		[MT_ROUTE] = hist_words(cfg->admin.nrequest_buckets),
		[MT_REQUESTS] = MM_N * MC_N,
		[MT_SERVER] = hist_words(cfg->admin.nupstream_buckets) + MC_N,
	};

	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	m->cfg = cfg;
	m->nworkers = nworkers;
	m->workers = calloc(nworkers ? nworkers : 1, sizeof(*m->workers));
	if (!m->workers)
		goto nomem;
	for (unsigned t = 0; t < MT_N; t++)
		if (!(m->tables[t] = table_new(words[t], nworkers)))
			goto nomem;
	if (cfg->admin.per_key_labels) {
		m->key_max = cfg->admin.per_key_labels_max < MK_MAX ? cfg->admin.per_key_labels_max : MK_MAX;
		for (m->key_cap = 16; m->key_cap < 2 * m->key_max; m->key_cap *= 2)
			;
		m->key_ids = calloc(m->key_cap, sizeof(*m->key_ids));
		if (!m->key_ids)
			goto nomem;
	}
	for (unsigned i = 0; i < nworkers; i++) {
		struct metrics_worker *w = &m->workers[i];

		w->m = m;
		w->id = i;
		if (m->key_max && !(w->keys = calloc((size_t)(m->key_cap + 1) * MK_N, sizeof(*w->keys))))
			goto nomem;
	}
	if (metrics_map_new(m, cfg, &m->map0))
		goto nomem;
	*out = m;
	return 0;
nomem:
	metrics_free(m);
	return -ENOMEM;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	metrics_map_free(m->map0);
	for (unsigned i = 0; m->workers && i < m->nworkers; i++)
		free(m->workers[i].keys);
	for (unsigned t = 0; t < MT_N; t++)
		table_free(m->tables[t], m->nworkers);
	free(m->key_ids);
	free(m->workers);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

struct metrics_worker *metrics_worker(struct metrics *m, unsigned i)
{
	return m && i < m->nworkers ? &m->workers[i] : NULL;
}

int metrics_register(struct metrics *m, metrics_collect_fn fn, void *ctx)
{
	if (m->ncollectors == sizeof(m->collectors) / sizeof(m->collectors[0]))
		return -ENOSPC;
	m->collectors[m->ncollectors].fn = fn;
	m->collectors[m->ncollectors].ctx = ctx;
	m->ncollectors++;
	return 0;
}

void metrics_map_free(struct metrics_map *map)
{
	if (!map)
		return;
	free(map->lslot);
	free(map->rslot);
	free(map->qslot);
	free(map->sslot);
	free(map->server_base);
	free(map);
}

/* A slot for name in table t; -1 when it cannot have one (logged once per table). */
static int map_slot(struct metrics *m, unsigned t, const char *name, int32_t *out)
{
	int32_t s = name ? table_slot(m->tables[t], m->nworkers, name) : -ENOSPC;

	if (s == -ENOMEM)
		return -ENOMEM;
	if (s < 0 && !m->tables[t]->full_logged) {
		m->tables[t]->full_logged = true;
		log_warn("metrics: too many distinct label sets (%u) or a name over %d bytes; "
			 "the rest are not counted until a restart", MT_MAX_SLOTS, JOIN_MAX);
	}
	*out = s < 0 ? -1 : s;
	return 0;
}

int metrics_map_new(struct metrics *m, const struct config *cfg, struct metrics_map **out)
{
	struct metrics_map *map;
	unsigned nserv = 0, nr = cfg->nroutes + 1;
	char key[JOIN_MAX], sname[NET_ADDR_STRLEN];
	int rc = -ENOMEM;

	*out = NULL;
	if (!m)
		return 0;
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		nserv += cfg->upstreams[p].nservers;
	map = calloc(1, sizeof(*map));
	if (!map)
		return -ENOMEM;
	map->nlisteners = cfg->nlisteners;
	map->nroutes = cfg->nroutes;
	map->nupstreams = cfg->nupstreams;
	map->lslot = calloc(cfg->nlisteners + 1, sizeof(*map->lslot));
	map->rslot = calloc(nr, sizeof(*map->rslot));
	map->qslot = calloc((size_t)(cfg->nlisteners + 1) * nr, sizeof(*map->qslot));
	map->sslot = calloc(nserv + 1, sizeof(*map->sslot));
	map->server_base = calloc(cfg->nupstreams + 1, sizeof(*map->server_base));
	if (!map->lslot || !map->rslot || !map->qslot || !map->sslot || !map->server_base)
		goto fail;
	pthread_mutex_lock(&m->lock);
	for (unsigned r = 0; r < nr; r++)
		if ((rc = map_slot(m, MT_ROUTE, r ? cfg->routes[r - 1].name : "", &map->rslot[r])))
			goto unlock;
	for (unsigned l = 0; l < cfg->nlisteners; l++) {
		const char *ln = cfg->listeners[l].name;

		if ((rc = map_slot(m, MT_LISTENER, ln, &map->lslot[l])))
			goto unlock;
		for (unsigned r = 0; r < nr; r++)
			if ((rc = map_slot(m, MT_REQUESTS,
					   join(key, sizeof(key), ln, r ? cfg->routes[r - 1].name : ""),
					   &map->qslot[(size_t)l * nr + r])))
				goto unlock;
	}
	nserv = 0;
	for (unsigned p = 0; p < cfg->nupstreams; p++) {
		map->server_base[p] = nserv;
		map->server_base[p + 1] = nserv + cfg->upstreams[p].nservers;
		for (unsigned s = 0; s < cfg->upstreams[p].nservers; s++) {
			server_name(&cfg->upstreams[p], s, sname, sizeof(sname));
			if ((rc = map_slot(m, MT_SERVER, join(key, sizeof(key), cfg->upstreams[p].name, sname),
					   &map->sslot[nserv++])))
				goto unlock;
		}
	}
	rc = 0;
unlock:
	pthread_mutex_unlock(&m->lock);
	if (!rc) {
		*out = map;
		return 0;
	}
fail:
	metrics_map_free(map);
	return rc;
}

/* ---- the request path ---------------------------------------------------------- */

static void hist_observe(_Atomic uint64_t *h, const uint64_t *bounds, unsigned nb, uint64_t ns)
{
	bump(&h[metrics_bucket(bounds, nb, ns)], 1);
	bump(&h[nb + 1], 1);
	bump(&h[nb + 2], ns);
}

enum metrics_key_result metrics_key_result_of(int status, const char *error)
{
	if (error && starts(error, "limit:"))
		return MK_RATE_LIMITED;
	if (error && starts(error, "quota:"))
		return MK_QUOTA;
	if (status == 403 && error && starts(error, "auth:"))
		return MK_OUT_OF_SCOPE;
	return MK_OK;
}

static const char *const key_result_names[MK_N] = { "ok", "out_of_scope", "rate_limited", "quota" };
static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";

/* A key id (12 base32 characters, 60 bits) as a non-zero word; 0 when it is not one. */
static uint64_t key_code(const char *id)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < 12; i++) {
		const char *p = id[i] ? strchr(b32, id[i]) : NULL;

		if (!p)
			return 0;
		v = v << 5 | (uint64_t)(p - b32);
	}
	return id[12] ? 0 : v | 1ull << 63;
}

static void key_decode(uint64_t v, char out[13])
{
	for (int i = 11; i >= 0; i--, v >>= 5)
		out[i] = b32[v & 31];
	out[12] = '\0';
}

/*
 * The table position of key id, taking a free one while fewer than key_max
 * ids have one; -1 = "other". Lock-free: a compare-and-swap only the first
 * time an id is seen; once full, a plain probe.
 */
static int key_slot(struct metrics *m, const char *id)
{
	uint64_t code = key_code(id);
	unsigned mask = m->key_cap - 1, h;
	bool reserved = false;

	if (!code)
		return -1;
	h = (unsigned)((code * 0x9e3779b97f4a7c15ull) >> 40) & mask;
	for (unsigned i = 0; i < m->key_cap; i++, h = (h + 1) & mask) {
		uint64_t v = atomic_load_explicit(&m->key_ids[h], memory_order_acquire);

		if (v == code)
			goto found;
		if (v)
			continue;
		/* A free position: this id is new. Reserve a place under the cap, then claim it. */
		if (!reserved) {
			if (atomic_load_explicit(&m->key_used, memory_order_relaxed) >= m->key_max)
				return -1;
			if (atomic_fetch_add(&m->key_used, 1) >= m->key_max) {
				atomic_fetch_sub(&m->key_used, 1);
				return -1;
			}
			reserved = true;
		}
		if (atomic_compare_exchange_strong(&m->key_ids[h], &v, code))
			return (int)h;
		if (v == code)
			goto found;
	}
	if (reserved)
		atomic_fetch_sub(&m->key_used, 1);
	return -1;
found:
	if (reserved)
		atomic_fetch_sub(&m->key_used, 1);
	return (int)h;
}

void metrics_record_map(struct metrics_worker *mw, const struct metrics_map *map,
			const struct alog_entry *e, unsigned listener, int route, int pool, int server,
			const char *key_id)
{
	if (!mw || !map || listener >= map->nlisteners)
		return;
	struct metrics *m = (struct metrics *)mw->m;
	const struct config *cfg = m->cfg;
	struct metrics_table *const *t = m->tables;
	enum metrics_class cls = metrics_class_of(e->status);
	enum metrics_method meth = metrics_method_of(e->method, e->method_len);
	size_t rslot = route >= 0 && (unsigned)route < map->nroutes ? (size_t)route + 1 : 0;
	int32_t s;

	if ((s = map->qslot[(size_t)listener * (map->nroutes + 1) + rslot]) >= 0)
		bump(&cell(t[MT_REQUESTS], mw->id, s)[meth * MC_N + cls], 1);
	if ((s = map->rslot[rslot]) >= 0)
		hist_observe(cell(t[MT_ROUTE], mw->id, s), cfg->admin.request_buckets_us,
			     cfg->admin.nrequest_buckets, e->total_ns);
	if ((s = map->lslot[listener]) >= 0) {
		_Atomic uint64_t *c = cell(t[MT_LISTENER], mw->id, s);

		bump(&c[0], e->bytes_in);
		bump(&c[1], e->bytes_out);
	}
	if (pool >= 0 && server >= 0 && (unsigned)pool < map->nupstreams && e->upstream_ns >= 0 &&
	    map->server_base[pool] + (unsigned)server < map->server_base[pool + 1] &&
	    (s = map->sslot[map->server_base[pool] + (unsigned)server]) >= 0) {
		_Atomic uint64_t *c = cell(t[MT_SERVER], mw->id, s);
		unsigned nb = cfg->admin.nupstream_buckets;

		hist_observe(c, cfg->admin.upstream_buckets_us, nb, (uint64_t)e->upstream_ns);
		bump(&c[hist_words(nb) + cls], 1);
	}
	if (e->error)
		bump(&mw->errors[metrics_error_of(e->status, e->error)], 1);
	if (m->key_max && key_id && key_id[0]) {
		int k = key_slot(m, key_id);

		bump(&mw->keys[(size_t)(k + 1) * MK_N + metrics_key_result_of(e->status, e->error)], 1);
	}
}

void metrics_record(struct metrics_worker *mw, const struct alog_entry *e, unsigned listener,
		    int route, int pool, int server)
{
	if (mw)
		metrics_record_map(mw, mw->m->map0, e, listener, route, pool, server, NULL);
}

/* ---- text format --------------------------------------------------------------- */

struct metrics_out {
	char *buf;
	size_t len, cap;
	bool oom;
};

static void out_printf(struct metrics_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(struct metrics_out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->oom = true;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t ncap = o->cap * 2 + (size_t)n;
		char *nb = realloc(o->buf, ncap);

		if (!nb) {
			o->oom = true;
			return;
		}
		o->buf = nb;
		o->cap = ncap;
	}
}

size_t metrics_escape(const char *in, char *out, size_t cap)
{
	size_t n = 0;

	if (!cap)
		return 0;
	for (; in && *in && n + 2 < cap; in++) {
		if (*in == '\\' || *in == '"') {
			out[n++] = '\\';
			out[n++] = *in;
		} else if (*in == '\n') {
			out[n++] = '\\';
			out[n++] = 'n';
		} else {
			out[n++] = *in;
		}
	}
	out[n] = '\0';
	return n;
}

void metrics_family(struct metrics_out *o, const char *name, const char *type, const char *help)
{
	out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_labels(struct metrics_out *o, const char *const *labels)
{
	char esc[512];

	if (!labels || !labels[0])
		return;
	out_printf(o, "{");
	for (unsigned i = 0; labels[i]; i += 2) {
		metrics_escape(labels[i + 1], esc, sizeof(esc));
		out_printf(o, "%s%s=\"%s\"", i ? "," : "", labels[i], esc);
	}
	out_printf(o, "}");
}

void metrics_sample_u64(struct metrics_out *o, const char *name, const char *const *labels,
			uint64_t v)
{
	out_printf(o, "%s", name);
	put_labels(o, labels);
	out_printf(o, " %llu\n", (unsigned long long)v);
}

void metrics_sample_f64(struct metrics_out *o, const char *name, const char *const *labels,
			double v)
{
	out_printf(o, "%s", name);
	put_labels(o, labels);
	out_printf(o, " %.9g\n", v);
}

/* A bound in microseconds as Prometheus writes seconds: 5000 → "0.005", 2500000 → "2.5". */
static void fmt_seconds(uint64_t us, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%llu.%06llu", (unsigned long long)(us / 1000000),
			 (unsigned long long)(us % 1000000));

	while (n > 0 && buf[n - 1] == '0')
		buf[--n] = '\0';
	if (n > 0 && buf[n - 1] == '.')
		buf[--n] = '\0';
}

/* Sums a slot's counters over the workers into out[words]; zeros for slot -1. Caller holds m->lock. */
static void slot_sum(const struct metrics *m, unsigned t, int32_t s, uint64_t *out)
{
	const struct metrics_table *tb = m->tables[t];

	memset(out, 0, tb->words * sizeof(*out));
	if (s < 0)
		return;
	for (unsigned w = 0; w < m->nworkers; w++) {
		const _Atomic uint64_t *c = cell(tb, w, s);

		for (unsigned i = 0; i < tb->words; i++)
			out[i] += rd(&c[i]);
	}
}

/* The slot of a name in table t, -1 when never counted. Caller holds m->lock. */
static int32_t find(const struct metrics *m, unsigned t, const char *a, const char *b)
{
	char key[JOIN_MAX];
	const char *name = b ? join(key, sizeof(key), a, b) : a;

	return name ? table_find(m->tables[t], name) : -1;
}

/* Writes one histogram (h: hist_words(nb) summed counters) as _bucket, _sum and _count lines. */
static void put_hist(struct metrics_out *o, const char *name, const char *lname, const char *lval,
		     const char *lname2, const char *lval2, const uint64_t *h, const uint64_t *bounds,
		     unsigned nb)
{
	char bname[128], le[32];
	uint64_t cum = 0, count = h[nb + 1];

	snprintf(bname, sizeof(bname), "%s_bucket", name);
	for (unsigned b = 0; b <= nb; b++) {
		cum += h[b];
		if (b < nb)
			fmt_seconds(bounds[b], le, sizeof(le));
		else
			strcpy(le, "+Inf");
		const char *labels[] = { lname, lval, lname2, lval2, "le", le, NULL };

		if (!lname2) {
			labels[2] = "le";
			labels[3] = le;
			labels[4] = NULL;
		}
		metrics_sample_u64(o, bname, labels, cum);
	}
	/* Racy reads across workers: the count is never shown below the +Inf bucket. */
	if (count < cum)
		count = cum;
	const char *labels[] = { lname, lval, lname2, lval2, NULL };

	snprintf(bname, sizeof(bname), "%s_sum", name);
	metrics_sample_f64(o, bname, labels, (double)h[nb + 2] / 1e9);
	snprintf(bname, sizeof(bname), "%s_count", name);
	metrics_sample_u64(o, bname, labels, count);
}

static const char *route_label(const struct config *cfg, unsigned r)
{
	return r ? cfg->routes[r - 1].name : "";
}

/* The configuration served now: a reload's (a reference taken, *ref set), else the first. */
static struct snapshot *served_get(const struct agent *a, bool *ref)
{
	*ref = a->live != NULL;
	return *ref ? reload_live((struct agent *)a) : a->snap;
}

/* Whether server s of pool u has the same address as an earlier one of the pool (one series for both). */
static bool server_repeated(const struct cfg_upstream *u, unsigned s)
{
	for (unsigned i = 0; i < s; i++)
		if (u->servers[i].addr.len == u->servers[s].addr.len &&
		    !memcmp(&u->servers[i].addr.ss, &u->servers[s].addr.ss, u->servers[s].addr.len))
			return true;
	return false;
}

/*
 * Label sets of the served configuration only: a route, listener or server
 * a reload removed is no longer exported (its series goes stale, as a
 * client library's removed child does) while its counts stay in its slot, so
 * a name that comes back carries on from where it stopped and no exported
 * series ever goes backwards.
 */
static void render_proxy(struct metrics_out *o, const struct agent *a, const struct config *cfg)
{
	struct metrics *m = a->metrics;
	const struct config *mc = m->cfg; /* histogram bounds: the admin section cannot change live */
	const struct worker_set *ws = a->workers;
	uint64_t v, buf[MM_N * MC_N + 2 * CFG_MAX_BUCKETS + 16];
	char sname[NET_ADDR_STRLEN];

	pthread_mutex_lock(&m->lock);
	metrics_family(o, "openclaw_requests_total", "counter",
		       "Finished exchanges by listener, route (\"\" = none matched), method and status class.");
	for (unsigned l = 0; l < cfg->nlisteners; l++)
		for (unsigned r = 0; r <= cfg->nroutes; r++) {
			slot_sum(m, MT_REQUESTS, find(m, MT_REQUESTS, cfg->listeners[l].name, route_label(cfg, r)),
				 buf);
			for (unsigned me = 0; me < MM_N; me++)
				for (unsigned c = 0; c < MC_N; c++) {
					if (!(v = buf[me * MC_N + c]))
						continue;
					const char *labels[] = { "listener", cfg->listeners[l].name,
								 "route", route_label(cfg, r),
								 "method", method_names[me],
								 "code_class", class_names[c], NULL };

					metrics_sample_u64(o, "openclaw_requests_total", labels, v);
				}
		}

	metrics_family(o, "openclaw_request_duration_seconds", "histogram",
		       "First request byte to last response byte, by route.");
	for (unsigned r = 0; r <= cfg->nroutes; r++) {
		slot_sum(m, MT_ROUTE, find(m, MT_ROUTE, route_label(cfg, r), NULL), buf);
		put_hist(o, "openclaw_request_duration_seconds", "route", route_label(cfg, r), NULL, NULL,
			 buf, mc->admin.request_buckets_us, mc->admin.nrequest_buckets);
	}

	metrics_family(o, "openclaw_upstream_response_seconds", "histogram",
		       "Request sent to response head received, by upstream pool and server.");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned s = 0; s < cfg->upstreams[p].nservers; s++) {
			if (server_repeated(&cfg->upstreams[p], s))
				continue;
			server_name(&cfg->upstreams[p], s, sname, sizeof(sname));
			slot_sum(m, MT_SERVER, find(m, MT_SERVER, cfg->upstreams[p].name, sname), buf);
			put_hist(o, "openclaw_upstream_response_seconds", "upstream", cfg->upstreams[p].name,
				 "server", sname, buf, mc->admin.upstream_buckets_us,
				 mc->admin.nupstream_buckets);
		}

	metrics_family(o, "openclaw_upstream_responses_total", "counter",
		       "Responses received from each server, by status class.");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned s = 0; s < cfg->upstreams[p].nservers; s++) {
			if (server_repeated(&cfg->upstreams[p], s))
				continue;
			server_name(&cfg->upstreams[p], s, sname, sizeof(sname));
			slot_sum(m, MT_SERVER, find(m, MT_SERVER, cfg->upstreams[p].name, sname), buf);
			for (unsigned c = 0; c < MC_N; c++) {
				if (!(v = buf[hist_words(mc->admin.nupstream_buckets) + c]))
					continue;
				const char *labels[] = { "upstream", cfg->upstreams[p].name, "server", sname,
							 "code_class", class_names[c], NULL };

				metrics_sample_u64(o, "openclaw_upstream_responses_total", labels, v);
			}
		}

	for (unsigned dir = 0; dir < 2; dir++) {
		const char *name = dir ? "openclaw_sent_bytes_total" : "openclaw_received_bytes_total";

		metrics_family(o, name, "counter",
			       dir ? "Response bytes sent to clients (head and body), by listener."
				   : "Request bytes received from clients (head and body), by listener.");
		for (unsigned l = 0; l < cfg->nlisteners; l++) {
			const char *labels[] = { "listener", cfg->listeners[l].name, NULL };

			slot_sum(m, MT_LISTENER, find(m, MT_LISTENER, cfg->listeners[l].name, NULL), buf);
			metrics_sample_u64(o, name, labels, buf[dir]);
		}
	}
	pthread_mutex_unlock(&m->lock);

	metrics_family(o, "openclaw_proxy_errors_total", "counter",
		       "Exchanges the proxy failed or refused itself, by reason.");
	for (unsigned e = 0; e < ME_N; e++) {
		const char *labels[] = { "reason", error_names[e], NULL };

		v = 0;
		for (unsigned w = 0; w < m->nworkers; w++)
			v += rd(&m->workers[w].errors[e]);
		metrics_sample_u64(o, "openclaw_proxy_errors_total", labels, v);
	}

	if (m->key_max) {
		char id[13];

		metrics_family(o, "openclaw_auth_key_results_total", "counter",
			       "Exchanges of identified API keys by key id (the first admin.per_key_labels_max "
			       "ids seen; later ones as \"other\") and result.");
		for (unsigned k = 0; k <= m->key_cap; k++) {
			uint64_t code = k ? atomic_load(&m->key_ids[k - 1]) : 0;

			if (k && !code)
				continue;
			if (k)
				key_decode(code, id);
			for (unsigned r = 0; r < MK_N; r++) {
				v = 0;
				for (unsigned w = 0; w < m->nworkers; w++)
					v += rd(&m->workers[w].keys[(size_t)k * MK_N + r]);
				if (!v)
					continue;
				const char *labels[] = { "key_id", k ? id : "other", "result",
							 key_result_names[r], NULL };

				metrics_sample_u64(o, "openclaw_auth_key_results_total", labels, v);
			}
		}
	}

	uint64_t active = 0, accepted = 0, connects = 0, reuses = 0, heads = 0;


	/* While draining, workers_stop may free ws->workers under us: only the blocks metrics own are read. */
	bool live = atomic_load(&((struct agent *)a)->state) != AGENT_DRAINING;

	for (unsigned i = 0; live && ws && i < ws->n; i++) {
		const struct worker_stats *s = &ws->workers[i].stats;

		active += rd(&s->active);
		accepted += rd(&s->accepted);
		connects += rd(&s->upstream_connects);
		reuses += rd(&s->upstream_reuses);
		heads += rd(&s->requests);
	}
	metrics_family(o, "openclaw_client_connections", "gauge", "Client connections open now.");
	metrics_sample_u64(o, "openclaw_client_connections", NULL, active);
	metrics_family(o, "openclaw_accepted_connections_total", "counter",
		       "Client connections accepted.");
	metrics_sample_u64(o, "openclaw_accepted_connections_total", NULL, accepted);
	metrics_family(o, "openclaw_request_heads_total", "counter",
		       "Request heads parsed (requests_total also counts malformed ones).");
	metrics_sample_u64(o, "openclaw_request_heads_total", NULL, heads);
	metrics_family(o, "openclaw_upstream_connections_opened_total", "counter",
		       "New backend connections opened.");
	metrics_sample_u64(o, "openclaw_upstream_connections_opened_total", NULL, connects);
	metrics_family(o, "openclaw_upstream_connection_reuses_total", "counter",
		       "Requests sent on a pooled keep-alive backend connection.");
	metrics_sample_u64(o, "openclaw_upstream_connection_reuses_total", NULL, reuses);
}

static unsigned m_nworkers(const struct agent *a)
{
	return a->metrics ? a->metrics->nworkers : 0;
}

static void render_process(struct metrics_out *o, const struct agent *a)
{
	const char *ver[] = { "version", OPENCLAW_VERSION, NULL };
	int state = atomic_load(&((struct agent *)a)->state);

	metrics_family(o, "openclaw_build_info", "gauge", "Always 1; the version is a label.");
	metrics_sample_u64(o, "openclaw_build_info", ver, 1);
	metrics_family(o, "process_start_time_seconds", "gauge",
		       "Start time of the process since the Unix epoch, in seconds.");
	metrics_sample_u64(o, "process_start_time_seconds", NULL, a->started_at);
	metrics_family(o, "openclaw_config_last_load_timestamp_seconds", "gauge",
		       "When the running configuration was loaded, Unix seconds.");
	metrics_sample_u64(o, "openclaw_config_last_load_timestamp_seconds", NULL, a->loaded_at);
	metrics_family(o, "openclaw_workers", "gauge", "Worker threads.");
	metrics_sample_u64(o, "openclaw_workers", NULL, m_nworkers(a));
	metrics_family(o, "openclaw_ready", "gauge", "1 while serving, 0 while starting or draining.");
	metrics_sample_u64(o, "openclaw_ready", NULL, state == AGENT_RUNNING);
	metrics_family(o, "openclaw_access_log_dropped_lines_total", "counter",
		       "Access log lines dropped because the writer could not keep up.");
	metrics_sample_u64(o, "openclaw_access_log_dropped_lines_total", NULL, alog_dropped(a->alog));
}

static void collect_guard(void *ctx, struct metrics_out *o)
{
	struct guard *g = ctx;
	struct guard_stat sum[GUARD_R_MAX];
	uint64_t bans = 0;

	if (guard_read_counters(g, sum, &bans))
		return;
	metrics_family(o, "openclaw_xdp_packets_total", "counter",
		       "Packets judged by the XDP guard (all interfaces, all CPUs), by verdict reason.");
	for (uint32_t r = 0; r < GUARD_R_MAX; r++) {
		const char *labels[] = { "reason", guard_reason_name(r), NULL };

		metrics_sample_u64(o, "openclaw_xdp_packets_total", labels, sum[r].packets);
	}
	metrics_family(o, "openclaw_xdp_bytes_total", "counter",
		       "Bytes of the packets judged by the XDP guard, by verdict reason.");
	for (uint32_t r = 0; r < GUARD_R_MAX; r++) {
		const char *labels[] = { "reason", guard_reason_name(r), NULL };

		metrics_sample_u64(o, "openclaw_xdp_bytes_total", labels, sum[r].bytes);
	}
	metrics_family(o, "openclaw_guard_autobans_total", "counter",
		       "Sources blocked in XDP by the L7 auto-ban.");
	metrics_sample_u64(o, "openclaw_guard_autobans_total", NULL, bans);
}

int metrics_render(const struct agent *a, char **out, size_t *len)
{
	struct metrics_out o = { .cap = 16384 };

	o.buf = malloc(o.cap);
	if (!o.buf)
		return -ENOMEM;
	o.buf[0] = '\0';
	pthread_mutex_lock(&((struct agent *)a)->scrape_lock);
	render_process(&o, a);
	if (a->metrics) {
		bool ref;
		struct snapshot *snap = served_get(a, &ref);

		render_proxy(&o, a, snap->cfg);
		if (ref)
			snapshot_put(snap);
		if (a->guard)
			collect_guard(a->guard, &o);
		for (unsigned i = 0; i < a->metrics->ncollectors; i++)
			a->metrics->collectors[i].fn(a->metrics->collectors[i].ctx, &o);
	}
	pthread_mutex_unlock(&((struct agent *)a)->scrape_lock);
	if (o.oom) {
		free(o.buf);
		return -ENOMEM;
	}
	*out = o.buf;
	*len = o.len;
	return 0;
}

/* ---- "stats": the same numbers as JSON for clawctl stats and clawctl top ------------- */

static void json_buckets(struct jsonw *w, const char *key, const uint64_t *h, unsigned nb)
{
	jsonw_arr_begin(w, key);
	for (unsigned b = 0; b <= nb; b++)
		jsonw_u64(w, NULL, h[b]);
	jsonw_arr_end(w);
}

/* Routes and servers of the served configuration, as /metrics shows them. Caller holds m->lock. */
static void stats_series(struct jsonw *w, struct metrics *m, const struct config *cfg,
			 uint64_t cls[MC_N])
{
	const struct config *mc = m->cfg;
	uint64_t buf[MM_N * MC_N + 2 * CFG_MAX_BUCKETS + 16];
	char sname[NET_ADDR_STRLEN];

	jsonw_arr_begin(w, "routes");
	for (unsigned r = 0; r <= cfg->nroutes; r++) {
		uint64_t rc[MC_N] = { 0 }, n = 0;

		for (unsigned l = 0; l < cfg->nlisteners; l++) {
			slot_sum(m, MT_REQUESTS, find(m, MT_REQUESTS, cfg->listeners[l].name, route_label(cfg, r)),
				 buf);
			for (unsigned me = 0; me < MM_N; me++)
				for (unsigned c = 0; c < MC_N; c++)
					rc[c] += buf[me * MC_N + c];
		}
		for (unsigned c = 0; c < MC_N; c++) {
			n += rc[c];
			cls[c] += rc[c];
		}
		slot_sum(m, MT_ROUTE, find(m, MT_ROUTE, route_label(cfg, r), NULL), buf);
		jsonw_obj_begin(w);
		jsonw_str(w, "name", route_label(cfg, r));
		jsonw_u64(w, "requests", n);
		jsonw_u64(w, "errors_5xx", rc[MC_5XX]);
		json_buckets(w, "buckets", buf, mc->admin.nrequest_buckets);
		jsonw_obj_end(w);
	}
	jsonw_arr_end(w);
	jsonw_arr_begin(w, "servers");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned s = 0; s < cfg->upstreams[p].nservers; s++) {
			unsigned cbase = hist_words(mc->admin.nupstream_buckets);
			uint64_t n = 0;

			if (server_repeated(&cfg->upstreams[p], s))
				continue;
			server_name(&cfg->upstreams[p], s, sname, sizeof(sname));
			slot_sum(m, MT_SERVER, find(m, MT_SERVER, cfg->upstreams[p].name, sname), buf);
			for (unsigned c = 0; c < MC_N; c++)
				n += buf[cbase + c];
			jsonw_obj_begin(w);
			jsonw_str(w, "upstream", cfg->upstreams[p].name);
			jsonw_str(w, "server", sname);
			jsonw_u64(w, "responses", n);
			jsonw_u64(w, "errors_5xx", buf[cbase + MC_5XX]);
			json_buckets(w, "buckets", buf, mc->admin.nupstream_buckets);
			jsonw_obj_end(w);
		}
	jsonw_arr_end(w);
}

static int cmd_stats(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		     size_t errlen)
{
	struct agent *a = ctx;
	struct metrics *m = a->metrics;
	const struct config *mc, *cfg;
	struct snapshot *snap;
	uint64_t cls[MC_N] = { 0 }, bin = 0, bout = 0, active = 0, accepted = 0, buf[2];
	bool ref;

	if (!m) {
		snprintf(err, errlen, "metrics are not running");
		return -EAGAIN;
	}
	mc = m->cfg;
	snap = served_get(a, &ref);
	cfg = snap->cfg;
	jsonw_u64(w, "time_ms", (uint64_t)time(NULL) * 1000);
	jsonw_u64(w, "uptime_s", (uint64_t)time(NULL) - a->started_at);
	for (unsigned i = 0; i < a->workers->n; i++) {
		active += rd(&a->workers->workers[i].stats.active);
		accepted += rd(&a->workers->workers[i].stats.accepted);
	}
	jsonw_arr_begin(w, "bounds_us");
	for (unsigned b = 0; b < mc->admin.nrequest_buckets; b++)
		jsonw_u64(w, NULL, mc->admin.request_buckets_us[b]);
	jsonw_arr_end(w);
	jsonw_arr_begin(w, "upstream_bounds_us");
	for (unsigned b = 0; b < mc->admin.nupstream_buckets; b++)
		jsonw_u64(w, NULL, mc->admin.upstream_buckets_us[b]);
	jsonw_arr_end(w);
	pthread_mutex_lock(&m->lock);
	stats_series(w, m, cfg, cls);
	for (unsigned l = 0; l < cfg->nlisteners; l++) {
		slot_sum(m, MT_LISTENER, find(m, MT_LISTENER, cfg->listeners[l].name, NULL), buf);
		bin += buf[0];
		bout += buf[1];
	}
	pthread_mutex_unlock(&m->lock);
	if (ref)
		snapshot_put(snap);
	jsonw_obj_begin_key(w, "classes");
	for (unsigned c = 0; c < MC_N; c++)
		jsonw_u64(w, class_names[c], cls[c]);
	jsonw_obj_end(w);
	jsonw_obj_begin_key(w, "errors");
	for (unsigned e = 0; e < ME_N; e++) {
		uint64_t v = 0;

		for (unsigned k = 0; k < m->nworkers; k++)
			v += rd(&m->workers[k].errors[e]);
		jsonw_u64(w, error_names[e], v);
	}
	jsonw_obj_end(w);
	jsonw_u64(w, "bytes_in", bin);
	jsonw_u64(w, "bytes_out", bout);
	jsonw_u64(w, "connections", active);
	jsonw_u64(w, "accepted", accepted);
	jsonw_u64(w, "access_log_dropped", alog_dropped(a->alog));

	struct guard_stat gs[GUARD_R_MAX];
	uint64_t bans = 0;

	if (a->guard && guard_read_counters(a->guard, gs, &bans) == 0) {
		jsonw_obj_begin_key(w, "xdp");
		for (uint32_t r = 0; r < GUARD_R_MAX; r++)
			jsonw_u64(w, guard_reason_name(r), gs[r].packets);
		jsonw_u64(w, "autobans", bans);
		jsonw_obj_end(w);
	} else {
		jsonw_null(w, "xdp");
	}
	return 0;
}

int metrics_register_commands(struct control *c, struct agent *a)
{
	return control_register(c, "stats", cmd_stats, a);
}

double metrics_quantile(const uint64_t *bounds_us, unsigned nbounds, const uint64_t *counts, double q)
{
	uint64_t total = 0, cum = 0;

	for (unsigned b = 0; b <= nbounds; b++)
		total += counts[b];
	if (!total || !nbounds)
		return -1;
	double rank = q * (double)total;

	for (unsigned b = 0; b < nbounds; b++) {
		if (counts[b] && (double)(cum + counts[b]) >= rank) {
			double lo = b ? (double)bounds_us[b - 1] : 0, hi = (double)bounds_us[b];

			return lo + (hi - lo) * (rank - (double)cum) / (double)counts[b];
		}
		cum += counts[b];
	}
	return (double)bounds_us[nbounds - 1];
}
