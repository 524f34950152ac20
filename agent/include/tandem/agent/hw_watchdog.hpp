// agent: the host's watchdog device (/dev/watchdog) — fed from tandemd's event loop, so a host
// whose tandemd hangs, dies and does not come back, or holds the shared store's lease without
// renewing it, is reset by the hardware (docs/hw-watchdog.md).
#pragma once

#include "tandem/agent/machine.hpp"
#include "tandem/base/result.hpp"
#include "tandem/base/unique_fd.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <utility>

namespace tandem::agent {

class hw_watchdog {
public:
    // What the driver said about itself when it was opened.
    struct description {
        std::string device;
        std::string identity;  // the driver's name for the timer, e.g. "i6300ESB timer"
        std::chrono::seconds timeout{0};
        bool nowayout = false;  // the driver cannot be stopped: a clean stop resets the host too
    };

    // Opens `device`, which starts the timer, and sets its timeout. Throws
    // std::runtime_error naming the device and what is wrong (missing, held by
    // another process, not a watchdog, a timeout the driver cannot keep); the
    // timer is stopped again before it throws.
    static hw_watchdog open(const std::string& device, std::chrono::seconds timeout);
    // Checks without opening (opening would start the timer): `device` exists
    // and is a character device. Returns what is wrong, or "".
    [[nodiscard]] static std::string check(const std::string& device);

    hw_watchdog(hw_watchdog&&) noexcept = default;
    hw_watchdog& operator=(hw_watchdog&&) noexcept = default;
    // Closes without the magic character: the timer keeps running, and resets
    // the host unless a new tandemd opens the device in time.
    ~hw_watchdog() = default;

    // Sets the timeout (a reload). Returns what is wrong, or "" (the old
    // timeout then stays): the driver refuses it, or rounds it up.
    [[nodiscard]] std::string set_timeout(std::chrono::seconds timeout);
    // Restarts the countdown (WDIOC_KEEPALIVE).
    [[nodiscard]] error_code keepalive() noexcept;
    // Stops the timer and closes (the magic close: "V", then close). False if
    // the driver cannot be stopped (nowayout).
    bool disarm() noexcept;
    [[nodiscard]] bool armed() const noexcept { return static_cast<bool>(fd_); }
    [[nodiscard]] const description& describe() const noexcept { return d_; }

private:
    hw_watchdog(unique_fd fd, description d) : fd_(std::move(fd)), d_(std::move(d)) {}
    unique_fd fd_;
    description d_;
};

// Whether tandemd may feed the watchdog now. Without a lease on shared storage,
// always: that the event loop runs is the proof of life. With one, a node that
// wants to hold the shared device feeds it only while its last renewal started
// within two heartbeat intervals, so the host is reset before the peer's claim
// (lease_expiry() after the last renewal) when the renewals stop
// (docs/hw-watchdog.md#with-the-shared-storage-lease).
[[nodiscard]] bool may_feed_watchdog(steady_time now, const std::optional<lease_info>& lease,
                                     std::chrono::milliseconds interval) noexcept;

}  // namespace tandem::agent
