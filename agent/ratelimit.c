/* agent/ratelimit.c — GCRA over a fixed open-addressing table of atomic TATs, shared by every worker. */
#include "ratelimit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAT_BITS 48
#define TAT_MASK ((1ull << TAT_BITS) - 1)
#define CLAIM_SPINS 1024 /* reads of a slot another thread is claiming before moving on */

int rl_init(struct rl_table *t, size_t slots)
{
	size_t n = 1024;

	while (n < slots && n < ((size_t)1 << 30))
		n <<= 1;
	memset(t, 0, sizeof(*t));
	t->slots = calloc(n, sizeof(*t->slots));
	if (!t->slots)
		return -ENOMEM;
	t->mask = n - 1;
	return 0;
}

void rl_free(struct rl_table *t)
{
	free(t->slots);
	t->slots = NULL;
}

struct rl_limit rl_limit_of(const struct cfg_rate *rate, uint64_t burst)
{
	struct rl_limit l;

	/* Rounded to the nearest µs: 3/s is 333333 µs, an error of one in a million. */
	l.interval_us = rate->count ? (rate->per_ms * 1000 + rate->count / 2) / rate->count : 1;
	if (!l.interval_us)
		l.interval_us = 1;
	l.burst = burst ? burst : (rate->count ? rate->count : 1);
	return l;
}

uint64_t rl_gcra(uint64_t tat, uint64_t now_us, const struct rl_limit *l, struct rl_result *out)
{
	uint64_t t0 = tat > now_us ? tat : now_us;
	uint64_t new_tat = t0 + l->interval_us;
	uint64_t span = l->burst * l->interval_us; /* burst and interval are bounded by config */

	out->limit = l->burst;
	/* allow_at = new_tat - span: admitted when it is not in the future. */
	if (new_tat > now_us + span) {
		out->allowed = false;
		out->remaining = 0;
		out->retry_after_us = new_tat - span - now_us;
		out->reset_us = t0 - now_us;
		return tat;
	}
	out->allowed = true;
	out->remaining = (now_us + span - new_tat) / l->interval_us;
	out->retry_after_us = 0;
	out->reset_us = new_tat - now_us;
	return new_tat;
}

static inline uint64_t tag_of(uint64_t hash)
{
	uint64_t tag = hash >> 48;

	return tag ? tag : 1;
}

/*
 * Finds the slot of hash, or claims one: an empty slot, or one whose bucket is
 * idle (TAT in the past: same as a new bucket). The whole probe window is
 * searched for the key first, so two threads never hold two buckets for one
 * key unless one of them sees the other's claim half done, which the claim
 * spin below waits out. NULL when the window is busy with live buckets.
 */
static struct rl_slot *rl_find(struct rl_table *t, uint64_t hash, uint64_t now_us, bool create)
{
	uint64_t tag = tag_of(hash);
	size_t home = hash & t->mask;

	for (size_t i = 0; i < RL_PROBE; i++) {
		struct rl_slot *s = &t->slots[(home + i) & t->mask];
		uint64_t k = atomic_load_explicit(&s->key, memory_order_acquire);

		if (k == hash)
			return s;
		if (!k)
			break; /* keys are never removed, only replaced: nothing of ours lies beyond */
		/* Our tag on another key: a claim for us may be half done. Wait it out. */
		if ((atomic_load_explicit(&s->state, memory_order_acquire) >> TAT_BITS) == tag) {
			for (int n = 0; n < CLAIM_SPINS; n++) {
				k = atomic_load_explicit(&s->key, memory_order_acquire);
				if (k == hash)
					return s;
			}
		}
	}
	if (!create)
		return NULL;
	for (size_t i = 0; i < RL_PROBE; i++) {
		struct rl_slot *s = &t->slots[(home + i) & t->mask];
		uint64_t k = atomic_load_explicit(&s->key, memory_order_acquire);
		uint64_t st;

		if (!k) {
			uint64_t zero = 0;

			if (atomic_compare_exchange_strong(&s->key, &zero, hash)) {
				atomic_store_explicit(&s->state, tag << TAT_BITS, memory_order_release);
				return s;
			}
			if (zero == hash)
				return s;
			continue;
		}
		if (k == hash)
			return s;
		st = atomic_load_explicit(&s->state, memory_order_acquire);
		if ((st >> TAT_BITS) && (st & TAT_MASK) <= (now_us & TAT_MASK)) {
			/* Idle bucket: take the slot by changing its tag, then its key. */
			if (atomic_compare_exchange_strong(&s->state, &st, tag << TAT_BITS)) {
				atomic_store_explicit(&s->key, hash, memory_order_release);
				atomic_fetch_add_explicit(&t->evictions, 1, memory_order_relaxed);
				return s;
			}
		}
	}
	return NULL;
}

void rl_acquire(struct rl_table *t, uint64_t hash, const struct rl_limit *l, uint64_t now_us,
		struct rl_result *out)
{
	uint64_t tag = tag_of(hash);

	for (int attempt = 0; attempt < 64; attempt++) {
		struct rl_slot *s = rl_find(t, hash, now_us, true);
		uint64_t st;

		if (!s)
			break;
		st = atomic_load_explicit(&s->state, memory_order_acquire);
		for (;;) {
			uint64_t nt;

			if ((st >> TAT_BITS) != tag)
				break; /* claim in progress or the slot went to another key: look again */
			nt = rl_gcra(st & TAT_MASK, now_us & TAT_MASK, l, out);
			if (!out->allowed)
				return;
			if (atomic_compare_exchange_weak_explicit(&s->state, &st,
								  (tag << TAT_BITS) | (nt & TAT_MASK),
								  memory_order_acq_rel,
								  memory_order_acquire))
				return;
		}
	}
	/* Every slot near home holds a live bucket: admit (fail open) and count it. */
	atomic_fetch_add_explicit(&t->full, 1, memory_order_relaxed);
	out->allowed = true;
	out->limit = l->burst;
	out->remaining = l->burst ? l->burst - 1 : 0;
	out->reset_us = l->interval_us;
	out->retry_after_us = 0;
}

void rl_peek(struct rl_table *t, uint64_t hash, const struct rl_limit *l, uint64_t now_us,
	     struct rl_result *out)
{
	struct rl_slot *s = rl_find(t, hash, now_us, false);
	uint64_t tat = 0, st;

	if (s) {
		st = atomic_load_explicit(&s->state, memory_order_acquire);
		if ((st >> TAT_BITS) == tag_of(hash))
			tat = st & TAT_MASK;
	}
	now_us &= TAT_MASK;
	out->limit = l->burst;
	out->allowed = true;
	out->retry_after_us = 0;
	if (tat <= now_us) {
		out->remaining = l->burst;
		out->reset_us = 0;
		return;
	}
	out->reset_us = tat - now_us;
	/* Admissible now: n such that tat + n*T - B*T <= now. */
	if (tat > now_us + l->burst * l->interval_us)
		out->remaining = 0;
	else
		out->remaining = (now_us + l->burst * l->interval_us - tat) / l->interval_us;
	if (!out->remaining)
		out->retry_after_us = tat + l->interval_us - l->burst * l->interval_us - now_us;
}

uint64_t rl_hash(uint64_t seed, const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = 0xcbf29ce484222325ull ^ seed;

	/* FNV-1a with a per-process seed, then a murmur3 finaliser to spread the bits. */
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h ? h : 1;
}

int rl_parse_rate(const char *s, struct cfg_rate *out)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = { { "/s", 1000 }, { "/m", 60000 }, { "/h", 3600000 }, { "/d", 86400000 } };
	uint64_t v = 0;
	size_t digits = strspn(s, "0123456789");

	if (!digits || s[0] == '0')
		return -EINVAL;
	for (size_t i = 0; i < digits; i++) {
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > 1000000000ull)
			return -ERANGE;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcmp(s + digits, units[i].unit)) {
			out->count = v;
			out->per_ms = units[i].ms;
			return 0;
		}
	return -EINVAL;
}

char *rl_format_rate(const struct cfg_rate *r, char *buf, size_t len)
{
	const char *u = r->per_ms == 1000 ? "s" : r->per_ms == 60000 ? "m" :
			r->per_ms == 3600000 ? "h" : "d";

	snprintf(buf, len, "%" PRIu64 "/%s", r->count, u);
	return buf;
}
