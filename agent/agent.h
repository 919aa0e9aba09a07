/* agent/agent.h — the running agent as the control commands see it. */
#ifndef OPENCLAW_AGENT_H
#define OPENCLAW_AGENT_H

#include <stdint.h>

#include "control.h"
#include "worker.h"

#ifndef OPENCLAW_VERSION
#define OPENCLAW_VERSION "0.1.0"
#endif

struct agent {
	const char *config_path;
	uint64_t started_at;    /* wall clock, seconds */
	uint64_t loaded_at;     /* when the running config was loaded, seconds */
	struct snapshot *snap;  /* the running configuration */
	struct worker_set *workers;
	struct alog *alog;        /* the access log, NULL when off */
	struct guard *guard;      /* the packet guard, NULL when off */
	struct gate *gate;        /* API keys and limits (gate.h), for status; NULL when not started */
	struct metrics *metrics;  /* per-worker counters, NULL before start-up */
	struct tls_reg *tls;      /* TLS listeners (tls.h), NULL when none */
	_Atomic int state;        /* enum agent_state: /readyz answers 200 only when running */
	pthread_mutex_t scrape_lock; /* held by a scrape reading workers; main takes it once before freeing them */
	/* Live reload (reload.h): snap stays the first configuration (start-up modules were set up by it). */
	struct snapshot *live;       /* the configuration now served; read with reload_live() */
	pthread_mutex_t live_lock;   /* guards live against a reload swapping it */
	_Atomic uint64_t reloads;    /* successful reloads */
	_Atomic uint64_t reload_failures; /* refused reloads (invalid file, fixed section changed, bind error) */
};

enum agent_state {
	AGENT_STARTING = 0, /* workers not started yet */
	AGENT_RUNNING,      /* serving */
	AGENT_DRAINING,     /* stop requested: in-flight requests finish, no new ones */
};

/* Registers "status" and "ping". */
int status_register(struct control *c, struct agent *a);

/* Algorithm name as written in the config file. */
const char *status_algorithm_name(int algorithm);

#endif
