/* agent/lb_ewma.c — peak EWMA of response time with power-of-two-choices picking (Finagle/linkerd style). */
#include "lb_algos.h"

/* Time constant of the average: a sample's influence falls to 1/e after 10 s. */
#define LB_EWMA_TAU_NS 10e9
/* Past this many time constants e^-x is below 1e-21: treat as zero. */
#define LB_EXP_CUTOFF 48.0
#define LB_LN2 0.69314718055994530942

/* Random draws before falling back to a scan when many servers are unusable. */
#define LB_P2C_TRIES 4

/* e^-x for x >= 0 without libm: 2^-k * e^-r with r in [0, ln 2), e^-r by its series. */
static double lb_exp_neg(double x)
{
	double r, term = 1.0, sum = 1.0;
	int k;

	if (!(x > 0.0))
		return 1.0;
	if (x >= LB_EXP_CUTOFF)
		return 0.0;
	k = (int)(x / LB_LN2);
	r = x - k * LB_LN2;
	for (int i = 1; i <= 14; i++) {
		term *= -r / i;
		sum += term;
	}
	while (k-- > 0)
		sum *= 0.5;
	return sum;
}

/*
 * Peak EWMA: a sample above the current value replaces it at once (a server
 * turning slow is noticed on its first slow answer); a lower one is blended
 * in with a weight that grows with the time since the last sample.
 */
void lb_ewma_observe(struct lb_pool *p, unsigned i, uint64_t latency_ns, uint64_t now_ns)
{
	struct lb_server *s = &p->servers[i];
	uint64_t at = atomic_load_explicit(&s->ewma_at_ns, memory_order_relaxed);
	uint64_t cur = atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
	double w = lb_exp_neg(now_ns > at ? (double)(now_ns - at) / LB_EWMA_TAU_NS : 0.0);
	uint64_t next;

	do {
		if (!cur || latency_ns >= cur) {
			next = latency_ns;
		} else {
			next = (uint64_t)((double)cur * w + (double)latency_ns * (1.0 - w));
			if (!next)
				next = 1; /* 0 means "never sampled" */
		}
	} while (!atomic_compare_exchange_weak_explicit(&s->ewma_ns, &cur, next,
							memory_order_relaxed, memory_order_relaxed));
	/* Only forward: a late finisher on another worker must not rewind the clock. */
	while (at < now_ns && !atomic_compare_exchange_weak_explicit(&s->ewma_at_ns, &at, now_ns,
								    memory_order_relaxed,
								    memory_order_relaxed))
		;
}

/*
 * The estimate as seen now: it decays toward zero while no answer arrives,
 * so a server that was slow once and then lost every comparison is tried
 * again after a while instead of being shunned forever.
 */
static double lb_ewma_latency(const struct lb_server *s, uint64_t now_ns)
{
	uint64_t v = atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
	uint64_t at = atomic_load_explicit(&s->ewma_at_ns, memory_order_relaxed);

	if (now_ns <= at)
		return (double)v;
	return (double)v * lb_exp_neg((double)(now_ns - at) / LB_EWMA_TAU_NS);
}

/* A random usable server other than `avoid`, or -1. */
static int lb_p2c_draw(struct lb_pool *p, struct lb_local *l, const uint32_t *exclude,
		       unsigned nexclude, int avoid)
{
	unsigned n = p->nservers, start;

	for (int t = 0; t < LB_P2C_TRIES; t++) {
		unsigned i = lb_rand_below(l, n);

		if ((int)i != avoid && lb_usable(p, l, i, exclude, nexclude))
			return (int)i;
	}
	start = lb_rand_below(l, n);
	for (unsigned k = 0; k < n; k++) {
		unsigned i = (start + k) % n;

		if ((int)i != avoid && lb_usable(p, l, i, exclude, nexclude))
			return (int)i;
	}
	return -1;
}

/* Is a the better choice than b? cost = latency × (active + 1) / weight. */
static bool lb_ewma_better(struct lb_pool *p, unsigned a, unsigned b, uint64_t now_ns)
{
	const struct lb_server *sa = &p->servers[a], *sb = &p->servers[b];
	bool sampled_a = atomic_load_explicit(&sa->ewma_ns, memory_order_relaxed) != 0;
	bool sampled_b = atomic_load_explicit(&sb->ewma_ns, memory_order_relaxed) != 0;
	double load_a = (double)(lb_active(p, a) + 1) / lb_weight(sa);
	double load_b = (double)(lb_active(p, b) + 1) / lb_weight(sb);

	/*
	 * An unsampled server gets a probe when it is idle; while its probe is
	 * out, only load counts, so a new server that hangs cannot swallow
	 * every request before its first answer shows it is slow.
	 */
	if (!sampled_a && !lb_active(p, a))
		return true;
	if (!sampled_b && !lb_active(p, b))
		return false;
	if (!sampled_a || !sampled_b)
		return load_a <= load_b;
	return lb_ewma_latency(sa, now_ns) * load_a <= lb_ewma_latency(sb, now_ns) * load_b;
}

/*
 * Two random candidates, keep the cheaper: close to picking the best, yet
 * workers acting on the same slightly stale numbers do not all pile onto
 * one server.
 */
static int lb_ewma_pick(struct lb_pool *p, struct lb_local *l, uint64_t hash,
			const uint32_t *exclude, unsigned nexclude, uint64_t now_ns)
{
	int a = lb_p2c_draw(p, l, exclude, nexclude, -1);
	int b;

	if (a < 0)
		return -1;
	b = lb_p2c_draw(p, l, exclude, nexclude, a);
	if (b < 0)
		return a;
	return lb_ewma_better(p, (unsigned)a, (unsigned)b, now_ns) ? a : b;
}

const struct lb_ops lb_ops_peak_ewma = {
	.name = "peak_ewma",
	.pick = lb_ewma_pick,
};
