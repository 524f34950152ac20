// tests: base vocabulary — durations, big-endian codec helpers, HMAC-SHA256 vectors.
#include "tandem/base/duration.hpp"
#include "tandem/base/bytes.hpp"
#include "tandem/base/hmac.hpp"
#include "tandem/base/unique_fd.hpp"

#include "support/util.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>

#include <string>
#include <vector>

using namespace tandem;
using tandem::test::hex;
using namespace std::chrono_literals;

namespace {
std::vector<std::byte> repeat(std::uint8_t v, std::size_t n) { return std::vector<std::byte>(n, std::byte{v}); }
}  // namespace

TEST_CASE("durations accept ms, s and min and nothing else", "[unit][base]") {
    CHECK(parse_duration("50ms") == 50ms);
    CHECK(parse_duration("10s") == 10s);
    CHECK(parse_duration("2min") == 2min);
    CHECK(parse_duration("3m") == 3min);
    CHECK_FALSE(parse_duration(""));
    CHECK_FALSE(parse_duration("10"));
    CHECK_FALSE(parse_duration("s"));
    CHECK_FALSE(parse_duration("10 s"));
    CHECK_FALSE(parse_duration("-5s"));
    CHECK_FALSE(parse_duration("1.5s"));
    CHECK_FALSE(parse_duration("10h"));
    CHECK_FALSE(parse_duration("99999999999999999999ms"));
    CHECK(format_duration(100ms) == "100ms");
    CHECK(format_duration(10s) == "10s");
    CHECK(format_duration(120s) == "2min");
}

TEST_CASE("big-endian stores and loads are network order", "[unit][base]") {
    std::array<std::byte, 8> buf{};
    store_be<std::uint32_t>(buf, 0x01020304u);
    CHECK(hex(std::span(buf).first(4)) == "01020304");
    CHECK(load_be<std::uint32_t>(buf) == 0x01020304u);
    store_be<std::uint64_t>(buf, 0x1122334455667788ull);
    CHECK(hex(buf) == "1122334455667788");
    CHECK(load_be<std::uint64_t>(buf) == 0x1122334455667788ull);
}

// RFC 4231 test cases 1, 2 and 6 (key longer than the block size).
TEST_CASE("HMAC-SHA256 matches RFC 4231", "[unit][base]") {
    auto k1 = repeat(0x0b, 20);
    CHECK(hex(hmac_sha256(k1, as_bytes("Hi There"))) ==
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    CHECK(hex(hmac_sha256(as_bytes("Jefe"), as_bytes("what do ya want for nothing?"))) ==
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    auto k6 = repeat(0xaa, 131);
    CHECK(hex(hmac_sha256(k6, as_bytes("Test Using Larger Than Block-Size Key - Hash Key First"))) ==
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST_CASE("constant-time compare", "[unit][base]") {
    auto a = repeat(1, 32), b = repeat(1, 32), c = repeat(1, 31);
    CHECK(equal_constant_time(a, b));
    b[31] = std::byte{2};
    CHECK_FALSE(equal_constant_time(a, b));
    CHECK_FALSE(equal_constant_time(a, c));
}

TEST_CASE("unique_fd closes once and moves ownership", "[unit][base]") {
    int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(raw >= 0);
    unique_fd a(raw);
    unique_fd b(std::move(a));
    CHECK_FALSE(a);
    CHECK(b.get() == raw);
    b.reset();
    CHECK(::fcntl(raw, F_GETFD) == -1);
}
