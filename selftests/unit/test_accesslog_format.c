/* selftests/unit/test_accesslog_format.c — access log line formats: json, combined, templates, secrets kept out. */
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "accesslog.h"
#include "config.h"
#include "http1.h"
#include "test.h"

static struct http1_request req;
static struct sockaddr_in peer;

static void entry(struct alog_entry *e)
{
	static const char head[] = "GET /api/x?token=s3cret HTTP/1.1\r\nHost: a.test\r\n"
				   "Authorization: Bearer hunter2\r\nCookie: sid=abc\r\n"
				   "Referer: https://r.test/p?key=k1\r\nUser-Agent: curl/8 \"q\"\r\n\r\n";

	memset(e, 0, sizeof(*e));
	if (http1_parse_request(head, sizeof(head) - 1, NULL, &req) <= 0)
		return;
	peer.sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.7", &peer.sin_addr);
	e->start_realtime_ns = 1700000000123000000ull;
	e->client = (struct sockaddr *)&peer;
	e->method = req.method;
	e->method_len = req.method_len;
	e->path = req.path;
	e->path_len = req.path_len;
	e->query = req.query;
	e->query_len = req.query_len;
	e->req = &req;
	e->status = 200;
	e->bytes_in = 10;
	e->bytes_out = 1234;
	e->route = "api";
	e->upstream = "127.0.0.1:9000";
	e->upstream_ns = 1500000;
	e->total_ns = 2500000;
	e->request_id = "rid1";
	e->trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
	e->span_id = "1122334455667788";
}

static void test_combined(void)
{
	struct alog_entry e;
	struct alog_opts o = { .format = CFG_LOG_COMBINED };
	char buf[1024];
	size_t n;

	entry(&e);
	n = alog_format_opts(buf, sizeof(buf), &e, &o);
	ASSERT_GT(n, 0u);
	buf[n] = '\0';
	ASSERT_STREQ(buf, "192.0.2.7 - - [14/Nov/2023:22:13:20 +0000] \"GET /api/x HTTP/1.1\" 200 1234 "
			  "\"https://r.test/p\" \"curl/8 \\x22q\\x22\"\n");
	o.query = true;
	n = alog_format_opts(buf, sizeof(buf), &e, &o);
	buf[n] = '\0';
	ASSERT_STRSTR(buf, "\"GET /api/x?token=s3cret HTTP/1.1\"");
	ASSERT_STRSTR(buf, "\"https://r.test/p?key=k1\"");
}

static void test_template(void)
{
	struct alog_entry e;
	struct alog_opts o = { .format = CFG_LOG_TEMPLATE,
			       .template = "$remote_addr $status ${request_id}-$trace_id $span_id "
					   "$request_time $upstream_response_time $http_user_agent $$ $query_string" };
	char buf[1024];
	size_t n;

	entry(&e);
	n = alog_format_opts(buf, sizeof(buf), &e, &o);
	ASSERT_GT(n, 0u);
	buf[n] = '\0';
	ASSERT_STREQ(buf, "192.0.2.7 200 rid1-4bf92f3577b34da6a3ce929d0e0e4736 1122334455667788 "
			  "0.002 0.001 curl/8 \"q\" $ -\n");
}

static void test_json_keeps_secrets_out(void)
{
	struct alog_entry e;
	struct alog_opts o = { .format = CFG_LOG_JSON };
	char buf[2048];
	size_t n;

	entry(&e);
	n = alog_format_opts(buf, sizeof(buf), &e, &o);
	ASSERT_GT(n, 0u);
	buf[n] = '\0';
	ASSERT_TRUE(strstr(buf, "hunter2") == NULL);
	ASSERT_TRUE(strstr(buf, "sid=abc") == NULL);
	ASSERT_TRUE(strstr(buf, "s3cret") == NULL);
	ASSERT_STRSTR(buf, "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"");
	ASSERT_STRSTR(buf, "\"span_id\":\"1122334455667788\"");
	o.query = true;
	n = alog_format_opts(buf, sizeof(buf), &e, &o);
	buf[n] = '\0';
	ASSERT_STRSTR(buf, "\"query\":\"token=s3cret\"");
}

static void test_template_check(void)
{
	char why[160];

	ASSERT_EQ(alog_template_check("$remote_addr \"$request\" $status", false, why, sizeof(why)), 0);
	ASSERT_EQ(alog_template_check("$http_x_forwarded_for", false, why, sizeof(why)), 0);
	ASSERT_NE(alog_template_check("$nope", false, why, sizeof(why)), 0);
	ASSERT_STRSTR(why, "unknown variable \"$nope\"");
	ASSERT_NE(alog_template_check("$http_authorization", false, why, sizeof(why)), 0);
	ASSERT_STRSTR(why, "sensitive_headers");
	ASSERT_NE(alog_template_check("$http_cookie", false, why, sizeof(why)), 0);
	ASSERT_EQ(alog_template_check("$http_cookie", true, why, sizeof(why)), 0);
	ASSERT_NE(alog_template_check("${status", false, why, sizeof(why)), 0);
	ASSERT_NE(alog_template_check("a\nb", false, why, sizeof(why)), 0);
}

static void test_too_long_is_dropped(void)
{
	struct alog_entry e;
	struct alog_opts o = { .format = CFG_LOG_COMBINED };
	char buf[32];

	entry(&e);
	ASSERT_EQ(alog_format_opts(buf, sizeof(buf), &e, &o), 0u);
}

static void test_config_forms(void)
{
	static const char head[] = "listeners: [{name: web, address: \"127.0.0.1:1\"}]\n"
				   "routes: [{respond: {status: 200}}]\n";
	static const struct {
		const char *yaml;
		const char *err; /* NULL: accepted */
	} cases[] = {
		{ "access_log: /var/log/a.log\n", NULL },
		{ "access_log: {path: stdout, format: combined, query: true}\n", NULL },
		{ "access_log: {path: /x, format: template, template: '$status $nope'}\n",
		  "t.yaml:3: access_log.template: unknown variable" },
		{ "access_log: {path: /x, format: template}\n", "access_log.template: required" },
		{ "access_log: {path: /x, template: '$status'}\n", "only used with format: template" },
		{ "access_log: {path: /x, format: xml}\n", "access_log.format: expected json" },
		{ "access_log: {format: json}\n", "access_log.path: required" },
		{ "tracing: {request_id: {trust: sometimes}}\n", "tracing.request_id.trust" },
		{ "tracing: {request_id: {header: 'bad header'}}\n", "tracing.request_id.header" },
		{ "tracing: {traceparent: {sample: yes}}\n", "tracing.traceparent.sample: expected true or false" },
	};
	char buf[512], err[256];
	struct config *cfg = NULL;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(buf, sizeof(buf), "%s%s", head, cases[i].yaml);
		int rc = config_load_string(buf, strlen(buf), "t.yaml", &cfg, err, sizeof(err));

		if (!cases[i].err) {
			if (rc)
				TEST_FAIL_("refused %s: %s", cases[i].yaml, err);
			config_free(cfg);
			continue;
		}
		if (!rc) {
			config_free(cfg);
			TEST_FAIL_("accepted %s", cases[i].yaml);
		}
		ASSERT_STRSTR(err, cases[i].err);
	}
}

int main(void)
{
	RUN(test_config_forms);
	RUN(test_combined);
	RUN(test_template);
	RUN(test_json_keeps_secrets_out);
	RUN(test_template_check);
	RUN(test_too_long_is_dropped);
	return test_done();
}
