// tests: what names a replicated volume (volume::identity()): a file's inode, a loop device's backing
// file. This kernel has no partition-table parsers, so a partition's name (its entry UUID, as udev
// read it) is checked in the appliance image's two-guest test, on the Debian kernel.
#include "tandem/replication/volume.hpp"

#include "support/netns.hpp"
#include "support/result_catch.hpp"
#include "support/volume_file.hpp"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>


using namespace tandem;
using namespace tandem::replication;
using namespace tandem::test;

namespace {

std::string inode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return fmt::format("inode {} on {}:{}", st.st_ino, major(st.st_dev), minor(st.st_dev));
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
