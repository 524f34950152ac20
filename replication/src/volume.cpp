// replication: opening the volume and learning its size and logical block size.
#include "tandem/replication/volume.hpp"

#include "tandem/base/log.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

namespace tandem::replication {

namespace {

// The first line of a sysfs attribute, trimmed; empty when absent.
std::string attribute(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::string s;
    std::getline(in, s);
    auto keep = [](unsigned char c) { return c > ' ' && c < 0x7f; };
    auto b = std::find_if(s.begin(), s.end(), keep);
    auto e = std::find_if(s.rbegin(), s.rend(), keep).base();
    return b < e ? std::string(b, e) : std::string();
}

std::string file_identity(dev_t dev, ino_t ino) {
    return fmt::format("inode {} on {}:{}", ino, major(dev), minor(dev));
}

}  // namespace

std::string block_device_identity(unsigned maj, unsigned min, int fd, const std::string& udev_dir) {
    namespace fs = std::filesystem;
    fs::path sys = fmt::format("/sys/dev/block/{}:{}", maj, min);
    std::error_code ec;
    auto real = fs::canonical(sys, ec);
    if (ec) return "";
    // A loop device is its backing file.
    if (fs::exists(real / "loop")) {
        loop_info64 li{};
        if (fd >= 0 && ::ioctl(fd, LOOP_GET_STATUS64, &li) == 0)
            return file_identity(static_cast<dev_t>(li.lo_device), static_cast<ino_t>(li.lo_inode));
        return "";
    }
    if (auto uuid = attribute(real / "dm" / "uuid"); !uuid.empty()) return "dm " + uuid;
    // A partition: its entry in the partition table, as udev read it. Nothing
    // else, so that one device never has two names (udev ready or not).
    if (fs::exists(real / "partition")) {
        std::ifstream db(fmt::format("{}/b{}:{}", udev_dir, maj, min));
        for (std::string line; std::getline(db, line);)
            if (line.rfind("E:ID_PART_ENTRY_UUID=", 0) == 0) return "partition " + line.substr(21);
        return "";
    }
    for (const char* a : {"device/wwid", "wwid", "serial", "device/serial"})
        if (auto id = attribute(real / a); !id.empty()) return "disk " + id;
    return "";
}

result<volume> volume::open(const std::string& path) {
    unique_fd fd(::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
    if (!fd) {
        int e = errno;
        if (e == EINVAL)
            log::error("replication.no_o_direct",
                       "{}: the file system does not support O_DIRECT (tmpfs before Linux 6.6?); put the volume on a "
                       "block device or a loop device",
                       path);
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
    std::string id = blockdev ? block_device_identity(major(st.st_rdev), minor(st.st_rdev), fd.get())
                              : file_identity(st.st_dev, st.st_ino);
    if (id.size() > max_volume_identity) id.resize(max_volume_identity);
    for (auto& c : id)
        if (c < ' ' || c > '~') c = '?';
    return volume(std::move(fd), size, block, blockdev, path, std::move(id));
}

result<void> volume::zero(std::uint64_t offset, std::uint64_t length) const {
    if (length == 0 || offset % block_ || length % block_) return errno_error(EINVAL);
    if (offset > size_ || length > size_ - offset) return errno_error(ENOSPC);
    auto off = static_cast<off_t>(offset), len = static_cast<off_t>(length);
    // A block device takes both modes as "zero these blocks" (the first only if
    // it can unmap them and still read zeros); a file system frees or zeroes.
    for (int mode : {FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE}) {
        if (::fallocate(fd(), mode, off, len) == 0) return {};
        if (errno != EOPNOTSUPP && errno != EINVAL) return errno_error();
    }
    struct freer {
        void operator()(void* p) const { std::free(p); }
    };
    constexpr std::size_t chunk = 1 << 20;
    std::unique_ptr<std::byte, freer> zeros(static_cast<std::byte*>(std::aligned_alloc(4096, chunk)));
    if (!zeros) return errno_error(ENOMEM);
    std::memset(zeros.get(), 0, chunk);
    for (std::uint64_t done = 0; done < length; done += chunk)
        if (auto r = write_all(offset + done, std::span(zeros.get(), std::min<std::uint64_t>(chunk, length - done)));
            !r)
            return r;
    return {};
}

result<void> volume::write_all(std::uint64_t offset, std::span<const std::byte> bytes) const {
    for (std::size_t done = 0; done < bytes.size();) {
        auto n = ::pwrite(fd(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error();
        if (n == 0) return errno_error(ENOSPC);
        done += static_cast<std::size_t>(n);
    }
    return {};
}

}  // namespace tandem::replication
