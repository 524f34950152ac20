// base: unique_ptr for objects of C libraries, with null-safe deleters.
#pragma once

#include <memory>

namespace tandem {

template <auto FreeFn>
struct c_deleter {
    template <class T>
    void operator()(T* p) const noexcept {
        if (p) FreeFn(p);
    }
};

// c_ptr<nl_sock, nl_socket_free> owns an nl_sock and frees it with nl_socket_free.
template <class T, auto FreeFn>
using c_ptr = std::unique_ptr<T, c_deleter<FreeFn>>;

}  // namespace tandem
