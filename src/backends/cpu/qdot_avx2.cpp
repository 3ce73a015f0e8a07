// qdot_group16_avx2: the interleaved16 quantized dot products (qdot.h) with AVX2, for CPUs without
// AVX-512 VNNI (Zen 2, Zen 3, older Intel). Compiled with -mavx2/-mfma/-mf16c whatever the build
// targets and called only after a run-time CPU check (qgemv.cpp), so it includes nothing with
// inline code shared with other units but the intrinsics, and keeps its helpers in an anonymous
// namespace.
//
// The arithmetic is qdot_vnni.cpp's, each 64-byte slab (4 codes of each of 16 rows) taken as two
// 32-byte halves of 8 rows. AVX2 has no vpdpbusd: vpmaddubsw multiplies the unsigned codes by the
// broadcast activation bytes and adds pairs into int16, vpmaddwd by ones adds those pairs into one
// int32 per row. The int16 pair sums never saturate or wrap: activation codes are in [-127, 127],
// so a pair is at most 2 * 127 * (largest code), and int16 sums of several slabs are taken only
// while that bound times the count stays below 2^15 (4-bit codes: 8 slabs, 5-bit: 4, 6-bit: 2).
// q8_0's codes (stored + 128) are made signed again and multiplied with vpsignb's sign trick
// (|c| * sign(c) q, a pair at most 2 * 128 * 127), so its offset needs no correction term. Every
// int32 dot product is therefore exact and, for the same Q8 activations, equal to the VNNI
// kernel's; the scales are applied by the same float operations in the same order. (This path's
// activations come from the scalar quantize_q8_act, ties away from zero, the VNNI path's from
// quantize_q8_act_avx512, ties to even.)
#include <cstring>

#include <immintrin.h>

#include "backends/cpu/qdot.h"
#include "backends/cpu/qdot_group16.h"

namespace zs::backends::cpu {

using core::QType;

namespace {

// The helpers are forced inline: out of line (GCC's choice for the dot loops) their vectors go
// through memory on every call.
#define ZS_AVX2_INLINE inline __attribute__((always_inline))
// Software prefetch distance in bytes (qdot_vnni.cpp's): a thread's groups are consecutive in
// memory, so reading past the group's end prefetches the next one (ZS_QPF2 at build time for
// experiments; 0: none).
#ifndef ZS_QPF2
#define ZS_QPF2 4096
#endif
constexpr int64_t kAhead = ZS_QPF2;
// The same for the decode kernels that read several groups side by side (several streams the
// hardware prefetcher follows at once; software prefetch on top measured slower).
#ifndef ZS_QPF_STREAMS
#define ZS_QPF_STREAMS 512
#endif
constexpr int64_t kStreamAhead = ZS_QPF_STREAMS;

ZS_AVX2_INLINE __m256 f16x8(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
ZS_AVX2_INLINE __m256i load32(const uint8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
ZS_AVX2_INLINE __m256i bcast4(const int8_t* q) {
    int32_t v;
    std::memcpy(&v, q, 4);
    return _mm256_set1_epi32(v);
}
ZS_AVX2_INLINE __m256 u8x8(const uint8_t* p) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
ZS_AVX2_INLINE __m256 i8x8(const uint8_t* p) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
ZS_AVX2_INLINE __m256i merge(__m256i s, __m256i h, __m256i m) {
    return _mm256_or_si256(s, _mm256_and_si256(h, m));
}

// The 8 slabs of one chunk for rows [8 half, 8 half + 8): s[k] pairs with activation bytes
// 4k..4k+3 (qdot_vnni.cpp's chunk_codes on one half of each slab).
template <int kBits>
ZS_AVX2_INLINE void chunk_codes(const uint8_t* c, int half, __m256i* s) {
    const int o = 32 * half;
    if constexpr (kBits == 8) {
        for (int k = 0; k < 8; ++k) s[k] = load32(c + 64 * k + o);
    } else {
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        for (int p = 0; p < 4; ++p) {
            const __m256i v = load32(c + 64 * p + o);
            s[p] = _mm256_and_si256(v, m4);
            s[p + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        }
        if constexpr (kBits == 5) {
            const __m256i m1 = _mm256_set1_epi8(0x10);
            const __m256i h = load32(c + 256 + o);
            s[0] = merge(s[0], _mm256_slli_epi16(h, 4), m1);
            s[1] = merge(s[1], _mm256_slli_epi16(h, 3), m1);
            s[2] = merge(s[2], _mm256_slli_epi16(h, 2), m1);
            s[3] = merge(s[3], _mm256_slli_epi16(h, 1), m1);
            s[4] = merge(s[4], h, m1);
            s[5] = merge(s[5], _mm256_srli_epi16(h, 1), m1);
            s[6] = merge(s[6], _mm256_srli_epi16(h, 2), m1);
            s[7] = merge(s[7], _mm256_srli_epi16(h, 3), m1);
        }
        if constexpr (kBits == 6) {
            const __m256i m2 = _mm256_set1_epi8(0x30);
            for (int hh = 0; hh < 2; ++hh) {
                const __m256i h = load32(c + 256 + 64 * hh + o);
                s[4 * hh + 0] = merge(s[4 * hh + 0], _mm256_slli_epi16(h, 4), m2);
                s[4 * hh + 1] = merge(s[4 * hh + 1], _mm256_slli_epi16(h, 2), m2);
                s[4 * hh + 2] = merge(s[4 * hh + 2], h, m2);
                s[4 * hh + 3] = merge(s[4 * hh + 3], _mm256_srli_epi16(h, 2), m2);
            }
        }
    }
}

// init + sum over slabs [k0, k1) of <s[k], q[4k..4k+3]> per row (int32 lanes), unsigned codes of
// kBits <= 6: int16 pair sums of kPer slabs added before each widening (see the header comment).
template <int kBits>
ZS_AVX2_INLINE __m256i dot_u(__m256i init, const __m256i* s, const int8_t* q, int k0, int k1) {
    constexpr int kPer = kBits == 4 ? 8 : kBits == 5 ? 4 : 2;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc = init;
    for (int k = k0; k < k1; k += kPer) {
        __m256i t = _mm256_maddubs_epi16(s[k], bcast4(q + 4 * k));
        for (int j = 1; j < kPer && k + j < k1; ++j) {
            t = _mm256_add_epi16(t, _mm256_maddubs_epi16(s[k + j], bcast4(q + 4 * (k + j))));
        }
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(t, ones));
    }
    return acc;
}

// Sum over the 8 slabs of <c, q> per row, c = s - 128 (q8_0's signed codes).
ZS_AVX2_INLINE __m256i dot_s8(const __m256i* s, const int8_t* q) {
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
    __m256i acc = _mm256_setzero_si256();
    for (int k = 0; k < 8; ++k) {
        const __m256i c = _mm256_xor_si256(s[k], flip);
        const __m256i t =
            _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(bcast4(q + 4 * k), c));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(t, ones));
    }
    return acc;
}

// 32-element blocks: q8_0 (kOff -128), q4_0 (-8), q5_0 (-16), q4_1 and q5_1 (min m per block,
// kOff 0). acc[2 i + half]: activation row i, weight rows [8 half, 8 half + 8). block32 is block
// b of the group at g, read ahead by kPf bytes; group32 runs it over the group's blocks.
template <int kBits, bool kMin>
constexpr int64_t unit32() {
    return (kMin ? 64 : 32) + 256 + 64 * (kBits - 4);
}
template <int kBits, int kOff, bool kMin, int kMBn, int64_t kPf>
ZS_AVX2_INLINE void block32(const uint8_t* g, int64_t b, const QActRow* a, __m256* acc) {
    constexpr int64_t kHdr = kMin ? 64 : 32;
    constexpr int64_t kUnit = unit32<kBits, kMin>();
    const uint8_t* u = g + b * kUnit;
    for (int64_t o = 0; o < kUnit; o += 64)
        if (kPf > 0) _mm_prefetch(u + kPf + o, _MM_HINT_T0);
    for (int half = 0; half < 2; ++half) {
        const __m256 d = f16x8(u + 16 * half);
        __m256i s[8];
        chunk_codes<kBits>(u + kHdr, half, s);
        for (int i = 0; i < kMBn; ++i) {
            const int8_t* q = a[i].q + 32 * b;
            __m256i p;
            if constexpr (kBits == 8) {
                p = dot_s8(s, q);
            } else {
                const int32_t sum = a[i].s0[b] + a[i].s1[b];
                p = dot_u<kBits>(_mm256_set1_epi32(kOff * sum), s, q, 0, 8);
            }
            __m256& r = acc[2 * i + half];
            r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(d, _mm256_set1_ps(a[i].d[b])),
                                r);
            if constexpr (kMin) {
                r = _mm256_fmadd_ps(f16x8(u + 32 + 16 * half),
                                    _mm256_set1_ps(a[i].ds0[b] + a[i].ds1[b]), r);
            }
        }
    }
}
template <int kBits, int kOff, bool kMin, int kMBn>
void group32(const uint8_t* g, int64_t nb, const QActRow* a, __m256* acc) {
    for (int64_t b = 0; b < nb; ++b) block32<kBits, kOff, kMin, kMBn, kAhead>(g, b, a, acc);
}
// kG groups side by side with one activation row (decode): block b of each group in turn, so the
// thread reads kG memory streams at once (acc[2 gi + half]: group gi). Each group's accumulators
// see group32<..., 1>'s operations in its order: the same sums.
template <int kBits, int kOff, bool kMin, int kG>
void group32_streams(const uint8_t* const* g, int64_t nb, const QActRow* a, __m256* acc) {
    for (int64_t b = 0; b < nb; ++b)
        for (int gi = 0; gi < kG; ++gi)
            block32<kBits, kOff, kMin, 1, kStreamAhead>(g[gi], b, a, acc + 2 * gi);
}

// Chunk j of superblock b (256 elements: 8 chunks of 32) of a q4_k (kBits 4) or q5_k (5) group:
// the same header, chunks of 4- or 5-bit codes.
template <int kBits, int kMBn, int64_t kPf>
ZS_AVX2_INLINE void chunk_qk(const uint8_t* g, int64_t b, int j, const QActRow* a, __m256* acc) {
    constexpr int64_t kChunk = 256 + 64 * (kBits - 4), kUnit = 320 + 8 * kChunk;
    const uint8_t* u = g + b * kUnit;
    const uint8_t* c = u + 320 + kChunk * j;
    for (int o = 0; o < kChunk; o += 64)
        if (kPf > 0) _mm_prefetch(c + kPf + o, _MM_HINT_T0);
    const int64_t ch = 8 * b + j;
    for (int half = 0; half < 2; ++half) {
        const __m256 d = f16x8(u + 16 * half), dmin = f16x8(u + 32 + 16 * half);
        const __m256 sf = _mm256_mul_ps(d, u8x8(u + 64 + 16 * j + 8 * half));
        const __m256 mf = _mm256_mul_ps(dmin, u8x8(u + 192 + 16 * j + 8 * half));
        __m256i s[8];
        chunk_codes<kBits>(c, half, s);
        for (int i = 0; i < kMBn; ++i) {
            const __m256i p = dot_u<kBits>(_mm256_setzero_si256(), s, a[i].q + 32 * ch, 0, 8);
            __m256& r = acc[2 * i + half];
            r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                _mm256_mul_ps(sf, _mm256_set1_ps(a[i].d[ch])), r);
            r = _mm256_fnmadd_ps(mf, _mm256_set1_ps(a[i].ds0[ch] + a[i].ds1[ch]), r);
        }
    }
}
template <int kBits, int kMBn>
void group_qk(const uint8_t* g, int64_t nb, const QActRow* a, __m256* acc) {
    for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < 8; ++j) chunk_qk<kBits, kMBn, kAhead>(g, b, j, a, acc);
}
template <int kBits, int kG>
void group_qk_streams(const uint8_t* const* g, int64_t nb, const QActRow* a, __m256* acc) {
    for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < 8; ++j)
            for (int gi = 0; gi < kG; ++gi)
                chunk_qk<kBits, 1, kStreamAhead>(g[gi], b, j, a, acc + 2 * gi);
}

// Chunk j of superblock b of a q6_k group.
template <int kMBn, int64_t kPf>
ZS_AVX2_INLINE void chunk_q6_k(const uint8_t* g, int64_t b, int j, const QActRow* a, __m256* acc) {
    constexpr int64_t kUnit = 3360;
    const uint8_t* u = g + b * kUnit;
    const uint8_t* c = u + 288 + 384 * j;
    for (int o = 0; o < 384; o += 64)
        if (kPf > 0) _mm_prefetch(c + kPf + o, _MM_HINT_T0);
    const int64_t ch = 8 * b + j;
    for (int half = 0; half < 2; ++half) {
        const __m256 d = f16x8(u + 16 * half);
        const __m256 sf0 = _mm256_mul_ps(d, i8x8(u + 32 + 16 * (2 * j) + 8 * half));
        const __m256 sf1 = _mm256_mul_ps(d, i8x8(u + 32 + 16 * (2 * j + 1) + 8 * half));
        __m256i s[8];
        chunk_codes<6>(c, half, s);
        for (int i = 0; i < kMBn; ++i) {
            const int8_t* q = a[i].q + 32 * ch;
            const __m256i p0 = dot_u<6>(_mm256_set1_epi32(-32 * a[i].s0[ch]), s, q, 0, 4);
            const __m256i p1 = dot_u<6>(_mm256_set1_epi32(-32 * a[i].s1[ch]), s, q, 4, 8);
            const __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), sf0,
                                             _mm256_mul_ps(_mm256_cvtepi32_ps(p1), sf1));
            __m256& r = acc[2 * i + half];
            r = _mm256_fmadd_ps(t, _mm256_set1_ps(a[i].d[ch]), r);
        }
    }
}
template <int kMBn>
void group_q6_k(const uint8_t* g, int64_t nb, const QActRow* a, __m256* acc) {
    for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < 8; ++j) chunk_q6_k<kMBn, kAhead>(g, b, j, a, acc);
}
template <int kG>
void group_q6_k_streams(const uint8_t* const* g, int64_t nb, const QActRow* a, __m256* acc) {
    for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < 8; ++j)
            for (int gi = 0; gi < kG; ++gi)
                chunk_q6_k<1, kStreamAhead>(g[gi], b, j, a, acc + 2 * gi);
}

// The kernel set shared code instantiates (qdot_group16.h): internal linkage, this file's ISA.
struct Kernels {
    using Acc = __m256;
    static constexpr int kAccPerRow = 2;
    template <int kBits, int kOff, bool kMin, int kMBn>
    static void group32(const uint8_t* g, int64_t nb, const QActRow* a, Acc* acc) {
        cpu::group32<kBits, kOff, kMin, kMBn>(g, nb, a, acc);
    }
    template <int kMBn>
    static void group_q4_k(const uint8_t* g, int64_t nb, const QActRow* a, Acc* acc) {
        cpu::group_qk<4, kMBn>(g, nb, a, acc);
    }
    template <int kMBn>
    static void group_q5_k(const uint8_t* g, int64_t nb, const QActRow* a, Acc* acc) {
        cpu::group_qk<5, kMBn>(g, nb, a, acc);
    }
    template <int kMBn>
    static void group_q6_k(const uint8_t* g, int64_t nb, const QActRow* a, Acc* acc) {
        cpu::group_q6_k<kMBn>(g, nb, a, acc);
    }
    template <int kBits, int kOff, bool kMin, int kG>
    static void group32_streams(const uint8_t* const* g, int64_t nb, const QActRow* a, Acc* acc) {
        cpu::group32_streams<kBits, kOff, kMin, kG>(g, nb, a, acc);
    }
    template <int kG>
    static void group_q4_k_streams(const uint8_t* const* g, int64_t nb, const QActRow* a,
                                   Acc* acc) {
        cpu::group_qk_streams<4, kG>(g, nb, a, acc);
    }
    template <int kG>
    static void group_q5_k_streams(const uint8_t* const* g, int64_t nb, const QActRow* a,
                                   Acc* acc) {
        cpu::group_qk_streams<5, kG>(g, nb, a, acc);
    }
    template <int kG>
    static void group_q6_k_streams(const uint8_t* const* g, int64_t nb, const QActRow* a,
                                   Acc* acc) {
        cpu::group_q6_k_streams<kG>(g, nb, a, acc);
    }
    // Two activation rows per pass for 4- and 8-bit codes (with four, the 8 accumulators, 8 code
    // vectors and the broadcasts spill out of the 16 registers: Zen 2, BM_prefill_quant q4_0 and
    // q4_1 +13-16%, q8_0 and q4_k +3-4%), four for 5- and 6-bit ones (whose codes cost more to
    // build: two rows per pass ran q5_1 5% and q6_k 17% slower).
    static int rows_per_pass(QType t) {
        return t == QType::q5_0 || t == QType::q5_1 || t == QType::q5_k || t == QType::q6_k ? 4 : 2;
    }
    static Acc zero() { return _mm256_setzero_ps(); }
    static void store16(const Acc* row, float* out16) {
        _mm256_storeu_ps(out16, row[0]);
        _mm256_storeu_ps(out16 + 8, row[1]);
    }
};

}  // namespace

void qdot_group16_avx2(QType t, const uint8_t* g, int64_t k, const QActRow* acts, int m,
                       float* res) {
    qdot_group16::rows<Kernels>(t, g, k, acts, m, res);
}

void qdot_groups16_streams_avx2(QType t, const uint8_t* const* g, int n, int64_t k,
                                const QActRow& act, float* res) {
    qdot_group16::rows_streams<Kernels>(t, g, n, k, act, res);
}

}  // namespace zs::backends::cpu

namespace zs::backends::cpu {

namespace {

// The nearest integer to p, ties away from zero (lround's rounding): the nearest-even rounding,
// then at exact ties (|p - r| == 0.5, exact for |p| < 2^23) p + copysign(0.5, p), an integer.
ZS_AVX2_INLINE __m256 round_away(__m256 p) {
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f);
    const __m256 r = _mm256_round_ps(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 tie = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(p, r)), half, _CMP_EQ_OQ);
    const __m256 away = _mm256_add_ps(p, _mm256_or_ps(half, _mm256_and_ps(sign, p)));
    return _mm256_blendv_ps(r, away, tie);
}

ZS_AVX2_INLINE int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

}  // namespace

void quantize_q8_act_avx2(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0,
                          int32_t* s1) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t c = 0; c < n / 32; ++c) {
        __m256 v[4];
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < 4; ++i) {
            v[i] = _mm256_loadu_ps(x + 32 * c + 8 * i);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float dc = amax / 127.0f;  // the scalar quantize_q8_act's operations, in order
        const __m256 id = _mm256_set1_ps(dc != 0.0f ? 1.0f / dc : 0.0f);
        __m256i qi[4];
        for (int i = 0; i < 4; ++i) qi[i] = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(v[i], id)));
        // int32 -> int8 (no saturation: |q| <= 127); packs interleave 128-bit lanes, the
        // permute restores element order.
        const __m256i p16 =
            _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
        const __m256i p8 =
            _mm256_permutevar8x32_epi32(p16, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * c), p8);
        d[c] = dc;
        s0[c] = hsum_epi32(_mm256_add_epi32(qi[0], qi[1]));
        s1[c] = hsum_epi32(_mm256_add_epi32(qi[2], qi[3]));
    }
}

}  // namespace zs::backends::cpu
