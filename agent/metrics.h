/* agent/metrics.h — Prometheus metrics: per-worker lock-free counters and histograms, summed into text format 0.0.4. */
#ifndef OPENCLAW_METRICS_H
#define OPENCLAW_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent;
struct alog_entry;
struct config;
struct control;

/* Methods get a label of their own from this fixed set; the rest are "other" (bounded cardinality). */
enum metrics_method {
	MM_GET, MM_HEAD, MM_POST, MM_PUT, MM_DELETE, MM_PATCH, MM_OPTIONS, MM_OTHER, MM_N
};

/* Status classes: 1xx..5xx, and "none" when no status was sent (the client left first). */
enum metrics_class { MC_1XX, MC_2XX, MC_3XX, MC_4XX, MC_5XX, MC_NONE, MC_N };

/* Why the proxy itself answered with an error or gave up (proxy_errors_total{reason}). */
enum metrics_error {
	ME_NO_ROUTE,         /* 404: no route matched */
	ME_BAD_REQUEST,      /* 4xx from the parser: malformed head or chunked body */
	ME_HEAD_TOO_LARGE,   /* 414/431 */
	ME_BODY_TOO_LARGE,   /* 413: over max_body */
	ME_CLIENT_TIMEOUT,   /* 408: slow head or body */
	ME_CONNECT_TIMEOUT,  /* 504: backend connect timed out */
	ME_CONNECT_FAILED,   /* 502: backend refused or unreachable */
	ME_RESPONSE_TIMEOUT, /* 504: backend response head too slow, or the request timeout */
	ME_NO_SERVER,        /* 503: no server available in the pool */
	ME_BAD_GATEWAY,      /* 502: backend closed, reset or answered malformed */
	ME_CLIENT_CLOSED,    /* the client went away mid-exchange */
	ME_RESPONSE_STALLED, /* response body stalled; both closed */
	ME_SHUTDOWN,         /* cut by the end of a graceful stop */
	ME_OTHER,            /* anything else (out of memory, ...) */
	ME_N
};

/*
 * Series follow the served configuration (docs/metrics.md, "Reloads"): each
 * label set (a listener, a route, a listener and route pair, an upstream
 * server) is a name with a slot that never moves; a reload adds slots for new
 * names, and a name that comes back finds its old counts. Each worker has its
 * own counters per slot, so the request path writes without a lock.
 */
struct metrics_table;

/*
 * One configuration's indexes translated to slots, built when a worker takes
 * up a snapshot (worker.c gen_new) and kept with that generation, so an
 * exchange is counted under the names of the configuration it ran with.
 * Slot -1: not counted (the table was full).
 */
struct metrics_map {
	unsigned nlisteners, nroutes, nupstreams;
	int32_t *lslot;        /* [listener] per-listener bytes */
	int32_t *rslot;        /* [route + 1] request histogram; 0 = no route */
	int32_t *qslot;        /* [listener * (nroutes + 1) + route + 1] requests by method and class */
	int32_t *sslot;        /* [server_base[pool] + server] upstream histogram and classes */
	unsigned *server_base; /* [pool] index of its first server in sslot; [nupstreams] = their number */
};

/* Per-key results (admin.per_key_labels): the label value "other" collects keys past the cap. */
enum metrics_key_result { MK_OK, MK_OUT_OF_SCOPE, MK_RATE_LIMITED, MK_QUOTA, MK_N };

/*
 * A worker's own counters outside the slot tables: written by that worker
 * only (relaxed load + store, no locked instruction), read racily but safely
 * by the renderer.
 */
struct metrics_worker {
	const struct metrics *m;
	unsigned id;                   /* worker index: its column in every table */
	_Atomic uint64_t errors[ME_N];
	_Atomic uint64_t *keys;        /* [key slot + 1][MK_N] when per-key labels are on; slot 0 = other */
};

/* Adds a metric family to a scrape: later modules (TLS, auth, health) register one. */
struct metrics_out;
typedef void (*metrics_collect_fn)(void *ctx, struct metrics_out *o);

enum { MT_LISTENER, MT_ROUTE, MT_REQUESTS, MT_SERVER, MT_N };

struct metrics {
	const struct config *cfg;    /* the first configuration: histogram bounds, per-key options (fixed sections) */
	unsigned nworkers;
	struct metrics_worker *workers;
	struct metrics_table *tables[MT_N];
	pthread_mutex_t lock;        /* slot tables' names: map building and scrapes */
	struct metrics_map *map0;    /* cfg's map: metrics_record's indexes */
	/* Per-key labels: key id (60 bits, bit 63 set) per open-addressing slot; 0 = free. */
	_Atomic uint64_t *key_ids;
	unsigned key_cap;            /* power of two, at least twice key_max */
	unsigned key_max;            /* ids with a label of their own; 0 = per-key labels off */
	_Atomic unsigned key_used;   /* ids given a slot so far */
	struct {
		metrics_collect_fn fn;
		void *ctx;
	} collectors[16];
	unsigned ncollectors;
};

/* Sizes everything from cfg (which must outlive m). Returns 0 or -ENOMEM. */
int metrics_create(struct metrics **out, const struct config *cfg, unsigned nworkers);
void metrics_free(struct metrics *m);

/* Worker i's block, or NULL when m is NULL. */
struct metrics_worker *metrics_worker(struct metrics *m, unsigned i);

/*
 * Slots for every name of cfg (registering new ones), for a worker taking up
 * a snapshot of it. *out NULL when m is NULL. 0 or -ENOMEM.
 */
int metrics_map_new(struct metrics *m, const struct config *cfg, struct metrics_map **out);
void metrics_map_free(struct metrics_map *map);

/*
 * Records one finished exchange (the access log's entry) in the worker's
 * counters, indexes of map's configuration: route < 0 = none matched;
 * pool/server < 0 = no backend used. key_id: the authenticated API key ("" or
 * NULL when none), counted per key when admin.per_key_labels is on.
 */
void metrics_record_map(struct metrics_worker *mw, const struct metrics_map *map,
			const struct alog_entry *e, unsigned listener, int route, int pool, int server,
			const char *key_id);
/* The same with indexes of the configuration m was created with. */
void metrics_record(struct metrics_worker *mw, const struct alog_entry *e, unsigned listener,
		    int route, int pool, int server);

/* Per-key result of an exchange whose key was identified (status and the gate's error). */
enum metrics_key_result metrics_key_result_of(int status, const char *error);

/* Registers a collector called on each scrape, before the admin listener starts. */
int metrics_register(struct metrics *m, metrics_collect_fn fn, void *ctx);

/* Classification helpers (exposed for tests). */
enum metrics_method metrics_method_of(const char *m, size_t n);
enum metrics_class metrics_class_of(int status);
enum metrics_error metrics_error_of(int status, const char *error);
const char *metrics_error_name(enum metrics_error e);
/*
 * The q-quantile (0..1) in microseconds of a histogram given as bounds (µs)
 * and non-cumulative counts[nbounds + 1], interpolating linearly inside the
 * bucket (from 0 for the first). Observations past the last bound report
 * that bound. Returns -1 when the histogram is empty.
 */
double metrics_quantile(const uint64_t *bounds_us, unsigned nbounds, const uint64_t *counts, double q);

/* Index of the first bound >= ns (bounds in microseconds), nbounds for +Inf. */
unsigned metrics_bucket(const uint64_t *bounds_us, unsigned nbounds, uint64_t ns);

/*
 * Renders every metric of the running agent as text format 0.0.4 into a
 * malloc'd buffer (*out, *len). Returns 0 or -ENOMEM.
 */
int metrics_render(const struct agent *a, char **out, size_t *len);

/* ---- writing families (for collectors) ---- */

/* Starts a family: "# HELP" and "# TYPE" lines. type: "counter", "gauge", "histogram". */
void metrics_family(struct metrics_out *o, const char *name, const char *type, const char *help);
/*
 * One sample. labels: NULL-terminated name, value, name, value, ... (values
 * escaped here). The value is written as an integer.
 */
void metrics_sample_u64(struct metrics_out *o, const char *name, const char *const *labels,
			uint64_t v);
void metrics_sample_f64(struct metrics_out *o, const char *name, const char *const *labels,
			double v);

/* Label value escaping per the text format (\\, \", \n); returns bytes written (out NUL-terminated). */
size_t metrics_escape(const char *in, char *out, size_t cap);

/* Registers the "stats" control command (clawctl stats / top). */
int metrics_register_commands(struct control *c, struct agent *a);

#endif
