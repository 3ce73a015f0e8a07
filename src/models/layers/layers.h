// The transformer's layers, each with forward and backward side by side (llm.c style, DESIGN
// decision 1): Norm, Attention (over an attention core), Mlp (GELU or SwiGLU), Moe (top-k routed
// SwiGLU experts).
//
// Conventions, for N = B*T tokens (rows):
// - The residual stream is f32 [N, C]; a layer's forward *adds* its output into it
//   (residual += f(x)), and its backward *reads* the residual gradient dres [N, C] f32.
// - Everything else (normed inputs x, projections, activations) is in the compute dtype `ct`
//   (f32 or bf16) with f32 accumulation inside the kernels.
// - Backward writes dx (=) and accumulates parameter gradients (+=) into the bound grads.
// - `Saved` structs hold what backward needs; activation checkpointing simply does not keep them
//   and re-runs forward before backward.
#pragma once

#include <utility>
#include <vector>

#include "models/attention_core.h"
#include "models/config.h"
#include "models/params.h"
#include "ops/attention.h"
#include "ops/matmul.h"
#include "ops/moe.h"
#include "ops/rope.h"

namespace zs::comm {
class Communicator;
}

namespace zs::models {

// (Re)allocate t on `device` unless it already has this shape, dtype and device (activation
// buffers are reused across steps, so steady-state training does not allocate). Layers allocate
// on their input's device, the Transformer on RunConfig::device.
void ensure(Tensor& t, const Shape& shape, DType dtype, core::Device device,
            core::MemCategory cat = core::MemCategory::activations);

// `t` itself when it lives on the CPU, else a host copy. Every read or write of tensor data on
// the host (routing counts, loss sums) goes through it, so the CPU path copies nothing; a write
// into a device tensor's host copy is copied back with store_from_host.
inline Tensor on_host(const Tensor& t) { return t.to(core::Device::cpu()); }
// Copy `host` (from on_host(dst), then written) back into `dst`; nothing when they are one.
inline void store_from_host(const Tensor& dst, const Tensor& host) {
    if (!dst.device().is_cpu()) dst.copy_from(host);
}

// out = x @ w^T + beta * out (+ bias) for the weight bound to parameter `w`: its quantized matrix
// (ops::quant_linear_forward) when one is bound, the dense weight otherwise.
//   x [N, IC], out [N, OC], w [OC, IC], bias [OC] or undefined
void linear(const ParamBinding& p, ParamId w, const Tensor& out, const Tensor& x,
            const Tensor& bias = {}, float beta = 0.0f);

// The weight-gradient halves a backward deferred (ParamBinding::defer_weight_grads): for each
// linear layer, its gradient views and copies of the two operands, dw += dout^T x and
// dbias += sum(dout), run later by run() in the order they were deferred (the fused backward's
// order, so the sums are the same bits). Copies, because the layer's saved activations and the
// residual gradient are rewritten by the next micro-batch before W runs: what W holds per
// micro-batch is bytes() (Zero Bubble's memory cost, on top of the activations B needs). An output
// gradient the layer allocated for this call alone (Operand::temporary) is held, not copied.
enum class Operand { reused, temporary };
class WeightGradQueue {
public:
    void push(const Tensor& dw, const Tensor& dbias, const Tensor& dout, const Tensor& x,
              Operand dout_kind = Operand::reused);
    void run();  // every deferred GEMM, then empty
    bool empty() const { return items_.empty(); }
    int64_t bytes() const { return bytes_; }

private:
    struct Item {
        Tensor dw, dbias, dout, x;
    };
    std::vector<Item> items_;
    int64_t bytes_ = 0;
};

// The linear layer's backward for the weight bound to `w` (and `bias`, kNoParam for none):
// dx = dout @ w (skipped when dx is undefined); dw += dout^T @ x and dbias += sum(dout) now, or
// deferred into p's WeightGradQueue when one is set (dout_kind: whether the queue must copy dout).
void linear_backward(const ParamBinding& p, ParamId w, ParamId bias, const Tensor& dx,
                     const Tensor& dout, const Tensor& x, Operand dout_kind = Operand::reused);

class Norm {
public:
    Norm() = default;
    Norm(NormKind kind, float eps, ParamId w, ParamId b) : kind_(kind), eps_(eps), w_(w), b_(b) {}
    // out [N, C] = norm(x [N, C]); mean/rstd [N] f32 saved when defined (mean: LayerNorm only).
    void forward(const ParamBinding& p, const Tensor& out, const Tensor& mean, const Tensor& rstd,
                 const Tensor& x) const;
    // dx [N, C] += d/dx (accumulates: x is on the residual stream).
    void backward(const ParamBinding& p, const Tensor& dx, const Tensor& dout, const Tensor& x,
                  const Tensor& mean, const Tensor& rstd) const;
    NormKind kind() const { return kind_; }
    // out = norm(x) folded into a quantized product (ops::RmsNormFold): RMSNorm only.
    bool foldable() const { return kind_ == NormKind::rmsnorm; }
    ops::RmsNormFold fold(const ParamBinding& p, const Tensor& out) const {
        return {p.w(w_), eps_, out};
    }

private:
    NormKind kind_ = NormKind::rmsnorm;
    float eps_ = 1e-5f;
    ParamId w_ = kNoParam, b_ = kNoParam;
};

// A norm a block applies to its own input (inference): the block's `x` is then the buffer the
// normed rows go to, from `raw` (the residual stream), and where the block's first product is
// quantized and the norm an RMSNorm, the norm runs inside that product's region
// (ops::RmsNormFold) instead of as an op of its own between regions.
struct PreNorm {
    const Norm* norm = nullptr;
    Tensor raw;
};

struct AttentionParams {
    ParamId wqkv = kNoParam, bqkv = kNoParam;  // [QKV, C], [QKV]: q, k, v rows fused
    ParamId wo = kNoParam, bo = kNoParam;      // [C, NH*HS], [C]
};

// The attention block of training and inference: QKV projection, RoPE, an attention core
// (models/attention_core.h: local for training, a KV cache for inference; later Ulysses or ring),
// output projection into the residual.
class Attention {
public:
    struct Saved {
        Tensor qkv;  // [N, QKV] ct, after RoPE
        Tensor att;  // [N, NH*HS] ct
        Tensor lse;  // [B, NH, T] f32 (cores with a backward only)
    };
    Attention() = default;
    // layer: this block's index (KV caches are per layer). opts: its scale and sliding window
    // (causal always). Under tensor parallelism `cfg` holds this rank's heads, and only one rank
    // adds the output bias (add_out_bias): the partial outputs are summed across ranks.
    Attention(const ModelConfig& cfg, int layer, AttentionParams p, const ops::RopeTable* rope,
              ops::AttentionOptions opts, bool add_out_bias = true)
        : cfg_(&cfg), layer_(layer), p_(p), rope_(rope), opts_(opts), add_out_bias_(add_out_bias) {}

    // residual [N, C] f32 += attention(x [N, C] ct) over B sequences of T tokens, through `core`;
    // positions [N] i32 (RoPE). Inference passes one flat batch: B = 1, T = N.
    // With `pre`, x is first filled from pre.raw by pre.norm (PreNorm).
    void forward(const ParamBinding& p, Saved& s, const Tensor& residual, const Tensor& x,
                 int64_t B, int64_t T, const Tensor& positions, AttentionCore& core,
                 const PreNorm& pre = {}) const;
    // dx [N, C] ct (=) from dres [N, C] f32, through the core forward ran on.
    void backward(const ParamBinding& p, const Saved& s, const Tensor& dx, const Tensor& dres,
                  const Tensor& x, int64_t B, int64_t T, const Tensor& positions,
                  AttentionCore& core) const;

    // Views of q, k, v inside a fused [N, QKV] tensor as [B, T, H, HS].
    Tensor q_view(const Tensor& qkv, int64_t B, int64_t T) const;
    Tensor k_view(const Tensor& qkv, int64_t B, int64_t T) const;
    Tensor v_view(const Tensor& qkv, int64_t B, int64_t T) const;
    const AttentionParams& params() const { return p_; }
    const ops::RopeTable* rope() const { return rope_; }
    const ops::AttentionOptions& options() const { return opts_; }

private:
    const ModelConfig* cfg_ = nullptr;
    int layer_ = 0;
    AttentionParams p_;
    const ops::RopeTable* rope_ = nullptr;
    ops::AttentionOptions opts_;
    bool add_out_bias_ = true;
};

struct MlpParams {
    ParamId up = kNoParam, up_bias = kNoParam;      // [FF, C] (gelu) or [2FF, C] gate|up (swiglu)
    ParamId down = kNoParam, down_bias = kNoParam;  // [C, FF], [C]
};

class Mlp {
public:
    struct Saved {
        Tensor h;  // [N, FF] (gelu) or [N, 2FF] (swiglu: gate | up) ct
        Tensor a;  // [N, FF] ct: activation output
    };
    Mlp() = default;
    // gelu: the GELU form of MlpKind::gelu (ignored by swiglu).
    // Under tensor parallelism `ff` is this rank's share and only one rank adds the down bias.
    Mlp(MlpKind kind, int64_t ff, MlpParams p, ops::GeluKind gelu = ops::GeluKind::kTanh,
        bool add_out_bias = true)
        : kind_(kind), ff_(ff), p_(p), gelu_(gelu), add_out_bias_(add_out_bias) {}
    // residual [N, C] f32 += mlp(x [N, C] ct); with `pre`, x is first filled from pre.raw by
    // pre.norm (PreNorm).
    void forward(const ParamBinding& p, Saved& s, const Tensor& residual, const Tensor& x,
                 const PreNorm& pre = {}) const;
    // dx [N, C] ct (=)
    void backward(const ParamBinding& p, const Saved& s, const Tensor& dx, const Tensor& dres,
                  const Tensor& x) const;
    // Used by the MoE layer for one expert: out [M, C] (= or +=) from x [M, C].
    void run(const ParamBinding& p, Saved& s, const Tensor& out, const Tensor& x, float beta,
             const PreNorm& pre = {}) const;
    // Both matrices quantized, no biases, ZS_DECODE_FUSE not 0: ops::quant_swiglu_forward.
    bool fused_quant_swiglu(const ParamBinding& p) const;
    // dx (=) from dout [M, C] ct.
    void run_backward(const ParamBinding& p, const Saved& s, const Tensor& dx, const Tensor& dout,
                      const Tensor& x) const;

private:
    MlpKind kind_ = MlpKind::swiglu;
    int64_t ff_ = 0;
    MlpParams p_;
    ops::GeluKind gelu_ = ops::GeluKind::kTanh;
    bool add_out_bias_ = true;
};

struct MoeParams {
    ParamId router = kNoParam;       // [E, C]
    std::vector<MlpParams> experts;  // SwiGLU experts: this rank's (all E without ep)
    // Qwen2-MoE's shared expert (SwiGLU, moe.shared_intermediate) and its gate [1, C]; none when
    // shared.up is kNoParam.
    MlpParams shared;
    ParamId shared_gate = kNoParam;
};

// Router statistics a step accumulates over all MoE layers, for the load-balancing loss
// (HF Mixtral's load_balancing_loss_func: one loss over every layer's routing).
struct RouterStats {
    std::vector<double> sel_count;  // [E] tokens routed to each expert (over k and layers)
    std::vector<double> prob_sum;   // [E] sum of router probabilities
    int64_t n_rows = 0;             // tokens x layers
    double z_sum = 0;               // sum over rows of logsumexp(router logits)^2
    void reset(int64_t n_experts);
    // Auxiliary loss E * sum_e (sel_count_e / n_rows) * (prob_sum_e / n_rows).
    double aux_loss(int64_t n_experts) const;
    // ST-MoE router z-loss: z_sum / n_rows (HF SwitchTransformers' router_z_loss_func over every
    // layer's logits at once).
    double z_loss() const { return n_rows ? z_sum / static_cast<double>(n_rows) : 0.0; }
};

class Moe {
public:
    struct Saved {
        Tensor logits, probs;                    // [N, E] f32
        Tensor weights, indices;                 // [N, k] f32 / i32
        std::vector<std::vector<int64_t>> rows;  // per expert: flat (token * k + slot) routed in
        std::vector<Tensor> xe;                  // per local expert: gathered inputs [Ne, C] ct
        std::vector<Mlp::Saved> mlp;             // per local expert
        // Per expert (all E): outputs [Ne, C] f32 of the rows this rank routed (before gate
        // weight); under expert parallelism views into `ep_y`, what the owners sent back.
        std::vector<Tensor> ye;
        // Expert parallelism: [E/ep, ep] rows this rank's experts received from each ep rank
        // (expert-major), the returned outputs [rows sent, C] f32.
        std::vector<int64_t> ep_recv;
        Tensor ep_y;
        // TED (tp x ep): every tp rank's ep_recv, [tp][E / ep x ep].
        std::vector<int64_t> ted_recv;
        // The forward took inputs replicated across ep (inference: forward_replicated); then
        // ep_y holds the all-gathered blocks.
        bool ep_replicated = false;
        // Shared expert: its saved activations, output [N, C] f32 and gate logit [N, 1] f32.
        Mlp::Saved shared;
        Tensor shared_y, shared_logit;
    };
    Moe() = default;
    // Tensor parallelism (tp non-null, size > 1): `cfg` holds this rank's intermediate size; the
    // router is replicated (every rank routes alike), each expert is split as the dense MLP
    // (gate|up rows column-, down columns row-parallel), so forward adds this rank's partial sum
    // of every expert's output, which the caller's all-reduce of the residual completes.
    //
    // Expert parallelism (ep non-null, size P > 1; DeepSpeed-MoE): `p.experts` holds this rank's
    // E / P experts, [first, first + E / P) with first = ep rank x E / P. Routing (and the
    // capacity drop) is decided on the rank that holds the tokens, exactly as without ep; the
    // routed rows go to their experts' ranks with one all_to_all_v (counts first, then the rows,
    // grouped by expert, no padding), each local expert runs once over every row it received,
    // and the outputs come back with a second all_to_all_v and are combined, gate-weighted, in
    // the original order. Backward mirrors it: the output gradients go out, the input
    // gradients come back; the gate weights' and the router's gradients are computed where the
    // tokens are, as without ep. Under tp as well, the ep group is this tp rank's peers, and
    // dispatch follows DeepSpeed-TED's duplicate-token elimination: the tp ranks hold the same
    // tokens and route them alike, and tp rank t dispatches only the t-th of tp slices of them;
    // each owner all-gathers over tp what its tp peers received (every expert shard sees every
    // row), runs its shard, and reduce-scatters the partial outputs back over tp before they
    // return. Rank t then adds its slice's whole expert outputs and the caller's all-reduce over
    // tp gathers the slices. The all-to-all payload per rank is 1/tp of dispatching every token.
    //
    // Inputs replicated across ep (forward's `replicated_over_ep`: inference, where every ep rank
    // runs the same batch) need no dispatch: every rank routes all N rows alike (and decides the
    // capacity drops over all of them), so each knows every expert's rows and holds their
    // inputs. Each rank runs its E / ep experts over the rows routed to them (and the shared
    // expert over its rows [N r / ep, N (r + 1) / ep), ragged, possibly none) and one all-gather
    // over ep (blocks padded to the largest) hands every rank every expert's outputs, which it
    // combines as ep 1 does. The experts compute each routed row once over the group, not ep
    // times, with one collective per layer instead of the counts and the two all-to-alls.
    // Under tp as well, each tp rank's expert shards do the same and the partial outputs are
    // all-reduced over tp by the caller, as for the dense MLP. Such a forward has no backward.
    // Training's ep ranks hold different tokens: it leaves the flag off.
    Moe(const ModelConfig& cfg, MoeParams p, comm::Communicator* tp = nullptr,
        comm::Communicator* ep = nullptr);
    // Bytes this layer sent through all_to_all_v (payloads and counts, to other ranks; with
    // replicated inputs, its all-gather's) since construction or the last reset_a2a_bytes (the
    // benchmarks' traffic figure).
    int64_t a2a_bytes() const { return a2a_bytes_; }
    void reset_a2a_bytes() { a2a_bytes_ = 0; }
    // Rows this rank's experts (or, under tp, expert shards) ran forward since construction or
    // the last reset_expert_rows: every assignment routed to them, from any rank.
    int64_t expert_rows() const { return expert_rows_; }
    void reset_expert_rows() { expert_rows_ = 0; }
    // residual += sum_j w_j * expert_{idx_j}(x); adds routing counts to `stats` when non-null.
    // `training` picks MoeConfig::capacity_factor, else eval_capacity_factor (DeepSpeed's
    // self.training).
    // `replicated_over_ep`: x and residual are the same on every ep rank (see the constructor);
    // no effect without ep.
    void forward(const ParamBinding& p, Saved& s, const Tensor& residual, const Tensor& x,
                 RouterStats* stats, bool training = true, bool replicated_over_ep = false) const;
    // dx (=). `aux_scale` = d(total loss)/d(aux loss) * coefficient terms (see transformer.cpp):
    // dprobs[n, e] = aux_scale * sel_count_e; 0 disables the auxiliary gradient.
    // Under tensor parallelism dx is this rank's share (the caller all-reduces it, as after the
    // dense MLP): the experts' column-parallel part, plus the router's on tp rank 0 only. The
    // gate weights' gradient needs the whole expert outputs: it is all-reduced over tp here.
    // `z_scale` = d(total loss)/d(z_sum): dlogits[n, e] += z_scale x 2 lse_n softmax_e.
    void backward(const ParamBinding& p, const Saved& s, const Tensor& dx, const Tensor& dres,
                  const Tensor& x, const RouterStats* stats, double aux_scale,
                  double z_scale = 0.0) const;

private:
    const ModelConfig* cfg_ = nullptr;
    MoeParams p_;
    std::vector<Mlp> experts_;
    Mlp shared_;
    bool has_shared_ = false;
    comm::Communicator* tp_ = nullptr;  // set when size > 1
    bool tp_first_ = true;              // tp rank 0 (or no tp): adds the router's dx, biases
    comm::Communicator* ep_ = nullptr;  // set when size > 1
    mutable int64_t a2a_bytes_ = 0;
    mutable int64_t expert_rows_ = 0;
    // Inputs replicated across ep: this rank's experts over the rows routed to them, gathered
    // from its own copy of x, and the shared expert over its slice of the rows; then one
    // all-gather of every rank's outputs, viewed as s.ye (all E) and s.shared_y.
    void forward_replicated(const ParamBinding& p, Saved& s, const Tensor& x) const;
    // Expert parallelism: rows -> the owners' rows -> back (forward and backward alike).
    // `send` [Ns, C] in send order (expert-major); returns [Nr, C] in source-major order.
    void forward_ep(const ParamBinding& p, Saved& s, const Tensor& x) const;
    // dys [rows sent, C] ct: the routed rows' output gradients; returns their input gradients.
    Tensor backward_ep(const ParamBinding& p, const Saved& s, const Tensor& dys) const;
    // TED over the tp group: every tp rank's rows [rows[u], C] gathered in rank order; and each
    // rank's block of `blocks` (rank u's rows[u] rows, in rank order) summed over the tp ranks
    // into [rows[tp rank], C] f32.
    Tensor tp_allgather_rows(const Tensor& mine, const std::vector<int64_t>& rows) const;
    Tensor tp_reduce_scatter_rows(const Tensor& blocks, const std::vector<int64_t>& rows) const;
    Tensor exchange(const Tensor& send, const std::vector<int64_t>& send_counts,
                    const std::vector<int64_t>& recv_counts) const;
};

}  // namespace zs::models
