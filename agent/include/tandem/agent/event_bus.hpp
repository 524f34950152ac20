// agent: the event stream — every transition and phase as one JSON object, kept and fanned out.
#pragma once

#include "tandem/agent/machine.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>

namespace tandem::agent {

// Keeps the most recent events for `tandemctl events` and hands each new one to
// the subscribers (followers on the control socket). Single-threaded: lives on
// the io_context.
class event_bus {
public:
    using subscriber = std::function<void(const nlohmann::json&)>;

    explicit event_bus(std::string node, std::size_t keep = 1000) : node_(std::move(node)), keep_(keep) {}

    // Stamps time, sequence and node, logs the event once with its message id, and fans it out.
    const nlohmann::json& publish(const event& e);
    [[nodiscard]] const std::deque<nlohmann::json>& recent() const { return recent_; }
    std::uint64_t subscribe(subscriber s);
    void unsubscribe(std::uint64_t id);

private:
    std::string node_;
    std::size_t keep_;
    std::uint64_t seq_ = 0;
    std::uint64_t next_sub_ = 1;
    std::deque<nlohmann::json> recent_;
    std::vector<std::pair<std::uint64_t, subscriber>> subs_;
};

// RFC 3339 UTC time with microseconds, for event stamps.
[[nodiscard]] std::string rfc3339_now();

}  // namespace tandem::agent
