// replication: attaching and detaching loop devices without losetup.
#include "tandem/replication/loop_device.hpp"

#include "tandem/base/log.hpp"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fmt/format.h>

#include <cstring>
#include <utility>

namespace tandem::replication {

namespace {

// /dev/loopN, created when a minimal /dev lacks the node.
result<unique_fd> open_loop(int n) {
    auto path = fmt::format("/dev/loop{}", n);
    unique_fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd && errno == ENOENT) {
        if (::mknod(path.c_str(), S_IFBLK | 0660, makedev(7, static_cast<unsigned>(n))) != 0 && errno != EEXIST)
            return errno_error();
        fd.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    }
    if (!fd) return errno_error();
    return fd;
}

}  // namespace

loop_device& loop_device::operator=(loop_device&& o) noexcept {
    if (this != &o) {
        (void)detach();
        fd_ = std::move(o.fd_);
        path_ = std::move(o.path_);
        direct_io_ = o.direct_io_;
    }
    return *this;
}

result<loop_device> loop_device::attach(const std::string& file, std::uint32_t block_size, std::string& why_not) {
    unique_fd ctl(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
    if (!ctl) {
        why_not = fmt::format("cannot open /dev/loop-control: {} (is the loop module loaded?)", std::strerror(errno));
        return errno_error();
    }
    for (bool direct : {true, false}) {
        unique_fd backing(::open(file.c_str(), O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0)));
        if (!backing) {
            if (direct && errno == EINVAL) continue;
            why_not = fmt::format("cannot open {}: {}", file, std::strerror(errno));
            return errno_error();
        }
        // Another process may take the free device between the two calls: try the next one.
        for (int attempt = 0; attempt < 16; ++attempt) {
            int n = ::ioctl(ctl.get(), LOOP_CTL_GET_FREE);
            if (n < 0) {
                why_not = fmt::format("no free loop device: {}", std::strerror(errno));
                return errno_error();
            }
            auto dev = open_loop(n);
            if (!dev) {
                why_not = fmt::format("cannot open /dev/loop{}: {}", n, dev.error().message());
                return dev.error();
            }
            loop_config cfg{};
            cfg.fd = static_cast<std::uint32_t>(backing.get());
            cfg.block_size = block_size;
            cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (direct ? LO_FLAGS_DIRECT_IO : 0);
            std::snprintf(reinterpret_cast<char*>(cfg.info.lo_file_name), LO_NAME_SIZE, "%s", file.c_str());
            if (::ioctl(dev->get(), LOOP_CONFIGURE, &cfg) == 0) {
                loop_device d;
                d.fd_ = std::move(*dev);
                d.path_ = fmt::format("/dev/loop{}", n);
                d.direct_io_ = direct;
                return d;
            }
            if (errno == EBUSY) continue;
            if (direct && errno == EINVAL) break;  // the file refuses direct I/O: attach buffered
            why_not = fmt::format("LOOP_CONFIGURE /dev/loop{} with {}: {}", n, file, std::strerror(errno));
            return errno_error();
        }
    }
    why_not = fmt::format("could not attach {} to a loop device (all candidates busy)", file);
    return errno_error(EBUSY);
}

result<void> loop_device::detach() {
    if (!fd_) return {};
    // Fails with EBUSY while mounted; auto-clear then frees it at the last close.
    int rc = ::ioctl(fd_.get(), LOOP_CLR_FD, 0);
    int e = errno;
    fd_.reset();
    if (rc != 0 && e != ENXIO) {
        log::warning("loop.detach", "{}: LOOP_CLR_FD: {}", path_, std::strerror(e));
        return errno_error(e);
    }
    return {};
}

}  // namespace tandem::replication
