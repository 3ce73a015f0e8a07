// Flash-style attention on the CPU (tiled, online softmax; FlashAttention-2's backward).
//
// Forward: one task per (batch, query head, block of kBq queries); each streams key/value blocks
// of kBk, keeping a running max m, normaliser l and output accumulator in f32 scratch, so memory is
// O(T) per head (the lse), not O(T^2). Backward: one task per (batch, query head); it walks key
// blocks, recomputes P = exp(S - lse) per tile, accumulates dV, dK for its head in f32 scratch and
// dQ directly; a second pass sums dK/dV over the query heads of each kv group (GQA) and writes
// them. No atomics, fixed summation order: deterministic for a given thread count.
//
// Tiles are converted to f32 on load (bf16 inputs), K is also kept transposed so S = Q K^T runs as
// rank-1 updates over 16-key vectors.
#include <algorithm>
#include <cmath>
#include <memory>
#include <type_traits>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/parallel.h"

namespace zs::backends::cpu {

namespace {

constexpr int64_t kBq = 32;  // queries per tile
constexpr int64_t kBk = 64;  // keys per tile (a multiple of kLanes)

struct Geometry {
    int64_t B, Tq, Tk, NH, NKV, HS, group;
    float scale;
    bool causal;
    int64_t window;  // sliding window (0: none)
    // Last key (inclusive) query i may see; -1 when none.
    int64_t last_key(int64_t i) const { return causal ? std::min(Tk - 1, i + (Tk - Tq)) : Tk - 1; }
    // First key query i may see (the window's start).
    int64_t first_key(int64_t i) const {
        return window > 0 ? std::max<int64_t>(0, i + (Tk - Tq) - window + 1) : 0;
    }
};

Geometry geometry(const Tensor& q, const Tensor& k, const ops::AttentionOptions& o) {
    Geometry g{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2),
               q.size(3), 1,         o.scale,   o.causal,  o.window};
    g.group = g.NH / g.NKV;
    if (g.scale == 0.0f) g.scale = 1.0f / std::sqrt(static_cast<float>(g.HS));
    return g;
}

// A strided [B, T, H, HS] tensor's row pointer for (b, t, h).
template <class T>
struct Heads {
    T* base;
    int64_t sb, st, sh;
    T* row(int64_t b, int64_t t, int64_t h) const { return base + b * sb + t * st + h * sh; }
};

template <class T>
Heads<T> heads(const Tensor& x) {
    return {static_cast<T*>(x.data_ptr()), x.stride(0), x.stride(1), x.stride(2)};
}

// Copy rows [t0, t0 + n) of head h into f32 dst [n, HS] (optionally scaled).
template <class T>
void load_rows(float* dst, const Heads<const T>& src, int64_t b, int64_t t0, int64_t n, int64_t h,
               int64_t HS, float scale = 1.0f) {
    for (int64_t r = 0; r < n; ++r) {
        const T* s = src.row(b, t0 + r, h);
        for (int64_t d = 0; d < HS; d += kLanes) {
            int m = lanes(d, HS);
            vstore(dst + r * HS + d, vload(s + d, m) * vset(scale), m);
        }
    }
}

// dst[HS][kBk] = transpose of src rows [n, HS] (columns >= n zeroed).
void transpose_tile(float* dst, const float* src, int64_t n, int64_t HS) {
    for (int64_t d = 0; d < HS; ++d) {
        for (int64_t j = 0; j < kBk; ++j) dst[d * kBk + j] = j < n ? src[j * HS + d] : 0.0f;
    }
}

// S[r][c0, c0 + 16 NV) = sum_d A[r][d] * Bt[d][c0, ...) for the R rows from r0: the R x NV
// accumulators stay in registers and each load of Bt serves R rows, so the loop is FMA-bound
// rather than load-bound.
template <int R, int NV>
void abt_block(float* S, const float* A, const float* Bt, int64_t r0, int64_t c0, int64_t HS) {
    VecF c[R][NV];
    for (auto& row : c) {
        for (auto& v : row) v = vzero();
    }
    const float* a0 = A + r0 * HS;
    for (int64_t d = 0; d < HS; ++d) {
        const float* bt = Bt + d * kBk + c0;
        VecF b[NV];
        for (int j = 0; j < NV; ++j) b[j] = vload(bt + j * kLanes);
        for (int i = 0; i < R; ++i) {
            const VecF av = vset(a0[i * HS + d]);
            for (int j = 0; j < NV; ++j) c[i][j] = vfma(av, b[j], c[i][j]);
        }
    }
    for (int i = 0; i < R; ++i) {
        float* s = S + (r0 + i) * kBk + c0;
        for (int j = 0; j < NV; ++j) vstore(s + j * kLanes, c[i][j]);
    }
}

// S[r][0..kBk) = sum_d A[r][d] * Bt[d][0..kBk) for r < rows. With 32 vector registers, four
// rows by the whole tile width (16 accumulators); with AVX2's 16 (8 VecF), six rows by one
// vector (12 ymm accumulators, 2 for Bt, 1 broadcast), where 4 x 4 spilled half its
// accumulators (Zen 2, ops_bench attention: 6 x 1 ran fwd 15% and bwd 9% faster, 3 x 2 half
// that). Every S element is the same chain of FMAs either way.
void tile_abt(float* S, const float* A, const float* Bt, int64_t rows, int64_t HS) {
    static_assert(kBk == 4 * kLanes);
    constexpr int kRows = kVecRegs >= 32 ? 4 : 6, kVecs = kVecRegs >= 32 ? 4 : 1;
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows) {
        for (int64_t c0 = 0; c0 < kBk; c0 += kVecs * kLanes)
            abt_block<kRows, kVecs>(S, A, Bt, r, c0, HS);
    }
    for (; r < rows; ++r) {
        for (int64_t c0 = 0; c0 < kBk; c0 += kVecs * kLanes)
            abt_block<1, kVecs>(S, A, Bt, r, c0, HS);
    }
}

// C[m][:] += sum_k A(m, k) * Brows[k][:], A(m, k) = A[m * am + k * ak]; rows of HS floats.
// Rows are processed in blocks of R sharing each load of Brows[k] (R = 4 for HS <= 64, else 2).
// NOTE: on AVX2 (8 VecF of registers) 4 x 4 spills, yet 6 x 1, 4 x 1, 3 x 2, 2 x 2 and 2 x 4 all
// ran 5-30% slower in ops_bench's attention (Zen 2): each (row, k) pays a scalar load and a zero
// test, which 4 x 4 spreads over 32 FMAs (tile_abt has no such test, and there 6 x 1 wins).
template <int R, int NV>
void rows_axpy_block(float* C, const float* A, int64_t am, int64_t ak, const float* Brows,
                     int64_t m0, int64_t K, int64_t HS, int64_t d0) {
    VecF acc[R][NV];
    const int nv = static_cast<int>(std::min<int64_t>(NV, (HS - d0 + kLanes - 1) / kLanes));
    for (int i = 0; i < R; ++i) {
        for (int v = 0; v < nv; ++v)
            acc[i][v] = vload(C + (m0 + i) * HS + d0 + v * kLanes, lanes(d0 + v * kLanes, HS));
    }
    for (int64_t k = 0; k < K; ++k) {
        const float* b = Brows + k * HS + d0;
        VecF bv[NV];
        for (int v = 0; v < nv; ++v) bv[v] = vload(b + v * kLanes, lanes(d0 + v * kLanes, HS));
        for (int i = 0; i < R; ++i) {
            float a = A[(m0 + i) * am + k * ak];
            if (a == 0.0f) continue;
            VecF av = vset(a);
            for (int v = 0; v < nv; ++v) acc[i][v] = vfma(av, bv[v], acc[i][v]);
        }
    }
    for (int i = 0; i < R; ++i) {
        for (int v = 0; v < nv; ++v)
            vstore(C + (m0 + i) * HS + d0 + v * kLanes, acc[i][v], lanes(d0 + v * kLanes, HS));
    }
}

void rows_axpy(float* C, const float* A, int64_t am, int64_t ak, const float* Brows, int64_t M,
               int64_t K, int64_t HS) {
    for (int64_t d0 = 0; d0 < HS; d0 += (HS <= 4 * kLanes ? 4 : 8) * kLanes) {
        int64_t m = 0;
        if (HS <= 4 * kLanes) {
            for (; m + 4 <= M; m += 4) rows_axpy_block<4, 4>(C, A, am, ak, Brows, m, K, HS, d0);
            for (; m < M; ++m) rows_axpy_block<1, 4>(C, A, am, ak, Brows, m, K, HS, d0);
        } else {
            for (; m + 2 <= M; m += 2) rows_axpy_block<2, 8>(C, A, am, ak, Brows, m, K, HS, d0);
            for (; m < M; ++m) rows_axpy_block<1, 8>(C, A, am, ak, Brows, m, K, HS, d0);
        }
    }
}

// Up to this many queries in a tile take the dot-product path for S (scores_few).
constexpr int64_t kFewQueries = 4;
// Decode reads every K and V row of the cache once per token from memory (the weights streamed
// in between evict them): rows are prefetched this many keys ahead, since in a token-major cache
// one kv head's rows are n_kv_heads * HS elements apart, which the hardware prefetchers follow
// poorly (models::ContiguousKvCache is head-major on the CPU for the same reason).
constexpr int64_t kPrefetchKeys = 32;

// S[r][j] = Qt[r] . K[j0 + j] for r < NQ <= kFewQueries, j < nk: each K row is loaded once (and
// converted from bf16 in registers) for all the tile's queries. Four keys at a time, so that the
// horizontal sums of their accumulators share one shuffle tree (vsum4) instead of a full
// reduction each, which cost more than the products. NQ is a template argument so the 4 x NQ
// accumulators stay in registers. Prefetches K rows kPrefetchKeys ahead and the V rows of this
// block (values_few reads them next), all below `end` (the item's last key + 1).
template <class T, int NQ, bool kFull>
void scores_few(float* S, const float* Qt, const Heads<const T>& K, const Heads<const T>& V,
                int64_t b, int64_t j0, int64_t nk, int64_t kh, int64_t HS, int64_t end) {
    int64_t j = 0;
    for (; j + 4 <= nk; j += 4) {
        const T* kr[4];
#pragma GCC unroll 16
        for (int kk = 0; kk < 4; ++kk) {
            kr[kk] = K.row(b, j0 + j + kk, kh);
            prefetch_row(V.row(b, j0 + j + kk, kh), HS);
            if (j0 + j + kk + kPrefetchKeys < end)
                prefetch_row(K.row(b, j0 + j + kk + kPrefetchKeys, kh), HS);
        }
        dot4_keys<NQ, kFull>(S + j, kBk, Qt, kr, HS);
    }
    for (; j < nk; ++j) {
        const T* kr = K.row(b, j0 + j, kh);
        prefetch_row(V.row(b, j0 + j, kh), HS);
        VecF acc[NQ];
#pragma GCC unroll 16
        for (int r = 0; r < NQ; ++r) acc[r] = vzero();
        for (int64_t d = 0; d < HS; d += kLanes) {
            const int m = kFull ? kLanes : lanes(d, HS);
            const VecF kv = vload(kr + d, m);
#pragma GCC unroll 16
            for (int r = 0; r < NQ; ++r) acc[r] = vfma(vload(Qt + r * HS + d, m), kv, acc[r]);
        }
#pragma GCC unroll 16
        for (int r = 0; r < NQ; ++r) S[r * kBk + j] = vsum(acc[r]);
    }
}

// Whether any of the NQ rows of P gives key j a weight (P[r][j] != 0).
template <int NQ>
bool seen_by_any(const float* P, int64_t j) {
    bool any = false;
#pragma GCC unroll 16
    for (int r = 0; r < NQ; ++r) any = any || P[r * kBk + j] != 0.0f;
    return any;
}

// Acc[r][d0, d0 + 16 NV) += sum_j P[r][j] * V[j0 + j][d0, ...) for r < NQ (the last vector
// holding `tail` lanes): V rows read straight from the cache (converted in registers) once for
// all rows, every accumulator in a register (NQ and NV are template arguments for that).
template <class T, int NQ, int NV, bool kFull>
void values_span(float* Acc, const float* P, const Heads<const T>& V, int64_t b, int64_t j0,
                 int64_t nk, int64_t kh, int64_t HS, int64_t d0, int tail) {
    auto n_of = [&](int v) { return kFull || v < NV - 1 ? kLanes : tail; };
    VecF acc[NQ][NV];
#pragma GCC unroll 16
    for (int r = 0; r < NQ; ++r) {
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) acc[r][v] = vload(Acc + r * HS + d0 + v * kLanes, n_of(v));
    }
    // Keys no row sees (the causal mask's tail, a sliding window's head) are skipped: their V
    // rows are never read, so P = 0 cannot meet a non-finite value there. The rows' visible
    // ranges overlap, so the keys seen by any row are one range [jlo, jhi).
    int64_t jlo = 0, jhi = nk;
    while (jlo < jhi && !seen_by_any<NQ>(P, jlo)) ++jlo;
    while (jhi > jlo && !seen_by_any<NQ>(P, jhi - 1)) --jhi;
    for (int64_t j = jlo; j < jhi; ++j) {
        const T* vr = V.row(b, j0 + j, kh) + d0;
        VecF vv[NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) vv[v] = vload(vr + v * kLanes, n_of(v));
#pragma GCC unroll 16
        for (int r = 0; r < NQ; ++r) {
            const VecF pv = vset(P[r * kBk + j]);  // 0 on masked keys
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) acc[r][v] = vfma(pv, vv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < NQ; ++r) {
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) vstore(Acc + r * HS + d0 + v * kLanes, acc[r][v], n_of(v));
    }
}

// Acc[r] += sum_j P[r][j] * V[j0 + j] for r < NQ <= kFewQueries, 64 dims at a time (fewer
// where NQ x 4 accumulators and 4 V vectors would not fit the registers: AVX2).
template <class T, int NQ, bool kFull>
void values_few(float* Acc, const float* P, const Heads<const T>& V, int64_t b, int64_t j0,
                int64_t nk, int64_t kh, int64_t HS) {
#ifdef ZS_VEC_AVX2
    if constexpr (kFull) {
        // vec.h pv_rows_avx2: the same FMAs per lane, blocked for AVX2's 16 registers, where
        // values_span's 16-lane blocks spilled.
        const T* rows[kBk];
        for (int64_t j = 0; j < nk; ++j) rows[j] = V.row(b, j0 + j, kh);
        int64_t jlo = 0, jhi = nk;
        while (jlo < jhi && !seen_by_any<NQ>(P, jlo)) ++jlo;
        while (jhi > jlo && !seen_by_any<NQ>(P, jhi - 1)) --jhi;
        pv_rows_avx2<NQ>(Acc, HS, P, kBk, rows, jlo, jhi);
        return;
    }
#endif
    constexpr int kVecs = vecs_beside(NQ);
    for (int64_t d0 = 0; d0 < HS; d0 += kVecs * kLanes) {
        const int64_t left = HS - d0;
        const int nv = static_cast<int>(std::min<int64_t>(kVecs, (left + kLanes - 1) / kLanes));
        const int tail = static_cast<int>(std::min<int64_t>(kLanes, left - (nv - 1) * kLanes));
        switch (nv) {
            case 1:
                values_span<T, NQ, 1, kFull>(Acc, P, V, b, j0, nk, kh, HS, d0, tail);
                break;
            case 2:
                values_span<T, NQ, 2, kFull>(Acc, P, V, b, j0, nk, kh, HS, d0, tail);
                break;
            case 3:
                values_span<T, NQ, 3, kFull>(Acc, P, V, b, j0, nk, kh, HS, d0, tail);
                break;
            default:
                values_span<T, NQ, 4, kFull>(Acc, P, V, b, j0, nk, kh, HS, d0, tail);
                break;
        }
    }
}

// fn(std::integral_constant<int, nq>{}, std::bool_constant<full>{}) for 1 <= nq <= kFewQueries:
// the kernels' accumulators stay in registers only when their count and the vector lengths
// (full: HS a multiple of kLanes, no masked tail) are known at compile time.
template <class Fn>
void with_few(int64_t nq, bool full, Fn&& fn) {
    static_assert(kFewQueries == 4);
    auto go = [&](auto f) {
        switch (nq) {
            case 1:
                return fn(std::integral_constant<int, 1>{}, f);
            case 2:
                return fn(std::integral_constant<int, 2>{}, f);
            case 3:
                return fn(std::integral_constant<int, 3>{}, f);
            default:
                return fn(std::integral_constant<int, 4>{}, f);
        }
    };
    return full ? go(std::true_type{}) : go(std::false_type{});
}

// T: K and V's dtype, TQ: Q's (f32 queries over a bf16 cache: TQ float, T bf16), TO: out's.
template <class T, class TO, class TQ = T>
void forward_impl(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                  const Tensor& v, const Geometry& g) {
    Heads<const TQ> Q = heads<const TQ>(q);
    Heads<const T> K = heads<const T>(k), V = heads<const T>(v);
    Heads<TO> O = heads<TO>(out);
    float* L = lse.defined() ? lse.data<float>() : nullptr;
    const int64_t HS = g.HS, nqb = (g.Tq + kBq - 1) / kBq;
    // Decode with grouped-query attention: one task per kv head takes all `group` query heads
    // as the rows of one tile, so each K and V row is read and widened once for all of them
    // instead of once per query head.
    const bool grouped = g.group > 1 && g.group * std::min(kBq, g.Tq) <= kFewQueries;
    const int64_t task_heads = grouped ? g.NKV : g.NH;
    const int64_t tasks = g.B * task_heads * nqb;
    // Decode over a long cache with fewer than two tasks per thread (a few kv heads): each task's
    // key blocks are split into ranges run as separate items, whose partial max, sum and
    // accumulator are merged afterwards (flash-decoding), so no thread idles through most of
    // the region. Split points depend only on the shape and the thread count.
    const bool decode = grouped || g.Tq <= kFewQueries;
    const int64_t nthreads = omp_get_max_threads();
    const int64_t key_blocks = (g.Tk + kBk - 1) / kBk;
    int64_t splits = 1;
    if (decode && tasks < 2 * nthreads) {
        splits = std::min((2 * nthreads + tasks - 1) / tasks, key_blocks / 2);
        splits = std::max<int64_t>(splits, 1);
    }
    const int64_t items = tasks * splits;
    // Each split item's partial max, sum and accumulator rows ([items][kBq], [items][kBq],
    // [items][kBq][HS]): written by its item before the merge reads them, so not zeroed (a
    // decode call would memset 49 KB for 3 kv heads: ~2 us of a ~30 us region).
    std::unique_ptr<float[]> part_m, part_l, part_acc;
    if (splits > 1) {
        part_m.reset(new float[static_cast<size_t>(items * kBq)]);
        part_l.reset(new float[static_cast<size_t>(items * kBq)]);
        part_acc.reset(new float[static_cast<size_t>(items * kBq * HS)]);
    }
    struct Tile {
        int64_t b, kh, th, i0, nqi, nq;
    };
    auto tile_of = [&](int64_t task) {
        int64_t qb = task % nqb, th = (task / nqb) % task_heads, b = task / (nqb * task_heads);
        int64_t i0 = qb * kBq, nqi = std::min(kBq, g.Tq - i0);
        // Tile row r is query i0 + r % nqi of query head head_of(r).
        return Tile{b, grouped ? th : th / g.group, th, i0, nqi, grouped ? g.group * nqi : nqi};
    };
    auto head_of = [&](const Tile& t, int64_t r) {
        return grouped ? t.kh * g.group + r / t.nqi : t.th;
    };
    auto query_of = [&](const Tile& t, int64_t r) { return t.i0 + r % t.nqi; };
    // Normalised output row r of tile t from its accumulator, max and sum.
    auto write_row = [&](const Tile& t, int64_t r, const float* a, float m, float l) {
        const int64_t h = head_of(t, r), i = query_of(t, r);
        TO* o = O.row(t.b, i, h);
        bool none = l == 0.0f;  // no visible key: output 0, lse -inf
        VecF inv = vset(none ? 0.0f : 1.0f / l);
        for (int64_t d = 0; d < HS; d += kLanes) {
            int n = lanes(d, HS);
            vstore(o + d, vload(a + d, n) * inv, n);
        }
        if (L) L[(t.b * g.NH + h) * g.Tq + i] = none ? -INFINITY : m + std::log(l);
    };
#pragma omp parallel
    {
        // Decode tiles have at most kFewQueries rows and never use the K/V tile copies: a
        // smaller scratch, zeroed once per call of every layer.
        const int64_t rows = decode ? kFewQueries : kBq, tile = decode ? 0 : kBk * HS;
        std::vector<float> qt(rows * HS), kt(tile), ktt(tile), vt(tile), s(rows * kBk),
            acc(rows * HS), mrow(kBq), lrow(kBq);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < items; ++item) {
            const int64_t task = item / splits, split = item % splits;
            const Tile t = tile_of(task);
            const int64_t b = t.b, kh = t.kh, i0 = t.i0, nqi = t.nqi, nq = t.nq;
            for (int64_t r0 = 0; r0 < nq; r0 += nqi)
                load_rows(qt.data() + r0 * HS, Q, b, i0, nqi, head_of(t, r0), HS, g.scale);
            std::fill(acc.begin(), acc.end(), 0.0f);
            std::fill(mrow.begin(), mrow.end(), -INFINITY);
            std::fill(lrow.begin(), lrow.end(), 0.0f);
            int64_t kend = g.last_key(i0 + nqi - 1) + 1;  // keys needed by the last query
            // Key blocks from the one holding the first query's first key (sliding window).
            const int64_t kb0 = std::min(g.first_key(i0), std::max<int64_t>(kend, 0)) / kBk;
            const int64_t nb = (kend + kBk - 1) / kBk - kb0;
            const int64_t jbeg = (kb0 + nb * split / splits) * kBk,
                          jend = std::min(kend, (kb0 + nb * (split + 1) / splits) * kBk);
            const bool few = nq <= kFewQueries;
            for (int64_t j0 = jbeg; j0 < jend; j0 += kBk) {
                int64_t nk = std::min(kBk, jend - j0);
                if (few) {
                    // Decode: a few queries. S by dot products straight from the K rows (no
                    // f32 copy, no transpose, which cost more than the products themselves);
                    // V is read in place below.
                    with_few(nq, HS % kLanes == 0, [&](auto n, auto full) {
                        scores_few<T, decltype(n)::value, decltype(full)::value>(
                            s.data(), qt.data(), K, V, b, j0, nk, kh, HS, jend);
                    });
                } else {
                    load_rows(kt.data(), K, b, j0, nk, kh, HS);
                    transpose_tile(ktt.data(), kt.data(), nk, HS);
                    tile_abt(s.data(), qt.data(), ktt.data(), nq, HS);
                    load_rows(vt.data(), V, b, j0, nk, kh, HS);
                }
                for (int64_t r = 0; r < nq; ++r) {
                    float* sr = s.data() + r * kBk;
                    const int64_t qi = query_of(t, r);
                    int64_t visible = std::min(nk, g.last_key(qi) - j0 + 1);  // may be <= 0
                    int64_t hidden = std::clamp<int64_t>(g.first_key(qi) - j0, 0, kBk);  // window
                    if (visible <= hidden) {  // this query sees none of these keys: P = 0
                        std::fill(sr, sr + kBk, 0.0f);
                        continue;
                    }
                    for (int64_t j = 0; j < hidden; ++j) sr[j] = -INFINITY;
                    for (int64_t j = visible; j < kBk; ++j) sr[j] = -INFINITY;
                    VecF mx =
                        vmax(vmax(vload(sr), vload(sr + 16)), vmax(vload(sr + 32), vload(sr + 48)));
                    float mnew = std::max(mrow[r], vhmax(mx));
                    // exp(0) = 1 exactly: most blocks of a long decode leave the max alone.
                    float corr = mnew == mrow[r] ? 1.0f : std::exp(mrow[r] - mnew);
                    VecF sum = vzero();
                    for (int64_t j = 0; j < kBk; j += kLanes) {
                        VecF p = vexp(vload(sr + j) - vset(mnew));
                        vstore(sr + j, p);
                        sum = sum + p;
                    }
                    lrow[r] = lrow[r] * corr + vsum(sum);
                    mrow[r] = mnew;
                    if (corr != 1.0f) {
                        float* a = acc.data() + r * HS;
                        for (int64_t d = 0; d < HS; d += kLanes) {
                            int m = lanes(d, HS);
                            vstore(a + d, vload(a + d, m) * vset(corr), m);
                        }
                    }
                }
                // acc[r] += P[r][j] * V[j] for all r, j (P = 0 on masked keys).
                if (few) {
                    with_few(nq, HS % kLanes == 0, [&](auto n, auto full) {
                        values_few<T, decltype(n)::value, decltype(full)::value>(
                            acc.data(), s.data(), V, b, j0, nk, kh, HS);
                    });
                } else {
                    rows_axpy(acc.data(), s.data(), kBk, 1, vt.data(), nq, nk, HS);
                }
            }
            if (splits == 1) {
                for (int64_t r = 0; r < nq; ++r)
                    write_row(t, r, acc.data() + r * HS, mrow[r], lrow[r]);
            } else {
                std::copy(mrow.begin(), mrow.begin() + nq, part_m.get() + item * kBq);
                std::copy(lrow.begin(), lrow.begin() + nq, part_l.get() + item * kBq);
                std::copy(acc.begin(), acc.begin() + nq * HS, part_acc.get() + item * kBq * HS);
            }
        }
        if (splits > 1) {
            // Merge each task's partials in split order: rescale to the common max and add (no
            // barrier after: the region ends here).
#pragma omp for schedule(static) nowait
            for (int64_t task = 0; task < tasks; ++task) {
                const Tile t = tile_of(task);
                for (int64_t r = 0; r < t.nq; ++r) {
                    float m = -INFINITY;
                    for (int64_t sp = 0; sp < splits; ++sp)
                        m = std::max(m,
                                     part_m[static_cast<size_t>((task * splits + sp) * kBq + r)]);
                    float l = 0.0f;
                    float* a = acc.data();
                    std::fill(a, a + HS, 0.0f);
                    for (int64_t sp = 0; sp < splits; ++sp) {
                        const size_t it = static_cast<size_t>(task * splits + sp);
                        const float ms = part_m[it * kBq + static_cast<size_t>(r)];
                        if (ms == -INFINITY) continue;  // this range had no visible key
                        const float w = std::exp(ms - m);
                        l += w * part_l[it * kBq + static_cast<size_t>(r)];
                        const float* pa = part_acc.get() + (it * kBq + static_cast<size_t>(r)) * HS;
                        for (int64_t d = 0; d < HS; d += kLanes) {
                            int n = lanes(d, HS);
                            vstore(a + d, vfma(vset(w), vload(pa + d, n), vload(a + d, n)), n);
                        }
                    }
                    write_row(t, r, a, m, l);
                }
            }
        }
    }
}

template <class T, class TG>
void backward_impl(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                   const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                   const Tensor& lse, const Geometry& g) {
    Heads<const T> Q = heads<const T>(q), K = heads<const T>(k), V = heads<const T>(v);
    Heads<const TG> dO = heads<const TG>(dout), O = heads<const TG>(out);
    const int64_t HS = g.HS;
    const float* L = lse.data<float>();
    // D[b, h, i] = sum_d dO * O (the softmax-backward row term).
    // Scratch is allocated as tracked buffers so peak-memory reports include it.
    Tensor Dt = Tensor::empty({g.B * g.NH * g.Tq}, core::DType::f32, core::Device::cpu(),
                              core::MemCategory::buffers);
    float* D = Dt.data<float>();
    for_rows(g.B * g.NH * g.Tq, HS, [&](int64_t idx) {
        int64_t i = idx % g.Tq, h = (idx / g.Tq) % g.NH, b = idx / (g.Tq * g.NH);
        const TG* a = dO.row(b, i, h);
        const TG* o = O.row(b, i, h);
        VecF s = vzero();
        for (int64_t d = 0; d < HS; d += kLanes)
            s = vfma(vload(a + d, lanes(d, HS)), vload(o + d, lanes(d, HS)), s);
        D[idx] = vsum(s);
    });
    // Per query head f32 dK/dV partials [B, NH, Tk, HS], summed over each kv group afterwards.
    const size_t part = static_cast<size_t>(g.Tk * HS);
    Tensor dkt = Tensor::zeros({g.B * g.NH * g.Tk * HS}, core::DType::f32, core::Device::cpu(),
                               core::MemCategory::buffers);
    Tensor dvt = Tensor::zeros({g.B * g.NH * g.Tk * HS}, core::DType::f32, core::Device::cpu(),
                               core::MemCategory::buffers);
    float* dkp = dkt.data<float>();
    float* dvp = dvt.data<float>();
    Heads<T> dQ = heads<T>(dq);
    const int64_t tasks = g.B * g.NH;
#pragma omp parallel
    {
        std::vector<float> qt(kBq * HS), dot(kBq * HS), kt(kBk * HS), ktt(HS * kBk), vt(kBk * HS),
            vtt(HS * kBk), p(kBq * kBk), dp(kBq * kBk), dqa(static_cast<size_t>(g.Tq * HS));
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; ++task) {
            int64_t h = task % g.NH, b = task / g.NH, kh = h / g.group;
            float* dkh = dkp + static_cast<size_t>(task) * part;
            float* dvh = dvp + static_cast<size_t>(task) * part;
            std::fill(dqa.begin(), dqa.end(), 0.0f);
            for (int64_t j0 = 0; j0 < g.Tk; j0 += kBk) {
                int64_t nk = std::min(kBk, g.Tk - j0);
                load_rows(kt.data(), K, b, j0, nk, kh, HS);
                transpose_tile(ktt.data(), kt.data(), nk, HS);
                load_rows(vt.data(), V, b, j0, nk, kh, HS);
                transpose_tile(vtt.data(), vt.data(), nk, HS);
                // First query that sees key j0: i + (Tk - Tq) >= j0; with a window, the last
                // one that sees key j0 + nk - 1: i + (Tk - Tq) - W < j0 + nk - 1.
                int64_t istart = g.causal ? std::max<int64_t>(0, j0 - (g.Tk - g.Tq)) : 0;
                istart = istart / kBq * kBq;
                const int64_t iend =
                    g.window > 0 ? std::min(g.Tq, j0 + nk - 1 - (g.Tk - g.Tq) + g.window) : g.Tq;
                for (int64_t i0 = istart; i0 < iend; i0 += kBq) {
                    int64_t nq = std::min(kBq, g.Tq - i0);
                    load_rows(qt.data(), Q, b, i0, nq, h, HS, g.scale);
                    load_rows(dot.data(), dO, b, i0, nq, h, HS);
                    tile_abt(p.data(), qt.data(), ktt.data(), nq, HS);    // S (scaled)
                    tile_abt(dp.data(), dot.data(), vtt.data(), nq, HS);  // dP = dO V^T
                    for (int64_t r = 0; r < nq; ++r) {
                        int64_t i = i0 + r;
                        float li = L[(b * g.NH + h) * g.Tq + i];
                        float Di = D[(b * g.NH + h) * g.Tq + i];
                        int64_t visible = std::min(nk, g.last_key(i) - j0 + 1);
                        float* pr = p.data() + r * kBk;
                        float* dr = dp.data() + r * kBk;
                        for (int64_t j = 0; j < kBk; j += kLanes) {
                            VecF pv = vexp(vload(pr + j) - vset(li));
                            int vis = static_cast<int>(std::clamp<int64_t>(visible - j, 0, kLanes));
                            pv = vmask_fill(pv, vis, 0.0f);
                            vstore(pr + j, pv);
                            vstore(dr + j, pv * (vload(dr + j) - vset(Di)));  // dS
                        }
                        // Keys before the window's start: P = dS = 0.
                        const int64_t hidden = std::clamp<int64_t>(g.first_key(i) - j0, 0, kBk);
                        std::fill(pr, pr + hidden, 0.0f);
                        std::fill(dr, dr + hidden, 0.0f);
                    }
                    // dV[j] += sum_r P[r][j] dO[r];  dK[j] += sum_r dS[r][j] Q[r] (Q pre-scaled);
                    // dQ[r] += scale * sum_j dS[r][j] K[j].
                    rows_axpy(dvh + j0 * HS, p.data(), 1, kBk, dot.data(), nk, nq, HS);
                    rows_axpy(dkh + j0 * HS, dp.data(), 1, kBk, qt.data(), nk, nq, HS);
                    rows_axpy(dqa.data() + i0 * HS, dp.data(), kBk, 1, kt.data(), nq, nk, HS);
                }
            }
            for (int64_t i = 0; i < g.Tq; ++i) {
                T* d = dQ.row(b, i, h);
                for (int64_t c = 0; c < HS; c += kLanes) {
                    int m = lanes(c, HS);
                    vstore(d + c, vload(dqa.data() + i * HS + c, m) * vset(g.scale), m);
                }
            }
        }
    }
    // Sum the group's partials into dk / dv.
    Heads<T> dK = heads<T>(dk), dV = heads<T>(dv);
    for_rows(g.B * g.NKV * g.Tk, HS * g.group, [&](int64_t idx) {
        int64_t j = idx % g.Tk, kh = (idx / g.Tk) % g.NKV, b = idx / (g.Tk * g.NKV);
        for (int64_t c = 0; c < HS; c += kLanes) {
            int m = lanes(c, HS);
            VecF sk = vzero(), sv = vzero();
            for (int64_t h = kh * g.group; h < (kh + 1) * g.group; ++h) {
                size_t off =
                    static_cast<size_t>(b * g.NH + h) * part + static_cast<size_t>(j * HS + c);
                sk = sk + vload(dkp + off, m);
                sv = sv + vload(dvp + off, m);
            }
            vstore(dK.row(b, j, kh) + c, sk, m);
            vstore(dV.row(b, j, kh) + c, sv, m);
        }
    });
}

}  // namespace

void CpuKernels::attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                   const Tensor& k, const Tensor& v,
                                   const ops::AttentionOptions& opts) {
    Geometry g = geometry(q, k, opts);
    if (k.dtype() != q.dtype()) {  // a bf16 cache under f32 queries (ops/attention.h)
        dispatch_float(out.dtype(), [&](auto to) {
            forward_impl<bf16, decltype(to), float>(out, lse, q, k, v, g);
        });
        return;
    }
    dispatch_float(q.dtype(), [&](auto tq) {
        dispatch_float(out.dtype(), [&](auto to) {
            forward_impl<decltype(tq), decltype(to)>(out, lse, q, k, v, g);
        });
    });
}

void CpuKernels::attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                    const Tensor& dout, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const Tensor& out, const Tensor& lse,
                                    const ops::AttentionOptions& opts) {
    Geometry g = geometry(q, k, opts);
    dispatch_float(q.dtype(), [&](auto tq) {
        dispatch_float(dout.dtype(), [&](auto tg) {
            backward_impl<decltype(tq), decltype(tg)>(dq, dk, dv, dout, q, k, v, out, lse, g);
        });
    });
}

// One task per (batch, head); each row of HS is rescaled and summed with the vector helpers.
void CpuKernels::attention_merge(const Tensor& out, const Tensor& lse, const Tensor& part_out,
                                 const Tensor& part_lse) {
    const int64_t B = out.size(0), Tq = out.size(1), NH = out.size(2), HS = out.size(3);
    float* O = out.data<float>();
    const float* PO = part_out.data<float>();
    float* L = lse.data<float>();
    const float* PL = part_lse.data<float>();
    const int64_t ob = out.stride(0), ot = out.stride(1), oh = out.stride(2);
    const int64_t pb = part_out.stride(0), pt = part_out.stride(1), ph = part_out.stride(2);
    for_rows(B * NH, Tq * HS, [&](int64_t bh) {
        const int64_t b = bh / NH, h = bh % NH;
        for (int64_t t = 0; t < Tq; ++t) {
            const int64_t li = (b * NH + h) * Tq + t;
            const float l1 = L[li], l2 = PL[li];
            if (l2 == -INFINITY) continue;
            const float m = std::max(l1, l2);
            const float e1 = l1 == -INFINITY ? 0.0f : std::exp(l1 - m), e2 = std::exp(l2 - m);
            const float inv = 1.0f / (e1 + e2);
            const VecF w1 = vset(e1 * inv), w2 = vset(e2 * inv);
            float* o = O + b * ob + t * ot + h * oh;
            const float* p = PO + b * pb + t * pt + h * ph;
            for_pairs(0, HS, [&](int64_t c, int n) {
                VecF a0, a1, p0, p1;
                vload2(o + c, a0, a1, n);
                vload2(p + c, p0, p1, n);
                vstore2(o + c, w1 * a0 + w2 * p0, w1 * a1 + w2 * p1, n);
            });
            L[li] = m + std::log(e1 + e2);
        }
    });
}

}  // namespace zs::backends::cpu
