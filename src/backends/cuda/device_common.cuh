// Device-side helpers shared by the .cu files: f32 <-> bf16 loads and stores (math is always
// f32), warp and block reductions, dtype dispatch for launchers, and grid sizing.
//
// Reductions use a fixed tree (xor shuffles, then warp 0 over the per-warp values), so results
// are deterministic for a given block size.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backends/cuda/cuda_util.h"
#include "backends/cuda/launch.h"

namespace zs::backends::cuda {

using bf16_t = __nv_bfloat16;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16_t v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
    return v;
}
template <>
__device__ __forceinline__ bf16_t from_f32<bf16_t>(float v) {
    return __float2bfloat16_rn(v);  // round to nearest even, as core::f32_to_bf16
}

template <class T>
__device__ __forceinline__ float load(const T* p, int64_t i) {
    return to_f32(p[i]);
}
template <class T>
__device__ __forceinline__ void store(T* p, int64_t i, float v) {
    p[i] = from_f32<T>(v);
}

inline constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
    return v;
}

// Sum over the block, returned to every thread. `red` is shared scratch of >= 32 floats;
// blockDim.x must be a multiple of 32. Contains __syncthreads (call from all threads).
__device__ __forceinline__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // red may still be read by a previous reduction
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -INFINITY;
    return warp_max(v);
}

// Record `index` as a bad position if it is the smallest seen.
__device__ __forceinline__ void report_bad(unsigned long long* bad, int64_t index) {
    atomicMin(bad, static_cast<unsigned long long>(index));
}

template <class I>
__device__ __forceinline__ int64_t load_index(const I* p, int64_t i) {
    return static_cast<int64_t>(p[i]);
}

// Host: call f(T{}) with T = float or bf16_t.
template <class F>
inline void dispatch_float(FloatType t, F&& f) {
    switch (t) {
        case FloatType::f32:
            f(float{});
            return;
        case FloatType::bf16:
            f(bf16_t{});
            return;
    }
}

// Host: call f(I{}) with I = int32_t or int64_t.
template <class F>
inline void dispatch_index(IndexType t, F&& f) {
    switch (t) {
        case IndexType::i32:
            f(int32_t{});
            return;
        case IndexType::i64:
            f(int64_t{});
            return;
    }
}

// Host: call f(std::integral_constant<int, D>) for the head dim padded to D = 64, 128 or 256
// (the attention kernels' register tiles).
template <class F>
inline void dispatch_head_dim(int64_t hs, F&& f) {
    if (hs <= 64) {
        f(std::integral_constant<int, 64>{});
    } else if (hs <= 128) {
        f(std::integral_constant<int, 128>{});
    } else {
        f(std::integral_constant<int, 256>{});
    }
}

// Host: blocks for a grid-stride loop over `total` items (capped; the loop covers the rest).
inline unsigned grid_for(int64_t total, int threads) {
    int64_t blocks = (total + threads - 1) / threads;
    const int64_t cap = int64_t{1} << 20;
    if (blocks > cap) blocks = cap;
    return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

// Host: a 1-D grid of exactly `blocks` blocks (the kernels index up to 2^31 - 1 of them).
inline unsigned grid_exact(int64_t blocks) { return static_cast<unsigned>(blocks); }

}  // namespace zs::backends::cuda
