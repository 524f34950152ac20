// tests: lets Catch2 print a result<T> in a failed CHECK — "value", or the error's category, name and message.
#pragma once

#include "tandem/base/result.hpp"

#include <catch2/catch.hpp>

#include <string>

namespace Catch {

// boost::system::result streams its value with operator<<, which most payload
// structs do not have; a failed check should still say which error came back.
template <class T>
struct StringMaker<boost::system::result<T, boost::system::error_code>> {
    static std::string convert(const boost::system::result<T, boost::system::error_code>& r) {
        if (r) return "{value}";
        return "{error " + std::string(r.error().category().name()) + ":" + std::to_string(r.error().value()) + " \"" +
               r.error().message() + "\"}";
    }
};

}  // namespace Catch
