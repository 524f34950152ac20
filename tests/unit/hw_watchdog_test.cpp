// tests: the host's watchdog — when tandemd may feed it, and devices refused before the timer starts.
#include "tandem/agent/hw_watchdog.hpp"

#include "support/tempdir.hpp"

#include <catch2/catch.hpp>

using namespace tandem::agent;
using namespace std::chrono_literals;

TEST_CASE("the watchdog is fed while the lease of a node that holds the shared store is fresh", "[unit][watchdog]") {
    const tandem::steady_time t0 = std::chrono::steady_clock::now();
    const auto interval = 1000ms;
    // No lease (backend uring, drbd, none, or shared without lease_device): the loop running is enough.
    CHECK(may_feed_watchdog(t0, std::nullopt, interval));
    lease_info l;
    l.wants_holding = false;
    CHECK(may_feed_watchdog(t0, l, interval));  // holds nothing: its renewals do not matter
    l.wants_holding = true;
    CHECK_FALSE(may_feed_watchdog(t0, l, interval));  // wants the device, never renewed
    l.renew_started = t0;
    CHECK(may_feed_watchdog(t0 + 1999ms, l, interval));
    // Two intervals after the last renewal started: the peer's claim, 2 x timeout
    // after it, must find this host reset (watchdog.timeout <= 2 x timeout - 2 x interval).
    CHECK_FALSE(may_feed_watchdog(t0 + 2000ms, l, interval));
    l.wants_holding = false;  // released: the unmount is done whatever the lease device says
    CHECK(may_feed_watchdog(t0 + 60s, l, interval));
}

TEST_CASE("a watchdog device that is missing, not a device or not a watchdog is refused, naming it",
          "[kernel][watchdog]") {
    tandem::test::temp_dir dir;
    auto open_error = [](const std::string& dev) -> std::string {
        try {
            (void)hw_watchdog::open(dev, 10s);
        } catch (const std::runtime_error& e) {
            return e.what();
        }
        return "";
    };
    const auto missing = (dir.path() / "watchdog").string();
    CHECK(open_error(missing) ==
          "watchdog.device " + missing + ": No such file or directory (load the board's watchdog driver, or softdog)");
    CHECK(hw_watchdog::check(missing) == open_error(missing));
    const auto file = dir.write("file", "x");
    CHECK(open_error(file) == "watchdog.device " + file + ": not a character device");
    // A character device that is not a watchdog passes the check (which must not
    // open it), and the kernel refuses the watchdog API on it.
    CHECK(hw_watchdog::check("/dev/null").empty());
    CHECK(open_error("/dev/null") ==
          "watchdog.device /dev/null: not a watchdog device (WDIOC_GETSUPPORT: Inappropriate ioctl for device)");
}
