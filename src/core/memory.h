// Per-device memory accounting by category: current and peak bytes.
//
// Every Buffer reports to its device's MemoryTracker, so `peak(MemCategory::optimizer)` is exactly
// the largest number of optimizer-state bytes that were live at once on that device. ZeRO's memory
// claims (and `zerospeed estimate`) are checked against these numbers. Thread-safe (atomics).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace zs::core {

enum class MemCategory : unsigned char { params, grads, optimizer, activations, kv_cache, buffers };
inline constexpr int kNumMemCategories = 6;

const char* to_string(MemCategory c);

struct MemStats {
    std::array<int64_t, kNumMemCategories> current{};
    std::array<int64_t, kNumMemCategories> peak{};  // per-category peaks (need not coincide)
    int64_t current_total = 0;
    int64_t peak_total = 0;  // peak of the sum over categories
    int64_t n_allocs = 0;    // allocations ever made

    int64_t current_of(MemCategory c) const { return current[static_cast<int>(c)]; }
    int64_t peak_of(MemCategory c) const { return peak[static_cast<int>(c)]; }
    // One line per category: "params 12.0 MiB (peak 12.0 MiB)".
    std::string report() const;
};

class MemoryTracker {
public:
    MemoryTracker() = default;
    MemoryTracker(const MemoryTracker&) = delete;
    MemoryTracker& operator=(const MemoryTracker&) = delete;

    void on_alloc(MemCategory c, int64_t bytes);
    void on_free(MemCategory c, int64_t bytes);
    MemStats stats() const;
    // Start a new peak window: peaks become the current values.
    void reset_peak();

private:
    std::array<std::atomic<int64_t>, kNumMemCategories> current_{};
    std::array<std::atomic<int64_t>, kNumMemCategories> peak_{};
    std::atomic<int64_t> total_{0};
    std::atomic<int64_t> peak_total_{0};
    std::atomic<int64_t> n_allocs_{0};
};

// "1.50 GiB", "12.0 MiB", "512 B"
std::string format_bytes(int64_t bytes);

}  // namespace zs::core
