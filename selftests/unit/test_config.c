/* selftests/unit/test_config.c — the YAML loader: one subtest per error shape (exact FILE:LINE: KEY:), every field of a full config, defaults, examples. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "config.h"
#include "http1.h"
#include "test.h"

/* A valid skeleton; cases below append to it or replace one part, keeping line numbers obvious. */
#define LISTENERS /* lines 1-3 */                                                            \
	"listeners:\n"                                                                        \
	"  - name: web\n"                                                                     \
	"    address: 127.0.0.1:8080\n"
#define UPSTREAMS /* 4 lines */                                                              \
	"upstreams:\n"                                                                        \
	"  - name: api\n"                                                                     \
	"    servers:\n"                                                                      \
	"      - 127.0.0.1:9001\n"
#define ROUTES /* 2 lines */                                                                 \
	"routes:\n"                                                                           \
	"  - upstream: api\n"
#define BASE LISTENERS UPSTREAMS ROUTES /* 9 lines */

struct err_case {
	const char *name;
	const char *yaml;
	const char *prefix; /* the message must start with this */
	const char *also;   /* and contain this, when set */
};

static const struct err_case err_cases[] = {
	{ "unknown top-level key", BASE "frobnicate: 1\n",
	  "t.yaml:10: frobnicate: unknown key", "expected one of: workers, pid_file" },
	{ "unknown nested key", "limits:\n  request_lines: 8k\n" BASE,
	  "t.yaml:2: limits.request_lines: unknown key", NULL },
	{ "unknown key in a list item",
	  LISTENERS "upstreams:\n  - name: api\n    servers:\n      - address: 127.0.0.1:9001\n"
		    "        wieght: 2\n" ROUTES,
	  "t.yaml:8: upstreams[0].servers[0].wieght: unknown key", NULL },
	{ "unknown key in route timeouts", LISTENERS UPSTREAMS
	  "routes:\n  - upstream: api\n    timeouts:\n      conect: 1s\n",
	  "t.yaml:11: routes[0].timeouts.conect: unknown key", NULL },
	{ "duplicate key", "timeouts:\n  connect: 1s\n  idle: 2s\n  connect: 2s\n" BASE,
	  "t.yaml:4: timeouts.connect: duplicate key, first at line 2", NULL },
	{ "duplicate top-level key", BASE "listeners:\n  - name: x\n    address: 127.0.0.1:1\n",
	  "t.yaml:10: listeners: duplicate key, first at line 1", NULL },
	{ "wrong type: list for an integer", "workers: [1, 2]\n" BASE,
	  "t.yaml:1: workers: expected an integer, got a list", NULL },
	{ "wrong type: string for a list", "listeners: web\n" UPSTREAMS ROUTES,
	  "t.yaml:1: listeners: expected a list, got a scalar", NULL },
	{ "wrong type: mapping for a string", LISTENERS UPSTREAMS "routes:\n  - upstream: {name: api}\n",
	  "t.yaml:9: routes[0].upstream: expected a string, got a mapping", NULL },
	{ "wrong type: list for a mapping", "limits: [1]\n" BASE,
	  "t.yaml:1: limits: expected a mapping, got a list", NULL },
	{ "wrong type: null for a string", "pid_file:\n" BASE,
	  "t.yaml:1: pid_file: expected a string, got nothing (null)", NULL },
	{ "root is not a mapping", "- a\n- b\n",
	  "t.yaml:1: (root): expected a mapping, got a list", NULL },
	{ "bad duration", "timeouts:\n  idle: 10\n" BASE,
	  "t.yaml:2: timeouts.idle: expected a duration such as", "got \"10\"" },
	{ "duration overflow", "drain_timeout: 99999999999999999999d\n" BASE,
	  "t.yaml:1: drain_timeout: duration \"99999999999999999999d\" is too large", NULL },
	{ "zero timeout where not allowed", "timeouts:\n  connect: 0\n" BASE,
	  "t.yaml:2: timeouts.connect: must be greater than 0", NULL },
	{ "bad size", "limits:\n  header_size: 32q\n" BASE,
	  "t.yaml:2: limits.header_size: expected a size such as", NULL },
	{ "size out of range", "limits:\n  request_line: 100\n" BASE,
	  "t.yaml:2: limits.request_line: must be between 256 and 64k, got 100", NULL },
	{ "header_size below request_line", "limits:\n  request_line: 16k\n  header_size: 8k\n" BASE,
	  "t.yaml:3: limits.header_size: header_size (8192) must be at least request_line (16384)", NULL },
	{ "header_count above HTTP1_MAX_HEADERS", "limits:\n  header_count: 129\n" BASE,
	  "t.yaml:2: limits.header_count: must be between 1 and 128, got 129", NULL },
	{ "workers out of range", "workers: 257\n" BASE,
	  "t.yaml:1: workers: must be between 1 and 256, got 257", NULL },
	{ "workers zero", "workers: 0\n" BASE, "t.yaml:1: workers: must be between 1 and 256", NULL },
	{ "workers negative", "workers: -1\n" BASE,
	  "t.yaml:1: workers: expected \"auto\" or an integer, got \"-1\"", NULL },
	{ "integer with a leading zero", LISTENERS "    backlog: 010\n" UPSTREAMS ROUTES,
	  "t.yaml:4: listeners[0].backlog: expected an integer, got \"010\"", NULL },
	{ "relative access_log", "access_log: logs/access.log\n" BASE,
	  "t.yaml:1: access_log: expected an absolute path, \"stdout\" or \"off\"", NULL },
	{ "relative pid_file", "pid_file: clawd.pid\n" BASE,
	  "t.yaml:1: pid_file: expected an absolute path", NULL },
	{ "bad trusted proxy", "trusted_proxies: [127.0.0.1, 10.0.0.0/33]\n" BASE,
	  "t.yaml:1: trusted_proxies[1]: bad address or CIDR \"10.0.0.0/33\": prefix length out of range (0..32)",
	  NULL },
	{ "bad address", "listeners:\n  - name: web\n    address: localhost:8080\n" UPSTREAMS ROUTES,
	  "t.yaml:3: listeners[0].address: bad address \"localhost:8080\": not an IP literal", NULL },
	{ "address without port", "listeners:\n  - name: web\n    address: 127.0.0.1\n" UPSTREAMS ROUTES,
	  "t.yaml:3: listeners[0].address: bad address \"127.0.0.1\": missing port", NULL },
	{ "bad server address shorthand", LISTENERS "upstreams:\n  - name: api\n    servers:\n"
	  "      - 127.0.0.1:9001\n      - backend:9002\n" ROUTES,
	  "t.yaml:8: upstreams[0].servers[1]: bad address \"backend:9002\": not an IP literal", NULL },
	{ "missing required key", "listeners:\n  - name: web\n" UPSTREAMS ROUTES,
	  "t.yaml:2: listeners[0].address: required key missing", NULL },
	{ "no listeners", UPSTREAMS ROUTES, "t.yaml:1: listeners: required: at least one listener", NULL },
	{ "empty listener list", "listeners: []\n" UPSTREAMS ROUTES,
	  "t.yaml:1: listeners: at least one listener is required", NULL },
	{ "bad listener name", "listeners:\n  - name: web server\n    address: 127.0.0.1:1\n" UPSTREAMS ROUTES,
	  "t.yaml:2: listeners[0].name: \"web server\": names may only use", NULL },
	{ "duplicate listener name", LISTENERS "  - name: web\n    address: 127.0.0.1:8081\n" UPSTREAMS ROUTES,
	  "t.yaml:4: listeners[1].name: duplicate name, first at line 2", NULL },
	{ "duplicate listener address", LISTENERS "  - name: web2\n    address: 127.0.0.1:8080\n" UPSTREAMS ROUTES,
	  "t.yaml:5: listeners[1].address: same address as listener \"web\" at line 2", NULL },
	{ "duplicate upstream name", LISTENERS UPSTREAMS "  - name: api\n    servers: [127.0.0.1:1]\n" ROUTES,
	  "t.yaml:8: upstreams[1].name: duplicate name, first at line 5", NULL },
	{ "upstream without servers", LISTENERS "upstreams:\n  - name: api\n" ROUTES,
	  "t.yaml:5: upstreams[0].servers: required: at least one server", NULL },
	{ "empty server list", LISTENERS "upstreams:\n  - name: api\n    servers: []\n" ROUTES,
	  "t.yaml:6: upstreams[0].servers: at least one server is required", NULL },
	{ "out-of-range weight", LISTENERS "upstreams:\n  - name: api\n    servers:\n"
	  "      - 127.0.0.1:9001\n      - address: 127.0.0.1:9002\n        weight: 1001\n" ROUTES,
	  "t.yaml:9: upstreams[0].servers[1].weight: must be between 1 and 1000, got 1001", NULL },
	{ "out-of-range keepalive", LISTENERS "upstreams:\n  - name: api\n    keepalive: 4097\n"
	  "    servers: [127.0.0.1:1]\n" ROUTES,
	  "t.yaml:6: upstreams[0].keepalive: must be between 0 and 4096", NULL },
	{ "out-of-range connect_tries", LISTENERS "upstreams:\n  - name: api\n    connect_tries: 17\n"
	  "    servers: [127.0.0.1:1]\n" ROUTES,
	  "t.yaml:6: upstreams[0].connect_tries: must be between 1 and 16", NULL },
	{ "unknown algorithm", LISTENERS "upstreams:\n  - name: api\n    algorithm: random\n"
	  "    servers: [127.0.0.1:1]\n" ROUTES,
	  "t.yaml:6: upstreams[0].algorithm: unknown algorithm \"random\"", NULL },
	{ "hash_key with round_robin", LISTENERS "upstreams:\n  - name: api\n    hash_key: path\n"
	  "    servers: [127.0.0.1:1]\n" ROUTES,
	  "t.yaml:6: upstreams[0].hash_key: hash_key is only valid with algorithm consistent_hash (algorithm is round_robin)",
	  NULL },
	{ "hash_key with least_conn given after it", LISTENERS "upstreams:\n  - name: api\n"
	  "    hash_key: ip\n    algorithm: least_conn\n    servers: [127.0.0.1:1]\n" ROUTES,
	  "t.yaml:6: upstreams[0].hash_key: hash_key is only valid with algorithm consistent_hash (algorithm is least_conn)",
	  NULL },
	{ "bad hash_key", LISTENERS "upstreams:\n  - name: api\n    algorithm: consistent_hash\n"
	  "    hash_key: \"header:\"\n    servers: [127.0.0.1:1]\n" ROUTES,
	  "t.yaml:7: upstreams[0].hash_key: \"header:\": the name after ':' must be", NULL },
	{ "unknown upstream reference", LISTENERS UPSTREAMS "routes:\n  - upstream: nope\n",
	  "t.yaml:9: routes[0].upstream: unknown upstream \"nope\"", NULL },
	{ "unknown listener reference", LISTENERS UPSTREAMS
	  "routes:\n  - listeners:\n      - web\n      - admin\n    upstream: api\n",
	  "t.yaml:11: routes[0].listeners[1]: unknown listener \"admin\"", NULL },
	{ "two path kinds", LISTENERS UPSTREAMS
	  "routes:\n  - match:\n      path: /a\n      path_prefix: /b\n    upstream: api\n",
	  "t.yaml:11: routes[0].match.path_prefix: only one of path, path_prefix and path_regex may be set (path at line 10)",
	  NULL },
	{ "path without a leading slash", LISTENERS UPSTREAMS
	  "routes:\n  - match:\n      path: healthz\n    upstream: api\n",
	  "t.yaml:10: routes[0].match.path: must start with '/', got \"healthz\"", NULL },
	{ "both upstream and respond", LISTENERS UPSTREAMS
	  "routes:\n  - upstream: api\n    respond:\n      status: 200\n",
	  "t.yaml:10: routes[0].respond: a route has either upstream or respond, not both", NULL },
	{ "neither upstream nor respond", LISTENERS UPSTREAMS "routes:\n  - name: r\n",
	  "t.yaml:9: routes[0]: needs either upstream or respond", NULL },
	{ "respond without status", LISTENERS UPSTREAMS "routes:\n  - respond:\n      body: hi\n",
	  "t.yaml:10: routes[0].respond.status: required key missing", NULL },
	{ "respond status out of range", LISTENERS UPSTREAMS "routes:\n  - respond:\n      status: 600\n",
	  "t.yaml:10: routes[0].respond.status: must be between 100 and 599, got 600", NULL },
	{ "bad regex", LISTENERS UPSTREAMS
	  "routes:\n  - match:\n      path_regex: '^/(v1'\n    upstream: api\n",
	  "t.yaml:10: routes[0].match.path_regex: bad regex at offset 5: ", "missing closing parenthesis" },
	{ "duplicate route name", LISTENERS UPSTREAMS
	  "routes:\n  - name: a\n    upstream: api\n  - name: a\n    upstream: api\n",
	  "t.yaml:11: routes[1].name: duplicate name, first at line 9", NULL },
	{ "route name colliding with a default name", LISTENERS UPSTREAMS
	  "routes:\n  - upstream: api\n  - name: route1\n    upstream: api\n",
	  "t.yaml:10: routes[1].name: duplicate name, first at line 9", NULL },
	{ "empty route list", LISTENERS UPSTREAMS "routes: []\n",
	  "t.yaml:8: routes: at least one route is required", NULL },
	{ "bad host pattern", LISTENERS UPSTREAMS
	  "routes:\n  - match:\n      host: [ok.example, \"a..b\"]\n    upstream: api\n",
	  "t.yaml:10: routes[0].match.host[1]: \"a..b\" is not a valid host name or *.domain pattern", NULL },
	{ "bad method", LISTENERS UPSTREAMS
	  "routes:\n  - match:\n      methods: [\"GE T\"]\n    upstream: api\n",
	  "t.yaml:10: routes[0].match.methods[0]: \"GE T\" is not a valid method name", NULL },
	{ "bad header name", LISTENERS UPSTREAMS
	  "routes:\n  - match:\n      headers:\n        - name: \"X Env\"\n    upstream: api\n",
	  "t.yaml:11: routes[0].match.headers[0].name: \"X Env\" is not a valid header name", NULL },
	{ "bad route max_body", LISTENERS UPSTREAMS "routes:\n  - upstream: api\n    max_body: lots\n",
	  "t.yaml:10: routes[0].max_body: expected a size such as", NULL },
	{ "YAML syntax error", "listeners:\n  - name: web\n    address: [127.0.0.1:8080\n" UPSTREAMS,
	  "t.yaml:4: (yaml): ", NULL },
	{ "unquoted wildcard address", "listeners:\n  - name: web\n    address: *:80\n" UPSTREAMS ROUTES,
	  "t.yaml:3: (yaml): '*' starts a YAML alias; quote the value, e.g. \"*:80\"", NULL },
	{ "YAML tab indentation", "listeners:\n\t- name: web\n",
	  "t.yaml:2: (yaml): found character that cannot start any token", NULL },
	{ "second YAML document", BASE "---\nworkers: 2\n",
	  "t.yaml:11: (yaml): only one document is allowed", NULL },
	{ "empty file", "", "t.yaml:1: (root): the file is empty", NULL },
	{ "comments only", "# nothing here\n\n", "t.yaml:1: (root): the file is empty", NULL },
};

static int load(const char *yaml, struct config **cfg, char *err, size_t errlen)
{
	return config_load_string(yaml, strlen(yaml), "t.yaml", cfg, err, errlen);
}

static void check_error(const struct err_case *tc)
{
	struct config *cfg = (struct config *)1;
	char err[512];
	int rc = load(tc->yaml, &cfg, err, sizeof(err));

	ASSERT_EQ(rc, -EINVAL);
	ASSERT_TRUE(cfg == NULL);
	if (strncmp(err, tc->prefix, strlen(tc->prefix)))
		printf("#   got:  %s\n#   want: %s...\n", err, tc->prefix);
	ASSERT_MEMEQ(err, strlen(tc->prefix), tc->prefix);
	if (tc->also)
		ASSERT_STRSTR(err, tc->also);
}

/*
 * Every error shape once more with no message buffer, and with one too small
 * for the message: nothing may be written out of bounds, and under
 * -fsanitize=address LeakSanitizer fails the run if an error path leaks.
 */
static void test_error_paths_free_everything(void)
{
	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
		struct config *cfg = NULL;
		char small[8];

		ASSERT_EQ(load(err_cases[i].yaml, &cfg, NULL, 0), -EINVAL);
		ASSERT_TRUE(cfg == NULL);
		ASSERT_EQ(load(err_cases[i].yaml, &cfg, small, sizeof(small)), -EINVAL);
		ASSERT_EQ(strlen(small), sizeof(small) - 1);
		ASSERT_MEMEQ(small, sizeof(small) - 1, "t.yaml:");
	}
}

static void test_too_many_listeners(void)
{
	char yaml[8192], err[256];
	struct config *cfg = NULL;
	size_t off = 0;

	off += (size_t)snprintf(yaml + off, sizeof(yaml) - off, "listeners:\n");
	for (int i = 0; i <= CFG_MAX_LISTENERS; i++)
		off += (size_t)snprintf(yaml + off, sizeof(yaml) - off,
					"  - {name: l%d, address: \"127.0.0.1:%d\"}\n", i, 1000 + i);
	snprintf(yaml + off, sizeof(yaml) - off, "routes:\n  - respond: {status: 200}\n");
	ASSERT_EQ(load(yaml, &cfg, err, sizeof(err)), -EINVAL);
	ASSERT_STREQ(err, "t.yaml:2: listeners: at most 64 listeners, got 65");

	/* Exactly 64 is fine, and a route without `listeners` gets all 64 bits. */
	off = 0;
	off += (size_t)snprintf(yaml + off, sizeof(yaml) - off, "listeners:\n");
	for (int i = 0; i < CFG_MAX_LISTENERS; i++)
		off += (size_t)snprintf(yaml + off, sizeof(yaml) - off,
					"  - {name: l%d, address: \"127.0.0.1:%d\"}\n", i, 1000 + i);
	snprintf(yaml + off, sizeof(yaml) - off,
		 "routes:\n  - respond: {status: 200}\n  - listeners: [l63]\n    respond: {status: 200}\n");
	ASSERT_EQ(load(yaml, &cfg, err, sizeof(err)), 0);
	ASSERT_TRUE(cfg->routes[0].listener_mask == ~0ULL);
	ASSERT_TRUE(cfg->routes[1].listener_mask == 1ULL << 63);
	config_free(cfg);
}

/* A key path longer than the message buffer keeps its line and ends in "...". */
static void test_long_unknown_key(void)
{
	char yaml[1024], err[1024], key[301];
	struct config *cfg = NULL;

	memset(key, 'k', 300);
	key[300] = '\0';
	snprintf(yaml, sizeof(yaml), BASE "%s: 1\n", key);
	ASSERT_EQ(load(yaml, &cfg, err, sizeof(err)), -EINVAL);
	ASSERT_MEMEQ(err, 13, "t.yaml:10: kk");
	ASSERT_STRSTR(err, "kkk...: unknown key");
	/* The key is cut to the loader's 256-byte path buffer (255 characters). */
	ASSERT_EQ(strstr(err, ": unknown") - (err + strlen("t.yaml:10: ")), 255);
}

static const char full_yaml[] =
	"workers: 4\n" /* 1 */
	"pid_file: /run/clawd.pid\n" /* 2 */
	"access_log: /var/log/clawd.log\n" /* 3 */
	"drain_timeout: 3s\n" /* 4 */
	"limits:\n" /* 5 */
	"  request_line: 4k\n" /* 6 */
	"  header_size: 16kb\n" /* 7 */
	"  header_count: 64\n" /* 8 */
	"routes:\n" /* 9 */
	"  - name: api\n" /* 10 */
	"    listeners: [pub, admin]\n" /* 11 */
	"    match:\n" /* 12 */
	"      host: [API.Example.com, \"*.example.org\"]\n" /* 13 */
	"      path_prefix: /v1/\n" /* 14 */
	"      methods: [get, Post]\n" /* 15 */
	"      headers:\n" /* 16 */
	"        - name: X-Env\n" /* 17 */
	"          value: prod\n" /* 18 */
	"        - name: X-Debug\n" /* 19 */
	"    upstream: pool\n" /* 20 */
	"    host_rewrite: internal.example:8080\n" /* 21 */
	"    max_body: 0\n" /* 22 */
	"    timeouts:\n" /* 23 */
	"      connect: 250ms\n" /* 24 */
	"      request: 1m\n" /* 25 */
	"  - listeners: [admin]\n" /* 26 */
	"    match:\n" /* 27 */
	"      path_regex: '^/v[0-9]+/'\n" /* 28 */
	"    upstream: hashed\n" /* 29 */
	"    max_body: 10m\n" /* 30 */
	"  - match:\n" /* 31 */
	"      host: exact.example.com\n" /* 32 */
	"      path: /healthz\n" /* 33 */
	"    respond:\n" /* 34 */
	"      status: 204\n" /* 35 */
	"  - name: teapot\n" /* 36 */
	"    respond:\n" /* 37 */
	"      status: 418\n" /* 38 */
	"      body: \"short and stout\\n\"\n" /* 39 */
	"      content_type: text/x-teapot\n" /* 40 */
	"timeouts:\n" /* 41 */
	"  connect: 2s\n" /* 42 */
	"  client_header: 3s\n" /* 43 */
	"  client_body: 4s\n" /* 44 */
	"  idle: 5s\n" /* 45 */
	"  upstream_response: 6s\n" /* 46 */
	"  upstream_idle: 7s\n" /* 47 */
	"  request: 8s\n" /* 48 */
	"trusted_proxies: [127.0.0.1, 10.1.2.3/8, \"::1\", \"2001:db8::/32\"]\n" /* 49 */
	"listeners:\n" /* 50 */
	"  - name: pub\n" /* 51 */
	"    address: \"*:80\"\n" /* 52 */
	"    backlog: 1024\n" /* 53 */
	"  - name: admin\n" /* 54 */
	"    address: \"[::1]:9000\"\n" /* 55 */
	"upstreams:\n" /* 56 */
	"  - name: pool\n" /* 57 */
	"    algorithm: weighted_round_robin\n" /* 58 */
	"    keepalive: 0\n" /* 59 */
	"    connect_tries: 5\n" /* 60 */
	"    servers:\n" /* 61 */
	"      - address: 10.0.0.1:8080\n" /* 62 */
	"        weight: 5\n" /* 63 */
	"      - 10.0.0.2:8080\n" /* 64 */
	"  - name: hashed\n" /* 65 */
	"    algorithm: consistent_hash\n" /* 66 */
	"    hash_key: header:X-User\n" /* 67 */
	"    servers:\n" /* 68 */
	"      - \"[2001:db8::5]:443\"\n" /* 69 */
	"      - 10.0.0.3:443\n" /* 70 */
	"      - 10.0.0.4:443\n" /* 71 */
	"      - 10.0.0.5:443\n" /* 72 */
;

static uint16_t port_of(const struct net_addr *a)
{
	return ntohs(a->ss.ss_family == AF_INET ? ((const struct sockaddr_in *)&a->ss)->sin_port
						: ((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

static const char *host_of(const struct net_addr *a, char *buf)
{
	return net_addr_format((const struct sockaddr *)&a->ss, buf, NET_ADDR_STRLEN);
}

static bool regex_matches(void *re, const char *s)
{
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
	int rc = pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);

	pcre2_match_data_free(md);
	return rc >= 0;
}

static void test_full_config(void)
{
	struct config *cfg = NULL;
	const struct cfg_route *r;
	const struct cfg_upstream *u;
	char err[512] = "", buf[NET_ADDR_STRLEN], net[64];
	int rc = load(full_yaml, &cfg, err, sizeof(err));

	if (rc)
		printf("#   %s\n", err);
	ASSERT_EQ(rc, 0);
	ASSERT_STREQ(cfg->path, "t.yaml");
	ASSERT_EQ(cfg->workers, 4);
	ASSERT_STREQ(cfg->pid_file, "/run/clawd.pid");
	ASSERT_STREQ(cfg->access_log, "/var/log/clawd.log");
	ASSERT_EQ(cfg->drain_ms, 3000);
	ASSERT_EQ(cfg->limits.request_line, 4096);
	ASSERT_EQ(cfg->limits.header_size, 16384);
	ASSERT_EQ(cfg->limits.header_count, 64);
	ASSERT_EQ(cfg->timeouts.connect_ms, 2000);
	ASSERT_EQ(cfg->timeouts.client_header_ms, 3000);
	ASSERT_EQ(cfg->timeouts.client_body_ms, 4000);
	ASSERT_EQ(cfg->timeouts.idle_ms, 5000);
	ASSERT_EQ(cfg->timeouts.upstream_response_ms, 6000);
	ASSERT_EQ(cfg->timeouts.upstream_idle_ms, 7000);
	ASSERT_EQ(cfg->timeouts.request_ms, 8000);

	ASSERT_EQ(cfg->ntrusted, 4);
	ASSERT_EQ(cfg->trusted_proxies[0].family, AF_INET);
	ASSERT_EQ(cfg->trusted_proxies[0].prefix, 32);
	ASSERT_EQ(cfg->trusted_proxies[1].prefix, 8);
	ASSERT_STREQ(inet_ntop(AF_INET, cfg->trusted_proxies[1].addr, net, sizeof(net)), "10.0.0.0");
	ASSERT_EQ(cfg->trusted_proxies[2].family, AF_INET6);
	ASSERT_EQ(cfg->trusted_proxies[2].prefix, 128);
	ASSERT_EQ(cfg->trusted_proxies[3].prefix, 32);

	ASSERT_EQ(cfg->nlisteners, 2);
	ASSERT_STREQ(cfg->listeners[0].name, "pub");
	ASSERT_STREQ(host_of(&cfg->listeners[0].addr, buf), "[::]:80");
	ASSERT_EQ(cfg->listeners[0].backlog, 1024);
	ASSERT_EQ(cfg->listeners[0].line, 51);
	ASSERT_STREQ(cfg->listeners[1].name, "admin");
	ASSERT_STREQ(host_of(&cfg->listeners[1].addr, buf), "[::1]:9000");
	ASSERT_EQ(cfg->listeners[1].backlog, 511);
	ASSERT_EQ(config_listener_index(cfg, "admin"), 1);
	ASSERT_EQ(config_listener_index(cfg, "nope"), -1);

	ASSERT_EQ(cfg->nupstreams, 2);
	u = &cfg->upstreams[0];
	ASSERT_STREQ(u->name, "pool");
	ASSERT_EQ(u->algorithm, LB_WEIGHTED_ROUND_ROBIN);
	ASSERT_EQ(u->keepalive, 0);
	ASSERT_EQ(u->connect_tries, 5);
	ASSERT_EQ(u->line, 57);
	ASSERT_EQ(u->nservers, 2);
	ASSERT_STREQ(host_of(&u->servers[0].addr, buf), "10.0.0.1:8080");
	ASSERT_EQ(u->servers[0].weight, 5);
	ASSERT_EQ(u->servers[0].line, 62);
	ASSERT_STREQ(host_of(&u->servers[1].addr, buf), "10.0.0.2:8080"); /* shorthand */
	ASSERT_EQ(u->servers[1].weight, 1);
	ASSERT_EQ(u->servers[1].line, 64);
	ASSERT_TRUE(u->hash_name == NULL);
	u = &cfg->upstreams[1];
	ASSERT_STREQ(u->name, "hashed");
	ASSERT_EQ(u->algorithm, LB_CONSISTENT_HASH);
	ASSERT_EQ(u->hash_source, LB_HASH_HEADER);
	ASSERT_STREQ(u->hash_name, "X-User");
	ASSERT_EQ(u->keepalive, 32);
	ASSERT_EQ(u->connect_tries, 3); /* min(3, 4 servers) */
	ASSERT_EQ(u->nservers, 4);
	ASSERT_EQ(port_of(&u->servers[0].addr), 443);
	ASSERT_EQ(u->servers[0].addr.ss.ss_family, AF_INET6);
	ASSERT_EQ(config_upstream_index(cfg, "hashed"), 1);
	ASSERT_EQ(config_upstream_index(cfg, "nope"), -1);

	ASSERT_EQ(cfg->nroutes, 4);
	r = &cfg->routes[0];
	ASSERT_STREQ(r->name, "api");
	ASSERT_EQ(r->line, 10);
	ASSERT_TRUE(r->listener_mask == 3);
	ASSERT_EQ(r->nhosts, 2);
	ASSERT_STREQ(r->hosts[0], "api.example.com"); /* lower-cased */
	ASSERT_STREQ(r->hosts[1], "*.example.org");
	ASSERT_EQ(r->path_kind, ROUTE_PATH_PREFIX);
	ASSERT_STREQ(r->path, "/v1/");
	ASSERT_TRUE(r->path_re == NULL);
	ASSERT_EQ(r->nmethods, 2);
	ASSERT_STREQ(r->methods[0], "GET"); /* upper-cased */
	ASSERT_STREQ(r->methods[1], "POST");
	ASSERT_EQ(r->nheaders, 2);
	ASSERT_STREQ(r->headers[0].name, "X-Env");
	ASSERT_STREQ(r->headers[0].value, "prod");
	ASSERT_STREQ(r->headers[1].name, "X-Debug");
	ASSERT_TRUE(r->headers[1].value == NULL);
	ASSERT_EQ(r->upstream, 0);
	ASSERT_FALSE(r->has_respond);
	ASSERT_STREQ(r->host_rewrite, "internal.example:8080");
	ASSERT_EQ(r->max_body, 0);
	/* Route timeouts: its own two, the rest from the top-level block written after it. */
	ASSERT_EQ(r->timeouts.connect_ms, 250);
	ASSERT_EQ(r->timeouts.request_ms, 60000);
	ASSERT_EQ(r->timeouts.client_header_ms, 3000);
	ASSERT_EQ(r->timeouts.client_body_ms, 4000);
	ASSERT_EQ(r->timeouts.idle_ms, 5000);
	ASSERT_EQ(r->timeouts.upstream_response_ms, 6000);
	ASSERT_EQ(r->timeouts.upstream_idle_ms, 7000);

	r = &cfg->routes[1];
	ASSERT_STREQ(r->name, "route2");
	ASSERT_EQ(r->line, 26);
	ASSERT_TRUE(r->listener_mask == 2);
	ASSERT_EQ(r->nhosts, 0);
	ASSERT_EQ(r->nmethods, 0);
	ASSERT_EQ(r->path_kind, ROUTE_PATH_REGEX);
	ASSERT_STREQ(r->path, "^/v[0-9]+/");
	ASSERT_TRUE(r->path_re != NULL);
	ASSERT_TRUE(regex_matches(r->path_re, "/v12/x"));
	ASSERT_FALSE(regex_matches(r->path_re, "/x/v12/"));
	ASSERT_EQ(r->upstream, 1);
	ASSERT_EQ(r->max_body, 10 << 20);
	ASSERT_TRUE(r->host_rewrite == NULL);
	ASSERT_EQ(r->timeouts.connect_ms, 2000);
	ASSERT_EQ(r->timeouts.request_ms, 8000);

	r = &cfg->routes[2];
	ASSERT_STREQ(r->name, "route3");
	ASSERT_TRUE(r->listener_mask == 3);
	ASSERT_EQ(r->nhosts, 1);
	ASSERT_STREQ(r->hosts[0], "exact.example.com");
	ASSERT_EQ(r->path_kind, ROUTE_PATH_EXACT);
	ASSERT_STREQ(r->path, "/healthz");
	ASSERT_EQ(r->upstream, -1);
	ASSERT_TRUE(r->has_respond);
	ASSERT_EQ(r->respond.status, 204);
	ASSERT_EQ(r->respond.body_len, 0);
	ASSERT_STREQ(r->respond.body, "");
	ASSERT_STREQ(r->respond.content_type, "text/plain; charset=utf-8");
	ASSERT_EQ(r->max_body, 1 << 20);

	r = &cfg->routes[3];
	ASSERT_STREQ(r->name, "teapot");
	ASSERT_EQ(r->path_kind, ROUTE_PATH_ANY);
	ASSERT_TRUE(r->path == NULL);
	ASSERT_EQ(r->respond.status, 418);
	ASSERT_MEMEQ(r->respond.body, r->respond.body_len, "short and stout\n");
	ASSERT_STREQ(r->respond.content_type, "text/x-teapot");
	config_free(cfg);
}

static void test_defaults(void)
{
	struct config *cfg = NULL;
	char err[512] = "";
	const struct cfg_upstream *u;
	const struct cfg_route *r;
	int rc = load(BASE, &cfg, err, sizeof(err));

	if (rc)
		printf("#   %s\n", err);
	ASSERT_EQ(rc, 0);
	ASSERT_EQ(cfg->workers, 0);
	ASSERT_TRUE(cfg->pid_file == NULL);
	ASSERT_TRUE(cfg->access_log == NULL);
	ASSERT_EQ(cfg->drain_ms, 10000);
	ASSERT_EQ(cfg->limits.request_line, 8192);
	ASSERT_EQ(cfg->limits.header_size, 32768);
	ASSERT_EQ(cfg->limits.header_count, 100);
	ASSERT_LE(cfg->limits.header_count, HTTP1_MAX_HEADERS);
	ASSERT_EQ(cfg->timeouts.connect_ms, 5000);
	ASSERT_EQ(cfg->timeouts.client_header_ms, 10000);
	ASSERT_EQ(cfg->timeouts.client_body_ms, 60000);
	ASSERT_EQ(cfg->timeouts.idle_ms, 60000);
	ASSERT_EQ(cfg->timeouts.upstream_response_ms, 60000);
	ASSERT_EQ(cfg->timeouts.upstream_idle_ms, 60000);
	ASSERT_EQ(cfg->timeouts.request_ms, 0);
	ASSERT_EQ(cfg->ntrusted, 0);
	ASSERT_EQ(cfg->listeners[0].backlog, 511);
	u = &cfg->upstreams[0];
	ASSERT_EQ(u->algorithm, LB_ROUND_ROBIN);
	ASSERT_EQ(u->hash_source, LB_HASH_CLIENT_IP);
	ASSERT_EQ(u->keepalive, 32);
	ASSERT_EQ(u->connect_tries, 1); /* min(3, one server) */
	ASSERT_EQ(u->servers[0].weight, 1);
	r = &cfg->routes[0];
	ASSERT_STREQ(r->name, "route1");
	ASSERT_TRUE(r->listener_mask == 1);
	ASSERT_EQ(r->path_kind, ROUTE_PATH_ANY);
	ASSERT_EQ(r->max_body, 1 << 20);
	ASSERT_TRUE(memcmp(&r->timeouts, &cfg->timeouts, sizeof(r->timeouts)) == 0);
	config_free(cfg);
}

static void test_small_values(void)
{
	static const char yaml[] = "workers: auto\naccess_log: stdout\ntimeouts: {request: 0}\n"
				   "drain_timeout: 0\n" LISTENERS
				   "upstreams:\n  - name: api\n    algorithm: consistent_hash\n"
				   "    servers: [127.0.0.1:1, 127.0.0.1:2]\n" ROUTES;
	struct config *cfg = NULL;
	char err[512] = "";
	int rc = load(yaml, &cfg, err, sizeof(err));

	if (rc)
		printf("#   %s\n", err);
	ASSERT_EQ(rc, 0);
	ASSERT_EQ(cfg->workers, 0);
	ASSERT_STREQ(cfg->access_log, "stdout");
	ASSERT_EQ(cfg->drain_ms, 0);
	ASSERT_EQ(cfg->upstreams[0].hash_source, LB_HASH_CLIENT_IP); /* consistent_hash without hash_key */
	ASSERT_TRUE(cfg->upstreams[0].hash_name == NULL);
	ASSERT_EQ(cfg->upstreams[0].connect_tries, 2);
	config_free(cfg);

	rc = load("access_log: \"off\"\n" BASE, &cfg, err, sizeof(err));
	ASSERT_EQ(rc, 0);
	ASSERT_TRUE(cfg->access_log == NULL);
	config_free(cfg);
}

static void test_hash_keys(void)
{
	static const struct {
		const char *key;
		enum lb_hash_source src;
		const char *name;
	} cases[] = {
		{ "ip", LB_HASH_CLIENT_IP, NULL },
		{ "path", LB_HASH_PATH, NULL },
		{ "header:X-Tenant", LB_HASH_HEADER, "X-Tenant" },
		{ "cookie:session", LB_HASH_COOKIE, "session" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char yaml[512], err[256] = "";
		struct config *cfg = NULL;

		snprintf(yaml, sizeof(yaml),
			 LISTENERS "upstreams:\n  - name: api\n    algorithm: consistent_hash\n"
				   "    hash_key: \"%s\"\n    servers: [127.0.0.1:1]\n" ROUTES,
			 cases[i].key);
		ASSERT_EQ(load(yaml, &cfg, err, sizeof(err)), 0);
		ASSERT_EQ(cfg->upstreams[0].hash_source, cases[i].src);
		if (cases[i].name)
			ASSERT_STREQ(cfg->upstreams[0].hash_name, cases[i].name);
		else
			ASSERT_TRUE(cfg->upstreams[0].hash_name == NULL);
		config_free(cfg);
	}
}

/* A quoted "\0" in a respond body is kept (body_len counts it); elsewhere NUL is refused. */
static void test_nul_bytes(void)
{
	static const char body[] = LISTENERS UPSTREAMS "routes:\n  - respond: {status: 200, body: \"a\\0b\"}\n";
	static const char name[] = LISTENERS UPSTREAMS "routes:\n  - name: \"a\\0b\"\n    upstream: api\n";
	struct config *cfg = NULL;
	char err[256];

	ASSERT_EQ(load(body, &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(cfg->routes[0].respond.body_len, 3);
	ASSERT_TRUE(memcmp(cfg->routes[0].respond.body, "a\0b", 3) == 0);
	config_free(cfg);
	ASSERT_EQ(load(name, &cfg, err, sizeof(err)), -EINVAL);
	ASSERT_STREQ(err, "t.yaml:9: routes[0].name: contains a NUL byte");
}

static void test_example_openclaw(void)
{
	struct config *cfg = NULL;
	char err[512] = "";
	int rc = config_load("examples/openclaw.yaml", &cfg, err, sizeof(err));

	if (rc)
		printf("#   %s\n", err);
	ASSERT_EQ(rc, 0);
	ASSERT_GE(cfg->nlisteners, 1);
	ASSERT_GE(cfg->nroutes, 1);
	ASSERT_STREQ(cfg->path, "examples/openclaw.yaml");
	config_free(cfg);
}

static void test_example_quickstart(void)
{
	struct config *cfg = NULL;
	char err[512] = "", buf[NET_ADDR_STRLEN];
	const struct cfg_route *r;
	int rc = config_load("examples/quickstart.yaml", &cfg, err, sizeof(err));

	if (rc)
		printf("#   %s\n", err);
	ASSERT_EQ(rc, 0);
	ASSERT_STREQ(cfg->access_log, "stdout");
	ASSERT_EQ(cfg->nlisteners, 1);
	ASSERT_STREQ(host_of(&cfg->listeners[0].addr, buf), "127.0.0.1:8080");
	ASSERT_EQ(cfg->nupstreams, 1);
	ASSERT_STREQ(cfg->upstreams[0].name, "demo");
	ASSERT_EQ(cfg->upstreams[0].nservers, 1);
	ASSERT_STREQ(host_of(&cfg->upstreams[0].servers[0].addr, buf), "127.0.0.1:9080");
	ASSERT_EQ(cfg->nroutes, 2);
	r = &cfg->routes[0];
	ASSERT_EQ(r->path_kind, ROUTE_PATH_EXACT);
	ASSERT_STREQ(r->path, "/healthz");
	ASSERT_TRUE(r->has_respond);
	ASSERT_EQ(r->respond.status, 200);
	ASSERT_MEMEQ(r->respond.body, r->respond.body_len, "ok\n");
	r = &cfg->routes[1];
	ASSERT_EQ(r->path_kind, ROUTE_PATH_ANY);
	ASSERT_EQ(r->nhosts, 0);
	ASSERT_EQ(r->upstream, 0);
	config_free(cfg);
}

static void test_load_refuses_non_regular_files(void)
{
	struct config *cfg = (struct config *)1;
	char err[256], fifo[] = "/tmp/test_config_fifo_XXXXXX";
	int fd;

	ASSERT_EQ(config_load("/tmp", &cfg, err, sizeof(err)), -EINVAL);
	ASSERT_TRUE(cfg == NULL);
	ASSERT_STREQ(err, "/tmp: not a regular file");
	ASSERT_EQ(config_load("/dev/null", &cfg, err, sizeof(err)), -EINVAL);
	ASSERT_STREQ(err, "/dev/null: not a regular file");
	/* A FIFO must be refused at once, not block waiting for a writer. */
	fd = mkstemp(fifo);
	ASSERT_GE(fd, 0);
	close(fd);
	unlink(fifo);
	ASSERT_EQ(mkfifo(fifo, 0600), 0);
	ASSERT_EQ(config_load(fifo, &cfg, err, sizeof(err)), -EINVAL);
	unlink(fifo);
	ASSERT_STRSTR(err, ": not a regular file");
	ASSERT_EQ(config_load("/nonexistent/openclaw.yaml", &cfg, err, sizeof(err)), -ENOENT);
	ASSERT_STREQ(err, "/nonexistent/openclaw.yaml: No such file or directory");
}

static void test_load_file_errors_name_the_file(void)
{
	char path[] = "/tmp/test_config_XXXXXX", err[256];
	static const char yaml[] = LISTENERS UPSTREAMS "routes:\n  - upstream: nope\n";
	struct config *cfg = NULL;
	int fd = mkstemp(path);

	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
	close(fd);
	ASSERT_EQ(config_load(path, &cfg, err, sizeof(err)), -EINVAL);
	unlink(path);
	ASSERT_TRUE(strncmp(err, path, strlen(path)) == 0);
	ASSERT_STREQ(err + strlen(path), ":9: routes[0].upstream: unknown upstream \"nope\"");
}

int main(void)
{
	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++)
		RUN_NAMED(err_cases[i].name, check_error, &err_cases[i]);
	RUN(test_error_paths_free_everything);
	RUN(test_too_many_listeners);
	RUN(test_long_unknown_key);
	RUN(test_full_config);
	RUN(test_defaults);
	RUN(test_small_values);
	RUN(test_hash_keys);
	RUN(test_nul_bytes);
	RUN(test_example_openclaw);
	RUN(test_example_quickstart);
	RUN(test_load_refuses_non_regular_files);
	RUN(test_load_file_errors_name_the_file);
	config_free(NULL);
	return test_done();
}
