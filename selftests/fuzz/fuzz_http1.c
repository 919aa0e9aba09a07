/* selftests/fuzz/fuzz_http1.c — libFuzzer driver: request/response heads and the chunked framer, one-shot vs split, plus head rewriting round trips. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "http1.h"

/* Small limits so the 414/431 paths are reached by short inputs. */
static const struct http1_limits lim = { .request_line = 512, .header_size = 2048, .header_count = 32 };
/* Roomy limits for re-parsing what the rewriter produced. */
static const struct http1_limits roomy = { .request_line = 8192, .header_size = 65536, .header_count = 128 };

static struct http1_request req, req2;
static struct http1_response resp, resp2;
static char out[65536];
static char dec[65536];

#define CHECK(c)                                                                      \
	do {                                                                          \
		if (!(c)) {                                                           \
			fprintf(stderr, "fuzz_http1: check failed at line %d: %s\n",  \
				__LINE__, #c);                                        \
			abort();                                                      \
		}                                                                     \
	} while (0)

/* FNV-1a: derives split points and options from the input itself, so seeds stay plain HTTP. */
static uint64_t hash(const uint8_t *d, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ d[i]) * 1099511628211ULL;
	return h;
}

static int in_buf(const char *p, size_t n, const char *buf, size_t len)
{
	return p >= buf && p + n <= buf + len;
}

static void check_headers(const struct http1_header *h, uint32_t n, const char *buf, size_t len)
{
	uint32_t i, j;

	for (i = 0; i < n; i++) {
		CHECK(h[i].name_len > 0);
		CHECK(in_buf(h[i].name, h[i].name_len, buf, len));
		CHECK(in_buf(h[i].value, h[i].value_len, buf, len));
		for (j = 0; j < h[i].value_len; j++)
			CHECK(h[i].value[j] != '\r' && h[i].value[j] != '\n' && h[i].value[j] != '\0');
	}
}

static void fuzz_chunked(const char *buf, size_t len, uint64_t h)
{
	struct http1_chunked one, split;
	ssize_t whole, rc = 0;
	size_t pos = 0, step = 1 + (size_t)(h % 7);
	bool bytewise = len <= 1024 && (h & 1);

	http1_chunked_init(&one);
	whole = http1_chunked_scan(&one, buf, len, &lim);
	CHECK(whole == -400 || (whole >= 0 && (size_t)whole <= len));
	if (whole >= 0 && (size_t)whole < len)
		CHECK(one.done);

	/* Any split of the same bytes reaches the same verdict at the same place. */
	http1_chunked_init(&split);
	while (pos < len) {
		size_t piece = bytewise ? 1 : step;

		if (piece > len - pos)
			piece = len - pos;
		rc = http1_chunked_scan(&split, buf + pos, piece, &lim);
		if (rc < 0)
			break;
		CHECK((size_t)rc <= piece);
		pos += (size_t)rc;
		if (split.done)
			break;
		step = step * 3 % 61 + 1;
	}
	if (whole < 0) {
		CHECK(rc == -400);
	} else {
		CHECK(rc >= 0);
		CHECK(pos == (size_t)whole);
		CHECK(split.done == one.done);
	}

	/* Decoding in place frames exactly like scanning, and keeps only data bytes. */
	if (len <= sizeof(dec)) {
		struct http1_chunked d;
		size_t data = 0;
		ssize_t dr;

		memcpy(dec, buf, len);
		http1_chunked_init(&d);
		dr = http1_chunked_decode(&d, dec, len, &data, &lim);
		CHECK(dr == whole);
		if (dr >= 0)
			CHECK(data <= (size_t)dr && d.done == one.done);
	}
}

static void fuzz_request(const char *buf, size_t len, uint64_t h)
{
	static const char *const ips[] = { "192.0.2.1", "2001:db8::7", "::ffff:198.51.100.3" };
	struct sockaddr_storage ss;
	struct forward_ctx ctx;
	const char *ip = ips[h % 3];
	ssize_t n;
	int r, r2;
	size_t k;

	r = http1_parse_request(buf, len, &lim, &req);
	CHECK(r == 0 || r == -400 || r == -414 || r == -417 || r == -431 || r == -501 ||
	      r == -505 || r > 0);
	if (r < 0)
		CHECK(req.error != NULL);
	if (r <= 0)
		return;

	CHECK((size_t)r <= len && (uint32_t)r == req.head_len && (size_t)r <= lim.header_size);
	CHECK(req.nheaders <= lim.header_count);
	check_headers(req.headers, req.nheaders, buf, len);
	CHECK(in_buf(req.method, req.method_len, buf, len));
	CHECK(in_buf(req.target, req.target_len, buf, len));
	CHECK(req.path_len > 0);
	CHECK(req.path[0] == '/' || (req.path[0] == '*' && req.path_len == 1));
	CHECK(req.version_minor <= 1);
	if (req.version_minor == 1)
		CHECK(req.host != NULL && req.host_len > 0);

	/* The proxy re-parses a growing buffer: every shorter prefix must wait. */
	if (len <= 256) {
		for (k = 0; k < (size_t)r; k++)
			CHECK(http1_parse_request(buf, k, &lim, &req2) == 0);
	} else {
		CHECK(http1_parse_request(buf, (size_t)r - 1, &lim, &req2) == 0);
		CHECK(http1_parse_request(buf, (size_t)r / 2, &lim, &req2) == 0);
		CHECK(http1_parse_request(buf, h % (size_t)r, &lim, &req2) == 0);
	}
	CHECK(http1_parse_request(buf, (size_t)r, &lim, &req2) == r);
	/* As on the wire: the body framer takes over where the head ended. */
	if (req.body == HTTP1_BODY_CHUNKED)
		fuzz_chunked(buf + r, len - (size_t)r, h);

	/* Rewrite it and demand that the result is itself a valid, equivalent request. */
	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &s6->sin6_addr);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &s4->sin_addr);
	}
	memset(&ctx, 0, sizeof(ctx));
	ctx.client = (const struct sockaddr *)&ss;
	ctx.client_trusted = (h >> 8) & 1;
	ctx.tls = (h >> 9) & 1;
	ctx.upstream_keep_alive = (h >> 10) & 1;
	ctx.host_rewrite = (h >> 11) & 1 ? "backend.internal:8080" : NULL;
	ctx.request_id = (h >> 12) & 1 ? "f00dfeed" : NULL;

	n = forward_request_head(out, sizeof(out), &req, &ctx);
	CHECK(n > 0);
	r2 = http1_parse_request(out, (size_t)n, &roomy, &req2);
	if (r2 != n) {
		fprintf(stderr, "rewritten request re-parses as %d (%s):\n%.*s\n", r2,
			req2.error ? req2.error : "", (int)n, out);
		abort();
	}
	CHECK(req2.body == req.body);
	CHECK(req.body != HTTP1_BODY_LENGTH || req2.content_length == req.content_length);
	CHECK(req2.method_len == req.method_len && !memcmp(req2.method, req.method, req.method_len));
	CHECK(req2.path_len == req.path_len && !memcmp(req2.path, req.path, req.path_len));
	CHECK(req2.version_minor == req.version_minor);
	CHECK(!req2.expect_continue);
	CHECK(http1_find_header(req2.headers, req2.nheaders, "forwarded") != NULL);
	for (k = (size_t)n > 64 ? (size_t)n - 64 : 0; k < (size_t)n; k++)
		CHECK(forward_request_head(out, k, &req, &ctx) == -ENOSPC);
}

static void fuzz_response(const char *buf, size_t len, uint64_t h)
{
	bool head = (h >> 16) & 1, keep = (h >> 17) & 1;
	uint8_t minor = (h >> 18) & 1;
	ssize_t n;
	int r, r2;
	size_t k;

	r = http1_parse_response(buf, len, &lim, head, &resp);
	CHECK(r == 0 || r == -502 || r > 0);
	if (r < 0)
		CHECK(resp.error != NULL);
	if (r <= 0)
		return;
	CHECK((size_t)r <= len && (uint32_t)r == resp.head_len);
	CHECK(resp.status >= 100 && resp.status <= 599 && resp.status != 101);
	check_headers(resp.headers, resp.nheaders, buf, len);
	if (resp.body == HTTP1_BODY_CLOSE)
		CHECK(!resp.keep_alive);
	if (head || resp.status < 200 || resp.status == 204 || resp.status == 304)
		CHECK(resp.body == HTTP1_BODY_NONE);

	if (len <= 256) {
		for (k = 0; k < (size_t)r; k++)
			CHECK(http1_parse_response(buf, k, &lim, head, &resp2) == 0);
	} else {
		CHECK(http1_parse_response(buf, (size_t)r - 1, &lim, head, &resp2) == 0);
		CHECK(http1_parse_response(buf, h % (size_t)r, &lim, head, &resp2) == 0);
	}

	if (resp.body == HTTP1_BODY_CHUNKED)
		fuzz_chunked(buf + r, len - (size_t)r, h);

	n = forward_response_head(out, sizeof(out), &resp, keep, minor);
	CHECK(n > 0);
	r2 = http1_parse_response(out, (size_t)n, &roomy, head, &resp2);
	if (r2 != n) {
		fprintf(stderr, "rewritten response re-parses as %d (%s):\n%.*s\n", r2,
			resp2.error ? resp2.error : "", (int)n, out);
		abort();
	}
	CHECK(resp2.status == resp.status);
	if (resp.body == HTTP1_BODY_CHUNKED && !minor)
		CHECK(resp2.body == HTTP1_BODY_CLOSE);
	else
		CHECK(resp2.body == resp.body);
	if (resp.body == HTTP1_BODY_LENGTH)
		CHECK(resp2.content_length == resp.content_length);
	if (!keep)
		CHECK(!resp2.keep_alive);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	uint64_t h = hash(data, size);
	ssize_t n;

	fuzz_request(buf, size, h);
	fuzz_response(buf, size, h);
	fuzz_chunked(buf, size, h);

	n = forward_local_response(out, sizeof(out), 400 + (int)(h % 200), "text/plain", buf, size,
				   h & 1, (h >> 1) & 1, NULL);
	CHECK(n > 0 || (n == -ENOSPC && size > sizeof(out) - 256));
	return 0;
}
