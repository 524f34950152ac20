/* ebpf: heartbeat latency bookkeeping. The kernel probe (hb_probe.bpf.c) only
 * stamps: it notes when each heartbeat passed its tcx hook, and counts arrivals
 * and gaps where the packet enters the host. tandemd turns the stamps into
 * samples, histograms and events with the functions below, the same ones the
 * SO_TIMESTAMPING fallback (timestamping.cpp) feeds with socket stamps: one code
 * path, two sources of timestamps, the same figures whichever measured them.
 * Keeping the arithmetic out of the kernel keeps the programs small: a program
 * that runs once per heartbeat finds its code and data cold every time, and
 * pays for every cache line it touches.
 *
 * The layouts and hbp_count_arrival are compiled by both clang -target bpf and
 * g++; the rest is for tandemd only (#ifndef __bpf__). Every kernel field has one writer
 * (the ingress or the egress hook of one link, and one flow's packets pass a
 * hook on one CPU at a time), so plain adds suffice; only the stamp slots,
 * two words a reader in tandemd must see together, carry a sequence count.
 *
 * Four kernel timestamps per sample, no clock synchronisation:
 *   t1  our heartbeat S leaves our kernel          (our clock)
 *   t2  S reaches the peer's kernel                (peer's clock)
 *   t3  the peer's reply R leaves the peer's kernel (peer's clock)
 *   t4  R reaches our kernel                       (our clock)
 *   rtt = t4 - t1, turnaround = t3 - t2, network = rtt - turnaround.
 * The peer learns t2 and t3 only after R has gone, so it reports them in its
 * next heartbeat (the ks_* fields of heartbeat version 2).
 */
#ifndef TANDEM_EBPF_HB_STATS_H
#define TANDEM_EBPF_HB_STATS_H

#ifndef __bpf__
#include <linux/types.h>
#endif

/* Where the hooks find the fields in a heartbeat datagram (versions 2 and 3
 * share the layout; see agent/heartbeat_codec.hpp, whose test checks these
 * against the encoder). */
#define HBP_MAGIC 0x544E4448 /* "TNDH" */
#define HBP_VERSION_MIN 2
#define HBP_VERSION_MAX 3
#define HBP_OFF_BOOT_ID 8
#define HBP_OFF_SEQ 16
#define HBP_OFF_ECHO_SEQ 32
#define HBP_OFF_LINK_SEQ 76
#define HBP_OFF_KS_SEQ 80
#define HBP_OFF_KS_RX 88
#define HBP_OFF_KS_TX 96
#define HBP_OFF_KS_REPLY_SEQ 104
#define HBP_OFF_RX_LOST 112
#define HBP_HEAD 120 /* bytes the hooks read */

#define HBP_SUB_BITS 3
#define HBP_SUBS (1u << HBP_SUB_BITS)
#define HBP_MAX_MSB 39 /* values are clamped below 2^40 ns (about 18 minutes) */
#define HBP_BUCKETS ((HBP_MAX_MSB - HBP_SUB_BITS + 2) * HBP_SUBS) /* 304 */
#define HBP_SLOTS 64 /* heartbeats remembered per direction */
#define HBP_DROP_REASONS 128

/* A log2 histogram with 8 linear sub-buckets per power of two: every bucket is
 * at most 12.5 % wide, fine enough for p50 and p99. Values below 8 are exact. */
struct hbp_hist {
    __u64 bucket[HBP_BUCKETS];
};

enum hbp_hist_id {
    HBP_RTT,              /* t4 - t1 */
    HBP_NETWORK,          /* rtt - (t3 - t2) */
    HBP_TURNAROUND_PEER,  /* t3 - t2, as the peer reported it */
    HBP_TURNAROUND_LOCAL, /* our own t3 - t2 */
    HBP_JITTER_OUT,       /* change of the one-way delay us -> peer between samples */
    HBP_JITTER_IN,        /* change of the one-way delay peer -> us */
    HBP_HISTS,
};

struct hbp_slot {
    __u64 seq;
    __u64 t; /* kernel time the heartbeat passed the hook */
};

/* A slot the kernel writes and tandemd reads: `gen` is a sequence count, odd
 * while the writer is inside, so the reader can tell a torn copy. 32 bytes:
 * a slot never straddles two cache lines. */
struct hbp_stamp {
    __u64 gen;
    __u64 seq;
    __u64 t;
    __u64 pad;
};

/* Arrivals of the peer's heartbeats, counted where they enter the host: a
 * heartbeat this host drops itself (a firewall, a full socket buffer) is not
 * network loss. */
struct hbp_arrivals {
    __u64 rx;           /* the peer's heartbeats seen arriving */
    __u64 lost_in;      /* the peer's heartbeats that never arrived (link_seq gaps) */
    __u64 reordered_in; /* arrived after a later one */
    __u64 peer_boot;
    __u64 last_link_seq;
};

/* The kernel probe's global data, one per link: stamps and arrival counts. */
struct hbp_kernel {
    __u64 tx; /* our heartbeats seen leaving */
    struct hbp_arrivals in;
    struct hbp_stamp tx_stamp[HBP_SLOTS];
    struct hbp_stamp rx_stamp[HBP_SLOTS];
    __u64 drops[HBP_DROP_REASONS]; /* the peer's heartbeats freed by this kernel, by drop reason */
};

/* What we learnt about our reply to one of the peer's heartbeats; the agent
 * copies it into its next heartbeat. */
struct hbp_report {
    __u64 peer_seq;  /* the peer's heartbeat we answered */
    __u64 rx;        /* when it reached our kernel (t2) */
    __u64 tx;        /* when our reply left our kernel (t3) */
    __u64 reply_seq; /* our heartbeat that answered it */
};

/* The newest complete sample, for events and `cstate`. */
struct hbp_sample {
    __u64 rtt;
    __u64 turnaround;
    __u64 network;
};

/* Thresholds of the events. */
struct hbp_params {
    __u64 stall_ns; /* a turnaround above this is a host stall (interval + alert) */
    __u64 delay_ns; /* a network part above this is a network delay (alert) */
};

/* One heartbeat: the fields the bookkeeping reads from the datagram. */
struct hbp_packet {
    __u64 boot_id;
    __u64 seq;
    __u64 echo_seq;
    __u64 ks_seq;
    __u64 ks_rx;
    __u64 ks_tx;
    __u64 ks_reply_seq;
    __u32 link_seq;
    __u32 rx_lost;
};

/* Everything tandemd knows about one link's latency. Counters only grow (per
 * tandemd run). With the kernel probe, tx, `in` and drops are copied from
 * hbp_kernel when the figures are read. */
struct hbp_link {
    __u64 tx;
    struct hbp_arrivals in;
    __u64 lost_out;       /* ours the peer says it never received (its rx_lost) */
    __u64 samples;        /* complete four-timestamp samples */
    __u64 peer_stalls;    /* samples whose turnaround on the peer exceeded stall_ns */
    __u64 local_stalls;   /* our own turnarounds above stall_ns */
    __u64 network_delays; /* samples whose network part exceeded delay_ns */
    __u64 last_local_turnaround; /* our newest turnaround */
    /* bookkeeping */
    __u64 timing_boot; /* the peer's boot the timing state below belongs to */
    __u64 pending_seq; /* oldest heartbeat of the peer not answered yet */
    __u64 pending_rx;
    __u64 last_report_reply;
    __u64 owd_valid;
    __s64 owd_out;
    __s64 owd_in;
    __u64 sum[HBP_HISTS];
    __u64 max[HBP_HISTS];
    struct hbp_sample last;
    struct hbp_report report;
    struct hbp_slot tx_slot[HBP_SLOTS];
    struct hbp_slot rx_slot[HBP_SLOTS];
    struct hbp_hist hist[HBP_HISTS];
    __u64 drops[HBP_DROP_REASONS];
};

#ifdef __cplusplus
#define HBP_INLINE static inline
#else
#define HBP_INLINE static __always_inline
#endif

/* A heartbeat of the peer with this boot id and link sequence number arrived. */
HBP_INLINE void hbp_count_arrival(struct hbp_arrivals *A, __u64 boot_id, __u64 link_seq) {
    A->rx++;
    if (boot_id != A->peer_boot) { /* the peer restarted: its numbering did too */
        A->peer_boot = boot_id;
        A->last_link_seq = 0;
    }
    if (link_seq > A->last_link_seq) {
        if (A->last_link_seq && link_seq > A->last_link_seq + 1) A->lost_in += link_seq - A->last_link_seq - 1;
        A->last_link_seq = link_seq;
    } else {
        A->reordered_in++;
        if (A->lost_in) A->lost_in--; /* counted as lost when its successor came */
    }
}

#ifndef __bpf__
/* Everything below runs in tandemd only. */

/* Position of the highest set bit of v (v > 0). */
HBP_INLINE __u32 hbp_msb(__u64 v) { return 63u - (__u32)__builtin_clzll(v); }

HBP_INLINE __u32 hbp_bucket(__u64 v) {
    if (v < HBP_SUBS) return (__u32)v;
    if (v >> (HBP_MAX_MSB + 1)) v = (1ull << (HBP_MAX_MSB + 1)) - 1;
    __u32 msb = hbp_msb(v);
    __u32 sub = (__u32)(v >> (msb - HBP_SUB_BITS)) & (HBP_SUBS - 1);
    return (msb - HBP_SUB_BITS + 1) * HBP_SUBS + sub;
}

/* Smallest value that falls in bucket i. */
HBP_INLINE __u64 hbp_bucket_low(__u32 i) {
    if (i < HBP_SUBS) return i;
    __u32 msb = i / HBP_SUBS + HBP_SUB_BITS - 1;
    return (__u64)(HBP_SUBS + i % HBP_SUBS) << (msb - HBP_SUB_BITS);
}

HBP_INLINE void hbp_record(struct hbp_link *L, enum hbp_hist_id id, __u64 v) {
    __u32 i = hbp_bucket(v);
    L->hist[id].bucket[i]++;
    L->sum[id] += v;
    if (v > L->max[id]) L->max[id] = v;
}

HBP_INLINE __u64 hbp_abs_diff(__s64 a, __s64 b) { return a > b ? (__u64)(a - b) : (__u64)(b - a); }

/* Our heartbeat p left our kernel at `now`. */
HBP_INLINE void hbp_on_egress(const struct hbp_params *P, struct hbp_link *L, const struct hbp_packet *p, __u64 now) {
    struct hbp_slot *s = &L->tx_slot[p->seq & (HBP_SLOTS - 1)];
    s->seq = p->seq;
    s->t = now;
    /* Does it answer the peer's oldest unanswered heartbeat? Then its time here
     * was our turnaround: report it in our next heartbeat. */
    __u64 pending = L->pending_seq;
    if (pending && p->echo_seq >= pending) {
        __u64 turn = now - L->pending_rx;
        hbp_record(L, HBP_TURNAROUND_LOCAL, turn);
        L->last_local_turnaround = turn;
        if (turn > P->stall_ns) L->local_stalls++;
        L->report.peer_seq = pending;
        L->report.rx = L->pending_rx;
        L->report.tx = now;
        L->report.reply_seq = p->seq;
        L->pending_seq = 0;
    }
}

/* A complete sample: our S left at t1 and its answer R came back at t4; the
 * peer held S from t2 to t3. */
HBP_INLINE void hbp_complete(const struct hbp_params *P, struct hbp_link *L, __u64 t1, __u64 t2, __u64 t3, __u64 t4) {
    __u64 rtt = t4 - t1, turn = t3 - t2;
    __u64 net = rtt > turn ? rtt - turn : 0;
    hbp_record(L, HBP_RTT, rtt);
    hbp_record(L, HBP_TURNAROUND_PEER, turn);
    hbp_record(L, HBP_NETWORK, net);
    if (net > P->delay_ns) L->network_delays++;
    else if (turn > P->stall_ns) L->peer_stalls++;
    /* One-way delays carry the unknown offset between the clocks; their change
     * from one sample to the next does not. */
    __s64 out = (__s64)(t2 - t1), in = (__s64)(t4 - t3);
    if (L->owd_valid) {
        hbp_record(L, HBP_JITTER_OUT, hbp_abs_diff(out, L->owd_out));
        hbp_record(L, HBP_JITTER_IN, hbp_abs_diff(in, L->owd_in));
    }
    L->owd_out = out;
    L->owd_in = in;
    L->owd_valid = 1;
    L->last.rtt = rtt;
    L->last.turnaround = turn;
    L->last.network = net;
    L->samples++;
}

/* The peer's heartbeat p reached our kernel at `now`. Arrivals and gaps are
 * counted apart (hbp_count_arrival), where the stamp was taken. */
HBP_INLINE void hbp_on_ingress(const struct hbp_params *P, struct hbp_link *L, const struct hbp_packet *p, __u64 now) {
    if (p->boot_id != L->timing_boot) { /* the peer restarted: its numbering did too */
        L->timing_boot = p->boot_id;
        L->pending_seq = 0;
        L->owd_valid = 0;
        L->last_report_reply = 0;
    }
    L->lost_out = p->rx_lost;

    struct hbp_slot *r = &L->rx_slot[p->seq & (HBP_SLOTS - 1)];
    r->seq = p->seq;
    r->t = now;
    if (!L->pending_seq) {
        L->pending_seq = p->seq;
        L->pending_rx = now;
    }

    /* The peer's report on one of our heartbeats completes a sample, if both
     * ends are still remembered here. */
    if (p->ks_seq && p->ks_reply_seq != L->last_report_reply && p->ks_tx >= p->ks_rx) {
        L->last_report_reply = p->ks_reply_seq;
        struct hbp_slot *s = &L->tx_slot[p->ks_seq & (HBP_SLOTS - 1)];
        struct hbp_slot *a = &L->rx_slot[p->ks_reply_seq & (HBP_SLOTS - 1)];
        if (s->seq == p->ks_seq && a->seq == p->ks_reply_seq && a->t >= s->t)
            hbp_complete(P, L, s->t, p->ks_rx, p->ks_tx, a->t);
    }
}
#endif /* !__bpf__ */

#endif
