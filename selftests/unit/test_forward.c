/* selftests/unit/test_forward.c — head rewriting: hop-by-hop removal, X-Forwarded-* and Forwarded, Host, framing, local responses. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>

#include "forward.h"
#include "test.h"

static const struct http1_limits lim = {
	.request_line = 8192, .header_size = 16384, .header_count = 100,
};
static struct http1_request req;
static struct http1_response resp;
static char out[4096];
static struct sockaddr_in sin4;
static struct sockaddr_in6 sin6;

static const struct sockaddr *v4(const char *ip)
{
	memset(&sin4, 0, sizeof(sin4));
	sin4.sin_family = AF_INET;
	sin4.sin_port = htons(40000);
	inet_pton(AF_INET, ip, &sin4.sin_addr);
	return (const struct sockaddr *)&sin4;
}

static const struct sockaddr *v6(const char *ip)
{
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons(40000);
	inet_pton(AF_INET6, ip, &sin6.sin6_addr);
	return (const struct sockaddr *)&sin6;
}

/* Parses s as a request and rewrites it; returns the rewritten length (out is NUL-terminated). */
static ssize_t fwd(const char *s, const struct forward_ctx *ctx)
{
	ssize_t n;

	if (http1_parse_request(s, strlen(s), &lim, &req) <= 0)
		return -1000;
	n = forward_request_head(out, sizeof(out) - 1, &req, ctx);
	out[n > 0 ? n : 0] = '\0';
	return n;
}

static ssize_t fwd_resp(const char *s, bool head, bool keep, uint8_t minor)
{
	ssize_t n;

	if (http1_parse_response(s, strlen(s), &lim, head, &resp) <= 0)
		return -1000;
	n = forward_response_head(out, sizeof(out) - 1, &resp, keep, minor);
	out[n > 0 ? n : 0] = '\0';
	return n;
}

static bool has_line(const char *line)
{
	char want[512];

	snprintf(want, sizeof(want), "\r\n%s\r\n", line);
	return strstr(out, want) != NULL;
}

static int count_of(const char *needle)
{
	const char *p = out;
	int n = 0;

	while ((p = strstr(p, needle))) {
		n++;
		p += strlen(needle);
	}
	return n;
}

/* ---- requests -------------------------------------------------------------- */

static void test_req_basic_untrusted_exact(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true };
	ssize_t n = fwd("GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n", &ctx);

	ASSERT_GT(n, 0);
	ASSERT_STREQ(out, "GET /p?q=1 HTTP/1.1\r\n"
			  "Host: example.com\r\n"
			  "Accept: */*\r\n"
			  "X-Forwarded-For: 10.1.2.3\r\n"
			  "X-Forwarded-Proto: http\r\n"
			  "X-Forwarded-Host: example.com\r\n"
			  "Forwarded: for=10.1.2.3;proto=http;host=example.com\r\n"
			  "\r\n");
	ASSERT_EQ(n, strlen(out));
	/* What we send must itself be a valid request. */
	ASSERT_EQ(http1_parse_request(out, (size_t)n, &lim, &req), n);
}

static void test_req_hop_by_hop_removed(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("POST /u HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, x-other\r\n"
		      "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
		      "Proxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers\r\nUpgrade: h2c\r\n"
		      "X-Secret: 1\r\nX-Other: 2\r\nTrailer: X-Sum\r\nExpect: 100-continue\r\n"
		      "Authorization: Bearer t\r\nContent-Length: 3\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(strcasestr(out, "connection:") == NULL);
	ASSERT_TRUE(strcasestr(out, "keep-alive") == NULL);
	ASSERT_TRUE(strcasestr(out, "proxy-") == NULL);
	ASSERT_TRUE(strcasestr(out, "\r\nTE:") == NULL);
	ASSERT_TRUE(strcasestr(out, "upgrade") == NULL);
	ASSERT_TRUE(strcasestr(out, "x-secret") == NULL);
	ASSERT_TRUE(strcasestr(out, "x-other") == NULL);
	ASSERT_TRUE(strcasestr(out, "expect") == NULL);
	ASSERT_TRUE(has_line("Trailer: X-Sum"));
	ASSERT_TRUE(has_line("Authorization: Bearer t"));
	ASSERT_TRUE(has_line("Content-Length: 3"));
}

static void test_req_connection_cannot_strip_proxy_headers(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true,
				   .request_id = "rid-1" };

	/* Naming our own headers in Connection must not remove them. */
	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For, Forwarded, Host, "
		      "X-Request-ID, Content-Length\r\nContent-Length: 2\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("Host: a"));
	ASSERT_TRUE(has_line("X-Forwarded-For: 10.1.2.3"));
	ASSERT_TRUE(has_line("Forwarded: for=10.1.2.3;proto=http;host=a"));
	ASSERT_TRUE(has_line("X-Request-ID: rid-1"));
	ASSERT_TRUE(has_line("Content-Length: 2"));
}

static void test_req_xff_untrusted_replaced(void)
{
	struct forward_ctx ctx = { .client = v4("192.0.2.9"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n"
		      "Forwarded: for=6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
		      "X-Forwarded-Host: evil\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("X-Forwarded-For: 192.0.2.9"));
	ASSERT_TRUE(has_line("Forwarded: for=192.0.2.9;proto=http;host=a"));
	ASSERT_TRUE(has_line("X-Forwarded-Proto: http"));
	ASSERT_TRUE(has_line("X-Forwarded-Host: a"));
	ASSERT_TRUE(strstr(out, "6.6.6.6") == NULL);
	ASSERT_TRUE(strstr(out, "evil") == NULL);
}

static void test_req_xff_trusted_appended(void)
{
	struct forward_ctx ctx = { .client = v4("10.0.0.2"), .client_trusted = true, .tls = true,
				   .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 1.1.1.1\r\n"
		      "Forwarded: for=1.1.1.1;proto=https\r\nx-forwarded-for: 2.2.2.2, 3.3.3.3\r\n"
		      "X-Forwarded-Proto: https\r\nX-Forwarded-Host: public.example\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.2"));
	ASSERT_TRUE(has_line("Forwarded: for=1.1.1.1;proto=https, for=10.0.0.2;proto=https;host=example.com"));
	/* A trusted peer's proto and host stay as it set them, once. */
	ASSERT_TRUE(has_line("X-Forwarded-Proto: https"));
	ASSERT_TRUE(has_line("X-Forwarded-Host: public.example"));
	ASSERT_EQ(count_of("X-Forwarded-Proto"), 1);
	ASSERT_EQ(count_of("X-Forwarded-Host"), 1);
	ASSERT_EQ(count_of("X-Forwarded-For"), 1);
}

static void test_req_trusted_without_incoming(void)
{
	struct forward_ctx ctx = { .client = v4("10.0.0.2"), .client_trusted = true,
				   .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("X-Forwarded-For: 10.0.0.2"));
	ASSERT_TRUE(has_line("Forwarded: for=10.0.0.2;proto=http;host=a"));
	ASSERT_TRUE(has_line("X-Forwarded-Proto: http"));
	ASSERT_TRUE(has_line("X-Forwarded-Host: a"));
}

static void test_req_ipv6_client(void)
{
	struct forward_ctx ctx = { .client = v6("2001:db8::1"), .upstream_keep_alive = true,
				   .tls = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("X-Forwarded-For: 2001:db8::1"));
	ASSERT_TRUE(has_line("Forwarded: for=\"[2001:db8::1]\";proto=https;host=a"));
	ASSERT_TRUE(has_line("X-Forwarded-Proto: https"));
}

static void test_req_ipv6_trusted_append(void)
{
	struct forward_ctx ctx = { .client = v6("2001:db8::2"), .client_trusted = true,
				   .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 2001:db8::9\r\n"
		      "Forwarded: for=\"[2001:db8::9]\"\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("X-Forwarded-For: 2001:db8::9, 2001:db8::2"));
	ASSERT_TRUE(has_line("Forwarded: for=\"[2001:db8::9]\", for=\"[2001:db8::2]\";proto=http;host=a"));
}

static void test_req_v4_mapped_shown_as_v4(void)
{
	struct forward_ctx ctx = { .client = v6("::ffff:192.0.2.7"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("X-Forwarded-For: 192.0.2.7"));
	ASSERT_TRUE(has_line("Forwarded: for=192.0.2.7;proto=http;host=a"));
}

static void test_req_unknown_client(void)
{
	struct forward_ctx ctx = { .client = NULL, .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(strstr(out, "X-Forwarded-For") == NULL);
	ASSERT_TRUE(has_line("Forwarded: for=unknown;proto=http;host=a"));
}

static void test_req_forwarded_host_with_port_quoted(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("Forwarded: for=10.1.2.3;proto=http;host=\"example.com:8080\""));
	ASSERT_TRUE(has_line("X-Forwarded-Host: example.com:8080"));
}

static void test_req_host_preserved(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nAccept: */*\r\nhOsT: Example.COM\r\n\r\n", &ctx), 0);
	/* Emitted once, first, with its canonical name. */
	ASSERT_EQ(strncmp(out, "GET / HTTP/1.1\r\nHost: Example.COM\r\n", 35), 0);
	ASSERT_TRUE(strcasestr(out + 5, "\r\nhost:") == out + 14);
	ASSERT_EQ(count_of("Example.COM"), 3); /* Host, X-Forwarded-Host, Forwarded */
}

static void test_req_host_rewrite(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true,
				   .host_rewrite = "backend.internal:9000" };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("Host: backend.internal:9000"));
	ASSERT_TRUE(has_line("X-Forwarded-Host: example.com"));
	ASSERT_TRUE(has_line("Forwarded: for=10.1.2.3;proto=http;host=example.com"));
	ASSERT_EQ(count_of("Host: "), 2); /* Host and X-Forwarded-Host */
}

static void test_req_absolute_form_to_origin_form(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET http://a.example:81/x/y?z=1 HTTP/1.1\r\nHost: ignored.example\r\n\r\n",
		      &ctx), 0);
	ASSERT_EQ(strncmp(out, "GET /x/y?z=1 HTTP/1.1\r\nHost: a.example:81\r\n", 43), 0);
	ASSERT_TRUE(strstr(out, "ignored") == NULL);
	ASSERT_GT(fwd("GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n", &ctx), 0);
	ASSERT_EQ(strncmp(out, "GET / HTTP/1.1\r\n", 16), 0);
}

static void test_req_options_asterisk_kept(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &ctx), 0);
	ASSERT_EQ(strncmp(out, "OPTIONS * HTTP/1.1\r\n", 20), 0);
}

static void test_req_framing_canonical(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5, 5\r\nContent-Length: 5\r\n\r\n",
		      &ctx), 0);
	ASSERT_TRUE(has_line("Content-Length: 5"));
	ASSERT_EQ(count_of("ength"), 1);
	ASSERT_GT(fwd("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("Transfer-Encoding: chunked"));
	ASSERT_EQ(count_of("ncoding"), 1);
}

static void test_req_underscore_lookalikes_dropped(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nContent_Length: 9\r\n"
		      "Transfer_Encoding: chunked\r\nX_Real_Thing: kept\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(strstr(out, "6.6.6.6") == NULL);
	ASSERT_TRUE(strstr(out, "Content_Length") == NULL);
	ASSERT_TRUE(strstr(out, "Transfer_Encoding") == NULL);
	ASSERT_TRUE(has_line("X_Real_Thing: kept"));
}

static void test_req_trusted_lookalikes_not_trusted(void)
{
	struct forward_ctx ctx = { .client = v4("10.0.0.2"), .client_trusted = true,
				   .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_Proto: https\r\n"
		      "X_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Host: evil\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(strstr(out, "6.6.6.6") == NULL);
	ASSERT_TRUE(strstr(out, "evil") == NULL);
	ASSERT_TRUE(strstr(out, "X_") == NULL);
	ASSERT_TRUE(has_line("X-Forwarded-Proto: http"));
	ASSERT_TRUE(has_line("X-Forwarded-Host: a"));
	ASSERT_TRUE(has_line("X-Forwarded-For: 10.0.0.2"));
}

static void test_req_control_chars_in_ctx_rejected(void)
{
	struct forward_ctx ctx = { .client = v4("10.0.0.2"), .upstream_keep_alive = true,
				   .host_rewrite = "b\r\nX-Injected: 1" };

	ASSERT_EQ(fwd("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &ctx), -EINVAL);
	ctx.host_rewrite = NULL;
	ctx.request_id = "id\n";
	ASSERT_EQ(fwd("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &ctx), -EINVAL);
}

static void test_req_request_id(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true,
				   .request_id = "0123abcd" };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-chosen\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("X-Request-ID: 0123abcd"));
	ASSERT_TRUE(strstr(out, "client-chosen") == NULL);
	ctx.request_id = NULL;
	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-chosen\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("X-Request-Id: client-chosen"));
}

static void test_req_expect_stripped(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
		      &ctx), 0);
	ASSERT_TRUE(req.expect_continue);
	ASSERT_TRUE(strcasestr(out, "expect") == NULL);
	ASSERT_TRUE(has_line("Content-Length: 10"));
}

static void test_req_http10(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = true };

	ASSERT_GT(fwd("GET /old HTTP/1.0\r\nConnection: keep-alive\r\nUser-Agent: x\r\n\r\n", &ctx), 0);
	ASSERT_EQ(strncmp(out, "GET /old HTTP/1.0\r\nUser-Agent: x\r\n", 34), 0);
	ASSERT_TRUE(has_line("Connection: close"));
	ASSERT_EQ(count_of("Connection"), 1);
	ASSERT_TRUE(strstr(out, "Host:") == NULL);
	ASSERT_TRUE(strstr(out, "X-Forwarded-Host") == NULL);
	ASSERT_TRUE(has_line("Forwarded: for=10.1.2.3;proto=http"));
	/* With a rewrite the upstream still gets a Host. */
	ctx.host_rewrite = "b";
	ASSERT_GT(fwd("GET /old HTTP/1.0\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("Host: b"));
}

static void test_req_upstream_close(void)
{
	struct forward_ctx ctx = { .client = v4("10.1.2.3"), .upstream_keep_alive = false };

	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(has_line("Connection: close"));
	ctx.upstream_keep_alive = true;
	ASSERT_GT(fwd("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(strstr(out, "Connection") == NULL);
}

static void test_req_enospc(void)
{
	struct forward_ctx ctx = { .client = v6("2001:db8::1"), .upstream_keep_alive = false,
				   .request_id = "r", .client_trusted = true };
	const char *s = "POST /x HTTP/1.1\r\nHost: a:1\r\nX-Forwarded-For: 1.1.1.1\r\n"
			"Forwarded: for=1.1.1.1\r\nContent-Length: 12\r\n\r\n";
	char small[512];
	ssize_t full;
	size_t cap;

	full = fwd(s, &ctx);
	ASSERT_GT(full, 0);
	for (cap = 0; cap < (size_t)full; cap++)
		ASSERT_EQ(forward_request_head(small, cap, &req, &ctx), -ENOSPC);
	ASSERT_EQ(forward_request_head(small, (size_t)full, &req, &ctx), full);
	ASSERT_EQ(memcmp(small, out, (size_t)full), 0);
}

/* ---- responses -------------------------------------------------------------- */

static void test_resp_basic_exact(void)
{
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\n"
			   "X-Hop: 1\r\nKeep-Alive: timeout=5\r\nServer: s\r\nUpgrade: h2\r\n"
			   "Proxy-Connection: x\r\n\r\n", false, true, 1), 0);
	ASSERT_STREQ(out, "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 5\r\n\r\n");
}

static void test_resp_reason_default(void)
{
	ASSERT_GT(fwd_resp("HTTP/1.0 404\r\nContent-Length: 0\r\n\r\n", false, true, 1), 0);
	ASSERT_EQ(strncmp(out, "HTTP/1.1 404 Not Found\r\n", 24), 0);
	ASSERT_GT(fwd_resp("HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n", false, true, 1), 0);
	ASSERT_EQ(strncmp(out, "HTTP/1.1 404 Nope\r\n", 19), 0);
}

static void test_resp_client_close(void)
{
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, false, 1), 0);
	ASSERT_TRUE(has_line("Connection: close"));
}

static void test_resp_http10_client_keep_alive(void)
{
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, true, 0), 0);
	ASSERT_TRUE(has_line("Connection: keep-alive"));
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, true, 1), 0);
	ASSERT_TRUE(strstr(out, "Connection") == NULL);
}

static void test_resp_chunked(void)
{
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, true, 1), 0);
	ASSERT_TRUE(has_line("Transfer-Encoding: chunked"));
	ASSERT_EQ(count_of("Transfer-Encoding"), 1);
	/* Never chunked towards a 1.0 client: delimited by the close instead. */
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, true, 0), 0);
	ASSERT_TRUE(strstr(out, "Transfer-Encoding") == NULL);
	ASSERT_TRUE(has_line("Connection: close"));
}

static void test_resp_te_and_cl_canonical(void)
{
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
			   false, true, 1), 0);
	ASSERT_TRUE(strstr(out, "Content-Length") == NULL);
	ASSERT_TRUE(has_line("Transfer-Encoding: chunked"));
}

static void test_resp_close_delimited_forces_close(void)
{
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nServer: s\r\n\r\n", false, true, 1), 0);
	ASSERT_TRUE(has_line("Connection: close"));
	ASSERT_TRUE(strstr(out, "Content-Length") == NULL);
}

static void test_resp_bodiless_keep_framing_headers(void)
{
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", true, true, 1), 0);
	ASSERT_TRUE(has_line("Content-Length: 1234"));
	ASSERT_EQ(count_of("Content-Length"), 1);
	ASSERT_GT(fwd_resp("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\ncontent-length: 77\r\n\r\n",
			   false, true, 1), 0);
	ASSERT_TRUE(has_line("content-length: 77"));
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, true, 1), 0);
	ASSERT_TRUE(has_line("Transfer-Encoding: chunked"));
	ASSERT_GT(fwd_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, true, 0), 0);
	ASSERT_TRUE(strstr(out, "Transfer-Encoding") == NULL);
	ASSERT_GT(fwd_resp("HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n", false, true, 1), 0);
	ASSERT_STREQ(out, "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n");
}

static void test_resp_enospc(void)
{
	char small[256];
	ssize_t full;
	size_t cap;

	full = fwd_resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: s\r\n\r\n", false, false, 0);
	ASSERT_GT(full, 0);
	for (cap = 0; cap < (size_t)full; cap++)
		ASSERT_EQ(forward_response_head(small, cap, &resp, false, 0), -ENOSPC);
	ASSERT_EQ(forward_response_head(small, (size_t)full, &resp, false, 0), full);
}

/* ---- local responses -------------------------------------------------------- */

static void test_local_basic_exact(void)
{
	ssize_t n = forward_local_response(out, sizeof(out), 404, "text/plain", "not found\n", 10,
					   true, false, NULL);

	ASSERT_GT(n, 0);
	out[n] = '\0';
	ASSERT_STREQ(out, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
			  "Content-Length: 10\r\nConnection: keep-alive\r\n\r\nnot found\n");
	ASSERT_EQ(http1_parse_response(out, (size_t)n, &lim, false, &resp), n - 10);
	ASSERT_EQ(resp.content_length, 10);
}

static void test_local_head_only(void)
{
	ssize_t n = forward_local_response(out, sizeof(out), 200, "application/json", "{}", 2,
					   false, true, "Cache-Control: no-store\r\n");

	ASSERT_GT(n, 0);
	out[n] = '\0';
	ASSERT_STREQ(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			  "Content-Length: 2\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n");
}

static void test_local_extra_headers_and_errors(void)
{
	ssize_t n = forward_local_response(out, sizeof(out), 429, "text/plain", "slow down", 9,
					   false, false, "Retry-After: 5\r\nX-Limit: 10\r\n");

	ASSERT_GT(n, 0);
	out[n] = '\0';
	ASSERT_TRUE(strncmp(out, "HTTP/1.1 429 Too Many Requests\r\n", 32) == 0);
	ASSERT_TRUE(has_line("Retry-After: 5"));
	ASSERT_TRUE(has_line("X-Limit: 10"));
	ASSERT_TRUE(strstr(out, "\r\n\r\nslow down") != NULL);
	ASSERT_EQ(forward_local_response(out, sizeof(out), 503, NULL, NULL, 0, false, false,
					 "Retry-After: 5"), -EINVAL);
	ASSERT_EQ(forward_local_response(out, sizeof(out), 42, NULL, NULL, 0, false, false, NULL),
		  -EINVAL);
}

static void test_local_no_content(void)
{
	ssize_t n = forward_local_response(out, sizeof(out), 204, "text/plain", "x", 1, true, false,
					   NULL);

	ASSERT_GT(n, 0);
	out[n] = '\0';
	ASSERT_STREQ(out, "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n");
}

static void test_local_enospc(void)
{
	char small[128];
	ssize_t full;
	size_t cap;

	full = forward_local_response(small, sizeof(small), 502, "text/plain", "bad gateway\n", 12,
				      false, false, NULL);
	ASSERT_GT(full, 0);
	for (cap = 0; cap < (size_t)full; cap++)
		ASSERT_EQ(forward_local_response(small, cap, 502, "text/plain", "bad gateway\n", 12,
						 false, false, NULL), -ENOSPC);
}

/* ---- admission: extra headers, stripped credential, appended response lines ---- */

static void test_req_gate_extra_and_strip_header(void)
{
	struct forward_ctx ctx = { .client = v4("10.0.0.1"), .upstream_keep_alive = true,
				   .extra_headers = "X-Key-Id: abc\r\nX-Key-Tier: free\r\n",
				   .strip_header = "X-API-Key" };

	ASSERT_GT(fwd("GET /a HTTP/1.1\r\nHost: h\r\nx-api-key: ocl_secret\r\n"
		      "X-Key-Id: spoofed\r\nX_Key_Tier: spoofed\r\nAccept: */*\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(strstr(out, "ocl_secret") == NULL);
	ASSERT_TRUE(strstr(out, "spoofed") == NULL);
	ASSERT_TRUE(has_line("X-Key-Id: abc"));
	ASSERT_TRUE(has_line("X-Key-Tier: free"));
	ASSERT_TRUE(has_line("Accept: */*"));
	ASSERT_EQ(count_of("X-Key-Id"), 1);
}

static void test_req_gate_strip_query(void)
{
	struct forward_ctx ctx = { .client = v4("10.0.0.1"), .upstream_keep_alive = true,
				   .strip_query = "api_key" };

	ASSERT_GT(fwd("GET /p?a=1&api_key=SECRET&api_keyx=2&b HTTP/1.1\r\nHost: h\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(!strncmp(out, "GET /p?a=1&api_keyx=2&b HTTP/1.1\r\n", 34));
	ASSERT_GT(fwd("GET /p?api_key=SECRET HTTP/1.1\r\nHost: h\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(!strncmp(out, "GET /p HTTP/1.1\r\n", 17));
	ASSERT_GT(fwd("GET http://h/p?x=1&api_key=S HTTP/1.1\r\nHost: h\r\n\r\n", &ctx), 0);
	ASSERT_TRUE(!strncmp(out, "GET /p?x=1 HTTP/1.1\r\n", 21));
	ASSERT_TRUE(strstr(out, "SECRET") == NULL);
}

static void test_resp_head_append(void)
{
	ssize_t n = fwd_resp("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, true, 1);
	ssize_t m;

	ASSERT_GT(n, 0);
	m = forward_head_append(out, sizeof(out) - 1, (size_t)n, "RateLimit-Limit: 10\r\n");
	ASSERT_EQ(m, n + 21);
	out[m] = '\0';
	ASSERT_TRUE(has_line("RateLimit-Limit: 10"));
	ASSERT_TRUE(!strcmp(out + m - 4, "\r\n\r\n"));
	ASSERT_EQ(forward_head_append(out, (size_t)m + 3, (size_t)m, "A: b\r\n"), -ENOSPC);
	ASSERT_EQ(forward_head_append(out, sizeof(out), (size_t)m, "A: b"), -EINVAL);
	ASSERT_EQ(forward_head_append(out, sizeof(out), (size_t)m - 2, "A: b\r\n"), -EINVAL);
	ASSERT_EQ(forward_head_append(out, sizeof(out), (size_t)m, ""), m);
}

int main(void)
{
	RUN(test_req_basic_untrusted_exact);
	RUN(test_req_hop_by_hop_removed);
	RUN(test_req_connection_cannot_strip_proxy_headers);
	RUN(test_req_xff_untrusted_replaced);
	RUN(test_req_xff_trusted_appended);
	RUN(test_req_trusted_without_incoming);
	RUN(test_req_ipv6_client);
	RUN(test_req_ipv6_trusted_append);
	RUN(test_req_v4_mapped_shown_as_v4);
	RUN(test_req_unknown_client);
	RUN(test_req_forwarded_host_with_port_quoted);
	RUN(test_req_host_preserved);
	RUN(test_req_host_rewrite);
	RUN(test_req_absolute_form_to_origin_form);
	RUN(test_req_options_asterisk_kept);
	RUN(test_req_framing_canonical);
	RUN(test_req_underscore_lookalikes_dropped);
	RUN(test_req_trusted_lookalikes_not_trusted);
	RUN(test_req_control_chars_in_ctx_rejected);
	RUN(test_req_request_id);
	RUN(test_req_expect_stripped);
	RUN(test_req_http10);
	RUN(test_req_upstream_close);
	RUN(test_req_enospc);
	RUN(test_req_gate_extra_and_strip_header);
	RUN(test_req_gate_strip_query);
	RUN(test_resp_head_append);

	RUN(test_resp_basic_exact);
	RUN(test_resp_reason_default);
	RUN(test_resp_client_close);
	RUN(test_resp_http10_client_keep_alive);
	RUN(test_resp_chunked);
	RUN(test_resp_te_and_cl_canonical);
	RUN(test_resp_close_delimited_forces_close);
	RUN(test_resp_bodiless_keep_framing_headers);
	RUN(test_resp_enospc);

	RUN(test_local_basic_exact);
	RUN(test_local_head_only);
	RUN(test_local_extra_headers_and_errors);
	RUN(test_local_no_content);
	RUN(test_local_enospc);
	return test_done();
}
