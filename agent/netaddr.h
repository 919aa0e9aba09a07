/* agent/netaddr.h — socket addresses and CIDR prefixes: the one parser and formatter for each. */
#ifndef OPENCLAW_NETADDR_H
#define OPENCLAW_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A resolved socket address (no DNS: literals only). */
struct net_addr {
	struct sockaddr_storage ss; /* AF_INET or AF_INET6, port in network order */
	socklen_t len;              /* bytes of ss in use */
};

/* An address prefix: 10.0.0.0/8, 2001:db8::/32, or a bare address (/32, /128). */
struct net_cidr {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network bytes, host bits cleared; 4 used for AF_INET */
	uint8_t prefix;   /* prefix length in bits */
};

/*
 * Parses "1.2.3.4:80", "[::1]:8080", "*:80" / ":80" (IPv6 any, dual-stack) and
 * "0.0.0.0:80". A missing port is an error unless default_port is non-zero;
 * then a bare "1.2.3.4" or unbracketed "::1" is accepted too. Host names are
 * never resolved ("not an IP literal"); ports are 1..65535.
 * Returns 0, or -EINVAL with *why set to a short static reason.
 */
int net_addr_parse(const char *s, uint16_t default_port, struct net_addr *out, const char **why);

/* "1.2.3.4:80" or "[::1]:80" into buf (at least NET_ADDR_STRLEN; v4-mapped v6 shown as v4). Returns buf. */
#define NET_ADDR_STRLEN 56
char *net_addr_format(const struct sockaddr *sa, char *buf, size_t len);

/* Host part only ("1.2.3.4", "::1"; v4-mapped v6 shown as v4). Returns buf. */
char *net_addr_host(const struct sockaddr *sa, char *buf, size_t len);

/*
 * Parses a CIDR or a bare address. Host bits below the prefix are cleared, not
 * rejected (as HAProxy does): "10.1.2.3/8" is 10.0.0.0/8.
 * Returns 0 or -EINVAL with *why set.
 */
int net_cidr_parse(const char *s, struct net_cidr *out, const char **why);

/*
 * True when sa (v4, v6, or v4-mapped v6) lies inside c. An IPv4 prefix matches
 * a v4-mapped peer of a dual-stack socket; an IPv6 prefix covering ::ffff:0:0/96
 * matches a plain IPv4 peer.
 */
bool net_cidr_contains(const struct net_cidr *c, const struct sockaddr *sa);

#endif
