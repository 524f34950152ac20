// tests: helpers shared by the netlink tests — result checks, frame text, two hosts on a veth.
#pragma once

#include "support/capture.hpp"
#include "support/util.hpp"

#include "tandem/netlink/route.hpp"

#include <catch2/catch.hpp>

#include <stdlib.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace tandem::test {

// For REQUIRE(ok(r)) on a result: on failure Catch also prints the error's text.
template <class R>
bool ok(const R& r) {
    if (!r) {
        if constexpr (requires { r.error().message(); })
            UNSCOPED_INFO(r.error().message());
        else
            UNSCOPED_INFO(r.error().message);
    }
    return r.has_value();
}

// Expected frames are written field by field with spaces between; compare without them.
inline std::string squeeze(std::string s) {
    std::erase(s, ' ');
    return s;
}

// Two namespaces joined by eth0 <-> eth0, 10.200.0.1/24 in a and 10.200.0.2/24 in b.
struct two_hosts {
    netns a{"a"}, b{"b"};
    two_hosts() { veth(a, "eth0", "10.200.0.1/24", b, "eth0", "10.200.0.2/24"); }
};

// two_hosts with this thread inside host a, a route socket there and eth0's ifindex.
// Members leave the namespace before two_hosts deletes it.
struct in_host_a : two_hosts {
    scoped_netns_enter enter{a};
    netlink::route_socket rs = netlink::route_socket::open().value();
    int eth0 = rs.link_index("eth0").value();
};

}  // namespace tandem::test
