/* selftests/unit/test_trace.c — traceparent parsing (W3C rules), formatting, random ids, request id syntax. */
#include <errno.h>
#include <string.h>

#include "test.h"
#include "trace.h"

static const char good[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static void test_parse_valid(void)
{
	struct trace_parent tp;

	ASSERT_EQ(trace_parse(good, strlen(good), &tp), 0);
	ASSERT_STREQ(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
	ASSERT_STREQ(tp.parent_id, "00f067aa0ba902b7");
	ASSERT_EQ(tp.flags, 1);
}

static void test_parse_refusals(void)
{
	static const char *const bad[] = {
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero parent id */
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version ff */
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* v00 with extra */
		"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  /* short trace id */
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* separator */
		"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* non-hex version */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z", /* non-hex flags */
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* later version, no dash */
		"",
	};
	struct trace_parent tp;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (trace_parse(bad[i], strlen(bad[i]), &tp) != -EINVAL)
			TEST_FAIL_("accepted \"%s\"", bad[i]);
	}
}

static void test_parse_future_version(void)
{
	static const char v[] = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
	struct trace_parent tp;

	ASSERT_EQ(trace_parse(v, strlen(v), &tp), 0);
	ASSERT_STREQ(tp.parent_id, "00f067aa0ba902b7");
}

static void test_format_roundtrip(void)
{
	char out[TRACE_PARENT_LEN + 1];
	struct trace_parent tp;

	trace_format(out, "4bf92f3577b34da6a3ce929d0e0e4736", "1122334455667788", 0x01);
	ASSERT_STREQ(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-1122334455667788-01");
	ASSERT_EQ(trace_parse(out, strlen(out), &tp), 0);
	trace_format(out, "4bf92f3577b34da6a3ce929d0e0e4736", "1122334455667788", 0);
	ASSERT_STREQ(out + 52, "-00");
}

static void test_random_ids(void)
{
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	char a[TRACE_ID_HEX + 1], b[TRACE_ID_HEX + 1], span[TRACE_SPAN_HEX + 1];
	char tp[TRACE_PARENT_LEN + 1];
	struct trace_parent p;

	trace_random_hex(&rng, a, TRACE_ID_HEX);
	trace_random_hex(&rng, b, TRACE_ID_HEX);
	trace_random_hex(&rng, span, TRACE_SPAN_HEX);
	ASSERT_EQ(strlen(a), (size_t)TRACE_ID_HEX);
	ASSERT_EQ(strlen(span), (size_t)TRACE_SPAN_HEX);
	ASSERT_TRUE(strcmp(a, b) != 0);
	ASSERT_EQ(strspn(a, "0123456789abcdef"), (size_t)TRACE_ID_HEX);
	/* What we generate, we accept. */
	trace_format(tp, a, span, 0);
	ASSERT_EQ(trace_parse(tp, strlen(tp), &p), 0);
}

static void test_request_id_syntax(void)
{
	ASSERT_TRUE(trace_request_id_ok("abc-123_X.y", 11, 39));
	ASSERT_FALSE(trace_request_id_ok("", 0, 39));
	ASSERT_FALSE(trace_request_id_ok("a b", 3, 39));
	ASSERT_FALSE(trace_request_id_ok("a\r\nX-Evil: 1", 12, 39));
	ASSERT_FALSE(trace_request_id_ok("0123456789012345678901234567890123456789", 40, 39));
}

int main(void)
{
	RUN(test_parse_valid);
	RUN(test_parse_refusals);
	RUN(test_parse_future_version);
	RUN(test_format_roundtrip);
	RUN(test_random_ids);
	RUN(test_request_id_syntax);
	return test_done();
}
