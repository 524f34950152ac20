// agent: tandemd's main — reads the configuration and wires the components together.
#include "tandem/agent/config.hpp"
#include "tandem/agent/drbd.hpp"
#include "tandem/agent/failover.hpp"
#include "tandem/agent/hw_watchdog.hpp"
#include "tandem/agent/runtime.hpp"
#include "tandem/agent/version.hpp"
#include "tandem/base/kmod.hpp"
#include "tandem/base/log.hpp"
#include "tandem/replication/engine.hpp"
#include "tandem/replication/frontend.hpp"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <cstring>
#include <iostream>
#include <string>

using namespace tandem;
using namespace tandem::agent;

namespace {

constexpr const char* usage =
    "usage: tandemd [-c FILE] [--debug]\n"
    "       tandemd --check-config FILE\n"
    "       tandemd -c FILE --adopt-volume\n"
    "       tandemd --version\n"
    "  -c, --config FILE      configuration (default /etc/tandem/tandem.toml)\n"
    "      --check-config FILE  validate FILE and the key it names, then exit\n"
    "      --adopt-volume     the replicated device holds the same data as before (restored, moved,\n"
    "                         renamed): record its identity in the metadata, then exit (tandemd stopped)\n"
    "      --debug            log debug messages too\n";

// Features checked once at start-up, each failure naming what is missing.
// `starting`: tandemd is about to run (a missing drbd.ko is loaded), not only checking.
void check_features(const config& c, bool starting) {
    if (c.replication.backend == backend_kind::drbd)
        if (auto why = drbd::check_host(c, starting); !why.empty()) throw std::runtime_error(why);
    if (c.replication.backend == backend_kind::uring && !c.store.mount.empty()) {
        // nbd.ko is loaded at the first acquire (or here, when tandemd starts);
        // a check only asks whether modprobe could load it.
        auto nbd = [&] {
            if (starting) return replication::have_nbd();  // the front end's own check, loading if need be
            return ::access("/sys/module/nbd", F_OK) == 0 || kernel_module_available("nbd");
        };
        const bool fuse_ok = ::access("/dev/fuse", R_OK | W_OK) == 0;
        const auto& fe = c.store.frontend;
        if (fe == "nbd" && !nbd())
            throw std::runtime_error(fmt::format(
                "[store] frontend = \"nbd\" needs nbd.ko, which is not loaded and modprobe cannot {} it: use a "
                "kernel with nbd.ko, or frontend = \"fuse\"{}",
                starting ? "load" : "find", fuse_ok ? " (/dev/fuse is usable here)" : ""));
        if (fe == "fuse" && !fuse_ok)
            throw std::runtime_error("[store] frontend = \"fuse\" needs /dev/fuse, which is not usable: load the fuse "
                                     "module, or use frontend = \"nbd\" on a kernel with nbd.ko");
        if (fe == "auto" && !fuse_ok && !nbd())
            throw std::runtime_error(fmt::format(
                "[store] mount = \"{}\" needs a front end: /dev/fuse is not usable and nbd.ko is not loaded; load "
                "the fuse or nbd module",
                c.store.mount));
    }
    if (!c.connectivity.targets.empty()) {
        int fd = ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
        if (fd < 0)
            throw std::runtime_error(fmt::format(
                "connectivity.targets needs raw ICMP sockets, which failed: {} (run as root or with CAP_NET_RAW)",
                std::strerror(errno)));
        ::close(fd);
    }
    // Opening the watchdog starts it, so a check only looks at the device node.
    if (!c.watchdog.device.empty())
        if (auto why = hw_watchdog::check(c.watchdog.device); !why.empty()) throw std::runtime_error(why);
    // Hooks and check commands are awaited through pidfds (Linux >= 5.3).
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0));
    if (pidfd < 0)
        throw std::runtime_error(fmt::format("pidfd_open is not available ({}); Tandem needs Linux 5.3 or later",
                                             std::strerror(errno)));
    ::close(pidfd);
}

}  // namespace

int main(int argc, char** argv) {
    std::string path = "/etc/tandem/tandem.toml";
    bool check_only = false;
    bool adopt = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if ((a == "-c" || a == "--config") && i + 1 < argc) {
            path = argv[++i];
        } else if (a == "--check-config" && i + 1 < argc) {
            path = argv[++i];
            check_only = true;
        } else if (a == "--adopt-volume") {
            adopt = true;
        } else if (a == "--debug") {
            log::set_min_level(log::level::debug);
        } else if (a == "--version") {
            std::cout << "tandemd " << tandem_version << "\n";
            return 0;
        } else if (a == "-h" || a == "--help") {
            std::cout << usage;
            return 0;
        } else {
            std::cerr << "tandemd: unknown argument \"" << a << "\"\n" << usage;
            return 2;
        }
    }
    config cfg;
    try {
        cfg = load_config(path);
    } catch (const config_error& e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
    if (check_only) {
        try {
            check_features(cfg, false);
        } catch (const std::exception& e) {
            std::cerr << path << ": valid TOML, but this build cannot run it: " << e.what() << "\n";
            return 1;
        }
        std::cout << fmt::format("{}: valid — cluster {} (VIP {} on {}:0), this node {} as {}, peer {} at {}\n",
                                 path, cfg.cluster.name, netlink::to_string(cfg.cluster.vip), cfg.cluster.interface,
                                 cfg.node.name, to_string(cfg.node.role), cfg.peer.name,
                                 netlink::address_string(cfg.peer.address));
        return 0;
    }
    if (adopt) {
        if (cfg.replication.backend != backend_kind::uring) {
            std::cerr << path << ": --adopt-volume is for replication.backend \"uring\"; this node's backend is \""
                      << to_string(cfg.replication.backend) << "\"\n";
            return 1;
        }
        auto r = replication::engine::adopt_volume(cfg.replication.device, cfg.replication.metadata);
        if (!r) {
            std::cerr << fmt::format("tandemd: cannot adopt {} into {}: {}{}\n", cfg.replication.device,
                                     cfg.replication.metadata, r.error().message(),
                                     r.error() == std::errc::resource_unavailable_try_again
                                         ? " (tandemd is running: stop it first)"
                                         : "");
            return 1;
        }
        std::cout << "tandemd: " << *r << "\n";
        return 0;
    }
    log::set_tag(cfg.node.name);
    ::signal(SIGPIPE, SIG_IGN);
    try {
        check_features(cfg, true);
        boost::asio::io_context io(1);
        node_runtime rt(io, cfg);
        const config& live = rt.current_config();  // updated in place by reloads
        std::vector<std::unique_ptr<failover_phase>> phases;
        phases.push_back(rt.make_storage_phase());
        phases.push_back(make_alias_phase(rt.vip()));
        phases.push_back(make_vip_phase(rt.vip()));
        phases.push_back(make_services_phase(live));
        phases.push_back(make_announce_phase(rt.vip()));
        rt.install_sequence(failover_sequence(std::move(phases)));
        rt.start();
        io.run();
    } catch (const std::exception& e) {
        log::error("tandemd.failed", "{}", e.what());
        return 1;
    }
    return 0;
}
