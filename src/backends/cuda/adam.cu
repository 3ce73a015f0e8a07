// The AdamW / Adam update of one flat segment (ops/adam.h): a grid-stride loop, one element per
// thread step, with the fused multiply-adds of optim::Optimizer's AVX-512 path (optimizer.cpp
// adam_range), so results match the CPU's to the last bits or so (the compiler may contract the
// CPU's scalar tail differently). Accurate sqrtf and division (no fast math).
#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

constexpr int kThreads = 256;

template <class TC>
__global__ void adam_kernel(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                            TC* __restrict__ compute, const float* __restrict__ g, int64_t n,
                            AdamArgs a) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
         i += int64_t{gridDim.x} * blockDim.x) {
        const float pi = p[i];
        const float gv = fmaf(a.l2, pi, g[i] * a.grad_scale);
        const float pv = pi * a.decay_mul;
        const float mv = fmaf(a.beta1, m[i], (1.0f - a.beta1) * gv);
        const float vv = fmaf(a.beta2, v[i], (1.0f - a.beta2) * (gv * gv));
        const float den = fmaf(sqrtf(vv), a.inv_sqrt_bc2, a.eps);
        const float out = pv - a.step_size * (mv / den);
        p[i] = out;
        m[i] = mv;
        v[i] = vv;
        if (compute != nullptr) store(compute, i, out);
    }
}

}  // namespace

void launch_adam_update(cudaStream_t stream, float* master, float* m, float* v, void* compute,
                        FloatType compute_type, const float* grad, int64_t n, const AdamArgs& a) {
    if (n == 0) return;
    dispatch_float(compute_type, [&](auto tc) {
        using TC = decltype(tc);
        adam_kernel<TC><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
            master, m, v, static_cast<TC*>(compute), grad, n, a);
        ZS_CUDA_CHECK_LAUNCH("adam_update");
    });
}

}  // namespace zs::backends::cuda
