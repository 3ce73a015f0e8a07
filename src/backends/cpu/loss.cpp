// Fused cross-entropy on the CPU: per row, max and sum of exp in two passes over the logits (the
// row is in cache after the first), then loss and dlogits written in a third. dlogits may alias
// logits: each element is read before it is overwritten.
#include <cmath>
#include <type_traits>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/parallel.h"

namespace zs::backends::cpu {

int64_t CpuKernels::cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                                  const Tensor& targets, const ops::CrossEntropyOptions& opts) {
    const int64_t N = logits.size(0), V = logits.size(1);
    std::vector<int64_t> tgt(static_cast<size_t>(N));
    int64_t count = 0;
    for (int64_t i = 0; i < N; ++i) {
        int64_t t = targets.dtype() == core::DType::i32
                        ? static_cast<int64_t>(targets.data<int32_t>()[i])
                        : targets.data<int64_t>()[i];
        if (t != opts.ignore_index) {
            if (t < 0 || t >= V) {
                ZS_THROW(Error,
                         "cross_entropy: target {} at position {} is outside the vocabulary "
                         "[0, {}) and is not ignore_index ({})",
                         t, i, V, opts.ignore_index);
            }
            ++count;
        }
        tgt[static_cast<size_t>(i)] = t;
    }
    Rows rl = *ops::rows_of(logits);
    Rows rg = dlogits.defined() ? *ops::rows_of(dlogits) : Rows{};
    float* loss = losses.data<float>();
    dispatch_float(logits.dtype(), [&](auto tl) {
        dispatch_float(dlogits.defined() ? dlogits.dtype() : logits.dtype(), [&](auto tg) {
            using TL = decltype(tl);
            using TG = decltype(tg);
            for_rows(N, V, [&](int64_t i) {
                const TL* x = static_cast<const TL*>(logits.data_ptr()) + i * rl.stride;
                TG* g = dlogits.defined() ? static_cast<TG*>(dlogits.data_ptr()) + i * rg.stride
                                          : nullptr;
                int64_t t = tgt[static_cast<size_t>(i)];
                if (t == opts.ignore_index) {
                    loss[i] = 0.0f;
                    if (g) {
                        for (int64_t c = 0; c < V; c += kLanes) {
                            vstore(g + c, vzero(),
                                   static_cast<int>(std::min<int64_t>(kLanes, V - c)));
                        }
                    }
                    return;
                }
                VecF mx = vset(-INFINITY);
                for (int64_t c = 0; c < V; c += kLanes) {
                    int n = static_cast<int>(std::min<int64_t>(kLanes, V - c));
                    mx = vmax(mx, vmask_fill(vload(x + c, n), n, -INFINITY));
                }
                float m = vhmax(mx);
                const float xt = to_f32(x[t]);  // read before g (which may alias x) is written
                VecF sum = vzero();
                // With an f32 gradient row, exp(x - max) is stored there in the same pass that
                // sums it, and only scaled afterwards: one exp per logit.
                const bool keep = g != nullptr && std::is_same_v<TG, float>;
                for (int64_t c = 0; c < V; c += kLanes) {
                    int n = static_cast<int>(std::min<int64_t>(kLanes, V - c));
                    VecF ev = vmask_fill(vexp(vload(x + c, n) - vset(m)), n, 0.0f);
                    if (keep) vstore(g + c, ev, n);
                    sum = sum + ev;
                }
                float s = vsum(sum);
                loss[i] = (m - xt) + std::log(s);  // m - xt first: exact when they are close
                if (g) {
                    VecF scale = vset(opts.grad_scale / s);
                    for (int64_t c = 0; c < V; c += kLanes) {
                        int n = static_cast<int>(std::min<int64_t>(kLanes, V - c));
                        VecF ev = keep ? vload(g + c, n) : vexp(vload(x + c, n) - vset(m));
                        vstore(g + c, ev * scale, n);
                    }
                    g[t] = from_f32<TG>(to_f32(g[t]) - opts.grad_scale);
                }
            });
        });
    });
    return count;
}

}  // namespace zs::backends::cpu
