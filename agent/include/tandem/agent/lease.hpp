// agent: the lease on shared storage — each node's slot on a small shared device, written every
// heartbeat interval, so a node cut off from its peer's heartbeats can still tell whether the
// peer is alive and holds /store before it mounts the shared device (docs/shared-storage-lease.md).
#pragma once

#include "tandem/agent/lease_slot.hpp"
#include "tandem/agent/machine.hpp"
#include "tandem/base/c_ptr.hpp"
#include "tandem/base/unique_fd.hpp"

#include <boost/asio/awaitable.hpp>

#include <condition_variable>
#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tandem::agent {

// The slot a node writes: the primary's is 0, the secondary's 1.
[[nodiscard]] constexpr std::uint16_t lease_index(node_role r) noexcept { return r == node_role::primary ? 0 : 1; }

// Owns the lease device and a thread that, every `period`, writes this node's
// slot (O_DIRECT, O_DSYNC) and reads the peer's. Blocking I/O on shared
// storage can hang for minutes, so none of it runs on the io_context: each
// turn's view goes to `on_turn` (called on the keeper's thread; post it on).
class lease_keeper {
public:
    struct options {
        std::string device;
        node_role role = node_role::primary;
        std::string node_name;
        std::chrono::milliseconds period{1000};
    };
    // Opens the device and reads both slots once; throws std::runtime_error
    // naming the device and what is wrong (missing, too small, unreadable).
    lease_keeper(options o, std::function<void(const lease_info&)> on_turn);
    ~lease_keeper();
    lease_keeper(const lease_keeper&) = delete;
    lease_keeper& operator=(const lease_keeper&) = delete;

    void start();
    // Sets the holding flag, runs a turn at once and completes when that turn
    // wrote the slot and read the peer's again (or `limit` passed: then the
    // view's `ok` is false). Failover phase 1 calls it before it checks or
    // mounts the shared device (true) and after it unmounted it (false).
    boost::asio::awaitable<lease_info> write_now(bool holding, std::chrono::milliseconds limit);
    [[nodiscard]] lease_info view() const;
    [[nodiscard]] const std::string& device() const { return o_.device; }

private:
    void run();
    lease_info turn(bool holding);  // one write of our slot and one read of the peer's
    options o_;
    std::function<void(const lease_info&)> on_turn_;
    unique_fd fd_;
    // One aligned slot for I/O; owned here, so a constructor that throws frees it too.
    c_ptr<std::byte, ::free> buf_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;
    bool holding_ = false;
    std::uint64_t requested_ = 0, done_ = 0;  // write_now() tickets
    std::vector<std::pair<std::uint64_t, std::function<void()>>> waiters_;  // woken once done_ reaches them
    std::uint64_t counter_ = 0;
    std::optional<lease_slot> peer_last_;
    lease_info info_;
    std::thread thread_;
};

}  // namespace tandem::agent
