/* agent/jwt.h — JWT (compact JWS) validation for `auth: {type: jwt}` routes: keys, signatures, claims, claim headers. */
#ifndef OPENCLAW_JWT_H
#define OPENCLAW_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http1.h"

#define JWT_MAX_TOKEN 8192        /* bytes of a compact token; longer ones are refused (token_too_large) */
#define JWT_MAX_CLAIM_HEADERS 16  /* claims_to_headers entries per route */
#define JWT_CLAIM_VALUE_MAX 256   /* bytes of one claim header value after sanitising (cut at a UTF-8 boundary) */
#define JWT_SUB_MAX 128           /* bytes of the `sub` copy kept for logs and rate-limit keys */
#define JWT_JWKS_MAX (256u << 10) /* a JWKS file larger than this is refused */
#define JWT_MAX_WANT 8            /* claims exported for rate-limit keys (jwt_claim:NAME) */
/*
 * Bytes all claim header lines of one request may take ("Name: value\r\n"
 * each, NUL included): jwt_check shortens value_max so they always fit the
 * gate's upstream header buffer (gate.c asserts GATE_UP_HEADERS_MAX >= this).
 * Always fitting matters: a header that was not added is one the client
 * could have supplied itself.
 */
#define JWT_HEADERS_BUDGET 512

/* Signature algorithms (RFC 7518 §3.1). "none" has no member: it is never accepted. */
enum jwt_alg {
	JWT_HS256,
	JWT_HS384,
	JWT_HS512,
	JWT_RS256,
	JWT_RS384,
	JWT_RS512,
	JWT_ES256,
	JWT_ES384,
	JWT_ALG_N,
};

/* Why a request was refused: a stable code for logs and metrics. Never carries the token. */
enum jwt_err {
	JWT_OK = 0,
	JWT_ERR_MISSING,          /* "missing_token": no credentials where the route reads them */
	JWT_ERR_TOO_LARGE,        /* "token_too_large": over JWT_MAX_TOKEN bytes */
	JWT_ERR_MALFORMED,        /* "malformed": segments, base64url, JSON, duplicate members */
	JWT_ERR_UNSUPPORTED,      /* "unsupported_header": crit, or a typ that is not a JWT */
	JWT_ERR_ALG_NOT_ALLOWED,  /* "alg_not_allowed": alg absent, "none", unknown or not in algorithms */
	JWT_ERR_UNKNOWN_KID,      /* "unknown_kid": the token names a kid no loaded key has */
	JWT_ERR_NO_KEY,           /* "no_key": no loaded key of the alg's type (e.g. HS256 without a secret) */
	JWT_ERR_BAD_SIGNATURE,    /* "bad_signature": no candidate key verifies the signature */
	JWT_ERR_BAD_CLAIM,        /* "bad_claim": exp/nbf/iat/iss/aud/sub of the wrong JSON type */
	JWT_ERR_MISSING_EXP,      /* "missing_exp": no exp while require_exp is on */
	JWT_ERR_EXPIRED,          /* "expired": now >= exp + leeway */
	JWT_ERR_NOT_YET_VALID,    /* "not_yet_valid": now + leeway < nbf */
	JWT_ERR_ISSUED_IN_FUTURE, /* "issued_in_future": iat > now + leeway */
	JWT_ERR_WRONG_ISSUER,     /* "wrong_issuer": iss missing or not one of issuer */
	JWT_ERR_WRONG_AUDIENCE,   /* "wrong_audience": no aud value is one of audience */
	JWT_ERR_INTERNAL,         /* "internal": OpenSSL or allocation failure (500, not the client's fault) */
	JWT_ERR_N,
};

/* One claims_to_headers entry: top-level claim name → upstream header name. */
struct jwt_claim_header {
	char *claim;  /* e.g. "sub" */
	char *header; /* e.g. "X-User"; an RFC 9110 token */
};

/* A route's policy; config.c fills it (strings owned, freed by jwt_free). */
struct jwt_policy {
	uint32_t algs;           /* allowed algorithms: bit (1u << enum jwt_alg); never empty */
	char **issuers;          /* accepted iss values; none = iss not checked */
	unsigned nissuers;
	char **audiences;        /* accepted aud values (any one matches); none = aud not checked */
	unsigned naudiences;
	uint64_t leeway_s;       /* clock skew allowed on exp, nbf and iat, seconds */
	bool require_exp;        /* a token without exp is refused (default on) */
	char *header;            /* request header carrying the token (default "Authorization") */
	char *cookie;            /* or the cookie carrying it; NULL when the header is used */
	bool forward_token;      /* pass the token header upstream (default: stripped) */
	struct jwt_claim_header claims[JWT_MAX_CLAIM_HEADERS];
	unsigned nclaims;
	char *want[JWT_MAX_WANT]; /* claims copied into jwt_result.claims (rate-limit keys) */
	unsigned nwant;
	size_t value_max;        /* bytes per claim header value; set by jwt_check from the budget */
};

/* The outcome of one successful validation: copied out, so nothing points into the token or keys. */
struct jwt_result {
	enum jwt_alg alg;        /* the algorithm that verified */
	int64_t exp;             /* exp claim, or 0 when absent */
	char sub[JWT_SUB_MAX + 1]; /* sanitised sub claim ("" when absent): for logs and limit keys */
	unsigned nheaders;       /* claims found, in claims_to_headers order */
	struct {
		const char *name;    /* points into the route's jwt_config (lives as long as the config) */
		const char *value;   /* points into buf below; sanitised, capped */
		size_t value_len;
	} headers[JWT_MAX_CLAIM_HEADERS];
	unsigned nclaims;        /* wanted claims found, in jwt_want_claim order */
	struct {
		const char *name;    /* points into the policy */
		const char *value;   /* points into wbuf; sanitised, at most JWT_CLAIM_VALUE_MAX bytes */
		size_t value_len;
	} claims[JWT_MAX_WANT];
	char buf[JWT_MAX_CLAIM_HEADERS * (JWT_CLAIM_VALUE_MAX + 1)];
	char wbuf[JWT_MAX_WANT * (JWT_CLAIM_VALUE_MAX + 1)];
};

struct cfg_jwt;

/* Stable lower-case names ("expired", "bad_signature", ...) and back. */
const char *jwt_err_name(enum jwt_err e);
const char *jwt_alg_name(enum jwt_alg a);
int jwt_alg_from_name(const char *s); /* enum jwt_alg, or -1 */

/*
 * HTTP status for a refusal (401, or 500 for JWT_ERR_INTERNAL) and the
 * WWW-Authenticate value (RFC 6750 §3) to send with it: `Bearer` alone for
 * a missing token, `Bearer error="invalid_token", error_description="CODE"`
 * otherwise (the code holds no secret); "" for JWT_ERR_INTERNAL. Returns
 * the length or -ENOSPC.
 */
int jwt_err_status(enum jwt_err e);
int jwt_www_authenticate(enum jwt_err e, char *buf, size_t len);
/* A static "auth: jwt CODE" for the access log's error field. */
const char *jwt_err_log(enum jwt_err e);

/* A verifier with an empty policy: fill *jwt_policy(), add key sources, then jwt_check(). */
struct cfg_jwt *jwt_new(void);
struct jwt_policy *jwt_policy(struct cfg_jwt *v);
void jwt_free(struct cfg_jwt *v);

/*
 * Key sources. Each returns 0 or a negative errno with a reason in err (the
 * path included, never key material):
 *  - pem: public keys ("PUBLIC KEY", "RSA PUBLIC KEY") and certificates; private
 *    keys are refused; RSA under 2048 bits is refused; EC must be P-256 or P-384.
 *  - jwks: an RFC 7517 key set; kty RSA (n, e), EC (crv, x, y), oct (k); keys
 *    with use other than "sig" or an unknown kty are skipped; `alg` on a key
 *    binds it to that algorithm.
 *  - hmac: the whole file is the secret (one trailing newline dropped); the
 *    file must not be readable or writable by group or others (mode 0600 or
 *    stricter); at least 32 bytes.
 * All sources are watched: when a file's mtime, size or inode changes the key
 * set is rebuilt (at most once a second, by the first request that notices)
 * and swapped in without blocking verifications; a rebuild that fails keeps
 * the previous keys and logs why.
 */
int jwt_add_pem(struct cfg_jwt *v, const char *path, char *err, size_t errlen);
int jwt_add_jwks(struct cfg_jwt *v, const char *path, char *err, size_t errlen);
int jwt_add_hmac_file(struct cfg_jwt *v, const char *path, char *err, size_t errlen);

/* Exports claim name in every jwt_result (for limits keyed by jwt_claim:NAME); 0, -E2BIG or -ENOMEM. */
int jwt_want_claim(struct cfg_jwt *v, const char *name);

/* The request header the token is read from (NULL when a cookie carries it), to strip before forwarding. */
const char *jwt_token_header(const struct cfg_jwt *v);

/*
 * Checks the policy against the keys: at least one source; each allowed HS
 * algorithm has a secret at least as long as its hash; when no JWKS is used
 * (its keys may come later), each allowed algorithm has a key of its type;
 * the claim headers fit JWT_HEADERS_BUDGET with values of at least 16 bytes.
 */
int jwt_check(struct cfg_jwt *v, char *err, size_t errlen);

/* Rebuilds the key set if a source changed; done by jwt_verify itself, exposed for tests. now_ms: CLOCK_MONOTONIC. */
void jwt_maybe_reload(struct cfg_jwt *v, uint64_t now_ms);

/*
 * Finds the token in the request (the configured header, "Bearer " stripped
 * for Authorization, or the cookie). JWT_ERR_MISSING when absent,
 * JWT_ERR_MALFORMED when it appears twice or the scheme is not Bearer.
 */
enum jwt_err jwt_extract(const struct cfg_jwt *v, const struct http1_request *req,
			 const char **tok, size_t *len);

/*
 * Validates one compact token at wall-clock time now (seconds since the
 * epoch): size, segments, strict base64url, header JSON (alg in the allowed
 * list, crit refused, kid), key choice (kid, key type matching the alg
 * family), signature, then exp/nbf/iat with leeway, iss, aud; on success
 * fills *res. Safe to call from many threads at once.
 */
enum jwt_err jwt_verify(struct cfg_jwt *v, const char *tok, size_t len, int64_t now,
			struct jwt_result *res);

/* jwt_extract + jwt_verify on the request, with the wall clock. */
enum jwt_err jwt_authenticate(struct cfg_jwt *v, const struct http1_request *req,
			      struct jwt_result *res);

/*
 * Copies a claim value into out (cap bytes, cap >= 1) for use in a header:
 * control characters (CR, LF, NUL, other C0, DEL) dropped, surrounding
 * spaces trimmed, cut at JWT_CLAIM_VALUE_MAX (and cap - 1) on a UTF-8
 * boundary. Returns the length.
 */
size_t jwt_sanitize_value(const char *in, size_t len, char *out, size_t cap);

#endif
