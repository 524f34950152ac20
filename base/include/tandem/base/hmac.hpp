// base: HMAC-SHA256 (RFC 2104 / FIPS 198-1) over OpenSSL libcrypto, and constant-time compare.
#pragma once

#include <array>
#include <cstddef>
#include <span>

namespace tandem {

inline constexpr std::size_t hmac_sha256_size = 32;
using hmac_sha256_digest = std::array<std::byte, hmac_sha256_size>;

[[nodiscard]] hmac_sha256_digest hmac_sha256(std::span<const std::byte> key, std::span<const std::byte> message) noexcept;

// Compares without an early exit, so a forger learns nothing from timing.
[[nodiscard]] bool equal_constant_time(std::span<const std::byte> a, std::span<const std::byte> b) noexcept;

}  // namespace tandem
