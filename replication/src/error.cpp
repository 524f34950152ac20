// replication: the "replication" error category and its readable messages.
#include "tandem/replication/error.hpp"

#include <string>

namespace tandem::replication {

namespace {

const char* describe(int ev) noexcept {
    switch (static_cast<errc>(ev)) {
        case errc::bad_magic: return "bad magic: not a Tandem replication frame or metadata slot";
        case errc::unknown_type: return "unknown message type";
        case errc::bad_reserved: return "a reserved field is not zero";
        case errc::bad_flags: return "unknown flag bits";
        case errc::bad_length: return "length does not fit the message type";
        case errc::too_large: return "payload larger than the protocol allows";
        case errc::misaligned: return "offset or length is not a multiple of the 512-byte sector";
        case errc::out_of_range: return "range lies beyond the end of the volume";
        case errc::bad_checksum: return "checksum mismatch";
        case errc::bad_field: return "a field holds a value this version refuses";
        case errc::bad_version: return "no common protocol or metadata version";
        case errc::volume_too_small: return "the secondary's volume is smaller than the primary's";
        case errc::block_size_mismatch: return "the volumes have different logical block sizes";
        case errc::role_conflict: return "both nodes claim to be primary";
        case errc::auth_failed: return "peer authentication failed";
        case errc::buffer_too_small: return "output buffer too small for the frame";
        case errc::truncated: return "metadata file is shorter than its slots describe";
        case errc::no_valid_slot: return "neither metadata slot is valid";
        case errc::bad_geometry: return "volume size or bitmap granularity not usable";
        case errc::stream_failed: return "the replication stream failed earlier and cannot continue";
        case errc::volume_changed:
            return "the device is not the volume its replication metadata describes (was its disk replaced?)";
    }
    return "unknown replication error";
}

// Boost's error_category has a protected non-virtual destructor on purpose
// (categories are never deleted through a base pointer); GCC warns anyway.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class replication_error_category final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "replication"; }
    std::string message(int ev) const override { return describe(ev); }
    char const* message(int ev, char*, std::size_t) const noexcept override { return describe(ev); }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& replication_category() noexcept {
    static const replication_error_category category;
    return category;
}

std::string_view to_string(errc e) noexcept {
    switch (e) {
        case errc::bad_magic: return "bad_magic";
        case errc::unknown_type: return "unknown_type";
        case errc::bad_reserved: return "bad_reserved";
        case errc::bad_flags: return "bad_flags";
        case errc::bad_length: return "bad_length";
        case errc::too_large: return "too_large";
        case errc::misaligned: return "misaligned";
        case errc::out_of_range: return "out_of_range";
        case errc::bad_checksum: return "bad_checksum";
        case errc::bad_field: return "bad_field";
        case errc::bad_version: return "bad_version";
        case errc::volume_too_small: return "volume_too_small";
        case errc::block_size_mismatch: return "block_size_mismatch";
        case errc::role_conflict: return "role_conflict";
        case errc::auth_failed: return "auth_failed";
        case errc::buffer_too_small: return "buffer_too_small";
        case errc::truncated: return "truncated";
        case errc::no_valid_slot: return "no_valid_slot";
        case errc::bad_geometry: return "bad_geometry";
        case errc::stream_failed: return "stream_failed";
        case errc::volume_changed: return "volume_changed";
    }
    return "unknown";
}

}  // namespace tandem::replication
