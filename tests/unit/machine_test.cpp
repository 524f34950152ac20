// tests: the HA rules on a simulated two-node cluster with a manual clock — no sockets, no sleeps.
#include "tandem/agent/machine.hpp"

#include "tandem/agent/heartbeat_codec.hpp"

#include <catch2/catch.hpp>

#include <memory>

using namespace tandem;
using namespace tandem::agent;
using namespace std::chrono_literals;
using S = host_state;

namespace {

// One simulated node: its machine plus what the runtime would do with effects.
struct node {
    explicit node(node_role r) : role(r) {}
    node_role role;
    std::unique_ptr<ha_machine> m;
    bool up = true;        // process running and heartbeats flowing
    bool reach_targets = true;  // result of its connectivity test
    bool auto_complete = true;  // sequences finish at once
    int acquires = 0, releases = 0, tests = 0;
    int forced_releases = 0;  // releases that may end /store's holders
    bool acquire_ok = true;  // what the failover sequence reports
    std::vector<event> log;
    sequence_kind pending = sequence_kind::none;
    // Its lease slot on shared storage (when the cluster has one).
    bool disk = true;  // it can write and read the lease device
    std::uint64_t slot_counter = 0, seen_counter = 0;
    bool slot_holding = false;
    steady_time renewed{};
    std::optional<steady_time> peer_changed;

    bool has(const std::string& id) const {
        return std::any_of(log.begin(), log.end(), [&](const event& e) { return e.id == id; });
    }
};

struct cluster {
    manual_clock clock{steady_time{} + 1000s};
    node a{node_role::primary}, b{node_role::secondary};
    bool link = true;  // the heartbeat path between them
    machine_params base;

    explicit cluster(bool targets = true, std::chrono::milliseconds interval = 100ms,
                     std::chrono::milliseconds timeout = 300ms) {
        base.version = "1.0";
        base.interval = interval;
        base.timeout = timeout;
        base.connectivity_configured = targets;
        base.connectivity_retry = 100ms;
        base.connectivity_interval = 1s;
        restart(a);
        restart(b);
    }
    // generation: what the runtime read from its state directory.
    void restart(node& n, std::uint64_t generation = 0) {
        auto p = base;
        p.role = n.role;
        p.generation = generation;
        n.m = std::make_unique<ha_machine>(p, clock.now());
        n.up = true;
    }
    node& other(node& n) { return &n == &a ? b : a; }

    void apply(node& n, effects e) {
        for (auto& ev : e.events) n.log.push_back(ev);
        if (e.run_connectivity_test) {
            ++n.tests;
            apply(n, n.m->on_connectivity(clock.now(), n.reach_targets, n.reach_targets ? "ok" : "no target answered"));
        }
        if (e.sequence != sequence_kind::none) {
            (e.sequence == sequence_kind::acquire ? n.acquires : n.releases)++;
            n.forced_releases += e.forced_release;
            bool ok = e.sequence == sequence_kind::release || n.acquire_ok;
            if (n.auto_complete) apply(n, n.m->on_sequence_done(clock.now(), ok, ok ? "" : "services: start hook exited 1"));
            else n.pending = e.sequence;
        }
    }
    // An operator command on a node, its effects applied as the runtime would.
    command_reply command(node& n, agent::command what) {
        auto [reply, e] = n.m->on_command(clock.now(), what);
        apply(n, std::move(e));
        return reply;
    }
    peer_info info(const node& n) {
        peer_info p;
        p.role = n.role;
        p.state = n.m->state();
        p.mode = n.m->mode();
        p.sync = n.m->local_sync();
        p.flags = n.m->outgoing_flags();
        p.generation = n.m->generation();
        p.version = n.m->params().version;
        return p;
    }
    // Lease turns on shared storage (base.lease_configured): every running node
    // writes its slot (holding while ACTIVE), then reads the other's, as
    // lease_keeper does each interval; one that cannot reach the device reports so.
    void lease_turns() {
        for (node* n : {&a, &b}) {
            if (!n->up || !n->disk) continue;
            ++n->slot_counter;
            n->slot_holding = n->m->state() == S::active;
            n->renewed = clock.now();
        }
        for (node* n : {&a, &b}) {
            if (!n->up) continue;
            node& o = other(*n);
            lease_info l;
            l.device = "/dev/lease";
            l.renewed = n->renewed;
            l.holding = n->slot_holding;
            l.peer_changed = n->peer_changed;
            if (!n->disk) {
                l.error = "writing slot 0: Input/output error";
            } else {
                l.ok = true;
                if (o.slot_counter != n->seen_counter) {
                    n->seen_counter = o.slot_counter;
                    l.peer_changed = n->peer_changed = clock.now();
                }
                l.peer_holding = o.slot_holding;
                l.peer_counter = o.slot_counter;
            }
            apply(*n, n->m->on_lease(clock.now(), l));
        }
    }
    // One heartbeat interval: both send, both receive, both tick.
    void step() {
        clock.advance(base.interval);
        if (base.lease_configured) lease_turns();
        for (node* n : {&a, &b}) {
            node& o = other(*n);
            if (n->up && o.up && link) apply(o, o.m->on_heartbeat(clock.now(), info(*n)));
        }
        for (node* n : {&a, &b})
            if (n->up) apply(*n, n->m->on_tick(clock.now()));
    }
    void run(std::chrono::milliseconds d) {
        for (auto t = 0ms; t < d; t += base.interval) step();
    }
    bool one_active() { return (a.m->state() == S::active) != (b.m->state() == S::active); }
};

}  // namespace

TEST_CASE("the primary starts active only after listening for one timeout", "[unit][machine]") {
    cluster c;
    c.b.up = false;  // alone
    c.run(200ms);
    CHECK(c.a.m->state() == S::initializing);
    CHECK(c.a.acquires == 0);
    c.run(200ms);
    CHECK(c.a.m->state() == S::active);
    CHECK(c.a.acquires == 1);
}

TEST_CASE("both start together: the primary is active and the secondary standby", "[unit][machine]") {
    cluster c;
    c.run(1s);
    CHECK(c.a.m->state() == S::active);
    CHECK(c.b.m->state() == S::standby);
    CHECK(c.b.acquires == 0);
}

TEST_CASE("a primary that hears an active peer joins as standby (no automatic failback)", "[unit][machine]") {
    cluster c;
    c.run(1s);
    c.a.up = false;  // primary crashes
    c.run(1s);
    REQUIRE(c.b.m->state() == S::active);
    c.restart(c.a);  // primary comes back
    int acquires_before = c.a.acquires;
    c.run(2s);
    CHECK(c.a.m->state() == S::standby);
    CHECK(c.b.m->state() == S::active);
    CHECK(c.a.acquires == acquires_before);
}

TEST_CASE("the standby takes over when the active is lost and its connectivity test passes", "[unit][machine]") {
    cluster c;
    c.run(1s);
    c.a.up = false;
    auto lost_at = c.clock.now();
    while (c.b.m->state() != S::active && c.clock.now() - lost_at < 5s) c.step();
    CHECK(c.b.m->state() == S::active);
    CHECK(c.b.has("peer.lost"));
    CHECK(c.b.tests >= 1);
    // detection waits for the timeout, not longer than timeout + one interval
    CHECK(c.clock.now() - lost_at >= 300ms);
    CHECK(c.clock.now() - lost_at <= 400ms);
}

TEST_CASE("a standby that cannot reach the targets does not take over", "[unit][machine]") {
    cluster c;
    c.run(1s);
    c.b.reach_targets = false;
    c.a.up = false;
    c.run(3s);
    CHECK(c.b.m->state() == S::standby);
    CHECK(c.b.has("failover.blocked"));
    CHECK(c.b.tests > 1);  // it keeps retrying
    c.b.reach_targets = true;
    c.run(500ms);
    CHECK(c.b.m->state() == S::active);
}

TEST_CASE("without connectivity targets the standby takes over on heartbeat loss alone", "[unit][machine]") {
    cluster c(false);
    c.run(1s);
    c.a.up = false;
    c.run(1s);
    CHECK(c.b.m->state() == S::active);
    CHECK(c.b.tests == 0);
}

TEST_CASE("takeover and giveback swap roles only with a synchronized standby", "[unit][machine]") {
    cluster c;
    c.run(1s);
    REQUIRE(c.a.m->state() == S::active);

    auto r1 = c.command(c.a, command::takeover);
    CHECK_FALSE(r1.ok);
    CHECK_THAT(r1.message, Catch::Contains("takeover runs on the STANDBY node"));

    REQUIRE(c.command(c.b, command::takeover).ok);
    c.run(500ms);
    CHECK(c.b.m->state() == S::active);
    CHECK(c.a.m->state() == S::standby);
    CHECK(c.one_active());

    REQUIRE(c.command(c.b, command::giveback).ok);
    c.run(500ms);
    CHECK(c.a.m->state() == S::active);
    CHECK(c.b.m->state() == S::standby);
    // Both releases were asked for: a busy /store refuses them, it is not emptied.
    CHECK(c.a.forced_releases + c.b.forced_releases == 0);

    // An unsynchronized standby may not take over.
    c.apply(c.b, c.b.m->on_local_sync(c.clock.now(), sync_state::synchronizing));
    c.run(200ms);
    CHECK(c.b.m->state() == S::synchronizing);
    auto r4 = c.command(c.b, command::takeover);
    CHECK_FALSE(r4.ok);
    auto r5 = c.command(c.a, command::giveback);
    CHECK_FALSE(r5.ok);
    CHECK_THAT(r5.message, Catch::Contains("the peer is SYNCHRONIZING"));
}

TEST_CASE("an offline standby never takes over; online again, it does", "[unit][machine]") {
    cluster c;
    c.run(1s);
    REQUIRE(c.command(c.b, command::offline).ok);
    c.a.up = false;
    c.run(2s);
    CHECK(c.b.m->state() == S::standby);
    CHECK(c.b.m->mode() == host_mode::offline);
    CHECK(c.b.acquires == 0);
    REQUIRE(c.command(c.b, command::online).ok);
    c.run(500ms);
    CHECK(c.b.m->state() == S::active);
}

TEST_CASE("setting the active node offline is a manual failover", "[unit][machine]") {
    cluster c;
    c.run(1s);
    REQUIRE(c.command(c.a, command::offline).ok);
    c.run(500ms);
    CHECK(c.b.m->state() == S::active);
    CHECK(c.a.m->state() == S::standby);
    CHECK(c.a.m->mode() == host_mode::offline);
    // The offline node does not come back by itself, and the peer going away does not move it.
    c.b.up = false;
    c.run(2s);
    CHECK(c.a.m->state() == S::standby);
}

TEST_CASE("offline on an active node with no standby to take over is refused", "[unit][machine]") {
    cluster c;
    c.b.up = false;
    c.run(1s);
    REQUIRE(c.a.m->state() == S::active);
    auto r = c.command(c.a, command::offline);
    CHECK_FALSE(r.ok);
    CHECK_THAT(r.message, Catch::Contains("would leave no node active"));
}

TEST_CASE("a healed partition with two actives ends with exactly one", "[unit][machine]") {
    cluster c;
    c.run(1s);
    c.link = false;  // partition: both reach the targets
    c.run(1s);
    REQUIRE(c.a.m->state() == S::active);
    REQUIRE(c.b.m->state() == S::active);
    c.link = true;
    c.run(1s);
    CHECK(c.one_active());
    // The secondary took over last (higher generation) and keeps the VIP.
    CHECK(c.b.m->state() == S::active);
    CHECK(c.a.has("collision.detected"));
    CHECK(c.b.has("collision.detected"));
    CHECK(c.a.has("collision.resolved"));
}

TEST_CASE("an equal-generation collision goes to the primary", "[unit][machine]") {
    cluster c;
    c.link = false;
    c.run(1s);  // both start alone and both claim with generation 1
    REQUIRE(c.a.m->generation() == c.b.m->generation());
    REQUIRE(c.b.m->state() == S::active);
    c.link = true;
    c.run(1s);
    CHECK(c.a.m->state() == S::active);
    CHECK(c.b.m->state() == S::standby);
}

TEST_CASE("a node restarted with its saved generation still wins the collision it took over last for",
          "[unit][machine]") {
    cluster c;
    c.run(1s);
    c.link = false;  // partition: the secondary takes over with generation 2
    c.run(1s);
    REQUIRE(c.a.m->generation() == 1);
    REQUIRE(c.b.m->generation() == 2);
    c.restart(c.b, c.b.m->generation());  // its tandemd restarts, still cut off
    CHECK(c.b.m->generation() == 2);
    c.run(1s);
    REQUIRE(c.b.m->state() == S::active);
    CHECK(c.b.m->generation() == 3);
    c.link = true;
    c.run(1s);
    CHECK(c.one_active());
    // Started from 0 it would have claimed with 1, tied, and lost to the primary.
    CHECK(c.b.m->state() == S::active);
    CHECK(c.a.m->state() == S::standby);
}

TEST_CASE("a failed health check on the active moves the service to the standby", "[unit][machine]") {
    cluster c;
    c.run(1s);
    c.apply(c.a, c.a.m->on_health(c.clock.now(), false, "/store is not writable: Read-only file system"));
    c.run(300ms);
    CHECK(c.a.m->state() == S::failed);
    CHECK(c.b.m->state() == S::active);
    CHECK(c.a.forced_releases == 1);  // it cannot wait for /store's holders
    c.apply(c.a, c.a.m->on_health(c.clock.now(), true, ""));
    c.run(300ms);
    CHECK(c.a.m->state() == S::standby);  // repaired, but no automatic failback
    CHECK(c.b.m->state() == S::active);
}

TEST_CASE("a peer with another software version: no pairing, no failover", "[unit][machine]") {
    cluster c;
    c.run(1s);
    c.base.version = "2.0";
    c.base.role = node_role::secondary;
    c.restart(c.b);
    c.run(1s);
    CHECK(c.b.m->state() == S::needs_upgrade);
    CHECK(c.a.m->state() == S::active);
    c.a.up = false;
    c.run(2s);
    CHECK(c.b.m->state() == S::needs_upgrade);  // unprotected: the operator must upgrade first
    CHECK(c.b.acquires == 0);
}

TEST_CASE("the active node's lost connectivity hands over to a standby that has it", "[unit][machine]") {
    cluster c;
    c.run(1s);
    c.a.reach_targets = false;
    c.run(3s);
    CHECK(c.a.has("connectivity.lost"));
    CHECK(c.b.has("connectivity.handover"));
    CHECK(c.b.m->state() == S::active);
    CHECK(c.a.m->state() == S::standby);
}

TEST_CASE("a clean shutdown of the active hands over at once", "[unit][machine]") {
    cluster c(true, 100ms, 10s);
    c.run(21s);
    REQUIRE(c.a.m->state() == S::active);
    c.apply(c.a, c.a.m->on_shutdown(c.clock.now()));
    c.step();
    c.a.up = false;
    c.step();
    CHECK(c.b.m->state() == S::active);  // well before the 10 s timeout
}

TEST_CASE("deadlines: the machine asks to be woken at the peer timeout", "[unit][machine]") {
    cluster c;
    c.run(1s);
    auto now = c.clock.now();
    auto d = c.b.m->next_deadline();
    CHECK(d > now);
    CHECK(d <= now + 300ms);
}

TEST_CASE("after any tick the next deadline is in the future, so the watchdog never spins", "[unit][machine]") {
    for (bool targets : {true, false}) {
        cluster c(targets);
        for (int i = 0; i < 60; ++i) {
            c.step();
            if (i == 15) c.a.up = false;               // failover
            if (i == 30) c.b.reach_targets = false;    // the active loses its targets
            if (i == 40) c.restart(c.a);               // the old primary comes back
            if (i == 45) {                             // the standby fails and recovers with the peer silent
                c.link = false;
                c.apply(c.a, c.a.m->on_health(c.clock.now(), false, "disk"));
            }
            if (i == 50) c.apply(c.a, c.a.m->on_health(c.clock.now(), true, ""));
            if (i == 55) c.link = true;
            for (node* n : {&c.a, &c.b}) {
                if (!n->up) continue;
                INFO("step " << i << " node " << (n == &c.a ? "a" : "b") << " " << to_string(n->m->state()) << " "
                              << (n->m->next_deadline() - c.clock.now()).count() / 1e6 << " ms");
                CHECK(n->m->next_deadline() > c.clock.now());
            }
        }
    }
}

TEST_CASE("a node that recovers listens for one timeout before it counts a silent peer as lost", "[unit][machine]") {
    cluster c;
    c.run(1s);
    // The standby's link goes down: it fails, and hears nothing.
    c.apply(c.b, c.b.m->on_health(c.clock.now(), false, "management interface eth0 is down"));
    c.link = false;
    c.run(1s);
    REQUIRE(c.b.m->state() == S::failed);
    // The link comes back; the first heartbeat is still on its way.
    c.apply(c.b, c.b.m->on_health(c.clock.now(), true, ""));
    REQUIRE(c.b.m->state() == S::standby);
    c.clock.advance(100ms);
    c.apply(c.b, c.b.m->on_tick(c.clock.now()));
    CHECK(c.b.m->state() == S::standby);  // not claiming yet
    c.link = true;
    c.run(1s);
    CHECK(c.b.m->state() == S::standby);
    CHECK(c.a.m->state() == S::active);
    CHECK_FALSE(c.b.has("collision.detected"));
}

TEST_CASE("a failed acquire stays FAILED until the operator clears it: no ping-pong", "[unit][machine]") {
    cluster c;
    c.a.acquire_ok = false;
    c.b.acquire_ok = false;  // the same broken start hook on both nodes
    c.run(3s);
    CHECK(c.a.acquires == 1);
    CHECK(c.b.acquires == 1);  // b tried once after a failed, then stopped too
    CHECK(c.a.m->state() == S::failed);
    CHECK(c.b.m->state() == S::failed);
    c.a.acquire_ok = true;
    REQUIRE(c.command(c.a, command::online).ok);
    c.run(1s);
    CHECK(c.a.m->state() == S::active);
}

TEST_CASE("a takeover request the active does not answer expires", "[unit][machine]") {
    cluster c;
    c.run(1s);
    REQUIRE(c.command(c.b, command::takeover).ok);
    c.link = false;  // the request never arrives; both still think the other is there for a moment
    c.clock.advance(350ms);
    c.apply(c.b, c.b.m->on_tick(c.clock.now()));
    CHECK(c.b.has("takeover.expired"));
    CHECK((c.b.m->outgoing_flags() & hb_request_takeover) == 0);
}

TEST_CASE("different versions started together: the primary is active, the secondary NEEDS_UPGRADE", "[unit][machine]") {
    cluster c;
    c.base.version = "2.0";
    c.base.role = node_role::secondary;
    c.restart(c.b);
    c.restart(c.a);  // a keeps its role; the version comes from base too, so set it back
    c.base.version = "1.0";
    c.base.role = node_role::primary;
    c.restart(c.a);
    c.run(2s);
    CHECK(c.a.m->state() == S::active);
    CHECK(c.b.m->state() == S::needs_upgrade);
}

TEST_CASE("a takeover request does not outlive the standby state", "[unit][machine]") {
    cluster c;
    c.run(1s);
    REQUIRE(c.command(c.b, command::takeover).ok);
    c.apply(c.b, c.b.m->on_health(c.clock.now(), false, "disk"));  // fails before the active answers
    REQUIRE(c.b.m->state() == S::failed);
    CHECK((c.b.m->outgoing_flags() & hb_request_takeover) == 0);
    c.clock.advance(2s);
    c.apply(c.b, c.b.m->on_tick(c.clock.now()));  // the watchdog fires once for the peer timeout
    CHECK(c.b.m->next_deadline() > c.clock.now());  // and then nothing is left in the past
}

TEST_CASE("two primaries are a pairing problem even when their versions differ", "[unit][machine]") {
    cluster c;
    c.b.role = node_role::primary;
    c.base.version = "2.0";
    c.base.role = node_role::primary;
    c.restart(c.b);
    c.run(2s);
    // Exactly one claims at most; neither is sent to NEEDS_UPGRADE by the version alone.
    CHECK_FALSE((c.a.m->state() == S::active && c.b.m->state() == S::active));
    CHECK((c.a.has("failover.blocked") || c.b.has("failover.blocked")));
}

TEST_CASE("a primary without up-to-date data never claims, alone or with its peer, until synchronized",
          "[unit][machine]") {
    cluster c;
    // A new or replaced disk on the primary: its data is inconsistent from the start.
    c.apply(c.a, c.a.m->on_local_sync(c.clock.now(), sync_state::inconsistent));
    c.b.up = false;
    c.run(2s);
    CHECK(c.a.m->state() == S::synchronizing);
    CHECK(c.a.acquires == 0);
    // Even with a peer whose data is not up to date either, nobody claims.
    c.apply(c.b, c.b.m->on_local_sync(c.clock.now(), sync_state::inconsistent));
    c.b.up = true;
    c.run(2s);
    CHECK(c.a.acquires == 0);
    CHECK(c.b.acquires == 0);
    // The resync makes the primary's copy the first one: it claims.
    c.apply(c.a, c.a.m->on_local_sync(c.clock.now(), sync_state::up_to_date));
    c.run(2s);
    CHECK(c.a.m->state() == S::active);
    CHECK(c.b.m->state() == S::synchronizing);
}

namespace {

// Both nodes on shared storage with a lease device.
void with_lease(cluster& c) {
    c.base.lease_configured = true;
    c.restart(c.a);
    c.restart(c.b);
}

std::string blocked_reason(const node& n) {
    for (auto it = n.log.rbegin(); it != n.log.rend(); ++it)
        if (it->id == "failover.blocked") return it->message;
    return "";
}

}  // namespace

TEST_CASE("with a lease, a standby cut off from the active's heartbeats does not take over while the active's slot "
          "is written; it does once the slot has not changed for twice the timeout",
          "[unit][machine][lease]") {
    cluster c(false);
    with_lease(c);
    c.run(1s);
    REQUIRE(c.a.m->state() == S::active);
    REQUIRE(c.b.m->state() == S::standby);
    CHECK(c.a.slot_holding);

    c.link = false;  // the heartbeat cable is cut; both still reach the storage
    c.run(3s);
    CHECK(c.a.m->state() == S::active);
    CHECK(c.b.m->state() == S::standby);
    CHECK(c.b.acquires == 0);
    CHECK_THAT(blocked_reason(c.b), Catch::Contains("is still being written and says it holds /store"));

    // Now the active dies: its slot stops changing.
    c.a.up = false;
    auto died = c.clock.now();
    while (c.b.m->state() != S::active && c.clock.now() - died < 5s) c.step();
    CHECK(c.b.m->state() == S::active);
    // Not before the lease expired (600 ms after the last change b saw, which
    // was at most one interval before the death), not much after.
    CHECK(c.clock.now() - died >= 500ms);
    CHECK(c.clock.now() - died <= 700ms);
}

TEST_CASE("with a lease, of two nodes that cannot hear each other only the primary claims", "[unit][machine][lease]") {
    cluster c(false);
    with_lease(c);
    c.link = false;  // from the start
    c.run(3s);
    CHECK(c.a.m->state() == S::active);
    CHECK(c.b.m->state() == S::standby);
    CHECK(c.b.acquires == 0);
    // First "only the primary claims", then, once alpha holds it, "holds /store".
    CHECK(c.b.has("failover.blocked"));
    CHECK_THAT(blocked_reason(c.b), Catch::Contains("holds /store"));
}

TEST_CASE("with a lease, the secondary claims over a silent primary whose slot never changes", "[unit][machine][lease]") {
    cluster c(false);
    with_lease(c);
    c.a.up = false;  // the primary never starts: its slot stays blank
    c.run(1s);
    CHECK(c.b.m->state() == S::active);
}

TEST_CASE("an active node whose lease is not renewed gives up ACTIVE well before the peer's expiry",
          "[unit][machine][lease]") {
    cluster c(false);
    with_lease(c);
    c.run(1s);
    REQUIRE(c.a.m->state() == S::active);
    c.a.disk = false;  // its writes to the lease device fail
    auto last = c.a.renewed;
    while (c.a.releases == 0 && c.clock.now() - last < 5s) c.step();
    REQUIRE(c.a.releases == 1);
    CHECK(c.a.forced_releases == 1);  // it cannot wait for /store's holders
    CHECK(c.clock.now() - last >= 300ms);
    CHECK(c.clock.now() - last < 600ms);  // b may claim only after 600 ms
    bool said = false;
    for (auto& e : c.a.log)
        if (e.id == "release.start" && e.fields.size() && e.fields[0].second.find("was not renewed") != std::string::npos)
            said = true;
    CHECK(said);
    // It handed over, but its slot, which it cannot write, still says it holds
    // /store: the peer, which hears it, waits for the slot to expire (600 ms
    // after the last change it saw) rather than fail in its storage phase.
    CHECK(c.a.m->state() == S::standby);
    while (c.b.m->state() != S::active && c.clock.now() - last < 5s) c.step();
    CHECK(c.b.m->state() == S::active);
    CHECK(c.clock.now() - last >= 600ms);
    CHECK(c.clock.now() - last <= 800ms);
    CHECK_THAT(blocked_reason(c.b), Catch::Contains("the peer handed over (STANDBY), but its slot on the lease device "
                                                    "/dev/lease still says it holds /store: waiting"));
}

TEST_CASE("with a lease, a node the peer hands over to claims once the peer's slot says it let go",
          "[unit][machine][lease]") {
    cluster c(false);
    with_lease(c);
    c.run(1s);
    REQUIRE(c.a.m->state() == S::active);
    REQUIRE(c.command(c.b, command::takeover).ok);  // b asks a to hand over
    c.run(300ms);  // a's next lease turn writes "not holding", well before the slot's expiry
    CHECK(c.b.m->state() == S::active);
    CHECK(c.a.m->state() == S::standby);
}

TEST_CASE("with a lease device that cannot be used, a standby does not take over from a silent peer",
          "[unit][machine][lease]") {
    cluster c(false);
    with_lease(c);
    c.run(1s);
    c.b.disk = false;
    c.a.up = false;
    c.run(3s);
    CHECK(c.b.m->state() == S::standby);
    CHECK_THAT(blocked_reason(c.b), Catch::Contains("cannot be used (writing slot 0: Input/output error)"));
    c.b.disk = true;  // the storage path is back; alpha's slot has long expired
    c.run(300ms);
    CHECK(c.b.m->state() == S::active);
}

TEST_CASE("with a lease, no deadline lies in the past once the peer's slot has expired (the watchdog would spin)",
          "[unit][machine][lease]") {
    cluster c(false);
    with_lease(c);
    c.run(1s);
    REQUIRE(c.command(c.b, command::offline).ok);  // an OFFLINE standby does not claim
    c.a.up = false;  // alpha's slot freezes
    c.run(3s);
    CHECK(c.b.m->state() == S::standby);
    CHECK(c.b.m->next_deadline() > c.clock.now());
}
