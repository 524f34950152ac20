// fuzz: a lease slot read from shared storage — whatever the peer (or a stray writer) left there.
#include "tandem/agent/lease_slot.hpp"

#include "tandem/base/bytes.hpp"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

using namespace tandem::agent;

namespace {

void check(std::span<const std::byte> in) {
    std::string why;
    auto s = decode_lease_slot(in, why);
    if (!s) {
        if (why.empty()) __builtin_trap();  // a refusal always says why
        return;
    }
    // What decodes encodes again, and decodes to the same slot.
    std::array<std::byte, lease_slot_size> again{};
    if (!encode_lease_slot(again, *s)) __builtin_trap();
    auto d = decode_lease_slot(again, why);
    if (!d || !(*d == *s)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto in = std::span(reinterpret_cast<const std::byte*>(data), size);
    // 1. The bytes as they are.
    check(in);
    // 2. The first 88 bytes as a slot's fields, with the magic and checksum made
    //    right, so the version, name and field checks are reached.
    std::array<std::byte, lease_slot_size> slot{};
    std::copy_n(in.begin(), std::min<std::size_t>(in.size(), 88), slot.begin());
    std::memcpy(slot.data(), "TNDMLEAS", 8);
    tandem::store_be<std::uint64_t>(std::span(slot).subspan(88), XXH3_64bits(slot.data(), 88));
    check(slot);
    return 0;
}
