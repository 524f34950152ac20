// netlink: error values of this component — libnl's -NLE_* codes and operator-facing parse errors.
#pragma once

#include "tandem/base/result.hpp"

#include <boost/assert/source_location.hpp>
#include <boost/system/error_category.hpp>

#include <ostream>
#include <string>

namespace tandem::netlink {

// libnl reports its own NLE_* numbers, not errno (EEXIST arrives as NLE_EXIST),
// so they get their own category; message() is libnl's nl_geterror() text.
[[nodiscard]] const boost::system::error_category& libnl_category() noexcept;

// The error for a libnl return code; accepts -NLE_X (what libnl returns) and NLE_X.
[[nodiscard]] error_code make_error(int nle_rc) noexcept;

// Converts a libnl return (negative -NLE_* on failure) into a result.
[[nodiscard]] inline result<int> check_nl(int rc) noexcept {
    if (rc < 0) return make_error(rc);
    return rc;
}

// A configuration mistake, worded for the operator: it names the bad value and
// says what is allowed. Configuration is read at start-up, where value() may throw.
struct parse_error {
    std::string message;
};

inline std::ostream& operator<<(std::ostream& os, const parse_error& e) { return os << e.message; }

// Called by result<T, parse_error>::value() on an error: throws std::invalid_argument(message).
[[noreturn]] void throw_exception_from_error(const parse_error& e, const boost::source_location& loc);

template <class T>
using parse_result = boost::system::result<T, parse_error>;

}  // namespace tandem::netlink
