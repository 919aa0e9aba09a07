/* agent/sni_route.h — which tcp route of a TLS-passthrough listener takes a connection, from the server name peeked in its ClientHello. */
#ifndef OPENCLAW_SNI_ROUTE_H
#define OPENCLAW_SNI_ROUTE_H

#include "config.h"
#include "sni_peek.h"

/* Outcome of one connection's peek: openclaw_tcp_sni_total{result} and the access log. */
enum sni_route_result {
	SNI_ROUTE_ROUTED,    /* the server name matched a route's match.sni */
	SNI_ROUTE_DEFAULT,   /* no name, or a name no route lists: the listener's default route */
	SNI_ROUTE_NO_MATCH,  /* a name no route lists (or none sent) and no default: closed */
	SNI_ROUTE_MALFORMED, /* not TLS, or a broken ClientHello: closed */
	SNI_ROUTE_TOO_BIG,   /* the ClientHello needs more than SNI_PEEK_MAX bytes: closed */
	SNI_ROUTE_TIMEOUT,   /* the ClientHello did not arrive within timeouts.client_header: closed */
	SNI_ROUTE_CLOSED,    /* the client closed (or reset) before its ClientHello was complete */
	SNI_ROUTE_N
};

/*
 * The route (index in routes) of listener l that takes a connection whose
 * peek ended with peek (host: the lower-cased name on SNI_PEEK_FOUND), or
 * -1 when the connection must be closed. An exact name wins over a wildcard
 * (*.example.com, one label), a wildcard over the default (the route without
 * match.sni). *why says which. SNI_PEEK_TIMEOUT and SNI_PEEK_CLOSED map to
 * their results too, so every outcome is named in one place.
 */
int sni_route_choose(const struct cfg_listener *l, const struct cfg_route *routes,
		     enum sni_peek_result peek, const char *host, enum sni_route_result *why);

/* The metric label / short word: "routed", "default", "no_match", ... */
const char *sni_route_result_name(enum sni_route_result r);

#endif
