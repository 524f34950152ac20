// netlink: link and address notifications from the kernel, for the daemon's io_context.
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/base/unique_fd.hpp"
#include "tandem/netlink/route.hpp"

#include <cstddef>
#include <variant>
#include <vector>

namespace tandem::netlink {

// RTM_NEWLINK / RTM_DELLINK: a link changed (up, carrier, name) or went away.
struct link_event {
    bool removed = false;
    link_info link;
};

// RTM_NEWADDR / RTM_DELADDR. A removed address with proto == tandem_proto on
// the active node means someone took the VIP away; the daemon decides what to do.
struct address_event {
    bool added = true;
    address_info address;
};

// The kernel dropped notifications because the socket's buffer overran
// (ENOBUFS): what we know may be stale. Re-read the truth with route_socket
// (link(), has_address()) instead of trusting earlier events.
struct resync_needed {};

using event = std::variant<link_event, address_event, resync_needed>;

// One NETLINK_ROUTE socket subscribed to RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR and
// RTNLGRP_IPV6_IFADDR; non-blocking and CLOEXEC. It owns no thread: the daemon
// wraps fd() in an Asio descriptor, waits for readability and calls drain().
class event_socket {
public:
    [[nodiscard]] static result<event_socket> open();

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

    // Reads until the socket is empty and returns what it read, in kernel order.
    // Messages of other types, and any not sent by the kernel, are skipped.
    [[nodiscard]] result<std::vector<event>> drain();

private:
    explicit event_socket(unique_fd fd);

    unique_fd fd_;
    std::vector<std::byte> buf_;
};

}  // namespace tandem::netlink
