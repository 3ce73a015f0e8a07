// Block-quantized linears on CUDA (launch.h, "quant.cu"): the weights stay in their GGUF block
// layout on the device (core/quant.h states the layouts); the CPU's interleaved16 repack is never
// used here.
//
// Decode GEMV (rows <= kQuantGemvMaxRows): one warp per output row streams that row's blocks once
// and dots them with every activation row in f32 (activations are read as they are, f32 or bf16,
// not quantized: the bytes that matter at batch 1 are the weights'). Lane layout:
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
#include <cuda_fp16.h>

#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

constexpr int kGemvWarps = 4;  // output rows per block of the GEMV
constexpr int kDequantThreads = 256;

constexpr int64_t kQ80Block = 32, kQ80Bytes = 34;
constexpr int64_t kQ4KBlock = 256, kQ4KBytes = 144;
constexpr int64_t kQ6KBytes = 210;

// Bytes per block of the 32-element types.
template <QuantType QT>
inline constexpr int64_t kBlock32Bytes = QT == QuantType::q4_0   ? 18
                                         : QT == QuantType::q4_1 ? 20
                                         : QT == QuantType::q5_0 ? 22
                                         : QT == QuantType::q5_1 ? 24
                                                                 : kQ80Bytes;

__device__ __forceinline__ float half_bits_to_f32(unsigned short bits) {
    return __half2float(__ushort_as_half(bits));
}

// p 2-byte aligned.
__device__ __forceinline__ float f16_at(const uint8_t* p) {
    return half_bits_to_f32(*reinterpret_cast<const unsigned short*>(p));
}

// Any alignment.
__device__ __forceinline__ unsigned short u16_at(const uint8_t* p) {
    return static_cast<unsigned short>(p[0] | (p[1] << 8));
}
__device__ __forceinline__ float f16_any(const uint8_t* p) { return half_bits_to_f32(u16_at(p)); }
__device__ __forceinline__ uint32_t u32_at(const uint8_t* p) {
    return static_cast<uint32_t>(u16_at(p)) | (static_cast<uint32_t>(u16_at(p + 2)) << 16);
}

// The code of element i (0..31) of a q4_0 / q4_1 / q5_0 / q5_1 block (core/quant.cpp's deq_q*:
// nibble i < 16 is the low half of qs[i], else the high half of qs[i - 16]; bit 4 of a q5 code
// is bit i of qh) and the block's w = d * code + m.
template <QuantType QT>
__device__ __forceinline__ int block32_code(const uint8_t* blk, int i) {
    constexpr int kQsAt = QT == QuantType::q4_0   ? 2
                          : QT == QuantType::q4_1 ? 4
                          : QT == QuantType::q5_0 ? 6
                                                  : 8;
    const uint8_t* qs = blk + kQsAt;
    int q = i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4);
    if constexpr (QT == QuantType::q5_0 || QT == QuantType::q5_1) {
        const uint32_t qh = u32_at(blk + (QT == QuantType::q5_0 ? 2 : 4));
        q |= static_cast<int>((qh >> i) & 1u) << 4;
    }
    return q;
}
template <QuantType QT>
__device__ __forceinline__ void block32_scale(const uint8_t* blk, float* d, float* m) {
    *d = f16_any(blk);
    if constexpr (QT == QuantType::q4_0) {
        *m = -8.0f * *d;
    } else if constexpr (QT == QuantType::q5_0) {
        *m = -16.0f * *d;
    } else {
        *m = f16_any(blk + 2);
    }
}

// The 6-bit code (before the -32 offset) of element e (0..255) of a q6_k block and the index of
// its int8 scale (core/quant.cpp's deq_q6_k).
__device__ __forceinline__ int q6_k_code(const uint8_t* blk, int e, int* scale_index) {
    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const int lo = (blk[64 * h + l + 32 * (k % 2)] >> (k < 2 ? 0 : 4)) & 0x0F;
    const int hi = (blk[128 + 32 * h + l] >> (2 * k)) & 3;
    *scale_index = 8 * h + l / 16 + 2 * k;
    return lo | (hi << 4);
}

// The 6-bit scale and min of sub-block j (0..7) of a q4_k super-block from its scales[12]
// (core/quant.cpp's scale_min_k4, ggml's get_scale_min_k4).
__device__ __forceinline__ void scale_min_k4(const uint8_t* s, int j, int* sc, int* mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

__device__ __forceinline__ float load_bias(const void* bias, FloatType t, int64_t i) {
    return t == FloatType::bf16 ? to_f32(static_cast<const bf16_t*>(bias)[i])
                                : static_cast<const float*>(bias)[i];
}

// The partial dot products of this lane with every activation row, for one weight row.
template <class TX>
__device__ __forceinline__ void gemv_q8_0(const uint8_t* wr, int64_t k, const TX* x, int64_t ldx,
                                          int rows, int lane, float* acc) {
    const int64_t nb = k / kQ80Block;
    const int i0 = 4 * (lane & 7);
    for (int64_t b = lane >> 3; b < nb; b += 4) {
        const uint8_t* blk = wr + b * kQ80Bytes;
        const float d = f16_at(blk);
        const auto* q16 = reinterpret_cast<const unsigned short*>(blk + 2 + i0);
        const unsigned short lo = q16[0], hi = q16[1];
        const float q[4] = {static_cast<float>(static_cast<int8_t>(lo & 0xFF)),
                            static_cast<float>(static_cast<int8_t>(lo >> 8)),
                            static_cast<float>(static_cast<int8_t>(hi & 0xFF)),
                            static_cast<float>(static_cast<int8_t>(hi >> 8))};
        const int64_t k0 = b * kQ80Block + i0;
#pragma unroll
        for (int m = 0; m < kQuantGemvMaxRows; ++m) {
            if (m < rows) {
                const TX* xm = x + m * ldx + k0;
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < 4; ++i) s += q[i] * to_f32(xm[i]);
                acc[m] += d * s;
            }
        }
    }
}

template <class TX>
__device__ __forceinline__ void gemv_q4_k(const uint8_t* wr, int64_t k, const TX* x, int64_t ldx,
                                          int rows, int lane, float* acc) {
    const int64_t nb = k / kQ4KBlock;
    const int c = lane >> 3, l0 = 4 * (lane & 7);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = wr + b * kQ4KBytes;
        const uint32_t dd = *reinterpret_cast<const uint32_t*>(blk);
        const float d = half_bits_to_f32(static_cast<unsigned short>(dd & 0xFFFF));
        const float dmin = half_bits_to_f32(static_cast<unsigned short>(dd >> 16));
        int sc0, mn0, sc1, mn1;
        scale_min_k4(blk + 4, 2 * c, &sc0, &mn0);
        scale_min_k4(blk + 4, 2 * c + 1, &sc1, &mn1);
        const float d0 = d * static_cast<float>(sc0), m0 = dmin * static_cast<float>(mn0);
        const float d1 = d * static_cast<float>(sc1), m1 = dmin * static_cast<float>(mn1);
        // 16 + 32 c + l0 = 16 + 4 lane: 4-byte aligned.
        const uint32_t qw = *reinterpret_cast<const uint32_t*>(blk + 16 + 32 * c + l0);
        float lo[4], hi[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            lo[i] = static_cast<float>((qw >> (8 * i)) & 0x0F);
            hi[i] = static_cast<float>((qw >> (8 * i + 4)) & 0x0F);
        }
        const int64_t k0 = b * kQ4KBlock + 64 * c + l0;
#pragma unroll
        for (int m = 0; m < kQuantGemvMaxRows; ++m) {
            if (m < rows) {
                const TX* xm = x + m * ldx + k0;
                float sq0 = 0.0f, sx0 = 0.0f, sq1 = 0.0f, sx1 = 0.0f;
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const float a = to_f32(xm[i]), a1 = to_f32(xm[32 + i]);
                    sq0 += lo[i] * a;
                    sx0 += a;
                    sq1 += hi[i] * a1;
                    sx1 += a1;
                }
                acc[m] += d0 * sq0 - m0 * sx0 + d1 * sq1 - m1 * sx1;
            }
        }
    }
}

template <QuantType QT, class TX>
__device__ __forceinline__ void gemv_block32(const uint8_t* wr, int64_t k, const TX* x, int64_t ldx,
                                             int rows, int lane, float* acc) {
    constexpr int64_t kBytes = kBlock32Bytes<QT>;
    const int64_t nb = k / 32;
    const int i0 = 4 * (lane & 7);
    for (int64_t b = lane >> 3; b < nb; b += 4) {
        const uint8_t* blk = wr + b * kBytes;
        float d, mb;
        block32_scale<QT>(blk, &d, &mb);
        float q[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) q[i] = static_cast<float>(block32_code<QT>(blk, i0 + i));
        const int64_t k0 = b * 32 + i0;
#pragma unroll
        for (int m = 0; m < kQuantGemvMaxRows; ++m) {
            if (m < rows) {
                const TX* xm = x + m * ldx + k0;
                float sq = 0.0f, sx = 0.0f;
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const float a = to_f32(xm[i]);
                    sq += q[i] * a;
                    sx += a;
                }
                acc[m] += d * sq + mb * sx;
            }
        }
    }
}

template <class TX>
__device__ __forceinline__ void gemv_q6_k(const uint8_t* wr, int64_t k, const TX* x, int64_t ldx,
                                          int rows, int lane, float* acc) {
    const int64_t nb = k / kQ4KBlock;
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = wr + b * kQ6KBytes;
        const float d = f16_any(blk + 208);
        const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
        float w[8];  // j = 4 h + k: element 128 h + 32 k + lane
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            int si;
            const int q = q6_k_code(blk, 128 * (j / 4) + 32 * (j % 4) + lane, &si);
            w[j] = static_cast<float>(sc[si]) * static_cast<float>(q - 32);
        }
        const int64_t k0 = b * kQ4KBlock + lane;
#pragma unroll
        for (int m = 0; m < kQuantGemvMaxRows; ++m) {
            if (m < rows) {
                const TX* xm = x + m * ldx + k0;
                float s = 0.0f;
#pragma unroll
                for (int j = 0; j < 8; ++j) s += w[j] * to_f32(xm[128 * (j / 4) + 32 * (j % 4)]);
                acc[m] += d * s;
            }
        }
    }
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
    if constexpr (QT == QuantType::q8_0) {
        gemv_q8_0(wr, k, x, ldx, rows, lane, acc);
    } else if constexpr (QT == QuantType::q4_k) {
        gemv_q4_k(wr, k, x, ldx, rows, lane, acc);
    } else if constexpr (QT == QuantType::q6_k) {
        gemv_q6_k(wr, k, x, ldx, rows, lane, acc);
    } else {
        gemv_block32<QT>(wr, k, x, ldx, rows, lane, acc);
    }
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
        const uint8_t* wr = w + r * row_bytes;
        float v;
        if constexpr (QT == QuantType::q8_0) {
            const uint8_t* blk = wr + c / kQ80Block * kQ80Bytes;
            v = f16_at(blk) * static_cast<float>(static_cast<int8_t>(blk[2 + c % kQ80Block]));
        } else if constexpr (QT == QuantType::q6_k) {
            const uint8_t* blk = wr + c / kQ4KBlock * kQ6KBytes;
            int si;
            const int q = q6_k_code(blk, static_cast<int>(c % kQ4KBlock), &si);
            const float ds =
                f16_any(blk + 208) * static_cast<float>(static_cast<int8_t>(blk[192 + si]));
            v = ds * static_cast<float>(q - 32);  // (d sc) q, rounded in that order as on the CPU
        } else if constexpr (QT != QuantType::q4_k) {
            const uint8_t* blk = wr + c / 32 * kBlock32Bytes<QT>;
            const float q = static_cast<float>(block32_code<QT>(blk, static_cast<int>(c % 32)));
            const float d = f16_any(blk);
            if constexpr (QT == QuantType::q4_0) {
                v = d * (q - 8.0f);
            } else if constexpr (QT == QuantType::q5_0) {
                v = d * (q - 16.0f);
            } else {
                v = d * q + f16_any(blk + 2);  // d q is exact: an FMA rounds the same
            }
        } else {
            const uint8_t* blk = wr + c / kQ4KBlock * kQ4KBytes;
            const int e = static_cast<int>(c % kQ4KBlock), j = e / 32, l = e % 32;
            int sc, mn;
            scale_min_k4(blk + 4, j, &sc, &mn);
            const float dj = f16_at(blk) * static_cast<float>(sc);
            const float mj = f16_at(blk + 2) * static_cast<float>(mn);
            const int q = (blk[16 + 32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F;
            v = dj * static_cast<float>(q) - mj;  // dj * q is exact: an FMA rounds the same
        }
        dst[idx] = from_f32<TD>(v);
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
