/* agent/backends.c — the backends.* control commands (list, drain, enable, weight, add, remove), runtime server changes laid over the file's pools, and <state_dir>/backends.json that keeps them across restarts. */
#include "backends.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "breaker.h"
#include "fileio.h"
#include "health_int.h"
#include "jsonr.h"
#include "jsonw.h"
#include "log.h"
#include "netaddr.h"
#include "reload.h"
#include "worker.h"

#define STATE_VERSION 1
#define STATE_MAX_BYTES (4u << 20)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static const char *srv_addr(const struct cfg_server *s, char *buf)
{
	return net_addr_format((const struct sockaddr *)&s->addr.ss, buf, NET_ADDR_STRLEN);
}

static const char *fmt_addr(const struct net_addr *a, char *buf)
{
	return net_addr_format((const struct sockaddr *)&a->ss, buf, NET_ADDR_STRLEN);
}

/* Same server? Compared in normalised form, so "[::1]:80" and its other spellings match. */
static bool addr_same(const struct net_addr *a, const struct net_addr *b)
{
	char x[NET_ADDR_STRLEN], y[NET_ADDR_STRLEN];

	return !strcmp(fmt_addr(a, x), fmt_addr(b, y));
}

/* ---- pool fingerprints ------------------------------------------------------------ */

/* FNV-1a, 64 bit: stable across builds and runs, which a saved fingerprint needs. */
static void fp_bytes(uint64_t *h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		*h ^= b[i];
		*h *= 0x100000001b3ULL;
	}
}

static void fp_u64(uint64_t *h, uint64_t v)
{
	fp_bytes(h, &v, sizeof(v));
}

/* Strings with their length (NULL differs from ""), so fields cannot run into each other. */
static void fp_str(uint64_t *h, const char *s)
{
	fp_u64(h, s ? strlen(s) + 1 : 0);
	if (s)
		fp_bytes(h, s, strlen(s));
}

static void fp_breaker(uint64_t *h, const struct cfg_breaker *b)
{
	fp_u64(h, b->max_connections);
	fp_u64(h, b->max_pending);
	fp_u64(h, b->max_requests);
}

uint64_t backends_pool_fingerprint(const struct cfg_upstream *u)
{
	const struct cfg_health *hc = &u->health;
	uint64_t h = 0xcbf29ce484222325ULL;
	char a[NET_ADDR_STRLEN];

	fp_str(&h, u->name);
	fp_u64(&h, u->algorithm);
	fp_u64(&h, u->hash_source);
	fp_str(&h, u->hash_name);
	fp_u64(&h, u->keepalive);
	fp_u64(&h, u->connect_tries);
	fp_u64(&h, u->nservers);
	for (unsigned i = 0; i < u->nservers; i++) {
		fp_str(&h, srv_addr(&u->servers[i], a));
		fp_u64(&h, u->servers[i].weight);
		fp_u64(&h, u->servers[i].backup);
		fp_breaker(&h, &u->servers[i].limits);
		if (u->servers[i].sni[0]) /* only then: fingerprints saved before the key existed still match */
			fp_str(&h, u->servers[i].sni);
	}
	fp_u64(&h, hc->type);
	fp_str(&h, hc->path);
	fp_str(&h, hc->method);
	fp_str(&h, hc->host);
	fp_u64(&h, hc->nexpect);
	for (unsigned i = 0; i < hc->nexpect; i++)
		fp_u64(&h, (uint64_t)hc->expect[i].lo << 16 | hc->expect[i].hi);
	fp_str(&h, hc->body_contains);
	fp_u64(&h, hc->interval_ms);
	fp_u64(&h, hc->jitter_pct);
	fp_u64(&h, hc->timeout_ms);
	fp_u64(&h, hc->rise);
	fp_u64(&h, hc->fall);
	fp_u64(&h, u->outlier.consecutive_failures);
	fp_u64(&h, u->outlier.base_ejection_ms);
	fp_u64(&h, u->outlier.max_ejection_ms);
	fp_u64(&h, u->outlier.max_ejected_percent);
	fp_u64(&h, u->slow_start_ms);
	fp_breaker(&h, &u->limits);
	return h;
}

/* ---- one pool's runtime changes ---------------------------------------------------- */

void backends_pool_rt_clear(struct backends_pool_rt *pr)
{
	free(pr->name);
	free(pr->add);
	free(pr->del);
	memset(pr, 0, sizeof(*pr));
}

static int pool_rt_copy(struct backends_pool_rt *dst, const struct backends_pool_rt *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->name = strdup(src->name);
	dst->fp = src->fp;
	dst->add = malloc((src->nadd ? src->nadd : 1) * sizeof(*dst->add));
	dst->del = malloc((src->ndel ? src->ndel : 1) * sizeof(*dst->del));
	if (!dst->name || !dst->add || !dst->del) {
		backends_pool_rt_clear(dst);
		return -ENOMEM;
	}
	if (src->nadd)
		memcpy(dst->add, src->add, src->nadd * sizeof(*dst->add));
	if (src->ndel)
		memcpy(dst->del, src->del, src->ndel * sizeof(*dst->del));
	dst->nadd = src->nadd;
	dst->ndel = src->ndel;
	return 0;
}

/* "added 10.0.0.9:80, 10.0.0.10:80 (backup); removed 10.0.0.1:80", for logs and notes. */
static void pool_rt_describe(const struct backends_pool_rt *pr, char *buf, size_t len)
{
	size_t n = 0;
	char a[NET_ADDR_STRLEN];

	buf[0] = '\0';
	for (unsigned i = 0; i < pr->nadd && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s%s", i ? ", " : "added ",
				      fmt_addr(&pr->add[i].addr, a), pr->add[i].backup ? " (backup)" : "");
	for (unsigned i = 0; i < pr->ndel && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : n ? "; removed " : "removed ",
				      fmt_addr(&pr->del[i], a));
}

static bool has_primary(const struct cfg_server *s, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (!s[i].backup)
			return true;
	return false;
}

int backends_pool_apply(const struct backends_pool_rt *pr, struct cfg_upstream *u, char *err,
			size_t errlen)
{
	struct cfg_server *ns;
	unsigned n = 0;
	char a[NET_ADDR_STRLEN];

	for (unsigned d = 0; d < pr->ndel; d++) {
		bool found = false;

		for (unsigned i = 0; i < u->nservers && !found; i++)
			found = addr_same(&u->servers[i].addr, &pr->del[d]);
		if (!found) {
			snprintf(err, errlen, "upstream %s has no server %s to remove", u->name,
				 fmt_addr(&pr->del[d], a));
			return -ENOENT;
		}
	}
	ns = calloc(u->nservers + pr->nadd ? u->nservers + pr->nadd : 1, sizeof(*ns));
	if (!ns) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < u->nservers; i++) {
		bool gone = false;

		for (unsigned d = 0; d < pr->ndel && !gone; d++)
			gone = addr_same(&u->servers[i].addr, &pr->del[d]);
		if (!gone)
			ns[n++] = u->servers[i];
	}
	for (unsigned k = 0; k < pr->nadd; k++) {
		for (unsigned i = 0; i < n; i++)
			if (addr_same(&ns[i].addr, &pr->add[k].addr)) {
				snprintf(err, errlen, "upstream %s already has server %s", u->name,
					 fmt_addr(&pr->add[k].addr, a));
				free(ns);
				return -EEXIST;
			}
		memset(&ns[n], 0, sizeof(ns[n]));
		ns[n].addr = pr->add[k].addr;
		ns[n].weight = pr->add[k].weight;
		ns[n].backup = pr->add[k].backup;
		n++;
	}
	if (!has_primary(ns, n)) {
		snprintf(err, errlen, "upstream %s would have no primary (non-backup) server left",
			 u->name);
		free(ns);
		return -EINVAL;
	}
	free(u->servers);
	u->servers = ns;
	u->nservers = n;
	u->nbackup = 0;
	for (unsigned i = 0; i < n; i++)
		u->nbackup += ns[i].backup;
	return 0;
}

static int find_addr(const struct cfg_upstream *u, const struct net_addr *addr)
{
	for (unsigned i = 0; i < u->nservers; i++)
		if (addr_same(&u->servers[i].addr, addr))
			return (int)i;
	return -1;
}

int backends_pool_add(struct backends_pool_rt *pr, const struct cfg_upstream *file_u,
		      const struct cfg_upstream *u, const struct net_addr *addr, uint32_t weight,
		      bool backup, char *err, size_t errlen)
{
	int fi = find_addr(file_u, addr);
	char a[NET_ADDR_STRLEN];
	void *nb;

	if (find_addr(u, addr) >= 0) {
		snprintf(err, errlen, "upstream %s already has server %s", u->name, fmt_addr(addr, a));
		return -EEXIST;
	}
	if (weight < 1 || weight > 1000) {
		snprintf(err, errlen, "weight must be an integer from 1 to 1000");
		return -EINVAL;
	}
	/* Putting back a server of the file as the file has it: the removal is undone instead. */
	if (fi >= 0 && file_u->servers[fi].weight == weight && file_u->servers[fi].backup == backup) {
		for (unsigned d = 0; d < pr->ndel; d++)
			if (addr_same(&pr->del[d], addr)) {
				memmove(&pr->del[d], &pr->del[d + 1], (pr->ndel - d - 1) * sizeof(*pr->del));
				pr->ndel--;
				return 0;
			}
	}
	nb = realloc(pr->add, (pr->nadd + 1) * sizeof(*pr->add));
	if (!nb) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pr->add = nb;
	memset(&pr->add[pr->nadd], 0, sizeof(pr->add[0]));
	pr->add[pr->nadd].addr = *addr;
	pr->add[pr->nadd].weight = weight;
	pr->add[pr->nadd].backup = backup;
	pr->nadd++;
	return 0;
}

int backends_pool_remove(struct backends_pool_rt *pr, const struct cfg_upstream *file_u,
			 const struct cfg_upstream *u, const struct net_addr *addr, char *err,
			 size_t errlen)
{
	bool primary = false;
	char a[NET_ADDR_STRLEN];
	void *nb;

	if (find_addr(u, addr) < 0) {
		snprintf(err, errlen, "upstream %s has no server %s", u->name, fmt_addr(addr, a));
		return -ENOENT;
	}
	for (unsigned i = 0; i < u->nservers && !primary; i++)
		primary = !u->servers[i].backup && !addr_same(&u->servers[i].addr, addr);
	if (!primary) {
		snprintf(err, errlen, "%s is the last primary (non-backup) server of upstream %s; "
			 "add another first", fmt_addr(addr, a), u->name);
		return -EINVAL;
	}
	for (unsigned k = 0; k < pr->nadd; k++)
		if (addr_same(&pr->add[k].addr, addr)) {
			memmove(&pr->add[k], &pr->add[k + 1], (pr->nadd - k - 1) * sizeof(*pr->add));
			pr->nadd--;
			/* A file server removed and added back with other settings is still removed. */
			return 0;
		}
	if (find_addr(file_u, addr) < 0)
		return 0;
	nb = realloc(pr->del, (pr->ndel + 1) * sizeof(*pr->del));
	if (!nb) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pr->del = nb;
	pr->del[pr->ndel++] = *addr;
	return 0;
}

/* ---- the runtime set ------------------------------------------------------------------ */

static void set_free(struct backends_pool_rt *set, unsigned n)
{
	for (unsigned i = 0; set && i < n; i++)
		backends_pool_rt_clear(&set[i]);
	free(set);
}

static void drops_free(struct backends_note *d, unsigned n)
{
	for (unsigned i = 0; d && i < n; i++)
		free(d[i].pool);
	free(d);
}

static struct backends_pool_rt *set_find(struct backends_pool_rt *set, unsigned n, const char *name)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(set[i].name, name))
			return &set[i];
	return NULL;
}

static int note_add(struct backends_note **v, unsigned *n, const char *pool, const char *text)
{
	struct backends_note *nv;

	for (unsigned i = 0; i < *n; i++)
		if (!strcmp((*v)[i].pool, pool)) {
			snprintf((*v)[i].text, sizeof((*v)[i].text), "%s", text);
			return 0;
		}
	nv = realloc(*v, (*n + 1) * sizeof(**v));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[*n].pool = strdup(pool);
	if (!nv[*n].pool)
		return -ENOMEM;
	snprintf(nv[*n].text, sizeof(nv[*n].text), "%s", text);
	(*n)++;
	return 0;
}

static void note_del(struct backends_note *v, unsigned *n, const char *pool)
{
	for (unsigned i = 0; i < *n; i++)
		if (!strcmp(v[i].pool, pool)) {
			free(v[i].pool);
			memmove(&v[i], &v[i + 1], (*n - i - 1) * sizeof(*v));
			(*n)--;
			return;
		}
}

static void next_reset(struct backends_rt *rt)
{
	set_free(rt->next, rt->nnext);
	drops_free(rt->next_drops, rt->nnext_drops);
	rt->next = NULL;
	rt->nnext = 0;
	rt->next_drops = NULL;
	rt->nnext_drops = 0;
	rt->next_for = NULL;
}

/*
 * Lays set over cfg (the file as parsed) into out: entries whose pool is gone
 * or changed in the file are left out and described in drops. Pure but for
 * allocation; cfg's pools are changed only by entries that apply.
 */
static int set_apply(const struct backends_pool_rt *set, unsigned n, struct config *cfg,
		     struct backends_pool_rt **out, unsigned *nout, struct backends_note **drops,
		     unsigned *ndrops)
{
	struct backends_pool_rt *keep = calloc(n ? n : 1, sizeof(*keep));
	unsigned nk = 0;
	int rc = 0;

	*drops = NULL;
	*ndrops = 0;
	if (!keep)
		return -ENOMEM;
	for (unsigned i = 0; i < n && !rc; i++) {
		const struct backends_pool_rt *pr = &set[i];
		int p = config_upstream_index(cfg, pr->name);
		char what[BACKENDS_NOTE_MAX - 96], why[BACKENDS_NOTE_MAX];

		pool_rt_describe(pr, what, sizeof(what));
		if (p < 0) {
			snprintf(why, sizeof(why), "upstream %s is no longer in the config file; runtime "
				 "changes dropped (%s)", pr->name, what);
		} else if (backends_pool_fingerprint(&cfg->upstreams[p]) != pr->fp) {
			snprintf(why, sizeof(why), "the config file changed upstream %s; runtime changes "
				 "dropped (%s)", pr->name, what);
		} else {
			char err[256];
			int e = backends_pool_apply(pr, &cfg->upstreams[p], err, sizeof(err));

			if (e == -ENOMEM) {
				rc = e;
				break;
			}
			if (!e) {
				rc = pool_rt_copy(&keep[nk], pr);
				nk += !rc;
				continue;
			}
			/* Cannot happen with an unchanged fingerprint, but a hand-edited file can say anything. */
			if (snprintf(why, sizeof(why), "upstream %s: runtime changes dropped (%s): %s",
				     pr->name, what, err) >= (int)sizeof(why))
				why[sizeof(why) - 2] = '~'; /* cut short */
		}
		rc = note_add(drops, ndrops, pr->name, why);
	}
	if (rc) {
		set_free(keep, nk);
		drops_free(*drops, *ndrops);
		*drops = NULL;
		*ndrops = 0;
		return rc;
	}
	*out = keep;
	*nout = nk;
	return 0;
}

/* ---- backends.json ------------------------------------------------------------------- */

static void put_pools_state(struct jsonw *w, const struct backends_rt *rt)
{
	char a[NET_ADDR_STRLEN], fp[24];

	jsonw_arr_begin(w, "pools");
	for (unsigned i = 0; rt && i < rt->npools; i++) {
		const struct backends_pool_rt *pr = &rt->pools[i];

		jsonw_obj_begin(w);
		jsonw_str(w, "pool", pr->name);
		snprintf(fp, sizeof(fp), "%016" PRIx64, pr->fp);
		jsonw_str(w, "fingerprint", fp);
		jsonw_arr_begin(w, "add");
		for (unsigned k = 0; k < pr->nadd; k++) {
			jsonw_obj_begin(w);
			jsonw_str(w, "address", fmt_addr(&pr->add[k].addr, a));
			jsonw_u64(w, "weight", pr->add[k].weight);
			jsonw_bool(w, "backup", pr->add[k].backup);
			jsonw_obj_end(w);
		}
		jsonw_arr_end(w);
		jsonw_arr_begin(w, "remove");
		for (unsigned k = 0; k < pr->ndel; k++)
			jsonw_str(w, NULL, fmt_addr(&pr->del[k], a));
		jsonw_arr_end(w);
		jsonw_obj_end(w);
	}
	jsonw_arr_end(w);
}

/*
 * Writes every server with a runtime drain or weight: pool, address, the
 * configured weight it was made against (so a later config edit of that
 * server wins), the runtime weight (0 = none) and the drain flag; then the
 * runtime server changes of each pool with the fingerprint of the file's
 * pool. Atomic: temp file, fsync, rename. Caller holds h->lock (rt->lock is
 * taken here).
 */
static int state_save(struct health *h, char *err, size_t errlen)
{
	const struct config *cfg = h->snap->cfg;
	struct backends_rt *rt = h->rt;
	size_t cap = 4096;
	char tmp[272], a[NET_ADDR_STRLEN];
	struct jsonw w;
	char *buf;
	long len;
	int fd, rc = 0;

	if (rt)
		pthread_mutex_lock(&rt->lock);
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		cap += (size_t)h->snap->pools[p].nservers * (200 + 2 * strlen(cfg->upstreams[p].name));
	for (unsigned i = 0; rt && i < rt->npools; i++)
		cap += 200 + strlen(rt->pools[i].name) + 120 * (rt->pools[i].nadd + rt->pools[i].ndel);
	buf = malloc(cap);
	if (!buf) {
		if (rt)
			pthread_mutex_unlock(&rt->lock);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	jsonw_init(&w, buf, cap);
	jsonw_obj_begin(&w);
	jsonw_u64(&w, "version", STATE_VERSION);
	jsonw_arr_begin(&w, "servers");
	for (unsigned p = 0; p < cfg->nupstreams; p++) {
		const struct lb_pool *lp = &h->snap->pools[p];

		for (unsigned i = 0; i < lp->nservers; i++) {
			struct lb_server *s = &lp->servers[i];
			uint32_t wrt = atomic_load_explicit(&s->weight_rt, memory_order_relaxed);
			bool dr = atomic_load_explicit(&s->draining, memory_order_relaxed);

			if (!wrt && !dr)
				continue;
			jsonw_obj_begin(&w);
			jsonw_str(&w, "pool", lp->cfg->name);
			jsonw_str(&w, "address", srv_addr(&lp->cfg->servers[i], a));
			jsonw_u64(&w, "config_weight", lp->cfg->servers[i].weight);
			jsonw_u64(&w, "weight", wrt);
			jsonw_bool(&w, "drain", dr);
			jsonw_obj_end(&w);
		}
	}
	jsonw_arr_end(&w);
	put_pools_state(&w, rt);
	if (rt)
		pthread_mutex_unlock(&rt->lock);
	jsonw_obj_end(&w);
	len = jsonw_finish(&w);
	if (len < 0) {
		free(buf);
		snprintf(err, errlen, "state too large");
		return -EOVERFLOW;
	}
	buf[len] = '\n';
	if (mkdir(cfg->state_dir, 0750) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "state_dir %s: %s", cfg->state_dir, strerror(errno));
		free(buf);
		return rc;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", h->state_path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		free(buf);
		return rc;
	}
	for (size_t off = 0; off < (size_t)len + 1;) {
		ssize_t n = write(fd, buf + off, (size_t)len + 1 - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
	}
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	if (!rc && rename(tmp, h->state_path) < 0)
		rc = -errno;
	if (rc) {
		snprintf(err, errlen, "%s: %s", h->state_path, strerror(-rc));
		unlink(tmp);
	}
	free(buf);
	return rc;
}

/* Saves drains, weights and server changes; without the health thread nothing is saved (see docs/health.md). */
static int rt_save(struct backends_rt *rt, char *err, size_t errlen)
{
	struct health *h = rt->health;
	int rc;

	if (!h) {
		snprintf(err, errlen, "health checks are off: nothing is saved");
		return -ENOTSUP;
	}
	pthread_mutex_lock(&h->lock);
	rc = state_save(h, err, errlen);
	pthread_mutex_unlock(&h->lock);
	return rc;
}

/* The state file parsed; NULL (logged unless absent) when unreadable. */
struct state_doc {
	char *text, *strbuf;
	struct jsonr_node *nodes;
	struct jsonr j;
};

static void state_doc_free(struct state_doc *d)
{
	free(d->text);
	free(d->strbuf);
	free(d->nodes);
}

static int state_doc_read(const char *path, struct state_doc *d)
{
	char err[512];
	size_t len = 0;
	uint32_t cap;
	int rc;

	memset(d, 0, sizeof(*d));
	rc = fileio_read(path, STATE_MAX_BYTES, 0, &d->text, &len, NULL, err, sizeof(err));
	if (rc) {
		if (rc != -ENOENT)
			log_warn("backends: %s (runtime drain/weight and server changes not restored)", err);
		return rc;
	}
	cap = (uint32_t)(len / 2 + 16);
	d->strbuf = malloc(len + 1);
	d->nodes = calloc(cap, sizeof(*d->nodes));
	if (!d->strbuf || !d->nodes) {
		log_warn("backends: %s: out of memory; ignored", path);
		state_doc_free(d);
		return -ENOMEM;
	}
	if (jsonr_parse(&d->j, d->text, len, d->nodes, cap, d->strbuf, len + 1) ||
	    d->j.nodes[0].type != JSONR_OBJECT ||
	    jsonr_get_int(&d->j, &d->j.nodes[0], "version", 0) != STATE_VERSION) {
		log_warn("backends: %s: unreadable or of another version; ignored", path);
		state_doc_free(d);
		return -EINVAL;
	}
	return 0;
}

void health_state_load(struct health *h)
{
	const struct config *cfg = h->snap->cfg;
	const struct jsonr_node *e;
	struct state_doc d;

	if (state_doc_read(h->state_path, &d))
		return;
	for (e = jsonr_child(&d.j, jsonr_get(&d.j, &d.j.nodes[0], "servers")); e; e = jsonr_next(&d.j, e)) {
		const char *pool = jsonr_get_str(&d.j, e, "pool"), *addr = jsonr_get_str(&d.j, e, "address");
		int64_t cw = jsonr_get_int(&d.j, e, "config_weight", -1);
		int64_t wrt = jsonr_get_int(&d.j, e, "weight", 0);
		const struct jsonr_node *dn = jsonr_get(&d.j, e, "drain");
		bool dr = dn && dn->type == JSONR_BOOL && dn->b;
		int p = pool ? config_upstream_index(cfg, pool) : -1;
		bool found = false;
		char a[NET_ADDR_STRLEN];

		if (p < 0 || !addr || wrt < 0 || wrt > 1000)
			continue;
		for (unsigned i = 0; i < h->snap->pools[p].nservers; i++) {
			const struct cfg_upstream *u = h->snap->pools[p].cfg;
			const struct cfg_server *cs = &u->servers[i];
			struct lb_server *s = &h->snap->pools[p].servers[i];

			if (strcmp(srv_addr(cs, a), addr))
				continue;
			found = true;
			/* The file was written against another configured weight: the config changed, it wins. */
			if (cw != (int64_t)cs->weight) {
				log_notice("backends: upstream %s %s: config changed (weight %lld -> %u); runtime drain/weight dropped",
					   pool, addr, (long long)cw, cs->weight);
				continue;
			}
			atomic_store(&s->weight_rt, (uint32_t)wrt);
			atomic_store(&s->draining, dr);
			atomic_store(&s->eff_weight, health_eff_weight(s, u->slow_start_ms, now_ns()));
			log_notice("backends: upstream %s %s: restored%s%s (from %s)", pool, addr,
				   dr ? " drain" : "", wrt ? " weight" : "", h->state_path);
		}
		if (!found)
			log_notice("backends: upstream %s %s: no longer in the config; saved state dropped",
				   pool, addr);
	}
	state_doc_free(&d);
}

/* One "pools" entry of the state file; false (logged) when malformed. */
static bool state_pool_parse(const struct jsonr *j, const struct jsonr_node *e,
			     struct backends_pool_rt *pr)
{
	const char *name = jsonr_get_str(j, e, "pool"), *fps = jsonr_get_str(j, e, "fingerprint");
	const struct jsonr_node *n;
	const char *why = "invalid";
	char *end = NULL;

	memset(pr, 0, sizeof(*pr));
	if (!name || !fps || !*fps)
		goto bad;
	errno = 0;
	pr->fp = strtoull(fps, &end, 16);
	if (errno || *end || !(pr->name = strdup(name)))
		goto bad;
	for (n = jsonr_child(j, jsonr_get(j, e, "add")); n; n = jsonr_next(j, n)) {
		const char *as = jsonr_get_str(j, n, "address");
		int64_t wt = jsonr_get_int(j, n, "weight", 1);
		const struct jsonr_node *bk = jsonr_get(j, n, "backup");
		struct backends_added *nb = realloc(pr->add, (pr->nadd + 1) * sizeof(*pr->add));

		if (!nb)
			goto bad;
		pr->add = nb;
		memset(&nb[pr->nadd], 0, sizeof(*nb));
		if (!as || net_addr_parse(as, 0, &nb[pr->nadd].addr, &why) || wt < 1 || wt > 1000)
			goto bad;
		nb[pr->nadd].weight = (uint32_t)wt;
		nb[pr->nadd].backup = bk && bk->type == JSONR_BOOL && bk->b;
		pr->nadd++;
	}
	for (n = jsonr_child(j, jsonr_get(j, e, "remove")); n; n = jsonr_next(j, n)) {
		struct net_addr *nd = realloc(pr->del, (pr->ndel + 1) * sizeof(*pr->del));

		if (!nd)
			goto bad;
		pr->del = nd;
		if (n->type != JSONR_STRING || net_addr_parse(n->str, 0, &nd[pr->ndel], &why))
			goto bad;
		pr->ndel++;
	}
	return true;
bad:
	log_warn("backends: a saved runtime server change%s%s is malformed (%s); ignored",
		 name ? " of upstream " : "", name ? name : "", why);
	backends_pool_rt_clear(pr);
	return false;
}

int backends_rt_create(struct backends_rt **out, struct config *cfg)
{
	struct backends_rt *rt = calloc(1, sizeof(*rt));
	struct backends_pool_rt *saved = NULL;
	unsigned nsaved = 0;
	struct state_doc d;
	int rc = 0;

	*out = NULL;
	if (!rt)
		return -ENOMEM;
	pthread_mutex_init(&rt->lock, NULL);
	snprintf(rt->state_path, sizeof(rt->state_path), "%s/%s", cfg->state_dir, HEALTH_STATE_FILE);
	if (!state_doc_read(rt->state_path, &d)) {
		const struct jsonr_node *pools = jsonr_get(&d.j, &d.j.nodes[0], "pools");

		saved = calloc(pools && pools->len ? pools->len : 1, sizeof(*saved));
		for (const struct jsonr_node *e = jsonr_child(&d.j, pools); saved && e;
		     e = jsonr_next(&d.j, e))
			nsaved += state_pool_parse(&d.j, e, &saved[nsaved]);
		state_doc_free(&d);
		if (!saved)
			rc = -ENOMEM;
	}
	if (!rc)
		rc = set_apply(saved, nsaved, cfg, &rt->pools, &rt->npools, &rt->notes, &rt->nnotes);
	set_free(saved, nsaved);
	if (rc) {
		backends_rt_free(rt);
		return rc;
	}
	for (unsigned i = 0; i < rt->nnotes; i++)
		log_notice("backends: %s", rt->notes[i].text);
	for (unsigned i = 0; i < rt->npools; i++) {
		char what[BACKENDS_NOTE_MAX];

		pool_rt_describe(&rt->pools[i], what, sizeof(what));
		log_notice("backends: upstream %s: runtime server changes restored (%s) from %s",
			   rt->pools[i].name, what, rt->state_path);
	}
	*out = rt;
	return 0;
}

void backends_rt_free(struct backends_rt *rt)
{
	if (!rt)
		return;
	next_reset(rt);
	set_free(rt->pools, rt->npools);
	drops_free(rt->notes, rt->nnotes);
	pthread_mutex_destroy(&rt->lock);
	free(rt);
}

int backends_rt_apply(struct backends_rt *rt, struct config *ncfg, char *msg, size_t msglen)
{
	int rc;

	if (!rt)
		return 0;
	pthread_mutex_lock(&rt->lock);
	next_reset(rt);
	rc = set_apply(rt->pools, rt->npools, ncfg, &rt->next, &rt->nnext, &rt->next_drops,
		       &rt->nnext_drops);
	if (!rc)
		rt->next_for = ncfg;
	pthread_mutex_unlock(&rt->lock);
	if (rc)
		snprintf(msg, msglen, "reload: runtime server changes: %s", strerror(-rc));
	return rc;
}

void backends_rt_published(struct backends_rt *rt, const struct snapshot *ns)
{
	struct backends_pool_rt *old;
	unsigned nold;
	bool changed;
	char err[512];

	if (!rt || !ns)
		return;
	pthread_mutex_lock(&rt->lock);
	if (rt->next_for != ns->cfg) {
		pthread_mutex_unlock(&rt->lock);
		return;
	}
	changed = rt->nnext_drops != 0;
	for (unsigned i = 0; i < rt->nnext_drops; i++) {
		log_notice("backends: %s", rt->next_drops[i].text);
		/* Best effort: the note is for backends list; losing it to OOM loses no state. */
		note_add(&rt->notes, &rt->nnotes, rt->next_drops[i].pool, rt->next_drops[i].text);
	}
	old = rt->pools;
	nold = rt->npools;
	rt->pools = rt->next;
	rt->npools = rt->nnext;
	rt->next = NULL;
	rt->nnext = 0;
	next_reset(rt);
	set_free(old, nold);
	pthread_mutex_unlock(&rt->lock);
	if (changed && rt_save(rt, err, sizeof(err)) && rt->health)
		log_warn("backends: runtime server changes not saved: %s", err);
}

void backends_rt_attach(struct backends_rt *rt, struct agent *a, struct reloader *r,
			struct health *h)
{
	if (!rt)
		return;
	rt->agent = a;
	rt->reloader = r;
	rt->health = h;
	if (h) {
		pthread_mutex_lock(&h->lock);
		h->rt = rt;
		pthread_mutex_unlock(&h->lock);
	}
}
/* ---- commands ----------------------------------------------------------------------- */

/* Finds pool and server from the request's "pool" and "address"; writes a reason on failure. Caller holds h->lock. */
static int find_server(struct health *h, const struct control_req *req, int *pool, int *first,
		       char *addr, char *err, size_t errlen)
{
	const struct config *cfg = h->snap->cfg;
	const char *pn = jsonr_get_str(req->j, req->args, "pool");
	const char *as = jsonr_get_str(req->j, req->args, "address");
	const char *why = "invalid";
	struct net_addr na;
	char a[NET_ADDR_STRLEN];

	if (!pn || !as) {
		snprintf(err, errlen, "need \"pool\" and \"address\"");
		return -EINVAL;
	}
	*pool = config_upstream_index(cfg, pn);
	if (*pool < 0) {
		snprintf(err, errlen, "no upstream named '%s'", pn);
		return -ENOENT;
	}
	if (net_addr_parse(as, 0, &na, &why)) {
		snprintf(err, errlen, "bad address '%s': %s", as, why);
		return -EINVAL;
	}
	/* Compare normalised forms, so "[::1]:80" and its other spellings match. */
	net_addr_format((const struct sockaddr *)&na.ss, addr, NET_ADDR_STRLEN);
	for (unsigned i = 0; i < h->snap->pools[*pool].nservers; i++)
		if (!strcmp(srv_addr(&h->snap->pools[*pool].cfg->servers[i], a), addr)) {
			*first = (int)i;
			return 0;
		}
	snprintf(err, errlen, "upstream %s has no server %s", pn, addr);
	return -ENOENT;
}

/* Breaker trip counters as flat members "<prefix>max_connections", ... (jsonw has no keyed objects). */
static void put_trips(struct jsonw *w, const char *prefix, _Atomic uint64_t *t)
{
	char key[48];

	for (unsigned k = 0; k < LB_TRIP_N; k++) {
		snprintf(key, sizeof(key), "%s%s", prefix, breaker_trip_name((enum lb_trip)k));
		jsonw_u64(w, key, atomic_load_explicit(&t[k], memory_order_relaxed));
	}
}

static void put_limits(struct jsonw *w, const char *prefix, const struct cfg_breaker *b)
{
	char key[48];
	const uint32_t v[LB_TRIP_N] = { b->max_connections, b->max_pending, b->max_requests };

	for (unsigned k = 0; k < LB_TRIP_N; k++) {
		snprintf(key, sizeof(key), "%s%s", prefix, breaker_trip_name((enum lb_trip)k));
		jsonw_u64(w, key, v[k]);
	}
}

/* One server's object members. Caller holds h->lock (for the check history). */
static void put_server(struct health *h, struct jsonw *w, unsigned p, unsigned i, uint64_t now)
{
	const struct cfg_upstream *u = h->snap->pools[p].cfg;
	struct lb_server *s = &h->snap->pools[p].servers[i];
	const struct health_track *t = &h->checks[p][i].t;
	uint32_t wrt = atomic_load_explicit(&s->weight_rt, memory_order_relaxed);
	uint64_t until = atomic_load_explicit(&s->ejected_until_ns, memory_order_relaxed);
	bool ej = atomic_load_explicit(&s->ejected, memory_order_relaxed);
	int reason = atomic_load_explicit(&s->eject_reason, memory_order_relaxed);
	char a[NET_ADDR_STRLEN];

	jsonw_str(w, "address", srv_addr(&u->servers[i], a));
	jsonw_str(w, "state", health_state_name(s));
	jsonw_bool(w, "backup", s->backup);
	jsonw_bool(w, "draining", atomic_load_explicit(&s->draining, memory_order_relaxed));
	jsonw_u64(w, "weight", wrt ? wrt : u->servers[i].weight);
	jsonw_u64(w, "config_weight", u->servers[i].weight);
	/* Pick weight (× LB_WEIGHT_SCALE) as a decimal: jsonw_ms prints n / 10^6 with three places. */
	jsonw_ms(w, "effective_weight",
		 (uint64_t)health_eff_weight(s, u->slow_start_ms, now) * (1000000 / LB_WEIGHT_SCALE));
	jsonw_bool(w, "slow_start", atomic_load_explicit(&s->ramp_start_ns, memory_order_relaxed) != 0);
	jsonw_u64(w, "active", atomic_load_explicit(&s->active, memory_order_relaxed));
	jsonw_u64(w, "connections", atomic_load_explicit(&s->conns, memory_order_relaxed));
	jsonw_u64(w, "connecting", atomic_load_explicit(&s->pending, memory_order_relaxed));
	if (u->health.type != CFG_HEALTH_NONE && t->checks) {
		jsonw_bool(w, "check_ok", t->last_ok);
		jsonw_str(w, "check_last", t->last);
		jsonw_u64(w, "check_age_ms", now > t->last_at_ns ? (now - t->last_at_ns) / 1000000 : 0);
	} else {
		jsonw_null(w, "check_ok");
		jsonw_null(w, "check_last");
		jsonw_null(w, "check_age_ms");
	}
	jsonw_u64(w, "check_successes", t->ok_streak);
	jsonw_u64(w, "check_failures", t->fail_streak);
	jsonw_u64(w, "consecutive_failures", atomic_load_explicit(&s->fails, memory_order_relaxed));
	jsonw_u64(w, "ejections", atomic_load_explicit(&s->ejections, memory_order_relaxed));
	if (reason == LB_EJECT_NONE)
		jsonw_null(w, "eject_reason");
	else
		jsonw_str(w, "eject_reason", reason == LB_EJECT_5XX ? "5xx"
					     : reason == LB_EJECT_TIMEOUT ? "timeout" : "connect");
	jsonw_u64(w, "ejected_left_ms", ej && until > now ? (until - now) / 1000000 : 0);
	put_limits(w, "limit_", &u->servers[i].limits);
	put_trips(w, "trips_", s->trips);
}

/* Is addr one of the servers added at run time to pool name? Caller holds rt->lock. */
static bool rt_added(const struct backends_rt *rt, const char *name, const struct net_addr *addr)
{
	for (unsigned i = 0; rt && i < rt->npools; i++) {
		if (strcmp(rt->pools[i].name, name))
			continue;
		for (unsigned k = 0; k < rt->pools[i].nadd; k++)
			if (addr_same(&rt->pools[i].add[k].addr, addr))
				return true;
	}
	return false;
}

/* The pool's runtime members: servers removed at run time and the last drop note. Caller holds rt->lock. */
static void put_pool_runtime(const struct backends_rt *rt, struct jsonw *w, const char *name)
{
	const char *note = NULL;
	char a[NET_ADDR_STRLEN];

	jsonw_arr_begin(w, "runtime_removed");
	for (unsigned i = 0; rt && i < rt->npools; i++)
		for (unsigned k = 0; !strcmp(rt->pools[i].name, name) && k < rt->pools[i].ndel; k++)
			jsonw_str(w, NULL, fmt_addr(&rt->pools[i].del[k], a));
	jsonw_arr_end(w);
	for (unsigned i = 0; rt && i < rt->nnotes; i++)
		if (!strcmp(rt->notes[i].pool, name))
			note = rt->notes[i].text;
	if (note)
		jsonw_str(w, "runtime_dropped", note);
	else
		jsonw_null(w, "runtime_dropped");
}

static int cmd_list(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		    size_t errlen)
{
	struct health *h = ctx;
	const char *only = jsonr_get_str(req->j, req->args, "pool");
	uint64_t now = now_ns();
	const struct config *cfg;

	/* The check thread swaps h->snap under the lock when it adopts rebuilt pools. */
	pthread_mutex_lock(&h->lock);
	cfg = h->snap->cfg;
	if (only && config_upstream_index(cfg, only) < 0) {
		pthread_mutex_unlock(&h->lock);
		snprintf(err, errlen, "no upstream named '%s'", only);
		return -ENOENT;
	}
	if (h->rt)
		pthread_mutex_lock(&h->rt->lock);
	jsonw_arr_begin(w, "pools");
	for (unsigned p = 0; p < cfg->nupstreams; p++) {
		struct lb_pool *lp = &h->snap->pools[p];
		const struct cfg_upstream *u = lp->cfg;

		if (only && strcmp(only, u->name))
			continue;
		jsonw_obj_begin(w);
		jsonw_str(w, "name", u->name);
		jsonw_str(w, "algorithm", status_algorithm_name(u->algorithm));
		jsonw_str(w, "health", u->health.type == CFG_HEALTH_HTTP ? "http"
				       : u->health.type == CFG_HEALTH_TCP ? "tcp" : "off");
		if (u->health.type == CFG_HEALTH_HTTP)
			jsonw_str(w, "health_path", u->health.path);
		jsonw_u64(w, "health_interval_ms", u->health.interval_ms);
		jsonw_bool(w, "outlier", u->outlier.consecutive_failures != 0);
		jsonw_u64(w, "ejected", atomic_load_explicit(&lp->nejected, memory_order_relaxed));
		jsonw_u64(w, "slow_start_ms", u->slow_start_ms);
		put_limits(w, "limit_", &u->limits);
		put_trips(w, "trips_", lp->trips);
		put_pool_runtime(h->rt, w, u->name);
		jsonw_arr_begin(w, "servers");
		for (unsigned i = 0; i < lp->nservers; i++) {
			jsonw_obj_begin(w);
			put_server(h, w, p, i, now);
			jsonw_str(w, "origin", rt_added(h->rt, u->name, &u->servers[i].addr) ? "runtime"
										   : "config");
			jsonw_obj_end(w);
		}
		jsonw_arr_end(w);
		jsonw_obj_end(w);
	}
	jsonw_arr_end(w);
	if (h->rt)
		pthread_mutex_unlock(&h->rt->lock);
	pthread_mutex_unlock(&h->lock);
	return 0;
}

enum change { CH_DRAIN, CH_ENABLE, CH_WEIGHT };

/* drain / enable / weight on every entry of the pool with that address; saved, then reported. */
static int change(struct health *h, const struct control_req *req, struct jsonw *w, enum change ch,
		  char *err, size_t errlen)
{
	char addr[NET_ADDR_STRLEN], a[NET_ADDR_STRLEN], why[640], name[128];
	const char *state;
	int p, first, rc;
	int64_t weight = 0;
	uint32_t active = 0, shown;
	uint64_t now = now_ns();
	bool readmitted = false;

	if (ch == CH_WEIGHT) {
		const struct jsonr_node *n = jsonr_get(req->j, req->args, "weight");

		if (!n || n->type != JSONR_NUMBER || !n->is_int || n->i < 1 || n->i > 1000) {
			snprintf(err, errlen, "\"weight\" must be an integer from 1 to 1000");
			return -EINVAL;
		}
		weight = n->i;
	}
	/* Held throughout: the check thread may swap h->snap for rebuilt pools. */
	pthread_mutex_lock(&h->lock);
	rc = find_server(h, req, &p, &first, addr, err, errlen);
	if (rc) {
		pthread_mutex_unlock(&h->lock);
		return rc;
	}
	struct lb_pool *lp = &h->snap->pools[p];
	const struct cfg_upstream *u = lp->cfg;

	for (unsigned i = (unsigned)first; i < lp->nservers; i++) {
		struct lb_server *s = &lp->servers[i];

		if (strcmp(srv_addr(&u->servers[i], a), addr))
			continue;
		switch (ch) {
		case CH_DRAIN:
			atomic_store(&s->draining, true);
			break;
		case CH_ENABLE:
			atomic_store(&s->draining, false);
			/* The operator vouches for it: a passive ejection ends too (active checks still rule). */
			if (atomic_load(&s->ejected)) {
				bool yes = true;

				if (atomic_compare_exchange_strong(&s->ejected, &yes, false)) {
					lb_counter_dec(&lp->nejected);
					atomic_store(&s->fails, 0);
					readmitted = true;
				}
			}
			break;
		case CH_WEIGHT:
			/* The configured weight itself clears the override. */
			atomic_store(&s->weight_rt, (uint32_t)weight == s->weight ? 0 : (uint32_t)weight);
			break;
		}
		atomic_store(&s->eff_weight, health_eff_weight(s, u->slow_start_ms, now));
		active += atomic_load(&s->active);
	}
	snprintf(name, sizeof(name), "%s", u->name);
	state = health_state_name(&lp->servers[first]);
	shown = atomic_load(&lp->servers[first].weight_rt);
	if (!shown)
		shown = u->servers[first].weight;
	rc = state_save(h, why, sizeof(why));
	pthread_mutex_unlock(&h->lock);
	if (rc)
		log_warn("backends: upstream %s %s: change applied but not saved: %s", name, addr, why);
	log_notice("backends: upstream %s %s: %s%s (by uid %u)", name, addr,
		   ch == CH_DRAIN ? "draining" : ch == CH_ENABLE ? "enabled" : "weight set",
		   readmitted ? ", ejection ended" : "", (unsigned)req->uid);
	jsonw_str(w, "pool", name);
	jsonw_str(w, "address", addr);
	jsonw_str(w, "state", state);
	jsonw_u64(w, "weight", ch == CH_WEIGHT ? (uint64_t)weight : shown);
	jsonw_u64(w, "active", active);
	jsonw_bool(w, "empty", active == 0);
	jsonw_bool(w, "saved", rc == 0);
	if (rc)
		jsonw_str(w, "save_error", why);
	return 0;
}

static int cmd_drain(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		     size_t errlen)
{
	return change(ctx, req, w, CH_DRAIN, err, errlen);
}

static int cmd_enable(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		      size_t errlen)
{
	return change(ctx, req, w, CH_ENABLE, err, errlen);
}

static int cmd_weight(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		      size_t errlen)
{
	return change(ctx, req, w, CH_WEIGHT, err, errlen);
}

int health_register_commands(struct health *h, struct control *c)
{
	int rc;

	if ((rc = control_register(c, "backends.list", cmd_list, h)) ||
	    (rc = control_register(c, "backends.drain", cmd_drain, h)) ||
	    (rc = control_register(c, "backends.enable", cmd_enable, h)))
		return rc;
	return control_register(c, "backends.weight", cmd_weight, h);
}

/* ---- add and remove: a new pool set, published like a reload ------------------------------ */

/* One add or remove, handed to rt_edit under the reload lock. */
struct edit_req {
	struct backends_rt *rt;
	const char *pool;
	struct net_addr addr;
	uint32_t weight;       /* add: 1..1000 */
	bool backup;           /* add: a backup server */
	bool remove;
	unsigned nservers;     /* out: servers of the pool after the change */
	uint32_t active;       /* out (remove): requests in flight on it when it was removed */
};

/* Requests in flight on addr in the live pool name (all workers), for remove's reply. */
static uint32_t live_active(struct agent *a, const char *name, const struct net_addr *addr)
{
	struct snapshot *live;
	uint32_t n = 0;
	int p;

	if (!a)
		return 0;
	live = reload_live(a);
	p = config_upstream_index(live->cfg, name);
	for (unsigned i = 0; p >= 0 && i < live->pools[p].nservers; i++)
		if (addr_same(&live->pools[p].cfg->servers[i].addr, addr))
			n += atomic_load_explicit(&live->pools[p].servers[i].active, memory_order_relaxed);
	snapshot_put(live);
	return n;
}

/*
 * Called by reload_republish with cfg, the running file parsed again: lays
 * the runtime set over it, records this change in the set being built and
 * applies it to cfg's pool. The set takes force when cfg is published.
 */
static int rt_edit(void *arg, struct config *cfg, char *msg, size_t msglen)
{
	struct edit_req *e = arg;
	struct backends_rt *rt = e->rt;
	struct cfg_upstream file_u, tmp, *u;
	struct backends_pool_rt *pr;
	int p, rc;

	for (unsigned i = 0; i < cfg->nroutes; i++)
		if (cfg->routes[i].mode != CFG_MODE_HTTP) {
			snprintf(msg, msglen, "route %s uses splice or tcp mode: its connections keep "
				 "server indices, so servers change only with a restart", cfg->routes[i].name);
			return -EPERM;
		}
	p = config_upstream_index(cfg, e->pool);
	if (p < 0) {
		snprintf(msg, msglen, "no upstream named '%s'", e->pool);
		return -ENOENT;
	}
	u = &cfg->upstreams[p];
	file_u = *u;
	file_u.servers = malloc(u->nservers * sizeof(*u->servers));
	if (!file_u.servers) {
		snprintf(msg, msglen, "out of memory");
		return -ENOMEM;
	}
	memcpy(file_u.servers, u->servers, u->nservers * sizeof(*u->servers));
	rc = backends_rt_apply(rt, cfg, msg, msglen);
	if (rc) {
		free(file_u.servers);
		return rc;
	}
	pthread_mutex_lock(&rt->lock);
	pr = set_find(rt->next, rt->nnext, e->pool);
	if (!pr) {
		struct backends_pool_rt *nn = realloc(rt->next, (rt->nnext + 1) * sizeof(*nn));

		if (nn) {
			rt->next = nn;
			pr = &nn[rt->nnext];
			memset(pr, 0, sizeof(*pr));
			pr->name = strdup(e->pool);
			pr->fp = backends_pool_fingerprint(&file_u);
			if (pr->name)
				rt->nnext++;
			else
				pr = NULL;
		}
	}
	if (!pr) {
		rc = -ENOMEM;
		snprintf(msg, msglen, "out of memory");
	} else if (e->remove) {
		rc = backends_pool_remove(pr, &file_u, u, &e->addr, msg, msglen);
	} else {
		rc = backends_pool_add(pr, &file_u, u, &e->addr, e->weight, e->backup, msg, msglen);
	}
	if (!rc) {
		/* Build the pool again from the file's servers with the changed entry. */
		tmp = file_u;
		tmp.servers = malloc(file_u.nservers * sizeof(*tmp.servers));
		if (tmp.servers)
			memcpy(tmp.servers, file_u.servers, file_u.nservers * sizeof(*tmp.servers));
		rc = tmp.servers ? backends_pool_apply(pr, &tmp, msg, msglen) : -ENOMEM;
		if (rc) {
			free(tmp.servers);
			if (rc == -ENOMEM)
				snprintf(msg, msglen, "out of memory");
		} else {
			free(u->servers);
			u->servers = tmp.servers;
			u->nservers = tmp.nservers;
			u->nbackup = tmp.nbackup;
			e->nservers = u->nservers;
		}
	}
	/* A pool back to the file's servers needs no entry. */
	if (!rc && !pr->nadd && !pr->ndel) {
		unsigned k = (unsigned)(pr - rt->next);

		backends_pool_rt_clear(pr);
		memmove(&rt->next[k], &rt->next[k + 1], (rt->nnext - k - 1) * sizeof(*rt->next));
		rt->nnext--;
	}
	pthread_mutex_unlock(&rt->lock);
	free(file_u.servers);
	if (!rc && e->remove)
		e->active = live_active(rt->agent, e->pool, &e->addr);
	return rc;
}

static int add_remove(struct backends_rt *rt, const struct control_req *req, struct jsonw *w,
		      bool remove, char *err, size_t errlen)
{
	const char *pn = jsonr_get_str(req->j, req->args, "pool");
	const char *as = jsonr_get_str(req->j, req->args, "address");
	const struct jsonr_node *wn = jsonr_get(req->j, req->args, "weight");
	const struct jsonr_node *bn = jsonr_get(req->j, req->args, "backup");
	struct edit_req e = { .rt = rt, .pool = pn, .weight = 1, .remove = remove };
	char addr[NET_ADDR_STRLEN], msg[1024], why[640];
	const char *bad = "invalid";
	int rc;

	if (!pn || !as) {
		snprintf(err, errlen, "need \"pool\" and \"address\"");
		return -EINVAL;
	}
	if (net_addr_parse(as, 0, &e.addr, &bad)) {
		snprintf(err, errlen, "bad address '%s': %s", as, bad);
		return -EINVAL;
	}
	if ((e.addr.ss.ss_family == AF_INET &&
	     ((const struct sockaddr_in *)&e.addr.ss)->sin_addr.s_addr == htonl(INADDR_ANY)) ||
	    (e.addr.ss.ss_family == AF_INET6 &&
	     IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&e.addr.ss)->sin6_addr))) {
		snprintf(err, errlen, "bad address '%s': not a server address (unspecified)", as);
		return -EINVAL;
	}
	fmt_addr(&e.addr, addr);
	if (wn) {
		if (remove || wn->type != JSONR_NUMBER || !wn->is_int || wn->i < 1 || wn->i > 1000) {
			snprintf(err, errlen, "\"weight\" must be an integer from 1 to 1000 (add only)");
			return -EINVAL;
		}
		e.weight = (uint32_t)wn->i;
	}
	if (bn) {
		if (remove || bn->type != JSONR_BOOL) {
			snprintf(err, errlen, "\"backup\" must be true or false (add only)");
			return -EINVAL;
		}
		e.backup = bn->b;
	}
	if (!rt->reloader) {
		snprintf(err, errlen, "reloading is off (see the start-up log): servers change only "
			 "with a restart");
		return -ENOTSUP;
	}
	rc = reload_republish(rt->reloader, rt_edit, &e, msg, sizeof(msg));
	if (rc) {
		snprintf(err, errlen, "%s", msg);
		return rc;
	}
	/* A new change to the pool: a note about older dropped changes no longer applies. */
	pthread_mutex_lock(&rt->lock);
	note_del(rt->notes, &rt->nnotes, pn);
	pthread_mutex_unlock(&rt->lock);
	rc = rt_save(rt, why, sizeof(why));
	if (rc)
		log_warn("backends: upstream %s %s: change applied but not saved: %s", pn, addr, why);
	if (remove)
		log_notice("backends: upstream %s %s: removed, %u in flight finish on it (by uid %u)",
			   pn, addr, e.active, (unsigned)req->uid);
	else
		log_notice("backends: upstream %s %s: added (weight %u%s) (by uid %u)", pn, addr,
			   e.weight, e.backup ? ", backup" : "", (unsigned)req->uid);
	jsonw_str(w, "pool", pn);
	jsonw_str(w, "address", addr);
	jsonw_u64(w, "servers", e.nservers);
	if (remove) {
		jsonw_u64(w, "active", e.active);
	} else {
		jsonw_u64(w, "weight", e.weight);
		jsonw_bool(w, "backup", e.backup);
	}
	jsonw_bool(w, "saved", rc == 0);
	if (rc)
		jsonw_str(w, "save_error", why);
	return 0;
}

static int cmd_add(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		   size_t errlen)
{
	return add_remove(ctx, req, w, false, err, errlen);
}

static int cmd_remove(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		      size_t errlen)
{
	return add_remove(ctx, req, w, true, err, errlen);
}

int backends_rt_register_commands(struct backends_rt *rt, struct control *c)
{
	int rc;

	if (!rt || !c)
		return 0;
	if ((rc = control_register(c, "backends.add", cmd_add, rt)))
		return rc;
	return control_register(c, "backends.remove", cmd_remove, rt);
}
