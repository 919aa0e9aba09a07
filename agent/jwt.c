/* agent/jwt.c — JWT validation: strict compact-JWS decoding, PEM/JWKS/HMAC keys with live reload, OpenSSL 3 signatures, claim checks. */
#include "jwt.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "jsonr.h"
#include "log.h"

#define JWT_HMAC_MIN 32          /* RFC 7518 §3.2: an HS256 key is at least as long as its hash */
#define JWT_HMAC_FILE_MAX 4096   /* bytes of a secret file */
#define JWT_PEM_FILE_MAX (1u << 20)
#define JWT_RSA_MIN_BITS 2048
#define JWT_SIG_MAX 1024         /* decoded signature bytes (RSA 8192) */
#define JWT_DEC_MAX (JWT_MAX_TOKEN / 4 * 3 + 3)
#define JWT_HDR_NODES 64         /* JSON values in a token header */
#define JWT_PAY_NODES 512        /* JSON values in a token payload */
#define JWT_MAX_TRIES 8          /* keys tried for one token that names no kid */
#define JWT_RELOAD_EVERY_MS 1000

/* ---- names ---------------------------------------------------------------------- */

static const char *const err_names[JWT_ERR_N] = {
	[JWT_OK] = "ok",
	[JWT_ERR_MISSING] = "missing_token",
	[JWT_ERR_TOO_LARGE] = "token_too_large",
	[JWT_ERR_MALFORMED] = "malformed",
	[JWT_ERR_UNSUPPORTED] = "unsupported_header",
	[JWT_ERR_ALG_NOT_ALLOWED] = "alg_not_allowed",
	[JWT_ERR_UNKNOWN_KID] = "unknown_kid",
	[JWT_ERR_NO_KEY] = "no_key",
	[JWT_ERR_BAD_SIGNATURE] = "bad_signature",
	[JWT_ERR_BAD_CLAIM] = "bad_claim",
	[JWT_ERR_MISSING_EXP] = "missing_exp",
	[JWT_ERR_EXPIRED] = "expired",
	[JWT_ERR_NOT_YET_VALID] = "not_yet_valid",
	[JWT_ERR_ISSUED_IN_FUTURE] = "issued_in_future",
	[JWT_ERR_WRONG_ISSUER] = "wrong_issuer",
	[JWT_ERR_WRONG_AUDIENCE] = "wrong_audience",
	[JWT_ERR_INTERNAL] = "internal",
};

static const char *const alg_names[JWT_ALG_N] = {
	"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384",
};

const char *jwt_err_name(enum jwt_err e)
{
	return (unsigned)e < JWT_ERR_N ? err_names[e] : "unknown";
}

const char *jwt_alg_name(enum jwt_alg a)
{
	return (unsigned)a < JWT_ALG_N ? alg_names[a] : "unknown";
}

int jwt_alg_from_name(const char *s)
{
	/* Case matters (RFC 7515 §4.1.1): "hs256" is not HS256, and "none" is nothing. */
	for (int i = 0; i < JWT_ALG_N; i++)
		if (!strcmp(s, alg_names[i]))
			return i;
	return -1;
}

int jwt_err_status(enum jwt_err e)
{
	return e == JWT_ERR_INTERNAL ? 500 : 401;
}

int jwt_www_authenticate(enum jwt_err e, char *buf, size_t len)
{
	int n;

	if (e == JWT_ERR_INTERNAL) {
		n = 0;
		if (len)
			buf[0] = '\0';
	} else if (e == JWT_ERR_MISSING) {
		/* RFC 6750 §3.1: no error code when the request carried no credentials. */
		n = snprintf(buf, len, "Bearer");
	} else {
		n = snprintf(buf, len, "Bearer error=\"invalid_token\", error_description=\"%s\"",
			     jwt_err_name(e));
	}
	return n >= 0 && (size_t)n < len ? n : -ENOSPC;
}

const char *jwt_err_log(enum jwt_err e)
{
	static const char *const reasons[JWT_ERR_N] = {
		[JWT_OK] = "auth: jwt ok",
		[JWT_ERR_MISSING] = "auth: jwt missing_token",
		[JWT_ERR_TOO_LARGE] = "auth: jwt token_too_large",
		[JWT_ERR_MALFORMED] = "auth: jwt malformed",
		[JWT_ERR_UNSUPPORTED] = "auth: jwt unsupported_header",
		[JWT_ERR_ALG_NOT_ALLOWED] = "auth: jwt alg_not_allowed",
		[JWT_ERR_UNKNOWN_KID] = "auth: jwt unknown_kid",
		[JWT_ERR_NO_KEY] = "auth: jwt no_key",
		[JWT_ERR_BAD_SIGNATURE] = "auth: jwt bad_signature",
		[JWT_ERR_BAD_CLAIM] = "auth: jwt bad_claim",
		[JWT_ERR_MISSING_EXP] = "auth: jwt missing_exp",
		[JWT_ERR_EXPIRED] = "auth: jwt expired",
		[JWT_ERR_NOT_YET_VALID] = "auth: jwt not_yet_valid",
		[JWT_ERR_ISSUED_IN_FUTURE] = "auth: jwt issued_in_future",
		[JWT_ERR_WRONG_ISSUER] = "auth: jwt wrong_issuer",
		[JWT_ERR_WRONG_AUDIENCE] = "auth: jwt wrong_audience",
		[JWT_ERR_INTERNAL] = "auth: jwt internal",
	};

	return (unsigned)e < JWT_ERR_N ? reasons[e] : "auth: jwt unknown";
}

/* ---- base64url (RFC 4648 §5), strict ------------------------------------------------ */

static int b64url_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * No padding, no whitespace, no '+' or '/', and the unused low bits of the
 * last character must be zero: every byte string has exactly one accepted
 * encoding, so a signature cannot be re-encoded to dodge a replay cache.
 * Returns the decoded length or -EINVAL (-ENOSPC when out is too small).
 */
static ssize_t b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
	size_t full = len / 4, rem = len % 4, o = 0;
	size_t need = full * 3 + (rem ? rem - 1 : 0);

	if (rem == 1)
		return -EINVAL;
	if (need > cap)
		return -ENOSPC;
	for (size_t i = 0; i < full; i++) {
		int a = b64url_val(in[4 * i]), b = b64url_val(in[4 * i + 1]);
		int c = b64url_val(in[4 * i + 2]), d = b64url_val(in[4 * i + 3]);

		if ((a | b | c | d) < 0)
			return -EINVAL;
		out[o++] = (unsigned char)(a << 2 | b >> 4);
		out[o++] = (unsigned char)(b << 4 | c >> 2);
		out[o++] = (unsigned char)(c << 6 | d);
	}
	if (rem >= 2) {
		const char *t = in + 4 * full;
		int a = b64url_val(t[0]), b = b64url_val(t[1]), c = rem == 3 ? b64url_val(t[2]) : 0;

		if ((a | b | c) < 0)
			return -EINVAL;
		if (rem == 2 && (b & 0x0f))
			return -EINVAL;
		if (rem == 3 && (c & 0x03))
			return -EINVAL;
		out[o++] = (unsigned char)(a << 2 | b >> 4);
		if (rem == 3)
			out[o++] = (unsigned char)(b << 4 | c >> 2);
	}
	return (ssize_t)o;
}

/* ---- keys ------------------------------------------------------------------------ */

enum jwt_kty {
	KTY_HMAC,  /* oct secret: HS* */
	KTY_RSA,   /* RS* */
	KTY_EC256, /* ES256 */
	KTY_EC384, /* ES384 */
};

struct jwt_key {
	enum jwt_kty kty;
	int alg;          /* the only algorithm this key serves (JWK "alg"), or -1 for its whole family */
	char *kid;        /* JWK "kid"; NULL for PEM files and secret files */
	EVP_PKEY *pkey;   /* public key, or the HMAC secret wrapped as an EVP_PKEY_HMAC key */
	size_t secret_len; /* HMAC: secret bytes (checked against the hash length) */
};

struct jwt_keyset {
	struct jwt_key *keys;
	unsigned n, cap;
};

static void keyset_free(struct jwt_keyset *ks)
{
	if (!ks)
		return;
	for (unsigned i = 0; i < ks->n; i++) {
		EVP_PKEY_free(ks->keys[i].pkey);
		free(ks->keys[i].kid);
	}
	free(ks->keys);
	free(ks);
}

/* Takes ownership of pkey and kid (freed on failure too). */
static int keyset_add(struct jwt_keyset *ks, enum jwt_kty kty, int alg, char *kid, EVP_PKEY *pkey,
		      size_t secret_len)
{
	if (ks->n == ks->cap) {
		unsigned cap = ks->cap ? ks->cap * 2 : 4;
		struct jwt_key *k = realloc(ks->keys, cap * sizeof(*k));

		if (!k) {
			EVP_PKEY_free(pkey);
			free(kid);
			return -ENOMEM;
		}
		ks->keys = k;
		ks->cap = cap;
	}
	ks->keys[ks->n++] = (struct jwt_key){ .kty = kty, .alg = alg, .kid = kid, .pkey = pkey,
					      .secret_len = secret_len };
	return 0;
}

static enum jwt_kty alg_kty(enum jwt_alg a)
{
	switch (a) {
	case JWT_HS256: case JWT_HS384: case JWT_HS512:
		return KTY_HMAC;
	case JWT_RS256: case JWT_RS384: case JWT_RS512:
		return KTY_RSA;
	case JWT_ES256:
		return KTY_EC256;
	default:
		return KTY_EC384;
	}
}

static const EVP_MD *alg_md(enum jwt_alg a)
{
	switch (a) {
	case JWT_HS256: case JWT_RS256: case JWT_ES256:
		return EVP_sha256();
	case JWT_HS384: case JWT_RS384: case JWT_ES384:
		return EVP_sha384();
	default:
		return EVP_sha512();
	}
}

static size_t alg_hash_len(enum jwt_alg a)
{
	return (size_t)EVP_MD_get_size(alg_md(a));
}

/*
 * The key-confusion guard: a key serves an algorithm only when its type is
 * that algorithm's family (an RSA or EC public key is never an HMAC secret),
 * the JWK did not bind it to another algorithm, and an HMAC secret is at
 * least as long as the hash.
 */
static bool key_serves(const struct jwt_key *k, enum jwt_alg a)
{
	if (k->kty != alg_kty(a))
		return false;
	if (k->alg >= 0 && k->alg != (int)a)
		return false;
	if (k->kty == KTY_HMAC && k->secret_len < alg_hash_len(a))
		return false;
	return true;
}

/* Sorts a public key into our types; refuses what no allowed algorithm could use safely. */
static int classify_pkey(EVP_PKEY *pkey, enum jwt_kty *kty, char *why, size_t whylen)
{
	char group[64];
	size_t glen = 0;

	switch (EVP_PKEY_get_base_id(pkey)) {
	case EVP_PKEY_RSA:
		if (EVP_PKEY_get_bits(pkey) < JWT_RSA_MIN_BITS) {
			snprintf(why, whylen, "RSA key of %d bits (at least %d required)",
				 EVP_PKEY_get_bits(pkey), JWT_RSA_MIN_BITS);
			return -EINVAL;
		}
		*kty = KTY_RSA;
		return 0;
	case EVP_PKEY_EC:
		if (!EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen)) {
			snprintf(why, whylen, "EC key without a named curve");
			return -EINVAL;
		}
		if (!strcmp(group, "prime256v1") || !strcmp(group, "P-256")) {
			*kty = KTY_EC256;
			return 0;
		}
		if (!strcmp(group, "secp384r1") || !strcmp(group, "P-384")) {
			*kty = KTY_EC384;
			return 0;
		}
		snprintf(why, whylen, "EC curve %s (only P-256 and P-384 are supported)", group);
		return -EINVAL;
	default:
		snprintf(why, whylen, "key type %s (only RSA and EC are supported)",
			 OBJ_nid2sn(EVP_PKEY_get_base_id(pkey)));
		return -EINVAL;
	}
}

static int hmac_key(const unsigned char *secret, size_t len, EVP_PKEY **out)
{
	*out = EVP_PKEY_new_raw_private_key(EVP_PKEY_HMAC, NULL, secret, len);
	return *out ? 0 : -ENOMEM;
}

/* ---- files ------------------------------------------------------------------------ */

/* What identifies a version of a source file; any change triggers a rebuild. */
struct jwt_stamp {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim;
	bool present;
};

static void stamp_of(const struct stat *st, struct jwt_stamp *s)
{
	*s = (struct jwt_stamp){ .dev = st->st_dev, .ino = st->st_ino, .size = st->st_size,
				 .mtim = st->st_mtim, .present = true };
}

static bool stamp_eq(const struct jwt_stamp *a, const struct jwt_stamp *b)
{
	return a->present == b->present && a->dev == b->dev && a->ino == b->ino &&
	       a->size == b->size && a->mtim.tv_sec == b->mtim.tv_sec &&
	       a->mtim.tv_nsec == b->mtim.tv_nsec;
}

/*
 * Reads a whole regular file of at most max bytes; the stamp comes from the
 * descriptor that was read, so a change racing the read is seen next time.
 * secret: refuse a mode that lets group or others read or write it.
 */
static int read_file(const char *path, size_t max, bool secret, char **out, size_t *outlen,
		     struct jwt_stamp *stamp, char *err, size_t errlen)
{
	struct stat st;
	int rc = fileio_read(path, max, secret ? FILEIO_PRIVATE : 0, out, outlen, &st, err, errlen);

	if (rc == 0)
		stamp_of(&st, stamp);
	return rc;
}

/* ---- PEM ---------------------------------------------------------------------------- */

static int load_pem(struct jwt_keyset *ks, const char *path, const char *text, size_t len,
		    char *err, size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(text, (int)len);
	unsigned found = 0;
	int rc = 0;

	if (!bio) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	for (;;) {
		char *name = NULL, *hdr = NULL, why[160];
		unsigned char *data = NULL;
		const unsigned char *p;
		long dlen = 0;
		EVP_PKEY *pkey = NULL;
		enum jwt_kty kty;

		if (!PEM_read_bio(bio, &name, &hdr, &data, &dlen)) {
			unsigned long e = ERR_peek_last_error();

			/* The normal end: no further "-----BEGIN" line. */
			if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
				snprintf(err, errlen, "%s: malformed PEM after %u key(s)", path, found);
				rc = -EINVAL;
			}
			ERR_clear_error();
			break;
		}
		p = data;
		if (strstr(name, "PRIVATE KEY")) {
			snprintf(err, errlen,
				 "%s: holds a private key (%s); give clawd only the public key or certificate",
				 path, name);
			rc = -EINVAL;
		} else if (!strcmp(name, "PUBLIC KEY")) {
			pkey = d2i_PUBKEY(NULL, &p, dlen);
		} else if (!strcmp(name, "RSA PUBLIC KEY")) {
			pkey = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, dlen);
		} else if (!strcmp(name, "CERTIFICATE")) {
			X509 *x = d2i_X509(NULL, &p, dlen);

			if (x) {
				pkey = X509_get_pubkey(x);
				X509_free(x);
			}
		} else {
			snprintf(err, errlen, "%s: unsupported PEM block \"%s\" (expected PUBLIC KEY or CERTIFICATE)",
				 path, name);
			rc = -EINVAL;
		}
		if (!rc && !pkey) {
			snprintf(err, errlen, "%s: cannot decode PEM block %u (%s)", path, found + 1, name);
			rc = -EINVAL;
		}
		if (!rc && classify_pkey(pkey, &kty, why, sizeof(why))) {
			snprintf(err, errlen, "%s: PEM block %u: %s", path, found + 1, why);
			rc = -EINVAL;
		}
		OPENSSL_free(name);
		OPENSSL_free(hdr);
		OPENSSL_free(data);
		ERR_clear_error();
		if (rc) {
			EVP_PKEY_free(pkey);
			break;
		}
		rc = keyset_add(ks, kty, -1, NULL, pkey, 0);
		if (rc) {
			snprintf(err, errlen, "%s: out of memory", path);
			break;
		}
		found++;
	}
	BIO_free(bio);
	if (!rc && !found) {
		snprintf(err, errlen, "%s: no PEM public key or certificate found", path);
		rc = -EINVAL;
	}
	return rc;
}

/* ---- HMAC secret file ------------------------------------------------------------------ */

static int load_hmac(struct jwt_keyset *ks, const char *path, char *text, size_t len, char *err,
		     size_t errlen)
{
	EVP_PKEY *pkey;
	int rc;

	/* Editors and `echo` add one newline; it is not part of the secret. */
	if (len && text[len - 1] == '\n') {
		len--;
		if (len && text[len - 1] == '\r')
			len--;
	}
	if (len < JWT_HMAC_MIN) {
		snprintf(err, errlen, "%s: secret of %zu bytes (at least %d required)", path, len,
			 JWT_HMAC_MIN);
		return -EINVAL;
	}
	rc = hmac_key((const unsigned char *)text, len, &pkey);
	if (!rc)
		rc = keyset_add(ks, KTY_HMAC, -1, NULL, pkey, len);
	if (rc)
		snprintf(err, errlen, "%s: out of memory", path);
	return rc;
}

/* ---- JWKS (RFC 7517) -------------------------------------------------------------------- */

/* A base64url member decoded into a fresh buffer of at most max bytes. */
static int jwk_bytes(const struct jsonr *j, const struct jsonr_node *k, const char *name,
		     size_t max, unsigned char **out, size_t *len)
{
	const struct jsonr_node *n = jsonr_get(j, k, name);
	ssize_t r;

	if (!n || n->type != JSONR_STRING || !n->len)
		return -ENOENT;
	*out = malloc(n->len);
	if (!*out)
		return -ENOMEM;
	r = b64url_decode(n->str, n->len, *out, n->len);
	if (r <= 0 || (size_t)r > max) {
		free(*out);
		*out = NULL;
		return -EINVAL;
	}
	*len = (size_t)r;
	return 0;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *pkey = NULL;

	if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1 &&
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

static int jwk_rsa(const struct jsonr *j, const struct jsonr_node *k, EVP_PKEY **out, char *why,
		   size_t whylen)
{
	unsigned char *n = NULL, *e = NULL;
	size_t nlen = 0, elen = 0;
	BIGNUM *bn = NULL, *be = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	int rc = -EINVAL;

	if (jwk_bytes(j, k, "n", 2048, &n, &nlen) || jwk_bytes(j, k, "e", 16, &e, &elen)) {
		snprintf(why, whylen, "RSA key needs base64url \"n\" and \"e\"");
		goto out;
	}
	bn = BN_bin2bn(n, (int)nlen, NULL);
	be = BN_bin2bn(e, (int)elen, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (!bn || !be || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be)) {
		snprintf(why, whylen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	*out = pkey_fromdata("RSA", bld);
	if (!*out) {
		snprintf(why, whylen, "RSA key rejected by OpenSSL");
		goto out;
	}
	rc = 0;
out:
	BN_free(bn);
	BN_free(be);
	OSSL_PARAM_BLD_free(bld);
	free(n);
	free(e);
	return rc;
}

static int jwk_ec(const struct jsonr *j, const struct jsonr_node *k, size_t flen, const char *group,
		  EVP_PKEY **out, char *why, size_t whylen)
{
	unsigned char *x = NULL, *y = NULL, point[1 + 2 * 48];
	size_t xlen = 0, ylen = 0;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY_CTX *chk = NULL;
	int rc = -EINVAL;

	if (jwk_bytes(j, k, "x", flen, &x, &xlen) || jwk_bytes(j, k, "y", flen, &y, &ylen) ||
	    xlen != flen || ylen != flen) {
		snprintf(why, whylen, "EC key needs base64url \"x\" and \"y\" of %zu bytes each", flen);
		goto out;
	}
	point[0] = 0x04; /* uncompressed point: 04 || x || y */
	memcpy(point + 1, x, flen);
	memcpy(point + 1 + flen, y, flen);
	bld = OSSL_PARAM_BLD_new();
	if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * flen)) {
		snprintf(why, whylen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	*out = pkey_fromdata("EC", bld);
	/* A point off the curve would make every verification meaningless: check it now. */
	chk = *out ? EVP_PKEY_CTX_new_from_pkey(NULL, *out, NULL) : NULL;
	if (!*out || !chk || EVP_PKEY_public_check(chk) != 1) {
		EVP_PKEY_free(*out);
		*out = NULL;
		snprintf(why, whylen, "EC point is not on curve %s", group);
		goto out;
	}
	rc = 0;
out:
	EVP_PKEY_CTX_free(chk);
	OSSL_PARAM_BLD_free(bld);
	free(x);
	free(y);
	return rc;
}

/* True when the JWK restricts itself to something other than verifying signatures. */
static bool jwk_not_for_sig(const struct jsonr *j, const struct jsonr_node *k)
{
	const struct jsonr_node *use = jsonr_get(j, k, "use"), *ops = jsonr_get(j, k, "key_ops");

	if (use && (use->type != JSONR_STRING || strcmp(use->str, "sig")))
		return true;
	if (ops) {
		if (ops->type != JSONR_ARRAY)
			return true;
		for (const struct jsonr_node *o = jsonr_child(j, ops); o; o = jsonr_next(j, o))
			if (o->type == JSONR_STRING && !strcmp(o->str, "verify"))
				return false;
		return true;
	}
	return false;
}

static int jwk_one(struct jwt_keyset *ks, const struct jsonr *j, const struct jsonr_node *k,
		   char *why, size_t whylen)
{
	const char *kty = jsonr_get_str(j, k, "kty"), *alg_s = jsonr_get_str(j, k, "alg");
	const struct jsonr_node *kidn = jsonr_get(j, k, "kid");
	EVP_PKEY *pkey = NULL;
	enum jwt_kty t;
	size_t slen = 0;
	char *kid = NULL;
	int alg = -1, rc;

	if (k->type != JSONR_OBJECT) {
		snprintf(why, whylen, "not an object");
		return -EINVAL;
	}
	if (!kty) {
		snprintf(why, whylen, "no \"kty\"");
		return -EINVAL;
	}
	if (kidn && kidn->type != JSONR_STRING) {
		snprintf(why, whylen, "\"kid\" is not a string");
		return -EINVAL;
	}
	/* Encryption keys and algorithms we do not implement (PS256, EdDSA...) are not errors. */
	if (jwk_not_for_sig(j, k))
		return 0;
	if (alg_s) {
		alg = jwt_alg_from_name(alg_s);
		if (alg < 0)
			return 0;
	}
	if (!strcmp(kty, "RSA")) {
		t = KTY_RSA;
		rc = jwk_rsa(j, k, &pkey, why, whylen);
		if (!rc && EVP_PKEY_get_bits(pkey) < JWT_RSA_MIN_BITS) {
			snprintf(why, whylen, "RSA key of %d bits (at least %d required)",
				 EVP_PKEY_get_bits(pkey), JWT_RSA_MIN_BITS);
			rc = -EINVAL;
		}
	} else if (!strcmp(kty, "EC")) {
		const char *crv = jsonr_get_str(j, k, "crv");

		if (!crv) {
			snprintf(why, whylen, "EC key without \"crv\"");
			return -EINVAL;
		}
		if (!strcmp(crv, "P-256")) {
			t = KTY_EC256;
			rc = jwk_ec(j, k, 32, "prime256v1", &pkey, why, whylen);
		} else if (!strcmp(crv, "P-384")) {
			t = KTY_EC384;
			rc = jwk_ec(j, k, 48, "secp384r1", &pkey, why, whylen);
		} else {
			return 0; /* P-521, secp256k1: not an algorithm we offer */
		}
	} else if (!strcmp(kty, "oct")) {
		unsigned char *sec = NULL;

		t = KTY_HMAC;
		rc = jwk_bytes(j, k, "k", JWT_HMAC_FILE_MAX, &sec, &slen);
		if (rc) {
			snprintf(why, whylen, "oct key needs base64url \"k\"");
		} else if (slen < JWT_HMAC_MIN) {
			snprintf(why, whylen, "oct key of %zu bytes (at least %d required)", slen,
				 JWT_HMAC_MIN);
			rc = -EINVAL;
		} else {
			rc = hmac_key(sec, slen, &pkey);
			if (rc)
				snprintf(why, whylen, "out of memory");
		}
		if (sec)
			OPENSSL_cleanse(sec, slen);
		free(sec);
	} else {
		return 0; /* OKP and future types */
	}
	ERR_clear_error();
	if (rc) {
		EVP_PKEY_free(pkey);
		return rc;
	}
	if (alg >= 0 && alg_kty(alg) != t) {
		snprintf(why, whylen, "\"alg\" %s does not fit kty %s", alg_s, kty);
		EVP_PKEY_free(pkey);
		return -EINVAL;
	}
	if (kidn) {
		kid = strdup(kidn->str);
		if (!kid) {
			EVP_PKEY_free(pkey);
			snprintf(why, whylen, "out of memory");
			return -ENOMEM;
		}
	}
	rc = keyset_add(ks, t, alg, kid, pkey, slen);
	if (rc)
		snprintf(why, whylen, "out of memory");
	return rc;
}

static int load_jwks(struct jwt_keyset *ks, const char *path, const char *text, size_t len,
		     char *err, size_t errlen)
{
	uint32_t cap = (uint32_t)(len / 2 + 2);
	struct jsonr_node *nodes = calloc(cap, sizeof(*nodes));
	char *strbuf = malloc(len + 8);
	const struct jsonr_node *keys;
	struct jsonr j;
	unsigned i = 0;
	int rc = 0;

	if (!nodes || !strbuf) {
		snprintf(err, errlen, "%s: out of memory", path);
		rc = -ENOMEM;
		goto out;
	}
	if (jsonr_parse(&j, text, len, nodes, cap, strbuf, len + 8)) {
		snprintf(err, errlen, "%s: not JSON: %s at byte %zu", path, j.err, j.err_off);
		rc = -EINVAL;
		goto out;
	}
	keys = jsonr_get(&j, &j.nodes[0], "keys");
	if (!keys || keys->type != JSONR_ARRAY) {
		snprintf(err, errlen, "%s: not a JWKS (expected an object with a \"keys\" list)", path);
		rc = -EINVAL;
		goto out;
	}
	for (const struct jsonr_node *k = jsonr_child(&j, keys); k; k = jsonr_next(&j, k), i++) {
		char why[160];

		rc = jwk_one(ks, &j, k, why, sizeof(why));
		if (rc) {
			snprintf(err, errlen, "%s: keys[%u]: %s", path, i, why);
			goto out;
		}
	}
out:
	/* oct secrets passed through the string buffer. */
	if (strbuf)
		OPENSSL_cleanse(strbuf, len + 8);
	free(strbuf);
	free(nodes);
	return rc;
}

/* ---- the verifier: sources, key set and its lock-free swap ------------------------------ */

enum jwt_src_kind { SRC_PEM, SRC_JWKS, SRC_HMAC };

struct jwt_source {
	enum jwt_src_kind kind;
	char *path;
	struct jwt_stamp stamp; /* version the current key set was built from */
};

struct cfg_jwt {
	struct jwt_policy cfg;
	struct jwt_source *srcs;
	unsigned nsrcs;
	/*
	 * The current key set. Readers announce themselves in readers[epoch & 1]
	 * before loading it; a reload swaps the pointer, bumps the epoch and
	 * waits until the previous epoch's readers are gone before freeing the
	 * old set. Readers never wait; verification takes microseconds.
	 */
	_Atomic(struct jwt_keyset *) keys;
	atomic_uint epoch;
	atomic_uint readers[2];
	atomic_uint_fast64_t next_check_ms; /* CLOCK_MONOTONIC ms of the next source check */
	pthread_mutex_t reload_lock;        /* one rebuild at a time (trylock: never waited on) */
};

struct cfg_jwt *jwt_new(void)
{
	struct cfg_jwt *v = calloc(1, sizeof(*v));
	struct jwt_keyset *ks = calloc(1, sizeof(*ks));

	if (!v || !ks) {
		free(v);
		free(ks);
		return NULL;
	}
	v->cfg.require_exp = true;
	v->cfg.value_max = JWT_CLAIM_VALUE_MAX;
	atomic_init(&v->keys, ks);
	pthread_mutex_init(&v->reload_lock, NULL);
	return v;
}

struct jwt_policy *jwt_policy(struct cfg_jwt *v)
{
	return &v->cfg;
}

static void free_strv(char **s, unsigned n)
{
	for (unsigned i = 0; s && i < n; i++)
		free(s[i]);
	free(s);
}

void jwt_free(struct cfg_jwt *v)
{
	if (!v)
		return;
	keyset_free(atomic_load(&v->keys));
	for (unsigned i = 0; i < v->nsrcs; i++)
		free(v->srcs[i].path);
	free(v->srcs);
	free_strv(v->cfg.issuers, v->cfg.nissuers);
	free_strv(v->cfg.audiences, v->cfg.naudiences);
	free(v->cfg.header);
	free(v->cfg.cookie);
	for (unsigned i = 0; i < v->cfg.nclaims; i++) {
		free(v->cfg.claims[i].claim);
		free(v->cfg.claims[i].header);
	}
	for (unsigned i = 0; i < v->cfg.nwant; i++)
		free(v->cfg.want[i]);
	pthread_mutex_destroy(&v->reload_lock);
	free(v);
}

static int load_source(struct jwt_keyset *ks, struct jwt_source *s, char *err, size_t errlen)
{
	static const size_t max[] = { [SRC_PEM] = JWT_PEM_FILE_MAX, [SRC_JWKS] = JWT_JWKS_MAX,
				      [SRC_HMAC] = JWT_HMAC_FILE_MAX };
	char *text = NULL;
	size_t len = 0;
	int rc;

	rc = read_file(s->path, max[s->kind], s->kind == SRC_HMAC, &text, &len, &s->stamp, err,
		       errlen);
	if (rc) {
		s->stamp = (struct jwt_stamp){ 0 };
		return rc;
	}
	if (s->kind == SRC_PEM)
		rc = load_pem(ks, s->path, text, len, err, errlen);
	else if (s->kind == SRC_JWKS)
		rc = load_jwks(ks, s->path, text, len, err, errlen);
	else
		rc = load_hmac(ks, s->path, text, len, err, errlen);
	OPENSSL_cleanse(text, len);
	free(text);
	return rc;
}

static int add_source(struct cfg_jwt *v, enum jwt_src_kind kind, const char *path, char *err,
		      size_t errlen)
{
	struct jwt_source *s = realloc(v->srcs, (v->nsrcs + 1) * sizeof(*s));

	if (!s) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	v->srcs = s;
	s = &v->srcs[v->nsrcs];
	*s = (struct jwt_source){ .kind = kind, .path = strdup(path) };
	if (!s->path) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	v->nsrcs++;
	/* Before the verifier is published nobody reads the key set: fill it in place. */
	return load_source(atomic_load(&v->keys), s, err, errlen);
}

int jwt_add_pem(struct cfg_jwt *v, const char *path, char *err, size_t errlen)
{
	return add_source(v, SRC_PEM, path, err, errlen);
}

int jwt_add_jwks(struct cfg_jwt *v, const char *path, char *err, size_t errlen)
{
	return add_source(v, SRC_JWKS, path, err, errlen);
}

int jwt_add_hmac_file(struct cfg_jwt *v, const char *path, char *err, size_t errlen)
{
	return add_source(v, SRC_HMAC, path, err, errlen);
}

int jwt_want_claim(struct cfg_jwt *v, const char *name)
{
	for (unsigned i = 0; i < v->cfg.nwant; i++)
		if (!strcmp(v->cfg.want[i], name))
			return 0;
	if (v->cfg.nwant == JWT_MAX_WANT)
		return -E2BIG;
	v->cfg.want[v->cfg.nwant] = strdup(name);
	if (!v->cfg.want[v->cfg.nwant])
		return -ENOMEM;
	v->cfg.nwant++;
	return 0;
}

const char *jwt_token_header(const struct cfg_jwt *v)
{
	if (v->cfg.cookie)
		return NULL;
	return v->cfg.header ? v->cfg.header : "Authorization";
}

int jwt_check(struct cfg_jwt *v, char *err, size_t errlen)
{
	const struct jwt_keyset *ks = atomic_load(&v->keys);
	size_t fixed = 1; /* the NUL */
	bool jwks = false;

	/* Every claim header is always sent (empty when the claim is absent), so the sum must fit. */
	for (unsigned i = 0; i < v->cfg.nclaims; i++)
		fixed += strlen(v->cfg.claims[i].header) + 4;
	v->cfg.value_max = JWT_CLAIM_VALUE_MAX;
	if (v->cfg.nclaims) {
		size_t per = fixed < JWT_HEADERS_BUDGET ? (JWT_HEADERS_BUDGET - fixed) / v->cfg.nclaims : 0;

		if (per < 16) {
			snprintf(err, errlen,
				 "claims_to_headers: %u headers leave under 16 bytes per value in the %d-byte budget",
				 v->cfg.nclaims, JWT_HEADERS_BUDGET);
			return -EINVAL;
		}
		if (per < v->cfg.value_max)
			v->cfg.value_max = per;
	}

	if (!v->nsrcs) {
		snprintf(err, errlen, "no keys: set keys, jwks or hmac_secret_file");
		return -EINVAL;
	}
	if (!v->cfg.algs) {
		snprintf(err, errlen, "no algorithms allowed");
		return -EINVAL;
	}
	for (unsigned i = 0; i < v->nsrcs; i++)
		jwks |= v->srcs[i].kind == SRC_JWKS;
	for (int a = 0; a < JWT_ALG_N; a++) {
		bool have = false, type = false;

		if (!(v->cfg.algs & (1u << a)))
			continue;
		for (unsigned i = 0; i < ks->n; i++) {
			have |= key_serves(&ks->keys[i], a);
			type |= ks->keys[i].kty == alg_kty(a);
		}
		/* A JWKS may gain the key with its next rotation; files named here will not. */
		if (have || jwks)
			continue;
		if (type && alg_kty(a) == KTY_HMAC)
			snprintf(err, errlen, "%s needs a secret of at least %zu bytes", alg_names[a],
				 alg_hash_len(a));
		else
			snprintf(err, errlen, "%s is allowed but no key can verify it", alg_names[a]);
		return -EINVAL;
	}
	return 0;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct jwt_keyset *keys_enter(struct cfg_jwt *v, unsigned *slot)
{
	for (;;) {
		unsigned e = atomic_load(&v->epoch);

		atomic_fetch_add(&v->readers[e & 1], 1);
		if (atomic_load(&v->epoch) == e) {
			*slot = e & 1;
			return atomic_load(&v->keys);
		}
		/* A reload flipped the epoch between our two loads: it may not wait for us. */
		atomic_fetch_sub(&v->readers[e & 1], 1);
	}
}

static void keys_leave(struct cfg_jwt *v, unsigned slot)
{
	atomic_fetch_sub(&v->readers[slot], 1);
}

static void keys_publish(struct cfg_jwt *v, struct jwt_keyset *ks)
{
	struct jwt_keyset *old = atomic_exchange(&v->keys, ks);
	unsigned e = atomic_fetch_add(&v->epoch, 1);
	const struct timespec pause = { 0, 20000 };

	/* Readers of epoch e may hold old; new readers count in the other slot and see ks. */
	while (atomic_load(&v->readers[e & 1]))
		nanosleep(&pause, NULL);
	keyset_free(old);
}

static void reload(struct cfg_jwt *v)
{
	struct jwt_keyset *ks = calloc(1, sizeof(*ks));
	char err[512];
	int rc = 0;

	if (!ks) {
		log_warn("jwt: out of memory rebuilding keys; keeping the previous ones");
		return;
	}
	for (unsigned i = 0; i < v->nsrcs && !rc; i++)
		rc = load_source(ks, &v->srcs[i], err, sizeof(err));
	if (rc) {
		/* Stamps now hold the broken version: the next change tries again, no log flood. */
		log_warn("jwt: reloading keys failed: %s; keeping the previous keys", err);
		keyset_free(ks);
		return;
	}
	log_notice("jwt: reloaded %u key(s) from %s%s", ks->n, v->srcs[0].path,
		   v->nsrcs > 1 ? " and other files" : "");
	keys_publish(v, ks);
}

void jwt_maybe_reload(struct cfg_jwt *v, uint64_t now_ms)
{
	uint_fast64_t next = atomic_load_explicit(&v->next_check_ms, memory_order_relaxed);
	bool changed = false;

	if (now_ms < next ||
	    !atomic_compare_exchange_strong(&v->next_check_ms, &next, now_ms + JWT_RELOAD_EVERY_MS))
		return;
	if (pthread_mutex_trylock(&v->reload_lock))
		return;
	for (unsigned i = 0; i < v->nsrcs && !changed; i++) {
		struct jwt_stamp now = { 0 };
		struct stat st;

		if (!stat(v->srcs[i].path, &st))
			stamp_of(&st, &now);
		changed = !stamp_eq(&now, &v->srcs[i].stamp);
	}
	if (changed)
		reload(v);
	pthread_mutex_unlock(&v->reload_lock);
}

/* ---- signature verification ---------------------------------------------------------------- */

/* JOSE ECDSA signatures are r || s, fixed width; OpenSSL wants DER. */
static int ecdsa_raw_to_der(const unsigned char *sig, size_t len, size_t flen, unsigned char **der,
			    int *derlen)
{
	ECDSA_SIG *es;
	BIGNUM *r, *s;

	if (len != 2 * flen)
		return -EINVAL;
	es = ECDSA_SIG_new();
	r = BN_bin2bn(sig, (int)flen, NULL);
	s = BN_bin2bn(sig + flen, (int)flen, NULL);
	if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
		ECDSA_SIG_free(es);
		BN_free(r);
		BN_free(s);
		return -ENOMEM;
	}
	*der = NULL;
	*derlen = i2d_ECDSA_SIG(es, der);
	ECDSA_SIG_free(es);
	return *derlen > 0 ? 0 : -ENOMEM;
}

/* 1 verified, 0 not, -ENOMEM when OpenSSL could not even try. */
static int verify_with(const struct jwt_key *k, enum jwt_alg a, const char *data, size_t dlen,
		       const unsigned char *sig, size_t slen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = 0;

	if (!ctx)
		return -ENOMEM;
	if (k->kty == KTY_HMAC) {
		unsigned char mac[EVP_MAX_MD_SIZE];
		size_t mlen = sizeof(mac);

		if (EVP_DigestSignInit(ctx, NULL, alg_md(a), NULL, k->pkey) == 1 &&
		    EVP_DigestSign(ctx, mac, &mlen, (const unsigned char *)data, dlen) == 1)
			ok = mlen == slen && !CRYPTO_memcmp(mac, sig, slen);
		else
			ok = -ENOMEM;
		OPENSSL_cleanse(mac, sizeof(mac));
	} else if (k->kty == KTY_RSA) {
		if (slen == (size_t)EVP_PKEY_get_size(k->pkey) &&
		    EVP_DigestVerifyInit(ctx, NULL, alg_md(a), NULL, k->pkey) == 1)
			ok = EVP_DigestVerify(ctx, sig, slen, (const unsigned char *)data, dlen) == 1;
	} else {
		unsigned char *der = NULL;
		int derlen = 0;

		ok = ecdsa_raw_to_der(sig, slen, k->kty == KTY_EC256 ? 32 : 48, &der, &derlen);
		if (!ok && EVP_DigestVerifyInit(ctx, NULL, alg_md(a), NULL, k->pkey) == 1)
			ok = EVP_DigestVerify(ctx, der, (size_t)derlen, (const unsigned char *)data,
					      dlen) == 1;
		else if (ok == -EINVAL)
			ok = 0; /* wrong length: just a bad signature */
		OPENSSL_free(der);
	}
	EVP_MD_CTX_free(ctx);
	/* A failed verify leaves errors queued on this thread; TLS code on it must not see them. */
	ERR_clear_error();
	return ok;
}

/*
 * Picks keys for the token and tries them. A kid selects the keys carrying
 * it; when none does, key files without kids (PEM, secret files) are tried,
 * so an IdP's kid does not lock out an operator's PEM. Keys of another type
 * never take part: that is what refuses RS256→HS256 confusion.
 */
static enum jwt_err check_signature(struct cfg_jwt *v, enum jwt_alg a, const char *kid,
				    const char *data, size_t dlen, const unsigned char *sig,
				    size_t slen)
{
	unsigned slot, tries = 0;
	const struct jwt_keyset *ks = keys_enter(v, &slot);
	bool kid_seen = false, any_kid = false, typed = false;
	enum jwt_err res;

	for (unsigned pass = 0; pass < 2 && !tries; pass++) {
		for (unsigned i = 0; i < ks->n && tries < JWT_MAX_TRIES; i++) {
			const struct jwt_key *k = &ks->keys[i];
			int r;

			any_kid |= k->kid != NULL;
			if (kid && pass == 0) {
				if (!k->kid || strcmp(k->kid, kid))
					continue;
				kid_seen = true;
			} else if (kid && k->kid) {
				continue; /* second pass: only kid-less keys */
			}
			if (!key_serves(k, a))
				continue;
			typed = true;
			tries++;
			r = verify_with(k, a, data, dlen, sig, slen);
			if (r < 0) {
				keys_leave(v, slot);
				return JWT_ERR_INTERNAL;
			}
			if (r == 1) {
				keys_leave(v, slot);
				return JWT_OK;
			}
		}
		if (!kid)
			break;
	}
	if (typed)
		res = JWT_ERR_BAD_SIGNATURE;
	else if (kid && !kid_seen && any_kid)
		res = JWT_ERR_UNKNOWN_KID;
	else
		res = JWT_ERR_NO_KEY;
	keys_leave(v, slot);
	return res;
}

/* ---- claims ------------------------------------------------------------------------------------ */

/* Top-level members must be unique: two "alg"s or two "exp"s would mean different things to different readers. */
static bool members_unique(const struct jsonr *j, const struct jsonr_node *obj)
{
	for (const struct jsonr_node *a = jsonr_child(j, obj); a; a = jsonr_next(j, a))
		for (const struct jsonr_node *b = jsonr_next(j, a); b; b = jsonr_next(j, b))
			if (!strcmp(jsonr_key(j, a), jsonr_key(j, b)))
				return false;
	return true;
}

/* NumericDate (RFC 7519 §2): seconds, possibly fractional; clamped so arithmetic cannot overflow. */
static int numeric_date(const struct jsonr_node *n, int64_t *out)
{
	const double lim = 4e18;

	if (n->type != JSONR_NUMBER)
		return -EINVAL;
	if (n->is_int) {
		*out = n->i;
	} else {
		if (!isfinite(n->num))
			return -EINVAL;
		*out = n->num > lim ? (int64_t)lim : n->num < -lim ? -(int64_t)lim : (int64_t)n->num;
		if ((double)*out > n->num)
			(*out)--; /* truncation went up for a negative fraction: floor it */
	}
	if (*out > (int64_t)lim)
		*out = (int64_t)lim;
	if (*out < -(int64_t)lim)
		*out = -(int64_t)lim;
	return 0;
}

static bool in_list(char *const *list, unsigned n, const char *s)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(list[i], s))
			return true;
	return false;
}

static enum jwt_err check_claims(const struct jwt_policy *cfg, const struct jsonr *j,
				 const struct jsonr_node *p, int64_t now, struct jwt_result *res)
{
	const struct jsonr_node *n;
	int64_t leeway = (int64_t)cfg->leeway_s, t;

	n = jsonr_get(j, p, "exp");
	if (n) {
		if (numeric_date(n, &t))
			return JWT_ERR_BAD_CLAIM;
		if (now >= t + leeway)
			return JWT_ERR_EXPIRED;
		res->exp = t;
	} else if (cfg->require_exp) {
		return JWT_ERR_MISSING_EXP;
	}
	n = jsonr_get(j, p, "nbf");
	if (n) {
		if (numeric_date(n, &t))
			return JWT_ERR_BAD_CLAIM;
		if (now + leeway < t)
			return JWT_ERR_NOT_YET_VALID;
	}
	n = jsonr_get(j, p, "iat");
	if (n) {
		if (numeric_date(n, &t))
			return JWT_ERR_BAD_CLAIM;
		if (t > now + leeway)
			return JWT_ERR_ISSUED_IN_FUTURE;
	}
	n = jsonr_get(j, p, "iss");
	if (n && n->type != JSONR_STRING)
		return JWT_ERR_BAD_CLAIM;
	if (cfg->nissuers && (!n || !in_list(cfg->issuers, cfg->nissuers, n->str)))
		return JWT_ERR_WRONG_ISSUER;
	n = jsonr_get(j, p, "aud");
	if (n) {
		bool match = false;

		if (n->type == JSONR_STRING) {
			match = in_list(cfg->audiences, cfg->naudiences, n->str);
		} else if (n->type == JSONR_ARRAY) {
			for (const struct jsonr_node *a = jsonr_child(j, n); a; a = jsonr_next(j, a)) {
				if (a->type != JSONR_STRING)
					return JWT_ERR_BAD_CLAIM;
				match |= in_list(cfg->audiences, cfg->naudiences, a->str);
			}
		} else {
			return JWT_ERR_BAD_CLAIM;
		}
		if (cfg->naudiences && !match)
			return JWT_ERR_WRONG_AUDIENCE;
	} else if (cfg->naudiences) {
		return JWT_ERR_WRONG_AUDIENCE;
	}
	n = jsonr_get(j, p, "sub");
	if (n && n->type != JSONR_STRING)
		return JWT_ERR_BAD_CLAIM;
	if (n)
		jwt_sanitize_value(n->str, n->len, res->sub, sizeof(res->sub));
	return JWT_OK;
}

size_t jwt_sanitize_value(const char *in, size_t len, char *out, size_t cap)
{
	size_t limit = cap - 1 < JWT_CLAIM_VALUE_MAX ? cap - 1 : JWT_CLAIM_VALUE_MAX, o = 0, i = 0;

	while (i < len) {
		unsigned char c = (unsigned char)in[i];
		size_t seq = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 :
			     (c & 0xf8) == 0xf0 ? 4 : 1;

		if (c < 0x20 || c == 0x7f) {
			i++;
			continue;
		}
		if (seq > len - i)
			seq = len - i;
		/* Keep whole characters: a cut sequence would make the header invalid UTF-8. */
		if (o + seq > limit)
			break;
		for (size_t k = 0; k < seq; k++) {
			unsigned char d = (unsigned char)in[i + k];

			if (d < 0x20 || d == 0x7f)
				break;
			out[o++] = (char)d;
		}
		i += seq;
	}
	/* A header value has no leading or trailing whitespace (RFC 9110 §5.5). */
	while (o && out[o - 1] == ' ')
		o--;
	i = 0;
	while (i < o && out[i] == ' ')
		i++;
	memmove(out, out + i, o - i);
	o -= i;
	out[o] = '\0';
	return o;
}

/* A claim as header text: strings as they are, numbers and booleans spelled out, lists joined by ','. */
static size_t claim_text(const struct jsonr *j, const struct jsonr_node *n, char *out, size_t cap,
			 bool top)
{
	char tmp[32];
	size_t o = 0;

	switch (n->type) {
	case JSONR_STRING:
		return jwt_sanitize_value(n->str, n->len, out, cap);
	case JSONR_NUMBER:
		if (n->is_int)
			snprintf(tmp, sizeof(tmp), "%lld", (long long)n->i);
		else
			snprintf(tmp, sizeof(tmp), "%.17g", n->num);
		return jwt_sanitize_value(tmp, strlen(tmp), out, cap);
	case JSONR_BOOL:
		return jwt_sanitize_value(n->b ? "true" : "false", n->b ? 4 : 5, out, cap);
	case JSONR_ARRAY:
		if (!top)
			return 0;
		for (const struct jsonr_node *e = jsonr_child(j, n); e; e = jsonr_next(j, e)) {
			size_t w;

			if (o + 2 >= cap)
				break;
			if (o)
				out[o++] = ',';
			w = claim_text(j, e, out + o, cap - o, false);
			if (!w && o && out[o - 1] == ',')
				o--;
			o += w;
		}
		out[o] = '\0';
		return o;
	default:
		return 0; /* objects and null: no header */
	}
}

/*
 * Claim headers: one per configured entry, empty when the claim is absent or
 * has no text form, so that the gate always replaces what a client sent
 * under that name. Wanted claims: only those present.
 */
static void copy_claims(const struct jwt_policy *cfg, const struct jsonr *j,
			const struct jsonr_node *p, struct jwt_result *res)
{
	for (unsigned i = 0; i < cfg->nclaims; i++) {
		const struct jsonr_node *n = jsonr_get(j, p, cfg->claims[i].claim);
		char *slot = res->buf + (size_t)i * (JWT_CLAIM_VALUE_MAX + 1);

		slot[0] = '\0';
		res->headers[i].name = cfg->claims[i].header;
		res->headers[i].value = slot;
		res->headers[i].value_len = n ? claim_text(j, n, slot, cfg->value_max + 1, true) : 0;
	}
	res->nheaders = cfg->nclaims;
	for (unsigned i = 0; i < cfg->nwant; i++) {
		const struct jsonr_node *n = jsonr_get(j, p, cfg->want[i]);
		char *slot = res->wbuf + (size_t)res->nclaims * (JWT_CLAIM_VALUE_MAX + 1);
		size_t w;

		if (!n)
			continue;
		w = claim_text(j, n, slot, JWT_CLAIM_VALUE_MAX + 1, true);
		if (!w)
			continue;
		res->claims[res->nclaims].name = cfg->want[i];
		res->claims[res->nclaims].value = slot;
		res->claims[res->nclaims].value_len = w;
		res->nclaims++;
	}
}

/* ---- the token ------------------------------------------------------------------------------------ */

enum jwt_err jwt_verify(struct cfg_jwt *v, const char *tok, size_t len, int64_t now,
			struct jwt_result *res)
{
	unsigned char hdr[JWT_DEC_MAX + 1], pay[JWT_DEC_MAX + 1], sig[JWT_SIG_MAX];
	char hstr[JWT_DEC_MAX + 8], pstr[JWT_DEC_MAX + 8];
	struct jsonr_node hnodes[JWT_HDR_NODES], pnodes[JWT_PAY_NODES];
	const char *d1, *d2, *alg_s, *kid = NULL;
	const struct jsonr_node *n;
	struct jsonr hj, pj;
	ssize_t hl, pl, sl;
	enum jwt_err e;
	int alg;

	memset(res, 0, offsetof(struct jwt_result, buf));
	if (!len)
		return JWT_ERR_MISSING;
	if (len > JWT_MAX_TOKEN)
		return JWT_ERR_TOO_LARGE;
	d1 = memchr(tok, '.', len);
	d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
	/* Exactly three segments: a fourth dot would be JWE or junk. */
	if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)) || d1 == tok || d2 == d1 + 1)
		return JWT_ERR_MALFORMED;
	hl = b64url_decode(tok, (size_t)(d1 - tok), hdr, JWT_DEC_MAX);
	pl = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), pay, JWT_DEC_MAX);
	sl = b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - tok), sig, sizeof(sig));
	if (hl <= 0 || pl <= 0 || sl < 0)
		return JWT_ERR_MALFORMED;
	if (jsonr_parse(&hj, (const char *)hdr, (size_t)hl, hnodes, JWT_HDR_NODES, hstr, sizeof(hstr)) ||
	    hj.nodes[0].type != JSONR_OBJECT || !members_unique(&hj, &hj.nodes[0]))
		return JWT_ERR_MALFORMED;
	n = jsonr_get(&hj, &hj.nodes[0], "alg");
	if (!n || n->type != JSONR_STRING)
		return JWT_ERR_ALG_NOT_ALLOWED;
	alg_s = n->str;
	alg = jwt_alg_from_name(alg_s);
	if (alg < 0 || !(v->cfg.algs & (1u << alg)))
		return JWT_ERR_ALG_NOT_ALLOWED;
	/* We understand no extension, so any crit is one we must refuse (RFC 7515 §4.1.11). */
	if (jsonr_get(&hj, &hj.nodes[0], "crit") || jsonr_get(&hj, &hj.nodes[0], "zip"))
		return JWT_ERR_UNSUPPORTED;
	n = jsonr_get(&hj, &hj.nodes[0], "kid");
	if (n) {
		if (n->type != JSONR_STRING)
			return JWT_ERR_MALFORMED;
		kid = n->str;
	}
	if (jsonr_parse(&pj, (const char *)pay, (size_t)pl, pnodes, JWT_PAY_NODES, pstr, sizeof(pstr)) ||
	    pj.nodes[0].type != JSONR_OBJECT || !members_unique(&pj, &pj.nodes[0]))
		return JWT_ERR_MALFORMED;
	if (sl == 0)
		return JWT_ERR_BAD_SIGNATURE;

	jwt_maybe_reload(v, mono_ms());
	e = check_signature(v, alg, kid, tok, (size_t)(d2 - tok), sig, (size_t)sl);
	if (e)
		return e;
	res->alg = alg;
	e = check_claims(&v->cfg, &pj, &pj.nodes[0], now, res);
	if (e)
		return e;
	copy_claims(&v->cfg, &pj, &pj.nodes[0], res);
	return JWT_OK;
}

/* ---- where the token is ---------------------------------------------------------------------------- */

static bool name_eq(const char *a, size_t alen, const char *b)
{
	return alen == strlen(b) && !strncasecmp(a, b, alen);
}

/* Finds NAME=value in Cookie headers (RFC 6265 §4.2.1); a second one is ambiguous. */
static enum jwt_err find_cookie(const char *name, const struct http1_request *req, const char **tok,
				size_t *len)
{
	size_t nlen = strlen(name);
	unsigned found = 0;

	for (uint32_t h = 0; h < req->nheaders; h++) {
		const char *p, *end;

		if (!name_eq(req->headers[h].name, req->headers[h].name_len, "Cookie"))
			continue;
		p = req->headers[h].value;
		end = p + req->headers[h].value_len;
		while (p < end) {
			const char *semi = memchr(p, ';', (size_t)(end - p)), *eq;
			const char *pe = semi ? semi : end;

			while (p < pe && (*p == ' ' || *p == '\t'))
				p++;
			eq = memchr(p, '=', (size_t)(pe - p));
			if (eq && (size_t)(eq - p) == nlen && !memcmp(p, name, nlen)) {
				const char *vs = eq + 1, *ve = pe;

				while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
					ve--;
				if (ve - vs >= 2 && vs[0] == '"' && ve[-1] == '"') {
					vs++;
					ve--;
				}
				if (++found > 1)
					return JWT_ERR_MALFORMED;
				*tok = vs;
				*len = (size_t)(ve - vs);
			}
			p = semi ? semi + 1 : end;
		}
	}
	if (!found || !*len)
		return JWT_ERR_MISSING;
	return JWT_OK;
}

enum jwt_err jwt_extract(const struct cfg_jwt *v, const struct http1_request *req,
			 const char **tok, size_t *len)
{
	const char *hname = v->cfg.header ? v->cfg.header : "Authorization";
	const struct http1_header *found = NULL;
	const char *p;
	size_t l;

	*tok = NULL;
	*len = 0;
	if (v->cfg.cookie)
		return find_cookie(v->cfg.cookie, req, tok, len);
	for (uint32_t h = 0; h < req->nheaders; h++) {
		if (!name_eq(req->headers[h].name, req->headers[h].name_len, hname))
			continue;
		if (found)
			return JWT_ERR_MALFORMED; /* two credentials: which one would the backend trust? */
		found = &req->headers[h];
	}
	if (!found)
		return JWT_ERR_MISSING;
	p = found->value;
	l = found->value_len;
	if (l > 7 && !strncasecmp(p, "Bearer ", 7)) {
		p += 7;
		l -= 7;
		while (l && *p == ' ') {
			p++;
			l--;
		}
	} else if (!strcasecmp(hname, "Authorization")) {
		return JWT_ERR_MISSING; /* Basic or another scheme: no bearer token here */
	}
	if (!l)
		return JWT_ERR_MISSING;
	*tok = p;
	*len = l;
	return JWT_OK;
}

enum jwt_err jwt_authenticate(struct cfg_jwt *v, const struct http1_request *req,
			      struct jwt_result *res)
{
	const char *tok;
	size_t len;
	enum jwt_err e = jwt_extract(v, req, &tok, &len);

	if (e) {
		memset(res, 0, offsetof(struct jwt_result, buf));
		return e;
	}
	return jwt_verify(v, tok, len, (int64_t)time(NULL), res);
}
