// tests: two-node scenarios from the seeds' failover list, on real namespaces with real tandemd processes.
#include "support/cluster.hpp"
#include "support/skip.hpp"
#include "support/util.hpp"

#include <catch2/catch.hpp>

#include <fmt/format.h>

using namespace tandem::test;
using namespace std::chrono_literals;

TEST_CASE("cluster: the primary comes up active and the secondary standby", "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    auto cs = c.ctl("a", "cstate");
    CHECK(cs.status == 0);
    CHECK_THAT(cs.out, Catch::StartsWith("Local: R:PRIMARY S:ACTIVE/ONLINE CS:NONE"));
    CHECK_THAT(cs.out, Catch::Contains("HBT:UP"));
    CHECK_THAT(cs.out, Catch::Contains("Remote: R:SECONDARY S:STANDBY/ONLINE HBT:UP"));
    auto st = c.status("b");
    CHECK(st["remote"]["state"] == "ACTIVE");
    CHECK(st["heartbeat"]["links"][0]["up"] == true);
    CHECK(st["heartbeat"]["links"][0]["rtt_ms"].is_number());
    // The failover sequence ran in order and said what each phase did.
    auto ev = c.ctl("a", "events --backlog 100").out;
    for (auto phase : {"storage", "alias", "vip", "services", "announce"})
        CHECK_THAT(ev, Catch::Contains(fmt::format("\"phase\":\"{}\"", phase)));
}

TEST_CASE("cluster: crash of the active: the standby takes over after the timeout; the old primary rejoins as standby",
          "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;  // interval 100 ms, timeout 300 ms
    c.up();
    auto t0 = mono_now_ns();
    c.kill9("a");
    c.ns("a").exec_ok("ip link set eth0 down");  // its links go silent too
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    auto decided = c.event_after_ms("b", "state.changed", "ACTIVE", t0);
    auto complete = c.event_after_ms("b", "failover.complete", "", t0);
    REQUIRE(decided);
    REQUIRE(complete);
    WARN(fmt::format("failover with interval 100 ms / timeout 300 ms: decision after {:.1f} ms, sequence complete "
                     "after {:.1f} ms",
                     *decided, *complete));
    // The last heartbeat arrived up to one interval before the kill, and the
    // peer is lost one timeout after it: never earlier than timeout - interval.
    CHECK(*decided >= 300.0 - 100.0);
    CHECK(c.status("b")["remote"]["state"] == "UNKNOWN");

    c.ns("a").exec_ok("ip link set eth0 up");
    c.start("a");
    REQUIRE(c.wait("a", "state=STANDBY", soon));
    CHECK_FALSE(c.wait("a", "state=ACTIVE", never));  // no automatic failback
    CHECK(c.state("b") == "ACTIVE");
}

TEST_CASE("cluster: a restarted tandemd claims with a generation above the one it had", "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    CHECK(c.status("a")["local"]["generation"] == 1);
    c.kill9("a");
    c.ns("a").exec_ok("ip link set eth0 down");
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    REQUIRE(c.status("b")["local"]["generation"] == 2);
    // The active node's tandemd crashes and comes back alone: it claims again,
    // from the generation kept in its state directory, not from 0.
    c.kill9("b");
    c.start("b");
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    CHECK(c.status("b")["local"]["generation"] == 3);
}

TEST_CASE("cluster: takeover and giveback swap the roles", "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    auto r = c.ctl("a", "takeover");
    CHECK(r.status == 1);
    CHECK_THAT(r.out, Catch::Contains("takeover runs on the STANDBY node"));

    CHECK(c.ctl("b", "takeover").status == 0);
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    REQUIRE(c.wait("a", "state=STANDBY", soon));

    CHECK(c.ctl("b", "giveback").status == 0);
    REQUIRE(c.wait("a", "state=ACTIVE", soon));
    REQUIRE(c.wait("b", "state=STANDBY", soon));
    CHECK(c.ctl("a", "cstate").out.find("S:ACTIVE/ONLINE") != std::string::npos);
}

TEST_CASE("cluster: an offline standby blocks failover until it is set online", "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    CHECK(c.ctl("b", "offline").status == 0);
    CHECK_THAT(c.ctl("b", "cstate").out, Catch::Contains("S:STANDBY/OFFLINE"));
    c.kill9("a");
    REQUIRE(c.wait("b", "event=failover.blocked", soon));
    CHECK_FALSE(c.wait("b", "state=ACTIVE", never));
    CHECK(c.ctl("b", "online").status == 0);
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
}

TEST_CASE("cluster: setting the active node offline is a manual failover", "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    CHECK(c.ctl("a", "offline").status == 0);
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    CHECK_THAT(c.ctl("a", "cstate").out, Catch::StartsWith("Local: R:PRIMARY S:STANDBY/OFFLINE"));
}

TEST_CASE("cluster: a standby whose connectivity test fails does not take over", "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    // The standby loses the client (its connectivity target) and the heartbeats
    // at once: from where it stands, it may be the one cut off.
    c.ns("b").nft("table inet t {\n chain out {\n type filter hook output priority 0;\n ip daddr 10.77.0.10 drop\n }\n}");
    c.kill9("a");
    REQUIRE(c.wait("b", "event=failover.blocked", soon));
    CHECK_THAT(c.status("b")["local"]["blocked"].get<std::string>(), Catch::Contains("connectivity test failed"));
    CHECK_FALSE(c.wait("b", "state=ACTIVE", never));
    c.ns("b").exec_ok("nft delete table inet t");  // its network is back
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
}

TEST_CASE("cluster: a healed partition with two actives ends with exactly one", "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    // Cut only the heartbeats; both nodes still reach the client.
    const char* cut = "table inet p {\n chain in {\n type filter hook input priority 0;\n udp dport 694 drop\n }\n}";
    c.ns("a").nft(cut);
    c.ns("b").nft(cut);
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    CHECK(c.state("a") == "ACTIVE");
    c.ns("a").exec_ok("nft delete table inet p");
    c.ns("b").exec_ok("nft delete table inet p");
    REQUIRE(c.wait("a", "event=collision.resolved", soon));
    // The secondary took over last (the higher generation) and keeps the VIP.
    CHECK(c.state("a") == "STANDBY");
    CHECK(c.state("b") == "ACTIVE");
    CHECK_THAT(c.ctl("a", "events").out, Catch::Contains("collision.detected"));
}

TEST_CASE("cluster: a failing health check on the active moves the service; a full disk does not", "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    temp_dir flags;
    auto bad = (flags.path() / "broken").string();
    test_cluster::options o;
    o.extra_a = fmt::format("[health]\ncheck_command = \"test ! -e {}\"\ninterval = \"100ms\"\n", bad);
    test_cluster c(o);
    c.up();
    flags.write("broken", "RAID failed\n");
    REQUIRE(c.wait("a", "state=FAILED", soon));
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    std::remove(bad.c_str());
    REQUIRE(c.wait("a", "state=STANDBY", soon));  // repaired: standby, no failback
    CHECK(c.state("b") == "ACTIVE");
}

TEST_CASE("cluster: a clean stop of the active hands over before the timeout", "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster::options o;
    o.interval = "1s";
    o.timeout = "10s";
    test_cluster c(o);
    c.start("a");
    c.start("b");
    REQUIRE(c.wait("a", "state=ACTIVE", 15000ms));
    REQUIRE(c.wait("b", "state=STANDBY", soon));
    auto t0 = mono_now_ns();
    CHECK(c.stop("a") == 0);
    REQUIRE(c.wait("b", "state=ACTIVE", 5000ms));  // half the 10 s timeout
    auto ms = c.event_after_ms("b", "state.changed", "ACTIVE", t0);
    REQUIRE(ms);
    CHECK(*ms < 5000.0);
    CHECK_THAT(c.log("a"), Catch::Contains("[tandemd.stopped]"));
}

TEST_CASE("cluster: a peer with another software version: NEEDS_UPGRADE, no failover", "[scenario][failover]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster::options o;
    o.extra_b = "";
    test_cluster c(o);
    c.start("a");
    REQUIRE(c.wait("a", "state=ACTIVE", soon));
    c.rewrite_config("b", "");
    // Advertise another version from the secondary.
    auto path = c.config_path("b");
    run_ok("sed -i 's/^address = \"10.77.0.2\"$/address = \"10.77.0.2\"\\nsoftware_version = \"9.9.9\"/' " + path);
    c.start("b");
    REQUIRE(c.wait("b", "state=NEEDS_UPGRADE", soon));
    c.kill9("a");
    CHECK_FALSE(c.wait("b", "state=ACTIVE", never));
}
