/* agent/splice.h — sockmap splice: load/pin/attach, hand-off of connections to the kernel, teardown, accounting. */
#ifndef OPENCLAW_SPLICE_H_AGENT
#define OPENCLAW_SPLICE_H_AGENT

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

struct worker;
struct control;

/*
 * Loads the verdict program, pins its maps under cfg->splice.pin_dir and
 * attaches it to the SOCKHASH (bpf_prog_attach: libbpf 1.1 has no link for
 * sockmap). Does nothing when no route uses splice or tcp mode or splice is
 * off. With enabled: auto a failure is logged once and connections go
 * through the userspace relay; with required it is returned (-errno, err).
 */
int splice_start(const struct config *cfg, char *err, size_t errlen);
/* Detaches the program, only when no connection is spliced (else it stays attached to the pinned map). */
void splice_stop(void);
/* Adds the openclaw_splice_* families to /metrics. */
struct metrics;
int splice_register_metrics(struct metrics *m);
/* Registers splice.list and splice.stats. */
int splice_register_commands(struct control *ctl);
/*
 * For clawctl status: the configured mode, whether the verdict program is
 * loaded and attached, active spliced connections, fallbacks to the relay.
 */
struct jsonw;
void splice_status(struct jsonw *w);

/* What clawd knows about the connection being handed off (for logs, LB and the list). */
struct splice_origin {
	const struct sockaddr *client;
	unsigned listener;
	int route, pool, server;
	uint64_t first_in, first_out; /* bytes of the exchange(s) before the hand-off */
};

/*
 * splice mode: after an exchange, hands the client and backend sockets to the
 * kernel. `extra` are bytes clawd read from the client past the last request:
 * they are written to the backend first. `early` are bytes clawd read from the
 * backend past the last response (a backend that speaks right after it): they
 * are written to the client first, never parsed. Returns 0 when the
 * connection now belongs to the splice module (it holds dups of both fds: the
 * caller closes its own), -EAGAIN when the caller should carry on in HTTP
 * (fallback, counted; only when no byte was written and early_len is 0: once
 * the backend has spoken past its response the connection is a byte stream,
 * and without the kernel it goes through the userspace relay, counted as a
 * fallback), -EPERM when splice is required and could not be done (close the
 * client), -EIO when only closing is honest.
 */
int splice_handoff(struct worker *w, int cfd, int ufd, const char *extra, size_t extra_len,
		   const char *early, size_t early_len, const struct splice_origin *o);

/*
 * A splice-mode exchange ended in a state that cannot be handed off (an
 * operation still in flight, a backend that will not keep the connection):
 * counted and logged once as a fallback; the connection stays in HTTP.
 */
void splice_fallback(const char *why);

/*
 * tcp mode: takes an accepted socket of a listener with tcp routes
 * (ntcp_routes > 0). With SNI routes (sni_peek) the ClientHello is peeked
 * on the worker's ring first and picks the route (docs/splice.md).
 */
void splice_accept_tcp(struct worker *w, unsigned listener, int fd);

/* When a drain begins: closes this worker's tcp connections still waiting for their ClientHello. */
void splice_drain(struct worker *w);

/* At the drain deadline: closes this worker's spliced connections (until then they run on). */
void splice_close_all(struct worker *w);

/* io_uring completions tagged OP_SPLICE. */
void splice_complete(struct worker *w, void *obj, int res, unsigned flags);

/* Whether a route in splice mode should try the hand-off at all (cheap). */
int splice_wanted(const struct config *cfg, int route);

#endif
