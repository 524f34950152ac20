// tests: the VIP on eth0:0 through netlink, announcements a client really receives, and link events.
#include "support/capture.hpp"
#include "support/cluster.hpp"
#include "support/skip.hpp"
#include "support/util.hpp"

#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <set>

using namespace tandem::test;
using namespace std::chrono_literals;

namespace {

// The link-layer address the client's neighbour table holds for the VIP, or "".
std::string client_neighbour(const test_cluster& c) {
    auto out = c.ns("client").exec("ip neigh show " + c.addr("vip") + " dev eth0").out;
    auto at = out.find("lladdr ");
    return at == std::string::npos ? "" : out.substr(at + 7, 17);
}

std::string mac_of(std::span<const std::byte> b) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", std::to_integer<int>(b[0]),
                       std::to_integer<int>(b[1]), std::to_integer<int>(b[2]), std::to_integer<int>(b[3]),
                       std::to_integer<int>(b[4]), std::to_integer<int>(b[5]));
}
}  // namespace

TEST_CASE("cluster: the active holds the VIP on alias eth0:0, the standby does not", "[scenario][vip]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    CHECK(c.has_vip("a"));
    CHECK_FALSE(c.has_vip("b"));
    CHECK_THAT(c.ns("a").exec_ok("ip -o addr show dev eth0"), Catch::Contains("10.77.0.100/24 brd 10.77.0.255 scope global secondary eth0:0"));
    CHECK(c.status("a")["cluster"]["vip_present"] == true);
    CHECK(c.ns("client").exec("ping -c1 -W2 10.77.0.100").status == 0);
}

TEST_CASE("cluster: after a takeover the client's neighbour entry follows without the client sending anything",
          "[scenario][vip]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    REQUIRE(c.ns("client").exec("ping -c1 -W2 " + c.addr("vip")).status == 0);
    REQUIRE(client_neighbour(c) == c.mac("a"));
    // Both gratuitous forms from the new active, seen on the client's wire.
    capture cap(c.ns("client"), "eth0", 2, "arp and ether src " + c.mac("b"));
    REQUIRE(c.ctl("b", "takeover").status == 0);
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    auto frames = cap.frames();
    REQUIRE(frames.size() == 2);
    std::set<int> opcodes;
    for (auto& f : frames) {
        REQUIRE(f.size() >= 42);
        opcodes.insert(std::to_integer<int>(f[21]));                             // ARP opcode (low byte)
        CHECK(mac_of(std::span(f).subspan(22, 6)) == c.mac("b"));               // sender MAC
        CHECK(fmt::format("{}.{}.{}.{}", std::to_integer<int>(f[28]), std::to_integer<int>(f[29]),
                          std::to_integer<int>(f[30]), std::to_integer<int>(f[31])) == "10.77.0.100");  // sender IP
        CHECK(std::equal(f.begin() + 28, f.begin() + 32, f.begin() + 38));      // target IP = sender IP
    }
    CHECK(opcodes == std::set<int>{1, 2});  // a request and a reply
    CHECK(wait_until([&] { return client_neighbour(c) == c.mac("b"); }));
    CHECK_FALSE(c.has_vip("a"));
    CHECK(c.has_vip("b"));
}

TEST_CASE("cluster: an IPv6 VIP moves with an unsolicited NA carrying Override", "[scenario][vip]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster::options o;
    o.ipv6 = true;
    test_cluster c(o);
    c.up();
    CHECK(c.has_vip("a"));
    // Added with NODAD: usable at once, never "tentative".
    CHECK_THAT(c.ns("a").exec_ok("ip -o addr show dev eth0 to fd00:77::100/128"), !Catch::Contains("tentative"));
    REQUIRE(c.ns("client").exec("ping -6 -c1 -W2 " + c.addr("vip")).status == 0);
    REQUIRE(client_neighbour(c) == c.mac("a"));
    // The active's connectivity tests leave from its own address, not the VIP:
    // with the VIP as source they failed and handed over for no reason.
    CHECK_THAT(c.ctl("b", "events").out, !Catch::Contains("connectivity.handover"));
    capture cap(c.ns("client"), "eth0", 1, "icmp6 and ip6[40] == 136 and ether src " + c.mac("b"));
    REQUIRE(c.ctl("b", "takeover").status == 0);
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    auto frames = cap.frames();
    REQUIRE(frames.size() == 1);
    const auto& f = frames[0];
    REQUIRE(f.size() >= 86);
    int flags = std::to_integer<int>(f[54 + 4]);
    CHECK((flags & 0x20) != 0);  // Override
    CHECK((flags & 0x40) == 0);  // not Solicited
    CHECK(wait_until([&] { return client_neighbour(c) == c.mac("b"); }));
    CHECK(c.has_vip("b"));
    CHECK_FALSE(c.has_vip("a"));
}

TEST_CASE("cluster: management link down on the active moves the VIP; the node returns as standby",
          "[scenario][vip]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    c.ns("a").exec_ok("ip link set eth0 down");
    REQUIRE(c.wait("a", "state=FAILED", soon));
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    CHECK(c.has_vip("b"));
    CHECK_FALSE(c.has_vip("a"));
    CHECK_THAT(c.status("a")["local"]["health_detail"].get<std::string>(),
               Catch::Contains("management interface eth0 is down"));
    c.ns("a").exec_ok("ip link set eth0 up");
    REQUIRE(c.wait("a", "state=STANDBY", soon));
    CHECK(c.state("b") == "ACTIVE");
    CHECK(c.ns("client").exec("ping -c1 -W2 10.77.0.100").status == 0);
}

TEST_CASE("cluster: management link down on the standby moves nothing", "[scenario][vip]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    c.ns("b").exec_ok("ip link set eth0 down");
    REQUIRE(c.wait("b", "state=FAILED", soon));
    CHECK_FALSE(c.wait("a", "state=STANDBY", never));
    CHECK(c.state("a") == "ACTIVE");
    CHECK(c.has_vip("a"));
    CHECK_FALSE(c.has_vip("b"));
    c.ns("b").exec_ok("ip link set eth0 up");
    REQUIRE(c.wait("b", "state=STANDBY", soon));
}

TEST_CASE("cluster: a crashed active's stale VIP is removed when it restarts", "[scenario][vip]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    // Silence only the heartbeats: a keeps the VIP while b takes over, then a
    // dies without a goodbye and leaves its VIP behind.
    c.ns("a").exec_ok("nft -f - <<'EOF'\ntable inet p {\n chain in {\n type filter hook input priority 0;\n udp dport 694 drop\n }\n"
                      " chain out {\n type filter hook output priority 0;\n udp dport 694 drop\n }\n}\nEOF");
    REQUIRE(c.wait("b", "state=ACTIVE", soon));
    c.kill9("a");
    REQUIRE(c.has_vip("a"));
    // An address that an operator put there by hand is not Tandem's and stays.
    c.ns("a").exec_ok("ip addr add 10.77.0.200/24 dev eth0");
    c.ns("a").exec_ok("nft delete table inet p");
    c.start("a");
    REQUIRE(c.wait("a", "state=STANDBY", soon));
    CHECK_FALSE(c.has_vip("a"));
    CHECK_THAT(c.ns("a").exec_ok("ip -o addr show dev eth0"), Catch::Contains("10.77.0.200/24"));
    CHECK_THAT(c.ctl("a", "events").out, Catch::Contains("vip.stale_removed"));
    CHECK(c.has_vip("b"));
}

TEST_CASE("cluster: a VIP deleted behind Tandem's back is restored", "[scenario][vip]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.up();
    auto seq = c.last_seq("a");
    c.ns("a").exec_ok("ip addr del 10.77.0.100/24 dev eth0");
    REQUIRE(c.wait("a", "event=vip.up", soon, seq));
    CHECK(c.has_vip("a"));
    CHECK_THAT(c.ctl("a", "events").out, Catch::Contains("vip.removed"));
    CHECK(c.state("a") == "ACTIVE");
}
