// tests: what names a replicated volume (volume::identity()): a file's inode, a loop device's backing
// file; and a discard (volume::zero()) on a block device. This kernel has no partition-table parsers, so a partition's name (its entry UUID, as udev
// read it) is checked in the appliance image's two-guest test, on the Debian kernel.
#include "tandem/replication/volume.hpp"

#include "support/netns.hpp"
#include "support/result_catch.hpp"
#include "support/volume_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <cstdlib>
#include <memory>
#include <random>


using namespace tandem;
using namespace tandem::replication;
using namespace tandem::test;

namespace {

std::string inode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return fmt::format("inode {} on {}:{}", st.st_ino, major(st.st_dev), minor(st.st_dev));
}

// An aligned buffer of n bytes (O_DIRECT), random or zero.
struct aligned_bytes {
    std::unique_ptr<std::byte, decltype(&std::free)> p;
    std::size_t n;
    aligned_bytes(std::size_t size, bool random)
        : p(static_cast<std::byte*>(std::aligned_alloc(4096, size)), &std::free), n(size) {
        std::mt19937_64 rng(7);
        for (std::size_t i = 0; i < n; ++i) p.get()[i] = random ? static_cast<std::byte>(rng()) : std::byte{0};
    }
    std::span<std::byte> span() const { return {p.get(), n}; }
};

// Writes 8 MiB of random bytes to `v`, zeroes [1 MiB, 3 MiB) and checks that
// exactly that range reads as zeros.
void zero_middle(const volume& v) {
    aligned_bytes data(8 * mib, true), back(8 * mib, false);
    REQUIRE(v.write_all(0, data.span()));
    REQUIRE(v.zero(mib, 2 * mib));
    REQUIRE(::pread(v.fd(), back.p.get(), back.n, 0) == static_cast<ssize_t>(back.n));
    auto want = data.span();
    std::fill(want.begin() + mib, want.begin() + 3 * mib, std::byte{0});
    CHECK(std::equal(want.begin(), want.end(), back.span().begin()));
}

}  // namespace

TEST_CASE("a volume is named by its file's inode, and a loop device by its backing file's", "[kernel][replication]") {
    volume_file f(mib, false);
    auto v = volume::open(f.path);
    REQUIRE(v);
    CHECK(v->identity() == inode_of(f.path));

    loop_volume lv(mib, false);
    std::string first;
    {
        auto l = volume::open(lv.dev);  // closed before the detach below
        REQUIRE(l);
        first = l->identity();
    }
    CHECK(first == inode_of(lv.file));
    // A copy of the same bytes is another volume: only the operator knows it holds the same data.
    run_ok(fmt::format("losetup -d {0} && cp {1} {1}.new && mv {1}.new {1} && losetup {0} {1}", lv.dev, lv.file));
    auto copy = volume::open(lv.dev);
    REQUIRE(copy);
    CHECK(copy->identity() == inode_of(lv.file));
    CHECK(copy->identity() != first);
}

// The engine's tests discard on volume files; an appliance's volume is a block
// device, where a punched hole is the block layer's write-zeroes (a loop device
// passes it to its backing file's fallocate).
TEST_CASE("a discard on a block device volume reads back as zeros in its range only, and a bad range is refused",
          "[kernel][replication]") {
    loop_volume lv(8 * mib, false);
    auto v = volume::open(lv.dev);
    REQUIRE(v);
    REQUIRE(v->is_block_device());
    zero_middle(*v);
    CHECK(v->zero(4096, 100).error() == std::errc::invalid_argument);  // not whole logical blocks
    CHECK(v->zero(8 * mib - 4096, 2 * 4096).error() == std::errc::no_space_on_device);  // past the end
}
