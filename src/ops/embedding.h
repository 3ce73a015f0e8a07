// Embedding lookup and its scatter-add backward.
//   ids   [...] i32 or i64 (contiguous); every id must be in [0, V)
//   table [V, C] f32 or bf16
//   out   [..., C]
// An id outside [0, V) raises zs::Error naming the position and value (tokens come from users).
#pragma once

#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

// out = table[ids] (or out += table[ids] when accumulate: GPT-2 adds wte[ids] + wpe[pos]).
void embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table,
                       bool accumulate = false);
// dtable[ids[i]] += dout[i] (a scatter-add; repeated ids accumulate). dtable f32 [V, C].
void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids);

}  // namespace zs::ops
