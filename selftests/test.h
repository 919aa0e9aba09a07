/* selftests/test.h — TAP-emitting assertions and named subtests for the C unit tests. */
#ifndef OPENCLAW_SELFTESTS_TEST_H
#define OPENCLAW_SELFTESTS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage:
 *	static void test_foo(void) { ASSERT_EQ(1 + 1, 2); }
 *	int main(void) { RUN(test_foo); return test_done(); }
 *
 * Each RUN() prints one TAP line ("ok N - name" / "not ok N - name"); failed
 * assertions print both values and the line first, so a failure reads as a
 * sentence. An assertion failure ends the current subtest, not the program.
 * SKIP("why") marks the current subtest skipped.
 */

static int test__n, test__failed, test__cur_failed, test__cur_skipped;
static const char *test__skip_reason = "";

#define TEST_FAIL_(fmt, ...)                                                          \
	do {                                                                          \
		printf("#   %s:%d: " fmt "\n", __FILE__, __LINE__, ##__VA_ARGS__);       \
		test__cur_failed = 1;                                                 \
		return;                                                               \
	} while (0)

#define ASSERT_TRUE(c)                                                                \
	do {                                                                          \
		if (!(c))                                                             \
			TEST_FAIL_("expected true: %s", #c);                          \
	} while (0)
#define ASSERT_FALSE(c)                                                               \
	do {                                                                          \
		if (c)                                                                \
			TEST_FAIL_("expected false: %s", #c);                         \
	} while (0)

#define ASSERT_OP_(a, op, b)                                                          \
	do {                                                                          \
		long long a__ = (long long)(a), b__ = (long long)(b);                 \
		if (!(a__ op b__))                                                    \
			TEST_FAIL_("%s %s %s: %lld vs %lld", #a, #op, #b, a__, b__);  \
	} while (0)
#define ASSERT_EQ(a, b) ASSERT_OP_(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_OP_(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_OP_(a, <, b)
#define ASSERT_LE(a, b) ASSERT_OP_(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_OP_(a, >, b)
#define ASSERT_GE(a, b) ASSERT_OP_(a, >=, b)

#define ASSERT_STREQ(a, b)                                                            \
	do {                                                                          \
		const char *a__ = (a), *b__ = (b);                                    \
		if (!a__ || !b__ || strcmp(a__, b__))                                 \
			TEST_FAIL_("%s == %s: \"%s\" vs \"%s\"", #a, #b,              \
				   a__ ? a__ : "(null)", b__ ? b__ : "(null)");       \
	} while (0)
#define ASSERT_MEMEQ(a, alen, b)                                                      \
	do {                                                                          \
		const char *a__ = (const char *)(a), *b__ = (b);                      \
		size_t al__ = (alen), bl__ = strlen(b__);                             \
		if (al__ != bl__ || memcmp(a__, b__, al__))                           \
			TEST_FAIL_("%s == %s: \"%.*s\" vs \"%s\"", #a, #b, (int)al__, \
				   a__ ? a__ : "", b__);                              \
	} while (0)
#define ASSERT_STRSTR(hay, needle)                                                    \
	do {                                                                          \
		const char *h__ = (hay), *n__ = (needle);                             \
		if (!h__ || !strstr(h__, n__))                                        \
			TEST_FAIL_("%s contains %s: \"%s\" lacks \"%s\"", #hay,       \
				   #needle, h__ ? h__ : "(null)", n__);               \
	} while (0)

#define SKIP(why)                                                                     \
	do {                                                                          \
		test__cur_skipped = 1;                                                \
		test__skip_reason = (why);                                            \
		return;                                                               \
	} while (0)

static inline void test__report(const char *name)
{
	test__n++;
	if (test__cur_skipped)
		printf("ok %d - %s # SKIP %s\n", test__n, name, test__skip_reason ? test__skip_reason : "");
	else if (test__cur_failed) {
		printf("not ok %d - %s\n", test__n, name);
		test__failed++;
	} else
		printf("ok %d - %s\n", test__n, name);
	fflush(stdout);
	test__cur_failed = test__cur_skipped = 0;
}

/* Runs fn as one subtest named after it. */
#define RUN(fn)                                                                       \
	do {                                                                          \
		fn();                                                                 \
		test__report(#fn);                                                    \
	} while (0)

/* Runs fn(arg) as one subtest with an explicit name (table-driven tests). */
#define RUN_NAMED(name, fn, arg)                                                      \
	do {                                                                          \
		fn(arg);                                                              \
		test__report(name);                                                   \
	} while (0)

static inline int test_done(void)
{
	printf("1..%d\n", test__n);
	return test__failed ? 1 : 0;
}

#endif
