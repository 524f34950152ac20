// tests: hosts built from network namespaces and veth pairs, removed when the test ends.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace tandem::test {

struct cmd_result {
    int status = -1;  // exit status, or 128+signal
    std::string out;  // stdout and stderr together
};

// Runs `sh -c cmd`; never throws for a non-zero status.
cmd_result run(const std::string& cmd);
// Runs `sh -c cmd` and throws std::runtime_error naming the command and its output on failure.
std::string run_ok(const std::string& cmd);
// True when the machine lets us create network namespaces (root, iproute2).
bool can_make_namespaces(std::string* why = nullptr);

// A network namespace owned by the test: created with a unique name
// ("tnd<pid>-<base>") and deleted, with every process still inside killed, on destruction.
class netns {
public:
    explicit netns(const std::string& base);
    ~netns();
    netns(const netns&) = delete;
    netns& operator=(const netns&) = delete;

    [[nodiscard]] const std::string& name() const { return name_; }
    // "ip netns exec <name> " — prefix for a shell command run inside.
    [[nodiscard]] std::string prefix() const { return "ip netns exec " + name_ + " "; }
    cmd_result exec(const std::string& cmd) const { return run(prefix() + cmd); }
    std::string exec_ok(const std::string& cmd) const { return run_ok(prefix() + cmd); }
    // Loads an nftables ruleset inside (one nft process, one transaction).
    void nft(const std::string& ruleset) const { exec_ok("nft -f - <<'EOF'\n" + ruleset + "\nEOF"); }

private:
    std::string name_;
};

// Joins two namespaces with a veth pair, brings both ends and lo up, and
// optionally assigns "addr/prefix" to each end.
void veth(const netns& a, const std::string& a_if, const std::string& a_addr, const netns& b,
          const std::string& b_if, const std::string& b_addr);

// A bridge in `hub` with one veth port per attached namespace: a shared L2 segment.
class bridge {
public:
    bridge(const netns& hub, std::string name);
    // Adds a port: interface `ifname` (with "addr/prefix", may be empty) inside `host`.
    void attach(const netns& host, const std::string& ifname, const std::string& addr);

private:
    const netns& hub_;
    std::string name_;
    int ports_ = 0;
};

// Moves the calling thread into a namespace for one scope (setns), and back.
class scoped_netns_enter {
public:
    explicit scoped_netns_enter(const netns& ns);
    ~scoped_netns_enter();
    scoped_netns_enter(const scoped_netns_enter&) = delete;
    scoped_netns_enter& operator=(const scoped_netns_enter&) = delete;

private:
    int saved_ = -1;
};

}  // namespace tandem::test
