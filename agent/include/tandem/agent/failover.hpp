// agent: the failover sequence — ordered, timed phases (storage, alias, VIP, services, announce).
#pragma once

#include "tandem/agent/config.hpp"
#include "tandem/agent/event_bus.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::agent {

struct phase_outcome {
    enum class kind : std::uint8_t { done, nothing_to_do, failed } outcome = kind::done;
    std::string detail;  // what was done, why there was nothing to do, or what failed

    static phase_outcome done(std::string d = "") { return {kind::done, std::move(d)}; }
    static phase_outcome nothing(std::string d) { return {kind::nothing_to_do, std::move(d)}; }
    static phase_outcome failed(std::string d) { return {kind::failed, std::move(d)}; }
};

// Whether a release may stop short of done: one the operator or the peer asked
// for leaves a busy /store alone and fails; a forced one (a health failure, a
// lost collision, undoing a failed acquire) cannot wait, and ends its holders.
enum class release_kind : std::uint8_t { requested, forced };

// One step of the seeds' "HA Failover Event Sequence". acquire() and release()
// are idempotent: release() after a partial acquire undoes what exists.
class failover_phase {
public:
    virtual ~failover_phase() = default;
    [[nodiscard]] virtual std::string_view name() const = 0;
    virtual boost::asio::awaitable<phase_outcome> acquire() = 0;
    virtual boost::asio::awaitable<phase_outcome> release(release_kind how) = 0;
};

struct sequence_report {
    bool ok = true;
    std::string detail;
    std::chrono::microseconds total{0};
};

// Runs the phases in order to acquire and in reverse to release, publishing
// one "failover.phase" event per phase with its duration. An acquire stops at
// the first failed phase; a release runs every phase and reports all failures.
class failover_sequence {
public:
    explicit failover_sequence(std::vector<std::unique_ptr<failover_phase>> phases) : phases_(std::move(phases)) {}
    boost::asio::awaitable<sequence_report> acquire(event_bus& bus);
    boost::asio::awaitable<sequence_report> release(event_bus& bus, release_kind how);
    [[nodiscard]] std::vector<std::string> names() const;

private:
    boost::asio::awaitable<sequence_report> run(event_bus& bus, bool acquiring, release_kind how);
    std::vector<std::unique_ptr<failover_phase>> phases_;
};

// Phase 1 for backend "none": /store stays local, nothing is promoted.
std::unique_ptr<failover_phase> make_local_storage_phase();
// Phase 4: the [services] start/stop hooks, with TANDEM_* variables in their environment.
std::unique_ptr<failover_phase> make_services_phase(const config& c);

}  // namespace tandem::agent
