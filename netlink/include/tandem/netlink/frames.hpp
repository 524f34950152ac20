// netlink: pure builders of the frames that announce a moved VIP — gratuitous ARP and unsolicited NA.
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/netlink/vip.hpp"

#include <cstddef>
#include <span>

namespace tandem::netlink {

// 14 bytes Ethernet + 28 bytes ARP. Shorter than Ethernet's 60-byte minimum:
// the NIC pads on transmit, as it does for every ARP the kernel itself sends.
inline constexpr std::size_t arp_frame_size = 42;
// 14 Ethernet + 40 IPv6 + 24 Neighbor Advertisement + 8 target link-layer address option.
inline constexpr std::size_t na_frame_size = 86;

// Each builder writes one complete Ethernet frame at the start of `out` and
// returns its length, or errc::no_buffer_space when `out` is too small.

// Gratuitous ARP in request form (RFC 5227 §2.3 "ARP Announcement"): broadcast,
// opcode 1, sender = (mac, ipv4), target IP = ipv4, target MAC zero.
[[nodiscard]] result<std::size_t> build_garp_request(std::span<std::byte> out, const mac_address& mac,
                                                     std::span<const std::byte, 4> ipv4);

// Gratuitous ARP in reply form (RFC 2002 §4.6): broadcast, opcode 2, sender =
// target = (mac, ipv4). Some hosts and switches update only on requests, others
// only on replies, so Tandem sends both.
[[nodiscard]] result<std::size_t> build_garp_reply(std::span<std::byte> out, const mac_address& mac,
                                                   std::span<const std::byte, 4> ipv4);

// Unsolicited Neighbor Advertisement (RFC 4861 §4.4, §7.2.6) from the VIP itself
// to all-nodes ff02::1 (Ethernet 33:33:00:00:00:01), hop limit 255 (receivers
// drop NDP with any other, §7.1.2), Override set so that caches replace the old
// MAC, Solicited and Router clear, with the Target Link-Layer Address option.
[[nodiscard]] result<std::size_t> build_unsolicited_na(std::span<std::byte> out, const mac_address& mac,
                                                       std::span<const std::byte, 16> ipv6);

}  // namespace tandem::netlink
