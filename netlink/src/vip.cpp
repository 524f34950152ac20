// netlink: parsing and printing VIP and MAC addresses, and the subnet check.
#include "tandem/netlink/vip.hpp"

#include <arpa/inet.h>
#include <net/if.h>

#include <charconv>
#include <fmt/format.h>

namespace tandem::netlink {

namespace {

unsigned max_prefix(int family) { return family == AF_INET6 ? 128 : 32; }

// Refuses addresses no host can own: a VIP there would never be reachable.
bool usable_unicast(const vip_address& a) {
    auto b = [&](std::size_t i) { return std::to_integer<unsigned>(a.bytes[i]); };
    if (a.family == AF_INET) {
        bool unspecified = b(0) == 0 && b(1) == 0 && b(2) == 0 && b(3) == 0;
        return !unspecified && b(0) != 127 && b(0) < 224;  // 127/8 loopback, 224/4 multicast and above
    }
    bool unspecified = true;
    for (std::size_t i = 0; i < 15; ++i) unspecified = unspecified && b(i) == 0;
    bool loopback = unspecified && b(15) == 1;
    unspecified = unspecified && b(15) == 0;
    return !unspecified && !loopback && b(0) != 0xff;  // ff00::/8 multicast
}

parse_result<vip_address> parse_address(std::string_view addr, std::string_view whole) {
    vip_address a;
    std::string s(addr);
    if (::inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
        a.family = AF_INET;
    } else if (::inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
        a.family = AF_INET6;
    } else {
        return parse_error{fmt::format("'{}' in '{}' is not an IPv4 address (like 10.77.0.100) or an IPv6 address "
                                       "(like fd00::100)",
                                       addr, whole)};
    }
    a.prefix = static_cast<std::uint8_t>(max_prefix(a.family));
    if (!usable_unicast(a))
        return parse_error{fmt::format("'{}' in '{}' is an unspecified, loopback or multicast address; a unicast "
                                       "address is needed",
                                       addr, whole)};
    return a;
}

}  // namespace

parse_result<vip_address> parse_vip(std::string_view text) {
    auto slash = text.find('/');
    if (slash == std::string_view::npos)
        return parse_error{fmt::format("VIP '{}' has no prefix length: write address/prefix, like 10.77.0.100/24 "
                                       "(IPv4 prefix 1-32) or fd00::100/64 (IPv6 prefix 1-128)",
                                       text)};
    auto a = parse_address(text.substr(0, slash), text);
    if (!a) return a;
    auto digits = text.substr(slash + 1);
    unsigned prefix = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    unsigned max = max_prefix(a->family);
    if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size() || prefix < 1 || prefix > max)
        return parse_error{fmt::format("prefix length '{}' in VIP '{}' is not a number from 1 to {}", digits, text,
                                       max)};
    a->prefix = static_cast<std::uint8_t>(prefix);
    return a;
}

parse_result<vip_address> parse_ip(std::string_view text) { return parse_address(text, text); }

std::string address_string(const vip_address& a) {
    std::array<char, INET6_ADDRSTRLEN> buf{};
    ::inet_ntop(a.family, a.bytes.data(), buf.data(), buf.size());
    return buf.data();
}

std::string to_string(const vip_address& a) { return fmt::format("{}/{}", address_string(a), a.prefix); }

std::string to_string(const mac_address& m) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", std::to_integer<unsigned>(m[0]),
                       std::to_integer<unsigned>(m[1]), std::to_integer<unsigned>(m[2]),
                       std::to_integer<unsigned>(m[3]), std::to_integer<unsigned>(m[4]),
                       std::to_integer<unsigned>(m[5]));
}

bool same_subnet(const vip_address& a, const vip_address& b, unsigned prefix) noexcept {
    if (a.family != b.family || prefix > max_prefix(a.family)) return false;
    std::size_t whole = prefix / 8;
    for (std::size_t i = 0; i < whole; ++i)
        if (a.bytes[i] != b.bytes[i]) return false;
    unsigned rest = prefix % 8;
    if (rest == 0) return true;
    auto mask = static_cast<std::byte>(0xff << (8 - rest));
    return (a.bytes[whole] & mask) == (b.bytes[whole] & mask);
}

parse_result<void> check_label(std::string_view ifname, std::string_view label) {
    if (label.size() > IFNAMSIZ - 1)
        return parse_error{fmt::format("address label '{}' is {} characters long; the kernel allows at most {}",
                                       label, label.size(), IFNAMSIZ - 1)};
    bool is_alias = label.size() > ifname.size() + 1 && label.starts_with(ifname) && label[ifname.size()] == ':';
    if (!ifname.empty() && (label == ifname || is_alias)) return {};
    return parse_error{fmt::format("address label '{}' does not belong to interface '{}': write '{}' or "
                                   "'{}:<suffix>', like {}:0",
                                   label, ifname, ifname, ifname, ifname)};
}

}  // namespace tandem::netlink
