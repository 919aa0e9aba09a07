/* agent/route.h — picks the route for a request: listener, host, path, method, headers; first match wins. */
#ifndef OPENCLAW_ROUTE_H
#define OPENCLAW_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "http1.h"

/*
 * Returns the index of the first route in cfg->routes matching the request
 * received on listener index `listener`, or -1 (the proxy answers 404).
 * Host comparison ignores case and a trailing ":port"; "*.example.com"
 * matches any name ending in ".example.com" (not "example.com" itself).
 */
int route_match(const struct config *cfg, unsigned listener, const struct http1_request *req);

/* Exposed for tests: does the host value (may carry ":port") match pattern? */
bool route_host_matches(const char *pattern, const char *host, size_t host_len);

#endif
