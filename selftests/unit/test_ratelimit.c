/* selftests/unit/test_ratelimit.c — GCRA arithmetic (burst, refill, boundaries), the shared table (exact under two threads, eviction), rate parsing. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "ratelimit.h"
#include "test.h"

static struct rl_limit lim(uint64_t count, uint64_t per_ms, uint64_t burst)
{
	struct cfg_rate r = { count, per_ms };

	return rl_limit_of(&r, burst);
}

static void test_limit_of(void)
{
	struct rl_limit l = lim(10, 1000, 0);

	ASSERT_EQ(l.interval_us, 100000);
	ASSERT_EQ(l.burst, 10); /* burst defaults to the rate's count */
	l = lim(3, 1000, 7);
	ASSERT_EQ(l.interval_us, 333333);
	ASSERT_EQ(l.burst, 7);
	l = lim(6000, 60000, 1);
	ASSERT_EQ(l.interval_us, 10000);
}

static void test_gcra_burst_then_deny(void)
{
	struct rl_limit l = lim(10, 1000, 5); /* T = 100 ms, B = 5 */
	struct rl_result r;
	uint64_t tat = 0, now = 1000000000ull;

	for (int i = 0; i < 5; i++) {
		tat = rl_gcra(tat, now, &l, &r);
		ASSERT_TRUE(r.allowed);
		ASSERT_EQ(r.remaining, 4 - i);
		ASSERT_EQ(r.limit, 5);
	}
	ASSERT_EQ(tat, now + 500000);
	tat = rl_gcra(tat, now, &l, &r);
	ASSERT_FALSE(r.allowed);
	ASSERT_EQ(r.remaining, 0);
	ASSERT_EQ(r.retry_after_us, 100000); /* one interval until one more fits */
	ASSERT_EQ(r.reset_us, 500000);       /* the whole burst back after 5 intervals */
	ASSERT_EQ(tat, now + 500000);        /* a denial changes nothing */
}

static void test_gcra_refill_boundary(void)
{
	struct rl_limit l = lim(10, 1000, 5);
	struct rl_result r;
	uint64_t now = 5000000, tat = now + 500000; /* bucket empty */

	/* One µs early: still denied; exactly one interval later: admitted. */
	rl_gcra(tat, now + 99999, &l, &r);
	ASSERT_FALSE(r.allowed);
	ASSERT_EQ(r.retry_after_us, 1);
	tat = rl_gcra(tat, now + 100000, &l, &r);
	ASSERT_TRUE(r.allowed);
	ASSERT_EQ(r.remaining, 0);
	/* Long idle: as good as new, the full burst again. */
	rl_gcra(tat, now + 100000000, &l, &r);
	ASSERT_TRUE(r.allowed);
	ASSERT_EQ(r.remaining, 4);
}

static void test_gcra_sustained_rate(void)
{
	struct rl_limit l = lim(100, 1000, 10); /* T = 10 ms */
	struct rl_result r;
	uint64_t tat = 0, ok = 0;

	/* A request every 5 ms (2x the rate) for 10 s: B + rate*t admitted. */
	for (uint64_t t = 1000000; t <= 1000000 + 10000000; t += 5000) {
		tat = rl_gcra(tat, t, &l, &r);
		ok += r.allowed;
	}
	ASSERT_EQ(ok, 10 + 1000);
}

static void test_table_acquire_and_peek(void)
{
	struct rl_table t;
	struct rl_limit l = lim(1, 60000, 3);
	struct rl_result r;

	ASSERT_EQ(rl_init(&t, 1024), 0);
	rl_peek(&t, 42, &l, 1000, &r);
	ASSERT_EQ(r.remaining, 3);
	for (int i = 0; i < 3; i++) {
		rl_acquire(&t, 42, &l, 1000, &r);
		ASSERT_TRUE(r.allowed);
	}
	rl_acquire(&t, 42, &l, 1000, &r);
	ASSERT_FALSE(r.allowed);
	rl_peek(&t, 42, &l, 1000, &r);
	ASSERT_EQ(r.remaining, 0);
	rl_acquire(&t, 43, &l, 1000, &r); /* another key, own bucket */
	ASSERT_TRUE(r.allowed);
	rl_free(&t);
}

static void test_table_evicts_idle(void)
{
	struct rl_table t;
	struct rl_limit l = lim(1000, 1000, 1); /* T = 1 ms */
	struct rl_result r;
	uint64_t now = 1000000;

	ASSERT_EQ(rl_init(&t, 1024), 0);
	/* 8 windows' worth of keys all homed near one slot fill it ... */
	for (uint64_t k = 1; k <= RL_PROBE; k++) {
		rl_acquire(&t, (k << 32) | 5, &l, now, &r);
		ASSERT_TRUE(r.allowed);
	}
	ASSERT_EQ(atomic_load(&t.full), 0);
	rl_acquire(&t, (999ull << 32) | 5, &l, now, &r);
	ASSERT_EQ(atomic_load(&t.full), 1); /* every bucket live: admitted, counted */
	/* ... and once they are idle (TAT passed), a new key takes a slot. */
	rl_acquire(&t, (1000ull << 32) | 5, &l, now + 2000, &r);
	ASSERT_TRUE(r.allowed);
	ASSERT_EQ(atomic_load(&t.full), 1);
	ASSERT_EQ(atomic_load(&t.evictions), 1);
	/* The new key is now limited for real. */
	rl_acquire(&t, (1000ull << 32) | 5, &l, now + 2000, &r);
	ASSERT_FALSE(r.allowed);
	rl_free(&t);
}

static struct rl_table shared;
static _Atomic uint64_t admitted;

static void *hammer(void *arg)
{
	struct rl_limit l = lim(1, 86400000, 1000);
	struct rl_result r;

	for (int i = 0; i < 20000; i++) {
		rl_acquire(&shared, 0xabcdef12345ull, &l, 5000000, &r);
		if (r.allowed)
			atomic_fetch_add(&admitted, 1);
	}
	return arg;
}

static void test_exact_under_two_threads(void)
{
	pthread_t a, b;

	ASSERT_EQ(rl_init(&shared, 4096), 0);
	atomic_store(&admitted, 0);
	pthread_create(&a, NULL, hammer, NULL);
	pthread_create(&b, NULL, hammer, NULL);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	ASSERT_EQ(atomic_load(&admitted), 1000); /* never one more, never one less */
	rl_free(&shared);
}

static void test_parse_rate(void)
{
	struct cfg_rate r;
	char buf[32];

	ASSERT_EQ(rl_parse_rate("100/s", &r), 0);
	ASSERT_EQ(r.count, 100);
	ASSERT_EQ(r.per_ms, 1000);
	ASSERT_EQ(rl_parse_rate("6000/m", &r), 0);
	ASSERT_EQ(r.per_ms, 60000);
	ASSERT_EQ(rl_parse_rate("10/h", &r), 0);
	ASSERT_EQ(rl_parse_rate("1000/d", &r), 0);
	ASSERT_EQ(r.per_ms, 86400000);
	ASSERT_STREQ(rl_format_rate(&r, buf, sizeof(buf)), "1000/d");
	ASSERT_EQ(rl_parse_rate("0/s", &r), -EINVAL);
	ASSERT_EQ(rl_parse_rate("010/s", &r), -EINVAL);
	ASSERT_EQ(rl_parse_rate("10", &r), -EINVAL);
	ASSERT_EQ(rl_parse_rate("10/w", &r), -EINVAL);
	ASSERT_EQ(rl_parse_rate("/s", &r), -EINVAL);
	ASSERT_EQ(rl_parse_rate("10000000000/s", &r), -ERANGE);
}

static void test_hash(void)
{
	ASSERT_NE(rl_hash(1, "a", 1), rl_hash(2, "a", 1)); /* seeded */
	ASSERT_NE(rl_hash(1, "a", 1), rl_hash(1, "b", 1));
	ASSERT_NE(rl_hash(0, "", 0), 0);
}

int main(void)
{
	RUN(test_limit_of);
	RUN(test_gcra_burst_then_deny);
	RUN(test_gcra_refill_boundary);
	RUN(test_gcra_sustained_rate);
	RUN(test_table_acquire_and_peek);
	RUN(test_table_evicts_idle);
	RUN(test_exact_under_two_threads);
	RUN(test_parse_rate);
	RUN(test_hash);
	return test_done();
}
