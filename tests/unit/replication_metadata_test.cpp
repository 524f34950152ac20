// tests: replication metadata — the sync decision for every history, the dirty bitmap, slots and the A/B file.
#include "tandem/replication/metadata.hpp"

#include "tandem/base/bytes.hpp"
#include "tandem/replication/error.hpp"

#include "support/result_catch.hpp"
#include "support/tempdir.hpp"

#include <catch2/catch.hpp>
#include <xxhash.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

using namespace tandem;
using namespace tandem::replication;

namespace {

template <class R>
errc code_of(const R& r) {
    REQUIRE_FALSE(r);
    REQUIRE(&r.error().category() == &replication_category());
    return static_cast<errc>(r.error().value());
}

// One node of the story: its ids and its flags, changed the way the engine will change them.
struct node {
    sync_party p;
    std::uint64_t next_id;  // deterministic "random" ids, distinct per node

    explicit node(std::uint64_t id_base) : next_id(id_base) {}
    // The operator initialises the first primary, whose /store already holds data.
    void initialise() {
        p.gen = start_divergence(p.gen, ++next_id);
        p.consistent = true;
    }
    // Writes while the peer cannot receive them (lost the peer as primary, or promoted alone).
    void write_alone() { p.gen = start_divergence(p.gen, ++next_id); }
    void promote() { p.primary = true; }
    void crash_as_primary() {
        p.primary = false;
        p.crashed_primary = true;
    }
};

// The end of a successful resync from `src` to `dst`, committed in the documented order.
void complete_resync(node& src, node& dst) {
    auto after = finish_resync_source(src.p.gen);
    dst.p.gen = after;  // the target commits first
    dst.p.consistent = true;
    src.p.gen = after;  // then the source
    src.p.crashed_primary = dst.p.crashed_primary = false;
}

sync_decision mirror(sync_decision d) {
    switch (d) {
        case sync_decision::full_source: return sync_decision::full_target;
        case sync_decision::full_target: return sync_decision::full_source;
        case sync_decision::bitmap_source: return sync_decision::bitmap_target;
        case sync_decision::bitmap_target: return sync_decision::bitmap_source;
        default: return d;
    }
}

// decide_sync from a's side, checking that b's side sees the mirror image.
sync_decision decide(const node& a, const node& b) {
    auto ab = decide_sync(a.p, b.p);
    auto ba = decide_sync(b.p, a.p);
    INFO("rule " << ab.rule);
    CHECK(ba.decision == mirror(ab.decision));
    CHECK_FALSE(ab.rule.empty());
    return ab.decision;
}

// Two nodes that have been in sync since an initial full sync.
std::pair<node, node> synced_pair() {
    node a(0xA000), b(0xB000);
    a.initialise();
    a.promote();
    REQUIRE(decide(a, b) == sync_decision::full_source);
    complete_resync(a, b);
    REQUIRE(decide(a, b) == sync_decision::none);
    return {a, b};
}

}  // namespace

// ---- decide_sync -------------------------------------------------------------------------------------

TEST_CASE("decide_sync: a new cluster and replaced disks sync in full", "[unit][replication]") {
    node a(0xA000), b(0xB000);
    CHECK(decide(a, b) == sync_decision::none);  // both fresh: nothing was ever written

    a.initialise();
    CHECK(decide(a, b) == sync_decision::full_source);
    CHECK(decide(b, a) == sync_decision::full_target);

    auto [x, y] = synced_pair();
    // The secondary's disk is replaced: fresh metadata, full sync onto it.
    y = node(0xC000);
    CHECK(decide(x, y) == sync_decision::full_source);
    // The primary's disk replaced while the secondary kept the data: full sync the other way.
    auto [p, q] = synced_pair();
    p = node(0xD000);
    CHECK(decide(q, p) == sync_decision::full_source);
}

TEST_CASE("decide_sync: in sync means nothing to do", "[unit][replication]") {
    auto [a, b] = synced_pair();
    CHECK(decide(a, b) == sync_decision::none);
    b.p.primary = true;  // roles alone change nothing
    a.p.primary = false;
    CHECK(decide(a, b) == sync_decision::none);
}

TEST_CASE("decide_sync: a primary with blocks to resend on the shared generation is the bitmap source",
          "[unit][replication]") {
    auto [a, b] = synced_pair();
    a.p.resend = true;  // verify --repair marked what differs
    CHECK(decide(a, b) == sync_decision::bitmap_source);
    // Rules that say more win: an unfinished resync into a, and a crash of b as primary.
    a.p.consistent = false;
    CHECK(decide(a, b) == sync_decision::bitmap_target);
    a.p.consistent = true;
    b.crash_as_primary();
    CHECK(decide(a, b) == sync_decision::bitmap_target);
}

TEST_CASE("decide_sync: the secondary dies, the primary goes on, the secondary returns", "[unit][replication]") {
    auto [a, b] = synced_pair();
    a.write_alone();
    CHECK(decide(a, b) == sync_decision::bitmap_source);
    CHECK(decide(b, a) == sync_decision::bitmap_target);
    SECTION("the primary restarts alone and writes again: its bitmap still covers the secondary") {
        a.write_alone();
        CHECK(decide(a, b) == sync_decision::bitmap_source);
        a.write_alone();
        CHECK(decide(a, b) == sync_decision::bitmap_source);
    }
    SECTION("the resync is interrupted: the target is inconsistent, and resumes by bitmap") {
        b.p.consistent = false;
        CHECK(decide(b, a) == sync_decision::bitmap_target);
        complete_resync(a, b);
        CHECK(decide(a, b) == sync_decision::none);
        CHECK(a.p.gen == b.p.gen);
    }
}

TEST_CASE("decide_sync: failover while writes continue; the old primary rejoins as bitmap target",
          "[unit][replication]") {
    auto [a, b] = synced_pair();
    // a was primary and dies with writes in flight; b is promoted alone and takes the writes.
    a.crash_as_primary();
    b.promote();
    b.write_alone();
    CHECK(decide(a, b) == sync_decision::bitmap_target);
    CHECK(decide(b, a) == sync_decision::bitmap_source);
    // The resync brings a back; then a is an ordinary secondary of b.
    complete_resync(b, a);
    CHECK(decide(a, b) == sync_decision::none);
    // And the same story the other way round later on.
    b.crash_as_primary();
    a.promote();
    a.write_alone();
    CHECK(decide(b, a) == sync_decision::bitmap_target);
}

TEST_CASE("decide_sync: both sides writing while partitioned is split brain", "[unit][replication]") {
    auto [a, b] = synced_pair();
    a.write_alone();  // a keeps serving behind the partition...
    b.promote();
    b.write_alone();  // ...and b was promoted and writes too
    CHECK(decide(a, b) == sync_decision::split_brain);
    SECTION("more writes on one side do not hide it") {
        a.write_alone();
        a.write_alone();
        CHECK(decide(a, b) == sync_decision::split_brain);
    }
    SECTION("nor an earlier resync in the history") {
        auto [c, d] = synced_pair();
        c.write_alone();
        complete_resync(c, d);  // history: both remember the same ancestor
        c.write_alone();
        d.write_alone();
        CHECK(decide(c, d) == sync_decision::split_brain);
    }
}

TEST_CASE("decide_sync: a peer older than the bitmap needs a full sync", "[unit][replication]") {
    auto [a, b] = synced_pair();
    node old_b = b;  // b's disk as it was, e.g. restored from an old snapshot
    a.write_alone();
    complete_resync(a, b);
    a.write_alone();  // a moved on again; its bitmap covers only since the last resync
    CHECK(decide(a, b) == sync_decision::bitmap_source);
    CHECK(decide(a, old_b) == sync_decision::full_source);
}

TEST_CASE("decide_sync: unrelated data is refused, never overwritten", "[unit][replication]") {
    node a(0xA000), b(0xB000);
    a.initialise();
    b.initialise();  // two clusters' disks put together
    CHECK(decide(a, b) == sync_decision::unrelated);
}

TEST_CASE("decide_sync: same generation after a crash of the primary", "[unit][replication]") {
    auto [a, b] = synced_pair();
    // Both went down together (power cut) and come back connected: a's last
    // writes may be on one disk only; a, the crashed primary, is the source.
    a.crash_as_primary();
    CHECK(decide(a, b) == sync_decision::bitmap_source);
    CHECK(decide(b, a) == sync_decision::bitmap_target);
    b.crash_as_primary();  // two crashed primaries of one generation: nothing says who is right
    CHECK(decide(a, b) == sync_decision::split_brain);
}

TEST_CASE("decide_sync: a source must hold consistent data", "[unit][replication]") {
    auto [a, b] = synced_pair();
    SECTION("same generation, both inconsistent") {
        a.p.consistent = b.p.consistent = false;
        CHECK(decide(a, b) == sync_decision::no_consistent_source);
    }
    SECTION("an unfinished resync target facing a replaced disk") {
        a.write_alone();
        b.p.consistent = false;  // b was a resync target when a's disk died
        node fresh_a(0xE000);
        CHECK(decide(b, fresh_a) == sync_decision::no_consistent_source);
    }
    SECTION("a bitmap source that is itself inconsistent") {
        a.write_alone();
        a.p.consistent = false;
        CHECK(decide(a, b) == sync_decision::no_consistent_source);
    }
}

TEST_CASE("decide_sync: a source that stopped before its end-of-resync commit settles", "[unit][replication]") {
    auto [a, b] = synced_pair();
    a.write_alone();
    auto after = finish_resync_source(a.p.gen);
    b.p.gen = after;  // the target committed...
    b.p.consistent = true;
    // ...and a stopped before its own commit: same current id, a's bitmap id stale.
    CHECK(decide(a, b) == sync_decision::none);
    CHECK(settle_after_none(a.p.gen, b.p.gen) == after);
    CHECK(settle_after_none(b.p.gen, a.p.gen) == b.p.gen);
    a.p.gen = settle_after_none(a.p.gen, b.p.gen);
    // Settled, the next divergence is again a bitmap resync.
    a.write_alone();
    CHECK(decide(a, b) == sync_decision::bitmap_source);
}

TEST_CASE("generation id transitions", "[unit][replication]") {
    generation_ids g;
    g = start_divergence(g, 5);
    CHECK(g == generation_ids{5, 0, {0, 0}});
    g = start_divergence(g, 6);
    CHECK(g == generation_ids{6, 5, {0, 0}});
    g = start_divergence(g, 7);
    CHECK(g == generation_ids{7, 5, {6, 0}});
    g = finish_resync_source(g);
    CHECK(g == generation_ids{7, 0, {5, 6}});
    CHECK(finish_resync_source(g) == g);
    CHECK(start_divergence(g, gen_none) == g);  // a zero id is never taken
    auto r = random_generation_id();
    REQUIRE(r);
    CHECK(*r != gen_none);
    CHECK(to_string(sync_decision::split_brain) == "split_brain");
}

// ---- dirty_bitmap --------------------------------------------------------------------------------------

TEST_CASE("dirty_bitmap refuses geometry it cannot represent", "[unit][replication]") {
    CHECK(code_of(dirty_bitmap::make(0)) == errc::bad_geometry);
    CHECK(code_of(dirty_bitmap::make(1000)) == errc::bad_geometry);
    CHECK(code_of(dirty_bitmap::make(1 << 20, 256)) == errc::bad_geometry);
    CHECK(code_of(dirty_bitmap::make(1 << 20, 3000)) == errc::bad_geometry);
    CHECK(code_of(dirty_bitmap::make(1ull << 50, 512)) == errc::bad_geometry);  // 256 GiB of bitmap
    // Found by fuzz-repl_metadata: a size near 2^64 once wrapped the block count to 0.
    CHECK(code_of(dirty_bitmap::make(0xfffffffffffffe00ull, 1u << 30)) == errc::bad_geometry);
    CHECK(code_of(metadata_slot_size(0xfffffffffffffe00ull, 4096)) == errc::bad_geometry);
    auto b = dirty_bitmap::make(4ull << 40);  // 4 TiB at 4 KiB: 128 MiB of bitmap
    REQUIRE(b);
    CHECK(b->blocks() == 1ull << 30);
    CHECK(b->words().size() == 1ull << 24);
}

TEST_CASE("dirty_bitmap marks, tests, clears and counts by block", "[unit][replication]") {
    // 1 MiB + 1 KiB: 257 blocks of 4 KiB, the last one 1 KiB long.
    const std::uint64_t size = (1 << 20) + 1024;
    auto r = dirty_bitmap::make(size);
    REQUIRE(r);
    auto& b = *r;
    CHECK(b.blocks() == 257);
    CHECK(b.words().size() == 5);

    b.mark(4096 + 512, 512);  // touches block 1 only
    CHECK(b.dirty_blocks() == 1);
    CHECK(b.test_block(1));
    CHECK(b.test(4096, 1));
    CHECK_FALSE(b.test(0, 4096));
    CHECK(b.test(0, 4097));

    b.mark(8192 - 1, 2);  // straddles blocks 1 and 2
    CHECK(b.dirty_blocks() == 2);
    b.mark(60 * 4096, 10 * 4096);  // blocks 60..69, across a word boundary
    CHECK(b.dirty_blocks() == 12);
    b.mark(60 * 4096, 10 * 4096);  // idempotent
    CHECK(b.dirty_blocks() == 12);

    b.clear(4096, 4095);  // does not cover block 1 completely: stays dirty
    CHECK(b.test_block(1));
    b.clear(4096, 4096);
    CHECK_FALSE(b.test_block(1));
    CHECK(b.dirty_blocks() == 11);
    b.clear(62 * 4096 + 1, 4 * 4096);  // covers 63..65 fully, 62 and 66 partly
    CHECK(b.test_block(62));
    CHECK(b.test_block(66));
    CHECK(b.dirty_blocks() == 8);

    SECTION("the short last block") {
        b.clear_all();
        b.mark(size - 512, 512);
        CHECK(b.test_block(256));
        CHECK(b.dirty_bytes() == 1024);
        b.clear(size - 1024, 1024);  // reaches the end of the volume: covers the short block
        CHECK(b.dirty_blocks() == 0);
    }
    SECTION("ranges past the end are clamped, never out of bounds") {
        b.clear_all();
        b.mark(size - 512, 1ull << 40);
        CHECK(b.dirty_blocks() == 1);
        b.mark(size, 4096);
        b.mark(~0ull - 10, 100);
        CHECK(b.dirty_blocks() == 1);
        CHECK_FALSE(b.test(size, 10));
        b.mark(0, 0);
        CHECK(b.dirty_blocks() == 1);
    }
    SECTION("mark_all and clear_all keep the bits past the end zero") {
        b.mark_all();
        CHECK(b.dirty_blocks() == 257);
        CHECK(b.dirty_bytes() == size);
        CHECK(b.words().back() == 1);
        b.clear_all();
        CHECK(b.dirty_blocks() == 0);
        CHECK(b.dirty_bytes() == 0);
    }
}

TEST_CASE("dirty_bitmap iterates dirty runs as byte ranges", "[unit][replication]") {
    const std::uint64_t size = 300 * 4096 + 512;
    auto r = dirty_bitmap::make(size);
    REQUIRE(r);
    auto& b = *r;
    CHECK_FALSE(b.next_run());
    b.mark(0, 4096);
    b.mark(5 * 4096, 3 * 4096);
    b.mark(63 * 4096, 66 * 4096);  // 63..128: across two word boundaries
    b.mark(size - 1, 1);           // the short last block

    std::vector<byte_range> runs;
    for (auto run = b.next_run(); run; run = b.next_run(run->offset + run->length)) runs.push_back(*run);
    REQUIRE(runs.size() == 4);
    CHECK(runs[0] == byte_range{0, 4096});
    CHECK(runs[1] == byte_range{5 * 4096, 3 * 4096});
    CHECK(runs[2] == byte_range{63 * 4096, 66 * 4096});
    CHECK(runs[3] == byte_range{300 * 4096, 512});

    // Starting inside a run yields its remainder.
    CHECK(b.next_run(6 * 4096 + 100) == byte_range{6 * 4096 + 100, 2 * 4096 - 100});
    CHECK_FALSE(b.next_run(size));

    b.mark_all();
    CHECK(b.next_run() == byte_range{0, size});
}

TEST_CASE("dirty_bitmap merges a peer's bitmap and bitmap chunks", "[unit][replication]") {
    auto a = dirty_bitmap::make(1 << 24);
    auto p = dirty_bitmap::make(1 << 24);
    REQUIRE(a);
    REQUIRE(p);
    a->mark(0, 8192);
    p->mark(4096, 8192);
    p->mark(1 << 23, 4096);
    REQUIRE(a->merge(*p));
    CHECK(a->dirty_blocks() == 4);
    CHECK(a->test_block(0));
    CHECK(a->test_block(2));

    auto other = dirty_bitmap::make(1 << 24, 8192);
    REQUIRE(other);
    CHECK(code_of(a->merge(*other)) == errc::bad_geometry);

    std::vector<std::uint64_t> words{0xf0, 0x1};
    REQUIRE(a->merge_words(64, words));
    CHECK(a->dirty_blocks() == 9);
    CHECK(a->test_block(64 + 4));
    CHECK(a->test_block(128));
    CHECK(code_of(a->merge_words(3, words)) == errc::misaligned);
    CHECK(code_of(a->merge_words(a->blocks(), words)) == errc::out_of_range);

    auto w = dirty_bitmap::from_words(1 << 24, 4096, a->words());
    REQUIRE(w);
    CHECK(*w == *a);
    CHECK(code_of(dirty_bitmap::from_words(1 << 24, 4096, std::span(a->words()).first(3))) == errc::bad_length);
    std::vector<std::uint64_t> tail(1, 0x4);  // bit 2 of a 2-block volume
    CHECK(code_of(dirty_bitmap::from_words(8192, 4096, tail)) == errc::out_of_range);
}

// ---- slots and images (pure) -----------------------------------------------------------------------------

namespace {
metadata_state sample_state() {
    metadata_state s;
    s.volume_size = (64ull << 20) + 4096;  // 16385 blocks: 257 words, one partial
    s.granularity = 4096;
    s.flags = md_consistent | md_primary;
    s.gen = {0x1234, 0x5678, {0x9abc, 0xdef0}};
    s.resync_cursor = 1 << 20;
    s.bitmap = dirty_bitmap::make(s.volume_size).value();
    s.bitmap.mark(12345, 100000);
    s.bitmap.mark(s.volume_size - 1, 1);
    return s;
}

std::vector<std::byte> slot_of(const metadata_state& s, std::uint64_t seq) {
    std::vector<std::byte> v(metadata_slot_size(s.volume_size, s.granularity).value());
    REQUIRE(encode_metadata_slot(v, s, seq));
    return v;
}

std::vector<std::byte> image_of(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
    auto v = a;
    v.insert(v.end(), b.begin(), b.end());
    return v;
}
}  // namespace

TEST_CASE("a metadata slot survives encode and decode, and has its documented header", "[unit][replication]") {
    auto s = sample_state();
    auto slot = slot_of(s, 42);
    CHECK(slot.size() == 4096 + 4096);  // 257 words = 2056 bytes, rounded up to 4 KiB
    CHECK(load_be<std::uint32_t>(std::span<const std::byte>(slot)) == 0x544E444D);  // "TNDM"
    CHECK(load_be<std::uint64_t>(std::span<const std::byte>(slot).subspan(8)) == 42);
    auto d = decode_metadata_slot(slot);
    REQUIRE(d);
    CHECK(d->seq == 42);
    CHECK(d->state == s);
}

TEST_CASE("a metadata slot refuses each kind of damage", "[unit][replication]") {
    auto good = slot_of(sample_state(), 1);
    auto damaged = [&](std::size_t at, std::byte x) {
        auto v = good;
        v[at] ^= x;
        return decode_metadata_slot(v);
    };
    CHECK(code_of(damaged(0, std::byte{1})) == errc::bad_magic);
    CHECK(code_of(damaged(5, std::byte{1})) == errc::bad_version);
    CHECK(code_of(damaged(40, std::byte{1})) == errc::bad_checksum);       // granularity
    CHECK(code_of(damaged(2000, std::byte{1})) == errc::bad_checksum);     // reserved header bytes
    CHECK(code_of(damaged(4096 + 7, std::byte{0x10})) == errc::bad_checksum);  // a bitmap word
    CHECK(code_of(damaged(8191, std::byte{1})) == errc::bad_checksum);     // the padding
    CHECK(code_of(decode_metadata_slot(std::span(good).first(4095))) == errc::truncated);
    CHECK(code_of(decode_metadata_slot(std::span(good).first(6000))) == errc::truncated);
}

namespace {
// Recomputes a slot's checksum after a test changed it (the damage then reaches the field checks).
void reseal(std::vector<std::byte>& slot) {
    for (int i = 0; i < 8; ++i) slot[16 + i] = std::byte{0};
    store_be<std::uint64_t>(std::span(slot).subspan(16), XXH3_64bits(slot.data(), slot.size()));
}
}  // namespace

TEST_CASE("a metadata slot keeps the volume identity, reads version 1 without one, and checks the field",
          "[unit][replication]") {
    auto s = sample_state();
    s.volume_identity = "partition 0b3f6a4e-2d1c-4f8e-9a51-6c2d7e8f9a0b";
    auto slot = slot_of(s, 7);
    CHECK(load_be<std::uint16_t>(std::span<const std::byte>(slot).subspan(4)) == 2);
    CHECK(std::to_integer<std::size_t>(slot[96]) == s.volume_identity.size());
    auto d = decode_metadata_slot(slot);
    REQUIRE(d);
    CHECK(d->state.volume_identity == s.volume_identity);

    // Version 1, as tandemd wrote it before: no identity, and it still loads.
    s.volume_identity.clear();
    auto v1 = slot_of(s, 7);
    store_be<std::uint16_t>(std::span(v1).subspan(4), 1);
    reseal(v1);
    d = decode_metadata_slot(v1);
    REQUIRE(d);
    CHECK(d->state.volume_identity.empty());
    auto v1_with = v1;
    v1_with[96] = std::byte{1};
    v1_with[97] = std::byte{'x'};
    reseal(v1_with);
    CHECK(code_of(decode_metadata_slot(v1_with)) == errc::bad_reserved);

    // Damage the checksum does not catch (a writer's bug): each refused.
    auto with = slot;
    with[97] = std::byte{'\n'};
    reseal(with);
    CHECK(code_of(decode_metadata_slot(with)) == errc::bad_field);
    with = slot;
    with[96] = std::byte{121};
    reseal(with);
    CHECK(code_of(decode_metadata_slot(with)) == errc::bad_field);
    with = slot;
    with[97 + 119] = std::byte{'z'};  // past the identity's length
    reseal(with);
    CHECK(code_of(decode_metadata_slot(with)) == errc::bad_reserved);

    // The encoder refuses what the decoder would.
    std::vector<std::byte> out(slot.size());
    s.volume_identity = std::string(121, 'a');
    CHECK(code_of(encode_metadata_slot(out, s, 1)) == errc::bad_field);
    s.volume_identity = "disk\tserial";
    CHECK(code_of(encode_metadata_slot(out, s, 1)) == errc::bad_field);
}

TEST_CASE("a metadata image loads the valid slot with the highest sequence number", "[unit][replication]") {
    auto s1 = sample_state();
    auto s2 = s1;
    s2.gen.current = 0x7777;
    auto a = slot_of(s1, 7), b = slot_of(s2, 8);

    auto l = decode_metadata_image(image_of(a, b));
    REQUIRE(l);
    CHECK(l->slot == 1);
    CHECK(l->seq == 8);
    CHECK(l->state == s2);
    CHECK(l->other_valid);

    l = decode_metadata_image(image_of(slot_of(s2, 9), b));
    REQUIRE(l);
    CHECK(l->slot == 0);

    SECTION("a torn newer slot falls back to the older one") {
        auto torn = b;
        std::fill(torn.begin() + 4096, torn.end(), std::byte{0});  // the bitmap never reached the disk
        l = decode_metadata_image(image_of(a, torn));
        REQUIRE(l);
        CHECK(l->slot == 0);
        CHECK(l->state == s1);
        CHECK_FALSE(l->other_valid);
    }
    SECTION("slot A's header torn: B is still found at half the file") {
        auto torn = a;
        std::fill(torn.begin(), torn.begin() + 512, std::byte{0});
        l = decode_metadata_image(image_of(torn, b));
        REQUIRE(l);
        CHECK(l->slot == 1);
        CHECK_FALSE(l->other_valid);
    }
    SECTION("both damaged") {
        auto x = a, y = b;
        x[100] ^= std::byte{1};
        y[100] ^= std::byte{1};
        CHECK(code_of(decode_metadata_image(image_of(x, y))) == errc::no_valid_slot);
    }
    SECTION("truncated and extended images") {
        auto img = image_of(a, b);
        CHECK(code_of(decode_metadata_image(std::span(img).first(img.size() - 4096))) == errc::truncated);
        CHECK(code_of(decode_metadata_image(std::span(img).first(100))) == errc::truncated);
        img.resize(img.size() + 4096);
        CHECK(code_of(decode_metadata_image(img)) == errc::bad_geometry);
    }
}

// ---- metadata_file (kernel tier: real files, pwrite, fdatasync, flock) ---------------------------------------

TEST_CASE("metadata_file: create, change, commit, reopen", "[kernel][replication]") {
    test::temp_dir dir;
    auto path = (dir.path() / "store.md").string();
    const std::uint64_t volume = 256ull << 20;  // 64 Ki blocks: 8 KiB of bitmap
    {
        auto f = metadata_file::create(path, volume);
        REQUIRE(f);
        CHECK(f->state().gen == generation_ids{});
        CHECK(f->state().flags == 0);
        CHECK(f->state().bitmap.dirty_blocks() == 0);
        CHECK(std::filesystem::file_size(path) == 2 * (4096 + 8192));
        CHECK((std::filesystem::status(path).permissions() & std::filesystem::perms::all) ==
              (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));

        f->state().gen = start_divergence(f->state().gen, 0xfeed);
        f->state().flags = md_consistent | md_primary;
        f->state().resync_cursor = 4096;
        f->state().bitmap.mark(1 << 20, 3 << 20);
        REQUIRE(f->commit());
    }
    auto g = metadata_file::open(path);
    REQUIRE(g);
    CHECK(g->state().gen.current == 0xfeed);
    CHECK(g->state().flags == (md_consistent | md_primary));
    CHECK(g->state().resync_cursor == 4096);
    CHECK(g->state().bitmap.dirty_blocks() == 768);
    CHECK(g->state().bitmap.test(1 << 20, 1));
    CHECK(g->other_slot_valid());
}

TEST_CASE("metadata_file: commit after commit alternates slots", "[kernel][replication]") {
    test::temp_dir dir;
    auto path = (dir.path() / "store.md").string();
    auto f = metadata_file::create(path, 64ull << 20);
    REQUIRE(f);
    int slot = f->current_slot();
    auto seq = f->sequence();
    for (int i = 0; i < 4; ++i) {
        f->state().resync_cursor = static_cast<std::uint64_t>(i) * 4096;
        REQUIRE(f->commit());
        CHECK(f->current_slot() == 1 - slot);
        CHECK(f->sequence() == seq + 1);
        slot = f->current_slot();
        seq = f->sequence();
    }
    // On disk: the current slot holds the last state, the other the one before.
    std::ifstream in(path, std::ios::binary);
    std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto bytes = std::as_bytes(std::span(raw));
    auto half = bytes.size() / 2;
    auto cur = decode_metadata_slot(bytes.subspan(static_cast<std::size_t>(slot) * half, half));
    auto prev = decode_metadata_slot(bytes.subspan(static_cast<std::size_t>(1 - slot) * half, half));
    REQUIRE(cur);
    REQUIRE(prev);
    CHECK(cur->seq == seq);
    CHECK(cur->state.resync_cursor == 3 * 4096);
    CHECK(prev->seq == seq - 1);
    CHECK(prev->state.resync_cursor == 2 * 4096);
}

TEST_CASE("metadata_file: a corrupted slot falls back to the other", "[kernel][replication]") {
    test::temp_dir dir;
    auto path = (dir.path() / "store.md").string();
    std::uint64_t half = 0;
    int newest = 0;
    {
        auto f = metadata_file::create(path, 64ull << 20);
        REQUIRE(f);
        f->state().gen.current = 0x1111;
        REQUIRE(f->commit());
        f->state().gen.current = 0x2222;
        REQUIRE(f->commit());
        newest = f->current_slot();
        half = std::filesystem::file_size(path) / 2;
    }
    // Flip one byte in the middle of the newest slot's bitmap area.
    {
        int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
        REQUIRE(fd >= 0);
        std::byte b{};
        auto at = static_cast<off_t>(static_cast<std::uint64_t>(newest) * half + 4096 + 100);
        REQUIRE(::pread(fd, &b, 1, at) == 1);
        b ^= std::byte{0x01};
        REQUIRE(::pwrite(fd, &b, 1, at) == 1);
        ::close(fd);
    }
    auto g = metadata_file::open(path);
    REQUIRE(g);
    CHECK(g->current_slot() == 1 - newest);
    CHECK(g->state().gen.current == 0x1111);
    CHECK_FALSE(g->other_slot_valid());
    // The next commit overwrites the corrupt slot and both are valid again.
    g->state().gen.current = 0x3333;
    REQUIRE(g->commit());
    CHECK(g->current_slot() == newest);
    CHECK(g->other_slot_valid());
}

TEST_CASE("metadata_file: a truncated file is a clear error", "[kernel][replication]") {
    test::temp_dir dir;
    auto path = (dir.path() / "store.md").string();
    { REQUIRE(metadata_file::create(path, 64ull << 20)); }
    std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4096);
    auto g = metadata_file::open(path);
    CHECK(code_of(g) == errc::truncated);
    CHECK(g.error().message() == "metadata file is shorter than its slots describe");
    std::filesystem::resize_file(path, 100);
    CHECK(code_of(metadata_file::open(path)) == errc::truncated);
}

TEST_CASE("metadata_file: refuses to overwrite, to share, or to open what is not there", "[kernel][replication]") {
    test::temp_dir dir;
    auto path = (dir.path() / "store.md").string();
    auto f = metadata_file::create(path, 64ull << 20);
    REQUIRE(f);
    auto again = metadata_file::create(path, 64ull << 20);
    REQUIRE_FALSE(again);
    CHECK(again.error() == error_code(EEXIST, boost::system::system_category()));
    auto second = metadata_file::open(path);  // f holds the lock
    REQUIRE_FALSE(second);
    CHECK(second.error() == error_code(EWOULDBLOCK, boost::system::system_category()));
    auto missing = metadata_file::open((dir.path() / "nope.md").string());
    REQUIRE_FALSE(missing);
    CHECK(missing.error() == error_code(ENOENT, boost::system::system_category()));
    // Bad geometry leaves no file behind.
    CHECK(code_of(metadata_file::create((dir.path() / "bad.md").string(), 1000)) == errc::bad_geometry);
    CHECK_FALSE(std::filesystem::exists(dir.path() / "bad.md"));
    // A state whose geometry no longer matches the file is not written, even
    // when its slot would have the same size (64 and 128 MiB both fit 8 KiB).
    f->state().bitmap = dirty_bitmap::make(128ull << 20).value();
    f->state().volume_size = 128ull << 20;
    CHECK(code_of(f->commit()) == errc::bad_geometry);
    f->state().volume_size = 64ull << 20;  // the bitmap alone disagreeing is refused too
    CHECK(code_of(f->commit()) == errc::bad_geometry);
}
