// Pointwise activations, residual add/scale and softmax in CUDA: bf16 or f32 in and out, f32
// math. Elementwise ops run a grid-stride loop over the flat [n, cols] space (the glue passes one
// long row when every argument is contiguous); softmax runs one block per row.
//
// The formulas are those of the CPU kernels (backends/cpu/pointwise.cpp), with CUDA's accurate
// expf / tanhf (not the __expf intrinsics) so f32 results stay within 1e-5 of the reference.
#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

constexpr int kThreads = 256;
constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluC = 0.044715f;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float gelu(float x) {
    float u = kGeluK * fmaf(kGeluC * x, x * x, x);
    return 0.5f * x * (1.0f + tanhf(u));
}

__device__ __forceinline__ float gelu_grad(float x) {
    float x2 = x * x;
    float t = tanhf(kGeluK * fmaf(kGeluC * x, x2, x));
    float du = kGeluK * fmaf(3.0f * kGeluC, x2, 1.0f);
    return fmaf(0.5f * x * (1.0f - t * t), du, 0.5f * (1.0f + t));
}

// Exact GELU: x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2; gradient Phi(x) + x phi(x).
__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

__device__ __forceinline__ float gelu_erf_grad(float x) {
    const float phi = 0.3989422804014327f * expf(-0.5f * x * x);
    return fmaf(x, phi, 0.5f * (1.0f + erff(x * 0.70710678118654752f)));
}

__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }

__device__ __forceinline__ float silu_grad(float x) {
    float s = sigmoid(x);
    return s * fmaf(x, 1.0f - s, 1.0f);
}

struct GeluOp {
    __device__ float operator()(float x, float) const { return gelu(x); }
};
struct GeluErfOp {
    __device__ float operator()(float x, float) const { return gelu_erf(x); }
};
struct SiluOp {
    __device__ float operator()(float x, float) const { return silu(x); }
};
struct ScaleOp {
    __device__ float operator()(float x, float alpha) const { return alpha * x; }
};
struct GeluBackwardOp {
    __device__ float operator()(float g, float x) const { return g * gelu_grad(x); }
};
struct GeluErfBackwardOp {
    __device__ float operator()(float g, float x) const { return g * gelu_erf_grad(x); }
};
struct SiluBackwardOp {
    __device__ float operator()(float g, float x) const { return g * silu_grad(x); }
};
struct SwigluOp {
    __device__ float operator()(float gate, float up) const { return silu(gate) * up; }
};
struct AddOp {
    __device__ float operator()(float a, float b) const { return a + b; }
};

template <class TO, class TX, class Op>
__global__ void unary_kernel(RowsArg out, RowsArg x, int64_t n, int64_t cols, float alpha, Op op) {
    TO* o = static_cast<TO*>(out.data);
    const TX* xp = static_cast<const TX*>(x.data);
    const int64_t total = n * cols;
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
         i += int64_t{gridDim.x} * blockDim.x) {
        int64_t r = i / cols, c = i - r * cols;
        store(o, r * out.stride + c, op(load(xp, r * x.stride + c), alpha));
    }
}

template <class TO, class TA, class TB, class Op>
__global__ void binary_kernel(RowsArg out, RowsArg a, RowsArg b, int64_t n, int64_t cols, Op op) {
    TO* o = static_cast<TO*>(out.data);
    const TA* ap = static_cast<const TA*>(a.data);
    const TB* bp = static_cast<const TB*>(b.data);
    const int64_t total = n * cols;
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
         i += int64_t{gridDim.x} * blockDim.x) {
        int64_t r = i / cols, c = i - r * cols;
        store(o, r * out.stride + c, op(load(ap, r * a.stride + c), load(bp, r * b.stride + c)));
    }
}

template <class TO, class TI>
__global__ void swiglu_bwd_kernel(RowsArg dgate, RowsArg dup, RowsArg dout, RowsArg gate,
                                  RowsArg up, int64_t n, int64_t cols) {
    TO* dg = static_cast<TO*>(dgate.data);
    TO* du = static_cast<TO*>(dup.data);
    const TI* d = static_cast<const TI*>(dout.data);
    const TI* g = static_cast<const TI*>(gate.data);
    const TI* u = static_cast<const TI*>(up.data);
    const int64_t total = n * cols;
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
         i += int64_t{gridDim.x} * blockDim.x) {
        int64_t r = i / cols, c = i - r * cols;
        float dv = load(d, r * dout.stride + c), gv = load(g, r * gate.stride + c),
              uv = load(u, r * up.stride + c);
        float s = silu(gv);
        // Both outputs computed before either is stored: dgate/dup may alias gate/up.
        float dgv = dv * uv * silu_grad(gv), duv = dv * s;
        store(dg, r * dgate.stride + c, dgv);
        store(du, r * dup.stride + c, duv);
    }
}

template <class TO, class TX>
__global__ void softmax_fwd_kernel(RowsArg out, RowsArg x, int64_t n, int64_t C) {
    __shared__ float red[32];
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const TX* xr = static_cast<const TX*>(x.data) + row * x.stride;
        TO* orow = static_cast<TO*>(out.data) + row * out.stride;
        float m = -INFINITY;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) m = fmaxf(m, load(xr, c));
        m = block_max(m, red);
        float s = 0.0f;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += expf(load(xr, c) - m);
        const float inv = 1.0f / block_sum(s, red);
        // out may alias x: every read of this row happened before the reductions' barriers.
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            store(orow, c, expf(load(xr, c) - m) * inv);
        }
    }
}

template <class T>
__global__ void softmax_bwd_kernel(RowsArg dx, RowsArg dout, RowsArg out, int64_t n, int64_t C) {
    __shared__ float red[32];
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const T* o = static_cast<const T*>(out.data) + row * out.stride;
        const T* g = static_cast<const T*>(dout.data) + row * dout.stride;
        T* d = static_cast<T*>(dx.data) + row * dx.stride;
        float dot = 0.0f;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += load(o, c) * load(g, c);
        const float s = block_sum(dot, red);
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            store(d, c, load(o, c) * (load(g, c) - s));
        }
    }
}

int row_threads(int64_t cols) {
    int t = 32;
    while (t < 1024 && int64_t{t} * 4 < cols) t *= 2;
    return t;
}

unsigned row_grid(int64_t n) { return static_cast<unsigned>(n < (1 << 20) ? n : (1 << 20)); }

template <class Op>
void unary_typed(cudaStream_t stream, const RowsArg& out, const RowsArg& x, int64_t n, int64_t cols,
                 float alpha, Op op) {
    dispatch_float(out.type, [&](auto to) {
        dispatch_float(x.type, [&](auto tx) {
            using TO = decltype(to);
            using TX = decltype(tx);
            unary_kernel<TO, TX, Op>
                <<<grid_for(n * cols, kThreads), kThreads, 0, stream>>>(out, x, n, cols, alpha, op);
            ZS_CUDA_CHECK_LAUNCH("unary");
        });
    });
}

template <class Op>
void binary_typed(cudaStream_t stream, const RowsArg& out, const RowsArg& a, const RowsArg& b,
                  int64_t n, int64_t cols, Op op) {
    dispatch_float(out.type, [&](auto to) {
        dispatch_float(a.type, [&](auto ta) {
            dispatch_float(b.type, [&](auto tb) {
                using TO = decltype(to);
                using TA = decltype(ta);
                using TB = decltype(tb);
                binary_kernel<TO, TA, TB, Op>
                    <<<grid_for(n * cols, kThreads), kThreads, 0, stream>>>(out, a, b, n, cols, op);
                ZS_CUDA_CHECK_LAUNCH("binary");
            });
        });
    });
}

}  // namespace

void launch_unary(cudaStream_t stream, UnaryOp op, const RowsArg& out, const RowsArg& x, int64_t n,
                  int64_t cols, float alpha) {
    if (n == 0 || cols == 0) return;
    switch (op) {
        case UnaryOp::gelu:
            unary_typed(stream, out, x, n, cols, alpha, GeluOp{});
            return;
        case UnaryOp::gelu_erf:
            unary_typed(stream, out, x, n, cols, alpha, GeluErfOp{});
            return;
        case UnaryOp::silu:
            unary_typed(stream, out, x, n, cols, alpha, SiluOp{});
            return;
        case UnaryOp::scale:
            unary_typed(stream, out, x, n, cols, alpha, ScaleOp{});
            return;
    }
}

void launch_binary(cudaStream_t stream, BinaryOp op, const RowsArg& out, const RowsArg& a,
                   const RowsArg& b, int64_t n, int64_t cols) {
    if (n == 0 || cols == 0) return;
    switch (op) {
        case BinaryOp::gelu_backward:
            binary_typed(stream, out, a, b, n, cols, GeluBackwardOp{});
            return;
        case BinaryOp::gelu_erf_backward:
            binary_typed(stream, out, a, b, n, cols, GeluErfBackwardOp{});
            return;
        case BinaryOp::silu_backward:
            binary_typed(stream, out, a, b, n, cols, SiluBackwardOp{});
            return;
        case BinaryOp::swiglu:
            binary_typed(stream, out, a, b, n, cols, SwigluOp{});
            return;
        case BinaryOp::add:
            binary_typed(stream, out, a, b, n, cols, AddOp{});
            return;
    }
}

void launch_swiglu_backward(cudaStream_t stream, const RowsArg& dgate, const RowsArg& dup,
                            const RowsArg& dout, const RowsArg& gate, const RowsArg& up, int64_t n,
                            int64_t cols) {
    if (n == 0 || cols == 0) return;
    dispatch_float(dgate.type, [&](auto to) {
        dispatch_float(gate.type, [&](auto ti) {
            using TO = decltype(to);
            using TI = decltype(ti);
            swiglu_bwd_kernel<TO, TI><<<grid_for(n * cols, kThreads), kThreads, 0, stream>>>(
                dgate, dup, dout, gate, up, n, cols);
            ZS_CUDA_CHECK_LAUNCH("swiglu_backward");
        });
    });
}

void launch_softmax_forward(cudaStream_t stream, const RowsArg& out, const RowsArg& x, int64_t n,
                            int64_t cols) {
    if (n == 0 || cols == 0) return;
    dispatch_float(out.type, [&](auto to) {
        dispatch_float(x.type, [&](auto tx) {
            using TO = decltype(to);
            using TX = decltype(tx);
            softmax_fwd_kernel<TO, TX>
                <<<row_grid(n), row_threads(cols), 0, stream>>>(out, x, n, cols);
            ZS_CUDA_CHECK_LAUNCH("softmax_forward");
        });
    });
}

void launch_softmax_backward(cudaStream_t stream, const RowsArg& dx, const RowsArg& dout,
                             const RowsArg& out, int64_t n, int64_t cols) {
    if (n == 0 || cols == 0) return;
    dispatch_float(out.type, [&](auto t) {
        using T = decltype(t);
        softmax_bwd_kernel<T>
            <<<row_grid(n), row_threads(cols), 0, stream>>>(dx, dout, out, n, cols);
        ZS_CUDA_CHECK_LAUNCH("softmax_backward");
    });
}

}  // namespace zs::backends::cuda
