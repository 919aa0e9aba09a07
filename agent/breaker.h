/* agent/breaker.h — circuit breakers per pool and per server: max connections, max pending, max requests → 503 at once, counted. */
#ifndef OPENCLAW_BREAKER_H
#define OPENCLAW_BREAKER_H

#include <stdbool.h>

#include "lb.h"

/*
 * The counters live in struct lb_pool / lb_server (shared by every worker,
 * relaxed atomics). A check and the increment that follows are not one
 * atomic step, so concurrent workers may overshoot a limit by at most one
 * request each; one worker never does.
 */

/* Trip kind name for replies and logs: "max_connections", "max_pending", "max_requests". */
const char *breaker_trip_name(enum lb_trip t);

/*
 * What a refused request gets: the access log's error and the 503 body.
 * kind is an enum lb_trip, or -1 for "no usable server" (all down, ejected
 * or draining).
 */
struct breaker_msg {
	const char *error; /* for the access log */
	const char *body;  /* the 503 body, newline-terminated */
};
const struct breaker_msg *breaker_message(int kind);

/*
 * Admits a request to pool p: refused when the pool already holds
 * limits.max_requests requests or limits.max_pending connects. Returns -1 and
 * takes a request slot, or the enum lb_trip that refused (counted in p->trips).
 */
int breaker_pool_admit(struct lb_pool *p);
void breaker_pool_release(struct lb_pool *p);

/*
 * Admits a request to server i of p; need_conn: it will open a new connection
 * (no idle one to reuse), so the connection limits of the server and the pool
 * apply. Returns -1 and takes the server's request slot, or the enum lb_trip
 * that refused (counted on the server, or on the pool for the pool's
 * max_connections). *pool_level says which.
 */
int breaker_server_admit(struct lb_pool *p, unsigned i, bool need_conn, bool *pool_level);
void breaker_server_release(struct lb_pool *p, unsigned i);

/* Connection and connect-in-progress accounting (server always, pool when limited). */
void breaker_conn_open(struct lb_pool *p, unsigned i);
void breaker_conn_close(struct lb_pool *p, unsigned i);
void breaker_connect_begin(struct lb_pool *p, unsigned i);
void breaker_connect_end(struct lb_pool *p, unsigned i);

#endif
