// agent: child processes (service hooks, health check commands) awaited through a pidfd.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
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

// A process stop_processes() was asked to end, and how it ended.
struct stopped_process {
    pid_t pid = -1;
    enum class how : std::uint8_t { gone, terminated, killed, running } end = how::running;
    // gone: it had exited before the signal; running: it survived SIGKILL (it
    // sleeps uninterruptibly in the kernel) for 5 s.
};

// Ends processes this daemon did not start: SIGTERM, then SIGKILL to those still
// running after `grace` (at once when `grace` is 0), each through a pidfd so that no
// signal reaches a recycled PID, their exits awaited inside the io_context.
boost::asio::awaitable<std::vector<stopped_process>> stop_processes(std::vector<pid_t> pids,
                                                                     std::chrono::milliseconds grace);

}  // namespace tandem::agent
