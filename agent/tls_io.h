/* agent/tls_io.h — the memory transport shared by server and upstream TLS: a BIO over a ciphertext input buffer and a swap pair of output buffers. */
#ifndef OPENCLAW_TLS_IO_H
#define OPENCLAW_TLS_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#define TLS_IO_WANT (-11000) /* same value as TLS_WANT and TLS_UP_WANT */
#define TLS_IO_IN_CAP (32 * 1024) /* ciphertext read buffer: two full records */

/*
 * One connection's ciphertext. OpenSSL reads from in (filled by the worker's
 * io_uring through tls_io_in_space/commit) and appends to wb; the worker sends
 * from sb, which stays stable while a send is in flight. Never touches a socket.
 */
struct tls_io {
	char *in;
	uint32_t in_off, in_len;
	char *wb;
	size_t wb_len, wb_cap;
	char *sb;
	size_t sb_off, sb_len, sb_cap;
	/* Optional: sees every ciphertext span OpenSSL reads (wrote false) or writes (true). */
	void (*tap)(struct tls_io *io, bool wrote, const uint8_t *p, size_t n);
};

/* Creates the shared BIO method once; 0 or -ENOMEM. */
int tls_io_global_init(void);

/* Allocates the input buffer; 0 or -ENOMEM. The struct must be zeroed first. */
int tls_io_init(struct tls_io *io);
/* Gives ssl one BIO over io both ways; 0 or -ENOMEM. */
int tls_io_attach(struct tls_io *io, SSL *ssl);
void tls_io_free(struct tls_io *io);

char *tls_io_in_space(struct tls_io *io, size_t *len);
void tls_io_in_commit(struct tls_io *io, size_t n);

/* Ciphertext received and not yet consumed by OpenSSL. */
static inline bool tls_io_in_pending(const struct tls_io *io)
{
	return io->in_off != io->in_len;
}

/* Ciphertext queued or being sent. */
static inline bool tls_io_out_pending(const struct tls_io *io)
{
	return io->sb_len || io->wb_len;
}

/* SSL_read until len bytes, no more records, or an error: bytes, 0 (close_notify), TLS_IO_WANT or -EPROTO. */
ssize_t tls_io_read(SSL *ssl, char *buf, size_t len);
/* SSL_write of all of buf into the output queue: 0 or -EPROTO. */
int tls_io_write(SSL *ssl, const void *buf, size_t len);
/* a then b (either may be empty) as if one buffer: a small a shares b's first record. 0 or -EPROTO. */
int tls_io_write2(SSL *ssl, const void *a, size_t alen, const void *b, size_t blen);

size_t tls_io_out_next(struct tls_io *io, const char **p);
size_t tls_io_out_sent(struct tls_io *io, size_t n);

#endif
