// Attention cores: the part of an attention block between the QKV projection (with RoPE) and the
// output projection. One block (models::Attention, layers/layers.h) serves training and
// inference; the core it calls decides which keys and values the queries see:
//
//   LocalAttention  training: ops::attention_forward / attention_backward over the batch's own
//                   q, k, v (B sequences of T tokens); keeps nothing between calls.
//   KvAttention     inference: stores this call's k, v in a cache and attends over all of it —
//                   ContiguousKvCache (models/kv_cache.h: one sequence, `generate`) or
//                   infer::PagedKvAttention (a ragged batch over a paged block pool, the server).
//
// The Transformer holds its training core, chosen at construction (local); inference passes its
// KvAttention to forward_tokens per call, since the cache belongs to the caller (generate's loop,
// the engine). NOTE(seam): sequence parallelism slots in here, behind the same block: a Ulysses
// core wraps the local one with all-to-alls (sequence-sharded q/k/v -> head-sharded, attend, and
// back), a ring core rotates K/V blocks around the sp group and merges partial outputs by their
// log-sum-exp. Their kernels, like the paged one, live behind ops::Kernels in backends/.
#pragma once

#include "core/tensor.h"
#include "ops/attention.h"

namespace zs::models {

using core::Tensor;

class AttentionCore {
public:
    virtual ~AttentionCore() = default;
    virtual const char* name() const = 0;

    // out = attention of q over the keys and values this core sees, for block `layer`:
    //   q, out [B, T, NH, HS] ct; k, v [B, T, NKV, HS] ct: this call's tokens after RoPE (views
    //   into the fused projection: last dim contiguous);
    //   lse [B, NH, T] f32: written for backward when supports_backward(), else undefined.
    // opts: the layer's scale and sliding window (causal always).
    virtual void forward(int layer, const ops::AttentionOptions& opts, const Tensor& out,
                         const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v) = 0;

    // Whether backward() is implemented (the training cores).
    virtual bool supports_backward() const { return false; }
    // dq, dk, dv (=, shaped like q, k, v) from dout [B, T, NH, HS] and forward's out and lse.
    // The default throws NotSupported naming the core.
    virtual void backward(int layer, const ops::AttentionOptions& opts, const Tensor& dq,
                          const Tensor& dk, const Tensor& dv, const Tensor& dout, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse);
};

// Training: causal attention of each of the B sequences over its own T tokens.
class LocalAttention final : public AttentionCore {
public:
    const char* name() const override { return "local"; }
    void forward(int layer, const ops::AttentionOptions& opts, const Tensor& out, const Tensor& lse,
                 const Tensor& q, const Tensor& k, const Tensor& v) override;
    bool supports_backward() const override { return true; }
    void backward(int layer, const ops::AttentionOptions& opts, const Tensor& dq, const Tensor& dk,
                  const Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                  const Tensor& v, const Tensor& out, const Tensor& lse) override;
};

// Inference over a KV cache. A forward is one flat batch of N tokens (B = 1, T = N; for a ragged
// batch the core knows the layout: which rows belong to which sequence, at which positions).
// attend() stores k/v of the new tokens and writes attention outputs: q [N, NH, HS], k, v
// [N, NKV, HS], out [N, NH, HS] (ct), for layer `layer`, with that layer's options.
class KvAttention : public AttentionCore {
public:
    const char* name() const override { return "kv-cache"; }
    virtual void attend(int layer, const ops::AttentionOptions& opts, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out) = 0;
    // attend() on the rows of a [1, N, ...] call; lse is not written.
    void forward(int layer, const ops::AttentionOptions& opts, const Tensor& out, const Tensor& lse,
                 const Tensor& q, const Tensor& k, const Tensor& v) final;
};

}  // namespace zs::models
