// Tensor parallelism (Megatron-LM): the linear layers, embedding and loss with their weights split
// over the tp group, each a composition of the ops entry points and one collective.
//
//   column-parallel linear   W [OC, IC] split by output rows: y_r = x W_r^T (+ b_r), y stays split
//                            along features. Backward: dx = all-reduce_r(dy_r W_r) (Megatron's f).
//   row-parallel linear      W split by input columns, x split along features:
//                            y = all-reduce_r(x_r W_r^T) + b (the bias once, after the sum).
//                            Backward: dx_r = dy W_r, no communication (Megatron's g).
//   vocabulary-parallel      the embedding table split by rows (token ids): each rank looks up
//   embedding                the ids it holds, zeros elsewhere, all-reduce. Backward: each rank
//                            scatters the gradient of its own ids.
//   vocabulary-parallel      logits split along the vocabulary: the row max, the sum of exps and
//   cross-entropy            the target's logit are all-reduced (three [N] vectors), so no rank
//                            ever holds a full row of logits; dlogits_r = (softmax - onehot)_r.
//
// A column-parallel layer followed by a row-parallel one (attention's QKV and output, the MLP's
// up and down) needs one all-reduce forward and one backward. Shards are contiguous ranges:
// shard_range(n, r, tp) = [r * ceil(n / tp), min(n, (r + 1) * ceil(n / tp))) — equal when tp
// divides n (the linears require it); the vocabulary's last shard may be shorter.
#pragma once

#include <cstdint>
#include <utility>

#include "comm/communicator.h"
#include "core/tensor.h"

namespace zs::parallel {

using core::Tensor;

std::pair<int64_t, int64_t> shard_range(int64_t n, int rank, int tp);
// A contiguous copy of rank's shard of `full` along dimension `dim`.
Tensor shard(const Tensor& full, int dim, int rank, int tp);

// ---- column-parallel linear: x [..., IC] full, w [OC/tp, IC], b [OC/tp], y [..., OC/tp] ----
void column_linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b);
// dx [..., IC] (all-reduced over tp; skipped when undefined), dw/db += (this rank's rows).
void column_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                            const Tensor& x, const Tensor& w, comm::Communicator& tp);

// ---- row-parallel linear: x [..., IC/tp], w [OC, IC/tp], b [OC] (whole), y [..., OC] f32 ----
void row_linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b,
                        comm::Communicator& tp);
// dx [..., IC/tp] (no communication), dw += this rank's columns, db += sum(dy) (the same on
// every rank; the bias is replicated).
void row_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                         const Tensor& x, const Tensor& w);

// ---- vocabulary-parallel embedding: table [V_r, C] holding ids [v0, v0 + V_r) ----
// out [..., C] f32 (all-reduced): table rows of the ids this rank holds, summed over ranks.
void vocab_embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table, int64_t v0,
                             comm::Communicator& tp);
// dtable [V_r, C] f32 += dout rows of this rank's ids.
void vocab_embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids,
                              int64_t v0);

// ---- vocabulary-parallel cross-entropy: logits [N, V_r] f32 for ids [v0, v0 + V_r) ----
// As ops::cross_entropy over the whole vocabulary: losses [N] (the same on every rank), dlogits
// [N, V_r] (optional, may alias logits) = (softmax - onehot) * grad_scale for this rank's columns;
// targets equal to ignore_index give 0. Returns the number of targets not ignored.
int64_t vocab_cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                            const Tensor& targets, int64_t v0, int64_t vocab_size,
                            comm::Communicator& tp, int64_t ignore_index = -100,
                            float grad_scale = 1.0f);

}  // namespace zs::parallel
