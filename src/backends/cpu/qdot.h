// Dot products of block-quantized weight rows with Q8 activations: the inner loop of the
// quantized GEMV (qgemv.cpp), one implementation per instruction set.
//
// Activations are quantized per 32 elements (llama.cpp's vec_dot quantizes them to Q8 the same
// way): a ≈ d[c] * q[32c + l]; s0[c] / s1[c] are the sums of q over the two halves (l < 16,
// l >= 16). Every weight type is read as 32-element chunks of unsigned codes u with, per
// 16-element half h, a scale and an offset: w = sc_h * u + mn_h (q4_0: sc = d, mn = -8 d; q6_k:
// the half's own scale, mn = -32 sc; ...). Then
//   dot(w, a) = sum_c d[c] * (sc_0 <u, q>_0 + sc_1 <u, q>_1 + mn_0 s0[c] + mn_1 s1[c])
// where <u, q> are exact int32 dot products (VNNI: vpdpbusd, unsigned x signed bytes).
//
// This header is included by translation units compiled for different instruction sets, so it
// holds declarations only (no inline code that the linker could pick from the wrong one).
#pragma once

#include <cstdint>

#include "core/quant.h"

namespace zs::backends::cpu {

struct QActRow {
    const int8_t* q;    // [K]
    const float* d;     // [K / 32]
    const int32_t* s0;  // [K / 32]
    const int32_t* s1;  // [K / 32]
    const float* ds0;   // [K / 32] d * s0 (the offsets' factors, precomputed)
    const float* ds1;   // [K / 32] d * s1
};

// res[r * m + i] = dot(weight row r, acts[i]) for rows r in [0, rows) starting at w (rows
// `row_bytes` apart) with k elements each, and activation rows i in [0, m).
using QDotRowsFn = void (*)(core::QType t, const uint8_t* w, int64_t row_bytes, int64_t rows,
                            int64_t k, const QActRow* acts, int m, float* res);

void qdot_rows_scalar(core::QType t, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k,
                      const QActRow* acts, int m, float* res);
// The same for the 16 rows of one group of an interleaved16 QTensor (core/quant_pack.cpp) at g,
// stored by activation row: res[16 i + r] for r < 16, any m (activation rows taken 4 at a time).
// The types core::can_interleave accepts: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k.
void qdot_group16_vnni(core::QType t, const uint8_t* g, int64_t k, const QActRow* acts, int m,
                       float* res);
// The same with AVX2 (qdot_avx2.cpp; call only where the CPU has AVX2, FMA and F16C), for the
// same types.
void qdot_group16_avx2(core::QType t, const uint8_t* g, int64_t k, const QActRow* acts, int m,
                       float* res);
// Decode's form of qdot_group16_avx2: res[16 gi + r] for the n (1..4) groups at g[gi] and one
// activation row, the groups' bytes read side by side (n memory streams at once: one core's
// hardware prefetcher keeps more misses in flight over several streams than over one). Each value
// equals qdot_group16_avx2's with m = 1, bit for bit.
void qdot_groups16_streams_avx2(core::QType t, const uint8_t* const* g, int n, int64_t k,
                                const QActRow& act, float* res);
// qgemv.h's quantize_q8_act with AVX-512 (ties round to even instead of away from zero, as
// llama.cpp's vectorised quantize_row_q8_0 does).
void quantize_q8_act_avx512(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0,
                            int32_t* s1);
// qgemv.h's quantize_q8_act with AVX2 (qdot_avx2.cpp), bit for bit: ties round away from zero as
// lround does. Call only where the CPU has AVX2.
void quantize_q8_act_avx2(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0, int32_t* s1);
// AVX-512 VNNI (with BW and VL); call only where the CPU has them.
void qdot_rows_vnni(core::QType t, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k,
                    const QActRow* acts, int m, float* res);

}  // namespace zs::backends::cpu
