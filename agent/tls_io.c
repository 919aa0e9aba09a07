/* agent/tls_io.c — the memory transport shared by server and upstream TLS: a custom BIO over the worker's ciphertext buffers, SSL_read/SSL_write loops, the output swap. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#include "tls_io.h"

static BIO_METHOD *bio_meth;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

/* ---- the BIO: OpenSSL reads io->in and appends to io->wb; no socket, no copy into a mem BIO ---- */

static int bio_write(BIO *b, const char *data, int len)
{
	struct tls_io *io = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (io->wb_len + (size_t)len > io->wb_cap) {
		size_t cap = io->wb_cap ? io->wb_cap : 16384;
		char *n;

		while (cap < io->wb_len + (size_t)len)
			cap *= 2;
		n = realloc(io->wb, cap);
		if (!n)
			return -1;
		io->wb = n;
		io->wb_cap = cap;
	}
	memcpy(io->wb + io->wb_len, data, len);
	io->wb_len += len;
	if (io->tap)
		io->tap(io, true, (const uint8_t *)data, (size_t)len);
	return len;
}

static int bio_read(BIO *b, char *out, int len)
{
	struct tls_io *io = BIO_get_data(b);
	uint32_t avail = io->in_len - io->in_off;
	uint32_t k;

	BIO_clear_retry_flags(b);
	if (!avail) {
		BIO_set_retry_read(b);
		return -1;
	}
	if (len <= 0)
		return 0;
	k = (uint32_t)len < avail ? (uint32_t)len : avail;
	memcpy(out, io->in + io->in_off, k);
	if (io->tap)
		io->tap(io, false, (const uint8_t *)io->in + io->in_off, k);
	io->in_off += k;
	return (int)k;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_io *io = BIO_get_data(b);

	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_PENDING:
		return io ? (long)(io->in_len - io->in_off) : 0;
	default:
		return 0;
	}
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void bio_init_once(void)
{
	bio_meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "clawd-tls");
	if (!bio_meth)
		return;
	BIO_meth_set_write(bio_meth, bio_write);
	BIO_meth_set_read(bio_meth, bio_read);
	BIO_meth_set_ctrl(bio_meth, bio_ctrl);
	BIO_meth_set_create(bio_meth, bio_create);
}

int tls_io_global_init(void)
{
	pthread_once(&bio_once, bio_init_once);
	return bio_meth ? 0 : -ENOMEM;
}

/* ---- buffers ---------------------------------------------------------------------------- */

int tls_io_init(struct tls_io *io)
{
	io->in = malloc(TLS_IO_IN_CAP);
	return io->in ? 0 : -ENOMEM;
}

int tls_io_attach(struct tls_io *io, SSL *ssl)
{
	BIO *bio = BIO_new(bio_meth);

	if (!bio)
		return -ENOMEM;
	BIO_set_data(bio, io);
	SSL_set_bio(ssl, bio, bio); /* one BIO both ways: SSL_set_bio then owns our one reference */
	return 0;
}

void tls_io_free(struct tls_io *io)
{
	free(io->in);
	free(io->wb);
	free(io->sb);
}

char *tls_io_in_space(struct tls_io *io, size_t *len)
{
	if (io->in_off == io->in_len) {
		io->in_off = io->in_len = 0;
	} else if (io->in_off && io->in_len == TLS_IO_IN_CAP) {
		memmove(io->in, io->in + io->in_off, io->in_len - io->in_off);
		io->in_len -= io->in_off;
		io->in_off = 0;
	}
	*len = TLS_IO_IN_CAP - io->in_len;
	return io->in + io->in_len;
}

void tls_io_in_commit(struct tls_io *io, size_t n)
{
	io->in_len += (uint32_t)n;
}

/* ---- plaintext in and out --------------------------------------------------------------- */

/*
 * SSL_get_error() needs an empty error queue before the call it judges. Ours is
 * emptied after every failure, so a peek (one pointer compare) usually suffices:
 * ERR_clear_error() itself walks all sixteen slots, a measurable share of a small
 * request's CPU when it ran before every SSL_read and SSL_write.
 */
static inline void err_clean(void)
{
	if (ERR_peek_error())
		ERR_clear_error();
}

ssize_t tls_io_read(SSL *ssl, char *buf, size_t len)
{
	const struct tls_io *io = BIO_get_data(SSL_get_rbio(ssl));
	size_t got = 0;

	err_clean();
	while (got < len) {
		size_t want = len - got > INT_MAX ? INT_MAX : len - got;
		int n = SSL_read(ssl, buf + got, (int)want);
		int e;

		if (n > 0) {
			got += (size_t)n;
			/* Nothing left to decrypt: the next SSL_read could only say WANT_READ,
			 * at the price of a full trip through the record layer. */
			if (!tls_io_in_pending(io) && !SSL_has_pending(ssl))
				break;
			continue;
		}
		e = SSL_get_error(ssl, n);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			break;
		ERR_clear_error();
		if (got)
			break; /* the data first; the end comes back on the next call */
		if (e == SSL_ERROR_ZERO_RETURN)
			return 0;
		return -EPROTO;
	}
	return got ? (ssize_t)got : TLS_IO_WANT;
}

int tls_io_write(SSL *ssl, const void *buf, size_t len)
{
	const char *p = buf;

	err_clean();
	while (len) {
		size_t want = len > INT_MAX ? INT_MAX : len;
		int n = SSL_write(ssl, p, (int)want);

		if (n <= 0) {
			ERR_clear_error();
			return -EPROTO;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * A response head and the body that follows it arrive as two buffers. Two SSL_write
 * calls would seal the head alone in a record of a few hundred bytes: a full record
 * layer pass and an AEAD setup here and at the peer, and 22 bytes more on the wire.
 * The head is copied in front of the body's first bytes instead, filling one record.
 */
int tls_io_write2(SSL *ssl, const void *a, size_t alen, const void *b, size_t blen)
{
	static __thread char rec[SSL3_RT_MAX_PLAIN_LENGTH];
	size_t take;

	if (!alen || !blen || alen >= sizeof(rec)) {
		if (alen && tls_io_write(ssl, a, alen))
			return -EPROTO;
		return blen ? tls_io_write(ssl, b, blen) : 0;
	}
	take = blen < sizeof(rec) - alen ? blen : sizeof(rec) - alen;
	memcpy(rec, a, alen);
	memcpy(rec + alen, b, take);
	if (tls_io_write(ssl, rec, alen + take))
		return -EPROTO;
	return take < blen ? tls_io_write(ssl, (const char *)b + take, blen - take) : 0;
}

/* ---- the output queue ------------------------------------------------------------------- */

size_t tls_io_out_next(struct tls_io *io, const char **p)
{
	if (io->sb_off == io->sb_len) {
		char *b = io->sb;
		size_t cap = io->sb_cap;

		io->sb_off = io->sb_len = 0;
		if (!io->wb_len)
			return 0;
		/* Swap: the queued bytes become the send buffer; OpenSSL appends to the other. */
		io->sb = io->wb;
		io->sb_cap = io->wb_cap;
		io->sb_len = io->wb_len;
		io->wb = b;
		io->wb_cap = cap;
		io->wb_len = 0;
	}
	*p = io->sb + io->sb_off;
	return io->sb_len - io->sb_off;
}

size_t tls_io_out_sent(struct tls_io *io, size_t n)
{
	io->sb_off += n;
	if (io->sb_off >= io->sb_len)
		io->sb_off = io->sb_len = 0;
	return io->sb_len - io->sb_off + io->wb_len;
}
