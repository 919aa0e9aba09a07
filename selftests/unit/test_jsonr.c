/* selftests/unit/test_jsonr.c — the JSON reader: values, nesting, escapes, malformed input. */
#include <string.h>

#include "jsonr.h"
#include "test.h"

static struct jsonr_node nodes[64];
static char strbuf[1024];

static int parse(struct jsonr *j, const char *s)
{
	return jsonr_parse(j, s, strlen(s), nodes, 64, strbuf, sizeof(strbuf));
}

static void test_object_members(void)
{
	struct jsonr j;

	ASSERT_EQ(parse(&j, " {\"cmd\":\"block.add\",\"ttl\":600,\"neg\":-3,\"f\":1.5,"
			    "\"on\":true,\"off\":false,\"none\":null,\"list\":[\"a\",\"b\",{}]} "),
		  0);
	const struct jsonr_node *root = &j.nodes[0];
	ASSERT_EQ(root->type, JSONR_OBJECT);
	ASSERT_EQ(root->len, 8);
	ASSERT_STREQ(jsonr_get_str(&j, root, "cmd"), "block.add");
	ASSERT_EQ(jsonr_get_int(&j, root, "ttl", -1), 600);
	ASSERT_EQ(jsonr_get_int(&j, root, "neg", 0), -3);
	ASSERT_EQ(jsonr_get_int(&j, root, "f", 7), 7); /* not an integer */
	ASSERT_TRUE(jsonr_get(&j, root, "on")->b);
	ASSERT_FALSE(jsonr_get(&j, root, "off")->b);
	ASSERT_EQ(jsonr_get(&j, root, "none")->type, JSONR_NULL);
	ASSERT_TRUE(jsonr_get(&j, root, "missing") == NULL);
	const struct jsonr_node *list = jsonr_get(&j, root, "list");
	ASSERT_EQ(list->len, 3);
	const struct jsonr_node *e = jsonr_child(&j, list);
	ASSERT_STREQ(e->str, "a");
	e = jsonr_next(&j, e);
	ASSERT_STREQ(e->str, "b");
	e = jsonr_next(&j, e);
	ASSERT_EQ(e->type, JSONR_OBJECT);
	ASSERT_TRUE(jsonr_next(&j, e) == NULL);
}

static void test_escapes_and_unicode(void)
{
	struct jsonr j;

	ASSERT_EQ(parse(&j, "\"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00\""), 0);
	ASSERT_STREQ(j.nodes[0].str, "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
}

static void test_nested_siblings_skip_subtrees(void)
{
	struct jsonr j;

	ASSERT_EQ(parse(&j, "{\"a\":{\"x\":[1,2,[3]]},\"b\":2}"), 0);
	ASSERT_EQ(jsonr_get_int(&j, &j.nodes[0], "b", 0), 2);
}

static void test_malformed_rejected(void)
{
	static const char *bad[] = {
		"", "{", "{\"a\"}", "{\"a\":}", "[1,]", "{\"a\":1,}", "01", "1.", "-", "tru",
		"\"unterminated", "\"\\x\"", "\"\\ud800\"", "\"\\u0000\"", "{} x", "\"a\x01\"",
		"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
	};
	struct jsonr j;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(&j, bad[i]) != -22) {
			printf("#   accepted: %s\n", bad[i]);
			ASSERT_TRUE(0);
		}
		ASSERT_TRUE(j.err != NULL);
	}
}

static void test_node_exhaustion_is_an_error(void)
{
	struct jsonr j;
	char big[512] = "[";

	for (int i = 0; i < 100; i++)
		strcat(big, i ? ",1" : "1");
	strcat(big, "]");
	ASSERT_EQ(jsonr_parse(&j, big, strlen(big), nodes, 64, strbuf, sizeof(strbuf)), -22);
	ASSERT_STREQ(j.err, "document too large");
}

int main(void)
{
	RUN(test_object_members);
	RUN(test_escapes_and_unicode);
	RUN(test_nested_siblings_skip_subtrees);
	RUN(test_malformed_rejected);
	RUN(test_node_exhaustion_is_an_error);
	return test_done();
}
