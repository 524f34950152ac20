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
    if (size >= heartbeat_mac_offset) {
        std::array<std::byte, heartbeat_size> signed_dgram{};
        std::copy_n(in.begin(), heartbeat_mac_offset, signed_dgram.begin());
        auto mac = hmac_sha256(key, std::span(signed_dgram).first(heartbeat_mac_offset));
        std::copy(mac.begin(), mac.end(), signed_dgram.begin() + heartbeat_mac_offset);
        auto r = decode_heartbeat(signed_dgram, key);
        if (r.ok) {
            std::array<std::byte, heartbeat_size> again{};
            encode_heartbeat(r.hb, key, again);
            if (again != signed_dgram) __builtin_trap();
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
