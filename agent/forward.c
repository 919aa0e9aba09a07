/* agent/forward.c — rewrites heads crossing the proxy: hop-by-hop removal, canonical framing, X-Forwarded-*, Forwarded, Host. */
#include "forward.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

/* Output cursor: appends stop at cap and remember that they did. */
struct fw_out {
	char *p;    /* caller's buffer */
	size_t cap; /* its size in bytes */
	size_t len; /* bytes written so far */
	bool full;  /* an append did not fit: the result is -ENOSPC */
};

static void fw_put(struct fw_out *o, const char *s, size_t n)
{
	if (!n)
		return;
	if (o->full || n > o->cap - o->len) {
		o->full = true;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void fw_puts(struct fw_out *o, const char *s)
{
	fw_put(o, s, strlen(s));
}

static void fw_putu64(struct fw_out *o, uint64_t v)
{
	char tmp[20];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	fw_put(o, tmp + i, sizeof(tmp) - i);
}

static void fw_header(struct fw_out *o, const char *name, size_t nlen, const char *v, size_t vlen)
{
	fw_put(o, name, nlen);
	fw_put(o, ": ", 2);
	fw_put(o, v, vlen);
	fw_put(o, "\r\n", 2);
}

static ssize_t fw_result(const struct fw_out *o)
{
	return o->full ? -ENOSPC : (ssize_t)o->len;
}

static inline unsigned char fw_lower(unsigned char c)
{
	return (unsigned char)(c - 'A') < 26 ? c + ('a' - 'A') : c;
}

/*
 * Name match that also treats '_' as '-': CGI-style backends fold both to
 * '_', so "X_Forwarded_For" or "Content_Length" from a client would reach
 * the application as the real thing. Such look-alikes are handled exactly
 * like the header they imitate.
 */
static bool fw_name_is(const struct http1_header *h, const char *name)
{
	uint32_t i;

	for (i = 0; i < h->name_len; i++) {
		unsigned char a = fw_lower((unsigned char)h->name[i]);
		unsigned char b = (unsigned char)name[i];

		if (!b)
			return false;
		if (a == '_')
			a = '-';
		if (a != b)
			return false;
	}
	return name[i] == '\0';
}

/* fw_name_is for a name from config (any case). */
static bool fw_name_is_ci(const struct http1_header *h, const char *name)
{
	char low[80];
	size_t n = strlen(name);

	if (n >= sizeof(low))
		return false;
	for (size_t i = 0; i <= n; i++)
		low[i] = (char)fw_lower((unsigned char)name[i]);
	return fw_name_is(h, low);
}

/* True when a "Connection" field of hdrs names h (RFC 9110 §7.6.1). */
static bool fw_named_by_connection(const struct http1_header *hdrs, uint32_t n,
				   const struct http1_header *h)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (http1_casecmp_eq(hdrs[i].name, hdrs[i].name_len, "connection") &&
		    http1_list_has_token_n(hdrs[i].value, hdrs[i].value_len, h->name, h->name_len))
			return true;
	}
	return false;
}

/* Hop-by-hop in both directions; framing is handled apart. */
static bool fw_is_hop(const struct http1_header *h)
{
	return fw_name_is(h, "connection") || fw_name_is(h, "keep-alive") ||
	       fw_name_is(h, "proxy-connection") || fw_name_is(h, "te") ||
	       fw_name_is(h, "upgrade");
}

static bool fw_is_framing(const struct http1_header *h)
{
	return fw_name_is(h, "transfer-encoding") || fw_name_is(h, "content-length");
}

/* Client address text: "1.2.3.4" or "2001:db8::1" (v4-mapped shown as v4). 0 when unknown. */
static size_t fw_client_ip(const struct sockaddr *sa, char *buf, size_t len, bool *v6)
{
	*v6 = false;
	if (!sa)
		return 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		if (!inet_ntop(AF_INET, &s4->sin_addr, buf, (socklen_t)len))
			return 0;
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			if (!inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], buf, (socklen_t)len))
				return 0;
		} else {
			if (!inet_ntop(AF_INET6, &s6->sin6_addr, buf, (socklen_t)len))
				return 0;
			*v6 = true;
		}
	} else {
		return 0;
	}
	return strlen(buf);
}

/*
 * Appends the values of every field spelled exactly name (any case), joined
 * by ", ". Returns how many. Look-alikes never count as a trusted peer's word.
 */
static unsigned fw_join(struct fw_out *o, const struct http1_request *req, const char *name)
{
	unsigned n = 0;
	uint32_t i;

	for (i = 0; i < req->nheaders; i++) {
		const struct http1_header *h = &req->headers[i];

		if (!http1_casecmp_eq(h->name, h->name_len, name) || !h->value_len)
			continue;
		if (n++)
			fw_put(o, ", ", 2);
		fw_put(o, h->value, h->value_len);
	}
	return n;
}

static bool fw_has(const struct http1_request *req, const char *name)
{
	return http1_find_header(req->headers, req->nheaders, name) != NULL;
}

/* A field CRLF or NUL could end early: values from config or callers must not carry them. */
static bool fw_safe_value(const char *v)
{
	for (; v && *v; v++)
		if ((unsigned char)*v < 0x20 || *v == 0x7f)
			return false;
	return true;
}

/* RFC 7239 value: a token as is, anything else (":" of a port, "[" of IPv6) as a quoted-string. */
static void fw_forwarded_value(struct fw_out *o, const char *v, size_t n)
{
	static const char tchars[] = "!#$%&'*+-.^_`|~";
	bool token = n > 0;
	size_t i;

	for (i = 0; i < n && token; i++) {
		unsigned char c = (unsigned char)v[i];

		token = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
			(c >= 'A' && c <= 'Z') || (c && strchr(tchars, c));
	}
	if (token) {
		fw_put(o, v, n);
		return;
	}
	fw_put(o, "\"", 1);
	for (i = 0; i < n; i++) {
		if (v[i] == '"' || v[i] == '\\')
			fw_put(o, "\\", 1);
		fw_put(o, v + i, 1);
	}
	fw_put(o, "\"", 1);
}

/* True when one of the "Name: value\r\n" lines names h. */
static bool fw_named_in_lines(const struct http1_header *h, const char *lines)
{
	for (const char *p = lines; *p;) {
		const char *colon = strchr(p, ':'), *eol = strstr(p, "\r\n");

		if (!colon || !eol)
			return false;
		if (colon < eol && (size_t)(colon - p) == h->name_len) {
			uint32_t i;

			/* '_' counts as '-', as in fw_name_is: no look-alike slips through. */
			for (i = 0; i < h->name_len; i++) {
				unsigned char a = fw_lower((unsigned char)h->name[i]);
				unsigned char b = fw_lower((unsigned char)p[i]);

				if ((a == '_' ? '-' : a) != (b == '_' ? '-' : b))
					break;
			}
			if (i == h->name_len)
				return true;
		}
		p = eol + 2;
	}
	return false;
}

/* Headers not passed on as received: hop-by-hop, framing, and those the proxy sets itself. */
static bool fw_request_drops(const struct http1_header *h, const struct http1_request *req,
			     const struct forward_ctx *ctx)
{
	if (fw_is_hop(h) || fw_is_framing(h) || fw_name_is(h, "host") ||
	    fw_name_is(h, "proxy-authorization") || fw_name_is(h, "expect") ||
	    fw_name_is(h, "x-forwarded-for") || fw_name_is(h, "forwarded"))
		return true;
	if (fw_name_is(h, "x-forwarded-proto"))
		return !ctx->client_trusted || !http1_casecmp_eq(h->name, h->name_len, "x-forwarded-proto");
	if (fw_name_is(h, "x-forwarded-host"))
		return !ctx->client_trusted || !http1_casecmp_eq(h->name, h->name_len, "x-forwarded-host");
	if (ctx->request_id &&
	    fw_name_is_ci(h, ctx->request_id_header ? ctx->request_id_header : "x-request-id"))
		return true;
	if (fw_name_is(h, "x-request-id"))
		return ctx->request_id != NULL && !ctx->request_id_header;
	if (ctx->strip_header && fw_name_is_ci(h, ctx->strip_header))
		return true;
	/* A client must not supply the identity headers the gate vouches for. */
	if (ctx->extra_headers && fw_named_in_lines(h, ctx->extra_headers))
		return true;
	if (fw_name_is(h, "traceparent"))
		return ctx->traceparent != NULL;
	if (fw_name_is(h, "tracestate"))
		return ctx->drop_tracestate;
	return fw_named_by_connection(req->headers, req->nheaders, h);
}

/* Appends "?query" minus every "name=..." (or bare "name") parameter; no '?' when nothing is left. */
static void fw_query_without(struct fw_out *o, const char *q, size_t qlen, const char *name)
{
	const char *p = q, *end = q + qlen;
	size_t nlen = strlen(name);
	bool first = true;

	while (p <= end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		size_t plen = (size_t)(stop - p);
		bool drop = plen >= nlen && !memcmp(p, name, nlen) && (plen == nlen || p[nlen] == '=');

		if (!drop && plen) {
			fw_put(o, first ? "?" : "&", 1);
			fw_put(o, p, plen);
			first = false;
		}
		if (!amp)
			break;
		p = amp + 1;
	}
}

ssize_t forward_request_head(char *out, size_t cap, const struct http1_request *req,
			     const struct forward_ctx *ctx)
{
	struct fw_out o = { .p = out, .cap = cap };
	const char *proto = ctx->tls ? "https" : "http";
	const char *host = ctx->host_rewrite ? ctx->host_rewrite : req->host;
	size_t host_len = ctx->host_rewrite ? strlen(ctx->host_rewrite) : req->host_len;
	char ip[INET6_ADDRSTRLEN];
	size_t ip_len;
	bool v6, absolute;
	uint32_t i;

	if (!fw_safe_value(ctx->host_rewrite) || !fw_safe_value(ctx->request_id) ||
	    !fw_safe_value(ctx->request_id_header) || !fw_safe_value(ctx->traceparent))
		return -EINVAL;
	if (ctx->client_ip && strlen(ctx->client_ip) < sizeof(ip)) {
		/* The connection formatted it once; inet_ntop per request showed in profiles. */
		ip_len = strlen(ctx->client_ip);
		memcpy(ip, ctx->client_ip, ip_len + 1);
		v6 = memchr(ip, ':', ip_len) != NULL;
	} else {
		ip_len = fw_client_ip(ctx->client, ip, sizeof(ip), &v6);
	}

	fw_put(&o, req->method, req->method_len);
	fw_put(&o, " ", 1);
	absolute = req->target[0] != '/' && req->target[0] != '*';
	if (ctx->strip_query && req->query) {
		/* The credential's parameter is cut out; the rest keeps its order and bytes. */
		fw_put(&o, req->path, req->path_len);
		fw_query_without(&o, req->query, req->query_len, ctx->strip_query);
	} else if (absolute) {
		/* Origin servers need only accept absolute-form from proxies; send origin-form. */
		fw_put(&o, req->path, req->path_len);
		if (req->query) {
			fw_put(&o, "?", 1);
			fw_put(&o, req->query, req->query_len);
		}
	} else {
		fw_put(&o, req->target, req->target_len);
	}
	fw_puts(&o, req->version_minor ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");

	if (host && host_len)
		fw_header(&o, "Host", 4, host, host_len);

	for (i = 0; i < req->nheaders; i++) {
		const struct http1_header *h = &req->headers[i];

		if (!fw_request_drops(h, req, ctx))
			fw_header(&o, h->name, h->name_len, h->value, h->value_len);
	}

	if (req->body == HTTP1_BODY_CHUNKED) {
		fw_puts(&o, "Transfer-Encoding: chunked\r\n");
	} else if (req->body == HTTP1_BODY_LENGTH) {
		fw_puts(&o, "Content-Length: ");
		fw_putu64(&o, req->content_length);
		fw_put(&o, "\r\n", 2);
	}

	if (ip_len || (ctx->client_trusted && fw_has(req, "x-forwarded-for"))) {
		unsigned n = 0;

		fw_puts(&o, "X-Forwarded-For: ");
		if (ctx->client_trusted)
			n = fw_join(&o, req, "x-forwarded-for");
		if (ip_len) {
			if (n)
				fw_put(&o, ", ", 2);
			fw_put(&o, ip, ip_len);
		}
		fw_put(&o, "\r\n", 2);
	}
	if (!ctx->client_trusted || !fw_has(req, "x-forwarded-proto"))
		fw_header(&o, "X-Forwarded-Proto", 17, proto, strlen(proto));
	if ((!ctx->client_trusted || !fw_has(req, "x-forwarded-host")) && req->host_len)
		fw_header(&o, "X-Forwarded-Host", 16, req->host, req->host_len);

	fw_puts(&o, "Forwarded: ");
	if (ctx->client_trusted && fw_join(&o, req, "forwarded"))
		fw_put(&o, ", ", 2);
	fw_puts(&o, "for=");
	if (!ip_len) {
		fw_puts(&o, "unknown");
	} else if (v6) {
		fw_puts(&o, "\"[");
		fw_put(&o, ip, ip_len);
		fw_puts(&o, "]\"");
	} else {
		fw_put(&o, ip, ip_len);
	}
	fw_puts(&o, ";proto=");
	fw_puts(&o, proto);
	if (req->host_len) {
		fw_puts(&o, ";host=");
		fw_forwarded_value(&o, req->host, req->host_len);
	}
	fw_put(&o, "\r\n", 2);

	if (ctx->request_id) {
		const char *rn = ctx->request_id_header ? ctx->request_id_header : "X-Request-ID";

		fw_header(&o, rn, strlen(rn), ctx->request_id, strlen(ctx->request_id));
	}
	if (ctx->traceparent)
		fw_header(&o, "traceparent", 11, ctx->traceparent, strlen(ctx->traceparent));
	if (ctx->extra_headers)
		fw_puts(&o, ctx->extra_headers);
	/* We never hold a 1.0 upstream connection open: it has no reliable keep-alive. */
	if (!ctx->upstream_keep_alive || !req->version_minor)
		fw_puts(&o, "Connection: close\r\n");
	fw_put(&o, "\r\n", 2);
	return fw_result(&o);
}

static void fw_status_line(struct fw_out *o, int status, const char *reason, size_t reason_len)
{
	fw_puts(o, "HTTP/1.1 ");
	fw_putu64(o, (uint64_t)status);
	fw_put(o, " ", 1);
	fw_put(o, reason, reason_len);
	fw_put(o, "\r\n", 2);
}

ssize_t forward_response_head(char *out, size_t cap, const struct http1_response *resp,
			      bool client_keep_alive, uint8_t client_version_minor)
{
	struct fw_out o = { .p = out, .cap = cap };
	const char *reason = resp->reason_len ? resp->reason : http1_reason(resp->status);
	size_t reason_len = resp->reason_len ? resp->reason_len : strlen(reason);
	bool keep = client_keep_alive;
	uint32_t i;

	fw_status_line(&o, resp->status, reason, reason_len);

	for (i = 0; i < resp->nheaders; i++) {
		const struct http1_header *h = &resp->headers[i];

		if (fw_is_hop(h) || fw_named_by_connection(resp->headers, resp->nheaders, h))
			continue;
		if (fw_is_framing(h)) {
			/*
			 * Bodiless responses keep what the server said (a HEAD's
			 * Content-Length describes the GET), but never a
			 * Transfer-Encoding towards a 1.0 client.
			 */
			if (resp->body != HTTP1_BODY_NONE)
				continue;
			if (client_version_minor == 0 && fw_name_is(h, "transfer-encoding"))
				continue;
		}
		fw_header(&o, h->name, h->name_len, h->value, h->value_len);
	}

	switch (resp->body) {
	case HTTP1_BODY_LENGTH:
		fw_puts(&o, "Content-Length: ");
		fw_putu64(&o, resp->content_length);
		fw_put(&o, "\r\n", 2);
		break;
	case HTTP1_BODY_CHUNKED:
		/*
		 * A 1.0 client cannot read chunked (RFC 9112 §6.1): the body has
		 * to be de-chunked by the relay and delimited by the close.
		 */
		if (client_version_minor)
			fw_puts(&o, "Transfer-Encoding: chunked\r\n");
		else
			keep = false;
		break;
	case HTTP1_BODY_CLOSE:
		/* Only the close delimits this body, whatever the caller hoped. */
		keep = false;
		break;
	case HTTP1_BODY_NONE:
		break;
	}

	if (!keep)
		fw_puts(&o, "Connection: close\r\n");
	else if (client_version_minor == 0)
		fw_puts(&o, "Connection: keep-alive\r\n");
	fw_put(&o, "\r\n", 2);
	return fw_result(&o);
}

ssize_t forward_head_append(char *out, size_t cap, size_t len, const char *lines)
{
	size_t n = lines ? strlen(lines) : 0;

	if (len < 4 || memcmp(out + len - 4, "\r\n\r\n", 4))
		return -EINVAL;
	if (!n)
		return (ssize_t)len;
	if (n < 2 || memcmp(lines + n - 2, "\r\n", 2) || !memchr(lines, ':', n))
		return -EINVAL;
	if (n > cap - len)
		return -ENOSPC;
	/* The blank line moves behind the new fields. */
	memcpy(out + len - 2, lines, n);
	memcpy(out + len - 2 + n, "\r\n", 2);
	return (ssize_t)(len + n);
}

ssize_t forward_local_response(char *out, size_t cap, int status, const char *content_type,
			       const char *body, size_t body_len, bool keep_alive, bool head_only,
			       const char *extra_headers)
{
	struct fw_out o = { .p = out, .cap = cap };
	const char *reason = http1_reason(status);
	bool bodiless = status < 200 || status == 204 || status == 304;
	size_t extra_len = extra_headers ? strlen(extra_headers) : 0;

	if (status < 100 || status > 599)
		return -EINVAL;
	/* A caller's header without its CRLF would swallow ours. */
	if (extra_len && (extra_len < 2 || memcmp(extra_headers + extra_len - 2, "\r\n", 2)))
		return -EINVAL;

	fw_status_line(&o, status, reason, strlen(reason));
	if (content_type && !bodiless)
		fw_header(&o, "Content-Type", 12, content_type, strlen(content_type));
	/* RFC 9110 §8.6: none on 1xx or 204; on a 304 it would have to describe a body we lack. */
	if (status >= 200 && status != 204 && status != 304) {
		fw_puts(&o, "Content-Length: ");
		fw_putu64(&o, body_len);
		fw_put(&o, "\r\n", 2);
	}
	fw_puts(&o, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
	fw_put(&o, extra_headers, extra_len);
	fw_put(&o, "\r\n", 2);
	if (!head_only && !bodiless && body_len)
		fw_put(&o, body, body_len);
	return fw_result(&o);
}
