/* agent/ktls.h — kernel TLS shared by the server (tls.c) and upstream (tls_client.c) engines: record counting, key installation from OpenSSL's secrets, kTLS RX record types. */
#ifndef OPENCLAW_KTLS_H
#define OPENCLAW_KTLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <openssl/ssl.h>

#define KTLS_TX 1 /* same values as tls.h's TLS_KTLS_TX / TLS_KTLS_RX */
#define KTLS_RX 2

#define KTLS_REC_ALERT 21
#define KTLS_REC_HANDSHAKE 22
#define KTLS_REC_DATA 23

/*
 * Counts TLS records in one direction's byte stream (headers only): the
 * kernel's record sequence numbers start where userspace stopped.
 */
struct ktls_rec {
	uint64_t records;   /* records whose header has been seen */
	uint64_t since_ccs; /* records after the last change_cipher_spec (TLS 1.2 sequence) */
	uint32_t body_left; /* bytes of the current record still to come */
	uint8_t hdr[5];
	uint8_t hdr_len;
};

void ktls_rec_feed(struct ktls_rec *rc, const uint8_t *p, size_t n);
/* No record is half seen: the kernel may start here. */
static inline bool ktls_rec_boundary(const struct ktls_rec *rc)
{
	return !rc->body_left && !rc->hdr_len;
}

/*
 * One direction to install. TLS 1.3: secret is the application traffic
 * secret (from the key log) and seq the records sent under it so far.
 * TLS 1.2: secret is unused (the key block comes from the master secret)
 * and seq is the records since that direction's change_cipher_spec.
 */
struct ktls_dir {
	const uint8_t *secret;
	size_t secret_len;
	uint64_t seq;
};

/*
 * Attaches the "tls" ULP to fd (if not attached yet) and installs the
 * directions in dirs (KTLS_TX, KTLS_RX) for ssl's negotiated cipher, as the
 * server (server) or the client side of the connection. Returns the mask of
 * directions the kernel took (0 is possible), -EOPNOTSUPP for a version or
 * cipher the kernel has no record layer for, or another negative errno (the
 * ULP refused, key derivation failed). Key material is wiped before return.
 */
int ktls_install(int fd, SSL *ssl, bool server, int dirs, const struct ktls_dir *tx,
		 const struct ktls_dir *rx);

/* Is the kernel probe (tls.h's tls_ktls_probe, run once per process) positive? why: its words. */
bool ktls_kernel(const char **why);

/*
 * TLS 1.3 traffic secrets from an OpenSSL key log line: copies the
 * hex-decoded secret of a line starting with tag ("SERVER_TRAFFIC_SECRET_0")
 * into out (EVP_MAX_MD_SIZE bytes) and returns its length, 0 for other lines.
 */
size_t ktls_keylog_secret(const char *line, const char *tag, uint8_t *out);

/* A kTLS RX recvmsg with room for the record-type control message. */
struct ktls_rxmsg {
	struct msghdr msg;
	struct iovec iov;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(unsigned char))];
	} cm;
};
struct msghdr *ktls_rxmsg_prep(struct ktls_rxmsg *m, char *buf, size_t len);
/* The record type of a completed read (KTLS_REC_DATA when the kernel gave none). */
int ktls_rxmsg_type(struct ktls_rxmsg *m);

#endif
