// agent: the host's watchdog device — opened, set and fed through the Linux watchdog API
// (Documentation/watchdog/watchdog-api.rst).
#include "tandem/agent/hw_watchdog.hpp"

#include <fcntl.h>
#include <linux/watchdog.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace tandem::agent {
namespace {

// The legacy /dev/watchdog is the misc device 10:130; it is the first
// registered watchdog, whose attributes are under watchdog0.
std::string sysfs_dir(const struct stat& st) {
    if (major(st.st_rdev) == 10 && minor(st.st_rdev) == 130) return "/sys/class/watchdog/watchdog0";
    return fmt::format("/sys/dev/char/{}:{}", major(st.st_rdev), minor(st.st_rdev));
}

bool read_nowayout(const std::string& dir) {
    std::ifstream in(dir + "/nowayout");
    int v = 0;
    return in >> v && v != 0;
}

// The magic close: a driver that knows it (WDIOF_MAGICCLOSE) stops its timer
// only when "V" was written before the close; nowayout drivers never stop.
void magic_close(unique_fd& fd) noexcept {
    if (!fd) return;
    [[maybe_unused]] auto n = ::write(fd.get(), "V", 1);
    fd.reset();
}

}  // namespace

std::string hw_watchdog::check(const std::string& device) {
    struct stat st {};
    if (::stat(device.c_str(), &st) != 0)
        return fmt::format("watchdog.device {}: {}{}", device, std::strerror(errno),
                           errno == ENOENT ? " (load the board's watchdog driver, or softdog)" : "");
    if (!S_ISCHR(st.st_mode)) return fmt::format("watchdog.device {}: not a character device", device);
    return "";
}

hw_watchdog hw_watchdog::open(const std::string& device, std::chrono::seconds timeout) {
    if (auto why = check(device); !why.empty()) throw std::runtime_error(why);
    unique_fd fd(::open(device.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) {
        int e = errno;
        throw std::runtime_error(fmt::format(
            "watchdog.device {}: cannot open it: {}{}", device, std::strerror(e),
            e == EBUSY ? " (another process feeds it: systemd's RuntimeWatchdogSec=, or a watchdog daemon; only one "
                         "may)"
                       : ""));
    }
    watchdog_info info{};
    if (::ioctl(fd.get(), WDIOC_GETSUPPORT, &info) != 0)  // closed as is: no "V" to a device that is not a watchdog
        throw std::runtime_error(
            fmt::format("watchdog.device {}: not a watchdog device (WDIOC_GETSUPPORT: {})", device, std::strerror(errno)));
    // From here on the timer runs: every failure stops it again before it throws.
    auto fail = [&](std::string why) {
        magic_close(fd);
        throw std::runtime_error(fmt::format("watchdog.device {}: {}", device, why));
    };
    description d;
    d.device = device;
    d.identity.assign(reinterpret_cast<const char*>(info.identity),
                      strnlen(reinterpret_cast<const char*>(info.identity), sizeof info.identity));
    if (!(info.options & WDIOF_SETTIMEOUT)) fail(fmt::format("the driver ({}) cannot set its timeout", d.identity));
    struct stat st {};
    if (::fstat(fd.get(), &st) == 0) d.nowayout = read_nowayout(sysfs_dir(st));
    hw_watchdog w(std::move(fd), std::move(d));
    if (auto why = w.set_timeout(timeout); !why.empty()) {
        magic_close(w.fd_);
        throw std::runtime_error(fmt::format("watchdog.device {}: {}", device, why));
    }
    return w;
}

std::string hw_watchdog::set_timeout(std::chrono::seconds timeout) {
    int t = static_cast<int>(timeout.count());
    if (::ioctl(fd_.get(), WDIOC_SETTIMEOUT, &t) != 0)
        return fmt::format("the driver ({}) does not take a timeout of {} s: {}", d_.identity, timeout.count(),
                           std::strerror(errno));
    // Drivers round to what their hardware counts; a longer timeout than asked
    // for could outlast the peer's wait for the lease.
    if (t > timeout.count()) {
        if (int old = static_cast<int>(d_.timeout.count()); old > 0) ::ioctl(fd_.get(), WDIOC_SETTIMEOUT, &old);
        return fmt::format("the driver ({}) set a timeout of {} s, longer than the {} s asked for", d_.identity, t,
                           timeout.count());
    }
    d_.timeout = std::chrono::seconds(t);
    // WDIOC_SETTIMEOUT restarts the countdown in most drivers; this makes sure.
    if (auto ec = keepalive()) return fmt::format("WDIOC_KEEPALIVE: {}", ec.message());
    return "";
}

error_code hw_watchdog::keepalive() noexcept {
    int dummy = 0;
    if (::ioctl(fd_.get(), WDIOC_KEEPALIVE, &dummy) != 0) return errno_error();
    return {};
}

bool hw_watchdog::disarm() noexcept {
    magic_close(fd_);
    return !d_.nowayout;
}

bool may_feed_watchdog(steady_time now, const std::optional<lease_info>& lease,
                       std::chrono::milliseconds interval) noexcept {
    if (!lease || !lease->wants_holding) return true;
    return lease->renew_started != steady_time{} && now - lease->renew_started < 2 * interval;
}

}  // namespace tandem::agent
