/* agent/backends.h — runtime server changes (clawctl backends add/remove): kept in backends.json, laid over the config file's pools. */
#ifndef OPENCLAW_BACKENDS_H
#define OPENCLAW_BACKENDS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "netaddr.h"

struct agent;
struct control;
struct health;
struct reloader;
struct snapshot;

#define BACKENDS_NOTE_MAX 512 /* bytes of a pool's "runtime changes dropped" note */

/* A server added at run time (backends add). */
struct backends_added {
	struct net_addr addr; /* its address */
	uint32_t weight;      /* 1..1000 */
	bool backup;          /* used only when no primary is usable */
};

/*
 * One pool's runtime changes. They hold while the config file's pool keeps
 * the fingerprint fp they were made against; any edit of that pool in the
 * file drops them (the file wins).
 */
struct backends_pool_rt {
	char *name;                   /* upstream name */
	uint64_t fp;                  /* backends_pool_fingerprint() of the file's pool */
	struct backends_added *add;   /* added servers, in the order they were added */
	unsigned nadd;
	struct net_addr *del;         /* servers of the file removed at run time */
	unsigned ndel;
};

/* Why a pool's runtime changes were dropped (the file changed that pool), for backends list. */
struct backends_note {
	char *pool;                     /* upstream name */
	char text[BACKENDS_NOTE_MAX];   /* "config file changed this pool: added 10.0.0.9:80 dropped" */
};

/* The runtime server set of every pool, and what it needs to publish changes. */
struct backends_rt {
	pthread_mutex_t lock;          /* everything below but the pointers set by attach */
	struct backends_pool_rt *pools; /* the set in force */
	unsigned npools;
	struct backends_pool_rt *next; /* the set built into next_for (a reload or add/remove) */
	unsigned nnext;
	const struct config *next_for; /* the configuration being built; NULL when none */
	struct backends_note *next_drops; /* pools whose entries next leaves out, and why */
	unsigned nnext_drops;
	struct backends_note *notes;   /* the last drop per pool, shown by backends list */
	unsigned nnotes;
	char state_path[256];          /* <state_dir>/backends.json */
	struct agent *agent;           /* for the live snapshot; NULL until attached */
	struct reloader *reloader;     /* publishes changes; NULL: add/remove are refused */
	struct health *health;         /* check thread and drain/weight state; NULL when off */
};

/*
 * A 64-bit fingerprint of everything the config file says about pool u
 * (servers, algorithm, checks, limits...), independent of comments and
 * layout: runtime changes made against one fingerprint stop applying when
 * the file's pool has another.
 */
uint64_t backends_pool_fingerprint(const struct cfg_upstream *u);

/*
 * Lays pr over pool u of a freshly parsed file: removes pr->del, appends
 * pr->add, recounts backups. Returns 0, -ENOENT (a removed server is not in
 * u, a reason in err), -EEXIST (an added one already is), -EINVAL (no
 * primary would be left) or -ENOMEM; u is unchanged on failure.
 */
int backends_pool_apply(const struct backends_pool_rt *pr, struct cfg_upstream *u, char *err,
			size_t errlen);

/*
 * Records "add a server" in pr, validated against u, the pool as it runs
 * (the file's pool with pr already applied; file_u the file's own, to undo a
 * removal). Errors as backends_pool_apply, with the reason in err.
 */
int backends_pool_add(struct backends_pool_rt *pr, const struct cfg_upstream *file_u,
		      const struct cfg_upstream *u, const struct net_addr *addr, uint32_t weight,
		      bool backup, char *err, size_t errlen);
/* Records "remove server addr" in pr, refusing to leave u without a primary. */
int backends_pool_remove(struct backends_pool_rt *pr, const struct cfg_upstream *file_u,
			 const struct cfg_upstream *u, const struct net_addr *addr, char *err,
			 size_t errlen);
void backends_pool_rt_clear(struct backends_pool_rt *pr);

/*
 * Start-up: reads the runtime server changes from <state_dir>/backends.json
 * and lays those still valid over cfg (the file as loaded), logging each one
 * dropped. Returns 0 (an unreadable file is logged and ignored) or -ENOMEM.
 */
int backends_rt_create(struct backends_rt **out, struct config *cfg);
void backends_rt_free(struct backends_rt *rt);

/*
 * Reload, before the snapshot is built: lays the runtime changes over ncfg,
 * the file as just parsed, leaving out those of pools the file changed. They
 * are dropped (logged, saved) only when ncfg is published
 * (backends_rt_published). 0 or a negative errno with the reason in msg.
 */
int backends_rt_apply(struct backends_rt *rt, struct config *ncfg, char *msg, size_t msglen);

/* A snapshot was made live: the runtime set built into its configuration takes force. */
void backends_rt_published(struct backends_rt *rt, const struct snapshot *ns);

/* Gives rt what add/remove need once they exist (any may be NULL). */
void backends_rt_attach(struct backends_rt *rt, struct agent *a, struct reloader *r,
			struct health *h);

/* Registers backends.add and backends.remove. */
int backends_rt_register_commands(struct backends_rt *rt, struct control *c);

#endif
