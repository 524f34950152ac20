// tests: the appliance image — built with mmdebstrap, booted in qemu; two guests fail over.
#include "support/image.hpp"
#include "support/skip.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

using namespace tandem::test;

TEST_CASE("image: the appliance image builds, boots in qemu, and tandemd comes up ACTIVE", "[image]") {
    if (::geteuid() != 0) TANDEM_SKIP("building an image needs root");
    TANDEM_REQUIRE_IMAGE();
    auto table = run("sfdisk -d build/image/disk.img");
    for (auto label : {"esp", "root_a", "root_b", "config", "store"})
        CHECK(table.out.find(std::string("name=\"") + label + "\"") != std::string::npos);
    // The self-test unit prints one line on the serial console and powers the guest off.
    auto boot = run("image/test.sh build/image 900 2>&1");
    INFO(boot.out);
    CHECK(boot.status == 0);
    CHECK(boot.out.find("S:ACTIVE/ONLINE") != std::string::npos);
}

// image/test-ha.sh does the checking step by step and names the first that
// fails; these cases check it passed and that each step it reports happened.
TEST_CASE("image: two guests with the io_uring engine: power cut, takeover with /store on NBD, delta, restore, "
          "a tandemd that dies for good reset by the watchdog",
          "[image]") {
    if (::geteuid() != 0) TANDEM_SKIP("two guests need root (namespaces, taps)");
    TANDEM_REQUIRE_IMAGE();
    auto r = run("image/test-ha.sh build/image uring 1500 2>&1");
    INFO(r.out);
    REQUIRE(r.status == 0);
    CHECK(r.out.find("image-test-ha (uring) passed") != std::string::npos);
    CHECK(r.out.find("/store on /dev/nbd") != std::string::npos);
    CHECK(r.out.find("(the delta)") != std::string::npos);
    CHECK(r.out.find("TOOK-BACK vip=10.99.0.100/24") != std::string::npos);
    CHECK(r.out.find("RESTARTED stale=") != std::string::npos);  // a restart in time: no reset
    CHECK(r.out.find("tandemd dead on alpha, watchdog reset") != std::string::npos);
}

TEST_CASE("image: two guests with kernel DRBD 8.4: full sync, power cut, takeover with /store, resync on return, "
          "invalidate, reconnect", "[image]") {
    if (::geteuid() != 0) TANDEM_SKIP("two guests need root (namespaces, taps)");
    TANDEM_REQUIRE_IMAGE();
    auto r = run("image/test-ha.sh build/image drbd 1500 2>&1");
    INFO(r.out);
    REQUIRE(r.status == 0);
    CHECK(r.out.find("image-test-ha (drbd) passed") != std::string::npos);
    CHECK(r.out.find("/store on /dev/drbd0") != std::string::npos);
    CHECK(r.out.find("REJOINED") != std::string::npos);
    CHECK(r.out.find("discard-local (drbdadm invalidate) refilled") != std::string::npos);
    CHECK(r.out.find("StandAlone without its address, reconnected by tandemd") != std::string::npos);
    CHECK(r.out.find("a clean stop of tandemd stopped the watchdog") != std::string::npos);
}

TEST_CASE("image: two guests on shared storage with a lease: a hung storage path starves the watchdog, which resets "
          "the active guest before the standby mounts /store",
          "[image]") {
    if (::geteuid() != 0) TANDEM_SKIP("two guests need root (namespaces, taps)");
    TANDEM_REQUIRE_IMAGE();
    auto r = run("image/test-ha.sh build/image shared 900 2>&1");
    INFO(r.out);
    REQUIRE(r.status == 0);
    CHECK(r.out.find("image-test-ha (shared) passed") != std::string::npos);
    CHECK(r.out.find("STARVING \"this node holds the shared store's lease") != std::string::npos);
    CHECK(r.out.find("before beta mounted /store") != std::string::npos);
}
