/* agent/config.c — loads clawd's YAML file (libyaml) into a validated struct config, or says FILE:LINE: KEY: why not. */
#include "config.h"
#include "control.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "accesslog.h"
#include "http1.h"
#include "jwt.h"
#include "openclaw/guard.h"
#include "openclaw/splice.h"
#include "parse.h"
#include "ratelimit.h"
#include "retry.h"
#include "tls_client.h"

#define CFG_KEY_MAX 256            /* longest dotted key path kept for messages */
#define CFG_MAX_FIELDS 32          /* most keys any one mapping of the schema may have */
#define CFG_NAME_MAX 64            /* listener, upstream and route names */
#define CFG_FILE_MAX (16u << 20)   /* a config larger than this is a mistake */

/* State of one load: where messages go and the document being read. */
struct cfg_ctx {
	const char *name;     /* file name used in messages */
	char *err;            /* caller's message buffer (may be NULL) */
	size_t errlen;
	yaml_document_t *doc;
	struct config *cfg;   /* being filled; config_load_string frees it on error */
};

static unsigned cfg_line(const yaml_node_t *n)
{
	return n ? (unsigned)n->start_mark.line + 1 : 1;
}

/* Writes "FILE:LINE: KEY: reason" and returns -EINVAL, so call sites read `return cfg_fail(...)`. */
__attribute__((format(printf, 4, 5)))
static int cfg_fail(struct cfg_ctx *c, const yaml_node_t *n, const char *key, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	if (!c->err || !c->errlen)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errlen, "%s:%u: %s: %s", c->name, cfg_line(n), key, why);
	return -EINVAL;
}

static int cfg_oom(struct cfg_ctx *c)
{
	if (c->err && c->errlen)
		snprintf(c->err, c->errlen, "%s: out of memory", c->name);
	return -ENOMEM;
}

static yaml_node_t *cfg_node(struct cfg_ctx *c, int id)
{
	return yaml_document_get_node(c->doc, id);
}

/* A path cut short ends in "..." so the message does not name a different key. */
static const char *key_mark_cut(char *buf, int n)
{
	if (n >= CFG_KEY_MAX)
		memcpy(buf + CFG_KEY_MAX - 4, "...", 4);
	return buf;
}

static const char *key_join(char *buf, const char *parent, const char *key)
{
	if (parent[0])
		return key_mark_cut(buf, snprintf(buf, CFG_KEY_MAX, "%s.%s", parent, key));
	return key_mark_cut(buf, snprintf(buf, CFG_KEY_MAX, "%s", key));
}

static const char *key_index(char *buf, const char *parent, unsigned i)
{
	return key_mark_cut(buf, snprintf(buf, CFG_KEY_MAX, "%s[%u]", parent, i));
}

/* ---- scalar and type helpers ------------------------------------------------ */

static const char *scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* YAML 1.1 null: an empty or "~"/"null" plain scalar, as in `pid_file:` with nothing after it. */
static bool is_null(const yaml_node_t *n)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };

	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		if (!strcmp(scalar(n), nulls[i]))
			return true;
	return false;
}

static const char *node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SCALAR_NODE:
		return is_null(n) ? "nothing (null)" : "a scalar";
	default:
		return "nothing";
	}
}

static int want_map(struct cfg_ctx *c, const yaml_node_t *n, const char *key)
{
	if (n->type != YAML_MAPPING_NODE)
		return cfg_fail(c, n, key, "expected a mapping, got %s", node_kind(n));
	return 0;
}

static int want_seq(struct cfg_ctx *c, const yaml_node_t *n, const char *key)
{
	if (n->type != YAML_SEQUENCE_NODE)
		return cfg_fail(c, n, key, "expected a list, got %s", node_kind(n));
	return 0;
}

static unsigned seq_len(const yaml_node_t *n)
{
	return (unsigned)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static yaml_node_t *seq_item(struct cfg_ctx *c, const yaml_node_t *n, unsigned i)
{
	return cfg_node(c, n->data.sequence.items.start[i]);
}

static int get_str(struct cfg_ctx *c, const yaml_node_t *n, const char *key, const char **out)
{
	if (n->type != YAML_SCALAR_NODE || is_null(n))
		return cfg_fail(c, n, key, "expected a string, got %s", node_kind(n));
	if (strlen(scalar(n)) != n->data.scalar.length)
		return cfg_fail(c, n, key, "contains a NUL byte");
	*out = scalar(n);
	return 0;
}

static int get_nonempty(struct cfg_ctx *c, const yaml_node_t *n, const char *key, const char **out)
{
	if (get_str(c, n, key, out))
		return -EINVAL;
	if (!**out)
		return cfg_fail(c, n, key, "must not be empty");
	return 0;
}

static int dup_str(struct cfg_ctx *c, const char *s, char **out)
{
	*out = strdup(s);
	return *out ? 0 : cfg_oom(c);
}

/* Decimal only: "010" would be octal to some YAML readers, so leading zeros are refused. */
static int get_uint(struct cfg_ctx *c, const yaml_node_t *n, const char *key, uint64_t min,
		    uint64_t max, uint64_t *out)
{
	const char *s = NULL;
	uint64_t v = 0;

	if (n->type != YAML_SCALAR_NODE || is_null(n))
		return cfg_fail(c, n, key, "expected an integer, got %s", node_kind(n));
	s = scalar(n);
	if (!*s || (s[0] == '0' && s[1]) || strspn(s, "0123456789") != strlen(s))
		return cfg_fail(c, n, key, "expected an integer, got \"%s\"", s);
	for (const char *p = s; *p; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return cfg_fail(c, n, key, "must be between %" PRIu64 " and %" PRIu64 ", got %s",
					min, max, s);
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v < min || v > max)
		return cfg_fail(c, n, key, "must be between %" PRIu64 " and %" PRIu64 ", got %s", min,
				max, s);
	*out = v;
	return 0;
}

static int get_duration(struct cfg_ctx *c, const yaml_node_t *n, const char *key, uint64_t *out)
{
	const char *s = NULL;
	int rc;

	if (n->type != YAML_SCALAR_NODE || is_null(n))
		return cfg_fail(c, n, key, "expected a duration, got %s", node_kind(n));
	s = scalar(n);
	rc = parse_duration_ms(s, out);
	if (rc == -ERANGE)
		return cfg_fail(c, n, key, "duration \"%s\" is too large", s);
	if (rc)
		return cfg_fail(c, n, key,
				"expected a duration such as 250ms, 10s, 5m, 1h or 1d (a bare number only for 0), got \"%s\"",
				s);
	return 0;
}

/* Shows a byte count the way an operator would write it: 65536 → "64k". */
static const char *fmt_size(uint64_t v, char *buf, size_t len)
{
	if (v && !(v % (1ULL << 30)))
		snprintf(buf, len, "%" PRIu64 "g", v >> 30);
	else if (v && !(v % (1ULL << 20)))
		snprintf(buf, len, "%" PRIu64 "m", v >> 20);
	else if (v && !(v % (1ULL << 10)))
		snprintf(buf, len, "%" PRIu64 "k", v >> 10);
	else
		snprintf(buf, len, "%" PRIu64, v);
	return buf;
}

static int get_size(struct cfg_ctx *c, const yaml_node_t *n, const char *key, uint64_t min,
		    uint64_t max, uint64_t *out)
{
	char a[32], b[32];
	const char *s = NULL;
	int rc;

	if (n->type != YAML_SCALAR_NODE || is_null(n))
		return cfg_fail(c, n, key, "expected a size, got %s", node_kind(n));
	s = scalar(n);
	rc = parse_size(s, out);
	if (rc == -ERANGE)
		return cfg_fail(c, n, key, "size \"%s\" is too large", s);
	if (rc)
		return cfg_fail(c, n, key, "expected a size such as 512, 16k, 1m or 2g, got \"%s\"", s);
	if (*out < min || *out > max)
		return cfg_fail(c, n, key, "must be between %s and %s, got %s",
				fmt_size(min, a, sizeof(a)), fmt_size(max, b, sizeof(b)), s);
	return 0;
}

static int get_addr(struct cfg_ctx *c, const yaml_node_t *n, const char *key, struct net_addr *out)
{
	const char *s = NULL, *why = "invalid address";

	if (get_nonempty(c, n, key, &s))
		return -EINVAL;
	if (net_addr_parse(s, 0, out, &why))
		return cfg_fail(c, n, key, "bad address \"%s\": %s", s, why);
	return 0;
}

/* ---- mappings: unknown and duplicate keys ----------------------------------- */

/*
 * Checks that map is a mapping whose keys all come from keys[] (each at most
 * once) and stores each value node in vals[] (NULL when absent) and, when
 * knodes is not NULL, each key node there: messages about a key's presence
 * point at the key's line, which for a block value is not the value's line.
 */
static int cfg_fields(struct cfg_ctx *c, const yaml_node_t *map, const char *path,
		      const char *const *keys, size_t nkeys, yaml_node_t **vals,
		      yaml_node_t **knodes)
{
	yaml_node_t *first[CFG_MAX_FIELDS] = { 0 };
	char kp[CFG_KEY_MAX];

	/* A schema table outgrowing first[] is a programming error: refuse, never overflow. */
	if (nkeys > CFG_MAX_FIELDS)
		return cfg_fail(c, map, path[0] ? path : "(root)",
				"internal: %zu keys exceed CFG_MAX_FIELDS", nkeys);
	if (want_map(c, map, path[0] ? path : "(root)"))
		return -EINVAL;
	for (size_t i = 0; i < nkeys; i++)
		vals[i] = NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *k = cfg_node(c, p->key), *v = cfg_node(c, p->value);
		size_t i;

		if (k->type != YAML_SCALAR_NODE || strlen(scalar(k)) != k->data.scalar.length)
			return cfg_fail(c, k, path[0] ? path : "(root)", "keys must be plain strings");
		for (i = 0; i < nkeys; i++)
			if (!strcmp(scalar(k), keys[i]))
				break;
		key_join(kp, path, scalar(k));
		if (i == nkeys) {
			char list[256];
			size_t off = 0;

			list[0] = '\0';
			for (size_t j = 0; j < nkeys && off < sizeof(list); j++)
				off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
							j ? ", " : "", keys[j]);
			return cfg_fail(c, k, kp, "unknown key (expected one of: %s)", list);
		}
		if (first[i])
			return cfg_fail(c, k, kp, "duplicate key, first at line %u", cfg_line(first[i]));
		first[i] = k;
		vals[i] = v;
	}
	if (knodes)
		for (size_t i = 0; i < nkeys; i++)
			knodes[i] = first[i];
	return 0;
}

/* ---- name and token syntax ---------------------------------------------------- */

static int check_name(struct cfg_ctx *c, const yaml_node_t *n, const char *key, const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > CFG_NAME_MAX)
		return cfg_fail(c, n, key, "names are 1 to %d characters", CFG_NAME_MAX);
	if (strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != len)
		return cfg_fail(c, n, key, "\"%s\": names may only use letters, digits, '_', '.' and '-'",
				s);
	return 0;
}

/* RFC 9110 token: method names and header field names. */
static bool is_token(const char *s)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~0123456789"
				    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	size_t len = strlen(s);

	return len && strspn(s, tchar) == len;
}

/* A value that goes into a header line must not be able to end it. */
static bool is_field_value(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 && *s != '\t')
			return false;
		else if (*s == 0x7f)
			return false;
	return true;
}

/* Host patterns: "api.example.com" or "*.example.com"; labels of [a-z0-9_-]. Lower-cases in place. */
static bool host_pattern_ok(char *s)
{
	char *p = s;
	size_t label = 0;

	for (char *q = s; *q; q++)
		if (*q >= 'A' && *q <= 'Z')
			*q = (char)(*q - 'A' + 'a');
	if (strlen(s) > 253)
		return false;
	if (p[0] == '*' && p[1] == '.')
		p += 2;
	if (!*p)
		return false;
	for (; *p; p++) {
		if (*p == '.') {
			if (!label)
				return false;
			label = 0;
		} else if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
			   *p == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0;
}

/* ---- timeouts ------------------------------------------------------------------- */

static const struct {
	const char *key;
	size_t off;
	bool zero_ok; /* 0 means "no limit" */
} timeout_fields[] = {
	{ "connect", offsetof(struct cfg_timeouts, connect_ms), false },
	{ "client_header", offsetof(struct cfg_timeouts, client_header_ms), false },
	{ "client_body", offsetof(struct cfg_timeouts, client_body_ms), false },
	{ "idle", offsetof(struct cfg_timeouts, idle_ms), false },
	{ "upstream_response", offsetof(struct cfg_timeouts, upstream_response_ms), false },
	{ "upstream_idle", offsetof(struct cfg_timeouts, upstream_idle_ms), false },
	{ "request", offsetof(struct cfg_timeouts, request_ms), true },
};
#define NTIMEOUTS (sizeof(timeout_fields) / sizeof(timeout_fields[0]))

static const struct cfg_timeouts default_timeouts = {
	.connect_ms = 5000,
	.client_header_ms = 10000,
	.client_body_ms = 60000,
	.idle_ms = 60000,
	.upstream_response_ms = 60000,
	.upstream_idle_ms = 60000,
	.request_ms = 0,
};

/* Overrides the members of *t named in the mapping n; the rest keep their values. */
static int parse_timeouts(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			  struct cfg_timeouts *t)
{
	const char *keys[NTIMEOUTS];
	yaml_node_t *v[NTIMEOUTS];
	char kp[CFG_KEY_MAX];

	for (size_t i = 0; i < NTIMEOUTS; i++)
		keys[i] = timeout_fields[i].key;
	if (cfg_fields(c, n, path, keys, NTIMEOUTS, v, NULL))
		return -EINVAL;
	for (size_t i = 0; i < NTIMEOUTS; i++) {
		uint64_t ms;

		if (!v[i])
			continue;
		key_join(kp, path, keys[i]);
		if (get_duration(c, v[i], kp, &ms))
			return -EINVAL;
		if (!ms && !timeout_fields[i].zero_ok)
			return cfg_fail(c, v[i], kp, "must be greater than 0 (only request may be 0)");
		*(uint64_t *)((char *)t + timeout_fields[i].off) = ms;
	}
	return 0;
}

/* ---- top-level scalars and limits ------------------------------------------------ */

static int parse_limits(struct cfg_ctx *c, const yaml_node_t *n)
{
	enum { LIM_REQUEST_LINE, LIM_HEADER_SIZE, LIM_HEADER_COUNT, LIM_N };
	static const char *const keys[LIM_N] = { "request_line", "header_size", "header_count" };
	struct cfg_limits *l = &c->cfg->limits;
	yaml_node_t *v[LIM_N];
	uint64_t x;

	if (cfg_fields(c, n, "limits", keys, LIM_N, v, NULL))
		return -EINVAL;
	if (v[LIM_REQUEST_LINE]) {
		if (get_size(c, v[LIM_REQUEST_LINE], "limits.request_line", 256, 64 << 10, &x))
			return -EINVAL;
		l->request_line = (uint32_t)x;
	}
	if (v[LIM_HEADER_SIZE]) {
		if (get_size(c, v[LIM_HEADER_SIZE], "limits.header_size", 1 << 10, 1 << 20, &x))
			return -EINVAL;
		l->header_size = (uint32_t)x;
	}
	if (l->header_size < l->request_line) {
		const yaml_node_t *at = v[LIM_HEADER_SIZE] ? v[LIM_HEADER_SIZE] : v[LIM_REQUEST_LINE];

		return cfg_fail(c, at, v[LIM_HEADER_SIZE] ? "limits.header_size" : "limits.request_line",
				"header_size (%u) must be at least request_line (%u)", l->header_size,
				l->request_line);
	}
	if (v[LIM_HEADER_COUNT]) {
		if (get_uint(c, v[LIM_HEADER_COUNT], "limits.header_count", 1, HTTP1_MAX_HEADERS, &x))
			return -EINVAL;
		l->header_count = (uint32_t)x;
	}
	return 0;
}

static int parse_workers(struct cfg_ctx *c, const yaml_node_t *n)
{
	uint64_t x;

	if (n->type == YAML_SCALAR_NODE && !strcmp(scalar(n), "auto")) {
		c->cfg->workers = 0;
		return 0;
	}
	if (n->type == YAML_SCALAR_NODE && strspn(scalar(n), "0123456789") != strlen(scalar(n)))
		return cfg_fail(c, n, "workers", "expected \"auto\" or an integer, got \"%s\"", scalar(n));
	if (get_uint(c, n, "workers", 1, 256, &x))
		return -EINVAL;
	c->cfg->workers = (unsigned)x;
	return 0;
}

static int parse_pid_file(struct cfg_ctx *c, const yaml_node_t *n)
{
	const char *s = NULL;

	if (get_nonempty(c, n, "pid_file", &s))
		return -EINVAL;
	if (s[0] != '/')
		return cfg_fail(c, n, "pid_file", "expected an absolute path, got \"%s\"", s);
	return dup_str(c, s, &c->cfg->pid_file);
}

static int parse_control(struct cfg_ctx *c, const yaml_node_t *n)
{
	enum { C_SOCKET, C_GROUP, C_N };
	static const char *const keys[C_N] = { "socket", "group" };
	yaml_node_t *v[C_N];
	const char *s = NULL;

	if (cfg_fields(c, n, "control", keys, C_N, v, NULL))
		return -EINVAL;
	if (v[C_SOCKET]) {
		if (get_nonempty(c, v[C_SOCKET], "control.socket", &s))
			return -EINVAL;
		free(c->cfg->control_socket);
		c->cfg->control_socket = NULL;
		if (!strcmp(s, "off"))
			goto group;
		if (s[0] != '/')
			return cfg_fail(c, v[C_SOCKET], "control.socket",
					"expected an absolute path or \"off\", got \"%s\"", s);
		/* sun_path holds 108 bytes with the NUL. */
		if (strlen(s) > 107)
			return cfg_fail(c, v[C_SOCKET], "control.socket",
					"path longer than 107 bytes (a Unix socket limit)");
		if (dup_str(c, s, &c->cfg->control_socket))
			return -EINVAL;
	}
group:
	if (v[C_GROUP]) {
		if (get_nonempty(c, v[C_GROUP], "control.group", &s))
			return -EINVAL;
		if (strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
		    strlen(s))
			return cfg_fail(c, v[C_GROUP], "control.group", "not a group name: \"%s\"", s);
		if (dup_str(c, s, &c->cfg->control_group))
			return -EINVAL;
	}
	return 0;
}

static int parse_trusted(struct cfg_ctx *c, const yaml_node_t *n)
{
	char kp[CFG_KEY_MAX];
	unsigned cnt;

	if (want_seq(c, n, "trusted_proxies"))
		return -EINVAL;
	cnt = seq_len(n);
	if (!cnt)
		return 0;
	c->cfg->trusted_proxies = calloc(cnt, sizeof(*c->cfg->trusted_proxies));
	if (!c->cfg->trusted_proxies)
		return cfg_oom(c);
	for (unsigned i = 0; i < cnt; i++) {
		yaml_node_t *it = seq_item(c, n, i);
		const char *s = NULL, *why = "invalid";

		key_index(kp, "trusted_proxies", i);
		if (get_nonempty(c, it, kp, &s))
			return -EINVAL;
		if (net_cidr_parse(s, &c->cfg->trusted_proxies[i], &why))
			return cfg_fail(c, it, kp, "bad address or CIDR \"%s\": %s", s, why);
		c->cfg->ntrusted = i + 1;
	}
	return 0;
}

/* ---- listeners ------------------------------------------------------------------- */

/* ---- listeners[].tls (docs/tls.md) ------------------------------------------------ */

static int get_bool(struct cfg_ctx *c, const yaml_node_t *n, const char *key, bool *out);

/* "FILE:LINE: KEY" of a node, kept for messages the TLS module writes when it loads the files. */
static int tls_where(struct cfg_ctx *c, const yaml_node_t *n, const char *key, char **out)
{
	char buf[CFG_KEY_MAX + 256];

	snprintf(buf, sizeof(buf), "%s:%u: %s", c->name, cfg_line(n), key);
	return dup_str(c, buf, out);
}

static int parse_tls_cert(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			  struct cfg_tls_cert *tc)
{
	enum { TC_CERT, TC_KEY, TC_OCSP, TC_N };
	static const char *const keys[TC_N] = { "cert", "key", "ocsp_staple" };
	char kp[CFG_KEY_MAX];
	yaml_node_t *v[TC_N];
	const char *s = NULL;

	if (cfg_fields(c, n, path, keys, TC_N, v, NULL))
		return -EINVAL;
	if (tls_where(c, n, path, &tc->where))
		return -ENOMEM;
	for (unsigned i = 0; i < TC_N; i++) {
		char **dst = i == TC_CERT ? &tc->cert : i == TC_KEY ? &tc->key : &tc->ocsp_staple;

		if (!v[i]) {
			if (i == TC_OCSP)
				continue;
			return cfg_fail(c, n, key_join(kp, path, keys[i]), "required key missing");
		}
		if (get_nonempty(c, v[i], key_join(kp, path, keys[i]), &s) || dup_str(c, s, dst))
			return -EINVAL;
	}
	return 0;
}

/* tls: {certificates, default, min_version, ciphers, ciphersuites, session_tickets, session_cache, handshake_timeout, ktls, ocsp_staple}. */
static int parse_listener_tls(struct cfg_ctx *c, const yaml_node_t *n, const char *lpath,
			      struct cfg_listener *l)
{
	enum { T_CERTS, T_DEFAULT, T_MIN, T_CIPHERS, T_SUITES, T_TICKETS, T_CACHE, T_HS, T_KTLS,
	       T_OCSP, T_N };
	static const char *const keys[T_N] = { "certificates", "default", "min_version", "ciphers",
					       "ciphersuites", "session_tickets", "session_cache",
					       "handshake_timeout", "ktls", "ocsp_staple" };
	char path[CFG_KEY_MAX], kp[CFG_KEY_MAX], ip[CFG_KEY_MAX];
	yaml_node_t *v[T_N];
	struct cfg_tls *t;
	const char *s = NULL;
	unsigned cnt;
	uint64_t x;

	key_join(path, lpath, "tls");
	if (cfg_fields(c, n, path, keys, T_N, v, NULL))
		return -EINVAL;
	t = l->tls = calloc(1, sizeof(*t));
	if (!t)
		return cfg_oom(c);
	t->min_version = 0x0303;
	t->session_tickets = true;
	t->session_cache = 20000;
	t->handshake_timeout_ms = 10000;
	t->ktls = CFG_KTLS_AUTO;
	if (tls_where(c, n, path, &t->where))
		return -ENOMEM;
	key_join(kp, path, "certificates");
	if (!v[T_CERTS])
		return cfg_fail(c, n, kp, "required key missing: a TLS listener needs a certificate");
	if (want_seq(c, v[T_CERTS], kp))
		return -EINVAL;
	cnt = seq_len(v[T_CERTS]);
	if (!cnt || cnt > 64)
		return cfg_fail(c, v[T_CERTS], kp, "1 to 64 certificates, got %u", cnt);
	t->certs = calloc(cnt, sizeof(*t->certs));
	if (!t->certs)
		return cfg_oom(c);
	t->ncerts = cnt;
	for (unsigned i = 0; i < cnt; i++)
		if (parse_tls_cert(c, seq_item(c, v[T_CERTS], i), key_index(ip, kp, i), &t->certs[i]))
			return -EINVAL;
	if (v[T_DEFAULT]) {
		unsigned i;

		if (get_nonempty(c, v[T_DEFAULT], key_join(kp, path, "default"), &s))
			return -EINVAL;
		for (i = 0; i < cnt && strcmp(t->certs[i].cert, s); i++)
			;
		if (i == cnt)
			return cfg_fail(c, v[T_DEFAULT], kp,
					"\"%s\" is not the cert of any entry of certificates", s);
		t->default_cert = i;
	}
	if (v[T_MIN]) {
		if (get_str(c, v[T_MIN], key_join(kp, path, "min_version"), &s))
			return -EINVAL;
		if (!strcmp(s, "1.2"))
			t->min_version = 0x0303;
		else if (!strcmp(s, "1.3"))
			t->min_version = 0x0304;
		else
			return cfg_fail(c, v[T_MIN], kp,
					"expected \"1.2\" or \"1.3\" (older versions are not offered), got \"%s\"",
					s);
	}
	if (v[T_CIPHERS] && (get_nonempty(c, v[T_CIPHERS], key_join(kp, path, "ciphers"), &s) ||
			     dup_str(c, s, &t->ciphers)))
		return -EINVAL;
	if (v[T_SUITES] &&
	    (get_nonempty(c, v[T_SUITES], key_join(kp, path, "ciphersuites"), &s) ||
	     dup_str(c, s, &t->ciphersuites)))
		return -EINVAL;
	if (v[T_TICKETS] &&
	    get_bool(c, v[T_TICKETS], key_join(kp, path, "session_tickets"), &t->session_tickets))
		return -EINVAL;
	if (v[T_CACHE]) {
		if (get_uint(c, v[T_CACHE], key_join(kp, path, "session_cache"), 0, 10000000, &x))
			return -EINVAL;
		t->session_cache = x;
	}
	if (v[T_HS]) {
		if (get_duration(c, v[T_HS], key_join(kp, path, "handshake_timeout"),
				 &t->handshake_timeout_ms))
			return -EINVAL;
		if (!t->handshake_timeout_ms)
			return cfg_fail(c, v[T_HS], kp, "must be more than 0");
	}
	if (v[T_KTLS]) {
		if (get_str(c, v[T_KTLS], key_join(kp, path, "ktls"), &s))
			return -EINVAL;
		if (!strcmp(s, "auto"))
			t->ktls = CFG_KTLS_AUTO;
		else if (!strcmp(s, "off"))
			t->ktls = CFG_KTLS_OFF;
		else
			return cfg_fail(c, v[T_KTLS], kp, "expected auto or off, got \"%s\"", s);
	}
	if (v[T_OCSP]) {
		struct cfg_tls_cert *d = &t->certs[t->default_cert];

		if (d->ocsp_staple)
			return cfg_fail(c, v[T_OCSP], key_join(kp, path, "ocsp_staple"),
					"the default certificate already has its own ocsp_staple");
		if (get_nonempty(c, v[T_OCSP], key_join(kp, path, "ocsp_staple"), &s) ||
		    dup_str(c, s, &d->ocsp_staple))
			return -EINVAL;
	}
	return 0;
}

static void free_listener_tls(struct cfg_tls *t)
{
	if (!t)
		return;
	for (unsigned i = 0; t->certs && i < t->ncerts; i++) {
		free(t->certs[i].cert);
		free(t->certs[i].key);
		free(t->certs[i].ocsp_staple);
		free(t->certs[i].where);
	}
	free(t->certs);
	free(t->ciphers);
	free(t->ciphersuites);
	free(t->where);
	free(t);
}

static int parse_listener(struct cfg_ctx *c, const yaml_node_t *n, unsigned idx)
{
	enum { LS_NAME, LS_ADDRESS, LS_BACKLOG, LS_TLS, LS_N };
	static const char *const keys[LS_N] = { "name", "address", "backlog", "tls" };
	struct cfg_listener *l = &c->cfg->listeners[idx];
	char path[CFG_KEY_MAX], kp[CFG_KEY_MAX];
	yaml_node_t *v[LS_N];
	const char *s = NULL;
	uint64_t x;

	key_index(path, "listeners", idx);
	if (cfg_fields(c, n, path, keys, LS_N, v, NULL))
		return -EINVAL;
	l->line = cfg_line(n);
	l->backlog = 511;
	if (!v[LS_NAME])
		return cfg_fail(c, n, key_join(kp, path, "name"), "required key missing");
	if (get_str(c, v[LS_NAME], key_join(kp, path, "name"), &s) ||
	    check_name(c, v[LS_NAME], kp, s))
		return -EINVAL;
	for (unsigned j = 0; j < idx; j++)
		if (!strcmp(c->cfg->listeners[j].name, s))
			return cfg_fail(c, v[LS_NAME], kp, "duplicate name, first at line %u",
					c->cfg->listeners[j].line);
	if (dup_str(c, s, &l->name))
		return -ENOMEM;
	if (!v[LS_ADDRESS])
		return cfg_fail(c, n, key_join(kp, path, "address"), "required key missing");
	if (get_addr(c, v[LS_ADDRESS], key_join(kp, path, "address"), &l->addr))
		return -EINVAL;
	/* SO_REUSEPORT would let both bind and split the traffic silently. */
	for (unsigned j = 0; j < idx; j++) {
		const struct cfg_listener *o = &c->cfg->listeners[j];

		if (o->addr.len == l->addr.len && !memcmp(&o->addr.ss, &l->addr.ss, l->addr.len))
			return cfg_fail(c, v[LS_ADDRESS], kp,
					"same address as listener \"%s\" at line %u", o->name, o->line);
	}
	if (v[LS_BACKLOG]) {
		if (get_uint(c, v[LS_BACKLOG], key_join(kp, path, "backlog"), 1, 65535, &x))
			return -EINVAL;
		l->backlog = (uint32_t)x;
	}
	if (v[LS_TLS] && parse_listener_tls(c, v[LS_TLS], path, l))
		return -EINVAL;
	return 0;
}

static int parse_listeners(struct cfg_ctx *c, const yaml_node_t *root, const yaml_node_t *n)
{
	unsigned cnt;

	if (!n)
		return cfg_fail(c, root, "listeners", "required: at least one listener");
	if (want_seq(c, n, "listeners"))
		return -EINVAL;
	cnt = seq_len(n);
	if (!cnt)
		return cfg_fail(c, n, "listeners", "at least one listener is required");
	if (cnt > CFG_MAX_LISTENERS)
		return cfg_fail(c, n, "listeners", "at most %d listeners, got %u", CFG_MAX_LISTENERS, cnt);
	c->cfg->listeners = calloc(cnt, sizeof(*c->cfg->listeners));
	if (!c->cfg->listeners)
		return cfg_oom(c);
	c->cfg->nlisteners = cnt;
	for (unsigned i = 0; i < cnt; i++)
		if (parse_listener(c, seq_item(c, n, i), i))
			return -EINVAL;
	return 0;
}

/* ---- upstreams ------------------------------------------------------------------- */

static const char *const algorithm_names[] = {
	[LB_ROUND_ROBIN] = "round_robin",
	[LB_WEIGHTED_ROUND_ROBIN] = "weighted_round_robin",
	[LB_LEAST_CONN] = "least_conn",
	[LB_IP_HASH] = "ip_hash",
	[LB_CONSISTENT_HASH] = "consistent_hash",
	[LB_PEAK_EWMA] = "peak_ewma",
};
#define NALGORITHMS (sizeof(algorithm_names) / sizeof(algorithm_names[0]))

/* ---- upstream health: active checks, outlier ejection, slow start, breakers (docs/health.md) ---- */

static int get_bool(struct cfg_ctx *c, const yaml_node_t *n, const char *key, bool *out);

/* limits: {max_connections, max_pending, max_requests}, each 0..1000000 (0 = no limit). */
static int parse_breaker(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			 struct cfg_breaker *b)
{
	enum { BR_CONNS, BR_PENDING, BR_REQUESTS, BR_N };
	static const char *const keys[BR_N] = { "max_connections", "max_pending", "max_requests" };
	uint32_t *dst[BR_N] = { &b->max_connections, &b->max_pending, &b->max_requests };
	char kp[CFG_KEY_MAX];
	yaml_node_t *v[BR_N];
	uint64_t x;

	if (cfg_fields(c, n, path, keys, BR_N, v, NULL))
		return -EINVAL;
	for (unsigned i = 0; i < BR_N; i++) {
		if (!v[i])
			continue;
		if (get_uint(c, v[i], key_join(kp, path, keys[i]), 0, 1000000, &x))
			return -EINVAL;
		*dst[i] = (uint32_t)x;
	}
	return 0;
}

/* One expect item: 200, "200-399" or "2xx". */
static int parse_status_range(struct cfg_ctx *c, const yaml_node_t *n, const char *key,
			      struct cfg_status_range *r)
{
	static const char digits[] = "0123456789";
	const char *s = NULL;
	unsigned lo, hi;
	size_t len;

	if (get_nonempty(c, n, key, &s))
		return -EINVAL;
	len = strlen(s);
	if (len == 3 && s[0] >= '1' && s[0] <= '5' && s[1] == 'x' && s[2] == 'x') {
		lo = (unsigned)(s[0] - '0') * 100;
		hi = lo + 99;
	} else if (len == 3 && strspn(s, digits) == 3) {
		lo = hi = (unsigned)atoi(s);
	} else if (len == 7 && strspn(s, digits) == 3 && s[3] == '-' && strspn(s + 4, digits) == 3) {
		lo = (unsigned)atoi(s);
		hi = (unsigned)atoi(s + 4);
	} else {
		return cfg_fail(c, n, key, "expected a status, a range such as 200-399, or 2xx; got \"%s\"",
				s);
	}
	if (lo < 100 || hi > 599 || lo > hi)
		return cfg_fail(c, n, key, "\"%s\": statuses are 100..599 and the range must not be reversed",
				s);
	r->lo = (uint16_t)lo;
	r->hi = (uint16_t)hi;
	return 0;
}

/* jitter: "10%" or 10, at most 50 (a larger spread would let two checks of one server overlap). */
static int get_percent(struct cfg_ctx *c, const yaml_node_t *n, const char *key, uint64_t max,
		       uint32_t *out)
{
	const char *s = n->type == YAML_SCALAR_NODE ? scalar(n) : NULL;
	unsigned v;
	int end = 0;

	if (!s || sscanf(s, "%3u%n", &v, &end) != 1 || (s[end] && strcmp(s + end, "%")) ||
	    !(s[0] >= '0' && s[0] <= '9'))
		return cfg_fail(c, n, key, "expected a percentage such as 10%%, got %s",
				s ? s : node_kind(n));
	if (v > max)
		return cfg_fail(c, n, key, "must be between 0%% and %u%%, got %s", (unsigned)max, s);
	*out = v;
	return 0;
}

static int parse_health(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			struct cfg_health *h)
{
	enum { H_TYPE, H_PATH, H_METHOD, H_HOST, H_EXPECT, H_BODY, H_INTERVAL, H_JITTER, H_TIMEOUT,
	       H_RISE, H_FALL, H_N };
	static const char *const keys[H_N] = { "type",     "path",     "method", "host",
					       "expect",   "body_contains", "interval", "jitter",
					       "timeout",  "rise",     "fall" };
	char kp[CFG_KEY_MAX], ip[CFG_KEY_MAX];
	yaml_node_t *v[H_N], *kn[H_N];
	const char *s = NULL;
	uint64_t x;

	if (cfg_fields(c, n, path, keys, H_N, v, kn))
		return -EINVAL;
	h->type = CFG_HEALTH_HTTP;
	h->interval_ms = 2000;
	h->timeout_ms = 1000;
	h->jitter_pct = 10;
	h->rise = 2;
	h->fall = 3;
	if (v[H_TYPE]) {
		if (get_str(c, v[H_TYPE], key_join(kp, path, "type"), &s))
			return -EINVAL;
		if (!strcmp(s, "http"))
			h->type = CFG_HEALTH_HTTP;
		else if (!strcmp(s, "tcp"))
			h->type = CFG_HEALTH_TCP;
		else
			return cfg_fail(c, v[H_TYPE], kp, "expected http or tcp, got \"%s\"", s);
	}
	if (h->type == CFG_HEALTH_TCP) {
		for (unsigned i = H_PATH; i <= H_BODY; i++)
			if (v[i])
				return cfg_fail(c, kn[i], key_join(kp, path, keys[i]),
						"only valid with type http (type is tcp)");
	}
	if (v[H_PATH]) {
		if (get_nonempty(c, v[H_PATH], key_join(kp, path, "path"), &s))
			return -EINVAL;
		if (s[0] != '/' || !is_field_value(s) || strchr(s, ' '))
			return cfg_fail(c, v[H_PATH], kp, "expected a path starting with '/' without spaces, got \"%s\"",
					s);
	} else {
		s = "/";
	}
	if (h->type == CFG_HEALTH_HTTP && dup_str(c, s, &h->path))
		return -ENOMEM;
	if (v[H_METHOD]) {
		if (get_nonempty(c, v[H_METHOD], key_join(kp, path, "method"), &s))
			return -EINVAL;
		if (!is_token(s))
			return cfg_fail(c, v[H_METHOD], kp, "\"%s\" is not a method token", s);
	} else {
		s = "GET";
	}
	if (h->type == CFG_HEALTH_HTTP && dup_str(c, s, &h->method))
		return -ENOMEM;
	if (v[H_HOST]) {
		if (get_nonempty(c, v[H_HOST], key_join(kp, path, "host"), &s))
			return -EINVAL;
		if (!is_field_value(s) || strchr(s, ' '))
			return cfg_fail(c, v[H_HOST], kp, "\"%s\" is not a valid Host value", s);
		if (dup_str(c, s, &h->host))
			return -ENOMEM;
	}
	if (v[H_BODY]) {
		if (get_nonempty(c, v[H_BODY], key_join(kp, path, "body_contains"), &s))
			return -EINVAL;
		if (strlen(s) > 1024)
			return cfg_fail(c, v[H_BODY], kp, "longer than 1024 bytes");
		if (dup_str(c, s, &h->body_contains))
			return -ENOMEM;
	}
	if (h->type == CFG_HEALTH_HTTP) {
		key_join(kp, path, "expect");
		if (v[H_EXPECT] && v[H_EXPECT]->type == YAML_SEQUENCE_NODE) {
			unsigned cnt = seq_len(v[H_EXPECT]);

			if (!cnt || cnt > 16)
				return cfg_fail(c, v[H_EXPECT], kp, "expected 1 to 16 statuses or ranges");
			h->expect = calloc(cnt, sizeof(*h->expect));
			if (!h->expect)
				return cfg_oom(c);
			h->nexpect = cnt;
			for (unsigned i = 0; i < cnt; i++)
				if (parse_status_range(c, seq_item(c, v[H_EXPECT], i), key_index(ip, kp, i),
						       &h->expect[i]))
					return -EINVAL;
		} else {
			h->expect = calloc(1, sizeof(*h->expect));
			if (!h->expect)
				return cfg_oom(c);
			h->nexpect = 1;
			h->expect[0] = (struct cfg_status_range){ 200, 399 };
			if (v[H_EXPECT] && parse_status_range(c, v[H_EXPECT], kp, &h->expect[0]))
				return -EINVAL;
		}
	}
	if (v[H_INTERVAL]) {
		if (get_duration(c, v[H_INTERVAL], key_join(kp, path, "interval"), &h->interval_ms))
			return -EINVAL;
		if (h->interval_ms < 100 || h->interval_ms > 3600000)
			return cfg_fail(c, v[H_INTERVAL], kp, "must be between 100ms and 1h");
	}
	if (v[H_TIMEOUT]) {
		if (get_duration(c, v[H_TIMEOUT], key_join(kp, path, "timeout"), &h->timeout_ms))
			return -EINVAL;
		if (h->timeout_ms < 10 || h->timeout_ms > 60000)
			return cfg_fail(c, v[H_TIMEOUT], kp, "must be between 10ms and 60s");
	}
	if (h->timeout_ms > h->interval_ms)
		return cfg_fail(c, v[H_TIMEOUT] ? v[H_TIMEOUT] : n, key_join(kp, path, "timeout"),
				"must not be longer than interval (%llums)",
				(unsigned long long)h->interval_ms);
	if (v[H_JITTER] && get_percent(c, v[H_JITTER], key_join(kp, path, "jitter"), 50, &h->jitter_pct))
		return -EINVAL;
	if (v[H_RISE]) {
		if (get_uint(c, v[H_RISE], key_join(kp, path, "rise"), 1, 100, &x))
			return -EINVAL;
		h->rise = (uint32_t)x;
	}
	if (v[H_FALL]) {
		if (get_uint(c, v[H_FALL], key_join(kp, path, "fall"), 1, 100, &x))
			return -EINVAL;
		h->fall = (uint32_t)x;
	}
	return 0;
}

static int parse_outlier(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			 struct cfg_outlier *o)
{
	enum { O_FAILS, O_BASE, O_MAX, O_PCT, O_N };
	static const char *const keys[O_N] = { "consecutive_failures", "base_ejection",
					       "max_ejection", "max_ejected_percent" };
	char kp[CFG_KEY_MAX];
	yaml_node_t *v[O_N];
	uint64_t x;

	if (cfg_fields(c, n, path, keys, O_N, v, NULL))
		return -EINVAL;
	o->consecutive_failures = 5;
	o->base_ejection_ms = 30000;
	o->max_ejection_ms = 300000;
	o->max_ejected_percent = 50;
	if (v[O_FAILS]) {
		if (get_uint(c, v[O_FAILS], key_join(kp, path, "consecutive_failures"), 0, 1000, &x))
			return -EINVAL;
		o->consecutive_failures = (uint32_t)x;
	}
	if (v[O_BASE]) {
		if (get_duration(c, v[O_BASE], key_join(kp, path, "base_ejection"), &o->base_ejection_ms))
			return -EINVAL;
		if (o->base_ejection_ms < 100 || o->base_ejection_ms > 86400000)
			return cfg_fail(c, v[O_BASE], kp, "must be between 100ms and 1d");
	}
	if (v[O_MAX]) {
		if (get_duration(c, v[O_MAX], key_join(kp, path, "max_ejection"), &o->max_ejection_ms))
			return -EINVAL;
		if (o->max_ejection_ms > 86400000)
			return cfg_fail(c, v[O_MAX], kp, "must be at most 1d");
	}
	if (o->max_ejection_ms < o->base_ejection_ms)
		return cfg_fail(c, v[O_MAX] ? v[O_MAX] : n, key_join(kp, path, "max_ejection"),
				"must not be shorter than base_ejection (%llums)",
				(unsigned long long)o->base_ejection_ms);
	if (v[O_PCT] && get_percent(c, v[O_PCT], key_join(kp, path, "max_ejected_percent"), 100,
				    &o->max_ejected_percent))
		return -EINVAL;
	return 0;
}

static bool sni_ok(const char *s);

static int parse_server(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			struct cfg_server *srv)
{
	enum { SV_ADDRESS, SV_WEIGHT, SV_BACKUP, SV_LIMITS, SV_SNI, SV_N };
	static const char *const keys[SV_N] = { "address", "weight", "backup", "limits", "sni" };
	char kp[CFG_KEY_MAX];
	yaml_node_t *v[SV_N];
	uint64_t x;

	srv->line = cfg_line(n);
	srv->weight = 1;
	/* "- 10.0.0.1:80" is shorthand for {address: 10.0.0.1:80, weight: 1}. */
	if (n->type == YAML_SCALAR_NODE)
		return get_addr(c, n, path, &srv->addr);
	if (n->type != YAML_MAPPING_NODE)
		return cfg_fail(c, n, path, "expected an address or a mapping, got %s", node_kind(n));
	if (cfg_fields(c, n, path, keys, SV_N, v, NULL))
		return -EINVAL;
	if (!v[SV_ADDRESS])
		return cfg_fail(c, n, key_join(kp, path, "address"), "required key missing");
	if (get_addr(c, v[SV_ADDRESS], key_join(kp, path, "address"), &srv->addr))
		return -EINVAL;
	if (v[SV_WEIGHT]) {
		if (get_uint(c, v[SV_WEIGHT], key_join(kp, path, "weight"), 1, 1000, &x))
			return -EINVAL;
		srv->weight = (uint32_t)x;
	}
	if (v[SV_BACKUP] && get_bool(c, v[SV_BACKUP], key_join(kp, path, "backup"), &srv->backup))
		return -EINVAL;
	if (v[SV_LIMITS] && parse_breaker(c, v[SV_LIMITS], key_join(kp, path, "limits"), &srv->limits))
		return -EINVAL;
	if (v[SV_SNI]) {
		const char *s;

		/* Whether the pool has tls is checked once the pool's tls is parsed. */
		if (get_nonempty(c, v[SV_SNI], key_join(kp, path, "sni"), &s))
			return -EINVAL;
		if (!sni_ok(s))
			return cfg_fail(c, v[SV_SNI], kp,
					"\"%s\" is not a DNS name (an IP address is never sent as SNI)", s);
		snprintf(srv->sni, sizeof(srv->sni), "%s", s);
	}
	return 0;
}

static int parse_hash_key(struct cfg_ctx *c, const yaml_node_t *n, const char *key,
			  struct cfg_upstream *u)
{
	const char *s, *arg = NULL;

	if (get_nonempty(c, n, key, &s))
		return -EINVAL;
	if (!strcmp(s, "ip")) {
		u->hash_source = LB_HASH_CLIENT_IP;
	} else if (!strcmp(s, "path")) {
		u->hash_source = LB_HASH_PATH;
	} else if (!strncmp(s, "header:", 7)) {
		u->hash_source = LB_HASH_HEADER;
		arg = s + 7;
	} else if (!strncmp(s, "cookie:", 7)) {
		u->hash_source = LB_HASH_COOKIE;
		arg = s + 7;
	} else {
		return cfg_fail(c, n, key, "expected ip, path, header:NAME or cookie:NAME, got \"%s\"", s);
	}
	if (!arg)
		return 0;
	if (!is_token(arg))
		return cfg_fail(c, n, key, "\"%s\": the name after ':' must be a header or cookie name", s);
	return dup_str(c, arg, &u->hash_name);
}

/* ---- upstreams[].tls: re-encryption to the backends (docs/tls.md "Upstream TLS") ---- */

static void free_upstream_tls(struct cfg_upstream_tls *t)
{
	if (!t)
		return;
	tls_client_ctx_free(t->ctx);
	free(t->ca);
	free(t->sni);
	free(t->cert);
	free(t->key);
	free(t->where);
	free(t);
}

/* A DNS name for SNI: letters, digits, '-' and '_' in dot-separated labels; never an IP literal (RFC 6066). */
static bool sni_ok(const char *s)
{
	size_t n = strlen(s), label = 0;
	const char *why = NULL;
	struct net_addr a;

	if (!n || n > 253 || !net_addr_parse(s, 1, &a, &why))
		return false;
	for (const char *p = s; *p; p++) {
		if (*p == '.') {
			if (!label)
				return false;
			label = 0;
			continue;
		}
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-' || *p == '_') || ++label > 63)
			return false;
	}
	return label > 0;
}

/* A file clawd must read at load: a missing or unreadable one is named here, with the key. */
static int readable_file(struct cfg_ctx *c, const yaml_node_t *n, const char *key, const char *s)
{
	if (access(s, R_OK))
		return cfg_fail(c, n, key, "%s: %s", s, strerror(errno));
	return 0;
}

/* tls: {enabled, ca, sni, verify, cert, key, min_version, alpn, session_reuse, ktls}; the client context is built here. */
static int parse_upstream_tls(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			      struct cfg_upstream *u)
{
	enum { UT_ENABLED, UT_CA, UT_SNI, UT_VERIFY, UT_CERT, UT_KEY, UT_MIN, UT_ALPN, UT_REUSE, UT_KTLS, UT_N };
	static const char *const keys[UT_N] = { "enabled", "ca",          "sni",  "verify",
						"cert",    "key",         "min_version", "alpn",
						"session_reuse", "ktls" };
	char kp[CFG_KEY_MAX], why[512];
	yaml_node_t *v[UT_N], *kn[UT_N];
	struct cfg_upstream_tls *t;
	enum tls_client_key bad;
	const char *s = NULL;
	bool on = true;
	int i;

	if (cfg_fields(c, n, path, keys, UT_N, v, kn))
		return -EINVAL;
	if (v[UT_ENABLED] && get_bool(c, v[UT_ENABLED], key_join(kp, path, "enabled"), &on))
		return -EINVAL;
	if (!on)
		return 0; /* kept in the file for later; nothing else is read */
	t = u->tls = calloc(1, sizeof(*t));
	if (!t)
		return cfg_oom(c);
	t->verify = true;
	t->min_version = 0x0303;
	t->alpn = true;
	t->session_reuse = true;
	if (tls_where(c, n, path, &t->where))
		return -ENOMEM;
	if (v[UT_CA] && (get_nonempty(c, v[UT_CA], key_join(kp, path, "ca"), &s) ||
			 readable_file(c, v[UT_CA], kp, s) || dup_str(c, s, &t->ca)))
		return -EINVAL;
	if (v[UT_SNI]) {
		if (get_nonempty(c, v[UT_SNI], key_join(kp, path, "sni"), &s))
			return -EINVAL;
		if (!sni_ok(s))
			return cfg_fail(c, v[UT_SNI], kp,
					"\"%s\" is not a DNS name (an IP address is never sent as SNI; without sni the certificate is checked against the server's address)",
					s);
		if (dup_str(c, s, &t->sni))
			return -ENOMEM;
	}
	if (v[UT_VERIFY]) {
		if (get_str(c, v[UT_VERIFY], key_join(kp, path, "verify"), &s))
			return -EINVAL;
		if (!strcmp(s, "on"))
			t->verify = true;
		else if (!strcmp(s, "off"))
			t->verify = false;
		else
			return cfg_fail(c, v[UT_VERIFY], kp, "expected on or off, got \"%s\"", s);
	}
	if (!v[UT_CERT] != !v[UT_KEY]) {
		i = v[UT_CERT] ? UT_CERT : UT_KEY;
		return cfg_fail(c, kn[i], key_join(kp, path, keys[i]),
				"mutual TLS needs both cert and key (%s is missing)",
				keys[i == UT_CERT ? UT_KEY : UT_CERT]);
	}
	if (v[UT_CERT]) {
		if (get_nonempty(c, v[UT_CERT], key_join(kp, path, "cert"), &s) ||
		    readable_file(c, v[UT_CERT], kp, s) || dup_str(c, s, &t->cert))
			return -EINVAL;
		if (get_nonempty(c, v[UT_KEY], key_join(kp, path, "key"), &s))
			return -EINVAL;
		if (tls_client_key_mode_ok(s, why, sizeof(why)))
			return cfg_fail(c, v[UT_KEY], kp, "%s", why);
		if (readable_file(c, v[UT_KEY], kp, s) || dup_str(c, s, &t->key))
			return -EINVAL;
	}
	if (v[UT_MIN]) {
		if (get_str(c, v[UT_MIN], key_join(kp, path, "min_version"), &s))
			return -EINVAL;
		if (!strcmp(s, "1.2"))
			t->min_version = 0x0303;
		else if (!strcmp(s, "1.3"))
			t->min_version = 0x0304;
		else
			return cfg_fail(c, v[UT_MIN], kp,
					"expected \"1.2\" or \"1.3\" (older versions are not offered), got \"%s\"",
					s);
	}
	if (v[UT_ALPN]) {
		if (get_str(c, v[UT_ALPN], key_join(kp, path, "alpn"), &s))
			return -EINVAL;
		if (!strcmp(s, "http/1.1"))
			t->alpn = true;
		else if (!strcmp(s, "off"))
			t->alpn = false;
		else
			return cfg_fail(c, v[UT_ALPN], kp,
					"expected http/1.1 or off (clawd speaks HTTP/1.1 to backends), got \"%s\"",
					s);
	}
	if (v[UT_REUSE] &&
	    get_bool(c, v[UT_REUSE], key_join(kp, path, "session_reuse"), &t->session_reuse))
		return -EINVAL;
	if (v[UT_KTLS]) {
		if (get_str(c, v[UT_KTLS], key_join(kp, path, "ktls"), &s))
			return -EINVAL;
		if (!strcmp(s, "auto"))
			t->ktls = CFG_KTLS_AUTO;
		else if (!strcmp(s, "off"))
			t->ktls = CFG_KTLS_OFF;
		else
			return cfg_fail(c, v[UT_KTLS], kp, "expected auto or off, got \"%s\"", s);
	}
	if (tls_client_ctx_new(t, u->name, &t->ctx, &bad, why, sizeof(why))) {
		i = bad == TLSC_KEY_CA ? UT_CA : bad == TLSC_KEY_CERT ? UT_CERT : bad == TLSC_KEY_KEY ? UT_KEY : -1;
		if (i < 0)
			return cfg_fail(c, n, path, "%s", why);
		return cfg_fail(c, v[i], key_join(kp, path, keys[i]), "%s", why);
	}
	return 0;
}

/* A ratio written as a decimal between 0 and 1 ("0.2"), at most four decimals, into 1/10000. */
static int get_ratio(struct cfg_ctx *c, const yaml_node_t *n, const char *key, uint32_t *out)
{
	const char *s = NULL, *p;
	uint32_t whole = 0, frac = 0, scale = 10000;

	if (n->type != YAML_SCALAR_NODE || is_null(n))
		return cfg_fail(c, n, key, "expected a ratio such as 0.2, got %s", node_kind(n));
	s = scalar(n);
	if (s[0] == '-')
		return cfg_fail(c, n, key, "must not be negative, got %s", s);
	p = s;
	if (!(*p >= '0' && *p <= '9'))
		return cfg_fail(c, n, key, "expected a ratio between 0 and 1 such as 0.2, got \"%s\"", s);
	for (; *p >= '0' && *p <= '9'; p++)
		whole = whole > 10 ? whole : whole * 10 + (uint32_t)(*p - '0');
	if (*p == '.') {
		p++;
		if (!(*p >= '0' && *p <= '9'))
			return cfg_fail(c, n, key, "expected a ratio between 0 and 1 such as 0.2, got \"%s\"", s);
		for (; *p >= '0' && *p <= '9'; p++) {
			if (scale == 1)
				return cfg_fail(c, n, key, "at most four decimals, got %s", s);
			scale /= 10;
			frac += (uint32_t)(*p - '0') * scale;
		}
	}
	if (*p)
		return cfg_fail(c, n, key, "expected a ratio between 0 and 1 such as 0.2, got \"%s\"", s);
	if (whole > 1 || (whole == 1 && frac))
		return cfg_fail(c, n, key, "must be between 0 and 1, got %s", s);
	*out = whole * 10000 + frac;
	return 0;
}

/* upstreams[].retry (docs/retries.md); n may be NULL: the defaults alone. */
static int parse_upstream_retry(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
				struct cfg_retry *r)
{
	enum { RT_ATTEMPTS, RT_ON, RT_BACKOFF, RT_BUDGET, RT_N };
	static const char *const keys[RT_N] = { "attempts", "on", "backoff", "budget" };
	enum { BO_BASE, BO_MAX, BO_N };
	static const char *const bkeys[BO_N] = { "base", "max" };
	enum { BU_RATIO, BU_MIN, BU_N };
	static const char *const ukeys[BU_N] = { "ratio", "min_per_second" };
	char kp[CFG_KEY_MAX], sp[CFG_KEY_MAX];
	yaml_node_t *v[RT_N], *b[2]; /* backoff or budget fields (BO_N, BU_N) */
	const char *s = NULL;
	uint64_t x;

	r->attempts = 1;
	r->on = RETRY_ON_DEFAULT;
	r->backoff_base_ms = 25;
	r->backoff_max_ms = 250;
	r->budget_ratio_bp = 2000;
	r->budget_min_per_second = 3;
	if (!n)
		return 0;
	if (cfg_fields(c, n, path, keys, RT_N, v, NULL))
		return -EINVAL;
	if (v[RT_ATTEMPTS]) {
		if (get_uint(c, v[RT_ATTEMPTS], key_join(kp, path, "attempts"), 0, 10, &x))
			return -EINVAL;
		r->attempts = (uint32_t)x;
	}
	if (v[RT_ON]) {
		key_join(kp, path, "on");
		if (want_seq(c, v[RT_ON], kp))
			return -EINVAL;
		r->on = 0;
		for (unsigned i = 0; i < seq_len(v[RT_ON]); i++) {
			yaml_node_t *it = seq_item(c, v[RT_ON], i);
			int k;

			if (get_str(c, it, key_index(sp, kp, i), &s))
				return -EINVAL;
			k = retry_reason_parse(s);
			if (k < 0)
				return cfg_fail(c, it, sp,
						"unknown condition \"%s\" (expected connect_failure, reset, timeout, 502, 503 or 504)",
						s);
			r->on |= RETRY_BIT(k);
		}
	}
	if (v[RT_BACKOFF]) {
		char bp[CFG_KEY_MAX];

		key_join(bp, path, "backoff");
		if (cfg_fields(c, v[RT_BACKOFF], bp, bkeys, BO_N, b, NULL))
			return -EINVAL;
		if (b[BO_BASE]) {
			if (get_duration(c, b[BO_BASE], key_join(kp, bp, "base"), &r->backoff_base_ms))
				return -EINVAL;
			if (r->backoff_base_ms > 10000)
				return cfg_fail(c, b[BO_BASE], kp, "must be at most 10s");
		}
		if (b[BO_MAX]) {
			if (get_duration(c, b[BO_MAX], key_join(kp, bp, "max"), &r->backoff_max_ms))
				return -EINVAL;
			if (r->backoff_max_ms > 60000)
				return cfg_fail(c, b[BO_MAX], kp, "must be at most 1m");
		} else if (r->backoff_max_ms < r->backoff_base_ms) {
			r->backoff_max_ms = r->backoff_base_ms * 10 < 60000 ? r->backoff_base_ms * 10 : 60000;
		}
		if (r->backoff_max_ms < r->backoff_base_ms)
			return cfg_fail(c, b[BO_MAX], key_join(kp, bp, "max"),
					"must not be shorter than base (%llums)",
					(unsigned long long)r->backoff_base_ms);
	}
	if (v[RT_BUDGET]) {
		char bp[CFG_KEY_MAX];

		key_join(bp, path, "budget");
		if (cfg_fields(c, v[RT_BUDGET], bp, ukeys, BU_N, b, NULL))
			return -EINVAL;
		if (b[BU_RATIO] && get_ratio(c, b[BU_RATIO], key_join(kp, bp, "ratio"), &r->budget_ratio_bp))
			return -EINVAL;
		if (b[BU_MIN]) {
			if (get_uint(c, b[BU_MIN], key_join(kp, bp, "min_per_second"), 0, 1000000, &x))
				return -EINVAL;
			r->budget_min_per_second = (uint32_t)x;
		}
	}
	return 0;
}

static int parse_upstream(struct cfg_ctx *c, const yaml_node_t *n, unsigned idx)
{
	enum { UP_NAME, UP_ALGORITHM, UP_HASH_KEY, UP_KEEPALIVE, UP_CONNECT_TRIES, UP_SERVERS,
	       UP_HEALTH, UP_OUTLIER, UP_SLOW_START, UP_LIMITS, UP_TLS, UP_RETRY, UP_N };
	static const char *const keys[UP_N] = { "name",      "algorithm",     "hash_key",
						"keepalive", "connect_tries", "servers",
						"health",    "outlier",       "slow_start",
						"limits",    "tls",           "retry" };
	struct cfg_upstream *u = &c->cfg->upstreams[idx];
	char path[CFG_KEY_MAX], kp[CFG_KEY_MAX], sp[CFG_KEY_MAX];
	yaml_node_t *v[UP_N], *kn[UP_N];
	const char *s = NULL;
	uint64_t x;
	unsigned cnt;

	key_index(path, "upstreams", idx);
	if (cfg_fields(c, n, path, keys, UP_N, v, kn))
		return -EINVAL;
	u->line = cfg_line(n);
	u->algorithm = LB_ROUND_ROBIN;
	u->hash_source = LB_HASH_CLIENT_IP;
	u->keepalive = 32;
	if (!v[UP_NAME])
		return cfg_fail(c, n, key_join(kp, path, "name"), "required key missing");
	if (get_str(c, v[UP_NAME], key_join(kp, path, "name"), &s) || check_name(c, v[UP_NAME], kp, s))
		return -EINVAL;
	for (unsigned j = 0; j < idx; j++)
		if (!strcmp(c->cfg->upstreams[j].name, s))
			return cfg_fail(c, v[UP_NAME], kp, "duplicate name, first at line %u",
					c->cfg->upstreams[j].line);
	if (dup_str(c, s, &u->name))
		return -ENOMEM;

	if (v[UP_ALGORITHM]) {
		size_t i;

		if (get_str(c, v[UP_ALGORITHM], key_join(kp, path, "algorithm"), &s))
			return -EINVAL;
		for (i = 0; i < NALGORITHMS; i++)
			if (!strcmp(s, algorithm_names[i]))
				break;
		if (i == NALGORITHMS)
			return cfg_fail(c, v[UP_ALGORITHM], kp,
					"unknown algorithm \"%s\" (expected round_robin, weighted_round_robin, least_conn, ip_hash, consistent_hash or peak_ewma)",
					s);
		u->algorithm = (enum lb_algorithm)i;
	}
	if (v[UP_HASH_KEY]) {
		key_join(kp, path, "hash_key");
		if (u->algorithm != LB_CONSISTENT_HASH)
			return cfg_fail(c, kn[UP_HASH_KEY], kp,
					"hash_key is only valid with algorithm consistent_hash (algorithm is %s)",
					algorithm_names[u->algorithm]);
		if (parse_hash_key(c, v[UP_HASH_KEY], kp, u))
			return -EINVAL;
	}
	if (v[UP_KEEPALIVE]) {
		if (get_uint(c, v[UP_KEEPALIVE], key_join(kp, path, "keepalive"), 0, 4096, &x))
			return -EINVAL;
		u->keepalive = (uint32_t)x;
	}

	key_join(kp, path, "servers");
	if (!v[UP_SERVERS])
		return cfg_fail(c, n, kp, "required: at least one server");
	if (want_seq(c, v[UP_SERVERS], kp))
		return -EINVAL;
	cnt = seq_len(v[UP_SERVERS]);
	if (!cnt)
		return cfg_fail(c, v[UP_SERVERS], kp, "at least one server is required");
	u->servers = calloc(cnt, sizeof(*u->servers));
	if (!u->servers)
		return cfg_oom(c);
	u->nservers = cnt;
	for (unsigned i = 0; i < cnt; i++)
		if (parse_server(c, seq_item(c, v[UP_SERVERS], i), key_index(sp, kp, i), &u->servers[i]))
			return -EINVAL;

	u->connect_tries = cnt < 3 ? cnt : 3;
	if (v[UP_CONNECT_TRIES]) {
		if (get_uint(c, v[UP_CONNECT_TRIES], key_join(kp, path, "connect_tries"), 1, 16, &x))
			return -EINVAL;
		u->connect_tries = (uint32_t)x;
	}
	for (unsigned i = 0; i < cnt; i++)
		u->nbackup += u->servers[i].backup;
	if (u->nbackup == cnt)
		return cfg_fail(c, v[UP_SERVERS], key_join(kp, path, "servers"),
				"every server is a backup: at least one must be a primary");
	if (v[UP_HEALTH] && parse_health(c, v[UP_HEALTH], key_join(kp, path, "health"), &u->health))
		return -EINVAL;
	if (v[UP_OUTLIER] && parse_outlier(c, v[UP_OUTLIER], key_join(kp, path, "outlier"), &u->outlier))
		return -EINVAL;
	if (v[UP_SLOW_START]) {
		if (get_duration(c, v[UP_SLOW_START], key_join(kp, path, "slow_start"), &u->slow_start_ms))
			return -EINVAL;
		if (u->slow_start_ms > 3600000)
			return cfg_fail(c, v[UP_SLOW_START], kp, "must be at most 1h");
	}
	if (v[UP_LIMITS] && parse_breaker(c, v[UP_LIMITS], key_join(kp, path, "limits"), &u->limits))
		return -EINVAL;
	if (v[UP_TLS] && parse_upstream_tls(c, v[UP_TLS], key_join(kp, path, "tls"), u))
		return -EINVAL;
	for (unsigned i = 0; i < cnt && !u->tls; i++) {
		if (!u->servers[i].sni[0])
			continue;
		key_index(sp, key_join(kp, path, "servers"), i);
		if (c->err && c->errlen)
			snprintf(c->err, c->errlen, "%s:%u: %s.sni: only for a pool with tls (plain HTTP sends no server name)",
				 c->name, u->servers[i].line, sp);
		return -EINVAL;
	}
	if (parse_upstream_retry(c, v[UP_RETRY], key_join(kp, path, "retry"), &u->retry))
		return -EINVAL;
	return 0;
}

static int parse_upstreams(struct cfg_ctx *c, const yaml_node_t *n)
{
	unsigned cnt;

	if (want_seq(c, n, "upstreams"))
		return -EINVAL;
	cnt = seq_len(n);
	if (!cnt)
		return 0;
	c->cfg->upstreams = calloc(cnt, sizeof(*c->cfg->upstreams));
	if (!c->cfg->upstreams)
		return cfg_oom(c);
	c->cfg->nupstreams = cnt;
	for (unsigned i = 0; i < cnt; i++)
		if (parse_upstream(c, seq_item(c, n, i), i))
			return -EINVAL;
	return 0;
}

/* ---- routes --------------------------------------------------------------------- */

/* A string or a list of strings, copied; fix() validates and normalises one copy in place. */
static int parse_str_list(struct cfg_ctx *c, const yaml_node_t *n, const char *key, char ***out,
			  unsigned *nout, bool (*fix)(char *), const char *what)
{
	char kp[CFG_KEY_MAX];
	unsigned cnt;
	bool one = n->type == YAML_SCALAR_NODE;

	if (!one && n->type != YAML_SEQUENCE_NODE)
		return cfg_fail(c, n, key, "expected a string or a list, got %s", node_kind(n));
	cnt = one ? 1 : seq_len(n);
	if (!cnt)
		return cfg_fail(c, n, key, "empty list (omit the key to match any)");
	*out = calloc(cnt, sizeof(**out));
	if (!*out)
		return cfg_oom(c);
	*nout = cnt;
	for (unsigned i = 0; i < cnt; i++) {
		const yaml_node_t *it = one ? n : seq_item(c, n, i);
		const char *ikey = one ? key : key_index(kp, key, i);
		const char *s = NULL;

		if (get_nonempty(c, it, ikey, &s))
			return -EINVAL;
		if (dup_str(c, s, &(*out)[i]))
			return -ENOMEM;
		if (!fix((*out)[i]))
			return cfg_fail(c, it, ikey, "\"%s\" is not a valid %s", s, what);
	}
	return 0;
}

static bool method_fix(char *s)
{
	if (!is_token(s))
		return false;
	for (; *s; s++)
		if (*s >= 'a' && *s <= 'z')
			*s = (char)(*s - 'a' + 'A');
	return true;
}

static int parse_header_matches(struct cfg_ctx *c, const yaml_node_t *n, const char *key,
				struct cfg_route *r)
{
	enum { HM_NAME, HM_VALUE, HM_N };
	static const char *const keys[HM_N] = { "name", "value" };
	char path[CFG_KEY_MAX], kp[CFG_KEY_MAX];
	unsigned cnt;

	if (want_seq(c, n, key))
		return -EINVAL;
	cnt = seq_len(n);
	if (!cnt)
		return cfg_fail(c, n, key, "empty list (omit the key to match any)");
	r->headers = calloc(cnt, sizeof(*r->headers));
	if (!r->headers)
		return cfg_oom(c);
	r->nheaders = cnt;
	for (unsigned i = 0; i < cnt; i++) {
		yaml_node_t *it = seq_item(c, n, i), *v[HM_N];
		struct cfg_header_match *h = &r->headers[i];
		const char *s = NULL;

		key_index(path, key, i);
		if (cfg_fields(c, it, path, keys, HM_N, v, NULL))
			return -EINVAL;
		if (!v[HM_NAME])
			return cfg_fail(c, it, key_join(kp, path, "name"), "required key missing");
		if (get_str(c, v[HM_NAME], key_join(kp, path, "name"), &s))
			return -EINVAL;
		if (!is_token(s))
			return cfg_fail(c, v[HM_NAME], kp, "\"%s\" is not a valid header name", s);
		if (dup_str(c, s, &h->name))
			return -ENOMEM;
		if (v[HM_VALUE]) {
			if (get_str(c, v[HM_VALUE], key_join(kp, path, "value"), &s))
				return -EINVAL;
			if (!is_field_value(s))
				return cfg_fail(c, v[HM_VALUE], kp, "control characters are not allowed");
			if (dup_str(c, s, &h->value))
				return -ENOMEM;
		}
	}
	return 0;
}

static int compile_regex(struct cfg_ctx *c, const yaml_node_t *n, const char *key, struct cfg_route *r)
{
	PCRE2_SIZE off;
	int code;
	pcre2_code *re;

	re = pcre2_compile((PCRE2_SPTR)r->path, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
	if (!re) {
		PCRE2_UCHAR msg[256];

		if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
			snprintf((char *)msg, sizeof(msg), "error %d", code);
		return cfg_fail(c, n, key, "bad regex at offset %zu: %s", (size_t)off, (const char *)msg);
	}
	/* JIT is an optimisation: when it is unavailable pcre2_match interprets. */
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	r->path_re = re;
	return 0;
}

static int parse_match(struct cfg_ctx *c, const yaml_node_t *n, const char *path, struct cfg_route *r)
{
	enum { M_HOST, M_PATH, M_PATH_PREFIX, M_PATH_REGEX, M_METHODS, M_HEADERS, M_SNI, M_N };
	static const char *const keys[M_N] = { "host",        "path",    "path_prefix",
					       "path_regex",  "methods", "headers", "sni" };
	static const enum route_path_kind kinds[] = { ROUTE_PATH_EXACT, ROUTE_PATH_PREFIX,
						      ROUTE_PATH_REGEX };
	char kp[CFG_KEY_MAX];
	yaml_node_t *v[M_N], *kn[M_N];
	int first = -1;

	if (cfg_fields(c, n, path, keys, M_N, v, kn))
		return -EINVAL;
	if (v[M_HOST] && parse_str_list(c, v[M_HOST], key_join(kp, path, "host"), &r->hosts,
					&r->nhosts, host_pattern_ok, "host name or *.domain pattern"))
		return -EINVAL;

	for (int k = M_PATH; k <= M_PATH_REGEX; k++) {
		const char *s = NULL;

		if (!v[k])
			continue;
		if (first >= 0) {
			/* Blame whichever of the two comes later in the file. */
			int later = cfg_line(kn[k]) >= cfg_line(kn[first]) ? k : first;
			int earlier = later == k ? first : k;

			return cfg_fail(c, kn[later], key_join(kp, path, keys[later]),
					"only one of path, path_prefix and path_regex may be set (%s at line %u)",
					keys[earlier], cfg_line(kn[earlier]));
		}
		first = k;
		key_join(kp, path, keys[k]);
		if (get_nonempty(c, v[k], kp, &s))
			return -EINVAL;
		if (k != M_PATH_REGEX && s[0] != '/')
			return cfg_fail(c, v[k], kp, "must start with '/', got \"%s\"", s);
		if (dup_str(c, s, &r->path))
			return -ENOMEM;
		r->path_kind = kinds[k - M_PATH];
		if (k == M_PATH_REGEX && compile_regex(c, v[k], kp, r))
			return -EINVAL;
	}
	if (v[M_METHODS] && parse_str_list(c, v[M_METHODS], key_join(kp, path, "methods"), &r->methods,
					   &r->nmethods, method_fix, "method name"))
		return -EINVAL;
	if (v[M_HEADERS] && parse_header_matches(c, v[M_HEADERS], key_join(kp, path, "headers"), r))
		return -EINVAL;
	/* TLS server names peeked from a passthrough ClientHello; tcp routes only (parse_route_mode). */
	if (v[M_SNI] && parse_str_list(c, v[M_SNI], key_join(kp, path, "sni"), &r->sni, &r->nsni,
				       host_pattern_ok, "server name or *.domain pattern"))
		return -EINVAL;
	return 0;
}

static int parse_respond(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			 struct cfg_respond *rs)
{
	enum { RS_STATUS, RS_BODY, RS_CONTENT_TYPE, RS_N };
	static const char *const keys[RS_N] = { "status", "body", "content_type" };
	char kp[CFG_KEY_MAX];
	yaml_node_t *v[RS_N];
	const char *ct = "text/plain; charset=utf-8";
	uint64_t x;

	if (cfg_fields(c, n, path, keys, RS_N, v, NULL))
		return -EINVAL;
	if (!v[RS_STATUS])
		return cfg_fail(c, n, key_join(kp, path, "status"), "required key missing");
	if (get_uint(c, v[RS_STATUS], key_join(kp, path, "status"), 100, 599, &x))
		return -EINVAL;
	rs->status = (uint16_t)x;
	if (v[RS_BODY]) {
		const yaml_node_t *b = v[RS_BODY];

		/* The body is bytes with a length: a quoted "\0" is kept, not refused. */
		if (b->type != YAML_SCALAR_NODE || is_null(b))
			return cfg_fail(c, b, key_join(kp, path, "body"), "expected a string, got %s",
					node_kind(b));
		rs->body_len = b->data.scalar.length;
		rs->body = malloc(rs->body_len + 1);
		if (!rs->body)
			return cfg_oom(c);
		memcpy(rs->body, b->data.scalar.value, rs->body_len);
		rs->body[rs->body_len] = '\0';
	} else {
		if (dup_str(c, "", &rs->body))
			return -ENOMEM;
	}
	if (v[RS_CONTENT_TYPE]) {
		if (get_nonempty(c, v[RS_CONTENT_TYPE], key_join(kp, path, "content_type"), &ct))
			return -EINVAL;
		if (!is_field_value(ct))
			return cfg_fail(c, v[RS_CONTENT_TYPE], kp, "control characters are not allowed");
	}
	return dup_str(c, ct, &rs->content_type);
}

static int parse_route_listeners(struct cfg_ctx *c, const yaml_node_t *n, const char *key,
				 struct cfg_route *r)
{
	char kp[CFG_KEY_MAX];
	unsigned cnt;

	if (want_seq(c, n, key))
		return -EINVAL;
	cnt = seq_len(n);
	if (!cnt)
		return cfg_fail(c, n, key, "empty list (omit the key for every listener)");
	r->listener_mask = 0;
	for (unsigned i = 0; i < cnt; i++) {
		yaml_node_t *it = seq_item(c, n, i);
		const char *s = NULL;
		int li;

		key_index(kp, key, i);
		if (get_str(c, it, kp, &s))
			return -EINVAL;
		li = config_listener_index(c->cfg, s);
		if (li < 0)
			return cfg_fail(c, it, kp, "unknown listener \"%s\"", s);
		r->listener_mask |= 1ULL << li;
	}
	return 0;
}

static bool host_rewrite_ok(const char *s)
{
	size_t len = strlen(s);

	return len && len <= 255 &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:[]") == len;
}

/* Defined with the observability section below. */
static int parse_tracing(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			 struct cfg_tracing *t);
static int tracing_copy(struct cfg_ctx *c, const struct cfg_tracing *t, struct cfg_tracing *out);

static int parse_route_gate(struct cfg_ctx *c, const char *path, const yaml_node_t *auth,
			    const yaml_node_t *limits, const yaml_node_t *headers,
			    struct cfg_route *r);

static int parse_route_mode(struct cfg_ctx *c, const char *path, yaml_node_t **v, yaml_node_t **kn,
			    int i_mode, int i_listeners, int i_match, int i_respond, struct cfg_route *r);

static int parse_route(struct cfg_ctx *c, const yaml_node_t *n, unsigned idx)
{
	enum { R_NAME, R_LISTENERS, R_MATCH, R_UPSTREAM, R_RESPOND, R_HOST_REWRITE, R_MAX_BODY,
	       R_TIMEOUTS, R_TRACING, R_AUTH, R_RATE_LIMITS, R_RL_HEADERS, R_MODE, R_RETRY_NI, R_N };
	static const char *const keys[R_N] = { "name",     "listeners",    "match",
					       "upstream", "respond",      "host_rewrite",
					       "max_body", "timeouts",     "tracing",
					       "auth",     "limits",       "rate_limit_headers",
					       "mode",     "retry_non_idempotent" };
	struct cfg_route *r = &c->cfg->routes[idx];
	char path[CFG_KEY_MAX], kp[CFG_KEY_MAX];
	yaml_node_t *v[R_N], *kn[R_N];
	const char *s = NULL;

	key_index(path, "routes", idx);
	if (cfg_fields(c, n, path, keys, R_N, v, kn))
		return -EINVAL;
	r->line = cfg_line(n);
	r->upstream = -1;
	r->max_body = 1 << 20;
	r->timeouts = c->cfg->timeouts;
	if (tracing_copy(c, &c->cfg->tracing, &r->tracing))
		return -ENOMEM;
	r->listener_mask = c->cfg->nlisteners >= 64 ? ~0ULL : (1ULL << c->cfg->nlisteners) - 1;

	if (v[R_NAME]) {
		if (get_str(c, v[R_NAME], key_join(kp, path, "name"), &s) ||
		    check_name(c, v[R_NAME], kp, s))
			return -EINVAL;
		if (dup_str(c, s, &r->name))
			return -ENOMEM;
	} else {
		char def[32];

		snprintf(def, sizeof(def), "route%u", idx + 1);
		if (dup_str(c, def, &r->name))
			return -ENOMEM;
	}
	/* An explicit "route2" may collide with the default name of an unnamed route. */
	for (unsigned j = 0; j < idx; j++)
		if (!strcmp(c->cfg->routes[j].name, r->name))
			return cfg_fail(c, v[R_NAME] ? v[R_NAME] : n, key_join(kp, path, "name"),
					"duplicate name, first at line %u", c->cfg->routes[j].line);

	if (v[R_LISTENERS] && parse_route_listeners(c, v[R_LISTENERS], key_join(kp, path, "listeners"), r))
		return -EINVAL;
	if (v[R_MATCH] && parse_match(c, v[R_MATCH], key_join(kp, path, "match"), r))
		return -EINVAL;

	if (v[R_UPSTREAM] && v[R_RESPOND]) {
		int later = cfg_line(kn[R_RESPOND]) >= cfg_line(kn[R_UPSTREAM]) ? R_RESPOND : R_UPSTREAM;

		return cfg_fail(c, kn[later], key_join(kp, path, keys[later]),
				"a route has either upstream or respond, not both");
	}
	if (!v[R_UPSTREAM] && !v[R_RESPOND])
		return cfg_fail(c, n, path, "needs either upstream or respond");
	if (v[R_UPSTREAM]) {
		key_join(kp, path, "upstream");
		if (get_str(c, v[R_UPSTREAM], kp, &s))
			return -EINVAL;
		r->upstream = config_upstream_index(c->cfg, s);
		if (r->upstream < 0)
			return cfg_fail(c, v[R_UPSTREAM], kp, "unknown upstream \"%s\"", s);
	} else {
		if (parse_respond(c, v[R_RESPOND], key_join(kp, path, "respond"), &r->respond))
			return -EINVAL;
		r->has_respond = true;
	}

	if (v[R_HOST_REWRITE]) {
		key_join(kp, path, "host_rewrite");
		if (get_nonempty(c, v[R_HOST_REWRITE], kp, &s))
			return -EINVAL;
		if (!host_rewrite_ok(s))
			return cfg_fail(c, v[R_HOST_REWRITE], kp, "\"%s\" is not a valid host[:port]", s);
		if (dup_str(c, s, &r->host_rewrite))
			return -ENOMEM;
	}
	if (v[R_MAX_BODY] &&
	    get_size(c, v[R_MAX_BODY], key_join(kp, path, "max_body"), 0, UINT64_MAX, &r->max_body))
		return -EINVAL;
	if (v[R_TIMEOUTS] && parse_timeouts(c, v[R_TIMEOUTS], key_join(kp, path, "timeouts"), &r->timeouts))
		return -EINVAL;
	if (v[R_TRACING] && parse_tracing(c, v[R_TRACING], key_join(kp, path, "tracing"), &r->tracing))
		return -EINVAL;
	if (parse_route_gate(c, path, v[R_AUTH], v[R_RATE_LIMITS], v[R_RL_HEADERS], r))
		return -EINVAL;
	if (v[R_RETRY_NI] && get_bool(c, v[R_RETRY_NI], key_join(kp, path, "retry_non_idempotent"),
				      &r->retry_non_idempotent))
		return -EINVAL;
	return parse_route_mode(c, path, v, kn, R_MODE, R_LISTENERS, R_MATCH, R_RESPOND, r);
}

static int parse_routes(struct cfg_ctx *c, const yaml_node_t *root, const yaml_node_t *n)
{
	unsigned cnt;

	if (!n)
		return cfg_fail(c, root, "routes", "required: at least one route");
	if (want_seq(c, n, "routes"))
		return -EINVAL;
	cnt = seq_len(n);
	if (!cnt)
		return cfg_fail(c, n, "routes", "at least one route is required");
	c->cfg->routes = calloc(cnt, sizeof(*c->cfg->routes));
	if (!c->cfg->routes)
		return cfg_oom(c);
	c->cfg->nroutes = cnt;
	for (unsigned i = 0; i < cnt; i++)
		if (parse_route(c, seq_item(c, n, i), i))
			return -EINVAL;
	return 0;
}

/* ---- guard -------------------------------------------------------------------------- */

/* "100/s" or "6000/m" into connections or packets per second. */
static int get_rate(struct cfg_ctx *c, const yaml_node_t *n, const char *key, uint64_t *out)
{
	const char *s = NULL, *slash;
	uint64_t v = 0;
	size_t digits;

	if (n->type != YAML_SCALAR_NODE || is_null(n))
		return cfg_fail(c, n, key, "expected a rate such as 100/s or 600/m, got %s", node_kind(n));
	s = scalar(n);
	slash = strchr(s, '/');
	digits = strspn(s, "0123456789");
	if (!slash || digits != (size_t)(slash - s) || !digits || (s[0] == '0') ||
	    (strcmp(slash, "/s") && strcmp(slash, "/m")))
		return cfg_fail(c, n, key, "expected a rate such as 100/s or 600/m, got \"%s\"", s);
	for (const char *p = s; p < slash; p++) {
		if (v > (UINT32_MAX - 9) / 10)
			return cfg_fail(c, n, key, "rate \"%s\" is too large", s);
		v = v * 10 + (uint64_t)(*p - '0');
	}
	/* XDP refills whole tokens per second: a per-minute rate must convert exactly. */
	if (slash[1] == 'm') {
		if (v % 60)
			return cfg_fail(c, n, key,
					"\"%s\": a per-minute rate must be a multiple of 60 (the guard counts per second)",
					s);
		v /= 60;
	}
	*out = v;
	return 0;
}

static bool ifname_ok(const char *s)
{
	size_t len = strlen(s);

	/* IFNAMSIZ is 16 with the NUL; the kernel refuses '/', ':' and white space. */
	if (!len || len > 15 || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (; *s; s++)
		if (*s == '/' || *s == ':' || (unsigned char)*s <= ' ' || *s == 0x7f)
			return false;
	return true;
}

static int parse_guard_interfaces(struct cfg_ctx *c, const yaml_node_t *n, struct cfg_guard *g)
{
	char kp[CFG_KEY_MAX];
	unsigned cnt;

	if (want_seq(c, n, "guard.interfaces"))
		return -EINVAL;
	cnt = seq_len(n);
	if (!cnt)
		return 0;
	g->interfaces = calloc(cnt, sizeof(*g->interfaces));
	if (!g->interfaces)
		return cfg_oom(c);
	for (unsigned i = 0; i < cnt; i++) {
		yaml_node_t *it = seq_item(c, n, i);
		const char *s = NULL;

		key_index(kp, "guard.interfaces", i);
		if (get_nonempty(c, it, kp, &s))
			return -EINVAL;
		if (!ifname_ok(s))
			return cfg_fail(c, it, kp,
					"\"%s\" is not an interface name (1 to 15 characters, no '/', ':' or spaces)",
					s);
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(g->interfaces[j], s))
				return cfg_fail(c, it, kp, "duplicate interface \"%s\"", s);
		if (dup_str(c, s, &g->interfaces[i]))
			return -ENOMEM;
		g->ninterfaces = i + 1;
	}
	return 0;
}

/* One port number (1..65535) from a decimal string; false when it is not one. */
static bool port_value(const char *s, size_t len, uint16_t *out)
{
	uint32_t v = 0;

	if (!len || len > 5 || (s[0] == '0'))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*out = (uint16_t)v;
	return true;
}

static int parse_guard_ports(struct cfg_ctx *c, const yaml_node_t *n, struct cfg_guard *g)
{
	char kp[CFG_KEY_MAX];
	unsigned cnt;

	if (want_seq(c, n, "guard.ports"))
		return -EINVAL;
	cnt = seq_len(n);
	if (!cnt)
		return cfg_fail(c, n, "guard.ports", "empty list: name at least one port to protect");
	g->ports = calloc(cnt, sizeof(*g->ports));
	if (!g->ports)
		return cfg_oom(c);
	for (unsigned i = 0; i < cnt; i++) {
		yaml_node_t *it = seq_item(c, n, i);
		struct cfg_port_range *r = &g->ports[i];
		const char *s = NULL, *dash;

		key_index(kp, "guard.ports", i);
		if (it->type != YAML_SCALAR_NODE || is_null(it))
			return cfg_fail(c, it, kp, "expected a port or a range \"LO-HI\", got %s",
					node_kind(it));
		if (get_nonempty(c, it, kp, &s))
			return -EINVAL;
		dash = strchr(s, '-');
		if (!dash) {
			if (!port_value(s, strlen(s), &r->lo))
				return cfg_fail(c, it, kp, "expected a port 1..65535 or a range \"LO-HI\", got \"%s\"",
						s);
			r->hi = r->lo;
		} else {
			if (!port_value(s, (size_t)(dash - s), &r->lo) ||
			    !port_value(dash + 1, strlen(dash + 1), &r->hi))
				return cfg_fail(c, it, kp, "expected a port 1..65535 or a range \"LO-HI\", got \"%s\"",
						s);
			if (r->lo > r->hi)
				return cfg_fail(c, it, kp, "range \"%s\" ends before it starts", s);
		}
		g->nports = i + 1;
	}
	return 0;
}

static int parse_cidr_list(struct cfg_ctx *c, const yaml_node_t *n, const char *key,
			   struct net_cidr **out, unsigned *nout)
{
	char kp[CFG_KEY_MAX];
	unsigned cnt;

	if (want_seq(c, n, key))
		return -EINVAL;
	cnt = seq_len(n);
	if (!cnt)
		return 0;
	*out = calloc(cnt, sizeof(**out));
	if (!*out)
		return cfg_oom(c);
	for (unsigned i = 0; i < cnt; i++) {
		yaml_node_t *it = seq_item(c, n, i);
		const char *s = NULL, *why = "invalid";

		key_index(kp, key, i);
		if (get_nonempty(c, it, kp, &s))
			return -EINVAL;
		if (net_cidr_parse(s, &(*out)[i], &why))
			return cfg_fail(c, it, kp, "bad address or CIDR \"%s\": %s", s, why);
		for (unsigned j = 0; j < i; j++)
			if (!memcmp(&(*out)[j], &(*out)[i], sizeof(**out)))
				return cfg_fail(c, it, kp, "\"%s\" is listed twice (item %u)", s, j);
		*nout = i + 1;
	}
	return 0;
}

static int parse_autoban(struct cfg_ctx *c, const yaml_node_t *n, struct cfg_guard_autoban *a)
{
	enum { AB_STATUSES, AB_THRESHOLD, AB_WINDOW, AB_TTL, AB_N };
	static const char *const keys[AB_N] = { "statuses", "threshold", "window", "ttl" };
	static const uint16_t def_statuses[] = { 401, 403, 429 };
	yaml_node_t *v[AB_N];
	char kp[CFG_KEY_MAX];
	uint64_t x;

	if (cfg_fields(c, n, "guard.autoban", keys, AB_N, v, NULL))
		return -EINVAL;
	a->threshold = 20;
	a->window_ms = 10000;
	a->ttl_ms = 600000;
	if (v[AB_STATUSES]) {
		const yaml_node_t *l = v[AB_STATUSES];
		unsigned cnt;

		if (want_seq(c, l, "guard.autoban.statuses"))
			return -EINVAL;
		cnt = seq_len(l);
		if (!cnt)
			return cfg_fail(c, l, "guard.autoban.statuses",
					"empty list (omit autoban to turn it off)");
		a->statuses = calloc(cnt, sizeof(*a->statuses));
		if (!a->statuses)
			return cfg_oom(c);
		for (unsigned i = 0; i < cnt; i++) {
			yaml_node_t *it = seq_item(c, l, i);

			key_index(kp, "guard.autoban.statuses", i);
			if (get_uint(c, it, kp, 400, 599, &x))
				return -EINVAL;
			for (unsigned j = 0; j < i; j++)
				if (a->statuses[j] == x)
					return cfg_fail(c, it, kp, "status %" PRIu64 " is listed twice", x);
			a->statuses[i] = (uint16_t)x;
			a->nstatuses = i + 1;
		}
	} else {
		a->statuses = malloc(sizeof(def_statuses));
		if (!a->statuses)
			return cfg_oom(c);
		memcpy(a->statuses, def_statuses, sizeof(def_statuses));
		a->nstatuses = sizeof(def_statuses) / sizeof(def_statuses[0]);
	}
	if (v[AB_THRESHOLD]) {
		if (get_uint(c, v[AB_THRESHOLD], "guard.autoban.threshold", 1, 1000, &x))
			return -EINVAL;
		a->threshold = (uint32_t)x;
	}
	if (v[AB_WINDOW]) {
		if (get_duration(c, v[AB_WINDOW], "guard.autoban.window", &a->window_ms))
			return -EINVAL;
		if (a->window_ms < 1000 || a->window_ms > 86400000ULL)
			return cfg_fail(c, v[AB_WINDOW], "guard.autoban.window", "must be between 1s and 1d");
	}
	if (v[AB_TTL]) {
		if (get_duration(c, v[AB_TTL], "guard.autoban.ttl", &a->ttl_ms))
			return -EINVAL;
		if (a->ttl_ms < 1000 || a->ttl_ms > 365 * 86400000ULL)
			return cfg_fail(c, v[AB_TTL], "guard.autoban.ttl", "must be between 1s and 365d");
	}
	return 0;
}

static int parse_guard(struct cfg_ctx *c, const yaml_node_t *kn, const yaml_node_t *n)
{
	enum { G_INTERFACES, G_MODE, G_PORTS, G_SYN_RATE, G_SYN_BURST, G_PKT_RATE, G_PKT_BURST,
	       G_V6_PREFIX, G_UNPARSED, G_ALLOW, G_DENY, G_AUTOBAN, G_PIN_DIR, G_N };
	static const char *const keys[G_N] = {
		"interfaces",   "mode",        "ports",    "syn_rate", "syn_burst",
		"packet_rate",  "packet_burst", "ipv6_prefix", "unparsed", "allow",
		"deny",         "autoban",     "pin_dir",
	};
	struct cfg_guard *g = &c->cfg->guard;
	yaml_node_t *v[G_N], *k[G_N];
	const char *s = NULL;
	uint64_t x;

	g->line = cfg_line(kn);
	/* `guard:` with nothing under it is the same as no section: the guard is off. */
	if (is_null(n))
		return dup_str(c, GUARD_PIN_DIR, &g->pin_dir);
	if (cfg_fields(c, n, "guard", keys, G_N, v, k))
		return -EINVAL;
	if (v[G_INTERFACES] && parse_guard_interfaces(c, v[G_INTERFACES], g))
		return -EINVAL;
	if (v[G_MODE]) {
		if (get_nonempty(c, v[G_MODE], "guard.mode", &s))
			return -EINVAL;
		if (!strcmp(s, "auto"))
			g->mode = CFG_GUARD_AUTO;
		else if (!strcmp(s, "native"))
			g->mode = CFG_GUARD_NATIVE;
		else if (!strcmp(s, "generic"))
			g->mode = CFG_GUARD_GENERIC;
		else
			return cfg_fail(c, v[G_MODE], "guard.mode",
					"expected native, generic or auto, got \"%s\"", s);
	}
	if (v[G_PORTS] && parse_guard_ports(c, v[G_PORTS], g))
		return -EINVAL;
	if (g->ninterfaces && !v[G_PORTS])
		return cfg_fail(c, kn, "guard.ports",
				"required when guard.interfaces is set (the guard judges only these ports)");
	if (v[G_SYN_RATE] && get_rate(c, v[G_SYN_RATE], "guard.syn_rate", &g->syn_rate))
		return -EINVAL;
	if (v[G_PKT_RATE] && get_rate(c, v[G_PKT_RATE], "guard.packet_rate", &g->pkt_rate))
		return -EINVAL;
	if (v[G_SYN_BURST]) {
		if (!v[G_SYN_RATE])
			return cfg_fail(c, k[G_SYN_BURST], "guard.syn_burst", "needs guard.syn_rate");
		if (get_uint(c, v[G_SYN_BURST], "guard.syn_burst", 1, UINT32_MAX, &g->syn_burst))
			return -EINVAL;
	} else {
		g->syn_burst = g->syn_rate;
	}
	if (v[G_PKT_BURST]) {
		if (!v[G_PKT_RATE])
			return cfg_fail(c, k[G_PKT_BURST], "guard.packet_burst", "needs guard.packet_rate");
		if (get_uint(c, v[G_PKT_BURST], "guard.packet_burst", 1, UINT32_MAX, &g->pkt_burst))
			return -EINVAL;
	} else {
		g->pkt_burst = g->pkt_rate;
	}
	g->v6_prefix = GUARD_DEFAULT_V6_PREFIX;
	if (v[G_V6_PREFIX]) {
		if (get_uint(c, v[G_V6_PREFIX], "guard.ipv6_prefix", 1, 128, &x))
			return -EINVAL;
		g->v6_prefix = (uint32_t)x;
	}
	if (v[G_UNPARSED]) {
		if (get_nonempty(c, v[G_UNPARSED], "guard.unparsed", &s))
			return -EINVAL;
		if (!strcmp(s, "drop"))
			g->unparsed_drop = true;
		else if (strcmp(s, "pass"))
			return cfg_fail(c, v[G_UNPARSED], "guard.unparsed",
					"expected pass or drop, got \"%s\"", s);
	}
	if (v[G_ALLOW] && parse_cidr_list(c, v[G_ALLOW], "guard.allow", &g->allow, &g->nallow))
		return -EINVAL;
	if (v[G_DENY] && parse_cidr_list(c, v[G_DENY], "guard.deny", &g->deny, &g->ndeny))
		return -EINVAL;
	if (v[G_AUTOBAN] && !is_null(v[G_AUTOBAN]) && parse_autoban(c, v[G_AUTOBAN], &g->autoban))
		return -EINVAL;
	if (v[G_PIN_DIR]) {
		if (get_nonempty(c, v[G_PIN_DIR], "guard.pin_dir", &s))
			return -EINVAL;
		if (s[0] != '/')
			return cfg_fail(c, v[G_PIN_DIR], "guard.pin_dir",
					"expected an absolute path on a bpf file system, got \"%s\"", s);
		/* Pinned link names add "/guard_link_" + an interface name. */
		if (strlen(s) > 200)
			return cfg_fail(c, v[G_PIN_DIR], "guard.pin_dir", "path longer than 200 bytes");
		return dup_str(c, s, &g->pin_dir);
	}
	return dup_str(c, GUARD_PIN_DIR, &g->pin_dir);
}

static int parse_state_dir(struct cfg_ctx *c, const yaml_node_t *n)
{
	const char *s = NULL;

	if (get_nonempty(c, n, "state_dir", &s))
		return -EINVAL;
	if (s[0] != '/')
		return cfg_fail(c, n, "state_dir", "expected an absolute path, got \"%s\"", s);
	if (strlen(s) > 200)
		return cfg_fail(c, n, "state_dir", "path longer than 200 bytes");
	free(c->cfg->state_dir);
	c->cfg->state_dir = NULL;
	return dup_str(c, s, &c->cfg->state_dir);
}

/* ---- observability: access_log options, tracing, admin (docs/metrics.md, docs/logging.md) ---- */

static int get_bool(struct cfg_ctx *c, const yaml_node_t *n, const char *key, bool *out)
{
	const char *s = n->type == YAML_SCALAR_NODE ? scalar(n) : NULL;

	if (s && !strcmp(s, "true"))
		*out = true;
	else if (s && !strcmp(s, "false"))
		*out = false;
	else
		return cfg_fail(c, n, key, "expected true or false, got %s",
				s ? s : node_kind(n));
	return 0;
}

/* access_log: a scalar (path, "stdout", "off") or {path, format, template, query, sensitive_headers}. */
static int parse_access_log_path(struct cfg_ctx *c, const yaml_node_t *n, const char *key)
{
	const char *s = NULL;

	if (get_nonempty(c, n, key, &s))
		return -EINVAL;
	free(c->cfg->access_log);
	c->cfg->access_log = NULL;
	if (!strcmp(s, "off"))
		return 0;
	if (strcmp(s, "stdout") && s[0] != '/')
		return cfg_fail(c, n, key, "expected an absolute path, \"stdout\" or \"off\", got \"%s\"",
				s);
	return dup_str(c, s, &c->cfg->access_log);
}

static int parse_access_log_map(struct cfg_ctx *c, const yaml_node_t *n)
{
	enum { A_PATH, A_FORMAT, A_TEMPLATE, A_QUERY, A_SENSITIVE, A_N };
	static const char *const keys[A_N] = { "path", "format", "template", "query",
					       "sensitive_headers" };
	struct cfg_access_log *o = &c->cfg->access_log_opts;
	yaml_node_t *v[A_N], *kn[A_N];
	const char *s = NULL;
	char why[160];

	if (cfg_fields(c, n, "access_log", keys, A_N, v, kn))
		return -EINVAL;
	if (!v[A_PATH])
		return cfg_fail(c, n, "access_log.path", "required");
	if (parse_access_log_path(c, v[A_PATH], "access_log.path"))
		return -EINVAL;
	if (v[A_QUERY] && get_bool(c, v[A_QUERY], "access_log.query", &o->query))
		return -EINVAL;
	if (v[A_SENSITIVE] &&
	    get_bool(c, v[A_SENSITIVE], "access_log.sensitive_headers", &o->sensitive_headers))
		return -EINVAL;
	if (v[A_FORMAT]) {
		if (get_nonempty(c, v[A_FORMAT], "access_log.format", &s))
			return -EINVAL;
		if (!strcmp(s, "json"))
			o->format = CFG_LOG_JSON;
		else if (!strcmp(s, "combined"))
			o->format = CFG_LOG_COMBINED;
		else if (!strcmp(s, "template"))
			o->format = CFG_LOG_TEMPLATE;
		else
			return cfg_fail(c, v[A_FORMAT], "access_log.format",
					"expected json, combined or template, got \"%s\"", s);
	}
	if (o->format == CFG_LOG_TEMPLATE && !v[A_TEMPLATE])
		return cfg_fail(c, kn[A_FORMAT], "access_log.template", "required with format: template");
	if (v[A_TEMPLATE]) {
		if (o->format != CFG_LOG_TEMPLATE)
			return cfg_fail(c, kn[A_TEMPLATE], "access_log.template",
					"only used with format: template");
		if (get_nonempty(c, v[A_TEMPLATE], "access_log.template", &s))
			return -EINVAL;
		if (alog_template_check(s, o->sensitive_headers, why, sizeof(why)))
			return cfg_fail(c, v[A_TEMPLATE], "access_log.template", "%s", why);
		if (dup_str(c, s, &o->template))
			return -ENOMEM;
	}
	return 0;
}

static int parse_access_log(struct cfg_ctx *c, const yaml_node_t *n)
{
	if (n->type == YAML_MAPPING_NODE)
		return parse_access_log_map(c, n);
	return parse_access_log_path(c, n, "access_log");
}

/* tracing: {request_id: {trust, header}, traceparent: {enabled, sample}}; fields override t. */
static int parse_tracing(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			 struct cfg_tracing *t)
{
	enum { T_REQID, T_TRACEPARENT, T_N };
	static const char *const keys[T_N] = { "request_id", "traceparent" };
	enum { RI_TRUST, RI_HEADER, RI_N };
	static const char *const rkeys[RI_N] = { "trust", "header" };
	enum { TP_ENABLED, TP_SAMPLE, TP_N };
	static const char *const tkeys[TP_N] = { "enabled", "sample" };
	yaml_node_t *v[T_N], *rv[RI_N], *tv[TP_N];
	char kp[CFG_KEY_MAX], sub[CFG_KEY_MAX];
	const char *s = NULL;

	if (cfg_fields(c, n, path, keys, T_N, v, NULL))
		return -EINVAL;
	if (v[T_REQID]) {
		key_join(sub, path, "request_id");
		if (cfg_fields(c, v[T_REQID], sub, rkeys, RI_N, rv, NULL))
			return -EINVAL;
		if (rv[RI_TRUST]) {
			if (get_nonempty(c, rv[RI_TRUST], key_join(kp, sub, "trust"), &s))
				return -EINVAL;
			if (!strcmp(s, "trusted_proxies"))
				t->request_id_trust = CFG_TRUST_TRUSTED_PROXIES;
			else if (!strcmp(s, "always"))
				t->request_id_trust = CFG_TRUST_ALWAYS;
			else if (!strcmp(s, "never"))
				t->request_id_trust = CFG_TRUST_NEVER;
			else
				return cfg_fail(c, rv[RI_TRUST], kp,
						"expected trusted_proxies, always or never, got \"%s\"", s);
		}
		if (rv[RI_HEADER]) {
			if (get_nonempty(c, rv[RI_HEADER], key_join(kp, sub, "header"), &s))
				return -EINVAL;
			if (!is_token(s) || strlen(s) > 64)
				return cfg_fail(c, rv[RI_HEADER], kp,
						"\"%s\" is not a header name (a token of at most 64 characters)",
						s);
			free(t->request_id_header);
			if (dup_str(c, s, &t->request_id_header))
				return -ENOMEM;
		}
	}
	if (v[T_TRACEPARENT]) {
		key_join(sub, path, "traceparent");
		if (cfg_fields(c, v[T_TRACEPARENT], sub, tkeys, TP_N, tv, NULL))
			return -EINVAL;
		if (tv[TP_ENABLED] &&
		    get_bool(c, tv[TP_ENABLED], key_join(kp, sub, "enabled"), &t->traceparent))
			return -EINVAL;
		if (tv[TP_SAMPLE] && get_bool(c, tv[TP_SAMPLE], key_join(kp, sub, "sample"), &t->sample))
			return -EINVAL;
	}
	return 0;
}

/* Copies t (duplicating its strings) for a route to start from. */
static int tracing_copy(struct cfg_ctx *c, const struct cfg_tracing *t, struct cfg_tracing *out)
{
	*out = *t;
	out->request_id_header = NULL;
	return dup_str(c, t->request_id_header, &out->request_id_header);
}

/*
 * Histogram bounds in seconds, as Prometheus writes them ("0.005", "1", "2.5"),
 * kept in microseconds: a plain decimal with at most 6 fractional digits.
 */
static int get_buckets(struct cfg_ctx *c, const yaml_node_t *n, const char *key, uint64_t *out,
		       unsigned *nout)
{
	char kp[CFG_KEY_MAX];
	unsigned cnt;

	if (want_seq(c, n, key))
		return -EINVAL;
	cnt = seq_len(n);
	if (cnt == 0 || cnt > CFG_MAX_BUCKETS)
		return cfg_fail(c, n, key, "1 to %d bounds, got %u", CFG_MAX_BUCKETS, cnt);
	for (unsigned i = 0; i < cnt; i++) {
		const yaml_node_t *it = seq_item(c, n, i);
		const char *s = it->type == YAML_SCALAR_NODE ? scalar(it) : "", *p;
		uint64_t us = 0, scale = 1000000;
		unsigned frac = 0;

		key_index(kp, key, i);
		for (p = s; *p >= '0' && *p <= '9' && us <= 1000000000000ULL; p++)
			us = us * 10 + (uint64_t)(*p - '0');
		if (p == s)
			goto bad;
		us *= scale;
		if (*p == '.') {
			for (p++; *p >= '0' && *p <= '9'; p++, frac++) {
				if (frac == 6)
					goto bad;
				scale /= 10;
				us += (uint64_t)(*p - '0') * scale;
			}
			if (!frac)
				goto bad;
		}
		if (*p || us == 0)
			goto bad;
		if (i && us <= out[i - 1])
			return cfg_fail(c, it, kp, "bounds must be ascending (%s after a larger or equal one)",
					s);
		out[i] = us;
		continue;
bad:
		return cfg_fail(c, it, kp,
				"expected seconds above 0 such as 0.005, 1 or 2.5 (at most 6 decimals), got \"%s\"",
				s);
	}
	*nout = cnt;
	return 0;
}

static int parse_admin(struct cfg_ctx *c, const yaml_node_t *kn, const yaml_node_t *n)
{
	enum { AD_ADDRESS, AD_TOKEN, AD_REQ_BUCKETS, AD_UP_BUCKETS, AD_KEY_LABELS, AD_KEY_MAX, AD_N };
	static const char *const keys[AD_N] = { "address", "bearer_token_file", "request_buckets",
						"upstream_buckets", "per_key_labels", "per_key_labels_max" };
	static const uint64_t def_req[] = { 500,    1000,   2500,    5000,    10000,   25000,
					    50000,  100000, 250000,  500000,  1000000, 2500000,
					    5000000, 10000000 };
	struct cfg_admin *a = &c->cfg->admin;
	yaml_node_t *v[AD_N];
	const char *s = NULL, *why = "invalid address";
	struct stat st;

	a->line = cfg_line(kn);
	a->enabled = true;
	memcpy(a->request_buckets_us, def_req, sizeof(def_req));
	a->nrequest_buckets = sizeof(def_req) / sizeof(def_req[0]);
	memcpy(a->upstream_buckets_us, def_req, sizeof(def_req));
	a->nupstream_buckets = a->nrequest_buckets;
	if (net_addr_parse("127.0.0.1:9901", 0, &a->addr, &why))
		return cfg_fail(c, kn, "admin.address", "%s", why);
	if (is_null(n))
		return 0;
	if (cfg_fields(c, n, "admin", keys, AD_N, v, NULL))
		return -EINVAL;
	if (v[AD_ADDRESS] && get_addr(c, v[AD_ADDRESS], "admin.address", &a->addr))
		return -EINVAL;
	if (v[AD_TOKEN]) {
		if (get_nonempty(c, v[AD_TOKEN], "admin.bearer_token_file", &s))
			return -EINVAL;
		if (s[0] != '/')
			return cfg_fail(c, v[AD_TOKEN], "admin.bearer_token_file",
					"expected an absolute path, got \"%s\"", s);
		/* A token others can read is no secret: refuse it the way ssh refuses a loose key. */
		if (stat(s, &st) < 0)
			return cfg_fail(c, v[AD_TOKEN], "admin.bearer_token_file", "%s: %s", s,
					strerror(errno));
		if (!S_ISREG(st.st_mode))
			return cfg_fail(c, v[AD_TOKEN], "admin.bearer_token_file",
					"%s: not a regular file", s);
		if (st.st_mode & 077)
			return cfg_fail(c, v[AD_TOKEN], "admin.bearer_token_file",
					"%s: mode %04o is too open (0600 or stricter)", s,
					(unsigned)(st.st_mode & 07777));
		if (dup_str(c, s, &a->token_file))
			return -ENOMEM;
	}
	if (v[AD_REQ_BUCKETS] && get_buckets(c, v[AD_REQ_BUCKETS], "admin.request_buckets",
					     a->request_buckets_us, &a->nrequest_buckets))
		return -EINVAL;
	if (v[AD_UP_BUCKETS] && get_buckets(c, v[AD_UP_BUCKETS], "admin.upstream_buckets",
					    a->upstream_buckets_us, &a->nupstream_buckets))
		return -EINVAL;
	/* Per-key series (docs/metrics.md): opt-in, and capped so key ids cannot blow up cardinality. */
	a->per_key_labels_max = 100;
	if (v[AD_KEY_LABELS] && get_bool(c, v[AD_KEY_LABELS], "admin.per_key_labels", &a->per_key_labels))
		return -EINVAL;
	if (v[AD_KEY_MAX]) {
		uint64_t max;

		if (get_uint(c, v[AD_KEY_MAX], "admin.per_key_labels_max", 1, 10000, &max))
			return -EINVAL;
		a->per_key_labels_max = (unsigned)max;
	}
	return 0;
}

/* ---- API key tiers, route auth and rate limits (docs/api-keys.md, docs/rate-limits.md) ---- */

#define CFG_MAX_RATE_LIMITS 8 /* limits on one route */

static int get_limit_rate(struct cfg_ctx *c, const yaml_node_t *n, const char *key,
			  struct cfg_rate *out)
{
	const char *s = NULL;
	int rc;

	if (n->type != YAML_SCALAR_NODE || is_null(n))
		return cfg_fail(c, n, key, "expected a rate such as 10/s, 600/m, 100/h or 1000/d, got %s",
				node_kind(n));
	s = scalar(n);
	rc = rl_parse_rate(s, out);
	if (rc == -ERANGE)
		return cfg_fail(c, n, key, "rate \"%s\" is too large (at most 1000000000 per unit)", s);
	if (rc)
		return cfg_fail(c, n, key,
				"expected a rate such as 10/s, 600/m, 100/h or 1000/d, got \"%s\"", s);
	return 0;
}

/* The limiter keeps times in 48 bits of µs: a bucket must refill within two years. */
static int check_bucket(struct cfg_ctx *c, const yaml_node_t *n, const char *key,
			const struct cfg_rate *rate, uint64_t burst)
{
	struct rl_limit l = rl_limit_of(rate, burst);

	if (l.burst * l.interval_us > (1ull << 46))
		return cfg_fail(c, n, key, "burst %" PRIu64 " at this rate takes over two years to refill",
				l.burst);
	return 0;
}

static int parse_quota(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
		       struct cfg_tier *t)
{
	enum { Q_DAY, Q_MONTH, Q_N };
	static const char *const keys[Q_N] = { "day", "month" };
	char kp[CFG_KEY_MAX];
	yaml_node_t *v[Q_N];

	if (cfg_fields(c, n, path, keys, Q_N, v, NULL))
		return -EINVAL;
	if (v[Q_DAY] &&
	    get_uint(c, v[Q_DAY], key_join(kp, path, "day"), 1, 1ull << 40, &t->quota_day))
		return -EINVAL;
	if (v[Q_MONTH] &&
	    get_uint(c, v[Q_MONTH], key_join(kp, path, "month"), 1, 1ull << 40, &t->quota_month))
		return -EINVAL;
	return 0;
}

static int parse_tier(struct cfg_ctx *c, const yaml_node_t *n, unsigned idx)
{
	enum { TI_NAME, TI_RATE, TI_BURST, TI_QUOTA, TI_N };
	static const char *const keys[TI_N] = { "name", "rate", "burst", "quota" };
	struct cfg_tier *t = &c->cfg->tiers[idx];
	char path[CFG_KEY_MAX], kp[CFG_KEY_MAX];
	yaml_node_t *v[TI_N], *kn[TI_N];
	const char *s = NULL;

	key_index(path, "tiers", idx);
	if (cfg_fields(c, n, path, keys, TI_N, v, kn))
		return -EINVAL;
	t->line = cfg_line(n);
	if (!v[TI_NAME])
		return cfg_fail(c, n, key_join(kp, path, "name"), "required key missing");
	if (get_str(c, v[TI_NAME], key_join(kp, path, "name"), &s) || check_name(c, v[TI_NAME], kp, s))
		return -EINVAL;
	for (unsigned j = 0; j < idx; j++)
		if (!strcmp(c->cfg->tiers[j].name, s))
			return cfg_fail(c, v[TI_NAME], kp, "duplicate name, first at line %u",
					c->cfg->tiers[j].line);
	if (dup_str(c, s, &t->name))
		return -ENOMEM;
	if (v[TI_RATE] && get_limit_rate(c, v[TI_RATE], key_join(kp, path, "rate"), &t->rate))
		return -EINVAL;
	if (v[TI_BURST]) {
		if (!v[TI_RATE])
			return cfg_fail(c, kn[TI_BURST], key_join(kp, path, "burst"), "needs rate");
		if (get_uint(c, v[TI_BURST], key_join(kp, path, "burst"), 1, 1000000, &t->burst) ||
		    check_bucket(c, v[TI_BURST], kp, &t->rate, t->burst))
			return -EINVAL;
	} else if (t->rate.count) {
		t->burst = t->rate.count;
		if (check_bucket(c, v[TI_RATE], key_join(kp, path, "rate"), &t->rate, t->burst))
			return -EINVAL;
	}
	if (v[TI_QUOTA] && parse_quota(c, v[TI_QUOTA], key_join(kp, path, "quota"), t))
		return -EINVAL;
	return 0;
}

static int parse_tiers(struct cfg_ctx *c, const yaml_node_t *n)
{
	unsigned cnt;

	if (want_seq(c, n, "tiers"))
		return -EINVAL;
	cnt = seq_len(n);
	if (!cnt)
		return 0;
	c->cfg->tiers = calloc(cnt, sizeof(*c->cfg->tiers));
	if (!c->cfg->tiers)
		return cfg_oom(c);
	c->cfg->ntiers = cnt;
	for (unsigned i = 0; i < cnt; i++)
		if (parse_tier(c, seq_item(c, n, i), i))
			return -EINVAL;
	return 0;
}

/* A query parameter name we can match without decoding: unreserved characters only. */
static bool query_name_ok(const char *s)
{
	size_t len = strlen(s);

	return len && len <= 64 &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~") == len;
}

static int parse_upstream_headers(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
				  struct cfg_auth *a)
{
	enum { UH_KEY_ID, UH_TIER, UH_N };
	static const char *const keys[UH_N] = { "key_id", "tier" };
	char **dst[UH_N] = { &a->hdr_key_id, &a->hdr_tier };
	char kp[CFG_KEY_MAX];
	yaml_node_t *v[UH_N];

	if (cfg_fields(c, n, path, keys, UH_N, v, NULL))
		return -EINVAL;
	for (int i = 0; i < UH_N; i++) {
		const char *s = NULL;

		if (!v[i])
			continue;
		if (get_nonempty(c, v[i], key_join(kp, path, keys[i]), &s))
			return -EINVAL;
		if (!is_token(s))
			return cfg_fail(c, v[i], kp, "\"%s\" is not a valid header name", s);
		if (dup_str(c, s, dst[i]))
			return -ENOMEM;
	}
	return 0;
}

/* ---- routes[].auth with type jwt (agent/jwt.h) ----------------------------------- */

/* The value of `type` in an auth mapping, or NULL: the jwt branch has its own keys. */
static const char *auth_type_of(struct cfg_ctx *c, const yaml_node_t *n)
{
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = cfg_node(c, p->key), *v = cfg_node(c, p->value);

		if (k->type == YAML_SCALAR_NODE && !strcmp(scalar(k), "type") &&
		    v->type == YAML_SCALAR_NODE)
			return scalar(v);
	}
	return NULL;
}

/* A string or a list of non-empty strings, duplicated into *out. */
static int get_str_list(struct cfg_ctx *c, const yaml_node_t *n, const char *key, char ***out,
			unsigned *nout)
{
	bool one = n->type == YAML_SCALAR_NODE;
	unsigned cnt = one ? 1 : 0;
	char kp[CFG_KEY_MAX];

	if (!one) {
		if (want_seq(c, n, key))
			return -EINVAL;
		cnt = seq_len(n);
		if (!cnt)
			return cfg_fail(c, n, key, "empty list");
	}
	*out = calloc(cnt, sizeof(**out));
	if (!*out)
		return cfg_oom(c);
	for (unsigned i = 0; i < cnt; i++) {
		const yaml_node_t *it = one ? n : seq_item(c, n, i);
		const char *s = NULL;

		if (get_nonempty(c, it, one ? key : key_index(kp, key, i), &s))
			return -EINVAL;
		if (dup_str(c, s, &(*out)[i]))
			return -ENOMEM;
		*nout = i + 1;
	}
	return 0;
}

static int parse_jwt_algorithms(struct cfg_ctx *c, const yaml_node_t *n, const char *key,
				struct jwt_policy *p)
{
	char kp[CFG_KEY_MAX];

	if (want_seq(c, n, key))
		return -EINVAL;
	if (!seq_len(n))
		return cfg_fail(c, n, key, "empty list: name the algorithms your issuer signs with");
	for (unsigned i = 0; i < seq_len(n); i++) {
		const yaml_node_t *it = seq_item(c, n, i);
		const char *s = NULL;
		int a;

		key_index(kp, key, i);
		if (get_nonempty(c, it, kp, &s))
			return -EINVAL;
		if (!strcasecmp(s, "none"))
			return cfg_fail(c, it, kp, "\"none\" (unsigned tokens) is never accepted");
		a = jwt_alg_from_name(s);
		if (a < 0)
			return cfg_fail(c, it, kp,
					"unknown algorithm \"%s\" (expected HS256, HS384, HS512, RS256, RS384, RS512, ES256 or ES384)",
					s);
		if (p->algs & (1u << a))
			return cfg_fail(c, it, kp, "%s is listed twice", s);
		p->algs |= 1u << a;
	}
	return 0;
}

/* Claim headers replace what the client sent; framing and routing headers are not for claims. */
static bool claim_header_ok(const char *h)
{
	static const char *const reserved[] = {
		"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
		"te", "trailer", "proxy-connection", "expect", "x-forwarded-for", "x-forwarded-proto",
		"x-forwarded-host", "forwarded", "x-request-id", "traceparent", "tracestate",
	};

	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (!strcasecmp(h, reserved[i]))
			return false;
	return is_token(h) && strlen(h) <= 64;
}

static int parse_jwt_claims(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			    struct jwt_policy *p)
{
	char kp[CFG_KEY_MAX];

	if (want_map(c, n, path))
		return -EINVAL;
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = cfg_node(c, pr->key), *v = cfg_node(c, pr->value);
		const char *claim = NULL, *h = NULL;

		if (get_nonempty(c, k, path, &claim))
			return -EINVAL;
		key_join(kp, path, claim);
		if (strlen(claim) > 64)
			return cfg_fail(c, k, kp, "claim names are at most 64 bytes");
		if (p->nclaims == JWT_MAX_CLAIM_HEADERS)
			return cfg_fail(c, k, kp, "at most %d claims", JWT_MAX_CLAIM_HEADERS);
		if (get_nonempty(c, v, kp, &h))
			return -EINVAL;
		if (!claim_header_ok(h))
			return cfg_fail(c, v, kp, "\"%s\" cannot carry a claim (not a header name, or one the proxy owns)",
					h);
		for (unsigned i = 0; i < p->nclaims; i++) {
			if (!strcmp(p->claims[i].claim, claim))
				return cfg_fail(c, k, kp, "claim listed twice");
			if (!strcasecmp(p->claims[i].header, h))
				return cfg_fail(c, v, kp, "header \"%s\" already carries claim %s", h,
						p->claims[i].claim);
		}
		if (dup_str(c, claim, &p->claims[p->nclaims].claim) ||
		    dup_str(c, h, &p->claims[p->nclaims].header)) {
			p->nclaims++; /* both freed by jwt_free */
			return -ENOMEM;
		}
		p->nclaims++;
	}
	return 0;
}

static int parse_auth_jwt(struct cfg_ctx *c, const yaml_node_t *n, const char *path, struct cfg_auth *a)
{
	enum { J_TYPE, J_ALGS, J_KEYS, J_JWKS, J_HMAC, J_ISS, J_AUD, J_LEEWAY, J_HEADER, J_COOKIE,
	       J_CLAIMS, J_REQUIRE_EXP, J_FORWARD, J_N };
	static const char *const keys[J_N] = {
		"type",     "algorithms", "keys",   "jwks",   "hmac_secret_file",
		"issuer",   "audience",   "leeway", "header", "cookie",
		"claims_to_headers", "require_exp", "forward_token",
	};
	char kp[CFG_KEY_MAX], why[512];
	yaml_node_t *v[J_N], *kn[J_N];
	struct jwt_policy *p;
	const char *s = NULL;
	uint64_t ms;

	if (cfg_fields(c, n, path, keys, J_N, v, kn))
		return -EINVAL;
	a->type = CFG_AUTH_JWT;
	a->source = CFG_CRED_BEARER;
	a->jwt = jwt_new();
	if (!a->jwt)
		return cfg_oom(c);
	p = jwt_policy(a->jwt);
	if (!v[J_ALGS])
		return cfg_fail(c, n, key_join(kp, path, "algorithms"),
				"required: the algorithms your issuer signs with, e.g. [RS256]");
	if (parse_jwt_algorithms(c, v[J_ALGS], key_join(kp, path, "algorithms"), p))
		return -EINVAL;
	if (v[J_ISS] && get_str_list(c, v[J_ISS], key_join(kp, path, "issuer"), &p->issuers, &p->nissuers))
		return -EINVAL;
	if (v[J_AUD] &&
	    get_str_list(c, v[J_AUD], key_join(kp, path, "audience"), &p->audiences, &p->naudiences))
		return -EINVAL;
	if (v[J_LEEWAY]) {
		key_join(kp, path, "leeway");
		if (get_duration(c, v[J_LEEWAY], kp, &ms))
			return -EINVAL;
		if (ms % 1000 || ms > 3600000)
			return cfg_fail(c, v[J_LEEWAY], kp, "whole seconds from 0s to 1h");
		p->leeway_s = ms / 1000;
	}
	if (v[J_HEADER] && v[J_COOKIE]) {
		int later = cfg_line(kn[J_COOKIE]) >= cfg_line(kn[J_HEADER]) ? J_COOKIE : J_HEADER;

		return cfg_fail(c, kn[later], key_join(kp, path, keys[later]),
				"the token is read from either a header or a cookie, not both");
	}
	if (v[J_HEADER]) {
		key_join(kp, path, "header");
		if (get_nonempty(c, v[J_HEADER], kp, &s))
			return -EINVAL;
		/* "Authorization: Bearer" is how api_key routes say it; accept it here too. */
		if (!strcmp(s, "Authorization: Bearer"))
			s = "Authorization";
		if (!is_token(s))
			return cfg_fail(c, v[J_HEADER], kp, "\"%s\" is not a header name", s);
		if (dup_str(c, s, &p->header))
			return -ENOMEM;
		if (strcasecmp(s, "Authorization")) {
			a->source = CFG_CRED_HEADER;
			if (dup_str(c, s, &a->name))
				return -ENOMEM;
		}
	}
	if (v[J_COOKIE]) {
		key_join(kp, path, "cookie");
		if (get_nonempty(c, v[J_COOKIE], kp, &s))
			return -EINVAL;
		if (!is_token(s))
			return cfg_fail(c, v[J_COOKIE], kp, "\"%s\" is not a cookie name", s);
		if (dup_str(c, s, &p->cookie))
			return -ENOMEM;
	}
	if (v[J_CLAIMS] && parse_jwt_claims(c, v[J_CLAIMS], key_join(kp, path, "claims_to_headers"), p))
		return -EINVAL;
	if (v[J_REQUIRE_EXP] &&
	    get_bool(c, v[J_REQUIRE_EXP], key_join(kp, path, "require_exp"), &p->require_exp))
		return -EINVAL;
	if (v[J_FORWARD] &&
	    get_bool(c, v[J_FORWARD], key_join(kp, path, "forward_token"), &p->forward_token))
		return -EINVAL;
	/* Key files are read now, so `clawd --check` catches a missing or loose one. */
	if (v[J_KEYS]) {
		char **files = NULL;
		unsigned nfiles = 0;
		int rc;

		key_join(kp, path, "keys");
		rc = get_str_list(c, v[J_KEYS], kp, &files, &nfiles);
		for (unsigned i = 0; !rc && i < nfiles; i++)
			if (jwt_add_pem(a->jwt, files[i], why, sizeof(why)))
				rc = cfg_fail(c, v[J_KEYS], kp, "%s", why);
		for (unsigned i = 0; i < nfiles; i++)
			free(files[i]);
		free(files);
		if (rc)
			return rc;
	}
	if (v[J_JWKS]) {
		key_join(kp, path, "jwks");
		if (get_nonempty(c, v[J_JWKS], kp, &s))
			return -EINVAL;
		if (jwt_add_jwks(a->jwt, s, why, sizeof(why)))
			return cfg_fail(c, v[J_JWKS], kp, "%s", why);
	}
	if (v[J_HMAC]) {
		key_join(kp, path, "hmac_secret_file");
		if (get_nonempty(c, v[J_HMAC], kp, &s))
			return -EINVAL;
		if (jwt_add_hmac_file(a->jwt, s, why, sizeof(why)))
			return cfg_fail(c, v[J_HMAC], kp, "%s", why);
	}
	if (jwt_check(a->jwt, why, sizeof(why)))
		return cfg_fail(c, n, path, "%s", why);
	return 0;
}

static int parse_auth(struct cfg_ctx *c, const yaml_node_t *n, const char *path, struct cfg_auth *a)
{
	enum { A_TYPE, A_HEADER, A_QUERY, A_UPSTREAM_HEADERS, A_N };
	static const char *const keys[A_N] = { "type", "header", "query", "upstream_headers" };
	char kp[CFG_KEY_MAX];
	yaml_node_t *v[A_N], *kn[A_N];
	const char *s = NULL;

	a->line = cfg_line(n);
	/* `auth: api_key` is short for {type: api_key} with the defaults. */
	if (n->type == YAML_SCALAR_NODE) {
		if (get_nonempty(c, n, path, &s))
			return -EINVAL;
		if (strcmp(s, "api_key"))
			return cfg_fail(c, n, path, "expected api_key or a mapping with type, got \"%s\"",
					s);
		a->type = CFG_AUTH_API_KEY;
		return dup_str(c, "X-API-Key", &a->name);
	}
	if (n->type == YAML_MAPPING_NODE && (s = auth_type_of(c, n)) && !strcmp(s, "jwt"))
		return parse_auth_jwt(c, n, path, a);
	if (cfg_fields(c, n, path, keys, A_N, v, kn))
		return -EINVAL;
	key_join(kp, path, "type");
	if (!v[A_TYPE])
		return cfg_fail(c, n, kp, "required key missing (api_key or jwt)");
	if (get_nonempty(c, v[A_TYPE], kp, &s))
		return -EINVAL;
	if (!strcmp(s, "api_key"))
		a->type = CFG_AUTH_API_KEY;
	else
		return cfg_fail(c, v[A_TYPE], kp, "expected api_key or jwt, got \"%s\"", s);
	if (v[A_HEADER] && v[A_QUERY]) {
		int later = cfg_line(kn[A_QUERY]) >= cfg_line(kn[A_HEADER]) ? A_QUERY : A_HEADER;

		return cfg_fail(c, kn[later], key_join(kp, path, keys[later]),
				"the key is read from either a header or a query parameter, not both");
	}
	a->source = CFG_CRED_HEADER;
	if (v[A_QUERY]) {
		if (get_nonempty(c, v[A_QUERY], key_join(kp, path, "query"), &s))
			return -EINVAL;
		if (!query_name_ok(s))
			return cfg_fail(c, v[A_QUERY], kp,
					"\"%s\": a parameter name of letters, digits, '_', '.', '-' or '~'", s);
		a->source = CFG_CRED_QUERY;
		if (dup_str(c, s, &a->name))
			return -ENOMEM;
	} else if (v[A_HEADER]) {
		if (get_nonempty(c, v[A_HEADER], key_join(kp, path, "header"), &s))
			return -EINVAL;
		if (!strcmp(s, "Authorization: Bearer")) {
			a->source = CFG_CRED_BEARER;
		} else if (!is_token(s)) {
			return cfg_fail(c, v[A_HEADER], kp,
					"\"%s\": expected a header name or \"Authorization: Bearer\"", s);
		} else if (http1_casecmp_eq(s, strlen(s), "authorization")) {
			return cfg_fail(c, v[A_HEADER], kp,
					"write \"Authorization: Bearer\" to read a bearer token");
		} else if (dup_str(c, s, &a->name)) {
			return -ENOMEM;
		}
	} else if (dup_str(c, "X-API-Key", &a->name)) {
		return -ENOMEM;
	}
	if (v[A_UPSTREAM_HEADERS] &&
	    parse_upstream_headers(c, v[A_UPSTREAM_HEADERS], key_join(kp, path, "upstream_headers"), a))
		return -EINVAL;
	return 0;
}

static int parse_rate_limit(struct cfg_ctx *c, const yaml_node_t *n, const char *path,
			    const struct cfg_route *r, struct cfg_rate_limit *l)
{
	enum { L_KEY, L_RATE, L_BURST, L_V6, L_N };
	static const char *const keys[L_N] = { "key", "rate", "burst", "ipv6_prefix" };
	char kp[CFG_KEY_MAX];
	yaml_node_t *v[L_N], *kn[L_N];
	const char *s = NULL, *arg = NULL;
	uint64_t x;

	if (cfg_fields(c, n, path, keys, L_N, v, kn))
		return -EINVAL;
	l->line = cfg_line(n);
	l->v6_prefix = 64;
	key_join(kp, path, "key");
	if (!v[L_KEY])
		return cfg_fail(c, n, kp, "required key missing (ip, api_key, header:NAME or jwt_claim:NAME)");
	if (get_nonempty(c, v[L_KEY], kp, &s))
		return -EINVAL;
	if (!strcmp(s, "ip")) {
		l->key = CFG_LIMIT_IP;
	} else if (!strcmp(s, "api_key")) {
		l->key = CFG_LIMIT_API_KEY;
		if (r->auth.type != CFG_AUTH_API_KEY)
			return cfg_fail(c, v[L_KEY], kp, "key api_key needs auth: api_key on this route");
	} else if (!strncmp(s, "header:", 7)) {
		l->key = CFG_LIMIT_HEADER;
		arg = s + 7;
		if (!is_token(arg))
			return cfg_fail(c, v[L_KEY], kp, "\"%s\": the name after ':' must be a header name",
					s);
	} else if (!strncmp(s, "jwt_claim:", 10)) {
		l->key = CFG_LIMIT_JWT_CLAIM;
		arg = s + 10;
		if (!*arg || strlen(arg) > 64)
			return cfg_fail(c, v[L_KEY], kp, "\"%s\": a claim name of 1 to 64 bytes", s);
		if (r->auth.type != CFG_AUTH_JWT)
			return cfg_fail(c, v[L_KEY], kp, "key jwt_claim needs auth type jwt on this route");
		/* The validator copies this claim out of each token for the limiter. */
		if (jwt_want_claim(r->auth.jwt, arg))
			return cfg_fail(c, v[L_KEY], kp, "at most %d jwt_claim limits per route", JWT_MAX_WANT);
	} else {
		return cfg_fail(c, v[L_KEY], kp,
				"expected ip, api_key, header:NAME or jwt_claim:NAME, got \"%s\"", s);
	}
	if (arg && dup_str(c, arg, &l->name))
		return -ENOMEM;
	key_join(kp, path, "rate");
	if (!v[L_RATE])
		return cfg_fail(c, n, kp, "required key missing");
	if (get_limit_rate(c, v[L_RATE], kp, &l->rate))
		return -EINVAL;
	if (v[L_BURST]) {
		if (get_uint(c, v[L_BURST], key_join(kp, path, "burst"), 1, 1000000, &l->burst))
			return -EINVAL;
	} else {
		l->burst = l->rate.count;
	}
	if (check_bucket(c, v[L_BURST] ? v[L_BURST] : v[L_RATE], kp, &l->rate, l->burst))
		return -EINVAL;
	if (v[L_V6]) {
		key_join(kp, path, "ipv6_prefix");
		if (l->key != CFG_LIMIT_IP)
			return cfg_fail(c, kn[L_V6], kp, "only valid with key ip");
		if (get_uint(c, v[L_V6], kp, 1, 128, &x))
			return -EINVAL;
		l->v6_prefix = (uint32_t)x;
	}
	return 0;
}

/* routes[].auth, .limits and .rate_limit_headers; any may be NULL (absent). */
static int parse_route_gate(struct cfg_ctx *c, const char *path, const yaml_node_t *auth,
			    const yaml_node_t *limits, const yaml_node_t *headers,
			    struct cfg_route *r)
{
	char kp[CFG_KEY_MAX], ip[CFG_KEY_MAX];
	unsigned cnt;

	if (auth && !is_null(auth) && parse_auth(c, auth, key_join(kp, path, "auth"), &r->auth))
		return -EINVAL;
	if (headers) {
		const char *s = headers->type == YAML_SCALAR_NODE ? scalar(headers) : NULL;

		key_join(kp, path, "rate_limit_headers");
		if (s && !strcmp(s, "true"))
			r->rate_limit_headers = true;
		else if (!s || strcmp(s, "false"))
			return cfg_fail(c, headers, kp, "expected true or false, got %s",
					s ? s : node_kind(headers));
	}
	if (!limits)
		return 0;
	key_join(kp, path, "limits");
	if (want_seq(c, limits, kp))
		return -EINVAL;
	cnt = seq_len(limits);
	if (!cnt)
		return cfg_fail(c, limits, kp, "empty list (omit limits for none)");
	if (cnt > CFG_MAX_RATE_LIMITS)
		return cfg_fail(c, limits, kp, "at most %d limits per route, got %u",
				CFG_MAX_RATE_LIMITS, cnt);
	r->rate_limits = calloc(cnt, sizeof(*r->rate_limits));
	if (!r->rate_limits)
		return cfg_oom(c);
	/* Counted before parsing: a half-parsed entry's strings are freed with the rest. */
	for (unsigned i = 0; i < cnt; i++) {
		r->nrate_limits = i + 1;
		if (parse_rate_limit(c, seq_item(c, limits, i), key_index(ip, kp, i), r,
				     &r->rate_limits[i]))
			return -EINVAL;
	}
	return 0;
}

static void free_gate_config(struct config *cfg)
{
	for (unsigned i = 0; cfg->tiers && i < cfg->ntiers; i++)
		free(cfg->tiers[i].name);
	free(cfg->tiers);
	for (unsigned i = 0; cfg->routes && i < cfg->nroutes; i++) {
		struct cfg_route *r = &cfg->routes[i];

		free(r->auth.name);
		free(r->auth.hdr_key_id);
		free(r->auth.hdr_tier);
		jwt_free(r->auth.jwt);
		for (unsigned j = 0; r->rate_limits && j < r->nrate_limits; j++)
			free(r->rate_limits[j].name);
		free(r->rate_limits);
	}
}

int config_tier_index(const struct config *cfg, const char *name)
{
	for (unsigned i = 0; i < cfg->ntiers; i++)
		if (cfg->tiers[i].name && !strcmp(cfg->tiers[i].name, name))
			return (int)i;
	return -1;
}

/* ---- the document ------------------------------------------------------------------ */

/*
 * Sections are read in dependency order, not file order: timeouts before
 * routes (which inherit them), listeners and upstreams before the routes
 * that name them.
 */
/* ---- splice (docs/splice.md) ------------------------------------------------------- */

static int parse_splice(struct cfg_ctx *c, const yaml_node_t *kn, const yaml_node_t *n)
{
	enum { S_ENABLED, S_BUDGET, S_SNDBUF, S_IDLE, S_MAXCONN, S_PIN_DIR, S_N };
	static const char *const keys[S_N] = { "enabled", "budget", "sndbuf", "idle_timeout",
					       "max_connections", "pin_dir" };
	struct cfg_splice *sp = &c->cfg->splice;
	yaml_node_t *v[S_N];
	const char *s = NULL;
	uint64_t x;

	sp->budget = SPLICE_DEFAULT_BUDGET;
	sp->sndbuf = 4u << 20;
	sp->idle_ms = 300000;
	sp->max_connections = SPLICE_MAX_SOCKS / 2;
	sp->line = kn ? cfg_line(kn) : 0;
	if (!n || is_null(n))
		return dup_str(c, SPLICE_DEFAULT_PIN_DIR, &sp->pin_dir);
	if (cfg_fields(c, n, "splice", keys, S_N, v, NULL))
		return -EINVAL;
	if (v[S_ENABLED]) {
		if (get_nonempty(c, v[S_ENABLED], "splice.enabled", &s))
			return -EINVAL;
		if (!strcmp(s, "auto"))
			sp->enabled = CFG_SPLICE_AUTO;
		else if (!strcmp(s, "off"))
			sp->enabled = CFG_SPLICE_OFF;
		else if (!strcmp(s, "required"))
			sp->enabled = CFG_SPLICE_REQUIRED;
		else
			return cfg_fail(c, v[S_ENABLED], "splice.enabled",
					"expected off, auto or required, got \"%s\"", s);
	}
	/* Below one 64 KiB skb the program could never redirect anything; above 1 GiB it bounds nothing. */
	if (v[S_BUDGET] && get_size(c, v[S_BUDGET], "splice.budget", 64 << 10, 1ull << 30, &sp->budget))
		return -EINVAL;
	if (v[S_SNDBUF] && get_size(c, v[S_SNDBUF], "splice.sndbuf", 0, 256 << 20, &sp->sndbuf))
		return -EINVAL;
	if (v[S_IDLE] && get_duration(c, v[S_IDLE], "splice.idle_timeout", &sp->idle_ms))
		return -EINVAL;
	if (v[S_MAXCONN]) {
		if (get_uint(c, v[S_MAXCONN], "splice.max_connections", 1, SPLICE_MAX_SOCKS / 2, &x))
			return -EINVAL;
		sp->max_connections = (uint32_t)x;
	}
	if (v[S_PIN_DIR]) {
		if (get_nonempty(c, v[S_PIN_DIR], "splice.pin_dir", &s))
			return -EINVAL;
		if (s[0] != '/')
			return cfg_fail(c, v[S_PIN_DIR], "splice.pin_dir",
					"expected an absolute path on a bpf file system, got \"%s\"", s);
		if (strlen(s) > 200)
			return cfg_fail(c, v[S_PIN_DIR], "splice.pin_dir", "path longer than 200 bytes");
		return dup_str(c, s, &sp->pin_dir);
	}
	return dup_str(c, SPLICE_DEFAULT_PIN_DIR, &sp->pin_dir);
}

/* The key node named key in mapping map (its value in *val), or NULL. */
static yaml_node_t *map_key(struct cfg_ctx *c, const yaml_node_t *map, const char *key,
			    yaml_node_t **val)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *k = cfg_node(c, p->key);

		if (k->type == YAML_SCALAR_NODE && !strcmp(scalar(k), key)) {
			*val = cfg_node(c, p->value);
			return k;
		}
	}
	return NULL;
}

/*
 * routes[].match on a tcp route: only sni (the bytes are opaque TLS, there is
 * no request to match), and no server name routed twice on one listener
 * (the choice would depend on file order). match.sni on any other route is
 * refused: HTTP routes match the Host header with match.host.
 */
static int route_sni_check(struct cfg_ctx *c, const char *path, const yaml_node_t *match,
			   const struct cfg_route *r)
{
	const struct config *cfg = c->cfg;
	unsigned idx = (unsigned)(r - cfg->routes);
	yaml_node_t *sv = NULL, *sk = map_key(c, match, "sni", &sv);
	char kp[CFG_KEY_MAX], mp[CFG_KEY_MAX], sp[CFG_KEY_MAX];

	key_join(mp, path, "match");
	if (r->mode != CFG_MODE_TCP) {
		if (sk)
			return cfg_fail(c, sk, key_join(kp, mp, "sni"),
					"only a tcp route matches the TLS server name (an HTTP route matches the Host header: use match.host)");
		return 0;
	}
	for (yaml_node_pair_t *p = match ? match->data.mapping.pairs.start : NULL;
	     p && p < match->data.mapping.pairs.top; p++) {
		yaml_node_t *k = cfg_node(c, p->key);

		if (k != sk)
			return cfg_fail(c, k, key_join(kp, mp, scalar(k)),
					"a tcp route matches by listener and match.sni only (it sees no HTTP request)");
	}
	if (!sk)
		return 0;
	key_join(sp, mp, "sni");
	for (unsigned k = 0; k < r->nsni; k++) {
		const yaml_node_t *it = sv->type == YAML_SCALAR_NODE ? sv : seq_item(c, sv, k);
		const char *ik = sv->type == YAML_SCALAR_NODE ? sp : key_index(kp, sp, k);

		for (unsigned m = 0; m < k; m++)
			if (!strcmp(r->sni[m], r->sni[k]))
				return cfg_fail(c, it, ik, "\"%s\" is listed twice (also %s[%u])",
						r->sni[k], sp, m);
		for (unsigned j = 0; j < idx; j++) {
			const struct cfg_route *o = &cfg->routes[j];

			if (o->mode != CFG_MODE_TCP || !(o->listener_mask & r->listener_mask))
				continue;
			for (unsigned m = 0; m < o->nsni; m++)
				if (!strcmp(o->sni[m], r->sni[k]))
					return cfg_fail(c, it, ik,
							"\"%s\" already routed by tcp route \"%s\" (line %u) on a listener they share",
							r->sni[k], o->name, o->line);
		}
	}
	return 0;
}

/*
 * routes[].mode. After the first request a spliced connection is never seen
 * by the L7 proxy again, so anything that must judge each request is refused.
 */
static int parse_route_mode(struct cfg_ctx *c, const char *path, yaml_node_t **v, yaml_node_t **kn,
			    int i_mode, int i_listeners, int i_match, int i_respond, struct cfg_route *r)
{
	char kp[CFG_KEY_MAX];
	const char *s = NULL;

	r->listeners_set = v[i_listeners] != NULL;
	if (!v[i_mode])
		return route_sni_check(c, path, v[i_match], r);
	key_join(kp, path, "mode");
	if (get_nonempty(c, v[i_mode], kp, &s))
		return -EINVAL;
	if (!strcmp(s, "http"))
		r->mode = CFG_MODE_HTTP;
	else if (!strcmp(s, "splice"))
		r->mode = CFG_MODE_SPLICE;
	else if (!strcmp(s, "tcp"))
		r->mode = CFG_MODE_TCP;
	else
		return cfg_fail(c, v[i_mode], kp, "expected http, splice or tcp, got \"%s\"", s);
	if (route_sni_check(c, path, v[i_match], r))
		return -EINVAL;
	if (r->mode == CFG_MODE_HTTP)
		return 0;
	if (v[i_respond])
		return cfg_fail(c, v[i_mode], kp, "%s mode needs an upstream, not respond", s);
	if (r->upstream >= 0 && c->cfg->upstreams[r->upstream].tls)
		return cfg_fail(c, v[i_mode], kp,
				"%s mode cannot be used with upstream \"%s\": it has tls (re-encryption needs every byte through the proxy)",
				s, c->cfg->upstreams[r->upstream].name);
	if (r->auth.type != CFG_AUTH_NONE)
		return cfg_fail(c, v[i_mode], kp,
				"%s mode cannot be combined with auth: requests after the first are never seen by the proxy",
				s);
	if (r->nrate_limits)
		return cfg_fail(c, v[i_mode], kp,
				"%s mode cannot be combined with limits: requests after the first are never seen by the proxy",
				s);
	if (r->mode == CFG_MODE_TCP) {
		if (!v[i_listeners])
			return cfg_fail(c, v[i_mode], kp,
					"a tcp route must name its listeners (they become pure L4)");
	}
	return 0;
}

/*
 * Gives each listener its tcp routes (at most one without match.sni: the
 * default); an HTTP route naming such a listener is refused.
 */
static int splice_check_routes(struct cfg_ctx *c)
{
	struct config *cfg = c->cfg;

	for (unsigned l = 0; l < cfg->nlisteners; l++) {
		cfg->listeners[l].ntcp_routes = 0;
		cfg->listeners[l].tcp_default = -1;
		cfg->listeners[l].sni_peek = false;
	}
	for (unsigned i = 0; i < cfg->nroutes; i++) {
		const struct cfg_route *r = &cfg->routes[i];

		if (r->mode == CFG_MODE_SPLICE) {
			bool plain = false;

			for (unsigned l = 0; l < cfg->nlisteners; l++)
				plain |= (r->listener_mask & (1ull << l)) && !cfg->listeners[l].tls;
			if (!plain) {
				char kp[CFG_KEY_MAX];

				key_index(kp, "routes", i);
				if (c->err && c->errlen)
					snprintf(c->err, c->errlen,
						 "%s:%u: %s.mode: splice needs a plain listener: a TLS-terminated connection cannot be spliced (kernel TLS and the SOCKHASH exclude each other: sk_psock_init() refuses a socket with the TLS ULP, and since Linux 6.1.190 the TLS_TX/TLS_RX keys are refused with EINVAL on a socket in a sockmap; see docs/splice.md)",
						 c->name, r->line, kp);
				return -EINVAL;
			}
		}
		if (r->mode != CFG_MODE_TCP)
			continue;
		for (unsigned l = 0; l < cfg->nlisteners; l++) {
			if (!(r->listener_mask & (1ull << l)))
				continue;
			if (cfg->listeners[l].tls) {
				char kp[CFG_KEY_MAX];

				key_index(kp, "routes", i);
				if (c->err && c->errlen)
					snprintf(c->err, c->errlen,
						 "%s:%u: %s.listeners: listener \"%s\" terminates TLS; a tcp route passes bytes through untouched, so its listener must not have tls",
						 c->name, r->line, kp, cfg->listeners[l].name);
				return -EINVAL;
			}
			struct cfg_listener *li = &cfg->listeners[l];

			if (!r->nsni && li->tcp_default >= 0) {
				char kp[CFG_KEY_MAX];

				key_index(kp, "routes", i);
				if (c->err && c->errlen)
					snprintf(c->err, c->errlen,
						 "%s:%u: %s.listeners: listener \"%s\" already has default tcp route \"%s\" (one without match.sni); give one of them match.sni",
						 c->name, r->line, kp, li->name,
						 cfg->routes[li->tcp_default].name);
				return -EINVAL;
			}
			if (!li->tcp_routes && !(li->tcp_routes = calloc(cfg->nroutes, sizeof(int))))
				return cfg_oom(c);
			li->tcp_routes[li->ntcp_routes++] = (int)i;
			if (r->nsni)
				li->sni_peek = true;
			else
				li->tcp_default = (int)i;
		}
	}
	for (unsigned i = 0; i < cfg->nroutes; i++) {
		const struct cfg_route *r = &cfg->routes[i];

		if (r->mode == CFG_MODE_TCP || !r->listeners_set)
			continue;
		for (unsigned l = 0; l < cfg->nlisteners; l++) {
			if (!(r->listener_mask & (1ull << l)) || !cfg->listeners[l].ntcp_routes)
				continue;
			char kp[CFG_KEY_MAX];

			key_index(kp, "routes", i);
			if (c->err && c->errlen)
				snprintf(c->err, c->errlen,
					 "%s:%u: %s.listeners: listener \"%s\" is pure L4 (tcp route \"%s\"): no HTTP route can use it",
					 c->name, r->line, kp, cfg->listeners[l].name,
					 cfg->routes[cfg->listeners[l].tcp_routes[0]].name);
			return -EINVAL;
		}
	}
	return 0;
}

static int parse_root(struct cfg_ctx *c, const yaml_node_t *root)
{
	enum { T_WORKERS, T_PID_FILE, T_ACCESS_LOG, T_DRAIN_TIMEOUT, T_LIMITS, T_TIMEOUTS,
	       T_TRUSTED, T_LISTENERS, T_UPSTREAMS, T_ROUTES, T_CONTROL, T_STATE_DIR, T_GUARD,
	       T_ADMIN, T_TRACING, T_TIERS, T_SPLICE, T_N };
	static const char *const keys[T_N] = {
		"workers", "pid_file",        "access_log", "drain_timeout", "limits",
		"timeouts", "trusted_proxies", "listeners",  "upstreams",     "routes",
		"control", "state_dir",       "guard",     "admin",         "tracing",
		"tiers",   "splice",
	};
	struct config *cfg = c->cfg;
	yaml_node_t *v[T_N], *kn[T_N];

	cfg->timeouts = default_timeouts;
	cfg->drain_ms = 10000;
	cfg->limits.request_line = 8 << 10;
	cfg->limits.header_size = 32 << 10;
	cfg->limits.header_count = 100;

	if (cfg_fields(c, root, "", keys, T_N, v, kn))
		return -EINVAL;
	if (v[T_WORKERS] && parse_workers(c, v[T_WORKERS]))
		return -EINVAL;
	if (v[T_PID_FILE] && parse_pid_file(c, v[T_PID_FILE]))
		return -EINVAL;
	if (dup_str(c, CONTROL_DEFAULT_SOCKET, &cfg->control_socket))
		return -EINVAL;
	if (v[T_CONTROL] && parse_control(c, v[T_CONTROL]))
		return -EINVAL;
	if (v[T_ACCESS_LOG] && parse_access_log(c, v[T_ACCESS_LOG]))
		return -EINVAL;
	if (v[T_DRAIN_TIMEOUT] && get_duration(c, v[T_DRAIN_TIMEOUT], "drain_timeout", &cfg->drain_ms))
		return -EINVAL;
	if (v[T_LIMITS] && parse_limits(c, v[T_LIMITS]))
		return -EINVAL;
	cfg->tracing.traceparent = true;
	if (dup_str(c, "X-Request-ID", &cfg->tracing.request_id_header))
		return -ENOMEM;
	if (v[T_TRACING] && parse_tracing(c, v[T_TRACING], "tracing", &cfg->tracing))
		return -EINVAL;
	if (v[T_ADMIN] && parse_admin(c, kn[T_ADMIN], v[T_ADMIN]))
		return -EINVAL;
	if (v[T_TIMEOUTS] && parse_timeouts(c, v[T_TIMEOUTS], "timeouts", &cfg->timeouts))
		return -EINVAL;
	if (v[T_TRUSTED] && parse_trusted(c, v[T_TRUSTED]))
		return -EINVAL;
	if (dup_str(c, CFG_DEFAULT_STATE_DIR, &cfg->state_dir))
		return -ENOMEM;
	if (v[T_STATE_DIR] && parse_state_dir(c, v[T_STATE_DIR]))
		return -EINVAL;
	if (v[T_GUARD]) {
		if (parse_guard(c, kn[T_GUARD], v[T_GUARD]))
			return -EINVAL;
	} else if (dup_str(c, GUARD_PIN_DIR, &cfg->guard.pin_dir)) {
		return -ENOMEM;
	}
	if (v[T_TIERS] && parse_tiers(c, v[T_TIERS]))
		return -EINVAL;
	if (parse_listeners(c, root, v[T_LISTENERS]))
		return -EINVAL;
	if (v[T_UPSTREAMS] && parse_upstreams(c, v[T_UPSTREAMS]))
		return -EINVAL;
	if (parse_splice(c, kn[T_SPLICE], v[T_SPLICE]))
		return -EINVAL;
	if (parse_routes(c, root, v[T_ROUTES]))
		return -EINVAL;
	return splice_check_routes(c);
}

static void yaml_error(struct cfg_ctx *c, const yaml_parser_t *p, const char *yaml, size_t len)
{
	unsigned line = (unsigned)p->problem_mark.line + 1;
	const char *problem = p->problem ? p->problem : "malformed YAML";

	/* Reader errors (bad encoding) carry a byte offset, not a mark. */
	if (p->error == YAML_READER_ERROR) {
		line = 1;
		for (size_t i = 0; i < p->problem_offset && i < len; i++)
			line += yaml[i] == '\n';
	}
	if (!c->err || !c->errlen)
		return;
	/* `address: *:80` unquoted reads as an alias; say what the operator meant. */
	if (p->context && !strcmp(p->context, "while scanning an alias")) {
		snprintf(c->err, c->errlen,
			 "%s:%u: (yaml): '*' starts a YAML alias; quote the value, e.g. \"*:80\"", c->name,
			 line);
		return;
	}
	if (p->context)
		snprintf(c->err, c->errlen, "%s:%u: (yaml): %s (%s at line %u)", c->name, line, problem,
			 p->context, (unsigned)p->context_mark.line + 1);
	else
		snprintf(c->err, c->errlen, "%s:%u: (yaml): %s", c->name, line, problem);
}

int config_load_string(const char *yaml, size_t len, const char *name, struct config **out,
		       char *err, size_t errlen)
{
	struct cfg_ctx c = { .name = name ? name : "(string)", .err = err, .errlen = errlen };
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	yaml_node_t *root;
	int rc;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (!yaml_parser_initialize(&parser))
		return cfg_oom(&c);
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&parser, &doc)) {
		yaml_error(&c, &parser, yaml, len);
		yaml_parser_delete(&parser);
		return -EINVAL;
	}
	c.doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (!root) {
		rc = cfg_fail(&c, NULL, "(root)", "the file is empty");
		goto out_doc;
	}
	/* A second document would be silently ignored; refuse it instead. */
	if (!yaml_parser_load(&parser, &extra)) {
		yaml_error(&c, &parser, yaml, len);
		rc = -EINVAL;
		goto out_doc;
	}
	if (yaml_document_get_root_node(&extra)) {
		rc = cfg_fail(&c, yaml_document_get_root_node(&extra), "(yaml)",
			      "only one document is allowed in a configuration file");
		yaml_document_delete(&extra);
		goto out_doc;
	}
	yaml_document_delete(&extra);

	c.cfg = calloc(1, sizeof(*c.cfg));
	if (!c.cfg) {
		rc = cfg_oom(&c);
		goto out_doc;
	}
	rc = dup_str(&c, c.name, &c.cfg->path);
	if (!rc)
		rc = parse_root(&c, root);
	if (rc) {
		config_free(c.cfg);
		goto out_doc;
	}
	*out = c.cfg;
out_doc:
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return rc;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	int rc;

	*out = NULL;
	rc = fileio_read(path, CFG_FILE_MAX, 0, &buf, &len, NULL, err, errlen);
	if (rc)
		return rc;
	rc = config_load_string(buf, len, path, out, err, errlen);
	free(buf);
	return rc;
}

static void free_strv(char **v, unsigned n)
{
	for (unsigned i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	free_gate_config(cfg);
	for (unsigned i = 0; cfg->listeners && i < cfg->nlisteners; i++) {
		free(cfg->listeners[i].name);
		free_listener_tls(cfg->listeners[i].tls);
		free(cfg->listeners[i].tcp_routes);
	}
	free(cfg->listeners);
	for (unsigned i = 0; cfg->upstreams && i < cfg->nupstreams; i++) {
		free(cfg->upstreams[i].name);
		free(cfg->upstreams[i].hash_name);
		free(cfg->upstreams[i].servers);
		free(cfg->upstreams[i].health.path);
		free(cfg->upstreams[i].health.method);
		free(cfg->upstreams[i].health.host);
		free(cfg->upstreams[i].health.expect);
		free(cfg->upstreams[i].health.body_contains);
		free_upstream_tls(cfg->upstreams[i].tls);
	}
	free(cfg->upstreams);
	for (unsigned i = 0; cfg->routes && i < cfg->nroutes; i++) {
		struct cfg_route *r = &cfg->routes[i];

		free(r->name);
		free_strv(r->hosts, r->nhosts);
		free_strv(r->sni, r->nsni);
		free(r->path);
		pcre2_code_free(r->path_re);
		free_strv(r->methods, r->nmethods);
		for (unsigned j = 0; r->headers && j < r->nheaders; j++) {
			free(r->headers[j].name);
			free(r->headers[j].value);
		}
		free(r->headers);
		free(r->respond.body);
		free(r->respond.content_type);
		free(r->host_rewrite);
		free(r->tracing.request_id_header);
	}
	free(cfg->routes);
	free(cfg->trusted_proxies);
	free(cfg->access_log);
	free(cfg->pid_file);
	free(cfg->control_socket);
	free(cfg->control_group);
	free(cfg->state_dir);
	free(cfg->splice.pin_dir);
	free_strv(cfg->guard.interfaces, cfg->guard.ninterfaces);
	free(cfg->guard.ports);
	free(cfg->guard.allow);
	free(cfg->guard.deny);
	free(cfg->guard.autoban.statuses);
	free(cfg->guard.pin_dir);
	free(cfg->access_log_opts.template);
	free(cfg->tracing.request_id_header);
	free(cfg->admin.token_file);
	free(cfg->path);
	free(cfg);
}

int config_upstream_index(const struct config *cfg, const char *name)
{
	for (unsigned i = 0; i < cfg->nupstreams; i++)
		if (cfg->upstreams[i].name && !strcmp(cfg->upstreams[i].name, name))
			return (int)i;
	return -1;
}

int config_listener_index(const struct config *cfg, const char *name)
{
	for (unsigned i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].name && !strcmp(cfg->listeners[i].name, name))
			return (int)i;
	return -1;
}
