// replication: the source and target pumps — one thread, one ring, frames in flight, nothing unchecked on disk.
#include "tandem/replication/pump.hpp"

#include "tandem/replication/protocol.hpp"
#include "tandem/replication/uring.hpp"

#include <sys/socket.h>

#include <fmt/format.h>

#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <vector>

namespace tandem::replication {

namespace {

constexpr std::size_t data_prefix = frame_header_size + data_header_size;
constexpr std::size_t ack_frame = frame_header_size + ack_size;

// user_data: what an operation was, and for which buffer.
enum class op : std::uint32_t {
    read = 1, send, ack_recv, timeout, prefix_recv, payload_recv, write, ack_send, cancel, done_recv
};
std::uint64_t tag(op o, std::uint32_t i = 0) { return (std::uint64_t{static_cast<std::uint32_t>(o)} << 32) | i; }
op tag_op(std::uint64_t t) { return static_cast<op>(t >> 32); }
std::uint32_t tag_index(std::uint64_t t) { return static_cast<std::uint32_t>(t); }

constexpr std::size_t headroom = 4096;  // payload starts page-aligned for O_DIRECT; the prefix sits just before

double since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A ring with `count` registered buffers of `size` bytes; `error` says what failed.
struct pump_io {
    std::optional<ring> r;
    std::optional<buffer_pool> pool;
    std::string error;
};
pump_io make_io(unsigned entries, std::size_t count, std::size_t size) {
    pump_io io;
    auto rg = ring::create(entries);
    if (!rg) return {{}, {}, "io_uring: " + rg.error().message()};
    auto pool = buffer_pool::create(count, size);
    if (!pool) return {{}, {}, "buffers: " + pool.error().message()};
    auto iov = pool->iovecs();
    if (auto reg = rg->register_buffers(std::span(iov.get(), pool->count())); !reg)
        return {{}, {}, "registering buffers: " + reg.error().message()};
    io.r.emplace(std::move(*rg));
    io.pool.emplace(std::move(*pool));
    return io;
}

// Bytes of the plan's dirty runs inside [start, end).
std::uint64_t planned_bytes(const dirty_bitmap& plan, std::uint64_t start, std::uint64_t end) {
    std::uint64_t n = 0;
    for (auto run = plan.next_run(start); run && run->offset < end; run = plan.next_run(run->offset + run->length))
        n += std::min(end, run->offset + run->length) - run->offset;
    return n;
}

// Cancels everything still in flight and waits for it, so that no completion
// can write into buffers after we return.
void drain(ring& r, unsigned& inflight) {
    if (inflight == 0) return;
    auto* s = r.sqe();
    io_uring_prep_cancel64(s, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(s, tag(op::cancel));
    ++inflight;
    while (inflight > 0) {
        if (!r.submit_and_wait(1)) break;
        r.reap([&](const io_uring_cqe&) { --inflight; });
    }
}

}  // namespace

pump_result pump_source(volume& vol, int sock, const pump_options& opt, pump_progress& pr, const clock_source& clock) {
    pump_result res;
    auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t end = opt.end ? opt.end : vol.size();
    res.resume_at = opt.start;
    pr.bytes_total = opt.plan ? planned_bytes(*opt.plan, opt.start, end) : end - opt.start;
    auto io = make_io(opt.depth * 2 + 8, opt.depth, headroom + opt.chunk);
    if (!io.error.empty()) return {0, opt.start, 0, io.error, std::nullopt};
    ring& r = *io.r;
    auto& pool = io.pool;

    struct slot {
        enum { free, waiting, reading, sending, zc_wait } state = free;
        unsigned notifs = 0;  // zero-copy sends whose buffer the kernel still holds
        std::uint64_t offset = 0, seq = 0;
        std::uint32_t len = 0, sent = 0;
        steady_time not_before{};  // waiting: the rate allows the read from then on
    };
    std::vector<slot> slots(opt.depth);
    std::map<std::uint64_t, std::pair<std::uint64_t, std::uint32_t>> unacked;  // seq -> (offset, len)
    // Sequence numbers follow read completions, which come in any order: the
    // oldest frame by seq is not always the lowest offset.
    auto lowest_unacked = [&] {
        std::uint64_t low = ~std::uint64_t{0};
        for (auto& kv : unacked) low = std::min(low, kv.second.first);
        return low;
    };
    std::array<std::byte, ack_frame> ack{};
    // The bucket starts empty (no burst beyond the rate at the start) and may
    // hold 50 ms of budget, so a pipeline that stalled for a moment (a busy CPU)
    // catches up instead of losing that time for good.
    auto burst_for = [&](std::uint64_t rate) { return std::max<std::uint64_t>(opt.chunk, rate / 20); };
    token_bucket bucket(pr.rate_bps ? pr.rate_bps.load() : 1, burst_for(pr.rate_bps), clock.now(), false);
    std::uint64_t next = opt.start, seq = 0, done = 0;
    // The range being cut into frames: [next, run_end). With a plan, the next
    // dirty run is looked up when this one is used up; without, it is all of it.
    std::uint64_t run_end = opt.plan ? opt.start : end;
    auto advance_run = [&] {
        if (next < run_end || !opt.plan) return;
        auto run = opt.plan->next_run(next);
        if (!run || run->offset >= end) {
            next = run_end = end;
            return;
        }
        next = run->offset;
        run_end = std::min(end, run->offset + run->length);
    };
    unsigned inflight = 0;
    bool ack_armed = false, timer_armed = false;
    __kernel_timespec ts{};
    __kernel_timespec stall{};
    stall.tv_sec = opt.stall.count() / 1000;
    stall.tv_nsec = (opt.stall.count() % 1000) * 1'000'000;

    auto fail = [&](std::string why) {
        res.error = std::move(why);
        drain(r, inflight);
        res.bytes = done;
        res.resume_at = std::min(res.resume_at, lowest_unacked());
        res.seconds = since(t0);
        return res;
    };
    auto start_read = [&](std::uint32_t i) {
        auto& s = slots[i];
        auto* e = r.sqe();
        io_uring_prep_read_fixed(e, vol.fd(), (*pool)[i].data() + headroom, s.len, s.offset, static_cast<int>(i));
        io_uring_sqe_set_data64(e, tag(op::read, i));
        s.state = slot::reading;
        ++inflight;
    };
    // One send in flight per socket: io_uring does not keep concurrent sends on
    // a stream socket in order, and a partial send's rest must follow it at once.
    // Frames leave in offset order (reads complete in any order), so what the
    // target holds is always a contiguous range and a resume point means what it says.
    std::deque<std::uint32_t> order;  // slots in the order their frames must leave
    bool send_armed = false;
    // Zero-copy send from the registered buffer: the slot is reused only after
    // the kernel's notification that it no longer references the pages.
    const bool zero_copy = opt.zero_copy && r.features().send_zc;
    auto send_rest = [&](std::uint32_t i) {
        auto& s = slots[i];
        send_armed = true;
        auto* base = (*pool)[i].data() + headroom - data_prefix;
        auto* e = r.sqe();
        std::uint32_t total = data_prefix + s.len;
        if (zero_copy)
            io_uring_prep_send_zc_fixed(e, sock, base + s.sent, total - s.sent, MSG_NOSIGNAL, 0, i);
        else
            io_uring_prep_send(e, sock, base + s.sent, total - s.sent, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(e, tag(op::send, i));
        ++inflight;
    };

    for (;;) {
        // Chunks whose time has come start reading; while one still waits for
        // the rate, no new chunk is taken (we are ahead of the budget anyway).
        auto now = clock.now();
        bool waiting = false;
        for (std::uint32_t i = 0; i < opt.depth; ++i) {
            if (slots[i].state != slot::waiting) continue;
            if (slots[i].not_before <= now) start_read(i);
            else waiting = true;
        }
        for (std::uint32_t i = 0; i < opt.depth && !pr.stop && !waiting; ++i) {
            auto& s = slots[i];
            if (s.state != slot::free || unacked.size() >= opt.depth * 2) continue;
            advance_run();
            if (next >= end) break;
            s.offset = next;
            s.len = static_cast<std::uint32_t>(std::min<std::uint64_t>(opt.chunk, run_end - next));
            order.push_back(i);
            s.sent = 0;
            next += s.len;
            auto rate = pr.rate_now(now);
            if (rate && bucket.rate() != rate) bucket.set_rate(rate, clock.now(), burst_for(rate));
            auto wait = rate ? bucket.take(s.len, now) : nanos(0);
            if (wait.count() > 0) {
                s.state = slot::waiting;
                s.not_before = now + wait;
                waiting = true;
                break;  // the rest waits behind this one
            }
            start_read(i);
        }
        // One timer, for the earliest waiting chunk.
        if (waiting && !timer_armed) {
            steady_time first = steady_time::max();
            for (auto& s : slots)
                if (s.state == slot::waiting) first = std::min(first, s.not_before);
            auto wait = std::max(nanos(0), first - now);
            ts.tv_sec = wait.count() / 1'000'000'000;
            ts.tv_nsec = wait.count() % 1'000'000'000;
            auto* e = r.sqe();
            io_uring_prep_timeout(e, &ts, 0, 0);
            io_uring_sqe_set_data64(e, tag(op::timeout));
            timer_armed = true;
            ++inflight;
        }
        if (!send_armed && !order.empty() && slots[order.front()].state == slot::sending) send_rest(order.front());
        if (!ack_armed && !unacked.empty()) {
            auto* e = r.sqe();
            io_uring_prep_recv(e, sock, ack.data(), ack.size(), MSG_WAITALL);
            io_uring_sqe_set_data64(e, tag(op::ack_recv));
            // A target that stops acknowledging is given up on after the stall timeout.
            e->flags |= IOSQE_IO_LINK;
            auto* t = r.sqe();
            io_uring_prep_link_timeout(t, &stall, 0);
            io_uring_sqe_set_data64(t, tag(op::timeout, 1));
            ack_armed = true;
            inflight += 2;
        }
        bool sending = std::any_of(slots.begin(), slots.end(), [](auto& s) { return s.state != slot::free; });
        if (!sending && unacked.empty() && (pr.stop || (advance_run(), next >= end))) break;
        if (auto w = r.submit_and_wait(1); !w) return fail("io_uring: " + w.error().message());

        std::string error;
        r.reap([&](const io_uring_cqe& c) {
            auto i = tag_index(c.user_data);
            switch (tag_op(c.user_data)) {
                case op::read: {
                    --inflight;
                    auto& s = slots[i];
                    if (c.res < 0 || static_cast<std::uint32_t>(c.res) != s.len) {
                        error = fmt::format("reading {} at {}: {}", vol.path(), s.offset,
                                            c.res < 0 ? std::strerror(-c.res) : "short read");
                        break;
                    }
                    auto payload = (*pool)[i].subspan(headroom, s.len);
                    s.seq = ++seq;
                    data_msg m{s.offset, s.len, data_resync, data_checksum(payload), payload};
                    if (auto enc = encode_data_prefix(std::span((*pool)[i].data() + headroom - data_prefix, data_prefix),
                                                      s.seq, m);
                        !enc) {
                        error = "encoding a data frame: " + enc.error().message();
                        break;
                    }
                    s.state = slot::sending;
                    break;
                }
                case op::send: {
                    --inflight;
                    auto& s = slots[i];
                    if (c.flags & IORING_CQE_F_NOTIF) {  // the kernel let go of a zero-copy buffer
                        if (--s.notifs == 0 && s.state == slot::zc_wait) s.state = slot::free;
                        break;
                    }
                    if (c.flags & IORING_CQE_F_MORE) {  // a notification follows
                        ++s.notifs;
                        ++inflight;
                    }
                    send_armed = false;
                    if (c.res < 0) {
                        error = fmt::format("sending to the peer: {}", std::strerror(-c.res));
                        break;
                    }
                    s.sent += static_cast<std::uint32_t>(c.res);
                    if (s.sent < data_prefix + s.len) {
                        send_rest(i);
                        break;
                    }
                    unacked[s.seq] = {s.offset, s.len};
                    s.state = s.notifs ? slot::zc_wait : slot::free;
                    order.pop_front();
                    break;
                }
                case op::ack_recv: {
                    --inflight;
                    ack_armed = false;
                    auto h = c.res == static_cast<int>(ack_frame) ? decode_frame_header(ack) : result<frame_header>();
                    auto a = h && h->type == msg_type::data_ack
                                 ? decode_data_ack(std::span<const std::byte>(ack).subspan(frame_header_size))
                                 : result<ack_msg>();
                    if (c.res != static_cast<int>(ack_frame) || !a) {
                        error = c.res == -ECANCELED ? "the peer stopped acknowledging"
                                : c.res <= 0        ? "the peer closed the connection"
                                                    : "a malformed acknowledgement";
                        break;
                    }
                    auto it = unacked.find(a->seq);
                    if (it == unacked.end()) {
                        error = fmt::format("an acknowledgement for frame {} that was never sent", a->seq);
                        break;
                    }
                    if (a->status != ack_status::ok) {
                        error = fmt::format("the peer could not write at {}: {}", it->second.first,
                                            to_string(a->status));
                        break;
                    }
                    done += it->second.second;
                    pr.bytes_done = done;
                    unacked.erase(it);
                    // Everything below the oldest frame still unacknowledged is durable there.
                    std::uint64_t low = next;
                    for (auto& s : slots)
                        if (s.state != slot::free) low = std::min(low, s.offset);
                    res.resume_at = std::min(low, lowest_unacked());
                    break;
                }
                case op::timeout:
                    --inflight;
                    if (tag_index(c.user_data) == 0) timer_armed = false;  // 1: an ack wait's link timeout
                    break;
                default:
                    --inflight;
                    break;
            }
        });
        if (!error.empty()) return fail(error);
    }
    res.bytes = done;
    res.resume_at = pr.stop ? res.resume_at : end;
    res.seconds = since(t0);
    return res;
}

pump_result pump_target(volume& vol, int sock, const pump_options& opt, pump_progress& pr) {
    pump_result res;
    auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t end = opt.end ? opt.end : vol.size();
    const std::uint64_t total = end - opt.start;
    if (!opt.until_done) pr.bytes_total = total;
    auto io = make_io(opt.depth * 3 + 8, opt.depth, opt.chunk);
    if (!io.error.empty()) return {0, opt.start, 0, io.error, std::nullopt};
    ring& r = *io.r;
    auto& pool = io.pool;

    struct slot {
        enum { free, receiving, writing, acking } state = free;
        data_msg d{};
        std::uint64_t seq = 0;
        std::array<std::byte, ack_frame> ack{};
    };
    std::vector<slot> slots(opt.depth);
    std::array<std::byte, data_prefix> prefix{};
    unsigned inflight = 0;
    std::uint64_t written = 0;
    bool prefix_armed = false, payload_armed = false;
    // A prefix whose payload waits for a free buffer.
    bool pending = false;
    data_msg pending_msg{};
    std::uint64_t pending_seq = 0;
    std::deque<std::uint32_t> ack_queue;       // acks go out one at a time, in order
    bool ack_armed = false;
    // Writes complete in any order: resume_at advances over a contiguous run only.
    std::map<std::uint64_t, std::uint32_t> durable;
    std::uint64_t cursor = opt.start;
    __kernel_timespec stall{};
    stall.tv_sec = opt.stall.count() / 1000;
    stall.tv_nsec = (opt.stall.count() % 1000) * 1'000'000;

    res.resume_at = opt.start;
    auto fail = [&](std::string why) {
        res.error = std::move(why);
        drain(r, inflight);
        res.bytes = written;
        res.seconds = since(t0);
        return res;
    };
    std::uint64_t received = 0;
    // until_done: the resync_done frame; its first bytes arrive with a prefix, the rest after.
    constexpr std::size_t done_frame = frame_header_size + resync_done_size;
    static_assert(done_frame > data_prefix);
    std::array<std::byte, done_frame> done_buf{};
    bool done_armed = false, done_received = false;
    auto more_expected = [&] { return opt.until_done ? !done_received && !done_armed : received < total; };
    for (;;) {
        if (!prefix_armed && !payload_armed && !pending && more_expected()) {
            auto* e = r.sqe();
            io_uring_prep_recv(e, sock, prefix.data(), prefix.size(), MSG_WAITALL);
            io_uring_sqe_set_data64(e, tag(op::prefix_recv));
            // No timer per frame here: a source that falls silent between
            // frames (a cut link) is the socket's keepalive's to detect,
            // which the engine sets; a timer per recv costs throughput.
            prefix_armed = true;
            ++inflight;
        }
        if (pending) {
            for (std::uint32_t i = 0; i < opt.depth; ++i) {
                if (slots[i].state != slot::free) continue;
                slots[i].state = slot::receiving;
                slots[i].d = pending_msg;
                slots[i].seq = pending_seq;
                pending = false;
                // A peer that stops in the middle of a frame is dropped after the stall timeout.
                auto* e = r.sqe();
                io_uring_prep_recv(e, sock, (*pool)[i].data(), slots[i].d.length, MSG_WAITALL);
                io_uring_sqe_set_data64(e, tag(op::payload_recv, i));
                e->flags |= IOSQE_IO_LINK;
                auto* t = r.sqe();
                io_uring_prep_link_timeout(t, &stall, 0);
                io_uring_sqe_set_data64(t, tag(op::timeout));
                payload_armed = true;
                inflight += 2;
                break;
            }
        }
        if (!ack_armed && !ack_queue.empty()) {
            auto& s = slots[ack_queue.front()];
            auto* e = r.sqe();
            io_uring_prep_send(e, sock, s.ack.data(), s.ack.size(), MSG_NOSIGNAL);
            io_uring_sqe_set_data64(e, tag(op::ack_send, ack_queue.front()));
            ack_armed = true;
            ++inflight;
        }
        bool busy = std::any_of(slots.begin(), slots.end(), [](auto& s) { return s.state != slot::free; });
        if (!busy && (opt.until_done ? done_received : written >= total)) break;
        if (auto w = r.submit_and_wait(1); !w) return fail("io_uring: " + w.error().message());

        std::string error;
        r.reap([&](const io_uring_cqe& c) {
            --inflight;
            auto i = tag_index(c.user_data);
            switch (tag_op(c.user_data)) {
                case op::prefix_recv: {
                    prefix_armed = false;
                    if (c.res != static_cast<int>(data_prefix)) {
                        error = c.res == -ETIMEDOUT ? "the peer stopped answering (TCP keepalive)"
                                : c.res <= 0        ? "the peer closed the connection"
                                                    : "the peer stopped mid-frame";
                        break;
                    }
                    auto h = decode_frame_header(prefix);
                    if (h && h->type == msg_type::resync_done && opt.until_done) {
                        std::memcpy(done_buf.data(), prefix.data(), prefix.size());
                        auto* e = r.sqe();
                        io_uring_prep_recv(e, sock, done_buf.data() + data_prefix, done_frame - data_prefix,
                                           MSG_WAITALL);
                        io_uring_sqe_set_data64(e, tag(op::done_recv));
                        e->flags |= IOSQE_IO_LINK;
                        auto* t = r.sqe();
                        io_uring_prep_link_timeout(t, &stall, 0);
                        io_uring_sqe_set_data64(t, tag(op::timeout));
                        inflight += 2;
                        done_armed = true;
                        break;
                    }
                    auto d = h && h->type == msg_type::data
                                 ? decode_data_header(std::span<const std::byte>(prefix).subspan(frame_header_size),
                                                      h->length, end)
                                 : result<data_msg>(make_error_code(errc::unknown_type));
                    if (!d || d->offset < opt.start || d->length > opt.chunk ||
                        d->offset % vol.logical_block() || d->length % vol.logical_block()) {
                        error = fmt::format("a malformed or out-of-range data frame ({}); nothing of it was written",
                                            d ? "outside this node's window" : d.error().message());
                        break;
                    }
                    pending = true;
                    pending_msg = *d;
                    pending_seq = h->seq;
                    break;
                }
                case op::done_recv: {
                    done_armed = false;
                    auto m = c.res == static_cast<int>(done_frame - data_prefix)
                                 ? decode_resync_done(std::span<const std::byte>(done_buf).subspan(frame_header_size))
                                 : result<resync_done_msg>(make_error_code(errc::bad_length));
                    if (!m) {
                        error = fmt::format("a bad end-of-resync frame: {}",
                                            c.res <= 0 ? "the peer closed the connection" : m.error().message());
                        break;
                    }
                    res.done = *m;
                    done_received = true;
                    break;
                }
                case op::payload_recv: {
                    payload_armed = false;
                    auto& s = slots[i];
                    if (c.res != static_cast<int>(s.d.length)) {
                        // An interrupted MSG_WAITALL receive reports what it got, not -ECANCELED.
                        error = fmt::format("the peer stalled or closed the connection in the middle of a frame "
                                            "({} of {} bytes)",
                                            std::max(c.res, 0), s.d.length);
                        break;
                    }
                    received += s.d.length;
                    auto payload = (*pool)[i].first(s.d.length);
                    s.d.bytes = payload;
                    if (!verify_data(s.d)) {
                        error = fmt::format("bad checksum in the frame for offset {}; nothing of it was written",
                                            s.d.offset);
                        break;
                    }
                    auto* e = r.sqe();
                    io_uring_prep_write_fixed(e, vol.fd(), payload.data(), s.d.length, s.d.offset,
                                              static_cast<int>(i));
                    io_uring_sqe_set_data64(e, tag(op::write, i));
                    s.state = slot::writing;
                    ++inflight;
                    break;
                }
                case op::write: {
                    auto& s = slots[i];
                    int err = c.res < 0 ? -c.res : static_cast<std::uint32_t>(c.res) != s.d.length ? ENOSPC : 0;
                    auto status = err ? ack_status::io_error : ack_status::ok;
                    if (err) {
                        // Reported to the source too, so it does not count the bytes.
                        error = fmt::format("writing {} at {}: {} (a full or failing target disk)", vol.path(),
                                            s.d.offset, std::strerror(err));
                    } else {
                        written += s.d.length;
                        pr.bytes_done = written;
                        if (opt.on_durable) opt.on_durable(s.d.offset, s.d.length);
                        durable[s.d.offset] = s.d.length;
                        for (auto it = durable.begin(); it != durable.end() && it->first == cursor;
                             it = durable.erase(it))
                            cursor += it->second;
                        res.resume_at = cursor;
                    }
                    (void)encode_data_ack(s.ack, 0, ack_msg{s.seq, status});
                    s.state = slot::acking;
                    ack_queue.push_back(i);
                    break;
                }
                case op::ack_send:
                    ack_armed = false;
                    ack_queue.pop_front();
                    if (c.res != static_cast<int>(ack_frame)) error = "the peer closed the connection";
                    slots[i].state = slot::free;
                    break;
                default:
                    break;
            }
        });
        if (!error.empty()) return fail(error);
    }
    res.bytes = written;
    res.resume_at = end;
    res.seconds = since(t0);
    return res;
}

}  // namespace tandem::replication
