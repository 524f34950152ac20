// tests: packet capture with tcpdump inside a test namespace.
#pragma once

#include "support/netns.hpp"
#include "support/util.hpp"

#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace tandem::test {

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
