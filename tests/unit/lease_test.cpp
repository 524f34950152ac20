// tests: the lease on shared storage — the slot codec, and two keepers on one O_DIRECT file.
#include "tandem/agent/lease.hpp"

#include "support/volume_file.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <cstring>
#include <mutex>

using namespace tandem;
using namespace tandem::agent;
using namespace tandem::test;
using namespace std::chrono_literals;

namespace {

std::array<std::byte, lease_slot_size> encoded(const lease_slot& s) {
    std::array<std::byte, lease_slot_size> b{};
    REQUIRE(encode_lease_slot(b, s));
    return b;
}

// Every turn a keeper reports, for a test to wait on.
struct turns {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<lease_info> seen;
    std::function<void(const lease_info&)> sink() {
        return [this](const lease_info& v) {
            std::lock_guard lk(mu);
            seen.push_back(v);
            cv.notify_all();
        };
    }
    // The first turn from now on that satisfies `pred`, within 5 s.
    template <class Pred>
    std::optional<lease_info> next(Pred pred) {
        std::unique_lock lk(mu);
        auto from = seen.size();
        std::optional<lease_info> hit;
        cv.wait_for(lk, 5s, [&] {
            for (; from < seen.size(); ++from)
                if (pred(seen[from])) {
                    hit = seen[from];
                    return true;
                }
            return false;
        });
        return hit;
    }
};

lease_keeper::options opts(const std::string& dev, node_role r) {
    return {dev, r, r == node_role::primary ? "alpha" : "beta", 20ms};
}

lease_info write_now(lease_keeper& k, bool holding) {
    boost::asio::io_context io;
    auto f = boost::asio::co_spawn(io, k.write_now(holding, 5s), boost::asio::use_future);
    io.run();
    return f.get();
}

void write_at(const std::string& path, std::uint64_t off, const std::string& bytes) {
    int fd = ::open(path.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(off)) == static_cast<ssize_t>(bytes.size()));
    ::close(fd);
}

}  // namespace

TEST_CASE("lease slots round-trip, and a blank, damaged or foreign slot is named", "[unit][lease]") {
    lease_slot s{1, lease_flag_holding, 42, "beta"};
    auto b = encoded(s);
    std::string why;
    auto d = decode_lease_slot(b, why);
    REQUIRE(d);
    CHECK(*d == s);

    std::array<std::byte, lease_slot_size> zeros{};
    CHECK_FALSE(decode_lease_slot(zeros, why));
    CHECK(why == "blank");

    auto flipped = b;
    flipped[17] ^= std::byte{1};  // in the counter
    CHECK_FALSE(decode_lease_slot(flipped, why));
    CHECK_THAT(why, Catch::Contains("bad checksum"));

    auto foreign = b;
    foreign[0] = std::byte{'X'};
    CHECK_FALSE(decode_lease_slot(foreign, why));
    CHECK_THAT(why, Catch::Contains("wrong magic"));

    CHECK_FALSE(decode_lease_slot(std::span(b).first(100), why));
    CHECK_FALSE(encode_lease_slot(b, lease_slot{0, 0, 1, std::string(64, 'n')}));  // no room for the name
}

TEST_CASE("two lease keepers on one device see each other's slots, the holding flag and a stop", "[kernel][lease]") {
    volume_file dev(mib, false);
    turns ta, tb;
    auto a = std::make_unique<lease_keeper>(opts(dev.path, node_role::primary), ta.sink());
    auto b = std::make_unique<lease_keeper>(opts(dev.path, node_role::secondary), tb.sink());
    a->start();
    b->start();

    auto seen = ta.next([](const lease_info& v) { return v.ok && v.peer_node == "beta"; });
    REQUIRE(seen);
    CHECK(seen->peer_changed);
    CHECK_FALSE(seen->peer_holding);
    CHECK(tb.next([](const lease_info& v) { return v.ok && v.peer_node == "alpha"; }));

    // beta takes the lease: its own turn says so at once, alpha's next turn sees it.
    auto mine = write_now(*b, true);
    REQUIRE(mine.ok);
    CHECK(mine.holding);
    CHECK(mine.wants_holding);
    // The watchdog counts from the write's start: the peer may read it from then on.
    CHECK(mine.renew_started != tandem::steady_time{});
    CHECK(mine.renew_started <= mine.renewed);
    CHECK(ta.next([](const lease_info& v) { return v.peer_holding; }));

    // beta's tandemd goes: alpha sees the same counter and change time turn after turn.
    auto last = ta.next([](const lease_info& v) { return v.ok; });
    REQUIRE(last);
    b.reset();
    auto after_stop = ta.next([](const lease_info& v) { return v.ok; });  // may still see beta's last write
    REQUIRE(after_stop);
    for (int i = 0; i < 3; ++i) {
        auto v = ta.next([](const lease_info& t) { return t.ok; });
        REQUIRE(v);
        CHECK(v->peer_counter == after_stop->peer_counter);
        CHECK(v->peer_changed == after_stop->peer_changed);
        CHECK(v->peer_holding);  // what it last wrote: a crashed holder still "holds"
    }

    // A restarted beta goes on from its counter, and its first write says it holds nothing.
    b = std::make_unique<lease_keeper>(opts(dev.path, node_role::secondary), tb.sink());
    b->start();
    auto back = ta.next([&](const lease_info& v) { return v.peer_counter > after_stop->peer_counter; });
    REQUIRE(back);
    CHECK_FALSE(back->peer_holding);
    CHECK(back->peer_changed > after_stop->peer_changed);
}

TEST_CASE("a lease device that is missing, too small or holds other data is refused, and left unwritten",
          "[kernel][lease]") {
    auto refused = [](const std::string& dev) -> std::string {
        try {
            lease_keeper k(opts(dev, node_role::primary), [](const lease_info&) {});
        } catch (const std::runtime_error& e) {
            return e.what();
        }
        return "";
    };
    auto missing = refused("/var/tmp/tandem-no-such-lease");
    CHECK_THAT(missing, Catch::Contains("/var/tmp/tandem-no-such-lease") && Catch::Contains("cannot be opened"));

    volume_file small(mib, false);
    REQUIRE(::truncate(small.path.c_str(), 4096) == 0);
    CHECK_THAT(refused(small.path), Catch::Contains("is 4096 bytes; the lease needs at least 8192"));

    volume_file data(mib, true);  // a data disk named by mistake
    auto before = data.digest();
    CHECK_THAT(refused(data.path), Catch::Contains("hold something other than zeros") && Catch::Contains("dd if=/dev/zero"));
    CHECK(data.digest() == before);

    // Only the peer's slot holds something else: still refused, ours untouched.
    volume_file half(mib, false);
    write_at(half.path, lease_slot_size, "filesystem superblock");
    CHECK_THAT(refused(half.path), Catch::Contains("hold something other than zeros"));
    std::array<char, lease_slot_size> own{};
    int fd = ::open(half.path.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pread(fd, own.data(), own.size(), 0) == static_cast<ssize_t>(own.size()));
    ::close(fd);
    CHECK(std::all_of(own.begin(), own.end(), [](char c) { return c == 0; }));
}
