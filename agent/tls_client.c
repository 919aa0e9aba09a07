/* agent/tls_client.c — upstream TLS: OpenSSL 3 client contexts per pool (CA, mutual TLS, SNI, ALPN), a memory-BIO engine per backend connection, session resumption, kTLS hand-off, per-pool counters. */
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "ktls.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "jsonw.h"
#include "tls_client.h"
#include "tls_io.h"

#define REASON_MAX 160            /* bytes of a failure reason kept for logs and health details */

/* Handshake outcomes of one pool, summed over workers (atomic adds, once per connection). */
struct tlsc_stats {
	struct tlsc_stats *next;
	char *pool;
	unsigned refs;                  /* contexts of loaded configurations naming the pool */
	int path_logged;                /* record layer last logged for the pool (enum up_path), 0 = none */
	_Atomic uint64_t ok, resumed, verify_failed, failed;
	_Atomic uint64_t ktls_on, ktls_off; /* connections with a direction in the kernel / all in userspace */
	_Atomic uint64_t keyupdate;     /* kTLS connections failed: a KeyUpdate the kernel path cannot follow */
	_Atomic uint64_t install_fail;  /* kTLS wanted, the kernel refused the ULP or a key */
};

/* A pool's record layer, as logged once per pool. */
enum up_path { UP_PATH_KTLS = 1, UP_PATH_OFF, UP_PATH_NOKERNEL };

/* Every pool's counters, found by name so they carry on across reloads. */
static struct {
	pthread_mutex_t lock;
	struct tlsc_stats *head;
} reg = { .lock = PTHREAD_MUTEX_INITIALIZER };

_Static_assert(TLS_UP_WANT == TLS_IO_WANT, "tls_up_read passes tls_io_read's result through");
_Static_assert(TLS_UP_KTLS_TX == KTLS_TX && TLS_UP_KTLS_RX == KTLS_RX, "one direction mask");

struct tls_client_ctx {
	SSL_CTX *ssl;
	char *pool;              /* for logs */
	char *sni;               /* server name sent and checked, NULL = the address is checked */
	bool verify;
	bool reuse;              /* sessions are resumed */
	bool ktls;               /* ktls: auto and the kernel has the TLS ULP */
	struct tlsc_stats *st;
};

struct tls_up {
	struct tls_client_ctx *x;
	SSL *ssl;
	void **slot;               /* this worker's cached session for the server, or NULL */
	char server[NET_ADDR_STRLEN];
	unsigned flags;
	struct tls_io io;          /* ciphertext in and out */
	bool hs_done;
	bool ended;                /* the handshake's outcome has been counted */
	bool fatal;                /* a protocol error: the session must not be resumed */
	char reason[REASON_MAX];   /* why the handshake failed */
	/* kTLS: each direction goes to the kernel on its own, at a record boundary with nothing queued. */
	bool want_ktls;            /* the pool wants it, the kernel has it, not a health check */
	bool tx_decided, rx_decided; /* installed or given up */
	bool counted;              /* ktls_on or ktls_off counted */
	bool got_session;          /* a session (TLS 1.3: a ticket) arrived in userspace */
	bool read_data;            /* application data was decrypted in userspace */
	bool rekeyed;              /* a KeyUpdate was read in userspace: the logged secrets are stale */
	int ktls_mask;             /* KTLS_TX | KTLS_RX now in the kernel */
	struct ktls_rec rd, wr;    /* records either way, for the kernel's sequence numbers */
	uint64_t rd_base, wr_base; /* TLS 1.3: records before the application keys */
	uint8_t tx_secret[EVP_MAX_MD_SIZE], rx_secret[EVP_MAX_MD_SIZE];
	size_t tx_len, rx_len;
	uint8_t hs_hdr[4];         /* kTLS RX: a post-handshake message's header being read */
	uint8_t hs_hdr_len;
	uint32_t hs_left;          /* bytes of a NewSessionTicket body still to skip */
	struct ktls_rxmsg rxmsg;
};

static void stat_add(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static void ktls_keyupdate_fail(struct tls_up *t);

/* ---- the counters' registry ---------------------------------------------------------- */

static struct tlsc_stats *stats_get(const char *pool)
{
	struct tlsc_stats *s;

	pthread_mutex_lock(&reg.lock);
	for (s = reg.head; s; s = s->next)
		if (!strcmp(s->pool, pool))
			break;
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (s && !(s->pool = strdup(pool))) {
			free(s);
			s = NULL;
		}
		if (s) {
			s->next = reg.head;
			reg.head = s;
		}
	}
	if (s)
		s->refs++;
	pthread_mutex_unlock(&reg.lock);
	return s;
}

static void stats_put(struct tlsc_stats *s)
{
	struct tlsc_stats **pp;

	if (!s)
		return;
	pthread_mutex_lock(&reg.lock);
	if (--s->refs == 0) {
		for (pp = &reg.head; *pp && *pp != s; pp = &(*pp)->next)
			;
		if (*pp)
			*pp = s->next;
		free(s->pool);
		free(s);
	}
	pthread_mutex_unlock(&reg.lock);
}

void tls_client_counts(const char *pool, struct tls_client_counts *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&reg.lock);
	for (struct tlsc_stats *s = reg.head; s; s = s->next) {
		if (strcmp(s->pool, pool))
			continue;
		out->ok = atomic_load(&s->ok);
		out->resumed = atomic_load(&s->resumed);
		out->verify_failed = atomic_load(&s->verify_failed);
		out->failed = atomic_load(&s->failed);
		out->ktls_on = atomic_load(&s->ktls_on);
		out->ktls_off = atomic_load(&s->ktls_off);
		out->ktls_keyupdate = atomic_load(&s->keyupdate);
		out->ktls_install_failed = atomic_load(&s->install_fail);
	}
	pthread_mutex_unlock(&reg.lock);
}

void tls_client_status_json(struct jsonw *w)
{
	jsonw_arr_begin(w, "upstreams");
	pthread_mutex_lock(&reg.lock);
	for (struct tlsc_stats *s = reg.head; s; s = s->next) {
		jsonw_obj_begin(w);
		jsonw_str(w, "name", s->pool);
		jsonw_u64(w, "handshakes", atomic_load(&s->ok));
		jsonw_u64(w, "resumed", atomic_load(&s->resumed));
		jsonw_u64(w, "verify_failures", atomic_load(&s->verify_failed));
		jsonw_u64(w, "handshake_failures", atomic_load(&s->failed));
		jsonw_u64(w, "ktls_connections", atomic_load(&s->ktls_on));
		jsonw_u64(w, "userspace_connections", atomic_load(&s->ktls_off));
		jsonw_u64(w, "ktls_keyupdate_failures", atomic_load(&s->keyupdate));
		jsonw_u64(w, "ktls_install_failures", atomic_load(&s->install_fail));
		jsonw_obj_end(w);
	}
	pthread_mutex_unlock(&reg.lock);
	jsonw_arr_end(w);
}

/* ---- the context ------------------------------------------------------------------------ */

static void ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	snprintf(buf, len, "%s", r ? r : "unknown OpenSSL error");
	ERR_clear_error();
}

/* A new session from the backend (TLS 1.3: a ticket after the handshake): this worker keeps the newest. */
static int new_session_cb(SSL *s, SSL_SESSION *sess)
{
	struct tls_up *t = SSL_get_app_data(s);

	if (t)
		t->got_session = true; /* kTLS RX may start now: the ticket will not arrive under it */
	if (!t || !t->slot || !SSL_SESSION_is_resumable(sess))
		return 0;
	SSL_SESSION_free(*t->slot);
	*t->slot = sess;
	return 1; /* the reference is ours now */
}

/* TLS 1.3 application traffic secrets for kTLS, from the key log line OpenSSL hands us (never written anywhere). */
static void keylog_cb(const SSL *s, const char *line)
{
	struct tls_up *t = SSL_get_app_data(s);
	size_t n;

	if (!t || !t->want_ktls)
		return;
	if ((n = ktls_keylog_secret(line, "CLIENT_TRAFFIC_SECRET_0", t->tx_secret)))
		t->tx_len = n;
	else if ((n = ktls_keylog_secret(line, "SERVER_TRAFFIC_SECRET_0", t->rx_secret)))
		t->rx_len = n;
}

/* Until kTLS is decided: a KeyUpdate read in userspace makes the logged secrets stale. */
static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len, SSL *s,
		   void *arg)
{
	struct tls_up *t = SSL_get_app_data(s);

	if (t && !write_p && content_type == SSL3_RT_HANDSHAKE && len &&
	    ((const uint8_t *)buf)[0] == SSL3_MT_KEY_UPDATE)
		t->rekeyed = true;
}

/* Until both directions are decided, every record either way is counted. */
static void io_tap(struct tls_io *io, bool wrote, const uint8_t *p, size_t n)
{
	struct tls_up *t = (struct tls_up *)((char *)io - offsetof(struct tls_up, io));

	if (wrote ? !t->tx_decided : !t->rx_decided)
		ktls_rec_feed(wrote ? &t->wr : &t->rd, p, n);
}

int tls_client_key_mode_ok(const char *path, char *why, size_t whylen)
{
	struct stat st;

	if (stat(path, &st)) {
		int e = errno;

		snprintf(why, whylen, "%s: %s", path, strerror(e));
		return -e;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(why, whylen,
			 "%s: private key is accessible to group or others (mode %04o); chmod 600 it",
			 path, (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

/* Loads the CA bundle into the context's store; refuses a file without a certificate. */
static int load_ca(SSL_CTX *ctx, const char *path, char *why, size_t whylen)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	FILE *f = fopen(path, "r");
	unsigned n = 0;
	X509 *x;

	if (!f) {
		int e = errno;

		snprintf(why, whylen, "%s: %s", path, strerror(e));
		return -e;
	}
	while ((x = PEM_read_X509(f, NULL, NULL, NULL))) {
		if (X509_STORE_add_cert(store, x) == 1)
			n++;
		X509_free(x);
	}
	fclose(f);
	/* The loop ends on "no start line" at the end of the file; anything else is a real error. */
	ERR_clear_error();
	if (!n) {
		snprintf(why, whylen, "%s: no PEM certificate in it", path);
		return -EINVAL;
	}
	return 0;
}

/* Says once per pool (and again when it changes) which record layer its backend connections use. */
static void log_path(struct tls_client_ctx *x, const struct cfg_upstream_tls *t)
{
	const char *why;
	bool kernel = ktls_kernel(&why);
	int path = t->ktls == CFG_KTLS_OFF ? UP_PATH_OFF : kernel ? UP_PATH_KTLS : UP_PATH_NOKERNEL;
	bool say;

	pthread_mutex_lock(&reg.lock);
	say = x->st->path_logged != path;
	x->st->path_logged = path;
	pthread_mutex_unlock(&reg.lock);
	if (!say)
		return;
	if (path == UP_PATH_OFF)
		log_notice("upstream %s: TLS to backends in userspace (ktls: off)", x->pool);
	else if (path == UP_PATH_KTLS)
		log_notice("upstream %s: TLS to backends with kTLS: the kernel takes the record layer "
			   "after each handshake (%s)", x->pool, why);
	else
		log_notice("upstream %s: TLS to backends in userspace: no kTLS in this kernel (%s)",
			   x->pool, why);
}

int tls_client_ctx_new(const struct cfg_upstream_tls *t, const char *pool,
		       struct tls_client_ctx **out, enum tls_client_key *bad, char *why,
		       size_t whylen)
{
	static const unsigned char alpn[] = "\x08http/1.1";
	struct tls_client_ctx *x;
	char r[256];
	int rc;

	*out = NULL;
	*bad = TLSC_KEY_OTHER;
	if (tls_io_global_init()) {
		snprintf(why, whylen, "cannot create the OpenSSL BIO method");
		return -ENOMEM;
	}
	x = calloc(1, sizeof(*x));
	if (!x || !(x->pool = strdup(pool)) || (t->sni && !(x->sni = strdup(t->sni)))) {
		snprintf(why, whylen, "out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	x->verify = t->verify;
	x->reuse = t->session_reuse;
	x->ssl = SSL_CTX_new(TLS_client_method());
	if (!x->ssl) {
		ssl_reason(r, sizeof(r));
		snprintf(why, whylen, "cannot create a TLS client context: %s", r);
		rc = -ENOMEM;
		goto fail;
	}
	SSL_CTX_set_min_proto_version(x->ssl, t->min_version);
	SSL_CTX_set_max_proto_version(x->ssl, TLS1_3_VERSION);
	SSL_CTX_set_options(x->ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					    (t->session_reuse ? 0 : SSL_OP_NO_TICKET));
	if (t->ca) {
		*bad = TLSC_KEY_CA;
		if ((rc = load_ca(x->ssl, t->ca, why, whylen)))
			goto fail;
	} else if (t->verify && SSL_CTX_set_default_verify_paths(x->ssl) != 1) {
		ssl_reason(r, sizeof(r));
		snprintf(why, whylen, "no ca given and the system trust store cannot be loaded: %s", r);
		rc = -EINVAL;
		goto fail;
	}
	SSL_CTX_set_verify(x->ssl, t->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	if (t->cert) {
		*bad = TLSC_KEY_KEY;
		if ((rc = tls_client_key_mode_ok(t->key, why, whylen)))
			goto fail;
		*bad = TLSC_KEY_CERT;
		if (SSL_CTX_use_certificate_chain_file(x->ssl, t->cert) != 1) {
			ssl_reason(r, sizeof(r));
			snprintf(why, whylen, "%s: %s", t->cert, r);
			rc = -EINVAL;
			goto fail;
		}
		*bad = TLSC_KEY_KEY;
		if (SSL_CTX_use_PrivateKey_file(x->ssl, t->key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(x->ssl) != 1) {
			ssl_reason(r, sizeof(r));
			snprintf(why, whylen, "%s: %s (does it belong to %s?)", t->key, r, t->cert);
			rc = -EINVAL;
			goto fail;
		}
	}
	*bad = TLSC_KEY_OTHER;
	/* SSL_CTX_set_alpn_protos returns 0 on success. */
	if (t->alpn && SSL_CTX_set_alpn_protos(x->ssl, alpn, sizeof(alpn) - 1)) {
		snprintf(why, whylen, "cannot set ALPN");
		rc = -ENOMEM;
		goto fail;
	}
	if (t->session_reuse) {
		/* Sessions live in each worker's own slots, never in OpenSSL's shared cache. */
		SSL_CTX_set_session_cache_mode(x->ssl, SSL_SESS_CACHE_CLIENT |
							       SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(x->ssl, new_session_cb);
	} else {
		SSL_CTX_set_session_cache_mode(x->ssl, SSL_SESS_CACHE_OFF);
	}
	x->st = stats_get(pool);
	if (!x->st) {
		snprintf(why, whylen, "out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	if (t->ktls == CFG_KTLS_AUTO && ktls_kernel(NULL)) {
		x->ktls = true;
		SSL_CTX_set_keylog_callback(x->ssl, keylog_cb);
	}
	log_path(x, t);
	if (!t->verify)
		log_warn("%s.verify: off: upstream %s: backend certificates and names are not "
			 "checked; anyone on the path can pose as the backend",
			 t->where ? t->where : "tls", pool);
	*out = x;
	return 0;
fail:
	ERR_clear_error();
	tls_client_ctx_free(x);
	return rc;
}

void tls_client_ctx_free(struct tls_client_ctx *x)
{
	if (!x)
		return;
	SSL_CTX_free(x->ssl);
	stats_put(x->st);
	free(x->pool);
	free(x->sni);
	free(x);
}

void tls_client_session_free(void *session)
{
	SSL_SESSION_free(session);
}

/* ---- per connection ---------------------------------------------------------------------- */

struct tls_up *tls_up_new(struct tls_client_ctx *x, const struct sockaddr *addr,
			  const char *server_name, void **session_slot, unsigned flags)
{
	struct tls_up *t = calloc(1, sizeof(*t));
	char ip[NET_ADDR_STRLEN];

	if (!t)
		return NULL;
	t->x = x;
	t->flags = flags;
	t->slot = x->reuse ? session_slot : NULL;
	snprintf(t->server, sizeof(t->server), "%s", server_name);
	if (tls_io_init(&t->io) || !(t->ssl = SSL_new(x->ssl)) || tls_io_attach(&t->io, t->ssl))
		goto fail;
	SSL_set_app_data(t->ssl, t);
	SSL_set_connect_state(t->ssl);
	t->want_ktls = x->ktls && !(flags & TLS_UP_QUIET);
	if (t->want_ktls) {
		t->io.tap = io_tap;
		SSL_set_msg_callback(t->ssl, msg_cb);
	}
	if (x->sni && SSL_set_tlsext_host_name(t->ssl, x->sni) != 1)
		goto fail;
	if (x->verify) {
		X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);

		/* The certificate must name what we asked for: the sni, else the address we dialled. */
		if (x->sni) {
			X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			if (X509_VERIFY_PARAM_set1_host(p, x->sni, 0) != 1)
				goto fail;
		} else if (X509_VERIFY_PARAM_set1_ip_asc(p, net_addr_host(addr, ip, sizeof(ip))) != 1) {
			goto fail;
		}
	}
	if (t->slot && *t->slot)
		SSL_set_session(t->ssl, *t->slot);
	return t;
fail:
	ERR_clear_error();
	tls_up_free(t);
	return NULL;
}

int tls_up_set_server_name(struct tls_up *t, const char *name)
{
	if (SSL_set_tlsext_host_name(t->ssl, name) != 1)
		goto fail;
	if (t->x->verify) {
		X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);

		X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (X509_VERIFY_PARAM_set1_host(p, name, 0) != 1 || X509_VERIFY_PARAM_set1_ip(p, NULL, 0) != 1)
			goto fail;
	}
	return 0;
fail:
	ERR_clear_error();
	return -ENOMEM;
}

void tls_up_free(struct tls_up *t)
{
	if (!t)
		return;
	if (t->hs_done && !t->counted && !(t->flags & TLS_UP_QUIET))
		stat_add(&t->x->st->ktls_off);
	OPENSSL_cleanse(t->tx_secret, sizeof(t->tx_secret));
	OPENSSL_cleanse(t->rx_secret, sizeof(t->rx_secret));
	/* Without a shutdown OpenSSL marks the session unresumable; an HTTP close is clean for us. */
	if (t->ssl && t->hs_done && !t->fatal)
		SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(t->ssl);
	tls_io_free(&t->io);
	free(t);
}

char *tls_up_in_space(struct tls_up *t, size_t *len)
{
	return tls_io_in_space(&t->io, len);
}

void tls_up_in_commit(struct tls_up *t, size_t n)
{
	tls_io_in_commit(&t->io, n);
}

/* Counts and logs a failed handshake once; the cached session goes (it may be why). */
static void hs_failed(struct tls_up *t, bool verify)
{
	if (t->ended)
		return;
	t->ended = true;
	t->fatal = true;
	if (t->slot && *t->slot) {
		SSL_SESSION_free(*t->slot);
		*t->slot = NULL;
	}
	if (t->flags & TLS_UP_QUIET)
		return;
	stat_add(verify ? &t->x->st->verify_failed : &t->x->st->failed);
	log_warn("upstream %s: server %s: TLS handshake failed: %s", t->x->pool, t->server, t->reason);
}

int tls_up_handshake(struct tls_up *t)
{
	long vr;
	int r, e;

	ERR_clear_error();
	r = SSL_do_handshake(t->ssl);
	if (r == 1) {
		t->hs_done = true;
		t->ended = true;
		/* TLS 1.3: the client's last flight ends with its Finished, and nothing was read past
		 * the server's: the application records either way are numbered from here. */
		t->wr_base = t->wr.records;
		t->rd_base = t->rd.records;
		if (!t->want_ktls) {
			t->tx_decided = t->rx_decided = true;
			if (!(t->flags & TLS_UP_QUIET)) {
				t->counted = true;
				stat_add(&t->x->st->ktls_off);
			}
		}
		if (!(t->flags & TLS_UP_QUIET)) {
			stat_add(&t->x->st->ok);
			if (SSL_session_reused(t->ssl))
				stat_add(&t->x->st->resumed);
		}
		return 1;
	}
	e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		ERR_clear_error();
		return TLS_UP_WANT;
	}
	vr = SSL_get_verify_result(t->ssl);
	if (t->x->verify && vr != X509_V_OK) {
		snprintf(t->reason, sizeof(t->reason), "certificate verification failed: %s",
			 X509_verify_cert_error_string(vr));
		ERR_clear_error();
		hs_failed(t, true);
		return -EPROTO;
	}
	if (e == SSL_ERROR_SSL)
		ssl_reason(t->reason, sizeof(t->reason));
	else
		snprintf(t->reason, sizeof(t->reason), "%s",
			 e == SSL_ERROR_ZERO_RETURN ? "the backend closed the TLS session" : "TLS error");
	ERR_clear_error();
	hs_failed(t, false);
	return -EPROTO;
}

bool tls_up_ready(const struct tls_up *t)
{
	return t->hs_done;
}

void tls_up_abort(struct tls_up *t, int res)
{
	if (t->ended)
		return;
	if (res == 0)
		snprintf(t->reason, sizeof(t->reason), "the backend closed the connection mid-handshake");
	else if (res == -ECANCELED || res == -ETIME)
		snprintf(t->reason, sizeof(t->reason), "timed out");
	else
		snprintf(t->reason, sizeof(t->reason), "%s", strerror(-res));
	hs_failed(t, false);
}

const char *tls_up_reason(const struct tls_up *t)
{
	return t->reason;
}

ssize_t tls_up_read(struct tls_up *t, char *buf, size_t len)
{
	ssize_t n = tls_io_read(t->ssl, buf, len);

	if (n == -EPROTO)
		t->fatal = true;
	if (n > 0)
		t->read_data = true;
	if ((t->ktls_mask & KTLS_TX) && tls_io_out_pending(&t->io)) {
		/* OpenSSL answered something (a KeyUpdate) with its stale sending key: it must not go out. */
		ktls_keyupdate_fail(t);
		return -EPROTO;
	}
	return n;
}

bool tls_up_read_buffered(const struct tls_up *t)
{
	return tls_io_in_pending(&t->io) || SSL_has_pending(t->ssl);
}

int tls_up_write(struct tls_up *t, const void *buf, size_t len)
{
	int rc = tls_io_write(t->ssl, buf, len);

	if (rc)
		t->fatal = true;
	return rc;
}

int tls_up_write2(struct tls_up *t, const void *a, size_t alen, const void *b, size_t blen)
{
	int rc = tls_io_write2(t->ssl, a, alen, b, blen);

	if (rc)
		t->fatal = true;
	return rc;
}

size_t tls_up_out_next(struct tls_up *t, const char **p)
{
	return tls_io_out_next(&t->io, p);
}

size_t tls_up_out_sent(struct tls_up *t, size_t n)
{
	return tls_io_out_sent(&t->io, n);
}

/* ---- kTLS -------------------------------------------------------------------------------------- */

static void ktls_keyupdate_fail(struct tls_up *t)
{
	t->fatal = true;
	stat_add(&t->x->st->keyupdate);
	log_info("upstream %s: server %s: TLS handshake message the kernel record layer cannot "
		 "follow (KeyUpdate?): closing the connection", t->x->pool, t->server);
}

bool tls_up_ktls_pending(const struct tls_up *t)
{
	return t->hs_done && !(t->tx_decided && t->rx_decided);
}

/* A direction is decided: its secret goes; once both are, the counting stops. */
static void decide(struct tls_up *t, int dirs)
{
	if (dirs & KTLS_TX) {
		t->tx_decided = true;
		OPENSSL_cleanse(t->tx_secret, sizeof(t->tx_secret));
	}
	if (dirs & KTLS_RX) {
		t->rx_decided = true;
		OPENSSL_cleanse(t->rx_secret, sizeof(t->rx_secret));
	}
	if (t->tx_decided && t->rx_decided) {
		t->io.tap = NULL;
		SSL_set_msg_callback(t->ssl, NULL);
		if (!t->counted) {
			t->counted = true;
			stat_add(t->ktls_mask ? &t->x->st->ktls_on : &t->x->st->ktls_off);
		}
	}
}

int tls_up_ktls_try(struct tls_up *t, int fd, int dirs)
{
	bool v13 = SSL_version(t->ssl) == TLS1_3_VERSION;
	struct ktls_dir tx = { t->tx_secret, t->tx_len, v13 ? t->wr.records - t->wr_base : t->wr.since_ccs };
	struct ktls_dir rx = { t->rx_secret, t->rx_len, v13 ? t->rd.records - t->rd_base : t->rd.since_ccs };
	int rc;

	if (!tls_up_ktls_pending(t))
		return t->ktls_mask;
	if (t->rekeyed) {
		/* The peer changed keys while userspace read: what the key log gave is stale. */
		decide(t, KTLS_TX | KTLS_RX);
		return t->ktls_mask;
	}
	if (t->tx_decided || tls_io_out_pending(&t->io) || !ktls_rec_boundary(&t->wr))
		dirs &= ~KTLS_TX;
	/* RX only at a record boundary with nothing buffered; on TLS 1.3 with resumption, after
	 * the backend's ticket (or its first data: then it sends none before answering). */
	if (t->rx_decided || tls_io_in_pending(&t->io) || SSL_has_pending(t->ssl) ||
	    !ktls_rec_boundary(&t->rd) || (v13 && t->slot && !t->got_session && !t->read_data))
		dirs &= ~KTLS_RX;
	if (!dirs)
		return t->ktls_mask;
	rc = ktls_install(fd, t->ssl, false, dirs, &tx, &rx);
	if (rc < 0) {
		if (rc != -EOPNOTSUPP) {
			stat_add(&t->x->st->install_fail);
			log_debug("upstream %s: server %s: kTLS not installed: %s", t->x->pool, t->server,
				  strerror(-rc));
		}
		decide(t, KTLS_TX | KTLS_RX);
		return t->ktls_mask;
	}
	if (rc != dirs) {
		stat_add(&t->x->st->install_fail);
		log_debug("upstream %s: server %s: the kernel refused the kTLS %s key", t->x->pool,
			  t->server, (dirs & ~rc) & KTLS_TX ? "TX" : "RX");
	}
	t->ktls_mask |= rc;
	if (t->ktls_mask && !t->counted) {
		t->counted = true;
		stat_add(&t->x->st->ktls_on);
	}
	decide(t, dirs);
	return t->ktls_mask;
}

struct msghdr *tls_up_ktls_rxmsg(struct tls_up *t, char *buf, size_t len)
{
	return ktls_rxmsg_prep(&t->rxmsg, buf, len);
}

/* Post-handshake messages under kTLS RX: NewSessionTickets are skipped (the kernel cannot hand
 * them to OpenSSL), anything else (a KeyUpdate) ends the connection. */
static int ktls_handshake_bytes(struct tls_up *t, const uint8_t *p, size_t n)
{
	while (n) {
		if (t->hs_left) {
			size_t k = n < t->hs_left ? n : t->hs_left;

			p += k;
			n -= k;
			t->hs_left -= (uint32_t)k;
			continue;
		}
		t->hs_hdr[t->hs_hdr_len++] = *p++;
		n--;
		if (t->hs_hdr_len < 4)
			continue;
		t->hs_hdr_len = 0;
		if (t->hs_hdr[0] != SSL3_MT_NEWSESSION_TICKET) {
			ktls_keyupdate_fail(t);
			return -EPROTO;
		}
		t->hs_left = (uint32_t)t->hs_hdr[1] << 16 | (uint32_t)t->hs_hdr[2] << 8 | t->hs_hdr[3];
	}
	return TLS_UP_WANT;
}

int tls_up_ktls_rxresult(struct tls_up *t, const char *buf, int res)
{
	int type;

	if (res < 0) {
		if (res == -EIO || res == -EBADMSG || res == -EMSGSIZE) {
			t->fatal = true;
			return -EPROTO;
		}
		return res;
	}
	type = ktls_rxmsg_type(&t->rxmsg);
	if (type == KTLS_REC_DATA)
		return res;
	if (type == KTLS_REC_HANDSHAKE)
		return ktls_handshake_bytes(t, (const uint8_t *)buf, (size_t)res);
	if (type == KTLS_REC_ALERT)
		return 0; /* close_notify or fatal: the connection is over */
	t->fatal = true;
	return -EPROTO;
}

/* ---- metrics ------------------------------------------------------------------------------- */

static void collect(void *ctx, struct metrics_out *o)
{
	metrics_family(o, "openclaw_upstream_tls_handshakes_total", "counter",
		       "TLS handshakes with backends by pool and result: ok, verify_failed (certificate or name), failed (protocol, closed, timeout).");
	pthread_mutex_lock(&reg.lock);
	for (struct tlsc_stats *s = reg.head; s; s = s->next) {
		metrics_sample_u64(o, "openclaw_upstream_tls_handshakes_total",
				   (const char *const[]){ "upstream", s->pool, "result", "ok", NULL },
				   atomic_load(&s->ok));
		metrics_sample_u64(o, "openclaw_upstream_tls_handshakes_total",
				   (const char *const[]){ "upstream", s->pool, "result", "verify_failed", NULL },
				   atomic_load(&s->verify_failed));
		metrics_sample_u64(o, "openclaw_upstream_tls_handshakes_total",
				   (const char *const[]){ "upstream", s->pool, "result", "failed", NULL },
				   atomic_load(&s->failed));
	}
	pthread_mutex_unlock(&reg.lock);
	metrics_family(o, "openclaw_upstream_tls_resumptions_total", "counter",
		       "Backend TLS handshakes that resumed a cached session (included in result=\"ok\").");
	pthread_mutex_lock(&reg.lock);
	for (struct tlsc_stats *s = reg.head; s; s = s->next)
		metrics_sample_u64(o, "openclaw_upstream_tls_resumptions_total",
				   (const char *const[]){ "upstream", s->pool, NULL },
				   atomic_load(&s->resumed));
	pthread_mutex_unlock(&reg.lock);
	metrics_family(o, "openclaw_upstream_ktls_total", "counter",
		       "Backend TLS connections by record layer: state=on (the kernel took at least one direction), off (userspace).");
	pthread_mutex_lock(&reg.lock);
	for (struct tlsc_stats *s = reg.head; s; s = s->next) {
		metrics_sample_u64(o, "openclaw_upstream_ktls_total",
				   (const char *const[]){ "upstream", s->pool, "state", "on", NULL },
				   atomic_load(&s->ktls_on));
		metrics_sample_u64(o, "openclaw_upstream_ktls_total",
				   (const char *const[]){ "upstream", s->pool, "state", "off", NULL },
				   atomic_load(&s->ktls_off));
	}
	pthread_mutex_unlock(&reg.lock);
	metrics_family(o, "openclaw_upstream_ktls_failures_total", "counter",
		       "Backend kTLS problems: keyupdate (connection closed), install (a direction stayed in userspace).");
	pthread_mutex_lock(&reg.lock);
	for (struct tlsc_stats *s = reg.head; s; s = s->next) {
		metrics_sample_u64(o, "openclaw_upstream_ktls_failures_total",
				   (const char *const[]){ "upstream", s->pool, "reason", "keyupdate", NULL },
				   atomic_load(&s->keyupdate));
		metrics_sample_u64(o, "openclaw_upstream_ktls_failures_total",
				   (const char *const[]){ "upstream", s->pool, "reason", "install", NULL },
				   atomic_load(&s->install_fail));
	}
	pthread_mutex_unlock(&reg.lock);
}

int tls_client_register_metrics(struct metrics *m)
{
	/* Registered even without a TLS pool: a reload may add one. */
	return m ? metrics_register(m, collect, NULL) : 0;
}
