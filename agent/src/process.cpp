// agent: spawning hooks and awaiting their exit without blocking the event loop.
#include "tandem/agent/process.hpp"

#include "tandem/base/unique_fd.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include <cstring>

extern char** environ;

namespace tandem::agent {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

std::string process_result::describe() const {
    if (!started) return "did not start: " + error;
    if (!error.empty()) return error;  // e.g. it could not be watched, so it was killed
    if (timed_out) return "timed out and was killed";
    if (exit_code > 128) return fmt::format("killed by signal {}", exit_code - 128);
    return fmt::format("exited {}", exit_code);
}

asio::awaitable<process_result> run_command(std::string command,
                                            std::vector<std::pair<std::string, std::string>> env,
                                            std::chrono::milliseconds timeout) {
    process_result r;
    std::vector<std::string> envs;
    for (char** e = environ; *e; ++e) envs.emplace_back(*e);
    for (auto& [k, v] : env) envs.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : envs) envp.push_back(s.data());
    envp.push_back(nullptr);
    const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};

    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // Own process group, so a timeout kills the hook and everything it started;
    // default signal mask and dispositions, whatever the daemon blocks.
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, "/bin/sh", nullptr, &attr, const_cast<char* const*>(argv), envp.data());
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        r.error = std::strerror(rc);
        co_return r;
    }
    r.started = true;

    // tandemd checks pidfd_open at start-up; should it fail here all the same,
    // the hook is killed rather than waited for without a timeout.
    unique_fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    auto ex = co_await asio::this_coro::executor;
    if (!pidfd) {
        r.error = std::string("cannot watch the child (pidfd_open: ") + std::strerror(errno) + ")";
        r.timed_out = true;
        ::kill(-pid, SIGKILL);
    } else {
        asio::posix::stream_descriptor d(ex, pidfd.release());
        asio::steady_timer t(ex, timeout);
        auto which = co_await (d.async_wait(asio::posix::stream_descriptor::wait_read, asio::as_tuple(asio::use_awaitable)) ||
                               t.async_wait(asio::as_tuple(asio::use_awaitable)));
        if (which.index() == 1) {
            r.timed_out = true;
            ::kill(-pid, SIGKILL);
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    co_return r;
}

}  // namespace tandem::agent
