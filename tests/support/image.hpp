// tests: the appliance image the [image] tier shares, built once per run of the test binary.
#pragma once

#include "support/cluster.hpp"
#include "support/netns.hpp"

#include <string>

namespace tandem::test {

// Runs image/build.sh into build/image (the directory `make image` uses, so the
// root file system comes from its cache after the first time) on the first
// call; every [image] test case calls it, so the order the cases run in does
// not matter. "" when the image is built, else what the build printed.
inline const std::string& image_build_failure() {
    static const std::string why = [] {
        auto r = run("image/build.sh " + bin_dir() + " build/image 2>&1");
        return r.status == 0 ? std::string() : "image/build.sh failed (" + std::to_string(r.status) + "):\n" + r.out;
    }();
    return why;
}

}  // namespace tandem::test

// Fails (never skips) the test case when the image cannot be built.
#define TANDEM_REQUIRE_IMAGE()                                   \
    do {                                                         \
        const auto& why_ = ::tandem::test::image_build_failure(); \
        INFO(why_);                                              \
        REQUIRE(why_.empty());                                   \
    } while (0)
