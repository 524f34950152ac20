// tests: volume files for the replication tests — on /var/tmp, where O_DIRECT works (on tmpfs only since Linux 6.6).
#pragma once

#include "tandem/replication/volume.hpp"

#include <unistd.h>
#include <xxhash.h>

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace tandem::test {

inline constexpr std::uint64_t mib = 1 << 20;

// A volume file on a file system with O_DIRECT (/var/tmp; tmpfs has it only since Linux 6.6).
struct volume_file {
    std::string path;
    explicit volume_file(std::uint64_t size, bool random_content) {
        path = "/var/tmp/tandem-vol-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++);
        std::ofstream out(path, std::ios::binary);
        std::mt19937_64 rng(42 + counter());
        std::vector<std::uint64_t> block(mib / 8);
        for (std::uint64_t done = 0; done < size; done += mib) {
            for (auto& w : block) w = random_content ? rng() : 0;
            out.write(reinterpret_cast<const char*>(block.data()), mib);
        }
    }
    ~volume_file() { ::unlink(path.c_str()); }
    std::uint64_t digest(std::uint64_t from = 0, std::uint64_t len = ~0ull) const {
        std::ifstream in(path, std::ios::binary);
        in.seekg(static_cast<std::streamoff>(from));
        std::vector<char> all;
        std::vector<char> buf(mib);
        while (len > 0 && in.read(buf.data(), static_cast<std::streamsize>(std::min<std::uint64_t>(mib, len))) ) {
            all.insert(all.end(), buf.begin(), buf.begin() + in.gcount());
            len -= std::min<std::uint64_t>(mib, len);
        }
        return XXH3_64bits(all.data(), all.size());
    }
    static int& counter() {
        static int c = 0;
        return c;
    }
};

// Whether volumes on /var/tmp can be opened with O_DIRECT; `why` says why not.
inline bool can_direct(std::string& why) {
    volume_file probe(mib, false);
    auto v = replication::volume::open(probe.path);
    if (!v) why = "no O_DIRECT on /var/tmp: " + v.error().message();
    return v.has_value();
}

// A loop device over a file in /dev/shm: a memory-backed block device (the
// daemon opens it with O_DIRECT, which tmpfs files alone do not allow).
struct loop_volume {
    std::string file, dev;
    loop_volume(std::uint64_t size, bool random_content);
    ~loop_volume();
    loop_volume(const loop_volume&) = delete;
    loop_volume& operator=(const loop_volume&) = delete;
    std::string sha256() const;
};

}  // namespace tandem::test
