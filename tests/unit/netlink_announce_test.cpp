// tests: announcing a moved VIP over a real veth — the frames on the wire and the peer's neighbour table.
#include "tandem/netlink/announce.hpp"

#include "netlink_test_util.hpp"
#include "tandem/netlink/frames.hpp"

#include <catch2/catch.hpp>

#include <array>

using namespace tandem;
using namespace tandem::netlink;
using namespace tandem::test;

namespace {
// Host a of in_host_a sending: eth0's MAC and a packet socket on it.
struct sender : in_host_a {
    mac_address mac = rs.link(eth0).value().mac;
    packet_socket socket = packet_socket::open(eth0).value();
};

// What `ip neigh` in `ns` says the MAC of `address` is, or "" without an entry.
std::string neighbour_mac(const netns& ns, const std::string& address) {
    auto out = ns.exec_ok("ip neigh show " + address + " dev eth0");
    auto at = out.find("lladdr ");
    return at == std::string::npos ? "" : out.substr(at + 7, 17);
}

std::vector<std::byte> built(result<std::size_t> (*build)(std::span<std::byte>, const mac_address&,
                                                           std::span<const std::byte, 4>),
                             const mac_address& mac, const vip_address& vip) {
    std::vector<std::byte> buf(arp_frame_size);
    buf.resize(build(buf, mac, std::span<const std::byte, 4>(vip.bytes.data(), 4)).value());
    return buf;
}
}  // namespace

TEST_CASE("a GARP burst arrives on the peer as a request then a reply, byte for byte", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    if (run("command -v tcpdump").status != 0) TANDEM_SKIP("tcpdump is not installed");
    sender h;
    auto vip = parse_vip("10.200.0.100/24").value();

    capture cap(h.b, "eth0", 2, "arp");
    REQUIRE(ok(send_burst(h.socket, h.mac, vip)));
    auto frames = cap.frames();
    REQUIRE(frames.size() == 2);
    CHECK(hex(frames[0]) == hex(built(build_garp_request, h.mac, vip)));
    CHECK(hex(frames[1]) == hex(built(build_garp_reply, h.mac, vip)));
}

TEST_CASE("a GARP burst moves the peer's existing neighbour entry to our MAC", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    sender h;
    // The peer still knows the VIP at the failed node's MAC. arp_accept stays 0:
    // ARP updates an entry that exists without it.
    h.b.exec_ok("ip neigh replace 10.200.0.100 lladdr 02:00:00:00:00:99 dev eth0 nud stale");
    REQUIRE(neighbour_mac(h.b, "10.200.0.100") == "02:00:00:00:00:99");

    REQUIRE(ok(send_burst(h.socket, h.mac, parse_vip("10.200.0.100/24").value())));
    CHECK(wait_until([&] { return neighbour_mac(h.b, "10.200.0.100") == to_string(h.mac); }));
}

TEST_CASE("with arp_accept=1 a GARP burst creates the peer's neighbour entry", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    sender h;
    h.b.exec_ok("sysctl -qw net.ipv4.conf.all.arp_accept=1");
    REQUIRE(neighbour_mac(h.b, "10.200.0.101").empty());

    REQUIRE(ok(send_burst(h.socket, h.mac, parse_vip("10.200.0.101/24").value())));
    CHECK(wait_until([&] { return neighbour_mac(h.b, "10.200.0.101") == to_string(h.mac); }));
}

TEST_CASE("an unsolicited NA arrives intact and overrides the peer's IPv6 neighbour entry", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    if (run("command -v tcpdump").status != 0) TANDEM_SKIP("tcpdump is not installed");
    sender h;
    h.b.exec_ok("ip addr add fd00:200::2/64 dev eth0 nodad");
    auto vip = parse_vip("fd00:200::100/64").value();
    h.b.exec_ok("ip -6 neigh replace fd00:200::100 lladdr 02:00:00:00:00:99 dev eth0 nud stale");

    capture cap(h.b, "eth0", 1, "icmp6 and ip6[40] == 136");  // Neighbor Advertisements only
    REQUIRE(ok(send_burst(h.socket, h.mac, vip)));
    auto frames = cap.frames();
    REQUIRE(frames.size() == 1);
    std::array<std::byte, na_frame_size> expected{};
    REQUIRE(ok(build_unsolicited_na(expected, h.mac, vip.bytes)));
    CHECK(hex(frames[0]) == hex(expected));
    // The kernel accepts it only with a correct checksum and hop limit 255, and
    // replaces the old MAC only because Override is set (RFC 4861 §7.2.5).
    CHECK(wait_until([&] { return neighbour_mac(h.b, "fd00:200::100") == to_string(h.mac); }));
}

TEST_CASE("packet_socket fails cleanly on a link that does not exist", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    netns a("a");
    scoped_netns_enter in(a);
    auto s = packet_socket::open(99999);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error() == boost::system::errc::no_such_device);
}

TEST_CASE("the default plan repeats past the kernel's 1 s neighbour locktime", "[unit][netlink]") {
    announce_plan plan;
    CHECK(plan.count == 3);
    CHECK(plan.spacing > std::chrono::seconds(1));  // net.ipv4.neigh.default.locktime = 100 (1 s)
}
