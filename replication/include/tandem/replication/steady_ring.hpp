// replication: the steady state's io_uring — the peer's blocks applied many at a time, and the waits for the socket.
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/replication/uring.hpp"

#include <cstddef>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace tandem::replication {

// One finished request: the frame's seq, and 0 or the errno that failed it.
struct applied {
    std::uint64_t seq = 0;
    bool flush = false;  // a flush frame (else a data frame)
    int error = 0;       // positive errno; ENOSPC for a short write
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
};

// The engine thread's one wait in the steady state: readiness of its descriptors
// (the socket, the wake eventfd, the listener: one-shot polls) and the
// completions of the peer's writes, which it applies to the volume with O_DIRECT,
// up to `depth` at a time (docs/replication-engine.md, "Steady state and write
// protocols"). A write's bytes are either copied into an aligned slot (write():
// the receive buffer can be reused at once) or received straight into one
// (reserve(), then commit() once they are all there and checked). Ordering
// rules, which keep the two copies equal:
//   - a write that overlaps one in flight waits for it (arrival order wins);
//   - data_preflush and flush frames wait until the writes before them have
//     completed, then the volume is fdatasync'ed (not IOSQE_IO_DRAIN: that
//     would also wait for the polls armed in the same ring);
//   - data_fua is a write linked to an fdatasync: complete when durable.
// Only the thread that created it may use it (the ring is single-issuer).
class steady_ring {
public:
    [[nodiscard]] static result<std::unique_ptr<steady_ring>> create(int volume_fd, unsigned depth);
    steady_ring(const steady_ring&) = delete;
    steady_ring& operator=(const steady_ring&) = delete;
    // Waits for writes in flight (their slots must outlive them), then cancels
    // the polls still armed and waits for those too: an armed poll holds its
    // file until the kernel's asynchronous teardown of the ring reaches it, and
    // a listening socket closed meanwhile would keep its port busy until then.
    ~steady_ring();

    // Queues a write (flags as in data_msg); waits for completions, handing them
    // to `done`, while no slot is free or an overlapping write is in flight.
    template <class F>
    result<void> write(std::uint64_t seq, std::uint64_t offset, std::span<const std::byte> bytes, std::uint32_t flags,
                       F&& done) {
        if (bytes.size() > buffers_.size()) return errno_error(EINVAL);  // more than one frame holds
        while (!try_write(seq, offset, bytes, flags)) {
            if (auto w = wait_one(); !w) return w.error();
            reap(done);
        }
        return {};
    }
    // Takes a slot for a write of `length` bytes under write()'s rules, waiting
    // like it does, and returns the slot's buffer for the caller to fill; the
    // write is queued by commit(), or the slot given back by cancel(). One
    // reservation at a time, and nothing else queued while it is open.
    template <class F>
    result<std::span<std::byte>> reserve(std::uint64_t seq, std::uint64_t offset, std::uint32_t length,
                                         std::uint32_t flags, F&& done) {
        if (length > buffers_.size() || reserved_ >= 0) return errno_error(EINVAL);
        while ((reserved_ = take_slot(seq, offset, length, flags)) < 0) {
            if (auto w = wait_one(); !w) return w.error();
            reap(done);
        }
        return buffers_[static_cast<std::size_t>(reserved_)].first(length);
    }
    void commit();  // queues the reserved write
    void cancel();  // gives the reserved slot back, nothing written
    // Queues a flush: after every write queued before it, fdatasync.
    template <class F>
    result<void> flush(std::uint64_t seq, F&& done) {
        while (!try_flush(seq)) {
            if (auto w = wait_one(); !w) return w.error();
            reap(done);
        }
        return {};
    }
    // Arms a one-shot poll for POLLIN on `fd` unless one is armed already;
    // take_ready() has bit `tag` (0..31) once it fired.
    void watch(int fd, unsigned tag);
    [[nodiscard]] std::uint32_t take_ready() noexcept { return std::exchange(ready_, 0); }
    // Submits, then waits until something completes or `timeout` passes.
    result<void> wait(std::chrono::milliseconds timeout);
    // Hands every finished request to `done(const applied&)`, and notes fired polls.
    template <class F>
    void reap(F&& done) {
        ring_.reap([&](const io_uring_cqe& c) {
            if (c.user_data & poll_bit) {
                auto bit = std::uint32_t{1} << (c.user_data >> 2);
                armed_ &= ~bit;
                ready_ |= bit;
            } else if (auto a = complete(c)) {
                done(*a);
            }
        });
    }
    // Submits and waits until every request has finished (results to `done`).
    template <class F>
    void drain(F&& done) {
        while (in_flight_ > 0) {
            if (!wait_one()) break;
            reap(done);
        }
    }

private:
    // user_data: slot << 2 | fsync_bit for writes, their fsyncs and flushes; tag << 2 | poll_bit for polls.
    static constexpr std::uint64_t fsync_bit = 1, poll_bit = 2;
    // A poll removal's own completion: neither bit, and no slot that high.
    static constexpr std::uint64_t removal = std::uint64_t{1} << 40;
    struct slot {
        bool busy = false;
        bool flush = false;
        bool sync = false;  // data_fua or data_preflush: an fdatasync linked behind the write
        unsigned cqes = 0;  // completions still to come (2 for a write linked to an fsync)
        int error = 0;
        std::uint64_t seq = 0, offset = 0;
        std::uint32_t length = 0;
    };
    steady_ring(ring r, buffer_pool b, int fd, unsigned depth);
    // False when it has to wait: no free slot, or an overlapping write in flight.
    bool try_write(std::uint64_t seq, std::uint64_t offset, std::span<const std::byte> bytes, std::uint32_t flags);
    // The slot a write may use now (marked busy, not yet queued), or -1.
    int take_slot(std::uint64_t seq, std::uint64_t offset, std::uint32_t length, std::uint32_t flags);
    void queue(int i);  // the write in slot i, and its fsync if it has one
    bool try_flush(std::uint64_t seq);
    std::optional<applied> complete(const io_uring_cqe& c);
    result<void> wait_one();
    [[nodiscard]] int free_slot(bool data) const noexcept;
    [[nodiscard]] unsigned data_in_flight() const noexcept;

    ring ring_;
    buffer_pool buffers_;
    int fd_;
    std::vector<slot> slots_;  // data slots 0..depth-1, then one flush slot per data slot
    unsigned in_flight_ = 0;   // busy slots, not counting a reservation
    int reserved_ = -1;        // the slot reserve() handed out, until commit() or cancel()
    std::uint32_t armed_ = 0, ready_ = 0;  // polls, by tag
};

}  // namespace tandem::replication
