// agent: the seeds' network connectivity test — ICMP echo to the configured targets.
#pragma once

#include "tandem/agent/config.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tandem::agent {

struct connectivity_result {
    bool ok = false;
    std::string detail;  // "10.77.0.10 answered in 0.2 ms; 10.77.0.11 did not answer"
};

// Pings every target (two echoes, the second half-way through `timeout`, so one
// lost packet does not fail the test) and applies the rule: any or all must answer.
// Echoes leave from `source` (the node's own address) where the family matches:
// the test is about this node, and a reply addressed to the VIP would follow the
// VIP when it moves (with IPv6 the kernel may well pick the VIP as the source).
boost::asio::awaitable<connectivity_result> test_connectivity(std::vector<ip_address> targets,
                                                              std::chrono::milliseconds timeout,
                                                              connectivity_rule rule, ip_address source);

// Pure ICMP echo request (RFC 792 type 8 / RFC 4443 type 128). For ICMPv6 the
// kernel fills the checksum on raw sockets (RFC 3542 §3.1), so it is left zero.
std::size_t build_echo_request(std::span<std::byte> out, int family, std::uint16_t id, std::uint16_t seq);
// Returns the echo reply's sequence number if `packet` is a reply with our id;
// IPv4 raw sockets deliver the IP header first, IPv6 ones do not.
[[nodiscard]] int parse_echo_reply(std::span<const std::byte> packet, int family, std::uint16_t id);

}  // namespace tandem::agent
