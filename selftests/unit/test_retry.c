/* selftests/unit/test_retry.c — agent/retry.c: conditions, idempotency, full-jitter backoff, the budget, exclusion, and the retry: config section. */
#include <errno.h>

#include "config.h"
#include "retry.h"
#include "test.h"

static struct cfg_retry defaults(void)
{
	struct cfg_retry r = {
		.attempts = 2,
		.on = RETRY_ON_DEFAULT | RETRY_BIT(RETRY_503),
		.backoff_base_ms = 25,
		.backoff_max_ms = 250,
		.budget_ratio_bp = 2000,
		.budget_min_per_second = 3,
	};
	return r;
}

static void test_idempotent_methods(void)
{
	ASSERT_TRUE(retry_method_idempotent("GET", 3));
	ASSERT_TRUE(retry_method_idempotent("HEAD", 4));
	ASSERT_TRUE(retry_method_idempotent("OPTIONS", 7));
	ASSERT_TRUE(retry_method_idempotent("TRACE", 5));
	ASSERT_TRUE(retry_method_idempotent("PUT", 3));
	ASSERT_TRUE(retry_method_idempotent("DELETE", 6));
	ASSERT_FALSE(retry_method_idempotent("POST", 4));
	ASSERT_FALSE(retry_method_idempotent("PATCH", 5));
	ASSERT_FALSE(retry_method_idempotent("CONNECT", 7));
	/* Methods are case-sensitive (RFC 9110 §9.1), and a prefix is not the method. */
	ASSERT_FALSE(retry_method_idempotent("get", 3));
	ASSERT_FALSE(retry_method_idempotent("GETX", 4));
	ASSERT_FALSE(retry_method_idempotent("GET", 2));
	ASSERT_FALSE(retry_method_idempotent(NULL, 0));
}

static void test_reason_names(void)
{
	for (int i = 0; i < RETRY_REASON_N; i++)
		ASSERT_EQ(retry_reason_parse(retry_reason_name((enum retry_reason)i)), i);
	ASSERT_EQ(retry_reason_parse("500"), -1);
	ASSERT_EQ(retry_reason_parse("Reset"), -1);
	ASSERT_EQ(retry_reason_of_status(502), RETRY_502);
	ASSERT_EQ(retry_reason_of_status(503), RETRY_503);
	ASSERT_EQ(retry_reason_of_status(504), RETRY_504);
	ASSERT_EQ(retry_reason_of_status(500), -1);
	ASSERT_EQ(retry_reason_of_status(200), -1);
	ASSERT_STREQ(retry_refuse_name(RETRY_REFUSE_BUDGET), "budget");
	ASSERT_STREQ(retry_refuse_name(RETRY_REFUSE_STREAMED_BODY), "streamed_body");
}

static void test_backoff_full_jitter(void)
{
	struct cfg_retry r = defaults();
	uint64_t rng = 42, maxseen[4] = { 0 }, sum0 = 0;
	const int n = 20000;

	for (int i = 0; i < n; i++)
		for (unsigned k = 0; k < 4; k++) {
			uint64_t d = retry_backoff_ms(&r, k, &rng);
			uint64_t cap = k == 0 ? 25 : k == 1 ? 50 : k == 2 ? 100 : 200;

			ASSERT_LE(d, cap);
			if (d > maxseen[k])
				maxseen[k] = d;
			if (k == 0)
				sum0 += d;
		}
	/* Uniform over [0, cap]: the maximum is reached and the mean sits near cap / 2. */
	ASSERT_EQ(maxseen[0], 25);
	ASSERT_EQ(maxseen[3], 200);
	ASSERT_GT(sum0 * 10 / n, 110);
	ASSERT_LT(sum0 * 10 / n, 140);
	/* Capped by max however many retries came before, no overflow. */
	for (unsigned k = 4; k < 80; k += 7)
		ASSERT_LE(retry_backoff_ms(&r, k, &rng), 250);
	r.backoff_base_ms = r.backoff_max_ms = 0;
	ASSERT_EQ(retry_backoff_ms(&r, 3, &rng), 0);
}

static void test_budget_floor_and_ratio(void)
{
	struct cfg_retry r = defaults();
	struct retry_budget b = { 0 };
	uint64_t t = 5000000; /* ms */
	int ok = 0;

	/* No requests yet: only the per-second floor. */
	for (int i = 0; i < 10; i++)
		ok += retry_budget_take(&b, &r, t);
	ASSERT_EQ(ok, 3);
	/* Same second, 100 requests: 20% of them, the 3 taken included. */
	for (int i = 0; i < 100; i++)
		retry_budget_request(&b, t + 10);
	ok = 0;
	for (int i = 0; i < 100; i++)
		ok += retry_budget_take(&b, &r, t + 20);
	ASSERT_EQ(ok, 17);
	/* The next second: its own floor of 3, the ratio is still spent. */
	ok = 0;
	for (int i = 0; i < 10; i++)
		ok += retry_budget_take(&b, &r, t + 1000);
	ASSERT_EQ(ok, 3);
	/* After the window the history is gone: only the floor again. */
	ok = 0;
	for (int i = 0; i < 10; i++)
		ok += retry_budget_take(&b, &r, t + 1000 * (RETRY_WINDOW_S + 2));
	ASSERT_EQ(ok, 3);
}

static void test_budget_window_slides(void)
{
	struct cfg_retry r = defaults();
	struct retry_budget b = { 0 };
	uint64_t t = 1000000;
	int ok = 0;

	r.budget_min_per_second = 0;
	for (int i = 0; i < 50; i++)
		retry_budget_request(&b, t);
	for (int i = 0; i < 20; i++)
		ok += retry_budget_take(&b, &r, t + 100);
	ASSERT_EQ(ok, 10);
	/* 9 s later the same requests still count, so do the retries. */
	ASSERT_FALSE(retry_budget_take(&b, &r, t + 9000));
	/* 10 s later both left the window; new requests give new room. */
	ASSERT_FALSE(retry_budget_take(&b, &r, t + 10000));
	for (int i = 0; i < 10; i++)
		retry_budget_request(&b, t + 10000);
	ASSERT_TRUE(retry_budget_take(&b, &r, t + 10000));
	ASSERT_TRUE(retry_budget_take(&b, &r, t + 10000));
	ASSERT_FALSE(retry_budget_take(&b, &r, t + 10000));
	/* ratio 0 and no floor: never. */
	r.budget_ratio_bp = 0;
	for (int i = 0; i < 1000; i++)
		retry_budget_request(&b, t + 11000);
	ASSERT_FALSE(retry_budget_take(&b, &r, t + 11000));
}

static void test_decide_order(void)
{
	struct cfg_retry r = defaults();
	struct retry_budget b = { 0 };
	struct retry_ask a = {
		.reason = RETRY_503, .done = 0, .idempotent = true, .replayable = true,
		.now_ms = 100000, .deadline_ms = 0,
	};
	enum retry_refuse why = RETRY_REFUSE_N;
	uint64_t rng = 7, delay = 99;

	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_GO);
	ASSERT_LE(delay, 25);
	/* A condition not in `on` is no retry and no refusal. */
	a.reason = RETRY_502;
	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_NO);
	a.reason = RETRY_TIMEOUT;
	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_NO);
	a.reason = RETRY_RESET;
	a.done = 2;
	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_REFUSED);
	ASSERT_EQ(why, RETRY_REFUSE_ATTEMPTS);
	a.done = 1;
	a.idempotent = false;
	a.replayable = false;
	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_REFUSED);
	ASSERT_EQ(why, RETRY_REFUSE_NON_IDEMPOTENT);
	a.idempotent = true;
	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_REFUSED);
	ASSERT_EQ(why, RETRY_REFUSE_STREAMED_BODY);
	ASSERT_EQ(delay, 0);
	a.replayable = true;
	/* Any sleep from now on ends at or past the deadline. */
	a.deadline_ms = a.now_ms;
	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_REFUSED);
	ASSERT_EQ(why, RETRY_REFUSE_DEADLINE);
	a.deadline_ms = 0;
	/* Refusals did not spend the budget: two more fit the floor of 3, then it is spent. */
	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_GO);
	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_GO);
	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_REFUSED);
	ASSERT_EQ(why, RETRY_REFUSE_BUDGET);
	/* attempts: 0 turns request retries off. */
	r.attempts = 0;
	a.done = 0;
	ASSERT_EQ(retry_decide(&r, &b, &a, &rng, &delay, &why), RETRY_REFUSED);
	ASSERT_EQ(why, RETRY_REFUSE_ATTEMPTS);
}

static void test_deadline_vs_backoff(void)
{
	struct cfg_retry r = defaults();
	struct retry_ask a = {
		.reason = RETRY_503, .idempotent = true, .replayable = true, .now_ms = 1000,
		.deadline_ms = 1100,
	};
	enum retry_refuse why;
	uint64_t rng = 3, delay;
	int go = 0, late = 0;

	/* base 100ms: sleeps in [0, 100]; the deadline 100ms away refuses only a sleep of exactly 100. */
	r.backoff_base_ms = 100;
	r.backoff_max_ms = 100;
	r.budget_min_per_second = 1000000;
	for (int i = 0; i < 2000; i++) {
		struct retry_budget b = { 0 };
		enum retry_verdict v = retry_decide(&r, &b, &a, &rng, &delay, &why);

		if (v == RETRY_GO) {
			go++;
			ASSERT_LT(a.now_ms + delay, a.deadline_ms);
		} else {
			late++;
			ASSERT_EQ(why, RETRY_REFUSE_DEADLINE);
		}
	}
	ASSERT_GT(go, 1900);
	/* 50ms away: about half the sleeps would end past it. */
	a.deadline_ms = 1050;
	go = late = 0;
	for (int i = 0; i < 2000; i++) {
		struct retry_budget b = { 0 };

		if (retry_decide(&r, &b, &a, &rng, &delay, &why) == RETRY_GO)
			go++;
		else
			late++;
	}
	ASSERT_GT(go, 800);
	ASSERT_GT(late, 800);
}

static bool usable_mask(const void *ctx, unsigned i)
{
	return (*(const uint32_t *)ctx >> i) & 1;
}

static void test_exclude(void)
{
	uint32_t tried[16] = { 0 }, all3 = 7, only0 = 1, s0s2 = 5;

	/* One of three tried: the others are left to pick. */
	tried[0] = 0;
	ASSERT_EQ(retry_exclude(tried, 1, 15, 0, 3, usable_mask, &all3), 1);
	ASSERT_EQ(tried[0], 0);
	/* All three tried, 2 failed last: only 2 is avoided. */
	tried[0] = 0, tried[1] = 1, tried[2] = 2;
	ASSERT_EQ(retry_exclude(tried, 3, 15, 2, 3, usable_mask, &all3), 1);
	ASSERT_EQ(tried[0], 2);
	/* A pool of one: the same server again. */
	tried[0] = 0;
	ASSERT_EQ(retry_exclude(tried, 1, 15, 0, 1, usable_mask, &only0), 0);
	/* Server 1 is down: untried but unusable does not count. */
	tried[0] = 0, tried[1] = 2;
	ASSERT_EQ(retry_exclude(tried, 2, 15, 2, 3, usable_mask, &s0s2), 1);
	ASSERT_EQ(tried[0], 2);
	/* The exclusion list full: start over avoiding the failed one. */
	tried[0] = 0;
	ASSERT_EQ(retry_exclude(tried, 15, 15, 0, 3, usable_mask, &all3), 1);
	ASSERT_EQ(tried[0], 0);
}

static void test_counters(void)
{
	struct retry_counters c = { 0 };

	retry_count(&c, RETRY_503);
	retry_count(&c, RETRY_503);
	retry_count(&c, RETRY_REASON_N); /* out of range: ignored */
	retry_count_refused(&c, RETRY_REFUSE_BUDGET);
	ASSERT_EQ(atomic_load(&c.retries[RETRY_503]), 2);
	ASSERT_EQ(atomic_load(&c.retries[RETRY_RESET]), 0);
	ASSERT_EQ(atomic_load(&c.refused[RETRY_REFUSE_BUDGET]), 1);
}

/* ---- the retry: section of config.c ---- */

#define HEAD                                                                                 \
	"listeners:\n"                                                                        \
	"  - name: web\n"                                                                     \
	"    address: 127.0.0.1:8080\n"                                                       \
	"upstreams:\n"                                                                        \
	"  - name: api\n"                                                                     \
	"    servers:\n"                                                                      \
	"      - 127.0.0.1:9001\n" /* line 7 */

static int load(const char *yaml, struct config **cfg, char *err, size_t len)
{
	return config_load_string(yaml, strlen(yaml), "t.yaml", cfg, err, len);
}

static void test_config_defaults(void)
{
	struct config *cfg = NULL;
	char err[512] = "";

	ASSERT_EQ(load(HEAD "routes:\n  - upstream: api\n", &cfg, err, sizeof(err)), 0);
	const struct cfg_retry *r = &cfg->upstreams[0].retry;

	ASSERT_EQ(r->attempts, 1);
	ASSERT_EQ(r->on, RETRY_BIT(RETRY_CONNECT_FAILURE) | RETRY_BIT(RETRY_RESET));
	ASSERT_EQ(r->backoff_base_ms, 25);
	ASSERT_EQ(r->backoff_max_ms, 250);
	ASSERT_EQ(r->budget_ratio_bp, 2000);
	ASSERT_EQ(r->budget_min_per_second, 3);
	ASSERT_FALSE(cfg->routes[0].retry_non_idempotent);
	config_free(cfg);
}

static void test_config_full(void)
{
	struct config *cfg = NULL;
	char err[512] = "";
	const char *y = HEAD
		"    retry: {attempts: 2, on: [connect_failure, reset, timeout, 502, 503, 504],\n"
		"            backoff: {base: 100ms, max: 1s}, budget: {ratio: 0.25, min_per_second: 0}}\n"
		"routes:\n  - upstream: api\n    retry_non_idempotent: true\n";

	ASSERT_EQ(load(y, &cfg, err, sizeof(err)), 0);
	const struct cfg_retry *r = &cfg->upstreams[0].retry;

	ASSERT_EQ(r->attempts, 2);
	ASSERT_EQ(r->on, (1u << RETRY_REASON_N) - 1);
	ASSERT_EQ(r->backoff_base_ms, 100);
	ASSERT_EQ(r->backoff_max_ms, 1000);
	ASSERT_EQ(r->budget_ratio_bp, 2500);
	ASSERT_EQ(r->budget_min_per_second, 0);
	ASSERT_TRUE(cfg->routes[0].retry_non_idempotent);
	config_free(cfg);
	/* on: [] turns every retry off, connect failures included. */
	ASSERT_EQ(load(HEAD "    retry: {on: [], budget: {ratio: 1}}\nroutes:\n  - upstream: api\n", &cfg,
		       err, sizeof(err)),
		  0);
	ASSERT_EQ(cfg->upstreams[0].retry.on, 0);
	ASSERT_EQ(cfg->upstreams[0].retry.budget_ratio_bp, 10000);
	config_free(cfg);
}

struct cfg_err {
	const char *name;
	const char *retry;  /* the retry: value, on line 8 */
	const char *expect; /* the whole message starts with this */
};

static const struct cfg_err cfg_errs[] = {
	{ "negative attempts", "{attempts: -1}",
	  "t.yaml:8: upstreams[0].retry.attempts: expected an integer, got \"-1\"" },
	{ "attempts over 10", "{attempts: 11}",
	  "t.yaml:8: upstreams[0].retry.attempts: must be between 0 and 10, got 11" },
	{ "ratio over 1", "{budget: {ratio: 1.5}}",
	  "t.yaml:8: upstreams[0].retry.budget.ratio: must be between 0 and 1, got 1.5" },
	{ "negative ratio", "{budget: {ratio: -0.1}}",
	  "t.yaml:8: upstreams[0].retry.budget.ratio: must not be negative, got -0.1" },
	{ "ratio not a number", "{budget: {ratio: lots}}",
	  "t.yaml:8: upstreams[0].retry.budget.ratio: expected a ratio between 0 and 1" },
	{ "negative floor", "{budget: {min_per_second: -3}}",
	  "t.yaml:8: upstreams[0].retry.budget.min_per_second: expected an integer" },
	{ "unknown condition", "{on: [reset, 500]}",
	  "t.yaml:8: upstreams[0].retry.on[1]: unknown condition \"500\" (expected connect_failure" },
	{ "on not a list", "{on: reset}", "t.yaml:8: upstreams[0].retry.on: expected a list" },
	{ "negative base", "{backoff: {base: -25ms}}",
	  "t.yaml:8: upstreams[0].retry.backoff.base: expected a duration" },
	{ "max under base", "{backoff: {base: 100ms, max: 50ms}}",
	  "t.yaml:8: upstreams[0].retry.backoff.max: must not be shorter than base (100ms)" },
	{ "unknown key", "{tries: 2}", "t.yaml:8: upstreams[0].retry.tries: unknown key" },
	{ "unknown budget key", "{budget: {percent: 20}}",
	  "t.yaml:8: upstreams[0].retry.budget.percent: unknown key" },
};

static void test_config_error(const struct cfg_err *e)
{
	char yaml[1024], err[512] = "";
	struct config *cfg = NULL;

	snprintf(yaml, sizeof(yaml), HEAD "    retry: %s\nroutes:\n  - upstream: api\n", e->retry);
	ASSERT_EQ(load(yaml, &cfg, err, sizeof(err)), -EINVAL);
	if (strncmp(err, e->expect, strlen(e->expect)))
		TEST_FAIL_("message \"%s\" does not start with \"%s\"", err, e->expect);
}

static void test_config_route_flag_error(void)
{
	struct config *cfg = NULL;
	char err[512] = "";

	ASSERT_EQ(load(HEAD "routes:\n  - upstream: api\n    retry_non_idempotent: sometimes\n", &cfg,
		       err, sizeof(err)),
		  -EINVAL);
	ASSERT_STRSTR(err, "t.yaml:10: routes[0].retry_non_idempotent:");
}

int main(void)
{
	RUN(test_idempotent_methods);
	RUN(test_reason_names);
	RUN(test_backoff_full_jitter);
	RUN(test_budget_floor_and_ratio);
	RUN(test_budget_window_slides);
	RUN(test_decide_order);
	RUN(test_deadline_vs_backoff);
	RUN(test_exclude);
	RUN(test_counters);
	RUN(test_config_defaults);
	RUN(test_config_full);
	for (size_t i = 0; i < sizeof(cfg_errs) / sizeof(cfg_errs[0]); i++)
		RUN_NAMED(cfg_errs[i].name, test_config_error, &cfg_errs[i]);
	RUN(test_config_route_flag_error);
	return test_done();
}
