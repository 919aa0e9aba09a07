/* agent/accesslog.h — the access log: workers append lines to their own ring; one thread writes them out. */
#ifndef OPENCLAW_ACCESSLOG_H
#define OPENCLAW_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct alog;
struct alog_ring;

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

uint64_t alog_dropped(struct alog *a);

/* Writes out everything queued, stops the writer, closes the file. */
void alog_close(struct alog *a);

#endif
