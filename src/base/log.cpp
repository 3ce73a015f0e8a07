#include "base/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace zs {
namespace {

// NOTE(zs): the log sink is the single process-wide mutable state in base/. Everything else is
// built in main and passed down; logging from any depth without plumbing is worth this exception.
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};
std::atomic<int> g_rank{-1};
std::atomic<int> g_world{1};
std::mutex g_write_mu;

}  // namespace

const char* to_string(LogLevel level) {
    switch (level) {
        case LogLevel::debug:
            return "debug";
        case LogLevel::info:
            return "info";
        case LogLevel::warn:
            return "warn";
        case LogLevel::error:
            return "error";
    }
    return "?";
}

void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }
void set_log_rank(int rank, int world_size) {
    g_rank.store(rank);
    g_world.store(world_size);
}
int log_rank() { return g_rank.load(); }

void log_write(LogLevel level, const std::string& msg, bool rank0_only) {
    int rank = g_rank.load(std::memory_order_relaxed);
    if (rank0_only && rank > 0) return;
    std::string prefix;
    if (rank >= 0 && g_world.load() > 1)
        prefix = fmt::format("[rank {}/{}] ", rank, g_world.load());
    const char* tag = level == LogLevel::warn    ? "warning: "
                      : level == LogLevel::error ? "error: "
                      : level == LogLevel::debug ? "debug: "
                                                 : "";
    std::lock_guard<std::mutex> lock(g_write_mu);
    std::fprintf(stderr, "%s%s%s\n", prefix.c_str(), tag, msg.c_str());
    std::fflush(stderr);
}

}  // namespace zs
