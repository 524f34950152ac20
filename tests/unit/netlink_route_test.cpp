// tests: route_socket in a namespace — VIP add and remove, labels, NODAD, ownership and stale cleanup.
#include "tandem/netlink/route.hpp"

#include "netlink_test_util.hpp"
#include "support/netns.hpp"
#include "support/skip.hpp"

#include <catch2/catch.hpp>

#include <netlink/errno.h>

#include <algorithm>
#include <sstream>

using namespace tandem;
using namespace tandem::netlink;
using namespace tandem::test;

namespace {
// The line of `ip -o addr show dev <ifname>` that holds `address` ("10.200.0.100/24"), or "".
std::string addr_line(const netns& ns, const std::string& ifname, const std::string& address) {
    std::istringstream lines(ns.exec_ok("ip -o addr show dev " + ifname));
    for (std::string line; std::getline(lines, line);)
        if (line.find(" " + address + " ") != std::string::npos) return line;
    return {};
}

bool contains(const std::vector<owned_address>& v, const vip_address& a) {
    return std::ranges::any_of(v, [&](const owned_address& o) { return o.address == a; });
}
}  // namespace

TEST_CASE("an IPv4 VIP gets its label and marker; add and remove are idempotent", "[kernel][netlink]") {
    std::string why;
    if (!can_make_namespaces(&why)) TANDEM_SKIP(why);
    two_hosts hosts;
    scoped_netns_enter in(hosts.a);
    auto rs = route_socket::open();
    REQUIRE(ok(rs));
    auto idx = rs->link_index("eth0");
    REQUIRE(ok(idx));
    auto vip = parse_vip("10.200.0.100/24").value();

    REQUIRE(ok(rs->add_vip(*idx, vip, "eth0:0")));
    auto line = addr_line(hosts.a, "eth0", "10.200.0.100/24");
    INFO(line);
    CHECK_THAT(line, Catch::Contains("brd 10.200.0.255") && Catch::Contains(" eth0:0"));
    CHECK(ok(rs->add_vip(*idx, vip, "eth0:0")));  // already there: success
    auto has = rs->has_address(*idx, vip);
    REQUIRE(ok(has));
    CHECK(*has);

    auto owned = rs->owned_addresses(*idx);
    REQUIRE(ok(owned));
    REQUIRE(owned->size() == 1);
    CHECK(owned->front().address == vip);
    CHECK(owned->front().label == "eth0:0");
    CHECK(owned->front().proto == tandem_proto);
    CHECK(owned->front().ifindex == *idx);

    REQUIRE(ok(rs->remove_vip(*idx, vip)));
    CHECK(addr_line(hosts.a, "eth0", "10.200.0.100/24").empty());
    CHECK(ok(rs->remove_vip(*idx, vip)));  // already gone: success
    has = rs->has_address(*idx, vip);
    REQUIRE(ok(has));
    CHECK_FALSE(*has);
    CHECK_FALSE(addr_line(hosts.a, "eth0", "10.200.0.1/24").empty());  // the node's own address stays
}

TEST_CASE("remove_vip removes only the address with the VIP's prefix length", "[kernel][netlink]") {
    std::string why;
    if (!can_make_namespaces(&why)) TANDEM_SKIP(why);
    two_hosts hosts;
    hosts.a.exec_ok("ip addr add 10.200.0.100/32 dev eth0");
    scoped_netns_enter in(hosts.a);
    auto rs = route_socket::open();
    REQUIRE(ok(rs));
    int idx = rs->link_index("eth0").value();
    auto vip = parse_vip("10.200.0.100/24").value();
    REQUIRE(ok(rs->add_vip(idx, vip, "eth0:0")));
    REQUIRE(ok(rs->remove_vip(idx, vip)));
    CHECK(addr_line(hosts.a, "eth0", "10.200.0.100/24").empty());
    CHECK_FALSE(addr_line(hosts.a, "eth0", "10.200.0.100/32").empty());
}

TEST_CASE("a bad label is refused before it reaches the kernel", "[kernel][netlink]") {
    std::string why;
    if (!can_make_namespaces(&why)) TANDEM_SKIP(why);
    two_hosts hosts;
    scoped_netns_enter in(hosts.a);
    auto rs = route_socket::open();
    REQUIRE(ok(rs));
    int idx = rs->link_index("eth0").value();
    auto vip = parse_vip("10.200.0.100/24").value();
    for (const char* label : {"eth1:0", "eth0:0123456789ab", ""}) {
        INFO(label);
        auto r = rs->add_vip(idx, vip, label);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error() == boost::system::errc::invalid_argument);
    }
    CHECK(addr_line(hosts.a, "eth0", "10.200.0.100/24").empty());
}

TEST_CASE("an IPv6 VIP is usable at once: NODAD, never tentative", "[kernel][netlink]") {
    std::string why;
    if (!can_make_namespaces(&why)) TANDEM_SKIP(why);
    two_hosts hosts;
    scoped_netns_enter in(hosts.a);
    auto rs = route_socket::open();
    REQUIRE(ok(rs));
    int idx = rs->link_index("eth0").value();
    auto vip = parse_vip("fd00:200::100/64").value();

    REQUIRE(ok(rs->add_vip(idx, vip, "eth0:0")));  // the label is IPv4-only and ignored here
    auto line = addr_line(hosts.a, "eth0", "fd00:200::100/64");
    INFO(line);
    REQUIRE_FALSE(line.empty());
    CHECK_THAT(line, !Catch::Contains("tentative") && Catch::Contains("nodad"));
    CHECK(ok(rs->add_vip(idx, vip, "eth0:0")));
    auto owned = rs->owned_addresses(idx);
    REQUIRE(ok(owned));
    REQUIRE(owned->size() == 1);
    CHECK(owned->front().address == vip);
    CHECK(owned->front().label.empty());

    REQUIRE(ok(rs->remove_vip(idx, vip)));
    CHECK(ok(rs->remove_vip(idx, vip)));
    CHECK(addr_line(hosts.a, "eth0", "fd00:200::100/64").empty());
}

TEST_CASE("only Tandem-marked addresses are owned and removed as stale", "[kernel][netlink]") {
    std::string why;
    if (!can_make_namespaces(&why)) TANDEM_SKIP(why);
    two_hosts hosts;
    // An operator's addresses, including one that looks like a VIP alias.
    hosts.a.exec_ok("ip addr add 10.200.0.50/24 dev eth0 label eth0:9");
    hosts.a.exec_ok("ip addr add fd00:200::50/64 dev eth0 nodad");
    scoped_netns_enter in(hosts.a);
    auto rs = route_socket::open();
    REQUIRE(ok(rs));
    int idx = rs->link_index("eth0").value();
    auto vip4 = parse_vip("10.200.0.100/24").value();
    auto vip6 = parse_vip("fd00:200::100/64").value();
    REQUIRE(ok(rs->add_vip(idx, vip4, "eth0:0")));
    REQUIRE(ok(rs->add_vip(idx, vip6, "")));

    auto owned = rs->owned_addresses(idx);
    REQUIRE(ok(owned));
    CHECK(owned->size() == 2);
    CHECK(contains(*owned, vip4));
    CHECK(contains(*owned, vip6));
    CHECK_FALSE(contains(*owned, parse_vip("10.200.0.50/24").value()));

    auto removed = rs->remove_stale(idx);
    REQUIRE(ok(removed));
    CHECK(*removed == 2);
    CHECK(addr_line(hosts.a, "eth0", "10.200.0.100/24").empty());
    CHECK(addr_line(hosts.a, "eth0", "fd00:200::100/64").empty());
    CHECK_FALSE(addr_line(hosts.a, "eth0", "10.200.0.50/24").empty());
    CHECK_FALSE(addr_line(hosts.a, "eth0", "fd00:200::50/64").empty());
    CHECK_FALSE(addr_line(hosts.a, "eth0", "10.200.0.1/24").empty());
    for (const char* kept : {"10.200.0.50/24", "fd00:200::50/64", "10.200.0.1/24"}) {
        auto has = rs->has_address(idx, parse_vip(kept).value());
        REQUIRE(ok(has));
        CHECK(*has);
    }
    removed = rs->remove_stale(idx);
    REQUIRE(ok(removed));
    CHECK(*removed == 0);
}

TEST_CASE("link reports name, MAC, admin state and carrier", "[kernel][netlink]") {
    std::string why;
    if (!can_make_namespaces(&why)) TANDEM_SKIP(why);
    two_hosts hosts;
    hosts.a.exec_ok("ip link set eth0 address 02:00:00:aa:bb:cc");
    scoped_netns_enter in(hosts.a);
    auto rs = route_socket::open();
    REQUIRE(ok(rs));
    int idx = rs->link_index("eth0").value();
    auto l = rs->link(idx);
    REQUIRE(ok(l));
    CHECK(l->ifindex == idx);
    CHECK(l->name == "eth0");
    CHECK(to_string(l->mac) == "02:00:00:aa:bb:cc");
    CHECK(l->up);
    CHECK(wait_until([&] { return rs->link(idx).value().carrier; }));

    // The veth loses carrier when its peer goes down; it stays administratively up.
    hosts.b.exec_ok("ip link set eth0 down");
    CHECK(wait_until([&] { return !rs->link(idx).value().carrier; }));
    CHECK(rs->link(idx).value().up);

    auto missing = rs->link_index("nosuch0");
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error() == make_error(NLE_NODEV));
    CHECK_FALSE(rs->link(99999).has_value());
}
