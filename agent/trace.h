/* agent/trace.h — request ids and W3C trace context (traceparent): parse, validate, generate. */
#ifndef OPENCLAW_TRACE_H
#define OPENCLAW_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACE_ID_HEX 32          /* trace-id: 16 bytes as lower-case hex */
#define TRACE_SPAN_HEX 16        /* parent-id / span id: 8 bytes as hex */
#define TRACE_PARENT_LEN 55      /* "00-" trace "-" span "-" flags */
#define TRACE_REQUEST_ID_MAX 128 /* longest incoming request id kept */
#define TRACE_FLAG_SAMPLED 0x01

/* A parsed traceparent (ids kept as the hex text they travel as). */
struct trace_parent {
	char trace_id[TRACE_ID_HEX + 1];
	char parent_id[TRACE_SPAN_HEX + 1];
	uint8_t flags;
};

/*
 * Parses a traceparent value per W3C Trace Context level 1: version two
 * lower-case hex digits other than "ff"; version 00 is exactly 55 bytes, a
 * later version at least 55 with '-' after the flags; ids lower-case hex and
 * not all zeros. Returns 0 or -EINVAL.
 */
int trace_parse(const char *v, size_t n, struct trace_parent *out);

/* Writes "00-trace-span-flags" and a NUL into out (TRACE_PARENT_LEN + 1 bytes). */
void trace_format(char *out, const char *trace_id, const char *span_id, uint8_t flags);

/* Fills nhex lower-case hex digits (and a NUL) from the xorshift64 state; never all zeros. */
void trace_random_hex(uint64_t *rng, char *out, size_t nhex);

/* An incoming request id worth keeping: 1..max bytes of [A-Za-z0-9._-]. */
bool trace_request_id_ok(const char *v, size_t n, size_t max);

#endif
