/* selftests/unit/test_upgrade.c — the binary upgrade's hand-over messages: encode, decode, refusals. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "netaddr.h"
#include "test.h"
#include "upgrade.h"

static struct upgrade_entry entry(uint16_t kind, uint16_t worker, const char *addr)
{
	struct upgrade_entry e = { .kind = kind, .worker = worker };
	const char *why;

	if (net_addr_parse(addr, 0, &e.addr, &why))
		abort();
	return e;
}

static void test_roundtrip_offer(void)
{
	struct upgrade_entry in[3] = { entry(UPGRADE_KIND_LISTENER, 0, "127.0.0.1:8080"),
				       entry(UPGRADE_KIND_LISTENER, 7, "[::1]:8443"),
				       entry(UPGRADE_KIND_ADMIN, 0, "*:9901") };
	struct upgrade_hdr h = { .version = UPGRADE_PROTO_VERSION, .type = UPGRADE_MSG_OFFER,
				 .count = 3, .flags = UPGRADE_F_LAST, .pid = 4242, .total = 3 }, got;
	struct upgrade_entry out[3];
	unsigned char buf[UPGRADE_MSG_MAX];
	ssize_t n = upgrade_encode(&h, in, buf, sizeof(buf));

	ASSERT_EQ(n, UPGRADE_HDR_SIZE + 3 * UPGRADE_ENTRY_SIZE);
	ASSERT_TRUE(!memcmp(buf, "CLUP", 4));
	ASSERT_EQ(upgrade_decode(buf, (size_t)n, &got, out, 3), 0);
	ASSERT_EQ(got.version, UPGRADE_PROTO_VERSION);
	ASSERT_EQ(got.type, UPGRADE_MSG_OFFER);
	ASSERT_EQ(got.count, 3);
	ASSERT_EQ(got.flags, UPGRADE_F_LAST);
	ASSERT_EQ(got.pid, 4242);
	ASSERT_EQ(got.total, 3);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(out[i].kind, in[i].kind);
		ASSERT_EQ(out[i].worker, in[i].worker);
		ASSERT_EQ(out[i].addr.len, in[i].addr.len);
		ASSERT_TRUE(!memcmp(&out[i].addr.ss, &in[i].addr.ss, in[i].addr.len));
	}
	/* The receiver matches by address: the port and family survive. */
	ASSERT_EQ(out[0].addr.ss.ss_family, AF_INET);
	ASSERT_EQ(ntohs(((struct sockaddr_in *)&out[0].addr.ss)->sin_port), 8080);
	ASSERT_EQ(out[1].addr.ss.ss_family, AF_INET6);
	ASSERT_EQ(ntohs(((struct sockaddr_in6 *)&out[1].addr.ss)->sin6_port), 8443);
}

static void test_numbers_are_little_endian(void)
{
	struct upgrade_hdr h = { .version = UPGRADE_PROTO_VERSION, .type = UPGRADE_MSG_READY,
				 .pid = 0x01020304 };
	unsigned char buf[UPGRADE_HDR_SIZE];

	ASSERT_EQ(upgrade_encode(&h, NULL, buf, sizeof(buf)), UPGRADE_HDR_SIZE);
	ASSERT_EQ(buf[4], 1);
	ASSERT_EQ(buf[5], 0);
	ASSERT_EQ(buf[6], UPGRADE_MSG_READY);
	ASSERT_EQ(buf[16], 4);
	ASSERT_EQ(buf[19], 1);
}

static void test_control_messages(void)
{
	static const uint16_t types[] = { UPGRADE_MSG_READY, UPGRADE_MSG_GO, UPGRADE_MSG_ABORT,
					  UPGRADE_MSG_DONE };

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		struct upgrade_hdr h = { .version = UPGRADE_PROTO_VERSION, .type = types[i], .pid = 7 }, got;
		unsigned char buf[64];
		ssize_t n = upgrade_encode(&h, NULL, buf, sizeof(buf));

		ASSERT_EQ(n, UPGRADE_HDR_SIZE);
		ASSERT_EQ(upgrade_decode(buf, (size_t)n, &got, NULL, 0), 0);
		ASSERT_EQ(got.type, types[i]);
		ASSERT_EQ(got.pid, 7);
	}
}

static void test_encode_refuses(void)
{
	struct upgrade_entry e[UPGRADE_MAX_PER_MSG + 1];
	struct upgrade_hdr h = { .version = UPGRADE_PROTO_VERSION, .type = UPGRADE_MSG_OFFER, .count = 2 };
	unsigned char buf[UPGRADE_MSG_MAX + UPGRADE_ENTRY_SIZE];

	for (unsigned i = 0; i <= UPGRADE_MAX_PER_MSG; i++)
		e[i] = entry(UPGRADE_KIND_LISTENER, (uint16_t)i, "127.0.0.1:80");
	/* Too small a buffer. */
	ASSERT_EQ(upgrade_encode(&h, e, buf, UPGRADE_HDR_SIZE + UPGRADE_ENTRY_SIZE), -ENOSPC);
	/* More descriptors than one message carries. */
	h.count = UPGRADE_MAX_PER_MSG + 1;
	ASSERT_EQ(upgrade_encode(&h, e, buf, sizeof(buf)), -EINVAL);
	/* An address longer than the wire field. */
	h.count = 1;
	e[0].addr.len = sizeof(struct sockaddr_storage);
	ASSERT_EQ(upgrade_encode(&h, e, buf, sizeof(buf)), -EINVAL);
}

/* A valid one-entry offer in buf; returns its length. */
static size_t good_offer(unsigned char *buf, size_t len)
{
	struct upgrade_entry e = entry(UPGRADE_KIND_LISTENER, 1, "10.0.0.1:443");
	struct upgrade_hdr h = { .version = UPGRADE_PROTO_VERSION, .type = UPGRADE_MSG_OFFER,
				 .count = 1, .total = 1, .flags = UPGRADE_F_LAST, .pid = 1 };

	return (size_t)upgrade_encode(&h, &e, buf, len);
}

static void test_decode_refuses(void)
{
	unsigned char buf[UPGRADE_MSG_MAX], bad[UPGRADE_MSG_MAX];
	struct upgrade_entry out[2];
	struct upgrade_hdr h;
	size_t n = good_offer(buf, sizeof(buf));

	ASSERT_EQ(upgrade_decode(buf, n, &h, out, 2), 0);
	/* Truncated header, truncated entry, trailing garbage. */
	ASSERT_EQ(upgrade_decode(buf, UPGRADE_HDR_SIZE - 1, &h, out, 2), -EPROTO);
	ASSERT_EQ(upgrade_decode(buf, n - 1, &h, out, 2), -EPROTO);
	memcpy(bad, buf, n);
	bad[n] = 0;
	ASSERT_EQ(upgrade_decode(bad, n + 1, &h, out, 2), -EPROTO);
	/* Not ours. */
	memcpy(bad, buf, n);
	bad[0] = 'X';
	ASSERT_EQ(upgrade_decode(bad, n, &h, out, 2), -EPROTO);
	/* Another protocol version: refused by name, not misread. */
	memcpy(bad, buf, n);
	bad[4] = UPGRADE_PROTO_VERSION + 1;
	ASSERT_EQ(upgrade_decode(bad, n, &h, out, 2), -EPROTONOSUPPORT);
	/* Unknown message type. */
	memcpy(bad, buf, n);
	bad[6] = 99;
	ASSERT_EQ(upgrade_decode(bad, n, &h, out, 2), -EPROTO);
	/* Entries on a message that carries none. */
	memcpy(bad, buf, n);
	bad[6] = UPGRADE_MSG_READY;
	ASSERT_EQ(upgrade_decode(bad, n, &h, out, 2), -EPROTO);
	/* More entries than the caller has room for. */
	ASSERT_EQ(upgrade_decode(buf, n, &h, out, 0), -EMSGSIZE);
	/* Unknown kind. */
	memcpy(bad, buf, n);
	bad[UPGRADE_HDR_SIZE] = 9;
	ASSERT_EQ(upgrade_decode(bad, n, &h, out, 2), -EPROTO);
	/* Address length that does not fit its family. */
	memcpy(bad, buf, n);
	bad[UPGRADE_HDR_SIZE + 6] = sizeof(struct sockaddr_in6);
	ASSERT_EQ(upgrade_decode(bad, n, &h, out, 2), -EPROTO);
	/* Unknown family. */
	memcpy(bad, buf, n);
	bad[UPGRADE_HDR_SIZE + 4] = AF_UNIX;
	ASSERT_EQ(upgrade_decode(bad, n, &h, out, 2), -EPROTO);
	/* The family field and the sockaddr inside disagree. */
	memcpy(bad, buf, n);
	{
		struct sockaddr_in6 s6 = { .sin6_family = AF_INET }; /* says v4 inside a v6-sized one */

		bad[UPGRADE_HDR_SIZE + 6] = sizeof(s6);
		memcpy(bad + UPGRADE_HDR_SIZE + 8, &s6, sizeof(s6));
		bad[UPGRADE_HDR_SIZE + 4] = AF_INET6;
	}
	ASSERT_EQ(upgrade_decode(bad, n, &h, out, 2), -EPROTO);
}

static void test_not_a_child(void)
{
	char buf[64];

	/* A clawd not started by an upgrade binds its own sockets at the real paths. */
	ASSERT_FALSE(upgrade_is_child());
	ASSERT_STREQ(upgrade_control_path("/run/openclaw/clawd.sock", buf, sizeof(buf)),
		     "/run/openclaw/clawd.sock");
	ASSERT_EQ(upgrade_child_ready(NULL, NULL, NULL, buf, sizeof(buf)), 0);
}

int main(void)
{
	RUN(test_roundtrip_offer);
	RUN(test_numbers_are_little_endian);
	RUN(test_control_messages);
	RUN(test_encode_refuses);
	RUN(test_decode_refuses);
	RUN(test_not_a_child);
	return test_done();
}
