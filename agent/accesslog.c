/* agent/accesslog.c — the access log: per-worker single-producer rings drained by a writer thread. */
#include "accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "http1.h"
#include "jsonw.h"
#include "log.h"
#include "netaddr.h"

/* Single producer (its worker), single consumer (the writer). */
struct alog_ring {
	char *buf;
	size_t size;              /* power of two */
	_Atomic uint64_t head;    /* bytes ever produced */
	_Atomic uint64_t tail;    /* bytes ever consumed */
	_Atomic uint64_t dropped; /* lines dropped because the ring was full */
	struct alog *owner;
} __attribute__((aligned(64)));

struct alog {
	int fd;
	bool own_fd;
	char *path;              /* for reopening; NULL for stdout */
	_Atomic bool reopen;     /* SIGUSR1 asked for a reopen; the writer does it */
	struct alog_opts opts;   /* set before the workers start, then read-only */
	unsigned nrings;
	struct alog_ring *rings;
	pthread_t thread;
	_Atomic bool stop;
	pthread_mutex_t lock; /* only for the writer's sleep; never taken by workers */
	pthread_cond_t cond;
};

static size_t ring_drain(struct alog *a, struct alog_ring *r)
{
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	size_t n = head - tail, done = 0;

	while (done < n) {
		size_t off = (tail + done) & (r->size - 1);
		size_t chunk = n - done;

		if (chunk > r->size - off)
			chunk = r->size - off;
		ssize_t w = write(a->fd, r->buf + off, chunk);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			/* A failing disk must not wedge the ring: skip what could not be written. */
			done = n;
			break;
		}
		done += w;
	}
	atomic_store_explicit(&r->tail, tail + n, memory_order_release);
	return n;
}

/* Writer thread: what was queued goes to the old file, then the path is opened afresh. */
static void writer_reopen(struct alog *a)
{
	int fd;

	for (unsigned i = 0; i < a->nrings; i++)
		ring_drain(a, &a->rings[i]);
	fd = open(a->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		log_err("access log %s: reopen: %s (still writing to the old file)", a->path,
			strerror(errno));
		return;
	}
	close(a->fd);
	a->fd = fd;
	log_notice("access log %s: reopened", a->path);
}

static void *writer_main(void *arg)
{
	struct alog *a = arg;

	for (;;) {
		bool stopping = atomic_load(&a->stop);
		size_t n = 0;

		if (a->own_fd && atomic_exchange(&a->reopen, false))
			writer_reopen(a);
		for (unsigned i = 0; i < a->nrings; i++)
			n += ring_drain(a, &a->rings[i]);
		if (stopping)
			break;
		if (n == 0) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 50 * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_mutex_lock(&a->lock);
			if (!atomic_load(&a->stop) && !atomic_load(&a->reopen))
				pthread_cond_timedwait(&a->cond, &a->lock, &ts);
			pthread_mutex_unlock(&a->lock);
		}
	}
	return NULL;
}

int alog_open(struct alog **out, const char *path, unsigned nrings, size_t ring_bytes)
{
	struct alog *a = calloc(1, sizeof(*a));
	size_t size = 4096;
	int err;

	if (!a)
		return -ENOMEM;
	while (size < ring_bytes)
		size <<= 1;
	if (!strcmp(path, "stdout")) {
		a->fd = STDOUT_FILENO;
	} else {
		a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (a->fd < 0) {
			err = -errno;
			free(a);
			return err;
		}
		a->own_fd = true;
		a->path = strdup(path);
		if (!a->path)
			goto nomem;
	}
	a->nrings = nrings;
	/* The rings are cache-line aligned (no false sharing between workers): calloc is not. */
	a->rings = aligned_alloc(64, nrings * sizeof(*a->rings));
	if (!a->rings)
		goto nomem;
	memset(a->rings, 0, nrings * sizeof(*a->rings));
	for (unsigned i = 0; i < nrings; i++) {
		a->rings[i].buf = malloc(size);
		if (!a->rings[i].buf)
			goto nomem;
		a->rings[i].size = size;
		a->rings[i].owner = a;
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	err = pthread_create(&a->thread, NULL, writer_main, a);
	if (err) {
		err = -err;
		goto fail;
	}
	*out = a;
	return 0;
nomem:
	err = -ENOMEM;
fail:
	if (a->rings)
		for (unsigned i = 0; i < nrings; i++)
			free(a->rings[i].buf);
	free(a->rings);
	if (a->own_fd)
		close(a->fd);
	free(a->path);
	free(a);
	return err;
}

struct alog_ring *alog_ring(struct alog *a, unsigned i)
{
	return a && i < a->nrings ? &a->rings[i] : NULL;
}

static size_t format_json(char *buf, size_t cap, const struct alog_entry *e, bool query)
{
	char addr[NET_ADDR_STRLEN], when[96];
	struct jsonw w;
	struct tm tm;
	time_t sec = e->start_realtime_ns / 1000000000;

	gmtime_r(&sec, &tm);
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (unsigned)(e->start_realtime_ns / 1000000 % 1000));
	jsonw_init(&w, buf, cap - 1);
	jsonw_obj_begin(&w);
	jsonw_str(&w, "time", when);
	jsonw_str(&w, "client", e->client ? net_addr_host(e->client, addr, sizeof(addr)) : NULL);
	jsonw_strn(&w, "method", e->method ? e->method : "", e->method ? e->method_len : 0);
	jsonw_strn(&w, "path", e->path ? e->path : "", e->path ? e->path_len : 0);
	jsonw_u64(&w, "status", e->status);
	jsonw_u64(&w, "bytes_in", e->bytes_in);
	jsonw_u64(&w, "bytes_out", e->bytes_out);
	jsonw_str(&w, "route", e->route);
	jsonw_str(&w, "upstream", e->upstream);
	if (e->upstream_ns >= 0)
		jsonw_ms(&w, "upstream_ms", e->upstream_ns);
	else
		jsonw_null(&w, "upstream_ms");
	jsonw_ms(&w, "total_ms", e->total_ns);
	jsonw_str(&w, "request_id", e->request_id);
	if (e->error)
		jsonw_str(&w, "error", e->error);
	if (e->retries)
		jsonw_u64(&w, "retries", e->retries);
	if (e->query && query)
		jsonw_strn(&w, "query", e->query, e->query_len);
	if (e->listener)
		jsonw_str(&w, "listener", e->listener);
	if (e->trace_id) {
		jsonw_str(&w, "trace_id", e->trace_id);
		jsonw_str(&w, "span_id", e->span_id);
		if (e->parent_span_id)
			jsonw_str(&w, "parent_span_id", e->parent_span_id);
	}
	jsonw_obj_end(&w);
	long n = jsonw_finish(&w);
	if (n < 0)
		return 0;
	buf[n++] = '\n';
	return n;
}

void alog_write(struct alog_ring *r, const struct alog_entry *e)
{
	char line[4096];
	size_t n;

	if (!r)
		return;
	n = alog_format_opts(line, sizeof(line), e, &r->owner->opts);
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	if (n == 0 || r->size - (head - tail) < n) {
		atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
		return;
	}
	size_t off = head & (r->size - 1), first = r->size - off;
	if (first > n)
		first = n;
	memcpy(r->buf + off, line, first);
	memcpy(r->buf, line + first, n - first);
	atomic_store_explicit(&r->head, head + n, memory_order_release);
	/* Past half full, wake the writer early instead of waiting for its tick. */
	if (head + n - tail > r->size / 2)
		pthread_cond_signal(&r->owner->cond);
}

uint64_t alog_dropped(struct alog *a)
{
	uint64_t n = 0;

	for (unsigned i = 0; a && i < a->nrings; i++)
		n += atomic_load(&a->rings[i].dropped);
	return n;
}

void alog_close(struct alog *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	atomic_store(&a->stop, true);
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
	pthread_join(a->thread, NULL);
	if (alog_dropped(a))
		log_warn("access log: %llu lines dropped (writer could not keep up)",
			 (unsigned long long)alog_dropped(a));
	for (unsigned i = 0; i < a->nrings; i++)
		free(a->rings[i].buf);
	free(a->rings);
	if (a->own_fd)
		close(a->fd);
	free(a->path);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
	free(a);
}

/* ---- line formats: json, combined, template ------------------------------------ */

size_t alog_format(char *buf, size_t cap, const struct alog_entry *e)
{
	return format_json(buf, cap, e, false);
}

void alog_set_opts(struct alog *a, const struct alog_opts *o)
{
	if (a)
		a->opts = *o;
}

void alog_reopen(struct alog *a)
{
	if (!a || !a->own_fd)
		return;
	atomic_store(&a->reopen, true);
	pthread_mutex_lock(&a->lock);
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

/* Output cursor for the text formats; the line is dropped when it does not fit. */
struct lout {
	char *p;
	size_t cap; /* room for the text, the newline excluded */
	size_t len;
	bool full;
};

static void lput(struct lout *o, const char *s, size_t n)
{
	if (o->full || n > o->cap - o->len) {
		o->full = true;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void lputs(struct lout *o, const char *s)
{
	lput(o, s, strlen(s));
}

/* Client-chosen bytes: printable ASCII as is, the rest (and the quote and backslash) as \xHH. */
static void lput_safe(struct lout *o, const char *s, size_t n, bool quoted)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch >= 0x7f || ch == '\\' || (quoted && ch == '"')) {
			char esc[4] = { '\\', 'x', hex[ch >> 4], hex[ch & 15] };

			lput(o, esc, 4);
		} else {
			lput(o, s + i, 1);
		}
	}
}

static void lput_u64(struct lout *o, uint64_t v)
{
	char tmp[24];

	lput(o, tmp, (size_t)snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v));
}

/* Seconds with millisecond precision ("0.012"), as nginx writes $request_time. */
static void lput_secs(struct lout *o, uint64_t ns)
{
	char tmp[32];

	lput(o, tmp, (size_t)snprintf(tmp, sizeof(tmp), "%llu.%03llu",
				      (unsigned long long)(ns / 1000000000ull),
				      (unsigned long long)(ns / 1000000 % 1000)));
}

static void lput_time_local(struct lout *o, uint64_t ns)
{
	char tmp[64];
	struct tm tm;
	time_t sec = ns / 1000000000;

	gmtime_r(&sec, &tm);
	lput(o, tmp, strftime(tmp, sizeof(tmp), "%d/%b/%Y:%H:%M:%S +0000", &tm));
}

static void lput_time_iso(struct lout *o, uint64_t ns)
{
	char tmp[64];
	struct tm tm;
	time_t sec = ns / 1000000000;

	gmtime_r(&sec, &tm);
	lput(o, tmp, (size_t)snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
				      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
				      tm.tm_min, tm.tm_sec, (unsigned)(ns / 1000000 % 1000)));
}

static void lput_addr(struct lout *o, const struct sockaddr *sa)
{
	char addr[NET_ADDR_STRLEN];

	lputs(o, sa && net_addr_host(sa, addr, sizeof(addr)) ? addr : "-");
}

/* A string or "-" when absent or empty. */
static void lput_or_dash(struct lout *o, const char *s, size_t n, bool quoted)
{
	if (!s || !n)
		lputs(o, "-");
	else
		lput_safe(o, s, n, quoted);
}

static const struct http1_header *entry_header(const struct alog_entry *e, const char *name)
{
	return e->req ? http1_find_header(e->req->headers, e->req->nheaders, name) : NULL;
}

/* A header value; without the query option a URL's query part is cut (Referer carries tokens too). */
static void lput_header(struct lout *o, const struct alog_entry *e, const char *name, bool url,
			bool query, bool quoted)
{
	const struct http1_header *h = entry_header(e, name);
	size_t n = h ? h->value_len : 0;

	if (h && url && !query) {
		const char *q = memchr(h->value, '?', n);

		if (q)
			n = (size_t)(q - h->value);
	}
	lput_or_dash(o, h ? h->value : NULL, n, quoted);
}

/* "GET /path?query HTTP/1.1" */
static void lput_request_line(struct lout *o, const struct alog_entry *e, bool query, bool quoted)
{
	if (!e->method || !e->method_len) {
		lputs(o, "-");
		return;
	}
	lput_safe(o, e->method, e->method_len, quoted);
	lputs(o, " ");
	lput_or_dash(o, e->path, e->path_len, quoted);
	if (query && e->query) {
		lputs(o, "?");
		lput_safe(o, e->query, e->query_len, quoted);
	}
	if (e->req)
		lputs(o, e->req->version_minor ? " HTTP/1.1" : " HTTP/1.0");
}

/* Apache/nginx "combined": host ident user [time] "request" status bytes "referer" "agent". */
static void format_combined(struct lout *o, const struct alog_entry *e, bool query)
{
	lput_addr(o, e->client);
	lputs(o, " - - [");
	lput_time_local(o, e->start_realtime_ns);
	lputs(o, "] \"");
	lput_request_line(o, e, query, true);
	lputs(o, "\" ");
	lput_u64(o, (uint64_t)e->status);
	lputs(o, " ");
	lput_u64(o, e->bytes_out);
	lputs(o, " \"");
	lput_header(o, e, "referer", true, query, true);
	lputs(o, "\" \"");
	lput_header(o, e, "user-agent", false, query, true);
	lputs(o, "\"");
}

/* Template variables, nginx's names where nginx has one. */
enum tvar {
	TV_TIME_ISO, TV_TIME_LOCAL, TV_REMOTE_ADDR, TV_METHOD, TV_URI, TV_QUERY, TV_REQUEST,
	TV_STATUS, TV_BYTES_RECEIVED, TV_BYTES_SENT, TV_ROUTE, TV_UPSTREAM_ADDR,
	TV_UPSTREAM_TIME, TV_REQUEST_TIME, TV_REQUEST_ID, TV_TRACE_ID, TV_SPAN_ID,
	TV_PARENT_SPAN_ID, TV_LISTENER, TV_ERROR, TV_HTTP, TV_N
};

static const char *const tvar_names[TV_N] = {
	[TV_TIME_ISO] = "time_iso8601",       [TV_TIME_LOCAL] = "time_local",
	[TV_REMOTE_ADDR] = "remote_addr",     [TV_METHOD] = "request_method",
	[TV_URI] = "uri",                     [TV_QUERY] = "query_string",
	[TV_REQUEST] = "request",             [TV_STATUS] = "status",
	[TV_BYTES_RECEIVED] = "bytes_received", [TV_BYTES_SENT] = "bytes_sent",
	[TV_ROUTE] = "route",                 [TV_UPSTREAM_ADDR] = "upstream_addr",
	[TV_UPSTREAM_TIME] = "upstream_response_time", [TV_REQUEST_TIME] = "request_time",
	[TV_REQUEST_ID] = "request_id",       [TV_TRACE_ID] = "trace_id",
	[TV_SPAN_ID] = "span_id",             [TV_PARENT_SPAN_ID] = "parent_span_id",
	[TV_LISTENER] = "listener",           [TV_ERROR] = "error",
	[TV_HTTP] = "http_",
};

/* Headers that carry credentials: never logged unless access_log.sensitive_headers. */
static bool header_is_sensitive(const char *name, size_t n)
{
	static const char *const names[] = { "authorization", "proxy-authorization", "cookie",
					     "set-cookie", "x-api-key", "api-key", "x-auth-token" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (http1_casecmp_eq(name, n, names[i]))
			return true;
	return false;
}

/*
 * One variable at tpl ("$name" or "${name}"). Returns the bytes it spans and
 * sets *var (and for $http_NAME the header name with '_' read as '-'), or 0
 * when it is not a valid variable.
 */
static size_t tvar_scan(const char *tpl, enum tvar *var, char *hname, size_t hcap)
{
	const char *p = tpl + 1, *start;
	bool brace = *p == '{';
	size_t n;

	if (brace)
		p++;
	start = p;
	while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')
		p++;
	n = (size_t)(p - start);
	if (brace && *p++ != '}')
		return 0;
	if (!n)
		return 0;
	for (int v = 0; v < TV_N; v++) {
		size_t vn = strlen(tvar_names[v]);

		if (v == TV_HTTP) {
			if (n <= vn || strncmp(start, "http_", vn) || n - vn >= hcap)
				continue;
			for (size_t i = 0; i < n - vn; i++)
				hname[i] = start[vn + i] == '_' ? '-' : start[vn + i];
			hname[n - vn] = '\0';
		} else if (vn != n || strncmp(start, tvar_names[v], n)) {
			continue;
		}
		*var = (enum tvar)v;
		return (size_t)(p - tpl);
	}
	return 0;
}

int alog_template_check(const char *tpl, bool sensitive, char *why, size_t whylen)
{
	for (const char *p = tpl; *p; p++) {
		char hname[128];
		enum tvar v;
		size_t n;

		if ((unsigned char)*p < 0x20 && *p != '\t') {
			snprintf(why, whylen, "control characters are not allowed (one line per request)");
			return -EINVAL;
		}
		if (*p != '$')
			continue;
		if (p[1] == '$') {
			p++;
			continue;
		}
		n = tvar_scan(p, &v, hname, sizeof(hname));
		if (!n) {
			size_t len = strcspn(p + 1, " \t\"'[]()|,;");

			snprintf(why, whylen, "unknown variable \"$%.*s\" (see docs/logging.md; \"$$\" is a literal $)",
				 (int)(len < 40 ? len : 40), p + 1);
			return -EINVAL;
		}
		if (v == TV_HTTP && !sensitive && header_is_sensitive(hname, strlen(hname))) {
			snprintf(why, whylen,
				 "$http_%.*s would log a credential; set access_log.sensitive_headers: true to allow it",
				 (int)(n - 6), p + 6);
			return -EINVAL;
		}
		p += n - 1;
	}
	return 0;
}

static void format_template(struct lout *o, const struct alog_entry *e, const char *tpl, bool query)
{
	for (const char *p = tpl; *p; p++) {
		char hname[128];
		enum tvar v;
		size_t n;

		if (*p != '$') {
			size_t lit = strcspn(p, "$");

			lput(o, p, lit);
			p += lit - 1;
			continue;
		}
		if (p[1] == '$') {
			lputs(o, "$");
			p++;
			continue;
		}
		n = tvar_scan(p, &v, hname, sizeof(hname));
		if (!n) {
			/* Checked at load; never reached with a checked template. */
			lputs(o, "$");
			continue;
		}
		p += n - 1;
		switch (v) {
		case TV_TIME_ISO: lput_time_iso(o, e->start_realtime_ns); break;
		case TV_TIME_LOCAL: lput_time_local(o, e->start_realtime_ns); break;
		case TV_REMOTE_ADDR: lput_addr(o, e->client); break;
		case TV_METHOD: lput_or_dash(o, e->method, e->method_len, false); break;
		case TV_URI: lput_or_dash(o, e->path, e->path_len, false); break;
		case TV_QUERY:
			lput_or_dash(o, query ? e->query : NULL, e->query_len, false);
			break;
		case TV_REQUEST: lput_request_line(o, e, query, false); break;
		case TV_STATUS: lput_u64(o, (uint64_t)e->status); break;
		case TV_BYTES_RECEIVED: lput_u64(o, e->bytes_in); break;
		case TV_BYTES_SENT: lput_u64(o, e->bytes_out); break;
		case TV_ROUTE: lput_or_dash(o, e->route, e->route ? strlen(e->route) : 0, false); break;
		case TV_UPSTREAM_ADDR:
			lput_or_dash(o, e->upstream, e->upstream ? strlen(e->upstream) : 0, false);
			break;
		case TV_UPSTREAM_TIME:
			if (e->upstream_ns >= 0)
				lput_secs(o, (uint64_t)e->upstream_ns);
			else
				lputs(o, "-");
			break;
		case TV_REQUEST_TIME: lput_secs(o, e->total_ns); break;
		case TV_REQUEST_ID:
			lput_or_dash(o, e->request_id, e->request_id ? strlen(e->request_id) : 0, false);
			break;
		case TV_TRACE_ID:
			lput_or_dash(o, e->trace_id, e->trace_id ? strlen(e->trace_id) : 0, false);
			break;
		case TV_SPAN_ID:
			lput_or_dash(o, e->span_id, e->span_id ? strlen(e->span_id) : 0, false);
			break;
		case TV_PARENT_SPAN_ID:
			lput_or_dash(o, e->parent_span_id,
				     e->parent_span_id ? strlen(e->parent_span_id) : 0, false);
			break;
		case TV_LISTENER:
			lput_or_dash(o, e->listener, e->listener ? strlen(e->listener) : 0, false);
			break;
		case TV_ERROR: lput_or_dash(o, e->error, e->error ? strlen(e->error) : 0, false); break;
		case TV_HTTP:
			lput_header(o, e, hname, http1_casecmp_eq(hname, strlen(hname), "referer"),
				    query, false);
			break;
		case TV_N: break;
		}
	}
}

size_t alog_format_opts(char *buf, size_t cap, const struct alog_entry *e, const struct alog_opts *o)
{
	struct lout out = { .p = buf, .cap = cap ? cap - 1 : 0 };

	if (!o || o->format == CFG_LOG_JSON || (o->format == CFG_LOG_TEMPLATE && !o->template))
		return format_json(buf, cap, e, o && o->query);
	if (o->format == CFG_LOG_COMBINED)
		format_combined(&out, e, o->query);
	else
		format_template(&out, e, o->template, o->query);
	if (out.full || !cap)
		return 0;
	buf[out.len++] = '\n';
	return out.len;
}
