#include "io/ggml_type.h"

#include <cstring>

#include "base/error.h"
#include "core/half.h"

namespace zs::io {

namespace {

float load_f16(const uint8_t* p) {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    return core::f16_to_f32(core::f16{bits});
}

template <class T>
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}

// Element i (0..31) of a 32-element block with 4-bit quants in qs[16]: the low nibbles hold
// elements 0..15, the high nibbles elements 16..31.
int nibble(const uint8_t* qs, int i) { return i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4); }

void deq_q8_0(const uint8_t* b, float* y) {  // f16 d | int8 q[32]
    const float d = load_f16(b);
    const auto* q = reinterpret_cast<const int8_t*>(b + 2);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(q[i]);
}

void deq_q8_1(const uint8_t* b, float* y) {  // f16 d | f16 s | int8 q[32]
    const float d = load_f16(b);
    const auto* q = reinterpret_cast<const int8_t*>(b + 4);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(q[i]);
}

void deq_q4_0(const uint8_t* b, float* y) {  // f16 d | u8 qs[16]
    const float d = load_f16(b);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(nibble(b + 2, i) - 8);
}

void deq_q4_1(const uint8_t* b, float* y) {  // f16 d | f16 m | u8 qs[16]
    const float d = load_f16(b), m = load_f16(b + 2);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(nibble(b + 4, i)) + m;
}

void deq_q5_0(const uint8_t* b, float* y) {  // f16 d | u32 qh | u8 qs[16]
    const float d = load_f16(b);
    const uint32_t qh = load<uint32_t>(b + 2);
    for (int i = 0; i < 32; ++i) {
        int q = nibble(b + 6, i) | static_cast<int>(((qh >> i) & 1u) << 4);
        y[i] = d * static_cast<float>(q - 16);
    }
}

void deq_q5_1(const uint8_t* b, float* y) {  // f16 d | f16 m | u32 qh | u8 qs[16]
    const float d = load_f16(b), m = load_f16(b + 2);
    const uint32_t qh = load<uint32_t>(b + 4);
    for (int i = 0; i < 32; ++i) {
        int q = nibble(b + 8, i) | static_cast<int>(((qh >> i) & 1u) << 4);
        y[i] = d * static_cast<float>(q) + m;
    }
}

// q4_k super-block (256 elements, 144 bytes): f16 d | f16 dmin | u8 scales[12] | u8 qs[128].
// Sub-block j (32 elements, j = 0..7) has a 6-bit scale sc[j] and a 6-bit min mn[j], packed in
// `scales` as: j < 4: sc = s[j] & 63, mn = s[j+4] & 63; j >= 4: sc = (s[j+4] & 15) | (s[j-4] >> 6)
// << 4, mn = (s[j+4] >> 4) | (s[j] >> 6) << 4. Elements 64c..64c+31 are the low nibbles of
// qs[32c..32c+31] (sub-block 2c), elements 64c+32..64c+63 their high nibbles (sub-block 2c+1).
// x = d * sc[j] * q - dmin * mn[j].
void deq_q4_k(const uint8_t* b, float* y) {
    const float d = load_f16(b), dmin = load_f16(b + 2);
    const uint8_t* s = b + 4;
    const uint8_t* qs = b + 16;
    for (int j = 0; j < 8; ++j) {
        int sc, mn;
        if (j < 4) {
            sc = s[j] & 63;
            mn = s[j + 4] & 63;
        } else {
            sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
            mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        const float dj = d * static_cast<float>(sc), mj = dmin * static_cast<float>(mn);
        const uint8_t* q = qs + 32 * (j / 2);
        const int shift = (j % 2) * 4;
        for (int l = 0; l < 32; ++l) {
            y[32 * j + l] = dj * static_cast<float>((q[l] >> shift) & 0x0F) - mj;
        }
    }
}

// q6_k super-block (256 elements, 210 bytes): u8 ql[128] | u8 qh[64] | int8 sc[16] | f16 d.
// Two halves of 128 elements (h = 0, 1) use ql[64h..], qh[32h..], sc[8h..]. In a half, element
// 32k + l (k = 0..3, l = 0..31) takes its low 4 bits from ql[l + 32 (k % 2)] (low nibble for
// k < 2, high nibble otherwise) and its high 2 bits from bits 2k..2k+1 of qh[l]; its scale is
// sc[l / 16 + 2k]. x = d * sc * (q - 32).
void deq_q6_k(const uint8_t* b, float* y) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = load_f16(b + 208);
    for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 4; ++k) {
            for (int l = 0; l < 32; ++l) {
                int lo = (ql[64 * h + l + 32 * (k % 2)] >> (k < 2 ? 0 : 4)) & 0x0F;
                int hi = (qh[32 * h + l] >> (2 * k)) & 3;
                int q = (lo | (hi << 4)) - 32;
                float s = static_cast<float>(sc[8 * h + l / 16 + 2 * k]);
                y[128 * h + 32 * k + l] = d * s * static_cast<float>(q);
            }
        }
    }
}

using BlockFn = void (*)(const uint8_t*, float*);

void dequantize_blocks(BlockFn fn, int64_t block_size, int64_t type_size, const uint8_t* src,
                       float* dst, int64_t n) {
    for (int64_t b = 0; b < n / block_size; ++b) fn(src + b * type_size, dst + b * block_size);
}

template <class T>
void widen(const uint8_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load<T>(src + i * sizeof(T)));
}

}  // namespace

std::optional<GgmlType> ggml_type_from_u32(uint32_t v) {
    switch (v) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 6:
        case 7:
        case 8:
        case 9:
        case 10:
        case 11:
        case 12:
        case 13:
        case 14:
        case 15:
        case 16:
        case 17:
        case 18:
        case 19:
        case 20:
        case 21:
        case 22:
        case 23:
        case 24:
        case 25:
        case 26:
        case 27:
        case 28:
        case 29:
        case 30:
        case 34:
        case 35:
        case 39:
        case 40:
        case 41:
        case 42:
            return static_cast<GgmlType>(v);
        default:
            return std::nullopt;
    }
}

const GgmlTypeTraits& traits(GgmlType t) {
    // Sizes follow ggml-common.h's block structs (see the header comment).
    static constexpr GgmlTypeTraits kF32{"F32", 1, 4, true}, kF16{"F16", 1, 2, true},
        kQ4_0{"Q4_0", 32, 18, true}, kQ4_1{"Q4_1", 32, 20, true}, kQ5_0{"Q5_0", 32, 22, true},
        kQ5_1{"Q5_1", 32, 24, true}, kQ8_0{"Q8_0", 32, 34, true}, kQ8_1{"Q8_1", 32, 36, true},
        kQ2_K{"Q2_K", 256, 84, false}, kQ3_K{"Q3_K", 256, 110, false},
        kQ4_K{"Q4_K", 256, 144, true}, kQ5_K{"Q5_K", 256, 176, false},
        kQ6_K{"Q6_K", 256, 210, true}, kQ8_K{"Q8_K", 256, 292, false},
        kIQ2_XXS{"IQ2_XXS", 256, 66, false}, kIQ2_XS{"IQ2_XS", 256, 74, false},
        kIQ3_XXS{"IQ3_XXS", 256, 98, false}, kIQ1_S{"IQ1_S", 256, 50, false},
        kIQ4_NL{"IQ4_NL", 32, 18, false}, kIQ3_S{"IQ3_S", 256, 110, false},
        kIQ2_S{"IQ2_S", 256, 82, false}, kIQ4_XS{"IQ4_XS", 256, 136, false}, kI8{"I8", 1, 1, true},
        kI16{"I16", 1, 2, true}, kI32{"I32", 1, 4, true}, kI64{"I64", 1, 8, true},
        kF64{"F64", 1, 8, true}, kIQ1_M{"IQ1_M", 256, 56, false}, kBF16{"BF16", 1, 2, true},
        kTQ1_0{"TQ1_0", 256, 54, false}, kTQ2_0{"TQ2_0", 256, 66, false},
        kMXFP4{"MXFP4", 32, 17, false}, kNVFP4{"NVFP4", 64, 36, false},
        kQ1_0{"Q1_0", 128, 18, false}, kQ2_0{"Q2_0", 64, 18, false};
    switch (t) {
        case GgmlType::f32:
            return kF32;
        case GgmlType::f16:
            return kF16;
        case GgmlType::q4_0:
            return kQ4_0;
        case GgmlType::q4_1:
            return kQ4_1;
        case GgmlType::q5_0:
            return kQ5_0;
        case GgmlType::q5_1:
            return kQ5_1;
        case GgmlType::q8_0:
            return kQ8_0;
        case GgmlType::q8_1:
            return kQ8_1;
        case GgmlType::q2_k:
            return kQ2_K;
        case GgmlType::q3_k:
            return kQ3_K;
        case GgmlType::q4_k:
            return kQ4_K;
        case GgmlType::q5_k:
            return kQ5_K;
        case GgmlType::q6_k:
            return kQ6_K;
        case GgmlType::q8_k:
            return kQ8_K;
        case GgmlType::iq2_xxs:
            return kIQ2_XXS;
        case GgmlType::iq2_xs:
            return kIQ2_XS;
        case GgmlType::iq3_xxs:
            return kIQ3_XXS;
        case GgmlType::iq1_s:
            return kIQ1_S;
        case GgmlType::iq4_nl:
            return kIQ4_NL;
        case GgmlType::iq3_s:
            return kIQ3_S;
        case GgmlType::iq2_s:
            return kIQ2_S;
        case GgmlType::iq4_xs:
            return kIQ4_XS;
        case GgmlType::i8:
            return kI8;
        case GgmlType::i16:
            return kI16;
        case GgmlType::i32:
            return kI32;
        case GgmlType::i64:
            return kI64;
        case GgmlType::f64:
            return kF64;
        case GgmlType::iq1_m:
            return kIQ1_M;
        case GgmlType::bf16:
            return kBF16;
        case GgmlType::tq1_0:
            return kTQ1_0;
        case GgmlType::tq2_0:
            return kTQ2_0;
        case GgmlType::mxfp4:
            return kMXFP4;
        case GgmlType::nvfp4:
            return kNVFP4;
        case GgmlType::q1_0:
            return kQ1_0;
        case GgmlType::q2_0:
            return kQ2_0;
    }
    ZS_ASSERT(false, "bad GgmlType {}", static_cast<uint32_t>(t));
    return kF32;
}

void dequantize(GgmlType t, const uint8_t* src, float* dst, int64_t n) {
    const GgmlTypeTraits& tr = traits(t);
    ZS_ASSERT(n % tr.block_size == 0, "{} elements of {} are not whole blocks", n, tr.name);
    switch (t) {
        case GgmlType::f32:
            if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * 4);
            return;
        case GgmlType::f16:
            for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(src + 2 * i);
            return;
        case GgmlType::bf16:
            for (int64_t i = 0; i < n; ++i) {
                dst[i] = core::bf16_to_f32(core::bf16{load<uint16_t>(src + 2 * i)});
            }
            return;
        case GgmlType::f64:
            return widen<double>(src, dst, n);
        case GgmlType::i8:
            return widen<int8_t>(src, dst, n);
        case GgmlType::i16:
            return widen<int16_t>(src, dst, n);
        case GgmlType::i32:
            return widen<int32_t>(src, dst, n);
        case GgmlType::i64:
            return widen<int64_t>(src, dst, n);
        case GgmlType::q4_0:
            return dequantize_blocks(deq_q4_0, 32, 18, src, dst, n);
        case GgmlType::q4_1:
            return dequantize_blocks(deq_q4_1, 32, 20, src, dst, n);
        case GgmlType::q5_0:
            return dequantize_blocks(deq_q5_0, 32, 22, src, dst, n);
        case GgmlType::q5_1:
            return dequantize_blocks(deq_q5_1, 32, 24, src, dst, n);
        case GgmlType::q8_0:
            return dequantize_blocks(deq_q8_0, 32, 34, src, dst, n);
        case GgmlType::q8_1:
            return dequantize_blocks(deq_q8_1, 32, 36, src, dst, n);
        case GgmlType::q4_k:
            return dequantize_blocks(deq_q4_k, 256, 144, src, dst, n);
        case GgmlType::q6_k:
            return dequantize_blocks(deq_q6_k, 256, 210, src, dst, n);
        case GgmlType::q2_k:
        case GgmlType::q3_k:
        case GgmlType::q5_k:
        case GgmlType::q8_k:
        case GgmlType::iq2_xxs:
        case GgmlType::iq2_xs:
        case GgmlType::iq3_xxs:
        case GgmlType::iq1_s:
        case GgmlType::iq4_nl:
        case GgmlType::iq3_s:
        case GgmlType::iq2_s:
        case GgmlType::iq4_xs:
        case GgmlType::iq1_m:
        case GgmlType::tq1_0:
        case GgmlType::tq2_0:
        case GgmlType::mxfp4:
        case GgmlType::nvfp4:
        case GgmlType::q1_0:
        case GgmlType::q2_0:
            break;
    }
    ZS_ASSERT(false, "dequantize: type {} is not supported (check can_dequantize first)", tr.name);
}

}  // namespace zs::io
