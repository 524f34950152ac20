// netlink: telling the segment that the VIP moved — the raw socket, one burst of announcements, the repeat plan.
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/base/unique_fd.hpp"
#include "tandem/netlink/vip.hpp"

#include <chrono>
#include <cstddef>
#include <span>

namespace tandem::netlink {

// An AF_PACKET raw socket bound to one interface, for sending whole Ethernet
// frames. Bound with protocol 0 so that it receives nothing and no queue of
// unread packets builds up. Needs CAP_NET_RAW.
class packet_socket {
public:
    [[nodiscard]] static result<packet_socket> open(int ifindex);

    // Sends one frame without blocking; a full queue is an error (EAGAIN),
    // because the next burst follows anyway.
    [[nodiscard]] result<void> send(std::span<const std::byte> frame);

private:
    explicit packet_socket(unique_fd fd) noexcept : fd_(std::move(fd)) {}
    unique_fd fd_;
};

// How often the daemon repeats send_burst after taking the VIP; its timers do
// the waiting. The first burst goes out at once, the others `spacing` apart.
//
// Linux ignores an ARP that would change a neighbour entry within `locktime`
// of the entry's last change (net.ipv4.neigh.<dev>.locktime, default 1 s).
// Recent kernels exempt a well-formed gratuitous ARP; older kernels do not, and
// a plain ARP reply from the old node (still answering while it dies) opens
// such a window at any moment. Repeats crowded into one second can all fall
// inside one window and be lost; spaced more than 1 s apart, each lands after
// the window the previous update opened. See docs/vip.md.
struct announce_plan {
    int count = 3;
    std::chrono::milliseconds spacing{1100};
};

// One burst: for IPv4 a gratuitous ARP request then a reply (see frames.hpp for
// why both); for IPv6 one unsolicited Neighbor Advertisement with Override.
// Sends every frame even if one fails, and returns the first error.
[[nodiscard]] result<void> send_burst(packet_socket& socket, const mac_address& mac, const vip_address& vip);

}  // namespace tandem::netlink
