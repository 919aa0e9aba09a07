/* agent/sni_route.c — the routing choice for TLS-passthrough tcp listeners: exact server name, then wildcard, then the default route. */
#include "sni_route.h"

#include <string.h>

/* The first tcp route of l listing host: exactly (wild false) or by a *.suffix pattern (wild true). */
static int find(const struct cfg_listener *l, const struct cfg_route *routes, const char *host,
		bool wild)
{
	for (unsigned i = 0; i < l->ntcp_routes; i++) {
		const struct cfg_route *r = &routes[l->tcp_routes[i]];

		for (unsigned k = 0; k < r->nsni; k++) {
			const char *p = r->sni[k];
			bool is_wild = p[0] == '*';

			if (is_wild != wild)
				continue;
			if (wild ? sni_match(p, host) : !strcmp(p, host))
				return l->tcp_routes[i];
		}
	}
	return -1;
}

int sni_route_choose(const struct cfg_listener *l, const struct cfg_route *routes,
		     enum sni_peek_result peek, const char *host, enum sni_route_result *why)
{
	int r;

	if (peek == SNI_PEEK_FOUND) {
		/* Config validation refuses a name twice per listener: at most one exact match. */
		r = find(l, routes, host, false);
		if (r < 0)
			r = find(l, routes, host, true);
		if (r >= 0) {
			*why = SNI_ROUTE_ROUTED;
			return r;
		}
		/* A name nobody lists is handled like no name. */
		peek = SNI_PEEK_NONE;
	}
	switch (peek) {
	case SNI_PEEK_NONE:
		*why = l->tcp_default >= 0 ? SNI_ROUTE_DEFAULT : SNI_ROUTE_NO_MATCH;
		return l->tcp_default;
	case SNI_PEEK_TOO_BIG:
		*why = SNI_ROUTE_TOO_BIG;
		return -1;
	case SNI_PEEK_TIMEOUT:
		*why = SNI_ROUTE_TIMEOUT;
		return -1;
	case SNI_PEEK_CLOSED:
		*why = SNI_ROUTE_CLOSED;
		return -1;
	default: /* MALFORMED; NEED_MORE means peek again, so asking counts it as broken */
		*why = SNI_ROUTE_MALFORMED;
		return -1;
	}
}

const char *sni_route_result_name(enum sni_route_result r)
{
	static const char *const names[SNI_ROUTE_N] = {
		"routed", "default", "no_match", "malformed", "too_big", "timeout", "closed",
	};

	return (unsigned)r < SNI_ROUTE_N ? names[r] : "unknown";
}
