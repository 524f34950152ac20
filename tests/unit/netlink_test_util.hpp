// tests: helpers shared by the netlink tests — hex dumps, deadlines, two hosts on a veth.
#pragma once

#include "support/netns.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace tandem::test {

inline std::string hex(std::span<const std::byte> b) {
    static const char* d = "0123456789abcdef";
    std::string s;
    for (auto x : b) {
        s += d[std::to_integer<int>(x) >> 4];
        s += d[std::to_integer<int>(x) & 15];
    }
    return s;
}

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

// Re-checks real state until it holds or the deadline passes. The short pause
// between checks only paces the polling; nothing waits a guessed time.
template <class Pred>
bool wait_until(Pred&& pred, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (pred()) return true;
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

// Two namespaces joined by eth0 <-> eth0, 10.200.0.1/24 in a and 10.200.0.2/24 in b.
struct two_hosts {
    netns a{"a"}, b{"b"};
    two_hosts() { veth(a, "eth0", "10.200.0.1/24", b, "eth0", "10.200.0.2/24"); }
};

}  // namespace tandem::test
