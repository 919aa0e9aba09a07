/* agent/jsonr.h — the one JSON reader: parses a document into caller-provided nodes (no allocation). */
#ifndef OPENCLAW_JSONR_H
#define OPENCLAW_JSONR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum jsonr_type { JSONR_NULL, JSONR_BOOL, JSONR_NUMBER, JSONR_STRING, JSONR_ARRAY, JSONR_OBJECT };

/* One value. Children of arrays/objects follow their parent in the node array. */
struct jsonr_node {
	enum jsonr_type type;
	uint32_t len;      /* string: bytes; array/object: number of direct children */
	uint32_t next;     /* index of the next sibling, 0 when none */
	uint32_t key;      /* object members: node index of the key string; else 0 */
	const char *str;   /* string: unescaped bytes (NUL-terminated) */
	double num;        /* number */
	bool b;            /* bool */
	bool is_int;       /* number had no fraction/exponent and fits int64 */
	int64_t i;         /* number as integer when is_int */
};

struct jsonr {
	struct jsonr_node *nodes; /* nodes[0] is the root after a successful parse */
	uint32_t cap, n;
	char *strbuf;             /* unescaped strings live here */
	size_t strcap, strlen;
	const char *err;          /* static reason on failure */
	size_t err_off;           /* byte offset of the failure */
};

/*
 * Parses text[0, len) as one JSON document (RFC 8259; depth ≤ 32). strbuf
 * must hold at least len + 1 bytes. Returns 0, or -EINVAL with err/err_off set
 * (also when nodes run out).
 */
int jsonr_parse(struct jsonr *j, const char *text, size_t len, struct jsonr_node *nodes,
		uint32_t cap, char *strbuf, size_t strcap);

/* Member of object node obj named key, or NULL. */
const struct jsonr_node *jsonr_get(const struct jsonr *j, const struct jsonr_node *obj,
				   const char *key);
/* First child of an array/object (NULL when empty) and the next sibling (NULL at the end). */
const struct jsonr_node *jsonr_child(const struct jsonr *j, const struct jsonr_node *n);
const struct jsonr_node *jsonr_next(const struct jsonr *j, const struct jsonr_node *n);
/* The key string of an object member. */
const char *jsonr_key(const struct jsonr *j, const struct jsonr_node *member);

/* Convenience: string member or NULL; integer member or def. */
const char *jsonr_get_str(const struct jsonr *j, const struct jsonr_node *obj, const char *key);
int64_t jsonr_get_int(const struct jsonr *j, const struct jsonr_node *obj, const char *key,
		      int64_t def);

#endif
