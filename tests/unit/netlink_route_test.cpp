// tests: route_socket in a namespace — VIP add and remove, labels, NODAD, ownership and stale cleanup.
#include "tandem/netlink/route.hpp"

#include "netlink_test_util.hpp"

#include <catch2/catch.hpp>

#include <netlink/errno.h>

#include <algorithm>
#include <sstream>

using namespace tandem;
using namespace tandem::netlink;
using namespace tandem::test;

namespace {
// The line of `ip -o addr show dev eth0` that holds `address` ("10.200.0.100/24"), or "".
std::string addr_line(const netns& ns, const std::string& address) {
    std::istringstream lines(ns.exec_ok("ip -o addr show dev eth0"));
    for (std::string line; std::getline(lines, line);)
        if (line.find(" " + address + " ") != std::string::npos) return line;
    return {};
}

bool contains(const std::vector<owned_address>& v, const vip_address& a) {
    return std::ranges::any_of(v, [&](const owned_address& o) { return o.address == a; });
}
}  // namespace

TEST_CASE("an IPv4 VIP gets its label and marker; add and remove are idempotent", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    in_host_a h;
    auto vip = parse_vip("10.200.0.100/24").value();

    REQUIRE(ok(h.rs.add_vip(h.eth0, vip, "eth0:0")));
    auto line = addr_line(h.a, "10.200.0.100/24");
    INFO(line);
    CHECK_THAT(line, Catch::Contains("brd 10.200.0.255") && Catch::Contains(" eth0:0"));
    CHECK(ok(h.rs.add_vip(h.eth0, vip, "eth0:0")));  // already there: success
    CHECK(h.rs.has_address(h.eth0, vip).value());

    auto owned = h.rs.owned_addresses(h.eth0).value();
    REQUIRE(owned.size() == 1);
    CHECK(owned.front().address == vip);
    CHECK(owned.front().label == "eth0:0");
    CHECK(owned.front().proto == tandem_proto);
    CHECK(owned.front().ifindex == h.eth0);

    REQUIRE(ok(h.rs.remove_vip(h.eth0, vip)));
    CHECK(addr_line(h.a, "10.200.0.100/24").empty());
    CHECK(ok(h.rs.remove_vip(h.eth0, vip)));  // already gone: success
    CHECK_FALSE(h.rs.has_address(h.eth0, vip).value());
    CHECK_FALSE(addr_line(h.a, "10.200.0.1/24").empty());  // the node's own address stays
}

TEST_CASE("remove_vip removes only the address with the VIP's prefix length", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    in_host_a h;
    h.a.exec_ok("ip addr add 10.200.0.100/32 dev eth0");
    auto vip = parse_vip("10.200.0.100/24").value();
    REQUIRE(ok(h.rs.add_vip(h.eth0, vip, "eth0:0")));
    REQUIRE(ok(h.rs.remove_vip(h.eth0, vip)));
    CHECK(addr_line(h.a, "10.200.0.100/24").empty());
    CHECK_FALSE(addr_line(h.a, "10.200.0.100/32").empty());
}

TEST_CASE("a bad label is refused before it reaches the kernel", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    in_host_a h;
    auto vip = parse_vip("10.200.0.100/24").value();
    for (const char* label : {"eth1:0", "eth0:0123456789ab", ""}) {
        INFO(label);
        auto r = h.rs.add_vip(h.eth0, vip, label);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error() == boost::system::errc::invalid_argument);
    }
    CHECK(addr_line(h.a, "10.200.0.100/24").empty());
}

TEST_CASE("an IPv6 VIP is usable at once: NODAD, never tentative", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    in_host_a h;
    auto vip = parse_vip("fd00:200::100/64").value();

    REQUIRE(ok(h.rs.add_vip(h.eth0, vip, "eth0:0")));  // the label is IPv4-only and ignored here
    auto line = addr_line(h.a, "fd00:200::100/64");
    INFO(line);
    REQUIRE_FALSE(line.empty());
    CHECK_THAT(line, !Catch::Contains("tentative") && Catch::Contains("nodad"));
    CHECK(ok(h.rs.add_vip(h.eth0, vip, "eth0:0")));
    auto owned = h.rs.owned_addresses(h.eth0).value();
    REQUIRE(owned.size() == 1);
    CHECK(owned.front().address == vip);
    CHECK(owned.front().label.empty());

    REQUIRE(ok(h.rs.remove_vip(h.eth0, vip)));
    CHECK(ok(h.rs.remove_vip(h.eth0, vip)));
    CHECK(addr_line(h.a, "fd00:200::100/64").empty());
}

TEST_CASE("only Tandem-marked addresses are owned and removed as stale", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    in_host_a h;
    // An operator's addresses, including one that looks like a VIP alias.
    h.a.exec_ok("ip addr add 10.200.0.50/24 dev eth0 label eth0:9");
    h.a.exec_ok("ip addr add fd00:200::50/64 dev eth0 nodad");
    auto vip4 = parse_vip("10.200.0.100/24").value();
    auto vip6 = parse_vip("fd00:200::100/64").value();
    REQUIRE(ok(h.rs.add_vip(h.eth0, vip4, "eth0:0")));
    REQUIRE(ok(h.rs.add_vip(h.eth0, vip6, "")));

    auto owned = h.rs.owned_addresses(h.eth0).value();
    CHECK(owned.size() == 2);
    CHECK(contains(owned, vip4));
    CHECK(contains(owned, vip6));
    CHECK_FALSE(contains(owned, parse_vip("10.200.0.50/24").value()));

    CHECK(h.rs.remove_stale(h.eth0).value() == 2);
    CHECK(addr_line(h.a, "10.200.0.100/24").empty());
    CHECK(addr_line(h.a, "fd00:200::100/64").empty());
    for (const char* kept : {"10.200.0.50/24", "fd00:200::50/64", "10.200.0.1/24"}) {
        INFO(kept);
        CHECK_FALSE(addr_line(h.a, kept).empty());
        CHECK(h.rs.has_address(h.eth0, parse_vip(kept).value()).value());
    }
    CHECK(h.rs.remove_stale(h.eth0).value() == 0);
}

TEST_CASE("link reports name, MAC, admin state and carrier", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    in_host_a h;
    h.a.exec_ok("ip link set eth0 address 02:00:00:aa:bb:cc");
    auto l = h.rs.link(h.eth0).value();
    CHECK(l.ifindex == h.eth0);
    CHECK(l.name == "eth0");
    CHECK(to_string(l.mac) == "02:00:00:aa:bb:cc");
    CHECK(l.up);
    CHECK(wait_until([&] { return h.rs.link(h.eth0).value().carrier; }));

    // The veth loses carrier when its peer goes down; it stays administratively up.
    h.b.exec_ok("ip link set eth0 down");
    CHECK(wait_until([&] { return !h.rs.link(h.eth0).value().carrier; }));
    CHECK(h.rs.link(h.eth0).value().up);

    auto missing = h.rs.link_index("nosuch0");
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error() == make_error(NLE_NODEV));
    CHECK_FALSE(h.rs.link(99999).has_value());
}
