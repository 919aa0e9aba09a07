/* agent/guard_store.h — the guard's allow/block entries as the agent keeps them, and their file <state_dir>/guard.json. */
#ifndef OPENCLAW_GUARD_STORE_H
#define OPENCLAW_GUARD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"

#define GUARD_STORE_FILE "guard.json"
#define GUARD_REASON_MAX 200 /* bytes of an entry's reason */

enum guard_list_kind {
	GUARD_LIST_ALLOW = 0,
	GUARD_LIST_BLOCK = 1,
};

/* One allow or block entry: a prefix, who added it, and when it ends. */
struct guard_entry {
	enum guard_list_kind list;
	struct net_cidr cidr;     /* IPv4-mapped IPv6 prefixes are stored as IPv4 */
	uint32_t origin;          /* enum guard_origin (include/openclaw/guard.h) */
	int64_t expires_ms;       /* CLOCK_REALTIME ms when it ends; 0 = never (what the file keeps) */
	uint64_t expires_ns;      /* CLOCK_MONOTONIC ns when it ends; 0 = never (what XDP compares) */
	char reason[GUARD_REASON_MAX + 1];
};

/*
 * Writes entries to path atomically (a temporary file in the same directory,
 * fsync, rename) with mode 0600. Expiries are written as wall-clock
 * milliseconds, so they mean the same after a reboot.
 * Returns 0 or a negative errno with a one-line reason in err.
 */
int guard_store_save(const char *path, const struct guard_entry *v, size_t n, char *err,
		     size_t errlen);

/*
 * Reads path. Entries whose expiry is at or before now_wall_ms are left out;
 * the others get expires_ns = now_mono_ns + (expires_ms - now_wall_ms).
 * A missing file gives zero entries. A file that is not owned by the
 * effective user or whose mode grants group or other any access is refused
 * (-EPERM): whoever can write it could allowlist themselves.
 * On success *out is malloc'ed (free it) with *nout entries.
 */
int guard_store_load(const char *path, int64_t now_wall_ms, uint64_t now_mono_ns,
		     struct guard_entry **out, size_t *nout, char *err, size_t errlen);

/* "10.0.0.0/8", "2001:db8::/32": buf needs GUARD_CIDR_STRLEN bytes. Returns buf. */
#define GUARD_CIDR_STRLEN 50
char *guard_cidr_format(const struct net_cidr *c, char *buf, size_t len);

/* "config", "manual", "auto" (the JSON "source" values); NULL for anything else. */
const char *guard_origin_name(uint32_t origin);

#endif
