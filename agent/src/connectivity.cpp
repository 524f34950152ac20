// agent: ICMP echo over raw sockets inside the io_context.
#include "tandem/agent/connectivity.hpp"

#include "tandem/agent/icmp.hpp"

#include "tandem/base/bytes.hpp"
#include "tandem/base/clock.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/icmp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include <netinet/in.h>

#include <array>
#include <cstring>
#include <memory>
#include <optional>
#include <random>

namespace tandem::agent {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {

asio::ip::address to_asio(const ip_address& a) {
    if (a.family == AF_INET) {
        asio::ip::address_v4::bytes_type b;
        std::memcpy(b.data(), a.bytes.data(), 4);
        return asio::ip::address_v4(b);
    }
    asio::ip::address_v6::bytes_type b;
    std::memcpy(b.data(), a.bytes.data(), 16);
    return asio::ip::address_v6(b);
}

// Binds to the node's own address even before it is configured (FREEBIND):
// at boot the address may appear after tandemd starts.
template <class Socket>
void bind_freely(Socket& s, const ip_address& a) {
    int one = 1;
    if (a.family == AF_INET) ::setsockopt(s.native_handle(), IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
    else ::setsockopt(s.native_handle(), IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
    boost::system::error_code ec;
    s.bind(typename Socket::endpoint_type(to_asio(a), 0), ec);
}

}  // namespace

asio::awaitable<connectivity_result> test_connectivity(std::vector<ip_address> targets,
                                                       std::chrono::milliseconds timeout, connectivity_rule rule,
                                                       ip_address source) {
    connectivity_result res;
    auto ex = co_await asio::this_coro::executor;
    std::uint16_t id = static_cast<std::uint16_t>(std::random_device{}());
    std::vector<std::optional<double>> answered(targets.size());
    std::vector<std::uint64_t> sent_at(targets.size(), 0);

    std::optional<asio::ip::icmp::socket> s4, s6;
    std::string open_error;
    for (auto& t : targets) {
        auto& s = t.family == AF_INET ? s4 : s6;
        if (s) continue;
        boost::system::error_code ec;
        s.emplace(ex);
        s->open(t.family == AF_INET ? asio::ip::icmp::v4() : asio::ip::icmp::v6(), ec);
        if (ec) {
            s.reset();
            open_error = "cannot open a raw ICMP socket (needs CAP_NET_RAW): " + ec.message();
        } else if (source.family == t.family) {
            bind_freely(*s, source);
        }
    }
    auto send_all = [&](std::uint16_t round) {
        for (std::size_t i = 0; i < targets.size(); ++i) {
            if (answered[i]) continue;
            auto& s = targets[i].family == AF_INET ? s4 : s6;
            if (!s) continue;
            std::array<std::byte, 16> pkt{};
            auto n = build_echo_request(pkt, targets[i].family, id, static_cast<std::uint16_t>(i * 2 + round));
            boost::system::error_code ec;
            if (!sent_at[i]) sent_at[i] = monotonic_ns();
            s->send_to(asio::buffer(pkt.data(), n), asio::ip::icmp::endpoint(to_asio(targets[i]), 0), 0, ec);
        }
    };
    auto all_answered = [&] { return std::all_of(answered.begin(), answered.end(), [](auto& a) { return a.has_value(); }); };

    send_all(0);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    auto resend_at = std::chrono::steady_clock::now() + timeout / 2;
    bool resent = false;
    std::array<std::byte, 1500> buf{};
    auto done = [&] {
        if (rule == connectivity_rule::any)
            return std::any_of(answered.begin(), answered.end(), [](auto& a) { return a.has_value(); });
        return all_answered();
    };
    while (!done() && std::chrono::steady_clock::now() < deadline) {
        asio::steady_timer t(ex, resent ? deadline : resend_at);
        // Wait on whichever sockets exist; one family at a time is enough since
        // each receive returns on the first packet.
        asio::ip::icmp::endpoint from;
        auto recv = [&](asio::ip::icmp::socket& s) -> asio::awaitable<std::size_t> {
            auto [ec, n] = co_await s.async_receive_from(asio::buffer(buf), from, asio::as_tuple(asio::use_awaitable));
            co_return ec ? 0 : n;
        };
        std::size_t n = 0;
        int family = AF_INET;
        if (s4 && s6) {
            auto r = co_await (recv(*s4) || recv(*s6) || t.async_wait(asio::as_tuple(asio::use_awaitable)));
            if (r.index() == 0) n = std::get<0>(r);
            else if (r.index() == 1) n = std::get<1>(r), family = AF_INET6;
        } else if (s4 || s6) {
            family = s4 ? AF_INET : AF_INET6;
            auto r = co_await (recv(s4 ? *s4 : *s6) || t.async_wait(asio::as_tuple(asio::use_awaitable)));
            if (r.index() == 0) n = std::get<0>(r);
        } else {
            break;
        }
        if (n) {
            int seq = parse_echo_reply(std::span(buf).first(n), family, id);
            // Id and sequence say which target we asked; the source must be that
            // target, or a stray reply routed elsewhere could vouch for it.
            if (seq >= 0 && static_cast<std::size_t>(seq / 2) < targets.size() && !answered[seq / 2] &&
                from.address() == to_asio(targets[seq / 2]))
                answered[seq / 2] = (monotonic_ns() - sent_at[seq / 2]) / 1e6;
        }
        if (!resent && std::chrono::steady_clock::now() >= resend_at) {
            resent = true;
            send_all(1);
        }
    }
    std::size_t ok = 0;
    std::string detail;
    const bool any_answered = std::any_of(answered.begin(), answered.end(), [](auto& a) { return a.has_value(); });
    for (std::size_t i = 0; i < targets.size(); ++i) {
        if (!detail.empty()) detail += "; ";
        if (answered[i]) {
            ++ok;
            detail += fmt::format("{} answered in {:.2f} ms", netlink::address_string(targets[i]), *answered[i]);
        } else if (rule == connectivity_rule::any && any_answered) {
            detail += fmt::format("{} not needed (another target answered)", netlink::address_string(targets[i]));
        } else {
            detail += fmt::format("{} did not answer within {} ms", netlink::address_string(targets[i]), timeout.count());
        }
    }
    if (!open_error.empty()) detail += "; " + open_error;
    res.ok = rule == connectivity_rule::any ? ok > 0 : ok == targets.size();
    res.detail = detail;
    co_return res;
}

}  // namespace tandem::agent
