/* cli/obs.h — clawctl stats and clawctl top: the agent's counters as a table, or live. */
#ifndef OPENCLAW_CLI_OBS_H
#define OPENCLAW_CLI_OBS_H

#include <stdbool.h>
#include <stddef.h>

/* Sends one request line to clawd, reads one reply line (malloc'd). 0 or a negative errno (already reported). */
typedef int (*obs_call_fn)(void *ctx, const char *request, char **reply, size_t *reply_len);

/* clawctl stats [--json]: exit status 0, 1 (refused/unreachable) or 2 (usage). */
int obs_stats(obs_call_fn call, void *ctx, bool json, int argc, char **argv);

/* clawctl top [--interval DURATION]: refreshes until q (or EOF on stdin). */
int obs_top(obs_call_fn call, void *ctx, int argc, char **argv);

struct jsonr;
struct jsonr_node;
/* clawctl status: the "splice" and "keys" lines, from the status reply object r. */
void obs_status_print(const struct jsonr *j, const struct jsonr_node *r);

#endif
