// tests: VIP parsing and printing, the subnet pairing rule and address labels.
#include "tandem/netlink/vip.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace tandem::netlink;

namespace {
// The error text of a parse that must fail.
template <class T>
std::string error_of(const parse_result<T>& r) {
    REQUIRE_FALSE(r.has_value());
    return r.error().message;
}
}  // namespace

TEST_CASE("parse_vip reads IPv4 and IPv6 with a prefix", "[unit][netlink]") {
    auto v4 = parse_vip("10.77.0.100/24");
    REQUIRE(v4);
    CHECK(v4->family == AF_INET);
    CHECK(v4->prefix == 24);
    CHECK(v4->size() == 4);
    CHECK(v4->bytes[0] == std::byte{10});
    CHECK(v4->bytes[3] == std::byte{100});
    CHECK(to_string(*v4) == "10.77.0.100/24");

    auto v6 = parse_vip("fd00::100/64");
    REQUIRE(v6);
    CHECK(v6->family == AF_INET6);
    CHECK(v6->prefix == 64);
    CHECK(v6->size() == 16);
    CHECK(to_string(*v6) == "fd00::100/64");

    CHECK(parse_vip("10.77.0.100/32"));
    CHECK(parse_vip("fd00::100/128"));
    CHECK(*parse_vip("10.77.0.100/24") == *v4);
    CHECK_FALSE(*parse_vip("10.77.0.100/25") == *v4);
}

TEST_CASE("parse_vip errors name the bad value and what is allowed", "[unit][netlink]") {
    auto missing = error_of(parse_vip("10.77.0.100"));
    CHECK_THAT(missing, Catch::Contains("'10.77.0.100'") && Catch::Contains("no prefix length") &&
                            Catch::Contains("1-32") && Catch::Contains("1-128"));

    CHECK_THAT(error_of(parse_vip("10.77.0.100/33")),
               Catch::Contains("'33'") && Catch::Contains("'10.77.0.100/33'") && Catch::Contains("1 to 32"));
    CHECK_THAT(error_of(parse_vip("fd00::100/129")), Catch::Contains("'129'") && Catch::Contains("1 to 128"));
    CHECK_THAT(error_of(parse_vip("10.77.0.100/0")), Catch::Contains("'0'"));
    CHECK_THAT(error_of(parse_vip("10.77.0.100/")), Catch::Contains("''"));
    CHECK_THAT(error_of(parse_vip("10.77.0.100/24x")), Catch::Contains("'24x'"));
    CHECK_THAT(error_of(parse_vip("10.77.0.100/-1")), Catch::Contains("'-1'"));

    CHECK_THAT(error_of(parse_vip("10.77.0.300/24")),
               Catch::Contains("'10.77.0.300'") && Catch::Contains("not an IPv4 address"));
    CHECK_THAT(error_of(parse_vip("vip.example/24")), Catch::Contains("'vip.example'"));
    CHECK_THAT(error_of(parse_vip("/24")), Catch::Contains("''"));
    CHECK_THAT(error_of(parse_vip(" 10.77.0.100/24")), Catch::Contains("' 10.77.0.100'"));

    CHECK_THAT(error_of(parse_vip("0.0.0.0/24")), Catch::Contains("'0.0.0.0'") && Catch::Contains("unicast"));
    CHECK_THAT(error_of(parse_vip("127.0.0.5/8")), Catch::Contains("'127.0.0.5'"));
    CHECK_THAT(error_of(parse_vip("224.0.0.18/24")), Catch::Contains("'224.0.0.18'"));
    CHECK_THAT(error_of(parse_vip("::/64")), Catch::Contains("'::'"));
    CHECK_THAT(error_of(parse_vip("::1/128")), Catch::Contains("'::1'"));
    CHECK_THAT(error_of(parse_vip("ff02::1/64")), Catch::Contains("'ff02::1'"));
}

TEST_CASE("parse_ip reads a bare node address with a full-length prefix", "[unit][netlink]") {
    auto a = parse_ip("10.77.0.1");
    REQUIRE(a);
    CHECK(a->prefix == 32);
    auto b = parse_ip("fd00::1");
    REQUIRE(b);
    CHECK(b->prefix == 128);
    CHECK_THAT(error_of(parse_ip("10.77.0.1/24")), Catch::Contains("'10.77.0.1/24'"));
}

TEST_CASE("same_subnet pairs the VIP with both nodes", "[unit][netlink]") {
    auto vip = *parse_vip("10.77.0.100/24");
    auto node = *parse_ip("10.77.0.1");
    auto peer = *parse_ip("10.77.0.2");
    auto elsewhere = *parse_ip("10.77.1.2");
    CHECK(same_subnet(vip, node, vip.prefix));
    CHECK(same_subnet(vip, peer, vip.prefix));
    CHECK_FALSE(same_subnet(vip, elsewhere, vip.prefix));
    CHECK(same_subnet(vip, elsewhere, 23));
    // A prefix that is not a multiple of 8 compares the leading bits of the last byte.
    CHECK(same_subnet(*parse_ip("10.77.0.100"), *parse_ip("10.77.0.127"), 25));
    CHECK_FALSE(same_subnet(*parse_ip("10.77.0.100"), *parse_ip("10.77.0.128"), 25));
    CHECK(same_subnet(vip, elsewhere, 0));
    CHECK_FALSE(same_subnet(vip, node, 33));

    auto vip6 = *parse_vip("fd00::100/64");
    CHECK(same_subnet(vip6, *parse_ip("fd00::1"), 64));
    CHECK_FALSE(same_subnet(vip6, *parse_ip("fd00:0:0:1::1"), 64));
    CHECK_FALSE(same_subnet(vip6, node, 0));  // different families never pair
}

TEST_CASE("MAC addresses print as six colon-separated bytes", "[unit][netlink]") {
    mac_address m{std::byte{0x02}, std::byte{0x00}, std::byte{0x5e}, std::byte{0xab}, std::byte{0x01}, std::byte{0xff}};
    CHECK(to_string(m) == "02:00:5e:ab:01:ff");
}

TEST_CASE("labels belong to the interface and fit IFNAMSIZ", "[unit][netlink]") {
    CHECK(check_label("eth0", "eth0:0"));
    CHECK(check_label("eth0", "eth0"));
    CHECK(check_label("eth0", "eth0:vip"));
    CHECK(check_label("enp0s31f6", "enp0s31f6:0"));  // 11 characters
    CHECK(check_label("abcdefghijklm", "abcdefghijklm:0"));  // exactly 15

    CHECK_THAT(error_of(check_label("abcdefghijklm", "abcdefghijklm:10")),
               Catch::Contains("'abcdefghijklm:10'") && Catch::Contains("16 characters") && Catch::Contains("15"));
    CHECK_THAT(error_of(check_label("eth0", "eth1:0")),
               Catch::Contains("'eth1:0'") && Catch::Contains("'eth0'") && Catch::Contains("eth0:0"));
    CHECK_THAT(error_of(check_label("eth0", "eth00")), Catch::Contains("'eth00'"));
    CHECK_THAT(error_of(check_label("eth0", "eth0:")), Catch::Contains("'eth0:'"));
    CHECK_THAT(error_of(check_label("eth0", "")), Catch::Contains("''"));
}
