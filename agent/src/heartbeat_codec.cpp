// agent: heartbeat encoding, authentication and replay protection.
#include "tandem/agent/heartbeat_codec.hpp"

#include "tandem/base/bytes.hpp"
#include "tandem/base/hmac.hpp"

#include <algorithm>
#include <cstring>

namespace tandem::agent {

namespace {

void put_name(std::span<std::byte> out, std::string_view s) {
    std::fill(out.begin(), out.end(), std::byte{0});
    std::memcpy(out.data(), s.data(), std::min(s.size(), out.size()));
}

// A name field: text then zero padding; a NUL inside the text or a byte after
// the padding starts is malformed.
bool get_name(std::span<const std::byte> in, std::string& out) {
    auto end = std::find(in.begin(), in.end(), std::byte{0});
    if (std::any_of(end, in.end(), [](std::byte b) { return b != std::byte{0}; })) return false;
    out.assign(reinterpret_cast<const char*>(in.data()), static_cast<std::size_t>(end - in.begin()));
    return true;
}

struct layout {
    std::size_t size, mac, names;
};
constexpr layout v2{heartbeat_size, heartbeat_mac_offset, 120};
constexpr layout v1{heartbeat_size_v1, heartbeat_mac_offset_v1, 80};

}  // namespace

std::string_view to_string(drop_reason r) noexcept {
    switch (r) {
        case drop_reason::truncated: return "truncated";
        case drop_reason::oversize: return "oversize";
        case drop_reason::bad_magic: return "bad_magic";
        case drop_reason::bad_version: return "bad_version";
        case drop_reason::bad_length: return "bad_length";
        case drop_reason::bad_mac: return "bad_mac";
        case drop_reason::bad_field: return "bad_field";
        case drop_reason::replayed: return "replayed";
        case drop_reason::wrong_cluster: return "wrong_cluster";
        case drop_reason::wrong_sender: return "wrong_sender";
        case drop_reason::count_: break;
    }
    return "unknown";
}

std::size_t encode_heartbeat(const heartbeat& hb, std::span<const std::byte> key,
                             std::span<std::byte, heartbeat_size> out) {
    const bool old = hb.wire_version == heartbeat_version_v1;
    const std::uint8_t version = old ? heartbeat_version_v1
                                 : hb.wire_version == heartbeat_version_v2 ? heartbeat_version_v2
                                                                           : heartbeat_version;
    const layout& L = old ? v1 : v2;
    std::span<std::byte> b = std::span<std::byte>(out).first(L.size);
    std::fill(out.begin(), out.end(), std::byte{0});
    store_be<std::uint32_t>(b.subspan(0), heartbeat_magic);
    b[4] = std::byte{version};
    b[5] = std::byte{1};
    store_be<std::uint16_t>(b.subspan(6), static_cast<std::uint16_t>(L.size));
    store_be<std::uint64_t>(b.subspan(8), hb.boot_id);
    store_be<std::uint64_t>(b.subspan(16), hb.seq);
    store_be<std::uint64_t>(b.subspan(24), hb.send_mono_ns);
    store_be<std::uint64_t>(b.subspan(32), hb.echo_seq);
    store_be<std::uint64_t>(b.subspan(40), hb.echo_mono_ns);
    store_be<std::uint64_t>(b.subspan(48), hb.echo_hold_ns);
    store_be<std::uint64_t>(b.subspan(56), hb.generation);
    b[64] = std::byte{hb.role};
    b[65] = static_cast<std::byte>(hb.state);
    b[66] = static_cast<std::byte>(hb.mode);
    // What an older peer would refuse as a bad field stays out of its format.
    const bool v3 = version == heartbeat_version;
    b[67] = static_cast<std::byte>(!v3 && hb.sync == sync_state::outdated ? sync_state::inconsistent : hb.sync);
    store_be<std::uint16_t>(b.subspan(68), v3 ? hb.flags : static_cast<std::uint16_t>(hb.flags & hb_known_flags_v2));
    store_be<std::uint16_t>(b.subspan(70), hb.sync_permille);
    b[72] = std::byte{hb.link};
    if (!old) {
        store_be<std::uint32_t>(b.subspan(76), hb.link_seq);
        store_be<std::uint64_t>(b.subspan(80), hb.ks_seq);
        store_be<std::uint64_t>(b.subspan(88), hb.ks_rx_ns);
        store_be<std::uint64_t>(b.subspan(96), hb.ks_tx_ns);
        store_be<std::uint64_t>(b.subspan(104), hb.ks_reply_seq);
        store_be<std::uint32_t>(b.subspan(112), hb.rx_lost);
    }
    put_name(b.subspan(L.names, name_field), hb.cluster);
    put_name(b.subspan(L.names + name_field, name_field), hb.node);
    put_name(b.subspan(L.names + 2 * name_field, version_field), hb.version);
    auto mac = hmac_sha256(key, b.first(L.mac));
    std::copy(mac.begin(), mac.end(), b.begin() + static_cast<std::ptrdiff_t>(L.mac));
    return L.size;
}

decode_result decode_heartbeat(std::span<const std::byte> in, std::span<const std::byte> key) {
    decode_result r;
    auto fail = [&](drop_reason why) {
        r.ok = false;
        r.reason = why;
        return r;
    };
    if (in.size() < heartbeat_size_v1) return fail(drop_reason::truncated);
    if (in.size() > heartbeat_size) return fail(drop_reason::oversize);  // larger than any version
    if (load_be<std::uint32_t>(in) != heartbeat_magic) return fail(drop_reason::bad_magic);
    auto version = std::to_integer<std::uint8_t>(in[4]);
    if (version != heartbeat_version && version != heartbeat_version_v2 && version != heartbeat_version_v1)
        return fail(drop_reason::bad_version);
    const bool old = version == heartbeat_version_v1;
    const layout& L = old ? v1 : v2;
    if (in.size() < L.size) return fail(drop_reason::truncated);
    if (in.size() > L.size) return fail(drop_reason::oversize);
    if (std::to_integer<std::uint8_t>(in[5]) != 1 || load_be<std::uint16_t>(in.subspan(6)) != L.size)
        return fail(drop_reason::bad_length);
    // Nothing below the MAC is trusted until it verifies.
    auto mac = hmac_sha256(key, in.first(L.mac));
    if (!equal_constant_time(mac, in.subspan(L.mac, 32))) return fail(drop_reason::bad_mac);

    heartbeat& hb = r.hb;
    hb.boot_id = load_be<std::uint64_t>(in.subspan(8));
    hb.seq = load_be<std::uint64_t>(in.subspan(16));
    hb.send_mono_ns = load_be<std::uint64_t>(in.subspan(24));
    hb.echo_seq = load_be<std::uint64_t>(in.subspan(32));
    hb.echo_mono_ns = load_be<std::uint64_t>(in.subspan(40));
    hb.echo_hold_ns = load_be<std::uint64_t>(in.subspan(48));
    hb.generation = load_be<std::uint64_t>(in.subspan(56));
    hb.role = std::to_integer<std::uint8_t>(in[64]);
    auto state = std::to_integer<std::uint8_t>(in[65]);
    auto mode = std::to_integer<std::uint8_t>(in[66]);
    auto sync = std::to_integer<std::uint8_t>(in[67]);
    hb.flags = load_be<std::uint16_t>(in.subspan(68));
    hb.sync_permille = load_be<std::uint16_t>(in.subspan(70));
    hb.link = std::to_integer<std::uint8_t>(in[72]);
    hb.wire_version = version;
    auto zero = [](std::byte x) { return x == std::byte{0}; };
    bool padding_zero;
    if (old) {
        padding_zero = std::all_of(in.begin() + 73, in.begin() + 80, zero);
    } else {
        hb.link_seq = load_be<std::uint32_t>(in.subspan(76));
        hb.ks_seq = load_be<std::uint64_t>(in.subspan(80));
        hb.ks_rx_ns = load_be<std::uint64_t>(in.subspan(88));
        hb.ks_tx_ns = load_be<std::uint64_t>(in.subspan(96));
        hb.ks_reply_seq = load_be<std::uint64_t>(in.subspan(104));
        hb.rx_lost = load_be<std::uint32_t>(in.subspan(112));
        padding_zero = std::all_of(in.begin() + 73, in.begin() + 76, zero) && std::all_of(in.begin() + 116, in.begin() + 120, zero);
    }
    if (!padding_zero || (hb.role != 1 && hb.role != 2) || !valid_state(state) ||
        state == static_cast<std::uint8_t>(host_state::unknown) || !valid_mode(mode) || !valid_sync(sync) ||
        (hb.flags & ~(version == heartbeat_version ? hb_known_flags : hb_known_flags_v2)) != 0 ||
        (version != heartbeat_version && sync == static_cast<std::uint8_t>(sync_state::outdated)) ||
        hb.sync_permille > 1000 || hb.seq == 0)
        return fail(drop_reason::bad_field);
    hb.state = static_cast<host_state>(state);
    hb.mode = static_cast<host_mode>(mode);
    hb.sync = static_cast<sync_state>(sync);
    if (!get_name(in.subspan(L.names, name_field), hb.cluster) ||
        !get_name(in.subspan(L.names + name_field, name_field), hb.node) ||
        !get_name(in.subspan(L.names + 2 * name_field, version_field), hb.version))
        return fail(drop_reason::bad_field);
    r.ok = true;
    return r;
}

bool replay_window::accept(std::uint64_t boot_id, std::uint64_t seq) noexcept {
    constexpr std::uint64_t width = 64;
    if (!any_ || boot_id > boot_id_) {
        any_ = true;
        boot_id_ = boot_id;
        highest_ = seq;
        bitmap_ = 1;
        return true;
    }
    if (boot_id < boot_id_) return false;
    if (seq > highest_) {
        std::uint64_t shift = seq - highest_;
        bitmap_ = shift >= width ? 1 : (bitmap_ << shift) | 1;
        highest_ = seq;
        return true;
    }
    std::uint64_t age = highest_ - seq;
    if (age >= width) return false;
    std::uint64_t bit = 1ull << age;
    if (bitmap_ & bit) return false;
    bitmap_ |= bit;
    return true;
}

}  // namespace tandem::agent
