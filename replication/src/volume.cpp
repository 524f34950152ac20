// replication: opening the volume and learning its size and logical block size.
#include "tandem/replication/volume.hpp"

#include "tandem/base/log.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

namespace tandem::replication {

result<volume> volume::open(const std::string& path) {
    unique_fd fd(::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
    if (!fd) {
        int e = errno;
        if (e == EINVAL)
            log::error("replication.no_o_direct", "{}: the file system does not support O_DIRECT (tmpfs?); put the "
                       "volume on a block device or a loop device", path);
        return errno_error(e);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return errno_error();
    std::uint64_t size = 0;
    std::uint32_t block = 512;
    bool blockdev = S_ISBLK(st.st_mode);
    if (blockdev) {
        if (::ioctl(fd.get(), BLKGETSIZE64, &size) != 0) return errno_error();
        int lbs = 0;
        if (::ioctl(fd.get(), BLKSSZGET, &lbs) == 0 && lbs > 0) block = static_cast<std::uint32_t>(lbs);
    } else if (S_ISREG(st.st_mode)) {
        size = static_cast<std::uint64_t>(st.st_size);
        block = 4096;  // what O_DIRECT on the common file systems wants
    } else {
        return errno_error(ENOTBLK);
    }
    return volume(std::move(fd), size, block, blockdev, path);
}

}  // namespace tandem::replication
