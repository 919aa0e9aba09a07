/* bpf/xdp_guard.bpf.c — XDP packet guard: allow/block lists and per-source token buckets for protected ports. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "openclaw/guard.h"
#include "guard_parse.h"
#include "guard_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline bool guard_reason_drops(__u32 reason)
{
	return reason == GUARD_R_BLOCKLISTED || reason == GUARD_R_SYN_RATE ||
	       reason == GUARD_R_PKT_RATE || reason == GUARD_R_UNPARSED_DROP;
}

static __always_inline bool guard_port_protected(const struct guard_pkt *pkt)
{
	__u32 key = guard_port_key(pkt->l4proto == GUARD_NH_TCP ? GUARD_L4_TCP : GUARD_L4_UDP,
				   pkt->dport);
	__u64 *word = bpf_map_lookup_elem(&guard_ports, &key);

	return word && (*word & guard_port_bit(pkt->dport));
}

/*
 * True when the source matches a live entry of an allow/block trie. The longest
 * match may have expired while a shorter covering prefix is still live, so on
 * an expired hit the lookup repeats one bit shorter than the expired entry.
 * The v4 tries read only the first 8 bytes of the (v6-sized) key.
 */
static __always_inline bool guard_list_hit(void *map, const struct guard_pkt *pkt, __u64 now)
{
	struct guard_lpm6_key key = {};
	int i;

	if (pkt->family == GUARD_AF_INET) {
		key.prefixlen = 32;
		__builtin_memcpy(key.addr, pkt->saddr, 4);
	} else {
		key.prefixlen = 128;
		__builtin_memcpy(key.addr, pkt->saddr, 16);
	}
	for (i = 0; i <= GUARD_LIST_MAX_SHADOW; i++) {
		struct guard_list_val *v = bpf_map_lookup_elem(map, &key);

		if (!v)
			return false;
		if (!v->expires_ns || now < v->expires_ns)
			return true;
		/* A prefixlen that cannot be the match's would loop: stop, unmatched. */
		if (!v->prefixlen || v->prefixlen > key.prefixlen)
			return false;
		key.prefixlen = v->prefixlen - 1;
	}
	return false;
}

/*
 * Refills a bucket for the time since *last (capped at the burst) and spends
 * one token if there is one. Callers race on shared buckets without a lock:
 * a token may be spent twice across CPUs, never created from nothing.
 */
static __always_inline bool guard_tb_spend(__u64 *tokens_p, __u64 *last_p, __u64 rate,
					   __u64 burst, __u64 now)
{
	__u64 tokens = *tokens_p, last = *last_p, cap;
	bool ok;

	if (!burst)
		burst = 1;
	if (burst > GUARD_TB_MAX_BURST)
		burst = GUARD_TB_MAX_BURST;
	cap = burst * GUARD_TB_ONE;
	if (tokens > cap)
		tokens = cap;
	if (now > last) {
		__u64 elapsed = now - last;

		/* elapsed * rate would pass the cap (and maybe 64 bits): full. */
		if (elapsed > cap / rate)
			tokens = cap;
		else if (tokens + elapsed * rate > cap)
			tokens = cap;
		else
			tokens += elapsed * rate;
		last = now;
	}
	ok = tokens >= GUARD_TB_ONE;
	if (ok)
		tokens -= GUARD_TB_ONE;
	*tokens_p = tokens;
	*last_p = last;
	return ok;
}

/* IPv6 sources share a bucket per prefix so rotating host bits does not buy a fresh one. */
static __always_inline void guard_src_key(const struct guard_config *cfg,
					  const struct guard_pkt *pkt, struct guard_src_key *key)
{
	__u32 plen = cfg->v6_prefix_len;
	int i;

	key->family = pkt->family;
	if (pkt->family == GUARD_AF_INET) {
		__builtin_memcpy(key->addr, pkt->saddr, 4);
		return;
	}
	__builtin_memcpy(key->addr, pkt->saddr, 16);
	if (!plen)
		plen = GUARD_DEFAULT_V6_PREFIX;
#pragma unroll
	for (i = 0; i < 16; i++) {
		if (plen <= i * 8)
			key->addr[i] = 0;
		else if (plen < i * 8 + 8)
			key->addr[i] &= (__u8)(0xff << (8 - (plen - i * 8)));
	}
}

/* Spends one token of the source's bucket in map, creating a full bucket on first sight. */
static __always_inline bool guard_bucket_take(void *map, const struct guard_src_key *key,
					      __u64 rate, __u64 burst, __u64 now)
{
	struct guard_bucket *b = bpf_map_lookup_elem(map, key);

	if (!b) {
		/* Over-full on purpose: the spend clamps it to the burst. */
		struct guard_bucket nb = { .tokens = ~0ULL, .last_ns = now };
		bool ok = guard_tb_spend(&nb.tokens, &nb.last_ns, rate, burst, now);

		/* Losing the insert race to another CPU only lets this packet through free. */
		bpf_map_update_elem(map, key, &nb, BPF_NOEXIST);
		return ok;
	}
	return guard_tb_spend(&b->tokens, &b->last_ns, rate, burst, now);
}

/* Verdict for a packet to a protected port. */
static __always_inline __u32 guard_judge(const struct guard_config *cfg,
					 const struct guard_pkt *pkt, __u64 now)
{
	bool v4 = pkt->family == GUARD_AF_INET;
	struct guard_src_key key = {};
	__u32 flags = cfg->flags;

	if (guard_list_hit(v4 ? (void *)&guard_allow4 : (void *)&guard_allow6, pkt, now))
		return GUARD_R_ALLOWLISTED;
	if (guard_list_hit(v4 ? (void *)&guard_block4 : (void *)&guard_block6, pkt, now))
		return GUARD_R_BLOCKLISTED;
	if (!(flags & (GUARD_F_SYN_LIMIT | GUARD_F_PKT_LIMIT)))
		return GUARD_R_PASS;
	guard_src_key(cfg, pkt, &key);
	if ((flags & GUARD_F_SYN_LIMIT) && cfg->syn_rate && pkt->l4proto == GUARD_NH_TCP &&
	    (pkt->tcp_flags & (GUARD_TCP_SYN | GUARD_TCP_ACK)) == GUARD_TCP_SYN &&
	    !guard_bucket_take(&guard_syn_tb, &key, cfg->syn_rate, cfg->syn_burst, now))
		return GUARD_R_SYN_RATE;
	if ((flags & GUARD_F_PKT_LIMIT) && cfg->pkt_rate &&
	    !guard_bucket_take(&guard_pkt_tb, &key, cfg->pkt_rate, cfg->pkt_burst, now))
		return GUARD_R_PKT_RATE;
	return GUARD_R_PASS;
}

/* Non-first fragment: only the source lists can judge it. */
static __always_inline __u32 guard_judge_fragment(const struct guard_pkt *pkt, __u64 now)
{
	bool v4 = pkt->family == GUARD_AF_INET;

	if (guard_list_hit(v4 ? (void *)&guard_allow4 : (void *)&guard_allow6, pkt, now))
		return GUARD_R_ALLOWLISTED;
	if (guard_list_hit(v4 ? (void *)&guard_block4 : (void *)&guard_block6, pkt, now))
		return GUARD_R_BLOCKLISTED;
	return GUARD_R_FRAGMENT;
}

/* Writes one drop sample if the global sample budget allows. */
static __always_inline void guard_sample(struct xdp_md *ctx, const struct guard_config *cfg,
					 const struct guard_pkt *pkt, __u32 reason, __u64 now,
					 __u32 bytes)
{
	struct guard_sampler *s;
	struct guard_event *e;
	__u32 zero = 0;

	if (!(cfg->flags & GUARD_F_SAMPLE) || !cfg->sample_rate)
		return;
	s = bpf_map_lookup_elem(&guard_evt_tb, &zero);
	if (!s)
		return;
	if (!now)
		now = bpf_ktime_get_ns();
	if (!guard_tb_spend(&s->tokens, &s->last_ns, cfg->sample_rate, cfg->sample_burst, now)) {
		__sync_fetch_and_add(&s->suppressed, 1);
		return;
	}
	e = bpf_ringbuf_reserve(&guard_events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&s->lost, 1);
		return;
	}
	e->ts_ns = now;
	__builtin_memcpy(e->saddr, pkt->saddr, sizeof(e->saddr));
	e->reason = reason;
	e->ifindex = ctx->ingress_ifindex;
	e->pkt_len = bytes;
	e->dport = pkt->dport;
	e->family = pkt->family;
	e->l4proto = pkt->l4proto;
	bpf_ringbuf_submit(e, 0);
	__sync_fetch_and_add(&s->emitted, 1);
}

static __always_inline void guard_count(__u32 reason, __u64 bytes)
{
	struct guard_stat *st = bpf_map_lookup_elem(&guard_stats, &reason);

	if (st) {
		st->packets++;
		st->bytes += bytes;
	}
}

SEC("xdp")
int xdp_guard(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 bytes = data_end - data;
	const struct guard_config *cfg;
	struct guard_pkt pkt = {};
	__u32 zero = 0, reason;
	__u64 now = 0;

	cfg = bpf_map_lookup_elem(&guard_cfg, &zero);
	if (!cfg || !(cfg->flags & GUARD_F_ENABLED)) {
		guard_count(GUARD_R_DISABLED, bytes);
		return XDP_PASS;
	}

	switch (guard_parse(data, data_end, &pkt)) {
	case GUARD_P_L4:
		if (!guard_port_protected(&pkt)) {
			reason = GUARD_R_NOT_PROTECTED;
			break;
		}
		now = bpf_ktime_get_ns();
		reason = guard_judge(cfg, &pkt, now);
		break;
	case GUARD_P_FRAG:
		now = bpf_ktime_get_ns();
		reason = guard_judge_fragment(&pkt, now);
		break;
	case GUARD_P_BAD:
		reason = cfg->unparsed_policy == GUARD_UNPARSED_DROP ? GUARD_R_UNPARSED_DROP
								      : GUARD_R_UNPARSED_PASS;
		break;
	default:
		reason = GUARD_R_NOT_PROTECTED;
		break;
	}

	guard_count(reason, bytes);
	if (!guard_reason_drops(reason))
		return XDP_PASS;
	guard_sample(ctx, cfg, &pkt, reason, now, bytes);
	return XDP_DROP;
}
