/* agent/gate.h — request admission after routing: authentication (API key; JWT plugs in here) and rate limits. */
#ifndef OPENCLAW_GATE_H
#define OPENCLAW_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "http1.h"
#include "keys.h"

struct control;
struct gate;

#define GATE_UP_HEADERS_MAX 512   /* bytes of header lines added upstream */
#define GATE_RESP_HEADERS_MAX 384 /* bytes of header lines added to the response */
#define GATE_CLAIMS_MAX 512       /* bytes of "name\0value\0" pairs an authenticator leaves */

/*
 * What the gate decided about one request. gate_check fills every field.
 * status 0: forward, with up_headers added and strip_header / strip_query
 * removed (the credential never goes upstream), and resp_headers added to the
 * response. Otherwise: answer status locally with resp_headers.
 */
struct gate_verdict {
	int status;                      /* 0 = admitted; 401, 403, 429 or 503 */
	const char *error;               /* static reason for the access log; never a credential */
	const char *strip_header;        /* request header not to forward, or NULL */
	const char *strip_query;         /* query parameter not to forward, or NULL */
	char key_id[KEYS_ID_LEN + 1];    /* the authenticated key id, "" when none */
	const char *tier;                /* its tier name (the index's copy; valid until the next check), or NULL */
	char up_headers[GATE_UP_HEADERS_MAX];     /* "Name: value\r\n" lines for upstream */
	char resp_headers[GATE_RESP_HEADERS_MAX]; /* "Name: value\r\n" lines for the client */
	/*
	 * Claims of the authenticated principal, for limits keyed by
	 * jwt_claim:NAME: "name\0value\0..." (gate_claim_add / gate_claim_get).
	 */
	char claims[GATE_CLAIMS_MAX];
	size_t claims_len;
};

/*
 * Opens the key store (when the config has tiers or any api_key route), the
 * shared limiter table and the maintenance thread (index reclamation,
 * last-used and quota flushes every few seconds). The gate is made even when
 * no route needs it yet, so a reload can turn auth and limits on (see
 * gate_reload). nworkers: worker ids given to gate_check are 0..nworkers-1.
 */
int gate_start(struct gate **out, const struct config *cfg, unsigned nworkers, char *err,
	       size_t errlen);
/*
 * For a configuration reload, before a snapshot of cfg reaches the workers:
 * cfg becomes the gate's (tiers, route names for scopes and commands; the
 * caller keeps it alive until the next gate_reload or gate_stop), the key
 * store opens if cfg is the first to need it, every route name gets its
 * counters and the key index is rebuilt with cfg's tiers. Rate-limit
 * buckets are keyed by route name and limit, so unchanged limits keep their
 * state. 0, or a negative errno with the reason in err (nothing changed).
 */
int gate_reload(struct gate *g, const struct config *cfg, char *err, size_t errlen);
/* Flushes quotas and last-used times, stops the thread, closes the store. */
void gate_stop(struct gate *g);

/* keys.create/list/show/revoke/rotate/set and limits.show. */
int gate_register_commands(struct gate *g, struct control *c);

/*
 * For clawctl status (read-only): "keys": the store's path (null when the key
 * store is off) and how many keys are active, revoked and expired now.
 */
struct jsonw;
void gate_status(struct gate *g, struct jsonw *w);

struct metrics;
/* Adds openclaw_auth_results_total, _ratelimit_rejections_total and _quota_rejections_total to scrapes (g NULL: nothing). */
int gate_register_metrics(struct gate *g, struct metrics *m);

/*
 * The admission hook: called once per request after routing (route indexes
 * cfg->routes), before the body is read. g NULL: routes without auth and
 * limits pass, the others get 503 (fail closed while the gate is not up).
 * now_ns is the worker's CLOCK_MONOTONIC time. Returns v->status.
 */
int gate_check(struct gate *g, unsigned worker, const struct config *cfg, int route,
	       const struct http1_request *req, const struct sockaddr *peer, uint64_t now_ns,
	       struct gate_verdict *v);

/* Adds a claim (for authenticators); false when it does not fit. */
bool gate_claim_add(struct gate_verdict *v, const char *name, const char *value, size_t len);
/* A claim's value, or NULL. */
const char *gate_claim_get(const struct gate_verdict *v, const char *name);

/* Appends "Name: value\r\n" to buf (cap bytes, NUL-terminated); false when it does not fit or value has CTLs. */
bool gate_header_add(char *buf, size_t cap, const char *name, const char *value, size_t vlen);

/*
 * The credential of an api_key route in req: header value, bearer token or
 * query parameter. Returns its length (0 when absent) and *out.
 */
size_t gate_credential(const struct cfg_auth *a, const struct http1_request *req, const char **out);

#endif
