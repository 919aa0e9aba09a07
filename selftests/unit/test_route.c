/* selftests/unit/test_route.c — router: first-match order, listener mask, hosts, paths, methods, headers. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>
#include <pthread.h>

#include "route.h"
#include "test.h"

#define ALL_LISTENERS (~(uint64_t)0)

/* A request as the parser would leave it; pointers into string literals. */
static struct http1_request mkreq(const char *method, const char *path, const char *host)
{
	struct http1_request r;

	memset(&r, 0, sizeof(r));
	r.method = method;
	r.method_len = (uint32_t)strlen(method);
	r.path = path;
	r.path_len = (uint32_t)strlen(path);
	r.target = path;
	r.target_len = r.path_len;
	r.version_minor = 1;
	if (host) {
		r.host = host;
		r.host_len = (uint32_t)strlen(host);
	}
	return r;
}

static void addhdr(struct http1_request *r, const char *name, const char *value)
{
	struct http1_header *h = &r->headers[r->nheaders++];

	h->name = name;
	h->name_len = (uint32_t)strlen(name);
	h->value = value;
	h->value_len = (uint32_t)strlen(value);
}

static struct cfg_route mkroute(const char *name)
{
	struct cfg_route r;

	memset(&r, 0, sizeof(r));
	r.name = (char *)name;
	r.listener_mask = ALL_LISTENERS;
	r.path_kind = ROUTE_PATH_ANY;
	r.upstream = 0;
	return r;
}

static struct config mkcfg(struct cfg_route *routes, unsigned n)
{
	struct config c;

	memset(&c, 0, sizeof(c));
	c.routes = routes;
	c.nroutes = n;
	return c;
}

static void test_host_exact_and_port(void)
{
	ASSERT_TRUE(route_host_matches("api.example.com", "api.example.com", 15));
	ASSERT_TRUE(route_host_matches("api.example.com", "API.Example.COM", 15));
	ASSERT_TRUE(route_host_matches("api.example.com", "api.example.com:8443", 20));
	ASSERT_TRUE(route_host_matches("api.example.com", "Api.Example.Com:80", 18));
	/* A fully qualified name with its root dot is the same host. */
	ASSERT_TRUE(route_host_matches("api.example.com", "api.example.com.", 16));
	ASSERT_FALSE(route_host_matches("api.example.com", "api.example.co", 14));
	ASSERT_FALSE(route_host_matches("api.example.com", "xapi.example.com", 16));
	ASSERT_FALSE(route_host_matches("api.example.com", "api.example.com.evil", 20));
	ASSERT_FALSE(route_host_matches("api.example.com", "", 0));
	ASSERT_FALSE(route_host_matches("api.example.com", NULL, 0));
	/* host_len bounds the value: bytes after it are not part of the host. */
	ASSERT_TRUE(route_host_matches("api.example.com", "api.example.comXYZ", 15));
}

static void test_host_wildcard(void)
{
	ASSERT_TRUE(route_host_matches("*.example.com", "a.example.com", 13));
	ASSERT_TRUE(route_host_matches("*.example.com", "a.b.example.com", 15));
	ASSERT_TRUE(route_host_matches("*.example.com", "A.EXAMPLE.com:8080", 18));
	ASSERT_FALSE(route_host_matches("*.example.com", "example.com", 11));
	ASSERT_FALSE(route_host_matches("*.example.com", "example.com:80", 14));
	ASSERT_FALSE(route_host_matches("*.example.com", ".example.com", 12));
	ASSERT_FALSE(route_host_matches("*.example.com", "aexample.com", 12));
	ASSERT_FALSE(route_host_matches("*.example.com", "a.example.org", 13));
	ASSERT_FALSE(route_host_matches("*.example.com", "a.example.com.org", 17));
}

static void test_host_ipv6(void)
{
	ASSERT_TRUE(route_host_matches("[::1]", "[::1]:8080", 10));
	ASSERT_TRUE(route_host_matches("[::1]", "[::1]", 5));
	ASSERT_TRUE(route_host_matches("::1", "[::1]:8080", 10));
	ASSERT_TRUE(route_host_matches("[2001:db8::a]", "[2001:DB8::A]:443", 17));
	ASSERT_FALSE(route_host_matches("[::1]", "[::2]:8080", 10));
	ASSERT_FALSE(route_host_matches("[::1]", "[::1", 4));
	ASSERT_TRUE(route_host_matches("10.0.0.1", "10.0.0.1:80", 11));
	ASSERT_FALSE(route_host_matches("10.0.0.1", "10.0.0.10:80", 12));
}

static void test_first_match_order(void)
{
	struct cfg_route routes[3] = { mkroute("v1"), mkroute("catchall"), mkroute("never") };
	struct config cfg;
	struct http1_request req;

	routes[0].path_kind = ROUTE_PATH_PREFIX;
	routes[0].path = "/v1/";
	cfg = mkcfg(routes, 3);

	req = mkreq("GET", "/v1/users", "x");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
	req = mkreq("GET", "/v2/users", "x");
	ASSERT_EQ(route_match(&cfg, 0, &req), 1);

	/* Order, not specificity, decides: a catch-all first shadows the rest. */
	routes[0] = mkroute("catchall");
	routes[1] = mkroute("v1");
	routes[1].path_kind = ROUTE_PATH_PREFIX;
	routes[1].path = "/v1/";
	req = mkreq("GET", "/v1/users", "x");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
}

static void test_listener_mask(void)
{
	struct cfg_route routes[2] = { mkroute("admin"), mkroute("public") };
	struct config cfg = mkcfg(routes, 2);
	struct http1_request req = mkreq("GET", "/", "h");

	routes[0].listener_mask = (uint64_t)1 << 2;
	routes[1].listener_mask = ((uint64_t)1 << 0) | ((uint64_t)1 << 63);
	ASSERT_EQ(route_match(&cfg, 2, &req), 0);
	ASSERT_EQ(route_match(&cfg, 0, &req), 1);
	ASSERT_EQ(route_match(&cfg, 63, &req), 1);
	ASSERT_EQ(route_match(&cfg, 1, &req), -1);
	ASSERT_EQ(route_match(&cfg, 64, &req), -1);
	ASSERT_EQ(route_match(&cfg, 1000, &req), -1);
}

static void test_hosts_any_entry(void)
{
	char *hosts_a[] = { "api.example.com", "*.api.example.net" };
	char *hosts_b[] = { "[::1]", "localhost" };
	struct cfg_route routes[3] = { mkroute("api"), mkroute("local"), mkroute("fallback") };
	struct config cfg = mkcfg(routes, 3);
	struct http1_request req;

	routes[0].hosts = hosts_a;
	routes[0].nhosts = 2;
	routes[1].hosts = hosts_b;
	routes[1].nhosts = 2;
	routes[2].hosts = hosts_b; /* same hosts, never reached: proves a miss falls through */
	routes[2].nhosts = 1;

	req = mkreq("GET", "/", "API.example.com:443");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
	req = mkreq("GET", "/", "eu.api.example.net");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
	req = mkreq("GET", "/", "api.example.net");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req = mkreq("GET", "/", "[::1]:8080");
	ASSERT_EQ(route_match(&cfg, 0, &req), 1);
	req = mkreq("GET", "/", "LocalHost:8080");
	ASSERT_EQ(route_match(&cfg, 0, &req), 1);
	req = mkreq("GET", "/", "other.org");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	/* HTTP/1.0 without Host: only host-less routes can match. */
	req = mkreq("GET", "/", NULL);
	req.version_minor = 0;
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
}

static void test_path_exact_prefix(void)
{
	struct cfg_route routes[2] = { mkroute("health"), mkroute("api") };
	struct config cfg = mkcfg(routes, 2);
	struct http1_request req;

	routes[0].path_kind = ROUTE_PATH_EXACT;
	routes[0].path = "/healthz";
	routes[1].path_kind = ROUTE_PATH_PREFIX;
	routes[1].path = "/api/";

	req = mkreq("GET", "/healthz", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
	req = mkreq("GET", "/healthz/", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req = mkreq("GET", "/healthzz", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req = mkreq("GET", "/health", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req = mkreq("GET", "/api/", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), 1);
	req = mkreq("GET", "/api/v1/x", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), 1);
	req = mkreq("GET", "/api", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req = mkreq("GET", "/API/x", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	/* path_len, not NUL, ends the path. */
	req = mkreq("GET", "/healthz?x=1", "h");
	req.path_len = 8;
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
}

static pcre2_code *compile(const char *re)
{
	int err;
	PCRE2_SIZE off;

	return pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
}

static void test_path_regex(void)
{
	struct cfg_route routes[2] = { mkroute("user"), mkroute("img") };
	struct config cfg = mkcfg(routes, 2);
	struct http1_request req;
	pcre2_code *re_user = compile("^/users/([0-9]+)(/(profile|settings))?$");
	pcre2_code *re_img = compile("\\.(png|jpe?g)$");

	ASSERT_TRUE(re_user && re_img);
	routes[0].path_kind = ROUTE_PATH_REGEX;
	routes[0].path = "^/users/([0-9]+)(/(profile|settings))?$";
	routes[0].path_re = re_user;
	routes[1].path_kind = ROUTE_PATH_REGEX;
	routes[1].path = "\\.(png|jpe?g)$";
	routes[1].path_re = re_img;

	req = mkreq("GET", "/users/42", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
	req = mkreq("GET", "/users/42/settings", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
	req = mkreq("GET", "/users/abc", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req = mkreq("GET", "/static/a/logo.jpeg", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), 1);
	req = mkreq("GET", "/static/a/logo.gif", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	/* The regex sees only path_len bytes: "$" anchors at the path's end. */
	req = mkreq("GET", "/users/7?next=/x.png", "h");
	req.path_len = 8;
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);

	pcre2_code_free(re_user);
	pcre2_code_free(re_img);
}

struct regex_thread_arg {
	struct config *cfg;
	int matched;
};

static void *regex_thread(void *p)
{
	struct regex_thread_arg *a = p;
	struct http1_request yes = mkreq("GET", "/users/9", "h");
	struct http1_request no = mkreq("GET", "/users/x", "h");

	for (int i = 0; i < 1000; i++)
		a->matched += route_match(a->cfg, 0, &yes) == 0 && route_match(a->cfg, 0, &no) == -1;
	return NULL;
}

/* Workers match concurrently; each keeps its own match data, freed when it exits. */
static void test_path_regex_threads(void)
{
	struct cfg_route routes[1] = { mkroute("user") };
	struct config cfg = mkcfg(routes, 1);
	struct regex_thread_arg args[4];
	pthread_t th[4];
	pcre2_code *re = compile("^/users/[0-9]+$");

	ASSERT_TRUE(re != NULL);
	routes[0].path_kind = ROUTE_PATH_REGEX;
	routes[0].path = "^/users/[0-9]+$";
	routes[0].path_re = re;
	for (int i = 0; i < 4; i++) {
		args[i].cfg = &cfg;
		args[i].matched = 0;
		ASSERT_EQ(pthread_create(&th[i], NULL, regex_thread, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ASSERT_EQ(args[i].matched, 1000);
	}
	pcre2_code_free(re);
}

static void test_methods(void)
{
	char *ro[] = { "GET", "HEAD" };
	char *rw[] = { "POST", "PUT", "DELETE" };
	struct cfg_route routes[2] = { mkroute("read"), mkroute("write") };
	struct config cfg = mkcfg(routes, 2);
	struct http1_request req;

	routes[0].methods = ro;
	routes[0].nmethods = 2;
	routes[1].methods = rw;
	routes[1].nmethods = 3;

	req = mkreq("GET", "/", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
	req = mkreq("HEAD", "/", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
	req = mkreq("DELETE", "/", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), 1);
	/* Methods are case-sensitive tokens. */
	req = mkreq("get", "/", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req = mkreq("PATCH", "/", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req = mkreq("GETX", "/", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req = mkreq("GE", "/", "h");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
}

static void test_headers(void)
{
	struct cfg_header_match canary[] = { { "X-Canary", "on" } };
	struct cfg_header_match both[] = { { "x-tenant", NULL }, { "X-Version", "2" } };
	struct cfg_route routes[3] = { mkroute("canary"), mkroute("tenant-v2"), mkroute("rest") };
	struct config cfg = mkcfg(routes, 3);
	struct http1_request req;

	routes[0].headers = canary;
	routes[0].nheaders = 1;
	routes[1].headers = both;
	routes[1].nheaders = 2;
	routes[2].path_kind = ROUTE_PATH_EXACT;
	routes[2].path = "/rest";

	req = mkreq("GET", "/", "h");
	addhdr(&req, "Accept", "*/*");
	addhdr(&req, "x-canary", "on");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);

	/* Values compare exactly. */
	req = mkreq("GET", "/", "h");
	addhdr(&req, "X-CANARY", "On");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);

	/* A repeated header matches when any instance has the value. */
	req = mkreq("GET", "/", "h");
	addhdr(&req, "X-Canary", "off");
	addhdr(&req, "X-Canary", "on");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);

	/* Every condition must hold: presence plus value. */
	req = mkreq("GET", "/", "h");
	addhdr(&req, "X-Tenant", "");
	addhdr(&req, "x-version", "2");
	ASSERT_EQ(route_match(&cfg, 0, &req), 1);
	req = mkreq("GET", "/", "h");
	addhdr(&req, "x-version", "2");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req = mkreq("GET", "/", "h");
	addhdr(&req, "X-Tenant", "acme");
	addhdr(&req, "x-version", "20");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	/* A name that only shares a prefix is another header. */
	req = mkreq("GET", "/", "h");
	addhdr(&req, "X-Tenants", "acme");
	addhdr(&req, "x-version", "2");
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
}

static void test_all_conditions_and_no_match(void)
{
	char *hosts[] = { "*.example.com" };
	char *methods[] = { "POST" };
	struct cfg_header_match hdr[] = { { "Content-Type", "application/json" } };
	struct cfg_route routes[1] = { mkroute("ingest") };
	struct config cfg = mkcfg(routes, 1);
	struct config empty = mkcfg(NULL, 0);
	struct http1_request req;

	routes[0].listener_mask = 1;
	routes[0].hosts = hosts;
	routes[0].nhosts = 1;
	routes[0].methods = methods;
	routes[0].nmethods = 1;
	routes[0].path_kind = ROUTE_PATH_PREFIX;
	routes[0].path = "/ingest";
	routes[0].headers = hdr;
	routes[0].nheaders = 1;

	req = mkreq("POST", "/ingest/events", "in.example.com");
	addhdr(&req, "content-type", "application/json");
	ASSERT_EQ(route_match(&cfg, 0, &req), 0);
	ASSERT_EQ(route_match(&cfg, 1, &req), -1);
	req.host = "example.com";
	req.host_len = 11;
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req.host = "in.example.com";
	req.host_len = 14;
	req.method = "PUT";
	req.method_len = 3;
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req.method = "POST";
	req.method_len = 4;
	req.path = "/ingress";
	req.path_len = 8;
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	req.path = "/ingest";
	req.path_len = 7;
	req.headers[0].value = "text/plain";
	req.headers[0].value_len = 10;
	ASSERT_EQ(route_match(&cfg, 0, &req), -1);
	ASSERT_EQ(route_match(&empty, 0, &req), -1);
}

int main(void)
{
	RUN(test_host_exact_and_port);
	RUN(test_host_wildcard);
	RUN(test_host_ipv6);
	RUN(test_first_match_order);
	RUN(test_listener_mask);
	RUN(test_hosts_any_entry);
	RUN(test_path_exact_prefix);
	RUN(test_path_regex);
	RUN(test_path_regex_threads);
	RUN(test_methods);
	RUN(test_headers);
	RUN(test_all_conditions_and_no_match);
	return test_done();
}
