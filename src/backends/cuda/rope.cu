// Rotary embedding in CUDA, in place. One thread per (token, rotary pair), looping over the heads,
// so each cos/sin is computed once per token and reused by every head.
//
// NOTE(zs): the angles come from the table's inv_freq (passed by value in the kernel parameters,
// at most kRopeMaxPairs doubles) and are evaluated in double precision on the device, exactly as
// RopeTable builds its f32 cos/sin on the host (angle in double, cos/sin in double, rounded to
// f32), rather than copying the [max_positions, rotary_dim / 2] table to the device at every call
// or caching it by address.
#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

constexpr int kThreads = 256;

template <class T, class P>
__global__ void rope_kernel(RopeArgs a, unsigned long long* bad) {
    T* x = static_cast<T*>(a.x);
    const P* pos = static_cast<const P*>(a.positions);
    const int64_t total = a.n * a.half;
    for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
         idx += int64_t{gridDim.x} * blockDim.x) {
        const int64_t t = idx / a.half, i = idx - t * a.half;
        const int64_t p = load_index(pos, t);
        if (p < 0 || p >= a.max_positions) {
            if (i == 0) report_bad(bad, t);
            continue;
        }
        double sd, cd;
        sincos(static_cast<double>(p) * a.inv_freq[i], &sd, &cd);
        const float c = static_cast<float>(cd);
        const float s = a.inverse ? -static_cast<float>(sd) : static_cast<float>(sd);
        const int64_t i0 = a.interleaved ? 2 * i : i;
        const int64_t i1 = a.interleaved ? 2 * i + 1 : i + a.half;
        for (int64_t h = 0; h < a.h; ++h) {
            T* v = x + t * a.stride_n + h * a.stride_h;
            const float x0 = to_f32(v[i0]), x1 = to_f32(v[i1]);
            v[i0] = from_f32<T>(x0 * c - x1 * s);
            v[i1] = from_f32<T>(x1 * c + x0 * s);
        }
    }
}

}  // namespace

void launch_rope(cudaStream_t stream, const RopeArgs& a, unsigned long long* bad) {
    const int64_t total = a.n * a.half;
    if (total == 0 || a.h == 0) return;
    dispatch_float(a.type, [&](auto tx) {
        dispatch_index(a.pos_type, [&](auto tp) {
            using T = decltype(tx);
            using P = decltype(tp);
            rope_kernel<T, P><<<grid_for(total, kThreads), kThreads, 0, stream>>>(a, bad);
            ZS_CUDA_CHECK_LAUNCH("rope");
        });
    });
}

}  // namespace zs::backends::cuda
