// The block decoders and the per-lane GEMV loops of quant.cu, compiled twice: by nvcc as device
// code (ZS_QHD = __device__ __forceinline__) for the kernels, and by the host compiler as plain
// inline functions, so that quant_blocks_test.cpp can run each lane's loop on the CPU and check
// the bit layouts and lane splits against core::dequantize in a build without a GPU. No fmt and
// no CUDA headers on the host side (the CPU build has neither the toolkit nor nvcc).
//
// A GEMV lane function adds lane `lane`'s (0..31) share of row `wr` dotted with activation rows
// x[m * ldx ..] (m < rows) into acc[m]; the kernel sums acc over the 32 lanes of a warp.
#pragma once

#include <cstdint>
#include <cstring>

#include "backends/cuda/quant_types.h"

#ifdef __CUDACC__
#include <cuda_fp16.h>

#include "backends/cuda/device_common.cuh"
#define ZS_QHD __device__ __forceinline__
#define ZS_QUNROLL _Pragma("unroll")
#else
#include "core/half.h"
#define ZS_QHD inline
#define ZS_QUNROLL
#endif

namespace zs::backends::cuda {

#ifndef __CUDACC__
inline float to_f32(float v) { return v; }
#endif

namespace qblocks {

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

ZS_QHD float half_bits_to_f32(unsigned short bits) {
#ifdef __CUDACC__
    return __half2float(__ushort_as_half(bits));
#else
    return core::f16_to_f32(core::f16{bits});
#endif
}

// Loads from an address aligned to the type (the device's native loads; memcpy on the host).
template <class T>
ZS_QHD T load_aligned(const uint8_t* p) {
#ifdef __CUDACC__
    return *reinterpret_cast<const T*>(p);
#else
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
#endif
}

// p 2-byte aligned.
ZS_QHD float f16_at(const uint8_t* p) { return half_bits_to_f32(load_aligned<unsigned short>(p)); }

// Any alignment.
ZS_QHD unsigned short u16_at(const uint8_t* p) {
    return static_cast<unsigned short>(p[0] | (p[1] << 8));
}
ZS_QHD float f16_any(const uint8_t* p) { return half_bits_to_f32(u16_at(p)); }
ZS_QHD uint32_t u32_at(const uint8_t* p) {
    return static_cast<uint32_t>(u16_at(p)) | (static_cast<uint32_t>(u16_at(p + 2)) << 16);
}

// The code of element i (0..31) of a q4_0 / q4_1 / q5_0 / q5_1 block (core/quant.cpp's deq_q*:
// nibble i < 16 is the low half of qs[i], else the high half of qs[i - 16]; bit 4 of a q5 code
// is bit i of qh) and the block's w = d * code + m.
template <QuantType QT>
ZS_QHD int block32_code(const uint8_t* blk, int i) {
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
ZS_QHD void block32_scale(const uint8_t* blk, float* d, float* m) {
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
ZS_QHD int q6_k_code(const uint8_t* blk, int e, int* scale_index) {
    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const int lo = (blk[64 * h + l + 32 * (k % 2)] >> (k < 2 ? 0 : 4)) & 0x0F;
    const int hi = (blk[128 + 32 * h + l] >> (2 * k)) & 3;
    *scale_index = 8 * h + l / 16 + 2 * k;
    return lo | (hi << 4);
}

// The 6-bit scale and min of sub-block j (0..7) of a q4_k super-block from its scales[12]
// (core/quant.cpp's scale_min_k4, ggml's get_scale_min_k4).
ZS_QHD void scale_min_k4(const uint8_t* s, int j, int* sc, int* mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

template <class TX>
ZS_QHD void gemv_q8_0(const uint8_t* wr, int64_t k, const TX* x, int64_t ldx, int rows, int lane,
                      float* acc) {
    const int64_t nb = k / kQ80Block;
    const int i0 = 4 * (lane & 7);
    for (int64_t b = lane >> 3; b < nb; b += 4) {
        const uint8_t* blk = wr + b * kQ80Bytes;
        const float d = f16_at(blk);
        const auto lo = load_aligned<unsigned short>(blk + 2 + i0);
        const auto hi = load_aligned<unsigned short>(blk + 4 + i0);
        const float q[4] = {static_cast<float>(static_cast<int8_t>(lo & 0xFF)),
                            static_cast<float>(static_cast<int8_t>(lo >> 8)),
                            static_cast<float>(static_cast<int8_t>(hi & 0xFF)),
                            static_cast<float>(static_cast<int8_t>(hi >> 8))};
        const int64_t k0 = b * kQ80Block + i0;
        ZS_QUNROLL
        for (int m = 0; m < kQuantGemvMaxRows; ++m) {
            if (m < rows) {
                const TX* xm = x + m * ldx + k0;
                float s = 0.0f;
                ZS_QUNROLL
                for (int i = 0; i < 4; ++i) s += q[i] * to_f32(xm[i]);
                acc[m] += d * s;
            }
        }
    }
}

template <class TX>
ZS_QHD void gemv_q4_k(const uint8_t* wr, int64_t k, const TX* x, int64_t ldx, int rows, int lane,
                      float* acc) {
    const int64_t nb = k / kQ4KBlock;
    const int c = lane >> 3, l0 = 4 * (lane & 7);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = wr + b * kQ4KBytes;
        const auto dd = load_aligned<uint32_t>(blk);
        const float d = half_bits_to_f32(static_cast<unsigned short>(dd & 0xFFFF));
        const float dmin = half_bits_to_f32(static_cast<unsigned short>(dd >> 16));
        int sc0, mn0, sc1, mn1;
        scale_min_k4(blk + 4, 2 * c, &sc0, &mn0);
        scale_min_k4(blk + 4, 2 * c + 1, &sc1, &mn1);
        const float d0 = d * static_cast<float>(sc0), m0 = dmin * static_cast<float>(mn0);
        const float d1 = d * static_cast<float>(sc1), m1 = dmin * static_cast<float>(mn1);
        // 16 + 32 c + l0 = 16 + 4 lane: 4-byte aligned.
        const auto qw = load_aligned<uint32_t>(blk + 16 + 32 * c + l0);
        float lo[4], hi[4];
        ZS_QUNROLL
        for (int i = 0; i < 4; ++i) {
            lo[i] = static_cast<float>((qw >> (8 * i)) & 0x0F);
            hi[i] = static_cast<float>((qw >> (8 * i + 4)) & 0x0F);
        }
        const int64_t k0 = b * kQ4KBlock + 64 * c + l0;
        ZS_QUNROLL
        for (int m = 0; m < kQuantGemvMaxRows; ++m) {
            if (m < rows) {
                const TX* xm = x + m * ldx + k0;
                float sq0 = 0.0f, sx0 = 0.0f, sq1 = 0.0f, sx1 = 0.0f;
                ZS_QUNROLL
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
ZS_QHD void gemv_block32(const uint8_t* wr, int64_t k, const TX* x, int64_t ldx, int rows, int lane,
                         float* acc) {
    constexpr int64_t kBytes = kBlock32Bytes<QT>;
    const int64_t nb = k / 32;
    const int i0 = 4 * (lane & 7);
    for (int64_t b = lane >> 3; b < nb; b += 4) {
        const uint8_t* blk = wr + b * kBytes;
        float d, mb;
        block32_scale<QT>(blk, &d, &mb);
        float q[4];
        ZS_QUNROLL
        for (int i = 0; i < 4; ++i) q[i] = static_cast<float>(block32_code<QT>(blk, i0 + i));
        const int64_t k0 = b * 32 + i0;
        ZS_QUNROLL
        for (int m = 0; m < kQuantGemvMaxRows; ++m) {
            if (m < rows) {
                const TX* xm = x + m * ldx + k0;
                float sq = 0.0f, sx = 0.0f;
                ZS_QUNROLL
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
ZS_QHD void gemv_q6_k(const uint8_t* wr, int64_t k, const TX* x, int64_t ldx, int rows, int lane,
                      float* acc) {
    const int64_t nb = k / kQ4KBlock;
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = wr + b * kQ6KBytes;
        const float d = f16_any(blk + 208);
        const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
        float w[8];  // j = 4 h + k: element 128 h + 32 k + lane
        ZS_QUNROLL
        for (int j = 0; j < 8; ++j) {
            int si;
            const int q = q6_k_code(blk, 128 * (j / 4) + 32 * (j % 4) + lane, &si);
            w[j] = static_cast<float>(sc[si]) * static_cast<float>(q - 32);
        }
        const int64_t k0 = b * kQ4KBlock + lane;
        ZS_QUNROLL
        for (int m = 0; m < kQuantGemvMaxRows; ++m) {
            if (m < rows) {
                const TX* xm = x + m * ldx + k0;
                float s = 0.0f;
                ZS_QUNROLL
                for (int j = 0; j < 8; ++j) s += w[j] * to_f32(xm[128 * (j / 4) + 32 * (j % 4)]);
                acc[m] += d * s;
            }
        }
    }
}

// The kernel's lane loop for type QT.
template <QuantType QT, class TX>
ZS_QHD void gemv_lane(const uint8_t* wr, int64_t k, const TX* x, int64_t ldx, int rows, int lane,
                      float* acc) {
    if constexpr (QT == QuantType::q8_0) {
        gemv_q8_0(wr, k, x, ldx, rows, lane, acc);
    } else if constexpr (QT == QuantType::q4_k) {
        gemv_q4_k(wr, k, x, ldx, rows, lane, acc);
    } else if constexpr (QT == QuantType::q6_k) {
        gemv_q6_k(wr, k, x, ldx, rows, lane, acc);
    } else {
        gemv_block32<QT>(wr, k, x, ldx, rows, lane, acc);
    }
}

// Element c of weight row wr, exactly as core::dequantize computes it (same operations in the
// same order; where the CPU rounds twice and the device may fuse, the product is exact).
template <QuantType QT>
ZS_QHD float dequant_element(const uint8_t* wr, int64_t c) {
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
    return v;
}

}  // namespace qblocks

}  // namespace zs::backends::cuda
