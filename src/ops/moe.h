// Top-k softmax router for mixture-of-experts layers.
//
//   logits  [N, E] f32 or bf16: router scores of N tokens over E experts
//   probs   [N, E] f32: softmax(logits) (kept for backward and the load-balancing loss)
//   weights [N, k] f32: gate weight of each chosen expert, in descending order
//   indices [N, k] i32: chosen experts (ties go to the lower expert index)
// renormalize: weights = p_sel / sum(p_sel) (Mixtral; DeepSpeed top-2); else weights = p_sel
// (DeepSpeed top-1, Switch).
#pragma once

#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

struct RouterOptions {
    int k = 2;
    bool renormalize = true;
};

void topk_router_forward(const Tensor& weights, const Tensor& indices, const Tensor& probs,
                         const Tensor& logits, const RouterOptions& opts);
// dlogits [N, E] (overwritten) from dweights [N, k] and, optionally, dprobs [N, E] (the gradient
// an auxiliary loss sends into probs).
void topk_router_backward(const Tensor& dlogits, const Tensor& dweights, const Tensor& dprobs,
                          const Tensor& probs, const Tensor& indices, const RouterOptions& opts);

}  // namespace zs::ops
