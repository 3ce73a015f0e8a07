// zerospeed estimate: per-rank memory and communication of a training configuration, computed
// from the same layout and allocation pattern the engine and the model use (so it is exact by
// construction up to allocator alignment), before anything runs.
//
// Model states (params, grads, master weights, optimizer states) per stage are in zero/engine.h's
// table, over this rank's layout: under tensor parallelism the rank's shard (RankModel), and ZeRO
// partitions over the data-parallel group only (dp = world / tp). Activations come from
// models::Transformer::activation_bytes at the rank's dimensions, completed with what it leaves
// out there (an MoE block's router and gathered expert rows, the copy of a replicated KV head's
// gradient rows); the engine's transients are the full gradients of the groups in flight
// (stages 2-3) and the gathered weights of the groups in use (stage 3). Communication is what one
// rank sends per optimizer step with ring algorithms, by group and collective (CommEstimate).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "core/dtype.h"
#include "models/transformer.h"
#include "parallel/topology.h"

namespace zs::zero {

struct EstimateInput {
    int world = 1;  // every rank of the job
    // How the ranks split (parallel/topology.h); dp 0: what the world leaves. tp, and sp's
    // Ulysses and ring parts, must be the model's (RankModel). pp and ep > 1 are refused (not
    // estimated yet). Under sequence parallelism ZeRO partitions over dp x sp and each rank's
    // activations are those of its seq_len / sp tokens plus the sp cores' buffers.
    parallel::Sizes sizes;
    int stage = 0;
    int n_states = 2;  // optimizer states per parameter (Adam 2, SGD/Lion 1)
    int64_t micro_batch = 1, seq_len = 128, grad_accum = 1;
    // Stage 3 (zero_optimization keys): how much is gathered at once.
    int64_t prefetch_numel = 50'000'000, max_live_numel = 1'000'000'000,
            persistence_threshold = 100'000;
    // ZeRO++ (zero/engine.h, zero_quantized_weights / zero_quantized_gradients[_bits]): stage 3's
    // weight all-gathers carry int8 codes + one f32 scale per 256 elements (qwZ); stages 2-3's
    // gradient reduce-scatters become all-to-alls of int8 or int4 codes + scales (qgZ: bits 8 or
    // 4; 0 off). No effect on one data-parallel rank.
    bool quantized_weights = false;
    int quantized_gradient_bits = 0;
    // ZeRO++ hpZ (zero_hpz_partition_size, Config::hpz_partition_size): at stage 3, H > 1
    // consecutive data-parallel ranks share a secondary partition of each non-persistent group
    // (P / H compute-dtype elements per rank, counted in params) and backward gathers run over
    // them. 0 or 1: off; H must divide dp (ConfigError otherwise, at any stage).
    int64_t hpz_partition_size = 1;
    // bf16.bf16_master_weights_and_grads (Config::bf16_master; bf16 compute, stages 1-3): no
    // master copy (the bf16 compute weights are the masters); bf16_states: 2-byte states. The
    // in-memory gradient shard keeps f32 storage (of bf16 values).
    bool bf16_master = false, bf16_states = false;
    // The CPU backend runs 16-bit matmuls on f32 copies (no native bf16: backends::cpu::
    // matmul_routes().native_bf16 false): the largest product's copies add to the transient
    // (MemoryEstimate::matmul_scratch, an upper bound).
    bool widened_16bit_matmul = false;
};

// Bytes one rank sends per optimizer step, ring algorithms: an all-reduce of S bytes over n ranks
// sends 2 (n - 1) / n x S, a reduce-scatter or all-gather whose whole is S bytes (n - 1) / n x S,
// an all-to-all of S bytes (n - 1) / n x S (all chunks but its own).
struct CommEstimate {
    // ZeRO over the data-parallel group (formulas in estimate.cpp).
    int64_t dp_allreduce = 0;       // stage 0: f32 gradients
    int64_t dp_reduce_scatter = 0;  // stages 1-3: f32 gradients (qgZ: the all-to-all's codes)
    int64_t dp_allgather = 0;       // stages 1-3: compute weights (qwZ: int8 codes)
    // hpZ (stage 3): the backward gathers over the sub-groups of hpz ranks, from the secondary
    // partition (compute weights, never quantized); dp_allgather keeps the forward ones.
    int hpz = 1;
    int64_t hpz_allgather = 0;
    // Tensor parallelism over the tp group: activations and their gradients, and MoE gate
    // weights' gradients (TpTraffic), every micro-batch of the step.
    int64_t tp_allreduce = 0;
    int64_t tp_allreduce_calls = 0;
    // Replicated KV heads (num_key_value_heads < tp): over the kv group of the kv_ranks =
    // tp / num_key_value_heads ranks holding one KV head (split from tp), the f32 gradient rows
    // of that head, every micro-batch of the step. 0 otherwise.
    int kv_ranks = 1;
    int64_t tp_kv_allreduce = 0;
    int64_t tp_kv_allreduce_calls = 0;
    // Sequence parallelism, per step (A micro-batches, L layers; forward counted twice under
    // activation checkpointing, which re-runs it): Ulysses' all-to-alls, (U - 1) / U of the
    // parallel::ulysses_volume buffers; ring attention's send/recv, parallel::ring_volume over the
    // block the ring attends (under Ulysses: its head shard of U T tokens).
    int64_t sp_all_to_all = 0;
    int64_t ring_send = 0;
    int64_t total() const {
        return dp_allreduce + dp_reduce_scatter + dp_allgather + hpz_allgather + tp_allreduce +
               tp_kv_allreduce + sp_all_to_all + ring_send;
    }
};

struct MemoryEstimate {
    int dp = 1, tp = 1;           // dp: ZeRO's group (dp x sp ranks under sequence parallelism)
    int sp = 1, ring = 1;         // sequence parallelism: all of it, and the ring part
    int64_t tokens_per_rank = 0;  // seq_len / sp
    int64_t n_params = 0;         // parameters this rank holds (its tensor-parallel shard)
    // Model states, per rank: compute weights, f32 gradients, f32 master weights (0 with f32
    // compute: they are the compute weights), optimizer states.
    int64_t params = 0, grads = 0, master = 0, optimizer = 0;
    int64_t secondary = 0;    // hpZ's secondary weight partition (part of params)
    int64_t activations = 0;  // saved across the step
    int64_t transient = 0;    // largest extra set alive at once
    // Part of transient: the f32 copies of the largest 16-bit matmul
    // (EstimateInput::widened_16bit_matmul; 0 otherwise).
    int64_t matmul_scratch = 0;
    int64_t peak = 0;  // all of the above
    CommEstimate comm;
    std::string report() const;
};

class RankModel;
// `model` is the model one rank holds (RankModel for tensor parallelism; the trainer's model).
// Throws ConfigError when the sizes do not fit the world or the model, NotSupported for pp, sp or
// ep > 1.
MemoryEstimate estimate(const RankModel& model, const EstimateInput& in);
MemoryEstimate estimate(const models::Transformer& model, const EstimateInput& in);

// The all-reduces tensor parallelism issues in one training micro-batch of [B, T] tokens
// (N = B T), as models::Transformer runs them; bytes are the payload (before the ring factor), ct
// the compute dtype. Over the tp group:
//   forward   vocabulary-parallel embedding         [N, C] f32    1
//             each block: attention and MLP output  [N, C] f32    2 L
//             vocabulary-parallel cross-entropy     [n] f32 (row max) and [2, n] f32 (sum of exps,
//                                                   target logit) per logits chunk of n rows: 3 N
//   backward  vocabulary-parallel LM head's dx      [N, C] ct     1
//             each block: MLP and attention dx      [N, C] ct     2 L
//             each MoE block: the gate weights'     [N, k] f32    L
//             gradient (Moe::backward)
//             activation checkpointing re-runs each block's forward: 2 L more [N, C] f32
// Over the kv group (replicated KV heads: num_key_value_heads < tp, kv_ranks = tp /
// num_key_value_heads ranks per KV head), each block's backward sums this micro-batch's share of
// its KV head's gradient rows (k and v, one head each: Transformer::sum_replicated_kv_grads):
//             the QKV weight's rows                 [2 HS, C] f32  L
//             the QKV bias's rows (when present)    [2 HS] f32     L
// (the re-run forward of activation checkpointing adds none). Zero for a model without tensor
// parallelism. (The trainer's per-step scalars, the gradient norm and overflow flag, are not
// counted.)
struct TpTraffic {
    int64_t calls = 0;  // over tp
    int64_t bytes = 0;
    int kv_ranks = 1;      // the kv group's size; 1: KV heads are split, no kv group
    int64_t kv_calls = 0;  // over the kv group
    int64_t kv_bytes = 0;
};
TpTraffic tp_micro_batch_traffic(const models::Transformer& model, int64_t B, int64_t T);

// The model rank 0 of a size-tp tensor-parallel group holds (the largest shard: the vocabulary's
// last may be shorter), built on one process without communicating: the Transformer sees a
// stand-in group that answers rank() and size() and refuses every collective; its split() (the
// kv group of replicated KV heads) answers a stand-in of tp / num_key_value_heads ranks. tp 1:
// the whole model. Refuses a tp that does not divide the model's attention heads, nor divides or
// is a multiple of its KV heads (parallel::check_model), or does not divide its intermediate size
// (of each expert for MoE), naming the size and the dimension.
class RankModel {
public:
    // ulysses, ring > 1: the model also holds stand-in sp and ring groups of those sizes (its
    // attention cores' buffers count in its activation_bytes; nothing communicates).
    RankModel(const models::ModelConfig& cfg, const models::RunConfig& run, int tp, int ulysses = 1,
              int ring = 1);
    ~RankModel();
    RankModel(const RankModel&) = delete;
    RankModel& operator=(const RankModel&) = delete;
    // The rank's shard: its parameter layout.
    const models::Transformer& model() const { return *model_; }
    // The same dimensions without tensor parallelism (the rank's heads, intermediate size and
    // vocabulary rows as a whole model): its activation_bytes are the rank's. model() at tp 1.
    const models::Transformer& local_model() const { return local_ ? *local_ : *model_; }

private:
    std::unique_ptr<comm::Communicator> group_;  // the stand-in tp group; outlives model_
    std::unique_ptr<comm::Communicator> sp_group_, ring_group_;  // stand-ins, likewise
    std::unique_ptr<models::Transformer> model_;
    std::unique_ptr<models::Transformer> local_;  // tp > 1 only
};

// A stand-in group of n ranks for measuring one rank's memory on one process: every collective
// acts as if each rank held this rank's data (an all-to-all returns its input, an all-gather
// repeats it, a receive zeros its buffer, reductions and sends leave theirs), so a model over it
// allocates exactly what a real sp or ring rank does, with the allocator's counts its own
// (thread-ranks share them). The values are not a real run's. split() gives another of n ranks.
class MirrorGroup final : public comm::Communicator {
public:
    explicit MirrorGroup(int n) : n_(n) {}
    int rank() const override { return 0; }
    int size() const override { return n_; }
    std::string name() const override;
    comm::Work allreduce(const core::Tensor&, comm::ReduceOp) override { return {}; }
    comm::Work reduce_scatter(const core::Tensor& out, const core::Tensor& in,
                              comm::ReduceOp) override;
    comm::Work allgather(const core::Tensor& out, const core::Tensor& in) override;
    comm::Work broadcast(const core::Tensor&, int) override { return {}; }
    comm::Work all_to_all(const core::Tensor& out, const core::Tensor& in) override;
    comm::Work send(const core::Tensor&, int, int) override { return {}; }
    comm::Work recv(const core::Tensor& t, int, int) override;
    void barrier() override {}
    std::unique_ptr<Communicator> split(int, int) override {
        return std::make_unique<MirrorGroup>(n_);
    }

private:
    int n_;
};

// Bytes of model states per parameter at a stage and data-parallel size (for "the largest model
// that fits"): compute dtype bytes `ct`, Adam-style optimizer with n_states; at stage 3 with hpZ
// over hpz > 1 ranks, plus the secondary partition's ct / hpz.
// bf16_master / bf16_states as EstimateInput's.
double model_state_bytes_per_param(int stage, int world, int ct, int n_states, int64_t hpz = 1,
                                   bool bf16_master = false, bool bf16_states = false);

}  // namespace zs::zero
