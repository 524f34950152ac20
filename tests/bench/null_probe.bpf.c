// SPDX-License-Identifier: GPL-2.0
/* bench-ebpf's yardstick: a tc program that only counts, attached beside the
 * heartbeat probe. Its run time per packet is what any program costs on these
 * hooks on this machine (cold caches between heartbeats, the statistics
 * themselves); the probe's own work is what it costs beyond that. */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

__u64 packets = 0;

SEC("tc")
int null_probe(struct __sk_buff *skb) {
    packets++;
    return -1; /* TC_ACT_UNSPEC: carry on */
}

char LICENSE[] SEC("license") = "GPL";
