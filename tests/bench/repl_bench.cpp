// bench: one replication pump run between two namespaces (source and target threads), for make bench-replication.
#include "tandem/replication/pump.hpp"

#include "tandem/base/unique_fd.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
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

}  // namespace

int main(int argc, char** argv) {
    std::string src, dst, ns_src, ns_dst, addr = "10.88.0.2";
    std::uint32_t rate_mib = 0;
    std::uint64_t bytes = 0;
    bool do_fill = false;
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
        else die("unknown argument " + a);
    }
    if (do_fill) {
        fill(src);
        return 0;
    }
    auto sv = volume::open(src);
    auto dv = volume::open(dst);
    if (!sv || !dv) die("cannot open the volumes");
    pump_options opt;
    opt.end = bytes ? bytes : sv->size();

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
