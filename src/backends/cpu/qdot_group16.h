// The type switch and the activation-row blocking of the interleaved16 group kernels (qdot.h's
// qdot_group16_*), shared by qdot_avx2.cpp and qdot_vnni.cpp, whose per-type group kernels differ
// only in their instruction set and accumulator type.
//
// Included by translation units compiled for different instruction sets: it holds templates only,
// and every one of them is instantiated with the including file's kernel set `K`, a type in that
// file's anonymous namespace, so each instantiation has internal linkage and the linker can never
// pick one compiled for another instruction set (qdot.h's rule for shared inline code).
//
// K provides, for its accumulator type K::Acc (K::kAccPerRow of them per activation row, holding
// that row's 16 sums):
//   template <int kBits, int kOff, bool kMin, int kMBn> static void group32(g, nb, a, acc);
//   template <int kMBn> static void group_q4_k(g, nb, a, acc), group_q5_k(...), group_q6_k(...);
//   template <int kBits, int kOff, bool kMin, int kG> static void group32_streams(g[kG], nb, a,
//   acc); template <int kG> static void group_q4_k_streams(g[kG], nb, a, acc),
//   group_q5_k_streams(...), group_q6_k_streams(...) (needed only where rows_streams is used);
//   static K::Acc zero();  static void store16(const K::Acc* row_acc,
//   float* out16);
#pragma once

#include <cstdint>

#include "backends/cpu/qdot.h"

namespace zs::backends::cpu::qdot_group16 {

// acc += the group's dot products with kMBn activation rows (a[0 .. kMBn)).
template <class K, int kMBn>
inline void group_any(core::QType t, const uint8_t* g, int64_t k, const QActRow* a,
                      typename K::Acc* acc) {
    using core::QType;
    switch (t) {
        case QType::q8_0:
            return K::template group32<8, -128, false, kMBn>(g, k / 32, a, acc);
        case QType::q4_0:
            return K::template group32<4, -8, false, kMBn>(g, k / 32, a, acc);
        case QType::q4_1:
            return K::template group32<4, 0, true, kMBn>(g, k / 32, a, acc);
        case QType::q5_0:
            return K::template group32<5, -16, false, kMBn>(g, k / 32, a, acc);
        case QType::q5_1:
            return K::template group32<5, 0, true, kMBn>(g, k / 32, a, acc);
        case QType::q4_k:
            return K::template group_q4_k<kMBn>(g, k / 256, a, acc);
        case QType::q5_k:
            return K::template group_q5_k<kMBn>(g, k / 256, a, acc);
        case QType::q6_k:
            return K::template group_q6_k<kMBn>(g, k / 256, a, acc);
        default:
            return;
    }
}

// res[16 i + r] = dot(group row r, acts[i]) for r < 16 and i < m, activation rows
// K::rows_per_pass(t) at a time (each loaded slab meets all of them; every row's sums are the same
// whatever the count).
template <class K>
inline void rows(core::QType t, const uint8_t* g, int64_t k, const QActRow* acts, int m,
                 float* res) {
    const int per = K::rows_per_pass(t);  // 1..4
    for (int i0 = 0; i0 < m; i0 += per) {
        const int mb = m - i0 < per ? m - i0 : per;
        typename K::Acc acc[K::kAccPerRow * 4];
        for (auto& v : acc) v = K::zero();
        switch (mb) {
            case 1:
                group_any<K, 1>(t, g, k, acts + i0, acc);
                break;
            case 2:
                group_any<K, 2>(t, g, k, acts + i0, acc);
                break;
            case 3:
                group_any<K, 3>(t, g, k, acts + i0, acc);
                break;
            default:
                group_any<K, 4>(t, g, k, acts + i0, acc);
                break;
        }
        for (int i = 0; i < mb; ++i) K::store16(acc + K::kAccPerRow * i, res + 16 * (i0 + i));
    }
}

// acc[K::kAccPerRow gi ..] += group gi's dot products with one activation row, the kG groups read
// side by side (group_any's arithmetic per group).
template <class K, int kG>
inline void streams_any(core::QType t, const uint8_t* const* g, int64_t k, const QActRow* a,
                        typename K::Acc* acc) {
    using core::QType;
    switch (t) {
        case QType::q8_0:
            return K::template group32_streams<8, -128, false, kG>(g, k / 32, a, acc);
        case QType::q4_0:
            return K::template group32_streams<4, -8, false, kG>(g, k / 32, a, acc);
        case QType::q4_1:
            return K::template group32_streams<4, 0, true, kG>(g, k / 32, a, acc);
        case QType::q5_0:
            return K::template group32_streams<5, -16, false, kG>(g, k / 32, a, acc);
        case QType::q5_1:
            return K::template group32_streams<5, 0, true, kG>(g, k / 32, a, acc);
        case QType::q4_k:
            return K::template group_q4_k_streams<kG>(g, k / 256, a, acc);
        case QType::q5_k:
            return K::template group_q5_k_streams<kG>(g, k / 256, a, acc);
        case QType::q6_k:
            return K::template group_q6_k_streams<kG>(g, k / 256, a, acc);
        default:
            return;
    }
}

// res[16 gi + r] = dot(row r of group gi, act) for gi < n (1 <= n <= kMaxStreams): rows(t, g[gi],
// k, &act, 1, ...)'s values, bit for bit, with the n groups' bytes read as n streams at once.
inline constexpr int kMaxStreams = 4;
template <class K>
inline void rows_streams(core::QType t, const uint8_t* const* g, int n, int64_t k,
                         const QActRow& act, float* res) {
    typename K::Acc acc[K::kAccPerRow * kMaxStreams];
    for (auto& v : acc) v = K::zero();
    switch (n) {
        case 1:
            streams_any<K, 1>(t, g, k, &act, acc);
            break;
        case 2:
            streams_any<K, 2>(t, g, k, &act, acc);
            break;
        case 3:
            streams_any<K, 3>(t, g, k, &act, acc);
            break;
        default:
            streams_any<K, 4>(t, g, k, &act, acc);
            break;
    }
    for (int gi = 0; gi < n; ++gi) K::store16(acc + K::kAccPerRow * gi, res + 16 * gi);
}

}  // namespace zs::backends::cpu::qdot_group16
