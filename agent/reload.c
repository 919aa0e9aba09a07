/* agent/reload.c — live configuration reload: load and validate, refuse what cannot change live, build and publish a snapshot. */
#include "reload.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "backends.h"
#include "config.h"
#include "control.h"
#include "fileio.h"
#include "gate.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "sdnotify.h"
#include "tls.h"
#include "worker.h"

#define RELOAD_FILE_MAX (16u << 20)  /* the same cap config_load has */
#define RELOAD_ACK_MS 2000           /* how long we wait for every worker to switch */

struct reloader {
	struct agent *a;
	struct reload_fixed fx;
	pthread_mutex_t lock;  /* one reload at a time (SIGHUP and the control socket) */
	char *text;            /* the live file's text: which top-level sections changed */
	size_t text_len;
};

/*
 * A top-level section's text: from its "key:" line at column 0 to the next
 * one, without blank or comment-only lines, so comments and blank lines do not
 * count as a change. NULL (and 0) when the key is absent.
 */
static char *section(const char *text, size_t len, const char *key, size_t *out_len)
{
	size_t klen = strlen(key), cap = 0, n = 0;
	const char *p = text, *end = text + len;
	bool in = false;
	char *out = NULL;

	*out_len = 0;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *q = p;
		size_t l;

		if (!eol)
			eol = end;
		l = (size_t)(eol - p);
		if (l && (p[0] == '_' || (p[0] | 0x20) >= 'a') && (p[0] | 0x20) <= 'z')
			in = l > klen && !memcmp(p, key, klen) && (p[klen] == ':' || p[klen] == ' ');
		while (q < eol && (*q == ' ' || *q == '\t' || *q == '\r'))
			q++;
		if (in && q < eol && *q != '#') {
			while (l && (p[l - 1] == ' ' || p[l - 1] == '\t' || p[l - 1] == '\r'))
				l--;
			if (n + l + 2 > cap) {
				char *nb = realloc(out, cap = (n + l + 2) * 2);

				if (!nb) {
					free(out);
					return NULL;
				}
				out = nb;
			}
			memcpy(out + n, p, l);
			n += l;
			out[n++] = '\n';
			out[n] = '\0';
		}
		p = eol + 1;
	}
	*out_len = n;
	return out;
}

static bool section_changed(const struct reloader *r, const char *ntext, size_t nlen,
			    const char *key)
{
	size_t ol, nl;
	char *o = section(r->text, r->text_len, key, &ol);
	char *n = section(ntext, nlen, key, &nl);
	bool changed = ol != nl || (ol && memcmp(o, n, ol));

	free(o);
	free(n);
	return changed;
}

static bool uses_splice(const struct config *cfg)
{
	for (unsigned i = 0; i < cfg->nroutes; i++)
		if (cfg->routes[i].mode != CFG_MODE_HTTP)
			return true;
	return false;
}

/*
 * Sections whose modules were set up once at start-up (docs/operations.md):
 * a change to them is refused with the reason, the running config kept.
 */
static int check_fixed(struct reloader *r, const struct config *ocfg, const struct config *ncfg,
		       const char *ntext, size_t nlen, char *msg, size_t msglen)
{
	static const struct { const char *key, *who; } fixed[] = {
		{ "workers", "worker threads" },
		{ "pid_file", "the pid file" },
		{ "access_log", "the access log" },
		{ "control", "the control socket" },
		{ "state_dir", "the state directory" },
		{ "guard", "the packet guard" },
		{ "admin", "the admin listener and metrics" },
		{ "splice", "the sockmap splice" },
		{ "limits", "connection buffers" },
	};

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (section_changed(r, ntext, nlen, fixed[i].key)) {
			snprintf(msg, msglen, "reload: %s section changed (%s); restart to apply",
				 fixed[i].key, fixed[i].who);
			return -EPERM;
		}
	/* Without the gate (it failed to start) a route with auth or limits could only answer 503. */
	if (!r->fx.gate) {
		for (unsigned i = 0; i < ncfg->nroutes; i++)
			if (ncfg->routes[i].auth.type != CFG_AUTH_NONE || ncfg->routes[i].nrate_limits ||
			    ncfg->ntiers) {
				snprintf(msg, msglen, "reload: route %s has auth or rate limits but the "
					 "admission gate is not running; restart to apply",
					 ncfg->routes[i].name);
				return -EPERM;
			}
	}
	/*
	 * Spliced connections keep the generation they started with (splice.c),
	 * so routes may change under them; but the verdict program is loaded at
	 * start-up only when a route needs it.
	 */
	if (!uses_splice(ocfg) && uses_splice(ncfg)) {
		snprintf(msg, msglen, "reload: a route now uses splice or tcp mode and the splice "
			 "program was not loaded at start-up; restart to apply");
		return -EPERM;
	}
	return 0;
}

static bool same_addr(const struct net_addr *a, const struct net_addr *b)
{
	return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
}

static void fds_close(int **fds, unsigned nworkers, unsigned nl)
{
	for (unsigned w = 0; fds && w < nworkers; w++) {
		for (unsigned i = 0; fds[w] && i < nl; i++)
			if (fds[w][i] >= 0)
				close(fds[w][i]);
		free(fds[w]);
	}
	free(fds);
}

/*
 * New listeners are bound here, one SO_REUSEPORT socket per worker, before
 * anything is published: a bind error fails the reload with nothing changed.
 * fds[worker][listener] is -1 where the address is already open.
 */
static int open_listeners(const struct config *ocfg, const struct config *ncfg, unsigned nworkers,
			  int ***out, unsigned *opened, char *msg, size_t msglen)
{
	int **fds = calloc(nworkers ? nworkers : 1, sizeof(*fds));

	*opened = 0;
	if (!fds)
		goto nomem;
	for (unsigned w = 0; w < nworkers; w++) {
		fds[w] = malloc((ncfg->nlisteners ? ncfg->nlisteners : 1) * sizeof(**fds));
		if (!fds[w])
			goto nomem;
		for (unsigned i = 0; i < ncfg->nlisteners; i++)
			fds[w][i] = -1;
	}
	for (unsigned i = 0; i < ncfg->nlisteners; i++) {
		bool kept = false;

		for (unsigned j = 0; j < ocfg->nlisteners && !kept; j++)
			kept = same_addr(&ocfg->listeners[j].addr, &ncfg->listeners[i].addr);
		if (kept)
			continue;
		(*opened)++;
		for (unsigned w = 0; w < nworkers; w++) {
			int fd = worker_listener_open(&ncfg->listeners[i]);

			if (fd < 0) {
				char addr[NET_ADDR_STRLEN];

				snprintf(msg, msglen, "reload: listener %s %s: %s", ncfg->listeners[i].name,
					 net_addr_format((const struct sockaddr *)&ncfg->listeners[i].addr.ss,
							 addr, sizeof(addr)),
					 strerror(-fd));
				fds_close(fds, nworkers, ncfg->nlisteners);
				return fd;
			}
			fds[w][i] = fd;
		}
	}
	*out = fds;
	return 0;
nomem:
	fds_close(fds, nworkers, ncfg->nlisteners);
	snprintf(msg, msglen, "reload: out of memory");
	return -ENOMEM;
}

struct snapshot *reload_live(struct agent *a)
{
	struct snapshot *s;

	pthread_mutex_lock(&a->live_lock);
	s = a->live;
	snapshot_get(s);
	pthread_mutex_unlock(&a->live_lock);
	return s;
}

static void wait_workers(struct worker_set *ws, const uint64_t *before)
{
	struct timespec ts = { 0, 1000000 };

	for (unsigned waited = 0; waited < RELOAD_ACK_MS; waited++) {
		unsigned done = 0;

		for (unsigned i = 0; i < ws->n; i++)
			done += atomic_load_explicit(&ws->workers[i].reload_seq, memory_order_acquire) !=
				before[i];
		if (done == ws->n)
			return;
		nanosleep(&ts, NULL);
	}
	log_warn("reload: not every worker switched within %u ms; they will when they can",
		 RELOAD_ACK_MS);
}

/* A reload (edit NULL: the file read again) or a runtime server change (edit: the running text). */
static int reload_build(struct reloader *r, reload_edit_fn edit, void *arg, char *msg, size_t msglen)
{
	struct agent *a = r->a;
	struct worker_set *ws = a->workers;
	struct snapshot *old = a->live, *ns = NULL;
	const struct config *ocfg = old->cfg;
	struct config *ncfg = NULL;
	char *text = NULL;
	size_t len = 0;
	int **fds = NULL;
	struct tls_reg *tls = NULL;
	uint64_t *before = NULL;
	unsigned opened = 0, closed = 0, nl = 0;
	bool share;
	int rc;

	if (!edit) {
		rc = fileio_read(a->config_path, RELOAD_FILE_MAX, 0, &text, &len, NULL, msg, msglen);
	} else if (!r->text || !(text = strndup(r->text, r->text_len))) {
		snprintf(msg, msglen, "the running file's text is not known (see the start-up log); "
			 "reload first");
		rc = -ENODATA;
	} else {
		len = r->text_len;
		rc = 0;
	}
	if (rc)
		return rc;
	rc = config_load_string(text, len, a->config_path, &ncfg, msg, msglen);
	if (rc)
		goto out;
	if ((rc = check_fixed(r, ocfg, ncfg, text, len, msg, msglen)))
		goto out;
	/* Runtime server changes over the file's pools: the edit's, or those in force (backends.h). */
	if ((rc = edit ? edit(arg, ncfg, msg, msglen) : backends_rt_apply(r->fx.brt, ncfg, msg, msglen)))
		goto out;
	/*
	 * Every certificate and key read again (files may have changed in place): all or
	 * nothing. A runtime server change keeps the running file, so its view stays.
	 */
	if (!edit && old->tls && (rc = tls_rebuild(old->tls, ncfg, &tls, msg, msglen))) {
		size_t l = strlen(msg);

		if (l + 40 < msglen)
			snprintf(msg + l, msglen - l, "; the running certificates stay");
		goto out;
	}
	nl = ncfg->nlisteners;
	rc = open_listeners(ocfg, ncfg, ws->n, &fds, &opened, msg, msglen);
	if (rc)
		goto out;
	for (unsigned j = 0; j < ocfg->nlisteners; j++) {
		bool kept = false;

		for (unsigned i = 0; i < ncfg->nlisteners && !kept; i++)
			kept = same_addr(&ocfg->listeners[j].addr, &ncfg->listeners[i].addr);
		closed += !kept;
	}
	/* Same upstreams text: the same pools, so health, drains and breakers go on untouched. */
	share = !edit && !section_changed(r, text, len, "upstreams");
	before = calloc(ws->n ? ws->n : 1, sizeof(*before));
	if (!before) {
		rc = -ENOMEM;
		snprintf(msg, msglen, "reload: out of memory");
		goto out;
	}
	rc = snapshot_create_from(ncfg, old, share, &ns);
	if (rc) {
		snprintf(msg, msglen, "reload: %s", strerror(-rc));
		goto out;
	}
	ncfg = NULL; /* the snapshot owns it */
	/* Auth, limits and tiers follow the new routes (gate.h); from here on nothing can fail. */
	if (r->fx.gate && (rc = gate_reload(r->fx.gate, ns->cfg, msg, msglen))) {
		snapshot_put(ns);
		ns = NULL;
		goto out;
	}
	if (tls) {
		tls_put(ns->tls);
		ns->tls = tls; /* the snapshot's reference */
		tls = NULL;
		tls_publish(ns->tls);
	}
	for (unsigned i = 0; i < ws->n; i++) {
		struct wpublish *p = calloc(1, sizeof(*p));

		before[i] = atomic_load_explicit(&ws->workers[i].reload_seq, memory_order_acquire);
		if (!p) {
			/* That worker keeps the old config; it binds its own sockets on the next reload. */
			log_err("reload: worker %u: out of memory; it keeps the running configuration", i);
			before[i] = UINT64_MAX;
			continue;
		}
		snapshot_get(ns);
		p->snap = ns;
		p->fds = fds[i];
		fds[i] = NULL;
		worker_publish(&ws->workers[i], p);
	}
	for (unsigned i = 0; i < ws->n; i++)
		if (before[i] == UINT64_MAX)
			before[i] = atomic_load(&ws->workers[i].reload_seq) - 1;
	wait_workers(ws, before);
	pthread_mutex_lock(&a->live_lock);
	a->live = ns;
	pthread_mutex_unlock(&a->live_lock);
	snapshot_put(old);
	free(r->text);
	r->text = text;
	r->text_len = len;
	text = NULL;
	if (!edit) {
		__atomic_store_n(&a->loaded_at, (uint64_t)time(NULL), __ATOMIC_RELAXED);
		atomic_fetch_add(&a->reloads, 1);
	}
	/* The check thread moves to the new pools; the runtime server set built into them takes force. */
	health_adopt(r->fx.health, ns);
	backends_rt_published(r->fx.brt, ns);
	snprintf(msg, msglen, "%s reloaded: %u listeners, %u routes, %u upstreams (%s); "
		 "%u listeners opened, %u closed", a->config_path, ns->cfg->nlisteners,
		 ns->cfg->nroutes, ns->cfg->nupstreams, share ? "pools kept" : "pools rebuilt",
		 opened, closed);
out:
	if (fds)
		fds_close(fds, ws->n, nl);
	free(before);
	tls_put(tls);
	config_free(ncfg);
	free(text);
	return rc;
}

static int reload_locked(struct reloader *r, char *msg, size_t msglen)
{
	return reload_build(r, NULL, NULL, msg, msglen);
}

int reload_republish(struct reloader *r, reload_edit_fn edit, void *arg, char *msg, size_t msglen)
{
	int rc;

	pthread_mutex_lock(&r->lock);
	rc = reload_build(r, edit, arg, msg, msglen);
	pthread_mutex_unlock(&r->lock);
	return rc;
}

int reload_run(struct reloader *r, char *msg, size_t msglen)
{
	int rc;

	pthread_mutex_lock(&r->lock);
	rc = reload_locked(r, msg, msglen);
	pthread_mutex_unlock(&r->lock);
	if (rc) {
		atomic_fetch_add(&r->a->reload_failures, 1);
		log_err("reload refused, the running configuration stays: %s", msg);
	} else {
		log_notice("%s", msg);
	}
	return rc;
}

static int cmd_reload(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		      size_t errlen)
{
	struct reloader *r = ctx;
	char msg[1024];
	int rc;

	(void)req;
	/* systemd hears of it as of a SIGHUP: a refused reload keeps serving, so READY=1 either way. */
	sdnotify_reloading();
	rc = reload_run(r, msg, sizeof(msg));
	sdnotify_ready();
	if (rc) {
		snprintf(err, errlen, "%s", msg);
		return rc;
	}
	jsonw_str(w, "message", msg);
	jsonw_u64(w, "reloads", atomic_load(&r->a->reloads));
	return 0;
}

int reload_register_commands(struct reloader *r, struct control *c)
{
	return control_register(c, "reload", cmd_reload, r);
}

static void collect(void *ctx, struct metrics_out *o)
{
	struct reloader *r = ctx;

	metrics_family(o, "openclaw_config_reloads_total", "counter",
		       "Configuration reloads applied (SIGHUP, clawctl reload).");
	metrics_sample_u64(o, "openclaw_config_reloads_total", NULL, atomic_load(&r->a->reloads));
	metrics_family(o, "openclaw_config_reload_failures_total", "counter",
		       "Configuration reloads refused; the running configuration stayed.");
	metrics_sample_u64(o, "openclaw_config_reload_failures_total", NULL,
			   atomic_load(&r->a->reload_failures));
}

int reload_register_metrics(struct reloader *r, struct metrics *m)
{
	return m ? metrics_register(m, collect, r) : 0;
}

int reload_create(struct reloader **out, struct agent *a, const struct reload_fixed *fx)
{
	struct reloader *r = calloc(1, sizeof(*r));
	char err[512];
	int rc;

	if (!r)
		return -ENOMEM;
	rc = fileio_read(a->config_path, RELOAD_FILE_MAX, 0, &r->text, &r->text_len, NULL, err,
			 sizeof(err));
	if (rc) {
		log_warn("reload: %s: every section will count as changed", err);
		r->text = NULL;
		r->text_len = 0;
	}
	r->a = a;
	r->fx = *fx;
	pthread_mutex_init(&r->lock, NULL);
	*out = r;
	return 0;
}

void reload_hold(struct reloader *r)
{
	pthread_mutex_lock(&r->lock);
}

void reload_release(struct reloader *r)
{
	pthread_mutex_unlock(&r->lock);
}

void reload_free(struct reloader *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r->text);
	free(r);
}
