// tests: heartbeat latency probes on a real cluster — figures, loss by direction,
// host stall versus network delay, detaching on SIGKILL, the socket-timestamp fallback.
#include "support/cluster.hpp"
#include "support/skip.hpp"
#include "support/util.hpp"

#include "tandem/ebpf/probe.hpp"

#include <catch2/catch.hpp>

#include <net/if.h>
#include <signal.h>
#include <unistd.h>

using namespace tandem::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

json latency(const test_cluster& c, const std::string& node) {
    auto s = c.status(node);
    return s.contains("latency") && !s["latency"].empty() ? s["latency"][0] : json::object();
}

std::uint64_t counter(const json& j, const std::string& key) { return j.value(key, std::uint64_t{0}); }

bool has_samples(const test_cluster& c, const std::string& node, std::uint64_t n) {
    return counter(latency(c, node), "samples") >= n;
}

// Plausible figures of a heartbeat link over a veth pair on one machine.
void check_plausible(const json& l, double interval_us) {
    INFO(l.dump(2));
    REQUIRE(l["network_p50_us"].is_number());
    double rtt = l["rtt_p50_us"], net = l["network_p50_us"], turn = l["turnaround_peer_p50_us"];
    CHECK(net > 0);
    CHECK(net < 10'000);  // a veth pair: far below 10 ms
    CHECK(net <= rtt);
    // The peer answers with its next heartbeat: up to one interval later.
    CHECK(turn <= interval_us * 1.5);
    CHECK(l["turnaround_local_count"].get<std::uint64_t>() > 0);
    CHECK(l["jitter_in_count"].get<std::uint64_t>() > 0);
    CHECK(l["jitter_out_count"].get<std::uint64_t>() > 0);
    CHECK(counter(l, "lost_in") == 0);
    CHECK(counter(l, "lost_out") == 0);
}

// The kernel probe needs the kernel's BTF (CO-RE) and tcx (Linux 6.6).
#define REQUIRE_KERNEL_PROBE()                                                             \
    do {                                                                                   \
        if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0) TANDEM_SKIP("no /sys/kernel/btf/vmlinux"); \
    } while (0)

int tcx_count(const test_cluster& c, const std::string& node, bool ingress) {
    scoped_netns_enter in(c.ns(node));
    auto r = tandem::ebpf::tcx_program_count(static_cast<int>(::if_nametoindex("eth0")), ingress);
    return r ? *r : -1;
}

}  // namespace

TEST_CASE("latency: the kernel probe fills its histograms with plausible figures", "[scenario][latency]") {
    TANDEM_REQUIRE_NAMESPACES();
    REQUIRE_KERNEL_PROBE();
    test_cluster c;
    c.up();
    REQUIRE(wait_until([&] { return has_samples(c, "a", 20) && has_samples(c, "b", 20); }, soon));
    for (auto node : {"a", "b"}) {
        auto s = c.status(node);  // one snapshot: a new sample may land between two
        auto l = s["latency"][0];
        CHECK(l["source"] == "bpf");
        CHECK(l["drops_counted"] == true);
        check_plausible(l, 100'000);
        // cstate's RTT is the probe's network part.
        auto link = s["heartbeat"]["links"][0];
        CHECK(link["rtt_source"] == "bpf");
        CHECK(link["rtt_ms"].get<double>() * 1000 == Approx(l["last_network_us"].get<double>()));
    }
    auto out = c.ctl("a", "latency");
    INFO(out.out);
    CHECK(out.status == 0);
    CHECK(out.out.find("source bpf") != std::string::npos);
    CHECK(out.out.find("network") != std::string::npos);
    auto j = json::parse(c.ctl("a", "latency --json").out);
    CHECK(!j[0]["histograms"]["network"].empty());
}

TEST_CASE("latency: loss injected with nftables is counted in its direction", "[scenario][latency]") {
    TANDEM_REQUIRE_NAMESPACES();
    REQUIRE_KERNEL_PROBE();
    test_cluster::options o;
    o.timeout = "1s";  // every third heartbeat lost must not look like a dead peer
    test_cluster c(o);
    c.up();
    REQUIRE(wait_until([&] { return has_samples(c, "a", 3) && has_samples(c, "b", 3); }, soon));
    // alpha -> beta only, on alpha's way out (before its tcx egress hook).
    c.ns("a").nft("table inet loss { chain out { type filter hook output priority 0; policy accept\n"
                   "udp dport 694 numgen inc mod 3 0 counter drop\n}\n}");
    REQUIRE(wait_until([&] { return counter(latency(c, "b"), "lost_in") >= 5; }, soon));
    c.ns("a").exec_ok("nft delete table inet loss");
    REQUIRE(wait_until([&] { return counter(latency(c, "a"), "lost_out") >= 5; }, soon));
    auto a = latency(c, "a"), b = latency(c, "b");
    INFO(a.dump(2) << b.dump(2));
    CHECK(counter(a, "lost_in") == 0);  // nothing was lost beta -> alpha
    CHECK(counter(b, "lost_out") == 0);
    // A loss inside the receiving host is not network loss: beta's kernel drops
    // alpha's heartbeats after the tcx hook saw them, and names the reason.
    auto lost_before = counter(latency(c, "b"), "lost_in");
    c.ns("b").nft("table inet fw { chain in { type filter hook input priority 0; policy accept\n"
                   "udp dport 694 ip saddr 10.77.0.1 numgen inc mod 3 0 counter drop\n}\n}");
    REQUIRE(wait_until([&] { return latency(c, "b")["drops"].value("NETFILTER_DROP", 0) >= 3; }, soon));
    c.ns("b").exec_ok("nft delete table inet fw");
    CHECK(counter(latency(c, "b"), "lost_in") == lost_before);
    CHECK(c.state("a") == "ACTIVE");
    CHECK(c.state("b") == "STANDBY");
}

TEST_CASE("latency: a responder stopped with SIGSTOP is a host stall, not a network delay", "[scenario][latency]") {
    TANDEM_REQUIRE_NAMESPACES();
    REQUIRE_KERNEL_PROBE();
    test_cluster::options o;
    o.timeout = "3s";  // the stall is the subject here, not a failover
    test_cluster c(o);
    c.up();
    REQUIRE(wait_until([&] { return has_samples(c, "a", 5); }, soon));
    auto since = c.last_seq("a");
    auto tx0 = counter(latency(c, "a"), "tx");
    REQUIRE(::kill(c.pid("b"), SIGSTOP) == 0);
    // Stopped for six of alpha's heartbeats (its own probe counts them leaving).
    bool long_enough = wait_until([&] { return counter(latency(c, "a"), "tx") >= tx0 + 6; }, soon);
    ::kill(c.pid("b"), SIGCONT);
    REQUIRE(long_enough);
    REQUIRE(c.wait("a", "event=latency.host_stall", soon, since));
    auto a = latency(c, "a");
    INFO(a.dump(2));
    CHECK(counter(a, "peer_stalls") >= 1);
    CHECK(counter(a, "network_delays") == 0);
    CHECK(a["turnaround_peer_max_us"].get<double>() >= 500'000);  // six 100 ms intervals, give or take
    CHECK(a["network_max_us"].get<double>() < 20'000);            // below latency_alert
    // beta's own kernel saw it hold alpha's heartbeats: a local stall there.
    REQUIRE(wait_until([&] { return counter(latency(c, "b"), "local_stalls") >= 1; }, soon));
    CHECK(c.state("a") == "ACTIVE");
}

TEST_CASE("latency: the probe detaches when tandemd is SIGKILLed", "[scenario][latency]") {
    TANDEM_REQUIRE_NAMESPACES();
    REQUIRE_KERNEL_PROBE();
    test_cluster c;
    REQUIRE(tcx_count(c, "a", true) == 0);
    c.up();
    CHECK(tcx_count(c, "a", true) == 1);
    CHECK(tcx_count(c, "a", false) == 1);
    c.kill9("a");
    // The links die with the last file descriptor: no pinning, nothing left behind.
    CHECK(wait_until([&] { return tcx_count(c, "a", true) == 0 && tcx_count(c, "a", false) == 0; }, soon));
}

TEST_CASE("latency: without BPF the socket timestamps give the same figures", "[scenario][latency]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster::options o;
    o.heartbeat_b = "probe = \"timestamping\"";
    test_cluster c(o);
    // alpha may not load BPF at all: capsh takes CAP_BPF, CAP_PERFMON and
    // CAP_SYS_ADMIN out of its bounding set before tandemd runs.
    c.start("a", {}, {"capsh", "--drop=cap_bpf,cap_perfmon,cap_sys_admin", "--", "-c", "exec \"$0\" \"$@\""});
    c.start("b");
    REQUIRE(c.wait("a", "state=ACTIVE", soon));
    REQUIRE(c.wait("b", "state=STANDBY", soon));
    REQUIRE(wait_until([&] { return has_samples(c, "a", 20) && has_samples(c, "b", 20); }, soon));
    auto a = latency(c, "a"), b = latency(c, "b");
    CHECK(a["source"] == "timestamping");
    CHECK(a["bpf_unavailable"].get<std::string>().find("Operation not permitted") != std::string::npos);
    CHECK(b["source"] == "timestamping");
    CHECK_FALSE(b.contains("bpf_unavailable"));  // chosen, not fallen back to
    check_plausible(a, 100'000);
    check_plausible(b, 100'000);
    CHECK(tcx_count(c, "a", true) == 0);
    // One warning, naming the reason.
    auto log = c.log("a");
    auto first = log.find("latency.no_bpf");
    REQUIRE(first != std::string::npos);
    CHECK(log.find("latency.no_bpf", first + 1) == std::string::npos);
    CHECK(c.status("a")["heartbeat"]["links"][0]["rtt_source"] == "timestamping");
}
