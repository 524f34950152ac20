// base: the one logger; writes whole lines with a single write(2) so lines from
// concurrent processes (hooks, the daemon) never interleave mid-line.
#include "tandem/base/log.hpp"

#include <unistd.h>

#include <atomic>
#include <string>

namespace tandem::log {

namespace {
std::atomic<int> g_min_level{static_cast<int>(level::info)};
std::string g_tag;  // set once at start-up, before any other thread exists
}  // namespace

void set_min_level(level l) noexcept { g_min_level = static_cast<int>(l); }
void set_tag(std::string_view tag) { g_tag = tag; }

void write(level l, std::string_view msg_id, std::string_view text) noexcept {
    if (static_cast<int>(l) > g_min_level.load(std::memory_order_relaxed)) return;
    try {
        std::string line = fmt::format("<{}>{}{}[{}] {}\n", static_cast<int>(l), g_tag, g_tag.empty() ? "" : ": ",
                                       msg_id, text);
        const char* p = line.data();
        std::size_t left = line.size();
        while (left > 0) {
            ssize_t n = ::write(STDERR_FILENO, p, left);
            if (n <= 0) break;
            p += n;
            left -= static_cast<std::size_t>(n);
        }
    } catch (...) {
        // Out of memory while logging: drop the line rather than the daemon.
    }
}

}  // namespace tandem::log
