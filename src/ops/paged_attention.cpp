#include "ops/paged_attention.h"

#include <algorithm>

#include "base/error.h"
#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;
using core::Shape;

namespace {

struct CacheDims {
    int64_t n_blocks, bs, nkv, hs;
};

CacheDims check_caches(const char* op, const Tensor& k_cache, const Tensor& v_cache) {
    for (auto [name, t] : {std::pair{"k_cache", &k_cache}, std::pair{"v_cache", &v_cache}}) {
        check::defined(op, name, *t);
        check::ndim(op, name, *t, 4);
        check::dtype(op, name, *t, {DType::f32, DType::bf16});
        check::contiguous(op, name, *t);
    }
    check::same_shape(op, "v_cache", v_cache, "k_cache", k_cache);
    check::dtype(op, "v_cache", v_cache, {k_cache.dtype()});
    return {k_cache.size(0), k_cache.size(1), k_cache.size(2), k_cache.size(3)};
}

// A float [N, heads, HS] with a contiguous last dim.
void check_rows(const char* op, const char* name, const Tensor& t, int64_t heads, int64_t hs) {
    check::defined(op, name, t);
    check::ndim(op, name, t, 3);
    check::dtype(op, name, t, {DType::f32, DType::bf16});
    check::shape(op, name, t, Shape{t.size(0), heads, hs});
    check::last_dim_contiguous(op, name, t);
}

// first_pos(s): the first position the op touches. Slots of blocks wholly below it may hold
// kNoBlock (freed outside a sliding window); every other one must name a block.
template <typename FirstPos>
void check_tables(const char* op, std::span<const SeqSlice> seqs, int64_t N, const CacheDims& c,
                  FirstPos first_pos) {
    for (const SeqSlice& s : seqs) {
        ZS_CHECK_T(ShapeError, s.start >= 0 && s.n_tokens >= 0 && s.start + s.n_tokens <= N,
                   "{}: slice rows [{}, {}) outside the batch of {}", op, s.start,
                   s.start + s.n_tokens, N);
        ZS_CHECK_T(ShapeError,
                   s.pos >= 0 && static_cast<int64_t>(s.blocks.size()) * c.bs >= s.pos + s.n_tokens,
                   "{}: block table of {} blocks cannot hold positions [0, {})", op,
                   s.blocks.size(), s.pos + s.n_tokens);
        const int64_t first_block = first_pos(s) / c.bs;
        for (size_t i = 0; i < s.blocks.size(); ++i) {
            const BlockId b = s.blocks[i];
            if (b == kNoBlock && static_cast<int64_t>(i) < first_block) continue;
            ZS_CHECK_T(ShapeError, b >= 0 && b < c.n_blocks,
                       "{}: block id {} in slot {} outside [0, {}) (slots from {} are read)", op, b,
                       i, c.n_blocks, first_block);
        }
    }
}

}  // namespace

void paged_kv_write(const Tensor& k_cache, const Tensor& v_cache, const Tensor& k, const Tensor& v,
                    std::span<const SeqSlice> seqs) {
    const char* op = "paged_kv_write";
    const CacheDims c = check_caches(op, k_cache, v_cache);
    check_rows(op, "k", k, c.nkv, c.hs);
    check_rows(op, "v", v, c.nkv, c.hs);
    check::same_shape(op, "v", v, "k", k);
    check::same_device(op, {{"k_cache", &k_cache}, {"v_cache", &v_cache}, {"k", &k}, {"v", &v}});
    check_tables(op, seqs, k.size(0), c, [](const SeqSlice& s) { return s.pos; });
    if (seqs.empty() || k.numel() == 0) return;
    kernels_for(k_cache.device()).paged_kv_write(k_cache, v_cache, k, v, seqs);
}

void paged_attention_forward(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                             const Tensor& v_cache, std::span<const SeqSlice> seqs,
                             const AttentionOptions& opts) {
    const char* op = "paged_attention_forward";
    const CacheDims c = check_caches(op, k_cache, v_cache);
    check::defined(op, "q", q);
    check::ndim(op, "q", q, 3);
    ZS_CHECK_T(ShapeError, c.nkv > 0 && q.size(1) % c.nkv == 0,
               "{}: q must be [N, NH, HS] with NH a multiple of the cache's {} kv heads, got {}",
               op, c.nkv, q.str());
    check_rows(op, "q", q, q.size(1), c.hs);
    check_rows(op, "out", out, q.size(1), c.hs);
    check::same_shape(op, "out", out, "q", q);
    ZS_CHECK_T(ShapeError, opts.causal && opts.window >= 0,
               "{}: paged attention is causal with a window >= 0, got causal {} window {}", op,
               opts.causal, opts.window);
    check::same_device(op,
                       {{"out", &out}, {"q", &q}, {"k_cache", &k_cache}, {"v_cache", &v_cache}});
    // The earliest key read is the window start of the slice's first query.
    const int64_t W = opts.window;
    check_tables(op, seqs, q.size(0), c, [W](const SeqSlice& s) {
        return W > 0 ? std::max<int64_t>(0, s.pos - W + 1) : int64_t{0};
    });
    if (seqs.empty() || q.numel() == 0) return;
    kernels_for(q.device()).paged_attention_forward(out, q, k_cache, v_cache, seqs, opts);
}

}  // namespace zs::ops
