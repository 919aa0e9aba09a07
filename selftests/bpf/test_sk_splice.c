/* selftests/bpf/test_sk_splice.c — bpf/sk_splice.bpf.c on real loopback sockets: redirect, FIN drop, budget pause, ordered resume, already-judged head trimmed. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "openclaw/splice.h"
#include "sk_splice.skel.h"
#include "test.h"

/*
 * A fixture: client c ↔ proxy end p0 (pair one), proxy end p1 ↔ backend b
 * (pair two), with p0 and p1 spliced by the program, as clawd does it.
 */
struct fx {
	struct sk_splice *skel;
	int hash, conns, delivered, stats;
	int c, p0, p1, b;
	uint64_t k0, k1;
	bool attached;
};

static int tcp_pair(int *a, int *b, int rcvbuf)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int ls = socket(AF_INET, SOCK_STREAM, 0);

	if (ls < 0)
		return -errno;
	if (rcvbuf)
		setsockopt(ls, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 1) ||
	    getsockname(ls, (struct sockaddr *)&sa, &len)) {
		close(ls);
		return -errno;
	}
	*a = socket(AF_INET, SOCK_STREAM, 0);
	if (*a < 0 || connect(*a, (struct sockaddr *)&sa, sizeof(sa))) {
		close(ls);
		return -errno;
	}
	*b = accept(ls, NULL, NULL);
	close(ls);
	return *b < 0 ? -errno : 0;
}

static uint64_t cookie(int fd)
{
	uint64_t v = 0;
	socklen_t len = sizeof(v);

	getsockopt(fd, SOL_SOCKET, SO_COOKIE, &v, &len);
	return v;
}

static void fx_close(struct fx *f)
{
	int *fds[] = { &f->c, &f->p0, &f->p1, &f->b };

	for (size_t i = 0; i < 4; i++)
		if (*fds[i] > 0)
			close(*fds[i]);
	if (f->attached)
		bpf_prog_detach2(bpf_program__fd(f->skel->progs.splice_verdict), f->hash,
				 BPF_SK_SKB_STREAM_VERDICT);
	if (f->skel)
		sk_splice__destroy(f->skel);
	memset(f, 0, sizeof(*f));
}

/* Inserts fd (cookie k) into the SOCKHASH, as clawd does at the hand-off. */
static int fx_insert(struct fx *f, int fd, uint64_t k)
{
	uint64_t v = (uint64_t)fd;

	return bpf_map_update_elem(f->hash, &k, &v, BPF_NOEXIST) ? -errno : 0;
}

/* Loads, attaches, connects and writes both entries with budget (0: the
 * default); no socket is in the SOCKHASH yet. */
static int fx_setup(struct fx *f, uint64_t budget, int backend_rcvbuf)
{
	uint64_t zero = 0;

	memset(f, 0, sizeof(*f));
	f->skel = sk_splice__open_and_load();
	if (!f->skel)
		return -errno;
	f->hash = bpf_map__fd(f->skel->maps.splice_socks);
	f->conns = bpf_map__fd(f->skel->maps.splice_conns);
	f->delivered = bpf_map__fd(f->skel->maps.splice_delivered);
	f->stats = bpf_map__fd(f->skel->maps.splice_stats);
	if (bpf_prog_attach(bpf_program__fd(f->skel->progs.splice_verdict), f->hash,
			    BPF_SK_SKB_STREAM_VERDICT, 0))
		return -errno;
	f->attached = true;
	if (tcp_pair(&f->c, &f->p0, 0) || tcp_pair(&f->p1, &f->b, backend_rcvbuf))
		return -errno;
	f->k0 = cookie(f->p0);
	f->k1 = cookie(f->p1);
	struct splice_sock s0 = { .peer = f->k1, .budget = budget ? budget : SPLICE_DEFAULT_BUDGET };
	struct splice_sock s1 = { .peer = f->k0, .budget = budget ? budget : SPLICE_DEFAULT_BUDGET };

	if (bpf_map_update_elem(f->conns, &f->k0, &s0, BPF_ANY) ||
	    bpf_map_update_elem(f->conns, &f->k1, &s1, BPF_ANY) ||
	    bpf_map_update_elem(f->delivered, &f->k0, &zero, BPF_ANY) ||
	    bpf_map_update_elem(f->delivered, &f->k1, &zero, BPF_ANY))
		return -errno;
	return 0;
}

/* Loads, attaches and splices p0 ↔ p1 with budget (0: the default). */
static int fx_open(struct fx *f, uint64_t budget, int backend_rcvbuf)
{
	int rc = fx_setup(f, budget, backend_rcvbuf);

	if (rc)
		return rc;
	rc = fx_insert(f, f->p1, f->k1);
	return rc ? rc : fx_insert(f, f->p0, f->k0);
}

/*
 * The socket's rcv_nxt as the kernel keeps it (TCP_REPAIR, root only): the
 * sequence number just past the last byte received. The socket is left in
 * repair mode, so this is for a socket about to be closed.
 */
static int64_t rcv_nxt(int fd)
{
	int on = 1, q = TCP_RECV_QUEUE;
	uint32_t seq = 0;
	socklen_t len = sizeof(seq);

	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on, sizeof(on)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &q, sizeof(q)) ||
	    getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, &seq, &len))
		return -errno;
	return seq;
}

static uint64_t counter(struct fx *f, uint32_t id)
{
	int n = libbpf_num_possible_cpus();
	uint64_t vals[1024] = { 0 }, sum = 0;

	if (n <= 0 || n > 1024 || bpf_map_lookup_elem(f->stats, &id, vals))
		return 0;
	for (int i = 0; i < n; i++)
		sum += vals[i];
	return sum;
}

/* Reads exactly n bytes within 2 s; returns how many arrived. */
static size_t read_n(int fd, char *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t k;

		if (poll(&p, 1, 2000) <= 0)
			break;
		k = recv(fd, buf + got, n - got, MSG_DONTWAIT);
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	return got;
}

static void need_root(void)
{
	if (geteuid() != 0)
		SKIP("needs root");
}

static void redirects_both_ways(void)
{
	struct fx f;
	char buf[64];

	need_root();
	if (test__cur_skipped)
		return;
	if (fx_open(&f, 0, 0)) {
		fx_close(&f);
		TEST_FAIL_("fixture: %s", strerror(errno));
	}
	ASSERT_EQ(send(f.c, "hello backend", 13, 0), 13);
	size_t n = read_n(f.b, buf, 13);
	bool ok1 = n == 13 && !memcmp(buf, "hello backend", 13);
	ASSERT_EQ(send(f.b, "hi client", 9, 0), 9);
	n = read_n(f.c, buf, 9);
	bool ok2 = n == 9 && !memcmp(buf, "hi client", 9);
	struct splice_sock s;
	bpf_map_lookup_elem(f.conns, &f.k0, &s);
	uint64_t redir = counter(&f, SPLICE_C_REDIRECT_BYTES);
	/* The sequence number the program read off the skb: one skb of 13
	 * bytes, nothing trimmed, so next_seq is just past it, where p0's
	 * receiver is. A wrong read of TCP_SKB_CB(skb)->seq shows here. */
	int64_t nxt = rcv_nxt(f.p0);
	fx_close(&f);
	ASSERT_TRUE(ok1);
	ASSERT_TRUE(ok2);
	ASSERT_EQ(s.redirected, 13);
	ASSERT_EQ(s.passed, 0);
	ASSERT_EQ(redir, 22);
	ASSERT_EQ(s.seq_set, 1);
	ASSERT_EQ(s.dup_bytes, 0);
	ASSERT_EQ((int64_t)s.next_seq, nxt);
}

/* Waits (bounded) until everything written on fd has been acknowledged. */
static bool all_acked(int fd)
{
	for (int i = 0; i < 200; i++) {
		int outq = -1;

		if (ioctl(fd, SIOCOUTQ, &outq) == 0 && outq == 0)
			return true;
		usleep(10000);
	}
	return false;
}

/*
 * Small messages well under the budget take the fast path: the room left by
 * the first exact check shrinks by each message, with no peer lookup (an
 * exact check would find the earlier messages acknowledged and leave more
 * room). A message larger than the room triggers an exact check, which
 * finds everything acknowledged and redirects it: no pause.
 */
static void budget_room_fast_path(void)
{
	struct fx f;
	char msg[300], buf[300];
	struct splice_sock s3, s4;
	bool read_ok = true, acked;

	need_root();
	if (test__cur_skipped)
		return;
	if (fx_open(&f, 1000, 0)) {
		fx_close(&f);
		TEST_FAIL_("fixture: %s", strerror(errno));
	}
	memset(msg, 'r', sizeof(msg));
	for (int i = 0; i < 3; i++) {
		read_ok &= send(f.c, msg, sizeof(msg), 0) == (ssize_t)sizeof(msg);
		read_ok &= read_n(f.b, buf, sizeof(buf)) == sizeof(buf);
	}
	bpf_map_lookup_elem(f.conns, &f.k0, &s3);
	acked = all_acked(f.p1);
	read_ok &= send(f.c, msg, sizeof(msg), 0) == (ssize_t)sizeof(msg);
	read_ok &= read_n(f.b, buf, sizeof(buf)) == sizeof(buf);
	bpf_map_lookup_elem(f.conns, &f.k0, &s4);
	fx_close(&f);
	ASSERT_TRUE(read_ok);
	ASSERT_TRUE(acked);
	ASSERT_EQ(s3.redirected, 900);
	ASSERT_EQ(s3.room, 100);         /* 1000 - 3 x 300: two messages on the fast path */
	ASSERT_EQ(s3.inflight_max, 900); /* an upper bound on the fast path, never above budget */
	ASSERT_EQ(s4.redirected, 1200);
	ASSERT_EQ(s4.room, 700);         /* exact check: 0 in flight, 1000 - 300 */
	ASSERT_EQ(s4.pauses, 0);
	ASSERT_EQ(s4.passed, 0);
}

static void fin_is_dropped_not_redirected(void)
{
	struct fx f;
	char buf[16];
	int err = 0;
	socklen_t len = sizeof(err);

	need_root();
	if (test__cur_skipped)
		return;
	if (fx_open(&f, 0, 0)) {
		fx_close(&f);
		TEST_FAIL_("fixture: %s", strerror(errno));
	}
	shutdown(f.c, SHUT_WR);
	usleep(50000);
	uint64_t drops = counter(&f, SPLICE_C_FIN_DROPS);
	getsockopt(f.p1, SOL_SOCKET, SO_ERROR, &err, &len);
	/* The other direction still works: a redirected FIN would have left EPIPE on p1. */
	ssize_t k = send(f.b, "after", 5, 0);
	size_t n = read_n(f.c, buf, 5);
	fx_close(&f);
	ASSERT_EQ(drops, 1);
	ASSERT_EQ(err, 0);
	ASSERT_EQ(k, 5);
	ASSERT_EQ(n, 5);
}

static void socket_without_entry_passes(void)
{
	struct fx f;
	char buf[8];

	need_root();
	if (test__cur_skipped)
		return;
	if (fx_open(&f, 0, 0)) {
		fx_close(&f);
		TEST_FAIL_("fixture: %s", strerror(errno));
	}
	bpf_map_delete_elem(f.conns, &f.k0);
	send(f.c, "mine", 4, 0);
	/* SK_PASS: the bytes stay readable on the socket they came in on. */
	size_t n = read_n(f.p0, buf, 4);
	uint64_t np = counter(&f, SPLICE_C_NO_PEER);
	fx_close(&f);
	ASSERT_EQ(n, 4);
	ASSERT_EQ(np, 1);
}

/* Backend bytes drained into got. */
static void drain(int fd, size_t *got)
{
	static char sink[1 << 20];
	ssize_t k;

	while ((k = recv(fd, sink, sizeof(sink), MSG_DONTWAIT)) > 0)
		*got += (size_t)k;
}

/* clawd's part: moves what the program left on p0 to p1, then reports it delivered. */
static size_t relay_passed(struct fx *f, size_t moved, size_t *got_b)
{
	static char buf[64 << 10];
	struct splice_sock s;
	int outq = 1;

	for (int round = 0; round < 400; round++) {
		bpf_map_lookup_elem(f->conns, &f->k0, &s);
		ioctl(f->c, SIOCOUTQ, &outq);
		if (moved == s.passed && outq == 0)
			break;
		while (moved < s.passed) {
			size_t want = s.passed - moved < sizeof(buf) ? s.passed - moved : sizeof(buf);
			ssize_t k = recv(f->p0, buf, want, MSG_DONTWAIT);

			if (k <= 0)
				break;
			for (ssize_t off = 0; off < k;) {
				ssize_t w = send(f->p1, buf + off, (size_t)(k - off), MSG_DONTWAIT);

				if (w > 0)
					off += w;
				drain(f->b, got_b);
			}
			moved += (size_t)k;
		}
		uint64_t dv = moved;

		bpf_map_update_elem(f->delivered, &f->k0, &dv, BPF_ANY);
		drain(f->b, got_b);
		usleep(5000);
	}
	return moved;
}

/*
 * The backend reads nothing: once budget bytes are unacknowledged the
 * program stops redirecting and leaves bytes on p0, and it redirects
 * nothing more until clawd reports those bytes delivered, even after the
 * backend drains; then it resumes, and every byte arrives once.
 */
static void budget_pauses_and_resumes_in_order(void)
{
	const uint64_t budget = 256 << 10;
	static char blk[64 << 10];
	struct fx f;
	struct splice_sock s;
	size_t total = 0, got_b = 0;

	need_root();
	if (test__cur_skipped)
		return;
	if (fx_open(&f, budget, 64 << 10)) {
		fx_close(&f);
		TEST_FAIL_("fixture: %s", strerror(errno));
	}
	fcntl(f.c, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 64; i++) {
		ssize_t k = send(f.c, blk, sizeof(blk), 0);

		if (k > 0)
			total += (size_t)k;
		else
			usleep(2000);
	}
	usleep(100000);
	bpf_map_lookup_elem(f.conns, &f.k0, &s);
	bool pause_ok = s.pauses >= 1 && s.passed > 0 && s.inflight_max <= budget;
	int inq = -1;

	/* What clawd relies on: SIOCINQ counts exactly the bytes left on the socket. */
	ioctl(f.p0, SIOCINQ, &inq);
	bool inq_ok = (uint64_t)inq == s.passed;
	uint64_t redirected_at_pause = s.redirected;

	drain(f.b, &got_b);
	while (send(f.c, "x", 1, 0) != 1)
		usleep(1000);
	total++;
	usleep(50000);
	bpf_map_lookup_elem(f.conns, &f.k0, &s);
	bool held = s.redirected == redirected_at_pause;
	size_t moved = relay_passed(&f, 0, &got_b);

	bpf_map_lookup_elem(f.conns, &f.k0, &s);
	uint64_t redirected_before = s.redirected;
	bool all_moved = moved == s.passed;

	send(f.c, "y", 1, 0);
	total++;
	usleep(50000);
	drain(f.b, &got_b);
	bpf_map_lookup_elem(f.conns, &f.k0, &s);
	fx_close(&f);
	ASSERT_TRUE(pause_ok);
	ASSERT_TRUE(inq_ok);
	ASSERT_TRUE(held);
	ASSERT_TRUE(all_moved);
	ASSERT_EQ(s.redirected, redirected_before + 1);
	ASSERT_EQ(got_b, total);
}

/*
 * Issue 8: the verdict path hands over whole skbs, head included, even when
 * part of the skb was consumed already. Deterministically: 100 bytes arrive
 * on p0 before it is spliced and are read in part (40 bytes, as clawd reads
 * past the first request), so the skb left on the queue starts 40 bytes
 * before copied_seq. After the insertion (and the SO_RCVLOWAT flush clawd
 * does) the program must trim exactly those 40 bytes: the backend gets bytes
 * 40..99 once, nothing more. This fails if the skb's TCP sequence number is
 * read wrong (a wrong offset trims the wrong amount or resets), and on a
 * kernel where the program does not load at all.
 */
static void partly_read_skb_is_trimmed(void)
{
	char msg[100], head[40], buf[128];
	struct splice_sock s = { 0 };
	struct fx f;
	int one = 1, inq = 0;

	need_root();
	if (test__cur_skipped)
		return;
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (char)('A' + i % 53);
	if (fx_setup(&f, 0, 0) || fx_insert(&f, f.p1, f.k1)) {
		fx_close(&f);
		TEST_FAIL_("fixture: %s", strerror(errno));
	}
	ssize_t sent = send(f.c, msg, sizeof(msg), 0);
	for (int i = 0; i < 200 && inq < (int)sizeof(msg); i++) {
		usleep(1000);
		ioctl(f.p0, SIOCINQ, &inq);
	}
	ssize_t h = recv(f.p0, head, sizeof(head), MSG_DONTWAIT);
	int ins = fx_insert(&f, f.p0, f.k0);
	/* Queued bytes reach the verdict on the next data-ready: this is it. */
	setsockopt(f.p0, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	size_t n = read_n(f.b, buf, sizeof(msg) - sizeof(head));
	/* Anything more would be the head a second time. */
	struct pollfd p = { .fd = f.b, .events = POLLIN };
	int extra = poll(&p, 1, 200);
	bpf_map_lookup_elem(f.conns, &f.k0, &s);
	uint64_t dup = counter(&f, SPLICE_C_DUP_BYTES), dup_fail = counter(&f, SPLICE_C_DUP_FAIL);
	/* Then the splice goes on as usual, with nothing to trim. */
	ssize_t sent2 = send(f.c, "tail", 4, 0);
	size_t n2 = read_n(f.b, buf + 60, 4);
	struct splice_sock s2 = { 0 };
	bpf_map_lookup_elem(f.conns, &f.k0, &s2);
	int64_t nxt = rcv_nxt(f.p0);
	fx_close(&f);
	ASSERT_EQ(sent, (ssize_t)sizeof(msg));
	ASSERT_EQ(inq, (int)sizeof(msg));
	ASSERT_EQ(h, (ssize_t)sizeof(head));
	ASSERT_EQ(ins, 0);
	ASSERT_EQ(n, sizeof(msg) - sizeof(head));
	ASSERT_TRUE(!memcmp(buf, msg + sizeof(head), sizeof(msg) - sizeof(head)));
	ASSERT_EQ(extra, 0);
	ASSERT_EQ(s.dup_bytes, sizeof(head));
	ASSERT_EQ(dup, sizeof(head));
	ASSERT_EQ(dup_fail, 0);
	ASSERT_EQ(s.redirected, sizeof(msg) - sizeof(head));
	ASSERT_EQ(s.state, SPLICE_RUN);
	ASSERT_EQ(sent2, 4);
	ASSERT_EQ(n2, 4);
	ASSERT_TRUE(!memcmp(buf + 60, "tail", 4));
	ASSERT_EQ(s2.dup_bytes, sizeof(head));
	ASSERT_EQ(s2.redirected, sizeof(msg) - sizeof(head) + 4);
	ASSERT_EQ((int64_t)s2.next_seq, nxt);
}

/*
 * The verifier of the running kernel accepts the program (the reason this
 * test also runs in vmtest on 6.1); prints how many instructions it checked.
 */
static void program_loads(void)
{
	struct bpf_prog_info info = { 0 };
	__u32 len = sizeof(info);
	struct sk_splice *skel;
	int rc;

	need_root();
	if (test__cur_skipped)
		return;
	skel = sk_splice__open_and_load();
	rc = skel ? bpf_obj_get_info_by_fd(bpf_program__fd(skel->progs.splice_verdict), &info, &len) : -errno;
	if (!rc)
		printf("# splice_verdict: %u BPF instructions, verifier processed %u\n",
		       info.xlated_prog_len / 8, info.verified_insns);
	sk_splice__destroy(skel);
	ASSERT_EQ(rc, 0);
}

int main(void)
{
	RUN(program_loads);
	RUN(redirects_both_ways);
	RUN(fin_is_dropped_not_redirected);
	RUN(socket_without_entry_passes);
	RUN(budget_pauses_and_resumes_in_order);
	RUN(budget_room_fast_path);
	RUN(partly_read_skb_is_trimmed);
	return test_done();
}
