// agent: /store — the front end, the file system and the mount, acquired and released as failover phase 1.
#include "tandem/agent/store.hpp"

#include "tandem/agent/process.hpp"
#include "tandem/base/duration.hpp"
#include "tandem/base/log.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

namespace tandem::agent {

namespace asio = boost::asio;

namespace {

// Single quotes for /bin/sh: configuration values reach mkfs, fsck and mount as words.
std::string quote(const std::string& s) {
    std::string q = "'";
    for (char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    return q + "'";
}

std::string comm_of(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/comm", pid));
    std::string s;
    std::getline(in, s);
    return s;
}

// What the first 1 MiB of `dev` says: a file system of the ext family, xfs,
// nothing at all (all zero: a new volume), or something else.
enum class found { ext, xfs, zeros, other, unreadable };
found probe(const std::string& dev, std::string& why) {
    int fd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        why = fmt::format("cannot open {}: {}", dev, std::strerror(errno));
        return found::unreadable;
    }
    std::vector<unsigned char> b(1 << 20);
    auto n = ::pread(fd, b.data(), b.size(), 0);
    int e = errno;
    ::close(fd);
    if (n < 2048) {
        why = fmt::format("cannot read {}: {}", dev, n < 0 ? std::strerror(e) : "too small");
        return found::unreadable;
    }
    b.resize(static_cast<std::size_t>(n));
    if (b[1080] == 0x53 && b[1081] == 0xef) return found::ext;  // the ext superblock magic 0xEF53
    if (std::memcmp(b.data(), "XFSB", 4) == 0) return found::xfs;
    if (std::all_of(b.begin(), b.end(), [](unsigned char x) { return x == 0; })) return found::zeros;
    return found::other;
}

}  // namespace

std::vector<store_holder> store_holders(const std::string& mount) {
    std::vector<store_holder> out;
    struct stat mst {};
    if (mount.empty() || ::stat(mount.c_str(), &mst) != 0) return out;
    auto on_store = [&](const std::string& link) {
        struct stat st {};
        return ::stat(link.c_str(), &st) == 0 && st.st_dev == mst.st_dev;
    };
    auto target = [](const std::string& link) {
        char buf[4096];
        auto n = ::readlink(link.c_str(), buf, sizeof buf - 1);
        return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    };
    auto dev_text = fmt::format("{:02x}:{:02x}", major(mst.st_dev), minor(mst.st_dev));
    std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir("/proc"), ::closedir);
    if (!proc) return out;
    while (auto* de = ::readdir(proc.get())) {
        char* end = nullptr;
        long pid = std::strtol(de->d_name, &end, 10);
        if (*end || pid <= 0 || pid == ::getpid()) continue;
        auto base = fmt::format("/proc/{}", pid);
        std::vector<std::string> hows;
        for (const char* what : {"cwd", "root", "exe"})
            if (on_store(base + "/" + what)) hows.emplace_back(what);
        if (std::unique_ptr<DIR, int (*)(DIR*)> fds(::opendir((base + "/fd").c_str()), ::closedir); fds) {
            while (auto* f = ::readdir(fds.get())) {
                if (f->d_name[0] == '.') continue;
                auto link = base + "/fd/" + f->d_name;
                if (on_store(link)) hows.push_back(fmt::format("fd {} ({})", f->d_name, target(link)));
            }
        }
        std::ifstream maps(base + "/maps");
        for (std::string line; std::getline(maps, line);) {
            std::istringstream ls(line);
            std::string range, perms, offset, dev;
            ls >> range >> perms >> offset >> dev;
            if (dev == dev_text) {
                hows.emplace_back("mapped");
                break;
            }
        }
        if (hows.empty()) continue;
        store_holder h;
        h.pid = static_cast<pid_t>(pid);
        h.comm = comm_of(h.pid);
        for (auto& w : hows) h.how += (h.how.empty() ? "" : ", ") + w;
        out.push_back(std::move(h));
    }
    return out;
}

std::string describe(const std::vector<store_holder>& hs) {
    std::string s;
    for (auto& h : hs) s += fmt::format("{}pid {} ({}: {})", s.empty() ? "" : ", ", h.pid, h.comm, h.how);
    return s;
}

store_phase::store_phase(const config& c, replication::engine* e, const drbd::backend* d, lease_keeper* lease)
    : c_(c), e_(e), d_(d), lease_(lease) {}
store_phase::~store_phase() = default;

namespace {

// The device of what is mounted at `mount` (its major and minor from
// /proc/self/mountinfo), or nothing when `mount` is not a mount point.
std::optional<std::pair<unsigned, unsigned>> mount_device(const std::string& mount) {
    if (mount.empty()) return std::nullopt;
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
        std::istringstream ls(line);
        std::string id, parent, devno, root, point;
        ls >> id >> parent >> devno >> root >> point;
        if (point != mount) continue;
        unsigned maj = 0, min = 0;
        if (std::sscanf(devno.c_str(), "%u:%u", &maj, &min) != 2) return std::pair{0u, 0u};
        return std::pair{maj, min};
    }
    return std::nullopt;
}

}  // namespace

bool store_phase::mounted() const { return mount_device(c_.store.mount).has_value(); }

store_status store_phase::status() const {
    store_status s;
    s.mount = c_.store.mount;
    s.fstype = c_.store.fstype;
    s.mounted = mounted();
    s.device = device_;
    s.frontend = fe_ ? std::string(fe_->kind()) : d_ && !device_.empty() ? "drbd" : (!e_ && !device_.empty() ? "shared" : "");
    s.last_error = last_error_;
    return s;
}

std::string store_phase::busy() const {
    if (!mounted()) return "";
    auto h = store_holders(c_.store.mount);
    if (h.empty()) return "";
    return fmt::format("{} is busy: {}; stop these processes (or let the [services] stop hook do it) and retry",
                       c_.store.mount, describe(h));
}

void store_phase::recover_stale() {
    if (!e_ && !d_) {
        // Shared storage: a /store still mounted when tandemd starts was left by a
        // crashed run; this node is not active yet, so it must not keep it.
        if (!mounted()) return;
        if (::umount(c_.store.mount.c_str()) == 0)
            log::warning("store.stale", "unmounted {} left mounted on the shared device by an earlier run", c_.store.mount);
        else
            log::error("store.stale", "{} is still mounted on the shared device from an earlier run and cannot be "
                       "unmounted ({}): unmount it before the peer takes over", c_.store.mount, std::strerror(errno));
        return;
    }
    if (!e_) return;
    // No tandemd serves the volume yet, so a /store mounted now sits on a front
    // end of an earlier one: a crashed tandemd (its FUSE mount answers ENOTCONN)
    // or one stopped while /store was busy (it detached its FUSE mount, the file
    // system stayed). Either way reads and writes fail there: detach it, lazily,
    // as its holders still have it open. Anything else mounted there is not ours.
    if (auto dev = mount_device(c_.store.mount)) {
        auto what = replication::stale_frontend_device(dev->first, dev->second, c_.node.state_dir);
        if (what.empty())
            log::error("store.stale", "{} is mounted on device {}:{}, which is not this node's replicated volume: "
                       "unmount it, or this node cannot become active", c_.store.mount, dev->first, dev->second);
        else if (::umount2(c_.store.mount.c_str(), MNT_DETACH) == 0)
            log::warning("store.stale", "detached {} left mounted on {}", c_.store.mount, what);
        else
            log::error("store.stale", "cannot detach {} left mounted on {}: {}", c_.store.mount, what, std::strerror(errno));
    }
    replication::clean_stale_frontend(c_.node.state_dir);
}

asio::awaitable<phase_outcome> store_phase::prepare_file_system(const std::string& dev) {
    std::string why;
    auto fs = probe(dev, why);
    bool ext = c_.store.fstype.rfind("ext", 0) == 0;
    auto marker = c_.node.state_dir + "/store-created";
    if (fs == found::unreadable) co_return phase_outcome::failed(why);
    if (fs == found::zeros) {
        // The seeds: first-time set-up creates the file system, on the primary only.
        if (c_.node.role != node_role::primary)
            co_return phase_outcome::failed(fmt::format(
                "{} holds no file system, and only the primary creates one (this node is the secondary)", dev));
        if (std::filesystem::exists(marker))
            co_return phase_outcome::failed(fmt::format(
                "{} is blank, but this node created /store before ({} exists): refusing to format it again; "
                "restore the data, or remove the marker to start afresh",
                dev, marker));
        // Without the discard of the whole device mkfs does first: the device
        // is blank, and through the engine a discard is zeroed on both nodes.
        auto r = co_await run_command(fmt::format("mkfs.{} -q {}{}", c_.store.fstype,
                                                  ext ? "-F -E nodiscard " : "-f -K ", quote(dev)),
                                      {}, std::chrono::minutes(30));
        if (!r.ok()) co_return phase_outcome::failed(fmt::format("mkfs.{} {} {}", c_.store.fstype, dev, r.describe()));
        std::ofstream(marker) << dev << "\n";
        log::notice("store.created", "created an {} file system on {} (first-time set-up)", c_.store.fstype, dev);
        co_return phase_outcome::done("created");
    }
    if ((ext && fs != found::ext) || (!ext && fs != found::xfs))
        co_return phase_outcome::failed(fmt::format(
            "{} holds no {} file system ([store] fstype) and is not blank: refusing to format it", dev, c_.store.fstype));
    if (c_.store.fsck) {
        // [store] fsck_repair, as systemd's fsck.repair: -p repairs what is safe
        // without a question, -y everything, -n nothing. 0 to 2 mean usable. A repair
        // writes through the front end, so the peer's copy receives it too.
        const auto& how = c_.store.fsck_repair;
        auto flag = how == "yes" ? "-y" : how == "no" ? "-n" : "-p";
        if (how == "yes")
            log::warning("store.fsck", "checking {} with fsck.{} -y: it repairs whatever it finds without asking "
                         "([store] fsck_repair = \"yes\"; set it back to \"preen\" once the file system is repaired)",
                         dev, c_.store.fstype);
        auto r = co_await run_command(fmt::format("fsck.{} {} {}", c_.store.fstype, flag, quote(dev)), {},
                                      std::chrono::minutes(30));
        if (!r.started || r.timed_out || r.exit_code > 2)
            co_return phase_outcome::failed(fmt::format(
                "fsck.{} {} {} {}: {}", c_.store.fstype, flag, dev, r.describe(),
                how == "yes" ? "the file system could not be repaired (the journal has fsck's output)"
                             : "the file system needs a manual check: set [store] fsck_repair = \"yes\", run tandemctl "
                               "reload, then tandemctl online, and fsck -y repairs it through the replicated volume"));
        if (r.exit_code != 0)
            log::warning("store.fsck", "fsck.{} {} corrected errors on {} ({})", c_.store.fstype, flag, dev, r.describe());
        co_return phase_outcome::done(r.exit_code != 0 ? "repaired" : "checked");
    }
    co_return phase_outcome::done("");
}

asio::awaitable<phase_outcome> store_phase::acquire() {
    std::string why;
    std::string what;
    if (e_ && !fe_ && mounted())
        co_return phase_outcome::failed(last_error_ = fmt::format(
            "{} is already mounted, and not on this node's replicated volume: unmount it and retry", c_.store.mount));
    if (e_) {
        if (auto r = e_->promote(why); !r)
            co_return phase_outcome::failed(last_error_ = "cannot promote the replicated volume: " + why);
        auto s = e_->status();
        what = fmt::format("volume primary, generation {:016x}; peer {}", s.gen.current, to_string(s.link));
    } else if (d_) {
        // DRBD refuses to promote data that is not UpToDate; Tandem never forces it.
        auto r = co_await d_->run(drbd::action::primary);
        if (!r.ok()) co_return phase_outcome::failed(last_error_ = "drbdadm primary " + d_->res().name + " " + r.describe());
        what = "DRBD " + d_->res().name + " primary";
    } else if (lease_) {
        // Shared storage: our slot says "holding" before fsck or mount touch the
        // device, and the peer's slot, read again in the same turn, must not.
        auto v = co_await lease_->write_now(true, c_.health.command_timeout);
        if (!v.ok)
            co_return phase_outcome::failed(last_error_ = fmt::format("cannot take the lease on {}: {}", lease_->device(), v.error));
        if (v.peer_holding && v.peer_alive(std::chrono::steady_clock::now(), lease_expiry(c_.heartbeat.timeout)))
            co_return phase_outcome::failed(last_error_ = fmt::format(
                "the peer ({}) holds {} on the shared device: its slot on the lease device {} says so and is still "
                "being written; not checking or mounting the device here",
                v.peer_node, c_.store.mount, lease_->device()));
        what = fmt::format("lease on {} taken", lease_->device());
    }
    if (c_.store.mount.empty()) co_return phase_outcome::done(what + "; not mounted ([store] mount is empty)");
    if (mounted()) co_return phase_outcome::nothing(what + "; " + c_.store.mount + " is already mounted");
    if (e_) {
        if (!fe_) {
            replication::frontend_config fc;
            fc.kind = c_.store.frontend == "fuse"  ? replication::frontend_kind::fuse
                      : c_.store.frontend == "nbd" ? replication::frontend_kind::nbd
                                                   : replication::frontend_kind::automatic;
            fc.work_dir = c_.node.state_dir;
            fc.threads = c_.store.threads;
            auto fe = replication::expose(*e_, fc, why);
            if (!fe) co_return phase_outcome::failed(last_error_ = "cannot expose the volume: " + why);
            fe_ = std::move(*fe);
        }
        device_ = fe_->device();
    } else if (d_) {
        device_ = d_->device();
    } else {
        device_ = c_.replication.device;
    }
    auto fs = co_await prepare_file_system(device_);
    if (fs.outcome == phase_outcome::kind::failed) {
        last_error_ = fs.detail;
        co_return fs;
    }
    std::error_code ec;
    std::filesystem::create_directories(c_.store.mount, ec);
    auto opts = c_.store.options.empty() ? std::string() : " -o " + quote(c_.store.options);
    auto r = co_await run_command(
        fmt::format("mount -t {}{} {} {}", c_.store.fstype, opts, quote(device_), quote(c_.store.mount)), {},
        std::chrono::minutes(10));
    if (!r.ok()) co_return phase_outcome::failed(last_error_ = fmt::format("mount {} on {} {}", device_, c_.store.mount, r.describe()));
    last_error_.clear();
    co_return phase_outcome::done(fmt::format("{}{}{} mounted on {} ({}{})", what, what.empty() ? "" : "; ", device_,
                                              c_.store.mount, fe_ ? fe_->kind() : d_ ? "drbd" : "shared",
                                              fs.detail.empty() ? "" : ", " + fs.detail));
}

asio::awaitable<std::string> store_phase::stop_holders() {
    std::string done;
    // A supervisor may start a holder again: those found after the first round
    // get no grace, and three rounds are the limit (the unmount then says busy).
    for (int round = 0; round < 3; ++round) {
        auto hs = store_holders(c_.store.mount);
        if (hs.empty()) break;
        auto grace = round == 0 ? c_.store.kill_after : std::chrono::milliseconds(0);
        log::warning("store.holders", "{} must be released now: {} {}{}", c_.store.mount,
                     grace.count() ? "SIGTERM to" : "SIGKILL to", describe(hs),
                     grace.count() ? fmt::format(", SIGKILL after {}", format_duration(grace)) : "");
        std::vector<pid_t> pids;
        for (auto& h : hs) pids.push_back(h.pid);
        auto ended = co_await stop_processes(pids, grace);
        for (std::size_t i = 0; i < ended.size(); ++i) {
            using how = stopped_process::how;
            auto e = ended[i].end;
            done += fmt::format("{}pid {} ({}) {}", done.empty() ? "" : ", ", hs[i].pid, hs[i].comm,
                                e == how::terminated ? "ended on SIGTERM"
                                : e == how::killed   ? "killed"
                                : e == how::gone     ? "had exited"
                                                     : "survived SIGKILL");
        }
    }
    if (!done.empty()) log::notice("store.holders_stopped", "stopped the processes holding {}: {}", c_.store.mount, done);
    co_return done;
}

asio::awaitable<phase_outcome> store_phase::release(release_kind how) {
    std::string stopped;
    bool lazily = false;
    if (mounted()) {
        // Never pull the file system from under a running application: a release
        // that may wait is refused; one that cannot (the node must give up
        // ACTIVE) ends the holders first, as the copies would diverge otherwise.
        if (auto b = busy(); !b.empty()) {
            if (how == release_kind::requested) co_return phase_outcome::failed(last_error_ = b);
            stopped = co_await stop_holders();
        }
        // In a child, not here: the unmount writes the file system back through
        // our own FUSE server. Were tandemd killed meanwhile, a umount2() of ours
        // would wait for that server inside the kernel, forever; the child's
        // gets an I/O error instead. (And the io_context keeps running.)
        auto r = co_await run_command("umount " + quote(c_.store.mount), {}, std::chrono::minutes(10));
        if (!r.ok()) {
            auto b = busy();
            auto why = fmt::format("umount {} {}{}", c_.store.mount, r.describe(), b.empty() ? "" : "; " + b);
            // Still busy after its holders were ended: a process asleep in the kernel,
            // or a user that is not a process (a loop device or an NFS export on
            // /store). A forced release must still let the peer continue this
            // volume's history. Over the engine's own front end it can: detach the
            // mount lazily, and closing the front end below cuts the file system
            // left behind from the volume (its I/O fails from then on), so the
            // demotion is safe. DRBD's device and a shared one stay writable under
            // a lazy unmount: there the release fails, and the operator resolves it.
            if (how == release_kind::requested || !fe_ || !e_) co_return phase_outcome::failed(last_error_ = why);
            auto l = co_await run_command("umount -l " + quote(c_.store.mount), {}, std::chrono::minutes(1));
            if (!l.ok())
                co_return phase_outcome::failed(last_error_ = fmt::format("{}; umount -l {}", why, l.describe()));
            log::warning("store.detached_busy",
                         "{} was still busy after its holders were stopped ({}): detached it lazily; the front end "
                         "is closed under it, so what still holds it gets I/O errors, and the peer continues the "
                         "volume's history",
                         c_.store.mount, why);
            lazily = true;
        }
    }
    auto stopped_note = (stopped.empty() ? std::string() : "; stopped its holders: " + stopped) +
                        (lazily ? "; still busy: detached lazily, its front end closed under it" : "");
    if (fe_) {
        if (auto r = lazily ? fe_->cut() : fe_->close(); !r)
            log::warning("store.detach", "detaching {}: {}", device_, r.error().message());
        fe_.reset();
    }
    device_.clear();
    if (d_) {
        auto r = co_await d_->run(drbd::action::secondary);
        if (!r.ok())
            co_return phase_outcome::failed(last_error_ = "drbdadm secondary " + d_->res().name + " " + r.describe());
        co_return phase_outcome::done(
            (c_.store.mount.empty() ? "DRBD secondary" : c_.store.mount + " unmounted; DRBD secondary") + stopped_note);
    }
    if (e_) {
        if (auto r = e_->demote(); !r)
            co_return phase_outcome::failed(last_error_ = "demoting the replicated volume: " + r.error().message());
        co_return phase_outcome::done(
            (c_.store.mount.empty() ? "volume secondary" : c_.store.mount + " unmounted; volume secondary") + stopped_note);
    }
    if (lease_) {
        auto v = co_await lease_->write_now(false, c_.health.command_timeout);
        if (!v.ok) log::warning("lease.not_released", "{}: the slot still says \"holding\": {}", lease_->device(), v.error);
    }
    co_return phase_outcome::done(c_.store.mount + " unmounted" + stopped_note);
}

}  // namespace tandem::agent
