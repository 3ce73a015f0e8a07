// Block-quantized linears on CUDA (launch.h, "quant.cu"): the weights stay in their GGUF block
// layout on the device (core/quant.h states the layouts); the CPU's interleaved16 repack is never
// used here.
//
// Decode GEMV (rows <= kQuantGemvMaxRows): one warp per output row streams that row's blocks once
// and dots them with every activation row in f32 (activations are read as they are, f32 or bf16,
// not quantized: the bytes that matter at batch 1 are the weights'). The decoders and lane loops
// live in quant_blocks.cuh (also compiled on the host and tested there). Lane layout:
//   q8_0: 8 lanes per block, 4 codes each (two 2-byte loads), 4 blocks per warp step;
//   q4_0, q4_1, q5_0, q5_1: the same 8 lanes x 4 codes per 32-element block (byte loads: their
//         blocks of 18 / 20 / 22 / 24 bytes promise no alignment), w = d q + m per block;
//   q4_k: the warp takes one super-block per step; lane l reads the 4 bytes 4l..4l+3 of qs, i.e.
//         chunk c = l / 8 (elements 64c.. low nibbles, sub-block 2c; 64c + 32.. high nibbles,
//         sub-block 2c + 1), so each lane needs the scale and min of two sub-blocks only;
//   q6_k: one super-block per warp step; lane l takes the 8 elements 128h + 32k + l (h = 0, 1,
//         k = 0..3), whose ql, qh bytes and scales sit at lane-consecutive addresses.
// Each lane keeps one f32 accumulator per activation row; the warp sums them with the fixed xor
// tree of device_common.cuh, so results are deterministic.
//
// Prefill (more rows): launch_quant_dequantize widens a slice of weight rows to bf16 / f32 in a
// scratch tile and the host glue (cuda_matmul.cpp) multiplies it with cuBLAS.
#include "backends/cuda/device_common.cuh"
#include "backends/cuda/quant_blocks.cuh"

namespace zs::backends::cuda {

namespace {

using namespace qblocks;

constexpr int kGemvWarps = 4;  // output rows per block of the GEMV
constexpr int kDequantThreads = 256;

__device__ __forceinline__ float load_bias(const void* bias, FloatType t, int64_t i) {
    return t == FloatType::bf16 ? to_f32(static_cast<const bf16_t*>(bias)[i])
                                : static_cast<const float*>(bias)[i];
}

template <QuantType QT, class TX, class TO>
__global__ void __launch_bounds__(kGemvWarps * 32)
    quant_gemv_kernel(const uint8_t* w, int64_t row_bytes, int64_t n, int64_t k, const TX* x,
                      int64_t ldx, int rows, TO* out, int64_t ldo, float beta, const void* bias,
                      FloatType bias_type) {
    const int lane = threadIdx.x & 31;
    const int64_t r = blockIdx.x * int64_t{kGemvWarps} + (threadIdx.x >> 5);
    if (r >= n) return;  // warp-uniform: the shuffles below see full warps
    const uint8_t* wr = w + r * row_bytes;
    float acc[kQuantGemvMaxRows] = {};
    gemv_lane<QT>(wr, k, x, ldx, rows, lane, acc);
    float mine = 0.0f;  // lane m keeps the sum of row m
#pragma unroll
    for (int m = 0; m < kQuantGemvMaxRows; ++m) {
        if (m < rows) {
            const float s = warp_sum(acc[m]);  // rows is warp-uniform
            if (lane == m) mine = s;
        }
    }
    if (lane < rows) {
        float v = mine;
        if (bias != nullptr) v += load_bias(bias, bias_type, r);
        TO* o = out + lane * ldo + r;
        if (beta != 0.0f) v += beta * to_f32(*o);
        *o = from_f32<TO>(v);
    }
}

// One element per thread (grid-stride): dst[r * k + c] = w(r, c), as core::dequantize.
template <QuantType QT, class TD>
__global__ void quant_dequantize_kernel(const uint8_t* w, int64_t row_bytes, int64_t n, int64_t k,
                                        TD* dst) {
    const int64_t total = n * k;
    for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
         idx += int64_t{gridDim.x} * blockDim.x) {
        const int64_t r = idx / k, c = idx % k;
        dst[idx] = from_f32<TD>(dequant_element<QT>(w + r * row_bytes, c));
    }
}

template <QuantType QT>
void gemv_for(cudaStream_t stream, const QuantArg& w, int64_t n, int64_t k, const RowsArg& x,
              int64_t rows, const RowsArg& out, float beta, const void* bias, FloatType bias_type) {
    const auto* wp = static_cast<const uint8_t*>(w.data);
    const unsigned blocks = grid_exact((n + kGemvWarps - 1) / kGemvWarps);
    dispatch_float(x.type, [&](auto tx) {
        using TX = decltype(tx);
        dispatch_float(out.type, [&](auto to) {
            using TO = decltype(to);
            quant_gemv_kernel<QT, TX, TO><<<blocks, kGemvWarps * 32, 0, stream>>>(
                wp, w.row_bytes, n, k, static_cast<const TX*>(x.data), x.stride,
                static_cast<int>(rows), static_cast<TO*>(out.data), out.stride, beta, bias,
                bias_type);
        });
    });
    ZS_CUDA_CHECK_LAUNCH("quant_gemv_kernel");
}

template <QuantType QT>
void dequantize_for(cudaStream_t stream, const QuantArg& w, int64_t n, int64_t k, void* dst,
                    FloatType dst_type) {
    const auto* wp = static_cast<const uint8_t*>(w.data);
    dispatch_float(dst_type, [&](auto td) {
        using TD = decltype(td);
        quant_dequantize_kernel<QT, TD>
            <<<grid_for(n * k, kDequantThreads), kDequantThreads, 0, stream>>>(
                wp, w.row_bytes, n, k, static_cast<TD*>(dst));
    });
    ZS_CUDA_CHECK_LAUNCH("quant_dequantize_kernel");
}

}  // namespace

void launch_quant_gemv(cudaStream_t stream, const QuantArg& w, int64_t n, int64_t k,
                       const RowsArg& x, int64_t rows, const RowsArg& out, float beta,
                       const void* bias, FloatType bias_type) {
    if (n == 0 || rows == 0) return;
    switch (w.type) {
        case QuantType::q8_0:
            return gemv_for<QuantType::q8_0>(stream, w, n, k, x, rows, out, beta, bias, bias_type);
        case QuantType::q4_k:
            return gemv_for<QuantType::q4_k>(stream, w, n, k, x, rows, out, beta, bias, bias_type);
        case QuantType::q4_0:
            return gemv_for<QuantType::q4_0>(stream, w, n, k, x, rows, out, beta, bias, bias_type);
        case QuantType::q4_1:
            return gemv_for<QuantType::q4_1>(stream, w, n, k, x, rows, out, beta, bias, bias_type);
        case QuantType::q5_0:
            return gemv_for<QuantType::q5_0>(stream, w, n, k, x, rows, out, beta, bias, bias_type);
        case QuantType::q5_1:
            return gemv_for<QuantType::q5_1>(stream, w, n, k, x, rows, out, beta, bias, bias_type);
        case QuantType::q6_k:
            return gemv_for<QuantType::q6_k>(stream, w, n, k, x, rows, out, beta, bias, bias_type);
    }
}

void launch_quant_dequantize(cudaStream_t stream, const QuantArg& w, int64_t n, int64_t k,
                             void* dst, FloatType dst_type) {
    if (n == 0 || k == 0) return;
    switch (w.type) {
        case QuantType::q8_0:
            return dequantize_for<QuantType::q8_0>(stream, w, n, k, dst, dst_type);
        case QuantType::q4_k:
            return dequantize_for<QuantType::q4_k>(stream, w, n, k, dst, dst_type);
        case QuantType::q4_0:
            return dequantize_for<QuantType::q4_0>(stream, w, n, k, dst, dst_type);
        case QuantType::q4_1:
            return dequantize_for<QuantType::q4_1>(stream, w, n, k, dst, dst_type);
        case QuantType::q5_0:
            return dequantize_for<QuantType::q5_0>(stream, w, n, k, dst, dst_type);
        case QuantType::q5_1:
            return dequantize_for<QuantType::q5_1>(stream, w, n, k, dst, dst_type);
        case QuantType::q6_k:
            return dequantize_for<QuantType::q6_k>(stream, w, n, k, dst, dst_type);
    }
}

}  // namespace zs::backends::cuda
