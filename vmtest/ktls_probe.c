/* vmtest/ktls_probe.c — proves the kernel TLS path clawd uses: TLS ULP, TX/RX keys (TLS 1.2/1.3), records checked against OpenSSL, control records, decrypt errors, /proc/net/tls_stat. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <linux/tls.h>
#include <openssl/evp.h>

#include "test.h"

/*
 * Runs anywhere: on a kernel without the TLS ULP every subtest is skipped,
 * unless KTLS_PROBE_REQUIRE=1 (set by the vmtest guest, whose kernel has
 * CONFIG_TLS=m), where a missing ULP is a failure: the point of the guest is
 * to prove the path exists.
 *
 * The keys are dummies: what is proved is the kernel's record layer and the
 * crypto_info layout (salt/iv split, record sequence) that clawd fills from
 * OpenSSL's traffic secrets, not a handshake.
 */

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define REC_DATA 23      /* TLS content type application_data */
#define REC_HANDSHAKE 22 /* TLS content type handshake (KeyUpdate travels in one) */
#define TAG_LEN 16
#define REC_MAX (5 + 16384 + 256)

static bool have_ulp, require;

/* One kernel crypto_info of any supported cipher. */
union tls_info {
	struct tls_crypto_info base;
	struct tls12_crypto_info_aes_gcm_128 gcm128;
	struct tls12_crypto_info_aes_gcm_256 gcm256;
	struct tls12_crypto_info_chacha20_poly1305 chacha;
};

/* A (version, cipher) pair to exercise. */
struct suite {
	const char *name;  /* subtest name */
	uint16_t version;  /* TLS_1_2_VERSION / TLS_1_3_VERSION */
	uint16_t cipher;   /* TLS_CIPHER_* */
};

#define NEED_KTLS()                                                                       \
	do {                                                                              \
		if (!have_ulp) {                                                          \
			if (require)                                                      \
				TEST_FAIL_("kernel has no TLS ULP (is tls.ko loaded?)");  \
			SKIP("kernel has no TLS ULP (CONFIG_TLS off)");                   \
		}                                                                         \
	} while (0)

/*
 * Fills *u with dummy key material derived from seed (so two seeds give two
 * different keys) and a zero record sequence; returns its size for setsockopt.
 */
static socklen_t fill_info(union tls_info *u, uint16_t version, uint16_t cipher, uint8_t seed)
{
	uint8_t *key, *iv, *salt;
	size_t klen, ivlen, saltlen;
	socklen_t size;

	memset(u, 0, sizeof(*u));
	u->base.version = version;
	u->base.cipher_type = cipher;
	switch (cipher) {
	case TLS_CIPHER_AES_GCM_256:
		key = u->gcm256.key, iv = u->gcm256.iv, salt = u->gcm256.salt;
		klen = sizeof(u->gcm256.key), ivlen = sizeof(u->gcm256.iv), saltlen = sizeof(u->gcm256.salt);
		size = sizeof(u->gcm256);
		break;
	case TLS_CIPHER_CHACHA20_POLY1305:
		key = u->chacha.key, iv = u->chacha.iv, salt = u->chacha.salt;
		klen = sizeof(u->chacha.key), ivlen = sizeof(u->chacha.iv), saltlen = sizeof(u->chacha.salt);
		size = sizeof(u->chacha);
		break;
	default:
		key = u->gcm128.key, iv = u->gcm128.iv, salt = u->gcm128.salt;
		klen = sizeof(u->gcm128.key), ivlen = sizeof(u->gcm128.iv), saltlen = sizeof(u->gcm128.salt);
		size = sizeof(u->gcm128);
		break;
	}
	for (size_t i = 0; i < klen; i++)
		key[i] = (uint8_t)(seed + i);
	for (size_t i = 0; i < ivlen; i++)
		iv[i] = (uint8_t)((seed ^ 0x5a) + 3 * i);
	for (size_t i = 0; i < saltlen; i++)
		salt[i] = (uint8_t)((seed ^ 0xa5) + 7 * i);
	return size;
}

/* Installs a TX or RX key (TLS_TX / TLS_RX) on fd; negative errno on refusal. */
static int set_key(int fd, int dir, uint16_t version, uint16_t cipher, uint8_t seed)
{
	union tls_info u;
	socklen_t len = fill_info(&u, version, cipher, seed);

	return setsockopt(fd, SOL_TLS, dir, &u, len) ? -errno : 0;
}

static int set_ulp(int fd)
{
	return setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) ? -errno : 0;
}

static void close_pair(int fds[2])
{
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	fds[0] = fds[1] = -1;
}

/*
 * A connected TCP pair over loopback: fds[0] the client, fds[1] the server.
 * Both get a 5 s receive timeout so a kernel that swallows a record fails the
 * subtest instead of hanging the guest.
 */
static int tcp_pair(int fds[2])
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 5 };
	socklen_t len = sizeof(sa);
	int lfd, one = 1, err = 0;

	fds[0] = fds[1] = -1;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len)) {
		err = -errno;
		goto out;
	}
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&sa, sizeof(sa))) {
		err = -errno;
		goto out;
	}
	fds[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fds[1] < 0) {
		err = -errno;
		goto out;
	}
	for (int i = 0; i < 2; i++)
		if (setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
		    setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv))) {
			err = -errno;
			goto out;
		}
out:
	close(lfd);
	if (err)
		close_pair(fds);
	return err;
}

/* Reads exactly n bytes; 0, or negative errno (-EPIPE on early EOF). */
static int read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EPIPE;
		got += (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t w = write(fd, (const char *)buf + done, n - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		done += (size_t)w;
	}
	return 0;
}

/* ---- AES-128-GCM records built and opened in userspace with OpenSSL -------- */

/* The 12-byte nonce of record seq: TLS 1.3 XORs the sequence into salt||iv; TLS 1.2 sends salt||explicit. */
static void rec_nonce(uint8_t nonce[12], const struct tls12_crypto_info_aes_gcm_128 *k, uint16_t version,
		      uint64_t seq, const uint8_t *explicit_nonce)
{
	memcpy(nonce, k->salt, 4);
	if (version == TLS_1_2_VERSION) {
		memcpy(nonce + 4, explicit_nonce, 8);
		return;
	}
	memcpy(nonce + 4, k->iv, 8);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
}

/* TLS 1.2 additional data: seq, type, version, plaintext length. */
static void aad12(uint8_t aad[13], uint64_t seq, uint8_t type, size_t ptlen)
{
	for (int i = 0; i < 8; i++)
		aad[i] = (uint8_t)(seq >> (56 - 8 * i));
	aad[8] = type;
	aad[9] = 3, aad[10] = 3;
	aad[11] = (uint8_t)(ptlen >> 8), aad[12] = (uint8_t)ptlen;
}

/* AES-128-GCM in one call; enc=1 seals (writes tag), enc=0 opens (checks tag). 0 or -EBADMSG. */
static int gcm(int enc, const uint8_t *key, const uint8_t nonce[12], const uint8_t *aad, size_t aadlen,
	       const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[TAG_LEN])
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n, ok;

	ok = c && EVP_CipherInit_ex(c, EVP_aes_128_gcm(), NULL, key, nonce, enc) &&
	     EVP_CipherUpdate(c, NULL, &n, aad, (int)aadlen) &&
	     (len == 0 || EVP_CipherUpdate(c, out, &n, in, (int)len)) &&
	     (enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag)) &&
	     EVP_CipherFinal_ex(c, out + len, &n) &&
	     (!enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag));
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -EBADMSG;
}

/* Builds one application-data record of pt with key k at seq; returns its length. */
static size_t rec_seal(uint8_t *rec, const struct tls12_crypto_info_aes_gcm_128 *k, uint16_t version,
		       uint64_t seq, const char *pt)
{
	size_t ptlen = strlen(pt), len;
	uint8_t nonce[12], aad[13], inner[256];
	uint8_t *body = rec + 5;

	rec[0] = REC_DATA, rec[1] = 3, rec[2] = 3;
	if (version == TLS_1_3_VERSION) {
		/* inner plaintext = content || real type; the outer header is the AAD */
		memcpy(inner, pt, ptlen);
		inner[ptlen] = REC_DATA;
		len = ptlen + 1 + TAG_LEN;
		rec[3] = (uint8_t)(len >> 8), rec[4] = (uint8_t)len;
		rec_nonce(nonce, k, version, seq, NULL);
		if (gcm(1, k->key, nonce, rec, 5, inner, ptlen + 1, body, body + ptlen + 1))
			return 0;
	} else {
		/* explicit nonce on the wire; any unique value works, use the sequence */
		for (int i = 0; i < 8; i++)
			body[i] = (uint8_t)(seq >> (56 - 8 * i));
		len = 8 + ptlen + TAG_LEN;
		rec[3] = (uint8_t)(len >> 8), rec[4] = (uint8_t)len;
		rec_nonce(nonce, k, version, seq, body);
		aad12(aad, seq, REC_DATA, ptlen);
		if (gcm(1, k->key, nonce, aad, sizeof(aad), (const uint8_t *)pt, ptlen, body + 8, body + 8 + ptlen))
			return 0;
	}
	return 5 + len;
}

/*
 * Reads one record from fd and opens it with key k at seq: plaintext into out
 * (NUL-terminated), content type into *type. 0 or negative errno.
 */
static int rec_open(int fd, const struct tls12_crypto_info_aes_gcm_128 *k, uint16_t version, uint64_t seq,
		    char *out, size_t outlen, uint8_t *type)
{
	uint8_t rec[REC_MAX], nonce[12], aad[13], *body = rec + 5;
	size_t len, ptlen;
	int err;

	err = read_full(fd, rec, 5);
	if (err)
		return err;
	len = (size_t)rec[3] << 8 | rec[4];
	if (rec[0] != REC_DATA || rec[1] != 3 || rec[2] != 3 || len > REC_MAX - 5 ||
	    len < TAG_LEN + (version == TLS_1_2_VERSION ? 8 : 1))
		return -EPROTO;
	err = read_full(fd, body, len);
	if (err)
		return err;
	if (version == TLS_1_3_VERSION) {
		ptlen = len - TAG_LEN;
		if (ptlen > outlen)
			return -EMSGSIZE;
		rec_nonce(nonce, k, version, seq, NULL);
		if (gcm(0, k->key, nonce, rec, 5, body, ptlen, (uint8_t *)out, body + ptlen))
			return -EBADMSG;
		while (ptlen > 0 && out[ptlen - 1] == 0) /* strip padding */
			ptlen--;
		if (ptlen == 0)
			return -EPROTO;
		*type = (uint8_t)out[--ptlen];
	} else {
		ptlen = len - 8 - TAG_LEN;
		if (ptlen > outlen)
			return -EMSGSIZE;
		rec_nonce(nonce, k, version, seq, body);
		aad12(aad, seq, rec[0], ptlen);
		if (gcm(0, k->key, nonce, aad, sizeof(aad), body + 8, ptlen, (uint8_t *)out, body + 8 + ptlen))
			return -EBADMSG;
		*type = rec[0];
	}
	out[ptlen] = '\0';
	return 0;
}

/* ---- /proc/net/tls_stat ----------------------------------------------------- */

/* The value of counter name, or -1 when the file or the counter is absent. */
static long long tls_stat(const char *name)
{
	FILE *f = fopen("/proc/net/tls_stat", "re");
	char key[64];
	long long v, found = -1;

	if (!f)
		return -1;
	while (fscanf(f, "%63s %lld", key, &v) == 2)
		if (!strcmp(key, name)) {
			found = v;
			break;
		}
	fclose(f);
	return found;
}

/* ---- subtests --------------------------------------------------------------- */

static void ulp_available(void)
{
	int fds[2];
	char name[16] = "";
	socklen_t len = sizeof(name);

	NEED_KTLS();
	ASSERT_EQ(tcp_pair(fds), 0);
	ASSERT_EQ(set_ulp(fds[0]), 0);
	ASSERT_EQ(getsockopt(fds[0], IPPROTO_TCP, TCP_ULP, name, &len), 0);
	close_pair(fds);
	ASSERT_STREQ(name, "tls");
}

/*
 * Both sides with kTLS TX and RX (client→server key seed 1, server→client
 * seed 2): writes of assorted sizes (within one record, exactly one full
 * record, spanning several) arrive intact, both ways.
 */
static void roundtrip(const struct suite *s)
{
	static const size_t sizes[] = { 1, 100, 4096, 16384, 16385, 40000, 65536 };
	static char out[65536], in[65536];
	int fds[2], err = 0;

	NEED_KTLS();
	ASSERT_EQ(tcp_pair(fds), 0);
	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (char)(i * 131 + (i >> 9));
	if (set_ulp(fds[0]) || set_ulp(fds[1]))
		err = -errno;
	if (!err)
		err = set_key(fds[0], TLS_TX, s->version, s->cipher, 1);
	if (!err)
		err = set_key(fds[1], TLS_RX, s->version, s->cipher, 1);
	if (!err)
		err = set_key(fds[1], TLS_TX, s->version, s->cipher, 2);
	if (!err)
		err = set_key(fds[0], TLS_RX, s->version, s->cipher, 2);
	for (size_t i = 0; !err && i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int from = (int)(i & 1), to = !from;

		memset(in, 0, sizes[i]);
		err = write_full(fds[from], out, sizes[i]);
		if (!err)
			err = read_full(fds[to], in, sizes[i]);
		if (!err && memcmp(in, out, sizes[i])) {
			printf("#   %zu-byte write arrived altered\n", sizes[i]);
			err = -EBADMSG;
		}
	}
	close_pair(fds);
	ASSERT_EQ(err, 0);
}

/*
 * kTLS TX on the client, no TLS on the server: the records on the wire open
 * with OpenSSL under the same key and sequence numbers 0 and 1. This pins
 * the crypto_info layout (salt = first 4 bytes of the static IV, iv = the
 * other 8) the agent must use when it installs keys itself.
 */
static void tx_matches_openssl(const struct suite *s)
{
	union tls_info k;
	char got[256];
	uint8_t type = 0;
	int fds[2], err;

	NEED_KTLS();
	fill_info(&k, s->version, TLS_CIPHER_AES_GCM_128, 3);
	ASSERT_EQ(tcp_pair(fds), 0);
	err = set_ulp(fds[0]);
	if (!err)
		err = set_key(fds[0], TLS_TX, s->version, TLS_CIPHER_AES_GCM_128, 3);
	if (!err)
		err = write_full(fds[0], "first record", 12);
	if (!err)
		err = rec_open(fds[1], &k.gcm128, s->version, 0, got, sizeof(got) - 1, &type);
	if (err) {
		close_pair(fds);
		ASSERT_EQ(err, 0);
	}
	if (strcmp(got, "first record") || type != REC_DATA) {
		close_pair(fds);
		ASSERT_STREQ(got, "first record");
		ASSERT_EQ(type, REC_DATA);
	}
	err = write_full(fds[0], "second, at sequence one", 23);
	if (!err)
		err = rec_open(fds[1], &k.gcm128, s->version, 1, got, sizeof(got) - 1, &type);
	close_pair(fds);
	ASSERT_EQ(err, 0);
	ASSERT_STREQ(got, "second, at sequence one");
	ASSERT_EQ(type, REC_DATA);
}

/* The reverse: records sealed by OpenSSL (seq 0 and 1) are opened by kTLS RX. */
static void rx_accepts_openssl(const struct suite *s)
{
	union tls_info k;
	uint8_t rec[512];
	char got[64] = "";
	size_t n1, n2;
	int fds[2], err;

	NEED_KTLS();
	fill_info(&k, s->version, TLS_CIPHER_AES_GCM_128, 4);
	n1 = rec_seal(rec, &k.gcm128, s->version, 0, "sealed by openssl");
	n2 = rec_seal(rec + n1, &k.gcm128, s->version, 1, ", then seq 1");
	ASSERT_GT(n1, 0);
	ASSERT_GT(n2, 0);
	ASSERT_EQ(tcp_pair(fds), 0);
	err = set_ulp(fds[1]);
	if (!err)
		err = set_key(fds[1], TLS_RX, s->version, TLS_CIPHER_AES_GCM_128, 4);
	if (!err)
		err = write_full(fds[0], rec, n1 + n2);
	if (!err)
		err = read_full(fds[1], got, 29);
	close_pair(fds);
	ASSERT_EQ(err, 0);
	ASSERT_STREQ(got, "sealed by openssl, then seq 1");
}

/*
 * A non-data record (a TLS 1.3 KeyUpdate travels in a handshake record) is
 * not returned by a plain read: read fails with EIO and the record stays
 * queued until recvmsg with room for a control message takes it, carrying
 * TLS_GET_RECORD_TYPE. This is how the agent sees a peer's KeyUpdate on a
 * kTLS socket. Data records after it still flow.
 */
static void handshake_record_arrives_as_cmsg(void)
{
	static const uint8_t key_update[5] = { 0x18, 0, 0, 1, 0 };
	char cbuf[CMSG_SPACE(sizeof(uint8_t))], got[16] = "";
	uint8_t buf[16], rtype = REC_HANDSHAKE;
	struct iovec iov = { .iov_base = (void *)key_update, .iov_len = sizeof(key_update) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c;
	ssize_t n;
	int fds[2], err, read_errno;

	NEED_KTLS();
	ASSERT_EQ(tcp_pair(fds), 0);
	err = set_ulp(fds[0]);
	if (!err)
		err = set_ulp(fds[1]);
	if (!err)
		err = set_key(fds[0], TLS_TX, TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128, 5);
	if (!err)
		err = set_key(fds[1], TLS_RX, TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128, 5);
	if (err) {
		close_pair(fds);
		ASSERT_EQ(err, 0);
	}
	c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_TLS;
	c->cmsg_type = TLS_SET_RECORD_TYPE;
	c->cmsg_len = CMSG_LEN(sizeof(rtype));
	memcpy(CMSG_DATA(c), &rtype, sizeof(rtype));
	n = sendmsg(fds[0], &m, 0);
	if (n != (ssize_t)sizeof(key_update)) {
		close_pair(fds);
		ASSERT_EQ(n, sizeof(key_update));
	}
	n = read(fds[1], buf, sizeof(buf));
	read_errno = errno;
	if (n != -1 || read_errno != EIO) {
		close_pair(fds);
		ASSERT_EQ(n, -1);
		ASSERT_EQ(read_errno, EIO);
	}
	iov.iov_base = buf, iov.iov_len = sizeof(buf);
	m.msg_controllen = sizeof(cbuf);
	memset(cbuf, 0, sizeof(cbuf));
	n = recvmsg(fds[1], &m, 0);
	c = n > 0 ? CMSG_FIRSTHDR(&m) : NULL;
	rtype = 0;
	if (c && c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE)
		memcpy(&rtype, CMSG_DATA(c), sizeof(rtype));
	err = write_full(fds[0], "after", 5);
	if (!err)
		err = read_full(fds[1], got, 5);
	close_pair(fds);
	ASSERT_EQ(n, sizeof(key_update));
	ASSERT_EQ(memcmp(buf, key_update, sizeof(key_update)), 0);
	ASSERT_EQ(rtype, REC_HANDSHAKE);
	ASSERT_EQ(err, 0);
	ASSERT_STREQ(got, "after");
}

/*
 * A record sealed under another key fails the read with EBADMSG (nothing
 * forged reaches the application) and TlsDecryptError counts it.
 */
static void bad_record_fails_and_counts(void)
{
	union tls_info wrong;
	uint8_t rec[128];
	char buf[64];
	long long before = tls_stat("TlsDecryptError"), after;
	size_t n;
	ssize_t r;
	int fds[2], err, read_errno;

	NEED_KTLS();
	if (before < 0 && require)
		TEST_FAIL_("/proc/net/tls_stat lacks TlsDecryptError");
	if (before < 0)
		SKIP("no /proc/net/tls_stat");
	fill_info(&wrong, TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128, 7);
	n = rec_seal(rec, &wrong.gcm128, TLS_1_3_VERSION, 0, "forged");
	ASSERT_GT(n, 0);
	ASSERT_EQ(tcp_pair(fds), 0);
	err = set_ulp(fds[1]);
	if (!err)
		err = set_key(fds[1], TLS_RX, TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128, 6);
	if (!err)
		err = write_full(fds[0], rec, n);
	r = read(fds[1], buf, sizeof(buf));
	read_errno = errno;
	close_pair(fds);
	after = tls_stat("TlsDecryptError");
	ASSERT_EQ(err, 0);
	ASSERT_EQ(r, -1);
	ASSERT_EQ(read_errno, EBADMSG);
	ASSERT_EQ(after, before + 1);
}

/*
 * The software kTLS counters follow sockets: TlsTxSw/TlsRxSw count
 * installations, TlsCurrTxSw/TlsCurrRxSw the sockets open now and fall back
 * when they close. These are what clawd's kTLS metrics can cross-check.
 */
static void tls_stat_counters_move(void)
{
	static const char *const names[] = { "TlsCurrTxSw", "TlsCurrRxSw", "TlsTxSw", "TlsRxSw" };
	long long before[4], during[4], after[4];
	int fds[2], err;

	NEED_KTLS();
	for (int i = 0; i < 4; i++) {
		before[i] = tls_stat(names[i]);
		if (before[i] < 0 && require)
			TEST_FAIL_("/proc/net/tls_stat lacks %s", names[i]);
		if (before[i] < 0)
			SKIP("no /proc/net/tls_stat");
	}
	ASSERT_EQ(tcp_pair(fds), 0);
	err = set_ulp(fds[0]);
	if (!err)
		err = set_ulp(fds[1]);
	for (int i = 0; !err && i < 2; i++) {
		err = set_key(fds[i], TLS_TX, TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128, 8);
		if (!err)
			err = set_key(fds[i], TLS_RX, TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128, 8);
	}
	for (int i = 0; i < 4; i++)
		during[i] = tls_stat(names[i]);
	close_pair(fds);
	for (int i = 0; i < 4; i++)
		after[i] = tls_stat(names[i]);
	ASSERT_EQ(err, 0);
	for (int i = 0; i < 4; i++) {
		if (during[i] != before[i] + 2)
			TEST_FAIL_("%s with two kTLS sockets open: %lld, expected %lld", names[i], during[i],
				   before[i] + 2);
	}
	ASSERT_EQ(after[0], before[0]); /* TlsCurrTxSw back down after close */
	ASSERT_EQ(after[1], before[1]); /* TlsCurrRxSw */
	ASSERT_EQ(after[2], before[2] + 2); /* TlsTxSw is a running total */
	ASSERT_EQ(after[3], before[3] + 2);
}

int main(void)
{
	static const struct suite suites[] = {
		{ "tls12_aes_gcm_128", TLS_1_2_VERSION, TLS_CIPHER_AES_GCM_128 },
		{ "tls12_aes_gcm_256", TLS_1_2_VERSION, TLS_CIPHER_AES_GCM_256 },
		{ "tls12_chacha20_poly1305", TLS_1_2_VERSION, TLS_CIPHER_CHACHA20_POLY1305 },
		{ "tls13_aes_gcm_128", TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128 },
		{ "tls13_aes_gcm_256", TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_256 },
		{ "tls13_chacha20_poly1305", TLS_1_3_VERSION, TLS_CIPHER_CHACHA20_POLY1305 },
	};
	char name[96];
	const char *req = getenv("KTLS_PROBE_REQUIRE");
	int fds[2];

	signal(SIGPIPE, SIG_IGN);
	require = req && !strcmp(req, "1");
	if (!tcp_pair(fds)) {
		have_ulp = set_ulp(fds[0]) == 0;
		close_pair(fds);
	}
	printf("# kTLS ULP %s, /proc/net/tls_stat %s\n", have_ulp ? "available" : "absent",
	       access("/proc/net/tls_stat", R_OK) ? "absent" : "present");

	RUN(ulp_available);
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
		snprintf(name, sizeof(name), "%s_roundtrip_tx_rx_both_ways", suites[i].name);
		RUN_NAMED(name, roundtrip, &suites[i]);
	}
	RUN_NAMED("tls12_aes_gcm_128_tx_records_open_with_openssl", tx_matches_openssl, &suites[0]);
	RUN_NAMED("tls13_aes_gcm_128_tx_records_open_with_openssl", tx_matches_openssl, &suites[3]);
	RUN_NAMED("tls12_aes_gcm_128_rx_opens_openssl_records", rx_accepts_openssl, &suites[0]);
	RUN_NAMED("tls13_aes_gcm_128_rx_opens_openssl_records", rx_accepts_openssl, &suites[3]);
	RUN(handshake_record_arrives_as_cmsg);
	RUN(bad_record_fails_and_counts);
	RUN(tls_stat_counters_move);
	return test_done();
}
