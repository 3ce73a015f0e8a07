// LayerNorm and RMSNorm in CUDA: one block per row (grid-stride over rows), block reductions for
// the statistics, f32 math whatever the storage type.
//
// Backward: dx += (residual stream). Parameter gradients are deterministic without atomics: a
// fixed number of blocks G (a function of the row count only) each own rows b, b + G, ...; the
// thread that owns column c of block b accumulates g * xhat (and g) for those rows into its own
// slot of a [G, 2, C] f32 scratch; a second kernel adds the G partials to dw / db in block order.
#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

// Threads per row block: a power of two from 32 to 1024, about 4 columns per thread.
int row_threads(int64_t cols) {
    int t = 32;
    while (t < 1024 && int64_t{t} * 4 < cols) t *= 2;
    return t;
}

int64_t norm_backward_blocks(int64_t n) { return n < 256 ? (n < 1 ? 1 : n) : 256; }

unsigned row_grid(int64_t n) { return static_cast<unsigned>(n < (1 << 20) ? n : (1 << 20)); }

template <class TX, class TO, class TW>
__global__ void layernorm_fwd_kernel(RowsArg out, RowsArg x, const TW* w, const TW* b, float* mean,
                                     float* rstd, int64_t n, int64_t C, float eps) {
    __shared__ float red[32];
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const TX* xr = static_cast<const TX*>(x.data) + row * x.stride;
        TO* orow = static_cast<TO*>(out.data) + row * out.stride;
        float s = 0.0f;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += load(xr, c);
        const float m = block_sum(s, red) / static_cast<float>(C);
        float v = 0.0f;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float d = load(xr, c) - m;
            v += d * d;
        }
        const float rs = 1.0f / sqrtf(block_sum(v, red) / static_cast<float>(C) + eps);
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float xh = (load(xr, c) - m) * rs;
            store(orow, c, fmaf(xh, load(w, c), load(b, c)));
        }
        if (threadIdx.x == 0) {
            if (mean != nullptr) mean[row] = m;
            if (rstd != nullptr) rstd[row] = rs;
        }
    }
}

template <class TX, class TW>
__global__ void layernorm_bwd_kernel(RowsArg dx, RowsArg dout, RowsArg x, const TW* w,
                                     const float* mean, const float* rstd, float* part, int64_t n,
                                     int64_t C) {
    __shared__ float red[32];
    float* pdw = part + blockIdx.x * 2 * C;
    float* pdb = pdw + C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        pdw[c] = 0.0f;
        pdb[c] = 0.0f;
    }
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const TX* xr = static_cast<const TX*>(x.data) + row * x.stride;
        const TX* gr = static_cast<const TX*>(dout.data) + row * dout.stride;
        TX* dr = static_cast<TX*>(dx.data) + row * dx.stride;
        const float m = mean[row], rs = rstd[row];
        float s1 = 0.0f, s2 = 0.0f;  // sum(dnorm), sum(dnorm * xhat)
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float xh = (load(xr, c) - m) * rs;
            float g = load(gr, c);
            float dn = g * load(w, c);
            s1 += dn;
            s2 += dn * xh;
            pdw[c] += g * xh;  // this thread owns column c of this block's partials
            pdb[c] += g;
        }
        const float m1 = block_sum(s1, red) / static_cast<float>(C);
        const float m2 = block_sum(s2, red) / static_cast<float>(C);
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float xh = (load(xr, c) - m) * rs;
            float dn = load(gr, c) * load(w, c);
            store(dr, c, load(dr, c) + rs * (dn - m1 - xh * m2));
        }
    }
}

template <class TX, class TO, class TW>
__global__ void rmsnorm_fwd_kernel(RowsArg out, RowsArg x, const TW* w, float* rstd, int64_t n,
                                   int64_t C, float eps) {
    __shared__ float red[32];
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const TX* xr = static_cast<const TX*>(x.data) + row * x.stride;
        TO* orow = static_cast<TO*>(out.data) + row * out.stride;
        float ss = 0.0f;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float v = load(xr, c);
            ss += v * v;
        }
        const float rs = 1.0f / sqrtf(block_sum(ss, red) / static_cast<float>(C) + eps);
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            store(orow, c, load(xr, c) * rs * load(w, c));
        }
        if (threadIdx.x == 0 && rstd != nullptr) rstd[row] = rs;
    }
}

template <class TX, class TW>
__global__ void rmsnorm_bwd_kernel(RowsArg dx, RowsArg dout, RowsArg x, const TW* w,
                                   const float* rstd, float* part, int64_t n, int64_t C) {
    __shared__ float red[32];
    float* pdw = part + blockIdx.x * 2 * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) pdw[c] = 0.0f;
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const TX* xr = static_cast<const TX*>(x.data) + row * x.stride;
        const TX* gr = static_cast<const TX*>(dout.data) + row * dout.stride;
        TX* dr = static_cast<TX*>(dx.data) + row * dx.stride;
        const float rs = rstd[row];
        float s2 = 0.0f;  // sum(dnorm * xhat)
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float xh = load(xr, c) * rs;
            float g = load(gr, c);
            s2 += g * load(w, c) * xh;
            pdw[c] += g * xh;
        }
        const float m2 = block_sum(s2, red) / static_cast<float>(C);
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float xh = load(xr, c) * rs;
            float dn = load(gr, c) * load(w, c);
            store(dr, c, load(dr, c) + rs * (dn - xh * m2));
        }
    }
}

// dw[c] += sum_b part[b, 0, c]; db[c] += sum_b part[b, 1, c] (either may be null).
__global__ void reduce_param_grads(float* dw, float* db, const float* part, int64_t blocks,
                                   int64_t C) {
    int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
    if (c >= C) return;
    float sw = 0.0f, sb = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) {
        sw += part[b * 2 * C + c];
        if (db != nullptr) sb += part[b * 2 * C + C + c];
    }
    if (dw != nullptr) dw[c] += sw;
    if (db != nullptr) db[c] += sb;
}

void launch_reduce(cudaStream_t stream, float* dw, float* db, const float* part, int64_t blocks,
                   int64_t C) {
    if (dw == nullptr && db == nullptr) return;
    const int t = 256;
    reduce_param_grads<<<static_cast<unsigned>((C + t - 1) / t), t, 0, stream>>>(dw, db, part,
                                                                                 blocks, C);
    ZS_CUDA_CHECK_LAUNCH("reduce_param_grads");
}

}  // namespace

size_t norm_backward_scratch_floats(int64_t n, int64_t cols) {
    return static_cast<size_t>(norm_backward_blocks(n) * 2 * cols);
}

void launch_layernorm_forward(cudaStream_t stream, const RowsArg& out, const RowsArg& x,
                              const void* w, const void* b, FloatType w_type, float* mean,
                              float* rstd, int64_t n, int64_t cols, float eps) {
    if (n == 0 || cols == 0) return;
    const int t = row_threads(cols);
    dispatch_float(x.type, [&](auto tx) {
        dispatch_float(out.type, [&](auto to) {
            dispatch_float(w_type, [&](auto tw) {
                using TX = decltype(tx);
                using TO = decltype(to);
                using TW = decltype(tw);
                layernorm_fwd_kernel<TX, TO, TW><<<row_grid(n), t, 0, stream>>>(
                    out, x, static_cast<const TW*>(w), static_cast<const TW*>(b), mean, rstd, n,
                    cols, eps);
                ZS_CUDA_CHECK_LAUNCH("layernorm_forward");
            });
        });
    });
}

void launch_layernorm_backward(cudaStream_t stream, const RowsArg& dx, const RowsArg& dout,
                               const RowsArg& x, const void* w, FloatType w_type, const float* mean,
                               const float* rstd, float* dw, float* db, int64_t n, int64_t cols,
                               float* scratch) {
    if (n == 0 || cols == 0) return;
    const int t = row_threads(cols);
    const int64_t blocks = norm_backward_blocks(n);
    dispatch_float(x.type, [&](auto tx) {
        dispatch_float(w_type, [&](auto tw) {
            using TX = decltype(tx);
            using TW = decltype(tw);
            layernorm_bwd_kernel<TX, TW><<<static_cast<unsigned>(blocks), t, 0, stream>>>(
                dx, dout, x, static_cast<const TW*>(w), mean, rstd, scratch, n, cols);
            ZS_CUDA_CHECK_LAUNCH("layernorm_backward");
        });
    });
    launch_reduce(stream, dw, db, scratch, blocks, cols);
}

void launch_rmsnorm_forward(cudaStream_t stream, const RowsArg& out, const RowsArg& x,
                            const void* w, FloatType w_type, float* rstd, int64_t n, int64_t cols,
                            float eps) {
    if (n == 0 || cols == 0) return;
    const int t = row_threads(cols);
    dispatch_float(x.type, [&](auto tx) {
        dispatch_float(out.type, [&](auto to) {
            dispatch_float(w_type, [&](auto tw) {
                using TX = decltype(tx);
                using TO = decltype(to);
                using TW = decltype(tw);
                rmsnorm_fwd_kernel<TX, TO, TW><<<row_grid(n), t, 0, stream>>>(
                    out, x, static_cast<const TW*>(w), rstd, n, cols, eps);
                ZS_CUDA_CHECK_LAUNCH("rmsnorm_forward");
            });
        });
    });
}

void launch_rmsnorm_backward(cudaStream_t stream, const RowsArg& dx, const RowsArg& dout,
                             const RowsArg& x, const void* w, FloatType w_type, const float* rstd,
                             float* dw, int64_t n, int64_t cols, float* scratch) {
    if (n == 0 || cols == 0) return;
    const int t = row_threads(cols);
    const int64_t blocks = norm_backward_blocks(n);
    dispatch_float(x.type, [&](auto tx) {
        dispatch_float(w_type, [&](auto tw) {
            using TX = decltype(tx);
            using TW = decltype(tw);
            rmsnorm_bwd_kernel<TX, TW><<<static_cast<unsigned>(blocks), t, 0, stream>>>(
                dx, dout, x, static_cast<const TW*>(w), rstd, scratch, n, cols);
            ZS_CUDA_CHECK_LAUNCH("rmsnorm_backward");
        });
    });
    launch_reduce(stream, dw, nullptr, scratch, blocks, cols);
}

}  // namespace zs::backends::cuda
