/* agent/guard.h — clawd's side of the XDP packet guard: load, pin, attach, lists, auto-ban from L7, control commands. */
#ifndef OPENCLAW_AGENT_GUARD_H
#define OPENCLAW_AGENT_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "openclaw/guard.h"

struct config;
struct control;
struct guard;

/*
 * Loads bpf/xdp_guard.bpf.c with every map pinned under cfg->guard.pin_dir
 * (reusing maps already pinned there, so blocklist entries and buckets
 * survive), writes the configuration and port maps, re-applies the static
 * lists and the entries saved in <cfg->state_dir>/guard.json, attaches to
 * every configured interface (adopting a pinned link left by a previous
 * clawd: the program is swapped in place, traffic is never unguarded) and
 * starts the guard thread (drop samples, expiry sweep, auto-ban, interface
 * watch). nworkers is the number of guard_report() callers.
 *
 * With no interfaces configured it does nothing and sets *out = NULL.
 * cfg must outlive the guard. Returns 0 or a negative errno with a one-line
 * reason in err.
 */
int guard_start(struct guard **out, const struct config *cfg, unsigned nworkers, char *err,
		size_t errlen);

/*
 * Stops the guard thread and saves the lists. Pinned maps and links stay:
 * the interfaces keep being guarded while clawd is down. NULL is a no-op.
 */
void guard_stop(struct guard *g);

/*
 * clawd --detach-guard: removes the guard's pinned links (XDP detaches from
 * every interface) and its pinned maps under pin_dir, then pin_dir itself
 * when empty. Nothing there is not an error. Returns 0 or a negative errno.
 */
int guard_detach_all(const char *pin_dir, char *err, size_t errlen);

/*
 * Called by worker `worker` for every exchange the proxy answered with
 * `status`. Never blocks and takes no lock: the event goes into the worker's
 * own single-producer ring, drained by the guard thread; when the ring is
 * full it is counted and dropped. g may be NULL.
 */
void guard_report(struct guard *g, unsigned worker, const struct sockaddr *peer, int status);

/*
 * Registers block.add/del/list, allow.add/del/list, guard.status,
 * guard.stats and guard.detach. With g == NULL the commands exist and answer
 * "guard is not configured".
 */
int guard_register_commands(struct guard *g, struct control *c);

/*
 * Sums the per-CPU guard_stats map into out[GUARD_R_MAX] (packets and bytes
 * per verdict reason, all interfaces) and the auto-ban count into *bans.
 * For metrics: any thread, no side effect. Returns 0, or -ENODEV when g is
 * NULL, or a negative errno.
 */
int guard_read_counters(struct guard *g, struct guard_stat *out, uint64_t *bans);

/* ---- auto-ban counters (the guard thread's; exposed for tests) ---- */

struct guard_ban_src;

/* Rejections per source over a sliding window. */
struct guard_bans {
	uint32_t threshold;          /* rejections within window that trigger a ban */
	uint64_t window_ms;          /* sliding window */
	uint64_t quiet_ms;           /* after a trigger, hits are ignored this long (the ban's TTL) */
	size_t max_sources;          /* sources tracked at most; more are counted, not tracked */
	struct guard_ban_src *tab;   /* open-addressing table, cap slots */
	size_t cap;
	size_t n;                    /* slots in use */
	uint64_t untracked;          /* hits from sources that found the table full */
};

int guard_bans_init(struct guard_bans *b, uint32_t threshold, uint64_t window_ms,
		    uint64_t quiet_ms, size_t max_sources);
void guard_bans_free(struct guard_bans *b);

/*
 * Counts one rejection (HTTP status) of source key at now_ms. Returns true
 * exactly once when the source reaches threshold rejections within window;
 * the statuses seen in that window are then written to why ("400, 429").
 * Hits during the following quiet_ms are ignored.
 */
bool guard_bans_hit(struct guard_bans *b, const struct guard_src_key *key, uint16_t status,
		    uint64_t now_ms, char *why, size_t whylen);

/* Forgets sources with no hit within the window and no quiet period running. */
void guard_bans_expire(struct guard_bans *b, uint64_t now_ms);

/* "10m", "90s", "1500ms": the largest unit that divides ms. buf needs 24 bytes. */
char *guard_fmt_duration(uint64_t ms, char *buf, size_t len);

#endif
