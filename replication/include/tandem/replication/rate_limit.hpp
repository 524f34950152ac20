// replication: the disk synchronization rate — a token bucket on an injected clock.
#pragma once

#include "tandem/base/clock.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace tandem::replication {

// The seeds' "Disk Synchronization Rate": 1..4096 MB/s (MiB/s), default 100.
inline constexpr std::uint32_t min_rate_mib = 1;
inline constexpr std::uint32_t max_rate_mib = 4096;
inline constexpr std::uint32_t default_rate_mib = 100;

// Bytes flow at `rate` on average; at most `burst` bytes may go at once after an
// idle spell. The caller asks how long to wait before sending n bytes; it is told
// zero when the tokens are there, otherwise the exact time until they are. A
// request larger than the burst is allowed and drives the balance negative, so
// the long-run rate stays exact whatever the chunk size.
class token_bucket {
public:
    // start_full: the first `burst` bytes may go at once; otherwise the bucket starts empty.
    token_bucket(std::uint64_t bytes_per_second, std::uint64_t burst_bytes, steady_time now, bool start_full = true);

    // Takes n bytes' worth of tokens and returns how long the caller must wait
    // before sending them (zero if they were available).
    [[nodiscard]] nanos take(std::uint64_t n, steady_time now);
    // Changes the rate from now on (tandemctl sync-rate); tokens earned so far stay.
    void set_rate(std::uint64_t bytes_per_second, steady_time now);
    // The same, with a new burst (tokens above it are dropped).
    void set_rate(std::uint64_t bytes_per_second, steady_time now, std::uint64_t burst_bytes);
    [[nodiscard]] std::uint64_t rate() const { return rate_; }

private:
    void refill(steady_time now);
    std::uint64_t rate_;
    std::int64_t burst_;
    // Tokens in units of byte-nanoseconds / 1e9, kept as a double of bytes:
    // 4096 MiB/s over hours stays well inside a double's exact range.
    double tokens_;
    steady_time last_;
};

[[nodiscard]] constexpr std::uint64_t mib_per_s(std::uint32_t mib) { return std::uint64_t{mib} << 20; }

// A resync yields to application writes: while the last one came less than
// `resync_yield_window` ago, the resync runs at no more than `yield` (DRBD's
// c-min-rate); otherwise at `limit`. 0 means unlimited for `limit` and never
// yielding for `yield`.
inline constexpr nanos resync_yield_window = std::chrono::milliseconds(200);
inline constexpr std::uint32_t default_yield_rate_mib = 20;

[[nodiscard]] constexpr std::uint64_t resync_rate(std::uint64_t limit, std::uint64_t yield, steady_time last_write,
                                                  steady_time now) {
    // Not `now - last_write`: that overflows for steady_time::min(), "no write yet".
    if (yield == 0 || last_write <= now - resync_yield_window) return limit;
    return limit == 0 ? yield : std::min(limit, yield);
}

}  // namespace tandem::replication
