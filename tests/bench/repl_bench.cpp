// bench: replication between two namespaces for make bench-replication — one pump run, or the
// engine's delta resync and replicated writes (--engine).
#include "tandem/replication/engine.hpp"
#include "tandem/replication/frontend.hpp"
#include "tandem/replication/pump.hpp"

#include "tandem/base/unique_fd.hpp"

#include <fmt/format.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <set>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace tandem;
using namespace tandem::replication;

namespace {

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "repl-bench: %s\n", what.c_str());
    std::exit(1);
}

// Moves this thread into a named network namespace (sockets made afterwards live there).
void enter(const std::string& ns) {
    unique_fd fd(::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || ::setns(fd.get(), CLONE_NEWNET) != 0) die("cannot enter namespace " + ns);
}

// Fills a volume with pseudo-random bytes (xorshift: fast, and not compressible by anything in the path).
void fill(const std::string& path) {
    auto v = volume::open(path);
    if (!v) die(path + ": " + v.error().message());
    std::vector<std::uint64_t> buf((8u << 20) / 8);
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    void* aligned = std::aligned_alloc(4096, 8u << 20);
    for (std::uint64_t off = 0; off < v->size(); off += 8u << 20) {
        for (auto& w : buf) w = (x ^= x << 13, x ^= x >> 7, x ^= x << 17);
        std::memcpy(aligned, buf.data(), 8u << 20);
        if (::pwrite(v->fd(), aligned, std::min<std::uint64_t>(8u << 20, v->size() - off), static_cast<off_t>(off)) < 0)
            die("fill: " + std::string(std::strerror(errno)));
    }
    std::free(aligned);
}

double cpu_seconds() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// ---- --engine: two engines, one per namespace ---------------------------------------------------

struct events {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> seen;  // "node kind"
    engine_event_fn for_node(const std::string& node) {
        return [this, node](std::string_view kind, const std::string& detail) {
            std::lock_guard lk(mu);
            std::printf("%s %.*s: %s\n", node.c_str(), static_cast<int>(kind.size()), kind.data(), detail.c_str());
            seen.push_back(node + " " + std::string(kind));
            cv.notify_all();
        };
    }
    std::size_t count(const std::string& what) {
        return static_cast<std::size_t>(std::count(seen.begin(), seen.end(), what));
    }
    std::size_t seen_now(const std::string& what) {
        std::lock_guard lk(mu);
        return count(what);
    }
    void wait(const std::string& what, std::size_t n) {
        std::unique_lock lk(mu);
        if (!cv.wait_for(lk, std::chrono::minutes(10), [&] { return count(what) >= n; }))
            die("no " + what + " event #" + std::to_string(n));
    }
};

double since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Application writes through the API for `seconds`: 1 MiB sequential, then 4 KiB random, one at a time.
struct write_figures {
    double seq_mib_s = 0, rnd_iops = 0, rnd_us = 0;
};
write_figures app_writes(engine& e, std::uint64_t size, double seconds) {
    write_figures f;
    std::vector<std::byte> buf(1 << 20);
    std::mt19937_64 rng(5);
    for (auto& b : buf) b = static_cast<std::byte>(rng());
    auto t0 = std::chrono::steady_clock::now();
    std::uint64_t off = 0, n = 0;
    while (since(t0) < seconds) {
        if (auto r = e.write(off, buf); !r) die("write: " + r.error().message());
        off = (off + buf.size()) % size;
        ++n;
    }
    f.seq_mib_s = static_cast<double>(n) / since(t0);
    t0 = std::chrono::steady_clock::now();
    n = 0;
    while (since(t0) < seconds) {
        if (auto r = e.write(rng() % (size / 4096) * 4096, std::span(buf).first(4096)); !r)
            die("write: " + r.error().message());
        ++n;
    }
    double s = since(t0);
    f.rnd_iops = static_cast<double>(n) / s;
    f.rnd_us = s / static_cast<double>(n) * 1e6;
    return f;
}

// Two engines over the veth between two namespaces, each engine's thread born
// in its namespace so that its sockets live there.
struct bench_pair {
    std::string src, dst, ns_src, ns_dst, addr_src, addr_dst, meta_dir;
    events ev;
    engine_config config(bool dialer) const {
        engine_config c;
        c.node_name = dialer ? "alpha" : "beta";
        c.device = dialer ? src : dst;
        c.metadata_path = meta_dir + "/" + c.node_name + ".meta";
        c.dialer = dialer;
        c.local_address = dialer ? addr_src : addr_dst;
        c.peer_address = dialer ? addr_dst : addr_src;
        c.key.assign(32, std::byte{0x42});
        c.rate_bps = 0;
        c.peer_timeout = std::chrono::seconds(5);
        c.retry = std::chrono::milliseconds(50);
        return c;
    }
    std::unique_ptr<engine> start(bool dialer) {
        std::unique_ptr<engine> e;
        std::thread([&] {
            enter(dialer ? ns_src : ns_dst);
            auto r = engine::open(config(dialer), ev.for_node(dialer ? "alpha" : "beta"));
            if (!r) die("engine: " + r.error().message());
            e = std::move(*r);
            e->start();
        }).join();
        return e;
    }
};

int engine_bench(const std::string& src, const std::string& dst, const std::string& ns_src, const std::string& ns_dst,
                 const std::string& addr_src, const std::string& addr_dst, const std::string& meta_dir, double seconds) {
    bench_pair p{src, dst, ns_src, ns_dst, addr_src, addr_dst, meta_dir, {}};
    auto& ev = p.ev;
    std::unique_ptr<engine> a, b;
    auto t0 = std::chrono::steady_clock::now();
    b = p.start(false);
    a = p.start(true);
    ev.wait("beta replication.sync_done", 1);
    double full_s = since(t0);
    const std::uint64_t size = a->status().volume_size;
    std::string why;
    if (!a->promote(why)) die("promote: " + why);
    ev.wait("beta replication.sync_done", 2);  // the promotion's reconnect

    auto with_peer = app_writes(*a, size, seconds);
    if (!a->flush()) die("flush");

    // (c) 1 % of the volume in random 4 KiB blocks while the peer is away.
    b.reset();
    ev.wait("alpha replication.disconnected", 1);
    auto sent0 = a->status().resync_bytes_sent;
    std::mt19937_64 rng(17);
    std::set<std::uint64_t> blocks;
    while (blocks.size() < size / 4096 / 100) blocks.insert(rng() % (size / 4096));
    std::vector<std::byte> block(4096, std::byte{0x5a});
    for (auto blk : blocks)
        if (!a->write(blk * 4096, block)) die("write");
    auto t1 = std::chrono::steady_clock::now();
    b = p.start(false);
    ev.wait("beta replication.sync_done", 3);
    double delta_s = since(t1);
    auto sent = a->status().resync_bytes_sent - sent0;
    double changed = static_cast<double>(blocks.size()) * 4096;

    // (d) the same writes without a peer.
    b.reset();
    ev.wait("alpha replication.disconnected", 2);
    auto alone = app_writes(*a, size, seconds);

    // (f) application writes during a resync of the whole volume (dirtied while
    // the peer was away), one at a time: 1 MiB sequential for half of `seconds`,
    // then 4 KiB random. Three modes: the resync yields to the writes (the
    // default yield rate), the yield is off, and no resync at all (the peer stays
    // away; the volume just as dirty, so the writes mark nothing new). Rounds in
    // the order A B C C B A, each figure the mean of its two rounds.
    struct during_figures {
        double seq_mib_s = 0, rnd_us = 0, resync_mib_s = 0;
    };
    std::vector<std::byte> mib(1 << 20, std::byte{0x3c});
    auto during = [&](std::optional<std::uint64_t> yield_bps) {
        for (std::uint64_t off = 0; off < size; off += mib.size())
            if (!a->write(off, mib)) die("write");
        auto done = ev.seen_now("beta replication.sync_done");
        auto lost = ev.seen_now("alpha replication.disconnected");
        if (yield_bps) {
            a->set_yield_rate(*yield_bps);
            auto started = ev.seen_now("alpha replication.sync_started");
            b = p.start(false);
            ev.wait("alpha replication.sync_started", started + 1);
        }
        // Each half lasts seconds / 2, or until the resync ends.
        auto resyncing = [&] { return !yield_bps || a->status().link == link_state::sync_source; };
        auto st0 = a->status();
        during_figures f;
        auto t = std::chrono::steady_clock::now();
        std::uint64_t n = 0, off = 0;
        while (since(t) < seconds / 2 && resyncing()) {
            if (!a->write(off, mib)) die("write");
            off = (off + mib.size()) % size;
            ++n;
        }
        f.seq_mib_s = static_cast<double>(n) / since(t);
        auto t2 = std::chrono::steady_clock::now();
        n = 0;
        while (since(t2) < seconds / 2 && (n % 64 != 0 || resyncing())) {
            if (!a->write(rng() % (size / 4096) * 4096, block)) die("write");
            ++n;
        }
        f.rnd_us = since(t2) / static_cast<double>(n) * 1e6;
        if (yield_bps) {
            f.resync_mib_s = static_cast<double>(a->status().sync_done - st0.sync_done) / since(t) / (1 << 20);
            ev.wait("beta replication.sync_done", done + 1);
            b.reset();
            ev.wait("alpha replication.disconnected", lost + 1);
        }
        return f;
    };
    const std::optional<std::uint64_t> modes[] = {engine_config{}.yield_rate_bps, 0, std::nullopt};
    during_figures mean[3];
    for (int i : {0, 1, 2, 2, 1, 0}) {
        auto f = during(modes[i]);
        mean[i].seq_mib_s += f.seq_mib_s / 2;
        mean[i].rnd_us += f.rnd_us / 2;
        mean[i].resync_mib_s += f.resync_mib_s / 2;
    }
    std::printf("{\"volume_bytes\":%llu,\"full_sync_s\":%.3f,\"full_mib_s\":%.1f,"
                "\"delta_changed_bytes\":%.0f,\"delta_sent_bytes\":%llu,\"delta_ratio\":%.4f,\"delta_s\":%.3f,"
                "\"seq_mib_s_peer\":%.1f,\"seq_mib_s_alone\":%.1f,\"rnd_iops_peer\":%.0f,\"rnd_iops_alone\":%.0f,"
                "\"rnd_us_peer\":%.1f,\"rnd_us_alone\":%.1f,"
                "\"during_seq_yield\":%.1f,\"during_us_yield\":%.1f,\"during_resync_yield\":%.1f,"
                "\"during_seq_noyield\":%.1f,\"during_us_noyield\":%.1f,\"during_resync_noyield\":%.1f,"
                "\"during_seq_away\":%.1f,\"during_us_away\":%.1f}\n",
                static_cast<unsigned long long>(size), full_s, static_cast<double>(size) / full_s / (1 << 20), changed,
                static_cast<unsigned long long>(sent), static_cast<double>(sent) / changed, delta_s,
                with_peer.seq_mib_s, alone.seq_mib_s, with_peer.rnd_iops, alone.rnd_iops, with_peer.rnd_us,
                alone.rnd_us, mean[0].seq_mib_s, mean[0].rnd_us, mean[0].resync_mib_s, mean[1].seq_mib_s,
                mean[1].rnd_us, mean[1].resync_mib_s, mean[2].seq_mib_s, mean[2].rnd_us);
    a.reset();
    return 0;
}


// make bench-store: the same engine pair, the primary's volume exposed through
// the FUSE front end; `run DEV peer` with the peer connected (protocol C), then
// `run DEV alone` after the peer is gone.
int store_bench(const std::string& src, const std::string& dst, const std::string& ns_src, const std::string& ns_dst,
                const std::string& addr_src, const std::string& addr_dst, const std::string& meta_dir,
                const std::string& run) {
    bench_pair p{src, dst, ns_src, ns_dst, addr_src, addr_dst, meta_dir, {}};
    auto& ev = p.ev;
    auto b = p.start(false);
    auto a = p.start(true);
    ev.wait("beta replication.sync_done", 1);
    std::string why;
    if (!a->promote(why)) die("promote: " + why);
    ev.wait("beta replication.sync_done", 2);
    frontend_config fc;
    fc.kind = frontend_kind::fuse;
    fc.work_dir = meta_dir;
    auto fe = expose_fuse(*a, fc, why);
    if (!fe) die("front end: " + why);
    auto dev = (*fe)->device();
    auto sh = [&](const char* label) {
        auto cmd = run + " " + dev + " " + label;
        if (std::system(cmd.c_str()) != 0) die("failed: " + cmd);
    };
    auto before = a->status();
    sh("peer");
    // The replicated figures count only if the peer stayed connected and in sync throughout.
    auto after = a->status();
    if (after.link != link_state::connected || after.connections != before.connections || after.dirty_bytes != 0)
        die(fmt::format("the peer did not stay connected through the replicated run (link {}, {} -> {} connections, "
                        "{} dirty bytes): {}",
                        to_string(after.link), before.connections, after.connections, after.dirty_bytes,
                        after.last_error));
    b.reset();
    ev.wait("alpha replication.disconnected", 1);
    sh("alone");
    if (auto r = (*fe)->close(); !r) die("detach: " + r.error().message());
    a.reset();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::string src, dst, ns_src, ns_dst, addr = "10.88.0.2";
    std::uint32_t rate_mib = 0;
    std::uint64_t bytes = 0;
    bool do_fill = false, engine_mode = false, zero_copy = false;
    std::string store_run;
    std::string addr_src = "10.88.0.1", meta_dir = "/tmp";
    double seconds = 3;
    std::uint32_t chunk = 0;  // pump_options' defaults unless given
    unsigned depth = 0;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : (die("missing value for " + a), ""); };
        if (a == "--source") src = next();
        else if (a == "--target") dst = next();
        else if (a == "--ns-source") ns_src = next();
        else if (a == "--ns-target") ns_dst = next();
        else if (a == "--addr") addr = next();
        else if (a == "--rate") rate_mib = static_cast<std::uint32_t>(std::stoul(next()));
        else if (a == "--bytes") bytes = std::stoull(next());
        else if (a == "--fill") do_fill = true;
        else if (a == "--engine") engine_mode = true;
        else if (a == "--zero-copy") zero_copy = true;
        else if (a == "--addr-source") addr_src = next();
        else if (a == "--meta-dir") meta_dir = next();
        else if (a == "--seconds") seconds = std::stod(next());
        else if (a == "--store-run") store_run = next();
        else if (a == "--chunk") chunk = static_cast<std::uint32_t>(std::stoul(next()));
        else if (a == "--depth") depth = static_cast<unsigned>(std::stoul(next()));
        else die("unknown argument " + a);
    }
    if (do_fill) {
        fill(src);
        return 0;
    }
    if (!store_run.empty()) return store_bench(src, dst, ns_src, ns_dst, addr_src, addr, meta_dir, store_run);
    if (engine_mode) return engine_bench(src, dst, ns_src, ns_dst, addr_src, addr, meta_dir, seconds);
    auto sv = volume::open(src);
    auto dv = volume::open(dst);
    if (!sv || !dv) die("cannot open the volumes");
    pump_options opt;
    opt.end = bytes ? bytes : sv->size();
    opt.zero_copy = zero_copy;
    if (chunk) opt.chunk = chunk;
    if (depth) opt.depth = depth;

    // Target: listen in its namespace; source: connect from its own.
    unique_fd listener;
    std::thread([&] {
        enter(ns_dst);
        listener.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        int one = 1;
        ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(7789);
        ::inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
        if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener.get(), 1) != 0)
            die("listen: " + std::string(std::strerror(errno)));
    }).join();
    pump_result rt, rs;
    pump_progress pt, ps;
    ps.rate_bps = rate_mib ? mib_per_s(rate_mib) : 0;
    double cpu0 = cpu_seconds();
    std::thread target([&] {
        unique_fd c(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        rt = pump_target(*dv, c.get(), opt, pt);
    });
    std::thread source([&] {
        enter(ns_src);
        unique_fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(7789);
        ::inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
        if (::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
            die("connect: " + std::string(std::strerror(errno)));
        system_steady_clock clock;
        rs = pump_source(*sv, c.get(), opt, ps, clock);
    });
    source.join();
    target.join();
    double cpu = cpu_seconds() - cpu0;
    if (!rs.ok() || !rt.ok()) die("pump failed: " + rs.error + " / " + rt.error);
    double gb = static_cast<double>(rs.bytes) / 1e9;
    std::printf("{\"bytes\":%llu,\"seconds\":%.4f,\"mib_per_s\":%.1f,\"cpu_seconds\":%.3f,\"cpu_s_per_gb\":%.3f}\n",
                static_cast<unsigned long long>(rs.bytes), rs.seconds,
                static_cast<double>(rs.bytes) / rs.seconds / (1 << 20), cpu, cpu / gb);
    return 0;
}
