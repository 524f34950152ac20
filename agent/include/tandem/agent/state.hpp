// agent: host states of the vendor guides and the pure transition check.
#pragma once

#include <cstdint>
#include <string_view>

namespace tandem::agent {

// What a node is doing. Each comment says what the node does there and which
// hazard the state guards against.
enum class host_state : std::uint8_t {
    // Listening for the peer for one heartbeat timeout; holds nothing.
    // Guards against claiming the VIP at boot while an active peer exists (split brain).
    initializing = 1,
    // Ready to take over: no services, no VIP; receives replication.
    standby = 2,
    // A standby whose data is still catching up; must not become active (lost writes).
    synchronizing = 3,
    // Holds the VIP and /store, runs services; the replication source.
    active = 4,
    // A local health check failed (store unwritable, disk failure); holds nothing
    // until repaired. Guards against serving from a broken store.
    failed = 5,
    // Operator asked for Offline: releasing everything before maintenance.
    setting_offline = 6,
    // Operator asked for Online: leaving maintenance.
    setting_online = 7,
    // The peer runs other software: no pairing, no failover. Guards against a
    // takeover by a node that may not read the other's data.
    needs_upgrade = 8,
    // Being restored after a reset: re-pairing and receiving a full resync.
    restoring = 9,
    // Only for the peer: never heard, or silent for the timeout.
    unknown = 10,
};

enum class host_mode : std::uint8_t { online = 1, offline = 2 };

// The replication summary a node advertises (the seeds' Synchronizing status).
enum class sync_state : std::uint8_t {
    none = 0,           // no replication backend: nothing to synchronize
    up_to_date = 1,     // data identical to the peer's or this node is the source
    synchronizing = 2,  // resync running
    inconsistent = 3,   // partial data: never promote
    diverged = 4,       // split brain: both sides wrote; the operator must choose
    outdated = 5,       // the active wrote without this node: a consistent but old copy; never promote
};

[[nodiscard]] std::string_view to_string(host_state s) noexcept;  // "ACTIVE", "STANDBY", ...
[[nodiscard]] std::string_view to_string(host_mode m) noexcept;   // "ONLINE" | "OFFLINE"
[[nodiscard]] std::string_view to_string(sync_state s) noexcept;  // "NONE", "UPTODATE", ...
[[nodiscard]] bool valid_state(std::uint8_t v) noexcept;
[[nodiscard]] bool valid_mode(std::uint8_t v) noexcept;
[[nodiscard]] bool valid_sync(std::uint8_t v) noexcept;
// Whether data in this sync state may be promoted to active.
[[nodiscard]] bool promotable(sync_state s) noexcept;

struct transition_verdict {
    bool allowed;
    std::string_view reason;  // why it is refused, or what the transition means
};

// Pure: whether a node may move from one state to another. Every refusal has a
// named reason that tandemctl shows to the operator.
[[nodiscard]] transition_verdict check_transition(host_state from, host_state to) noexcept;

}  // namespace tandem::agent
