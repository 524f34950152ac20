// tests: the steady state's io_uring (replication/src/steady_ring.cpp) — what its end leaves behind.
#include "tandem/base/unique_fd.hpp"
#include "tandem/replication/steady_ring.hpp"
#include "support/engine_pair.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>

using namespace tandem;
using namespace tandem::replication;

namespace {

// A listening socket on 127.0.0.2:port, as the engine opens its own; -errno on failure.
int listen_on(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.2", &a.sin_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 4) != 0) {
        int e = errno;
        ::close(fd);
        return -e;
    }
    return fd;
}

}  // namespace

TEST_CASE("a steady ring that ends with a poll armed on a listening socket leaves its port free at once",
          "[kernel][replication]") {
    // The engine's connected state polls its listener through the ring (a peer
    // that connects again). Left armed, that poll holds the socket until the
    // kernel's asynchronous teardown of the ring reaches it, and the next engine's
    // bind() on the port fails with EADDRINUSE (about one round in two here
    // before the ring cancelled its polls on the way out).
    unique_fd volume(::open("/dev/null", O_RDWR | O_CLOEXEC));
    auto port = test::test_port();
    for (int round = 0; round < 50; ++round) {
        INFO("round " << round);
        int l = listen_on(port);
        INFO("bind: " << std::strerror(-l));
        REQUIRE(l >= 0);
        unique_fd listener(l);
        {
            auto r = steady_ring::create(volume.get(), 4);
            REQUIRE(r);
            (*r)->watch(listener.get(), 2);
            REQUIRE((*r)->wait(std::chrono::milliseconds(0)));  // submits the poll; nothing is ready
            CHECK((*r)->take_ready() == 0);
        }
        listener.reset();  // then the next round listens on the same port at once
    }
}
