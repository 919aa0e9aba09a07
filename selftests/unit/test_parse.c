/* selftests/unit/test_parse.c — durations and sizes: every accepted form, every refusal, overflow. */
#include <errno.h>

#include "parse.h"
#include "test.h"

struct num_case {
	const char *in;
	int rc;            /* expected return */
	uint64_t want;     /* expected value when rc == 0 */
};

static const struct num_case duration_cases[] = {
	{ "0", 0, 0 },
	{ "0s", 0, 0 },
	{ "0ms", 0, 0 },
	{ "1ms", 0, 1 },
	{ "250ms", 0, 250 },
	{ "2s", 0, 2000 },
	{ "10s", 0, 10000 },
	{ "5m", 0, 300000 },
	{ "1h", 0, 3600000 },
	{ "7d", 0, 604800000 },
	{ "18446744073709551615ms", 0, UINT64_MAX },
	{ "18446744073709551616ms", -ERANGE, 0 },
	{ "18446744073709552s", -ERANGE, 0 },
	{ "213503982335d", -ERANGE, 0 },
	{ "", -EINVAL, 0 },
	{ "10", -EINVAL, 0 },      /* bare number: seconds or milliseconds? refused */
	{ "s", -EINVAL, 0 },
	{ "1.5s", -EINVAL, 0 },
	{ "-1s", -EINVAL, 0 },
	{ "+1s", -EINVAL, 0 },
	{ " 1s", -EINVAL, 0 },
	{ "1s ", -EINVAL, 0 },
	{ "1 s", -EINVAL, 0 },
	{ "1S", -EINVAL, 0 },
	{ "1sec", -EINVAL, 0 },
	{ "1msx", -EINVAL, 0 },
	{ "1h30m", -EINVAL, 0 },
	{ "1us", -EINVAL, 0 },
	{ "1w", -EINVAL, 0 },
};

static const struct num_case size_cases[] = {
	{ "0", 0, 0 },
	{ "512", 0, 512 },
	{ "16k", 0, 16384 },
	{ "16K", 0, 16384 },
	{ "16kb", 0, 16384 },
	{ "16KB", 0, 16384 },
	{ "1m", 0, 1048576 },
	{ "1Mb", 0, 1048576 },
	{ "2g", 0, 2147483648ULL },
	{ "2GB", 0, 2147483648ULL },
	{ "18446744073709551615", 0, UINT64_MAX },
	{ "18446744073709551616", -ERANGE, 0 },
	{ "17179869184g", -ERANGE, 0 },
	{ "", -EINVAL, 0 },
	{ "k", -EINVAL, 0 },
	{ "1.5m", -EINVAL, 0 },
	{ "-1", -EINVAL, 0 },
	{ "512b", -EINVAL, 0 },    /* 'b' only after a unit, as documented */
	{ "1t", -EINVAL, 0 },
	{ "1kib", -EINVAL, 0 },
	{ "1kbb", -EINVAL, 0 },
	{ "1 k", -EINVAL, 0 },
	{ "16k ", -EINVAL, 0 },
};

static void check_duration(const struct num_case *tc)
{
	uint64_t v = 12345;
	int rc = parse_duration_ms(tc->in, &v);

	ASSERT_EQ(rc, tc->rc);
	if (tc->rc == 0)
		ASSERT_TRUE(v == tc->want);
	else
		ASSERT_TRUE(v == 12345); /* untouched on failure */
}

static void check_size(const struct num_case *tc)
{
	uint64_t v = 12345;
	int rc = parse_size(tc->in, &v);

	ASSERT_EQ(rc, tc->rc);
	if (tc->rc == 0)
		ASSERT_TRUE(v == tc->want);
	else
		ASSERT_TRUE(v == 12345);
}

static void test_null_input(void)
{
	uint64_t v;

	ASSERT_EQ(parse_duration_ms(NULL, &v), -EINVAL);
	ASSERT_EQ(parse_size(NULL, &v), -EINVAL);
}

int main(void)
{
	char name[80];

	for (size_t i = 0; i < sizeof(duration_cases) / sizeof(duration_cases[0]); i++) {
		snprintf(name, sizeof(name), "duration \"%s\"", duration_cases[i].in);
		RUN_NAMED(name, check_duration, &duration_cases[i]);
	}
	for (size_t i = 0; i < sizeof(size_cases) / sizeof(size_cases[0]); i++) {
		snprintf(name, sizeof(name), "size \"%s\"", size_cases[i].in);
		RUN_NAMED(name, check_size, &size_cases[i]);
	}
	RUN(test_null_input);
	return test_done();
}
