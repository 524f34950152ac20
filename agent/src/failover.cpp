// agent: running the failover phases and timing each one.
#include "tandem/agent/failover.hpp"

#include "tandem/agent/process.hpp"

#include <fmt/format.h>

namespace tandem::agent {

namespace asio = boost::asio;

namespace {

std::string_view to_string(phase_outcome::kind k) {
    switch (k) {
        case phase_outcome::kind::done: return "done";
        case phase_outcome::kind::nothing_to_do: return "nothing_to_do";
        case phase_outcome::kind::failed: return "failed";
    }
    return "?";
}

class local_storage_phase final : public failover_phase {
public:
    std::string_view name() const override { return "storage"; }
    asio::awaitable<phase_outcome> acquire() override {
        co_return phase_outcome::nothing("replication backend \"none\": /store is local, nothing to promote");
    }
    asio::awaitable<phase_outcome> release(release_kind) override {
        co_return phase_outcome::nothing("replication backend \"none\": nothing to demote");
    }
};

class services_phase final : public failover_phase {
public:
    // Keeps a reference to the live configuration: a reload changes the hooks.
    explicit services_phase(const config& c) : c_(c) {}
    std::string_view name() const override { return "services"; }
    asio::awaitable<phase_outcome> acquire() override { return hook(c_.services.start, "start"); }
    asio::awaitable<phase_outcome> release(release_kind) override { return hook(c_.services.stop, "stop"); }

private:
    std::vector<std::pair<std::string, std::string>> env(const std::string& what) const {
        return {{"TANDEM_CLUSTER", c_.cluster.name},
                {"TANDEM_NODE", c_.node.name},
                {"TANDEM_VIP", netlink::to_string(c_.cluster.vip)},
                {"TANDEM_INTERFACE", c_.cluster.interface},
                {"TANDEM_EVENT", what}};
    }
    std::string describe(const std::string& cmd, const std::string& what, const process_result& r) const {
        return fmt::format("{} hook \"{}\" {}", what, cmd, r.describe());
    }
    std::string skipped(const std::string& what) const { return fmt::format("no [services] {} hook configured", what); }
    asio::awaitable<phase_outcome> hook(std::string cmd, std::string what) {
        if (cmd.empty()) co_return phase_outcome::nothing(skipped(what));
        auto r = co_await run_command(cmd, env(what), c_.services.timeout);
        if (!r.ok()) co_return phase_outcome::failed(describe(cmd, what, r));
        co_return phase_outcome::done(what + " hook exited 0");
    }
    const config& c_;
};

}  // namespace

std::unique_ptr<failover_phase> make_local_storage_phase() { return std::make_unique<local_storage_phase>(); }
std::unique_ptr<failover_phase> make_services_phase(const config& c) { return std::make_unique<services_phase>(c); }

std::vector<std::string> failover_sequence::names() const {
    std::vector<std::string> v;
    for (auto& p : phases_) v.emplace_back(p->name());
    return v;
}

asio::awaitable<sequence_report> failover_sequence::acquire(event_bus& bus) {
    return run(bus, true, release_kind::requested);
}
asio::awaitable<sequence_report> failover_sequence::release(event_bus& bus, release_kind how) {
    return run(bus, false, how);
}

asio::awaitable<sequence_report> failover_sequence::run(event_bus& bus, bool acquiring, release_kind how) {
    sequence_report rep;
    auto t0 = std::chrono::steady_clock::now();
    std::vector<failover_phase*> order;
    for (auto& p : phases_) order.push_back(p.get());
    if (!acquiring) std::reverse(order.begin(), order.end());
    int step = 0;
    for (auto* p : order) {
        ++step;
        auto start = std::chrono::steady_clock::now();
        phase_outcome out;
        try {
            // Not a ?: expression: GCC 12 miscompiles co_await inside one.
            if (acquiring) out = co_await p->acquire();
            else out = co_await p->release(how);
        } catch (const std::exception& e) {
            out = phase_outcome::failed(e.what());
        }
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
        bus.publish({"failover.phase",
                     fmt::format("{} {}/{} {}: {} ({:.3f} ms){}", acquiring ? "acquire" : "release", step,
                                 order.size(), p->name(), to_string(out.outcome), us.count() / 1000.0,
                                 out.detail.empty() ? "" : ": " + out.detail),
                     {{"direction", acquiring ? "acquire" : "release"},
                      {"phase", std::string(p->name())},
                      {"step", std::to_string(step)},
                      {"outcome", std::string(to_string(out.outcome))},
                      {"duration_us", std::to_string(us.count())},
                      {"detail", out.detail}}});
        if (out.outcome == phase_outcome::kind::failed) {
            rep.ok = false;
            if (!rep.detail.empty()) rep.detail += "; ";
            rep.detail += fmt::format("{}: {}", p->name(), out.detail);
            if (acquiring) break;
        }
    }
    rep.total = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    co_return rep;
}

}  // namespace tandem::agent
