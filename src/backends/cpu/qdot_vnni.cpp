// qdot_rows_vnni: the quantized dot products with AVX-512 VNNI (qdot.h states the arithmetic).
// Compiled with -mavx512f/bw/dq/vl/vnni whatever the build targets and called only after a run-time
// CPU check (qgemv.cpp), so it includes nothing with inline code shared with other units but the
// intrinsics, and keeps its helpers in an anonymous namespace.
//
// Per 32-element chunk: unpack the weight codes u into 32 bytes in registers, one vpdpbusd
// against the activation bytes gives 8 int32 lanes (lanes 0-3: elements 0-15, lanes 4-7: 16-31),
// converted and scaled by d[c] * sc_h per lane into an f32 accumulator; the offsets mn_h meet the
// activation half-sums in a scalar accumulator.
#include "backends/cpu/qdot.h"
#include "backends/cpu/qdot_group16.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <cstring>

#include <immintrin.h>

namespace zs::backends::cpu {

namespace {

using core::QType;

inline float f16_at(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

inline __m256i nibbles16(const uint8_t* qs) {  // 16 bytes -> 32 codes (low nibbles first)
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

inline __m256i shifted_bits(__m256i v, int shift, int mask) {
    return _mm256_and_si256(_mm256_srli_epi16(v, shift), _mm256_set1_epi8(static_cast<char>(mask)));
}

inline __m256i load32(const void* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

struct Acc {
    __m256 v = _mm256_setzero_ps();
    float off = 0.0f;
    // One chunk c with codes u, scales sc0/sc1 and offsets mn0/mn1 of its halves.
    inline void add(__m256i u, const QActRow& a, int64_t c, float sc0, float sc1, float mn0,
                    float mn1) {
        const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, load32(a.q + 32 * c));
        const float d = a.d[c];
        const __m256 s = _mm256_set_m128(_mm_set1_ps(d * sc1), _mm_set1_ps(d * sc0));
        v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, v);
        off += mn0 * a.ds0[c] + mn1 * a.ds1[c];
    }
    inline void add(__m256i u, const QActRow& a, int64_t c, float sc, float mn) {
        const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, load32(a.q + 32 * c));
        v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(a.d[c] * sc), v);
        off += mn * (a.ds0[c] + a.ds1[c]);
    }
    inline float sum() const {
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        return _mm_cvtss_f32(h) + off;
    }
};

// One block of each type at block index b (chunk index of its first 32 elements: c0).
inline void block_q8_0(const uint8_t* x, const QActRow& a, int64_t c0, Acc& acc) {
    const float d = f16_at(x);
    const __m256i u = _mm256_xor_si256(load32(x + 2), _mm256_set1_epi8(static_cast<char>(0x80)));
    acc.add(u, a, c0, d, -128.0f * d);
}
inline void block_q4_0(const uint8_t* x, const QActRow& a, int64_t c0, Acc& acc) {
    const float d = f16_at(x);
    acc.add(nibbles16(x + 2), a, c0, d, -8.0f * d);
}
inline void block_q4_1(const uint8_t* x, const QActRow& a, int64_t c0, Acc& acc) {
    acc.add(nibbles16(x + 4), a, c0, f16_at(x), f16_at(x + 2));
}
inline __m256i high_bits(const uint8_t* qh) {  // bit i of a u32 -> 0x10 in byte i
    uint32_t h;
    std::memcpy(&h, qh, 4);
    return _mm256_maskz_set1_epi8(h, 0x10);
}
inline void block_q5_0(const uint8_t* x, const QActRow& a, int64_t c0, Acc& acc) {
    const float d = f16_at(x);
    acc.add(_mm256_or_si256(nibbles16(x + 6), high_bits(x + 2)), a, c0, d, -16.0f * d);
}
inline void block_q5_1(const uint8_t* x, const QActRow& a, int64_t c0, Acc& acc) {
    acc.add(_mm256_or_si256(nibbles16(x + 8), high_bits(x + 4)), a, c0, f16_at(x), f16_at(x + 2));
}

inline void scale_min_k4(const uint8_t* s, int j, int* sc, int* mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

template <bool kFive>
inline void block_qk(const uint8_t* x, const QActRow& a, int64_t c0, Acc& acc) {
    const float d = f16_at(x), dmin = f16_at(x + 2);
    const uint8_t* qs = x + (kFive ? 48 : 16);
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kFive) qh = load32(x + 16);
    for (int p = 0; p < 4; ++p) {
        const __m256i q = load32(qs + 32 * p);
        for (int h = 0; h < 2; ++h) {
            const int j = 2 * p + h;
            int sc, mn;
            scale_min_k4(x + 4, j, &sc, &mn);
            __m256i u = shifted_bits(q, 4 * h, 0x0F);
            if constexpr (kFive)
                u = _mm256_or_si256(u, _mm256_slli_epi16(shifted_bits(qh, j, 1), 4));
            acc.add(u, a, c0 + j, d * static_cast<float>(sc), -dmin * static_cast<float>(mn));
        }
    }
}

inline void block_q6_k(const uint8_t* x, const QActRow& a, int64_t c0, Acc& acc) {
    const auto* sc = reinterpret_cast<const int8_t*>(x + 192);
    const float d = f16_at(x + 208);
    for (int h = 0; h < 2; ++h) {
        const __m256i qh = load32(x + 128 + 32 * h);
        for (int k = 0; k < 4; ++k) {
            const __m256i ql = load32(x + 64 * h + 32 * (k % 2));
            const __m256i u = _mm256_or_si256(shifted_bits(ql, k < 2 ? 0 : 4, 0x0F),
                                              _mm256_slli_epi16(shifted_bits(qh, 2 * k, 3), 4));
            const float s0 = d * static_cast<float>(sc[8 * h + 2 * k]);
            const float s1 = d * static_cast<float>(sc[8 * h + 2 * k + 1]);
            acc.add(u, a, c0 + 4 * h + k, s0, s1, -32.0f * s0, -32.0f * s1);
        }
    }
}

inline void block_q8_k(const uint8_t* x, const QActRow& a, int64_t c0, Acc& acc) {
    float d;
    std::memcpy(&d, x, 4);
    for (int j = 0; j < 8; ++j) {
        const __m256i u =
            _mm256_xor_si256(load32(x + 4 + 32 * j), _mm256_set1_epi8(static_cast<char>(0x80)));
        acc.add(u, a, c0 + j, d, -128.0f * d);
    }
}

template <void (*kBlock)(const uint8_t*, const QActRow&, int64_t, Acc&), int64_t kBlockElems,
          int64_t kBlockBytes>
void rows_impl(const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, const QActRow* acts,
               int m, float* res) {
    const int64_t nb = k / kBlockElems;
    constexpr int64_t kChunks = kBlockElems / 32;
    for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = w + r * row_bytes;
        if (r + 1 < rows) {
            // The next row, ahead of the hardware prefetcher (rows are short).
            const uint8_t* next = row + row_bytes;
            for (int64_t o = 0; o < row_bytes; o += 64) _mm_prefetch(next + o, _MM_HINT_T0);
        }
        for (int i = 0; i < m; ++i) {
            Acc acc;
            for (int64_t b = 0; b < nb; ++b)
                kBlock(row + b * kBlockBytes, acts[i], b * kChunks, acc);
            res[r * m + i] = acc.sum();
        }
    }
}

}  // namespace

void qdot_rows_vnni(QType t, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k,
                    const QActRow* acts, int m, float* res) {
    switch (t) {
        case QType::q8_0:
            return rows_impl<block_q8_0, 32, 34>(w, row_bytes, rows, k, acts, m, res);
        case QType::q4_0:
            return rows_impl<block_q4_0, 32, 18>(w, row_bytes, rows, k, acts, m, res);
        case QType::q4_1:
            return rows_impl<block_q4_1, 32, 20>(w, row_bytes, rows, k, acts, m, res);
        case QType::q5_0:
            return rows_impl<block_q5_0, 32, 22>(w, row_bytes, rows, k, acts, m, res);
        case QType::q5_1:
            return rows_impl<block_q5_1, 32, 24>(w, row_bytes, rows, k, acts, m, res);
        case QType::q4_k:
            return rows_impl<block_qk<false>, 256, 144>(w, row_bytes, rows, k, acts, m, res);
        case QType::q5_k:
            return rows_impl<block_qk<true>, 256, 176>(w, row_bytes, rows, k, acts, m, res);
        case QType::q6_k:
            return rows_impl<block_q6_k, 256, 210>(w, row_bytes, rows, k, acts, m, res);
        case QType::q8_k:
            return rows_impl<block_q8_k, 256, 292>(w, row_bytes, rows, k, acts, m, res);
    }
}

// ------------------------------------------------------------------ interleaved16 (16-row groups)
//
// One 64-byte slab holds 4 codes of each of the 16 rows (quant_pack.cpp); vpdpbusd against the 4
// activation bytes broadcast to every lane advances 16 int32 row sums at once, so one chunk of 32
// elements is 8 vpdpbusd for 16 rows, and the per-block scales are applied to 16 lanes by one FMA.
// Integer offsets (q8_0: -128, q4_0: -8, q6_k: -32 per code) start the int32 chain as
// offset * (sum of the activation codes), exact. Activation rows go 4 at a time (MB), each
// loaded slab meeting all of them.

namespace {

// Software prefetch distance in bytes: a thread's groups are consecutive in memory, so reading
// past the group's end prefetches the next one (ZS_QPF at build time for experiments).
#ifndef ZS_QPF
#define ZS_QPF 4096
#endif
constexpr int64_t kAhead = ZS_QPF;

inline __m512 f16x16(const uint8_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512i load64(const uint8_t* p) { return _mm512_loadu_si512(p); }
inline __m512i bcast4(const int8_t* q) {
    int32_t v;
    std::memcpy(&v, q, 4);
    return _mm512_set1_epi32(v);
}
inline __m512 u8x16(const uint8_t* p) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 i8x16(const uint8_t* p) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// 8 slabs of one chunk: s[k] pairs with activation bytes 4k..4k+3.
template <int kBits>
inline void chunk_codes(const uint8_t* c, __m512i* s) {
    if constexpr (kBits == 8) {
        for (int k = 0; k < 8; ++k) s[k] = load64(c + 64 * k);
    } else {
        const __m512i m4 = _mm512_set1_epi8(0x0F);
        for (int p = 0; p < 4; ++p) {
            const __m512i v = load64(c + 64 * p);
            s[p] = _mm512_and_si512(v, m4);
            s[p + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        // s | (h' & mask) in one vpternlogd (0xF8: a | (b & c)).
        auto merge = [](__m512i a, __m512i b, __m512i m) {
            return _mm512_ternarylogic_epi32(a, b, m, 0xF8);
        };
        if constexpr (kBits == 5) {
            const __m512i m1 = _mm512_set1_epi8(0x10);
            const __m512i h = load64(c + 256);
            s[0] = merge(s[0], _mm512_slli_epi16(h, 4), m1);
            s[1] = merge(s[1], _mm512_slli_epi16(h, 3), m1);
            s[2] = merge(s[2], _mm512_slli_epi16(h, 2), m1);
            s[3] = merge(s[3], _mm512_slli_epi16(h, 1), m1);
            s[4] = merge(s[4], h, m1);
            s[5] = merge(s[5], _mm512_srli_epi16(h, 1), m1);
            s[6] = merge(s[6], _mm512_srli_epi16(h, 2), m1);
            s[7] = merge(s[7], _mm512_srli_epi16(h, 3), m1);
        }
        if constexpr (kBits == 6) {
            const __m512i m2 = _mm512_set1_epi8(0x30);
            for (int half = 0; half < 2; ++half) {
                const __m512i h = load64(c + 256 + 64 * half);
                s[4 * half + 0] = merge(s[4 * half + 0], _mm512_slli_epi16(h, 4), m2);
                s[4 * half + 1] = merge(s[4 * half + 1], _mm512_slli_epi16(h, 2), m2);
                s[4 * half + 2] = merge(s[4 * half + 2], h, m2);
                s[4 * half + 3] = merge(s[4 * half + 3], _mm512_srli_epi16(h, 2), m2);
            }
        }
    }
}

inline __m512i dot8(__m512i init, const __m512i* s, const int8_t* q, int k0, int k1) {
    __m512i p = init;
    for (int k = k0; k < k1; ++k) p = _mm512_dpbusd_epi32(p, s[k], bcast4(q + 4 * k));
    return p;
}

// 32-element blocks: q8_0 (kOff -128), q4_0 (-8), q5_0 (-16), q4_1 and q5_1 (min m per block,
// kOff 0).
template <int kBits, int kOff, bool kMin, int kMBn>
void group32(const uint8_t* g, int64_t nb, const QActRow* a, __m512* acc) {
    constexpr int64_t kHdr = kMin ? 64 : 32;
    constexpr int64_t kUnit = kHdr + 256 + 64 * (kBits - 4);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* u = g + b * kUnit;
        for (int64_t o = 0; o < kUnit; o += 64) _mm_prefetch(u + kAhead + o, _MM_HINT_T0);
        const __m512 d = f16x16(u);
        __m512i s[8];
        chunk_codes<kBits>(u + kHdr, s);
        for (int i = 0; i < kMBn; ++i) {
            const int32_t sum = a[i].s0[b] + a[i].s1[b];
            const __m512i p = dot8(_mm512_set1_epi32(kOff * sum), s, a[i].q + 32 * b, 0, 8);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p),
                                     _mm512_mul_ps(d, _mm512_set1_ps(a[i].d[b])), acc[i]);
            if constexpr (kMin) {
                acc[i] = _mm512_fmadd_ps(f16x16(u + 32), _mm512_set1_ps(a[i].ds0[b] + a[i].ds1[b]),
                                         acc[i]);
            }
        }
    }
}

// q4_k (kBits 4) and q5_k (5): the same header, chunks of 4- or 5-bit codes.
template <int kBits, int kMBn>
void group_qk(const uint8_t* g, int64_t nb, const QActRow* a, __m512* acc) {
    constexpr int64_t kChunk = 256 + 64 * (kBits - 4), kUnit = 320 + 8 * kChunk;
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* u = g + b * kUnit;
        const __m512 d = f16x16(u), dmin = f16x16(u + 32);
        for (int j = 0; j < 8; ++j) {
            const uint8_t* c = u + 320 + kChunk * j;
            for (int o = 0; o < kChunk; o += 64) _mm_prefetch(c + kAhead + o, _MM_HINT_T0);
            const __m512 sf = _mm512_mul_ps(d, u8x16(u + 64 + 16 * j));
            const __m512 mf = _mm512_mul_ps(dmin, u8x16(u + 192 + 16 * j));
            __m512i s[8];
            chunk_codes<kBits>(c, s);
            const int64_t ch = 8 * b + j;
            for (int i = 0; i < kMBn; ++i) {
                const __m512i p = dot8(_mm512_setzero_si512(), s, a[i].q + 32 * ch, 0, 8);
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p),
                                         _mm512_mul_ps(sf, _mm512_set1_ps(a[i].d[ch])), acc[i]);
                acc[i] = _mm512_fnmadd_ps(mf, _mm512_set1_ps(a[i].ds0[ch] + a[i].ds1[ch]), acc[i]);
            }
        }
    }
}

template <int kMBn>
void group_q6_k(const uint8_t* g, int64_t nb, const QActRow* a, __m512* acc) {
    constexpr int64_t kUnit = 3360;
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* u = g + b * kUnit;
        const __m512 d = f16x16(u);
        for (int j = 0; j < 8; ++j) {
            const uint8_t* c = u + 288 + 384 * j;
            for (int o = 0; o < 384; o += 64) _mm_prefetch(c + kAhead + o, _MM_HINT_T0);
            const __m512 sf0 = _mm512_mul_ps(d, i8x16(u + 32 + 16 * (2 * j)));
            const __m512 sf1 = _mm512_mul_ps(d, i8x16(u + 32 + 16 * (2 * j + 1)));
            __m512i s[8];
            chunk_codes<6>(c, s);
            const int64_t ch = 8 * b + j;
            for (int i = 0; i < kMBn; ++i) {
                const int8_t* q = a[i].q + 32 * ch;
                const __m512i p0 = dot8(_mm512_set1_epi32(-32 * a[i].s0[ch]), s, q, 0, 4);
                const __m512i p1 = dot8(_mm512_set1_epi32(-32 * a[i].s1[ch]), s, q, 4, 8);
                const __m512 t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), sf0,
                                                 _mm512_mul_ps(_mm512_cvtepi32_ps(p1), sf1));
                acc[i] = _mm512_fmadd_ps(t, _mm512_set1_ps(a[i].d[ch]), acc[i]);
            }
        }
    }
}

// The kernel set shared code instantiates (qdot_group16.h): internal linkage, this file's ISA.
struct Kernels {
    using Acc = __m512;
    static constexpr int kAccPerRow = 1;
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
    static int rows_per_pass(QType) { return 4; }
    static Acc zero() { return _mm512_setzero_ps(); }
    static void store16(const Acc* row, float* out16) { _mm512_storeu_ps(out16, row[0]); }
};

}  // namespace

void qdot_group16_vnni(QType t, const uint8_t* g, int64_t k, const QActRow* acts, int m,
                       float* res) {
    qdot_group16::rows<Kernels>(t, g, k, acts, m, res);
}

}  // namespace zs::backends::cpu

namespace zs::backends::cpu {

void quantize_q8_act_avx512(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0,
                            int32_t* s1) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t c = 0; c < n / 32; ++c) {
        const __m512 a = _mm512_loadu_ps(x + 32 * c), b = _mm512_loadu_ps(x + 32 * c + 16);
        const float amax = _mm512_reduce_max_ps(
            _mm512_max_ps(_mm512_andnot_ps(sign, a), _mm512_andnot_ps(sign, b)));
        const float dc = amax / 127.0f;
        const __m512 id = _mm512_set1_ps(dc != 0.0f ? 1.0f / dc : 0.0f);
        const __m512i qa = _mm512_cvtps_epi32(_mm512_roundscale_ps(
            _mm512_mul_ps(a, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        const __m512i qb = _mm512_cvtps_epi32(_mm512_roundscale_ps(
            _mm512_mul_ps(b, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 32 * c), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 32 * c + 16), _mm512_cvtepi32_epi8(qb));
        d[c] = dc;
        s0[c] = _mm512_reduce_add_epi32(qa);
        s1[c] = _mm512_reduce_add_epi32(qb);
    }
}

}  // namespace zs::backends::cpu
