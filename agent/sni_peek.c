/* agent/sni_peek.c — bounded, strict TLS ClientHello parser that finds server_name in peeked bytes. */
#include "sni_peek.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define TLS_RECORD_HANDSHAKE 22
#define TLS_HS_CLIENT_HELLO 1
#define TLS_RECORD_MAX 16384 /* RFC 8446 5.1: a plaintext record's fragment */
#define TLS_EXT_SERVER_NAME 0
#define SNI_TYPE_HOST_NAME 0

/* A bounded reader over one byte range: every get fails once past the end. */
struct rd {
	const uint8_t *p;
	size_t len, off;
};

static bool rd_u8(struct rd *r, unsigned *v)
{
	if (r->len - r->off < 1)
		return false;
	*v = r->p[r->off++];
	return true;
}

static bool rd_u16(struct rd *r, unsigned *v)
{
	if (r->len - r->off < 2)
		return false;
	*v = (unsigned)r->p[r->off] << 8 | r->p[r->off + 1];
	r->off += 2;
	return true;
}

static bool rd_skip(struct rd *r, size_t n)
{
	if (r->len - r->off < n)
		return false;
	r->off += n;
	return true;
}

/* A vector with a 1- or 2-byte length prefix becomes its own reader. */
static bool rd_vec(struct rd *r, unsigned prefix, struct rd *sub)
{
	unsigned n;

	if (!(prefix == 1 ? rd_u8(r, &n) : rd_u16(r, &n)))
		return false;
	if (r->len - r->off < n)
		return false;
	sub->p = r->p + r->off;
	sub->len = n;
	sub->off = 0;
	r->off += n;
	return true;
}

/*
 * RFC 6066 3: HostName is a DNS name in ASCII without a trailing dot.
 * Accepted: letters (lower-cased), digits, '-', '_' (seen in the wild) and
 * '.', non-empty labels of at most 63 bytes.
 */
static bool copy_host(const uint8_t *p, size_t n, char *host)
{
	size_t label = 0;

	if (n == 0 || n > SNI_HOST_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t ch = p[i];

		if (ch == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
			   ch == '_') {
			label++;
		} else if (ch >= 'A' && ch <= 'Z') {
			ch = (uint8_t)(ch - 'A' + 'a');
			label++;
		} else {
			return false;
		}
		if (label > 63)
			return false;
		host[i] = (char)ch;
	}
	if (label == 0) /* trailing dot */
		return false;
	host[n] = '\0';
	return true;
}

/* server_name extension body (RFC 6066 3): exactly one host_name entry. */
static enum sni_peek_result parse_server_name(struct rd *ext, char *host)
{
	struct rd list, name;
	unsigned type;
	bool found = false;
	char tmp[SNI_HOST_MAX + 1]; /* host is written only once all is valid */

	if (!rd_vec(ext, 2, &list) || ext->off != ext->len || list.len == 0)
		return SNI_PEEK_MALFORMED;
	while (list.off < list.len) {
		if (!rd_u8(&list, &type) || !rd_vec(&list, 2, &name))
			return SNI_PEEK_MALFORMED;
		if (type != SNI_TYPE_HOST_NAME)
			continue; /* unknown name types are skipped, as the RFC allows */
		if (found) /* "MUST NOT contain more than one name of the same name_type" */
			return SNI_PEEK_MALFORMED;
		if (!copy_host(name.p, name.len, tmp))
			return SNI_PEEK_MALFORMED;
		found = true;
	}
	if (found)
		memcpy(host, tmp, strlen(tmp) + 1);
	return found ? SNI_PEEK_FOUND : SNI_PEEK_NONE;
}

/* ClientHello body (RFC 8446 4.1.2, RFC 5246 7.4.1.2). */
static enum sni_peek_result parse_client_hello(const uint8_t *p, size_t n, char *host)
{
	struct rd r = { p, n, 0 }, v, exts, ext;
	unsigned ver, type, seen_sni = 0;
	enum sni_peek_result res = SNI_PEEK_NONE;
	uint16_t seen[64];
	unsigned nseen = 0;

	if (!rd_u16(&r, &ver) || (ver >> 8) != 3 || !rd_skip(&r, 32))
		return SNI_PEEK_MALFORMED;
	if (!rd_vec(&r, 1, &v) || v.len > 32) /* session id */
		return SNI_PEEK_MALFORMED;
	if (!rd_vec(&r, 2, &v) || v.len < 2 || v.len % 2) /* cipher suites */
		return SNI_PEEK_MALFORMED;
	if (!rd_vec(&r, 1, &v) || v.len < 1) /* compression methods */
		return SNI_PEEK_MALFORMED;
	if (r.off == r.len) /* SSLv3-era hello without extensions */
		return SNI_PEEK_NONE;
	if (!rd_vec(&r, 2, &exts) || r.off != r.len)
		return SNI_PEEK_MALFORMED;
	while (exts.off < exts.len) {
		if (!rd_u16(&exts, &type) || !rd_vec(&exts, 2, &ext))
			return SNI_PEEK_MALFORMED;
		/* RFC 8446 4.2: no extension type twice (checked for the first 64). */
		for (unsigned i = 0; i < nseen; i++)
			if (seen[i] == type)
				return SNI_PEEK_MALFORMED;
		if (nseen < 64)
			seen[nseen++] = (uint16_t)type;
		if (type != TLS_EXT_SERVER_NAME)
			continue;
		if (seen_sni++)
			return SNI_PEEK_MALFORMED;
		res = parse_server_name(&ext, host);
		if (res == SNI_PEEK_MALFORMED)
			return res;
	}
	return res;
}

enum sni_peek_result sni_peek_parse(const uint8_t *buf, size_t len, size_t cap, char *host)
{
	/* The handshake message, reassembled from the records' fragments. */
	uint8_t hs[SNI_PEEK_MAX];
	size_t hs_len = 0, off = 0, need = 0;

	if (cap > SNI_PEEK_MAX)
		cap = SNI_PEEK_MAX;
	if (len > cap)
		len = cap;
	for (;;) {
		size_t rec_len;

		if (len - off < 5) {
			/* Judge what is there already: a plain-text client is refused at byte 1. */
			if (len > off && buf[off] != TLS_RECORD_HANDSHAKE)
				return SNI_PEEK_MALFORMED;
			if (len - off >= 2 && buf[off + 1] != 3)
				return SNI_PEEK_MALFORMED;
			return len >= cap ? SNI_PEEK_TOO_BIG : SNI_PEEK_NEED_MORE;
		}
		if (buf[off] != TLS_RECORD_HANDSHAKE || buf[off + 1] != 3)
			return SNI_PEEK_MALFORMED;
		rec_len = (size_t)buf[off + 3] << 8 | buf[off + 4];
		if (rec_len == 0 || rec_len > TLS_RECORD_MAX)
			return SNI_PEEK_MALFORMED;
		if (off + 5 + rec_len > cap)
			return SNI_PEEK_TOO_BIG;
		if (off + 5 + rec_len > len) {
			/* Judge the handshake header as soon as its 4 bytes are there. */
			size_t avail = len - off - 5;

			if (hs_len < 4 && hs_len + avail >= 4) {
				uint8_t h[4];

				memcpy(h, hs, hs_len);
				memcpy(h + hs_len, buf + off + 5, 4 - hs_len);
				if (h[0] != TLS_HS_CLIENT_HELLO)
					return SNI_PEEK_MALFORMED;
				if (4 + ((size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3]) > cap)
					return SNI_PEEK_TOO_BIG;
			}
			return SNI_PEEK_NEED_MORE;
		}
		memcpy(hs + hs_len, buf + off + 5, rec_len);
		hs_len += rec_len;
		off += 5 + rec_len;
		if (hs_len < 4)
			continue;
		if (hs[0] != TLS_HS_CLIENT_HELLO)
			return SNI_PEEK_MALFORMED;
		need = 4 + ((size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3]);
		if (need > cap)
			return SNI_PEEK_TOO_BIG;
		if (hs_len >= need)
			break;
	}
	/* Nothing else may share the last record with the ClientHello. */
	if (hs_len != need)
		return SNI_PEEK_MALFORMED;
	return parse_client_hello(hs + 4, need - 4, host);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

enum sni_peek_result sni_peek_fd(int fd, size_t cap, unsigned timeout_ms, char *host)
{
	uint8_t buf[SNI_PEEK_MAX];
	uint64_t deadline = mono_ms() + timeout_ms;
	ssize_t last = -1;

	if (cap > SNI_PEEK_MAX)
		cap = SNI_PEEK_MAX;
	for (;;) {
		ssize_t n = recv(fd, buf, cap, MSG_PEEK | MSG_DONTWAIT);
		struct pollfd pfd = { .fd = fd, .events = POLLIN | POLLRDHUP };
		uint64_t now;

		if (n == 0)
			return SNI_PEEK_CLOSED;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return SNI_PEEK_CLOSED;
		if (n > 0 && n != last) {
			enum sni_peek_result r = sni_peek_parse(buf, (size_t)n, cap, host);

			if (r != SNI_PEEK_NEED_MORE)
				return r;
			last = n;
		}
		/*
		 * A peek leaves the bytes queued, so POLLIN stays true: wait for the
		 * queue to grow by sleeping on a short poll of nothing new instead.
		 */
		now = mono_ms();
		if (now >= deadline)
			return SNI_PEEK_TIMEOUT;
		if (n > 0) {
			struct timespec ts = { 0, 2 * 1000000 }; /* 2 ms between peeks */

			nanosleep(&ts, NULL);
			continue;
		}
		if (poll(&pfd, 1, (int)(deadline - now)) < 0 && errno != EINTR)
			return SNI_PEEK_CLOSED;
	}
}

bool sni_match(const char *pattern, const char *host)
{
	const char *dot;

	if (pattern[0] == '*' && pattern[1] == '.') {
		/* "*.example.com": exactly one non-empty label before ".example.com". */
		dot = strchr(host, '.');
		if (!dot || dot == host)
			return false;
		return strcasecmp(dot + 1, pattern + 2) == 0;
	}
	return strcasecmp(pattern, host) == 0;
}

const char *sni_peek_result_str(enum sni_peek_result r)
{
	switch (r) {
	case SNI_PEEK_FOUND:
		return "found";
	case SNI_PEEK_NONE:
		return "none";
	case SNI_PEEK_NEED_MORE:
		return "incomplete";
	case SNI_PEEK_MALFORMED:
		return "malformed";
	case SNI_PEEK_TOO_BIG:
		return "too big";
	case SNI_PEEK_TIMEOUT:
		return "timeout";
	case SNI_PEEK_CLOSED:
		return "closed";
	}
	return "?";
}
