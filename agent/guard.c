/* agent/guard.c — the packet guard's agent side: pinned load, XDP links per interface, lists and expiry, auto-ban from L7, control commands. */
#include "guard.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/if_link.h>
#include <linux/magic.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/socket.h>

#include "config.h"
#include "control.h"
#include "guard_store.h"
#include "log.h"
#include "parse.h"
#include "xdp_guard.skel.h"

/* The link pin's file name prefix, without the default directory it is joined to in guard.h. */
#define LINK_PREFIX (GUARD_PIN_LINK_PREFIX + sizeof(GUARD_PIN_DIR))

#define RING_SIZE 4096            /* report events per worker ring (power of two) */
#define BAN_MAX_SOURCES 8192      /* sources whose rejections are counted at once */
#define EVENT_LOG_PER_SEC 5       /* drop samples logged per second; the rest are summed */
#define TICK_MS 100               /* guard thread wake-up: rings drained at least this often */
#define STATUS_MAX 600

/* One (source, status) the proxy answered: what a worker hands the guard thread. */
struct guard_report_ev {
	struct guard_src_key key; /* family + address, IPv6 already masked */
	uint16_t status;
};

/* Single producer (a worker), single consumer (the guard thread). */
struct guard_ring {
	_Atomic uint32_t head __attribute__((aligned(64))); /* written by the worker */
	_Atomic uint64_t dropped;                          /* events lost to a full ring; worker writes */
	_Atomic uint32_t tail __attribute__((aligned(64))); /* written by the guard thread */
	struct guard_report_ev ev[RING_SIZE];
};

struct guard_iface {
	char name[IF_NAMESIZE];
	char pin[PATH_MAX];   /* pinned link path */
	int ifindex;          /* 0 while the interface does not exist */
	int link_fd;          /* -1 while not attached */
	uint32_t link_id;
	bool adopted;         /* the link was left pinned by an earlier clawd */
};

struct guard {
	const struct config *cfg;
	const struct cfg_guard *gc;
	char state_path[PATH_MAX];
	struct xdp_guard *skel;
	int prog_fd;
	uint32_t prog_id;

	pthread_mutex_t lock;          /* everything below up to the thread part */
	struct guard_entry *ents;      /* allow and block entries, all origins */
	size_t nents, cap;
	struct guard_iface *ifs;
	unsigned nifs;
	bool detached;                 /* guard.detach ran: do not re-attach */
	struct nl_sock *nlq;           /* link queries */
	struct guard_stat prev[GUARD_R_MAX]; /* guard.stats: the previous sample */
	uint64_t prev_ns;              /* when it was taken; 0 = none yet */
	uint64_t bans;                 /* auto-bans since start */

	bool ban_status[STATUS_MAX];   /* statuses that count for auto-ban */
	struct guard_bans banctr;      /* guard thread only */
	struct guard_ring *rings;
	unsigned nrings;

	pthread_t thread;
	bool running;
	int stop_fd;
	struct ring_buffer *rb;
	struct nl_sock *nlmon;         /* RTNLGRP_LINK notifications */
	bool rescan;                   /* a link changed: check the interfaces */
	uint64_t log_sec;              /* second of the current event-log budget */
	unsigned log_lines;
	uint64_t log_suppressed;
};

/* ---- small helpers ------------------------------------------------------------ */

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void iso_time_ms(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *guard_fmt_duration(uint64_t ms, char *buf, size_t len)
{
	static const struct { uint64_t ms; const char *unit; } units[] = {
		{ 86400000ULL, "d" }, { 3600000ULL, "h" }, { 60000ULL, "m" }, { 1000ULL, "s" },
	};

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (ms && !(ms % units[i].ms)) {
			snprintf(buf, len, "%" PRIu64 "%s", ms / units[i].ms, units[i].unit);
			return buf;
		}
	snprintf(buf, len, "%" PRIu64 "ms", ms);
	return buf;
}

/* XDP sees an IPv4 packet as IPv4: ::ffff:a.b.c.d/>=96 becomes a.b.c.d/(n-96). */
static void cidr_normalize(struct net_cidr *c)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (c->family == AF_INET6 && c->prefix >= 96 && !memcmp(c->addr, mapped, 12)) {
		memmove(c->addr, c->addr + 12, 4);
		memset(c->addr + 4, 0, 12);
		c->family = AF_INET;
		c->prefix -= 96;
	}
}

static bool cidr_eq(const struct net_cidr *a, const struct net_cidr *b)
{
	return a->family == b->family && a->prefix == b->prefix &&
	       !memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16);
}

static void mask_bits(uint8_t *addr, unsigned nbytes, unsigned bits)
{
	for (unsigned i = 0; i < nbytes; i++) {
		if (bits >= 8) {
			bits -= 8;
			continue;
		}
		addr[i] &= (uint8_t)(0xff00u >> bits);
		bits = 0;
	}
}

/* A peer address as the XDP buckets key it: IPv4, or IPv6 masked to v6_prefix bits. */
static bool src_key(const struct sockaddr *sa, uint32_t v6_prefix, struct guard_src_key *k)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(k, 0, sizeof(*k));
	if (sa->sa_family == AF_INET) {
		k->family = GUARD_AF_INET;
		memcpy(k->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;
	const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

	if (!memcmp(a, mapped, 12)) {
		k->family = GUARD_AF_INET;
		memcpy(k->addr, a + 12, 4);
		return true;
	}
	k->family = GUARD_AF_INET6;
	memcpy(k->addr, a, 16);
	mask_bits(k->addr, 16, v6_prefix);
	return true;
}

static void key_to_cidr(const struct guard_src_key *k, uint32_t v6_prefix, struct net_cidr *c)
{
	memset(c, 0, sizeof(*c));
	c->family = k->family == GUARD_AF_INET ? AF_INET : AF_INET6;
	memcpy(c->addr, k->addr, 16);
	c->prefix = (uint8_t)(c->family == AF_INET ? 32 : v6_prefix);
}

static bool cidr_covers(const struct net_cidr *outer, const struct net_cidr *inner)
{
	uint8_t a[16];

	if (outer->family != inner->family || outer->prefix > inner->prefix)
		return false;
	memcpy(a, inner->addr, 16);
	mask_bits(a, 16, outer->prefix);
	return !memcmp(a, outer->addr, outer->family == AF_INET ? 4 : 16);
}

/* ---- auto-ban counters ------------------------------------------------------------ */

struct ban_hit {
	uint32_t ms;     /* now_ms truncated: differences stay right while the window < 24 days */
	uint16_t status;
};

struct guard_ban_src {
	struct guard_src_key key;
	bool used;
	uint32_t count;          /* hits held in ring (≤ threshold) */
	uint32_t pos;            /* next slot of ring */
	uint64_t last_ms;        /* latest hit */
	uint64_t quiet_until_ms; /* hits before this are ignored (a ban is running) */
	struct ban_hit *ring;    /* threshold slots */
};

static uint64_t key_hash(const struct guard_src_key *k)
{
	const uint8_t *p = (const uint8_t *)k;
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < sizeof(*k); i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

int guard_bans_init(struct guard_bans *b, uint32_t threshold, uint64_t window_ms,
		    uint64_t quiet_ms, size_t max_sources)
{
	size_t cap = 16;

	memset(b, 0, sizeof(*b));
	if (!threshold || !max_sources)
		return -EINVAL;
	while (cap < max_sources * 2)
		cap *= 2;
	b->tab = calloc(cap, sizeof(*b->tab));
	if (!b->tab)
		return -ENOMEM;
	b->cap = cap;
	b->threshold = threshold;
	b->window_ms = window_ms;
	b->quiet_ms = quiet_ms;
	b->max_sources = max_sources;
	return 0;
}

void guard_bans_free(struct guard_bans *b)
{
	for (size_t i = 0; b->tab && i < b->cap; i++)
		free(b->tab[i].ring);
	free(b->tab);
	memset(b, 0, sizeof(*b));
}

static struct guard_ban_src *ban_slot(struct guard_bans *b, const struct guard_src_key *k,
				      bool create)
{
	size_t mask = b->cap - 1, i = key_hash(k) & mask;

	for (;; i = (i + 1) & mask) {
		struct guard_ban_src *s = &b->tab[i];

		if (s->used && !memcmp(&s->key, k, sizeof(*k)))
			return s;
		if (!s->used) {
			if (!create || b->n >= b->max_sources)
				return NULL;
			s->ring = calloc(b->threshold, sizeof(*s->ring));
			if (!s->ring)
				return NULL;
			s->used = true;
			s->key = *k;
			b->n++;
			return s;
		}
	}
}

bool guard_bans_hit(struct guard_bans *b, const struct guard_src_key *key, uint16_t status,
		    uint64_t now_ms, char *why, size_t whylen)
{
	struct guard_ban_src *s = ban_slot(b, key, true);
	uint32_t oldest;

	if (!s) {
		b->untracked++;
		return false;
	}
	s->last_ms = now_ms;
	if (now_ms < s->quiet_until_ms)
		return false;
	s->ring[s->pos] = (struct ban_hit){ .ms = (uint32_t)now_ms, .status = status };
	s->pos = (s->pos + 1) % b->threshold;
	if (s->count < b->threshold)
		s->count++;
	if (s->count < b->threshold)
		return false;
	/* Full ring: pos now points at the oldest of the last `threshold` hits. */
	oldest = s->ring[s->pos].ms;
	if ((uint32_t)((uint32_t)now_ms - oldest) >= b->window_ms)
		return false;
	if (why && whylen) {
		size_t off = 0;

		why[0] = '\0';
		for (uint32_t i = 0; i < b->threshold && off < whylen; i++) {
			uint16_t st = s->ring[i].status;
			bool seen = false;

			for (uint32_t j = 0; j < i; j++)
				seen |= s->ring[j].status == st;
			if (!seen)
				off += (size_t)snprintf(why + off, whylen - off, "%s%u", off ? ", " : "", st);
		}
	}
	s->count = 0;
	s->pos = 0;
	s->quiet_until_ms = now_ms + b->quiet_ms;
	return true;
}

void guard_bans_expire(struct guard_bans *b, uint64_t now_ms)
{
	struct guard_ban_src *old = b->tab;
	size_t cap = b->cap;

	if (!b->n)
		return;
	b->tab = calloc(cap, sizeof(*b->tab));
	if (!b->tab) {
		b->tab = old;
		return;
	}
	b->n = 0;
	/* Rebuilt rather than deleted in place: linear probing leaves no tombstones to manage. */
	for (size_t i = 0; i < cap; i++) {
		struct guard_ban_src *s = &old[i], *d;

		if (!s->used)
			continue;
		if (now_ms - s->last_ms >= b->window_ms && now_ms >= s->quiet_until_ms) {
			free(s->ring);
			continue;
		}
		for (size_t j = key_hash(&s->key) & (cap - 1);; j = (j + 1) & (cap - 1)) {
			d = &b->tab[j];
			if (!d->used)
				break;
		}
		*d = *s;
		b->n++;
	}
	free(old);
}

/* ---- the list maps -------------------------------------------------------------- */

static int list_map_fd(struct guard *g, enum guard_list_kind l, int family)
{
	struct bpf_map *m;

	if (l == GUARD_LIST_ALLOW)
		m = family == AF_INET ? g->skel->maps.guard_allow4 : g->skel->maps.guard_allow6;
	else
		m = family == AF_INET ? g->skel->maps.guard_block4 : g->skel->maps.guard_block6;
	return bpf_map__fd(m);
}

/* The trie key for c in buf (struct guard_lpm4_key or guard_lpm6_key layout). */
static void lpm_key(const struct net_cidr *c, void *buf)
{
	if (c->family == AF_INET) {
		struct guard_lpm4_key *k = buf;

		k->prefixlen = c->prefix;
		memcpy(k->addr, c->addr, 4);
	} else {
		struct guard_lpm6_key *k = buf;

		k->prefixlen = c->prefix;
		memcpy(k->addr, c->addr, 16);
	}
}

static int entry_push(struct guard *g, const struct guard_entry *e)
{
	struct guard_lpm6_key key = { 0 };
	struct guard_list_val val = {
		.expires_ns = e->expires_ns,
		.prefixlen = e->cidr.prefix,
		.origin = e->origin,
	};

	lpm_key(&e->cidr, &key);
	return bpf_map_update_elem(list_map_fd(g, e->list, e->cidr.family), &key, &val, BPF_ANY) ? -errno : 0;
}

static void entry_pull(struct guard *g, const struct guard_entry *e)
{
	struct guard_lpm6_key key = { 0 };
	char c[GUARD_CIDR_STRLEN];

	lpm_key(&e->cidr, &key);
	if (bpf_map_delete_elem(list_map_fd(g, e->list, e->cidr.family), &key) && errno != ENOENT)
		log_warn("guard: delete %s from the %slist: %s", guard_cidr_format(&e->cidr, c, sizeof(c)),
			 e->list == GUARD_LIST_ALLOW ? "allow" : "block", strerror(errno));
}

static ssize_t ents_find(struct guard *g, enum guard_list_kind l, const struct net_cidr *c)
{
	for (size_t i = 0; i < g->nents; i++)
		if (g->ents[i].list == l && cidr_eq(&g->ents[i].cidr, c))
			return (ssize_t)i;
	return -1;
}

static int ents_append(struct guard *g, const struct guard_entry *e)
{
	if (g->nents == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 64;
		struct guard_entry *v = realloc(g->ents, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		g->ents = v;
		g->cap = cap;
	}
	g->ents[g->nents++] = *e;
	return 0;
}

static void ents_remove(struct guard *g, size_t i)
{
	memmove(&g->ents[i], &g->ents[i + 1], (g->nents - i - 1) * sizeof(*g->ents));
	g->nents--;
}

/* Writes guard.json; a failure is logged, the maps stay right either way. */
static void ents_save(struct guard *g)
{
	char err[512];

	if (guard_store_save(g->state_path, g->ents, g->nents, err, sizeof(err)))
		log_err("guard: saving the lists: %s", err);
}

/* Lists what is pinned in one trie (keys and values), for start-up reconciliation. */
static int map_collect(int fd, size_t keysz, uint8_t **keys, struct guard_list_val **vals, size_t *n)
{
	uint8_t cur[sizeof(struct guard_lpm6_key)], next[sizeof(struct guard_lpm6_key)];
	size_t cap = 0;
	void *prev = NULL;

	*keys = NULL;
	*vals = NULL;
	*n = 0;
	while (!bpf_map_get_next_key(fd, prev, next)) {
		if (*n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			uint8_t *k = realloc(*keys, nc * keysz);
			struct guard_list_val *v;

			if (!k)
				return -ENOMEM;
			*keys = k;
			v = realloc(*vals, nc * sizeof(*v));
			if (!v)
				return -ENOMEM;
			*vals = v;
			cap = nc;
		}
		if (bpf_map_lookup_elem(fd, next, &(*vals)[*n]))
			memset(&(*vals)[*n], 0, sizeof(**vals));
		memcpy(*keys + *n * keysz, next, keysz);
		(*n)++;
		memcpy(cur, next, keysz);
		prev = cur;
	}
	return 0;
}

/*
 * The pinned tries may hold entries from the previous clawd: config entries
 * no longer in the file go, expired ones go, manual and auto entries the
 * state file did not have (it could not be written) are adopted.
 */
static int reconcile_maps(struct guard *g, uint64_t now_ns, int64_t now_ms)
{
	for (int l = GUARD_LIST_ALLOW; l <= GUARD_LIST_BLOCK; l++)
		for (int f = 0; f < 2; f++) {
			int family = f ? AF_INET6 : AF_INET, fd = list_map_fd(g, l, family);
			size_t keysz = f ? sizeof(struct guard_lpm6_key) : sizeof(struct guard_lpm4_key);
			struct guard_list_val *vals;
			uint8_t *keys;
			size_t n;
			int rc = map_collect(fd, keysz, &keys, &vals, &n);

			for (size_t i = 0; !rc && i < n; i++) {
				struct guard_entry e = { .list = l };
				uint32_t plen;

				memcpy(&plen, keys + i * keysz, 4);
				e.cidr.family = family;
				e.cidr.prefix = (uint8_t)plen;
				memcpy(e.cidr.addr, keys + i * keysz + 4, f ? 16 : 4);
				if (ents_find(g, l, &e.cidr) >= 0)
					continue;
				if (vals[i].origin == GUARD_ORIGIN_CONFIG ||
				    (vals[i].expires_ns && vals[i].expires_ns <= now_ns) ||
				    !guard_origin_name(vals[i].origin)) {
					bpf_map_delete_elem(fd, keys + i * keysz);
					continue;
				}
				e.origin = vals[i].origin;
				e.expires_ns = vals[i].expires_ns;
				if (e.expires_ns)
					e.expires_ms = now_ms + (int64_t)((e.expires_ns - now_ns) / 1000000ULL) + 1;
				rc = ents_append(g, &e);
			}
			free(keys);
			free(vals);
			if (rc)
				return rc;
		}
	return 0;
}

static int lists_init(struct guard *g, char *err, size_t errlen)
{
	const struct cfg_guard *gc = g->gc;
	uint64_t now_ns = mono_ns();
	int64_t now_ms = wall_ms();
	struct guard_entry *saved = NULL;
	size_t nsaved = 0;
	int rc;

	rc = guard_store_load(g->state_path, now_ms, now_ns, &saved, &nsaved, err, errlen);
	if (rc)
		return rc;
	for (int l = GUARD_LIST_ALLOW; l <= GUARD_LIST_BLOCK && !rc; l++) {
		const struct net_cidr *v = l == GUARD_LIST_ALLOW ? gc->allow : gc->deny;
		unsigned n = l == GUARD_LIST_ALLOW ? gc->nallow : gc->ndeny;

		for (unsigned i = 0; i < n && !rc; i++) {
			struct guard_entry e = { .list = l, .cidr = v[i], .origin = GUARD_ORIGIN_CONFIG };

			cidr_normalize(&e.cidr);
			snprintf(e.reason, sizeof(e.reason), "guard.%s[%u]",
				 l == GUARD_LIST_ALLOW ? "allow" : "deny", i);
			if (ents_find(g, l, &e.cidr) < 0)
				rc = ents_append(g, &e);
		}
	}
	/* Saved config entries are the old file's: the current one was just applied. */
	for (size_t i = 0; i < nsaved && !rc; i++) {
		cidr_normalize(&saved[i].cidr);
		if (saved[i].origin != GUARD_ORIGIN_CONFIG && ents_find(g, saved[i].list, &saved[i].cidr) < 0)
			rc = ents_append(g, &saved[i]);
	}
	free(saved);
	if (!rc)
		rc = reconcile_maps(g, now_ns, now_ms);
	for (size_t i = 0; i < g->nents && !rc; i++)
		rc = entry_push(g, &g->ents[i]);
	if (rc) {
		snprintf(err, errlen, "guard: applying the allow/block lists: %s", strerror(-rc));
		return rc;
	}
	ents_save(g);
	return 0;
}

/* ---- configuration maps ---------------------------------------------------------- */

static int write_config(struct guard *g, char *err, size_t errlen)
{
	const struct cfg_guard *gc = g->gc;
	uint64_t *words = calloc(GUARD_PORT_KEYS, sizeof(*words));
	struct guard_config c = {
		.flags = GUARD_F_ENABLED | GUARD_F_SAMPLE,
		.unparsed_policy = gc->unparsed_drop ? GUARD_UNPARSED_DROP : GUARD_UNPARSED_PASS,
		.v6_prefix_len = gc->v6_prefix,
		.syn_rate = gc->syn_rate,
		.syn_burst = gc->syn_burst,
		.pkt_rate = gc->pkt_rate,
		.pkt_burst = gc->pkt_burst,
		.sample_rate = GUARD_DEFAULT_SAMPLE_RATE,
		.sample_burst = GUARD_DEFAULT_SAMPLE_BURST,
	};
	int fd = bpf_map__fd(g->skel->maps.guard_ports);
	uint32_t zero = 0;

	if (!words) {
		snprintf(err, errlen, "guard: out of memory");
		return -ENOMEM;
	}
	if (gc->syn_rate)
		c.flags |= GUARD_F_SYN_LIMIT;
	if (gc->pkt_rate)
		c.flags |= GUARD_F_PKT_LIMIT;
	for (unsigned i = 0; i < gc->nports; i++)
		for (uint32_t p = gc->ports[i].lo; p <= gc->ports[i].hi; p++)
			for (uint32_t l4 = 0; l4 < GUARD_L4_MAX; l4++)
				words[guard_port_key(l4, (uint16_t)p)] |= guard_port_bit((uint16_t)p);
	/* Ports before the switch: a fresh map never judges with an empty port set. */
	for (uint32_t k = 0; k < GUARD_PORT_KEYS; k++)
		if (bpf_map_update_elem(fd, &k, &words[k], BPF_ANY)) {
			int e = -errno;

			snprintf(err, errlen, "guard: writing %s: %s", GUARD_MAP_PORTS, strerror(-e));
			free(words);
			return e;
		}
	free(words);
	if (bpf_map_update_elem(bpf_map__fd(g->skel->maps.guard_cfg), &zero, &c, BPF_ANY)) {
		int e = -errno;

		snprintf(err, errlen, "guard: writing %s: %s", GUARD_MAP_CFG, strerror(-e));
		return e;
	}
	return 0;
}

/* ---- bpffs and loading ------------------------------------------------------------- */

static bool on_bpffs(const char *path)
{
	struct statfs st;

	return statfs(path, &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

static int prepare_pin_dir(const char *dir, char *err, size_t errlen)
{
	/* The usual place: mount bpffs there when the system did not. */
	if (!strncmp(dir, "/sys/fs/bpf/", 12) && !on_bpffs("/sys/fs/bpf")) {
		if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") < 0) {
			int e = -errno;

			snprintf(err, errlen, "guard: mounting bpffs at /sys/fs/bpf: %s", strerror(-e));
			return e;
		}
		log_notice("guard: mounted bpffs at /sys/fs/bpf");
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int e = -errno;

		snprintf(err, errlen, "guard: pin_dir %s: %s", dir, strerror(-e));
		return e;
	}
	if (!on_bpffs(dir)) {
		snprintf(err, errlen, "guard: pin_dir %s is not on a bpf file system", dir);
		return -EINVAL;
	}
	return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(buf, 0755) < 0 && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int load_program(struct guard *g, char *err, size_t errlen)
{
	struct bpf_prog_info info = { 0 };
	uint32_t len = sizeof(info);
	struct bpf_map *m;
	int rc;

	g->skel = xdp_guard__open();
	if (!g->skel) {
		rc = -errno;
		snprintf(err, errlen, "guard: opening the BPF object: %s", strerror(-rc));
		return rc;
	}
	bpf_object__for_each_map(m, g->skel->obj) {
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/%s", g->gc->pin_dir, bpf_map__name(m));
		rc = bpf_map__set_pin_path(m, path);
		if (rc) {
			snprintf(err, errlen, "guard: pin path %s: %s", path, strerror(-rc));
			return rc;
		}
	}
	rc = xdp_guard__load(g->skel);
	if (rc) {
		snprintf(err, errlen,
			 "guard: loading the XDP program: %s (maps pinned in %s from an incompatible version? clawd --detach-guard removes them)",
			 strerror(-rc), g->gc->pin_dir);
		return rc;
	}
	g->prog_fd = bpf_program__fd(g->skel->progs.xdp_guard);
	if (!bpf_obj_get_info_by_fd(g->prog_fd, &info, &len))
		g->prog_id = info.id;
	return 0;
}

/* ---- interfaces -------------------------------------------------------------------- */

/* ifindex of name in our network namespace, 0 when there is none. */
static int if_resolve(struct guard *g, const char *name)
{
	struct rtnl_link *link = NULL;
	int idx;

	if (rtnl_link_get_kernel(g->nlq, 0, name, &link) < 0)
		return 0;
	idx = rtnl_link_get_ifindex(link);
	rtnl_link_put(link);
	return idx;
}

static int link_info(int fd, struct bpf_link_info *info)
{
	uint32_t len = sizeof(*info);

	memset(info, 0, sizeof(*info));
	return bpf_obj_get_info_by_fd(fd, info, &len) ? -errno : 0;
}

/*
 * Forgets our link; with unpin, also detaches XDP now. Dropping the last
 * reference would detach too, but a bpffs pin is released only after an RCU
 * grace period: an explicit detach makes guard.detach take effect at once.
 */
static void iface_drop_link(struct guard_iface *it, bool unpin)
{
	if (unpin && it->link_fd >= 0 && bpf_link_detach(it->link_fd) && errno != ENOLINK)
		log_warn("guard: interface %s: detaching link %u: %s", it->name, it->link_id,
			 strerror(errno));
	if (it->link_fd >= 0)
		close(it->link_fd);
	it->link_fd = -1;
	it->link_id = 0;
	it->adopted = false;
	if (unpin)
		unlink(it->pin);
}

static int link_create(struct guard *g, int ifindex, uint32_t flags)
{
	LIBBPF_OPTS(bpf_link_create_opts, o, .flags = flags);
	int fd = bpf_link_create(g->prog_fd, ifindex, BPF_XDP, &o);

	return fd < 0 ? -errno : fd;
}

/*
 * Guards one interface: adopts its pinned link when it still points at the
 * same interface (swapping our program in without a gap), else attaches
 * anew in the configured mode and pins the link.
 */
static int iface_attach(struct guard *g, struct guard_iface *it, char *err, size_t errlen)
{
	struct bpf_link_info info;
	int fd, rc;

	it->ifindex = if_resolve(g, it->name);
	if (it->link_fd < 0) {
		fd = bpf_obj_get(it->pin);
		if (fd >= 0) {
			if (!link_info(fd, &info) && info.type == BPF_LINK_TYPE_XDP && it->ifindex &&
			    info.xdp.ifindex == (uint32_t)it->ifindex) {
				if (bpf_link_update(fd, g->prog_fd, NULL) == 0) {
					it->link_fd = fd;
					it->link_id = info.id;
					it->adopted = true;
					log_notice("guard: interface %s: adopted pinned link %u, program %u swapped in",
						   it->name, info.id, g->prog_id);
					return 0;
				}
				log_warn("guard: interface %s: pinned link %u cannot take the new program (%s); re-attaching",
					 it->name, info.id, strerror(errno));
			}
			/* Its interface is gone (or it is not ours): releasing it detaches nothing live. */
			close(fd);
			unlink(it->pin);
		}
	} else {
		if (!link_info(it->link_fd, &info) && info.xdp.ifindex == (uint32_t)it->ifindex && it->ifindex)
			return 0;
		iface_drop_link(it, true);
	}
	if (!it->ifindex) {
		log_warn("guard: interface %s: not present; it will be guarded when it appears", it->name);
		return 0;
	}
	switch (g->gc->mode) {
	case CFG_GUARD_NATIVE:
		fd = link_create(g, it->ifindex, XDP_FLAGS_DRV_MODE);
		break;
	case CFG_GUARD_GENERIC:
		fd = link_create(g, it->ifindex, XDP_FLAGS_SKB_MODE);
		break;
	default:
		fd = link_create(g, it->ifindex, XDP_FLAGS_DRV_MODE);
		if (fd < 0) {
			log_warn("guard: interface %s: native XDP failed (%s); using generic mode, which is slower",
				 it->name, strerror(-fd));
			fd = link_create(g, it->ifindex, XDP_FLAGS_SKB_MODE);
		}
	}
	if (fd < 0) {
		snprintf(err, errlen, "guard: interface %s: attaching XDP: %s%s", it->name, strerror(-fd),
			 fd == -EEXIST || fd == -EBUSY ? " (another XDP program is attached there)" : "");
		return fd;
	}
	if (bpf_obj_pin(fd, it->pin)) {
		rc = -errno;
		snprintf(err, errlen, "guard: interface %s: pinning the link at %s: %s", it->name, it->pin,
			 strerror(-rc));
		close(fd);
		return rc;
	}
	it->link_fd = fd;
	it->adopted = false;
	if (!link_info(fd, &info))
		it->link_id = info.id;
	log_notice("guard: interface %s (ifindex %d): attached, link %u pinned at %s", it->name,
		   it->ifindex, it->link_id, it->pin);
	return 0;
}

/* After a link notification: re-attach interfaces that came back with a new ifindex. */
static void ifaces_sync(struct guard *g)
{
	char err[512];

	for (unsigned i = 0; i < g->nifs; i++) {
		struct guard_iface *it = &g->ifs[i];
		int idx = if_resolve(g, it->name);
		struct bpf_link_info info;

		if (it->link_fd >= 0 && idx && idx == it->ifindex && !link_info(it->link_fd, &info) &&
		    info.xdp.ifindex == (uint32_t)idx)
			continue;
		if (!idx) {
			if (it->link_fd >= 0 || it->ifindex)
				log_warn("guard: interface %s went away; it will be guarded again when it returns",
					 it->name);
			iface_drop_link(it, true);
			it->ifindex = 0;
			continue;
		}
		if (iface_attach(g, it, err, sizeof(err)))
			log_err("%s", err);
		else if (it->link_fd >= 0)
			log_notice("guard: interface %s is back (ifindex %d): guarded again", it->name, idx);
	}
}

/* ---- guard thread: drop samples, reports, sweep ------------------------------------ */

static int on_event(void *ctx, void *data, size_t size)
{
	struct guard *g = ctx;
	const struct guard_event *e = data;
	uint64_t sec = mono_ns() / 1000000000ULL;
	char src[INET6_ADDRSTRLEN] = "?", ifn[IF_NAMESIZE] = "?";

	if (size < sizeof(*e))
		return 0;
	if (sec != g->log_sec) {
		g->log_sec = sec;
		g->log_lines = 0;
	}
	if (g->log_lines >= EVENT_LOG_PER_SEC) {
		g->log_suppressed++;
		return 0;
	}
	g->log_lines++;
	if (e->family == GUARD_AF_INET || e->family == GUARD_AF_INET6)
		inet_ntop(e->family == GUARD_AF_INET ? AF_INET : AF_INET6, e->saddr, src, sizeof(src));
	if (!if_indextoname(e->ifindex, ifn))
		snprintf(ifn, sizeof(ifn), "if%u", e->ifindex);
	log_info("guard: dropped %s -> %s/%u on %s: %s (%u bytes)", src,
		 e->l4proto == IPPROTO_TCP ? "tcp" : e->l4proto == IPPROTO_UDP ? "udp" : "ip", e->dport,
		 ifn, guard_reason_name(e->reason), e->pkt_len);
	return 0;
}

static void autoban(struct guard *g, const struct guard_src_key *k, uint16_t status, uint64_t now_ms)
{
	const struct cfg_guard_autoban *ab = &g->gc->autoban;
	char why[128], ttl[24], win[24], c[GUARD_CIDR_STRLEN];
	struct guard_entry e = { .list = GUARD_LIST_BLOCK, .origin = GUARD_ORIGIN_AUTO };
	ssize_t at;

	if (!guard_bans_hit(&g->banctr, k, status, now_ms, why, sizeof(why)))
		return;
	key_to_cidr(k, g->gc->v6_prefix, &e.cidr);
	guard_cidr_format(&e.cidr, c, sizeof(c));
	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < g->nents; i++) {
		const struct guard_entry *x = &g->ents[i];

		/* Allowlisted sources pass XDP anyway; an existing block already does the job. */
		if (cidr_covers(&x->cidr, &e.cidr) && (x->list == GUARD_LIST_ALLOW || !x->expires_ns ||
							x->expires_ns > mono_ns() + ab->ttl_ms * 1000000ULL)) {
			pthread_mutex_unlock(&g->lock);
			log_info("guard: %s crossed the auto-ban threshold but is already %s by %s", c,
				 x->list == GUARD_LIST_ALLOW ? "allowed" : "blocked", guard_origin_name(x->origin));
			return;
		}
	}
	e.expires_ns = mono_ns() + ab->ttl_ms * 1000000ULL;
	e.expires_ms = wall_ms() + (int64_t)ab->ttl_ms;
	guard_fmt_duration(ab->ttl_ms, ttl, sizeof(ttl));
	guard_fmt_duration(ab->window_ms, win, sizeof(win));
	snprintf(e.reason, sizeof(e.reason), "auto-ban: %u responses %s in %s", ab->threshold, why, win);
	at = ents_find(g, GUARD_LIST_BLOCK, &e.cidr);
	if (at >= 0)
		g->ents[at] = e;
	else if (ents_append(g, &e)) {
		pthread_mutex_unlock(&g->lock);
		log_err("guard: auto-ban %s: out of memory", c);
		return;
	}
	if (entry_push(g, &e))
		log_err("guard: auto-ban %s: writing the blocklist: %s", c, strerror(errno));
	g->bans++;
	ents_save(g);
	pthread_mutex_unlock(&g->lock);
	log_warn("guard: auto-ban %s for %s: %u responses %s in %s", c, ttl, ab->threshold, why, win);
}

static void drain_rings(struct guard *g)
{
	uint64_t now_ms = mono_ns() / 1000000ULL;

	for (unsigned w = 0; w < g->nrings; w++) {
		struct guard_ring *r = &g->rings[w];
		uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
		uint32_t head = atomic_load_explicit(&r->head, memory_order_acquire);

		for (; tail != head; tail++) {
			struct guard_report_ev ev = r->ev[tail & (RING_SIZE - 1)];

			atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
			autoban(g, &ev.key, ev.status, now_ms);
		}
	}
}

static void sweep(struct guard *g)
{
	uint64_t now = mono_ns();
	bool changed = false;
	char c[GUARD_CIDR_STRLEN];

	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < g->nents;) {
		struct guard_entry *e = &g->ents[i];

		if (!e->expires_ns || e->expires_ns > now) {
			i++;
			continue;
		}
		log_info("guard: %s %s (%s) expired", e->list == GUARD_LIST_ALLOW ? "allow" : "block",
			 guard_cidr_format(&e->cidr, c, sizeof(c)), guard_origin_name(e->origin));
		entry_pull(g, e);
		ents_remove(g, i);
		changed = true;
	}
	if (changed)
		ents_save(g);
	pthread_mutex_unlock(&g->lock);
	guard_bans_expire(&g->banctr, now / 1000000ULL);
	if (g->log_suppressed) {
		log_info("guard: %" PRIu64 " more dropped packets sampled but not logged", g->log_suppressed);
		g->log_suppressed = 0;
	}
}

static int on_netlink(struct nl_msg *msg, void *arg)
{
	struct guard *g = arg;
	int type = nlmsg_hdr(msg)->nlmsg_type;

	if (type == RTM_NEWLINK || type == RTM_DELLINK)
		g->rescan = true;
	return NL_OK;
}

static void *guard_main(void *arg)
{
	struct guard *g = arg;
	uint64_t last_sweep = mono_ns();

	for (;;) {
		struct pollfd pfd[3] = {
			{ .fd = g->stop_fd, .events = POLLIN },
			{ .fd = ring_buffer__epoll_fd(g->rb), .events = POLLIN },
			{ .fd = g->nlmon ? nl_socket_get_fd(g->nlmon) : -1, .events = POLLIN },
		};

		if (poll(pfd, 3, TICK_MS) < 0 && errno != EINTR)
			break;
		if (pfd[0].revents)
			break;
		if (pfd[1].revents)
			ring_buffer__consume(g->rb);
		if (pfd[2].revents) {
			/* Errors (an overrun) may have eaten a notification: look anyway. */
			for (int i = 0; i < 64; i++) {
				int rc = nl_recvmsgs_default(g->nlmon);

				if (rc == -NLE_AGAIN)
					break;
				if (rc < 0) {
					g->rescan = true;
					break;
				}
			}
		}
		if (g->rescan) {
			g->rescan = false;
			pthread_mutex_lock(&g->lock);
			if (!g->detached)
				ifaces_sync(g);
			pthread_mutex_unlock(&g->lock);
		}
		drain_rings(g);
		if (mono_ns() - last_sweep >= 1000000000ULL) {
			last_sweep = mono_ns();
			sweep(g);
		}
	}
	return NULL;
}

/* ---- start and stop ---------------------------------------------------------------- */

static int netlink_open(struct guard *g, char *err, size_t errlen)
{
	int rc;

	g->nlq = nl_socket_alloc();
	g->nlmon = nl_socket_alloc();
	if (!g->nlq || !g->nlmon) {
		snprintf(err, errlen, "guard: netlink: out of memory");
		return -ENOMEM;
	}
	rc = nl_connect(g->nlq, NETLINK_ROUTE);
	if (!rc) {
		nl_socket_disable_seq_check(g->nlmon);
		nl_socket_modify_cb(g->nlmon, NL_CB_VALID, NL_CB_CUSTOM, on_netlink, g);
		rc = nl_connect(g->nlmon, NETLINK_ROUTE);
	}
	if (!rc)
		rc = nl_socket_add_membership(g->nlmon, RTNLGRP_LINK);
	if (!rc)
		rc = nl_socket_set_nonblocking(g->nlmon);
	if (rc) {
		snprintf(err, errlen, "guard: netlink: %s", nl_geterror(rc));
		return -EIO;
	}
	return 0;
}

static void guard_free(struct guard *g)
{
	if (g->running) {
		uint64_t one = 1;

		if (write(g->stop_fd, &one, sizeof(one)) < 0)
			log_warn("guard: cannot signal stop: %s", strerror(errno));
		pthread_join(g->thread, NULL);
	}
	for (unsigned i = 0; g->ifs && i < g->nifs; i++)
		iface_drop_link(&g->ifs[i], false);
	ring_buffer__free(g->rb);
	if (g->nlq)
		nl_socket_free(g->nlq);
	if (g->nlmon)
		nl_socket_free(g->nlmon);
	xdp_guard__destroy(g->skel);
	if (g->stop_fd >= 0)
		close(g->stop_fd);
	guard_bans_free(&g->banctr);
	free(g->rings);
	free(g->ifs);
	free(g->ents);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

int guard_start(struct guard **out, const struct config *cfg, unsigned nworkers, char *err,
		size_t errlen)
{
	const struct cfg_guard *gc = &cfg->guard;
	struct guard *g;
	int rc;

	*out = NULL;
	if (!gc->ninterfaces)
		return 0;
	g = calloc(1, sizeof(*g));
	if (!g) {
		snprintf(err, errlen, "guard: out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&g->lock, NULL);
	g->cfg = cfg;
	g->gc = gc;
	g->stop_fd = -1;
	rc = mkdir_p(cfg->state_dir, 0750);
	if (rc) {
		snprintf(err, errlen, "state_dir %s: %s", cfg->state_dir, strerror(-rc));
		goto fail;
	}
	snprintf(g->state_path, sizeof(g->state_path), "%s/%s", cfg->state_dir, GUARD_STORE_FILE);
	g->ifs = calloc(gc->ninterfaces, sizeof(*g->ifs));
	g->rings = aligned_alloc(64, sizeof(*g->rings) * (nworkers ? nworkers : 1));
	if (!g->ifs || !g->rings) {
		snprintf(err, errlen, "guard: out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	memset(g->rings, 0, sizeof(*g->rings) * (nworkers ? nworkers : 1));
	g->nrings = nworkers;
	for (unsigned i = 0; i < gc->ninterfaces; i++) {
		struct guard_iface *it = &g->ifs[i];

		snprintf(it->name, sizeof(it->name), "%s", gc->interfaces[i]);
		snprintf(it->pin, sizeof(it->pin), "%s/%s%s", gc->pin_dir, LINK_PREFIX, it->name);
		it->link_fd = -1;
	}
	g->nifs = gc->ninterfaces;
	for (unsigned i = 0; i < gc->autoban.nstatuses; i++)
		if (gc->autoban.statuses[i] < STATUS_MAX)
			g->ban_status[gc->autoban.statuses[i]] = true;
	if (gc->autoban.nstatuses &&
	    (rc = guard_bans_init(&g->banctr, gc->autoban.threshold, gc->autoban.window_ms,
				  gc->autoban.ttl_ms, BAN_MAX_SOURCES))) {
		snprintf(err, errlen, "guard: out of memory");
		goto fail;
	}
	g->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (g->stop_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "guard: eventfd: %s", strerror(-rc));
		goto fail;
	}
	if ((rc = netlink_open(g, err, errlen)) || (rc = prepare_pin_dir(gc->pin_dir, err, errlen)) ||
	    (rc = load_program(g, err, errlen)) || (rc = write_config(g, err, errlen)) ||
	    (rc = lists_init(g, err, errlen)))
		goto fail;
	for (unsigned i = 0; i < g->nifs; i++)
		if ((rc = iface_attach(g, &g->ifs[i], err, errlen)))
			goto fail;
	g->rb = ring_buffer__new(bpf_map__fd(g->skel->maps.guard_events), on_event, g, NULL);
	if (!g->rb) {
		rc = -errno;
		snprintf(err, errlen, "guard: ring buffer %s: %s", GUARD_MAP_EVENTS, strerror(-rc));
		goto fail;
	}
	rc = -pthread_create(&g->thread, NULL, guard_main, g);
	if (rc) {
		snprintf(err, errlen, "guard: thread: %s", strerror(-rc));
		goto fail;
	}
	g->running = true;
	*out = g;
	return 0;
fail:
	guard_free(g);
	return rc;
}

void guard_stop(struct guard *g)
{
	if (!g)
		return;
	if (g->running) {
		uint64_t one = 1;

		if (write(g->stop_fd, &one, sizeof(one)) < 0)
			log_warn("guard: cannot signal stop: %s", strerror(errno));
		pthread_join(g->thread, NULL);
		g->running = false;
	}
	/* Reports still queued would be lost: count them now. */
	drain_rings(g);
	pthread_mutex_lock(&g->lock);
	ents_save(g);
	pthread_mutex_unlock(&g->lock);
	guard_free(g);
}

/* A file in the pin directory that belongs to the guard: a map of guard.h or a link. */
static bool is_guard_pin(const char *name)
{
	static const char *const maps[] = {
		GUARD_MAP_CFG,    GUARD_MAP_PORTS,  GUARD_MAP_ALLOW4, GUARD_MAP_ALLOW6,
		GUARD_MAP_BLOCK4, GUARD_MAP_BLOCK6, GUARD_MAP_SYN_TB, GUARD_MAP_PKT_TB,
		GUARD_MAP_STATS,  GUARD_MAP_EVT_TB, GUARD_MAP_EVENTS,
	};

	if (!strncmp(name, LINK_PREFIX, strlen(LINK_PREFIX)))
		return true;
	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++)
		if (!strcmp(name, maps[i]))
			return true;
	return false;
}

/* Unpins the guard's links (and maps unless links_only) in dir; returns how many went, or -errno. */
static int unpin_dir(const char *dir, bool links_only, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int removed = 0;

	/* Links first: the interfaces stop being guarded before the maps go away. */
	for (int pass = 0; pass < (links_only ? 1 : 2); pass++) {
		DIR *d = opendir(dir);
		struct dirent *de;

		if (!d) {
			if (errno == ENOENT)
				return removed;
			int e = -errno;

			snprintf(err, errlen, "%s: %s", dir, strerror(-e));
			return e;
		}
		while ((de = readdir(d))) {
			bool link = !strncmp(de->d_name, LINK_PREFIX, strlen(LINK_PREFIX));

			if (!is_guard_pin(de->d_name) || link != (pass == 0))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			if (link) {
				int fd = bpf_obj_get(path);

				/* As in iface_drop_link: detach now, not after the pin is freed. */
				if (fd >= 0) {
					bpf_link_detach(fd);
					close(fd);
				}
			}
			if (unlink(path) == 0) {
				removed++;
				continue;
			}
			int e = -errno;

			snprintf(err, errlen, "%s: %s", path, strerror(-e));
			closedir(d);
			return e;
		}
		closedir(d);
	}
	return removed;
}

int guard_detach_all(const char *pin_dir, char *err, size_t errlen)
{
	int n = unpin_dir(pin_dir, false, err, errlen);

	if (n < 0)
		return n;
	/* Only an empty directory goes: it may hold other programs' pins. */
	if (rmdir(pin_dir) < 0 && errno != ENOENT && errno != ENOTEMPTY)
		log_warn("guard: rmdir %s: %s", pin_dir, strerror(errno));
	log_notice("guard: detached: %d pinned objects removed from %s", n, pin_dir);
	return 0;
}

void guard_report(struct guard *g, unsigned worker, const struct sockaddr *peer, int status)
{
	struct guard_ring *r;
	uint32_t head;

	if (!g || worker >= g->nrings || status < 0 || status >= STATUS_MAX || !g->ban_status[status])
		return;
	r = &g->rings[worker];
	head = atomic_load_explicit(&r->head, memory_order_relaxed);
	if (head - atomic_load_explicit(&r->tail, memory_order_acquire) >= RING_SIZE) {
		atomic_store_explicit(&r->dropped,
				      atomic_load_explicit(&r->dropped, memory_order_relaxed) + 1,
				      memory_order_relaxed);
		return;
	}
	if (!src_key(peer, g->gc->v6_prefix, &r->ev[head & (RING_SIZE - 1)].key))
		return;
	r->ev[head & (RING_SIZE - 1)].status = (uint16_t)status;
	atomic_store_explicit(&r->head, head + 1, memory_order_release);
}

/* ---- control commands ---------------------------------------------------------------- */

static const char *list_word(enum guard_list_kind l)
{
	return l == GUARD_LIST_ALLOW ? "allowlist" : "blocklist";
}

/*
 * A keyed object member ("limits":{...}); jsonw only has keyed arrays, so
 * this opens one through the writer (escaping, comma) and turns its '['
 * into '{'. Closed with jsonw_obj_end.
 */
static void obj_begin_key(struct jsonw *w, const char *key)
{
	jsonw_arr_begin(w, key);
	if (!w->overflow && w->len && w->buf[w->len - 1] == '[')
		w->buf[w->len - 1] = '{';
}

static int not_configured(char *err, size_t errlen)
{
	snprintf(err, errlen, "guard is not configured (no guard.interfaces in the configuration)");
	return -ENOTSUP;
}

/* The "cidr" argument, parsed and normalised. */
static int arg_cidr(const struct control_req *req, struct net_cidr *c, char *err, size_t errlen)
{
	const char *s = jsonr_get_str(req->j, req->args, "cidr"), *why = "invalid";

	if (!s) {
		snprintf(err, errlen, "missing \"cidr\" (an address or prefix such as 192.0.2.0/24)");
		return -EINVAL;
	}
	if (net_cidr_parse(s, c, &why)) {
		snprintf(err, errlen, "bad CIDR \"%.64s\": %s", s, why);
		return -EINVAL;
	}
	cidr_normalize(c);
	return 0;
}

static void write_expiry(struct jsonw *w, const struct guard_entry *e, uint64_t now_ns)
{
	char when[32];

	if (!e->expires_ns) {
		jsonw_null(w, "expires");
		return;
	}
	iso_time_ms(e->expires_ms, when, sizeof(when));
	jsonw_str(w, "expires", when);
}

static int list_add(struct guard *g, enum guard_list_kind l, const struct control_req *req,
		    struct jsonw *w, char *err, size_t errlen)
{
	const struct jsonr_node *ttl = jsonr_get(req->j, req->args, "ttl");
	const struct jsonr_node *reason = jsonr_get(req->j, req->args, "reason");
	struct guard_entry e = { .list = l, .origin = GUARD_ORIGIN_MANUAL };
	char c[GUARD_CIDR_STRLEN];
	uint64_t ttl_ms = 0;
	ssize_t at;
	int rc;

	if (!g)
		return not_configured(err, errlen);
	if ((rc = arg_cidr(req, &e.cidr, err, errlen)))
		return rc;
	if (ttl && ttl->type != JSONR_NULL) {
		if (ttl->type != JSONR_STRING || parse_duration_ms(ttl->str, &ttl_ms) ||
		    ttl_ms > 3650 * 86400000ULL) {
			snprintf(err, errlen, "bad ttl%s%.32s%s: expected a duration such as 90s, 10m, 1h or 7d (at most 3650d)",
				 ttl->type == JSONR_STRING ? " \"" : "",
				 ttl->type == JSONR_STRING ? ttl->str : "",
				 ttl->type == JSONR_STRING ? "\"" : "");
			return -EINVAL;
		}
		if (!ttl_ms) {
			snprintf(err, errlen, "bad ttl \"0\": omit ttl for an entry that never expires");
			return -EINVAL;
		}
	}
	if (reason && reason->type != JSONR_NULL) {
		if (reason->type != JSONR_STRING) {
			snprintf(err, errlen, "bad reason: expected a string");
			return -EINVAL;
		}
		if (reason->len > GUARD_REASON_MAX) {
			snprintf(err, errlen, "bad reason: longer than %d bytes", GUARD_REASON_MAX);
			return -EINVAL;
		}
		for (uint32_t i = 0; i < reason->len; i++)
			if ((unsigned char)reason->str[i] < 0x20 || reason->str[i] == 0x7f) {
				snprintf(err, errlen, "bad reason: control characters are not allowed");
				return -EINVAL;
			}
		memcpy(e.reason, reason->str, reason->len);
	}
	if (ttl_ms) {
		e.expires_ns = mono_ns() + ttl_ms * 1000000ULL;
		e.expires_ms = wall_ms() + (int64_t)ttl_ms;
	}
	guard_cidr_format(&e.cidr, c, sizeof(c));
	pthread_mutex_lock(&g->lock);
	at = ents_find(g, l, &e.cidr);
	if (at >= 0 && g->ents[at].origin == GUARD_ORIGIN_CONFIG) {
		pthread_mutex_unlock(&g->lock);
		snprintf(err, errlen, "%s is on the %s from the configuration (guard.%s); change it there", c,
			 list_word(l), l == GUARD_LIST_ALLOW ? "allow" : "deny");
		return -EEXIST;
	}
	rc = entry_push(g, &e);
	if (!rc) {
		if (at >= 0)
			g->ents[at] = e;
		else if ((rc = ents_append(g, &e)))
			entry_pull(g, &e);
	}
	if (!rc)
		ents_save(g);
	pthread_mutex_unlock(&g->lock);
	if (rc) {
		snprintf(err, errlen, "%s: writing the %s: %s", c, list_word(l), strerror(-rc));
		return rc;
	}
	log_notice("guard: uid %u: %s add %s%s%s%s", (unsigned)req->uid, list_word(l), c,
		   ttl_ms ? " for " : "", ttl_ms ? ttl->str : "", e.reason[0] ? " (reason given)" : "");
	jsonw_str(w, "cidr", c);
	write_expiry(w, &e, 0);
	return 0;
}

static int list_del(struct guard *g, enum guard_list_kind l, const struct control_req *req,
		    struct jsonw *w, char *err, size_t errlen)
{
	char c[GUARD_CIDR_STRLEN];
	struct net_cidr cidr;
	ssize_t at;
	int rc;

	if (!g)
		return not_configured(err, errlen);
	if ((rc = arg_cidr(req, &cidr, err, errlen)))
		return rc;
	guard_cidr_format(&cidr, c, sizeof(c));
	pthread_mutex_lock(&g->lock);
	at = ents_find(g, l, &cidr);
	if (at < 0 || g->ents[at].origin == GUARD_ORIGIN_CONFIG) {
		pthread_mutex_unlock(&g->lock);
		if (at < 0)
			snprintf(err, errlen, "%s is not on the %s", c, list_word(l));
		else
			snprintf(err, errlen, "%s is on the %s from the configuration (guard.%s); remove it there",
				 c, list_word(l), l == GUARD_LIST_ALLOW ? "allow" : "deny");
		return at < 0 ? -ENOENT : -EPERM;
	}
	entry_pull(g, &g->ents[at]);
	ents_remove(g, (size_t)at);
	ents_save(g);
	pthread_mutex_unlock(&g->lock);
	log_notice("guard: uid %u: %s del %s", (unsigned)req->uid, list_word(l), c);
	jsonw_str(w, "cidr", c);
	return 0;
}

static int list_list(struct guard *g, enum guard_list_kind l, struct jsonw *w, char *err,
		     size_t errlen)
{
	uint64_t now = mono_ns();
	char c[GUARD_CIDR_STRLEN];

	if (!g)
		return not_configured(err, errlen);
	pthread_mutex_lock(&g->lock);
	jsonw_arr_begin(w, "entries");
	for (size_t i = 0; i < g->nents; i++) {
		const struct guard_entry *e = &g->ents[i];

		if (e->list != l)
			continue;
		jsonw_obj_begin(w);
		jsonw_str(w, "cidr", guard_cidr_format(&e->cidr, c, sizeof(c)));
		jsonw_str(w, "source", guard_origin_name(e->origin));
		jsonw_str(w, "reason", e->reason);
		write_expiry(w, e, now);
		if (e->expires_ns)
			jsonw_u64(w, "expires_in_s",
				  e->expires_ns > now ? (e->expires_ns - now + 999999999ULL) / 1000000000ULL : 0);
		else
			jsonw_null(w, "expires_in_s");
		jsonw_obj_end(w);
	}
	jsonw_arr_end(w);
	pthread_mutex_unlock(&g->lock);
	return 0;
}

static int cmd_block_add(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			 size_t errlen)
{
	return list_add(ctx, GUARD_LIST_BLOCK, req, w, err, errlen);
}

static int cmd_block_del(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			 size_t errlen)
{
	return list_del(ctx, GUARD_LIST_BLOCK, req, w, err, errlen);
}

static int cmd_block_list(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			  size_t errlen)
{
	return list_list(ctx, GUARD_LIST_BLOCK, w, err, errlen);
}

static int cmd_allow_add(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			 size_t errlen)
{
	return list_add(ctx, GUARD_LIST_ALLOW, req, w, err, errlen);
}

static int cmd_allow_del(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			 size_t errlen)
{
	return list_del(ctx, GUARD_LIST_ALLOW, req, w, err, errlen);
}

static int cmd_allow_list(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			  size_t errlen)
{
	return list_list(ctx, GUARD_LIST_ALLOW, w, err, errlen);
}

static const char *mode_name(int ifindex, uint32_t prog_id)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);

	if (!ifindex || bpf_xdp_query(ifindex, 0, &q))
		return NULL;
	if (q.drv_prog_id && q.drv_prog_id == prog_id)
		return "native";
	if (q.skb_prog_id && q.skb_prog_id == prog_id)
		return "generic";
	if (q.hw_prog_id && q.hw_prog_id == prog_id)
		return "offload";
	return NULL;
}

static int cmd_guard_status(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			    size_t errlen)
{
	static const char *const modes[] = { "auto", "native", "generic" };
	struct guard *g = ctx;
	const struct cfg_guard *gc;
	size_t nallow = 0, nblock = 0;
	char buf[32];

	if (!g)
		return not_configured(err, errlen);
	gc = g->gc;
	pthread_mutex_lock(&g->lock);
	jsonw_str(w, "pin_dir", gc->pin_dir);
	jsonw_str(w, "state_file", g->state_path);
	jsonw_u64(w, "program_id", g->prog_id);
	jsonw_str(w, "mode_configured", modes[gc->mode]);
	jsonw_bool(w, "detached", g->detached);
	jsonw_arr_begin(w, "interfaces");
	for (unsigned i = 0; i < g->nifs; i++) {
		const struct guard_iface *it = &g->ifs[i];
		struct bpf_link_info info;
		bool attached = it->link_fd >= 0 && !link_info(it->link_fd, &info) && info.xdp.ifindex;
		const char *mode = attached ? mode_name(it->ifindex, info.prog_id) : NULL;

		jsonw_obj_begin(w);
		jsonw_str(w, "name", it->name);
		jsonw_u64(w, "ifindex", (uint64_t)it->ifindex);
		jsonw_bool(w, "attached", attached);
		if (mode)
			jsonw_str(w, "mode", mode);
		else
			jsonw_null(w, "mode");
		if (attached) {
			jsonw_u64(w, "program_id", info.prog_id);
			jsonw_u64(w, "link_id", info.id);
			jsonw_str(w, "link_pinned", it->pin);
			jsonw_bool(w, "adopted", it->adopted);
		} else {
			jsonw_null(w, "program_id");
			jsonw_null(w, "link_id");
			jsonw_null(w, "link_pinned");
			jsonw_bool(w, "adopted", false);
		}
		jsonw_obj_end(w);
	}
	jsonw_arr_end(w);
	for (size_t i = 0; i < g->nents; i++)
		*(g->ents[i].list == GUARD_LIST_ALLOW ? &nallow : &nblock) += 1;
	pthread_mutex_unlock(&g->lock);
	jsonw_arr_begin(w, "ports");
	for (unsigned i = 0; i < gc->nports; i++) {
		if (gc->ports[i].lo == gc->ports[i].hi)
			snprintf(buf, sizeof(buf), "%u", gc->ports[i].lo);
		else
			snprintf(buf, sizeof(buf), "%u-%u", gc->ports[i].lo, gc->ports[i].hi);
		jsonw_str(w, NULL, buf);
	}
	jsonw_arr_end(w);
	obj_begin_key(w, "limits");
	if (gc->syn_rate) {
		jsonw_u64(w, "syn_rate", gc->syn_rate);
		jsonw_u64(w, "syn_burst", gc->syn_burst);
	} else {
		jsonw_null(w, "syn_rate");
		jsonw_null(w, "syn_burst");
	}
	if (gc->pkt_rate) {
		jsonw_u64(w, "packet_rate", gc->pkt_rate);
		jsonw_u64(w, "packet_burst", gc->pkt_burst);
	} else {
		jsonw_null(w, "packet_rate");
		jsonw_null(w, "packet_burst");
	}
	jsonw_u64(w, "ipv6_prefix", gc->v6_prefix);
	jsonw_str(w, "unparsed", gc->unparsed_drop ? "drop" : "pass");
	jsonw_obj_end(w);
	if (gc->autoban.nstatuses) {
		obj_begin_key(w, "autoban");
		jsonw_arr_begin(w, "statuses");
		for (unsigned i = 0; i < gc->autoban.nstatuses; i++)
			jsonw_u64(w, NULL, gc->autoban.statuses[i]);
		jsonw_arr_end(w);
		jsonw_u64(w, "threshold", gc->autoban.threshold);
		jsonw_u64(w, "window_s", gc->autoban.window_ms / 1000);
		jsonw_u64(w, "ttl_s", gc->autoban.ttl_ms / 1000);
		jsonw_obj_end(w);
	} else {
		jsonw_null(w, "autoban");
	}
	jsonw_u64(w, "allow_entries", nallow);
	jsonw_u64(w, "block_entries", nblock);
	return 0;
}

int guard_read_counters(struct guard *g, struct guard_stat *out, uint64_t *bans)
{
	int ncpu = libbpf_num_possible_cpus(), fd;
	struct guard_stat *per;

	if (!g)
		return -ENODEV;
	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	per = calloc((size_t)ncpu, sizeof(*per));
	if (!per)
		return -ENOMEM;
	memset(out, 0, GUARD_R_MAX * sizeof(*out));
	fd = bpf_map__fd(g->skel->maps.guard_stats);
	for (uint32_t r = 0; r < GUARD_R_MAX; r++) {
		if (bpf_map_lookup_elem(fd, &r, per))
			continue;
		for (int c = 0; c < ncpu; c++) {
			out[r].packets += per[c].packets;
			out[r].bytes += per[c].bytes;
		}
	}
	free(per);
	pthread_mutex_lock(&g->lock);
	*bans = g->bans;
	pthread_mutex_unlock(&g->lock);
	return 0;
}

static int cmd_guard_stats(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			   size_t errlen)
{
	struct guard *g = ctx;
	int ncpu = libbpf_num_possible_cpus(), fd;
	struct guard_stat sum[GUARD_R_MAX] = { 0 }, *per;
	struct guard_sampler smp = { 0 };
	uint64_t now = mono_ns(), dt, dropped = 0;
	uint32_t zero = 0;
	bool have_prev;

	if (!g)
		return not_configured(err, errlen);
	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	per = calloc((size_t)ncpu, sizeof(*per));
	if (!per)
		return -ENOMEM;
	fd = bpf_map__fd(g->skel->maps.guard_stats);
	for (uint32_t r = 0; r < GUARD_R_MAX; r++) {
		if (bpf_map_lookup_elem(fd, &r, per))
			continue;
		for (int c = 0; c < ncpu; c++) {
			sum[r].packets += per[c].packets;
			sum[r].bytes += per[c].bytes;
		}
	}
	free(per);
	bpf_map_lookup_elem(bpf_map__fd(g->skel->maps.guard_evt_tb), &zero, &smp);
	for (unsigned i = 0; i < g->nrings; i++)
		dropped += atomic_load_explicit(&g->rings[i].dropped, memory_order_relaxed);

	pthread_mutex_lock(&g->lock);
	have_prev = g->prev_ns && now > g->prev_ns;
	dt = have_prev ? now - g->prev_ns : 0;
	obj_begin_key(w, "counters");
	for (uint32_t r = 0; r < GUARD_R_MAX; r++) {
		obj_begin_key(w, guard_reason_name(r));
		jsonw_u64(w, "packets", sum[r].packets);
		jsonw_u64(w, "bytes", sum[r].bytes);
		/* A counter that went backwards was reset (maps recreated): no rate for it. */
		if (have_prev && sum[r].packets >= g->prev[r].packets && sum[r].bytes >= g->prev[r].bytes) {
			jsonw_u64(w, "packets_per_s",
				  (uint64_t)((double)(sum[r].packets - g->prev[r].packets) * 1e9 / (double)dt));
			jsonw_u64(w, "bytes_per_s",
				  (uint64_t)((double)(sum[r].bytes - g->prev[r].bytes) * 1e9 / (double)dt));
		} else {
			jsonw_null(w, "packets_per_s");
			jsonw_null(w, "bytes_per_s");
		}
		jsonw_obj_end(w);
	}
	jsonw_obj_end(w);
	if (have_prev)
		jsonw_u64(w, "interval_ms", dt / 1000000ULL);
	else
		jsonw_null(w, "interval_ms");
	memcpy(g->prev, sum, sizeof(sum));
	g->prev_ns = now;
	obj_begin_key(w, "sampler");
	jsonw_u64(w, "emitted", smp.emitted);
	jsonw_u64(w, "suppressed", smp.suppressed);
	jsonw_u64(w, "lost", smp.lost);
	jsonw_obj_end(w);
	obj_begin_key(w, "autoban");
	jsonw_u64(w, "bans", g->bans);
	jsonw_u64(w, "reports_dropped", dropped);
	jsonw_obj_end(w);
	pthread_mutex_unlock(&g->lock);
	jsonw_bool(w, "per_interface", false);
	return 0;
}

static int cmd_guard_detach(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			    size_t errlen)
{
	struct guard *g = ctx;
	int n;

	if (!g)
		return not_configured(err, errlen);
	pthread_mutex_lock(&g->lock);
	g->detached = true;
	jsonw_arr_begin(w, "detached");
	for (unsigned i = 0; i < g->nifs; i++)
		if (g->ifs[i].link_fd >= 0) {
			jsonw_str(w, NULL, g->ifs[i].name);
			iface_drop_link(&g->ifs[i], true);
		}
	jsonw_arr_end(w);
	/* Links of interfaces no longer configured go too. */
	n = unpin_dir(g->gc->pin_dir, true, err, errlen);
	pthread_mutex_unlock(&g->lock);
	if (n < 0)
		return n;
	log_notice("guard: uid %u: detached from every interface (maps kept in %s)", (unsigned)req->uid,
		   g->gc->pin_dir);
	return 0;
}

int guard_register_commands(struct guard *g, struct control *c)
{
	static const struct { const char *name; control_fn fn; } cmds[] = {
		{ "block.add", cmd_block_add },       { "block.del", cmd_block_del },
		{ "block.list", cmd_block_list },     { "allow.add", cmd_allow_add },
		{ "allow.del", cmd_allow_del },       { "allow.list", cmd_allow_list },
		{ "guard.status", cmd_guard_status }, { "guard.stats", cmd_guard_stats },
		{ "guard.detach", cmd_guard_detach },
	};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		int rc = control_register(c, cmds[i].name, cmds[i].fn, g);

		if (rc)
			return rc;
	}
	return 0;
}
