// replication: io_uring setup, the opcode probe and registered buffers.
#include "tandem/replication/uring.hpp"

#include "tandem/base/log.hpp"

#include <sys/eventfd.h>
#include <sys/mman.h>

#include <utility>

namespace tandem::replication {

result<ring> ring::create(unsigned entries) {
    ring r;
    io_uring_params p{};
    // One thread submits; task work runs when it enters the kernel anyway.
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
    int rc = io_uring_queue_init_params(entries, &r.ring_, &p);
    if (rc == -EINVAL) {  // kernels before 6.0 lack SINGLE_ISSUER: plain setup
        p = {};
        rc = io_uring_queue_init_params(entries, &r.ring_, &p);
    }
    if (rc < 0) {
        log::error("replication.no_io_uring", "io_uring_setup failed: {} (is kernel.io_uring_disabled set?)",
                   std::strerror(-rc));
        return errno_error(-rc);
    }
    r.live_ = true;
    std::unique_ptr<io_uring_probe, decltype(&io_uring_free_probe)> probe(io_uring_get_probe_ring(&r.ring_),
                                                                         io_uring_free_probe);
    if (!probe) return errno_error(ENOSYS);
    for (int op : {IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED, IORING_OP_SEND, IORING_OP_RECV, IORING_OP_FSYNC}) {
        if (!io_uring_opcode_supported(probe.get(), op)) {
            log::error("replication.io_uring_opcode", "io_uring lacks opcode {} that the data path needs", op);
            return errno_error(ENOSYS);
        }
    }
    r.features_.send_zc = io_uring_opcode_supported(probe.get(), IORING_OP_SEND_ZC);
    r.efd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!r.efd_) return errno_error();
    if ((rc = io_uring_register_eventfd(&r.ring_, r.efd_.get())) < 0) return errno_error(-rc);
    return r;
}

ring::ring(ring&& o) noexcept
    : ring_(o.ring_), live_(std::exchange(o.live_, false)), efd_(std::move(o.efd_)), features_(o.features_) {}

ring::~ring() {
    if (live_) io_uring_queue_exit(&ring_);
}

io_uring_sqe* ring::sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    if (!s) {
        io_uring_submit(&ring_);
        s = io_uring_get_sqe(&ring_);
    }
    return s;
}

result<int> ring::submit() { return check_neg_errno(io_uring_submit(&ring_)); }

result<int> ring::submit_and_wait(unsigned n) {
    for (;;) {
        int rc = io_uring_submit_and_wait(&ring_, n);
        if (rc != -EINTR) return check_neg_errno(rc);
    }
}

result<void> ring::register_buffers(std::span<const iovec> bufs) {
    int rc = io_uring_register_buffers(&ring_, bufs.data(), static_cast<unsigned>(bufs.size()));
    if (rc < 0) return errno_error(-rc);
    return {};
}

result<buffer_pool> buffer_pool::create(std::size_t count, std::size_t size) {
    if (size == 0 || size % 4096 != 0) return errno_error(EINVAL);
    void* p = ::mmap(nullptr, count * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return errno_error();
    return buffer_pool(static_cast<std::byte*>(p), count, size);
}

buffer_pool::buffer_pool(buffer_pool&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)), count_(o.count_), size_(o.size_) {}

buffer_pool::~buffer_pool() {
    if (base_) ::munmap(base_, count_ * size_);
}

std::unique_ptr<iovec[]> buffer_pool::iovecs() const {
    auto v = std::make_unique<iovec[]>(count_);
    for (std::size_t i = 0; i < count_; ++i) v[i] = {base_ + i * size_, size_};
    return v;
}

}  // namespace tandem::replication
