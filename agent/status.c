/* agent/status.c — the "status" and "ping" control commands: what runs, since when, how busy. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "gate.h"
#include "netaddr.h"
#include "reload.h"
#include "splice.h"
#include "tls.h"

const char *status_algorithm_name(int algorithm)
{
	switch (algorithm) {
	case LB_ROUND_ROBIN: return "round_robin";
	case LB_WEIGHTED_ROUND_ROBIN: return "weighted_round_robin";
	case LB_LEAST_CONN: return "least_conn";
	case LB_IP_HASH: return "ip_hash";
	case LB_CONSISTENT_HASH: return "consistent_hash";
	case LB_PEAK_EWMA: return "peak_ewma";
	}
	return "unknown";
}

static void iso_time(uint64_t sec, char *buf, size_t len)
{
	time_t t = sec;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int cmd_status(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		      size_t errlen)
{
	struct agent *a = ctx;
	struct snapshot *live = a->live ? reload_live(a) : NULL; /* reload.h: the config served now */
	const struct config *cfg = live ? live->cfg : a->snap->cfg;
	uint64_t conns = 0, requests = 0, accepted = 0, connects = 0, reuses = 0;
	char when[32], addr[NET_ADDR_STRLEN];

	for (unsigned i = 0; i < a->workers->n; i++) {
		struct worker_stats *s = &a->workers->workers[i].stats;

		conns += atomic_load_explicit(&s->active, memory_order_relaxed);
		requests += atomic_load_explicit(&s->requests, memory_order_relaxed);
		accepted += atomic_load_explicit(&s->accepted, memory_order_relaxed);
		connects += atomic_load_explicit(&s->upstream_connects, memory_order_relaxed);
		reuses += atomic_load_explicit(&s->upstream_reuses, memory_order_relaxed);
	}
	jsonw_str(w, "version", OPENCLAW_VERSION);
	jsonw_i64(w, "pid", getpid());
	jsonw_u64(w, "uptime_s", (uint64_t)time(NULL) - a->started_at);
	jsonw_str(w, "config", a->config_path);
	iso_time(a->loaded_at, when, sizeof(when));
	jsonw_str(w, "config_loaded", when);
	jsonw_u64(w, "config_loaded_unix", a->loaded_at);
	jsonw_u64(w, "reloads", atomic_load(&a->reloads));
	jsonw_u64(w, "reload_failures", atomic_load(&a->reload_failures));
	jsonw_u64(w, "workers", a->workers->n);
	jsonw_u64(w, "connections", conns);
	jsonw_u64(w, "accepted", accepted);
	jsonw_u64(w, "requests", requests);
	jsonw_u64(w, "upstream_connects", connects);
	jsonw_u64(w, "upstream_reuses", reuses);
	jsonw_str(w, "access_log", cfg->access_log);
	/* Observability (docs/metrics.md): where to scrape, and whether the kernel guard feeds it. */
	if (cfg->admin.enabled)
		jsonw_str(w, "admin", net_addr_format((const struct sockaddr *)&cfg->admin.addr.ss, addr,
						      sizeof(addr)));
	else
		jsonw_null(w, "admin");
	jsonw_bool(w, "admin_token", cfg->admin.token_file != NULL);
	jsonw_str(w, "access_log_format", cfg->access_log_opts.format == CFG_LOG_COMBINED ? "combined"
					  : cfg->access_log_opts.format == CFG_LOG_TEMPLATE ? "template"
					  : "json");
	jsonw_arr_begin(w, "guard_interfaces");
	for (unsigned i = 0; a->guard && i < cfg->guard.ninterfaces; i++)
		jsonw_str(w, NULL, cfg->guard.interfaces[i]);
	jsonw_arr_end(w);
	jsonw_arr_begin(w, "listeners");
	for (unsigned i = 0; i < cfg->nlisteners; i++) {
		jsonw_obj_begin(w);
		jsonw_str(w, "name", cfg->listeners[i].name);
		jsonw_str(w, "address",
			  net_addr_format((const struct sockaddr *)&cfg->listeners[i].addr.ss, addr,
					  sizeof(addr)));
		tls_status_listener(live ? live->tls : a->tls, i, w); /* "tls": off | ktls | userspace, and its counts */
		jsonw_obj_end(w);
	}
	jsonw_arr_end(w);
	jsonw_arr_begin(w, "upstreams");
	for (unsigned i = 0; i < cfg->nupstreams; i++) {
		jsonw_obj_begin(w);
		jsonw_str(w, "name", cfg->upstreams[i].name);
		jsonw_str(w, "algorithm", status_algorithm_name(cfg->upstreams[i].algorithm));
		jsonw_u64(w, "servers", cfg->upstreams[i].nservers);
		jsonw_obj_end(w);
	}
	jsonw_arr_end(w);
	jsonw_u64(w, "routes", cfg->nroutes);
	/* The kernel splice path and the key store (docs/clawctl.md: status). */
	splice_status(w);
	gate_status(a->gate, w);
	if (live)
		snapshot_put(live);
	return 0;
}

static int cmd_ping(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		    size_t errlen)
{
	jsonw_str(w, "pong", OPENCLAW_VERSION);
	return 0;
}

int status_register(struct control *c, struct agent *a)
{
	int err = control_register(c, "status", cmd_status, a);

	return err ? err : control_register(c, "ping", cmd_ping, a);
}
