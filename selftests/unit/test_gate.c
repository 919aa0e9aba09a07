/* selftests/unit/test_gate.c — admission: credential sources, index publication and deferred free, verdicts, and the auth/limits/tiers config errors. */
#include "../../agent/gate.c"

#include <sys/stat.h>

#include "test.h"

static char dir[64];

static const char base_yaml[] =
	"listeners: [{name: web, address: \"127.0.0.1:1\"}]\n"       /* 1 */
	"upstreams: [{name: p, servers: [\"127.0.0.1:2\"]}]\n"       /* 2 */
	"tiers: [{name: free, rate: 2/s, burst: 2}]\n"                /* 3 */
	"routes:\n"                                                  /* 4 */
	"  - name: a\n"                                              /* 5 */
	"    upstream: p\n"                                          /* 6 */
	"    auth: {type: api_key, upstream_headers: {key_id: X-Key-Id}}\n"
	"    rate_limit_headers: true\n"
	"  - name: b\n"
	"    upstream: p\n"
	"    auth: api_key\n";

static struct config *load(const char *extra_state)
{
	char y[2048], err[512];
	struct config *cfg = NULL;

	snprintf(y, sizeof(y), "state_dir: %s\n%s", extra_state, base_yaml);
	if (config_load_string(y, strlen(y), "t.yaml", &cfg, err, sizeof(err)))
		printf("# %s\n", err);
	return cfg;
}

static void rm_dir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd))
		return;
}

static void parse_req(const char *s, struct http1_request *req)
{
	static const struct http1_limits lim = { 8192, 16384, 100 };

	http1_parse_request(s, strlen(s), &lim, req);
}

static void test_credential_sources(void)
{
	struct cfg_auth a = { .type = CFG_AUTH_API_KEY, .source = CFG_CRED_HEADER, .name = "X-API-Key" };
	struct http1_request req;
	const char *v;
	size_t n;

	parse_req("GET /x?a=1&api_key=K1&b=2 HTTP/1.1\r\nHost: h\r\nx-api-key: K2\r\n"
		  "Authorization: bearer   K3\r\n\r\n", &req);
	n = gate_credential(&a, &req, &v);
	ASSERT_MEMEQ(v, n, "K2");
	a.source = CFG_CRED_BEARER;
	n = gate_credential(&a, &req, &v);
	ASSERT_MEMEQ(v, n, "K3");
	a.source = CFG_CRED_QUERY;
	a.name = "api_key";
	n = gate_credential(&a, &req, &v);
	ASSERT_MEMEQ(v, n, "K1");
	a.name = "api";
	ASSERT_EQ(gate_credential(&a, &req, &v), 0); /* a prefix is not the parameter */
	parse_req("GET /x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic Zm9v\r\n\r\n", &req);
	a.source = CFG_CRED_BEARER;
	ASSERT_EQ(gate_credential(&a, &req, &v), 0);
}

static void test_claims(void)
{
	struct gate_verdict v;

	verdict_reset(&v);
	ASSERT_TRUE(gate_claim_add(&v, "sub", "u1", 2));
	ASSERT_TRUE(gate_claim_add(&v, "org", "acme", 4));
	ASSERT_STREQ(gate_claim_get(&v, "org"), "acme");
	ASSERT_STREQ(gate_claim_get(&v, "sub"), "u1");
	ASSERT_TRUE(gate_claim_get(&v, "iss") == NULL);
	ASSERT_FALSE(gate_claim_add(&v, "x", "a\0b", 3));
}

/* Creates a key in the store and republishes; returns the token. */
static void add_key(struct gate *g, const char *tier, const char *scopes, char *tok)
{
	struct key_record r = { 0 };
	uint8_t s[KEYS_SECRET_BYTES];

	keys_generate(r.id, s);
	keys_hash(s, r.hash);
	snprintf(r.name, sizeof(r.name), "t");
	snprintf(r.tier, sizeof(r.tier), "%s", tier);
	snprintf(r.scopes, sizeof(r.scopes), "%s", scopes);
	r.created = wall_now();
	keys_insert(g->ks, &r);
	pthread_mutex_lock(&g->lock);
	republish(g);
	pthread_mutex_unlock(&g->lock);
	keys_format(r.id, s, tok);
}

static int check_key(struct gate *g, int route, const char *tok, struct gate_verdict *v,
		     uint64_t now_ns)
{
	char raw[512];
	struct http1_request req;
	struct sockaddr_in sin = { .sin_family = AF_INET };

	snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: h\r\nX-API-Key: %s\r\n\r\n", tok);
	parse_req(raw, &req);
	return gate_check(g, 0, g->cfg, route, &req, (struct sockaddr *)&sin, now_ns, v);
}

static void test_index_swap_and_verdicts(void)
{
	struct config *cfg;
	struct gate *g = NULL;
	struct gate_verdict v;
	char err[256], tok[KEYS_TOKEN_LEN + 1], tok2[KEYS_TOKEN_LEN + 1];
	uint64_t seq;
	struct gate_index *held;

	snprintf(dir, sizeof(dir), "/tmp/test-gate-XXXXXX");
	ASSERT_TRUE(mkdtemp(dir) != NULL);
	cfg = load(dir);
	ASSERT_TRUE(cfg != NULL);
	ASSERT_EQ(gate_start(&g, cfg, 2, err, sizeof(err)), 0);
	ASSERT_TRUE(g != NULL);
	ASSERT_EQ(check_key(g, 0, "ocl_x", &v, 1000000000), 401);
	ASSERT_STRSTR(v.resp_headers, "WWW-Authenticate: ApiKey realm=\"a\"");
	ASSERT_STREQ(v.strip_header, "X-API-Key");

	/* Worker 0 sits inside the current index while a key is added. */
	held = gate_enter(g, 0, &seq);
	add_key(g, "free", "a", tok);
	ASSERT_TRUE(atomic_load(&g->cur) != held);
	pthread_mutex_lock(&g->lock);
	reclaim(g);
	ASSERT_TRUE(g->retired != NULL && g->retired->idx == held); /* still in use: kept */
	pthread_mutex_unlock(&g->lock);
	gate_leave(g, 0, seq);
	pthread_mutex_lock(&g->lock);
	reclaim(g);
	ASSERT_TRUE(g->retired == NULL); /* freed once the worker left */
	pthread_mutex_unlock(&g->lock);

	/* The new key works at once on any worker, in scope only. */
	ASSERT_EQ(check_key(g, 0, tok, &v, 2000000000), 0);
	ASSERT_STRSTR(v.up_headers, "X-Key-Id: ");
	ASSERT_STRSTR(v.resp_headers, "RateLimit-Limit: 2\r\n");
	ASSERT_STRSTR(v.resp_headers, "RateLimit-Remaining: 1\r\n");
	ASSERT_EQ(check_key(g, 1, tok, &v, 2000000000), 403);
	ASSERT_EQ(check_key(g, 0, tok, &v, 2000000000), 0);
	ASSERT_EQ(check_key(g, 0, tok, &v, 2000000000), 429); /* burst 2 */
	ASSERT_STRSTR(v.resp_headers, "Retry-After: 1\r\n");
	ASSERT_EQ(check_key(g, 0, tok, &v, 2500000000), 0);  /* 2/s: one back after 500 ms */

	/* A wrong secret for a known id is refused. */
	memcpy(tok2, tok, sizeof(tok2));
	tok2[20] = tok2[20] == 'a' ? 'b' : 'a';
	ASSERT_EQ(check_key(g, 0, tok2, &v, 3000000000), 401);
	ASSERT_STREQ(v.error, "auth: wrong secret for key");

	gate_stop(g);
	config_free(cfg);
	rm_dir();
}

static void test_no_gate_fails_closed(void)
{
	struct config *cfg = load("/nonexistent");
	struct gate_verdict v;
	struct http1_request req;
	struct sockaddr_in sin = { .sin_family = AF_INET };

	ASSERT_TRUE(cfg != NULL);
	parse_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n", &req);
	ASSERT_EQ(gate_check(NULL, 0, cfg, 0, &req, (struct sockaddr *)&sin, 1, &v), 503);
	ASSERT_EQ(gate_check(NULL, 0, cfg, -1, &req, (struct sockaddr *)&sin, 1, &v), 0);
	config_free(cfg);
}

struct err_case {
	const char *yaml;
	const char *want;
};

#define L "listeners: [{name: web, address: \"127.0.0.1:1\"}]\n" /* line 1 */
#define R "routes:\n  - name: r\n    respond: {status: 200}\n"  /* lines 2-4 */

static const struct err_case errs[] = {
	{ L R "    auth: basic\n", "t.yaml:5: routes[0].auth: expected api_key or a mapping" },
	{ L R "    auth: {type: saml}\n", "t.yaml:5: routes[0].auth.type: expected api_key or jwt, got \"saml\"" },
	{ L R "    auth: {header: X-Key}\n", "t.yaml:5: routes[0].auth.type: required key missing" },
	{ L R "    auth: {type: api_key, header: X-K, query: k}\n",
	  "t.yaml:5: routes[0].auth.query: the key is read from either a header or a query parameter" },
	{ L R "    auth: {type: api_key, header: \"Bad Name\"}\n",
	  "t.yaml:5: routes[0].auth.header: \"Bad Name\": expected a header name" },
	{ L R "    auth: {type: api_key, header: Authorization}\n",
	  "t.yaml:5: routes[0].auth.header: write \"Authorization: Bearer\"" },
	{ L R "    auth: {type: api_key, query: \"a b\"}\n", "t.yaml:5: routes[0].auth.query: \"a b\"" },
	{ L R "    auth: {type: api_key, upstream_headers: {key_id: \"X Y\"}}\n",
	  "t.yaml:5: routes[0].auth.upstream_headers.key_id: \"X Y\" is not a valid header name" },
	{ L R "    limits: [{key: ip, rate: 10}]\n",
	  "t.yaml:5: routes[0].limits[0].rate: expected a rate such as 10/s" },
	{ L R "    limits: [{key: ip, rate: 0/s}]\n", "t.yaml:5: routes[0].limits[0].rate:" },
	{ L R "    limits: [{key: api_key, rate: 1/s}]\n",
	  "t.yaml:5: routes[0].limits[0].key: key api_key needs auth: api_key" },
	{ L R "    limits: [{key: jwt_claim:sub, rate: 1/s}]\n",
	  "t.yaml:5: routes[0].limits[0].key: key jwt_claim needs auth type jwt" },
	{ L R "    limits: [{key: cookie:x, rate: 1/s}]\n",
	  "t.yaml:5: routes[0].limits[0].key: expected ip, api_key, header:NAME or jwt_claim:NAME" },
	{ L R "    limits: [{key: header:X-U, rate: 1/s, ipv6_prefix: 48}]\n",
	  "t.yaml:5: routes[0].limits[0].ipv6_prefix: only valid with key ip" },
	{ L R "    limits: [{key: ip, rate: 1/s, burst: 0}]\n",
	  "t.yaml:5: routes[0].limits[0].burst: must be between 1 and 1000000" },
	{ L R "    limits: [{key: ip, rate: 1/d, burst: 1000000}]\n",
	  "t.yaml:5: routes[0].limits[0].burst: burst 1000000 at this rate takes over two years" },
	{ L R "    limits: [{rate: 1/s}]\n", "t.yaml:5: routes[0].limits[0].key: required key missing" },
	{ L R "    limits: []\n", "t.yaml:5: routes[0].limits: empty list" },
	{ L R "    rate_limit_headers: yes\n", "t.yaml:5: routes[0].rate_limit_headers: expected true or false" },
	{ L R "tiers: [{name: free, rate: 1/s}, {name: free}]\n",
	  "t.yaml:5: tiers[1].name: duplicate name, first at line 5" },
	{ L R "tiers: [{name: free, burst: 5}]\n", "t.yaml:5: tiers[0].burst: needs rate" },
	{ L R "tiers: [{name: free, quota: {week: 5}}]\n", "t.yaml:5: tiers[0].quota.week: unknown key" },
	{ L R "tiers: [{name: free, quota: {day: 0}}]\n", "t.yaml:5: tiers[0].quota.day: must be between 1" },
	{ L R "tiers: [{rate: 1/s}]\n", "t.yaml:5: tiers[0].name: required key missing" },
};

static void check_err(const struct err_case *tc)
{
	struct config *cfg = NULL;
	char err[512];

	ASSERT_EQ(config_load_string(tc->yaml, strlen(tc->yaml), "t.yaml", &cfg, err, sizeof(err)),
		  -EINVAL);
	ASSERT_TRUE(cfg == NULL);
	if (strncmp(err, tc->want, strlen(tc->want)))
		TEST_FAIL_("error \"%s\" does not start with \"%s\"", err, tc->want);
}

static void test_config_accepts(void)
{
	static const char y[] = L R
		"    auth: {type: api_key, header: \"Authorization: Bearer\","
		" upstream_headers: {key_id: X-Key-Id, tier: X-Key-Tier}}\n"
		"    limits: [{key: ip, rate: 100/s, burst: 200, ipv6_prefix: 48},"
		" {key: api_key, rate: 6000/m}, {key: \"header:X-User\", rate: 10/h}]\n"
		"    rate_limit_headers: true\n"
		"tiers: [{name: free, rate: 10/s, burst: 20, quota: {day: 10000, month: 200000}},"
		" {name: pro}]\n";
	struct config *cfg = NULL;
	char err[512];
	const struct cfg_route *r;

	ASSERT_EQ(config_load_string(y, strlen(y), "t.yaml", &cfg, err, sizeof(err)), 0);
	r = &cfg->routes[0];
	ASSERT_EQ(r->auth.type, CFG_AUTH_API_KEY);
	ASSERT_EQ(r->auth.source, CFG_CRED_BEARER);
	ASSERT_STREQ(r->auth.hdr_tier, "X-Key-Tier");
	ASSERT_EQ(r->nrate_limits, 3);
	ASSERT_EQ(r->rate_limits[0].v6_prefix, 48);
	ASSERT_EQ(r->rate_limits[0].burst, 200);
	ASSERT_EQ(r->rate_limits[1].rate.per_ms, 60000);
	ASSERT_EQ(r->rate_limits[1].burst, 6000);
	ASSERT_STREQ(r->rate_limits[2].name, "X-User");
	ASSERT_TRUE(r->rate_limit_headers);
	ASSERT_EQ(cfg->ntiers, 2);
	ASSERT_EQ(cfg->tiers[0].quota_month, 200000);
	ASSERT_EQ(cfg->tiers[0].burst, 20);
	ASSERT_EQ(cfg->tiers[1].rate.count, 0);
	ASSERT_EQ(config_tier_index(cfg, "pro"), 1);
	ASSERT_EQ(config_tier_index(cfg, "gold"), -1);
	config_free(cfg);
}

int main(void)
{
	RUN(test_credential_sources);
	RUN(test_claims);
	RUN(test_index_swap_and_verdicts);
	RUN(test_no_gate_fails_closed);
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		char name[96];

		snprintf(name, sizeof(name), "config error %zu: %.60s", i, errs[i].want + 8);
		RUN_NAMED(name, check_err, &errs[i]);
	}
	RUN(test_config_accepts);
	return test_done();
}
