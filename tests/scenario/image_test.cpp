// tests: the appliance image — built with mmdebstrap, booted in qemu, tandemd ACTIVE on its console.
#include "support/cluster.hpp"
#include "support/skip.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

using namespace tandem::test;

TEST_CASE("image: the appliance image builds, boots in qemu, and tandemd comes up ACTIVE", "[image]") {
    if (::geteuid() != 0) TANDEM_SKIP("building an image needs root");
    // The same output directory as `make image`: its root file system cache is shared.
    auto built = run("image/build.sh " + bin_dir() + " build/image 2>&1");
    INFO(built.out);
    REQUIRE(built.status == 0);
    auto table = run("sfdisk -d build/image/disk.img");
    for (auto label : {"root_a", "root_b", "config", "store"})
        CHECK(table.out.find(std::string("name=\"") + label + "\"") != std::string::npos);
    // The self-test unit prints one line on the serial console and powers the guest off.
    auto boot = run("image/test.sh build/image 900 2>&1");
    INFO(boot.out);
    CHECK(boot.status == 0);
    CHECK(boot.out.find("S:ACTIVE/ONLINE") != std::string::npos);
}
