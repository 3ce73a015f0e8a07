#include "models/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string_view>
#include <tuple>

#include <fmt/format.h>

#include "base/error.h"
#include "base/timer.h"
#include "comm/communicator.h"
#include "ops/activation.h"
#include "ops/embedding.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "parallel/ring.h"
#include "parallel/tensor_parallel.h"
#include "parallel/ulysses.h"

namespace zs::models {

struct Transformer::BlockState {
    Tensor xn1, mean1, rstd1;  // [N, C] ct, [N] f32
    Attention::Saved attn;
    Tensor r1;  // [N, C] f32: residual after attention (ln2's input)
    Tensor xn2, mean2, rstd2;
    Mlp::Saved mlp;
    Moe::Saved moe;
};

Transformer::Transformer(ModelConfig cfg, RunConfig run) : cfg_(std::move(cfg)), run_(run) {
    ZS_CHECK_T(ConfigError, run_.compute_dtype == DType::f32 || run_.compute_dtype == DType::bf16,
               "compute dtype must be f32 or bf16, got {}", to_string(run_.compute_dtype));
    if (cfg_.pos == PosKind::rope) {
        rope_ = std::make_unique<ops::RopeTable>(cfg_.max_positions, cfg_.rope_inv_freq());
    }
    // The training attention core: local, or Ulysses / ring / both under sequence parallelism
    // (below, once this rank's heads are known).
    core_ = std::make_unique<LocalAttention>();
    lcfg_ = cfg_;
    v1_ = cfg_.vocab_size;
    if (run_.tp != nullptr && run_.tp->size() > 1) {
        tp_ = run_.tp;
        tp_rank_ = tp_->rank();
        tp_size_ = tp_->size();
        const int tp = tp_size_;
        const int64_t NKV = cfg_.n_kv_heads;
        ZS_CHECK_T(ConfigError, cfg_.n_heads % tp == 0 && (NKV % tp == 0 || tp % NKV == 0),
                   "tensor parallelism: tp = {} must divide the {} attention heads, and divide the "
                   "{} KV heads or be a multiple of them (num_key_value_heads: split when tp "
                   "divides them, replicated when they divide tp)",
                   tp, cfg_.n_heads, NKV);
        ZS_CHECK_T(ConfigError, cfg_.intermediate % tp == 0,
                   "tensor parallelism: tp = {} must divide intermediate_size {}{}", tp,
                   cfg_.intermediate, cfg_.mlp == MlpKind::moe ? " (of each expert)" : "");
        lcfg_.n_heads /= tp;
        lcfg_.intermediate /= tp;
        if (NKV % tp == 0) {
            lcfg_.n_kv_heads /= tp;
            kv_head0_ = tp_rank_ * lcfg_.n_kv_heads;
        } else {
            // NOTE(tp): KV heads replicated (vLLM): each rank holds one, the head its query heads
            // attend to. With G = n_heads / NKV query heads per KV head and n_heads / tp per rank,
            // rank r's heads [r * n_heads / tp, (r + 1) * n_heads / tp) lie in group
            // r * (n_heads / tp) / G = r / (tp / NKV), since n_heads / tp divides G.
            kv_copies_ = static_cast<int>(tp / NKV);
            lcfg_.n_kv_heads = 1;
            kv_head0_ = tp_rank_ / kv_copies_;
            ZS_ASSERT(tp_rank_ * lcfg_.n_heads / (cfg_.n_heads / NKV) == kv_head0_ &&
                          ((tp_rank_ + 1) * lcfg_.n_heads - 1) / (cfg_.n_heads / NKV) == kv_head0_,
                      "rank {}'s query heads are not all in KV head {}'s group", tp_rank_,
                      kv_head0_);
            // Collective over the tp group: the ranks holding the same KV head.
            kv_group_ = tp_->split(static_cast<int>(kv_head0_), tp_rank_);
        }
        std::tie(v0_, v1_) = parallel::shard_range(cfg_.vocab_size, tp_rank_, tp);
    }
    if (run_.ring != nullptr && run_.ring->size() > 1) {
        ring_ = run_.ring;
        core_ = std::make_unique<RingAttention>(*ring_);
    }
    if (run_.sp != nullptr && run_.sp->size() > 1) {
        sp_ = run_.sp;
        parallel::check_ulysses_heads(
            lcfg_.n_heads, lcfg_.n_kv_heads, sp_->size(),
            tp_ ? fmt::format("tensor-parallel rank {}'s", tp_rank_) : cfg_.model_type + "'s");
        // Under USP the ring core attends inside it.
        core_ = std::make_unique<UlyssesAttention>(*sp_, ring_ ? std::move(core_) : nullptr);
    }
    if (run_.ep != nullptr && run_.ep->size() > 1) {
        ep_ = run_.ep;
        ep_size_ = ep_->size();
        ZS_CHECK_T(ConfigError, cfg_.mlp == MlpKind::moe,
                   "expert parallelism (ep = {}) needs a mixture-of-experts model; {} is dense",
                   ep_size_, cfg_.model_type);
        ZS_CHECK_T(ConfigError, cfg_.moe.n_experts % ep_size_ == 0,
                   "expert parallelism: ep = {} must divide the {} experts (num_local_experts)",
                   ep_size_, cfg_.moe.n_experts);
    }
    build_layout();
    binding_.reset(layout_);
}

Transformer::~Transformer() = default;

void Transformer::build_layout() {
    // Shapes are this rank's (tensor parallelism): heads, intermediate size and vocabulary rows.
    const ModelConfig& c = lcfg_;
    const int64_t C = c.hidden_size, FF = c.intermediate, Vr = v1_ - v0_;
    const bool out_bias = tp_rank_ == 0;  // row-parallel outputs: one rank adds the bias
    // GPT-2's scaled init for the projections into the residual stream.
    const float proj_std =
        c.arch == Arch::gpt2 ? 0.02f / std::sqrt(2.0f * static_cast<float>(c.n_layers)) : 0.02f;
    layout_.add_group("embed");
    wte_ = layout_.add(0, "embed.tokens", {Vr, C}, Init::normal);
    if (c.pos == PosKind::learned) {
        wpe_ = layout_.add(0, "embed.positions", {c.max_positions, C}, Init::normal, 0.01f);
    }
    auto norm = [&](int g, const std::string& name) {
        ParamId w = layout_.add(g, name + ".weight", {C}, Init::ones, 0, false);
        ParamId b =
            c.norm_bias ? layout_.add(g, name + ".bias", {C}, Init::zeros, 0, false) : kNoParam;
        return Norm(c.norm, c.norm_eps, w, b);
    };
    auto group_mlp_params = [&](int g, const std::string& mp, int64_t up_rows, int64_t ff = 0) {
        MlpParams m;
        m.up = layout_.add(g, mp + ".up.weight", {up_rows, C}, Init::normal);
        if (c.mlp_bias)
            m.up_bias = layout_.add(g, mp + ".up.bias", {up_rows}, Init::zeros, 0, false);
        m.down = layout_.add(g, mp + ".down.weight", {C, ff > 0 ? ff : FF}, Init::normal, proj_std);
        if (c.mlp_bias) m.down_bias = layout_.add(g, mp + ".down.bias", {C}, Init::zeros, 0, false);
        return m;
    };
    std::vector<MoeParams> moe_params;  // expert parallelism: experts declared after the head
    for (int64_t l = 0; l < c.n_layers; ++l) {
        std::string pre = "blocks." + std::to_string(l);
        int g = static_cast<int>(l) + 1;
        layout_.add_group(pre);
        norm1_.push_back(norm(g, pre + ".ln1"));
        AttentionParams ap;
        ap.wqkv = layout_.add(g, pre + ".attn.qkv.weight", {c.qkv_dim(), C}, Init::normal);
        if (c.qkv_bias)
            ap.bqkv = layout_.add(g, pre + ".attn.qkv.bias", {c.qkv_dim()}, Init::zeros, 0, false);
        ap.wo = layout_.add(g, pre + ".attn.out.weight", {C, c.q_dim()}, Init::normal, proj_std);
        if (c.proj_bias) ap.bo = layout_.add(g, pre + ".attn.out.bias", {C}, Init::zeros, 0, false);
        ops::AttentionOptions ao;
        ao.scale = c.attention_scale(l);
        ao.window = c.window(l);
        attn_.emplace_back(lcfg_, static_cast<int>(l), ap, rope_.get(), ao, out_bias);
        norm2_.push_back(norm(g, pre + ".ln2"));
        auto mlp_params = [&](const std::string& mp, int64_t up_rows) {
            return group_mlp_params(g, mp, up_rows);
        };
        switch (c.mlp) {
            case MlpKind::gelu:
                mlp_.emplace_back(MlpKind::gelu, FF, mlp_params(pre + ".mlp", FF), c.gelu,
                                  out_bias);
                break;
            case MlpKind::swiglu:
                mlp_.emplace_back(MlpKind::swiglu, FF, mlp_params(pre + ".mlp", 2 * FF),
                                  ops::GeluKind::kTanh, out_bias);
                break;
            case MlpKind::moe: {
                MoeParams mp;
                mp.router =
                    layout_.add(g, pre + ".moe.router.weight", {c.moe.n_experts, C}, Init::normal);
                if (c.moe.shared_intermediate > 0) {
                    const int64_t fs = c.moe.shared_intermediate;
                    mp.shared = group_mlp_params(g, pre + ".moe.shared", 2 * fs, fs);
                    mp.shared_gate =
                        layout_.add(g, pre + ".moe.shared_gate.weight", {1, C}, Init::normal);
                }
                if (ep_ == nullptr) {
                    for (int64_t e = 0; e < c.moe.n_experts; ++e) {
                        mp.experts.push_back(
                            mlp_params(pre + ".moe.experts." + std::to_string(e), 2 * FF));
                    }
                    moe_.emplace_back(lcfg_, std::move(mp), tp_);
                } else {
                    moe_params.push_back(std::move(mp));  // experts after the head group
                }
                break;
            }
        }
    }
    int hg = static_cast<int>(c.n_layers) + 1;
    layout_.add_group("head");
    final_norm_ = norm(hg, "head.norm");
    lm_head_ = c.tied_embeddings ? wte_ : layout_.add(hg, "head.out.weight", {Vr, C}, Init::normal);
    // Expert parallelism: each layer's local experts, a group each, with their global indices.
    for (size_t l = 0; l < moe_params.size(); ++l) {
        const std::string pre = "blocks." + std::to_string(l);
        const int g = expert_group(static_cast<int64_t>(l));
        layout_.add_group(pre + ".experts");
        const int64_t El = c.moe.n_experts / ep_size_, e0 = int64_t{ep_->rank()} * El;
        for (int64_t e = e0; e < e0 + El; ++e) {
            moe_params[l].experts.push_back(
                group_mlp_params(g, pre + ".moe.experts." + std::to_string(e), 2 * FF));
        }
        moe_.emplace_back(lcfg_, std::move(moe_params[l]), tp_, ep_);
    }
}

int64_t Transformer::take_a2a_bytes() {
    int64_t n = 0;
    for (Moe& m : moe_) {
        n += m.a2a_bytes();
        m.reset_a2a_bytes();
    }
    return n;
}

void Transformer::set_ep_replicated_inputs(bool on) {
    const char* env = std::getenv("ZS_EP_SLICE");
    ep_replicated_ = on && !(env != nullptr && std::string_view(env) == "0");
}

int64_t Transformer::take_expert_rows() {
    int64_t n = 0;
    for (Moe& m : moe_) {
        n += m.expert_rows();
        m.reset_expert_rows();
    }
    return n;
}

std::vector<int> Transformer::grad_groups(int g) const {
    if (g == head_group() && cfg_.tied_embeddings) return {g, embed_group()};
    return {g};
}

void Transformer::embed_forward(const Tensor& ids, const Tensor& positions,
                                const Tensor& out) const {
    if (tp_) {
        parallel::vocab_embedding_forward(out, ids, binding_.w(wte_), v0_, *tp_);
    } else {
        ops::embedding_forward(out, ids, binding_.w(wte_));
    }
    if (wpe_ != kNoParam) ops::embedding_forward(out, positions, binding_.w(wpe_), true);
}

void Transformer::block_forward(int64_t l, BlockState& st, const Tensor& in, const Tensor& out,
                                int64_t B, int64_t T, RouterStats* stats) {
    const int64_t N = B * T, C = cfg_.hidden_size;
    const DType ct = run_.compute_dtype;
    const auto li = static_cast<size_t>(l);
    const bool ln = cfg_.norm == NormKind::layernorm;
    const core::Device dev = run_.device;
    ensure(st.xn1, {N, C}, ct, dev);
    ensure(st.rstd1, {N}, DType::f32, dev);
    if (ln) ensure(st.mean1, {N}, DType::f32, dev);
    norm1_[li].forward(binding_, st.xn1, st.mean1, st.rstd1, in);
    ensure(st.r1, {N, C}, DType::f32, dev);
    // Tensor parallelism: each rank adds its heads' share of the output projection; the residual
    // enters the sum once (rank 0) and the all-reduce completes r1 = in + attention(x).
    auto residual_into = [&](const Tensor& dst, const Tensor& src) {
        if (tp_rank_ == 0) {
            dst.copy_from(src);
        } else {
            dst.zero();
        }
    };
    residual_into(st.r1, in);
    attn_[li].forward(binding_, st.attn, st.r1, st.xn1, B, T, positions_, *core_);
    if (tp_) tp_->allreduce(st.r1, comm::ReduceOp::sum).wait();
    ensure(st.xn2, {N, C}, ct, dev);
    ensure(st.rstd2, {N}, DType::f32, dev);
    if (ln) ensure(st.mean2, {N}, DType::f32, dev);
    norm2_[li].forward(binding_, st.xn2, st.mean2, st.rstd2, st.r1);
    residual_into(out, st.r1);
    if (cfg_.mlp == MlpKind::moe) {
        moe_[li].forward(binding_, st.moe, out, st.xn2, stats, training_);
    } else {
        mlp_[li].forward(binding_, st.mlp, out, st.xn2);
    }
    if (tp_) tp_->allreduce(out, comm::ReduceOp::sum).wait();
}

void Transformer::block_backward(int64_t l, BlockState& st, const Tensor& in, const Tensor& dres,
                                 int64_t B, int64_t T, double aux_scale, double z_scale) {
    const int64_t N = B * T, C = cfg_.hidden_size;
    // Replicated KV heads sum their rows' gradient right after the attention's backward, which
    // needs the weight gradient there (weight_backward would have to sum them).
    ZS_CHECK_T(NotSupported, !(kv_group_ && binding_.deferred_weight_grads()),
               "deferred weight gradients with key/value heads replicated across tensor-parallel "
               "ranks ({} kv heads, tp {}) are not implemented",
               cfg_.n_kv_heads, tp_ ? tp_->size() : 1);
    const DType ct = run_.compute_dtype;
    const auto li = static_cast<size_t>(l);
    Tensor dxn = Tensor::empty({N, C}, ct, run_.device);
    if (cfg_.mlp == MlpKind::moe) {
        moe_[li].backward(binding_, st.moe, dxn, dres, st.xn2, &router_stats_, aux_scale, z_scale);
    } else {
        mlp_[li].backward(binding_, st.mlp, dxn, dres, st.xn2);
    }
    // Tensor parallelism: each rank's dx is its share (column-parallel up / QKV): summed.
    if (tp_) tp_->allreduce(dxn, comm::ReduceOp::sum).wait();
    norm2_[li].backward(binding_, dres, dxn, st.r1, st.mean2, st.rstd2);
    // Replicated KV heads: the gradient already accumulated in their rows, before this backward.
    std::vector<Tensor> kv_before;
    if (kv_group_) {
        for (const Tensor& g : replicated_kv_grads(l)) kv_before.push_back(g.clone());
    }
    attn_[li].backward(binding_, st.attn, dxn, dres, st.xn1, B, T, positions_, *core_);
    if (kv_group_) sum_replicated_kv_grads(l, kv_before);
    if (tp_) tp_->allreduce(dxn, comm::ReduceOp::sum).wait();
    norm1_[li].backward(binding_, dres, dxn, in, st.mean1, st.rstd1);
}

std::vector<Tensor> Transformer::replicated_kv_grads(int64_t l) const {
    // This rank's fused rows are [q heads | its one k head | its one v head].
    const AttentionParams& ap = attn_[static_cast<size_t>(l)].params();
    const int64_t b = lcfg_.q_dim(), e = lcfg_.qkv_dim();
    std::vector<Tensor> out{binding_.g(ap.wqkv).slice(0, b, e)};
    if (ap.bqkv != kNoParam) out.push_back(binding_.g(ap.bqkv).slice(0, b, e));
    return out;
}

void Transformer::sum_replicated_kv_grads(int64_t l, const std::vector<Tensor>& before) {
    // NOTE(tp): each of the kv_copies_ ranks holding a KV head back-propagated only its own query
    // heads' share of that head's gradient; the whole model's gradient is their sum. Only this
    // micro-batch's share (after - before) is summed, since earlier micro-batches' are already
    // whole, and the rows are rewritten as before + sum, the same bits on every copy: the
    // replicas take identical optimizer steps and stay equal.
    const std::vector<Tensor> grads = replicated_kv_grads(l);
    for (size_t i = 0; i < grads.size(); ++i) {
        const Tensor& g = grads[i];
        ZS_ASSERT(g.dtype() == DType::f32 && g.is_contiguous(),
                  "replicated KV gradient rows must be contiguous f32, got {}", g.str());
        const int64_t n = g.numel();
        Tensor delta =
            Tensor::empty({n}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
        float* d = delta.data<float>();
        const Tensor g_h = on_host(g), before_h = on_host(before[i]);
        float* gp = g_h.data<float>();
        const float* b = before_h.data<float>();
        for (int64_t k = 0; k < n; ++k) d[k] = gp[k] - b[k];
        kv_group_->allreduce(delta, comm::ReduceOp::sum).wait();
        for (int64_t k = 0; k < n; ++k) gp[k] = b[k] + d[k];
        store_from_host(g, g_h);
    }
}

void Transformer::begin_micro_batch(const TrainBatch& batch) {
    const Tensor& ids = batch.input_ids;
    ZS_CHECK_T(ShapeError, ids.dim() == 2, "input_ids must be [B, T], got {}", ids.shape().str());
    const int64_t B = ids.size(0), T = ids.size(1), N = B * T, C = cfg_.hidden_size;
    const int64_t L = cfg_.n_layers;
    // Sequence parallelism: this rank's T tokens are positions [pos0, pos0 + T) of sequences
    // of sp * T tokens; under ring attention the u-th T-token slice of the ring rank's two
    // zig-zag chunks of sequences of sp * ring * T tokens (RunConfig::ring).
    const int64_t pos0 = sp_ ? int64_t{sp_->rank()} * T : 0;
    const int64_t n_seq = int64_t{sp_size()} * ring_size();
    ZS_CHECK_T(ShapeError, n_seq * T <= cfg_.max_positions,
               "sequence length {}{} exceeds the model's max_position_embeddings {}", n_seq * T,
               n_seq > 1 ? fmt::format(" ({} sequence-parallel ranks x {} tokens)", n_seq, T)
                         : std::string(),
               cfg_.max_positions);
    std::vector<int64_t> ring_pos;
    if (ring_) {
        ZS_CHECK_T(ShapeError, (int64_t{sp_size()} * T) % 2 == 0,
                   "ring attention: each ring rank's {} x {} tokens must split into two equal "
                   "zig-zag chunks",
                   sp_size(), T);
        ring_pos = parallel::zigzag_positions(ring_->rank(), ring_->size(), n_seq * T);
    }
    if (batch.targets.defined()) {
        ZS_CHECK_T(ShapeError, batch.targets.shape() == ids.shape(),
                   "targets {} must have the shape of input_ids {}", batch.targets.shape().str(),
                   ids.shape().str());
    }
    B_ = B;
    T_ = T;
    const core::Device dev = run_.device;
    ensure(positions_, {N}, DType::i32, dev, core::MemCategory::buffers);
    // Positions are built on the host (the tensor itself on the CPU) and copied to the device.
    const Tensor pos = on_host(positions_);
    for (int64_t i = 0; i < N; ++i) {
        const int64_t p = ring_ ? ring_pos[static_cast<size_t>(pos0 + i % T)] : pos0 + i % T;
        pos.data<int32_t>()[i] = static_cast<int32_t>(p);
    }
    store_from_host(positions_, pos);
    // The caller's ids and targets, on the model's device (no copy when they are there already).
    flat_ids_ = ids.contiguous().view({N}).to(dev);
    flat_tgt_ = batch.targets.defined() ? batch.targets.contiguous().view({N}).to(dev) : Tensor();
    residuals_.resize(static_cast<size_t>(L + 1));
    for (Tensor& r : residuals_) ensure(r, {N, C}, DType::f32, dev);
    dres_ = Tensor();
    if (cfg_.mlp == MlpKind::moe) router_stats_.reset(cfg_.moe.n_experts);
    if (run_.activation_checkpointing) {
        if (!scratch_) scratch_ = std::make_unique<BlockState>();
        blocks_.clear();
    } else {
        while (static_cast<int64_t>(blocks_.size()) < L)
            blocks_.push_back(std::make_unique<BlockState>());
    }
}

Transformer::BlockState& Transformer::state(int64_t l) {
    return run_.activation_checkpointing ? *scratch_ : *blocks_[static_cast<size_t>(l)];
}

void Transformer::check_range(GroupRange r, const char* what) const {
    ZS_CHECK_T(ShapeError, r.begin >= 0 && r.begin <= r.end && r.end <= head_group(),
               "{}: groups [{}, {}) must lie within [0, {}) (the head group {} runs in "
               "head_loss)",
               what, r.begin, r.end, head_group(), head_group());
    ZS_CHECK_T(ShapeError, B_ > 0, "{}: call begin_micro_batch first", what);
}

void Transformer::forward_blocks(GroupRange r, GroupHooks& h) {
    check_range(r, "forward_blocks");
    RouterStats* stats = cfg_.mlp == MlpKind::moe ? &router_stats_ : nullptr;
    for (int g = r.begin; g < r.end; ++g) {
        h.before_forward(g);
        if (g == embed_group()) {
            embed_forward(flat_ids_, positions_, residuals_[0]);
        } else {
            const int64_t l = g - 1;
            const int eg = expert_group(l);
            if (eg >= 0) h.before_forward(eg);
            block_forward(l, state(l), residuals_[static_cast<size_t>(l)],
                          residuals_[static_cast<size_t>(l + 1)], B_, T_, stats);
            if (eg >= 0) h.after_forward(eg);
        }
        h.after_forward(g);
    }
}

LossStats Transformer::head_loss(bool backward, float ce_scale, float loss_scale, GroupHooks& h,
                                 Tensor* logits_out) {
    ZS_CHECK_T(ShapeError, B_ > 0, "head_loss: call begin_micro_batch first");
    ZS_CHECK_T(ShapeError, !backward || flat_tgt_.defined(), "head_loss: backward needs targets");
    const int64_t N = B_ * T_, C = cfg_.hidden_size, V = cfg_.vocab_size, L = cfg_.n_layers;
    const int64_t Vr = v1_ - v0_;  // this rank's vocabulary columns (all without tp)
    const DType ct = run_.compute_dtype;
    ZS_CHECK_T(NotSupported, !(tp_ && logits_out),
               "full logits under tensor parallelism are not gathered (each rank holds its "
               "vocabulary columns)");
    LossStats out;
    // The vocabulary projection and loss in row chunks. In training the head's forward and
    // backward run back to back, so it is one backward-phase use.
    if (backward) {
        h.before_backward(head_group());
    } else {
        h.before_forward(head_group());
    }
    if (cfg_.tied_embeddings) h.before_forward(embed_group());
    const Tensor& rL = residuals_[static_cast<size_t>(L)];
    const core::Device dev = run_.device;
    Tensor xf = Tensor::empty({N, C}, ct, dev), meanf, rstdf = Tensor::empty({N}, DType::f32, dev);
    if (cfg_.norm == NormKind::layernorm) meanf = Tensor::empty({N}, DType::f32, dev);
    final_norm_.forward(binding_, xf, meanf, rstdf, rL);
    const Tensor& wout = binding_.w(lm_head_);
    Tensor dxf = backward ? Tensor::empty({N, C}, ct, dev) : Tensor();
    if (logits_out) *logits_out = Tensor::empty({N, V}, DType::f32, dev);
    const int64_t chunk = std::max<int64_t>(1, run_.logits_chunk);
    Tensor losses = Tensor::empty({N}, DType::f32, dev, core::MemCategory::buffers);
    for (int64_t a = 0; a < N; a += chunk) {
        int64_t b = std::min(N, a + chunk);
        Tensor logits = logits_out ? logits_out->slice(0, a, b)
                                   : Tensor::empty({b - a, Vr}, DType::f32, dev,
                                                   core::MemCategory::activations);
        linear(binding_, lm_head_, logits, xf.slice(0, a, b));
        if (!flat_tgt_.defined()) continue;
        if (tp_) {
            out.n_tokens += parallel::vocab_cross_entropy(
                losses.slice(0, a, b), backward ? logits : Tensor(), logits,
                flat_tgt_.slice(0, a, b), v0_, V, *tp_, -100, ce_scale * loss_scale);
        } else {
            ops::CrossEntropyOptions co{-100, ce_scale * loss_scale};
            out.n_tokens += ops::cross_entropy(losses.slice(0, a, b), backward ? logits : Tensor(),
                                               logits, flat_tgt_.slice(0, a, b), co);
        }
        if (backward) {
            Tensor dl = logits.dtype() == ct ? logits : logits.to(ct);
            ops::linear_backward(dxf.slice(0, a, b), binding_.g(lm_head_), Tensor(), dl,
                                 xf.slice(0, a, b), wout);
        }
    }
    if (flat_tgt_.defined()) {
        const Tensor losses_h = on_host(losses);
        const float* lp = losses_h.data<float>();
        for (int64_t i = 0; i < N; ++i) out.loss_sum += lp[i];
    }
    if (cfg_.mlp == MlpKind::moe) {
        out.aux_loss = router_stats_.aux_loss(cfg_.moe.n_experts);
        out.z_loss = router_stats_.z_loss();
    }
    if (!backward) {
        if (cfg_.tied_embeddings) h.after_forward(embed_group());
        h.after_forward(head_group());
        return out;
    }
    // Each rank's dxf is its vocabulary columns' share (the LM head is vocabulary-parallel).
    if (tp_) tp_->allreduce(dxf, comm::ReduceOp::sum).wait();
    // d(loss)/d(residual L), which backward_blocks carries down.
    dres_ = Tensor::zeros({N, C}, DType::f32, dev);
    final_norm_.backward(binding_, dres_, dxf, rL, meanf, rstdf);
    // The head's buffers are done: release them before the blocks' backward (peak memory).
    xf = dxf = meanf = rstdf = losses = Tensor();
    if (cfg_.tied_embeddings) h.after_forward(embed_group());
    h.after_backward(head_group());
    return out;
}

Tensor& Transformer::residual_grad() {
    const int64_t N = B_ * T_, C = cfg_.hidden_size;
    if (!dres_.defined()) dres_ = Tensor::zeros({N, C}, DType::f32, run_.device);
    return dres_;
}

void Transformer::backward_blocks(GroupRange r, float loss_scale, GroupHooks& h) {
    check_range(r, "backward_blocks");
    const int64_t N = B_ * T_, C = cfg_.hidden_size;
    Tensor& dres = residual_grad();
    // d(total)/d(p[n, e]) of loss_scale * coef * aux: E * sel_count_e / n_rows^2 per unit.
    double aux_scale = 0;
    if (cfg_.mlp == MlpKind::moe && cfg_.moe.train_aux_coef() != 0.0f) {
        double rows = static_cast<double>(router_stats_.n_rows);
        aux_scale = static_cast<double>(loss_scale) * aux_weight_ * cfg_.moe.train_aux_coef() *
                    static_cast<double>(cfg_.moe.n_experts) / (rows * rows);
    }
    // d(total)/d(z_sum) of loss_scale * z_coef * z_sum / n_rows.
    double z_scale = 0;
    if (cfg_.mlp == MlpKind::moe && cfg_.moe.z_loss_coef != 0.0f && router_stats_.n_rows > 0) {
        z_scale = static_cast<double>(loss_scale) * aux_weight_ * cfg_.moe.z_loss_coef /
                  static_cast<double>(router_stats_.n_rows);
    }
    for (int g = r.end - 1; g >= r.begin; --g) {
        h.before_backward(g);
        if (g == embed_group()) {
            if (tp_) {
                parallel::vocab_embedding_backward(binding_.g(wte_), dres, flat_ids_, v0_);
            } else {
                ops::embedding_backward(binding_.g(wte_), dres, flat_ids_);
            }
            if (wpe_ != kNoParam) ops::embedding_backward(binding_.g(wpe_), dres, positions_);
        } else {
            const int64_t l = g - 1;
            const int eg = expert_group(l);
            if (eg >= 0) h.before_backward(eg);
            const Tensor& in = residuals_[static_cast<size_t>(l)];
            if (run_.activation_checkpointing) {
                // Re-run this block's forward to rebuild its activations (its output is
                // discarded; the router statistics were already counted in the first forward).
                Tensor o =
                    Tensor::empty({N, C}, DType::f32, run_.device, core::MemCategory::buffers);
                block_forward(l, *scratch_, in, o, B_, T_, nullptr);
            }
            block_backward(l, state(l), in, dres, B_, T_, aux_scale, z_scale);
            // With the weight gradients deferred, the block's are complete only after W.
            if (binding_.deferred_weight_grads() != nullptr) continue;
            if (eg >= 0) h.after_backward(eg);
        }
        h.after_backward(g);
    }
}

void Transformer::weight_backward(GroupRange r, WeightGradQueue& q, GroupHooks& h) {
    check_range(r, "weight_backward");
    q.run();
    for (int g = r.end - 1; g >= r.begin; --g) {
        if (g == embed_group()) continue;  // the lookup's gradient is complete after B
        const int eg = expert_group(g - 1);
        if (eg >= 0) h.after_backward(eg);
        h.after_backward(g);
    }
}

LossStats Transformer::run(const TrainBatch& batch, bool backward, float ce_scale, float loss_scale,
                           GroupHooks* hooks, Tensor* logits_out) {
    GroupHooks none;
    GroupHooks& h = hooks ? *hooks : none;
    begin_micro_batch(batch);
    const GroupRange all{0, head_group()};
    Timer phase;
    forward_blocks(all, h);
    const double forward_s = phase.seconds();
    phase.reset();
    LossStats out = head_loss(backward, ce_scale, loss_scale, h, logits_out);
    out.forward_s = forward_s;
    out.head_s = phase.seconds();
    if (!backward) return out;
    phase.reset();
    backward_blocks(all, loss_scale, h);
    out.backward_s = phase.seconds();
    return out;
}

LossStats Transformer::forward_backward(const TrainBatch& batch, float ce_scale, float loss_scale,
                                        GroupHooks* hooks, double aux_weight) {
    ZS_CHECK_T(ShapeError, batch.targets.defined(), "forward_backward needs targets");
    aux_weight_ = aux_weight;
    LossStats out = run(batch, true, ce_scale, loss_scale, hooks, nullptr);
    aux_weight_ = 1.0;
    if (cfg_.mlp == MlpKind::moe) {
        expert_load_.resize(router_stats_.sel_count.size(), 0.0);
        for (size_t e = 0; e < expert_load_.size(); ++e)
            expert_load_[e] += router_stats_.sel_count[e];
    }
    return out;
}

std::vector<double> Transformer::take_expert_load() {
    std::vector<double> out = std::move(expert_load_);
    expert_load_.clear();
    return out;
}

LossStats Transformer::forward_loss(const TrainBatch& batch, GroupHooks* hooks) {
    return run(batch, false, 1.0f, 1.0f, hooks, nullptr);
}

Tensor Transformer::forward_logits(const Tensor& input_ids, GroupHooks* hooks) {
    Tensor logits;
    run(TrainBatch{input_ids, Tensor()}, false, 1.0f, 1.0f, hooks, &logits);
    return on_host(logits);
}

int64_t Transformer::deferred_weight_grad_bytes(GroupRange r, int64_t B, int64_t T) const {
    check_range(r, "deferred_weight_grad_bytes");
    ZS_CHECK_T(NotSupported, cfg_.mlp != MlpKind::moe,
               "deferred weight gradients of mixture-of-experts blocks are not counted");
    // This rank's widths (tensor parallelism): qkv [C -> QKV], out [q_dim -> C], up [C -> FF or
    // 2 FF], down [FF -> C]; each keeps its input and its output gradient.
    const ModelConfig& c = lcfg_;
    const int64_t N = B * T, C = c.hidden_size, FF = c.intermediate;
    const int64_t up = c.mlp == MlpKind::gelu ? FF : 2 * FF;
    const int64_t per_block = N * ((C + c.qkv_dim()) + (c.q_dim() + C) + (C + up) + (FF + C)) *
                              static_cast<int64_t>(core::dtype_size(run_.compute_dtype));
    int64_t blocks = 0;
    for (int g = r.begin; g < r.end; ++g) blocks += g == embed_group() ? 0 : 1;
    return blocks * per_block;
}

int64_t Transformer::attention_core_bytes(int64_t B, int64_t T) const {
    const int64_t N = B * T, ct = static_cast<int64_t>(core::dtype_size(run_.compute_dtype));
    // The local kernel's backward scratch: f32 per query row and per q element, over one call's
    // queries (under ring attention one zig-zag chunk, half of them).
    const int64_t rows = ring_ ? T / 2 : T;
    const int64_t kernel =
        B * cfg_.n_heads * rows * 4 + 2 * B * cfg_.n_heads * T * cfg_.head_dim * 4;
    if (!sp_) return kernel;
    // UlyssesAttention::backward: the head shards of q, k, v, output and dout (the rank's T
    // tokens of every head in size, the repeated KV heads R times) with one sequence's exchange
    // chunks; then with dq, dk, dv's head shards and the inner core's scratch; then, those freed,
    // dq, dk, dv's with one sequence's chunks. Nothing is kept between calls.
    const int64_t R = parallel::kv_repeat(cfg_.n_kv_heads, sp_->size());
    const int64_t qkv_h = N * (cfg_.n_heads + 2 * cfg_.n_kv_heads * R) * cfg_.head_dim * ct;
    const int64_t all_h = qkv_h + 2 * N * cfg_.q_dim() * ct;
    return std::max({all_h + all_h / B, all_h + qkv_h + kernel, qkv_h + qkv_h / B});
}

ActivationBytes Transformer::activation_bytes(int64_t B, int64_t T) const {
    // Mirrors run() and the layers' allocations (dense MLP; MoE is approximated by its experts'
    // share of tokens, as routing is data-dependent).
    const int64_t N = B * T, C = cfg_.hidden_size, L = cfg_.n_layers, V = cfg_.vocab_size;
    const int64_t ct = static_cast<int64_t>(core::dtype_size(run_.compute_dtype));
    const bool ln = cfg_.norm == NormKind::layernorm;
    const int64_t ff_in = cfg_.mlp == MlpKind::gelu ? cfg_.intermediate : 2 * cfg_.intermediate;
    const int64_t k_share = cfg_.mlp == MlpKind::moe ? cfg_.moe.top_k : 1;
    const int64_t stats = (ln ? 2 : 1) * N * 4;
    // One block's saved activations (BlockState).
    const int64_t block = N * C * ct + stats + N * cfg_.qkv_dim() * ct + N * cfg_.q_dim() * ct +
                          B * cfg_.n_heads * T * 4 + N * C * 4 + N * C * ct + stats +
                          k_share * N * (ff_in + cfg_.intermediate) * ct;
    ActivationBytes a;
    a.saved = (L + 1) * N * C * 4 + N * 4 + (run_.activation_checkpointing ? block : L * block);
    // Head: xf, statistics, dxf, losses, one logits chunk (and its compute-dtype copy).
    const int64_t chunk = std::min(N, std::max<int64_t>(1, run_.logits_chunk));
    const int64_t head =
        N * C * ct + stats + N * C * ct + N * 4 + chunk * V * 4 + (ct != 4 ? chunk * V * ct : 0);
    // A block's backward: dres and dxn live; then the larger of the MLP's and the attention's
    // temporaries (a compute-dtype copy of dres when ct is bf16; attention's kernel scratch).
    const int64_t dres_copy = ct != 4 ? N * C * ct : 0;
    const int64_t mlp = dres_copy + k_share * N * (cfg_.intermediate + ff_in) * ct;
    const int64_t attn =
        dres_copy + N * cfg_.q_dim() * ct + N * cfg_.qkv_dim() * ct + attention_core_bytes(B, T);
    // Checkpointing re-runs the block into the one scratch BlockState (already in `saved`): only
    // the discarded output is extra.
    const int64_t recompute = run_.activation_checkpointing ? N * C * 4 : 0;
    const int64_t block_bwd = N * C * 4 + N * C * ct + std::max(mlp, attn) + recompute;
    a.transient = std::max(head, block_bwd);
    if (ring_) {
        // The ring core's buffers (parallel/ring.h), kept across steps. The block it attends
        // over holds sp T tokens of NH / sp query heads and NKV R / sp KV heads under Ulysses (T,
        // NH and NKV without): q-sized q_el = N NH HS elements, k+v-sized kv_el = 2 N NKV R HS.
        // Forward: two K/V blocks (held, arriving) ct, the f32 output accumulator, one chunk's f32
        // partial output and lse. Backward: two f32 dK/dV accumulators, one chunk's dq and a
        // block's dk, dv in ct.
        const int64_t R = sp_ ? parallel::kv_repeat(cfg_.n_kv_heads, sp_->size()) : 1;
        const int64_t q_el = N * cfg_.q_dim(), kv_el = 2 * N * cfg_.n_kv_heads * R * cfg_.head_dim;
        a.saved += 2 * kv_el * ct + q_el * 4 + q_el / 2 * 4 + B * cfg_.n_heads * T / 2 * 4 +
                   2 * kv_el * 4 + q_el / 2 * ct + kv_el * ct;
    }
    return a;
}

Tensor Transformer::forward_tokens(const Tensor& ids, const Tensor& positions, KvAttention& kv,
                                   const std::vector<int64_t>& logit_rows, GroupHooks* hooks) {
    ZS_CHECK_T(NotSupported, !hooks || cfg_.mlp != MlpKind::moe,
               "weight streaming (group hooks) in inference is not implemented for MoE models");
    GroupHooks none;
    GroupHooks& h = hooks ? *hooks : none;
    // Under tensor parallelism the heads are this rank's (the KV cache is built from
    // local_config()), each output projection's partial sum is all-reduced before it joins the
    // residual, and the vocabulary-parallel logits are all-gathered so every rank samples alike.
    const ModelConfig& lc = lcfg_;
    const int64_t N = ids.numel(), C = cfg_.hidden_size;
    const DType ct = run_.compute_dtype;
    ZS_CHECK_T(ShapeError, positions.numel() == N, "positions ({}) must match ids ({})",
               positions.numel(), N);
    const core::Device dev = run_.device;
    Tensor r = Tensor::empty({N, C}, DType::f32, dev, core::MemCategory::buffers);
    // The caller's ids and positions, on the model's device (no copy when already there).
    const Tensor ids_d = ids.to(dev), positions_d = positions.to(dev);
    h.before_forward(embed_group());
    embed_forward(ids_d, positions_d, r);
    h.after_forward(embed_group());
    Tensor xn = Tensor::empty({N, C}, ct, dev, core::MemCategory::buffers);
    // Training's attention blocks over the KV cache's core, as one flat batch (B = 1, T = N);
    // their buffers (qkv, att) are this forward's, reused by every layer.
    Attention::Saved as;
    ensure(as.qkv, {N, lc.qkv_dim()}, ct, dev, core::MemCategory::buffers);
    ensure(as.att, {N, lc.q_dim()}, ct, dev, core::MemCategory::buffers);
    // The row-parallel outputs' partial sums (tensor parallelism only).
    Tensor part =
        tp_ ? Tensor::empty({N, C}, DType::f32, dev, core::MemCategory::buffers) : Tensor();
    auto reduce_into_residual = [&] {
        tp_->allreduce(part, comm::ReduceOp::sum).wait();
        ops::add(r, r, part);
    };
    Mlp::Saved ms;
    Moe::Saved moes;
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
        const auto li = static_cast<size_t>(l);
        h.before_forward(block_group(l));
        // Each block normalizes its own input (PreNorm): a decode's quantized products fold the
        // RMSNorm into their region instead of running it serially between regions.
        const Tensor& attn_out = tp_ ? part : r;
        if (tp_) part.zero();
        attn_[li].forward(binding_, as, attn_out, xn, 1, N, positions_d, kv, {&norm1_[li], r});
        if (tp_) reduce_into_residual();
        const Tensor& mlp_out = tp_ ? part : r;
        if (tp_) part.zero();
        if (cfg_.mlp == MlpKind::moe) {
            norm2_[li].forward(binding_, xn, Tensor(), Tensor(), r);
            moe_[li].forward(binding_, moes, mlp_out, xn, nullptr, false, ep_replicated_);
            if (routing_observer_) routing_observer_(l, on_host(moes.indices));
        } else {
            mlp_[li].forward(binding_, ms, mlp_out, xn, {&norm2_[li], r});
        }
        if (tp_) reduce_into_residual();
        h.after_forward(block_group(l));
    }
    auto M = static_cast<int64_t>(logit_rows.size());
    Tensor rows = Tensor::empty({M, C}, DType::f32, dev, core::MemCategory::buffers);
    for (int64_t i = 0; i < M; ++i) {
        int64_t src = logit_rows[static_cast<size_t>(i)];
        ZS_CHECK_T(ShapeError, src >= 0 && src < N, "logit row {} outside [0, {})", src, N);
        rows.select(0, i).copy_from(r.select(0, src));
    }
    Tensor xf = Tensor::empty({M, C}, ct, dev, core::MemCategory::buffers);
    h.before_forward(head_group());
    if (cfg_.tied_embeddings) h.before_forward(embed_group());
    final_norm_.forward(binding_, xf, Tensor(), Tensor(), rows);
    const int64_t V = cfg_.vocab_size;
    Tensor logits = Tensor::empty({M, V}, DType::f32, dev);
    if (!tp_) {
        linear(binding_, lm_head_, logits, xf);
        if (cfg_.tied_embeddings) h.after_forward(embed_group());
        h.after_forward(head_group());
        return on_host(logits);
    }
    // Each rank's columns, padded to the largest shard, all-gathered and laid side by side.
    const int64_t per = (V + tp_size_ - 1) / tp_size_;
    Tensor mine = Tensor::zeros({M, per}, DType::f32, dev, core::MemCategory::buffers);
    ops::linear_forward(mine.slice(1, 0, v1_ - v0_), xf, binding_.w(lm_head_));
    Tensor all = Tensor::empty({tp_size_, M, per}, DType::f32, dev, core::MemCategory::buffers);
    tp_->allgather(all, mine).wait();
    for (int rk = 0; rk < tp_size_; ++rk) {
        const auto [b, e] = parallel::shard_range(V, rk, tp_size_);
        if (e > b) logits.slice(1, b, e).copy_from(all.select(0, rk).slice(1, 0, e - b));
    }
    if (cfg_.tied_embeddings) h.after_forward(embed_group());
    h.after_forward(head_group());
    return on_host(logits);
}

namespace {

// How a parameter is divided over the tensor-parallel ranks (the RunConfig::tp rules), from its
// name.
enum class TpSplit {
    replicated,    // norms, positions, output biases, the MoE router: the whole tensor
    vocab_rows,    // token embedding, LM head: rows [v0, v1)
    qkv_heads,     // fused QKV rows: this rank's query heads and its KV heads
    head_columns,  // attention output: the columns of this rank's heads
    ff_rows,       // MLP / expert up (gelu: FF rows; gate|up: this rank's rows of each half)
    ff_columns,    // MLP / expert down: this rank's intermediate columns
};

TpSplit tp_split(const std::string& name) {
    auto ends = [&](const char* suffix) { return name.ends_with(suffix); };
    if (ends("embed.tokens") || ends("head.out.weight")) return TpSplit::vocab_rows;
    if (ends(".attn.qkv.weight") || ends(".attn.qkv.bias")) return TpSplit::qkv_heads;
    if (ends(".attn.out.weight")) return TpSplit::head_columns;
    // The dense MLP (blocks.i.mlp.up) and every expert (blocks.i.moe.experts.e.up).
    if (ends(".up.weight") || ends(".up.bias")) return TpSplit::ff_rows;
    if (ends(".down.weight")) return TpSplit::ff_columns;
    return TpSplit::replicated;
}

}  // namespace

Transformer::TpSelection Transformer::tp_selection(ParamId id) const {
    const ParamInfo& p = layout_.param(id);
    if (tp_size_ == 1) return {};
    const int r = tp_rank_;
    const int64_t FF = cfg_.intermediate, f = lcfg_.intermediate;
    switch (tp_split(p.name)) {
        case TpSplit::replicated:
            return {};
        case TpSplit::vocab_rows:
            return {0, {{v0_, v1_}}};
        case TpSplit::qkv_heads: {
            // Fused rows [q heads | k heads | v heads]: this rank's query heads, and its KV heads
            // from kv_head0_ (its own share, or the one replicated head).
            const int64_t q = lcfg_.q_dim(), kv = lcfg_.kv_dim(), k0 = kv_head0_ * cfg_.head_dim;
            const int64_t Q = cfg_.q_dim(), KV = cfg_.kv_dim();
            return {0,
                    {{r * q, (r + 1) * q}, {Q + k0, Q + k0 + kv}, {Q + KV + k0, Q + KV + k0 + kv}}};
        }
        case TpSplit::head_columns: {
            const int64_t q = lcfg_.q_dim();
            return {1, {{r * q, (r + 1) * q}}};
        }
        case TpSplit::ff_rows:
            if (cfg_.mlp == MlpKind::gelu) return {0, {{r * f, (r + 1) * f}}};
            return {0, {{r * f, (r + 1) * f}, {FF + r * f, FF + (r + 1) * f}}};
        case TpSplit::ff_columns:
            return {1, {{r * f, (r + 1) * f}}};
    }
    return {};
}

Tensor Transformer::tp_slice(ParamId id, const Tensor& full) const {
    const ParamInfo& p = layout_.param(id);
    const TpSelection sel = tp_selection(id);
    Tensor out;
    if (sel.dim < 0) {
        out = full.contiguous();
    } else {
        int64_t n = 0;
        for (const auto& [b, e] : sel.ranges) n += e - b;
        Shape s = full.shape();
        ZS_CHECK_T(ShapeError, sel.dim < s.ndim(), "tp_slice: {} from {} has no dimension {}",
                   p.name, s.str(), sel.dim);
        s[sel.dim] = n;
        out = Tensor::empty(s, full.dtype(), full.device());
        int64_t at = 0;
        for (const auto& [b, e] : sel.ranges) {
            out.slice(sel.dim, at, at + (e - b)).copy_from(full.slice(sel.dim, b, e));
            at += e - b;
        }
    }
    ZS_CHECK_T(ShapeError, out.shape() == p.shape,
               "tp_slice: {} from {} gives {}, this rank's parameter is {}", p.name,
               full.shape().str(), out.shape().str(), p.shape.str());
    return out;
}

std::vector<Transformer::TpCopies> Transformer::tp_copies(ParamId id) const {
    const ParamInfo& p = layout_.param(id);
    const int64_t n = p.numel();
    if (tp_size_ == 1) return {{0, n, 1}};
    switch (tp_split(p.name)) {
        case TpSplit::replicated:
            return {{0, n, tp_size_}};
        case TpSplit::qkv_heads: {
            if (kv_copies_ == 1) return {{0, n, 1}};
            // The query rows are this rank's own; the KV rows (one head of k, one of v, all
            // gradients whole after sum_replicated_kv_grads) are on kv_copies_ ranks.
            const int64_t row = p.shape.ndim() == 2 ? p.shape[1] : 1, q = lcfg_.q_dim() * row;
            return {{0, q, 1}, {q, n, kv_copies_}};
        }
        case TpSplit::vocab_rows:
        case TpSplit::head_columns:
        case TpSplit::ff_rows:
        case TpSplit::ff_columns:
            return {{0, n, 1}};
    }
    return {{0, n, 1}};
}

}  // namespace zs::models
