// SPDX-License-Identifier: GPL-2.0
/* ebpf: Tandem's heartbeat probe. Two tcx programs on one heartbeat link
 * stamp our heartbeats leaving and the peer's arriving, and count the peer's
 * arrivals and gaps; a tp_btf program counts the peer's heartbeats this kernel
 * frees, by drop reason. Nothing more: tandemd reads the stamps through a
 * memory map of the global data (`k`) and does the arithmetic (hb_stats.h).
 * One skeleton instance per link; its parameters are set before load. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "tandem/ebpf/hb_stats.h"

#define TCX_NEXT (-1) /* let the next program (or the stack) decide */
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP_ 17

const volatile __u16 port = 0;        /* heartbeat.port */
const volatile __u8 family = 0;       /* 4 or 6 */
const volatile __u8 peer_addr[16] = {}; /* the peer's address on this link */
const volatile __u32 ifindex = 0;     /* this link, for the drop counter */
const volatile __u32 netns_ino = 0;   /* this node's network namespace, likewise */

struct hbp_kernel k = {};
/* tandemd's bookkeeping of this link: samples, histograms, the report. The
 * programs never touch it; tandemd writes it. It sits in the same global data so
 * that the figures live in one memory map with the stamps they come from, and
 * `bpftool map dump` shows them as well as tandemctl does. */
struct hbp_link book __attribute__((aligned(64))) = {}; /* its own cache lines */

static __always_inline __u64 be64(const __u8 *b) { return bpf_be64_to_cpu(*(const __u64 *)b); }
static __always_inline __u32 be32(const __u8 *b) { return bpf_ntohl(*(const __u32 *)b); }

static __always_inline int peer_is(const __u8 *a, const int len) {
    for (int i = 0; i < 16; i++) {
        if (i >= len) break;
        if (a[i] != peer_addr[i]) return 0;
    }
    return 1;
}

/* Finds a version 2 or 3 heartbeat in skb; `ingress` selects which end of the
 * datagram must be the peer. Returns the heartbeat's first byte, or NULL.
 *
 * Direct reads of the packet, no helper calls and no copies in the common
 * case: most packets are turned away on the protocol byte or the port. Only a
 * candidate whose first HBP_HEAD bytes are not in the linear area (a driver
 * that leaves the payload in page fragments) is pulled. Heartbeats carry no IP
 * options or IPv6 extension headers. */
static __always_inline const __u8 *parse(struct __sk_buff *skb, int ingress) {
    const __u32 l4 = family == 4 ? ETH_HLEN + 20 : ETH_HLEN + 40;
    const __u32 need = l4 + 8 + HBP_HEAD;
    if (skb->protocol != bpf_htons(family == 4 ? ETH_P_IP : ETH_P_IPV6)) return 0;
    __u8 *d = (__u8 *)(long)skb->data, *end = (__u8 *)(long)skb->data_end;
    if (d + l4 + 8 <= end) {
        if (family == 4 && (d[ETH_HLEN] != 0x45 || d[ETH_HLEN + 9] != IPPROTO_UDP_)) return 0;
        if (family == 6 && d[ETH_HLEN + 6] != IPPROTO_UDP_) return 0;
        if (*(__u16 *)(d + l4 + 2) != bpf_htons(port)) return 0;
    } else {
        /* Headers outside the linear area: rare; look before pulling anything. */
        __u8 b[2];
        if (bpf_skb_load_bytes(skb, family == 4 ? ETH_HLEN + 9 : ETH_HLEN + 6, b, 1) || b[0] != IPPROTO_UDP_) return 0;
        if (bpf_skb_load_bytes(skb, l4 + 2, b, 2) || *(__u16 *)b != bpf_htons(port)) return 0;
    }
    if (d + need > end) {
        if (skb->len < need || bpf_skb_pull_data(skb, need)) return 0;
        d = (__u8 *)(long)skb->data;
        end = (__u8 *)(long)skb->data_end;
        if (d + need > end) return 0;
    }
    if (family == 4) {
        if (d[ETH_HLEN] != 0x45 || (((d[ETH_HLEN + 6] << 8) | d[ETH_HLEN + 7]) & 0x3fff)) return 0; /* options, fragment */
        if (!peer_is(d + ETH_HLEN + (ingress ? 12 : 16), 4)) return 0;
    } else {
        if (!peer_is(d + ETH_HLEN + (ingress ? 8 : 24), 16)) return 0;
    }
    if (!ingress && *(__u16 *)(d + l4) != bpf_htons(port)) return 0; /* ours leave from the port too */
    const __u8 *h = d + l4 + 8;
    if (be32(h) != HBP_MAGIC || h[4] < HBP_VERSION_MIN || h[4] > HBP_VERSION_MAX || h[5] != 1) return 0;
    return h;
}

/* The sequence count orders the plain stores for the reader: the atomic adds
 * are full barriers (and compiler barriers) on the JITs. */
static __always_inline void stamp(struct hbp_stamp *s, __u64 seq, __u64 t) {
    __sync_fetch_and_add(&s->gen, 1);
    s->seq = seq;
    s->t = t;
    __sync_fetch_and_add(&s->gen, 1);
}

SEC("tc")
int hb_egress(struct __sk_buff *skb) {
    const __u8 *h = parse(skb, 0);
    if (h) {
        __u64 seq = be64(h + HBP_OFF_SEQ);
        k.tx++;
        stamp(&k.tx_stamp[seq & (HBP_SLOTS - 1)], seq, bpf_ktime_get_ns());
    }
    return TCX_NEXT;
}

SEC("tc")
int hb_ingress(struct __sk_buff *skb) {
    const __u8 *h = parse(skb, 1);
    if (h) {
        __u64 seq = be64(h + HBP_OFF_SEQ);
        hbp_count_arrival(&k.in, be64(h + HBP_OFF_BOOT_ID), be32(h + HBP_OFF_LINK_SEQ));
        stamp(&k.rx_stamp[seq & (HBP_SLOTS - 1)], seq, bpf_ktime_get_ns());
    }
    return TCX_NEXT;
}

/* A heartbeat from the peer freed before it reached tandemd: a firewall, a full
 * receive buffer, a bad checksum. Matched by device, namespace, source address
 * and destination port; the stack has parsed the headers by then. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(hb_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason) {
    struct net_device *dev = skb->dev;
    if (!dev || dev->ifindex != ifindex) return 0;
    if (BPF_CORE_READ(dev, nd_net.net, ns.inum) != netns_ino) return 0;
    unsigned char *head = skb->head;
    __u16 nh = skb->network_header;
    __u8 addr[16];
    __u32 l4;
    if (family == 4) {
        struct iphdr ip;
        if (skb->protocol != bpf_htons(ETH_P_IP) || bpf_probe_read_kernel(&ip, sizeof ip, head + nh)) return 0;
        if (ip.protocol != IPPROTO_UDP_) return 0;
        __builtin_memcpy(addr, &ip.saddr, 4);
        if (!peer_is(addr, 4)) return 0;
        l4 = nh + ip.ihl * 4;
    } else {
        struct ipv6hdr ip6;
        if (skb->protocol != bpf_htons(ETH_P_IPV6) || bpf_probe_read_kernel(&ip6, sizeof ip6, head + nh)) return 0;
        if (ip6.nexthdr != IPPROTO_UDP_) return 0;
        __builtin_memcpy(addr, &ip6.saddr, 16);
        if (!peer_is(addr, 16)) return 0;
        l4 = nh + 40;
    }
    struct udphdr udp;
    if (bpf_probe_read_kernel(&udp, sizeof udp, head + l4) || udp.dest != bpf_htons(port)) return 0;
    __sync_fetch_and_add(&k.drops[reason & (HBP_DROP_REASONS - 1)], 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
