#include "core/memory.h"

#include <fmt/format.h>

namespace zs::core {

const char* to_string(MemCategory c) {
    switch (c) {
        case MemCategory::params:
            return "params";
        case MemCategory::grads:
            return "grads";
        case MemCategory::optimizer:
            return "optimizer";
        case MemCategory::activations:
            return "activations";
        case MemCategory::kv_cache:
            return "kv_cache";
        case MemCategory::buffers:
            return "buffers";
    }
    return "?";
}

namespace {
void atomic_max(std::atomic<int64_t>& a, int64_t v) {
    int64_t cur = a.load(std::memory_order_relaxed);
    while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
}
}  // namespace

void MemoryTracker::on_alloc(MemCategory c, int64_t bytes) {
    int i = static_cast<int>(c);
    int64_t now = current_[i].fetch_add(bytes, std::memory_order_relaxed) + bytes;
    atomic_max(peak_[i], now);
    int64_t tot = total_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    atomic_max(peak_total_, tot);
    n_allocs_.fetch_add(1, std::memory_order_relaxed);
}

void MemoryTracker::on_free(MemCategory c, int64_t bytes) {
    current_[static_cast<int>(c)].fetch_sub(bytes, std::memory_order_relaxed);
    total_.fetch_sub(bytes, std::memory_order_relaxed);
}

MemStats MemoryTracker::stats() const {
    MemStats s;
    for (int i = 0; i < kNumMemCategories; ++i) {
        s.current[i] = current_[i].load();
        s.peak[i] = peak_[i].load();
    }
    s.current_total = total_.load();
    s.peak_total = peak_total_.load();
    s.n_allocs = n_allocs_.load();
    return s;
}

void MemoryTracker::reset_peak() {
    for (int i = 0; i < kNumMemCategories; ++i) peak_[i].store(current_[i].load());
    peak_total_.store(total_.load());
}

std::string format_bytes(int64_t bytes) {
    double b = static_cast<double>(bytes);
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while ((b >= 1024.0 || b <= -1024.0) && u < 4) {
        b /= 1024.0;
        ++u;
    }
    return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", b, units[u]);
}

std::string MemStats::report() const {
    std::string s;
    for (int i = 0; i < kNumMemCategories; ++i) {
        s += fmt::format("{:<12} {:>12} (peak {})\n", to_string(static_cast<MemCategory>(i)),
                         format_bytes(current[i]), format_bytes(peak[i]));
    }
    s += fmt::format("{:<12} {:>12} (peak {})\n", "total", format_bytes(current_total),
                     format_bytes(peak_total));
    return s;
}

}  // namespace zs::core
