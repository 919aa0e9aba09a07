/* agent/sni_peek.h — bounded, strict TLS ClientHello parser that finds server_name in peeked bytes. */
#ifndef OPENCLAW_SNI_PEEK_H
#define OPENCLAW_SNI_PEEK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most bytes ever peeked for one ClientHello (records + headers); more is refused. */
#define SNI_PEEK_MAX 16384
/* Longest host name accepted (RFC 1035 limit on a DNS name's text form). */
#define SNI_HOST_MAX 253

enum sni_peek_result {
	SNI_PEEK_FOUND = 0,     /* a ClientHello with a host_name: host holds it, lower-cased */
	SNI_PEEK_NONE,          /* a complete, valid ClientHello without server_name */
	SNI_PEEK_NEED_MORE,     /* valid so far; the handshake message is not complete yet */
	SNI_PEEK_MALFORMED,     /* not TLS, not a ClientHello, or a broken one */
	SNI_PEEK_TOO_BIG,       /* the ClientHello would need more than the cap */
	SNI_PEEK_TIMEOUT,       /* sni_peek_fd only: the bytes did not arrive in time */
	SNI_PEEK_CLOSED,        /* sni_peek_fd only: the peer closed or the socket failed */
};

/*
 * Parses the bytes a client sent first (buf, len), never more than cap
 * (≤ SNI_PEEK_MAX). Reassembles a handshake message split across several
 * TLS records. host must hold SNI_HOST_MAX + 1 bytes; it is written only
 * on SNI_PEEK_FOUND.
 */
enum sni_peek_result sni_peek_parse(const uint8_t *buf, size_t len, size_t cap, char *host);

/*
 * Peeks (MSG_PEEK: nothing is consumed, the backend later reads the
 * ClientHello intact) on a connected stream socket until the ClientHello is
 * complete, cap is reached or timeout_ms passes, then parses it. Blocks the
 * caller for at most timeout_ms (works on non-blocking sockets too).
 */
enum sni_peek_result sni_peek_fd(int fd, size_t cap, unsigned timeout_ms, char *host);

/*
 * Whether host (lower-case, as returned above) matches pattern: an exact
 * name, or "*.suffix" matching exactly one label before ".suffix" (as a
 * certificate wildcard does).
 * Case-insensitive on pattern.
 */
bool sni_match(const char *pattern, const char *host);

/* A short word for logs and access-log errors. */
const char *sni_peek_result_str(enum sni_peek_result r);

#endif
