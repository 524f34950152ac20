// agent: ICMP echo request and reply bytes for the connectivity test (pure; fuzzed).
#include "tandem/agent/icmp.hpp"

#include "tandem/base/bytes.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace tandem::agent {

namespace {

std::uint16_t inet_checksum(std::span<const std::byte> data) {
    std::uint32_t sum = 0;
    for (std::size_t i = 0; i + 1 < data.size(); i += 2) sum += load_be<std::uint16_t>(data.subspan(i));
    if (data.size() % 2) sum += std::to_integer<std::uint32_t>(data.back()) << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum);
}

}  // namespace

std::size_t build_echo_request(std::span<std::byte> out, int family, std::uint16_t id, std::uint16_t seq) {
    constexpr std::size_t len = 16;  // 8-byte header + 8 bytes of payload ("tandemhb")
    std::fill_n(out.begin(), len, std::byte{0});
    out[0] = std::byte{static_cast<std::uint8_t>(family == AF_INET ? 8 : 128)};
    store_be<std::uint16_t>(out.subspan(4), id);
    store_be<std::uint16_t>(out.subspan(6), seq);
    std::memcpy(out.data() + 8, "tandemhb", 8);
    if (family == AF_INET) store_be<std::uint16_t>(out.subspan(2), inet_checksum(out.first(len)));
    return len;
}

int parse_echo_reply(std::span<const std::byte> p, int family, std::uint16_t id) {
    if (family == AF_INET) {
        if (p.size() < 20) return -1;
        std::size_t ihl = (std::to_integer<std::size_t>(p[0]) & 0x0f) * 4;
        if (ihl < 20 || p.size() < ihl + 8) return -1;
        p = p.subspan(ihl);
        if (p[0] != std::byte{0}) return -1;  // echo reply
    } else {
        if (p.size() < 8 || p[0] != std::byte{129}) return -1;
    }
    if (load_be<std::uint16_t>(p.subspan(4)) != id) return -1;
    return load_be<std::uint16_t>(p.subspan(6));
}

}  // namespace tandem::agent
