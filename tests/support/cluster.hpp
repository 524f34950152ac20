// tests: a real two-node Tandem cluster in namespaces — two node hosts and a client on one bridge.
#pragma once

#include "support/netns.hpp"
#include "support/tempdir.hpp"

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem::test {

// Where the binaries under test are: $TANDEM_BIN_DIR (set by tests/run) or build/release/bin.
std::string bin_dir();

// tandemd running inside a namespace; SIGKILLed when destroyed if still running.
class daemon_process {
public:
    // `env` entries ("NOTIFY_SOCKET=/path") are added to tandemd's environment;
    // `wrapper` is a command that runs tandemd with its arguments appended
    // (capsh dropping capabilities, for instance).
    daemon_process(const netns& ns, const std::string& config, const std::string& log,
                   const std::vector<std::string>& env = {}, const std::vector<std::string>& wrapper = {});
    ~daemon_process();
    daemon_process(const daemon_process&) = delete;
    daemon_process& operator=(const daemon_process&) = delete;
    void kill9();
    // SIGTERM and reap; returns the exit status.
    int terminate();
    // Waits up to `limit` for it to exit by itself and reaps it; its exit status, or nothing.
    std::optional<int> wait_exit(std::chrono::milliseconds limit);
    [[nodiscard]] pid_t pid() const { return pid_; }

private:
    pid_t pid_ = -1;
};

struct node_spec {
    std::string key;       // "a" or "b"
    std::string name;      // alpha / beta
    std::string role;      // primary / secondary
    std::string address;   // 10.77.0.1
    std::string extra;     // appended TOML
};

// Generous deadlines: an event that should come within a 300 ms timeout gets
// several seconds on a loaded CI machine; an event that must NOT come is given
// a few timeouts to prove it stays away.
inline constexpr std::chrono::milliseconds soon{5000};
inline constexpr std::chrono::milliseconds never{1500};

// Two nodes (alpha primary at .1, beta secondary at .2) and a client (.10) on
// the bridge of a hub namespace; VIP 10.77.0.100/24 (or fd00:77::1, ::2, ::10
// and fd00:77::100/64), connectivity target: the client.
class test_cluster {
public:
    struct options {
        std::string interval = "100ms";
        std::string timeout = "300ms";
        bool connectivity = true;
        bool ipv6 = false;  // nodes, client and VIP in fd00:77::/64 instead of 10.77.0.0/24
        std::string extra_a, extra_b;  // appended to each node's configuration
        std::string heartbeat_a, heartbeat_b;  // extra lines in each node's [heartbeat] section
    };
    test_cluster();
    explicit test_cluster(options o);
    ~test_cluster();

    // "10.77.0.1" / "fd00:77::1" for "a", "b", "client" and "vip" (without prefix).
    std::string addr(const std::string& who) const;
    // The MAC address of eth0 in a node's or the client's namespace.
    std::string mac(const std::string& who) const;
    // Whether `ip addr` in a node's namespace shows the VIP (with label eth0:0 for IPv4).
    bool has_vip(const std::string& node) const;
    const netns& ns(const std::string& node) const { return node == "a" ? *a_ : node == "b" ? *b_ : *client_; }
    std::string config_path(const std::string& node) const;
    std::string socket(const std::string& node) const;
    std::string log(const std::string& node) const;  // the node's whole log so far

    void start(const std::string& node, const std::vector<std::string>& env = {},
               const std::vector<std::string>& wrapper = {});
    // Starts both nodes and requires alpha ACTIVE and beta STANDBY.
    void up();
    void kill9(const std::string& node);
    // tandemd's pid on a node (its mount namespace is where the node's /store is mounted), or -1.
    [[nodiscard]] pid_t pid(const std::string& node) const;
    int stop(const std::string& node);  // SIGTERM
    // The exit status of a node's tandemd that ends by itself (a refused start) within `limit`.
    std::optional<int> exit_status(const std::string& node, std::chrono::milliseconds limit);
    // Runs tandemctl against a node; returns status and output.
    cmd_result ctl(const std::string& node, const std::string& args) const;
    // `tandemctl wait COND --timeout T`: true if reached in time. On timeout the
    // node's log is attached to the test's output.
    // With `since` (from last_seq), events emitted after that point count too:
    // take last_seq before acting, then wait, and no event can be missed.
    bool wait(const std::string& node, const std::string& cond, std::chrono::milliseconds timeout,
              std::optional<std::uint64_t> since = std::nullopt) const;
    std::uint64_t last_seq(const std::string& node) const;
    nlohmann::json status(const std::string& node) const;
    std::string state(const std::string& node) const;
    // Rewrites a node's configuration with extra TOML (for reload tests).
    void rewrite_config(const std::string& node, const std::string& extra, const std::string& replace_from = "",
                        const std::string& replace_to = "");
    // Milliseconds between a CLOCK_MONOTONIC instant and a node's event's mono_ns.
    std::optional<double> event_after_ms(const std::string& node, const std::string& id, const std::string& to,
                                         std::uint64_t since_mono_ns) const;
    options opt;

private:
    void write_config(const std::string& node);
    temp_dir dir_;
    std::unique_ptr<netns> hub_, a_, b_, client_;
    std::unique_ptr<bridge> br_;
    std::map<std::string, std::unique_ptr<daemon_process>> procs_;
    std::map<std::string, std::string> extra_;
};

std::uint64_t mono_now_ns();

}  // namespace tandem::test
