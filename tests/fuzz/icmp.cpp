// fuzz: the ICMP echo reply parser of the connectivity test, for both families.
#include "tandem/agent/icmp.hpp"

#include <sys/socket.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto in = std::span(reinterpret_cast<const std::byte*>(data), size);
    (void)tandem::agent::parse_echo_reply(in, AF_INET, 0x1234);
    (void)tandem::agent::parse_echo_reply(in, AF_INET6, 0x1234);
    return 0;
}
