// agent: the node's hold on the cluster VIP — alias, address and announcements, over netlink.
#pragma once

#include "tandem/agent/config.hpp"
#include "tandem/agent/failover.hpp"
#include "tandem/netlink/announce.hpp"
#include "tandem/netlink/route.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <memory>
#include <optional>
#include <string>

namespace tandem::agent {

// Everything the failover phases 2, 3 and 5 and the link-event handler share:
// the management link (by name: its index is looked up again when it matters,
// since an interface can be re-created), the alias label and the announcer.
class vip_owner {
public:
    // Throws std::runtime_error naming the interface if it does not exist, or the
    // kernel feature that is missing.
    vip_owner(boost::asio::io_context& io, const config& cfg);

    [[nodiscard]] const std::string& interface() const { return cfg_.cluster.interface; }
    [[nodiscard]] std::string label() const { return cfg_.cluster.interface + ":0"; }
    [[nodiscard]] const netlink::vip_address& vip() const { return cfg_.cluster.vip; }

    result<netlink::link_info> link();  // the management link as the kernel sees it now
    result<void> add();                 // idempotent; verified with a dump afterwards
    result<void> remove();              // idempotent
    result<bool> present();
    result<std::size_t> remove_stale();  // at start-up on a node that is not active

    // Sends one burst now and `count - 1` more `spacing` apart; a new call
    // restarts the plan, stop() cancels what is pending.
    result<void> announce();
    void stop_announcing();
    [[nodiscard]] std::uint64_t bursts_sent() const { return bursts_; }

private:
    boost::asio::awaitable<void> repeat(std::uint64_t plan, int left);
    result<int> ifindex();

    boost::asio::io_context& io_;
    const config& cfg_;  // the live configuration: reloads change the announce plan
    netlink::route_socket route_;
    std::optional<netlink::packet_socket> packet_;
    int packet_ifindex_ = 0;
    boost::asio::steady_timer timer_;
    std::uint64_t plan_ = 0;  // bumped by each announce() and stop(): older repeat loops end
    std::uint64_t bursts_ = 0;
};

std::unique_ptr<failover_phase> make_alias_phase(vip_owner& v);
std::unique_ptr<failover_phase> make_vip_phase(vip_owner& v);
std::unique_ptr<failover_phase> make_announce_phase(vip_owner& v);

}  // namespace tandem::agent
