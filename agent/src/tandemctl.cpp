// agent: tandemctl — the operator's command line over tandemd's control socket.
#include "tandem/agent/control.hpp"

#include "tandem/base/duration.hpp"
#include "tandem/base/unique_fd.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>

using nlohmann::json;
using namespace tandem;

namespace {

// Exit codes, documented in the operator guide.
enum exit_code : int { ok = 0, refused = 1, usage_error = 2, timed_out = 3, not_running = 4 };

constexpr const char* usage =
    "usage: tandemctl [-s SOCKET | -c CONFIG] COMMAND\n"
    "commands:\n"
    "  cstate                    one line: local and remote role, state/mode, heartbeat, RTT\n"
    "  status [--json]           the whole status\n"
    "  latency [--json]          heartbeat latency per link: percentiles, loss, stalls, histograms, and their source\n"
    "  events [--follow] [--backlog N]   the event stream, one JSON object per line\n"
    "  takeover                  on the standby: become active (the peer must be synchronized)\n"
    "  takeover --force          the active is lost for good and this node is OUTDATED: promote this copy,\n"
    "                            giving up what the lost node wrote after the replication link went down\n"
    "  giveback                  on the active: hand over to the standby\n"
    "  offline | online          maintenance mode; offline on the active node is a manual failover\n"
    "  reload                    re-read the configuration; applies what needs no re-pairing, refuses the rest\n"
    "  sync [--timeout 24h]      follow the /store resync with a progress bar until both nodes are in sync\n"
    "  sync-rate MB/S            change the disk synchronization rate now (1..4096)\n"
    "  verify [--repair] [--timeout 24h]\n"
    "                            compare /store with the peer online; exit 1 and list the ranges that differ;\n"
    "                            --repair (on the active node) then resends them from this node\n"
    "  discard-local             after a split brain: discard THIS node's /store data; a full resync follows\n"
    "  wait state=STATE|event=ID [--timeout 30s] [--since SEQ]\n"
    "                            block until this node reaches a state or emits an event;\n"
    "                            --since also accepts events already emitted after sequence number SEQ\n"
    "exit codes: 0 done, 1 refused or failed, 2 usage, 3 wait timed out, 4 tandemd not running\n";

class connection {
public:
    explicit connection(const std::string& path) {
        fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
        if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
            int e = errno;
            throw std::runtime_error(
                fmt::format("tandemd is not running (cannot connect to {}: {}){}", path, std::strerror(e),
                            e == EACCES ? "; the control socket is for root only" : ""));
        }
    }
    void send(const json& j) {
        auto s = j.dump() + "\n";
        for (std::size_t off = 0; off < s.size();) {
            auto n = ::write(fd_.get(), s.data() + off, s.size() - off);
            if (n <= 0) throw std::runtime_error("the connection to tandemd broke");
            off += static_cast<std::size_t>(n);
        }
    }
    // One line, or nullopt at the deadline; throws when tandemd closes the connection.
    std::optional<std::string> line(std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) {
        for (;;) {
            if (auto nl = buf_.find('\n'); nl != std::string::npos) {
                auto l = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return l;
            }
            int wait = -1;
            if (deadline) {
                auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
                if (left.count() <= 0) return std::nullopt;
                wait = static_cast<int>(left.count());
            }
            pollfd p{fd_.get(), POLLIN, 0};
            int r = ::poll(&p, 1, wait);
            if (r == 0) return std::nullopt;
            if (r < 0 && errno == EINTR) continue;
            char chunk[4096];
            auto n = ::read(fd_.get(), chunk, sizeof chunk);
            if (n <= 0) throw std::runtime_error("tandemd closed the connection");
            buf_.append(chunk, static_cast<std::size_t>(n));
        }
    }
    json request(const json& j) {
        send(j);
        return json::parse(*line());
    }

private:
    unique_fd fd_;
    std::string buf_;
};

std::uint64_t number(const std::string& text, const char* flag) {
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || p != text.data() + text.size())
        throw std::invalid_argument(fmt::format("{} \"{}\" is not a whole number", flag, text));
    return v;
}

std::string socket_from_config(const std::string& path) {
    try {
        auto t = toml::parse_file(path);
        return t["control"]["socket"].value_or(std::string("/run/tandem/tandemd.sock"));
    } catch (const toml::parse_error& e) {
        throw std::runtime_error(fmt::format("{}: {}", path, e.description()));
    }
}

int print_reply(const json& r) {
    if (!r.value("ok", false)) {
        std::cerr << "tandemctl: " << r.value("error", "failed") << "\n";
        return refused;
    }
    if (r.contains("message")) std::cout << r["message"].get<std::string>() << "\n";
    if (r.contains("applied")) {
        if (r["applied"].empty()) std::cout << "no changes\n";
        for (auto& a : r["applied"]) std::cout << "applied " << a.get<std::string>() << "\n";
    }
    return ok;
}

void print_status(const json& st) {
    const auto& l = st["local"];
    const auto& r = st["remote"];
    std::cout << fmt::format("cluster   {}  VIP {} on {}\n", st["cluster"]["name"].get<std::string>(),
                             st["cluster"]["vip"].get<std::string>(), st["cluster"]["alias"].get<std::string>());
    std::cout << fmt::format("local     {} ({})  {}/{}  sync {}  generation {}{}\n", l["name"].get<std::string>(),
                             l["role"].get<std::string>(), l["state"].get<std::string>(), l["mode"].get<std::string>(),
                             l["sync"].get<std::string>(), l["generation"].get<std::uint64_t>(),
                             l["healthy"].get<bool>() ? "" : "  UNHEALTHY: " + l["health_detail"].get<std::string>());
    std::cout << fmt::format("remote    {} ({})  {}/{}  sync {}\n", r["name"].get<std::string>(),
                             r["role"].get<std::string>(), r["state"].get<std::string>(), r["mode"].get<std::string>(),
                             r["sync"].get<std::string>());
    if (!l["blocked"].get<std::string>().empty())
        std::cout << "failover  blocked: " << l["blocked"].get<std::string>() << "\n";
    if (st["collision"].get<bool>()) std::cout << "collision both nodes are ACTIVE; resolving\n";
    // Shared storage: who the lease device says holds /store, and whether the peer still writes its slot.
    if (const auto& s = st.value("store", json::object()); s.contains("lease")) {
        const auto& l = s["lease"];
        auto held = [](bool h) { return h ? "holding" : "not holding"; };
        std::cout << fmt::format(
            "lease     {}  {}  this node {}, renewed {:.1f} s ago; peer {} {}, {}\n", l["device"].get<std::string>(),
            l["ok"].get<bool>() ? "ok" : "FAILED: " + l["error"].get<std::string>(), held(l["holding"].get<bool>()),
            l["renewed_ms_ago"].get<std::int64_t>() / 1000.0,
            l["peer_node"].get<std::string>().empty() ? "(blank slot)" : l["peer_node"].get<std::string>(),
            held(l["peer_holding"].get<bool>()), l["peer_alive"].get<bool>() ? "slot changing" : "slot expired");
    }
    if (const auto& w = st.value("watchdog", json::object()); w.value("armed", false))
        std::cout << fmt::format("watchdog  {} ({})  {} s  {}\n", w["device"].get<std::string>(),
                                 w["identity"].get<std::string>(), w["timeout_s"].get<std::int64_t>(),
                                 w["fed"].get<bool>()
                                     ? fmt::format("fed {:.1f} s ago", w["fed_ms_ago"].get<std::int64_t>() / 1000.0)
                                     : fmt::format("NOT FED for {:.1f} s: the host resets when the timeout runs out",
                                                   w["fed_ms_ago"].get<std::int64_t>() / 1000.0));
    for (auto& k : st["heartbeat"]["links"]) {
        std::cout << fmt::format("link      {:<8} {}  rtt {}  tx {} rx {}\n", k["name"].get<std::string>(),
                                 k["up"].get<bool>() ? "UP  " : "DOWN",
                                 k["rtt_ms"].is_null() ? "-" : fmt::format("{:.3f} ms", k["rtt_ms"].get<double>()),
                                 k["tx"].get<std::uint64_t>(), k["rx"].get<std::uint64_t>());
    }
}

std::string micros(const nlohmann::json& v) {
    if (!v.is_number()) return "-";
    double us = v.get<double>();
    return us < 1000 ? fmt::format("{:.1f} us", us) : fmt::format("{:.3f} ms", us / 1000);
}

// `tandemctl latency`: what the probe of each heartbeat link measured.
void print_latency(const nlohmann::json& links) {
    static const std::pair<const char*, const char*> rows[] = {
        {"rtt", "round trip"},          {"network", "network part"},      {"turnaround_peer", "peer held it"},
        {"turnaround_local", "we held it"}, {"jitter_out", "jitter out"}, {"jitter_in", "jitter in"}};
    for (auto& l : links) {
        std::string src = l["source"].get<std::string>();
        if (src == "bpf") src += l.value("drops_counted", false) ? " (tcx hooks, drops by kernel reason)" : " (tcx hooks)";
        else if (l.contains("bpf_unavailable")) src += " (BPF unavailable: " + l["bpf_unavailable"].get<std::string>() + ")";
        std::cout << fmt::format("link {}  source {}  samples {}  tx {} rx {}\n", l["link"].get<std::string>(), src,
                                 l.value("samples", 0), l.value("tx", 0), l.value("rx", 0));
        std::cout << fmt::format("  {:<16}{:>12}{:>12}{:>12}{:>12}\n", "", "p50", "p90", "p99", "max");
        for (auto [key, label] : rows)
            std::cout << fmt::format("  {:<16}{:>12}{:>12}{:>12}{:>12}\n", label, micros(l[std::string(key) + "_p50_us"]),
                                     micros(l[std::string(key) + "_p90_us"]), micros(l[std::string(key) + "_p99_us"]),
                                     micros(l[std::string(key) + "_max_us"]));
        std::cout << fmt::format("  lost: {} from the peer (network), {} to the peer (its count); {} reordered\n",
                                 l.value("lost_in", 0), l.value("lost_out", 0), l.value("reordered_in", 0));
        std::cout << fmt::format("  host stalls: {} on the peer, {} here; network delays: {}\n",
                                 l.value("peer_stalls", 0), l.value("local_stalls", 0), l.value("network_delays", 0));
        if (l.contains("drops") && !l["drops"].empty()) {
            std::cout << "  the peer's heartbeats dropped in this kernel:";
            for (auto& [reason, n] : l["drops"].items()) std::cout << fmt::format(" {} {}", reason, n.get<std::uint64_t>());
            std::cout << "\n";
        }
        if (l.contains("timestamping"))
            std::cout << fmt::format("  cross-check, socket timestamps: network part p50 {}, p99 {}\n",
                                     micros(l["timestamping"]["network_p50_us"]), micros(l["timestamping"]["network_p99_us"]));
        if (!l.contains("histograms")) continue;
        auto& h = l["histograms"]["network"];
        std::uint64_t peak = 1;
        for (auto& b : h) peak = std::max(peak, b["count"].get<std::uint64_t>());
        if (!h.empty()) std::cout << "  network part, from:\n";
        for (auto& b : h) {
            auto n = b["count"].get<std::uint64_t>();
            std::cout << fmt::format("  {:>12} {:<40} {}\n", micros(b["from_us"]), std::string(1 + n * 39 / peak, '#'), n);
        }
    }
}

int wait_for(const std::string& sock, const std::string& cond, std::chrono::milliseconds timeout,
             std::optional<std::uint64_t> since) {
    auto eq = cond.find('=');
    if (eq == std::string::npos) throw std::invalid_argument("wait needs state=STATE or event=ID");
    std::string kind = cond.substr(0, eq), want = cond.substr(eq + 1);
    if (kind != "state" && kind != "event") throw std::invalid_argument("wait needs state=STATE or event=ID");
    for (auto& c : want)
        if (kind == "state") c = static_cast<char>(std::toupper(c));
    auto deadline = std::chrono::steady_clock::now() + timeout;
    // tandemd may still be starting (at boot, in scripts): retry the connection
    // until the deadline with a short back-off, as systemctl does.
    std::optional<connection> conn;
    while (!conn) {
        try {
            conn.emplace(sock);
        } catch (const std::runtime_error&) {
            if (std::chrono::steady_clock::now() >= deadline) throw;
            ::usleep(50'000);
        }
    }
    // Subscribe first, then look at the current state: no event can slip between.
    connection& events = *conn;
    events.send({{"cmd", "events"}, {"follow", true}, {"backlog", since ? 1000 : 0}});
    if (kind == "state") {
        connection c(sock);
        auto st = c.request({{"cmd", "status"}});
        if (st["status"]["local"]["state"] == want) {
            std::cout << "state " << want << "\n";
            return ok;
        }
    }
    while (auto l = events.line(deadline)) {
        auto j = json::parse(*l);
        if (since && j.value("seq", std::uint64_t{0}) <= *since) continue;
        if ((kind == "event" && j.value("id", "") == want) ||
            (kind == "state" && j.value("id", "") == "state.changed" && j.value("to", "") == want)) {
            std::cout << *l << "\n";
            return ok;
        }
    }
    std::cerr << fmt::format("tandemctl: timed out after {} waiting for {}\n", format_duration(timeout), cond);
    return timed_out;
}

std::string clock_text(double seconds) {
    auto s = static_cast<std::uint64_t>(seconds + 0.5);
    if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    return fmt::format("{}:{:02}", s / 60, s % 60);
}

// Follows the resync until both nodes are in sync: a bar on a terminal, a line
// per 10 % otherwise (logs, scripts).
int follow_sync(const std::string& sock, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    const bool tty = ::isatty(STDOUT_FILENO);
    int last_decile = -1;
    bool drew = false;
    for (;;) {
        json st;
        {
            // tandemd may be starting (or restarting): retry until the deadline, as wait does.
            std::optional<connection> c;
            try {
                c.emplace(sock);
            } catch (const std::runtime_error&) {
                if (std::chrono::steady_clock::now() >= deadline) throw;
                ::usleep(200'000);
                continue;
            }
            auto r = c->request({{"cmd", "status"}});
            if (!r.value("ok", false)) return print_reply(r);
            st = r["status"]["replication"];
        }
        if (!st.contains("link")) {
            std::cerr << "tandemctl: no replication engine: replication.backend is \"" << st.value("backend", "")
                      << "\"\n";
            return refused;
        }
        auto link = st["link"].get<std::string>();
        const auto& sy = st["sync"];
        if (link == "refused" || st["split_brain"].get<bool>()) {
            if (drew) std::cout << "\n";
            std::cerr << "tandemctl: replication stopped: " << st["last_error"].get<std::string>() << "\n";
            return refused;
        }
        if (link == "connected" && st["consistent"].get<bool>() && !sy["running"].get<bool>()) {
            if (drew) std::cout << "\n";
            auto gen = st["generation"].get<std::string>();  // "" with DRBD: its UUIDs stay inside DRBD
            std::cout << fmt::format("in sync with {}{}\n", st["peer"].get<std::string>(),
                                     gen.empty() ? "" : " (generation " + gen + ")");
            return ok;
        }
        if (sy["running"].get<bool>()) {
            auto done = sy["done_bytes"].get<double>(), total = std::max(1.0, sy["total_bytes"].get<double>());
            double frac = std::min(1.0, done / total);
            constexpr int width = 30;
            int fill = static_cast<int>(frac * width);
            auto line = fmt::format("[{}{}] {:5.1f}%  {:.0f}/{:.0f} MiB {}  {:.1f} MiB/s  ETA {}", std::string(fill, '#'),
                                    std::string(width - fill, '-'), frac * 100, done / 1048576, total / 1048576,
                                    sy["direction"].get<std::string>(), sy["rate_bps"].get<double>() / 1048576,
                                    clock_text(sy["eta_s"].get<double>()));
            if (tty) {
                std::cout << "\r" << line << std::flush;
                drew = true;
            } else if (int d = static_cast<int>(frac * 10); d != last_decile) {
                last_decile = d;
                std::cout << line << std::endl;
            }
        } else if (!tty && last_decile != -2) {
            last_decile = -2;
            std::cout << "waiting: replication " << link << "\n";
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            if (drew) std::cout << "\n";
            std::cerr << fmt::format("tandemctl: not in sync after {}\n", format_duration(timeout));
            return timed_out;
        }
        ::usleep(200'000);  // a person watching: five refreshes a second
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::string sock = std::getenv("TANDEM_SOCKET") ? std::getenv("TANDEM_SOCKET") : "/run/tandem/tandemd.sock";
    std::vector<std::string> args;
    try {
        for (int i = 1; i < argc; ++i) {
            std::string a = argv[i];
            if (a == "-s" && i + 1 < argc) sock = argv[++i];
            else if (a == "-c" && i + 1 < argc) sock = socket_from_config(argv[++i]);
            else if (a == "-h" || a == "--help") {
                std::cout << usage;
                return ok;
            } else args.push_back(a);
        }
        if (args.empty()) {
            std::cerr << usage;
            return usage_error;
        }
        const std::string cmd = args[0];
        auto flag = [&](const std::string& f) { return std::find(args.begin(), args.end(), f) != args.end(); };
        auto option = [&](const std::string& f) -> std::optional<std::string> {
            auto it = std::find(args.begin(), args.end(), f);
            if (it == args.end() || it + 1 == args.end()) return std::nullopt;
            return *(it + 1);
        };
        // --timeout DURATION, or `fallback`; the example names durations that suit the command.
        auto timeout_option = [&](std::chrono::milliseconds fallback, const char* example) {
            auto t = option("--timeout");
            if (!t) return fallback;
            auto d = parse_duration(*t);
            if (!d) throw std::invalid_argument(fmt::format("--timeout \"{}\" is not a duration such as {}", *t, example));
            return *d;
        };
        if (cmd == "cstate" || cmd == "status") {
            connection c(sock);
            auto r = c.request({{"cmd", "status"}});
            if (!r.value("ok", false)) return print_reply(r);
            if (cmd == "cstate") std::cout << agent::format_cstate(r["status"]) << "\n";
            else if (flag("--json")) std::cout << r["status"].dump(2) << "\n";
            else print_status(r["status"]);
            return ok;
        }
        if (cmd == "latency") {
            connection c(sock);
            auto r = c.request({{"cmd", "latency"}});
            if (!r.value("ok", false)) return print_reply(r);
            if (flag("--json")) std::cout << r["latency"].dump(2) << "\n";
            else print_latency(r["latency"]);
            return ok;
        }
        if (cmd == "events") {
            connection c(sock);
            std::size_t backlog = 100;
            if (auto b = option("--backlog")) backlog = number(*b, "--backlog");
            c.send({{"cmd", "events"}, {"follow", flag("--follow") || flag("-f")}, {"backlog", backlog}});
            try {
                while (auto l = c.line()) std::cout << *l << std::endl;  // flushed per line for pipes
            } catch (const std::runtime_error&) {
                // tandemd closed the stream: the end of the backlog, or it stopped.
            }
            return ok;
        }
        if (cmd == "takeover" && flag("--force")) {
            connection c(sock);
            return print_reply(c.request({{"cmd", cmd}, {"force", true}}));
        }
        if (cmd == "takeover" || cmd == "giveback" || cmd == "offline" || cmd == "online" || cmd == "reload") {
            connection c(sock);
            return print_reply(c.request({{"cmd", cmd}}));
        }
        if (cmd == "sync") {
            auto timeout = timeout_option(std::chrono::hours(24), "90s or 2h");
            return follow_sync(sock, timeout);
        }
        if (cmd == "sync-rate") {
            if (args.size() < 2) throw std::invalid_argument("sync-rate needs a rate in MB/s, from 1 to 4096");
            auto v = number(args[1], "sync-rate");
            connection c(sock);
            return print_reply(c.request({{"cmd", "sync-rate"}, {"mib", v}}));
        }
        if (cmd == "verify") {
            auto timeout = timeout_option(std::chrono::hours(24), "90s or 2h");
            // Subscribe first, then start: the end cannot slip between.
            connection events(sock);
            events.send({{"cmd", "events"}, {"follow", true}, {"backlog", 0}});
            connection c(sock);
            auto r = c.request({{"cmd", "verify"}, {"repair", flag("--repair")}});
            if (!r.value("ok", false)) return print_reply(r);
            auto deadline = std::chrono::steady_clock::now() + timeout;
            while (auto l = events.line(deadline)) {
                auto j = json::parse(*l);
                if (j.value("id", "") != "replication.verify_done") continue;
                auto text = j.value("message", "");
                std::cout << text << "\n";
                return text.find("no difference") != std::string::npos ? ok : refused;
            }
            std::cerr << fmt::format("tandemctl: verify not finished after {}\n", format_duration(timeout));
            return timed_out;
        }
        if (cmd == "discard-local") {
            connection c(sock);
            return print_reply(c.request({{"cmd", "discard-local"}}));
        }
        if (cmd == "wait") {
            if (args.size() < 2) throw std::invalid_argument("wait needs state=STATE or event=ID");
            auto timeout = timeout_option(std::chrono::seconds(30), "500ms or 30s");
            std::optional<std::uint64_t> since;
            if (auto s = option("--since")) since = number(*s, "--since");
            return wait_for(sock, args[1], timeout, since);
        }
        std::cerr << fmt::format("tandemctl: unknown command \"{}\"\n", cmd) << usage;
        return usage_error;
    } catch (const std::invalid_argument& e) {
        std::cerr << "tandemctl: " << e.what() << "\n";
        return usage_error;
    } catch (const std::exception& e) {
        std::cerr << "tandemctl: " << e.what() << "\n";
        return not_running;
    }
}
