// replication: the replicated volume — a block device, or a regular file in tests, opened for O_DIRECT.
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/base/unique_fd.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace tandem::replication {

// volume::identity() is printable ASCII of at most this many bytes (the metadata's field).
inline constexpr std::size_t max_volume_identity = 120;

class volume {
public:
    // Opens `path` read-write with O_DIRECT (the page cache would hide what is
    // durable). Fails with EINVAL, logged with the path, on file systems without
    // O_DIRECT (tmpfs): use a loop device over the file there.
    [[nodiscard]] static result<volume> open(const std::string& path);

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
    [[nodiscard]] std::uint32_t logical_block() const noexcept { return block_; }
    [[nodiscard]] bool is_block_device() const noexcept { return blockdev_; }
    [[nodiscard]] const std::string& path() const noexcept { return path_; }
    // What tells this volume from a replacement at the same path, as the kernel
    // (and udev) name it: a partition's GPT/MBR entry UUID, a disk's WWID or
    // serial, a device-mapper UUID, or the inode of the file (a loop device's
    // backing file). Empty when none is known: then nothing is checked.
    [[nodiscard]] const std::string& identity() const noexcept { return identity_; }
    // Makes [offset, offset + length) read as zeros (a discard that must leave
    // both copies equal): a punched hole where the file system or device can
    // (blocks freed, unmapped), else FALLOC_FL_ZERO_RANGE, else zeros written.
    // Multiples of the logical block size.
    [[nodiscard]] result<void> zero(std::uint64_t offset, std::uint64_t length) const;
    // Writes all of `bytes` at `offset` (a short write is continued; none at
    // all is ENOSPC). O_DIRECT's rules apply: `bytes` aligned in memory, offset
    // and length multiples of the logical block size.
    [[nodiscard]] result<void> write_all(std::uint64_t offset, std::span<const std::byte> bytes) const;

private:
    volume(unique_fd fd, std::uint64_t size, std::uint32_t block, bool blockdev, std::string path, std::string id)
        : fd_(std::move(fd)), size_(size), block_(block), blockdev_(blockdev), path_(std::move(path)),
          identity_(std::move(id)) {}
    unique_fd fd_;
    std::uint64_t size_ = 0;
    std::uint32_t block_ = 512;
    bool blockdev_ = false;
    std::string path_;
    std::string identity_;
};

// The identity of the block device major:minor (see volume::identity()); `udev_dir`
// is where udev keeps its device database (a parameter for the tests).
[[nodiscard]] std::string block_device_identity(unsigned major, unsigned minor, int fd,
                                                const std::string& udev_dir = "/run/udev/data");

}  // namespace tandem::replication
