#include "zero/estimate.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "base/error.h"
#include "core/memory.h"
#include "parallel/ring.h"
#include "parallel/ulysses.h"
#include "zero/quantize.h"

namespace zs::zero {

namespace {

// Rank 0 of a size-n group that never communicates: enough for a Transformer to lay out its
// tensor-parallel shard (it asks only rank() and size() when it is built, and splits the group
// once when KV heads are replicated). split() answers rank 0 of a stand-in of `split_n` ranks:
// the size the caller's split gives rank 0's sub-group, which the stand-in cannot learn from the
// colours of ranks it does not run.
class ShapeOnlyGroup final : public comm::Communicator {
public:
    ShapeOnlyGroup(int n, int split_n) : n_(n), split_n_(split_n) {}
    int rank() const override { return 0; }
    int size() const override { return n_; }
    std::string name() const override { return fmt::format("estimate.tp({})", n_); }
    comm::Work allreduce(const core::Tensor&, comm::ReduceOp) override { refuse("allreduce"); }
    comm::Work reduce_scatter(const core::Tensor&, const core::Tensor&, comm::ReduceOp) override {
        refuse("reduce_scatter");
    }
    comm::Work allgather(const core::Tensor&, const core::Tensor&) override { refuse("allgather"); }
    comm::Work broadcast(const core::Tensor&, int) override { refuse("broadcast"); }
    comm::Work all_to_all(const core::Tensor&, const core::Tensor&) override {
        refuse("all_to_all");
    }
    comm::Work send(const core::Tensor&, int, int) override { refuse("send"); }
    comm::Work recv(const core::Tensor&, int, int) override { refuse("recv"); }
    void barrier() override { refuse("barrier"); }
    std::unique_ptr<Communicator> split(int, int) override {
        return std::make_unique<ShapeOnlyGroup>(split_n_, 1);
    }

private:
    [[noreturn]] void refuse(const char* op) const {
        ZS_THROW(NotSupported, "{}: {} on the estimate's stand-in group (it only lays out a model)",
                 name(), op);
    }
    int n_, split_n_;
};

// The rank's dimensions as a whole model: its heads, KV heads and intermediate size
// (Transformer::local_config) and its vocabulary rows.
models::ModelConfig rank_config(const models::Transformer& m) {
    models::ModelConfig c = m.local_config();
    const auto [v0, v1] = m.vocab_range();
    c.vocab_size = v1 - v0;
    return c;
}

models::RunConfig without_tp(models::RunConfig r) {
    r.tp = nullptr;
    return r;
}

// The ranks holding each KV head: tp / num_key_value_heads when tp exceeds them (replicated, the
// size of the kv group), 1 when tp divides them (split).
int kv_ranks(const models::ModelConfig& cfg, int tp) {
    return tp > cfg.n_kv_heads ? static_cast<int>(tp / cfg.n_kv_heads) : 1;
}

// Elements of one block's gradient rows of a rank's replicated KV head: one head of k and one of
// v, in the fused QKV weight (and its bias when present).
int64_t kv_rows_numel(const models::ModelConfig& cfg) {
    return 2 * cfg.head_dim * (cfg.hidden_size + (cfg.qkv_bias ? 1 : 0));
}

// The MLP columns must split evenly (the heads are parallel::check_model's).
void check_estimable(const models::ModelConfig& cfg, int tp) {
    ZS_CHECK_T(ConfigError, cfg.intermediate % tp == 0,
               "estimate: tp = {} does not divide {}'s MLP intermediate size {} "
               "(intermediate_size / n_inner{})",
               tp, cfg.model_type, cfg.intermediate,
               cfg.mlp == models::MlpKind::moe ? ", of each expert" : "");
}

// Activation bytes of one training micro-batch on the rank `model` (tensor parallelism: `local`
// has its dimensions as a whole model). Transformer::activation_bytes of `local`, completed where
// the rank allocates more than it counts (estimate_test holds an MoE model's measured peak to it):
//   MoE: each block also saves the router's logits and probabilities [N, E] f32, the gate
//        weights [N, k] f32 and indices [N, k] i32, and the experts' gathered inputs [k N, C] ct
//        and outputs [k N, C] f32 (activation_bytes counts their MLP states of k N rows). A
//        block's backward (Moe::backward) holds the gate weights' gradient [N, k] f32 and an f32
//        dx accumulator [N, C], then the larger of one expert's backward (at most N rows, a token
//        picks an expert once, fewer under a capacity: an upper bound, as routing is
//        data-dependent) and the router's.
//   Replicated KV heads: a block's backward keeps an f32 copy of its KV head's gradient rows
//        (kv_rows_numel) across the attention's backward (Transformer::block_backward).
// The head and attention terms repeat activation_bytes' (the transient is their maximum).
// The f32 copies one 16-bit product out [Mo, No] = op(a) [Mo, K] op(b) [K, No] makes on a CPU
// without native bf16 (backends/cpu/matmul.cpp, matmul_bf16_via_f32): each 16-bit operand whole
// up to 4 Mi elements, else blocks of max(16, 4 Mi / K) rows or columns; a 16-bit output block
// computed in f32 and rounded once.
int64_t widen_bytes(int64_t Mo, int64_t No, int64_t K, bool out16) {
    constexpr int64_t kBudget = int64_t{4} << 20;
    const int64_t blk = std::max<int64_t>(16, kBudget / std::max<int64_t>(K, 1));
    const int64_t mb = Mo * K <= kBudget ? Mo : std::min(Mo, blk);
    const int64_t nb = No * K <= kBudget ? No : std::min(No, blk);
    return 4 * (mb * K + nb * K + (out16 ? mb * nb : 0));
}

// The largest of every linear layer's forward (y = x W^T), input gradient (dx = dy W) and weight
// gradient (dW = dy^T x) products at the rank's dimensions: N tokens, the head on logits chunks.
int64_t matmul_scratch(const models::ModelConfig& c, int64_t N, int64_t chunk) {
    const int64_t C = c.hidden_size, FF = c.intermediate;
    const int64_t ff_in = c.mlp == models::MlpKind::gelu ? FF : 2 * FF;
    int64_t best = 0;
    auto linear = [&](int64_t M, int64_t in, int64_t out) {
        best = std::max({best, widen_bytes(M, out, in, true), widen_bytes(M, in, out, true),
                         widen_bytes(out, in, M, true)});
    };
    linear(N, C, c.qkv_dim());
    linear(N, c.q_dim(), C);
    linear(N, C, ff_in);
    linear(N, FF, C);
    if (c.mlp == models::MlpKind::moe) linear(N, C, c.moe.n_experts);
    linear(std::min(N, chunk), C, c.vocab_size);
    return best;
}

models::ActivationBytes rank_activations(const models::Transformer& model,
                                         const models::Transformer& local, int64_t B, int64_t T) {
    models::ActivationBytes a = local.activation_bytes(B, T);
    const models::ModelConfig& c = local.config();
    const bool moe = c.mlp == models::MlpKind::moe;
    const int64_t kv_copy =
        kv_ranks(model.config(), model.tp_size()) > 1 ? kv_rows_numel(c) * 4 : 0;
    if (!moe && kv_copy == 0) return a;
    const models::RunConfig& r = local.run_config();
    const int64_t N = B * T, C = c.hidden_size, L = c.n_layers, V = c.vocab_size;
    const int64_t FF = c.intermediate, E = c.moe.n_experts, k = c.moe.top_k;
    const int64_t ct = static_cast<int64_t>(core::dtype_size(r.compute_dtype));
    const int64_t stats = (c.norm == models::NormKind::layernorm ? 2 : 1) * N * 4;
    const int64_t chunk = std::min(N, std::max<int64_t>(1, r.logits_chunk));
    const int64_t head =
        N * C * ct + stats + N * C * ct + N * 4 + chunk * V * 4 + (ct != 4 ? chunk * V * ct : 0);
    const int64_t dres_copy = ct != 4 ? N * C * ct : 0;
    const int64_t attn = dres_copy + N * c.q_dim() * ct + N * c.qkv_dim() * ct +
                         local.attention_core_bytes(B, T) + kv_copy;
    const int64_t ff_in = c.mlp == models::MlpKind::gelu ? FF : 2 * FF;
    int64_t mlp = dres_copy + N * (FF + ff_in) * ct;
    if (moe) {
        const int64_t saved_blocks = r.activation_checkpointing ? 1 : L;
        a.saved += saved_blocks * (2 * N * E * 4 + N * k * (4 + 4) + k * N * C * (ct + 4));
        int64_t rows = N;  // the busiest expert's
        if (c.moe.capacity_factor > 0) {
            const auto cap =
                static_cast<int64_t>(std::ceil(static_cast<double>(k * N) / static_cast<double>(E) *
                                               static_cast<double>(c.moe.capacity_factor)));
            rows = std::min(rows, std::max(cap, c.moe.min_capacity));
        }
        // One expert: dy f32, dx ct (and dy's ct copy), then its MLP's backward (as the dense
        // one's, on its rows) or dx's f32 copy.
        const int64_t expert =
            rows * C * (4 + ct) +
            std::max(rows * ((ct != 4 ? C * ct : 0) + 3 * FF * ct), ct != 4 ? rows * C * 4 : 0);
        // Router: d(probs) (with the load-balancing loss), d(logits) and its ct copy, dx ct, then
        // dx's f32 copy.
        const int64_t router = (c.moe.train_aux_coef() != 0.0f ? N * E * 4 : 0) + N * E * 4 +
                               N * C * ct + (ct != 4 ? std::max(N * E * ct, N * C * 4) : 0);
        mlp = N * k * 4 + N * C * 4 + std::max(expert, router);
    }
    // dres [N, C] f32 and dxn [N, C] ct live across a block's backward. Activation checkpointing's
    // re-run forward writes a discarded [N, C] f32 output, freed before the block's backward
    // (activation_bytes adds it to the backward: it is an upper bound there).
    const int64_t recompute = r.activation_checkpointing ? 2 * N * C * 4 : 0;
    a.transient = std::max({head, N * C * 4 + N * C * ct + std::max(mlp, attn), recompute});
    return a;
}

MemoryEstimate estimate_rank(const models::Transformer& model, const models::Transformer& local,
                             const EstimateInput& in) {
    const parallel::Sizes sz = parallel::resolve(in.sizes, in.world);
    ZS_CHECK_T(NotSupported, sz.pp == 1 && sz.ep == 1,
               "estimate: pipeline and expert parallelism are not estimated yet ({})", sz.str());
    ZS_CHECK_T(ConfigError, model.tp_size() == sz.tp,
               "estimate: the model holds the shard of a tp = {} group, the sizes ask for tp = {}",
               model.tp_size(), sz.tp);
    ZS_CHECK_T(ConfigError,
               model.sp_size() == sz.ulysses() && model.ring_size() == sz.ring &&
                   local.sp_size() == sz.ulysses() && local.ring_size() == sz.ring,
               "estimate: the model runs under ulysses {} x ring {}, the sizes ask for {}",
               model.sp_size(), model.ring_size(), sz.str());
    ZS_CHECK_T(ConfigError,
               in.seq_len % sz.sp == 0 && (sz.ring == 1 || in.seq_len % (2 * sz.sp) == 0),
               "estimate: --seq-len {} is not divisible by {} (sequence parallelism {}: {})",
               in.seq_len, sz.ring > 1 ? 2 * sz.sp : sz.sp, sz.sp,
               sz.ring > 1 ? "2 x ring zig-zag chunks, each split over the Ulysses ranks"
                           : "an equal slice of every sequence per rank");
    check_estimable(model.config(), sz.tp);
    ZS_CHECK_T(ConfigError, in.stage >= 0 && in.stage <= 3, "estimate: ZeRO stage {} is not 0-3",
               in.stage);
    ZS_CHECK_T(ConfigError, in.micro_batch >= 1 && in.seq_len >= 1 && in.grad_accum >= 1,
               "estimate: micro-batch {}, sequence length {} and accumulation {} must be >= 1",
               in.micro_batch, in.seq_len, in.grad_accum);
    const models::ParamLayout& lay = model.layout();
    // ZeRO partitions over the data-parallel group only: the dp x sp ranks holding the same
    // weights (Group::dense_dp).
    const int W = sz.dp * sz.sp;
    const int64_t T = in.seq_len / sz.sp;  // this rank's tokens of every sequence
    const int64_t ct = static_cast<int64_t>(core::dtype_size(model.run_config().compute_dtype));
    const int64_t A = in.grad_accum;
    // f32 compute (or bf16 masters): the master weights are the compute weights.
    const bool alias = ct == 4 || in.bf16_master;
    const int64_t sb = in.bf16_states ? 2 : 4;  // bytes per optimizer state element
    const bool tied = model.config().tied_embeddings;
    const int64_t H = in.hpz_partition_size;
    ZS_CHECK_T(ConfigError, H >= 0 && (H <= 1 || W % H == 0),
               "zero_optimization.zero_hpz_partition_size {} must divide the data-parallel size "
               "{} (hpZ keeps a secondary copy of the weights over sub-groups of that many "
               "consecutive data-parallel ranks; 0 or 1 turns it off)",
               H, W);
    MemoryEstimate e;
    e.dp = W;
    e.tp = sz.tp;
    e.sp = sz.sp;
    e.ring = sz.ring;
    e.tokens_per_rank = T;
    if (in.stage == 3 && H > 1) e.comm.hpz = static_cast<int>(H);
    for (const models::ParamInfo& p : lay.params()) e.n_params += p.numel();
    int64_t max_padded = 0, embed_padded = 0, total_padded = 0, persistent_padded = 0;
    for (int g = 0; g < lay.n_groups(); ++g) {
        const int64_t n = lay.group(g).numel;
        const int64_t P = (n + W - 1) / W * W, S = P / W;
        const bool persistent = P <= in.persistence_threshold;
        max_padded = std::max(max_padded, P);
        total_padded += P;
        if (persistent) persistent_padded += P;
        if (g == model.embed_group()) embed_padded = P;
        switch (in.stage) {
            case 0:
                e.params += P * ct;
                e.grads += P * 4;
                e.master += alias ? 0 : P * 4;
                e.optimizer += in.n_states * P * sb;
                break;
            case 1:
                e.params += P * ct;
                e.grads += P * 4 + S * 4;  // full gradients + the reduced shard
                e.master += alias ? 0 : S * 4;
                e.optimizer += in.n_states * S * sb;
                break;
            case 2:
                e.params += P * ct;
                e.grads += S * 4;
                e.master += alias ? 0 : S * 4;
                e.optimizer += in.n_states * S * sb;
                break;
            default:
                e.params += ct == 4 ? 0 : S * ct;  // f32: the shard is the master shard
                // hpZ: the secondary partition of a group that is released (not persistent).
                if (H > 1 && !persistent) e.secondary += P / H * ct;
                e.grads += S * 4;
                e.master += in.bf16_master ? 0 : S * 4;
                e.optimizer += in.n_states * S * sb;
                break;
        }
        // ZeRO's communication over the dp group, per rank and step (zero/engine.h); each
        // collective moves a group's padded buffer of P = W S elements, so a ring sends
        // (W - 1) S elements for a reduce-scatter or all-gather and twice that for an all-reduce.
        // With A micro-batches per step:
        //   stage 0  all-reduce of the f32 gradients after the last micro-batch   2 (W-1) S 4
        //   stage 1  reduce-scatter of them, then all-gather of the updated        (W-1) S 4
        //            weights                                                     + (W-1) S ct
        //   stage 2  reduce-scatter after every micro-batch's backward, all-gather A (W-1) S 4
        //            of the updated weights                                      + (W-1) S ct
        //   stage 3  reduce-scatter after every micro-batch's backward, and an   A (W-1) S 4
        //            all-gather before each use, k times per step:               + k (W-1) S ct
        //            a block 2 A (forward, backward), the head A (its forward
        //            and backward run back to back), the embedding 2 A (3 A
        //            when the head reads it: tied) less A - 1 (its backward and
        //            the next micro-batch's forward are consecutive uses: it
        //            stays gathered); a persistent group (P <=
        //            stage3_param_persistence_threshold) k = 1
        // (DeepSpeed's 2Ψ / 3Ψ for stages 1-2 / 3 at one micro-batch, as bytes.) Stage 3 is the
        // steady state: the first step, which records the order, gathers the embedding A - 1
        // more times. ZeRO++ replaces a shard's S ct (qwZ, stage 3 gathers) or S 4 (qgZ, stages
        // 2-3 reductions: an all-to-all sends W - 1 of its W shard-sized chunks) bytes by its
        // packed size, codes + 4 bytes per block of 256 (zero/quantize.h).
        // hpZ (stage 3, H > 1, a group that is not persistent): a use inside the backward
        // (Engine::before_backward; the head's forward and backward are one) gathers from the
        // secondary partition over the H ranks of the sub-group, (H - 1) P / H ct, once the
        // partition is valid: from the first release after the step's update on. So of the k
        // gathers, over the dp group stay: a block A (its forwards), the head 1 (its first
        // micro-batch), the embedding 1 (A + 1 tied: the head's use is a forward one), and the
        // rest, a block A, the head A - 1, the embedding A, run over the sub-group.
        const int64_t ring = static_cast<int64_t>(W - 1);
        const bool qw = in.quantized_weights && W > 1 && in.stage == 3;
        const bool qg = in.quantized_gradient_bits > 0 && W > 1 && in.stage >= 2;
        const int64_t weight_shard = qw ? packed_bytes(S, QuantFormat{8, kQuantBlock}) : S * ct;
        const int64_t grad_shard =
            qg ? packed_bytes(S, QuantFormat{in.quantized_gradient_bits, kQuantBlock}) : S * 4;
        switch (in.stage) {
            case 0:
                e.comm.dp_allreduce += 2 * ring * S * 4;
                break;
            case 1:
                e.comm.dp_reduce_scatter += ring * S * 4;
                e.comm.dp_allgather += ring * S * ct;
                break;
            case 2:
                e.comm.dp_reduce_scatter += A * ring * grad_shard;
                e.comm.dp_allgather += ring * S * ct;
                break;
            default: {
                e.comm.dp_reduce_scatter += A * ring * grad_shard;
                const int64_t k = persistent                 ? 1
                                  : g == model.head_group()  ? A
                                  : g == model.embed_group() ? (tied ? 3 : 2) * A - (A - 1)
                                                             : 2 * A;
                const bool sub = H > 1 && !persistent;
                const int64_t k_sub = !sub ? 0 : g == model.head_group() ? A - 1 : A;
                e.comm.dp_allgather += (k - k_sub) * ring * weight_shard;
                e.comm.hpz_allgather += k_sub * (H - 1) * (P / H) * ct;
                break;
            }
        }
    }
    // MoE: the step's expert-load statistics (train::StepStats::expert_load), E f32 all-reduced
    // over the data-parallel group.
    if (model.config().mlp == models::MlpKind::moe && W > 1)
        e.comm.dp_allreduce += 2 * (W - 1) * model.config().moe.n_experts * 4 / W;
    // Activations at the rank's dimensions (the residual stream stays [N, C] on every rank).
    const models::ActivationBytes act = rank_activations(model, local, in.micro_batch, T);
    e.activations = act.saved;
    // Engine transients: stages 2-3 hold the full gradients of the group in backward plus one
    // in flight (and the embedding's, written by a tied head, from the head to the end); stage 3
    // holds the gathered weights of the group in use and the one prefetched.
    int64_t engine = 0;
    if (in.stage >= 2)
        engine += 2 * max_padded * 4 + max_padded / W * 4 + (tied ? embed_padded * 4 : 0);
    // qgZ: the reduction in flight also holds its packed chunks, sent and received (2 W packed
    // shards of the largest group).
    if (in.quantized_gradient_bits > 0 && W > 1 && in.stage >= 2) {
        engine +=
            2 * W *
            packed_bytes(max_padded / W, QuantFormat{in.quantized_gradient_bits, kQuantBlock});
    }
    if (in.stage == 3) {
        // The group in use plus those prefetched (stage3_prefetch_bucket_size), at most
        // stage3_max_live_parameters, plus the persistent small groups.
        int64_t live = std::min({total_padded, max_padded + in.prefetch_numel, in.max_live_numel});
        engine +=
            (std::min(total_padded, live + persistent_padded) + (tied ? embed_padded : 0)) * ct;
        // qwZ: a gather in flight also holds its packed shard and every rank's, (W + 1) S codes
        // plus scales: under 2 bytes per live element for W >= 2.
        if (in.quantized_weights && W > 1) engine += 2 * live;
    }
    e.params += e.secondary;
    e.transient = act.transient + engine;
    if (in.widened_16bit_matmul && ct != 4) {
        const models::ModelConfig& lc = local.config();
        const int64_t N = in.micro_batch * T;
        e.matmul_scratch = matmul_scratch(
            lc, N, std::min(N, std::max<int64_t>(1, local.run_config().logits_chunk)));
        e.transient += e.matmul_scratch;
    }
    e.peak = e.params + e.grads + e.master + e.optimizer + e.activations + e.transient;
    // Tensor parallelism: every micro-batch's all-reduces, 2 (tp - 1) / tp of each sent (ring).
    // Replicated KV heads: the kv group's, 2 (k - 1) / k of each over its k = kv_ranks ranks.
    const TpTraffic t = tp_micro_batch_traffic(model, in.micro_batch, T);
    e.comm.tp_allreduce_calls = A * t.calls;
    e.comm.tp_allreduce = A * (2 * t.bytes * (sz.tp - 1) / sz.tp);
    e.comm.kv_ranks = t.kv_ranks;
    e.comm.tp_kv_allreduce_calls = A * t.kv_calls;
    e.comm.tp_kv_allreduce = A * (2 * t.kv_bytes * (t.kv_ranks - 1) / t.kv_ranks);
    // Sequence parallelism: per layer and micro-batch, forward (twice under checkpointing) and
    // backward.
    const models::ModelConfig& lc = local.config();
    const int64_t L = lc.n_layers, U = sz.ulysses(), R = sz.ring;
    const int64_t fwd = local.run_config().activation_checkpointing ? 2 : 1;
    const auto ctu = static_cast<size_t>(ct);
    if (U > 1) {
        const parallel::UlyssesVolume v = parallel::ulysses_volume(
            in.micro_batch, T, lc.n_heads, lc.n_kv_heads, lc.head_dim, static_cast<int>(U), ctu);
        e.comm.sp_all_to_all = A * L * (fwd * v.forward + v.backward) * (U - 1) / U;
    }
    if (R > 1) {
        const int64_t rep = U > 1 ? parallel::kv_repeat(lc.n_kv_heads, static_cast<int>(U)) : 1;
        const parallel::RingVolume v = parallel::ring_volume(
            in.micro_batch, U * T, lc.n_kv_heads * rep / U, lc.head_dim, static_cast<int>(R), ctu);
        e.comm.ring_send = A * L * (fwd * v.forward + v.backward);
    }
    return e;
}

}  // namespace

double model_state_bytes_per_param(int stage, int world, int ct, int n_states, int64_t hpz,
                                   bool bf16_master, bool bf16_states) {
    const double W = world, opt = (bf16_states ? 2.0 : 4.0) * n_states,
                 master = ct == 4 || bf16_master ? 0.0 : 4.0;
    switch (stage) {
        case 0:
            return ct + 4 + master + opt;
        case 1:
            return ct + 4 + (4 + master + opt) / W;  // full grads + reduced shard
        case 2:
            return ct + (4 + master + opt) / W;
        default:
            return (ct == 4 ? 0.0 : ct / W) + (4 + (ct == 4 ? 4 : master) + opt) / W +
                   (hpz > 1 ? static_cast<double>(ct) / static_cast<double>(hpz) : 0.0);
    }
}

RankModel::RankModel(const models::ModelConfig& cfg, const models::RunConfig& run, int tp,
                     int ulysses, int ring) {
    ZS_CHECK_T(ConfigError, tp >= 1 && ulysses >= 1 && ring >= 1,
               "estimate: tp, sp and ring must be >= 1, got {}, {}, {}", tp, ulysses, ring);
    parallel::Sizes s;
    s.tp = tp;
    s.sp = ulysses * ring;
    s.ring = ring;
    parallel::check_model(
        s, {cfg.model_type, cfg.n_heads, cfg.n_kv_heads, cfg.moe.n_experts, cfg.n_layers});
    check_estimable(cfg, tp);
    models::RunConfig r = without_tp(run);
    if (ulysses > 1) {
        sp_group_ = std::make_unique<ShapeOnlyGroup>(ulysses, 1);
        r.sp = sp_group_.get();
    }
    if (ring > 1) {
        ring_group_ = std::make_unique<ShapeOnlyGroup>(ring, 1);
        r.ring = ring_group_.get();
    }
    if (tp > 1) {
        group_ = std::make_unique<ShapeOnlyGroup>(tp, kv_ranks(cfg, tp));
        r.tp = group_.get();
    }
    model_ = std::make_unique<models::Transformer>(cfg, r);
    if (tp > 1) local_ = std::make_unique<models::Transformer>(rank_config(*model_), without_tp(r));
}

RankModel::~RankModel() = default;

std::string MirrorGroup::name() const { return fmt::format("mirror({})", n_); }

comm::Work MirrorGroup::reduce_scatter(const core::Tensor& out, const core::Tensor& in,
                                       comm::ReduceOp) {
    out.copy_from(in.view({-1}).slice(0, 0, out.numel()).view(out.shape()));
    return {};
}

comm::Work MirrorGroup::allgather(const core::Tensor& out, const core::Tensor& in) {
    for (int i = 0; i < n_; ++i) out.view({n_, -1}).select(0, i).copy_from(in.view({-1}));
    return {};
}

comm::Work MirrorGroup::all_to_all(const core::Tensor& out, const core::Tensor& in) {
    comm::check_all_to_all(out, in, n_);  // as the real groups: same size, any shapes
    out.view(in.shape()).copy_from(in);
    return {};
}

comm::Work MirrorGroup::recv(const core::Tensor& t, int, int) {
    t.fill(0.0);
    return {};
}

MemoryEstimate estimate(const RankModel& model, const EstimateInput& in) {
    return estimate_rank(model.model(), model.local_model(), in);
}

MemoryEstimate estimate(const models::Transformer& model, const EstimateInput& in) {
    if (model.tp_size() == 1) return estimate_rank(model, model, in);
    const models::Transformer local(rank_config(model), without_tp(model.run_config()));
    return estimate_rank(model, local, in);
}

TpTraffic tp_micro_batch_traffic(const models::Transformer& model, int64_t B, int64_t T) {
    if (model.tp_size() == 1) return {};
    const models::ModelConfig& c = model.config();
    const models::RunConfig& r = model.run_config();
    const int64_t N = B * T, C = c.hidden_size, L = c.n_layers;
    const int64_t ct = static_cast<int64_t>(core::dtype_size(r.compute_dtype));
    const int64_t chunk = std::max<int64_t>(1, r.logits_chunk), chunks = (N + chunk - 1) / chunk;
    const int64_t f32_blocks = (r.activation_checkpointing ? 2 : 1) * 2 * L;  // forward (+ rerun)
    const int64_t moe_blocks = c.mlp == models::MlpKind::moe ? L : 0;
    TpTraffic t;
    t.calls = (1 + f32_blocks) + 2 * chunks + (1 + 2 * L) + moe_blocks;
    t.bytes = (1 + f32_blocks) * N * C * 4 + 3 * N * 4 + (1 + 2 * L) * N * C * ct +
              moe_blocks * N * c.moe.top_k * 4;
    t.kv_ranks = kv_ranks(c, model.tp_size());
    if (t.kv_ranks > 1) {
        t.kv_calls = (c.qkv_bias ? 2 : 1) * L;
        t.kv_bytes = L * kv_rows_numel(c) * 4;
    }
    return t;
}

std::string MemoryEstimate::report() const {
    auto b = [](int64_t v) { return core::format_bytes(v); };
    return fmt::format(
        "parameters      {:.2f} M per rank (dp {} x tp {}{})\n"
        "params          {}{}\n"
        "grads           {}\n"
        "master weights  {}\n"
        "optimizer       {}\n"
        "activations     {} (saved across the step)\n"
        "transient       {} (largest extra set alive at once{})\n"
        "peak per rank   {}\n"
        "comm per step   {} sent per rank (dp all-reduce {}, reduce-scatter {}, all-gather {}; "
        "tp all-reduce {} in {} calls{})\n",
        static_cast<double>(n_params) / 1e6, dp, tp,
        sp > 1 ? fmt::format("; sp {} (ring {}), {} tokens per rank", sp, ring, tokens_per_rank)
               : std::string(),
        b(params),
        secondary > 0 ? fmt::format(" (hpZ secondary partition {})", b(secondary)) : std::string(),
        b(grads), b(master), b(optimizer), b(activations), b(transient),
        matmul_scratch > 0
            ? fmt::format("; with the f32 copies of 16-bit matmuls, {}", b(matmul_scratch))
            : std::string(),
        b(peak), b(comm.total()), b(comm.dp_allreduce), b(comm.dp_reduce_scatter),
        comm.hpz_allgather > 0 ? fmt::format("{}, hpZ all-gather over {} ranks {}",
                                             b(comm.dp_allgather), comm.hpz, b(comm.hpz_allgather))
                               : b(comm.dp_allgather),
        b(comm.tp_allreduce), comm.tp_allreduce_calls,
        comm.tp_kv_allreduce_calls > 0
            ? fmt::format("; tp-kv all-reduce {} in {} calls over {} ranks",
                          b(comm.tp_kv_allreduce), comm.tp_kv_allreduce_calls, comm.kv_ranks)
            : std::string());
}

}  // namespace zs::zero
