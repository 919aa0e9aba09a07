/* agent/worker.h — worker threads: one io_uring each, their listeners, connections and timers. */
#ifndef OPENCLAW_WORKER_H
#define OPENCLAW_WORKER_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "http1.h"
#include "lb.h"
#include "list.h"

struct alog;
struct alog_ring;
struct guard;
struct gate;
struct metrics;
struct metrics_worker;
struct metrics_map;
struct tls_reg;

/* An immutable published configuration with its shared balancer state. */
struct snapshot {
	struct config *cfg;
	struct lb_pool *pools;  /* one per cfg->upstreams entry (maybe borrowed from pools_owner) */
	char ***server_names;   /* [pool][server] "ip:port", for logs */
	struct tls_reg *tls;    /* its TLS view (tls.h): a reference, put with the snapshot; NULL before tls_start */
	struct snapshot *pools_owner; /* reload with unchanged upstreams: pools and names are its (a reference is held) */
	_Atomic int refs;       /* holders: the publisher, each worker generation using it */
};

/* Builds a snapshot owning cfg (on failure cfg is left to the caller). */
int snapshot_create(struct config *cfg, struct snapshot **out);
/*
 * For a reload: like snapshot_create, but when share_pools the balancer state
 * of old is used as it is (same pools, same servers); otherwise new pools are
 * built and each server present in both (same pool name and address) starts
 * with old's health, ejection, drain and weight state.
 */
int snapshot_create_from(struct config *cfg, struct snapshot *old, bool share_pools,
			 struct snapshot **out);
/* The server of pool p with the same address as server s of q, or -1. */
int snapshot_server_match(const struct lb_pool *p, const struct lb_pool *q, unsigned s);
void snapshot_get(struct snapshot *s);
void snapshot_put(struct snapshot *s);

/* io_uring user_data = object pointer | operation (objects are 16-byte aligned). */
enum op {
	OP_IGNORE = 0,  /* completions nobody waits for (linked timeouts, cancels) */
	OP_ACCEPT,
	OP_CLIENT_RECV,
	OP_CLIENT_SEND,
	OP_UP_CONNECT,
	OP_UP_RECV,
	OP_UP_SEND,
	OP_TICK,
	OP_WAKE,
	OP_SPLICE,      /* splice.c: user_data points at a struct splice_io */
	OP_RELOAD,      /* the reload eventfd: a new snapshot is waiting in worker.publish */
	OP_RETRY,       /* proxy.c: a client's retry backoff timer (retry.h) */
};
#define OP_MASK 0xfull

/* Per-worker listening socket (SO_REUSEPORT: each worker has its own). */
struct wlistener {
	struct worker *w;
	int fd;
	unsigned idx;   /* index in the current cfg->listeners */
	bool armed;     /* a multishot accept is outstanding */
	bool removed;   /* gone from the config by a reload: closed once its accept is cancelled */
	struct dlist node; /* in worker.gone_listeners once removed */
} __attribute__((aligned(16)));

/*
 * What a worker uses for one published snapshot: the snapshot and the
 * per-worker state sized by it. A client takes the current generation when an
 * exchange starts and keeps it to the exchange's end; an upstream connection
 * keeps the one it was opened with. Freed by its worker when unused.
 */
struct wgen {
	struct snapshot *snap;
	struct lb_local *lb;            /* per pool */
	struct upool_server **upools;   /* [pool][server] idle connections */
	struct metrics_map *mmap;       /* its indexes as metrics slots (metrics.h), or NULL when metrics are off */
	unsigned refs;                  /* the worker while current, each client and upconn */
};

/* A reload handed to one worker: the snapshot and, per new listener, its fd. */
struct wpublish {
	struct snapshot *snap;          /* a reference for the worker */
	int *fds;                       /* [cfg->nlisteners]: a new socket, or -1 = keep the open one */
};

/* Per-worker idle upstream connections of one server. */
struct upool_server {
	struct dlist idle;  /* struct upconn.node, most recently used first */
	unsigned nidle;
	void *tls_session;  /* upstream TLS: the SSL_SESSION this worker resumes (tls_client.h), or NULL */
};

/* Counters written by their worker only and read by the control thread. */
struct worker_stats {
	_Atomic uint64_t accepted;          /* client connections accepted */
	_Atomic uint64_t requests;          /* request heads parsed */
	_Atomic uint64_t upstream_connects; /* new backend connections opened */
	_Atomic uint64_t upstream_reuses;   /* requests sent on a pooled connection */
	_Atomic uint64_t active;            /* client connections open now */
};

/* Single writer: a relaxed load and store, no locked instruction on the hot path. */
#define STAT_ADD(w, field, n)                                                              \
	atomic_store_explicit(&(w)->stats.field,                                           \
			      atomic_load_explicit(&(w)->stats.field, memory_order_relaxed) + (n), \
			      memory_order_relaxed)

struct worker {
	unsigned id;
	pthread_t thread;
	struct io_uring ring;
	/* The generation being served: the connection's own while one of its events runs, else cur. */
	struct wgen *gen;
	struct snapshot *snap;           /* gen->snap */
	struct lb_local *lb;             /* gen->lb: per pool */
	struct upool_server **upools;    /* gen->upools: [pool][server] */
	struct wgen *cur;                /* the newest published generation: new exchanges take it */
	struct wlistener **listeners;    /* [cur cfg->nlisteners] */
	struct dlist gone_listeners;     /* removed by a reload, waiting for their accept to end */
	int reload_fd;                   /* eventfd: a reload waits in publish */
	uint64_t reload_buf;
	_Atomic(struct wpublish *) publish; /* handed over by the reloader, taken by the worker */
	_Atomic uint64_t reload_seq;     /* reloads applied: the reloader waits for it */
	struct dlist clients;            /* every open client connection */
	struct dlist dead_clients;       /* closed, waiting for their operations to return */
	struct dlist dead_ups;           /* closed upstream connections, likewise */
	unsigned nclients;
	unsigned nupconns;               /* open upstream connections, idle or busy */
	uint64_t now_ns;                 /* CLOCK_MONOTONIC, refreshed per loop */
	uint64_t now_ms;
	int wake_fd;                     /* eventfd: the main thread asks us to stop */
	uint64_t wake_buf;
	struct __kernel_timespec tick_ts;
	bool draining;
	bool stopped;                    /* loop exit requested */
	uint64_t drain_deadline_ms;
	struct alog_ring *alog;
	uint64_t rng;                    /* xorshift64 state for request ids */
	struct worker_stats stats;
	struct guard *guard;             /* L7 rejections go to guard_report(); NULL when off */
	struct gate *gate;               /* admission after routing (gate.h): auth, limits; NULL when off */
	bool ring_disabled;              /* created R_DISABLED: the worker enables it */
	struct metrics_worker *metrics;  /* this worker's counters and histograms (metrics.h), or NULL */
} __attribute__((aligned(64))); /* user_data tags need 16; 64 keeps workers off each other's lines */

/* Shared between the main thread and workers. */
struct worker_set {
	struct worker *workers;
	unsigned n;
	struct metrics *metrics;         /* set before workers_start; each worker gets its block */
};

int workers_start(struct worker_set *ws, struct snapshot *snap, unsigned n, struct alog *alog);
/* Opens one SO_REUSEPORT listening socket; returns the fd or a negative errno. */
int worker_listener_open(const struct cfg_listener *l);
/* Hands p to worker w (which takes ownership) and wakes it. */
void worker_publish(struct worker *w, struct wpublish *p);

/* Inside a worker: serve generation g (the connection's) until the next worker_enter. */
static inline void worker_enter(struct worker *w, struct wgen *g)
{
	w->gen = g;
	w->snap = g->snap;
	w->lb = g->lb;
	w->upools = g->upools;
}

/* Inside a worker: a generation reference taken and given back (freed when unused). */
static inline struct wgen *worker_gen_get(struct wgen *g)
{
	g->refs++;
	return g;
}
void worker_gen_put(struct worker *w, struct wgen *g);
/* Asks every worker to drain and waits for them to exit. */
void workers_stop(struct worker_set *ws);

/* Inside a worker: an SQE, submitting first when the queue is full. */
struct io_uring_sqe *worker_sqe(struct worker *w);

static inline uint64_t op_data(void *obj, enum op op)
{
	return (uint64_t)(uintptr_t)obj | (uint64_t)op;
}

/* proxy.c: the HTTP connection state machine. */
void proxy_accept(struct worker *w, struct wlistener *l, int fd);
void proxy_complete(struct worker *w, void *obj, enum op op, int res, unsigned flags);
void proxy_tick(struct worker *w);
void proxy_drain(struct worker *w);
void proxy_close_all(struct worker *w);
void proxy_reap(struct worker *w);
/* A reload replaced generation g: its idle backend connections close. */
void proxy_retire(struct worker *w, struct wgen *g);

#endif
