/* agent/config.h — the parsed, validated configuration: an immutable tree built once per load. */
#ifndef OPENCLAW_CONFIG_H
#define OPENCLAW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"

#define CFG_MAX_LISTENERS 64 /* a route's listener set is a 64-bit mask */
#define CFG_DEFAULT_PATH "/etc/openclaw/openclaw.yaml"

/* Timeouts in milliseconds; 0 means "no limit" only where documented. */
struct cfg_timeouts {
	uint64_t connect_ms;           /* TCP connect to a backend (504 when it expires) */
	uint64_t client_header_ms;     /* first byte to end of request head (408) */
	uint64_t client_body_ms;       /* max gap between two reads of the request body (408) */
	uint64_t idle_ms;              /* idle keep-alive client connection (closed silently) */
	uint64_t upstream_response_ms; /* request sent to response head received (504) */
	uint64_t upstream_idle_ms;     /* max gap between two reads of the response body (504/close) */
	uint64_t request_ms;           /* whole exchange, head to last response byte; 0 = none */
};

/* listeners[].tls.certificates[]: one certificate chain and its private key (PEM). */
struct cfg_tls_cert {
	char *cert;        /* chain file: leaf first */
	char *key;         /* private key file; refused when group or others may read it */
	char *ocsp_staple; /* DER OCSP response stapled with this certificate, NULL = none */
	char *where;       /* "FILE:LINE: listeners[i].tls.certificates[j]", for messages */
};

enum cfg_ktls { CFG_KTLS_AUTO, CFG_KTLS_OFF };

/* listeners[].tls: TLS termination (docs/tls.md); NULL on a plain listener. */
struct cfg_tls {
	struct cfg_tls_cert *certs;
	unsigned ncerts;
	unsigned default_cert;         /* index in certs: served when SNI matches no name */
	int min_version;               /* 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3) */
	char *ciphers;                 /* TLS 1.2 cipher list (OpenSSL syntax), NULL = built-in */
	char *ciphersuites;            /* TLS 1.3 suites, NULL = built-in */
	bool session_tickets;          /* stateless resumption (keys rotate, docs/tls.md) */
	uint64_t session_cache;        /* server-side session cache entries, 0 = off */
	uint64_t handshake_timeout_ms; /* accept to handshake done; closed silently after */
	enum cfg_ktls ktls;            /* auto: kernel record layer when the kernel has it */
	char *where;                   /* "FILE:LINE: listeners[i].tls", for messages */
};

struct cfg_listener {
	char *name;           /* unique; routes refer to it */
	struct net_addr addr; /* bind address */
	uint32_t backlog;     /* listen(2) backlog */
	unsigned line;        /* line in the file, for messages */
	int *tcp_routes;      /* routes in tcp mode on this listener (pure L4), file order; NULL none */
	unsigned ntcp_routes; /* their number: > 0 makes the listener pure L4 */
	int tcp_default;      /* the tcp route without match.sni (taken when no name matches), -1 none */
	bool sni_peek;        /* a tcp route here has match.sni: the ClientHello is peeked first */
	struct cfg_tls *tls;  /* TLS termination (docs/tls.md), NULL = plain HTTP */
};

enum lb_algorithm {
	LB_ROUND_ROBIN,          /* "round_robin": equal turns, weights ignored */
	LB_WEIGHTED_ROUND_ROBIN, /* "weighted_round_robin": smooth WRR (nginx's) */
	LB_LEAST_CONN,           /* "least_conn": fewest in-flight requests per weight */
	LB_IP_HASH,              /* "ip_hash": client address (v6 by /64) → server */
	LB_CONSISTENT_HASH,      /* "consistent_hash": ring on hash_key */
	LB_PEAK_EWMA,            /* "peak_ewma": power of two choices on latency×load */
};

enum lb_hash_source {
	LB_HASH_CLIENT_IP, /* "ip" (default for consistent_hash) */
	LB_HASH_HEADER,    /* "header:NAME" */
	LB_HASH_COOKIE,    /* "cookie:NAME" */
	LB_HASH_PATH,      /* "path" (without query) */
};

/* Circuit breaker limits (pool-wide or per server); 0 = no limit. See docs/health.md. */
struct cfg_breaker {
	uint32_t max_connections; /* open backend connections, idle pooled ones included */
	uint32_t max_pending;     /* requests waiting for a backend connection (connecting) */
	uint32_t max_requests;    /* requests in flight (sent, response not finished) */
};

struct cfg_server {
	struct net_addr addr; /* backend address */
	uint32_t weight;      /* relative weight, 1..1000 */
	unsigned line;
	bool backup;          /* used only when no primary server of the pool is usable */
	struct cfg_breaker limits; /* this server's own circuit breaker */
	char sni[254];        /* TLS pools: this server's name (sent and verified), "" = the pool's sni */
};

enum cfg_health_type {
	CFG_HEALTH_NONE, /* no active checks (the default) */
	CFG_HEALTH_TCP,  /* "tcp": a connect that completes within timeout */
	CFG_HEALTH_HTTP, /* "http": a request whose status is in expect (and body has body_contains) */
};

/* An inclusive range of HTTP statuses. */
struct cfg_status_range {
	uint16_t lo, hi; /* 100..599, lo <= hi */
};

/* upstreams[].health: active checks run by the health thread. */
struct cfg_health {
	enum cfg_health_type type;
	char *path;                      /* request target, default "/" */
	char *method;                    /* default "GET" */
	char *host;                      /* Host header, default the server's address */
	struct cfg_status_range *expect; /* statuses that pass, default 200-399 */
	unsigned nexpect;
	char *body_contains;             /* substring the body must hold, or NULL */
	uint64_t interval_ms;            /* time between two checks of one server */
	uint32_t jitter_pct;             /* each interval varies by up to ± this percent */
	uint64_t timeout_ms;             /* whole check: connect, send, response */
	uint32_t rise;                   /* consecutive passes that bring a down server up */
	uint32_t fall;                   /* consecutive failures that take an up server down */
};

/* upstreams[].outlier: passive ejection from live traffic; off when consecutive_failures is 0. */
struct cfg_outlier {
	uint32_t consecutive_failures; /* connect failures / 5xx / timeouts in a row that eject */
	uint64_t base_ejection_ms;     /* first ejection; the n-th lasts n times as long */
	uint64_t max_ejection_ms;      /* cap on one ejection */
	uint32_t max_ejected_percent;  /* share of the pool that may be ejected at once */
};

struct tls_client_ctx; /* defined by agent/tls_client.c */

/* upstreams[].tls: TLS to the pool's backends (docs/tls.md "Upstream TLS"); NULL = plain TCP. */
struct cfg_upstream_tls {
	char *ca;            /* PEM bundle the backend's chain must verify against; NULL = system store */
	char *sni;           /* server name sent and verified; NULL = none sent, the address is verified */
	bool verify;         /* check the chain and the name or address (default on) */
	char *cert;          /* client certificate chain for mutual TLS, or NULL */
	char *key;           /* its private key; refused when group or others may read it */
	int min_version;     /* 0x0303 (TLS 1.2, default) or 0x0304 (TLS 1.3) */
	bool alpn;           /* offer "http/1.1" by ALPN (default on) */
	bool session_reuse;  /* resume sessions, cached per server per worker (default on) */
	enum cfg_ktls ktls;  /* auto: the kernel takes the record layer after the handshake when it can (default) */
	char *where;         /* "FILE:LINE: upstreams[i].tls", for messages */
	struct tls_client_ctx *ctx; /* OpenSSL client context built at load; owned and freed by tls_client.c */
};

/* upstreams[].retry: which failed attempts are tried again, how soon and how often (docs/retries.md). */
struct cfg_retry {
	uint32_t attempts;             /* retries after the first attempt, 0..10 (default 1); connect failures follow connect_tries */
	uint32_t on;                   /* bit set, 1 << enum retry_reason (retry.h); default connect_failure + reset */
	uint64_t backoff_base_ms;      /* full jitter: sleep uniform in [0, min(max, base × 2^n)] (default 25ms) */
	uint64_t backoff_max_ms;       /* cap of one sleep (default 250ms) */
	uint32_t budget_ratio_bp;      /* retries ≤ ratio × requests over 10 s, ratio in 1/10000 (default 2000 = 0.2) */
	uint32_t budget_min_per_second; /* retries per second per worker always allowed (default 3) */
};

struct cfg_upstream {
	char *name;                      /* unique; routes refer to it */
	enum lb_algorithm algorithm;     /* default round_robin */
	enum lb_hash_source hash_source; /* for consistent_hash */
	char *hash_name;                 /* header or cookie name, else NULL */
	struct cfg_server *servers;      /* at least one */
	unsigned nservers;
	uint32_t keepalive;     /* idle pooled connections kept per server per worker; 0 = none */
	uint32_t connect_tries; /* servers tried on connect failure before 502 (default min(3, n)) */
	unsigned line;
	struct cfg_health health;   /* active checks; type NONE = off */
	struct cfg_outlier outlier; /* passive ejection */
	uint64_t slow_start_ms;     /* weight ramps 10% → 100% over this after recovery; 0 = off */
	struct cfg_breaker limits;  /* pool-wide circuit breaker */
	unsigned nbackup;           /* servers with backup: true */
	struct cfg_upstream_tls *tls; /* re-encrypt to the backends; NULL = plain TCP */
	struct cfg_retry retry;     /* request retries (docs/retries.md) */
};

enum route_path_kind {
	ROUTE_PATH_ANY,    /* no path condition */
	ROUTE_PATH_EXACT,  /* match.path: "/healthz" */
	ROUTE_PATH_PREFIX, /* match.path_prefix: "/v1/" */
	ROUTE_PATH_REGEX,  /* match.path_regex: PCRE2, anchored by the author */
};

struct cfg_header_match {
	char *name;  /* header name, matched case-insensitively */
	char *value; /* exact value, or NULL for "present" */
};

struct cfg_respond {
	uint16_t status;    /* 100..599 */
	char *body;         /* may be empty */
	size_t body_len;    /* bytes of body */
	char *content_type; /* default "text/plain; charset=utf-8" */
};

/* tracing.request_id.trust: whose X-Request-ID is kept. */
enum cfg_trust {
	CFG_TRUST_TRUSTED_PROXIES, /* "trusted_proxies": only from peers in trusted_proxies (default) */
	CFG_TRUST_ALWAYS,          /* "always": from anyone (behind a proxy that sanitises it) */
	CFG_TRUST_NEVER,           /* "never": always generate our own */
};

/* tracing (top level, or per route on top of the top-level values). */
struct cfg_tracing {
	enum cfg_trust request_id_trust;
	char *request_id_header;  /* header carrying the request id; default "X-Request-ID" */
	bool traceparent;         /* W3C trace context: propagate, or start when absent (default on) */
	bool sample;              /* sampled flag of traces the proxy starts (default off) */
};

/* A rate: count events per per_ms milliseconds ("10/s" is 10 per 1000). */
struct cfg_rate {
	uint64_t count;  /* events, >= 1 */
	uint64_t per_ms; /* window, milliseconds: 1000 (/s), 60000 (/m), 3600000 (/h), 86400000 (/d) */
};

/* tiers[]: what an API key of this tier may do unless the key overrides it. */
struct cfg_tier {
	char *name;             /* unique; keys name it */
	struct cfg_rate rate;   /* sustained rate; count 0 = no rate limit */
	uint64_t burst;         /* requests admitted at once (default: rate.count) */
	uint64_t quota_day;     /* requests per UTC day; 0 = none */
	uint64_t quota_month;   /* requests per UTC calendar month; 0 = none */
	unsigned line;
};

/* routes[].auth.type */
enum cfg_auth_type {
	CFG_AUTH_NONE,    /* no auth: key omitted */
	CFG_AUTH_API_KEY, /* "api_key": a key of the key store (agent/keys.h) */
	CFG_AUTH_JWT,     /* "jwt": a signed token (agent/jwt.h); settings in jwt */
};

/* Where the credential is read from. */
enum cfg_cred_source {
	CFG_CRED_HEADER, /* header: NAME (default X-API-Key) */
	CFG_CRED_BEARER, /* header: "Authorization: Bearer" */
	CFG_CRED_QUERY,  /* query: NAME */
};

struct cfg_jwt; /* defined by agent/jwt.h */

/* routes[].auth */
struct cfg_auth {
	enum cfg_auth_type type;
	enum cfg_cred_source source;
	char *name;            /* header or query parameter name (NULL for bearer) */
	char *hdr_key_id;      /* upstream_headers.key_id: header carrying the key id upstream, or NULL */
	char *hdr_tier;        /* upstream_headers.tier: header carrying the tier upstream, or NULL */
	struct cfg_jwt *jwt;   /* type jwt: its settings (owned and freed by jwt.c), else NULL */
	unsigned line;
};

/* routes[].limits[].key: what one bucket belongs to. */
enum cfg_limit_key {
	CFG_LIMIT_IP,        /* "ip": the client address (IPv6 grouped by ipv6_prefix) */
	CFG_LIMIT_API_KEY,   /* "api_key": the authenticated key id */
	CFG_LIMIT_HEADER,    /* "header:NAME": the header's value (absent: one shared bucket) */
	CFG_LIMIT_JWT_CLAIM, /* "jwt_claim:NAME": a claim of the validated token */
};

/* routes[].limits[]: one GCRA limit; a request must pass all of a route's limits. */
struct cfg_rate_limit {
	enum cfg_limit_key key;
	char *name;            /* header or claim name, else NULL */
	struct cfg_rate rate;
	uint64_t burst;        /* default: rate.count */
	uint32_t v6_prefix;    /* ip: IPv6 bits that form one bucket (default 64) */
	unsigned line;
};

/* routes[].mode: how a route's connections are carried (docs/splice.md). */
enum cfg_route_mode {
	CFG_MODE_HTTP = 0, /* "http": every request through the L7 proxy (default) */
	CFG_MODE_SPLICE,   /* "splice": first request through L7, then the kernel relays the connection */
	CFG_MODE_TCP,      /* "tcp": pure L4 from the first byte on the route's listeners */
};

/* splice.enabled: whether the sockmap program is used (docs/splice.md). */
enum cfg_splice_enabled {
	CFG_SPLICE_AUTO = 0, /* "auto": use it when it loads, else relay in userspace (logged once) */
	CFG_SPLICE_OFF,      /* "off": never; splice/tcp routes are relayed in userspace */
	CFG_SPLICE_REQUIRED, /* "required": clawd refuses to start without it; a connection that cannot be inserted is closed */
};

/* splice: the sockmap relay for routes in splice or tcp mode. */
struct cfg_splice {
	enum cfg_splice_enabled enabled;
	uint64_t budget;       /* bytes in flight per direction inside the kernel, at most */
	uint64_t sndbuf;       /* SO_SNDBUF set on spliced sockets; 0 = kernel default */
	uint64_t idle_ms;      /* a spliced connection with no byte either way for this long is closed; 0 = never */
	uint32_t max_connections; /* spliced connections at once (SOCKHASH size / 2) */
	char *pin_dir;         /* bpffs directory of the pinned maps */
	unsigned line;
};

struct cfg_route {
	char *name;              /* unique; logged; default "route<N>" (1-based) */
	unsigned line;
	uint64_t listener_mask;  /* bit i = listeners[i]; all bits set when unspecified */
	char **hosts;            /* lower-case; "api.example.com" or "*.example.com"; none = any */
	unsigned nhosts;
	char **sni;              /* tcp routes: match.sni, TLS server names like hosts; none = the listener's default */
	unsigned nsni;
	enum route_path_kind path_kind;
	char *path;              /* exact or prefix, or the regex source */
	void *path_re;           /* pcre2_code *, compiled (and JIT-compiled when possible) at load for ROUTE_PATH_REGEX */
	char **methods;          /* upper-case tokens; none = any */
	unsigned nmethods;
	struct cfg_header_match *headers; /* all must match */
	unsigned nheaders;
	int upstream;            /* index into config.upstreams, or -1 when respond is set */
	bool has_respond;        /* answer directly with respond */
	struct cfg_respond respond;
	char *host_rewrite;      /* Host sent upstream; NULL = preserve the client's */
	uint64_t max_body;       /* request body limit in bytes (413); 0 = unlimited */
	struct cfg_timeouts timeouts; /* route values, defaulted from the top-level ones */
	struct cfg_tracing tracing;   /* route values, defaulted from the top-level ones */
	struct cfg_auth auth;         /* who may call it; type CFG_AUTH_NONE when unset */
	struct cfg_rate_limit *rate_limits; /* limits: all must pass (429) */
	unsigned nrate_limits;
	bool rate_limit_headers;      /* RateLimit-* on successful responses too */
	enum cfg_route_mode mode;     /* http, splice or tcp (docs/splice.md) */
	bool listeners_set;           /* listeners: was given (tcp routes must name theirs) */
	bool retry_non_idempotent;    /* POST, PATCH, ... may be retried too (docs/retries.md) */
};

struct cfg_limits {
	uint32_t request_line; /* bytes of the request line (414) */
	uint32_t header_size;  /* bytes of the whole head (431) */
	uint32_t header_count; /* header fields (431); at most HTTP1_MAX_HEADERS */
};

/* guard.mode: how XDP attaches (see docs/guard.md). */
enum cfg_guard_mode {
	CFG_GUARD_AUTO,    /* "auto": native, falling back to generic with a warning */
	CFG_GUARD_NATIVE,  /* "native": driver mode (XDP_FLAGS_DRV_MODE) or fail */
	CFG_GUARD_GENERIC, /* "generic": skb mode (XDP_FLAGS_SKB_MODE) */
};

/* One protected port or an inclusive range of them. */
struct cfg_port_range {
	uint16_t lo; /* first port, 1..65535 */
	uint16_t hi; /* last port, >= lo */
};

/* guard.autoban: L7 rejections that turn into a timed XDP block. */
struct cfg_guard_autoban {
	uint16_t *statuses;  /* HTTP statuses that count as a rejection */
	unsigned nstatuses;  /* 0 = auto-ban off */
	uint32_t threshold;  /* rejections of one source within window that trigger a ban */
	uint64_t window_ms;  /* sliding window, milliseconds */
	uint64_t ttl_ms;     /* ban length, milliseconds */
};

/* guard: the XDP packet guard; off when ninterfaces is 0. */
struct cfg_guard {
	char **interfaces;           /* interface names, unique */
	unsigned ninterfaces;
	enum cfg_guard_mode mode;
	struct cfg_port_range *ports; /* protected TCP and UDP ports */
	unsigned nports;
	uint64_t syn_rate;           /* new TCP connections per second per source; 0 = no limit */
	uint64_t syn_burst;          /* SYN bucket depth (default: syn_rate) */
	uint64_t pkt_rate;           /* judged packets per second per source; 0 = no limit */
	uint64_t pkt_burst;          /* packet bucket depth (default: pkt_rate) */
	uint32_t v6_prefix;          /* IPv6 source bucketing, bits 1..128 */
	bool unparsed_drop;          /* unparsed: drop (true) or pass */
	struct net_cidr *allow;      /* static allowlist */
	unsigned nallow;
	struct net_cidr *deny;       /* static blocklist */
	unsigned ndeny;
	struct cfg_guard_autoban autoban;
	char *pin_dir;               /* bpffs directory of the pinned maps and links */
	unsigned line;               /* line of the guard: key, for messages */
};

#define CFG_DEFAULT_STATE_DIR "/var/lib/openclaw"

/* ---- observability (docs/metrics.md, docs/logging.md) ---- */

#define CFG_MAX_BUCKETS 24 /* histogram buckets at most, +Inf excluded */

/* access_log.format */
enum cfg_log_format {
	CFG_LOG_JSON,     /* "json": one JSON object per line (default) */
	CFG_LOG_COMBINED, /* "combined": Apache/nginx combined log format */
	CFG_LOG_TEMPLATE, /* "template": access_log.template with $variables */
};

struct cfg_access_log {
	enum cfg_log_format format;
	char *template;         /* for CFG_LOG_TEMPLATE */
	bool query;             /* log the query string (off: it often carries tokens) */
	bool sensitive_headers; /* allow $http_authorization/$http_cookie... in templates */
};

/* admin: the metrics and health listener; off when absent. */
struct cfg_admin {
	bool enabled;
	struct net_addr addr;        /* default 127.0.0.1:9901 */
	char *token_file;            /* bearer token file (mode 0600 or stricter), or NULL */
	uint64_t request_buckets_us[CFG_MAX_BUCKETS];  /* request_duration_seconds bounds, ascending */
	unsigned nrequest_buckets;
	uint64_t upstream_buckets_us[CFG_MAX_BUCKETS]; /* upstream_response_seconds bounds */
	unsigned nupstream_buckets;
	bool per_key_labels;         /* openclaw_auth_key_results_total by key id (docs/metrics.md) */
	unsigned per_key_labels_max; /* key ids with a label of their own; the rest are "other" */
	unsigned line;
};

struct config {
	char *path;                   /* file it was loaded from */
	unsigned workers;             /* worker threads; 0 = one per CPU */
	struct cfg_listener *listeners;
	unsigned nlisteners;
	struct cfg_upstream *upstreams;
	unsigned nupstreams;
	struct cfg_route *routes;     /* in file order; first match wins */
	unsigned nroutes;
	struct cfg_timeouts timeouts; /* defaults for every route */
	uint64_t drain_ms;            /* graceful stop: time in-flight requests get */
	struct cfg_limits limits;
	struct net_cidr *trusted_proxies; /* peers whose X-Forwarded-* / Forwarded we extend */
	unsigned ntrusted;
	char *access_log;             /* file path, "stdout", or NULL when off */
	char *pid_file;               /* NULL = none */
	char *control_socket;         /* control.socket: Unix socket path, NULL when "off" */
	char *control_group;          /* control.group: group allowed besides root, or NULL */
	char *state_dir;              /* persistent state (guard.json, ...); never NULL after a load */
	struct cfg_guard guard;       /* packet guard */
	struct cfg_tier *tiers;       /* API key tiers (docs/api-keys.md) */
	unsigned ntiers;
	struct cfg_access_log access_log_opts; /* access_log format and what it may contain */
	struct cfg_tracing tracing;   /* request id and trace context defaults */
	struct cfg_admin admin;       /* metrics and health listener */
	struct cfg_splice splice;     /* sockmap relay (docs/splice.md) */
};

/*
 * Loads and validates path. On success returns 0 and *out (free with
 * config_free). On failure returns a negative errno and writes
 * "FILE:LINE: KEY: reason" into err (KEY is the dotted path, e.g.
 * "upstreams[0].servers[1].weight"; "(yaml)" for YAML syntax errors, "(root)"
 * for the document as a whole). Errors about the file itself carry no line:
 * "FILE: not a regular file", "FILE: No such file or directory".
 */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

/* Same, from a string; name stands in for the file name in messages. */
int config_load_string(const char *yaml, size_t len, const char *name, struct config **out,
		       char *err, size_t errlen);

void config_free(struct config *cfg);

/* Looks up by name; -1 when absent. */
int config_upstream_index(const struct config *cfg, const char *name);
int config_listener_index(const struct config *cfg, const char *name);
int config_tier_index(const struct config *cfg, const char *name);

#endif
