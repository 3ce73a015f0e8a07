// GGML tensor types as stored in GGUF files: their block layouts and dequantization to f32.
//
// A GGML type packs `block_size` consecutive elements of a row into `type_size` bytes; a row of
// ne[0] elements is ne[0] / block_size blocks. Blocks used here (little-endian, f16 = IEEE half):
//   q8_0 (32 el, 34 B): f16 d; int8 q[32]                     x[i] = d * q[i]
//   q8_1 (32 el, 36 B): f16 d; f16 s (= d * sum q, unused); int8 q[32]  x[i] = d * q[i]
//   q4_0 (32 el, 18 B): f16 d; u8 qs[16]                      x[i] = d * (nib(i) - 8)
//   q4_1 (32 el, 20 B): f16 d; f16 m; u8 qs[16]               x[i] = d * nib(i) + m
//   q5_0 (32 el, 22 B): f16 d; u32 qh; u8 qs[16]              x[i] = d * (nib(i) | hb(i) << 4) - 16
//   d q5_1 (32 el, 24 B): f16 d; f16 m; u32 qh; u8 qs[16]       x[i] = d * (nib(i) | hb(i) << 4) +
//   m
//     nib(i) = low nibble of qs[i] for i < 16, high nibble of qs[i - 16] otherwise; hb(i) = bit i
//     of qh.
//   q4_k, q5_k, q6_k, q8_k (256 el): super-blocks; their layouts and decoders live in
//     core/quant.h, which the kernels share.
// Other known types (k-quants, i-quants, ...) are recognised for validation (their sizes) but
// cannot be dequantized: can_dequantize() says which can.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "core/quant.h"

namespace zs::io {

enum class GgmlType : uint32_t {
    f32 = 0,
    f16 = 1,
    q4_0 = 2,
    q4_1 = 3,
    q5_0 = 6,
    q5_1 = 7,
    q8_0 = 8,
    q8_1 = 9,
    q2_k = 10,
    q3_k = 11,
    q4_k = 12,
    q5_k = 13,
    q6_k = 14,
    q8_k = 15,
    iq2_xxs = 16,
    iq2_xs = 17,
    iq3_xxs = 18,
    iq1_s = 19,
    iq4_nl = 20,
    iq3_s = 21,
    iq2_s = 22,
    iq4_xs = 23,
    i8 = 24,
    i16 = 25,
    i32 = 26,
    i64 = 27,
    f64 = 28,
    iq1_m = 29,
    bf16 = 30,
    tq1_0 = 34,
    tq2_0 = 35,
    mxfp4 = 39,
    nvfp4 = 40,
    q1_0 = 41,
    q2_0 = 42
};

struct GgmlTypeTraits {
    const char* name;    // "Q4_0", "F32", ...
    int64_t block_size;  // elements per block
    int64_t type_size;   // bytes per block
    bool can_dequantize;
};

// The type with numeric value v, or nullopt when v is out of range or a removed type.
std::optional<GgmlType> ggml_type_from_u32(uint32_t v);
const GgmlTypeTraits& traits(GgmlType t);
inline const char* to_string(GgmlType t) { return traits(t).name; }
inline bool can_dequantize(GgmlType t) { return traits(t).can_dequantize; }

// The block-quantized types the kernels compute with directly (core/quant.h), and back.
std::optional<core::QType> to_qtype(GgmlType t);
GgmlType to_ggml_type(core::QType t);

// Decode n elements (n a multiple of the block size) from `src` (n / block_size * type_size
// bytes, any alignment) into dst[0..n). The type must satisfy can_dequantize().
void dequantize(GgmlType t, const uint8_t* src, float* dst, int64_t n);

}  // namespace zs::io
