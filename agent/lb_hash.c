/* agent/lb_hash.c — consistent hashing on a ring of virtual nodes; ip_hash is the same ring keyed by client address. */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "lb_algos.h"

/* Points per unit of weight: enough that four equal servers get shares within a few percent. */
#define LB_RING_POINTS_PER_WEIGHT 160
/* Bound on the whole ring (16 bytes a point): big weights scale down rather than eat memory. */
#define LB_RING_MAX_POINTS (1u << 16)

#define LB_SEED_RING 0x72696e6700000000ULL

struct lb_ring_point {
	uint64_t hash;   /* position on the ring */
	uint32_t server; /* index into lb_pool.servers */
};

/* Built once per pool in init, read by every worker without synchronisation. */
struct lb_ring {
	struct lb_ring_point *pts; /* sorted by hash */
	size_t npts;
};

/*
 * A server's points derive from its address, not its position in the list,
 * so adding, removing or reordering servers moves only the keys that must move.
 */
static uint64_t lb_ring_identity(const struct cfg_server *s, unsigned idx)
{
	const struct sockaddr_storage *ss = &s->addr.ss;
	unsigned char buf[2 + 2 + 16];

	memset(buf, 0, sizeof(buf));
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		buf[0] = 4;
		memcpy(buf + 2, &in->sin_port, 2);
		memcpy(buf + 4, &in->sin_addr, 4);
		return lb_hash64(buf, 8, LB_SEED_RING);
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		buf[0] = 6;
		memcpy(buf + 2, &in6->sin6_port, 2);
		memcpy(buf + 4, &in6->sin6_addr, 16);
		return lb_hash64(buf, sizeof(buf), LB_SEED_RING);
	}
	/* No address (cannot come from a loaded config): fall back to the position. */
	return lb_hash64(&idx, sizeof(idx), LB_SEED_RING + 1);
}

static int lb_ring_cmp(const void *a, const void *b)
{
	const struct lb_ring_point *x = a, *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return (x->server > y->server) - (x->server < y->server);
}

static int lb_ring_init(struct lb_pool *p)
{
	struct lb_ring *r;
	uint64_t wsum = 0;
	size_t per, k = 0;

	for (unsigned i = 0; i < p->nservers; i++)
		wsum += lb_base_weight(&p->servers[i]);
	per = LB_RING_POINTS_PER_WEIGHT;
	if (wsum * per > LB_RING_MAX_POINTS)
		per = LB_RING_MAX_POINTS / wsum ? LB_RING_MAX_POINTS / wsum : 1;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->pts = calloc(wsum * per, sizeof(*r->pts));
	if (!r->pts) {
		free(r);
		return -ENOMEM;
	}

	for (unsigned i = 0; i < p->nservers; i++) {
		size_t npts = per * lb_base_weight(&p->servers[i]);
		uint64_t id = lb_ring_identity(&p->cfg->servers[i], i);
		uint64_t dup = 0;

		/* Two entries with one address still get distinct points. */
		for (unsigned j = 0; j < i; j++)
			dup += lb_ring_identity(&p->cfg->servers[j], j) == id;
		id += dup * LB_SEED_RING;
		for (uint64_t v = 0; v < npts; v++) {
			uint64_t key[2] = { id, v };

			r->pts[k].hash = lb_hash64(key, sizeof(key), LB_SEED_RING);
			r->pts[k].server = i;
			k++;
		}
	}
	r->npts = k;
	qsort(r->pts, r->npts, sizeof(*r->pts), lb_ring_cmp);
	p->data = r;
	return 0;
}

static void lb_ring_destroy(struct lb_pool *p)
{
	struct lb_ring *r = p->data;

	if (!r)
		return;
	free(r->pts);
	free(r);
	p->data = NULL;
}

/* First point at or after hash (wrapping), then onwards past servers that cannot take it. */
static int lb_ring_pick(struct lb_pool *p, struct lb_local *l, uint64_t hash,
			const uint32_t *exclude, unsigned nexclude, uint64_t now_ns)
{
	const struct lb_ring *r = p->data;
	size_t lo = 0, hi, pos;
	uint32_t bad = UINT32_MAX;

	if (!r || !r->npts)
		return -1;
	hi = r->npts;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (r->pts[mid].hash < hash)
			lo = mid + 1;
		else
			hi = mid;
	}
	pos = lo == r->npts ? 0 : lo;

	for (size_t k = 0; k < r->npts; k++) {
		uint32_t s = r->pts[(pos + k) % r->npts].server;

		if (s == bad)
			continue;
		if (lb_usable(p, l, s, exclude, nexclude))
			return (int)s;
		bad = s;
	}
	return -1;
}

const struct lb_ops lb_ops_consistent_hash = {
	.name = "consistent_hash",
	.init = lb_ring_init,
	.destroy = lb_ring_destroy,
	.pick = lb_ring_pick,
};

const struct lb_ops lb_ops_ip_hash = {
	.name = "ip_hash",
	.init = lb_ring_init,
	.destroy = lb_ring_destroy,
	.pick = lb_ring_pick,
};
