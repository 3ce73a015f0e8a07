// Paged attention on the CPU (ops/paged_attention.h), beside the dense flash kernel
// (attention.cpp) and built from the same vec.h pieces.
//
// One task per (slice, kv heads, tile of queries). A task's rows are (query, query head) pairs:
// all the kv group's query heads for up to kMaxRows / G queries, so each K and V row fetched
// through the block table (converted in registers from bf16 or f16) serves all of them (GQA); a
// decode slice's task takes several kv heads (one pass per head over each tile). Keys
// are walked in tiles of kBk at absolute positions (multiples of kBk); per tile the task gathers
// row pointers through the block table, computes scores as dot products straight from the cached
// rows (four keys at a time sharing one horizontal-sum tree), updates each row's running max m,
// normaliser l and f32 accumulator (online softmax, vexp), and adds P V from the cached V rows.
//
// Every row's arithmetic depends only on its query, its position and the cached values: the tile
// boundaries are absolute, the score and value loops treat each row alike whatever else shares
// the task, and no key range is split across threads. So outputs are bit-identical for any batch
// composition, chunking and thread count (ops/paged_attention.h's contract).
#include <algorithm>
#include <cmath>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>
#endif

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/parallel.h"
#include "core/half.h"

namespace zs::backends::cpu {

namespace {

using ops::BlockId;
using ops::SeqSlice;

constexpr int64_t kMaxRows = 32;  // (query, head) rows per task
constexpr int64_t kBk = 64;       // keys per tile (a multiple of 4 and of kLanes)
constexpr int kRowGroup = 4;      // rows sharing each K/V row load in registers
// Keys per segment (a multiple of kBk): see paged_forward_impl.
constexpr int64_t kSegmentKeys = 64;
// The most floats of segment partials a forward keeps (beyond it, tasks fold their own segments).
constexpr int64_t kMaxPartialFloats = int64_t{4} << 20;
// Below this many multiply-adds (query-key pairs x HS, twice) a forward runs on one thread: a
// decode step of a small batch costs less than the fork/join.
constexpr int64_t kParallelMinWork = int64_t{1} << 16;

// A task's rows are ordered (kv head, query, query head): row r is kv head kv_head + r / (nq * nh),
// query r % (nq * nh) / nh, query head h0 + r % nh of that kv head's group.
struct Task {
    int64_t seq;          // slice index
    int64_t kv_head, ng;  // kv heads [kv_head, kv_head + ng)
    int64_t h0, nh;       // query heads [h0, h0 + nh) of each kv head's group
    int64_t q0, nq;       // queries [q0, q0 + nq) of the slice
    int64_t rows() const { return ng * nq * nh; }
};

// S[r * kBk + j] = Q[r] . K[j] for NQ rows and keys j < nk (nk a multiple of 4). Each K row is
// loaded once for the NQ rows; four keys' accumulators are summed by one vsum4 tree. A score's
// arithmetic is the same for any NQ and any other rows.
// values_rows over dims [d0, d0 + NV kLanes) of keys [jlo, jhi), all vectors full: the
// accumulators stay in registers.
template <int NQ, int NV, class TC>
void values_span(float* Acc, const float* P, const TC* const* V, int64_t jlo, int64_t jhi,
                 int64_t HS, int64_t d0) {
    VecF acc[NQ][NV];
#pragma GCC unroll 4
    for (int r = 0; r < NQ; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = vload(Acc + r * HS + d0 + v * kLanes);
    }
    for (int64_t j = jlo; j < jhi; ++j) {
        const TC* vr = V[j] + d0;
        VecF vv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) vv[v] = vload(vr + v * kLanes);
#pragma GCC unroll 4
        for (int r = 0; r < NQ; ++r) {
            const VecF pv = vset(P[r * kBk + j]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[r][v] = vfma(pv, vv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < NQ; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) vstore(Acc + r * HS + d0 + v * kLanes, acc[r][v]);
    }
}

// K rows are prefetched (vec.h prefetch_row) this many keys ahead and V rows while the scores of
// their keys are computed, since a head's rows are one run per block (block_size * HS values),
// the runs in block-table order, and the hardware prefetchers restart at each.
constexpr int64_t kPrefetchKeys = 16;

// S[r * kBk + j] = Q[r] . K[j] for NQ rows and j < nk (a multiple of 4), four keys at a time
// sharing one horizontal-sum tree. kFull: HS a multiple of kLanes (no masked tail), so that with
// NQ the accumulators' count is known at compile time and they stay in registers.
template <int NQ, bool kFull, class TC>
ZS_NOINLINE void scores_rows(float* S, const float* Q, const TC* const* K, const TC* const* V,
                             int64_t nk, int64_t HS) {
    for (int64_t j = 0; j < nk; j += 4) {
#pragma GCC unroll 4
        for (int kk = 0; kk < 4; ++kk) {
            if (j + kk + kPrefetchKeys < nk) prefetch_row(K[j + kk + kPrefetchKeys], HS);
            prefetch_row(V[j + kk], HS);
        }
        dot4_keys<NQ, kFull>(S + j, kBk, Q, K + j, HS);
    }
}

// Acc[r] += sum_j P[r * kBk + j] * V[j] for NQ rows, j < nk: each V row is loaded (and widened)
// once for the NQ rows, with their accumulators for 64 dims in registers. Keys no row sees are
// skipped (P = 0 for all of them, so the sum is the same); they are a head and a tail of the
// tile (window, causal mask), so the loop runs over the range between without a test per key.
template <int NQ, bool kFull, class TC>
ZS_NOINLINE void values_rows(float* Acc, const float* P, const TC* const* V, int64_t nk,
                             int64_t HS) {
    constexpr int kVecs = vecs_beside(NQ);  // 64 dims, fewer on AVX2
    auto seen = [&](int64_t j) {
        bool any = false;
        for (int r = 0; r < NQ; ++r) any = any || P[r * kBk + j] != 0.0f;
        return any;
    };
    int64_t jlo = 0, jhi = nk;
    while (jlo < jhi && !seen(jlo)) ++jlo;
    while (jhi > jlo && !seen(jhi - 1)) --jhi;
#ifdef ZS_VEC_AVX2
    if constexpr (kFull) {  // the same FMAs per lane, blocked for AVX2's 16 registers
        pv_rows_avx2<NQ>(Acc, HS, P, kBk, V, jlo, jhi);
        return;
    }
#endif
    for (int64_t d0 = 0; d0 < HS; d0 += kVecs * kLanes) {
        if (kFull && HS - d0 >= kVecs * kLanes) {
            values_span<NQ, kVecs>(Acc, P, V, jlo, jhi, HS, d0);
            continue;
        }
        const int nv = static_cast<int>(std::min<int64_t>(kVecs, (HS - d0 + kLanes - 1) / kLanes));
        VecF acc[NQ][kVecs];
        for (int r = 0; r < NQ; ++r) {
            for (int v = 0; v < nv; ++v)
                acc[r][v] = vload(Acc + r * HS + d0 + v * kLanes, lanes(d0 + v * kLanes, HS));
        }
        for (int64_t j = jlo; j < jhi; ++j) {
            const TC* vr = V[j] + d0;
            VecF vv[kVecs];
            for (int v = 0; v < nv; ++v) vv[v] = vload(vr + v * kLanes, lanes(d0 + v * kLanes, HS));
            for (int r = 0; r < NQ; ++r) {
                const VecF pv = vset(P[r * kBk + j]);
                for (int v = 0; v < nv; ++v) acc[r][v] = vfma(pv, vv[v], acc[r][v]);
            }
        }
        for (int r = 0; r < NQ; ++r) {
            for (int v = 0; v < nv; ++v)
                vstore(Acc + r * HS + d0 + v * kLanes, acc[r][v], lanes(d0 + v * kLanes, HS));
        }
    }
}

// Calls f(std::integral_constant<int, n>) for n in 1..kRowGroup.
template <class F>
void dispatch_rows(int64_t n, F&& f) {
    switch (n) {
        case 1:
            f(std::integral_constant<int, 1>{});
            return;
        case 2:
            f(std::integral_constant<int, 2>{});
            return;
        case 3:
            f(std::integral_constant<int, 3>{});
            return;
        default:
            f(std::integral_constant<int, 4>{});
            return;
    }
}

// dst[0, HS) = src row (f32 or bf16, per dtype) * scale.
void load_row(float* dst, const void* src, core::DType dtype, int64_t HS, float scale) {
    dispatch_float(dtype, [&](auto t) {
        const auto* s = static_cast<const decltype(t)*>(src);
        for (int64_t d = 0; d < HS; d += kLanes)
            vstore(dst + d, vload(s + d, lanes(d, HS)) * vset(scale), lanes(d, HS));
    });
}

void store_row(void* dst, core::DType dtype, const float* src, int64_t HS, float mul) {
    dispatch_float(dtype, [&](auto t) {
        auto* o = static_cast<decltype(t)*>(dst);
        for (int64_t d = 0; d < HS; d += kLanes)
            vstore(o + d, vload(src + d, lanes(d, HS)) * vset(mul), lanes(d, HS));
    });
}

// One head's row of a quantized cache (HS values, one f16 scale per kKvQuantGroup) -> f32:
// int8 is a convert and a multiply; E4M3 is rebuilt bit by bit as an f32 (normal codes shift the
// exponent and mantissa into place, subnormal ones are m * 2^-9), the sign or'ed in. With AVX2
// eight values at a time and the scale by F16C (in cache on Zen 3 the compiler's loops and the
// scalar f16 conversion decoded an int8 cache at 2.6 GB/s, fp8 at 1.6, against a bf16 cache's
// 11.7 read directly); otherwise a loop the compiler vectorises (branch-free: written with
// conditionals, GCC kept the E4M3 loop scalar).
void dequant_row(float* dst, const int8_t* src, const core::f16* scale, ops::KvQuant quant,
                 int64_t HS) {
    constexpr int64_t G = ops::kKvQuantGroup;
    static_assert(G % 8 == 0);
    for (int64_t g = 0; g < HS / G; ++g) {
        const int8_t* s = src + g * G;
        float* o = dst + g * G;
#if defined(__AVX2__) && defined(__F16C__)
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(scale[g].bits));
        for (int64_t i = 0; i < G; i += 8) {
            const __m128i b8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i));
            __m256 v;
            if (quant == ops::KvQuant::int8) {
                v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b8));
            } else {
                const __m256i b = _mm256_cvtepu8_epi32(b8);
                const __m256i mag = _mm256_and_si256(b, _mm256_set1_epi32(0x7f));
                const __m256i normal =
                    _mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23));
                const __m256 sub =
                    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(mag, _mm256_set1_epi32(7))),
                                  _mm256_set1_ps(1.0f / 512.0f));
                const __m256 is_normal =
                    _mm256_castsi256_ps(_mm256_cmpgt_epi32(mag, _mm256_set1_epi32(7)));
                const __m256i sign =
                    _mm256_slli_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x80)), 24);
                v = _mm256_or_ps(_mm256_blendv_ps(sub, _mm256_castsi256_ps(normal), is_normal),
                                 _mm256_castsi256_ps(sign));
            }
            _mm256_storeu_ps(o + i, _mm256_mul_ps(d, v));
        }
#else
        const float d = core::f16_to_f32(scale[g]);
        if (quant == ops::KvQuant::int8) {
            for (int64_t i = 0; i < G; ++i) o[i] = d * static_cast<float>(s[i]);
        } else {
            for (int64_t i = 0; i < G; ++i) {
                const auto b = static_cast<uint32_t>(static_cast<uint8_t>(s[i]));
                const uint32_t mag = b & 0x7fu;
                const uint32_t normal = (mag << 20) + (120u << 23);
                const uint32_t sub = core::f32_bits(static_cast<float>(mag & 7u) * (1.0f / 512.0f));
                const uint32_t is_normal = 0u - ((mag + 120u) >> 7);  // all ones iff mag >= 8
                const uint32_t bits = (normal & is_normal) | (sub & ~is_normal) | (b & 0x80u) << 24;
                o[i] = d * core::f32_from_bits(bits);
            }
        }
#endif
    }
}

// The quantized cache a task reads (null for a float cache).
struct QuantView {
    ops::KvQuant quant;
    const int8_t *k, *v;
    const core::f16 *ks, *vs;
};

template <class TC>
void paged_forward_impl(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                        const Tensor& v_cache, std::span<const SeqSlice> seqs,
                        const ops::AttentionOptions& opts, const QuantView* qv = nullptr) {
    const int64_t NKV = k_cache.size(1), bs = k_cache.size(2), HS = k_cache.size(3);
    const int64_t NH = q.size(1), G = NH / NKV;
    const float scale = opts.scale != 0.0f ? opts.scale : 1.0f / std::sqrt(static_cast<float>(HS));
    const int64_t W = opts.window;
    // Rows per task: every head of the group for as many queries as fit (a group wider than
    // kMaxRows is cut into head ranges), and as many kv heads as the rows leave room for: a decode
    // batch is one task per kv heads' worth of rows. When there are few tasks for the threads,
    // their key segments become the work items, and then each kv head is a task of its own, so
    // the items are finer and the threads end together (SmolLM2's 3 kv heads at 300 keys: 15
    // items rather than 5, which two threads split 3 : 2).
    const int64_t heads = std::min(G, kMaxRows), queries = kMaxRows / heads;
    const int64_t threads = omp_get_max_threads();
    std::vector<Task> tasks;
    int64_t work = 0;  // multiply-adds: query-key pairs x HS, twice
    for (const SeqSlice& sl : seqs)
        work += sl.n_tokens * (sl.pos + (sl.n_tokens + 1) / 2) * NH * HS * 2;
    int64_t max_ng = 1, max_rows = 1;
    auto make_tasks = [&](bool group_kv) {
        tasks.clear();
        max_ng = 1;
        max_rows = 1;
        for (size_t s = 0; s < seqs.size(); ++s) {
            const int64_t n = seqs[s].n_tokens;
            const int64_t ng =
                group_kv && heads == G
                    ? std::clamp<int64_t>(kMaxRows / (std::min(queries, n) * G), 1, NKV)
                    : 1;
            max_ng = std::max(max_ng, ng);
            for (int64_t g = 0; g < NKV; g += ng) {
                for (int64_t h0 = 0; h0 < G; h0 += heads) {
                    for (int64_t q0 = 0; q0 < n; q0 += queries) {
                        tasks.push_back({static_cast<int64_t>(s), g, std::min(ng, NKV - g), h0,
                                         std::min(heads, G - h0), q0, std::min(queries, n - q0)});
                        const Task& t = tasks.back();
                        max_rows = std::max(max_rows, t.rows());
                    }
                }
            }
        }
    };
    make_tasks(true);
    const bool few = threads > 1 && static_cast<int64_t>(tasks.size()) < 4 * threads;
    if (few && max_ng > 1) make_tasks(false);
    // A quantized cache: the tile's keys and values are dequantized into the task's scratch.
    const auto* kc = qv ? nullptr : static_cast<const TC*>(k_cache.data_ptr());
    const auto* vc = qv ? nullptr : static_cast<const TC*>(v_cache.data_ptr());
    const auto* qp = static_cast<const char*>(q.data_ptr());
    auto* op = static_cast<char*>(out.data_ptr());
    const size_t qe = q.element_size(), oe = out.element_size();
    const auto n_tasks = static_cast<int64_t>(tasks.size());

    // Keys come in segments of kSegmentKeys at absolute positions, each with its own running max,
    // normaliser and accumulator, folded in order into the task's (fold_segment): a long decode
    // row is then several work items, so a few kv heads still keep every thread busy. The split
    // depends only on the keys' positions, so results do not depend on the schedule below.
    // The task's first key (its first query's window start) and the last (its last query's own
    // position).
    auto key_range = [&](const Task& task) {
        const int64_t p0 = seqs[static_cast<size_t>(task.seq)].pos + task.q0;
        return std::pair{W > 0 ? std::max<int64_t>(0, p0 - W + 1) : 0, p0 + task.nq - 1};
    };
    auto segments_of = [&](const Task& task) {
        const auto [first_key, last_key] = key_range(task);
        return std::pair{first_key / kSegmentKeys, last_key / kSegmentKeys + 1};  // [s0, s1)
    };
    // Row r of a task: its row in q / out and its query head.
    auto row_head = [&](const Task& task, int64_t r) {
        const int64_t per = task.nq * task.nh, w = r % per;
        return std::pair{seqs[static_cast<size_t>(task.seq)].start + task.q0 + w / task.nh,
                         (task.kv_head + r / per) * G + task.h0 + w % task.nh};
    };
    // Work items: whole tasks (their segments folded as they are computed), or, when there are
    // few tasks for the threads, runs of a task's consecutive segments, each segment's partial
    // result kept apart and all of them folded in order after (so the sums do not depend on how
    // the runs are cut). A task's segments are cut into ceil(2 threads / tasks) runs, as the dense
    // kernel cuts its key range: items long enough to stream, about two per thread.
    struct Item {
        int64_t task, seg0, seg1;  // segments [seg0, seg1); seg0 -1: every segment of the task
    };
    std::vector<Item> items;
    bool split = false;
    if (few) {
        int64_t n = 0, rows = 0;  // segments, and their rows
        for (const Task& t : tasks) {
            const auto [s0, s1] = segments_of(t);
            n += s1 - s0;
            rows += (s1 - s0) * t.rows();
        }
        split = n > n_tasks && rows * HS <= kMaxPartialFloats;
    }
    // Split: task t's segment s0 + k keeps its partial at rows part_row0[t] + k * (its rows).
    std::vector<int64_t> part_row0(static_cast<size_t>(n_tasks), 0);
    int64_t part_rows = 0;
    const int64_t runs = (2 * threads + n_tasks - 1) / n_tasks;
    for (int64_t t = 0; t < n_tasks; ++t) {
        if (!split) {
            items.push_back({t, -1, -1});
            continue;
        }
        const Task& task = tasks[static_cast<size_t>(t)];
        const auto [s0, s1] = segments_of(task);
        const int64_t ns = s1 - s0, c = std::min(ns, runs);
        for (int64_t k = 0; k < c; ++k)
            items.push_back({t, s0 + ns * k / c, s0 + ns * (k + 1) / c});
        part_row0[static_cast<size_t>(t)] = part_rows;
        part_rows += ns * task.rows();
    }
    const auto n_items = static_cast<int64_t>(items.size());
    // Partial results of the split segments: max and normaliser [part_rows], accumulator
    // [part_rows][HS]. Every segment writes all of its rows before the fold reads them, so they
    // are not zeroed (a decode layer's would be tens of KB).
    std::unique_ptr<float[]> part_m, part_l, part_acc;
    if (split) {
        part_m.reset(new float[static_cast<size_t>(part_rows)]);
        part_l.reset(new float[static_cast<size_t>(part_rows)]);
        part_acc.reset(new float[static_cast<size_t>(part_rows * HS)]);
    }
    // Every query sees at least its own key, so l > 0.
    auto store = [&](const Task& task, const float* acc, const float* l) {
        for (int64_t r = 0; r < task.rows(); ++r) {
            const auto [row, h] = row_head(task, r);
            store_row(op + static_cast<size_t>(row * out.stride(0) + h * out.stride(1)) * oe,
                      out.dtype(), acc + r * HS, HS, 1.0f / l[r]);
        }
    };

#pragma omp parallel if (n_items > 1 && work >= kParallelMinWork)
    {
        // Scratch for the most rows a task has (value-initialised per call and thread: sized by
        // kMaxRows, a one-sequence decode zeroed 40 KB per layer and thread for its 3 rows).
        const auto mr = static_cast<size_t>(max_rows);
        std::vector<float> qf(mr * static_cast<size_t>(HS)), acc(qf.size()), acc2(qf.size());
        std::vector<float> s(mr * static_cast<size_t>(kBk)), m(mr), l(mr), m2(mr), l2(mr);
        // Row pointers of the tile's keys, kBk per kv head of the task.
        std::vector<const TC*> krow(static_cast<size_t>(kBk * max_ng)), vrow(krow.size());
        std::vector<TC> kdq(qv ? static_cast<size_t>(kBk * max_ng * HS) : 0), vdq(kdq.size());
        const std::vector<TC> zero_row(static_cast<size_t>(HS));  // padding keys: never seen
        // The task's queries for the group's heads, pre-scaled, into qf.
        auto load_queries = [&](const Task& task) {
            for (int64_t r = 0; r < task.rows(); ++r) {
                const auto [row, h] = row_head(task, r);
                load_row(qf.data() + r * HS,
                         qp + static_cast<size_t>(row * q.stride(0) + h * q.stride(1)) * qe,
                         q.dtype(), HS, scale);
            }
        };
        // Segment sg of the task (its queries in qf): mo, lo, ao from scratch (max, normaliser,
        // accumulator of each row over the segment's keys; -inf, 0, 0 where it sees none).
        auto segment = [&](const Task& task, int64_t sg, float* mo, float* lo, float* ao) {
            const SeqSlice& sl = seqs[static_cast<size_t>(task.seq)];
            const int64_t per = task.nq * task.nh, rows = task.ng * per;
            auto pos_of = [&](int64_t r) { return sl.pos + task.q0 + r % per / task.nh; };
            std::fill(mo, mo + rows, -INFINITY);
            std::fill(lo, lo + rows, 0.0f);
            std::fill(ao, ao + rows * HS, 0.0f);
            // The task's keys within the segment.
            const auto [first_key, task_last] = key_range(task);
            const int64_t last_key = std::min(task_last, (sg + 1) * kSegmentKeys - 1);
            for (int64_t j0 = std::max(first_key / kBk * kBk, sg * kSegmentKeys); j0 <= last_key;
                 j0 += kBk) {
                const int64_t nk = std::min(kBk, last_key + 1 - j0), nk4 = (nk + 3) / 4 * 4;
                // Row pointers through the block table; keys before first_key (their block may
                // be freed) and the padding to a multiple of 4 read a zero row. One block's keys
                // are a run of rows HS apart: the table is read and the offset computed once per
                // block and kv head (per key, with the stores to the pointer arrays, the gather
                // cost a fifth of a decode's attention in cache on Zen 3).
                const int64_t jfirst = std::clamp<int64_t>(first_key - j0, 0, nk);
                for (int64_t gi = 0; gi < task.ng; ++gi) {
                    const TC** kr = krow.data() + gi * kBk;
                    const TC** vr = vrow.data() + gi * kBk;
                    for (int64_t j = 0; j < jfirst; ++j) kr[j] = vr[j] = zero_row.data();
                    for (int64_t j = nk; j < nk4; ++j) kr[j] = vr[j] = zero_row.data();
                }
                int64_t blk = (j0 + jfirst) / bs, slot = (j0 + jfirst) % bs;
                for (int64_t j = jfirst; j < nk; ++blk, slot = 0) {
                    const int64_t run = std::min(bs - slot, nk - j);
                    const int64_t b = sl.blocks[static_cast<size_t>(blk)];
                    for (int64_t gi = 0; gi < task.ng; ++gi) {
                        const int64_t off = ((b * NKV + task.kv_head + gi) * bs + slot) * HS;
                        const TC** kr = krow.data() + gi * kBk + j;
                        const TC** vr = vrow.data() + gi * kBk + j;
                        if constexpr (std::is_same_v<TC, float>) {
                            if (qv) {
                                float* kd = kdq.data() + (gi * kBk + j) * HS;
                                float* vd = vdq.data() + (gi * kBk + j) * HS;
                                for (int64_t i = 0; i < run; ++i) {
                                    const int64_t o = off + i * HS, so = o / ops::kKvQuantGroup;
                                    dequant_row(kd + i * HS, qv->k + o, qv->ks + so, qv->quant, HS);
                                    dequant_row(vd + i * HS, qv->v + o, qv->vs + so, qv->quant, HS);
                                    kr[i] = kd + i * HS;
                                    vr[i] = vd + i * HS;
                                }
                                continue;
                            }
                        }
                        const TC* k = kc + off;
                        const TC* v = vc + off;
                        for (int64_t i = 0; i < run; ++i) {
                            kr[i] = k + i * HS;
                            vr[i] = v + i * HS;
                        }
                    }
                    j += run;
                }
                // Each kv head's rows in groups of kRowGroup (a group never spans two kv heads:
                // they read different keys).
                auto head_groups = [&](auto&& f) {
                    for (int64_t gi = 0; gi < task.ng; ++gi) {
                        for (int64_t r0 = gi * per; r0 < (gi + 1) * per; r0 += kRowGroup) {
                            dispatch_rows((gi + 1) * per - r0, [&](auto n) { f(n, gi, r0); });
                        }
                    }
                };
                head_groups([&](auto n, int64_t gi, int64_t r0) {
                    const TC* const* kr = krow.data() + gi * kBk;
                    const TC* const* vr = vrow.data() + gi * kBk;
                    if (HS % kLanes == 0) {
                        scores_rows<decltype(n)::value, true>(s.data() + r0 * kBk,
                                                              qf.data() + r0 * HS, kr, vr, nk4, HS);
                    } else {
                        scores_rows<decltype(n)::value, false>(
                            s.data() + r0 * kBk, qf.data() + r0 * HS, kr, vr, nk4, HS);
                    }
                });
                for (int64_t r = 0; r < rows; ++r) {
                    float* sr = s.data() + r * kBk;
                    const int64_t p = pos_of(r);
                    const int64_t visible = std::min(nk, p - j0 + 1);  // causal; may be <= 0
                    const int64_t hidden =                             // window
                        W > 0 ? std::clamp<int64_t>(p - W + 1 - j0, 0, kBk) : 0;
                    if (visible <= hidden) {  // this query sees none of these keys: P = 0
                        std::fill(sr, sr + kBk, 0.0f);
                        continue;
                    }
                    std::fill(sr, sr + hidden, -INFINITY);
                    std::fill(sr + visible, sr + kBk, -INFINITY);
                    const VecF mx =
                        vmax(vmax(vload(sr), vload(sr + 16)), vmax(vload(sr + 32), vload(sr + 48)));
                    const float mnew = std::max(mo[r], vhmax(mx));
                    // 0 at first; exp(0) = 1 exactly, so no call while the max holds.
                    const float mold = mo[r];
                    const float corr = mold == mnew ? 1.0f : std::exp(mold - mnew);
                    VecF sum = vzero();
                    for (int64_t j = 0; j < kBk; j += kLanes) {
                        const VecF pj = vexp(vload(sr + j) - vset(mnew));
                        vstore(sr + j, pj);
                        sum = sum + pj;
                    }
                    lo[r] = lo[r] * corr + vsum(sum);
                    mo[r] = mnew;
                    if (corr != 1.0f) {
                        float* a = ao + r * HS;
                        for (int64_t d = 0; d < HS; d += kLanes)
                            vstore(a + d, vload(a + d, lanes(d, HS)) * vset(corr), lanes(d, HS));
                    }
                }
                head_groups([&](auto n, int64_t gi, int64_t r0) {
                    const TC* const* vr = vrow.data() + gi * kBk;
                    if (HS % kLanes == 0) {
                        values_rows<decltype(n)::value, true>(ao + r0 * HS, s.data() + r0 * kBk, vr,
                                                              nk, HS);
                    } else {
                        values_rows<decltype(n)::value, false>(ao + r0 * HS, s.data() + r0 * kBk,
                                                               vr, nk, HS);
                    }
                });
            }
        };
        // Folds a segment's (mo, lo, ao) into the running (m, l, acc) of the task's rows, in
        // segment order: both rescaled to the larger max (one factor is exp(0) = 1 exactly).
        auto fold_segment = [&](int64_t rows, const float* mo, const float* lo, const float* ao) {
            for (int64_t r = 0; r < rows; ++r) {
                const auto ri = static_cast<size_t>(r);
                if (mo[r] == -INFINITY) continue;  // no key of this segment for this row
                float* a = acc.data() + r * HS;
                const float* b = ao + r * HS;
                const float mn = std::max(m[ri], mo[r]);
                const float ca = m[ri] == -INFINITY ? 0.0f : std::exp(m[ri] - mn);
                const float cb = std::exp(mo[r] - mn);
                l[ri] = l[ri] * ca + lo[r] * cb;
                m[ri] = mn;
                for (int64_t d = 0; d < HS; d += kLanes) {
                    const int n = lanes(d, HS);
                    vstore(a + d, vfma(vload(b + d, n), vset(cb), vload(a + d, n) * vset(ca)), n);
                }
            }
        };
#pragma omp for schedule(dynamic)
        for (int64_t it = 0; it < n_items; ++it) {
            const Item& item = items[static_cast<size_t>(it)];
            const Task& task = tasks[static_cast<size_t>(item.task)];
            load_queries(task);
            const int64_t rows = task.rows();
            if (item.seg0 >= 0) {  // these segments' partials, folded after the loop
                const int64_t s0 = segments_of(task).first;
                for (int64_t sg = item.seg0; sg < item.seg1; ++sg) {
                    const auto o = static_cast<size_t>(part_row0[static_cast<size_t>(item.task)] +
                                                       (sg - s0) * rows);
                    segment(task, sg, part_m.get() + o, part_l.get() + o,
                            part_acc.get() + o * static_cast<size_t>(HS));
                }
                continue;
            }
            const auto [s0, s1] = segments_of(task);
            segment(task, s0, m.data(), l.data(), acc.data());
            for (int64_t sg = s0 + 1; sg < s1; ++sg) {
                segment(task, sg, m2.data(), l2.data(), acc2.data());
                fold_segment(rows, m2.data(), l2.data(), acc2.data());
            }
            store(task, acc.data(), l.data());
        }
        if (split) {
#pragma omp for schedule(static)
            for (int64_t t = 0; t < n_tasks; ++t) {
                const Task& task = tasks[static_cast<size_t>(t)];
                const int64_t rows = task.rows();
                const auto [s0, s1] = segments_of(task);
                const auto o = static_cast<size_t>(part_row0[static_cast<size_t>(t)]);
                std::copy_n(part_m.get() + o, rows, m.data());
                std::copy_n(part_l.get() + o, rows, l.data());
                std::copy_n(part_acc.get() + o * static_cast<size_t>(HS), rows * HS, acc.data());
                for (int64_t k = 1; k < s1 - s0; ++k) {
                    const auto oi = o + static_cast<size_t>(k * rows);
                    fold_segment(rows, part_m.get() + oi, part_l.get() + oi,
                                 part_acc.get() + oi * static_cast<size_t>(HS));
                }
                store(task, acc.data(), l.data());
            }
        }
    }
}

}  // namespace

void CpuKernels::paged_kv_write(const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                                const Tensor& v, std::span<const SeqSlice> seqs) {
    const int64_t NKV = k_cache.size(1), bs = k_cache.size(2), HS = k_cache.size(3);
    const core::DType ct = k_cache.dtype();
    const size_t ce = core::dtype_size(ct), ke = k.element_size(), ve = v.element_size();
    auto* kc = static_cast<char*>(k_cache.data_ptr());
    auto* vc = static_cast<char*>(v_cache.data_ptr());
    const auto* kp = static_cast<const char*>(k.data_ptr());
    const auto* vp = static_cast<const char*>(v.data_ptr());
    for (const SeqSlice& s : seqs) {
        for (int64_t i = 0; i < s.n_tokens; ++i) {
            const int64_t pos = s.pos + i, row = s.start + i;
            const int64_t blk = s.blocks[static_cast<size_t>(pos / bs)];
            for (int64_t h = 0; h < NKV; ++h) {
                const auto dst = static_cast<size_t>(((blk * NKV + h) * bs + pos % bs) * HS);
                core::convert(kc + dst * ce, ct,
                              kp + static_cast<size_t>(row * k.stride(0) + h * k.stride(1)) * ke,
                              k.dtype(), static_cast<size_t>(HS));
                core::convert(vc + dst * ce, ct,
                              vp + static_cast<size_t>(row * v.stride(0) + h * v.stride(1)) * ve,
                              v.dtype(), static_cast<size_t>(HS));
            }
        }
    }
}

void CpuKernels::paged_attention_forward(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                                         const Tensor& v_cache, std::span<const SeqSlice> seqs,
                                         const ops::AttentionOptions& opts) {
    if (k_cache.dtype() == core::DType::f16) {
        paged_forward_impl<core::f16>(out, q, k_cache, v_cache, seqs, opts);
        return;
    }
    dispatch_float(k_cache.dtype(), [&](auto tc) {
        paged_forward_impl<decltype(tc)>(out, q, k_cache, v_cache, seqs, opts);
    });
}

void CpuKernels::paged_kv_write_quant(const ops::PagedKvCache& cache, const Tensor& k,
                                      const Tensor& v, std::span<const SeqSlice> seqs) {
    const int64_t NKV = cache.k.size(1), bs = cache.k.size(2), HS = cache.k.size(3);
    constexpr int64_t G = ops::kKvQuantGroup;
    auto* kc = static_cast<int8_t*>(cache.k.data_ptr());
    auto* vc = static_cast<int8_t*>(cache.v.data_ptr());
    auto* ks = static_cast<core::f16*>(cache.k_scale.data_ptr());
    auto* vs = static_cast<core::f16*>(cache.v_scale.data_ptr());
    std::vector<float> row(static_cast<size_t>(HS));
    for (const SeqSlice& s : seqs) {
        for (int64_t i = 0; i < s.n_tokens; ++i) {
            const int64_t pos = s.pos + i, r = s.start + i;
            const int64_t blk = s.blocks[static_cast<size_t>(pos / bs)];
            for (int64_t h = 0; h < NKV; ++h) {
                const int64_t dst = ((blk * NKV + h) * bs + pos % bs) * HS;
                for (auto [src, data, scale] : {std::tuple{&k, kc, ks}, std::tuple{&v, vc, vs}}) {
                    load_row(row.data(),
                             static_cast<const char*>(src->data_ptr()) +
                                 static_cast<size_t>(r * src->stride(0) + h * src->stride(1)) *
                                     src->element_size(),
                             src->dtype(), HS, 1.0f);
                    for (int64_t g = 0; g < HS / G; ++g) {
                        ops::kv_quantize_group(cache.quant, row.data() + g * G, data + dst + g * G,
                                               scale + dst / G + g);
                    }
                }
            }
        }
    }
}

void CpuKernels::paged_attention_forward_quant(const Tensor& out, const Tensor& q,
                                               const ops::PagedKvCache& cache,
                                               std::span<const SeqSlice> seqs,
                                               const ops::AttentionOptions& opts) {
    const QuantView qv{cache.quant, static_cast<const int8_t*>(cache.k.data_ptr()),
                       static_cast<const int8_t*>(cache.v.data_ptr()),
                       static_cast<const core::f16*>(cache.k_scale.data_ptr()),
                       static_cast<const core::f16*>(cache.v_scale.data_ptr())};
    paged_forward_impl<float>(out, q, cache.k, cache.v, seqs, opts, &qv);
}

}  // namespace zs::backends::cpu
