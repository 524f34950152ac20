// tests: helpers shared by the netlink tests — hex dumps, deadlines, two hosts on a veth, packet capture.
#pragma once

#include "support/netns.hpp"
#include "support/skip.hpp"
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

// Skips the running test case where namespaces cannot be made (not root, no iproute2).
#define TANDEM_REQUIRE_NAMESPACES()                                     \
    do {                                                                \
        std::string why_;                                               \
        if (!::tandem::test::can_make_namespaces(&why_)) TANDEM_SKIP(why_); \
    } while (0)

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

inline std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// tcpdump inside a namespace, writing `count` frames matching `filter` to a
// pcap file. The constructor returns once tcpdump says it is listening.
class capture {
public:
    capture(const netns& ns, const std::string& ifname, int count, const std::string& filter) {
        char tmpl[] = "/tmp/tandem-capture-XXXXXX";
        if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
        dir_ = tmpl;
        // -U writes each frame as it arrives; -Z root keeps the file writable;
        // timeout ends tcpdump if the frames never come.
        run_ok(ns.prefix() + "sh -c 'timeout 20 tcpdump -Z root -U -n -i " + ifname + " -c " + std::to_string(count) +
               " -w " + (dir_ / "cap.pcap").string() + " \"" + filter + "\" > " + log().string() + " 2>&1 &'");
        if (!wait_until([&] { return read_file(log()).find("listening on") != std::string::npos; }))
            throw std::runtime_error("tcpdump did not start: " + read_file(log()));
    }
    ~capture() { std::filesystem::remove_all(dir_); }
    capture(const capture&) = delete;
    capture& operator=(const capture&) = delete;

    // Waits for tcpdump to exit after its `count` frames and returns them.
    std::vector<std::vector<std::byte>> frames() {
        if (!wait_until([&] { return read_file(log()).find(" captured") != std::string::npos; }))
            throw std::runtime_error("tcpdump did not capture its frames: " + read_file(log()));
        return parse_pcap(read_file(dir_ / "cap.pcap"));
    }

private:
    std::filesystem::path log() const { return dir_ / "tcpdump.log"; }

    // Classic pcap: a 24-byte file header, then per frame a 16-byte record
    // header whose third field is the captured length (host byte order).
    static std::vector<std::vector<std::byte>> parse_pcap(const std::string& file) {
        std::vector<std::vector<std::byte>> out;
        auto u32 = [&](std::size_t at) {
            std::uint32_t v;
            std::memcpy(&v, file.data() + at, 4);
            return v;
        };
        for (std::size_t at = 24; at + 16 <= file.size();) {
            std::size_t len = u32(at + 8);
            at += 16;
            if (at + len > file.size()) break;
            auto* p = reinterpret_cast<const std::byte*>(file.data() + at);
            out.emplace_back(p, p + len);
            at += len;
        }
        return out;
    }

    std::filesystem::path dir_;
};

}  // namespace tandem::test
