// tests: namespace and veth builders on iproute2, with cleanup on every exit path.
#include "support/netns.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <stdexcept>

namespace tandem::test {

cmd_result run(const std::string& cmd) {
    cmd_result r;
    // A group, so a here-document's terminator line stays alone on its line.
    std::string full = "{ " + cmd + "\n} 2>&1";
    FILE* p = ::popen(full.c_str(), "r");
    if (!p) throw std::runtime_error("popen failed for: " + cmd);
    std::array<char, 4096> buf{};
    std::size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
}

std::string run_ok(const std::string& cmd) {
    auto r = run(cmd);
    if (r.status != 0)
        throw std::runtime_error("command failed (exit " + std::to_string(r.status) + "): " + cmd + "\n" + r.out);
    return r.out;
}

bool can_make_namespaces(std::string* why) {
    auto fail = [&](const char* w) {
        if (why) *why = w;
        return false;
    };
    if (::geteuid() != 0) return fail("needs root to create network namespaces");
    if (run("command -v ip").status != 0) return fail("iproute2 ('ip') is not installed");
    return true;
}

namespace {
std::atomic<int> g_counter{0};
}

netns::netns(const std::string& base) {
    // Short names: interface names inside are chosen by the test, but the
    // namespace name shows up in `ip netns` of an operator debugging a hang.
    name_ = "tnd" + std::to_string(::getpid()) + "-" + std::to_string(g_counter++) + "-" + base;
    run_ok("ip netns add " + name_);
    run_ok(prefix() + "ip link set lo up");
}

netns::~netns() {
    // Kill whatever the test left running inside, then delete the namespace;
    // deleting it also destroys the veth ends it holds.
    run("ip netns pids " + name_ + " | xargs -r kill -9");
    run("ip netns del " + name_);
}

void veth(const netns& a, const std::string& a_if, const std::string& a_addr, const netns& b,
          const std::string& b_if, const std::string& b_addr) {
    run_ok("ip link add " + a_if + " netns " + a.name() + " type veth peer name " + b_if + " netns " + b.name());
    if (!a_addr.empty()) a.exec_ok("ip addr add " + a_addr + " dev " + a_if);
    if (!b_addr.empty()) b.exec_ok("ip addr add " + b_addr + " dev " + b_if);
    a.exec_ok("ip link set " + a_if + " up");
    b.exec_ok("ip link set " + b_if + " up");
}

bridge::bridge(const netns& hub, std::string name) : hub_(hub), name_(std::move(name)) {
    hub_.exec_ok("ip link add " + name_ + " type bridge");
    hub_.exec_ok("ip link set " + name_ + " up");
}

void bridge::attach(const netns& host, const std::string& ifname, const std::string& addr) {
    std::string port = name_ + "p" + std::to_string(ports_++);
    veth(hub_, port, "", host, ifname, addr);
    hub_.exec_ok("ip link set " + port + " master " + name_);
}

scoped_netns_enter::scoped_netns_enter(const netns& ns) {
    saved_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (saved_ < 0) throw std::runtime_error("cannot open own network namespace");
    int target = ::open(("/run/netns/" + ns.name()).c_str(), O_RDONLY | O_CLOEXEC);
    if (target < 0 || ::setns(target, CLONE_NEWNET) != 0) {
        if (target >= 0) ::close(target);
        ::close(saved_);
        throw std::runtime_error("cannot enter network namespace " + ns.name());
    }
    ::close(target);
}

scoped_netns_enter::~scoped_netns_enter() {
    ::setns(saved_, CLONE_NEWNET);
    ::close(saved_);
}

}  // namespace tandem::test
