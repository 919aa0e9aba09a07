/* agent/retry.h — request retries: conditions, idempotency, full-jitter backoff and the per-worker retry budget (docs/retries.md). */
#ifndef OPENCLAW_RETRY_H
#define OPENCLAW_RETRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Why an attempt failed, as written in upstreams[].retry.on (bit 1 << reason in cfg_retry.on). */
enum retry_reason {
	RETRY_CONNECT_FAILURE, /* "connect_failure": refused, unreachable or connect timeout */
	RETRY_RESET,           /* "reset": EOF or reset before any response byte */
	RETRY_TIMEOUT,         /* "timeout": upstream_response timeout before any response byte */
	RETRY_502,             /* "502": response status, decided on the head, nothing forwarded */
	RETRY_503,             /* "503" */
	RETRY_504,             /* "504" */
	RETRY_REASON_N
};

#define RETRY_BIT(r) (1u << (r))
/* upstreams[].retry.on when the key is absent: what clawd did before retries were configurable. */
#define RETRY_ON_DEFAULT (RETRY_BIT(RETRY_CONNECT_FAILURE) | RETRY_BIT(RETRY_RESET))

/* Why a matching failure was not retried (openclaw_upstream_retries_refused_total{why}). */
enum retry_refuse {
	RETRY_REFUSE_ATTEMPTS,       /* "attempts": retry.attempts already spent */
	RETRY_REFUSE_NON_IDEMPOTENT, /* "non_idempotent": POST/PATCH/... and the route did not opt in */
	RETRY_REFUSE_STREAMED_BODY,  /* "streamed_body": part of the body is no longer in our buffer */
	RETRY_REFUSE_DEADLINE,       /* "deadline": the retry would start at or past timeouts.request */
	RETRY_REFUSE_BUDGET,         /* "budget": the pool's retry budget is spent */
	RETRY_REFUSE_N
};

enum retry_verdict {
	RETRY_NO,      /* the failure is not a configured condition: nothing to count */
	RETRY_GO,      /* retry after *delay_ms; the budget has been charged */
	RETRY_REFUSED, /* a configured condition, but not retried (*why says why) */
};

/* Seconds of history the budget looks at, in one-second slots. */
#define RETRY_WINDOW_S 10

/*
 * One pool's retry budget on one worker (lives in struct lb_local: never
 * shared, no atomics). Counts first attempts and retries per second over
 * the last RETRY_WINDOW_S seconds.
 */
struct retry_budget {
	uint64_t sec;                      /* monotonic second of the newest slot */
	uint32_t req[RETRY_WINDOW_S];      /* requests sent to the pool, by second (slot = sec % window) */
	uint32_t retries[RETRY_WINDOW_S];  /* retries issued, by second */
};

/* Retry counters of one pool, shared by every worker (struct lb_pool; relaxed atomics, /metrics). */
struct retry_counters {
	_Atomic uint64_t retries[RETRY_REASON_N];  /* retries issued, by reason */
	_Atomic uint64_t refused[RETRY_REFUSE_N];  /* matching failures not retried, by why */
};

/* What the proxy knows about a failed attempt when it asks for a retry. */
struct retry_ask {
	enum retry_reason reason;
	unsigned done;         /* retries already issued for this request */
	bool idempotent;       /* the method is idempotent, or the route has retry_non_idempotent */
	bool replayable;       /* the whole request (head and body) is still in our buffer */
	uint64_t now_ms;       /* monotonic */
	uint64_t deadline_ms;  /* the request's overall deadline (monotonic ms), 0 = none */
};

const char *retry_reason_name(enum retry_reason r);
const char *retry_refuse_name(enum retry_refuse r);
/* The reason for a config word ("reset", "503", ...), or -1 when unknown. */
int retry_reason_parse(const char *s);

/* RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE. Case-sensitive, like methods. */
bool retry_method_idempotent(const char *m, size_t len);

/* The status condition a response status is (RETRY_502..504), or -1. */
int retry_reason_of_status(int status);

/* Full jitter: uniform in [0, min(max, base × 2^n)] ms, n = retries already made. */
uint64_t retry_backoff_ms(const struct cfg_retry *rc, unsigned n, uint64_t *rng);

/* A first attempt went to the pool: it adds to what the ratio allows. */
void retry_budget_request(struct retry_budget *b, uint64_t now_ms);
/*
 * May one more retry start now? Allowed while this second's retries are
 * under min_per_second, or while retries in the window stay within ratio ×
 * requests in the window. A yes is charged.
 */
bool retry_budget_take(struct retry_budget *b, const struct cfg_retry *rc, uint64_t now_ms);

/*
 * The whole decision, checks in this order: condition configured, attempts
 * left, idempotency, body replayable, backoff ends before the deadline,
 * budget (charged only on RETRY_GO, so refusals never spend it).
 */
enum retry_verdict retry_decide(const struct cfg_retry *rc, struct retry_budget *b,
				const struct retry_ask *a, uint64_t *rng, uint64_t *delay_ms,
				enum retry_refuse *why);

/*
 * The servers the next attempt must not use, rewritten in tried[0, ntried):
 * kept as is while a usable untried server remains; else only the server
 * that just failed (when another usable one exists); else none. Returns the
 * new count. usable(ctx, i) says whether server i may take requests.
 */
unsigned retry_exclude(uint32_t *tried, unsigned ntried, unsigned cap, int failed, unsigned nservers,
		       bool (*usable)(const void *ctx, unsigned i), const void *ctx);

/* Relaxed atomic adds on the pool's shared counters (rare: only failed attempts). */
void retry_count(struct retry_counters *c, enum retry_reason r);
void retry_count_refused(struct retry_counters *c, enum retry_refuse r);

struct agent;
struct metrics;
/* Registers openclaw_upstream_retries_total and _refused_total (live configuration's pools). */
int retry_register_metrics(struct agent *a, struct metrics *m);

#endif
