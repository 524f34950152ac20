// replication: crash-safe replication metadata — generation ids, the sync decision, the dirty bitmap, the A/B file.
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/base/unique_fd.hpp"
#include "tandem/replication/volume.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::replication {

// ---- generation ids (docs/replication-protocol.md, "Generation ids") -------------------------
//
// A generation id is a random non-zero 64-bit value naming one state of the data
// set from which both nodes may have continued. 0 means "none". The idea and the
// four slots come from DRBD's generation identifiers (current, bitmap, history);
// the rules below are Tandem's own and are tested case by case.
//
//   current    the data set this node holds now; 0 on fresh metadata (a new or
//              replaced disk that has never held replicated data)
//   bitmap     the current id at the moment this node started writing without its
//              peer: the dirty bitmap holds every block written since; 0 when in sync
//   history    older ids, newest first, kept to recognise a peer far behind us
//              (full resync) or a common ancestor (split brain)
inline constexpr std::uint64_t gen_none = 0;

struct generation_ids {
    std::uint64_t current = gen_none;
    std::uint64_t bitmap = gen_none;
    std::array<std::uint64_t, 2> history{};

    bool operator==(const generation_ids&) const = default;
};

// A new generation id: 64 random bits from getrandom(2), never gen_none.
[[nodiscard]] result<std::uint64_t> random_generation_id() noexcept;

// The node starts writing while its peer cannot receive the writes: it lost the
// peer while primary, or it is promoted while disconnected. `fresh` is a new
// random non-zero id. If the node was in sync (bitmap == 0) the old current becomes
// the bitmap id; if it already diverged, the bitmap id (the older point the dirty
// bitmap covers) stays and the old current is pushed into history.
[[nodiscard]] generation_ids start_divergence(const generation_ids& g, std::uint64_t fresh) noexcept;

// The sync source at the end of a resync: the bitmap id moves into history. The
// target then takes the source's ids as they are after this call. Order of
// commits: the target first, then the source (docs: "Ending a resync").
[[nodiscard]] generation_ids finish_resync_source(const generation_ids& g) noexcept;

// What one side knows of itself at the handshake (the hello carries the same for the peer).
struct sync_party {
    generation_ids gen;
    bool primary = false;          // primary now
    bool consistent = false;       // its data is a usable copy (not a resync target mid-way)
    bool crashed_primary = false;  // it was primary when it last stopped and did not demote cleanly
    bool resend = false;           // primary on the same generation with dirty blocks (verify repair)
};

enum class sync_decision : std::uint8_t {
    none,                  // same data set: nothing to resync
    full_source,           // local sends every block of the volume
    full_target,           // local receives every block
    bitmap_source,         // local sends the blocks marked in the union of both dirty bitmaps
    bitmap_target,         // local receives those blocks
    split_brain,           // both moved on from a common ancestor: refuse; an operator picks the victim
    unrelated,             // no common history and both hold data: refuse; never overwrite silently
    no_consistent_source,  // the side that would be source holds inconsistent data: refuse
};
[[nodiscard]] std::string_view to_string(sync_decision d) noexcept;

struct sync_verdict {
    sync_decision decision = sync_decision::none;
    std::string_view rule;  // stable text naming the rule that decided, for the log line
};

// Pure: compares the two sides' generation ids, first rule that matches wins.
// The rules are listed in metadata.cpp and in docs/replication-protocol.md. The
// verdict is symmetric: decide_sync(b, a) is the mirror of decide_sync(a, b).
[[nodiscard]] sync_verdict decide_sync(const sync_party& local, const sync_party& peer) noexcept;

// When decide_sync says none and the current ids are equal, the ids a node
// should store: its own, unless it is a sync source that stopped between the
// target's commit and its own end-of-resync rotation (bitmap id still set and
// equal to the peer's newest history id), which repairs to the peer's ids.
[[nodiscard]] generation_ids settle_after_none(const generation_ids& local, const generation_ids& peer) noexcept;

// ---- dirty bitmap ------------------------------------------------------------------------------

inline constexpr std::uint32_t sector_bytes = 512;
inline constexpr std::uint32_t default_granularity = 4096;
inline constexpr std::uint64_t max_bitmap_bytes = 1ull << 30;  // 1 GiB: 32 PiB at 4 KiB granularity

// A byte range of the volume, [offset, offset + length).
struct byte_range {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    bool operator==(const byte_range&) const = default;
};

// One bit per `granularity` bytes of the volume: set = the block may differ
// from the peer. Word w bit b (least significant first) is block 64*w + b; on
// disk and on the wire each word is a big-endian u64. Bits past the last block
// are always zero. The last block may be shorter than the granularity.
class dirty_bitmap {
public:
    dirty_bitmap() = default;

    // volume_size: a non-zero multiple of 512; granularity: a power of two from
    // 512 to 1 GiB; the bitmap at most max_bitmap_bytes.
    [[nodiscard]] static result<dirty_bitmap> make(std::uint64_t volume_size,
                                                   std::uint32_t granularity = default_granularity);
    // As make(), then takes the words (word_count() of them); refuses set bits past the last block.
    [[nodiscard]] static result<dirty_bitmap> from_words(std::uint64_t volume_size, std::uint32_t granularity,
                                                         std::span<const std::uint64_t> words);

    [[nodiscard]] std::uint64_t volume_size() const noexcept { return volume_size_; }
    [[nodiscard]] std::uint32_t granularity() const noexcept { return granularity_; }
    [[nodiscard]] std::uint64_t blocks() const noexcept { return blocks_; }
    [[nodiscard]] std::span<const std::uint64_t> words() const noexcept { return words_; }

    // Marks every block the byte range touches (clamped to the volume).
    void mark(std::uint64_t offset, std::uint64_t length) noexcept;
    // Clears only the blocks the range covers completely (a block ending at the
    // end of the volume counts as covered when the range reaches that end).
    void clear(std::uint64_t offset, std::uint64_t length) noexcept;
    void mark_all() noexcept;
    void clear_all() noexcept;
    // True when any block the range touches is dirty.
    [[nodiscard]] bool test(std::uint64_t offset, std::uint64_t length = 1) const noexcept;
    [[nodiscard]] bool test_block(std::uint64_t block) const noexcept;

    [[nodiscard]] std::uint64_t dirty_blocks() const noexcept { return dirty_; }
    // Dirty bytes, counting the short last block at its real size.
    [[nodiscard]] std::uint64_t dirty_bytes() const noexcept;

    // The first run of consecutive dirty blocks that ends after `from` (bytes), as a
    // byte range clamped to the volume and starting no earlier than `from`, or
    // nullopt. Iterate with from = run.offset + run.length.
    [[nodiscard]] std::optional<byte_range> next_run(std::uint64_t from = 0) const noexcept;

    // OR with a bitmap of the same geometry (the peer's, at a bitmap resync).
    [[nodiscard]] result<void> merge(const dirty_bitmap& other) noexcept;
    // OR in words received in a bitmap_chunk, starting at block start_block (a multiple of 64).
    [[nodiscard]] result<void> merge_words(std::uint64_t start_block, std::span<const std::uint64_t> words) noexcept;

    bool operator==(const dirty_bitmap&) const = default;

private:
    std::uint64_t volume_size_ = 0;
    std::uint32_t granularity_ = 0;
    std::uint64_t blocks_ = 0;
    std::uint64_t dirty_ = 0;
    std::vector<std::uint64_t> words_;

    void set_range(std::uint64_t first, std::uint64_t last, bool value) noexcept;  // blocks [first, last)
    void recount() noexcept;
};

// ---- the metadata file -------------------------------------------------------------------------

inline constexpr std::uint32_t metadata_magic = 0x544E444D;  // "TNDM"
inline constexpr std::uint16_t metadata_version = 2;  // 2 added the volume identity; 1 is still read
inline constexpr std::size_t metadata_header_size = 4096;  // the bitmap starts 4 KiB-aligned

enum metadata_flags : std::uint32_t {
    md_consistent = 1u << 0,   // the local data is a usable copy
    md_primary = 1u << 1,      // set before the first write as primary, cleared at clean demotion;
                               // found set at start: crashed primary, whose uncommitted dirty bits
                               // are lost, so the engine calls bitmap.mark_all() (no activity log yet)
    md_split_brain = 1u << 2,  // a split brain was detected: refuse to resync until resolved
    md_resync_target = 1u << 3,  // a resync into this node is in progress (resync_cursor is valid)
    md_outdated = 1u << 4,     // the primary wrote without this node (fencing): not promotable until a
                               // resync brings it up to date, or an operator forces a takeover
    md_known_flags = 0x0000001f,
};

// Everything one slot holds.
struct metadata_state {
    std::uint64_t volume_size = 0;
    std::uint32_t granularity = default_granularity;
    std::uint32_t flags = 0;           // metadata_flags
    generation_ids gen;
    std::uint64_t resync_cursor = 0;   // bytes of the volume resynced so far, in order
    dirty_bitmap bitmap;
    // volume::identity() of the volume this state describes ("": not known yet):
    // a replaced disk behind the same path must not inherit the old one's state.
    std::string volume_identity;

    bool operator==(const metadata_state&) const = default;
};

// Bytes one slot occupies: the 4 KiB header plus the bitmap rounded up to 4 KiB.
// The file is two slots: A at 0, B at slot size. Errors as dirty_bitmap::make().
[[nodiscard]] result<std::uint64_t> metadata_slot_size(std::uint64_t volume_size, std::uint32_t granularity);

// Writes one slot image (exactly metadata_slot_size() bytes) with sequence number `seq`.
[[nodiscard]] result<std::size_t> encode_metadata_slot(std::span<std::byte> out, const metadata_state& s,
                                                       std::uint64_t seq);

struct decoded_slot {
    metadata_state state;
    std::uint64_t seq = 0;
};
// Checks one slot image: magic, version, reserved bytes, checksum, geometry, flags, bitmap.
[[nodiscard]] result<decoded_slot> decode_metadata_slot(std::span<const std::byte> slot);

struct loaded_metadata {
    metadata_state state;
    std::uint64_t seq = 0;
    int slot = 0;             // 0 = A, 1 = B: the slot loaded
    bool other_valid = false; // false: the other slot was torn or corrupt (worth a warning)
};
// Loads a whole metadata file image: the valid slot with the highest sequence number.
// Exposed so the fuzz target and tests can feed arbitrary bytes without a file.
[[nodiscard]] result<loaded_metadata> decode_metadata_image(std::span<const std::byte> image);

// The metadata file of one volume. commit() writes the slot that is not current
// with pwrite + fdatasync, so a torn write leaves the other slot intact; open()
// loads the valid slot with the highest sequence number. The file is locked
// (flock, exclusive) while open, so two daemons never share it.
class metadata_file {
public:
    // Creates a new file (refuses an existing one: that would forget the
    // generation ids) with both slots valid: fresh ids, not consistent, clean bitmap.
    [[nodiscard]] static result<metadata_file> create(const std::string& path, std::uint64_t volume_size,
                                                      std::uint32_t granularity = default_granularity);
    [[nodiscard]] static result<metadata_file> open(const std::string& path);

    metadata_file(metadata_file&&) noexcept = default;
    metadata_file& operator=(metadata_file&&) noexcept = default;

    // The in-memory state; changes reach the disk at the next commit().
    [[nodiscard]] metadata_state& state() noexcept { return state_; }
    [[nodiscard]] const metadata_state& state() const noexcept { return state_; }

    // Writes the state into the other slot with the next sequence number and
    // fdatasyncs it. Refuses (bad_geometry) a state whose volume size or
    // granularity differs from the file's: resizing is a separate operation. On an error the current slot stays the one on disk, and
    // the next commit writes the same target slot again.
    [[nodiscard]] result<void> commit();

    [[nodiscard]] std::uint64_t sequence() const noexcept { return seq_; }
    [[nodiscard]] int current_slot() const noexcept { return slot_; }  // 0 = A, 1 = B
    // False when open() found the other slot torn or corrupt (and loaded this one).
    [[nodiscard]] bool other_slot_valid() const noexcept { return other_valid_; }

private:
    metadata_file() = default;

    unique_fd fd_;
    metadata_state state_;
    std::uint64_t seq_ = 0;
    int slot_ = 0;
    bool other_valid_ = true;
    std::uint64_t slot_size_ = 0;
    std::uint64_t volume_size_ = 0;  // the geometry the file was created with
    std::uint32_t granularity_ = 0;
    std::vector<std::byte> buf_;  // one slot image, kept between commits
};

}  // namespace tandem::replication
