// netlink: gratuitous ARP and unsolicited NA frames, byte by byte in network order.
#include "tandem/netlink/frames.hpp"

#include "tandem/base/bytes.hpp"

#include <algorithm>
#include <array>

namespace tandem::netlink {

namespace {

constexpr std::uint16_t ethertype_arp = 0x0806;
constexpr std::uint16_t ethertype_ipv6 = 0x86dd;
constexpr std::uint8_t ipproto_icmpv6 = 58;
constexpr std::uint8_t icmpv6_neighbor_advertisement = 136;
constexpr std::uint8_t nd_opt_target_lladdr = 2;
constexpr std::uint8_t na_flag_override = 0x20;  // R = 0x80, S = 0x40, O = 0x20 (RFC 4861 §4.4)
constexpr std::size_t ethernet_header_size = 14;
constexpr std::size_t ipv6_header_size = 40;

constexpr mac_address broadcast_mac{std::byte{0xff}, std::byte{0xff}, std::byte{0xff},
                                    std::byte{0xff}, std::byte{0xff}, std::byte{0xff}};
// ff02::1 and its Ethernet mapping 33:33 + the low 32 bits (RFC 2464 §7).
constexpr std::array<std::byte, 16> all_nodes{std::byte{0xff}, std::byte{0x02}, {}, {}, {}, {}, {}, {},
                                              {},              {},              {}, {}, {}, {}, {}, std::byte{0x01}};
constexpr mac_address all_nodes_mac{std::byte{0x33}, std::byte{0x33}, {}, {}, {}, std::byte{0x01}};

// Appends fields in network order; the builders check the size first.
class writer {
public:
    explicit writer(std::span<std::byte> out) : out_(out) {}
    writer& bytes(std::span<const std::byte> b) {
        std::ranges::copy(b, out_.begin() + static_cast<std::ptrdiff_t>(at_));
        at_ += b.size();
        return *this;
    }
    writer& u8(std::uint8_t v) { return bytes(std::array{std::byte{v}}); }
    writer& u16(std::uint16_t v) {
        store_be<std::uint16_t>(out_.subspan(at_), v);
        at_ += 2;
        return *this;
    }
    writer& u32(std::uint32_t v) {
        store_be<std::uint32_t>(out_.subspan(at_), v);
        at_ += 4;
        return *this;
    }
    [[nodiscard]] std::size_t size() const { return at_; }

private:
    std::span<std::byte> out_;
    std::size_t at_ = 0;
};

error_code too_small() { return error_code(boost::system::errc::no_buffer_space, boost::system::generic_category()); }

// RFC 826 over Ethernet: htype 1, ptype IPv4, hlen 6, plen 4.
result<std::size_t> build_garp(std::span<std::byte> out, std::uint16_t op, const mac_address& mac,
                               std::span<const std::byte, 4> ipv4, const mac_address& target_mac) {
    if (out.size() < arp_frame_size) return too_small();
    writer w(out);
    w.bytes(broadcast_mac).bytes(mac).u16(ethertype_arp);
    w.u16(1).u16(0x0800).u8(6).u8(4).u16(op);
    w.bytes(mac).bytes(ipv4).bytes(target_mac).bytes(ipv4);
    return w.size();
}

// RFC 1071 one's-complement sum of 16-bit big-endian words, not yet inverted.
std::uint32_t ones_sum(std::span<const std::byte> b, std::uint32_t sum = 0) {
    for (std::size_t i = 0; i + 1 < b.size(); i += 2) sum += load_be<std::uint16_t>(b.subspan(i));
    if (b.size() % 2) sum += std::to_integer<std::uint32_t>(b.back()) << 8;
    return sum;
}

std::uint16_t fold(std::uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum);
}

}  // namespace

result<std::size_t> build_garp_request(std::span<std::byte> out, const mac_address& mac,
                                       std::span<const std::byte, 4> ipv4) {
    return build_garp(out, 1, mac, ipv4, mac_address{});
}

result<std::size_t> build_garp_reply(std::span<std::byte> out, const mac_address& mac,
                                     std::span<const std::byte, 4> ipv4) {
    return build_garp(out, 2, mac, ipv4, mac);
}

result<std::size_t> build_unsolicited_na(std::span<std::byte> out, const mac_address& mac,
                                         std::span<const std::byte, 16> ipv6) {
    if (out.size() < na_frame_size) return too_small();
    constexpr std::uint16_t icmp_size = na_frame_size - ethernet_header_size - ipv6_header_size;
    writer w(out);
    w.bytes(all_nodes_mac).bytes(mac).u16(ethertype_ipv6);
    w.u32(6u << 28).u16(icmp_size).u8(ipproto_icmpv6).u8(255).bytes(ipv6).bytes(all_nodes);
    std::size_t icmp_at = w.size();
    w.u8(icmpv6_neighbor_advertisement).u8(0).u16(0 /* checksum, below */).u8(na_flag_override).u8(0).u16(0);
    w.bytes(ipv6).u8(nd_opt_target_lladdr).u8(1 /* length in units of 8 bytes */).bytes(mac);

    // RFC 4443 §2.3: the checksum covers the RFC 8200 §8.1 pseudo-header
    // (source, destination, upper-layer length, next header) and the message.
    std::uint32_t sum = ones_sum(ipv6);
    sum = ones_sum(all_nodes, sum);
    sum += icmp_size + ipproto_icmpv6;
    sum = ones_sum(out.subspan(icmp_at, icmp_size), sum);
    store_be<std::uint16_t>(out.subspan(icmp_at + 2), fold(sum));
    return w.size();
}

}  // namespace tandem::netlink
