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

UlyssesAttention::UlyssesAttention(comm::Communicator& sp, std::unique_ptr<AttentionCore> inner)
    : exchange_(sp), inner_(inner ? std::move(inner) : std::make_unique<LocalAttention>()) {}

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
    const int64_t a = d.NHl, b = d.NHl + d.NKVl, c = d.NHl + 2 * d.NKVl;
    // Sequence shard of every head -> these heads of the whole sequence.
    Tensor qkv = Tensor::empty({d.B, d.T, c, d.HS}, q.dtype(), q.device());
    exchange_.seq_to_heads(qkv, {{q, 1}, {k, d.R}, {v, d.R}});
    Tensor out_h = Tensor::empty({d.B, d.T, d.NHl, d.HS}, out.dtype(), out.device());
    inner_->forward(layer, opts, out_h, lse.defined() ? lse.view({d.B, d.NHl, d.T}) : Tensor(),
                    qkv.slice(2, 0, a), qkv.slice(2, a, b), qkv.slice(2, b, c));
    qkv = Tensor();  // before the output's exchange buffer
    exchange_.heads_to_seq({{out, 1}}, out_h);
}

void UlyssesAttention::backward(int layer, const ops::AttentionOptions& opts, const Tensor& dq,
                                const Tensor& dk, const Tensor& dv, const Tensor& dout,
                                const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& out, const Tensor& lse) {
    const Dims d = dims(q, k);
    const int64_t a = d.NHl, b = d.NHl + d.NKVl, c = d.NHl + 2 * d.NKVl, o = c + d.NHl,
                  e = o + d.NHl;
    // The forward's head shards again, with dout's, in one all-to-all: [q | k | v | out | dout].
    Tensor h = Tensor::empty({d.B, d.T, e, d.HS}, q.dtype(), q.device());
    exchange_.seq_to_heads(h, {{q, 1}, {k, d.R}, {v, d.R}, {out, 1}, {dout, 1}});
    Tensor dqkv = Tensor::empty({d.B, d.T, c, d.HS}, dq.dtype(), dq.device());
    inner_->backward(layer, opts, dqkv.slice(2, 0, a), dqkv.slice(2, a, b), dqkv.slice(2, b, c),
                     h.slice(2, o, e), h.slice(2, 0, a), h.slice(2, a, b), h.slice(2, b, c),
                     h.slice(2, c, o), lse.view({d.B, d.NHl, d.T}));
    h = Tensor();  // before the gradients' exchange buffer
    // Back to the sequence shard; each repeated KV head's gradient is the sum of its copies'.
    exchange_.heads_to_seq({{dq, 1}, {dk, d.R}, {dv, d.R}}, dqkv);
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
