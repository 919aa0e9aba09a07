/* selftests/bpf/test_ktls_splice.c — what the kernel does with kTLS and the splice SOCKHASH together (issue 8): either insertion order refused, splicing unaffected, the leak after removal. */
#include <linux/tls.h>

/* The splice fixture (struct fx, fx_setup, fx_insert, fx_close, counter,
 * read_n, cookie) lives in the program's own test; this one reuses it
 * rather than copying it. */
#define main test_sk_splice_main
#include "test_sk_splice.c"
#undef main

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

static bool have_ulp, require;
static char ulp_why[128];

/* Whether TCP_ULP "tls" attaches here (a loopback pair of our own). */
static void probe_ulp(void)
{
	int a = -1, b = -1;

	require = getenv("KTLS_PROBE_REQUIRE") && !strcmp(getenv("KTLS_PROBE_REQUIRE"), "1");
	if (tcp_pair(&a, &b, 0)) {
		snprintf(ulp_why, sizeof(ulp_why), "loopback pair: %s", strerror(errno));
	} else if (setsockopt(a, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls"))) {
		snprintf(ulp_why, sizeof(ulp_why), "kernel has no TLS ULP (TCP_ULP tls: %s)", strerror(errno));
	} else {
		have_ulp = true;
	}
	if (a >= 0)
		close(a);
	if (b >= 0)
		close(b);
}

#define NEED_KTLS_ROOT()                                                          \
	do {                                                                      \
		if (geteuid() != 0)                                               \
			SKIP("needs root");                                       \
		if (!have_ulp) {                                                  \
			if (require)                                              \
				TEST_FAIL_("%s (is tls.ko loaded?)", ulp_why);    \
			SKIP(ulp_why);                                            \
		}                                                                 \
	} while (0)

/* Dummy AES-128-GCM key material; seed tells the two directions apart. */
static void fill_key(struct tls12_crypto_info_aes_gcm_128 *ci, uint16_t version, uint8_t seed)
{
	memset(ci, 0, sizeof(*ci));
	ci->info.version = version;
	ci->info.cipher_type = TLS_CIPHER_AES_GCM_128;
	for (size_t i = 0; i < sizeof(ci->key); i++)
		ci->key[i] = (uint8_t)(seed + i);
	for (size_t i = 0; i < sizeof(ci->iv); i++)
		ci->iv[i] = (uint8_t)(seed * 3 + i);
	for (size_t i = 0; i < sizeof(ci->salt); i++)
		ci->salt[i] = (uint8_t)(seed * 7 + i);
}

/* Sets the ULP (when ulp) and TX key tx_seed, RX key rx_seed; -errno of the first refusal, *step names it. */
static int ktls_on(int fd, uint16_t version, uint8_t tx_seed, uint8_t rx_seed, bool ulp, const char **step)
{
	struct tls12_crypto_info_aes_gcm_128 tx, rx;

	fill_key(&tx, version, tx_seed);
	fill_key(&rx, version, rx_seed);
	*step = "TCP_ULP";
	if (ulp && setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")))
		return -errno;
	*step = "TLS_TX";
	if (setsockopt(fd, SOL_TLS, TLS_TX, &tx, sizeof(tx)))
		return -errno;
	*step = "TLS_RX";
	if (setsockopt(fd, SOL_TLS, TLS_RX, &rx, sizeof(rx)))
		return -errno;
	return 0;
}

/* A /proc/net/tls_stat counter, -1 when absent. */
static long tls_stat(const char *name)
{
	FILE *f = fopen("/proc/net/tls_stat", "r");
	char key[64];
	long v;

	if (!f)
		return -1;
	while (fscanf(f, "%63s %ld", key, &v) == 2) {
		if (!strcmp(key, name)) {
			fclose(f);
			return v;
		}
	}
	fclose(f);
	return -1;
}

/*
 * Closes f->p0 and tells whether its peer f->c sees the end of the stream
 * (read() == 0) within 1 s, i.e. whether the kernel really closed it.
 */
static bool close_p0_reaches_peer(struct fx *f)
{
	struct pollfd p = { .fd = f->c, .events = POLLIN };
	char b;

	close(f->p0);
	f->p0 = -1;
	for (int i = 0; i < 10; i++) {
		if (poll(&p, 1, 100) > 0 && recv(f->c, &b, 1, MSG_DONTWAIT) == 0)
			return true;
		if (p.revents & POLLIN)
			usleep(10000); /* data, not the end: keep polling */
	}
	return false;
}

/*
 * ULP first, then insert: refused. sk_psock_init() (net/core/skmsg.c)
 * returns -EINVAL for a socket with any ULP (inet_csk_has_ulp()), keys or
 * no keys, so the map never takes a socket whose record layer is already in
 * the kernel.
 */
static void ulp_then_insert_is_refused(void)
{
	struct fx f;
	const char *step;
	int a = -1, b = -1;

	NEED_KTLS_ROOT();
	if (fx_setup(&f, 0, 0) || tcp_pair(&a, &b, 0)) {
		fx_close(&f);
		TEST_FAIL_("fixture: %s", strerror(errno));
	}
	int on = ktls_on(f.p0, TLS_1_3_VERSION, 2, 1, true, &step);
	int ins = fx_insert(&f, f.p0, f.k0);
	int ulp = setsockopt(a, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) ? -errno : 0;
	int ins_bare = fx_insert(&f, a, cookie(a));
	close(a);
	close(b);
	fx_close(&f);
	printf("# ULP+keys then insert: %d; bare ULP then insert: %d\n", ins, ins_bare);
	ASSERT_EQ(on, 0);
	ASSERT_EQ(ins, -EINVAL);
	ASSERT_EQ(ulp, 0);
	ASSERT_EQ(ins_bare, -EINVAL);
}

/*
 * Insert first, then ULP and keys: the ULP attaches, but neither key is
 * accepted while the socket has a psock. On 6.1.190 and later (the stable
 * backport of "tls: reject the combination of TLS and sockmap", CVE-2026-93824
 * in Debian's changelog) setsockopt(SOL_TLS, TLS_TX / TLS_RX) fails with EINVAL on a
 * socket in a sockmap, and /proc/net/tls_stat counts no installation. The
 * socket keeps working as a plain spliced socket (the bare ULP is
 * transparent), so a client speaking TLS records would get them relayed as
 * opaque bytes — which is why clawd must never set keys on a spliced socket
 * and never splice a TLS-terminated one. If a kernel ever accepts the keys
 * again, this fails: re-measure before wiring kTLS + splice.
 */
static void insert_then_keys_refused(uint16_t version)
{
	struct fx f;
	const char *step = "";
	char buf[32];
	struct tls12_crypto_info_aes_gcm_128 rx;

	NEED_KTLS_ROOT();
	if (fx_setup(&f, 0, 0) || fx_insert(&f, f.p1, f.k1) || fx_insert(&f, f.p0, f.k0)) {
		fx_close(&f);
		TEST_FAIL_("fixture: %s", strerror(errno));
	}
	long tx0 = tls_stat("TlsTxSw"), rx0 = tls_stat("TlsRxSw");
	/* TX first (what clawd installs first), then RX alone on the same socket. */
	int on = ktls_on(f.p0, version, 2, 1, true, &step);
	fill_key(&rx, version, 1);
	int rx_only = setsockopt(f.p0, SOL_TLS, TLS_RX, &rx, sizeof(rx)) ? -errno : 0;
	long tx1 = tls_stat("TlsTxSw"), rx1 = tls_stat("TlsRxSw");
	/* Still spliced, byte for byte, both ways. */
	ssize_t s1 = send(f.c, "to backend", 10, 0);
	size_t n1 = read_n(f.b, buf, 10);
	bool ok1 = n1 == 10 && !memcmp(buf, "to backend", 10);
	ssize_t s2 = send(f.b, "to client", 9, 0);
	size_t n2 = read_n(f.c, buf, 9);
	bool ok2 = n2 == 9 && !memcmp(buf, "to client", 9);
	struct splice_sock s = { 0 };
	bpf_map_lookup_elem(f.conns, &f.k0, &s);
	bool eof = close_p0_reaches_peer(&f);
	fx_close(&f);
	printf("# close of the spliced ULP socket reaches the peer: %d\n", eof);
	printf("# insert then ULP+keys (%#x): %d at %s, TLS_RX alone %d; TlsTxSw %ld->%ld TlsRxSw %ld->%ld\n",
	       version, on, step, rx_only, tx0, tx1, rx0, rx1);
	ASSERT_EQ(on, -EINVAL);
	ASSERT_STREQ(step, "TLS_TX");
	ASSERT_EQ(rx_only, -EINVAL);
	ASSERT_EQ(tx1, tx0);
	ASSERT_EQ(rx1, rx0);
	ASSERT_EQ(s1, 10);
	ASSERT_TRUE(ok1);
	ASSERT_EQ(s2, 9);
	ASSERT_TRUE(ok2);
	ASSERT_EQ(s.redirected, 10);
	ASSERT_TRUE(eof);
}

static void insert_then_keys_refused_tls13(void)
{
	insert_then_keys_refused(TLS_1_3_VERSION);
}

static void insert_then_keys_refused_tls12(void)
{
	insert_then_keys_refused(TLS_1_2_VERSION);
}

/*
 * The trap behind the refusal: a bare ULP set on a socket while it is in the
 * map, then the socket removed from the map. The keys are still refused
 * (ENOPROTOOPT now), the kernel never got a record layer (a kTLS peer's
 * record arrives as raw ciphertext), the socket cannot go back in (it has a
 * ULP), and close() does not close it: the TLS context kept the sockmap
 * proto as its base, so close ends in sock_map_close(), which finds no
 * psock and its own address as the close to call, warns (WARN_ON_ONCE
 * "saved_close == sock_map_close", net/core/sock_map.c; it shows in the
 * guest console) and returns, leaking the socket — the peer never sees a
 * FIN. clawd must never set TCP_ULP on a socket that is or was in the
 * SOCKHASH.
 */
static void ulp_on_spliced_socket_then_removal_leaks(void)
{
	struct fx f;
	const char *step = "", *cstep = "";
	unsigned char buf[32];

	NEED_KTLS_ROOT();
	if (fx_setup(&f, 0, 0) || fx_insert(&f, f.p0, f.k0)) {
		fx_close(&f);
		TEST_FAIL_("fixture: %s", strerror(errno));
	}
	int ulp = setsockopt(f.p0, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) ? -errno : 0;
	int del = bpf_map_delete_elem(f.hash, &f.k0) ? -errno : 0;
	int on = ktls_on(f.p0, TLS_1_3_VERSION, 2, 1, false, &step);
	int con = ktls_on(f.c, TLS_1_3_VERSION, 1, 2, true, &cstep);
	ssize_t s1 = send(f.c, "record", 6, 0);
	size_t n1 = read_n(f.p0, (char *)buf, 5);
	int ins = fx_insert(&f, f.p0, f.k0);
	bool eof = close_p0_reaches_peer(&f);
	fx_close(&f);
	printf("# removed then keys: %d at %s; client kTLS %d; read %zu bytes %02x %02x %02x; reinsert %d; close reaches peer %d\n",
	       on, step, con, n1, buf[0], buf[1], buf[2], ins, eof);
	ASSERT_EQ(ulp, 0);
	ASSERT_EQ(del, 0);
	ASSERT_EQ(on, -ENOPROTOOPT);
	ASSERT_STREQ(step, "TLS_TX");
	ASSERT_EQ(con, 0);
	ASSERT_EQ(s1, 6);
	/* A TLS record header (application_data, legacy version 3.3), not "recor". */
	ASSERT_EQ(n1, 5);
	ASSERT_EQ(buf[0], 0x17);
	ASSERT_EQ(buf[1], 0x03);
	ASSERT_EQ(buf[2], 0x03);
	ASSERT_EQ(ins, -EINVAL);
	ASSERT_FALSE(eof);
}

int main(void)
{
	probe_ulp();
	RUN(ulp_then_insert_is_refused);
	RUN(insert_then_keys_refused_tls13);
	RUN(insert_then_keys_refused_tls12);
	RUN(ulp_on_spliced_socket_then_removal_leaks);
	return test_done();
}
