/* selftests/unit/test_ktls.c — kTLS helpers shared by server and upstream TLS (ktls.c): record counting for sequence numbers, key log parsing, refusals before any key reaches a socket. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "ktls.h"
#include "test.h"

/* A record header: type, version 3.3, length. */
static void hdr(uint8_t *p, uint8_t type, uint16_t len)
{
	p[0] = type;
	p[1] = 3;
	p[2] = 3;
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
}

static void test_records_counted_across_any_split(void)
{
	uint8_t s[5 + 40 + 5 + 1 + 5 + 300 + 5 + 10];
	size_t n = 0;

	hdr(s + n, 22, 40), n += 5 + 40;   /* handshake */
	hdr(s + n, 20, 1), n += 5 + 1;     /* change_cipher_spec */
	hdr(s + n, 22, 300), n += 5 + 300; /* Finished, under the new key */
	hdr(s + n, 23, 10), n += 5 + 10;   /* data */
	for (size_t step = 1; step <= sizeof(s); step = step * 3 + 1) {
		struct ktls_rec rc = { 0 };

		for (size_t off = 0; off < sizeof(s); off += step) {
			size_t k = sizeof(s) - off < step ? sizeof(s) - off : step;

			size_t end = off + k;

			ktls_rec_feed(&rc, s + off, k);
			/* A boundary exactly where a record ends, nowhere else. */
			ASSERT_EQ(ktls_rec_boundary(&rc),
				  end == 45 || end == 51 || end == 356 || end == sizeof(s));
		}
		ASSERT_EQ(rc.records, 4);
		ASSERT_EQ(rc.since_ccs, 2); /* Finished and data after the CCS: TLS 1.2 sequence 2 */
		ASSERT_TRUE(ktls_rec_boundary(&rc));
	}
}

static void test_boundary_only_between_records(void)
{
	uint8_t s[5 + 16];
	struct ktls_rec rc = { 0 };

	hdr(s, 23, 16);
	ASSERT_TRUE(ktls_rec_boundary(&rc));
	ktls_rec_feed(&rc, s, 3); /* half a header */
	ASSERT_FALSE(ktls_rec_boundary(&rc));
	ktls_rec_feed(&rc, s + 3, 10); /* header and part of the body */
	ASSERT_FALSE(ktls_rec_boundary(&rc));
	ASSERT_EQ(rc.records, 1);
	ktls_rec_feed(&rc, s + 13, sizeof(s) - 13);
	ASSERT_TRUE(ktls_rec_boundary(&rc));
}

static void test_keylog_secret_parsed_by_tag(void)
{
	static const char line[] =
		"CLIENT_TRAFFIC_SECRET_0 0011223344556677 a0B1c2d3e4f5061728394a5b6c7d8e9f";
	uint8_t out[EVP_MAX_MD_SIZE];

	ASSERT_EQ(ktls_keylog_secret(line, "CLIENT_TRAFFIC_SECRET_0", out), 16);
	ASSERT_EQ(out[0], 0xa0);
	ASSERT_EQ(out[1], 0xb1);
	ASSERT_EQ(out[15], 0x9f);
	ASSERT_EQ(ktls_keylog_secret(line, "SERVER_TRAFFIC_SECRET_0", out), 0);
	/* A tag that is only a prefix of the line's label is not it. */
	ASSERT_EQ(ktls_keylog_secret(line, "CLIENT_TRAFFIC_SECRET", out), 0);
	ASSERT_EQ(ktls_keylog_secret("CLIENT_TRAFFIC_SECRET_0 norandom", "CLIENT_TRAFFIC_SECRET_0", out), 0);
}

/* Before a handshake there is no cipher: refused without touching the socket. */
static void test_install_refused_without_cipher(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	struct ktls_dir d = { NULL, 0, 0 };
	int fds[2];

	ASSERT_TRUE(ssl != NULL);
	ASSERT_EQ(pipe(fds), 0);
	ASSERT_EQ(ktls_install(fds[0], ssl, false, KTLS_TX | KTLS_RX, &d, &d), -EOPNOTSUPP);
	close(fds[0]);
	close(fds[1]);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
}

static void test_rx_type_defaults_to_data(void)
{
	struct ktls_rxmsg m;
	char buf[16];
	struct msghdr *h = ktls_rxmsg_prep(&m, buf, sizeof(buf));

	ASSERT_TRUE(h->msg_iov->iov_base == buf);
	ASSERT_EQ(h->msg_iov->iov_len, sizeof(buf));
	ASSERT_TRUE(h->msg_controllen >= CMSG_LEN(1));
	h->msg_controllen = 0; /* the kernel gave no control message */
	ASSERT_EQ(ktls_rxmsg_type(&m), KTLS_REC_DATA);
}

int main(void)
{
	RUN(test_records_counted_across_any_split);
	RUN(test_boundary_only_between_records);
	RUN(test_keylog_secret_parsed_by_tag);
	RUN(test_install_refused_without_cipher);
	RUN(test_rx_type_defaults_to_data);
	return test_done();
}
