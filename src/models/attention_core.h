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
// The Transformer holds its training core, chosen at construction (local, or Ulysses when
// RunConfig::sp is set); inference passes its KvAttention to forward_tokens per call, since the
// cache belongs to the caller (generate's loop, the engine). Sequence parallelism slots in here,
// behind the same block:
//
//   UlyssesAttention  training over an sp group (DeepSpeed-Ulysses): wraps an inner core (local,
//                   or ring under USP) with all-to-alls (sequence-sharded q/k/v -> head-sharded,
//                   attend, and back); its layout kernels live behind ops::Kernels
//                   (ops/ulysses.h), the exchange in parallel/ulysses.h.
//   RingAttention   training over a ring group (ring attention, zig-zag causal layout): K/V
//                   blocks rotate around the ring, partial outputs merged by log-sum-exp
//                   (parallel/ring.h; the merge kernel is ops::attention_merge).
//
// USP (Fang and Zhao 2024, "USP: a unified sequence parallelism approach"): Ulysses inside a group
// of U ranks, ring across R such groups: UlyssesAttention whose inner core is a RingAttention.
#pragma once

#include <memory>
#include <vector>

#include "core/tensor.h"
#include "ops/attention.h"
#include "parallel/ring.h"
#include "parallel/ulysses.h"

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

// Training under Ulysses sequence parallelism. q, k, v hold this rank's Tl tokens of every head
// (rank s of the P ranks of `sp`: tokens [s*Tl, (s+1)*Tl) of each sequence); one all-to-all
// swaps them for NH/P query heads, and the KV heads those read, of all T = P*Tl tokens; the local
// core attends causally over the whole sequence; a second all-to-all returns the output to the
// sequence shard. Backward mirrors it: dout to heads, the local backward, dq/dk/dv back.
//
// GQA rule (parallel/ulysses.h): the KV heads are split over the ranks when P divides NKV, and
// otherwise each is repeated P / gcd(NKV, P) times before the exchange (P / NKV when NKV divides
// P: one KV head per rank, replicated, as DeepSpeed's ulysses_sp does), its gradient summed over
// the copies on the way back. P must divide NH (the Transformer refuses a model where it does
// not, naming both).
//
// State: none between calls. The head-sharded q, k, v and output live only inside forward();
// backward() exchanges the caller's sequence-sharded q, k, v and out again, with dout, in one
// all-to-all, rather than keeping a head-sharded copy of every layer's q, k, v and output from
// forward to backward as DeepSpeed does (the caller keeps the sequence-sharded ones anyway: the
// output projection's backward reads the output): per layer no bytes saved beyond the local
// core's, at the price of q, k, v and the output crossing the group once more
// (parallel::ulysses_volume). Under activation checkpointing, or any other order of layers,
// backward needs nothing from its forward. lse keeps the caller's buffer [B, NH, Tl] f32, filled
// as [B, NH/P, T] (the same size). Every call is collective over `sp`. Not thread-safe.
//
// Memory inside a call (Transformer::activation_bytes counts it): forward, the head shards
// [B, T, NH/P + 2 NKV R/P, HS] of q, k, v with one sequence's exchange chunks, then also the
// output's [B, T, NH/P, HS]; backward, [q | k | v | out | dout] head shards with one sequence's
// chunks, then with dq, dk, dv's head shards and the inner core's backward.
//
// The inner core (default LocalAttention) attends over the gathered T tokens; under USP it is a
// RingAttention over the ring group, and the T = P*Tl tokens this Ulysses group gathers are then
// its ring rank's two zig-zag chunks.
class UlyssesAttention final : public AttentionCore {
public:
    explicit UlyssesAttention(comm::Communicator& sp,
                              std::unique_ptr<AttentionCore> inner = nullptr);
    const char* name() const override { return "ulysses"; }
    void forward(int layer, const ops::AttentionOptions& opts, const Tensor& out, const Tensor& lse,
                 const Tensor& q, const Tensor& k, const Tensor& v) override;
    bool supports_backward() const override { return true; }
    void backward(int layer, const ops::AttentionOptions& opts, const Tensor& dq, const Tensor& dk,
                  const Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                  const Tensor& v, const Tensor& out, const Tensor& lse) override;
    comm::Communicator& comm() const { return exchange_.comm(); }

private:
    struct Dims {
        int64_t B, Tl, T, NH, NKV, HS, R, NHl, NKVl;
    };
    Dims dims(const Tensor& q, const Tensor& k) const;

    parallel::UlyssesExchange exchange_;
    std::unique_ptr<AttentionCore> inner_;
};

// Training under ring attention (parallel/ring.h): q, k, v hold this rank's two zig-zag chunks
// of every sequence (ring rank r of R: chunks r and 2R-1-r of 2R, Tl = 2c tokens); the K/V blocks
// go round the ring with the next block's transfer overlapping this block's attention, and
// backward sends them round again with their dK/dV. Keeps nothing between calls (backward gets
// q, k, v, out and lse back); lse [B, NH, Tl] holds each chunk's [B, NH, c] in turn. Any number
// of heads; causal, no sliding window shorter than the sequence (NotSupported). Collective over
// `ring`.
class RingAttention final : public AttentionCore {
public:
    explicit RingAttention(comm::Communicator& ring) : ring_(ring) {}
    const char* name() const override { return "ring"; }
    void forward(int layer, const ops::AttentionOptions& opts, const Tensor& out, const Tensor& lse,
                 const Tensor& q, const Tensor& k, const Tensor& v) override;
    bool supports_backward() const override { return true; }
    void backward(int layer, const ops::AttentionOptions& opts, const Tensor& dq, const Tensor& dk,
                  const Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                  const Tensor& v, const Tensor& out, const Tensor& lse) override;
    comm::Communicator& comm() const { return ring_.comm(); }

private:
    parallel::RingAttention ring_;
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
