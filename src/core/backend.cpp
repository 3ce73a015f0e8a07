#include "core/backend.h"

#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>

#include <malloc.h>
#include <sys/mman.h>

#include "base/error.h"
#include "base/log.h"
#include "core/host_memory.h"

namespace zs::core {

const char* to_string(DeviceType t) {
    switch (t) {
        case DeviceType::cpu:
            return "cpu";
        case DeviceType::cuda:
            return "cuda";
    }
    return "?";
}

std::string Device::str() const {
    return type == DeviceType::cpu ? std::string("cpu")
                                   : std::string(to_string(type)) + ":" + std::to_string(index);
}

namespace {

// Freed large blocks kept for the next allocation of the same size (return_large_host_blocks).
struct KeptBlocks {
    struct Block {
        void* p = nullptr;
        size_t size = 0, align = 0;
        bool pinned = false;
    };
    std::mutex mu;
    std::atomic<size_t> threshold{std::numeric_limits<size_t>::max()};
    size_t limit = 0, held = 0;
    int64_t reuses = 0;
    std::deque<Block> blocks;  // oldest first
};

KeptBlocks& kept() {
    static KeptBlocks k;
    return k;
}

void release_block(void* p, size_t size, bool pinned) {
    if (pinned) munlock(p, size);
    std::free(p);
}

}  // namespace

void return_large_host_blocks(size_t threshold, size_t keep_bytes) {
    // An explicit threshold also turns off glibc's dynamic one.
    mallopt(M_MMAP_MAX, 1 << 20);
    mallopt(M_MMAP_THRESHOLD, static_cast<int>(threshold));
    mallopt(M_TRIM_THRESHOLD, static_cast<int>(threshold));
    KeptBlocks& k = kept();
    std::lock_guard<std::mutex> lock(k.mu);
    k.threshold.store(keep_bytes > 0 ? threshold : std::numeric_limits<size_t>::max());
    k.limit = keep_bytes;
    while (k.held > k.limit) {
        const KeptBlocks::Block b = k.blocks.front();
        k.blocks.pop_front();
        k.held -= b.size;
        release_block(b.p, b.size, b.pinned);
    }
}

size_t kept_host_bytes() {
    KeptBlocks& k = kept();
    std::lock_guard<std::mutex> lock(k.mu);
    return k.held;
}

int64_t kept_host_reuses() {
    KeptBlocks& k = kept();
    std::lock_guard<std::mutex> lock(k.mu);
    return k.reuses;
}

namespace {

constexpr size_t kAlign = 64;
constexpr size_t kHugePage = size_t{2} << 20;

class CpuBackend final : public Backend {
public:
    CpuBackend() {
        // NOTE(zs): training frees and re-allocates the same large activation buffers every
        // step. glibc serves blocks above 32 MiB with mmap and returns them with munmap, so each
        // step would page-fault its activations in again (measured: a third of a step in the
        // kernel). Serving everything from the heap and never trimming it keeps those pages.
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
    }
    DeviceType type() const override { return DeviceType::cpu; }
    const char* name() const override { return "cpu"; }

    void* allocate(size_t bytes, const AllocOptions& opts) override {
        size_t align = opts.huge_pages && bytes >= kHugePage ? kHugePage : kAlign;
        size_t size = (bytes + align - 1) / align * align;
        if (size == 0) size = align;
        if (void* p = take_kept(size, align, opts.pinned)) return p;
        void* p = std::aligned_alloc(align, size);
        if (p == nullptr) {
            ZS_THROW(Error, "out of host memory: could not allocate {} bytes",
                     static_cast<int64_t>(bytes));
        }
        if (align == kHugePage) madvise(p, size, MADV_HUGEPAGE);  // a hint; failure is harmless
        if (opts.pinned && mlock(p, size) != 0) {
            log_debug("mlock of {} bytes failed; buffer stays pageable", size);
        }
        return p;
    }

    void deallocate(void* p, size_t bytes, const AllocOptions& opts) override {
        const size_t align = opts.huge_pages && bytes >= kHugePage ? kHugePage : kAlign;
        size_t size = (bytes + align - 1) / align * align;
        if (size == 0) size = align;
        if (keep(p, size, align, opts.pinned)) return;
        release_block(p, size, opts.pinned);
    }

    // A kept block of exactly this size, alignment and pinning, or null.
    static void* take_kept(size_t size, size_t align, bool pinned) {
        KeptBlocks& k = kept();
        if (size < k.threshold.load(std::memory_order_relaxed)) return nullptr;
        std::lock_guard<std::mutex> lock(k.mu);
        for (auto it = k.blocks.begin(); it != k.blocks.end(); ++it) {
            if (it->size == size && it->align == align && it->pinned == pinned) {
                void* p = it->p;
                k.held -= size;
                k.blocks.erase(it);
                ++k.reuses;
                return p;
            }
        }
        return nullptr;
    }

    // Keep a freed block (return_large_host_blocks' keep_bytes), returning the oldest kept ones
    // to the system when over the limit; false when it is not kept.
    static bool keep(void* p, size_t size, size_t align, bool pinned) {
        KeptBlocks& k = kept();
        if (size < k.threshold.load(std::memory_order_relaxed)) return false;
        std::lock_guard<std::mutex> lock(k.mu);
        if (size > k.limit) return false;
        while (k.held + size > k.limit) {
            const KeptBlocks::Block b = k.blocks.front();
            k.blocks.pop_front();
            k.held -= b.size;
            release_block(b.p, b.size, b.pinned);
        }
        k.blocks.push_back({p, size, align, pinned});
        k.held += size;
        return true;
    }

    void copy_from_host(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
    void copy_to_host(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
    void copy_within(void* dst, const void* src, size_t n) override { std::memmove(dst, src, n); }
    // Large buffers (gradients zeroed every step) are cleared by every thread: one core's stores
    // reach about half of the machine's write bandwidth.
    void memset_zero(void* dst, size_t n) override {
        constexpr size_t kChunk = size_t{1} << 20;
        if (n < 8 * kChunk) {
            std::memset(dst, 0, n);
            return;
        }
        auto* p = static_cast<char*>(dst);
        const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < chunks; ++i) {
            size_t off = static_cast<size_t>(i) * kChunk;
            std::memset(p + off, 0, std::min(kChunk, n - off));
        }
    }
};

// NOTE(zs): the backend table is process-wide like a device's memory itself. It is written only
// at start-up (register_backend) and read-only afterwards.
struct Registry {
    std::array<std::unique_ptr<Backend>, kNumDeviceTypes> slots;
    Registry() { slots[static_cast<int>(DeviceType::cpu)] = std::make_unique<CpuBackend>(); }
};

Registry& registry() {
    static Registry r;
    return r;
}

}  // namespace

Backend& backend(DeviceType t) {
    auto& slot = registry().slots[static_cast<int>(t)];
    if (!slot) {
        ZS_THROW(NotSupported,
                 "device '{}' is not available: this build or machine has no {} backend",
                 to_string(t), to_string(t));
    }
    return *slot;
}

bool has_backend(DeviceType t) { return registry().slots[static_cast<int>(t)] != nullptr; }

void register_backend(std::unique_ptr<Backend> b) {
    ZS_ASSERT(b != nullptr);
    registry().slots[static_cast<int>(b->type())] = std::move(b);
}

MemStats memory_stats(Device d) { return backend(d).memory().stats(); }

}  // namespace zs::core
