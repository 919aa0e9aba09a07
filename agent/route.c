/* agent/route.c — the router: first route whose listener, host, path, method and header conditions all hold. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "route.h"

#include <pcre2.h>
#include <pthread.h>
#include <string.h>

/* ASCII only: header names and host names are not locale text. */
static inline unsigned char route_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool route_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (route_lower((unsigned char)a[i]) != route_lower((unsigned char)b[i]))
			return false;
	return true;
}

/* Reduces a Host value to the bare name: "[::1]:80" → "::1", "a.b:80" → "a.b", "a.b." → "a.b". */
static void route_host_name(const char **h, size_t *len)
{
	const char *s = *h;
	size_t n = *len;

	if (n && s[0] == '[') {
		const char *end = memchr(s, ']', n);

		if (end) {
			*h = s + 1;
			*len = (size_t)(end - s - 1);
			return;
		}
	} else {
		const char *colon = memchr(s, ':', n);

		/* More than one colon without brackets is not host:port; leave it whole. */
		if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - s) - 1))
			n = (size_t)(colon - s);
	}
	/* "example.com." names the same host as "example.com". */
	if (n > 1 && s[n - 1] == '.')
		n--;
	*len = n;
}

bool route_host_matches(const char *pattern, const char *host, size_t host_len)
{
	size_t plen;

	if (!pattern || !host)
		return false;
	route_host_name(&host, &host_len);
	if (!host_len)
		return false;

	plen = strlen(pattern);
	if (plen >= 2 && pattern[0] == '*' && pattern[1] == '.') {
		/* The suffix keeps its dot, so "example.com" itself cannot match. */
		const char *suffix = pattern + 1;
		size_t slen = plen - 1;

		return host_len > slen &&
		       route_ieq(host + host_len - slen, slen, suffix, slen);
	}
	if (plen >= 2 && pattern[0] == '[' && pattern[plen - 1] == ']') {
		pattern++;
		plen -= 2;
	}
	return route_ieq(host, host_len, pattern, plen);
}

/*
 * One match-data block per thread, reused across requests: it also keeps
 * PCRE2's backtracking frames between calls. The key's destructor frees it
 * when a worker thread exits.
 */
static pthread_once_t route_md_once = PTHREAD_ONCE_INIT;
static pthread_key_t route_md_key;
static bool route_md_key_ok;
static __thread pcre2_match_data *route_md;

static void route_md_free(void *md)
{
	pcre2_match_data_free(md);
}

static void route_md_key_create(void)
{
	route_md_key_ok = pthread_key_create(&route_md_key, route_md_free) == 0;
}

/* One ovector pair is enough: we only ask whether the pattern matches. */
static pcre2_match_data *route_match_data(void)
{
	if (route_md)
		return route_md;
	pthread_once(&route_md_once, route_md_key_create);
	route_md = pcre2_match_data_create(1, NULL);
	if (route_md && route_md_key_ok)
		pthread_setspecific(route_md_key, route_md);
	return route_md;
}

static bool route_path_matches(const struct cfg_route *r, const struct http1_request *req)
{
	const char *path = req->path ? req->path : "";
	size_t len = req->path ? req->path_len : 0;
	size_t plen;
	pcre2_match_data *md;
	int rc;

	switch (r->path_kind) {
	case ROUTE_PATH_ANY:
		return true;
	case ROUTE_PATH_EXACT:
		plen = strlen(r->path);
		return len == plen && !memcmp(path, r->path, len);
	case ROUTE_PATH_PREFIX:
		plen = strlen(r->path);
		return len >= plen && !memcmp(path, r->path, plen);
	case ROUTE_PATH_REGEX:
		if (!r->path_re)
			return false;
		md = route_match_data();
		if (!md)
			return false;
		/* rc == 0 means "matched, ovector too small": still a match. */
		rc = pcre2_match(r->path_re, (PCRE2_SPTR)path, len, 0, 0, md, NULL);
		return rc >= 0;
	}
	return false;
}

static bool route_method_matches(const struct cfg_route *r, const struct http1_request *req)
{
	if (!r->nmethods)
		return true;
	if (!req->method)
		return false;
	for (unsigned i = 0; i < r->nmethods; i++) {
		size_t n = strlen(r->methods[i]);

		if (n == req->method_len && !memcmp(r->methods[i], req->method, n))
			return true;
	}
	return false;
}

static bool route_header_present(const struct cfg_header_match *m,
				 const struct http1_request *req)
{
	size_t nlen = strlen(m->name);
	size_t vlen = m->value ? strlen(m->value) : 0;

	for (uint32_t i = 0; i < req->nheaders && i < HTTP1_MAX_HEADERS; i++) {
		const struct http1_header *h = &req->headers[i];

		if (!route_ieq(h->name, h->name_len, m->name, nlen))
			continue;
		if (!m->value || (h->value_len == vlen && !memcmp(h->value, m->value, vlen)))
			return true;
	}
	return false;
}

static bool route_hosts_match(const struct cfg_route *r, const struct http1_request *req)
{
	if (!r->nhosts)
		return true;
	for (unsigned i = 0; i < r->nhosts; i++)
		if (route_host_matches(r->hosts[i], req->host, req->host_len))
			return true;
	return false;
}

int route_match(const struct config *cfg, unsigned listener, const struct http1_request *req)
{
	if (!cfg || !req)
		return -1;
	for (unsigned i = 0; i < cfg->nroutes; i++) {
		const struct cfg_route *r = &cfg->routes[i];
		unsigned j;

		if (listener >= CFG_MAX_LISTENERS || !((r->listener_mask >> listener) & 1))
			continue;
		if (!route_hosts_match(r, req) || !route_method_matches(r, req))
			continue;
		for (j = 0; j < r->nheaders; j++)
			if (!route_header_present(&r->headers[j], req))
				break;
		if (j < r->nheaders)
			continue;
		/* Last: the regex is the dearest condition. */
		if (!route_path_matches(r, req))
			continue;
		return (int)i;
	}
	return -1;
}
