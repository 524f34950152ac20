// agent: ICMP echo request and reply bytes for the connectivity test (pure functions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace tandem::agent {

// Pure ICMP echo request (RFC 792 type 8 / RFC 4443 type 128), 16 bytes. For
// ICMPv6 the kernel fills the checksum on raw sockets (RFC 3542 §3.1), so it is
// left zero.
std::size_t build_echo_request(std::span<std::byte> out, int family, std::uint16_t id, std::uint16_t seq);
// Returns the echo reply's sequence number if `packet` is a reply with our id,
// else -1. IPv4 raw sockets deliver the IP header first, IPv6 ones do not.
[[nodiscard]] int parse_echo_reply(std::span<const std::byte> packet, int family, std::uint16_t id);

}  // namespace tandem::agent
