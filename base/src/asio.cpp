// base: the one translation unit that compiles Boost.Asio (BOOST_ASIO_SEPARATE_COMPILATION),
// so that every other file includes Asio's declarations only and builds faster.
#include <boost/asio/impl/src.hpp>
