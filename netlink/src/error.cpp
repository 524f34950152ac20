// netlink: the "libnl" error category and parse errors.
#include "tandem/netlink/error.hpp"

#include <netlink/errno.h>

#include <cstdlib>
#include <stdexcept>

namespace tandem::netlink {

namespace {
// Boost's error_category has a protected non-virtual destructor on purpose
// (categories are never deleted through a base pointer); GCC warns anyway.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class libnl_error_category final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "libnl"; }
    std::string message(int ev) const override { return nl_geterror(ev); }
};
#pragma GCC diagnostic pop
}  // namespace

const boost::system::error_category& libnl_category() noexcept {
    static const libnl_error_category category;
    return category;
}

error_code make_error(int nle_rc) noexcept { return error_code(std::abs(nle_rc), libnl_category()); }

void throw_exception_from_error(const parse_error& e, const boost::source_location&) {
    throw std::invalid_argument(e.message);
}

}  // namespace tandem::netlink
