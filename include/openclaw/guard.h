/* include/openclaw/guard.h — the XDP packet guard's contract: map names, keys, values, reasons and events shared by kernel and userspace. */
#ifndef OPENCLAW_GUARD_H
#define OPENCLAW_GUARD_H

/*
 * The packet guard (bpf/xdp_guard.bpf.c) judges only packets to protected
 * TCP/UDP ports; every other frame (ARP, ICMP, SSH unless the operator
 * protects port 22, ...) passes untouched. For a judged packet:
 *
 *	allowlist hit          -> XDP_PASS  (GUARD_R_ALLOWLISTED; skips everything below)
 *	blocklist hit          -> XDP_DROP  (GUARD_R_BLOCKLISTED)
 *	TCP SYN without ACK    -> SYN bucket of the source; empty -> XDP_DROP (GUARD_R_SYN_RATE)
 *	any packet             -> packet bucket of the source; empty -> XDP_DROP (GUARD_R_PKT_RATE)
 *	otherwise              -> XDP_PASS  (GUARD_R_PASS)
 *
 * A frame the parser cannot follow (truncated header, IHL < 5, IP total
 * length beyond the frame, more than two VLAN tags, more than
 * GUARD_V6_MAX_EXT IPv6 extension headers, ...) gets the configured unparsed
 * policy: GUARD_R_UNPARSED_PASS or GUARD_R_UNPARSED_DROP.
 *
 * Non-first IP fragments carry no L4 header, so their port is unknown: they
 * are judged by the source lists only (allowlist -> pass, blocklist -> drop,
 * else GUARD_R_FRAGMENT and pass), whatever port they belong to. Rate buckets
 * see first fragments only. A blocklisted source therefore cannot get a
 * fragmented datagram through to any port.
 *
 * Time: every timestamp in these maps is CLOCK_MONOTONIC in nanoseconds, the
 * clock bpf_ktime_get_ns() reads (it stops during suspend). Userspace computes
 * an expiry as clock_gettime(CLOCK_MONOTONIC) + ttl; a reboot resets the
 * clock, so persisted entries must be re-applied with a fresh expiry.
 *
 * Maps (name = BPF map name = file name under GUARD_PIN_DIR):
 *
 * guard_cfg     ARRAY[1] of struct guard_config. Written by the agent (live,
 *               any time); read by XDP on every packet. All-zero (never set)
 *               means disabled: everything passes as GUARD_R_DISABLED.
 * guard_ports   ARRAY[GUARD_PORT_KEYS] of __u64: the protected-port bitmap,
 *               one bit per (protocol, port); see guard_port_key() and
 *               guard_port_bit(). Written by the agent; read by XDP.
 * guard_allow4  LPM_TRIE struct guard_lpm4_key -> struct guard_list_val.
 * guard_allow6  LPM_TRIE struct guard_lpm6_key -> struct guard_list_val.
 * guard_block4  LPM_TRIE struct guard_lpm4_key -> struct guard_list_val.
 * guard_block6  LPM_TRIE struct guard_lpm6_key -> struct guard_list_val.
 *               Written by the agent (config, clawctl, L7 auto-ban), read by
 *               XDP. Key bits past prefixlen must be zero. The value's
 *               prefixlen must equal the key's: when the longest match has
 *               expired, XDP retries with a shorter prefix so an expired /32
 *               does not hide a live /24 (up to GUARD_LIST_MAX_SHADOW expired
 *               levels). Expired entries stop matching at once; the agent
 *               deletes them at leisure.
 * guard_syn_tb  LRU_HASH struct guard_src_key -> struct guard_bucket: one
 *               token bucket per source for new TCP connections.
 * guard_pkt_tb  LRU_HASH struct guard_src_key -> struct guard_bucket: one
 *               token bucket per source for all judged packets.
 *               Written by XDP; the agent may read them (top talkers) or
 *               delete a key to reset a source. IPv6 sources are masked to
 *               guard_config.v6_prefix_len bits. Updates are lockless (an LRU
 *               hash cannot hold a bpf_spin_lock): CPUs racing on one source
 *               may each spend the same token, so a source spread over N CPUs
 *               can exceed its rate by up to N-fold in the worst case.
 * guard_stats   PERCPU_ARRAY[GUARD_R_MAX] of struct guard_stat, indexed by
 *               enum guard_reason. Written by XDP; the agent sums the CPUs.
 * guard_evt_tb  ARRAY[1] of struct guard_sampler: the global budget of drop
 *               samples and its tallies. Written by XDP; read by the agent.
 * guard_events  RINGBUF of struct guard_event, one per sampled drop. Written
 *               by XDP; consumed by the agent (ring_buffer__new()).
 *
 * Loading needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root): without
 * CAP_PERFMON the verifier refuses the variable-offset packet arithmetic any
 * header walk needs.
 *
 * Pinning: the BPF object does not pin by itself (so tests leave nothing
 * behind); the agent calls bpf_map__set_pin_path(map, GUARD_PIN_DIR "/" name)
 * on every map before loading, which makes libbpf reuse maps already pinned
 * there and pin new ones, so the guard's state outlives an agent restart.
 */

#ifndef __bpf__
#include <linux/types.h>
#endif

#define GUARD_PIN_DIR "/sys/fs/bpf/openclaw"

#define GUARD_MAP_CFG    "guard_cfg"
#define GUARD_MAP_PORTS  "guard_ports"
#define GUARD_MAP_ALLOW4 "guard_allow4"
#define GUARD_MAP_ALLOW6 "guard_allow6"
#define GUARD_MAP_BLOCK4 "guard_block4"
#define GUARD_MAP_BLOCK6 "guard_block6"
#define GUARD_MAP_SYN_TB "guard_syn_tb"
#define GUARD_MAP_PKT_TB "guard_pkt_tb"
#define GUARD_MAP_STATS  "guard_stats"
#define GUARD_MAP_EVT_TB "guard_evt_tb"
#define GUARD_MAP_EVENTS "guard_events"

/* Pinned XDP link of one interface: GUARD_PIN_LINK_PREFIX + interface name. */
#define GUARD_PIN_LINK_PREFIX GUARD_PIN_DIR "/guard_link_"

/* Map sizes. */
#define GUARD_LIST_MAX_ENTRIES 262144 /* per allow/block trie */
#define GUARD_SRC_MAX_ENTRIES  65536  /* per token-bucket LRU hash */
#define GUARD_EVENTS_BYTES     (256 * 1024) /* ring buffer size */

/* Parser and matcher bounds. */
#define GUARD_MAX_VLAN        2 /* 802.1Q / 802.1AD tags followed */
#define GUARD_V6_MAX_EXT      6 /* IPv6 extension headers followed */
#define GUARD_LIST_MAX_SHADOW 4 /* expired list levels skipped per lookup */

/* Address families as stored in keys and events (values of AF_INET, AF_INET6). */
#define GUARD_AF_INET  2
#define GUARD_AF_INET6 10

/* guard_config.flags */
#define GUARD_F_ENABLED   (1u << 0) /* master switch: off -> all pass as GUARD_R_DISABLED */
#define GUARD_F_SYN_LIMIT (1u << 1) /* per-source SYN bucket (needs syn_rate > 0) */
#define GUARD_F_PKT_LIMIT (1u << 2) /* per-source packet bucket (needs pkt_rate > 0) */
#define GUARD_F_SAMPLE    (1u << 3) /* drop samples to guard_events (needs sample_rate > 0) */

/* What to do with a frame the parser cannot follow. */
enum guard_unparsed_policy {
	GUARD_UNPARSED_PASS = 0,
	GUARD_UNPARSED_DROP = 1,
};

/* Defaults the agent applies to options the operator leaves out. */
#define GUARD_DEFAULT_V6_PREFIX    64
#define GUARD_DEFAULT_SAMPLE_RATE  100
#define GUARD_DEFAULT_SAMPLE_BURST 100

/* Token arithmetic: a bucket holds tokens * GUARD_TB_ONE units, so refill is elapsed_ns * rate. */
#define GUARD_TB_ONE       1000000000ULL
#define GUARD_TB_MAX_BURST (1ULL << 32) /* larger bursts are clamped (keeps units in 64 bits) */

/* guard_cfg value. Rates are per second; a burst of 0 acts as 1. */
struct guard_config {
	__u32 flags;           /* GUARD_F_* */
	__u32 unparsed_policy; /* enum guard_unparsed_policy */
	__u32 v6_prefix_len;   /* IPv6 bits per bucket, 1..128 (more = 128); 0 = GUARD_DEFAULT_V6_PREFIX */
	__u32 pad;             /* zero */
	__u64 syn_rate;        /* new TCP connections per second per source */
	__u64 syn_burst;       /* SYN bucket depth, connections */
	__u64 pkt_rate;        /* judged packets per second per source */
	__u64 pkt_burst;       /* packet bucket depth, packets */
	__u64 sample_rate;     /* drop samples per second, all sources and CPUs together */
	__u64 sample_burst;    /* sampler depth, samples */
};

/* Protected ports: bit guard_port_bit(port) of word guard_port_key(l4, port) in guard_ports. */
enum guard_l4 {
	GUARD_L4_TCP = 0,
	GUARD_L4_UDP = 1,
	GUARD_L4_MAX,
};
#define GUARD_PORT_WORDS 1024 /* 65536 ports / 64 bits, per protocol */
#define GUARD_PORT_KEYS  (GUARD_L4_MAX * GUARD_PORT_WORDS)

static inline __u32 guard_port_key(__u32 l4, __u16 port)
{
	return l4 * GUARD_PORT_WORDS + (port >> 6);
}

static inline __u64 guard_port_bit(__u16 port)
{
	return 1ULL << (port & 63);
}

/* Allow/block trie keys: the bpf_lpm_trie_key layout. */
struct guard_lpm4_key {
	__u32 prefixlen; /* 0..32 */
	__u8 addr[4];    /* network byte order */
};

struct guard_lpm6_key {
	__u32 prefixlen; /* 0..128 */
	__u8 addr[16];   /* network byte order */
};

/* Who put a list entry there; XDP ignores it, operators read it. */
enum guard_origin {
	GUARD_ORIGIN_CONFIG = 1, /* static list in openclaw.yaml */
	GUARD_ORIGIN_MANUAL = 2, /* clawctl block/allow add */
	GUARD_ORIGIN_AUTO   = 3, /* L7 auto-ban */
};

struct guard_list_val {
	__u64 expires_ns; /* CLOCK_MONOTONIC ns after which the entry stops matching; 0 = never */
	__u32 prefixlen;  /* copy of the key's prefixlen (see guard_allow4 above) */
	__u32 origin;     /* enum guard_origin */
};

/* Token-bucket key: one IPv4 address, or one IPv6 prefix with host bits zero. */
struct guard_src_key {
	__u32 family;  /* GUARD_AF_INET or GUARD_AF_INET6 */
	__u8 addr[16]; /* network byte order; IPv4 in addr[0..3], rest zero */
};

struct guard_bucket {
	__u64 tokens;  /* units of 1/GUARD_TB_ONE token, as of last_ns */
	__u64 last_ns; /* CLOCK_MONOTONIC ns of the last refill */
};

/* Verdict reasons: guard_stats index and guard_event.reason. */
enum guard_reason {
	GUARD_R_PASS = 0,       /* judged, within every limit: passed */
	GUARD_R_ALLOWLISTED,    /* source on the allowlist: passed */
	GUARD_R_BLOCKLISTED,    /* source on the blocklist: dropped */
	GUARD_R_SYN_RATE,       /* SYN bucket empty: dropped */
	GUARD_R_PKT_RATE,       /* packet bucket empty: dropped */
	GUARD_R_UNPARSED_PASS,  /* unparseable, policy pass: passed */
	GUARD_R_UNPARSED_DROP,  /* unparseable, policy drop: dropped */
	GUARD_R_NOT_PROTECTED,  /* not IP, not TCP/UDP, or port not protected: passed */
	GUARD_R_FRAGMENT,       /* non-first fragment, source not listed: passed */
	GUARD_R_DISABLED,       /* guard disabled or unconfigured: passed */
	GUARD_R_MAX,
};

struct guard_stat {
	__u64 packets; /* frames */
	__u64 bytes;   /* frame bytes from the Ethernet header on */
};

struct guard_sampler {
	__u64 tokens;     /* units of 1/GUARD_TB_ONE sample, as of last_ns */
	__u64 last_ns;    /* CLOCK_MONOTONIC ns of the last refill */
	__u64 emitted;    /* samples written to guard_events */
	__u64 suppressed; /* drops not sampled: budget empty */
	__u64 lost;       /* drops not sampled: ring buffer full */
};

/* One sampled drop in guard_events. */
struct guard_event {
	__u64 ts_ns;    /* CLOCK_MONOTONIC ns of the drop */
	__u8 saddr[16]; /* source, network byte order; IPv4 in saddr[0..3]; zero if unknown */
	__u32 reason;   /* enum guard_reason (a dropping one) */
	__u32 ifindex;  /* ingress interface */
	__u32 pkt_len;  /* frame bytes */
	__u16 dport;    /* destination port, host order; 0 if unknown */
	__u8 family;    /* GUARD_AF_INET, GUARD_AF_INET6, or 0 if unknown */
	__u8 l4proto;   /* IPPROTO_TCP, IPPROTO_UDP, or 0 if unknown */
};

#ifndef __bpf__
/* Stable lower-case name of a reason (metrics label, clawctl column). */
static inline const char *guard_reason_name(__u32 reason)
{
	static const char *const names[GUARD_R_MAX] = {
		[GUARD_R_PASS] = "pass",
		[GUARD_R_ALLOWLISTED] = "allowlisted",
		[GUARD_R_BLOCKLISTED] = "blocklisted",
		[GUARD_R_SYN_RATE] = "syn_rate",
		[GUARD_R_PKT_RATE] = "pkt_rate",
		[GUARD_R_UNPARSED_PASS] = "unparsed_pass",
		[GUARD_R_UNPARSED_DROP] = "unparsed_drop",
		[GUARD_R_NOT_PROTECTED] = "not_protected",
		[GUARD_R_FRAGMENT] = "fragment",
		[GUARD_R_DISABLED] = "disabled",
	};
	return reason < GUARD_R_MAX ? names[reason] : "unknown";
}
#endif

#endif
