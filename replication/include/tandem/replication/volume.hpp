// replication: the replicated volume — a block device, or a regular file in tests, opened for O_DIRECT.
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/base/unique_fd.hpp"

#include <cstdint>
#include <string>

namespace tandem::replication {

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

private:
    volume(unique_fd fd, std::uint64_t size, std::uint32_t block, bool blockdev, std::string path)
        : fd_(std::move(fd)), size_(size), block_(block), blockdev_(blockdev), path_(std::move(path)) {}
    unique_fd fd_;
    std::uint64_t size_ = 0;
    std::uint32_t block_ = 512;
    bool blockdev_ = false;
    std::string path_;
};

}  // namespace tandem::replication
