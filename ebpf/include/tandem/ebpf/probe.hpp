// ebpf: heartbeat latency probes on one link — the tcx programs (bpf_probe) or,
// where BPF is unavailable, kernel socket timestamps (ts_probe). Both fill the
// same hbp_link with the same code (hb_stats.h).
#pragma once

#include "tandem/base/result.hpp"
#include "tandem/ebpf/hb_stats.h"

#include <sys/socket.h>

#include <array>
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

// Copies a struct the kernel updates under a sequence count (gen odd = being
// written); nullopt if no stable copy came within a few tries.
template <class T>
std::optional<T> read_stable(const T& live) {
    for (int attempt = 0; attempt < 8; ++attempt) {
        auto g1 = __atomic_load_n(&live.gen, __ATOMIC_ACQUIRE);
        if (g1 & 1) continue;
        T copy;
        __builtin_memcpy(&copy, &live, sizeof copy);  // racing writer: checked below
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&live.gen, __ATOMIC_RELAXED) == g1) return copy;
    }
    return std::nullopt;
}

// The tcx programs of one link, loaded from the CO-RE skeleton and attached
// through BPF links: they detach when tandemd exits, however it exits.
class bpf_probe {
public:
    // On failure, the reason in words ("Operation not permitted: tandemd needs CAP_BPF").
    static std::unique_ptr<bpf_probe> attach(const link_params& p, std::string& why);
    ~bpf_probe();
    bpf_probe(const bpf_probe&) = delete;
    bpf_probe& operator=(const bpf_probe&) = delete;

    // Live view of the programs' global data (a memory map: no system call).
    [[nodiscard]] const hbp_link& figures() const noexcept { return *live_; }
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
    const hbp_link* live_ = nullptr;
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
