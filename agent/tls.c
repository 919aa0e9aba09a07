/* agent/tls.c — TLS termination: OpenSSL 3 server contexts per listener (SNI, ECDSA+RSA, tickets, OCSP), a memory-BIO engine per connection, kTLS key installation. */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/tls.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "control.h"
#include "ktls.h"
#include "log.h"
#include "metrics.h"
#include "tls.h"
#include "tls_client.h"
#include "tls_io.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define TICKET_ROTATE_S 3600        /* a new ticket key every hour; the previous one still decrypts */
#define CERT_WARN_DAYS 14           /* tls status warns when a certificate expires sooner */

/* Modern defaults: AEAD only (all of them kTLS-capable), ECDHE only, ECDSA first. */
static const char default_ciphers[] =
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char default_suites[] =
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";


/* One certificate as loaded, for SNI, OCSP and "tls status". */
struct tls_cert {
	X509 *leaf;
	char *file;
	char subject[256];   /* CN of the subject */
	char **names;        /* DNS SANs (or the CN when there are none), lower case */
	unsigned nnames;
	char key[32];        /* "EC P-256", "RSA 2048" */
	int64_t not_after;   /* seconds since the epoch */
	uint8_t *ocsp;       /* DER OCSP response to staple, NULL = none */
	size_t ocsp_len;
	unsigned group;
};

/* Certificates with the same names share one SSL_CTX (an ECDSA and an RSA one side by side). */
struct tls_group {
	SSL_CTX *ctx;
	unsigned types; /* bit per key type present (EVP_PKEY base id hashed into 0..31) */
};

/* A listener's certificate set: immutable once built, refcounted by connections. */
struct tls_srv {
	_Atomic int refs;
	unsigned listener;
	struct tls_cert *certs;
	unsigned ncerts;
	struct tls_group *groups;
	unsigned ngroups;
	unsigned default_group;
	time_t loaded_at;
};

/* Per-listener counters (several workers add: atomic adds, once per connection at most). */
struct tls_lstats {
	_Atomic uint64_t hs_ok, hs_fail, resumed;
	_Atomic uint64_t ktls, user;     /* connections whose record layer went to the kernel / stayed */
	_Atomic uint64_t ktls_tx_only;   /* kernel TX, userspace RX (the RX key was refused) */
	_Atomic uint64_t keyupdate;      /* failed: a KeyUpdate the kernel path cannot follow */
	_Atomic uint64_t install_fail;   /* kTLS wanted, the kernel refused the ULP or keys */
};

struct ticket_key {
	uint8_t name[16];
	uint8_t aes[32];
	uint8_t hmac[32];
};

/* A listener's counters, kept by name so they survive reloads that move or re-add it. */
struct tls_lslot {
	char *name;
	struct tls_lstats st;
	struct tls_lslot *next;
};

/*
 * What lives as long as the agent, whatever the reloads: the kTLS probe, the
 * session-ticket key ring (resumption keeps working across reloads), the
 * KDFs, the counters and the view of the configuration served now.
 */
struct tls_core {
	pthread_mutex_t lock;                     /* cur, slots, reload counters; held by tls.reload */
	struct tls_reg *cur;                      /* the served configuration's view (a reference) */
	bool ktls_kernel;                         /* TCP_ULP "tls" attaches on this kernel */
	char ktls_why[160];
	pthread_rwlock_t tk_lock;                 /* the ticket key ring */
	struct ticket_key tk[2];                  /* [0] current, [1] previous */
	time_t tk_rotate_at;
	EVP_CIPHER *tk_cipher;                    /* AES-256-CBC for tickets, fetched once (no name lookup per ticket) */
	EVP_KDF *hkdf, *prf;
	struct tls_lslot *slots;                  /* every listener name seen, never freed before stop */
	uint64_t reloads;                         /* certificate sets loaded after the first */
	time_t reloaded_at;
};

/* One listener as a view sees it: copied, so a connection never reads a freed configuration. */
struct tls_lview {
	char *name;                               /* listener name, for logs and metrics */
	bool on;                                  /* terminates TLS */
	bool ktls_auto;                           /* ktls: auto (kernel record layer when it has one) */
	uint64_t hs_timeout_ms;                   /* accept to handshake done */
	unsigned default_cert;                    /* index in the listener's certificates */
	struct tls_lstats *st;                    /* the core's counters for this name */
};

/*
 * The TLS side of one configuration (one per snapshot): listener i of that
 * configuration is l[i] and srv[i]. Reference counted: the snapshot, the
 * core while it is current, and each connection made from it.
 */
struct tls_reg {
	_Atomic int refs;
	struct tls_core *core;
	pthread_mutex_t lock;                     /* srv[] swaps (tls.reload) and references */
	struct tls_srv *srv[CFG_MAX_LISTENERS];   /* NULL = plain listener */
	const struct config *cfg;                 /* what it was built from: read under core->lock while current */
	unsigned nlisteners;
	bool ktls_kernel;                         /* the core's probe */
	EVP_KDF *hkdf, *prf;                      /* the core's */
	struct tls_lview l[CFG_MAX_LISTENERS];
};

_Static_assert(TLS_WANT == TLS_IO_WANT, "tls_read passes tls_io_read's result through");

struct tls_conn {
	struct tls_reg *reg;
	struct tls_srv *srv;
	unsigned listener;
	SSL *ssl;
	struct tls_io io;          /* ciphertext in and out */
	struct ktls_rec rd, wr;    /* records either way, for the kernel's sequence numbers */
	uint64_t rd_base;          /* TLS 1.3: records read before the application keys */
	uint64_t wr_base;          /* TLS 1.3: records written before the application keys */
	uint64_t wr_call;          /* records written before the current handshake call */
	bool hs_done;
	bool want_ktls;
	bool decided;              /* kTLS installed or given up; counted */
	bool failed_counted;
	bool fatal;                /* a protocol error: the session must not be resumed */
	int ktls_mask;
	uint8_t tx_secret[EVP_MAX_MD_SIZE], rx_secret[EVP_MAX_MD_SIZE];
	uint8_t tx_len, rx_len;
	struct ktls_rxmsg rxmsg;
};

static void stat_add(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* Until kTLS is decided, every record either way is counted: the kernel's sequence numbers start there. */
static void io_tap(struct tls_io *io, bool wrote, const uint8_t *p, size_t n)
{
	struct tls_conn *t = (struct tls_conn *)((char *)io - offsetof(struct tls_conn, io));

	if (!t->decided)
		ktls_rec_feed(wrote ? &t->wr : &t->rd, p, n);
}

/* ---- callbacks -------------------------------------------------------------------- */

static struct tls_conn *conn_of(const SSL *s)
{
	return SSL_get_app_data(s);
}

/* Exact name first, then "*.rest" for the name minus its first label. */
static int srv_lookup(const struct tls_srv *srv, const char *name)
{
	const char *dot = strchr(name, '.');

	for (unsigned i = 0; i < srv->ncerts; i++)
		for (unsigned j = 0; j < srv->certs[i].nnames; j++)
			if (!strcasecmp(srv->certs[i].names[j], name))
				return (int)srv->certs[i].group;
	if (!dot || dot == name)
		return -1;
	for (unsigned i = 0; i < srv->ncerts; i++)
		for (unsigned j = 0; j < srv->certs[i].nnames; j++) {
			const char *n = srv->certs[i].names[j];

			if (n[0] == '*' && n[1] == '.' && !strcasecmp(n + 1, dot))
				return (int)srv->certs[i].group;
		}
	return -1;
}

static int sni_cb(SSL *s, int *al, void *arg)
{
	struct tls_conn *t = conn_of(s);
	const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
	int g;

	if (!t || !name)
		return SSL_TLSEXT_ERR_NOACK;
	g = srv_lookup(t->srv, name);
	/* No match: the default certificate answers, as nginx's default server does. */
	if (g >= 0 && t->srv->groups[g].ctx != SSL_get_SSL_CTX(s))
		SSL_set_SSL_CTX(s, t->srv->groups[g].ctx);
	return SSL_TLSEXT_ERR_OK;
}

static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
		if (in[i] == 8 && i + 9 <= inlen && !memcmp(in + i + 1, "http/1.1", 8)) {
			*out = in + i + 1;
			*outlen = 8;
			return SSL_TLSEXT_ERR_OK;
		}
	}
	/* Only HTTP/1.1 here: a client offering nothing else goes on without ALPN. */
	return SSL_TLSEXT_ERR_NOACK;
}

static int ocsp_cb(SSL *s, void *arg)
{
	struct tls_conn *t = conn_of(s);
	X509 *x = SSL_get_certificate(s);

	if (!t || !x)
		return SSL_TLSEXT_ERR_NOACK;
	for (unsigned i = 0; i < t->srv->ncerts; i++) {
		const struct tls_cert *c = &t->srv->certs[i];
		unsigned char *copy;

		if (c->leaf != x || !c->ocsp)
			continue;
		copy = OPENSSL_malloc(c->ocsp_len);
		if (!copy)
			return SSL_TLSEXT_ERR_NOACK;
		memcpy(copy, c->ocsp, c->ocsp_len);
		/* OpenSSL owns copy from here on. */
		SSL_set_tlsext_status_ocsp_resp(s, copy, (long)c->ocsp_len);
		return SSL_TLSEXT_ERR_OK;
	}
	return SSL_TLSEXT_ERR_NOACK;
}

/* TLS 1.3 traffic secrets for kTLS, from the key log line OpenSSL hands us (never written anywhere). */
static void keylog_cb(const SSL *s, const char *line)
{
	struct tls_conn *t = conn_of(s);
	size_t n;

	if (!t || !t->want_ktls)
		return;
	if ((n = ktls_keylog_secret(line, "SERVER_TRAFFIC_SECRET_0", t->tx_secret)))
		t->tx_len = (uint8_t)n;
	else if ((n = ktls_keylog_secret(line, "CLIENT_TRAFFIC_SECRET_0", t->rx_secret)))
		t->rx_len = (uint8_t)n;
}

/* ---- session tickets: a key ring rotated hourly, the previous key still accepted ---- */

static int ticket_key_new(struct ticket_key *k)
{
	return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
			       RAND_bytes(k->hmac, sizeof(k->hmac)) == 1
		       ? 0
		       : -EIO;
}

/* The current key, rotating first when it is due (whichever thread gets here first). */
static int ticket_current(struct tls_core *r, struct ticket_key *out)
{
	time_t now = time(NULL);

	pthread_rwlock_rdlock(&r->tk_lock);
	if (now < r->tk_rotate_at) {
		*out = r->tk[0];
		pthread_rwlock_unlock(&r->tk_lock);
		return 0;
	}
	pthread_rwlock_unlock(&r->tk_lock);
	pthread_rwlock_wrlock(&r->tk_lock);
	if (now >= r->tk_rotate_at) {
		struct ticket_key k;

		if (ticket_key_new(&k) == 0) {
			r->tk[1] = r->tk[0];
			r->tk[0] = k;
			r->tk_rotate_at = now + TICKET_ROTATE_S;
			OPENSSL_cleanse(&k, sizeof(k));
		}
	}
	*out = r->tk[0];
	pthread_rwlock_unlock(&r->tk_lock);
	return 0;
}

static int ticket_find(struct tls_core *r, const uint8_t name[16], struct ticket_key *out)
{
	int which = -1;

	pthread_rwlock_rdlock(&r->tk_lock);
	for (int i = 0; i < 2; i++)
		if (!memcmp(r->tk[i].name, name, 16)) {
			*out = r->tk[i];
			which = i;
			break;
		}
	pthread_rwlock_unlock(&r->tk_lock);
	return which;
}

static int ticket_cb(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *ectx,
		     EVP_MAC_CTX *hctx, int enc)
{
	struct tls_conn *t = conn_of(s);
	struct ticket_key k;
	OSSL_PARAM params[3];
	int which = 0, rc = -1;

	if (!t)
		return -1;
	if (enc) {
		ticket_current(t->reg->core, &k);
		memcpy(key_name, k.name, 16);
		if (RAND_bytes(iv, 16) != 1 ||
		    !EVP_EncryptInit_ex(ectx, t->reg->core->tk_cipher, NULL, k.aes, iv))
			goto out;
	} else {
		which = ticket_find(t->reg->core, key_name, &k);
		if (which < 0)
			return 0; /* unknown or expired key: a full handshake */
		if (!EVP_DecryptInit_ex(ectx, t->reg->core->tk_cipher, NULL, k.aes, iv))
			goto out;
	}
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_CTX_set_params(hctx, params))
		goto out;
	/*
	 * A ticket under the previous key is accepted and replaced by one under the
	 * current key. TLS 1.3 clients should use a ticket once (RFC 8446 C.4) and
	 * get one per full handshake: each resumption hands out a fresh one (as
	 * OpenSSL does without a callback, so nginx too), or they would run dry.
	 */
	rc = enc ? 1 : which == 0 && SSL_version(s) != TLS1_3_VERSION ? 1 : 2;
out:
	OPENSSL_cleanse(&k, sizeof(k));
	return rc;
}

/* ---- loading ------------------------------------------------------------------- */

static void ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	snprintf(buf, len, "%s", r ? r : "unknown OpenSSL error");
	ERR_clear_error();
}

static void cert_free(struct tls_cert *c)
{
	X509_free(c->leaf);
	free(c->file);
	for (unsigned i = 0; i < c->nnames; i++)
		free(c->names[i]);
	free(c->names);
	free(c->ocsp);
}

static void srv_free(struct tls_srv *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < s->ncerts; i++)
		cert_free(&s->certs[i]);
	for (unsigned i = 0; i < s->ngroups; i++)
		SSL_CTX_free(s->groups[i].ctx);
	free(s->certs);
	free(s->groups);
	free(s);
}

static void srv_put(struct tls_srv *s)
{
	if (s && atomic_fetch_sub(&s->refs, 1) == 1)
		srv_free(s);
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f)
		return -errno;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || n > (1 << 20) || fseek(f, 0, SEEK_SET)) {
		fclose(f);
		return -EFBIG;
	}
	buf = malloc(n ? (size_t)n : 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		fclose(f);
		return -EIO;
	}
	fclose(f);
	*out = buf;
	*len = (size_t)n;
	return 0;
}

static int add_name(struct tls_cert *c, const char *s, size_t len)
{
	char **n = realloc(c->names, (c->nnames + 1) * sizeof(*n));
	char *d;

	if (!n)
		return -ENOMEM;
	c->names = n;
	d = strndup(s, len);
	if (!d)
		return -ENOMEM;
	for (char *p = d; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	c->names[c->nnames++] = d;
	return 0;
}

/* Names, subject, key type and expiry of the leaf certificate. */
static int cert_describe(struct tls_cert *c)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(c->leaf, NID_subject_alt_name, NULL, NULL);
	X509_NAME *subj = X509_get_subject_name(c->leaf);
	EVP_PKEY *pk = X509_get0_pubkey(c->leaf);
	const ASN1_TIME *na = X509_get0_notAfter(c->leaf);
	struct tm tm;
	int rc = 0;

	c->subject[0] = '\0';
	if (subj)
		X509_NAME_get_text_by_NID(subj, NID_commonName, c->subject, sizeof(c->subject));
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && !rc; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);

		if (g->type == GEN_DNS)
			rc = add_name(c, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
				      (size_t)ASN1_STRING_length(g->d.dNSName));
	}
	GENERAL_NAMES_free(sans);
	if (!rc && !c->nnames && c->subject[0])
		rc = add_name(c, c->subject, strlen(c->subject));
	if (pk && EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC) {
		char group[64] = "";
		size_t gl = 0;

		EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &gl);
		snprintf(c->key, sizeof(c->key), "EC %s",
			 !strcmp(group, "prime256v1") ? "P-256" : !strcmp(group, "secp384r1") ? "P-384" : group);
	} else if (pk) {
		snprintf(c->key, sizeof(c->key), "%s %d", EVP_PKEY_get0_type_name(pk), EVP_PKEY_get_bits(pk));
	}
	memset(&tm, 0, sizeof(tm));
	if (na && ASN1_TIME_to_tm(na, &tm))
		c->not_after = (int64_t)timegm(&tm);
	return rc;
}

static SSL_CTX *ctx_new(struct tls_reg *r, const struct cfg_tls *tc, const char *lname, bool keylog,
			char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char why[256];

	if (!ctx) {
		ssl_reason(why, sizeof(why));
		snprintf(err, errlen, "%s: cannot create a TLS context: %s", tc->where, why);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, tc->min_version);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_NO_COMPRESSION | (tc->session_tickets ? 0 : SSL_OP_NO_TICKET));
	if (!SSL_CTX_set_cipher_list(ctx, tc->ciphers ? tc->ciphers : default_ciphers)) {
		ERR_clear_error();
		snprintf(err, errlen, "%s: ciphers: no usable TLS 1.2 cipher in \"%s\"", tc->where,
			 tc->ciphers ? tc->ciphers : default_ciphers);
		goto fail;
	}
	if (!SSL_CTX_set_ciphersuites(ctx, tc->ciphersuites ? tc->ciphersuites : default_suites)) {
		ERR_clear_error();
		snprintf(err, errlen, "%s: ciphersuites: no usable TLS 1.3 suite in \"%s\"", tc->where,
			 tc->ciphersuites ? tc->ciphersuites : default_suites);
		goto fail;
	}
	/* Every context of a listener shares one id context, so SNI switches keep sessions valid. */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)lname,
				       (unsigned)(strlen(lname) > 32 ? 32 : strlen(lname)));
	if (tc->session_cache) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
		SSL_CTX_sess_set_cache_size(ctx, (long)tc->session_cache);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	}
	SSL_CTX_set_timeout(ctx, 2 * TICKET_ROTATE_S);
	/*
	 * TLS 1.3: one ticket per handshake, not OpenSSL's two. Each costs a session
	 * encoding (four i2d and a d2i in OpenSSL 3.0), an encryption, an HMAC and a
	 * record. Our tickets are stateless and accepted more than once, so a client
	 * opening parallel connections resumes them all with that one, and every
	 * resumed handshake brings a fresh ticket. Stateful tickets (tickets off)
	 * need the cache: without it a ticket could never resume, so none is sent.
	 */
	SSL_CTX_set_num_tickets(ctx, tc->session_tickets || tc->session_cache ? 1 : 0);
	/* The chain is exactly what the certificate file holds: no store walk per handshake. */
	SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
	if (tc->session_tickets)
		SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
	SSL_CTX_set_tlsext_status_cb(ctx, ocsp_cb);
	if (keylog)
		SSL_CTX_set_keylog_callback(ctx, keylog_cb);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* Refuses a private key file that group or others may read or write. */
static int key_mode_ok(const struct cfg_tls_cert *cc, char *err, size_t errlen)
{
	struct stat st;

	if (stat(cc->key, &st)) {
		int e = errno;

		snprintf(err, errlen, "%s.key: %s: %s", cc->where, cc->key, strerror(e));
		return -e;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(err, errlen,
			 "%s.key: %s: private key is accessible to group or others (mode %04o); "
			 "chmod 600 it",
			 cc->where, cc->key, (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

static int srv_build(struct tls_reg *r, const struct config *cfg, unsigned li, struct tls_srv **out,
		     char *err, size_t errlen)
{
	const struct cfg_listener *l = &cfg->listeners[li];
	const struct cfg_tls *tc = l->tls;
	bool keylog = r->ktls_kernel && tc->ktls == CFG_KTLS_AUTO;
	struct tls_srv *s = calloc(1, sizeof(*s));
	char why[256];
	int rc = -EINVAL;

	if (!s)
		return -ENOMEM;
	atomic_init(&s->refs, 1);
	s->listener = li;
	s->loaded_at = time(NULL);
	s->certs = calloc(tc->ncerts, sizeof(*s->certs));
	s->groups = calloc(tc->ncerts, sizeof(*s->groups));
	if (!s->certs || !s->groups) {
		rc = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < tc->ncerts; i++) {
		const struct cfg_tls_cert *cc = &tc->certs[i];
		struct tls_cert *c = &s->certs[i];
		FILE *f;
		unsigned g, type;

		if ((rc = key_mode_ok(cc, err, errlen)))
			goto fail;
		c->file = strdup(cc->cert);
		if (!c->file) {
			rc = -ENOMEM;
			goto fail;
		}
		f = fopen(cc->cert, "r");
		if (!f) {
			rc = -errno;
			snprintf(err, errlen, "%s.cert: %s: %s", cc->where, cc->cert, strerror(-rc));
			goto fail;
		}
		c->leaf = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
		if (!c->leaf) {
			ssl_reason(why, sizeof(why));
			snprintf(err, errlen, "%s.cert: %s: not a PEM certificate: %s", cc->where, cc->cert,
				 why);
			rc = -EINVAL;
			goto fail;
		}
		if ((rc = cert_describe(c)))
			goto fail;
		/* Same names and a key type not there yet: side by side in one context. */
		type = 1u << (EVP_PKEY_get_base_id(X509_get0_pubkey(c->leaf)) & 31);
		for (g = 0; g < i; g++) {
			const struct tls_cert *o = &s->certs[g];
			bool same = o->nnames == c->nnames && !(s->groups[o->group].types & type);

			for (unsigned k = 0; same && k < c->nnames; k++)
				same = !strcmp(o->names[k], c->names[k]);
			if (same)
				break;
		}
		if (g < i) {
			g = s->certs[g].group;
		} else {
			g = s->ngroups++;
			s->groups[g].ctx = ctx_new(r, tc, l->name, keylog, err, errlen);
			if (!s->groups[g].ctx) {
				rc = -EINVAL;
				goto fail;
			}
		}
		c->group = g;
		s->groups[g].types |= type;
		if (SSL_CTX_use_certificate_chain_file(s->groups[g].ctx, cc->cert) != 1) {
			ssl_reason(why, sizeof(why));
			snprintf(err, errlen, "%s.cert: %s: %s", cc->where, cc->cert, why);
			rc = -EINVAL;
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(s->groups[g].ctx, cc->key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(s->groups[g].ctx) != 1) {
			ssl_reason(why, sizeof(why));
			snprintf(err, errlen, "%s.key: %s: %s (does it belong to %s?)", cc->where, cc->key,
				 why, cc->cert);
			rc = -EINVAL;
			goto fail;
		}
		if (cc->ocsp_staple && (rc = read_file(cc->ocsp_staple, &c->ocsp, &c->ocsp_len))) {
			snprintf(err, errlen, "%s.ocsp_staple: %s: %s", cc->where, cc->ocsp_staple,
				 strerror(-rc));
			goto fail;
		}
	}
	s->default_group = s->certs[tc->default_cert].group;
	s->ncerts = tc->ncerts;
	*out = s;
	return 0;
fail:
	s->ncerts = tc->ncerts;
	srv_free(s);
	return rc;
}

static struct tls_srv *srv_get(struct tls_reg *r, unsigned li)
{
	struct tls_srv *s;

	pthread_mutex_lock(&r->lock);
	s = r->srv[li];
	if (s)
		atomic_fetch_add(&s->refs, 1);
	pthread_mutex_unlock(&r->lock);
	return s;
}

/* ---- the kernel probe ---------------------------------------------------------- */

int tls_ktls_probe(char *why, size_t whylen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int lfd, cfd = -1, afd = -1, ok = 0;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len)) {
		snprintf(why, whylen, "probe socket: %s", strerror(errno));
		goto out;
	}
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    (afd = accept(lfd, NULL, NULL)) < 0) {
		snprintf(why, whylen, "probe connection: %s", strerror(errno));
		goto out;
	}
	/* The ULP only attaches to an established socket, hence the loopback pair. */
	if (setsockopt(afd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls"))) {
		snprintf(why, whylen, "setsockopt TCP_ULP tls: %s%s", strerror(errno),
			 errno == ENOENT ? " (kernel without CONFIG_TLS, or tls.ko not loadable)" : "");
		goto out;
	}
	snprintf(why, whylen, "TCP_ULP tls attaches");
	ok = 1;
out:
	if (afd >= 0)
		close(afd);
	if (cfd >= 0)
		close(cfd);
	if (lfd >= 0)
		close(lfd);
	return ok;
}

/* ---- registry -------------------------------------------------------------------- */

/* The counters of listener name, created on first sight. Caller holds c->lock. */
static struct tls_lstats *slot_of(struct tls_core *c, const char *name)
{
	struct tls_lslot *s;

	for (s = c->slots; s; s = s->next)
		if (!strcmp(s->name, name))
			return &s->st;
	s = calloc(1, sizeof(*s));
	if (!s || !(s->name = strdup(name))) {
		free(s);
		return NULL;
	}
	s->next = c->slots;
	c->slots = s;
	return &s->st;
}

static void view_free(struct tls_reg *r)
{
	for (unsigned i = 0; i < CFG_MAX_LISTENERS; i++) {
		srv_put(r->srv[i]);
		free(r->l[i].name);
	}
	pthread_mutex_destroy(&r->lock);
	free(r);
}

struct tls_reg *tls_get(struct tls_reg *r)
{
	if (r)
		atomic_fetch_add(&r->refs, 1);
	return r;
}

void tls_put(struct tls_reg *r)
{
	if (r && atomic_fetch_sub(&r->refs, 1) == 1)
		view_free(r);
}

/*
 * A view of cfg on core c: every TLS listener's certificates and keys read
 * now (all or nothing; key permissions checked). Logs each listener's record
 * layer when log_paths.
 */
static int view_build(struct tls_core *c, const struct config *cfg, bool log_paths,
		      struct tls_reg **out, char *err, size_t errlen)
{
	struct tls_reg *r = calloc(1, sizeof(*r));
	int rc;

	if (!r) {
		snprintf(err, errlen, "tls: out of memory");
		return -ENOMEM;
	}
	atomic_init(&r->refs, 1);
	pthread_mutex_init(&r->lock, NULL);
	r->core = c;
	r->cfg = cfg;
	r->nlisteners = cfg->nlisteners;
	r->ktls_kernel = c->ktls_kernel;
	r->hkdf = c->hkdf;
	r->prf = c->prf;
	for (unsigned i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];
		struct tls_lview *v = &r->l[i];

		pthread_mutex_lock(&c->lock);
		v->st = slot_of(c, l->name);
		pthread_mutex_unlock(&c->lock);
		v->name = strdup(l->name);
		if (!v->st || !v->name) {
			snprintf(err, errlen, "tls: out of memory");
			rc = -ENOMEM;
			goto fail;
		}
		if (!l->tls)
			continue;
		v->on = true;
		v->ktls_auto = l->tls->ktls == CFG_KTLS_AUTO;
		v->hs_timeout_ms = l->tls->handshake_timeout_ms;
		v->default_cert = l->tls->default_cert;
		if ((rc = srv_build(r, cfg, i, &r->srv[i], err, errlen)))
			goto fail;
		if (!log_paths)
			continue;
		if (!v->ktls_auto)
			log_notice("listener %s: TLS in userspace (ktls: off)", l->name);
		else if (c->ktls_kernel)
			log_notice("listener %s: TLS with kTLS: the kernel takes the record layer after "
				   "each handshake (%s)", l->name, c->ktls_why);
		else
			log_notice("listener %s: TLS in userspace: no kTLS in this kernel (%s)", l->name,
				   c->ktls_why);
	}
	*out = r;
	return 0;
fail:
	view_free(r);
	return rc;
}

static void core_free(struct tls_core *c)
{
	while (c->slots) {
		struct tls_lslot *s = c->slots;

		c->slots = s->next;
		free(s->name);
		free(s);
	}
	EVP_KDF_free(c->hkdf);
	EVP_KDF_free(c->prf);
	EVP_CIPHER_free(c->tk_cipher);
	OPENSSL_cleanse(c->tk, sizeof(c->tk));
	pthread_rwlock_destroy(&c->tk_lock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

int tls_start(struct tls_reg **out, const struct config *cfg, char *err, size_t errlen)
{
	struct tls_core *c;
	int rc;

	*out = NULL;
	if (tls_io_global_init()) {
		snprintf(err, errlen, "tls: cannot create the OpenSSL BIO method");
		return -ENOMEM;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	pthread_rwlock_init(&c->tk_lock, NULL);
	c->ktls_kernel = tls_ktls_probe(c->ktls_why, sizeof(c->ktls_why));
	c->hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	c->prf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
	if (!c->hkdf || !c->prf)
		c->ktls_kernel = false, snprintf(c->ktls_why, sizeof(c->ktls_why),
						 "OpenSSL lacks the HKDF or TLS1-PRF KDF");
	if (ticket_key_new(&c->tk[0]) || ticket_key_new(&c->tk[1])) {
		snprintf(err, errlen, "tls: no randomness for the session ticket keys");
		core_free(c);
		return -EIO;
	}
	c->tk_rotate_at = time(NULL) + TICKET_ROTATE_S;
	c->tk_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	if (!c->tk_cipher) {
		snprintf(err, errlen, "tls: OpenSSL has no AES-256-CBC for the session tickets");
		core_free(c);
		return -ENOPROTOOPT;
	}
	if ((rc = view_build(c, cfg, true, out, err, errlen))) {
		core_free(c);
		return rc;
	}
	c->cur = tls_get(*out);
	return 0;
}

void tls_stop(struct tls_reg *r)
{
	struct tls_core *c;

	if (!r)
		return;
	c = r->core;
	tls_put(c->cur);
	core_free(c);
}

int tls_rebuild(struct tls_reg *cur, const struct config *cfg, struct tls_reg **out, char *err,
		size_t errlen)
{
	return view_build(cur->core, cfg, false, out, err, errlen);
}

void tls_publish(struct tls_reg *r)
{
	struct tls_core *c = r->core;
	struct tls_reg *old;

	pthread_mutex_lock(&c->lock);
	old = c->cur;
	c->cur = tls_get(r);
	c->reloads++;
	c->reloaded_at = time(NULL);
	pthread_mutex_unlock(&c->lock);
	tls_put(old);
}

/* Re-reads the certificate sets of view r (built from cfg) in place. Caller holds the core's lock. */
static int view_reread(struct tls_reg *r, const struct config *cfg, char *err, size_t errlen)
{
	struct tls_srv *fresh[CFG_MAX_LISTENERS] = { 0 };
	int rc = 0;

	for (unsigned i = 0; i < cfg->nlisteners && !rc; i++)
		if (cfg->listeners[i].tls)
			rc = srv_build(r, cfg, i, &fresh[i], err, errlen);
	if (rc) {
		for (unsigned i = 0; i < CFG_MAX_LISTENERS; i++)
			srv_free(fresh[i]);
		return rc;
	}
	/* Connections hold their own reference: the old sets go with their last handshake. */
	pthread_mutex_lock(&r->lock);
	for (unsigned i = 0; i < CFG_MAX_LISTENERS; i++) {
		struct tls_srv *old = r->srv[i];

		r->srv[i] = fresh[i];
		fresh[i] = old;
	}
	pthread_mutex_unlock(&r->lock);
	for (unsigned i = 0; i < CFG_MAX_LISTENERS; i++)
		srv_put(fresh[i]);
	return 0;
}

int tls_reload(struct tls_reg *r, char *err, size_t errlen)
{
	struct tls_core *c = r->core;
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = view_reread(c->cur, c->cur->cfg, err, errlen);
	if (!rc) {
		c->reloads++;
		c->reloaded_at = time(NULL);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

bool tls_listener_on(const struct tls_reg *r, unsigned listener)
{
	return r && listener < r->nlisteners && r->l[listener].on;
}

uint64_t tls_handshake_timeout_ms(const struct tls_reg *r, unsigned listener)
{
	return r->l[listener].hs_timeout_ms;
}

static const char *listener_path(const struct tls_reg *r, unsigned li)
{
	if (!r->l[li].on)
		return "off";
	return r->l[li].ktls_auto && r->ktls_kernel ? "ktls" : "userspace";
}

void tls_status_listener(const struct tls_reg *r, unsigned li, struct jsonw *w)
{
	if (!tls_listener_on(r, li)) {
		jsonw_str(w, "tls", "off");
		return;
	}
	const struct tls_lstats *st = r->l[li].st;

	jsonw_str(w, "tls", listener_path(r, li));
	jsonw_u64(w, "tls_handshakes", atomic_load(&st->hs_ok));
	jsonw_u64(w, "ktls_connections", atomic_load(&st->ktls));
	jsonw_u64(w, "userspace_tls_connections", atomic_load(&st->user));
}

/* ---- per connection ----------------------------------------------------------------- */

struct tls_conn *tls_conn_new(struct tls_reg *r, unsigned listener)
{
	struct tls_conn *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->reg = tls_get(r); /* the connection may outlive the configuration it came from */
	t->listener = listener;
	t->srv = srv_get(r, listener);
	t->io.tap = io_tap;
	if (!t->srv || tls_io_init(&t->io))
		goto fail;
	t->ssl = SSL_new(t->srv->groups[t->srv->default_group].ctx);
	if (!t->ssl || tls_io_attach(&t->io, t->ssl))
		goto fail;
	SSL_set_app_data(t->ssl, t);
	SSL_set_accept_state(t->ssl);
	t->want_ktls = r->ktls_kernel && r->l[listener].ktls_auto;
	return t;
fail:
	ERR_clear_error();
	tls_conn_free(t);
	return NULL;
}

void tls_conn_free(struct tls_conn *t)
{
	if (!t)
		return;
	if (t->hs_done && !t->decided)
		stat_add(&t->reg->l[t->listener].st->user);
	/* OpenSSL drops a session from the cache when the connection did not shut down
	 * cleanly; an HTTP close (or the kernel owning the records) is clean for us. */
	if (t->ssl && t->hs_done && !t->fatal)
		SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(t->ssl);
	srv_put(t->srv);
	tls_put(t->reg);
	OPENSSL_cleanse(t->tx_secret, sizeof(t->tx_secret));
	OPENSSL_cleanse(t->rx_secret, sizeof(t->rx_secret));
	tls_io_free(&t->io);
	free(t);
}

char *tls_in_space(struct tls_conn *t, size_t *len)
{
	return tls_io_in_space(&t->io, len);
}

void tls_in_commit(struct tls_conn *t, size_t n)
{
	tls_io_in_commit(&t->io, n);
}

void tls_conn_failed(struct tls_conn *t)
{
	if (t->failed_counted || t->hs_done)
		return;
	t->failed_counted = true;
	stat_add(&t->reg->l[t->listener].st->hs_fail);
}

int tls_handshake(struct tls_conn *t)
{
	int r, e;

	/* SSL_get_error() needs an empty queue; ERR_clear_error() walks all sixteen
	 * slots even when it is (as it nearly always is: failures clear it). */
	if (ERR_peek_error())
		ERR_clear_error();
	t->wr_call = t->wr.records;
	r = SSL_do_handshake(t->ssl);
	if (r == 1) {
		struct tls_lstats *st = t->reg->l[t->listener].st;

		t->hs_done = true;
		/* TLS 1.3: the call that read the client's Finished wrote only session tickets,
		 * the first records under the server's application key; nothing read since. */
		t->wr_base = t->wr_call;
		t->rd_base = t->rd.records;
		stat_add(&st->hs_ok);
		if (SSL_session_reused(t->ssl))
			stat_add(&st->resumed);
		if (!t->want_ktls) {
			t->decided = true;
			stat_add(&st->user);
		}
		return 1;
	}
	e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return TLS_WANT;
	if (log_threshold >= LOG_DEBUG) {
		char why[256];

		ssl_reason(why, sizeof(why));
		log_debug("listener %s: TLS handshake failed: %s",
			  t->reg->l[t->listener].name, why);
	}
	ERR_clear_error();
	t->fatal = true;
	tls_conn_failed(t);
	return -EPROTO;
}

ssize_t tls_read(struct tls_conn *t, char *buf, size_t len)
{
	ssize_t n = tls_io_read(t->ssl, buf, len);

	if (n == -EPROTO)
		t->fatal = true;
	return n;
}

bool tls_read_buffered(const struct tls_conn *t)
{
	return tls_io_in_pending(&t->io) || SSL_has_pending(t->ssl);
}

int tls_write(struct tls_conn *t, const void *buf, size_t len)
{
	int rc = tls_io_write(t->ssl, buf, len);

	if (rc)
		t->fatal = true;
	return rc;
}

int tls_write2(struct tls_conn *t, const void *a, size_t alen, const void *b, size_t blen)
{
	int rc = tls_io_write2(t->ssl, a, alen, b, blen);

	if (rc)
		t->fatal = true;
	return rc;
}

size_t tls_out_next(struct tls_conn *t, const char **p)
{
	return tls_io_out_next(&t->io, p);
}

size_t tls_out_sent(struct tls_conn *t, size_t n)
{
	return tls_io_out_sent(&t->io, n);
}

void tls_close_notify(struct tls_conn *t, int fd)
{
	static const uint8_t alert[2] = { 1, 0 }; /* warning, close_notify */
	const char *p;
	size_t n;

	if (!t->hs_done || t->fatal)
		return;
	if (t->ktls_mask & TLS_KTLS_TX) {
		/* The kernel seals it: an alert record via TLS_SET_RECORD_TYPE. */
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(unsigned char))];
		} cm;
		struct iovec iov = { .iov_base = (void *)alert, .iov_len = sizeof(alert) };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
				      .msg_controllen = sizeof(cm.buf) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

		c->cmsg_level = SOL_TLS;
		c->cmsg_type = TLS_SET_RECORD_TYPE;
		c->cmsg_len = CMSG_LEN(sizeof(unsigned char));
		*CMSG_DATA(c) = KTLS_REC_ALERT;
		sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		return;
	}
	if (tls_io_out_pending(&t->io))
		return; /* ciphertext still queued: the alert would overtake it */
	ERR_clear_error();
	SSL_shutdown(t->ssl);
	ERR_clear_error();
	while ((n = tls_out_next(t, &p))) {
		ssize_t k = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (k <= 0)
			break;
		tls_out_sent(t, (size_t)k);
	}
}

/* ---- kTLS ------------------------------------------------------------------------- */

/* The key installation is shared with upstream TLS (ktls.c); here only what the server knows. */
static int ktls_install_srv(struct tls_conn *t, int fd)
{
	bool v13 = SSL_version(t->ssl) == TLS1_3_VERSION;
	struct ktls_dir tx = { t->tx_secret, t->tx_len, v13 ? t->wr.records - t->wr_base : t->wr.since_ccs };
	struct ktls_dir rx = { t->rx_secret, t->rx_len, v13 ? t->rd.records - t->rd_base : t->rd.since_ccs };

	if (v13 && (!t->tx_len || !t->rx_len))
		return -EIO;
	return ktls_install(fd, t->ssl, true, TLS_KTLS_TX | TLS_KTLS_RX, &tx, &rx);
}

bool tls_ktls_pending(const struct tls_conn *t)
{
	return !t->decided;
}

int tls_ktls_try(struct tls_conn *t, int fd)
{
	struct tls_lstats *st = t->reg->l[t->listener].st;
	int rc;

	if (t->decided)
		return t->ktls_mask;
	/* Only at a record boundary with nothing queued either way: the kernel starts there. */
	if (!t->hs_done || tls_io_in_pending(&t->io) || SSL_has_pending(t->ssl) ||
	    !ktls_rec_boundary(&t->rd) || !ktls_rec_boundary(&t->wr) || tls_io_out_pending(&t->io))
		return 0;
	t->decided = true;
	rc = ktls_install_srv(t, fd);
	OPENSSL_cleanse(t->tx_secret, sizeof(t->tx_secret));
	OPENSSL_cleanse(t->rx_secret, sizeof(t->rx_secret));
	if (rc <= 0) {
		if (rc < 0 && rc != -EOPNOTSUPP) {
			stat_add(&st->install_fail);
			log_debug("listener %s: kTLS not installed: %s",
				  t->reg->l[t->listener].name, strerror(-rc));
		}
		stat_add(&st->user);
		return 0;
	}
	t->ktls_mask = rc;
	stat_add(&st->ktls);
	if (!(rc & TLS_KTLS_RX))
		stat_add(&st->ktls_tx_only);
	return rc;
}

struct msghdr *tls_ktls_rxmsg(struct tls_conn *t, char *buf, size_t len)
{
	return ktls_rxmsg_prep(&t->rxmsg, buf, len);
}

int tls_ktls_rxresult(struct tls_conn *t, int res)
{
	int type;

	if (res < 0)
		return res == -EIO || res == -EBADMSG || res == -EMSGSIZE ? -EPROTO : res;
	type = ktls_rxmsg_type(&t->rxmsg); /* KTLS_REC_DATA when the kernel sent no type */
	if (type == KTLS_REC_DATA)
		return res;
	if (type == KTLS_REC_HANDSHAKE) {
		/* A KeyUpdate (or any post-handshake message): the kernel keeps the old key. */
		stat_add(&t->reg->l[t->listener].st->keyupdate);
		log_info("listener %s: peer sent a TLS handshake record on a kTLS connection "
			 "(KeyUpdate?): closing it", t->reg->l[t->listener].name);
		return -EPROTO;
	}
	return 0; /* an alert: close_notify or fatal, the connection is over */
}

/* ---- control commands ---------------------------------------------------------------- */

static void iso_time(int64_t sec, char *buf, size_t len)
{
	time_t t = (time_t)sec;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The view served now, with a reference for the caller. */
static struct tls_reg *core_current(struct tls_core *c, uint64_t *reloads)
{
	struct tls_reg *r;

	pthread_mutex_lock(&c->lock);
	r = tls_get(c->cur);
	if (reloads)
		*reloads = c->reloads;
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int cmd_status(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		      size_t errlen)
{
	struct tls_core *c = ctx;
	uint64_t reloads;
	struct tls_reg *r = core_current(c, &reloads);
	int64_t now = (int64_t)time(NULL);
	char when[32];

	jsonw_bool(w, "ktls_kernel", c->ktls_kernel);
	jsonw_str(w, "ktls_probe", c->ktls_why);
	jsonw_u64(w, "reloads", reloads);
	jsonw_u64(w, "warn_days", CERT_WARN_DAYS);
	jsonw_arr_begin(w, "listeners");
	for (unsigned li = 0; li < r->nlisteners; li++) {
		struct tls_srv *s = srv_get(r, li);
		const struct tls_lstats *st = r->l[li].st;

		if (!s)
			continue;
		jsonw_obj_begin(w);
		jsonw_str(w, "name", r->l[li].name);
		jsonw_str(w, "path", listener_path(r, li));
		iso_time(s->loaded_at, when, sizeof(when));
		jsonw_str(w, "loaded", when);
		jsonw_u64(w, "handshakes", atomic_load(&st->hs_ok));
		jsonw_u64(w, "handshake_failures", atomic_load(&st->hs_fail));
		jsonw_u64(w, "resumed", atomic_load(&st->resumed));
		jsonw_u64(w, "ktls_connections", atomic_load(&st->ktls));
		jsonw_u64(w, "ktls_tx_only", atomic_load(&st->ktls_tx_only));
		jsonw_u64(w, "userspace_connections", atomic_load(&st->user));
		jsonw_u64(w, "ktls_keyupdate_failures", atomic_load(&st->keyupdate));
		jsonw_u64(w, "ktls_install_failures", atomic_load(&st->install_fail));
		jsonw_arr_begin(w, "certificates");
		for (unsigned i = 0; i < s->ncerts; i++) {
			const struct tls_cert *ce = &s->certs[i];
			int64_t days = (ce->not_after - now) / 86400;

			jsonw_obj_begin(w);
			jsonw_str(w, "file", ce->file);
			jsonw_str(w, "subject", ce->subject);
			jsonw_str(w, "key", ce->key);
			jsonw_arr_begin(w, "names");
			for (unsigned k = 0; k < ce->nnames; k++)
				jsonw_str(w, NULL, ce->names[k]);
			jsonw_arr_end(w);
			iso_time(ce->not_after, when, sizeof(when));
			jsonw_str(w, "not_after", when);
			jsonw_i64(w, "days_left", days);
			jsonw_bool(w, "expiring", ce->not_after - now < CERT_WARN_DAYS * 86400);
			jsonw_bool(w, "default", ce->group == s->default_group &&
						 i == r->l[li].default_cert);
			jsonw_bool(w, "ocsp_staple", ce->ocsp != NULL);
			jsonw_obj_end(w);
		}
		jsonw_arr_end(w);
		jsonw_obj_end(w);
		srv_put(s);
	}
	jsonw_arr_end(w);
	tls_put(r);
	tls_client_status_json(w);
	return 0;
}

/* tls.status without TLS listeners: the kernel's answer and the upstream pools only. */
static int cmd_status_upstreams(void *ctx, const struct control_req *req, struct jsonw *w,
				char *err, size_t errlen)
{
	const char *why = "";

	(void)ctx, (void)req, (void)err, (void)errlen;
	jsonw_bool(w, "ktls_kernel", ktls_kernel(&why));
	jsonw_str(w, "ktls_probe", why);
	jsonw_arr_begin(w, "listeners");
	jsonw_arr_end(w);
	tls_client_status_json(w);
	return 0;
}

static int cmd_reload(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
		      size_t errlen)
{
	struct tls_core *c = ctx;
	uint64_t reloads;
	struct tls_reg *r = core_current(c, NULL);
	int rc = tls_reload(r, err, errlen);

	tls_put(r);
	if (rc) {
		log_warn("tls.reload refused, the running certificates stay: %s", err);
		return rc;
	}
	tls_put(core_current(c, &reloads));
	log_notice("tls.reload: certificates and keys reloaded; new handshakes use them");
	jsonw_u64(w, "reloads", reloads);
	return 0;
}

int tls_register_commands(struct tls_reg *r, struct control *c, const struct config *cfg)
{
	int rc;

	(void)cfg; /* the running configuration is the core's current one, reloads included */
	if (!r)
		return control_register(c, "tls.status", cmd_status_upstreams, NULL);
	if ((rc = control_register(c, "tls.status", cmd_status, r->core)))
		return rc;
	return control_register(c, "tls.reload", cmd_reload, r->core);
}

/* ---- metrics ---------------------------------------------------------------------------- */

static void collect(void *ctx, struct metrics_out *o)
{
	struct tls_reg *r = core_current(ctx, NULL);
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "openclaw_tls_handshakes_total", "counter", "TLS handshakes by result (ok, failed) and resumption" },
		{ "openclaw_tls_connections_total", "counter", "TLS connections by record layer: ktls (kernel) or userspace" },
		{ "openclaw_tls_ktls_failures_total", "counter", "kTLS problems: keyupdate (connection closed), install (stayed in userspace)" },
		{ "openclaw_tls_certificate_expiry_seconds", "gauge", "notAfter of each loaded certificate, Unix time" },
	};

	for (unsigned f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
		metrics_family(o, fam[f].name, fam[f].type, fam[f].help);
		for (unsigned li = 0; li < r->nlisteners; li++) {
			const struct tls_lstats *st = r->l[li].st;
			const char *ln = r->l[li].name;

			if (!r->l[li].on)
				continue;
			if (f == 0) {
				metrics_sample_u64(o, fam[f].name, (const char *const[]){ "listener", ln, "result", "ok", NULL }, atomic_load(&st->hs_ok));
				metrics_sample_u64(o, fam[f].name, (const char *const[]){ "listener", ln, "result", "failed", NULL }, atomic_load(&st->hs_fail));
				metrics_sample_u64(o, fam[f].name, (const char *const[]){ "listener", ln, "result", "resumed", NULL }, atomic_load(&st->resumed));
			} else if (f == 1) {
				metrics_sample_u64(o, fam[f].name, (const char *const[]){ "listener", ln, "path", "ktls", NULL }, atomic_load(&st->ktls));
				metrics_sample_u64(o, fam[f].name, (const char *const[]){ "listener", ln, "path", "userspace", NULL }, atomic_load(&st->user));
			} else if (f == 2) {
				metrics_sample_u64(o, fam[f].name, (const char *const[]){ "listener", ln, "reason", "keyupdate", NULL }, atomic_load(&st->keyupdate));
				metrics_sample_u64(o, fam[f].name, (const char *const[]){ "listener", ln, "reason", "install", NULL }, atomic_load(&st->install_fail));
			} else {
				struct tls_srv *s = srv_get(r, li);

				for (unsigned i = 0; s && i < s->ncerts; i++)
					metrics_sample_u64(o, fam[f].name, (const char *const[]){ "listener", ln, "cert", s->certs[i].file, NULL },
							   (uint64_t)(s->certs[i].not_after > 0 ? s->certs[i].not_after : 0));
				srv_put(s);
			}
		}
	}
	tls_put(r);
}

int tls_register_metrics(struct tls_reg *r, struct metrics *m)
{
	return r && m ? metrics_register(m, collect, r->core) : 0;
}
