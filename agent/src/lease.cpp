// agent: the lease on shared storage — a slot per node on a small shared device, written and read
// by a thread of its own every heartbeat interval (docs/shared-storage-lease.md).
#include "tandem/agent/lease.hpp"

#include "tandem/base/duration.hpp"
#include "tandem/base/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

namespace tandem::agent {

namespace asio = boost::asio;

namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

lease_keeper::lease_keeper(options o, std::function<void(const lease_info&)> on_turn)
    : o_(std::move(o)), on_turn_(std::move(on_turn)) {
    info_.device = o_.device;
    auto fail = [&](const std::string& what) {
        throw std::runtime_error(fmt::format("replication.lease_device {}: {}", o_.device, what));
    };
    // O_DIRECT: a read from the page cache would never see the peer's writes.
    fd_.reset(::open(o_.device.c_str(), O_RDWR | O_DIRECT | O_DSYNC | O_CLOEXEC));
    if (!fd_)
        fail(errno == EINVAL ? "cannot be opened with O_DIRECT, which the lease needs (a cached read never sees the "
                               "peer's writes)"
                             : "cannot be opened: " + errno_text());
    struct stat st{};
    if (::fstat(fd_.get(), &st) != 0) fail("fstat: " + errno_text());
    std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
    if (S_ISBLK(st.st_mode)) {
        if (::ioctl(fd_.get(), BLKGETSIZE64, &size) != 0) fail("BLKGETSIZE64: " + errno_text());
        int lbs = 0;
        if (::ioctl(fd_.get(), BLKSSZGET, &lbs) == 0 && lbs > static_cast<int>(lease_slot_size))
            fail(fmt::format("its logical block size is {} bytes; the lease's slots are {}", lbs, lease_slot_size));
    } else if (!S_ISREG(st.st_mode)) {
        fail("is neither a block device nor a regular file");
    }
    if (size < 2 * lease_slot_size)
        fail(fmt::format("is {} bytes; the lease needs at least {} (a {}-byte slot per node)", size,
                         2 * lease_slot_size, lease_slot_size));
    buf_.reset(static_cast<std::byte*>(std::aligned_alloc(lease_slot_size, lease_slot_size)));
    if (!buf_) fail("no memory for an aligned slot");
    // Nothing is written to a device whose slots hold anything but zeros or
    // lease slots: a data disk named here by mistake stays as it was.
    auto mine = lease_index(o_.role);
    std::optional<lease_slot> own;
    for (std::uint16_t i : {static_cast<std::uint16_t>(1 - mine), mine}) {
        if (::pread(fd_.get(), buf_.get(), lease_slot_size, static_cast<off_t>(i * lease_slot_size)) !=
            static_cast<ssize_t>(lease_slot_size))
            fail(fmt::format("reading slot {}: {}", i, errno_text()));
        std::string why;
        auto s = decode_lease_slot(std::span<const std::byte>(buf_.get(), lease_slot_size), why);
        if (!s && why.find("wrong magic") != std::string::npos)
            fail(fmt::format("its first {} bytes hold something other than zeros or Tandem's lease slots: is it the "
                             "right device? A new lease device must be zeroed first (dd if=/dev/zero of={} bs=4096 "
                             "count=2)",
                             2 * lease_slot_size, o_.device));
        if (i == mine) own = s;
    }
    // Go on from our own slot's counter, so the peer sees a change even after a restart.
    if (auto s = own) {
        counter_ = s->counter;
        if (s->node != o_.node_name)
            log::warning("lease.slot_taken", "{}: slot {} was written by node {}, and is now {}'s", o_.device, mine,
                         s->node, o_.node_name);
    }
    // One turn now: tandemd starts with a lease written and the peer's slot read, or not at all.
    auto v = turn(false);
    if (!v.ok) fail(v.error);
    info_ = v;
}

lease_keeper::~lease_keeper() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void lease_keeper::start() { thread_ = std::thread([this] { run(); }); }

lease_info lease_keeper::view() const {
    std::lock_guard lk(mu_);
    return info_;
}

lease_info lease_keeper::turn(bool holding) {
    lease_info v;
    {
        std::lock_guard lk(mu_);
        v = info_;
    }
    v.ok = false;
    v.wants_holding = holding;
    auto mine = lease_index(o_.role);
    auto theirs = static_cast<std::uint16_t>(1 - mine);
    lease_slot s{mine, holding ? lease_flag_holding : 0u, counter_ + 1, o_.node_name};
    if (!encode_lease_slot(std::span<std::byte, lease_slot_size>(buf_.get(), lease_slot_size), s)) {
        v.error = fmt::format("node name {} is too long for a slot", o_.node_name);
        return v;
    }
    auto started = std::chrono::steady_clock::now();
    auto n = ::pwrite(fd_.get(), buf_.get(), lease_slot_size, static_cast<off_t>(mine * lease_slot_size));
    if (n != static_cast<ssize_t>(lease_slot_size)) {
        v.error = fmt::format("writing slot {}: {}", mine, n < 0 ? errno_text() : "short write");
        return v;
    }
    counter_ = s.counter;
    v.renewed = std::chrono::steady_clock::now();
    v.renew_started = started;
    v.holding = holding;
    n = ::pread(fd_.get(), buf_.get(), lease_slot_size, static_cast<off_t>(theirs * lease_slot_size));
    if (n != static_cast<ssize_t>(lease_slot_size)) {
        v.error = fmt::format("reading slot {}: {}", theirs, n < 0 ? errno_text() : "short read");
        return v;
    }
    std::string why;
    auto p = decode_lease_slot(std::span<const std::byte>(buf_.get(), lease_slot_size), why);
    if (!p && why != "blank") {
        v.error = fmt::format("the peer's slot {}: {}", theirs, why);
        return v;
    }
    if (p && p->index != theirs) {
        v.error = fmt::format("the peer's slot {} says it is slot {}: both nodes may have the same role", theirs,
                              p->index);
        return v;
    }
    if (p && (!peer_last_ || peer_last_->counter != p->counter)) v.peer_changed = std::chrono::steady_clock::now();
    if (p) peer_last_ = p;
    v.peer_holding = p && (p->flags & lease_flag_holding);
    v.peer_counter = p ? p->counter : 0;
    v.peer_node = p ? p->node : "";
    v.ok = true;
    v.error.clear();
    return v;
}

void lease_keeper::run() {
    std::unique_lock lk(mu_);
    auto next = std::chrono::steady_clock::now() + o_.period;
    while (!stop_) {
        cv_.wait_until(lk, next, [&] { return stop_ || requested_ > done_; });
        if (stop_) break;
        auto ticket = requested_;
        bool holding = holding_;
        lk.unlock();
        auto v = turn(holding);
        lk.lock();
        if (v.ok != info_.ok || v.error != info_.error) {
            if (v.ok) log::notice("lease.ok", "{}: the lease is written and read again", o_.device);
            else log::error("lease.failed", "{}: {}", o_.device, v.error);
        }
        info_ = v;
        done_ = ticket;
        for (auto it = waiters_.begin(); it != waiters_.end();) {
            if (it->first <= done_) {
                it->second();
                it = waiters_.erase(it);
            } else {
                ++it;
            }
        }
        next = std::chrono::steady_clock::now() + o_.period;
        lk.unlock();
        on_turn_(v);
        lk.lock();
    }
}

asio::awaitable<lease_info> lease_keeper::write_now(bool holding, std::chrono::milliseconds limit) {
    auto ex = co_await asio::this_coro::executor;
    auto timer = std::make_shared<asio::steady_timer>(ex, limit);
    std::uint64_t ticket = 0;
    {
        std::lock_guard lk(mu_);
        holding_ = holding;
        ticket = ++requested_;
        waiters_.emplace_back(ticket, [timer, ex] { asio::post(ex, [timer] { timer->cancel(); }); });
    }
    cv_.notify_all();
    co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
    std::lock_guard lk(mu_);
    auto v = info_;
    if (done_ < ticket) {
        v.ok = false;
        v.error = fmt::format("the lease device did not finish a write and a read within {}", format_duration(limit));
    }
    co_return v;
}

}  // namespace tandem::agent
