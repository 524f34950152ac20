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

}  // namespace tandem::agent
