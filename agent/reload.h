/* agent/reload.h — live configuration reload (SIGHUP, `clawctl reload`): validate, build, publish. */
#ifndef OPENCLAW_RELOAD_H
#define OPENCLAW_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

struct agent;
struct backends_rt;
struct config;
struct control;
struct health;
struct metrics;
struct reloader;
struct snapshot;

/* What the running agent has on that a reload cannot change live (see docs/operations.md). */
struct reload_fixed {
	struct health *health;        /* the check thread: adopts the pools of each published snapshot; NULL when off */
	struct backends_rt *brt;      /* runtime server changes laid over the file's pools (backends.h), or NULL */
	bool gate_on;                 /* API keys / limits are enforced (gate.c) */
	struct gate *gate;            /* the admission gate a reload hands the new config to, or NULL */
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
 * Runtime server changes (backends add/remove): under the reload lock, parses
 * the running file's text again (no file read), lets edit change the parsed
 * configuration (it lays the runtime servers over it) and publishes the
 * result like a reload, pools rebuilt. Not counted as a reload. 0, or a
 * negative errno with the reason (edit's own when it refused) in msg.
 */
typedef int (*reload_edit_fn)(void *arg, struct config *cfg, char *msg, size_t msglen);
int reload_republish(struct reloader *r, reload_edit_fn edit, void *arg, char *msg, size_t msglen);

/* The live snapshot with a reference for the caller (snapshot_put it). */
struct snapshot *reload_live(struct agent *a);

/* Holds off reloads and republishes (binary upgrade: the listener set must not change meanwhile). */
void reload_hold(struct reloader *r);
void reload_release(struct reloader *r);

#endif
