// netlink: the notification socket. Raw recv() rather than libnl's receive loop,
// because libnl folds ENOBUFS (lost notifications) into NLE_NOMEM, and the
// daemon must tell "we missed events, resync" from "out of memory".
#include "tandem/netlink/events.hpp"

#include "rtnl.hpp"

#include <linux/rtnetlink.h>
#include <netlink/msg.h>
#include <sys/socket.h>

#include <cerrno>

namespace tandem::netlink {

namespace {
// Large enough for any one rtnetlink notification datagram (the kernel sizes
// them to a page or two); a bigger burst simply takes more recv() calls.
constexpr std::size_t receive_buffer_size = 64 * 1024;
// Kernel-side queue: room for the storm of messages a link flap with many
// addresses causes, so that overruns stay rare. Forced when we may (root).
constexpr int socket_buffer_size = 1 << 20;
}  // namespace

event_socket::event_socket(unique_fd fd) : fd_(std::move(fd)), buf_(receive_buffer_size) {}

result<event_socket> event_socket::open() {
    unique_fd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE));
    if (!fd) return errno_error();
    int size = socket_buffer_size;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0 &&
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size) != 0)
        return errno_error();
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) return errno_error();
    for (int group : {RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR})
        if (::setsockopt(fd.get(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) != 0)
            return errno_error();
    return event_socket(std::move(fd));
}

result<std::vector<event>> event_socket::drain() {
    std::vector<event> out;
    for (;;) {
        sockaddr_nl from{};
        socklen_t from_len = sizeof from;
        ssize_t n = ::recvfrom(fd_.get(), buf_.data(), buf_.size(), MSG_TRUNC,
                               reinterpret_cast<sockaddr*>(&from), &from_len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return out;
            if (errno == EINTR) continue;
            // The kernel reports an overrun once, then delivers new messages again.
            if (errno == ENOBUFS) {
                out.emplace_back(resync_needed{});
                continue;
            }
            return errno_error();
        }
        if (from.nl_pid != 0) continue;  // only the kernel speaks for the kernel's state
        if (static_cast<std::size_t>(n) > buf_.size()) {  // MSG_TRUNC gave the real length: part was lost
            out.emplace_back(resync_needed{});
            continue;
        }
        int left = static_cast<int>(n);
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf_.data()); nlmsg_ok(h, left); h = nlmsg_next(h, &left)) {
            if (auto l = detail::parse_link(*h))
                out.emplace_back(link_event{h->nlmsg_type == RTM_DELLINK, std::move(*l)});
            else if (auto a = detail::parse_address(*h))
                out.emplace_back(address_event{h->nlmsg_type == RTM_NEWADDR, std::move(*a)});
        }
    }
}

}  // namespace tandem::netlink
