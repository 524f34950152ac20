// base: injected clocks, so timeouts and rate limits are tested without sleeping.
#pragma once

#include <chrono>
#include <cstdint>

namespace tandem {

using steady_time = std::chrono::steady_clock::time_point;
using nanos = std::chrono::nanoseconds;
using millis = std::chrono::milliseconds;

// The time source a component reads. The daemon uses the steady clock; tests
// use manual_clock and move time forward explicitly.
class clock_source {
public:
    virtual ~clock_source() = default;
    [[nodiscard]] virtual steady_time now() const noexcept = 0;
};

class system_steady_clock final : public clock_source {
public:
    [[nodiscard]] steady_time now() const noexcept override { return std::chrono::steady_clock::now(); }
};

class manual_clock final : public clock_source {
public:
    explicit manual_clock(steady_time start = steady_time{}) : now_(start) {}
    [[nodiscard]] steady_time now() const noexcept override { return now_; }
    void advance(nanos d) noexcept { now_ += d; }
    void set(steady_time t) noexcept { now_ = t; }

private:
    steady_time now_;
};

// Nanoseconds of CLOCK_MONOTONIC / CLOCK_REALTIME; the wire carries these.
[[nodiscard]] std::uint64_t monotonic_ns() noexcept;
[[nodiscard]] std::uint64_t realtime_ns() noexcept;

}  // namespace tandem
