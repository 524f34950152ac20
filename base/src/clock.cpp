// base: raw clock readings for wire timestamps.
#include "tandem/base/clock.hpp"

#include <time.h>

namespace tandem {

namespace {
std::uint64_t read_ns(clockid_t id) noexcept {
    timespec ts{};
    ::clock_gettime(id, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

std::uint64_t monotonic_ns() noexcept { return read_ns(CLOCK_MONOTONIC); }
std::uint64_t realtime_ns() noexcept { return read_ns(CLOCK_REALTIME); }

}  // namespace tandem
