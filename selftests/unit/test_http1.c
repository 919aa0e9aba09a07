/* selftests/unit/test_http1.c — strict HTTP/1.x parser: valid edge cases, every smuggling shape, limits, responses, chunked framer. */
#include <stdbool.h>

#include "http1.h"
#include "test.h"

static const struct http1_limits lim = {
	.request_line = 8192, .header_size = 16384, .header_count = 100,
};
static struct http1_request req;
static struct http1_response resp;

static int parse_n(const char *s, size_t n)
{
	return http1_parse_request(s, n, &lim, &req);
}

static int parse(const char *s)
{
	return parse_n(s, strlen(s));
}

static int parse_resp(const char *s, bool head)
{
	return http1_parse_response(s, strlen(s), &lim, head, &resp);
}

/* ---- valid requests ------------------------------------------------------- */

static void test_simple_get(void)
{
	const char *s = "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";

	ASSERT_EQ(parse(s), strlen(s));
	ASSERT_EQ(req.head_len, strlen(s));
	ASSERT_MEMEQ(req.method, req.method_len, "GET");
	ASSERT_MEMEQ(req.target, req.target_len, "/a/b?x=1&y=2");
	ASSERT_MEMEQ(req.path, req.path_len, "/a/b");
	ASSERT_MEMEQ(req.query, req.query_len, "x=1&y=2");
	ASSERT_MEMEQ(req.host, req.host_len, "example.com");
	ASSERT_EQ(req.version_minor, 1);
	ASSERT_TRUE(req.keep_alive);
	ASSERT_FALSE(req.is_head);
	ASSERT_FALSE(req.expect_continue);
	ASSERT_EQ(req.body, HTTP1_BODY_NONE);
	ASSERT_EQ(req.nheaders, 2);
	ASSERT_MEMEQ(req.headers[1].name, req.headers[1].name_len, "Accept");
	ASSERT_MEMEQ(req.headers[1].value, req.headers[1].value_len, "*/*");
}

static void test_no_query(void)
{
	ASSERT_GT(parse("GET /plain HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	ASSERT_TRUE(req.query == NULL);
	ASSERT_MEMEQ(req.path, req.path_len, "/plain");
}

static void test_empty_query_and_query_not_path_checked(void)
{
	ASSERT_GT(parse("GET /p? HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	ASSERT_TRUE(req.query != NULL);
	ASSERT_EQ(req.query_len, 0);
	/* Dots and escapes after '?' are data, not path. */
	ASSERT_GT(parse("GET /s?q=../..%2f&r=%zz HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	ASSERT_MEMEQ(req.query, req.query_len, "q=../..%2f&r=%zz");
}

static void test_absolute_form(void)
{
	const char *s = "GET http://Example.com:8080/p/q?x=1 HTTP/1.1\r\nHost: other.org\r\n\r\n";

	ASSERT_EQ(parse(s), strlen(s));
	ASSERT_MEMEQ(req.host, req.host_len, "Example.com:8080");
	ASSERT_MEMEQ(req.path, req.path_len, "/p/q");
	ASSERT_MEMEQ(req.query, req.query_len, "x=1");
	ASSERT_MEMEQ(req.target, req.target_len, "http://Example.com:8080/p/q?x=1");
}

static void test_absolute_form_https_no_path(void)
{
	ASSERT_GT(parse("GET HTTPS://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n"), 0);
	ASSERT_MEMEQ(req.host, req.host_len, "a.example");
	ASSERT_MEMEQ(req.path, req.path_len, "/");
	ASSERT_TRUE(req.query == NULL);
	ASSERT_GT(parse("GET http://a.example?k=v HTTP/1.1\r\nHost: a.example\r\n\r\n"), 0);
	ASSERT_MEMEQ(req.path, req.path_len, "/");
	ASSERT_MEMEQ(req.query, req.query_len, "k=v");
}

static void test_absolute_form_ipv6_authority(void)
{
	ASSERT_GT(parse("GET http://[2001:db8::1]:81/x HTTP/1.1\r\nHost: [2001:db8::1]:81\r\n\r\n"), 0);
	ASSERT_MEMEQ(req.host, req.host_len, "[2001:db8::1]:81");
	ASSERT_MEMEQ(req.path, req.path_len, "/x");
}

static void test_options_asterisk(void)
{
	ASSERT_GT(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	ASSERT_MEMEQ(req.path, req.path_len, "*");
	ASSERT_MEMEQ(req.target, req.target_len, "*");
}

static void test_head_flag(void)
{
	ASSERT_GT(parse("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	ASSERT_TRUE(req.is_head);
}

static void test_empty_header_value_and_ows(void)
{
	ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Blank: \t \r\n"
			"X-Ows: \t v a l \t\r\n\r\n"), 0);
	ASSERT_EQ(req.nheaders, 4);
	ASSERT_EQ(req.headers[1].value_len, 0);
	ASSERT_EQ(req.headers[2].value_len, 0);
	ASSERT_MEMEQ(req.headers[3].value, req.headers[3].value_len, "v a l");
}

static void test_obs_text_value_accepted(void)
{
	ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Name: J\xc3\xbcrgen\r\n\r\n"), 0);
	ASSERT_EQ(req.headers[1].value_len, 7);
}

static void test_many_headers(void)
{
	char buf[8192];
	size_t n = 0;
	int i;

	n += (size_t)sprintf(buf + n, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (i = 0; i < 99; i++)
		n += (size_t)sprintf(buf + n, "X-H%d: v%d\r\n", i, i);
	n += (size_t)sprintf(buf + n, "\r\n");
	ASSERT_EQ(parse_n(buf, n), n);
	ASSERT_EQ(req.nheaders, 100);
	ASSERT_MEMEQ(req.headers[99].name, req.headers[99].name_len, "X-H98");
	ASSERT_MEMEQ(req.headers[99].value, req.headers[99].value_len, "v98");
}

static void test_http10_defaults_close(void)
{
	ASSERT_GT(parse("GET / HTTP/1.0\r\n\r\n"), 0);
	ASSERT_EQ(req.version_minor, 0);
	ASSERT_FALSE(req.keep_alive);
	ASSERT_TRUE(req.host == NULL);
}

static void test_http10_keep_alive(void)
{
	ASSERT_GT(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a\r\n\r\n"), 0);
	ASSERT_TRUE(req.keep_alive);
	ASSERT_MEMEQ(req.host, req.host_len, "a");
}

static void test_http11_connection_close(void)
{
	ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n"), 0);
	ASSERT_FALSE(req.keep_alive);
	ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n"
			"Connection: close\r\n\r\n"), 0);
	ASSERT_FALSE(req.keep_alive);
}

static void test_content_length(void)
{
	ASSERT_GT(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n"), 0);
	ASSERT_EQ(req.body, HTTP1_BODY_LENGTH);
	ASSERT_EQ(req.content_length, 42);
	ASSERT_GT(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"), 0);
	ASSERT_EQ(req.body, HTTP1_BODY_LENGTH);
	ASSERT_EQ(req.content_length, 0);
	ASSERT_GT(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n"), 0);
	ASSERT_TRUE(req.content_length == 9223372036854775807ULL);
}

static void test_identical_duplicate_content_length(void)
{
	ASSERT_GT(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"), 0);
	ASSERT_EQ(req.body, HTTP1_BODY_LENGTH);
	ASSERT_EQ(req.content_length, 5);
	ASSERT_GT(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5 ,5\r\n\r\n"), 0);
	ASSERT_EQ(req.content_length, 5);
}

static void test_chunked_case_insensitive(void)
{
	ASSERT_GT(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n"), 0);
	ASSERT_EQ(req.body, HTTP1_BODY_CHUNKED);
}

static void test_expect_continue(void)
{
	ASSERT_GT(parse("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"), 0);
	ASSERT_TRUE(req.expect_continue);
	/* A 1.0 client cannot wait for a 100 (RFC 9110 §10.1.1). */
	ASSERT_GT(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"), 0);
	ASSERT_FALSE(req.expect_continue);
}

static void test_host_forms(void)
{
	ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\r\n"), 0);
	ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: [::1]:443\r\n\r\n"), 0);
	ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n"), 0);
	ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: xn--bcher-kva.example_1~x\r\n\r\n"), 0);
	ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: a:65535\r\n\r\n"), 0);
}

static void test_harmless_dots_accepted(void)
{
	ASSERT_GT(parse("GET /.well-known/x HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	ASSERT_GT(parse("GET /a.b/..c/.../b.. HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	ASSERT_GT(parse("GET /a%2Fb/%41 HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	ASSERT_GT(parse("GET //double//slash/ HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
}

static void test_split_input_returns_zero_until_complete(void)
{
	const char *s = "POST /up?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n"
			"Transfer-Encoding: chunked\r\n";
	const char *ok = "GET /x HTTP/1.1\r\nHost: example.com\r\nX-A: b\r\n\r\n";
	size_t i, n = strlen(ok);

	for (i = 0; i < n; i++)
		ASSERT_EQ(parse_n(ok, i), 0);
	ASSERT_EQ(parse_n(ok, n), n);
	/* Not terminated yet: the framing conflict is judged only on the whole head. */
	ASSERT_EQ(parse(s), 0);
}

static void test_pipelined_second_request(void)
{
	const char *s = "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: b\r\n\r\nGET /thr";
	int n1, n2;

	n1 = parse(s);
	ASSERT_EQ(n1, 30);
	ASSERT_MEMEQ(req.path, req.path_len, "/one");
	n2 = parse(s + n1);
	ASSERT_EQ(n2, 30);
	ASSERT_MEMEQ(req.path, req.path_len, "/two");
	ASSERT_MEMEQ(req.host, req.host_len, "b");
	ASSERT_EQ(parse(s + n1 + n2), 0);
}

static void test_early_error_before_head_ends(void)
{
	/* A malformed line fails at once, without waiting for CRLFCRLF. */
	ASSERT_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n"), -400);
	ASSERT_STREQ(req.error, "whitespace before colon");
}

/* ---- rejected requests: one named subtest per shape ------------------------ */

struct bad_case {
	const char *name;
	const char *raw;
	size_t len;
	int status;
};

#define BAD(n, r, st) { n, r, sizeof(r) - 1, st }
#define H "Host: a\r\n"

static const struct bad_case bad_cases[] = {
	/* framing: CL/TE smuggling */
	BAD("cl_and_te", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
	BAD("te_and_cl", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", -400),
	BAD("cl_different_duplicates", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", -400),
	BAD("cl_different_list", "POST / HTTP/1.1\r\n" H "Content-Length: 5, 6\r\n\r\n", -400),
	BAD("cl_list_empty_element", "POST / HTTP/1.1\r\n" H "Content-Length: 5,,5\r\n\r\n", -400),
	BAD("cl_list_trailing_comma", "POST / HTTP/1.1\r\n" H "Content-Length: 5,\r\n\r\n", -400),
	BAD("cl_plus_sign", "POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\n", -400),
	BAD("cl_negative", "POST / HTTP/1.1\r\n" H "Content-Length: -5\r\n\r\n", -400),
	BAD("cl_space_inside", "POST / HTTP/1.1\r\n" H "Content-Length: 1 2\r\n\r\n", -400),
	BAD("cl_hex", "POST / HTTP/1.1\r\n" H "Content-Length: 0x10\r\n\r\n", -400),
	BAD("cl_empty", "POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", -400),
	BAD("cl_overflow_2_63", "POST / HTTP/1.1\r\n" H "Content-Length: 9223372036854775808\r\n\r\n", -400),
	BAD("cl_overflow_u64", "POST / HTTP/1.1\r\n" H "Content-Length: 99999999999999999999999\r\n\r\n", -400),
	BAD("cl_space_before_colon", "POST / HTTP/1.1\r\n" H "Content-Length : 5\r\n\r\n", -400),
	BAD("te_gzip_chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n", -501),
	BAD("te_identity", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: identity\r\n\r\n", -501),
	BAD("te_gzip_only", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\n", -501),
	BAD("te_chunked_chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, chunked\r\n\r\n", -400),
	BAD("te_chunked_gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, gzip\r\n\r\n", -400),
	BAD("te_two_fields_chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
	BAD("te_two_fields_chunked_then_gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", -400),
	BAD("te_two_fields_gzip_then_chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", -501),
	BAD("te_empty", "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\r\n\r\n", -400),
	BAD("te_empty_element", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: , chunked\r\n\r\n", -400),
	BAD("te_with_parameter", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked;q=1\r\n\r\n", -400),
	BAD("te_misspelled", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunk ed\r\n\r\n", -400),
	BAD("te_vertical_tab", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: \x0b" "chunked\r\n\r\n", -400),
	BAD("te_space_before_colon", "POST / HTTP/1.1\r\n" H "Transfer-Encoding : chunked\r\n\r\n", -400),
	BAD("te_tab_before_colon", "POST / HTTP/1.1\r\n" H "Transfer-Encoding\t: chunked\r\n\r\n", -400),
	BAD("te_obs_fold", "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\r\n chunked\r\n\r\n", -400),
	BAD("te_in_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
	BAD("te_nul_in_value", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\0\r\n\r\n", -400),
	/* line endings and field syntax */
	BAD("bare_lf_request_line", "GET / HTTP/1.1\n" H "\r\n", -400),
	BAD("bare_lf_header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", -400),
	BAD("bare_lf_end_of_head", "GET / HTTP/1.1\r\nHost: a\r\n\n", -400),
	BAD("bare_cr_header", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", -400),
	BAD("bare_cr_in_value", "GET / HTTP/1.1\r\n" H "X: a\rb\r\n\r\n", -400),
	BAD("cr_cr_lf", "GET / HTTP/1.1\r\n" H "X: a\r\r\n\r\n", -400),
	BAD("bare_cr_end_of_head", "GET / HTTP/1.1\r\n" H "\rX\r\n", -400),
	BAD("obs_fold", "GET / HTTP/1.1\r\n" H "X: a\r\n\tb\r\n\r\n", -400),
	BAD("first_header_leading_space", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", -400),
	BAD("space_in_name", "GET / HTTP/1.1\r\n" H "Bad Name: x\r\n\r\n", -400),
	BAD("empty_name", "GET / HTTP/1.1\r\n" H ": x\r\n\r\n", -400),
	BAD("no_colon", "GET / HTTP/1.1\r\n" H "NoColon\r\n\r\n", -400),
	BAD("nul_in_value", "GET / HTTP/1.1\r\n" H "X: a\0b\r\n\r\n", -400),
	BAD("nul_in_name", "GET / HTTP/1.1\r\n" H "X\0: b\r\n\r\n", -400),
	BAD("ctl_in_value", "GET / HTTP/1.1\r\n" H "X: a\x01" "b\r\n\r\n", -400),
	BAD("del_in_value", "GET / HTTP/1.1\r\n" H "X: a\x7f" "b\r\n\r\n", -400),
	BAD("leading_empty_line", "\r\nGET / HTTP/1.1\r\n" H "\r\n", -400),
	/* Host */
	BAD("host_missing_http11", "GET / HTTP/1.1\r\nX: y\r\n\r\n", -400),
	BAD("host_missing_absolute_form", "GET http://a/ HTTP/1.1\r\nX: y\r\n\r\n", -400),
	BAD("host_duplicate_same", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", -400),
	BAD("host_duplicate_different", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", -400),
	BAD("host_empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", -400),
	BAD("host_space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", -400),
	BAD("host_comma", "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", -400),
	BAD("host_userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", -400),
	BAD("host_slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", -400),
	BAD("host_empty_port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", -400),
	BAD("host_port_too_big", "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", -400),
	BAD("host_port_letters", "GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n", -400),
	BAD("host_only_port", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", -400),
	BAD("host_ipv6_unclosed", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", -400),
	BAD("host_ipv6_invalid", "GET / HTTP/1.1\r\nHost: [zz::1]\r\n\r\n", -400),
	BAD("host_ipv6_junk_after", "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", -400),
	BAD("host_bad_percent", "GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", -400),
	/* request line */
	BAD("double_space", "GET  / HTTP/1.1\r\n" H "\r\n", -400),
	BAD("tab_separator", "GET\t/ HTTP/1.1\r\n" H "\r\n", -400),
	BAD("trailing_space", "GET / HTTP/1.1 \r\n" H "\r\n", -400),
	BAD("leading_space", " GET / HTTP/1.1\r\n" H "\r\n", -400),
	BAD("no_version", "GET /\r\n" H "\r\n", -400),
	BAD("lowercase_version", "GET / http/1.1\r\n" H "\r\n", -400),
	BAD("version_two_digits", "GET / HTTP/1.10\r\n" H "\r\n", -400),
	BAD("version_garbage", "GET / HTTP/x.y\r\n" H "\r\n", -400),
	BAD("method_bad_char", "GE@T / HTTP/1.1\r\n" H "\r\n", -400),
	BAD("http_2_0", "GET / HTTP/2.0\r\n" H "\r\n", -505),
	BAD("http_0_9", "GET / HTTP/0.9\r\n" H "\r\n", -505),
	BAD("http_1_2", "GET / HTTP/1.2\r\n" H "\r\n", -505),
	BAD("http_3_1", "GET / HTTP/3.1\r\n" H "\r\n", -505),
	BAD("connect", "CONNECT a:443 HTTP/1.1\r\n" H "\r\n", -501),
	BAD("asterisk_not_options", "GET * HTTP/1.1\r\n" H "\r\n", -400),
	BAD("relative_target", "GET a/b HTTP/1.1\r\n" H "\r\n", -400),
	BAD("ftp_scheme", "GET ftp://a/b HTTP/1.1\r\n" H "\r\n", -400),
	BAD("absolute_empty_authority", "GET http:///x HTTP/1.1\r\n" H "\r\n", -400),
	BAD("absolute_userinfo", "GET http://u:p@a/x HTTP/1.1\r\n" H "\r\n", -400),
	/* target bytes */
	BAD("target_fragment", "GET /a#frag HTTP/1.1\r\n" H "\r\n", -400),
	BAD("target_high_byte", "GET /\xc3\xa9 HTTP/1.1\r\n" H "\r\n", -400),
	BAD("target_del", "GET /a\x7f HTTP/1.1\r\n" H "\r\n", -400),
	BAD("target_nul", "GET /a\0 HTTP/1.1\r\n" H "\r\n", -400),
	BAD("target_cr", "GET /a\rb HTTP/1.1\r\n" H "\r\n", -400),
	/* path ambiguity */
	BAD("dot_segment", "GET /a/./b HTTP/1.1\r\n" H "\r\n", -400),
	BAD("dotdot_segment", "GET /a/../b HTTP/1.1\r\n" H "\r\n", -400),
	BAD("leading_dotdot", "GET /../etc/passwd HTTP/1.1\r\n" H "\r\n", -400),
	BAD("trailing_dot", "GET /a/. HTTP/1.1\r\n" H "\r\n", -400),
	BAD("trailing_dotdot", "GET /a/.. HTTP/1.1\r\n" H "\r\n", -400),
	BAD("trailing_dotdot_before_query", "GET /a/..?x=1 HTTP/1.1\r\n" H "\r\n", -400),
	BAD("encoded_dotdot_lower", "GET /a/%2e%2e/b HTTP/1.1\r\n" H "\r\n", -400),
	BAD("encoded_dotdot_upper", "GET /a/%2E%2E/b HTTP/1.1\r\n" H "\r\n", -400),
	BAD("encoded_dotdot_mixed", "GET /a/.%2E/b HTTP/1.1\r\n" H "\r\n", -400),
	BAD("encoded_dotdot_mixed2", "GET /a/%2e./b HTTP/1.1\r\n" H "\r\n", -400),
	BAD("encoded_dot", "GET /a/%2e/b HTTP/1.1\r\n" H "\r\n", -400),
	BAD("encoded_trailing_dotdot", "GET /a/%2e%2e HTTP/1.1\r\n" H "\r\n", -400),
	BAD("dotdot_encoded_slash", "GET /a/..%2fb HTTP/1.1\r\n" H "\r\n", -400),
	BAD("dotdot_backslash", "GET /a/..\\b HTTP/1.1\r\n" H "\r\n", -400),
	BAD("dotdot_encoded_backslash", "GET /a/..%5Cb HTTP/1.1\r\n" H "\r\n", -400),
	BAD("absolute_form_dotdot", "GET http://a/x/../y HTTP/1.1\r\n" H "\r\n", -400),
	BAD("percent_bad_hex", "GET /a%zz HTTP/1.1\r\n" H "\r\n", -400),
	BAD("percent_truncated_one", "GET /a%2 HTTP/1.1\r\n" H "\r\n", -400),
	BAD("percent_truncated_none", "GET /a% HTTP/1.1\r\n" H "\r\n", -400),
	BAD("percent_truncated_before_query", "GET /a%4?x HTTP/1.1\r\n" H "\r\n", -400),
	BAD("percent_nul", "GET /a%00b HTTP/1.1\r\n" H "\r\n", -400),
	/* expectations */
	BAD("expect_unknown", "POST / HTTP/1.1\r\n" H "Expect: 200-ok\r\nContent-Length: 1\r\n\r\n", -417),
	BAD("expect_continue_with_junk", "POST / HTTP/1.1\r\n" H "Expect: 100-continue, x\r\n\r\n", -417),
};

static void check_bad(const struct bad_case *c)
{
	int rc = parse_n(c->raw, c->len);

	ASSERT_EQ(rc, c->status);
	ASSERT_TRUE(req.error != NULL);
}

/* ---- limits ---------------------------------------------------------------- */

static const struct http1_limits small = {
	.request_line = 32, .header_size = 128, .header_count = 4,
};

static int parse_small(const char *s)
{
	return http1_parse_request(s, strlen(s), &small, &req);
}

static void test_limit_request_line_exact_ok(void)
{
	/* "GET /" + 18 x + " HTTP/1.1" = 32 bytes */
	ASSERT_GT(parse_small("GET /xxxxxxxxxxxxxxxxxx HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	ASSERT_EQ(req.target_len, 19);
}

static void test_limit_request_line_414(void)
{
	ASSERT_EQ(parse_small("GET /xxxxxxxxxxxxxxxxxxx HTTP/1.1\r\nHost: a\r\n\r\n"), -414);
}

static void test_limit_request_line_414_incomplete(void)
{
	/* 33 bytes and no line end yet: already longer than the limit. */
	ASSERT_EQ(parse_small("GET /xxxxxxxxxxxxxxxxxxxxxxxxxxxx"), -414);
	/* 32 bytes + CR could still be a line of exactly the limit. */
	ASSERT_EQ(parse_small("GET /xxxxxxxxxxxxxxxxxx HTTP/1.1\r"), 0);
	ASSERT_EQ(parse_small("GET /xxxxxxxxxxxxxxxxxx HTTP/1.1x"), -414);
}

static void test_limit_header_size_431(void)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: %0100d\r\n\r\n", 0);
	ASSERT_EQ(parse_small(buf), -431);
}

static void test_limit_header_size_431_incomplete(void)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: %0110d", 0);
	ASSERT_GT(strlen(buf), 128);
	ASSERT_EQ(parse_small(buf), -431);
	buf[100] = '\0';
	ASSERT_EQ(parse_small(buf), 0);
}

static void test_limit_header_size_exact_ok(void)
{
	char buf[256];
	int pad;

	/* 16 + 9 + "X: " + pad + CRLF + CRLF = 128 */
	pad = 128 - 16 - 9 - 3 - 2 - 2;
	snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n", pad, 0);
	ASSERT_EQ(strlen(buf), 128);
	ASSERT_EQ(parse_small(buf), 128);
}

static void test_limit_header_count_431(void)
{
	ASSERT_GT(parse_small("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), 0);
	ASSERT_EQ(req.nheaders, 4);
	ASSERT_EQ(parse_small("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"), -431);
}

static void test_limit_header_count_431_incomplete(void)
{
	ASSERT_EQ(parse_small("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n"), -431);
	ASSERT_EQ(parse_small("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n"), 0);
}

static void test_limit_hard_cap(void)
{
	static char buf[8192];
	struct http1_limits big = { .request_line = 100, .header_size = 8192, .header_count = 1000 };
	size_t n = 0;
	int i;

	n += (size_t)sprintf(buf + n, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (i = 0; i < HTTP1_MAX_HEADERS; i++)
		n += (size_t)sprintf(buf + n, "X: %d\r\n", i);
	n += (size_t)sprintf(buf + n, "\r\n");
	ASSERT_EQ(http1_parse_request(buf, n, &big, &req), -431);
}

/* ---- responses --------------------------------------------------------------- */

static void test_resp_length(void)
{
	const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello";

	ASSERT_EQ(parse_resp(s, false), strlen(s) - 5);
	ASSERT_EQ(resp.status, 200);
	ASSERT_EQ(resp.version_minor, 1);
	ASSERT_MEMEQ(resp.reason, resp.reason_len, "OK");
	ASSERT_EQ(resp.body, HTTP1_BODY_LENGTH);
	ASSERT_EQ(resp.content_length, 5);
	ASSERT_TRUE(resp.keep_alive);
	ASSERT_EQ(resp.nheaders, 2);
}

static void test_resp_reason_forms(void)
{
	ASSERT_GT(parse_resp("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", false), 0);
	ASSERT_EQ(resp.status, 404);
	ASSERT_EQ(resp.reason_len, 0);
	ASSERT_GT(parse_resp("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", false), 0);
	ASSERT_EQ(resp.reason_len, 0);
	ASSERT_GT(parse_resp("HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n", false), 0);
	ASSERT_MEMEQ(resp.reason, resp.reason_len, "I'm a teapot");
}

static void test_resp_chunked(void)
{
	ASSERT_GT(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false), 0);
	ASSERT_EQ(resp.body, HTTP1_BODY_CHUNKED);
	ASSERT_TRUE(resp.keep_alive);
}

static void test_resp_te_and_cl_te_wins_no_reuse(void)
{
	ASSERT_GT(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
			     false), 0);
	ASSERT_EQ(resp.body, HTTP1_BODY_CHUNKED);
	ASSERT_FALSE(resp.keep_alive);
}

static void test_resp_close_delimited(void)
{
	ASSERT_GT(parse_resp("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", false), 0);
	ASSERT_EQ(resp.body, HTTP1_BODY_CLOSE);
	ASSERT_FALSE(resp.keep_alive);
}

static void test_resp_bodiless(void)
{
	ASSERT_GT(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true), 0);
	ASSERT_EQ(resp.body, HTTP1_BODY_NONE);
	ASSERT_TRUE(resp.keep_alive);
	ASSERT_GT(parse_resp("HTTP/1.1 204 No Content\r\n\r\n", false), 0);
	ASSERT_EQ(resp.body, HTTP1_BODY_NONE);
	ASSERT_TRUE(resp.keep_alive);
	ASSERT_GT(parse_resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", false), 0);
	ASSERT_EQ(resp.body, HTTP1_BODY_NONE);
	ASSERT_GT(parse_resp("HTTP/1.1 100 Continue\r\n\r\n", false), 0);
	ASSERT_EQ(resp.status, 100);
	ASSERT_EQ(resp.body, HTTP1_BODY_NONE);
	ASSERT_GT(parse_resp("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false), 0);
	ASSERT_EQ(resp.body, HTTP1_BODY_NONE);
	/* HEAD with a chunked GET representation: still nothing follows. */
	ASSERT_GT(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true), 0);
	ASSERT_EQ(resp.body, HTTP1_BODY_NONE);
}

static void test_resp_keep_alive_rules(void)
{
	ASSERT_GT(parse_resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false), 0);
	ASSERT_EQ(resp.version_minor, 0);
	ASSERT_FALSE(resp.keep_alive);
	ASSERT_GT(parse_resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
			     false), 0);
	ASSERT_TRUE(resp.keep_alive);
	ASSERT_GT(parse_resp("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false), 0);
	ASSERT_FALSE(resp.keep_alive);
}

static void test_resp_identical_cl(void)
{
	ASSERT_GT(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n", false), 0);
	ASSERT_EQ(resp.content_length, 7);
}

static void test_resp_incomplete_and_split(void)
{
	const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
	size_t i, n = strlen(s);

	for (i = 0; i < n; i++)
		ASSERT_EQ(http1_parse_response(s, i, &lim, false, &resp), 0);
	ASSERT_EQ(http1_parse_response(s, n, &lim, false, &resp), n);
}

static void test_resp_too_large(void)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\nX: %0120d", 0);
	ASSERT_EQ(http1_parse_response(buf, strlen(buf), &small, false, &resp), -502);
	snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK%0120d", 0);
	ASSERT_EQ(http1_parse_response(buf, strlen(buf), &small, false, &resp), -502);
}

static const struct bad_case bad_resp[] = {
	BAD("resp_101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", -502),
	BAD("resp_http2", "HTTP/2 200 OK\r\n\r\n", -502),
	BAD("resp_http12", "HTTP/1.2 200 OK\r\n\r\n", -502),
	BAD("resp_status_4_digits", "HTTP/1.1 2000 OK\r\n\r\n", -502),
	BAD("resp_status_2_digits", "HTTP/1.1 20 OK\r\n\r\n", -502),
	BAD("resp_status_099", "HTTP/1.1 099 X\r\n\r\n", -502),
	BAD("resp_status_600", "HTTP/1.1 600 X\r\n\r\n", -502),
	BAD("resp_status_letters", "HTTP/1.1 2x0 X\r\n\r\n", -502),
	BAD("resp_bare_lf_status", "HTTP/1.1 200 OK\n\r\n", -502),
	BAD("resp_bare_lf_header", "HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", -502),
	BAD("resp_ctl_in_reason", "HTTP/1.1 200 O\x01K\r\n\r\n", -502),
	BAD("resp_space_before_colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", -502),
	BAD("resp_obs_fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", -502),
	BAD("resp_cl_different", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", -502),
	BAD("resp_cl_bad", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", -502),
	BAD("resp_te_gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", -502),
	BAD("resp_te_gzip_chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", -502),
	BAD("resp_te_chunked_twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", -502),
	BAD("resp_te_in_http10", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", -502),
	BAD("resp_nul_in_value", "HTTP/1.1 200 OK\r\nX: \0\r\n\r\n", -502),
};

static void check_bad_resp(const struct bad_case *c)
{
	ASSERT_EQ(http1_parse_response(c->raw, c->len, &lim, false, &resp), c->status);
	ASSERT_TRUE(resp.error != NULL);
}

/* ---- chunked framer ------------------------------------------------------- */

static const char chunked_body[] =
	"5;name=value;flag ; q=\"a \\\" b\"\r\nhello\r\n"
	"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
	"000\r\n"
	"Expires: never\r\nX-Sum: 1\r\n"
	"\r\n";

static void test_chunked_whole_with_pipelined_tail(void)
{
	char buf[256];
	size_t body = sizeof(chunked_body) - 1;
	struct http1_chunked c;

	memcpy(buf, chunked_body, body);
	memcpy(buf + body, "GET / HTTP/1.1\r\n", 16);
	http1_chunked_init(&c);
	ASSERT_EQ(http1_chunked_scan(&c, buf, body + 16, &lim), body);
	ASSERT_TRUE(c.done);
	/* Once done, nothing more belongs to the body. */
	ASSERT_EQ(http1_chunked_scan(&c, buf + body, 16, &lim), 0);
}

static void test_chunked_byte_by_byte(void)
{
	size_t body = sizeof(chunked_body) - 1, i;
	struct http1_chunked c;

	http1_chunked_init(&c);
	for (i = 0; i < body; i++) {
		ASSERT_FALSE(c.done);
		ASSERT_EQ(http1_chunked_scan(&c, chunked_body + i, 1, &lim), 1);
	}
	ASSERT_TRUE(c.done);
	ASSERT_EQ(http1_chunked_scan(&c, "X", 1, &lim), 0);
}

static void test_chunked_every_split(void)
{
	char buf[256];
	size_t body = sizeof(chunked_body) - 1, k;

	memcpy(buf, chunked_body, body);
	memcpy(buf + body, "NEXT", 4);
	for (k = 0; k <= body; k++) {
		struct http1_chunked c;
		ssize_t a, b;

		http1_chunked_init(&c);
		a = http1_chunked_scan(&c, buf, k, &lim);
		ASSERT_EQ(a, k);
		ASSERT_EQ(c.done, k == body);
		b = http1_chunked_scan(&c, buf + k, body + 4 - k, &lim);
		ASSERT_EQ(a + b, body);
		ASSERT_TRUE(c.done);
	}
}

static void test_chunked_minimal_and_large_size(void)
{
	struct http1_chunked c;

	http1_chunked_init(&c);
	ASSERT_EQ(http1_chunked_scan(&c, "0\r\n\r\nrest", 9, &lim), 5);
	ASSERT_TRUE(c.done);

	/* A big chunk announced: bytes are counted, not buffered. */
	http1_chunked_init(&c);
	ASSERT_EQ(http1_chunked_scan(&c, "7fffffffffffffff\r\nabc", 21, &lim), 21);
	ASSERT_FALSE(c.done);
	ASSERT_TRUE(c.remaining == 0x7fffffffffffffffULL - 3);
	http1_chunked_init(&c);
	ASSERT_EQ(http1_chunked_scan(&c, "ffffffffffffffff\r\n", 18, &lim), 18);
}

static void test_chunked_decode_in_place(void)
{
	char buf[256];
	size_t body = sizeof(chunked_body) - 1, data = 0, k;
	struct http1_chunked c;

	memcpy(buf, chunked_body, body);
	memcpy(buf + body, "NEXT", 4);
	http1_chunked_init(&c);
	ASSERT_EQ(http1_chunked_decode(&c, buf, body + 4, &data, &lim), body);
	ASSERT_TRUE(c.done);
	ASSERT_MEMEQ(buf, data, "helloabcdefghijklmnopqrstuvwxyz");

	/* Split anywhere: the data pieces concatenate to the same bytes. */
	for (k = 1; k < body; k++) {
		char got[64];
		size_t n1 = 0, n2 = 0;

		memcpy(buf, chunked_body, body);
		http1_chunked_init(&c);
		ASSERT_EQ(http1_chunked_decode(&c, buf, k, &n1, &lim), k);
		memcpy(got, buf, n1);
		ASSERT_EQ(http1_chunked_decode(&c, buf + k, body - k, &n2, &lim), body - k);
		memcpy(got + n1, buf + k, n2);
		ASSERT_MEMEQ(got, n1 + n2, "helloabcdefghijklmnopqrstuvwxyz");
	}
	http1_chunked_init(&c);
	memcpy(buf, "5\nhello", 8);
	ASSERT_EQ(http1_chunked_decode(&c, buf, 8, &data, &lim), -400);
}

struct chunk_bad {
	const char *name;
	const char *raw;
	size_t len;
};

#define CBAD(n, r) { n, r, sizeof(r) - 1 }

static const struct chunk_bad chunk_bad[] = {
	CBAD("chunk_empty_size", "\r\nhello\r\n0\r\n\r\n"),
	CBAD("chunk_not_hex", "g\r\n"),
	CBAD("chunk_0x_prefix", "0x5\r\nhello\r\n"),
	CBAD("chunk_negative", "-5\r\nhello\r\n"),
	CBAD("chunk_plus", "+5\r\nhello\r\n"),
	CBAD("chunk_leading_space", " 5\r\nhello\r\n"),
	CBAD("chunk_trailing_space", "5 \r\nhello\r\n"),
	CBAD("chunk_overflow", "10000000000000000\r\n"),
	CBAD("chunk_bare_lf_size", "5\nhello\r\n0\r\n\r\n"),
	CBAD("chunk_bare_cr_size", "5\rhello\r\n"),
	CBAD("chunk_data_too_long", "5\r\nhelloX\r\n0\r\n\r\n"),
	CBAD("chunk_data_bare_lf", "5\r\nhello\n0\r\n\r\n"),
	CBAD("chunk_data_cr_no_lf", "5\r\nhello\rX"),
	CBAD("chunk_ext_empty_name", "5;\r\nhello\r\n"),
	CBAD("chunk_ext_empty_value", "5;a=\r\nhello\r\n"),
	CBAD("chunk_ext_bad_name", "5;a@b\r\nhello\r\n"),
	CBAD("chunk_ext_unterminated_quote", "5;a=\"xy\r\nhello\r\n"),
	CBAD("chunk_ext_ctl", "5;a=b\x01\r\nhello\r\n"),
	CBAD("chunk_ext_space_then_cr", "5;a \r\nhello\r\n"),
	CBAD("chunk_ext_bare_lf", "5;a=b\nhello\r\n"),
	CBAD("chunk_last_bare_lf", "0\n\r\n"),
	CBAD("chunk_end_bare_lf", "0\r\n\n"),
	CBAD("chunk_end_bare_cr", "0\r\n\rX"),
	CBAD("trailer_obs_fold", "0\r\nA: b\r\n c\r\n\r\n"),
	CBAD("trailer_space_before_colon", "0\r\nA : b\r\n\r\n"),
	CBAD("trailer_no_colon", "0\r\nAb\r\n\r\n"),
	CBAD("trailer_bare_lf", "0\r\nA: b\n\r\n"),
	CBAD("trailer_nul", "0\r\nA: \0\r\n\r\n"),
	CBAD("trailer_empty_name", "0\r\n: b\r\n\r\n"),
};

static void check_chunk_bad_whole(const struct chunk_bad *c)
{
	struct http1_chunked ch;

	http1_chunked_init(&ch);
	ASSERT_EQ(http1_chunked_scan(&ch, c->raw, c->len, &lim), -400);
}

/* The same inputs fed one byte at a time fail at the same byte or earlier. */
static void check_chunk_bad_bytewise(const struct chunk_bad *c)
{
	struct http1_chunked ch;
	ssize_t rc = 0;
	size_t i;

	http1_chunked_init(&ch);
	for (i = 0; i < c->len; i++) {
		rc = http1_chunked_scan(&ch, c->raw + i, 1, &lim);
		if (rc < 0)
			break;
	}
	ASSERT_EQ(rc, -400);
	ASSERT_FALSE(ch.done);
}

static void test_chunk_size_line_limit(void)
{
	struct http1_limits l = { .request_line = 16, .header_size = 64, .header_count = 10 };
	struct http1_chunked c;

	http1_chunked_init(&c);
	/* 16 bytes of size line: accepted */
	ASSERT_EQ(http1_chunked_scan(&c, "1;abcdefghijklmn\r\nx\r\n", 21, &l), 21);
	http1_chunked_init(&c);
	ASSERT_EQ(http1_chunked_scan(&c, "1;abcdefghijklmno\r\n", 19, &l), -400);
	/* Leading zeros count against the same limit. */
	http1_chunked_init(&c);
	ASSERT_EQ(http1_chunked_scan(&c, "00000000000000000001\r\n", 22, &l), -400);
}

static void test_chunk_trailer_limit(void)
{
	struct http1_limits l = { .request_line = 16, .header_size = 32, .header_count = 10 };
	struct http1_chunked c;
	const char *ok = "0\r\nA: 0123456789012345678901234\r\n\r\n"; /* trailer section: 32 bytes */
	const char *big = "0\r\nA: 01234567890123456789012345\r\n\r\n";

	http1_chunked_init(&c);
	ASSERT_EQ(http1_chunked_scan(&c, ok, strlen(ok), &l), strlen(ok));
	ASSERT_TRUE(c.done);
	http1_chunked_init(&c);
	ASSERT_EQ(http1_chunked_scan(&c, big, strlen(big), &l), -400);
}

/* ---- helpers ---------------------------------------------------------------- */

static void test_find_header_and_tokens(void)
{
	const struct http1_header *h;

	ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Api-Key: k1\r\nConnection: Keep-Alive , Upgrade\r\n\r\n"), 0);
	h = http1_find_header(req.headers, req.nheaders, "x-api-key");
	ASSERT_TRUE(h != NULL);
	ASSERT_MEMEQ(h->value, h->value_len, "k1");
	ASSERT_TRUE(http1_find_header(req.headers, req.nheaders, "x-api") == NULL);
	h = http1_find_header(req.headers, req.nheaders, "connection");
	ASSERT_TRUE(h != NULL);
	ASSERT_TRUE(http1_list_has_token(h->value, h->value_len, "upgrade"));
	ASSERT_TRUE(http1_list_has_token(h->value, h->value_len, "keep-alive"));
	ASSERT_FALSE(http1_list_has_token(h->value, h->value_len, "keep"));
	ASSERT_FALSE(http1_list_has_token(h->value, h->value_len, "close"));
}

static void test_reason_phrases(void)
{
	ASSERT_STREQ(http1_reason(200), "OK");
	ASSERT_STREQ(http1_reason(404), "Not Found");
	ASSERT_STREQ(http1_reason(413), "Content Too Large");
	ASSERT_STREQ(http1_reason(414), "URI Too Long");
	ASSERT_STREQ(http1_reason(417), "Expectation Failed");
	ASSERT_STREQ(http1_reason(429), "Too Many Requests");
	ASSERT_STREQ(http1_reason(431), "Request Header Fields Too Large");
	ASSERT_STREQ(http1_reason(502), "Bad Gateway");
	ASSERT_STREQ(http1_reason(505), "HTTP Version Not Supported");
	ASSERT_STREQ(http1_reason(299), "Unknown");
}

int main(void)
{
	size_t i;

	RUN(test_simple_get);
	RUN(test_no_query);
	RUN(test_empty_query_and_query_not_path_checked);
	RUN(test_absolute_form);
	RUN(test_absolute_form_https_no_path);
	RUN(test_absolute_form_ipv6_authority);
	RUN(test_options_asterisk);
	RUN(test_head_flag);
	RUN(test_empty_header_value_and_ows);
	RUN(test_obs_text_value_accepted);
	RUN(test_many_headers);
	RUN(test_http10_defaults_close);
	RUN(test_http10_keep_alive);
	RUN(test_http11_connection_close);
	RUN(test_content_length);
	RUN(test_identical_duplicate_content_length);
	RUN(test_chunked_case_insensitive);
	RUN(test_expect_continue);
	RUN(test_host_forms);
	RUN(test_harmless_dots_accepted);
	RUN(test_split_input_returns_zero_until_complete);
	RUN(test_pipelined_second_request);
	RUN(test_early_error_before_head_ends);

	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
		RUN_NAMED(bad_cases[i].name, check_bad, &bad_cases[i]);

	RUN(test_limit_request_line_exact_ok);
	RUN(test_limit_request_line_414);
	RUN(test_limit_request_line_414_incomplete);
	RUN(test_limit_header_size_431);
	RUN(test_limit_header_size_431_incomplete);
	RUN(test_limit_header_size_exact_ok);
	RUN(test_limit_header_count_431);
	RUN(test_limit_header_count_431_incomplete);
	RUN(test_limit_hard_cap);

	RUN(test_resp_length);
	RUN(test_resp_reason_forms);
	RUN(test_resp_chunked);
	RUN(test_resp_te_and_cl_te_wins_no_reuse);
	RUN(test_resp_close_delimited);
	RUN(test_resp_bodiless);
	RUN(test_resp_keep_alive_rules);
	RUN(test_resp_identical_cl);
	RUN(test_resp_incomplete_and_split);
	RUN(test_resp_too_large);
	for (i = 0; i < sizeof(bad_resp) / sizeof(bad_resp[0]); i++)
		RUN_NAMED(bad_resp[i].name, check_bad_resp, &bad_resp[i]);

	RUN(test_chunked_whole_with_pipelined_tail);
	RUN(test_chunked_byte_by_byte);
	RUN(test_chunked_every_split);
	RUN(test_chunked_minimal_and_large_size);
	RUN(test_chunked_decode_in_place);
	for (i = 0; i < sizeof(chunk_bad) / sizeof(chunk_bad[0]); i++) {
		RUN_NAMED(chunk_bad[i].name, check_chunk_bad_whole, &chunk_bad[i]);
		RUN_NAMED(chunk_bad[i].name, check_chunk_bad_bytewise, &chunk_bad[i]);
	}
	RUN(test_chunk_size_line_limit);
	RUN(test_chunk_trailer_limit);

	RUN(test_find_header_and_tokens);
	RUN(test_reason_phrases);
	return test_done();
}
