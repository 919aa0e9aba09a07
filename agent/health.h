/* agent/health.h — server health: active checks (own thread, own io_uring), passive outlier ejection, slow start, runtime drain/weight. */
#ifndef OPENCLAW_HEALTH_H
#define OPENCLAW_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control.h"
#include "lb.h"

struct snapshot;
struct health;

#define HEALTH_STATE_FILE "backends.json" /* runtime drain/weight, in state_dir */
#define HEALTH_DETAIL_MAX 96              /* bytes of a check's result text */
#define HEALTH_TICK_MS 50                 /* ejection timers and slow-start weights */

/* What live traffic told us about a server (proxy.c reports, health_observe counts). */
enum health_outcome {
	HEALTH_OK,           /* a response below 500 */
	HEALTH_CONNECT_FAIL, /* connect refused, unreachable, reset */
	HEALTH_5XX,          /* a 5xx response */
	HEALTH_TIMEOUT,      /* connect or response timeout */
};

/*
 * Passive outlier detection, called by workers: lock-free, and a no-op for
 * pools without outlier settings. consecutive_failures non-OK outcomes in a
 * row eject server idx for base_ejection × (its ejection count), capped at
 * max_ejection, unless max_ejected_percent of the pool is already out.
 */
void health_observe(struct lb_pool *p, int idx, enum health_outcome o, uint64_t now_ns);

/* One server's active-check history (owned by the health thread; read under its lock). */
struct health_track {
	uint32_t ok_streak;             /* consecutive passes */
	uint32_t fail_streak;           /* consecutive failures */
	uint64_t checks;                /* checks completed */
	uint64_t failed;                /* of which failed */
	uint64_t last_at_ns;            /* when the last one ended (monotonic) */
	bool last_ok;
	char last[HEALTH_DETAIL_MAX];   /* "200", "connect: Connection refused", ... ("" = none yet) */
};

/*
 * Feeds one active-check result for server i of p: counts streaks, takes the
 * server down after `fall` failures, brings it up after `rise` passes (with a
 * slow start), and re-admits a passively ejected server on a pass of a check
 * that started after the ejection. Logs each change of state once.
 * Returns +1 when the server came up or was re-admitted, -1 when it went
 * down, 0 otherwise.
 */
int health_result(struct lb_pool *p, unsigned i, struct health_track *t, bool ok,
		  const char *detail, uint64_t started_ns, uint64_t now_ns);

/*
 * Weight a pick should use now for server s, × LB_WEIGHT_SCALE: the runtime
 * weight or the configured one, ramped linearly from 10% to 100% over
 * slow_start_ms from s->ramp_start_ns.
 */
uint32_t health_eff_weight(const struct lb_server *s, uint64_t slow_start_ms, uint64_t now_ns);

/*
 * Periodic upkeep of pool p (the health thread runs it every HEALTH_TICK_MS):
 * ends ejections whose time is over (with a slow start), forgets the
 * ejection count of a server that stayed in for max_ejection, refreshes
 * effective weights and ends finished ramps.
 */
void health_tick(struct lb_pool *p, uint64_t now_ns);

/* "down", "ejected", "draining" or "up", in that order of precedence. */
const char *health_state_name(const struct lb_server *s);

/*
 * Starts the health thread on snap's pools and applies the runtime changes
 * saved in <state_dir>/backends.json that the config file has not overridden.
 * Returns 0 or a negative errno with a reason in err.
 */
int health_start(struct health **out, struct snapshot *snap, char *err, size_t errlen);
void health_stop(struct health *h);

/*
 * A snapshot was published (reload, backends add/remove): the check thread
 * moves to its pools when they differ from those it checks. Servers kept (same
 * pool name and address) keep their check history, schedule and state; new
 * ones are checked within a tenth of an interval; checks of removed ones end.
 * Waits up to half a second for the thread to switch, so a command that
 * follows sees the new pools. h NULL: nothing.
 */
void health_adopt(struct health *h, struct snapshot *snap);

/* Registers backends.list, backends.drain, backends.enable and backends.weight. */
int health_register_commands(struct health *h, struct control *c);
struct metrics;
/* Adds server state, health-check, ejection and breaker-trip families to scrapes (h NULL: nothing). */
int health_register_metrics(struct health *h, struct metrics *m);

#endif
