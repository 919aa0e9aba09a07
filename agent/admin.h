/* agent/admin.h — the admin listener: /metrics (Prometheus), /healthz and /readyz on a thread of its own. */
#ifndef OPENCLAW_ADMIN_H
#define OPENCLAW_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct admin;
struct agent;
struct cfg_admin;

/*
 * Binds cfg->addr, reads the bearer token file when one is configured
 * (refusing a file more open than 0600) and serves on its own thread:
 *   GET /metrics  text format 0.0.4 of everything metrics_render() knows
 *   GET /healthz  200 while the process runs
 *   GET /readyz   200 while agent->state is AGENT_RUNNING, else 503
 * Other paths 404, other methods 405; a missing or wrong token 401.
 * Returns 0 or a negative errno with a one-line reason in err.
 */
int admin_start(struct admin **out, const struct cfg_admin *cfg, struct agent *a, char *err,
		size_t errlen);

/* The listening socket (handed to the new process by a binary upgrade), or -1. */
int admin_listen_fd(const struct admin *ad);

/* Stops the thread and closes the socket. NULL is a no-op. */
void admin_stop(struct admin *ad);

/* Constant-time comparison of a presented token with the expected one (exposed for tests). */
bool admin_token_eq(const char *got, size_t got_len, const char *want);

#endif
