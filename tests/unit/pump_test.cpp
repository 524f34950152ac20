// tests: the replication pump on real files (O_DIRECT) and real TCP — copy, resume after a drop, bad frames refused.
#include "tandem/replication/pump.hpp"

#include "tandem/replication/protocol.hpp"
#include "support/skip.hpp"
#include "support/util.hpp"
#include "support/volume_file.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include "tandem/base/bytes.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

using namespace tandem;
using namespace tandem::replication;
using tandem::test::mib;
using tandem::test::volume_file;
using tandem::test::can_direct;

namespace {


// A connected TCP pair over loopback: {source side, target side}.
std::pair<unique_fd, unique_fd> tcp_pair() {
    unique_fd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(l.get(), 1) == 0);
    REQUIRE(::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
    unique_fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    unique_fd s(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
    return {std::move(c), std::move(s)};
}

// A source volume of pseudo-random data and a zeroed target, both open for the pump.
struct volume_pair {
    volume_file src, dst;
    volume sv, dv;
    explicit volume_pair(std::uint64_t size) : src(size, true), dst(size, false), sv(open(src)), dv(open(dst)) {}
    static volume open(const volume_file& f) {
        auto v = volume::open(f.path);
        REQUIRE(v.has_value());
        return std::move(*v);
    }
};

// The target pump on a thread of its own. Its owner closes the connection when
// the pump returns, as the engine does.
std::thread run_target(volume& dv, unique_fd fd, const pump_options& opt, pump_progress& pt, pump_result& rt) {
    return std::thread([&dv, fd = std::move(fd), opt, &pt, &rt]() mutable {
        rt = pump_target(dv, fd.get(), opt, pt);
        fd.reset();
    });
}

}  // namespace

TEST_CASE("the pump copies a volume exactly", "[kernel][replication]") {
    std::string why;
    if (!can_direct(why)) TANDEM_SKIP(why);
    volume_pair v(64 * mib);
    auto [a, b] = tcp_pair();
    pump_progress ps, pt;
    system_steady_clock clock;
    pump_result rt;
    auto target = run_target(v.dv, std::move(b), {}, pt, rt);
    pump_options so;
    // Both send paths: copying, and zero-copy from the registered buffers (where the kernel has it).
    so.zero_copy = GENERATE(false, true);
    INFO("zero_copy " << so.zero_copy);
    auto rs = pump_source(v.sv, a.get(), so, ps, clock);
    target.join();
    INFO(rs.error << " / " << rt.error);
    REQUIRE(rs.ok());
    REQUIRE(rt.ok());
    CHECK(rs.bytes == 64 * mib);
    CHECK(rt.bytes == 64 * mib);
    CHECK(rs.resume_at == 64 * mib);
    CHECK(ps.bytes_done == 64 * mib);
    CHECK(v.src.digest() == v.dst.digest());
}

TEST_CASE("a resync yields to application writes: the yield rate while they arrive, unlimited after", "[kernel][replication]") {
    std::string why;
    if (!can_direct(why)) TANDEM_SKIP(why);
    volume_pair v(64 * mib);
    auto [a, b] = tcp_pair();
    pump_progress ps, pt;
    system_steady_clock clock;
    constexpr std::uint64_t yield = 8 * mib;  // per second; no limit otherwise
    ps.yield_bps = yield;
    // The application: a write every 10 ms (well inside the 200 ms window) until told to stop.
    std::atomic<bool> writing{true};
    ps.application_wrote(clock.now());
    std::thread app([&] {
        while (writing) {
            ps.application_wrote(clock.now());
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    });
    pump_result rt, rs;
    auto target = run_target(v.dv, std::move(b), {}, pt, rt);
    auto t0 = std::chrono::steady_clock::now();
    std::thread source([&] { rs = pump_source(v.sv, a.get(), {}, ps, clock); });
    // The bucket starts empty: 4 MiB acknowledged took at least 4 MiB at 8 MiB/s.
    bool reached = tandem::test::wait_until([&] { return ps.bytes_done >= 4 * mib; });
    auto slow = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto at_stop = ps.bytes_done.load();
    writing = false;
    app.join();
    auto t1 = std::chrono::steady_clock::now();
    source.join();
    target.join();
    auto fast = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    INFO(rs.error << " / " << rt.error << "; 4 MiB in " << slow << " s, then " << (64 * mib - at_stop) << " bytes in "
                  << fast << " s");
    REQUIRE(reached);
    REQUIRE(rs.ok());
    REQUIRE(rt.ok());
    CHECK(slow >= 0.45);  // 0.5 s by the bucket, less a margin for the clock reads
    // The rest at the yield rate would take over 6 s; unlimited, it is a fraction of that.
    CHECK(fast < static_cast<double>(64 * mib - at_stop) / yield / 2);
    CHECK(v.src.digest() == v.dst.digest());
}

TEST_CASE("a link dropped mid-sync resumes from the acknowledged point", "[kernel][replication]") {
    std::string why;
    if (!can_direct(why)) TANDEM_SKIP(why);
    volume_pair v(32 * mib);
    system_steady_clock clock;
    std::uint64_t resume = 0;
    {
        // The target takes 8 MiB and then the link drops.
        auto [a, b] = tcp_pair();
        pump_progress ps, pt;
        pump_options topt;
        topt.end = 8 * mib;
        pump_result rt;
        auto target = run_target(v.dv, std::move(b), topt, pt, rt);
        auto rs = pump_source(v.sv, a.get(), {}, ps, clock);
        target.join();
        CHECK_FALSE(rs.ok());
        REQUIRE(rt.ok());
        CHECK(rt.resume_at == 8 * mib);  // the target knows exactly what is durable
        // The source never claims more than was acknowledged; acks in flight when
        // the link broke are lost (the close resets the connection), so it may claim less.
        CHECK(rs.resume_at <= rt.resume_at);
        resume = rt.resume_at;
    }
    {
        auto [a, b] = tcp_pair();
        pump_progress ps, pt;
        pump_options opt;
        opt.start = resume;
        pump_result rt;
        auto target = run_target(v.dv, std::move(b), opt, pt, rt);
        auto rs = pump_source(v.sv, a.get(), opt, ps, clock);
        target.join();
        REQUIRE(rs.ok());
        REQUIRE(rt.ok());
        CHECK(rs.bytes == 24 * mib);  // only the rest went over the wire
    }
    CHECK(v.src.digest() == v.dst.digest());
}

TEST_CASE("bad frames are refused and nothing of them reaches the disk", "[kernel][replication]") {
    std::string why;
    if (!can_direct(why)) TANDEM_SKIP(why);
    volume_file dst(4 * mib, false);
    auto zero = dst.digest();
    auto dv = volume::open(dst.path);
    REQUIRE(dv.has_value());
    std::vector<std::byte> payload(64 * 1024, std::byte{0x7a});
    struct bad {
        const char* what;
        std::uint64_t offset;
        std::uint64_t checksum;
        std::size_t send_bytes;  // how much of the payload the fake source sends
        const char* expect;
    };
    auto good_sum = XXH3_64bits(payload.data(), payload.size());
    for (auto c : {bad{"bad checksum", 0, good_sum ^ 1, payload.size(), "bad checksum"},
                   bad{"out of range", 4 * mib, good_sum, payload.size(), "beyond the end of the volume"},
                   bad{"stall mid-frame", 0, good_sum, payload.size() / 2, "stalled or closed the connection in the middle of a frame (32768 of 65536 bytes)"}}) {
        INFO(c.what);
        auto [a, b] = tcp_pair();
        std::array<std::byte, frame_header_size + data_header_size> prefix{};
        // The encoder only makes good frames: encode one, then corrupt the offset
        // (bytes 24..31) and the checksum (bytes 40..47) as a bad peer would.
        REQUIRE(encode_data_prefix(prefix, 1, data_msg{0, static_cast<std::uint32_t>(payload.size()), 0, good_sum,
                                                       payload})
                    .has_value());
        store_be<std::uint64_t>(std::span(prefix).subspan(frame_header_size), c.offset);
        store_be<std::uint64_t>(std::span(prefix).subspan(frame_header_size + 16), c.checksum);
        REQUIRE(::send(a.get(), prefix.data(), prefix.size(), 0) == static_cast<ssize_t>(prefix.size()));
        REQUIRE(::send(a.get(), payload.data(), c.send_bytes, 0) == static_cast<ssize_t>(c.send_bytes));
        pump_progress pt;
        pump_options opt;
        opt.stall = std::chrono::milliseconds(300);
        auto rt = pump_target(*dv, b.get(), opt, pt);
        CHECK_THAT(rt.error, Catch::Contains(c.expect));
        CHECK(rt.bytes == 0);
        CHECK(dst.digest() == zero);
    }
}
