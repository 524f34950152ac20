// netlink: the cluster virtual IP address as a value — parsing, printing and the subnet pairing check.
#pragma once

#include "tandem/netlink/error.hpp"

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <string_view>

namespace tandem::netlink {

using mac_address = std::array<std::byte, 6>;

// An IPv4 or IPv6 address with its prefix length, as the kernel stores it on a link.
struct vip_address {
    int family = AF_INET;               // AF_INET or AF_INET6
    std::array<std::byte, 16> bytes{};  // network order; IPv4 uses the first 4, the rest stay zero
    std::uint8_t prefix = 32;

    [[nodiscard]] std::size_t size() const noexcept { return family == AF_INET6 ? 16 : 4; }
    [[nodiscard]] std::span<const std::byte> address() const noexcept { return std::span(bytes).first(size()); }
    bool operator==(const vip_address&) const = default;
};

// "10.77.0.100/24" or "fd00::100/64". The prefix is required (1-32 or 1-128)
// because it decides the subnet the VIP shares with both nodes; unspecified,
// loopback and multicast addresses are refused. The error names the bad value.
[[nodiscard]] parse_result<vip_address> parse_vip(std::string_view text);

// A bare node or peer address ("10.77.0.1", "fd00::1"); the prefix is the full length.
[[nodiscard]] parse_result<vip_address> parse_ip(std::string_view text);

// "10.77.0.100/24"
[[nodiscard]] std::string to_string(const vip_address& a);
// "10.77.0.100": the address alone, for node and peer addresses.
[[nodiscard]] std::string address_string(const vip_address& a);
// Same family and address, whatever the prefix lengths.
[[nodiscard]] inline bool same_address(const vip_address& a, const vip_address& b) noexcept {
    return a.family == b.family && a.bytes == b.bytes;
}
// "02:00:5e:00:01:02"
[[nodiscard]] std::string to_string(const mac_address& m);
inline std::ostream& operator<<(std::ostream& os, const vip_address& a) { return os << to_string(a); }

// True when a and b have the same family and agree in their first `prefix`
// bits. The seeds' pairing rule: the VIP, this node and the peer must all be in
// one subnet, or the standby could not take the VIP over on the same segment.
[[nodiscard]] bool same_subnet(const vip_address& a, const vip_address& b, unsigned prefix) noexcept;

// An IPv4 address label (IFA_LABEL) for `ifname`: at most 15 characters
// (IFNAMSIZ-1, the kernel's limit) and either the interface name itself or
// "<ifname>:<suffix>", the alias form ("eth0:0") that ifconfig and iproute2 read
// back as belonging to the device. The error names both values.
[[nodiscard]] parse_result<void> check_label(std::string_view ifname, std::string_view label);

}  // namespace tandem::netlink
