// tests: two replication engines over loopback TCP on real files — new cluster, live writes, delta and checksum resync, split brain.
#include "tandem/replication/engine.hpp"

#include "support/netns.hpp"
#include "support/skip.hpp"
#include "support/tempdir.hpp"
#include "support/volume_file.hpp"

#include <unistd.h>

#include <catch2/catch.hpp>

#include <condition_variable>
#include <mutex>
#include <random>
#include <set>
#include <vector>

using namespace tandem;
using namespace tandem::replication;
using tandem::test::mib;
using tandem::test::volume_file;

namespace {

// Events from both engines, waited for by kind; no sleeping.
struct event_log {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::pair<std::string, std::string>> all;  // "node kind", detail

    engine_event_fn for_node(std::string node) {
        return [this, node](std::string_view kind, const std::string& detail) {
            std::lock_guard lk(mu);
            all.emplace_back(node + " " + std::string(kind), detail);
            cv.notify_all();
        };
    }
    // Waits until `what` ("node kind") happened `n` times in total; returns the detail of the last.
    std::string wait(const std::string& what, std::size_t n = 1, std::chrono::seconds limit = std::chrono::seconds(60)) {
        std::unique_lock lk(mu);
        std::string detail;
        bool ok = cv.wait_for(lk, limit, [&] {
            std::size_t c = 0;
            for (auto& [k, d] : all)
                if (k == what && ++c == n) detail = d;
            return c >= n;
        });
        if (!ok) {
            std::string seen;
            for (auto& [k, d] : all) seen += "\n  " + k + ": " + d;
            FAIL("no \"" << what << "\" event (#" << n << ") within " << limit.count() << " s; seen:" << seen);
        }
        return detail;
    }
    std::size_t count(const std::string& what) {
        std::lock_guard lk(mu);
        return static_cast<std::size_t>(std::count_if(all.begin(), all.end(), [&](auto& e) { return e.first == what; }));
    }
};

std::uint16_t test_port() { return static_cast<std::uint16_t>(20000 + (::getpid() % 20000)); }

struct node {
    volume_file vol;
    std::string md;
    engine_config cfg;
    std::unique_ptr<engine> eng;

    node(const std::string& name, bool dialer, std::uint64_t size, bool random_content)
        : vol(size, random_content), md(vol.path + ".md") {
        cfg.node_name = name;
        cfg.device = vol.path;
        cfg.metadata_path = md;
        cfg.dialer = dialer;
        cfg.local_address = dialer ? "127.0.0.1" : "127.0.0.2";
        cfg.peer_address = dialer ? "127.0.0.2" : "127.0.0.1";
        cfg.port = test_port();
        cfg.key.assign(32, std::byte{0x5a});
        cfg.rate_bps = 0;  // unlimited
        cfg.peer_timeout = std::chrono::milliseconds(3000);
        cfg.retry = std::chrono::milliseconds(100);
    }
    ~node() {
        eng.reset();
        ::unlink(md.c_str());
    }
    void start(event_log& log) {
        auto e = engine::open(cfg, log.for_node(cfg.node_name));
        REQUIRE(e);
        eng = std::move(*e);
        eng->start();
    }
    void promote() {
        std::string why;
        auto r = eng->promote(why);
        INFO(why);
        REQUIRE(r);
    }
};

std::vector<std::byte> pattern(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::byte> b(n);
    for (auto& x : b) x = static_cast<std::byte>(rng());
    return b;
}

// A new cluster's first sync, then alpha promoted (which reconnects) and beta in sync again.
void in_sync_with_alpha_primary(node& a, node& b, event_log& log) {
    b.start(log);
    a.start(log);
    log.wait("beta replication.sync_done");
    a.promote();
    log.wait("beta replication.sync_done", 2);
}

// 1 % of a volume's 4 KiB blocks, at random.
std::set<std::uint64_t> one_percent_of(std::uint64_t size, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::set<std::uint64_t> blocks;
    while (blocks.size() < size / 4096 / 100) blocks.insert(rng() % (size / 4096));
    return blocks;
}

#define REQUIRE_DIRECT_IO()                          \
    do {                                             \
        std::string why_;                            \
        if (!tandem::test::can_direct(why_)) TANDEM_SKIP(why_); \
    } while (0)

}  // namespace

TEST_CASE("a new cluster synchronizes fully, then replicates writes as they happen", "[kernel][replication][engine]") {
    REQUIRE_DIRECT_IO();
    event_log log;
    node a("alpha", true, 64 * mib, true), b("beta", false, 64 * mib, false);
    b.start(log);
    a.start(log);
    log.wait("beta replication.sync_done");
    CHECK(a.vol.digest() == b.vol.digest());
    auto sa = a.eng->status();
    CHECK(sa.resync_bytes_sent == 64 * mib);
    CHECK(b.eng->status().consistent);
    CHECK(sa.gen.current == b.eng->status().gen.current);

    // A promotion reconnects, so the peer learns the new role in a handshake.
    a.promote();
    log.wait("beta replication.sync_done", 2);
    // Protocol C: when write() returns, the peer has the bytes.
    auto data = pattern(3 * mib + 4096, 7);
    REQUIRE(a.eng->write(5 * mib, data));
    REQUIRE(a.eng->write(4096, std::span(data).first(512), data_fua));
    REQUIRE(a.eng->flush());
    CHECK(b.vol.digest(5 * mib, data.size()) == XXH3_64bits(data.data(), data.size()));
    CHECK(a.vol.digest() == b.vol.digest());
    CHECK(a.eng->status().dirty_bytes == 0);
    // The secondary never writes.
    CHECK(b.eng->write(0, std::span(data).first(4096)).error() == make_error_code(errc::role_conflict));
}

TEST_CASE("a reconnect resynchronizes only the blocks written while apart", "[kernel][replication][engine]") {
    REQUIRE_DIRECT_IO();
    event_log log;
    const std::uint64_t size = 128 * mib;
    node a("alpha", true, size, true), b("beta", false, size, false);
    in_sync_with_alpha_primary(a, b, log);
    b.eng->stop();
    log.wait("alpha replication.disconnected");
    // 1 % of the volume in random 4 KiB blocks, written without the peer.
    auto blocks = one_percent_of(size, 11);
    auto block = pattern(4096, 3);
    for (auto blk : blocks) REQUIRE(a.eng->write(blk * 4096, block));
    CHECK(a.eng->status().dirty_bytes == blocks.size() * 4096);
    CHECK(a.eng->status().gen.bitmap != gen_none);  // a new generation started when the peer went

    b.eng.reset();
    b.start(log);
    log.wait("beta replication.sync_done", 3);
    auto sent = a.eng->status().resync_bytes_sent - size;
    INFO("delta resync sent " << sent << " bytes for " << blocks.size() * 4096 << " changed");
    INFO("events:" << [&] {
        std::lock_guard lk(log.mu);
        std::string s;
        for (auto& [k, d] : log.all) s += "\n  " + k + ": " + d;
        return s;
    }());
    CHECK(sent == blocks.size() * 4096);
    CHECK(a.vol.digest() == b.vol.digest());
    CHECK(log.wait("alpha replication.connected", 3).find("bitmap_source") != std::string::npos);
}

TEST_CASE("an interrupted full sync resumes instead of starting again", "[kernel][replication][engine]") {
    REQUIRE_DIRECT_IO();
    event_log log;
    const std::uint64_t size = 256 * mib;
    node a("alpha", true, size, true), b("beta", false, size, false);
    a.cfg.rate_bps = 128 * mib;  // about two seconds: time to cut it
    b.start(log);
    a.start(log);
    log.wait("beta replication.sync_started");
    log.wait("beta replication.checkpoint");  // one second of progress is durable on the target
    b.eng.reset();  // a clean stop mid-sync; the daemon-level test kills it instead
    log.wait("alpha replication.disconnected");
    auto first = a.eng->status().resync_bytes_sent;
    b.start(log);
    log.wait("beta replication.sync_done");
    auto second = a.eng->status().resync_bytes_sent - first;
    INFO("first connection sent " << first << ", the resumed one " << second);
    CHECK(first + second < size + size / 2);
    CHECK(second < size);
    CHECK(a.vol.digest() == b.vol.digest());
}

TEST_CASE("split brain stops replication until the operator discards one side", "[kernel][replication][engine]") {
    REQUIRE_DIRECT_IO();
    event_log log;
    node a("alpha", true, 32 * mib, true), b("beta", false, 32 * mib, false);
    b.start(log);
    a.start(log);
    log.wait("beta replication.sync_done");
    b.eng->stop();
    log.wait("alpha replication.disconnected");
    b.eng.reset();
    a.promote();
    REQUIRE(a.eng->write(0, pattern(mib, 1)));
    // beta, alone, is promoted too and writes elsewhere: both moved on.
    b.cfg.dialer = false;
    {
        auto e = engine::open(b.cfg, log.for_node("beta"));
        REQUIRE(e);
        b.eng = std::move(*e);
    }
    b.promote();
    REQUIRE(b.eng->write(8 * mib, pattern(mib, 2)));
    std::string why;
    CHECK(!a.eng->discard_local(why));  // the primary cannot discard itself
    REQUIRE(b.eng->demote());
    b.eng->start();
    auto detail = log.wait("alpha replication.split_brain");
    CHECK(detail.find("discard-local") != std::string::npos);
    log.wait("beta replication.split_brain");
    CHECK(b.eng->status().split_brain);
    CHECK(a.vol.digest() != b.vol.digest());  // nothing was overwritten
    REQUIRE(b.eng->discard_local(why));
    log.wait("beta replication.sync_done", 2);
    CHECK(a.vol.digest() == b.vol.digest());
    CHECK_FALSE(b.eng->status().split_brain);
    CHECK_FALSE(a.eng->status().split_brain);
}

TEST_CASE("a peer without the cluster key or with a smaller volume is refused", "[kernel][replication][engine]") {
    REQUIRE_DIRECT_IO();
    SECTION("wrong key") {
        event_log log;
        node a("alpha", true, 16 * mib, true), b("beta", false, 16 * mib, false);
        b.cfg.key.assign(32, std::byte{0x11});
        b.start(log);
        a.start(log);
        auto why = log.wait("alpha replication.refused");
        CHECK(why.find("authentication failed") != std::string::npos);
        CHECK(b.eng->status().connections == 0);
        CHECK(b.vol.digest() != a.vol.digest());
    }
    SECTION("the secondary's volume is smaller") {
        event_log log;
        node a("alpha", true, 32 * mib, true), b("beta", false, 16 * mib, false);
        b.start(log);
        a.start(log);
        auto why = log.wait("beta replication.refused");
        CHECK(why.find("smaller") != std::string::npos);
        CHECK(a.eng->status().resync_bytes_sent == 0);
    }
}

TEST_CASE("a peer restored from an old snapshot gets only the chunks that differ (checksum resync)",
          "[kernel][replication][engine]") {
    REQUIRE_DIRECT_IO();
    event_log log;
    const std::uint64_t size = 64 * mib;
    node a("alpha", true, size, true), b("beta", false, size, false);
    in_sync_with_alpha_primary(a, b, log);
    // A snapshot of beta, volume and metadata, taken cleanly.
    b.eng.reset();
    log.wait("alpha replication.disconnected", 2);
    tandem::test::run_ok("cp " + b.vol.path + " " + b.vol.path + ".snap && cp " + b.md + " " + b.md + ".snap");
    // alpha writes 1 % while beta is away; beta catches up with a bitmap resync.
    auto blocks = one_percent_of(size, 23);
    auto block = pattern(4096, 9);
    for (auto blk : blocks) REQUIRE(a.eng->write(blk * 4096, block));
    b.start(log);
    log.wait("beta replication.sync_done", 3);
    // Then beta is restored from the snapshot: its generation is in alpha's history,
    // so only a full resync is safe; the checksums make it send only what differs.
    b.eng.reset();
    log.wait("alpha replication.disconnected", 3);
    tandem::test::run_ok("mv " + b.vol.path + ".snap " + b.vol.path + " && mv " + b.md + ".snap " + b.md);
    CHECK(a.vol.digest() != b.vol.digest());
    auto before = a.eng->status().resync_bytes_sent;
    b.start(log);
    log.wait("beta replication.sync_done", 4);
    CHECK(log.wait("alpha replication.connected", 4).find("full_source") != std::string::npos);
    log.wait("beta replication.compare");
    auto sent = a.eng->status().resync_bytes_sent - before;
    INFO("checksum resync sent " << sent << " bytes for " << blocks.size() * 4096 << " changed");
    CHECK(sent == blocks.size() * 4096);
    CHECK(a.vol.digest() == b.vol.digest());
}

TEST_CASE("protocol A completes writes locally and a flush waits for the peer", "[kernel][replication][engine]") {
    REQUIRE_DIRECT_IO();
    event_log log;
    node a("alpha", true, 32 * mib, true), b("beta", false, 32 * mib, false);
    a.cfg.protocol = write_protocol::a;
    a.cfg.protocol_a_window = 8;
    in_sync_with_alpha_primary(a, b, log);
    auto data = pattern(mib, 31);
    for (int i = 0; i < 16; ++i) REQUIRE(a.eng->write(static_cast<std::uint64_t>(i) * mib, data));
    REQUIRE(a.eng->flush());  // every write acknowledged and flushed on the peer
    CHECK(a.vol.digest() == b.vol.digest());
    CHECK(a.eng->status().dirty_bytes == 0);
}

TEST_CASE("a full target disk is reported on both sides and nothing is counted as synchronized",
          "[kernel][replication][engine]") {
    REQUIRE_DIRECT_IO();
    // beta's volume is a 64 MiB sparse file on a 16 MiB ext4 file system: it fills up mid-sync.
    tandem::test::temp_dir dir;
    auto img = (dir.path() / "fs.img").string(), mnt = (dir.path() / "mnt").string();
    tandem::test::run_ok("truncate -s 16M " + img + " && mkfs.ext4 -q -F " + img + " && mkdir " + mnt +
                         " && mount -o loop " + img + " " + mnt + " && truncate -s 64M " + mnt + "/vol");
    struct unmount {
        std::string m;
        ~unmount() { tandem::test::run("umount " + m); }
    } um{mnt};
    event_log log;
    node a("alpha", true, 64 * mib, true), b("beta", false, 64 * mib, false);
    b.cfg.device = mnt + "/vol";
    b.start(log);
    a.start(log);
    auto why = log.wait("alpha replication.disconnected");
    CHECK_THAT(why, Catch::Contains("could not write") || Catch::Contains("closed the connection"));
    log.wait("beta replication.disconnected");
    auto bs = b.eng->status();
    INFO(bs.last_error);
    CHECK_THAT(bs.last_error, Catch::Contains("full or failing target disk"));
    CHECK_FALSE(bs.consistent);
    CHECK(a.eng->status().resync_bytes_sent < 16 * mib);
}
