// Replaces the global operator new/delete family (malloc/free based) for the io test binary and
// records the largest single request while an AllocProbe is alive. Aligned variants are left to
// the runtime: nothing under test over-aligns.
#include "io/alloc_probe_test.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {

std::atomic<size_t> g_max_request{0};  // test-only instrumentation, reset by each probe
std::atomic<int> g_active{0};

void note(size_t n) {
    if (g_active.load(std::memory_order_relaxed) == 0) return;
    size_t cur = g_max_request.load(std::memory_order_relaxed);
    while (n > cur && !g_max_request.compare_exchange_weak(cur, n)) {
    }
}

void* allocate(size_t n) {
    note(n);
    void* p = std::malloc(n == 0 ? 1 : n);
    if (p == nullptr) throw std::bad_alloc();
    return p;
}

void* allocate_nothrow(size_t n) noexcept {
    note(n);
    return std::malloc(n == 0 ? 1 : n);
}

}  // namespace

void* operator new(size_t n) { return allocate(n); }
void* operator new[](size_t n) { return allocate(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return allocate_nothrow(n); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return allocate_nothrow(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace zs::test {

AllocProbe::AllocProbe() {
    g_max_request.store(0);
    g_active.fetch_add(1);
}

AllocProbe::~AllocProbe() { g_active.fetch_sub(1); }

size_t AllocProbe::max_bytes() const { return g_max_request.load(); }

}  // namespace zs::test
