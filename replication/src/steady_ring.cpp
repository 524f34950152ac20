// replication: the steady state's io_uring: the peer's writes and the connection's polls (docs/replication-engine.md).
#include "tandem/replication/steady_ring.hpp"

#include "tandem/replication/protocol.hpp"

#include <poll.h>

#include <algorithm>
#include <cstring>

namespace tandem::replication {

result<std::unique_ptr<steady_ring>> steady_ring::create(int volume_fd, unsigned depth) {
    if (depth == 0) return errno_error(EINVAL);
    // Every slot can hold a write and its fsync, and a flush slot each: 4 entries
    // per slot, and a few for the polls.
    auto r = ring::create(depth * 4 + 8);
    if (!r) return r.error();
    // Not registered: the slots are touched (and counted in the daemon's memory)
    // only as large writes use them, lowest index first.
    auto b = buffer_pool::create(depth, max_data_length);
    if (!b) return b.error();
    return std::unique_ptr<steady_ring>(new steady_ring(std::move(*r), std::move(*b), volume_fd, depth));
}

steady_ring::steady_ring(ring r, buffer_pool b, int fd, unsigned depth)
    : ring_(std::move(r)), buffers_(std::move(b)), fd_(fd), slots_(2 * std::size_t{depth}) {}

steady_ring::~steady_ring() {
    auto ignore = [](const applied&) {};
    drain(ignore);
    for (unsigned tag = 0; tag < 32; ++tag) {
        if (!(armed_ & (std::uint32_t{1} << tag))) continue;
        io_uring_sqe* s = ring_.sqe();
        io_uring_prep_poll_remove(s, (std::uint64_t{tag} << 2) | poll_bit);
        io_uring_sqe_set_data64(s, removal);
    }
    // A removed poll completes with -ECANCELED; one that fired meanwhile, with its events.
    while (armed_ != 0) {
        if (!wait_one()) break;
        reap(ignore);
    }
}

unsigned steady_ring::data_in_flight() const noexcept {
    unsigned n = 0;
    for (std::size_t i = 0; i < slots_.size() / 2; ++i) n += slots_[i].busy;
    return n;
}

int steady_ring::free_slot(bool data) const noexcept {
    std::size_t half = slots_.size() / 2;
    for (std::size_t i = data ? 0 : half; i < (data ? half : slots_.size()); ++i)
        if (!slots_[i].busy) return static_cast<int>(i);
    return -1;
}

int steady_ring::take_slot(std::uint64_t seq, std::uint64_t offset, std::uint32_t length, std::uint32_t flags) {
    std::uint64_t end = offset + length;
    for (std::size_t i = 0; i < slots_.size() / 2; ++i) {
        const auto& s = slots_[i];
        if (s.busy && s.offset < end && offset < s.offset + s.length) return -1;  // arrival order wins
    }
    // A preflush: everything before this write completes first (IOSQE_IO_DRAIN
    // would also wait for the polls in the ring), and the fsync linked behind
    // it makes all of it durable.
    if ((flags & data_preflush) && data_in_flight() > 0) return -1;
    int i = free_slot(true);
    if (i < 0) return -1;
    bool sync = flags & (data_fua | data_preflush);
    slots_[static_cast<std::size_t>(i)] = slot{true, false, sync, sync ? 2u : 1u, 0, seq, offset, length};
    return i;
}

void steady_ring::queue(int i) {
    auto& s = slots_[static_cast<std::size_t>(i)];
    io_uring_sqe* w = ring_.sqe();
    io_uring_prep_write(w, fd_, buffers_[static_cast<std::size_t>(i)].data(), s.length, s.offset);
    io_uring_sqe_set_data64(w, static_cast<std::uint64_t>(i) << 2);
    if (s.sync) {
        w->flags |= IOSQE_IO_LINK;
        io_uring_sqe* f = ring_.sqe();
        io_uring_prep_fsync(f, fd_, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(f, (static_cast<std::uint64_t>(i) << 2) | fsync_bit);
    }
    ++in_flight_;
}

bool steady_ring::try_write(std::uint64_t seq, std::uint64_t offset, std::span<const std::byte> bytes,
                            std::uint32_t flags) {
    int i = take_slot(seq, offset, static_cast<std::uint32_t>(bytes.size()), flags);
    if (i < 0) return false;
    std::memcpy(buffers_[static_cast<std::size_t>(i)].data(), bytes.data(), bytes.size());
    queue(i);
    return true;
}

void steady_ring::commit() {
    if (reserved_ < 0) return;
    queue(std::exchange(reserved_, -1));
}

void steady_ring::cancel() {
    if (reserved_ < 0) return;
    slots_[static_cast<std::size_t>(std::exchange(reserved_, -1))].busy = false;
}

bool steady_ring::try_flush(std::uint64_t seq) {
    if (data_in_flight() > 0) return false;  // after every write queued before it
    int i = free_slot(false);
    if (i < 0) return false;
    io_uring_sqe* f = ring_.sqe();
    io_uring_prep_fsync(f, fd_, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(f, static_cast<std::uint64_t>(i) << 2);
    slots_[static_cast<std::size_t>(i)] = slot{true, true, false, 1, 0, seq, 0, 0};
    ++in_flight_;
    return true;
}

void steady_ring::watch(int fd, unsigned tag) {
    auto bit = std::uint32_t{1} << tag;
    if (armed_ & bit) return;
    armed_ |= bit;
    io_uring_sqe* s = ring_.sqe();
    io_uring_prep_poll_add(s, fd, POLLIN);
    io_uring_sqe_set_data64(s, (std::uint64_t{tag} << 2) | poll_bit);
}

result<void> steady_ring::wait(std::chrono::milliseconds timeout) {
    auto ms = std::max<long long>(timeout.count(), 0);
    __kernel_timespec ts{ms / 1000, (ms % 1000) * 1'000'000};
    io_uring_cqe* c = nullptr;
    int rc = io_uring_submit_and_wait_timeout(ring_.raw(), &c, 1, &ts, nullptr);
    if (rc < 0 && rc != -ETIME && rc != -EINTR) return errno_error(-rc);
    return {};
}

result<void> steady_ring::wait_one() {
    auto r = ring_.submit_and_wait(1);
    if (!r) return r.error();
    return {};
}

std::optional<applied> steady_ring::complete(const io_uring_cqe& c) {
    auto idx = static_cast<std::size_t>(c.user_data >> 2);  // a write's or a flush's slot
    if (idx >= slots_.size() || !slots_[idx].busy) return std::nullopt;
    auto& s = slots_[idx];
    bool is_write = !s.flush && !(c.user_data & fsync_bit);
    if (s.error == 0) {
        if (c.res < 0) s.error = -c.res;
        else if (is_write && static_cast<std::uint32_t>(c.res) != s.length) s.error = ENOSPC;  // past the end
    }
    if (--s.cqes > 0) return std::nullopt;
    s.busy = false;
    --in_flight_;
    return applied{s.seq, s.flush, s.error, s.offset, s.length};
}

}  // namespace tandem::replication
