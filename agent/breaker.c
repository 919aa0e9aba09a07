/* agent/breaker.c — circuit breakers: admission checks and the shared counters behind them. */
#include "breaker.h"

#include <stddef.h>

const char *breaker_trip_name(enum lb_trip t)
{
	switch (t) {
	case LB_TRIP_CONNECTIONS:
		return "max_connections";
	case LB_TRIP_PENDING:
		return "max_pending";
	case LB_TRIP_REQUESTS:
		return "max_requests";
	case LB_TRIP_N:
		break;
	}
	return "unknown";
}

const struct breaker_msg *breaker_message(int kind)
{
	static const struct breaker_msg none = {
		"no healthy server",
		"503 Service Unavailable: no healthy backend server (all down, ejected or draining)\n",
	};
	static const struct breaker_msg msgs[LB_TRIP_N] = {
		[LB_TRIP_CONNECTIONS] = { "circuit breaker: max_connections",
					  "503 Service Unavailable: backend connection limit reached (circuit breaker)\n" },
		[LB_TRIP_PENDING] = { "circuit breaker: max_pending",
				      "503 Service Unavailable: too many requests waiting for a backend (circuit breaker)\n" },
		[LB_TRIP_REQUESTS] = { "circuit breaker: max_requests",
				       "503 Service Unavailable: concurrent request limit reached (circuit breaker)\n" },
	};

	return kind >= 0 && kind < LB_TRIP_N ? &msgs[kind] : &none;
}

static inline uint32_t ld(_Atomic uint32_t *a)
{
	return atomic_load_explicit(a, memory_order_relaxed);
}

static int trip(_Atomic uint64_t *trips, enum lb_trip t)
{
	atomic_fetch_add_explicit(&trips[t], 1, memory_order_relaxed);
	return (int)t;
}

int breaker_pool_admit(struct lb_pool *p)
{
	const struct cfg_breaker *b = &p->cfg->limits;

	if (b->max_requests && ld(&p->admitted) >= b->max_requests)
		return trip(p->trips, LB_TRIP_REQUESTS);
	if (b->max_pending && ld(&p->pending) >= b->max_pending)
		return trip(p->trips, LB_TRIP_PENDING);
	if (b->max_requests)
		atomic_fetch_add_explicit(&p->admitted, 1, memory_order_relaxed);
	return -1;
}

void breaker_pool_release(struct lb_pool *p)
{
	if (p->cfg->limits.max_requests)
		lb_counter_dec(&p->admitted);
}

int breaker_server_admit(struct lb_pool *p, unsigned i, bool need_conn, bool *pool_level)
{
	const struct cfg_breaker *b = &p->cfg->servers[i].limits;
	struct lb_server *s = &p->servers[i];

	*pool_level = false;
	if (b->max_requests && ld(&s->admitted) >= b->max_requests)
		return trip(s->trips, LB_TRIP_REQUESTS);
	if (b->max_pending && ld(&s->pending) >= b->max_pending)
		return trip(s->trips, LB_TRIP_PENDING);
	if (need_conn && b->max_connections && ld(&s->conns) >= b->max_connections)
		return trip(s->trips, LB_TRIP_CONNECTIONS);
	if (need_conn && p->cfg->limits.max_connections &&
	    ld(&p->conns) >= p->cfg->limits.max_connections) {
		*pool_level = true;
		return trip(p->trips, LB_TRIP_CONNECTIONS);
	}
	if (b->max_requests)
		atomic_fetch_add_explicit(&s->admitted, 1, memory_order_relaxed);
	return -1;
}

void breaker_server_release(struct lb_pool *p, unsigned i)
{
	if (p->cfg->servers[i].limits.max_requests)
		lb_counter_dec(&p->servers[i].admitted);
}

void breaker_conn_open(struct lb_pool *p, unsigned i)
{
	atomic_fetch_add_explicit(&p->servers[i].conns, 1, memory_order_relaxed);
	if (p->cfg->limits.max_connections)
		atomic_fetch_add_explicit(&p->conns, 1, memory_order_relaxed);
}

void breaker_conn_close(struct lb_pool *p, unsigned i)
{
	lb_counter_dec(&p->servers[i].conns);
	if (p->cfg->limits.max_connections)
		lb_counter_dec(&p->conns);
}

void breaker_connect_begin(struct lb_pool *p, unsigned i)
{
	atomic_fetch_add_explicit(&p->servers[i].pending, 1, memory_order_relaxed);
	if (p->cfg->limits.max_pending)
		atomic_fetch_add_explicit(&p->pending, 1, memory_order_relaxed);
}

void breaker_connect_end(struct lb_pool *p, unsigned i)
{
	lb_counter_dec(&p->servers[i].pending);
	if (p->cfg->limits.max_pending)
		lb_counter_dec(&p->pending);
}
