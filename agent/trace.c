/* agent/trace.c — request ids and W3C traceparent: strict parsing, formatting, random ids. */
#include "trace.h"

#include <errno.h>
#include <string.h>

static const char hexdig[] = "0123456789abcdef";

/* Lower-case hex only: the spec forbids upper case, and a mixed id would split one trace in two. */
static bool hex_ok(const char *s, size_t n, bool *all_zero)
{
	*all_zero = true;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
		if (c != '0')
			*all_zero = false;
	}
	return true;
}

static unsigned hexval(char c)
{
	return c <= '9' ? (unsigned)(c - '0') : (unsigned)(c - 'a' + 10);
}

int trace_parse(const char *v, size_t n, struct trace_parent *out)
{
	bool zero;

	if (!v || n < TRACE_PARENT_LEN)
		return -EINVAL;
	if (!hex_ok(v, 2, &zero) || !memcmp(v, "ff", 2))
		return -EINVAL;
	/* Version 00 has exactly these fields; a later version may append "-more". */
	if (!memcmp(v, "00", 2) && n != TRACE_PARENT_LEN)
		return -EINVAL;
	if (n > TRACE_PARENT_LEN && v[TRACE_PARENT_LEN] != '-')
		return -EINVAL;
	if (v[2] != '-' || v[35] != '-' || v[52] != '-')
		return -EINVAL;
	if (!hex_ok(v + 3, TRACE_ID_HEX, &zero) || zero)
		return -EINVAL;
	if (!hex_ok(v + 36, TRACE_SPAN_HEX, &zero) || zero)
		return -EINVAL;
	if (!hex_ok(v + 53, 2, &zero))
		return -EINVAL;
	memcpy(out->trace_id, v + 3, TRACE_ID_HEX);
	out->trace_id[TRACE_ID_HEX] = '\0';
	memcpy(out->parent_id, v + 36, TRACE_SPAN_HEX);
	out->parent_id[TRACE_SPAN_HEX] = '\0';
	out->flags = (uint8_t)(hexval(v[53]) << 4 | hexval(v[54]));
	return 0;
}

void trace_format(char *out, const char *trace_id, const char *span_id, uint8_t flags)
{
	memcpy(out, "00-", 3);
	memcpy(out + 3, trace_id, TRACE_ID_HEX);
	out[35] = '-';
	memcpy(out + 36, span_id, TRACE_SPAN_HEX);
	out[52] = '-';
	out[53] = hexdig[flags >> 4];
	out[54] = hexdig[flags & 15];
	out[55] = '\0';
}

void trace_random_hex(uint64_t *rng, char *out, size_t nhex)
{
	bool zero = true;

	do {
		for (size_t i = 0; i < nhex; i += 16) {
			uint64_t x;

			/* xorshift64: fast and per worker; ids need uniqueness, not secrecy. */
			*rng ^= *rng << 13;
			*rng ^= *rng >> 7;
			*rng ^= *rng << 17;
			x = *rng;
			for (size_t j = 0; j < 16 && i + j < nhex; j++) {
				out[i + j] = hexdig[(x >> (60 - 4 * j)) & 15];
				if (out[i + j] != '0')
					zero = false;
			}
		}
	} while (zero);
	out[nhex] = '\0';
}

bool trace_request_id_ok(const char *v, size_t n, size_t max)
{
	if (!v || n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = v[i];

		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      ch == '-' || ch == '_' || ch == '.'))
			return false;
	}
	return true;
}
