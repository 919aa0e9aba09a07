/* selftests/unit/test_guard_config.c — the guard: and state_dir: keys of the YAML loader: every field, defaults, and each bad shape with its FILE:LINE: KEY:. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>

#include "config.h"
#include "openclaw/guard.h"
#include "test.h"

/* A valid proxy part: 9 lines, so the guard section starts at line 10. */
#define BASE                                                                                   \
	"listeners:\n"                                                                          \
	"  - name: web\n"                                                                       \
	"    address: 127.0.0.1:8080\n"                                                         \
	"upstreams:\n"                                                                          \
	"  - name: api\n"                                                                       \
	"    servers:\n"                                                                        \
	"      - 127.0.0.1:9001\n"                                                              \
	"routes:\n"                                                                             \
	"  - upstream: api\n"

/* guard: with interfaces and ports (lines 10-12); cases append lines 13 on. */
#define GUARD BASE "guard:\n  interfaces: [eth0]\n  ports: [80]\n"

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
	{ "guard is a list", BASE "guard: [eth0]\n", "t.yaml:10: guard: expected a mapping, got a list" },
	{ "unknown guard key", GUARD "  interface: eth1\n",
	  "t.yaml:13: guard.interface: unknown key (expected one of: interfaces, mode" },
	{ "duplicate guard key", GUARD "  ports: [443]\n", "t.yaml:13: guard.ports: duplicate key, first at line 12" },
	{ "interfaces is a string", BASE "guard:\n  interfaces: eth0\n  ports: [80]\n",
	  "t.yaml:11: guard.interfaces: expected a list, got a scalar" },
	{ "interface name too long", BASE "guard:\n  interfaces: [abcdefghijklmnop]\n  ports: [80]\n",
	  "t.yaml:11: guard.interfaces[0]: \"abcdefghijklmnop\" is not an interface name" },
	{ "interface name with a slash", BASE "guard:\n  interfaces: [eth0, \"a/b\"]\n  ports: [80]\n",
	  "t.yaml:11: guard.interfaces[1]: \"a/b\" is not an interface name" },
	{ "duplicate interface", BASE "guard:\n  interfaces:\n    - eth0\n    - eth0\n  ports: [80]\n",
	  "t.yaml:13: guard.interfaces[1]: duplicate interface \"eth0\"" },
	{ "ports missing", BASE "guard:\n  interfaces: [eth0]\n",
	  "t.yaml:10: guard.ports: required when guard.interfaces is set" },
	{ "ports empty", BASE "guard:\n  interfaces: [eth0]\n  ports: []\n",
	  "t.yaml:12: guard.ports: empty list" },
	{ "port zero", BASE "guard:\n  interfaces: [eth0]\n  ports: [0]\n",
	  "t.yaml:12: guard.ports[0]: expected a port 1..65535 or a range \"LO-HI\", got \"0\"" },
	{ "port too large", BASE "guard:\n  interfaces: [eth0]\n  ports: [80, 65536]\n",
	  "t.yaml:12: guard.ports[1]: expected a port 1..65535" },
	{ "port range backwards", BASE "guard:\n  interfaces: [eth0]\n  ports: [\"9000-8000\"]\n",
	  "t.yaml:12: guard.ports[0]: range \"9000-8000\" ends before it starts" },
	{ "port range malformed", BASE "guard:\n  interfaces: [eth0]\n  ports: [\"80-\"]\n",
	  "t.yaml:12: guard.ports[0]: expected a port 1..65535 or a range" },
	{ "port as a mapping", BASE "guard:\n  interfaces: [eth0]\n  ports:\n    - {port: 80}\n",
	  "t.yaml:13: guard.ports[0]: expected a port or a range \"LO-HI\", got a mapping" },
	{ "bad mode", GUARD "  mode: fast\n",
	  "t.yaml:13: guard.mode: expected native, generic or auto, got \"fast\"" },
	{ "rate without unit", GUARD "  syn_rate: 100\n",
	  "t.yaml:13: guard.syn_rate: expected a rate such as 100/s or 600/m, got \"100\"" },
	{ "rate per hour", GUARD "  packet_rate: 100/h\n",
	  "t.yaml:13: guard.packet_rate: expected a rate such as 100/s or 600/m, got \"100/h\"" },
	{ "rate zero", GUARD "  syn_rate: 0/s\n",
	  "t.yaml:13: guard.syn_rate: expected a rate such as 100/s or 600/m, got \"0/s\"" },
	{ "per-minute rate not a multiple of 60", GUARD "  syn_rate: 100/m\n",
	  "t.yaml:13: guard.syn_rate: \"100/m\": a per-minute rate must be a multiple of 60" },
	{ "burst without rate", GUARD "  syn_burst: 10\n",
	  "t.yaml:13: guard.syn_burst: needs guard.syn_rate" },
	{ "packet burst without rate", GUARD "  packet_burst: 10\n",
	  "t.yaml:13: guard.packet_burst: needs guard.packet_rate" },
	{ "burst zero", GUARD "  syn_rate: 10/s\n  syn_burst: 0\n",
	  "t.yaml:14: guard.syn_burst: must be between 1 and 4294967295, got 0" },
	{ "ipv6_prefix out of range", GUARD "  ipv6_prefix: 129\n",
	  "t.yaml:13: guard.ipv6_prefix: must be between 1 and 128, got 129" },
	{ "unparsed neither pass nor drop", GUARD "  unparsed: reject\n",
	  "t.yaml:13: guard.unparsed: expected pass or drop, got \"reject\"" },
	{ "allow not a CIDR", GUARD "  allow: [10.0.0.0/33]\n",
	  "t.yaml:13: guard.allow[0]: bad address or CIDR \"10.0.0.0/33\"" },
	{ "deny twice the same", GUARD "  deny: [192.0.2.0/24, 192.0.2.7/24]\n",
	  "t.yaml:13: guard.deny[1]: \"192.0.2.7/24\" is listed twice (item 0)" },
	{ "deny is a mapping", GUARD "  deny: {a: 1}\n",
	  "t.yaml:13: guard.deny: expected a list, got a mapping" },
	{ "autoban unknown key", GUARD "  autoban:\n    treshold: 3\n",
	  "t.yaml:14: guard.autoban.treshold: unknown key (expected one of: statuses, threshold, window, ttl)" },
	{ "autoban status not an error", GUARD "  autoban:\n    statuses: [200]\n",
	  "t.yaml:14: guard.autoban.statuses[0]: must be between 400 and 599, got 200" },
	{ "autoban statuses empty", GUARD "  autoban:\n    statuses: []\n",
	  "t.yaml:14: guard.autoban.statuses: empty list (omit autoban to turn it off)" },
	{ "autoban threshold zero", GUARD "  autoban:\n    threshold: 0\n",
	  "t.yaml:14: guard.autoban.threshold: must be between 1 and 1000, got 0" },
	{ "autoban window bare number", GUARD "  autoban:\n    window: 10\n",
	  "t.yaml:14: guard.autoban.window: expected a duration such as" },
	{ "autoban window too short", GUARD "  autoban:\n    window: 500ms\n",
	  "t.yaml:14: guard.autoban.window: must be between 1s and 1d" },
	{ "autoban ttl zero", GUARD "  autoban:\n    ttl: 0\n",
	  "t.yaml:14: guard.autoban.ttl: must be between 1s and 365d" },
	{ "pin_dir relative", GUARD "  pin_dir: bpf/openclaw\n",
	  "t.yaml:13: guard.pin_dir: expected an absolute path on a bpf file system, got \"bpf/openclaw\"" },
	{ "state_dir relative", BASE "state_dir: var/lib\n",
	  "t.yaml:10: state_dir: expected an absolute path, got \"var/lib\"" },
	{ "state_dir empty", BASE "state_dir: \"\"\n", "t.yaml:10: state_dir: must not be empty" },
};

static void check_error(const struct err_case *c)
{
	struct config *cfg = NULL;
	char err[512] = "";

	ASSERT_EQ(load(c->yaml, &cfg, err, sizeof(err)), -EINVAL);
	ASSERT_TRUE(cfg == NULL);
	if (strncmp(err, c->prefix, strlen(c->prefix)))
		TEST_FAIL_("message \"%s\" does not start with \"%s\"", err, c->prefix);
}

static void test_full_guard(void)
{
	const char *yaml = BASE
		"state_dir: /srv/claw\n"
		"guard:\n"
		"  interfaces: [eth0, veth1]\n"
		"  mode: generic\n"
		"  ports: [80, 443, \"8000-8100\"]\n"
		"  syn_rate: 100/s\n"
		"  syn_burst: 200\n"
		"  packet_rate: 600000/m\n"
		"  packet_burst: 20000\n"
		"  ipv6_prefix: 56\n"
		"  unparsed: drop\n"
		"  allow: [10.0.0.0/8, \"2001:db8::/32\"]\n"
		"  deny: [192.0.2.0/24]\n"
		"  pin_dir: /sys/fs/bpf/claw-test\n"
		"  autoban:\n"
		"    statuses: [400, 401, 429]\n"
		"    threshold: 20\n"
		"    window: 10s\n"
		"    ttl: 10m\n";
	struct config *cfg = NULL;
	char err[512] = "";
	const struct cfg_guard *g;
	uint8_t want[4];

	ASSERT_EQ(load(yaml, &cfg, err, sizeof(err)), 0);
	g = &cfg->guard;
	ASSERT_STREQ(cfg->state_dir, "/srv/claw");
	ASSERT_EQ(g->ninterfaces, 2);
	ASSERT_STREQ(g->interfaces[0], "eth0");
	ASSERT_STREQ(g->interfaces[1], "veth1");
	ASSERT_EQ(g->mode, CFG_GUARD_GENERIC);
	ASSERT_EQ(g->nports, 3);
	ASSERT_EQ(g->ports[0].lo, 80);
	ASSERT_EQ(g->ports[0].hi, 80);
	ASSERT_EQ(g->ports[2].lo, 8000);
	ASSERT_EQ(g->ports[2].hi, 8100);
	ASSERT_EQ(g->syn_rate, 100);
	ASSERT_EQ(g->syn_burst, 200);
	ASSERT_EQ(g->pkt_rate, 10000);
	ASSERT_EQ(g->pkt_burst, 20000);
	ASSERT_EQ(g->v6_prefix, 56);
	ASSERT_TRUE(g->unparsed_drop);
	ASSERT_EQ(g->nallow, 2);
	ASSERT_EQ(g->allow[0].family, AF_INET);
	ASSERT_EQ(g->allow[0].prefix, 8);
	ASSERT_EQ(g->allow[1].family, AF_INET6);
	ASSERT_EQ(g->allow[1].prefix, 32);
	ASSERT_EQ(g->ndeny, 1);
	inet_pton(AF_INET, "192.0.2.0", want);
	ASSERT_TRUE(!memcmp(g->deny[0].addr, want, 4));
	ASSERT_STREQ(g->pin_dir, "/sys/fs/bpf/claw-test");
	ASSERT_EQ(g->autoban.nstatuses, 3);
	ASSERT_EQ(g->autoban.statuses[0], 400);
	ASSERT_EQ(g->autoban.statuses[2], 429);
	ASSERT_EQ(g->autoban.threshold, 20);
	ASSERT_EQ(g->autoban.window_ms, 10000);
	ASSERT_EQ(g->autoban.ttl_ms, 600000);
	config_free(cfg);
}

static void test_defaults(void)
{
	struct config *cfg = NULL;
	char err[512] = "";

	/* No guard section: off, default pin dir and state dir. */
	ASSERT_EQ(load(BASE, &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(cfg->guard.ninterfaces, 0);
	ASSERT_STREQ(cfg->guard.pin_dir, GUARD_PIN_DIR);
	ASSERT_STREQ(cfg->state_dir, "/var/lib/openclaw");
	config_free(cfg);

	/* Minimal guard: auto mode, no limits, bursts follow rates, autoban off. */
	ASSERT_EQ(load(GUARD "  syn_rate: 50/s\n", &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(cfg->guard.mode, CFG_GUARD_AUTO);
	ASSERT_EQ(cfg->guard.syn_rate, 50);
	ASSERT_EQ(cfg->guard.syn_burst, 50);
	ASSERT_EQ(cfg->guard.pkt_rate, 0);
	ASSERT_EQ(cfg->guard.v6_prefix, 64);
	ASSERT_FALSE(cfg->guard.unparsed_drop);
	ASSERT_EQ(cfg->guard.autoban.nstatuses, 0);
	config_free(cfg);

	/* autoban present but empty of keys: defaults. */
	ASSERT_EQ(load(GUARD "  autoban: {}\n", &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(cfg->guard.autoban.nstatuses, 3);
	ASSERT_EQ(cfg->guard.autoban.statuses[0], 401);
	ASSERT_EQ(cfg->guard.autoban.threshold, 20);
	ASSERT_EQ(cfg->guard.autoban.window_ms, 10000);
	ASSERT_EQ(cfg->guard.autoban.ttl_ms, 600000);
	config_free(cfg);
}

static void test_empty_guard_is_off(void)
{
	struct config *cfg = NULL;
	char err[512] = "";

	ASSERT_EQ(load(BASE "guard:\n", &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(cfg->guard.ninterfaces, 0);
	ASSERT_STREQ(cfg->guard.pin_dir, GUARD_PIN_DIR);
	config_free(cfg);
	/* Interfaces empty: off, and ports are not required. */
	ASSERT_EQ(load(BASE "guard:\n  interfaces: []\n  deny: [192.0.2.1]\n", &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(cfg->guard.ninterfaces, 0);
	ASSERT_EQ(cfg->guard.ndeny, 1);
	config_free(cfg);
}

int main(void)
{
	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++)
		RUN_NAMED(err_cases[i].name, check_error, &err_cases[i]);
	RUN(test_full_guard);
	RUN(test_defaults);
	RUN(test_empty_guard_is_off);
	return test_done();
}
