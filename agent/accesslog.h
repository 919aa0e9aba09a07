/* agent/accesslog.h — the access log: workers append lines to their own ring; one thread writes them out. */
#ifndef OPENCLAW_ACCESSLOG_H
#define OPENCLAW_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct alog;
struct alog_ring;
struct http1_request;

/* One finished exchange, as the log sees it. Strings need not be NUL-terminated. */
struct alog_entry {
	uint64_t start_realtime_ns; /* wall clock at the first byte of the request */
	const struct sockaddr *client;
	const char *method;
	size_t method_len;
	const char *path;           /* request target without the query string */
	size_t path_len;
	int status;                 /* status sent to the client, 0 if none was */
	uint64_t bytes_in;          /* request bytes received from the client (head + body) */
	uint64_t bytes_out;         /* response bytes sent to the client (head + body) */
	const char *route;          /* route name, or NULL when none matched */
	const char *upstream;       /* "ip:port" of the server used, or NULL */
	int64_t upstream_ns;        /* request sent → response head received; -1 when none */
	uint64_t total_ns;          /* first request byte → last response byte */
	const char *request_id;
	const char *error;          /* why the proxy failed or rejected it, or NULL */
	unsigned retries;           /* attempts retried (retry.h); logged when not 0 */
	const char *query;          /* query string without '?', or NULL; logged only when configured */
	size_t query_len;
	const char *listener;       /* listener name, or NULL */
	const char *trace_id;       /* W3C trace id (32 hex), or NULL when tracing is off */
	const char *span_id;        /* the proxy's own span id (16 hex), or NULL */
	const char *parent_span_id; /* the caller's span id when a trace came in, or NULL */
	const struct http1_request *req; /* the parsed head, for $http_* and combined; or NULL */
};

/* How lines are written (from config's access_log options). */
struct alog_opts {
	int format;            /* enum cfg_log_format: json, combined, template */
	const char *template;  /* for the template format; checked with alog_template_check */
	bool query;            /* include the query string */
};

/*
 * Starts the writer for path ("stdout" or a file opened O_APPEND, created
 * 0640) with nrings rings of ring_bytes each. Returns 0 or a negative errno.
 */
int alog_open(struct alog **out, const char *path, unsigned nrings, size_t ring_bytes);

/* Ring i, to be used by exactly one thread. */
struct alog_ring *alog_ring(struct alog *a, unsigned i);

/* Formats e as a JSON line and queues it; never blocks: a full ring drops the line (counted). */
void alog_write(struct alog_ring *r, const struct alog_entry *e);

/* Formats e as one JSON line (with the newline) into buf; returns its length or 0 if it did not fit. */
size_t alog_format(char *buf, size_t cap, const struct alog_entry *e);

/* Sets the line format before any worker writes (the default is JSON without the query). */
void alog_set_opts(struct alog *a, const struct alog_opts *o);

/* Formats e per o as one line (with the newline); 0 when it did not fit. */
size_t alog_format_opts(char *buf, size_t cap, const struct alog_entry *e, const struct alog_opts *o);

/*
 * Checks a template: every $variable known, $http_NAME not a credential
 * header (Authorization, Cookie, ...) unless sensitive is set. Returns 0, or
 * -EINVAL with a one-line reason in why.
 */
int alog_template_check(const char *tpl, bool sensitive, char *why, size_t whylen);

/*
 * Asks the writer to reopen the file (logrotate: after the rename, SIGUSR1).
 * Lines queued before the reopen go to the old file, later ones to the new:
 * none is lost. Safe from any thread; a no-op for stdout.
 */
void alog_reopen(struct alog *a);

uint64_t alog_dropped(struct alog *a);

/* Writes out everything queued, stops the writer, closes the file. */
void alog_close(struct alog *a);

#endif
