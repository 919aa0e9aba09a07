/* agent/jsonw.h — the one JSON writer: appends into a caller buffer, escaping strings, no allocation. */
#ifndef OPENCLAW_JSONW_H
#define OPENCLAW_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct jsonw {
	char *buf;      /* output, not NUL-terminated until jsonw_finish */
	size_t cap;     /* bytes available in buf */
	size_t len;     /* bytes written */
	bool overflow;  /* something did not fit: the output is unusable */
	bool need_comma; /* the next member needs a separating comma */
};

void jsonw_init(struct jsonw *w, char *buf, size_t cap);
void jsonw_obj_begin(struct jsonw *w);
/* An object as a member: "key":{ (key may be NULL inside arrays). */
void jsonw_obj_begin_key(struct jsonw *w, const char *key);
void jsonw_obj_end(struct jsonw *w);
void jsonw_arr_begin(struct jsonw *w, const char *key);
void jsonw_arr_end(struct jsonw *w);
/* Members: key may be NULL inside arrays. */
void jsonw_str(struct jsonw *w, const char *key, const char *s);
void jsonw_strn(struct jsonw *w, const char *key, const char *s, size_t n);
void jsonw_u64(struct jsonw *w, const char *key, uint64_t v);
void jsonw_i64(struct jsonw *w, const char *key, int64_t v);
void jsonw_bool(struct jsonw *w, const char *key, bool v);
void jsonw_null(struct jsonw *w, const char *key);
/* Milliseconds with three decimals from a nanosecond count ("12.345"). */
void jsonw_ms(struct jsonw *w, const char *key, uint64_t ns);
/* NUL-terminates; returns the length, or -1 when anything overflowed. */
long jsonw_finish(struct jsonw *w);

#endif
