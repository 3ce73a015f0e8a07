// Top-k softmax router on the CPU: per token, a softmax over experts, a partial selection of the
// k largest (ties to the lower index) and the gate weights; backward through both.
#include <cmath>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/parallel.h"

namespace zs::backends::cpu {

void CpuKernels::topk_router_forward(const Tensor& weights, const Tensor& indices,
                                     const Tensor& probs, const Tensor& logits,
                                     const ops::RouterOptions& opts) {
    const int64_t N = logits.size(0), E = logits.size(1);
    const int k = opts.k;
    Rows rl = *ops::rows_of(logits);
    float* pw = weights.data<float>();
    int32_t* pi = indices.data<int32_t>();
    float* pp = probs.data<float>();
    dispatch_float(logits.dtype(), [&](auto tl) {
        using TL = decltype(tl);
        for_rows(N, E * 8, [&](int64_t i) {
            const TL* x = static_cast<const TL*>(logits.data_ptr()) + i * rl.stride;
            float* p = pp + i * E;
            float m = -INFINITY;
            for (int64_t e = 0; e < E; ++e) m = std::max(m, to_f32(x[e]));
            float s = 0;
            for (int64_t e = 0; e < E; ++e) {
                p[e] = std::exp(to_f32(x[e]) - m);
                s += p[e];
            }
            for (int64_t e = 0; e < E; ++e) p[e] /= s;
            // Selection: k passes, each taking the largest unchosen (first index on ties).
            int32_t* idx = pi + i * k;
            float* w = pw + i * k;
            float wsum = 0;
            for (int j = 0; j < k; ++j) {
                int64_t best = -1;
                for (int64_t e = 0; e < E; ++e) {
                    bool taken = false;
                    for (int q = 0; q < j; ++q) taken = taken || idx[q] == e;
                    if (!taken && (best < 0 || p[e] > p[best])) best = e;
                }
                idx[j] = static_cast<int32_t>(best);
                w[j] = p[best];
                wsum += p[best];
            }
            if (opts.renormalize) {
                for (int j = 0; j < k; ++j) w[j] /= wsum;
            }
        });
    });
}

void CpuKernels::topk_router_backward(const Tensor& dlogits, const Tensor& dweights,
                                      const Tensor& dprobs, const Tensor& probs,
                                      const Tensor& indices, const ops::RouterOptions& opts) {
    const int64_t N = probs.size(0), E = probs.size(1);
    const int k = opts.k;
    Rows rg = *ops::rows_of(dlogits);
    const float* pp = probs.data<float>();
    const float* dw = dweights.data<float>();
    const int32_t* pi = indices.data<int32_t>();
    const float* dpp = dprobs.defined() ? dprobs.data<float>() : nullptr;
    dispatch_float(dlogits.dtype(), [&](auto tg) {
        using TG = decltype(tg);
        std::vector<float> dp_all(static_cast<size_t>(N * E));
        for_rows(N, E * 8, [&](int64_t i) {
            const float* p = pp + i * E;
            float* dp = dp_all.data() + i * E;
            for (int64_t e = 0; e < E; ++e) dp[e] = dpp ? dpp[i * E + e] : 0.0f;
            const int32_t* idx = pi + i * k;
            const float* g = dw + i * k;
            if (opts.renormalize) {
                // w_j = p_j / S: dL/dp_j = (g_j - sum_m g_m w_m) / S for chosen j.
                float S = 0, gw = 0;
                for (int j = 0; j < k; ++j) S += p[idx[j]];
                for (int j = 0; j < k; ++j) gw += g[j] * p[idx[j]] / S;
                for (int j = 0; j < k; ++j) dp[idx[j]] += (g[j] - gw) / S;
            } else {
                for (int j = 0; j < k; ++j) dp[idx[j]] += g[j];
            }
            // Softmax backward: dlogit_e = p_e * (dp_e - sum_f p_f dp_f).
            float dot = 0;
            for (int64_t e = 0; e < E; ++e) dot += p[e] * dp[e];
            TG* out = static_cast<TG*>(dlogits.data_ptr()) + i * rg.stride;
            for (int64_t e = 0; e < E; ++e) out[e] = from_f32<TG>(p[e] * (dp[e] - dot));
        });
    });
}

}  // namespace zs::backends::cpu
