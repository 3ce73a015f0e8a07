// A 16-lane f32 vector for the CPU kernels: AVX-512 when the build targets it, a portable loop
// otherwise (same results up to the last ulp of exp). Loads and stores convert bf16 <-> f32 on
// the fly (stores round to nearest even, like core/half.h), and take a lane count for tails so
// every row is processed without scalar epilogues or out-of-bounds reads.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/half.h"

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include "base/simd.h"
#define ZS_VEC_AVX512 1
#endif

namespace zs::backends::cpu {

using core::bf16;

inline constexpr int kLanes = 16;

#ifdef ZS_VEC_AVX512

struct VecF {
    __m512 v;
};

inline __mmask16 lane_mask(int n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

inline VecF vload(const float* p, int n = kLanes) {
    return {n >= kLanes ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lane_mask(n), p)};
}
inline VecF vload(const bf16* p, int n = kLanes) {
    __m256i h = n >= kLanes ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                            : _mm256_maskz_loadu_epi16(lane_mask(n), p);
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))};
}
inline void vstore(float* p, VecF x, int n = kLanes) {
    if (n >= kLanes) {
        _mm512_storeu_ps(p, x.v);
    } else {
        _mm512_mask_storeu_ps(p, lane_mask(n), x.v);
    }
}
inline void vstore(bf16* p, VecF x, int n = kLanes) {
    __m512i u = _mm512_castps_si512(x.v);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
    __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
    if (n >= kLanes) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
    } else {
        _mm256_mask_storeu_epi16(p, lane_mask(n), h);
    }
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
// Lanes >= n replaced by `fill` (so a masked tail does not disturb a max or a sum).
inline VecF vmask_fill(VecF a, int n, float fill) {
    return {_mm512_mask_mov_ps(_mm512_set1_ps(fill), lane_mask(n), a.v)};
}

// exp(x): range reduction x = k ln2 + r, |r| <= ln2/2, then a degree-6 polynomial; max rel.
// error ~2e-7 over the f32 range; exact 0 below -88.4 and +inf above 88.7.
inline VecF vexp(VecF x) {
    const __m512 hi = _mm512_set1_ps(88.7228f), lo = _mm512_set1_ps(-88.3762f);
    __m512 xc = _mm512_max_ps(_mm512_min_ps(x.v, hi), lo);
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), xc);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512 res = _mm512_scalef_ps(p, k);
    // Beyond the clamps: exp(-inf or very negative) = 0, exp(large) = inf; NaN stays NaN.
    res = _mm512_mask_mov_ps(res, _mm512_cmp_ps_mask(x.v, lo, _CMP_LT_OQ), _mm512_setzero_ps());
    res =
        _mm512_mask_mov_ps(res, _mm512_cmp_ps_mask(x.v, hi, _CMP_GT_OQ), _mm512_set1_ps(INFINITY));
    res = _mm512_mask_mov_ps(res, _mm512_cmp_ps_mask(x.v, x.v, _CMP_UNORD_Q), x.v);
    return {res};
}

// 1 / x for finite x != 0: the 14-bit estimate and one Newton step (within 2 ulp of the
// division; a tenth of vdivps's throughput cost, which bounded gelu/silu). Not for 0 or inf.
inline VecF vrcp(VecF x) {
    const __m512 r = _mm512_rcp14_ps(x.v);
    return {_mm512_fmadd_ps(r, _mm512_fnmadd_ps(x.v, r, _mm512_set1_ps(1.0f)), r)};
}

#else  // portable fallback: the same operations over a plain array

struct VecF {
    float v[kLanes];
};

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
inline float vsum(VecF a) {
    float s = 0;
    for (float x : a.v) s += x;
    return s;
}
inline float vhmax(VecF a) {
    float m = a.v[0];
    for (float x : a.v) m = x > m ? x : m;
    return m;
}
inline VecF vmask_fill(VecF a, int n, float fill) {
    for (int i = n; i < kLanes; ++i) a.v[i] = fill;
    return a;
}
inline VecF vexp(VecF x) {
    VecF r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = std::exp(x.v[i]);
    return r;
}
inline VecF vrcp(VecF x) {
    VecF r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = 1.0f / x.v[i];
    return r;
}

#endif

// Derived functions, identical on both paths.
// The clamps keep vrcp's argument finite (vmax/vmin with the constant first pass NaN through):
// sigmoid(-80) is 1.8e-35 and tanh(+-9) rounds to +-1 in f32.
inline VecF vsigmoid(VecF x) { return vrcp(vset(1.0f) + vexp(vzero() - vmax(vset(-80.0f), x))); }
// tanh(x) = 1 - 2 / (exp(2x) + 1): saturates cleanly to +-1 at both ends.
inline VecF vtanh(VecF x) {
    const VecF c = vmax(vset(-9.0f), vmin(vset(9.0f), x));
    return vset(1.0f) - vset(2.0f) * vrcp(vexp(c + c) + vset(1.0f));
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
