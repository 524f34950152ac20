// base: human durations in configuration ("50ms", "10s", "2min") and back.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace tandem {

// Parses "<integer><unit>" with unit ms, s or min (also "m"); whitespace is not
// allowed. Returns nullopt on anything else; the caller names the key and value.
[[nodiscard]] std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) noexcept;

// Formats as the largest unit that is exact: 100ms, 10s, 2min.
[[nodiscard]] std::string format_duration(std::chrono::milliseconds d);

}  // namespace tandem
