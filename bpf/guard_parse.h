/* bpf/guard_parse.h — the packet guard's header walk: Ethernet, VLAN, IPv4, IPv6 extension headers, TCP, UDP. */
#ifndef OPENCLAW_BPF_GUARD_PARSE_H
#define OPENCLAW_BPF_GUARD_PARSE_H

/*
 * Offsets are kept as bounded scalars from the frame start and every header
 * is checked twice: against data_end (the verifier needs it and a truncated
 * frame fails it) and against the end of the IP packet by its own length field
 * (bytes past it are link padding, not headers). Wire formats never change,
 * so the headers are read as bytes and big-endian fields, not through
 * relocatable kernel structs.
 */

#define GUARD_ETH_P_IP     0x0800
#define GUARD_ETH_P_IPV6   0x86DD
#define GUARD_ETH_P_8021Q  0x8100
#define GUARD_ETH_P_8021AD 0x88A8
#define GUARD_ETH_P_QINQ1  0x9100 /* pre-802.1AD QinQ, still seen on some switches */

#define GUARD_ETH_HLEN   14
#define GUARD_VLAN_HLEN  4
#define GUARD_IP4_MINLEN 20
#define GUARD_IP6_HLEN   40
#define GUARD_TCP_MINLEN 20
#define GUARD_UDP_HLEN   8
#define GUARD_FRAG6_HLEN 8
/* IPv6 extension headers may not push L4 past this offset (bounds the walk for the verifier). */
#define GUARD_MAX_HDR_OFF 4096

/* IPv6 next-header values the walk follows or recognises. */
#define GUARD_NH_HOP      0
#define GUARD_NH_TCP      6
#define GUARD_NH_UDP      17
#define GUARD_NH_ROUTING  43
#define GUARD_NH_FRAGMENT 44
#define GUARD_NH_AH       51
#define GUARD_NH_DSTOPTS  60

#define GUARD_IP4_MF     0x2000
#define GUARD_IP4_OFFSET 0x1fff
#define GUARD_TCP_SYN    0x02
#define GUARD_TCP_ACK    0x10

/* Outcome of the walk. */
enum guard_parse_res {
	GUARD_P_L4 = 0, /* TCP or UDP header found: pkt is complete */
	GUARD_P_OTHER,  /* not IP, or an IP protocol the guard does not judge */
	GUARD_P_FRAG,   /* TCP/UDP non-first fragment: family and saddr only */
	GUARD_P_BAD,    /* truncated or malformed: unparsed policy applies */
};

/* What the guard needs from a frame. */
struct guard_pkt {
	__u8 saddr[16];  /* network order; IPv4 in saddr[0..3] */
	__u16 dport;     /* host order */
	__u8 family;     /* GUARD_AF_INET / GUARD_AF_INET6, 0 before L3 */
	__u8 l4proto;    /* GUARD_NH_TCP / GUARD_NH_UDP, 0 before L4 */
	__u8 tcp_flags;  /* TCP flags byte (CWR..FIN) */
};

struct guard_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* Hop-by-hop, routing, destination options and AH all open with these two bytes. */
struct guard_ip6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct guard_ip6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3, low bit = more fragments */
	__be32 id;
};

static __always_inline bool guard_is_vlan(__u16 proto)
{
	return proto == GUARD_ETH_P_8021Q || proto == GUARD_ETH_P_8021AD ||
	       proto == GUARD_ETH_P_QINQ1;
}

/* Ethernet and up to GUARD_MAX_VLAN tags: *off ends at L3, *proto is its ethertype (host order). */
static __always_inline int guard_parse_eth(void *data, void *data_end, __u32 *off, __u16 *proto)
{
	struct ethhdr *eth = data;
	__u16 p;
	__u32 o = GUARD_ETH_HLEN;
	int i;

	if ((void *)(eth + 1) > data_end)
		return GUARD_P_BAD;
	p = bpf_ntohs(eth->h_proto);
#pragma unroll
	for (i = 0; i < GUARD_MAX_VLAN; i++) {
		struct guard_vlan_hdr *vh;

		if (!guard_is_vlan(p))
			break;
		vh = data + o;
		if ((void *)(vh + 1) > data_end)
			return GUARD_P_BAD;
		p = bpf_ntohs(vh->proto);
		o += GUARD_VLAN_HLEN;
	}
	if (guard_is_vlan(p))
		return GUARD_P_BAD;
	*off = o;
	*proto = p;
	return GUARD_P_L4;
}

/* TCP or UDP header at l4off, which must end by l3_end (end of the IP packet). */
static __always_inline int guard_parse_l4(void *data, void *data_end, __u32 l4off, __u32 l3_end,
					  __u8 proto, struct guard_pkt *pkt)
{
	pkt->l4proto = proto;
	if (proto == GUARD_NH_TCP) {
		__u8 *tcp = data + l4off;
		__u32 doff;

		if ((void *)(tcp + GUARD_TCP_MINLEN) > data_end || l4off + GUARD_TCP_MINLEN > l3_end)
			return GUARD_P_BAD;
		doff = (tcp[12] >> 4) * 4;
		if (doff < GUARD_TCP_MINLEN || l4off + doff > l3_end)
			return GUARD_P_BAD;
		pkt->dport = ((__u16)tcp[2] << 8) | tcp[3];
		pkt->tcp_flags = tcp[13];
		return GUARD_P_L4;
	}
	if (proto == GUARD_NH_UDP) {
		__u8 *udp = data + l4off;
		__u32 ulen;

		if ((void *)(udp + GUARD_UDP_HLEN) > data_end || l4off + GUARD_UDP_HLEN > l3_end)
			return GUARD_P_BAD;
		ulen = ((__u32)udp[4] << 8) | udp[5];
		if (ulen < GUARD_UDP_HLEN || l4off + ulen > l3_end)
			return GUARD_P_BAD;
		pkt->dport = ((__u16)udp[2] << 8) | udp[3];
		return GUARD_P_L4;
	}
	pkt->l4proto = 0;
	return GUARD_P_OTHER;
}

static __always_inline int guard_parse_ip4(void *data, void *data_end, __u32 off,
					   struct guard_pkt *pkt)
{
	__u8 *ip = data + off;
	__u32 ihl, tot_len, l3_end;
	__u16 frag;
	__u8 proto;

	if ((void *)(ip + GUARD_IP4_MINLEN) > data_end)
		return GUARD_P_BAD;
	if ((ip[0] >> 4) != 4)
		return GUARD_P_BAD;
	ihl = (ip[0] & 0x0f) * 4;
	tot_len = ((__u32)ip[2] << 8) | ip[3];
	/* 6.1's verifier loses the bounds of an OR of two bytes (clang emits one even
	 * for '+'): hide the value from clang and mask it so the bound survives. */
	barrier_var(tot_len);
	tot_len &= 0xffff;
	if (ihl < GUARD_IP4_MINLEN || tot_len < ihl)
		return GUARD_P_BAD;
	l3_end = off + tot_len;
	if (data + l3_end > data_end)
		return GUARD_P_BAD;
	pkt->family = GUARD_AF_INET;
	__builtin_memcpy(pkt->saddr, ip + 12, 4);
	proto = ip[9];
	if (proto != GUARD_NH_TCP && proto != GUARD_NH_UDP)
		return GUARD_P_OTHER;
	frag = ((__u16)ip[6] << 8) | ip[7];
	if (frag & GUARD_IP4_OFFSET) {
		pkt->l4proto = proto;
		return GUARD_P_FRAG;
	}
	return guard_parse_l4(data, data_end, off + ihl, l3_end, proto, pkt);
}

static __always_inline int guard_parse_ip6(void *data, void *data_end, __u32 off,
					   struct guard_pkt *pkt)
{
	__u8 *ip6 = data + off;
	__u32 l3_end, len;
	__u8 nh;
	int i;

	if ((void *)(ip6 + GUARD_IP6_HLEN) > data_end)
		return GUARD_P_BAD;
	if ((ip6[0] >> 4) != 6)
		return GUARD_P_BAD;
	/* A payload length of 0 (jumbogram) leaves no room for L4 below: unparsed. */
	len = ((__u32)ip6[4] << 8) | ip6[5];
	/* Same 6.1 verifier bound as tot_len above. */
	barrier_var(len);
	len &= 0xffff;
	l3_end = off + GUARD_IP6_HLEN + len;
	if (data + l3_end > data_end)
		return GUARD_P_BAD;
	pkt->family = GUARD_AF_INET6;
	__builtin_memcpy(pkt->saddr, ip6 + 8, 16);
	nh = ip6[6];
	off += GUARD_IP6_HLEN;

	for (i = 0; i < GUARD_V6_MAX_EXT; i++) {
		struct guard_ip6_frag *fh;
		struct guard_ip6_ext *eh;

		if (off > GUARD_MAX_HDR_OFF)
			return GUARD_P_BAD;
		switch (nh) {
		case GUARD_NH_HOP:
		case GUARD_NH_ROUTING:
		case GUARD_NH_DSTOPTS:
		case GUARD_NH_AH:
			eh = data + off;
			if ((void *)(eh + 1) > data_end)
				return GUARD_P_BAD;
			if (nh == GUARD_NH_AH)
				len = ((__u32)eh->hdrlen + 2) * 4;
			else
				len = ((__u32)eh->hdrlen + 1) * 8;
			if (off + len > l3_end)
				return GUARD_P_BAD;
			nh = eh->nexthdr;
			off += len;
			break;
		case GUARD_NH_FRAGMENT:
			fh = data + off;
			if ((void *)(fh + 1) > data_end || off + GUARD_FRAG6_HLEN > l3_end)
				return GUARD_P_BAD;
			nh = fh->nexthdr;
			off += GUARD_FRAG6_HLEN;
			if (bpf_ntohs(fh->frag_off) & 0xfff8) {
				if (nh != GUARD_NH_TCP && nh != GUARD_NH_UDP)
					return GUARD_P_OTHER;
				pkt->l4proto = nh;
				return GUARD_P_FRAG;
			}
			break;
		default:
			return guard_parse_l4(data, data_end, off, l3_end, nh, pkt);
		}
	}
	/* Still inside extension headers after GUARD_V6_MAX_EXT of them. */
	switch (nh) {
	case GUARD_NH_HOP:
	case GUARD_NH_ROUTING:
	case GUARD_NH_DSTOPTS:
	case GUARD_NH_AH:
	case GUARD_NH_FRAGMENT:
		return GUARD_P_BAD;
	}
	if (off > GUARD_MAX_HDR_OFF)
		return GUARD_P_BAD;
	return guard_parse_l4(data, data_end, off, l3_end, nh, pkt);
}

/* Walks a frame from the Ethernet header to the L4 header and fills pkt. */
static __always_inline int guard_parse(void *data, void *data_end, struct guard_pkt *pkt)
{
	__u32 off = 0;
	__u16 proto = 0;
	int res;

	res = guard_parse_eth(data, data_end, &off, &proto);
	if (res != GUARD_P_L4)
		return res;
	if (proto == GUARD_ETH_P_IP)
		return guard_parse_ip4(data, data_end, off, pkt);
	if (proto == GUARD_ETH_P_IPV6)
		return guard_parse_ip6(data, data_end, off, pkt);
	return GUARD_P_OTHER;
}

#endif
