// agent: control socket sessions, including followers of the event stream.
#include "tandem/agent/control.hpp"

#include "tandem/base/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <fmt/format.h>

#include <deque>
#include <filesystem>

namespace tandem::agent {

namespace asio = boost::asio;
using asio::local::stream_protocol;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr std::size_t max_request = 64 * 1024;
constexpr std::size_t max_backlog_queue = 10'000;  // a follower that stops reading is cut off

stream_protocol::acceptor bind_socket(asio::io_context& io, const std::string& path) {
    {
        stream_protocol::socket probe(io);
        boost::system::error_code ec;
        probe.connect(stream_protocol::endpoint(path), ec);
        if (!ec) throw std::runtime_error("another tandemd is already running on " + path);
    }
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    ::unlink(path.c_str());
    // Create the socket with no permissions for group and others from the start:
    // only root may change cluster roles.
    mode_t old = ::umask(077);
    stream_protocol::acceptor a(io);
    boost::system::error_code ec;
    a.open(stream_protocol(), ec);
    if (!ec) a.bind(stream_protocol::endpoint(path), ec);
    ::umask(old);
    if (ec) throw std::runtime_error(fmt::format("cannot bind the control socket {}: {}", path, ec.message()));
    a.listen();
    return a;
}

}  // namespace

control_server::control_server(asio::io_context& io, std::string path, control_handler handler, event_bus& bus)
    : acceptor_(bind_socket(io, path)), path_(std::move(path)), handler_(std::move(handler)), bus_(bus) {}

control_server::~control_server() {
    boost::system::error_code ec;
    acceptor_.close(ec);
    ::unlink(path_.c_str());
}

asio::awaitable<void> control_server::serve() {
    for (;;) {
        auto [ec, s] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
        if (ec == asio::error::operation_aborted) co_return;
        if (ec) continue;
        asio::co_spawn(acceptor_.get_executor(), session(std::move(s)), asio::detached);
    }
}

asio::awaitable<void> control_server::session(stream_protocol::socket s) {
    asio::streambuf in(max_request);
    for (;;) {
        auto [ec, n] = co_await asio::async_read_until(s, in, '\n', asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;  // closed, or a request longer than max_request
        std::string line(asio::buffers_begin(in.data()), asio::buffers_begin(in.data()) + static_cast<long>(n));
        in.consume(n);
        nlohmann::json req, reply;
        try {
            req = nlohmann::json::parse(line);
        } catch (const std::exception&) {
            reply = {{"ok", false}, {"error", "the request is not valid JSON"}};
        }
        if (reply.is_null() && req.value("cmd", "") == "events") {
            // Backlog first, then every new event until the client goes away.
            std::deque<std::string> out;
            std::size_t backlog = req.value("backlog", std::size_t{100});
            const auto& recent = bus_.recent();
            for (auto it = recent.size() > backlog ? recent.end() - static_cast<long>(backlog) : recent.begin();
                 it != recent.end(); ++it)
                out.push_back(it->dump() + "\n");
            bool follow = req.value("follow", false);
            if (!follow) {
                for (auto& l : out) co_await asio::async_write(s, asio::buffer(l), asio::as_tuple(asio::use_awaitable));
                co_return;
            }
            asio::steady_timer wake(s.get_executor(), asio::steady_timer::time_point::max());
            bool overflow = false;
            auto sub = bus_.subscribe([&](const nlohmann::json& j) {
                if (out.size() >= max_backlog_queue) overflow = true;
                else out.push_back(j.dump() + "\n");
                wake.cancel();
            });
            auto writer = [&]() -> asio::awaitable<void> {
                for (;;) {
                    while (!out.empty()) {
                        auto [wec, wn] = co_await asio::async_write(s, asio::buffer(out.front()),
                                                                    asio::as_tuple(asio::use_awaitable));
                        if (wec) co_return;
                        out.pop_front();
                    }
                    if (overflow) co_return;
                    co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
                }
            };
            auto reader = [&]() -> asio::awaitable<void> {
                char c;
                co_await s.async_read_some(asio::buffer(&c, 1), asio::as_tuple(asio::use_awaitable));
            };
            co_await (writer() || reader());
            bus_.unsubscribe(sub);
            co_return;
        }
        if (reply.is_null()) {
            try {
                reply = handler_(req);
            } catch (const std::exception& e) {
                reply = {{"ok", false}, {"error", e.what()}};
            }
        }
        auto text = reply.dump() + "\n";
        auto [wec, wn] = co_await asio::async_write(s, asio::buffer(text), asio::as_tuple(asio::use_awaitable));
        if (wec) co_return;
    }
}

std::string format_cstate(const nlohmann::json& st) {
    const auto& l = st.at("local");
    const auto& r = st.at("remote");
    auto rtt = [](const nlohmann::json& side) {
        if (!side.contains("rtt_ms") || side["rtt_ms"].is_null()) return std::string("-");
        return fmt::format("{:.3f}", side["rtt_ms"].get<double>());
    };
    auto upper = [](std::string s) {
        for (auto& c : s) c = static_cast<char>(std::toupper(c));
        return s;
    };
    return fmt::format(
        "Local: R:{} S:{}/{} CS:{} G:{} HBT:{} RTT:{} SY:{} N:{} Remote: R:{} S:{}/{} HBT:{} SY:{} G:{} N:{}",
        upper(l.at("role")), l.at("state").get<std::string>(), l.at("mode").get<std::string>(),
        st.at("collision").get<bool>() ? "COLLISION" : "NONE", l.at("generation").get<std::uint64_t>(),
        l.at("heartbeat_up").get<bool>() ? "UP" : "DOWN", rtt(l), l.at("sync").get<std::string>(),
        l.at("name").get<std::string>(), upper(r.at("role")), r.at("state").get<std::string>(),
        r.at("mode").get<std::string>(), r.at("heartbeat_up").get<bool>() ? "UP" : "DOWN",
        r.at("sync").get<std::string>(), r.at("generation").get<std::uint64_t>(), r.at("name").get<std::string>());
}

}  // namespace tandem::agent
