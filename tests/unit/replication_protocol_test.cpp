// tests: the replication wire codec — layouts byte for byte, round trips, every refusal, negotiation, auth, reassembly.
#include "tandem/replication/protocol.hpp"

#include "tandem/base/bytes.hpp"
#include "tandem/base/hmac.hpp"

#include "support/result_catch.hpp"
#include "support/util.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <limits>
#include <vector>

using namespace tandem;
using namespace tandem::replication;
using tandem::test::hex;

namespace {

constexpr std::uint64_t vol = 1ull << 30;  // 1 GiB volume for range checks

std::vector<std::byte> buffer(std::size_t n = max_frame_size) { return std::vector<std::byte>(n, std::byte{0xee}); }

std::vector<std::byte> pattern(std::size_t n, std::uint8_t seed = 1) {
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
    return v;
}

// Encodes with `enc`, checks the header, and returns the payload bytes.
template <class Enc>
std::vector<std::byte> frame_payload(msg_type t, std::uint64_t seq, Enc enc) {
    auto buf = buffer();
    auto n = enc(std::span<std::byte>(buf), seq);
    REQUIRE(n);
    auto h = decode_frame_header(std::span<const std::byte>(buf).first(*n));
    REQUIRE(h);
    CHECK(h->type == t);
    CHECK(h->seq == seq);
    CHECK(h->flags == 0);
    REQUIRE(h->length == *n - frame_header_size);
    return {buf.begin() + frame_header_size, buf.begin() + static_cast<std::ptrdiff_t>(*n)};
}

hello sample_hello() {
    hello h;
    h.features = feat_zero_copy | feat_verify;
    h.node_name = "alpha";
    h.volume_size = 4ull << 40;
    h.block_size = 4096;
    h.flags = hello_primary | hello_consistent;
    h.gen = {0x1111, 0x2222, {0x3333, 0x4444}};
    return h;
}

std::vector<std::byte> hello_payload(const hello& h = sample_hello()) {
    return frame_payload(msg_type::hello, 1, [&](auto out, auto seq) { return encode_hello(out, seq, h); });
}

template <class R>
errc code_of(const R& r) {
    REQUIRE_FALSE(r);
    REQUIRE(&r.error().category() == &replication_category());
    return static_cast<errc>(r.error().value());
}

auth_nonce nonce_of(std::uint8_t first) {
    auth_nonce n{};
    for (std::size_t i = 0; i < n.size(); ++i) n[i] = static_cast<std::byte>(first + i);
    return n;
}

}  // namespace

// ---- layout ------------------------------------------------------------------------------------------

TEST_CASE("the frame header is 24 big-endian bytes starting with TNDR", "[unit][replication]") {
    auto buf = buffer();
    auto n = encode_ping(buf, 0x0102030405060708ull, {0x1122334455667788ull});
    REQUIRE(n);
    REQUIRE(*n == 32);
    CHECK(hex(std::span(buf).first(32)) ==
          "544e4452"          // magic "TNDR"
          "0031"              // type 49 = ping
          "0000"              // flags
          "00000008"          // payload length
          "00000000"          // reserved
          "0102030405060708"  // seq
          "1122334455667788");
    CHECK(buf[32] == std::byte{0xee});  // nothing written past the frame
}

TEST_CASE("hello has its documented layout", "[unit][replication]") {
    auto p = hello_payload();
    REQUIRE(p.size() == hello_size);
    CHECK(hex(std::span(p).first(16)) == "00010001000000000000000000000005");
    CHECK(std::memcmp(p.data() + 16, "alpha\0\0\0", 8) == 0);
    CHECK(load_be<std::uint64_t>(std::span(p).subspan(48)) == 4ull << 40);
    CHECK(load_be<std::uint32_t>(std::span(p).subspan(56)) == 4096);
    CHECK(load_be<std::uint32_t>(std::span(p).subspan(60)) == (hello_primary | hello_consistent));
    CHECK(hex(std::span(p).subspan(64)) ==
          "0000000000001111000000000000222200000000000033330000000000004444");
}

TEST_CASE("data carries an XXH3-64 of its bytes", "[unit][replication]") {
    CHECK(data_checksum({}) == 0x2D06800538D394C2ull);  // XXH3_64bits("") from the xxHash reference
    auto bytes = pattern(4096);
    data_msg m{8192, 0, data_fua, 0, bytes};
    auto p = frame_payload(msg_type::data, 9, [&](auto out, auto seq) { return encode_data(out, seq, m); });
    REQUIRE(p.size() == data_header_size + 4096);
    CHECK(load_be<std::uint64_t>(std::span(p)) == 8192);
    CHECK(load_be<std::uint32_t>(std::span(p).subspan(8)) == 4096);
    CHECK(load_be<std::uint32_t>(std::span(p).subspan(12)) == data_fua);
    CHECK(load_be<std::uint64_t>(std::span(p).subspan(16)) == data_checksum(bytes));
}

// ---- round trips -------------------------------------------------------------------------------------

TEST_CASE("every message survives encode and decode", "[unit][replication]") {
    SECTION("hello") {
        auto h = decode_hello(hello_payload());
        REQUIRE(h);
        auto s = sample_hello();
        CHECK(h->version_min == 1);
        CHECK(h->version_max == 1);
        CHECK(h->features == s.features);
        CHECK(h->node_name == "alpha");
        CHECK(h->volume_size == s.volume_size);
        CHECK(h->block_size == 4096);
        CHECK(h->flags == s.flags);
        CHECK(h->gen == s.gen);
    }
    SECTION("a 32-byte node name fills its field") {
        auto s = sample_hello();
        s.node_name = std::string(32, 'n');
        auto h = decode_hello(hello_payload(s));
        REQUIRE(h);
        CHECK(h->node_name == s.node_name);
    }
    SECTION("auth_challenge, auth_response, auth_ok") {
        auto n = nonce_of(7);
        auto p = frame_payload(msg_type::auth_challenge, 2,
                               [&](auto out, auto seq) { return encode_auth_challenge(out, seq, n); });
        auto dn = decode_auth_challenge(p);
        REQUIRE(dn);
        CHECK(*dn == n);
        auth_mac mac{};
        mac.fill(std::byte{0x42});
        p = frame_payload(msg_type::auth_response, 3,
                          [&](auto out, auto seq) { return encode_auth_response(out, seq, mac); });
        auto dm = decode_auth_response(p);
        REQUIRE(dm);
        CHECK(*dm == mac);
        p = frame_payload(msg_type::auth_ok, 4, [&](auto out, auto seq) { return encode_auth_ok(out, seq); });
        CHECK(p.empty());
        CHECK(decode_auth_ok(p));
    }
    SECTION("data, and verify_data") {
        auto bytes = pattern(max_data_length, 3);
        data_msg m{vol - max_data_length, 0, data_resync | data_preflush, 0, bytes};
        auto p = frame_payload(msg_type::data, 5, [&](auto out, auto seq) { return encode_data(out, seq, m); });
        auto d = decode_data(p, vol);
        REQUIRE(d);
        CHECK(d->offset == vol - max_data_length);
        CHECK(d->length == max_data_length);
        CHECK(d->flags == (data_resync | data_preflush));
        CHECK(d->bytes.size() == max_data_length);
        CHECK(std::equal(d->bytes.begin(), d->bytes.end(), bytes.begin()));
        CHECK(verify_data(*d));
    }
    SECTION("the data prefix plus the bytes is the same frame") {
        auto bytes = pattern(1024);
        data_msg m{512, 0, 0, 0, bytes};
        auto whole = buffer();
        auto n = encode_data(whole, 11, m);
        REQUIRE(n);
        auto prefix = buffer(frame_header_size + data_header_size);
        auto k = encode_data_prefix(prefix, 11, m);
        REQUIRE(k);
        REQUIRE(*k == frame_header_size + data_header_size);
        prefix.insert(prefix.end(), bytes.begin(), bytes.end());
        CHECK(std::equal(prefix.begin(), prefix.end(), whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(*n)));
    }
    SECTION("data_ack, flush, flush_ack") {
        ack_msg a{77, ack_status::bad_checksum};
        auto p = frame_payload(msg_type::data_ack, 6, [&](auto out, auto seq) { return encode_data_ack(out, seq, a); });
        CHECK(hex(p) == "000000000000004d0000000200000000");
        auto d = decode_data_ack(p);
        REQUIRE(d);
        CHECK(d->seq == 77);
        CHECK(d->status == ack_status::bad_checksum);
        p = frame_payload(msg_type::flush, 7, [&](auto out, auto seq) { return encode_flush(out, seq); });
        CHECK(decode_flush(p));
        a = {7, ack_status::io_error};
        p = frame_payload(msg_type::flush_ack, 8, [&](auto out, auto seq) { return encode_flush_ack(out, seq, a); });
        auto f = decode_flush_ack(p);
        REQUIRE(f);
        CHECK(f->seq == 7);
        CHECK(f->status == ack_status::io_error);
    }
    SECTION("bitmap_chunk") {
        std::vector<std::uint64_t> words{0x8000000000000001ull, 0, 0xffull};
        auto p = frame_payload(msg_type::bitmap_chunk, 9,
                               [&](auto out, auto seq) { return encode_bitmap_chunk(out, seq, 128, words); });
        CHECK(p.size() == bitmap_chunk_header_size + 24);
        auto c = decode_bitmap_chunk(p, 128 + 3 * 64);
        REQUIRE(c);
        CHECK(c->start_block == 128);
        CHECK(c->word_count() == 3);
        CHECK(c->to_words() == words);
    }
    SECTION("resync_done") {
        resync_done_msg r{{9, 0, {8, 7}}};
        auto p = frame_payload(msg_type::resync_done, 10,
                               [&](auto out, auto seq) { return encode_resync_done(out, seq, r); });
        auto d = decode_resync_done(p);
        REQUIRE(d);
        CHECK(d->gen == r.gen);
    }
    SECTION("digest_request and digest_reply") {
        digest_request_msg q{1 << 20, 3 * 4096 + 512, 4096};
        CHECK(q.chunk_count() == 4);  // the last chunk is short
        auto p = frame_payload(msg_type::digest_request, 11,
                               [&](auto out, auto seq) { return encode_digest_request(out, seq, q); });
        auto d = decode_digest_request(p, vol);
        REQUIRE(d);
        CHECK(d->offset == q.offset);
        CHECK(d->length == q.length);
        CHECK(d->chunk_size == 4096);
        std::vector<std::uint64_t> digests{1, 2, 3, 0xfeedfacecafebeefull};
        p = frame_payload(msg_type::digest_reply, 12,
                          [&](auto out, auto seq) { return encode_digest_reply(out, seq, q, digests); });
        auto r = decode_digest_reply(p, vol);
        REQUIRE(r);
        CHECK(r->offset == q.offset);
        REQUIRE(r->chunk_count() == 4);
        for (std::size_t i = 0; i < 4; ++i) CHECK(r->digest(i) == digests[i]);
    }
    SECTION("error") {
        auto p = frame_payload(msg_type::error, 13, [&](auto out, auto seq) {
            return encode_error(out, seq, static_cast<std::uint32_t>(errc::volume_too_small), "peer /store is 2 TiB");
        });
        auto e = decode_error(p);
        REQUIRE(e);
        CHECK(e->code == static_cast<std::uint32_t>(errc::volume_too_small));
        CHECK(e->text == "peer /store is 2 TiB");
    }
    SECTION("error text is cut to 1024 bytes and loses control characters") {
        std::string text = "line\nbreak" + std::string(2000, 'x');
        auto p = frame_payload(msg_type::error, 14, [&](auto out, auto seq) { return encode_error(out, seq, 1, text); });
        auto e = decode_error(p);
        REQUIRE(e);
        CHECK(e->text.size() == max_error_text);
        CHECK(e->text.substr(0, 10) == "line?break");
    }
    SECTION("ping and pong") {
        auto p = frame_payload(msg_type::ping, 15, [&](auto out, auto seq) { return encode_ping(out, seq, {42}); });
        auto d = decode_ping(p);
        REQUIRE(d);
        CHECK(d->echo == 42);
        p = frame_payload(msg_type::pong, 16, [&](auto out, auto seq) { return encode_pong(out, seq, {42}); });
        d = decode_pong(p);
        REQUIRE(d);
        CHECK(d->echo == 42);
    }
}

TEST_CASE("every message type has a name", "[unit][replication]") {
    for (unsigned t = 0; t < 70; ++t) {
        if (!known_type(static_cast<std::uint16_t>(t))) continue;
        INFO(t);
        CHECK(to_string(static_cast<msg_type>(t)) != "unknown");
    }
    CHECK(to_string(errc::bad_magic) == "bad_magic");
    CHECK(make_error_code(errc::out_of_range).message() == "range lies beyond the end of the volume");
    CHECK(std::string(replication_category().name()) == "replication");
}

// ---- refusals --------------------------------------------------------------------------------------

TEST_CASE("frame headers are refused for each class of bad input", "[unit][replication]") {
    auto buf = buffer();
    REQUIRE(encode_ping(buf, 1, {0}));
    auto h = [&] { return decode_frame_header(std::span<const std::byte>(buf).first(frame_header_size)); };
    REQUIRE(h());

    SECTION("short") { CHECK(code_of(decode_frame_header(std::span<const std::byte>(buf).first(23))) == errc::bad_length); }
    SECTION("wrong magic") {
        buf[0] = std::byte{'X'};
        CHECK(code_of(h()) == errc::bad_magic);
    }
    SECTION("the heartbeat's magic is not ours") {
        store_be<std::uint32_t>(buf, 0x544E4448);
        CHECK(code_of(h()) == errc::bad_magic);
    }
    SECTION("unknown type") {
        for (std::uint16_t t : {0, 5, 15, 21, 36, 47, 51, 0xffff}) {
            store_be<std::uint16_t>(std::span(buf).subspan(4), t);
            INFO(t);
            CHECK(code_of(h()) == errc::unknown_type);
        }
    }
    SECTION("flags this version does not know") {
        store_be<std::uint16_t>(std::span(buf).subspan(6), 1);
        CHECK(code_of(h()) == errc::bad_flags);
    }
    SECTION("reserved not zero") {
        buf[15] = std::byte{1};
        CHECK(code_of(h()) == errc::bad_reserved);
    }
    SECTION("payload over max_payload") {
        store_be<std::uint16_t>(std::span(buf).subspan(4), static_cast<std::uint16_t>(msg_type::data));
        store_be<std::uint32_t>(std::span(buf).subspan(8), max_payload + 1);
        CHECK(code_of(h()) == errc::too_large);
        store_be<std::uint32_t>(std::span(buf).subspan(8), 0xffffffffu);
        CHECK(code_of(h()) == errc::too_large);
        store_be<std::uint32_t>(std::span(buf).subspan(8), max_payload);
        CHECK(h());
    }
    SECTION("length that does not fit the type") {
        struct bad {
            msg_type t;
            std::uint32_t len;
        };
        for (auto [t, len] : {bad{msg_type::hello, 95}, bad{msg_type::hello, 4097}, bad{msg_type::auth_challenge, 31},
                              bad{msg_type::auth_response, 33}, bad{msg_type::auth_ok, 1}, bad{msg_type::data, 24},
                              bad{msg_type::data_ack, 8}, bad{msg_type::flush, 4}, bad{msg_type::flush_ack, 17},
                              bad{msg_type::bitmap_chunk, 16}, bad{msg_type::bitmap_chunk, 28},
                              bad{msg_type::resync_done, 24}, bad{msg_type::digest_request, 24},
                              bad{msg_type::digest_reply, 16}, bad{msg_type::digest_reply, 30},
                              bad{msg_type::error, 3}, bad{msg_type::error, 4 + 1025}, bad{msg_type::ping, 0},
                              bad{msg_type::pong, 16}}) {
            store_be<std::uint16_t>(std::span(buf).subspan(4), static_cast<std::uint16_t>(t));
            store_be<std::uint32_t>(std::span(buf).subspan(8), len);
            INFO(to_string(t) << " length " << len);
            CHECK(code_of(h()) == errc::bad_length);
        }
    }
}

TEST_CASE("hello refuses malformed fields", "[unit][replication]") {
    auto good = hello_payload();
    auto with = [&](auto change) {
        auto p = good;
        change(std::span<std::byte>(p));
        return decode_hello(p);
    };
    CHECK(code_of(with([](auto p) { store_be<std::uint16_t>(p, 0); })) == errc::bad_version);
    CHECK(code_of(with([](auto p) { store_be<std::uint16_t>(p, 2); })) == errc::bad_version);  // min > max
    CHECK(code_of(with([](auto p) { p[5] = std::byte{1}; })) == errc::bad_reserved);
    CHECK(code_of(with([](auto p) { p[16] = std::byte{0}; })) == errc::bad_field);                 // empty name
    CHECK(code_of(with([](auto p) { p[17] = std::byte{' '}; })) == errc::bad_field);               // space
    CHECK(code_of(with([](auto p) { p[17] = std::byte{'\n'}; })) == errc::bad_field);              // control
    CHECK(code_of(with([](auto p) { p[40] = std::byte{'x'}; })) == errc::bad_field);               // after the padding starts
    CHECK(code_of(with([](auto p) { store_be<std::uint64_t>(p.subspan(48), 0); })) == errc::bad_field);
    CHECK(code_of(with([](auto p) { store_be<std::uint64_t>(p.subspan(48), 4096 + 512); })) == errc::misaligned);
    CHECK(code_of(with([](auto p) { store_be<std::uint32_t>(p.subspan(56), 256); })) == errc::bad_field);
    CHECK(code_of(with([](auto p) { store_be<std::uint32_t>(p.subspan(56), 3000); })) == errc::bad_field);
    CHECK(code_of(with([](auto p) { store_be<std::uint32_t>(p.subspan(56), 131072); })) == errc::bad_field);
    CHECK(code_of(with([](auto p) { store_be<std::uint32_t>(p.subspan(60), hello_known_flags + 1); })) == errc::bad_flags);  // the first unknown flag
    CHECK(code_of(with([](auto p) { store_be<std::uint64_t>(p.subspan(64), 0); })) == errc::bad_field);  // bitmap id without a current
    // Unknown feature bits are a newer peer's offer, not an error.
    CHECK(with([](auto p) { store_be<std::uint64_t>(p.subspan(8), ~0ull); }));

    SECTION("bytes past the version-1 layout only from a peer that speaks a later version") {
        auto longer = good;
        longer.resize(hello_size + 8);
        CHECK(code_of(decode_hello(longer)) == errc::bad_length);
        store_be<std::uint16_t>(std::span(longer).subspan(2), 2);
        auto h = decode_hello(longer);
        REQUIRE(h);
        CHECK(h->version_max == 2);
    }
    SECTION("the encoder refuses names the decoder would refuse") {
        auto buf = buffer();
        auto h = sample_hello();
        h.node_name = "";
        CHECK(code_of(encode_hello(buf, 1, h)) == errc::bad_field);
        h.node_name = std::string(33, 'a');
        CHECK(code_of(encode_hello(buf, 1, h)) == errc::bad_field);
        h.node_name = "two words";
        CHECK(code_of(encode_hello(buf, 1, h)) == errc::bad_field);
    }
}

TEST_CASE("data is refused when misaligned, empty, out of range or corrupted", "[unit][replication]") {
    auto bytes = pattern(4096);
    auto payload_of = [&](std::uint64_t off) {
        return frame_payload(msg_type::data, 1,
                             [&](auto out, auto seq) { return encode_data(out, seq, data_msg{off, 0, 0, 0, bytes}); });
    };
    auto good = payload_of(0);
    REQUIRE(decode_data(good, vol));

    auto p = good;
    store_be<std::uint64_t>(std::span(p), 100);
    CHECK(code_of(decode_data(p, vol)) == errc::misaligned);
    p = good;
    store_be<std::uint32_t>(std::span(p).subspan(12), 0x80);
    CHECK(code_of(decode_data(p, vol)) == errc::bad_flags);
    p = good;
    store_be<std::uint32_t>(std::span(p).subspan(8), 4096 - 512);  // length field disagrees with the frame
    CHECK(code_of(decode_data(p, vol)) == errc::bad_length);
    CHECK(code_of(decode_data(std::span(good).first(data_header_size), vol)) == errc::bad_length);

    SECTION("a length that is not whole sectors") {
        auto odd = pattern(1000);
        auto buf = buffer();
        CHECK(code_of(encode_data(buf, 1, {0, 0, 0, 0, odd})) == errc::misaligned);
        auto q = good;
        q.resize(data_header_size + 1000);
        store_be<std::uint32_t>(std::span(q).subspan(8), 1000);
        CHECK(code_of(decode_data(q, vol)) == errc::misaligned);
    }
    SECTION("the range must lie inside the volume") {
        CHECK(decode_data(payload_of(vol - 4096), vol));
        CHECK(code_of(decode_data(payload_of(vol - 512), vol)) == errc::out_of_range);
        CHECK(code_of(decode_data(payload_of(vol), vol)) == errc::out_of_range);
        // offset + length would wrap around 2^64
        CHECK(code_of(decode_data(payload_of(std::numeric_limits<std::uint64_t>::max() - 511), vol)) ==
              errc::out_of_range);
    }
    SECTION("a flipped bit in the bytes fails verify_data, not decode") {
        auto q = good;
        q[data_header_size + 100] ^= std::byte{0x01};
        auto d = decode_data(q, vol);
        REQUIRE(d);
        CHECK(code_of(verify_data(*d)) == errc::bad_checksum);
        q = good;
        q[16] ^= std::byte{0x80};  // the checksum itself
        d = decode_data(q, vol);
        REQUIRE(d);
        CHECK(code_of(verify_data(*d)) == errc::bad_checksum);
    }
    SECTION("encoders refuse what decoders would refuse") {
        auto buf = buffer();
        CHECK(code_of(encode_data(buf, 1, {0, 0, 0, 0, {}})) == errc::bad_length);
        auto big = pattern(max_data_length + 512);
        CHECK(code_of(encode_data(buf, 1, {0, 0, 0, 0, big})) == errc::bad_length);
        CHECK(code_of(encode_data(buf, 1, {0, 0, 0x100, 0, bytes})) == errc::bad_flags);
    }
}

TEST_CASE("acks, bitmaps, digests, errors and pings refuse bad fields", "[unit][replication]") {
    SECTION("ack status and reserved") {
        auto p = frame_payload(msg_type::data_ack, 1,
                               [&](auto out, auto seq) { return encode_data_ack(out, seq, {1, ack_status::ok}); });
        auto q = p;
        store_be<std::uint32_t>(std::span(q).subspan(8), 4);
        CHECK(code_of(decode_data_ack(q)) == errc::bad_field);
        q = p;
        q[15] = std::byte{1};
        CHECK(code_of(decode_flush_ack(q)) == errc::bad_reserved);
        CHECK(code_of(decode_flush(std::span(p).first(1))) == errc::bad_length);
        CHECK(code_of(decode_auth_ok(std::span(p).first(1))) == errc::bad_length);
    }
    SECTION("zero: a range inside the volume, sector-aligned, at most max_zero_length") {
        auto enc = [](zero_msg m) {
            return frame_payload(msg_type::zero, 1, [&](auto out, auto seq) { return encode_zero(out, seq, m); });
        };
        auto p = enc({1 << 20, 64 << 10});
        CHECK(p.size() == zero_size);
        auto m = decode_zero(p, 2 << 20);
        REQUIRE(m);
        CHECK(m->offset == 1 << 20);
        CHECK(m->length == 64 << 10);
        CHECK(decode_zero(enc({0, max_zero_length}), max_zero_length));
        CHECK(code_of(decode_zero(enc({0, max_zero_length + 512}), 1ull << 30)) == errc::bad_length);
        CHECK(code_of(decode_zero(enc({0, 0}), 1 << 20)) == errc::bad_length);
        CHECK(code_of(decode_zero(enc({100, 512}), 1 << 20)) == errc::misaligned);
        CHECK(code_of(decode_zero(enc({0, 1000}), 1 << 20)) == errc::misaligned);
        CHECK(code_of(decode_zero(enc({1 << 20, 512}), 1 << 20)) == errc::out_of_range);
        CHECK(code_of(decode_zero(enc({~0ull - 511, 1024}), ~0ull)) == errc::out_of_range);  // no wrap-around
        auto q = p;
        q[15] = std::byte{1};
        CHECK(code_of(decode_zero(q, 2 << 20)) == errc::bad_reserved);
        CHECK(code_of(decode_zero(std::span(p).first(8), 2 << 20)) == errc::bad_length);
        CHECK(payload_length_ok(msg_type::zero, zero_size));
        CHECK_FALSE(payload_length_ok(msg_type::zero, zero_size + 8));
    }
    SECTION("bitmap chunk") {
        std::vector<std::uint64_t> words{1, 2};
        auto p = frame_payload(msg_type::bitmap_chunk, 1,
                               [&](auto out, auto seq) { return encode_bitmap_chunk(out, seq, 64, words); });
        CHECK(decode_bitmap_chunk(p, 192));
        CHECK(decode_bitmap_chunk(p, 191));  // the second word is the last, partly used one...
        CHECK(decode_bitmap_chunk(p, 130));  // ...and its only bit (block 129) is inside 130 blocks
        CHECK(code_of(decode_bitmap_chunk(p, 129)) == errc::out_of_range);  // bit for block 129 past the end
        CHECK(code_of(decode_bitmap_chunk(p, 64)) == errc::out_of_range);
        CHECK(decode_bitmap_chunk(p, ~0ull));  // no overflow in the word count
        auto q = p;
        store_be<std::uint64_t>(std::span(q), 65);
        CHECK(code_of(decode_bitmap_chunk(q, 1 << 20)) == errc::misaligned);
        q = p;
        store_be<std::uint32_t>(std::span(q).subspan(8), 3);
        CHECK(code_of(decode_bitmap_chunk(q, 1 << 20)) == errc::bad_length);
        q = p;
        q[13] = std::byte{1};
        CHECK(code_of(decode_bitmap_chunk(q, 1 << 20)) == errc::bad_reserved);
        q = p;
        store_be<std::uint64_t>(std::span(q), 0xffffffffffffffc0ull);
        CHECK(code_of(decode_bitmap_chunk(q, 1 << 20)) == errc::out_of_range);
        auto buf = buffer();
        CHECK(code_of(encode_bitmap_chunk(buf, 1, 3, words)) == errc::misaligned);
        CHECK(code_of(encode_bitmap_chunk(buf, 1, 0, {})) == errc::bad_length);
    }
    SECTION("resync_done needs a current id") {
        std::vector<std::byte> p(resync_done_size);
        CHECK(code_of(decode_resync_done(p)) == errc::bad_field);
    }
    SECTION("digests") {
        digest_request_msg q{0, 8192, 4096};
        auto p = frame_payload(msg_type::digest_request, 1,
                               [&](auto out, auto seq) { return encode_digest_request(out, seq, q); });
        auto mod = [&](std::size_t at, std::uint32_t v) {
            auto x = p;
            store_be<std::uint32_t>(std::span(x).subspan(at), v);
            return x;
        };
        CHECK(code_of(decode_digest_request(mod(8, 0), vol)) == errc::bad_length);
        CHECK(code_of(decode_digest_request(mod(12, 0), vol)) == errc::bad_length);
        CHECK(code_of(decode_digest_request(mod(12, 1000), vol)) == errc::misaligned);
        CHECK(code_of(decode_digest_request(mod(8, 1000), vol)) == errc::misaligned);
        CHECK(code_of(decode_digest_request(mod(4, 1), vol)) == errc::misaligned);  // offset low bits
        CHECK(code_of(decode_digest_request(p, 4096)) == errc::out_of_range);
        // 2^17 + 1 chunks of 512 bytes would not fit one reply
        auto many = mod(12, 512);
        store_be<std::uint32_t>(std::span(many).subspan(8), (1u << 26) + 512);
        CHECK(code_of(decode_digest_request(many, 1ull << 40)) == errc::too_large);

        std::vector<std::uint64_t> two{1, 2};
        auto r = frame_payload(msg_type::digest_reply, 2,
                               [&](auto out, auto seq) { return encode_digest_reply(out, seq, q, two); });
        CHECK(decode_digest_reply(r, vol));
        auto three = r;
        three.resize(r.size() + 8);  // one digest more than ceil(length / chunk)
        CHECK(code_of(decode_digest_reply(three, vol)) == errc::bad_length);
        auto buf = buffer();
        CHECK(code_of(encode_digest_reply(buf, 1, q, std::span(two).first(1))) == errc::bad_length);
    }
    SECTION("error text") {
        auto p = frame_payload(msg_type::error, 1, [&](auto out, auto seq) { return encode_error(out, seq, 7, "ok"); });
        auto q = p;
        q[5] = std::byte{0x1b};  // ESC: would reach a terminal through the log
        CHECK(code_of(decode_error(q)) == errc::bad_field);
        q[5] = std::byte{0x7f};
        CHECK(code_of(decode_error(q)) == errc::bad_field);
        q[5] = std::byte{0xc3};  // a UTF-8 lead byte is fine
        CHECK(decode_error(q));
        CHECK(code_of(decode_error(std::span(p).first(3))) == errc::bad_length);
    }
    SECTION("auth payloads") {
        std::vector<std::byte> zero(32);
        CHECK(code_of(decode_auth_challenge(zero)) == errc::bad_field);
        CHECK(code_of(decode_auth_challenge(std::span(zero).first(31))) == errc::bad_length);
        CHECK(code_of(decode_auth_response(std::span(zero).first(31))) == errc::bad_length);
        CHECK(code_of(decode_ping(std::span(zero).first(7))) == errc::bad_length);
        CHECK(code_of(decode_pong(std::span(zero).first(9))) == errc::bad_length);
    }
}

TEST_CASE("encoders refuse a buffer that cannot hold the frame", "[unit][replication]") {
    std::vector<std::byte> small(frame_header_size + 7, std::byte{0xee});
    CHECK(code_of(encode_ping(small, 1, {1})) == errc::buffer_too_small);
    CHECK(code_of(encode_hello(small, 1, sample_hello())) == errc::buffer_too_small);
    auto bytes = pattern(512);
    CHECK(code_of(encode_data(small, 1, {0, 0, 0, 0, bytes})) == errc::buffer_too_small);
    CHECK(code_of(encode_data_prefix(small, 1, {0, 0, 0, 0, bytes})) == errc::buffer_too_small);
    CHECK(std::all_of(small.begin(), small.end(), [](std::byte b) { return b == std::byte{0xee}; }));
    CHECK(encode_auth_ok(std::span(small).first(frame_header_size), 1));
}

// ---- negotiation -------------------------------------------------------------------------------------

TEST_CASE("negotiation picks the highest common version and the common features", "[unit][replication]") {
    hello a = sample_hello(), b = sample_hello();
    b.node_name = "beta";
    b.flags = hello_consistent;

    auto n = negotiate(a, b);
    REQUIRE(n);
    CHECK(n->version == 1);
    CHECK(n->features == (feat_zero_copy | feat_verify));
    CHECK(n->volume_size == a.volume_size);

    SECTION("versions: the highest both speak") {
        a.version_max = 3;
        b.version_max = 2;
        b.version_min = 2;
        auto m = negotiate(a, b);
        REQUIRE(m);
        CHECK(m->version == 2);
        CHECK(negotiate(b, a)->version == 2);
    }
    SECTION("no common version") {
        b.version_min = 2;
        b.version_max = 4;
        CHECK(code_of(negotiate(a, b)) == errc::bad_version);
        CHECK(code_of(negotiate(b, a)) == errc::bad_version);
    }
    SECTION("features: AND, and a newer peer's unknown bits are dropped") {
        a.features = feat_zero_copy | feat_digest_resync;
        b.features = feat_digest_resync | feat_verify | (1ull << 40);
        CHECK(negotiate(a, b)->features == feat_digest_resync);
        a.features |= 1ull << 40;
        CHECK(negotiate(a, b)->features == feat_digest_resync);
        b.features = 0;
        CHECK(negotiate(a, b)->features == 0);
    }
    SECTION("the secondary must be at least as large as the primary") {
        b.volume_size = a.volume_size - 4096;
        CHECK(code_of(negotiate(a, b)) == errc::volume_too_small);
        CHECK(code_of(negotiate(b, a)) == errc::volume_too_small);
        b.volume_size = a.volume_size + (1ull << 30);  // a larger replacement appliance is fine
        auto m = negotiate(b, a);
        REQUIRE(m);
        CHECK(m->volume_size == a.volume_size);
        // ...but not the other way round: a larger primary with a smaller secondary
        a.flags = hello_consistent;
        b.flags = hello_primary | hello_consistent;
        CHECK(code_of(negotiate(a, b)) == errc::volume_too_small);
    }
    SECTION("neither primary: the smaller size is what can be replicated") {
        a.flags = b.flags = hello_consistent;
        b.volume_size = a.volume_size / 2;
        CHECK(negotiate(a, b)->volume_size == b.volume_size);
        CHECK(negotiate(b, a)->volume_size == b.volume_size);
    }
    SECTION("block sizes must match") {
        b.block_size = 512;
        CHECK(code_of(negotiate(a, b)) == errc::block_size_mismatch);
    }
    SECTION("two primaries") {
        b.flags |= hello_primary;
        CHECK(code_of(negotiate(a, b)) == errc::role_conflict);
    }
}

// ---- authentication ----------------------------------------------------------------------------------

TEST_CASE("auth responses match an independent HMAC-SHA256 computation", "[unit][replication]") {
    std::vector<std::byte> key(32, std::byte{0x0b});
    auto cn = nonce_of(0), rn = nonce_of(32);
    // Python: hmac.new(b"\x0b"*32, b"tandem-repl-v1" + b"C" + bytes(range(32)) + bytes(range(32, 64)), sha256)
    CHECK(hex(make_auth_response(key, auth_role::connector, cn, rn)) ==
          "bffe049544051b25482963b059faadff36d5f16d3c5600ffab05cb1406d84b77");
    CHECK(hex(make_auth_response(key, auth_role::acceptor, cn, rn)) ==
          "3da8cb0a632d1fe2f884f11bc0a6a4b3bdff9eb20f378c82478800531bf48640");
}

TEST_CASE("mutual authentication accepts only the right key, nonces and direction", "[unit][replication]") {
    std::vector<std::byte> key(48, std::byte{0x5a});
    auto a_nonce = random_nonce();  // the acceptor's challenge
    auto c_nonce = random_nonce();  // the connector's challenge
    REQUIRE(a_nonce);
    REQUIRE(c_nonce);
    CHECK(*a_nonce != *c_nonce);

    // Both directions: the connector answers the acceptor's challenge and vice versa.
    auto from_connector = make_auth_response(key, auth_role::connector, *a_nonce, *c_nonce);
    auto from_acceptor = make_auth_response(key, auth_role::acceptor, *c_nonce, *a_nonce);
    CHECK(check_auth_response(key, auth_role::connector, *a_nonce, *c_nonce, from_connector));
    CHECK(check_auth_response(key, auth_role::acceptor, *c_nonce, *a_nonce, from_acceptor));

    SECTION("wrong key") {
        auto other = key;
        other[0] ^= std::byte{1};
        CHECK(code_of(check_auth_response(other, auth_role::connector, *a_nonce, *c_nonce, from_connector)) ==
              errc::auth_failed);
        CHECK(code_of(check_auth_response(std::span(key).first(47), auth_role::connector, *a_nonce, *c_nonce,
                                          from_connector)) == errc::auth_failed);
    }
    SECTION("wrong or swapped nonce: an old response does not fit a new challenge") {
        auto fresh = random_nonce();
        REQUIRE(fresh);
        CHECK(code_of(check_auth_response(key, auth_role::connector, *fresh, *c_nonce, from_connector)) ==
              errc::auth_failed);
        CHECK(code_of(check_auth_response(key, auth_role::connector, *c_nonce, *a_nonce, from_connector)) ==
              errc::auth_failed);
    }
    SECTION("reflection: the acceptor's own response is no connector response") {
        CHECK(code_of(check_auth_response(key, auth_role::connector, *c_nonce, *a_nonce, from_acceptor)) ==
              errc::auth_failed);
    }
    SECTION("a peer echoing our nonce as its own is refused") {
        auto echoed = make_auth_response(key, auth_role::connector, *a_nonce, *a_nonce);
        CHECK(code_of(check_auth_response(key, auth_role::connector, *a_nonce, *a_nonce, echoed)) ==
              errc::auth_failed);
    }
    SECTION("an empty key authenticates nobody") {
        auto m = make_auth_response({}, auth_role::connector, *a_nonce, *c_nonce);
        CHECK(code_of(check_auth_response({}, auth_role::connector, *a_nonce, *c_nonce, m)) == errc::auth_failed);
    }
    SECTION("a flipped bit in the response") {
        auto bad = from_connector;
        bad[31] ^= std::byte{0x80};
        CHECK(code_of(check_auth_response(key, auth_role::connector, *a_nonce, *c_nonce, bad)) == errc::auth_failed);
    }
}

// ---- frame_reader ------------------------------------------------------------------------------------

namespace {
// Three frames back to back: a hello, a data frame with 1 MiB, an empty flush.
std::vector<std::byte> stream_of_three() {
    std::vector<std::byte> s;
    auto buf = buffer();
    auto n = encode_hello(buf, 1, sample_hello());
    REQUIRE(n);
    s.insert(s.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(*n));
    auto bytes = pattern(max_data_length);
    n = encode_data(buf, 2, {0, 0, 0, 0, bytes});
    REQUIRE(n);
    s.insert(s.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(*n));
    n = encode_flush(buf, 3);
    REQUIRE(n);
    s.insert(s.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(*n));
    return s;
}

void check_three(const std::vector<frame_header>& got) {
    REQUIRE(got.size() == 3);
    CHECK(got[0].type == msg_type::hello);
    CHECK(got[1].type == msg_type::data);
    CHECK(got[1].length == data_header_size + max_data_length);
    CHECK(got[2].type == msg_type::flush);
    CHECK(got[2].seq == 3);
}
}  // namespace

TEST_CASE("frame_reader reassembles frames however TCP cuts them", "[unit][replication]") {
    auto stream = stream_of_three();
    for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{24}, std::size_t{4096}, stream.size()}) {
        INFO("chunk " << chunk);
        frame_reader r;
        std::vector<frame_header> got;
        for (std::size_t at = 0; at < stream.size(); at += chunk) {
            std::span<const std::byte> in(stream.data() + at, std::min(chunk, stream.size() - at));
            while (!in.empty()) {
                auto f = r.feed(in);
                if (!f) FAIL("feed: " << f.error().message());  // not REQUIRE: a million bytes, one at a time
                if (!*f) break;
                got.push_back((*f)->header);
                if ((*f)->header.type == msg_type::data) {
                    auto d = decode_data((*f)->payload, vol);
                    REQUIRE(d);
                    CHECK(verify_data(*d));
                }
            }
        }
        check_three(got);
        CHECK_FALSE(r.mid_frame());
    }
}

TEST_CASE("frame_reader receives in place without copying", "[unit][replication]") {
    auto stream = stream_of_three();
    frame_reader r;
    std::vector<frame_header> got;
    std::size_t at = 0, biggest = 0;
    while (at < stream.size()) {
        auto into = r.receive_buffer();
        REQUIRE_FALSE(into.empty());
        biggest = std::max(biggest, into.size());
        std::size_t n = std::min({into.size(), stream.size() - at, std::size_t{65536}});  // a recv returns what it has
        std::copy_n(stream.begin() + static_cast<std::ptrdiff_t>(at), n, into.begin());
        at += n;
        auto f = r.received(n);
        REQUIRE(f);
        if (*f) got.push_back((*f)->header);
    }
    check_three(got);
    CHECK(biggest <= max_payload);  // never more than the frame in progress needs
}

TEST_CASE("frame_reader reports incomplete frames and refuses bad headers before any payload", "[unit][replication]") {
    auto stream = stream_of_three();
    frame_reader r;
    SECTION("a peer that stops mid-frame leaves the reader incomplete") {
        std::span<const std::byte> in(stream.data(), 10);
        auto f = r.feed(in);
        REQUIRE(f);
        CHECK_FALSE(f->has_value());
        CHECK(r.mid_frame());
        CHECK(r.buffered() == 10);
        in = std::span<const std::byte>(stream.data() + 10, 100);  // header done, payload half there
        f = r.feed(in);
        REQUIRE(f);
        CHECK_FALSE(f->has_value());
        CHECK(r.mid_frame());
        CHECK(r.buffered() == 110);
        in = std::span<const std::byte>(stream.data() + 110, frame_header_size + hello_size - 110);
        f = r.feed(in);
        REQUIRE(f);
        REQUIRE(f->has_value());
        CHECK_FALSE(r.mid_frame());
    }
    SECTION("an oversized length is refused as soon as the header is in") {
        auto bad = stream;
        store_be<std::uint32_t>(std::span(bad).subspan(8), max_payload + 1);
        std::span<const std::byte> in(bad.data(), frame_header_size);
        auto f = r.feed(in);
        CHECK(code_of(f) == errc::too_large);
        CHECK(r.failed());
        // ...and the reader stays failed
        in = std::span<const std::byte>(stream);
        CHECK(code_of(r.feed(in)) == errc::stream_failed);
        CHECK(r.receive_buffer().empty());
        r.reset();
        CHECK_FALSE(r.failed());
        in = std::span<const std::byte>(stream);
        auto g = r.feed(in);
        REQUIRE(g);
        CHECK(g->has_value());
    }
    SECTION("garbage in the middle of a stream") {
        auto bad = stream;
        bad[frame_header_size + hello_size] = std::byte{0};  // magic of the second frame
        std::span<const std::byte> in(bad);
        auto f = r.feed(in);
        REQUIRE(f);
        REQUIRE(f->has_value());
        CHECK(code_of(r.feed(in)) == errc::bad_magic);
    }
    SECTION("reporting more bytes than offered is a caller bug and fails the stream") {
        auto into = r.receive_buffer();
        CHECK(code_of(r.received(into.size() + 1)) == errc::buffer_too_small);
        CHECK(r.failed());
    }
}
