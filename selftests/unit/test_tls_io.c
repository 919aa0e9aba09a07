/* selftests/unit/test_tls_io.c — the TLS memory transport (tls_io.c): records per write, reads that stop and resume at record edges, close_notify, a stale error queue. */
#include <errno.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "test.h"
#include "tls_io.h"

#define REC_HDR 5
#define REC_TAG 17 /* TLS 1.3 AES-GCM: content type byte + 16-byte tag */

/* One side of an in-process TLS 1.3 connection over its own memory transport. */
struct side {
	SSL *ssl;
	struct tls_io io;
};

static SSL_CTX *srv_ctx, *cli_ctx;
static struct side srv, cli;

static int ctx_setup(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();

	if (!k || !x)
		return -1;
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"io.test",
				   -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_sign(x, k, EVP_sha256());
	srv_ctx = SSL_CTX_new(TLS_server_method());
	cli_ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(srv_ctx, TLS1_3_VERSION);
	SSL_CTX_set_ciphersuites(srv_ctx, "TLS_AES_128_GCM_SHA256");
	SSL_CTX_set_num_tickets(srv_ctx, 0);
	SSL_CTX_use_certificate(srv_ctx, x);
	SSL_CTX_use_PrivateKey(srv_ctx, k);
	X509_free(x);
	EVP_PKEY_free(k);
	return tls_io_global_init();
}

static int side_new(struct side *s, SSL_CTX *ctx, bool server)
{
	memset(s, 0, sizeof(*s));
	if (tls_io_init(&s->io))
		return -1;
	s->ssl = SSL_new(ctx);
	if (!s->ssl || tls_io_attach(&s->io, s->ssl))
		return -1;
	if (server)
		SSL_set_accept_state(s->ssl);
	else
		SSL_set_connect_state(s->ssl);
	return 0;
}

static void side_free(struct side *s)
{
	SSL_free(s->ssl);
	tls_io_free(&s->io);
	memset(s, 0, sizeof(*s));
}

/* Moves up to max bytes of from's queued ciphertext into to's input; returns how many. */
static size_t pump(struct side *from, struct side *to, size_t max)
{
	size_t moved = 0;

	while (moved < max) {
		const char *p;
		size_t n = tls_io_out_next(&from->io, &p), room;
		char *dst = tls_io_in_space(&to->io, &room);

		if (!n || !room)
			break;
		if (n > room)
			n = room;
		if (n > max - moved)
			n = max - moved;
		memcpy(dst, p, n);
		tls_io_in_commit(&to->io, n);
		tls_io_out_sent(&from->io, n);
		moved += n;
	}
	return moved;
}

static int connect_pair(void)
{
	if (side_new(&srv, srv_ctx, true) || side_new(&cli, cli_ctx, false))
		return -1;
	for (int i = 0; i < 10; i++) {
		int a = SSL_do_handshake(cli.ssl), b;

		pump(&cli, &srv, SIZE_MAX);
		b = SSL_do_handshake(srv.ssl);
		pump(&srv, &cli, SIZE_MAX);
		if (a == 1 && b == 1)
			return 0;
	}
	ERR_clear_error();
	return -1;
}

/* Record lengths (header field) of from's queued ciphertext, without consuming it. */
static int records(struct side *from, size_t *lens, int max)
{
	const char *p;
	size_t n = tls_io_out_next(&from->io, &p), off = 0;
	int k = 0;

	/* tls_io_out_next swapped wb into sb; nothing more is queued behind it here. */
	while (off + REC_HDR <= n && k < max) {
		size_t len = (size_t)(uint8_t)p[off + 3] << 8 | (uint8_t)p[off + 4];

		lens[k++] = len;
		off += REC_HDR + len;
	}
	return off == n ? k : -1;
}

static void fill(char *b, size_t n, char seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (char)(seed + i % 61);
}

static void test_head_and_small_body_one_record(void)
{
	static char head[300], body[3000], got[4096];
	size_t lens[8];
	ssize_t r;

	ASSERT_EQ(connect_pair(), 0);
	fill(head, sizeof(head), 'A');
	fill(body, sizeof(body), 'a');
	ASSERT_EQ(tls_io_write2(srv.ssl, head, sizeof(head), body, sizeof(body)), 0);
	ASSERT_EQ(records(&srv, lens, 8), 1);
	ASSERT_EQ(lens[0], sizeof(head) + sizeof(body) + REC_TAG);
	pump(&srv, &cli, SIZE_MAX);
	r = tls_io_read(cli.ssl, got, sizeof(got));
	ASSERT_EQ(r, sizeof(head) + sizeof(body));
	ASSERT_TRUE(!memcmp(got, head, sizeof(head)) && !memcmp(got + sizeof(head), body, sizeof(body)));
	ASSERT_EQ(tls_io_read(cli.ssl, got, sizeof(got)), TLS_IO_WANT);
}

static void test_head_and_large_body_full_records(void)
{
	static char head[300], body[40000], got[41000];
	size_t lens[8], total = 0;
	ssize_t r;

	ASSERT_EQ(connect_pair(), 0);
	fill(head, sizeof(head), 'H');
	fill(body, sizeof(body), 'b');
	ASSERT_EQ(tls_io_write2(srv.ssl, head, sizeof(head), body, sizeof(body)), 0);
	/* 40300 bytes: two full 16 KiB records and the rest, never a record of the head alone. */
	ASSERT_EQ(records(&srv, lens, 8), 3);
	ASSERT_EQ(lens[0], SSL3_RT_MAX_PLAIN_LENGTH + REC_TAG);
	ASSERT_EQ(lens[1], SSL3_RT_MAX_PLAIN_LENGTH + REC_TAG);
	ASSERT_EQ(lens[2], sizeof(head) + sizeof(body) - 2 * SSL3_RT_MAX_PLAIN_LENGTH + REC_TAG);
	/* The input buffer holds two records at most: pump as the worker's recv would. */
	for (int i = 0; i < 8 && total < sizeof(head) + sizeof(body); i++) {
		pump(&srv, &cli, SIZE_MAX);
		while ((r = tls_io_read(cli.ssl, got + total, sizeof(got) - total)) > 0)
			total += (size_t)r;
		ASSERT_EQ(r, TLS_IO_WANT);
	}
	ASSERT_EQ(total, sizeof(head) + sizeof(body));
	ASSERT_TRUE(!memcmp(got, head, sizeof(head)) && !memcmp(got + sizeof(head), body, sizeof(body)));
}

static void test_write2_one_part_empty(void)
{
	static char a[100], got[256];
	size_t lens[4];

	ASSERT_EQ(connect_pair(), 0);
	fill(a, sizeof(a), '0');
	ASSERT_EQ(tls_io_write2(srv.ssl, a, sizeof(a), NULL, 0), 0);
	ASSERT_EQ(tls_io_write2(srv.ssl, NULL, 0, a, sizeof(a)), 0);
	ASSERT_EQ(tls_io_write2(srv.ssl, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(records(&srv, lens, 4), 2);
	pump(&srv, &cli, SIZE_MAX);
	ASSERT_EQ(tls_io_read(cli.ssl, got, sizeof(got)), 2 * sizeof(a));
}

/* A read goes on while ciphertext is buffered, stops at a partial record and resumes. */
static void test_read_across_records(void)
{
	static char got[256];
	size_t lens[4];

	ASSERT_EQ(connect_pair(), 0);
	ASSERT_EQ(tls_io_write(cli.ssl, "first,", 6), 0);
	ASSERT_EQ(tls_io_write(cli.ssl, "second,", 7), 0);
	ASSERT_EQ(tls_io_write(cli.ssl, "third", 5), 0);
	ASSERT_EQ(records(&cli, lens, 4), 3);
	/* Two records and half of the third. */
	pump(&cli, &srv, 2 * (REC_HDR + 6 + REC_TAG) + 1 + 3);
	ASSERT_EQ(tls_io_read(srv.ssl, got, sizeof(got)), 13);
	ASSERT_MEMEQ(got, 13, "first,second,");
	ASSERT_EQ(tls_io_read(srv.ssl, got, sizeof(got)), TLS_IO_WANT);
	pump(&cli, &srv, SIZE_MAX);
	ASSERT_EQ(tls_io_read(srv.ssl, got, sizeof(got)), 5);
	ASSERT_MEMEQ(got, 5, "third");
}

/* A record larger than the buffer: the rest stays in OpenSSL and comes without new ciphertext. */
static void test_read_small_buffer(void)
{
	static char got[16];

	ASSERT_EQ(connect_pair(), 0);
	ASSERT_EQ(tls_io_write(cli.ssl, "0123456789abcdefXYZ", 19), 0);
	pump(&cli, &srv, SIZE_MAX);
	ASSERT_EQ(tls_io_read(srv.ssl, got, 16), 16);
	ASSERT_FALSE(tls_io_in_pending(&srv.io));
	ASSERT_EQ(tls_io_read(srv.ssl, got, 16), 3);
	ASSERT_MEMEQ(got, 3, "XYZ");
	ASSERT_EQ(tls_io_read(srv.ssl, got, 16), TLS_IO_WANT);
}

/* Data then close_notify in one delivery: the data first, the end on the next call. */
static void test_read_data_then_close_notify(void)
{
	static char got[64];

	ASSERT_EQ(connect_pair(), 0);
	ASSERT_EQ(tls_io_write(cli.ssl, "bye", 3), 0);
	SSL_shutdown(cli.ssl);
	pump(&cli, &srv, SIZE_MAX);
	ASSERT_EQ(tls_io_read(srv.ssl, got, sizeof(got)), 3);
	ASSERT_EQ(tls_io_read(srv.ssl, got, sizeof(got)), 0);
}

/* An error left on the thread's queue by unrelated code must not turn WANT_READ into a failure. */
static void test_stale_error_queue(void)
{
	static char got[64];

	ASSERT_EQ(connect_pair(), 0);
	ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
	ASSERT_EQ(tls_io_read(srv.ssl, got, sizeof(got)), TLS_IO_WANT);
	ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
	ASSERT_EQ(tls_io_write(srv.ssl, "x", 1), 0);
	pump(&srv, &cli, SIZE_MAX);
	ASSERT_EQ(tls_io_read(cli.ssl, got, sizeof(got)), 1);
	ASSERT_EQ(ERR_peek_error(), 0);
}

/* Garbage where a record should be: -EPROTO, and the queue is left empty. */
static void test_read_garbage(void)
{
	static char got[64];
	size_t room;
	char *p;

	ASSERT_EQ(connect_pair(), 0);
	p = tls_io_in_space(&srv.io, &room);
	memcpy(p, "\x17\x03\x03\x00\x20" "0123456789abcdef0123456789abcdef", 37);
	tls_io_in_commit(&srv.io, 37);
	ASSERT_EQ(tls_io_read(srv.ssl, got, sizeof(got)), -EPROTO);
	ASSERT_EQ(ERR_peek_error(), 0);
}

#define RUN_PAIR(fn)            \
	do {                    \
		RUN(fn);        \
		side_free(&srv); \
		side_free(&cli); \
	} while (0)

int main(void)
{
	if (ctx_setup()) {
		printf("Bail out! no OpenSSL context\n");
		return 1;
	}
	RUN_PAIR(test_head_and_small_body_one_record);
	RUN_PAIR(test_head_and_large_body_full_records);
	RUN_PAIR(test_write2_one_part_empty);
	RUN_PAIR(test_read_across_records);
	RUN_PAIR(test_read_small_buffer);
	RUN_PAIR(test_read_data_then_close_notify);
	RUN_PAIR(test_stale_error_queue);
	RUN_PAIR(test_read_garbage);
	SSL_CTX_free(srv_ctx);
	SSL_CTX_free(cli_ctx);
	return test_done();
}
