// agent: child processes (service hooks, health check commands) awaited through a pidfd.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace tandem::agent {

struct process_result {
    bool started = false;
    bool timed_out = false;
    int exit_code = -1;  // 128+signal when killed by one
    std::string error;   // why it did not start
    [[nodiscard]] bool ok() const { return started && !timed_out && exit_code == 0; }
    [[nodiscard]] std::string describe() const;
};

// Runs `/bin/sh -c command` with extra environment variables; its output goes
// to our stderr (the journal). Waits on a pidfd inside the io_context; on
// timeout the whole process group is killed.
boost::asio::awaitable<process_result> run_command(std::string command,
                                                   std::vector<std::pair<std::string, std::string>> env,
                                                   std::chrono::milliseconds timeout);

}  // namespace tandem::agent
