// base: structured log lines to stderr for journald, each with a stable message id.
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace tandem::log {

// syslog priorities; journald reads the "<N>" prefix of each stderr line.
enum class level { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

void set_min_level(level l) noexcept;
void set_tag(std::string_view tag);  // e.g. the node name, shown in every line

// One line: "<6>[msg_id] text". Message ids are stable dotted names
// ("state.changed", "heartbeat.dropped") that operators and tests grep for.
void write(level l, std::string_view msg_id, std::string_view text) noexcept;

template <class... Args>
void error(std::string_view id, fmt::format_string<Args...> f, Args&&... a) {
    write(level::error, id, fmt::format(f, std::forward<Args>(a)...));
}
template <class... Args>
void warning(std::string_view id, fmt::format_string<Args...> f, Args&&... a) {
    write(level::warning, id, fmt::format(f, std::forward<Args>(a)...));
}
template <class... Args>
void notice(std::string_view id, fmt::format_string<Args...> f, Args&&... a) {
    write(level::notice, id, fmt::format(f, std::forward<Args>(a)...));
}
template <class... Args>
void info(std::string_view id, fmt::format_string<Args...> f, Args&&... a) {
    write(level::info, id, fmt::format(f, std::forward<Args>(a)...));
}
template <class... Args>
void debug(std::string_view id, fmt::format_string<Args...> f, Args&&... a) {
    write(level::debug, id, fmt::format(f, std::forward<Args>(a)...));
}

}  // namespace tandem::log
