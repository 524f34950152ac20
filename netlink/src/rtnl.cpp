// netlink (internal): rtnetlink message decoding. Done by hand rather than
// through libnl's rtnl_addr objects because libnl 3.7 does not know IFA_PROTO,
// the attribute that tells Tandem's addresses from everyone else's.
#include "rtnl.hpp"

#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <netlink/attr.h>
#include <netlink/msg.h>

#include <cstring>

namespace tandem::netlink::detail {

namespace {

// The kernel pads and validates its own attributes, but a decoder of bytes
// still checks every length before it reads.
bool has(const nlattr* a, std::size_t n) { return a && static_cast<std::size_t>(nla_len(a)) >= n; }

std::string get_string(const nlattr* a) {
    if (!a) return {};
    const auto* p = static_cast<const char*>(nla_data(a));
    return std::string(p, ::strnlen(p, static_cast<std::size_t>(nla_len(a))));
}

template <int Max, class Header>
const Header* parse(const nlmsghdr& h, nlattr* (&tb)[Max + 1]) {
    auto* msg = const_cast<nlmsghdr*>(&h);  // libnl's parser takes a mutable header but does not write
    if (nlmsg_parse(msg, sizeof(Header), tb, Max, nullptr) < 0) return nullptr;
    return static_cast<const Header*>(nlmsg_data(msg));
}

}  // namespace

std::optional<link_info> parse_link(const nlmsghdr& h) {
    if (h.nlmsg_type != RTM_NEWLINK && h.nlmsg_type != RTM_DELLINK) return std::nullopt;
    nlattr* tb[IFLA_MAX + 1] = {};
    const auto* ifi = parse<IFLA_MAX, ifinfomsg>(h, tb);
    if (!ifi) return std::nullopt;
    link_info l;
    l.ifindex = ifi->ifi_index;
    l.name = get_string(tb[IFLA_IFNAME]);
    if (tb[IFLA_ADDRESS] && nla_len(tb[IFLA_ADDRESS]) == static_cast<int>(l.mac.size()))
        std::memcpy(l.mac.data(), nla_data(tb[IFLA_ADDRESS]), l.mac.size());
    if (has(tb[IFLA_OPERSTATE], 1)) l.operstate = nla_get_u8(tb[IFLA_OPERSTATE]);
    l.up = (ifi->ifi_flags & IFF_UP) != 0;
    l.carrier = (ifi->ifi_flags & IFF_RUNNING) != 0;
    return l;
}

std::optional<address_info> parse_address(const nlmsghdr& h) {
    if (h.nlmsg_type != RTM_NEWADDR && h.nlmsg_type != RTM_DELADDR) return std::nullopt;
    nlattr* tb[IFA_MAX + 1] = {};
    const auto* ifa = parse<IFA_MAX, ifaddrmsg>(h, tb);
    if (!ifa || (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6)) return std::nullopt;
    address_info a;
    a.ifindex = static_cast<int>(ifa->ifa_index);
    a.address.family = ifa->ifa_family;
    a.address.prefix = ifa->ifa_prefixlen;
    // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on point-to-point
    // links and the only one present for ordinary IPv6 addresses.
    const nlattr* addr = tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS];
    if (!addr || static_cast<std::size_t>(nla_len(addr)) != a.address.size()) return std::nullopt;
    std::memcpy(a.address.bytes.data(), nla_data(addr), a.address.size());
    a.label = get_string(tb[IFA_LABEL]);
    if (has(tb[IFA_PROTO], 1)) a.proto = nla_get_u8(tb[IFA_PROTO]);
    a.flags = has(tb[IFA_FLAGS], 4) ? nla_get_u32(tb[IFA_FLAGS]) : ifa->ifa_flags;
    return a;
}

}  // namespace tandem::netlink::detail
