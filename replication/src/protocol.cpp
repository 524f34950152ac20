// replication: frame and message encoding, validation of every received field, negotiation and authentication.
#include "tandem/replication/protocol.hpp"

#include "tandem/base/bytes.hpp"

#include <sys/random.h>
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

namespace tandem::replication {

namespace {

error_code fail(errc e) noexcept { return make_error_code(e); }

bool all_zero(std::span<const std::byte> b) noexcept {
    return std::all_of(b.begin(), b.end(), [](std::byte x) { return x == std::byte{0}; });
}

// Writes the frame header for a payload of `length` bytes; the caller checked the size.
void put_header(std::span<std::byte> out, msg_type t, std::uint64_t seq, std::size_t length) noexcept {
    store_be<std::uint32_t>(out.subspan(0), frame_magic);
    store_be<std::uint16_t>(out.subspan(4), static_cast<std::uint16_t>(t));
    store_be<std::uint16_t>(out.subspan(6), 0);
    store_be<std::uint32_t>(out.subspan(8), static_cast<std::uint32_t>(length));
    store_be<std::uint32_t>(out.subspan(12), 0);
    store_be<std::uint64_t>(out.subspan(16), seq);
}

// Reserves a frame of `length` payload bytes at the start of `out` and returns the payload span.
result<std::span<std::byte>> start_frame(std::span<std::byte> out, msg_type t, std::uint64_t seq,
                                         std::size_t length) noexcept {
    if (length > max_payload) return fail(errc::too_large);
    if (out.size() < frame_header_size + length) return fail(errc::buffer_too_small);
    put_header(out, t, seq, length);
    auto payload = out.subspan(frame_header_size, length);
    std::fill(payload.begin(), payload.end(), std::byte{0});
    return payload;
}

void put_gen(std::span<std::byte> out, const generation_ids& g) noexcept {
    store_be<std::uint64_t>(out.subspan(0), g.current);
    store_be<std::uint64_t>(out.subspan(8), g.bitmap);
    store_be<std::uint64_t>(out.subspan(16), g.history[0]);
    store_be<std::uint64_t>(out.subspan(24), g.history[1]);
}

generation_ids get_gen(std::span<const std::byte> in) noexcept {
    generation_ids g;
    g.current = load_be<std::uint64_t>(in.subspan(0));
    g.bitmap = load_be<std::uint64_t>(in.subspan(8));
    g.history[0] = load_be<std::uint64_t>(in.subspan(16));
    g.history[1] = load_be<std::uint64_t>(in.subspan(24));
    return g;
}

// Fresh metadata (current 0) has no bitmap id and no history; anything else is malformed.
bool gen_plausible(const generation_ids& g) noexcept {
    return g.current != gen_none || (g.bitmap == gen_none && g.history[0] == gen_none && g.history[1] == gen_none);
}

bool printable_name_byte(std::byte b) noexcept {
    auto c = std::to_integer<unsigned>(b);
    return c > 0x20 && c < 0x7f;  // no space, no control, ASCII: names appear in logs and file names
}

bool text_byte_ok(std::byte b) noexcept {
    auto c = std::to_integer<unsigned>(b);
    return c >= 0x20 && c != 0x7f;  // UTF-8 continuation bytes allowed; control characters never reach a log
}

// ceil(a / b) without the overflow of (a + b - 1) / b near 2^64.
std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) noexcept { return a / b + (a % b != 0); }

bool range_in_volume(std::uint64_t offset, std::uint64_t length, std::uint64_t volume_size) noexcept {
    return offset <= volume_size && length <= volume_size - offset;
}

result<void> check_empty(std::span<const std::byte> payload) noexcept {
    if (!payload.empty()) return fail(errc::bad_length);
    return {};
}

result<ack_msg> decode_ack(std::span<const std::byte> p) noexcept {
    if (p.size() != ack_size) return fail(errc::bad_length);
    if (!all_zero(p.subspan(12, 4))) return fail(errc::bad_reserved);
    ack_msg m;
    m.seq = load_be<std::uint64_t>(p);
    auto st = load_be<std::uint32_t>(p.subspan(8));
    if (st > static_cast<std::uint32_t>(ack_status::refused)) return fail(errc::bad_field);
    m.status = static_cast<ack_status>(st);
    return m;
}

result<std::size_t> encode_ack(std::span<std::byte> out, msg_type t, std::uint64_t seq, const ack_msg& m) noexcept {
    auto p = start_frame(out, t, seq, ack_size);
    if (!p) return p.error();
    store_be<std::uint64_t>(*p, m.seq);
    store_be<std::uint32_t>(p->subspan(8), static_cast<std::uint32_t>(m.status));
    return frame_header_size + ack_size;
}

// The three fields digest_request and digest_reply share.
result<digest_request_msg> decode_digest_head(std::span<const std::byte> p, std::uint64_t volume_size) noexcept {
    digest_request_msg m;
    m.offset = load_be<std::uint64_t>(p);
    m.length = load_be<std::uint32_t>(p.subspan(8));
    m.chunk_size = load_be<std::uint32_t>(p.subspan(12));
    if (m.length == 0 || m.chunk_size == 0) return fail(errc::bad_length);
    if (m.offset % wire_sector || m.length % wire_sector || m.chunk_size % wire_sector) return fail(errc::misaligned);
    if (m.chunk_count() > max_digests) return fail(errc::too_large);
    if (!range_in_volume(m.offset, m.length, volume_size)) return fail(errc::out_of_range);
    return m;
}

result<std::size_t> encode_ping_like(std::span<std::byte> out, msg_type t, std::uint64_t seq,
                                     const ping_msg& m) noexcept {
    auto p = start_frame(out, t, seq, ping_size);
    if (!p) return p.error();
    store_be<std::uint64_t>(*p, m.echo);
    return frame_header_size + ping_size;
}

result<ping_msg> decode_ping_like(std::span<const std::byte> p) noexcept {
    if (p.size() != ping_size) return fail(errc::bad_length);
    return ping_msg{load_be<std::uint64_t>(p)};
}

}  // namespace

// ---- frame header ----------------------------------------------------------------------------------

bool known_type(std::uint16_t t) noexcept {
    switch (static_cast<msg_type>(t)) {
        case msg_type::hello:
        case msg_type::auth_challenge:
        case msg_type::auth_response:
        case msg_type::auth_ok:
        case msg_type::data:
        case msg_type::data_ack:
        case msg_type::flush:
        case msg_type::flush_ack:
        case msg_type::zero:
        case msg_type::bitmap_chunk:
        case msg_type::resync_done:
        case msg_type::digest_request:
        case msg_type::digest_reply:
        case msg_type::error:
        case msg_type::ping:
        case msg_type::pong: return true;
    }
    return false;
}

std::string_view to_string(msg_type t) noexcept {
    switch (t) {
        case msg_type::hello: return "hello";
        case msg_type::auth_challenge: return "auth_challenge";
        case msg_type::auth_response: return "auth_response";
        case msg_type::auth_ok: return "auth_ok";
        case msg_type::data: return "data";
        case msg_type::data_ack: return "data_ack";
        case msg_type::flush: return "flush";
        case msg_type::flush_ack: return "flush_ack";
        case msg_type::zero: return "zero";
        case msg_type::bitmap_chunk: return "bitmap_chunk";
        case msg_type::resync_done: return "resync_done";
        case msg_type::digest_request: return "digest_request";
        case msg_type::digest_reply: return "digest_reply";
        case msg_type::error: return "error";
        case msg_type::ping: return "ping";
        case msg_type::pong: return "pong";
    }
    return "unknown";
}

// The hello may grow in later versions (new fields after byte 96), so its
// length has a range; decode_hello accepts extra bytes only from a peer whose
// version range reaches past 1.
inline constexpr std::size_t max_hello_size = 4096;

bool payload_length_ok(msg_type t, std::uint32_t n) noexcept {
    switch (t) {
        case msg_type::hello: return n >= hello_size && n <= max_hello_size;
        case msg_type::auth_challenge: return n == auth_challenge_size;
        case msg_type::auth_response: return n == auth_response_size;
        case msg_type::auth_ok:
        case msg_type::flush: return n == 0;
        case msg_type::data: return n > data_header_size && n <= max_payload;
        case msg_type::data_ack:
        case msg_type::flush_ack: return n == ack_size;
        case msg_type::zero: return n == zero_size;
        case msg_type::bitmap_chunk:
            return n >= bitmap_chunk_header_size + 8 && (n - bitmap_chunk_header_size) % 8 == 0 &&
                   n <= bitmap_chunk_header_size + 8 * max_bitmap_words;
        case msg_type::resync_done: return n == resync_done_size;
        case msg_type::digest_request: return n == digest_header_size;
        case msg_type::digest_reply:
            return n >= digest_header_size + 8 && (n - digest_header_size) % 8 == 0 &&
                   n <= digest_header_size + 8 * max_digests;
        case msg_type::error: return n >= 4 && n <= 4 + max_error_text;
        case msg_type::ping:
        case msg_type::pong: return n == ping_size;
    }
    return false;
}

result<frame_header> decode_frame_header(std::span<const std::byte> in) noexcept {
    if (in.size() < frame_header_size) return fail(errc::bad_length);
    if (load_be<std::uint32_t>(in) != frame_magic) return fail(errc::bad_magic);
    if (!all_zero(in.subspan(12, 4))) return fail(errc::bad_reserved);
    auto type = load_be<std::uint16_t>(in.subspan(4));
    if (!known_type(type)) return fail(errc::unknown_type);
    frame_header h;
    h.type = static_cast<msg_type>(type);
    h.flags = load_be<std::uint16_t>(in.subspan(6));
    if ((h.flags & ~frame_known_flags) != 0) return fail(errc::bad_flags);
    h.length = load_be<std::uint32_t>(in.subspan(8));
    if (h.length > max_payload) return fail(errc::too_large);
    if (!payload_length_ok(h.type, h.length)) return fail(errc::bad_length);
    h.seq = load_be<std::uint64_t>(in.subspan(16));
    return h;
}

// ---- hello and negotiation -------------------------------------------------------------------------

result<std::size_t> encode_hello(std::span<std::byte> out, std::uint64_t seq, const hello& m) noexcept {
    if (m.node_name.empty() || m.node_name.size() > node_name_size ||
        !std::all_of(m.node_name.begin(), m.node_name.end(),
                     [](char c) { return printable_name_byte(static_cast<std::byte>(c)); }))
        return fail(errc::bad_field);
    auto p = start_frame(out, msg_type::hello, seq, hello_size);
    if (!p) return p.error();
    auto b = *p;
    store_be<std::uint16_t>(b.subspan(0), m.version_min);
    store_be<std::uint16_t>(b.subspan(2), m.version_max);
    store_be<std::uint64_t>(b.subspan(8), m.features);
    std::memcpy(b.data() + 16, m.node_name.data(), m.node_name.size());
    store_be<std::uint64_t>(b.subspan(48), m.volume_size);
    store_be<std::uint32_t>(b.subspan(56), m.block_size);
    store_be<std::uint32_t>(b.subspan(60), m.flags);
    put_gen(b.subspan(64), m.gen);
    return frame_header_size + hello_size;
}

result<hello> decode_hello(std::span<const std::byte> p) {
    if (p.size() < hello_size || p.size() > max_hello_size) return fail(errc::bad_length);
    hello m;
    m.version_min = load_be<std::uint16_t>(p.subspan(0));
    m.version_max = load_be<std::uint16_t>(p.subspan(2));
    if (m.version_min == 0 || m.version_min > m.version_max) return fail(errc::bad_version);
    // Bytes past the version-1 layout belong to a later version's hello.
    if (p.size() > hello_size && m.version_max <= 1) return fail(errc::bad_length);
    if (!all_zero(p.subspan(4, 4))) return fail(errc::bad_reserved);
    m.features = load_be<std::uint64_t>(p.subspan(8));

    auto name = p.subspan(16, node_name_size);
    auto end = std::find(name.begin(), name.end(), std::byte{0});
    if (end == name.begin() || !std::all_of(name.begin(), end, printable_name_byte) ||
        !std::all_of(end, name.end(), [](std::byte x) { return x == std::byte{0}; }))
        return fail(errc::bad_field);
    m.node_name.assign(reinterpret_cast<const char*>(name.data()), static_cast<std::size_t>(end - name.begin()));

    m.volume_size = load_be<std::uint64_t>(p.subspan(48));
    m.block_size = load_be<std::uint32_t>(p.subspan(56));
    m.flags = load_be<std::uint32_t>(p.subspan(60));
    if (m.volume_size == 0) return fail(errc::bad_field);
    if (m.block_size < 512 || m.block_size > 65536 || !std::has_single_bit(m.block_size)) return fail(errc::bad_field);
    if (m.volume_size % m.block_size != 0) return fail(errc::misaligned);
    if ((m.flags & ~hello_known_flags) != 0) return fail(errc::bad_flags);
    m.gen = get_gen(p.subspan(64));
    if (!gen_plausible(m.gen)) return fail(errc::bad_field);
    return m;
}

result<negotiated> negotiate(const hello& local, const hello& peer) noexcept {
    negotiated n;
    auto lo = std::max(local.version_min, peer.version_min);
    auto hi = std::min(local.version_max, peer.version_max);
    if (lo > hi) return fail(errc::bad_version);
    n.version = hi;
    if (local.block_size != peer.block_size) return fail(errc::block_size_mismatch);
    bool local_primary = local.flags & hello_primary;
    bool peer_primary = peer.flags & hello_primary;
    if (local_primary && peer_primary) return fail(errc::role_conflict);
    // JSA, "Partition requirements for /store": the secondary's /store must be at
    // least the primary's. With no primary yet, only the smaller size can be
    // replicated; the engine checks the sync target again once decide_sync chose one.
    if (local_primary) {
        if (peer.volume_size < local.volume_size) return fail(errc::volume_too_small);
        n.volume_size = local.volume_size;
    } else if (peer_primary) {
        if (local.volume_size < peer.volume_size) return fail(errc::volume_too_small);
        n.volume_size = peer.volume_size;
    } else {
        n.volume_size = std::min(local.volume_size, peer.volume_size);
    }
    n.features = local.features & peer.features & feat_all_known;
    return n;
}

// ---- authentication ----------------------------------------------------------------------------------

auth_mac make_auth_response(std::span<const std::byte> key, auth_role responder, const auth_nonce& challenger_nonce,
                            const auth_nonce& responder_nonce) noexcept {
    std::array<std::byte, auth_context.size() + 1 + 2 * nonce_size> msg{};
    auto it = std::copy_n(reinterpret_cast<const std::byte*>(auth_context.data()), auth_context.size(), msg.begin());
    *it++ = static_cast<std::byte>(responder);
    it = std::copy(challenger_nonce.begin(), challenger_nonce.end(), it);
    std::copy(responder_nonce.begin(), responder_nonce.end(), it);
    return hmac_sha256(key, msg);
}

result<void> check_auth_response(std::span<const std::byte> key, auth_role responder,
                                 const auth_nonce& challenger_nonce, const auth_nonce& responder_nonce,
                                 const auth_mac& response) noexcept {
    // A peer that sends our own nonce back is reflecting our challenge: refuse
    // before computing anything. An empty key would authenticate anyone.
    if (key.empty() || challenger_nonce == responder_nonce) return fail(errc::auth_failed);
    auto expected = make_auth_response(key, responder, challenger_nonce, responder_nonce);
    if (!equal_constant_time(expected, response)) return fail(errc::auth_failed);
    return {};
}

result<auth_nonce> random_nonce() noexcept {
    auth_nonce n{};
    std::size_t got = 0;
    while (got < n.size()) {
        auto r = ::getrandom(n.data() + got, n.size() - got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return errno_error();
        }
        got += static_cast<std::size_t>(r);
    }
    return n;
}

result<std::size_t> encode_auth_challenge(std::span<std::byte> out, std::uint64_t seq,
                                          const auth_nonce& nonce) noexcept {
    auto p = start_frame(out, msg_type::auth_challenge, seq, nonce.size());
    if (!p) return p.error();
    std::copy(nonce.begin(), nonce.end(), p->begin());
    return frame_header_size + nonce.size();
}

result<std::size_t> encode_auth_response(std::span<std::byte> out, std::uint64_t seq, const auth_mac& mac) noexcept {
    auto p = start_frame(out, msg_type::auth_response, seq, mac.size());
    if (!p) return p.error();
    std::copy(mac.begin(), mac.end(), p->begin());
    return frame_header_size + mac.size();
}

result<std::size_t> encode_auth_ok(std::span<std::byte> out, std::uint64_t seq) noexcept {
    auto p = start_frame(out, msg_type::auth_ok, seq, 0);
    if (!p) return p.error();
    return frame_header_size;
}

result<auth_nonce> decode_auth_challenge(std::span<const std::byte> p) noexcept {
    if (p.size() != auth_challenge_size) return fail(errc::bad_length);
    auth_nonce n{};
    std::copy(p.begin(), p.end(), n.begin());
    // An all-zero nonce is what an uninitialised buffer looks like, not a random value.
    if (all_zero(p)) return fail(errc::bad_field);
    return n;
}

result<auth_mac> decode_auth_response(std::span<const std::byte> p) noexcept {
    if (p.size() != auth_response_size) return fail(errc::bad_length);
    auth_mac m{};
    std::copy(p.begin(), p.end(), m.begin());
    return m;
}

result<void> decode_auth_ok(std::span<const std::byte> p) noexcept { return check_empty(p); }

// ---- data --------------------------------------------------------------------------------------------

// Every replicated byte is hashed on both sides. On x86-64, libxxhash's dispatch
// entry picks the widest vector unit the CPU has (AVX2, AVX-512) at run time;
// the plain entry is built for SSE2 only. Both give the same XXH3 value.
std::uint64_t data_checksum(std::span<const std::byte> bytes) noexcept {
#if defined(__x86_64__)
    return XXH3_64bits_dispatch(bytes.data(), bytes.size());
#else
    return XXH3_64bits(bytes.data(), bytes.size());
#endif
}

namespace {
result<void> check_data_out(const data_msg& m) noexcept {
    if (m.bytes.empty() || m.bytes.size() > max_data_length) return fail(errc::bad_length);
    if (m.offset % wire_sector || m.bytes.size() % wire_sector) return fail(errc::misaligned);
    if ((m.flags & ~data_known_flags) != 0) return fail(errc::bad_flags);
    return {};
}

void put_data_header(std::span<std::byte> b, const data_msg& m) noexcept {
    store_be<std::uint64_t>(b.subspan(0), m.offset);
    store_be<std::uint32_t>(b.subspan(8), static_cast<std::uint32_t>(m.bytes.size()));
    store_be<std::uint32_t>(b.subspan(12), m.flags);
    store_be<std::uint64_t>(b.subspan(16), data_checksum(m.bytes));
}
}  // namespace

result<std::size_t> encode_data(std::span<std::byte> out, std::uint64_t seq, const data_msg& m) noexcept {
    if (auto ok = check_data_out(m); !ok) return ok.error();
    auto p = start_frame(out, msg_type::data, seq, data_header_size + m.bytes.size());
    if (!p) return p.error();
    put_data_header(*p, m);
    std::copy(m.bytes.begin(), m.bytes.end(), p->begin() + data_header_size);
    return frame_header_size + data_header_size + m.bytes.size();
}

result<std::size_t> encode_data_prefix(std::span<std::byte> out, std::uint64_t seq, const data_msg& m) noexcept {
    if (auto ok = check_data_out(m); !ok) return ok.error();
    if (out.size() < frame_header_size + data_header_size) return fail(errc::buffer_too_small);
    put_header(out, msg_type::data, seq, data_header_size + m.bytes.size());
    put_data_header(out.subspan(frame_header_size), m);
    return frame_header_size + data_header_size;
}

result<data_msg> decode_data_header(std::span<const std::byte> h, std::uint32_t payload_length,
                                    std::uint64_t volume_size) noexcept {
    if (h.size() < data_header_size || payload_length < data_header_size) return fail(errc::bad_length);
    data_msg m;
    m.offset = load_be<std::uint64_t>(h.subspan(0));
    m.length = load_be<std::uint32_t>(h.subspan(8));
    m.flags = load_be<std::uint32_t>(h.subspan(12));
    m.checksum = load_be<std::uint64_t>(h.subspan(16));
    if (m.length == 0 || m.length != payload_length - data_header_size || m.length > max_data_length)
        return fail(errc::bad_length);
    if ((m.flags & ~data_known_flags) != 0) return fail(errc::bad_flags);
    if (m.offset % wire_sector || m.length % wire_sector) return fail(errc::misaligned);
    if (!range_in_volume(m.offset, m.length, volume_size)) return fail(errc::out_of_range);
    return m;
}

result<data_msg> decode_data(std::span<const std::byte> p, std::uint64_t volume_size) noexcept {
    if (p.size() < data_header_size || p.size() > 0xffffffffu) return fail(errc::bad_length);
    auto m = decode_data_header(p, static_cast<std::uint32_t>(p.size()), volume_size);
    if (!m) return m;
    m->bytes = p.subspan(data_header_size);
    return m;
}

result<void> verify_data(const data_msg& m) noexcept {
    if (m.bytes.size() != m.length) return fail(errc::bad_length);
    if (data_checksum(m.bytes) != m.checksum) return fail(errc::bad_checksum);
    return {};
}

std::string_view to_string(ack_status s) noexcept {
    switch (s) {
        case ack_status::ok: return "ok";
        case ack_status::io_error: return "io_error";
        case ack_status::bad_checksum: return "bad_checksum";
        case ack_status::refused: return "refused";
    }
    return "unknown";
}

result<std::size_t> encode_data_ack(std::span<std::byte> out, std::uint64_t seq, const ack_msg& m) noexcept {
    return encode_ack(out, msg_type::data_ack, seq, m);
}
result<std::size_t> encode_flush(std::span<std::byte> out, std::uint64_t seq) noexcept {
    auto p = start_frame(out, msg_type::flush, seq, 0);
    if (!p) return p.error();
    return frame_header_size;
}
result<std::size_t> encode_flush_ack(std::span<std::byte> out, std::uint64_t seq, const ack_msg& m) noexcept {
    return encode_ack(out, msg_type::flush_ack, seq, m);
}
result<ack_msg> decode_data_ack(std::span<const std::byte> p) noexcept { return decode_ack(p); }
result<void> decode_flush(std::span<const std::byte> p) noexcept { return check_empty(p); }
result<ack_msg> decode_flush_ack(std::span<const std::byte> p) noexcept { return decode_ack(p); }

result<std::size_t> encode_zero(std::span<std::byte> out, std::uint64_t seq, const zero_msg& m) noexcept {
    auto p = start_frame(out, msg_type::zero, seq, zero_size);
    if (!p) return p.error();
    store_be<std::uint64_t>(*p, m.offset);
    store_be<std::uint32_t>(p->subspan(8), m.length);
    store_be<std::uint32_t>(p->subspan(12), 0);
    return frame_header_size + zero_size;
}

result<zero_msg> decode_zero(std::span<const std::byte> p, std::uint64_t volume_size) noexcept {
    if (p.size() != zero_size) return fail(errc::bad_length);
    if (!all_zero(p.subspan(12, 4))) return fail(errc::bad_reserved);
    zero_msg m;
    m.offset = load_be<std::uint64_t>(p);
    m.length = load_be<std::uint32_t>(p.subspan(8));
    if (m.length == 0 || m.length > max_zero_length) return fail(errc::bad_length);
    if (m.offset % wire_sector || m.length % wire_sector) return fail(errc::misaligned);
    if (!range_in_volume(m.offset, m.length, volume_size)) return fail(errc::out_of_range);
    return m;
}

// ---- resync and verify ---------------------------------------------------------------------------------

std::uint64_t bitmap_chunk_msg::word(std::size_t i) const noexcept { return load_be<std::uint64_t>(words_be.subspan(8 * i)); }

std::vector<std::uint64_t> bitmap_chunk_msg::to_words() const {
    std::vector<std::uint64_t> w(word_count());
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = word(i);
    return w;
}

result<std::size_t> encode_bitmap_chunk(std::span<std::byte> out, std::uint64_t seq, std::uint64_t start_block,
                                        std::span<const std::uint64_t> words) noexcept {
    if (words.empty() || words.size() > max_bitmap_words) return fail(errc::bad_length);
    if (start_block % 64 != 0) return fail(errc::misaligned);
    std::size_t len = bitmap_chunk_header_size + 8 * words.size();
    auto p = start_frame(out, msg_type::bitmap_chunk, seq, len);
    if (!p) return p.error();
    store_be<std::uint64_t>(*p, start_block);
    store_be<std::uint32_t>(p->subspan(8), static_cast<std::uint32_t>(words.size()));
    for (std::size_t i = 0; i < words.size(); ++i)
        store_be<std::uint64_t>(p->subspan(bitmap_chunk_header_size + 8 * i), words[i]);
    return frame_header_size + len;
}

result<bitmap_chunk_msg> decode_bitmap_chunk(std::span<const std::byte> p, std::uint64_t total_blocks) noexcept {
    if (p.size() < bitmap_chunk_header_size + 8 || (p.size() - bitmap_chunk_header_size) % 8 != 0)
        return fail(errc::bad_length);
    std::size_t count = (p.size() - bitmap_chunk_header_size) / 8;
    if (count > max_bitmap_words) return fail(errc::too_large);
    if (load_be<std::uint32_t>(p.subspan(8)) != count) return fail(errc::bad_length);
    if (!all_zero(p.subspan(12, 4))) return fail(errc::bad_reserved);
    bitmap_chunk_msg m;
    m.start_block = load_be<std::uint64_t>(p);
    m.words_be = p.subspan(bitmap_chunk_header_size);
    if (m.start_block % 64 != 0) return fail(errc::misaligned);
    std::uint64_t total_words = ceil_div(total_blocks, 64);
    std::uint64_t first_word = m.start_block / 64;
    if (first_word > total_words || count > total_words - first_word) return fail(errc::out_of_range);
    // Bits past the last block of the volume are never set.
    if (first_word + count == total_words && total_blocks % 64 != 0) {
        std::uint64_t valid = (std::uint64_t{1} << (total_blocks % 64)) - 1;
        if ((m.word(count - 1) & ~valid) != 0) return fail(errc::out_of_range);
    }
    return m;
}

result<std::size_t> encode_resync_done(std::span<std::byte> out, std::uint64_t seq, const resync_done_msg& m) noexcept {
    auto p = start_frame(out, msg_type::resync_done, seq, resync_done_size);
    if (!p) return p.error();
    put_gen(*p, m.gen);
    return frame_header_size + resync_done_size;
}

result<resync_done_msg> decode_resync_done(std::span<const std::byte> p) noexcept {
    if (p.size() != resync_done_size) return fail(errc::bad_length);
    resync_done_msg m{get_gen(p)};
    // A finished source has data, so it has a current id.
    if (m.gen.current == gen_none) return fail(errc::bad_field);
    return m;
}

std::size_t digest_request_msg::chunk_count() const noexcept {
    return chunk_size == 0 ? 0 : static_cast<std::size_t>(ceil_div(length, chunk_size));
}

std::uint64_t digest_reply_msg::digest(std::size_t i) const noexcept {
    return load_be<std::uint64_t>(digests_be.subspan(8 * i));
}

result<std::size_t> encode_digest_request(std::span<std::byte> out, std::uint64_t seq,
                                          const digest_request_msg& m) noexcept {
    if (m.length == 0 || m.chunk_size == 0) return fail(errc::bad_length);
    if (m.offset % wire_sector || m.length % wire_sector || m.chunk_size % wire_sector) return fail(errc::misaligned);
    if (m.chunk_count() > max_digests) return fail(errc::too_large);
    auto p = start_frame(out, msg_type::digest_request, seq, digest_header_size);
    if (!p) return p.error();
    store_be<std::uint64_t>(*p, m.offset);
    store_be<std::uint32_t>(p->subspan(8), m.length);
    store_be<std::uint32_t>(p->subspan(12), m.chunk_size);
    return frame_header_size + digest_header_size;
}

result<std::size_t> encode_digest_reply(std::span<std::byte> out, std::uint64_t seq, const digest_request_msg& m,
                                        std::span<const std::uint64_t> digests) noexcept {
    if (m.length == 0 || m.chunk_size == 0 || digests.size() != m.chunk_count()) return fail(errc::bad_length);
    if (m.offset % wire_sector || m.length % wire_sector || m.chunk_size % wire_sector) return fail(errc::misaligned);
    if (digests.size() > max_digests) return fail(errc::too_large);
    std::size_t len = digest_header_size + 8 * digests.size();
    auto p = start_frame(out, msg_type::digest_reply, seq, len);
    if (!p) return p.error();
    store_be<std::uint64_t>(*p, m.offset);
    store_be<std::uint32_t>(p->subspan(8), m.length);
    store_be<std::uint32_t>(p->subspan(12), m.chunk_size);
    for (std::size_t i = 0; i < digests.size(); ++i)
        store_be<std::uint64_t>(p->subspan(digest_header_size + 8 * i), digests[i]);
    return frame_header_size + len;
}

result<digest_request_msg> decode_digest_request(std::span<const std::byte> p, std::uint64_t volume_size) noexcept {
    if (p.size() != digest_header_size) return fail(errc::bad_length);
    return decode_digest_head(p, volume_size);
}

result<digest_reply_msg> decode_digest_reply(std::span<const std::byte> p, std::uint64_t volume_size) noexcept {
    if (p.size() < digest_header_size || (p.size() - digest_header_size) % 8 != 0) return fail(errc::bad_length);
    auto head = decode_digest_head(p, volume_size);
    if (!head) return head.error();
    if ((p.size() - digest_header_size) / 8 != head->chunk_count()) return fail(errc::bad_length);
    digest_reply_msg m;
    m.offset = head->offset;
    m.length = head->length;
    m.chunk_size = head->chunk_size;
    m.digests_be = p.subspan(digest_header_size);
    return m;
}

// ---- error, ping -------------------------------------------------------------------------------------

result<std::size_t> encode_error(std::span<std::byte> out, std::uint64_t seq, std::uint32_t code,
                                 std::string_view text) noexcept {
    text = text.substr(0, max_error_text);
    auto p = start_frame(out, msg_type::error, seq, 4 + text.size());
    if (!p) return p.error();
    store_be<std::uint32_t>(*p, code);
    for (std::size_t i = 0; i < text.size(); ++i) {
        auto b = static_cast<std::byte>(text[i]);
        (*p)[4 + i] = text_byte_ok(b) ? b : std::byte{'?'};
    }
    return frame_header_size + 4 + text.size();
}

result<error_msg> decode_error(std::span<const std::byte> p) noexcept {
    if (p.size() < 4 || p.size() > 4 + max_error_text) return fail(errc::bad_length);
    auto text = p.subspan(4);
    if (!std::all_of(text.begin(), text.end(), text_byte_ok)) return fail(errc::bad_field);
    return error_msg{load_be<std::uint32_t>(p), {reinterpret_cast<const char*>(text.data()), text.size()}};
}

result<std::size_t> encode_ping(std::span<std::byte> out, std::uint64_t seq, const ping_msg& m) noexcept {
    return encode_ping_like(out, msg_type::ping, seq, m);
}
result<std::size_t> encode_pong(std::span<std::byte> out, std::uint64_t seq, const ping_msg& m) noexcept {
    return encode_ping_like(out, msg_type::pong, seq, m);
}
result<ping_msg> decode_ping(std::span<const std::byte> p) noexcept { return decode_ping_like(p); }
result<ping_msg> decode_pong(std::span<const std::byte> p) noexcept { return decode_ping_like(p); }

// ---- frame_reader -------------------------------------------------------------------------------------

frame_reader::frame_reader() : buf_(max_frame_size) {}

void frame_reader::start_next() noexcept {
    have_ = 0;
    need_ = frame_header_size;
    header_done_ = false;
    done_ = false;
}

void frame_reader::reset() noexcept {
    start_next();
    failed_ = false;
}

std::span<std::byte> frame_reader::receive_buffer() noexcept {
    if (failed_) return {};
    if (done_) start_next();
    return std::span(buf_).subspan(have_, need_ - have_);
}

result<std::optional<frame>> frame_reader::received(std::size_t n) {
    if (failed_) return fail(errc::stream_failed);
    if (done_) start_next();
    if (n > need_ - have_) {  // more than receive_buffer() offered: a caller bug, and the bytes are lost
        failed_ = true;
        return fail(errc::buffer_too_small);
    }
    have_ += n;
    return advance();
}

result<std::optional<frame>> frame_reader::advance() {
    if (!header_done_ && have_ == frame_header_size) {
        auto h = decode_frame_header(std::span(buf_).first(frame_header_size));
        if (!h) {
            failed_ = true;
            return h.error();
        }
        header_ = *h;
        header_done_ = true;
        need_ = frame_header_size + header_.length;
    }
    if (header_done_ && have_ == need_) {
        done_ = true;
        return std::optional<frame>(frame{header_, std::span<const std::byte>(buf_).subspan(frame_header_size, header_.length)});
    }
    return std::optional<frame>();
}

result<std::optional<frame>> frame_reader::feed(std::span<const std::byte>& in) {
    for (;;) {
        auto want = receive_buffer();
        if (failed_) return fail(errc::stream_failed);
        std::size_t n = std::min(want.size(), in.size());
        std::copy_n(in.begin(), n, want.begin());
        in = in.subspan(n);
        auto r = received(n);
        if (!r || r->has_value() || in.empty()) return r;
    }
}

}  // namespace tandem::replication
