// fuzz: the replication stream — frame_reader over arbitrary TCP bytes, and every payload decoder, raw and framed.
#include "tandem/replication/protocol.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

using namespace tandem;
using namespace tandem::replication;

namespace {

constexpr std::uint64_t volume = 1ull << 40;         // 1 TiB
constexpr std::uint64_t blocks = 64 * 1024 - 3;  // a 256 MiB bitmap of 4 KiB blocks, last word partly used

std::vector<std::byte>& scratch() {
    static std::vector<std::byte> b(max_frame_size);
    return b;
}

// What decoded must encode to the same payload: the codec has one spelling per message.
void same(const result<std::size_t>& n, std::span<const std::byte> payload) {
    if (!n) __builtin_trap();
    auto out = std::span<const std::byte>(scratch()).subspan(frame_header_size, *n - frame_header_size);
    if (!std::equal(out.begin(), out.end(), payload.begin(), payload.end())) __builtin_trap();
}

void decode_payload(msg_type t, std::span<const std::byte> p) {
    auto& out = scratch();
    switch (t) {
        case msg_type::hello:
            if (auto m = decode_hello(p)) {
                if (p.size() == hello_size) same(encode_hello(out, 1, *m), p);
                (void)negotiate(*m, *m);
            }
            break;
        case msg_type::auth_challenge:
            if (auto m = decode_auth_challenge(p)) same(encode_auth_challenge(out, 1, *m), p);
            break;
        case msg_type::auth_response:
            if (auto m = decode_auth_response(p)) same(encode_auth_response(out, 1, *m), p);
            break;
        case msg_type::auth_ok: (void)decode_auth_ok(p); break;
        case msg_type::data:
            if (auto m = decode_data(p, volume)) {
                if (m->bytes.size() != m->length) __builtin_trap();
                if (verify_data(*m)) same(encode_data(out, 1, *m), p);
            }
            break;
        case msg_type::data_ack:
            if (auto m = decode_data_ack(p)) same(encode_data_ack(out, 1, *m), p);
            break;
        case msg_type::flush: (void)decode_flush(p); break;
        case msg_type::flush_ack:
            if (auto m = decode_flush_ack(p)) same(encode_flush_ack(out, 1, *m), p);
            break;
        case msg_type::zero:
            if (auto m = decode_zero(p, volume)) {
                if (m->length == 0 || m->length > max_zero_length || m->offset + m->length > volume) __builtin_trap();
                same(encode_zero(out, 1, *m), p);
            }
            break;
        case msg_type::bitmap_chunk:
            if (auto m = decode_bitmap_chunk(p, blocks)) {
                auto words = m->to_words();
                same(encode_bitmap_chunk(out, 1, m->start_block, words), p);
                // What the decoder accepts, the bitmap accepts.
                auto small = dirty_bitmap::make(blocks * 4096).value();
                if (!small.merge_words(m->start_block, words)) __builtin_trap();
            }
            break;
        case msg_type::resync_done:
            if (auto m = decode_resync_done(p)) same(encode_resync_done(out, 1, *m), p);
            break;
        case msg_type::digest_request:
            if (auto m = decode_digest_request(p, volume)) same(encode_digest_request(out, 1, *m), p);
            break;
        case msg_type::digest_reply:
            if (auto m = decode_digest_reply(p, volume)) {
                std::vector<std::uint64_t> d(m->chunk_count());
                for (std::size_t i = 0; i < d.size(); ++i) d[i] = m->digest(i);
                same(encode_digest_reply(out, 1, {m->offset, m->length, m->chunk_size}, d), p);
            }
            break;
        case msg_type::error:
            if (auto m = decode_error(p)) same(encode_error(out, 1, m->code, m->text), p);
            break;
        case msg_type::ping:
            if (auto m = decode_ping(p)) same(encode_ping(out, 1, *m), p);
            break;
        case msg_type::pong:
            if (auto m = decode_pong(p)) same(encode_pong(out, 1, *m), p);
            break;
    }
}

constexpr msg_type all_types[] = {msg_type::hello,          msg_type::auth_challenge, msg_type::auth_response,
                                  msg_type::auth_ok,        msg_type::data,           msg_type::data_ack,
                                  msg_type::flush,          msg_type::flush_ack,      msg_type::bitmap_chunk,
                                  msg_type::resync_done,    msg_type::digest_request, msg_type::digest_reply,
                                  msg_type::error,          msg_type::ping,           msg_type::pong,
                                  msg_type::zero};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    auto in = std::span(reinterpret_cast<const std::byte*>(data), size);

    // 1. Each payload decoder on the raw bytes after a selector byte.
    decode_payload(all_types[data[0] % std::size(all_types)], in.subspan(1));

    // 2. The bytes as a TCP stream, cut into pieces whose sizes come from the input.
    static frame_reader reader;
    reader.reset();
    std::size_t piece = 1 + data[0] % 61;
    auto rest = in.subspan(1);
    while (!rest.empty()) {
        auto chunk = rest.first(std::min(piece, rest.size()));
        rest = rest.subspan(chunk.size());
        while (!chunk.empty()) {
            auto f = reader.feed(chunk);
            if (!f) {
                if (!reader.failed()) __builtin_trap();
                return 0;
            }
            if (!*f) break;
            auto& fr = **f;
            if (fr.payload.size() != fr.header.length || !payload_length_ok(fr.header.type, fr.header.length))
                __builtin_trap();
            decode_payload(fr.header.type, fr.payload);
        }
        if (reader.buffered() > max_frame_size) __builtin_trap();
    }

    // 3. The same stream received in place.
    static frame_reader inplace;
    inplace.reset();
    rest = in.subspan(1);
    while (!rest.empty()) {
        auto into = inplace.receive_buffer();
        if (into.empty()) break;  // failed
        std::size_t n = std::min({into.size(), rest.size(), piece});
        std::memcpy(into.data(), rest.data(), n);
        rest = rest.subspan(n);
        auto f = inplace.received(n);
        if (!f) break;
    }
    return 0;
}
