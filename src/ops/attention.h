// Causal (or full) scaled-dot-product attention with grouped-query heads, tiled with an online
// softmax (flash-attention style): extra memory is O(T) per head (the log-sum-exp), never O(T^2).
//
//   q   [B, Tq, NH, HS]      f32 or bf16; any strides but the last dim contiguous, so q, k, v
//   k,v [B, Tk, NKV, HS]     can be column views of one fused qkv projection [B, T, (NH+2NKV)*HS];
//                            q's dtype, or (forward, CPU) bf16 under f32 q: a bf16 KV cache read
//                            by f32 queries (other devices refuse it: NotSupported)
//   out [B, Tq, NH, HS]      out's dtype may differ from q's
//   lse [B, NH, Tq] f32      log-sum-exp of the scaled scores per query row (saved for backward;
//                            undefined at inference)
// NH must be a multiple of NKV (query head h reads kv head h / (NH / NKV)). Causal masking is
// aligned bottom-right: query i sees keys j <= i + (Tk - Tq), so Tq == 1 decodes against a cache.
// A sliding window W (Mistral, Qwen2; causal only) also hides keys j <= i + (Tk - Tq) - W: each
// query sees the W keys ending at its own position (transformers' `kv_idx > q_idx - window`).
#pragma once

#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

struct AttentionOptions {
    bool causal = true;
    float scale = 0.0f;  // 0 -> 1/sqrt(HS)
    int64_t window = 0;  // sliding window in keys (0: none); needs causal
};

void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                       const Tensor& v, const AttentionOptions& opts = {});

// dq, dk, dv are overwritten (dk/dv sum over the query heads of each kv group); they have q's
// dtype, and out has dout's.
//   dout [B, Tq, NH, HS]; out, lse from the forward.
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                        const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const AttentionOptions& opts = {});

// Merges a partial attention result into an accumulated one (ring attention's log-sum-exp merge):
// (out, lse) is softmax attention of some queries over one set of keys, (part_out, part_lse) over a
// disjoint set; afterwards (out, lse) is the attention over their union:
//   lse' = log(exp(lse) + exp(part_lse))
//   out' = out exp(lse - lse') + part_out exp(part_lse - lse')
// A row whose part_lse is -inf (it saw no key) is left as it was; an accumulator row starts as
// out = 0, lse = -inf. Attention backward needs no merge: given the final out and lse, each key
// block's share of dq, dk, dv is attention_backward over that block alone.
//   out, part_out [B, Tq, NH, HS] f32, last dim contiguous
//   lse, part_lse [B, NH, Tq] f32, contiguous
void attention_merge(const Tensor& out, const Tensor& lse, const Tensor& part_out,
                     const Tensor& part_lse);

}  // namespace zs::ops
