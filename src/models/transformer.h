// Transformer: the decoder-only model all families share (GPT-2, Llama/Mistral/SmolLM, Qwen2,
// Mixtral), built from ModelConfig: embedding → L blocks (norm, attention, norm, MLP or MoE, each
// added into an f32 residual stream) → final norm → LM head. Families differ only in config
// (norm kind, positions, MLP kind, biases, tying) and in their HF weight names (weights.h).
//
// Training: forward_backward() runs one micro-batch, computing the loss in row chunks of the
// vocabulary projection (logits of at most `logits_chunk` rows exist at once; the fused
// cross-entropy writes dlogits in place and the head's backward consumes them immediately), and
// accumulates gradients into the bound gradient views. GroupHooks are called around each group
// (embed, blocks.i, head) so ZeRO-3 can gather/release weights and reduce gradients per block.
//
// Inference: forward_tokens() runs a flat batch of tokens from any number of sequences through
// the same blocks; attention goes through a KvAttention that owns the cache layout (contiguous for
// `generate`, paged for the serving engine). Training attends through the core chosen at
// construction (local, or Ulysses under sequence parallelism). attention_core.h describes the
// seam.
#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "models/attention_core.h"
#include "models/config.h"
#include "models/layers/layers.h"
#include "models/params.h"
#include "ops/rope.h"

namespace zs::comm {
class Communicator;
}

namespace zs::models {

struct RunConfig {
    DType compute_dtype = DType::f32;  // activations and matmul inputs: f32 or bf16
    bool activation_checkpointing = false;
    int64_t logits_chunk = 1024;  // rows of logits materialised at once in training
    // Where activations, buffers and scratch live; the bound weights and gradients must be there
    // too (DenseParams or zero::Engine on the same device). Inputs (ids, targets, positions) may
    // be anywhere; what returns to the caller (LossStats, logits) is on the host.
    core::Device device = core::Device::cpu();
    // Tensor parallelism (Megatron-LM, parallel/tensor_parallel.h): this rank holds its share of
    // the attention heads (QKV column-parallel, output row-parallel), of the MLP (up column-,
    // down row-parallel) and of the vocabulary (embedding and LM head by rows, vocabulary-parallel
    // cross-entropy); norms, positions and output biases are replicated. Two all-reduces per
    // block forward and two backward, on the residual stream. nullptr or size 1: none.
    // KV heads: split when tp divides num_key_value_heads; replicated when they divide tp
    // (vLLM): each rank then holds the one KV head its query heads attend to, and the
    // tp / num_key_value_heads ranks holding a head sum its gradient rows after each block's
    // backward (a sub-communicator split from this one: the Transformer constructor is then
    // collective over tp). Mixture of experts: the router is replicated and every expert is split
    // as the dense MLP (one more all-reduce backward per block: the gate weights' gradient).
    comm::Communicator* tp = nullptr;
    // Ulysses sequence parallelism (DeepSpeed-Ulysses): each of the sp ranks runs the model on its
    // own T consecutive tokens of every sequence (rank s: positions [s*T, (s+1)*T), so RoPE and
    // learned positions are the global ones) and attention goes through a UlyssesAttention core
    // over this group (attention_core.h: two all-to-alls forward, two backward per layer). The
    // weights are replicated over sp and each rank's gradients are its tokens' share: the caller
    // sums them over the sp ranks (ZeRO over parallel::Group::dense_dp), and the loss sums over
    // them too. Under tp as well, sp splits this rank's heads. nullptr or size 1: none.
    comm::Communicator* sp = nullptr;
    // Ring attention (parallel/ring.h), alone or under Ulysses (USP: sp above is then the Ulysses
    // group inside one ring rank): the R ring ranks hold the zig-zag chunks r and 2R-1-r (of 2R)
    // of every sequence, and Ulysses rank u holds the u-th T-token slice of its ring rank's two
    // chunks, at their global positions. Attention goes through a RingAttention core (under
    // Ulysses: the Ulysses core's inner one). Gradients and losses as for sp: the caller sums
    // them over every sequence-parallel rank. Needs the two chunks to split evenly (sp * T even)
    // and no sliding window. nullptr or size 1: none.
    comm::Communicator* ring = nullptr;
    // Expert parallelism (DeepSpeed-MoE, MoE models only): this rank holds E / ep of each MoE
    // layer's experts, [ep rank x E / ep, ...), and routed rows travel to their experts with
    // all_to_all_v over this group (models::Moe). Each layer's local experts form a parameter
    // group of their own, "blocks.l.experts" (expert_group(l), after the head group), so ZeRO
    // can reduce and partition them over the ranks holding the same experts (expert data
    // parallelism) and dense parameters over every data-parallel rank; their names keep the
    // global expert index (blocks.l.moe.experts.e.*). Forward and backward call the expert
    // group's hooks inside its block's. nullptr or size 1: none (experts in their block group).
    comm::Communicator* ep = nullptr;
};

struct TrainBatch {
    Tensor input_ids;  // [B, T] i32 or i64
    Tensor targets;    // [B, T] i32 or i64; -100 (ignore_index) rows add no loss
};

struct LossStats {
    double loss_sum = 0;   // sum of token losses (cross-entropy)
    int64_t n_tokens = 0;  // non-ignored targets
    double aux_loss = 0;   // MoE load-balancing loss (unweighted), 0 for dense models
    double z_loss = 0;     // MoE router z-loss (unweighted, RouterStats::z_loss), 0 for dense
    // Wall-clock seconds per phase (wall_clock_breakdown): embedding + blocks forward; the head
    // (final norm, logits, loss and, in training, the head's backward, run chunk by chunk);
    // blocks + embedding backward. Hook waits (ZeRO-3 gathers) count in their phase.
    double forward_s = 0, head_s = 0, backward_s = 0;
    double mean() const { return n_tokens ? loss_sum / static_cast<double>(n_tokens) : 0.0; }
};

// Bytes of activations a training micro-batch needs (from the model's own allocation pattern):
// `saved` stays allocated across steps (block activations, residual stream), `transient` is the
// largest set alive at once on top of it (head or a block's backward).
struct ActivationBytes {
    int64_t saved = 0;
    int64_t transient = 0;
};

class Transformer {
public:
    Transformer(ModelConfig cfg, RunConfig run);
    ~Transformer();
    Transformer(const Transformer&) = delete;
    Transformer& operator=(const Transformer&) = delete;

    const ModelConfig& config() const { return cfg_; }
    // This rank's dimensions under tensor parallelism (heads, KV heads — 1 when they are
    // replicated —, intermediate size, per expert for MoE); the whole model's otherwise.
    const ModelConfig& local_config() const { return lcfg_; }
    int tp_size() const { return tp_size_; }
    int sp_size() const { return sp_ ? sp_->size() : 1; }
    int ring_size() const { return ring_ ? ring_->size() : 1; }
    // This rank's vocabulary rows [first, second) of the embedding and the LM head.
    std::pair<int64_t, int64_t> vocab_range() const { return {v0_, v1_}; }
    // This rank's part of parameter `id` cut from the whole parameter's values `full` (the
    // tensor-parallel-free model's parameter of the same name): rows or columns by the rules in
    // the RunConfig::tp comment; the whole tensor for a replicated one.
    Tensor tp_slice(ParamId id, const Tensor& full) const;
    // The same cut as a description: this rank's part is the concatenation, along dimension `dim`
    // (0 rows, 1 columns), of the whole parameter's index ranges `ranges`; dim -1: the whole
    // tensor (replicated, or no tensor parallelism). Loaders use it to copy only a rank's part.
    struct TpSelection {
        int dim = -1;
        std::vector<std::pair<int64_t, int64_t>> ranges;
    };
    TpSelection tp_selection(ParamId id) const;
    // How many tensor-parallel ranks hold each element of this rank's parameter `id` (with its
    // whole-model gradient after backward), as ranges of its flat elements covering it in order:
    // replicated parameters tp copies, split ones 1, the KV rows of the fused QKV parameter
    // tp / num_key_value_heads when KV heads are replicated. Summing squared gradients / copies
    // over the tp group counts every element of the whole model once (the gradient norm).
    // Without tensor parallelism: one range, 1 copy.
    struct TpCopies {
        int64_t begin = 0, end = 0;  // flat elements [begin, end) of the parameter
        int copies = 1;
    };
    std::vector<TpCopies> tp_copies(ParamId id) const;
    const RunConfig& run_config() const { return run_; }
    const ParamLayout& layout() const { return layout_; }
    ParamBinding& binding() { return binding_; }
    int embed_group() const { return 0; }
    int block_group(int64_t layer) const { return static_cast<int>(layer) + 1; }
    int head_group() const { return static_cast<int>(cfg_.n_layers) + 1; }
    // Expert parallelism: the group of layer l's local experts (-1 without ep).
    int expert_group(int64_t layer) const {
        return ep_ ? static_cast<int>(cfg_.n_layers + 2 + layer) : -1;
    }
    int ep_size() const { return ep_size_; }
    // Expert-parallel inference (serve / generate --ep: every ep rank runs the same batch):
    // forward_tokens' inputs are the same on every ep rank, so each MoE layer dispatches only
    // this rank's 1/ep slice of the rows and all-gathers its outputs over ep (models::Moe), and
    // the experts compute every routed row once over the group instead of ep times. The Engine
    // and follow_forwards set it under ep; training (ranks with different tokens) never reads
    // it. Off by default; no effect without ep. ZS_EP_SLICE=0 in the environment keeps it off
    // (every rank dispatching the whole batch, as before: the benchmark's baseline).
    void set_ep_replicated_inputs(bool on);
    bool ep_replicated_inputs() const { return ep_replicated_; }
    // Bytes the MoE layers sent through all_to_all_v since the last call (then reset).
    int64_t take_a2a_bytes();
    // Rows this rank's experts ran forward (over layers) since the last call (then reset).
    int64_t take_expert_rows();
    // MoE: assignments routed to each expert (over layers) by forward_backward since the last
    // call (then reset); empty for dense models.
    std::vector<double> take_expert_load();
    // The parameter the output projection reads (the token embedding when tied).
    ParamId lm_head_param() const { return lm_head_; }
    // Groups whose gradients the backward of group g writes (the head also writes the token
    // embedding's when tied). Hook order per training micro-batch: BF/AF(embed), BF/AF(block i)
    // ascending, BB(head) [BF(embed) .. AF(embed) when tied] AB(head), BB/AB(block i)
    // descending, BB/AB(embed); every before_* is matched by its after_*.
    std::vector<int> grad_groups(int g) const;

    // One micro-batch: forward, loss and backward. Gradients (+=) of
    //   loss_scale * (sum of token losses * ce_scale + aux_weight * aux_loss_coef * aux_loss)
    // go into the bound gradients; ce_scale is typically 1 / (tokens in the whole step) and
    // aux_weight 1 / (micro-batches in it), so the step's gradient is that of the mean over
    // micro-batches of (mean token loss + coef x aux loss), as transformers + DeepSpeed compute.
    LossStats forward_backward(const TrainBatch& batch, float ce_scale, float loss_scale = 1.0f,
                               GroupHooks* hooks = nullptr, double aux_weight = 1.0);
    // Forward and loss only (evaluation).
    LossStats forward_loss(const TrainBatch& batch, GroupHooks* hooks = nullptr);
    // Training or evaluation mode (torch's model.train() / eval(); training by default): MoE
    // layers use capacity_factor in training, eval_capacity_factor in evaluation, as DeepSpeed's
    // gate does. forward_tokens (inference) always evaluates.
    void set_training(bool training) { training_ = training; }
    // Inference routing hook (speculative MoE pre-scheduling, infer/expert_locality.h): called by
    // forward_tokens after each MoE layer with the layer and its routing, [N, k] i32 on the
    // host. Empty: none.
    using RoutingObserver = std::function<void(int64_t layer, const Tensor& indices)>;
    void set_routing_observer(RoutingObserver f) { routing_observer_ = std::move(f); }
    bool training() const { return training_; }
    // Full logits [B*T, V] f32 on the host for a batch (tests and tools; training never
    // materialises them).
    Tensor forward_logits(const Tensor& input_ids, GroupHooks* hooks = nullptr);

    // Activation memory of forward_backward on [B, T] (zerospeed estimate; tests hold the
    // measured peak to it).
    ActivationBytes activation_bytes(int64_t B, int64_t T) const;
    // The attention core's part of one block's backward on [B, T] (activation_bytes' attention
    // term beside the block's own dqkv, d(att)): the local kernel's scratch, and under Ulysses the
    // head shards the core exchanges for the call.
    int64_t attention_core_bytes(int64_t B, int64_t T) const;

    // ---- The step in pieces a pipeline stage can run (a stage is a range of groups) ----
    // forward_backward() is begin_micro_batch; forward_blocks(all); head_loss;
    // backward_blocks(all). Groups: embed_group() = 0, block_group(l) = l + 1; the head group runs
    // in head_loss.
    struct GroupRange {
        int begin = 0, end = 0;  // [begin, end)
    };
    // Shapes, positions and buffers of a micro-batch [B, T] (targets optional); first call.
    void begin_micro_batch(const TrainBatch& batch);
    // Forward of the groups in `r`: the embedding (group 0) writes residual(0); block l reads
    // residual(l) and writes residual(l + 1). A stage that starts after the embedding fills
    // residual(first block) itself (the activation received from the previous stage).
    void forward_blocks(GroupRange r, GroupHooks& h);
    // Final norm, vocabulary projection and loss from residual(L) in row chunks; with `backward`
    // also the head's backward, leaving d(loss)/d(residual(L)) in residual_grad().
    LossStats head_loss(bool backward, float ce_scale, float loss_scale, GroupHooks& h,
                        Tensor* logits_out = nullptr);
    // Backward of the groups in `r`, last first: reads residual_grad() as the gradient of the
    // range's output and leaves the gradient of its input there (a stage that ends before the head
    // fills residual_grad() itself: the gradient received from the next stage).
    void backward_blocks(GroupRange r, float loss_scale, GroupHooks& h);
    // The backward split in two (Zero Bubble's B and W; usable outside pipelines): with a queue
    // set by defer_weight_grads(&q), backward_blocks computes only the input gradients (and the
    // norms', the embedding's and the LM head's weight gradients, which cost little or, for the
    // head, would hold the [tokens, vocabulary] logits gradient until W) and does not call the
    // blocks' after_backward hooks; weight_backward(r, q, h) later runs the deferred GEMMs and
    // then those hooks. The gradients are the fused backward's, bit for bit.
    void defer_weight_grads(WeightGradQueue* q) { binding_.defer_weight_grads(q); }
    void weight_backward(GroupRange r, WeightGradQueue& q, GroupHooks& h);
    // The bytes a micro-batch [B, T]'s deferred weight gradients of the groups in `r` hold (the
    // queue's copies: each linear layer's input and output gradient in the compute dtype; dense
    // blocks only).
    int64_t deferred_weight_grad_bytes(GroupRange r, int64_t B, int64_t T) const;
    // The residual stream entering block l ([B*T, C] f32; l = L: the head's input).
    Tensor& residual(int64_t l) { return residuals_[static_cast<size_t>(l)]; }
    Tensor& residual_grad();

    // Inference over a flat batch: ids, positions [N] i32. Returns logits [M, V] f32, on the
    // host, for the rows listed in `logit_rows` (e.g. the last token of each sequence). hooks
    // (ZeRO-Inference's weight streaming): before_forward / after_forward around each group's
    // use, in the order embed, blocks, head (with the embed group again when tied); MoE models
    // are refused with hooks.
    Tensor forward_tokens(const Tensor& ids, const Tensor& positions, KvAttention& attn,
                          const std::vector<int64_t>& logit_rows, GroupHooks* hooks = nullptr);

private:
    struct BlockState;
    void build_layout();
    void embed_forward(const Tensor& ids, const Tensor& positions, const Tensor& out) const;
    void block_forward(int64_t l, BlockState& st, const Tensor& in, const Tensor& out, int64_t B,
                       int64_t T, RouterStats* stats);
    void block_backward(int64_t l, BlockState& st, const Tensor& in, const Tensor& dres, int64_t B,
                        int64_t T, double aux_scale, double z_scale);
    LossStats run(const TrainBatch& batch, bool backward, float ce_scale, float loss_scale,
                  GroupHooks* hooks, Tensor* logits_out);
    BlockState& state(int64_t l);
    // Replicated KV heads: views of block l's gradient rows of this rank's KV head (weight, and
    // bias when present), and the sum of this backward's share of them over kv_group_.
    std::vector<Tensor> replicated_kv_grads(int64_t l) const;
    void sum_replicated_kv_grads(int64_t l, const std::vector<Tensor>& before);
    void check_range(GroupRange r, const char* what) const;

    ModelConfig cfg_;
    RunConfig run_;
    ModelConfig lcfg_;                  // this rank's dimensions (tensor parallelism)
    comm::Communicator* tp_ = nullptr;  // set when tp_size_ > 1
    int tp_rank_ = 0, tp_size_ = 1;
    int64_t kv_head0_ = 0;  // this rank's first KV head (of the whole model's)
    int kv_copies_ = 1;     // ranks holding each KV head (tp / NKV when replicated)
    std::unique_ptr<comm::Communicator> kv_group_;  // the kv_copies_ ranks sharing kv_head0_
    comm::Communicator* sp_ = nullptr;              // set when the sp group has > 1 rank
    comm::Communicator* ring_ = nullptr;            // set when the ring group has > 1 rank
    comm::Communicator* ep_ = nullptr;              // set when the ep group has > 1 rank
    int ep_size_ = 1;
    bool ep_replicated_ = false;  // set_ep_replicated_inputs
    int64_t v0_ = 0, v1_ = 0;
    ParamLayout layout_;
    ParamBinding binding_;
    std::unique_ptr<ops::RopeTable> rope_;
    std::unique_ptr<AttentionCore> core_;  // training's core: LocalAttention, or Ulysses (sp)
    ParamId wte_ = kNoParam, wpe_ = kNoParam, lm_head_ = kNoParam;
    Norm final_norm_;
    std::vector<Norm> norm1_, norm2_;
    std::vector<Attention> attn_;
    std::vector<Mlp> mlp_;
    std::vector<Moe> moe_;
    // Activations reused across steps.
    std::vector<std::unique_ptr<BlockState>> blocks_;
    std::unique_ptr<BlockState> scratch_;  // activation checkpointing: the one live block
    std::vector<Tensor> residuals_;        // [L + 1] block inputs (f32 [N, C])
    Tensor positions_;
    RouterStats router_stats_;
    // The micro-batch begin_micro_batch set up.
    int64_t B_ = 0, T_ = 0;
    Tensor flat_ids_, flat_tgt_;
    Tensor dres_;  // d(loss)/d(residual) carried down by backward_blocks
    RoutingObserver routing_observer_;
    bool training_ = true;             // set_training: MoE capacity factor (train / eval)
    double aux_weight_ = 1.0;          // forward_backward's aux_weight, for backward_blocks
    std::vector<double> expert_load_;  // take_expert_load's counts
};

}  // namespace zs::models
