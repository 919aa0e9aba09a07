/* agent/http1.h — strict HTTP/1.x message head parser and chunked-body framer (no allocation). */
#ifndef OPENCLAW_HTTP1_H
#define OPENCLAW_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP1_MAX_HEADERS 128 /* hard cap; cfg_limits.header_count may only lower it */

/* Parser results: > 0 head length, 0 need more bytes, < 0 minus the HTTP status to send. */
enum http1_result {
	HTTP1_INCOMPLETE = 0,
	HTTP1_ERR_BAD_REQUEST = -400,
	HTTP1_ERR_URI_TOO_LONG = -414,
	HTTP1_ERR_EXPECTATION = -417,     /* Expect other than 100-continue */
	HTTP1_ERR_HEADERS_TOO_LARGE = -431,
	HTTP1_ERR_NOT_IMPLEMENTED = -501, /* unknown transfer-coding, CONNECT */
	HTTP1_ERR_BAD_GATEWAY = -502,     /* malformed upstream response */
	HTTP1_ERR_VERSION = -505,         /* HTTP/2.0 or HTTP/0.9 request line */
};

/* A zero field means the built-in default: 8 KiB line, 64 KiB head, HTTP1_MAX_HEADERS fields. */
struct http1_limits {
	uint32_t request_line; /* bytes of the request line, CRLF excluded */
	uint32_t header_size;  /* bytes of the whole head including CRLFCRLF */
	uint32_t header_count; /* header fields */
};

/* One field; pointers into the caller's buffer. Names as received (case kept). */
struct http1_header {
	const char *name;
	const char *value; /* leading and trailing OWS stripped */
	uint32_t name_len;
	uint32_t value_len;
};

enum http1_body {
	HTTP1_BODY_NONE,    /* no body */
	HTTP1_BODY_LENGTH,  /* content_length bytes */
	HTTP1_BODY_CHUNKED, /* chunked framing, passed through verbatim */
	HTTP1_BODY_CLOSE,   /* responses only: until the server closes */
};

struct http1_request {
	const char *method;   /* token */
	const char *target;   /* request-target as received */
	const char *path;     /* path part of target ("/..."; "*" for OPTIONS *) */
	const char *query;    /* after '?', or NULL */
	uint32_t method_len;
	uint32_t target_len;
	uint32_t path_len;
	uint32_t query_len;
	uint8_t version_minor; /* 0 or 1 (HTTP/1.0, HTTP/1.1) */
	bool keep_alive;       /* per version and Connection tokens */
	bool expect_continue;  /* "Expect: 100-continue"; any other expectation fails with 417 */
	bool is_head;          /* method is HEAD: the response has no body */
	enum http1_body body;
	uint64_t content_length; /* when body == HTTP1_BODY_LENGTH */
	const char *host;        /* Host value, or the authority of an absolute-form target */
	uint32_t host_len;
	uint32_t head_len;       /* bytes from the request line to the end of CRLFCRLF */
	uint32_t nheaders;
	const char *error;       /* static reason when the parse failed, for the log */
	struct http1_header headers[HTTP1_MAX_HEADERS];
};

struct http1_response {
	uint16_t status;
	uint8_t version_minor;
	bool keep_alive; /* server allows reuse (version, Connection, framing) */
	enum http1_body body;
	uint64_t content_length;
	const char *reason;
	uint32_t reason_len;
	uint32_t head_len;
	uint32_t nheaders;
	const char *error;
	struct http1_header headers[HTTP1_MAX_HEADERS];
};

/*
 * Parses a request head at the start of buf. Strict: rejects anything a
 * smuggling attack could exploit (CL+TE, bad or repeated-different CL,
 * TE other than a final "chunked", obs-fold, space before colon, CTLs/NUL,
 * bare CR or LF line ends, missing Host on 1.1, duplicate Host, dot-segments
 * in the path, fragments). Once more than the limits' worth of bytes is
 * buffered without a complete head it fails with 414/431 rather than waiting.
 */
int http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
			struct http1_request *req);

/*
 * Parses a response head. request_is_head: the request was HEAD (bodiless).
 * 1xx, 204 and 304 are bodiless; the caller reads the next head after a 1xx.
 */
int http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
			 bool request_is_head, struct http1_response *resp);

/* Chunked-body framer: validates and delimits a chunked body passed through verbatim. */
struct http1_chunked {
	uint64_t remaining;  /* data bytes left in the current chunk */
	uint64_t data_bytes; /* chunk data bytes seen so far, framing excluded (for body limits) */
	uint32_t line_len;   /* bytes seen of the current size/trailer line */
	uint32_t trailer_bytes; /* bytes of trailer section so far */
	uint8_t state;       /* private */
	bool done;           /* last chunk and trailers complete */
};

void http1_chunked_init(struct http1_chunked *c);

/*
 * Feeds len bytes. Returns how many of them belong to the body (framing
 * included): len, or fewer when the body ended inside buf (c->done set).
 * Returns -400 on malformed framing (bad hex, overflow, missing CRLF after
 * data, bare LF/CR, over-long size line or trailers beyond lim->header_size).
 */
ssize_t http1_chunked_scan(struct http1_chunked *c, const char *buf, size_t len,
			   const struct http1_limits *lim);

/*
 * Same framing and result as http1_chunked_scan, and also removes the framing
 * in place: the chunk data bytes among the consumed ones are moved to the
 * front of buf and *data_len says how many. For relaying a chunked response
 * to an HTTP/1.0 client, which gets the bare data delimited by the close.
 */
ssize_t http1_chunked_decode(struct http1_chunked *c, char *buf, size_t len, size_t *data_len,
			     const struct http1_limits *lim);

/* Case-insensitive lookup; NULL when absent. */
const struct http1_header *http1_find_header(const struct http1_header *h, uint32_t n,
					     const char *name);

/* True when the comma-separated token list v contains token (case-insensitive). */
bool http1_list_has_token(const char *v, size_t len, const char *token);

/* Like http1_list_has_token, for a token that is not NUL-terminated. */
bool http1_list_has_token_n(const char *v, size_t len, const char *token, size_t token_len);

/* True when the n bytes at a equal the NUL-terminated b, ignoring ASCII case (locale-free). */
bool http1_casecmp_eq(const char *a, size_t n, const char *b);

/* Standard reason phrase for a status ("Not Found"); "Unknown" when none. */
const char *http1_reason(int status);

#endif
