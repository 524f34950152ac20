// ebpf: heartbeat latency probes on one link — the tcx programs (bpf_probe) or,
// where BPF is unavailable, kernel socket timestamps (ts_probe). Both feed their
// stamps to the same bookkeeping (hb_stats.h) in tandemd's memory.
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/ebpf/hb_stats.h"

#include <sys/socket.h>

#include <array>
#include <deque>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

struct hb_probe;  // the generated skeleton
struct bpf_link;

namespace tandem::ebpf {

struct link_params {
    std::string ifname;
    std::uint16_t port = 694;
    int family = AF_INET;                 // of the peer's address
    std::array<std::uint8_t, 16> peer{};  // network byte order; 4 bytes used for AF_INET
    hbp_params thresholds{};
};

// The tcx programs of one link, loaded from the CO-RE skeleton and attached
// through BPF links: they detach when tandemd exits, however it exits. The
// programs only stamp heartbeats and count arrivals; this object reads the
// stamps through a memory map (no system call) when tandemd sends and receives
// heartbeats, and keeps the figures.
class bpf_probe {
public:
    // On failure, the reason in words ("Operation not permitted: tandemd needs CAP_BPF").
    static std::unique_ptr<bpf_probe> attach(const link_params& p, std::string& why);
    ~bpf_probe();
    bpf_probe(const bpf_probe&) = delete;
    bpf_probe& operator=(const bpf_probe&) = delete;

    // A heartbeat just went out through send(); its stamp follows when it passes the hook.
    void on_sent(const hbp_packet& p);
    // Takes the egress stamps of earlier sends.
    void drain();
    // An authenticated heartbeat from the peer (its ingress stamp is already there).
    void on_received(const hbp_packet& p);
    // The figures, with the kernel's counters as they are now.
    [[nodiscard]] const hbp_link& figures() const;
    void set_thresholds(const hbp_params& p) noexcept { params_ = p; }
    [[nodiscard]] bool counts_drops() const noexcept { return drop_link_ != nullptr; }
    // Kernel statistics of the programs (needs kernel.bpf_stats_enabled = 1).
    struct prog_stats {
        std::string name;
        std::uint64_t run_cnt = 0, run_time_ns = 0;
    };
    [[nodiscard]] std::array<prog_stats, 2> stats() const;

private:
    bpf_probe() = default;
    ::hb_probe* skel_ = nullptr;
    ::bpf_link* drop_link_ = nullptr;
    int ingress_link_ = -1, egress_link_ = -1;
    const hbp_kernel* live_ = nullptr;
    hbp_params params_{};
    hbp_link* link_ = nullptr;     // in the programs' global data too, written by tandemd only
    std::deque<hbp_packet> sent_;  // sent, egress stamp not read yet; oldest first
};

// The fallback: SO_TIMESTAMPING software stamps of the heartbeat socket, taken
// where the tcx hooks sit (RX in the receive path, TX_SCHED before the qdisc).
class ts_probe {
public:
    explicit ts_probe(const hbp_params& thresholds);
    // Turns the stamps on for a socket; the error names what failed.
    static error_code enable(int fd);
    // A datagram just left through send(): the kernel stamps it under the next key.
    void on_sent(const hbp_packet& p);
    // A send failed; ENOBUFS and EAGAIN still used up a key.
    void on_send_failed(int err);
    // Reads every TX stamp waiting in fd's error queue.
    void drain_error_queue(int fd);
    // An authenticated heartbeat and the kernel's receive stamp (CLOCK_MONOTONIC).
    void on_received(const hbp_packet& p, std::uint64_t rx_mono_ns);
    [[nodiscard]] const hbp_link& figures() const noexcept { return *link_; }
    void set_thresholds(const hbp_params& p) noexcept { params_ = p; }

private:
    hbp_params params_;
    std::unique_ptr<hbp_link> link_;
    std::uint32_t next_key_ = 0;
    struct sent {
        std::uint32_t key = 0;
        bool used = false;
        hbp_packet p{};
    };
    std::array<sent, HBP_SLOTS> sent_{};
};

// One datagram read with recvmsg, and its kernel receive stamp converted to CLOCK_MONOTONIC.
struct received {
    std::size_t size = 0;
    sockaddr_storage from{};
    std::optional<std::uint64_t> rx_mono_ns;
};
// Non-blocking; would_block when nothing waits.
result<received> receive_stamped(int fd, std::span<std::byte> buf);

// Values recorded in a histogram.
std::uint64_t count(const hbp_hist& h);
// p50 etc. of a histogram, in ns (the middle of the bucket that holds the quantile); nullopt when empty.
std::optional<double> percentile(const hbp_hist& h, double q);
// The kernel's name for an skb drop reason ("NETFILTER_DROP"), read from its BTF.
std::string drop_reason_name(unsigned reason);
// Figures of one link in microseconds, flat for Prometheus-style scraping;
// with `histograms`, the non-empty buckets too.
nlohmann::json figures_json(const hbp_link& l, bool histograms);
// Number of programs attached to ifindex's tcx hook (ingress or egress), or the error.
result<int> tcx_program_count(int ifindex, bool ingress);

}  // namespace tandem::ebpf
