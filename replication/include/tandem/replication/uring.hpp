// replication: one io_uring instance — RAII, feature probe, registered buffers, eventfd for the io_context.
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/base/unique_fd.hpp"

#include <liburing.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>

namespace tandem::replication {

// The opcodes the data path uses; checked once when the ring is made.
struct ring_features {
    bool send_zc = false;  // IORING_OP_SEND_ZC (Linux 6.0): zero-copy send, used where it pays
};

// Move-only owner of an io_uring. Completions also bump an eventfd, so the
// control plane's io_context can wait on it like any other descriptor.
class ring {
public:
    // Fails naming the missing feature: io_uring disabled (sysctl
    // kernel.io_uring_disabled), or an opcode the data path needs.
    [[nodiscard]] static result<ring> create(unsigned entries);
    ring(ring&& o) noexcept;
    ring& operator=(ring&&) = delete;
    ring(const ring&) = delete;
    ~ring();

    [[nodiscard]] io_uring* raw() noexcept { return &ring_; }
    [[nodiscard]] const ring_features& features() const noexcept { return features_; }
    [[nodiscard]] int event_fd() const noexcept { return efd_.get(); }

    // A free submission entry; submits what is queued when the queue is full.
    [[nodiscard]] io_uring_sqe* sqe();
    result<int> submit();
    // Submits and waits for at least `n` completions.
    result<int> submit_and_wait(unsigned n);
    // Hands every ready completion to `fn(const io_uring_cqe&)` and marks them
    // seen in one step; returns how many there were.
    template <class F>
    unsigned reap(F&& fn) {
        unsigned head, n = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            fn(*cqe);
            ++n;
        }
        io_uring_cq_advance(&ring_, n);
        return n;
    }
    // Registers buffers for READ_FIXED / WRITE_FIXED (pinned once, not per I/O).
    result<void> register_buffers(std::span<const iovec> bufs);

private:
    ring() = default;
    io_uring ring_{};
    bool live_ = false;
    unique_fd efd_;
    ring_features features_;
};

// `count` buffers of `size` bytes each, aligned for O_DIRECT (4096), in one
// anonymous mapping; index i is registered buffer i.
class buffer_pool {
public:
    [[nodiscard]] static result<buffer_pool> create(std::size_t count, std::size_t size);
    buffer_pool(buffer_pool&&) noexcept;
    buffer_pool& operator=(buffer_pool&&) = delete;
    ~buffer_pool();

    [[nodiscard]] std::span<std::byte> operator[](std::size_t i) const noexcept {
        return {base_ + i * size_, size_};
    }
    [[nodiscard]] std::size_t count() const noexcept { return count_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] std::unique_ptr<iovec[]> iovecs() const;

private:
    buffer_pool(std::byte* base, std::size_t count, std::size_t size) : base_(base), count_(count), size_(size) {}
    std::byte* base_ = nullptr;
    std::size_t count_ = 0, size_ = 0;
};

}  // namespace tandem::replication
