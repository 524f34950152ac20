// netlink: the AF_PACKET sender and one burst of VIP announcements.
#include "tandem/netlink/announce.hpp"

#include "tandem/netlink/frames.hpp"

#include <linux/if_packet.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>

namespace tandem::netlink {

result<packet_socket> packet_socket::open(int ifindex) {
    unique_fd fd(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));
    if (!fd) return errno_error();
    sockaddr_ll local{};
    local.sll_family = AF_PACKET;
    local.sll_ifindex = ifindex;
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) return errno_error();
    return packet_socket(std::move(fd));
}

result<void> packet_socket::send(std::span<const std::byte> frame) {
    for (;;) {
        ssize_t n = ::send(fd_.get(), frame.data(), frame.size(), MSG_DONTWAIT);
        if (n >= 0) return {};
        if (errno != EINTR) return errno_error();
    }
}

result<void> send_burst(packet_socket& socket, const mac_address& mac, const vip_address& vip) {
    std::array<std::byte, std::max(arp_frame_size, na_frame_size)> buf{};
    result<void> first{};
    auto send = [&](result<std::size_t> built) {
        result<void> r = built ? socket.send(std::span(buf).first(*built)) : result<void>(built.error());
        if (first && !r) first = r;
    };
    if (vip.family == AF_INET) {
        std::span<const std::byte, 4> ipv4(vip.bytes.data(), 4);
        send(build_garp_request(buf, mac, ipv4));
        send(build_garp_reply(buf, mac, ipv4));
    } else {
        send(build_unsolicited_na(buf, mac, vip.bytes));
    }
    return first;
}

}  // namespace tandem::netlink
