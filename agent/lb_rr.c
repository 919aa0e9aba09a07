/* agent/lb_rr.c — round robin (equal turns) and smooth weighted round robin (nginx's interleaving). */
#include "lb_algos.h"

/* Next usable server at or after the worker's cursor; weights ignored. */
static int lb_rr_pick(struct lb_pool *p, struct lb_local *l, uint64_t hash,
		      const uint32_t *exclude, unsigned nexclude, uint64_t now_ns)
{
	unsigned n = p->nservers;
	unsigned start = l->rr_next % n;

	for (unsigned k = 0; k < n; k++) {
		unsigned i = (start + k) % n;

		if (!lb_usable(p, l, i, exclude, nexclude))
			continue;
		l->rr_next = (i + 1) % n;
		return (int)i;
	}
	return -1;
}

/*
 * Smooth WRR: every usable server earns its weight, the richest is chosen
 * and pays the round's total. Over a cycle of sum(weights) picks each server
 * is chosen exactly weight times, and heavy servers are interleaved with the
 * light ones instead of being picked in a burst (5:1:1 gives a a b a c a a).
 * Servers skipped for this pick neither earn nor pay, so they resume where
 * they left off.
 */
static int lb_swrr_pick(struct lb_pool *p, struct lb_local *l, uint64_t hash,
			const uint32_t *exclude, unsigned nexclude, uint64_t now_ns)
{
	int64_t *cur = l->swrr_cur;
	int64_t total = 0;
	int best = -1;

	for (unsigned i = 0; i < p->nservers; i++) {
		if (!lb_usable(p, l, i, exclude, nexclude))
			continue;
		cur[i] += lb_weight(&p->servers[i]);
		total += lb_weight(&p->servers[i]);
		if (best < 0 || cur[i] > cur[best])
			best = (int)i;
	}
	if (best >= 0)
		cur[best] -= total;
	return best;
}

const struct lb_ops lb_ops_round_robin = {
	.name = "round_robin",
	.pick = lb_rr_pick,
};

const struct lb_ops lb_ops_weighted_round_robin = {
	.name = "weighted_round_robin",
	.pick = lb_swrr_pick,
};
