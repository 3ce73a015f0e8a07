#include "infer/paged_attention.h"

#include "base/error.h"

namespace zs::infer {

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
    const ops::PagedKvCache cache = pool_.cache(layer);
    ops::paged_kv_write(cache, k, v, seqs_);
    ops::paged_attention_forward(out, q, cache, seqs_, opts);
}

}  // namespace zs::infer
