/* selftests/unit/test_lb.c — load balancers: distribution, weights, stickiness, exclusions, latency awareness, key hashing. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>

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
	struct lb_local loc;
};

/* Servers 10.0.0.1:8080, 10.0.0.2:8080, ... with the given weights. */
static int fx_init(struct fx *f, enum lb_algorithm alg, const uint32_t *weights, unsigned n)
{
	int rc;

	memset(f, 0, sizeof(*f));
	for (unsigned i = 0; i < n; i++) {
		struct sockaddr_in *in = (struct sockaddr_in *)&f->srv[i].addr.ss;

		in->sin_family = AF_INET;
		in->sin_port = htons(8080);
		in->sin_addr.s_addr = htonl(0x0a000001u + i);
		f->srv[i].addr.len = sizeof(*in);
		f->srv[i].weight = weights ? weights[i] : 1;
	}
	f->ups.name = "backend";
	f->ups.algorithm = alg;
	f->ups.hash_source = LB_HASH_CLIENT_IP;
	f->ups.servers = f->srv;
	f->ups.nservers = n;
	rc = lb_pool_init(&f->pool, &f->ups);
	if (rc)
		return rc;
	return lb_local_init(&f->loc, &f->pool, 1);
}

static void fx_destroy(struct fx *f)
{
	lb_local_destroy(&f->loc);
	lb_pool_destroy(&f->pool);
}

static struct sockaddr_in v4(uint32_t a)
{
	struct sockaddr_in in;

	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons(40000);
	in.sin_addr.s_addr = htonl(a);
	return in;
}

static struct sockaddr_in6 v6(const char *s)
{
	struct sockaddr_in6 in6;

	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	in6.sin6_port = htons(40000);
	inet_pton(AF_INET6, s, &in6.sin6_addr);
	return in6;
}

static void req_init(struct http1_request *r, const char *path)
{
	memset(r, 0, sizeof(*r));
	r->method = "GET";
	r->method_len = 3;
	r->path = path;
	r->path_len = (uint32_t)strlen(path);
	r->host = "h";
	r->host_len = 1;
}

static void req_hdr(struct http1_request *r, const char *name, const char *value)
{
	struct http1_header *h = &r->headers[r->nheaders++];

	h->name = name;
	h->name_len = (uint32_t)strlen(name);
	h->value = value;
	h->value_len = (uint32_t)strlen(value);
}

static void test_init_errors_and_local(void)
{
	struct cfg_upstream u;
	struct lb_pool p;
	struct fx f;
	struct lb_local a, b, z;
	int differ = 0;

	memset(&u, 0, sizeof(u));
	ASSERT_EQ(lb_pool_init(&p, &u), -EINVAL);
	ASSERT_EQ(fx_init(&f, (enum lb_algorithm)99, NULL, 3), -EINVAL);
	ASSERT_TRUE(f.pool.servers == NULL);
	ASSERT_EQ(lb_local_init(&a, &p, 1), -EINVAL);

	ASSERT_EQ(fx_init(&f, LB_WEIGHTED_ROUND_ROBIN, (uint32_t[]){ 2, 3, 4 }, 3), 0);
	ASSERT_EQ(f.pool.nservers, 3);
	ASSERT_EQ(f.pool.servers[2].weight, 4);
	ASSERT_STREQ(f.pool.ops->name, "weighted_round_robin");
	ASSERT_TRUE(f.loc.swrr_cur != NULL);
	for (unsigned i = 0; i < 3; i++)
		ASSERT_EQ(f.loc.swrr_cur[i], 0);

	/* Same seed, same stream; another seed, another stream; seed 0 still works. */
	ASSERT_EQ(lb_local_init(&a, &f.pool, 42), 0);
	ASSERT_EQ(lb_local_init(&b, &f.pool, 42), 0);
	ASSERT_EQ(lb_local_init(&z, &f.pool, 0), 0);
	ASSERT_NE(z.rng, 0);
	for (int i = 0; i < 16; i++)
		ASSERT_EQ(lb_rand(&a), lb_rand(&b));
	lb_local_destroy(&b);
	ASSERT_EQ(lb_local_init(&b, &f.pool, 43), 0);
	for (int i = 0; i < 16; i++)
		differ += lb_rand(&a) != lb_rand(&b);
	ASSERT_GT(differ, 12);
	lb_local_destroy(&a);
	lb_local_destroy(&b);
	lb_local_destroy(&z);
	ASSERT_TRUE(z.swrr_cur == NULL);
	fx_destroy(&f);
	ASSERT_TRUE(f.pool.servers == NULL);
}

static void test_round_robin_even(void)
{
	struct fx f;
	unsigned cnt[4] = { 0 };

	/* Weights are ignored by plain round robin. */
	ASSERT_EQ(fx_init(&f, LB_ROUND_ROBIN, (uint32_t[]){ 1, 5, 1, 9 }, 4), 0);
	for (int i = 0; i < 100000; i += 4) {
		unsigned seen = 0;

		for (int k = 0; k < 4; k++) {
			int s = lb_pick(&f.pool, &f.loc, 0, NULL, 0, 0);

			ASSERT_TRUE(s >= 0 && s < 4);
			cnt[s]++;
			seen |= 1u << s;
		}
		/* Every run of four picks visits every server once. */
		ASSERT_EQ(seen, 0xf);
	}
	for (int s = 0; s < 4; s++)
		ASSERT_EQ(cnt[s], 25000);
	fx_destroy(&f);
}

static void test_weighted_rr_smooth(void)
{
	static const int want[7] = { 0, 0, 1, 0, 2, 0, 0 };
	struct fx f;
	unsigned cnt[3] = { 0 };
	int last = -1, run = 0, maxrun = 0, hist[7], nh = 0;

	ASSERT_EQ(fx_init(&f, LB_WEIGHTED_ROUND_ROBIN, (uint32_t[]){ 5, 1, 1 }, 3), 0);
	/* nginx's interleaving for 5:1:1. */
	for (int i = 0; i < 7; i++)
		ASSERT_EQ(lb_pick(&f.pool, &f.loc, 0, NULL, 0, 0), want[i]);
	for (int cyc = 0; cyc < 10000; cyc++) {
		unsigned c[3] = { 0 };

		for (int k = 0; k < 7; k++) {
			int s = lb_pick(&f.pool, &f.loc, 0, NULL, 0, 0);

			ASSERT_TRUE(s >= 0 && s < 3);
			c[s]++;
			cnt[s]++;
			hist[nh++ % 7] = s;
			/* Every window of the last k picks holds at most ceil(w/total*k)+1 of a server. */
			for (int len = 1; len <= 7 && len <= nh; len++) {
				int inwin[3] = { 0 };

				for (int j = 0; j < len; j++)
					inwin[hist[(nh - 1 - j) % 7]]++;
				ASSERT_LE(inwin[0], (5 * len + 6) / 7 + 1);
				ASSERT_LE(inwin[1], (len + 6) / 7 + 1);
				ASSERT_LE(inwin[2], (len + 6) / 7 + 1);
			}
			run = s == last ? run + 1 : 1;
			last = s;
			if (run > maxrun)
				maxrun = run;
		}
		/* Exactly proportional in every cycle of sum(weights) picks. */
		ASSERT_EQ(c[0], 5);
		ASSERT_EQ(c[1], 1);
		ASSERT_EQ(c[2], 1);
	}
	ASSERT_EQ(cnt[0], 50000);
	/*
	 * Smooth: at most two in a row inside a cycle, four across the seam
	 * (a a | a a); a plain WRR gives five in a row, a sorted one ten.
	 */
	ASSERT_EQ(maxrun, 4);
	fx_destroy(&f);

	ASSERT_EQ(fx_init(&f, LB_WEIGHTED_ROUND_ROBIN, (uint32_t[]){ 3, 2, 0 }, 3), 0);
	memset(cnt, 0, sizeof(cnt));
	/* Weight 0 counts as 1 rather than dividing by zero or starving. */
	for (int i = 0; i < 60000; i++)
		cnt[lb_pick(&f.pool, &f.loc, 0, NULL, 0, 0)]++;
	ASSERT_EQ(cnt[0], 30000);
	ASSERT_EQ(cnt[1], 20000);
	ASSERT_EQ(cnt[2], 10000);
	fx_destroy(&f);
}

static void test_least_conn_prefers_lowest(void)
{
	struct fx f;

	ASSERT_EQ(fx_init(&f, LB_LEAST_CONN, NULL, 3), 0);
	for (int i = 0; i < 3; i++)
		lb_begin(&f.pool, 0);
	lb_begin(&f.pool, 1);
	for (int i = 0; i < 10; i++)
		ASSERT_EQ(lb_pick(&f.pool, &f.loc, 0, NULL, 0, 0), 2);
	lb_begin(&f.pool, 2);
	lb_begin(&f.pool, 2);
	ASSERT_EQ(lb_pick(&f.pool, &f.loc, 0, NULL, 0, 0), 1);
	/* Finishing requests on 0 makes it the least loaded. */
	for (int i = 0; i < 3; i++)
		lb_end(&f.pool, 0, 0, 0);
	ASSERT_EQ(atomic_load(&f.pool.servers[0].active), 0);
	ASSERT_EQ(lb_pick(&f.pool, &f.loc, 0, NULL, 0, 0), 0);
	fx_destroy(&f);
}

static void test_least_conn_weights(void)
{
	struct fx f;
	unsigned cnt[2] = { 0 };

	ASSERT_EQ(fx_init(&f, LB_LEAST_CONN, (uint32_t[]){ 3, 1 }, 2), 0);
	/* Under load: in-flight requests settle at the weight ratio. */
	for (int i = 0; i < 400; i++) {
		int s = lb_pick(&f.pool, &f.loc, 0, NULL, 0, 0);

		ASSERT_TRUE(s == 0 || s == 1);
		lb_begin(&f.pool, s);
		ASSERT_LE(atomic_load(&f.pool.servers[1].active) * 3,
			  atomic_load(&f.pool.servers[0].active) + 3);
	}
	ASSERT_EQ(atomic_load(&f.pool.servers[0].active), 300);
	ASSERT_EQ(atomic_load(&f.pool.servers[1].active), 100);
	for (int i = 0; i < 300; i++)
		lb_end(&f.pool, 0, 0, 0);
	for (int i = 0; i < 100; i++)
		lb_end(&f.pool, 1, 0, 0);

	/* Idle pool (one request at a time): ties still follow the weights. */
	for (int i = 0; i < 4000; i++) {
		int s = lb_pick(&f.pool, &f.loc, 0, NULL, 0, 0);

		lb_begin(&f.pool, s);
		cnt[s]++;
		lb_end(&f.pool, s, 0, 0);
	}
	ASSERT_EQ(cnt[0], 3000);
	ASSERT_EQ(cnt[1], 1000);
	fx_destroy(&f);
}

static void test_least_conn_spreads_ties(void)
{
	struct fx f;

	ASSERT_EQ(fx_init(&f, LB_LEAST_CONN, NULL, 3), 0);
	for (int r = 0; r < 1000; r++) {
		unsigned seen = 0;

		for (int k = 0; k < 3; k++)
			seen |= 1u << lb_pick(&f.pool, &f.loc, 0, NULL, 0, 0);
		ASSERT_EQ(seen, 7);
	}
	fx_destroy(&f);
}

static void test_ip_hash_sticky_and_spread(void)
{
	struct fx f;
	struct lb_local other;
	unsigned cnt[4] = { 0 };
	struct http1_request req;

	ASSERT_EQ(fx_init(&f, LB_IP_HASH, NULL, 4), 0);
	ASSERT_EQ(lb_local_init(&other, &f.pool, 999), 0);
	req_init(&req, "/");
	for (uint32_t c = 0; c < 4000; c++) {
		struct sockaddr_in cl = v4(0xc0a80000u + c * 7919u);
		uint64_t h = lb_request_hash(&f.pool, &req, (struct sockaddr *)&cl);
		int s = lb_pick(&f.pool, &f.loc, h, NULL, 0, 0);

		ASSERT_TRUE(s >= 0 && s < 4);
		cnt[s]++;
		/* The same client lands on the same server, from any worker, every time. */
		for (int k = 0; k < 3; k++)
			ASSERT_EQ(lb_pick(&f.pool, &f.loc, h, NULL, 0, 0), s);
		ASSERT_EQ(lb_pick(&f.pool, &other, h, NULL, 0, 0), s);
		ASSERT_EQ(lb_request_hash(&f.pool, &req, (struct sockaddr *)&cl), h);
	}
	for (int s = 0; s < 4; s++) {
		ASSERT_GT(cnt[s], 1000 * 85 / 100);
		ASSERT_LT(cnt[s], 1000 * 115 / 100);
	}
	lb_local_destroy(&other);
	fx_destroy(&f);
}

/* Server for each of nkeys header-keyed requests. */
static void map_keys(struct fx *f, int *out, int nkeys)
{
	struct http1_request req;
	struct sockaddr_in cl = v4(0x7f000001);
	char val[32];

	req_init(&req, "/");
	for (int k = 0; k < nkeys; k++) {
		snprintf(val, sizeof(val), "user-%d", k);
		req.nheaders = 0;
		req_hdr(&req, "X-User", val);
		out[k] = lb_pick(&f->pool, &f->loc,
				 lb_request_hash(&f->pool, &req, (struct sockaddr *)&cl), NULL, 0, 0);
	}
}

static int fx_init_chash(struct fx *f, const uint32_t *weights, unsigned n)
{
	int rc = fx_init(f, LB_CONSISTENT_HASH, weights, n);

	/* The hash source only matters for lb_request_hash; the ring is already built. */
	f->ups.hash_source = LB_HASH_HEADER;
	f->ups.hash_name = "x-user";
	return rc;
}

#define NKEYS 100000

static void test_consistent_hash_even_and_stable(void)
{
	static int a[NKEYS], b[NKEYS];
	struct fx f;
	unsigned cnt[4] = { 0 };

	ASSERT_EQ(fx_init_chash(&f, NULL, 4), 0);
	map_keys(&f, a, NKEYS);
	map_keys(&f, b, NKEYS);
	for (int k = 0; k < NKEYS; k++) {
		ASSERT_TRUE(a[k] >= 0 && a[k] < 4);
		ASSERT_EQ(a[k], b[k]);
		cnt[a[k]]++;
	}
	for (int s = 0; s < 4; s++) {
		ASSERT_GT(cnt[s], NKEYS / 4 * 85 / 100);
		ASSERT_LT(cnt[s], NKEYS / 4 * 115 / 100);
	}
	fx_destroy(&f);

	/* A fresh pool from the same config builds the same ring. */
	ASSERT_EQ(fx_init_chash(&f, NULL, 4), 0);
	map_keys(&f, b, NKEYS);
	for (int k = 0; k < NKEYS; k++)
		ASSERT_EQ(a[k], b[k]);
	fx_destroy(&f);
}

static void test_consistent_hash_add_server(void)
{
	static int before[NKEYS], after[NKEYS];
	struct fx f;
	int moved = 0;

	ASSERT_EQ(fx_init_chash(&f, NULL, 4), 0);
	map_keys(&f, before, NKEYS);
	fx_destroy(&f);
	ASSERT_EQ(fx_init_chash(&f, NULL, 5), 0);
	map_keys(&f, after, NKEYS);
	fx_destroy(&f);
	for (int k = 0; k < NKEYS; k++) {
		if (before[k] == after[k])
			continue;
		moved++;
		/* Keys only ever move to the newcomer, never between old servers. */
		ASSERT_EQ(after[k], 4);
	}
	ASSERT_LT(moved, NKEYS * 30 / 100);
	ASSERT_GT(moved, NKEYS * 12 / 100);
}

static void test_consistent_hash_reorder(void)
{
	static int a[NKEYS], b[NKEYS];
	struct fx f;
	struct cfg_server tmp;

	/* The ring follows addresses, not list positions: swapping entries swaps indices only. */
	ASSERT_EQ(fx_init_chash(&f, NULL, 4), 0);
	map_keys(&f, a, NKEYS);
	fx_destroy(&f);
	ASSERT_EQ(fx_init_chash(&f, NULL, 4), 0);
	fx_destroy(&f);
	tmp = f.srv[0];
	f.srv[0] = f.srv[3];
	f.srv[3] = tmp;
	ASSERT_EQ(lb_pool_init(&f.pool, &f.ups), 0);
	ASSERT_EQ(lb_local_init(&f.loc, &f.pool, 5), 0);
	map_keys(&f, b, NKEYS);
	for (int k = 0; k < NKEYS; k++) {
		int want = a[k] == 0 ? 3 : a[k] == 3 ? 0 : a[k];

		ASSERT_EQ(b[k], want);
	}
	fx_destroy(&f);
}

static void test_consistent_hash_weights(void)
{
	static int a[NKEYS];
	static const uint32_t w[4] = { 1, 2, 3, 4 };
	struct fx f;
	unsigned cnt[4] = { 0 };

	ASSERT_EQ(fx_init_chash(&f, w, 4), 0);
	map_keys(&f, a, NKEYS);
	for (int k = 0; k < NKEYS; k++)
		cnt[a[k]]++;
	for (int s = 0; s < 4; s++) {
		unsigned want = NKEYS / 10 * w[s];

		ASSERT_GT(cnt[s], want * 85 / 100);
		ASSERT_LT(cnt[s], want * 115 / 100);
	}
	fx_destroy(&f);
}

static void test_request_hash_sources(void)
{
	struct fx f;
	struct http1_request r1, r2;
	struct sockaddr_in c1 = v4(0x0a010101), c2 = v4(0x0a020202);
	struct sockaddr_in6 m1 = v6("::ffff:10.1.1.1");
	struct sockaddr_in6 a1 = v6("2001:db8:1:2::1"), a2 = v6("2001:db8:1:2:ffff::9");
	struct sockaddr_in6 b1 = v6("2001:db8:1:3::1");
	struct sockaddr *s1 = (struct sockaddr *)&c1, *s2 = (struct sockaddr *)&c2;
	uint64_t ip1, ip2;

	ASSERT_EQ(fx_init(&f, LB_CONSISTENT_HASH, NULL, 3), 0);
	req_init(&r1, "/a/b");
	req_init(&r2, "/a/b");

	/* Client address: v4 whole, v4-mapped as v4, v6 by /64. */
	ip1 = lb_request_hash(&f.pool, &r1, s1);
	ip2 = lb_request_hash(&f.pool, &r1, s2);
	ASSERT_NE(ip1, ip2);
	ASSERT_EQ(lb_request_hash(&f.pool, &r1, (struct sockaddr *)&m1), ip1);
	ASSERT_EQ(lb_request_hash(&f.pool, &r1, (struct sockaddr *)&a1),
		  lb_request_hash(&f.pool, &r1, (struct sockaddr *)&a2));
	ASSERT_NE(lb_request_hash(&f.pool, &r1, (struct sockaddr *)&a1),
		  lb_request_hash(&f.pool, &r1, (struct sockaddr *)&b1));
	c2.sin_port = htons(1);
	ASSERT_EQ(lb_request_hash(&f.pool, &r1, s2), ip2); /* the port plays no part */

	/* Header: the value decides, whoever sends it; name case does not matter. */
	f.ups.hash_source = LB_HASH_HEADER;
	f.ups.hash_name = "x-tenant";
	req_hdr(&r1, "X-Tenant", "acme");
	req_hdr(&r2, "x-TENANT", "acme");
	ASSERT_EQ(lb_request_hash(&f.pool, &r1, s1), lb_request_hash(&f.pool, &r2, s2));
	ASSERT_NE(lb_request_hash(&f.pool, &r1, s1), ip1);
	r2.headers[0].value = "acmf";
	ASSERT_NE(lb_request_hash(&f.pool, &r1, s1), lb_request_hash(&f.pool, &r2, s2));
	/* Absent header: falls back to the client address. */
	r2.nheaders = 0;
	req_hdr(&r2, "X-Tenants", "acme");
	ASSERT_EQ(lb_request_hash(&f.pool, &r2, s2), ip2);

	/* Cookie: parsed out of "a=1; b=2" lists, across several Cookie fields. */
	f.ups.hash_source = LB_HASH_COOKIE;
	f.ups.hash_name = "sid";
	r1.nheaders = r2.nheaders = 0;
	req_hdr(&r1, "Cookie", "theme=dark; sid=abc123; lang=en");
	req_hdr(&r2, "cookie", "xsid=zzz; theme=light");
	req_hdr(&r2, "Cookie", "sid=abc123");
	ASSERT_EQ(lb_request_hash(&f.pool, &r1, s1), lb_request_hash(&f.pool, &r2, s2));
	ASSERT_NE(lb_request_hash(&f.pool, &r1, s1), ip1);
	r2.headers[1].value = "sid=abc124";
	ASSERT_NE(lb_request_hash(&f.pool, &r1, s1), lb_request_hash(&f.pool, &r2, s2));
	/* "xsid" and "SID" are other cookies: no sid → client address. */
	r2.nheaders = 0;
	req_hdr(&r2, "Cookie", "xsid=abc123;SID=abc123");
	ASSERT_EQ(lb_request_hash(&f.pool, &r2, s2), ip2);
	r2.nheaders = 0;
	ASSERT_EQ(lb_request_hash(&f.pool, &r2, s2), ip2);

	/* Path: the same path from anyone, query excluded by path_len. */
	f.ups.hash_source = LB_HASH_PATH;
	req_init(&r1, "/a/b");
	req_init(&r2, "/a/b?x=1");
	r2.path_len = 4;
	ASSERT_EQ(lb_request_hash(&f.pool, &r1, s1), lb_request_hash(&f.pool, &r2, s2));
	req_init(&r2, "/a/c");
	ASSERT_NE(lb_request_hash(&f.pool, &r1, s1), lb_request_hash(&f.pool, &r2, s2));
	fx_destroy(&f);

	/* ip_hash always keys on the address, whatever hash_source says. */
	ASSERT_EQ(fx_init(&f, LB_IP_HASH, NULL, 3), 0);
	f.ups.hash_source = LB_HASH_PATH;
	ASSERT_EQ(lb_request_hash(&f.pool, &r1, s1), ip1);
	fx_destroy(&f);
}

static const enum lb_algorithm all_algs[] = {
	LB_ROUND_ROBIN, LB_WEIGHTED_ROUND_ROBIN, LB_LEAST_CONN,
	LB_IP_HASH,     LB_CONSISTENT_HASH,      LB_PEAK_EWMA,
};
static const char *const alg_names[] = {
	"round_robin", "weighted_round_robin", "least_conn",
	"ip_hash",     "consistent_hash",      "peak_ewma",
};

static void check_exclusions(enum lb_algorithm alg)
{
	struct fx f;
	uint32_t ex02[] = { 0, 2 }, exall[] = { 3, 2, 1, 0 };
	unsigned cnt[4] = { 0 };

	ASSERT_EQ(fx_init(&f, alg, (uint32_t[]){ 1, 2, 3, 4 }, 4), 0);
	for (unsigned i = 0; i < 4; i++)
		lb_end(&f.pool, (int)i, (i + 1) * MS, 1 * SEC);

	/* A down server is never chosen; the rest all still are. */
	atomic_store(&f.pool.servers[1].down, true);
	for (uint64_t k = 0; k < 20000; k++) {
		int s = lb_pick(&f.pool, &f.loc, lb_hash64(&k, sizeof(k), 0), NULL, 0, 1 * SEC);

		ASSERT_TRUE(s >= 0 && s < 4);
		cnt[s]++;
	}
	ASSERT_EQ(cnt[1], 0);
	ASSERT_GT(cnt[0], 0);
	ASSERT_GT(cnt[2], 0);
	ASSERT_GT(cnt[3], 0);

	/* Down plus excluded: only server 3 is left, whatever the key. */
	for (uint64_t k = 0; k < 2000; k++)
		ASSERT_EQ(lb_pick(&f.pool, &f.loc, lb_hash64(&k, sizeof(k), 0), ex02, 2, 1 * SEC), 3);

	/* A retry never lands on the server that just failed. */
	atomic_store(&f.pool.servers[1].down, false);
	for (uint64_t k = 0; k < 2000; k++) {
		uint64_t h = lb_hash64(&k, sizeof(k), 0);
		int s = lb_pick(&f.pool, &f.loc, h, NULL, 0, 1 * SEC);
		uint32_t ex = (uint32_t)s;
		int t = lb_pick(&f.pool, &f.loc, h, &ex, 1, 1 * SEC);

		ASSERT_TRUE(t >= 0 && t < 4);
		ASSERT_NE(t, s);
	}

	ASSERT_EQ(lb_pick(&f.pool, &f.loc, 7, exall, 4, 1 * SEC), -1);
	for (unsigned i = 0; i < 4; i++)
		atomic_store(&f.pool.servers[i].down, true);
	ASSERT_EQ(lb_pick(&f.pool, &f.loc, 7, NULL, 0, 1 * SEC), -1);
	atomic_store(&f.pool.servers[2].down, false);
	ASSERT_EQ(lb_pick(&f.pool, &f.loc, 7, NULL, 0, 1 * SEC), 2);
	ASSERT_EQ(lb_pick(&f.pool, &f.loc, 7, &exall[1], 1, 1 * SEC), -1);
	fx_destroy(&f);
}

/* Feeds n samples of lat to server s, bracketed like real requests. */
static void feed(struct fx *f, int s, uint64_t lat, uint64_t now, int n)
{
	for (int i = 0; i < n; i++) {
		lb_begin(&f->pool, s);
		lb_end(&f->pool, s, lat, now);
	}
}

static void test_ewma_peak_and_decay(void)
{
	struct fx f;
	uint64_t v;

	ASSERT_EQ(fx_init(&f, LB_PEAK_EWMA, NULL, 2), 0);
	feed(&f, 0, 10 * MS, 1 * SEC, 1);
	ASSERT_EQ(atomic_load(&f.pool.servers[0].ewma_ns), 10 * MS);
	/* Peak: one slow answer takes effect at once. */
	feed(&f, 0, 100 * MS, 1 * SEC + 1 * MS, 1);
	ASSERT_EQ(atomic_load(&f.pool.servers[0].ewma_ns), 100 * MS);
	/* Lower samples blend in by elapsed time: after one time constant, 1/e of the old value remains. */
	feed(&f, 0, 10 * MS, 11 * SEC + 1 * MS, 1);
	v = atomic_load(&f.pool.servers[0].ewma_ns);
	ASSERT_GT(v, 42 * MS);
	ASSERT_LT(v, 44 * MS);
	/* A quick follow-up barely moves it. */
	feed(&f, 0, 1 * MS, 11 * SEC + 2 * MS, 1);
	ASSERT_GT(atomic_load(&f.pool.servers[0].ewma_ns), v * 99 / 100);
	ASSERT_EQ(atomic_load(&f.pool.servers[0].ewma_at_ns), 11 * SEC + 2 * MS);
	/* latency 0: the request ended without a sample. */
	feed(&f, 1, 0, 12 * SEC, 3);
	ASSERT_EQ(atomic_load(&f.pool.servers[1].ewma_ns), 0);
	ASSERT_EQ(atomic_load(&f.pool.servers[1].active), 0);
	/* An unpaired end does not wrap the in-flight count. */
	lb_end(&f.pool, 1, 0, 12 * SEC);
	ASSERT_EQ(atomic_load(&f.pool.servers[1].active), 0);
	fx_destroy(&f);
}

static void test_ewma_avoids_slow(void)
{
	struct fx f;
	unsigned cnt[4] = { 0 };
	int held[400];

	ASSERT_EQ(fx_init(&f, LB_PEAK_EWMA, NULL, 4), 0);
	feed(&f, 0, 5 * MS, 1 * SEC, 5);
	feed(&f, 1, 300 * MS, 1 * SEC, 5);
	feed(&f, 2, 5 * MS, 1 * SEC, 5);
	feed(&f, 3, 6 * MS, 1 * SEC, 5);
	for (int i = 0; i < 10000; i++)
		cnt[lb_pick(&f.pool, &f.loc, 0, NULL, 0, 1 * SEC + 1 * MS)]++;
	/* Two distinct candidates: the slow one always loses at equal load. */
	ASSERT_EQ(cnt[1], 0);
	ASSERT_GT(cnt[0], 2000);
	ASSERT_GT(cnt[2], 2000);
	ASSERT_GT(cnt[3], 1000);

	/* Under load, the fast servers' queues make the slow one worth a little traffic. */
	memset(cnt, 0, sizeof(cnt));
	for (int i = 0; i < 400; i++) {
		held[i] = lb_pick(&f.pool, &f.loc, 0, NULL, 0, 1 * SEC + 2 * MS);
		lb_begin(&f.pool, held[i]);
		cnt[held[i]]++;
	}
	ASSERT_GT(cnt[1], 0);
	ASSERT_LT(cnt[1], 20);
	for (int i = 0; i < 400; i++)
		lb_end(&f.pool, held[i], 0, 0);
	fx_destroy(&f);
}

static void test_ewma_probes_unsampled(void)
{
	struct fx f;
	int first = -1, during = 0;

	ASSERT_EQ(fx_init(&f, LB_PEAK_EWMA, NULL, 4), 0);
	feed(&f, 0, 1 * MS, 1 * SEC, 3);
	feed(&f, 1, 1 * MS, 1 * SEC, 3);
	feed(&f, 2, 1 * MS, 1 * SEC, 3);
	/* Server 3 has never answered: it is tried soon, even though the others are fast. */
	for (int i = 0; i < 50 && first < 0; i++)
		if (lb_pick(&f.pool, &f.loc, 0, NULL, 0, 1 * SEC) == 3)
			first = i;
	ASSERT_GE(first, 0);
	ASSERT_LT(first, 30);
	/* While its probe is out it does not swallow the traffic. */
	lb_begin(&f.pool, 3);
	for (int i = 0; i < 1000; i++)
		during += lb_pick(&f.pool, &f.loc, 0, NULL, 0, 1 * SEC) == 3;
	ASSERT_LT(during, 50);
	/* The probe comes back slow: from now on it is avoided. */
	lb_end(&f.pool, 3, 400 * MS, 1 * SEC);
	for (int i = 0; i < 1000; i++)
		ASSERT_NE(lb_pick(&f.pool, &f.loc, 0, NULL, 0, 1 * SEC + 1 * MS), 3);
	fx_destroy(&f);
}

static void test_ewma_retries_recovered(void)
{
	struct fx f;
	int slow = 0;

	/* Slow once, then shunned: its estimate fades, so after a minute it is tried again. */
	ASSERT_EQ(fx_init(&f, LB_PEAK_EWMA, NULL, 2), 0);
	feed(&f, 0, 500 * MS, 1 * SEC, 1);
	feed(&f, 1, 5 * MS, 1 * SEC, 1);
	for (int i = 0; i < 100; i++)
		slow += lb_pick(&f.pool, &f.loc, 0, NULL, 0, 2 * SEC) == 0;
	ASSERT_EQ(slow, 0);
	feed(&f, 1, 5 * MS, 61 * SEC, 1);
	for (int i = 0; i < 100; i++)
		slow += lb_pick(&f.pool, &f.loc, 0, NULL, 0, 61 * SEC) == 0;
	ASSERT_EQ(slow, 100);
	fx_destroy(&f);
}

struct worker_arg {
	struct lb_pool *pool;
	uint64_t seed;
	unsigned picks;
};

static void *worker(void *p)
{
	struct worker_arg *a = p;
	struct lb_local l;

	if (lb_local_init(&l, a->pool, a->seed))
		return NULL;
	for (unsigned i = 0; i < 20000; i++) {
		int s = lb_pick(a->pool, &l, i, NULL, 0, i * 1000ULL);

		if (s < 0)
			continue;
		lb_begin(a->pool, s);
		a->picks++;
		lb_end(a->pool, s, 1000 + (uint64_t)s * 1000, i * 1000ULL);
	}
	lb_local_destroy(&l);
	return NULL;
}

/* Workers share one pool without locks; in-flight counts return to zero. */
static void check_threads(enum lb_algorithm alg)
{
	struct fx f;
	pthread_t th[4];
	struct worker_arg args[4];

	ASSERT_EQ(fx_init(&f, alg, (uint32_t[]){ 1, 2, 3 }, 3), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct worker_arg){ .pool = &f.pool, .seed = (uint64_t)i };
		ASSERT_EQ(pthread_create(&th[i], NULL, worker, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ASSERT_EQ(args[i].picks, 20000);
	}
	for (int s = 0; s < 3; s++)
		ASSERT_EQ(atomic_load(&f.pool.servers[s].active), 0);
	fx_destroy(&f);
}

/* Backups (servers 2 and 3) stand in only when no primary can take the request. */
static void check_backup(enum lb_algorithm alg)
{
	struct fx f;
	unsigned cnt[4] = { 0 };
	uint32_t ex0 = 0, ex01[] = { 0, 1 };

	/* fx_init clears the fixture: mark the backups, then build the pool again. */
	ASSERT_EQ(fx_init(&f, alg, NULL, 4), 0);
	fx_destroy(&f);
	f.srv[2].backup = f.srv[3].backup = true;
	ASSERT_EQ(lb_pool_init(&f.pool, &f.ups), 0);
	ASSERT_EQ(lb_local_init(&f.loc, &f.pool, 1), 0);
	ASSERT_EQ(f.pool.nbackup, 2);
	for (uint64_t k = 0; k < 4000; k++) {
		int s = lb_pick(&f.pool, &f.loc, lb_hash64(&k, sizeof(k), 0), NULL, 0, 1 * SEC);

		ASSERT_TRUE(s >= 0 && s < 4);
		cnt[s]++;
	}
	ASSERT_EQ(cnt[2] + cnt[3], 0);
	ASSERT_GT(cnt[0], 0);
	ASSERT_GT(cnt[1], 0);

	/* One primary down, one ejected: the backups share the traffic. */
	atomic_store(&f.pool.servers[0].down, true);
	atomic_store(&f.pool.servers[1].ejected, true);
	memset(cnt, 0, sizeof(cnt));
	for (uint64_t k = 0; k < 4000; k++)
		cnt[lb_pick(&f.pool, &f.loc, lb_hash64(&k, sizeof(k), 0), NULL, 0, 1 * SEC)]++;
	ASSERT_EQ(cnt[0] + cnt[1], 0);
	ASSERT_GT(cnt[2], 0);
	ASSERT_GT(cnt[3], 0);

	/* A draining primary counts as gone; a primary coming back wins at once. */
	atomic_store(&f.pool.servers[1].ejected, false);
	atomic_store(&f.pool.servers[1].draining, true);
	ASSERT_GE(lb_pick(&f.pool, &f.loc, 5, NULL, 0, 1 * SEC), 2);
	atomic_store(&f.pool.servers[1].draining, false);
	for (uint64_t k = 0; k < 200; k++)
		ASSERT_EQ(lb_pick(&f.pool, &f.loc, lb_hash64(&k, sizeof(k), 0), NULL, 0, 1 * SEC), 1);

	/* Primaries already tried (connect failed) hand the retry to a backup. */
	atomic_store(&f.pool.servers[0].down, false);
	ASSERT_EQ(lb_pick(&f.pool, &f.loc, 9, &ex0, 1, 1 * SEC), 1);
	ASSERT_GE(lb_pick(&f.pool, &f.loc, 9, ex01, 2, 1 * SEC), 2);

	/* Backups obey the same rules among themselves. */
	atomic_store(&f.pool.servers[2].draining, true);
	ASSERT_EQ(lb_pick(&f.pool, &f.loc, 9, ex01, 2, 1 * SEC), 3);
	atomic_store(&f.pool.servers[3].down, true);
	ASSERT_EQ(lb_pick(&f.pool, &f.loc, 9, ex01, 2, 1 * SEC), -1);
	fx_destroy(&f);
}

/* Effective weights (slow start, runtime weight) steer the weighted picks; 0 means configured. */
static void test_effective_weight(void)
{
	struct fx f;
	unsigned cnt[2] = { 0 };

	ASSERT_EQ(fx_init(&f, LB_WEIGHTED_ROUND_ROBIN, (uint32_t[]){ 1, 1 }, 2), 0);
	ASSERT_EQ(lb_weight(&f.pool.servers[0]), LB_WEIGHT_SCALE);
	/* Server 1 at 10% of its weight, as at the start of a slow start: 10 to 1. */
	atomic_store(&f.pool.servers[1].eff_weight, LB_WEIGHT_SCALE / 10);
	for (int k = 0; k < 1100; k++)
		cnt[lb_pick(&f.pool, &f.loc, 0, NULL, 0, 1 * SEC)]++;
	ASSERT_EQ(cnt[0], 1000);
	ASSERT_EQ(cnt[1], 100);
	fx_destroy(&f);

	ASSERT_EQ(fx_init(&f, LB_LEAST_CONN, (uint32_t[]){ 1, 1 }, 2), 0);
	atomic_store(&f.pool.servers[0].eff_weight, 3 * LB_WEIGHT_SCALE);
	cnt[0] = cnt[1] = 0;
	for (int k = 0; k < 400; k++) {
		int s = lb_pick(&f.pool, &f.loc, 0, NULL, 0, 1 * SEC);

		lb_begin(&f.pool, s);
		cnt[s]++;
	}
	ASSERT_EQ(cnt[0], 300);
	ASSERT_EQ(cnt[1], 100);
	fx_destroy(&f);
}

int main(void)
{
	char name[64];

	RUN(test_init_errors_and_local);
	RUN(test_round_robin_even);
	RUN(test_weighted_rr_smooth);
	RUN(test_least_conn_prefers_lowest);
	RUN(test_least_conn_weights);
	RUN(test_least_conn_spreads_ties);
	RUN(test_ip_hash_sticky_and_spread);
	RUN(test_consistent_hash_even_and_stable);
	RUN(test_consistent_hash_add_server);
	RUN(test_consistent_hash_reorder);
	RUN(test_consistent_hash_weights);
	RUN(test_request_hash_sources);
	for (size_t i = 0; i < sizeof(all_algs) / sizeof(all_algs[0]); i++) {
		snprintf(name, sizeof(name), "exclude_and_down_%s", alg_names[i]);
		RUN_NAMED(name, check_exclusions, all_algs[i]);
	}
	for (size_t i = 0; i < sizeof(all_algs) / sizeof(all_algs[0]); i++) {
		snprintf(name, sizeof(name), "backup_%s", alg_names[i]);
		RUN_NAMED(name, check_backup, all_algs[i]);
	}
	RUN(test_effective_weight);
	RUN(test_ewma_peak_and_decay);
	RUN(test_ewma_avoids_slow);
	RUN(test_ewma_probes_unsampled);
	RUN(test_ewma_retries_recovered);
	for (size_t i = 0; i < sizeof(all_algs) / sizeof(all_algs[0]); i++) {
		snprintf(name, sizeof(name), "threads_%s", alg_names[i]);
		RUN_NAMED(name, check_threads, all_algs[i]);
	}
	return test_done();
}
