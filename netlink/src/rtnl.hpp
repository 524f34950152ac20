// netlink (internal): decoding RTM_*LINK and RTM_*ADDR messages, shared by requests and events.
#pragma once

#include "tandem/netlink/route.hpp"

#include <linux/netlink.h>

#include <optional>

namespace tandem::netlink::detail {

// RTM_NEWLINK / RTM_DELLINK; nullopt for anything else or a malformed message.
[[nodiscard]] std::optional<link_info> parse_link(const nlmsghdr& h);
// RTM_NEWADDR / RTM_DELADDR of AF_INET or AF_INET6; nullopt otherwise.
[[nodiscard]] std::optional<address_info> parse_address(const nlmsghdr& h);

}  // namespace tandem::netlink::detail
