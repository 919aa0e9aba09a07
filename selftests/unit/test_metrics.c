/* selftests/unit/test_metrics.c — metric text rendering, histogram bucketing, quantiles, error reasons, escaping. */
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"
#include "agent.h"
#include "config.h"
#include "metrics.h"
#include "test.h"

static const char yaml[] =
	"listeners:\n"
	"  - {name: web, address: \"127.0.0.1:8080\"}\n"
	"upstreams:\n"
	"  - {name: pool, servers: [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]}\n"
	"routes:\n"
	"  - {name: api, upstream: pool}\n"
	"admin:\n"
	"  request_buckets: [0.001, 0.01, 0.1]\n";

static void test_bucketing(void)
{
	static const uint64_t b[] = { 1000, 10000, 100000 }; /* 1ms, 10ms, 100ms */

	ASSERT_EQ(metrics_bucket(b, 3, 0), 0u);
	ASSERT_EQ(metrics_bucket(b, 3, 1000000), 0u);   /* exactly on the bound: le is inclusive */
	ASSERT_EQ(metrics_bucket(b, 3, 1000001), 1u);
	ASSERT_EQ(metrics_bucket(b, 3, 100000000), 2u);
	ASSERT_EQ(metrics_bucket(b, 3, 100000001), 3u); /* +Inf */
}

static void test_quantile(void)
{
	static const uint64_t b[] = { 1000, 2000, 4000 };
	uint64_t c[4] = { 0, 10, 0, 0 };

	/* All in (1ms, 2ms]: the median interpolates to the middle. */
	ASSERT_EQ((int)metrics_quantile(b, 3, c, 0.5), 1500);
	ASSERT_EQ((int)metrics_quantile(b, 3, c, 1.0), 2000);
	c[3] = 90; /* past the last bound: reported as the last bound */
	ASSERT_EQ((int)metrics_quantile(b, 3, c, 0.99), 4000);
	memset(c, 0, sizeof(c));
	ASSERT_TRUE(metrics_quantile(b, 3, c, 0.5) < 0);
}

static void test_classes_and_methods(void)
{
	ASSERT_EQ(metrics_class_of(204), MC_2XX);
	ASSERT_EQ(metrics_class_of(599), MC_5XX);
	ASSERT_EQ(metrics_class_of(0), MC_NONE);
	ASSERT_EQ(metrics_method_of("GET", 3), MM_GET);
	ASSERT_EQ(metrics_method_of("GETX", 4), MM_OTHER);
	ASSERT_EQ(metrics_method_of("PROPFIND", 8), MM_OTHER);
	ASSERT_EQ(metrics_method_of(NULL, 0), MM_OTHER);
}

static void test_error_reasons(void)
{
	ASSERT_STREQ(metrics_error_name(metrics_error_of(404, "no route")), "no_route");
	ASSERT_STREQ(metrics_error_name(metrics_error_of(504, "backend connect timeout")), "connect_timeout");
	ASSERT_STREQ(metrics_error_name(metrics_error_of(502, "backend connect failed")), "connect_failed");
	ASSERT_STREQ(metrics_error_name(metrics_error_of(504, "backend response timeout")), "response_timeout");
	ASSERT_STREQ(metrics_error_name(metrics_error_of(408, "client header timeout")), "client_timeout");
	ASSERT_STREQ(metrics_error_name(metrics_error_of(413, "request body over max_body")), "body_too_large");
	ASSERT_STREQ(metrics_error_name(metrics_error_of(431, "request head too large")), "head_too_large");
	ASSERT_STREQ(metrics_error_name(metrics_error_of(400, "bad header")), "bad_request");
	ASSERT_STREQ(metrics_error_name(metrics_error_of(0, "client closed mid-request")), "client_closed");
	ASSERT_STREQ(metrics_error_name(metrics_error_of(503, "no server available")), "no_server");
	ASSERT_STREQ(metrics_error_name(metrics_error_of(502, "backend closed without a response")), "bad_gateway");
}

static void test_escape(void)
{
	char out[64];

	metrics_escape("a\"b\\c\nd", out, sizeof(out));
	ASSERT_STREQ(out, "a\\\"b\\\\c\\nd");
}

static void test_render(void)
{
	struct config *cfg = NULL;
	struct metrics *m = NULL;
	char err[256], *text = NULL;
	size_t len = 0;
	struct worker_set ws = { 0 };
	char *names0[] = { "127.0.0.1:9001", "127.0.0.1:9002" };
	char **names[] = { names0 };
	struct snapshot snap = { 0 };

	if (config_load_string(yaml, sizeof(yaml) - 1, "t.yaml", &cfg, err, sizeof(err)))
		TEST_FAIL_("config: %s", err);
	ASSERT_EQ(metrics_create(&m, cfg, 2), 0);
	snap.cfg = cfg;
	snap.server_names = names;
	struct agent a = { .snap = &snap, .workers = &ws, .metrics = m, .started_at = 1700000000,
			   .loaded_at = 1700000001, .scrape_lock = PTHREAD_MUTEX_INITIALIZER };
	struct alog_entry e = { .method = "GET", .method_len = 3, .status = 200, .bytes_in = 100,
				.bytes_out = 1000, .upstream_ns = 500000, .total_ns = 2000000 };

	atomic_store(&a.state, AGENT_RUNNING);
	/* Two workers, counted apart, summed on scrape. */
	for (int i = 0; i < 3; i++)
		metrics_record(metrics_worker(m, 0), &e, 0, 0, 0, 1);
	e.total_ns = 50000000;
	metrics_record(metrics_worker(m, 1), &e, 0, 0, 0, 1);
	e.status = 404;
	e.error = "no route";
	e.method = "BREW";
	e.method_len = 4;
	e.upstream_ns = -1;
	metrics_record(metrics_worker(m, 1), &e, 0, -1, -1, -1);

	ASSERT_EQ(metrics_render(&a, &text, &len), 0);
	ASSERT_EQ(strlen(text), len);
	ASSERT_STRSTR(text, "# TYPE openclaw_requests_total counter\n");
	ASSERT_STRSTR(text, "openclaw_requests_total{listener=\"web\",route=\"api\",method=\"GET\",code_class=\"2xx\"} 4\n");
	ASSERT_STRSTR(text, "openclaw_requests_total{listener=\"web\",route=\"\",method=\"other\",code_class=\"4xx\"} 1\n");
	ASSERT_STRSTR(text, "openclaw_request_duration_seconds_bucket{route=\"api\",le=\"0.001\"} 0\n");
	ASSERT_STRSTR(text, "openclaw_request_duration_seconds_bucket{route=\"api\",le=\"0.01\"} 3\n");
	ASSERT_STRSTR(text, "openclaw_request_duration_seconds_bucket{route=\"api\",le=\"0.1\"} 4\n");
	ASSERT_STRSTR(text, "openclaw_request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"} 4\n");
	ASSERT_STRSTR(text, "openclaw_request_duration_seconds_sum{route=\"api\"} 0.056\n");
	ASSERT_STRSTR(text, "openclaw_request_duration_seconds_count{route=\"api\"} 4\n");
	ASSERT_STRSTR(text, "openclaw_upstream_response_seconds_count{upstream=\"pool\",server=\"127.0.0.1:9002\"} 4\n");
	ASSERT_STRSTR(text, "openclaw_upstream_response_seconds_count{upstream=\"pool\",server=\"127.0.0.1:9001\"} 0\n");
	ASSERT_STRSTR(text, "openclaw_upstream_responses_total{upstream=\"pool\",server=\"127.0.0.1:9002\",code_class=\"2xx\"} 4\n");
	ASSERT_STRSTR(text, "openclaw_received_bytes_total{listener=\"web\"} 500\n");
	ASSERT_STRSTR(text, "openclaw_sent_bytes_total{listener=\"web\"} 5000\n");
	ASSERT_STRSTR(text, "openclaw_proxy_errors_total{reason=\"no_route\"} 1\n");
	ASSERT_STRSTR(text, "openclaw_proxy_errors_total{reason=\"connect_failed\"} 0\n");
	ASSERT_STRSTR(text, "process_start_time_seconds 1700000000\n");
	ASSERT_STRSTR(text, "openclaw_config_last_load_timestamp_seconds 1700000001\n");
	ASSERT_STRSTR(text, "openclaw_ready 1\n");
	ASSERT_STRSTR(text, "openclaw_build_info{version=\"");
	/* Series with no observation are left out of the big cross product. */
	ASSERT_TRUE(strstr(text, "method=\"POST\"") == NULL);
	/* Every line ends with a newline, and the text ends with one. */
	ASSERT_EQ(text[len - 1], '\n');
	free(text);
	metrics_free(m);
	config_free(cfg);
}

static void test_bucket_config_errors(void)
{
	static const char *const bad[] = {
		"admin: {request_buckets: [0.1, 0.01]}\n",
		"admin: {request_buckets: [0]}\n",
		"admin: {request_buckets: [1.0000001]}\n",
		"admin: {request_buckets: [\"5ms\"]}\n",
		"admin: {request_buckets: []}\n",
	};
	char buf[512], err[256];
	struct config *cfg = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf),
			 "listeners: [{name: web, address: \"127.0.0.1:1\"}]\nroutes: [{respond: {status: 200}}]\n%s",
			 bad[i]);
		if (config_load_string(buf, strlen(buf), "t.yaml", &cfg, err, sizeof(err)) == 0) {
			config_free(cfg);
			TEST_FAIL_("accepted %s", bad[i]);
		}
		ASSERT_STRSTR(err, "admin.request_buckets");
	}
}

int main(void)
{
	RUN(test_bucketing);
	RUN(test_quantile);
	RUN(test_classes_and_methods);
	RUN(test_error_reasons);
	RUN(test_escape);
	RUN(test_render);
	RUN(test_bucket_config_errors);
	return test_done();
}
