#include "io/ggml_type.h"

#include <cstring>

#include "base/error.h"
#include "core/half.h"
#include "core/quant.h"

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

void deq_q8_1(const uint8_t* b, float* y) {  // f16 d | f16 s | int8 q[32]
    const float d = load_f16(b);
    const auto* q = reinterpret_cast<const int8_t*>(b + 4);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(q[i]);
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

std::optional<core::QType> to_qtype(GgmlType t) {
    switch (t) {
        case GgmlType::q8_0:
            return core::QType::q8_0;
        case GgmlType::q4_0:
            return core::QType::q4_0;
        case GgmlType::q4_1:
            return core::QType::q4_1;
        case GgmlType::q5_0:
            return core::QType::q5_0;
        case GgmlType::q5_1:
            return core::QType::q5_1;
        case GgmlType::q4_k:
            return core::QType::q4_k;
        case GgmlType::q5_k:
            return core::QType::q5_k;
        case GgmlType::q6_k:
            return core::QType::q6_k;
        case GgmlType::q8_k:
            return core::QType::q8_k;
        default:
            return std::nullopt;
    }
}

GgmlType to_ggml_type(core::QType t) {
    switch (t) {
        case core::QType::q8_0:
            return GgmlType::q8_0;
        case core::QType::q4_0:
            return GgmlType::q4_0;
        case core::QType::q4_1:
            return GgmlType::q4_1;
        case core::QType::q5_0:
            return GgmlType::q5_0;
        case core::QType::q5_1:
            return GgmlType::q5_1;
        case core::QType::q4_k:
            return GgmlType::q4_k;
        case core::QType::q5_k:
            return GgmlType::q5_k;
        case core::QType::q6_k:
            return GgmlType::q6_k;
        case core::QType::q8_k:
            return GgmlType::q8_k;
    }
    return GgmlType::q8_0;
}

const GgmlTypeTraits& traits(GgmlType t) {
    // Sizes follow ggml-common.h's block structs (see the header comment).
    static constexpr GgmlTypeTraits kF32{"F32", 1, 4, true}, kF16{"F16", 1, 2, true},
        kQ4_0{"Q4_0", 32, 18, true}, kQ4_1{"Q4_1", 32, 20, true}, kQ5_0{"Q5_0", 32, 22, true},
        kQ5_1{"Q5_1", 32, 24, true}, kQ8_0{"Q8_0", 32, 34, true}, kQ8_1{"Q8_1", 32, 36, true},
        kQ2_K{"Q2_K", 256, 84, false}, kQ3_K{"Q3_K", 256, 110, false},
        kQ4_K{"Q4_K", 256, 144, true}, kQ5_K{"Q5_K", 256, 176, true}, kQ6_K{"Q6_K", 256, 210, true},
        kQ8_K{"Q8_K", 256, 292, true}, kIQ2_XXS{"IQ2_XXS", 256, 66, false},
        kIQ2_XS{"IQ2_XS", 256, 74, false}, kIQ3_XXS{"IQ3_XXS", 256, 98, false},
        kIQ1_S{"IQ1_S", 256, 50, false}, kIQ4_NL{"IQ4_NL", 32, 18, false},
        kIQ3_S{"IQ3_S", 256, 110, false}, kIQ2_S{"IQ2_S", 256, 82, false},
        kIQ4_XS{"IQ4_XS", 256, 136, false}, kI8{"I8", 1, 1, true}, kI16{"I16", 1, 2, true},
        kI32{"I32", 1, 4, true}, kI64{"I64", 1, 8, true}, kF64{"F64", 1, 8, true},
        kIQ1_M{"IQ1_M", 256, 56, false}, kBF16{"BF16", 1, 2, true}, kTQ1_0{"TQ1_0", 256, 54, false},
        kTQ2_0{"TQ2_0", 256, 66, false}, kMXFP4{"MXFP4", 32, 17, false},
        kNVFP4{"NVFP4", 64, 36, false}, kQ1_0{"Q1_0", 128, 18, false}, kQ2_0{"Q2_0", 64, 18, false};
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
        case GgmlType::q8_1:
            return dequantize_blocks(deq_q8_1, 32, 36, src, dst, n);
        case GgmlType::q4_0:
        case GgmlType::q4_1:
        case GgmlType::q5_0:
        case GgmlType::q5_1:
        case GgmlType::q8_0:
        case GgmlType::q4_k:
        case GgmlType::q5_k:
        case GgmlType::q6_k:
        case GgmlType::q8_k:
            return core::dequantize(*to_qtype(t), src, dst, n);
        case GgmlType::q2_k:
        case GgmlType::q3_k:
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
