/* agent/netaddr.c — socket address and CIDR literals: parse, format, and prefix membership. */
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* "80" → 80; digits only, 1..65535. */
static int parse_port(const char *s, uint16_t *out, const char **why)
{
	unsigned long v = 0;

	if (*s == '\0') {
		*why = "missing port";
		return -EINVAL;
	}
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9') {
			*why = "port is not a number";
			return -EINVAL;
		}
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > 65535) {
			*why = "port out of range (1..65535)";
			return -EINVAL;
		}
	}
	if (v == 0) {
		*why = "port out of range (1..65535)";
		return -EINVAL;
	}
	*out = (uint16_t)v;
	return 0;
}

static void set_v6(struct net_addr *out, const struct in6_addr *a, uint16_t port)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;

	memset(out, 0, sizeof(*out));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	sin6->sin6_addr = *a;
	out->len = sizeof(*sin6);
}

static void set_v4(struct net_addr *out, const struct in_addr *a, uint16_t port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;

	memset(out, 0, sizeof(*out));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	sin->sin_addr = *a;
	out->len = sizeof(*sin);
}

int net_addr_parse(const char *s, uint16_t default_port, struct net_addr *out, const char **why)
{
	const char *host, *port_str = NULL, *colon;
	char hbuf[INET6_ADDRSTRLEN];
	bool bracketed = false;
	size_t hlen;
	uint16_t port = default_port;
	const char *dummy;
	struct in6_addr a6;
	struct in_addr a4;

	if (!why)
		why = &dummy;
	if (!s || *s == '\0') {
		*why = "empty address";
		return -EINVAL;
	}
	if (s[0] == '[') {
		const char *end = strchr(s, ']');

		if (!end) {
			*why = "missing ']'";
			return -EINVAL;
		}
		bracketed = true;
		host = s + 1;
		hlen = (size_t)(end - host);
		if (end[1] == ':')
			port_str = end + 2;
		else if (end[1] != '\0') {
			*why = "junk after ']'";
			return -EINVAL;
		}
	} else {
		colon = strrchr(s, ':');
		host = s;
		if (!colon) {
			hlen = strlen(s);
		} else if (memchr(s, ':', (size_t)(colon - s))) {
			/* Several colons without brackets: a bare IPv6 address, never host:port. */
			if (!default_port) {
				*why = "IPv6 address needs brackets and a port, e.g. [::1]:80";
				return -EINVAL;
			}
			hlen = strlen(s);
		} else {
			hlen = (size_t)(colon - s);
			port_str = colon + 1;
		}
	}
	if (port_str) {
		if (parse_port(port_str, &port, why))
			return -EINVAL;
	} else if (!port) {
		*why = "missing port";
		return -EINVAL;
	}

	/* "*:80" and ":80" bind the IPv6 wildcard, which accepts IPv4 too unless V6ONLY is set. */
	if (!bracketed && (hlen == 0 || (hlen == 1 && host[0] == '*'))) {
		set_v6(out, &in6addr_any, port);
		return 0;
	}
	if (hlen == 0 || hlen >= sizeof(hbuf)) {
		*why = hlen ? "not an IP literal" : "empty address";
		return -EINVAL;
	}
	memcpy(hbuf, host, hlen);
	hbuf[hlen] = '\0';
	if (!bracketed && inet_pton(AF_INET, hbuf, &a4) == 1) {
		set_v4(out, &a4, port);
		return 0;
	}
	if (inet_pton(AF_INET6, hbuf, &a6) == 1) {
		set_v6(out, &a6, port);
		return 0;
	}
	*why = bracketed ? "not an IPv6 literal" : "not an IP literal";
	return -EINVAL;
}

/* v4-mapped (::ffff:a.b.c.d) addresses come from dual-stack sockets; show them as the v4 they are. */
static bool v6_is_mapped(const struct in6_addr *a)
{
	return IN6_IS_ADDR_V4MAPPED(a);
}

char *net_addr_host(const struct sockaddr *sa, char *buf, size_t len)
{
	if (!len)
		return buf;
	buf[0] = '\0';
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		if (!inet_ntop(AF_INET, &sin->sin_addr, buf, (socklen_t)len))
			buf[0] = '\0';
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		if (v6_is_mapped(&sin6->sin6_addr)) {
			if (!inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], buf, (socklen_t)len))
				buf[0] = '\0';
		} else if (!inet_ntop(AF_INET6, &sin6->sin6_addr, buf, (socklen_t)len)) {
			buf[0] = '\0';
		}
	} else {
		snprintf(buf, len, "(family %d)", sa->sa_family);
	}
	return buf;
}

char *net_addr_format(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	unsigned port;

	if (!len)
		return buf;
	net_addr_host(sa, host, sizeof(host));
	if (sa->sa_family == AF_INET) {
		port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
		snprintf(buf, len, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		port = ntohs(sin6->sin6_port);
		if (v6_is_mapped(&sin6->sin6_addr))
			snprintf(buf, len, "%s:%u", host, port);
		else
			snprintf(buf, len, "[%s]:%u", host, port);
	} else {
		snprintf(buf, len, "%s", host);
	}
	return buf;
}

int net_cidr_parse(const char *s, struct net_cidr *out, const char **why)
{
	char hbuf[INET6_ADDRSTRLEN];
	const char *slash, *dummy;
	unsigned maxlen, prefix;
	size_t hlen;

	if (!why)
		why = &dummy;
	if (!s || *s == '\0') {
		*why = "empty address";
		return -EINVAL;
	}
	memset(out, 0, sizeof(*out));
	slash = strchr(s, '/');
	hlen = slash ? (size_t)(slash - s) : strlen(s);
	if (hlen == 0 || hlen >= sizeof(hbuf)) {
		*why = hlen ? "not an IP literal" : "empty address";
		return -EINVAL;
	}
	memcpy(hbuf, s, hlen);
	hbuf[hlen] = '\0';
	if (inet_pton(AF_INET, hbuf, out->addr) == 1) {
		out->family = AF_INET;
		maxlen = 32;
	} else if (inet_pton(AF_INET6, hbuf, out->addr) == 1) {
		out->family = AF_INET6;
		maxlen = 128;
	} else {
		*why = "not an IP literal";
		return -EINVAL;
	}
	prefix = maxlen;
	if (slash) {
		const char *p = slash + 1;

		if (*p == '\0') {
			*why = "missing prefix length after '/'";
			return -EINVAL;
		}
		prefix = 0;
		for (; *p; p++) {
			if (*p < '0' || *p > '9') {
				*why = "prefix length is not a number";
				return -EINVAL;
			}
			prefix = prefix * 10 + (unsigned)(*p - '0');
			if (prefix > maxlen) {
				*why = maxlen == 32 ? "prefix length out of range (0..32)"
						    : "prefix length out of range (0..128)";
				return -EINVAL;
			}
		}
	}
	out->prefix = (uint8_t)prefix;
	/* Clear host bits (as HAProxy does) so "10.1.2.3/8" means 10.0.0.0/8. */
	for (unsigned bit = prefix; bit < maxlen; bit++)
		out->addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
	return 0;
}

bool net_cidr_contains(const struct net_cidr *c, const struct sockaddr *sa)
{
	unsigned full = c->prefix / 8, rest = c->prefix % 8;
	uint8_t a[16];
	int family;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		if (c->family == AF_INET6) {
			/* Compare a plain v4 peer against a v6 prefix in its mapped form. */
			memset(a, 0, 10);
			a[10] = a[11] = 0xff;
			memcpy(a + 12, &sin->sin_addr, 4);
			family = AF_INET6;
		} else {
			memcpy(a, &sin->sin_addr, 4);
			family = AF_INET;
		}
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		if (c->family == AF_INET && v6_is_mapped(&sin6->sin6_addr)) {
			memcpy(a, &sin6->sin6_addr.s6_addr[12], 4);
			family = AF_INET;
		} else {
			memcpy(a, &sin6->sin6_addr, 16);
			family = AF_INET6;
		}
	} else {
		return false;
	}
	if (family != c->family)
		return false;
	if (memcmp(a, c->addr, full))
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xffu << (8 - rest));

		if ((a[full] & mask) != c->addr[full])
			return false;
	}
	return true;
}
