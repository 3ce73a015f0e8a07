// STREAM-style bandwidth kernels (McCalpin's copy and triad over float arrays far larger than the
// last-level cache), threaded with OpenMP exactly like our kernels (static split over all threads).
// The benches that report GB/s run these in the same process so the ceiling and the kernel are
// measured on the same machine at the same moment. Bytes count reads + writes (STREAM's rule:
// triad = 3 x 4 bytes per element, no write-allocate traffic counted).
#pragma once

#include <cstdint>
#include <cstdlib>

#include <benchmark/benchmark.h>
#include <omp.h>

namespace zs::bench {

struct StreamArrays {
    float *a = nullptr, *b = nullptr, *c = nullptr;
    int64_t n = 0;
    explicit StreamArrays(int64_t count) : n(count) {
        const size_t bytes = static_cast<size_t>(n) * sizeof(float);
        a = static_cast<float*>(std::aligned_alloc(64, bytes));
        b = static_cast<float*>(std::aligned_alloc(64, bytes));
        c = static_cast<float*>(std::aligned_alloc(64, bytes));
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; ++i) {
            a[i] = 1.0f;
            b[i] = 2.0f;
            c[i] = 0.5f;
        }
    }
    ~StreamArrays() {
        std::free(a);
        std::free(b);
        std::free(c);
    }
    StreamArrays(const StreamArrays&) = delete;
    StreamArrays& operator=(const StreamArrays&) = delete;
};

// 3 arrays of 2^25 floats (128 MiB each): far beyond any L3 here.
inline void BM_stream_triad(benchmark::State& st) {
    StreamArrays s(int64_t{1} << 25);
    const float q = 3.0f;
    for (auto _ : st) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < s.n; ++i) s.a[i] = s.b[i] + q * s.c[i];
        benchmark::DoNotOptimize(s.a);
        benchmark::ClobberMemory();
    }
    st.counters["GB/s"] = benchmark::Counter(
        12.0 * static_cast<double>(s.n) * st.iterations() / 1e9, benchmark::Counter::kIsRate);
    st.counters["threads"] = omp_get_max_threads();
}

inline void BM_stream_copy(benchmark::State& st) {
    StreamArrays s(int64_t{1} << 25);
    for (auto _ : st) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < s.n; ++i) s.c[i] = s.a[i];
        benchmark::DoNotOptimize(s.c);
        benchmark::ClobberMemory();
    }
    st.counters["GB/s"] = benchmark::Counter(8.0 * static_cast<double>(s.n) * st.iterations() / 1e9,
                                             benchmark::Counter::kIsRate);
}

}  // namespace zs::bench
