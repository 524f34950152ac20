// ebpf: the fallback probe — SO_TIMESTAMPING software stamps fed to the same
// bookkeeping as the kernel probe's stamps (hb_stats.h).
#include "tandem/ebpf/probe.hpp"

#include "tandem/base/clock.hpp"

#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace tandem::ebpf {

namespace {

// Socket stamps read CLOCK_REALTIME; the probe works in CLOCK_MONOTONIC, as
// bpf_ktime_get_ns does. The offset is taken now: a clock step between the
// stamp and now would move one sample, no more.
std::uint64_t to_mono(const timespec& ts) {
    auto real = static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
    auto offset = static_cast<std::int64_t>(realtime_ns()) - static_cast<std::int64_t>(monotonic_ns());
    return static_cast<std::uint64_t>(real - offset);
}

}  // namespace

ts_probe::ts_probe(const hbp_params& thresholds) : params_(thresholds), link_(std::make_unique<hbp_link>()) {}

error_code ts_probe::enable(int fd) {
    int flags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_SOFTWARE |
                SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY;
    if (::setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof flags) != 0) return errno_error();
    return {};
}

void ts_probe::on_sent(const hbp_packet& p) {
    auto& s = sent_[next_key_ & (HBP_SLOTS - 1)];
    s = {next_key_, true, p};
    ++next_key_;
}

void ts_probe::on_send_failed(int err) {
    // The key is taken when the datagram is built; only a refusal after that
    // (no buffer, a full device queue) has used one up.
    if (err == ENOBUFS || err == EAGAIN) ++next_key_;
}

void ts_probe::drain_error_queue(int fd) {
    for (;;) {
        alignas(cmsghdr) char control[256];
        msghdr msg{};
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        if (::recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return;
        const scm_timestamping* stamps = nullptr;
        const sock_extended_err* ee = nullptr;
        for (auto* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPING)
                stamps = reinterpret_cast<const scm_timestamping*>(CMSG_DATA(c));
            else if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                     (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR))
                ee = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(c));
        }
        if (!stamps || !ee || ee->ee_origin != SO_EE_ORIGIN_TIMESTAMPING || ee->ee_info != SCM_TSTAMP_SCHED) continue;
        auto& s = sent_[ee->ee_data & (HBP_SLOTS - 1)];
        if (!s.used || s.key != ee->ee_data) continue;
        s.used = false;
        link_->tx++;
        hbp_on_egress(&params_, link_.get(), &s.p, to_mono(stamps->ts[0]));
    }
}

void ts_probe::on_received(const hbp_packet& p, std::uint64_t rx_mono_ns) {
    hbp_count_arrival(&link_->in, p.boot_id, p.link_seq);
    hbp_on_ingress(&params_, link_.get(), &p, rx_mono_ns);
}

result<received> receive_stamped(int fd, std::span<std::byte> buf) {
    received r;
    alignas(cmsghdr) char control[256];
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_name = &r.from;
    msg.msg_namelen = sizeof r.from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n < 0) return errno_error();
    r.size = (msg.msg_flags & MSG_TRUNC) ? buf.size() + 1 : static_cast<std::size_t>(n);
    for (auto* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_TIMESTAMPING) continue;
        auto* stamps = reinterpret_cast<const scm_timestamping*>(CMSG_DATA(c));
        if (stamps->ts[0].tv_sec || stamps->ts[0].tv_nsec) r.rx_mono_ns = to_mono(stamps->ts[0]);
    }
    return r;
}

}  // namespace tandem::ebpf
