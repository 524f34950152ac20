// tests: configuration validation — every class of bad input names file, line, key, value and what is allowed.
#include "tandem/agent/config.hpp"

#include "support/tempdir.hpp"

#include <catch2/catch.hpp>

#include <fmt/format.h>

using namespace tandem::agent;
using tandem::test::temp_dir;
using namespace std::chrono_literals;

namespace {

std::string good(const std::string& key_file, const std::string& extra = "") {
    return fmt::format(R"([cluster]
name = "store-ha"
vip = "10.77.0.100/24"
interface = "eth0"
[node]
name = "alpha"
role = "primary"
address = "10.77.0.1"
[peer]
name = "beta"
address = "10.77.0.2"
[heartbeat]
interval = "10s"
timeout = "30s"
port = 694
links = ["eth0"]
[connectivity]
targets = ["10.77.0.10"]
[auth]
key_file = "{}"
[replication]
backend = "none"
port = 7789
rate = 100
[control]
socket = "/run/tandem/tandemd.sock"
{})",
                       key_file, extra);
}

// Parses and returns the error text, or "" when the text is valid.
std::string problems(const std::string& text) {
    try {
        (void)parse_config(text, "/etc/tandem/tandem.toml");
        return "";
    } catch (const config_error& e) {
        return e.what();
    }
}

struct fixture {
    temp_dir dir;
    std::string key = dir.write("cluster.key", std::string(64, 'k'), 0600);
};

}  // namespace

TEST_CASE_METHOD(fixture, "the issue's example configuration is valid", "[unit][config]") {
    auto c = parse_config(good(key), "x.toml");
    CHECK(c.cluster.name == "store-ha");
    CHECK(c.cluster.vip.prefix == 24);
    CHECK(c.node.role == node_role::primary);
    CHECK(c.heartbeat.interval == 10s);
    CHECK(c.heartbeat.timeout == 30s);
    CHECK(c.heartbeat.port == 694);
    CHECK(c.replication.rate_mib == 100);
    CHECK(c.replication.yield_rate_mib == 20);
    CHECK(c.auth.key.size() == 64);
    CHECK(c.connectivity.targets.size() == 1);
    CHECK(tandem::netlink::address_string(c.peer_address_on("eth0")) == "10.77.0.2");
}

TEST_CASE_METHOD(fixture, "defaults are the seeds' figures", "[unit][config]") {
    auto text = good(key);
    // Drop the [heartbeat] and [replication] sections entirely.
    auto cut = [&](const std::string& from, const std::string& to) {
        text.erase(text.find(from), text.find(to) - text.find(from));
    };
    cut("[heartbeat]", "[connectivity]");
    cut("[replication]", "[control]");
    auto c = parse_config(text, "x.toml");
    CHECK(c.heartbeat.interval == 10s);
    CHECK(c.heartbeat.timeout == 30s);
    CHECK(c.heartbeat.port == 694);
    CHECK(c.heartbeat.links == std::vector<std::string>{"eth0"});
    CHECK(c.replication.port == 7789);
    CHECK(c.replication.rate_mib == 100);
    CHECK(c.watchdog.device.empty());  // no watchdog unless one is named
    CHECK(c.watchdog.timeout == 30s);  // the heartbeat timeout
}

TEST_CASE_METHOD(fixture, "the watchdog's timeout defaults to the heartbeat timeout, rounded up to whole seconds",
                 "[unit][config]") {
    auto text = good(key, "[watchdog]\ndevice = \"/dev/watchdog\"\n");
    text.replace(text.find("\"10s\""), 5, "\"50ms\"");
    text.replace(text.find("\"30s\""), 5, "\"150ms\"");
    auto c = parse_config(text, "x.toml");
    CHECK(c.watchdog.device == "/dev/watchdog");
    CHECK(c.watchdog.timeout == 1s);
    text.replace(text.find("\"150ms\""), 7, "\"2500ms\"");
    CHECK(parse_config(text, "x.toml").watchdog.timeout == 3s);
    // With the lease, 40 s fits 2 x 30s - 2 x 10s exactly.
    auto lease = good(key, "[watchdog]\ndevice = \"/dev/watchdog\"\ntimeout = \"40s\"\n");
    lease.replace(lease.find("backend = \"none\""), 16,
                  "backend = \"shared\"\ndevice = \"/dev/sdb\"\nlease_device = \"/dev/sdc\"");
    CHECK(parse_config(lease, "x.toml").watchdog.timeout == 40s);
}

TEST_CASE_METHOD(fixture, "50ms heartbeats are accepted", "[unit][config]") {
    auto text = good(key);
    text.replace(text.find("\"10s\""), 5, "\"50ms\"");
    text.replace(text.find("\"30s\""), 5, "\"150ms\"");
    auto c = parse_config(text, "x.toml");
    CHECK(c.heartbeat.interval == 50ms);
}

TEST_CASE_METHOD(fixture, "bad values name file, line, key, value and what is allowed", "[unit][config]") {
    struct bad {
        std::string from, to, expect;
    };
    std::vector<bad> cases = {
        {"interval = \"10s\"", "interval = \"10\"", "tandem.toml:13: heartbeat.interval = \"10\": must be a duration"},
        {"interval = \"10s\"", "interval = \"fast\"", "heartbeat.interval = \"fast\""},
        {"interval = \"10s\"", "interval = 10", "heartbeat.interval = 10: must be a duration"},
        {"timeout = \"30s\"", "timeout = \"20s\"", "must exceed 2 x heartbeat.interval (2 x 10s = 20s)"},
        {"port = 694", "port = 70000", "heartbeat.port = 70000: must be an integer from 1 to 65535"},
        {"rate = 100", "rate = 5000", "replication.rate = 5000: must be an integer from 1 to 4096 MB/s"},
        {"rate = 100", "rate = 0", "replication.rate = 0: must be an integer from 1 to 4096"},
        {"rate = 100", "rate = \"fast\"", "replication.rate = \"fast\""},
        {"rate = 100", "rate = 100\nresync_yield_rate = 5000",
         "replication.resync_yield_rate = 5000: must be an integer from 0 to 4096 MB/s (MiB/s; 0: the resync never yields)"},
        {"rate = 100", "rate = 100\nprotocol = \"B\"", "replication.protocol = \"B\""},
        {"rate = 100", "rate = 100\nmetadata = \"meta\"", "replication.metadata = \"meta\": must be an absolute path"},
        {"role = \"primary\"", "role = \"master\"", "node.role = \"master\": must be one of: primary, secondary"},
        {"backend = \"none\"", "backend = \"zfs\"", "must be one of: none, uring, drbd, shared"},
        {"backend = \"none\"", "backend = \"shared\"\ndevice = \"/dev/sdb\"\n[store]\nmount = \"\"",
         "store.mount: missing: backend \"shared\" mounts the shared device there on the active node"},
        {"backend = \"none\"", "backend = \"shared\"\ndevice = \"/dev/sdb\"\nlease_device = \"sdc\"",
         "replication.lease_device = \"sdc\": must be an absolute path"},
        {"backend = \"none\"", "backend = \"shared\"\ndevice = \"/dev/sdb\"\nlease_device = \"/dev/sdb\"",
         "replication.lease_device = \"/dev/sdb\": must not be replication.device"},
        {"backend = \"none\"", "backend = \"uring\"\ndevice = \"/dev/sdb\"\nlease_device = \"/dev/sdc\"",
         "replication.lease_device = \"/dev/sdc\": only with backend \"shared\""},
        {"backend = \"none\"", "backend = \"none\"\n[store]\nkill_after = \"1h\"",
         "store.kill_after = \"1h\": must be a duration such as \"50ms\", \"10s\" or \"2min\", from 0ms to 10min"},
        {"backend = \"none\"", "backend = \"none\"\n[store]\nfsck_repair = \"always\"",
         "store.fsck_repair = \"always\": must be one of: preen, yes, no"},
        {"backend = \"none\"", "backend = \"none\"\n[store]\nfstype = \"xfs\"\nfsck_repair = \"yes\"",
         "store.fsck_repair = \"yes\": must be \"preen\" with fstype \"xfs\""},
        {"vip = \"10.77.0.100/24\"", "vip = \"10.77.0.100\"", "cluster.vip = \"10.77.0.100\": must be an IPv4 or IPv6 address with a prefix"},
        {"vip = \"10.77.0.100/24\"", "vip = \"10.77.0.100/33\"", "cluster.vip = \"10.77.0.100/33\""},
        {"vip = \"10.77.0.100/24\"", "vip = \"10.78.0.100/24\"", "node.address: \"10.77.0.1\" is not in the VIP's subnet 10.78.0.100/24"},
        {"vip = \"10.77.0.100/24\"", "vip = \"10.77.0.1/24\"", "cluster.vip: must be an unused address"},
        {"address = \"10.77.0.2\"", "address = \"10.77.0.1\"", "peer.address: must differ from node.address"},
        {"address = \"10.77.0.2\"", "address = \"fd00::2\"", "is not of the same IP family"},
        {"interface = \"eth0\"", "interface = \"a-very-long-ifname\"", "cluster.interface = \"a-very-long-ifname\": must be a network interface name of 1 to 13"},
        {"interface = \"eth0\"", "interface = \"eth0:0\"", "without '/', ':' or spaces"},
        {"links = [\"eth0\"]", "links = [\"eth0\", \"eth0\"]", "tandem.toml:16: heartbeat.links = \"eth0\": lists \"eth0\" twice"},
        {"links = [\"eth0\"]", "links = [\"eth7\"]", "\"eth7\" is neither cluster.interface"},
        {"links = [\"eth0\"]", "links = \"eth0\"", "must be a list of strings"},
        {"targets = [\"10.77.0.10\"]", "targets = [\"nowhere\"]", "every element must be an IPv4 or IPv6 address"},
        {"name = \"alpha\"", "name = \"beta\"", "peer.name: must differ from node.name"},
        {"name = \"store-ha\"", "name = \"store ha!\"", "cluster.name = \"store ha!\": must be 1 to 32 characters"},
        // 33 characters would be cut in the heartbeat and the peer would drop every one.
        {"name = \"alpha\"", "name = \"a23456789012345678901234567890123\"", "node.name = \"a23456789012345678901234567890123\": must be 1 to 32 characters"},
        {"role = \"primary\"", "role = \"primary\"\nsoftware_version = \"1.2.3-very-long-build\"", "node.software_version = \"1.2.3-very-long-build\": must be 1 to 16 characters"},
        {"socket = \"/run/tandem/tandemd.sock\"", "socket = \"relative.sock\"", "control.socket = \"relative.sock\": must be an absolute path"},
        {"port = 7789", "port = 694", "replication.port: must differ from heartbeat.port"},
        {"[peer]", "[peers]", "peers: unknown section; allowed: cluster"},
        {"timeout = \"30s\"", "timeout = \"30s\"\nintervall = \"1s\"", "heartbeat.intervall = \"1s\": unknown key; allowed: interval, timeout, port, links"},
        {"backend = \"none\"", "backend = \"uring\"", "replication.device: missing: backend \"uring\" needs the device"},
        {"[peer]\nname = \"beta\"\n", "[peer]\n", "peer.name: missing (required)"},
        {"vip = \"10.77.0.100/24\"", "vip = ", "not valid TOML"},
        {"tandemd.sock\"", "tandemd.sock\"\n[watchdog]\ndevice = \"watchdog\"",
         "watchdog.device = \"watchdog\": must be an absolute path, such as \"/dev/watchdog\""},
        {"tandemd.sock\"", "tandemd.sock\"\n[watchdog]\ntimeout = \"1500ms\"",
         "watchdog.timeout = \"1500ms\": must be whole seconds, such as \"10s\" (the kernel's watchdog API counts in "
         "seconds)"},
        {"tandemd.sock\"", "tandemd.sock\"\n[watchdog]\ntimeout = \"2h\"",
         "watchdog.timeout = \"2h\": must be a duration such as \"50ms\", \"10s\" or \"2min\", from 1s to 60min"},
        // The lease: the peer claims 2 x 30s after the last renewal it saw, which
        // may be up to 2 x 10s old when the feeding stops: 40 s at most.
        {"backend = \"none\"",
         "backend = \"shared\"\ndevice = \"/dev/sdb\"\nlease_device = \"/dev/sdc\"\n[watchdog]\ndevice = "
         "\"/dev/watchdog\"\ntimeout = \"41s\"",
         "watchdog.timeout = \"41s\": 41s is too long for the shared-storage lease: the peer claims the device 2 x "
         "heartbeat.timeout after this node's last renewal, so the watchdog must fire within 2 x heartbeat.timeout - 2 "
         "x heartbeat.interval = 40s; set it to at most 40s"},
    };
    for (auto& c : cases) {
        auto text = good(key);
        auto pos = text.find(c.from);
        REQUIRE(pos != std::string::npos);
        text.replace(pos, c.from.size(), c.to);
        INFO("replacing " << c.from << " with " << c.to);
        auto err = problems(text);
        CHECK_THAT(err, Catch::Contains(c.expect));
        CHECK_THAT(err, Catch::StartsWith("/etc/tandem/tandem.toml"));
    }
}

TEST_CASE_METHOD(fixture, "every problem is reported, not just the first", "[unit][config]") {
    auto text = good(key);
    text.replace(text.find("rate = 100"), 10, "rate = 9999");
    text.replace(text.find("port = 694"), 10, "port = 0");
    auto err = problems(text);
    CHECK_THAT(err, Catch::Contains("replication.rate"));
    CHECK_THAT(err, Catch::Contains("heartbeat.port"));
}

TEST_CASE("the key file must be private and long enough", "[unit][config]") {
    temp_dir dir;
    auto loose = dir.write("loose.key", std::string(64, 'k'), 0644);
    CHECK_THAT(problems(good(loose)), Catch::Contains("mode is 0644; the shared secret must be readable by its owner only"));
    auto shortk = dir.write("short.key", std::string(16, 'k'), 0600);
    CHECK_THAT(problems(good(shortk)), Catch::Contains("is 16 bytes; the shared secret must be 32 to 4096 bytes"));
    CHECK_THAT(problems(good(dir.path().string() + "/missing.key")),
               Catch::Contains("auth.key_file = \"" + dir.path().string() + "/missing.key\": cannot open"));
}

TEST_CASE_METHOD(fixture, "a crossover link needs the peer's address there", "[unit][config]") {
    auto c = parse_config(good(key, "[crossover]\ninterface = \"eth1\"\naddress = \"192.168.77.1\"\npeer_address = \"192.168.77.2\"\n")
                              .replace(good(key).find("links = [\"eth0\"]"), 16, "links = [\"eth0\", \"eth1\"]"),
                          "x.toml");
    CHECK(tandem::netlink::address_string(c.peer_address_on("eth1")) == "192.168.77.2");
    CHECK(tandem::netlink::address_string(c.peer_address_on("eth0")) == "10.77.0.2");
    CHECK_THAT(problems(good(key, "[crossover]\ninterface = \"eth0\"\naddress = \"192.168.77.1\"\npeer_address = \"192.168.77.2\"\n")),
               Catch::Contains("crossover.interface = \"eth0\": must not be the management interface"));
}

TEST_CASE_METHOD(fixture, "reload applies timing, connectivity and rate and refuses re-pairing changes", "[unit][config]") {
    auto a = parse_config(good(key), "x.toml");
    auto text = good(key);
    text.replace(text.find("interval = \"10s\""), 16, "interval = \"1s\"");
    text.replace(text.find("rate = 100"), 10, "rate = 400");
    auto b = parse_config(text, "x.toml");
    auto plan = plan_reload(a, b);
    CHECK(plan.ok());
    CHECK(plan.applied == std::vector<std::string>{"heartbeat.interval: 10s -> 1s", "replication.rate: 100 -> 400"});

    text.replace(text.find("vip = \"10.77.0.100/24\""), 22, "vip = \"10.77.0.101/24\"");
    auto c = parse_config(text, "x.toml");
    plan = plan_reload(a, c);
    CHECK_FALSE(plan.ok());
    REQUIRE(plan.refused.size() == 1);
    CHECK_THAT(plan.refused[0], Catch::StartsWith("cluster.vip: changing it needs a re-pairing"));
}

TEST_CASE_METHOD(fixture, "every key a reload sees is either applied or refused, never ignored", "[unit][config]") {
    const std::string xo = "[crossover]\ninterface = \"eth1\"\naddress = \"192.168.77.1\"\npeer_address = \"192.168.77.2\"\n";
    auto base_text = good(key, xo + "[health]\n[services]\n[announce]\n");
    base_text.replace(base_text.find("links = [\"eth0\"]"), 16, "links = [\"eth0\", \"eth1\"]");
    auto base = parse_config(base_text, "x.toml");
    auto other_key = dir.write("other.key", std::string(64, 'o'), 0600);
    struct change {
        std::string key, from, to;
        bool applied;
    };
    const std::vector<change> changes = {
        {"cluster.name", "name = \"store-ha\"", "name = \"store-hb\"", false},
        {"cluster.vip", "10.77.0.100/24", "10.77.0.101/24", false},
        {"cluster.interface", "interface = \"eth0\"\n[node]", "interface = \"eth2\"\n[node]", false},  // + links
        {"node.name", "name = \"alpha\"", "name = \"gamma\"", false},
        {"node.role", "role = \"primary\"", "role = \"secondary\"", false},
        {"node.software_version", "role = \"primary\"", "role = \"primary\"\nsoftware_version = \"9.9\"", false},
        {"node.address", "address = \"10.77.0.1\"", "address = \"10.77.0.3\"", false},
        {"node.state_dir", "role = \"primary\"", "role = \"primary\"\nstate_dir = \"/tmp/x\"", false},
        {"peer.name", "name = \"beta\"", "name = \"delta\"", false},
        {"peer.address", "address = \"10.77.0.2\"", "address = \"10.77.0.4\"", false},
        {"heartbeat.interval", "interval = \"10s\"", "interval = \"5s\"", true},
        {"heartbeat.timeout", "timeout = \"30s\"", "timeout = \"40s\"", true},
        {"heartbeat.port", "port = 694", "port = 695", false},
        {"heartbeat.latency_alert", "timeout = \"30s\"", "timeout = \"30s\"\nlatency_alert = \"50ms\"", true},
        {"heartbeat.probe", "timeout = \"30s\"", "timeout = \"30s\"\nprobe = \"timestamping\"", false},
        {"heartbeat.links", "links = [\"eth0\", \"eth1\"]", "links = [\"eth0\"]", false},
        {"connectivity.targets", "targets = [\"10.77.0.10\"]", "targets = [\"10.77.0.11\"]", true},
        {"connectivity.timeout", "[connectivity]\n", "[connectivity]\ntimeout = \"2s\"\n", true},
        {"connectivity.interval", "[connectivity]\n", "[connectivity]\ninterval = \"20s\"\n", true},
        {"connectivity.require", "[connectivity]\n", "[connectivity]\nrequire = \"all\"\n", true},
        {"auth.key_file", key, other_key, false},
        {"replication.backend", "backend = \"none\"", "backend = \"shared\"\ndevice = \"/dev/sdb\"", false},
        {"replication.port", "port = 7789", "port = 7790", false},
        {"replication.rate", "rate = 100", "rate = 400", true},
        {"replication.device", "rate = 100", "rate = 100\ndevice = \"/dev/sdb\"", false},
        {"replication.metadata", "rate = 100", "rate = 100\nmetadata = \"/var/lib/x.meta\"", false},
        {"replication.protocol", "rate = 100", "rate = 100\nprotocol = \"A\"", false},
        {"crossover.interface", "interface = \"eth1\"", "interface = \"eth3\"", false},
        {"crossover.address", "address = \"192.168.77.1\"", "address = \"192.168.77.3\"", false},
        {"crossover.peer_address", "peer_address = \"192.168.77.2\"", "peer_address = \"192.168.77.4\"", false},
        {"control.socket", "/run/tandem/tandemd.sock", "/run/tandem/other.sock", false},
        {"health.store_path", "[health]\n", "[health]\nstore_path = \"/store\"\n", true},
        {"health.check_command", "[health]\n", "[health]\ncheck_command = \"true\"\n", true},
        {"health.interval", "[health]\n", "[health]\ninterval = \"1s\"\n", true},
        {"health.command_timeout", "[health]\n", "[health]\ncommand_timeout = \"3s\"\n", true},
        {"services.start", "[services]\n", "[services]\nstart = \"true\"\n", true},
        {"services.stop", "[services]\n", "[services]\nstop = \"true\"\n", true},
        {"services.timeout", "[services]\n", "[services]\ntimeout = \"5s\"\n", true},
        {"announce.count", "[announce]\n", "[announce]\ncount = 5\n", true},
        {"announce.spacing", "[announce]\n", "[announce]\nspacing = \"2s\"\n", true},
        {"announce.refresh", "[announce]\n", "[announce]\nrefresh = \"60s\"\n", true},
        {"watchdog.device", "[announce]\n", "[announce]\n[watchdog]\ndevice = \"/dev/watchdog\"\n", false},
        {"watchdog.timeout", "[announce]\n", "[announce]\n[watchdog]\ntimeout = \"20s\"\n", true},
    };
    for (auto& c : changes) {
        INFO(c.key);
        auto text = base_text;
        auto pos = text.find(c.from);
        REQUIRE(pos != std::string::npos);
        text.replace(pos, c.from.size(), c.to);
        // Moving an interface moves its heartbeat link too.
        if (c.key == "cluster.interface") text.replace(text.find("[\"eth0\", \"eth1\"]"), 16, "[\"eth2\", \"eth1\"]");
        if (c.key == "crossover.interface") text.replace(text.find("[\"eth0\", \"eth1\"]"), 16, "[\"eth0\", \"eth3\"]");
        auto plan = plan_reload(base, parse_config(text, "x.toml"));
        const auto& list = c.applied ? plan.applied : plan.refused;
        REQUIRE_FALSE(list.empty());
        CHECK(std::any_of(list.begin(), list.end(), [&](auto& l) { return l.starts_with(c.key + ":"); }));
        CHECK((c.applied ? plan.refused : plan.applied).empty());
    }
}
