/* agent/reload.h — live configuration reload (SIGHUP, `clawctl reload`): validate, build, publish. */
#ifndef OPENCLAW_RELOAD_H
#define OPENCLAW_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

struct agent;
struct control;
struct metrics;
struct reloader;
struct snapshot;

/* What the running agent has on that a reload cannot change live (see docs/operations.md). */
struct reload_fixed {
	struct snapshot *health_snap; /* pools the health checker runs on, NULL when health is off */
	bool gate_on;                 /* API keys / limits are enforced (gate.c) */
};

/*
 * Creates the reloader for agent a, whose live snapshot is a->snap (a
 * reference is taken). The file's current text is kept to tell which
 * sections a later reload changes.
 */
int reload_create(struct reloader **out, struct agent *a, const struct reload_fixed *fx);
void reload_free(struct reloader *r);

/*
 * Loads the file again and, when valid and allowed, publishes it to every
 * worker. 0 on success (a one-line summary in msg); else a negative errno and
 * "FILE:LINE: KEY: reason" or "reload: ..." in msg, the running config kept.
 */
int reload_run(struct reloader *r, char *msg, size_t msglen);

/* Registers "reload" (before control_start). */
int reload_register_commands(struct reloader *r, struct control *c);
/* Registers the reload counters with metrics (before the admin listener starts). */
int reload_register_metrics(struct reloader *r, struct metrics *m);

/*
 * Called about every 100 ms by the main thread: pools rebuilt by a reload get
 * the health checker's verdicts and operator drains for the servers it checks
 * (same pool name and address), and their ejection timers and slow start run.
 */
void reload_sync(struct reloader *r);

/* The live snapshot with a reference for the caller (snapshot_put it). */
struct snapshot *reload_live(struct agent *a);

#endif
