/* agent/parse.h — the one parser each for durations and sizes used by config and clawctl. */
#ifndef OPENCLAW_PARSE_H
#define OPENCLAW_PARSE_H

#include <stdint.h>

/*
 * Durations: an integer with a unit, "250ms", "2s", "5m", "1h", "7d"; "0" alone
 * is allowed. No fractions, no bare numbers (ambiguous between s and ms).
 * Stores milliseconds. Returns 0, -EINVAL (malformed) or -ERANGE (overflow).
 */
int parse_duration_ms(const char *s, uint64_t *out_ms);

/*
 * Sizes: bytes with an optional binary suffix, "512", "16k", "1m", "2g"
 * (k = 1024; upper or lower case; an optional trailing 'b'/'B' after the suffix).
 * Returns 0, -EINVAL or -ERANGE.
 */
int parse_size(const char *s, uint64_t *out);

#endif
