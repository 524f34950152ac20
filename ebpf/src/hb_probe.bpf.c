// SPDX-License-Identifier: GPL-2.0
/* ebpf: Tandem's heartbeat probe. Two tcx programs on one heartbeat link
 * timestamp our heartbeats leaving and the peer's arriving; a tp_btf program
 * counts the peer's heartbeats this kernel frees, by drop reason. All figures
 * live in global data (`link`), which the agent reads through a memory map.
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

const volatile struct hbp_params params = {};
const volatile __u16 port = 0;        /* heartbeat.port */
const volatile __u8 family = 0;       /* 4 or 6 */
const volatile __u8 peer_addr[16] = {}; /* the peer's address on this link */
const volatile __u32 ifindex = 0;     /* this link, for the drop counter */
const volatile __u32 netns_ino = 0;   /* this node's network namespace, likewise */

struct hbp_link link = {};

static __always_inline __u64 be64(const __u8 *b) { return bpf_be64_to_cpu(*(const __u64 *)b); }
static __always_inline __u32 be32(const __u8 *b) { return bpf_ntohl(*(const __u32 *)b); }

static __always_inline int peer_is(const __u8 *a, const int len) {
    for (int i = 0; i < 16; i++) {
        if (i >= len) break;
        if (a[i] != peer_addr[i]) return 0;
    }
    return 1;
}

/* Finds a version 2 heartbeat in skb; `ingress` selects which end of the
 * datagram must be the peer. Returns 0 and fills p for one.
 *
 * Direct reads of the packet, no helper calls and no copies in the common
 * case: most packets are turned away on the protocol byte or the port. Only a
 * candidate whose first HBP_HEAD bytes are not in the linear area (a driver
 * that leaves the payload in page fragments) is pulled. Heartbeats carry no IP
 * options or IPv6 extension headers. */
static __always_inline int parse(struct __sk_buff *skb, int ingress, struct hbp_packet *p) {
    const __u32 l4 = family == 4 ? ETH_HLEN + 20 : ETH_HLEN + 40;
    const __u32 need = l4 + 8 + HBP_HEAD;
    if (skb->protocol != bpf_htons(family == 4 ? ETH_P_IP : ETH_P_IPV6)) return -1;
    __u8 *d = (__u8 *)(long)skb->data, *end = (__u8 *)(long)skb->data_end;
    if (d + l4 + 8 <= end) {
        if (family == 4 && (d[ETH_HLEN] != 0x45 || d[ETH_HLEN + 9] != IPPROTO_UDP_)) return -1;
        if (family == 6 && d[ETH_HLEN + 6] != IPPROTO_UDP_) return -1;
        if (*(__u16 *)(d + l4 + 2) != bpf_htons(port)) return -1;
    } else {
        /* Headers outside the linear area: rare; look before pulling anything. */
        __u8 b[2];
        if (bpf_skb_load_bytes(skb, family == 4 ? ETH_HLEN + 9 : ETH_HLEN + 6, b, 1) || b[0] != IPPROTO_UDP_) return -1;
        if (bpf_skb_load_bytes(skb, l4 + 2, b, 2) || *(__u16 *)b != bpf_htons(port)) return -1;
    }
    if (d + need > end) {
        if (skb->len < need || bpf_skb_pull_data(skb, need)) return -1;
        d = (__u8 *)(long)skb->data;
        end = (__u8 *)(long)skb->data_end;
        if (d + need > end) return -1;
    }
    if (family == 4) {
        if (d[ETH_HLEN] != 0x45 || (((d[ETH_HLEN + 6] << 8) | d[ETH_HLEN + 7]) & 0x3fff)) return -1; /* options, fragment */
        if (!peer_is(d + ETH_HLEN + (ingress ? 12 : 16), 4)) return -1;
    } else {
        if (!peer_is(d + ETH_HLEN + (ingress ? 8 : 24), 16)) return -1;
    }
    if (!ingress && *(__u16 *)(d + l4) != bpf_htons(port)) return -1; /* ours leave from the port too */
    const __u8 *h = d + l4 + 8;
    if (be32(h) != HBP_MAGIC || h[4] != HBP_VERSION || h[5] != 1) return -1;
    p->boot_id = be64(h + HBP_OFF_BOOT_ID);
    p->seq = be64(h + HBP_OFF_SEQ);
    p->echo_seq = be64(h + HBP_OFF_ECHO_SEQ);
    p->link_seq = be32(h + HBP_OFF_LINK_SEQ);
    p->ks_seq = be64(h + HBP_OFF_KS_SEQ);
    p->ks_rx = be64(h + HBP_OFF_KS_RX);
    p->ks_tx = be64(h + HBP_OFF_KS_TX);
    p->ks_reply_seq = be64(h + HBP_OFF_KS_REPLY_SEQ);
    p->rx_lost = be32(h + HBP_OFF_RX_LOST);
    return 0;
}

/* Read through volatile: the loader sets them after compilation, so the
 * compiler must not fold in the zeros it sees here. */
static __always_inline struct hbp_params thresholds(void) {
    struct hbp_params P = {.stall_ns = params.stall_ns, .delay_ns = params.delay_ns};
    return P;
}

SEC("tc")
int hb_egress(struct __sk_buff *skb) {
    struct hbp_packet p;
    if (parse(skb, 0, &p) == 0) {
        struct hbp_params P = thresholds();
        hbp_on_egress(&P, &link, &p, bpf_ktime_get_ns());
    }
    return TCX_NEXT;
}

SEC("tc")
int hb_ingress(struct __sk_buff *skb) {
    struct hbp_packet p;
    if (parse(skb, 1, &p) == 0) {
        struct hbp_params P = thresholds();
        hbp_on_ingress(&P, &link, &p, bpf_ktime_get_ns());
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
    __sync_fetch_and_add(&link.drops[reason & (HBP_DROP_REASONS - 1)], 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
