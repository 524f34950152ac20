// replication: the wire protocol on TCP 7789 — frame layout, message codecs, negotiation, mutual authentication.
#pragma once

#include "tandem/base/hmac.hpp"
#include "tandem/base/result.hpp"
#include "tandem/replication/error.hpp"
#include "tandem/replication/metadata.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::replication {

// Every integer on the wire is big-endian (base/bytes.hpp). Layouts are in
// docs/replication-protocol.md; the static_asserts below pin their sizes.
// The discipline (magic, version range, negotiated feature bits, fixed-width
// fields) follows DRBD's drbd_protocol.h; the layouts are Tandem's own.

inline constexpr std::uint16_t default_port = 7789;
inline constexpr std::uint32_t frame_magic = 0x544E4452;  // "TNDR"
inline constexpr std::uint16_t protocol_version_min = 1;
inline constexpr std::uint16_t protocol_version_max = 1;

// ---- frame header --------------------------------------------------------------------------------
//   0 u32 magic  4 u16 type  6 u16 flags  8 u32 payload length  12 u32 reserved (0)  16 u64 seq
inline constexpr std::size_t frame_header_size = 24;

// Offsets and lengths of data are in bytes and must be multiples of the 512-byte
// sector (the smallest logical block size Linux has); negotiation makes both
// sides agree on the real logical block size, which is a multiple of it.
inline constexpr std::uint32_t wire_sector = sector_bytes;
inline constexpr std::uint32_t max_data_length = 1u << 20;  // 1 MiB of block data per frame
inline constexpr std::size_t data_header_size = 24;          // offset, length, flags, checksum
inline constexpr std::uint32_t max_payload = max_data_length + data_header_size;
inline constexpr std::size_t max_frame_size = frame_header_size + max_payload;

enum class msg_type : std::uint16_t {
    hello = 1,
    auth_challenge = 2,
    auth_response = 3,
    auth_ok = 4,
    data = 16,
    data_ack = 17,
    flush = 18,
    flush_ack = 19,
    zero = 20,  // make a range read as zeros (a discard); acknowledged with data_ack
    bitmap_chunk = 32,
    resync_done = 33,
    digest_request = 34,
    digest_reply = 35,
    error = 48,
    ping = 49,
    pong = 50,
};
[[nodiscard]] bool known_type(std::uint16_t t) noexcept;
[[nodiscard]] std::string_view to_string(msg_type t) noexcept;

// No frame flag is defined in version 1; a set bit is refused (bad_flags). A
// later version may define one, used only when a negotiated feature says so.
inline constexpr std::uint16_t frame_known_flags = 0;

struct frame_header {
    msg_type type = msg_type::ping;
    std::uint16_t flags = 0;
    std::uint32_t length = 0;  // payload bytes after the header
    std::uint64_t seq = 0;     // per sender and connection, starts at 1; acks name it
};

// Checks magic, reserved, flags, type, and that `length` is possible for the type
// (exact for fixed-size messages, within limits for variable ones). `in` holds at
// least frame_header_size bytes (bad_length otherwise).
[[nodiscard]] result<frame_header> decode_frame_header(std::span<const std::byte> in) noexcept;
// Whether a payload of `length` bytes is possible for the type.
[[nodiscard]] bool payload_length_ok(msg_type t, std::uint32_t length) noexcept;

// ---- features, hello, negotiation -----------------------------------------------------------------

// Optional abilities, offered in hello and used only when both offer them (AND).
// Unknown bits from a newer peer are ignored by the AND, never refused.
enum feature_bits : std::uint64_t {
    feat_zero_copy = 1ull << 0,      // the receiver reads data payloads straight into the write buffer
    feat_digest_resync = 1ull << 1,  // resync compares digest_request/digest_reply before sending data
    feat_verify = 1ull << 2,         // online verify with digest_request/digest_reply
    feat_resend = 1ull << 3,         // hello_resend: a bitmap resync on an unchanged generation
    feat_zero = 1ull << 4,           // zero frames: discards are replicated
    feat_all_known = 0x1f,
};

enum hello_flags : std::uint32_t {
    hello_primary = 1u << 0,          // the sender is primary now
    hello_consistent = 1u << 1,       // the sender's data is a usable copy
    hello_crashed_primary = 1u << 2,  // the sender was primary and did not demote cleanly
    hello_split_brain = 1u << 3,      // the sender has an unresolved split brain recorded
    hello_resend = 1u << 4,           // the sender is primary, on the peer's generation, with blocks to resend
    hello_known_flags = 0x1f,
};

inline constexpr std::size_t node_name_size = 32;

//   0 u16 version_min  2 u16 version_max  4 u32 reserved  8 u64 features  16 name[32]
//  48 u64 volume_size  56 u32 block_size  60 u32 flags
//  64 u64 current  72 u64 bitmap  80 u64 history[0]  88 u64 history[1]
struct hello {
    std::uint16_t version_min = protocol_version_min;
    std::uint16_t version_max = protocol_version_max;
    std::uint64_t features = 0;
    std::string node_name;          // 1..32 bytes, printable, zero-padded on the wire
    std::uint64_t volume_size = 0;  // bytes; a non-zero multiple of 512
    std::uint32_t block_size = 512; // logical block size: a power of two, 512..65536
    std::uint32_t flags = 0;        // hello_flags
    generation_ids gen;
};
inline constexpr std::size_t hello_size = 96;

// What both sides use after the handshake.
struct negotiated {
    std::uint16_t version = 0;
    std::uint64_t features = 0;
    std::uint64_t volume_size = 0;  // bytes replicated: the primary's size, or the smaller if neither is primary
};

// Highest common version, features ANDed, and the volume checks of the seeds
// ("the secondary's /store must be at least the primary's size"): refuses with
// bad_version, block_size_mismatch, role_conflict or volume_too_small. Symmetric.
[[nodiscard]] result<negotiated> negotiate(const hello& local, const hello& peer) noexcept;

// ---- mutual authentication ------------------------------------------------------------------------

inline constexpr std::size_t nonce_size = 32;
using auth_nonce = std::array<std::byte, nonce_size>;
using auth_mac = hmac_sha256_digest;
inline constexpr std::string_view auth_context = "tandem-repl-v1";

// The direction byte says which side of the TCP connection computed a response,
// so a response one side made can never be replayed as the other side's.
enum class auth_role : std::uint8_t { connector = 'C', acceptor = 'A' };

// HMAC-SHA256(key, "tandem-repl-v1" || role || challenger_nonce || responder_nonce):
// the responder proves it holds the key, bound to both nonces of this connection.
[[nodiscard]] auth_mac make_auth_response(std::span<const std::byte> key, auth_role responder,
                                          const auth_nonce& challenger_nonce, const auth_nonce& responder_nonce) noexcept;
// Constant-time check of a peer's response; also refuses an empty key and a peer
// that echoed our own nonce back (auth_failed). Never logs the key.
[[nodiscard]] result<void> check_auth_response(std::span<const std::byte> key, auth_role responder,
                                               const auth_nonce& challenger_nonce, const auth_nonce& responder_nonce,
                                               const auth_mac& response) noexcept;
// 32 bytes from getrandom(2), the kernel's CSPRNG.
[[nodiscard]] result<auth_nonce> random_nonce() noexcept;

// ---- data ------------------------------------------------------------------------------------------

enum data_flags : std::uint32_t {
    data_fua = 1u << 0,       // write with FUA: durable on the peer before it acks
    data_resync = 1u << 1,    // part of a resync, not an application write
    data_preflush = 1u << 2,  // flush the peer's volume cache before this write
    data_known_flags = 0x7,
};

//   0 u64 offset  8 u32 length  12 u32 flags  16 u64 xxh3-64 of the bytes  24 bytes[length]
struct data_msg {
    std::uint64_t offset = 0;
    std::uint32_t length = 0;  // equals bytes.size()
    std::uint32_t flags = 0;
    std::uint64_t checksum = 0;
    std::span<const std::byte> bytes;  // a view into the payload it was decoded from
};

[[nodiscard]] std::uint64_t data_checksum(std::span<const std::byte> bytes) noexcept;  // XXH3_64bits, seed 0

enum class ack_status : std::uint32_t {
    ok = 0,
    io_error = 1,        // the peer's disk refused the write or flush
    bad_checksum = 2,    // verify_data failed on the peer: the sender should resend
    refused = 3,         // the peer is not in a state to accept it (for example split brain)
};
[[nodiscard]] std::string_view to_string(ack_status s) noexcept;

//   0 u64 offset  8 u32 length  12 u32 reserved (0)
// The receiver makes the range read as zeros, freeing the blocks where its
// device can (a punched hole, a discard that zeroes), and acknowledges it like
// a write. Multiples of 512, at most max_zero_length, inside the volume.
struct zero_msg {
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
};
inline constexpr std::uint32_t max_zero_length = 64u << 20;

//   0 u64 acked seq  8 u32 status  12 u32 reserved      (data_ack and flush_ack)
struct ack_msg {
    std::uint64_t seq = 0;
    ack_status status = ack_status::ok;
};

// ---- resync and verify ---------------------------------------------------------------------------

//   0 u64 start block (a multiple of 64)  8 u32 word count  12 u32 reserved  16 u64 words[count]
struct bitmap_chunk_msg {
    std::uint64_t start_block = 0;
    std::span<const std::byte> words_be;  // the words as on the wire; decode with word()
    [[nodiscard]] std::size_t word_count() const noexcept { return words_be.size() / 8; }
    [[nodiscard]] std::uint64_t word(std::size_t i) const noexcept;
    // The words in host order, for dirty_bitmap::merge_words().
    [[nodiscard]] std::vector<std::uint64_t> to_words() const;
};
inline constexpr std::size_t max_bitmap_words = (max_payload - 16) / 8;

//   the source's generation ids after finish_resync_source(): 0 u64 current  8 u64 bitmap  16 u64 history[2]
struct resync_done_msg {
    generation_ids gen;
};

//   0 u64 offset  8 u32 length  12 u32 chunk size      (digest_request)
//   same, then u64 xxh3-64 per chunk, ceil(length / chunk) of them (digest_reply; the last chunk may be short)
inline constexpr std::size_t max_digests = 1u << 17;  // 1 MiB of digests per reply
struct digest_request_msg {
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
    std::uint32_t chunk_size = 0;
    [[nodiscard]] std::size_t chunk_count() const noexcept;
};
struct digest_reply_msg {
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
    std::uint32_t chunk_size = 0;
    std::span<const std::byte> digests_be;
    [[nodiscard]] std::size_t chunk_count() const noexcept { return digests_be.size() / 8; }
    [[nodiscard]] std::uint64_t digest(std::size_t i) const noexcept;
};

// ---- error, ping -----------------------------------------------------------------------------------

//   0 u32 code  4 text (the rest of the payload: 0..1024 printable bytes, no NUL, no control characters)
inline constexpr std::size_t max_error_text = 1024;
struct error_msg {
    std::uint32_t code = 0;  // an errc value when the refusal is one of ours
    std::string_view text;   // a view into the payload
};

//   0 u64 echo: the pinger's CLOCK_MONOTONIC ns, returned unchanged in pong
struct ping_msg {
    std::uint64_t echo = 0;
};

// ---- payload sizes, pinned ------------------------------------------------------------------------
inline constexpr std::size_t auth_challenge_size = nonce_size;
inline constexpr std::size_t auth_response_size = hmac_sha256_size;
inline constexpr std::size_t ack_size = 16;
inline constexpr std::size_t bitmap_chunk_header_size = 16;
inline constexpr std::size_t resync_done_size = 32;
inline constexpr std::size_t digest_header_size = 16;
inline constexpr std::size_t ping_size = 8;
inline constexpr std::size_t zero_size = 16;
static_assert(frame_header_size == 4 + 2 + 2 + 4 + 4 + 8);
static_assert(hello_size == 2 + 2 + 4 + 8 + node_name_size + 8 + 4 + 4 + sizeof(generation_ids));
static_assert(data_header_size == 8 + 4 + 4 + 8);
static_assert(ack_size == 8 + 4 + 4);
static_assert(zero_size == 8 + 4 + 4);
static_assert(bitmap_chunk_header_size == 8 + 4 + 4);
static_assert(resync_done_size == sizeof(generation_ids));
static_assert(digest_header_size == 8 + 4 + 4);
static_assert(max_payload == (1u << 20) + data_header_size);
static_assert(bitmap_chunk_header_size + 8 * max_bitmap_words <= max_payload);
static_assert(digest_header_size + 8 * max_digests <= max_payload);
static_assert(4 + max_error_text <= max_payload);
static_assert(auth_response_size == 32 && auth_challenge_size == 32);

// ---- encoders: each writes one complete frame (header + payload) at the start of `out` and returns
// its length, or errc::buffer_too_small. Nothing is written past the frame.
[[nodiscard]] result<std::size_t> encode_hello(std::span<std::byte> out, std::uint64_t seq, const hello& m) noexcept;
[[nodiscard]] result<std::size_t> encode_auth_challenge(std::span<std::byte> out, std::uint64_t seq,
                                                        const auth_nonce& nonce) noexcept;
[[nodiscard]] result<std::size_t> encode_auth_response(std::span<std::byte> out, std::uint64_t seq,
                                                       const auth_mac& mac) noexcept;
[[nodiscard]] result<std::size_t> encode_auth_ok(std::span<std::byte> out, std::uint64_t seq) noexcept;
// Computes the checksum over m.bytes (m.checksum and m.length are ignored) and copies the bytes.
[[nodiscard]] result<std::size_t> encode_data(std::span<std::byte> out, std::uint64_t seq, const data_msg& m) noexcept;
// The same frame without its block bytes: the frame header and data header
// (frame_header_size + data_header_size bytes), for sending the bytes from
// their own buffer (two iovecs). The length in the header covers the bytes.
[[nodiscard]] result<std::size_t> encode_data_prefix(std::span<std::byte> out, std::uint64_t seq,
                                                     const data_msg& m) noexcept;
[[nodiscard]] result<std::size_t> encode_data_ack(std::span<std::byte> out, std::uint64_t seq, const ack_msg& m) noexcept;
[[nodiscard]] result<std::size_t> encode_flush(std::span<std::byte> out, std::uint64_t seq) noexcept;
[[nodiscard]] result<std::size_t> encode_zero(std::span<std::byte> out, std::uint64_t seq, const zero_msg& m) noexcept;
[[nodiscard]] result<std::size_t> encode_flush_ack(std::span<std::byte> out, std::uint64_t seq,
                                                   const ack_msg& m) noexcept;
// Words in host order; 1..max_bitmap_words of them.
[[nodiscard]] result<std::size_t> encode_bitmap_chunk(std::span<std::byte> out, std::uint64_t seq,
                                                      std::uint64_t start_block,
                                                      std::span<const std::uint64_t> words) noexcept;
[[nodiscard]] result<std::size_t> encode_resync_done(std::span<std::byte> out, std::uint64_t seq,
                                                     const resync_done_msg& m) noexcept;
[[nodiscard]] result<std::size_t> encode_digest_request(std::span<std::byte> out, std::uint64_t seq,
                                                        const digest_request_msg& m) noexcept;
// Digests in host order; exactly m.chunk_count() of them.
[[nodiscard]] result<std::size_t> encode_digest_reply(std::span<std::byte> out, std::uint64_t seq,
                                                      const digest_request_msg& m,
                                                      std::span<const std::uint64_t> digests) noexcept;
// Text longer than max_error_text is cut; control characters become '?'.
[[nodiscard]] result<std::size_t> encode_error(std::span<std::byte> out, std::uint64_t seq, std::uint32_t code,
                                               std::string_view text) noexcept;
[[nodiscard]] result<std::size_t> encode_ping(std::span<std::byte> out, std::uint64_t seq, const ping_msg& m) noexcept;
[[nodiscard]] result<std::size_t> encode_pong(std::span<std::byte> out, std::uint64_t seq, const ping_msg& m) noexcept;

// ---- decoders: each takes the payload of a frame whose header decoded with that type, and checks
// every field. Views in the results point into `payload`.
[[nodiscard]] result<hello> decode_hello(std::span<const std::byte> payload);
[[nodiscard]] result<auth_nonce> decode_auth_challenge(std::span<const std::byte> payload) noexcept;
[[nodiscard]] result<auth_mac> decode_auth_response(std::span<const std::byte> payload) noexcept;
[[nodiscard]] result<void> decode_auth_ok(std::span<const std::byte> payload) noexcept;
// Checks sector alignment, a non-zero length, and offset + length <= volume_size.
// Does not check the checksum: call verify_data() before writing the bytes.
[[nodiscard]] result<data_msg> decode_data(std::span<const std::byte> payload, std::uint64_t volume_size) noexcept;
// The same checks on the data header alone, for a receiver that reads the bytes
// straight into an aligned buffer; `payload_length` is the frame header's.
[[nodiscard]] result<data_msg> decode_data_header(std::span<const std::byte> header, std::uint32_t payload_length,
                                                  std::uint64_t volume_size) noexcept;
[[nodiscard]] result<void> verify_data(const data_msg& m) noexcept;  // bad_checksum
[[nodiscard]] result<ack_msg> decode_data_ack(std::span<const std::byte> payload) noexcept;
[[nodiscard]] result<void> decode_flush(std::span<const std::byte> payload) noexcept;
[[nodiscard]] result<ack_msg> decode_flush_ack(std::span<const std::byte> payload) noexcept;
[[nodiscard]] result<zero_msg> decode_zero(std::span<const std::byte> payload, std::uint64_t volume_size) noexcept;
// total_blocks: the bitmap's block count; words must stay within it (bits past it zero).
[[nodiscard]] result<bitmap_chunk_msg> decode_bitmap_chunk(std::span<const std::byte> payload,
                                                           std::uint64_t total_blocks) noexcept;
[[nodiscard]] result<resync_done_msg> decode_resync_done(std::span<const std::byte> payload) noexcept;
[[nodiscard]] result<digest_request_msg> decode_digest_request(std::span<const std::byte> payload,
                                                               std::uint64_t volume_size) noexcept;
[[nodiscard]] result<digest_reply_msg> decode_digest_reply(std::span<const std::byte> payload,
                                                           std::uint64_t volume_size) noexcept;
[[nodiscard]] result<error_msg> decode_error(std::span<const std::byte> payload) noexcept;
[[nodiscard]] result<ping_msg> decode_ping(std::span<const std::byte> payload) noexcept;
[[nodiscard]] result<ping_msg> decode_pong(std::span<const std::byte> payload) noexcept;

// ---- stream reassembly ---------------------------------------------------------------------------

struct frame {
    frame_header header;
    std::span<const std::byte> payload;  // valid until the reader's next call
};

// Turns a TCP byte stream into frames. It holds at most one frame
// (frame_header_size + max_payload bytes, allocated once) and checks the header
// as soon as its 24 bytes are in, so a bad or oversized header is refused
// before any payload is buffered. After an error the reader stays failed
// (errc::stream_failed): the connection must be closed. A peer that stops
// mid-frame leaves the reader incomplete (mid_frame()); timing that out is the
// engine's business.
class frame_reader {
public:
    frame_reader();

    // Copies bytes from the front of `in` (and advances it) up to the end of the
    // next frame. Returns the frame, nullopt when `in` ran out first, or an error.
    [[nodiscard]] result<std::optional<frame>> feed(std::span<const std::byte>& in);

    // Receiving in place (no copy): recv into receive_buffer(), then report how
    // many bytes arrived with received(). receive_buffer() is never larger than
    // what the frame in progress still needs, so bytes of the next frame never
    // land in it.
    [[nodiscard]] std::span<std::byte> receive_buffer() noexcept;
    [[nodiscard]] result<std::optional<frame>> received(std::size_t n);

    // True when part of a frame is buffered (the stream is not at a frame boundary).
    [[nodiscard]] bool mid_frame() const noexcept { return have_ > 0 && !done_; }
    [[nodiscard]] std::size_t buffered() const noexcept { return done_ ? 0 : have_; }
    [[nodiscard]] bool failed() const noexcept { return failed_; }
    // Drops everything, including a failure (for a new connection).
    void reset() noexcept;

private:
    std::vector<std::byte> buf_;
    std::size_t have_ = 0;  // bytes of the current frame in buf_
    std::size_t need_ = frame_header_size;  // bytes of the current frame wanted so far
    frame_header header_{};
    bool header_done_ = false;
    bool done_ = false;    // the last call returned a complete frame; the next call starts a new one
    bool failed_ = false;

    void start_next() noexcept;
    result<std::optional<frame>> advance();
};

}  // namespace tandem::replication
