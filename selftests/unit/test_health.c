/* selftests/unit/test_health.c — health: check state machine (rise/fall), passive ejection and its backoff and share, slow start, breakers, config. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>

#include "breaker.h"
#include "config.h"
#include "health.h"
#include "lb.h"
#include "lb_algos.h"
#include "test.h"

#define MAXS 8
#define MS 1000000ULL
#define SEC 1000000000ULL

struct fx {
	struct cfg_server srv[MAXS];
	struct cfg_upstream ups;
	struct lb_pool pool;
	struct health_track t[MAXS];
};

/* n servers 10.0.0.1:80...; rise 2, fall 3; outlier 3 failures, 1 s base, 5 s max, 50%. */
static void fx_init(struct fx *f, unsigned n)
{
	memset(f, 0, sizeof(*f));
	for (unsigned i = 0; i < n; i++) {
		struct sockaddr_in *in = (struct sockaddr_in *)&f->srv[i].addr.ss;

		in->sin_family = AF_INET;
		in->sin_port = htons(80);
		in->sin_addr.s_addr = htonl(0x0a000001u + i);
		f->srv[i].addr.len = sizeof(*in);
		f->srv[i].weight = 1;
	}
	f->ups.name = "api";
	f->ups.servers = f->srv;
	f->ups.nservers = n;
	f->ups.health.type = CFG_HEALTH_HTTP;
	f->ups.health.rise = 2;
	f->ups.health.fall = 3;
	f->ups.outlier.consecutive_failures = 3;
	f->ups.outlier.base_ejection_ms = 1000;
	f->ups.outlier.max_ejection_ms = 5000;
	f->ups.outlier.max_ejected_percent = 50;
}

static void fx_pool(struct fx *f)
{
	ASSERT_EQ(lb_pool_init(&f->pool, &f->ups), 0);
}

static bool is_down(struct fx *f, unsigned i)
{
	return atomic_load(&f->pool.servers[i].down);
}

static bool is_ejected(struct fx *f, unsigned i)
{
	return atomic_load(&f->pool.servers[i].ejected);
}

static void test_rise_fall(void)
{
	struct fx f;
	struct health_track *t;

	fx_init(&f, 2);
	fx_pool(&f);
	t = &f.t[0];
	/* Servers start up; two failures are not enough with fall 3, a pass resets the count. */
	ASSERT_EQ(health_result(&f.pool, 0, t, false, "status 503", 0, 1 * SEC), 0);
	ASSERT_EQ(health_result(&f.pool, 0, t, false, "status 503", 0, 2 * SEC), 0);
	ASSERT_EQ(health_result(&f.pool, 0, t, true, "status 200", 0, 3 * SEC), 0);
	ASSERT_EQ(t->fail_streak, 0);
	ASSERT_FALSE(is_down(&f, 0));
	ASSERT_EQ(health_result(&f.pool, 0, t, false, "connect: Connection refused", 0, 4 * SEC), 0);
	ASSERT_EQ(health_result(&f.pool, 0, t, false, "connect: Connection refused", 0, 5 * SEC), 0);
	ASSERT_EQ(health_result(&f.pool, 0, t, false, "connect: Connection refused", 0, 6 * SEC), -1);
	ASSERT_TRUE(is_down(&f, 0));
	ASSERT_STREQ(health_state_name(&f.pool.servers[0]), "down");
	ASSERT_STREQ(t->last, "connect: Connection refused");
	ASSERT_EQ(t->checks, 6);
	/* More failures while down change nothing (and log nothing). */
	ASSERT_EQ(health_result(&f.pool, 0, t, false, "x", 0, 7 * SEC), 0);
	/* rise 2: one pass is not enough, a failure in between starts over. */
	ASSERT_EQ(health_result(&f.pool, 0, t, true, "status 200", 0, 8 * SEC), 0);
	ASSERT_EQ(health_result(&f.pool, 0, t, false, "status 500", 0, 9 * SEC), 0);
	ASSERT_EQ(health_result(&f.pool, 0, t, true, "status 200", 0, 10 * SEC), 0);
	ASSERT_TRUE(is_down(&f, 0));
	ASSERT_EQ(health_result(&f.pool, 0, t, true, "status 200", 0, 11 * SEC), 1);
	ASSERT_FALSE(is_down(&f, 0));
	ASSERT_TRUE(t->last_ok);
	ASSERT_EQ(t->ok_streak, 2);
	/* The other server never moved. */
	ASSERT_FALSE(is_down(&f, 1));
	lb_pool_destroy(&f.pool);
}

static void test_ejection_backoff(void)
{
	struct fx f;
	struct lb_server *s;
	uint64_t now = 100 * SEC;

	fx_init(&f, 4);
	fx_pool(&f);
	s = &f.pool.servers[1];
	/* An OK in between resets the run. */
	health_observe(&f.pool, 1, HEALTH_5XX, now);
	health_observe(&f.pool, 1, HEALTH_5XX, now);
	health_observe(&f.pool, 1, HEALTH_OK, now);
	health_observe(&f.pool, 1, HEALTH_5XX, now);
	health_observe(&f.pool, 1, HEALTH_CONNECT_FAIL, now);
	ASSERT_FALSE(is_ejected(&f, 1));
	health_observe(&f.pool, 1, HEALTH_TIMEOUT, now);
	ASSERT_TRUE(is_ejected(&f, 1));
	ASSERT_EQ(atomic_load(&s->eject_reason), LB_EJECT_TIMEOUT);
	ASSERT_EQ(atomic_load(&s->ejections), 1);
	ASSERT_EQ(atomic_load(&s->ejected_until_ns), now + 1 * SEC);
	ASSERT_EQ(atomic_load(&f.pool.nejected), 1);
	ASSERT_STREQ(health_state_name(s), "ejected");

	/* The timer ends it; a tick before the end does not. */
	health_tick(&f.pool, now + 999 * MS);
	ASSERT_TRUE(is_ejected(&f, 1));
	now += 1 * SEC;
	health_tick(&f.pool, now);
	ASSERT_FALSE(is_ejected(&f, 1));
	ASSERT_EQ(atomic_load(&f.pool.nejected), 0);

	/* Ejection n lasts n × base, capped at max (5 s). */
	for (uint32_t n = 2; n <= 7; n++) {
		for (int k = 0; k < 3; k++)
			health_observe(&f.pool, 1, HEALTH_5XX, now);
		ASSERT_TRUE(is_ejected(&f, 1));
		ASSERT_EQ(atomic_load(&s->ejections), n);
		ASSERT_EQ(atomic_load(&s->eject_reason), LB_EJECT_5XX);
		ASSERT_EQ(atomic_load(&s->ejected_until_ns) - now, (n < 5 ? n : 5) * SEC);
		now = atomic_load(&s->ejected_until_ns);
		health_tick(&f.pool, now);
		ASSERT_FALSE(is_ejected(&f, 1));
	}
	/* In for max_ejection without trouble: the count starts over. */
	health_tick(&f.pool, now + 5 * SEC);
	ASSERT_EQ(atomic_load(&s->ejections), 0);
	for (int k = 0; k < 3; k++)
		health_observe(&f.pool, 1, HEALTH_5XX, now + 5 * SEC);
	ASSERT_EQ(atomic_load(&s->ejected_until_ns) - (now + 5 * SEC), 1 * SEC);
	lb_pool_destroy(&f.pool);

	/* Outlier detection off: nothing is counted at all. */
	fx_init(&f, 2);
	f.ups.outlier.consecutive_failures = 0;
	fx_pool(&f);
	for (int k = 0; k < 100; k++)
		health_observe(&f.pool, 0, HEALTH_5XX, now);
	ASSERT_FALSE(is_ejected(&f, 0));
	ASSERT_EQ(atomic_load(&f.pool.servers[0].fails), 0);
	lb_pool_destroy(&f.pool);
}

static void test_max_ejected_percent(void)
{
	struct fx f;

	/* 4 servers at 50%: two may go, the third stays whatever it does. */
	fx_init(&f, 4);
	fx_pool(&f);
	for (unsigned i = 0; i < 4; i++)
		for (int k = 0; k < 10; k++)
			health_observe(&f.pool, (int)i, HEALTH_5XX, 1 * SEC);
	ASSERT_EQ(atomic_load(&f.pool.nejected), 2);
	ASSERT_TRUE(is_ejected(&f, 0));
	ASSERT_TRUE(is_ejected(&f, 1));
	ASSERT_FALSE(is_ejected(&f, 2));
	ASSERT_FALSE(is_ejected(&f, 3));
	/* One comes back: the next failing server may take its slot. */
	health_tick(&f.pool, 2 * SEC);
	ASSERT_EQ(atomic_load(&f.pool.nejected), 0);
	for (int k = 0; k < 3; k++)
		health_observe(&f.pool, 3, HEALTH_5XX, 2 * SEC);
	ASSERT_TRUE(is_ejected(&f, 3));
	lb_pool_destroy(&f.pool);

	/* 3 servers at 10%: the floor would be 0, yet one may always go. */
	fx_init(&f, 3);
	f.ups.outlier.max_ejected_percent = 10;
	fx_pool(&f);
	for (unsigned i = 0; i < 3; i++)
		for (int k = 0; k < 3; k++)
			health_observe(&f.pool, (int)i, HEALTH_CONNECT_FAIL, 1 * SEC);
	ASSERT_EQ(atomic_load(&f.pool.nejected), 1);
	lb_pool_destroy(&f.pool);

	/* 0%: never. */
	fx_init(&f, 3);
	f.ups.outlier.max_ejected_percent = 0;
	fx_pool(&f);
	for (int k = 0; k < 10; k++)
		health_observe(&f.pool, 0, HEALTH_5XX, 1 * SEC);
	ASSERT_EQ(atomic_load(&f.pool.nejected), 0);
	lb_pool_destroy(&f.pool);
}

static void test_check_readmits(void)
{
	struct fx f;
	uint64_t at = 50 * SEC;

	fx_init(&f, 2);
	f.ups.outlier.base_ejection_ms = 60000;
	f.ups.outlier.max_ejection_ms = 60000;
	fx_pool(&f);
	for (int k = 0; k < 3; k++)
		health_observe(&f.pool, 0, HEALTH_5XX, at);
	ASSERT_TRUE(is_ejected(&f, 0));
	/* A check that began before the ejection says nothing about it. */
	ASSERT_EQ(health_result(&f.pool, 0, &f.t[0], true, "status 200", at - 1, at + 1 * SEC), 0);
	ASSERT_TRUE(is_ejected(&f, 0));
	/* One that began after re-admits at once, long before the 60 s are over. */
	ASSERT_EQ(health_result(&f.pool, 0, &f.t[0], true, "status 200", at + 1, at + 2 * SEC), 1);
	ASSERT_FALSE(is_ejected(&f, 0));
	ASSERT_EQ(atomic_load(&f.pool.nejected), 0);
	ASSERT_STREQ(health_state_name(&f.pool.servers[0]), "up");
	lb_pool_destroy(&f.pool);
}

static void test_slow_start_curve(void)
{
	struct fx f;
	struct lb_server *s;
	uint64_t t0 = 10 * SEC;

	fx_init(&f, 2);
	f.srv[0].weight = 4;
	f.ups.slow_start_ms = 10000;
	fx_pool(&f);
	s = &f.pool.servers[0];
	/* Not ramping: full weight, × scale. */
	ASSERT_EQ(health_eff_weight(s, 10000, t0), 4 * LB_WEIGHT_SCALE);
	atomic_store(&s->ramp_start_ns, t0);
	/* 10% at the start, linear to 100% at the end: 40, 76, 220, 364, 400 (weight 4 × 100). */
	ASSERT_EQ(health_eff_weight(s, 10000, t0), 40);
	ASSERT_EQ(health_eff_weight(s, 10000, t0 + 1 * SEC), 76);
	ASSERT_EQ(health_eff_weight(s, 10000, t0 + 5 * SEC), 220);
	ASSERT_EQ(health_eff_weight(s, 10000, t0 + 9 * SEC), 364);
	ASSERT_EQ(health_eff_weight(s, 10000, t0 + 10 * SEC), 400);
	/* Monotonic all the way. */
	for (uint64_t t = 0, prev = 0; t <= 10 * SEC; t += 250 * MS) {
		uint64_t w = health_eff_weight(s, 10000, t0 + t);

		ASSERT_GE(w, prev);
		prev = w;
	}
	/* A runtime weight ramps the same way. */
	atomic_store(&s->weight_rt, 10);
	ASSERT_EQ(health_eff_weight(s, 10000, t0 + 5 * SEC), 550);
	atomic_store(&s->weight_rt, 0);
	/* Weight 1 still starts above zero. */
	atomic_store(&f.pool.servers[1].ramp_start_ns, t0);
	ASSERT_EQ(health_eff_weight(&f.pool.servers[1], 10000, t0), LB_WEIGHT_SCALE / 10);

	/* The tick publishes the weight the picks read, and ends the ramp. */
	health_tick(&f.pool, t0 + 5 * SEC);
	ASSERT_EQ(atomic_load(&s->eff_weight), 220);
	ASSERT_EQ(lb_weight(s), 220);
	health_tick(&f.pool, t0 + 10 * SEC);
	ASSERT_EQ(atomic_load(&s->eff_weight), 400);
	ASSERT_EQ(atomic_load(&s->ramp_start_ns), 0);

	/* Coming up after checks starts a ramp; the end of an ejection does too. */
	for (int k = 0; k < 3; k++)
		health_result(&f.pool, 1, &f.t[1], false, "x", 0, 20 * SEC);
	ASSERT_TRUE(is_down(&f, 1));
	health_result(&f.pool, 1, &f.t[1], true, "ok", 0, 21 * SEC);
	health_result(&f.pool, 1, &f.t[1], true, "ok", 0, 22 * SEC);
	ASSERT_EQ(atomic_load(&f.pool.servers[1].ramp_start_ns), 22 * SEC);
	/* Published at once, before any tick: the first picks already see 10%. */
	ASSERT_EQ(lb_weight(&f.pool.servers[1]), LB_WEIGHT_SCALE / 10);
	for (int k = 0; k < 3; k++)
		health_observe(&f.pool, 0, HEALTH_5XX, 30 * SEC);
	health_tick(&f.pool, 31 * SEC);
	ASSERT_EQ(atomic_load(&s->ramp_start_ns), 31 * SEC);
	ASSERT_EQ(atomic_load(&s->eff_weight), 40);
	lb_pool_destroy(&f.pool);
}

static void test_breaker_counters(void)
{
	struct fx f;
	bool pool_level;

	fx_init(&f, 2);
	f.ups.limits.max_requests = 2;
	f.ups.limits.max_pending = 1;
	f.srv[1].limits.max_requests = 1;
	f.srv[1].limits.max_connections = 1;
	fx_pool(&f);

	/* Pool: two requests in, the third is refused and counted. */
	ASSERT_EQ(breaker_pool_admit(&f.pool), -1);
	ASSERT_EQ(breaker_pool_admit(&f.pool), -1);
	ASSERT_EQ(breaker_pool_admit(&f.pool), LB_TRIP_REQUESTS);
	ASSERT_EQ(atomic_load(&f.pool.trips[LB_TRIP_REQUESTS]), 1);
	breaker_pool_release(&f.pool);
	ASSERT_EQ(breaker_pool_admit(&f.pool), -1);
	breaker_pool_release(&f.pool);
	breaker_pool_release(&f.pool);
	/* Releases past zero saturate instead of wrapping. */
	breaker_pool_release(&f.pool);
	ASSERT_EQ(atomic_load(&f.pool.admitted), 0);

	/* Pending: a connect in progress fills max_pending 1. */
	breaker_connect_begin(&f.pool, 0);
	ASSERT_EQ(breaker_pool_admit(&f.pool), LB_TRIP_PENDING);
	ASSERT_EQ(atomic_load(&f.pool.trips[LB_TRIP_PENDING]), 1);
	breaker_connect_end(&f.pool, 0);
	ASSERT_EQ(breaker_pool_admit(&f.pool), -1);
	breaker_pool_release(&f.pool);

	/* Server limits: server 1 takes one request and one connection. */
	ASSERT_EQ(breaker_server_admit(&f.pool, 1, true, &pool_level), -1);
	ASSERT_EQ(breaker_server_admit(&f.pool, 1, false, &pool_level), LB_TRIP_REQUESTS);
	ASSERT_FALSE(pool_level);
	breaker_server_release(&f.pool, 1);
	breaker_conn_open(&f.pool, 1);
	ASSERT_EQ(breaker_server_admit(&f.pool, 1, false, &pool_level), -1); /* reuse: fine */
	breaker_server_release(&f.pool, 1);
	ASSERT_EQ(breaker_server_admit(&f.pool, 1, true, &pool_level), LB_TRIP_CONNECTIONS);
	ASSERT_EQ(atomic_load(&f.pool.servers[1].trips[LB_TRIP_CONNECTIONS]), 1);
	ASSERT_EQ(atomic_load(&f.pool.servers[1].trips[LB_TRIP_REQUESTS]), 1);
	breaker_conn_close(&f.pool, 1);
	ASSERT_EQ(atomic_load(&f.pool.servers[1].conns), 0);
	/* Server 0 has no limits of its own. */
	for (int k = 0; k < 100; k++)
		ASSERT_EQ(breaker_server_admit(&f.pool, 0, true, &pool_level), -1);
	ASSERT_EQ(atomic_load(&f.pool.servers[0].admitted), 0);
	lb_pool_destroy(&f.pool);

	/* Pool max_connections is a pool-level refusal. */
	fx_init(&f, 2);
	f.ups.limits.max_connections = 1;
	fx_pool(&f);
	breaker_conn_open(&f.pool, 0);
	ASSERT_EQ(breaker_server_admit(&f.pool, 1, true, &pool_level), LB_TRIP_CONNECTIONS);
	ASSERT_TRUE(pool_level);
	ASSERT_EQ(atomic_load(&f.pool.trips[LB_TRIP_CONNECTIONS]), 1);
	ASSERT_EQ(breaker_server_admit(&f.pool, 1, false, &pool_level), -1);
	breaker_conn_close(&f.pool, 0);
	ASSERT_EQ(breaker_server_admit(&f.pool, 1, true, &pool_level), -1);
	ASSERT_STREQ(breaker_trip_name(LB_TRIP_PENDING), "max_pending");
	ASSERT_STRSTR(breaker_message(-1)->body, "no healthy backend server");
	ASSERT_STRSTR(breaker_message(LB_TRIP_REQUESTS)->body, "circuit breaker");
	lb_pool_destroy(&f.pool);
}

static void test_config(void)
{
	static const char yaml[] =
		"listeners:\n  - name: web\n    address: 127.0.0.1:8080\n"
		"upstreams:\n"
		"  - name: api\n"
		"    health: {path: /healthz, expect: [200-299, 3xx, 418], body_contains: ok, interval: 5s,\n"
		"             jitter: 20%, timeout: 2s, rise: 3, fall: 4, host: api.internal}\n"
		"    outlier: {consecutive_failures: 7, base_ejection: 10s, max_ejection: 1m, max_ejected_percent: 30}\n"
		"    slow_start: 30s\n"
		"    limits: {max_connections: 100, max_pending: 10, max_requests: 50}\n"
		"    servers:\n"
		"      - 10.0.0.1:80\n"
		"      - {address: 10.0.0.2:80, backup: true, limits: {max_requests: 5}}\n"
		"  - name: plain\n"
		"    health: {type: tcp}\n"
		"    outlier: {}\n"
		"    servers: [10.0.0.3:80]\n"
		"routes:\n  - upstream: api\n";
	struct config *cfg = NULL;
	char err[512] = "";
	const struct cfg_upstream *u;

	ASSERT_EQ(config_load_string(yaml, sizeof(yaml) - 1, "t.yaml", &cfg, err, sizeof(err)), 0);
	u = &cfg->upstreams[0];
	ASSERT_EQ(u->health.type, CFG_HEALTH_HTTP);
	ASSERT_STREQ(u->health.path, "/healthz");
	ASSERT_STREQ(u->health.method, "GET");
	ASSERT_STREQ(u->health.host, "api.internal");
	ASSERT_STREQ(u->health.body_contains, "ok");
	ASSERT_EQ(u->health.nexpect, 3);
	ASSERT_EQ(u->health.expect[0].lo, 200);
	ASSERT_EQ(u->health.expect[0].hi, 299);
	ASSERT_EQ(u->health.expect[1].lo, 300);
	ASSERT_EQ(u->health.expect[1].hi, 399);
	ASSERT_EQ(u->health.expect[2].lo, 418);
	ASSERT_EQ(u->health.expect[2].hi, 418);
	ASSERT_EQ(u->health.interval_ms, 5000);
	ASSERT_EQ(u->health.jitter_pct, 20);
	ASSERT_EQ(u->health.timeout_ms, 2000);
	ASSERT_EQ(u->health.rise, 3);
	ASSERT_EQ(u->health.fall, 4);
	ASSERT_EQ(u->outlier.consecutive_failures, 7);
	ASSERT_EQ(u->outlier.base_ejection_ms, 10000);
	ASSERT_EQ(u->outlier.max_ejection_ms, 60000);
	ASSERT_EQ(u->outlier.max_ejected_percent, 30);
	ASSERT_EQ(u->slow_start_ms, 30000);
	ASSERT_EQ(u->limits.max_connections, 100);
	ASSERT_EQ(u->limits.max_pending, 10);
	ASSERT_EQ(u->limits.max_requests, 50);
	ASSERT_FALSE(u->servers[0].backup);
	ASSERT_TRUE(u->servers[1].backup);
	ASSERT_EQ(u->servers[1].limits.max_requests, 5);
	ASSERT_EQ(u->nbackup, 1);
	/* Defaults. */
	u = &cfg->upstreams[1];
	ASSERT_EQ(u->health.type, CFG_HEALTH_TCP);
	ASSERT_TRUE(u->health.path == NULL);
	ASSERT_EQ(u->health.interval_ms, 2000);
	ASSERT_EQ(u->health.timeout_ms, 1000);
	ASSERT_EQ(u->health.jitter_pct, 10);
	ASSERT_EQ(u->health.rise, 2);
	ASSERT_EQ(u->health.fall, 3);
	ASSERT_EQ(u->outlier.consecutive_failures, 5);
	ASSERT_EQ(u->outlier.base_ejection_ms, 30000);
	ASSERT_EQ(u->outlier.max_ejection_ms, 300000);
	ASSERT_EQ(u->outlier.max_ejected_percent, 50);
	ASSERT_EQ(u->slow_start_ms, 0);
	config_free(cfg);

	static const struct {
		const char *snippet, *want;
	} bad[] = {
		{ "    health: {expect: [600]}\n", "t.yaml:6: upstreams[0].health.expect[0]: \"600\": statuses are 100..599" },
		{ "    health: {expect: 200-100}\n", "range must not be reversed" },
		{ "    health: {expect: abc}\n", "expected a status, a range" },
		{ "    health: {jitter: 60%}\n", "upstreams[0].health.jitter: must be between 0% and 50%" },
		{ "    health: {interval: 50ms}\n", "upstreams[0].health.interval: must be between 100ms" },
		{ "    health: {method: \"G T\"}\n", "upstreams[0].health.method" },
		{ "    health: {rise: 0}\n", "upstreams[0].health.rise: must be between 1 and 100" },
		{ "    outlier: {base_ejection: 10s, max_ejection: 5s}\n",
		  "upstreams[0].outlier.max_ejection: must not be shorter than base_ejection" },
		{ "    limits: {max_pending: -1}\n", "upstreams[0].limits.max_pending: expected an integer" },
		{ "    servers: [{address: 10.0.0.1:80, backup: yes}]\n",
		  "upstreams[0].servers[0].backup: expected true or false" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char doc[1024];
		int n = snprintf(doc, sizeof(doc),
				 "listeners:\n  - name: web\n    address: 127.0.0.1:8080\n"
				 "upstreams:\n  - name: api\n%s%s"
				 "routes:\n  - upstream: api\n",
				 bad[i].snippet,
				 strstr(bad[i].snippet, "servers:") ? "" : "    servers: [10.0.0.1:80]\n");

		err[0] = '\0';
		ASSERT_EQ(config_load_string(doc, (size_t)n, "t.yaml", &cfg, err, sizeof(err)), -EINVAL);
		ASSERT_STRSTR(err, bad[i].want);
	}
}

int main(void)
{
	RUN(test_rise_fall);
	RUN(test_ejection_backoff);
	RUN(test_max_ejected_percent);
	RUN(test_check_readmits);
	RUN(test_slow_start_curve);
	RUN(test_breaker_counters);
	RUN(test_config);
	return test_done();
}
