// agent: the host-state transition table.
#include "tandem/agent/state.hpp"

namespace tandem::agent {

std::string_view to_string(host_state s) noexcept {
    switch (s) {
        case host_state::initializing: return "INITIALIZING";
        case host_state::standby: return "STANDBY";
        case host_state::synchronizing: return "SYNCHRONIZING";
        case host_state::active: return "ACTIVE";
        case host_state::failed: return "FAILED";
        case host_state::setting_offline: return "SETTING_OFFLINE";
        case host_state::setting_online: return "SETTING_ONLINE";
        case host_state::needs_upgrade: return "NEEDS_UPGRADE";
        case host_state::restoring: return "RESTORING";
        case host_state::unknown: return "UNKNOWN";
    }
    return "INVALID";
}

std::string_view to_string(host_mode m) noexcept { return m == host_mode::offline ? "OFFLINE" : "ONLINE"; }

std::string_view to_string(sync_state s) noexcept {
    switch (s) {
        case sync_state::none: return "NONE";
        case sync_state::up_to_date: return "UPTODATE";
        case sync_state::synchronizing: return "SYNCHRONIZING";
        case sync_state::inconsistent: return "INCONSISTENT";
        case sync_state::diverged: return "DIVERGED";
        case sync_state::outdated: return "OUTDATED";
    }
    return "INVALID";
}

bool valid_state(std::uint8_t v) noexcept { return v >= 1 && v <= 10; }
bool valid_mode(std::uint8_t v) noexcept { return v == 1 || v == 2; }
bool valid_sync(std::uint8_t v) noexcept { return v <= 5; }
bool promotable(sync_state s) noexcept { return s == sync_state::none || s == sync_state::up_to_date; }

transition_verdict check_transition(host_state from, host_state to) noexcept {
    using S = host_state;
    if (from == to) return {false, "already in that state"};
    if (to == S::unknown) return {false, "UNKNOWN describes only a peer that is not heard"};
    if (from == S::unknown) return {false, "a node never is UNKNOWN to itself"};
    if (to == S::failed) return {true, "a local health check failed"};
    switch (to) {
        case S::active:
            switch (from) {
                case S::initializing: return {true, "listened for one timeout and heard no active peer"};
                case S::standby: return {true, "taking over"};
                case S::setting_online: return {true, "online again and no peer is active"};
                case S::synchronizing:
                    return {false, "data is still synchronizing; promoting it would lose writes"};
                case S::failed: return {false, "a failed node must be repaired before it can be active"};
                case S::needs_upgrade:
                    return {false, "the peer runs other software; no failover until both versions match"};
                case S::setting_offline: return {false, "the node is going offline"};
                case S::restoring: return {false, "the node is being restored and has no complete data"};
                default: break;
            }
            break;
        case S::standby:
            switch (from) {
                case S::initializing: return {true, "heard the peer"};
                case S::active: return {true, "released the VIP and services"};
                case S::synchronizing: return {true, "synchronization finished"};
                case S::failed: return {true, "health checks pass again"};
                case S::setting_offline: return {true, "offline: resources released"};
                case S::setting_online: return {true, "online again"};
                case S::needs_upgrade: return {true, "software versions match again"};
                case S::restoring: return {true, "restore finished"};
                default: break;
            }
            break;
        case S::synchronizing:
            switch (from) {
                case S::initializing:
                case S::standby:
                case S::restoring: return {true, "resynchronizing from the active peer"};
                case S::active: return {false, "the active node is the synchronization source, never the target"};
                default: return {false, "only a standby or restoring node synchronizes"};
            }
        case S::setting_offline:
            switch (from) {
                case S::active:
                case S::standby:
                case S::synchronizing:
                case S::initializing:
                case S::needs_upgrade: return {true, "the operator set the node offline"};
                default: return {false, "the node cannot be set offline from this state"};
            }
        case S::setting_online:
            if (from == S::standby) return {true, "the operator set the node online"};
            return {false, "only an offline standby can be set online"};
        case S::needs_upgrade:
            if (from == S::active) return {false, "an active node stays active when the peer's version differs"};
            return {true, "the peer runs other software"};
        case S::restoring:
            if (from == S::active) return {false, "an active node cannot be restored; fail over first"};
            return {true, "the operator started a restore"};
        case S::initializing: return {false, "a node initializes only when tandemd starts"};
        default: break;
    }
    return {false, "no such transition"};
}

}  // namespace tandem::agent
