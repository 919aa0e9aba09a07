/* agent/worker.c — worker threads: io_uring loop, SO_REUSEPORT listeners, tick timer, graceful stop. */
#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "log.h"
#include "metrics.h"
#include "upgrade.h"
#include "tls_client.h"

#define RING_ENTRIES 4096
#define TICK_MS 100

struct io_uring_sqe *worker_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe;

	while (!(sqe = io_uring_get_sqe(&w->ring)))
		io_uring_submit(&w->ring);
	return sqe;
}

static void clock_update(struct worker *w)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	w->now_ns = (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
	w->now_ms = w->now_ns / 1000000;
}

int worker_listener_open(const struct cfg_listener *l)
{
	const struct sockaddr *sa = (const struct sockaddr *)&l->addr.ss;
	int one = 1, zero = 0, fd, err;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	/* "*:port" means both families, whatever the sysctl default says. */
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, sa, l->addr.len) < 0 || listen(fd, l->backlog) < 0)
		goto fail;
	return fd;
fail:
	err = -errno;
	close(fd);
	return err;
}

static void arm_accept(struct worker *w, struct wlistener *l)
{
	struct io_uring_sqe *sqe;

	if (l->armed || l->fd < 0 || w->draining)
		return;
	sqe = worker_sqe(w);
	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, op_data(l, OP_ACCEPT));
	l->armed = true;
}

static void arm_tick(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	w->tick_ts.tv_sec = 0;
	w->tick_ts.tv_nsec = TICK_MS * 1000000;
	io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, op_data(w, OP_TICK));
}

static void arm_wake(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_prep_read(sqe, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0);
	io_uring_sqe_set_data64(sqe, op_data(w, OP_WAKE));
}

static void wlistener_free(struct wlistener *l)
{
	if (l->fd >= 0)
		close(l->fd);
	free(l);
}

static void on_accept(struct worker *w, struct wlistener *l, int res, unsigned flags)
{
	if (!(flags & IORING_CQE_F_MORE))
		l->armed = false;
	if (l->removed) {
		/* Gone from the config: what was already accepted is still served. */
		if (res >= 0)
			close(res);
		if (!l->armed) {
			dlist_del(&l->node);
			wlistener_free(l);
		}
		return;
	}
	if (res >= 0) {
		proxy_accept(w, l, res);
	} else if (res != -ECANCELED) {
		static _Atomic uint64_t last_warn_ms;

		/* EMFILE and friends: say so at most once a second; the tick re-arms. */
		if (w->now_ms - atomic_load(&last_warn_ms) >= 1000) {
			atomic_store(&last_warn_ms, w->now_ms);
			log_warn("listener %s: accept: %s", w->cur->snap->cfg->listeners[l->idx].name,
				 strerror(-res));
		}
	}
	if (l->armed || l->fd < 0)
		return;
	if (w->draining) {
		close(l->fd);
		l->fd = -1;
	} else if (res >= 0) {
		arm_accept(w, l);
	}
}

static void start_drain(struct worker *w)
{
	const struct config *cfg = w->cur->snap->cfg;

	if (w->draining)
		return;
	w->draining = true;
	w->drain_deadline_ms = w->now_ms + cfg->drain_ms;
	/* Cancel the multishot accepts first: the ring holds a reference to each listening
	 * socket, so closing the fd alone would keep accepting. */
	for (unsigned i = 0; i < cfg->nlisteners; i++) {
		struct wlistener *l = w->listeners[i];

		if (l->fd < 0)
			continue;
		if (l->armed) {
			struct io_uring_sqe *sqe = worker_sqe(w);

			io_uring_prep_cancel64(sqe, op_data(l, OP_ACCEPT), 0);
			io_uring_sqe_set_data64(sqe, OP_IGNORE);
		} else {
			close(l->fd);
			l->fd = -1;
		}
	}
	proxy_drain(w);
}

static bool listeners_closed(struct worker *w)
{
	for (unsigned i = 0; i < w->cur->snap->cfg->nlisteners; i++)
		if (w->listeners[i]->fd >= 0)
			return false;
	return dlist_empty(&w->gone_listeners);
}

static void on_tick(struct worker *w)
{
	const struct config *cfg = w->cur->snap->cfg;

	proxy_tick(w);
	if (w->draining) {
		if (w->now_ms >= w->drain_deadline_ms) {
			proxy_close_all(w);
			/* Cancelled operations come back within a tick or two. */
			if (w->now_ms >= w->drain_deadline_ms + 2000)
				w->stopped = true;
		}
		if (!w->nclients && !w->nupconns && listeners_closed(w))
			w->stopped = true;
	} else {
		for (unsigned i = 0; i < cfg->nlisteners; i++)
			arm_accept(w, w->listeners[i]);
	}
	if (!w->stopped)
		arm_tick(w);
}

static int gen_new(struct worker *w, struct snapshot *snap, struct wgen **out)
{
	const struct config *cfg = snap->cfg;
	unsigned n = cfg->nupstreams;
	struct wgen *g = calloc(1, sizeof(*g));
	int err = -ENOMEM;

	if (!g)
		return -ENOMEM;
	g->snap = snap;
	g->lb = calloc(n ? n : 1, sizeof(*g->lb));
	g->upools = calloc(n ? n : 1, sizeof(*g->upools));
	if (!g->lb || !g->upools)
		goto fail;
	for (unsigned i = 0; i < n; i++) {
		err = lb_local_init(&g->lb[i], &snap->pools[i], w->rng + i);
		if (err)
			goto fail;
		err = -ENOMEM;
		g->upools[i] = calloc(cfg->upstreams[i].nservers ? cfg->upstreams[i].nservers : 1,
				      sizeof(**g->upools));
		if (!g->upools[i])
			goto fail;
		for (unsigned s = 0; s < cfg->upstreams[i].nservers; s++)
			dlist_init(&g->upools[i][s].idle);
	}
	/* Exchanges of this generation count under its own route and listener names (metrics.h). */
	err = metrics_map_new(w->metrics ? (struct metrics *)w->metrics->m : NULL, cfg, &g->mmap);
	if (err)
		goto fail;
	snapshot_get(snap);
	g->refs = 1;
	*out = g;
	return 0;
fail:
	g->snap = NULL;
	for (unsigned i = 0; g->lb && i < n; i++)
		lb_local_destroy(&g->lb[i]);
	for (unsigned i = 0; g->upools && i < n; i++)
		free(g->upools[i]);
	free(g->lb);
	free(g->upools);
	free(g);
	return err;
}

void worker_gen_put(struct worker *w, struct wgen *g)
{
	const struct config *cfg;

	if (!g || --g->refs)
		return;
	(void)w;
	cfg = g->snap->cfg;
	for (unsigned i = 0; i < cfg->nupstreams; i++) {
		lb_local_destroy(&g->lb[i]);
		for (unsigned s = 0; s < cfg->upstreams[i].nservers; s++)
			tls_client_session_free(g->upools[i][s].tls_session);
		free(g->upools[i]);
	}
	free(g->lb);
	free(g->upools);
	metrics_map_free(g->mmap);
	snapshot_put(g->snap);
	free(g);
}

static bool same_addr(const struct net_addr *a, const struct net_addr *b)
{
	return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
}

static void arm_reload(struct worker *w)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_prep_read(sqe, w->reload_fd, &w->reload_buf, sizeof(w->reload_buf), 0);
	io_uring_sqe_set_data64(sqe, op_data(w, OP_RELOAD));
}

static void publish_free(struct wpublish *p)
{
	for (unsigned i = 0; p->fds && i < p->snap->cfg->nlisteners; i++)
		if (p->fds[i] >= 0)
			close(p->fds[i]);
	free(p->fds);
	snapshot_put(p->snap);
	free(p);
}

/*
 * Switches to a published snapshot: new exchanges take it, running ones keep
 * theirs. Listeners with an address in both configs stay open (no connection
 * refused); new ones come ready-bound from the reloader; removed ones close
 * once their accept is cancelled.
 */
static void apply_reload(struct worker *w)
{
	struct wpublish *p = atomic_exchange(&w->publish, NULL);
	const struct config *ocfg = w->cur->snap->cfg, *ncfg;
	struct wlistener **nl = NULL;
	struct wgen *g = NULL, *old = w->cur;
	int err;

	if (!w->draining)
		arm_reload(w);
	if (!p)
		return;
	ncfg = p->snap->cfg;
	if (w->draining)
		goto done;
	err = gen_new(w, p->snap, &g);
	nl = calloc(ncfg->nlisteners ? ncfg->nlisteners : 1, sizeof(*nl));
	if (err || !nl) {
		log_err("worker %u: reload: %s; keeping the running configuration", w->id,
			strerror(err ? -err : ENOMEM));
		goto done;
	}
	/* Allocate first: nothing is taken from the running listeners until it cannot fail. */
	for (unsigned i = 0; i < ncfg->nlisteners; i++) {
		nl[i] = aligned_alloc(16, sizeof(**nl));
		if (!nl[i]) {
			for (unsigned k = 0; k < i; k++) {
				p->fds[k] = nl[k]->fd; /* back to the publication, which closes it */
				free(nl[k]);
			}
			log_err("worker %u: reload: out of memory; keeping the running configuration", w->id);
			goto done;
		}
		memset(nl[i], 0, sizeof(**nl));
		nl[i]->w = w;
		nl[i]->fd = p->fds[i];
		p->fds[i] = -1; /* the listener owns it now */
		dlist_init(&nl[i]->node);
	}
	for (unsigned i = 0; i < ncfg->nlisteners; i++) {
		if (nl[i]->fd >= 0)
			continue;
		for (unsigned j = 0; j < ocfg->nlisteners; j++)
			if (w->listeners[j] && same_addr(&ocfg->listeners[j].addr, &ncfg->listeners[i].addr)) {
				free(nl[i]);
				nl[i] = w->listeners[j];
				w->listeners[j] = NULL;
				break;
			}
		/* This worker missed an earlier reload: it binds its own socket. */
		if (nl[i]->fd < 0 && (nl[i]->fd = worker_listener_open(&ncfg->listeners[i])) < 0) {
			log_err("worker %u: reload: listener %s: %s", w->id, ncfg->listeners[i].name,
				strerror(-nl[i]->fd));
			nl[i]->fd = -1;
		}
	}
	for (unsigned i = 0; i < ncfg->nlisteners; i++)
		nl[i]->idx = i;
	for (unsigned j = 0; j < ocfg->nlisteners; j++) {
		struct wlistener *l = w->listeners[j];

		if (!l)
			continue;
		if (l->armed) {
			struct io_uring_sqe *sqe = worker_sqe(w);

			l->removed = true;
			dlist_add_tail(&w->gone_listeners, &l->node);
			io_uring_prep_cancel64(sqe, op_data(l, OP_ACCEPT), 0);
			io_uring_sqe_set_data64(sqe, OP_IGNORE);
		} else {
			wlistener_free(l);
		}
	}
	free(w->listeners);
	w->listeners = nl;
	nl = NULL;
	w->cur = g;
	g = NULL;
	worker_enter(w, w->cur);
	proxy_retire(w, old);
	worker_gen_put(w, old);
	for (unsigned i = 0; i < ncfg->nlisteners; i++)
		arm_accept(w, w->listeners[i]);
done:
	free(nl);
	if (g)
		worker_gen_put(w, g);
	publish_free(p);
	atomic_fetch_add_explicit(&w->reload_seq, 1, memory_order_release);
}

void worker_publish(struct worker *w, struct wpublish *p)
{
	struct wpublish *old = atomic_exchange(&w->publish, p);
	uint64_t one = 1;

	/* Not taken yet: the newer one replaces it. */
	if (old)
		publish_free(old);
	if (write(w->reload_fd, &one, sizeof(one)) < 0)
		log_warn("worker %u: cannot signal a reload: %s", w->id, strerror(errno));
}

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	enum op op = ud & OP_MASK;
	void *obj = (void *)(uintptr_t)(ud & ~OP_MASK);

	switch (op) {
	case OP_IGNORE:
		return;
	case OP_ACCEPT:
		on_accept(w, obj, cqe->res, cqe->flags);
		return;
	case OP_TICK:
		on_tick(w);
		return;
	case OP_WAKE:
		start_drain(w);
		return;
	case OP_RELOAD:
		apply_reload(w);
		return;
	default:
		proxy_complete(w, obj, op, cqe->res, cqe->flags);
		/* Events of a connection run with its own generation: back to the newest. */
		worker_enter(w, w->cur);
	}
}

static int worker_setup(struct worker *w)
{
	const struct config *cfg = w->snap->cfg;
	struct io_uring_params p = { 0 };
	int err;

	dlist_init(&w->clients);
	dlist_init(&w->dead_clients);
	dlist_init(&w->dead_ups);
	dlist_init(&w->gone_listeners);
	w->rng = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)w ^ 0x9e3779b97f4a7c15ull;
	clock_update(w);
	w->rng ^= w->now_ns;
	/*
	 * Completions run only when this worker asks for them (DEFER_TASKRUN), and
	 * only this worker submits (SINGLE_ISSUER): the cheapest mode, 6.1+. The
	 * ring starts disabled so that the worker thread, not this one, becomes its
	 * submitter. Older kernels get the plainer modes; all are optimisations.
	 */
	static const unsigned modes[] = {
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
			IORING_SETUP_R_DISABLED,
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
		0,
	};
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = modes[i];
		err = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
		if (err == 0) {
			w->ring_disabled = modes[i] & IORING_SETUP_R_DISABLED;
			break;
		}
	}
	if (err < 0) {
		log_err("worker %u: io_uring: %s", w->id, strerror(-err));
		return err;
	}
	err = gen_new(w, w->snap, &w->cur);
	if (err)
		return err;
	worker_enter(w, w->cur);
	w->listeners = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*w->listeners));
	if (!w->listeners)
		return -ENOMEM;
	for (unsigned i = 0; i < cfg->nlisteners; i++) {
		struct wlistener *l = aligned_alloc(16, sizeof(*l));
		char addr[NET_ADDR_STRLEN];

		if (!l)
			return -ENOMEM;
		memset(l, 0, sizeof(*l));
		w->listeners[i] = l;
		l->w = w;
		l->idx = i;
		dlist_init(&l->node);
		/* Binary upgrade: the old clawd's socket for this address, else a new one. */
		l->fd = upgrade_take_listener(&cfg->listeners[i], w->id);
		if (l->fd < 0)
			l->fd = worker_listener_open(&cfg->listeners[i]);
		if (l->fd < 0) {
			log_err("listener %s %s: %s", cfg->listeners[i].name,
				net_addr_format((const struct sockaddr *)&cfg->listeners[i].addr.ss,
						addr, sizeof(addr)),
				strerror(-l->fd));
			return l->fd;
		}
	}
	w->reload_fd = eventfd(0, EFD_CLOEXEC);
	if (w->reload_fd < 0)
		return -errno;
	w->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (w->wake_fd < 0)
		return -errno;
	return 0;
}

static void worker_teardown(struct worker *w)
{
	struct wpublish *p = atomic_exchange(&w->publish, NULL);

	if (p)
		publish_free(p);
	if (w->listeners)
		for (unsigned i = 0; w->cur && i < w->cur->snap->cfg->nlisteners; i++)
			if (w->listeners[i])
				wlistener_free(w->listeners[i]);
	while (!dlist_empty(&w->gone_listeners)) {
		struct wlistener *l = dlist_entry(w->gone_listeners.next, struct wlistener, node);

		dlist_del(&l->node);
		wlistener_free(l);
	}
	free(w->listeners);
	w->listeners = NULL;
	if (w->cur)
		worker_gen_put(w, w->cur);
	w->cur = w->gen = NULL;
	if (w->ring.ring_fd > 0)
		io_uring_queue_exit(&w->ring);
	if (w->wake_fd > 0)
		close(w->wake_fd);
	if (w->reload_fd > 0)
		close(w->reload_fd);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct config *cfg = w->snap->cfg;

	if (w->ring_disabled) {
		/* liburing 2.3 declares io_uring_enable_rings but does not export it. */
		if (syscall(__NR_io_uring_register, w->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS,
			    NULL, 0) < 0) {
			log_err("worker %u: io_uring enable: %s", w->id, strerror(errno));
			return NULL;
		}
	}
	for (unsigned i = 0; i < cfg->nlisteners; i++)
		arm_accept(w, w->listeners[i]);
	arm_tick(w);
	arm_wake(w);
	arm_reload(w);
	while (!w->stopped) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		int err = io_uring_submit_and_wait(&w->ring, 1);

		if (err < 0 && err != -EINTR && err != -EBUSY && err != -EAGAIN) {
			log_err("worker %u: io_uring_submit: %s", w->id, strerror(-err));
			break;
		}
		clock_update(w);
		io_uring_for_each_cqe(&w->ring, head, cqe) {
			dispatch(w, cqe);
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
		proxy_reap(w);
	}
	return NULL;
}

int workers_start(struct worker_set *ws, struct snapshot *snap, unsigned n, struct alog *alog)
{
	int err = 0;

	/* Aligned: the worker's address is tagged with an operation in io_uring user_data. */
	ws->workers = aligned_alloc(64, n * sizeof(*ws->workers));
	if (!ws->workers)
		return -ENOMEM;
	memset(ws->workers, 0, n * sizeof(*ws->workers));
	ws->n = 0;
	/* Set every worker up before any runs, so a bind failure stops start-up cleanly. */
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &ws->workers[i];

		w->id = i;
		w->snap = snap; /* worker_setup builds the first generation on it */
		w->wake_fd = -1;
		w->reload_fd = -1;
		w->alog = alog ? alog_ring(alog, i) : NULL;
		w->metrics = metrics_worker(ws->metrics, i);
		ws->n++;
		err = worker_setup(w);
		if (err)
			goto fail;
	}
	for (unsigned i = 0; i < n; i++) {
		err = -pthread_create(&ws->workers[i].thread, NULL, worker_main, &ws->workers[i]);
		if (err) {
			/* Workers already running are told to stop; the rest never started. */
			for (unsigned j = 0; j < i; j++) {
				uint64_t one = 1;

				if (write(ws->workers[j].wake_fd, &one, sizeof(one)) < 0)
					continue;
			}
			for (unsigned j = 0; j < i; j++)
				pthread_join(ws->workers[j].thread, NULL);
			goto fail;
		}
	}
	return 0;
fail:
	for (unsigned i = 0; i < ws->n; i++)
		worker_teardown(&ws->workers[i]);
	free(ws->workers);
	ws->workers = NULL;
	ws->n = 0;
	return err;
}

void workers_stop(struct worker_set *ws)
{
	for (unsigned i = 0; i < ws->n; i++) {
		uint64_t one = 1;

		if (write(ws->workers[i].wake_fd, &one, sizeof(one)) < 0)
			log_warn("worker %u: cannot signal stop: %s", i, strerror(errno));
	}
	for (unsigned i = 0; i < ws->n; i++) {
		pthread_join(ws->workers[i].thread, NULL);
		worker_teardown(&ws->workers[i]);
	}
	free(ws->workers);
	ws->workers = NULL;
	ws->n = 0;
}
