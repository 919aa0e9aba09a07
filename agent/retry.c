/* agent/retry.c — retry decisions: conditions, idempotency, full-jitter backoff, per-worker budget, counters. */
#include "retry.h"

#include <string.h>

#include "agent.h"
#include "metrics.h"
#include "reload.h"

static const char *const reason_names[RETRY_REASON_N] = {
	[RETRY_CONNECT_FAILURE] = "connect_failure",
	[RETRY_RESET] = "reset",
	[RETRY_TIMEOUT] = "timeout",
	[RETRY_502] = "502",
	[RETRY_503] = "503",
	[RETRY_504] = "504",
};

static const char *const refuse_names[RETRY_REFUSE_N] = {
	[RETRY_REFUSE_ATTEMPTS] = "attempts",
	[RETRY_REFUSE_NON_IDEMPOTENT] = "non_idempotent",
	[RETRY_REFUSE_STREAMED_BODY] = "streamed_body",
	[RETRY_REFUSE_DEADLINE] = "deadline",
	[RETRY_REFUSE_BUDGET] = "budget",
};

const char *retry_reason_name(enum retry_reason r)
{
	return (unsigned)r < RETRY_REASON_N ? reason_names[r] : "?";
}

const char *retry_refuse_name(enum retry_refuse r)
{
	return (unsigned)r < RETRY_REFUSE_N ? refuse_names[r] : "?";
}

int retry_reason_parse(const char *s)
{
	for (int i = 0; i < RETRY_REASON_N; i++)
		if (!strcmp(s, reason_names[i]))
			return i;
	return -1;
}

bool retry_method_idempotent(const char *m, size_t len)
{
	static const char *const safe[] = { "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE" };

	for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++)
		if (m && strlen(safe[i]) == len && !memcmp(m, safe[i], len))
			return true;
	return false;
}

int retry_reason_of_status(int status)
{
	switch (status) {
	case 502:
		return RETRY_502;
	case 503:
		return RETRY_503;
	case 504:
		return RETRY_504;
	default:
		return -1;
	}
}

/* xorshift64*: the worker's own generator, never a secret. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

uint64_t retry_backoff_ms(const struct cfg_retry *rc, unsigned n, uint64_t *rng)
{
	uint64_t cap = rc->backoff_base_ms;

	/* Doubling stops at max: no shift can overflow. */
	for (unsigned i = 0; i < n && cap < rc->backoff_max_ms; i++)
		cap *= 2;
	if (cap > rc->backoff_max_ms)
		cap = rc->backoff_max_ms;
	if (!cap)
		return 0;
	return rng_next(rng) % (cap + 1);
}

/* Moves the window to now's second, clearing the slots of seconds that passed. */
static void budget_advance(struct retry_budget *b, uint64_t now_ms)
{
	uint64_t now = now_ms / 1000;

	if (now <= b->sec && b->sec)
		return;
	if (!b->sec || now - b->sec >= RETRY_WINDOW_S) {
		memset(b->req, 0, sizeof(b->req));
		memset(b->retries, 0, sizeof(b->retries));
	} else {
		for (uint64_t s = b->sec + 1; s <= now; s++) {
			b->req[s % RETRY_WINDOW_S] = 0;
			b->retries[s % RETRY_WINDOW_S] = 0;
		}
	}
	/* Second 0 would read as "never used": start at 1. */
	b->sec = now ? now : 1;
}

void retry_budget_request(struct retry_budget *b, uint64_t now_ms)
{
	budget_advance(b, now_ms);
	b->req[b->sec % RETRY_WINDOW_S]++;
}

bool retry_budget_take(struct retry_budget *b, const struct cfg_retry *rc, uint64_t now_ms)
{
	uint64_t req = 0, ret = 0;
	unsigned cur;

	budget_advance(b, now_ms);
	cur = b->sec % RETRY_WINDOW_S;
	for (unsigned i = 0; i < RETRY_WINDOW_S; i++) {
		req += b->req[i];
		ret += b->retries[i];
	}
	/* (ret + 1) <= ratio × req, with the ratio in units of 1/10000. */
	if (b->retries[cur] >= rc->budget_min_per_second &&
	    (ret + 1) * 10000 > (uint64_t)rc->budget_ratio_bp * req)
		return false;
	b->retries[cur]++;
	return true;
}

enum retry_verdict retry_decide(const struct cfg_retry *rc, struct retry_budget *b,
				const struct retry_ask *a, uint64_t *rng, uint64_t *delay_ms,
				enum retry_refuse *why)
{
	*delay_ms = 0;
	if ((unsigned)a->reason >= RETRY_REASON_N || !(rc->on & RETRY_BIT(a->reason)))
		return RETRY_NO;
	if (a->done >= rc->attempts)
		*why = RETRY_REFUSE_ATTEMPTS;
	else if (!a->idempotent)
		*why = RETRY_REFUSE_NON_IDEMPOTENT;
	else if (!a->replayable)
		*why = RETRY_REFUSE_STREAMED_BODY;
	else if ((*delay_ms = retry_backoff_ms(rc, a->done, rng)),
		 a->deadline_ms && a->now_ms + *delay_ms >= a->deadline_ms)
		*why = RETRY_REFUSE_DEADLINE;
	else if (!retry_budget_take(b, rc, a->now_ms))
		*why = RETRY_REFUSE_BUDGET;
	else
		return RETRY_GO;
	*delay_ms = 0;
	return RETRY_REFUSED;
}

static bool in_list(const uint32_t *v, unsigned n, unsigned x)
{
	for (unsigned i = 0; i < n; i++)
		if (v[i] == x)
			return true;
	return false;
}

unsigned retry_exclude(uint32_t *tried, unsigned ntried, unsigned cap, int failed, unsigned nservers,
		       bool (*usable)(const void *ctx, unsigned i), const void *ctx)
{
	bool untried = false, other = false;

	for (unsigned i = 0; i < nservers; i++) {
		if (!usable(ctx, i))
			continue;
		if (!in_list(tried, ntried, i))
			untried = true;
		if ((int)i != failed)
			other = true;
	}
	/* Room for at least this attempt's pick, or the list starts over. */
	if (untried && ntried < cap)
		return ntried;
	if (other && failed >= 0 && cap) {
		tried[0] = (uint32_t)failed;
		return 1;
	}
	return 0;
}

static void add(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

void retry_count(struct retry_counters *c, enum retry_reason r)
{
	if ((unsigned)r < RETRY_REASON_N)
		add(&c->retries[r]);
}

void retry_count_refused(struct retry_counters *c, enum retry_refuse r)
{
	if ((unsigned)r < RETRY_REFUSE_N)
		add(&c->refused[r]);
}

/* ---- metrics ------------------------------------------------------------------------------ */

static void collect(void *ctx, struct metrics_out *o)
{
	struct agent *a = ctx;
	struct snapshot *sn = reload_live(a);
	const struct config *cfg;

	if (!sn)
		return;
	cfg = sn->cfg;
	metrics_family(o, "openclaw_upstream_retries_total", "counter",
		       "Attempts retried, by the pool and the failure that caused the retry.");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned r = 0; r < RETRY_REASON_N; r++)
			metrics_sample_u64(o, "openclaw_upstream_retries_total",
					   (const char *const[]){ "upstream", cfg->upstreams[p].name, "reason", reason_names[r], NULL },
					   atomic_load_explicit(&sn->pools[p].retry.retries[r], memory_order_relaxed));
	metrics_family(o, "openclaw_upstream_retries_refused_total", "counter",
		       "Failures that matched retry.on but were not retried, by why (budget, attempts, ...).");
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned r = 0; r < RETRY_REFUSE_N; r++)
			metrics_sample_u64(o, "openclaw_upstream_retries_refused_total",
					   (const char *const[]){ "upstream", cfg->upstreams[p].name, "why", refuse_names[r], NULL },
					   atomic_load_explicit(&sn->pools[p].retry.refused[r], memory_order_relaxed));
	snapshot_put(sn);
}

int retry_register_metrics(struct agent *a, struct metrics *m)
{
	return a && m ? metrics_register(m, collect, a) : 0;
}
