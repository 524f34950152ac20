// tests: starting, stopping and querying tandemd nodes in the test cluster.
#include "support/cluster.hpp"
#include "support/util.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace tandem::test {

std::string bin_dir() {
    if (const char* d = std::getenv("TANDEM_BIN_DIR")) return d;
    return "build/release/bin";
}

std::uint64_t mono_now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

daemon_process::daemon_process(const netns& ns, const std::string& config, const std::string& log,
                               const std::vector<std::string>& env, const std::vector<std::string>& wrapper) {
    std::string tandemd = bin_dir() + "/tandemd";
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
        std::FILE* f = std::fopen(log.c_str(), "a");
        if (f) {
            ::dup2(fileno(f), STDOUT_FILENO);
            ::dup2(fileno(f), STDERR_FILENO);
        }
        // `ip netns exec` and `env` exec in place: our pid is tandemd's pid.
        std::vector<const char*> argv = {"ip", "netns", "exec", ns.name().c_str(), "env"};
        for (auto& e : env) argv.push_back(e.c_str());
        for (auto& w : wrapper) argv.push_back(w.c_str());
        for (const char* a : {tandemd.c_str(), "-c", config.c_str(), "--debug"}) argv.push_back(a);
        argv.push_back(nullptr);
        ::execvp("ip", const_cast<char* const*>(argv.data()));
        ::_exit(127);
    }
}

daemon_process::~daemon_process() { kill9(); }

void daemon_process::kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

int daemon_process::terminate() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::optional<int> daemon_process::wait_exit(std::chrono::milliseconds limit) {
    if (pid_ <= 0) return std::nullopt;
    // A pidfd turns readable when the process exits: no polling of waitpid.
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (fd < 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(limit.count()));
    ::close(fd);
    if (n != 1) return std::nullopt;
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

test_cluster::test_cluster() : test_cluster(options{}) {}

test_cluster::test_cluster(options o) : opt(std::move(o)) {
    hub_ = std::make_unique<netns>("hub");
    a_ = std::make_unique<netns>("alpha");
    b_ = std::make_unique<netns>("beta");
    client_ = std::make_unique<netns>("client");
    br_ = std::make_unique<bridge>(*hub_, "br0");
    // IPv6 addresses without DAD: usable at once, so no test waits on it.
    auto cidr = [&](const std::string& who) { return opt.ipv6 ? addr(who) + "/64 nodad" : addr(who) + "/24"; };
    br_->attach(*a_, "eth0", cidr("a"));
    br_->attach(*b_, "eth0", cidr("b"));
    br_->attach(*client_, "eth0", cidr("client"));
    auto key = dir_.write("cluster.key", std::string(64, 'k'), 0600);
    extra_["a"] = opt.extra_a;
    extra_["b"] = opt.extra_b;
    write_config("a");
    write_config("b");
}

test_cluster::~test_cluster() {
    procs_.clear();  // kill the daemons before their namespaces go
}

pid_t test_cluster::pid(const std::string& node) const {
    auto it = procs_.find(node);
    return it == procs_.end() || !it->second ? -1 : it->second->pid();
}

std::string test_cluster::addr(const std::string& who) const {
    std::string host = who == "a" ? "1" : who == "b" ? "2" : who == "client" ? "10" : "100";
    return opt.ipv6 ? "fd00:77::" + host : "10.77.0." + host;
}

std::string test_cluster::mac(const std::string& who) const {
    auto out = ns(who).exec_ok("cat /sys/class/net/eth0/address");
    return out.substr(0, out.find('\n'));
}

bool test_cluster::has_vip(const std::string& node) const {
    auto out = ns(node).exec_ok("ip -o addr show dev eth0");
    auto want = addr("vip") + (opt.ipv6 ? "/64" : "/24");
    auto line_start = out.find(" " + want + " ");
    if (line_start == std::string::npos) return false;
    if (opt.ipv6) return true;
    auto line_end = out.find('\n', line_start);
    return out.substr(line_start, line_end - line_start).find("eth0:0") != std::string::npos;
}

std::string test_cluster::config_path(const std::string& node) const { return (dir_.path() / (node + ".toml")).string(); }
std::string test_cluster::socket(const std::string& node) const { return (dir_.path() / (node + ".sock")).string(); }

std::string test_cluster::log(const std::string& node) const {
    std::ifstream in(dir_.path() / (node + ".log"));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void test_cluster::write_config(const std::string& node) {
    bool a = node == "a";
    std::string text = fmt::format(R"([cluster]
name = "store-ha"
vip = "{}"
interface = "eth0"
[node]
name = "{}"
role = "{}"
address = "{}"
state_dir = "{}"
[peer]
name = "{}"
address = "{}"
[heartbeat]
interval = "{}"
timeout = "{}"
port = 694
links = ["eth0"]
{}
[connectivity]
targets = [{}]
timeout = "200ms"
[auth]
key_file = "{}"
[control]
socket = "{}"
)",
                                   addr("vip") + (opt.ipv6 ? "/64" : "/24"), a ? "alpha" : "beta",
                                   a ? "primary" : "secondary", addr(node), dir_.path().string(), a ? "beta" : "alpha",
                                   addr(a ? "b" : "a"), opt.interval, opt.timeout, a ? opt.heartbeat_a : opt.heartbeat_b,
                                   opt.connectivity ? "\"" + addr("client") + "\"" : "",
                                   (dir_.path() / "cluster.key").string(), socket(node));
    std::ofstream(config_path(node)) << text << extra_[node];
}

void test_cluster::rewrite_config(const std::string& node, const std::string& extra, const std::string& from,
                                  const std::string& to) {
    if (!from.empty()) {
        if (from == "heartbeat.interval") opt.interval = to;
        else if (from == "heartbeat.timeout") opt.timeout = to;
    }
    extra_[node] = extra;
    write_config(node);
}

void test_cluster::start(const std::string& node, const std::vector<std::string>& env,
                         const std::vector<std::string>& wrapper) {
    procs_[node] = std::make_unique<daemon_process>(ns(node), config_path(node),
                                                    (dir_.path() / (node + ".log")).string(), env, wrapper);
}

void test_cluster::up() {
    start("a");
    start("b");
    REQUIRE(wait("a", "state=ACTIVE", soon));
    REQUIRE(wait("b", "state=STANDBY", soon));
}

void test_cluster::kill9(const std::string& node) { procs_.at(node)->kill9(); }
int test_cluster::stop(const std::string& node) { return procs_.at(node)->terminate(); }
std::optional<int> test_cluster::exit_status(const std::string& node, std::chrono::milliseconds limit) {
    return procs_.at(node)->wait_exit(limit);
}

cmd_result test_cluster::ctl(const std::string& node, const std::string& args) const {
    return run(bin_dir() + "/tandemctl -s " + socket(node) + " " + args);
}

std::uint64_t test_cluster::last_seq(const std::string& node) const {
    auto out = ctl(node, "events --backlog 1").out;
    auto j = nlohmann::json::parse(out, nullptr, false);
    return j.is_discarded() ? 0 : j.value("seq", std::uint64_t{0});
}

bool test_cluster::wait(const std::string& node, const std::string& cond, std::chrono::milliseconds timeout,
                        std::optional<std::uint64_t> since) const {
    auto r = ctl(node, fmt::format("wait {} --timeout {}ms{}", cond, timeout.count() * deadline_scale,
                                   since ? fmt::format(" --since {}", *since) : ""));
    if (r.status != 0) {
        UNSCOPED_INFO("waiting on " << node << " for " << cond << ": " << r.out);
        UNSCOPED_INFO("log of " << node << ":\n" << log(node));
        UNSCOPED_INFO("log of the other node:\n" << log(node == "a" ? "b" : "a"));
    }
    return r.status == 0;
}

nlohmann::json test_cluster::status(const std::string& node) const {
    auto r = ctl(node, "status --json");
    if (r.status != 0) throw std::runtime_error("tandemctl status failed: " + r.out);
    return nlohmann::json::parse(r.out);
}

std::string test_cluster::state(const std::string& node) const {
    return status(node)["local"]["state"].get<std::string>();
}

std::optional<double> test_cluster::event_after_ms(const std::string& node, const std::string& id,
                                                   const std::string& to, std::uint64_t since) const {
    auto r = ctl(node, "events --backlog 1000");
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || j.value("id", "") != id || (!to.empty() && j.value("to", "") != to)) continue;
        auto mono = j.value("mono_ns", std::uint64_t{0});
        if (mono >= since) return static_cast<double>(mono - since) / 1e6;
    }
    return std::nullopt;
}

}  // namespace tandem::test
