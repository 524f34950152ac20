// base: parsing and printing of configuration durations.
#include "tandem/base/duration.hpp"

#include <charconv>
#include <cstdint>

namespace tandem {

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) noexcept {
    std::uint64_t n = 0;
    const auto* first = text.data();
    const auto* last = text.data() + text.size();
    auto [p, ec] = std::from_chars(first, last, n);
    if (ec != std::errc{} || p == first) return std::nullopt;
    std::string_view unit(p, static_cast<std::size_t>(last - p));
    std::uint64_t mult = 0;
    if (unit == "ms") mult = 1;
    else if (unit == "s") mult = 1000;
    else if (unit == "min" || unit == "m") mult = 60'000;
    else return std::nullopt;
    // Reject values that would overflow a signed 64-bit millisecond count.
    if (n > static_cast<std::uint64_t>(INT64_MAX) / mult) return std::nullopt;
    return std::chrono::milliseconds(static_cast<std::int64_t>(n * mult));
}

std::string format_duration(std::chrono::milliseconds d) {
    auto ms = d.count();
    if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "min";
    if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

}  // namespace tandem
