#include "models/attention_core.h"

#include <algorithm>
#include <utility>

#include "base/error.h"
#include "models/layers/layers.h"

namespace zs::models {

void AttentionCore::backward(int, const ops::AttentionOptions&, const Tensor&, const Tensor&,
                             const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const Tensor&, const Tensor&, const Tensor&) {
    ZS_THROW(NotSupported, "the '{}' attention core has no backward (inference only)", name());
}

void LocalAttention::forward(int, const ops::AttentionOptions& opts, const Tensor& out,
                             const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v) {
    ops::attention_forward(out, lse, q, k, v, opts);
}

void LocalAttention::backward(int, const ops::AttentionOptions& opts, const Tensor& dq,
                              const Tensor& dk, const Tensor& dv, const Tensor& dout,
                              const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                              const Tensor& lse) {
    ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, opts);
}

UlyssesAttention::UlyssesAttention(comm::Communicator& sp, int64_t n_slots,
                                   std::unique_ptr<AttentionCore> inner)
    : exchange_(sp),
      inner_(inner ? std::move(inner) : std::make_unique<LocalAttention>()),
      slots_(static_cast<size_t>(std::max<int64_t>(1, n_slots))) {}

UlyssesAttention::Dims UlyssesAttention::dims(const Tensor& q, const Tensor& k) const {
    const int P = comm().size();
    ZS_CHECK_T(ShapeError, q.dim() == 4 && k.dim() == 4,
               "the ulysses attention core takes q [B, Tl, NH, HS] and k, v [B, Tl, NKV, HS], got "
               "q {} and k {}",
               q.str(), k.str());
    Dims d{};
    d.B = q.size(0);
    d.Tl = q.size(1);
    d.T = d.Tl * P;
    d.NH = q.size(2);
    d.NKV = k.size(2);
    d.HS = q.size(3);
    ZS_CHECK_T(ShapeError, d.NH % P == 0 && d.NKV > 0 && d.NH % d.NKV == 0,
               "ulysses attention over {} ranks (sp group '{}'): {} query heads must split over "
               "the ranks and be a multiple of the {} KV heads",
               P, comm().name(), d.NH, d.NKV);
    d.R = parallel::kv_repeat(d.NKV, P);
    d.NHl = d.NH / P;
    d.NKVl = d.NKV * d.R / P;
    return d;
}

void UlyssesAttention::forward(int layer, const ops::AttentionOptions& opts, const Tensor& out,
                               const Tensor& lse, const Tensor& q, const Tensor& k,
                               const Tensor& v) {
    const Dims d = dims(q, k);
    Slot& s = slots_[static_cast<size_t>(layer) % slots_.size()];
    s.layer = layer;
    ensure(s.qkv, {d.B, d.T, d.NHl + 2 * d.NKVl, d.HS}, q.dtype(), q.device());
    ensure(s.out, {d.B, d.T, d.NHl, d.HS}, out.dtype(), out.device());
    // Sequence shard of every head -> these heads of the whole sequence.
    exchange_.seq_to_heads(s.qkv, {{q, 1}, {k, d.R}, {v, d.R}});
    const Tensor qh = s.qkv.slice(2, 0, d.NHl), kh = s.qkv.slice(2, d.NHl, d.NHl + d.NKVl),
                 vh = s.qkv.slice(2, d.NHl + d.NKVl, d.NHl + 2 * d.NKVl);
    inner_->forward(layer, opts, s.out, lse.defined() ? lse.view({d.B, d.NHl, d.T}) : Tensor(), qh,
                    kh, vh);
    exchange_.heads_to_seq({{out, 1}}, s.out);
}

void UlyssesAttention::backward(int layer, const ops::AttentionOptions& opts, const Tensor& dq,
                                const Tensor& dk, const Tensor& dv, const Tensor& dout,
                                const Tensor& q, const Tensor& k, const Tensor&, const Tensor&,
                                const Tensor& lse) {
    const Dims d = dims(q, k);
    const Slot& s = slots_[static_cast<size_t>(layer) % slots_.size()];
    ZS_CHECK(s.layer == layer && s.qkv.defined() && s.qkv.size(1) == d.T,
             "ulysses attention: backward of layer {} without its forward (the slot holds layer "
             "{}): under activation checkpointing each block's forward must be recomputed right "
             "before its backward",
             layer, s.layer);
    ensure(dout_h_, {d.B, d.T, d.NHl, d.HS}, dout.dtype(), dout.device(),
           core::MemCategory::buffers);
    ensure(dqkv_h_, s.qkv.shape(), dq.dtype(), dq.device(), core::MemCategory::buffers);
    exchange_.seq_to_heads(dout_h_, {{dout, 1}});
    const int64_t a = d.NHl, b = d.NHl + d.NKVl, c = d.NHl + 2 * d.NKVl;
    inner_->backward(layer, opts, dqkv_h_.slice(2, 0, a), dqkv_h_.slice(2, a, b),
                     dqkv_h_.slice(2, b, c), dout_h_, s.qkv.slice(2, 0, a), s.qkv.slice(2, a, b),
                     s.qkv.slice(2, b, c), s.out, lse.view({d.B, d.NHl, d.T}));
    // Back to the sequence shard; each repeated KV head's gradient is the sum of its copies'.
    exchange_.heads_to_seq({{dq, 1}, {dk, d.R}, {dv, d.R}}, dqkv_h_);
}

void RingAttention::forward(int, const ops::AttentionOptions& opts, const Tensor& out,
                            const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v) {
    ring_.forward(opts, out, lse, q, k, v);
}

void RingAttention::backward(int, const ops::AttentionOptions& opts, const Tensor& dq,
                             const Tensor& dk, const Tensor& dv, const Tensor& dout,
                             const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                             const Tensor& lse) {
    ring_.backward(opts, dq, dk, dv, dout, q, k, v, out, lse);
}

void KvAttention::forward(int layer, const ops::AttentionOptions& opts, const Tensor& out,
                          const Tensor&, const Tensor& q, const Tensor& k, const Tensor& v) {
    ZS_CHECK_T(ShapeError, q.dim() == 4 && q.size(0) == 1,
               "a KV-cache attention core runs one flat batch [1, N, NH, HS], got q {}", q.str());
    attend(layer, opts, q.select(0, 0), k.select(0, 0), v.select(0, 0), out.select(0, 0));
}

}  // namespace zs::models
