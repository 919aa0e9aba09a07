/* agent/lb.h — load balancing: one small interface, one file per algorithm family (lb_rr, lb_leastconn, lb_hash, lb_ewma). */
#ifndef OPENCLAW_LB_H
#define OPENCLAW_LB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "http1.h"

/* Live state of one server, shared by every worker (relaxed atomics, no locks). */
struct lb_server {
	_Atomic uint32_t active;      /* requests in flight on this server, all workers */
	_Atomic uint64_t ewma_ns;     /* peak-EWMA of response time, ns (0 = no sample yet) */
	_Atomic uint64_t ewma_at_ns;  /* monotonic time of the last EWMA update, ns */
	_Atomic bool down;            /* taken out (health checks; connect failures) */
	uint32_t weight;              /* configured weight */
};

struct lb_pool;

/* Per-worker, per-pool scratch state: never shared, so no atomics. */
struct lb_local {
	uint32_t rr_next;   /* round-robin cursor */
	int64_t *swrr_cur;  /* smooth WRR current weights, nservers long */
	uint64_t rng;       /* xorshift state for power-of-two choices */
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
 * Picks a server index, skipping servers that are down and those listed in
 * exclude (already tried for this request). Returns -1 when none is left.
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

#endif
