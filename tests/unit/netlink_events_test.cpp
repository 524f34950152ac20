// tests: event_socket in a namespace — link down/up, a VIP deleted by hand, and overruns.
#include "tandem/netlink/events.hpp"

#include "netlink_test_util.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>

using namespace tandem;
using namespace tandem::netlink;
using namespace tandem::test;

namespace {
// Waits on the socket, as the daemon's io_context would, until an event
// matching `pred` arrives or the deadline passes.
template <class Pred>
bool wait_for_event(event_socket& es, Pred&& pred, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto events = es.drain();
        REQUIRE(ok(events));
        for (const auto& e : *events)
            if (pred(e)) return true;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd p{es.fd(), POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(left.count()));
    }
}

auto link_is(const std::string& name, bool up) {
    return [=](const event& e) {
        const auto* l = std::get_if<link_event>(&e);
        return l && !l->removed && l->link.name == name && l->link.up == up && (!up || l->link.carrier);
    };
}

auto address_is(bool added, const vip_address& vip) {
    return [=](const event& e) {
        const auto* a = std::get_if<address_event>(&e);
        return a && a->added == added && a->address.address == vip;
    };
}
}  // namespace

TEST_CASE("event_socket is non-blocking, CLOEXEC and sees a link go down and up", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    in_host_a h;
    auto es = event_socket::open();
    REQUIRE(ok(es));
    CHECK((::fcntl(es->fd(), F_GETFD) & FD_CLOEXEC) != 0);
    CHECK((::fcntl(es->fd(), F_GETFL) & O_NONBLOCK) != 0);
    REQUIRE(ok(es->drain()));  // nothing pending must not block

    h.a.exec_ok("ip link set eth0 down");
    CHECK(wait_for_event(*es, link_is("eth0", false)));
    h.a.exec_ok("ip link set eth0 up");
    CHECK(wait_for_event(*es, link_is("eth0", true)));

    h.a.exec_ok("ip link del eth0");
    CHECK(wait_for_event(*es, [](const event& e) {
        const auto* l = std::get_if<link_event>(&e);
        return l && l->removed && l->link.name == "eth0";
    }));
}

TEST_CASE("event_socket reports a VIP that someone deletes by hand", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    in_host_a h;
    auto es = event_socket::open();
    REQUIRE(ok(es));

    for (const char* text : {"10.200.0.100/24", "fd00:200::100/64"}) {
        INFO(text);
        auto vip = parse_vip(text).value();
        REQUIRE(ok(h.rs.add_vip(h.eth0, vip, "eth0:0")));
        CHECK(wait_for_event(*es, address_is(true, vip)));  // "the VIP is up" once the kernel says so

        h.a.exec_ok(std::string("ip addr del ") + text + " dev eth0");
        CHECK(wait_for_event(*es, [&](const event& e) {
            const auto* a = std::get_if<address_event>(&e);
            return address_is(false, vip)(e) && a->address.ifindex == h.eth0 && a->address.proto == tandem_proto &&
                   a->address.label == (vip.family == AF_INET ? "eth0:0" : "");
        }));
    }
}

TEST_CASE("event_socket turns a buffer overrun into resync_needed", "[kernel][netlink]") {
    TANDEM_REQUIRE_NAMESPACES();
    in_host_a h;
    auto es = event_socket::open();
    REQUIRE(ok(es));
    // Shrink the queue to the kernel's minimum so that a burst overruns it.
    int tiny = 0;
    REQUIRE(::setsockopt(es->fd(), SOL_SOCKET, SO_RCVBUFFORCE, &tiny, sizeof tiny) == 0);

    // One rtnetlink request per address, all queued before we read.
    h.a.exec_ok("sh -c 'for i in $(seq 1 100); do echo addr add 10.200.1.$i/24 dev eth0; done | ip -batch -'");

    auto events = es->drain();
    REQUIRE(ok(events));
    CHECK(std::ranges::any_of(*events, [](const event& e) { return std::holds_alternative<resync_needed>(e); }));
    // After the overrun the socket delivers again. (A secondary: deleting the
    // primary 10.200.1.1 would take all 99 secondaries with it, and overrun again.)
    h.a.exec_ok("ip addr del 10.200.1.100/24 dev eth0");
    CHECK(wait_for_event(*es, address_is(false, parse_vip("10.200.1.100/24").value())));
}
