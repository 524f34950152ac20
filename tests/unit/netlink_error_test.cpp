// tests: the "libnl" error category and parse errors of the netlink component.
#include "tandem/netlink/error.hpp"

#include <catch2/catch.hpp>

#include <netlink/errno.h>

#include <stdexcept>

using namespace tandem::netlink;

TEST_CASE("libnl codes become errors with libnl's text", "[unit][netlink]") {
    auto e = make_error(-NLE_EXIST);
    CHECK(e.category().name() == std::string("libnl"));
    CHECK(e.value() == NLE_EXIST);
    CHECK(e.message() == "Object exists");
    CHECK(make_error(NLE_EXIST) == e);  // positive codes mean the same
    CHECK(make_error(-NLE_NODEV).message() == "No such device");
    CHECK(&make_error(-NLE_NOADDR).category() == &libnl_category());
}

TEST_CASE("check_nl keeps values and turns negative returns into errors", "[unit][netlink]") {
    auto ok = check_nl(7);
    REQUIRE(ok);
    CHECK(*ok == 7);
    auto bad = check_nl(-NLE_NOMEM);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == make_error(NLE_NOMEM));
    CHECK(bad.error().message() == "Out of memory");
}

TEST_CASE("a parse error thrown by value() carries its message", "[unit][netlink]") {
    parse_result<int> r = parse_error{"prefix length 'x' is bad"};
    CHECK_THROWS_MATCHES(r.value(), std::invalid_argument, Catch::Message("prefix length 'x' is bad"));
}
