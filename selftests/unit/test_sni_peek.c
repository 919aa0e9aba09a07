/* selftests/unit/test_sni_peek.c — the ClientHello server_name parser on real and broken hellos. */
#include "../test.h"
#include "../../agent/sni_peek.h"

#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Captured from OpenSSL 3 clients against a Python socket that only read:
 * `openssl s_client -servername a.test` (TLS 1.3), `-noservername`, and
 * `-servername Upper.Example.COM -tls1_2`.
 */
static const uint8_t hello_a_test[] = {
	0x16, 0x03, 0x01, 0x01, 0x33, 0x01, 0x00, 0x01, 0x2f, 0x03, 0x03, 0x96,
	0x0c, 0xbc, 0xf5, 0x24, 0x7a, 0xe7, 0x1a, 0x59, 0x5b, 0x25, 0x18, 0xb8,
	0xd5, 0x70, 0x6b, 0x93, 0xf8, 0xd8, 0xb3, 0x80, 0x98, 0xa8, 0x6a, 0x7c,
	0x6c, 0x20, 0x20, 0x80, 0x05, 0x0f, 0x56, 0x20, 0x5e, 0x1b, 0x57, 0x3a,
	0xff, 0xdf, 0x6b, 0xa5, 0x30, 0xc3, 0xa8, 0x87, 0xa4, 0xe3, 0x5c, 0x3c,
	0x3e, 0x54, 0xed, 0xa1, 0x82, 0x9e, 0x21, 0xe6, 0xd4, 0xea, 0x0e, 0x95,
	0xbe, 0x0a, 0x64, 0x93, 0x00, 0x3e, 0x13, 0x02, 0x13, 0x03, 0x13, 0x01,
	0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa,
	0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b,
	0xc0, 0x23, 0xc0, 0x27, 0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39,
	0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d, 0x00, 0x9c, 0x00, 0x3d,
	0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0xa8,
	0x00, 0x00, 0x00, 0x0b, 0x00, 0x09, 0x00, 0x00, 0x06, 0x61, 0x2e, 0x74,
	0x65, 0x73, 0x74, 0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00,
	0x0a, 0x00, 0x16, 0x00, 0x14, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00,
	0x19, 0x00, 0x18, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03, 0x01,
	0x04, 0x00, 0x23, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00,
	0x00, 0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03, 0x06,
	0x03, 0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08,
	0x04, 0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03,
	0x03, 0x03, 0x01, 0x03, 0x02, 0x04, 0x02, 0x05, 0x02, 0x06, 0x02, 0x00,
	0x2b, 0x00, 0x09, 0x08, 0x03, 0x04, 0x03, 0x03, 0x03, 0x02, 0x03, 0x01,
	0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24,
	0x00, 0x1d, 0x00, 0x20, 0xc1, 0xd3, 0x8b, 0x35, 0xbd, 0x2a, 0x31, 0x26,
	0x5d, 0x81, 0xd6, 0xd6, 0x19, 0x2b, 0x3f, 0x64, 0x76, 0x49, 0x6b, 0x04,
	0x46, 0xea, 0x48, 0x05, 0x23, 0xe0, 0xd5, 0xd2, 0x0d, 0x04, 0x8c, 0x24,
};
static const uint8_t hello_no_sni[] = {
	0x16, 0x03, 0x01, 0x01, 0x24, 0x01, 0x00, 0x01, 0x20, 0x03, 0x03, 0x6b,
	0x0d, 0x51, 0xb9, 0x4c, 0x9e, 0xc6, 0x78, 0xda, 0x43, 0x7e, 0xf7, 0x99,
	0x66, 0x1b, 0x4e, 0xd8, 0x43, 0x69, 0x14, 0xa1, 0xba, 0xf0, 0x1c, 0xff,
	0x21, 0x95, 0xc2, 0x11, 0x35, 0x0e, 0x25, 0x20, 0x68, 0xe2, 0xc9, 0x42,
	0x31, 0x59, 0x75, 0x92, 0xcb, 0xa1, 0x5d, 0x46, 0xe1, 0x8c, 0x15, 0x28,
	0xfe, 0x54, 0x8e, 0x1e, 0xc7, 0x5a, 0xea, 0xa9, 0xe2, 0xa9, 0xea, 0x73,
	0x31, 0x19, 0x72, 0xc0, 0x00, 0x3e, 0x13, 0x02, 0x13, 0x03, 0x13, 0x01,
	0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa,
	0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b,
	0xc0, 0x23, 0xc0, 0x27, 0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39,
	0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d, 0x00, 0x9c, 0x00, 0x3d,
	0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0x99,
	0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x16,
	0x00, 0x14, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18,
	0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03, 0x01, 0x04, 0x00, 0x23,
	0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x0d,
	0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03, 0x08, 0x07,
	0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05,
	0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03, 0x03, 0x03, 0x01,
	0x03, 0x02, 0x04, 0x02, 0x05, 0x02, 0x06, 0x02, 0x00, 0x2b, 0x00, 0x09,
	0x08, 0x03, 0x04, 0x03, 0x03, 0x03, 0x02, 0x03, 0x01, 0x00, 0x2d, 0x00,
	0x02, 0x01, 0x01, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00,
	0x20, 0xbf, 0xe3, 0x1e, 0xbf, 0xa6, 0x58, 0xf2, 0xb8, 0x91, 0x46, 0x16,
	0x2e, 0xe3, 0x65, 0x9b, 0x44, 0xf3, 0xaa, 0x02, 0x45, 0xea, 0x0f, 0xa0,
	0xbe, 0x01, 0xbe, 0x54, 0x6f, 0xd9, 0x55, 0x2e, 0x26,
};
static const uint8_t hello_tls12_upper[] = {
	0x16, 0x03, 0x01, 0x00, 0xd1, 0x01, 0x00, 0x00, 0xcd, 0x03, 0x03, 0x6e,
	0xe8, 0x0d, 0x18, 0xc8, 0x0e, 0xe1, 0xd1, 0x30, 0x5f, 0x1f, 0x80, 0x13,
	0x88, 0x48, 0x8f, 0x18, 0xe7, 0xcb, 0x04, 0x43, 0xbb, 0xd0, 0x3e, 0xe3,
	0x3d, 0x8a, 0x8a, 0x1d, 0x1d, 0xf0, 0xef, 0x00, 0x00, 0x38, 0xc0, 0x2c,
	0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa, 0xc0, 0x2b,
	0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23,
	0xc0, 0x27, 0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09,
	0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d, 0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c,
	0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0x6c, 0x00, 0x00,
	0x00, 0x16, 0x00, 0x14, 0x00, 0x00, 0x11, 0x55, 0x70, 0x70, 0x65, 0x72,
	0x2e, 0x45, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x43, 0x4f, 0x4d,
	0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x0c,
	0x00, 0x0a, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18,
	0x00, 0x23, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00,
	0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03,
	0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04,
	0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03, 0x03,
	0x03, 0x01, 0x03, 0x02, 0x04, 0x02, 0x05, 0x02, 0x06, 0x02,
};

/* One TLS record of the given type around body. */
static size_t record(uint8_t *out, uint8_t type, const uint8_t *body, size_t n)
{
	out[0] = type;
	out[1] = 3;
	out[2] = 1;
	out[3] = (uint8_t)(n >> 8);
	out[4] = (uint8_t)n;
	memcpy(out + 5, body, n);
	return n + 5;
}

/*
 * A minimal ClientHello handshake message with the given extensions block
 * (without its length prefix); returns its length in hs.
 */
static size_t build_hs(uint8_t *hs, const uint8_t *ext, size_t ext_len)
{
	size_t n = 4;

	hs[n++] = 3;
	hs[n++] = 3;
	memset(hs + n, 0x5a, 32); /* random */
	n += 32;
	hs[n++] = 0; /* session id */
	hs[n++] = 0;
	hs[n++] = 2;
	hs[n++] = 0x13;
	hs[n++] = 0x01; /* TLS_AES_128_GCM_SHA256 */
	hs[n++] = 1;
	hs[n++] = 0; /* null compression */
	hs[n++] = (uint8_t)(ext_len >> 8);
	hs[n++] = (uint8_t)ext_len;
	memcpy(hs + n, ext, ext_len);
	n += ext_len;
	hs[0] = 1;
	hs[1] = (uint8_t)((n - 4) >> 16);
	hs[2] = (uint8_t)((n - 4) >> 8);
	hs[3] = (uint8_t)(n - 4);
	return n;
}

/* A server_name extension carrying one host_name. */
static size_t sni_ext(uint8_t *out, const char *name)
{
	size_t l = strlen(name);

	out[0] = 0;
	out[1] = 0;
	out[2] = (uint8_t)((l + 5) >> 8);
	out[3] = (uint8_t)(l + 5);
	out[4] = (uint8_t)((l + 3) >> 8);
	out[5] = (uint8_t)(l + 3);
	out[6] = 0;
	out[7] = (uint8_t)(l >> 8);
	out[8] = (uint8_t)l;
	memcpy(out + 9, name, l);
	return l + 9;
}

/* A whole one-record ClientHello naming name; returns its length. */
static size_t hello_for(uint8_t *out, const char *name)
{
	uint8_t ext[512], hs[1024];
	size_t e = sni_ext(ext, name);

	return record(out, 22, hs, build_hs(hs, ext, e));
}

/* Re-frames the handshake message inside a one-record hello into records of at most chunk bytes. */
static size_t reframe(uint8_t *out, const uint8_t *in, size_t in_len, size_t chunk)
{
	size_t n = 0;

	for (size_t off = 5; off < in_len; off += chunk) {
		size_t c = in_len - off < chunk ? in_len - off : chunk;

		n += record(out + n, 22, in + off, c);
	}
	return n;
}

static char host[SNI_HOST_MAX + 1];

static void test_real_hello_tls13_names_host(void)
{
	ASSERT_EQ(sni_peek_parse(hello_a_test, sizeof(hello_a_test), SNI_PEEK_MAX, host),
		  SNI_PEEK_FOUND);
	ASSERT_STREQ(host, "a.test");
}

static void test_real_hello_without_sni_is_none(void)
{
	strcpy(host, "untouched");
	ASSERT_EQ(sni_peek_parse(hello_no_sni, sizeof(hello_no_sni), SNI_PEEK_MAX, host),
		  SNI_PEEK_NONE);
	ASSERT_STREQ(host, "untouched");
}

static void test_real_hello_tls12_is_lower_cased(void)
{
	ASSERT_EQ(sni_peek_parse(hello_tls12_upper, sizeof(hello_tls12_upper), SNI_PEEK_MAX, host),
		  SNI_PEEK_FOUND);
	ASSERT_STREQ(host, "upper.example.com");
}

static void test_every_truncation_needs_more(void)
{
	const struct {
		const uint8_t *p;
		size_t n;
	} v[] = { { hello_a_test, sizeof(hello_a_test) },
		  { hello_no_sni, sizeof(hello_no_sni) },
		  { hello_tls12_upper, sizeof(hello_tls12_upper) } };

	for (size_t k = 0; k < 3; k++)
		for (size_t i = 0; i < v[k].n; i++)
			ASSERT_EQ(sni_peek_parse(v[k].p, i, SNI_PEEK_MAX, host), SNI_PEEK_NEED_MORE);
}

static void test_hello_split_across_records(void)
{
	static uint8_t out[8192];
	size_t chunks[] = { 1, 3, 4, 100, 200 };

	for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
		size_t n = reframe(out, hello_a_test, sizeof(hello_a_test), chunks[k]);

		memset(host, 0, sizeof(host));
		ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_FOUND);
		ASSERT_STREQ(host, "a.test");
		/* Every record boundary and every byte short of the end: still incomplete. */
		for (size_t i = 0; i < n; i++)
			ASSERT_EQ(sni_peek_parse(out, i, SNI_PEEK_MAX, host), SNI_PEEK_NEED_MORE);
	}
}

static void test_bytes_after_the_hello_are_ignored(void)
{
	static uint8_t out[1024];

	/* The client may pipeline (TLS 1.3 early data): only the hello is judged. */
	memcpy(out, hello_a_test, sizeof(hello_a_test));
	memset(out + sizeof(hello_a_test), 0x17, 40);
	ASSERT_EQ(sni_peek_parse(out, sizeof(hello_a_test) + 40, SNI_PEEK_MAX, host), SNI_PEEK_FOUND);
	ASSERT_STREQ(host, "a.test");
}

static void test_cap_is_enforced(void)
{
	static uint8_t out[8192];
	size_t n;

	ASSERT_EQ(sni_peek_parse(hello_a_test, sizeof(hello_a_test), sizeof(hello_a_test) - 1, host),
		  SNI_PEEK_TOO_BIG);
	ASSERT_EQ(sni_peek_parse(hello_a_test, sizeof(hello_a_test), sizeof(hello_a_test), host),
		  SNI_PEEK_FOUND);
	/* A handshake message that claims 20,000 bytes is refused from its header. */
	memcpy(out, hello_a_test, 9);
	out[6] = 0;
	out[7] = 0x4e;
	out[8] = 0x20;
	ASSERT_EQ(sni_peek_parse(out, 9, SNI_PEEK_MAX, host), SNI_PEEK_TOO_BIG);
	/* The same in 1-byte records: the record headers count against the cap. */
	n = reframe(out, hello_a_test, sizeof(hello_a_test), 1);
	ASSERT_EQ(sni_peek_parse(out, n, n - 1, host), SNI_PEEK_TOO_BIG);
	/* A record longer than TLS allows (16,385). */
	memcpy(out, hello_a_test, 5);
	out[3] = 0x40;
	out[4] = 0x01;
	ASSERT_EQ(sni_peek_parse(out, 5, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
}

static void test_plain_text_is_malformed_at_first_byte(void)
{
	const uint8_t get[] = "GET / HTTP/1.1\r\n";
	const uint8_t ssh[] = "SSH-2.0-OpenSSH\r\n";

	ASSERT_EQ(sni_peek_parse(get, 1, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	ASSERT_EQ(sni_peek_parse(get, sizeof(get) - 1, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	ASSERT_EQ(sni_peek_parse(ssh, sizeof(ssh) - 1, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	/* 0x16 then not a TLS major version. */
	ASSERT_EQ(sni_peek_parse((const uint8_t *)"\x16\x02", 2, SNI_PEEK_MAX, host),
		  SNI_PEEK_MALFORMED);
}

static void test_broken_hellos_are_malformed(void)
{
	static uint8_t out[2048], hs[2048], ext[1024];
	size_t e, n;

	/* Application data record first. */
	memcpy(out, hello_a_test, sizeof(hello_a_test));
	out[0] = 0x17;
	ASSERT_EQ(sni_peek_parse(out, sizeof(hello_a_test), SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	/* A ServerHello (type 2) instead of a ClientHello. */
	memcpy(out, hello_a_test, sizeof(hello_a_test));
	out[5] = 2;
	ASSERT_EQ(sni_peek_parse(out, sizeof(hello_a_test), SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	/* An empty record. */
	ASSERT_EQ(sni_peek_parse((const uint8_t *)"\x16\x03\x01\x00\x00", 5, SNI_PEEK_MAX, host),
		  SNI_PEEK_MALFORMED);
	/* Host names that are not DNS names. */
	const char *bad[] = { "a b.test", "a.test.", ".a.test", "a..test", "a/test", "a.t\xc3\xa9st", "" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = hello_for(out, bad[i]);
		ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	}
	/* A 64-byte label, and a 254-byte name. */
	char name[300];

	memset(name, 'a', 64);
	strcpy(name + 64, ".test");
	n = hello_for(out, name);
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	strcpy(name + 63, ".test"); /* a 63-byte label is fine */
	n = hello_for(out, name);
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_FOUND);
	ASSERT_STREQ(host, name);
	for (size_t i = 0; i < 254; i++)
		name[i] = (i % 50 == 49) ? '.' : 'b';
	name[254] = '\0';
	n = hello_for(out, name);
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	name[253] = '\0';
	n = hello_for(out, name);
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_FOUND);
	/* server_name twice. */
	e = sni_ext(ext, "a.test");
	e += sni_ext(ext + e, "b.test");
	n = record(out, 22, hs, build_hs(hs, ext, e));
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	/* Two host_name entries in one list. */
	e = sni_ext(ext, "a.test");
	memcpy(ext + e, "\x00\x00\x06" "b.test", 9);
	ext[3] = (uint8_t)(ext[3] + 9);
	ext[5] = (uint8_t)(ext[5] + 9);
	n = record(out, 22, hs, build_hs(hs, ext, e + 9));
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	/* The name's length runs past its extension. */
	e = sni_ext(ext, "a.test");
	ext[8] = 7;
	n = record(out, 22, hs, build_hs(hs, ext, e));
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	/* The extension block is longer than the message. */
	e = sni_ext(ext, "a.test");
	n = build_hs(hs, ext, e);
	hs[n - e - 1] = (uint8_t)(hs[n - e - 1] + 1);
	n = record(out, 22, hs, n);
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	/* Bytes after the ClientHello inside its own record. */
	e = sni_ext(ext, "a.test");
	n = build_hs(hs, ext, e);
	hs[n] = 0;
	n = record(out, 22, hs, n + 1);
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
	/* An odd cipher-suite length. */
	n = build_hs(hs, ext, 0);
	hs[4 + 2 + 32 + 1 + 1] = 3;
	n = record(out, 22, hs, n);
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_MALFORMED);
}

static void test_built_hello_and_unknown_name_type(void)
{
	static uint8_t out[2048], hs[2048], ext[1024];
	size_t n;

	n = hello_for(out, "B.Test");
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_FOUND);
	ASSERT_STREQ(host, "b.test");
	/* A name of an unknown type only: no host name. */
	n = sni_ext(ext, "a.test");
	ext[6] = 7;
	n = record(out, 22, hs, build_hs(hs, ext, n));
	ASSERT_EQ(sni_peek_parse(out, n, SNI_PEEK_MAX, host), SNI_PEEK_NONE);
}

/* Random byte flips and truncations of real hellos: never a crash, a host is always a DNS name. */
static void test_fuzzish_mutations(void)
{
	static uint8_t out[8192];
	uint64_t x = 0x9e3779b97f4a7c15ull;
	unsigned found = 0, malformed = 0;

	for (unsigned it = 0; it < 20000; it++) {
		const uint8_t *src = (it & 1) ? hello_a_test : hello_tls12_upper;
		size_t n = (it & 1) ? sizeof(hello_a_test) : sizeof(hello_tls12_upper);
		enum sni_peek_result r;

		if (it % 3 == 0)
			n = reframe(out, src, n, 1 + it % 97);
		else
			memcpy(out, src, n);
		for (unsigned f = 0; f < 1 + it % 4; f++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			out[x % n] = (uint8_t)(x >> 32);
		}
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		if (it % 5 == 0)
			n = x % (n + 1);
		r = sni_peek_parse(out, n, SNI_PEEK_MAX, host);
		ASSERT_TRUE(r <= SNI_PEEK_TOO_BIG);
		if (r == SNI_PEEK_FOUND) {
			found++;
			ASSERT_TRUE(strlen(host) >= 1 && strlen(host) <= SNI_HOST_MAX);
			ASSERT_EQ(strspn(host, "abcdefghijklmnopqrstuvwxyz0123456789-_."), strlen(host));
		}
		if (r == SNI_PEEK_MALFORMED)
			malformed++;
	}
	/* Both outcomes must occur, or the mutations tested nothing. */
	ASSERT_GT(found, 100);
	ASSERT_GT(malformed, 100);
}

static void test_match(void)
{
	ASSERT_TRUE(sni_match("a.test", "a.test"));
	ASSERT_TRUE(sni_match("A.Test", "a.test"));
	ASSERT_FALSE(sni_match("a.test", "b.test"));
	ASSERT_FALSE(sni_match("a.test", "a.test.evil"));
	ASSERT_TRUE(sni_match("*.example.com", "www.example.com"));
	ASSERT_TRUE(sni_match("*.Example.COM", "api.example.com"));
	ASSERT_FALSE(sni_match("*.example.com", "example.com"));
	ASSERT_FALSE(sni_match("*.example.com", "a.b.example.com"));
	ASSERT_FALSE(sni_match("*.example.com", "wwwexample.com"));
	ASSERT_FALSE(sni_match("*.example.com", "www.example.com.evil"));
}

static void test_peek_fd_waits_and_consumes_nothing(void)
{
	int sv[2];
	uint8_t back[1024];
	size_t half = sizeof(hello_a_test) / 2;

	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ASSERT_EQ(write(sv[0], hello_a_test, half), (ssize_t)half);
	ASSERT_EQ(sni_peek_fd(sv[1], SNI_PEEK_MAX, 50, host), SNI_PEEK_TIMEOUT);
	ASSERT_EQ(write(sv[0], hello_a_test + half, sizeof(hello_a_test) - half),
		  (ssize_t)(sizeof(hello_a_test) - half));
	ASSERT_EQ(sni_peek_fd(sv[1], SNI_PEEK_MAX, 2000, host), SNI_PEEK_FOUND);
	ASSERT_STREQ(host, "a.test");
	/* The whole ClientHello is still there for the backend. */
	ASSERT_EQ(recv(sv[1], back, sizeof(back), MSG_DONTWAIT), (ssize_t)sizeof(hello_a_test));
	ASSERT_EQ(memcmp(back, hello_a_test, sizeof(hello_a_test)), 0);
	ASSERT_EQ(write(sv[0], "GET /", 5), 5);
	ASSERT_EQ(sni_peek_fd(sv[1], SNI_PEEK_MAX, 2000, host), SNI_PEEK_MALFORMED);
	ASSERT_EQ(recv(sv[1], back, sizeof(back), MSG_DONTWAIT), 5);
	close(sv[0]);
	ASSERT_EQ(sni_peek_fd(sv[1], SNI_PEEK_MAX, 2000, host), SNI_PEEK_CLOSED);
	close(sv[1]);
}

int main(void)
{
	RUN(test_real_hello_tls13_names_host);
	RUN(test_real_hello_without_sni_is_none);
	RUN(test_real_hello_tls12_is_lower_cased);
	RUN(test_every_truncation_needs_more);
	RUN(test_hello_split_across_records);
	RUN(test_bytes_after_the_hello_are_ignored);
	RUN(test_cap_is_enforced);
	RUN(test_plain_text_is_malformed_at_first_byte);
	RUN(test_broken_hellos_are_malformed);
	RUN(test_built_hello_and_unknown_name_type);
	RUN(test_fuzzish_mutations);
	RUN(test_match);
	RUN(test_peek_fd_waits_and_consumes_nothing);
	return test_done();
}
