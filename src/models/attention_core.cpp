#include "models/attention_core.h"

#include "base/error.h"

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

void KvAttention::forward(int layer, const ops::AttentionOptions& opts, const Tensor& out,
                          const Tensor&, const Tensor& q, const Tensor& k, const Tensor& v) {
    ZS_CHECK_T(ShapeError, q.dim() == 4 && q.size(0) == 1,
               "a KV-cache attention core runs one flat batch [1, N, NH, HS], got q {}", q.str());
    attend(layer, opts, q.select(0, 0), k.select(0, 0), v.select(0, 0), out.select(0, 0));
}

}  // namespace zs::models
