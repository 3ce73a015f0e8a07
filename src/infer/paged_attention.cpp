// Paged attention on the CPU. One task per (sequence, kv head, tile of up to kQTile queries):
// it loads the tile's queries for every query head of the kv group (GQA: the group shares each
// K/V load), then walks the sequence's keys in tiles of whole blocks (about kKeyTile keys),
// gathering them through the block table as f32 (K transposed, so a row's scores for the tile are
// one vectorised loop over keys) and updating a running max m, normaliser l and output
// accumulator per query (online softmax). Each query's arithmetic depends only on its position
// and the cached values, never on how the batch was split into tiles, chunks or sequences, so
// outputs are the same for any batch composition and thread count.
#include "infer/paged_attention.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "base/error.h"
#include "core/half.h"

namespace zs::infer {

namespace {

constexpr int64_t kQTile = 16;    // queries per task
constexpr int64_t kKeyTile = 64;  // keys per online-softmax step (rounded to whole blocks)
// Below this many multiply-adds (query-key pairs x HS, twice) a forward runs on one thread: a
// decode step of a small batch costs less than the fork/join.
constexpr int64_t kParallelMinWork = int64_t{1} << 16;

struct Task {
    int64_t seq, kv_head, q0;  // slice index, kv head, first query (relative to the slice)
};

void check_caches(const Tensor& k_cache, const Tensor& v_cache) {
    ZS_CHECK_T(ShapeError,
               k_cache.dim() == 4 && k_cache.shape() == v_cache.shape() &&
                   k_cache.dtype() == v_cache.dtype() && k_cache.is_contiguous() &&
                   v_cache.is_contiguous(),
               "kv caches must be contiguous [n_blocks, block_size, NKV, HS] of one dtype, got {} "
               "and {}",
               k_cache.str(), v_cache.str());
}

void check_rows(const Tensor& t, const char* name, int64_t heads, int64_t HS) {
    ZS_CHECK_T(ShapeError,
               t.dim() == 3 && t.size(1) == heads && t.size(2) == HS && t.stride(2) == 1 &&
                   core::is_floating(t.dtype()),
               "{} must be a float [N, {}, {}] with a contiguous last dim, got {}", name, heads, HS,
               t.str());
}

// first_pos(s): the first position the caller touches. Slots of blocks wholly below it may hold
// kNoBlock (freed outside a sliding window); every other one must name a block.
template <typename FirstPos>
void check_tables(std::span<const SeqSlice> seqs, int64_t N, int64_t bs, int64_t n_blocks,
                  FirstPos first_pos) {
    for (const SeqSlice& s : seqs) {
        ZS_CHECK_T(ShapeError, s.start >= 0 && s.n_tokens >= 0 && s.start + s.n_tokens <= N,
                   "slice rows [{}, {}) outside the batch of {}", s.start, s.start + s.n_tokens, N);
        ZS_CHECK_T(ShapeError,
                   s.pos >= 0 && static_cast<int64_t>(s.blocks.size()) * bs >= s.pos + s.n_tokens,
                   "block table of {} blocks cannot hold positions [0, {})", s.blocks.size(),
                   s.pos + s.n_tokens);
        const int64_t first_block = first_pos(s) / bs;
        for (size_t i = 0; i < s.blocks.size(); ++i) {
            const BlockId b = s.blocks[i];
            if (b == kNoBlock && static_cast<int64_t>(i) < first_block) continue;
            ZS_CHECK_T(ShapeError, b >= 0 && b < n_blocks,
                       "block id {} in slot {} outside [0, {}) (slots from {} are read)", b, i,
                       n_blocks, first_block);
        }
    }
}

// exp(x) for x <= 0 (a score minus its running max), in a form `omp simd` vectorises: x = k ln2
// + r with |r| <= ln2 / 2, a degree-7 Taylor polynomial for e^r (relative error < 1e-8 on that
// range, so f32 rounding dominates), and 2^k through the exponent bits. x is clamped to
// [-87, 0] first (below -87 gives 2^-126, which nothing next to the row's max of weight 1 can
// notice; the clamp also keeps the int conversion defined); a NaN stays NaN.
inline float exp_nonpos(float x) {
    const float xc = x > -87.0f ? (x < 0.0f ? x : 0.0f) : -87.0f;
    const float k = std::floor(xc * 1.44269504f + 0.5f);
    const float r = (xc - k * 0.693145752f) - k * 1.42860677e-6f;  // ln2 in two parts
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const float e = p * std::bit_cast<float>((static_cast<int32_t>(k) + 127) << 23);
    return x == x ? e : x;
}

// One query row against one key tile: scores s = q . k_j (q pre-scaled) for the tile's keys
// [kbeg, kend), then the online-softmax update of the row's max m, normaliser l and output
// accumulator acc [HS]. kt [HS, KT] is the tile's K transposed, v [KT, HS].
void online_softmax_step(const float* q, const float* kt, const float* v, int64_t KT, int64_t kbeg,
                         int64_t kend, int64_t HS, float* scores, float& m, float& l, float* acc) {
    std::fill(scores + kbeg, scores + kend, 0.0f);
    for (int64_t d = 0; d < HS; ++d) {  // vectorised over the tile's keys
        const float qd = q[d];
        const float* kd = kt + d * KT;
#pragma omp simd
        for (int64_t j = kbeg; j < kend; ++j) scores[j] += qd * kd[j];
    }
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = kbeg; j < kend; ++j) mx = std::max(mx, scores[j]);
    const float m_new = std::max(m, mx);
    const float corr = std::exp(m - m_new);  // 0 on the first tile (m = -inf)
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = kbeg; j < kend; ++j) {
        scores[j] = exp_nonpos(scores[j] - m_new);
        sum += scores[j];
    }
    l = l * corr + sum;
    m = m_new;
    for (int64_t d = 0; d < HS; ++d) acc[d] *= corr;
    for (int64_t j = kbeg; j < kend; ++j) {
        const float p = scores[j];
        const float* vr = v + j * HS;
#pragma omp simd
        for (int64_t d = 0; d < HS; ++d) acc[d] += p * vr[d];
    }
}

}  // namespace

void paged_kv_write(const Tensor& k_cache, const Tensor& v_cache, const Tensor& k, const Tensor& v,
                    std::span<const SeqSlice> seqs) {
    check_caches(k_cache, v_cache);
    const int64_t bs = k_cache.size(1), NKV = k_cache.size(2), HS = k_cache.size(3);
    check_rows(k, "k", NKV, HS);
    check_rows(v, "v", NKV, HS);
    ZS_CHECK_T(ShapeError, k.size(0) == v.size(0), "k has {} rows, v {}", k.size(0), v.size(0));
    check_tables(seqs, k.size(0), bs, k_cache.size(0), [](const SeqSlice& s) { return s.pos; });
    const DType ct = k_cache.dtype();
    const size_t ce = core::dtype_size(ct), ke = k.element_size(), ve = v.element_size();
    auto* kc = static_cast<char*>(k_cache.data_ptr());
    auto* vc = static_cast<char*>(v_cache.data_ptr());
    const auto* kp = static_cast<const char*>(k.data_ptr());
    const auto* vp = static_cast<const char*>(v.data_ptr());
    for (const SeqSlice& s : seqs) {
        for (int64_t i = 0; i < s.n_tokens; ++i) {
            const int64_t pos = s.pos + i, row = s.start + i;
            const int64_t slot =
                static_cast<int64_t>(s.blocks[static_cast<size_t>(pos / bs)]) * bs + pos % bs;
            for (int64_t h = 0; h < NKV; ++h) {
                const auto dst = static_cast<size_t>((slot * NKV + h) * HS);
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

void paged_attention_forward(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                             const Tensor& v_cache, std::span<const SeqSlice> seqs,
                             const ops::AttentionOptions& opts) {
    check_caches(k_cache, v_cache);
    const int64_t bs = k_cache.size(1), NKV = k_cache.size(2), HS = k_cache.size(3);
    ZS_CHECK_T(ShapeError, q.dim() == 3 && q.size(1) % NKV == 0,
               "q must be [N, NH, HS] with NH a multiple of the cache's {} kv heads, got {}", NKV,
               q.str());
    const int64_t NH = q.size(1), G = NH / NKV;
    check_rows(q, "q", NH, HS);
    check_rows(out, "out", NH, HS);
    ZS_CHECK_T(ShapeError, out.size(0) == q.size(0), "out has {} rows, q {}", out.size(0),
               q.size(0));
    ZS_CHECK_T(ShapeError, opts.causal && opts.window >= 0,
               "paged attention is causal with a window >= 0, got causal {} window {}", opts.causal,
               opts.window);
    const float scale = opts.scale != 0.0f ? opts.scale : 1.0f / std::sqrt(static_cast<float>(HS));
    const int64_t W = opts.window;
    // The earliest key read is the window start of the slice's first query (every tile starts at
    // its own first query's, which is later).
    check_tables(seqs, q.size(0), bs, k_cache.size(0), [W](const SeqSlice& s) {
        return W > 0 ? std::max<int64_t>(0, s.pos - W + 1) : int64_t{0};
    });

    std::vector<Task> tasks;
    int64_t work = 0;
    for (size_t s = 0; s < seqs.size(); ++s) {
        const int64_t n = seqs[s].n_tokens;
        work += n * (seqs[s].pos + (n + 1) / 2) * NH * HS * 2;
        for (int64_t g = 0; g < NKV; ++g) {
            for (int64_t q0 = 0; q0 < n; q0 += kQTile) {
                tasks.push_back({static_cast<int64_t>(s), g, q0});
            }
        }
    }
    const DType ct = k_cache.dtype();
    const size_t ce = core::dtype_size(ct), qe = q.element_size(), oe = out.element_size();
    const auto* kc = static_cast<const char*>(k_cache.data_ptr());
    const auto* vc = static_cast<const char*>(v_cache.data_ptr());
    const auto* qp = static_cast<const char*>(q.data_ptr());
    auto* op = static_cast<char*>(out.data_ptr());
    const auto n_tasks = static_cast<int64_t>(tasks.size());

    // Keys per tile: whole blocks, about kKeyTile of them.
    const int64_t KT = bs * std::max<int64_t>(1, kKeyTile / bs);

#pragma omp parallel if (n_tasks > 1 && work >= kParallelMinWork)
    {
        const auto rows = static_cast<size_t>(kQTile * G);
        std::vector<float> qf(rows * static_cast<size_t>(HS)), acc(qf.size());
        std::vector<float> m(rows), l(rows), sc(static_cast<size_t>(KT));
        // K of the current key tile transposed [HS, KT] (columns past its keys zero), V [KT, HS].
        std::vector<float> kt(static_cast<size_t>(KT * HS)), vf(kt.size());
        std::vector<float> krow(static_cast<size_t>(HS));
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < n_tasks; ++t) {
            const Task& task = tasks[static_cast<size_t>(t)];
            const SeqSlice& s = seqs[static_cast<size_t>(task.seq)];
            const int64_t nq = std::min(kQTile, s.n_tokens - task.q0);
            const int64_t first_pos = s.pos + task.q0, last_key = first_pos + nq - 1;
            // Queries of the tile for the group's heads, pre-scaled: row (r, hh) at (r * G + hh).
            for (int64_t r = 0; r < nq; ++r) {
                for (int64_t hh = 0; hh < G; ++hh) {
                    float* dst = qf.data() + (r * G + hh) * HS;
                    const int64_t row = s.start + task.q0 + r, h = task.kv_head * G + hh;
                    core::convert(
                        dst, DType::f32,
                        qp + static_cast<size_t>(row * q.stride(0) + h * q.stride(1)) * qe,
                        q.dtype(), static_cast<size_t>(HS));
                    for (int64_t d = 0; d < HS; ++d) dst[d] *= scale;
                }
            }
            std::fill(m.begin(), m.end(), -std::numeric_limits<float>::infinity());
            std::fill(l.begin(), l.end(), 0.0f);
            std::fill(acc.begin(), acc.end(), 0.0f);
            // Keys from the first query's window start (sliding window) to the last query.
            const int64_t jstart = W > 0 ? std::max<int64_t>(0, first_pos - W + 1) : 0;
            for (int64_t j0 = jstart; j0 <= last_key; j0 += KT) {
                // Gather the tile's keys and values through the block table, as f32.
                const int64_t nk = std::min(KT, last_key + 1 - j0);
                for (int64_t j = 0; j < nk; ++j) {
                    const int64_t p = j0 + j;
                    const int64_t slot =
                        static_cast<int64_t>(s.blocks[static_cast<size_t>(p / bs)]) * bs + p % bs;
                    const auto src = static_cast<size_t>((slot * NKV + task.kv_head) * HS);
                    core::convert(krow.data(), DType::f32, kc + src * ce, ct,
                                  static_cast<size_t>(HS));
                    for (int64_t d = 0; d < HS; ++d)
                        kt[static_cast<size_t>(d * KT + j)] = krow[static_cast<size_t>(d)];
                    core::convert(vf.data() + j * HS, DType::f32, vc + src * ce, ct,
                                  static_cast<size_t>(HS));
                }
                for (int64_t d = 0; d < HS; ++d) {
                    std::fill(kt.begin() + d * KT + nk, kt.begin() + (d + 1) * KT, 0.0f);
                }
                for (int64_t r = 0; r < nq; ++r) {
                    const int64_t kend = std::min(nk, first_pos + r + 1 - j0);  // causal
                    const int64_t kbeg =                                        // window
                        W > 0 ? std::max<int64_t>(0, first_pos + r - W + 1 - j0) : 0;
                    if (kend <= kbeg) continue;
                    for (int64_t hh = 0; hh < G; ++hh) {
                        const auto i = static_cast<size_t>(r * G + hh);
                        online_softmax_step(qf.data() + static_cast<int64_t>(i) * HS, kt.data(),
                                            vf.data(), KT, kbeg, kend, HS, sc.data(), m[i], l[i],
                                            acc.data() + static_cast<int64_t>(i) * HS);
                    }
                }
            }
            for (int64_t r = 0; r < nq; ++r) {
                for (int64_t hh = 0; hh < G; ++hh) {
                    const auto i = static_cast<size_t>(r * G + hh);
                    float* a = acc.data() + static_cast<int64_t>(i) * HS;
                    const float inv = 1.0f / l[i];
                    for (int64_t d = 0; d < HS; ++d) a[d] *= inv;
                    const int64_t row = s.start + task.q0 + r, h = task.kv_head * G + hh;
                    core::convert(
                        op + static_cast<size_t>(row * out.stride(0) + h * out.stride(1)) * oe,
                        out.dtype(), a, DType::f32, static_cast<size_t>(HS));
                }
            }
        }
    }
}

void PagedKvAttention::set_batch(std::vector<SeqSlice> seqs) {
    int64_t next = 0;
    for (const SeqSlice& s : seqs) {
        ZS_CHECK_T(ShapeError, s.start == next && s.n_tokens > 0,
                   "ragged batch slices must tile the rows in order: slice at row {} with {} "
                   "tokens, expected row {}",
                   s.start, s.n_tokens, next);
        next += s.n_tokens;
    }
    seqs_ = std::move(seqs);
    n_rows_ = next;
}

void PagedKvAttention::attend(int layer, const ops::AttentionOptions& opts, const Tensor& q,
                              const Tensor& k, const Tensor& v, const Tensor& out) {
    ZS_CHECK_T(ShapeError, q.dim() == 3 && q.size(0) == n_rows_,
               "attend got {} rows, the batch layout has {}", q.dim() ? q.size(0) : 0, n_rows_);
    ZS_CHECK_T(ShapeError, layer >= 0 && layer < pool_.spec().n_layers, "layer {} outside [0, {})",
               layer, pool_.spec().n_layers);
    const Tensor& kc = pool_.k_cache(layer);
    const Tensor& vc = pool_.v_cache(layer);
    paged_kv_write(kc, vc, k, v, seqs_);
    paged_attention_forward(out, q, kc, vc, seqs_, opts);
}

}  // namespace zs::infer
