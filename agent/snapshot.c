/* agent/snapshot.c — an immutable configuration plus its shared balancer state, reference counted. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"
#include "tls.h"
#include "worker.h"

static void snapshot_free(struct snapshot *s)
{
	struct config *cfg = s->cfg;

	tls_put(s->tls); /* its TLS view (tls.h); connections made from it hold their own */
	if (s->pools_owner) {
		/* Pools and names are the owner's. */
		snapshot_put(s->pools_owner);
		config_free(cfg);
		free(s);
		return;
	}
	for (unsigned i = 0; s->pools && i < cfg->nupstreams; i++)
		lb_pool_destroy(&s->pools[i]);
	for (unsigned i = 0; s->server_names && i < cfg->nupstreams; i++) {
		for (unsigned j = 0; s->server_names[i] && j < cfg->upstreams[i].nservers; j++)
			free(s->server_names[i][j]);
		free(s->server_names[i]);
	}
	free(s->server_names);
	free(s->pools);
	config_free(cfg);
	free(s);
}

int snapshot_create(struct config *cfg, struct snapshot **out)
{
	struct snapshot *s = calloc(1, sizeof(*s));
	unsigned n = cfg->nupstreams;
	int err;

	if (!s)
		return -ENOMEM;
	s->pools = calloc(n ? n : 1, sizeof(*s->pools));
	s->server_names = calloc(n ? n : 1, sizeof(*s->server_names));
	if (!s->pools || !s->server_names)
		goto nomem;
	for (unsigned i = 0; i < n; i++) {
		const struct cfg_upstream *u = &cfg->upstreams[i];

		s->server_names[i] = calloc(u->nservers, sizeof(char *));
		if (!s->server_names[i])
			goto nomem;
		for (unsigned j = 0; j < u->nservers; j++) {
			char buf[NET_ADDR_STRLEN];

			s->server_names[i][j] = strdup(net_addr_format(
				(const struct sockaddr *)&u->servers[j].addr.ss, buf, sizeof(buf)));
			if (!s->server_names[i][j])
				goto nomem;
		}
		err = lb_pool_init(&s->pools[i], u);
		if (err) {
			/* Pools after i were never built: destroy only those before. */
			for (unsigned j = 0; j < i; j++)
				lb_pool_destroy(&s->pools[j]);
			free(s->pools);
			s->pools = NULL;
			goto fail;
		}
	}
	atomic_init(&s->refs, 1);
	s->cfg = cfg;
	*out = s;
	return 0;
nomem:
	err = -ENOMEM;
	for (unsigned j = 0; s->pools && j < n; j++)
		if (s->pools[j].ops)
			lb_pool_destroy(&s->pools[j]);
	free(s->pools);
	s->pools = NULL;
fail:
	for (unsigned i = 0; s->server_names && i < n; i++) {
		for (unsigned j = 0; s->server_names[i] && j < cfg->upstreams[i].nservers; j++)
			free(s->server_names[i][j]);
		free(s->server_names[i]);
	}
	free(s->server_names);
	free(s);
	return err;
}

void snapshot_get(struct snapshot *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void snapshot_put(struct snapshot *s)
{
	if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		snapshot_free(s);
}

int snapshot_server_match(const struct lb_pool *p, const struct lb_pool *q, unsigned s)
{
	const struct net_addr *a = &q->cfg->servers[s].addr;

	for (unsigned i = 0; i < p->nservers; i++) {
		const struct net_addr *b = &p->cfg->servers[i].addr;

		if (a->len == b->len && !memcmp(&a->ss, &b->ss, a->len))
			return (int)i;
	}
	return -1;
}

/* State a server carries across a reload: health, ejection, drain and runtime weight. */
static void server_carry(struct lb_pool *np, unsigned ni, const struct lb_pool *op, unsigned oi)
{
	struct lb_server *n = &np->servers[ni];
	const struct lb_server *o = &op->servers[oi];

#define CARRY(f) atomic_store(&n->f, atomic_load(&o->f))
	CARRY(ewma_ns);
	CARRY(ewma_at_ns);
	CARRY(down);
	CARRY(draining);
	CARRY(weight_rt);
	CARRY(ramp_start_ns);
	CARRY(fails);
	CARRY(ejections);
	CARRY(ejected_until_ns);
	CARRY(ejected_at_ns);
	CARRY(eject_reason);
	CARRY(eff_weight);
#undef CARRY
	if (atomic_load(&o->ejected)) {
		atomic_store(&n->ejected, true);
		atomic_fetch_add(&np->nejected, 1);
	}
}

int snapshot_create_from(struct config *cfg, struct snapshot *old, bool share_pools,
			 struct snapshot **out)
{
	struct snapshot *s;
	int err;

	if (share_pools) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -ENOMEM;
		s->pools_owner = old->pools_owner ? old->pools_owner : old;
		snapshot_get(s->pools_owner);
		s->pools = old->pools;
		s->server_names = old->server_names;
		s->tls = tls_get(old->tls);
		s->cfg = cfg;
		atomic_init(&s->refs, 1);
		*out = s;
		return 0;
	}
	err = snapshot_create(cfg, &s);
	if (err)
		return err;
	s->tls = tls_get(old->tls);
	for (unsigned i = 0; i < cfg->nupstreams; i++) {
		int op = config_upstream_index(old->cfg, cfg->upstreams[i].name);

		if (op < 0)
			continue;
		for (unsigned j = 0; j < s->pools[i].nservers; j++) {
			int oj = snapshot_server_match(&old->pools[op], &s->pools[i], j);

			if (oj >= 0)
				server_carry(&s->pools[i], j, &old->pools[op], (unsigned)oj);
		}
	}
	*out = s;
	return 0;
}
