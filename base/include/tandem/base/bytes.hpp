// base: fixed-width big-endian (network order) loads and stores over byte spans.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

namespace tandem {

template <class T>
    requires std::is_unsigned_v<T>
constexpr void store_be(std::span<std::byte> out, T v) noexcept {
    for (std::size_t i = 0; i < sizeof(T); ++i)
        out[i] = static_cast<std::byte>(v >> (8 * (sizeof(T) - 1 - i)));
}

template <class T>
    requires std::is_unsigned_v<T>
[[nodiscard]] constexpr T load_be(std::span<const std::byte> in) noexcept {
    T v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>((v << 8) | std::to_integer<T>(in[i]));
    return v;
}

[[nodiscard]] inline std::span<const std::byte> as_bytes(std::string_view s) noexcept {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace tandem
