/* agent/jsonw.c — the JSON writer. */
#include "jsonw.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void jsonw_init(struct jsonw *w, char *buf, size_t cap)
{
	w->buf = buf;
	w->cap = cap;
	w->len = 0;
	w->overflow = cap == 0;
	w->need_comma = false;
}

static void put(struct jsonw *w, const char *s, size_t n)
{
	/* Keep one byte for the terminating NUL. */
	if (w->overflow || w->len + n + 1 > w->cap) {
		w->overflow = true;
		return;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
}

static void putc_(struct jsonw *w, char c)
{
	put(w, &c, 1);
}

static void put_escaped(struct jsonw *w, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;

	putc_(w, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
			continue;
		put(w, s + run, i - run);
		run = i + 1;
		switch (c) {
		case '"': put(w, "\\\"", 2); break;
		case '\\': put(w, "\\\\", 2); break;
		case '\n': put(w, "\\n", 2); break;
		case '\r': put(w, "\\r", 2); break;
		case '\t': put(w, "\\t", 2); break;
		default: {
			char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			put(w, u, 6);
		}
		}
	}
	put(w, s + run, n - run);
	putc_(w, '"');
}

static void member(struct jsonw *w, const char *key)
{
	if (w->need_comma)
		putc_(w, ',');
	if (key) {
		put_escaped(w, key, strlen(key));
		putc_(w, ':');
	}
	w->need_comma = true;
}

void jsonw_obj_begin(struct jsonw *w)
{
	if (w->need_comma)
		putc_(w, ',');
	putc_(w, '{');
	w->need_comma = false;
}

void jsonw_obj_begin_key(struct jsonw *w, const char *key)
{
	member(w, key);
	putc_(w, '{');
	w->need_comma = false;
}

void jsonw_obj_end(struct jsonw *w)
{
	putc_(w, '}');
	w->need_comma = true;
}

void jsonw_arr_begin(struct jsonw *w, const char *key)
{
	member(w, key);
	putc_(w, '[');
	w->need_comma = false;
}

void jsonw_arr_end(struct jsonw *w)
{
	putc_(w, ']');
	w->need_comma = true;
}

void jsonw_strn(struct jsonw *w, const char *key, const char *s, size_t n)
{
	member(w, key);
	put_escaped(w, s, n);
}

void jsonw_str(struct jsonw *w, const char *key, const char *s)
{
	if (!s) {
		jsonw_null(w, key);
		return;
	}
	jsonw_strn(w, key, s, strlen(s));
}

void jsonw_u64(struct jsonw *w, const char *key, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);

	member(w, key);
	put(w, tmp, n);
}

void jsonw_i64(struct jsonw *w, const char *key, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);

	member(w, key);
	put(w, tmp, n);
}

void jsonw_bool(struct jsonw *w, const char *key, bool v)
{
	member(w, key);
	put(w, v ? "true" : "false", v ? 4 : 5);
}

void jsonw_null(struct jsonw *w, const char *key)
{
	member(w, key);
	put(w, "null", 4);
}

void jsonw_ms(struct jsonw *w, const char *key, uint64_t ns)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64 ".%03" PRIu64, ns / 1000000,
			 (ns / 1000) % 1000);

	member(w, key);
	put(w, tmp, n);
}

long jsonw_finish(struct jsonw *w)
{
	if (w->overflow)
		return -1;
	w->buf[w->len] = '\0';
	return (long)w->len;
}
