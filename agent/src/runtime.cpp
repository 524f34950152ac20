// agent: tandemd's event loop — one coroutine per activity on one io_context.
#include "tandem/agent/runtime.hpp"

#include "tandem/agent/connectivity.hpp"
#include "tandem/agent/latency.hpp"
#include "tandem/agent/process.hpp"
#include "tandem/agent/version.hpp"
#include "tandem/base/clock.hpp"
#include "tandem/base/duration.hpp"
#include "tandem/base/log.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <thread>

namespace tandem::agent {

namespace asio = boost::asio;
using asio::ip::udp;
using nlohmann::json;

struct node_runtime::link_state {
    std::string name;
    std::uint8_t index = 0;
    udp::socket sock;
    udp::endpoint peer;
    std::uint64_t tx = 0, rx = 0, tx_errors = 0;
    std::optional<steady_time> last_rx;
    // The newest heartbeat received on this link, echoed back for the peer's RTT.
    std::uint64_t echo_seq = 0, echo_send_ns = 0, echo_rx_ns = 0;
    std::optional<double> rtt_ms;
    std::unique_ptr<link_latency> latency;
    std::array<std::byte, 2048> buf{};

    link_state(asio::io_context& io, std::string n) : name(std::move(n)), sock(io) {}
};

struct node_runtime::probe_state {
    std::atomic<bool> done{false};
    bool ok = false;
    std::string detail;
};

namespace {

udp::endpoint endpoint_of(const ip_address& a, std::uint16_t port) {
    if (a.family == AF_INET) {
        asio::ip::address_v4::bytes_type b;
        std::memcpy(b.data(), a.bytes.data(), 4);
        return {asio::ip::address_v4(b), port};
    }
    asio::ip::address_v6::bytes_type b;
    std::memcpy(b.data(), a.bytes.data(), 16);
    return {asio::ip::address_v6(b), port};
}

// Writes and syncs a small file in the store; a read-only or failing store is a
// failover trigger, a full one is not (the seeds' 95 % rule).
std::pair<bool, std::string> blocking_store_probe(const std::string& dir) {
    struct statvfs vfs {};
    if (::statvfs(dir.c_str(), &vfs) != 0) return {false, fmt::format("{}: {}", dir, std::strerror(errno))};
    if (vfs.f_flag & ST_RDONLY) return {false, fmt::format("{} is mounted read-only", dir)};
    std::string path = dir + "/.tandem-health";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        if (e == ENOSPC || e == EDQUOT) return {true, fmt::format("{} is full (not a failover trigger)", dir)};
        return {false, fmt::format("{} is not writable: {}", dir, std::strerror(e))};
    }
    char block[512] = "tandem health probe\n";
    bool ok = ::write(fd, block, sizeof block) == static_cast<ssize_t>(sizeof block) && ::fdatasync(fd) == 0;
    int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    if (!ok) {
        if (e == ENOSPC || e == EDQUOT) return {true, fmt::format("{} is full (not a failover trigger)", dir)};
        return {false, fmt::format("writing to {} failed: {}", dir, std::strerror(e))};
    }
    return {true, ""};
}

// A number kept in the state directory across runs: read_counter() gives 0
// when the file is missing or unreadable; save_counter() replaces it
// atomically (written, fsync'd, renamed) and says why it could not.
std::uint64_t read_counter(const std::string& path) {
    std::uint64_t v = 0;
    if (std::FILE* f = std::fopen(path.c_str(), "r")) {
        if (std::fscanf(f, "%lu", &v) != 1) v = 0;
        std::fclose(f);
    }
    return v;
}

std::optional<std::string> save_counter(const std::string& dir, const std::string& path, std::uint64_t v) {
    ::mkdir(dir.c_str(), 0700);
    auto tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return std::string(std::strerror(errno));
    auto text = std::to_string(v) + "\n";
    auto n = ::write(fd, text.data(), text.size());
    int err = n < 0 ? errno : n != static_cast<ssize_t>(text.size()) ? ENOSPC : ::fsync(fd) != 0 ? errno : 0;
    ::close(fd);  // its errno would hide the write's
    if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
    if (err != 0) {
        ::unlink(tmp.c_str());
        return std::string(std::strerror(err));
    }
    return std::nullopt;
}

std::string generation_path(const config& c) { return c.node.state_dir + "/generation." + c.node.name; }

// The boot id orders this run after every earlier one, so the peer's replay
// window accepts it: max(realtime, last boot id + 1), kept in the state
// directory. Either alone fails: the clock can step back, the file can be lost
// to a reinstall. Without a writable directory the clock is all there is.
std::uint64_t next_boot_id(const config& c) {
    auto path = c.node.state_dir + "/boot-id." + c.node.name;
    std::uint64_t id = std::max(realtime_ns(), read_counter(path) + 1);
    if (auto err = save_counter(c.node.state_dir, path, id))
        log::warning("boot_id.not_saved", "cannot save the boot id in {}: {}; relying on the clock", c.node.state_dir,
                     *err);
    return id;
}

// Outside the coroutine: GCC 12 miscompiles brace-initialised literals there.
std::vector<std::pair<std::string, std::string>> check_env(const config& c) {
    return {{"TANDEM_NODE", c.node.name}, {"TANDEM_CLUSTER", c.cluster.name}};
}

machine_params params_of(const config& c) {
    machine_params p;
    p.role = c.node.role;
    p.version = c.node.software_version;
    p.interval = c.heartbeat.interval;
    p.timeout = c.heartbeat.timeout;
    p.connectivity_configured = !c.connectivity.targets.empty();
    p.connectivity_interval = c.connectivity.interval;
    p.connectivity_retry = std::max(c.heartbeat.interval, c.connectivity.timeout);
    p.lease_configured = c.replication.backend == backend_kind::shared && !c.replication.lease_device.empty();
    p.generation = read_counter(generation_path(c));
    return p;
}

}  // namespace

node_runtime::node_runtime(asio::io_context& io, config cfg)
    : io_(io),
      cfg_(std::move(cfg)),
      bus_(cfg_.node.name),
      machine_(params_of(cfg_), std::chrono::steady_clock::now()),
      send_timer_(io),
      watchdog_timer_(io),
      refresh_timer_(io),
      signals_(io, SIGTERM, SIGINT, SIGHUP),
      hw_watchdog_timer_(io),
      boot_id_(next_boot_id(cfg_)) {
    std::uint8_t index = 0;
    for (auto& name : cfg_.heartbeat.links) {
        auto l = std::make_unique<link_state>(io, name);
        l->index = index++;
        const auto& peer = cfg_.peer_address_on(name);
        l->peer = endpoint_of(peer, cfg_.heartbeat.port);
        auto proto = peer.family == AF_INET ? udp::v4() : udp::v6();
        boost::system::error_code ec;
        l->sock.open(proto, ec);
        if (ec) throw std::runtime_error(fmt::format("heartbeat link {}: cannot open a UDP socket: {}", name, ec.message()));
        // One socket per link, bound to its device: a heartbeat that arrives on
        // eth1 proves eth1 works, and the same port can be bound on every link.
        if (::setsockopt(l->sock.native_handle(), SOL_SOCKET, SO_BINDTODEVICE, name.c_str(),
                         static_cast<socklen_t>(name.size())) != 0)
            throw std::runtime_error(fmt::format("heartbeat link {}: {} (does the interface exist?)", name,
                                                 std::strerror(errno)));
        // Network control traffic class (DSCP CS6), as routing protocols use.
        int tos = 0xc0;
        if (peer.family == AF_INET) ::setsockopt(l->sock.native_handle(), IPPROTO_IP, IP_TOS, &tos, sizeof tos);
        else ::setsockopt(l->sock.native_handle(), IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos);
        l->sock.set_option(udp::socket::reuse_address(true));
        // Bound to this node's own address on the link, so heartbeats never leave
        // from the VIP (IPv6 source selection may prefer it); FREEBIND because at
        // boot the address may be configured after tandemd starts.
        const auto& local = name == cfg_.crossover.interface && cfg_.crossover.address ? *cfg_.crossover.address
                                                                                       : cfg_.node.address;
        int one = 1;
        if (peer.family == AF_INET) ::setsockopt(l->sock.native_handle(), IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
        else ::setsockopt(l->sock.native_handle(), IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
        l->sock.bind(endpoint_of(local, cfg_.heartbeat.port), ec);
        if (ec)
            throw std::runtime_error(
                fmt::format("heartbeat link {}: cannot bind UDP port {}: {}", name, cfg_.heartbeat.port, ec.message()));
        l->sock.non_blocking(true);
        l->latency = std::make_unique<link_latency>(cfg_, name, l->sock.native_handle());
        links_.push_back(std::move(l));
    }
    vip_ = std::make_unique<vip_owner>(io, cfg_);
    auto ev = netlink::event_socket::open();
    if (!ev) throw std::runtime_error("cannot subscribe to netlink link and address events: " + ev.error().message());
    nl_events_.emplace(std::move(*ev));
    control_ = std::make_unique<control_server>(io, cfg_.control.socket, [this](const json& r) { return handle(r); },
                                                bus_);
    if (cfg_.replication.backend == backend_kind::uring) {
        replication::engine_config ec;
        ec.node_name = cfg_.node.name;
        ec.device = cfg_.replication.device;
        ec.metadata_path = cfg_.replication.metadata;
        ec.dialer = cfg_.node.role == node_role::primary;  // one side dials: never two connections
        bool xo = cfg_.crossover.address && cfg_.crossover.peer_address;
        ec.local_address = netlink::address_string(xo ? *cfg_.crossover.address : cfg_.node.address);
        ec.peer_address = netlink::address_string(xo ? *cfg_.crossover.peer_address : cfg_.peer.address);
        if (xo) ec.bind_device = cfg_.crossover.interface;
        ec.port = cfg_.replication.port;
        ec.key = cfg_.auth.key;
        ec.rate_bps = std::uint64_t{cfg_.replication.rate_mib} << 20;
        ec.yield_rate_bps = std::uint64_t{cfg_.replication.yield_rate_mib} << 20;
        // Silence for twice the heartbeat timeout, plus one 1 MiB frame at the rate.
        ec.peer_timeout = std::max(2 * cfg_.heartbeat.timeout, std::chrono::milliseconds(2000)) +
                          std::chrono::milliseconds(1000 / cfg_.replication.rate_mib + 1);
        ec.protocol = cfg_.replication.protocol_a ? replication::write_protocol::a : replication::write_protocol::c;
        ec.fencing = true;  // check_fence() lets the held writes go
        auto e = replication::engine::open(ec, [this](std::string_view kind, const std::string& detail) {
            asio::post(io_, [this, k = std::string(kind), detail] { on_replication_event(k, detail); });
        });
        if (!e)
            throw std::runtime_error(fmt::format("replication: cannot open {} with metadata {}: {}",
                                                 cfg_.replication.device, cfg_.replication.metadata,
                                                 e.error().message()));
        engine_ = std::move(*e);
    }
    if (cfg_.replication.backend == backend_kind::drbd) drbd_ = std::make_unique<drbd::backend>(cfg_);
    if (machine_.params().lease_configured) {
        lease_keeper::options lo{cfg_.replication.lease_device, cfg_.node.role, cfg_.node.name, cfg_.heartbeat.interval};
        lease_ = std::make_unique<lease_keeper>(lo, [this](const lease_info& v) {
            asio::post(io_, [this, v] { apply(machine_.on_lease(now(), v)); });
        });
    }
}

node_runtime::~node_runtime() {
    if (!hw_watchdog_) return;
    if (auto held = still_held(); !held.empty()) {
        log::error("watchdog.left_running",
                   "tandemd ends while this node still holds {}: the watchdog {} is left running and resets this host "
                   "in {} s unless tandemd is started again",
                   held, hw_watchdog_->describe().device, hw_watchdog_->describe().timeout.count());
        return;  // closed without the magic character
    }
    if (hw_watchdog_->disarm())
        log::notice("watchdog.stopped", "watchdog {} stopped: this node holds nothing", hw_watchdog_->describe().device);
    else
        log::warning("watchdog.nowayout",
                     "watchdog {} cannot be stopped (nowayout): it resets this host in {} s unless tandemd is started "
                     "again",
                     hw_watchdog_->describe().device, hw_watchdog_->describe().timeout.count());
}

std::string node_runtime::still_held() const {
    if (machine_.busy()) return "a failover sequence that has not finished";
    if (machine_.state() == host_state::active) return "the ACTIVE role (the VIP and /store)";
    if (const auto& l = machine_.lease(); l && l->wants_holding) return "the shared store's lease";
    return "";
}

void node_runtime::install_sequence(failover_sequence seq) { sequence_.emplace(std::move(seq)); }

std::unique_ptr<failover_phase> node_runtime::make_storage_phase() {
    if (cfg_.replication.backend == backend_kind::none) return make_local_storage_phase();
    auto p = std::make_unique<store_phase>(cfg_, engine_.get(), drbd_.get(), lease_.get());
    store_ = p.get();
    return p;
}

void node_runtime::start() {
    // First: a device that cannot be used stops tandemd before it holds anything.
    if (!cfg_.watchdog.device.empty()) {
        hw_watchdog_ = hw_watchdog::open(cfg_.watchdog.device, cfg_.watchdog.timeout);
        hw_watchdog_last_fed_ = now();
        const auto& d = hw_watchdog_->describe();
        bus_.publish({"watchdog.armed",
                      fmt::format("watchdog {} ({}) armed with a {} s timeout{}", d.device, d.identity,
                                  d.timeout.count(),
                                  machine_.params().lease_configured
                                      ? "; fed while the shared store's lease is renewed"
                                      : "; fed from the event loop"),
                      {{"device", d.device}, {"identity", d.identity}, {"timeout_s", std::to_string(d.timeout.count())}}});
        if (d.nowayout)
            log::warning("watchdog.nowayout",
                         "watchdog {} cannot be stopped (nowayout): even a clean stop of tandemd resets this host "
                         "{} s later unless tandemd is started again",
                         d.device, d.timeout.count());
        asio::co_spawn(io_, hw_watchdog_loop(), asio::detached);
    }
    bus_.publish({"tandemd.started",
                  fmt::format("tandemd {} as {} {} of cluster {}; listening for the peer for {}", tandem_version,
                              to_string(cfg_.node.role), cfg_.node.name, cfg_.cluster.name,
                              format_duration(cfg_.heartbeat.timeout)),
                  {{"version", cfg_.node.software_version},
                   {"role", to_string(cfg_.node.role)},
                   {"phases", fmt::format("{}", fmt::join(sequence_->names(), ","))}}});
    // Every node starts without the VIP; one left by a crash of this node is
    // removed (only addresses carrying Tandem's IFA_PROTO mark are touched).
    if (auto n = vip_->remove_stale(); !n)
        log::warning("vip.stale_check_failed", "cannot check {} for a stale VIP: {}", vip_->interface(), n.error().message());
    else if (*n)
        bus_.publish({"vip.stale_removed",
                      fmt::format("removed {} stale VIP address(es) left on {} by an earlier run", *n, vip_->interface()),
                      {{"count", std::to_string(*n)}}});
    check_link();
    if (store_) store_->recover_stale();
    if (lease_) {
        apply(machine_.on_lease(now(), lease_->view()));
        lease_->start();
    }
    if (engine_) {
        engine_->start();
        apply(machine_.on_local_sync(now(), replication_sync()));
    }
    if (drbd_) {
        apply(machine_.on_local_sync(now(), replication_sync()));  // unknown until DRBD reports: not promotable
        asio::co_spawn(io_, drbd_loop(), asio::detached);
    }
    for (auto& l : links_) asio::co_spawn(io_, receive(*l), asio::detached);
    asio::co_spawn(io_, netlink_loop(), asio::detached);
    asio::co_spawn(io_, refresh_loop(), asio::detached);
    asio::co_spawn(io_, send_loop(), asio::detached);
    asio::co_spawn(io_, watchdog_loop(), asio::detached);
    asio::co_spawn(io_, health_loop(), asio::detached);
    asio::co_spawn(io_, signal_loop(), asio::detached);
    asio::co_spawn(io_, control_->serve(), asio::detached);
    std::uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0) asio::co_spawn(io_, sd_watchdog_loop(), asio::detached);
    sd_notify(0, "READY=1");
    notify_status();
}

// ---- heartbeats

void node_runtime::send_heartbeats() {
    auto mono = monotonic_ns();
    for (auto& l : links_) {
        heartbeat hb;
        hb.boot_id = boot_id_;
        hb.seq = ++tx_seq_;  // unique per datagram, so copies on several links are not replays
        hb.send_mono_ns = mono;
        hb.echo_seq = l->echo_seq;
        hb.echo_mono_ns = l->echo_send_ns;
        hb.echo_hold_ns = l->echo_rx_ns ? mono - l->echo_rx_ns : 0;
        hb.generation = machine_.generation();
        hb.role = static_cast<std::uint8_t>(cfg_.node.role);
        hb.state = machine_.state();
        hb.mode = machine_.mode();
        hb.sync = machine_.local_sync();
        hb.flags = machine_.outgoing_flags();
        // The peer's copy falls behind ours: it must not be promoted (fencing).
        if (engine_ && engine_->writing_without_peer()) hb.flags |= hb_peer_outdated;
        hb.sync_permille = promotable(machine_.local_sync()) ? 1000 : 0;
        if (engine_ && machine_.local_sync() == sync_state::synchronizing) hb.sync_permille = engine_->sync_permille();
        if (drbd_ && machine_.local_sync() == sync_state::synchronizing) hb.sync_permille = drbd::map_state(drbd_state_).permille;
        hb.link = l->index;
        hb.cluster = cfg_.cluster.name;
        hb.node = cfg_.node.name;
        hb.version = cfg_.node.software_version;
        l->latency->fill(hb);
        hb.wire_version = peer_wire_version_;  // a peer not yet upgraded is answered in its format
        std::array<std::byte, heartbeat_size> buf{};
        auto n = encode_heartbeat(hb, cfg_.auth.key, buf);
        boost::system::error_code ec;
        l->sock.send_to(asio::buffer(buf.data(), n), l->peer, 0, ec);
        if (ec) ++l->tx_errors;  // link down or no route: the receiver's silence tells the story
        else ++l->tx;
        l->latency->on_sent(hb, ec ? ec.value() : 0);
    }
}

asio::awaitable<void> node_runtime::send_loop() {
    for (;;) {
        send_heartbeats();
        send_timer_.expires_after(cfg_.heartbeat.interval);
        co_await send_timer_.async_wait(asio::as_tuple(asio::use_awaitable));  // cancelled = send now
    }
}

asio::awaitable<void> node_runtime::receive(link_state& l) {
    asio::steady_timer backoff(io_);
    for (;;) {
        auto [ec] = co_await l.sock.async_wait(udp::socket::wait_read, asio::as_tuple(asio::use_awaitable));
        if (ec == asio::error::operation_aborted) co_return;
        // recvmsg rather than Asio's receive: the kernel's receive stamp rides along.
        bool failed = false;
        for (;;) {
            auto r = ebpf::receive_stamped(l.sock.native_handle(), l.buf);
            if (r) {
                on_datagram(l, std::span(l.buf).first(std::min(r->size, l.buf.size())), r->rx_mono_ns);
                continue;
            }
            int e = r.error().value();
            if (e == EAGAIN || e == EWOULDBLOCK) break;
            if (e == ECONNREFUSED || e == EINTR) continue;  // an ICMP port unreachable for one datagram
            // Anything else may persist: do not spin on it.
            log::warning("heartbeat.receive_error", "receiving on {}: {}", l.name, r.error().message());
            failed = true;
            break;
        }
        if (failed) {
            backoff.expires_after(cfg_.heartbeat.interval);
            co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }
}

void node_runtime::drop(drop_reason r, const std::string& link) {
    // Counted always, logged once per reason so a flood cannot fill the journal.
    if (drops_[static_cast<std::size_t>(r)]++ == 0)
        log::warning("heartbeat.dropped", "dropped a heartbeat on {}: {} (logged once per reason; see status --json)",
                     link, to_string(r));
}

void node_runtime::on_datagram(link_state& l, std::span<const std::byte> data, std::optional<std::uint64_t> rx_mono_ns) {
    auto d = decode_heartbeat(data, cfg_.auth.key);
    if (!d.ok) return drop(d.reason, l.name);
    const heartbeat& hb = d.hb;
    if (hb.cluster != cfg_.cluster.name) return drop(drop_reason::wrong_cluster, l.name);
    if (hb.node != cfg_.peer.name) return drop(drop_reason::wrong_sender, l.name);
    if (!replay_.accept(hb.boot_id, hb.seq)) return drop(drop_reason::replayed, l.name);

    auto mono = monotonic_ns();
    if (peer_boot_ && *peer_boot_ != hb.boot_id)
        bus_.publish({"peer.restarted", "the peer's tandemd restarted", {}});
    peer_boot_ = hb.boot_id;
    // Answer in the highest format the peer's current run has sent. A stale
    // older version from an upgraded peer that was still answering an old one
    // does not pull this node back; a new run of the peer starts afresh.
    std::uint8_t wire = hb.boot_id == peer_wire_boot_ ? std::max(peer_wire_version_, hb.wire_version) : hb.wire_version;
    peer_wire_boot_ = hb.boot_id;
    if (wire != peer_wire_version_) {
        log::warning("heartbeat.wire_version", "the peer speaks heartbeat version {}: sending version {}{}",
                     hb.wire_version, wire,
                     wire == heartbeat_version_v1 ? " (no latency samples and no fencing until it is upgraded)"
                     : wire < heartbeat_version   ? " (no fencing until it is upgraded)"
                                                  : "");
        peer_wire_version_ = wire;
    }
    ++l.rx;
    l.last_rx = now();
    l.echo_seq = hb.seq;
    l.echo_send_ns = hb.send_mono_ns;
    l.echo_rx_ns = mono;
    l.latency->on_received(hb, rx_mono_ns);
    // This process's own RTT, shown when the probe has no sample (status()):
    // both timestamps are ours, no clock synchronisation needed.
    if (hb.echo_mono_ns && mono > hb.echo_mono_ns + hb.echo_hold_ns) {
        double rtt = static_cast<double>(mono - hb.echo_mono_ns - hb.echo_hold_ns) / 1e6;
        if (rtt < 60'000) l.rtt_ms = rtt;
    }
    for (auto& e : l.latency->take_events()) bus_.publish(e);
    peer_info p;
    p.role = static_cast<node_role>(hb.role);
    p.state = hb.state;
    p.mode = hb.mode;
    p.sync = hb.sync;
    p.flags = hb.flags;
    p.sync_permille = hb.sync_permille;
    p.generation = hb.generation;
    p.version = hb.version;
    // The active writes without us: our copy is outdated (the engine's event
    // then updates the sync state, and our heartbeats say OUTDATED).
    if ((hb.flags & hb_peer_outdated) && engine_)
        (void)engine_->outdate(fmt::format("{} (primary) writes without this node", cfg_.peer.name));
    // A takeover the peer asks for releases /store here: not from under a running
    // application, as for giveback. The machine does not see the request, which
    // lapses on the peer (takeover.expired); the refusal is said here, once.
    if (!(p.flags & hb_request_takeover)) {
        peer_takeover_refused_ = false;
    } else if (store_ && machine_.state() == host_state::active && !machine_.busy()) {
        if (auto why = store_->busy(); !why.empty()) {
            p.flags &= ~hb_request_takeover;
            if (!std::exchange(peer_takeover_refused_, true))
                bus_.publish({"command.refused", fmt::format("the takeover {} asked for is refused: {}", cfg_.peer.name, why),
                              {{"command", "takeover"}, {"from", cfg_.peer.name}, {"reason", why}}});
        }
    }
    apply(machine_.on_heartbeat(now(), p));
}

// ---- decisions

// The activation generation survives a restart, so a node that claimed last
// still wins a later collision after its tandemd was restarted (a claim is
// rare: one small fsync'd file per claim).
void node_runtime::save_generation() {
    if (machine_.generation() == saved_generation_) return;
    saved_generation_ = machine_.generation();
    if (auto err = save_counter(cfg_.node.state_dir, generation_path(cfg_), saved_generation_))
        log::warning("generation.not_saved", "cannot save the activation generation {} in {}: {}; a restart starts "
                     "from the peer's", saved_generation_, cfg_.node.state_dir, *err);
}

void node_runtime::apply(effects e) {
    bool heal = false;
    for (auto& ev : e.events) {
        bus_.publish(ev);
        // A healed partition: clients may have been told the peer has the VIP.
        heal |= ev.id == "peer.found" ||
                (ev.id == "collision.detected" &&
                 std::any_of(ev.fields.begin(), ev.fields.end(),
                             [](auto& f) { return f.first == "winner" && f.second == "local"; }));
    }
    if (heal) reannounce("the peer is heard again");
    if (e.run_connectivity_test) start_connectivity_test();
    if (e.sequence != sequence_kind::none)
        start_sequence(e.sequence, e.forced_release ? release_kind::forced : release_kind::requested);
    if (e.send_now) send_timer_.cancel();
    save_generation();
    watchdog_timer_.cancel();  // the deadline may have moved
    check_fence();
    notify_status();
}

void node_runtime::check_fence() {
    if (!engine_ || !engine_->fence_pending()) return;
    const auto& peer = machine_.peer();
    std::string how;
    if (!machine_.peer_alive(now()))
        how = "the peer is not heard";
    else if (peer_wire_version_ < heartbeat_version)
        how = fmt::format("the peer speaks heartbeat version {} and cannot be told that its copy is outdated "
                          "(upgrade it)",
                          peer_wire_version_);
    else if (peer->sync != sync_state::up_to_date)
        how = fmt::format("the peer reports its copy {}", to_string(peer->sync));
    else
        return;  // the peer is told by our heartbeats (hb_peer_outdated); its answer comes back here
    engine_->peer_fenced(how);
}

asio::awaitable<void> node_runtime::watchdog_loop() {
    for (;;) {
        watchdog_timer_.expires_at(machine_.next_deadline());
        auto [ec] = co_await watchdog_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (!ec) apply(machine_.on_tick(now()));
    }
}

void node_runtime::start_sequence(sequence_kind k, release_kind how) {
    asio::co_spawn(
        io_,
        [this, k, how]() -> asio::awaitable<void> {
            bool acquire = k == sequence_kind::acquire;
            sequence_report rep;  // not a ?: expression: GCC 12 miscompiles co_await inside one
            if (acquire) rep = co_await sequence_->acquire(bus_);
            else rep = co_await sequence_->release(bus_, how);
            last_sequence_ = {{"direction", acquire ? "acquire" : "release"},
                              {"ok", rep.ok},
                              {"total_us", rep.total.count()},
                              {"detail", rep.detail}};
            bus_.publish({"failover.sequence",
                          fmt::format("{} {} in {:.3f} ms{}", acquire ? "acquire" : "release",
                                      rep.ok ? "finished" : "FAILED", rep.total.count() / 1000.0,
                                      rep.detail.empty() ? "" : ": " + rep.detail),
                          {{"direction", acquire ? "acquire" : "release"},
                           {"ok", rep.ok ? "true" : "false"},
                           {"total_us", std::to_string(rep.total.count())}}});
            apply(machine_.on_sequence_done(now(), rep.ok, rep.detail));
            if (stopping_) maybe_finish_shutdown();
        },
        asio::detached);
}

void node_runtime::start_connectivity_test() {
    asio::co_spawn(
        io_,
        [this]() -> asio::awaitable<void> {
            auto r = co_await test_connectivity(cfg_.connectivity.targets, cfg_.connectivity.timeout,
                                                cfg_.connectivity.require, cfg_.node.address);
            log::debug("connectivity.result", "{}: {}", r.ok ? "passed" : "failed", r.detail);
            apply(machine_.on_connectivity(now(), r.ok, r.detail));
        },
        asio::detached);
}

// ---- the VIP and the links, as the kernel reports them

void node_runtime::reannounce(const std::string& why) {
    if (machine_.state() != host_state::active || machine_.busy()) return;
    if (auto r = vip_->announce(); !r)
        log::warning("vip.announce_failed", "re-announcing {}: {}", netlink::to_string(vip_->vip()), r.error().message());
    else
        log::info("vip.announced", "re-announced {}: {}", netlink::to_string(vip_->vip()), why);
}

void node_runtime::update_health() {
    bool ok = check_ok_ && link_ok_;
    std::string detail = !link_ok_ ? link_detail_ : check_detail_;
    if (ok != machine_.healthy() || (!ok && detail != machine_.health_detail()))
        apply(machine_.on_health(now(), ok, ok ? "" : detail));
}

void node_runtime::check_link() {
    auto l = vip_->link();
    bool ok = l && l->up && l->carrier;
    std::string detail;
    if (!l) detail = fmt::format("management interface {}: {}", vip_->interface(), l.error().message());
    else if (!ok)
        detail = fmt::format("management interface {} is {}: this node cannot serve the VIP", vip_->interface(),
                             !l->up ? "down" : "without carrier");
    if (l) link_kernel_[l->name] = {{"up", l->up}, {"carrier", l->carrier}};
    set_link_usable(ok, detail);
}

void node_runtime::set_link_usable(bool ok, const std::string& detail) {
    bool was = link_ok_;
    link_ok_ = ok;
    link_detail_ = detail;
    if (was != ok)
        bus_.publish({"link.changed",
                      ok ? fmt::format("management interface {} is usable again", vip_->interface()) : detail,
                      {{"interface", vip_->interface()}, {"usable", ok ? "true" : "false"}}});
    update_health();
    if (ok && !was) reannounce("the management link is back");
}

void node_runtime::on_netlink(const netlink::event& ev) {
    if (std::holds_alternative<netlink::resync_needed>(ev)) {
        // Notifications were lost: re-read the truth from the kernel.
        check_link();
        if (machine_.state() == host_state::active && !machine_.busy())
            if (auto p = vip_->present(); p && !*p) on_netlink(netlink::address_event{false, {0, vip_->vip(), "", netlink::tandem_proto, 0}});
        return;
    }
    if (auto* le = std::get_if<netlink::link_event>(&ev)) {
        link_kernel_[le->link.name] = {{"up", le->link.up && !le->removed}, {"carrier", le->link.carrier && !le->removed}};
        if (le->link.name == vip_->interface()) check_link();
        return;
    }
    const auto& ae = std::get<netlink::address_event>(ev);
    if (ae.address.address != vip_->vip()) return;
    bool active = machine_.state() == host_state::active && !machine_.busy();
    if (ae.added) {
        if (active) bus_.publish({"vip.up", fmt::format("the kernel reports {} on {}", netlink::to_string(vip_->vip()),
                                                        ae.address.label.empty() ? vip_->interface() : ae.address.label),
                                  {}});
        else if (ae.address.proto != netlink::tandem_proto && !machine_.busy())
            bus_.publish({"vip.foreign",
                          fmt::format("{} appeared on this node although it is not active; Tandem does not own it",
                                      netlink::to_string(vip_->vip())),
                          {}});
        return;
    }
    if (!active) return;  // removed during a release, or never ours
    bus_.publish({"vip.removed",
                  fmt::format("{} was removed from {} behind Tandem's back; restoring it",
                              netlink::to_string(vip_->vip()), vip_->interface()),
                  {}});
    if (auto r = vip_->add(); !r) {
        bus_.publish({"vip.repair_failed", "cannot restore the VIP: " + r.error().message(), {}});
        // This node cannot serve: let the peer take over. The health loop's
        // next check_link() retries.
        set_link_usable(false, "the VIP cannot be restored: " + r.error().message());
        return;
    }
    reannounce("the VIP was restored");
}

asio::awaitable<void> node_runtime::netlink_loop() {
    asio::posix::stream_descriptor d(io_, ::dup(nl_events_->fd()));
    for (;;) {
        auto [ec] = co_await d.async_wait(asio::posix::stream_descriptor::wait_read, asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
        auto events = nl_events_->drain();
        if (!events) {
            log::warning("netlink.read_failed", "reading netlink events: {}", events.error().message());
            continue;
        }
        for (auto& ev : *events) on_netlink(ev);
    }
}

asio::awaitable<void> node_runtime::refresh_loop() {
    for (;;) {
        // Off: sleep until a reload cancels the timer; on: wake each period.
        if (cfg_.announce.refresh.count()) refresh_timer_.expires_after(cfg_.announce.refresh);
        else refresh_timer_.expires_at(asio::steady_timer::time_point::max());
        auto [ec] = co_await refresh_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (!ec && cfg_.announce.refresh.count()) reannounce("periodic refresh");
    }
}

// ---- health

// Shared storage (an NFS or iSCSI volume in the seeds) can turn read-only or
// hang under the active node: there /store's writability is probed unless
// health.store_path names another directory.
std::string node_runtime::store_probe_path() const {
    if (cfg_.health.store_path.empty() && cfg_.replication.backend == backend_kind::shared) return cfg_.store.mount;
    return cfg_.health.store_path;
}

asio::awaitable<std::pair<bool, std::string>> node_runtime::probe_store() {
    // A hung store (dead NFS server, failing disk) blocks write(2) for minutes:
    // probe on a thread of its own and give up waiting after the timeout.
    if (probe_inflight_ && !probe_inflight_->done.load(std::memory_order_acquire))
        co_return std::pair{false, fmt::format("a write to {} is still blocked", store_probe_path())};
    auto st = std::make_shared<probe_state>();
    probe_inflight_ = st;
    auto ex = co_await asio::this_coro::executor;
    auto timer = std::make_shared<asio::steady_timer>(ex, cfg_.health.command_timeout);
    std::thread([st, timer, ex, dir = store_probe_path()] {
        auto [ok, detail] = blocking_store_probe(dir);
        st->ok = ok;
        st->detail = detail;
        st->done.store(true, std::memory_order_release);
        asio::post(ex, [timer] { timer->cancel(); });
    }).detach();
    co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
    if (!st->done.load(std::memory_order_acquire))
        co_return std::pair{false, fmt::format("writing to {} did not finish within {}", store_probe_path(),
                                               format_duration(cfg_.health.command_timeout))};
    co_return std::pair{st->ok, st->detail};
}

asio::awaitable<void> node_runtime::health_loop() {
    asio::steady_timer t(io_);
    for (;;) {
        check_link();  // also retries after a failed VIP repair
        bool ok = true;
        std::string detail;
        // The store is only meaningful where it is mounted: on the active node.
        if (!store_probe_path().empty() && machine_.state() == host_state::active) {
            std::tie(ok, detail) = co_await probe_store();
            if (ok && !detail.empty()) log::warning("health.store_full", "{}", detail);
        }
        if (ok && !cfg_.health.check_command.empty()) {
            auto r = co_await run_command(cfg_.health.check_command, check_env(cfg_), cfg_.health.command_timeout);
            if (!r.ok()) {
                ok = false;
                detail = fmt::format("check command \"{}\" {}", cfg_.health.check_command, r.describe());
            }
        }
        check_ok_ = ok;
        check_detail_ = ok ? "" : detail;
        update_health();
        t.expires_after(cfg_.health.interval);
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

// ---- systemd, signals, shutdown

asio::awaitable<void> node_runtime::sd_watchdog_loop() {
    std::uint64_t usec = 0;
    sd_watchdog_enabled(0, &usec);
    asio::steady_timer t(io_);
    for (;;) {
        sd_notify(0, "WATCHDOG=1");
        t.expires_after(std::chrono::microseconds(usec / 2));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

// Feeds the host's watchdog a few times per timeout while may_feed_watchdog()
// allows it. The loop runs on the io_context: a stalled loop stops the feeding.
asio::awaitable<void> node_runtime::hw_watchdog_loop() {
    while (hw_watchdog_ && hw_watchdog_->armed()) {  // also while stopping: the release may take a while
        const auto t = now();
        const auto& lease = machine_.lease();
        const bool feed = may_feed_watchdog(t, lease, cfg_.heartbeat.interval);
        if (feed) {
            if (auto ec = hw_watchdog_->keepalive())
                log::error("watchdog.keepalive_failed", "watchdog {}: WDIOC_KEEPALIVE: {}",
                           hw_watchdog_->describe().device, ec.message());
            else
                hw_watchdog_last_fed_ = t;
        }
        if (feed != hw_watchdog_fed_) {
            hw_watchdog_fed_ = feed;
            if (!feed) {  // only with a lease (may_feed_watchdog)
                auto renewed = std::chrono::duration_cast<std::chrono::milliseconds>(t - lease->renew_started);
                bus_.publish({"watchdog.starving",
                              fmt::format("this node holds the shared store's lease, but its last renewal started {} "
                                          "ago: the watchdog is no longer fed and resets this host within {} s",
                                          format_duration(renewed), hw_watchdog_->describe().timeout.count()),
                              {{"renewed_ms_ago", std::to_string(renewed.count())}}});
            } else {
                bus_.publish({"watchdog.fed", "the lease is renewed again: the watchdog is fed again", {}});
            }
        }
        hw_watchdog_timer_.expires_after(std::min<std::chrono::milliseconds>(hw_watchdog_->describe().timeout / 4,
                                                                             cfg_.heartbeat.interval));
        co_await hw_watchdog_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

json node_runtime::watchdog_section() const {
    if (!hw_watchdog_) return {{"device", cfg_.watchdog.device}, {"armed", false}};
    const auto& d = hw_watchdog_->describe();
    return {{"device", d.device},
            {"armed", hw_watchdog_->armed()},
            {"identity", d.identity},
            {"timeout_s", d.timeout.count()},
            {"nowayout", d.nowayout},
            {"fed", hw_watchdog_fed_},
            {"fed_ms_ago", std::chrono::duration_cast<std::chrono::milliseconds>(now() - hw_watchdog_last_fed_).count()}};
}

void node_runtime::notify_status() {
    auto s = fmt::format("{}/{} peer {} {}", to_string(machine_.state()), to_string(machine_.mode()),
                         cfg_.peer.name,
                         machine_.peer_alive(now()) ? to_string(machine_.peer()->state) : std::string_view("UNKNOWN"));
    if (s != last_status_) {
        last_status_ = s;
        sd_notifyf(0, "STATUS=%s", s.c_str());
    }
}

asio::awaitable<void> node_runtime::signal_loop() {
    for (;;) {
        auto [ec, sig] = co_await signals_.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
        if (sig == SIGHUP) {
            auto r = reload();
            if (!r.value("ok", false)) log::error("config.reload_refused", "{}", r.value("error", ""));
        } else {
            begin_shutdown();
        }
    }
}

void node_runtime::begin_shutdown() {
    if (stopping_) return;
    stopping_ = true;
    sd_notify(0, "STOPPING=1");
    bus_.publish({"tandemd.stopping", "releasing resources and telling the peer", {}});
    apply(machine_.on_shutdown(now()));
    maybe_finish_shutdown();
}

void node_runtime::maybe_finish_shutdown() {
    if (machine_.busy()) return;
    if (machine_.state() == host_state::active) {  // an acquire finished after the signal
        apply(machine_.on_shutdown(now()));
        return;
    }
    // A standby that stops while the peer is active misses its writes from now
    // on: its copy is outdated first, and its last heartbeats say so.
    if (engine_ && machine_.peer_alive(now()) && machine_.peer()->state == host_state::active &&
        engine_->outdate(fmt::format("this node stopped while {} is active", cfg_.peer.name), true))
        apply(machine_.on_local_sync(now(), replication_sync()));
    send_heartbeats();  // with the shutting-down flag: the peer may claim at once
    if (engine_) engine_->stop();  // commits the metadata: a clean stop
    bus_.publish({"tandemd.stopped", "clean shutdown", {}});
    io_.stop();
}

// ---- control

json node_runtime::latency_section(bool histograms) const {
    json out = json::array();
    for (auto& l : links_) out.push_back(l->latency->to_json(histograms));
    return out;
}

json node_runtime::status() const {
    auto t = now();
    bool alive = machine_.peer_alive(t);
    std::optional<double> rtt;
    bool any_up = false;
    json links = json::array();
    for (auto& l : links_) {
        bool up = l->last_rx && t - *l->last_rx < cfg_.heartbeat.timeout;
        any_up |= up;
        auto probe_rtt = l->latency->rtt_ms();  // the newest kernel sample, read now
        auto link_rtt = probe_rtt ? probe_rtt : l->rtt_ms;
        if (up && link_rtt && (!rtt || *link_rtt < *rtt)) rtt = link_rtt;
        links.push_back({{"name", l->name},
                         {"peer", l->peer.address().to_string()},
                         {"up", up},
                         {"kernel", link_kernel_.contains(l->name) ? link_kernel_[l->name] : json(nullptr)},
                         {"rtt_ms", up && link_rtt ? json(*link_rtt) : json(nullptr)},
                         {"rtt_source", probe_rtt ? l->latency->source() : "process"},
                         {"tx", l->tx},
                         {"rx", l->rx},
                         {"tx_errors", l->tx_errors},
                         {"last_rx_ms", l->last_rx ? json(std::chrono::duration<double, std::milli>(t - *l->last_rx).count())
                                                   : json(nullptr)}});
    }
    json dropped = json::object();
    for (std::size_t i = 0; i < drops_.size(); ++i) dropped[std::string(to_string(static_cast<drop_reason>(i)))] = drops_[i];
    const auto& peer = machine_.peer();
    node_role peer_role = cfg_.node.role == node_role::primary ? node_role::secondary : node_role::primary;
    return {
        {"cluster", {{"name", cfg_.cluster.name},
                     {"vip", netlink::to_string(cfg_.cluster.vip)},
                     {"interface", cfg_.cluster.interface},
                     {"alias", cfg_.cluster.interface + ":0"},
                     {"vip_present", [&] { auto p = vip_->present(); return p ? json(*p) : json(nullptr); }()},
                     {"interface_usable", link_ok_},
                     {"announce_bursts", vip_->bursts_sent()}}},
        {"collision", machine_.collision()},
        {"local", {{"name", cfg_.node.name},
                   {"role", to_string(cfg_.node.role)},
                   {"state", to_string(machine_.state())},
                   {"mode", to_string(machine_.mode())},
                   {"sync", to_string(machine_.local_sync())},
                   {"generation", machine_.generation()},
                   {"heartbeat_up", any_up},
                   {"rtt_ms", rtt ? json(*rtt) : json(nullptr)},
                   {"version", cfg_.node.software_version},
                   {"healthy", machine_.healthy()},
                   {"health_detail", machine_.health_detail()},
                   {"busy", machine_.busy()},
                   {"blocked", machine_.blocked_reason()}}},
        {"remote", {{"name", cfg_.peer.name},
                    {"role", to_string(peer && alive ? peer->role : peer_role)},
                    {"state", alive ? to_string(peer->state) : to_string(host_state::unknown)},
                    {"mode", alive ? to_string(peer->mode) : std::string_view("UNKNOWN")},
                    {"sync", alive ? to_string(peer->sync) : std::string_view("UNKNOWN")},
                    {"generation", peer ? peer->generation : 0},
                    {"heartbeat_up", alive},
                    {"version", peer ? peer->version : ""}}},
        {"heartbeat", {{"interval_ms", cfg_.heartbeat.interval.count()},
                       {"timeout_ms", cfg_.heartbeat.timeout.count()},
                       {"port", cfg_.heartbeat.port},
                       {"links", links},
                       {"dropped", dropped}}},
        {"latency", latency_section(false)},
        {"replication", replication_status()},
        {"store", store_section()},
        {"watchdog", watchdog_section()},
        {"last_sequence", last_sequence_},
    };
}

// ---- replication

// ---- backend "drbd": bring the resource up, then follow the kernel's state

asio::awaitable<void> node_runtime::drbd_loop() {
    auto& d = *drbd_;
    // Metadata only where there is none, and only once per disk: a disk whose
    // metadata vanished after Tandem created it is an operator's case, not ours.
    auto configured = co_await run_command("drbdsetup status " + d.res().name + " >/dev/null 2>&1", {},
                                           std::chrono::seconds(30));
    if (!configured.ok()) {
        // A node that crashed as Primary leaves "unclean" metadata, which dump-md
        // refuses: replay the activity log first (a no-op on clean metadata).
        (void)co_await d.run(drbd::action::apply_al);
        auto md = co_await d.run(drbd::action::dump_md);
        auto marker = cfg_.node.state_dir + "/drbd/md-created";
        if (!md.ok() && std::filesystem::exists(marker)) {
            bus_.publish({"replication.error",
                          fmt::format("DRBD finds no metadata on {}, but Tandem created it before ({}): not "
                                      "creating it again over what may be real data; see docs/drbd.md",
                                      d.res().disk, marker),
                          {}});
            co_return;
        }
        if (!md.ok()) {
            auto r = co_await d.run(drbd::action::create_md);
            if (!r.ok()) {
                bus_.publish({"replication.error", "drbdadm create-md " + r.describe(), {}});
                co_return;
            }
            std::ofstream(marker) << d.res().disk << "\n";
            // A new cluster's first sync starts from the primary (on_drbd_state);
            // the marker outlives a restart of tandemd before the peer connects.
            if (cfg_.node.role == node_role::primary) std::ofstream(first_sync_marker()) << d.res().disk << "\n";
        }
    }
    auto up = co_await d.run(drbd::action::adjust);
    if (!up.ok()) bus_.publish({"replication.error", "drbdadm adjust " + up.describe(), {}});
    asio::co_spawn(io_, drbd_keep_up(), asio::detached);
    if (drbd::kernel_version() == 9) co_await drbd_watch_events2();
    else co_await drbd_watch_proc();
}

// DRBD stops trying for good when it cannot bind its local address (the
// replication link configured after tandemd's first `adjust`, or its address
// removed and added again) or a handshake fails: it sits StandAlone and the
// standby never catches up. `drbdadm adjust` again, pausing 2 s, then twice as
// long each time up to a minute; not after a split brain (the operator's
// choice) and not while tandemd itself holds it disconnected.
asio::awaitable<void> node_runtime::drbd_keep_up() {
    using namespace std::chrono_literals;
    asio::steady_timer tick(io_);
    std::chrono::seconds pause = 2s;
    steady_time next = now() + pause;
    std::string last_error;
    bool announced = false;
    while (!stopping_) {
        tick.expires_after(1s);
        co_await tick.async_wait(asio::as_tuple(asio::use_awaitable));
        auto why = drbd::needs_adjust(drbd_state_);
        if (!why || drbd_forcing_ || drbd_own_disconnect_) {
            if (!why && announced) bus_.publish({"replication.state", "DRBD " + drbd_->res().name + " is back: " +
                                                                          drbd_state_.connection, {}});
            if (!why) pause = 2s, announced = false, last_error.clear();
            next = now() + pause;
            continue;
        }
        if (stopping_ || now() < next) continue;
        if (!announced)
            bus_.publish({"replication.reconnect",
                          fmt::format("DRBD {} is {}: `drbdadm adjust {}` to bring it back", drbd_->res().name, *why,
                                      drbd_->res().name),
                          {}});
        announced = true;
        auto r = co_await drbd_->run(drbd::action::adjust);
        if (!r.ok() && r.describe() != last_error)  // once per distinct failure, not once a minute
            bus_.publish({"replication.error", "drbdadm adjust " + r.describe(), {}});
        last_error = r.ok() ? std::string() : r.describe();
        next = now() + pause;
        pause = std::min<std::chrono::seconds>(pause * 2, 60s);
    }
}

// The configured rate into DRBD: the resource file, then `drbdadm adjust`.
bool node_runtime::apply_drbd_rate() {
    try {
        drbd_->set_rate(std::uint64_t{cfg_.replication.rate_mib} * 1024,
                        std::uint64_t{cfg_.replication.yield_rate_mib} * 1024);
    } catch (const std::exception& e) {
        bus_.publish({"replication.error", std::string("the new rate did not reach DRBD: ") + e.what(), {}});
        return false;
    }
    asio::co_spawn(io_, [this]() -> asio::awaitable<void> {
        auto r = co_await drbd_->run(drbd::action::adjust);
        if (!r.ok()) bus_.publish({"replication.error", "drbdadm adjust (new rate) " + r.describe(), {}});
    }, asio::detached);
    return true;
}

void node_runtime::on_drbd_state(const drbd::kernel_state& s) {
    auto before = drbd::map_state(drbd_state_);
    bool was_verifying = drbd_state_.replication.rfind("Verify", 0) == 0;
    drbd_state_ = s;
    // Connected again: whatever split brain there was has been resolved.
    if (s.replication == "Established" || s.replication.rfind("Sync", 0) == 0) {
        std::error_code ec;
        std::filesystem::remove(drbd_->res().split_brain_flag, ec);
        drbd_state_.split_brain = false;
    }
    auto after = drbd::map_state(drbd_state_);
    if (after.running) {
        if (!before.running) {
            drbd_sync_started_ = now();
            drbd_sync_total_kib_ = 0;
        }
        drbd_sync_total_kib_ = std::max(drbd_sync_total_kib_, s.out_of_sync_kib.value_or(0));
    } else if (before.running) {
        if (s.disk == "UpToDate" && s.peer_disk == "UpToDate") {
            auto bytes = drbd_sync_total_kib_ * 1024;
            bus_.publish({"replication.sync_done",
                          before.to_peer ? fmt::format("{} is in sync: sent {} bytes", cfg_.peer.name, bytes)
                                         : fmt::format("in sync with {}: received {} bytes", cfg_.peer.name, bytes),
                          {}});
        }
        drbd_sync_total_kib_ = 0;
    }
    if (was_verifying && s.replication.rfind("Verify", 0) != 0) {
        auto oos = s.out_of_sync_kib.value_or(0);
        bool cut = s.replication != "Established";
        bus_.publish({"replication.verify_done",
                      cut ? fmt::format("DRBD online verify interrupted ({}): run it again once connected", s.connection)
                      : oos == 0 ? std::string("DRBD online verify finished: no difference")
                               : fmt::format("DRBD online verify finished: {} KiB differ and are marked out of sync; "
                                             "`drbdadm disconnect store` then `drbdadm connect store` resynchronizes them",
                                             oos),
                      {{"out_of_sync_kib", std::to_string(oos)}}});
    }
    // A new cluster: both disks brand new and connected. The primary's data
    // becomes the source of the first full sync; never on a disk that already
    // had metadata, so a replaced disk here never overwrites the peer's data.
    if (!drbd_forcing_ && !drbd_force_failed_ && cfg_.node.role == node_role::primary && s.replication == "Established" &&
        s.disk == "Inconsistent" && s.peer_disk == "Inconsistent" && std::filesystem::exists(first_sync_marker())) {
        // Not promotable meanwhile (replication_sync): phase 1 must not race the secondary below.
        drbd_forcing_ = true;
        asio::co_spawn(io_, [this]() -> asio::awaitable<void> {
            auto r = co_await drbd_->run(drbd::action::force_primary);
            if (r.ok()) r = co_await drbd_->run(drbd::action::secondary);  // phase 1 promotes when it is time
            if (r.ok()) std::filesystem::remove(first_sync_marker());
            else drbd_force_failed_ = true;  // once per run: the operator reads the error
            drbd_forcing_ = false;
            bus_.publish({r.ok() ? "replication.initial_sync" : "replication.error",
                          r.ok() ? std::string("new cluster: the first full sync starts from this node (the primary)")
                                 : "starting the first full sync: " + r.describe(),
                          {}});
            apply(machine_.on_local_sync(now(), replication_sync()));
        }, asio::detached);
    }
    if (after.sync != before.sync)  // progress shows in the status, not as one event a second
        bus_.publish({after.sync == sync_state::diverged ? "replication.split_brain" : "replication.state", after.detail,
                      {{"sync", std::string(to_string(after.sync))}}});
    apply(machine_.on_local_sync(now(), replication_sync()));  // INCONSISTENT while the first sync is being forced
}

// DRBD 9: `drbdsetup events2 --statistics` is a stream of state changes.
asio::awaitable<void> node_runtime::drbd_watch_events2() {
    asio::steady_timer retry(io_);
    for (;;) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) co_return;
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
        const std::string name = drbd_->res().name;
        const char* argv[] = {"drbdsetup", "events2", "--statistics", name.c_str(), nullptr};
        pid_t pid = 0;
        int rc = posix_spawnp(&pid, "drbdsetup", &fa, nullptr, const_cast<char* const*>(argv), environ);
        posix_spawn_file_actions_destroy(&fa);
        ::close(fds[1]);
        if (rc == 0) {
            asio::posix::stream_descriptor in(io_, fds[0]);
            asio::streambuf buf;
            drbd::kernel_state s = drbd_state_;
            for (;;) {
                auto [ec, n] = co_await asio::async_read_until(in, buf, '\n', asio::as_tuple(asio::use_awaitable));
                if (ec) break;
                std::string line(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + static_cast<std::ptrdiff_t>(n) - 1);
                buf.consume(n);
                bool changed = drbd::apply_events2(s, line, name);
                // The handler's flag too: it survives a restart of tandemd, the helper call does not.
                if (!s.split_brain && std::filesystem::exists(drbd_->res().split_brain_flag)) {
                    s.split_brain = true;
                    changed = true;
                }
                if (changed) {
                    on_drbd_state(s);
                    s.split_brain = drbd_state_.split_brain;  // cleared there once connected again
                }
            }
            ::kill(pid, SIGTERM);
            ::waitpid(pid, nullptr, 0);
        } else {
            ::close(fds[0]);
        }
        if (stopping_) co_return;
        log::warning("drbd.events", "drbdsetup events2 ended; restarting it in 1 s");
        retry.expires_after(std::chrono::seconds(1));
        co_await retry.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

// DRBD 8.4: /proc/drbd, read every second; the split-brain handler leaves a flag file.
asio::awaitable<void> node_runtime::drbd_watch_proc() {
    asio::steady_timer tick(io_);
    for (;;) {
        std::ifstream in("/proc/drbd");
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        auto s = drbd::parse_proc_drbd(text, drbd_->res().minor).value_or(drbd::kernel_state{});
        s.split_brain = std::filesystem::exists(drbd_->res().split_brain_flag);  // the handler's flag
        on_drbd_state(s);
        if (stopping_) co_return;
        tick.expires_after(std::chrono::seconds(1));
        co_await tick.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

std::string node_runtime::first_sync_marker() const { return cfg_.node.state_dir + "/drbd/first-sync-pending"; }

sync_state node_runtime::replication_sync() const {
    if (drbd_) return drbd_forcing_ ? sync_state::inconsistent : drbd::map_state(drbd_state_).sync;
    if (!engine_) return sync_state::none;
    auto s = engine_->status();
    if (s.split_brain) return sync_state::diverged;
    // Through a reconnect too: the resync goes on from where it stopped.
    if (s.link == replication::link_state::sync_target || s.resync_pending) return sync_state::synchronizing;
    if (!s.consistent) return sync_state::inconsistent;
    if (s.outdated) return sync_state::outdated;
    return sync_state::up_to_date;
}

void node_runtime::on_replication_event(const std::string& kind, const std::string& detail) {
    if (stopping_ && kind == "replication.disconnected") return;
    bus_.publish({kind, detail, {}});
    apply(machine_.on_local_sync(now(), replication_sync()));
}

json node_runtime::replication_status() const {
    json j = {{"backend", to_string(cfg_.replication.backend)},
              {"port", cfg_.replication.port},
              {"rate_mib", cfg_.replication.rate_mib}};
    if (drbd_) {
        auto m = drbd::map_state(drbd_state_);
        j["device"] = cfg_.replication.device;
        j["drbd"] = {{"resource", drbd_->res().name},
                     {"device", drbd_->device()},
                     {"config", drbd_->conf()},
                     {"kernel_version", drbd::kernel_version()},
                     {"role", drbd_state_.role},
                     {"peer_role", drbd_state_.peer_role},
                     {"disk", drbd_state_.disk},
                     {"peer_disk", drbd_state_.peer_disk},
                     {"connection", drbd_state_.connection},
                     {"replication", drbd_state_.replication},
                     {"done_percent", drbd_state_.done_percent ? json(*drbd_state_.done_percent) : json(nullptr)},
                     {"eta_s", drbd_state_.eta_s ? json(*drbd_state_.eta_s) : json(nullptr)},
                     {"out_of_sync_kib", drbd_state_.out_of_sync_kib ? json(*drbd_state_.out_of_sync_kib) : json(nullptr)},
                     {"split_brain", drbd_state_.split_brain},
                     {"detail", m.detail}};
        // The engine's fields too, so `tandemctl sync` follows either backend.
        // consistent: this disk UpToDate, and the peer's too while connected.
        const auto& d = drbd_state_;
        std::string link = d.connection;
        std::transform(link.begin(), link.end(), link.begin(), [](unsigned char c) { return std::tolower(c); });
        j["link"] = m.connected ? "connected" : link.empty() ? "down" : link;
        j["consistent"] = d.disk == "UpToDate" && (!m.connected || d.peer_disk == "UpToDate");
        j["split_brain"] = d.split_brain;
        j["peer"] = cfg_.peer.name;
        j["generation"] = "";
        j["last_error"] = m.detail;
        const std::uint64_t total = m.running ? drbd_sync_total_kib_ * 1024 : 0;
        const std::uint64_t left = std::min(total, d.out_of_sync_kib.value_or(0) * 1024);
        const double secs = std::chrono::duration<double>(now() - drbd_sync_started_).count();
        const double rate = m.running && secs > 0 ? static_cast<double>(total - left) / secs : 0.0;
        j["sync"] = {{"running", m.running},
                     {"direction", m.to_peer ? "to peer" : "from peer"},
                     {"done_bytes", total - left},
                     {"total_bytes", total},
                     {"rate_bps", rate},
                     {"eta_s", d.eta_s ? static_cast<double>(*d.eta_s) : rate > 0 ? static_cast<double>(left) / rate : 0.0}};
        return j;
    }
    if (!engine_) return j;
    auto s = engine_->status();
    j["device"] = cfg_.replication.device;
    j["link"] = to_string(s.link);
    j["primary"] = s.primary;
    j["consistent"] = s.consistent;
    j["split_brain"] = s.split_brain;
    j["outdated"] = s.outdated;
    j["fence_pending"] = s.fence_pending;
    j["writes_held"] = s.writes_held;
    j["peer"] = s.peer;
    j["decision"] = s.decision;
    j["rule"] = s.rule;
    j["last_error"] = s.last_error;
    j["volume_bytes"] = s.volume_size;
    j["dirty_bytes"] = s.dirty_bytes;
    j["hot_extents"] = s.hot_extents;
    j["protocol"] = cfg_.replication.protocol_a ? "A" : "C";
    j["rate_limit_bps"] = s.rate_limit_bps;
    j["resync_bytes_sent"] = s.resync_bytes_sent;
    j["generation"] = fmt::format("{:016x}", s.gen.current);
    bool syncing = s.link == replication::link_state::sync_source || s.link == replication::link_state::sync_target;
    j["sync"] = {{"running", syncing},
                 {"direction", s.link == replication::link_state::sync_source ? "to peer" : "from peer"},
                 {"done_bytes", s.sync_done},
                 {"total_bytes", s.sync_total},
                 {"rate_bps", s.sync_rate_bps},
                 {"eta_s", s.sync_eta_s}};
    json ranges = json::array();
    for (auto& r : s.verify_mismatches) ranges.push_back({{"offset", r.offset}, {"length", r.length}});
    j["verify"] = {{"running", s.verify_running},
                   {"done_bytes", s.verify_done},
                   {"total_bytes", s.verify_total},
                   {"mismatched_bytes", s.verify_mismatched_bytes},
                   {"mismatches", ranges}};
    return j;
}

json node_runtime::store_section() const {
    if (!store_) return {{"mount", ""}, {"mounted", false}};
    auto s = store_->status();
    json j = {{"mount", s.mount},   {"mounted", s.mounted},   {"fstype", s.fstype},
              {"device", s.device}, {"frontend", s.frontend}, {"last_error", s.last_error}};
    if (const auto& l = machine_.lease()) {
        auto ago = [&](steady_time t) { return std::chrono::duration_cast<std::chrono::milliseconds>(now() - t).count(); };
        j["lease"] = {{"device", l->device},
                      {"ok", l->ok},
                      {"error", l->error},
                      {"renewed_ms_ago", ago(l->renewed)},
                      {"holding", l->holding},
                      {"peer_node", l->peer_node},
                      {"peer_holding", l->peer_holding},
                      {"peer_counter", l->peer_counter},
                      {"peer_changed_ms_ago", l->peer_changed ? json(ago(*l->peer_changed)) : json(nullptr)},
                      {"peer_alive", l->peer_alive(now(), machine_.lease_expiry())}};
    }
    return j;
}

json node_runtime::set_sync_rate(const json& req) {
    if (!engine_ && !drbd_) return {{"ok", false}, {"error", "no replication engine: replication.backend is not \"uring\""}};
    auto v = req.value("mib", std::int64_t{0});
    if (v < 1 || v > 4096)
        return {{"ok", false},
                {"error", fmt::format("sync-rate {}: must be a whole number from 1 to 4096 MB/s (MiB/s)", v)}};
    auto old = cfg_.replication.rate_mib;
    cfg_.replication.rate_mib = static_cast<std::uint32_t>(v);
    if (engine_) engine_->set_rate(static_cast<std::uint64_t>(v) << 20);
    if (drbd_ && !apply_drbd_rate()) {
        cfg_.replication.rate_mib = old;
        return {{"ok", false}, {"error", "the new rate could not be written into DRBD's resource file; nothing changed"}};
    }
    bus_.publish({"replication.rate", fmt::format("disk synchronization rate {} -> {} MB/s", old, v),
                  {{"mib", std::to_string(v)}}});
    return {{"ok", true},
            {"message", fmt::format("disk synchronization rate {} MB/s (until the next reload or restart; put it in "
                                    "[replication] rate to keep it)",
                                    v)}};
}

json node_runtime::reload() {
    config fresh;
    try {
        fresh = load_config(cfg_.path);
    } catch (const config_error& e) {
        return {{"ok", false}, {"error", std::string("the new configuration is not valid; nothing changed:\n") + e.what()}};
    }
    auto plan = plan_reload(cfg_, fresh);
    if (!plan.ok()) {
        std::string msg = "refused; nothing changed:";
        for (auto& r : plan.refused) msg += "\n  " + r;
        return {{"ok", false}, {"error", msg}};
    }
    if (hw_watchdog_ && fresh.watchdog.timeout != cfg_.watchdog.timeout) {
        if (auto why = hw_watchdog_->set_timeout(fresh.watchdog.timeout); !why.empty())
            return {{"ok", false}, {"error", "refused; nothing changed:\n  watchdog.timeout: " + why}};
    }
    cfg_ = std::move(fresh);
    machine_.set_params(params_of(cfg_));
    for (auto& l : links_) l->latency->set_thresholds(cfg_);
    if (engine_) {
        engine_->set_rate(std::uint64_t{cfg_.replication.rate_mib} << 20);
        engine_->set_yield_rate(std::uint64_t{cfg_.replication.yield_rate_mib} << 20);
    }
    if (drbd_ && (drbd_->res().rate_kib != std::uint64_t{cfg_.replication.rate_mib} * 1024 ||
                  drbd_->res().min_rate_kib != std::uint64_t{cfg_.replication.yield_rate_mib} * 1024))
        apply_drbd_rate();
    std::string what = plan.applied.empty() ? "no changes" : fmt::format("{}", fmt::join(plan.applied, "; "));
    bus_.publish({"config.reloaded", what, {}});
    apply({});  // timers: the interval and the deadlines may have changed
    send_timer_.cancel();
    refresh_timer_.cancel();
    hw_watchdog_timer_.cancel();  // its period follows the timeout
    return {{"ok", true}, {"applied", plan.applied}};
}

// The operator's answer to a standby that is OUTDATED when the active is lost
// for good: this copy becomes the cluster's data, and the writes the lost node
// made after the replication link went down are given up.
json node_runtime::force_takeover() {
    auto refuse = [](std::string why) { return json{{"ok", false}, {"error", std::move(why)}}; };
    if (!engine_)
        return refuse(drbd_ ? "takeover --force lifts the replication engine's OUTDATED mark; with DRBD, follow "
                              "docs/drbd.md (why Tandem never forces a promotion)"
                            : "takeover --force lifts the replication engine's OUTDATED mark; this node has no "
                              "replication engine (replication.backend is not \"uring\")");
    if (machine_.peer_alive(now()))
        return refuse(fmt::format("the peer is heard ({}): it holds the newer data. Let the replication link "
                                  "reconnect and resync this node, then take over without --force",
                                  to_string(machine_.peer()->state)));
    if (!engine_->clear_outdated())
        return refuse(fmt::format("this node's copy is not OUTDATED (data {}); there is nothing to force",
                                  to_string(machine_.local_sync())));
    bus_.publish({"replication.outdated_overridden",
                  fmt::format("takeover --force: this node's outdated copy is promoted; what {} wrote after the "
                              "replication link went down is not in it",
                              cfg_.peer.name),
                  {}});
    apply(machine_.on_local_sync(now(), replication_sync()));
    return {{"ok", true},
            {"message", fmt::format("OUTDATED mark lifted: this node takes over as it does when the active node is "
                                    "lost (state {})",
                                    to_string(machine_.state()))}};
}

json node_runtime::handle(const json& req) {
    std::string cmd = req.value("cmd", "");
    if (cmd == "status") return {{"ok", true}, {"status", status()}};
    if (cmd == "reload") return reload();
    if (cmd == "latency") return {{"ok", true}, {"latency", latency_section(true)}};
    if (cmd == "sync-rate") return set_sync_rate(req);
    if (drbd_ && cmd == "verify" && req.value("repair", false))
        return {{"ok", false},
                {"error", "with DRBD, verify marks what differs as out of sync; 'drbdadm disconnect' and 'drbdadm "
                          "connect' of the resource then resynchronize it (verify --repair is for the uring backend)"}};
    if (drbd_ && (cmd == "verify" || cmd == "discard-local")) {
        // discard-local after a split brain: reconnect discarding this node's
        // changes since the split. Without one (a restore, a disk to refill):
        // drbdadm invalidate, a full resync from the connected, UpToDate peer.
        enum class how { verify, discard_split, invalidate };
        const how h = cmd == "verify" ? how::verify : drbd_state_.split_brain ? how::discard_split : how::invalidate;
        if (h != how::verify && machine_.state() == host_state::active)
            return {{"ok", false},
                    {"error", "this node is ACTIVE and serves /store: discard the other node's data instead (run "
                              "discard-local there), or hand over first"}};
        if (h == how::invalidate && !(drbd::map_state(drbd_state_).connected && drbd_state_.peer_disk == "UpToDate"))
            return {{"ok", false},
                    {"error", fmt::format("DRBD reports no split brain, and the peer is not connected with UpToDate data "
                                          "(connection {}, peer disk {}): there is nothing to resync this node from",
                                          drbd_state_.connection.empty() ? "none" : drbd_state_.connection,
                                          drbd_state_.peer_disk.empty() ? "unknown" : drbd_state_.peer_disk)}};
        asio::co_spawn(io_, [this, h]() -> asio::awaitable<void> {
            if (h == how::discard_split) {
                // This node's changes since the split go; a resync from the peer follows.
                drbd_own_disconnect_ = true;  // until the connect below: drbd_keep_up must not connect first
                co_await drbd_->run(drbd::action::disconnect);
                std::filesystem::remove(drbd_->res().split_brain_flag);
                drbd_state_.split_brain = false;
            }
            auto a = h == how::verify ? drbd::action::verify
                     : h == how::discard_split ? drbd::action::discard_my_data : drbd::action::invalidate;
            auto r = co_await drbd_->run(a);
            drbd_own_disconnect_ = false;
            // A verify ends when DRBD leaves VerifyS/VerifyT (on_drbd_state); one that did not start ends here.
            if (h != how::verify || !r.ok())
                bus_.publish({h == how::verify ? "replication.verify_done" : "replication.discard",
                              fmt::format("drbdadm {} {}",
                                          h == how::verify ? "verify"
                                          : h == how::discard_split ? "connect --discard-my-data" : "invalidate",
                                          r.describe()),
                              {{"ok", r.ok() ? "true" : "false"}}});
        }, asio::detached);
        return {{"ok", true},
                {"message", h == how::verify ? "DRBD online verify started"
                            : h == how::discard_split
                                ? "discarding this node's data: DRBD reconnects and resyncs from the peer"
                                : "invalidating this node's data: DRBD resyncs all of it from the peer"}};
    }
    if (cmd == "verify") {
        if (!engine_) return {{"ok", false}, {"error", "no replication engine: replication.backend is not \"uring\""}};
        std::string why;
        bool repair = req.value("repair", false);
        if (!engine_->verify(why, repair)) return {{"ok", false}, {"error", why}};
        return {{"ok", true}, {"message", repair ? "verify started; what differs is resent from this node" : "verify started"}};
    }
    if (cmd == "takeover" && req.value("force", false)) return force_takeover();
    if (cmd == "discard-local") {
        if (!engine_) return {{"ok", false}, {"error", "no replication engine: replication.backend is not \"uring\""}};
        std::string why;
        if (!engine_->discard_local(why)) return {{"ok", false}, {"error", why}};
        return {{"ok", true}, {"message", "local data discarded; a full resync from the peer follows"}};
    }
    static const std::pair<std::string_view, command> commands[] = {{"takeover", command::takeover},
                                                                     {"giveback", command::giveback},
                                                                     {"offline", command::offline},
                                                                     {"online", command::online}};
    for (auto& [name, c] : commands) {
        if (cmd == name) {
            // A release that would pull /store from under a running application is refused up front.
            if (store_ && machine_.state() == host_state::active && !machine_.busy() &&
                (c == command::giveback || c == command::offline)) {
                if (auto why = store_->busy(); !why.empty()) {
                    bus_.publish({"command.refused", fmt::format("{} refused: {}", name, why),
                                  {{"command", std::string(name)}, {"reason", why}}});
                    return {{"ok", false}, {"error", why}};
                }
            }
            auto [reply, e] = machine_.on_command(now(), c);
            apply(std::move(e));
            if (!reply.ok) return {{"ok", false}, {"error", reply.message}};
            return {{"ok", true}, {"message", reply.message}};
        }
    }
    return {{"ok", false},
            {"error", fmt::format("unknown command \"{}\"; known: status, events, takeover, giveback, offline, online, "
                                  "reload, sync-rate, verify, discard-local",
                                  cmd)}};
}

}  // namespace tandem::agent
