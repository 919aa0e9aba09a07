/* selftests/unit/test_guard_store.c — guard.json round trip (mode 0600, wall-clock expiry re-based on the monotonic clock) and the auto-ban counters. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guard.h"
#include "guard_store.h"
#include "test.h"

static char dir[64];
static char path[128];

static void mk_entry(struct guard_entry *e, enum guard_list_kind l, const char *cidr, uint32_t origin,
		     int64_t expires_ms, const char *reason)
{
	const char *why;

	memset(e, 0, sizeof(*e));
	e->list = l;
	net_cidr_parse(cidr, &e->cidr, &why);
	e->origin = origin;
	e->expires_ms = expires_ms;
	snprintf(e->reason, sizeof(e->reason), "%s", reason);
}

static void test_round_trip(void)
{
	struct guard_entry in[4], *out = NULL;
	const int64_t now_ms = 1700000000000LL;
	const uint64_t mono = 5000000000ULL;
	char err[256] = "", c[GUARD_CIDR_STRLEN];
	struct stat st;
	size_t n = 0;

	mk_entry(&in[0], GUARD_LIST_BLOCK, "192.0.2.0/24", GUARD_ORIGIN_MANUAL, now_ms + 600000,
		 "scanner \"x\"\n");
	mk_entry(&in[1], GUARD_LIST_ALLOW, "2001:db8::/32", GUARD_ORIGIN_MANUAL, 0, "");
	mk_entry(&in[2], GUARD_LIST_BLOCK, "198.51.100.7", GUARD_ORIGIN_AUTO, now_ms - 1, "expired");
	mk_entry(&in[3], GUARD_LIST_BLOCK, "203.0.113.0/24", GUARD_ORIGIN_CONFIG, 0, "guard.deny[0]");
	ASSERT_EQ(guard_store_save(path, in, 4, err, sizeof(err)), 0);
	ASSERT_EQ(stat(path, &st), 0);
	ASSERT_EQ(st.st_mode & 07777, 0600);

	ASSERT_EQ(guard_store_load(path, now_ms, mono, &out, &n, err, sizeof(err)), 0);
	/* The expired auto-ban is left out; the others come back in order. */
	ASSERT_EQ(n, 3);
	ASSERT_EQ(out[0].list, GUARD_LIST_BLOCK);
	ASSERT_STREQ(guard_cidr_format(&out[0].cidr, c, sizeof(c)), "192.0.2.0/24");
	ASSERT_EQ(out[0].origin, GUARD_ORIGIN_MANUAL);
	ASSERT_STREQ(out[0].reason, "scanner \"x\"\n");
	ASSERT_EQ(out[0].expires_ms, now_ms + 600000);
	/* Ten minutes left on the wall clock = ten minutes from now on the monotonic clock. */
	ASSERT_EQ(out[0].expires_ns, mono + 600000ULL * 1000000ULL);
	ASSERT_EQ(out[1].list, GUARD_LIST_ALLOW);
	ASSERT_STREQ(guard_cidr_format(&out[1].cidr, c, sizeof(c)), "2001:db8::/32");
	ASSERT_EQ(out[1].expires_ms, 0);
	ASSERT_EQ(out[1].expires_ns, 0);
	ASSERT_EQ(out[2].origin, GUARD_ORIGIN_CONFIG);
	ASSERT_STREQ(guard_cidr_format(&out[2].cidr, c, sizeof(c)), "203.0.113.0/24");
	free(out);

	/* After a "reboot" (a smaller monotonic clock, later wall clock) the expiry is re-based. */
	ASSERT_EQ(guard_store_load(path, now_ms + 60000, 1000, &out, &n, err, sizeof(err)), 0);
	ASSERT_EQ(n, 3);
	ASSERT_EQ(out[0].expires_ns, 1000 + 540000ULL * 1000000ULL);
	free(out);
	/* And once the wall clock passes it, it is gone. */
	ASSERT_EQ(guard_store_load(path, now_ms + 600000, 1000, &out, &n, err, sizeof(err)), 0);
	ASSERT_EQ(n, 2);
	free(out);
}

static void test_missing_file_is_empty(void)
{
	struct guard_entry *out = (struct guard_entry *)1;
	char err[256] = "", p[160];
	size_t n = 7;

	snprintf(p, sizeof(p), "%s/nothing.json", dir);
	ASSERT_EQ(guard_store_load(p, 0, 0, &out, &n, err, sizeof(err)), 0);
	ASSERT_EQ(n, 0);
	ASSERT_TRUE(out == NULL);
}

static void test_loose_mode_refused(void)
{
	struct guard_entry in, *out = NULL;
	char err[256] = "";
	size_t n = 0;

	mk_entry(&in, GUARD_LIST_ALLOW, "10.0.0.0/8", GUARD_ORIGIN_MANUAL, 0, "");
	ASSERT_EQ(guard_store_save(path, &in, 1, err, sizeof(err)), 0);
	ASSERT_EQ(chmod(path, 0644), 0);
	ASSERT_EQ(guard_store_load(path, 0, 0, &out, &n, err, sizeof(err)), -EPERM);
	ASSERT_STRSTR(err, "mode 0644");
	/* Saving again replaces the file with a 0600 one. */
	ASSERT_EQ(guard_store_save(path, &in, 1, err, sizeof(err)), 0);
	ASSERT_EQ(guard_store_load(path, 0, 0, &out, &n, err, sizeof(err)), 0);
	ASSERT_EQ(n, 1);
	free(out);
}

static void test_corrupt_file_refused(void)
{
	static const char *const bad[] = {
		"{\"version\":1,\"entries\":[{\"list\":\"block\",\"cidr\":\"1.2.3.4/40\",\"source\":\"manual\"}]}",
		"{\"version\":2,\"entries\":[]}",
		"{\"version\":1,\"entries\":[{\"list\":\"deny\",\"cidr\":\"1.2.3.4\",\"source\":\"manual\"}]}",
		"{\"version\":1,\"entries\":[{\"list\":\"block\",\"cidr\":\"1.2.3.4\",\"source\":\"someone\"}]}",
		"{\"version\":1,\"entries\":[",
	};
	struct guard_entry *out = NULL;
	char err[256];
	size_t n;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		ASSERT_TRUE(fd >= 0);
		ASSERT_EQ(write(fd, bad[i], strlen(bad[i])), (long long)strlen(bad[i]));
		close(fd);
		err[0] = '\0';
		ASSERT_EQ(guard_store_load(path, 0, 0, &out, &n, err, sizeof(err)), -EINVAL);
		ASSERT_STRSTR(err, path);
	}
}

static struct guard_src_key v4(const char *a)
{
	struct guard_src_key k = { .family = GUARD_AF_INET };

	inet_pton(AF_INET, a, k.addr);
	return k;
}

static void test_ban_threshold_within_window_triggers_once(void)
{
	struct guard_bans b;
	struct guard_src_key k = v4("192.0.2.9");
	char why[64] = "";
	int fired = 0;

	ASSERT_EQ(guard_bans_init(&b, 20, 10000, 600000, 128), 0);
	for (int i = 0; i < 19; i++)
		fired += guard_bans_hit(&b, &k, 400, 1000 + (uint64_t)i * 100, why, sizeof(why));
	ASSERT_EQ(fired, 0);
	ASSERT_TRUE(guard_bans_hit(&b, &k, 429, 3000, why, sizeof(why)));
	ASSERT_STREQ(why, "400, 429");
	/* More rejections while the ban runs do not fire again. */
	for (int i = 0; i < 100; i++)
		fired += guard_bans_hit(&b, &k, 400, 3100 + (uint64_t)i * 10, why, sizeof(why));
	ASSERT_EQ(fired, 0);
	guard_bans_free(&b);
}

static void test_ban_outside_window_does_not_trigger(void)
{
	struct guard_bans b;
	struct guard_src_key k = v4("192.0.2.10"), other = v4("192.0.2.11");
	int fired = 0;

	ASSERT_EQ(guard_bans_init(&b, 5, 10000, 60000, 128), 0);
	/* One every 2.5 s: any five span 10 s, which is not "within" a 10 s window. */
	for (int i = 0; i < 50; i++)
		fired += guard_bans_hit(&b, &k, 401, (uint64_t)i * 2500, NULL, 0);
	ASSERT_EQ(fired, 0);
	/* Sources are counted apart: four each from two sources is no ban. */
	for (int i = 0; i < 4; i++) {
		fired += guard_bans_hit(&b, &k, 401, 200000 + (uint64_t)i, NULL, 0);
		fired += guard_bans_hit(&b, &other, 401, 200000 + (uint64_t)i, NULL, 0);
	}
	ASSERT_EQ(fired, 0);
	/* The fifth within the window is. */
	ASSERT_TRUE(guard_bans_hit(&b, &other, 401, 200010, NULL, 0));
	guard_bans_free(&b);
}

static void test_ban_after_quiet_period_counts_again(void)
{
	struct guard_bans b;
	struct guard_src_key k = v4("198.51.100.1");
	int fired = 0;

	ASSERT_EQ(guard_bans_init(&b, 3, 1000, 5000, 16), 0);
	for (int i = 0; i < 3; i++)
		fired += guard_bans_hit(&b, &k, 400, 100 + (uint64_t)i, NULL, 0);
	ASSERT_EQ(fired, 1);
	guard_bans_expire(&b, 3000);
	ASSERT_EQ(b.n, 1); /* quiet period still running: kept */
	guard_bans_expire(&b, 6000);
	ASSERT_EQ(b.n, 0); /* idle past the window and the quiet period: forgotten */
	for (int i = 0; i < 3; i++)
		fired += guard_bans_hit(&b, &k, 400, 7000 + (uint64_t)i, NULL, 0);
	ASSERT_EQ(fired, 2);
	guard_bans_free(&b);
}

static void test_ban_table_is_bounded(void)
{
	struct guard_bans b;

	ASSERT_EQ(guard_bans_init(&b, 2, 1000, 1000, 8), 0);
	for (int i = 0; i < 20; i++) {
		struct guard_src_key k = { .family = GUARD_AF_INET, .addr = { 10, 0, 0, (uint8_t)i } };

		guard_bans_hit(&b, &k, 400, 10, NULL, 0);
	}
	ASSERT_EQ(b.n, 8);
	ASSERT_EQ(b.untracked, 12);
	guard_bans_free(&b);
}

static void test_fmt_duration(void)
{
	char buf[24];

	ASSERT_STREQ(guard_fmt_duration(600000, buf, sizeof(buf)), "10m");
	ASSERT_STREQ(guard_fmt_duration(10000, buf, sizeof(buf)), "10s");
	ASSERT_STREQ(guard_fmt_duration(90000, buf, sizeof(buf)), "90s");
	ASSERT_STREQ(guard_fmt_duration(86400000, buf, sizeof(buf)), "1d");
	ASSERT_STREQ(guard_fmt_duration(1500, buf, sizeof(buf)), "1500ms");
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/oc-guard-store.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/guard.json", dir);
	RUN(test_round_trip);
	RUN(test_missing_file_is_empty);
	RUN(test_loose_mode_refused);
	RUN(test_corrupt_file_refused);
	RUN(test_ban_threshold_within_window_triggers_once);
	RUN(test_ban_outside_window_does_not_trigger);
	RUN(test_ban_after_quiet_period_counts_again);
	RUN(test_ban_table_is_bounded);
	RUN(test_fmt_duration);
	unlink(path);
	rmdir(dir);
	return test_done();
}
