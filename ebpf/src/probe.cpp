// ebpf: loading and attaching the heartbeat probe; reading its figures.
#include "tandem/ebpf/probe.hpp"

#include "tandem/base/log.hpp"

#include <net/if.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "hb_probe.skel.h"

#include <fmt/format.h>

#include <cstring>
#include <map>
#include <mutex>
#include <vector>

namespace tandem::ebpf {

namespace {

// libbpf 1.1 predates tcx; the kernel's numbers for its attach points.
constexpr int attach_tcx_ingress = 46;
constexpr int attach_tcx_egress = 47;

int libbpf_print(libbpf_print_level level, const char* fmt, va_list ap) {
    if (level == LIBBPF_DEBUG) return 0;
    char line[512];
    int n = std::vsnprintf(line, sizeof line, fmt, ap);
    std::string_view s(line, n > 0 ? std::min<std::size_t>(n, sizeof line - 1) : 0);
    while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
    log::debug("ebpf.libbpf", "{}", s);
    return 0;
}

// Copies a slot the kernel writes under a sequence count (gen odd = being
// written); nullopt if no stable copy came within a few tries.
std::optional<hbp_stamp> read_stable(const hbp_stamp& live) {
    for (int attempt = 0; attempt < 8; ++attempt) {
        auto g1 = __atomic_load_n(&live.gen, __ATOMIC_ACQUIRE);
        if (g1 & 1) continue;
        hbp_stamp copy;
        __builtin_memcpy(&copy, &live, sizeof copy);  // racing writer: checked below
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&live.gen, __ATOMIC_RELAXED) == g1) return copy;
    }
    return std::nullopt;
}

// The kernel's stamp of heartbeat `seq` in one direction, if it still holds it.
std::optional<std::uint64_t> stamp_of(const hbp_stamp (&slots)[HBP_SLOTS], std::uint64_t seq) {
    auto s = read_stable(slots[seq & (HBP_SLOTS - 1)]);
    if (s && s->seq == seq) return s->t;
    return std::nullopt;
}

std::string explain(int err, std::string_view step) {
    std::string hint;
    if (err == EPERM) hint = " (tandemd needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, or root)";
    else if (err == EACCES && step == "load")
        hint = " (the kernel's verifier refused the programs; tandemd --debug shows its log)";
    else if (err == ENOENT && step == "load") hint = " (no kernel BTF at /sys/kernel/btf/vmlinux?)";
    else if (err == EINVAL && step != "load") hint = " (a kernel older than 6.6 has no tcx)";
    return fmt::format("{}: {}{}", step, std::strerror(err), hint);
}

}  // namespace

std::unique_ptr<bpf_probe> bpf_probe::attach(const link_params& p, std::string& why) {
    static std::once_flag quiet;
    std::call_once(quiet, [] { libbpf_set_print(libbpf_print); });
    if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
        why = "no kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)";
        return nullptr;
    }
    unsigned ifindex = ::if_nametoindex(p.ifname.c_str());
    if (!ifindex) {
        why = fmt::format("{}: {}", p.ifname, std::strerror(errno));
        return nullptr;
    }
    struct stat ns {};
    if (::stat("/proc/self/ns/net", &ns) != 0) ns.st_ino = 0;

    std::unique_ptr<bpf_probe> self(new bpf_probe);
    // The drop counter is optional: if its program does not load, the rest still can.
    for (bool with_drops : {true, false}) {
        if (self->skel_) hb_probe::destroy(self->skel_);
        self->skel_ = hb_probe::open();
        if (!self->skel_) {
            why = explain(errno, "open");
            return nullptr;
        }
        auto* ro = self->skel_->rodata;
        ro->port = p.port;
        ro->family = p.family == AF_INET6 ? 6 : 4;
        std::memcpy(const_cast<std::uint8_t*>(ro->peer_addr), p.peer.data(), 16);
        ro->ifindex = ifindex;
        ro->netns_ino = static_cast<std::uint32_t>(ns.st_ino);
        bpf_program__set_autoload(self->skel_->progs.hb_drop, with_drops);
        int err = hb_probe::load(self->skel_);
        if (err == 0) break;
        why = explain(-err, "load");
        if (!with_drops) return nullptr;  // a tracing program needs more (CAP_PERFMON): try without it
        log::debug("ebpf.no_drop_counter", "the drop-reason program did not load: {}", why);
    }
    self->live_ = &self->skel_->bss->k;
    self->link_ = &self->skel_->bss->book;
    self->params_ = p.thresholds;

    self->ingress_link_ = bpf_link_create(bpf_program__fd(self->skel_->progs.hb_ingress), static_cast<int>(ifindex),
                                          static_cast<bpf_attach_type>(attach_tcx_ingress), nullptr);
    if (self->ingress_link_ < 0) {
        why = explain(-self->ingress_link_, "tcx ingress on " + p.ifname);
        return nullptr;
    }
    self->egress_link_ = bpf_link_create(bpf_program__fd(self->skel_->progs.hb_egress), static_cast<int>(ifindex),
                                         static_cast<bpf_attach_type>(attach_tcx_egress), nullptr);
    if (self->egress_link_ < 0) {
        why = explain(-self->egress_link_, "tcx egress on " + p.ifname);
        return nullptr;
    }
    if (bpf_program__autoload(self->skel_->progs.hb_drop)) {
        self->drop_link_ = bpf_program__attach(self->skel_->progs.hb_drop);
        if (!self->drop_link_)
            log::debug("ebpf.no_drop_counter", "tp_btf/kfree_skb did not attach: {}", std::strerror(errno));
    }
    return self;
}

bpf_probe::~bpf_probe() {
    if (drop_link_) bpf_link__destroy(drop_link_);
    if (ingress_link_ >= 0) ::close(ingress_link_);
    if (egress_link_ >= 0) ::close(egress_link_);
    if (skel_) hb_probe::destroy(skel_);
}

void bpf_probe::on_sent(const hbp_packet& p) {
    if (sent_.size() == HBP_SLOTS) sent_.pop_front();  // its slot is taken by now anyway
    sent_.push_back(p);
}

void bpf_probe::drain() {
    // Heartbeats pass the hook in the order they were sent: once a later one
    // has its stamp, an earlier one without never gets one (a firewall dropped
    // it before the hook). One not stamped yet, with nothing stamped after it,
    // is still on its way (waiting for the neighbour's address): it stays.
    std::size_t done = 0;
    std::vector<std::optional<std::uint64_t>> t(sent_.size());
    for (std::size_t i = 0; i < sent_.size(); ++i)
        if ((t[i] = stamp_of(live_->tx_stamp, sent_[i].seq))) done = i + 1;
    for (std::size_t i = 0; i < done; ++i)
        if (t[i]) hbp_on_egress(&params_, link_, &sent_[i], *t[i]);
    sent_.erase(sent_.begin(), sent_.begin() + static_cast<std::ptrdiff_t>(done));
}

void bpf_probe::on_received(const hbp_packet& p) {
    drain();  // our answers first: the sample may need them
    if (auto t = stamp_of(live_->rx_stamp, p.seq)) hbp_on_ingress(&params_, link_, &p, *t);
    else link_->lost_out = p.rx_lost;  // its stamp was overwritten while tandemd was away
}

const hbp_link& bpf_probe::figures() const {
    // Single words, each written by one hook: a plain copy is as fresh as a read can be.
    link_->tx = live_->tx;
    link_->in = live_->in;
    std::memcpy(link_->drops, live_->drops, sizeof link_->drops);
    return *link_;
}

std::array<bpf_probe::prog_stats, 2> bpf_probe::stats() const {
    std::array<prog_stats, 2> out;
    bpf_program* progs[2] = {skel_->progs.hb_ingress, skel_->progs.hb_egress};
    for (int i = 0; i < 2; ++i) {
        bpf_prog_info info{};
        std::uint32_t len = sizeof info;
        out[i].name = bpf_program__name(progs[i]);
        if (bpf_obj_get_info_by_fd(bpf_program__fd(progs[i]), &info, &len) == 0) {
            out[i].run_cnt = info.run_cnt;
            out[i].run_time_ns = info.run_time_ns;
        }
    }
    return out;
}

result<int> tcx_program_count(int ifindex, bool ingress) {
    std::uint32_t ids[16], count = 16, flags = 0;
    int rc = bpf_prog_query(ifindex, static_cast<bpf_attach_type>(ingress ? attach_tcx_ingress : attach_tcx_egress), 0,
                            &flags, ids, &count);
    if (rc < 0) return errno_error(-rc);
    return static_cast<int>(count);
}

std::uint64_t count(const hbp_hist& h) {
    std::uint64_t n = 0;
    for (auto b : h.bucket) n += b;
    return n;
}

std::optional<double> percentile(const hbp_hist& h, double q) {
    std::uint64_t total = 0;
    for (auto b : h.bucket) total += b;
    if (total == 0) return std::nullopt;
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total - 1));
    std::uint64_t seen = 0;
    for (std::uint32_t i = 0; i < HBP_BUCKETS; ++i) {
        seen += h.bucket[i];
        if (seen > rank) {
            double lo = static_cast<double>(hbp_bucket_low(i));
            double hi = i + 1 < HBP_BUCKETS ? static_cast<double>(hbp_bucket_low(i + 1)) : lo;
            return (lo + hi) / 2;
        }
    }
    return std::nullopt;
}

std::string drop_reason_name(unsigned reason) {
    static std::once_flag once;
    static std::map<unsigned, std::string> names;
    std::call_once(once, [] {
        btf* vmlinux = btf__load_vmlinux_btf();
        if (!vmlinux) return;
        int id = btf__find_by_name_kind(vmlinux, "skb_drop_reason", BTF_KIND_ENUM);
        if (id > 0) {
            const btf_type* t = btf__type_by_id(vmlinux, id);
            const struct btf_enum* e = btf_enum(t);
            for (int i = 0; i < btf_vlen(t); ++i) {
                std::string n = btf__name_by_offset(vmlinux, e[i].name_off);
                if (n.rfind("SKB_DROP_REASON_", 0) == 0) n.erase(0, 16);
                names[static_cast<unsigned>(e[i].val)] = n;
            }
        }
        btf__free(vmlinux);
    });
    auto it = names.find(reason);
    return it != names.end() ? it->second : fmt::format("reason_{}", reason);
}

namespace {

double us(double ns) { return ns / 1000.0; }

void hist_json(nlohmann::json& out, const std::string& name, const hbp_link& l, hbp_hist_id id, bool histograms) {
    const hbp_hist& h = l.hist[id];
    auto n = count(h);
    out[name + "_count"] = n;
    for (auto [label, q] : {std::pair{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}}) {
        auto v = percentile(h, q);
        out[fmt::format("{}_{}_us", name, label)] = v ? nlohmann::json(us(*v)) : nlohmann::json(nullptr);
    }
    out[name + "_max_us"] = n ? nlohmann::json(us(static_cast<double>(l.max[id]))) : nlohmann::json(nullptr);
    out[name + "_mean_us"] =
        n ? nlohmann::json(us(static_cast<double>(l.sum[id]) / static_cast<double>(n))) : nlohmann::json(nullptr);
    if (!histograms) return;
    auto& rows = out["histograms"][name] = nlohmann::json::array();
    for (std::uint32_t i = 0; i < HBP_BUCKETS; ++i)
        if (h.bucket[i]) rows.push_back({{"from_us", us(static_cast<double>(hbp_bucket_low(i)))}, {"count", h.bucket[i]}});
}

}  // namespace

nlohmann::json figures_json(const hbp_link& l, bool histograms) {
    nlohmann::json j = {{"tx", l.tx},
                        {"rx", l.in.rx},
                        {"samples", l.samples},
                        {"lost_in", l.in.lost_in},
                        {"lost_out", l.lost_out},
                        {"reordered_in", l.in.reordered_in},
                        {"peer_stalls", l.peer_stalls},
                        {"local_stalls", l.local_stalls},
                        {"network_delays", l.network_delays}};
    if (l.samples) {
        j["last_rtt_us"] = us(static_cast<double>(l.last.rtt));
        j["last_network_us"] = us(static_cast<double>(l.last.network));
        j["last_turnaround_us"] = us(static_cast<double>(l.last.turnaround));
    }
    hist_json(j, "rtt", l, HBP_RTT, histograms);
    hist_json(j, "network", l, HBP_NETWORK, histograms);
    hist_json(j, "turnaround_peer", l, HBP_TURNAROUND_PEER, histograms);
    hist_json(j, "turnaround_local", l, HBP_TURNAROUND_LOCAL, histograms);
    hist_json(j, "jitter_out", l, HBP_JITTER_OUT, histograms);
    hist_json(j, "jitter_in", l, HBP_JITTER_IN, histograms);
    auto& drops = j["drops"] = nlohmann::json::object();
    for (unsigned r = 0; r < HBP_DROP_REASONS; ++r)
        if (l.drops[r]) drops[drop_reason_name(r)] = l.drops[r];
    return j;
}

}  // namespace tandem::ebpf
