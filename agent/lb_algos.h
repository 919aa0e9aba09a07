/* agent/lb_algos.h — private to the load balancer: per-algorithm ops and the helpers they share. */
#ifndef OPENCLAW_LB_ALGOS_H
#define OPENCLAW_LB_ALGOS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lb.h"

extern const struct lb_ops lb_ops_round_robin;          /* lb_rr.c */
extern const struct lb_ops lb_ops_weighted_round_robin; /* lb_rr.c */
extern const struct lb_ops lb_ops_least_conn;           /* lb_leastconn.c */
extern const struct lb_ops lb_ops_ip_hash;              /* lb_hash.c */
extern const struct lb_ops lb_ops_consistent_hash;      /* lb_hash.c */
extern const struct lb_ops lb_ops_peak_ewma;            /* lb_ewma.c */

/* 64-bit hash of len bytes (xxh64-style rounds and avalanche), in lb.c. */
uint64_t lb_hash64(const void *data, size_t len, uint64_t seed);

/*
 * Folds one response time into server i's peak EWMA (lb_ewma.c); lb_end
 * calls it for every algorithm so the latency is always there to read.
 */
void lb_ewma_observe(struct lb_pool *p, unsigned i, uint64_t latency_ns, uint64_t now_ns);

/* Configured weight (immutable; hash rings are built on it): zero would divide by zero, so 1. */
static inline uint32_t lb_base_weight(const struct lb_server *s)
{
	return s->weight ? s->weight : 1;
}

/*
 * Weight as the picking algorithms use it, × LB_WEIGHT_SCALE: the configured
 * one, or the runtime override, scaled down while a slow start ramps (health.c
 * keeps eff_weight current). Never 0.
 */
static inline uint32_t lb_weight(const struct lb_server *s)
{
	uint32_t e = atomic_load_explicit(&s->eff_weight, memory_order_relaxed);

	return e ? e : lb_base_weight(s) * LB_WEIGHT_SCALE;
}

/*
 * May server i take this request: up, not ejected or draining, in the tier
 * this pick is for (primaries, or backups when lb_pick found no primary),
 * and not already tried?
 */
static inline bool lb_usable(const struct lb_pool *p, const struct lb_local *l, unsigned i,
			     const uint32_t *exclude, unsigned nexclude)
{
	if (!lb_server_ok(&p->servers[i]) || p->servers[i].backup != l->backup_tier)
		return false;
	for (unsigned k = 0; k < nexclude; k++)
		if (exclude[k] == i)
			return false;
	return true;
}

static inline uint32_t lb_active(const struct lb_pool *p, unsigned i)
{
	return atomic_load_explicit(&p->servers[i].active, memory_order_relaxed);
}

/* xorshift64* step on the worker's own state. */
static inline uint64_t lb_rand(struct lb_local *l)
{
	uint64_t x = l->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	l->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform-enough index in [0, n) (n is tiny next to 2^64, so the bias is negligible). */
static inline unsigned lb_rand_below(struct lb_local *l, unsigned n)
{
	return (unsigned)(lb_rand(l) % n);
}

#endif
