// netlink: placing and removing the VIP on a link through rtnetlink, believing only the kernel.
#pragma once

#include "tandem/base/c_ptr.hpp"
#include "tandem/base/result.hpp"
#include "tandem/netlink/vip.hpp"

#include <netlink/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

struct nl_msg;
struct nlmsghdr;

namespace tandem::netlink {

// Tandem's IFA_PROTO value ('T'): the kernel stores it with each address we add
// and reports it in every dump and notification (Linux >= 5.18). It is how a
// restarted node tells its own stale VIPs from addresses an operator or another
// daemon configured. Kernel-made addresses use 1-3 (IFAPROT_KERNEL_*); 0 is unset.
inline constexpr std::uint8_t tandem_proto = 0x54;

struct link_info {
    int ifindex = 0;
    std::string name;
    mac_address mac{};           // zero for links without a 6-byte hardware address
    std::uint8_t operstate = 0;  // IF_OPER_* (RFC 2863) from IFLA_OPERSTATE
    bool up = false;             // IFF_UP: administratively up
    bool carrier = false;        // IFF_RUNNING: operationally up, so the link can carry the VIP's traffic
};

// One address as the kernel reports it (RTM_NEWADDR / RTM_DELADDR).
struct address_info {
    int ifindex = 0;
    vip_address address;
    std::string label;        // IFA_LABEL; IPv4 only, the kernel keeps no labels for IPv6
    std::uint8_t proto = 0;   // IFA_PROTO; tandem_proto on addresses Tandem added
    std::uint32_t flags = 0;  // IFA_F_* (secondary, tentative, dadfailed, ...)
};
using owned_address = address_info;

// A NETLINK_ROUTE request socket. Every call is one request and its replies,
// synchronous; nothing is cached, because a cached copy is what goes stale
// when an operator changes the link behind our back. Add and remove are
// idempotent: an address that already exists, or is already gone, is success.
class route_socket {
public:
    // Opens the socket (CLOEXEC). Fails with errc::not_supported, after logging
    // the missing feature, on kernels older than 5.18 (no IFA_PROTO).
    [[nodiscard]] static result<route_socket> open();

    [[nodiscard]] result<int> link_index(std::string_view ifname);
    [[nodiscard]] result<link_info> link(int ifindex);

    // Adds the VIP marked with tandem_proto. IPv4 carries `label` (see
    // check_label; a bad one fails with errc::invalid_argument and a log line
    // naming it) and the subnet broadcast address; IPv6 is added with
    // IFA_F_NODAD, since the VIP is moved, not claimed, and must be usable at
    // once rather than tentative for a DAD round. IPv6 ignores the label.
    [[nodiscard]] result<void> add_vip(int ifindex, const vip_address& vip, std::string_view label);
    // Removes the address with this prefix, whoever added it.
    [[nodiscard]] result<void> remove_vip(int ifindex, const vip_address& vip);

    // The addresses on the link that carry tandem_proto.
    [[nodiscard]] result<std::vector<owned_address>> owned_addresses(int ifindex);
    // True when the link holds this address with this prefix length.
    [[nodiscard]] result<bool> has_address(int ifindex, const vip_address& vip);
    // Removes every tandem_proto address from the link, and nothing else; a node
    // that starts up not active calls it so that a VIP left by a crash is not
    // answered for by two nodes. Returns how many it removed.
    [[nodiscard]] result<std::size_t> remove_stale(int ifindex);

private:
    using socket_ptr = c_ptr<nl_sock, nl_socket_free>;
    explicit route_socket(socket_ptr sock) noexcept : sock_(std::move(sock)) {}

    // Sends one request and hands each reply message to on_reply until the
    // kernel's ACK (or, for a dump, NLMSG_DONE); a kernel error is the result.
    result<void> request(nl_msg* msg, const std::function<void(const nlmsghdr&)>& on_reply = {});
    // RTM_GETLINK by index, or by name when ifname is not empty.
    result<link_info> get_link(int ifindex, std::string_view ifname);
    result<std::vector<address_info>> addresses(int ifindex);

    socket_ptr sock_;
};

}  // namespace tandem::netlink
