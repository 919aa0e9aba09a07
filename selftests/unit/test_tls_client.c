/* selftests/unit/test_tls_client.c — upstream TLS: upstreams[].tls parsing (exact FILE:LINE: KEY:), and the client engine against an in-memory OpenSSL server (verify, SNI, resumption, data). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "test.h"
#include "tls_client.h"

static char dir[] = "/tmp/clawd-test-tls-client-XXXXXX";
static char ca_pem[256], other_ca_pem[256], srv_pem[256], srv_key[256], notpem[256], loose_key[256];

/* ---- an in-process PKI --------------------------------------------------------------- */

static EVP_PKEY *ec_key(void)
{
	return EVP_EC_gen("P-256");
}

static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *san,
		       bool ca)
{
	X509 *x = X509_new();
	X509V3_CTX v3;
	X509_EXTENSION *e;
	static long serial = 1;

	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(x));
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	if (ca) {
		e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	if (san) {
		e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
	return x;
}

static void write_pem(const char *path, X509 *x, EVP_PKEY *k, int mode)
{
	FILE *f = fopen(path, "w");

	if (x)
		PEM_write_X509(f, x);
	if (k)
		PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	chmod(path, mode);
}

static X509 *srv_cert;
static EVP_PKEY *srv_pkey;

static void pki_setup(void)
{
	EVP_PKEY *cak = ec_key(), *ok = ec_key();
	X509 *ca = make_cert("unit CA", cak, NULL, NULL, NULL, true);
	X509 *other = make_cert("other CA", ok, NULL, NULL, NULL, true);
	FILE *f;

	if (!mkdtemp(dir))
		abort();
	snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", dir);
	snprintf(other_ca_pem, sizeof(other_ca_pem), "%s/other.pem", dir);
	snprintf(srv_pem, sizeof(srv_pem), "%s/srv.pem", dir);
	snprintf(srv_key, sizeof(srv_key), "%s/srv.key", dir);
	snprintf(notpem, sizeof(notpem), "%s/notpem.txt", dir);
	snprintf(loose_key, sizeof(loose_key), "%s/loose.key", dir);
	srv_pkey = ec_key();
	srv_cert = make_cert("backend", srv_pkey, ca, cak, "DNS:api.internal,IP:127.0.0.1", false);
	write_pem(ca_pem, ca, NULL, 0644);
	write_pem(other_ca_pem, other, NULL, 0644);
	write_pem(srv_pem, srv_cert, NULL, 0644);
	write_pem(srv_key, NULL, srv_pkey, 0600);
	write_pem(loose_key, NULL, srv_pkey, 0644);
	f = fopen(notpem, "w");
	fputs("not a certificate\n", f);
	fclose(f);
	X509_free(ca);
	X509_free(other);
	EVP_PKEY_free(cak);
	EVP_PKEY_free(ok);
}

static void pki_teardown(void)
{
	const char *files[] = { ca_pem, other_ca_pem, srv_pem, srv_key, notpem, loose_key };

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(files[i]);
	rmdir(dir);
	X509_free(srv_cert);
	EVP_PKEY_free(srv_pkey);
}

/* ---- configuration ------------------------------------------------------------------------ */

static int load(const char *tls_lines, const char *route_extra, struct config **cfg, char *err, size_t errlen)
{
	char y[4096];

	snprintf(y, sizeof(y),
		 "listeners:\n"                  /* 1 */
		 "  - name: web\n"               /* 2 */
		 "    address: 127.0.0.1:8080\n" /* 3 */
		 "upstreams:\n"                  /* 4 */
		 "  - name: api\n"               /* 5 */
		 "    servers: [127.0.0.1:9001]\n" /* 6 */
		 "    tls:\n"                    /* 7 */
		 "%s"                            /* 8.. */
		 "routes:\n"
		 "  - upstream: api\n"
		 "%s",
		 tls_lines, route_extra);
	return config_load_string(y, strlen(y), "t.yaml", cfg, err, errlen);
}

static void expect_error(const char *tls_lines, const char *route_extra, const char *prefix, const char *also)
{
	struct config *cfg = NULL;
	char err[1024] = "";

	ASSERT_EQ(load(tls_lines, route_extra, &cfg, err, sizeof(err)), -EINVAL);
	ASSERT_TRUE(cfg == NULL);
	if (strncmp(err, prefix, strlen(prefix)))
		TEST_FAIL_("message \"%s\" does not start with \"%s\"", err, prefix);
	if (also)
		ASSERT_STRSTR(err, also);
}

static void test_config_errors(void)
{
	char l[1024];

	snprintf(l, sizeof(l), "      ca: /nonexistent/ca.pem\n");
	expect_error(l, "", "t.yaml:8: upstreams[0].tls.ca: /nonexistent/ca.pem: No such file or directory", NULL);
	snprintf(l, sizeof(l), "      ca: %s\n", notpem);
	expect_error(l, "", "t.yaml:8: upstreams[0].tls.ca: ", "no PEM certificate in it");
	snprintf(l, sizeof(l), "      ca: %s\n      cert: %s\n      key: %s\n", ca_pem, srv_pem, loose_key);
	expect_error(l, "", "t.yaml:10: upstreams[0].tls.key: ",
		     "private key is accessible to group or others (mode 0644); chmod 600 it");
	snprintf(l, sizeof(l), "      ca: %s\n      cert: %s\n      key: %s\n", ca_pem, srv_pem, ca_pem);
	expect_error(l, "", "t.yaml:10: upstreams[0].tls.key: ", NULL);
	snprintf(l, sizeof(l), "      ca: %s\n      cert: %s\n", ca_pem, srv_pem);
	expect_error(l, "", "t.yaml:9: upstreams[0].tls.cert: mutual TLS needs both cert and key", NULL);
	snprintf(l, sizeof(l), "      verify: maybe\n");
	expect_error(l, "", "t.yaml:8: upstreams[0].tls.verify: expected on or off, got \"maybe\"", NULL);
	snprintf(l, sizeof(l), "      ca: %s\n      sni: 10.1.2.3\n", ca_pem);
	expect_error(l, "", "t.yaml:9: upstreams[0].tls.sni: \"10.1.2.3\" is not a DNS name", NULL);
	snprintf(l, sizeof(l), "      ca: %s\n      min_version: \"1.1\"\n", ca_pem);
	expect_error(l, "", "t.yaml:9: upstreams[0].tls.min_version: expected \"1.2\" or \"1.3\"", NULL);
	snprintf(l, sizeof(l), "      ca: %s\n      alpn: h2\n", ca_pem);
	expect_error(l, "", "t.yaml:9: upstreams[0].tls.alpn: expected http/1.1 or off", NULL);
	snprintf(l, sizeof(l), "      ca: %s\n", ca_pem);
	expect_error(l, "    mode: splice\n", "t.yaml:11: routes[0].mode: splice mode cannot be used with upstream \"api\"",
		     NULL);
	expect_error(l, "    mode: tcp\n    listeners: [web]\n", "t.yaml:11: routes[0].mode: tcp mode cannot be used", NULL);
}

static void test_config_values(void)
{
	struct config *cfg = NULL;
	char l[1024], err[512] = "";

	snprintf(l, sizeof(l),
		 "      ca: %s\n      sni: api.internal\n      cert: %s\n      key: %s\n"
		 "      min_version: \"1.3\"\n      alpn: \"off\"\n      session_reuse: false\n"
		 "      ktls: \"off\"\n",
		 ca_pem, srv_pem, srv_key);
	ASSERT_EQ(load(l, "", &cfg, err, sizeof(err)), 0);
	if (!cfg) {
		TEST_FAIL_("load: %s", err);
		return;
	}
	const struct cfg_upstream_tls *t = cfg->upstreams[0].tls;

	ASSERT_TRUE(t != NULL);
	ASSERT_STREQ(t->ca, ca_pem);
	ASSERT_STREQ(t->sni, "api.internal");
	ASSERT_TRUE(t->verify);
	ASSERT_EQ(t->min_version, 0x0304);
	ASSERT_FALSE(t->alpn);
	ASSERT_FALSE(t->session_reuse);
	ASSERT_EQ(t->ktls, CFG_KTLS_OFF);
	ASSERT_TRUE(t->ctx != NULL);
	config_free(cfg);
	/* enabled: false leaves the pool plain. */
	ASSERT_EQ(load("      enabled: false\n      ca: /nonexistent\n", "", &cfg, err, sizeof(err)), 0);
	ASSERT_TRUE(cfg && cfg->upstreams[0].tls == NULL);
	config_free(cfg);
}

/* ---- the engine against an in-memory server -------------------------------------------------- */

struct server {
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *in, *out; /* in: what the client sent; out: what the server sends */
	char sni[64];
};

static int srv_sni_cb(SSL *s, int *al, void *arg)
{
	struct server *sv = arg;
	const char *n = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);

	snprintf(sv->sni, sizeof(sv->sni), "%s", n ? n : "");
	return SSL_TLSEXT_ERR_OK;
}

static void server_init(struct server *sv, SSL_CTX *ctx)
{
	memset(sv, 0, sizeof(*sv));
	sv->ctx = ctx;
	SSL_CTX_set_tlsext_servername_callback(ctx, srv_sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, sv);
	sv->ssl = SSL_new(ctx);
	sv->in = BIO_new(BIO_s_mem());
	sv->out = BIO_new(BIO_s_mem());
	SSL_set_bio(sv->ssl, sv->in, sv->out);
	SSL_set_accept_state(sv->ssl);
}

static SSL_CTX *server_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	SSL_CTX_use_certificate(ctx, srv_cert);
	SSL_CTX_use_PrivateKey(ctx, srv_pkey);
	return ctx;
}

/* Copies the server's pending output into the client's ciphertext buffer. */
static void pump_to_client(struct tls_up *t, struct server *sv)
{
	size_t len;
	char *in;
	int k;

	while (BIO_pending(sv->out) > 0) {
		in = tls_up_in_space(t, &len);
		k = BIO_read(sv->out, in, (int)len);
		if (k <= 0)
			break;
		tls_up_in_commit(t, (size_t)k);
	}
}

static int handshake(struct tls_up *t, struct server *sv)
{
	int r = TLS_UP_WANT;

	for (int round = 0; round < 20 && r == TLS_UP_WANT; round++) {
		const char *p;
		size_t n;

		r = tls_up_handshake(t);
		while ((n = tls_up_out_next(t, &p))) {
			BIO_write(sv->in, p, (int)n);
			tls_up_out_sent(t, n);
		}
		ERR_clear_error();
		SSL_do_handshake(sv->ssl);
		ERR_clear_error();
		pump_to_client(t, sv);
	}
	return r;
}

static struct tls_client_ctx *client_ctx(const char *ca, const char *sni, bool verify)
{
	struct cfg_upstream_tls t = { .ca = (char *)ca, .sni = (char *)sni, .verify = verify,
				      .min_version = 0x0303, .alpn = true, .session_reuse = true,
				      .where = "t.yaml:7: upstreams[0].tls" };
	struct tls_client_ctx *x = NULL;
	enum tls_client_key bad;
	char why[256];

	if (tls_client_ctx_new(&t, "unitpool", &x, &bad, why, sizeof(why))) {
		printf("# ctx: %s\n", why);
		test__cur_failed = 1;
	}
	return x;
}

static struct sockaddr_in addr_of(const char *ip)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(443) };

	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static void test_verify_address_and_data(void)
{
	struct tls_client_ctx *x = client_ctx(ca_pem, NULL, true);
	struct sockaddr_in a = addr_of("127.0.0.1");
	SSL_CTX *sctx = server_ctx();
	struct tls_client_counts before, after;
	struct server sv;
	struct tls_up *t;
	char buf[64];
	ssize_t n;

	if (!x)
		return;
	tls_client_counts("unitpool", &before);
	server_init(&sv, sctx);
	t = tls_up_new(x, (struct sockaddr *)&a, "127.0.0.1:443", NULL, 0);
	ASSERT_EQ(handshake(t, &sv), 1);
	ASSERT_STREQ(sv.sni, ""); /* no sni configured: none sent */
	/* Request up, response down. */
	ASSERT_EQ(tls_up_write(t, "ping", 4), 0);
	{
		const char *p;
		size_t k;

		while ((k = tls_up_out_next(t, &p))) {
			BIO_write(sv.in, p, (int)k);
			tls_up_out_sent(t, k);
		}
	}
	ASSERT_EQ(SSL_read(sv.ssl, buf, sizeof(buf)), 4);
	ASSERT_MEMEQ(buf, 4, "ping");
	ASSERT_EQ(SSL_write(sv.ssl, "pong!", 5), 5);
	pump_to_client(t, &sv);
	n = tls_up_read(t, buf, sizeof(buf));
	ASSERT_EQ(n, 5);
	ASSERT_MEMEQ(buf, 5, "pong!");
	ASSERT_EQ(tls_up_read(t, buf, sizeof(buf)), TLS_UP_WANT);
	tls_client_counts("unitpool", &after);
	ASSERT_EQ(after.ok, before.ok + 1);
	tls_up_free(t);
	SSL_free(sv.ssl);

	/* The same certificate dialled at another address: the IP check fails. */
	a = addr_of("10.9.8.7");
	server_init(&sv, sctx);
	t = tls_up_new(x, (struct sockaddr *)&a, "10.9.8.7:443", NULL, TLS_UP_QUIET);
	ASSERT_EQ(handshake(t, &sv), -EPROTO);
	ASSERT_STRSTR(tls_up_reason(t), "certificate verification failed: IP address mismatch");
	tls_up_free(t);
	SSL_free(sv.ssl);
	SSL_CTX_free(sctx);
	tls_client_ctx_free(x);
}

static void test_wrong_ca_and_verify_off(void)
{
	struct tls_client_ctx *x = client_ctx(other_ca_pem, NULL, true), *off;
	struct sockaddr_in a = addr_of("127.0.0.1");
	SSL_CTX *sctx = server_ctx();
	struct tls_client_counts before, after;
	struct server sv;
	struct tls_up *t;

	if (!x)
		return;
	tls_client_counts("unitpool", &before);
	server_init(&sv, sctx);
	t = tls_up_new(x, (struct sockaddr *)&a, "127.0.0.1:443", NULL, 0);
	ASSERT_EQ(handshake(t, &sv), -EPROTO);
	ASSERT_STRSTR(tls_up_reason(t), "certificate verification failed: unable to get local issuer certificate");
	tls_client_counts("unitpool", &after);
	ASSERT_EQ(after.verify_failed, before.verify_failed + 1);
	tls_up_free(t);
	SSL_free(sv.ssl);

	off = client_ctx(other_ca_pem, NULL, false);
	server_init(&sv, sctx);
	t = tls_up_new(off, (struct sockaddr *)&a, "127.0.0.1:443", NULL, 0);
	ASSERT_EQ(handshake(t, &sv), 1);
	tls_up_free(t);
	SSL_free(sv.ssl);
	tls_client_ctx_free(off);
	SSL_CTX_free(sctx);
	tls_client_ctx_free(x);
}

static void test_sni_and_resumption(void)
{
	struct tls_client_ctx *x = client_ctx(ca_pem, "api.internal", true), *wrong;
	struct sockaddr_in a = addr_of("192.0.2.1"); /* not in the certificate: the sni is what counts */
	SSL_CTX *sctx = server_ctx();
	struct tls_client_counts before, after;
	void *slot = NULL;
	struct server sv;
	struct tls_up *t;
	char buf[16];

	if (!x)
		return;
	tls_client_counts("unitpool", &before);
	for (int i = 0; i < 2; i++) {
		server_init(&sv, sctx);
		t = tls_up_new(x, (struct sockaddr *)&a, "192.0.2.1:443", &slot, 0);
		ASSERT_EQ(handshake(t, &sv), 1);
		ASSERT_STREQ(sv.sni, "api.internal");
		ASSERT_EQ(SSL_session_reused(sv.ssl), i);
		/* TLS 1.3 tickets come after the handshake: reading takes them in. */
		ASSERT_EQ(tls_up_read(t, buf, sizeof(buf)), TLS_UP_WANT);
		ASSERT_TRUE(slot != NULL);
		tls_up_free(t);
		SSL_free(sv.ssl);
	}
	tls_client_counts("unitpool", &after);
	ASSERT_EQ(after.resumed, before.resumed + 1);
	tls_client_session_free(slot);

	wrong = client_ctx(ca_pem, "db.internal", true);
	server_init(&sv, sctx);
	t = tls_up_new(wrong, (struct sockaddr *)&a, "192.0.2.1:443", NULL, TLS_UP_QUIET);
	ASSERT_EQ(handshake(t, &sv), -EPROTO);
	ASSERT_STRSTR(tls_up_reason(t), "hostname mismatch");
	tls_up_free(t);
	SSL_free(sv.ssl);
	tls_client_ctx_free(wrong);
	SSL_CTX_free(sctx);
	tls_client_ctx_free(x);
}

/* Makes the completed kTLS read of n bytes in buf look like a record of type `type`. */
static int krx(struct tls_up *t, char *buf, size_t cap, int type, const void *data, size_t n)
{
	struct msghdr *m = tls_up_ktls_rxmsg(t, buf, cap);
	struct cmsghdr *c = CMSG_FIRSTHDR(m);

	c->cmsg_level = 282; /* SOL_TLS */
	c->cmsg_type = 2;    /* TLS_GET_RECORD_TYPE */
	c->cmsg_len = CMSG_LEN(1);
	*CMSG_DATA(c) = (unsigned char)type;
	m->msg_controllen = CMSG_SPACE(1);
	memcpy(buf, data, n);
	return tls_up_ktls_rxresult(t, buf, (int)n);
}

/* kTLS RX: data passes, tickets are skipped across reads, a KeyUpdate fails and counts; off counted once. */
static void test_ktls_rx_records_and_counts(void)
{
	static const uint8_t nst_a[] = { 4, 0, 0, 6, 0xa, 0xb }, nst_b[] = { 0xc, 0xd, 0xe, 0xf };
	static const uint8_t two_nst[] = { 4, 0, 0, 1, 0x1, 4, 0, 0, 0 }, ku[] = { 24, 0, 0, 1, 0 };
	struct tls_client_ctx *x = client_ctx(ca_pem, NULL, true);
	struct sockaddr_in a = addr_of("127.0.0.1");
	SSL_CTX *sctx = server_ctx();
	struct tls_client_counts before, after;
	struct server sv;
	struct tls_up *t;
	char buf[64];

	if (!x)
		return;
	tls_client_counts("unitpool", &before);
	server_init(&sv, sctx);
	t = tls_up_new(x, (struct sockaddr *)&a, "127.0.0.1:443", NULL, 0);
	ASSERT_EQ(handshake(t, &sv), 1);
	ASSERT_EQ(krx(t, buf, sizeof(buf), 23, "hello", 5), 5);
	ASSERT_EQ(krx(t, buf, sizeof(buf), 22, nst_a, sizeof(nst_a)), TLS_UP_WANT);
	ASSERT_EQ(krx(t, buf, sizeof(buf), 22, nst_b, sizeof(nst_b)), TLS_UP_WANT);
	ASSERT_EQ(krx(t, buf, sizeof(buf), 22, two_nst, sizeof(two_nst)), TLS_UP_WANT);
	ASSERT_EQ(krx(t, buf, sizeof(buf), 23, "x", 1), 1);
	ASSERT_EQ(krx(t, buf, sizeof(buf), 21, "\1\0", 2), 0); /* close_notify: the end */
	tls_client_counts("unitpool", &after);
	ASSERT_EQ(after.ktls_keyupdate, before.ktls_keyupdate);
	ASSERT_EQ(krx(t, buf, sizeof(buf), 22, ku, sizeof(ku)), -EPROTO);
	tls_client_counts("unitpool", &after);
	ASSERT_EQ(after.ktls_keyupdate, before.ktls_keyupdate + 1);
	tls_up_free(t);
	SSL_free(sv.ssl);
	/* Never given to the kernel (no socket here): one userspace connection, on any kernel. */
	tls_client_counts("unitpool", &after);
	ASSERT_EQ(after.ktls_off, before.ktls_off + 1);
	ASSERT_EQ(after.ktls_on, before.ktls_on);

	/* A health check's connection is not counted. */
	server_init(&sv, sctx);
	t = tls_up_new(x, (struct sockaddr *)&a, "127.0.0.1:443", NULL, TLS_UP_QUIET);
	ASSERT_EQ(handshake(t, &sv), 1);
	tls_up_free(t);
	SSL_free(sv.ssl);
	tls_client_counts("unitpool", &before);
	ASSERT_EQ(before.ktls_off, after.ktls_off);
	SSL_CTX_free(sctx);
	tls_client_ctx_free(x);
}

int main(void)
{
	pki_setup();
	RUN(test_config_errors);
	RUN(test_config_values);
	RUN(test_verify_address_and_data);
	RUN(test_wrong_ca_and_verify_off);
	RUN(test_sni_and_resumption);
	RUN(test_ktls_rx_records_and_counts);
	pki_teardown();
	return test_done();
}
