/* agent/ratelimit.h — GCRA rate limits over one shared lock-free table: exact across worker threads, bounded memory. */
#ifndef OPENCLAW_RATELIMIT_H
#define OPENCLAW_RATELIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/*
 * GCRA (the generic cell rate algorithm, a token bucket kept as one number):
 * each bucket stores its theoretical arrival time (TAT). A request at time t
 * with emission interval T and burst B is admitted when
 *     max(TAT, t) + T - B*T <= t
 * and then TAT becomes max(TAT, t) + T. A bucket whose TAT is in the past is
 * indistinguishable from a new one, so its slot can be given to another key
 * at no cost: that is the eviction rule, and memory stays at the table size.
 */

#define RL_PROBE 32 /* slots looked at from a key's home slot */

/* One slot: the key's 64-bit hash and its state (tag << 48 | TAT in µs since the table's epoch). */
struct rl_slot {
	_Atomic uint64_t key;   /* 0 = never used */
	_Atomic uint64_t state; /* tag (16 bits of key) | TAT µs (48 bits) */
};

struct rl_table {
	struct rl_slot *slots;
	size_t mask;                 /* slots - 1 (a power of two) */
	_Atomic uint64_t full;       /* requests admitted because no slot was free (fail-open) */
	_Atomic uint64_t evictions;  /* idle buckets whose slot went to another key */
};

/* A limit in the units the table works in. */
struct rl_limit {
	uint64_t interval_us; /* emission interval T, µs (>= 1) */
	uint64_t burst;       /* B, >= 1 */
};

/* What one admission decided, for the RateLimit-* and Retry-After headers. */
struct rl_result {
	bool allowed;
	uint64_t limit;          /* burst */
	uint64_t remaining;      /* requests still admissible right now */
	uint64_t reset_us;       /* time until the bucket is full again */
	uint64_t retry_after_us; /* when denied: time until one request would pass */
};

/* Slots rounded up to a power of two (at least 1024). Returns 0 or -ENOMEM. */
int rl_init(struct rl_table *t, size_t slots);
void rl_free(struct rl_table *t);

/* Converts a configured rate and burst; burst 0 means "rate.count". */
struct rl_limit rl_limit_of(const struct cfg_rate *rate, uint64_t burst);

/*
 * Admits or denies one request of bucket `hash` at now_us (µs on the caller's
 * monotonic clock, which must only grow; the first call sets the table's
 * epoch if it is 0). Lock-free: CAS on the slot, safe from any thread.
 */
void rl_acquire(struct rl_table *t, uint64_t hash, const struct rl_limit *l, uint64_t now_us,
		struct rl_result *out);

/* The bucket's state without consuming: remaining and reset as rl_acquire would report. */
void rl_peek(struct rl_table *t, uint64_t hash, const struct rl_limit *l, uint64_t now_us,
	     struct rl_result *out);

/* The pure arithmetic, for tests: decides on tat (µs), returns the new TAT when allowed. */
uint64_t rl_gcra(uint64_t tat, uint64_t now_us, const struct rl_limit *l, struct rl_result *out);

/* Seeded 64-bit hash of bytes (never 0): bucket keys built from client data. */
uint64_t rl_hash(uint64_t seed, const void *data, size_t len);

/*
 * The one parser of rates: "100/s", "6000/m", "10/h", "1000/d". Returns 0,
 * -EINVAL (malformed) or -ERANGE (count over 10^9).
 */
int rl_parse_rate(const char *s, struct cfg_rate *out);

/* Formats a rate as "100/s" into buf. Returns buf. */
char *rl_format_rate(const struct cfg_rate *r, char *buf, size_t len);

#endif
