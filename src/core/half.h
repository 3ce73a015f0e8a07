// f32 <-> bf16 / f16 conversion: round-to-nearest-even, NaN-safe (a NaN stays a quiet NaN with its
// sign; it never rounds into Inf), overflow rounds to Inf as IEEE requires.
//
// Scalar versions are inline for kernels; the span versions are vectorised (AVX-512 where the
// build targets it) and bit-identical to the scalar ones, which the tests check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace zs::core {

inline uint32_t f32_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float f32_from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline float bf16_to_f32(bf16 h) { return f32_from_bits(static_cast<uint32_t>(h.bits) << 16); }

inline bf16 f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep sign and top payload, force quiet bit
        return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return bf16{static_cast<uint16_t>(u >> 16)};
}

float f16_to_f32_scalar(f16 h);
f16 f32_to_f16_scalar(float f);

inline float f16_to_f32(f16 h) { return f16_to_f32_scalar(h); }
inline f16 f32_to_f16(float f) { return f32_to_f16_scalar(f); }

// Span conversions (n elements). dst and src must not overlap.
void convert_f32_to_bf16(bf16* dst, const float* src, size_t n);
void convert_bf16_to_f32(float* dst, const bf16* src, size_t n);
void convert_f32_to_f16(f16* dst, const float* src, size_t n);
void convert_f16_to_f32(float* dst, const f16* src, size_t n);

// Any-to-any element conversion between two contiguous arrays of n elements. Float -> int
// conversions truncate toward zero; int -> float is exact where representable.
void convert(void* dst, DType dst_type, const void* src, DType src_type, size_t n);

// Load element i of a float array of type t as f32 (t must be f32, bf16 or f16).
inline float load_f32(const void* p, DType t, size_t i) {
    switch (t) {
        case DType::f32:
            return static_cast<const float*>(p)[i];
        case DType::bf16:
            return bf16_to_f32(static_cast<const bf16*>(p)[i]);
        case DType::f16:
            return f16_to_f32(static_cast<const f16*>(p)[i]);
        case DType::i8:
            return static_cast<float>(static_cast<const int8_t*>(p)[i]);
        case DType::i32:
            return static_cast<float>(static_cast<const int32_t*>(p)[i]);
        case DType::i64:
            return static_cast<float>(static_cast<const int64_t*>(p)[i]);
    }
    return 0.0f;
}

}  // namespace zs::core
