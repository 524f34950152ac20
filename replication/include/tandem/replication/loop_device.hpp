// replication: a loop device attached to a file with LOOP_CONFIGURE (direct I/O, auto-clear).
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/base/unique_fd.hpp"

#include <cstdint>
#include <string>

namespace tandem::replication {

// Owns one attached loop device. Detached (LOOP_CLR_FD) by detach() or the
// destructor; LO_FLAGS_AUTOCLEAR also frees it if this process dies.
class loop_device {
public:
    // Attaches `file` with the given logical block size, preferring direct I/O
    // (no second page cache over the file); `why_not` names the step that failed.
    [[nodiscard]] static result<loop_device> attach(const std::string& file, std::uint32_t block_size,
                                                    std::string& why_not);
    loop_device() = default;
    loop_device(loop_device&&) noexcept = default;
    loop_device& operator=(loop_device&&) noexcept;
    ~loop_device() { (void)detach(); }

    [[nodiscard]] const std::string& path() const noexcept { return path_; }
    [[nodiscard]] bool direct_io() const noexcept { return direct_io_; }
    [[nodiscard]] result<void> detach();

private:
    unique_fd fd_;
    std::string path_;
    bool direct_io_ = false;
};

}  // namespace tandem::replication
