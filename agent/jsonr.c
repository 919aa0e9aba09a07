/* agent/jsonr.c — the JSON reader: recursive descent into a flat node array. */
#include "jsonr.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define JSONR_MAX_DEPTH 32

struct cursor {
	struct jsonr *j;
	const char *s;
	size_t len, pos;
};

static int fail(struct cursor *c, const char *why)
{
	if (!c->j->err) {
		c->j->err = why;
		c->j->err_off = c->pos;
	}
	return -EINVAL;
}

static void skip_ws(struct cursor *c)
{
	while (c->pos < c->len && (c->s[c->pos] == ' ' || c->s[c->pos] == '\t' ||
				   c->s[c->pos] == '\n' || c->s[c->pos] == '\r'))
		c->pos++;
}

static int new_node(struct cursor *c, enum jsonr_type t, uint32_t *idx)
{
	struct jsonr *j = c->j;

	if (j->n >= j->cap)
		return fail(c, "document too large");
	*idx = j->n++;
	memset(&j->nodes[*idx], 0, sizeof(j->nodes[*idx]));
	j->nodes[*idx].type = t;
	return 0;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static int read_hex4(struct cursor *c, unsigned *out)
{
	unsigned v = 0;

	if (c->len - c->pos < 4)
		return fail(c, "truncated \\u escape");
	for (int i = 0; i < 4; i++) {
		int h = hexval(c->s[c->pos + i]);

		if (h < 0)
			return fail(c, "bad \\u escape");
		v = v << 4 | h;
	}
	c->pos += 4;
	*out = v;
	return 0;
}

static void put_utf8(struct jsonr *j, unsigned cp)
{
	char *o = j->strbuf + j->strlen;

	if (cp < 0x80) {
		o[0] = cp;
		j->strlen += 1;
	} else if (cp < 0x800) {
		o[0] = 0xc0 | cp >> 6;
		o[1] = 0x80 | (cp & 0x3f);
		j->strlen += 2;
	} else if (cp < 0x10000) {
		o[0] = 0xe0 | cp >> 12;
		o[1] = 0x80 | ((cp >> 6) & 0x3f);
		o[2] = 0x80 | (cp & 0x3f);
		j->strlen += 3;
	} else {
		o[0] = 0xf0 | cp >> 18;
		o[1] = 0x80 | ((cp >> 12) & 0x3f);
		o[2] = 0x80 | ((cp >> 6) & 0x3f);
		o[3] = 0x80 | (cp & 0x3f);
		j->strlen += 4;
	}
}

/* Unescaped output is never longer than the input, so strbuf of len+1 suffices. */
static int parse_string(struct cursor *c, uint32_t *idx)
{
	struct jsonr *j = c->j;
	size_t start;
	int err = new_node(c, JSONR_STRING, idx);

	if (err)
		return err;
	c->pos++; /* opening quote */
	start = j->strlen;
	while (c->pos < c->len) {
		unsigned char ch = c->s[c->pos];

		if (j->strlen + 5 > j->strcap)
			return fail(c, "string buffer too small");
		if (ch == '"') {
			c->pos++;
			j->strbuf[j->strlen++] = '\0';
			j->nodes[*idx].str = j->strbuf + start;
			j->nodes[*idx].len = j->strlen - start - 1;
			return 0;
		}
		if (ch < 0x20)
			return fail(c, "control character in string");
		if (ch != '\\') {
			j->strbuf[j->strlen++] = ch;
			c->pos++;
			continue;
		}
		if (++c->pos >= c->len)
			break;
		ch = c->s[c->pos++];
		switch (ch) {
		case '"': case '\\': case '/': j->strbuf[j->strlen++] = ch; break;
		case 'b': j->strbuf[j->strlen++] = '\b'; break;
		case 'f': j->strbuf[j->strlen++] = '\f'; break;
		case 'n': j->strbuf[j->strlen++] = '\n'; break;
		case 'r': j->strbuf[j->strlen++] = '\r'; break;
		case 't': j->strbuf[j->strlen++] = '\t'; break;
		case 'u': {
			unsigned cp, lo;

			if (read_hex4(c, &cp))
				return -EINVAL;
			if (cp >= 0xd800 && cp < 0xdc00) {
				if (c->len - c->pos < 6 || c->s[c->pos] != '\\' || c->s[c->pos + 1] != 'u')
					return fail(c, "lone surrogate");
				c->pos += 2;
				if (read_hex4(c, &lo))
					return -EINVAL;
				if (lo < 0xdc00 || lo > 0xdfff)
					return fail(c, "bad surrogate pair");
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				return fail(c, "lone surrogate");
			}
			if (cp == 0)
				return fail(c, "NUL in string");
			put_utf8(j, cp);
			break;
		}
		default:
			return fail(c, "bad escape");
		}
	}
	return fail(c, "unterminated string");
}

static int parse_number(struct cursor *c, uint32_t *idx)
{
	size_t start = c->pos;
	bool integer = true;
	char tmp[64];
	int err;

	if (c->s[c->pos] == '-')
		c->pos++;
	if (c->pos >= c->len || c->s[c->pos] < '0' || c->s[c->pos] > '9')
		return fail(c, "bad number");
	if (c->s[c->pos] == '0' && c->pos + 1 < c->len && c->s[c->pos + 1] >= '0' &&
	    c->s[c->pos + 1] <= '9')
		return fail(c, "leading zero");
	while (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9')
		c->pos++;
	if (c->pos < c->len && c->s[c->pos] == '.') {
		integer = false;
		c->pos++;
		if (c->pos >= c->len || c->s[c->pos] < '0' || c->s[c->pos] > '9')
			return fail(c, "bad fraction");
		while (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9')
			c->pos++;
	}
	if (c->pos < c->len && (c->s[c->pos] == 'e' || c->s[c->pos] == 'E')) {
		integer = false;
		c->pos++;
		if (c->pos < c->len && (c->s[c->pos] == '+' || c->s[c->pos] == '-'))
			c->pos++;
		if (c->pos >= c->len || c->s[c->pos] < '0' || c->s[c->pos] > '9')
			return fail(c, "bad exponent");
		while (c->pos < c->len && c->s[c->pos] >= '0' && c->s[c->pos] <= '9')
			c->pos++;
	}
	if (c->pos - start >= sizeof(tmp))
		return fail(c, "number too long");
	memcpy(tmp, c->s + start, c->pos - start);
	tmp[c->pos - start] = '\0';
	err = new_node(c, JSONR_NUMBER, idx);
	if (err)
		return err;
	struct jsonr_node *n = &c->j->nodes[*idx];
	n->num = strtod(tmp, NULL);
	if (integer) {
		errno = 0;
		long long v = strtoll(tmp, NULL, 10);

		if (!errno) {
			n->is_int = true;
			n->i = v;
		}
	}
	return 0;
}

static int parse_value(struct cursor *c, uint32_t *idx, int depth);

static int parse_container(struct cursor *c, uint32_t *idx, int depth, bool object)
{
	struct jsonr *j = c->j;
	uint32_t prev = 0, count = 0;
	int err = new_node(c, object ? JSONR_OBJECT : JSONR_ARRAY, idx);

	if (err)
		return err;
	if (depth > JSONR_MAX_DEPTH)
		return fail(c, "nested too deeply");
	c->pos++;
	skip_ws(c);
	if (c->pos < c->len && c->s[c->pos] == (object ? '}' : ']')) {
		c->pos++;
		return 0;
	}
	for (;;) {
		uint32_t key = 0, val;

		skip_ws(c);
		if (object) {
			if (c->pos >= c->len || c->s[c->pos] != '"')
				return fail(c, "expected a member name");
			if (parse_string(c, &key))
				return -EINVAL;
			skip_ws(c);
			if (c->pos >= c->len || c->s[c->pos] != ':')
				return fail(c, "expected ':'");
			c->pos++;
			skip_ws(c);
		}
		if (parse_value(c, &val, depth + 1))
			return -EINVAL;
		j->nodes[val].key = key;
		if (prev)
			j->nodes[prev].next = val;
		prev = val;
		count++;
		skip_ws(c);
		if (c->pos < c->len && c->s[c->pos] == ',') {
			c->pos++;
			continue;
		}
		if (c->pos < c->len && c->s[c->pos] == (object ? '}' : ']')) {
			c->pos++;
			j->nodes[*idx].len = count;
			return 0;
		}
		return fail(c, object ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

static int literal(struct cursor *c, const char *word)
{
	size_t n = strlen(word);

	if (c->len - c->pos < n || memcmp(c->s + c->pos, word, n))
		return fail(c, "unexpected token");
	c->pos += n;
	return 0;
}

static int parse_value(struct cursor *c, uint32_t *idx, int depth)
{
	skip_ws(c);
	if (c->pos >= c->len)
		return fail(c, "unexpected end");
	switch (c->s[c->pos]) {
	case '{':
		return parse_container(c, idx, depth, true);
	case '[':
		return parse_container(c, idx, depth, false);
	case '"':
		return parse_string(c, idx);
	case 't':
	case 'f': {
		bool t = c->s[c->pos] == 't';

		if (literal(c, t ? "true" : "false") || new_node(c, JSONR_BOOL, idx))
			return -EINVAL;
		c->j->nodes[*idx].b = t;
		return 0;
	}
	case 'n':
		if (literal(c, "null"))
			return -EINVAL;
		return new_node(c, JSONR_NULL, idx);
	default:
		return parse_number(c, idx);
	}
}

int jsonr_parse(struct jsonr *j, const char *text, size_t len, struct jsonr_node *nodes,
		uint32_t cap, char *strbuf, size_t strcap)
{
	struct cursor c = { .j = j, .s = text, .len = len };
	uint32_t root;

	memset(j, 0, sizeof(*j));
	j->nodes = nodes;
	j->cap = cap;
	j->strbuf = strbuf;
	j->strcap = strcap;
	if (strcap < len + 1)
		return fail(&c, "string buffer too small");
	if (parse_value(&c, &root, 0))
		return -EINVAL;
	skip_ws(&c);
	if (c.pos != len)
		return fail(&c, "trailing characters");
	return 0;
}

const struct jsonr_node *jsonr_child(const struct jsonr *j, const struct jsonr_node *n)
{
	if (!n || (n->type != JSONR_ARRAY && n->type != JSONR_OBJECT) || !n->len)
		return NULL;
	/* The first child follows its container; in an object its key string comes first. */
	return n->type == JSONR_OBJECT ? n + 2 : n + 1;
}

const struct jsonr_node *jsonr_next(const struct jsonr *j, const struct jsonr_node *n)
{
	return n && n->next ? &j->nodes[n->next] : NULL;
}

const char *jsonr_key(const struct jsonr *j, const struct jsonr_node *member)
{
	return member && member->key ? j->nodes[member->key].str : NULL;
}

const struct jsonr_node *jsonr_get(const struct jsonr *j, const struct jsonr_node *obj,
				   const char *key)
{
	if (!obj || obj->type != JSONR_OBJECT)
		return NULL;
	for (const struct jsonr_node *m = jsonr_child(j, obj); m; m = jsonr_next(j, m))
		if (!strcmp(jsonr_key(j, m), key))
			return m;
	return NULL;
}

const char *jsonr_get_str(const struct jsonr *j, const struct jsonr_node *obj, const char *key)
{
	const struct jsonr_node *n = jsonr_get(j, obj, key);

	return n && n->type == JSONR_STRING ? n->str : NULL;
}

int64_t jsonr_get_int(const struct jsonr *j, const struct jsonr_node *obj, const char *key,
		      int64_t def)
{
	const struct jsonr_node *n = jsonr_get(j, obj, key);

	return n && n->type == JSONR_NUMBER && n->is_int ? n->i : def;
}
