// fuzz: the heartbeat decoder, raw and with a valid MAC so the field checks are reached; and the replay window.
#include "tandem/agent/heartbeat_codec.hpp"

#include "tandem/base/hmac.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

using namespace tandem;
using namespace tandem::agent;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::vector<std::byte> key(48, std::byte{0x5a});
    auto in = std::span(reinterpret_cast<const std::byte*>(data), size);
    (void)decode_heartbeat(in, key);  // as received: almost all fail the MAC

    // The same bytes as a body signed with the key: what a peer holding the key
    // could send. Whatever decodes must re-encode to the same datagram.
    // The version byte picks the format (1: 192 bytes, else 232).
    const bool v1 = size > 4 && data[4] == heartbeat_version_v1;
    const std::size_t body = v1 ? heartbeat_mac_offset_v1 : heartbeat_mac_offset;
    const std::size_t total = v1 ? heartbeat_size_v1 : heartbeat_size;
    if (size >= body) {
        std::array<std::byte, heartbeat_size> signed_dgram{};
        std::copy_n(in.begin(), body, signed_dgram.begin());
        auto mac = hmac_sha256(key, std::span(signed_dgram).first(body));
        std::copy(mac.begin(), mac.end(), signed_dgram.begin() + static_cast<std::ptrdiff_t>(body));
        auto r = decode_heartbeat(std::span(signed_dgram).first(total), key);
        if (r.ok) {
            std::array<std::byte, heartbeat_size> again{};
            if (encode_heartbeat(r.hb, key, again) != total || again != signed_dgram) __builtin_trap();
        }
    }

    // The replay window never accepts the same (boot, seq) twice.
    replay_window w;
    for (std::size_t i = 0; i + 9 <= size; i += 9) {
        std::uint64_t seq;
        std::memcpy(&seq, data + i + 1, 8);
        std::uint64_t boot = data[i] & 3;
        if (w.accept(boot, seq) && w.accept(boot, seq)) __builtin_trap();
    }
    return 0;
}
