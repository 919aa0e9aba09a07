/* agent/ktls.c — kernel TLS shared by server and upstream TLS: record counting, key derivation (TLS 1.3 HKDF, TLS 1.2 PRF) and TLS_TX/TLS_RX installation, RX record types. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/tls.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>

#include "ktls.h"
#include "tls.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define REC_CCS 20

_Static_assert(KTLS_TX == TLS_KTLS_TX && KTLS_RX == TLS_KTLS_RX, "one mask for both engines");

/* Fetched once per process, never freed: the KDFs and the kernel probe's verdict. */
static struct {
	pthread_once_t once;
	EVP_KDF *hkdf, *prf;
	bool kernel;
	char why[160];
} g = { .once = PTHREAD_ONCE_INIT };

static void global_init(void)
{
	g.kernel = tls_ktls_probe(g.why, sizeof(g.why)) == 1;
	g.hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	g.prf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
	if (g.kernel && (!g.hkdf || !g.prf)) {
		g.kernel = false;
		snprintf(g.why, sizeof(g.why), "OpenSSL lacks the HKDF or TLS1-PRF KDF");
	}
}

bool ktls_kernel(const char **why)
{
	pthread_once(&g.once, global_init);
	if (why)
		*why = g.why;
	return g.kernel;
}

/* ---- record counting ---------------------------------------------------------- */

void ktls_rec_feed(struct ktls_rec *rc, const uint8_t *p, size_t n)
{
	while (n) {
		if (rc->body_left) {
			size_t k = n < rc->body_left ? n : rc->body_left;

			p += k;
			n -= k;
			rc->body_left -= (uint32_t)k;
			continue;
		}
		rc->hdr[rc->hdr_len++] = *p++;
		n--;
		if (rc->hdr_len < 5)
			continue;
		rc->hdr_len = 0;
		rc->body_left = (uint32_t)rc->hdr[3] << 8 | rc->hdr[4];
		rc->records++;
		if (rc->hdr[0] == REC_CCS)
			rc->since_ccs = 0;
		else
			rc->since_ccs++;
	}
}

/* ---- key log lines ------------------------------------------------------------- */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

size_t ktls_keylog_secret(const char *line, const char *tag, uint8_t *out)
{
	size_t tl = strlen(tag), n = 0;
	const char *p;

	if (strncmp(line, tag, tl) || line[tl] != ' ')
		return 0;
	p = strchr(line + tl + 1, ' '); /* past the client random */
	if (!p)
		return 0;
	p++;
	while (p[0] && p[1] && n < EVP_MAX_MD_SIZE) {
		int hi = hexval(p[0]), lo = hexval(p[1]);

		if (hi < 0 || lo < 0)
			break;
		out[n++] = (uint8_t)(hi << 4 | lo);
		p += 2;
	}
	return n;
}

/* ---- key derivation ------------------------------------------------------------ */

union ktls_info {
	struct tls_crypto_info base;
	struct tls12_crypto_info_aes_gcm_128 gcm128;
	struct tls12_crypto_info_aes_gcm_256 gcm256;
	struct tls12_crypto_info_chacha20_poly1305 chacha;
};

/* HKDF-Expand-Label(secret, label, "", len) of RFC 8446 7.1. */
static int hkdf_label(const EVP_MD *md, const uint8_t *secret, size_t slen, const char *label,
		      uint8_t *out, size_t olen)
{
	uint8_t info[4 + 6 + 16];
	size_t ll = strlen(label), n = 0;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, ok;
	EVP_KDF_CTX *k = EVP_KDF_CTX_new(g.hkdf);
	OSSL_PARAM p[5];

	if (!k)
		return -ENOMEM;
	info[n++] = (uint8_t)(olen >> 8);
	info[n++] = (uint8_t)olen;
	info[n++] = (uint8_t)(6 + ll);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, ll);
	n += ll;
	info[n++] = 0;
	p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)EVP_MD_get0_name(md), 0);
	p[1] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
	p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, slen);
	p[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n);
	p[4] = OSSL_PARAM_construct_end();
	ok = EVP_KDF_derive(k, out, olen, p);
	EVP_KDF_CTX_free(k);
	return ok == 1 ? 0 : -EIO;
}

/* TLS 1.2 key block (RFC 5246 6.3) from the master secret: AEAD, so no MAC keys. */
static int tls12_key_block(SSL *ssl, const EVP_MD *md, uint8_t *out, size_t olen)
{
	uint8_t ms[SSL_MAX_MASTER_KEY_LENGTH], seed[13 + 2 * SSL3_RANDOM_SIZE];
	size_t mslen = SSL_SESSION_get_master_key(SSL_get_session(ssl), ms, sizeof(ms));
	EVP_KDF_CTX *k = EVP_KDF_CTX_new(g.prf);
	OSSL_PARAM p[4];
	int ok;

	if (!k || !mslen) {
		EVP_KDF_CTX_free(k);
		return -EIO;
	}
	memcpy(seed, "key expansion", 13);
	SSL_get_server_random(ssl, seed + 13, SSL3_RANDOM_SIZE);
	SSL_get_client_random(ssl, seed + 13 + SSL3_RANDOM_SIZE, SSL3_RANDOM_SIZE);
	p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)EVP_MD_get0_name(md), 0);
	p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, ms, mslen);
	p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed, sizeof(seed));
	p[3] = OSSL_PARAM_construct_end();
	ok = EVP_KDF_derive(k, out, olen, p);
	EVP_KDF_CTX_free(k);
	OPENSSL_cleanse(ms, sizeof(ms));
	return ok == 1 ? 0 : -EIO;
}

/*
 * Fills a kernel crypto_info: key, the 12-byte nonce base split as the kernel
 * wants it (salt = first 4 bytes for GCM; for TLS 1.2 GCM the other 8 are the
 * explicit nonce, started at the sequence number), and the record sequence.
 */
static socklen_t fill_info(union ktls_info *u, int version, int nid, const uint8_t *key,
			   const uint8_t *iv, uint64_t seq)
{
	uint8_t rs[8];

	for (int i = 0; i < 8; i++)
		rs[i] = (uint8_t)(seq >> (56 - 8 * i));
	memset(u, 0, sizeof(*u));
	u->base.version = version == TLS1_3_VERSION ? TLS_1_3_VERSION : TLS_1_2_VERSION;
	switch (nid) {
	case NID_aes_128_gcm:
		u->base.cipher_type = TLS_CIPHER_AES_GCM_128;
		memcpy(u->gcm128.key, key, 16);
		memcpy(u->gcm128.salt, iv, 4);
		memcpy(u->gcm128.iv, version == TLS1_3_VERSION ? iv + 4 : rs, 8);
		memcpy(u->gcm128.rec_seq, rs, 8);
		return sizeof(u->gcm128);
	case NID_aes_256_gcm:
		u->base.cipher_type = TLS_CIPHER_AES_GCM_256;
		memcpy(u->gcm256.key, key, 32);
		memcpy(u->gcm256.salt, iv, 4);
		memcpy(u->gcm256.iv, version == TLS1_3_VERSION ? iv + 4 : rs, 8);
		memcpy(u->gcm256.rec_seq, rs, 8);
		return sizeof(u->gcm256);
	default:
		u->base.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
		memcpy(u->chacha.key, key, 32);
		memcpy(u->chacha.iv, iv, 12);
		memcpy(u->chacha.rec_seq, rs, 8);
		return sizeof(u->chacha);
	}
}

int ktls_install(int fd, SSL *ssl, bool server, int dirs, const struct ktls_dir *tx,
		 const struct ktls_dir *rx)
{
	const SSL_CIPHER *ciph = SSL_get_current_cipher(ssl);
	int nid = ciph ? SSL_CIPHER_get_cipher_nid(ciph) : NID_undef;
	int version = SSL_version(ssl);
	const EVP_MD *md = ciph ? SSL_CIPHER_get_handshake_digest(ciph) : NULL;
	size_t klen, ivlen = version == TLS1_3_VERSION || nid == NID_chacha20_poly1305 ? 12 : 4;
	uint8_t txk[32], rxk[32], txiv[12], rxiv[12], kb[2 * 32 + 2 * 12];
	union ktls_info info;
	socklen_t len;
	int mask = 0;

	pthread_once(&g.once, global_init);
	if (nid == NID_aes_128_gcm)
		klen = 16;
	else if (nid == NID_aes_256_gcm || nid == NID_chacha20_poly1305)
		klen = 32;
	else
		return -EOPNOTSUPP; /* a cipher the kernel has no record layer for */
	if (!md || !g.hkdf || !g.prf)
		return -EOPNOTSUPP;
	if (version == TLS1_3_VERSION) {
		if (((dirs & KTLS_TX) &&
		     (!tx->secret_len || hkdf_label(md, tx->secret, tx->secret_len, "key", txk, klen) ||
		      hkdf_label(md, tx->secret, tx->secret_len, "iv", txiv, 12))) ||
		    ((dirs & KTLS_RX) &&
		     (!rx->secret_len || hkdf_label(md, rx->secret, rx->secret_len, "key", rxk, klen) ||
		      hkdf_label(md, rx->secret, rx->secret_len, "iv", rxiv, 12)))) {
			mask = -EIO;
			goto out;
		}
	} else if (version == TLS1_2_VERSION) {
		const uint8_t *ck, *sk, *civ, *siv;

		if (tls12_key_block(ssl, md, kb, 2 * klen + 2 * ivlen))
			return -EIO;
		/* client_write_key, server_write_key, client_write_IV, server_write_IV */
		ck = kb, sk = kb + klen, civ = kb + 2 * klen, siv = kb + 2 * klen + ivlen;
		memcpy(txk, server ? sk : ck, klen);
		memcpy(rxk, server ? ck : sk, klen);
		memcpy(txiv, server ? siv : civ, ivlen);
		memcpy(rxiv, server ? civ : siv, ivlen);
		OPENSSL_cleanse(kb, sizeof(kb));
	} else {
		return -EOPNOTSUPP;
	}
	/* The ULP goes on once per socket; a second call (the other direction later) finds it there. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) && errno != EEXIST) {
		mask = -errno;
		goto out;
	}
	if (dirs & KTLS_TX) {
		len = fill_info(&info, version, nid, txk, txiv, tx->seq);
		if (!setsockopt(fd, SOL_TLS, TLS_TX, &info, len))
			mask |= KTLS_TX;
	}
	if (dirs & KTLS_RX) {
		len = fill_info(&info, version, nid, rxk, rxiv, rx->seq);
		if (!setsockopt(fd, SOL_TLS, TLS_RX, &info, len))
			mask |= KTLS_RX;
	}
	OPENSSL_cleanse(&info, sizeof(info));
out:
	OPENSSL_cleanse(txk, sizeof(txk));
	OPENSSL_cleanse(rxk, sizeof(rxk));
	OPENSSL_cleanse(txiv, sizeof(txiv));
	OPENSSL_cleanse(rxiv, sizeof(rxiv));
	return mask;
}

/* ---- kTLS RX ----------------------------------------------------------------------- */

struct msghdr *ktls_rxmsg_prep(struct ktls_rxmsg *m, char *buf, size_t len)
{
	m->iov.iov_base = buf;
	m->iov.iov_len = len;
	memset(&m->msg, 0, sizeof(m->msg));
	m->msg.msg_iov = &m->iov;
	m->msg.msg_iovlen = 1;
	m->msg.msg_control = m->cm.buf;
	m->msg.msg_controllen = sizeof(m->cm.buf);
	return &m->msg;
}

int ktls_rxmsg_type(struct ktls_rxmsg *m)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m->msg); c; c = CMSG_NXTHDR(&m->msg, c))
		if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE)
			return *CMSG_DATA(c);
	return KTLS_REC_DATA;
}
