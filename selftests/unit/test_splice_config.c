/* selftests/unit/test_splice_config.c — the splice: section and routes[].mode of the YAML loader: defaults, every field, each refusal with its FILE:LINE: KEY:. */
#include <errno.h>

#include "config.h"
#include "openclaw/splice.h"
#include "test.h"

/* Two listeners and one upstream: 11 lines, so what a case appends starts at line 12. */
#define BASE                                                                                   \
	"listeners:\n"                                                                          \
	"  - name: web\n"                                                                       \
	"    address: 127.0.0.1:8080\n"                                                         \
	"  - name: pg\n"                                                                        \
	"    address: 127.0.0.1:5433\n"                                                         \
	"upstreams:\n"                                                                          \
	"  - name: api\n"                                                                       \
	"    servers:\n"                                                                        \
	"      - 127.0.0.1:9001\n"                                                              \
	"tiers:\n"                                                                              \
	"  - {name: free, rate: 10/s}\n"

static int load(const char *yaml, struct config **cfg, char *err, size_t errlen)
{
	return config_load_string(yaml, strlen(yaml), "t.yaml", cfg, err, errlen);
}

struct err_case {
	const char *name;
	const char *yaml;
	const char *prefix; /* the message starts with this */
};

static const struct err_case err_cases[] = {
	{ "bad enabled", BASE "splice:\n  enabled: maybe\nroutes:\n  - upstream: api\n",
	  "t.yaml:13: splice.enabled: expected off, auto or required, got \"maybe\"" },
	{ "budget below one skb", BASE "splice:\n  budget: 1k\nroutes:\n  - upstream: api\n",
	  "t.yaml:13: splice.budget: must be between 64k and 1g, got 1k" },
	{ "unknown splice key", BASE "splice:\n  budgte: 1m\nroutes:\n  - upstream: api\n",
	  "t.yaml:13: splice.budgte: unknown key" },
	{ "relative pin_dir", BASE "splice:\n  pin_dir: bpf/x\nroutes:\n  - upstream: api\n",
	  "t.yaml:13: splice.pin_dir: expected an absolute path" },
	{ "max_connections zero", BASE "splice:\n  max_connections: 0\nroutes:\n  - upstream: api\n",
	  "t.yaml:13: splice.max_connections: must be between 1 and 32768, got 0" },
	/* Kernel TLS and the SOCKHASH exclude each other (selftests/bpf/test_ktls_splice.c). */
	{ "splice only behind a TLS listener",
	  "listeners:\n  - name: web\n    address: 127.0.0.1:8443\n    tls:\n      certificates:\n"
	  "        - {cert: /nonexistent/c.pem, key: /nonexistent/k.pem}\n"
	  "upstreams:\n  - name: api\n    servers:\n      - 127.0.0.1:9001\n"
	  "routes:\n  - upstream: api\n    mode: splice\n",
	  "t.yaml:12: routes[0].mode: splice needs a plain listener: a TLS-terminated connection cannot be spliced "
	  "(kernel TLS and the SOCKHASH exclude each other: sk_psock_init() refuses a socket with the TLS ULP" },
	{ "bad mode", BASE "routes:\n  - upstream: api\n    mode: udp\n",
	  "t.yaml:14: routes[0].mode: expected http, splice or tcp, got \"udp\"" },
	{ "tcp without listeners", BASE "routes:\n  - upstream: api\n    mode: tcp\n",
	  "t.yaml:14: routes[0].mode: a tcp route must name its listeners" },
	{ "tcp with match", BASE "routes:\n  - upstream: api\n    listeners: [pg]\n    match: {path: /x}\n    mode: tcp\n",
	  "t.yaml:15: routes[0].match.path: a tcp route matches by listener and match.sni only" },
	{ "splice with auth", BASE "routes:\n  - upstream: api\n    auth: api_key\n    mode: splice\n",
	  "t.yaml:15: routes[0].mode: splice mode cannot be combined with auth" },
	{ "tcp with respond", BASE "routes:\n  - respond: {status: 200}\n    listeners: [pg]\n    mode: tcp\n",
	  "t.yaml:15: routes[0].mode: tcp mode needs an upstream, not respond" },
	{ "two tcp routes on one listener",
	  BASE "routes:\n  - upstream: api\n    listeners: [pg]\n    mode: tcp\n  - upstream: api\n    listeners: [pg]\n    mode: tcp\n",
	  "t.yaml:16: routes[1].listeners: listener \"pg\" already has default tcp route \"route1\"" },
	{ "http route on a tcp listener",
	  BASE "routes:\n  - upstream: api\n    listeners: [pg]\n    mode: tcp\n  - upstream: api\n    listeners: [web, pg]\n",
	  "t.yaml:16: routes[1].listeners: listener \"pg\" is pure L4 (tcp route \"route1\")" },
};

static void refusals(const struct err_case *tc)
{
	struct config *cfg = NULL;
	char err[512];
	int rc = load(tc->yaml, &cfg, err, sizeof(err));

	config_free(cfg);
	ASSERT_EQ(rc, -EINVAL);
	if (strncmp(err, tc->prefix, strlen(tc->prefix)))
		TEST_FAIL_("message \"%s\" does not start with \"%s\"", err, tc->prefix);
}

static void defaults(void)
{
	struct config *cfg = NULL;
	char err[512];
	const char *y = BASE "routes:\n  - upstream: api\n";

	ASSERT_EQ(load(y, &cfg, err, sizeof(err)), 0);
	bool ok = cfg->splice.enabled == CFG_SPLICE_AUTO && cfg->splice.budget == SPLICE_DEFAULT_BUDGET &&
		  cfg->splice.sndbuf == 4u << 20 && cfg->splice.idle_ms == 300000 &&
		  cfg->splice.max_connections == SPLICE_MAX_SOCKS / 2 &&
		  !strcmp(cfg->splice.pin_dir, SPLICE_DEFAULT_PIN_DIR) &&
		  cfg->routes[0].mode == CFG_MODE_HTTP && cfg->listeners[0].ntcp_routes == 0 &&
		  cfg->listeners[1].ntcp_routes == 0;
	config_free(cfg);
	ASSERT_TRUE(ok);
}

static void every_field(void)
{
	struct config *cfg = NULL;
	char err[512];
	const char *y = BASE "splice:\n  enabled: required\n  budget: 8m\n  sndbuf: 0\n"
			     "  idle_timeout: 2m\n  max_connections: 100\n  pin_dir: /sys/fs/bpf/x\n"
			     "routes:\n  - upstream: api\n    listeners: [web]\n    mode: splice\n"
			     "  - upstream: api\n    listeners: [pg]\n    mode: tcp\n";

	int rc = load(y, &cfg, err, sizeof(err));
	if (rc)
		TEST_FAIL_("load: %s", err);
	bool ok = cfg->splice.enabled == CFG_SPLICE_REQUIRED && cfg->splice.budget == 8u << 20 &&
		  cfg->splice.sndbuf == 0 && cfg->splice.idle_ms == 120000 &&
		  cfg->splice.max_connections == 100 && !strcmp(cfg->splice.pin_dir, "/sys/fs/bpf/x") &&
		  cfg->routes[0].mode == CFG_MODE_SPLICE && cfg->routes[1].mode == CFG_MODE_TCP &&
		  cfg->listeners[0].ntcp_routes == 0 && cfg->listeners[1].ntcp_routes == 1 &&
		  cfg->listeners[1].tcp_routes[0] == 1 && cfg->listeners[1].tcp_default == 1 &&
		  !cfg->listeners[1].sni_peek;
	config_free(cfg);
	ASSERT_TRUE(ok);
}

/* An HTTP route without listeners: never sees the L4 listener, and that is no error. */
static void implicit_listeners_coexist(void)
{
	struct config *cfg = NULL;
	char err[512];
	const char *y = BASE "routes:\n  - upstream: api\n  - upstream: api\n    listeners: [pg]\n    mode: tcp\n";
	int rc = load(y, &cfg, err, sizeof(err));

	if (rc)
		TEST_FAIL_("load: %s", err);
	bool ok = cfg->listeners[1].tcp_default == 1 && cfg->listeners[0].ntcp_routes == 0;
	config_free(cfg);
	ASSERT_TRUE(ok);
}

int main(void)
{
	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++)
		RUN_NAMED(err_cases[i].name, refusals, &err_cases[i]);
	RUN(defaults);
	RUN(every_field);
	RUN(implicit_listeners_coexist);
	return test_done();
}
