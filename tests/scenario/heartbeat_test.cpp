// tests: bad datagrams on the heartbeat port are dropped and counted; reload applies and refuses.
#include "support/cluster.hpp"
#include "support/skip.hpp"
#include "support/util.hpp"

#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace tandem::test;
using namespace std::chrono_literals;

namespace {
}

TEST_CASE("cluster: garbage, forged and oversize datagrams are dropped, counted and change nothing", "[scenario][heartbeat]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.start("a");
    c.start("b");
    REQUIRE(c.wait("a", "state=ACTIVE", soon));
    REQUIRE(c.wait("b", "state=STANDBY", soon));
    // From the client: a short datagram, a forged full-size one with the right
    // magic and version but signed with no key, and an oversize one.
    {
        scoped_netns_enter in(c.ns("client"));
        int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(694);
        ::inet_pton(AF_INET, "10.77.0.1", &to.sin_addr);
        auto send = [&](const std::string& payload) {
            CHECK(::sendto(fd, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
                  static_cast<ssize_t>(payload.size()));
        };
        send("hello");
        std::string forged(232, '\x5a');
        forged.replace(0, 8, std::string("TNDH\x02\x01\x00\xe8", 8));
        send(forged);
        send(std::string(3000, '\0'));
        ::close(fd);
    }
    // Poll the real counters until all three are seen, with a deadline.
    nlohmann::json d;
    auto deadline = std::chrono::steady_clock::now() + soon;
    do {
        d = c.status("a")["heartbeat"]["dropped"];
    } while (!(d["truncated"] == 1 && d["bad_mac"] == 1 && d["oversize"] == 1) &&
             std::chrono::steady_clock::now() < deadline);
    CHECK(d["truncated"] == 1);
    CHECK(d["bad_mac"] == 1);
    CHECK(d["oversize"] == 1);
    CHECK(c.state("a") == "ACTIVE");
    CHECK(c.state("b") == "STANDBY");
    CHECK_THAT(c.log("a"), Catch::Contains("[heartbeat.dropped]"));
}

TEST_CASE("cluster: reload applies heartbeat timing and refuses a new VIP", "[scenario][heartbeat]") {
    TANDEM_REQUIRE_NAMESPACES();
    test_cluster c;
    c.start("a");
    c.start("b");
    REQUIRE(c.wait("a", "state=ACTIVE", soon));
    c.rewrite_config("a", "", "heartbeat.interval", "50ms");
    auto r = c.ctl("a", "reload");
    CHECK(r.status == 0);
    CHECK_THAT(r.out, Catch::Contains("applied heartbeat.interval: 100ms -> 50ms"));
    CHECK(c.status("a")["heartbeat"]["interval_ms"] == 50);
    CHECK(c.state("a") == "ACTIVE");  // the VIP did not move

    run_ok("sed -i 's#10.77.0.100/24#10.77.0.101/24#' " + c.config_path("a"));
    r = c.ctl("a", "reload");
    CHECK(r.status == 1);
    CHECK_THAT(r.out, Catch::Contains("cluster.vip: changing it needs a re-pairing"));
    CHECK(c.status("a")["cluster"]["vip"] == "10.77.0.100/24");
}

TEST_CASE("cluster: tandemctl says clearly when tandemd is not running", "[scenario][heartbeat]") {
    auto r = run(bin_dir() + "/tandemctl -s /nonexistent/tandemd.sock cstate");
    CHECK(r.status == 4);
    CHECK_THAT(r.out, Catch::Contains("tandemd is not running (cannot connect to /nonexistent/tandemd.sock"));
    r = run(bin_dir() + "/tandemctl frobnicate");
    CHECK(r.status == 2);
    CHECK_THAT(r.out, Catch::Contains("unknown command \"frobnicate\""));
}
