// agent: event stamping, logging and fan-out.
#include "tandem/agent/event_bus.hpp"

#include "tandem/base/clock.hpp"
#include "tandem/base/log.hpp"

#include <ctime>

namespace tandem::agent {

std::string rfc3339_now() {
    auto ns = realtime_ns();
    std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000ULL);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return fmt::format("{}.{:06}Z", buf, (ns % 1'000'000'000ULL) / 1000);
}

const nlohmann::json& event_bus::publish(const event& e) {
    nlohmann::json j;
    j["seq"] = ++seq_;
    j["time"] = rfc3339_now();
    j["mono_ns"] = monotonic_ns();
    j["node"] = node_;
    j["id"] = e.id;
    j["message"] = e.message;
    for (auto& [k, v] : e.fields) j[k] = v;

    auto lvl = e.id.ends_with(".refused") || e.id.ends_with(".blocked") || e.id.starts_with("collision") ||
                       e.id.find("failed") != std::string::npos || e.id.ends_with(".lost") ||
                       e.id.ends_with(".expired") || e.id.ends_with(".starving") || e.id == "vip.removed" || e.id == "vip.foreign"
                   ? log::level::warning
                   : log::level::notice;
    log::write(lvl, e.id, e.message);

    recent_.push_back(std::move(j));
    if (recent_.size() > keep_) recent_.pop_front();
    // A subscriber may unsubscribe (its connection died) while we iterate.
    auto subs = subs_;
    for (auto& [id, fn] : subs) fn(recent_.back());
    return recent_.back();
}

std::uint64_t event_bus::subscribe(subscriber s) {
    auto id = next_sub_++;
    subs_.emplace_back(id, std::move(s));
    return id;
}

void event_bus::unsubscribe(std::uint64_t id) {
    std::erase_if(subs_, [&](auto& p) { return p.first == id; });
}

}  // namespace tandem::agent
