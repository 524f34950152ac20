// fuzz: loading replication metadata — arbitrary file images, and slots with a valid checksum so every field check is reached.
#include "tandem/replication/metadata.hpp"

#include "tandem/base/bytes.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <vector>

using namespace tandem;
using namespace tandem::replication;

namespace {

// Whatever loads must hold together: runs add up to the dirty bytes, and the
// state re-encodes to a slot that decodes to the same state.
void check_state(const metadata_state& s) {
    const auto& b = s.bitmap;
    std::uint64_t sum = 0, runs = 0;
    for (auto r = b.next_run(); r; r = b.next_run(r->offset + r->length)) {
        if (r->length == 0 || r->offset + r->length > b.volume_size()) __builtin_trap();
        sum += r->length;
        if (++runs > b.blocks()) __builtin_trap();
    }
    if (sum != b.dirty_bytes()) __builtin_trap();
    std::vector<std::byte> slot(metadata_slot_size(s.volume_size, s.granularity).value());
    if (!encode_metadata_slot(slot, s, 1)) __builtin_trap();
    auto d = decode_metadata_slot(slot);
    if (!d || !(d->state == s)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto in = std::span(reinterpret_cast<const std::byte*>(data), size);

    // 1. The bytes as a whole metadata file.
    if (auto l = decode_metadata_image(in)) check_state(l->state);

    // 2. The first 96 bytes as a slot header, the rest as the bitmap, with magic,
    //    version, sizes and checksum made right: what a buggy writer could leave.
    //    The geometry is steered into range (up to 1 GiB, granularity 512 B..2 MiB)
    //    so most inputs get past it to the flag, id, cursor and bitmap checks;
    //    part 1 covers arbitrary geometry.
    if (size < 96) return 0;
    std::uint64_t volume = (1 + load_be<std::uint32_t>(in.subspan(32)) % (1u << 21)) * 512;
    std::uint32_t gran = 512u << (std::to_integer<unsigned>(in[40]) % 13);
    auto slot_size = metadata_slot_size(volume, gran);
    if (!slot_size) __builtin_trap();
    std::vector<std::byte> slot(*slot_size);
    std::copy_n(in.begin(), 96, slot.begin());
    auto tail = in.subspan(96);
    std::copy_n(tail.begin(), std::min(tail.size(), slot.size() - metadata_header_size),
                slot.begin() + metadata_header_size);
    auto s = std::span<std::byte>(slot);
    store_be<std::uint32_t>(s, metadata_magic);
    store_be<std::uint16_t>(s.subspan(4), metadata_version);
    store_be<std::uint16_t>(s.subspan(6), static_cast<std::uint16_t>(metadata_header_size));
    store_be<std::uint64_t>(s.subspan(24), *slot_size);
    store_be<std::uint64_t>(s.subspan(32), volume);
    store_be<std::uint32_t>(s.subspan(40), gran);
    store_be<std::uint64_t>(s.subspan(16), 0);
    store_be<std::uint64_t>(s.subspan(16), XXH3_64bits(slot.data(), slot.size()));
    auto d = decode_metadata_slot(slot);
    if (!d) return 0;
    check_state(d->state);
    // Canonical: the decoded state encodes back to the very same bytes.
    std::vector<std::byte> again(slot.size());
    if (!encode_metadata_slot(again, d->state, d->seq) || again != slot) __builtin_trap();
    // And as a two-slot image, loaded whole.
    auto image = slot;
    image.insert(image.end(), slot.begin(), slot.end());
    auto l = decode_metadata_image(image);
    if (!l || !(l->state == d->state)) __builtin_trap();
    return 0;
}
