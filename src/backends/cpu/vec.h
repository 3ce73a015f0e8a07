// A 16-lane f32 vector for the CPU kernels: AVX-512 when the build targets it, else AVX2 + FMA
// (two 8-lane halves: the same bits as AVX-512 except the reciprocals' last ulps), else a
// portable loop (same results up to the last ulp of exp). Loads and stores convert bf16 <-> f32 on
// the fly (stores round to nearest even, like core/half.h), and take a lane count for tails so
// every row is processed without scalar epilogues or out-of-bounds reads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/half.h"

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include "base/simd.h"
#define ZS_VEC_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include "base/simd.h"
#define ZS_VEC_AVX2 1
#elif defined(__F16C__)
#include "base/simd.h"
#endif

namespace zs::backends::cpu {

using core::bf16;

inline constexpr int kLanes = 16;

// The math helpers below are forced inline: the kernels call them twice per pair in unrolled
// loops, where an out-of-line call spills every vector register (they are all caller-saved).
#define ZS_VINLINE inline __attribute__((always_inline))
// And a kernel's inner loop is kept out of line where the caller around it is large: inlined into
// the paged attention's task body, AVX2's P V loop (all 16 ymm registers) spilled an accumulator
// and ran each key through a store-to-load round trip (1.9x the dense kernel's time in cache).
#define ZS_NOINLINE __attribute__((noinline))

#ifdef ZS_VEC_AVX512

struct VecF {
    __m512 v;
};
// How many VecF the register file holds (32 zmm): kernels size their register blocking by it.
inline constexpr int kVecRegs = 32;

inline __mmask16 lane_mask(int n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff)
                   : static_cast<__mmask16>((1u << std::max(n, 0)) - 1u);
}

inline VecF vload(const float* p, int n = kLanes) {
    return {n >= kLanes ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lane_mask(n), p)};
}
inline VecF vload(const bf16* p, int n = kLanes) {
    __m256i h = n >= kLanes ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                            : _mm256_maskz_loadu_epi16(lane_mask(n), p);
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))};
}
// f16 (IEEE half: the f16 KV cache) through the F16C conversions; stores round to nearest even.
inline VecF vload(const core::f16* p, int n = kLanes) {
    __m256i h = n >= kLanes ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                            : _mm256_maskz_loadu_epi16(lane_mask(n), p);
    return {_mm512_cvtph_ps(h)};
}
inline void vstore(core::f16* p, VecF x, int n = kLanes) {
    __m256i h = _mm512_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (n >= kLanes) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
    } else {
        _mm256_mask_storeu_epi16(p, lane_mask(n), h);
    }
}
inline void vstore(float* p, VecF x, int n = kLanes) {
    if (n >= kLanes) {
        _mm512_storeu_ps(p, x.v);
    } else {
        _mm512_mask_storeu_ps(p, lane_mask(n), x.v);
    }
}
// f32 bits with the bf16 round-to-nearest-even applied to the high half, without a NaN fix-up:
// right for every value whose low 16 bits are zero when it is a NaN (see vstore2 for bf16).
ZS_VINLINE __m512i bf16_round_bits_from_bf16(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    return _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
}
// The same for any f32 (core/half.h's rule): a NaN keeps its sign and high payload and gets the
// quiet bit, so rounding cannot carry it to inf.
ZS_VINLINE __m512i bf16_round_bits(__m512 x) {
    return _mm512_mask_or_epi32(bf16_round_bits_from_bf16(x),
                                _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), _mm512_castps_si512(x),
                                _mm512_set1_epi32(0x00400000));
}
inline void vstore(bf16* p, VecF x, int n = kLanes) {
    __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(bf16_round_bits(x.v), 16));
    if (n >= kLanes) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
    } else {
        _mm256_mask_storeu_epi16(p, lane_mask(n), h);
    }
}

// Pairs: 32 elements as two vectors, for elementwise loops whose operands all have one dtype.
// f32 pairs are two consecutive vectors. bf16 pairs are the even elements (a) and the odd ones
// (b) of a 64-byte block: one shift or one mask per vector to widen, and the store merges the
// two rounded halves with one ternary-logic op, instead of a widening or narrowing shuffle per
// vector (those ran on the one shuffle port and bounded the bf16 kernels). Any code that loads
// and stores every operand as pairs of the same dtype sees the same lane order everywhere.
// n < 32 loads zeros beyond the end and stores only the first n elements.
inline __mmask32 pair_mask(int n) {
    return n >= 32 ? static_cast<__mmask32>(0xffffffffu) : static_cast<__mmask32>((1u << n) - 1u);
}
inline void vload2(const float* p, VecF& a, VecF& b, int n = 2 * kLanes) {
    a = vload(p, n);
    b = n > kLanes ? vload(p + kLanes, n - kLanes) : VecF{_mm512_setzero_ps()};
}
inline void vload2(const bf16* p, VecF& a, VecF& b, int n = 2 * kLanes) {
    __m512i v = n >= 2 * kLanes ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16(pair_mask(n), p);
    a = {_mm512_castsi512_ps(_mm512_slli_epi32(v, 16))};
    b = {
        _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))))};
}
inline void vstore2(float* p, VecF a, VecF b, int n = 2 * kLanes) {
    vstore(p, a, n);
    if (n > kLanes) vstore(p + kLanes, b, n - kLanes);
}
// Rounds without vstore's NaN fix-up. A pair store only ever sees values computed from bf16
// operands (pairs need every operand in one dtype), and such NaNs, whether loaded or made by
// arithmetic (the default NaN, or an operand's payload with the quiet bit set), have zero low
// 16 bits: the rounding increment cannot carry into them, so they stay the same NaN.
inline void vstore2(bf16* p, VecF a, VecF b, int n = 2 * kLanes) {
    // (a >> 16) | (b & 0xffff0000): the even element in the low half, the odd in the high.
    __m512i v = _mm512_ternarylogic_epi32(_mm512_srli_epi32(bf16_round_bits_from_bf16(a.v), 16),
                                          bf16_round_bits_from_bf16(b.v),
                                          _mm512_set1_epi32(static_cast<int>(0xffff0000u)), 0xf8);
    if (n >= 2 * kLanes) {
        _mm512_storeu_si512(p, v);
    } else {
        _mm512_mask_storeu_epi16(p, pair_mask(n), v);
    }
}
// Bring the cache lines of one pair of T at p towards L1 (a hint: never faults, any address).
template <class T>
inline void vprefetch2(const T* p) {
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
    if constexpr (sizeof(T) * 2 * kLanes > 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p) + 64, _MM_HINT_T0);
    }
}
// Lanes of a pair of T holding elements >= n replaced by `fill`.
template <class T>
inline void vfill2(VecF& a, VecF& b, int n, float fill) {
    int na = std::is_same_v<T, bf16> ? (n + 1) / 2 : std::min(n, kLanes);
    int nb = std::is_same_v<T, bf16> ? n / 2 : std::max(n - kLanes, 0);
    a = {_mm512_mask_mov_ps(_mm512_set1_ps(fill), lane_mask(na), a.v)};
    b = {_mm512_mask_mov_ps(_mm512_set1_ps(fill), lane_mask(nb), b.v)};
}

inline VecF vset(float a) { return {_mm512_set1_ps(a)}; }
inline VecF vzero() { return {_mm512_setzero_ps()}; }
inline VecF operator+(VecF a, VecF b) { return {_mm512_add_ps(a.v, b.v)}; }
inline VecF operator-(VecF a, VecF b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline VecF operator*(VecF a, VecF b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline VecF operator/(VecF a, VecF b) { return {_mm512_div_ps(a.v, b.v)}; }
inline VecF vfma(VecF a, VecF b, VecF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }  // a*b+c
inline VecF vmax(VecF a, VecF b) { return {_mm512_max_ps(a.v, b.v)}; }
inline VecF vmin(VecF a, VecF b) { return {_mm512_min_ps(a.v, b.v)}; }
inline float vsum(VecF a) { return _mm512_reduce_add_ps(a.v); }
inline float vhmax(VecF a) { return _mm512_reduce_max_ps(a.v); }
// out[0..3] = the sums of a, b, c and d: one shuffle tree for all four (13 ops, against about
// 32 for four vsum).
inline void vsum4(float* out, VecF a, VecF b, VecF c, VecF d) {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d.
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a.v, b.v), _mm512_unpackhi_ps(a.v, b.v));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c.v, d.v), _mm512_unpackhi_ps(c.v, d.v));
    // Per 128-bit lane: [a, b, c, d] partial sums.
    const __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
    const __m512 abcd = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
                                      _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
    const __m256 h =
        _mm256_add_ps(_mm512_castps512_ps256(abcd),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1)));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}
// Lanes >= n replaced by `fill` (so a masked tail does not disturb a max or a sum).
inline VecF vmask_fill(VecF a, int n, float fill) {
    return {_mm512_mask_mov_ps(_mm512_set1_ps(fill), lane_mask(n), a.v)};
}

// exp(x) for x in [-104, 89] or NaN: x = k ln2 + r with |r| <= ln2/2 (two-part ln2, exact
// for these k), a degree-5 minimax polynomial for e^r (max rel. error 1.7e-7 in f32, exp(0) = 1
// exactly) and a scalef by 2^k, which underflows to exactly 0 below -103.9 and overflows to inf
// above 88.8. Callers clamp; vexp below does it for any input.
ZS_VINLINE VecF vexp_clamped(VecF x) {
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x.v, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x.v);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(0.00829028058797121f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.041897863149642944f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.1666763573884964f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.4999915063381195f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.9999997019767761f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return {_mm512_scalef_ps(p, k)};
}

// 2^t for any t: t = k + f with |f| <= 1/2 from one reduce op, a degree-5 minimax polynomial for
// 2^f (max rel. error 1.9e-7 in f32, 2^0 = 1) and a scalef by 2^k, which underflows to 0 and
// overflows to inf as it should. No clamps: reduce(+-inf) is 0, so 2^-inf = 0, 2^inf = inf, and
// NaN stays NaN. For callers whose argument is a product they can fold log2(e) into (gelu,
// softmax): fewer ops than vexp, at the cost of t's own rounding (|t| * 6e-8 absolute).
ZS_VINLINE VecF vexp2(VecF t) {
    const __m512 f = _mm512_reduce_ps(t.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 k = _mm512_sub_ps(t.v, f);
    __m512 p = _mm512_set1_ps(0.001326467259787023f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.009671497158706188f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.05550733581185341f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24022242426872253f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931470036506653f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return {_mm512_scalef_ps(p, k)};
}

// 1 / x within 2^-14 relative (the hardware estimate alone): for results rounded to bf16 (8
// bits) next, where vrcp's Newton step changes one rounding in about fifty.
ZS_VINLINE VecF vrcp_bf16(VecF x) { return {_mm512_rcp14_ps(x.v)}; }

// 1 / x for finite x != 0: the 14-bit estimate and one Newton step (within 2 ulp of the
// division; a tenth of vdivps's throughput cost, which bounded gelu/silu). Not for 0 or inf.
ZS_VINLINE VecF vrcp(VecF x) {
    const __m512 r = _mm512_rcp14_ps(x.v);
    return {_mm512_fmadd_ps(r, _mm512_fnmadd_ps(x.v, r, _mm512_set1_ps(1.0f)), r)};
}

#elif defined(ZS_VEC_AVX2)

// AVX2 + FMA + F16C: the 16 lanes as two __m256 halves (lanes 0-7 in lo, 8-15 in hi), so every
// kernel written for the 16-lane contract runs unchanged. Sums, maxima, exp, exp2 and the bf16
// pair lane order follow the AVX-512 path exactly, so the two give the same bits (vrcp starts
// from a 12-bit estimate instead of 14, so its last ulps differ; dot4_keys's decode scores sum
// in their own order, see there). AVX2 has no masked
// 16-bit loads or stores: bf16/f16 tails go through a zeroed stack buffer.
struct VecF {
    __m256 lo, hi;
};
// 16 ymm registers hold 8 VecF: kernels blocked for 32 zmm shrink their tiles to this.
inline constexpr int kVecRegs = 8;

// kLaneMaskTable + 8 - k: the 8-lane mask of the first k lanes (0 <= k <= 8).
alignas(64) inline constexpr int32_t kLaneMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                           0,  0,  0,  0,  0,  0,  0,  0};
ZS_VINLINE __m256i half_mask(int k) {
    k = std::min(std::max(k, 0), 8);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLaneMaskTable + 8 - k));
}

inline VecF vload(const float* p, int n = kLanes) {
    if (n >= kLanes) return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
    return {_mm256_maskload_ps(p, half_mask(n)), _mm256_maskload_ps(p + 8, half_mask(n - 8))};
}
inline void vstore(float* p, VecF x, int n = kLanes) {
    if (n >= kLanes) {
        _mm256_storeu_ps(p, x.lo);
        _mm256_storeu_ps(p + 8, x.hi);
    } else {
        _mm256_maskstore_ps(p, half_mask(n), x.lo);
        _mm256_maskstore_ps(p + 8, half_mask(n - 8), x.hi);
    }
}
// 16 16-bit elements: all of them, or the first n with zeros after (never reads past p + n).
ZS_VINLINE __m256i load_u16x16(const void* p, int n) {
    if (n >= kLanes) return _mm256_loadu_si256(static_cast<const __m256i*>(p));
    alignas(32) uint16_t buf[kLanes] = {};
    std::memcpy(buf, p, static_cast<size_t>(std::max(n, 0)) * 2);
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
}
ZS_VINLINE void store_u16x16(void* p, __m256i h, int n) {
    if (n >= kLanes) {
        _mm256_storeu_si256(static_cast<__m256i*>(p), h);
        return;
    }
    alignas(32) uint16_t buf[kLanes];
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf), h);
    std::memcpy(p, buf, static_cast<size_t>(std::max(n, 0)) * 2);
}
inline VecF vload(const bf16* p, int n = kLanes) {
    const __m256i h = load_u16x16(p, n);
    return {_mm256_castsi256_ps(
                _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16)),
            _mm256_castsi256_ps(
                _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16))};
}
// f16 through F16C; stores round to nearest even (NaNs as vcvtps2ph: quiet, top payload kept).
inline VecF vload(const core::f16* p, int n = kLanes) {
    const __m256i h = load_u16x16(p, n);
    return {_mm256_cvtph_ps(_mm256_castsi256_si128(h)),
            _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1))};
}
inline void vstore(core::f16* p, VecF x, int n = kLanes) {
    constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m256i h = _mm256_set_m128i(_mm256_cvtps_ph(x.hi, kRne), _mm256_cvtps_ph(x.lo, kRne));
    store_u16x16(p, h, n);
}
// f32 bits with the bf16 round-to-nearest-even applied to the high half, without a NaN fix-up
// (see the AVX-512 path).
ZS_VINLINE __m256i bf16_round_bits_from_bf16(__m256 x) {
    const __m256i u = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    return _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
}
// The same for any f32 (core/half.h's rule): a NaN keeps its sign and high payload and gets the
// quiet bit.
ZS_VINLINE __m256i bf16_round_bits(__m256 x) {
    const __m256i quiet = _mm256_or_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x00400000));
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bf16_round_bits_from_bf16(x)),
                                                _mm256_castsi256_ps(quiet),
                                                _mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
}
inline void vstore(bf16* p, VecF x, int n = kLanes) {
    // packus works per 128-bit half: [lo0-3, hi0-3, lo4-7, hi4-7], put back in order.
    const __m256i h = _mm256_packus_epi32(_mm256_srli_epi32(bf16_round_bits(x.lo), 16),
                                          _mm256_srli_epi32(bf16_round_bits(x.hi), 16));
    store_u16x16(p, _mm256_permute4x64_epi64(h, 0xd8), n);
}

// Pairs, in the AVX-512 path's lane order: f32 pairs are two consecutive vectors; bf16 pairs
// are the even elements (a) and the odd ones (b) of a 64-byte block, widened by one shift or
// one mask per half, and stored by merging the two rounded halves.
inline void vload2(const float* p, VecF& a, VecF& b, int n = 2 * kLanes) {
    a = vload(p, n);
    b = n > kLanes ? vload(p + kLanes, n - kLanes) : VecF{_mm256_setzero_ps(), _mm256_setzero_ps()};
}
inline void vload2(const bf16* p, VecF& a, VecF& b, int n = 2 * kLanes) {
    __m256i v0, v1;
    if (n >= 2 * kLanes) {
        v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + kLanes));
    } else {
        alignas(32) uint16_t buf[2 * kLanes] = {};
        std::memcpy(buf, p, static_cast<size_t>(std::max(n, 0)) * 2);
        v0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
        v1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(buf + kLanes));
    }
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
    a = {_mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)),
         _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16))};
    b = {_mm256_castsi256_ps(_mm256_and_si256(v0, high)),
         _mm256_castsi256_ps(_mm256_and_si256(v1, high))};
}
inline void vstore2(float* p, VecF a, VecF b, int n = 2 * kLanes) {
    vstore(p, a, n);
    if (n > kLanes) vstore(p + kLanes, b, n - kLanes);
}
// Rounds without vstore's NaN fix-up, as the AVX-512 path does (see there why that is exact).
inline void vstore2(bf16* p, VecF a, VecF b, int n = 2 * kLanes) {
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
    const __m256i v0 = _mm256_or_si256(_mm256_srli_epi32(bf16_round_bits_from_bf16(a.lo), 16),
                                       _mm256_and_si256(bf16_round_bits_from_bf16(b.lo), high));
    const __m256i v1 = _mm256_or_si256(_mm256_srli_epi32(bf16_round_bits_from_bf16(a.hi), 16),
                                       _mm256_and_si256(bf16_round_bits_from_bf16(b.hi), high));
    if (n >= 2 * kLanes) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v0);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + kLanes), v1);
        return;
    }
    alignas(32) uint16_t buf[2 * kLanes];
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf), v0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf + kLanes), v1);
    std::memcpy(p, buf, static_cast<size_t>(std::max(n, 0)) * 2);
}
template <class T>
inline void vprefetch2(const T* p) {
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
    if constexpr (sizeof(T) * 2 * kLanes > 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p) + 64, _MM_HINT_T0);
    }
}
// Lanes >= n replaced by `fill` (so a masked tail does not disturb a max or a sum).
inline VecF vmask_fill(VecF a, int n, float fill) {
    const __m256 f = _mm256_set1_ps(fill);
    return {_mm256_blendv_ps(f, a.lo, _mm256_castsi256_ps(half_mask(n))),
            _mm256_blendv_ps(f, a.hi, _mm256_castsi256_ps(half_mask(n - 8)))};
}
// Lanes of a pair of T holding elements >= n replaced by `fill`.
template <class T>
inline void vfill2(VecF& a, VecF& b, int n, float fill) {
    int na = std::is_same_v<T, bf16> ? (n + 1) / 2 : std::min(n, kLanes);
    int nb = std::is_same_v<T, bf16> ? n / 2 : std::max(n - kLanes, 0);
    a = vmask_fill(a, na, fill);
    b = vmask_fill(b, nb, fill);
}

inline VecF vset(float a) { return {_mm256_set1_ps(a), _mm256_set1_ps(a)}; }
inline VecF vzero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline VecF operator+(VecF a, VecF b) {
    return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)};
}
inline VecF operator-(VecF a, VecF b) {
    return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)};
}
inline VecF operator*(VecF a, VecF b) {
    return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)};
}
inline VecF operator/(VecF a, VecF b) {
    return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)};
}
inline VecF vfma(VecF a, VecF b, VecF c) {  // a*b+c
    return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
inline VecF vmax(VecF a, VecF b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
inline VecF vmin(VecF a, VecF b) { return {_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)}; }
// GCC's _mm512_reduce_add_ps tree: lanes i + (i + 8), then i + (i + 4), then (0 + 2) + (1 + 3).
inline float vsum(VecF a) {
    const __m256 h = _mm256_add_ps(a.lo, a.hi);
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 t = _mm_add_ps(q, _mm_movehl_ps(q, q));  // [q0 + q2, q1 + q3, ...]
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
inline float vhmax(VecF a) {
    const __m256 h = _mm256_max_ps(a.lo, a.hi);
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_max_ss(q, _mm_movehdup_ps(q)));
}
// out[0..3] = the sums of a, b, c and d: the AVX-512 path's shuffle tree, on the 128-bit lanes
// 0-1 (lo) and 2-3 (hi) separately until the last two adds.
inline void vsum4(float* out, VecF a, VecF b, VecF c, VecF d) {
    auto lanes4 = [](__m256 x, __m256 y, __m256 z, __m256 w) {
        const __m256 xy = _mm256_add_ps(_mm256_unpacklo_ps(x, y), _mm256_unpackhi_ps(x, y));
        const __m256 zw = _mm256_add_ps(_mm256_unpacklo_ps(z, w), _mm256_unpackhi_ps(z, w));
        const __m256d xyd = _mm256_castps_pd(xy), zwd = _mm256_castps_pd(zw);
        return _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(xyd, zwd)),
                             _mm256_castpd_ps(_mm256_unpackhi_pd(xyd, zwd)));
    };
    const __m256 h = _mm256_add_ps(lanes4(a.lo, b.lo, c.lo, d.lo), lanes4(a.hi, b.hi, c.hi, d.hi));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

// p * 2^k for integral k in [-152, 129] (as f32), rounded once like AVX-512's scalef: 2^k is
// two normal factors 2^(k >> 1) and 2^(k - (k >> 1)), each built in the exponent field; the
// first product is exact for p near 1, the second rounds (to a subnormal, 0 or inf as it must).
ZS_VINLINE __m256 scale_pow2(__m256 p, __m256 k) {
    const __m256i ki = _mm256_cvtps_epi32(k);
    const __m256i k1 = _mm256_srai_epi32(ki, 1);
    const __m256i k2 = _mm256_sub_epi32(ki, k1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

// exp(x) for x in [-104, 89] or NaN: the AVX-512 path's reduction and polynomial, and its scalef
// by 2^k as scale_pow2 (the same bits). A NaN makes r and so the result NaN whatever k becomes.
ZS_VINLINE __m256 exp_clamped_half(__m256 x) {
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(0.00829028058797121f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.041897863149642944f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.1666763573884964f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.4999915063381195f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.9999997019767761f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    return scale_pow2(p, k);
}
ZS_VINLINE VecF vexp_clamped(VecF x) { return {exp_clamped_half(x.lo), exp_clamped_half(x.hi)}; }

// 2^t for any t, as the AVX-512 path: t = k + f with |f| <= 1/2, its polynomial for 2^f, then
// scale_pow2. t is first clamped to [-151, 129] (NaN passes), which changes no result: 2^t
// rounds to 0 below -150 and overflows above 128 either way.
ZS_VINLINE __m256 exp2_half(__m256 t) {
    t = _mm256_min_ps(_mm256_set1_ps(129.0f), _mm256_max_ps(_mm256_set1_ps(-151.0f), t));
    const __m256 k = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(t, k);
    __m256 p = _mm256_set1_ps(0.001326467259787023f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.009671497158706188f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.05550733581185341f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.24022242426872253f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.6931470036506653f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    return scale_pow2(p, k);
}
ZS_VINLINE VecF vexp2(VecF t) { return {exp2_half(t.lo), exp2_half(t.hi)}; }

// 1 / x for finite x != 0: the 12-bit estimate and one Newton step (within a few ulp of the
// division, about a fifth of its cost). Not for 0 or inf.
ZS_VINLINE __m256 rcp_half(__m256 x) {
    const __m256 r = _mm256_rcp_ps(x);
    return _mm256_fmadd_ps(r, _mm256_fnmadd_ps(x, r, _mm256_set1_ps(1.0f)), r);
}
ZS_VINLINE VecF vrcp(VecF x) { return {rcp_half(x.lo), rcp_half(x.hi)}; }
// The estimate alone (12 bits) is too coarse for bf16's 8: the Newton step stays.
ZS_VINLINE VecF vrcp_bf16(VecF x) { return vrcp(x); }

#else  // portable fallback: the same operations over a plain array

struct VecF {
    float v[kLanes];
};
// The AVX-512 path's blocking (the compiler keeps these arrays where it can).
inline constexpr int kVecRegs = 32;

inline VecF vload(const float* p, int n = kLanes) {
    VecF r{};
    for (int i = 0; i < n && i < kLanes; ++i) r.v[i] = p[i];
    return r;
}
inline VecF vload(const bf16* p, int n = kLanes) {
    VecF r{};
    for (int i = 0; i < n && i < kLanes; ++i) r.v[i] = core::bf16_to_f32(p[i]);
    return r;
}
inline void vstore(float* p, VecF x, int n = kLanes) {
    for (int i = 0; i < n && i < kLanes; ++i) p[i] = x.v[i];
}
// f16 with F16C where the build has it (8 lanes per conversion), else core/half.h's scalar code.
inline VecF vload(const core::f16* p, int n = kLanes) {
    VecF r{};
#ifdef __F16C__
    if (n >= kLanes) {
        _mm256_storeu_ps(r.v,
                         _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
        _mm256_storeu_ps(r.v + 8,
                         _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8))));
        return r;
    }
#endif
    for (int i = 0; i < n && i < kLanes; ++i) r.v[i] = core::f16_to_f32(p[i]);
    return r;
}
inline void vstore(core::f16* p, VecF x, int n = kLanes) {
#ifdef __F16C__
    if (n >= kLanes) {
        constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x.v), kRne));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 8),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x.v + 8), kRne));
        return;
    }
#endif
    for (int i = 0; i < n && i < kLanes; ++i) p[i] = core::f32_to_f16(x.v[i]);
}
inline void vstore(bf16* p, VecF x, int n = kLanes) {
    for (int i = 0; i < n && i < kLanes; ++i) p[i] = core::f32_to_bf16(x.v[i]);
}
template <class F>
inline VecF vmap2(VecF a, VecF b, F f) {
    VecF r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = f(a.v[i], b.v[i]);
    return r;
}
inline VecF vset(float a) {
    VecF r;
    for (float& x : r.v) x = a;
    return r;
}
inline VecF vzero() { return vset(0.0f); }
inline VecF operator+(VecF a, VecF b) {
    return vmap2(a, b, [](float x, float y) { return x + y; });
}
inline VecF operator-(VecF a, VecF b) {
    return vmap2(a, b, [](float x, float y) { return x - y; });
}
inline VecF operator*(VecF a, VecF b) {
    return vmap2(a, b, [](float x, float y) { return x * y; });
}
inline VecF operator/(VecF a, VecF b) {
    return vmap2(a, b, [](float x, float y) { return x / y; });
}
inline VecF vfma(VecF a, VecF b, VecF c) {
    VecF r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return r;
}
inline VecF vmax(VecF a, VecF b) {
    return vmap2(a, b, [](float x, float y) { return x > y ? x : y; });
}
inline VecF vmin(VecF a, VecF b) {
    return vmap2(a, b, [](float x, float y) { return x < y ? x : y; });
}
// The AVX-512 path's addition trees (GCC's _mm512_reduce_add_ps; vsum4's shuffle tree), so both
// paths give the same sums bit for bit, in 4 dependent adds instead of 16 (the sequential sum was
// most of the decode attention's time on AVX2 CPUs).
inline float vsum(VecF a) {
    float h[8], q[4];
    for (int i = 0; i < 8; ++i) h[i] = a.v[i] + a.v[i + 8];
    for (int i = 0; i < 4; ++i) q[i] = h[i] + h[i + 4];
    return (q[0] + q[2]) + (q[1] + q[3]);
}
inline float vhmax(VecF a) {
    float m = a.v[0];
    for (float x : a.v) m = x > m ? x : m;
    return m;
}
inline float vsum4_one(const VecF& a) {
    float p[4];
    for (int l = 0; l < 4; ++l) {
        p[l] = (a.v[4 * l] + a.v[4 * l + 2]) + (a.v[4 * l + 1] + a.v[4 * l + 3]);
    }
    return (p[0] + p[2]) + (p[1] + p[3]);
}
inline void vsum4(float* out, VecF a, VecF b, VecF c, VecF d) {
    out[0] = vsum4_one(a);
    out[1] = vsum4_one(b);
    out[2] = vsum4_one(c);
    out[3] = vsum4_one(d);
}
inline VecF vmask_fill(VecF a, int n, float fill) {
    for (int i = n; i < kLanes; ++i) a.v[i] = fill;
    return a;
}
ZS_VINLINE VecF vexp_clamped(VecF x) {
    VecF r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = std::exp(x.v[i]);
    return r;
}
inline VecF vexp2(VecF t) {
    VecF r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = std::exp2(t.v[i]);
    return r;
}
// Pairs are two consecutive vectors here, for both dtypes.
template <class T>
inline void vload2(const T* p, VecF& a, VecF& b, int n = 2 * kLanes) {
    a = vload(p, n);
    b = n > kLanes ? vload(p + kLanes, n - kLanes) : vzero();
}
template <class T>
inline void vstore2(T* p, VecF a, VecF b, int n = 2 * kLanes) {
    vstore(p, a, n);
    if (n > kLanes) vstore(p + kLanes, b, n - kLanes);
}
template <class T>
inline void vprefetch2(const T* p) {
    __builtin_prefetch(p);
}
template <class T>
inline void vfill2(VecF& a, VecF& b, int n, float fill) {
    a = vmask_fill(a, std::min(n, kLanes), fill);
    b = vmask_fill(b, std::max(n - kLanes, 0), fill);
}
ZS_VINLINE VecF vrcp(VecF x) {
    VecF r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = 1.0f / x.v[i];
    return r;
}
inline VecF vrcp_bf16(VecF x) { return vrcp(x); }

#endif

// Every cache line of the row p[0, n) towards L1 (a hint: never faults). The attention kernels
// fetch KV cache rows ahead with it, where the hardware prefetchers lose the stream.
template <class T>
inline void prefetch_row(const T* p, int64_t n) {
    const char* c = reinterpret_cast<const char*>(p);
    for (int64_t o = 0; o < n * static_cast<int64_t>(sizeof(T)); o += 64)
        __builtin_prefetch(c + o, 0, 3);
}

// The lane count of the vector at element c of a row of n elements (kLanes but at the tail).
inline int lanes(int64_t c, int64_t n) {
    return static_cast<int>(std::min<int64_t>(kLanes, n - c));
}

// How many vectors per row (of at most 4) fit in the registers beside the accumulators of NQ rows
// and one shared operand: all four with AVX-512's 32, fewer with AVX2's 16 (kVecRegs 8).
constexpr int vecs_beside(int nq) { return std::clamp(kVecRegs / (nq + 1), 1, 4); }

#ifdef ZS_VEC_AVX2
// 8 elements of T from p as f32 (no tail): the AVX2 decode kernels' 8-lane loads.
ZS_VINLINE __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
ZS_VINLINE __m256 load8(const bf16* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
ZS_VINLINE __m256 load8(const core::f16* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// S[r * ld + kk] = Q[r] . kr[kk][0, HS) for R <= 3 rows and four keys, HS a multiple of 8: one
// 8-lane accumulator per (row, key), fed HS / 8 FMAs in order, so the 12 accumulators, the R
// query vectors and the key vector being used fit AVX2's 16 registers (no spills), and each
// row's four sums take one shuffle tree of 8-lane vectors. A score's arithmetic depends on
// neither R nor the other rows (paged attention's bit-identity needs that). One row alone (MHA)
// has only four FMA chains: in cache its f32 scores ran ~5% slower than the VecF blocking, and
// two chains per key (lo/hi halves, for every R) cost GQA's three rows 4% for no MHA gain.
template <int R, class TK>
ZS_VINLINE void dot4_rows_avx2(float* S, int64_t ld, const float* Q, const TK* const* kr,
                               int64_t HS) {
    static_assert(R >= 1 && R <= 3);
    __m256 acc[R][4];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
        for (int kk = 0; kk < 4; ++kk) acc[r][kk] = _mm256_setzero_ps();
    }
    for (int64_t d = 0; d < HS; d += 8) {
        __m256 q[R];
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            q[r] = _mm256_loadu_ps(Q + r * HS + d);
            // Held in a register: GCC would fold the load into each of the four keys' FMAs,
            // and four loads of each query vector bound the loop by the load ports.
            asm("" : "+x"(q[r]));
        }
#pragma GCC unroll 16
        for (int kk = 0; kk < 4; ++kk) {
            __m256 k = load8(kr[kk] + d);
            asm("" : "+x"(k));  // f32: one load for the R rows, not one folded into each FMA
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) acc[r][kk] = _mm256_fmadd_ps(q[r], k, acc[r][kk]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
        // vsum4's tree on one 8-lane vector per key.
        const __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(acc[r][0], acc[r][1]),
                                        _mm256_unpackhi_ps(acc[r][0], acc[r][1]));
        const __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(acc[r][2], acc[r][3]),
                                        _mm256_unpackhi_ps(acc[r][2], acc[r][3]));
        const __m256d abd = _mm256_castps_pd(ab), cdd = _mm256_castps_pd(cd);
        const __m256 h = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(abd, cdd)),
                                       _mm256_castpd_ps(_mm256_unpackhi_pd(abd, cdd)));
        _mm_storeu_ps(S + r * ld,
                      _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
    }
}

// Acc[r][d0, d0 + 8 W) += sum_j P[r * ld + j] * V[j][d0, ...) for R rows and jlo <= j < jhi:
// R x W accumulators, R broadcast weights and the V vector being used (R W + R + 1 <= 16).
// Each lane sees the same FMAs in the same order as in a loop over VecF (bit-identical to it).
template <int R, int W, class TV>
ZS_VINLINE void pv_span_avx2(float* Acc, int64_t HS, const float* P, int64_t ld, const TV* const* V,
                             int64_t jlo, int64_t jhi, int64_t d0) {
    static_assert(R * W + R + 1 <= 16);
    __m256 acc[R][W];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
        for (int w = 0; w < W; ++w) acc[r][w] = _mm256_loadu_ps(Acc + r * HS + d0 + 8 * w);
    }
    for (int64_t j = jlo; j < jhi; ++j) {
        __m256 p[R];
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) p[r] = _mm256_broadcast_ss(P + r * ld + j);
        const TV* vr = V[j] + d0;
#pragma GCC unroll 16
        for (int w = 0; w < W; ++w) {
            __m256 v = load8(vr + 8 * w);
            asm("" : "+x"(v));  // one load for the R rows (see dot4_rows_avx2)
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) acc[r][w] = _mm256_fmadd_ps(p[r], v, acc[r][w]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
        for (int w = 0; w < W; ++w) _mm256_storeu_ps(Acc + r * HS + d0 + 8 * w, acc[r][w]);
    }
}

// Acc[r][0, HS) += sum_j P[r * ld + j] * V[j][0, HS) for NQ <= 4 rows, jlo <= j < jhi, HS a
// multiple of 8 (the attention kernels' P V on AVX2): the widest span whose accumulators fit the
// registers, each V row loaded once per span for all rows.
template <int NQ, class TV>
ZS_VINLINE void pv_rows_avx2(float* Acc, int64_t HS, const float* P, int64_t ld, const TV* const* V,
                             int64_t jlo, int64_t jhi) {
    constexpr int kW = NQ == 1 ? 8 : NQ <= 3 ? 4 : 2;
    int64_t d0 = 0;
    for (; d0 + 8 * kW <= HS; d0 += 8 * kW) pv_span_avx2<NQ, kW>(Acc, HS, P, ld, V, jlo, jhi, d0);
    for (; d0 < HS; d0 += 8) pv_span_avx2<NQ, 1>(Acc, HS, P, ld, V, jlo, jhi, d0);
}
#endif

// S[r * ld + kk] = Q[r] . kr[kk][0, HS) for r < NQ and the four keys kk < 4 (the attention
// kernels' scores, dense and paged): each K row is loaded (and converted) once for all NQ query
// rows, and the four keys' horizontal sums share one shuffle tree (vsum4). vecs_beside(NQ) keys
// per pass over HS keep the NQ x keys accumulators in registers; each accumulator sees the same
// FMAs in the same order either way. kFull: HS a multiple of kLanes (no masked tail).
// NOTE: on AVX2 with kFull this is dot4_rows_avx2 (rows in groups of at most 3), whose sums
// differ from the AVX-512 path's in the last bits (8-lane accumulators, their own order):
// 16-lane ones needed 24 ymm for three rows and four keys and spilled, and the scores ran at
// about half the FMA rate (ops_bench BM_decode_attention, Zen 2).
template <int NQ, bool kFull, class TK>
ZS_VINLINE void dot4_keys(float* S, int64_t ld, const float* Q, const TK* const* kr, int64_t HS) {
#ifdef ZS_VEC_AVX2
    if constexpr (kFull) {
        if constexpr (NQ <= 3) {
            dot4_rows_avx2<NQ>(S, ld, Q, kr, HS);
        } else {
            dot4_rows_avx2<2>(S, ld, Q, kr, HS);
            dot4_keys<NQ - 2, kFull>(S + 2 * ld, ld, Q + 2 * HS, kr, HS);
        }
        return;
    }
#endif
    constexpr int kKeys = vecs_beside(NQ);
    static_assert(4 % kKeys == 0);
    VecF acc[NQ][4];
    for (int k0 = 0; k0 < 4; k0 += kKeys) {
        VecF part[NQ][kKeys];
#pragma GCC unroll 16
        for (int r = 0; r < NQ; ++r) {
#pragma GCC unroll 16
            for (int kk = 0; kk < kKeys; ++kk) part[r][kk] = vzero();
        }
        for (int64_t d = 0; d < HS; d += kLanes) {
            const int m = kFull ? kLanes : lanes(d, HS);
            VecF kv[kKeys];
#pragma GCC unroll 16
            for (int kk = 0; kk < kKeys; ++kk) kv[kk] = vload(kr[k0 + kk] + d, m);
#pragma GCC unroll 16
            for (int r = 0; r < NQ; ++r) {
                const VecF qv = vload(Q + r * HS + d, m);
#pragma GCC unroll 16
                for (int kk = 0; kk < kKeys; ++kk) part[r][kk] = vfma(qv, kv[kk], part[r][kk]);
            }
        }
#pragma GCC unroll 16
        for (int r = 0; r < NQ; ++r) {
#pragma GCC unroll 16
            for (int kk = 0; kk < kKeys; ++kk) acc[r][k0 + kk] = part[r][kk];
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < NQ; ++r) vsum4(S + r * ld, acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
}

// Derived functions, identical on both paths. vmax/vmin with the constant first pass NaN through.
// exp(x) for any x: exact 0 below -104 (so exp(-inf) = 0), inf above 89, NaN stays NaN.
ZS_VINLINE VecF vexp(VecF x) { return vexp_clamped(vmin(vset(89.0f), vmax(vset(-104.0f), x))); }
// The clamps keep vrcp's argument finite: sigmoid(-80) is 1.8e-35.
ZS_VINLINE VecF vsigmoid(VecF x) {
    return vrcp(vset(1.0f) + vexp_clamped(vmin(vset(80.0f), vmax(vset(-80.0f), vzero() - x))));
}

// Scalar loads/stores for element-at-a-time code.
inline float to_f32(float x) { return x; }
inline float to_f32(bf16 x) { return core::bf16_to_f32(x); }
template <class T>
inline T from_f32(float x);
template <>
inline float from_f32<float>(float x) {
    return x;
}
template <>
inline bf16 from_f32<bf16>(float x) {
    return core::f32_to_bf16(x);
}

}  // namespace zs::backends::cpu
