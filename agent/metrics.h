/* agent/metrics.h — Prometheus metrics: per-worker lock-free counters and histograms, summed into text format 0.0.4. */
#ifndef OPENCLAW_METRICS_H
#define OPENCLAW_METRICS_H

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

/* One histogram: non-cumulative bucket counts (the renderer sums them), +Inf last. */
struct metrics_hist {
	_Atomic uint64_t *buckets; /* nbounds + 1 */
	_Atomic uint64_t count;
	_Atomic uint64_t sum_ns;   /* observed nanoseconds, exact */
};

/*
 * A worker's own counters: written by that worker only (relaxed load + store,
 * no locked instruction), read racily but safely by the renderer.
 */
struct metrics_worker {
	_Atomic uint64_t *requests;     /* [listener][route + 1][method][class]; route slot 0 = none */
	struct metrics_hist *req_hist;  /* [route + 1] request_duration_seconds */
	struct metrics_hist *up_hist;   /* [server, all pools in order] upstream_response_seconds */
	_Atomic uint64_t *up_responses; /* [server][class] exchanges answered by each server */
	_Atomic uint64_t *bytes_in;     /* [listener] */
	_Atomic uint64_t *bytes_out;    /* [listener] */
	_Atomic uint64_t errors[ME_N];
	const struct metrics *m;
};

/* Adds a metric family to a scrape: later modules (TLS, auth, health) register one. */
struct metrics_out;
typedef void (*metrics_collect_fn)(void *ctx, struct metrics_out *o);

struct metrics {
	const struct config *cfg;    /* sizes and label names */
	unsigned nworkers;
	unsigned nservers;           /* servers of every pool together */
	unsigned *server_base;       /* [pool] index of its first server */
	struct metrics_worker *workers;
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
 * Records one finished exchange (the access log's entry) in the worker's
 * block: route < 0 = none matched; pool/server < 0 = no backend used.
 */
void metrics_record(struct metrics_worker *mw, const struct alog_entry *e, unsigned listener,
		    int route, int pool, int server);

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
