/* agent/lb_leastconn.c — weighted least connections: fewest in-flight requests per unit of weight. */
#include "lb_algos.h"

/* active_a / w_a < active_b / w_b, without division. */
static inline bool lb_lc_less(uint32_t aa, uint32_t wa, uint32_t ab, uint32_t wb)
{
	return (uint64_t)aa * wb < (uint64_t)ab * wa;
}

/*
 * Pass one finds the lowest active/weight. Pass two breaks the tie among the
 * servers sharing it with smooth WRR on the worker's own weights, starting
 * from the worker's cursor: when the pool is idle (everyone at zero) requests
 * still follow the weights instead of all landing on the first server, and
 * equal weights reduce to plain round robin. Other workers move `active`
 * between the passes; if nobody still ties, the pass-one winner stands.
 */
static int lb_lc_pick(struct lb_pool *p, struct lb_local *l, uint64_t hash,
		      const uint32_t *exclude, unsigned nexclude, uint64_t now_ns)
{
	unsigned n = p->nservers;
	unsigned start = l->rr_next % n;
	int64_t *cur = l->swrr_cur;
	uint32_t best_a = 0, best_w = 1;
	int best = -1, pick = -1;
	int64_t total = 0;

	for (unsigned k = 0; k < n; k++) {
		unsigned i = (start + k) % n;
		uint32_t a, w;

		if (!lb_usable(p, l, i, exclude, nexclude))
			continue;
		a = lb_active(p, i);
		w = lb_weight(&p->servers[i]);
		if (best < 0 || lb_lc_less(a, w, best_a, best_w)) {
			best = (int)i;
			best_a = a;
			best_w = w;
		}
	}
	if (best < 0)
		return -1;

	for (unsigned k = 0; k < n; k++) {
		unsigned i = (start + k) % n;
		uint32_t a, w;

		if (!lb_usable(p, l, i, exclude, nexclude))
			continue;
		a = lb_active(p, i);
		w = lb_weight(&p->servers[i]);
		if (lb_lc_less(a, w, best_a, best_w) || lb_lc_less(best_a, best_w, a, w))
			continue;
		cur[i] += w;
		total += w;
		if (pick < 0 || cur[i] > cur[pick])
			pick = (int)i;
	}
	if (pick < 0)
		pick = best;
	else
		cur[pick] -= total;
	l->rr_next = ((unsigned)pick + 1) % n;
	return pick;
}

const struct lb_ops lb_ops_least_conn = {
	.name = "least_conn",
	.pick = lb_lc_pick,
};
