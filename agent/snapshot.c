/* agent/snapshot.c — an immutable configuration plus its shared balancer state, reference counted. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"
#include "worker.h"

static void snapshot_free(struct snapshot *s)
{
	struct config *cfg = s->cfg;

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
