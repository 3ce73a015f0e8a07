// Matmul support kernels (the GEMM itself is cuBLAS, in cuda_matmul.cpp): the elementwise epilogue
// (bias add, beta-scaling when K == 0, f32 -> bf16 write-back of results computed in f32) over an
// arbitrary strided output, and the bias gradient sum_rows.
//
// sum_rows is deterministic: rows are split into a number of chunks that depends only on the
// shape; each (chunk, column) thread sums its rows in order, then one thread per column adds the
// chunk partials in chunk order.
#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

constexpr int kThreads = 256;

template <class TD, class TS, class TB>
__global__ void epilogue_kernel(NdArg dst, NdArg src, bool has_src, float src_scale, const TB* bias,
                                int64_t total) {
    TD* d = static_cast<TD*>(dst.data);
    const TS* s = static_cast<const TS*>(src.data);
    for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
         idx += int64_t{gridDim.x} * blockDim.x) {
        // Row-major multi-index of idx over dst.shape -> element offsets in dst and src.
        // Unrolled over the fixed capacity so the shape / strides stay in parameter space.
        int64_t rem = idx, od = 0, os = 0, last = 0;
#pragma unroll
        for (int i = kMaxNd - 1; i >= 0; --i) {
            if (i >= dst.ndim) continue;
            int64_t ii = rem % dst.shape[i];
            rem /= dst.shape[i];
            od += ii * dst.strides[i];
            os += ii * src.strides[i];
            if (i == dst.ndim - 1) last = ii;
        }
        float v = has_src ? src_scale * to_f32(s[os]) : 0.0f;
        if (bias != nullptr) v += to_f32(bias[last]);
        d[od] = from_f32<TD>(v);
    }
}

// Partial column sums of rows [chunk * rows_per_chunk, ...) into part[chunk, c], or straight
// into out when there is one chunk.
template <class T>
__global__ void sum_rows_partial(float* part, float* out, bool accumulate, const T* in,
                                 int64_t stride, int64_t n, int64_t cols, int64_t rows_per_chunk) {
    int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
    if (c >= cols) return;
    int64_t chunk = blockIdx.y;
    int64_t r0 = chunk * rows_per_chunk;
    int64_t r1 = min(n, r0 + rows_per_chunk);
    float acc = 0.0f;
    if (part == nullptr && accumulate) acc = out[c];
    for (int64_t r = r0; r < r1; ++r) acc += to_f32(in[r * stride + c]);
    if (part == nullptr) {
        out[c] = acc;
    } else {
        part[chunk * cols + c] = acc;
    }
}

__global__ void sum_rows_final(float* out, const float* part, int64_t chunks, int64_t cols,
                               bool accumulate) {
    int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
    if (c >= cols) return;
    float acc = accumulate ? out[c] : 0.0f;
    for (int64_t g = 0; g < chunks; ++g) acc += part[g * cols + c];
    out[c] = acc;
}

// Chunk count: enough (chunk, column) threads to fill the GPU, at least 32 rows per chunk.
int64_t sum_rows_chunks(int64_t n, int64_t cols) {
    const int64_t want_threads = 1 << 16;
    int64_t by_threads = (want_threads + cols - 1) / cols;
    int64_t by_rows = (n + 31) / 32;
    int64_t g = by_threads < by_rows ? by_threads : by_rows;
    if (g > 1024) g = 1024;
    return g < 1 ? 1 : g;
}

__global__ void probe_kernel(int* p) {
    if (p != nullptr) *p = 1;
}

}  // namespace

void launch_matmul_epilogue(cudaStream_t stream, const NdArg& dst, const NdArg* src,
                            float src_scale, const void* bias, FloatType bias_type) {
    int64_t total = 1;
    for (int i = 0; i < dst.ndim; ++i) total *= dst.shape[i];
    if (total == 0) return;
    NdArg s = src != nullptr ? *src : dst;
    dispatch_float(dst.type, [&](auto td) {
        dispatch_float(s.type, [&](auto ts) {
            dispatch_float(bias_type, [&](auto tb) {
                using TD = decltype(td);
                using TS = decltype(ts);
                using TB = decltype(tb);
                epilogue_kernel<TD, TS, TB><<<grid_for(total, kThreads), kThreads, 0, stream>>>(
                    dst, s, src != nullptr, src_scale, static_cast<const TB*>(bias), total);
                ZS_CUDA_CHECK_LAUNCH("matmul_epilogue");
            });
        });
    });
}

size_t sum_rows_scratch_floats(int64_t n, int64_t cols) {
    int64_t g = sum_rows_chunks(n, cols);
    return g == 1 ? 0 : static_cast<size_t>(g * cols);
}

void launch_sum_rows(cudaStream_t stream, float* out, const RowsArg& in, int64_t n, int64_t cols,
                     bool accumulate, float* scratch) {
    if (cols == 0) return;
    int64_t g = sum_rows_chunks(n, cols);
    int64_t rows_per_chunk = (n + g - 1) / g;
    dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads), static_cast<unsigned>(g));
    dispatch_float(in.type, [&](auto t) {
        using T = decltype(t);
        sum_rows_partial<T><<<grid, kThreads, 0, stream>>>(
            g == 1 ? nullptr : scratch, out, accumulate, static_cast<const T*>(in.data), in.stride,
            n, cols, rows_per_chunk);
        ZS_CUDA_CHECK_LAUNCH("sum_rows_partial");
    });
    if (g > 1) {
        sum_rows_final<<<grid.x, kThreads, 0, stream>>>(out, scratch, g, cols, accumulate);
        ZS_CUDA_CHECK_LAUNCH("sum_rows_final");
    }
}

cudaError_t probe_kernel_image() {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, probe_kernel);
}

}  // namespace zs::backends::cuda
