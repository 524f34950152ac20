// agent: tandemd's runtime — the machine fed by heartbeats, timers, health and the control socket.
#pragma once

#include "tandem/agent/config.hpp"
#include "tandem/agent/drbd.hpp"
#include "tandem/agent/control.hpp"
#include "tandem/agent/event_bus.hpp"
#include "tandem/agent/failover.hpp"
#include "tandem/agent/store.hpp"
#include "tandem/agent/heartbeat_codec.hpp"
#include "tandem/agent/hw_watchdog.hpp"
#include "tandem/agent/lease.hpp"
#include "tandem/agent/machine.hpp"
#include "tandem/agent/vip_owner.hpp"
#include "tandem/netlink/events.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tandem::agent {

class node_runtime {
public:
    // Binds every heartbeat link and the control socket; throws std::runtime_error
    // naming the link, address or path that failed.
    node_runtime(boost::asio::io_context& io, config cfg);
    ~node_runtime();

    // The configuration, updated in place by a reload; phases may keep a reference.
    [[nodiscard]] const config& current_config() const { return cfg_; }
    void install_sequence(failover_sequence seq);
    // The VIP on the management interface; failover phases 2, 3 and 5 use it.
    [[nodiscard]] vip_owner& vip() { return *vip_; }
    // The io_uring replication engine (backend "uring"), or null.
    [[nodiscard]] replication::engine* engine() { return engine_.get(); }
    // Failover phase 1 for the configured backend; the runtime keeps a view of
    // it for status and for refusing a release while /store is busy.
    [[nodiscard]] std::unique_ptr<failover_phase> make_storage_phase();
    // Starts the coroutines; io.run() returns after a clean shutdown.
    void start();
    [[nodiscard]] nlohmann::json status() const;

private:
    struct link_state;

    boost::asio::awaitable<void> receive(link_state& l);
    boost::asio::awaitable<void> send_loop();
    boost::asio::awaitable<void> watchdog_loop();
    boost::asio::awaitable<void> health_loop();
    boost::asio::awaitable<void> sd_watchdog_loop();
    boost::asio::awaitable<void> hw_watchdog_loop();
    [[nodiscard]] nlohmann::json watchdog_section() const;
    // What a stopping tandemd still holds, which the host's watchdog must not
    // be stopped under; "" when nothing.
    [[nodiscard]] std::string still_held() const;
    boost::asio::awaitable<void> signal_loop();
    boost::asio::awaitable<void> netlink_loop();
    boost::asio::awaitable<void> refresh_loop();
    boost::asio::awaitable<void> drbd_loop();
    boost::asio::awaitable<void> drbd_watch_events2();
    boost::asio::awaitable<void> drbd_watch_proc();
    boost::asio::awaitable<void> drbd_keep_up();
    void on_drbd_state(const drbd::kernel_state& s);
    bool apply_drbd_rate();  // false: the resource file could not be written (an event says why)
    void on_netlink(const netlink::event& ev);
    void check_link();  // re-reads the management link and folds it into health
    void set_link_usable(bool ok, const std::string& detail);
    void update_health();
    void reannounce(const std::string& why);
    boost::asio::awaitable<std::pair<bool, std::string>> probe_store();

    void apply(effects e);
    void send_heartbeats();
    void start_sequence(sequence_kind k, release_kind how);
    void start_connectivity_test();
    void on_datagram(link_state& l, std::span<const std::byte> data, std::optional<std::uint64_t> rx_mono_ns);
    void drop(drop_reason r, const std::string& link);
    nlohmann::json handle(const nlohmann::json& req);
    nlohmann::json reload();
    void begin_shutdown();
    void maybe_finish_shutdown();
    void notify_status();
    void on_replication_event(const std::string& kind, const std::string& detail);
    // Fencing with the engine (docs/replication-engine.md, "Fencing"): lets the
    // held writes go once the peer reports a copy it cannot promote, is lost,
    // or is too old to be told.
    void check_fence();
    nlohmann::json force_takeover();
    [[nodiscard]] sync_state replication_sync() const;
    [[nodiscard]] nlohmann::json replication_status() const;
    [[nodiscard]] nlohmann::json store_section() const;
    [[nodiscard]] nlohmann::json latency_section(bool histograms) const;
    nlohmann::json set_sync_rate(const nlohmann::json& req);
    [[nodiscard]] steady_time now() const { return std::chrono::steady_clock::now(); }

    boost::asio::io_context& io_;
    config cfg_;
    event_bus bus_;
    ha_machine machine_;
    // Declared before the sequence: the storage phase's front end calls into the
    // engine until the sequence is destroyed, so the engine must outlive it.
    std::unique_ptr<replication::engine> engine_;
    std::unique_ptr<drbd::backend> drbd_;  // backend "drbd"
    std::unique_ptr<lease_keeper> lease_;  // backend "shared" with a lease_device; outlives the storage phase too
    drbd::kernel_state drbd_state_;
    bool drbd_forcing_ = false;  // the first full sync of a new cluster is being started
    bool drbd_force_failed_ = false;  // and failed in this run: not retried
    bool drbd_own_disconnect_ = false;  // tandemd itself disconnected it (discard-local): not brought back
    // A running DRBD resync as the status shows it: its size (the most out of
    // sync seen since it started) and its start, for the rate.
    std::uint64_t drbd_sync_total_kib_ = 0;
    steady_time drbd_sync_started_{};
    [[nodiscard]] std::string first_sync_marker() const;
    std::optional<failover_sequence> sequence_;
    std::vector<std::unique_ptr<link_state>> links_;
    std::unique_ptr<control_server> control_;
    std::unique_ptr<vip_owner> vip_;
    std::optional<netlink::event_socket> nl_events_;
    bool check_ok_ = true, link_ok_ = true;
    std::string check_detail_, link_detail_;
    nlohmann::json link_kernel_ = nlohmann::json::object();  // interface -> {up, carrier}
    boost::asio::steady_timer send_timer_;
    boost::asio::steady_timer watchdog_timer_;
    boost::asio::steady_timer refresh_timer_;  // re-armed by a reload
    boost::asio::signal_set signals_;
    // [watchdog] device: opened by start(), fed by hw_watchdog_loop(). Stopped
    // by the destructor only when this node holds nothing.
    std::optional<hw_watchdog> hw_watchdog_;
    boost::asio::steady_timer hw_watchdog_timer_;  // re-armed by a reload
    bool hw_watchdog_fed_ = true;  // the loop's last decision
    steady_time hw_watchdog_last_fed_{};

    std::uint64_t boot_id_;
    std::uint64_t saved_generation_ = machine_.generation();  // what <state_dir>/generation.<node> holds
    void save_generation();
    std::uint64_t tx_seq_ = 0;
    replay_window replay_;
    std::optional<std::uint64_t> peer_boot_;
    std::uint8_t peer_wire_version_ = heartbeat_version;  // the heartbeat format we send
    std::uint64_t peer_wire_boot_ = 0;  // the peer's run whose highest version peer_wire_version_ is
    std::array<std::uint64_t, static_cast<std::size_t>(drop_reason::count_)> drops_{};
    std::string last_status_;
    bool stopping_ = false;
    bool peer_takeover_refused_ = false;  // the peer's current takeover request was refused (once)
    nlohmann::json last_sequence_;

    struct probe_state;
    std::shared_ptr<probe_state> probe_inflight_;
    [[nodiscard]] std::string store_probe_path() const;

    // Last: stopped (and its thread joined) before anything it posts to goes away.
    store_phase* store_ = nullptr;  // owned by the failover sequence
};

}  // namespace tandem::agent
