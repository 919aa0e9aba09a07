/* bpf/sk_splice.bpf.c — sockmap splice: stream verdict redirecting each spliced socket's bytes to its partner, within a byte budget. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "openclaw/splice.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#ifndef SK_PASS
#define SK_PASS 1
#endif
#ifndef SK_DROP
#define SK_DROP 0
#endif

/* Client and backend sockets of every spliced connection, keyed by socket
 * cookie. Written by clawd (insert at hand-off, delete at teardown); read by
 * the verdict program (redirect target, peer progress). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SPLICE_MAX_SOCKS);
	__type(key, __u64);
	__type(value, __u64);
} splice_socks SEC(".maps");

/* Per socket: its partner, budget and counters (struct splice_sock). Written
 * by clawd before the socket enters splice_socks; counters by the program;
 * read by clawd for accounting, splice.list and the paused relay. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPLICE_MAX_SOCKS);
	__type(key, __u64);
	__type(value, struct splice_sock);
} splice_conns SEC(".maps");

/* Per socket: bytes clawd relayed for it while paused (u64). Written only by
 * clawd (a whole-value update cannot clobber the program's counters); read
 * by the program to know when it may redirect again without reordering. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPLICE_MAX_SOCKS);
	__type(key, __u64);
	__type(value, __u64);
} splice_delivered SEC(".maps");

/* Global counters (enum splice_counter), per CPU; read by clawd's splice.stats. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SPLICE_C_N);
	__type(key, __u32);
	__type(value, __u64);
} splice_stats SEC(".maps");

static __always_inline void count(__u32 id, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&splice_stats, &id);

	if (v)
		*v += n;
}

/*
 * Bytes written towards the peer (redirected or relayed by clawd) that the
 * peer's receiver has not acknowledged yet: the kernel memory this direction
 * pins (psock backlog + send queue). Sequence arithmetic in 32 bits is exact
 * because the value itself stays far below 4 GiB (it is bounded by budget).
 */
static __always_inline __u32 peer_inflight(struct splice_sock *s, __u64 delivered,
					  struct bpf_sock *peer)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(peer);
	__u32 una, wseq;

	if (!tp)
		return 0;
	una = tp->snd_una;
	if (!s->una_set) {
		/* First redirect: everything clawd wrote before is the baseline. */
		wseq = tp->write_seq;
		s->una_base = wseq - (__u32)(s->redirected + delivered);
		s->una_set = 1;
	}
	return (__u32)s->una_base + (__u32)(s->redirected + delivered) - una;
}

SEC("sk_skb/stream_verdict")
int splice_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct splice_sock *s;
	struct bpf_sock *peer;
	__u32 len = skb->len;
	__u64 delivered, *dv;
	__u32 inflight;

	/* A zero-length skb carries the FIN: redirected it would set EPIPE on the
	 * peer. clawd sees the hang-up and shuts the peer's write side itself. */
	if (len == 0) {
		count(SPLICE_C_FIN_DROPS, 1);
		s = bpf_map_lookup_elem(&splice_conns, &cookie);
		if (s)
			__sync_fetch_and_add(&s->drops, 1);
		return SK_DROP;
	}
	s = bpf_map_lookup_elem(&splice_conns, &cookie);
	if (!s) {
		count(SPLICE_C_NO_PEER, 1);
		return SK_PASS;
	}
	/* Redirect only when clawd has moved every byte ever left on this socket
	 * (paused, or passed while the peer was not in the map yet): a byte
	 * redirected now would overtake them. */
	dv = bpf_map_lookup_elem(&splice_delivered, &cookie);
	delivered = dv ? *dv : 0;
	if (delivered != s->passed)
		goto pass;
	peer = bpf_map_lookup_elem(&splice_socks, &s->peer);
	if (!peer) {
		count(SPLICE_C_REDIRECT_FAIL, 1);
		goto pass;
	}
	inflight = peer_inflight(s, delivered, peer);
	bpf_sk_release(peer);
	if ((__u64)inflight + len > s->budget) {
		/* Over budget: the bytes stay on this socket, charged to its receive
		 * buffer, so TCP's window closes towards the sender. */
		if (s->state != SPLICE_PAUSED) {
			s->state = SPLICE_PAUSED;
			s->pauses++;
		}
		goto pass;
	}
	if (bpf_sk_redirect_hash(skb, &splice_socks, &s->peer, 0) != SK_PASS) {
		count(SPLICE_C_REDIRECT_FAIL, 1);
		goto pass;
	}
	s->state = SPLICE_RUN;
	s->redirected += len;
	if (inflight + len > s->inflight_max)
		s->inflight_max = inflight + len;
	count(SPLICE_C_REDIRECT_PKTS, 1);
	count(SPLICE_C_REDIRECT_BYTES, len);
	return SK_PASS;
pass:
	s->passed += len;
	count(SPLICE_C_PASS_PKTS, 1);
	count(SPLICE_C_PASS_BYTES, len);
	return SK_PASS;
}
