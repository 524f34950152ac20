// agent: heartbeat latency of one link — the kernel probe, or socket timestamps
// where BPF is unavailable — and the events it raises. Diagnosis only: liveness
// never depends on anything here.
#pragma once

#include "tandem/agent/config.hpp"
#include "tandem/agent/event_bus.hpp"
#include "tandem/agent/heartbeat_codec.hpp"
#include "tandem/ebpf/probe.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem::agent {

class link_latency {
public:
    // Sets up the configured source on one heartbeat link. Never throws for a
    // probe that will not load: it falls back and logs one warning naming why.
    link_latency(const config& c, const std::string& link, int sock_fd);

    // The event thresholds from c (heartbeat.interval and latency_alert), after a reload.
    void set_thresholds(const config& c);
    // Fills the probe fields of an outgoing heartbeat (link_seq, the kernel
    // timestamps of our last answer, what we lost).
    void fill(heartbeat& hb);
    // After send(): `err` is 0 or the errno of a failed send.
    void on_sent(const heartbeat& hb, int err);
    // An authenticated heartbeat and, when the socket stamps are on, its kernel receive time.
    void on_received(const heartbeat& hb, std::optional<std::uint64_t> rx_mono_ns);
    [[nodiscard]] bool timestamping() const noexcept { return ts_ != nullptr; }
    // "bpf" or "timestamping": the source of the figures shown first.
    [[nodiscard]] std::string source() const;
    // The network part of the newest sample, in ms, if there is one.
    [[nodiscard]] std::optional<double> rtt_ms() const;
    // host stall / network delay events since the last call.
    [[nodiscard]] std::vector<event> take_events();
    // Flat figures (status --json); with `histograms`, buckets too (tandemctl latency).
    [[nodiscard]] nlohmann::json to_json(bool histograms) const;
    [[nodiscard]] const ebpf::bpf_probe* bpf() const noexcept { return bpf_.get(); }

private:
    [[nodiscard]] const hbp_link* primary() const noexcept;

    std::string link_;
    int fd_;  // the link's heartbeat socket (its error queue holds the TX stamps)
    std::string why_no_bpf_;
    std::unique_ptr<ebpf::bpf_probe> bpf_;
    std::unique_ptr<ebpf::ts_probe> ts_;
    std::uint32_t link_seq_ = 0;
    std::uint64_t seen_peer_stalls_ = 0, seen_local_stalls_ = 0, seen_delays_ = 0;
    std::chrono::steady_clock::time_point last_event_{};
};

}  // namespace tandem::agent
