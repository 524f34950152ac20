// base: error values for the data path (boost::system::result) and errno glue.
#pragma once

#include <boost/system/result.hpp>
#include <boost/system/error_code.hpp>

#include <cerrno>
#include <system_error>

namespace tandem {

template <class T>
using result = boost::system::result<T, boost::system::error_code>;

using boost::system::error_code;

// The error of a failed libc call: errno as a system error code.
[[nodiscard]] inline error_code errno_error(int e = errno) noexcept {
    return error_code(e, boost::system::system_category());
}

// Converts a syscall-style return (-1 and errno set) into a result.
[[nodiscard]] inline result<int> check_syscall(int rc) noexcept {
    if (rc < 0) return errno_error();
    return rc;
}

// Converts a kernel-style negative errno return (io_uring, libbpf) into a result.
[[nodiscard]] inline result<int> check_neg_errno(int rc) noexcept {
    if (rc < 0) return errno_error(-rc);
    return rc;
}

}  // namespace tandem
