/* selftests/unit/test_jwt.c — JWT validation matrix: every alg, time claims and leeway, iss/aud, key confusion, JWKS kid and reload, malformed input, claim headers. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "config.h"
#include "jwt.h"
#include "log.h"
#include "test.h"

#define NOW 1700000000LL

static char dir[64];
static EVP_PKEY *rsa1, *rsa2, *ec256, *ec384, *rsa_small;
static char secret64[65] = "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789ABCDEF";

/* ---- helpers: files, base64url, signing ---------------------------------------------------- */

static const char *tpath(const char *name)
{
	static char buf[8][128];
	static int i;

	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
	return buf[i];
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	FILE *f = fopen(path, "w");

	fwrite(data, 1, len, f);
	fclose(f);
	chmod(path, mode);
}

static void b64url(const unsigned char *in, size_t len, char *out)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0, i;

	for (i = 0; i + 2 < len; i += 3) {
		unsigned v = in[i] << 16 | in[i + 1] << 8 | in[i + 2];

		out[o++] = tbl[v >> 18];
		out[o++] = tbl[(v >> 12) & 63];
		out[o++] = tbl[(v >> 6) & 63];
		out[o++] = tbl[v & 63];
	}
	if (len - i == 1) {
		out[o++] = tbl[in[i] >> 2];
		out[o++] = tbl[(in[i] & 3) << 4];
	} else if (len - i == 2) {
		unsigned v = in[i] << 8 | in[i + 1];

		out[o++] = tbl[v >> 10];
		out[o++] = tbl[(v >> 4) & 63];
		out[o++] = tbl[(v & 15) << 2];
	}
	out[o] = '\0';
}

static const EVP_MD *md_of(const char *alg)
{
	return strstr(alg, "256") ? EVP_sha256() : strstr(alg, "384") ? EVP_sha384() : EVP_sha512();
}

/*
 * Builds header.payload.signature. key: an EVP_PKEY for RS/ES; secret for HS
 * (any bytes: that is how the confusion attack signs with a PEM text).
 */
static char *make_token(const char *header, const char *payload, const char *alg, EVP_PKEY *key,
			const void *secret, size_t secret_len)
{
	static char tok[16][16384];
	static int slot;
	char *t = tok[slot = (slot + 1) % 16];
	unsigned char sig[1024];
	size_t slen = sizeof(sig), n;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	b64url((const unsigned char *)header, strlen(header), t);
	n = strlen(t);
	t[n++] = '.';
	b64url((const unsigned char *)payload, strlen(payload), t + n);
	n = strlen(t);
	if (alg[0] == 'H') {
		EVP_PKEY *h = EVP_PKEY_new_raw_private_key(EVP_PKEY_HMAC, NULL, secret, secret_len);

		EVP_DigestSignInit(ctx, NULL, md_of(alg), NULL, h);
		EVP_DigestSign(ctx, sig, &slen, (unsigned char *)t, n);
		EVP_PKEY_free(h);
	} else if (alg[0] == 'R') {
		EVP_DigestSignInit(ctx, NULL, md_of(alg), NULL, key);
		EVP_DigestSign(ctx, sig, &slen, (unsigned char *)t, n);
	} else if (alg[0] == 'E') {
		unsigned char der[256];
		const unsigned char *p = der;
		size_t dlen = sizeof(der), fl = strstr(alg, "256") ? 32 : 48;
		ECDSA_SIG *es;

		EVP_DigestSignInit(ctx, NULL, md_of(alg), NULL, key);
		EVP_DigestSign(ctx, der, &dlen, (unsigned char *)t, n);
		es = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
		BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, (int)fl);
		BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + fl, (int)fl);
		ECDSA_SIG_free(es);
		slen = 2 * fl;
	} else {
		slen = 0; /* "none" */
	}
	EVP_MD_CTX_free(ctx);
	t[n++] = '.';
	b64url(sig, slen, t + n);
	return t;
}

static char *hdr(const char *alg, const char *kid)
{
	static char buf[8][256];
	static int i;

	i = (i + 1) % 8;
	if (kid)
		snprintf(buf[i], sizeof(buf[i]), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
	else
		snprintf(buf[i], sizeof(buf[i]), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
	return buf[i];
}

/* A standard payload: sub, iss, aud, iat, exp = NOW + 600. */
static const char *std_payload(void)
{
	static char buf[256];

	snprintf(buf, sizeof(buf),
		 "{\"sub\":\"alice\",\"iss\":\"https://idp.test\",\"aud\":\"api\",\"iat\":%lld,\"exp\":%lld}",
		 NOW - 10, NOW + 600);
	return buf;
}

static void write_pubkey(const char *path, EVP_PKEY *k)
{
	BIO *b = BIO_new_file(path, "w");

	PEM_write_bio_PUBKEY(b, k);
	BIO_free(b);
}

static char *read_text(const char *path, size_t *len)
{
	static char buf[8192];
	FILE *f = fopen(path, "r");

	*len = fread(buf, 1, sizeof(buf) - 1, f);
	buf[*len] = '\0';
	fclose(f);
	return buf;
}

static void bn_b64(EVP_PKEY *k, const char *param, int pad, char *out)
{
	BIGNUM *bn = NULL;
	unsigned char bin[600];
	int n;

	EVP_PKEY_get_bn_param(k, param, &bn);
	n = pad ? BN_bn2binpad(bn, bin, pad) : BN_bn2bin(bn, bin);
	b64url(bin, (size_t)n, out);
	BN_free(bn);
}

static int jwk_rsa(char *out, size_t cap, EVP_PKEY *k, const char *kid)
{
	char n[800], e[16];

	bn_b64(k, OSSL_PKEY_PARAM_RSA_N, 0, n);
	bn_b64(k, OSSL_PKEY_PARAM_RSA_E, 0, e);
	return snprintf(out, cap, "{\"kty\":\"RSA\",\"use\":\"sig\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"}",
			kid, n, e);
}

static int jwk_ec(char *out, size_t cap, EVP_PKEY *k, const char *kid, const char *crv, int fl)
{
	char x[100], y[100];

	bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, fl, x);
	bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, fl, y);
	return snprintf(out, cap, "{\"kty\":\"EC\",\"crv\":\"%s\",\"kid\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}",
			crv, kid, x, y);
}

static uint32_t alg_bit(const char *name)
{
	return 1u << jwt_alg_from_name(name);
}

/* A verifier for PEM files and a secret, all algorithms allowed, iss/aud checked. */
static struct cfg_jwt *std_verifier(uint32_t algs)
{
	struct cfg_jwt *v = jwt_new();
	struct jwt_policy *c = jwt_policy(v);
	char err[256];

	c->algs = algs;
	c->issuers = calloc(1, sizeof(char *));
	c->issuers[0] = strdup("https://idp.test");
	c->nissuers = 1;
	c->audiences = calloc(2, sizeof(char *));
	c->audiences[0] = strdup("api");
	c->audiences[1] = strdup("api2");
	c->naudiences = 2;
	c->leeway_s = 30;
	if (jwt_add_pem(v, tpath("rsa1.pem"), err, sizeof(err)) ||
	    jwt_add_pem(v, tpath("ec.pem"), err, sizeof(err)) ||
	    jwt_add_hmac_file(v, tpath("secret"), err, sizeof(err)) ||
	    jwt_check(v, err, sizeof(err))) {
		printf("# std_verifier: %s\n", err);
		jwt_free(v);
		return NULL;
	}
	return v;
}

#define ALL_ALGS ((1u << JWT_ALG_N) - 1)

static enum jwt_err verify_at(struct cfg_jwt *v, const char *tok, int64_t now,
			      struct jwt_result *r)
{
	return jwt_verify(v, tok, strlen(tok), now, r);
}

static enum jwt_err verify(struct cfg_jwt *v, const char *tok)
{
	struct jwt_result r;

	return verify_at(v, tok, NOW, &r);
}

#define ASSERT_JWT(call, want)                                                             \
	do {                                                                               \
		enum jwt_err got__ = (call), want__ = (want);                              \
		if (got__ != want__)                                                       \
			TEST_FAIL_("%s: got %s, want %s", #call, jwt_err_name(got__),      \
				   jwt_err_name(want__));                                  \
	} while (0)

/* ---- every algorithm --------------------------------------------------------------------- */

static void alg_valid(const char *alg)
{
	struct cfg_jwt *v = std_verifier(ALL_ALGS);
	struct jwt_result r;
	EVP_PKEY *k = alg[0] == 'R' ? rsa1 : !strcmp(alg, "ES256") ? ec256 : ec384;
	const char *tok = make_token(hdr(alg, NULL), std_payload(), alg, k, secret64, 64);

	ASSERT_TRUE(v != NULL);
	ASSERT_JWT(verify_at(v, tok, NOW, &r), JWT_OK);
	ASSERT_STREQ(jwt_alg_name(r.alg), alg);
	ASSERT_STREQ(r.sub, "alice");
	ASSERT_EQ(r.exp, NOW + 600);
	jwt_free(v);
}

static void test_ec384_file_with_ec256(void)
{
	/* ES384 needs the P-384 key: the P-256 file alone must not verify it. */
	struct cfg_jwt *v = jwt_new();
	char err[256];

	jwt_policy(v)->algs = alg_bit("ES384");
	ASSERT_EQ(jwt_add_pem(v, tpath("ec256.pem"), err, sizeof(err)), 0);
	ASSERT_EQ(jwt_check(v, err, sizeof(err)), -EINVAL);
	ASSERT_STRSTR(err, "ES384 is allowed but no key can verify it");
	jwt_free(v);
}

/* ---- time claims and leeway --------------------------------------------------------------- */

__attribute__((format(printf, 1, 2)))
static char *hs_payload(const char *fmt, ...)
{
	static char pay[4][512], *p;
	static int i;
	char body[400];
	va_list ap;

	i = (i + 1) % 4;
	p = pay[i];
	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	snprintf(p, 512, "{\"iss\":\"https://idp.test\",\"aud\":\"api\",%s}", body);
	return make_token(hdr("HS256", NULL), p, "HS256", NULL, secret64, 64);
}

static void test_expired_and_not_yet_valid(void)
{
	struct cfg_jwt *v = std_verifier(alg_bit("HS256"));

	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"iat\":%lld", NOW - 3600, NOW - 7200)),
		   JWT_ERR_EXPIRED);
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"nbf\":%lld", NOW + 7200, NOW + 3600)),
		   JWT_ERR_NOT_YET_VALID);
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"iat\":%lld", NOW + 7200, NOW + 3600)),
		   JWT_ERR_ISSUED_IN_FUTURE);
	ASSERT_JWT(verify(v, hs_payload("\"sub\":\"x%lld\",\"n\":%lld", 1LL, 2LL)), JWT_ERR_MISSING_EXP);
	ASSERT_JWT(verify(v, hs_payload("\"exp\":\"%lld\",\"n\":%lld", NOW + 60, 0LL)), JWT_ERR_BAD_CLAIM);
	/* Fractional NumericDate is allowed (RFC 7519 §2). */
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld.5,\"nbf\":%lld.25", NOW + 60, NOW - 60)), JWT_OK);
	jwt_policy(v)->require_exp = false;
	ASSERT_JWT(verify(v, hs_payload("\"sub\":\"x%lld\",\"n\":%lld", 1LL, 2LL)), JWT_OK);
	jwt_free(v);
}

static void test_leeway_boundaries(void)
{
	struct cfg_jwt *v = std_verifier(alg_bit("HS256")); /* leeway 30 s */

	/* exp: valid while now < exp + leeway. */
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"x\":%lld", NOW - 29, 0LL)), JWT_OK);
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"x\":%lld", NOW - 30, 0LL)), JWT_ERR_EXPIRED);
	/* nbf: valid once now + leeway >= nbf. */
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"nbf\":%lld", NOW + 600, NOW + 30)), JWT_OK);
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"nbf\":%lld", NOW + 600, NOW + 31)),
		   JWT_ERR_NOT_YET_VALID);
	/* iat: at most leeway in the future. */
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"iat\":%lld", NOW + 600, NOW + 30)), JWT_OK);
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"iat\":%lld", NOW + 600, NOW + 31)),
		   JWT_ERR_ISSUED_IN_FUTURE);
	jwt_policy(v)->leeway_s = 0;
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"x\":%lld", NOW + 1, 0LL)), JWT_OK);
	ASSERT_JWT(verify(v, hs_payload("\"exp\":%lld,\"x\":%lld", NOW, 0LL)), JWT_ERR_EXPIRED);
	jwt_free(v);
}

/* ---- iss and aud ------------------------------------------------------------------------------ */

static char *hs_raw(const char *payload)
{
	return make_token(hdr("HS256", NULL), payload, "HS256", NULL, secret64, 64);
}

static void test_issuer(void)
{
	struct cfg_jwt *v = std_verifier(alg_bit("HS256"));
	char p[256];

	snprintf(p, sizeof(p), "{\"iss\":\"https://evil.test\",\"aud\":\"api\",\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_ERR_WRONG_ISSUER);
	snprintf(p, sizeof(p), "{\"aud\":\"api\",\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_ERR_WRONG_ISSUER);
	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test/\",\"aud\":\"api\",\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_ERR_WRONG_ISSUER);
	snprintf(p, sizeof(p), "{\"iss\":7,\"aud\":\"api\",\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_ERR_BAD_CLAIM);
	jwt_free(v);
}

static void test_audience(void)
{
	struct cfg_jwt *v = std_verifier(alg_bit("HS256"));
	char p[256];

	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"aud\":\"other\",\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_ERR_WRONG_AUDIENCE);
	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"aud\":[\"x\",\"y\"],\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_ERR_WRONG_AUDIENCE);
	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"aud\":[],\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_ERR_WRONG_AUDIENCE);
	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_ERR_WRONG_AUDIENCE);
	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"aud\":[\"x\",\"api2\"],\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_OK);
	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"aud\":\"api2\",\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_OK);
	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"aud\":[\"api\",3],\"exp\":%lld}", NOW + 60);
	ASSERT_JWT(verify(v, hs_raw(p)), JWT_ERR_BAD_CLAIM);
	jwt_free(v);
}

/* ---- signatures ------------------------------------------------------------------------------------ */

/* Changes one base64url character inside segment seg (0..2) to another valid one. */
static char *flip(const char *tok, int seg)
{
	static char out[16384];
	char *p;

	strcpy(out, tok);
	p = out;
	for (int i = 0; i < seg; i++)
		p = strchr(p, '.') + 1;
	p += 5;
	*p = *p == 'A' ? 'B' : 'A';
	return out;
}

/* The same token with another (well-formed) payload: sub "mallory" under alice's signature. */
static char *swap_payload(const char *tok)
{
	static char out[16384];
	char pay[256], enc[512];

	snprintf(pay, sizeof(pay),
		 "{\"sub\":\"mallory\",\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld}",
		 NOW + 600);
	b64url((const unsigned char *)pay, strlen(pay), enc);
	snprintf(out, sizeof(out), "%.*s.%s%s", (int)(strchr(tok, '.') - tok), tok, enc, strrchr(tok, '.'));
	return out;
}

static void test_bad_signature(void)
{
	struct cfg_jwt *v = std_verifier(ALL_ALGS);
	static const char *const algs[] = { "HS256", "RS256", "ES256", "ES384" };

	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
		EVP_PKEY *k = algs[i][0] == 'R' ? rsa1 : !strcmp(algs[i], "ES256") ? ec256 : ec384;
		const char *tok = make_token(hdr(algs[i], NULL), std_payload(), algs[i], k, secret64, 64);

		ASSERT_JWT(verify(v, tok), JWT_OK);
		ASSERT_JWT(verify(v, flip(tok, 2)), JWT_ERR_BAD_SIGNATURE);
		ASSERT_JWT(verify(v, swap_payload(tok)), JWT_ERR_BAD_SIGNATURE);
	}
	/* A token signed by a key we do not hold. */
	ASSERT_JWT(verify(v, make_token(hdr("RS256", NULL), std_payload(), "RS256", rsa2, NULL, 0)),
		   JWT_ERR_BAD_SIGNATURE);
	/* A truncated ECDSA signature is refused, not mis-parsed. */
	{
		char t[4096];
		const char *tok = make_token(hdr("ES256", NULL), std_payload(), "ES256", ec256, NULL, 0);

		/* 84 characters: 63 bytes, one short of r || s. */
		snprintf(t, sizeof(t), "%.*s%084d", (int)(strrchr(tok, '.') - tok + 1), tok, 0);
		for (char *q = strrchr(t, '.') + 1; *q; q++)
			*q = 'A';
		ASSERT_JWT(verify(v, t), JWT_ERR_BAD_SIGNATURE);
	}
	jwt_free(v);
}

static void test_alg_none_refused(void)
{
	struct cfg_jwt *v = std_verifier(ALL_ALGS);
	const char *tok = make_token("{\"alg\":\"none\"}", std_payload(), "none", NULL, NULL, 0);

	ASSERT_JWT(verify(v, tok), JWT_ERR_ALG_NOT_ALLOWED);
	ASSERT_JWT(verify(v, make_token("{\"alg\":\"None\"}", std_payload(), "none", NULL, NULL, 0)),
		   JWT_ERR_ALG_NOT_ALLOWED);
	ASSERT_JWT(verify(v, make_token("{\"alg\":\"hs256\"}", std_payload(), "HS256", NULL, secret64, 64)),
		   JWT_ERR_ALG_NOT_ALLOWED);
	ASSERT_JWT(verify(v, make_token("{\"typ\":\"JWT\"}", std_payload(), "HS256", NULL, secret64, 64)),
		   JWT_ERR_ALG_NOT_ALLOWED);
	/* An allowed alg with an empty signature is a bad signature, not "none". */
	{
		char t[4096];
		const char *h = make_token(hdr("HS256", NULL), std_payload(), "HS256", NULL, secret64, 64);

		snprintf(t, sizeof(t), "%.*s", (int)(strrchr(h, '.') - h + 1), h);
		ASSERT_JWT(verify(v, t), JWT_ERR_BAD_SIGNATURE);
	}
	jwt_free(v);
}

static void test_alg_not_in_route_list(void)
{
	struct cfg_jwt *v = std_verifier(alg_bit("RS256"));

	ASSERT_JWT(verify(v, make_token(hdr("RS256", NULL), std_payload(), "RS256", rsa1, NULL, 0)), JWT_OK);
	ASSERT_JWT(verify(v, make_token(hdr("RS512", NULL), std_payload(), "RS512", rsa1, NULL, 0)),
		   JWT_ERR_ALG_NOT_ALLOWED);
	ASSERT_JWT(verify(v, make_token(hdr("HS256", NULL), std_payload(), "HS256", NULL, secret64, 64)),
		   JWT_ERR_ALG_NOT_ALLOWED);
	jwt_free(v);
}

static void test_rs_to_hs_confusion_refused(void)
{
	/* The classic attack: HS256 "signed" with the server's public PEM as the secret. */
	struct cfg_jwt *v = jwt_new();
	size_t plen;
	char err[256], pem[8192];
	const char *tok;

	const char *txt = read_text(tpath("rsa1.pem"), &plen);

	memcpy(pem, txt, plen + 1);
	jwt_policy(v)->algs = alg_bit("RS256") | alg_bit("HS256");
	ASSERT_EQ(jwt_add_pem(v, tpath("rsa1.pem"), err, sizeof(err)), 0);
	/* Even a route allowing HS256 next to a PEM file has no secret for it: refused at load... */
	ASSERT_EQ(jwt_check(v, err, sizeof(err)), -EINVAL);
	ASSERT_STRSTR(err, "HS256");
	/* ...and at run time the PEM is never used as an HMAC key. */
	tok = make_token(hdr("HS256", NULL), std_payload(), "HS256", NULL, pem, plen);
	ASSERT_JWT(verify(v, tok), JWT_ERR_NO_KEY);
	tok = make_token(hdr("HS256", NULL), std_payload(), "HS256", NULL, pem, plen - 1);
	ASSERT_JWT(verify(v, tok), JWT_ERR_NO_KEY);
	jwt_free(v);

	/* The usual route (RS256 only) refuses it before any key is looked at. */
	v = std_verifier(alg_bit("RS256"));
	tok = make_token(hdr("HS256", NULL), std_payload(), "HS256", NULL, pem, plen);
	ASSERT_JWT(verify(v, tok), JWT_ERR_ALG_NOT_ALLOWED);
	jwt_free(v);
}

/* ---- JWKS -------------------------------------------------------------------------------------------- */

static void write_jwks(const char *path, const char *k1, const char *k2, const char *k3)
{
	char buf[16384];
	int n = snprintf(buf, sizeof(buf), "{\"keys\":[%s%s%s%s%s]}", k1, k2 ? "," : "", k2 ? k2 : "",
			 k3 ? "," : "", k3 ? k3 : "");

	write_file(path, buf, (size_t)n, 0644);
}

static struct cfg_jwt *jwks_verifier(const char *path, uint32_t algs)
{
	struct cfg_jwt *v = jwt_new();
	char err[256];

	jwt_policy(v)->algs = algs;
	if (jwt_add_jwks(v, path, err, sizeof(err)) || jwt_check(v, err, sizeof(err))) {
		printf("# jwks_verifier: %s\n", err);
		jwt_free(v);
		return NULL;
	}
	return v;
}

static void test_jwks_kid_selection(void)
{
	char a[2048], b[2048], e[512], oct[256], sec[100];
	struct cfg_jwt *v;

	jwk_rsa(a, sizeof(a), rsa1, "key-a");
	jwk_rsa(b, sizeof(b), rsa2, "key-b");
	jwk_ec(e, sizeof(e), ec256, "key-e", "P-256", 32);
	b64url((const unsigned char *)secret64, 64, sec);
	snprintf(oct, sizeof(oct), "{\"kty\":\"oct\",\"kid\":\"key-h\",\"alg\":\"HS512\",\"k\":\"%s\"}", sec);
	{
		char three[4096];

		snprintf(three, sizeof(three), "%s,%s", e, oct);
		write_jwks(tpath("jwks.json"), a, b, three);
	}
	v = jwks_verifier(tpath("jwks.json"), ALL_ALGS);
	ASSERT_TRUE(v != NULL);
	ASSERT_JWT(verify(v, make_token(hdr("RS256", "key-b"), std_payload(), "RS256", rsa2, NULL, 0)), JWT_OK);
	ASSERT_JWT(verify(v, make_token(hdr("RS384", "key-a"), std_payload(), "RS384", rsa1, NULL, 0)), JWT_OK);
	/* The kid picks the key: rsa2's signature under key-a's kid fails. */
	ASSERT_JWT(verify(v, make_token(hdr("RS256", "key-a"), std_payload(), "RS256", rsa2, NULL, 0)),
		   JWT_ERR_BAD_SIGNATURE);
	ASSERT_JWT(verify(v, make_token(hdr("RS256", "key-z"), std_payload(), "RS256", rsa2, NULL, 0)),
		   JWT_ERR_UNKNOWN_KID);
	/* No kid: every key of the type is a candidate. */
	ASSERT_JWT(verify(v, make_token(hdr("RS256", NULL), std_payload(), "RS256", rsa2, NULL, 0)), JWT_OK);
	ASSERT_JWT(verify(v, make_token(hdr("ES256", "key-e"), std_payload(), "ES256", ec256, NULL, 0)), JWT_OK);
	/* A kid naming an RSA key cannot be used with an HMAC alg (confusion via JWKS). */
	ASSERT_JWT(verify(v, make_token(hdr("HS256", "key-a"), std_payload(), "HS256", NULL, secret64, 64)),
		   JWT_ERR_NO_KEY);
	/* The oct key is bound to HS512 by its "alg". */
	ASSERT_JWT(verify(v, make_token(hdr("HS512", "key-h"), std_payload(), "HS512", NULL, secret64, 64)), JWT_OK);
	ASSERT_JWT(verify(v, make_token(hdr("HS256", "key-h"), std_payload(), "HS256", NULL, secret64, 64)),
		   JWT_ERR_NO_KEY);
	jwt_free(v);
}

static void test_jwks_reload_on_change(void)
{
	char a[2048], b[2048];
	struct cfg_jwt *v;
	const char *t1 = make_token(hdr("RS256", "k1"), std_payload(), "RS256", rsa1, NULL, 0);
	const char *t2 = make_token(hdr("RS256", "k2"), std_payload(), "RS256", rsa2, NULL, 0);
	struct timespec ts[2] = { { 0, UTIME_OMIT }, { 1000000000, 0 } };

	jwk_rsa(a, sizeof(a), rsa1, "k1");
	jwk_rsa(b, sizeof(b), rsa2, "k2");
	write_jwks(tpath("rot.json"), a, NULL, NULL);
	v = jwks_verifier(tpath("rot.json"), alg_bit("RS256"));
	ASSERT_TRUE(v != NULL);
	ASSERT_JWT(verify(v, t1), JWT_OK);
	ASSERT_JWT(verify(v, t2), JWT_ERR_UNKNOWN_KID);
	/* Rotation: k2 replaces k1. The check happens at most once per second. */
	write_jwks(tpath("rot.json"), b, NULL, NULL);
	utimensat(AT_FDCWD, tpath("rot.json"), ts, 0);
	jwt_maybe_reload(v, UINT64_MAX / 4);
	ASSERT_JWT(verify(v, t2), JWT_OK);
	ASSERT_JWT(verify(v, t1), JWT_ERR_UNKNOWN_KID);
	/* A broken file keeps the previous keys. */
	write_file(tpath("rot.json"), "{\"keys\":[", 9, 0644);
	ts[1].tv_sec = 1000000100;
	utimensat(AT_FDCWD, tpath("rot.json"), ts, 0);
	jwt_maybe_reload(v, UINT64_MAX / 2);
	ASSERT_JWT(verify(v, t2), JWT_OK);
	jwt_free(v);
}

static void test_jwks_errors(void)
{
	struct cfg_jwt *v = jwt_new();
	char err[256], k[2048];

	jwt_policy(v)->algs = alg_bit("RS256");
	write_file(tpath("bad.json"), "[1,2]", 5, 0644);
	ASSERT_EQ(jwt_add_jwks(v, tpath("bad.json"), err, sizeof(err)), -EINVAL);
	ASSERT_STRSTR(err, "not a JWKS");
	{
		static const char bad[] = "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQ==\"}]}";

		write_file(tpath("bad.json"), bad, strlen(bad), 0644);
	}
	ASSERT_EQ(jwt_add_jwks(v, tpath("bad.json"), err, sizeof(err)), -EINVAL);
	ASSERT_STRSTR(err, "keys[0]");
	/* Unknown kty, encryption keys and unimplemented algs are skipped, not errors. */
	jwk_rsa(k, sizeof(k), rsa1, "ok");
	{
		char buf[4096];
		int n = snprintf(buf, sizeof(buf),
				 "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"},"
				 "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"!\",\"e\":\"!\"},"
				 "{\"kty\":\"RSA\",\"alg\":\"PS256\",\"n\":\"!\",\"e\":\"!\"},%s]}", k);

		write_file(tpath("skip.json"), buf, (size_t)n, 0644);
	}
	jwt_free(v);
	v = jwks_verifier(tpath("skip.json"), alg_bit("RS256"));
	ASSERT_TRUE(v != NULL);
	ASSERT_JWT(verify(v, make_token(hdr("RS256", "ok"), std_payload(), "RS256", rsa1, NULL, 0)), JWT_OK);
	jwt_free(v);
	/* An EC point off the curve is refused. */
	{
		char buf[512];
		int n = snprintf(buf, sizeof(buf),
				 "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}",
				 "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
				 "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");

		write_file(tpath("offcurve.json"), buf, (size_t)n, 0644);
		v = jwt_new();
		ASSERT_EQ(jwt_add_jwks(v, tpath("offcurve.json"), err, sizeof(err)), -EINVAL);
		ASSERT_STRSTR(err, "not on curve");
		jwt_free(v);
	}
}

/* ---- key files --------------------------------------------------------------------------------------- */

static void test_key_file_rules(void)
{
	struct cfg_jwt *v = jwt_new();
	char err[256];

	write_file(tpath("loose"), secret64, 64, 0644);
	ASSERT_EQ(jwt_add_hmac_file(v, tpath("loose"), err, sizeof(err)), -EPERM);
	ASSERT_STRSTR(err, "mode 0644");
	write_file(tpath("short"), "tooshort\n", 9, 0600);
	ASSERT_EQ(jwt_add_hmac_file(v, tpath("short"), err, sizeof(err)), -EINVAL);
	ASSERT_STRSTR(err, "at least 32");
	ASSERT_EQ(jwt_add_hmac_file(v, tpath("missing"), err, sizeof(err)), -ENOENT);
	ASSERT_EQ(jwt_add_pem(v, tpath("priv.pem"), err, sizeof(err)), -EINVAL);
	ASSERT_STRSTR(err, "private key");
	ASSERT_EQ(jwt_add_pem(v, tpath("small.pem"), err, sizeof(err)), -EINVAL);
	ASSERT_STRSTR(err, "1024 bits");
	ASSERT_EQ(jwt_add_pem(v, tpath("secret"), err, sizeof(err)), -EINVAL);
	ASSERT_STRSTR(err, "no PEM public key");
	jwt_free(v);

	/* HS512 wants 64 bytes; a 32-byte secret can serve HS256 only. */
	v = jwt_new();
	jwt_policy(v)->algs = alg_bit("HS256") | alg_bit("HS512");
	write_file(tpath("s32"), secret64, 32, 0400);
	ASSERT_EQ(jwt_add_hmac_file(v, tpath("s32"), err, sizeof(err)), 0);
	ASSERT_EQ(jwt_check(v, err, sizeof(err)), -EINVAL);
	ASSERT_STRSTR(err, "HS512 needs a secret of at least 64 bytes");
	jwt_free(v);

	/* A certificate works like its public key; a trailing newline is not part of a secret. */
	v = jwt_new();
	jwt_policy(v)->algs = alg_bit("RS256") | alg_bit("HS256");
	{
		char nl[80];

		memcpy(nl, secret64, 64);
		nl[64] = '\n';
		write_file(tpath("snl"), nl, 65, 0600);
	}
	ASSERT_EQ(jwt_add_pem(v, tpath("cert.pem"), err, sizeof(err)), 0);
	ASSERT_EQ(jwt_add_hmac_file(v, tpath("snl"), err, sizeof(err)), 0);
	ASSERT_EQ(jwt_check(v, err, sizeof(err)), 0);
	jwt_policy(v)->require_exp = true;
	ASSERT_JWT(verify(v, make_token(hdr("RS256", NULL), std_payload(), "RS256", rsa2, NULL, 0)), JWT_OK);
	ASSERT_JWT(verify(v, make_token(hdr("HS256", NULL), std_payload(), "HS256", NULL, secret64, 64)), JWT_OK);
	jwt_free(v);
}

/* ---- malformed ------------------------------------------------------------------------------------------ */

static void test_malformed(void)
{
	struct cfg_jwt *v = std_verifier(ALL_ALGS);
	const char *good = make_token(hdr("HS256", NULL), std_payload(), "HS256", NULL, secret64, 64);
	char t[16384];
	size_t n = strlen(good);
	const char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');

	ASSERT_JWT(verify(v, good), JWT_OK);
	/* Segments. */
	ASSERT_JWT(verify(v, "abc"), JWT_ERR_MALFORMED);
	snprintf(t, sizeof(t), "%.*s", (int)(d2 - good), good);
	ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	snprintf(t, sizeof(t), "%s.", good);
	ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	snprintf(t, sizeof(t), "%s.AAAA", good);
	ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	snprintf(t, sizeof(t), ".%s", d1 + 1);
	ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	snprintf(t, sizeof(t), "%.*s.%s", (int)(d1 - good + 1), good, d2 + 1);
	ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	/* base64url: padding, the standard alphabet, whitespace, non-canonical trailing bits. */
	snprintf(t, sizeof(t), "%s=", good);
	ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	memcpy(t, good, n + 1);
	t[2] = '+';
	ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	t[2] = '/';
	ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	t[2] = ' ';
	ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	memcpy(t, good, n + 1);
	{
		/* HS256 signature: 32 bytes → 43 chars, last char carries 2 unused bits. */
		char *last = t + n - 1;
		const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		int val = (int)(strchr(alpha, *last) - alpha);

		*last = alpha[val | 1];
		ASSERT_JWT(verify(v, t), val & 1 ? JWT_OK : JWT_ERR_MALFORMED);
		*last = alpha[val ^ 2];
		ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	}
	/* One char in a final quantum (length % 4 == 1) can encode nothing: 43 + 2 = 45 chars. */
	snprintf(t, sizeof(t), "%sAA", good);
	ASSERT_JWT(verify(v, t), JWT_ERR_MALFORMED);
	/* JSON. */
	ASSERT_JWT(verify(v, make_token("{\"alg\":\"HS256\"", std_payload(), "HS256", NULL, secret64, 64)),
		   JWT_ERR_MALFORMED);
	ASSERT_JWT(verify(v, make_token("[\"HS256\"]", std_payload(), "HS256", NULL, secret64, 64)),
		   JWT_ERR_MALFORMED);
	ASSERT_JWT(verify(v, make_token(hdr("HS256", NULL), "[1,2]", "HS256", NULL, secret64, 64)),
		   JWT_ERR_MALFORMED);
	ASSERT_JWT(verify(v, make_token(hdr("HS256", NULL), "{\"exp\":1,}", "HS256", NULL, secret64, 64)),
		   JWT_ERR_MALFORMED);
	/* Duplicate members: {"alg":"HS256","alg":"none"} means different things to different parsers. */
	ASSERT_JWT(verify(v, make_token("{\"alg\":\"HS256\",\"alg\":\"none\"}", std_payload(), "HS256", NULL,
					secret64, 64)),
		   JWT_ERR_MALFORMED);
	{
		char p[256];

		snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld,\"exp\":%lld}",
			 NOW + 60, NOW + 9999999LL);
		ASSERT_JWT(verify(v, hs_raw(p)), JWT_ERR_MALFORMED);
	}
	ASSERT_JWT(verify(v, make_token("{\"alg\":\"HS256\",\"kid\":5}", std_payload(), "HS256", NULL, secret64, 64)),
		   JWT_ERR_MALFORMED);
	ASSERT_JWT(verify(v, make_token("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", std_payload(),
					"HS256", NULL, secret64, 64)),
		   JWT_ERR_UNSUPPORTED);
	ASSERT_JWT(verify(v, ""), JWT_ERR_MISSING);
	jwt_free(v);
}

static void test_oversized_token_refused(void)
{
	struct cfg_jwt *v = std_verifier(alg_bit("HS256"));
	static char pay[8192];
	int n;

	/* Just under the limit is fine; one byte over is refused before any decoding. */
	n = snprintf(pay, sizeof(pay), "{\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld,\"pad\":\"", NOW + 60);
	memset(pay + n, 'x', 5000);
	strcpy(pay + n + 5000, "\"}");
	{
		const char *tok = hs_raw(pay);
		size_t len = strlen(tok);
		static char big[JWT_MAX_TOKEN + 64];

		ASSERT_LT(len, JWT_MAX_TOKEN);
		ASSERT_JWT(verify(v, tok), JWT_OK);
		memset(big, 'A', JWT_MAX_TOKEN + 1);
		big[10] = '.';
		big[20] = '.';
		big[JWT_MAX_TOKEN + 1] = '\0';
		ASSERT_JWT(verify(v, big), JWT_ERR_TOO_LARGE);
		big[JWT_MAX_TOKEN] = '\0';
		ASSERT_JWT(verify(v, big), JWT_ERR_MALFORMED);
	}
	jwt_free(v);
}

/* ---- claims to headers ---------------------------------------------------------------------------------- */

static void set_claims(struct cfg_jwt *v, const char *const (*map)[2], size_t n)
{
	struct jwt_policy *c = jwt_policy(v);

	for (size_t i = 0; i < n; i++) {
		c->claims[i].claim = strdup(map[i][0]);
		c->claims[i].header = strdup(map[i][1]);
	}
	c->nclaims = (unsigned)n;
}

static void test_claims_to_headers_sanitised(void)
{
	struct cfg_jwt *v = std_verifier(alg_bit("HS256"));
	static const char *const map[][2] = {
		{ "sub", "X-User" }, { "tenant", "X-Tenant" }, { "roles", "X-Roles" }, { "n", "X-N" },
		{ "obj", "X-Obj" },  { "absent", "X-Absent" }, { "long", "X-Long" },  { "ok", "X-Ok" },
	};
	char p[2048], longv[401], err[256];
	struct jwt_result r;

	set_claims(v, map, sizeof(map) / sizeof(map[0]));
	ASSERT_EQ(jwt_check(v, err, sizeof(err)), 0);
	/* 8 lines share the 512-byte budget: (512 - 1 - 8*4 - 47 name bytes) / 8 = 54 per value. */
	ASSERT_EQ(jwt_policy(v)->value_max, 54);
	memset(longv, 'L', 400);
	longv[400] = '\0';
	snprintf(p, sizeof(p),
		 "{\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld,"
		 "\"sub\":\"bob\\u0000\"}", NOW + 60);
	/* \u0000 is refused by the JSON reader: the token is malformed. */
	ASSERT_JWT(verify_at(v, hs_raw(p), NOW, &r), JWT_ERR_MALFORMED);
	snprintf(p, sizeof(p),
		 "{\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld,"
		 "\"sub\":\"bob\\r\\nX-Admin: yes\",\"tenant\":\" acme\\u0001\\t\\u007f \","
		 "\"roles\":[\"a\",\"b\\n\",{\"x\":1},\"c\"],\"n\":42,\"obj\":{\"a\":1},"
		 "\"long\":\"%s\",\"ok\":true}",
		 NOW + 60, longv);
	ASSERT_JWT(verify_at(v, hs_raw(p), NOW, &r), JWT_OK);
	ASSERT_STREQ(r.sub, "bobX-Admin: yes");
	/* Every configured header is present, empty when the claim is absent: a client cannot supply it. */
	ASSERT_EQ(r.nheaders, 8);
	ASSERT_STREQ(r.headers[0].name, "X-User");
	ASSERT_STREQ(r.headers[0].value, "bobX-Admin: yes");
	ASSERT_STREQ(r.headers[1].name, "X-Tenant");
	ASSERT_STREQ(r.headers[1].value, "acme");
	ASSERT_STREQ(r.headers[2].value, "a,b,c");
	ASSERT_STREQ(r.headers[3].value, "42");
	ASSERT_STREQ(r.headers[4].name, "X-Obj");
	ASSERT_EQ(r.headers[4].value_len, 0);
	ASSERT_STREQ(r.headers[5].name, "X-Absent");
	ASSERT_EQ(r.headers[5].value_len, 0);
	ASSERT_EQ(r.headers[6].value_len, 54);
	ASSERT_EQ(strlen(r.headers[6].value), 54);
	ASSERT_STREQ(r.headers[7].value, "true");
	for (unsigned i = 0; i < r.nheaders; i++)
		for (size_t k = 0; k < r.headers[i].value_len; k++)
			ASSERT_TRUE((unsigned char)r.headers[i].value[k] >= 0x20 &&
				    r.headers[i].value[k] != 0x7f);
	jwt_free(v);
}

static void test_claim_value_cap_and_utf8(void)
{
	static const char *const map1[][2] = { { "long", "X-Long" } };
	static const char *const map2[][2] = { { "utf", "X-Utf" } };
	struct cfg_jwt *v = std_verifier(alg_bit("HS256"));
	char p[2048], longv[401], err[256];
	struct jwt_result r;

	memset(longv, 'L', 400);
	longv[400] = '\0';
	snprintf(p, sizeof(p),
		 "{\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld,"
		 "\"long\":\"%s\",\"utf\":\"%.*s\\u00e9\"}",
		 NOW + 60, longv, JWT_CLAIM_VALUE_MAX - 1, longv);
	set_claims(v, map1, 1);
	ASSERT_EQ(jwt_check(v, err, sizeof(err)), 0);
	ASSERT_EQ(jwt_policy(v)->value_max, JWT_CLAIM_VALUE_MAX);
	ASSERT_JWT(verify_at(v, hs_raw(p), NOW, &r), JWT_OK);
	ASSERT_EQ(r.headers[0].value_len, JWT_CLAIM_VALUE_MAX);
	jwt_free(v);

	v = std_verifier(alg_bit("HS256"));
	set_claims(v, map2, 1);
	ASSERT_EQ(jwt_check(v, err, sizeof(err)), 0);
	ASSERT_JWT(verify_at(v, hs_raw(p), NOW, &r), JWT_OK);
	/* 255 bytes + a 2-byte character would be 257: the character is dropped whole. */
	ASSERT_EQ(r.headers[0].value_len, JWT_CLAIM_VALUE_MAX - 1);
	jwt_free(v);

	/* Too many long header names for the budget is a config error. */
	v = std_verifier(alg_bit("HS256"));
	for (unsigned i = 0; i < JWT_MAX_CLAIM_HEADERS; i++) {
		char name[64];

		snprintf(name, sizeof(name), "X-A-Very-Long-Header-Name-Number-%02u", i);
		jwt_policy(v)->claims[i].claim = strdup("sub");
		jwt_policy(v)->claims[i].header = strdup(name);
	}
	jwt_policy(v)->nclaims = JWT_MAX_CLAIM_HEADERS;
	ASSERT_EQ(jwt_check(v, err, sizeof(err)), -EINVAL);
	ASSERT_STRSTR(err, "claims_to_headers");
	jwt_free(v);
}

static void test_wanted_claims_for_limits(void)
{
	struct cfg_jwt *v = std_verifier(alg_bit("HS256"));
	char p[512];
	struct jwt_result r;

	ASSERT_EQ(jwt_want_claim(v, "tenant"), 0);
	ASSERT_EQ(jwt_want_claim(v, "sub"), 0);
	ASSERT_EQ(jwt_want_claim(v, "tenant"), 0); /* once is enough */
	ASSERT_EQ(jwt_policy(v)->nwant, 2);
	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld,\"sub\":\"u1\"}",
		 NOW + 60);
	ASSERT_JWT(verify_at(v, hs_raw(p), NOW, &r), JWT_OK);
	ASSERT_EQ(r.nclaims, 1); /* tenant absent */
	ASSERT_STREQ(r.claims[0].name, "sub");
	ASSERT_STREQ(r.claims[0].value, "u1");
	ASSERT_STREQ(jwt_token_header(v), "Authorization");
	jwt_free(v);
}

/* ---- where the token comes from ---------------------------------------------------------------------------- */

static int parse_req(const char *raw, struct http1_request *req)
{
	return http1_parse_request(raw, strlen(raw), NULL, req);
}

static void test_extract(void)
{
	struct cfg_jwt *v = std_verifier(alg_bit("HS256"));
	static struct http1_request req;
	const char *tok;
	size_t len;

	ASSERT_GT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc.def.ghi\r\n\r\n", &req), 0);
	ASSERT_JWT(jwt_extract(v, &req, &tok, &len), JWT_OK);
	ASSERT_MEMEQ(tok, len, "abc.def.ghi");
	ASSERT_GT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nauthorization: bearer   x.y.z\r\n\r\n", &req), 0);
	ASSERT_JWT(jwt_extract(v, &req, &tok, &len), JWT_OK);
	ASSERT_MEMEQ(tok, len, "x.y.z");
	ASSERT_GT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n", &req), 0);
	ASSERT_JWT(jwt_extract(v, &req, &tok, &len), JWT_ERR_MISSING);
	ASSERT_GT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \r\n\r\n", &req), 0);
	ASSERT_JWT(jwt_extract(v, &req, &tok, &len), JWT_ERR_MISSING);
	ASSERT_GT(parse_req("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &req), 0);
	ASSERT_JWT(jwt_extract(v, &req, &tok, &len), JWT_ERR_MISSING);
	ASSERT_GT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a.b.c\r\n"
			    "Authorization: Bearer d.e.f\r\n\r\n", &req), 0);
	ASSERT_JWT(jwt_extract(v, &req, &tok, &len), JWT_ERR_MALFORMED);

	jwt_policy(v)->cookie = strdup("session");
	ASSERT_GT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nCookie: theme=dark; session=a.b.c; x=1\r\n\r\n", &req), 0);
	ASSERT_JWT(jwt_extract(v, &req, &tok, &len), JWT_OK);
	ASSERT_MEMEQ(tok, len, "a.b.c");
	ASSERT_GT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nCookie: xsession=a.b.c\r\n\r\n", &req), 0);
	ASSERT_JWT(jwt_extract(v, &req, &tok, &len), JWT_ERR_MISSING);
	ASSERT_GT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nCookie: session=a.b.c\r\nCookie: session=d.e.f\r\n\r\n",
			    &req), 0);
	ASSERT_JWT(jwt_extract(v, &req, &tok, &len), JWT_ERR_MALFORMED);
	free(jwt_policy(v)->cookie);
	jwt_policy(v)->cookie = NULL;

	jwt_policy(v)->header = strdup("X-JWT");
	ASSERT_GT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nX-JWT: a.b.c\r\nAuthorization: Bearer q.q.q\r\n\r\n", &req), 0);
	ASSERT_JWT(jwt_extract(v, &req, &tok, &len), JWT_OK);
	ASSERT_MEMEQ(tok, len, "a.b.c");
	jwt_free(v);
}

static void test_authenticate_uses_wall_clock(void)
{
	struct cfg_jwt *v = std_verifier(alg_bit("HS256"));
	static struct http1_request req;
	static char raw[4096];
	struct jwt_result r;
	char p[256];
	long long now = (long long)time(NULL);

	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"aud\":\"api\",\"sub\":\"w\",\"exp\":%lld}", now + 60);
	snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n", hs_raw(p));
	ASSERT_GT(parse_req(raw, &req), 0);
	ASSERT_JWT(jwt_authenticate(v, &req, &r), JWT_OK);
	ASSERT_STREQ(r.sub, "w");
	snprintf(p, sizeof(p), "{\"iss\":\"https://idp.test\",\"aud\":\"api\",\"exp\":%lld}", now - 60);
	snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n", hs_raw(p));
	ASSERT_GT(parse_req(raw, &req), 0);
	ASSERT_JWT(jwt_authenticate(v, &req, &r), JWT_ERR_EXPIRED);
	jwt_free(v);
}

static void test_reason_names_and_challenge(void)
{
	char buf[160];

	ASSERT_STREQ(jwt_err_name(JWT_ERR_EXPIRED), "expired");
	ASSERT_STREQ(jwt_err_name(JWT_ERR_BAD_SIGNATURE), "bad_signature");
	ASSERT_STREQ(jwt_err_name(JWT_ERR_ALG_NOT_ALLOWED), "alg_not_allowed");
	ASSERT_STREQ(jwt_err_name(JWT_ERR_UNKNOWN_KID), "unknown_kid");
	for (int e = 0; e < JWT_ERR_N; e++)
		ASSERT_TRUE(strcmp(jwt_err_name(e), "unknown") != 0);
	ASSERT_GT(jwt_www_authenticate(JWT_ERR_MISSING, buf, sizeof(buf)), 0);
	ASSERT_STREQ(buf, "Bearer");
	ASSERT_GT(jwt_www_authenticate(JWT_ERR_EXPIRED, buf, sizeof(buf)), 0);
	ASSERT_STREQ(buf, "Bearer error=\"invalid_token\", error_description=\"expired\"");
	ASSERT_STREQ(jwt_err_log(JWT_ERR_WRONG_AUDIENCE), "auth: jwt wrong_audience");
	ASSERT_EQ(jwt_err_status(JWT_ERR_EXPIRED), 401);
	ASSERT_EQ(jwt_err_status(JWT_ERR_INTERNAL), 500);
	ASSERT_EQ(jwt_www_authenticate(JWT_ERR_EXPIRED, buf, 10), -ENOSPC);
	ASSERT_EQ(jwt_alg_from_name("none"), -1);
	ASSERT_EQ(jwt_alg_from_name("ES384"), JWT_ES384);
}

/* ---- concurrency: verifications while the key set is swapped -------------------------------------------------- */

struct race {
	struct cfg_jwt *v;
	const char *tok;
	atomic_int stop;
	atomic_int bad;
	atomic_long done;
};

static void *race_reader(void *arg)
{
	struct race *r = arg;
	struct jwt_result res;

	while (!atomic_load(&r->stop)) {
		if (jwt_verify(r->v, r->tok, strlen(r->tok), NOW, &res) != JWT_OK)
			atomic_fetch_add(&r->bad, 1);
		atomic_fetch_add(&r->done, 1);
	}
	return NULL;
}

static void test_reload_under_load(void)
{
	char a[2048], b[2048];
	struct race r = { 0 };
	pthread_t th[4];
	struct timespec ts[2] = { { 0, UTIME_OMIT }, { 1100000000, 0 } };

	jwk_rsa(a, sizeof(a), rsa1, "k1");
	jwk_rsa(b, sizeof(b), rsa2, "k2");
	write_jwks(tpath("race.json"), a, b, NULL);
	r.v = jwks_verifier(tpath("race.json"), alg_bit("HS256") | alg_bit("RS256"));
	ASSERT_TRUE(r.v != NULL);
	r.tok = make_token(hdr("RS256", "k1"), std_payload(), "RS256", rsa1, NULL, 0);
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, race_reader, &r);
	/* Every rebuild keeps k1, so every verification must succeed while sets are swapped and freed. */
	for (int i = 0; i < 30; i++) {
		if (i % 2)
			write_jwks(tpath("race.json"), a, b, NULL);
		else
			write_jwks(tpath("race.json"), b, a, NULL);
		ts[1].tv_sec++;
		utimensat(AT_FDCWD, tpath("race.json"), ts, 0);
		jwt_maybe_reload(r.v, (uint64_t)(i + 1) * 1000000);
	}
	atomic_store(&r.stop, 1);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	ASSERT_EQ(atomic_load(&r.bad), 0);
	ASSERT_GT(atomic_load(&r.done), 0);
	jwt_free(r.v);
}

/* ---- config: routes[].auth with type jwt ------------------------------------------------------------------- */

static int load_auth(const char *auth, char *err, size_t errlen, struct config **out)
{
	static char yaml[4096];

	snprintf(yaml, sizeof(yaml),
		 "listeners:\n  - {name: web, address: \"127.0.0.1:8080\"}\n"
		 "upstreams:\n  - {name: pool, servers: [\"127.0.0.1:9000\"]}\n"
		 "routes:\n  - name: api\n    upstream: pool\n    auth:\n%s", auth);
	return config_load_string(yaml, strlen(yaml), "t.yaml", out, err, errlen);
}

static void expect_cfg_error(const char *auth, const char *want)
{
	struct config *cfg = NULL;
	char err[512];

	ASSERT_EQ(load_auth(auth, err, sizeof(err), &cfg), -EINVAL);
	ASSERT_STRSTR(err, want);
	ASSERT_TRUE(cfg == NULL);
}

static void test_config_jwt_section(void)
{
	struct config *cfg = NULL;
	char auth[1024], err[512];
	struct jwt_result r;

	snprintf(auth, sizeof(auth),
		 "      type: jwt\n      algorithms: [RS256, HS256]\n      keys: [%s]\n"
		 "      hmac_secret_file: %s\n      issuer: https://idp.test\n"
		 "      audience: [api, api2]\n      leeway: 30s\n"
		 "      claims_to_headers: {sub: X-User}\n",
		 tpath("rsa1.pem"), tpath("secret"));
	ASSERT_EQ(load_auth(auth, err, sizeof(err), &cfg), 0);
	ASSERT_EQ(cfg->routes[0].auth.type, CFG_AUTH_JWT);
	ASSERT_EQ(jwt_policy(cfg->routes[0].auth.jwt)->leeway_s, 30);
	ASSERT_JWT(verify_at(cfg->routes[0].auth.jwt,
			     make_token(hdr("RS256", NULL), std_payload(), "RS256", rsa1, NULL, 0), NOW, &r),
		   JWT_OK);
	ASSERT_STREQ(r.headers[0].value, "alice");
	config_free(cfg);

	expect_cfg_error("      type: jwt\n      keys: /x.pem\n",
			 "t.yaml:9: routes[0].auth.algorithms: required");
	expect_cfg_error("      type: jwt\n      algorithms: [none]\n      keys: /x.pem\n",
			 "t.yaml:10: routes[0].auth.algorithms[0]: \"none\" (unsigned tokens) is never accepted");
	expect_cfg_error("      type: jwt\n      algorithms: [PS256]\n", "unknown algorithm \"PS256\"");
	expect_cfg_error("      type: jwt\n      algorithms: [RS256]\n",
			 "routes[0].auth: no keys: set keys, jwks or hmac_secret_file");
	expect_cfg_error("      type: jwt\n      algorithms: [RS256]\n      keys: /nonexistent.pem\n",
			 "t.yaml:11: routes[0].auth.keys: /nonexistent.pem: No such file or directory");
	snprintf(auth, sizeof(auth), "      type: jwt\n      algorithms: [HS256]\n      hmac_secret_file: %s\n",
		 tpath("loose"));
	write_file(tpath("loose"), secret64, 64, 0640);
	expect_cfg_error(auth, "routes[0].auth.hmac_secret_file:");
	expect_cfg_error(auth, "mode 0640");
	snprintf(auth, sizeof(auth), "      type: jwt\n      algorithms: [RS256, ES256]\n      keys: %s\n",
		 tpath("rsa1.pem"));
	expect_cfg_error(auth, "routes[0].auth: ES256 is allowed but no key can verify it");
	snprintf(auth, sizeof(auth),
		 "      type: jwt\n      algorithms: [RS256]\n      keys: %s\n      header: X-T\n      cookie: c\n",
		 tpath("rsa1.pem"));
	expect_cfg_error(auth, "routes[0].auth.cookie: the token is read from either a header or a cookie");
	snprintf(auth, sizeof(auth),
		 "      type: jwt\n      algorithms: [RS256]\n      keys: %s\n      claims_to_headers: {sub: Host}\n",
		 tpath("rsa1.pem"));
	expect_cfg_error(auth, "routes[0].auth.claims_to_headers.sub: \"Host\" cannot carry a claim");
	snprintf(auth, sizeof(auth),
		 "      type: jwt\n      algorithms: [RS256]\n      keys: %s\n      leeway: 1500ms\n",
		 tpath("rsa1.pem"));
	expect_cfg_error(auth, "routes[0].auth.leeway: whole seconds");
	snprintf(auth, sizeof(auth),
		 "      type: jwt\n      algorithms: [RS256]\n      keys: %s\n      query: token\n",
		 tpath("rsa1.pem"));
	expect_cfg_error(auth, "routes[0].auth.query: unknown key");
}

/* ---- fixtures -------------------------------------------------------------------------------------------------- */

static int setup(void)
{
	BIO *b;
	X509 *x;

	snprintf(dir, sizeof(dir), "/tmp/test_jwt.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	rsa1 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	rsa_small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	ec256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	ec384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	if (!rsa1 || !rsa2 || !rsa_small || !ec256 || !ec384)
		return -1;
	write_pubkey(tpath("rsa1.pem"), rsa1);
	write_pubkey(tpath("ec256.pem"), ec256);
	write_pubkey(tpath("small.pem"), rsa_small);
	/* ec.pem: two keys in one file. */
	b = BIO_new_file(tpath("ec.pem"), "w");
	PEM_write_bio_PUBKEY(b, ec256);
	PEM_write_bio_PUBKEY(b, ec384);
	BIO_free(b);
	b = BIO_new_file(tpath("priv.pem"), "w");
	PEM_write_bio_PrivateKey(b, rsa1, NULL, NULL, 0, NULL, NULL);
	BIO_free(b);
	/* A self-signed certificate for rsa2. */
	x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, rsa2);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"idp.test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_sign(x, rsa2, EVP_sha256());
	b = BIO_new_file(tpath("cert.pem"), "w");
	PEM_write_bio_X509(b, x);
	BIO_free(b);
	X509_free(x);
	write_file(tpath("secret"), secret64, 64, 0600);
	return 0;
}

static void teardown(void)
{
	char cmd[128];

	EVP_PKEY_free(rsa1);
	EVP_PKEY_free(rsa2);
	EVP_PKEY_free(rsa_small);
	EVP_PKEY_free(ec256);
	EVP_PKEY_free(ec384);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		printf("# could not remove %s\n", dir);
}

int main(void)
{
	log_threshold = LOG_WARN; /* the reload test rebuilds keys 30 times */
	if (setup()) {
		printf("Bail out! cannot generate keys\n");
		return 1;
	}
	for (int a = 0; a < JWT_ALG_N; a++) {
		char name[32];

		snprintf(name, sizeof(name), "alg_valid_%s", jwt_alg_name(a));
		RUN_NAMED(name, alg_valid, jwt_alg_name(a));
	}
	RUN(test_ec384_file_with_ec256);
	RUN(test_expired_and_not_yet_valid);
	RUN(test_leeway_boundaries);
	RUN(test_issuer);
	RUN(test_audience);
	RUN(test_bad_signature);
	RUN(test_alg_none_refused);
	RUN(test_alg_not_in_route_list);
	RUN(test_rs_to_hs_confusion_refused);
	RUN(test_jwks_kid_selection);
	RUN(test_jwks_reload_on_change);
	RUN(test_jwks_errors);
	RUN(test_key_file_rules);
	RUN(test_malformed);
	RUN(test_oversized_token_refused);
	RUN(test_claims_to_headers_sanitised);
	RUN(test_claim_value_cap_and_utf8);
	RUN(test_wanted_claims_for_limits);
	RUN(test_extract);
	RUN(test_authenticate_uses_wall_clock);
	RUN(test_reason_names_and_challenge);
	RUN(test_reload_under_load);
	RUN(test_config_jwt_section);
	teardown();
	return test_done();
}
