/* vmtest/upstream_tls_e2e.c — clawd re-encrypting to a TLS backend on a kernel with kTLS: kTLS engaged on the upstream socket (tls_stat and clawd's metrics), big bodies hash equal, a backend KeyUpdate fails safely, ktls: off stays in userspace. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "e2e_util.h"
#include "test.h"

/*
 * No python in the guest: this program is the HTTP client (plain, to clawd),
 * the TLS backend (OpenSSL server threads, one listener capped at TLS 1.2)
 * and the CA. clawd (CLAWD, default /vmtest/bin/clawd) runs once per
 * variant with one pool `be` whose `tls:` verifies the backend against the
 * self-signed certificate. With ktls: auto every kTLS assertion must hold
 * when the kernel has the TLS ULP (else they skip, unless
 * KTLS_PROBE_REQUIRE=1); with ktls: off the same traffic must pass and the
 * kernel counters must not move. UPTLS_E2E_MIB sets the body size of the
 * TLS 1.3 kTLS variant (default 100); the others use a third of it.
 */

#define DIR_ "/tmp/uptls_e2e"
#define BIG_MIB_DEFAULT 100

struct backend {
	int lfd, port;
	SSL_CTX *ctx;
};

static struct backend be13, be12;
static int cd_port, admin_port;
static pid_t cd_pid = -1;
static bool have_ulp, require;

/* ---- the TLS backend: keep-alive; POST answers the body's SHA-256, GET /big/N sends N pattern bytes, GET /keyupdate rekeys first ---- */

static bool ssl_read_head(SSL *s, char *buf, size_t cap)
{
	size_t n = 0, r;

	while (n + 1 < cap) {
		if (SSL_read_ex(s, buf + n, 1, &r) != 1)
			return false;
		n += r;
		if (n >= 4 && !memcmp(buf + n - 4, "\r\n\r\n", 4)) {
			buf[n] = '\0';
			return true;
		}
	}
	return false;
}

static void *be_conn(void *arg)
{
	SSL *s = arg;
	uint8_t buf[65536];
	char head[8192], resp[256], sum[65];

	if (SSL_accept(s) != 1)
		goto out;
	while (ssl_read_head(s, head, sizeof(head))) {
		const char *cl = strcasestr(head, "content-length:");
		unsigned long long len = cl ? strtoull(cl + 15, NULL, 10) : 0;
		size_t r;

		if (!strncmp(head, "POST", 4)) {
			EVP_MD_CTX *m = e2e_sha256_begin();

			while (len) {
				if (SSL_read_ex(s, buf, len < sizeof(buf) ? len : sizeof(buf), &r) != 1)
					break;
				EVP_DigestUpdate(m, buf, r);
				len -= r;
			}
			e2e_sha256_end(m, sum);
			snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n%s", sum);
			if (!e2e_ssl_write_all(s, resp, strlen(resp)))
				break;
		} else if (!strncmp(head, "GET /big/", 9)) {
			size_t n = strtoull(head + 9, NULL, 10);
			int k = snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);

			if (!e2e_ssl_write_all(s, resp, (size_t)k))
				break;
			for (size_t off = 0; off < n; off += sizeof(buf)) {
				size_t c = n - off < sizeof(buf) ? n - off : sizeof(buf);

				e2e_pattern(buf, c, off);
				if (!e2e_ssl_write_all(s, buf, c))
					goto out;
			}
		} else {
			static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

			/* The KeyUpdate goes out ahead of the answer, under the old key. */
			if (strstr(head, "GET /keyupdate"))
				SSL_key_update(s, SSL_KEY_UPDATE_NOT_REQUESTED);
			if (!e2e_ssl_write_all(s, ok, sizeof(ok) - 1))
				break;
		}
	}
out:
	close(SSL_get_fd(s));
	SSL_free(s);
	return NULL;
}

static void *be_loop(void *arg)
{
	struct backend *b = arg;

	for (;;) {
		int fd = accept(b->lfd, NULL, NULL);
		pthread_t th;
		SSL *s;

		if (fd < 0)
			continue;
		s = SSL_new(b->ctx);
		if (!s || !SSL_set_fd(s, fd) || pthread_create(&th, NULL, be_conn, s)) {
			SSL_free(s);
			close(fd);
			continue;
		}
		pthread_detach(th);
	}
	return NULL;
}

/* ---- certificate: a self-signed P-256 leaf for "vm.test", also the pool's ca ---- */

static int make_cert(void)
{
	EVP_PKEY *pk;
	X509 *x;

	if (e2e_self_signed("vm.test", "vm.test", DIR_ "/cert.pem", &pk, &x))
		return -1;
	for (int i = 0; i < 2; i++) {
		SSL_CTX *c = SSL_CTX_new(TLS_server_method());

		if (!c || SSL_CTX_use_certificate(c, x) != 1 || SSL_CTX_use_PrivateKey(c, pk) != 1)
			return -1;
		SSL_CTX_set_max_proto_version(c, i ? TLS1_2_VERSION : TLS1_3_VERSION);
		(i ? &be12 : &be13)->ctx = c;
	}
	X509_free(x);
	EVP_PKEY_free(pk);
	return 0;
}

/* ---- clawd ---- */

static int start_clawd(const char *ktls, int be_port)
{
	char path[] = DIR_ "/clawd.yaml";
	FILE *f;

	cd_port = e2e_free_port();
	admin_port = e2e_free_port();
	f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f,
		"workers: 1\n"
		"control:\n  socket: " DIR_ "/ctl.sock\n"
		"admin:\n  address: 127.0.0.1:%d\n"
		"listeners:\n  - name: web\n    address: 127.0.0.1:%d\n"
		"upstreams:\n  - name: be\n    servers:\n      - address: 127.0.0.1:%d\n"
		"    tls:\n      ca: " DIR_ "/cert.pem\n      sni: vm.test\n      ktls: %s\n"
		"routes:\n  - name: all\n    upstream: be\n    max_body: 0\n",
		admin_port, cd_port, be_port, ktls);
	fclose(f);
	return e2e_clawd_start(path, DIR_ "/clawd.log", cd_port, &cd_pid);
}

/* A counter of clawd's /metrics ("name{labels}" exactly), -1 when absent. */
static long long metric(const char *series)
{
	static char body[1 << 18];
	static const char req[] = "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
	int fd = e2e_connect_port(admin_port);
	size_t n = 0, sl = strlen(series);
	const char *p;

	if (fd < 0 || !e2e_send_all(fd, req, sizeof(req) - 1)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (ssize_t k; n + 1 < sizeof(body) && (k = recv(fd, body + n, sizeof(body) - n - 1, 0)) > 0;)
		n += (size_t)k;
	body[n] = '\0';
	close(fd);
	for (p = body; (p = strstr(p, series)); p += sl)
		if ((p == body || p[-1] == '\n') && p[sl] == ' ')
			return strtoll(p + sl + 1, NULL, 10);
	return -1;
}

/* ---- the client: plain HTTP/1.1 to clawd ---- */

/* Reads a response head; its status, and Content-Length in *len (-1 when absent). */
static int read_head(int fd, long long *len)
{
	char h[4096];
	size_t n = 0;

	*len = -1;
	while (n + 1 < sizeof(h)) {
		if (recv(fd, h + n, 1, 0) != 1)
			return -1;
		n++;
		if (n >= 4 && !memcmp(h + n - 4, "\r\n\r\n", 4))
			break;
	}
	h[n] = '\0';
	if (strncmp(h, "HTTP/1.1 ", 9))
		return -1;
	const char *cl = strcasestr(h, "content-length:");

	if (cl)
		*len = strtoll(cl + 15, NULL, 10);
	return atoi(h + 9);
}

static bool recv_all(int fd, void *p, size_t n)
{
	char *c = p;

	while (n) {
		ssize_t k = recv(fd, c, n, 0);

		if (k <= 0)
			return false;
		c += k;
		n -= (size_t)k;
	}
	return true;
}

/* GET path: its status (the body must be "hello" for a 200), -1 when the connection failed. */
static int get_small(int fd, const char *path)
{
	char req[128], body[8];
	long long len;
	int st;

	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: vm.test\r\n\r\n", path);
	if (!e2e_send_all(fd, req, strlen(req)) || (st = read_head(fd, &len)) < 0)
		return -1;
	if (len < 0 || len > (long long)sizeof(body) || !recv_all(fd, body, (size_t)len))
		return -1;
	return st == 200 && (len != 5 || memcmp(body, "hello", 5)) ? -1 : st;
}

static bool post_big(int fd, size_t bytes, char got[65])
{
	char head[128];
	uint8_t buf[65536];
	long long len;

	snprintf(head, sizeof(head), "POST /up HTTP/1.1\r\nHost: vm.test\r\nContent-Length: %zu\r\n\r\n",
		 bytes);
	if (!e2e_send_all(fd, head, strlen(head)))
		return false;
	for (size_t off = 0; off < bytes; off += sizeof(buf)) {
		size_t k = bytes - off < sizeof(buf) ? bytes - off : sizeof(buf);

		e2e_pattern(buf, k, off);
		if (!e2e_send_all(fd, buf, k))
			return false;
	}
	if (read_head(fd, &len) != 200 || len != 64 || !recv_all(fd, got, 64))
		return false;
	got[64] = '\0';
	return true;
}

static bool get_big(int fd, size_t bytes, char got[65])
{
	EVP_MD_CTX *m = e2e_sha256_begin();
	uint8_t buf[65536];
	char req[128];
	long long left;

	snprintf(req, sizeof(req), "GET /big/%zu HTTP/1.1\r\nHost: vm.test\r\n\r\n", bytes);
	if (!e2e_send_all(fd, req, strlen(req)) || read_head(fd, &left) != 200 || left != (long long)bytes) {
		EVP_MD_CTX_free(m);
		return false;
	}
	while (left > 0) {
		ssize_t k = recv(fd, buf, left < (long long)sizeof(buf) ? (size_t)left : sizeof(buf), 0);

		if (k <= 0)
			break;
		EVP_DigestUpdate(m, buf, (size_t)k);
		left -= k;
	}
	e2e_sha256_end(m, got);
	return left == 0;
}

/* ---- subtests ---- */

struct variant {
	const char *name;
	struct backend *be;
	bool ktls;    /* the pool has ktls: auto (else off) */
	size_t bytes; /* body size each way */
};

#define ON_SERIES "openclaw_upstream_ktls_total{upstream=\"be\",state=\"on\"}"
#define OFF_SERIES "openclaw_upstream_ktls_total{upstream=\"be\",state=\"off\"}"
#define KU_SERIES "openclaw_upstream_ktls_failures_total{upstream=\"be\",reason=\"keyupdate\"}"

/* Requests over one pooled backend connection; kTLS engaged on it (or not) as the variant says. */
static void keepalive(const struct variant *v)
{
	long tx0 = e2e_tls_stat("TlsTxSw"), rx0 = e2e_tls_stat("TlsRxSw"), tx1, rx1;
	int fd;

	if (v->ktls && !have_ulp) {
		if (require)
			TEST_FAIL_("kernel has no TLS ULP (is tls.ko loaded?)");
		SKIP("kernel has no TLS ULP");
	}
	fd = e2e_connect_port(cd_port);
	if (fd < 0)
		TEST_FAIL_("cannot connect to clawd");
	for (int i = 0; i < 5; i++)
		if (get_small(fd, "/") != 200) {
			close(fd);
			TEST_FAIL_("request %d failed", i);
		}
	close(fd);
	tx1 = e2e_tls_stat("TlsTxSw");
	rx1 = e2e_tls_stat("TlsRxSw");
	printf("# %s: TlsTxSw %ld -> %ld, TlsRxSw %ld -> %ld; clawd upstream kTLS on %lld off %lld\n",
	       v->name, tx0, tx1, rx0, rx1, metric(ON_SERIES), metric(OFF_SERIES));
	if (v->ktls) {
		ASSERT_EQ(tx1, tx0 + 1);
		ASSERT_EQ(rx1, rx0 + 1);
		ASSERT_EQ(metric(ON_SERIES), 1);
		ASSERT_EQ(metric(OFF_SERIES), 0);
	} else {
		if (tx0 >= 0) {
			ASSERT_EQ(tx1, tx0);
			ASSERT_EQ(rx1, rx0);
		}
		ASSERT_EQ(metric(ON_SERIES), 0);
		ASSERT_EQ(metric(OFF_SERIES), 1);
	}
}

/* v->bytes up and down through the pooled backend connection, hashes equal, no decrypt errors. */
static void big_body(const struct variant *v)
{
	long dec0 = e2e_tls_stat("TlsDecryptError");
	char want[65], got[65];
	struct timespec t0, t1;
	int fd;

	if (v->ktls && !have_ulp)
		SKIP("kernel has no TLS ULP");
	e2e_pattern_sha256(v->bytes, want);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	fd = e2e_connect_port(cd_port);
	if (fd < 0 || get_small(fd, "/") != 200) {
		if (fd >= 0)
			close(fd);
		TEST_FAIL_("first request failed");
	}
	if (!post_big(fd, v->bytes, got)) {
		close(fd);
		TEST_FAIL_("POST of %zu bytes failed", v->bytes);
	}
	ASSERT_STREQ(got, want);
	if (!get_big(fd, v->bytes, got)) {
		close(fd);
		TEST_FAIL_("GET of %zu bytes failed", v->bytes);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	close(fd);
	printf("# %s: %zu MiB up and down in %.1f s (TCG: correctness only)\n", v->name, v->bytes >> 20,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	ASSERT_STREQ(got, want);
	ASSERT_EQ(e2e_tls_stat("TlsDecryptError"), dec0);
	/* Still the one backend connection, in the kernel or not as before. */
	ASSERT_EQ(metric(v->ktls ? ON_SERIES : OFF_SERIES), 1);
}

/*
 * The backend sends a KeyUpdate ahead of an answer on the kTLS connection:
 * clawd closes that connection, counts it, and goes on serving. (The
 * client's answer is not asserted: a retry on a fresh connection may find
 * the KeyUpdate still in userspace, where OpenSSL follows it.)
 */
static void keyupdate(const struct variant *v)
{
	long long before;
	int fd, st;

	if (!have_ulp)
		SKIP("kernel has no TLS ULP");
	before = metric(KU_SERIES);
	fd = e2e_connect_port(cd_port);
	if (fd < 0 || get_small(fd, "/") != 200) {
		if (fd >= 0)
			close(fd);
		TEST_FAIL_("setup request failed");
	}
	st = get_small(fd, "/keyupdate");
	close(fd);
	printf("# %s: GET /keyupdate answered %d; keyupdate failures %lld -> %lld\n", v->name, st, before,
	       metric(KU_SERIES));
	ASSERT_EQ(before, 0);
	ASSERT_GE(metric(KU_SERIES), 1);
	fd = e2e_connect_port(cd_port);
	st = fd >= 0 ? get_small(fd, "/") : -1;
	if (fd >= 0)
		close(fd);
	ASSERT_EQ(st, 200);
}

int main(void)
{
	const char *req = getenv("KTLS_PROBE_REQUIRE"), *mib = getenv("UPTLS_E2E_MIB");
	size_t big = (size_t)(mib ? atoi(mib) : BIG_MIB_DEFAULT) << 20;
	const struct variant vs[] = {
		{ "ktls_tls13", &be13, true, big },
		{ "ktls_tls12", &be12, true, big / 3 },
		{ "userspace_tls13", &be13, false, big / 3 },
	};
	char name[128];
	pthread_t th;

	signal(SIGPIPE, SIG_IGN);
	require = req && !strcmp(req, "1");
	mkdir(DIR_, 0700);
	have_ulp = access("/proc/net/tls_stat", R_OK) == 0;
	printf("# /proc/net/tls_stat %s; bodies of %zu MiB (TLS 1.3 kTLS) and %zu MiB\n",
	       have_ulp ? "present" : "absent", big >> 20, (big / 3) >> 20);
	if (make_cert() || (be13.lfd = e2e_listen_any(&be13.port)) < 0 ||
	    (be12.lfd = e2e_listen_any(&be12.port)) < 0 || pthread_create(&th, NULL, be_loop, &be13) ||
	    pthread_create(&th, NULL, be_loop, &be12)) {
		printf("not ok 1 - setup: backend or certificate\n1..1\n");
		return 1;
	}
	for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
		const struct variant *v = &vs[i];

		if (start_clawd(v->ktls ? "auto" : "off", v->be->port)) {
			printf("not ok - clawd (%s) did not start; see " DIR_ "/clawd.log\n", v->name);
			e2e_clawd_stop(&cd_pid);
			return 1;
		}
		snprintf(name, sizeof(name), "%s_upstream_keepalive_requests", v->name);
		RUN_NAMED(name, keepalive, v);
		snprintf(name, sizeof(name), "%s_upstream_%zu_MiB_up_and_down_hash_equal", v->name,
			 v->bytes >> 20);
		RUN_NAMED(name, big_body, v);
		if (i == 0)
			RUN_NAMED("ktls_tls13_upstream_keyupdate_fails_safely_and_counts", keyupdate, v);
		e2e_clawd_stop(&cd_pid);
	}
	if (test__failed)
		e2e_clawd_log(DIR_ "/clawd.log");
	return test_done();
}
