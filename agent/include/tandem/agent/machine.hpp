// agent: the pure HA decision machine — who is active, when to fail over, what the operator may do.
#pragma once

#include "tandem/agent/config.hpp"
#include "tandem/agent/state.hpp"
#include "tandem/base/clock.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tandem::agent {

struct machine_params {
    node_role role = node_role::primary;
    std::string version;
    std::chrono::milliseconds interval{10'000};
    std::chrono::milliseconds timeout{30'000};
    bool connectivity_configured = false;
    std::chrono::milliseconds connectivity_interval{10'000};  // the active node's periodic test
    std::chrono::milliseconds connectivity_retry{1000};       // a standby's retry after a failed test
    // Shared storage with a lease device ([replication] lease_device): a silent
    // peer is only claimed over once its lease slot has expired (lease_info).
    bool lease_configured = false;
    // The activation generation this node last claimed with, kept across restarts.
    std::uint64_t generation = 0;
};

// How long a peer's lease slot must stay unchanged before it counts as dead:
// twice the heartbeat timeout, so an active node whose own writes stopped (it
// gives up ACTIVE after one timeout) has let go of the shared device before.
[[nodiscard]] constexpr std::chrono::milliseconds lease_expiry(std::chrono::milliseconds heartbeat_timeout) {
    return 2 * heartbeat_timeout;
}

// The lease on shared storage as this node's keeper saw it at its last turn
// (docs/shared-storage-lease.md).
struct lease_info {
    std::string device;
    bool ok = false;                          // the last turn wrote our slot and read the peer's
    std::string error;                        // why not
    steady_time renewed{};                    // our slot last written
    steady_time renew_started{};              // when that write was issued: the peer may see it from then on
    bool wants_holding = false;               // the flag this node last asked for, written or not
    std::optional<steady_time> peer_changed;  // when the peer's slot was last seen to change
    bool holding = false;                     // what our slot says
    bool peer_holding = false;                // what the peer's slot says
    std::uint64_t peer_counter = 0;
    std::string peer_node;                    // "" while the peer's slot is blank
    // Whether the peer's slot changed within `expiry`: its tandemd is running.
    [[nodiscard]] bool peer_alive(steady_time now, std::chrono::milliseconds expiry) const {
        return peer_changed && now - *peer_changed < expiry;
    }
};

// What the peer told us in its last authenticated heartbeat.
struct peer_info {
    node_role role = node_role::secondary;
    host_state state = host_state::initializing;
    host_mode mode = host_mode::online;
    sync_state sync = sync_state::none;
    std::uint16_t flags = 0;
    std::uint16_t sync_permille = 0;
    std::uint64_t generation = 0;
    std::string version;
};

// One entry of the event stream; `id` is a stable message id.
struct event {
    std::string id;
    std::string message;
    std::vector<std::pair<std::string, std::string>> fields;
};

enum class sequence_kind : std::uint8_t { none, acquire, release };

// What the runtime must do after an input: never more than one sequence at a time.
struct effects {
    std::vector<event> events;
    sequence_kind sequence = sequence_kind::none;
    bool run_connectivity_test = false;
    bool send_now = false;  // state changed: tell the peer without waiting for the interval
    // With sequence == release: the release cannot wait for the operator (a
    // health failure, a lost collision, a failed acquire), so processes still
    // holding /store after the stop hook are terminated rather than refused.
    bool forced_release = false;
};

enum class command : std::uint8_t { takeover, giveback, offline, online };
[[nodiscard]] std::string_view to_string(command c) noexcept;

struct command_reply {
    bool ok = false;
    std::string message;
};

class ha_machine {
public:
    ha_machine(machine_params p, steady_time now);

    effects on_tick(steady_time now);
    effects on_heartbeat(steady_time now, const peer_info& peer);
    effects on_connectivity(steady_time now, bool ok, const std::string& detail);
    effects on_health(steady_time now, bool ok, const std::string& detail);
    effects on_local_sync(steady_time now, sync_state s);
    effects on_sequence_done(steady_time now, bool ok, const std::string& detail);
    effects on_shutdown(steady_time now);
    effects on_lease(steady_time now, const lease_info& l);
    std::pair<command_reply, effects> on_command(steady_time now, command c);
    // A reload: timing and connectivity change; role and version never do
    // (plan_reload refuses those).
    void set_params(const machine_params& p);

    // The earliest time at which on_tick may change something.
    [[nodiscard]] steady_time next_deadline() const;

    [[nodiscard]] host_state state() const { return state_; }
    [[nodiscard]] host_mode mode() const { return mode_; }
    [[nodiscard]] sync_state local_sync() const { return local_sync_; }
    [[nodiscard]] std::uint64_t generation() const { return generation_; }
    [[nodiscard]] std::uint16_t outgoing_flags() const;
    [[nodiscard]] bool peer_alive(steady_time now) const;
    [[nodiscard]] bool peer_ever_heard() const { return peer_.has_value(); }
    [[nodiscard]] const std::optional<peer_info>& peer() const { return peer_; }
    [[nodiscard]] bool collision() const { return collision_; }
    [[nodiscard]] bool busy() const { return busy_ != sequence_kind::none; }
    [[nodiscard]] bool healthy() const { return health_ok_; }
    [[nodiscard]] const std::string& health_detail() const { return health_detail_; }
    [[nodiscard]] const std::string& blocked_reason() const { return blocked_; }
    [[nodiscard]] const machine_params& params() const { return p_; }
    [[nodiscard]] std::chrono::milliseconds lease_expiry() const { return agent::lease_expiry(p_.timeout); }
    [[nodiscard]] const std::optional<lease_info>& lease() const { return lease_; }

private:
    enum class test_purpose : std::uint8_t { none, peer_lost, peer_asked, periodic };

    void evaluate(steady_time now, effects& e);
    void evaluate_standby(steady_time now, effects& e);
    void evaluate_active(steady_time now, effects& e);
    void transition(host_state to, const std::string& why, effects& e);
    void claim(const std::string& why, effects& e);
    void release(host_state then, host_mode mode_after, bool handover, bool forced, const std::string& why, effects& e);
    void start_test(test_purpose why, effects& e);
    void block(const std::string& why, effects& e);  // report once why a failover does not happen
    [[nodiscard]] std::optional<std::string> pairing_problem() const;
    // Whether a version mismatch makes this node NEEDS_UPGRADE: the node that
    // is not active; with neither active, the secondary (the seeds: "the
    // secondary requires an upgrade; the primary remains active").
    [[nodiscard]] bool needs_upgrade_now(steady_time now) const;
    [[nodiscard]] bool test_wanted() const;
    void listen(steady_time now);  // start (or restart, on rejoining) one timeout of listening  // a connectivity test is due at next_test_at_
    [[nodiscard]] bool peer_can_take_over(steady_time now, std::string& why) const;
    // With a lease: why this node must not claim over a peer silent on every
    // link ("" when it may).
    [[nodiscard]] std::string lease_objection(steady_time now) const;

    machine_params p_;
    host_state state_ = host_state::initializing;
    host_mode mode_ = host_mode::online;
    sync_state local_sync_ = sync_state::none;
    steady_time listen_until_;
    bool listening_ = true;  // listen_until_ is still ahead: no claim on a silent peer before it

    std::optional<peer_info> peer_;
    steady_time last_heard_{};
    bool peer_was_alive_ = false;

    sequence_kind busy_ = sequence_kind::none;
    host_state release_to_ = host_state::standby;
    host_mode release_mode_ = host_mode::online;
    bool release_handover_ = false;

    bool health_ok_ = true;
    std::string health_detail_;

    test_purpose test_running_ = test_purpose::none;
    bool lost_test_passed_ = false;
    bool connectivity_lost_ = false;  // as the active node
    steady_time next_test_at_{};

    bool request_takeover_ = false;
    steady_time request_until_{};  // an unanswered takeover request expires
    bool acquire_failed_ = false;  // FAILED until the operator clears it (tandemctl online)
    bool handover_ = false;  // we released on purpose; the peer should claim
    steady_time handover_until_{};
    bool shutting_down_ = false;
    bool collision_ = false;
    std::uint64_t generation_ = 0;
    std::string blocked_;
    std::optional<lease_info> lease_;
    std::optional<steady_time> lease_wait_;  // a claim waits for the peer's live slot to expire then
};

}  // namespace tandem::agent
