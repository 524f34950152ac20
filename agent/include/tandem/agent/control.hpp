// agent: the root-only control socket — one JSON request per line, one JSON reply per line.
#pragma once

#include "tandem/agent/event_bus.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <nlohmann/json.hpp>

#include <functional>
#include <string>

namespace tandem::agent {

// Requests: {"cmd":"status"} {"cmd":"events","follow":true,"backlog":50}
// {"cmd":"takeover"|"giveback"|"offline"|"online"} {"cmd":"reload"}.
// Replies carry "ok" and either the data or "error".
using control_handler = std::function<nlohmann::json(const nlohmann::json& request)>;

class control_server {
public:
    // Binds `path` with mode 0600. Throws std::runtime_error if another tandemd
    // answers there; a stale socket file from a crash is replaced.
    control_server(boost::asio::io_context& io, std::string path, control_handler handler, event_bus& bus);
    ~control_server();
    boost::asio::awaitable<void> serve();

private:
    boost::asio::awaitable<void> session(boost::asio::local::stream_protocol::socket s);
    boost::asio::local::stream_protocol::acceptor acceptor_;
    std::string path_;
    control_handler handler_;
    event_bus& bus_;
};

// The seeds' `ha cstate` line from a status object:
// "Local: R:PRIMARY S:ACTIVE/ONLINE CS:NONE ... Remote: R:SECONDARY S:STANDBY/ONLINE ..."
[[nodiscard]] std::string format_cstate(const nlohmann::json& status);

}  // namespace tandem::agent
