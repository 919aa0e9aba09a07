/* agent/lb.h — load balancing: one small interface, one file per algorithm family (lb_rr, lb_leastconn, lb_hash, lb_ewma). */
#ifndef OPENCLAW_LB_H
#define OPENCLAW_LB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "http1.h"
#include "retry.h"

/* Picks work on weights scaled by this, so slow start can hand out a tenth of weight 1. */
#define LB_WEIGHT_SCALE 100

/* Circuit breaker kinds, as counted in lb_server.trips and lb_pool.trips (see breaker.h). */
enum lb_trip { LB_TRIP_CONNECTIONS, LB_TRIP_PENDING, LB_TRIP_REQUESTS, LB_TRIP_N };

/* Why a server was ejected by passive outlier detection (health.c). */
enum lb_eject_reason { LB_EJECT_NONE, LB_EJECT_CONNECT, LB_EJECT_5XX, LB_EJECT_TIMEOUT };

/* Live state of one server, shared by every worker (relaxed atomics, no locks). */
struct lb_server {
	_Atomic uint32_t active;      /* requests in flight on this server, all workers */
	_Atomic uint64_t ewma_ns;     /* peak-EWMA of response time, ns (0 = no sample yet) */
	_Atomic uint64_t ewma_at_ns;  /* monotonic time of the last EWMA update, ns */
	_Atomic bool down;            /* taken out by active health checks (health.c) */
	uint32_t weight;              /* configured weight */
	bool backup;                  /* configured backup: used only when no primary is usable */
	_Atomic bool ejected;         /* taken out by passive outlier detection (health.c) */
	_Atomic bool draining;        /* operator drain: no new requests, in-flight ones finish */
	_Atomic uint32_t eff_weight;  /* weight picks use, × LB_WEIGHT_SCALE; 0 = weight × scale */
	_Atomic uint32_t weight_rt;   /* runtime weight (backends.weight); 0 = the configured one */
	_Atomic uint64_t ramp_start_ns; /* slow start began (monotonic ns); 0 = not ramping */
	_Atomic uint32_t conns;       /* open backend connections, all workers (breakers) */
	_Atomic uint32_t pending;     /* connects in progress to this server now (breakers) */
	_Atomic uint32_t admitted;    /* requests holding this server (only with limits.max_requests) */
	_Atomic uint32_t fails;       /* consecutive passive failures from live traffic */
	_Atomic uint32_t ejections;   /* passive ejections so far: the n-th lasts n × base */
	_Atomic uint64_t ejected_total; /* passive ejections ever (never reset; /metrics) */
	_Atomic uint64_t ejected_until_ns; /* end of the current ejection, monotonic ns */
	_Atomic uint64_t ejected_at_ns;    /* start of the current/last ejection, monotonic ns */
	_Atomic int eject_reason;     /* enum lb_eject_reason of the current/last ejection */
	_Atomic uint64_t trips[LB_TRIP_N]; /* requests refused by this server's breaker */
};

struct lb_pool;

/* Per-worker, per-pool scratch state: never shared, so no atomics. */
struct lb_local {
	bool backup_tier;   /* this pick chooses among backup servers (set by lb_pick) */
	uint32_t rr_next;   /* round-robin cursor */
	int64_t *swrr_cur;  /* smooth WRR current weights, nservers long */
	uint64_t rng;       /* xorshift state for power-of-two choices */
	struct retry_budget retry; /* this worker's retry budget for the pool (retry.h) */
};

struct lb_ops {
	const char *name;
	int (*init)(struct lb_pool *p);         /* build shared immutable data (ring) */
	void (*destroy)(struct lb_pool *p);
	int (*pick)(struct lb_pool *p, struct lb_local *l, uint64_t hash,
		    const uint32_t *exclude, unsigned nexclude, uint64_t now_ns);
};

/* One upstream pool's balancer, shared by every worker, built per config snapshot. */
struct lb_pool {
	const struct cfg_upstream *cfg;
	struct lb_server *servers; /* cfg->nservers entries */
	unsigned nservers;
	const struct lb_ops *ops;
	void *data;                /* algorithm's immutable shared data (e.g. hash ring) */
	unsigned nbackup;          /* servers with backup set */
	_Atomic uint32_t nejected; /* servers ejected now (max_ejected_percent) */
	_Atomic uint32_t admitted; /* requests admitted, counted only with limits.max_requests */
	_Atomic uint32_t conns;    /* open connections, counted only with limits.max_connections */
	_Atomic uint32_t pending;  /* connects in progress, counted only with limits.max_pending */
	_Atomic uint64_t trips[LB_TRIP_N]; /* requests refused by the pool's breaker */
	struct retry_counters retry; /* retries issued and refused (retry.h, /metrics) */
};

int lb_pool_init(struct lb_pool *p, const struct cfg_upstream *cfg);
void lb_pool_destroy(struct lb_pool *p);
int lb_local_init(struct lb_local *l, const struct lb_pool *p, uint64_t seed);
void lb_local_destroy(struct lb_local *l);

/*
 * Key hash for ip_hash / consistent_hash from the request (header, cookie,
 * path) or the client address (IPv6 grouped by /64). When the configured
 * header or cookie is absent, falls back to the client address.
 */
uint64_t lb_request_hash(const struct lb_pool *p, const struct http1_request *req,
			 const struct sockaddr *client);

/*
 * Picks a server index, skipping servers that are down, ejected or draining
 * and those listed in exclude (already tried for this request). Backup
 * servers are picked only when no primary is left. Returns -1 when none is.
 */
int lb_pick(struct lb_pool *p, struct lb_local *l, uint64_t hash, const uint32_t *exclude,
	    unsigned nexclude, uint64_t now_ns);

/*
 * Bracket every request sent to server idx (feeds least_conn and peak_ewma).
 * latency_ns is the time to the response head; 0 records no latency sample
 * (the request never got an answer), only the end of the request.
 */
void lb_begin(struct lb_pool *p, int idx);
void lb_end(struct lb_pool *p, int idx, uint64_t latency_ns, uint64_t now_ns);

/* Decrements a shared counter, saturating at zero. */
void lb_counter_dec(_Atomic uint32_t *a);

/* May server s take new requests at all (not down, ejected or draining)? */
static inline bool lb_server_ok(const struct lb_server *s)
{
	return !atomic_load_explicit(&s->down, memory_order_relaxed) &&
	       !atomic_load_explicit(&s->ejected, memory_order_relaxed) &&
	       !atomic_load_explicit(&s->draining, memory_order_relaxed);
}

#endif
