// netlink: rtnetlink requests for links and addresses — the VIP's add, remove and ownership queries.
#include "tandem/netlink/route.hpp"

#include "rtnl.hpp"
#include "tandem/base/log.hpp"

#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <netlink/errno.h>
#include <netlink/handlers.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>

namespace tandem::netlink {

namespace {

// One request: a family header, then attributes. A put fails only when the
// buffer is full, which these small messages never reach; the first failure is
// kept so that the caller checks once, in get().
class message {
public:
    template <class Header>
    message(int type, int flags, const Header& header) : msg_(nlmsg_alloc_simple(type, flags)) {
        rc_ = msg_ ? nlmsg_append(msg_.get(), const_cast<Header*>(&header), sizeof(Header), NLMSG_ALIGNTO)
                   : -NLE_NOMEM;
    }
    message& put(int type, std::span<const std::byte> data) {
        if (rc_ == 0) rc_ = nla_put(msg_.get(), type, static_cast<int>(data.size()), data.data());
        return *this;
    }
    message& put_u8(int type, std::uint8_t v) { return put(type, std::as_bytes(std::span(&v, 1))); }
    message& put_u32(int type, std::uint32_t v) { return put(type, std::as_bytes(std::span(&v, 1))); }
    message& put_string(int type, std::string_view s) {  // NUL-terminated, as the kernel's NLA_STRING wants
        std::string z(s);
        return put(type, std::as_bytes(std::span(z.c_str(), z.size() + 1)));
    }
    // Only on a named message: the nl_msg dies with its owner.
    [[nodiscard]] result<nl_msg*> get() const& {
        if (rc_ < 0) return make_error(rc_);
        return msg_.get();
    }
    result<nl_msg*> get() const&& = delete;

private:
    c_ptr<nl_msg, nlmsg_free> msg_;
    int rc_ = 0;
};

// IFA_PROTO arrived in Linux 5.18. Older kernels accept the attribute and drop
// it silently, which would leave Tandem unable to find its own stale VIPs.
bool kernel_has_ifa_proto(std::string& release) {
    utsname u{};
    if (::uname(&u) != 0) return false;
    release = u.release;
    int major = 0, minor = 0;
    if (std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
    return major > 5 || (major == 5 && minor >= 18);
}

message address_message(int type, int flags, int ifindex, const vip_address& vip) {
    ifaddrmsg ifa{};
    ifa.ifa_family = static_cast<std::uint8_t>(vip.family);
    ifa.ifa_prefixlen = vip.prefix;
    ifa.ifa_scope = RT_SCOPE_UNIVERSE;
    ifa.ifa_index = static_cast<std::uint32_t>(ifindex);
    message m(type, flags, ifa);
    // Both attributes, as iproute2 sends them: IPv4 deletion checks the prefix
    // length only together with IFA_ADDRESS, so the right /24 or /32 goes.
    m.put(IFA_LOCAL, vip.address()).put(IFA_ADDRESS, vip.address());
    return m;
}

// The subnet's all-ones host address, as `ip addr add ... brd +` sets it.
std::array<std::byte, 4> ipv4_broadcast(const vip_address& vip) {
    std::array<std::byte, 4> b{};
    for (unsigned i = 0; i < 4; ++i) {
        unsigned network_bits = std::clamp<unsigned>(vip.prefix, 8 * i, 8 * i + 8) - 8 * i;
        b[i] = vip.bytes[i] | static_cast<std::byte>(0xffu >> network_bits);
    }
    return b;
}

bool is(const error_code& ec, int nle) { return ec == make_error(nle); }

}  // namespace

result<route_socket> route_socket::open() {
    std::string release;
    if (!kernel_has_ifa_proto(release)) {
        log::error("netlink.no_ifa_proto",
                   "kernel '{}' lacks IFA_PROTO (needs Linux 5.18+): Tandem could not tell its VIPs from other "
                   "addresses",
                   release);
        return error_code(boost::system::errc::not_supported, boost::system::generic_category());
    }
    socket_ptr sock(nl_socket_alloc());
    if (!sock) return make_error(NLE_NOMEM);
    // nl_connect opens the socket with SOCK_CLOEXEC (libnl >= 3.2.26).
    if (auto rc = check_nl(nl_connect(sock.get(), NETLINK_ROUTE)); !rc) return rc.error();
    return route_socket(std::move(sock));
}

result<void> route_socket::request(nl_msg* msg, const std::function<void(const nlmsghdr&)>& on_reply) {
    if (auto rc = check_nl(nl_send_auto(sock_.get(), msg)); !rc) return rc.error();
    c_ptr<nl_cb, nl_cb_put> cb(nl_cb_alloc(NL_CB_DEFAULT));
    if (!cb) return make_error(NLE_NOMEM);
    struct state {
        const std::function<void(const nlmsghdr&)>& on_reply;
        bool done = false;
    } st{on_reply};
    nl_recvmsg_msg_cb_t valid = [](nl_msg* m, void* arg) -> int {
        auto* s = static_cast<state*>(arg);
        if (s->on_reply) s->on_reply(*nlmsg_hdr(m));
        return NL_OK;
    };
    nl_recvmsg_msg_cb_t finish = [](nl_msg*, void* arg) -> int {
        static_cast<state*>(arg)->done = true;
        return NL_STOP;
    };
    nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, valid, &st);
    nl_cb_set(cb.get(), NL_CB_ACK, NL_CB_CUSTOM, finish, &st);
    nl_cb_set(cb.get(), NL_CB_FINISH, NL_CB_CUSTOM, finish, &st);
    while (!st.done) {
        int n = nl_recvmsgs_report(sock_.get(), cb.get());
        if (n < 0) return make_error(n);
        // A blocking netlink socket reads nothing only once it is shut down:
        // fail rather than spin.
        if (n == 0) return make_error(NLE_FAILURE);
    }
    return {};
}

result<link_info> route_socket::get_link(int ifindex, std::string_view ifname) {
    ifinfomsg ifi{};
    ifi.ifi_index = ifindex;
    message m(RTM_GETLINK, 0, ifi);
    if (!ifname.empty()) m.put_string(IFLA_IFNAME, ifname);
    auto msg = m.get();
    if (!msg) return msg.error();
    std::optional<link_info> found;
    auto r = request(*msg, [&](const nlmsghdr& h) {
        if (!found) found = detail::parse_link(h);
    });
    if (!r) return r.error();
    if (!found) return make_error(NLE_OBJ_NOTFOUND);
    return *found;
}

result<int> route_socket::link_index(std::string_view ifname) {
    if (ifname.empty()) return make_error(NLE_INVAL);
    auto l = get_link(0, ifname);
    if (!l) return l.error();
    return l->ifindex;
}

result<link_info> route_socket::link(int ifindex) { return get_link(ifindex, {}); }

result<void> route_socket::add_vip(int ifindex, const vip_address& vip, std::string_view label) {
    // NLM_F_EXCL makes an existing address an error we can recognise (EEXIST)
    // instead of a silent replace that would also re-mark an operator's address.
    auto m = address_message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex, vip);
    m.put_u8(IFA_PROTO, tandem_proto);
    if (vip.family == AF_INET) {
        auto l = link(ifindex);
        if (!l) return l.error();
        if (auto ok = check_label(l->name, label); !ok) {
            log::error("netlink.bad_label", "VIP {}: {}", to_string(vip), ok.error().message);
            return error_code(boost::system::errc::invalid_argument, boost::system::generic_category());
        }
        m.put_string(IFA_LABEL, label);
        if (vip.prefix < 31) m.put(IFA_BROADCAST, ipv4_broadcast(vip));  // RFC 3021: /31 has no broadcast
    } else {
        // IFA_FLAGS is the 32-bit flag word; the header's 8-bit ifa_flags would
        // do for NODAD too, but the kernel prefers the attribute when present.
        m.put_u32(IFA_FLAGS, IFA_F_NODAD);
    }
    auto msg = m.get();
    if (!msg) return msg.error();
    auto r = request(*msg);
    if (!r && !is(r.error(), NLE_EXIST)) return r.error();
    return {};
}

result<void> route_socket::remove_vip(int ifindex, const vip_address& vip) {
    auto m = address_message(RTM_DELADDR, 0, ifindex, vip);
    auto msg = m.get();
    if (!msg) return msg.error();
    auto r = request(*msg);
    // EADDRNOTAVAIL (NLE_NOADDR): the address is already gone.
    if (!r && !is(r.error(), NLE_NOADDR)) return r.error();
    return {};
}

result<std::vector<address_info>> route_socket::addresses(int ifindex) {
    ifaddrmsg ifa{};  // AF_UNSPEC: IPv4 and IPv6 in one dump
    message m(RTM_GETADDR, NLM_F_DUMP, ifa);
    auto msg = m.get();
    if (!msg) return msg.error();
    std::vector<address_info> out;
    auto r = request(*msg, [&](const nlmsghdr& h) {
        auto a = detail::parse_address(h);
        if (a && a->ifindex == ifindex) out.push_back(std::move(*a));
    });
    if (!r) return r.error();
    return out;
}

result<std::vector<owned_address>> route_socket::owned_addresses(int ifindex) {
    auto all = addresses(ifindex);
    if (!all) return all.error();
    std::erase_if(*all, [](const address_info& a) { return a.proto != tandem_proto; });
    return all;
}

result<bool> route_socket::has_address(int ifindex, const vip_address& vip) {
    auto all = addresses(ifindex);
    if (!all) return {boost::system::in_place_error, all.error()};  // bool would also take an error_code
    return std::ranges::any_of(*all, [&](const address_info& a) { return a.address == vip; });
}

result<std::size_t> route_socket::remove_stale(int ifindex) {
    auto owned = owned_addresses(ifindex);
    if (!owned) return owned.error();
    for (const auto& a : *owned) {
        if (auto r = remove_vip(ifindex, a.address); !r) return r.error();
        log::notice("netlink.stale_vip_removed", "removed stale VIP {} (label '{}') from ifindex {}",
                    to_string(a.address), a.label, ifindex);
    }
    return owned->size();
}

}  // namespace tandem::netlink
