// tests: the live /store — mounted on the active node through the front end, no acknowledged write lost in a crash.
#include "support/cluster.hpp"
#include "support/skip.hpp"
#include "support/tempdir.hpp"
#include "support/util.hpp"
#include "support/volume_file.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

using namespace tandem::test;
using namespace std::chrono_literals;

namespace {

constexpr auto sync_limit = 120s;
constexpr std::size_t record_size = 32;

// Record n: its number and a checksum of it, so a torn or stale record shows.
std::string record(std::uint32_t n) {
    auto sum = XXH3_64bits(&n, sizeof n);
    auto r = fmt::format("{:010d} {:016x}", n, sum);
    r.resize(record_size - 1, ' ');
    return r + "\n";
}

// A child process in `target`'s mount namespace (where that node's /store is
// mounted). Returns once the child is in it; a child that could not enter is
// the test's failure, with the reason, not a silent exit.
template <class Body>
pid_t spawn_in_mounts_of(pid_t target, Body body) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid != 0) {
        ::close(p[1]);
        int err = -1;
        auto n = ::read(p[0], &err, sizeof err);
        ::close(p[0]);
        INFO("entering the mount namespace of " << target << ": "
                                                << (n == sizeof err ? std::strerror(err) : "the child died first"));
        REQUIRE((n == sizeof err && err == 0));
        return pid;
    }
    ::close(p[0]);
    // Catch2's handlers would report a signal to the child as the test's failure.
    for (int sig : {SIGTERM, SIGINT, SIGABRT, SIGSEGV, SIGILL, SIGFPE}) ::signal(sig, SIG_DFL);
    // setns(CLONE_NEWNS) refuses (EINVAL) a thread whose file-system context is
    // shared; under ThreadSanitizer the child has a second thread that shares it.
    int err = ::unshare(CLONE_FS) == 0 ? 0 : errno;
    int ns = ::open(fmt::format("/proc/{}/ns/mnt", target).c_str(), O_RDONLY | O_CLOEXEC);
    if (err == 0 && (ns < 0 || ::setns(ns, CLONE_NEWNS) != 0)) err = errno;
    (void)!::write(p[1], &err, sizeof err);
    ::close(p[1]);
    if (err != 0) ::_exit(120);
    ::_exit(body());
}

// Appends numbered records with fdatasync, and reports each acknowledged number on a pipe.
struct record_writer {
    pid_t pid = -1;
    int fd = -1;
    std::atomic<std::uint32_t> acked{0};
    std::thread reader;
    record_writer(pid_t target, const std::string& file) {
        int p[2];
        REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
        pid = spawn_in_mounts_of(target, [&] {
            int f = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (f < 0) return 121;
            for (std::uint32_t n = 1;; ++n) {
                auto r = record(n);
                if (::write(f, r.data(), r.size()) != static_cast<ssize_t>(r.size())) return 122;
                if (::fdatasync(f) != 0) return 123;
                if (::write(p[1], &n, sizeof n) != sizeof n) return 124;
            }
        });
        ::close(p[1]);
        fd = p[0];
        reader = std::thread([this] {
            std::uint32_t n;
            while (::read(fd, &n, sizeof n) == sizeof n) acked = n;
        });
    }
    void kill9() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
            pid = -1;
        }
        if (reader.joinable()) reader.join();
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
    ~record_writer() { kill9(); }
};

// A process that keeps its working directory on /store until killed; `deaf`: it ignores SIGTERM.
struct store_holder_process {
    pid_t pid;
    store_holder_process(pid_t target, const std::string& dir, bool deaf = false) {
        pid = spawn_in_mounts_of(target, [&] {
            if (deaf) ::signal(SIGTERM, SIG_IGN);  // before the chdir that holds() waits for
            if (::chdir(dir.c_str()) != 0) return 125;
            for (;;) ::pause();
        });
    }
    // Whether its working directory is on `dir` (it is in place, and not yet ended).
    bool holds(const std::string& dir) const {
        return run(fmt::format("readlink /proc/{}/cwd", pid)).out.find(dir) == 0;
    }
    // Waits for its end (someone else ends it); the signal that ended it, or 0.
    int end_signal() {
        int status = 0;
        ::waitpid(pid, &status, 0);
        pid = -1;
        return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    }
    ~store_holder_process() {
        if (pid <= 0) return;
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
};

// Two zeroed volumes, a cluster that mounts /store on them, and the helpers around it.
// `shared`: backend "shared" instead, both nodes on one device (va), as with an
// iSCSI LUN; a 1 s writability probe of /store.
// `fstype`: [store] fstype; xfs wants volumes of at least 300 MiB.
// `lease`: with `shared`, vb (1 MiB, zeroed) is the lease device, and the
// heartbeat timeout is 1 s, so a stalled CI machine does not end a lease.
struct live_store {
    bool shared;
    std::string fstype;
    std::uint64_t size = fstype == "xfs" ? 320 * mib : 128 * mib;
    loop_volume va{size, false}, vb{shared ? mib : size, false};
    temp_dir dir;
    test_cluster c;
    // One process per node that keeps the node's mount namespace alive: were
    // tandemd the last process in it, its exit would have to unmount /store
    // through its own FUSE server, which is exiting too, and hang for good.
    std::map<std::string, pid_t> keepers;
    explicit live_store(bool shared_device = false, std::string fs = "ext4", bool lease = false)
        : shared(shared_device), fstype(std::move(fs)),
          c(options(va.dev, shared ? va.dev : vb.dev, dir.path().string(), shared, fstype, lease ? vb.dev : "")) {}
    ~live_store() {
        for (auto node : {"a", "b"})
            if (c.pid(node) > 0) c.kill9(node);
        for (auto [node, pid] : keepers) release_keeper(node);
        for (auto* v : {&va, &vb}) ::unlink(md(v->dev).c_str());
    }
    void start(const std::string& node) {
        c.start(node);
        // `ip netns exec` makes the namespace, then execs tandemd in place: join it after that.
        auto exe = fmt::format("/proc/{}/exe", c.pid(node));
        REQUIRE(wait_until([&] {
            std::error_code ec;
            return std::filesystem::read_symlink(exe, ec).filename() == "tandemd";
        }));
        keepers[node] = spawn_in_mounts_of(c.pid(node), []() -> int {
            for (;;) ::pause();
        });
    }
    // After tandemd is gone: the namespace, and the dead /store in it, go.
    void release_keeper(const std::string& node) {
        auto& pid = keepers[node];
        if (pid <= 0) return;
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        pid = -1;
    }
    static std::string md(const std::string& dev) {
        return fmt::format("/dev/shm/tandem-md-{}-{}", ::getpid(), dev.substr(dev.rfind('/') + 1));
    }
    static test_cluster::options options(const std::string& a, const std::string& b, const std::string& dir,
                                         bool shared, const std::string& fstype, const std::string& lease) {
        test_cluster::options o;
        if (!lease.empty()) o.timeout = "1s";
        // Both "hosts" share this machine's kernel, and XFS refuses a second mount
        // of one file system UUID while the crashed node's mount is being torn down.
        auto fs = fstype == "ext4" ? std::string()
                                   : fmt::format("fstype = \"{}\"\n{}", fstype, fstype == "xfs" ? "options = \"nouuid\"\n" : "");
        auto section = [&](const std::string& dev, const std::string& node) -> std::string {
            if (shared)
                return fmt::format("[replication]\nbackend = \"shared\"\ndevice = \"{}\"\n{}"
                                   "[store]\nmount = \"{}/store-{}\"\n[health]\ninterval = \"1s\"\n",
                                   dev, lease.empty() ? "" : fmt::format("lease_device = \"{}\"\n", lease), dir, node);
            // A node is made unhealthy by creating DIR/sick-NODE.
            return fmt::format("[replication]\nbackend = \"uring\"\ndevice = \"{0}\"\nmetadata = \"{1}\"\nrate = 4096\n"
                               "[store]\nmount = \"{2}/store-{3}\"\nfrontend = \"fuse\"\nthreads = 4\n"
                               "kill_after = \"2s\"\n{4}"
                               "[health]\ninterval = \"1s\"\ncheck_command = \"test ! -e {2}/sick-{3}\"\n",
                               dev, md(dev), dir, node, fs);
        };
        o.extra_a = section(a, "a");
        o.extra_b = section(b, "b");
        return o;
    }
    std::string mount(const std::string& node) const { return (dir.path() / ("store-" + node)).string(); }
    // Both up, /store created and mounted on alpha, beta in sync and standby.
    void up() {
        start("a");
        start("b");
        if (!shared) REQUIRE(c.ctl("b", fmt::format("sync --timeout {}s", sync_limit.count())).status == 0);
        REQUIRE(c.wait("b", "state=STANDBY", soon));
        // ACTIVE comes first; /store is mounted when the acquire sequence completes.
        REQUIRE(c.wait("a", "event=failover.complete", soon, 0));
        REQUIRE(c.status("a")["store"]["mounted"] == true);
        if (shared) return;
        // The promotion reconnected; what /store's creation wrote reaches beta.
        auto synced = c.ctl("a", fmt::format("sync --timeout {}s", sync_limit.count()));
        INFO(synced.out << "\nalpha: " << c.status("a")["replication"].dump() << "\nbeta: "
                        << c.status("b")["replication"].dump());
        REQUIRE(synced.status == 0);
    }
    // A command run in a node's mount namespace.
    cmd_result in_store(const std::string& node, const std::string& cmd) const {
        return run(fmt::format("nsenter -t {} -m -- sh -c '{}'", c.pid(node), cmd));
    }
    // The sha256 of a file on a node's /store (`prefix`: a command run first, in the same shell).
    std::string sha256(const std::string& node, const std::string& file, const std::string& prefix = "") const {
        auto r = in_store(node, fmt::format("{}sha256sum < {}/{}", prefix, mount(node), file));
        REQUIRE(r.status == 0);
        return r.out;
    }
    // Writes `mib` MiB of random data to a file on a node's /store, synced; returns its sha256.
    std::string write_random(const std::string& node, const std::string& file, int mib) const {
        return sha256(node, file, fmt::format("head -c {1}M /dev/urandom > {0}/{2} && sync {0}/{2} && ", mount(node), mib, file));
    }
    // Crash: the node's link goes dark, then tandemd is SIGKILLed.
    void crash(const std::string& node) {
        c.ns(node).exec_ok("ip link set eth0 down");
        c.kill9(node);
        release_keeper(node);
    }
    // `node` crashes and `to` completes its takeover.
    void crash_over_to(const std::string& node, const std::string& to) {
        auto since = c.last_seq(to);
        crash(node);
        REQUIRE(c.wait(to, "event=failover.complete", soon, since));
    }
    // The crashed node comes back and joins as standby once resynchronized.
    void rejoin(const std::string& node) {
        c.ns(node).exec_ok("ip link set eth0 up");
        start(node);
        if (!shared) REQUIRE(c.ctl(node, fmt::format("sync --timeout {}s", sync_limit.count())).status == 0);
        REQUIRE(c.wait(node, "state=STANDBY", soon));
    }
    std::uint64_t sent(const std::string& node) {
        return c.status(node)["replication"]["resync_bytes_sent"].get<std::uint64_t>();
    }
    // After alpha, made unhealthy (DIR/sick-a), gave /store up and beta took
    // over: alpha demoted before beta promoted, so what beta writes replicates
    // to alpha with no split brain; then alpha recovers, beta gives back, and
    // alpha's /store holds the file "before" (its sha256: `before`) and what
    // beta wrote meanwhile.
    void one_history_after_alpha_gave_up(const std::string& before) {
        auto meanwhile = write_random("b", "meanwhile", 4);
        auto synced = c.ctl("b", fmt::format("sync --timeout {}s", sync_limit.count()));
        INFO(synced.out << "\nalpha: " << c.status("a")["replication"].dump());
        REQUIRE(synced.status == 0);
        CHECK(c.status("a")["replication"]["split_brain"] == false);
        std::filesystem::remove(dir.path() / "sick-a");
        REQUIRE(c.wait("a", "state=STANDBY", soon));
        auto since = c.last_seq("a");
        REQUIRE(c.ctl("b", "giveback").status == 0);
        REQUIRE(c.wait("a", "event=failover.complete", soon, since));
        CHECK(sha256("a", "before") == before);
        CHECK(sha256("a", "meanwhile") == meanwhile);
    }
};

// Every record 1..acked is present, in order and intact; what follows may be a torn tail.
void check_records(const std::string& content, std::uint32_t acked) {
    std::uint32_t n = 0;
    for (std::size_t off = 0; off + record_size <= content.size() && n < acked; off += record_size) {
        ++n;
        INFO("record " << n << " of " << acked << " acknowledged");
        REQUIRE(content.substr(off, record_size) == record(n));
    }
    CHECK(n == acked);
}

#define REQUIRE_FRONT_END()                                                                 \
    do {                                                                                    \
        TANDEM_REQUIRE_NAMESPACES();                                                        \
        if (!std::filesystem::exists("/dev/fuse")) TANDEM_SKIP("no /dev/fuse on this machine"); \
    } while (0)

}  // namespace

TEST_CASE("no acknowledged write is lost when the active node crashes (20 crashes at random points)",
          "[scenario][store]") {
    REQUIRE_FRONT_END();
    live_store s;
    auto& c = s.c;
    s.up();
    std::mt19937 rng(std::random_device{}());
    std::string active = "a", standby = "b";
    std::uint32_t total = 0;
    for (int round = 1; round <= 20; ++round) {
        INFO("round " << round << ": " << active << " is active and crashes");
        auto file = fmt::format("{}/records-{}", s.mount(active), round);
        record_writer w(c.pid(active), file);
        // Crash after a random number of acknowledged records.
        auto target = std::uniform_int_distribution<std::uint32_t>(1, 300)(rng);
        REQUIRE(wait_until([&] { return w.acked >= target; }, 60s));
        auto since = c.last_seq(standby);
        s.crash(active);
        w.kill9();
        std::uint32_t acked = w.acked;
        total += acked;

        REQUIRE(c.wait(standby, "event=failover.complete", soon, since));
        REQUIRE(c.status(standby)["store"]["mounted"] == true);
        auto got = s.in_store(standby, "cat " + fmt::format("{}/records-{}", s.mount(standby), round));
        REQUIRE(got.status == 0);
        check_records(got.out, acked);
        s.rejoin(active);
        std::swap(active, standby);
    }
    // Every earlier round's records are still there on the last active node.
    for (int round = 1; round <= 20; ++round) {
        auto got = s.in_store(active, fmt::format("cat {}/records-{} | wc -c", s.mount(active), round));
        CHECK(got.status == 0);
    }
    INFO("acknowledged records in all: " << total);
    CHECK(s.in_store(active, "true").status == 0);
}

TEST_CASE("the old primary rejoins with only the delta and, after a giveback, holds what the secondary wrote",
          "[scenario][store]") {
    REQUIRE_FRONT_END();
    live_store s;
    auto& c = s.c;
    s.up();
    s.write_random("a", "before", 4);
    s.crash_over_to("a", "b");
    // beta writes 8 MiB while alpha is away.
    auto during = s.write_random("b", "during", 8);
    auto before = s.sha256("b", "before");
    auto sent = s.sent("b");
    s.rejoin("a");
    auto delta = s.sent("b") - sent;
    INFO("resync after the failover: " << delta << " bytes of a 128 MiB volume");
    CHECK(delta >= 8 * mib);   // at least what beta wrote
    // A delta, not the whole volume: beta's writes, and alpha's hot 4 MiB
    // activity-log extents (what a crashed primary may have written alone).
    CHECK(delta <= 64 * mib);
    CHECK(c.status("a")["store"]["mounted"] == false);  // the standby never mounts

    auto since = c.last_seq("a");
    REQUIRE(c.ctl("b", "giveback").status == 0);
    REQUIRE(c.wait("a", "event=failover.complete", soon, since));
    REQUIRE(c.wait("b", "state=STANDBY", soon));
    CHECK(c.status("b")["store"]["mounted"] == false);
    CHECK(s.sha256("a", "during") == during);
    CHECK(s.sha256("a", "before") == before);
}

TEST_CASE("with fstype xfs the primary creates /store, and after a crash the secondary mounts it intact",
          "[scenario][store]") {
    REQUIRE_FRONT_END();
    if (run("command -v mkfs.xfs xfs_repair").status != 0) FAIL("xfsprogs is not installed: run make deps");
    live_store s(false, "xfs");
    auto& c = s.c;
    s.up();
    auto fstype = [&](const std::string& node) {
        return s.in_store(node, fmt::format("findmnt -no FSTYPE,OPTIONS {}", s.mount(node))).out;
    };
    CHECK_THAT(fstype("a"), Catch::StartsWith("xfs ") && Catch::Contains("nouuid"));
    auto data = s.write_random("a", "data", 8);
    s.crash_over_to("a", "b");
    CHECK(c.status("b")["store"]["mounted"] == true);
    CHECK_THAT(fstype("b"), Catch::StartsWith("xfs "));
    CHECK(s.sha256("b", "data") == data);
    // The log the crash left was replayed at mount; the file system checks clean once unmounted.
    // A clean stop releases /store: unmounted, front end detached, volume closed.
    CHECK(c.stop("b") == 0);
    CHECK(run(fmt::format("nsenter -t {} -m -- findmnt {}", s.keepers["b"], s.mount("b"))).status != 0);
    auto repair = run("xfs_repair -n " + s.vb.dev + " 2>&1");  // the volume itself: the front end maps it 1:1
    INFO(repair.out);
    CHECK(repair.status == 0);
}

TEST_CASE("the standby does not mount /store, and a giveback with /store busy is refused naming the holder",
          "[scenario][store]") {
    REQUIRE_FRONT_END();
    live_store s;
    auto& c = s.c;
    s.up();
    auto st = c.status("b")["store"];
    CHECK(st["mounted"] == false);
    CHECK(st["device"] == "");
    // Nothing is mounted on beta's mount point, in beta's own mount namespace either.
    CHECK(s.in_store("b", "mountpoint -q " + s.mount("b")).status != 0);
    CHECK(s.in_store("a", "mountpoint -q " + s.mount("a")).status == 0);

    {
        store_holder_process holder(c.pid("a"), s.mount("a"));
        REQUIRE(wait_until([&] { return holder.holds(s.mount("a")); }));
        auto r = c.ctl("a", "giveback");
        INFO(r.out);
        CHECK(r.status == 1);
        CHECK(r.out.find(fmt::format("pid {}", holder.pid)) != std::string::npos);
        CHECK(r.out.find("cwd") != std::string::npos);
        CHECK(c.state("a") == "ACTIVE");
        CHECK(c.status("a")["store"]["mounted"] == true);

        // The standby's takeover asks alpha to release: alpha refuses it for the
        // same reason, and beta's request lapses.
        auto a_since = c.last_seq("a"), b_since = c.last_seq("b");
        REQUIRE(c.ctl("b", "takeover").status == 0);
        REQUIRE(c.wait("a", "event=command.refused", soon, a_since));
        CHECK_THAT(c.log("a"), Catch::Contains("the takeover beta asked for is refused") &&
                                   Catch::Contains(fmt::format("pid {}", holder.pid)));
        CHECK(c.wait("b", "event=takeover.expired", soon, b_since));
        CHECK(c.state("a") == "ACTIVE");
        CHECK(c.state("b") == "STANDBY");
        CHECK(c.status("a")["store"]["mounted"] == true);
    }
    auto since = c.last_seq("b");
    REQUIRE(c.ctl("a", "giveback").status == 0);
    REQUIRE(c.wait("b", "event=failover.complete", soon, since));
    CHECK(c.status("b")["store"]["mounted"] == true);
}

TEST_CASE("a file system that fsck -p cannot repair fails both acquires; fsck_repair = \"yes\" repairs it once, "
          "through the replicated volume, so the peer's copy is repaired too",
          "[scenario][store]") {
    REQUIRE_FRONT_END();
    live_store s;
    auto& c = s.c;
    s.up();
    auto kept = s.write_random("a", "kept", 1);
    (void)s.write_random("a", "other", 1);
    // Both down, beta first (alpha keeps /store until its own stop unmounts it).
    for (auto node : {"b", "a"}) {
        REQUIRE(c.stop(node) == 0);
        s.release_keeper(node);
    }
    // A fault in the data itself: "other" claims the blocks of "kept" and the file
    // system is marked with errors. fsck -p stops at multiply-claimed blocks.
    auto inode = [&](const std::string& f) {
        auto r = run_ok(fmt::format("debugfs -R 'stat /{}' {} 2>/dev/null", f, s.va.dev));
        auto at = r.find("EXTENTS:\n(0");
        REQUIRE(at != std::string::npos);
        auto colon = r.find("):", at), dash = r.find('-', colon);
        return r.substr(colon + 2, dash - colon - 2);
    };
    auto first = inode("kept");
    run_ok(fmt::format("debugfs -w -R 'sif /other block[5] {}' {} 2>&1", first, s.va.dev));
    run_ok(fmt::format("debugfs -w -R 'ssv state 2' {} 2>&1", s.va.dev));
    REQUIRE(run(fmt::format("fsck.ext4 -n {} 2>&1", s.va.dev)).status == 4);
    // The same bytes on beta: a corruption that replication faithfully copied.
    run_ok(fmt::format("dd if={} of={} bs=1M oflag=direct status=none", s.va.dev, s.vb.dev));

    s.start("a");
    s.start("b");
    REQUIRE(c.wait("a", "state=FAILED", soon, 0));
    REQUIRE(c.wait("b", "state=FAILED", soon, 0));
    for (auto node : {"a", "b"}) {
        auto log = c.log(node);
        INFO(log);
        CHECK_THAT(log, Catch::Contains("-p") && Catch::Contains("exited 4") &&
                            Catch::Contains("set [store] fsck_repair = \"yes\""));
        CHECK(c.status(node)["store"]["mounted"] == false);
    }

    // The operator repairs alpha's copy through the engine: the repair replicates.
    auto preen = c.opt.extra_a;
    auto repair = preen;
    repair.replace(repair.find("[store]\n"), 8, "[store]\nfsck_repair = \"yes\"\n");
    c.rewrite_config("a", repair);
    auto reload = c.ctl("a", "reload");
    INFO(reload.out);
    REQUIRE(reload.status == 0);
    CHECK_THAT(reload.out, Catch::Contains("store.fsck_repair: preen -> yes"));
    auto since = c.last_seq("a");
    REQUIRE(c.ctl("a", "online").status == 0);
    REQUIRE(c.wait("a", "event=failover.complete", soon, since));
    CHECK(c.state("a") == "ACTIVE");
    CHECK_THAT(c.log("a"), Catch::Contains("fsck.ext4 -y") && Catch::Contains("corrected errors") &&
                               Catch::Contains("(fuse+loop, repaired)"));
    CHECK(s.sha256("a", "kept") == kept);
    c.rewrite_config("a", preen);
    REQUIRE(c.ctl("a", "reload").status == 0);

    // Beta's copy received the repair: after a takeover it passes fsck -p as it is.
    REQUIRE(c.ctl("b", "online").status == 0);
    REQUIRE(c.ctl("b", fmt::format("sync --timeout {}s", sync_limit.count())).status == 0);
    REQUIRE(c.wait("b", "state=STANDBY", soon));
    since = c.last_seq("b");
    REQUIRE(c.ctl("b", "takeover").status == 0);
    REQUIRE(c.wait("b", "event=failover.complete", soon, since));
    CHECK_THAT(c.log("b"), Catch::Contains("(fuse+loop, checked)"));
    CHECK(s.sha256("b", "kept") == kept);
}

TEST_CASE("a health failure with /store busy ends its holders, hands over, and the copies stay one history",
          "[scenario][store]") {
    REQUIRE_FRONT_END();
    live_store s;
    auto& c = s.c;
    s.up();
    auto before = s.write_random("a", "before", 4);
    {
        store_holder_process polite(c.pid("a"), s.mount("a")), deaf(c.pid("a"), s.mount("a"), true);
        REQUIRE(wait_until([&] { return polite.holds(s.mount("a")) && deaf.holds(s.mount("a")); }));
        // Alpha's health check fails: the release cannot wait for an operator, so
        // the holders get SIGTERM, the one that ignores it SIGKILL ([store] kill_after).
        auto since = c.last_seq("b");
        std::ofstream(s.dir.path() / "sick-a") << "";
        REQUIRE(c.wait("b", "event=failover.complete", soon, since));
        CHECK(polite.end_signal() == SIGTERM);
        CHECK(deaf.end_signal() == SIGKILL);
        auto log = c.log("a");
        INFO(log);
        CHECK_THAT(log, Catch::Contains("must be released now: SIGTERM to") && Catch::Contains("SIGKILL after 2s"));
        CHECK_THAT(log, Catch::Contains("ended on SIGTERM") && Catch::Contains("killed"));
        CHECK(c.state("a") == "FAILED");
        CHECK(c.status("a")["store"]["mounted"] == false);
        CHECK(s.in_store("a", "mountpoint -q " + s.mount("a")).status != 0);
    }
    s.one_history_after_alpha_gave_up(before);
}

TEST_CASE("a health failure with /store held by a loop device detaches it lazily, hands over, and the copies stay "
          "one history",
          "[scenario][store]") {
    REQUIRE_FRONT_END();
    live_store s;
    auto& c = s.c;
    s.up();
    auto before = s.write_random("a", "before", 4);
    // A user of /store that is not a process: no signal ends it, and umount says busy.
    auto attached = s.in_store("a", fmt::format("truncate -s 8M {0}/img && losetup -f --show {0}/img", s.mount("a")));
    REQUIRE(attached.status == 0);
    auto inner = attached.out.substr(0, attached.out.find('\n'));
    REQUIRE(inner.rfind("/dev/loop", 0) == 0);
    struct detach_at_end {
        std::string dev;
        ~detach_at_end() { run("losetup -d " + dev); }
    } guard{inner};

    auto since = c.last_seq("b");
    std::ofstream(s.dir.path() / "sick-a") << "";
    REQUIRE(c.wait("b", "event=failover.complete", soon, since));
    auto log = c.log("a");
    INFO(log);
    CHECK_THAT(log, Catch::Contains("was still busy after its holders were stopped") &&
                        Catch::Contains("still busy: detached lazily"));
    CHECK(c.state("a") == "FAILED");
    CHECK(c.status("a")["store"]["mounted"] == false);
    CHECK(s.in_store("a", "mountpoint -q " + s.mount("a")).status != 0);
    // The file system left behind on alpha is cut from the volume: a write
    // through it cannot be made durable (the flush reaches the dead front end).
    CHECK(run(fmt::format("dd if=/dev/zero of={} bs=4096 count=1 oflag=direct conv=fsync", inner)).status != 0);

    CHECK(s.sha256("b", "before") == before);
    s.one_history_after_alpha_gave_up(before);
}

TEST_CASE("a tandemd stopped with /store busy leaves it on a dead device, and its next start detaches it",
          "[scenario][store]") {
    REQUIRE_FRONT_END();
    live_store s;
    auto& c = s.c;
    s.up();
    auto before = s.write_random("a", "before", 4);
    {
        store_holder_process holder(c.pid("a"), s.mount("a"));
        REQUIRE(wait_until([&] { return holder.holds(s.mount("a")); }));
        // The stop cannot unmount /store; beta takes over, and alpha's mount stays
        // behind on a loop device whose server has exited.
        auto since = c.last_seq("b");
        CHECK(c.stop("a") == 0);
        REQUIRE(c.wait("b", "event=failover.complete", soon, since));
        pid_t keeper = s.keepers["a"];
        CHECK(run(fmt::format("nsenter -t {} -m -- mountpoint -q {}", keeper, s.mount("a"))).status == 0);

        // Alpha starts again in the same mount namespace, as on a host.
        c.start("a", {}, {"nsenter", "-t", std::to_string(keeper), "-m", "--"});
        auto synced = c.ctl("a", fmt::format("sync --timeout {}s", sync_limit.count()));
        INFO(synced.out << "\nlog of alpha:\n" << c.log("a"));
        REQUIRE(synced.status == 0);
        REQUIRE(c.wait("a", "state=STANDBY", soon));
        // The start-up detached it before anything else (before the control socket).
        CHECK_THAT(c.log("a"), Catch::Contains("over the detached FUSE volume of a tandemd that is gone"));
        CHECK(run(fmt::format("nsenter -t {} -m -- mountpoint -q {}", keeper, s.mount("a"))).status != 0);
    }
    auto meanwhile = s.write_random("b", "meanwhile", 4);
    // Before the fix, alpha's acquire took the dead mount for its own ("already mounted").
    auto since = c.last_seq("a");
    REQUIRE(c.ctl("b", "giveback").status == 0);
    REQUIRE(c.wait("a", "event=failover.complete", soon, since));
    CHECK(c.status("a")["store"]["mounted"] == true);
    CHECK(s.sha256("a", "before") == before);
    CHECK(s.sha256("a", "meanwhile") == meanwhile);
}

TEST_CASE("shared storage: the new active mounts the shared device after a crash, and a read-only /store is a "
          "failover trigger",
          "[scenario][store]") {
    TANDEM_REQUIRE_NAMESPACES();
    live_store s(true);
    auto& c = s.c;
    s.up();
    auto st = c.status("a")["store"];
    CHECK(st["frontend"] == "shared");
    CHECK(st["device"] == s.va.dev);
    CHECK(c.status("b")["store"]["mounted"] == false);  // the standby never mounts the shared device
    auto before = s.write_random("a", "before", 4);

    // A crash of the active: beta checks the file system and mounts the same device.
    s.crash_over_to("a", "b");
    REQUIRE(c.status("b")["store"]["mounted"] == true);
    CHECK(s.sha256("b", "before") == before);
    s.rejoin("a");
    CHECK(c.status("a")["store"]["mounted"] == false);

    // The store turns read-only under beta (an NFS server's export, a failing
    // LUN): beta's writability probe fails, beta gives up ACTIVE, alpha mounts.
    auto since = c.last_seq("a");
    REQUIRE(s.in_store("b", "mount -o remount,ro " + s.mount("b")).status == 0);
    REQUIRE(c.wait("a", "event=failover.complete", soon, since));
    auto health = c.status("b")["local"]["health_detail"].get<std::string>();
    INFO("beta's health: " << health);
    CHECK(health.find("read-only") != std::string::npos);
    CHECK(c.state("b") != "ACTIVE");
    CHECK(c.status("b")["store"]["mounted"] == false);
    REQUIRE(c.status("a")["store"]["mounted"] == true);
    CHECK(s.sha256("a", "before", fmt::format("touch {}/writable && ", s.mount("a"))) == before);
}

TEST_CASE("shared storage with a lease: a cut heartbeat cable leaves /store mounted on one node only, and the lease "
          "expires when the active node dies",
          "[scenario][store][lease]") {
    TANDEM_REQUIRE_NAMESPACES();
    live_store s(true, "ext4", true);
    auto& c = s.c;
    s.up();
    auto before = s.write_random("a", "before", 4);
    auto la = c.status("a")["store"]["lease"];
    INFO("alpha's lease: " << la.dump());
    CHECK(la["ok"] == true);
    CHECK(la["holding"] == true);
    CHECK(la["peer_node"] == "beta");
    CHECK(la["peer_alive"] == true);
    // beta reads alpha's slot once per heartbeat interval: its next turn sees "holding".
    CHECK(wait_until([&] { return c.status("b")["store"]["lease"]["peer_holding"] == true; }));
    // The same for a person: one line of `tandemctl status`.
    CHECK_THAT(c.ctl("b", "status").out, Catch::Matches("[\\s\\S]*\nlease     \\S+  ok  this node not holding, renewed "
                                                        "[0-9.]+ s ago; peer alpha holding, slot changing\n[\\s\\S]*"));

    // Cut only the heartbeats: both nodes still reach the client and the storage.
    // Without the lease, beta would now check and mount the device alpha has mounted.
    auto since = c.last_seq("b");
    const char* cut = "table inet p {\n chain in {\n type filter hook input priority 0;\n udp dport 694 drop\n }\n}";
    c.ns("a").nft(cut);
    c.ns("b").nft(cut);
    REQUIRE(c.wait("b", "event=peer.lost", soon, since));
    REQUIRE(c.wait("b", "event=failover.blocked", soon, since));
    CHECK_THAT(c.ctl("b", "events").out, Catch::Contains("is still being written and says it holds /store"));
    CHECK_FALSE(c.wait("b", "state=ACTIVE", never));
    CHECK(c.status("b")["store"]["mounted"] == false);
    CHECK(c.state("a") == "ACTIVE");
    CHECK(c.status("a")["store"]["mounted"] == true);

    // Now alpha dies: its slot stops changing, and once the lease has expired
    // (twice the heartbeat timeout) beta checks and mounts the device.
    since = c.last_seq("b");
    s.crash("a");
    REQUIRE(c.wait("b", "event=failover.complete", soon, since));
    auto lb = c.status("b")["store"];
    INFO("beta's store: " << lb.dump());
    CHECK(lb["mounted"] == true);
    CHECK(lb["lease"]["holding"] == true);
    CHECK(lb["lease"]["peer_alive"] == false);
    CHECK(s.sha256("b", "before") == before);
}
