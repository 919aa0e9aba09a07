/* selftests/unit/test_netaddr.c — address and CIDR literals: parse, format, membership (v4, v6, v4-mapped). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>

#include "netaddr.h"
#include "test.h"

struct addr_case {
	const char *in;
	uint16_t default_port;
	const char *want;   /* net_addr_format of the result, or NULL for an error */
	const char *why;    /* expected reason on error */
};

static const struct addr_case addr_cases[] = {
	{ "1.2.3.4:80", 0, "1.2.3.4:80", NULL },
	{ "0.0.0.0:8080", 0, "0.0.0.0:8080", NULL },
	{ "127.0.0.1:65535", 0, "127.0.0.1:65535", NULL },
	{ "[::1]:8080", 0, "[::1]:8080", NULL },
	{ "[2001:db8::1]:443", 0, "[2001:db8::1]:443", NULL },
	{ "[::ffff:10.0.0.1]:80", 0, "10.0.0.1:80", NULL },
	{ "*:80", 0, "[::]:80", NULL },
	{ ":80", 0, "[::]:80", NULL },
	{ "1.2.3.4", 8080, "1.2.3.4:8080", NULL },
	{ "[::1]", 443, "[::1]:443", NULL },
	{ "::1", 443, "[::1]:443", NULL },
	{ "*", 80, "[::]:80", NULL },
	{ "1.2.3.4:81", 8080, "1.2.3.4:81", NULL },
	{ "1.2.3.4", 0, NULL, "missing port" },
	{ "1.2.3.4:", 0, NULL, "missing port" },
	{ "[::1]", 0, NULL, "missing port" },
	{ "[::1]:", 0, NULL, "missing port" },
	{ "::1", 0, NULL, "IPv6 address needs brackets and a port, e.g. [::1]:80" },
	{ "::1:80", 0, NULL, "IPv6 address needs brackets and a port, e.g. [::1]:80" },
	{ "1.2.3.4:0", 0, NULL, "port out of range (1..65535)" },
	{ "1.2.3.4:65536", 0, NULL, "port out of range (1..65535)" },
	{ "1.2.3.4:99999999999", 0, NULL, "port out of range (1..65535)" },
	{ "1.2.3.4:http", 0, NULL, "port is not a number" },
	{ "1.2.3.4:-1", 0, NULL, "port is not a number" },
	{ "localhost:80", 0, NULL, "not an IP literal" },
	{ "example.com:443", 0, NULL, "not an IP literal" },
	{ "1.2.3:80", 0, NULL, "not an IP literal" },
	{ "1.2.3.256:80", 0, NULL, "not an IP literal" },
	{ "01.2.3.4:80", 0, NULL, "not an IP literal" },
	{ "[1.2.3.4]:80", 0, NULL, "not an IPv6 literal" },
	{ "[::1:80", 0, NULL, "missing ']'" },
	{ "[::1]80", 0, NULL, "junk after ']'" },
	{ "[]:80", 0, NULL, "empty address" },
	{ "", 80, NULL, "empty address" },
};

static void check_addr(const struct addr_case *tc)
{
	struct net_addr a;
	const char *why = NULL;
	char buf[NET_ADDR_STRLEN];
	int rc = net_addr_parse(tc->in, tc->default_port, &a, &why);

	if (!tc->want) {
		ASSERT_EQ(rc, -EINVAL);
		ASSERT_STREQ(why, tc->why);
		return;
	}
	ASSERT_EQ(rc, 0);
	ASSERT_STREQ(net_addr_format((struct sockaddr *)&a.ss, buf, sizeof(buf)), tc->want);
	if (a.ss.ss_family == AF_INET)
		ASSERT_EQ(a.len, sizeof(struct sockaddr_in));
	else
		ASSERT_EQ(a.len, sizeof(struct sockaddr_in6));
}

static void test_wildcard_is_v6_any(void)
{
	struct net_addr a;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a.ss;

	ASSERT_EQ(net_addr_parse("*:443", 0, &a, NULL), 0);
	ASSERT_EQ(a.ss.ss_family, AF_INET6);
	ASSERT_TRUE(IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr));
	ASSERT_EQ(ntohs(s6->sin6_port), 443);
	ASSERT_EQ(net_addr_parse("0.0.0.0:443", 0, &a, NULL), 0);
	ASSERT_EQ(a.ss.ss_family, AF_INET);
}

static void test_host_and_format(void)
{
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = htons(5000) };
	struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons(80) };
	struct sockaddr unk = { .sa_family = AF_UNIX };
	char buf[NET_ADDR_STRLEN], tiny[6];

	inet_pton(AF_INET6, "::ffff:192.0.2.7", &s6.sin6_addr);
	ASSERT_STREQ(net_addr_host((struct sockaddr *)&s6, buf, sizeof(buf)), "192.0.2.7");
	ASSERT_STREQ(net_addr_format((struct sockaddr *)&s6, buf, sizeof(buf)), "192.0.2.7:5000");
	inet_pton(AF_INET6, "2001:db8:0:0:0:0:0:1", &s6.sin6_addr);
	ASSERT_STREQ(net_addr_host((struct sockaddr *)&s6, buf, sizeof(buf)), "2001:db8::1");
	ASSERT_STREQ(net_addr_format((struct sockaddr *)&s6, buf, sizeof(buf)), "[2001:db8::1]:5000");
	inet_pton(AF_INET, "198.51.100.9", &s4.sin_addr);
	ASSERT_STREQ(net_addr_host((struct sockaddr *)&s4, buf, sizeof(buf)), "198.51.100.9");
	ASSERT_STREQ(net_addr_format((struct sockaddr *)&s4, buf, sizeof(buf)), "198.51.100.9:80");
	ASSERT_STREQ(net_addr_format(&unk, buf, sizeof(buf)), "(family 1)");
	/* A short buffer truncates; it never overflows. */
	ASSERT_STREQ(net_addr_format((struct sockaddr *)&s4, tiny, sizeof(tiny)), "198.5");
}

/* Longest possible rendering fits NET_ADDR_STRLEN. */
static void test_format_longest(void)
{
	struct net_addr a;
	char buf[NET_ADDR_STRLEN];
	const char *in = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";

	ASSERT_EQ(net_addr_parse(in, 0, &a, NULL), 0);
	ASSERT_STREQ(net_addr_format((struct sockaddr *)&a.ss, buf, sizeof(buf)), in);
}

struct cidr_case {
	const char *in;
	int family;         /* 0 = parse error */
	unsigned prefix;
	const char *net;    /* network address after clearing host bits, or the error reason */
};

static const struct cidr_case cidr_cases[] = {
	{ "10.0.0.0/8", AF_INET, 8, "10.0.0.0" },
	{ "10.1.2.3/8", AF_INET, 8, "10.0.0.0" },          /* host bits cleared */
	{ "192.168.1.77/26", AF_INET, 26, "192.168.1.64" },
	{ "127.0.0.1", AF_INET, 32, "127.0.0.1" },
	{ "0.0.0.0/0", AF_INET, 0, "0.0.0.0" },
	{ "1.2.3.4/32", AF_INET, 32, "1.2.3.4" },
	{ "::1", AF_INET6, 128, "::1" },
	{ "2001:db8::/32", AF_INET6, 32, "2001:db8::" },
	{ "2001:db8:ffff::1/33", AF_INET6, 33, "2001:db8:8000::" },
	{ "::/0", AF_INET6, 0, "::" },
	{ "10.0.0.0/33", 0, 0, "prefix length out of range (0..32)" },
	{ "::/129", 0, 0, "prefix length out of range (0..128)" },
	{ "10.0.0.0/", 0, 0, "missing prefix length after '/'" },
	{ "10.0.0.0/a", 0, 0, "prefix length is not a number" },
	{ "10.0.0.0/-1", 0, 0, "prefix length is not a number" },
	{ "10.0.0/8", 0, 0, "not an IP literal" },
	{ "example.com", 0, 0, "not an IP literal" },
	{ "[::1]", 0, 0, "not an IP literal" },
	{ "/8", 0, 0, "empty address" },
	{ "", 0, 0, "empty address" },
};

static void check_cidr(const struct cidr_case *tc)
{
	struct net_cidr c;
	const char *why = NULL;
	char buf[64];
	int rc = net_cidr_parse(tc->in, &c, &why);

	if (!tc->family) {
		ASSERT_EQ(rc, -EINVAL);
		ASSERT_STREQ(why, tc->net);
		return;
	}
	ASSERT_EQ(rc, 0);
	ASSERT_EQ(c.family, tc->family);
	ASSERT_EQ(c.prefix, tc->prefix);
	ASSERT_TRUE(inet_ntop(c.family, c.addr, buf, sizeof(buf)) != NULL);
	ASSERT_STREQ(buf, tc->net);
}

struct contains_case {
	const char *cidr;
	const char *addr;   /* "[v6]:1" or "v4:1" */
	int want;
};

static const struct contains_case contains_cases[] = {
	{ "10.0.0.0/8", "10.255.1.2:1", 1 },
	{ "10.0.0.0/8", "11.0.0.1:1", 0 },
	{ "10.0.0.0/8", "[::ffff:10.9.9.9]:1", 1 },        /* dual-stack socket peer */
	{ "10.0.0.0/8", "[::ffff:11.9.9.9]:1", 0 },
	{ "10.0.0.0/8", "[::a09:909]:1", 0 },              /* v4-compatible, not mapped */
	{ "192.168.1.64/26", "192.168.1.127:1", 1 },
	{ "192.168.1.64/26", "192.168.1.128:1", 0 },
	{ "192.168.1.64/26", "192.168.1.63:1", 0 },
	{ "127.0.0.1", "127.0.0.1:1", 1 },
	{ "127.0.0.1", "127.0.0.2:1", 0 },
	{ "0.0.0.0/0", "203.0.113.5:1", 1 },
	{ "0.0.0.0/0", "[::ffff:203.0.113.5]:1", 1 },
	{ "0.0.0.0/0", "[2001:db8::1]:1", 0 },
	{ "::1", "[::1]:1", 1 },
	{ "::1", "127.0.0.1:1", 0 },
	{ "2001:db8::/32", "[2001:db8:1234::1]:1", 1 },
	{ "2001:db8::/32", "[2001:db9::1]:1", 0 },
	{ "2001:db8:8000::/33", "[2001:db8:8000::1]:1", 1 },
	{ "2001:db8:8000::/33", "[2001:db8:7fff::1]:1", 0 },
	{ "::/0", "[fe80::1]:1", 1 },
	{ "::ffff:0:0/96", "192.0.2.1:1", 1 },             /* v6 prefix over v4-mapped space */
	{ "::ffff:10.0.0.0/104", "10.1.1.1:1", 1 },
	{ "::ffff:10.0.0.0/104", "11.1.1.1:1", 0 },
	{ "2001:db8::/32", "192.0.2.1:1", 0 },
};

static void check_contains(const struct contains_case *tc)
{
	struct net_cidr c;
	struct net_addr a;

	ASSERT_EQ(net_cidr_parse(tc->cidr, &c, NULL), 0);
	ASSERT_EQ(net_addr_parse(tc->addr, 0, &a, NULL), 0);
	ASSERT_EQ(net_cidr_contains(&c, (struct sockaddr *)&a.ss), tc->want);
}

static void test_contains_other_family(void)
{
	struct net_cidr c;
	struct sockaddr unk = { .sa_family = AF_UNIX };

	ASSERT_EQ(net_cidr_parse("0.0.0.0/0", &c, NULL), 0);
	ASSERT_FALSE(net_cidr_contains(&c, &unk));
}

int main(void)
{
	char name[96];

	for (size_t i = 0; i < sizeof(addr_cases) / sizeof(addr_cases[0]); i++) {
		snprintf(name, sizeof(name), "addr \"%s\" (default port %u)", addr_cases[i].in,
			 addr_cases[i].default_port);
		RUN_NAMED(name, check_addr, &addr_cases[i]);
	}
	RUN(test_wildcard_is_v6_any);
	RUN(test_host_and_format);
	RUN(test_format_longest);
	for (size_t i = 0; i < sizeof(cidr_cases) / sizeof(cidr_cases[0]); i++) {
		snprintf(name, sizeof(name), "cidr \"%s\"", cidr_cases[i].in);
		RUN_NAMED(name, check_cidr, &cidr_cases[i]);
	}
	for (size_t i = 0; i < sizeof(contains_cases) / sizeof(contains_cases[0]); i++) {
		snprintf(name, sizeof(name), "%s contains %s = %d", contains_cases[i].cidr,
			 contains_cases[i].addr, contains_cases[i].want);
		RUN_NAMED(name, check_contains, &contains_cases[i]);
	}
	RUN(test_contains_other_family);
	return test_done();
}
