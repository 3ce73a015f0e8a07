// Fused cross-entropy over the vocabulary: loss and dlogits in one pass over the logits.
//
//   logits  [N, V] f32 or bf16 (rows may be strided)
//   targets [N] i32 or i64; target == ignore_index contributes no loss and a zero gradient
//   losses  [N] f32: -log softmax(logits)[target] (0 where ignored)
//   dlogits [N, V] (optional; may alias logits to save V*N memory, as llm.c does):
//           (softmax(logits) - onehot(target)) * grad_scale, 0 rows where ignored
// Returns the number of targets that were not ignored. A target outside [0, V) that is not
// ignore_index raises zs::Error naming its position and value.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

struct CrossEntropyOptions {
    int64_t ignore_index = -100;
    float grad_scale = 1.0f;  // typically 1 / (number of valid targets in the global batch)
};

int64_t cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                      const Tensor& targets, const CrossEntropyOptions& opts = {});

}  // namespace zs::ops
