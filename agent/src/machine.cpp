// agent: the HA rules of the vendor guides as one pure function of the facts a node knows.
#include "tandem/agent/machine.hpp"

#include "tandem/agent/heartbeat_codec.hpp"
#include "tandem/base/duration.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace tandem::agent {

std::string_view to_string(command c) noexcept {
    switch (c) {
        case command::takeover: return "takeover";
        case command::giveback: return "giveback";
        case command::offline: return "offline";
        case command::online: return "online";
    }
    return "?";
}

ha_machine::ha_machine(machine_params p, steady_time now) : p_(std::move(p)), generation_(p_.generation) { listen(now); }

void ha_machine::listen(steady_time now) {
    listen_until_ = now + p_.timeout;
    listening_ = true;
}

bool ha_machine::peer_alive(steady_time now) const { return peer_ && now - last_heard_ < p_.timeout; }

std::uint16_t ha_machine::outgoing_flags() const {
    std::uint16_t f = 0;
    if (request_takeover_) f |= hb_request_takeover;
    if (handover_) f |= hb_handover;
    if (connectivity_lost_ && state_ == host_state::active) f |= hb_connectivity_lost;
    if (shutting_down_) f |= hb_shutting_down;
    return f;
}

steady_time ha_machine::next_deadline() const {
    steady_time t = steady_time::max();
    if (listening_) t = std::min(t, listen_until_);
    if (peer_ && peer_was_alive_) t = std::min(t, last_heard_ + p_.timeout);
    // A standby that is still listening starts no test before it stops
    // listening: a deadline in the past would make the watchdog spin.
    if (test_wanted())
        t = std::min(t, listening_ ? std::max(next_test_at_, listen_until_) : next_test_at_);
    if (handover_) t = std::min(t, handover_until_);
    if (request_takeover_ && state_ == host_state::standby) t = std::min(t, request_until_);
    // The active node's own lease must keep being renewed; a claim held back
    // by the peer's live slot may go ahead once that slot expires. Both are
    // checked here too, not only when the keeper reports: its thread may be
    // stuck in I/O on a hung device. Neither deadline is ever in the past
    // while it stands, or the watchdog would spin: the first starts a release
    // (busy), the second is only set while the slot is live.
    if (lease_ && state_ == host_state::active && busy_ == sequence_kind::none)
        t = std::min(t, lease_->renewed + p_.timeout);
    if (lease_wait_) t = std::min(t, *lease_wait_);
    return t;
}

bool ha_machine::test_wanted() const {
    if (!p_.connectivity_configured || test_running_ != test_purpose::none || busy_ != sequence_kind::none)
        return false;
    if (state_ == host_state::active) return true;  // the periodic test
    if (state_ != host_state::standby || mode_ != host_mode::online) return false;
    if (!peer_was_alive_) return !lost_test_passed_;  // retry after a failed test
    return peer_->state == host_state::active && (peer_->flags & hb_connectivity_lost) && !request_takeover_;
}

void ha_machine::set_params(const machine_params& p) {
    auto role = p_.role;
    auto version = p_.version;
    p_ = p;
    p_.role = role;
    p_.version = version;
}

void ha_machine::transition(host_state to, const std::string& why, effects& e) {
    auto v = check_transition(state_, to);
    if (!v.allowed) {
        e.events.push_back({"state.refused",
                            fmt::format("{} -> {} refused: {}", to_string(state_), to_string(to), v.reason),
                            {{"from", std::string(to_string(state_))}, {"to", std::string(to_string(to))}}});
        return;
    }
    e.events.push_back({"state.changed",
                        fmt::format("{} -> {}: {}", to_string(state_), to_string(to), why),
                        {{"from", std::string(to_string(state_))},
                         {"to", std::string(to_string(to))},
                         {"mode", std::string(to_string(mode_))},
                         {"reason", why}}});
    state_ = to;
    blocked_.clear();
    e.send_now = true;
    if (to != host_state::standby) request_takeover_ = false;  // a request is only a standby's
}

void ha_machine::block(const std::string& why, effects& e) {
    if (blocked_ == why) return;
    blocked_ = why;
    e.events.push_back({"failover.blocked", why, {{"reason", why}}});
}

void ha_machine::claim(const std::string& why, effects& e) {
    if (!check_transition(state_, host_state::active).allowed) {
        transition(host_state::active, why, e);  // logs the refusal with its reason
        return;
    }
    generation_ = std::max(generation_, peer_ ? peer_->generation : 0) + 1;
    transition(host_state::active, why, e);
    request_takeover_ = false;
    handover_ = false;
    lost_test_passed_ = false;
    collision_ = false;
    busy_ = sequence_kind::acquire;
    e.sequence = sequence_kind::acquire;
    e.events.push_back({"failover.start", "acquiring: storage, alias, VIP, services, announce",
                        {{"generation", std::to_string(generation_)}, {"reason", why}}});
}

void ha_machine::release(host_state then, host_mode mode_after, bool handover, bool forced, const std::string& why,
                         effects& e) {
    busy_ = sequence_kind::release;
    release_to_ = then;
    release_mode_ = mode_after;
    release_handover_ = handover;
    e.sequence = sequence_kind::release;
    e.forced_release = forced;
    e.send_now = true;
    e.events.push_back({"release.start", "releasing: announce, services, VIP, alias, storage", {{"reason", why}}});
}

void ha_machine::start_test(test_purpose why, effects& e) {
    test_running_ = why;
    e.run_connectivity_test = true;
}

std::optional<std::string> ha_machine::pairing_problem() const {
    if (!peer_) return std::nullopt;
    if (peer_->role == p_.role)
        return fmt::format("both nodes are configured as {}; one must be primary and one secondary",
                           to_string(p_.role));
    if (peer_->version != p_.version)
        return fmt::format("the peer runs version {} and this node {}; no pairing or failover until they match",
                           peer_->version, p_.version);
    return std::nullopt;
}

bool ha_machine::needs_upgrade_now(steady_time now) const {
    if (!peer_alive(now) || peer_->version == p_.version) return false;
    return peer_->state == host_state::active || p_.role == node_role::secondary;
}

bool ha_machine::peer_can_take_over(steady_time now, std::string& why) const {
    if (!peer_alive(now)) why = "the peer is not heard";
    else if (peer_->state != host_state::standby) why = fmt::format("the peer is {}", to_string(peer_->state));
    else if (peer_->mode != host_mode::online) why = "the peer is OFFLINE";
    else if (!promotable(peer_->sync))
        why = fmt::format("the peer's data is {} (not synchronized)", to_string(peer_->sync));
    else return true;
    return false;
}

void ha_machine::evaluate(steady_time now, effects& e) {
    const bool alive = peer_alive(now);
    lease_wait_.reset();  // set again below while a claim waits for the peer's slot to expire
    if (peer_ && alive != peer_was_alive_) {
        peer_was_alive_ = alive;
        if (alive) {
            e.events.push_back({"peer.found", "heartbeats from the peer", {}});
        } else {
            e.events.push_back({"peer.lost",
                                fmt::format("no heartbeat on any link for {}", format_duration(p_.timeout)),
                                {{"timeout_ms", std::to_string(p_.timeout.count())}}});
            lost_test_passed_ = false;
        }
    }
    if (handover_ && (now >= handover_until_ || (alive && peer_->state == host_state::active))) handover_ = false;
    if (listening_ && now >= listen_until_) listening_ = false;
    if (busy_ != sequence_kind::none) return;  // one sequence at a time; re-evaluated when it completes

    if (!health_ok_ && state_ != host_state::failed && state_ != host_state::active) {
        transition(host_state::failed, health_detail_, e);
        return;
    }
    switch (state_) {
        case host_state::initializing: {
            auto problem = alive ? pairing_problem() : std::nullopt;
            if (problem && peer_->role != p_.role && peer_->version != p_.version) {
                if (needs_upgrade_now(now)) transition(host_state::needs_upgrade, *problem, e);
                else if (now >= listen_until_ && mode_ == host_mode::online && promotable(local_sync_))
                    claim("listened for one timeout; the peer runs other software and is not active", e);
                else if (now >= listen_until_)
                    transition(host_state::standby, "listened for one timeout; the peer runs other software", e);
            } else if (problem) {
                block(*problem, e);
            } else if (alive && peer_->state == host_state::active) {
                transition(host_state::standby, "the peer is active", e);
            } else if (alive && p_.role == node_role::secondary) {
                transition(host_state::standby, "heard the primary", e);
            } else if (now >= listen_until_) {
                // A primary whose data is not up to date (a new or replaced
                // disk) must not claim: it waits as standby for a resync.
                if (p_.role == node_role::primary && mode_ == host_mode::online && promotable(local_sync_) &&
                    lease_objection(now).empty())
                    claim(fmt::format("listened for {} and heard no active peer", format_duration(p_.timeout)), e);
                else
                    transition(host_state::standby, "listened for one timeout", e);
                if (state_ == host_state::standby) evaluate_standby(now, e);
            }
            break;
        }
        case host_state::standby:
            evaluate_standby(now, e);
            break;
        case host_state::active:
            evaluate_active(now, e);
            break;
        case host_state::failed:
            if (health_ok_ && !acquire_failed_) {
                // Rejoining: the peer's heartbeats may not have reached us yet
                // (a link that just came back). Listen for one timeout before a
                // silent peer counts as lost, exactly as at start-up.
                listen(now);
                transition(host_state::standby, "health checks pass again", e);
            }
            break;
        case host_state::needs_upgrade:
            // Only a peer heard with the same version ends this state, or a
            // primary whose peer is no longer active; a silent peer does not, or
            // a node that cannot read the other's data would take over.
            if (alive && (!pairing_problem() || !needs_upgrade_now(now))) {
                listen(now);
                transition(host_state::standby, pairing_problem() ? "the peer is not active" : "software versions match", e);
                if (state_ == host_state::standby) evaluate_standby(now, e);
            }
            break;
        case host_state::setting_online:
            transition(host_state::standby, "online again", e);
            evaluate_standby(now, e);
            break;
        case host_state::synchronizing:
            if (promotable(local_sync_)) {
                transition(host_state::standby, "synchronization finished", e);
            } else if (!alive && !listening_) {
                // Said once, for the operator who wonders why nobody took over.
                block(fmt::format("the peer is not heard and this node's data is {}: no takeover{}",
                                  to_string(local_sync_),
                                  local_sync_ == sync_state::outdated
                                      ? " (if the active node is lost for good, 'tandemctl takeover --force' promotes "
                                        "this copy and gives up what the lost node wrote after the replication link "
                                        "went down)"
                                      : ""),
                      e);
            } else if (alive) {
                blocked_.clear();
            }
            break;
        default:
            break;
    }
}

void ha_machine::evaluate_standby(steady_time now, effects& e) {
    const bool alive = peer_alive(now);
    if (auto problem = alive ? pairing_problem() : std::nullopt) {
        if (peer_->role == p_.role || peer_->version == p_.version) {
            block(*problem, e);
            return;
        }
        if (needs_upgrade_now(now)) {
            transition(host_state::needs_upgrade, *problem, e);
            return;
        }
        // A primary whose other-version peer is not active goes on below and
        // claims: the seeds keep the primary active while the secondary waits.
    }
    if (request_takeover_ && now >= request_until_) {
        request_takeover_ = false;
        e.send_now = true;
        e.events.push_back({"takeover.expired",
                            fmt::format("the active node did not hand over within {}; takeover cancelled",
                                        format_duration(p_.timeout)),
                            {}});
    }
    if (!promotable(local_sync_)) {
        transition(host_state::synchronizing, "local data is not up to date", e);
        return;
    }
    if (mode_ == host_mode::offline) {
        if (!alive || peer_->state != host_state::active) block("this node is OFFLINE: no failover until it is set online", e);
        return;
    }
    if (alive) {
        const auto& pr = *peer_;
        if (pr.state == host_state::active) {
            blocked_.clear();
            // The seeds' controlled failover: the active lost its targets; if we reach
            // them, ask it to hand over.
            if ((pr.flags & hb_connectivity_lost) && !request_takeover_ && test_running_ == test_purpose::none &&
                now >= next_test_at_)
                start_test(test_purpose::peer_asked, e);
            return;
        }
        if (handover_) return;  // we just released for the peer: let it claim
        std::string why;
        if (pr.flags & hb_handover) why = fmt::format("the peer handed over ({})", to_string(pr.state));
        else if (pr.flags & hb_shutting_down) why = "the peer is shutting down";
        else if (pr.state == host_state::failed) why = "the peer FAILED";
        else if (pr.mode == host_mode::offline) why = "the peer is OFFLINE";
        else if (pr.state == host_state::synchronizing || pr.state == host_state::restoring ||
                 pr.state == host_state::needs_upgrade)
            why = fmt::format("no node is active and the peer is {}", to_string(pr.state));
        else if ((pr.state == host_state::standby || pr.state == host_state::initializing) &&
                 (p_.role == node_role::primary || pr.role == node_role::secondary) &&
                 !(pr.state == host_state::initializing && pr.role == node_role::primary))
            why = "no node is active; the primary claims";  // deterministic: never both
        if (why.empty()) return;
        // A peer that let go may not have been able to say so on the lease
        // device (its storage path hangs): its slot still says it holds the
        // device. The storage phase would refuse to mount, and the node would
        // be FAILED for good; wait instead until the slot lets go or expires.
        if (lease_ && lease_->ok && lease_->peer_holding && lease_->peer_alive(now, lease_expiry())) {
            lease_wait_ = *lease_->peer_changed + lease_expiry();
            block(fmt::format("{}, but its slot on the lease device {} still says it holds /store: waiting until it "
                              "lets go or the slot has not changed for {}",
                              why, lease_->device, format_duration(lease_expiry())),
                  e);
            return;
        }
        claim(why, e);
        return;
    }
    // The peer is silent on every link.
    if (listening_) return;  // just started or rejoined: listen first
    if (auto why = lease_objection(now); !why.empty()) {
        if (lease_ && lease_->peer_alive(now, lease_expiry())) lease_wait_ = *lease_->peer_changed + lease_expiry();
        block("the peer is silent on every link, but " + why, e);
        return;
    }
    if (!p_.connectivity_configured) {
        claim(fmt::format("peer lost for {}; no connectivity targets configured", format_duration(p_.timeout)), e);
    } else if (lost_test_passed_) {
        claim(fmt::format("peer lost for {}; connectivity test passed", format_duration(p_.timeout)), e);
    } else if (test_running_ == test_purpose::none && now >= next_test_at_) {
        start_test(test_purpose::peer_lost, e);
    }
}

void ha_machine::evaluate_active(steady_time now, effects& e) {
    const bool alive = peer_alive(now);
    if (!health_ok_) {
        release(host_state::failed, mode_, true, true, "local health check failed: " + health_detail_, e);
        return;
    }
    if (lease_ && now - lease_->renewed >= p_.timeout) {
        // The peer may take the shared device once our slot has not changed for
        // lease_expiry(): let go of it well before.
        release(host_state::standby, mode_, true, true,
                fmt::format("this node's lease on {} was not renewed for {} ({}): giving up /store before the peer "
                            "may take it over",
                            lease_->device, format_duration(p_.timeout),
                            lease_->error.empty() ? "the write did not finish" : lease_->error),
                e);
        return;
    }
    if (alive && peer_->state == host_state::active) {
        // Two actives after a healed partition (the seeds' collision). The higher
        // activation generation took over last and keeps the VIP; a tie goes to
        // the primary. Both nodes compute the same answer.
        bool we_win = generation_ != peer_->generation ? generation_ > peer_->generation : p_.role == node_role::primary;
        if (!collision_) {
            collision_ = true;
            e.events.push_back({"collision.detected",
                                fmt::format("both nodes are ACTIVE (generations {} here, {} on the peer); {}",
                                            generation_, peer_->generation,
                                            we_win ? "this node stays active" : "this node steps down"),
                                {{"local_generation", std::to_string(generation_)},
                                 {"peer_generation", std::to_string(peer_->generation)},
                                 {"winner", we_win ? "local" : "peer"}}});
        }
        if (!we_win) release(host_state::standby, mode_, false, true, "collision: the peer keeps the VIP", e);
        return;
    }
    if (collision_ && (!alive || peer_->state != host_state::active)) {
        collision_ = false;
        e.events.push_back({"collision.resolved", "one node is active", {}});
    }
    std::string why_not;
    if (alive && (peer_->flags & hb_request_takeover)) {
        if (peer_can_take_over(now, why_not))
            release(host_state::standby, mode_, true, false, "the peer asked to take over", e);
        return;
    }
    if (p_.connectivity_configured && test_running_ == test_purpose::none && now >= next_test_at_)
        start_test(test_purpose::periodic, e);
}

effects ha_machine::on_tick(steady_time now) {
    effects e;
    evaluate(now, e);
    return e;
}

effects ha_machine::on_heartbeat(steady_time now, const peer_info& peer) {
    effects e;
    bool first = !peer_;
    peer_ = peer;
    last_heard_ = now;
    if (first) {
        peer_was_alive_ = true;
        e.events.push_back({"peer.found", fmt::format("heard the peer ({} {})", to_string(peer.role),
                                                      to_string(peer.state)),
                            {}});
    }
    evaluate(now, e);
    return e;
}

effects ha_machine::on_connectivity(steady_time now, bool ok, const std::string& detail) {
    effects e;
    auto purpose = std::exchange(test_running_, test_purpose::none);
    switch (purpose) {
        case test_purpose::peer_lost:
            if (ok) {
                lost_test_passed_ = true;
            } else {
                next_test_at_ = now + p_.connectivity_retry;
                block("peer lost but the connectivity test failed (" + detail +
                          "): not taking over, this node may be the one cut off",
                      e);
            }
            break;
        case test_purpose::peer_asked:
            next_test_at_ = now + p_.connectivity_retry;
            if (ok && state_ == host_state::standby) {
                request_takeover_ = true;
                request_until_ = now + p_.timeout;
                e.send_now = true;
                e.events.push_back({"connectivity.handover",
                                    "the active node lost its connectivity targets and this node reaches them: "
                                    "asking it to hand over",
                                    {}});
            }
            break;
        case test_purpose::periodic:
            next_test_at_ = now + p_.connectivity_interval;
            if (!ok != connectivity_lost_) {
                connectivity_lost_ = !ok;
                e.send_now = true;
                e.events.push_back({ok ? "connectivity.restored" : "connectivity.lost",
                                    ok ? "connectivity targets reachable again" : "connectivity test failed: " + detail,
                                    {}});
            }
            break;
        case test_purpose::none:
            break;
    }
    evaluate(now, e);
    return e;
}

effects ha_machine::on_health(steady_time now, bool ok, const std::string& detail) {
    effects e;
    if (ok != health_ok_) {
        e.events.push_back({ok ? "health.ok" : "health.failed", ok ? "local health checks pass" : detail, {}});
    }
    health_ok_ = ok;
    health_detail_ = ok ? "" : detail;
    evaluate(now, e);
    return e;
}

effects ha_machine::on_local_sync(steady_time now, sync_state s) {
    effects e;
    if (s != local_sync_) {
        local_sync_ = s;
        e.send_now = true;
    }
    evaluate(now, e);
    return e;
}

effects ha_machine::on_sequence_done(steady_time now, bool ok, const std::string& detail) {
    effects e;
    auto kind = std::exchange(busy_, sequence_kind::none);
    if (kind == sequence_kind::acquire) {
        if (ok) {
            e.events.push_back({"failover.complete", "this node is ACTIVE", {}});
        } else {
            // Undo whatever was acquired and let the peer claim. The failure
            // stays until the operator clears it: a broken start hook on both
            // nodes must not bounce the service between them.
            acquire_failed_ = true;
            transition(host_state::failed,
                       "failover sequence failed: " + detail + "; fix the cause, then run 'tandemctl online'", e);
            release(host_state::failed, mode_, true, true, "undoing a failed acquire", e);
            return e;
        }
    } else if (kind == sequence_kind::release) {
        e.events.push_back({"release.complete", ok ? "resources released" : "release finished with errors: " + detail,
                            {}});
        mode_ = release_mode_;
        if (collision_) {
            collision_ = false;
            e.events.push_back({"collision.resolved", "stepped down; the peer is the one active node", {}});
        }
        if (state_ != release_to_) transition(release_to_, release_handover_ ? "handed over to the peer" : "released", e);
        if (release_handover_) {
            handover_ = true;
            handover_until_ = now + p_.timeout;
        }
        e.send_now = true;
        if (shutting_down_) return e;
    }
    evaluate(now, e);
    return e;
}

effects ha_machine::on_lease(steady_time now, const lease_info& l) {
    effects e;
    lease_ = l;
    evaluate(now, e);
    return e;
}

std::string ha_machine::lease_objection(steady_time now) const {
    if (!p_.lease_configured) return "";
    if (!lease_) return "the lease on the shared storage has not been read yet";
    const auto& l = *lease_;
    if (!l.ok)
        return fmt::format("the lease device {} cannot be used ({}): the peer may still hold the shared device; no "
                           "takeover",
                           l.device, l.error);
    if (!l.peer_alive(now, lease_expiry())) return "";
    if (l.peer_holding)
        return fmt::format("its slot on the lease device {} is still being written and says it holds /store: no "
                           "takeover until the slot has not changed for {}",
                           l.device, format_duration(lease_expiry()));
    if (p_.role == node_role::secondary)
        return fmt::format("its slot on the lease device {} is still being written: it is running, and of two nodes "
                           "that cannot hear each other only the primary claims",
                           l.device);
    return "";  // the primary claims over a secondary that holds nothing
}

effects ha_machine::on_shutdown(steady_time now) {
    effects e;
    shutting_down_ = true;
    e.send_now = true;
    if (state_ == host_state::active && busy_ == sequence_kind::none)
        release(host_state::standby, mode_, true, false, "tandemd is stopping", e);
    (void)now;
    return e;
}

std::pair<command_reply, effects> ha_machine::on_command(steady_time now, command c) {
    effects e;
    auto refuse = [&](std::string why) {
        e.events.push_back({"command.refused", fmt::format("{} refused: {}", to_string(c), why),
                            {{"command", std::string(to_string(c))}, {"reason", why}}});
        return std::pair{command_reply{false, std::move(why)}, std::move(e)};
    };
    auto accept = [&](std::string what) {
        e.events.push_back({"command.accepted", fmt::format("{}: {}", to_string(c), what),
                            {{"command", std::string(to_string(c))}}});
        return std::pair{command_reply{true, std::move(what)}, std::move(e)};
    };
    if (busy_ != sequence_kind::none) return refuse("a failover sequence is running; try again when it finishes");
    std::string why;
    switch (c) {
        case command::takeover:
            if (state_ != host_state::standby)
                return refuse(fmt::format("takeover runs on the STANDBY node; this node is {}", to_string(state_)));
            if (mode_ == host_mode::offline) return refuse("this node is OFFLINE; set it online first");
            if (!peer_alive(now) || peer_->state != host_state::active)
                return refuse("the peer is not an active node that can hand over (it is " +
                              std::string(peer_alive(now) ? to_string(peer_->state) : "UNKNOWN") +
                              "); a standby takes over by itself when the active node is lost");
            if (!promotable(local_sync_))
                return refuse(fmt::format("this node's data is {}; wait until it is synchronized",
                                          to_string(local_sync_)));
            request_takeover_ = true;
            request_until_ = now + p_.timeout;
            e.send_now = true;
            return accept("takeover requested; waiting for the peer to release");
        case command::giveback:
            if (state_ != host_state::active)
                return refuse(fmt::format("giveback runs on the ACTIVE node; this node is {}", to_string(state_)));
            if (!peer_can_take_over(now, why)) return refuse(why + "; it cannot take over");
            release(host_state::standby, mode_, true, false, "operator giveback", e);
            return accept("releasing; the peer takes over");
        case command::offline:
            if (mode_ == host_mode::offline) return refuse("this node is already OFFLINE");
            if (state_ == host_state::active) {
                if (!peer_can_take_over(now, why))
                    return refuse(why + "; setting the active node offline would leave no node active");
                transition(host_state::setting_offline, "operator: set offline (manual failover)", e);
                release(host_state::standby, host_mode::offline, true, false, "operator set the active node offline", e);
                return accept("releasing; the peer takes over; this node stays OFFLINE");
            }
            // A node that holds nothing changes mode at once; Setting Offline is
            // only visible where there is something to release.
            mode_ = host_mode::offline;
            request_takeover_ = false;
            e.events.push_back({"mode.changed", "ONLINE -> OFFLINE", {{"mode", "OFFLINE"}}});
            e.send_now = true;
            return accept("OFFLINE: replication continues, no failover until set online");
        case command::online: {
            if (state_ == host_state::failed && acquire_failed_) {
                if (!health_ok_) return refuse("health checks still fail: " + health_detail_);
                acquire_failed_ = false;
                listen(now);
                transition(host_state::standby, "the operator cleared the failed failover", e);
                evaluate(now, e);
                return accept("failure cleared; STANDBY");
            }
            if (mode_ == host_mode::online) return refuse("this node is already ONLINE");
            mode_ = host_mode::online;
            e.events.push_back({"mode.changed", "OFFLINE -> ONLINE", {{"mode", "ONLINE"}}});
            if (state_ == host_state::standby) transition(host_state::setting_online, "operator: set online", e);
            evaluate(now, e);
            return accept("ONLINE");
        }
    }
    return refuse("unknown command");
}

}  // namespace tandem::agent
