/* selftests/unit/test_jsonw.c — the JSON writer: escaping, nesting, overflow. */
#include "jsonw.h"
#include "test.h"

static void test_object_with_every_type(void)
{
	char buf[256];
	struct jsonw w;

	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "s", "a\"b\\c\n\x01");
	jsonw_u64(&w, "u", 18446744073709551615ull);
	jsonw_i64(&w, "i", -5);
	jsonw_bool(&w, "t", true);
	jsonw_null(&w, "n");
	jsonw_ms(&w, "ms", 12345678);
	jsonw_arr_begin(&w, "a");
	jsonw_u64(&w, NULL, 1);
	jsonw_obj_begin(&w);
	jsonw_str(&w, "k", NULL);
	jsonw_obj_end(&w);
	jsonw_arr_end(&w);
	jsonw_obj_end(&w);
	ASSERT_GT(jsonw_finish(&w), 0);
	ASSERT_STREQ(buf, "{\"s\":\"a\\\"b\\\\c\\n\\u0001\",\"u\":18446744073709551615,\"i\":-5,"
			  "\"t\":true,\"n\":null,\"ms\":12.345,\"a\":[1,{\"k\":null}]}");
}

static void test_overflow_is_reported_not_truncated(void)
{
	char buf[8];
	struct jsonw w;

	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "key", "value");
	jsonw_obj_end(&w);
	ASSERT_EQ(jsonw_finish(&w), -1);
}

static void test_binary_bytes_escaped(void)
{
	char buf[64];
	struct jsonw w;

	jsonw_init(&w, buf, sizeof(buf));
	jsonw_strn(&w, NULL, "a\0b\x7f", 4);
	ASSERT_GT(jsonw_finish(&w), 0);
	ASSERT_STREQ(buf, "\"a\\u0000b\\u007f\"");
}

int main(void)
{
	RUN(test_object_with_every_type);
	RUN(test_overflow_is_reported_not_truncated);
	RUN(test_binary_bytes_escaped);
	return test_done();
}
