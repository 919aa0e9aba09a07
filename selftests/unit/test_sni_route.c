/* selftests/unit/test_sni_route.c — tcp routes with match.sni: config loading and refusals (FILE:LINE: KEY:), and the routing choice of agent/sni_route.c. */
#include <errno.h>

#include "config.h"
#include "sni_route.h"
#include "test.h"

/* Two listeners and two upstreams: 12 lines, so what a case appends starts at line 13. */
#define BASE                                                                                   \
	"listeners:\n"                                                                          \
	"  - name: web\n"                                                                       \
	"    address: 127.0.0.1:8080\n"                                                         \
	"  - name: tls\n"                                                                       \
	"    address: 127.0.0.1:8443\n"                                                         \
	"upstreams:\n"                                                                          \
	"  - name: a\n"                                                                         \
	"    servers: [127.0.0.1:9001]\n"                                                       \
	"  - name: b\n"                                                                         \
	"    servers: [127.0.0.1:9002]\n"                                                       \
	"  - name: c\n"                                                                         \
	"    servers: [127.0.0.1:9003]\n"

/* exact → a (route 0), wildcard → b (route 1), default → c (route 2), an HTTP route on web. */
#define SNI_ROUTES                                                                             \
	"routes:\n"                                                                             \
	"  - {name: exact, upstream: a, listeners: [tls], mode: tcp,\n"                         \
	"     match: {sni: [API.Example.com, www.example.com]}}\n"                              \
	"  - {name: wild, upstream: b, listeners: [tls], mode: tcp, match: {sni: \"*.wild.test\"}}\n" \
	"  - {name: dflt, upstream: c, listeners: [tls], mode: tcp}\n"                          \
	"  - {name: http, upstream: a, listeners: [web]}\n"

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
	{ "sni on an http route",
	  BASE "routes:\n  - upstream: a\n    match:\n      sni: [a.example.com]\n",
	  "t.yaml:16: routes[0].match.sni: only a tcp route matches the TLS server name" },
	{ "sni on a splice route",
	  BASE "routes:\n  - upstream: a\n    listeners: [web]\n    mode: splice\n    match: {sni: a.test}\n",
	  "t.yaml:17: routes[0].match.sni: only a tcp route matches the TLS server name" },
	{ "host on a tcp route",
	  BASE "routes:\n  - upstream: a\n    listeners: [tls]\n    mode: tcp\n    match:\n      sni: [a.test]\n      host: a.test\n",
	  "t.yaml:19: routes[0].match.host: a tcp route matches by listener and match.sni only" },
	{ "bad name",
	  BASE "routes:\n  - upstream: a\n    listeners: [tls]\n    mode: tcp\n    match:\n      sni: [ok.test, \"bad name\"]\n",
	  "t.yaml:18: routes[0].match.sni[1]: \"bad name\" is not a valid server name or *.domain pattern" },
	{ "trailing dot",
	  BASE "routes:\n  - upstream: a\n    listeners: [tls]\n    mode: tcp\n    match: {sni: a.test.}\n",
	  "t.yaml:17: routes[0].match.sni: \"a.test.\" is not a valid server name" },
	{ "wildcard in the middle",
	  BASE "routes:\n  - upstream: a\n    listeners: [tls]\n    mode: tcp\n    match: {sni: [\"a.*.test\"]}\n",
	  "t.yaml:17: routes[0].match.sni[0]: \"a.*.test\" is not a valid server name" },
	{ "empty list",
	  BASE "routes:\n  - upstream: a\n    listeners: [tls]\n    mode: tcp\n    match: {sni: []}\n",
	  "t.yaml:17: routes[0].match.sni: empty list" },
	{ "same name twice in one route",
	  BASE "routes:\n  - upstream: a\n    listeners: [tls]\n    mode: tcp\n    match:\n      sni:\n        - a.test\n        - A.TEST\n",
	  "t.yaml:20: routes[0].match.sni[1]: \"a.test\" is listed twice" },
	{ "same name on two routes (case differs)",
	  BASE "routes:\n  - upstream: a\n    listeners: [tls]\n    mode: tcp\n    match: {sni: a.test}\n"
	       "  - upstream: b\n    listeners: [tls]\n    mode: tcp\n    match: {sni: [x.test, A.test]}\n",
	  "t.yaml:21: routes[1].match.sni[1]: \"a.test\" already routed by tcp route \"route1\" (line 14)" },
	{ "same wildcard on two routes",
	  BASE "routes:\n  - upstream: a\n    listeners: [tls]\n    mode: tcp\n    match: {sni: \"*.w.test\"}\n"
	       "  - upstream: b\n    listeners: [tls]\n    mode: tcp\n    match: {sni: \"*.w.test\"}\n",
	  "t.yaml:21: routes[1].match.sni: \"*.w.test\" already routed by tcp route \"route1\"" },
	{ "two defaults",
	  BASE "routes:\n  - upstream: a\n    listeners: [tls]\n    mode: tcp\n    match: {sni: a.test}\n"
	       "  - upstream: b\n    listeners: [tls]\n    mode: tcp\n  - upstream: c\n    listeners: [tls]\n    mode: tcp\n",
	  "t.yaml:21: routes[2].listeners: listener \"tls\" already has default tcp route \"route2\"" },
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

/* The same name on two listeners is no conflict: each listener routes on its own. */
static void same_name_other_listener(void)
{
	struct config *cfg = NULL;
	char err[512];
	const char *y = BASE "routes:\n"
			     "  - {upstream: a, listeners: [tls], mode: tcp, match: {sni: a.test}}\n"
			     "  - {upstream: b, listeners: [web], mode: tcp, match: {sni: a.test}}\n";
	int rc = load(y, &cfg, err, sizeof(err));

	if (rc)
		TEST_FAIL_("load: %s", err);
	bool ok = cfg->listeners[0].sni_peek && cfg->listeners[1].sni_peek &&
		  cfg->listeners[0].tcp_default == -1 && cfg->listeners[1].tcp_default == -1;
	config_free(cfg);
	ASSERT_TRUE(ok);
}

static void loaded_tables(void)
{
	struct config *cfg = NULL;
	char err[512];
	const char *y = BASE SNI_ROUTES;
	int rc = load(y, &cfg, err, sizeof(err));

	if (rc)
		TEST_FAIL_("load: %s", err);
	const struct cfg_listener *l = &cfg->listeners[1];
	bool ok = l->ntcp_routes == 3 && l->tcp_routes[0] == 0 && l->tcp_routes[1] == 1 &&
		  l->tcp_routes[2] == 2 && l->tcp_default == 2 && l->sni_peek &&
		  cfg->listeners[0].ntcp_routes == 0 && !cfg->listeners[0].sni_peek &&
		  cfg->routes[0].nsni == 2 && !strcmp(cfg->routes[0].sni[0], "api.example.com") &&
		  cfg->routes[1].nsni == 1 && !strcmp(cfg->routes[1].sni[0], "*.wild.test") &&
		  cfg->routes[2].nsni == 0;
	config_free(cfg);
	ASSERT_TRUE(ok);
}

struct choice {
	const char *name;
	enum sni_peek_result peek;
	const char *host;
	int route;
	enum sni_route_result why;
};

static void choose_all(void)
{
	static const struct choice cases[] = {
		{ "exact", SNI_PEEK_FOUND, "api.example.com", 0, SNI_ROUTE_ROUTED },
		{ "second exact of a list", SNI_PEEK_FOUND, "www.example.com", 0, SNI_ROUTE_ROUTED },
		{ "wildcard, one label", SNI_PEEK_FOUND, "x.wild.test", 1, SNI_ROUTE_ROUTED },
		{ "wildcard, two labels", SNI_PEEK_FOUND, "a.b.wild.test", 2, SNI_ROUTE_DEFAULT },
		{ "wildcard base name", SNI_PEEK_FOUND, "wild.test", 2, SNI_ROUTE_DEFAULT },
		{ "unknown name", SNI_PEEK_FOUND, "other.test", 2, SNI_ROUTE_DEFAULT },
		{ "no server_name", SNI_PEEK_NONE, "", 2, SNI_ROUTE_DEFAULT },
		{ "malformed", SNI_PEEK_MALFORMED, "", -1, SNI_ROUTE_MALFORMED },
		{ "too big", SNI_PEEK_TOO_BIG, "", -1, SNI_ROUTE_TOO_BIG },
		{ "timeout", SNI_PEEK_TIMEOUT, "", -1, SNI_ROUTE_TIMEOUT },
		{ "closed", SNI_PEEK_CLOSED, "", -1, SNI_ROUTE_CLOSED },
	};
	struct config *cfg = NULL;
	char err[512];
	const char *y = BASE SNI_ROUTES;

	if (load(y, &cfg, err, sizeof(err)))
		TEST_FAIL_("load: %s", err);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum sni_route_result why = SNI_ROUTE_N;
		int r = sni_route_choose(&cfg->listeners[1], cfg->routes, cases[i].peek, cases[i].host, &why);

		if (r != cases[i].route || why != cases[i].why) {
			printf("#   %s: route %d (%s), want %d (%s)\n", cases[i].name, r,
			       sni_route_result_name(why), cases[i].route, sni_route_result_name(cases[i].why));
			config_free(cfg);
			TEST_FAIL_("case %s", cases[i].name);
		}
	}
	config_free(cfg);
}

/* An exact name wins over a wildcard that also matches, whatever the file order. */
static void exact_beats_wildcard(void)
{
	struct config *cfg = NULL;
	char err[512];
	const char *y = BASE "routes:\n"
			     "  - {upstream: a, listeners: [tls], mode: tcp, match: {sni: \"*.example.com\"}}\n"
			     "  - {upstream: b, listeners: [tls], mode: tcp, match: {sni: api.example.com}}\n";
	enum sni_route_result why = SNI_ROUTE_N;

	if (load(y, &cfg, err, sizeof(err)))
		TEST_FAIL_("load: %s", err);
	int exact = sni_route_choose(&cfg->listeners[1], cfg->routes, SNI_PEEK_FOUND, "api.example.com", &why);
	int wild = sni_route_choose(&cfg->listeners[1], cfg->routes, SNI_PEEK_FOUND, "w.example.com", &why);
	int none = sni_route_choose(&cfg->listeners[1], cfg->routes, SNI_PEEK_NONE, "", &why);

	config_free(cfg);
	ASSERT_EQ(exact, 1);
	ASSERT_EQ(wild, 0);
	ASSERT_EQ(none, -1);
	ASSERT_EQ(why, SNI_ROUTE_NO_MATCH);
}

static void result_names(void)
{
	ASSERT_STREQ(sni_route_result_name(SNI_ROUTE_ROUTED), "routed");
	ASSERT_STREQ(sni_route_result_name(SNI_ROUTE_NO_MATCH), "no_match");
	ASSERT_STREQ(sni_route_result_name(SNI_ROUTE_TOO_BIG), "too_big");
	ASSERT_STREQ(sni_route_result_name(SNI_ROUTE_CLOSED), "closed");
	ASSERT_STREQ(sni_route_result_name(SNI_ROUTE_N), "unknown");
}

int main(void)
{
	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++)
		RUN_NAMED(err_cases[i].name, refusals, &err_cases[i]);
	RUN(same_name_other_listener);
	RUN(loaded_tables);
	RUN(choose_all);
	RUN(exact_beats_wildcard);
	RUN(result_names);
	return test_done();
}
