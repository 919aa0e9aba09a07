/* agent/parse.c — the one parser each for durations ("250ms", "5m") and sizes ("16k", "1mb"). */
#include "parse.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

/* Reads a run of decimal digits; -EINVAL when there is none, -ERANGE when it overflows. */
static int parse_digits(const char **sp, uint64_t *out)
{
	const char *s = *sp;
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*sp = s;
	*out = v;
	return 0;
}

static int mul_checked(uint64_t v, uint64_t m, uint64_t *out)
{
	if (m && v > UINT64_MAX / m)
		return -ERANGE;
	*out = v * m;
	return 0;
}

int parse_duration_ms(const char *s, uint64_t *out_ms)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {
		/* "ms" before "m" so the longer unit wins */
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
	};
	uint64_t v;
	int rc;

	if (!s)
		return -EINVAL;
	rc = parse_digits(&s, &v);
	if (rc)
		return rc;
	if (*s == '\0') {
		/* A bare number is ambiguous between s and ms; only zero means the same in both. */
		if (v != 0)
			return -EINVAL;
		*out_ms = 0;
		return 0;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		const char *u = units[i].unit, *p = s;

		while (*u && *p == *u) {
			u++;
			p++;
		}
		if (*u == '\0' && *p == '\0')
			return mul_checked(v, units[i].ms, out_ms);
	}
	return -EINVAL;
}

int parse_size(const char *s, uint64_t *out)
{
	uint64_t v, mult = 1;
	int rc;

	if (!s)
		return -EINVAL;
	rc = parse_digits(&s, &v);
	if (rc)
		return rc;
	switch (*s) {
	case 'k':
	case 'K':
		mult = 1ULL << 10;
		break;
	case 'm':
	case 'M':
		mult = 1ULL << 20;
		break;
	case 'g':
	case 'G':
		mult = 1ULL << 30;
		break;
	}
	if (mult != 1)
		s++;
	/* "b" is only the tail of "kb"/"mb"/"gb"; a lone "512b" is not accepted, as documented. */
	if (mult != 1 && (*s == 'b' || *s == 'B'))
		s++;
	if (*s != '\0')
		return -EINVAL;
	return mul_checked(v, mult, out);
}
