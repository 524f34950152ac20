// tests: the systemd notify protocol as tandemd speaks it — readiness, status, watchdog, stopping.
#include "support/cluster.hpp"
#include "support/skip.hpp"
#include "support/util.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstring>

using namespace tandem::test;
using namespace std::chrono_literals;

TEST_CASE("cluster: tandemd notifies readiness and status, pings the watchdog, and says when it stops",
          "[scenario][systemd]") {
    TANDEM_REQUIRE_NAMESPACES();
    temp_dir dir;
    auto path = (dir.path() / "notify").string();
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);

    test_cluster c;
    // The service manager's side: NOTIFY_SOCKET, and a 200 ms watchdog.
    c.start("a", {"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=200000"});
    std::string all;
    auto read_until = [&](const std::string& want, int times) {
        auto deadline = std::chrono::steady_clock::now() + 5s;
        auto count = [&] {
            int n = 0;
            for (auto p = all.find(want); p != std::string::npos; p = all.find(want, p + 1)) ++n;
            return n;
        };
        while (count() < times) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return false;
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char buf[4096];
            auto n = ::recv(fd, buf, sizeof buf, 0);
            if (n > 0) all.append(buf, static_cast<std::size_t>(n)).append("\n");
        }
        return true;
    };
    CHECK(read_until("READY=1", 1));
    CHECK(read_until("STATUS=", 1));
    CHECK(read_until("WATCHDOG=1", 3));  // pinged at half the interval, again and again
    CHECK(read_until("STATUS=ACTIVE/ONLINE", 1));
    CHECK(c.stop("a") == 0);
    CHECK(read_until("STOPPING=1", 1));
    ::close(fd);
}
