// agent: tandemd's configuration — the TOML schema, validation and what a reload may change.
#pragma once

#include "tandem/netlink/vip.hpp"
#include "tandem/replication/rate_limit.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace tandem::agent {

enum class node_role : std::uint8_t { primary = 1, secondary = 2 };
enum class backend_kind : std::uint8_t { none, uring, drbd, shared };
enum class connectivity_rule : std::uint8_t { any, all };
// Where heartbeat latency figures come from (ebpf/): the kernel probe (falling
// back to socket timestamps), socket timestamps only, or both side by side.
enum class latency_probe : std::uint8_t { bpf, timestamping, both };

// Addresses in the form the kernel wants; node and peer addresses carry the full prefix length.
using ip_address = netlink::vip_address;

struct config {
    std::string path;  // the file it was read from

    struct {
        std::string name;
        ip_address vip;         // with prefix
        std::string interface;  // management interface; the VIP goes on "<interface>:0"
    } cluster;
    struct {
        std::string name;
        node_role role = node_role::primary;
        ip_address address;
        std::string software_version;  // advertised to the peer; defaults to the build's version
        std::string state_dir = "/var/lib/tandem";  // the boot id survives restarts here
    } node;
    struct {
        std::string name;
        ip_address address;
    } peer;
    struct {
        std::chrono::milliseconds interval{10'000};
        std::chrono::milliseconds timeout{30'000};
        std::uint16_t port = 694;
        std::vector<std::string> links;
        latency_probe probe = latency_probe::bpf;
        // A network part of the RTT above this is a network delay; a host that
        // holds a heartbeat longer than interval + this has stalled.
        std::chrono::milliseconds latency_alert{20};
    } heartbeat;
    struct {
        std::vector<ip_address> targets;
        std::chrono::milliseconds timeout{1000};   // per ping round
        std::chrono::milliseconds interval{10'000};  // how often the active node tests
        connectivity_rule require = connectivity_rule::any;
    } connectivity;
    struct {
        std::string key_file;
        std::vector<std::byte> key;  // never logged
    } auth;
    struct {
        backend_kind backend = backend_kind::none;
        std::uint16_t port = 7789;
        std::uint32_t rate_mib = tandem::replication::default_rate_mib;  // MiB/s, 1..4096
        std::uint32_t yield_rate_mib = tandem::replication::default_yield_rate_mib;  // MiB/s, 0..4096: the resync's rate while application writes arrive
        std::string device;
        std::string metadata;  // default: <node.state_dir>/replication.meta
        bool protocol_a = false;  // "A": a write completes locally; default "C": on both nodes
        std::string lease_device;  // backend "shared": both nodes' lease slots; empty: no lease
    } replication;
    struct {
        std::string mount = "/store";  // empty: the volume is replicated but never exposed or mounted
        std::string fstype = "ext4";
        std::string options;           // mount options, as for mount -o
        std::string frontend = "auto";  // "auto", "fuse" or "nbd" (backend "uring")
        bool fsck = true;               // check the file system before every mount
        // What the check may repair (systemd's fsck.repair): "preen" (fsck -p: what is safe
        // without a question), "yes" (fsck -y: everything), "no" (fsck -n: nothing).
        std::string fsck_repair = "preen";
        unsigned threads = 8;           // front-end workers
        // A forced release: how long processes holding /store have after SIGTERM before SIGKILL.
        std::chrono::milliseconds kill_after{10'000};
    } store;
    struct {
        std::string interface;  // empty: no crossover link
        std::optional<ip_address> address;
        std::optional<ip_address> peer_address;
    } crossover;
    struct {
        std::string socket = "/run/tandem/tandemd.sock";
    } control;
    struct {
        std::string store_path;     // empty: no writability probe
        std::string check_command;  // empty: none
        std::chrono::milliseconds interval{5000};
        std::chrono::milliseconds command_timeout{10'000};
    } health;
    struct {
        int count = 3;                                // bursts after taking the VIP
        std::chrono::milliseconds spacing{1100};      // > 1 s: the kernel's neighbour locktime
        std::chrono::milliseconds refresh{0};         // 0: no periodic re-announcement
    } announce;
    struct {
        std::string start;  // hooks run in failover phase 4 and on release
        std::string stop;
        std::chrono::milliseconds timeout{30'000};
    } services;
    struct {
        std::string device;  // the host's watchdog, e.g. "/dev/watchdog"; empty: none (docs/hw-watchdog.md)
        // Whole seconds (the kernel's unit). Default: heartbeat.timeout, rounded up.
        std::chrono::seconds timeout{0};
    } watchdog;

    // Where heartbeats go on `link`: the peer's management address, or its
    // crossover address on the crossover interface.
    [[nodiscard]] const ip_address& peer_address_on(const std::string& link) const;
};

// Every problem found, one per line: "FILE:LINE: key = value: what is allowed".
class config_error : public std::runtime_error {
public:
    explicit config_error(const std::vector<std::string>& problems);
    std::vector<std::string> problems;
};

// Reads and validates the file, including the key file (mode 0600, >= 32 bytes).
// Throws config_error listing every problem found.
[[nodiscard]] config load_config(const std::string& path);
// The same for text already in memory (tests); `key_file` paths are still read.
[[nodiscard]] config parse_config(std::string_view text, const std::string& path);

// What a reload may apply without moving the VIP (the seeds' "Editing an HA
// Cluster": heartbeat, connectivity and rate), and what needs a re-pairing.
struct reload_plan {
    std::vector<std::string> applied;  // "heartbeat.interval: 10s -> 1s"
    std::vector<std::string> refused;  // "cluster.vip: changing it needs a re-pairing ..."
    [[nodiscard]] bool ok() const { return refused.empty(); }
};
[[nodiscard]] reload_plan plan_reload(const config& running, const config& fresh);

[[nodiscard]] const char* to_string(node_role r) noexcept;
[[nodiscard]] const char* to_string(backend_kind b) noexcept;

}  // namespace tandem::agent
