// agent: the bytes of a lease slot on shared storage (docs/shared-storage-lease.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace tandem::agent {

// One slot: 4096 bytes at offset index * 4096 of the lease device, big-endian:
//   0 "TNDMLEAS"   8 u16 version   10 u16 slot index   12 u32 flags (bit 0: holds /store)
//   16 u64 counter (one more at every write, kept across restarts)
//   24 char[64] node name (zero padded)   88 u64 XXH3-64 of bytes 0..87   the rest zeros
inline constexpr std::size_t lease_slot_size = 4096;
inline constexpr std::uint16_t lease_version = 1;
inline constexpr std::uint32_t lease_flag_holding = 1;

struct lease_slot {
    std::uint16_t index = 0;
    std::uint32_t flags = 0;
    std::uint64_t counter = 0;
    std::string node;  // at most 63 bytes
    bool operator==(const lease_slot&) const = default;
};

// False when the node name does not fit.
bool encode_lease_slot(std::span<std::byte, lease_slot_size> out, const lease_slot& s);
// The slot, or nullopt with `why` ("blank" for a slot never written: all zeros).
std::optional<lease_slot> decode_lease_slot(std::span<const std::byte> in, std::string& why);

}  // namespace tandem::agent
