/* agent/lb.c — load balancer core: pool and worker state, pick dispatch, request accounting, key hashing. */
#include "lb.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "lb_algos.h"

#define LB_P1 0x9E3779B185EBCA87ULL
#define LB_P2 0xC2B2AE3D27D4EB4FULL
#define LB_P3 0x165667B19E3779F9ULL
#define LB_P4 0x85EBCA77C2B2AE63ULL
#define LB_P5 0x27D4EB2F165667C5ULL

/* Seeds keep the key spaces apart: a header value never hashes like an address. */
#define LB_SEED_ADDR   0x6164647200000000ULL
#define LB_SEED_HEADER 0x6864720000000000ULL
#define LB_SEED_COOKIE 0x636f6f6b69650000ULL
#define LB_SEED_PATH   0x7061746800000000ULL

static inline uint64_t lb_rotl(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

uint64_t lb_hash64(const void *data, size_t len, uint64_t seed)
{
	const unsigned char *b = data;
	uint64_t h = seed + LB_P5 + (uint64_t)len;

	while (len >= 8) {
		uint64_t k;

		memcpy(&k, b, 8);
		k = lb_rotl(k * LB_P2, 31) * LB_P1;
		h = lb_rotl(h ^ k, 27) * LB_P1 + LB_P4;
		b += 8;
		len -= 8;
	}
	if (len >= 4) {
		uint32_t k;

		memcpy(&k, b, 4);
		h = lb_rotl(h ^ ((uint64_t)k * LB_P1), 23) * LB_P2 + LB_P3;
		b += 4;
		len -= 4;
	}
	while (len--)
		h = lb_rotl(h ^ (*b++ * LB_P5), 11) * LB_P1;
	h ^= h >> 33;
	h *= LB_P2;
	h ^= h >> 29;
	h *= LB_P3;
	h ^= h >> 32;
	return h;
}

static const struct lb_ops *lb_ops_for(enum lb_algorithm a)
{
	switch (a) {
	case LB_ROUND_ROBIN:
		return &lb_ops_round_robin;
	case LB_WEIGHTED_ROUND_ROBIN:
		return &lb_ops_weighted_round_robin;
	case LB_LEAST_CONN:
		return &lb_ops_least_conn;
	case LB_IP_HASH:
		return &lb_ops_ip_hash;
	case LB_CONSISTENT_HASH:
		return &lb_ops_consistent_hash;
	case LB_PEAK_EWMA:
		return &lb_ops_peak_ewma;
	}
	return NULL;
}

int lb_pool_init(struct lb_pool *p, const struct cfg_upstream *cfg)
{
	const struct lb_ops *ops;
	int rc;

	memset(p, 0, sizeof(*p));
	if (!cfg || !cfg->nservers || !cfg->servers)
		return -EINVAL;
	ops = lb_ops_for(cfg->algorithm);
	if (!ops)
		return -EINVAL;
	p->servers = calloc(cfg->nservers, sizeof(*p->servers));
	if (!p->servers)
		return -ENOMEM;
	for (unsigned i = 0; i < cfg->nservers; i++) {
		struct lb_server *s = &p->servers[i];

		atomic_init(&s->active, 0);
		atomic_init(&s->ewma_ns, 0);
		atomic_init(&s->ewma_at_ns, 0);
		atomic_init(&s->down, false);
		s->weight = cfg->servers[i].weight;
		s->backup = cfg->servers[i].backup;
		p->nbackup += s->backup;
	}
	p->cfg = cfg;
	p->nservers = cfg->nservers;
	p->ops = ops;
	if (ops->init) {
		rc = ops->init(p);
		if (rc < 0) {
			free(p->servers);
			memset(p, 0, sizeof(*p));
			return rc;
		}
	}
	return 0;
}

void lb_pool_destroy(struct lb_pool *p)
{
	if (!p)
		return;
	if (p->ops && p->ops->destroy)
		p->ops->destroy(p);
	free(p->servers);
	memset(p, 0, sizeof(*p));
}

/* splitmix64: spreads small seeds (worker numbers) into well-mixed, non-zero xorshift states. */
static uint64_t lb_splitmix(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ULL;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return x ^ (x >> 31);
}

int lb_local_init(struct lb_local *l, const struct lb_pool *p, uint64_t seed)
{
	memset(l, 0, sizeof(*l));
	if (!p || !p->nservers)
		return -EINVAL;
	l->swrr_cur = calloc(p->nservers, sizeof(*l->swrr_cur));
	if (!l->swrr_cur)
		return -ENOMEM;
	l->rng = lb_splitmix(seed);
	if (!l->rng)
		l->rng = LB_P1;
	/* Workers start their round-robin turns at different servers, not all at 0. */
	l->rr_next = (uint32_t)(lb_splitmix(seed ^ LB_P3) % p->nservers);
	return 0;
}

void lb_local_destroy(struct lb_local *l)
{
	if (!l)
		return;
	free(l->swrr_cur);
	memset(l, 0, sizeof(*l));
}

int lb_pick(struct lb_pool *p, struct lb_local *l, uint64_t hash, const uint32_t *exclude,
	    unsigned nexclude, uint64_t now_ns)
{
	int idx;

	if (!p || !p->ops || !p->nservers || !l || !l->swrr_cur)
		return -1;
	if (!exclude)
		nexclude = 0;
	/*
	 * Backups stand in only when no primary can take the request (down,
	 * ejected, draining or already tried): a cheap scan, done only for pools
	 * that have backups.
	 */
	l->backup_tier = false;
	if (p->nbackup) {
		bool primary = false;

		for (unsigned i = 0; i < p->nservers && !primary; i++)
			primary = lb_usable(p, l, i, exclude, nexclude);
		l->backup_tier = !primary;
	}
	idx = p->ops->pick(p, l, hash, exclude, nexclude, now_ns);
	/* Every algorithm already skips unusable servers; this keeps the promise if one slips. */
	if (idx < 0 || (unsigned)idx >= p->nservers || !lb_usable(p, l, (unsigned)idx, exclude, nexclude))
		return -1;
	return idx;
}

void lb_begin(struct lb_pool *p, int idx)
{
	if (!p || idx < 0 || (unsigned)idx >= p->nservers)
		return;
	atomic_fetch_add_explicit(&p->servers[idx].active, 1, memory_order_relaxed);
}

/* Decrement that stops at zero: an unpaired release must not wrap and block a breaker forever. */
void lb_counter_dec(_Atomic uint32_t *a)
{
	uint32_t cur = atomic_load_explicit(a, memory_order_relaxed);

	while (cur && !atomic_compare_exchange_weak_explicit(a, &cur, cur - 1, memory_order_relaxed,
							     memory_order_relaxed))
		;
}

void lb_end(struct lb_pool *p, int idx, uint64_t latency_ns, uint64_t now_ns)
{
	_Atomic uint32_t *a;
	uint32_t cur;

	if (!p || idx < 0 || (unsigned)idx >= p->nservers)
		return;
	/* Saturate at zero: an unpaired end must not wrap to 4 billion and starve the server. */
	a = &p->servers[idx].active;
	cur = atomic_load_explicit(a, memory_order_relaxed);
	while (cur && !atomic_compare_exchange_weak_explicit(a, &cur, cur - 1, memory_order_relaxed,
							     memory_order_relaxed))
		;
	/* Only peak_ewma reads the estimate: other pools skip the shared-line writes. */
	if (latency_ns && p->cfg && p->cfg->algorithm == LB_PEAK_EWMA)
		lb_ewma_observe(p, (unsigned)idx, latency_ns, now_ns);
}

static bool lb_ieq(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);

	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];

		if (x >= 'A' && x <= 'Z')
			x += 'a' - 'A';
		if (y >= 'A' && y <= 'Z')
			y += 'a' - 'A';
		if (x != y)
			return false;
	}
	return true;
}

static const struct http1_header *lb_find_header(const struct http1_request *req, const char *name,
						 uint32_t from)
{
	for (uint32_t i = from; i < req->nheaders && i < HTTP1_MAX_HEADERS; i++)
		if (lb_ieq(req->headers[i].name, req->headers[i].name_len, name))
			return &req->headers[i];
	return NULL;
}

/* Finds cookie `name` (case-sensitive, as browsers treat it) in one "a=1; b=2" value. */
static bool lb_cookie_in(const char *v, size_t len, const char *name, const char **out,
			 size_t *outlen)
{
	size_t nlen = strlen(name);
	size_t i = 0;

	while (i < len) {
		size_t start, eq, end;

		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ';'))
			i++;
		start = i;
		while (i < len && v[i] != ';')
			i++;
		end = i;
		while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
			end--;
		for (eq = start; eq < end && v[eq] != '='; eq++)
			;
		if (eq < end) {
			size_t klen = eq - start;

			while (klen && (v[start + klen - 1] == ' ' || v[start + klen - 1] == '\t'))
				klen--;
			if (klen == nlen && !memcmp(v + start, name, nlen)) {
				size_t vs = eq + 1;

				while (vs < end && (v[vs] == ' ' || v[vs] == '\t'))
					vs++;
				*out = v + vs;
				*outlen = end - vs;
				return true;
			}
		}
	}
	return false;
}

static bool lb_find_cookie(const struct http1_request *req, const char *name, const char **out,
			   size_t *outlen)
{
	const struct http1_header *h;
	uint32_t from = 0;

	/* A client may split its cookies over several Cookie fields. */
	while ((h = lb_find_header(req, "cookie", from))) {
		if (lb_cookie_in(h->value, h->value_len, name, out, outlen))
			return true;
		from = (uint32_t)(h - req->headers) + 1;
	}
	return false;
}

/* IPv4 whole; IPv6 by its /64 (one site, one key); v4-mapped IPv6 hashes as the IPv4 it carries. */
static uint64_t lb_addr_hash(const struct sockaddr *sa)
{
	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		return lb_hash64(&in->sin_addr, 4, LB_SEED_ADDR);
	}
	if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return lb_hash64(&in6->sin6_addr.s6_addr[12], 4, LB_SEED_ADDR);
		return lb_hash64(&in6->sin6_addr, 8, LB_SEED_ADDR);
	}
	return lb_hash64(NULL, 0, LB_SEED_ADDR);
}

uint64_t lb_request_hash(const struct lb_pool *p, const struct http1_request *req,
			 const struct sockaddr *client)
{
	const struct cfg_upstream *c = p ? p->cfg : NULL;
	const struct http1_header *h;
	const char *v;
	size_t vlen;

	if (!c || !req || c->algorithm == LB_IP_HASH)
		return lb_addr_hash(client);
	switch (c->hash_source) {
	case LB_HASH_HEADER:
		if (c->hash_name && (h = lb_find_header(req, c->hash_name, 0)))
			return lb_hash64(h->value, h->value_len, LB_SEED_HEADER);
		break;
	case LB_HASH_COOKIE:
		if (c->hash_name && lb_find_cookie(req, c->hash_name, &v, &vlen))
			return lb_hash64(v, vlen, LB_SEED_COOKIE);
		break;
	case LB_HASH_PATH:
		if (req->path)
			return lb_hash64(req->path, req->path_len, LB_SEED_PATH);
		break;
	case LB_HASH_CLIENT_IP:
		break;
	}
	return lb_addr_hash(client);
}
