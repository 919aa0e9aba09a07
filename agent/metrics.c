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

/* ---- set-up --------------------------------------------------------------------- */

static int hist_init(struct metrics_hist *h, unsigned nbounds)
{
	h->buckets = calloc(nbounds + 1, sizeof(*h->buckets));
	return h->buckets ? 0 : -ENOMEM;
}

static size_t req_slots(const struct config *cfg)
{
	return (size_t)cfg->nlisteners * (cfg->nroutes + 1) * MM_N * MC_N;
}

int metrics_create(struct metrics **out, const struct config *cfg, unsigned nworkers)
{
	struct metrics *m = calloc(1, sizeof(*m));
	unsigned nroutes = cfg->nroutes + 1;

	if (!m)
		return -ENOMEM;
	m->cfg = cfg;
	m->nworkers = nworkers;
	m->server_base = calloc(cfg->nupstreams + 1, sizeof(*m->server_base));
	m->workers = calloc(nworkers, sizeof(*m->workers));
	if (!m->server_base || !m->workers)
		goto nomem;
	for (unsigned p = 0; p < cfg->nupstreams; p++) {
		m->server_base[p] = m->nservers;
		m->nservers += cfg->upstreams[p].nservers;
	}
	for (unsigned i = 0; i < nworkers; i++) {
		struct metrics_worker *w = &m->workers[i];

		w->m = m;
		w->requests = calloc(req_slots(cfg), sizeof(*w->requests));
		w->req_hist = calloc(nroutes, sizeof(*w->req_hist));
		w->up_hist = calloc(m->nservers + 1, sizeof(*w->up_hist));
		w->up_responses = calloc((size_t)(m->nservers + 1) * MC_N, sizeof(*w->up_responses));
		w->bytes_in = calloc(cfg->nlisteners + 1, sizeof(*w->bytes_in));
		w->bytes_out = calloc(cfg->nlisteners + 1, sizeof(*w->bytes_out));
		if (!w->requests || !w->req_hist || !w->up_hist || !w->up_responses || !w->bytes_in ||
		    !w->bytes_out)
			goto nomem;
		for (unsigned r = 0; r < nroutes; r++)
			if (hist_init(&w->req_hist[r], cfg->admin.nrequest_buckets))
				goto nomem;
		for (unsigned s = 0; s < m->nservers; s++)
			if (hist_init(&w->up_hist[s], cfg->admin.nupstream_buckets))
				goto nomem;
	}
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
	for (unsigned i = 0; m->workers && i < m->nworkers; i++) {
		struct metrics_worker *w = &m->workers[i];

		for (unsigned r = 0; w->req_hist && r < m->cfg->nroutes + 1; r++)
			free(w->req_hist[r].buckets);
		for (unsigned s = 0; w->up_hist && s < m->nservers; s++)
			free(w->up_hist[s].buckets);
		free(w->requests);
		free(w->req_hist);
		free(w->up_hist);
		free(w->up_responses);
		free(w->bytes_in);
		free(w->bytes_out);
	}
	free(m->workers);
	free(m->server_base);
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

/* ---- the request path ---------------------------------------------------------- */

static void hist_observe(struct metrics_hist *h, const uint64_t *bounds, unsigned nb, uint64_t ns)
{
	bump(&h->buckets[metrics_bucket(bounds, nb, ns)], 1);
	bump(&h->count, 1);
	bump(&h->sum_ns, ns);
}

void metrics_record(struct metrics_worker *mw, const struct alog_entry *e, unsigned listener,
		    int route, int pool, int server)
{
	if (!mw)
		return;
	const struct metrics *m = mw->m;
	const struct config *cfg = m->cfg;
	enum metrics_class cls = metrics_class_of(e->status);
	enum metrics_method meth = metrics_method_of(e->method, e->method_len);
	size_t rslot = route >= 0 && (unsigned)route < cfg->nroutes ? (size_t)route + 1 : 0;

	if (listener >= cfg->nlisteners)
		return;
	bump(&mw->requests[((listener * (cfg->nroutes + 1) + rslot) * MM_N + meth) * MC_N + cls], 1);
	hist_observe(&mw->req_hist[rslot], cfg->admin.request_buckets_us, cfg->admin.nrequest_buckets,
		     e->total_ns);
	bump(&mw->bytes_in[listener], e->bytes_in);
	bump(&mw->bytes_out[listener], e->bytes_out);
	if (pool >= 0 && server >= 0 && (unsigned)pool < cfg->nupstreams &&
	    (unsigned)server < cfg->upstreams[pool].nservers) {
		unsigned s = m->server_base[pool] + (unsigned)server;

		if (e->upstream_ns >= 0) {
			hist_observe(&mw->up_hist[s], cfg->admin.upstream_buckets_us,
				     cfg->admin.nupstream_buckets, (uint64_t)e->upstream_ns);
			bump(&mw->up_responses[(size_t)s * MC_N + cls], 1);
		}
	}
	if (e->error)
		bump(&mw->errors[metrics_error_of(e->status, e->error)], 1);
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

/* Sums one histogram over the workers and writes its _bucket, _sum and _count lines. */
static void put_hist(struct metrics_out *o, const struct metrics *m, const char *name,
		     const char *lname, const char *lval, const char *lname2, const char *lval2,
		     bool upstream, unsigned idx, const uint64_t *bounds, unsigned nb)
{
	char bname[128], le[32];
	uint64_t cum = 0, count = 0, sum_ns = 0;

	snprintf(bname, sizeof(bname), "%s_bucket", name);
	for (unsigned b = 0; b <= nb; b++) {
		for (unsigned w = 0; w < m->nworkers; w++) {
			const struct metrics_hist *h = upstream ? &m->workers[w].up_hist[idx]
								: &m->workers[w].req_hist[idx];

			cum += rd(&h->buckets[b]);
		}
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
	for (unsigned w = 0; w < m->nworkers; w++) {
		const struct metrics_hist *h = upstream ? &m->workers[w].up_hist[idx]
							: &m->workers[w].req_hist[idx];

		count += rd(&h->count);
		sum_ns += rd(&h->sum_ns);
	}
	/* Bucket reads ran first: a count read later is never below the +Inf bucket. */
	if (count < cum)
		count = cum;
	const char *labels[] = { lname, lval, lname2, lval2, NULL };

	snprintf(bname, sizeof(bname), "%s_sum", name);
	metrics_sample_f64(o, bname, labels, (double)sum_ns / 1e9);
	snprintf(bname, sizeof(bname), "%s_count", name);
	metrics_sample_u64(o, bname, labels, count);
}

static const char *route_label(const struct config *cfg, unsigned slot)
{
	return slot ? cfg->routes[slot - 1].name : "";
}

static void render_proxy(struct metrics_out *o, const struct agent *a)
{
	const struct metrics *m = a->metrics;
	const struct config *cfg = m->cfg;
	const struct worker_set *ws = a->workers;
	uint64_t v;

	metrics_family(o, "openclaw_requests_total", "counter",
		       "Finished exchanges by listener, route (\"\" = none matched), method and status class.");
	for (unsigned l = 0; l < cfg->nlisteners; l++)
		for (unsigned r = 0; r <= cfg->nroutes; r++)
			for (unsigned me = 0; me < MM_N; me++)
				for (unsigned c = 0; c < MC_N; c++) {
					size_t i = ((l * (cfg->nroutes + 1) + r) * MM_N + me) * MC_N + c;

					v = 0;
					for (unsigned w = 0; w < m->nworkers; w++)
						v += rd(&m->workers[w].requests[i]);
					if (!v)
						continue;
					const char *labels[] = { "listener", cfg->listeners[l].name,
								 "route", route_label(cfg, r),
								 "method", method_names[me],
								 "code_class", class_names[c], NULL };

					metrics_sample_u64(o, "openclaw_requests_total", labels, v);
				}

	metrics_family(o, "openclaw_request_duration_seconds", "histogram",
		       "First request byte to last response byte, by route.");
	for (unsigned r = 0; r <= cfg->nroutes; r++)
		put_hist(o, m, "openclaw_request_duration_seconds", "route", route_label(cfg, r), NULL,
			 NULL, false, r, cfg->admin.request_buckets_us, cfg->admin.nrequest_buckets);

	metrics_family(o, "openclaw_upstream_response_seconds", "histogram",
		       "Request sent to response head received, by upstream pool and server.");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned s = 0; s < cfg->upstreams[p].nservers; s++)
			put_hist(o, m, "openclaw_upstream_response_seconds", "upstream",
				 cfg->upstreams[p].name, "server", a->snap->server_names[p][s], true,
				 m->server_base[p] + s, cfg->admin.upstream_buckets_us,
				 cfg->admin.nupstream_buckets);

	metrics_family(o, "openclaw_upstream_responses_total", "counter",
		       "Responses received from each server, by status class.");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned s = 0; s < cfg->upstreams[p].nservers; s++)
			for (unsigned c = 0; c < MC_N; c++) {
				size_t i = (size_t)(m->server_base[p] + s) * MC_N + c;

				v = 0;
				for (unsigned w = 0; w < m->nworkers; w++)
					v += rd(&m->workers[w].up_responses[i]);
				if (!v)
					continue;
				const char *labels[] = { "upstream", cfg->upstreams[p].name, "server",
							 a->snap->server_names[p][s], "code_class",
							 class_names[c], NULL };

				metrics_sample_u64(o, "openclaw_upstream_responses_total", labels, v);
			}

	metrics_family(o, "openclaw_received_bytes_total", "counter",
		       "Request bytes received from clients (head and body), by listener.");
	for (unsigned l = 0; l < cfg->nlisteners; l++) {
		const char *labels[] = { "listener", cfg->listeners[l].name, NULL };

		v = 0;
		for (unsigned w = 0; w < m->nworkers; w++)
			v += rd(&m->workers[w].bytes_in[l]);
		metrics_sample_u64(o, "openclaw_received_bytes_total", labels, v);
	}
	metrics_family(o, "openclaw_sent_bytes_total", "counter",
		       "Response bytes sent to clients (head and body), by listener.");
	for (unsigned l = 0; l < cfg->nlisteners; l++) {
		const char *labels[] = { "listener", cfg->listeners[l].name, NULL };

		v = 0;
		for (unsigned w = 0; w < m->nworkers; w++)
			v += rd(&m->workers[w].bytes_out[l]);
		metrics_sample_u64(o, "openclaw_sent_bytes_total", labels, v);
	}

	metrics_family(o, "openclaw_proxy_errors_total", "counter",
		       "Exchanges the proxy failed or refused itself, by reason.");
	for (unsigned e = 0; e < ME_N; e++) {
		const char *labels[] = { "reason", error_names[e], NULL };

		v = 0;
		for (unsigned w = 0; w < m->nworkers; w++)
			v += rd(&m->workers[w].errors[e]);
		metrics_sample_u64(o, "openclaw_proxy_errors_total", labels, v);
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
		render_proxy(&o, a);
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

static void json_buckets(struct jsonw *w, const char *key, const struct metrics *m, bool upstream,
			 unsigned idx, unsigned nb)
{
	jsonw_arr_begin(w, key);
	for (unsigned b = 0; b <= nb; b++) {
		uint64_t v = 0;

		for (unsigned i = 0; i < m->nworkers; i++)
			v += rd(upstream ? &m->workers[i].up_hist[idx].buckets[b]
					 : &m->workers[i].req_hist[idx].buckets[b]);
		jsonw_u64(w, NULL, v);
	}
	jsonw_arr_end(w);
}

static int cmd_stats(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		     size_t errlen)
{
	struct agent *a = ctx;
	const struct metrics *m = a->metrics;
	const struct config *cfg;
	uint64_t cls[MC_N] = { 0 }, bin = 0, bout = 0, active = 0, accepted = 0;

	if (!m) {
		snprintf(err, errlen, "metrics are not running");
		return -EAGAIN;
	}
	cfg = m->cfg;
	jsonw_u64(w, "time_ms", (uint64_t)time(NULL) * 1000);
	jsonw_u64(w, "uptime_s", (uint64_t)time(NULL) - a->started_at);
	for (unsigned i = 0; i < a->workers->n; i++) {
		active += rd(&a->workers->workers[i].stats.active);
		accepted += rd(&a->workers->workers[i].stats.accepted);
	}
	jsonw_arr_begin(w, "bounds_us");
	for (unsigned b = 0; b < cfg->admin.nrequest_buckets; b++)
		jsonw_u64(w, NULL, cfg->admin.request_buckets_us[b]);
	jsonw_arr_end(w);
	jsonw_arr_begin(w, "routes");
	for (unsigned r = 0; r <= cfg->nroutes; r++) {
		uint64_t rc[MC_N] = { 0 }, n = 0;

		for (unsigned l = 0; l < cfg->nlisteners; l++)
			for (unsigned me = 0; me < MM_N; me++)
				for (unsigned c = 0; c < MC_N; c++) {
					size_t i = ((l * (cfg->nroutes + 1) + r) * MM_N + me) * MC_N + c;

					for (unsigned k = 0; k < m->nworkers; k++)
						rc[c] += rd(&m->workers[k].requests[i]);
				}
		for (unsigned c = 0; c < MC_N; c++) {
			n += rc[c];
			cls[c] += rc[c];
		}
		jsonw_obj_begin(w);
		jsonw_str(w, "name", route_label(cfg, r));
		jsonw_u64(w, "requests", n);
		jsonw_u64(w, "errors_5xx", rc[MC_5XX]);
		json_buckets(w, "buckets", m, false, r, cfg->admin.nrequest_buckets);
		jsonw_obj_end(w);
	}
	jsonw_arr_end(w);
	jsonw_obj_begin_key(w, "classes");
	for (unsigned c = 0; c < MC_N; c++)
		jsonw_u64(w, class_names[c], cls[c]);
	jsonw_obj_end(w);
	jsonw_arr_begin(w, "upstream_bounds_us");
	for (unsigned b = 0; b < cfg->admin.nupstream_buckets; b++)
		jsonw_u64(w, NULL, cfg->admin.upstream_buckets_us[b]);
	jsonw_arr_end(w);
	jsonw_arr_begin(w, "servers");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned s = 0; s < cfg->upstreams[p].nservers; s++) {
			unsigned idx = m->server_base[p] + s;
			uint64_t sc[MC_N] = { 0 }, n = 0;

			for (unsigned c = 0; c < MC_N; c++) {
				for (unsigned k = 0; k < m->nworkers; k++)
					sc[c] += rd(&m->workers[k].up_responses[(size_t)idx * MC_N + c]);
				n += sc[c];
			}
			jsonw_obj_begin(w);
			jsonw_str(w, "upstream", cfg->upstreams[p].name);
			jsonw_str(w, "server", a->snap->server_names[p][s]);
			jsonw_u64(w, "responses", n);
			jsonw_u64(w, "errors_5xx", sc[MC_5XX]);
			json_buckets(w, "buckets", m, true, idx, cfg->admin.nupstream_buckets);
			jsonw_obj_end(w);
		}
	jsonw_arr_end(w);
	jsonw_obj_begin_key(w, "errors");
	for (unsigned e = 0; e < ME_N; e++) {
		uint64_t v = 0;

		for (unsigned k = 0; k < m->nworkers; k++)
			v += rd(&m->workers[k].errors[e]);
		jsonw_u64(w, error_names[e], v);
	}
	jsonw_obj_end(w);
	for (unsigned l = 0; l < cfg->nlisteners; l++)
		for (unsigned k = 0; k < m->nworkers; k++) {
			bin += rd(&m->workers[k].bytes_in[l]);
			bout += rd(&m->workers[k].bytes_out[l]);
		}
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
