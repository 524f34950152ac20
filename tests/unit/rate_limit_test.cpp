// tests: the token bucket holds the configured rate exactly, on a manual clock.
#include "tandem/replication/rate_limit.hpp"

#include <catch2/catch.hpp>

using namespace tandem;
using namespace tandem::replication;
using namespace std::chrono_literals;

namespace {
// Sends `total` bytes in `chunk`-sized pieces, waiting as told; returns the elapsed time.
nanos send(token_bucket& b, manual_clock& c, std::uint64_t total, std::uint64_t chunk) {
    auto start = c.now();
    for (std::uint64_t sent = 0; sent < total; sent += chunk) c.advance(b.take(chunk, c.now()));
    return c.now() - start;
}
}  // namespace

TEST_CASE("the rate is exact for every seed rate and chunk size", "[unit][replication]") {
    // After the initial burst, bytes go at exactly the rate: the last chunk of
    // `total` bytes may leave at (total - burst) / rate, whatever the chunk size.
    const std::uint64_t burst = 1 << 20;
    for (std::uint32_t mib : {1u, 100u, 400u, 1100u, 4096u}) {
        for (std::uint64_t chunk : {4096ull, 65536ull, 1ull << 20, 8ull << 20}) {
            manual_clock c;
            token_bucket b(mib_per_s(mib), burst, c.now());
            std::uint64_t total = std::max(mib_per_s(mib) * 10, chunk * 100);
            auto took = std::chrono::duration<double>(send(b, c, total, chunk)).count();
            double want = static_cast<double>(total - burst) / static_cast<double>(mib_per_s(mib));
            INFO(mib << " MiB/s in " << chunk << "-byte chunks: " << took << " s, want " << want << " s");
            CHECK(took == Approx(want).margin(1e-6));
        }
    }
}

TEST_CASE("tokens do not pile up beyond the burst while idle", "[unit][replication]") {
    manual_clock c;
    token_bucket b(mib_per_s(100), 1 << 20, c.now());
    c.advance(1h);
    CHECK(b.take(1 << 20, c.now()) == 0ns);       // the burst is there
    CHECK(b.take(1 << 20, c.now()) == 10ms);      // the next MiB waits 1/100 s
}

TEST_CASE("a rate change applies from now on", "[unit][replication]") {
    manual_clock c;
    token_bucket b(mib_per_s(100), 0, c.now());
    CHECK(b.take(100ull << 20, c.now()) == 1s);
    c.advance(1s);
    b.set_rate(mib_per_s(400), c.now());
    CHECK(b.take(400ull << 20, c.now()) == 1s);
    CHECK(b.rate() == mib_per_s(400));
}

TEST_CASE("an empty-started bucket never runs ahead of the rate, and catches up after a stall within its burst",
          "[unit][replication]") {
    manual_clock c;
    const std::uint64_t rate = mib_per_s(1100), burst = rate / 20;  // what the pump uses: 50 ms of budget
    token_bucket b(rate, burst, c.now(), false);
    CHECK(b.take(1 << 20, c.now()) > 0ns);  // nothing at the start
    c.advance(b.take(0, c.now()));
    // A 30 ms stall: that budget is kept and spent at once afterwards.
    c.advance(30ms);
    std::uint64_t caught_up = 0;
    while (b.take(1 << 20, c.now()) == 0ns) caught_up += 1 << 20;
    CHECK(caught_up >= rate * 30 / 1000 - (2 << 20));
    CHECK(caught_up <= rate * 30 / 1000 + (1 << 20));
    // A stall longer than the burst loses only what is beyond it.
    token_bucket d(rate, burst, c.now(), false);
    c.advance(1s);
    CHECK(d.take(burst, c.now()) == 0ns);
    CHECK(d.take(1 << 20, c.now()) > 0ns);
    // A new burst with a new rate drops the tokens above it.
    d.set_rate(mib_per_s(100), c.now(), 1 << 20);
    c.advance(1h);
    CHECK(d.take(1 << 20, c.now()) == 0ns);
    CHECK(d.take(1 << 20, c.now()) == 10ms);
}

TEST_CASE("a resync yields to application writes for the window after the last one", "[unit][replication]") {
    constexpr auto limit = mib_per_s(400), yield = mib_per_s(20);
    manual_clock c(steady_time{} + 10s);
    auto never = steady_time::min();
    // No write yet: the configured limit, or unlimited.
    CHECK(resync_rate(limit, yield, never, c.now()) == limit);
    CHECK(resync_rate(0, yield, never, c.now()) == 0);
    auto wrote = c.now();
    c.advance(resync_yield_window - 1ns);
    CHECK(resync_rate(limit, yield, wrote, c.now()) == yield);
    CHECK(resync_rate(0, yield, wrote, c.now()) == yield);  // unlimited yields too
    CHECK(resync_rate(mib_per_s(5), yield, wrote, c.now()) == mib_per_s(5));  // never above the limit
    CHECK(resync_rate(limit, 0, wrote, c.now()) == limit);  // 0: never yields
    c.advance(1ns);
    CHECK(resync_rate(limit, yield, wrote, c.now()) == limit);
    CHECK(resync_rate(0, yield, wrote, c.now()) == 0);
}
