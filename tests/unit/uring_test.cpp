// tests: the io_uring wrapper against the real kernel — O_DIRECT fixed-buffer I/O and the completion eventfd.
#include "tandem/replication/uring.hpp"

#include "support/skip.hpp"
#include "support/tempdir.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstring>

using namespace tandem;
using namespace tandem::replication;

TEST_CASE("a ring writes and reads back with O_DIRECT and registered buffers", "[kernel][replication]") {
    auto r = ring::create(64);
    if (!r) TANDEM_SKIP("io_uring is not available: " + r.error().message());
    auto pool = buffer_pool::create(4, 1 << 20);
    REQUIRE(pool.has_value());
    auto iov = pool->iovecs();
    REQUIRE(r->register_buffers(std::span(iov.get(), pool->count())).has_value());

    // tmpfs has no O_DIRECT; /var/tmp is on the root file system, as a volume file would be.
    tandem::test::temp_dir dir;
    auto path = (std::filesystem::path("/var/tmp") / ("tandem-uring-" + std::to_string(::getpid()))).string();
    unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600));
    if (!fd) TANDEM_SKIP("cannot open a file with O_DIRECT in /var/tmp");
    ::unlink(path.c_str());

    for (std::size_t i = 0; i < 2; ++i) std::memset((*pool)[i].data(), static_cast<int>('a' + i), (*pool)[i].size());
    for (unsigned i = 0; i < 2; ++i) {
        auto* s = r->sqe();
        io_uring_prep_write_fixed(s, fd.get(), (*pool)[i].data(), static_cast<unsigned>((*pool)[i].size()),
                                  i * (1ull << 20), static_cast<int>(i));
        io_uring_sqe_set_data64(s, i);
    }
    REQUIRE(r->submit_and_wait(2).has_value());
    int done = 0;
    r->reap([&](const io_uring_cqe& c) {
        CHECK(c.res == (1 << 20));
        ++done;
    });
    CHECK(done == 2);
    // The completions bumped the eventfd that the io_context would wait on.
    eventfd_t count = 0;
    CHECK(::eventfd_read(r->event_fd(), &count) == 0);
    CHECK(count >= 1);

    auto* s = r->sqe();
    io_uring_prep_read_fixed(s, fd.get(), (*pool)[2].data(), 1 << 20, 1 << 20, 2);
    REQUIRE(r->submit_and_wait(1).has_value());
    r->reap([&](const io_uring_cqe& c) { CHECK(c.res == (1 << 20)); });
    CHECK(std::memcmp((*pool)[2].data(), (*pool)[1].data(), 1 << 20) == 0);
}

TEST_CASE("buffers must be whole pages for O_DIRECT", "[unit][replication]") {
    CHECK_FALSE(buffer_pool::create(1, 1000).has_value());
    auto p = buffer_pool::create(2, 8192);
    REQUIRE(p.has_value());
    CHECK(reinterpret_cast<std::uintptr_t>((*p)[1].data()) % 4096 == 0);
}
