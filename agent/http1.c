/* agent/http1.c — strict HTTP/1.x head parser and chunked-body framer: table-driven, locale-free, no allocation. */
#include "http1.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* Used when a limit is zero (unset): the same defaults HAProxy and nginx ship with. */
#define H1_DEF_REQUEST_LINE 8192
#define H1_DEF_HEADER_SIZE 65536

/* RFC 9110 tchar. */
static const uint8_t h1_tchar[256] = {
	['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
	['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,
	['~'] = 1,
};

/* RFC 9110 field-vchar: VCHAR and obs-text (UTF-8 in values is common and harmless). */
static const uint8_t h1_fvchar[256] = {
	[0x21 ... 0x7e] = 1, [0x80 ... 0xff] = 1,
};

/* Hex digit value plus one; zero for anything else. */
static const uint8_t h1_hexval1[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7,
	['7'] = 8, ['8'] = 9, ['9'] = 10,
	['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
	['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/*
 * Host name bytes we route on: RFC 3986 unreserved. Sub-delims are legal in a
 * reg-name but no real host has them, and "," or ";" in a Host only serve to
 * confuse whoever splits it next.
 */
static const uint8_t h1_hostchar[256] = {
	['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
	['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1,
};

static inline unsigned char h1_lower(unsigned char c)
{
	return (unsigned char)(c - 'A') < 26 ? c + ('a' - 'A') : c;
}

static inline bool h1_is_digit(unsigned char c)
{
	return (unsigned char)(c - '0') < 10;
}

static inline bool h1_is_ows(unsigned char c)
{
	return c == ' ' || c == '\t';
}

bool http1_casecmp_eq(const char *a, size_t n, const char *b)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (!b[i] || h1_lower((unsigned char)a[i]) != h1_lower((unsigned char)b[i]))
			return false;
	}
	return b[n] == '\0';
}

static bool h1_mem_caseeq(const char *a, const char *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (h1_lower((unsigned char)a[i]) != h1_lower((unsigned char)b[i]))
			return false;
	return true;
}

struct h1_lims {
	size_t line;    /* request line (and chunk-size line) bytes, CRLF excluded */
	size_t head;    /* whole head bytes; also the trailer section */
	uint32_t count; /* header fields, at most HTTP1_MAX_HEADERS */
};

/* Heads are returned as int lengths: no limit may reach past that. */
#define H1_MAX_LIMIT (1u << 30)

static void h1_lims_get(const struct http1_limits *lim, struct h1_lims *l)
{
	l->line = lim && lim->request_line ? lim->request_line : H1_DEF_REQUEST_LINE;
	l->head = lim && lim->header_size ? lim->header_size : H1_DEF_HEADER_SIZE;
	if (l->line > H1_MAX_LIMIT)
		l->line = H1_MAX_LIMIT;
	if (l->head > H1_MAX_LIMIT)
		l->head = H1_MAX_LIMIT;
	l->count = lim && lim->header_count && lim->header_count < HTTP1_MAX_HEADERS ?
		   lim->header_count : HTTP1_MAX_HEADERS;
}

/* Outcomes of scanning the field section, mapped to a status by the caller. */
enum h1_scan {
	H1_SCAN_INCOMPLETE = 0,
	H1_SCAN_BAD = -1,
	H1_SCAN_TOO_LARGE = -2,
};

/*
 * Validates header lines from pos to the empty line and records them.
 * Returns the head length (> 0), or an h1_scan value. Only the first l->head
 * bytes are looked at, so a head that has not ended by then is too large
 * whether or not more bytes are on their way.
 */
static int h1_scan_fields(const char *buf, size_t len, size_t pos, const struct h1_lims *l,
			  struct http1_header *hdrs, uint32_t *nhdrs, const char **why)
{
	size_t end = len < l->head ? len : l->head;
	const unsigned char *b = (const unsigned char *)buf;

	*nhdrs = 0;
	for (;;) {
		size_t name, name_len, vstart, vend;

		if (pos >= end)
			goto incomplete;
		if (b[pos] == '\r') {
			if (pos + 1 >= end)
				goto incomplete;
			if (b[pos + 1] != '\n') {
				*why = "bare CR";
				return H1_SCAN_BAD;
			}
			return (int)(pos + 2);
		}
		if (b[pos] == '\n') {
			*why = "bare LF line end";
			return H1_SCAN_BAD;
		}
		if (h1_is_ows(b[pos])) {
			*why = "obs-fold (line starts with whitespace)";
			return H1_SCAN_BAD;
		}

		name = pos;
		while (pos < end && h1_tchar[b[pos]])
			pos++;
		if (pos >= end)
			goto incomplete;
		if (b[pos] != ':' || pos == name) {
			*why = h1_is_ows(b[pos]) ? "whitespace before colon" : "invalid header name";
			return H1_SCAN_BAD;
		}
		name_len = pos - name;
		pos++;

		while (pos < end && h1_is_ows(b[pos]))
			pos++;
		vstart = vend = pos;
		while (pos < end) {
			if (h1_fvchar[b[pos]])
				vend = ++pos;
			else if (h1_is_ows(b[pos]))
				pos++;
			else
				break;
		}
		if (pos >= end)
			goto incomplete;
		if (b[pos] != '\r') {
			*why = b[pos] == '\n' ? "bare LF line end" : "control character in header value";
			return H1_SCAN_BAD;
		}
		if (pos + 1 >= end)
			goto incomplete;
		if (b[pos + 1] != '\n') {
			*why = "bare CR";
			return H1_SCAN_BAD;
		}
		pos += 2;

		if (*nhdrs >= l->count) {
			*why = "too many header fields";
			return H1_SCAN_TOO_LARGE;
		}
		hdrs[*nhdrs].name = buf + name;
		hdrs[*nhdrs].name_len = (uint32_t)name_len;
		hdrs[*nhdrs].value = buf + vstart;
		hdrs[*nhdrs].value_len = (uint32_t)(vend - vstart);
		(*nhdrs)++;
	}

incomplete:
	if (len > l->head) {
		*why = "head larger than header_size";
		return H1_SCAN_TOO_LARGE;
	}
	return H1_SCAN_INCOMPLETE;
}

/* Calls fn on each element of a comma-separated list, OWS trimmed; stops at the first non-zero. */
typedef int (*h1_elem_fn)(const char *e, size_t n, void *arg);

static int h1_list_each(const char *v, size_t len, h1_elem_fn fn, void *arg)
{
	size_t i = 0;

	for (;;) {
		size_t s, e;
		int rc;

		while (i < len && h1_is_ows((unsigned char)v[i]))
			i++;
		s = i;
		while (i < len && v[i] != ',')
			i++;
		e = i;
		while (e > s && h1_is_ows((unsigned char)v[e - 1]))
			e--;
		rc = fn(v + s, e - s, arg);
		if (rc)
			return rc;
		if (i >= len)
			return 0;
		i++; /* the comma */
	}
}

struct h1_tok_find {
	const char *tok; /* token looked for */
	size_t len;      /* its length */
};

static int h1_tok_match(const char *e, size_t n, void *arg)
{
	const struct h1_tok_find *f = arg;

	return n == f->len && h1_mem_caseeq(e, f->tok, n);
}

bool http1_list_has_token_n(const char *v, size_t len, const char *token, size_t token_len)
{
	struct h1_tok_find f = { .tok = token, .len = token_len };

	if (!v || !token_len)
		return false;
	return h1_list_each(v, len, h1_tok_match, &f) == 1;
}

bool http1_list_has_token(const char *v, size_t len, const char *token)
{
	return http1_list_has_token_n(v, len, token, strlen(token));
}

const struct http1_header *http1_find_header(const struct http1_header *h, uint32_t n,
					     const char *name)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		if (http1_casecmp_eq(h[i].name, h[i].name_len, name))
			return &h[i];
	return NULL;
}

/* Content-Length: every element 1*DIGIT below 2^63 and all equal (RFC 9110 §8.6). */
struct h1_cl {
	uint64_t value; /* the one value every element agreed on */
	bool seen;      /* some Content-Length element was parsed */
};

static int h1_cl_elem(const char *e, size_t n, void *arg)
{
	struct h1_cl *cl = arg;
	uint64_t v = 0;
	size_t i;

	if (!n)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned d = (unsigned char)e[i] - '0';

		if (d > 9 || v > ((uint64_t)INT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (cl->seen && cl->value != v)
		return -1;
	cl->value = v;
	cl->seen = true;
	return 0;
}

/* Transfer-Encoding list state, accumulated over every TE field in order. */
struct h1_te {
	unsigned nchunked; /* "chunked" elements */
	bool last_chunked; /* the latest element is "chunked" */
	bool other;        /* some coding other than chunked */
	bool bad;          /* empty element or not a bare token */
	bool seen;         /* some Transfer-Encoding field was present */
};

static int h1_te_elem(const char *e, size_t n, void *arg)
{
	struct h1_te *te = arg;
	size_t i;

	if (!n) {
		te->bad = true;
		return 0;
	}
	for (i = 0; i < n; i++)
		if (!h1_tchar[(unsigned char)e[i]])
			te->bad = true;
	if (n == 7 && h1_mem_caseeq(e, "chunked", 7)) {
		te->nchunked++;
		te->last_chunked = true;
	} else {
		te->other = true;
		te->last_chunked = false;
	}
	return 0;
}

/* 0 when the list is exactly "chunked", else the status to fail with. */
static int h1_te_verdict(const struct h1_te *te, const char **why)
{
	if (te->bad) {
		*why = "malformed Transfer-Encoding";
		return HTTP1_ERR_BAD_REQUEST;
	}
	if (te->nchunked > 1) {
		*why = "chunked applied more than once";
		return HTTP1_ERR_BAD_REQUEST;
	}
	if (te->nchunked && !te->last_chunked) {
		*why = "chunked is not the final transfer-coding";
		return HTTP1_ERR_BAD_REQUEST;
	}
	if (te->other) {
		*why = "unsupported transfer-coding";
		return HTTP1_ERR_NOT_IMPLEMENTED;
	}
	return 0;
}

/* host [ ":" port ]: reg-name (unreserved / pct-encoded), IPv4, or [IPv6]; port 1-5 digits <= 65535. */
static bool h1_valid_host(const char *h, size_t n)
{
	const unsigned char *b = (const unsigned char *)h;
	size_t i = 0, digits;
	unsigned port = 0;

	if (!n)
		return false;
	if (b[0] == '[') {
		const char *rb = memchr(h, ']', n);
		struct in6_addr a6;
		char tmp[INET6_ADDRSTRLEN];
		size_t alen;

		if (!rb)
			return false;
		alen = (size_t)(rb - h) - 1;
		if (!alen || alen >= sizeof(tmp))
			return false;
		memcpy(tmp, h + 1, alen);
		tmp[alen] = '\0';
		if (inet_pton(AF_INET6, tmp, &a6) != 1)
			return false;
		i = alen + 2;
	} else {
		while (i < n && b[i] != ':') {
			if (h1_hostchar[b[i]])
				i++;
			else if (b[i] == '%' && i + 2 < n && h1_hexval1[b[i + 1]] &&
				 h1_hexval1[b[i + 2]])
				i += 3;
			else
				return false;
		}
		if (!i)
			return false;
	}
	if (i == n)
		return true;
	if (b[i] != ':')
		return false;
	for (i++, digits = 0; i < n; i++, digits++) {
		if (!h1_is_digit(b[i]) || digits >= 5)
			return false;
		port = port * 10 + (b[i] - '0');
	}
	return digits > 0 && port <= 65535;
}

/*
 * The path is routed on as received, so anything a backend could read as a
 * different path is refused: malformed or NUL escapes, and "." / ".." segments
 * in any spelling. "\" and encoded "/" or "\" count as separators here since
 * some backends split on them after decoding.
 */
static bool h1_valid_path(const char *p, size_t n, const char **why)
{
	const unsigned char *b = (const unsigned char *)p;
	unsigned dots = 0;
	bool other = false;
	size_t i = 0;

	for (;;) {
		unsigned char c;
		bool sep;

		if (i >= n) {
			sep = true;
			c = 0;
		} else if (b[i] == '%') {
			if (i + 2 >= n || !h1_hexval1[b[i + 1]] || !h1_hexval1[b[i + 2]]) {
				*why = "malformed percent-escape in path";
				return false;
			}
			c = (unsigned char)(((h1_hexval1[b[i + 1]] - 1) << 4) | (h1_hexval1[b[i + 2]] - 1));
			if (!c) {
				*why = "encoded NUL in path";
				return false;
			}
			i += 3;
			sep = c == '/' || c == '\\';
		} else {
			c = b[i++];
			sep = c == '/' || c == '\\';
		}
		if (sep) {
			if ((dots == 1 || dots == 2) && !other) {
				*why = "dot-segment in path";
				return false;
			}
			if (i >= n && !c)
				return true;
			dots = 0;
			other = false;
		} else if (c == '.') {
			dots++;
		} else {
			other = true;
		}
	}
}

static const char h1_root[] = "/";

/* Splits path and query out of [p, p+n) which starts with '/' or '?' or is empty. */
static bool h1_split_path(struct http1_request *req, const char *p, size_t n, const char **why)
{
	const char *q = memchr(p, '?', n);
	size_t plen = q ? (size_t)(q - p) : n;

	if (plen) {
		req->path = p;
		req->path_len = (uint32_t)plen;
	} else {
		/* "http://host" and "http://host?q" mean the root. */
		req->path = h1_root;
		req->path_len = 1;
	}
	if (q) {
		req->query = q + 1;
		req->query_len = (uint32_t)(n - plen - 1);
	}
	return h1_valid_path(req->path, req->path_len, why);
}

/* Parses "METHOD SP target SP HTTP/1.x" (line_len bytes, CRLF excluded). 0 or a negative status. */
static int h1_request_line(const char *buf, size_t n, struct http1_request *req)
{
	const unsigned char *b = (const unsigned char *)buf;
	const char *t, *v;
	size_t i = 0, tlen;

	while (i < n && h1_tchar[b[i]])
		i++;
	if (!i || i >= n || b[i] != ' ') {
		req->error = "malformed method";
		return HTTP1_ERR_BAD_REQUEST;
	}
	req->method = buf;
	req->method_len = (uint32_t)i;
	t = buf + ++i;
	while (i < n && b[i] != ' ') {
		if (b[i] < 0x21 || b[i] > 0x7e) {
			req->error = "invalid byte in request-target";
			return HTTP1_ERR_BAD_REQUEST;
		}
		if (b[i] == '#') {
			req->error = "fragment in request-target";
			return HTTP1_ERR_BAD_REQUEST;
		}
		i++;
	}
	tlen = (size_t)(buf + i - t);
	if (!tlen || i >= n) {
		req->error = "malformed request line";
		return HTTP1_ERR_BAD_REQUEST;
	}
	req->target = t;
	req->target_len = (uint32_t)tlen;
	v = buf + i + 1;
	if (n - i - 1 != 8 || memcmp(v, "HTTP/", 5) || !h1_is_digit(v[5]) || v[6] != '.' ||
	    !h1_is_digit(v[7])) {
		req->error = "malformed HTTP version";
		return HTTP1_ERR_BAD_REQUEST;
	}
	if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) {
		req->error = "unsupported HTTP version";
		return HTTP1_ERR_VERSION;
	}
	req->version_minor = (uint8_t)(v[7] - '0');

	if (req->method_len == 7 && !memcmp(req->method, "CONNECT", 7)) {
		req->error = "CONNECT not supported";
		return HTTP1_ERR_NOT_IMPLEMENTED;
	}
	req->is_head = req->method_len == 4 && !memcmp(req->method, "HEAD", 4);

	if (t[0] == '/') {
		if (!h1_split_path(req, t, tlen, &req->error))
			return HTTP1_ERR_BAD_REQUEST;
	} else if (tlen == 1 && t[0] == '*') {
		if (req->method_len != 7 || memcmp(req->method, "OPTIONS", 7)) {
			req->error = "asterisk-form only for OPTIONS";
			return HTTP1_ERR_BAD_REQUEST;
		}
		req->path = t;
		req->path_len = 1;
	} else {
		size_t s, a;

		if (tlen > 7 && h1_mem_caseeq(t, "http://", 7))
			s = 7;
		else if (tlen > 8 && h1_mem_caseeq(t, "https://", 8))
			s = 8;
		else {
			req->error = "malformed request-target";
			return HTTP1_ERR_BAD_REQUEST;
		}
		for (a = s; a < tlen && t[a] != '/' && t[a] != '?'; a++)
			;
		if (!h1_valid_host(t + s, a - s)) {
			req->error = "invalid authority in request-target";
			return HTTP1_ERR_BAD_REQUEST;
		}
		req->host = t + s;
		req->host_len = (uint32_t)(a - s);
		if (!h1_split_path(req, t + a, tlen - a, &req->error))
			return HTTP1_ERR_BAD_REQUEST;
	}
	return 0;
}

static int h1_expect_ok(const char *v, size_t n)
{
	return n == 12 && h1_mem_caseeq(v, "100-continue", 12);
}

/* Applies Host, framing, Connection and Expect once the whole head is in. */
static int h1_request_fields(struct http1_request *req, bool absolute)
{
	struct h1_cl cl = { 0 };
	struct h1_te te = { 0 };
	bool has_host = false, conn_close = false, conn_ka = false, expect_bad = false;
	bool expect = false;
	uint32_t i;

	for (i = 0; i < req->nheaders; i++) {
		const struct http1_header *h = &req->headers[i];

		if (http1_casecmp_eq(h->name, h->name_len, "host")) {
			if (has_host) {
				req->error = "duplicate Host";
				return HTTP1_ERR_BAD_REQUEST;
			}
			has_host = true;
			if (!h1_valid_host(h->value, h->value_len)) {
				req->error = "invalid Host";
				return HTTP1_ERR_BAD_REQUEST;
			}
			if (!absolute) {
				req->host = h->value;
				req->host_len = h->value_len;
			}
		} else if (http1_casecmp_eq(h->name, h->name_len, "content-length")) {
			if (h1_list_each(h->value, h->value_len, h1_cl_elem, &cl)) {
				req->error = "invalid or conflicting Content-Length";
				return HTTP1_ERR_BAD_REQUEST;
			}
		} else if (http1_casecmp_eq(h->name, h->name_len, "transfer-encoding")) {
			te.seen = true;
			h1_list_each(h->value, h->value_len, h1_te_elem, &te);
		} else if (http1_casecmp_eq(h->name, h->name_len, "connection")) {
			conn_close |= http1_list_has_token(h->value, h->value_len, "close");
			conn_ka |= http1_list_has_token(h->value, h->value_len, "keep-alive");
		} else if (http1_casecmp_eq(h->name, h->name_len, "expect")) {
			if (h1_expect_ok(h->value, h->value_len))
				expect = true;
			else
				expect_bad = true;
		}
	}

	if (req->version_minor == 1 && !has_host) {
		req->error = "missing Host";
		return HTTP1_ERR_BAD_REQUEST;
	}
	if (te.seen) {
		int rc;

		if (req->version_minor == 0) {
			req->error = "Transfer-Encoding in an HTTP/1.0 request";
			return HTTP1_ERR_BAD_REQUEST;
		}
		if (cl.seen) {
			req->error = "both Transfer-Encoding and Content-Length";
			return HTTP1_ERR_BAD_REQUEST;
		}
		rc = h1_te_verdict(&te, &req->error);
		if (rc)
			return rc;
		req->body = HTTP1_BODY_CHUNKED;
	} else if (cl.seen) {
		req->body = HTTP1_BODY_LENGTH;
		req->content_length = cl.value;
	}
	if (expect_bad) {
		req->error = "unsupported expectation";
		return HTTP1_ERR_EXPECTATION;
	}
	/* RFC 9110 §10.1.1: a 1.0 client cannot be waiting for a 100. */
	req->expect_continue = expect && req->version_minor == 1;
	req->keep_alive = req->version_minor == 1 ? !conn_close : conn_ka && !conn_close;
	return 0;
}

int http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
			struct http1_request *req)
{
	struct h1_lims l;
	const char *lf;
	size_t line_len, win;
	bool absolute;
	int rc;

	h1_lims_get(lim, &l);
	memset(req, 0, offsetof(struct http1_request, headers));

	win = len < l.line + 2 ? len : l.line + 2;
	lf = memchr(buf, '\n', win);
	if (!lf) {
		if (len > l.line + 1 || (len == l.line + 1 && buf[l.line] != '\r')) {
			req->error = "request line longer than request_line";
			return HTTP1_ERR_URI_TOO_LONG;
		}
		if (len > l.head) {
			req->error = "head larger than header_size";
			return HTTP1_ERR_HEADERS_TOO_LARGE;
		}
		return HTTP1_INCOMPLETE;
	}
	line_len = (size_t)(lf - buf);
	if (!line_len || buf[line_len - 1] != '\r') {
		req->error = line_len ? "bare LF line end" : "empty request line";
		return HTTP1_ERR_BAD_REQUEST;
	}
	line_len--;
	if (!line_len) {
		req->error = "empty request line";
		return HTTP1_ERR_BAD_REQUEST;
	}
	if (line_len > l.line) {
		req->error = "request line longer than request_line";
		return HTTP1_ERR_URI_TOO_LONG;
	}
	rc = h1_request_line(buf, line_len, req);
	if (rc)
		return rc;
	absolute = req->target[0] != '/' && req->target[0] != '*';

	rc = h1_scan_fields(buf, len, line_len + 2, &l, req->headers, &req->nheaders, &req->error);
	if (rc == H1_SCAN_BAD)
		return HTTP1_ERR_BAD_REQUEST;
	if (rc == H1_SCAN_TOO_LARGE)
		return HTTP1_ERR_HEADERS_TOO_LARGE;
	if (rc == H1_SCAN_INCOMPLETE)
		return HTTP1_INCOMPLETE;
	req->head_len = (uint32_t)rc;

	rc = h1_request_fields(req, absolute);
	if (rc)
		return rc;
	return (int)req->head_len;
}

/* "HTTP/1.x SP 3DIGIT [SP reason]" (CRLF excluded). */
static bool h1_status_line(const char *buf, size_t n, struct http1_response *resp)
{
	const unsigned char *b = (const unsigned char *)buf;
	size_t i;

	if (n < 12 || memcmp(buf, "HTTP/1.", 7) || (b[7] != '0' && b[7] != '1') || b[8] != ' ' ||
	    !h1_is_digit(b[9]) || !h1_is_digit(b[10]) || !h1_is_digit(b[11])) {
		resp->error = "malformed status line";
		return false;
	}
	resp->version_minor = (uint8_t)(b[7] - '0');
	resp->status = (uint16_t)((b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0'));
	if (resp->status < 100 || resp->status > 599) {
		resp->error = "status code out of range";
		return false;
	}
	if (resp->status == 101) {
		resp->error = "unexpected 101 Switching Protocols";
		return false;
	}
	resp->reason = buf + n;
	if (n == 12)
		return true;
	if (b[12] != ' ') {
		resp->error = "malformed status line";
		return false;
	}
	for (i = 13; i < n; i++) {
		if (!h1_fvchar[b[i]] && !h1_is_ows(b[i])) {
			resp->error = "control character in reason phrase";
			return false;
		}
	}
	resp->reason = buf + 13;
	resp->reason_len = (uint32_t)(n - 13);
	return true;
}

static int h1_response_fields(struct http1_response *resp, bool request_is_head)
{
	struct h1_cl cl = { 0 };
	struct h1_te te = { 0 };
	bool conn_close = false, conn_ka = false;
	uint32_t i;

	for (i = 0; i < resp->nheaders; i++) {
		const struct http1_header *h = &resp->headers[i];

		if (http1_casecmp_eq(h->name, h->name_len, "content-length")) {
			if (h1_list_each(h->value, h->value_len, h1_cl_elem, &cl)) {
				resp->error = "invalid or conflicting Content-Length";
				return HTTP1_ERR_BAD_GATEWAY;
			}
		} else if (http1_casecmp_eq(h->name, h->name_len, "transfer-encoding")) {
			te.seen = true;
			h1_list_each(h->value, h->value_len, h1_te_elem, &te);
		} else if (http1_casecmp_eq(h->name, h->name_len, "connection")) {
			conn_close |= http1_list_has_token(h->value, h->value_len, "close");
			conn_ka |= http1_list_has_token(h->value, h->value_len, "keep-alive");
		}
	}
	/*
	 * Only a lone "chunked" is relayed: another coding would have to be
	 * passed on to the client, and a 1.0 server cannot send chunked at all.
	 */
	if (te.seen && (resp->version_minor == 0 || h1_te_verdict(&te, &resp->error))) {
		if (resp->version_minor == 0)
			resp->error = "Transfer-Encoding in an HTTP/1.0 response";
		return HTTP1_ERR_BAD_GATEWAY;
	}
	resp->keep_alive = resp->version_minor == 1 ? !conn_close : conn_ka && !conn_close;

	if (request_is_head || resp->status < 200 || resp->status == 204 || resp->status == 304) {
		resp->body = HTTP1_BODY_NONE;
	} else if (te.seen) {
		resp->body = HTTP1_BODY_CHUNKED;
		/* RFC 9112 §6.3: TE wins, but the sender is confused: do not reuse it. */
		if (cl.seen)
			resp->keep_alive = false;
	} else if (cl.seen) {
		resp->body = HTTP1_BODY_LENGTH;
		resp->content_length = cl.value;
	} else {
		resp->body = HTTP1_BODY_CLOSE;
		resp->keep_alive = false;
	}
	return 0;
}

int http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
			 bool request_is_head, struct http1_response *resp)
{
	struct h1_lims l;
	const char *lf;
	size_t line_len, win;
	int rc;

	h1_lims_get(lim, &l);
	memset(resp, 0, offsetof(struct http1_response, headers));

	win = len < l.head ? len : l.head;
	lf = memchr(buf, '\n', win);
	if (!lf) {
		if (len > l.head) {
			resp->error = "head larger than header_size";
			return HTTP1_ERR_BAD_GATEWAY;
		}
		return HTTP1_INCOMPLETE;
	}
	line_len = (size_t)(lf - buf);
	if (!line_len || buf[line_len - 1] != '\r') {
		resp->error = "bare LF line end";
		return HTTP1_ERR_BAD_GATEWAY;
	}
	line_len--;
	if (!h1_status_line(buf, line_len, resp))
		return HTTP1_ERR_BAD_GATEWAY;

	rc = h1_scan_fields(buf, len, line_len + 2, &l, resp->headers, &resp->nheaders,
			    &resp->error);
	if (rc < 0)
		return HTTP1_ERR_BAD_GATEWAY;
	if (rc == H1_SCAN_INCOMPLETE)
		return HTTP1_INCOMPLETE;
	resp->head_len = (uint32_t)rc;

	rc = h1_response_fields(resp, request_is_head);
	if (rc)
		return rc;
	return (int)resp->head_len;
}

/* Chunked framer states (struct http1_chunked.state). */
enum {
	CS_SIZE,         /* hex digits of chunk-size; line_len == 0 means none yet */
	CS_EXT_PRE,      /* after size or a quoted ext value: ';', CR or BWS */
	CS_EXT_WS,       /* BWS not followed by CR: only ';' may come next */
	CS_EXT_NAME_PRE, /* after ';': BWS, then the ext name */
	CS_EXT_NAME,     /* ext name tchars */
	CS_EXT_NAME_POST,/* BWS after the name: '=' or ';' */
	CS_EXT_VAL_PRE,  /* after '=': BWS, then token or quoted-string */
	CS_EXT_VAL_TOK,  /* token value */
	CS_EXT_VAL_QS,   /* inside a quoted-string */
	CS_EXT_VAL_QESC, /* after a backslash in a quoted-string */
	CS_SIZE_LF,      /* CR of the size line seen */
	CS_DATA,         /* chunk data; remaining bytes left */
	CS_DATA_CR,      /* CRLF after data */
	CS_DATA_LF,
	CS_TR_START,     /* start of a trailer line or the final CRLF */
	CS_TR_NAME,
	CS_TR_VALUE,
	CS_TR_LF,
	CS_END_LF,       /* CR of the final empty line seen */
	CS_DONE,
};

void http1_chunked_init(struct http1_chunked *c)
{
	memset(c, 0, sizeof(*c));
	c->state = CS_SIZE;
}

/*
 * The framer proper. With dst set, chunk data bytes are also copied to
 * dst + *dlen (dst may be buf itself: data never moves forward).
 */
static ssize_t h1_chunked_run(struct http1_chunked *c, const char *buf, size_t len,
			      const struct http1_limits *lim, char *dst, size_t *dlen)
{
	const unsigned char *b = (const unsigned char *)buf;
	struct h1_lims l;
	size_t i = 0;

	if (c->done)
		return 0;
	h1_lims_get(lim, &l);

	while (i < len) {
		unsigned char ch = b[i];

		if (c->state == CS_DATA) {
			size_t take = len - i;

			if (take > c->remaining)
				take = (size_t)c->remaining;
			if (dst) {
				memmove(dst + *dlen, buf + i, take);
				*dlen += take;
			}
			c->remaining -= take;
			c->data_bytes += take;
			i += take;
			if (!c->remaining)
				c->state = CS_DATA_CR;
			continue;
		}

		i++;
		if (c->state <= CS_EXT_VAL_QESC) {
			if (++c->line_len > l.line + 1)
				return HTTP1_ERR_BAD_REQUEST;
		} else if (c->state >= CS_TR_START && c->state <= CS_END_LF) {
			if (++c->trailer_bytes > l.head)
				return HTTP1_ERR_BAD_REQUEST;
		}

		switch (c->state) {
		case CS_SIZE:
			if (h1_hexval1[ch]) {
				if (c->remaining > (UINT64_MAX >> 4))
					return HTTP1_ERR_BAD_REQUEST;
				c->remaining = (c->remaining << 4) | (uint64_t)(h1_hexval1[ch] - 1);
				break;
			}
			if (c->line_len == 1)
				return HTTP1_ERR_BAD_REQUEST;
			/* The first byte after the digits goes on as an extension byte. */
			__attribute__((fallthrough));
		case CS_EXT_PRE:
			if (ch == ';')
				c->state = CS_EXT_NAME_PRE;
			else if (ch == '\r')
				c->state = CS_SIZE_LF;
			else if (h1_is_ows(ch))
				c->state = CS_EXT_WS;
			else
				return HTTP1_ERR_BAD_REQUEST;
			break;
		case CS_EXT_WS:
			if (ch == ';')
				c->state = CS_EXT_NAME_PRE;
			else if (!h1_is_ows(ch))
				return HTTP1_ERR_BAD_REQUEST;
			break;
		case CS_EXT_NAME_PRE:
			if (h1_tchar[ch])
				c->state = CS_EXT_NAME;
			else if (!h1_is_ows(ch))
				return HTTP1_ERR_BAD_REQUEST;
			break;
		case CS_EXT_NAME:
		case CS_EXT_NAME_POST:
			if (h1_tchar[ch] && c->state == CS_EXT_NAME)
				break;
			if (ch == '=')
				c->state = CS_EXT_VAL_PRE;
			else if (ch == ';')
				c->state = CS_EXT_NAME_PRE;
			else if (ch == '\r' && c->state == CS_EXT_NAME)
				c->state = CS_SIZE_LF;
			else if (h1_is_ows(ch))
				c->state = CS_EXT_NAME_POST;
			else
				return HTTP1_ERR_BAD_REQUEST;
			break;
		case CS_EXT_VAL_PRE:
			if (h1_tchar[ch])
				c->state = CS_EXT_VAL_TOK;
			else if (ch == '"')
				c->state = CS_EXT_VAL_QS;
			else if (!h1_is_ows(ch))
				return HTTP1_ERR_BAD_REQUEST;
			break;
		case CS_EXT_VAL_TOK:
			if (h1_tchar[ch])
				break;
			if (ch == ';')
				c->state = CS_EXT_NAME_PRE;
			else if (ch == '\r')
				c->state = CS_SIZE_LF;
			else if (h1_is_ows(ch))
				c->state = CS_EXT_WS;
			else
				return HTTP1_ERR_BAD_REQUEST;
			break;
		case CS_EXT_VAL_QS:
			if (ch == '"')
				c->state = CS_EXT_PRE;
			else if (ch == '\\')
				c->state = CS_EXT_VAL_QESC;
			else if (!h1_fvchar[ch] && !h1_is_ows(ch))
				return HTTP1_ERR_BAD_REQUEST;
			break;
		case CS_EXT_VAL_QESC:
			if (!h1_fvchar[ch] && !h1_is_ows(ch))
				return HTTP1_ERR_BAD_REQUEST;
			c->state = CS_EXT_VAL_QS;
			break;
		case CS_SIZE_LF:
			if (ch != '\n')
				return HTTP1_ERR_BAD_REQUEST;
			c->line_len = 0;
			c->state = c->remaining ? CS_DATA : CS_TR_START;
			break;
		case CS_DATA_CR:
			if (ch != '\r')
				return HTTP1_ERR_BAD_REQUEST;
			c->state = CS_DATA_LF;
			break;
		case CS_DATA_LF:
			if (ch != '\n')
				return HTTP1_ERR_BAD_REQUEST;
			c->state = CS_SIZE;
			break;
		case CS_TR_START:
			if (ch == '\r')
				c->state = CS_END_LF;
			else if (h1_tchar[ch])
				c->state = CS_TR_NAME;
			else
				return HTTP1_ERR_BAD_REQUEST; /* obs-fold, bare LF, junk */
			break;
		case CS_TR_NAME:
			if (ch == ':')
				c->state = CS_TR_VALUE;
			else if (!h1_tchar[ch])
				return HTTP1_ERR_BAD_REQUEST;
			break;
		case CS_TR_VALUE:
			if (ch == '\r')
				c->state = CS_TR_LF;
			else if (!h1_fvchar[ch] && !h1_is_ows(ch))
				return HTTP1_ERR_BAD_REQUEST;
			break;
		case CS_TR_LF:
			if (ch != '\n')
				return HTTP1_ERR_BAD_REQUEST;
			c->state = CS_TR_START;
			break;
		case CS_END_LF:
			if (ch != '\n')
				return HTTP1_ERR_BAD_REQUEST;
			c->state = CS_DONE;
			c->done = true;
			return (ssize_t)i;
		default:
			return HTTP1_ERR_BAD_REQUEST;
		}
	}
	return (ssize_t)len;
}

ssize_t http1_chunked_scan(struct http1_chunked *c, const char *buf, size_t len,
			   const struct http1_limits *lim)
{
	return h1_chunked_run(c, buf, len, lim, NULL, NULL);
}

ssize_t http1_chunked_decode(struct http1_chunked *c, char *buf, size_t len, size_t *data_len,
			     const struct http1_limits *lim)
{
	*data_len = 0;
	return h1_chunked_run(c, buf, len, lim, buf, data_len);
}

const char *http1_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 102: return "Processing";
	case 103: return "Early Hints";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 203: return "Non-Authoritative Information";
	case 204: return "No Content";
	case 205: return "Reset Content";
	case 206: return "Partial Content";
	case 207: return "Multi-Status";
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 407: return "Proxy Authentication Required";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 425: return "Too Early";
	case 426: return "Upgrade Required";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}
