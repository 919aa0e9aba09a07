/* bpf/sk_splice.bpf.c — sockmap splice: stream verdict redirecting each spliced socket's bytes to its partner, within a byte budget, never twice. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

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

/*
 * TCP_SKB_CB(skb)->seq of the skb being judged: the sequence number of its
 * first payload byte.
 *
 * How, on every kernel from 6.1 on, without the 6.2+ bpf_cast_to_kern_ctx():
 * an sk_skb program's context register holds the kernel's struct sk_buff
 * itself (sk_psock_verdict_recv() runs the program on the skb, and the
 * verifier rewrites every __sk_buff field load into a load at an offset of
 * struct sk_buff from that register: bpf_convert_ctx_access()). The
 * verifier will not let the program load from a ctx pointer it moved, but
 * bpf_probe_read_kernel()'s source is ARG_ANYTHING, which takes any
 * register, a moved ctx pointer included, when the loader may leak
 * pointers (CAP_PERFMON or CAP_SYS_ADMIN, which loading sk_skb needs
 * anyway; check_func_arg()). So the address is ctx + offsetof(struct
 * sk_buff, cb) + offsetof(struct tcp_skb_cb, seq), both relocated by CO-RE
 * against the running kernel's BTF.
 *
 * Why it is safe: the read is bpf_probe_read_kernel() (a fault-tolerant
 * copy that returns an error, never oopses); the skb is unlinked from the
 * receive queue and owned by the verdict path for the whole run
 * (tcp_read_skb()), so cb cannot change under us; nothing between TCP's
 * receive path and the program touches cb's first bytes (the psock keeps
 * its own state in skb->_sk_redir; struct sk_skb_cb's scratch lies past
 * them); the program only reads. A wrong value could only make trim_judged()
 * drop or reset, and selftests/bpf/test_sk_splice.c checks it byte-exactly.
 */
static __always_inline int skb_tcp_seq(struct __sk_buff *skb, __u32 *seq)
{
	unsigned long off = bpf_core_field_offset(struct sk_buff, cb) +
			    bpf_core_field_offset(struct tcp_skb_cb, seq);

	return bpf_probe_read_kernel(seq, sizeof(*seq), (char *)skb + off);
}

/*
 * Trims the bytes at the head of skb that this program has judged already and
 * returns what is left (0: all of it was seen), or -1 when it cannot.
 *
 * Why: tcp_read_skb() (the stream-verdict path since Linux 6.0) hands over
 * whole skbs from the receive queue. TCP queues a retransmission that
 * overlaps bytes it already received as a whole skb (tcp_data_queue(),
 * "partial packet": seq < rcv_nxt < end_seq); tcp_recvmsg() skips the old
 * head by copied_seq, the verdict path does not, so the head would be
 * delivered a second time. The same holds for an skb that clawd read part of
 * before the hand-off. The first judged byte is the socket's copied_seq at the
 * first verdict (nothing is judged or passed before it).
 */
static __always_inline int trim_judged(struct __sk_buff *skb, struct splice_sock *s)
{
	__u32 len = skb->len, seq, end, over;

	if (skb_tcp_seq(skb, &seq))
		return -1;
	end = seq + len; /* payload end (a FIN's extra sequence number excluded) */
	if (!s->seq_set) {
		struct bpf_sock *sk = skb->sk;
		struct tcp_sock *tp = sk ? bpf_skc_to_tcp_sock(sk) : NULL;

		if (!tp)
			return -1;
		s->next_seq = tp->copied_seq;
		s->seq_set = 1;
	}
	over = s->next_seq - seq;
	if ((__s32)over <= 0) {
		s->next_seq = end;
		return len;
	}
	if (over > len)
		over = len;
	for (int i = 0; i < SPLICE_TRIM_STEPS && over; i++) {
		__u32 n = over < SPLICE_TRIM_STEP ? over : SPLICE_TRIM_STEP;

		if (bpf_skb_adjust_room(skb, -(__s32)n, 0, 0))
			return -1;
		over -= n;
		s->dup_bytes += n;
		count(SPLICE_C_DUP_BYTES, n);
	}
	if (over)
		return -1;
	if ((__s32)(end - s->next_seq) > 0)
		s->next_seq = end;
	return skb->len;
}

/*
 * Whether len more bytes may be redirected towards the peer within the budget.
 * Fast: while nothing was ever passed (no delivered bytes to account) and
 * the room left by the last exact check covers len, no lookup at all. Else
 * exact: the peer's snd_una through the SOCKHASH (a refcounted lookup), which
 * also refreshes the room. *inflight gets the peer's in-flight bytes after
 * the redirect (an upper bound on the fast path).
 */
static __always_inline int budget_ok(struct splice_sock *s, __u64 delivered, __u32 len,
				     __u32 *inflight)
{
	struct bpf_sock *peer;
	__u32 now;

	if (s->una_set && !s->passed && len <= s->room) {
		s->room -= len;
		*inflight = (__u32)s->budget - s->room;
		return 1;
	}
	peer = bpf_map_lookup_elem(&splice_socks, &s->peer);
	if (!peer)
		return -1;
	now = peer_inflight(s, delivered, peer);
	bpf_sk_release(peer);
	if ((__u64)now + len > s->budget) {
		s->room = 0;
		return 0;
	}
	*inflight = now + len;
	s->room = (__u32)(s->budget - *inflight);
	return 1;
}

SEC("sk_skb/stream_verdict")
int splice_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct splice_sock *s;
	__u32 len = skb->len;
	__u64 delivered = 0, *dv;
	__u32 inflight = 0;
	int ret;

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
	if (s->state == SPLICE_BROKEN)
		return SK_DROP; /* clawd is resetting the connection */
	ret = trim_judged(skb, s);
	if (ret < 0) {
		/* Delivering it would duplicate bytes: drop it and let clawd reset both ends. */
		s->state = SPLICE_BROKEN;
		count(SPLICE_C_DUP_FAIL, 1);
		return SK_DROP;
	}
	if (ret == 0)
		return SK_DROP; /* a retransmission of bytes already judged */
	len = (__u32)ret;
	/* Redirect only when clawd has moved every byte ever left on this socket
	 * (paused, or passed while the peer was not in the map yet): a byte
	 * redirected now would overtake them. Nothing passed: nothing delivered. */
	if (s->passed) {
		dv = bpf_map_lookup_elem(&splice_delivered, &cookie);
		delivered = dv ? *dv : 0;
		if (delivered != s->passed)
			goto pass;
	}
	ret = budget_ok(s, delivered, len, &inflight);
	if (ret < 0) {
		count(SPLICE_C_REDIRECT_FAIL, 1);
		goto pass;
	}
	if (!ret) {
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
	if (inflight > s->inflight_max)
		s->inflight_max = inflight;
	count(SPLICE_C_REDIRECT_PKTS, 1);
	count(SPLICE_C_REDIRECT_BYTES, len);
	return SK_PASS;
pass:
	s->passed += len;
	count(SPLICE_C_PASS_PKTS, 1);
	count(SPLICE_C_PASS_BYTES, len);
	return SK_PASS;
}
