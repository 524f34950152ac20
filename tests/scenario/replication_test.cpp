// tests: /store replication between two tandemd processes in namespaces — full sync, resume, failover, split brain.
#include "support/cluster.hpp"
#include "support/skip.hpp"
#include "support/util.hpp"
#include "support/volume_file.hpp"

#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <filesystem>

using namespace tandem::test;
using namespace std::chrono_literals;

namespace {

constexpr auto sync_limit = 120s;

// Drops the replication connection (TCP 7789) both ways; heartbeats still flow.
const char* cut_7789 =
    "table inet r {\n chain in {\n type filter hook input priority 0;\n tcp dport 7789 drop\n tcp sport 7789 drop\n "
    "}\n}";
// Drops heartbeats and replication: a partition.
const char* cut_all =
    "table inet r {\n chain in {\n type filter hook input priority 0;\n tcp dport 7789 drop\n tcp sport 7789 drop\n "
    "udp dport 694 drop\n }\n}";

// Two loop devices over /dev/shm and a cluster whose nodes replicate them.
struct replicated {
    loop_volume va, vb;
    test_cluster c;
    // `extra_a`/`extra_b`: more TOML for each node (a [crossover] section, say).
    explicit replicated(std::uint64_t size, unsigned rate_mib = 4096, const std::string& extra_a = "",
                        const std::string& extra_b = "")
        : va(size, true), vb(size, false), c(options(rate_mib, va.dev, vb.dev, extra_a, extra_b)) {}
    ~replicated() {
        for (auto* v : {&va, &vb}) ::unlink(fmt::format("/dev/shm/tandem-md-{}-{}", ::getpid(), v->dev.substr(v->dev.rfind('/') + 1)).c_str());
    }
    static test_cluster::options options(unsigned rate, const std::string& a, const std::string& b,
                                         const std::string& extra_a, const std::string& extra_b) {
        test_cluster::options o;
        auto section = [&](const std::string& dev) {
            return fmt::format("[replication]\nbackend = \"uring\"\ndevice = \"{}\"\nmetadata = \"/dev/shm/tandem-md-{}-{}\"\n"
                               "rate = {}\n[store]\nmount = \"\"\n",
                               dev, ::getpid(), dev.substr(dev.rfind('/') + 1), rate);
        };
        o.extra_a = section(a) + extra_a;
        o.extra_b = section(b) + extra_b;
        return o;
    }
    // Both nodes started, the first sync done, beta standby.
    void up() {
        c.start("a");
        c.start("b");
        REQUIRE(sync("b").status == 0);
        REQUIRE(c.wait("b", "state=STANDBY", soon));
    }
    nlohmann::json repl(const std::string& node) { return c.status(node)["replication"]; }
    std::uint64_t sent(const std::string& node) { return repl(node)["resync_bytes_sent"].get<std::uint64_t>(); }
    // `tandemctl sync` on a node, which returns once both nodes are in sync.
    cmd_result sync(const std::string& node) {
        return c.ctl(node, fmt::format("sync --timeout {}s", sync_limit.count()));
    }
};

}  // namespace

TEST_CASE("replication: a new cluster copies /store to the secondary, which is standby only once in sync",
          "[scenario][replication]") {
    TANDEM_REQUIRE_NAMESPACES();
    replicated r(1024 * mib, 400);  // 400 MB/s: about 2.5 s, long enough to watch
    auto& c = r.c;
    c.start("a");
    c.start("b");
    REQUIRE(c.wait("a", "state=ACTIVE", soon));
    REQUIRE(c.wait("b", "event=replication.sync_started", soon, 0));
    REQUIRE(c.wait("b", "state=SYNCHRONIZING", soon, 0));
    auto st = c.status("b");
    CHECK(st["local"]["sync"] == "SYNCHRONIZING");
    CHECK(st["replication"]["sync"]["total_bytes"] > 0);
    CHECK(st["replication"]["sync"]["done_bytes"] <= st["replication"]["sync"]["total_bytes"]);
    // A standby that is still synchronizing is no failover target: a takeover is refused.
    auto t = c.ctl("b", "takeover");
    CHECK(t.status == 1);
    auto follow = r.sync("b");
    INFO(follow.out);
    REQUIRE(follow.status == 0);
    CHECK_THAT(follow.out, Catch::Contains("MiB/s") && Catch::Contains("ETA") && Catch::Contains("in sync with alpha"));
    REQUIRE(c.wait("b", "state=STANDBY", soon));
    CHECK(r.va.sha256() == r.vb.sha256());
    // The primary's promotion mid-sync reconnects once; the resync resumes
    // from the target's bitmap, so at most the frames in flight go twice.
    CHECK(r.sent("a") <= 1024 * mib + 32 * mib);
    auto ra = r.repl("a");
    CHECK(ra["primary"] == true);
    CHECK(ra["link"] == "connected");
    CHECK(r.repl("b")["generation"] == ra["generation"]);
    auto cs = c.ctl("a", "cstate").out;
    CHECK_THAT(cs, Catch::Contains("SY:UPTODATE N:alpha") && Catch::Contains("SY:UPTODATE G:"));
}

TEST_CASE("replication: a cut link and a killed daemon mid-sync resume, never restart", "[scenario][replication]") {
    TANDEM_REQUIRE_NAMESPACES();
    replicated r(1024 * mib, 150);  // about 7 s
    auto& c = r.c;
    c.start("a");
    c.start("b");
    REQUIRE(c.wait("b", "event=replication.checkpoint", soon));

    // The replication link goes silent; the heartbeats do not, so no failover.
    auto seq = c.last_seq("b");
    c.ns("b").nft(cut_7789);
    REQUIRE(c.wait("b", "event=replication.disconnected", 10s, seq));
    c.ns("b").exec_ok("nft delete table inet r");
    REQUIRE(c.wait("b", "event=replication.checkpoint", soon, c.last_seq("b")));

    // The target's daemon dies without a word and comes back.
    c.kill9("b");
    c.start("b");
    REQUIRE(r.sync("b").status == 0);
    CHECK(r.va.sha256() == r.vb.sha256());
    auto total = r.sent("a");
    INFO("source sent " << total << " bytes in all for a 1 GiB volume");
    CHECK(total < 1024 * mib * 3 / 2);  // a restart from zero twice would be >= 1.5 GiB
    CHECK(c.log("b").find("full_target (local fresh") != std::string::npos);
    CHECK(c.state("a") == "ACTIVE");
}

TEST_CASE("replication: after a failover the old primary rejoins with a bitmap resync, not a full one",
          "[scenario][replication]") {
    TANDEM_REQUIRE_NAMESPACES();
    replicated r(256 * mib);
    auto& c = r.c;
    r.up();
    auto seq0 = c.last_seq("b");
    c.kill9("a");
    c.ns("a").exec_ok("ip link set eth0 down");
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    REQUIRE(c.wait("b", "event=replication.disconnected", 10s, seq0));
    auto rb = r.repl("b");
    CHECK(rb["primary"] == true);
    CHECK(rb["link"] == "connecting");
    c.ns("a").exec_ok("ip link set eth0 up");
    auto seq = c.last_seq("b");
    c.start("a");
    REQUIRE(c.wait("b", "event=replication.connected", 10s, seq));
    REQUIRE(r.sync("a").status == 0);
    REQUIRE(c.wait("a", "state=STANDBY", soon));
    // a crashed as primary: its activity log is empty (no writes), b's bitmap holds what b wrote.
    CHECK(r.repl("a")["decision"] == "bitmap_target");
    CHECK(r.sent("b") == 0);
    CHECK(r.va.sha256() == r.vb.sha256());
    CHECK(c.state("b") == "ACTIVE");  // no automatic failback
}

TEST_CASE("replication: a replaced disk is refused by its old metadata; the operator adopts a copy or resyncs a "
          "blank one",
          "[scenario][replication]") {
    TANDEM_REQUIRE_NAMESPACES();
    constexpr std::uint64_t size = 64 * mib;
    replicated r(size);
    auto& c = r.c;
    r.up();
    auto sent0 = r.sent("a");  // the first full sync
    auto adopt_cmd = fmt::format("{}/tandemd -c {} --adopt-volume", bin_dir(), c.config_path("b"));
    // Not while beta's tandemd has the metadata.
    auto busy = run(adopt_cmd);
    CHECK(busy.status == 1);
    CHECK_THAT(busy.out, Catch::Contains("tandemd is running: stop it first"));
    auto md_b = fmt::format("/dev/shm/tandem-md-{}-{}", ::getpid(), r.vb.dev.substr(r.vb.dev.rfind('/') + 1));
    // Beta's disk is swapped behind the same device name while tandemd is stopped.
    auto replace_disk = [&](const std::string& how) {
        REQUIRE(c.stop("b") == 0);
        run_ok(fmt::format("losetup -d {0} && {1} && losetup {0} {2}", r.vb.dev, how, r.vb.file));
    };
    auto refused_start = [&] {
        c.start("b");
        auto st = c.exit_status("b", soon);
        INFO(c.log("b"));
        REQUIRE(st.has_value());
        CHECK(*st != 0);
        CHECK_THAT(c.log("b"), Catch::Contains("is not the volume its metadata") &&
                                   Catch::Contains("tandemd --adopt-volume"));
    };

    // 1. The same data on a new disk (a copy: another inode). The start is
    //    refused; the operator, who knows it is a copy, adopts it, and beta
    //    rejoins with nothing resent.
    replace_disk(fmt::format("cp {0} {0}.new && mv {0}.new {0}", r.vb.file));
    refused_start();
    auto adopt = run(adopt_cmd);
    INFO(adopt.out);
    REQUIRE(adopt.status == 0);
    CHECK_THAT(adopt.out, Catch::Contains("now describes " + r.vb.dev));
    c.start("b");
    REQUIRE(r.sync("b").status == 0);
    REQUIRE(c.wait("b", "state=STANDBY", soon));
    CHECK(r.sent("a") == sent0);

    // 2. A blank disk. Without the check, beta's metadata would call it in sync
    //    with alpha. The start is refused; the operator removes the metadata,
    //    and alpha sends the whole volume.
    replace_disk(fmt::format("rm {0} && truncate -s {1} {0}", r.vb.file, size));
    refused_start();
    REQUIRE(std::filesystem::remove(md_b));
    c.start("b");
    REQUIRE(r.sync("b").status == 0);
    REQUIRE(c.wait("b", "state=STANDBY", soon));
    CHECK(r.repl("b")["decision"] == "full_target");
    CHECK(r.sent("a") - sent0 == size);
    CHECK(r.va.sha256() == r.vb.sha256());
}

TEST_CASE("replication: over an IPv6 crossover link; a pulled crossover stops replication, not the cluster",
          "[scenario][replication]") {
    TANDEM_REQUIRE_NAMESPACES();
    // The crossover cable: a veth straight from one node to the other, with
    // IPv6 addresses; the heartbeats stay on the IPv4 management network.
    auto xo = [](int me, int peer) {
        return fmt::format("[crossover]\ninterface = \"xo\"\naddress = \"fd00:78::{}\"\npeer_address = \"fd00:78::{}\"\n",
                           me, peer);
    };
    replicated r(256 * mib, 4096, xo(1, 2), xo(2, 1));
    auto& c = r.c;
    veth(c.ns("a"), "xo", "fd00:78::1/64 nodad", c.ns("b"), "xo", "fd00:78::2/64 nodad");
    r.up();
    CHECK(r.va.sha256() == r.vb.sha256());
    // The primary dials from its crossover address, bound to the crossover
    // interface (ss shows SO_BINDTODEVICE as "%xo"), to the secondary's.
    auto ss = c.ns("a").exec_ok("ss -Htn state established '( dport = :7789 )'");
    INFO(ss);
    CHECK_THAT(ss, Catch::Contains("[fd00:78::1]%xo:") && Catch::Contains("[fd00:78::2]:7789"));
    CHECK(c.ns("a").exec_ok("ss -Htn state established '( dport = :7789 or sport = :7789 )'").find("10.77.0.") ==
          std::string::npos);

    // The cable is pulled on beta's side: replication stops; heartbeats do
    // not, so no failover, and beta's copy is outdated (fencing).
    auto seq = c.last_seq("b");
    c.ns("b").exec_ok("ip link set xo down");  // IPv6 drops the address of a link that goes down
    REQUIRE(c.wait("b", "event=replication.disconnected", 20s, seq));
    REQUIRE(c.wait("b", "event=replication.outdated", 10s, seq));
    CHECK(r.repl("b")["link"] != "connected");
    CHECK(c.state("a") == "ACTIVE");
    CHECK(c.status("b")["local"]["sync"] == "OUTDATED");
    // Plugged in again, with its address back (as systemd-networkd would): the engine reconnects over it.
    seq = c.last_seq("b");
    c.ns("b").exec_ok("ip link set xo up");
    c.ns("b").exec_ok("ip addr replace fd00:78::2/64 nodad dev xo");
    REQUIRE(c.wait("b", "event=replication.connected", 30s, seq));
    REQUIRE(r.sync("b").status == 0);
    CHECK(r.va.sha256() == r.vb.sha256());
    CHECK(c.state("a") == "ACTIVE");
    REQUIRE(c.wait("b", "state=STANDBY", soon));
}

TEST_CASE("replication: fencing — a standby that misses the active's writes is OUTDATED, never takes over by "
          "itself, and takeover --force is the operator's way out",
          "[scenario][replication]") {
    TANDEM_REQUIRE_NAMESPACES();
    replicated r(64 * mib);
    auto& c = r.c;
    r.up();
    REQUIRE(c.wait("a", "state=ACTIVE", soon));
    // Alpha's promotion reconnects, so that beta learns the role.
    REQUIRE(wait_until([&] { return r.repl("a")["link"] == "connected"; }, 20s));

    // A clean stop of the standby while alpha is active: its copy is outdated
    // first, and alpha's writes go on as soon as beta's last heartbeats say so.
    auto seq_a = c.last_seq("a");
    c.stop("b");
    REQUIRE(c.wait("a", "event=replication.fenced", soon, seq_a));
    CHECK_THAT(c.log("a"), Catch::Contains("the peer reports its copy OUTDATED"));
    c.start("b");
    REQUIRE(r.sync("b").status == 0);
    REQUIRE(c.wait("b", "state=STANDBY", soon));
    CHECK(c.status("b")["local"]["sync"] == "UPTODATE");
    CHECK(r.va.sha256() == r.vb.sha256());

    // Only the replication link fails; the heartbeats go on. Alpha holds its
    // writes until beta's heartbeats report the copy OUTDATED.
    seq_a = c.last_seq("a");
    auto seq_b = c.last_seq("b");
    auto cut_at = mono_now_ns();
    c.ns("b").nft(cut_7789);
    REQUIRE(c.wait("b", "event=replication.outdated", 20s, seq_b));
    REQUIRE(c.wait("a", "event=replication.fenced", 20s, seq_a));
    // How long alpha's writes would wait: from the link's loss (the fence) to beta's OUTDATED.
    auto fence = c.event_after_ms("a", "replication.fencing", "", cut_at);
    auto fenced = c.event_after_ms("a", "replication.fenced", "", cut_at);
    REQUIRE(fence);
    REQUIRE(fenced);
    CHECK(*fenced >= *fence);
    WARN(fmt::format("replication link cut: lost after {:.1f} ms, peer outdated after {:.1f} ms: writes held {:.1f} ms",
                     *fence, *fenced, *fenced - *fence));
    REQUIRE(c.wait("b", "state=SYNCHRONIZING", soon, seq_b));
    CHECK(c.status("b")["local"]["sync"] == "OUTDATED");
    CHECK(r.repl("b")["outdated"] == true);
    CHECK(r.repl("a")["fence_pending"] == false);
    CHECK(c.state("a") == "ACTIVE");
    CHECK(c.ctl("b", "takeover").status == 1);
    auto early = c.ctl("b", "takeover --force");
    CHECK(early.status == 1);  // alpha is heard: it holds the newer data
    CHECK_THAT(early.out, Catch::Contains("the peer is heard"));

    // Alpha crashes. Beta does not take over, and says why, once.
    seq_b = c.last_seq("b");
    c.kill9("a");
    c.ns("a").exec_ok("ip link set eth0 down");
    REQUIRE(c.wait("b", "event=failover.blocked", soon, seq_b));
    CHECK_THAT(c.log("b"), Catch::Contains("this node's data is OUTDATED: no takeover"));
    CHECK(c.state("b") == "SYNCHRONIZING");

    // The operator knows alpha is gone for good and forces it.
    auto forced = c.ctl("b", "takeover --force");
    INFO(forced.out);
    REQUIRE(forced.status == 0);
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    CHECK(r.repl("b")["outdated"] == false);
    CHECK(r.repl("b")["primary"] == true);
    CHECK_THAT(c.log("b"), Catch::Contains("replication.outdated_overridden"));
}

TEST_CASE("replication: a split brain stops replication until the operator discards one side",
          "[scenario][replication]") {
    TANDEM_REQUIRE_NAMESPACES();
    replicated r(64 * mib);
    auto& c = r.c;
    r.up();
    // A partition: beta becomes active and starts a new generation of /store.
    auto seq0 = c.last_seq("a");
    c.ns("a").nft(cut_all);
    c.ns("b").nft(cut_all);
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    REQUIRE(c.wait("a", "event=replication.disconnected", 10s, seq0));
    // Alpha wrote nothing since, so it still holds the generation both share: no
    // split brain yet. It restarts, still cut off, claims again and promotes: a
    // new generation of its own. Now both sides moved on.
    c.kill9("a");
    c.start("a");
    REQUIRE(c.wait("a", "event=failover.complete", soon, 0));
    auto seq_a = c.last_seq("a"), seq_b = c.last_seq("b");
    c.ns("a").exec_ok("nft delete table inet r");
    c.ns("b").exec_ok("nft delete table inet r");
    REQUIRE(c.wait("a", "event=replication.split_brain", 10s, seq_a));
    REQUIRE(c.wait("b", "event=replication.split_brain", 10s, seq_b));
    // The heartbeats resolve the collision: one node steps down and, its data
    // diverged, waits as SYNCHRONIZING (which one depends on the generations).
    std::string loser;
    for (int i = 0; i < 10 && loser.empty(); ++i) {
        if (c.wait("a", "state=SYNCHRONIZING", 500ms, seq_a)) loser = "a";
        else if (c.wait("b", "state=SYNCHRONIZING", 500ms, seq_b)) loser = "b";
    }
    REQUIRE_FALSE(loser.empty());
    auto winner = loser == "a" ? std::string("b") : std::string("a");
    CHECK(c.state(winner) == "ACTIVE");
    CHECK(r.repl(loser)["split_brain"] == true);
    CHECK(c.status(loser)["local"]["sync"] == "DIVERGED");
    CHECK(c.ctl(loser, "sync --timeout 1s").status == 1);  // says it stopped, and why
    // The active node's data cannot be discarded; the other's can.
    CHECK(c.ctl(winner, "discard-local").status == 1);
    auto d = c.ctl(loser, "discard-local");
    INFO(d.out);
    REQUIRE(d.status == 0);
    REQUIRE(r.sync(loser).status == 0);
    CHECK(r.va.sha256() == r.vb.sha256());
    CHECK(r.repl(winner)["split_brain"] == false);
    REQUIRE(c.wait(loser, "state=STANDBY", soon));
}

TEST_CASE("replication: sync-rate changes the rate at once and refuses values outside 1..4096",
          "[scenario][replication]") {
    TANDEM_REQUIRE_NAMESPACES();
    replicated r(16 * mib);
    auto& c = r.c;
    c.start("a");
    REQUIRE(c.wait("a", "event=tandemd.started", soon, 0));
    auto bad = c.ctl("a", "sync-rate 5000");
    CHECK(bad.status == 1);
    CHECK_THAT(bad.out, Catch::Contains("5000") && Catch::Contains("1 to 4096"));
    CHECK(c.ctl("a", "sync-rate 0").status == 1);
    CHECK(c.ctl("a", "sync-rate fast").status == 2);
    auto good = c.ctl("a", "sync-rate 250");
    CHECK(good.status == 0);
    CHECK(r.repl("a")["rate_limit_bps"] == 250ull << 20);
    CHECK(r.repl("a")["rate_mib"] == 250);
}

TEST_CASE("replication: online verify finds a block corrupted on the secondary", "[scenario][replication]") {
    TANDEM_REQUIRE_NAMESPACES();
    replicated r(64 * mib);
    auto& c = r.c;
    c.start("a");
    c.start("b");
    // alpha's promotion reconnects once; verify after that, on the connection that stays.
    auto down = c.ctl("a", "wait event=replication.disconnected --timeout 10s --since 0");
    REQUIRE(down.status == 0);
    auto seq = nlohmann::json::parse(down.out)["seq"].get<std::uint64_t>();
    REQUIRE(c.wait("a", "event=replication.connected", soon, seq));
    REQUIRE(r.sync("b").status == 0);
    auto clean = c.ctl("a", "verify --timeout 60s");
    INFO(clean.out);
    REQUIRE(clean.status == 0);
    CHECK_THAT(clean.out, Catch::Contains("no difference"));
    // One 4 KiB block at 5 MiB changes under the secondary's feet.
    run_ok(fmt::format("dd if=/dev/urandom of={} bs=4096 seek=1280 count=1 oflag=direct conv=notrunc status=none",
                       r.vb.dev));
    auto bad = c.ctl("a", "verify --timeout 60s");
    INFO(bad.out);
    CHECK(bad.status == 1);
    CHECK_THAT(bad.out, Catch::Contains("4096 bytes differ") && Catch::Contains("5242880+4096"));
    auto v = r.repl("a")["verify"];
    CHECK(v["mismatched_bytes"] == 4096);
    CHECK(v["mismatches"][0]["offset"] == 5 * mib);
    CHECK(c.ctl("b", "verify --timeout 60s").status == 1);  // from either side

    // The repair runs on the primary only: its copy is the one kept.
    auto refused = c.ctl("b", "verify --repair --timeout 60s");
    CHECK(refused.status == 1);
    CHECK_THAT(refused.out, Catch::Contains("runs on the primary"));
    auto before = r.repl("a")["resync_bytes_sent"].get<std::uint64_t>();
    auto since = c.last_seq("a");
    auto repaired = c.ctl("a", "verify --repair --timeout 60s");
    INFO(repaired.out);
    CHECK(repaired.status == 1);  // it found a difference
    CHECK_THAT(repaired.out, Catch::Contains("5242880+4096") && Catch::Contains("resending them to beta"));
    auto done = c.ctl("a", fmt::format("wait event=replication.sync_done --timeout 30s --since {}", since));
    INFO(done.out << "\nlog of alpha:\n" << c.log("a"));
    REQUIRE(done.status == 0);
    CHECK_THAT(c.log("a"), Catch::Contains("same generation, local has blocks to resend"));
    // Exactly the differing block went over, and the copies are equal again.
    CHECK(r.repl("a")["resync_bytes_sent"].get<std::uint64_t>() - before == 4096);
    auto after = c.ctl("a", "verify --timeout 60s");
    INFO(after.out);
    CHECK(after.status == 0);
    CHECK(r.va.sha256() == r.vb.sha256());
}
