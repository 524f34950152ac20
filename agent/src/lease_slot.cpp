// agent: the lease slot's bytes — encoded by this node, decoded from whatever the shared device holds.
#include "tandem/agent/lease_slot.hpp"

#include "tandem/base/bytes.hpp"

#include <xxhash.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace tandem::agent {

namespace {

constexpr std::array<char, 8> magic{'T', 'N', 'D', 'M', 'L', 'E', 'A', 'S'};
constexpr std::size_t name_offset = 24, name_size = 64, checksum_offset = 88;

}  // namespace

bool encode_lease_slot(std::span<std::byte, lease_slot_size> out, const lease_slot& s) {
    if (s.node.size() >= name_size) return false;
    std::fill(out.begin(), out.end(), std::byte{0});
    std::memcpy(out.data(), magic.data(), magic.size());
    store_be<std::uint16_t>(out.subspan(8), lease_version);
    store_be<std::uint16_t>(out.subspan(10), s.index);
    store_be<std::uint32_t>(out.subspan(12), s.flags);
    store_be<std::uint64_t>(out.subspan(16), s.counter);
    std::memcpy(out.data() + name_offset, s.node.data(), s.node.size());
    store_be<std::uint64_t>(out.subspan(checksum_offset), XXH3_64bits(out.data(), checksum_offset));
    return true;
}

std::optional<lease_slot> decode_lease_slot(std::span<const std::byte> in, std::string& why) {
    if (in.size() < lease_slot_size) {
        why = fmt::format("{} bytes, a slot is {}", in.size(), lease_slot_size);
        return std::nullopt;
    }
    if (std::all_of(in.begin(), in.begin() + lease_slot_size, [](std::byte b) { return b == std::byte{0}; })) {
        why = "blank";
        return std::nullopt;
    }
    if (std::memcmp(in.data(), magic.data(), magic.size()) != 0) {
        why = "not a Tandem lease slot (wrong magic): is this the right device?";
        return std::nullopt;
    }
    if (load_be<std::uint64_t>(in.subspan(checksum_offset)) != XXH3_64bits(in.data(), checksum_offset)) {
        why = "bad checksum (a torn or damaged write)";
        return std::nullopt;
    }
    if (auto v = load_be<std::uint16_t>(in.subspan(8)); v != lease_version) {
        why = fmt::format("version {}, this tandemd reads {}", v, lease_version);
        return std::nullopt;
    }
    lease_slot s;
    s.index = load_be<std::uint16_t>(in.subspan(10));
    s.flags = load_be<std::uint32_t>(in.subspan(12));
    s.counter = load_be<std::uint64_t>(in.subspan(16));
    auto name = reinterpret_cast<const char*>(in.data() + name_offset);
    s.node.assign(name, strnlen(name, name_size));
    if (s.node.size() == name_size) {
        why = "the node name is not terminated";
        return std::nullopt;
    }
    return s;
}

}  // namespace tandem::agent
