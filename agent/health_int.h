/* agent/health_int.h — private to health.c and backends.c: the check thread's state. */
#ifndef OPENCLAW_HEALTH_INT_H
#define OPENCLAW_HEALTH_INT_H

#include <limits.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "health.h"

struct tls_up;

enum hc_state {
	HC_IDLE,    /* waiting for next_ns */
	HC_CONNECT, /* connect in flight */
	HC_SEND,    /* request going out */
	HC_RECV,    /* reading the response */
};

/* One server's active check; the thread's own, except t (read by commands under the lock). */
struct hcheck {
	struct health *h;
	struct lb_pool *p;
	unsigned idx;            /* server index in p */
	int fd;                  /* check socket, -1 between checks */
	int pending;             /* io_uring operations in flight (link timeouts excluded) */
	enum hc_state st;
	uint64_t next_ns;        /* next check starts (monotonic ns) */
	uint64_t started_ns;     /* this check started */
	uint64_t deadline_ns;    /* this check fails with a timeout */
	char *req;               /* HTTP request bytes (http checks) */
	uint32_t req_len, sent;
	char *buf;               /* response bytes */
	uint32_t len, cap;
	struct __kernel_timespec ts; /* the linked timeout's value */
	struct health_track t;   /* results, under health.lock */
	struct tls_up *tls;      /* a TLS pool's check: its TLS state (tls_client.h), else NULL */
	bool retired;            /* replaced when the thread adopted new pools: completions only count down */
} __attribute__((aligned(16)));

/* Checks replaced by an adoption, freed once none has an operation in flight. */
struct hc_old {
	struct snapshot *snap;   /* the pools they checked (a reference is held) */
	struct hcheck **checks;  /* [pool][server] of snap */
	struct hc_old *next;
};

struct health {
	struct snapshot *snap;   /* the pools checked (a reference is held) */
	struct io_uring ring;
	bool ring_ok;
	pthread_t thread;
	bool running;
	bool stopping;           /* set by the thread itself on the stop event */
	int stop_fd;             /* eventfd: health_stop wakes the thread */
	uint64_t stop_buf;
	pthread_mutex_t lock;    /* hcheck.t of every check; the state file */
	struct hcheck **checks;  /* [pool][server] */
	uint64_t rng;            /* jitter */
	char state_path[256];    /* <state_dir>/backends.json (state_dir is at most 200 bytes) */
	struct snapshot *adopt;  /* published pools to move to (health_adopt), under lock; NULL = none */
	struct hc_old *old;      /* replaced checks still in flight (the thread's own) */
	struct backends_rt *rt;  /* runtime server changes saved with drains and weights (backends.h), or NULL */
};

/* backends.c: applies <state_dir>/backends.json to the pools at start-up (logs what it skips). */
void health_state_load(struct health *h);

#endif
