// agent: /store on the active node — failover phase 1: promote, expose, check, mount; and who holds it.
#pragma once

#include "tandem/agent/config.hpp"
#include "tandem/agent/drbd.hpp"
#include "tandem/agent/failover.hpp"
#include "tandem/agent/lease.hpp"
#include "tandem/replication/engine.hpp"
#include "tandem/replication/frontend.hpp"

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace tandem::agent {

// A process that keeps a mounted file system busy, and how.
struct store_holder {
    pid_t pid = 0;
    std::string comm;
    std::string how;  // "cwd", "fd 3 (/store/db/log)", "mapped", "root"
};
// Every process with its cwd, root, an open file or a mapping on the file system mounted at `mount`.
[[nodiscard]] std::vector<store_holder> store_holders(const std::string& mount);
// "pid 123 (sleep: cwd), pid 456 (java: fd 7 (/store/x))"
[[nodiscard]] std::string describe(const std::vector<store_holder>& h);

struct store_status {
    bool mounted = false;
    std::string mount, fstype, device;
    std::string frontend;  // "fuse+loop", "nbd", "shared" or "" when not exposed
    std::string last_error;
};

// Phase 1 of the failover sequence for backends "uring", "drbd" and "shared"
// (docs/live-store.md, docs/drbd.md). Acquire: promote the engine (a new generation),
// expose its volume, create the file system on a brand-new cluster's primary
// only, check it, mount it. Release: refuse while processes hold /store (named),
// unmount, detach, demote.
class store_phase final : public failover_phase {
public:
    // `e` is null for backends "drbd" (then `d` is set: drbdadm primary and
    // secondary, /dev/drbdN) and "shared" (the device is mounted as it is).
    // `lease`: backend "shared" with a lease device; the slot says "holding"
    // from before the device is checked until after it is unmounted.
    store_phase(const config& c, replication::engine* e, const drbd::backend* d = nullptr, lease_keeper* lease = nullptr);
    ~store_phase() override;
    std::string_view name() const override { return "storage"; }
    boost::asio::awaitable<phase_outcome> acquire() override;
    boost::asio::awaitable<phase_outcome> release(release_kind how) override;

    [[nodiscard]] store_status status() const;
    // Why /store cannot be released now ("" when it can): the holders, named.
    [[nodiscard]] std::string busy() const;
    // At start-up: a mount left by a crashed tandemd (its FUSE server gone) is detached.
    void recover_stale();

private:
    [[nodiscard]] bool mounted() const;
    boost::asio::awaitable<phase_outcome> prepare_file_system(const std::string& dev);
    // A forced release: SIGTERM, then SIGKILL after [store] kill_after, to the
    // processes holding /store; what happened to each, for the phase's detail.
    boost::asio::awaitable<std::string> stop_holders();
    const config& c_;
    replication::engine* e_;
    const drbd::backend* d_;
    lease_keeper* lease_;
    std::unique_ptr<replication::frontend> fe_;
    std::string device_;
    std::string last_error_;
};

}  // namespace tandem::agent
