// tests: the namespace builders themselves — two hosts on a veth pair can ping each other.
#include "support/netns.hpp"
#include "support/skip.hpp"

#include <catch2/catch.hpp>

using namespace tandem::test;

TEST_CASE("two namespaces on a veth pair reach each other and are removed", "[kernel][support]") {
    std::string why;
    if (!can_make_namespaces(&why)) TANDEM_SKIP(why);
    std::string name;
    {
        netns a("a"), b("b");
        name = a.name();
        veth(a, "eth0", "10.200.0.1/24", b, "eth0", "10.200.0.2/24");
        CHECK(a.exec("ping -c1 -W2 10.200.0.2").status == 0);
        CHECK(run("ip netns list").out.find(name) != std::string::npos);
    }
    CHECK(run("ip netns list").out.find(name) == std::string::npos);
}
