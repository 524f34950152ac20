// agent: failover phases 2 (alias), 3 (VIP) and 5 (announce) on the netlink library.
#include "tandem/agent/vip_owner.hpp"

#include "tandem/base/duration.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

namespace tandem::agent {

namespace asio = boost::asio;

namespace {
netlink::route_socket open_route() {
    auto r = netlink::route_socket::open();
    if (!r) throw std::runtime_error("cannot open a NETLINK_ROUTE socket: " + r.error().message());
    return std::move(*r);
}
}  // namespace

vip_owner::vip_owner(asio::io_context& io, const config& cfg)
    : io_(io), cfg_(cfg), route_(open_route()), timer_(io) {
    if (auto i = ifindex(); !i)
        throw std::runtime_error(fmt::format("cluster.interface \"{}\": {} (the seeds require the same management "
                                             "interface on both nodes)",
                                             interface(), i.error().message()));
}

result<int> vip_owner::ifindex() { return route_.link_index(interface()); }

result<netlink::link_info> vip_owner::link() {
    auto i = ifindex();
    if (!i) return i.error();
    return route_.link(*i);
}

result<void> vip_owner::add() {
    auto i = ifindex();
    if (!i) return i.error();
    if (auto r = route_.add_vip(*i, vip(), label()); !r) return r;
    // Believe the kernel: the VIP is up when a dump shows it on the link.
    auto there = route_.has_address(*i, vip());
    if (!there) return there.error();
    if (!*there) return error_code(EADDRNOTAVAIL, boost::system::system_category());
    return {};
}

result<void> vip_owner::remove() {
    auto i = ifindex();
    if (!i) return i.error();
    return route_.remove_vip(*i, vip());
}

result<bool> vip_owner::present() {
    auto i = ifindex();
    if (!i) return {boost::system::in_place_error, i.error()};  // result<bool> from an error_code is ambiguous
    return route_.has_address(*i, vip());
}

result<std::size_t> vip_owner::remove_stale() {
    auto i = ifindex();
    if (!i) return i.error();
    return route_.remove_stale(*i);
}

result<void> vip_owner::announce() {
    auto l = link();
    if (!l) return l.error();
    if (!packet_ || packet_ifindex_ != l->ifindex) {
        auto p = netlink::packet_socket::open(l->ifindex);
        if (!p) return p.error();
        packet_.emplace(std::move(*p));
        packet_ifindex_ = l->ifindex;
    }
    auto sent = netlink::send_burst(*packet_, l->mac, vip());
    if (sent) ++bursts_;
    auto plan = ++plan_;
    timer_.cancel();
    if (cfg_.announce.count > 1) asio::co_spawn(io_, repeat(plan, cfg_.announce.count - 1), asio::detached);
    return sent;
}

void vip_owner::stop_announcing() {
    ++plan_;
    timer_.cancel();
}

asio::awaitable<void> vip_owner::repeat(std::uint64_t plan, int left) {
    // Spaced beyond the neighbour locktime (docs/vip.md); a newer plan or a
    // release ends this one.
    while (left-- > 0) {
        timer_.expires_after(cfg_.announce.spacing);
        co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (plan != plan_) co_return;
        auto l = link();
        if (l && packet_) {
            if (netlink::send_burst(*packet_, l->mac, vip())) ++bursts_;
        }
    }
}

namespace {

class alias_phase final : public failover_phase {
public:
    explicit alias_phase(vip_owner& v) : v_(v) {}
    std::string_view name() const override { return "alias"; }
    asio::awaitable<phase_outcome> acquire() override { co_return check(); }
    asio::awaitable<phase_outcome> release(release_kind) override { co_return released(); }

private:
    // On Linux the alias is the VIP's IFA_LABEL: it exists with the address. This
    // phase checks that the link can carry it.
    phase_outcome check() {
        auto l = v_.link();
        if (!l) return phase_outcome::failed(fmt::format("{}: {}", v_.interface(), l.error().message()));
        if (!l->up || !l->carrier)
            return phase_outcome::failed(fmt::format("{} is {}; the VIP cannot be served there", v_.interface(),
                                                     !l->up ? "administratively down" : "without carrier"));
        return phase_outcome::done(fmt::format("{} (ifindex {}) up with carrier; alias {}", v_.interface(), l->ifindex,
                                               v_.label()));
    }
    phase_outcome released() { return phase_outcome::nothing(fmt::format("alias {} goes with the VIP", v_.label())); }
    vip_owner& v_;
};

class vip_phase final : public failover_phase {
public:
    explicit vip_phase(vip_owner& v) : v_(v) {}
    std::string_view name() const override { return "vip"; }
    asio::awaitable<phase_outcome> acquire() override { co_return add(); }
    asio::awaitable<phase_outcome> release(release_kind) override { co_return remove(); }

private:
    phase_outcome add() {
        if (auto r = v_.add(); !r)
            return phase_outcome::failed(
                fmt::format("adding {} to {}: {}", netlink::to_string(v_.vip()), v_.label(), r.error().message()));
        return phase_outcome::done(fmt::format("{} on {}", netlink::to_string(v_.vip()), v_.label()));
    }
    phase_outcome remove() {
        if (auto r = v_.remove(); !r)
            return phase_outcome::failed(
                fmt::format("removing {}: {}", netlink::to_string(v_.vip()), r.error().message()));
        return phase_outcome::done(fmt::format("{} removed from {}", netlink::to_string(v_.vip()), v_.interface()));
    }
    vip_owner& v_;
};

class announce_phase final : public failover_phase {
public:
    explicit announce_phase(vip_owner& v) : v_(v) {}
    std::string_view name() const override { return "announce"; }
    asio::awaitable<phase_outcome> acquire() override { co_return send(); }
    asio::awaitable<phase_outcome> release(release_kind) override { co_return stop(); }

private:
    phase_outcome send() {
        // A lost announcement is not fatal: clients still find the VIP when
        // their neighbour entries expire. Report it, do not fail over again.
        if (auto r = v_.announce(); !r)
            return phase_outcome::nothing(fmt::format("announcement failed: {}; clients learn the move when their "
                                                      "neighbour entries expire",
                                                      r.error().message()));
        return phase_outcome::done(fmt::format("{} sent", v_.vip().family == AF_INET
                                                              ? "gratuitous ARP request and reply"
                                                              : "unsolicited neighbour advertisement (Override)"));
    }
    phase_outcome stop() {
        v_.stop_announcing();
        return phase_outcome::done("pending announcements cancelled");
    }
    vip_owner& v_;
};

}  // namespace

std::unique_ptr<failover_phase> make_alias_phase(vip_owner& v) { return std::make_unique<alias_phase>(v); }
std::unique_ptr<failover_phase> make_vip_phase(vip_owner& v) { return std::make_unique<vip_phase>(v); }
std::unique_ptr<failover_phase> make_announce_phase(vip_owner& v) { return std::make_unique<announce_phase>(v); }

}  // namespace tandem::agent
