// tests: the DRBD backend's renderer, drbdadm command lines and state parsers —
// golden texts, recorded samples of /proc/drbd (8.4) and events2 (9), and the
// rendered resources checked by the real drbdadm of both tool paths.
#include "tandem/agent/config.hpp"
#include "tandem/agent/drbd.hpp"

#include "support/cluster.hpp"
#include "support/netns.hpp"
#include "support/skip.hpp"
#include "support/tempdir.hpp"
#include "support/util.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <fstream>

using namespace tandem;
using namespace tandem::agent;
using namespace tandem::test;

namespace {

ip_address ip(const std::string& s) { return *netlink::parse_ip(s); }

drbd::resource sample() {
    drbd::resource r;
    r.disk = "/dev/vdb4";
    r.first = {"alpha", ip("10.77.0.1")};
    r.second = {"beta", ip("10.77.0.2")};
    r.rate_kib = 100 * 1024;
    r.secret = drbd::derive_secret(std::vector<std::byte>(64, std::byte{7}));
    return r;
}

const char* golden = R"(# Written by tandemd from its configuration; edits here are overwritten.
resource store {
    protocol C;
    net {
        cram-hmac-alg sha256;
        shared-secret "SECRET";
        verify-alg crc32c;
        after-sb-0pri disconnect;
        after-sb-1pri disconnect;
        after-sb-2pri disconnect;
        rr-conflict disconnect;
    }
    disk {
        c-max-rate 102400k;
        resync-rate 102400k;
        c-min-rate 20480k;
    }
    on alpha {
        device /dev/drbd0 minor 0;
        disk /dev/vdb4;
        meta-disk internal;
        address ipv4 10.77.0.1:7789;
    }
    on beta {
        device /dev/drbd0 minor 0;
        disk /dev/vdb4;
        meta-disk internal;
        address ipv4 10.77.0.2:7789;
    }
}
)";

std::string with_secret(std::string text, const std::string& secret) {
    text.replace(text.find("SECRET"), 6, secret);
    return text;
}

}  // namespace

TEST_CASE("drbd: the resource renders in the subset both drbd-utils parsers accept", "[unit][drbd]") {
    auto r = sample();
    CHECK(drbd::validate(r).empty());
    CHECK(drbd::render(r) == with_secret(golden, r.secret));
    // IPv6 addresses in brackets, and the rate ceiling of the seeds.
    r.first.address = ip("fd00:77::1");
    r.second.address = ip("fd00:77::2");
    r.rate_kib = drbd::max_rate_kib;
    auto text = drbd::render(r);
    CHECK(text.find("address ipv6 [fd00:77::1]:7789;") != std::string::npos);
    CHECK(text.find("c-max-rate 4194304k;") != std::string::npos);
    CHECK(drbd::validate(r).empty());
}

TEST_CASE("drbd: both nodes render the same file from their own configurations", "[unit][drbd]") {
    temp_dir dir;
    { std::ofstream(dir.path() / "key") << std::string(64, 'k'); }
    ::chmod((dir.path() / "key").c_str(), 0600);
    auto conf = [&](const char* name, const char* role, const char* addr, const char* peer, const char* peer_addr) {
        return fmt::format(R"([cluster]
name = "c"
vip = "10.77.0.100/24"
interface = "eth0"
[node]
name = "{}"
role = "{}"
address = "{}"
[peer]
name = "{}"
address = "{}"
[auth]
key_file = "{}"
[replication]
backend = "uring"
device = "/dev/vdb4"
metadata = "/var/lib/tandem/meta"
rate = 400
[crossover]
interface = "eth1"
address = "{}"
peer_address = "{}"
)",
                           name, role, addr, peer, peer_addr, (dir.path() / "key").string(),
                           std::string(role) == "primary" ? "192.168.77.1" : "192.168.77.2",
                           std::string(role) == "primary" ? "192.168.77.2" : "192.168.77.1");
    };
    auto a = parse_config(conf("alpha", "primary", "10.77.0.1", "beta", "10.77.0.2"), "alpha.toml");
    auto b = parse_config(conf("beta", "secondary", "10.77.0.2", "alpha", "10.77.0.1"), "beta.toml");
    auto ra = drbd::from_config(a), rb = drbd::from_config(b);
    CHECK(drbd::render(ra) == drbd::render(rb));
    auto text = drbd::render(ra);
    // The crossover link carries the replication when one is configured, at the configured rate.
    CHECK(text.find("address ipv4 192.168.77.1:7789;") != std::string::npos);
    CHECK(text.find("address ipv4 192.168.77.2:7789;") != std::string::npos);
    CHECK(text.find("c-max-rate 409600k;") != std::string::npos);
    CHECK((text.find("on alpha") < text.find("on beta")));  // the primary first: DRBD 9 numbers nodes by order
    // The secret is the cluster key's, never the key itself.
    CHECK(ra.secret.size() == 40);
    CHECK(text.find(std::string(64, 'k')) == std::string::npos);
    CHECK(drbd::derive_secret(std::vector<std::byte>(64, std::byte{'k'})) == ra.secret);
    CHECK(drbd::derive_secret(std::vector<std::byte>(64, std::byte{'j'})) != ra.secret);
}

TEST_CASE("drbd: bad values are refused before drbdadm sees them, naming the value", "[unit][drbd]") {
    auto bad = [](auto change) {
        auto r = sample();
        change(r);
        auto v = drbd::validate(r);
        REQUIRE(v.size() == 1);
        return v[0];
    };
    CHECK(bad([](auto& r) { r.rate_kib = drbd::max_rate_kib + 1024; }).find("4097 MiB/s") != std::string::npos);
    CHECK(bad([](auto& r) { r.disk = "vdb4"; }).find("\"vdb4\"") != std::string::npos);
    CHECK(bad([](auto& r) { r.disk = "/dev/x; y"; }).find("absolute device path") != std::string::npos);
    CHECK(bad([](auto& r) { r.second.name = "alpha"; }).find("both hosts are named") != std::string::npos);
    CHECK(bad([](auto& r) { r.second.name = "be ta"; }).find("\"be ta\"") != std::string::npos);
    CHECK(bad([](auto& r) { r.second.address = r.first.address; }).find("10.77.0.1") != std::string::npos);
    CHECK(bad([](auto& r) { r.second.address = ip("fd00::2"); }).find("IPv4 or both IPv6") != std::string::npos);
    CHECK(bad([](auto& r) { r.secret = std::string(64, 'a'); }).find("shared secret") != std::string::npos);
}

TEST_CASE("drbd: drbdadm command lines", "[unit][drbd]") {
    using V = std::vector<std::string>;
    CHECK(drbd::command(drbd::action::up, "/run/tandem/drbd.res", "store") ==
          V{"drbdadm", "-c", "/run/tandem/drbd.res", "up", "store"});
    CHECK(drbd::command(drbd::action::create_md, "/c", "store") == V{"drbdadm", "-c", "/c", "--force", "create-md", "store"});
    CHECK(drbd::command(drbd::action::primary, "/c", "store")[3] == "primary");
    CHECK(drbd::command(drbd::action::force_primary, "/c", "store") == V{"drbdadm", "-c", "/c", "primary", "--force", "store"});
    CHECK(drbd::command(drbd::action::discard_my_data, "/c", "store") ==
          V{"drbdadm", "-c", "/c", "connect", "--discard-my-data", "store"});
    CHECK(drbd::command(drbd::action::invalidate, "/c", "store", "/usr/lib/drbd/drbdadm-84")[0] ==
          "/usr/lib/drbd/drbdadm-84");
}

TEST_CASE("drbd: /proc/drbd of DRBD 8.4, state by state", "[unit][drbd]") {
    const char* header = "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: 211FB288A383ED945B83420\n";
    auto parse = [&](const std::string& body) { return drbd::parse_proc_drbd(header + body, 0); };

    auto s = parse(" 0: cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate C r-----\n"
                   "    ns:0 nr:8 dw:8 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n");
    REQUIRE(s);
    CHECK(s->role == "Secondary");
    CHECK(s->peer_role == "Primary");
    CHECK(s->replication == "Established");
    auto m = drbd::map_state(*s);
    CHECK(m.sync == sync_state::up_to_date);
    CHECK(m.permille == 1000);
    CHECK(m.connected);
    CHECK_FALSE(m.running);

    s = parse(" 0: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate C r-----\n"
              "    ns:0 nr:1441792 dw:1441792 dr:0 al:0 bm:0 lo:0 pe:2 ua:0 ap:0 ep:1 wo:f oos:8994816\n"
              "\t[=>..................] sync'ed: 13.9% (8784/10192)M\n"
              "\tfinish: 0:01:49 speed: 81,920 (81,920) want: 102,400 K/sec\n");
    REQUIRE(s);
    CHECK(s->connection == "Connected");
    CHECK(s->replication == "SyncTarget");
    CHECK(*s->done_percent == Approx(13.9));
    CHECK(*s->eta_s == 109);
    CHECK(*s->out_of_sync_kib == 8994816);
    m = drbd::map_state(*s);
    CHECK(m.sync == sync_state::synchronizing);
    CHECK(m.permille == 139);
    CHECK(m.detail.find("109 s left") != std::string::npos);
    CHECK(m.connected);
    CHECK(m.running);
    CHECK_FALSE(m.to_peer);

    s = parse(" 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----\n"
              "\t[====>...............] sync'ed: 25.0% (7680/10192)M\n");
    REQUIRE(s);
    m = drbd::map_state(*s);
    CHECK(m.sync == sync_state::up_to_date);  // the source's data is whole: it stays promotable
    CHECK(m.detail.find("catching up") != std::string::npos);
    CHECK(m.running);
    CHECK(m.to_peer);

    s = parse(" 0: cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown C r-----\n");
    REQUIRE(s);
    m = drbd::map_state(*s);
    CHECK(m.sync == sync_state::up_to_date);
    CHECK_FALSE(m.connected);
    CHECK_FALSE(m.running);
    s = parse(" 0: cs:StandAlone ro:Secondary/Unknown ds:Outdated/DUnknown   r-----\n");
    REQUIRE(s);
    CHECK(s->connection == "StandAlone");
    m = drbd::map_state(*s);
    CHECK(m.sync == sync_state::outdated);
    CHECK(m.detail.find("Outdated") != std::string::npos);
    s->split_brain = true;  // from the split-brain handler
    CHECK(drbd::map_state(*s).sync == sync_state::diverged);

    CHECK_FALSE(parse(" 1: cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate C r-----\n"));  // minor 0 absent
    s = parse(" 0: cs:Unconfigured\n");
    REQUIRE(s);
    CHECK(drbd::map_state(*s).sync == sync_state::inconsistent);
}

TEST_CASE("drbd: a resource that DRBD gave up on is brought back, except after a split brain", "[unit][drbd]") {
    const char* header = "version: 8.4.11 (api:1/proto:86-101)\n";
    auto state = [&](const std::string& body) {
        return drbd::parse_proc_drbd(header + body, 0).value_or(drbd::kernel_state{});
    };
    // Up, or waiting by itself: nothing to do.
    for (const char* up : {" 0: cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate C r-----\n",
                           " 0: cs:WFConnection ro:Secondary/Unknown ds:UpToDate/DUnknown C r-----\n",
                           " 0: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate C r-----\n",
                           " 0: cs:Connecting ro:Secondary/Unknown ds:UpToDate/DUnknown C r-----\n"}) {
        INFO(up);
        CHECK_FALSE(drbd::needs_adjust(state(up)));
    }
    // StandAlone without a split brain: a bind that failed (no local address yet) or a refused handshake.
    auto standalone = state(" 0: cs:StandAlone ro:Secondary/Unknown ds:UpToDate/DUnknown   r-----\n");
    auto why = drbd::needs_adjust(standalone);
    REQUIRE(why);
    CHECK(why->find("StandAlone") != std::string::npos);
    // Not in the kernel at all: the minor is missing, or Unconfigured.
    CHECK(drbd::needs_adjust(state("")));
    CHECK(drbd::needs_adjust(state(" 0: cs:Unconfigured\n")));
    // After a split brain the operator chooses the side: Tandem does not reconnect.
    standalone.split_brain = true;
    CHECK_FALSE(drbd::needs_adjust(standalone));
    // DRBD 9: the connection destroyed, as events2 reports it.
    drbd::kernel_state nine;
    drbd::apply_events2(nine, "exists connection name:store peer-node-id:1 conn-name:beta connection:Connected role:Primary", "store");
    CHECK_FALSE(drbd::needs_adjust(nine));
    drbd::apply_events2(nine, "destroy connection name:store peer-node-id:1 conn-name:beta", "store");
    CHECK(drbd::needs_adjust(nine));
}

TEST_CASE("drbd: drbdsetup events2 of DRBD 9 folds into one state", "[unit][drbd]") {
    drbd::kernel_state s;
    auto feed = [&](std::string_view l) { return drbd::apply_events2(s, l, "store"); };
    CHECK(feed("exists resource name:store role:Secondary suspended:no write-ordering:flush"));
    CHECK(feed("exists connection name:store peer-node-id:0 conn-name:alpha connection:Connected role:Primary"));
    CHECK(feed("exists device name:store volume:0 minor:0 disk:Inconsistent client:no quorum:yes"));
    CHECK(feed("exists peer-device name:store peer-node-id:0 conn-name:alpha volume:0 replication:SyncTarget "
               "peer-disk:UpToDate peer-client:no resync-suspended:no done:12.50"));
    CHECK_FALSE(feed("exists -"));
    CHECK_FALSE(feed("exists device name:other volume:0 minor:1 disk:Diskless"));  // another resource
    CHECK_FALSE(feed("exists device name:store volume:1 minor:1 disk:Diskless"));  // another volume
    auto m = drbd::map_state(s);
    CHECK(m.sync == sync_state::synchronizing);
    CHECK(m.permille == 125);
    CHECK(feed("change peer-device name:store peer-node-id:0 conn-name:alpha volume:0 done:87.25 out-of-sync:1024"));
    CHECK(*s.out_of_sync_kib == 1024);
    CHECK(drbd::map_state(s).permille == 872);
    CHECK(feed("change peer-device name:store peer-node-id:0 conn-name:alpha volume:0 replication:Established"));
    CHECK(feed("change device name:store volume:0 minor:0 disk:UpToDate"));
    m = drbd::map_state(s);
    CHECK(m.sync == sync_state::up_to_date);
    CHECK_FALSE(s.done_percent);
    CHECK(feed("change resource name:store role:Primary"));
    CHECK(s.role == "Primary");

    // The peer goes away; later both were primary: DRBD calls the split-brain helper and stands alone.
    CHECK(feed("destroy connection name:store peer-node-id:0 conn-name:alpha"));
    CHECK(s.connection == "StandAlone");
    CHECK(feed("call helper name:store peer-node-id:0 conn-name:alpha volume:0 helper:split-brain"));
    m = drbd::map_state(s);
    CHECK(m.sync == sync_state::diverged);
    CHECK(m.detail.find("discard-local") != std::string::npos);
    CHECK(feed("change connection name:store peer-node-id:0 conn-name:alpha connection:Connected role:Secondary"));
    CHECK(drbd::map_state(s).sync == sync_state::up_to_date);
}

namespace {

// A rendered resource and its node's address in a namespace: drbdadm checks
// that the "on" section's address exists on the host.
struct drbdadm_host {
    netns ns{"drbd"};
    temp_dir dir;
    std::string conf = (dir.path() / "store.res").string();
    explicit drbdadm_host(const std::string& text) {
        std::ofstream(conf) << text;
        for (auto cmd : {"ip link add v0 type veth peer name v1", "ip addr add 10.77.0.1/24 dev v0",
                         "ip addr add 10.77.0.2/24 dev v1", "ip link set v0 up", "ip link set v1 up"})
            ns.exec_ok(cmd);
    }
    cmd_result drbdadm(const std::string& tool, const std::string& node, const std::string& args) const {
        return ns.exec("env __DRBD_NODE__=" + node + " " + tool + " -c " + conf + " " + args);
    }
};

bool have(const std::string& tool) { return ::access(tool.c_str(), X_OK) == 0; }

}  // namespace

TEST_CASE("drbd: drbdadm 9 and 8.4 accept the rendered resource and plan the expected commands", "[kernel][drbd]") {
    TANDEM_REQUIRE_NAMESPACES();
    if (!have("/usr/sbin/drbdadm") || !have("/usr/lib/drbd/drbdadm-84")) TANDEM_SKIP("drbd-utils is not installed");
    auto r = sample();
    r.split_brain_flag = "/var/lib/tandem/drbd/split-brain";  // the handlers section too
    drbdadm_host h(drbd::render(r));
    for (auto node : {"alpha", "beta"}) {
        INFO(node);
        // drbd-utils 9's own parser, and the 8.4 one the Debian kernel's drbd 8.4.11 needs.
        for (std::string tool : {"/usr/sbin/drbdadm", "/usr/lib/drbd/drbdadm-84"}) {
            INFO(tool);
            auto dump = h.drbdadm(tool, node, "dump");
            INFO(dump.out);
            CHECK(dump.status == 0);
            CHECK(dump.out.find("resource store {") != std::string::npos);
            CHECK(dump.out.find("c-max-rate       102400k;") != std::string::npos);
            CHECK(dump.out.find("c-min-rate       20480k;") != std::string::npos);
        }
        const std::string self = std::string(node) == "alpha" ? "10.77.0.1" : "10.77.0.2";
        const std::string peer = std::string(node) == "alpha" ? "10.77.0.2" : "10.77.0.1";
        auto up9 = h.drbdadm("/usr/sbin/drbdadm", node, "-d up store");
        INFO(up9.out);
        CHECK(up9.status == 0);
        CHECK(up9.out.find("drbdsetup new-resource store") != std::string::npos);
        CHECK(up9.out.find("--protocol=C") != std::string::npos);
        CHECK(up9.out.find("--cram-hmac-alg=sha256") != std::string::npos);
        CHECK(up9.out.find("--after-sb-0pri=disconnect") != std::string::npos);
        // The peer's node id: 0 or 1 by the order of the "on" sections.
        CHECK(up9.out.find(" ipv4:" + self + ":7789 ipv4:" + peer + ":7789") != std::string::npos);
        CHECK(up9.out.find("drbdsetup new-path store") != std::string::npos);
        CHECK(up9.out.find("--c-max-rate=102400k") != std::string::npos);
        CHECK(up9.out.find("--c-min-rate=20480k") != std::string::npos);
        CHECK(up9.out.find("drbdsetup attach 0 /dev/vdb4 /dev/vdb4 internal") != std::string::npos);
        auto up84 = h.drbdadm("/usr/lib/drbd/drbdadm-84", node, "-d up store");
        INFO(up84.out);
        CHECK(up84.status == 0);
        CHECK(up84.out.find("drbdsetup-84 attach 0 /dev/vdb4 /dev/vdb4 internal") != std::string::npos);
        CHECK(up84.out.find("drbdsetup-84 connect store ipv4:" + self + ":7789 ipv4:" + peer + ":7789 --protocol=C") !=
              std::string::npos);
        CHECK(up84.out.find("--c-max-rate=102400k") != std::string::npos);
        CHECK(up84.out.find("--c-min-rate=20480k") != std::string::npos);
        for (std::string tool : {"/usr/sbin/drbdadm", "/usr/lib/drbd/drbdadm-84"}) {
            auto discard = h.drbdadm(tool, node, "-d connect --discard-my-data store");
            INFO(discard.out);
            CHECK(discard.status == 0);
            CHECK(discard.out.find("--discard-my-data") != std::string::npos);
            auto force = h.drbdadm(tool, node, "-d primary --force store");
            INFO(force.out);
            CHECK(force.status == 0);
            CHECK(force.out.find(" --force") != std::string::npos);
            auto adjust = h.drbdadm(tool, node, "-d adjust store");
            INFO(adjust.out);
            CHECK(adjust.status == 0);
            CHECK(adjust.out.find("attach 0 /dev/vdb4") != std::string::npos);
        }
    }
}

TEST_CASE("drbd: tandemd names what is missing: drbd-utils, or the kernel module", "[kernel][drbd]") {
    temp_dir dir;
    auto key = (dir.path() / "key").string();
    { std::ofstream(key) << std::string(64, 'k'); }
    ::chmod(key.c_str(), 0600);
    auto conf = (dir.path() / "tandem.toml").string();
    std::ofstream(conf) << fmt::format(R"([cluster]
name = "c"
vip = "10.77.0.100/24"
interface = "eth0"
[node]
name = "alpha"
role = "primary"
address = "10.77.0.1"
state_dir = "{}"
[peer]
name = "beta"
address = "10.77.0.2"
[auth]
key_file = "{}"
[replication]
backend = "drbd"
device = "/dev/vdb4"
[store]
mount = ""
)",
                                       dir.path().string(), key);
    auto tandemd = bin_dir() + "/tandemd";
    // Without drbd-utils in PATH (drbdadm lives in /usr/sbin).
    auto r = run("env PATH=/usr/bin:/bin " + tandemd + " --check-config " + conf);
    INFO(r.out);
    CHECK(r.status == 1);
    CHECK(r.out.find("install the drbd-utils package") != std::string::npos);
    if (::access("/proc/drbd", F_OK) == 0 || run("modprobe -q -n drbd").status == 0)
        TANDEM_SKIP("drbd.ko is loaded or loadable here: its absence cannot be shown");
    r = run(tandemd + " --check-config " + conf);
    INFO(r.out);
    CHECK(r.status == 1);
    CHECK(r.out.find("needs the drbd kernel module") != std::string::npos);
    CHECK(r.out.find("modprobe drbd") != std::string::npos);
}
