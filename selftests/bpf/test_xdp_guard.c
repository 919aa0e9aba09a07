/* selftests/bpf/test_xdp_guard.c — packet fixtures for bpf/xdp_guard.bpf.c through BPF_PROG_TEST_RUN. */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "openclaw/guard.h"
#include "xdp_guard.skel.h"
#include "test.h"

/* ---- packet builder -------------------------------------------------------- */

#define PKT_MAX 1024

#define NH_HOP  0
#define NH_ROUT 43
#define NH_FRAG 44
#define NH_AH   51
#define NH_DST  60

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* A frame to build: Ethernet, VLAN tags, IPv4 or IPv6 (+ extension headers), L4, payload. */
struct spec {
	int family;       /* 4 or 6 */
	int nvlan;        /* VLAN tags, outermost first in tpid[] */
	uint16_t tpid[3]; /* 0x8100 / 0x88a8 */
	int ip4_opt;      /* IPv4 option bytes (multiple of 4, <= 40) */
	uint16_t ip4_frag; /* IPv4 flags + fragment offset field */
	int next;         /* IPv6 extension headers in ext[] */
	uint8_t ext[8];   /* NH_HOP, NH_ROUT, NH_DST, NH_AH, NH_FRAG */
	uint16_t frag6;   /* IPv6 fragment header offset/flags field */
	uint8_t proto;    /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP... */
	uint8_t tcp_flags;
	int tcp_opt;      /* TCP option bytes (multiple of 4) */
	uint16_t sport, dport;
	int payload;      /* L4 payload bytes */
	uint8_t saddr[16];
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static void set_src(struct spec *s, const char *addr)
{
	memset(s->saddr, 0, sizeof(s->saddr));
	if (inet_pton(AF_INET, addr, s->saddr) == 1)
		s->family = 4;
	else if (inet_pton(AF_INET6, addr, s->saddr) == 1)
		s->family = 6;
	else
		s->family = 0;
}

static struct spec tcp4(const char *src, uint16_t dport, uint8_t flags)
{
	struct spec s = { .proto = IPPROTO_TCP, .tcp_flags = flags, .sport = 40000, .dport = dport };

	set_src(&s, src);
	return s;
}

static struct spec udp4(const char *src, uint16_t dport)
{
	struct spec s = { .proto = IPPROTO_UDP, .sport = 40000, .dport = dport, .payload = 12 };

	set_src(&s, src);
	return s;
}

static size_t ext_len(uint8_t type)
{
	switch (type) {
	case NH_ROUT:
		return 24; /* hdrlen 2 */
	case NH_AH:
		return 24; /* hdrlen 4: (4 + 2) * 4 */
	default:
		return 8;
	}
}

/* Writes the frame into buf (PKT_MAX bytes); returns its length. */
static size_t build(const struct spec *s, uint8_t *buf)
{
	size_t off = 0, l3, l4len, extlen = 0, ip_hlen;
	int i;

	memset(buf, 0, PKT_MAX);
	memcpy(buf, "\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01", 12);
	off = 12;
	for (i = 0; i < s->nvlan; i++) {
		put16(buf + off, s->tpid[i]);
		put16(buf + off + 2, 100 + i);
		off += 4;
	}
	put16(buf + off, s->family == 6 ? 0x86dd : 0x0800);
	off += 2;
	l3 = off;

	if (s->proto == IPPROTO_TCP)
		l4len = 20 + s->tcp_opt + s->payload;
	else if (s->proto == IPPROTO_UDP)
		l4len = 8 + s->payload;
	else
		l4len = 8 + s->payload; /* ICMP echo-shaped */

	if (s->family == 4) {
		ip_hlen = 20 + s->ip4_opt;
		buf[l3] = 0x40 | (ip_hlen / 4);
		put16(buf + l3 + 2, ip_hlen + l4len);
		put16(buf + l3 + 4, 0x1234);
		put16(buf + l3 + 6, s->ip4_frag);
		buf[l3 + 8] = 64;
		buf[l3 + 9] = s->proto;
		memcpy(buf + l3 + 12, s->saddr, 4);
		memcpy(buf + l3 + 16, "\x0a\x00\x00\x01", 4);
		for (i = 0; i < s->ip4_opt; i++)
			buf[l3 + 20 + i] = 1; /* NOP options */
		off = l3 + ip_hlen;
	} else {
		for (i = 0; i < s->next; i++)
			extlen += ext_len(s->ext[i]);
		buf[l3] = 0x60;
		put16(buf + l3 + 4, extlen + l4len);
		buf[l3 + 6] = s->next ? s->ext[0] : s->proto;
		buf[l3 + 7] = 64;
		memcpy(buf + l3 + 8, s->saddr, 16);
		memcpy(buf + l3 + 24, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
		off = l3 + 40;
		for (i = 0; i < s->next; i++) {
			size_t len = ext_len(s->ext[i]);

			buf[off] = i + 1 < s->next ? s->ext[i + 1] : s->proto;
			if (s->ext[i] == NH_FRAG) {
				put16(buf + off + 2, s->frag6);
				memcpy(buf + off + 4, "\0\0\0\x2a", 4);
			} else if (s->ext[i] == NH_AH) {
				buf[off + 1] = 4;
			} else {
				buf[off + 1] = len / 8 - 1;
				if (s->ext[i] == NH_ROUT)
					buf[off + 2] = 4; /* type 4 (SRH-like), segments left 0 */
				else {
					buf[off + 2] = 1; /* PadN covering the rest */
					buf[off + 3] = len - 4;
				}
			}
			off += len;
		}
	}

	if (s->proto == IPPROTO_TCP) {
		put16(buf + off, s->sport);
		put16(buf + off + 2, s->dport);
		buf[off + 12] = ((20 + s->tcp_opt) / 4) << 4;
		buf[off + 13] = s->tcp_flags;
		put16(buf + off + 14, 65535);
		for (i = 0; i < s->tcp_opt; i++)
			buf[off + 20 + i] = 1;
	} else if (s->proto == IPPROTO_UDP) {
		put16(buf + off, s->sport);
		put16(buf + off + 2, s->dport);
		put16(buf + off + 4, l4len);
	} else {
		buf[off] = 8; /* echo request */
	}
	off += l4len - s->payload;
	for (i = 0; i < s->payload; i++)
		buf[off + i] = 'a' + i % 26;
	return off + s->payload;
}

/* ---- fixture --------------------------------------------------------------- */

struct fx {
	struct xdp_guard *skel;
	int prog;
	int ncpu;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000ull, .tv_nsec = ns % 1000000000ull };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int fx_set_cfg(struct fx *f, const struct guard_config *cfg)
{
	uint32_t zero = 0;

	return bpf_map_update_elem(bpf_map__fd(f->skel->maps.guard_cfg), &zero, cfg, BPF_ANY);
}

static int fx_protect(struct fx *f, uint32_t l4, uint16_t port)
{
	int fd = bpf_map__fd(f->skel->maps.guard_ports);
	uint32_t key = guard_port_key(l4, port);
	uint64_t word = 0;

	if (bpf_map_lookup_elem(fd, &key, &word))
		return -errno;
	word |= guard_port_bit(port);
	return bpf_map_update_elem(fd, &key, &word, BPF_ANY);
}

/* Base config of every test: enabled, TCP 80/443 and UDP 53 protected, no limits. */
static struct guard_config base_cfg(void)
{
	struct guard_config c = { .flags = GUARD_F_ENABLED, .v6_prefix_len = 64 };

	return c;
}

/* Loads a fresh guard (the verifier runs each time) with the base config. */
static int fx_open(struct fx *f)
{
	struct guard_config cfg = base_cfg();
	int err;

	memset(f, 0, sizeof(*f));
	f->skel = xdp_guard__open_and_load();
	if (!f->skel)
		return -errno;
	f->prog = bpf_program__fd(f->skel->progs.xdp_guard);
	f->ncpu = libbpf_num_possible_cpus();
	if (f->ncpu <= 0)
		return f->ncpu ? f->ncpu : -EINVAL;
	err = fx_set_cfg(f, &cfg);
	if (!err)
		err = fx_protect(f, GUARD_L4_TCP, 80);
	if (!err)
		err = fx_protect(f, GUARD_L4_TCP, 443);
	if (!err)
		err = fx_protect(f, GUARD_L4_UDP, 53);
	return err;
}

static void fx_close(struct fx *f)
{
	xdp_guard__destroy(f->skel);
	f->skel = NULL;
}

/* Sums the per-CPU counters into st[GUARD_R_MAX]. */
static int fx_stats(struct fx *f, struct guard_stat *st)
{
	struct guard_stat vals[f->ncpu];
	int fd = bpf_map__fd(f->skel->maps.guard_stats);
	uint32_t r;
	int c;

	for (r = 0; r < GUARD_R_MAX; r++) {
		if (bpf_map_lookup_elem(fd, &r, vals))
			return -errno;
		st[r].packets = st[r].bytes = 0;
		for (c = 0; c < f->ncpu; c++) {
			st[r].packets += vals[c].packets;
			st[r].bytes += vals[c].bytes;
		}
	}
	return 0;
}

/* One run's outcome: the program's return and the single reason it counted. */
struct verdict {
	int ret;     /* XDP_PASS / XDP_DROP, or -errno from the test run */
	int reason;  /* enum guard_reason; -1 if not exactly one counter moved by one packet */
	bool intact; /* data_out equals data_in */
};

static struct verdict fx_run(struct fx *f, const uint8_t *pkt, size_t len)
{
	struct guard_stat before[GUARD_R_MAX], after[GUARD_R_MAX];
	struct verdict v = { .ret = 0, .reason = -1 };
	uint8_t out[PKT_MAX + 64];
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt, .data_size_in = len, .data_out = out,
		    .data_size_out = sizeof(out), .repeat = 1);
	int r, moved = 0;

	if (fx_stats(f, before)) {
		v.ret = -errno;
		return v;
	}
	if (bpf_prog_test_run_opts(f->prog, &o)) {
		v.ret = -errno;
		return v;
	}
	v.ret = o.retval;
	v.intact = o.data_size_out == len && !memcmp(out, pkt, len);
	if (fx_stats(f, after))
		return v;
	for (r = 0; r < GUARD_R_MAX; r++) {
		uint64_t dp = after[r].packets - before[r].packets;
		uint64_t db = after[r].bytes - before[r].bytes;

		if (!dp && !db)
			continue;
		moved++;
		if (dp == 1 && db == len)
			v.reason = r;
	}
	if (moved != 1)
		v.reason = -1;
	return v;
}

static struct verdict fx_send(struct fx *f, const struct spec *s)
{
	uint8_t buf[PKT_MAX];
	size_t len = build(s, buf);

	return fx_run(f, buf, len);
}

/* Adds addr/plen to a list map; expires is CLOCK_MONOTONIC ns (0 = never). */
static int fx_list_add(struct fx *f, struct bpf_map *map, const char *addr, uint32_t plen,
		       uint64_t expires)
{
	struct guard_lpm6_key key = { .prefixlen = plen };
	struct guard_list_val val = { .expires_ns = expires, .prefixlen = plen,
				      .origin = GUARD_ORIGIN_MANUAL };

	if (inet_pton(AF_INET, addr, key.addr) != 1 && inet_pton(AF_INET6, addr, key.addr) != 1)
		return -EINVAL;
	return bpf_map_update_elem(bpf_map__fd(map), &key, &val, BPF_ANY);
}

static int fx_src_key(const char *addr, struct guard_src_key *key)
{
	memset(key, 0, sizeof(*key));
	if (inet_pton(AF_INET, addr, key->addr) == 1)
		key->family = GUARD_AF_INET;
	else if (inet_pton(AF_INET6, addr, key->addr) == 1)
		key->family = GUARD_AF_INET6;
	else
		return -EINVAL;
	return 0;
}

static int fx_bucket(struct fx *f, struct bpf_map *map, const char *addr, struct guard_bucket *b)
{
	struct guard_src_key key;

	if (fx_src_key(addr, &key))
		return -EINVAL;
	return bpf_map_lookup_elem(bpf_map__fd(map), &key, b) ? -errno : 0;
}

/*
 * Declares a subtest run against a freshly loaded guard (fresh maps, zero
 * counters): the body may return early on a failed assertion and the
 * skeleton is still destroyed.
 */
#define FX_TEST(name)                                                                 \
	static void name##_body(struct fx *f);                                        \
	static void name(void)                                                        \
	{                                                                             \
		struct fx f__;                                                        \
		int err__ = fx_open(&f__);                                            \
		if (!err__)                                                           \
			name##_body(&f__);                                            \
		fx_close(&f__);                                                       \
		ASSERT_EQ(err__, 0);                                                  \
	}                                                                             \
	static void name##_body(struct fx *f)

#define EXPECT(v, want_ret, want_reason)                                              \
	do {                                                                          \
		struct verdict v__ = (v);                                             \
		ASSERT_EQ(v__.ret, want_ret);                                         \
		ASSERT_EQ(v__.reason, want_reason);                                   \
	} while (0)

#define PASS_AS(v, reason) EXPECT(v, XDP_PASS, reason)
#define DROP_AS(v, reason) EXPECT(v, XDP_DROP, reason)

/*
 * Checks one parse path: the spec (from 198.51.100.7 or 2001:db8:bad::7, to
 * a protected port) must be judged, and with the source blocklisted it must
 * drop, which proves the parser found both the source and the port; the
 * same frame to an unprotected port must pass untouched.
 */
static void check_parse_path(struct fx *f, struct spec s)
{
	struct verdict v;

	PASS_AS(fx_send(f, &s), GUARD_R_PASS);
	ASSERT_EQ(fx_list_add(f, s.family == 4 ? f->skel->maps.guard_block4 : f->skel->maps.guard_block6,
			      s.family == 4 ? "198.51.100.7" : "2001:db8:bad::7", s.family == 4 ? 32 : 128, 0),
		  0);
	DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
	s.dport = 8080;
	v = fx_send(f, &s);
	PASS_AS(v, GUARD_R_NOT_PROTECTED);
	ASSERT_TRUE(v.intact);
}

/* ---- parse paths ----------------------------------------------------------- */

FX_TEST(parse_ipv4_tcp)
{
	struct spec s = tcp4("198.51.100.7", 80, TCP_ACK);

	s.payload = 100;
	check_parse_path(f, s);
}

FX_TEST(parse_ipv4_tcp_options)
{
	struct spec s = tcp4("198.51.100.7", 443, TCP_SYN);

	s.tcp_opt = 20; /* doff 10 */
	check_parse_path(f, s);
}

FX_TEST(parse_ipv4_udp)
{
	check_parse_path(f, udp4("198.51.100.7", 53));
}

FX_TEST(parse_ipv4_udp_port_is_per_protocol)
{
	struct spec t = tcp4("198.51.100.7", 53, TCP_SYN), u = udp4("198.51.100.7", 80);

	/* TCP 53 is not protected, only UDP 53; UDP 80 is not, only TCP 80. */
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.7", 32, 0), 0);
	PASS_AS(fx_send(f, &t), GUARD_R_NOT_PROTECTED);
	PASS_AS(fx_send(f, &u), GUARD_R_NOT_PROTECTED);
}

FX_TEST(parse_ipv4_options)
{
	int opt;

	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.7", 32, 0), 0);
	for (opt = 4; opt <= 40; opt += 4) {
		struct spec s = tcp4("198.51.100.7", 80, TCP_SYN);
		struct spec u = udp4("198.51.100.7", 53);

		s.ip4_opt = u.ip4_opt = opt;
		DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
		DROP_AS(fx_send(f, &u), GUARD_R_BLOCKLISTED);
		s.dport = 22;
		PASS_AS(fx_send(f, &s), GUARD_R_NOT_PROTECTED);
	}
}

FX_TEST(parse_ipv6_tcp)
{
	struct spec s = tcp4("2001:db8:bad::7", 80, TCP_SYN);

	s.payload = 64;
	check_parse_path(f, s);
}

FX_TEST(parse_ipv6_udp)
{
	check_parse_path(f, udp4("2001:db8:bad::7", 53));
}

static struct spec v6_ext(uint8_t proto, int n, const uint8_t *types)
{
	struct spec s = proto == IPPROTO_TCP ? tcp4("2001:db8:bad::7", 80, TCP_SYN)
					     : udp4("2001:db8:bad::7", 53);

	s.next = n;
	memcpy(s.ext, types, n);
	return s;
}

FX_TEST(parse_ipv6_ext_hop_by_hop)
{
	check_parse_path(f, v6_ext(IPPROTO_TCP, 1, (uint8_t[]){ NH_HOP }));
}

FX_TEST(parse_ipv6_ext_routing)
{
	check_parse_path(f, v6_ext(IPPROTO_UDP, 1, (uint8_t[]){ NH_ROUT }));
}

FX_TEST(parse_ipv6_ext_dest_opts)
{
	check_parse_path(f, v6_ext(IPPROTO_TCP, 1, (uint8_t[]){ NH_DST }));
}

FX_TEST(parse_ipv6_ext_fragment_first)
{
	struct spec s = v6_ext(IPPROTO_TCP, 1, (uint8_t[]){ NH_FRAG });

	s.frag6 = 0x0001; /* offset 0, more fragments */
	check_parse_path(f, s);
}

FX_TEST(parse_ipv6_ext_auth_header)
{
	check_parse_path(f, v6_ext(IPPROTO_UDP, 1, (uint8_t[]){ NH_AH }));
}

FX_TEST(parse_ipv6_ext_chain_at_limit)
{
	const uint8_t chain[GUARD_V6_MAX_EXT] = { NH_HOP, NH_DST, NH_ROUT, NH_FRAG, NH_AH, NH_DST };

	check_parse_path(f, v6_ext(IPPROTO_TCP, GUARD_V6_MAX_EXT, chain));
}

FX_TEST(parse_ipv6_ext_chain_too_deep)
{
	const uint8_t chain[GUARD_V6_MAX_EXT + 1] = { NH_HOP, NH_DST, NH_ROUT, NH_DST,
						      NH_DST, NH_DST, NH_DST };
	struct spec s = v6_ext(IPPROTO_TCP, GUARD_V6_MAX_EXT + 1, chain);
	struct guard_config cfg = base_cfg();

	PASS_AS(fx_send(f, &s), GUARD_R_UNPARSED_PASS);
	cfg.unparsed_policy = GUARD_UNPARSED_DROP;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	DROP_AS(fx_send(f, &s), GUARD_R_UNPARSED_DROP);
}

FX_TEST(parse_ipv6_icmp_and_no_next_header_pass)
{
	struct spec s = tcp4("2001:db8:bad::7", 80, 0);
	struct guard_config cfg = base_cfg();

	cfg.unparsed_policy = GUARD_UNPARSED_DROP;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block6, "2001:db8:bad::7", 128, 0), 0);
	s.proto = 58; /* ICMPv6: neighbour discovery must never be judged */
	PASS_AS(fx_send(f, &s), GUARD_R_NOT_PROTECTED);
	s.proto = 59; /* no next header */
	s.payload = 0;
	PASS_AS(fx_send(f, &s), GUARD_R_NOT_PROTECTED);
}

FX_TEST(parse_vlan_single)
{
	struct spec s = tcp4("198.51.100.7", 80, TCP_SYN);

	s.nvlan = 1;
	s.tpid[0] = 0x8100;
	check_parse_path(f, s);
}

FX_TEST(parse_vlan_double)
{
	struct spec s = udp4("2001:db8:bad::7", 53);

	s.nvlan = 2;
	s.tpid[0] = 0x88a8;
	s.tpid[1] = 0x8100;
	check_parse_path(f, s);
}

FX_TEST(parse_vlan_triple_is_unparsed)
{
	struct spec s = tcp4("198.51.100.7", 80, TCP_SYN);
	struct guard_config cfg = base_cfg();

	s.nvlan = 3;
	s.tpid[0] = 0x88a8;
	s.tpid[1] = 0x8100;
	s.tpid[2] = 0x8100;
	PASS_AS(fx_send(f, &s), GUARD_R_UNPARSED_PASS);
	cfg.unparsed_policy = GUARD_UNPARSED_DROP;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	DROP_AS(fx_send(f, &s), GUARD_R_UNPARSED_DROP);
}

FX_TEST(not_protected_passes_untouched)
{
	struct spec ssh = tcp4("198.51.100.7", 22, TCP_SYN), icmp = tcp4("198.51.100.7", 0, 0);
	struct guard_config cfg = base_cfg();
	uint8_t arp[42] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06,
			    0, 1, 0x08, 0, 6, 4, 0, 1 };
	struct guard_bucket b;
	struct verdict v;
	int i;

	/* The worst case for SSH: its source blocked, every limit at one, drop policy. */
	cfg.flags |= GUARD_F_SYN_LIMIT | GUARD_F_PKT_LIMIT;
	cfg.syn_rate = cfg.pkt_rate = 1;
	cfg.syn_burst = cfg.pkt_burst = 1;
	cfg.unparsed_policy = GUARD_UNPARSED_DROP;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.0", 24, 0), 0);
	for (i = 0; i < 5; i++) {
		v = fx_send(f, &ssh);
		PASS_AS(v, GUARD_R_NOT_PROTECTED);
		ASSERT_TRUE(v.intact);
	}
	icmp.proto = IPPROTO_ICMP;
	v = fx_send(f, &icmp);
	PASS_AS(v, GUARD_R_NOT_PROTECTED);
	ASSERT_TRUE(v.intact);
	v = fx_run(f, arp, sizeof(arp));
	PASS_AS(v, GUARD_R_NOT_PROTECTED);
	ASSERT_TRUE(v.intact);
	/* Nothing about the SSH source was remembered. */
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "198.51.100.7", &b), -ENOENT);
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_pkt_tb, "198.51.100.7", &b), -ENOENT);
}

FX_TEST(disabled_passes_everything)
{
	struct spec s = tcp4("198.51.100.7", 80, TCP_SYN);
	struct guard_config zero = { 0 };

	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.7", 32, 0), 0);
	DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
	ASSERT_EQ(fx_set_cfg(f, &zero), 0); /* what a never-configured guard sees */
	PASS_AS(fx_send(f, &s), GUARD_R_DISABLED);
}

/* ---- truncated and malformed ----------------------------------------------- */

/*
 * Cuts a valid frame at every length. The kernel refuses frames shorter than
 * an Ethernet header; every other cut leaves some header or the IP payload
 * short, so it is unparsed: passed under the pass policy, dropped under drop.
 */
static void check_truncations(struct fx *f, const struct spec *s)
{
	struct guard_config cfg = base_cfg();
	uint8_t buf[PKT_MAX];
	size_t len = build(s, buf), cut;
	int policy;

	for (policy = 0; policy < 2; policy++) {
		cfg.unparsed_policy = policy ? GUARD_UNPARSED_DROP : GUARD_UNPARSED_PASS;
		ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
		for (cut = 1; cut < 14; cut++)
			ASSERT_EQ(fx_run(f, buf, cut).ret, -EINVAL);
		for (cut = 14; cut < len; cut++) {
			struct verdict v = fx_run(f, buf, cut);

			if (v.ret != (policy ? XDP_DROP : XDP_PASS) ||
			    v.reason != (policy ? GUARD_R_UNPARSED_DROP : GUARD_R_UNPARSED_PASS))
				printf("#   cut at %zu of %zu\n", cut, len);
			if (policy)
				DROP_AS(v, GUARD_R_UNPARSED_DROP);
			else
				PASS_AS(v, GUARD_R_UNPARSED_PASS);
		}
		PASS_AS(fx_run(f, buf, len), GUARD_R_PASS);
	}
}

FX_TEST(truncated_ipv4_tcp_with_options)
{
	struct spec s = tcp4("198.51.100.7", 80, TCP_SYN);

	s.ip4_opt = 12;
	s.tcp_opt = 8;
	s.payload = 5;
	s.nvlan = 1;
	s.tpid[0] = 0x8100;
	check_truncations(f, &s);
}

FX_TEST(truncated_ipv4_udp_double_vlan)
{
	struct spec s = udp4("198.51.100.7", 53);

	s.nvlan = 2;
	s.tpid[0] = 0x88a8;
	s.tpid[1] = 0x8100;
	check_truncations(f, &s);
}

FX_TEST(truncated_ipv6_ext_tcp)
{
	const uint8_t chain[] = { NH_HOP, NH_ROUT, NH_FRAG, NH_AH, NH_DST };
	struct spec s = v6_ext(IPPROTO_TCP, 5, chain);

	s.frag6 = 0;
	s.payload = 3;
	check_truncations(f, &s);
}

FX_TEST(truncated_ipv6_udp)
{
	struct spec s = udp4("2001:db8:bad::7", 53);

	s.nvlan = 1;
	s.tpid[0] = 0x88a8;
	check_truncations(f, &s);
}

FX_TEST(padded_frame_parses_by_ip_length)
{
	struct spec s = tcp4("198.51.100.7", 80, TCP_SYN);
	uint8_t buf[PKT_MAX];
	size_t len = build(&s, buf);

	/* 54-byte SYN padded to the 60-byte Ethernet minimum: padding is not a header. */
	ASSERT_EQ(len, 54);
	PASS_AS(fx_run(f, buf, 60), GUARD_R_PASS);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.7", 32, 0), 0);
	DROP_AS(fx_run(f, buf, 60), GUARD_R_BLOCKLISTED);
}

/* Runs buf under both policies and expects it unparsed. */
static void check_unparsed(struct fx *f, const uint8_t *buf, size_t len)
{
	struct guard_config cfg = base_cfg();

	PASS_AS(fx_run(f, buf, len), GUARD_R_UNPARSED_PASS);
	cfg.unparsed_policy = GUARD_UNPARSED_DROP;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	DROP_AS(fx_run(f, buf, len), GUARD_R_UNPARSED_DROP);
	cfg.unparsed_policy = GUARD_UNPARSED_PASS;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
}

FX_TEST(malformed_ipv4_headers)
{
	struct spec s = tcp4("198.51.100.7", 80, TCP_SYN);
	uint8_t good[PKT_MAX], buf[PKT_MAX];
	size_t len, l3 = 14;
	int ihl;

	s.payload = 40;
	len = build(&s, good);
	for (ihl = 0; ihl < 5; ihl++) {
		memcpy(buf, good, len);
		buf[l3] = 0x40 | ihl;
		check_unparsed(f, buf, len);
	}
	memcpy(buf, good, len); /* version 5 */
	buf[l3] = 0x55;
	check_unparsed(f, buf, len);
	memcpy(buf, good, len); /* total length beyond the frame */
	put16(buf + l3 + 2, len - l3 + 1);
	check_unparsed(f, buf, len);
	memcpy(buf, good, len); /* total length shorter than the IP header */
	put16(buf + l3 + 2, 19);
	check_unparsed(f, buf, len);
	memcpy(buf, good, len); /* IHL 15 = 60 bytes, total length covers only 40 */
	buf[l3] = 0x4f;
	put16(buf + l3 + 2, 40);
	check_unparsed(f, buf, len);
	memcpy(buf, good, len); /* TCP header cut by the IP total length (rest is "padding") */
	put16(buf + l3 + 2, 20 + 12);
	check_unparsed(f, buf, len);
	memcpy(buf, good, len); /* TCP data offset below 5 */
	buf[l3 + 20 + 12] = 0x40;
	check_unparsed(f, buf, len);
	memcpy(buf, good, len); /* TCP data offset past the packet */
	buf[l3 + 20 + 12] = 0xf0;
	put16(buf + l3 + 2, 20 + 40);
	check_unparsed(f, buf, 14 + 20 + 40);
	/* The unmodified frame still passes. */
	PASS_AS(fx_run(f, good, len), GUARD_R_PASS);
}

FX_TEST(malformed_udp_and_ipv6)
{
	struct spec u = udp4("198.51.100.7", 53), u6 = udp4("2001:db8:bad::7", 53);
	uint8_t buf[PKT_MAX];
	size_t len;

	len = build(&u, buf);
	put16(buf + 14 + 20 + 4, 7); /* UDP length below its header */
	check_unparsed(f, buf, len);
	put16(buf + 14 + 20 + 4, len - 14 - 20 + 1); /* UDP length past the IP packet */
	check_unparsed(f, buf, len);

	len = build(&u6, buf);
	buf[14] = 0x40; /* version 4 in an IPv6 ethertype */
	check_unparsed(f, buf, len);
	len = build(&u6, buf);
	put16(buf + 14 + 4, len - 14 - 40 + 1); /* payload length beyond the frame */
	check_unparsed(f, buf, len);
	put16(buf + 14 + 4, 0); /* jumbogram marker without the option */
	check_unparsed(f, buf, len);
}

/* ---- fragments ------------------------------------------------------------- */

FX_TEST(ipv4_fragments)
{
	struct spec first = udp4("198.51.100.7", 53), later = udp4("198.51.100.7", 53);
	struct guard_config cfg = base_cfg();
	int i;

	first.ip4_frag = 0x2000; /* MF, offset 0: carries the UDP header */
	first.payload = 64;
	later.ip4_frag = 0x2000 | 9; /* offset 72 bytes: no L4 header */
	later.payload = 64;

	/* Rate buckets never see later fragments. */
	cfg.flags |= GUARD_F_PKT_LIMIT;
	cfg.pkt_rate = 1;
	cfg.pkt_burst = 1;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	PASS_AS(fx_send(f, &first), GUARD_R_PASS);
	DROP_AS(fx_send(f, &first), GUARD_R_PKT_RATE);
	for (i = 0; i < 5; i++)
		PASS_AS(fx_send(f, &later), GUARD_R_FRAGMENT);
	later.ip4_frag = 9; /* last fragment (no MF) */
	PASS_AS(fx_send(f, &later), GUARD_R_FRAGMENT);

	/* Blocklisted: every fragment drops, whatever the port, even the SSH port. */
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.0", 24, 0), 0);
	DROP_AS(fx_send(f, &first), GUARD_R_BLOCKLISTED);
	DROP_AS(fx_send(f, &later), GUARD_R_BLOCKLISTED);
	later.proto = IPPROTO_TCP;
	later.dport = 22;
	DROP_AS(fx_send(f, &later), GUARD_R_BLOCKLISTED);
	/* First fragment to an unprotected port is not judged. */
	first.dport = 5353;
	PASS_AS(fx_send(f, &first), GUARD_R_NOT_PROTECTED);
	/* Protocols the guard does not judge are not judged as fragments either. */
	later.proto = IPPROTO_ICMP;
	PASS_AS(fx_send(f, &later), GUARD_R_NOT_PROTECTED);
	/* The allowlist wins for fragments as well. */
	later.proto = IPPROTO_UDP;
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_allow4, "198.51.100.7", 32, 0), 0);
	PASS_AS(fx_send(f, &later), GUARD_R_ALLOWLISTED);
}

FX_TEST(ipv6_fragments)
{
	struct spec s = v6_ext(IPPROTO_UDP, 2, (uint8_t[]){ NH_HOP, NH_FRAG });

	s.frag6 = (9 << 3) | 1; /* later fragment */
	PASS_AS(fx_send(f, &s), GUARD_R_FRAGMENT);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block6, "2001:db8:bad::", 48, 0), 0);
	DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
	s.frag6 = 1; /* first fragment, port visible */
	DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
	s.dport = 5353;
	PASS_AS(fx_send(f, &s), GUARD_R_NOT_PROTECTED);
	s.proto = 58; /* later fragment of ICMPv6 */
	s.frag6 = 9 << 3;
	PASS_AS(fx_send(f, &s), GUARD_R_NOT_PROTECTED);
}

/* ---- lists ----------------------------------------------------------------- */

FX_TEST(blocklist_ipv4)
{
	struct spec in = tcp4("203.0.113.77", 80, TCP_SYN), out = tcp4("203.0.114.1", 80, TCP_SYN);
	struct spec host = tcp4("192.0.2.9", 443, TCP_ACK);

	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "203.0.113.0", 24, 0), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "192.0.2.9", 32, 0), 0);
	DROP_AS(fx_send(f, &in), GUARD_R_BLOCKLISTED);
	PASS_AS(fx_send(f, &out), GUARD_R_PASS);
	DROP_AS(fx_send(f, &host), GUARD_R_BLOCKLISTED);
	set_src(&host, "192.0.2.10");
	PASS_AS(fx_send(f, &host), GUARD_R_PASS);
	/* An IPv6 source with the same leading bytes is not in the IPv4 list. */
	set_src(&in, "cb00:7100::1");
	PASS_AS(fx_send(f, &in), GUARD_R_PASS);
}

FX_TEST(blocklist_ipv6)
{
	struct spec in = udp4("2001:db8:dead:beef::1234", 53), out = udp4("2001:db8:dead:bef0::1", 53);

	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block6, "2001:db8:dead:beef::", 64, 0), 0);
	DROP_AS(fx_send(f, &in), GUARD_R_BLOCKLISTED);
	PASS_AS(fx_send(f, &out), GUARD_R_PASS);
	/* The IPv4 tries are not consulted for IPv6 sources and vice versa. */
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "32.1.13.184", 32, 0), 0);
	PASS_AS(fx_send(f, &out), GUARD_R_PASS);
}

FX_TEST(allow_beats_block)
{
	struct spec v4 = tcp4("203.0.113.5", 80, TCP_SYN), v6 = tcp4("2001:db8:1::5", 80, TCP_SYN);
	struct guard_config cfg = base_cfg();
	int i;

	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "203.0.113.0", 24, 0), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_allow4, "203.0.113.5", 32, 0), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block6, "2001:db8:1::5", 128, 0), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_allow6, "2001:db8::", 32, 0), 0);
	PASS_AS(fx_send(f, &v4), GUARD_R_ALLOWLISTED);
	PASS_AS(fx_send(f, &v6), GUARD_R_ALLOWLISTED);
	set_src(&v4, "203.0.113.6");
	DROP_AS(fx_send(f, &v4), GUARD_R_BLOCKLISTED);

	/* Allowlisted sources skip the rate limits too. */
	cfg.flags |= GUARD_F_SYN_LIMIT | GUARD_F_PKT_LIMIT;
	cfg.syn_rate = cfg.pkt_rate = 1;
	cfg.syn_burst = cfg.pkt_burst = 1;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	for (i = 0; i < 10; i++)
		PASS_AS(fx_send(f, &v6), GUARD_R_ALLOWLISTED);
}

FX_TEST(expiry_honoured)
{
	struct spec s = tcp4("198.51.100.7", 80, TCP_SYN);
	struct guard_config cfg = base_cfg();
	struct guard_bucket b;
	uint64_t t0, t1;

	/* The guard's clock is CLOCK_MONOTONIC: a bucket stamp lands between two readings. */
	cfg.flags |= GUARD_F_PKT_LIMIT;
	cfg.pkt_rate = 1000;
	cfg.pkt_burst = 1000;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	t0 = now_ns();
	PASS_AS(fx_send(f, &s), GUARD_R_PASS);
	t1 = now_ns();
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_pkt_tb, "198.51.100.7", &b), 0);
	ASSERT_LE(t0, b.last_ns);
	ASSERT_LE(b.last_ns, t1);

	/* Expired a millisecond ago: no match. */
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.7", 32, now_ns() - 1000000), 0);
	PASS_AS(fx_send(f, &s), GUARD_R_PASS);
	/* Expires in an hour: match. */
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.7", 32,
			      now_ns() + 3600000000000ull), 0);
	DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
	/* Expires in 100 ms: matches now, not after 150 ms, with no userspace sweep. */
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.7", 32, now_ns() + 100000000), 0);
	DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
	sleep_ns(150000000);
	PASS_AS(fx_send(f, &s), GUARD_R_PASS);

	/* An expired allow entry no longer beats a live block. */
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block6, "2001:db8:bad::", 48, 0), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_allow6, "2001:db8:bad::7", 128, now_ns() - 1), 0);
	set_src(&s, "2001:db8:bad::7");
	DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
}

FX_TEST(expired_entry_does_not_hide_covering_prefix)
{
	struct spec s = tcp4("198.51.100.7", 80, TCP_SYN), s6 = tcp4("2001:db8:bad::7", 80, TCP_SYN);
	uint64_t past = now_ns() - 1;

	/* A permanent /16, an expired /24 and an expired /32 inside it: still blocked by the /16. */
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.0.0", 16, 0), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.0", 24, past), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.7", 32, past), 0);
	DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block6, "2001:db8::", 32, 0), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block6, "2001:db8:bad::7", 128, past), 0);
	DROP_AS(fx_send(f, &s6), GUARD_R_BLOCKLISTED);
	/* Everything expired: passes. */
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.0.0", 16, past), 0);
	PASS_AS(fx_send(f, &s), GUARD_R_PASS);
}

/* ---- token buckets --------------------------------------------------------- */

static void set_limits(struct fx *f, uint64_t syn_rate, uint64_t syn_burst, uint64_t pkt_rate,
		       uint64_t pkt_burst, uint32_t v6_prefix)
{
	struct guard_config cfg = base_cfg();

	if (syn_rate)
		cfg.flags |= GUARD_F_SYN_LIMIT;
	if (pkt_rate)
		cfg.flags |= GUARD_F_PKT_LIMIT;
	cfg.syn_rate = syn_rate;
	cfg.syn_burst = syn_burst;
	cfg.pkt_rate = pkt_rate;
	cfg.pkt_burst = pkt_burst;
	cfg.v6_prefix_len = v6_prefix;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
}

FX_TEST(syn_bucket_burst_then_drop)
{
	struct spec syn = tcp4("198.51.100.7", 80, TCP_SYN), other = tcp4("198.51.100.8", 80, TCP_SYN);
	struct spec ack = tcp4("198.51.100.7", 80, TCP_ACK);
	struct spec synack = tcp4("198.51.100.7", 80, TCP_SYN | TCP_ACK);
	struct spec u = udp4("198.51.100.7", 53);
	const int burst = 7;
	struct guard_bucket b;
	int i;

	set_limits(f, 1, burst, 0, 0, 64);
	for (i = 0; i < burst; i++)
		PASS_AS(fx_send(f, &syn), GUARD_R_PASS);
	for (i = 0; i < 3; i++)
		DROP_AS(fx_send(f, &syn), GUARD_R_SYN_RATE);
	/* Established traffic of the same source is not a new connection. */
	PASS_AS(fx_send(f, &ack), GUARD_R_PASS);
	PASS_AS(fx_send(f, &synack), GUARD_R_PASS);
	/* Another source has its own bucket. */
	PASS_AS(fx_send(f, &other), GUARD_R_PASS);
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "198.51.100.7", &b), 0);
	ASSERT_LT(b.tokens, GUARD_TB_ONE);
	/* UDP is never a SYN. */
	PASS_AS(fx_send(f, &u), GUARD_R_PASS);
}

FX_TEST(syn_bucket_ignores_acks)
{
	struct spec syn = tcp4("198.51.100.7", 443, TCP_SYN), ack = tcp4("198.51.100.7", 443, TCP_ACK);
	struct guard_bucket b;
	int i;

	set_limits(f, 1, 3, 0, 0, 64);
	for (i = 0; i < 20; i++)
		PASS_AS(fx_send(f, &ack), GUARD_R_PASS);
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "198.51.100.7", &b), -ENOENT);
	for (i = 0; i < 3; i++)
		PASS_AS(fx_send(f, &syn), GUARD_R_PASS);
	DROP_AS(fx_send(f, &syn), GUARD_R_SYN_RATE);
	ack.tcp_flags = TCP_ACK | TCP_FIN;
	PASS_AS(fx_send(f, &ack), GUARD_R_PASS);
	ack.tcp_flags = TCP_RST;
	PASS_AS(fx_send(f, &ack), GUARD_R_PASS);
}

FX_TEST(syn_bucket_refills_over_time)
{
	struct spec syn = tcp4("198.51.100.7", 80, TCP_SYN);
	const uint64_t rate = 100, burst = 100;
	struct guard_bucket b0, b1;
	uint64_t t_sleep0, t_sleep1, gained;
	int i, n;

	set_limits(f, rate, burst, 0, 0, 64);
	for (i = 0; i < (int)burst; i++)
		PASS_AS(fx_send(f, &syn), GUARD_R_PASS);
	for (i = 0; i < 200; i++)
		if (fx_send(f, &syn).ret == XDP_DROP)
			break;
	ASSERT_LT(i, 200);
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "198.51.100.7", &b0), 0);
	ASSERT_LT(b0.tokens, GUARD_TB_ONE);

	t_sleep0 = now_ns();
	sleep_ns(100000000);
	t_sleep1 = now_ns();

	/* One SYN: the bucket must hold exactly the fixed-point refill minus one token. */
	PASS_AS(fx_send(f, &syn), GUARD_R_PASS);
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "198.51.100.7", &b1), 0);
	ASSERT_GT(b1.last_ns, b0.last_ns);
	gained = (b1.last_ns - b0.last_ns) * rate;
	ASSERT_LT(gained, burst * GUARD_TB_ONE);
	ASSERT_EQ(b1.tokens, b0.tokens + gained - GUARD_TB_ONE);

	/* Then the rest: about 100 ms * 100/s, bounded by both clocks. */
	for (n = 1; n < (int)burst; n++)
		if (fx_send(f, &syn).ret == XDP_DROP)
			break;
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "198.51.100.7", &b1), 0);
	ASSERT_GE(n, (int)((t_sleep1 - t_sleep0) * rate / GUARD_TB_ONE));
	ASSERT_LE(n, (int)((b0.tokens + (b1.last_ns - b0.last_ns) * rate) / GUARD_TB_ONE));
	printf("# slept %.1f ms, %d SYNs passed after the sleep\n", (t_sleep1 - t_sleep0) / 1e6, n);
}

FX_TEST(ipv6_prefix_grouping)
{
	struct spec a = tcp4("2001:db8:1:2::1", 80, TCP_SYN);
	struct spec b = tcp4("2001:db8:1:2:ffff:ffff:ffff:fffe", 80, TCP_SYN);
	struct spec c = tcp4("2001:db8:1:3::1", 80, TCP_SYN), d = tcp4("2001:db8:2:2::1", 80, TCP_SYN);
	struct guard_bucket bk;

	set_limits(f, 1, 2, 0, 0, 64);
	PASS_AS(fx_send(f, &a), GUARD_R_PASS);
	PASS_AS(fx_send(f, &b), GUARD_R_PASS);
	DROP_AS(fx_send(f, &a), GUARD_R_SYN_RATE); /* same /64: shared, spent */
	DROP_AS(fx_send(f, &b), GUARD_R_SYN_RATE);
	PASS_AS(fx_send(f, &c), GUARD_R_PASS); /* next /64: its own bucket */
	/* The bucket key is the masked prefix, not any one address. */
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "2001:db8:1:2::", &bk), 0);
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "2001:db8:1:2::1", &bk), -ENOENT);

	/* /48 merges c into a's bucket (fresh one under its /48 key), d stays apart. */
	set_limits(f, 1, 2, 0, 0, 48);
	PASS_AS(fx_send(f, &a), GUARD_R_PASS);
	PASS_AS(fx_send(f, &c), GUARD_R_PASS);
	DROP_AS(fx_send(f, &b), GUARD_R_SYN_RATE);
	PASS_AS(fx_send(f, &d), GUARD_R_PASS);
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "2001:db8:1::", &bk), 0);

	/* /128: every address alone; a prefix of 0 means the default /64. */
	set_limits(f, 1, 1, 0, 0, 128);
	PASS_AS(fx_send(f, &a), GUARD_R_PASS);
	PASS_AS(fx_send(f, &b), GUARD_R_PASS);
	DROP_AS(fx_send(f, &a), GUARD_R_SYN_RATE);
	set_limits(f, 1, 1, 0, 0, 0);
	set_src(&a, "2001:db8:7:7::1");
	set_src(&b, "2001:db8:7:7::2");
	PASS_AS(fx_send(f, &a), GUARD_R_PASS);
	DROP_AS(fx_send(f, &b), GUARD_R_SYN_RATE);
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "2001:db8:7:7::", &bk), 0);

	/* A non-octet prefix: /61 keeps 2001:db8:1:0..7 together. */
	set_limits(f, 1, 1, 0, 0, 61);
	set_src(&a, "2001:db8:9:8::1");
	set_src(&b, "2001:db8:9:f::1");
	set_src(&c, "2001:db8:9:10::1");
	PASS_AS(fx_send(f, &a), GUARD_R_PASS);
	DROP_AS(fx_send(f, &b), GUARD_R_SYN_RATE);
	PASS_AS(fx_send(f, &c), GUARD_R_PASS);
	ASSERT_EQ(fx_bucket(f, f->skel->maps.guard_syn_tb, "2001:db8:9:8::", &bk), 0);
}

FX_TEST(packet_bucket)
{
	struct spec u = udp4("198.51.100.7", 53), t = tcp4("198.51.100.7", 80, TCP_ACK);
	struct spec syn = tcp4("198.51.100.7", 80, TCP_SYN), ssh = tcp4("198.51.100.7", 22, TCP_ACK);
	int i;

	set_limits(f, 0, 0, 1, 5, 64);
	for (i = 0; i < 3; i++)
		PASS_AS(fx_send(f, &u), GUARD_R_PASS);
	PASS_AS(fx_send(f, &t), GUARD_R_PASS);
	PASS_AS(fx_send(f, &syn), GUARD_R_PASS);
	DROP_AS(fx_send(f, &u), GUARD_R_PKT_RATE);
	DROP_AS(fx_send(f, &t), GUARD_R_PKT_RATE);
	PASS_AS(fx_send(f, &ssh), GUARD_R_NOT_PROTECTED);

	/* Both limits: a SYN dropped by the SYN bucket spends no packet token. */
	set_limits(f, 1, 1, 1, 3, 64);
	set_src(&syn, "198.51.100.9");
	set_src(&t, "198.51.100.9");
	PASS_AS(fx_send(f, &syn), GUARD_R_PASS);
	DROP_AS(fx_send(f, &syn), GUARD_R_SYN_RATE);
	DROP_AS(fx_send(f, &syn), GUARD_R_SYN_RATE);
	PASS_AS(fx_send(f, &t), GUARD_R_PASS);
	PASS_AS(fx_send(f, &t), GUARD_R_PASS);
	DROP_AS(fx_send(f, &t), GUARD_R_PKT_RATE);
}

/* ---- counters and samples -------------------------------------------------- */

static int ret_for(int reason)
{
	switch (reason) {
	case GUARD_R_BLOCKLISTED:
	case GUARD_R_SYN_RATE:
	case GUARD_R_PKT_RATE:
	case GUARD_R_UNPARSED_DROP:
		return XDP_DROP;
	default:
		return XDP_PASS;
	}
}

FX_TEST(counters_exact)
{
	struct { struct spec s; int reason; } seq[] = {
		{ tcp4("192.0.2.1", 80, TCP_SYN), GUARD_R_PASS },
		{ tcp4("192.0.2.1", 80, TCP_ACK), GUARD_R_PASS },
		{ udp4("2001:db8::1", 53), GUARD_R_PASS },
		{ tcp4("192.0.2.1", 22, TCP_SYN), GUARD_R_NOT_PROTECTED },
		{ udp4("192.0.2.1", 123), GUARD_R_NOT_PROTECTED },
		{ tcp4("203.0.113.1", 80, TCP_SYN), GUARD_R_BLOCKLISTED },
		{ tcp4("203.0.113.2", 80, TCP_SYN), GUARD_R_ALLOWLISTED },
		{ tcp4("192.0.2.1", 80, TCP_SYN), GUARD_R_SYN_RATE },
		{ tcp4("192.0.2.1", 443, TCP_ACK), GUARD_R_PKT_RATE },
	};
	struct guard_stat want[GUARD_R_MAX] = {}, got[GUARD_R_MAX];
	uint8_t buf[PKT_MAX];
	size_t i;
	int r;

	set_limits(f, 1, 1, 1, 2, 64);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "203.0.113.0", 24, 0), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_allow4, "203.0.113.2", 32, 0), 0);
	for (i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
		size_t len;

		seq[i].s.payload = 10 * i;
		len = build(&seq[i].s, buf);
		want[seq[i].reason].packets++;
		want[seq[i].reason].bytes += len;
		EXPECT(fx_run(f, buf, len), ret_for(seq[i].reason), seq[i].reason);
	}
	/* A frame the parser cannot follow, and a truncated one. */
	build(&seq[0].s, buf);
	PASS_AS(fx_run(f, buf, 20), GUARD_R_UNPARSED_PASS);
	want[GUARD_R_UNPARSED_PASS].packets++;
	want[GUARD_R_UNPARSED_PASS].bytes += 20;

	ASSERT_EQ(fx_stats(f, got), 0);
	for (r = 0; r < GUARD_R_MAX; r++) {
		if (got[r].packets != want[r].packets || got[r].bytes != want[r].bytes)
			printf("#   %s: %llu/%llu packets, %llu/%llu bytes\n", guard_reason_name(r),
			       (unsigned long long)got[r].packets, (unsigned long long)want[r].packets,
			       (unsigned long long)got[r].bytes, (unsigned long long)want[r].bytes);
		ASSERT_EQ(got[r].packets, want[r].packets);
		ASSERT_EQ(got[r].bytes, want[r].bytes);
	}
}

struct events {
	struct guard_event ev[64];
	int n;
};

static int on_event(void *ctx, void *data, size_t size)
{
	struct events *e = ctx;

	if (size != sizeof(struct guard_event) || e->n >= 64)
		return -EINVAL;
	memcpy(&e->ev[e->n++], data, size);
	return 0;
}

static int fx_sampler(struct fx *f, struct guard_sampler *s)
{
	uint32_t zero = 0;

	return bpf_map_lookup_elem(bpf_map__fd(f->skel->maps.guard_evt_tb), &zero, s) ? -errno : 0;
}

FX_TEST(ringbuf_samples_drops)
{
	struct spec s = tcp4("198.51.100.7", 443, TCP_SYN), ok = tcp4("192.0.2.1", 443, TCP_SYN);
	struct guard_config cfg = base_cfg();
	struct ring_buffer *rb;
	struct guard_sampler sm;
	struct events ev = { .n = 0 };
	uint8_t buf[PKT_MAX], want_src[16] = { 198, 51, 100, 7 };
	uint64_t t0, t1;
	size_t len;

	cfg.flags |= GUARD_F_SAMPLE;
	cfg.sample_rate = 1;
	cfg.sample_burst = 10;
	cfg.unparsed_policy = GUARD_UNPARSED_DROP;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.7", 32, 0), 0);
	rb = ring_buffer__new(bpf_map__fd(f->skel->maps.guard_events), on_event, &ev, NULL);
	ASSERT_TRUE(rb != NULL);

	PASS_AS(fx_send(f, &ok), GUARD_R_PASS); /* passes are never sampled */
	s.payload = 33;
	len = build(&s, buf);
	t0 = now_ns();
	DROP_AS(fx_run(f, buf, len), GUARD_R_BLOCKLISTED);
	t1 = now_ns();
	ASSERT_EQ(ring_buffer__consume(rb), 1);
	ring_buffer__free(rb);
	ASSERT_EQ(ev.n, 1);
	ASSERT_EQ(ev.ev[0].reason, GUARD_R_BLOCKLISTED);
	ASSERT_EQ(ev.ev[0].family, GUARD_AF_INET);
	ASSERT_EQ(ev.ev[0].l4proto, IPPROTO_TCP);
	ASSERT_EQ(ev.ev[0].dport, 443);
	ASSERT_EQ(ev.ev[0].pkt_len, len);
	ASSERT_EQ(ev.ev[0].ifindex, if_nametoindex("lo"));
	ASSERT_EQ(memcmp(ev.ev[0].saddr, want_src, 16), 0);
	ASSERT_LE(t0, ev.ev[0].ts_ns);
	ASSERT_LE(ev.ev[0].ts_ns, t1);

	/* An unparsed drop is sampled with what is known: nothing but the frame. */
	ev.n = 0;
	rb = ring_buffer__new(bpf_map__fd(f->skel->maps.guard_events), on_event, &ev, NULL);
	ASSERT_TRUE(rb != NULL);
	DROP_AS(fx_run(f, buf, 20), GUARD_R_UNPARSED_DROP);
	ASSERT_EQ(ring_buffer__consume(rb), 1);
	ring_buffer__free(rb);
	ASSERT_EQ(ev.ev[0].reason, GUARD_R_UNPARSED_DROP);
	ASSERT_EQ(ev.ev[0].family, 0);
	ASSERT_EQ(ev.ev[0].dport, 0);
	ASSERT_EQ(ev.ev[0].pkt_len, 20);
	ASSERT_EQ(fx_sampler(f, &sm), 0);
	ASSERT_EQ(sm.emitted, 2);
	ASSERT_EQ(sm.suppressed, 0);
}

FX_TEST(ringbuf_sampler_rate_limit)
{
	struct spec s = tcp4("198.51.100.7", 80, TCP_SYN);
	struct guard_config cfg = base_cfg();
	struct events ev = { .n = 0 };
	struct guard_sampler sm;
	struct ring_buffer *rb;
	int i, got;

	cfg.flags |= GUARD_F_SAMPLE;
	cfg.sample_rate = 1; /* one a second: a few ms of flood earns none */
	cfg.sample_burst = 5;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	ASSERT_EQ(fx_list_add(f, f->skel->maps.guard_block4, "198.51.100.7", 32, 0), 0);
	for (i = 0; i < 50; i++)
		DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
	rb = ring_buffer__new(bpf_map__fd(f->skel->maps.guard_events), on_event, &ev, NULL);
	ASSERT_TRUE(rb != NULL);
	got = ring_buffer__consume(rb);
	ring_buffer__free(rb);
	ASSERT_EQ(got, 5);
	ASSERT_EQ(ev.n, 5);
	ASSERT_EQ(fx_sampler(f, &sm), 0);
	ASSERT_EQ(sm.emitted, 5);
	ASSERT_EQ(sm.suppressed, 45);
	ASSERT_EQ(sm.lost, 0);

	/* Sampling off: drops still counted, the sampler not even consulted. */
	cfg.flags &= ~GUARD_F_SAMPLE;
	ASSERT_EQ(fx_set_cfg(f, &cfg), 0);
	DROP_AS(fx_send(f, &s), GUARD_R_BLOCKLISTED);
	ASSERT_EQ(fx_sampler(f, &sm), 0);
	ASSERT_EQ(sm.emitted + sm.suppressed, 50);
}

static void needs_root(void)
{
	SKIP("needs root (CAP_BPF, CAP_NET_ADMIN) to load XDP programs");
}

static void cannot_load(void)
{
	SKIP("this kernel refuses to load BPF programs here");
}

int main(void)
{
	struct fx probe;
	int err;

	if (geteuid() != 0) {
		RUN(needs_root);
		return test_done();
	}
	err = fx_open(&probe);
	fx_close(&probe);
	if (err == -EPERM || err == -EACCES || err == -ENOSYS) {
		RUN(cannot_load);
		return test_done();
	}

	libbpf_set_print(NULL);

	RUN(parse_ipv4_tcp);
	RUN(parse_ipv4_tcp_options);
	RUN(parse_ipv4_udp);
	RUN(parse_ipv4_udp_port_is_per_protocol);
	RUN(parse_ipv4_options);
	RUN(parse_ipv6_tcp);
	RUN(parse_ipv6_udp);
	RUN(parse_ipv6_ext_hop_by_hop);
	RUN(parse_ipv6_ext_routing);
	RUN(parse_ipv6_ext_dest_opts);
	RUN(parse_ipv6_ext_fragment_first);
	RUN(parse_ipv6_ext_auth_header);
	RUN(parse_ipv6_ext_chain_at_limit);
	RUN(parse_ipv6_ext_chain_too_deep);
	RUN(parse_ipv6_icmp_and_no_next_header_pass);
	RUN(parse_vlan_single);
	RUN(parse_vlan_double);
	RUN(parse_vlan_triple_is_unparsed);
	RUN(not_protected_passes_untouched);
	RUN(disabled_passes_everything);
	RUN(truncated_ipv4_tcp_with_options);
	RUN(truncated_ipv4_udp_double_vlan);
	RUN(truncated_ipv6_ext_tcp);
	RUN(truncated_ipv6_udp);
	RUN(padded_frame_parses_by_ip_length);
	RUN(malformed_ipv4_headers);
	RUN(malformed_udp_and_ipv6);
	RUN(ipv4_fragments);
	RUN(ipv6_fragments);
	RUN(blocklist_ipv4);
	RUN(blocklist_ipv6);
	RUN(allow_beats_block);
	RUN(expiry_honoured);
	RUN(expired_entry_does_not_hide_covering_prefix);
	RUN(syn_bucket_burst_then_drop);
	RUN(syn_bucket_ignores_acks);
	RUN(syn_bucket_refills_over_time);
	RUN(ipv6_prefix_grouping);
	RUN(packet_bucket);
	RUN(counters_exact);
	RUN(ringbuf_samples_drops);
	RUN(ringbuf_sampler_rate_limit);
	return test_done();
}
