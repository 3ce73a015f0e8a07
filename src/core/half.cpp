#include "core/half.h"

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include "base/simd.h"
#define ZS_HALF_AVX512 1
#elif defined(__AVX2__)
#include "base/simd.h"
#define ZS_HALF_AVX2 1
#endif

#include "base/error.h"

namespace zs::core {

float f16_to_f32_scalar(f16 h) {
    uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
    uint32_t exp = (h.bits >> 10) & 0x1fu;
    uint32_t mant = h.bits & 0x3ffu;
    if (exp == 0) {
        if (mant == 0) return f32_from_bits(sign);
        // Subnormal: value = mant * 2^-24; normalise into an f32 normal.
        int e = -1;
        do {
            mant <<= 1;
            ++e;
        } while ((mant & 0x400u) == 0);
        mant &= 0x3ffu;
        return f32_from_bits(sign | (static_cast<uint32_t>(112 - e) << 23) | (mant << 13));
    }
    if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (mant << 13));
    return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

f16 f32_to_f16_scalar(float f) {
    uint32_t u = f32_bits(f);
    auto sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) {  // NaN -> quiet NaN, top payload bits kept (as vcvtps2ph does)
        return f16{static_cast<uint16_t>(sign | 0x7e00u | ((u >> 13) & 0x3ffu))};
    }
    if (u >= 0x477ff000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};  // >= 65520 -> Inf
    uint32_t e = u >> 23;
    if (e < 113) {  // f16 subnormal or zero
        if (e < 102) return f16{sign};
        uint32_t mant = (u & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;
        uint32_t r = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return f16{static_cast<uint16_t>(sign | r)};
    }
    uint32_t v = u - (112u << 23);
    uint32_t r = v >> 13;
    uint32_t rem = v & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
    return f16{static_cast<uint16_t>(sign | r)};
}

void convert_f32_to_bf16(bf16* dst, const float* src, size_t n) {
    size_t i = 0;
#ifdef ZS_HALF_AVX512
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    const __m512i inf = _mm512_set1_epi32(0x7f800000);
    const __m512i bias = _mm512_set1_epi32(0x7fff);
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i qbit = _mm512_set1_epi32(0x00400000);
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512(src + i);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
        __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(bias, lsb));
        __m512i quiet = _mm512_or_si512(u, qbit);
        __m512i r = _mm512_mask_mov_epi32(rounded, nan, quiet);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
    }
#elif defined(ZS_HALF_AVX2)
    // The same rounding by 8 lanes (a KV-cache append's rows are 64 values: scalar stores to
    // the cache's cold lines filled the store buffer and serialised their misses).
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    const __m256i bias = _mm256_set1_epi32(0x7fff);
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i qbit = _mm256_set1_epi32(0x00400000);
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
        __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(bias, lsb));
        __m256i r =
            _mm256_srli_epi32(_mm256_blendv_epi8(rounded, _mm256_or_si256(u, qbit), nan), 16);
        // Pack the eight 16-bit results (per-128-bit-lane pack, then the two lanes' halves).
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_castsi256_si128(p));
    }
#endif
    for (; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void convert_bf16_to_f32(float* dst, const bf16* src, size_t n) {
    size_t i = 0;
#ifdef ZS_HALF_AVX512
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
        _mm512_storeu_si512(dst + i, _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
#elif defined(ZS_HALF_AVX2)
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                            _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
#endif
    for (; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void convert_f32_to_f16(f16* dst, const float* src, size_t n) {
    size_t i = 0;
#ifdef ZS_HALF_AVX512
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), h);
    }
#endif
    for (; i < n; ++i) dst[i] = f32_to_f16_scalar(src[i]);
}

void convert_f16_to_f32(float* dst, const f16* src, size_t n) {
    size_t i = 0;
#ifdef ZS_HALF_AVX512
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
    }
#endif
    for (; i < n; ++i) dst[i] = f16_to_f32_scalar(src[i]);
}

namespace {

template <class D>
void store_from_f32(D* dst, const float* src, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<D>(src[i]);
}

// Convert a chunk to f32 scratch, then to the destination type.
void to_f32_chunk(float* tmp, const void* src, DType t, size_t n) {
    switch (t) {
        case DType::f32:
            std::memcpy(tmp, src, n * 4);
            return;
        case DType::bf16:
            convert_bf16_to_f32(tmp, static_cast<const bf16*>(src), n);
            return;
        case DType::f16:
            convert_f16_to_f32(tmp, static_cast<const f16*>(src), n);
            return;
        case DType::i8:
        case DType::i32:
        case DType::i64:
            for (size_t i = 0; i < n; ++i) tmp[i] = load_f32(src, t, i);
            return;
    }
}

void from_f32_chunk(void* dst, DType t, const float* tmp, size_t n) {
    switch (t) {
        case DType::f32:
            std::memcpy(dst, tmp, n * 4);
            return;
        case DType::bf16:
            convert_f32_to_bf16(static_cast<bf16*>(dst), tmp, n);
            return;
        case DType::f16:
            convert_f32_to_f16(static_cast<f16*>(dst), tmp, n);
            return;
        case DType::i8:
            store_from_f32(static_cast<int8_t*>(dst), tmp, n);
            return;
        case DType::i32:
            store_from_f32(static_cast<int32_t*>(dst), tmp, n);
            return;
        case DType::i64:
            store_from_f32(static_cast<int64_t*>(dst), tmp, n);
            return;
    }
}

template <class D, class S>
void int_convert(void* dst, const void* src, size_t n) {
    auto* d = static_cast<D*>(dst);
    const auto* s = static_cast<const S*>(src);
    for (size_t i = 0; i < n; ++i) d[i] = static_cast<D>(s[i]);
}

bool is_int(DType t) { return !is_floating(t); }

}  // namespace

void convert(void* dst, DType dst_type, const void* src, DType src_type, size_t n) {
    if (n == 0) return;  // empty tensors may have null data
    if (dst_type == src_type) {
        std::memcpy(dst, src, n * dtype_size(dst_type));
        return;
    }
    if (dst_type == DType::bf16 && src_type == DType::f32) {
        return convert_f32_to_bf16(static_cast<bf16*>(dst), static_cast<const float*>(src), n);
    }
    if (dst_type == DType::f32 && src_type == DType::bf16) {
        return convert_bf16_to_f32(static_cast<float*>(dst), static_cast<const bf16*>(src), n);
    }
    if (dst_type == DType::f16 && src_type == DType::f32) {
        return convert_f32_to_f16(static_cast<f16*>(dst), static_cast<const float*>(src), n);
    }
    if (dst_type == DType::f32 && src_type == DType::f16) {
        return convert_f16_to_f32(static_cast<float*>(dst), static_cast<const f16*>(src), n);
    }
    if (is_int(dst_type) && is_int(src_type)) {
        // Integer widths: exact where representable (i64 -> i32 wraps like static_cast).
        auto pick = [&](auto d_tag) {
            using D = decltype(d_tag);
            switch (src_type) {
                case DType::i8:
                    return int_convert<D, int8_t>(dst, src, n);
                case DType::i32:
                    return int_convert<D, int32_t>(dst, src, n);
                case DType::i64:
                    return int_convert<D, int64_t>(dst, src, n);
                case DType::f32:
                case DType::bf16:
                case DType::f16:
                    ZS_ASSERT(false);
            }
        };
        if (dst_type == DType::i8) return pick(int8_t{});
        if (dst_type == DType::i32) return pick(int32_t{});
        return pick(int64_t{});
    }
    // Anything else goes through f32 in chunks.
    constexpr size_t kChunk = 1024;
    float tmp[kChunk];
    auto* d = static_cast<char*>(dst);
    const auto* s = static_cast<const char*>(src);
    size_t ds = dtype_size(dst_type), ss = dtype_size(src_type);
    for (size_t i = 0; i < n; i += kChunk) {
        size_t m = n - i < kChunk ? n - i : kChunk;
        to_f32_chunk(tmp, s + i * ss, src_type, m);
        from_f32_chunk(d + i * ds, dst_type, tmp, m);
    }
}

}  // namespace zs::core
