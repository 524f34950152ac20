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

namespace {

// Whether the process behind `pidfd` exits before `deadline`: a pidfd turns
// readable when its process exits, whoever its parent is.
asio::awaitable<bool> exits_by(const unique_fd& pidfd, std::chrono::steady_clock::time_point deadline) {
    auto ex = co_await asio::this_coro::executor;
    asio::posix::stream_descriptor d(ex, ::dup(pidfd.get()));
    asio::steady_timer t(ex, deadline);
    auto which = co_await (d.async_wait(asio::posix::stream_descriptor::wait_read, asio::as_tuple(asio::use_awaitable)) ||
                           t.async_wait(asio::as_tuple(asio::use_awaitable)));
    co_return which.index() == 0;
}

int send_signal(const unique_fd& pidfd, int sig) {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0));
}

}  // namespace

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
    if (!pidfd) {
        r.error = std::string("cannot watch the child (pidfd_open: ") + std::strerror(errno) + ")";
        r.timed_out = true;
        ::kill(-pid, SIGKILL);
    } else if (!co_await exits_by(pidfd, std::chrono::steady_clock::now() + timeout)) {
        r.timed_out = true;
        ::kill(-pid, SIGKILL);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    co_return r;
}

asio::awaitable<std::vector<stopped_process>> stop_processes(std::vector<pid_t> pids, std::chrono::milliseconds grace) {
    std::vector<stopped_process> out;
    std::vector<unique_fd> fds;
    for (pid_t pid : pids) {
        unique_fd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
        stopped_process p{pid, fd ? stopped_process::how::running : stopped_process::how::gone};
        // Already gone, or (with grace 0) killed at once.
        if (fd && send_signal(fd, grace.count() > 0 ? SIGTERM : SIGKILL) != 0) p.end = stopped_process::how::gone;
        out.push_back(p);
        fds.push_back(std::move(fd));
    }
    // One deadline for all: each is awaited for what remains of it.
    auto deadline = std::chrono::steady_clock::now() + grace;
    for (std::size_t i = 0; i < out.size(); ++i)
        if (out[i].end == stopped_process::how::running && grace.count() > 0 && co_await exits_by(fds[i], deadline))
            out[i].end = stopped_process::how::terminated;
    // A SIGKILL ends a process unless it sleeps uninterruptibly in the kernel.
    deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (std::size_t i = 0; i < out.size(); ++i) {
        if (out[i].end != stopped_process::how::running) continue;
        if (grace.count() > 0) (void)send_signal(fds[i], SIGKILL);
        if (co_await exits_by(fds[i], deadline)) out[i].end = stopped_process::how::killed;
    }
    co_return out;
}

}  // namespace tandem::agent
