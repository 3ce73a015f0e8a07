// Logging: one sink, levels, and a `[rank r/N]` prefix once a process knows its rank.
//
// Logs go to stderr; stdout is for program output only. `log_info0` and friends print on rank 0
// only (llm.c's printf0). The sink's state (level, rank) is set once in main by the CLI; it is the
// one piece of process-wide state in base/, guarded by an atomic so threads may log freely.
#pragma once

#include <string>

#include <fmt/format.h>

namespace zs {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

const char* to_string(LogLevel level);

// Process-wide log settings, set from main (and by the launcher's environment: RANK / WORLD_SIZE).
void set_log_level(LogLevel level);
LogLevel log_level();
void set_log_rank(int rank, int world_size);
int log_rank();

void log_write(LogLevel level, const std::string& msg, bool rank0_only);

template <class... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... args) {
    if (log_level() <= LogLevel::debug) {
        log_write(LogLevel::debug, fmt::format(f, std::forward<Args>(args)...), false);
    }
}
template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
    if (log_level() <= LogLevel::info) {
        log_write(LogLevel::info, fmt::format(f, std::forward<Args>(args)...), false);
    }
}
template <class... Args>
void log_info0(fmt::format_string<Args...> f, Args&&... args) {
    if (log_level() <= LogLevel::info) {
        log_write(LogLevel::info, fmt::format(f, std::forward<Args>(args)...), true);
    }
}
template <class... Args>
void log_warn(fmt::format_string<Args...> f, Args&&... args) {
    if (log_level() <= LogLevel::warn) {
        log_write(LogLevel::warn, fmt::format(f, std::forward<Args>(args)...), false);
    }
}
template <class... Args>
void log_error(fmt::format_string<Args...> f, Args&&... args) {
    log_write(LogLevel::error, fmt::format(f, std::forward<Args>(args)...), false);
}

}  // namespace zs
