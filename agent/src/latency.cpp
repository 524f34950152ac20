// agent: heartbeat latency of one link — choosing the source, feeding it, and
// turning its counters into events.
#include "tandem/agent/latency.hpp"

#include "tandem/base/log.hpp"

#include <fmt/format.h>

#include <cstring>
#include <limits>

namespace tandem::agent {

namespace {

hbp_packet packet_of(const heartbeat& hb) {
    hbp_packet p{};
    p.boot_id = hb.boot_id;
    p.seq = hb.seq;
    p.echo_seq = hb.echo_seq;
    p.ks_seq = hb.ks_seq;
    p.ks_rx = hb.ks_rx_ns;
    p.ks_tx = hb.ks_tx_ns;
    p.ks_reply_seq = hb.ks_reply_seq;
    p.link_seq = hb.link_seq;
    p.rx_lost = hb.rx_lost;
    return p;
}

hbp_params thresholds_of(const config& c) {
    using std::chrono::nanoseconds;
    hbp_params th{};
    th.stall_ns = static_cast<__u64>(nanoseconds(c.heartbeat.interval + c.heartbeat.latency_alert).count());
    th.delay_ns = static_cast<__u64>(nanoseconds(c.heartbeat.latency_alert).count());
    return th;
}

std::string ms(std::uint64_t ns) { return fmt::format("{:.3f}", static_cast<double>(ns) / 1e6); }

}  // namespace

link_latency::link_latency(const config& c, const std::string& link, int sock_fd) : link_(link), fd_(sock_fd) {
    hbp_params th = thresholds_of(c);
    bool want_ts = c.heartbeat.probe != latency_probe::bpf;
    if (c.heartbeat.probe != latency_probe::timestamping) {
        ebpf::link_params p;
        p.ifname = link;
        p.port = c.heartbeat.port;
        const auto& peer = c.peer_address_on(link);
        p.family = peer.family;
        std::memcpy(p.peer.data(), peer.bytes.data(), 16);
        p.thresholds = th;
        bpf_ = ebpf::bpf_probe::attach(p, why_no_bpf_);
        if (bpf_) {
            log::info("latency.probe", "heartbeat link {}: BPF probe on tcx ingress and egress{}", link,
                      bpf_->counts_drops() ? ", drops counted by kernel reason" : "");
        } else {
            log::warning("latency.no_bpf",
                         "heartbeat link {}: the BPF latency probe is unavailable ({}); measuring with socket "
                         "timestamps instead",
                         link, why_no_bpf_);
            want_ts = true;
        }
    }
    if (want_ts) {
        if (auto ec = ebpf::ts_probe::enable(sock_fd))
            log::warning("latency.no_timestamps", "heartbeat link {}: no socket timestamps either ({}); no latency figures",
                         link, ec.message());
        else
            ts_ = std::make_unique<ebpf::ts_probe>(th);
    }
}

void link_latency::set_thresholds(const config& c) {
    if (bpf_) bpf_->set_thresholds(thresholds_of(c));
    if (ts_) ts_->set_thresholds(thresholds_of(c));
}

const hbp_link* link_latency::primary() const noexcept {
    if (bpf_) return &bpf_->figures();
    if (ts_) return &ts_->figures();
    return nullptr;
}

std::string link_latency::source() const { return bpf_ ? "bpf" : ts_ ? "timestamping" : "none"; }

void link_latency::fill(heartbeat& hb) {
    // The stamps of earlier sends: our newest answer.
    if (bpf_) bpf_->drain();
    if (ts_) ts_->drain_error_queue(fd_);
    hb.link_seq = ++link_seq_;
    const hbp_link* l = primary();
    if (!l) return;
    if (l->report.reply_seq) {
        hb.ks_seq = l->report.peer_seq;
        hb.ks_rx_ns = l->report.rx;
        hb.ks_tx_ns = l->report.tx;
        hb.ks_reply_seq = l->report.reply_seq;
    }
    hb.rx_lost =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(l->in.lost_in, std::numeric_limits<std::uint32_t>::max()));
}

void link_latency::on_sent(const heartbeat& hb, int err) {
    if (bpf_ && !err) bpf_->on_sent(packet_of(hb));
    if (!ts_) return;
    if (err) ts_->on_send_failed(err);
    else ts_->on_sent(packet_of(hb));
}

void link_latency::on_received(const heartbeat& hb, std::optional<std::uint64_t> rx_mono_ns) {
    if (bpf_) bpf_->on_received(packet_of(hb));
    if (!ts_ || !rx_mono_ns) return;
    ts_->drain_error_queue(fd_);  // our sends' stamps first: the sample may need them
    ts_->on_received(packet_of(hb), *rx_mono_ns);
}

std::optional<double> link_latency::rtt_ms() const {
    const hbp_link* l = primary();
    if (!l || !l->samples) return std::nullopt;
    return static_cast<double>(l->last.network) / 1e6;
}

std::vector<event> link_latency::take_events() {
    std::vector<event> out;
    const hbp_link* l = primary();
    if (!l) return out;
    // One event a second per link at most; the count says how many it stands for.
    auto now = std::chrono::steady_clock::now();
    if (now - last_event_ < std::chrono::seconds(1)) return out;
    const hbp_sample& last = l->last;
    std::uint64_t stalls = l->peer_stalls, local = l->local_stalls, delays = l->network_delays;
    if (delays > seen_delays_)
        out.push_back({"latency.network_delay",
                       fmt::format("heartbeat link {}: the network delayed heartbeats: {} ms of a {} ms round trip "
                                   "spent between the hosts",
                                   link_, ms(last.network), ms(last.rtt)),
                       {{"link", link_},
                        {"count", std::to_string(delays - seen_delays_)},
                        {"rtt_ms", ms(last.rtt)},
                        {"network_ms", ms(last.network)},
                        {"turnaround_ms", ms(last.turnaround)}}});
    if (stalls > seen_peer_stalls_)
        out.push_back({"latency.host_stall",
                       fmt::format("heartbeat link {}: the peer held our heartbeat {} ms before answering while the "
                                   "network took {} ms: a stalled host, not the network",
                                   link_, ms(last.turnaround), ms(last.network)),
                       {{"link", link_},
                        {"host", "peer"},
                        {"count", std::to_string(stalls - seen_peer_stalls_)},
                        {"rtt_ms", ms(last.rtt)},
                        {"network_ms", ms(last.network)},
                        {"turnaround_ms", ms(last.turnaround)}}});
    if (local > seen_local_stalls_)
        out.push_back({"latency.host_stall",
                       fmt::format("heartbeat link {}: this node held the peer's heartbeat {} ms before answering: "
                                   "this host stalled",
                                   link_, ms(l->last_local_turnaround)),
                       {{"link", link_},
                        {"host", "local"},
                        {"count", std::to_string(local - seen_local_stalls_)},
                        {"turnaround_ms", ms(l->last_local_turnaround)}}});
    if (!out.empty()) {
        last_event_ = now;
        seen_delays_ = delays;
        seen_peer_stalls_ = stalls;
        seen_local_stalls_ = local;
    }
    return out;
}

nlohmann::json link_latency::to_json(bool histograms) const {
    nlohmann::json j = nlohmann::json::object();
    if (const hbp_link* l = primary()) j = ebpf::figures_json(*l, histograms);
    j["link"] = link_;
    j["source"] = source();
    j["drops_counted"] = bpf_ && bpf_->counts_drops();
    if (!why_no_bpf_.empty()) j["bpf_unavailable"] = why_no_bpf_;
    if (bpf_ && ts_) j["timestamping"] = ebpf::figures_json(ts_->figures(), histograms);
    return j;
}

}  // namespace tandem::agent
