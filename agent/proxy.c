/* agent/proxy.c — one HTTP/1.1 exchange at a time per client connection: read, route, forward, stream back. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "breaker.h"
#include "forward.h"
#include "gate.h"
#include "guard.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "retry.h"
#include "route.h"
#include "splice.h"
#include "tls.h"
#include "tls_client.h"
#include "trace.h"
#include "worker.h"

#define CLIENT_BUF_MIN (16 * 1024)  /* first client buffer; grows for big heads */
#define UP_BUF_SIZE (64 * 1024)     /* upstream buffer: response heads and body chunks */
#define LINGER_MS 2000              /* how long to drain a client's unread body before closing */
#define DRAIN_IDLE_MS 1000          /* drain: an idle keep-alive client connection is closed after this long */
#define MAX_TRIES 16

/* What the client connection is waiting for. */
enum cstate {
	CS_HEAD,      /* reading a request head (or idle between requests) */
	CS_CONTINUE,  /* sending our own "100 Continue" */
	CS_CONNECT,   /* connecting to a backend */
	CS_SEND_HEAD, /* sending the request head (and buffered body) upstream */
	CS_BODY,      /* streaming the request body upstream */
	CS_WAIT_RESP, /* request sent; waiting for the response head */
	CS_RESP,      /* streaming the response to the client */
	CS_LOCAL,     /* sending a response the proxy made itself */
	CS_LINGER,    /* response sent, write side shut, discarding input until EOF */
	CS_TLS,       /* TLS handshake, before the first request head (tls.h) */
	CS_RETRY_WAIT,/* backoff before the next attempt (retry.h); no backend connection */
};

/* What an expiring deadline means in the current state. */
enum deadline {
	DL_NONE,
	DL_IDLE,     /* keep-alive idle: close silently */
	DL_HEADER,   /* slow request head: 408 */
	DL_BODY,     /* slow request body: 408 */
	DL_RESPONSE, /* slow backend: 504 */
	DL_RESP_BODY,/* stalled response body: close both */
	DL_LINGER,   /* done lingering */
};

struct upconn;

struct client {
	struct worker *w;
	struct wgen *gen;       /* configuration of the current exchange (a reference) */
	int fd;
	int pending;            /* operations in flight */
	bool closing;
	bool recv_armed;
	bool send_busy;
	bool trusted;           /* peer is a trusted proxy */
	unsigned listener;
	enum cstate state;
	struct dlist node;      /* in worker->clients */
	struct sockaddr_storage peer;
	uint64_t deadline_ms;   /* 0 = none */
	enum deadline dl_kind;
	uint64_t req_deadline_ms; /* whole-request limit, 0 = none */

	char *in;               /* request head at [0, head_len), then body/pipelined bytes */
	uint32_t in_len;
	uint32_t in_cap;
	uint32_t body_off;      /* start of body bytes not yet sent upstream */
	char *out;              /* heads and local responses */
	uint32_t out_cap;
	struct msghdr msg;
	struct iovec iov[2];

	/* The current exchange. */
	struct http1_request req;
	bool have_req;
	bool keep_alive;        /* client connection survives this exchange */
	int route;              /* index, -1 none */
	int pool;
	int server;
	uint32_t tried[MAX_TRIES];
	unsigned ntried;
	struct upconn *up;
	uint64_t body_left;     /* request body bytes still to come (LENGTH) */
	uint64_t body_seen;     /* request body bytes so far, for max_body */
	struct http1_chunked chunk;
	bool req_body_done;
	bool req_sent;          /* head and whole body are upstream */
	bool resp_started;      /* a response byte has gone to the client */
	bool replayable;        /* the whole request is still in our buffer */
	bool lb_begun;
	bool brk_pool;          /* holds a request slot of the pool's breaker (breaker.h) */
	bool brk_srv;           /* holds a request slot of server brk_idx's breaker */
	int brk_idx;
	int brk_trip;           /* enum lb_trip of the last server breaker that refused */
	unsigned nskipped;      /* servers passed over by their breaker in this exchange */
	unsigned nretries;      /* retries issued for this request (retry.h) */
	unsigned try_base;      /* tried - skipped when the current attempt began: connect_tries counts from here */
	bool conn_retry;        /* the last connect failed: the next pick is a connect_failure retry */
	bool retry_armed;       /* the backoff timer (OP_RETRY) is in flight */
	struct __kernel_timespec retry_ts; /* its duration, read by the kernel at submission */
	int status;
	const char *error;
	uint64_t t_start_ns, t_start_real_ns, t_sent_ns, t_resp_ns;
	uint64_t bytes_in, bytes_out;
	char request_id[40];
	char trace_id[TRACE_ID_HEX + 1];      /* W3C trace id, "" when tracing is off */
	char span_id[TRACE_SPAN_HEX + 1];     /* the proxy's span, the parent of the upstream hop */
	char parent_span_id[TRACE_SPAN_HEX + 1]; /* the caller's span, "" when the trace starts here */
	char traceparent[TRACE_PARENT_LEN + 1];  /* sent upstream */
	bool drop_tracestate;   /* the incoming traceparent was invalid */
	char errbody[64];       /* body of an error response while it is being sent */
	char peer_ip[NET_ADDR_STRLEN]; /* peer address as text, for forwarded headers */
	struct gate_verdict gv; /* admission of the current exchange (gate.h) */
	struct tls_conn *tls;   /* TLS state (tls.h), NULL on a plain listener */
	uint32_t tls_plain;     /* plaintext bytes of the send the state machine waits for */
	int tls_ready;          /* what the no-op "recv" delivers: bytes already decrypted, 0, error */
	bool tls_ready_nop;     /* the armed recv is that no-op */
	bool tls_sending;       /* a ciphertext send is in flight */
	bool tls_fail;          /* handshake failed: close once the alert is out */
	bool idle_cancel;       /* idle close: its recv is being cancelled; bytes it still brings are served */
	bool tls_ktx, tls_krx;  /* record layer in the kernel (kTLS), per direction */
} __attribute__((aligned(16)));

struct upconn {
	struct worker *w;
	struct wgen *gen;        /* configuration it was opened with (a reference): its pool and server */
	int fd;
	int pending;
	bool closing;
	bool recv_armed;
	bool send_busy;
	bool connected;
	bool reused;             /* came from the idle pool */
	bool head_parsed;        /* response head of the current exchange seen */
	bool resp_done;
	bool reusable;           /* may go back to the pool afterwards */
	bool overrun;            /* was reusable, but the backend sent bytes past the response (splice hands them on) */
	bool dechunk;            /* strip chunk framing (HTTP/1.0 client) */
	int pool, server;
	struct client *owner;    /* NULL when idle or orphaned */
	struct dlist node;       /* in the idle list when pooled */
	char *buf;
	uint32_t len;            /* bytes in buf */
	uint32_t off;            /* bytes of buf already handled */
	uint64_t resp_left;      /* LENGTH body bytes still to come */
	struct http1_chunked chunk;
	struct http1_response resp;
	struct msghdr msg;
	struct iovec iov[2];
	struct __kernel_timespec cto;
	uint64_t idle_since_ms;
	struct tls_up *tls;      /* TLS to the backend (tls_client.h), NULL for a plain pool */
	uint32_t tls_plain;      /* plaintext bytes of the send the state machine waits for */
	int tls_ready;           /* what the no-op "recv" delivers: bytes already decrypted, 0, error */
	bool tls_ready_nop;      /* the armed recv is that no-op */
	bool tls_sending;        /* a ciphertext send is in flight */
	bool tls_wfail;          /* encrypting the state machine's send failed: its no-op reports it */
	bool tls_ktx, tls_krx;   /* the kernel seals what is sent / opens what is read (kTLS) */
} __attribute__((aligned(16)));

static void client_close(struct client *c);
static void client_fail(struct client *c, int status, const char *why);
static void client_start_read(struct client *c);
static void exchange_connect(struct client *c);
static void exchange_send_request(struct client *c);
static void up_process(struct upconn *u);
static void up_close(struct upconn *u);
static void client_send_out(struct client *c, uint32_t len, const char *extra, size_t extra_len);
static void tls_arm_recv(struct client *c);
static void tls_send_plain(struct client *c);
static void up_tls_arm_recv(struct upconn *u);
static void up_tls_send_plain(struct upconn *u);

static const struct config *wcfg(struct worker *w)
{
	return w->snap->cfg;
}

static const struct cfg_timeouts *route_timeouts(struct client *c)
{
	if (c->route >= 0)
		return &wcfg(c->w)->routes[c->route].timeouts;
	return &wcfg(c->w)->timeouts;
}

static void set_deadline(struct client *c, enum deadline kind, uint64_t ms)
{
	c->dl_kind = ms ? kind : DL_NONE;
	c->deadline_ms = ms ? c->w->now_ms + ms : 0;
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* ---- submission helpers ------------------------------------------------------ */

static void arm_client_recv(struct client *c)
{
	struct io_uring_sqe *sqe;

	if (c->recv_armed || c->closing)
		return;
	if (c->in_len == c->in_cap)
		return; /* caller must make room first */
	if (c->tls) {
		tls_arm_recv(c);
		return;
	}
	sqe = worker_sqe(c->w);
	io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
	/* Between requests the socket is usually empty: wait for readiness instead of
	 * trying a read that would fail first. */
	if (c->state == CS_HEAD && c->in_len == 0)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	io_uring_sqe_set_data64(sqe, op_data(c, OP_CLIENT_RECV));
	c->recv_armed = true;
	c->pending++;
}

static void client_sendmsg(struct client *c)
{
	struct io_uring_sqe *sqe;

	if (c->tls && !c->tls_ktx) {
		tls_send_plain(c);
		return;
	}
	sqe = worker_sqe(c->w);
	if (!c->iov[1].iov_len) {
		/* One buffer: plain send skips the msghdr copy-in. */
		io_uring_prep_send(sqe, c->fd, c->iov[0].iov_base, c->iov[0].iov_len, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, op_data(c, OP_CLIENT_SEND));
		c->send_busy = true;
		c->pending++;
		return;
	}
	memset(&c->msg, 0, sizeof(c->msg));
	c->msg.msg_iov = c->iov;
	c->msg.msg_iovlen = c->iov[1].iov_len ? 2 : 1;
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_data(c, OP_CLIENT_SEND));
	c->send_busy = true;
	c->pending++;
}

static void arm_up_recv(struct upconn *u)
{
	struct io_uring_sqe *sqe;

	if (u->recv_armed || u->closing || u->len == UP_BUF_SIZE)
		return;
	if (u->tls) {
		up_tls_arm_recv(u);
		return;
	}
	sqe = worker_sqe(u->w);
	io_uring_prep_recv(sqe, u->fd, u->buf + u->len, UP_BUF_SIZE - u->len, 0);
	/* Armed right after a request is sent or when pooled: nothing is there yet. */
	if (!u->head_parsed)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	io_uring_sqe_set_data64(sqe, op_data(u, OP_UP_RECV));
	u->recv_armed = true;
	u->pending++;
}

static void up_sendmsg(struct upconn *u)
{
	struct io_uring_sqe *sqe;

	if (u->tls) {
		if (tls_up_ktls_pending(u->tls) && !u->tls_sending)
			u->tls_ktx = tls_up_ktls_try(u->tls, u->fd, TLS_UP_KTLS_TX) & TLS_UP_KTLS_TX;
		if (!u->tls_ktx) {
			up_tls_send_plain(u);
			return;
		}
	}
	sqe = worker_sqe(u->w);
	if (!u->iov[1].iov_len) {
		io_uring_prep_send(sqe, u->fd, u->iov[0].iov_base, u->iov[0].iov_len, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, op_data(u, OP_UP_SEND));
		u->send_busy = true;
		u->pending++;
		return;
	}
	memset(&u->msg, 0, sizeof(u->msg));
	u->msg.msg_iov = u->iov;
	u->msg.msg_iovlen = u->iov[1].iov_len ? 2 : 1;
	io_uring_prep_sendmsg(sqe, u->fd, &u->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_data(u, OP_UP_SEND));
	u->send_busy = true;
	u->pending++;
}

static void cancel_fd(struct worker *w, int fd)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, OP_IGNORE);
}

/* Advances a two-element iovec by n sent bytes; true when everything went. */
static bool iov_advance(struct iovec *iov, size_t n)
{
	for (int i = 0; i < 2; i++) {
		size_t take = n < iov[i].iov_len ? n : iov[i].iov_len;

		iov[i].iov_base = (char *)iov[i].iov_base + take;
		iov[i].iov_len -= take;
		n -= take;
	}
	if (!iov[0].iov_len && iov[1].iov_len) {
		iov[0] = iov[1];
		iov[1].iov_len = 0;
	}
	return iov[0].iov_len == 0 && iov[1].iov_len == 0;
}

/* ---- TLS on the client socket (tls.h): ciphertext on the wire, plaintext for the state machine ---- */

static void exchange_end(struct client *c, bool close_client);

/* Sends queued ciphertext unless a send is in flight (its completion sends the rest). */
static void tls_flush(struct client *c)
{
	struct io_uring_sqe *sqe;
	const char *p;
	size_t n;

	if (c->tls_sending || c->closing)
		return;
	n = tls_out_next(c->tls, &p);
	if (!n)
		return;
	sqe = worker_sqe(c->w);
	io_uring_prep_send(sqe, c->fd, p, n, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_data(c, OP_CLIENT_SEND));
	c->tls_sending = true;
	c->pending++;
}

/* Decrypts buffered records into c->in; output OpenSSL made meanwhile (a KeyUpdate answer) goes out. */
static ssize_t tls_read_into(struct client *c)
{
	ssize_t n = tls_read(c->tls, c->in + c->in_len, c->in_cap - c->in_len);
	const char *p;

	/* The kernel owns our sending direction: OpenSSL's answer cannot go out. */
	if (c->tls_ktx && tls_out_next(c->tls, &p))
		return -EPROTO;
	tls_flush(c);
	return n;
}

/* Plaintext in c->iov is encrypted at once; the state machine hears of it when all ciphertext is out. */
static void tls_send_plain(struct client *c)
{
	struct io_uring_sqe *sqe;

	/* Head and body together: one SSL_write pass, no record holding the head alone. */
	if (tls_write2(c->tls, c->iov[0].iov_base, c->iov[0].iov_len, c->iov[1].iov_base,
		       c->iov[1].iov_len)) {
		log_debug("listener %s: TLS write failed: closing",
			  wcfg(c->w)->listeners[c->listener].name);
		client_close(c);
		return;
	}
	c->tls_plain = (uint32_t)(c->iov[0].iov_len + c->iov[1].iov_len);
	c->send_busy = true;
	tls_flush(c);
	if (!c->tls_sending) {
		/* Nothing to send: complete through a no-op so the caller's flow stays the same. */
		sqe = worker_sqe(c->w);
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data64(sqe, op_data(c, OP_CLIENT_SEND));
		c->pending++;
	}
}

/* Arms the next read: plaintext already decrypted (via a no-op), a kTLS recvmsg, or ciphertext. */
static void tls_arm_recv(struct client *c)
{
	struct io_uring_sqe *sqe;
	size_t len;
	char *p;

	if (c->state != CS_TLS) {
		if (tls_read_buffered(c->tls)) {
			ssize_t n = tls_read_into(c);

			if (n != TLS_WANT) {
				c->tls_ready = (int)n;
				c->tls_ready_nop = true;
				sqe = worker_sqe(c->w);
				io_uring_prep_nop(sqe);
				io_uring_sqe_set_data64(sqe, op_data(c, OP_CLIENT_RECV));
				c->recv_armed = true;
				c->pending++;
				return;
			}
		}
		if (tls_ktls_pending(c->tls) && !c->tls_sending && !c->send_busy) {
			int m = tls_ktls_try(c->tls, c->fd);

			c->tls_ktx = m & TLS_KTLS_TX;
			c->tls_krx = m & TLS_KTLS_RX;
		}
		if (c->tls_krx) {
			sqe = worker_sqe(c->w);
			io_uring_prep_recvmsg(sqe, c->fd,
					      tls_ktls_rxmsg(c->tls, c->in + c->in_len, c->in_cap - c->in_len), 0);
			if (c->state == CS_HEAD && c->in_len == 0)
				sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
			io_uring_sqe_set_data64(sqe, op_data(c, OP_CLIENT_RECV));
			c->recv_armed = true;
			c->pending++;
			return;
		}
	}
	p = tls_in_space(c->tls, &len);
	sqe = worker_sqe(c->w);
	io_uring_prep_recv(sqe, c->fd, p, len, 0);
	if (c->state == CS_HEAD && c->in_len == 0)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	io_uring_sqe_set_data64(sqe, op_data(c, OP_CLIENT_RECV));
	c->recv_armed = true;
	c->pending++;
}

static void tls_handshake_step(struct client *c)
{
	int r = tls_handshake(c->tls);
	const char *p;
	size_t n;

	if (r == -EPROTO) {
		/* The alert goes out first; tls_sent closes after it. */
		c->tls_fail = true;
		tls_flush(c);
		if (!c->tls_sending)
			client_close(c);
		return;
	}
	if (r == TLS_WANT) {
		tls_flush(c);
		arm_client_recv(c);
		return;
	}
	c->state = CS_HEAD;
	set_deadline(c, DL_IDLE, wcfg(c->w)->timeouts.client_header_ms);
	/* The last flight (session tickets, a few hundred bytes) goes out now on a fresh socket,
	 * so the kernel can take the record layer over before the first request. */
	while (tls_ktls_pending(c->tls) && !c->tls_sending && (n = tls_out_next(c->tls, &p))) {
		ssize_t k = send(c->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (k <= 0)
			break;
		tls_out_sent(c->tls, (size_t)k);
	}
	tls_flush(c);
	client_start_read(c);
}

static void client_tls_accept(struct client *c)
{
	struct tls_reg *r = c->w->snap->tls;

	c->tls = tls_conn_new(r, c->listener);
	if (!c->tls) {
		client_close(c);
		return;
	}
	c->state = CS_TLS;
	set_deadline(c, DL_IDLE, tls_handshake_timeout_ms(r, c->listener));
	arm_client_recv(c);
}

/* A read completed on a TLS connection: true when *res (now plaintext bytes, 0 or an error) goes on. */
static bool tls_recv_done(struct client *c, int *res)
{
	ssize_t n;

	if (c->tls_ready_nop) {
		c->tls_ready_nop = false;
		*res = c->tls_ready;
		return true;
	}
	if (c->tls_krx) {
		*res = tls_ktls_rxresult(c->tls, *res);
		return true;
	}
	if (*res == -ENOBUFS || *res == -EINTR || *res == -EAGAIN)
		return true;
	if (*res <= 0) {
		if (c->state == CS_TLS) {
			client_close(c);
			return false;
		}
		return true;
	}
	tls_in_commit(c->tls, (size_t)*res);
	if (c->state == CS_TLS) {
		tls_handshake_step(c);
		return false;
	}
	n = tls_read_into(c);
	if (n == TLS_WANT) {
		arm_client_recv(c);
		return false;
	}
	*res = (int)n;
	return true;
}

/* A send completed on a TLS connection: true when the state machine's own send is done (*res its size). */
static bool tls_sent(struct client *c, int *res)
{
	if (!c->tls_sending)
		return true; /* a plaintext send under kTLS, or the empty no-op */
	c->tls_sending = false;
	if (c->closing)
		return false;
	if (*res < 0) {
		if (c->send_busy)
			return true;
		c->error = "client went away";
		if (c->have_req)
			exchange_end(c, true);
		else
			client_close(c);
		return false;
	}
	if (tls_out_sent(c->tls, (size_t)*res)) {
		tls_flush(c);
		return false;
	}
	if (c->tls_fail) {
		client_close(c);
		return false;
	}
	if (c->send_busy) {
		*res = (int)c->tls_plain;
		return true;
	}
	return false;
}

/* ---- TLS to the backend (tls_client.h): ciphertext on the wire, plaintext for the state machine ---- */

static void on_up_connect(struct upconn *u, int res);

/* Sends queued ciphertext unless a send is in flight (its completion sends the rest). */
static void up_tls_flush(struct upconn *u)
{
	struct io_uring_sqe *sqe;
	const char *p;
	size_t n;

	if (u->tls_sending || u->closing)
		return;
	n = tls_up_out_next(u->tls, &p);
	if (!n)
		return;
	sqe = worker_sqe(u->w);
	io_uring_prep_send(sqe, u->fd, p, n, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_data(u, OP_UP_SEND));
	u->tls_sending = true;
	u->pending++;
}

/* Plaintext in u->iov is encrypted at once; the state machine hears of it when all ciphertext is out. */
static void up_tls_send_plain(struct upconn *u)
{
	struct io_uring_sqe *sqe;

	/* A request head and its first body bytes share one record. */
	if (tls_up_write2(u->tls, u->iov[0].iov_base, u->iov[0].iov_len, u->iov[1].iov_base,
			  u->iov[1].iov_len))
		u->tls_wfail = true;
	u->tls_plain = (uint32_t)(u->iov[0].iov_len + u->iov[1].iov_len);
	u->send_busy = true;
	if (!u->tls_wfail)
		up_tls_flush(u);
	if (!u->tls_sending) {
		/* Nothing to send (or a failure to report): complete through a no-op, the flow stays the same. */
		sqe = worker_sqe(u->w);
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data64(sqe, op_data(u, OP_UP_SEND));
		u->pending++;
	}
}

/* Arms the next read: plaintext already decrypted (via a no-op), or ciphertext (bounded by connect_ms while handshaking). */
static void up_tls_arm_recv(struct upconn *u)
{
	struct io_uring_sqe *sqe;
	size_t len;
	char *p;

	if (tls_up_ready(u->tls) && tls_up_read_buffered(u->tls)) {
		ssize_t n = tls_up_read(u->tls, u->buf + u->len, UP_BUF_SIZE - u->len);

		up_tls_flush(u);
		if (n != TLS_UP_WANT) {
			u->tls_ready = n == -EPROTO ? -ECONNRESET : (int)n;
			u->tls_ready_nop = true;
			sqe = worker_sqe(u->w);
			io_uring_prep_nop(sqe);
			io_uring_sqe_set_data64(sqe, op_data(u, OP_UP_RECV));
			u->recv_armed = true;
			u->pending++;
			return;
		}
	}
	if (tls_up_ktls_pending(u->tls) && !u->tls_sending) {
		/* No read is in flight; a send may be (then only RX may go). */
		int m = tls_up_ktls_try(u->tls, u->fd,
					u->send_busy ? TLS_UP_KTLS_RX : TLS_UP_KTLS_TX | TLS_UP_KTLS_RX);

		u->tls_ktx = m & TLS_UP_KTLS_TX;
		u->tls_krx = m & TLS_UP_KTLS_RX;
	}
	if (u->tls_krx) {
		sqe = worker_sqe(u->w);
		io_uring_prep_recvmsg(sqe, u->fd,
				      tls_up_ktls_rxmsg(u->tls, u->buf + u->len, UP_BUF_SIZE - u->len), 0);
		if (!u->head_parsed)
			sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
		io_uring_sqe_set_data64(sqe, op_data(u, OP_UP_RECV));
		u->recv_armed = true;
		u->pending++;
		return;
	}
	p = tls_up_in_space(u->tls, &len);
	sqe = worker_sqe(u->w);
	io_uring_prep_recv(sqe, u->fd, p, len, 0);
	if (!u->head_parsed)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	io_uring_sqe_set_data64(sqe, op_data(u, OP_UP_RECV));
	u->recv_armed = true;
	u->pending++;
	if (!tls_up_ready(u->tls) && u->owner) {
		/* The handshake is part of connecting: each of its reads gets the connect timeout. */
		uint64_t cms = route_timeouts(u->owner)->connect_ms;

		if (cms) {
			sqe->flags |= IOSQE_IO_LINK;
			u->cto.tv_sec = cms / 1000;
			u->cto.tv_nsec = (cms % 1000) * 1000000;
			sqe = worker_sqe(u->w);
			io_uring_prep_link_timeout(sqe, &u->cto, 0);
			io_uring_sqe_set_data64(sqe, OP_IGNORE);
		}
	}
}

/* The handshake failed or timed out: a connect failure for this server (retries, ejection apply). */
static void up_tls_hs_fail(struct upconn *u, int res)
{
	tls_up_abort(u->tls, res);
	on_up_connect(u, res == -ECANCELED ? -ECANCELED : -EPROTO);
}

static void up_tls_step(struct upconn *u)
{
	int r;

	if (!u->owner) {
		up_close(u);
		return;
	}
	r = tls_up_handshake(u->tls);
	if (r == -EPROTO) {
		on_up_connect(u, -EPROTO); /* logged with the reason by tls_client.c */
		return;
	}
	if (r == 1 && tls_up_ktls_pending(u->tls)) {
		const char *p;
		size_t n;

		/* The last flight (the client Finished, tens of bytes) goes out now on a fresh socket,
		 * so the kernel can take the sending side before the request. */
		while (!u->tls_sending && (n = tls_up_out_next(u->tls, &p))) {
			ssize_t k = send(u->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);

			if (k <= 0)
				break;
			tls_up_out_sent(u->tls, (size_t)k);
		}
	}
	up_tls_flush(u);
	if (r == TLS_UP_WANT) {
		arm_up_recv(u);
		return;
	}
	exchange_send_request(u->owner);
}

/* Connected to a server of a TLS pool: the handshake comes before the request. */
static void up_tls_start(struct upconn *u)
{
	const struct snapshot *sn = u->gen->snap;
	const struct cfg_server *srv = &sn->cfg->upstreams[u->pool].servers[u->server];

	u->tls = tls_up_new(sn->cfg->upstreams[u->pool].tls->ctx, (const struct sockaddr *)&srv->addr.ss,
			    sn->server_names[u->pool][u->server],
			    &u->gen->upools[u->pool][u->server].tls_session, 0);
	if (u->tls && srv->sni[0] && tls_up_set_server_name(u->tls, srv->sni)) {
		tls_up_free(u->tls);
		u->tls = NULL;
	}
	if (!u->tls) {
		on_up_connect(u, -ENOMEM);
		return;
	}
	up_tls_step(u);
}

/* A read completed on a TLS backend connection: true when *res (now plaintext bytes, 0 or an error) goes on. */
static bool up_tls_recv_done(struct upconn *u, int *res)
{
	ssize_t n;

	if (u->tls_ready_nop) {
		u->tls_ready_nop = false;
		*res = u->tls_ready;
		return true;
	}
	if (*res == -ENOBUFS || *res == -EINTR || *res == -EAGAIN) {
		arm_up_recv(u);
		return false;
	}
	if (u->tls_krx) {
		int r = tls_up_ktls_rxresult(u->tls, u->buf + u->len, *res);

		if (r == TLS_UP_WANT) {
			/* A session ticket under kTLS, skipped: read on, idle or not. */
			arm_up_recv(u);
			return false;
		}
		*res = r == -EPROTO ? -ECONNRESET : r;
		return true;
	}
	if (!tls_up_ready(u->tls)) {
		if (*res <= 0)
			up_tls_hs_fail(u, *res);
		else {
			tls_up_in_commit(u->tls, (size_t)*res);
			up_tls_step(u);
		}
		return false;
	}
	if (*res <= 0)
		return true;
	tls_up_in_commit(u->tls, (size_t)*res);
	n = tls_up_read(u->tls, u->buf + u->len, UP_BUF_SIZE - u->len);
	up_tls_flush(u);
	if (n == TLS_UP_WANT) {
		/* Records without data (session tickets): read on, idle or not. */
		arm_up_recv(u);
		return false;
	}
	*res = n == -EPROTO ? -ECONNRESET : (int)n;
	return true;
}

/* A send completed on a TLS backend connection: true when the state machine's own send is done (*res its size). */
static bool up_tls_sent(struct upconn *u, int *res)
{
	if (!u->tls_sending) {
		if (u->tls_ktx)
			return true; /* a plaintext send the kernel sealed */
		/* The no-op of up_tls_send_plain. */
		*res = u->tls_wfail ? -EPROTO : (int)u->tls_plain;
		u->tls_wfail = false;
		return true;
	}
	u->tls_sending = false;
	if (u->closing)
		return false;
	if (*res < 0) {
		if (u->send_busy)
			return true;
		if (!tls_up_ready(u->tls))
			up_tls_hs_fail(u, *res); /* a handshake flight could not go out */
		return false;
	}
	if (tls_up_out_sent(u->tls, (size_t)*res)) {
		up_tls_flush(u);
		return false;
	}
	if (u->send_busy) {
		*res = (int)u->tls_plain;
		return true;
	}
	return false;
}

/* ---- upstream connections ---------------------------------------------------- */

static void up_close(struct upconn *u)
{
	if (u->closing)
		return;
	u->closing = true;
	u->owner = NULL;
	dlist_del(&u->node);
	/* Freed by proxy_reap once every operation on it has come back. */
	dlist_add_tail(&u->w->dead_ups, &u->node);
	if (u->pending)
		cancel_fd(u->w, u->fd);
}

/* Returns the connection to its server's idle list, or closes it. */
static void up_release(struct upconn *u)
{
	struct worker *w = u->w;
	const struct cfg_upstream *uc = &wcfg(w)->upstreams[u->pool];
	struct upool_server *ps = &w->upools[u->pool][u->server];

	u->owner = NULL;
	/* Only the newest configuration keeps idle connections: older ones are on their way out. */
	if (!u->reusable || !u->resp_done || u->off != u->len || u->send_busy ||
	    ps->nidle >= uc->keepalive || w->draining || u->gen != w->cur) {
		up_close(u);
		return;
	}
	u->len = u->off = 0;
	u->head_parsed = false;
	u->resp_done = false;
	u->idle_since_ms = w->now_ms;
	dlist_add_head(&ps->idle, &u->node);
	ps->nidle++;
	/* A recv stays armed while idle: it sees the server closing, and it is the
	 * read that will carry the next response once the connection is reused. */
	arm_up_recv(u);
}

static struct upconn *up_take_idle(struct worker *w, int pool, int server)
{
	struct upool_server *ps = &w->upools[pool][server];

	while (!dlist_empty(&ps->idle)) {
		struct upconn *u = dlist_entry(ps->idle.next, struct upconn, node);

		dlist_del(&u->node);
		ps->nidle--;
		if (u->closing)
			continue;
		return u;
	}
	return NULL;
}

static void up_detach_idle(struct upconn *u)
{
	struct upool_server *ps = &u->w->upools[u->pool][u->server];

	if (!u->owner && !u->closing && u->node.next != &u->node) {
		dlist_del(&u->node);
		ps->nidle--;
	}
}

static struct upconn *up_new(struct worker *w, int pool, int server)
{
	const struct cfg_server *srv = &wcfg(w)->upstreams[pool].servers[server];
	struct upconn *u = aligned_alloc(16, sizeof(*u));
	int one = 1;

	if (!u)
		return NULL;
	memset(u, 0, sizeof(*u));
	u->buf = malloc(UP_BUF_SIZE);
	u->fd = socket(srv->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (!u->buf || u->fd < 0) {
		if (u->fd >= 0)
			close(u->fd);
		free(u->buf);
		free(u);
		return NULL;
	}
	setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	u->w = w;
	u->gen = worker_gen_get(w->gen);
	u->pool = pool;
	u->server = server;
	dlist_init(&u->node);
	w->nupconns++;
	breaker_conn_open(&w->snap->pools[pool], (unsigned)server);
	return u;
}

/* ---- client connections ------------------------------------------------------ */

/* Draining: an idle connection is closed DRAIN_IDLE_MS from now at most, and by the drain deadline. */
static void drain_idle_deadline(struct client *c)
{
	struct worker *w = c->w;
	uint64_t until = w->now_ms + DRAIN_IDLE_MS;

	if (until > w->drain_deadline_ms)
		until = w->drain_deadline_ms;
	if (until < w->now_ms)
		until = w->now_ms;
	if (!c->deadline_ms || c->deadline_ms > until) {
		c->dl_kind = DL_IDLE;
		c->deadline_ms = until;
	}
}

void proxy_accept(struct worker *w, struct wlistener *l, int fd)
{
	const struct config *cfg = wcfg(w);
	struct client *c;
	socklen_t plen;
	int one = 1;

	STAT_ADD(w, accepted, 1);
	/*
	 * Accepted as the drain began (an accept already in flight): the client's
	 * connect succeeded and its request may be on the way, so an HTTP connection
	 * is served (with Connection: close) rather than closed unanswered.
	 */
	if (w->draining && cfg->listeners[l->idx].ntcp_routes) {
		close(fd);
		return;
	}
	if (cfg->listeners[l->idx].ntcp_routes) {
		splice_accept_tcp(w, l->idx, fd); /* pure L4 listener (splice.h) */
		return;
	}
	c = aligned_alloc(16, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	memset(c, 0, sizeof(*c));
	c->in_cap = CLIENT_BUF_MIN;
	c->in = malloc(c->in_cap);
	c->out_cap = cfg->limits.header_size + 4096;
	c->out = malloc(c->out_cap);
	if (!c->in || !c->out) {
		free(c->in);
		free(c->out);
		free(c);
		close(fd);
		return;
	}
	c->w = w;
	c->gen = worker_gen_get(w->gen);
	c->fd = fd;
	c->listener = l->idx;
	c->route = -1;
	c->pool = c->server = -1;
	plen = sizeof(c->peer);
	getpeername(fd, (struct sockaddr *)&c->peer, &plen);
	net_addr_host((struct sockaddr *)&c->peer, c->peer_ip, sizeof(c->peer_ip));
	for (unsigned i = 0; i < cfg->ntrusted; i++)
		if (net_cidr_contains(&cfg->trusted_proxies[i], (struct sockaddr *)&c->peer))
			c->trusted = true;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	dlist_add_tail(&w->clients, &c->node);
	w->nclients++;
	STAT_ADD(w, active, 1);
	c->state = CS_HEAD;
	c->keep_alive = true;
	if (tls_listener_on(w->snap->tls, l->idx)) {
		client_tls_accept(c);
		return;
	}
	set_deadline(c, DL_IDLE, cfg->timeouts.client_header_ms);
	if (w->draining)
		drain_idle_deadline(c);
	arm_client_recv(c);
}

static void lb_finish(struct client *c);

static void client_close(struct client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	lb_finish(c);
	if (c->up) {
		c->up->reusable = false;
		up_close(c->up);
		c->up = NULL;
	}
	if (c->retry_armed) {
		/* A timer is not an operation on the fd: cancel_fd would not end it. */
		struct io_uring_sqe *sqe = worker_sqe(c->w);

		io_uring_prep_timeout_remove(sqe, op_data(c, OP_RETRY), 0);
		io_uring_sqe_set_data64(sqe, OP_IGNORE);
	}
	dlist_del(&c->node);
	dlist_add_tail(&c->w->dead_clients, &c->node);
	if (c->pending)
		cancel_fd(c->w, c->fd);
}

/*
 * Counted under the names of the exchange's own configuration (its
 * generation's slot map, metrics.h): a route added by a reload has its own
 * series at once. The key id only where the gate ran (a route matched).
 */
static void metrics_record_mapped(struct worker *w, struct client *c, const struct alog_entry *e)
{
	metrics_record_map(w->metrics, c->gen->mmap, e, c->listener, c->route, c->pool, c->server,
			   c->route >= 0 ? c->gv.key_id : NULL);
}

static void log_exchange(struct client *c)
{
	struct worker *w = c->w;
	const struct config *cfg = wcfg(w);
	struct alog_entry e = { 0 };
	/* Set once by the main thread after start-up; NULL when the guard is off. */
	struct guard *g = __atomic_load_n(&w->guard, __ATOMIC_ACQUIRE);

	/* Every answered exchange feeds the guard's auto-ban (repeated 4xx → XDP block). */
	if (g && c->status)
		guard_report(g, w->id, (struct sockaddr *)&c->peer, c->status);
	if (!c->have_req && !c->status)
		return;
	e.start_realtime_ns = c->t_start_real_ns;
	e.client = (struct sockaddr *)&c->peer;
	if (c->have_req) {
		e.method = c->req.method;
		e.method_len = c->req.method_len;
		e.path = c->req.path;
		e.path_len = c->req.path_len;
		e.query = c->req.query;
		e.query_len = c->req.query_len;
		e.req = &c->req;
	}
	e.status = c->status;
	e.bytes_in = c->bytes_in;
	e.bytes_out = c->bytes_out;
	e.route = c->route >= 0 ? cfg->routes[c->route].name : NULL;
	e.upstream = c->server >= 0 && c->pool >= 0 ? w->snap->server_names[c->pool][c->server]
						    : NULL;
	e.upstream_ns = c->t_resp_ns && c->t_sent_ns ? (int64_t)(c->t_resp_ns - c->t_sent_ns) : -1;
	e.total_ns = w->now_ns - c->t_start_ns;
	e.request_id = c->request_id[0] ? c->request_id : NULL;
	e.error = c->error;
	e.retries = c->nretries;
	e.listener = cfg->listeners[c->listener].name;
	if (c->trace_id[0]) {
		e.trace_id = c->trace_id;
		e.span_id = c->span_id;
		e.parent_span_id = c->parent_span_id[0] ? c->parent_span_id : NULL;
	}
	metrics_record_mapped(w, c, &e);
	if (w->alog)
		alog_write(w->alog, &e);
}

static void lb_finish(struct client *c)
{
	/* Breaker slots are held from admission to the end of the exchange. */
	if (c->brk_srv)
		breaker_server_release(&c->w->snap->pools[c->pool], (unsigned)c->brk_idx);
	if (c->brk_pool)
		breaker_pool_release(&c->w->snap->pools[c->pool]);
	c->brk_srv = c->brk_pool = false;
	if (!c->lb_begun)
		return;
	struct lb_pool *p = &c->w->snap->pools[c->pool];
	uint64_t lat = c->t_resp_ns && c->t_sent_ns ? c->t_resp_ns - c->t_sent_ns
						     : c->w->now_ns - c->t_sent_ns;

	lb_end(p, c->server, lat, c->w->now_ns);
	c->lb_begun = false;
}

/*
 * Route in splice mode, exchange complete and nothing buffered or in flight
 * on either side: the kernel relays the rest (splice.h). 0 when handed off
 * (or closed because splice is required), else the HTTP path carries on.
 */
static int exchange_splice(struct client *c)
{
	struct worker *w = c->w;
	struct upconn *u = c->up;
	uint32_t used = c->body_off < c->in_len ? c->body_off : c->in_len;
	struct splice_origin o = {
		.client = (struct sockaddr *)&c->peer, .listener = c->listener, .route = c->route,
		.pool = c->pool, .server = c->server, .first_in = c->bytes_in,
		.first_out = c->bytes_out,
	};
	int rc;

	/* A TLS connection never splices: its bytes on the wire are records, not HTTP. */
	if (c->tls || !splice_wanted(wcfg(w), c->route) || !c->keep_alive || w->draining || c->closing ||
	    !c->have_req || !c->req_body_done || c->status < 200 || c->status >= 400)
		return -EAGAIN;
	/* Bytes the backend sent right behind its response (u->overrun) are handed
	 * on to the client by the splice module, never parsed here. Anything else
	 * still in flight keeps the connection in HTTP, counted as a fallback. */
	if (c->pending || c->send_busy || !u->resp_done || !(u->reusable || u->overrun) ||
	    u->pending || u->send_busy || u->recv_armed || u->tls) {
		splice_fallback(u->tls ? "the backend connection is TLS"
			       : !(u->reusable || u->overrun) ? "the backend will not keep the connection"
			       : "an operation was still in flight when the first exchange ended");
		return -EAGAIN;
	}
	rc = splice_handoff(w, c->fd, u->fd, c->in + used, c->in_len - used, u->buf + u->off,
			    u->len - u->off, &o);
	if (rc == -EAGAIN)
		return rc;
	/* Handed off (the splice module holds its own fds) or refused: we are done here. */
	c->have_req = false;
	c->up = NULL;
	u->reusable = false;
	up_close(u);
	client_close(c);
	return 0;
}

/*
 * Between exchanges a client moves to the newest configuration (after a
 * reload), unless its listener is gone from it: then it keeps the one it was
 * accepted with until it closes.
 */
static void client_renew_gen(struct client *c)
{
	struct worker *w = c->w;
	const struct config *ocfg = c->gen->snap->cfg, *ncfg = w->cur->snap->cfg;
	const struct net_addr *a = &ocfg->listeners[c->listener].addr;
	struct wgen *old = c->gen;

	if (old == w->cur)
		return;
	for (unsigned i = 0; i < ncfg->nlisteners; i++) {
		const struct net_addr *b = &ncfg->listeners[i].addr;

		if (a->len == b->len && !memcmp(&a->ss, &b->ss, a->len)) {
			c->gen = worker_gen_get(w->cur);
			c->listener = i;
			worker_enter(w, c->gen);
			worker_gen_put(w, old);
			return;
		}
	}
}

/* The exchange is over (successfully or not): log it, then keep or drop the connection. */
static void exchange_end(struct client *c, bool close_client)
{
	struct worker *w = c->w;

	lb_finish(c);
	log_exchange(c);
	if (c->up && !close_client && exchange_splice(c) == 0)
		return;
	if (c->up) {
		struct upconn *u = c->up;

		c->up = NULL;
		up_release(u);
	}
	/*
	 * Draining, keep_alive is still set only when this response's head promised
	 * keep-alive before the drain began (proxy_drain): the client may already be
	 * sending its next request, so the connection goes idle like any other.
	 */
	if (close_client || !c->keep_alive || c->closing) {
		client_close(c);
		return;
	}
	/* Keep the pipelined bytes that followed this request. */
	uint32_t used = c->have_req ? c->body_off : 0;
	if (used > c->in_len)
		used = c->in_len;
	memmove(c->in, c->in + used, c->in_len - used);
	c->in_len -= used;
	c->have_req = false;
	c->resp_started = false;
	c->route = -1;
	c->pool = c->server = -1;
	c->status = 0;
	c->error = NULL;
	c->bytes_in = c->bytes_out = 0;
	c->t_sent_ns = c->t_resp_ns = 0;
	c->request_id[0] = '\0';
	c->trace_id[0] = c->span_id[0] = c->parent_span_id[0] = c->traceparent[0] = '\0';
	c->drop_tracestate = false;
	c->state = CS_HEAD;
	c->req_deadline_ms = 0;
	client_renew_gen(c);
	set_deadline(c, DL_IDLE, wcfg(w)->timeouts.idle_ms);
	if (w->draining)
		drain_idle_deadline(c);
	client_start_read(c);
}

/* Sends c->out[0, len) (and optional extra bytes) to the client. */
static void client_send_out(struct client *c, uint32_t len, const char *extra, size_t extra_len)
{
	c->iov[0].iov_base = c->out;
	c->iov[0].iov_len = len;
	c->iov[1].iov_base = (void *)extra;
	c->iov[1].iov_len = extra_len;
	c->bytes_out += len + extra_len;
	client_sendmsg(c);
}

/* Closes gracefully: shut the write side, read and discard until EOF or LINGER_MS. */
static void client_linger(struct client *c)
{
	c->state = CS_LINGER;
	if (c->tls && !c->tls_sending)
		tls_close_notify(c->tls, c->fd);
	shutdown(c->fd, SHUT_WR);
	set_deadline(c, DL_LINGER, LINGER_MS);
	c->in_len = 0;
	if (!c->recv_armed)
		arm_client_recv(c);
}

/* Answers with a response of the proxy's own (errors, direct routes). */
static void client_local_response(struct client *c, int status, const char *ctype, const char *body,
				  size_t body_len, bool keep_alive)
{
	ssize_t n;

	c->status = status;
	c->keep_alive = c->keep_alive && keep_alive && !c->w->draining;
	/* Head only into c->out; the body goes by reference (config bodies can be large). */
	n = forward_local_response(c->out, c->out_cap, status, ctype, body, body_len,
				   c->keep_alive, true, NULL);
	if (n < 0) {
		exchange_end(c, true);
		return;
	}
	c->state = CS_LOCAL;
	c->resp_started = true;
	if (c->have_req && c->req.is_head)
		body_len = 0;
	client_send_out(c, n, body, body_len);
	set_deadline(c, DL_RESP_BODY, route_timeouts(c)->upstream_idle_ms);
}

/* Answers the gate's refusal (401/403/429) with its headers: WWW-Authenticate, Retry-After, RateLimit-*. */
static void client_gate_deny(struct client *c)
{
	char *body = c->errbody;
	int n = snprintf(body, sizeof(c->errbody), "%d %s\n", c->gv.status,
			 http1_reason(c->gv.status));
	ssize_t len;

	c->error = c->gv.error;
	c->status = c->gv.status;
	/* A body we will not read would be parsed as the next request: close after. */
	c->keep_alive = c->keep_alive && c->req_body_done && !c->w->draining;
	len = forward_local_response(c->out, c->out_cap, c->status, "text/plain; charset=utf-8", body,
				     n, c->keep_alive, true, c->gv.resp_headers);
	if (len < 0) {
		exchange_end(c, true);
		return;
	}
	c->state = CS_LOCAL;
	c->resp_started = true;
	client_send_out(c, len, body, c->req.is_head ? 0 : (size_t)n);
	set_deadline(c, DL_RESP_BODY, route_timeouts(c)->upstream_idle_ms);
}

static void client_fail(struct client *c, int status, const char *why)
{
	char *body = c->errbody;
	int n;

	if (!c->error)
		c->error = why;
	if (c->up) {
		struct upconn *u = c->up;

		u->reusable = false;
		c->up = NULL;
		up_close(u);
	}
	if (c->resp_started || c->send_busy) {
		/* Part of a response is out: the only honest signal left is closing. */
		if (!c->status)
			c->status = status;
		exchange_end(c, true);
		return;
	}
	n = snprintf(body, sizeof(c->errbody), "%d %s\n", status, http1_reason(status));
	c->keep_alive = false;
	client_local_response(c, status, "text/plain; charset=utf-8", body, n, false);
}

/*
 * The client sees the request id the backend and the access log saw, so a
 * user's report can be matched to a log line. A backend that set its own
 * header of that name keeps it.
 */
static ssize_t echo_request_id(struct client *c, struct upconn *u, ssize_t n)
{
	const struct config *cfg = wcfg(c->w);
	const struct cfg_tracing *t = c->route >= 0 ? &cfg->routes[c->route].tracing : &cfg->tracing;
	const char *name = t->request_id_header ? t->request_id_header : "X-Request-ID";
	char line[160];
	int len;

	if (http1_find_header(u->resp.headers, u->resp.nheaders, name))
		return n;
	len = snprintf(line, sizeof(line), "%s: %s\r\n", name, c->request_id);
	if (len <= 0 || (size_t)len >= sizeof(line))
		return n;
	return forward_head_append(c->out, c->out_cap, (size_t)n, line);
}

/* The request id and the trace context of this exchange, per the route's tracing (or the top level's). */
static void make_request_id(struct client *c)
{
	const struct config *cfg = wcfg(c->w);
	const struct cfg_tracing *t = c->route >= 0 ? &cfg->routes[c->route].tracing : &cfg->tracing;
	const struct http1_header *h = http1_find_header(c->req.headers, c->req.nheaders,
							 t->request_id_header);
	bool trust = t->request_id_trust == CFG_TRUST_ALWAYS ||
		     (t->request_id_trust == CFG_TRUST_TRUSTED_PROXIES && c->trusted);

	/* Keep a sane incoming id from a peer we trust so a trace spans proxies. */
	if (h && trust && trace_request_id_ok(h->value, h->value_len, sizeof(c->request_id) - 1)) {
		memcpy(c->request_id, h->value, h->value_len);
		c->request_id[h->value_len] = '\0';
	} else {
		/* 128 bits from the worker's xorshift: unique enough for correlation, never a secret. */
		trace_random_hex(&c->w->rng, c->request_id, 32);
	}
	c->trace_id[0] = c->parent_span_id[0] = c->traceparent[0] = '\0';
	c->drop_tracestate = false;
	if (!t->traceparent)
		return;
	struct trace_parent tp;
	uint8_t flags = t->sample ? TRACE_FLAG_SAMPLED : 0;

	h = http1_find_header(c->req.headers, c->req.nheaders, "traceparent");
	if (h && trace_parse(h->value, h->value_len, &tp) == 0) {
		memcpy(c->trace_id, tp.trace_id, sizeof(c->trace_id));
		memcpy(c->parent_span_id, tp.parent_id, sizeof(c->parent_span_id));
		/* The caller decided about sampling; a later version's extra fields are not ours to send. */
		flags = tp.flags;
	} else {
		/* Absent or invalid (W3C: restart the trace, and the tracestate with it). */
		c->drop_tracestate = h != NULL;
		trace_random_hex(&c->w->rng, c->trace_id, TRACE_ID_HEX);
	}
	trace_random_hex(&c->w->rng, c->span_id, TRACE_SPAN_HEX);
	trace_format(c->traceparent, c->trace_id, c->span_id, flags);
}

/* A complete head is at the start of c->in: route it and start the exchange. */
static void exchange_begin(struct client *c)
{
	struct worker *w = c->w;
	const struct config *cfg = wcfg(w);
	const struct cfg_route *r;

	STAT_ADD(w, requests, 1);
	c->have_req = true;
	c->keep_alive = c->req.keep_alive && !w->draining;
	c->body_off = c->req.head_len;
	c->bytes_in = c->req.head_len;
	c->pool = c->server = -1;
	c->ntried = 0;
	c->nskipped = 0;
	c->nretries = c->try_base = 0;
	c->conn_retry = false;
	c->up = NULL;
	c->req_body_done = c->req.body == HTTP1_BODY_NONE;
	c->req_sent = c->resp_started = c->lb_begun = false;
	c->body_left = c->req.body == HTTP1_BODY_LENGTH ? c->req.content_length : 0;
	c->body_seen = 0;
	if (c->req.body == HTTP1_BODY_LENGTH && c->req.content_length == 0)
		c->req_body_done = true;
	http1_chunked_init(&c->chunk);

	c->route = route_match(cfg, c->listener, &c->req);
	make_request_id(c);
	if (c->route < 0) {
		c->error = "no route";
		/* A body we will not read would be parsed as the next request: close after. */
		client_local_response(c, 404, "text/plain; charset=utf-8", "404 Not Found\n", 14,
				      c->req_body_done);
		return;
	}
	r = &cfg->routes[c->route];
	if (r->timeouts.request_ms)
		c->req_deadline_ms = w->now_ms + r->timeouts.request_ms;
	/* Admission: who calls (API key, JWT) and how often, before any body is read. */
	if (gate_check(__atomic_load_n(&w->gate, __ATOMIC_ACQUIRE), w->id, cfg, c->route, &c->req,
		       (struct sockaddr *)&c->peer, w->now_ns, &c->gv)) {
		client_gate_deny(c);
		return;
	}
	if (r->max_body && c->req.body == HTTP1_BODY_LENGTH && c->req.content_length > r->max_body) {
		client_fail(c, 413, "request body over max_body");
		return;
	}
	if (r->has_respond) {
		client_local_response(c, r->respond.status, r->respond.content_type, r->respond.body,
				      r->respond.body_len, c->req_body_done);
		return;
	}
	c->pool = r->upstream;
	retry_budget_request(&w->lb[c->pool].retry, w->now_ms);
	set_deadline(c, DL_NONE, 0);
	/* The client waits for our word before sending a body it announced. */
	if (c->req.expect_continue && !c->req_body_done && c->in_len == c->req.head_len &&
	    c->req.version_minor == 1) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

		memcpy(c->out, cont, sizeof(cont) - 1);
		c->state = CS_CONTINUE;
		set_deadline(c, DL_RESP_BODY, r->timeouts.upstream_idle_ms);
		client_send_out(c, sizeof(cont) - 1, NULL, 0);
		c->bytes_out -= sizeof(cont) - 1;
		return;
	}
	exchange_connect(c);
}

static void try_parse(struct client *c)
{
	const struct config *cfg = wcfg(c->w);
	struct http1_limits lim = {
		.request_line = cfg->limits.request_line,
		.header_size = cfg->limits.header_size,
		.header_count = cfg->limits.header_count,
	};
	int r;

	if (c->in_len == 0) {
		arm_client_recv(c);
		return;
	}
	if (!c->t_start_ns) {
		c->t_start_ns = c->w->now_ns;
		c->t_start_real_ns = realtime_ns();
		set_deadline(c, DL_HEADER, cfg->timeouts.client_header_ms);
	}
	r = http1_parse_request(c->in, c->in_len, &lim, &c->req);
	if (r > 0) {
		exchange_begin(c);
		return;
	}
	if (r < 0) {
		c->bytes_in = c->in_len;
		client_fail(c, -r, c->req.error ? c->req.error : "malformed request");
		return;
	}
	if (c->in_len == c->in_cap) {
		uint32_t want = c->in_cap * 2;
		uint32_t max = cfg->limits.header_size + CLIENT_BUF_MIN;
		char *n;

		if (c->in_cap >= max) {
			client_fail(c, 431, "request head too large");
			return;
		}
		if (want > max)
			want = max;
		n = realloc(c->in, want);
		if (!n) {
			client_fail(c, 503, "out of memory");
			return;
		}
		c->in = n;
		c->in_cap = want;
	}
	arm_client_recv(c);
}

static void client_start_read(struct client *c)
{
	c->t_start_ns = 0;
	if (c->in_len)
		try_parse(c);
	else
		arm_client_recv(c);
}

/* ---- request towards the backend --------------------------------------------- */

static int pick_server(struct client *c)
{
	struct worker *w = c->w;
	struct lb_pool *p = &w->snap->pools[c->pool];
	uint64_t hash = lb_request_hash(p, &c->req, (struct sockaddr *)&c->peer);

	return lb_pick(p, &w->lb[c->pool], hash, c->tried, c->ntried, w->now_ns);
}

/* 503 at once with the reason in the body: no usable server, or a breaker tripped (breaker.h). */
static void client_unavailable(struct client *c, int kind)
{
	const struct breaker_msg *m = breaker_message(kind);

	c->error = m->error;
	client_local_response(c, 503, "text/plain; charset=utf-8", m->body, strlen(m->body),
			      c->req_body_done);
}

/* A pick after a failed connect is a connect_failure retry: counted once it goes out. */
static void retry_note_connect(struct client *c)
{
	if (!c->conn_retry)
		return;
	c->conn_retry = false;
	retry_count(&c->w->snap->pools[c->pool].retry, RETRY_CONNECT_FAILURE);
}

static void exchange_connect(struct client *c)
{
	struct worker *w = c->w;
	const struct cfg_upstream *uc = &wcfg(w)->upstreams[c->pool];
	unsigned tries = uc->connect_tries ? uc->connect_tries : 1;
	/* Without connect_failure in retry.on a refused connect ends the request (docs/retries.md). */
	if (!(uc->retry.on & RETRY_BIT(RETRY_CONNECT_FAILURE)))
		tries = 1;
	struct upconn *u;
	int s;

	c->state = CS_CONNECT;
	if (!c->brk_pool && !c->ntried) {
		int trip = breaker_pool_admit(&w->snap->pools[c->pool]);

		if (trip >= 0) {
			client_unavailable(c, trip);
			return;
		}
		c->brk_pool = true;
	}
	for (;;) {
		if (c->ntried - c->nskipped - c->try_base >= tries || c->ntried >= MAX_TRIES) {
			client_fail(c, c->status ? c->status : 502, c->error ? c->error
									     : "no backend reachable");
			return;
		}
		s = pick_server(c);
		if (s < 0 && c->ntried == c->nskipped) {
			client_unavailable(c, c->nskipped ? c->brk_trip : -1);
			return;
		}
		if (s < 0) {
			client_fail(c, c->status ? c->status : 502, c->error);
			return;
		}
		c->server = s;
		c->tried[c->ntried++] = s;
		if (c->brk_srv)
			breaker_server_release(&w->snap->pools[c->pool], (unsigned)c->brk_idx);
		c->brk_srv = false;
		bool pool_level;
		int trip = breaker_server_admit(&w->snap->pools[c->pool], (unsigned)s,
						!w->upools[c->pool][s].nidle, &pool_level);
		if (trip >= 0) {
			if (pool_level) {
				client_unavailable(c, trip);
				return;
			}
			/* Over this server's limit: try another without spending a connect try. */
			c->nskipped++;
			c->brk_trip = trip;
			continue;
		}
		c->brk_srv = true;
		c->brk_idx = s;
		u = up_take_idle(w, c->pool, s);
		if (u) {
			STAT_ADD(w, upstream_reuses, 1);
			retry_note_connect(c);
			u->owner = c;
			u->reused = true;
			c->up = u;
			exchange_send_request(c);
			return;
		}
		u = up_new(w, c->pool, s);
		if (u)
			break;
		c->status = 502;
		c->error = "cannot create backend socket";
	}
	STAT_ADD(w, upstream_connects, 1);
	retry_note_connect(c);
	u->owner = c;
	u->reused = false;
	c->up = u;
	const struct cfg_server *srv = &wcfg(w)->upstreams[c->pool].servers[s];
	uint64_t cms = route_timeouts(c)->connect_ms;
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_prep_connect(sqe, u->fd, (const struct sockaddr *)&srv->addr.ss, srv->addr.len);
	io_uring_sqe_set_data64(sqe, op_data(u, OP_UP_CONNECT));
	u->pending++;
	breaker_connect_begin(&w->snap->pools[c->pool], (unsigned)s);
	if (cms) {
		sqe->flags |= IOSQE_IO_LINK;
		u->cto.tv_sec = cms / 1000;
		u->cto.tv_nsec = (cms % 1000) * 1000000;
		sqe = worker_sqe(w);
		io_uring_prep_link_timeout(sqe, &u->cto, 0);
		io_uring_sqe_set_data64(sqe, OP_IGNORE);
	}
}

static void on_up_connect(struct upconn *u, int res)
{
	struct client *c = u->owner;

	if (!c) {
		up_close(u);
		return;
	}
	if (res < 0) {
		char why[128];

		snprintf(why, sizeof(why), "connect to %s: %s",
			 c->w->snap->server_names[c->pool][c->server],
			 res == -ECANCELED ? "timed out" : u->tls && res == -EPROTO ? "TLS handshake failed"
						       : strerror(-res));
		log_warn("route %s: %s", wcfg(c->w)->routes[c->route].name, why);
		c->status = res == -ECANCELED || res == -ETIMEDOUT ? 504 : 502;
		c->error = res == -ECANCELED ? "backend connect timeout"
			   : u->tls && res == -EPROTO ? "backend TLS handshake failed" : "backend connect failed";
		health_observe(&c->w->snap->pools[u->pool], u->server,
			       c->status == 504 ? HEALTH_TIMEOUT : HEALTH_CONNECT_FAIL, c->w->now_ns);
		c->up = NULL;
		up_close(u);
		c->conn_retry = true;
		exchange_connect(c);
		return;
	}
	u->connected = true;
	if (u->gen->snap->cfg->upstreams[u->pool].tls) {
		up_tls_start(u); /* the request follows the handshake */
		return;
	}
	exchange_send_request(c);
}

static uint32_t body_bytes_available(struct client *c, uint32_t from, bool *done, int *err);

static void exchange_send_request(struct client *c)
{
	struct worker *w = c->w;
	struct upconn *u = c->up;
	const struct cfg_route *r = &wcfg(w)->routes[c->route];
	const struct cfg_upstream *uc = &wcfg(w)->upstreams[c->pool];
	struct forward_ctx fc = {
		.client = (struct sockaddr *)&c->peer,
		.client_ip = c->peer_ip[0] ? c->peer_ip : NULL,
		.client_trusted = c->trusted,
		.tls = c->tls != NULL,
		.host_rewrite = r->host_rewrite,
		.request_id = c->request_id,
		.upstream_keep_alive = uc->keepalive > 0,
		.request_id_header = r->tracing.request_id_header,
		.traceparent = c->traceparent[0] ? c->traceparent : NULL,
		.drop_tracestate = c->drop_tracestate,
		.extra_headers = c->gv.up_headers[0] ? c->gv.up_headers : NULL,
		.strip_header = c->gv.strip_header,
		.strip_query = c->gv.strip_query,
	};
	ssize_t n;
	uint32_t avail;
	bool done = c->req_body_done;
	int err = 0;

	c->status = 0;
	c->error = NULL;
	n = forward_request_head(c->out, c->out_cap, &c->req, &fc);
	if (n < 0) {
		client_fail(c, 431, "request head too large to forward");
		return;
	}
	avail = body_bytes_available(c, c->req.head_len, &done, &err);
	if (err) {
		client_fail(c, err, "malformed chunked request body");
		return;
	}
	c->req_body_done = done;
	c->body_off = c->req.head_len;
	/* The whole request is still in our buffer while it is all we have sent. */
	c->replayable = done;
	u->reusable = true;
	u->head_parsed = false;
	u->resp_done = false;
	u->resp_left = 0;
	u->iov[0].iov_base = c->out;
	u->iov[0].iov_len = n;
	u->iov[1].iov_base = c->in + c->req.head_len;
	u->iov[1].iov_len = avail;
	c->body_off = c->req.head_len + avail;
	c->state = CS_SEND_HEAD;
	if (!c->lb_begun) {
		lb_begin(&w->snap->pools[c->pool], c->server);
		c->lb_begun = true;
	}
	c->t_sent_ns = w->now_ns;
	set_deadline(c, DL_RESPONSE, route_timeouts(c)->upstream_response_ms);
	up_sendmsg(u);
	arm_up_recv(u);
}

/*
 * How many bytes from `from` on in c->in belong to the request body; counts
 * them against max_body and the framing. Sets *done at the body's end.
 */
static uint32_t body_bytes_available(struct client *c, uint32_t from, bool *done, int *err)
{
	const struct config *cfg = wcfg(c->w);
	const struct cfg_route *r = &cfg->routes[c->route];
	uint32_t have = c->in_len - from;
	uint32_t take = 0;

	*err = 0;
	if (*done)
		return 0;
	if (c->req.body == HTTP1_BODY_LENGTH) {
		take = have < c->body_left ? have : (uint32_t)c->body_left;
		c->body_left -= take;
		c->body_seen += take;
		c->bytes_in += take;
		*done = c->body_left == 0;
	} else if (c->req.body == HTTP1_BODY_CHUNKED) {
		struct http1_limits lim = {
			.request_line = cfg->limits.request_line,
			.header_size = cfg->limits.header_size,
			.header_count = cfg->limits.header_count,
		};
		ssize_t k = http1_chunked_scan(&c->chunk, c->in + from, have, &lim);

		if (k < 0) {
			*err = 400;
			return 0;
		}
		take = k;
		c->body_seen = c->chunk.data_bytes;
		c->bytes_in += take;
		*done = c->chunk.done;
	} else {
		*done = true;
	}
	if (r->max_body && c->body_seen > r->max_body)
		*err = 413;
	return take;
}

/* Retries a request that died on a reused connection before any response byte. */
static bool maybe_replay(struct client *c, struct upconn *u)
{
	if (!u->reused || u->head_parsed || u->len || !c->replayable || c->resp_started)
		return false;
	/* A pooled connection the server closed just as we reused it: a fresh one fixes it. */
	c->up = NULL;
	u->reusable = false;
	up_close(u);
	c->ntried--;
	c->body_off = c->req.head_len;
	c->body_left = c->req.body == HTTP1_BODY_LENGTH ? c->req.content_length : 0;
	c->body_seen = 0;
	c->bytes_in = c->req.head_len;
	c->req_body_done = c->req.body == HTTP1_BODY_NONE ||
			   (c->req.body == HTTP1_BODY_LENGTH && c->req.content_length == 0);
	http1_chunked_init(&c->chunk);
	/* Force a new connection to the same server rather than another idle one. */
	struct upconn *nu = up_new(c->w, c->pool, c->server);
	if (!nu)
		return false;
	c->tried[c->ntried++] = c->server;
	STAT_ADD(c->w, upstream_connects, 1);
	nu->owner = c;
	c->up = nu;
	const struct cfg_server *srv = &wcfg(c->w)->upstreams[c->pool].servers[c->server];
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	uint64_t cms = route_timeouts(c)->connect_ms;

	c->state = CS_CONNECT;
	io_uring_prep_connect(sqe, nu->fd, (const struct sockaddr *)&srv->addr.ss, srv->addr.len);
	io_uring_sqe_set_data64(sqe, op_data(nu, OP_UP_CONNECT));
	nu->pending++;
	breaker_connect_begin(&c->w->snap->pools[c->pool], (unsigned)c->server);
	if (cms) {
		sqe->flags |= IOSQE_IO_LINK;
		nu->cto.tv_sec = cms / 1000;
		nu->cto.tv_nsec = (cms % 1000) * 1000000;
		sqe = worker_sqe(c->w);
		io_uring_prep_link_timeout(sqe, &nu->cto, 0);
		io_uring_sqe_set_data64(sqe, OP_IGNORE);
	}
	return true;
}

/* ---- retries (retry.h): a failed attempt goes again, elsewhere, after a jittered pause ---- */

static bool server_usable(const void *ctx, unsigned i)
{
	const struct lb_pool *p = ctx;

	return lb_server_ok(&p->servers[i]);
}

/*
 * Tries the request again when the pool's retry policy allows it: only while
 * nothing of any response has gone to the client. false leaves the caller to
 * end the exchange as it would without retries.
 */
static bool exchange_retry(struct client *c, enum retry_reason why)
{
	struct worker *w = c->w;
	const struct config *cfg = wcfg(w);
	enum retry_refuse refuse = RETRY_REFUSE_N;
	struct io_uring_sqe *sqe;
	struct lb_pool *p;
	uint64_t delay = 0;
	unsigned n;

	if (c->pool < 0 || c->route < 0 || c->closing || c->resp_started || c->bytes_out ||
	    c->send_busy)
		return false;
	p = &w->snap->pools[c->pool];
	struct retry_ask a = {
		.reason = why,
		.done = c->nretries,
		.idempotent = retry_method_idempotent(c->req.method, c->req.method_len) ||
			      cfg->routes[c->route].retry_non_idempotent,
		.replayable = c->replayable && c->req_body_done,
		.now_ms = w->now_ms,
		.deadline_ms = c->req_deadline_ms,
	};
	switch (retry_decide(&cfg->upstreams[c->pool].retry, &w->lb[c->pool].retry, &a, &w->rng,
			     &delay, &refuse)) {
	case RETRY_NO:
		return false;
	case RETRY_REFUSED:
		retry_count_refused(&p->retry, refuse);
		return false;
	case RETRY_GO:
		break;
	}
	retry_count(&p->retry, why);
	c->nretries++;
	log_debug("route %s: retry %u of %s after %s from %s in %llums", cfg->routes[c->route].name,
		  c->nretries, cfg->upstreams[c->pool].name, retry_reason_name(why),
		  w->snap->server_names[c->pool][c->server], (unsigned long long)delay);
	if (c->up) {
		struct upconn *u = c->up;

		/* Whatever the backend still sends for this attempt is discarded with the connection. */
		u->reusable = false;
		c->up = NULL;
		up_close(u);
	}
	if (c->lb_begun) {
		lb_end(p, c->server, c->t_resp_ns && c->t_sent_ns ? c->t_resp_ns - c->t_sent_ns : 0,
		       w->now_ns);
		c->lb_begun = false;
	}
	c->t_resp_ns = 0;
	c->status = 0; /* nothing was answered yet; the error of the attempt stays for the log */
	n = retry_exclude(c->tried, c->ntried, MAX_TRIES - 1, c->server, p->nservers, server_usable, p);
	if (n != c->ntried) {
		c->ntried = n;
		c->nskipped = 0;
	}
	c->try_base = c->ntried - c->nskipped;
	/* The whole request is in c->in (replayable): send it again from its start. */
	c->body_off = c->req.head_len;
	c->body_left = c->req.body == HTTP1_BODY_LENGTH ? c->req.content_length : 0;
	c->body_seen = 0;
	c->bytes_in = c->req.head_len;
	c->req_body_done = c->req.body == HTTP1_BODY_NONE ||
			   (c->req.body == HTTP1_BODY_LENGTH && c->req.content_length == 0);
	http1_chunked_init(&c->chunk);
	c->state = CS_RETRY_WAIT;
	set_deadline(c, DL_NONE, 0);
	/* The worker never sleeps: the pause is an io_uring timeout (timeouts.request still runs). */
	c->retry_ts.tv_sec = (long long)(delay / 1000);
	c->retry_ts.tv_nsec = (long long)(delay % 1000) * 1000000;
	sqe = worker_sqe(w);
	io_uring_prep_timeout(sqe, &c->retry_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, op_data(c, OP_RETRY));
	c->pending++;
	c->retry_armed = true;
	return true;
}

static void on_retry_timer(struct client *c)
{
	c->retry_armed = false;
	if (c->closing || c->state != CS_RETRY_WAIT)
		return;
	exchange_connect(c);
}

static void on_up_send(struct upconn *u, int res)
{
	struct client *c = u->owner;

	if (u->tls && !up_tls_sent(u, &res))
		return;
	u->send_busy = false;
	if (!c) {
		if (u->closing)
			return;
		up_close(u);
		return;
	}
	if (res < 0) {
		if (maybe_replay(c, u))
			return;
		if (u->head_parsed) {
			/* The backend answered early and stopped reading: let the answer through. */
			u->reusable = false;
			c->keep_alive = false;
			return;
		}
		if (exchange_retry(c, RETRY_RESET))
			return;
		client_fail(c, 502, "backend closed while receiving the request");
		return;
	}
	if (!iov_advance(u->iov, res)) {
		up_sendmsg(u);
		return;
	}
	if (u->head_parsed) {
		/* The response is already flowing; the rest of the body is moot. */
		return;
	}
	if (u->len > u->off) {
		/* The backend answered before the whole request was up. */
		up_process(u);
		return;
	}
	if (!c->req_body_done) {
		/* Everything buffered was body and went up: read more of it. */
		c->in_len = c->req.head_len;
		c->body_off = c->req.head_len;
		c->replayable = false;
		c->state = CS_BODY;
		set_deadline(c, DL_BODY, route_timeouts(c)->client_body_ms);
		arm_client_recv(c);
		return;
	}
	c->req_sent = true;
	c->state = CS_WAIT_RESP;
	c->t_sent_ns = c->w->now_ns;
	set_deadline(c, DL_RESPONSE, route_timeouts(c)->upstream_response_ms);
	if (u->len > u->off)
		up_process(u);
	else
		arm_up_recv(u);
}

static void on_client_body(struct client *c)
{
	bool done = false;
	int err = 0;
	uint32_t from = c->req.head_len;
	uint32_t n = body_bytes_available(c, from, &done, &err);
	struct upconn *u = c->up;

	if (err) {
		client_fail(c, err, err == 413 ? "request body over max_body"
					       : "malformed chunked request body");
		return;
	}
	c->req_body_done = done;
	if (n == 0) {
		arm_client_recv(c);
		return;
	}
	c->body_off = from + n;
	u->iov[0].iov_base = c->in + from;
	u->iov[0].iov_len = n;
	u->iov[1].iov_len = 0;
	set_deadline(c, DL_BODY, route_timeouts(c)->client_body_ms);
	up_sendmsg(u);
}

/* ---- response towards the client --------------------------------------------- */

/* Body bytes of the response in u->buf[u->off, u->len); sets resp_done at the end. */
static int resp_body_take(struct upconn *u, uint32_t *take, uint32_t *skip)
{
	const struct config *cfg = wcfg(u->w);
	uint32_t have = u->len - u->off;

	*take = 0;
	*skip = 0;
	switch (u->resp.body) {
	case HTTP1_BODY_NONE:
		u->resp_done = true;
		break;
	case HTTP1_BODY_LENGTH:
		*take = have < u->resp_left ? have : (uint32_t)u->resp_left;
		u->resp_left -= *take;
		u->resp_done = u->resp_left == 0;
		break;
	case HTTP1_BODY_CHUNKED: {
		struct http1_limits lim = {
			.request_line = cfg->limits.request_line,
			.header_size = cfg->limits.header_size,
			.header_count = cfg->limits.header_count,
		};
		ssize_t k;

		if (u->dechunk) {
			/* An HTTP/1.0 client cannot take chunks: send the bare data, end by closing. */
			size_t data = 0;

			k = http1_chunked_decode(&u->chunk, u->buf + u->off, have, &data, &lim);
			if (k < 0)
				return -1;
			*take = data;
			*skip = k - data;
		} else {
			k = http1_chunked_scan(&u->chunk, u->buf + u->off, have, &lim);
			if (k < 0)
				return -1;
			*take = k;
		}
		u->resp_done = u->chunk.done;
		break;
	}
	case HTTP1_BODY_CLOSE:
		*take = have;
		break;
	}
	return 0;
}

/* Sends head (in c->out, may be 0 bytes) plus the response body bytes buffered in u. */
static void resp_forward(struct client *c, struct upconn *u, uint32_t head_len)
{
	uint32_t take, skip;

	if (resp_body_take(u, &take, &skip) < 0) {
		client_fail(c, 502, "malformed chunked response body");
		return;
	}
	c->iov[0].iov_base = c->out;
	c->iov[0].iov_len = head_len;
	c->iov[1].iov_base = u->buf + u->off;
	c->iov[1].iov_len = take;
	if (head_len && take && take <= 4096 && head_len + take <= c->out_cap) {
		/* A small body is cheaper copied behind the head than sent as a second iovec. */
		memcpy(c->out + head_len, u->buf + u->off, take);
		c->iov[0].iov_len = head_len + take;
		c->iov[1].iov_len = 0;
	}
	if (!head_len) {
		c->iov[0] = c->iov[1];
		c->iov[1].iov_len = 0;
	}
	/* Decoded chunk data sits at the front of the consumed span; the rest was framing. */
	u->off += take + skip;
	if (u->resp_done && u->off != u->len) {
		u->overrun = u->reusable;
		u->reusable = false; /* the backend sent more than the response */
	}
	c->bytes_out += head_len + take;
	if (c->iov[0].iov_len == 0) {
		/* Nothing to send (bodiless response fully handled or empty read). */
		if (u->resp_done) {
			exchange_end(c, !c->keep_alive);
			return;
		}
		u->len = u->off = 0;
		arm_up_recv(u);
		return;
	}
	c->resp_started = true;
	client_sendmsg(c);
}

static void up_process(struct upconn *u)
{
	struct client *c = u->owner;
	const struct config *cfg = wcfg(u->w);
	struct http1_limits lim = {
		.request_line = cfg->limits.request_line,
		.header_size = cfg->limits.header_size,
		.header_count = cfg->limits.header_count,
	};

	if (u->head_parsed) {
		resp_forward(c, u, 0);
		return;
	}
	int r = http1_parse_response(u->buf + u->off, u->len - u->off, &lim, c->req.is_head, &u->resp);
	if (r == 0) {
		if (u->len == UP_BUF_SIZE && u->off == 0) {
			client_fail(c, 502, "backend response head too large");
			return;
		}
		if (u->len == UP_BUF_SIZE) {
			memmove(u->buf, u->buf + u->off, u->len - u->off);
			u->len -= u->off;
			u->off = 0;
		}
		arm_up_recv(u);
		return;
	}
	if (r < 0) {
		client_fail(c, 502, u->resp.error ? u->resp.error : "malformed backend response");
		return;
	}
	if (u->resp.status < 200) {
		/* Interim responses pass to HTTP/1.1 clients; the final one follows. */
		ssize_t n = 0;

		if (c->req.version_minor == 1 && u->resp.status != 100)
			n = forward_response_head(c->out, c->out_cap, &u->resp, true, 1);
		u->off += r;
		if (n > 0) {
			c->iov[0].iov_base = c->out;
			c->iov[0].iov_len = n;
			c->iov[1].iov_len = 0;
			c->bytes_out += n;
			c->state = CS_RESP;
			client_sendmsg(c);
			/* The final head is parsed after this send completes. */
			return;
		}
		up_process(u);
		return;
	}
	u->head_parsed = true;
	u->off += r;
	c->t_resp_ns = c->w->now_ns;
	c->status = u->resp.status;
	health_observe(&c->w->snap->pools[u->pool], u->server,
		       c->status >= 500 ? HEALTH_5XX : HEALTH_OK, c->w->now_ns);
	/* Decided on the head alone: not a byte of this response has reached the client. */
	int rs = retry_reason_of_status(c->status);
	if (rs >= 0 && exchange_retry(c, (enum retry_reason)rs))
		return;
	if (!u->resp.keep_alive)
		u->reusable = false;
	if (u->resp.body == HTTP1_BODY_CLOSE)
		c->keep_alive = false; /* only closing tells the client where the body ends */
	if (!c->req_body_done) {
		/* An early answer (e.g. 413 from the backend): the body can no longer be
		 * resynchronised on either connection. */
		c->keep_alive = false;
		u->reusable = false;
	}
	u->resp_left = u->resp.body == HTTP1_BODY_LENGTH ? u->resp.content_length : 0;
	http1_chunked_init(&u->chunk);
	u->dechunk = u->resp.body == HTTP1_BODY_CHUNKED && c->req.version_minor == 0;
	if (u->dechunk) {
		c->keep_alive = false;
		u->reusable = false;
	}
	ssize_t n = forward_response_head(c->out, c->out_cap, &u->resp, c->keep_alive,
					  c->req.version_minor);
	if (n > 0 && c->gv.resp_headers[0])
		n = forward_head_append(c->out, c->out_cap, (size_t)n, c->gv.resp_headers);
	if (n > 0 && c->request_id[0])
		n = echo_request_id(c, u, n);
	if (n < 0) {
		client_fail(c, 502, "backend response head too large to forward");
		return;
	}
	c->state = CS_RESP;
	set_deadline(c, DL_RESP_BODY, route_timeouts(c)->upstream_idle_ms);
	resp_forward(c, u, n);
}

static void on_up_recv(struct upconn *u, int res)
{
	struct client *c = u->owner;

	u->recv_armed = false;
	if (u->closing)
		return;
	if (u->tls && !up_tls_recv_done(u, &res))
		return;
	if (!c) {
		/* Idle in the pool: the server closed it, or sent bytes nobody asked for. */
		up_detach_idle(u);
		up_close(u);
		return;
	}
	if (res == -ENOBUFS || res == -EINTR || res == -EAGAIN) {
		arm_up_recv(u);
		return;
	}
	if (res <= 0) {
		if (u->head_parsed && u->resp.body == HTTP1_BODY_CLOSE) {
			u->resp_done = true;
			u->reusable = false;
			if (!c->send_busy)
				exchange_end(c, true);
			return;
		}
		if (maybe_replay(c, u))
			return;
		if (u->head_parsed) {
			c->error = "backend closed mid-response";
			exchange_end(c, true);
			return;
		}
		if (exchange_retry(c, RETRY_RESET))
			return;
		client_fail(c, 502, res == 0 ? "backend closed without a response"
					     : "backend connection reset");
		return;
	}
	u->len += res;
	/* The request head is still going out of c->out, or the client is taking the
	 * previous chunk: whoever finishes first picks these bytes up. */
	if (c->state == CS_SEND_HEAD || c->state == CS_CONNECT || c->send_busy)
		return;
	up_process(u);
}

static void on_client_send(struct client *c, int res)
{
	struct upconn *u = c->up;

	if (c->tls && !tls_sent(c, &res))
		return;
	c->send_busy = false;
	if (c->closing)
		return;
	if (res < 0) {
		c->error = "client went away";
		exchange_end(c, true);
		return;
	}
	if (!iov_advance(c->iov, res)) {
		client_sendmsg(c);
		return;
	}
	switch (c->state) {
	case CS_CONTINUE:
		exchange_connect(c);
		return;
	case CS_LOCAL:
		if (!c->keep_alive && c->have_req && !c->req_body_done) {
			lb_finish(c);
			log_exchange(c);
			c->have_req = false;
			client_linger(c);
			return;
		}
		if (!c->keep_alive) {
			lb_finish(c);
			log_exchange(c);
			c->have_req = false;
			c->status = 0;
			client_linger(c);
			return;
		}
		exchange_end(c, false);
		return;
	case CS_RESP:
		if (!u) {
			exchange_end(c, true);
			return;
		}
		if (!u->head_parsed) {
			/* An interim response went out; parse what follows. */
			if (u->len > u->off)
				up_process(u);
			else
				arm_up_recv(u);
			return;
		}
		if (u->resp_done) {
			if (!c->req_body_done) {
				/* Early response: the body's remainder is never forwarded. */
				c->keep_alive = false;
			}
			exchange_end(c, !c->keep_alive);
			return;
		}
		set_deadline(c, DL_RESP_BODY, route_timeouts(c)->upstream_idle_ms);
		if (u->len > u->off) {
			up_process(u);
			return;
		}
		if (!u->recv_armed) {
			u->len = u->off = 0;
			arm_up_recv(u);
		}
		return;
	default:
		return;
	}
}

/*
 * An idle connection's time is up. Its recv may already have brought a
 * request that is waiting to be processed, or one may be in the socket:
 * closing now would lose it (and reset the connection). So the recv is
 * cancelled first and the connection closed only when the recv ends with
 * no byte and none is waiting (on_client_recv); bytes are served instead.
 */
static void idle_close(struct client *c)
{
	struct io_uring_sqe *sqe;

	if (c->idle_cancel || !c->recv_armed || c->state != CS_HEAD || c->in_len) {
		client_close(c);
		return;
	}
	sqe = worker_sqe(c->w);
	io_uring_prep_cancel64(sqe, op_data(c, OP_CLIENT_RECV), 0);
	io_uring_sqe_set_data64(sqe, OP_IGNORE);
	c->idle_cancel = true;
	/* Should the cancel find nothing to cancel (a TLS no-op, say), close for sure later. */
	set_deadline(c, DL_IDLE, DRAIN_IDLE_MS);
}

/* The recv of an idle_close ended: true when the connection was closed, false to serve res. */
static bool idle_close_done(struct client *c, int res)
{
	int avail = 0;

	c->idle_cancel = false;
	if (res > 0)
		return false;
	if (res < 0 && res != -ECANCELED) {
		client_close(c);
		return true;
	}
	if (res == -ECANCELED && ioctl(c->fd, FIONREAD, &avail) == 0 && avail > 0) {
		/* A request came in as we gave up on it: read and serve it. */
		set_deadline(c, DL_HEADER, wcfg(c->w)->timeouts.client_header_ms);
		arm_client_recv(c);
		return true;
	}
	client_close(c);
	return true;
}

static void on_client_recv(struct client *c, int res)
{
	c->recv_armed = false;
	if (c->closing)
		return;
	if (c->idle_cancel && idle_close_done(c, res))
		return;
	if (c->tls && !tls_recv_done(c, &res))
		return;
	if (res == -ENOBUFS || res == -EINTR || res == -EAGAIN) {
		arm_client_recv(c);
		return;
	}
	if (c->state == CS_LINGER) {
		if (res <= 0) {
			client_close(c);
			return;
		}
		c->in_len = 0;
		arm_client_recv(c);
		return;
	}
	if (res <= 0) {
		/* The client hung up (or reset). Quietly when idle, logged mid-exchange. */
		if (c->state == CS_HEAD && c->in_len == 0) {
			client_close(c);
			return;
		}
		if (c->state == CS_HEAD) {
			c->error = "client closed before the request head was complete";
			c->status = 0;
			c->bytes_in = c->in_len;
			exchange_end(c, true);
			return;
		}
		if (c->state == CS_WAIT_RESP || c->state == CS_RESP || c->state == CS_LOCAL ||
		    c->state == CS_RETRY_WAIT) {
			/* Half-close after the request is complete is legal: keep answering. */
			if (res == 0) {
				c->keep_alive = false;
				return;
			}
		}
		c->error = "client closed mid-request";
		exchange_end(c, true);
		return;
	}
	c->in_len += res;
	switch (c->state) {
	case CS_HEAD:
		try_parse(c);
		return;
	case CS_BODY:
		on_client_body(c);
		return;
	default:
		/* Pipelined bytes arriving while we answer: keep them for later. */
		if (c->in_len < c->in_cap)
			arm_client_recv(c);
		return;
	}
}

void proxy_complete(struct worker *w, void *obj, enum op op, int res, unsigned flags)
{
	switch (op) {
	case OP_CLIENT_RECV: {
		struct client *c = obj;

		worker_enter(w, c->gen);
		c->pending--;
		on_client_recv(c, res);
		return;
	}
	case OP_CLIENT_SEND: {
		struct client *c = obj;

		worker_enter(w, c->gen);
		c->pending--;
		on_client_send(c, res);
		return;
	}
	case OP_UP_CONNECT: {
		struct upconn *u = obj;

		worker_enter(w, u->owner ? u->owner->gen : u->gen);
		u->pending--;
		breaker_connect_end(&u->w->snap->pools[u->pool], (unsigned)u->server);
		if (!u->closing)
			on_up_connect(u, res);
		return;
	}
	case OP_UP_RECV: {
		struct upconn *u = obj;

		worker_enter(w, u->owner ? u->owner->gen : u->gen);
		u->pending--;
		on_up_recv(u, res);
		return;
	}
	case OP_UP_SEND: {
		struct upconn *u = obj;

		worker_enter(w, u->owner ? u->owner->gen : u->gen);
		u->pending--;
		on_up_send(u, res);
		return;
	}
	case OP_RETRY: {
		struct client *c = obj;

		worker_enter(w, c->gen);
		c->pending--;
		on_retry_timer(c);
		return;
	}
	case OP_SPLICE:
		splice_complete(w, obj, res, flags);
		return;
	default:
		return;
	}
}

/* Called every tick: expire deadlines. */
void proxy_tick(struct worker *w)
{
	struct dlist *pos, *tmp;

	dlist_for_each_safe(pos, tmp, &w->clients) {
		struct client *c = dlist_entry(pos, struct client, node);
		bool whole = c->req_deadline_ms && w->now_ms >= c->req_deadline_ms;

		if (c->closing)
			continue;
		if (!whole && (!c->deadline_ms || w->now_ms < c->deadline_ms))
			continue;
		enum deadline k = whole ? DL_RESPONSE : c->dl_kind;

		worker_enter(w, c->gen);

		uint64_t req_dl = c->req_deadline_ms;

		c->deadline_ms = 0;
		c->req_deadline_ms = 0;
		switch (k) {
		case DL_IDLE:
			idle_close(c);
			break;
		case DL_LINGER:
			client_close(c);
			break;
		case DL_HEADER:
			c->bytes_in = c->in_len;
			client_fail(c, 408, "client header timeout");
			break;
		case DL_BODY:
			client_fail(c, 408, "client body timeout");
			break;
		case DL_RESPONSE:
			/* A backend that does not answer in time counts against it (outlier detection). */
			if (c->pool >= 0 && c->server >= 0 && !c->resp_started &&
			    (!whole || c->state == CS_WAIT_RESP))
				health_observe(&w->snap->pools[c->pool], c->server, HEALTH_TIMEOUT,
					       w->now_ns);
			if (!whole && c->up) {
				/* A retry still answers to the whole-request limit. */
				c->req_deadline_ms = req_dl;
				if (exchange_retry(c, RETRY_TIMEOUT))
					break;
				c->req_deadline_ms = 0;
			}
			client_fail(c, 504, whole ? "request timeout" : "backend response timeout");
			break;
		case DL_RESP_BODY:
			c->error = "response stalled";
			exchange_end(c, true);
			break;
		case DL_NONE:
			break;
		}
	}
	worker_enter(w, w->cur);
	/* Idle pooled connections are not timed here; the server's own idle close is seen by the armed recv. */
}

/*
 * Graceful stop: busy connections close after their exchange. An idle
 * keep-alive connection is not closed at once: a client may be sending its
 * next request on it right now, and would see the close instead of an answer
 * (HAProxy before 2.4, and with idle-close-on-response, does the same). Its
 * next request is served with "Connection: close"; if none comes within
 * DRAIN_IDLE_MS (never later than the drain deadline, nor its own idle
 * timeout) it is closed the way an idle timeout closes it (idle_close). A
 * response whose head promised keep-alive before the drain leaves its
 * connection idle the same way.
 */
void proxy_drain(struct worker *w)
{
	struct dlist *pos, *tmp;

	dlist_for_each_safe(pos, tmp, &w->clients) {
		struct client *c = dlist_entry(pos, struct client, node);

		/* A head already sent promised keep-alive: keep the promise (exchange_end). */
		if (!c->resp_started)
			c->keep_alive = false;
		if (c->closing || c->state != CS_HEAD || c->in_len != 0 || c->idle_cancel)
			continue;
		drain_idle_deadline(c);
	}
	splice_drain(w); /* tcp connections still peeking at a ClientHello close */
	/* Only the newest generation keeps idle connections (up_release). */
	worker_enter(w, w->cur);
	for (unsigned p = 0; p < wcfg(w)->nupstreams; p++)
		for (unsigned s = 0; s < wcfg(w)->upstreams[p].nservers; s++) {
			struct upconn *u;

			while ((u = up_take_idle(w, p, s)))
				up_close(u);
		}
}

void proxy_close_all(struct worker *w)
{
	struct dlist *pos, *tmp;

	dlist_for_each_safe(pos, tmp, &w->clients) {
		struct client *c = dlist_entry(pos, struct client, node);

		if (!c->closing) {
			worker_enter(w, c->gen);
			if (c->have_req && !c->error)
				c->error = "shutdown: drain time over";
			if (c->have_req)
				log_exchange(c);
			c->have_req = false;
			client_close(c);
		}
	}
	worker_enter(w, w->cur);
	splice_close_all(w); /* spliced connections ran on until the deadline */
	proxy_drain(w);
}

/* A reload replaced g: its idle backend connections close (busy ones when their exchange ends). */
void proxy_retire(struct worker *w, struct wgen *g)
{
	const struct config *cfg = g->snap->cfg;

	worker_enter(w, g);
	for (unsigned p = 0; p < cfg->nupstreams; p++)
		for (unsigned s = 0; s < cfg->upstreams[p].nservers; s++) {
			struct upconn *u;

			while ((u = up_take_idle(w, p, s)))
				up_close(u);
		}
	worker_enter(w, w->cur);
}

/* Frees closed connections whose operations have all completed; runs after each batch. */
void proxy_reap(struct worker *w)
{
	struct dlist *pos, *tmp;

	dlist_for_each_safe(pos, tmp, &w->dead_clients) {
		struct client *c = dlist_entry(pos, struct client, node);

		if (c->pending)
			continue;
		dlist_del(&c->node);
		close(c->fd);
		w->nclients--;
		STAT_ADD(w, active, -1);
		if (c->tls && c->state == CS_TLS)
			tls_conn_failed(c->tls); /* timed out or dropped mid-handshake */
		tls_conn_free(c->tls);
		free(c->in);
		free(c->out);
		worker_gen_put(w, c->gen);
		free(c);
	}
	dlist_for_each_safe(pos, tmp, &w->dead_ups) {
		struct upconn *u = dlist_entry(pos, struct upconn, node);

		if (u->pending)
			continue;
		dlist_del(&u->node);
		close(u->fd);
		breaker_conn_close(&u->gen->snap->pools[u->pool], (unsigned)u->server);
		tls_up_free(u->tls);
		w->nupconns--;
		worker_gen_put(w, u->gen);
		free(u->buf);
		free(u);
	}
}
