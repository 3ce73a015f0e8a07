// OpenMP helpers for the CPU kernels: dtype dispatch and blocked iteration over rows.
#pragma once

#include <algorithm>
#include <cstdint>

#include <omp.h>

#include "backends/cpu/vec.h"
#include "core/tensor.h"
#include "ops/layout.h"

namespace zs::backends::cpu {

using ops::Rows;

// Call f(T{}) with T = float or bf16 matching a float dtype (the op API has validated it).
template <class F>
inline void dispatch_float(core::DType t, F&& f) {
    if (t == core::DType::bf16) {
        f(bf16{});
    } else {
        f(float{});
    }
}

// Below this many elements an op runs on one thread: the fork/join costs more than it saves.
inline constexpr int64_t kParallelMinElems = 1 << 15;

// A row-layout argument: base pointer (typed later) and row stride in elements.
struct RowArg {
    void* base;
    int64_t stride;
};

inline RowArg row_arg(const core::Tensor& t) {
    auto r = ops::rows_of(t);
    return {t.data_ptr(), r ? r->stride : t.size(-1)};
}

// Split an [n_rows, cols] iteration space into blocks of at most `block` columns and run
// fn(row, col_begin, col_end) over them in parallel (static schedule: deterministic per thread
// count). When every argument is contiguous callers pass n_rows = 1, cols = numel, so a few long
// rows still spread over all threads.
template <class Fn>
inline void for_blocks(int64_t n_rows, int64_t cols, Fn&& fn, int64_t block = 8192) {
    if (n_rows <= 0 || cols <= 0) return;
    int64_t per_row = (cols + block - 1) / block;
    int64_t total = n_rows * per_row;
    auto run = [&](int64_t b) {
        int64_t r = b / per_row;
        int64_t c0 = (b % per_row) * block;
        fn(r, c0, std::min(cols, c0 + block));
    };
    if (n_rows * cols < kParallelMinElems) {  // serial: no OpenMP construct (see for_rows)
        for (int64_t b = 0; b < total; ++b) run(b);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < total; ++b) run(b);
}

// fn(c, n) over [c0, c1) in pairs of vectors (vec.h's vload2/vstore2): n = 32 but for a shorter
// last pair.
template <class Fn>
inline void for_pairs(int64_t c0, int64_t c1, Fn&& fn) {
    int64_t c = c0;
    for (; c + 2 * kLanes <= c1; c += 2 * kLanes) fn(c, 2 * kLanes);
    if (c < c1) fn(c, static_cast<int>(c1 - c));
}

// Parallel loop over rows with a static schedule. A loop too small to split runs here without
// entering an OpenMP construct: libgomp builds a team even for `if (false)` (~0.7 us on the
// 2-core Zen 3 VM, against ~0.3 us for a decode row's norm or RoPE; ~120 such calls per token).
template <class Fn>
inline void for_rows(int64_t n_rows, int64_t cols, Fn&& fn) {
    if (n_rows <= 1 || n_rows * cols < kParallelMinElems) {
        for (int64_t r = 0; r < n_rows; ++r) fn(r);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n_rows; ++r) fn(r);
}

}  // namespace zs::backends::cpu
