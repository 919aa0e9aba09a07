/* include/openclaw/splice.h — sockmap splice: map layouts shared by bpf/sk_splice.bpf.c and agent/splice.c. */
#ifndef OPENCLAW_SPLICE_H
#define OPENCLAW_SPLICE_H

#ifdef __BPF__
/* vmlinux.h already defines the __u types. */
#else
#include <linux/types.h>
#endif

/* Sockets in the SOCKHASH at most (two per spliced connection). */
#define SPLICE_MAX_SOCKS 65536

/* Default pin directory (under the project's bpffs directory). */
#define SPLICE_DEFAULT_PIN_DIR "/sys/fs/bpf/openclaw/splice"

/* Default per-direction budget of bytes in flight inside the kernel. */
#define SPLICE_DEFAULT_BUDGET (4u << 20)

/* Per-direction relay state (splice_sock.state). */
enum splice_state {
	SPLICE_RUN = 0,    /* bytes are redirected to the peer in the kernel */
	SPLICE_PAUSED = 1, /* budget exceeded: bytes stay on this socket (SK_PASS) for clawd to move */
	SPLICE_BROKEN = 2, /* an already-judged head could not be trimmed: the skb was dropped, clawd resets */
};

/* sk_skb's bpf_skb_adjust_room() shrinks at most 0xfff bytes per call. */
#define SPLICE_TRIM_STEP 4095
/* Calls per skb at most: 32 * 4095 covers two 64 KiB segments of overlap. */
#define SPLICE_TRIM_STEPS 32

/*
 * One socket of a spliced pair, keyed by its socket cookie; the value
 * describes the direction "bytes read on this socket → peer". Written by
 * clawd once, before the socket enters the SOCKHASH (peer, budget, zeros);
 * after that only the program writes it (one writer: the socket's receive
 * path), so clawd's own progress lives in splice_delivered.
 */
struct splice_sock {
	__u64 peer;         /* socket cookie of the partner (key in the SOCKHASH) */
	__u64 budget;       /* bytes redirected but not yet acknowledged by the peer's receiver, at most */
	__u64 redirected;   /* bytes redirected to the peer by the program */
	__u64 passed;       /* bytes left on this socket (SK_PASS) while paused, for clawd to relay */
	__u64 una_base;     /* peer's write_seq at the first redirect, minus what was counted before */
	__u64 pauses;       /* times the budget stopped the redirect */
	__u64 drops;        /* zero-length skbs (FIN) dropped */
	__u32 state;        /* enum splice_state */
	__u32 una_set;      /* una_base is valid */
	__u32 inflight_max; /* largest in-flight value seen at a redirect, bytes */
	__u32 seq_set;      /* next_seq is valid */
	__u32 next_seq;     /* TCP sequence number just past the last payload byte the program judged */
	__u32 room;         /* bytes that may still be redirected without reading the peer again (see below) */
	__u64 dup_bytes;    /* already-judged bytes at the head of a later skb, trimmed off (see docs/splice.md) */
};

/*
 * room: at each exact budget check (the peer's snd_una read through the
 * SOCKHASH) the program stores budget - in-flight - the skb's length. The
 * peer's in-flight bytes only grow by what is written towards it, so while
 * nothing was ever passed (clawd writes nothing), an skb of len <= room may be
 * redirected with room -= len and no peer lookup: in-flight stays <= budget.
 * Refreshed whenever an skb does not fit; unused once bytes were passed.
 */

/* Bytes of `passed` that clawd has read and written to the peer: value of
 * splice_delivered, keyed by the same cookie, written only by clawd. The
 * program looks it up only when `passed` is not 0 (until then it is 0). */

/* Global counters (splice_stats, per-CPU array index). */
enum splice_counter {
	SPLICE_C_REDIRECT_PKTS = 0, /* skbs redirected */
	SPLICE_C_REDIRECT_BYTES,    /* bytes redirected */
	SPLICE_C_PASS_PKTS,         /* skbs left on their socket (budget) */
	SPLICE_C_PASS_BYTES,
	SPLICE_C_FIN_DROPS,         /* zero-length skbs dropped */
	SPLICE_C_NO_PEER,           /* skb on a socket without a splice_sock entry: passed */
	SPLICE_C_REDIRECT_FAIL,     /* bpf_sk_redirect_hash refused (peer gone): passed */
	SPLICE_C_DUP_BYTES,         /* already-judged bytes trimmed off the head of an skb */
	SPLICE_C_DUP_FAIL,          /* skbs whose already-judged head could not be trimmed: dropped, connection reset */
	SPLICE_C_N,
};

#endif
