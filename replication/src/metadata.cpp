// replication: generation-id rules, the dirty bitmap, and the two-slot metadata file.
#include "tandem/replication/metadata.hpp"

#include "tandem/base/bytes.hpp"
#include "tandem/replication/error.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
// The state struct on the stack needs its definition: xxhash.h's documented way.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <bit>
#include <cerrno>
#include <filesystem>
#include <functional>

namespace tandem::replication {

namespace {
error_code fail(errc e) noexcept { return make_error_code(e); }

// ceil(a / b) without the overflow of (a + b - 1) / b near 2^64.
constexpr std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) noexcept { return a / b + (a % b != 0); }

bool in_history(const generation_ids& g, std::uint64_t id) noexcept {
    return id != gen_none && (g.history[0] == id || g.history[1] == id);
}
}  // namespace

// ---- generation ids ----------------------------------------------------------------------------------

result<std::uint64_t> random_generation_id() noexcept {
    for (;;) {
        std::uint64_t v = 0;
        auto r = ::getrandom(&v, sizeof v, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return errno_error();
        }
        if (r == sizeof v && v != gen_none) return v;
    }
}

generation_ids start_divergence(const generation_ids& g, std::uint64_t fresh) noexcept {
    generation_ids n = g;
    if (fresh == gen_none) return n;  // precondition broken: keep the ids rather than pretend to be fresh
    if (g.current == gen_none) {
        // The first data on this volume: no peer shares any of it, so there is
        // no bitmap to keep; a peer will need a full sync.
        n.current = fresh;
        return n;
    }
    if (g.bitmap == gen_none) {
        n.bitmap = g.current;
    } else {
        // Already diverged: the dirty bitmap still covers everything since the
        // older bitmap id, which is where the peer most likely still is.
        n.history[1] = g.history[0];
        n.history[0] = g.current;
    }
    n.current = fresh;
    return n;
}

generation_ids finish_resync_source(const generation_ids& g) noexcept {
    generation_ids n = g;
    if (g.bitmap == gen_none) return n;
    n.history[1] = g.history[0];
    n.history[0] = g.bitmap;
    n.bitmap = gen_none;
    return n;
}

generation_ids settle_after_none(const generation_ids& local, const generation_ids& peer) noexcept {
    if (local.current == peer.current && local.bitmap != gen_none && peer.bitmap == gen_none &&
        peer.history[0] == local.bitmap)
        return finish_resync_source(local);
    return local;
}

std::string_view to_string(sync_decision d) noexcept {
    switch (d) {
        case sync_decision::none: return "none";
        case sync_decision::full_source: return "full_source";
        case sync_decision::full_target: return "full_target";
        case sync_decision::bitmap_source: return "bitmap_source";
        case sync_decision::bitmap_target: return "bitmap_target";
        case sync_decision::split_brain: return "split_brain";
        case sync_decision::unrelated: return "unrelated";
        case sync_decision::no_consistent_source: return "no_consistent_source";
    }
    return "unknown";
}

// The rules, first match wins (docs/replication-protocol.md, "Deciding the sync"):
//   1 both fresh                                   none: nothing was ever written
//   2 local fresh / 3 peer fresh                   full, from the side with data
//   4 same current id                              none, unless one side's resync is
//                                                  unfinished (it is the target) or one side
//                                                  crashed as primary (it is the source: its
//                                                  last writes may not have reached the peer)
//                                                  or the primary has blocks to resend (it is
//                                                  the source: a verify repair)
//   5 peer's bitmap id == local current            bitmap, peer -> local: the peer moved on from us
//   6 local bitmap id == peer's current            bitmap, local -> peer
//   7 local current in peer's history              full, peer -> local: we are older than its bitmap
//   8 peer's current in local history              full, local -> peer
//   9 a common ancestor among bitmap and history   split brain: both moved on
//  10 otherwise                                    unrelated data
// A source must hold consistent data, else no_consistent_source.
sync_verdict decide_sync(const sync_party& local, const sync_party& peer) noexcept {
    const generation_ids& l = local.gen;
    const generation_ids& p = peer.gen;
    auto from = [&](bool local_is_source, sync_decision d, std::string_view rule) -> sync_verdict {
        bool ok = local_is_source ? local.consistent : peer.consistent;
        if (!ok) return {sync_decision::no_consistent_source, rule};
        return {d, rule};
    };

    if (l.current == gen_none && p.current == gen_none) return {sync_decision::none, "both fresh: no data yet"};
    if (l.current == gen_none) return from(false, sync_decision::full_target, "local fresh: new or replaced disk");
    if (p.current == gen_none) return from(true, sync_decision::full_source, "peer fresh: new or replaced disk");

    if (l.current == p.current) {
        if (!local.consistent && !peer.consistent)
            return {sync_decision::no_consistent_source, "same generation, both inconsistent"};
        if (!local.consistent) return {sync_decision::bitmap_target, "same generation, local resync unfinished"};
        if (!peer.consistent) return {sync_decision::bitmap_source, "same generation, peer resync unfinished"};
        if (local.crashed_primary && peer.crashed_primary)
            return {sync_decision::split_brain, "same generation, both crashed as primary"};
        if (local.crashed_primary) return {sync_decision::bitmap_source, "same generation, local crashed as primary"};
        if (peer.crashed_primary) return {sync_decision::bitmap_target, "same generation, peer crashed as primary"};
        if (local.resend) return {sync_decision::bitmap_source, "same generation, local has blocks to resend"};
        if (peer.resend) return {sync_decision::bitmap_target, "same generation, peer has blocks to resend"};
        return {sync_decision::none, "same generation"};
    }

    if (p.bitmap != gen_none && p.bitmap == l.current)
        return from(false, sync_decision::bitmap_target, "peer moved on from our current");
    if (l.bitmap != gen_none && l.bitmap == p.current)
        return from(true, sync_decision::bitmap_source, "we moved on from the peer's current");

    if (in_history(p, l.current)) return from(false, sync_decision::full_target, "peer moved on past its bitmap");
    if (in_history(l, p.current)) return from(true, sync_decision::full_source, "we moved on past our bitmap");

    bool common = (l.bitmap != gen_none && (l.bitmap == p.bitmap || in_history(p, l.bitmap))) ||
                  (p.bitmap != gen_none && in_history(l, p.bitmap)) || in_history(p, l.history[0]) ||
                  in_history(p, l.history[1]);
    if (common) return {sync_decision::split_brain, "both moved on from a common ancestor"};
    return {sync_decision::unrelated, "no common history"};
}

// ---- dirty bitmap ------------------------------------------------------------------------------------

namespace {
result<void> check_geometry(std::uint64_t volume_size, std::uint32_t granularity) noexcept {
    // 2^62 bytes (4 EiB) keeps every offset + granularity sum far from overflowing.
    if (volume_size == 0 || volume_size % sector_bytes != 0 || volume_size > (1ull << 62))
        return fail(errc::bad_geometry);
    if (granularity < sector_bytes || granularity > (1u << 30) || !std::has_single_bit(granularity))
        return fail(errc::bad_geometry);
    std::uint64_t blocks = ceil_div(volume_size, granularity);
    std::uint64_t words = ceil_div(blocks, 64);
    if (words > max_bitmap_bytes / 8) return fail(errc::bad_geometry);
    return {};
}

std::uint64_t tail_mask(std::uint64_t blocks) noexcept {  // valid bits of the last word
    return blocks % 64 == 0 ? ~std::uint64_t{0} : (std::uint64_t{1} << (blocks % 64)) - 1;
}

// Bits [lo, hi) of one word, 0 <= lo < hi <= 64.
std::uint64_t bits(unsigned lo, unsigned hi) noexcept {
    std::uint64_t upper = hi == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << hi) - 1;
    return upper & ~((std::uint64_t{1} << lo) - 1);
}
}  // namespace

result<dirty_bitmap> dirty_bitmap::make(std::uint64_t volume_size, std::uint32_t granularity) {
    if (auto ok = check_geometry(volume_size, granularity); !ok) return ok.error();
    dirty_bitmap b;
    b.volume_size_ = volume_size;
    b.granularity_ = granularity;
    b.blocks_ = ceil_div(volume_size, granularity);
    b.words_.assign(ceil_div(b.blocks_, 64), 0);
    return b;
}

result<dirty_bitmap> dirty_bitmap::from_words(std::uint64_t volume_size, std::uint32_t granularity,
                                              std::span<const std::uint64_t> words) {
    auto b = make(volume_size, granularity);
    if (!b) return b.error();
    if (words.size() != b->words_.size()) return fail(errc::bad_length);  // never empty: make() has >= 1 block
    if ((words.back() & ~tail_mask(b->blocks_)) != 0) return fail(errc::out_of_range);
    std::copy(words.begin(), words.end(), b->words_.begin());
    b->recount();
    return b;
}

void dirty_bitmap::recount() noexcept {
    dirty_ = 0;
    for (auto w : words_) dirty_ += static_cast<std::uint64_t>(std::popcount(w));
}

void dirty_bitmap::set_range(std::uint64_t first, std::uint64_t last, bool value) noexcept {
    last = std::min(last, blocks_);
    while (first < last) {
        std::uint64_t w = first / 64;
        auto lo = static_cast<unsigned>(first % 64);
        auto hi = static_cast<unsigned>(std::min<std::uint64_t>(64, last - w * 64));
        std::uint64_t mask = bits(lo, hi);
        std::uint64_t before = words_[w];
        std::uint64_t after = value ? (before | mask) : (before & ~mask);
        dirty_ = dirty_ - static_cast<std::uint64_t>(std::popcount(before)) + static_cast<std::uint64_t>(std::popcount(after));
        words_[w] = after;
        first = w * 64 + hi;
    }
}

void dirty_bitmap::mark(std::uint64_t offset, std::uint64_t length) noexcept {
    if (length == 0 || offset >= volume_size_) return;
    std::uint64_t end = length > volume_size_ - offset ? volume_size_ : offset + length;
    set_range(offset / granularity_, ceil_div(end, granularity_), true);
}

void dirty_bitmap::clear(std::uint64_t offset, std::uint64_t length) noexcept {
    if (length == 0 || offset >= volume_size_) return;
    std::uint64_t end = length > volume_size_ - offset ? volume_size_ : offset + length;
    std::uint64_t first = ceil_div(offset, granularity_);
    std::uint64_t last = end == volume_size_ ? blocks_ : end / granularity_;
    if (first < last) set_range(first, last, false);
}

void dirty_bitmap::mark_all() noexcept {
    if (words_.empty()) return;
    std::fill(words_.begin(), words_.end(), ~std::uint64_t{0});
    words_.back() &= tail_mask(blocks_);
    dirty_ = blocks_;
}

void dirty_bitmap::clear_all() noexcept {
    std::fill(words_.begin(), words_.end(), 0);
    dirty_ = 0;
}

bool dirty_bitmap::test_block(std::uint64_t block) const noexcept {
    return block < blocks_ && ((words_[block / 64] >> (block % 64)) & 1) != 0;
}

bool dirty_bitmap::test(std::uint64_t offset, std::uint64_t length) const noexcept {
    if (length == 0 || offset >= volume_size_) return false;
    std::uint64_t end = length > volume_size_ - offset ? volume_size_ : offset + length;
    std::uint64_t first = offset / granularity_;
    std::uint64_t last = ceil_div(end, granularity_);
    while (first < last) {
        std::uint64_t w = first / 64;
        auto lo = static_cast<unsigned>(first % 64);
        auto hi = static_cast<unsigned>(std::min<std::uint64_t>(64, last - w * 64));
        if ((words_[w] & bits(lo, hi)) != 0) return true;
        first = w * 64 + hi;
    }
    return false;
}

std::uint64_t dirty_bitmap::dirty_bytes() const noexcept {
    if (dirty_ == 0) return 0;
    std::uint64_t bytes = dirty_ * granularity_;
    if (test_block(blocks_ - 1)) bytes -= blocks_ * granularity_ - volume_size_;  // the short last block
    return bytes;
}

std::optional<byte_range> dirty_bitmap::next_run(std::uint64_t from) const noexcept {
    if (from >= volume_size_) return std::nullopt;
    std::uint64_t b = from / granularity_;
    // First set bit at or after b.
    std::uint64_t w = b / 64;
    std::uint64_t word = words_[w] & ~((std::uint64_t{1} << (b % 64)) - 1);
    while (word == 0) {
        if (++w == words_.size()) return std::nullopt;
        word = words_[w];
    }
    std::uint64_t start = w * 64 + static_cast<std::uint64_t>(std::countr_zero(word));
    // First clear bit after start (bits past the last block are zero, so this ends).
    std::uint64_t e = start;
    w = e / 64;
    word = ~words_[w] & ~((std::uint64_t{1} << (e % 64)) - 1);
    while (word == 0) {
        if (++w == words_.size()) break;
        word = ~words_[w];
    }
    e = w == words_.size() ? blocks_ : std::min(blocks_, w * 64 + static_cast<std::uint64_t>(std::countr_zero(word)));
    std::uint64_t off = std::max(start * granularity_, from);
    std::uint64_t end = std::min(e * granularity_, volume_size_);
    return byte_range{off, end - off};
}

result<void> dirty_bitmap::merge(const dirty_bitmap& other) noexcept {
    if (other.volume_size_ != volume_size_ || other.granularity_ != granularity_) return fail(errc::bad_geometry);
    for (std::size_t i = 0; i < words_.size(); ++i) words_[i] |= other.words_[i];
    recount();
    return {};
}

result<void> dirty_bitmap::merge_words(std::uint64_t start_block, std::span<const std::uint64_t> words) noexcept {
    if (start_block % 64 != 0) return fail(errc::misaligned);
    std::uint64_t first = start_block / 64;
    if (first > words_.size() || words.size() > words_.size() - first) return fail(errc::out_of_range);
    if (!words.empty() && first + words.size() == words_.size() && (words.back() & ~tail_mask(blocks_)) != 0)
        return fail(errc::out_of_range);
    for (std::size_t i = 0; i < words.size(); ++i) {
        auto& dst = words_[first + i];
        dirty_ += static_cast<std::uint64_t>(std::popcount(words[i] & ~dst));
        dst |= words[i];
    }
    return {};
}

// ---- metadata slots --------------------------------------------------------------------------------------
//
// Slot layout (big-endian, like the wire):
//    0 u32 magic "TNDM"     4 u16 version      6 u16 header size (4096)
//    8 u64 seq             16 u64 checksum: XXH3-64 of the whole slot with these 8 bytes zero
//   24 u64 slot size       32 u64 volume size 40 u32 granularity  44 u32 flags
//   48 u64 current  56 u64 bitmap id  64 u64 history[0]  72 u64 history[1]
//   80 u64 resync cursor   88 u64 bitmap word count
//   96 u8 volume identity length (<= 120)   97 the identity, printable ASCII (version 2; zero in 1)
//   217..4095 zero
//   4096 the bitmap words (u64 each), then zero up to the slot size (a multiple of 4096)

namespace {
constexpr std::size_t off_checksum = 16;
constexpr std::size_t off_identity = 96;
constexpr std::size_t header_used = off_identity + 1 + max_volume_identity;

std::uint64_t round_up_4k(std::uint64_t n) noexcept { return (n + 4095) / 4096 * 4096; }

std::uint64_t slot_checksum(std::span<const std::byte> slot) noexcept {
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    static constexpr std::byte zero[8]{};
    XXH3_64bits_update(&st, slot.data(), off_checksum);
    XXH3_64bits_update(&st, zero, sizeof zero);
    XXH3_64bits_update(&st, slot.data() + off_checksum + 8, slot.size() - off_checksum - 8);
    return XXH3_64bits_digest(&st);
}

bool all_zero(std::span<const std::byte> b) noexcept {
    return std::all_of(b.begin(), b.end(), [](std::byte x) { return x == std::byte{0}; });
}
}  // namespace

result<std::uint64_t> metadata_slot_size(std::uint64_t volume_size, std::uint32_t granularity) {
    if (auto ok = check_geometry(volume_size, granularity); !ok) return ok.error();
    std::uint64_t blocks = ceil_div(volume_size, granularity);
    return metadata_header_size + round_up_4k(ceil_div(blocks, 64) * 8);
}

result<std::size_t> encode_metadata_slot(std::span<std::byte> out, const metadata_state& s, std::uint64_t seq) {
    auto size = metadata_slot_size(s.volume_size, s.granularity);
    if (!size) return size.error();
    const auto& bm = s.bitmap;
    if (bm.volume_size() != s.volume_size || bm.granularity() != s.granularity) return fail(errc::bad_geometry);
    if ((s.flags & ~md_known_flags) != 0) return fail(errc::bad_flags);
    if (s.volume_identity.size() > max_volume_identity ||
        !std::all_of(s.volume_identity.begin(), s.volume_identity.end(), [](char c) { return c >= ' ' && c <= '~'; }))
        return fail(errc::bad_field);
    if (out.size() < *size) return fail(errc::buffer_too_small);
    auto b = out.first(static_cast<std::size_t>(*size));
    std::fill(b.begin(), b.end(), std::byte{0});
    store_be<std::uint32_t>(b.subspan(0), metadata_magic);
    store_be<std::uint16_t>(b.subspan(4), metadata_version);
    store_be<std::uint16_t>(b.subspan(6), static_cast<std::uint16_t>(metadata_header_size));
    store_be<std::uint64_t>(b.subspan(8), seq);
    store_be<std::uint64_t>(b.subspan(24), *size);
    store_be<std::uint64_t>(b.subspan(32), s.volume_size);
    store_be<std::uint32_t>(b.subspan(40), s.granularity);
    store_be<std::uint32_t>(b.subspan(44), s.flags);
    store_be<std::uint64_t>(b.subspan(48), s.gen.current);
    store_be<std::uint64_t>(b.subspan(56), s.gen.bitmap);
    store_be<std::uint64_t>(b.subspan(64), s.gen.history[0]);
    store_be<std::uint64_t>(b.subspan(72), s.gen.history[1]);
    store_be<std::uint64_t>(b.subspan(80), s.resync_cursor);
    auto words = bm.words();
    store_be<std::uint64_t>(b.subspan(88), words.size());
    b[off_identity] = static_cast<std::byte>(s.volume_identity.size());
    std::memcpy(b.data() + off_identity + 1, s.volume_identity.data(), s.volume_identity.size());
    for (std::size_t i = 0; i < words.size(); ++i) store_be<std::uint64_t>(b.subspan(metadata_header_size + 8 * i), words[i]);
    store_be<std::uint64_t>(b.subspan(off_checksum), slot_checksum(b));
    return b.size();
}

result<decoded_slot> decode_metadata_slot(std::span<const std::byte> in) {
    if (in.size() < metadata_header_size) return fail(errc::truncated);
    if (load_be<std::uint32_t>(in) != metadata_magic) return fail(errc::bad_magic);
    auto version = load_be<std::uint16_t>(in.subspan(4));
    if (version != 1 && version != metadata_version) return fail(errc::bad_version);
    if (load_be<std::uint16_t>(in.subspan(6)) != metadata_header_size) return fail(errc::bad_field);
    std::uint64_t size = load_be<std::uint64_t>(in.subspan(24));
    if (size < metadata_header_size || size % 4096 != 0) return fail(errc::bad_field);
    if (size > in.size()) return fail(errc::truncated);
    auto slot = in.first(static_cast<std::size_t>(size));
    // Nothing below is trusted until the checksum over the whole slot verifies.
    if (load_be<std::uint64_t>(slot.subspan(off_checksum)) != slot_checksum(slot)) return fail(errc::bad_checksum);

    decoded_slot d;
    auto& s = d.state;
    d.seq = load_be<std::uint64_t>(slot.subspan(8));
    s.volume_size = load_be<std::uint64_t>(slot.subspan(32));
    s.granularity = load_be<std::uint32_t>(slot.subspan(40));
    s.flags = load_be<std::uint32_t>(slot.subspan(44));
    s.gen.current = load_be<std::uint64_t>(slot.subspan(48));
    s.gen.bitmap = load_be<std::uint64_t>(slot.subspan(56));
    s.gen.history[0] = load_be<std::uint64_t>(slot.subspan(64));
    s.gen.history[1] = load_be<std::uint64_t>(slot.subspan(72));
    s.resync_cursor = load_be<std::uint64_t>(slot.subspan(80));
    std::uint64_t word_count = load_be<std::uint64_t>(slot.subspan(88));
    // Version 1 had zeros here: no identity, which the check below enforces.
    auto id_len = std::to_integer<std::size_t>(slot[off_identity]);
    if (id_len > max_volume_identity) return fail(errc::bad_field);
    if (version == 1 && id_len != 0) return fail(errc::bad_reserved);
    auto id = slot.subspan(off_identity + 1, id_len);
    if (!std::all_of(id.begin(), id.end(), [](std::byte c) { return c >= std::byte{' '} && c <= std::byte{'~'}; }))
        return fail(errc::bad_field);
    s.volume_identity.assign(reinterpret_cast<const char*>(id.data()), id.size());
    if (!all_zero(slot.subspan(off_identity + 1 + id_len, max_volume_identity - id_len))) return fail(errc::bad_reserved);

    auto expect = metadata_slot_size(s.volume_size, s.granularity);
    if (!expect) return expect.error();
    if (*expect != size) return fail(errc::bad_geometry);
    if ((s.flags & ~md_known_flags) != 0) return fail(errc::bad_flags);
    if (!all_zero(slot.subspan(header_used, metadata_header_size - header_used))) return fail(errc::bad_reserved);
    if (s.gen.current == gen_none &&
        (s.gen.bitmap != gen_none || s.gen.history[0] != gen_none || s.gen.history[1] != gen_none))
        return fail(errc::bad_field);
    if (s.resync_cursor > s.volume_size) return fail(errc::out_of_range);
    if (word_count != ceil_div(ceil_div(s.volume_size, s.granularity), 64)) return fail(errc::bad_geometry);
    auto wbytes = static_cast<std::size_t>(word_count * 8);
    if (!all_zero(slot.subspan(metadata_header_size + wbytes))) return fail(errc::bad_reserved);

    std::vector<std::uint64_t> words(static_cast<std::size_t>(word_count));
    for (std::size_t i = 0; i < words.size(); ++i) words[i] = load_be<std::uint64_t>(slot.subspan(metadata_header_size + 8 * i));
    auto bm = dirty_bitmap::from_words(s.volume_size, s.granularity, words);
    if (!bm) return bm.error();
    s.bitmap = std::move(*bm);
    return d;
}

namespace {

// Reads `out.size()` bytes at `offset` of the image; false on a short read.
using read_fn = std::function<result<void>(std::uint64_t offset, std::span<std::byte> out)>;

// The one loading procedure, for a file and for bytes in memory: find the slot
// size from slot A's header (or, if A's header is unreadable, half the file),
// insist that the file holds two whole slots, decode both, take the valid one
// with the higher sequence number.
result<loaded_metadata> load(std::uint64_t file_size, const read_fn& read) {
    if (file_size < 2 * metadata_header_size) return fail(errc::truncated);
    std::vector<std::byte> buf(metadata_header_size);
    if (auto ok = read(0, buf); !ok) return ok.error();
    std::uint64_t stride = file_size / 2 / 4096 * 4096;
    if (load_be<std::uint32_t>(buf) == metadata_magic) {
        std::uint64_t claimed = load_be<std::uint64_t>(std::span<const std::byte>(buf).subspan(24));
        if (claimed >= metadata_header_size && claimed % 4096 == 0 && claimed <= max_bitmap_bytes + 2 * std::uint64_t{4096})
            stride = claimed;
    }
    if (file_size < 2 * stride) return fail(errc::truncated);
    if (file_size != 2 * stride) return fail(errc::bad_geometry);

    buf.resize(static_cast<std::size_t>(stride));
    std::optional<loaded_metadata> best;
    bool valid[2] = {false, false};
    for (int i = 0; i < 2; ++i) {
        if (auto ok = read(static_cast<std::uint64_t>(i) * stride, buf); !ok) return ok.error();
        auto d = decode_metadata_slot(buf);
        if (!d) continue;
        valid[i] = true;
        if (!best || d->seq > best->seq) best = loaded_metadata{std::move(d->state), d->seq, i, false};
    }
    if (!best) return fail(errc::no_valid_slot);
    best->other_valid = valid[1 - best->slot];
    return std::move(*best);
}

result<void> read_exact(int fd, std::uint64_t offset, std::span<std::byte> out) {
    std::size_t got = 0;
    while (got < out.size()) {
        auto n = ::pread(fd, out.data() + got, out.size() - got, static_cast<off_t>(offset + got));
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno_error();
        }
        if (n == 0) return fail(errc::truncated);
        got += static_cast<std::size_t>(n);
    }
    return {};
}

result<void> write_exact(int fd, std::uint64_t offset, std::span<const std::byte> in) {
    std::size_t done = 0;
    while (done < in.size()) {
        auto n = ::pwrite(fd, in.data() + done, in.size() - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno_error();
        }
        done += static_cast<std::size_t>(n);
    }
    return {};
}

result<void> datasync(int fd) {
    if (::fdatasync(fd) != 0) return errno_error();
    return {};
}

result<void> lock(int fd) {
    // flock(2), not fcntl locks: it belongs to the open file description, so
    // closing another descriptor of the same file in this process cannot drop it.
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) return errno_error();
    return {};
}

}  // namespace

result<loaded_metadata> decode_metadata_image(std::span<const std::byte> image) {
    return load(image.size(), [image](std::uint64_t offset, std::span<std::byte> out) -> result<void> {
        if (offset > image.size() || out.size() > image.size() - offset) return fail(errc::truncated);
        std::copy_n(image.begin() + static_cast<std::ptrdiff_t>(offset), out.size(), out.begin());
        return {};
    });
}

// ---- metadata_file ----------------------------------------------------------------------------------------

result<metadata_file> metadata_file::create(const std::string& path, std::uint64_t volume_size,
                                            std::uint32_t granularity) {
    auto stride = metadata_slot_size(volume_size, granularity);
    if (!stride) return stride.error();
    auto bm = dirty_bitmap::make(volume_size, granularity);
    if (!bm) return bm.error();

    int raw = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (raw < 0) return errno_error();
    metadata_file f;
    f.fd_.reset(raw);
    // A half-made file would make every retry fail with EEXIST: remove it.
    auto undo = [&](error_code ec) -> result<metadata_file> {
        f.fd_.reset();
        ::unlink(path.c_str());
        return ec;
    };
    if (auto ok = lock(f.fd_.get()); !ok) return undo(ok.error());

    f.state_.volume_size = volume_size;
    f.state_.granularity = granularity;
    f.state_.bitmap = std::move(*bm);
    f.slot_size_ = *stride;
    f.volume_size_ = volume_size;
    f.granularity_ = granularity;
    f.buf_.resize(static_cast<std::size_t>(*stride));
    // Both slots valid from the start (A seq 1, B seq 2): a torn first commit
    // still leaves one to load.
    for (int i = 0; i < 2; ++i) {
        auto n = encode_metadata_slot(f.buf_, f.state_, static_cast<std::uint64_t>(i) + 1);
        if (!n) return undo(n.error());
        if (auto ok = write_exact(f.fd_.get(), static_cast<std::uint64_t>(i) * *stride, f.buf_); !ok)
            return undo(ok.error());
    }
    if (auto ok = datasync(f.fd_.get()); !ok) return undo(ok.error());
    // The new directory entry is durable only once the directory is synced.
    auto dir = std::filesystem::path(path).parent_path();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return undo(errno_error());
    unique_fd dir_fd(dfd);
    if (::fsync(dir_fd.get()) != 0) return undo(errno_error());
    f.seq_ = 2;
    f.slot_ = 1;
    f.other_valid_ = true;
    return f;
}

result<metadata_file> metadata_file::open(const std::string& path) {
    int raw = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (raw < 0) return errno_error();
    metadata_file f;
    f.fd_.reset(raw);
    if (auto ok = lock(f.fd_.get()); !ok) return ok.error();
    struct stat st {};
    if (::fstat(f.fd_.get(), &st) != 0) return errno_error();
    if (!S_ISREG(st.st_mode)) return fail(errc::bad_field);
    int fd = f.fd_.get();
    auto loaded = load(static_cast<std::uint64_t>(st.st_size),
                       [fd](std::uint64_t offset, std::span<std::byte> out) { return read_exact(fd, offset, out); });
    if (!loaded) return loaded.error();
    f.state_ = std::move(loaded->state);
    f.seq_ = loaded->seq;
    f.slot_ = loaded->slot;
    f.other_valid_ = loaded->other_valid;
    f.slot_size_ = static_cast<std::uint64_t>(st.st_size) / 2;
    f.volume_size_ = f.state_.volume_size;
    f.granularity_ = f.state_.granularity;
    return f;
}

result<void> metadata_file::commit() {
    // The file's geometry is fixed at create(); resizing the volume is a separate, later operation.
    if (state_.volume_size != volume_size_ || state_.granularity != granularity_ ||
        state_.bitmap.volume_size() != volume_size_ || state_.bitmap.granularity() != granularity_)
        return fail(errc::bad_geometry);
    buf_.resize(static_cast<std::size_t>(slot_size_));
    int target = 1 - slot_;
    auto n = encode_metadata_slot(buf_, state_, seq_ + 1);
    if (!n) return n.error();
    if (auto ok = write_exact(fd_.get(), static_cast<std::uint64_t>(target) * slot_size_, buf_); !ok) return ok;
    if (auto ok = datasync(fd_.get()); !ok) return ok;
    slot_ = target;
    ++seq_;
    other_valid_ = true;
    return {};
}

}  // namespace tandem::replication
