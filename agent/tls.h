/* agent/tls.h — TLS termination: per-listener OpenSSL server contexts (SNI, reload) and an I/O-free per-connection engine with kTLS hand-off. */
#ifndef OPENCLAW_TLS_H
#define OPENCLAW_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct config;
struct control;
struct jsonw;
struct metrics;

/*
 * The TLS side of one configuration (snapshot->tls): one certificate set per
 * TLS listener of that configuration (replaced whole by tls_reload;
 * connections keep the set they started with). Every such view shares the
 * agent's core: the kTLS probe, the session-ticket key ring (kept across
 * reloads, so resumption goes on) and the per-listener counters (by name).
 * Reference counted; thread-safe: workers create connections, the control
 * thread and reloads build and publish views.
 */
struct tls_reg;

/* One client connection's TLS state. Used by one worker only. */
struct tls_conn;

/* Results of tls_handshake / tls_read besides byte counts. */
#define TLS_WANT (-11000) /* needs more ciphertext from the peer */

/*
 * Creates the core and the view of cfg (a reference for the caller; cfg must
 * outlive it, as a snapshot's config does): every TLS listener's
 * certificates and keys read, the kernel probed for kTLS once and, per
 * listener, which record layer it will use logged. A view is made even when
 * no listener has TLS, so a reload can add one. Returns 0 or a negative
 * errno with the reason in err ("FILE:LINE: KEY: reason" for file problems,
 * loose key permissions included).
 */
int tls_start(struct tls_reg **out, const struct config *cfg, char *err, size_t errlen);
/* At exit, after the workers: frees the core. Views still referenced (snapshots) die with them. */
void tls_stop(struct tls_reg *r);

/* A view reference taken and given back (NULL is fine). */
struct tls_reg *tls_get(struct tls_reg *r);
void tls_put(struct tls_reg *r);

/*
 * For a configuration reload: a new view of cfg on cur's core, every
 * certificate and key read now (all or nothing, errors as tls_start's).
 * Nothing running changes until the caller hands the view to a snapshot and
 * tls_publish()es it.
 */
int tls_rebuild(struct tls_reg *cur, const struct config *cfg, struct tls_reg **out, char *err,
		size_t errlen);
/* Makes r the view "tls.status", "tls.reload" and the metrics see (called with the new snapshot). */
void tls_publish(struct tls_reg *r);

/*
 * Re-reads every certificate and key of the served configuration (r's
 * core's current view) in place; all or nothing. New handshakes use the new set.
 */
int tls_reload(struct tls_reg *r, char *err, size_t errlen);

/* Registers "tls.status" and "tls.reload" (they follow reloads; cfg is unused). */
int tls_register_commands(struct tls_reg *r, struct control *c, const struct config *cfg);

/* Adds the openclaw_tls_* families to each scrape. */
int tls_register_metrics(struct tls_reg *r, struct metrics *m);

/* For "status": the listener's TLS path and counters as members of the open object w. */
void tls_status_listener(const struct tls_reg *r, unsigned listener, struct jsonw *w);

/* Does this listener terminate TLS? (r may be NULL.) */
bool tls_listener_on(const struct tls_reg *r, unsigned listener);
/* Its handshake timeout in milliseconds. */
uint64_t tls_handshake_timeout_ms(const struct tls_reg *r, unsigned listener);

/* The kernel TLS probe: 1 when TCP_ULP "tls" attaches, else 0 and why. Exposed for tests. */
int tls_ktls_probe(char *why, size_t whylen);

/* ---- per connection (a worker's own; never blocks, never touches the socket but in tls_ktls_try) ---- */

struct tls_conn *tls_conn_new(struct tls_reg *r, unsigned listener);
void tls_conn_free(struct tls_conn *t);

/* Where the next ciphertext read from the socket goes, and committing what arrived. */
char *tls_in_space(struct tls_conn *t, size_t *len);
void tls_in_commit(struct tls_conn *t, size_t n);

/* Runs the handshake on what arrived: 1 done, TLS_WANT, or -EPROTO (fatal; an alert may be queued). */
int tls_handshake(struct tls_conn *t);

/*
 * Decrypts buffered records into buf: bytes (>0), 0 at the peer's
 * close_notify, TLS_WANT when a whole record is not there yet, -EPROTO.
 */
ssize_t tls_read(struct tls_conn *t, char *buf, size_t len);
/* Is there ciphertext or plaintext buffered that tls_read could return without a socket read? */
bool tls_read_buffered(const struct tls_conn *t);

/* Encrypts len bytes into the output queue. 0 or -EPROTO. */
int tls_write(struct tls_conn *t, const void *buf, size_t len);
/* Encrypts a then b (either may be empty) as one stream: a small head shares the body's first record. */
int tls_write2(struct tls_conn *t, const void *a, size_t alen, const void *b, size_t blen);

/*
 * Output queue: the next span of ciphertext to send (0 when none; the span
 * stays valid until tls_out_sent, whatever is queued meanwhile), and how
 * much of it went. tls_out_sent returns the bytes still queued.
 */
size_t tls_out_next(struct tls_conn *t, const char **p);
size_t tls_out_sent(struct tls_conn *t, size_t n);

/*
 * Moves the record layer into the kernel when the listener wants kTLS, the
 * kernel has it, the cipher is one it knows and nothing is buffered in
 * either direction. Returns a mask of TLS_KTLS_TX / TLS_KTLS_RX now in the
 * kernel (0: stays in userspace, counted once per connection).
 */
#define TLS_KTLS_TX 1
#define TLS_KTLS_RX 2
int tls_ktls_try(struct tls_conn *t, int fd);
/* Is the connection still waiting for its kTLS decision? (cheap; false once decided) */
bool tls_ktls_pending(const struct tls_conn *t);

/* kTLS RX: a msghdr reading into buf with room for the record-type cmsg, and the type after it. */
struct msghdr *tls_ktls_rxmsg(struct tls_conn *t, char *buf, size_t len);
/*
 * Classifies a completed kTLS read of res bytes: res for data, 0 for an
 * alert (close_notify or fatal: the connection ends), -EPROTO for a
 * handshake record (a KeyUpdate the kernel cannot follow; counted).
 */
int tls_ktls_rxresult(struct tls_conn *t, int res);

/*
 * Sends close_notify before a graceful close, as a non-blocking send of a
 * few bytes (nothing else may be queued or in flight); by kTLS when the
 * kernel owns the sending direction.
 */
void tls_close_notify(struct tls_conn *t, int fd);

/* Counts a handshake that failed or timed out on this connection's listener. */
void tls_conn_failed(struct tls_conn *t);

#endif
