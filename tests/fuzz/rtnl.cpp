// fuzz: decoding RTM_*LINK and RTM_*ADDR messages as the event socket and the route socket receive them.
#include "rtnl.hpp"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <cstring>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < sizeof(nlmsghdr)) return 0;
    // The callers pass only messages that NLMSG_OK accepted within the received
    // buffer; keep that contract, and the alignment recvmsg gives.
    std::vector<std::uint32_t> buf((size + 3) / 4);
    std::memcpy(buf.data(), data, size);
    auto* h = reinterpret_cast<nlmsghdr*>(buf.data());
    if (h->nlmsg_len < sizeof(nlmsghdr) || h->nlmsg_len > size) h->nlmsg_len = static_cast<std::uint32_t>(size);
    static const std::uint16_t types[] = {RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR};
    h->nlmsg_type = types[data[4] & 3];  // steer most inputs to a type we decode
    (void)tandem::netlink::detail::parse_link(*h);
    (void)tandem::netlink::detail::parse_address(*h);
    return 0;
}
