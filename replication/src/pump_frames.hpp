// replication (internal): the data and ack frame prefixes the pump writes and reads.
// The layout is docs/replication-protocol.md's: a 24-byte frame header (magic
// "TNDR", type, flags, payload length, reserved, seq; big-endian) and for data a
// 24-byte data header (offset, length, flags, XXH3-64 of the payload).
#pragma once

#include "tandem/base/bytes.hpp"

#include <cstddef>
#include <cstdint>
#include <span>

namespace tandem::replication::detail {

inline constexpr std::uint32_t frame_magic = 0x544E4452;  // "TNDR"
inline constexpr std::uint16_t type_data = 10;
inline constexpr std::uint16_t type_data_ack = 11;
inline constexpr std::size_t frame_header = 24;
inline constexpr std::size_t data_prefix = frame_header + 24;
inline constexpr std::size_t ack_frame = frame_header + 16;

struct data_info {
    std::uint64_t seq, offset;
    std::uint32_t length, flags;
    std::uint64_t checksum;
};

inline void put_header(std::span<std::byte> b, std::uint16_t type, std::uint32_t payload, std::uint64_t seq) {
    store_be<std::uint32_t>(b, frame_magic);
    store_be<std::uint16_t>(b.subspan(4), type);
    store_be<std::uint16_t>(b.subspan(6), 0);
    store_be<std::uint32_t>(b.subspan(8), payload);
    store_be<std::uint32_t>(b.subspan(12), 0);
    store_be<std::uint64_t>(b.subspan(16), seq);
}

inline void put_data_prefix(std::span<std::byte, data_prefix> b, const data_info& d) {
    put_header(b, type_data, 24 + d.length, d.seq);
    store_be<std::uint64_t>(b.subspan(24), d.offset);
    store_be<std::uint32_t>(b.subspan(32), d.length);
    store_be<std::uint32_t>(b.subspan(36), d.flags);
    store_be<std::uint64_t>(b.subspan(40), d.checksum);
}

// False for anything but a well-formed data prefix inside the volume.
inline bool get_data_prefix(std::span<const std::byte, data_prefix> b, std::uint64_t volume_size,
                            std::uint32_t block, std::uint32_t max_len, data_info& d) {
    if (load_be<std::uint32_t>(b) != frame_magic || load_be<std::uint16_t>(b.subspan(4)) != type_data ||
        load_be<std::uint32_t>(b.subspan(12)) != 0)
        return false;
    d.seq = load_be<std::uint64_t>(b.subspan(16));
    d.offset = load_be<std::uint64_t>(b.subspan(24));
    d.length = load_be<std::uint32_t>(b.subspan(32));
    d.flags = load_be<std::uint32_t>(b.subspan(36));
    d.checksum = load_be<std::uint64_t>(b.subspan(40));
    return load_be<std::uint32_t>(b.subspan(8)) == 24 + d.length && d.length > 0 && d.length <= max_len &&
           d.offset % block == 0 && d.length % block == 0 && d.offset <= volume_size &&
           d.length <= volume_size - d.offset;
}

inline void put_ack(std::span<std::byte, ack_frame> b, std::uint64_t seq, std::uint32_t status) {
    put_header(b, type_data_ack, 16, seq);
    store_be<std::uint64_t>(b.subspan(24), seq);
    store_be<std::uint32_t>(b.subspan(32), status);
    store_be<std::uint32_t>(b.subspan(36), 0);
}

inline bool get_ack(std::span<const std::byte, ack_frame> b, std::uint64_t& seq, std::uint32_t& status) {
    if (load_be<std::uint32_t>(b) != frame_magic || load_be<std::uint16_t>(b.subspan(4)) != type_data_ack ||
        load_be<std::uint32_t>(b.subspan(8)) != 16)
        return false;
    seq = load_be<std::uint64_t>(b.subspan(24));
    status = load_be<std::uint32_t>(b.subspan(32));
    return true;
}

}  // namespace tandem::replication::detail
