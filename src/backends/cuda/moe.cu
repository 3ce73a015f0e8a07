// Top-k softmax router in CUDA: one warp per token. Forward: warp softmax over the experts, then
// k arg-max passes (ties to the lower expert index, as the CPU and the reference), each lane
// remembering which of its experts are taken in a 64-bit mask (so E <= 64 * 32). Backward:
// through the chosen weights (renormalised or not) and an optional dprobs, then the softmax.
//
// Gate weights are accumulated in pass order exactly as the CPU kernel does.
#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

constexpr int kThreads = 128;  // 4 warps per block, one token per warp

template <class TL>
__global__ void router_fwd_kernel(float* weights, int32_t* indices, float* probs, RowsArg logits,
                                  int64_t n, int64_t E, int k, bool renormalize) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = int64_t{gridDim.x} * (blockDim.x >> 5);
    for (int64_t row = blockIdx.x * int64_t{blockDim.x >> 5} + (threadIdx.x >> 5); row < n;
         row += warps) {
        const TL* x = static_cast<const TL*>(logits.data) + row * logits.stride;
        float* p = probs + row * E;
        float m = -INFINITY;
        for (int64_t e = lane; e < E; e += 32) m = fmaxf(m, load(x, e));
        m = warp_max(m);
        float s = 0.0f;
        for (int64_t e = lane; e < E; e += 32) s += expf(load(x, e) - m);
        s = warp_sum(s);
        for (int64_t e = lane; e < E; e += 32) p[e] = expf(load(x, e) - m) / s;
        // Selection: each lane reads back only the probs it wrote itself.
        int32_t* idx = indices + row * k;
        float* w = weights + row * k;
        unsigned long long taken = 0;  // bit t: expert lane + 32 t is chosen
        float wsum = 0.0f;
        for (int j = 0; j < k; ++j) {
            float bv = -1.0f;
            int bi = 0x7fffffff;
            for (int64_t e = lane, t = 0; e < E; e += 32, ++t) {
                if ((taken >> t) & 1ull) continue;
                float v = p[e];
                if (v > bv) {  // ascending e: the first of equal values stays
                    bv = v;
                    bi = static_cast<int>(e);
                }
            }
            for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(kFullMask, bv, o);
                int oi = __shfl_xor_sync(kFullMask, bi, o);
                if (ov > bv || (ov == bv && oi < bi)) {
                    bv = ov;
                    bi = oi;
                }
            }
            if ((bi & 31) == lane) taken |= 1ull << (bi >> 5);
            if (lane == 0) {
                idx[j] = bi;
                w[j] = bv;
            }
            wsum += bv;
        }
        if (renormalize && lane == 0) {
            for (int j = 0; j < k; ++j) w[j] /= wsum;
        }
    }
}

template <class TG>
__global__ void router_bwd_kernel(RowsArg dlogits, const float* dweights, const float* dprobs,
                                  const float* probs, const int32_t* indices, int64_t n, int64_t E,
                                  int k, bool renormalize) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = int64_t{gridDim.x} * (blockDim.x >> 5);
    for (int64_t row = blockIdx.x * int64_t{blockDim.x >> 5} + (threadIdx.x >> 5); row < n;
         row += warps) {
        const float* p = probs + row * E;
        const float* g = dweights + row * k;
        const int32_t* idx = indices + row * k;
        // w_j = p_j / S: dL/dp_j = (g_j - sum_m g_m w_m) / S for chosen j (every lane computes
        // the same scalars, in the CPU's order). Indices outside [0, E) contribute nothing.
        float S = 1.0f, gw = 0.0f;
        if (renormalize) {
            S = 0.0f;
            for (int j = 0; j < k; ++j) {
                if (idx[j] >= 0 && idx[j] < E) S += p[idx[j]];
            }
            for (int j = 0; j < k; ++j) {
                if (idx[j] >= 0 && idx[j] < E) gw += g[j] * p[idx[j]] / S;
            }
        }
        float dot = 0.0f;
        for (int64_t e = lane; e < E; e += 32) {
            float dp = dprobs != nullptr ? dprobs[row * E + e] : 0.0f;
            for (int j = 0; j < k; ++j) {
                if (idx[j] == e) dp += renormalize ? (g[j] - gw) / S : g[j];
            }
            dot += p[e] * dp;
        }
        dot = warp_sum(dot);
        TG* out = static_cast<TG*>(dlogits.data) + row * dlogits.stride;
        for (int64_t e = lane; e < E; e += 32) {
            float dp = dprobs != nullptr ? dprobs[row * E + e] : 0.0f;
            for (int j = 0; j < k; ++j) {
                if (idx[j] == e) dp += renormalize ? (g[j] - gw) / S : g[j];
            }
            store(out, e, p[e] * (dp - dot));
        }
    }
}

unsigned warp_grid(int64_t n) {
    int64_t blocks = (n + (kThreads / 32) - 1) / (kThreads / 32);
    return static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20));
}

}  // namespace

void launch_topk_router_forward(cudaStream_t stream, float* weights, int32_t* indices, float* probs,
                                const RowsArg& logits, int64_t n, int64_t e, int k,
                                bool renormalize) {
    if (n == 0) return;
    dispatch_float(logits.type, [&](auto tl) {
        using TL = decltype(tl);
        router_fwd_kernel<TL><<<warp_grid(n), kThreads, 0, stream>>>(weights, indices, probs,
                                                                     logits, n, e, k, renormalize);
        ZS_CUDA_CHECK_LAUNCH("topk_router_forward");
    });
}

void launch_topk_router_backward(cudaStream_t stream, const RowsArg& dlogits, const float* dweights,
                                 const float* dprobs, const float* probs, const int32_t* indices,
                                 int64_t n, int64_t e, int k, bool renormalize) {
    if (n == 0) return;
    dispatch_float(dlogits.type, [&](auto tg) {
        using TG = decltype(tg);
        router_bwd_kernel<TG><<<warp_grid(n), kThreads, 0, stream>>>(
            dlogits, dweights, dprobs, probs, indices, n, e, k, renormalize);
        ZS_CUDA_CHECK_LAUNCH("topk_router_backward");
    });
}

}  // namespace zs::backends::cuda
