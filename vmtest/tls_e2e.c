/* vmtest/tls_e2e.c — clawd terminating TLS on a kernel with kTLS: handshakes 1.2/1.3, kTLS engaged (tls_stat and clawd's report), big bodies hash equal, KeyUpdate refused safely, ktls: off fallback. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "e2e_util.h"
#include "test.h"

/*
 * No python and no openssl CLI in the guest: this program is the test
 * client, the backend (a thread) and the certificate authority. It runs
 * clawd (CLAWD, default /vmtest/bin/clawd) twice: with ktls: auto, where
 * every kTLS assertion must hold when the kernel has the TLS ULP, and with
 * ktls: off, where the same traffic must pass in userspace and the kernel
 * counters must not move. On a kernel without the ULP the kTLS subtests
 * skip (unless KTLS_PROBE_REQUIRE=1, as in the guest).
 */

#define DIR_ "/tmp/tls_e2e"
#define BIG_MIB_DEFAULT 100

static int be_port, cd_port;
static pid_t cd_pid = -1;
static bool have_ulp, require;
static size_t big_bytes;
static SSL_CTX *cli_ctx;

/* ---- the backend: HTTP/1.1 keep-alive; POST answers the body's SHA-256, GET /big sends the pattern ---- */

static ssize_t read_line_head(int fd, char *buf, size_t cap)
{
	size_t n = 0;

	while (n + 1 < cap) {
		ssize_t k = recv(fd, buf + n, 1, 0);

		if (k <= 0)
			return -1;
		n += (size_t)k;
		if (n >= 4 && !memcmp(buf + n - 4, "\r\n\r\n", 4)) {
			buf[n] = '\0';
			return (ssize_t)n;
		}
	}
	return -1;
}

static void *be_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	static char head[8192];
	char resp[256], sum[65];
	uint8_t buf[65536];

	for (;;) {
		char local[8192];
		const char *cl;
		unsigned long long len = 0;

		(void)head;
		if (read_line_head(fd, local, sizeof(local)) < 0)
			break;
		cl = strcasestr(local, "content-length:");
		if (cl)
			len = strtoull(cl + 15, NULL, 10);
		if (!strncmp(local, "POST", 4)) {
			EVP_MD_CTX *m = e2e_sha256_begin();

			while (len) {
				ssize_t k = recv(fd, buf, len < sizeof(buf) ? len : sizeof(buf), 0);

				if (k <= 0)
					break;
				EVP_DigestUpdate(m, buf, (size_t)k);
				len -= (unsigned long long)k;
			}
			e2e_sha256_end(m, sum);
			snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n%s", sum);
			if (!e2e_send_all(fd, resp, strlen(resp)))
				break;
		} else if (strstr(local, "GET /big")) {
			int n = snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n",
					 big_bytes);

			if (!e2e_send_all(fd, resp, (size_t)n))
				break;
			for (size_t off = 0; off < big_bytes; off += sizeof(buf)) {
				size_t k = big_bytes - off < sizeof(buf) ? big_bytes - off : sizeof(buf);

				e2e_pattern(buf, k, off);
				if (!e2e_send_all(fd, buf, k))
					goto out;
			}
		} else {
			static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

			if (!e2e_send_all(fd, ok, sizeof(ok) - 1))
				break;
		}
	}
out:
	close(fd);
	return NULL;
}

static void *be_loop(void *arg)
{
	int lfd = (int)(intptr_t)arg;

	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		pthread_t th;

		if (fd < 0)
			continue;
		if (pthread_create(&th, NULL, be_conn, (void *)(intptr_t)fd)) {
			close(fd);
			continue;
		}
		pthread_detach(th);
	}
	return NULL;
}

/* ---- certificates: a self-signed P-256 leaf for "vm.test" ---- */

static int make_cert(void)
{
	EVP_PKEY *pk;
	X509 *x;
	FILE *f;
	int fd;

	if (e2e_self_signed("vm.test", NULL, DIR_ "/cert.pem", &pk, &x))
		return -1;
	fd = open(DIR_ "/key.pem", O_WRONLY | O_CREAT | O_TRUNC, 0600);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f || !PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL))
		return -1;
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
	return 0;
}

/* ---- clawd ---- */

static int start_clawd(const char *ktls)
{
	char path[] = DIR_ "/clawd.yaml";
	FILE *f;

	cd_port = e2e_free_port();
	f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f,
		"workers: 1\n"
		"control:\n  socket: " DIR_ "/ctl.sock\n"
		"listeners:\n"
		"  - name: tls\n    address: 127.0.0.1:%d\n"
		"    tls:\n      ktls: %s\n      certificates:\n"
		"        - cert: " DIR_ "/cert.pem\n          key: " DIR_ "/key.pem\n"
		"upstreams:\n  - name: be\n    servers:\n      - address: 127.0.0.1:%d\n"
		"routes:\n  - name: all\n    upstream: be\n    max_body: 0\n",
		cd_port, ktls, be_port);
	fclose(f);
	return e2e_clawd_start(path, DIR_ "/clawd.log", cd_port, &cd_pid);
}

/* One control command; the reply line in out. */
static int control(const char *cmd, char *out, size_t cap)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = DIR_ "/ctl.sock" };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	size_t n = 0;

	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    !e2e_send_all(fd, cmd, strlen(cmd)))
		return -1;
	while (n + 1 < cap) {
		ssize_t k = recv(fd, out + n, cap - n - 1, 0);

		if (k <= 0)
			break;
		n += (size_t)k;
		if (out[n - 1] == '\n')
			break;
	}
	out[n] = '\0';
	close(fd);
	return 0;
}

/* "key":N in a JSON reply, -1 when absent. */
static long long json_num(const char *j, const char *key)
{
	char pat[80];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(j, pat);
	return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* Waits (up to 5 s) until clawd has no client connection open, so kernel counters settle. */
static void wait_idle(void)
{
	char rep[4096];

	for (int i = 0; i < 100; i++) {
		if (!control("{\"cmd\":\"status\"}\n", rep, sizeof(rep)) && json_num(rep, "connections") == 0)
			return;
		usleep(50000);
	}
}

/* ---- the client ---- */

struct conn {
	int fd;
	SSL *ssl;
};

static int tls_connect(struct conn *c, int version)
{
	c->fd = e2e_connect_port(cd_port);
	if (c->fd < 0)
		return -1;
	c->ssl = SSL_new(cli_ctx);
	SSL_set_min_proto_version(c->ssl, version);
	SSL_set_max_proto_version(c->ssl, version);
	SSL_set_tlsext_host_name(c->ssl, "vm.test");
	SSL_set_fd(c->ssl, c->fd);
	return SSL_connect(c->ssl) == 1 ? 0 : -1;
}

static void tls_close(struct conn *c)
{
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	c->ssl = NULL;
	c->fd = -1;
}

/* Reads a response head; returns Content-Length or -1. */
static long long read_head(SSL *s)
{
	char h[4096];
	size_t n = 0, r;

	while (n + 1 < sizeof(h)) {
		if (SSL_read_ex(s, h + n, 1, &r) != 1)
			return -1;
		n += r;
		if (n >= 4 && !memcmp(h + n - 4, "\r\n\r\n", 4))
			break;
	}
	h[n] = '\0';
	if (strncmp(h, "HTTP/1.1 200", 12))
		return -1;
	const char *cl = strcasestr(h, "content-length:");
	return cl ? strtoll(cl + 15, NULL, 10) : -1;
}

static bool get_small(struct conn *c)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: vm.test\r\n\r\n";
	char body[8];
	size_t r;

	if (!e2e_ssl_write_all(c->ssl, req, sizeof(req) - 1) || read_head(c->ssl) != 5)
		return false;
	return SSL_read_ex(c->ssl, body, 5, &r) == 1 && r == 5 && !memcmp(body, "hello", 5);
}

/* POSTs big_bytes of the pattern; the backend answers their hash. */
static bool post_big(struct conn *c, char got[65])
{
	char head[128];
	uint8_t buf[65536];
	size_t r, n = 0;

	snprintf(head, sizeof(head), "POST /up HTTP/1.1\r\nHost: vm.test\r\nContent-Length: %zu\r\n\r\n",
		 big_bytes);
	if (!e2e_ssl_write_all(c->ssl, head, strlen(head)))
		return false;
	for (size_t off = 0; off < big_bytes; off += sizeof(buf)) {
		size_t k = big_bytes - off < sizeof(buf) ? big_bytes - off : sizeof(buf);

		e2e_pattern(buf, k, off);
		if (!e2e_ssl_write_all(c->ssl, buf, k))
			return false;
	}
	if (read_head(c->ssl) != 64)
		return false;
	while (n < 64) {
		if (SSL_read_ex(c->ssl, got + n, 64 - n, &r) != 1)
			return false;
		n += r;
	}
	got[64] = '\0';
	return true;
}

static bool get_big(struct conn *c, char got[65])
{
	static const char req[] = "GET /big HTTP/1.1\r\nHost: vm.test\r\n\r\n";
	EVP_MD_CTX *m = e2e_sha256_begin();
	uint8_t buf[65536];
	long long left;
	size_t r;

	if (!e2e_ssl_write_all(c->ssl, req, sizeof(req) - 1) || (left = read_head(c->ssl)) != (long long)big_bytes) {
		EVP_MD_CTX_free(m);
		return false;
	}
	while (left > 0) {
		if (SSL_read_ex(c->ssl, buf, left < (long long)sizeof(buf) ? (size_t)left : sizeof(buf), &r) != 1)
			break;
		EVP_DigestUpdate(m, buf, r);
		left -= (long long)r;
	}
	e2e_sha256_end(m, got);
	return left == 0;
}

/* ---- subtests ---- */

struct variant {
	const char *name;
	int version;
	bool ktls; /* clawd runs with ktls: auto (else off) */
};

/* Handshake, requests on one keep-alive connection; kTLS engaged (or not) as the variant says. */
static void keepalive(const struct variant *v)
{
	struct conn c = { -1, NULL };
	long tx0, rx0;
	char rep[8192];

	wait_idle();
	tx0 = e2e_tls_stat("TlsCurrTxSw");
	rx0 = e2e_tls_stat("TlsCurrRxSw");

	if (v->ktls && !have_ulp) {
		if (require)
			TEST_FAIL_("kernel has no TLS ULP (is tls.ko loaded?)");
		SKIP("kernel has no TLS ULP");
	}
	if (tls_connect(&c, v->version)) {
		tls_close(&c);
		TEST_FAIL_("TLS handshake with clawd failed");
	}
	for (int i = 0; i < 5; i++)
		if (!get_small(&c)) {
			tls_close(&c);
			TEST_FAIL_("request %d on the keep-alive connection failed", i);
		}
	long tx1 = e2e_tls_stat("TlsCurrTxSw"), rx1 = e2e_tls_stat("TlsCurrRxSw");

	control("{\"cmd\":\"tls.status\"}\n", rep, sizeof(rep));
	printf("# %s: TlsCurrTxSw %ld -> %ld, TlsCurrRxSw %ld -> %ld; clawd ktls_connections %lld userspace %lld\n",
	       v->name, tx0, tx1, rx0, rx1, json_num(rep, "ktls_connections"),
	       json_num(rep, "userspace_connections"));
	tls_close(&c);
	if (v->ktls) {
		ASSERT_EQ(tx1, tx0 + 1);
		ASSERT_EQ(rx1, rx0 + 1);
		ASSERT_GE(json_num(rep, "ktls_connections"), 1);
		ASSERT_STRSTR(rep, "\"path\":\"ktls\"");
	} else {
		if (tx0 >= 0) {
			ASSERT_EQ(tx1, tx0);
			ASSERT_EQ(rx1, rx0);
		}
		ASSERT_EQ(json_num(rep, "ktls_connections"), 0);
		ASSERT_STRSTR(rep, "\"path\":\"userspace\"");
	}
}

/*
 * A resumed TLS 1.3 handshake: clawd hands out a fresh ticket after it (one
 * record under the server's application key, like a full handshake's), and
 * kTLS must still engage with the record sequence counted right both ways.
 */
static void resumed_keepalive(const struct variant *v)
{
	struct conn c = { -1, NULL };
	SSL_SESSION *sess;
	long tx0, rx0, tx1, rx1;
	int reused;

	wait_idle();
	if (!have_ulp) {
		if (require)
			TEST_FAIL_("kernel has no TLS ULP (is tls.ko loaded?)");
		SKIP("kernel has no TLS ULP");
	}
	if (tls_connect(&c, v->version) || !get_small(&c)) {
		tls_close(&c);
		TEST_FAIL_("first connection failed");
	}
	sess = SSL_get1_session(c.ssl); /* the ticket arrived before the response */
	/* A clean end, or SSL_free marks the session not resumable (as s_time does). */
	SSL_set_shutdown(c.ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	tls_close(&c);
	ASSERT_TRUE(sess && SSL_SESSION_is_resumable(sess));
	wait_idle();
	tx0 = e2e_tls_stat("TlsCurrTxSw");
	rx0 = e2e_tls_stat("TlsCurrRxSw");
	c.fd = e2e_connect_port(cd_port);
	c.ssl = c.fd >= 0 ? SSL_new(cli_ctx) : NULL;
	if (!c.ssl) {
		SSL_SESSION_free(sess);
		tls_close(&c);
		TEST_FAIL_("second connection failed");
	}
	SSL_set_min_proto_version(c.ssl, v->version);
	SSL_set_max_proto_version(c.ssl, v->version);
	SSL_set_tlsext_host_name(c.ssl, "vm.test");
	SSL_set_session(c.ssl, sess);
	SSL_SESSION_free(sess);
	SSL_set_fd(c.ssl, c.fd);
	if (SSL_connect(c.ssl) != 1) {
		tls_close(&c);
		TEST_FAIL_("resumed handshake failed");
	}
	reused = SSL_session_reused(c.ssl);
	for (int i = 0; i < 5; i++)
		if (!get_small(&c)) {
			tls_close(&c);
			TEST_FAIL_("request %d after the resumed handshake failed", i);
		}
	tx1 = e2e_tls_stat("TlsCurrTxSw");
	rx1 = e2e_tls_stat("TlsCurrRxSw");
	printf("# %s resumed: reused %d, TlsCurrTxSw %ld -> %ld, TlsCurrRxSw %ld -> %ld\n", v->name,
	       reused, tx0, tx1, rx0, rx1);
	tls_close(&c);
	ASSERT_EQ(reused, 1);
	ASSERT_EQ(tx1, tx0 + 1);
	ASSERT_EQ(rx1, rx0 + 1);
}

/* big_bytes up and down through one connection, hashes equal. */
static void big_body(const struct variant *v)
{
	struct conn c = { -1, NULL };
	char want[65], got[65];
	struct timespec t0, t1;

	if (v->ktls && !have_ulp)
		SKIP("kernel has no TLS ULP");
	e2e_pattern_sha256(big_bytes, want);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (tls_connect(&c, v->version) || !get_small(&c)) {
		tls_close(&c);
		TEST_FAIL_("handshake or first request failed");
	}
	if (!post_big(&c, got)) {
		tls_close(&c);
		TEST_FAIL_("POST of %zu bytes failed", big_bytes);
	}
	ASSERT_STREQ(got, want);
	if (!get_big(&c, got)) {
		tls_close(&c);
		TEST_FAIL_("GET of %zu bytes failed", big_bytes);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	tls_close(&c);
	printf("# %s: %zu MiB up and down in %.1f s (TCG: correctness only)\n", v->name, big_bytes >> 20,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	ASSERT_STREQ(got, want);
}

/* A TLS 1.3 KeyUpdate on a kTLS connection: clawd closes it and counts it; others go on. */
static void keyupdate_refused(const struct variant *v)
{
	struct conn c = { -1, NULL };
	char rep[8192], b[16];
	long long before;
	size_t r;

	if (!have_ulp)
		SKIP("kernel has no TLS ULP");
	control("{\"cmd\":\"tls.status\"}\n", rep, sizeof(rep));
	before = json_num(rep, "ktls_keyupdate_failures");
	if (tls_connect(&c, TLS1_3_VERSION) || !get_small(&c) || !get_small(&c)) {
		tls_close(&c);
		TEST_FAIL_("setup failed");
	}
	SSL_key_update(c.ssl, SSL_KEY_UPDATE_NOT_REQUESTED);
	/* The KeyUpdate goes out with the next write; the answer must be the end of the connection. */
	e2e_ssl_write_all(c.ssl, "GET / HTTP/1.1\r\nHost: vm.test\r\n\r\n", 34);
	int rd = SSL_read_ex(c.ssl, b, sizeof(b), &r);
	tls_close(&c);
	ASSERT_EQ(rd, 0);
	control("{\"cmd\":\"tls.status\"}\n", rep, sizeof(rep));
	ASSERT_EQ(json_num(rep, "ktls_keyupdate_failures"), before + 1);
	if (tls_connect(&c, TLS1_3_VERSION) || !get_small(&c)) {
		tls_close(&c);
		TEST_FAIL_("clawd stopped serving after the KeyUpdate");
	}
	tls_close(&c);
}

int main(void)
{
	static const struct variant on[] = {
		{ "ktls_tls13", TLS1_3_VERSION, true },
		{ "ktls_tls12", TLS1_2_VERSION, true },
	};
	static const struct variant off[] = {
		{ "userspace_tls13", TLS1_3_VERSION, false },
		{ "userspace_tls12", TLS1_2_VERSION, false },
	};
	const char *req = getenv("KTLS_PROBE_REQUIRE"), *mib = getenv("TLS_E2E_MIB");
	char why[64], name[96];
	pthread_t th;
	int lfd;

	signal(SIGPIPE, SIG_IGN);
	require = req && !strcmp(req, "1");
	big_bytes = (size_t)(mib ? atoi(mib) : BIG_MIB_DEFAULT) << 20;
	mkdir(DIR_, 0700);
	have_ulp = access("/proc/net/tls_stat", R_OK) == 0;
	snprintf(why, sizeof(why), "%s", have_ulp ? "present" : "absent");
	printf("# /proc/net/tls_stat %s; bodies of %zu MiB\n", why, big_bytes >> 20);
	cli_ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_verify(cli_ctx, SSL_VERIFY_NONE, NULL);
	lfd = e2e_listen_any(&be_port);
	if (lfd < 0 || pthread_create(&th, NULL, be_loop, (void *)(intptr_t)lfd) || make_cert()) {
		printf("not ok 1 - setup: backend or certificate\n1..1\n");
		return 1;
	}
	const struct variant *sets[2] = { on, off };
	const char *modes[2] = { "auto", "off" };

	for (int s = 0; s < 2; s++) {
		if (start_clawd(modes[s])) {
			printf("not ok - clawd (ktls: %s) did not start; see " DIR_ "/clawd.log\n", modes[s]);
			e2e_clawd_stop(&cd_pid);
			return 1;
		}
		for (int i = 0; i < 2; i++) {
			snprintf(name, sizeof(name), "%s_keepalive_requests", sets[s][i].name);
			RUN_NAMED(name, keepalive, &sets[s][i]);
			snprintf(name, sizeof(name), "%s_%zu_MiB_up_and_down_hash_equal", sets[s][i].name,
				 big_bytes >> 20);
			RUN_NAMED(name, big_body, &sets[s][i]);
		}
		if (s == 0)
			RUN_NAMED("ktls_tls13_peer_keyupdate_closes_safely_and_counts", keyupdate_refused, &on[0]);
		if (s == 0)
			RUN_NAMED("ktls_tls13_resumed_handshake_engages_tx_and_rx", resumed_keepalive, &on[0]);
		e2e_clawd_stop(&cd_pid);
	}
	if (test__failed)
		e2e_clawd_log(DIR_ "/clawd.log");
	SSL_CTX_free(cli_ctx);
	return test_done();
}
