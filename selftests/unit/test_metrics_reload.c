/* selftests/unit/test_metrics_reload.c — metric series follow a reloaded configuration by name; per-key labels and their cap. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"
#include "agent.h"
#include "config.h"
#include "metrics.h"
#include "test.h"

static const char yaml_a[] =
	"listeners:\n"
	"  - {name: web, address: \"127.0.0.1:8080\"}\n"
	"upstreams:\n"
	"  - {name: pool, servers: [\"127.0.0.1:9001\"]}\n"
	"routes:\n"
	"  - {name: old, match: {path_prefix: /old/}, upstream: pool}\n"
	"  - {name: api, upstream: pool}\n"
	"admin: {}\n";

/* The reload: "old" removed, "new" added in front (indexes move), a second server and listener. */
static const char yaml_b[] =
	"listeners:\n"
	"  - {name: alt, address: \"127.0.0.1:8081\"}\n"
	"  - {name: web, address: \"127.0.0.1:8080\"}\n"
	"upstreams:\n"
	"  - {name: pool, servers: [\"127.0.0.1:9002\", \"127.0.0.1:9001\"]}\n"
	"routes:\n"
	"  - {name: new, match: {path_prefix: /new/}, upstream: pool}\n"
	"  - {name: api, upstream: pool}\n"
	"admin: {}\n";

static struct config *load(const char *y, size_t n)
{
	struct config *cfg = NULL;
	char err[256];

	if (config_load_string(y, n, "t.yaml", &cfg, err, sizeof(err))) {
		fprintf(stderr, "# config: %s\n", err);
		return NULL;
	}
	return cfg;
}

static char *render(struct agent *a)
{
	char *text = NULL;
	size_t len = 0;

	if (metrics_render(a, &text, &len))
		return NULL;
	return text;
}

static void test_series_follow_reload(void)
{
	struct config *ca = load(yaml_a, sizeof(yaml_a) - 1), *cb = load(yaml_b, sizeof(yaml_b) - 1);
	struct metrics *m = NULL;
	struct metrics_map *ma = NULL, *mb = NULL;
	struct worker_set ws = { 0 };
	struct snapshot snap = { 0 };
	struct alog_entry e = { .method = "GET", .method_len = 3, .status = 200, .bytes_in = 10,
				.bytes_out = 100, .upstream_ns = 1000, .total_ns = 2000 };
	char *text;

	ASSERT_TRUE(ca != NULL && cb != NULL);
	ASSERT_EQ(metrics_create(&m, ca, 2), 0);
	ASSERT_EQ(metrics_map_new(m, ca, &ma), 0);
	ASSERT_EQ(metrics_map_new(m, cb, &mb), 0);
	/* Before the reload: 3 on "old", 2 on "api", by configuration A's indexes. */
	for (int i = 0; i < 3; i++)
		metrics_record_map(metrics_worker(m, 0), ma, &e, 0, 0, 0, 0, NULL);
	for (int i = 0; i < 2; i++)
		metrics_record_map(metrics_worker(m, 1), ma, &e, 0, 1, 0, 0, NULL);
	/* After: route 0 is now "new", route 1 "api"; listener 1 is "web"; server 1 is :9001. */
	for (int i = 0; i < 5; i++)
		metrics_record_map(metrics_worker(m, 1), mb, &e, 1, 0, 0, 0, NULL);
	metrics_record_map(metrics_worker(m, 0), mb, &e, 1, 1, 0, 1, NULL);
	metrics_record_map(metrics_worker(m, 0), mb, &e, 0, -1, -1, -1, NULL);

	snap.cfg = cb;
	struct agent a = { .snap = &snap, .workers = &ws, .metrics = m,
			   .scrape_lock = PTHREAD_MUTEX_INITIALIZER };

	atomic_store(&a.state, AGENT_RUNNING);
	text = render(&a);
	ASSERT_TRUE(text != NULL);
	ASSERT_STRSTR(text, "openclaw_requests_total{listener=\"web\",route=\"new\",method=\"GET\",code_class=\"2xx\"} 5\n");
	/* Kept across the reload although its index moved: 2 before + 1 after. */
	ASSERT_STRSTR(text, "openclaw_requests_total{listener=\"web\",route=\"api\",method=\"GET\",code_class=\"2xx\"} 3\n");
	ASSERT_STRSTR(text, "openclaw_requests_total{listener=\"alt\",route=\"\",method=\"GET\",code_class=\"2xx\"} 1\n");
	ASSERT_STRSTR(text, "openclaw_request_duration_seconds_count{route=\"new\"} 5\n");
	ASSERT_STRSTR(text, "openclaw_request_duration_seconds_count{route=\"api\"} 3\n");
	/* Removed by the reload: no longer exported. */
	ASSERT_TRUE(strstr(text, "route=\"old\"") == NULL);
	/* :9001 was server 0, then server 1: one series, every count. */
	ASSERT_STRSTR(text, "openclaw_upstream_responses_total{upstream=\"pool\",server=\"127.0.0.1:9001\",code_class=\"2xx\"} 6\n");
	ASSERT_STRSTR(text, "openclaw_upstream_responses_total{upstream=\"pool\",server=\"127.0.0.1:9002\",code_class=\"2xx\"} 5\n");
	ASSERT_STRSTR(text, "openclaw_received_bytes_total{listener=\"web\"} 110\n");
	ASSERT_STRSTR(text, "openclaw_received_bytes_total{listener=\"alt\"} 10\n");
	ASSERT_TRUE(strstr(text, "openclaw_auth_key_results_total") == NULL); /* off by default */
	free(text);

	/* Back to A: "old" comes back with its count, "new" goes. */
	snap.cfg = ca;
	text = render(&a);
	ASSERT_TRUE(text != NULL);
	ASSERT_STRSTR(text, "openclaw_requests_total{listener=\"web\",route=\"old\",method=\"GET\",code_class=\"2xx\"} 3\n");
	ASSERT_TRUE(strstr(text, "route=\"new\"") == NULL);
	free(text);

	metrics_map_free(ma);
	metrics_map_free(mb);
	metrics_free(m);
	config_free(ca);
	config_free(cb);
}

static void test_per_key_labels(void)
{
	static const char y[] =
		"listeners: [{name: web, address: \"127.0.0.1:8080\"}]\n"
		"routes: [{name: api, respond: {status: 200}}]\n"
		"admin: {per_key_labels: true, per_key_labels_max: 2}\n";
	static const char *const ids[] = { "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc" };
	struct config *cfg = load(y, sizeof(y) - 1);
	struct metrics *m = NULL;
	struct worker_set ws = { 0 };
	struct snapshot snap = { 0 };
	struct alog_entry e = { .method = "GET", .method_len = 3, .status = 200, .upstream_ns = -1 };
	char *text;

	ASSERT_TRUE(cfg != NULL);
	ASSERT_TRUE(cfg->admin.per_key_labels);
	ASSERT_EQ(cfg->admin.per_key_labels_max, 2u);
	ASSERT_EQ(metrics_create(&m, cfg, 2), 0);
	for (unsigned i = 0; i < 3; i++)
		for (unsigned n = 0; n <= i; n++)
			metrics_record_map(metrics_worker(m, n % 2), m->map0, &e, 0, 0, -1, -1, ids[i]);
	e.status = 429;
	e.error = "limit: route rate limit";
	metrics_record_map(metrics_worker(m, 0), m->map0, &e, 0, 0, -1, -1, ids[1]);
	e.status = 403;
	e.error = "auth: route outside the key's scopes";
	metrics_record_map(metrics_worker(m, 0), m->map0, &e, 0, 0, -1, -1, ids[0]);
	/* Not a key id: never a label (the value would be caller-chosen). */
	e.status = 200;
	e.error = NULL;
	metrics_record_map(metrics_worker(m, 0), m->map0, &e, 0, 0, -1, -1, "not-a-key-id");
	metrics_record_map(metrics_worker(m, 0), m->map0, &e, 0, 0, -1, -1, "");

	snap.cfg = cfg;
	struct agent a = { .snap = &snap, .workers = &ws, .metrics = m,
			   .scrape_lock = PTHREAD_MUTEX_INITIALIZER };

	text = render(&a);
	ASSERT_TRUE(text != NULL);
	ASSERT_STRSTR(text, "# TYPE openclaw_auth_key_results_total counter\n");
	ASSERT_STRSTR(text, "openclaw_auth_key_results_total{key_id=\"aaaaaaaaaaaa\",result=\"ok\"} 1\n");
	ASSERT_STRSTR(text, "openclaw_auth_key_results_total{key_id=\"aaaaaaaaaaaa\",result=\"out_of_scope\"} 1\n");
	ASSERT_STRSTR(text, "openclaw_auth_key_results_total{key_id=\"bbbbbbbbbbbb\",result=\"ok\"} 2\n");
	ASSERT_STRSTR(text, "openclaw_auth_key_results_total{key_id=\"bbbbbbbbbbbb\",result=\"rate_limited\"} 1\n");
	/* The third id is past the cap of 2: "other", with the invalid one. */
	ASSERT_TRUE(strstr(text, "cccccccccccc") == NULL);
	ASSERT_STRSTR(text, "openclaw_auth_key_results_total{key_id=\"other\",result=\"ok\"} 4\n");
	free(text);
	metrics_free(m);
	config_free(cfg);
}

static void test_per_key_config_errors(void)
{
	static const char *const bad[] = {
		"admin: {per_key_labels: maybe}\n",
		"admin: {per_key_labels_max: 0}\n",
		"admin: {per_key_labels_max: 10001}\n",
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
			continue;
		}
		ASSERT_STRSTR(err, "t.yaml:");
		ASSERT_STRSTR(err, "admin.per_key_labels");
	}
}

int main(void)
{
	RUN(test_series_follow_reload);
	RUN(test_per_key_labels);
	RUN(test_per_key_config_errors);
	return test_done();
}
