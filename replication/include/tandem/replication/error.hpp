// replication: the "replication" error category — why a frame, a handshake or a metadata file was refused.
#pragma once

#include "tandem/base/result.hpp"

#include <boost/system/error_category.hpp>

#include <string_view>
#include <type_traits>

namespace tandem::replication {

// Each value names one class of bad input. A decoder returns the first check
// that fails, in the order the checks are documented in docs/replication-protocol.md.
enum class errc : int {
    bad_magic = 1,        // a frame or metadata slot does not start with its magic
    unknown_type,         // a frame type this version does not know
    bad_reserved,         // a reserved field or padding byte is not zero
    bad_flags,            // flag bits this version does not know
    bad_length,           // a length does not fit the message type (or a zero-length write)
    too_large,            // a payload length above max_payload (or a list above its cap)
    misaligned,           // an offset, length or chunk size not a multiple of the 512-byte sector
    out_of_range,         // offset + length beyond the volume (or a bitmap beyond its blocks)
    bad_checksum,         // XXH3-64 of the bytes differs from the one sent or stored
    bad_field,            // an enumerated value, name or text this version refuses
    bad_version,          // no protocol version in common, or an unknown metadata version
    volume_too_small,     // the secondary's volume is smaller than the primary's
    block_size_mismatch,  // the two volumes have different logical block sizes
    role_conflict,        // both sides say they are primary
    auth_failed,          // the peer's HMAC response does not verify
    buffer_too_small,     // an encoder's output span cannot hold the frame
    truncated,            // a metadata file shorter than its slots say it is
    no_valid_slot,        // neither metadata slot passes its checks
    bad_geometry,         // volume size or bitmap granularity Tandem cannot use
    stream_failed,        // frame_reader: an earlier error left the stream unusable
    volume_changed,       // the device is not the volume its metadata describes (a replaced disk?)
};

[[nodiscard]] const boost::system::error_category& replication_category() noexcept;

[[nodiscard]] inline error_code make_error_code(errc e) noexcept {
    return error_code(static_cast<int>(e), replication_category());
}

// The stable name of a code ("bad_magic"), for logs and tests.
[[nodiscard]] std::string_view to_string(errc e) noexcept;

}  // namespace tandem::replication

template <>
struct boost::system::is_error_code_enum<tandem::replication::errc> : std::true_type {};
