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

static void *writer_main(void *arg)
{
	struct alog *a = arg;

	for (;;) {
		bool stopping = atomic_load(&a->stop);
		size_t n = 0;

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
			if (!atomic_load(&a->stop))
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
	free(a);
	return err;
}

struct alog_ring *alog_ring(struct alog *a, unsigned i)
{
	return a && i < a->nrings ? &a->rings[i] : NULL;
}

size_t alog_format(char *buf, size_t cap, const struct alog_entry *e)
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
	n = alog_format(line, sizeof(line), e);
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
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
	free(a);
}
