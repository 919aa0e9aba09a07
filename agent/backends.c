/* agent/backends.c — the backends.* control commands (list, drain, enable, weight) and <state_dir>/backends.json that keeps drain and weight across restarts. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "breaker.h"
#include "health_int.h"
#include "jsonr.h"
#include "jsonw.h"
#include "log.h"
#include "netaddr.h"
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

/* ---- backends.json --------------------------------------------------------------- */

/*
 * Writes every server with a runtime change: pool, address, the configured
 * weight it was made against (so a later config edit of that server wins),
 * the runtime weight (0 = none) and the drain flag. Atomic: temp file, fsync,
 * rename. Caller holds h->lock.
 */
static int state_save(struct health *h, char *err, size_t errlen)
{
	const struct config *cfg = h->snap->cfg;
	size_t cap = 4096;
	char tmp[272], a[NET_ADDR_STRLEN];
	struct jsonw w;
	char *buf;
	long len;
	int fd, rc = 0;

	for (unsigned p = 0; p < cfg->nupstreams; p++)
		cap += (size_t)cfg->upstreams[p].nservers * (200 + 2 * strlen(cfg->upstreams[p].name));
	buf = malloc(cap);
	if (!buf) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	jsonw_init(&w, buf, cap);
	jsonw_obj_begin(&w);
	jsonw_u64(&w, "version", STATE_VERSION);
	jsonw_arr_begin(&w, "servers");
	for (unsigned p = 0; p < cfg->nupstreams; p++) {
		const struct cfg_upstream *u = &cfg->upstreams[p];

		for (unsigned i = 0; i < u->nservers; i++) {
			struct lb_server *s = &h->snap->pools[p].servers[i];
			uint32_t wrt = atomic_load_explicit(&s->weight_rt, memory_order_relaxed);
			bool dr = atomic_load_explicit(&s->draining, memory_order_relaxed);

			if (!wrt && !dr)
				continue;
			jsonw_obj_begin(&w);
			jsonw_str(&w, "pool", u->name);
			jsonw_str(&w, "address", srv_addr(&u->servers[i], a));
			jsonw_u64(&w, "config_weight", u->servers[i].weight);
			jsonw_u64(&w, "weight", wrt);
			jsonw_bool(&w, "drain", dr);
			jsonw_obj_end(&w);
		}
	}
	jsonw_arr_end(&w);
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

void health_state_load(struct health *h)
{
	const struct config *cfg = h->snap->cfg;
	struct jsonr_node *nodes = NULL;
	char *text = NULL, *strbuf = NULL;
	const struct jsonr_node *e;
	struct jsonr j;
	struct stat st;
	ssize_t n;
	size_t len = 0;
	int fd;

	fd = open(h->state_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warn("backends: %s: %s (runtime drain/weight changes not restored)",
				 h->state_path, strerror(errno));
		return;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > STATE_MAX_BYTES) {
		log_warn("backends: %s: not a regular file of at most 4 MiB; ignored", h->state_path);
		close(fd);
		return;
	}
	text = malloc((size_t)st.st_size + 1);
	strbuf = malloc((size_t)st.st_size + 1);
	nodes = calloc((size_t)st.st_size / 2 + 16, sizeof(*nodes));
	while (text && (n = read(fd, text + len, (size_t)st.st_size - len)) > 0)
		len += (size_t)n;
	close(fd);
	if (!text || !strbuf || !nodes) {
		log_warn("backends: %s: out of memory; ignored", h->state_path);
		goto out;
	}
	if (jsonr_parse(&j, text, len, nodes, (uint32_t)(st.st_size / 2 + 16), strbuf, len + 1) ||
	    jsonr_get_int(&j, &j.nodes[0], "version", 0) != STATE_VERSION) {
		log_warn("backends: %s: unreadable or of another version; ignored", h->state_path);
		goto out;
	}
	for (e = jsonr_child(&j, jsonr_get(&j, &j.nodes[0], "servers")); e; e = jsonr_next(&j, e)) {
		const char *pool = jsonr_get_str(&j, e, "pool"), *addr = jsonr_get_str(&j, e, "address");
		int64_t cw = jsonr_get_int(&j, e, "config_weight", -1);
		int64_t wrt = jsonr_get_int(&j, e, "weight", 0);
		const struct jsonr_node *dn = jsonr_get(&j, e, "drain");
		bool dr = dn && dn->type == JSONR_BOOL && dn->b;
		int p = pool ? config_upstream_index(cfg, pool) : -1;
		bool found = false;
		char a[NET_ADDR_STRLEN];

		if (p < 0 || !addr || wrt < 0 || wrt > 1000)
			continue;
		for (unsigned i = 0; i < cfg->upstreams[p].nservers; i++) {
			const struct cfg_server *cs = &cfg->upstreams[p].servers[i];
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
			atomic_store(&s->eff_weight,
				     health_eff_weight(s, cfg->upstreams[p].slow_start_ms, now_ns()));
			log_notice("backends: upstream %s %s: restored%s%s (from %s)", pool, addr,
				   dr ? " drain" : "", wrt ? " weight" : "", h->state_path);
		}
		if (!found)
			log_notice("backends: upstream %s %s: no longer in the config; saved state dropped",
				   pool, addr);
	}
out:
	free(text);
	free(strbuf);
	free(nodes);
}

/* ---- commands ----------------------------------------------------------------------- */

/* Finds pool and server from the request's "pool" and "address"; writes a reason on failure. */
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
	for (unsigned i = 0; i < cfg->upstreams[*pool].nservers; i++)
		if (!strcmp(srv_addr(&cfg->upstreams[*pool].servers[i], a), addr)) {
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
	const struct cfg_upstream *u = &h->snap->cfg->upstreams[p];
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

static int cmd_list(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		    size_t errlen)
{
	struct health *h = ctx;
	const struct config *cfg = h->snap->cfg;
	const char *only = jsonr_get_str(req->j, req->args, "pool");
	uint64_t now = now_ns();

	if (only && config_upstream_index(cfg, only) < 0) {
		snprintf(err, errlen, "no upstream named '%s'", only);
		return -ENOENT;
	}
	jsonw_arr_begin(w, "pools");
	pthread_mutex_lock(&h->lock);
	for (unsigned p = 0; p < cfg->nupstreams; p++) {
		const struct cfg_upstream *u = &cfg->upstreams[p];
		struct lb_pool *lp = &h->snap->pools[p];

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
		jsonw_arr_begin(w, "servers");
		for (unsigned i = 0; i < u->nservers; i++) {
			jsonw_obj_begin(w);
			put_server(h, w, p, i, now);
			jsonw_obj_end(w);
		}
		jsonw_arr_end(w);
		jsonw_obj_end(w);
	}
	pthread_mutex_unlock(&h->lock);
	jsonw_arr_end(w);
	return 0;
}

enum change { CH_DRAIN, CH_ENABLE, CH_WEIGHT };

/* drain / enable / weight on every entry of the pool with that address; saved, then reported. */
static int change(struct health *h, const struct control_req *req, struct jsonw *w, enum change ch,
		  char *err, size_t errlen)
{
	const struct config *cfg = h->snap->cfg;
	char addr[NET_ADDR_STRLEN], a[NET_ADDR_STRLEN], why[640];
	int p, first, rc;
	int64_t weight = 0;
	uint32_t active = 0;
	uint64_t now = now_ns();
	bool readmitted = false;

	rc = find_server(h, req, &p, &first, addr, err, errlen);
	if (rc)
		return rc;
	if (ch == CH_WEIGHT) {
		const struct jsonr_node *n = jsonr_get(req->j, req->args, "weight");

		if (!n || n->type != JSONR_NUMBER || !n->is_int || n->i < 1 || n->i > 1000) {
			snprintf(err, errlen, "\"weight\" must be an integer from 1 to 1000");
			return -EINVAL;
		}
		weight = n->i;
	}
	pthread_mutex_lock(&h->lock);
	for (unsigned i = (unsigned)first; i < cfg->upstreams[p].nservers; i++) {
		struct lb_pool *lp = &h->snap->pools[p];
		struct lb_server *s = &lp->servers[i];

		if (strcmp(srv_addr(&cfg->upstreams[p].servers[i], a), addr))
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
		atomic_store(&s->eff_weight, health_eff_weight(s, cfg->upstreams[p].slow_start_ms, now));
		active += atomic_load(&s->active);
	}
	rc = state_save(h, why, sizeof(why));
	pthread_mutex_unlock(&h->lock);
	if (rc)
		log_warn("backends: upstream %s %s: change applied but not saved: %s",
			 cfg->upstreams[p].name, addr, why);
	log_notice("backends: upstream %s %s: %s%s (by uid %u)", cfg->upstreams[p].name, addr,
		   ch == CH_DRAIN ? "draining" : ch == CH_ENABLE ? "enabled" : "weight set",
		   readmitted ? ", ejection ended" : "", (unsigned)req->uid);
	jsonw_str(w, "pool", cfg->upstreams[p].name);
	jsonw_str(w, "address", addr);
	jsonw_str(w, "state", health_state_name(&h->snap->pools[p].servers[first]));
	jsonw_u64(w, "weight", ch == CH_WEIGHT ? (uint64_t)weight
			       : (atomic_load(&h->snap->pools[p].servers[first].weight_rt)
					  ? atomic_load(&h->snap->pools[p].servers[first].weight_rt)
					  : cfg->upstreams[p].servers[first].weight));
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
