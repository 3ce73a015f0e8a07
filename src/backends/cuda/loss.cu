// Fused cross-entropy in CUDA: one block per row; block max and sum of exp over the logits, then
// the loss and dlogits in a final pass. dlogits may alias logits: every thread's reads of the row
// (and thread 0's read of the target logit) happen before the reductions' barriers, and the final
// pass reads each element before the same thread overwrites it.
//
// The valid-target count (stats[0]) is an integer atomicAdd, exact and order-independent; a target
// outside [0, V) that is not ignore_index leaves its row untouched and reports the smallest such
// position in stats[1] for the host to raise.
#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

int row_threads(int64_t cols) {
    int t = 32;
    while (t < 1024 && int64_t{t} * 4 < cols) t *= 2;
    return t;
}

template <class TL, class TG, class I>
__global__ void cross_entropy_kernel(CrossEntropyArgs a, unsigned long long* stats) {
    __shared__ float red[32];
    const I* targets = static_cast<const I*>(a.targets);
    const int64_t V = a.v;
    for (int64_t row = blockIdx.x; row < a.n; row += gridDim.x) {
        const TL* x = static_cast<const TL*>(a.logits.data) + row * a.logits.stride;
        TG* g = a.dlogits.data != nullptr
                    ? static_cast<TG*>(a.dlogits.data) + row * a.dlogits.stride
                    : nullptr;
        const int64_t t = load_index(targets, row);  // uniform across the block
        if (t == a.ignore_index) {
            if (threadIdx.x == 0) a.losses[row] = 0.0f;
            if (g != nullptr) {
                for (int64_t c = threadIdx.x; c < V; c += blockDim.x) store(g, c, 0.0f);
            }
            continue;
        }
        if (t < 0 || t >= V) {
            if (threadIdx.x == 0) report_bad(stats + 1, row);
            continue;
        }
        float xt = 0.0f;
        if (threadIdx.x == 0) {
            xt = load(x, t);
            atomicAdd(stats, 1ull);
        }
        float m = -INFINITY;
        for (int64_t c = threadIdx.x; c < V; c += blockDim.x) m = fmaxf(m, load(x, c));
        m = block_max(m, red);
        float s = 0.0f;
        for (int64_t c = threadIdx.x; c < V; c += blockDim.x) s += expf(load(x, c) - m);
        s = block_sum(s, red);
        if (threadIdx.x == 0) a.losses[row] = (m - xt) + logf(s);  // m - xt first: exact when close
        if (g != nullptr) {
            const float scale = a.grad_scale / s;
            for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
                float p = expf(load(x, c) - m) * scale;
                store(g, c, c == t ? p - a.grad_scale : p);
            }
        }
    }
}

}  // namespace

void launch_cross_entropy(cudaStream_t stream, const CrossEntropyArgs& a,
                          unsigned long long* stats) {
    if (a.n == 0) return;
    const unsigned grid = static_cast<unsigned>(a.n < (1 << 20) ? a.n : (1 << 20));
    const FloatType gt = a.dlogits.data != nullptr ? a.dlogits.type : a.logits.type;
    dispatch_float(a.logits.type, [&](auto tl) {
        dispatch_float(gt, [&](auto tg) {
            dispatch_index(a.target_type, [&](auto ti) {
                using TL = decltype(tl);
                using TG = decltype(tg);
                using I = decltype(ti);
                cross_entropy_kernel<TL, TG, I><<<grid, row_threads(a.v), 0, stream>>>(a, stats);
                ZS_CUDA_CHECK_LAUNCH("cross_entropy");
            });
        });
    });
}

}  // namespace zs::backends::cuda
