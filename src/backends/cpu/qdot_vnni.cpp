// qdot_rows_vnni: the quantized dot products with AVX-512 VNNI (qdot.h states the arithmetic).
// Compiled with -mavx512f/bw/vl/vnni whatever the build targets and called only after a run-time
// CPU check (qgemv.cpp), so it includes nothing with inline code shared with other units but the
// intrinsics, and keeps its helpers in an anonymous namespace.
//
// Per 32-element chunk: unpack the weight codes u into 32 bytes in registers, one vpdpbusd
// against the activation bytes gives 8 int32 lanes (lanes 0-3: elements 0-15, lanes 4-7: 16-31),
// converted and scaled by d[c] * sc_h per lane into an f32 accumulator; the offsets mn_h meet the
// activation half-sums in a scalar accumulator.
#include "backends/cpu/qdot.h"

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

}  // namespace zs::backends::cpu
