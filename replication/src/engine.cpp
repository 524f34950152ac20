// replication: the engine — connection, handshake, sync decision, resync passes, real-time writes, activity log.
//
// One thread owns the connection (docs/replication-engine.md). It dials or
// listens, runs the handshake with blocking sockets and poll(2) deadlines, hands
// the socket to the io_uring pumps for a resync, and then serves the steady
// state: frames from the peer (data, acks, pings) while application threads send
// their writes under a send lock. One mutex guards the metadata, the activity
// log and the table of writes waiting for the peer.
#include "tandem/replication/engine.hpp"

#include "tandem/base/bytes.hpp"
#include "tandem/base/log.hpp"
#include "tandem/replication/steady_ring.hpp"
#include "tandem/replication/protocol.hpp"
#include "tandem/replication/volume.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

namespace tandem::replication {

namespace {

using clock = std::chrono::steady_clock;

// The activity log: an extent is "hot" from just before its first write until it
// has been idle for hot_idle with nothing in flight. Hot extents are written into
// every committed bitmap, so a crash can lose no dirty bit (docs: "Activity log").
constexpr std::uint64_t extent_bytes = 4ull << 20;
constexpr std::size_t max_hot_extents = 1024;
constexpr auto hot_idle = std::chrono::seconds(2);
// The resync target commits its progress this often.
constexpr auto checkpoint_every = std::chrono::seconds(1);
// Online verify: one request of this many bytes at a time, one digest per chunk.
constexpr std::uint32_t verify_span = 4u << 20;
constexpr std::uint32_t verify_chunk = 4096;
// The secondary applies at most this many of the peer's writes at once.
constexpr unsigned apply_depth = 32;

// Ends the connection in the engine thread; the text is the log line's reason.
struct link_down : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// The peer's data cannot be paired with ours: stop until an operator acts.
struct link_refused : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string errno_text(int e = errno) { return std::strerror(e); }

result<sockaddr_storage> make_addr(const std::string& ip, std::uint16_t port, socklen_t& len) {
    sockaddr_storage ss{};
    if (auto* a4 = reinterpret_cast<sockaddr_in*>(&ss); ::inet_pton(AF_INET, ip.c_str(), &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        len = sizeof(sockaddr_in);
        return ss;
    }
    if (auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss); ::inet_pton(AF_INET6, ip.c_str(), &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        len = sizeof(sockaddr_in6);
        return ss;
    }
    return make_error_code(std::errc::invalid_argument);
}

// 1 MiB aligned for O_DIRECT, one per thread that writes.
std::byte* bounce_buffer() {
    struct deleter {
        void operator()(std::byte* p) const { std::free(p); }
    };
    thread_local std::unique_ptr<std::byte, deleter> buf(static_cast<std::byte*>(std::aligned_alloc(4096, max_data_length)));
    return buf.get();
}

result<void> write_local(const volume& vol, std::uint64_t offset, std::span<const std::byte> bytes) {
    // O_DIRECT wants an aligned buffer: the caller's if it is one, else a copy.
    if (reinterpret_cast<std::uintptr_t>(bytes.data()) % 4096 == 0) return vol.write_all(offset, bytes);
    auto* b = bounce_buffer();
    std::memcpy(b, bytes.data(), bytes.size());
    return vol.write_all(offset, std::span(b, bytes.size()));
}

}  // namespace

std::string_view to_string(link_state s) noexcept {
    switch (s) {
        case link_state::stopped: return "stopped";
        case link_state::connecting: return "connecting";
        case link_state::handshake: return "handshake";
        case link_state::sync_source: return "sync-source";
        case link_state::sync_target: return "sync-target";
        case link_state::connected: return "connected";
        case link_state::refused: return "refused";
    }
    return "unknown";
}

struct engine::impl {
    engine_config cfg;
    engine_event_fn on_event;
    std::optional<volume> vol;
    std::optional<metadata_file> md;

    // A protocol C writer's wait for its own ack. The engine thread wakes it
    // after letting go of `mu`, so the writer does not wake only to block on the
    // mutex; a writer acknowledged without error returns without taking `mu`.
    // Waiters come from a pool that lives as long as the engine: a wake that
    // lands after its writer returned finds a live object (at worst a spurious
    // wake of the waiter's next user, who checks its state again).
    struct ack_waiter {
        static constexpr std::uint32_t waiting = 0, acked = 1, lost = 2;  // lost: the connection ended first
        std::atomic<std::uint32_t> state{waiting};
        std::uint32_t wait() {
            for (;;) {
                auto v = state.load(std::memory_order_acquire);
                if (v != waiting) return v;
                ::syscall(SYS_futex, &state, FUTEX_WAIT_PRIVATE, waiting, nullptr, nullptr, 0);
            }
        }
        void finish(std::uint32_t how) {
            state.store(how, std::memory_order_release);
            ::syscall(SYS_futex, &state, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
        }
    };
    std::mutex pool_mu;
    std::deque<ack_waiter> waiter_pool;  // never shrinks; under pool_mu
    std::vector<ack_waiter*> free_waiters;
    ack_waiter* take_waiter() {
        std::lock_guard lk(pool_mu);
        ack_waiter* w;
        if (free_waiters.empty()) {
            w = &waiter_pool.emplace_back();
        } else {
            w = free_waiters.back();
            free_waiters.pop_back();
        }
        w->state.store(ack_waiter::waiting, std::memory_order_relaxed);
        return w;
    }
    void give_waiter(ack_waiter* w) {
        std::lock_guard lk(pool_mu);
        free_waiters.push_back(w);
    }

    mutable std::mutex mu;             // everything below up to the send lock
    // A pending write completed. Its own writer waits on the entry's waiter and
    // is woken alone; `acked` is for the rarer waits on the set as a whole (an
    // overlapping write, a flush, protocol A's window, a demotion), and is
    // signalled only while one of them waits.
    std::condition_variable acked;
    unsigned acked_waiters = 0;
    // Waits for `done`, at most `limit` when one is given.
    template <class Pred>
    void wait_acked(std::unique_lock<std::mutex>& lk, Pred done,
                    std::optional<std::chrono::milliseconds> limit = std::nullopt) {
        if (done()) return;
        ++acked_waiters;
        if (limit) acked.wait_for(lk, *limit, done);
        else acked.wait(lk, done);
        --acked_waiters;
    }
    // Written under mu; atomic so that heartbeats read them without the lock
    // (a checkpoint may hold it through an fdatasync).
    std::atomic<link_state> link{link_state::stopped};
    std::atomic<bool> primary{false};
    bool crashed_primary = false;      // md_primary was set at start; kept until the peer is in sync
    std::string peer_name, decision, rule, last_error;
    generation_ids peer_gen;           // from the peer's hello
    bool peer_consistent = false;      // from the peer's hello
    std::optional<dirty_bitmap> redirty;  // sync source: blocks written during the pass
    // The write gate: closed by the sync source for its last pass, so that a
    // stream of application writes cannot keep a resync from ever ending.
    bool gate_closed = false;
    std::condition_variable gate_cv;
    unsigned local_inflight = 0;  // writes marked dirty whose local write is still running
    void open_gate() {
        gate_closed = false;
        gate_cv.notify_all();
    }
    // Fencing (cfg.fencing): writes also wait while fence_pending, set when the
    // primary starts writing without a peer that was in sync; cleared by the
    // caller's peer_fenced() or a connection in sync again.
    std::atomic<bool> fence_pending{false};  // written under mu, read without it
    unsigned writes_held = 0;
    void raise_fence(std::string_view why) {
        if (!cfg.fencing || fence_pending) return;
        fence_pending = true;
        emit("replication.fencing", fmt::format("{}: writes wait until the peer is outdated or lost", why));
    }
    void lower_fence() {
        fence_pending = false;
        gate_cv.notify_all();
    }
    // Holds an application write while the gate is closed or the fence is up;
    // false when the engine stops with the fence still up (the write fails).
    bool hold_writes(std::unique_lock<std::mutex>& lk, bool gate = true) {
        auto clear = [&] { return (!gate || !gate_closed) && (!fence_pending || stopping); };
        if (!clear()) {
            ++writes_held;
            gate_cv.wait(lk, clear);
            --writes_held;
        }
        return !fence_pending;
    }
    // The peer holds what this node holds from here on: writes are replicated as they happen.
    void enter_connected() {
        link = link_state::connected;
        tx_seq = 0;
        lower_fence();
        if (st().flags & md_outdated) {
            st().flags &= ~md_outdated;
            commit_or_log("in sync: no longer outdated");
        }
    }
    struct hot_extent {
        unsigned inflight = 0;
        clock::time_point last{};
    };
    std::map<std::uint64_t, hot_extent> hot;
    struct pending_write {
        std::uint64_t offset = 0;
        std::uint32_t length = 0;
        ack_waiter* writer = nullptr;  // the thread waiting for this ack, if one does
    };
    std::map<std::uint64_t, pending_write> pending;  // seq -> write waiting for the peer's ack
    std::uint64_t tx_seq = 0;
    // sync_done = sync_base + progress.bytes_done; atomics so that sync_permille() takes no lock
    std::atomic<std::uint64_t> sync_base{0}, sync_total{0};
    clock::time_point sync_start{};
    // Progress samples taken when the status is read, for the current rate (the last few seconds).
    mutable std::deque<std::pair<clock::time_point, std::uint64_t>> rate_samples;
    std::uint64_t connections = 0, resync_sent = 0;
    int conn_fd = -1;                 // the live connection, for stop() and a failed send
    std::string drop_reason;          // why this side ended the connection itself
    bool stop_requested = false;

    std::mutex send_mu;               // one frame at a time on the socket
    // Bumped (under send_mu) just before a connection's descriptor is closed:
    // a writer that took the descriptor earlier sends only if it is unchanged,
    // so no frame can go to a closed or reused descriptor.
    std::atomic<std::uint64_t> conn_gen{0};
    // Sends on a live connection that a writer thread took under `mu`.
    void send_if_current(int fd, std::uint64_t gen, std::span<const std::byte> a, std::span<const std::byte> b = {}) {
        std::lock_guard lk(send_mu);
        if (conn_gen != gen) return;  // that connection ended; its writes were marked dirty
        try {
            send_all(fd, a, b);
        } catch (const link_down&) {
            ::shutdown(fd, SHUT_RDWR);  // the engine thread ends the connection and marks the write dirty
        }
    }
    pump_progress progress;
    std::atomic<bool> stopping{false};
    unique_fd wake;                   // eventfd: stop, discard
    unique_fd listener;
    std::thread thread;
    std::vector<std::byte> rx_stream;  // steady state: received frames, handled in place
    std::uint64_t features = 0;       // negotiated with this peer

    // Online verify (under mu): requested by verify(), driven by the engine thread.
    bool verify_requested = false, verify_running = false;
    bool verify_repair = false;  // differing chunks are marked, and a reconnect resends them
    std::uint64_t verify_next = 0, verify_done = 0, verify_total = 0, verify_bad = 0;
    std::optional<digest_request_msg> verify_outstanding;
    std::vector<byte_range> verify_ranges;
    std::byte* verify_buf = nullptr;  // verify_span bytes, aligned

    bool is_primary() {
        std::lock_guard lk(mu);
        return primary;
    }

    // ---- helpers under mu ----------------------------------------------------------------------
    metadata_state& st() { return md->state(); }
    std::uint64_t extent_of(std::uint64_t off) const { return off / extent_bytes; }

    // Commits the state with every hot extent marked, so the committed bitmap
    // covers whatever may be in flight (the activity log).
    result<void> commit_locked() {
        auto& s = st();
        s.flags = (s.flags & ~md_primary) | ((primary || crashed_primary) ? std::uint32_t{md_primary} : 0u);
        if (hot.empty()) return md->commit();
        auto real = s.bitmap;
        for (auto& [e, h] : hot) s.bitmap.mark(e * extent_bytes, extent_bytes);
        auto r = md->commit();
        s.bitmap = std::move(real);
        return r;
    }
    void commit_or_log(std::string_view what) {
        if (auto r = commit_locked(); !r) {
            last_error = fmt::format("committing the metadata ({}): {}", what, r.error().message());
            log::error("replication.metadata", "{}: {}", cfg.metadata_path, last_error);
        }
    }
    // Drops extents idle for hot_idle; returns whether any went (a commit makes it durable).
    bool evict_idle(clock::time_point now) {
        bool any = false;
        for (auto it = hot.begin(); it != hot.end();) {
            if (it->second.inflight == 0 && now - it->second.last >= hot_idle) {
                it = hot.erase(it);
                any = true;
            } else {
                ++it;
            }
        }
        return any;
    }
    // Before a write: its extents become hot, durably, before a byte moves.
    result<void> al_begin(std::uint64_t off, std::uint64_t len) {
        auto now = clock::now();
        bool added = false;
        for (auto e = extent_of(off); e <= extent_of(off + len - 1); ++e) {
            auto [it, fresh] = hot.try_emplace(e);
            it->second.inflight++;
            it->second.last = now;
            added |= fresh;
        }
        if (!added) return {};
        if (hot.size() > max_hot_extents) evict_idle(now + hot_idle);  // anything idle at all
        return commit_locked();
    }
    void al_end(std::uint64_t off, std::uint64_t len) {
        if (len == 0) return;  // a flush
        auto now = clock::now();
        for (auto e = extent_of(off); e <= extent_of(off + len - 1); ++e) {
            auto it = hot.find(e);
            if (it == hot.end()) continue;
            if (it->second.inflight) it->second.inflight--;
            it->second.last = now;
        }
    }
    // The peer will not get these bytes live: the bitmap (and the running pass) must send them.
    void mark_dirty(std::uint64_t off, std::uint64_t len) {
        if (len == 0) return;
        st().bitmap.mark(off, len);
        if (redirty) redirty->mark(off, len);
    }
    // A primary that writes without its peer starts a new generation first (once):
    // at its first write while apart, or when the link ends with writes in flight.
    void diverge_if_primary() {
        auto& g = st().gen;
        if (!primary || g.current == gen_none || g.bitmap != gen_none) return;
        auto fresh = random_generation_id();
        if (!fresh) {
            last_error = "no random generation id: " + fresh.error().message();
            return;
        }
        g = start_divergence(g, *fresh);
        commit_or_log("new generation: writing without the peer");
    }
    bool overlaps_pending(std::uint64_t off, std::uint64_t len) const {
        for (auto& [seq, w] : pending)
            if (w.offset < off + len && off < w.offset + w.length) return true;
        return false;
    }
    // Every write still waiting for the peer completes locally, its blocks dirty.
    void fail_pending() {
        for (auto& [seq, w] : pending) {
            mark_dirty(w.offset, w.length);
            al_end(w.offset, w.length);
            // A write's writer then waits for the fence; a flush completes.
            if (w.writer) w.writer->finish(w.length ? ack_waiter::lost : ack_waiter::acked);
        }
        pending.clear();
        acked.notify_all();
    }

    // One piece of an application write or zero, on the primary: held while the
    // gate or the fence says so, after any piece in flight over the same blocks
    // (both nodes then apply them in the same order), in the activity log; sent
    // to the peer first (`send(fd, seq, gen)`) so that its write and ours
    // overlap, then applied here (`apply()`), then complete under the write
    // protocol. Without a connection in sync its blocks are marked instead.
    // `feature`: what the peer must have negotiated for the piece's frame.
    template <class Send, class Apply>
    result<void> replicate(std::uint64_t off, std::uint32_t len, std::uint64_t feature, Send&& send, Apply&& apply) {
        ack_waiter* waiter = nullptr;  // protocol C: the peer's ack for this piece wakes this thread alone
        std::uint64_t seq = 0, gen = 0;
        int fd = -1;
        {
            std::unique_lock lk(mu);
            if (!hold_writes(lk)) return make_error_code(std::errc::operation_canceled);
            wait_acked(lk, [&] { return !overlaps_pending(off, len); });
            if (!primary) return make_error_code(errc::role_conflict);
            bool live = link == link_state::connected && conn_fd >= 0;
            if (live && (features & feature) != feature) return make_error_code(std::errc::operation_not_supported);
            if (auto al = al_begin(off, len); !al) {
                al_end(off, len);
                return al.error();
            }
            if (live) {
                seq = ++tx_seq;
                fd = conn_fd;
                gen = conn_gen;
                if (cfg.protocol == write_protocol::c) waiter = take_waiter();
                pending[seq] = {off, len, waiter};
            } else {
                diverge_if_primary();  // durable before the first write without the peer
                mark_dirty(off, len);
                if (link == link_state::sync_source) progress.application_wrote(clock::now());  // the resync yields
                ++local_inflight;
            }
        }
        if (fd >= 0) send(fd, seq, gen);
        result<void> local = apply();
        if (waiter) {
            auto how = waiter->wait();
            give_waiter(waiter);
            if (how == ack_waiter::acked) return local;
            // Not acknowledged by the peer (the connection ended): complete only once it is fenced.
            std::unique_lock lk(mu);
            if (!hold_writes(lk, false)) return make_error_code(std::errc::operation_canceled);
            return local;
        }
        std::unique_lock lk(mu);
        if (fd >= 0) {
            wait_acked(lk, [&] { return pending.size() <= cfg.protocol_a_window; });  // protocol A
        } else {
            al_end(off, len);
            if (--local_inflight == 0) gate_cv.notify_all();
        }
        return local;
    }

    // ---- events ----------------------------------------------------------------------------------
    void emit(std::string_view kind, const std::string& detail) {
        if (on_event) on_event(kind, detail);
    }
    void set_link(link_state s) {
        std::lock_guard lk(mu);
        link = s;
    }

    // ---- sockets ---------------------------------------------------------------------------------
    // Waits until `fd` is ready for `events` or the deadline; throws link_down on stop or timeout.
    void wait_fd(int fd, short events, clock::time_point deadline, const char* what) {
        for (;;) {
            if (stopping) throw link_down("stopping");
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
            if (left <= 0) throw link_down(fmt::format("the peer was silent for {} ms ({})", cfg.peer_timeout.count(), what));
            pollfd p[2] = {{fd, events, 0}, {wake.get(), POLLIN, 0}};
            int n = ::poll(p, 2, static_cast<int>(std::min<long>(left, 1000)));
            if (n < 0 && errno != EINTR) throw link_down("poll: " + errno_text());
            if (n > 0 && p[1].revents) drain_wake();  // a nudge (verify, discard); stop is checked above
            if (n > 0 && p[0].revents) return;
        }
    }
    void send_all(int fd, std::span<const std::byte> a, std::span<const std::byte> b = {}) {
        iovec iov[2] = {{const_cast<std::byte*>(a.data()), a.size()}, {const_cast<std::byte*>(b.data()), b.size()}};
        int cnt = b.empty() ? 1 : 2;
        iovec* v = iov;
        auto deadline = clock::now() + cfg.peer_timeout;
        while (cnt > 0) {
            msghdr mh{};
            mh.msg_iov = v;
            mh.msg_iovlen = static_cast<std::size_t>(cnt);
            auto n = ::sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                wait_fd(fd, POLLOUT, deadline, "sending");
                continue;
            }
            if (n < 0) throw link_down("sending to the peer: " + errno_text());
            auto left = static_cast<std::size_t>(n);
            while (cnt > 0 && left >= v->iov_len) {
                left -= v->iov_len;
                ++v;
                --cnt;
            }
            if (cnt > 0) {
                v->iov_base = static_cast<char*>(v->iov_base) + left;
                v->iov_len -= left;
            }
        }
    }
    template <class Enc>
    void send_frame(int fd, Enc&& enc) {
        std::array<std::byte, 256> buf{};
        auto n = enc(std::span(buf));
        if (!n) throw link_down("encoding a frame: " + n.error().message());
        std::lock_guard lk(send_mu);
        send_all(fd, std::span(buf).first(*n));
    }
    // The next whole frame; its payload stays valid until the next call.
    frame recv_frame(int fd, frame_reader& rd, clock::time_point deadline, const char* what) {
        for (;;) {
            wait_fd(fd, POLLIN, deadline, what);
            auto buf = rd.receive_buffer();
            auto n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (n < 0) throw link_down("receiving: " + errno_text());
            if (n == 0) throw link_down("the peer closed the connection");
            auto f = rd.received(static_cast<std::size_t>(n));
            if (!f) throw link_down(fmt::format("a bad frame from the peer ({}); connection dropped", f.error().message()));
            if (*f) {
                if ((*f)->header.type == msg_type::error) {
                    auto e = decode_error((*f)->payload);
                    throw link_refused(fmt::format("the peer refused: {}", e ? std::string(e->text) : "(unreadable)"));
                }
                return **f;
            }
        }
    }
    frame expect(int fd, frame_reader& rd, msg_type t) {
        auto f = recv_frame(fd, rd, clock::now() + cfg.peer_timeout, std::string(to_string(t)).c_str());
        if (f.header.type != t)
            throw link_down(fmt::format("expected {} from the peer, got {}", to_string(t), to_string(f.header.type)));
        return f;
    }
    // Tells the peer why, then ends the connection.
    [[noreturn]] void refuse(int fd, errc code, const std::string& why) {
        try {
            std::array<std::byte, frame_header_size + 4 + max_error_text> buf{};
            if (auto n = encode_error(buf, 0, static_cast<std::uint32_t>(code), why)) {
                std::lock_guard lk(send_mu);
                send_all(fd, std::span(buf).first(*n));
            }
        } catch (const link_down&) {
        }
        throw link_refused(why);
    }

    unique_fd dial() {
        socklen_t plen = 0, llen = 0;
        auto peer = make_addr(cfg.peer_address, cfg.port, plen);
        auto local = make_addr(cfg.local_address, 0, llen);
        if (!peer) throw std::runtime_error("bad peer address " + cfg.peer_address);
        unique_fd fd(::socket(peer->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!fd) throw link_down("socket: " + errno_text());
        int one = 1;
        ::setsockopt(fd.get(), SOL_IP, IP_FREEBIND, &one, sizeof one);
        if (!cfg.bind_device.empty())
            ::setsockopt(fd.get(), SOL_SOCKET, SO_BINDTODEVICE, cfg.bind_device.c_str(),
                         static_cast<socklen_t>(cfg.bind_device.size()));
        if (local && ::bind(fd.get(), reinterpret_cast<sockaddr*>(&*local), llen) != 0)
            throw link_down(fmt::format("binding {}: {}", cfg.local_address, errno_text()));
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&*peer), plen) != 0 && errno != EINPROGRESS)
            throw link_down(fmt::format("connecting to {}:{}: {}", cfg.peer_address, cfg.port, errno_text()));
        wait_fd(fd.get(), POLLOUT, clock::now() + cfg.peer_timeout, "connecting");
        int err = 0;
        socklen_t el = sizeof err;
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) throw link_down(fmt::format("connecting to {}:{}: {}", cfg.peer_address, cfg.port, errno_text(err)));
        return fd;
    }
    void open_listener() {
        socklen_t len = 0;
        auto local = make_addr(cfg.local_address, cfg.port, len);
        if (!local) throw std::runtime_error("bad local address " + cfg.local_address);
        unique_fd fd(::socket(local->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        int one = 1;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        ::setsockopt(fd.get(), SOL_IP, IP_FREEBIND, &one, sizeof one);
        if (!cfg.bind_device.empty())
            ::setsockopt(fd.get(), SOL_SOCKET, SO_BINDTODEVICE, cfg.bind_device.c_str(),
                         static_cast<socklen_t>(cfg.bind_device.size()));
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&*local), len) != 0 || ::listen(fd.get(), 4) != 0)
            throw std::runtime_error(
                fmt::format("listening on {} port {}: {}", cfg.local_address, cfg.port, errno_text()));
        listener = std::move(fd);
    }
    // The next connection from the peer's address; others are closed unread.
    unique_fd accept_peer() {
        for (;;) {
            wait_fd(listener.get(), POLLIN, clock::now() + std::chrono::hours(24 * 365), "listening");
            sockaddr_storage from{};
            socklen_t fl = sizeof from;
            unique_fd fd(::accept4(listener.get(), reinterpret_cast<sockaddr*>(&from), &fl, SOCK_CLOEXEC | SOCK_NONBLOCK));
            if (!fd) continue;
            char text[INET6_ADDRSTRLEN] = {};
            if (from.ss_family == AF_INET)
                ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&from)->sin_addr, text, sizeof text);
            else
                ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&from)->sin6_addr, text, sizeof text);
            if (cfg.peer_address == text) return fd;
            log::warning("replication.stranger", "closed a connection to port {} from {}, which is not the peer ({})",
                         cfg.port, text, cfg.peer_address);
        }
    }

    // ---- the connection --------------------------------------------------------------------------
    void run();
    void serve(int fd);
    sync_decision handshake(int fd, frame_reader& rd, std::uint64_t& size);
    void send_bitmap(int fd, const dirty_bitmap& plan, std::uint64_t size);
    void exchange_bitmaps(int fd, frame_reader& rd, std::uint64_t size, dirty_bitmap& plan);
    void resync_source(int fd, std::uint64_t size, dirty_bitmap plan);
    void resync_target(int fd, std::uint64_t size, const dirty_bitmap& plan);
    void steady(int fd, std::uint64_t size);
    std::vector<std::uint64_t> local_digests(const digest_request_msg& m);
    void verify_step(int fd, std::uint64_t size, std::uint64_t& seq);
    void verify_reply(const digest_reply_msg& m);
    void reply_digests(int fd, std::span<const std::byte> payload, std::uint64_t size, std::uint64_t seq);
    void compare_digests(int fd, frame_reader& rd, std::uint64_t size, dirty_bitmap& plan);
    void serve_digests(int fd, frame_reader& rd, std::uint64_t size, dirty_bitmap& plan);
    ~impl() { std::free(verify_buf); }
    void on_connection_end();
    // Wakes the engine thread from any wait (stop, discard, verify).
    void nudge() {
        std::uint64_t one = 1;
        if (wake) (void)!::write(wake.get(), &one, sizeof one);
    }
    void drain_wake() {
        std::uint64_t v;
        (void)!::read(wake.get(), &v, sizeof v);
    }
    void wait_wake(std::chrono::milliseconds d) {
        pollfd p{wake.get(), POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(d.count()));
        if (p.revents) drain_wake();
    }
};

// ---- handshake ---------------------------------------------------------------------------------

sync_decision engine::impl::handshake(int fd, frame_reader& rd, std::uint64_t& size) {
    hello mine;
    mine.node_name = cfg.node_name;
    mine.volume_size = vol->size();
    mine.block_size = vol->logical_block();
    mine.features = feat_verify | feat_digest_resync | feat_resend | feat_zero;
    sync_party me;
    {
        std::lock_guard lk(mu);
        mine.gen = st().gen;
        auto bit = [](bool on, std::uint32_t flag) { return on ? flag : 0u; };
        mine.flags = bit(primary, hello_primary) | bit(st().flags & md_consistent, hello_consistent) |
                     bit(crashed_primary, hello_crashed_primary) | bit(st().flags & md_split_brain, hello_split_brain) |
                     bit(primary && st().gen.bitmap == gen_none && st().bitmap.dirty_bytes() > 0, hello_resend);
        me = {st().gen, primary, (st().flags & md_consistent) != 0, crashed_primary};
    }
    send_frame(fd, [&](std::span<std::byte> b) { return encode_hello(b, 1, mine); });
    auto hf = expect(fd, rd, msg_type::hello);
    auto theirs = decode_hello(hf.payload);
    if (!theirs) throw link_down("a bad hello from the peer: " + theirs.error().message());
    hello peer = *theirs;
    auto neg = negotiate(mine, peer);
    if (!neg) {
        refuse(fd, static_cast<errc>(neg.error().value()),
               fmt::format("pairing refused: {} (local {} bytes, block {}; peer {} bytes, block {})",
                           neg.error().message(), mine.volume_size, mine.block_size, peer.volume_size, peer.block_size));
    }
    // Mutual authentication: nothing of the peer's hello is acted on before it.
    auto nonce = random_nonce();
    if (!nonce) throw link_down("no random nonce: " + nonce.error().message());
    send_frame(fd, [&](std::span<std::byte> b) { return encode_auth_challenge(b, 2, *nonce); });
    auto cf = expect(fd, rd, msg_type::auth_challenge);
    auto their_nonce = decode_auth_challenge(cf.payload);
    if (!their_nonce) throw link_down("a bad challenge: " + their_nonce.error().message());
    auto my_role = cfg.dialer ? auth_role::connector : auth_role::acceptor;
    auto their_role = cfg.dialer ? auth_role::acceptor : auth_role::connector;
    auto mac = make_auth_response(cfg.key, my_role, *their_nonce, *nonce);
    send_frame(fd, [&](std::span<std::byte> b) { return encode_auth_response(b, 3, mac); });
    auto rf = expect(fd, rd, msg_type::auth_response);
    auto their_mac = decode_auth_response(rf.payload);
    if (!their_mac || !check_auth_response(cfg.key, their_role, *nonce, *their_nonce, *their_mac))
        refuse(fd, errc::auth_failed, "authentication failed: the peer does not hold this cluster's key");
    send_frame(fd, [&](std::span<std::byte> b) { return encode_auth_ok(b, 4); });
    expect(fd, rd, msg_type::auth_ok);

    std::unique_lock lk(mu);
    peer_name = peer.node_name;
    peer_gen = peer.gen;
    peer_consistent = peer.flags & hello_consistent;
    features = neg->features;
    ++connections;
    sync_party them{peer.gen, (peer.flags & hello_primary) != 0, (peer.flags & hello_consistent) != 0,
                    (peer.flags & hello_crashed_primary) != 0};
    // Both sides read the flag only when both offer it, so both decide alike.
    me.resend = (features & feat_resend) && (mine.flags & hello_resend);
    them.resend = (features & feat_resend) && (peer.flags & hello_resend);
    sync_verdict v;
    if (me.gen.current == gen_none && them.gen.current == gen_none) {
        // A new cluster: the dialer (the primary-role node) holds the first copy.
        if (cfg.dialer) {
            auto id = random_generation_id();
            if (!id) throw link_down("no random generation id");
            st().gen.current = *id;
            st().flags |= md_consistent;
            commit_or_log("first copy of a new cluster");
            v = {sync_decision::full_source, "new cluster: the primary holds the first copy"};
        } else {
            v = {sync_decision::full_target, "new cluster: the primary holds the first copy"};
        }
    } else {
        v = decide_sync(me, them);
    }
    bool is_source = v.decision == sync_decision::full_source || v.decision == sync_decision::bitmap_source;
    bool is_target = v.decision == sync_decision::full_target || v.decision == sync_decision::bitmap_target;
    // A recorded split brain holds until the operator discards one side: the side
    // that discarded is fresh, which is how this side learns it was resolved.
    bool recorded = (st().flags & md_split_brain) || (peer.flags & hello_split_brain);
    if (recorded && !(is_source && them.gen.current == gen_none) && !(is_target && me.gen.current == gen_none))
        v = {sync_decision::split_brain, "a split brain is recorded and not yet resolved"};
    decision = std::string(to_string(v.decision));
    rule = std::string(v.rule);
    if (v.decision == sync_decision::split_brain || v.decision == sync_decision::unrelated) {
        bool first = !(st().flags & md_split_brain);  // announced once, not at every retry
        st().flags |= md_split_brain;
        commit_or_log("split brain");
        link = link_state::refused;
        auto why = fmt::format("{} with {}: {}; replication stopped. Choose the node whose data is discarded and run "
                               "'tandemctl discard-local' there",
                               decision, peer.node_name, rule);
        lk.unlock();
        if (first) emit("replication.split_brain", why);
        refuse(fd, errc::role_conflict, why);
    }
    if (v.decision == sync_decision::no_consistent_source) {
        lk.unlock();
        refuse(fd, errc::bad_field, fmt::format("no consistent data to synchronize from ({})", v.rule));
    }
    if (st().flags & md_split_brain) {
        st().flags &= ~md_split_brain;
        commit_or_log("split brain resolved");
    }
    // The replicated size is the source's; the seeds: the target must be at least as large.
    std::uint64_t src = is_target ? peer.volume_size : mine.volume_size;
    std::uint64_t dst = is_target ? mine.volume_size : peer.volume_size;
    if ((is_source || is_target) && dst < src) {
        lk.unlock();
        refuse(fd, errc::volume_too_small,
               fmt::format("the sync target's volume ({} bytes) is smaller than the source's ({} bytes); give the "
                           "secondary a /store at least as large as the primary's",
                           dst, src));
    }
    size = is_source || is_target ? src : std::min(mine.volume_size, peer.volume_size);
    return v.decision;
}

// The bitmap's words for the first `size` bytes of the volume, as bitmap_chunk frames.
void engine::impl::send_bitmap(int fd, const dirty_bitmap& plan, std::uint64_t size) {
    const std::uint64_t blocks = (size + plan.granularity() - 1) / plan.granularity();
    const std::uint64_t words = (blocks + 63) / 64;
    std::vector<std::byte> buf(frame_header_size + bitmap_chunk_header_size + 8 * max_bitmap_words);
    auto all = plan.words();
    for (std::uint64_t w = 0; w < words; w += max_bitmap_words) {
        auto n = std::min<std::uint64_t>(max_bitmap_words, words - w);
        std::vector<std::uint64_t> chunk(all.begin() + static_cast<std::ptrdiff_t>(w),
                                         all.begin() + static_cast<std::ptrdiff_t>(w + n));
        if (w + n == words && blocks % 64) chunk.back() &= (1ull << (blocks % 64)) - 1;  // past the replicated size
        auto len = encode_bitmap_chunk(buf, 0, w * 64, chunk);
        if (!len) throw link_down("encoding the bitmap: " + len.error().message());
        std::lock_guard lk(send_mu);
        send_all(fd, std::span(buf).first(*len));
    }
}

// The dialer sends first and the acceptor answers, so neither blocks on a full socket.
void engine::impl::exchange_bitmaps(int fd, frame_reader& rd, std::uint64_t size, dirty_bitmap& plan) {
    const auto gran = plan.granularity();
    const std::uint64_t blocks = (size + gran - 1) / gran;
    const std::uint64_t words = (blocks + 63) / 64;
    auto send = [&] { send_bitmap(fd, plan, size); };
    auto receive = [&] {
        for (std::uint64_t w = 0; w < words;) {
            auto f = expect(fd, rd, msg_type::bitmap_chunk);
            auto c = decode_bitmap_chunk(f.payload, blocks);
            if (!c || c->start_block != w * 64)
                throw link_down("a bad bitmap chunk from the peer: " + (c ? std::string("out of order") : c.error().message()));
            auto host = c->to_words();
            if (auto m = plan.merge_words(c->start_block, host); !m)
                throw link_down("merging the peer's bitmap: " + m.error().message());
            w += host.size();
        }
    };
    if (cfg.dialer) {
        send();
        receive();
    } else {
        receive();
        send();
    }
}

// ---- resync ------------------------------------------------------------------------------------

void engine::impl::resync_source(int fd, std::uint64_t size, dirty_bitmap plan) {
    system_steady_clock clk;
    {
        std::lock_guard lk(mu);
        redirty = dirty_bitmap::make(st().volume_size, st().granularity).value();
        link = link_state::sync_source;
        sync_base = 0;
        sync_total = 0;
        for (auto r = plan.next_run(0); r && r->offset < size; r = plan.next_run(r->offset + r->length))
            sync_total += std::min(size, r->offset + r->length) - r->offset;
        sync_start = clock::now();
        progress.bytes_done = 0;
    }
    emit("replication.sync_started",
         fmt::format("resynchronizing {} to {}: {} bytes ({})", cfg.node_name, peer_name, sync_total.load(), decision));
    for (int pass = 1;; ++pass) {
        pump_options o;
        o.end = size;
        o.plan = &plan;
        o.stall = cfg.peer_timeout;
        progress.stop = false;
        auto r = pump_source(*vol, fd, o, progress, clk);
        std::unique_lock lk(mu);
        resync_sent += r.bytes;
        if (!r.ok()) throw link_down("resync: " + r.error);
        sync_base += r.bytes;
        progress.bytes_done = 0;
        // Writes during a pass dirty blocks for the next one. Once what is left
        // takes about 100 ms to send (or after a few passes), the last pass runs
        // with application writes held at the gate: it then ends with nothing
        // re-dirtied, and the held writes go to the peer live.
        auto left = redirty->dirty_bytes();
        if (left && !gate_closed && (left <= std::max<std::uint64_t>(1 << 20, progress.rate_bps / 10) || pass >= 8)) {
            gate_closed = true;
            gate_cv.wait(lk, [&] { return local_inflight == 0; });
            left = redirty->dirty_bytes();
        }
        if (left == 0) {
            // The last pass: from here on writes go to the peer as they happen,
            // after the resync_done frame in the same stream.
            // Every bit the bitmap had when the passes began, and every bit set
            // since, has now been sent and acknowledged; the target's own
            // bitmap still covers anything its disk has not made durable.
            redirty.reset();
            st().bitmap.clear_all();
            resync_done_msg m{finish_resync_source(st().gen)};
            enter_connected();
            lk.unlock();
            send_frame(fd, [&](std::span<std::byte> b) { return encode_resync_done(b, 0, m); });
            lk.lock();
            open_gate();
            return;
        }
        // Blocks written during the pass go in another one.
        plan = std::move(*redirty);
        redirty = dirty_bitmap::make(st().volume_size, st().granularity).value();
        sync_total += plan.dirty_bytes();
    }
}

void engine::impl::resync_target(int fd, std::uint64_t size, const dirty_bitmap& plan) {
    {
        std::lock_guard lk(mu);
        link = link_state::sync_target;
        sync_base = 0;
        sync_total = plan.dirty_bytes();
        sync_start = clock::now();
        progress.bytes_done = 0;
    }
    emit("replication.sync_started",
         fmt::format("receiving a resync from {}: {} bytes ({})", peer_name, sync_total.load(), decision));
    auto last_checkpoint = clock::now();
    int checkpoints = 0;
    pump_options o;
    o.end = size;
    o.stall = cfg.peer_timeout;
    o.until_done = true;
    o.on_durable = [&](std::uint64_t off, std::uint32_t len) {
        std::lock_guard lk(mu);
        st().bitmap.clear(off, len);
        if (clock::now() - last_checkpoint >= checkpoint_every) {
            // The blocks must be durable before the bits saying so are.
            if (::fdatasync(vol->fd()) == 0) commit_or_log("resync checkpoint");
            last_checkpoint = clock::now();
            // The first checkpoint of a resync, then every tenth: progress is in status, not the event stream.
            if (checkpoints++ % 10 == 0)
                emit("replication.checkpoint", fmt::format("{} of {} bytes durable", progress.bytes_done.load(), sync_total.load()));
        }
    };
    auto r = pump_target(*vol, fd, o, progress);
    if (!r.ok() || !r.done) {
        std::lock_guard lk(mu);
        if (::fdatasync(vol->fd()) == 0) commit_or_log("resync interrupted");
        throw link_down("resync: " + (r.ok() ? std::string("ended without its end frame") : r.error));
    }
    if (::fdatasync(vol->fd()) != 0) throw link_down("flushing the volume: " + errno_text());
    {
        std::lock_guard lk(mu);
        st().gen = r.done->gen;
        st().flags = (st().flags | md_consistent) & ~md_resync_target;
        st().bitmap.clear_all();
        crashed_primary = false;
        commit_or_log("resync finished");
        enter_connected();
    }
    send_frame(fd, [&](std::span<std::byte> b) { return encode_resync_done(b, 0, *r.done); });
    emit("replication.sync_done", fmt::format("in sync with {}: received {} bytes", peer_name, r.bytes));
}

// ---- steady state ------------------------------------------------------------------------------

void engine::impl::steady(int fd, std::uint64_t size) {
    const auto ping_every = std::max(cfg.peer_timeout / 4, std::chrono::milliseconds(50));
    auto last_rx = clock::now();
    auto next_ping = last_rx + ping_every;
    std::uint64_t my_seq = 1u << 30;  // pings and acks from this thread; app writes use tx_seq
    // When the connection ends, the ring's destructor waits for the peer's writes
    // still in flight; their acks are not sent, and the peer marks those blocks dirty.
    auto ring = steady_ring::create(vol->fd(), apply_depth);
    if (!ring) throw link_down("setting up the io_uring for the peer's writes: " + ring.error().message());
    auto& q = **ring;
    // Frames arrive into one stream buffer, up to stream_recv bytes per recv,
    // and are handled in place; it holds two whole frames, so the tail of a
    // partial one always fits after it is moved to the front. A data frame
    // with at least direct_min bytes still to come has the rest of its payload
    // received straight into its write's slot instead (`direct`): large writes
    // are not copied from the stream buffer.
    constexpr std::size_t stream_recv = 64 * 1024, direct_min = 32 * 1024;
    if (rx_stream.size() < 2 * max_frame_size) rx_stream.resize(2 * max_frame_size);
    std::size_t head = 0, tail = 0;
    struct {
        bool on = false;
        data_msg d;                  // d.bytes: the slot, once all of it arrived
        std::span<std::byte> into;   // the reserved slot's buffer
        std::size_t got = 0;
    } direct;
    std::string closed;  // why the stream ended, once what came before it is handled
    std::vector<std::byte> out;  // acks and pongs of this turn, sent together
    out.reserve(64 * 64);
    auto append = [&](auto&& enc) {
        std::size_t at = out.size();
        out.resize(at + 64);
        auto n = enc(std::span(out).subspan(at));
        if (!n) throw link_down("encoding a frame: " + n.error().message());
        out.resize(at + *n);
    };
    std::string disk_failed;  // why this node's copy stopped being whole
    auto on_applied = [&](const applied& a) {
        ack_status status = ack_status::ok;
        if (a.error) {
            status = ack_status::io_error;
            std::lock_guard lk(mu);
            last_error = a.flush ? fmt::format("flushing {}: {}", cfg.device, errno_text(a.error))
                                 : fmt::format("writing {} at {}: {}", cfg.device, a.offset,
                                               a.error == ENOSPC ? "short write (a full disk?)" : errno_text(a.error));
            log::error("replication.write_failed", "{}", last_error);
            // This copy now lacks a write the primary has: it must never be
            // promoted as it is. It becomes a resync target with that block
            // dirty (whether or not the ack reaches the peer), and the
            // connection ends, so the next one resyncs it or reports again.
            if (!a.flush) st().bitmap.mark(a.offset, a.length);
            st().flags = (st().flags | md_resync_target) & ~md_consistent;
            commit_or_log("a write from the peer failed");
            if (disk_failed.empty()) disk_failed = "the local disk failed a write from the peer: " + last_error;
        }
        append([&](std::span<std::byte> b) {
            return a.flush ? encode_flush_ack(b, ++my_seq, ack_msg{a.seq, status})
                           : encode_data_ack(b, ++my_seq, ack_msg{a.seq, status});
        });
    };
    auto handle = [&](const frame& f) {
        switch (f.header.type) {
            case msg_type::ping: {
                auto m = decode_ping(f.payload);
                if (!m) throw link_down("a bad ping");
                append([&](std::span<std::byte> b) { return encode_pong(b, ++my_seq, *m); });
                break;
            }
            case msg_type::pong:
                break;
            case msg_type::data: {
                auto d = decode_data(f.payload, size);
                if (!d) throw link_down("a bad data frame: " + d.error().message() + "; nothing of it was written");
                if (!verify_data(*d)) throw link_down(fmt::format("bad checksum in the write at {}; nothing of it was written", d->offset));
                if (is_primary()) {  // two writers: never apply
                    append([&](std::span<std::byte> b) {
                        return encode_data_ack(b, ++my_seq, ack_msg{f.header.seq, ack_status::refused});
                    });
                    break;
                }
                if (auto r = q.write(f.header.seq, d->offset, d->bytes, d->flags, on_applied); !r)
                    throw link_down("queueing the peer's write: " + r.error().message());
                break;
            }
            case msg_type::zero: {
                auto z = decode_zero(f.payload, size);
                if (!z) throw link_down("a bad zero frame: " + z.error().message() + "; nothing of it was applied");
                if (is_primary()) {
                    append([&](std::span<std::byte> b) {
                        return encode_data_ack(b, ++my_seq, ack_msg{f.header.seq, ack_status::refused});
                    });
                    break;
                }
                // After every write queued before it (rare enough to wait for all),
                // and before any after it: then the two copies agree.
                q.drain(on_applied);
                auto r = vol->zero(z->offset, z->length);
                on_applied(applied{f.header.seq, false, r ? 0 : r.error().value(), z->offset, z->length});
                break;
            }
            case msg_type::flush:
                if (auto r = q.flush(f.header.seq, on_applied); !r)
                    throw link_down("queueing the peer's flush: " + r.error().message());
                break;
            case msg_type::data_ack:
            case msg_type::flush_ack: {
                auto a = f.header.type == msg_type::data_ack ? decode_data_ack(f.payload) : decode_flush_ack(f.payload);
                if (!a) throw link_down("a bad acknowledgement");
                std::unique_lock lk(mu);
                auto it = pending.find(a->seq);
                if (it == pending.end()) throw link_down(fmt::format("an acknowledgement for write {} that was never sent", a->seq));
                if (a->status != ack_status::ok) {
                    // The peer did not write it: the block stays dirty for the next resync.
                    mark_dirty(it->second.offset, it->second.length);
                    last_error = fmt::format("the peer could not write at {}: {}", it->second.offset, to_string(a->status));
                    log::error("replication.peer_write_failed", "{}", last_error);
                }
                al_end(it->second.offset, it->second.length);
                auto* waiter = it->second.writer;
                pending.erase(it);
                if (acked_waiters) acked.notify_all();
                lk.unlock();
                if (waiter) waiter->finish(ack_waiter::acked);  // after the unlock: it need not wait for `mu`
                break;
            }
            case msg_type::digest_request:
                reply_digests(fd, f.payload, size, ++my_seq);
                break;
            case msg_type::digest_reply: {
                auto m = decode_digest_reply(f.payload, size);
                if (!m) throw link_down("a bad digest reply: " + m.error().message());
                verify_reply(*m);
                break;
            }
            case msg_type::resync_done: {
                auto m = decode_resync_done(f.payload);
                if (!m) throw link_down("a bad end-of-resync frame");
                {
                    std::lock_guard lk(mu);
                    // The target took the ids the resync ended with. Rotate to them
                    // only if ours did not move on since (a promotion in between
                    // started a new generation whose bitmap id is already the
                    // target's current; rotating would hide it in history and
                    // turn the next bitmap resync into a full one).
                    if (st().gen.current == m->gen.current) st().gen = m->gen;
                    crashed_primary = false;
                    commit_or_log("resync finished");
                }
                emit("replication.sync_done", fmt::format("{} is in sync: sent {} bytes", peer_name, sync_base.load()));
                break;
            }
            default:
                throw link_down(fmt::format("an unexpected {} frame in the connected state", to_string(f.header.type)));
        }
    };
    // Every whole frame received so far (the writes they queue go in one submit);
    // then, if the partial frame after them is a large write, its slot is
    // reserved and the payload goes there.
    auto handle_stream = [&] {
        while (tail - head >= frame_header_size) {
            auto h = decode_frame_header(std::span(rx_stream).subspan(head, frame_header_size));
            if (!h) throw link_down(fmt::format("a bad frame from the peer ({}); connection dropped", h.error().message()));
            std::size_t have = tail - head, whole = frame_header_size + h->length;
            if (have >= whole) {
                handle(frame{*h, std::span<const std::byte>(rx_stream).subspan(head + frame_header_size, h->length)});
                head += whole;
                continue;
            }
            if (h->type != msg_type::data || whole - have < direct_min || have < frame_header_size + data_header_size)
                break;
            if (is_primary()) break;  // refused once whole, in handle()
            auto d = decode_data_header(std::span(rx_stream).subspan(head + frame_header_size, data_header_size),
                                        h->length, size);
            if (!d) throw link_down("a bad data frame: " + d.error().message() + "; nothing of it was written");
            auto slot = q.reserve(h->seq, d->offset, d->length, d->flags, on_applied);
            if (!slot) throw link_down("queueing the peer's write: " + slot.error().message());
            std::size_t start = head + frame_header_size + data_header_size;
            std::memcpy(slot->data(), rx_stream.data() + start, tail - start);
            direct.on = true;
            direct.d = *d;
            direct.into = *slot;
            direct.got = tail - start;
            head = tail;
            break;
        }
        if (head == tail) head = tail = 0;
    };
    for (;;) {
        if (stopping) throw link_down("stopping");
        auto now = clock::now();
        if (now >= next_ping) {
            append([&](std::span<std::byte> b) { return encode_ping(b, ++my_seq, ping_msg{monotonic_ns()}); });
            next_ping = now + ping_every;
            std::lock_guard lk(mu);
            if (evict_idle(now)) commit_or_log("activity log");
        }
        if (now - last_rx > cfg.peer_timeout)
            throw link_down(fmt::format("the peer was silent for {} ms", cfg.peer_timeout.count()));
        verify_step(fd, size, my_seq);

        if (!closed.empty()) throw link_down(closed);
        if (!out.empty()) {
            std::lock_guard lk(send_mu);
            send_all(fd, out);
            out.clear();
        }

        // One wait for everything: the socket, the wake eventfd, the listener (a
        // stale connection) and the writes in flight.
        q.watch(fd, 0);
        q.watch(wake.get(), 1);
        if (listener) q.watch(listener.get(), 2);
        auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_ping - clock::now());
        if (auto r = q.wait(std::max(wait, std::chrono::milliseconds(1))); !r)
            throw link_down("waiting on the io_uring: " + r.error().message());
        q.reap(on_applied);
        if (!disk_failed.empty()) {
            if (!out.empty()) {  // the failed write's io_error ack: the peer marks the block too
                std::lock_guard lk(send_mu);
                send_all(fd, out);
            }
            throw link_down(disk_failed);
        }
        auto ready = q.take_ready();
        if (ready & 2) drain_wake();
        if (ready & 4) throw link_down("the peer connected again; this connection is stale");
        if (!(ready & 1)) continue;
        // As much as has arrived, in a few system calls at most.
        for (int i = 0; i < 8; ++i) {
            std::span<std::byte> to;
            if (direct.on) {
                to = direct.into.subspan(direct.got);
            } else {
                if (head > 0 && rx_stream.size() - tail < max_frame_size) {
                    std::memmove(rx_stream.data(), rx_stream.data() + head, tail - head);
                    tail -= head;
                    head = 0;
                }
                to = std::span(rx_stream).subspan(tail, std::min(stream_recv, rx_stream.size() - tail));
            }
            auto got = ::recv(fd, to.data(), to.size(), MSG_DONTWAIT);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) break;
            if (got <= 0) {  // the frames that came before the end are handled first
                closed = got == 0 ? "the peer closed the connection" : "receiving: " + errno_text();
                break;
            }
            last_rx = clock::now();
            if (!direct.on) {
                tail += static_cast<std::size_t>(got);
                handle_stream();
                continue;
            }
            direct.got += static_cast<std::size_t>(got);
            if (direct.got < direct.into.size()) continue;
            direct.on = false;
            direct.d.bytes = direct.into;
            if (!verify_data(direct.d)) {
                q.cancel();
                throw link_down(fmt::format("bad checksum in the write at {}; nothing of it was written", direct.d.offset));
            }
            q.commit();
        }
    }
}

// ---- online verify -----------------------------------------------------------------------------

std::vector<std::uint64_t> engine::impl::local_digests(const digest_request_msg& m) {
    if (!verify_buf) verify_buf = static_cast<std::byte*>(std::aligned_alloc(4096, verify_span));
    std::vector<std::uint64_t> d;
    auto n = ::pread(vol->fd(), verify_buf, m.length, static_cast<off_t>(m.offset));
    if (n != static_cast<ssize_t>(m.length))
        throw link_down(fmt::format("reading {} at {} for verify: {}", cfg.device, m.offset,
                                    n < 0 ? errno_text() : "short read"));
    for (std::uint64_t off = 0; off < m.length; off += m.chunk_size) {
        auto len = std::min<std::uint64_t>(m.chunk_size, m.length - off);
        d.push_back(data_checksum(std::span<const std::byte>(verify_buf + off, len)));
    }
    return d;
}

// Sends the next digest request when none is outstanding.
void engine::impl::verify_step(int fd, std::uint64_t size, std::uint64_t& seq) {
    digest_request_msg m;
    {
        std::lock_guard lk(mu);
        if (verify_requested) {
            verify_requested = false;
            verify_running = true;
            verify_next = verify_done = verify_bad = 0;
            verify_total = size;
            verify_ranges.clear();
            verify_outstanding.reset();
        }
        if (!verify_running || verify_outstanding) return;
        if (verify_next >= size) {
            verify_running = false;
            std::string list;
            for (auto& r : verify_ranges) list += fmt::format(" {}+{}", r.offset, r.length);
            auto text = verify_bad == 0
                            ? fmt::format("verify finished: {} bytes compared with {}, no difference", size, peer_name)
                            : fmt::format("verify finished: {} bytes differ from {} in {} range(s) (offset+length):{}{}",
                                          verify_bad, peer_name, verify_ranges.size(), list,
                                          verify_ranges.size() >= max_reported_mismatches ? " ..." : "");
            if (verify_repair && verify_bad > 0) {
                // The marks are durable before the reconnect that sends them; the
                // hello then asks for a bitmap resync on the same generation.
                if (primary) {
                    commit_or_log("verify: differing blocks marked for resend");
                    drop_reason = fmt::format("verify: reconnecting to resend the {} bytes that differ", verify_bad);
                    ::shutdown(fd, SHUT_RDWR);
                    text += fmt::format("; resending them to {} (a bitmap resync follows)", peer_name);
                } else {
                    text += "; not repaired: this node is no longer primary";
                }
            }
            emit("replication.verify_done", text);
            return;
        }
        m.offset = verify_next;
        m.length = static_cast<std::uint32_t>(std::min<std::uint64_t>(verify_span, size - verify_next));
        m.chunk_size = verify_chunk;
        verify_outstanding = m;
        verify_next += m.length;
    }
    send_frame(fd, [&](std::span<std::byte> b) { return encode_digest_request(b, ++seq, m); });
}

void engine::impl::verify_reply(const digest_reply_msg& m) {
    std::optional<digest_request_msg> want;
    {
        std::lock_guard lk(mu);
        want = verify_outstanding;
    }
    if (!want || want->offset != m.offset || want->length != m.length || want->chunk_size != m.chunk_size)
        throw link_down("a digest reply for a range that was not asked for");
    auto mine = local_digests(*want);
    std::lock_guard lk(mu);
    for (std::size_t i = 0; i < mine.size(); ++i) {
        if (mine[i] == m.digest(i)) continue;
        std::uint64_t off = m.offset + i * m.chunk_size;
        std::uint64_t len = std::min<std::uint64_t>(m.chunk_size, m.offset + m.length - off);
        verify_bad += len;
        if (verify_repair) mark_dirty(off, len);
        if (!verify_ranges.empty() && verify_ranges.back().offset + verify_ranges.back().length == off)
            verify_ranges.back().length += len;
        else if (verify_ranges.size() < max_reported_mismatches)
            verify_ranges.push_back({off, len});
        log::warning("replication.verify_mismatch", "{} differs from {} at {}+{}", cfg.device, peer_name, off, len);
    }
    verify_done += m.length;
    verify_outstanding.reset();
}

void engine::impl::reply_digests(int fd, std::span<const std::byte> payload, std::uint64_t size, std::uint64_t seq) {
    auto m = decode_digest_request(payload, size);
    if (!m || m->length > verify_span || m->chunk_size % wire_sector || m->offset % wire_sector)
        throw link_down("a bad digest request");
    auto d = local_digests(*m);
    std::vector<std::byte> out(frame_header_size + digest_header_size + 8 * d.size());
    auto len = encode_digest_reply(out, seq, *m, d);
    if (!len) throw link_down("encoding digests: " + len.error().message());
    std::lock_guard lk(send_mu);
    send_all(fd, std::span(out).first(*len));
}

// ---- checksum-based resync -----------------------------------------------------------------------
// A full resync into a node that holds a consistent copy (an old snapshot, a
// peer that moved on past its bitmap): no bitmap says what differs, so the
// source compares digests of every 4 KiB chunk first and sends only the chunks
// that differ, plus its own dirty bits. The source then sends the plan as
// bitmap chunks; the target takes it as its bitmap.

void engine::impl::compare_digests(int fd, frame_reader& rd, std::uint64_t size, dirty_bitmap& plan) {
    std::uint64_t seq = 1u << 20;
    for (std::uint64_t off = 0; off < size; off += verify_span) {
        digest_request_msg m{off, static_cast<std::uint32_t>(std::min<std::uint64_t>(verify_span, size - off)),
                             verify_chunk};
        send_frame(fd, [&](std::span<std::byte> b) { return encode_digest_request(b, ++seq, m); });
        auto f = expect(fd, rd, msg_type::digest_reply);
        auto r = decode_digest_reply(f.payload, size);
        if (!r || r->offset != m.offset || r->length != m.length || r->chunk_size != m.chunk_size)
            throw link_down("a bad digest reply during the checksum comparison");
        auto mine = local_digests(m);
        for (std::size_t i = 0; i < mine.size(); ++i)
            if (mine[i] != r->digest(i))
                plan.mark(off + i * verify_chunk, std::min<std::uint64_t>(verify_chunk, m.length - i * verify_chunk));
    }
    send_bitmap(fd, plan, size);
}

void engine::impl::serve_digests(int fd, frame_reader& rd, std::uint64_t size, dirty_bitmap& plan) {
    const std::uint64_t blocks = (size + plan.granularity() - 1) / plan.granularity();
    const std::uint64_t words = (blocks + 63) / 64;
    std::uint64_t seq = 1u << 20, got = 0;
    while (got < words) {
        auto f = recv_frame(fd, rd, clock::now() + cfg.peer_timeout, "checksum comparison");
        if (f.header.type == msg_type::digest_request) {
            reply_digests(fd, f.payload, size, ++seq);
            continue;
        }
        if (f.header.type != msg_type::bitmap_chunk)
            throw link_down(fmt::format("expected digest requests or the plan, got {}", to_string(f.header.type)));
        auto c = decode_bitmap_chunk(f.payload, blocks);
        if (!c || c->start_block != got * 64) throw link_down("a bad plan chunk from the peer");
        auto host = c->to_words();
        if (auto m = plan.merge_words(c->start_block, host); !m) throw link_down("merging the plan: " + m.error().message());
        got += host.size();
    }
}

void engine::impl::serve(int fd) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // A peer that vanishes (cut link, powered off) while this side only
    // receives is found by keepalive probes; unacknowledged data by the user
    // timeout. Both within about peer_timeout.
    int secs = static_cast<int>(std::max<long>(1, cfg.peer_timeout.count() / 1000));
    int idle = std::max(1, secs / 2), intvl = 1, cnt = std::max(1, secs - idle);
    unsigned user_ms = static_cast<unsigned>(cfg.peer_timeout.count());
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms, sizeof user_ms);
    frame_reader rd;
    set_link(link_state::handshake);
    std::uint64_t size = 0;
    auto d = handshake(fd, rd, size);
    bool source = d == sync_decision::full_source || d == sync_decision::bitmap_source;
    bool target = d == sync_decision::full_target || d == sync_decision::bitmap_target;
    {
        std::lock_guard lk(mu);
        conn_fd = fd;
        if (!source && !target) {
            // Nothing to send: settle a source that stopped between the two
            // end-of-resync commits. Connected (and no longer outdated) before
            // the event below: its handlers read the status once, and no later
            // event (no resync) would tell them again.
            st().gen = settle_after_none(st().gen, peer_gen);
            crashed_primary = false;
            commit_or_log("in sync");
            enter_connected();
        }
    }
    emit("replication.connected", fmt::format("connected to {} ({}:{}); sync decision {} ({})", peer_name,
                                              cfg.peer_address, cfg.port, decision, rule));
    if (source || target) {
        dirty_bitmap plan;
        bool by_digest;
        {
            std::lock_guard lk(mu);
            auto& s = st();
            // Both sides reach the same answer: the target's id and consistency are in its hello.
            by_digest = (features & feat_digest_resync) &&
                        (d == sync_decision::full_source ? peer_gen.current != gen_none && peer_consistent
                         : d == sync_decision::full_target
                             ? s.gen.current != gen_none && (s.flags & md_consistent) && !(s.flags & md_resync_target)
                             : false);
            if (target) {
                // A full resync starts with every block; an interrupted one keeps what is left.
                bool resuming = s.flags & md_resync_target;
                if ((d == sync_decision::full_target) && !resuming) s.bitmap.mark_all();
                s.flags = (s.flags | md_resync_target) & ~md_consistent;
            }
            plan = s.bitmap;
            if (by_digest && target) plan.clear_all();  // the source's comparison is the plan
            if (by_digest) commit_or_log("checksum comparison started");
        }
        if (by_digest) {
            emit("replication.compare", fmt::format("comparing checksums of {} bytes with {} before a full resync",
                                                    size, peer_name));
            if (source) compare_digests(fd, rd, size, plan);
            else serve_digests(fd, rd, size, plan);
        } else {
            exchange_bitmaps(fd, rd, size, plan);
        }
        if (target) {
            std::lock_guard lk(mu);
            st().bitmap = plan;  // the union: everything that may still differ
            commit_or_log("resync started");
        }
        if (source) resync_source(fd, size, std::move(plan));
        else resync_target(fd, size, plan);
    }
    steady(fd, size);
}

void engine::impl::on_connection_end() {
    std::lock_guard lk(mu);
    conn_fd = -1;
    redirty.reset();
    if (verify_running) emit("replication.verify_done", "verify stopped: the connection ended");
    verify_running = false;
    verify_outstanding.reset();
    // The new generation is durable before any write waiting for the peer
    // completes without it. With none waiting, it starts at the next write
    // (engine::write): a primary that loses its peer and writes nothing more,
    // as when it stops, still holds the peer's generation, and the two can
    // meet again without a false split brain.
    if (!pending.empty()) diverge_if_primary();
    bool was_in_sync = primary && link == link_state::connected;
    if (link != link_state::refused) link = link_state::connecting;
    // Before the writes that were waiting for the peer complete: they wait for the fence.
    // (The link is apart first: whoever sees the fencing event sees writing_without_peer().)
    if (was_in_sync) raise_fence("the replication connection to the peer in sync ended");
    fail_pending();
    open_gate();
}

void engine::impl::run() {
    std::string last_refusal;
    while (!stopping) {
        bool refused = false;
        std::string why;
        unique_fd conn;  // closed only after on_connection_end(), under the send lock
        try {
            conn = cfg.dialer ? dial() : accept_peer();
            if (stopping) break;
            serve(conn.get());
        } catch (const link_refused& e) {
            refused = true;
            why = e.what();
        } catch (const link_down& e) {
            why = e.what();
        } catch (const std::exception& e) {
            why = e.what();
        }
        bool was_up;
        {
            std::lock_guard lk(mu);
            was_up = conn_fd >= 0;
            if (!drop_reason.empty()) why = std::exchange(drop_reason, {});
            if (!stopping && why != "stopping") last_error = why;
        }
        on_connection_end();
        {
            std::lock_guard lk(send_mu);
            ++conn_gen;
            conn.reset();
        }
        if (stopping) break;
        if (was_up) emit("replication.disconnected", fmt::format("connection to {} lost: {}", peer_name, why));
        else if (refused && why != last_refusal) emit("replication.refused", why);  // once per reason
        last_refusal = refused ? why : std::string();
        // A refusal waits longer: it needs an operator (or the peer's) decision first.
        wait_wake(refused ? std::max(cfg.retry * 4, std::chrono::milliseconds(2000)) : cfg.retry);
    }
}

// ---- the public face ----------------------------------------------------------------------------

namespace {

// A replaced disk at the same path must not inherit the old disk's state: its
// metadata would say "consistent, in sync" over blank or foreign blocks, and no
// resync would ever come. The metadata records the volume's identity the first
// time it is known, and a different one later refuses the start.
result<void> check_identity(const volume& vol, metadata_file& md, const std::string& md_path) {
    const auto& now = vol.identity();
    auto& known = md.state().volume_identity;
    if (now.empty() || known == now) return {};
    if (!known.empty()) {
        log::error("replication.volume_changed",
                   "{} is not the volume its metadata {} describes: that was {}, this is {}. If its disk was "
                   "replaced, remove the metadata and start again: the peer sends the whole volume. If it holds "
                   "the same data (restored, moved or renamed), run tandemd --adopt-volume to keep the metadata",
                   vol.path(), md_path, known, now);
        return make_error_code(errc::volume_changed);
    }
    known = now;
    if (auto ok = md.commit(); !ok) return ok.error();
    log::info("replication.volume_identity", "{}: volume identity recorded in {}: {}", vol.path(), md_path, now);
    return {};
}

}  // namespace

result<std::string> engine::adopt_volume(const std::string& device, const std::string& metadata_path) {
    auto v = volume::open(device);
    if (!v) return v.error();
    auto md = metadata_file::open(metadata_path);
    if (!md) return md.error();
    if (md->state().volume_size != v->size()) return make_error_code(errc::bad_geometry);
    auto was = md->state().volume_identity;
    if (v->identity().empty()) return fmt::format("{} has no identity this machine can read; nothing to adopt", device);
    if (was == v->identity()) return fmt::format("{} is already the volume {} describes ({})", device, metadata_path, was);
    md->state().volume_identity = v->identity();
    if (auto ok = md->commit(); !ok) return ok.error();
    return fmt::format("{} now describes {} ({}; it described {})", metadata_path, device, v->identity(),
                       was.empty() ? "no identity" : was);
}

engine::engine(std::unique_ptr<impl> p) : p_(std::move(p)) {}
engine::~engine() { stop(); }

result<std::unique_ptr<engine>> engine::open(engine_config cfg, engine_event_fn on_event) {
    auto p = std::make_unique<impl>();
    auto v = volume::open(cfg.device);
    if (!v) return v.error();
    p->vol.emplace(std::move(*v));
    auto md = metadata_file::open(cfg.metadata_path);
    if (!md && md.error() == std::errc::no_such_file_or_directory) {
        log::notice("replication.metadata_created", "{}: new replication metadata for {} ({} bytes)",
                    cfg.metadata_path, cfg.device, p->vol->size());
        md = metadata_file::create(cfg.metadata_path, p->vol->size());
    }
    if (!md) return md.error();
    if (md->state().volume_size != p->vol->size()) {
        log::error("replication.size_changed",
                   "{} is {} bytes but its metadata {} describes {} bytes; resizing is not supported: restore the "
                   "volume, or remove the metadata to pair it again with a full resync",
                   cfg.device, p->vol->size(), cfg.metadata_path, md->state().volume_size);
        return make_error_code(errc::bad_geometry);
    }
    if (auto ok = check_identity(*p->vol, *md, cfg.metadata_path); !ok) return ok.error();
    p->md.emplace(std::move(*md));
    if (p->md->state().flags & md_primary) {
        p->crashed_primary = true;
        log::warning("replication.crashed_primary",
                     "{} was primary when it stopped and did not demote cleanly; its activity log marks {} bytes "
                     "that may differ from the peer, and they are synchronized again",
                     cfg.device, p->md->state().bitmap.dirty_bytes());
    }
    p->progress.rate_bps = cfg.rate_bps;
    p->progress.yield_bps = cfg.yield_rate_bps;
    p->cfg = std::move(cfg);
    p->on_event = std::move(on_event);
    p->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    return std::unique_ptr<engine>(new engine(std::move(p)));
}

void engine::start() {
    if (p_->thread.joinable()) return;
    if (!p_->cfg.dialer) p_->open_listener();
    p_->set_link(link_state::connecting);
    p_->thread = std::thread([this] { p_->run(); });
}

void engine::stop() {
    if (!p_) return;
    p_->stopping = true;
    p_->progress.stop = true;
    p_->nudge();
    {
        std::lock_guard lk(p_->mu);
        if (p_->conn_fd >= 0) ::shutdown(p_->conn_fd, SHUT_RDWR);
        p_->gate_cv.notify_all();  // writes held by the fence fail
    }
    if (p_->thread.joinable()) p_->thread.join();
    std::lock_guard lk(p_->mu);
    if (p_->md) {
        if (::fdatasync(p_->vol->fd()) == 0) p_->commit_or_log("stop");
    }
    if (p_->link != link_state::refused) p_->link = link_state::stopped;
}

result<void> engine::promote(std::string& why_not) {
    std::lock_guard lk(p_->mu);
    auto& s = p_->st();
    if (p_->primary) return {};
    if (s.flags & md_split_brain) {
        why_not = "a split brain is recorded: resolve it with 'tandemctl discard-local' on the node whose data goes";
        return make_error_code(errc::role_conflict);
    }
    if (!(s.flags & md_consistent) || s.gen.current == gen_none) {
        why_not = s.gen.current == gen_none ? "this node's data was never synchronized from its peer"
                                            : "this node's data is inconsistent (a resync into it is unfinished)";
        return make_error_code(errc::bad_field);
    }
    if (s.flags & md_outdated) {
        why_not = "this node's data is outdated: the peer wrote without it while the replication link was down. "
                  "Connect the replication link and let it resync; if the peer is lost for good, "
                  "'tandemctl takeover --force' promotes this copy and its later writes are lost";
        return make_error_code(errc::bad_field);
    }
    p_->primary = true;
    // The peer learns roles only in the handshake, so a promotion while
    // connected ends the connection: the next hello tells the peer, and if it
    // is primary too (heartbeats cut, replication not), negotiate refuses two
    // primaries instead of both writing. Until then the writes are ours alone.
    p_->diverge_if_primary();
    if (p_->conn_fd < 0) p_->raise_fence("promoted without a replication connection");
    if (p_->conn_fd >= 0) {
        p_->drop_reason = "promoted: reconnecting so that the peer learns the new role";
        ::shutdown(p_->conn_fd, SHUT_RDWR);
    }
    p_->commit_or_log("promoted");
    log::notice("replication.promoted", "{} is primary (generation {:016x})", p_->cfg.device, s.gen.current);
    return {};
}

result<void> engine::demote() {
    std::unique_lock lk(p_->mu);
    if (!p_->primary) return {};
    // Writes already sent finish first: a demotion is clean only when nothing is in flight.
    p_->wait_acked(lk, [&] { return p_->pending.empty(); }, p_->cfg.peer_timeout);
    if (::fdatasync(p_->vol->fd()) != 0) return errno_error();
    p_->primary = false;
    p_->crashed_primary = false;
    p_->hot.clear();
    p_->commit_or_log("demoted");
    log::notice("replication.demoted", "{} is secondary", p_->cfg.device);
    return {};
}

void engine::set_rate(std::uint64_t bps) { p_->progress.rate_bps = bps; }
void engine::set_yield_rate(std::uint64_t bps) { p_->progress.yield_bps = bps; }

bool engine::fence_pending() const { return p_->fence_pending; }

void engine::peer_fenced(const std::string& how) {
    std::lock_guard lk(p_->mu);
    if (!p_->fence_pending) return;
    p_->emit("replication.fenced", how + ": writes go on without the peer");
    p_->lower_fence();
}

bool engine::writing_without_peer() const {
    auto l = p_->link.load();
    return p_->primary && l != link_state::connected && l != link_state::sync_source;
}

bool engine::outdate(const std::string& why, bool stopping) {
    std::lock_guard lk(p_->mu);
    auto& s = p_->st();
    link_state l = p_->link;
    bool apart = l == link_state::connecting || l == link_state::refused || l == link_state::stopped;
    if (p_->primary || (s.flags & md_outdated) || !(s.flags & md_consistent) ||
        !(apart || (stopping && l == link_state::connected)))
        return false;
    s.flags |= md_outdated;
    p_->commit_or_log("outdated");
    p_->emit("replication.outdated", fmt::format("this copy is outdated: {}; not promotable until the replication "
                                                 "link is back and a resync brings it up to date",
                                                 why));
    return true;
}

bool engine::clear_outdated() {
    std::lock_guard lk(p_->mu);
    auto& s = p_->st();
    if (!(s.flags & md_outdated)) return false;
    s.flags &= ~md_outdated;
    p_->commit_or_log("outdated mark overridden");  // the caller reports it (replication.outdated_overridden)
    return true;
}

result<void> engine::discard_local(std::string& why_not) {
    {
        std::lock_guard lk(p_->mu);
        auto& s = p_->st();
        if (p_->primary) {
            why_not = "this node is primary: discard the data of the other node, or demote this one first";
            return make_error_code(errc::role_conflict);
        }
        if (!(s.flags & md_split_brain)) {
            why_not = "no split brain is recorded here; nothing to discard";
            return make_error_code(errc::bad_field);
        }
        s.gen = generation_ids{};
        s.flags = 0;
        s.bitmap.clear_all();
        s.resync_cursor = 0;
        p_->crashed_primary = false;
        p_->commit_or_log("local data discarded");
        p_->link = link_state::connecting;
    }
    p_->nudge();
    p_->emit("replication.discarded", "local data discarded by the operator; a full resync from the peer follows");
    return {};
}

result<void> engine::verify(std::string& why_not, bool repair) {
    {
        std::lock_guard lk(p_->mu);
        if (repair && !p_->primary) {
            why_not = "verify --repair sends this node's copy over the peer's, so it runs on the primary; "
                      "this node is secondary";
            return make_error_code(errc::role_conflict);
        }
        if (p_->link != link_state::connected) {
            why_not = fmt::format("replication is {}: verify needs a connected peer in sync", to_string(p_->link));
            return make_error_code(errc::bad_field);
        }
        if (!(p_->features & feat_verify)) {
            why_not = "the peer does not offer online verify";
            return make_error_code(errc::bad_field);
        }
        if (p_->verify_running || p_->verify_requested) {
            why_not = "a verify is already running";
            return make_error_code(errc::bad_field);
        }
        if (repair && !(p_->features & feat_resend)) {
            why_not = "the peer does not offer resending (an older tandemd): verify without --repair";
            return make_error_code(errc::bad_field);
        }
        p_->verify_requested = true;
        p_->verify_repair = repair;
    }
    p_->nudge();
    return {};
}

result<void> engine::write(std::uint64_t offset, std::span<const std::byte> bytes, std::uint32_t flags) {
    auto& p = *p_;
    if (bytes.empty() || offset % wire_sector || bytes.size() % wire_sector) return make_error_code(errc::misaligned);
    if (offset + bytes.size() > p.vol->size() || offset + bytes.size() < offset) return make_error_code(errc::out_of_range);
    for (std::size_t done = 0; done < bytes.size();) {
        auto piece = bytes.subspan(done, std::min<std::size_t>(max_data_length, bytes.size() - done));
        std::uint64_t off = offset + done;
        std::uint32_t fl = done + piece.size() == bytes.size() ? flags : 0;
        auto send = [&](int fd, std::uint64_t seq, std::uint64_t gen) {
            std::array<std::byte, frame_header_size + data_header_size> prefix{};
            data_msg m{off, static_cast<std::uint32_t>(piece.size()), fl, data_checksum(piece), piece};
            (void)encode_data_prefix(prefix, seq, m);
            p.send_if_current(fd, gen, prefix, piece);
        };
        auto apply = [&]() -> result<void> {
            auto local = write_local(*p.vol, off, piece);
            if (local && (fl & data_fua) && ::fdatasync(p.vol->fd()) != 0) local = errno_error();
            return local;
        };
        if (auto r = p.replicate(off, static_cast<std::uint32_t>(piece.size()), 0, send, apply); !r) return r.error();
        done += piece.size();
    }
    return {};
}

result<void> engine::zero(std::uint64_t offset, std::uint64_t length) {
    auto& p = *p_;
    if (length == 0 || offset % p.vol->logical_block() || length % p.vol->logical_block())
        return make_error_code(errc::misaligned);
    if (offset + length > p.vol->size() || offset + length < offset) return make_error_code(errc::out_of_range);
    for (std::uint64_t done = 0; done < length;) {
        auto len = static_cast<std::uint32_t>(std::min<std::uint64_t>(max_zero_length, length - done));
        std::uint64_t off = offset + done;
        auto send = [&](int fd, std::uint64_t seq, std::uint64_t gen) {
            std::array<std::byte, frame_header_size + zero_size> frame{};
            (void)encode_zero(frame, seq, zero_msg{off, len});
            p.send_if_current(fd, gen, frame);
        };
        auto apply = [&] { return p.vol->zero(off, len); };
        if (auto r = p.replicate(off, len, feat_zero, send, apply); !r) return r.error();
        done += len;
    }
    return {};
}

result<void> engine::flush() {
    auto& p = *p_;
    if (::fdatasync(p.vol->fd()) != 0) return errno_error();
    // Protocol C acknowledges after the peer's write; a flush waits for every ack
    // and then asks the peer to flush its cache too.
    std::unique_lock lk(p.mu);
    // Writes held by the fence have not completed, so a flush does not wait for
    // them (and the front end's flush on a loop attach never waits on heartbeats).
    p.wait_acked(lk, [&] { return p.pending.empty(); });
    if (p.link != link_state::connected || p.conn_fd < 0) return {};
    auto seq = ++p.tx_seq;
    int fd = p.conn_fd;
    std::uint64_t gen = p.conn_gen;
    auto* waiter = p.take_waiter();
    p.pending[seq] = {0, 0, waiter};
    lk.unlock();
    std::array<std::byte, frame_header_size> buf{};
    (void)encode_flush(buf, seq);
    p.send_if_current(fd, gen, buf);
    waiter->wait();  // acked, or the connection ended (a flush then completes)
    p.give_waiter(waiter);
    return {};
}

result<void> engine::read(std::uint64_t offset, std::span<std::byte> out) const {
    auto& p = *p_;
    if (out.empty() || offset % wire_sector || out.size() % wire_sector) return make_error_code(errc::misaligned);
    if (offset + out.size() > p.vol->size() || offset + out.size() < offset) return make_error_code(errc::out_of_range);
    // O_DIRECT wants an aligned buffer: read straight into the caller's when it
    // is one (the front end's are), else through this thread's bounce buffer.
    bool aligned = reinterpret_cast<std::uintptr_t>(out.data()) % 4096 == 0;
    for (std::size_t done = 0; done < out.size();) {
        std::size_t n = aligned ? out.size() - done : std::min<std::size_t>(max_data_length, out.size() - done);
        std::byte* dst = aligned ? out.data() + done : bounce_buffer();
        auto got = ::pread(p.vol->fd(), dst, n, static_cast<off_t>(offset + done));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return errno_error();
        if (got == 0) return make_error_code(errc::out_of_range);
        if (!aligned) std::memcpy(out.data() + done, dst, static_cast<std::size_t>(got));
        done += static_cast<std::size_t>(got);
    }
    return {};
}

std::uint64_t engine::size() const noexcept { return p_->vol->size(); }

bool engine::primary() const noexcept {
    std::lock_guard lk(p_->mu);
    return p_->primary;
}

std::uint16_t engine::sync_permille() const noexcept {
    std::uint64_t total = p_->sync_total, done = std::min(total, p_->sync_base + p_->progress.bytes_done.load());
    return static_cast<std::uint16_t>(total ? done * 1000 / total : 0);
}

engine_status engine::status() const {
    std::lock_guard lk(p_->mu);
    engine_status s;
    auto& m = p_->md->state();
    s.link = p_->link;
    s.primary = p_->primary;
    s.consistent = m.flags & md_consistent;
    s.split_brain = m.flags & md_split_brain;
    s.crashed_primary = p_->crashed_primary;
    s.resync_pending = m.flags & md_resync_target;
    s.outdated = m.flags & md_outdated;
    s.fence_pending = p_->fence_pending;
    s.writes_held = p_->writes_held;
    s.peer = p_->peer_name;
    s.decision = p_->decision;
    s.rule = p_->rule;
    s.last_error = p_->last_error;
    s.volume_size = m.volume_size;
    s.dirty_bytes = m.bitmap.dirty_bytes();
    s.sync_total = p_->sync_total;
    s.sync_done = std::min(s.sync_total, p_->sync_base + p_->progress.bytes_done.load());
    if (p_->link == link_state::sync_source || p_->link == link_state::sync_target) {
        // The rate over the last 5 s of samples; the average since the start until there are 1 s of them.
        auto now = clock::now();
        auto& rs = p_->rate_samples;
        if (!rs.empty() && (rs.back().second > s.sync_done || rs.front().first < p_->sync_start)) rs.clear();
        if (rs.empty() || now - rs.back().first >= std::chrono::milliseconds(250)) rs.emplace_back(now, s.sync_done);
        while (rs.size() > 2 && now - rs.front().first > std::chrono::seconds(5)) rs.pop_front();
        double window = std::chrono::duration<double>(rs.back().first - rs.front().first).count();
        double secs = std::chrono::duration<double>(now - p_->sync_start).count();
        if (window >= 1.0)
            s.sync_rate_bps = static_cast<double>(rs.back().second - rs.front().second) / window;
        else
            s.sync_rate_bps = secs > 0 ? static_cast<double>(s.sync_done) / secs : 0;
        s.sync_eta_s = s.sync_rate_bps > 0 ? static_cast<double>(s.sync_total - s.sync_done) / s.sync_rate_bps : 0;
    }
    s.rate_limit_bps = p_->progress.rate_bps;
    s.hot_extents = p_->hot.size();
    s.connections = p_->connections;
    s.resync_bytes_sent = p_->resync_sent;
    s.gen = m.gen;
    s.verify_running = p_->verify_running || p_->verify_requested;
    s.verify_done = p_->verify_done;
    s.verify_total = p_->verify_total;
    s.verify_mismatches = p_->verify_ranges;
    s.verify_mismatched_bytes = p_->verify_bad;
    return s;
}

}  // namespace tandem::replication
