/* agent/tls_client.h — upstream TLS: a per-pool OpenSSL client context built at config load and an I/O-free per-connection engine. */
#ifndef OPENCLAW_TLS_CLIENT_H
#define OPENCLAW_TLS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct cfg_upstream_tls;
struct metrics;

/*
 * One pool's client context: CA store, client certificate, versions, ALPN,
 * verification mode. Immutable once built; owned by the configuration that
 * holds it (config_free frees it), so a reload builds new ones and
 * connections keep theirs through their generation's snapshot.
 * Thread-safe: workers and the health thread create connections from it.
 */
struct tls_client_ctx;

/* One upstream connection's TLS state. Used by one thread only; never touches a socket. */
struct tls_up;

/* Results of tls_up_handshake / tls_up_read besides byte counts (same value as tls.h's TLS_WANT). */
#define TLS_UP_WANT (-11000) /* needs more ciphertext from the backend */

/* Which configuration key a load failure belongs to (for "FILE:LINE: KEY: reason"). */
enum tls_client_key {
	TLSC_KEY_CA,    /* ca: unreadable or no certificate in it */
	TLSC_KEY_CERT,  /* cert: unreadable or not a PEM chain */
	TLSC_KEY_KEY,   /* key: unreadable, loose permissions, or not the cert's key */
	TLSC_KEY_OTHER, /* the section as a whole (OpenSSL could not make a context) */
};

/*
 * Builds the client context of pool `pool` from t (its files are read now).
 * Logs a warning when t->verify is off. Returns 0, or a negative errno with
 * *bad naming the key at fault and the reason (no key material) in why.
 */
int tls_client_ctx_new(const struct cfg_upstream_tls *t, const char *pool,
		       struct tls_client_ctx **out, enum tls_client_key *bad, char *why,
		       size_t whylen);
void tls_client_ctx_free(struct tls_client_ctx *x);

/*
 * Refuses a private key file that group or others may read or write, as the
 * server side does. 0, or a negative errno with the reason in why.
 */
int tls_client_key_mode_ok(const char *path, char *why, size_t whylen);

/* ---- per connection ---- */

#define TLS_UP_QUIET 1 /* health checks: failures are not logged or counted (the check reports them) */

/*
 * A client connection to server `server_name` ("ip:port", for logs) at addr
 * (its IP is what the certificate must name when no sni is configured).
 * session_slot: where this worker keeps the server's session to resume
 * (resumed from and replaced by new tickets), or NULL for none. It must
 * outlive the connection. NULL on out of memory.
 */
struct tls_up *tls_up_new(struct tls_client_ctx *x, const struct sockaddr *addr,
			  const char *server_name, void **session_slot, unsigned flags);

/*
 * This server's own name (servers[].sni) in place of the pool's: sent as SNI
 * and, when verifying, the name the certificate must carry (the address no
 * longer counts). Before the handshake only. 0, or -ENOMEM.
 */
int tls_up_set_server_name(struct tls_up *t, const char *name);
void tls_up_free(struct tls_up *t);

/* Frees a cached session (a session_slot's content); NULL is fine. */
void tls_client_session_free(void *session);

/* Where the next ciphertext read from the socket goes, and committing what arrived. */
char *tls_up_in_space(struct tls_up *t, size_t *len);
void tls_up_in_commit(struct tls_up *t, size_t n);

/*
 * Runs the handshake on what arrived: 1 done, TLS_UP_WANT (send what is
 * queued, then read), or -EPROTO: failed; logged with pool, server and the
 * reason (the certificate verification error when that was it) and counted,
 * unless the connection is TLS_UP_QUIET.
 */
int tls_up_handshake(struct tls_up *t);
/* Is the handshake done? */
bool tls_up_ready(const struct tls_up *t);

/*
 * The handshake ended without a verdict from OpenSSL (timeout, connection
 * closed or reset, res a negative errno or 0): logged and counted once, like
 * tls_up_handshake's failures.
 */
void tls_up_abort(struct tls_up *t, int res);

/* Why the handshake failed, for a health check's detail ("" when it did not). */
const char *tls_up_reason(const struct tls_up *t);

/*
 * Decrypts buffered records into buf: bytes (>0), 0 at the backend's
 * close_notify, TLS_UP_WANT when a whole record is not there yet (session
 * tickets are taken in passing), -EPROTO.
 */
ssize_t tls_up_read(struct tls_up *t, char *buf, size_t len);
/* Is there ciphertext or plaintext buffered that tls_up_read could use without a socket read? */
bool tls_up_read_buffered(const struct tls_up *t);

/* Encrypts len bytes into the output queue. 0 or -EPROTO. */
int tls_up_write(struct tls_up *t, const void *buf, size_t len);
/* Encrypts a then b (either may be empty) as one stream: a request head shares the body's first record. */
int tls_up_write2(struct tls_up *t, const void *a, size_t alen, const void *b, size_t blen);

/*
 * Output queue: the next span of ciphertext to send (0 when none; the span
 * stays valid until tls_up_out_sent, whatever is queued meanwhile), and how
 * much of it went. tls_up_out_sent returns the bytes still queued.
 */
size_t tls_up_out_next(struct tls_up *t, const char **p);
size_t tls_up_out_sent(struct tls_up *t, size_t n);

/* ---- kTLS (the pool's ktls: auto, on a kernel with the TLS ULP) ---- */

#define TLS_UP_KTLS_TX 1
#define TLS_UP_KTLS_RX 2

/* Is a direction still waiting for its kTLS decision? (false before the handshake ends, and once both are decided) */
bool tls_up_ktls_pending(const struct tls_up *t);

/*
 * Moves the directions in dirs (TLS_UP_KTLS_TX / _RX) whose turn it is into
 * the kernel: TX when no ciphertext is queued or in flight (the caller has
 * no send in flight), RX when nothing is buffered and no read is in flight
 * (the caller's), and on TLS 1.3 with resumption once the backend's ticket
 * (or its first data) was read. A direction that cannot go stays in
 * userspace for good. Returns the mask now in the kernel; counted once per
 * connection (on / off).
 */
int tls_up_ktls_try(struct tls_up *t, int fd, int dirs);

/* kTLS RX: a msghdr reading into buf with room for the record-type cmsg. */
struct msghdr *tls_up_ktls_rxmsg(struct tls_up *t, char *buf, size_t len);
/*
 * Classifies a completed kTLS read of res bytes into buf: res for data (0
 * at EOF), 0 for an alert (the connection ends), TLS_UP_WANT for a
 * NewSessionTicket (skipped: read on), -EPROTO for any other handshake
 * message (a KeyUpdate the kernel cannot follow; counted) or a bad record.
 */
int tls_up_ktls_rxresult(struct tls_up *t, const char *buf, int res);

/* ---- metrics ---- */

/*
 * Adds openclaw_upstream_tls_handshakes_total{upstream,result},
 * openclaw_upstream_tls_resumptions_total{upstream},
 * openclaw_upstream_ktls_total{upstream,state} and
 * openclaw_upstream_ktls_failures_total{upstream,reason}: one series set per pool
 * of a loaded configuration (counts carry on across reloads by pool name).
 */
int tls_client_register_metrics(struct metrics *m);

/* A pool's counters, for tests and status: handshakes completed, resumed, failed verification, failed otherwise; kTLS. */
struct tls_client_counts {
	uint64_t ok, resumed, verify_failed, failed;
	uint64_t ktls_on, ktls_off;                 /* connections with the kernel record layer / without */
	uint64_t ktls_keyupdate, ktls_install_failed;
};
void tls_client_counts(const char *pool, struct tls_client_counts *out);

struct jsonw;
/* "upstreams": every pool of a loaded configuration with TLS, its handshakes and record layer (tls.status). */
void tls_client_status_json(struct jsonw *w);

#endif
