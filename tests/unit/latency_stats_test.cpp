// tests: the heartbeat latency bookkeeping shared by the kernel probe and the
// socket-timestamp fallback (ebpf/hb_stats.h), driven with chosen timestamps.
#include "tandem/ebpf/probe.hpp"

#include <catch2/catch.hpp>

#include <memory>

using namespace tandem;

namespace {

constexpr std::uint64_t ms = 1'000'000, us = 1'000;

// What each source does with one stamp: the kernel probe counts in the kernel
// and tandemd does the rest; the socket-timestamp fallback does both in tandemd.
void leaves(const hbp_params& P, hbp_link& l, const hbp_packet& p, std::uint64_t t) {
    l.tx++;
    hbp_on_egress(&P, &l, &p, t);
}
void arrives(const hbp_params& P, hbp_link& l, const hbp_packet& p, std::uint64_t t) {
    hbp_count_arrival(&l.in, p.boot_id, p.link_seq);
    hbp_on_ingress(&P, &l, &p, t);
}

// Two nodes' probes and the datagrams between them, with timestamps the test picks.
struct pair_of_probes {
    hbp_params params{.stall_ns = 120 * ms, .delay_ns = 20 * ms};
    std::unique_ptr<hbp_link> a = std::make_unique<hbp_link>(), b = std::make_unique<hbp_link>();
    std::uint64_t a_seq = 0, b_seq = 0;
    std::uint32_t a_link_seq = 0, b_link_seq = 0;

    // A heartbeat from `from`, carrying its echo of the newest heartbeat it heard and its latest report.
    hbp_packet make(hbp_link& from, std::uint64_t& seq, std::uint32_t& link_seq, std::uint64_t echo) {
        hbp_packet p{};
        p.boot_id = &from == a.get() ? 1 : 2;
        p.seq = ++seq;
        p.link_seq = ++link_seq;
        p.echo_seq = echo;
        if (from.report.reply_seq) {
            p.ks_seq = from.report.peer_seq;
            p.ks_rx = from.report.rx;
            p.ks_tx = from.report.tx;
            p.ks_reply_seq = from.report.reply_seq;
        }
        p.rx_lost = static_cast<std::uint32_t>(from.in.lost_in);
        return p;
    }
    // a sends at its time t_a; b receives at its time t_b (another clock).
    hbp_packet a_to_b(std::uint64_t t_a, std::uint64_t t_b, std::uint64_t echo) {
        auto p = make(*a, a_seq, a_link_seq, echo);
        leaves(params, *a, p, t_a);
        arrives(params, *b, p, t_b);
        return p;
    }
    hbp_packet b_to_a(std::uint64_t t_b, std::uint64_t t_a, std::uint64_t echo) {
        auto p = make(*b, b_seq, b_link_seq, echo);
        leaves(params, *b, p, t_b);
        arrives(params, *a, p, t_a);
        return p;
    }
};

}  // namespace

TEST_CASE("four kernel stamps split the round trip into network and turnaround", "[unit][latency]") {
    pair_of_probes n;
    // b's clock runs 5 s ahead of a's: the split must not care.
    const std::uint64_t off = 5'000 * ms;
    auto s1 = n.a_to_b(1000 * ms, 1000 * ms + 30 * us + off, 0);                // 30 us on the way out
    auto r1 = n.b_to_a(1060 * ms + off, 1060 * ms + 50 * us, s1.seq);          // b held it 60 ms - 30 us; 50 us back
    CHECK(n.a->samples == 0);                                                // the report is still on its way
    n.b_to_a(1160 * ms + off, 1160 * ms + 50 * us, s1.seq);                    // carries the report on r1
    REQUIRE(n.a->samples == 1);
    CHECK(n.a->last.network == 80 * us);
    CHECK(n.a->last.turnaround == 60 * ms - 30 * us);
    CHECK(n.a->last.rtt == 60 * ms + 50 * us);
    CHECK(r1.seq == n.b->report.reply_seq);
    CHECK(ebpf::count(n.b->hist[HBP_TURNAROUND_LOCAL]) == 1);
    CHECK(n.a->peer_stalls == 0);
    CHECK(n.a->network_delays == 0);
}

TEST_CASE("a long turnaround is a host stall, a long network part a network delay", "[unit][latency]") {
    pair_of_probes n;
    auto s1 = n.a_to_b(0, 20 * us, 0);
    n.b_to_a(500 * ms, 500 * ms + 20 * us, s1.seq);  // b held it half a second
    n.b_to_a(600 * ms, 600 * ms + 20 * us, s1.seq);
    CHECK(n.a->peer_stalls == 1);
    CHECK(n.b->local_stalls == 1);
    CHECK(n.a->network_delays == 0);

    auto s2 = n.a_to_b(700 * ms, 730 * ms, n.b_seq);   // 30 ms out
    n.b_to_a(750 * ms, 780 * ms, s2.seq);               // 30 ms back
    n.b_to_a(850 * ms, 850 * ms + 20 * us, s2.seq);
    CHECK(n.a->network_delays == 1);
    CHECK(n.a->peer_stalls == 1);
    // One-way delays changed by about 30 ms each way between the two samples.
    CHECK(n.a->max[HBP_JITTER_OUT] >= 29 * ms);
    CHECK(n.a->max[HBP_JITTER_IN] >= 29 * ms);
}

TEST_CASE("gaps in the link sequence are loss in one direction; a late arrival undoes one", "[unit][latency]") {
    pair_of_probes n;
    n.a_to_b(0, 10 * us, 0);
    auto p2 = n.make(*n.a, n.a_seq, n.a_link_seq, 0);  // lost on the way
    leaves(n.params, *n.a, p2, 100 * ms);
    auto p3 = n.make(*n.a, n.a_seq, n.a_link_seq, 0);  // lost too
    leaves(n.params, *n.a, p3, 200 * ms);
    n.a_to_b(300 * ms, 300 * ms + 10 * us, 0);
    CHECK(n.b->in.lost_in == 2);
    arrives(n.params, *n.b, p3, 301 * ms);  // p3 was only late
    CHECK(n.b->in.lost_in == 1);
    CHECK(n.b->in.reordered_in == 1);
    n.b_to_a(310 * ms, 310 * ms + 10 * us, n.a_seq);
    CHECK(n.a->lost_out == 1);  // what b told a
    CHECK(n.a->in.lost_in == 0);
}

TEST_CASE("a restarted peer starts its numbering again without counting loss", "[unit][latency]") {
    pair_of_probes n;
    for (int i = 0; i < 5; ++i) n.b_to_a(i * 100 * ms, i * 100 * ms + 10 * us, 0);
    hbp_packet p{};
    p.boot_id = 99;
    p.seq = 1;
    p.link_seq = 1;
    arrives(n.params, *n.a, p, 600 * ms);
    CHECK(n.a->in.lost_in == 0);
    CHECK(n.a->in.reordered_in == 0);
    CHECK(n.a->in.peer_boot == 99);
}

TEST_CASE("histogram buckets are exact below 8 and at most 12.5 % wide above", "[unit][latency]") {
    for (std::uint64_t v = 0; v < 8; ++v) CHECK(hbp_bucket(v) == v);
    for (std::uint64_t v : {8ull, 9ull, 15ull, 16ull, 17ull, 1000ull, 123'456ull, 999'999'999ull, 1ull << 39}) {
        auto i = hbp_bucket(v);
        INFO(v);
        REQUIRE(i + 1 < HBP_BUCKETS);
        CHECK(hbp_bucket_low(i) <= v);
        CHECK(hbp_bucket_low(i + 1) > v);
        CHECK(static_cast<double>(hbp_bucket_low(i + 1) - hbp_bucket_low(i)) <=
              0.125 * static_cast<double>(hbp_bucket_low(i)) + 1);
    }
    CHECK(hbp_bucket(~0ull) == HBP_BUCKETS - 1);  // clamped, never out of range
    auto l = std::make_unique<hbp_link>();
    for (std::uint64_t v = 1; v <= 1000; ++v) hbp_record(l.get(), HBP_RTT, v * us);
    const auto& h = l->hist[HBP_RTT];
    CHECK(ebpf::count(h) == 1000);
    CHECK(*ebpf::percentile(h, 0.5) == Approx(500 * us).epsilon(0.07));
    CHECK(*ebpf::percentile(h, 0.99) == Approx(990 * us).epsilon(0.07));
    CHECK(l->max[HBP_RTT] == 1000 * us);
    CHECK(l->sum[HBP_RTT] == 500'500 * us);
    CHECK_FALSE(ebpf::percentile(hbp_hist{}, 0.5));
}
