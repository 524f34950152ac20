// tests: two replication engines on real files over loopback TCP, and the events they report.
#pragma once

#include "tandem/replication/engine.hpp"

#include "support/skip.hpp"
#include "support/volume_file.hpp"

#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <thread>
#include <condition_variable>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace tandem::test {

using namespace tandem::replication;


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

inline std::uint16_t test_port() { return static_cast<std::uint16_t>(20000 + (::getpid() % 20000)); }

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

inline std::vector<std::byte> pattern(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::byte> b(n);
    for (auto& x : b) x = static_cast<std::byte>(rng());
    return b;
}

// A new cluster's first sync, then alpha promoted (which reconnects) and beta in sync again.
inline void in_sync_with_alpha_primary(node& a, node& b, event_log& log) {
    b.start(log);
    a.start(log);
    log.wait("beta replication.sync_done");
    a.promote();
    log.wait("beta replication.sync_done", 2);
}

// 1 % of a volume's 4 KiB blocks, at random.
inline std::set<std::uint64_t> one_percent_of(std::uint64_t size, std::uint64_t seed) {
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

}  // namespace tandem::test
