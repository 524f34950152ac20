// tests: gratuitous ARP and unsolicited NA frames, byte for byte against hand-written frames.
#include "tandem/netlink/frames.hpp"

#include "netlink_test_util.hpp"
#include "tandem/base/bytes.hpp"

#include <catch2/catch.hpp>

#include <array>

using namespace tandem;
using namespace tandem::netlink;
using tandem::test::hex;
using tandem::test::squeeze;

namespace {
const mac_address mac{std::byte{0x02}, std::byte{0x11}, std::byte{0x22},
                      std::byte{0x33}, std::byte{0x44}, std::byte{0x55}};
const std::array<std::byte, 4> vip4{std::byte{10}, std::byte{77}, std::byte{0}, std::byte{100}};  // 10.77.0.100
}  // namespace

TEST_CASE("gratuitous ARP request matches RFC 5227's announcement", "[unit][netlink]") {
    std::array<std::byte, 64> buf{};
    auto n = build_garp_request(buf, mac, vip4);
    REQUIRE(n.has_value());
    REQUIRE(*n == arp_frame_size);
    CHECK(hex(std::span(buf).first(*n)) == squeeze("ffffffffffff 021122334455 0806"  // broadcast, from us, ARP
                                                   " 0001 0800 06 04 0001"              // Ethernet, IPv4, request
                                                   " 021122334455 0a4d0064"             // sender: our MAC, VIP
                                                   " 000000000000 0a4d0064"));          // target: zero MAC, VIP
}

TEST_CASE("gratuitous ARP reply names the VIP and our MAC as sender and target", "[unit][netlink]") {
    std::array<std::byte, arp_frame_size> buf{};
    auto n = build_garp_reply(buf, mac, vip4);
    REQUIRE(n.has_value());
    CHECK(hex(std::span(buf).first(*n)) == squeeze("ffffffffffff 021122334455 0806"
                                                   " 0001 0800 06 04 0002"     // reply
                                                   " 021122334455 0a4d0064"
                                                   " 021122334455 0a4d0064"));  // target = sender
}

TEST_CASE("unsolicited NA has Override set and a valid ICMPv6 checksum", "[unit][netlink]") {
    auto vip6 = *parse_vip("fd00::100/64");
    std::span<const std::byte, 16> ipv6(vip6.bytes);
    std::array<std::byte, 128> buf{};
    auto n = build_unsolicited_na(buf, mac, ipv6);
    REQUIRE(n.has_value());
    REQUIRE(*n == na_frame_size);
    auto frame = std::span(buf).first(*n);
    CHECK(hex(frame) == squeeze("333300000001 021122334455 86dd"                 // to all-nodes, IPv6
                                " 60000000 0020 3a ff"                           // v6, 32 bytes, ICMPv6, hop 255
                                " fd000000000000000000000000000100"              // source: the VIP
                                " ff020000000000000000000000000001"              // destination: ff02::1
                                " 88 00 f204 20000000"                           // NA, code 0, checksum, O only
                                " fd000000000000000000000000000100"              // target: the VIP
                                " 02 01 021122334455"));                         // target link-layer address

    // Independently of the builder: the one's-complement sum over the
    // pseudo-header (RFC 8200 §8.1) and the ICMPv6 message, checksum included, is 0xffff.
    auto icmp = frame.subspan(14 + 40);
    std::vector<std::byte> covered(frame.begin() + 22, frame.begin() + 54);  // source and destination
    std::array<std::byte, 8> len_and_next{};
    store_be<std::uint32_t>(len_and_next, static_cast<std::uint32_t>(icmp.size()));
    len_and_next[7] = std::byte{58};
    covered.insert(covered.end(), len_and_next.begin(), len_and_next.end());
    covered.insert(covered.end(), icmp.begin(), icmp.end());
    std::uint32_t sum = 0;
    for (std::size_t i = 0; i < covered.size(); i += 2) sum += load_be<std::uint16_t>(std::span(covered).subspan(i));
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    CHECK(sum == 0xffff);
}

TEST_CASE("builders refuse a buffer that is too small", "[unit][netlink]") {
    std::array<std::byte, arp_frame_size - 1> small{};
    auto r = build_garp_request(small, mac, vip4);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == boost::system::errc::no_buffer_space);
    CHECK_FALSE(build_garp_reply(small, mac, vip4));
    std::array<std::byte, na_frame_size - 1> small6{};
    std::array<std::byte, 16> vip6{};
    CHECK_FALSE(build_unsolicited_na(small6, mac, vip6));
    CHECK(small6 == std::array<std::byte, na_frame_size - 1>{});  // nothing written
}
