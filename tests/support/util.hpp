// tests: small helpers every tier shares — hex dumps, polling real state with a deadline, reading files.
#pragma once

#include "support/netns.hpp"
#include "support/skip.hpp"

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <thread>

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

// Under ThreadSanitizer the daemons and the tests run 5 to 15 times slower, so
// every deadline (here and in test_cluster::wait) stretches by this factor. A
// deadline only bounds a wait for an event; it never decides what is measured.
#if defined(__SANITIZE_THREAD__)
inline constexpr int deadline_scale = 10;
#else
inline constexpr int deadline_scale = 1;
#endif

// Re-checks real state until it holds or the deadline passes. The short pause
// between checks only paces the polling; nothing waits a guessed time.
template <class Pred>
bool wait_until(Pred&& pred, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout * deadline_scale;
    for (;;) {
        if (pred()) return true;
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

inline std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace tandem::test

// Skips the running test case where namespaces cannot be made (not root, no iproute2).
#define TANDEM_REQUIRE_NAMESPACES()                                     \
    do {                                                                \
        std::string why_;                                               \
        if (!::tandem::test::can_make_namespaces(&why_)) TANDEM_SKIP(why_); \
    } while (0)

