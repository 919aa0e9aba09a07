/* bench/flood/flood.c — packet flood generator: NIC-like frames injected into a veth with BPF_F_TEST_XDP_LIVE_FRAMES. */
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * A two-instruction XDP program returning XDP_TX is run by the kernel over a
 * template frame with BPF_F_TEST_XDP_LIVE_FRAMES: each run transmits a real
 * xdp_frame out of the veth, which its peer receives through NAPI exactly as
 * a NIC's frames would be (pktgen is not built into this kernel).
 *
 * usage: flood IFNAME DST_MAC SRC_IP DST_IP DPORT udp|syn SECONDS [PPS]
 * Prints one line of JSON: frames handed to the veth, seconds, rate.
 */

struct frame {
	uint8_t bytes[64];
	size_t len;
};

static uint16_t ip_csum(const void *p, size_t n)
{
	const uint16_t *w = p;
	uint32_t sum = 0;

	for (; n > 1; n -= 2)
		sum += *w++;
	if (n)
		sum += *(const uint8_t *)w;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* TCP checksum over the IPv4 pseudo header, so the stack accepts the SYN in the no-filter run. */
static uint16_t tcp_csum(const struct iphdr *ip, const void *l4, size_t n)
{
	uint8_t buf[12 + 64];

	memcpy(buf, &ip->saddr, 4);
	memcpy(buf + 4, &ip->daddr, 4);
	buf[8] = 0;
	buf[9] = IPPROTO_TCP;
	buf[10] = n >> 8;
	buf[11] = n & 0xff;
	memcpy(buf + 12, l4, n);
	return ip_csum(buf, 12 + n);
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];

	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = v[i];
	return 0;
}

static int read_mac(const char *ifname, uint8_t mac[6])
{
	char path[128], line[64];
	FILE *f;
	int rc = -ENOENT;

	snprintf(path, sizeof(path), "/sys/class/net/%s/address", ifname);
	f = fopen(path, "r");
	if (f) {
		if (fgets(line, sizeof(line), f))
			rc = parse_mac(line, mac);
		fclose(f);
	}
	return rc;
}

static int build_frame(struct frame *fr, const uint8_t smac[6], const uint8_t dmac[6],
		       const char *src, const char *dst, unsigned dport, bool syn)
{
	struct ethhdr *eth = (struct ethhdr *)fr->bytes;
	struct iphdr *ip = (struct iphdr *)(eth + 1);
	size_t l4len = syn ? sizeof(struct tcphdr) : sizeof(struct udphdr) + 18;

	memset(fr, 0, sizeof(*fr));
	memcpy(eth->h_dest, dmac, 6);
	memcpy(eth->h_source, smac, 6);
	eth->h_proto = htons(ETH_P_IP);
	ip->version = 4;
	ip->ihl = 5;
	ip->ttl = 64;
	ip->protocol = syn ? IPPROTO_TCP : IPPROTO_UDP;
	ip->tot_len = htons(sizeof(*ip) + l4len);
	ip->id = htons(1);
	if (inet_pton(AF_INET, src, &ip->saddr) != 1 || inet_pton(AF_INET, dst, &ip->daddr) != 1)
		return -EINVAL;
	ip->check = ip_csum(ip, sizeof(*ip));
	if (syn) {
		struct tcphdr *t = (struct tcphdr *)(ip + 1);

		t->source = htons(40000);
		t->dest = htons(dport);
		t->seq = htonl(12345);
		t->doff = 5;
		t->syn = 1;
		t->window = htons(64240);
		t->check = tcp_csum(ip, t, sizeof(*t));
	} else {
		struct udphdr *u = (struct udphdr *)(ip + 1);

		u->source = htons(40000);
		u->dest = htons(dport);
		u->len = htons(l4len);
		memset(u + 1, 'x', 18);
	}
	fr->len = sizeof(*eth) + sizeof(*ip) + l4len;
	if (fr->len < 60)
		fr->len = 60;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	const struct bpf_insn prog[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_TX },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	uint8_t smac[6], dmac[6];
	struct frame fr;
	struct xdp_md ctx = { 0 };
	double secs, pps = 0, t0, t;
	unsigned long long sent = 0;
	unsigned ifindex;
	int fd;

	if (argc < 8) {
		fprintf(stderr, "usage: flood IFNAME DST_MAC SRC_IP DST_IP DPORT udp|syn SECONDS [PPS]\n");
		return 2;
	}
	ifindex = if_nametoindex(argv[1]);
	secs = atof(argv[7]);
	if (argc > 8)
		pps = atof(argv[8]);
	if (!ifindex || read_mac(argv[1], smac) || parse_mac(argv[2], dmac) || secs <= 0 ||
	    build_frame(&fr, smac, dmac, argv[3], argv[4], atoi(argv[5]), !strcmp(argv[6], "syn"))) {
		fprintf(stderr, "flood: bad arguments\n");
		return 2;
	}
	LIBBPF_OPTS(bpf_prog_load_opts, lopts);
	fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "flood_tx", "GPL", prog, 2, &lopts);
	if (fd < 0) {
		fprintf(stderr, "flood: loading the XDP_TX program: %s\n", strerror(-fd));
		return 1;
	}
	ctx.ingress_ifindex = ifindex;
	ctx.data_end = fr.len; /* the kernel insists the context describes the frame */
	/* Small calls when rate-limited (so pacing is smooth), large ones at full speed. */
	unsigned repeat = pps > 0 ? (pps / 1000 > 64 ? (unsigned)(pps / 1000) : 64) : 1u << 16;
	LIBBPF_OPTS(bpf_test_run_opts, ro, .data_in = fr.bytes, .data_size_in = fr.len,
		    .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .repeat = repeat,
		    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64);
	t0 = now_s();
	for (t = t0; t - t0 < secs; t = now_s()) {
		if (pps > 0 && sent >= pps * (t - t0)) {
			usleep(200);
			continue;
		}
		int rc = bpf_prog_test_run_opts(fd, &ro);

		if (rc) {
			fprintf(stderr, "flood: BPF_PROG_TEST_RUN: %s\n", strerror(-rc));
			return 1;
		}
		sent += repeat;
	}
	printf("{\"frames\":%llu,\"seconds\":%.3f,\"pps\":%.0f}\n", sent, t - t0, sent / (t - t0));
	close(fd);
	return 0;
}
