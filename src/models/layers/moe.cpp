// Mixture-of-experts layer: top-k softmax router, per-expert SwiGLU MLPs over the tokens routed
// to them (gathered into contiguous rows), gate-weighted scatter back into the residual.
//
// DeepSpeed-MoE capacity: with capacity_factor > 0 each expert takes at most
// max(min_capacity, ceil(k * N / E * capacity_factor)) assignments, first choices before second
// choices and tokens in order (DeepSpeed's cumsum locations); the rest are dropped (their gate
// contributes nothing). capacity_factor == 0 (Mixtral) or drop_tokens false drops nothing;
// evaluation and inference (forward's `training` false) use eval_capacity_factor instead.
//
// Router z-loss (ST-MoE): forward adds logsumexp(logits_n)^2 per row to RouterStats::z_sum;
// backward adds its gradient to the router logits' (z_scale, set by the Transformer).
//
// Tensor parallelism: the router is replicated and routes identically on every rank (its input,
// the normed residual, is the same all-reduced value everywhere); each expert holds its rows of
// gate|up and columns of down (Megatron's MLP split), so the layer's output is a partial sum.
//
// Expert parallelism (DeepSpeed-MoE): this rank holds E / ep experts; routing and the drop
// decision stay where the tokens are (so they are the ones without ep), the routed rows travel
// to their experts' ranks and back with all_to_all_v (counts first, then rows; no padding), and
// backward mirrors the exchange. With inputs replicated across ep (inference) nothing travels
// but one all-gather of the experts' outputs per layer. See Moe's constructor comment.
//
// Devices: the router and the experts run on the input's device; routing (which rows go to which
// expert), the gate-weighted scatter and the gate weights' gradient run on the host, over host
// copies (on_host) that are the tensors themselves on the CPU.
#include <algorithm>
#include <cmath>
#include <utility>

#include "base/error.h"
#include "comm/communicator.h"
#include "models/layers/layers.h"
#include "ops/matmul.h"

namespace zs::models {

namespace {

double logsumexp(const float* v, int64_t n) {
    double m = v[0];
    for (int64_t i = 1; i < n; ++i) m = std::max(m, static_cast<double>(v[i]));
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(v[i]) - m);
    return m + std::log(sum);
}

}  // namespace

void RouterStats::reset(int64_t n_experts) {
    sel_count.assign(static_cast<size_t>(n_experts), 0.0);
    prob_sum.assign(static_cast<size_t>(n_experts), 0.0);
    n_rows = 0;
    z_sum = 0;
}

double RouterStats::aux_loss(int64_t n_experts) const {
    if (n_rows == 0) return 0.0;
    double s = 0, n = static_cast<double>(n_rows);
    for (size_t e = 0; e < sel_count.size(); ++e) s += (sel_count[e] / n) * (prob_sum[e] / n);
    return static_cast<double>(n_experts) * s;
}

Moe::Moe(const ModelConfig& cfg, MoeParams p, comm::Communicator* tp, comm::Communicator* ep)
    : cfg_(&cfg), p_(std::move(p)) {
    if (tp != nullptr && tp->size() > 1) {
        tp_ = tp;
        tp_first_ = tp->rank() == 0;
    }
    if (ep != nullptr && ep->size() > 1) ep_ = ep;
    const int64_t P = ep_ ? ep_->size() : 1;
    ZS_CHECK_T(ConfigError, cfg.moe.n_experts % P == 0,
               "expert parallelism: ep = {} must divide the {} experts", P, cfg.moe.n_experts);
    ZS_ASSERT(static_cast<int64_t>(p_.experts.size()) == cfg.moe.n_experts / P,
              "MoE layer given {} experts; this rank holds {} of {}", p_.experts.size(),
              cfg.moe.n_experts / P, cfg.moe.n_experts);
    if (p_.shared.up != kNoParam) {
        ZS_CHECK_T(ConfigError, tp_ == nullptr,
                   "tensor parallelism with a shared expert (Qwen2-MoE) is not implemented");
        has_shared_ = true;
        shared_ = Mlp(MlpKind::swiglu, cfg.moe.shared_intermediate, p_.shared, ops::GeluKind::kTanh,
                      true);
    }
    for (const MlpParams& e : p_.experts) {
        experts_.emplace_back(MlpKind::swiglu, cfg.intermediate, e, ops::GeluKind::kTanh,
                              tp_first_);
    }
}

void Moe::forward(const ParamBinding& p, Saved& s, const Tensor& residual, const Tensor& x,
                  RouterStats* stats, bool training, bool replicated_over_ep) const {
    const int64_t N = x.size(0), C = x.size(1), E = cfg_->moe.n_experts;
    const int k = cfg_->moe.top_k;
    DType ct = x.dtype();
    const core::Device dev = x.device();
    ensure(s.logits, {N, E}, DType::f32, dev);
    ensure(s.probs, {N, E}, DType::f32, dev);
    ensure(s.weights, {N, k}, DType::f32, dev);
    ensure(s.indices, {N, k}, DType::i32, dev);
    ops::linear_forward(s.logits, x, p.w(p_.router));
    ops::RouterOptions ro{k, cfg_->moe.renormalize};
    ops::topk_router_forward(s.weights, s.indices, s.probs, s.logits, ro);

    // Assignments per expert, slot-major (all first choices, then second...) as DeepSpeed ranks.
    const Tensor indices = on_host(s.indices);
    const int32_t* idx = indices.data<int32_t>();
    s.rows.assign(static_cast<size_t>(E), {});
    const int64_t cap = cfg_->moe.capacity(N, training);
    for (int j = 0; j < k; ++j) {
        for (int64_t n = 0; n < N; ++n) {
            auto& r = s.rows[static_cast<size_t>(idx[n * k + j])];
            if (static_cast<int64_t>(r.size()) < cap) r.push_back(n * k + j);
        }
    }
    if (stats) {
        const Tensor probs = on_host(s.probs);
        const float* pr = probs.data<float>();
        for (int64_t n = 0; n < N; ++n) {
            for (int64_t e = 0; e < E; ++e)
                stats->prob_sum[static_cast<size_t>(e)] += pr[n * E + e];
            for (int j = 0; j < k; ++j)
                stats->sel_count[static_cast<size_t>(idx[n * k + j])] += 1.0;
        }
        stats->n_rows += N;
        const Tensor logits = on_host(s.logits);
        for (int64_t n = 0; n < N; ++n) {
            const double z = logsumexp(logits.data<float>() + n * E, E);
            stats->z_sum += z * z;
        }
    }

    // TED: this tp rank dispatches (and combines) only its slice of the tokens, after the
    // capacity decision over all of them. Inputs replicated across ep (inference) need no
    // dispatch at all: see forward_replicated.
    s.ep_replicated = ep_ && replicated_over_ep;
    if (ep_ && tp_ && !s.ep_replicated) {
        const int64_t T = tp_->size(), t = tp_->rank();
        const int64_t lo = N * t / T, hi = N * (t + 1) / T;
        for (auto& rows : s.rows) {
            std::erase_if(rows, [&](int64_t flat) { return flat / k < lo || flat / k >= hi; });
        }
    }
    const Tensor weights = on_host(s.weights);
    const float* w = weights.data<float>();
    s.ye.resize(static_cast<size_t>(E));
    const int64_t El = static_cast<int64_t>(experts_.size());
    s.xe.resize(static_cast<size_t>(El));
    s.mlp.resize(static_cast<size_t>(El));
    if (s.ep_replicated) {
        forward_replicated(p, s, x);
    } else if (ep_) {
        forward_ep(p, s, x);
    } else {
        for (int64_t e = 0; e < E; ++e) {
            const auto& rows = s.rows[static_cast<size_t>(e)];
            auto ne = static_cast<int64_t>(rows.size());
            Tensor& xe = s.xe[static_cast<size_t>(e)];
            Tensor& ye = s.ye[static_cast<size_t>(e)];
            if (ne == 0) {
                xe = Tensor();
                ye = Tensor();
                continue;
            }
            ensure(xe, {ne, C}, ct, dev);
            for (int64_t r = 0; r < ne; ++r) {
                xe.select(0, r).copy_from(x.select(0, rows[static_cast<size_t>(r)] / k));
            }
            ensure(ye, {ne, C}, DType::f32, dev);
            experts_[static_cast<size_t>(e)].run(p, s.mlp[static_cast<size_t>(e)], ye, xe, 0.0f);
            expert_rows_ += ne;
        }
    }
    // The shared expert (Qwen2-MoE) over every row (forward_replicated ran it), and its gate's
    // logit.
    if (has_shared_) {
        if (!s.ep_replicated) {
            ensure(s.shared_y, {N, C}, DType::f32, dev);
            shared_.run(p, s.shared, s.shared_y, x, 0.0f);
        }
        ensure(s.shared_logit, {N, 1}, DType::f32, dev);
        ops::linear_forward(s.shared_logit, x, p.w(p_.shared_gate));
    }
    // Combine: residual += gate weight x expert output, per routed row, expert by expert; then
    // sigmoid(shared gate) x the shared expert's output.
    const Tensor residual_h = on_host(residual);
    float* res = residual_h.data<float>();
    if (has_shared_) {
        const Tensor ys_h = on_host(s.shared_y), gl_h = on_host(s.shared_logit);
        const float* ys = ys_h.data<float>();
        const float* gl = gl_h.data<float>();
        for (int64_t n = 0; n < N; ++n) {
            const float sg = 1.0f / (1.0f + std::exp(-gl[n]));
            for (int64_t c = 0; c < C; ++c) res[n * C + c] += sg * ys[n * C + c];
        }
    }
    for (int64_t e = 0; e < E; ++e) {
        const auto& rows = s.rows[static_cast<size_t>(e)];
        auto ne = static_cast<int64_t>(rows.size());
        if (ne == 0) continue;
        const Tensor ye_h = on_host(s.ye[static_cast<size_t>(e)]);
        const float* y = ye_h.data<float>();
        for (int64_t r = 0; r < ne; ++r) {
            int64_t flat = rows[static_cast<size_t>(r)];
            float g = w[flat];
            float* dst = res + (flat / k) * C;
            for (int64_t c = 0; c < C; ++c) dst[c] += g * y[r * C + c];
        }
    }
    store_from_host(residual, residual_h);
}

void Moe::backward(const ParamBinding& p, const Saved& s, const Tensor& dx, const Tensor& dres,
                   const Tensor& x, const RouterStats* stats, double aux_scale,
                   double z_scale) const {
    ZS_ASSERT(!s.ep_replicated,
              "MoE backward after a forward over inputs replicated across ep "
              "(an inference-only forward)");
    const int64_t N = x.size(0), C = x.size(1), E = cfg_->moe.n_experts;
    const int k = cfg_->moe.top_k;
    DType ct = x.dtype();
    const core::Device dev = x.device();
    const Tensor weights = on_host(s.weights);
    const float* w = weights.data<float>();
    const Tensor dres_h = on_host(dres);
    const float* dr = dres_h.data<float>();
    // Host accumulators (the gate weights' gradient and dx in f32), moved to `dev` when used.
    Tensor dweights = Tensor::zeros({N, k}, DType::f32);
    float* dw = dweights.data<float>();
    Tensor dxf = Tensor::zeros({N, C}, DType::f32);  // f32 accumulator over experts and router
    float* dxa = dxf.data<float>();
    // Expert e's output gradients (gate weight x dres) into dy [Ne, C] and the gate weights'
    // gradient, where the tokens are.
    auto output_grads = [&](int64_t e, float* dy) {
        const auto& rows = s.rows[static_cast<size_t>(e)];
        if (rows.empty()) return;
        const Tensor ye_h = on_host(s.ye[static_cast<size_t>(e)]);
        const float* y = ye_h.data<float>();
        for (size_t r = 0; r < rows.size(); ++r) {
            const int64_t flat = rows[r], ri = static_cast<int64_t>(r);
            const float* g = dr + (flat / k) * C;
            double dot = 0;
            for (int64_t c = 0; c < C; ++c) {
                dy[ri * C + c] = w[flat] * g[c];
                dot += static_cast<double>(g[c]) * y[ri * C + c];
            }
            dw[flat] = static_cast<float>(dot);
        }
    };
    // Add expert e's input gradients dxe [Ne, C] (f32, host) into its tokens' rows of dx.
    auto add_input_grads = [&](int64_t e, const float* d) {
        const auto& rows = s.rows[static_cast<size_t>(e)];
        for (size_t r = 0; r < rows.size(); ++r) {
            float* dst = dxa + (rows[r] / k) * C;
            for (int64_t c = 0; c < C; ++c) dst[c] += d[static_cast<int64_t>(r) * C + c];
        }
    };
    if (!ep_) {
        for (int64_t e = 0; e < E; ++e) {
            auto ne = static_cast<int64_t>(s.rows[static_cast<size_t>(e)].size());
            if (ne == 0) continue;
            Tensor dye = Tensor::empty({ne, C}, DType::f32);
            output_grads(e, dye.data<float>());
            Tensor dxe = Tensor::empty({ne, C}, ct, dev);
            experts_[static_cast<size_t>(e)].run_backward(p, s.mlp[static_cast<size_t>(e)], dxe,
                                                          dye.to(ct).to(dev),
                                                          s.xe[static_cast<size_t>(e)]);
            const Tensor dxe32 = on_host(dxe.to(DType::f32));
            add_input_grads(e, dxe32.data<float>());
        }
    } else {
        // Expert parallelism: every routed row's output gradient (expert-major, the forward's
        // send order) goes to its expert's rank and its input gradient comes back.
        std::vector<int64_t> off(static_cast<size_t>(E) + 1, 0);
        for (int64_t e = 0; e < E; ++e) {
            off[static_cast<size_t>(e) + 1] =
                off[static_cast<size_t>(e)] +
                static_cast<int64_t>(s.rows[static_cast<size_t>(e)].size());
        }
        Tensor dys = Tensor::empty({off.back(), C}, DType::f32);
        for (int64_t e = 0; e < E; ++e)
            output_grads(e, dys.data<float>() + off[static_cast<size_t>(e)] * C);
        const Tensor dx32 = on_host(backward_ep(p, s, dys.to(ct).to(dev)).to(DType::f32));
        for (int64_t e = 0; e < E; ++e)
            add_input_grads(e, dx32.data<float>() + off[static_cast<size_t>(e)] * C);
    }
    // The shared expert and its gate: d(out) = sigmoid(g) dres, d(g) = s (1 - s) dres . y.
    if (has_shared_) {
        const Tensor ys_h = on_host(s.shared_y), gl_h = on_host(s.shared_logit);
        const float* ys = ys_h.data<float>();
        const float* gl = gl_h.data<float>();
        Tensor dsy = Tensor::empty({N, C}, DType::f32), dgl = Tensor::empty({N, 1}, DType::f32);
        float* d = dsy.data<float>();
        for (int64_t n = 0; n < N; ++n) {
            const float sg = 1.0f / (1.0f + std::exp(-gl[n]));
            double dot = 0;
            for (int64_t c = 0; c < C; ++c) {
                d[n * C + c] = sg * dr[n * C + c];
                dot += static_cast<double>(dr[n * C + c]) * ys[n * C + c];
            }
            dgl.data<float>()[n] = static_cast<float>(dot * sg * (1.0f - sg));
        }
        Tensor dxs_sh = Tensor::empty({N, C}, ct, dev);
        shared_.run_backward(p, s.shared, dxs_sh, dsy.to(ct).to(dev), x);
        Tensor dxg = Tensor::empty({N, C}, ct, dev);
        ops::linear_backward(dxg, p.g(p_.shared_gate), Tensor(), dgl.to(ct).to(dev), x,
                             p.w(p_.shared_gate));
        const Tensor a32 = on_host(dxs_sh.to(DType::f32)), b32 = on_host(dxg.to(DType::f32));
        const float* a = a32.data<float>();
        const float* b = b32.data<float>();
        for (int64_t i = 0; i < N * C; ++i) dxa[i] += a[i] + b[i];
    }
    // Tensor parallelism: each rank's y is its share of the expert outputs, so its dot products
    // are partial sums of d(loss)/d(gate weight); summed, every rank holds the whole gradient
    // and back-propagates the same router gradient (the router is replicated).
    if (tp_) tp_->allreduce(dweights, comm::ReduceOp::sum).wait();
    // Router: gate weights' gradient plus the load-balancing loss's gradient on probs.
    Tensor dprobs;
    if (stats && aux_scale != 0.0) {
        dprobs = Tensor::empty({N, E}, DType::f32);
        float* dp = dprobs.data<float>();
        for (int64_t n = 0; n < N; ++n) {
            for (int64_t e = 0; e < E; ++e) {
                dp[n * E + e] =
                    static_cast<float>(aux_scale * stats->sel_count[static_cast<size_t>(e)]);
            }
        }
    }
    Tensor dlogits = Tensor::empty({N, E}, DType::f32, dev);
    ops::topk_router_backward(dlogits, dweights.to(dev), dprobs.defined() ? dprobs.to(dev) : dprobs,
                              s.probs, s.indices, {k, cfg_->moe.renormalize});
    // Router z-loss: d(z_scale x lse_n^2)/d(logit_ne) = z_scale x 2 lse_n softmax(logits_n)_e.
    if (z_scale != 0.0) {
        const Tensor logits = on_host(s.logits);
        const Tensor dl = on_host(dlogits);
        for (int64_t n = 0; n < N; ++n) {
            const float* lg = logits.data<float>() + n * E;
            const double z = logsumexp(lg, E);
            for (int64_t e = 0; e < E; ++e) {
                dl.data<float>()[n * E + e] +=
                    static_cast<float>(z_scale * 2.0 * z * std::exp(lg[e] - z));
            }
        }
        store_from_host(dlogits, dl);
    }
    // The router's dx is the same on every tp rank: one adds it, so the caller's all-reduce of
    // dx counts it once. Every rank accumulates the (identical) router weight gradient.
    Tensor dxr = tp_first_ ? Tensor::empty({N, C}, ct, dev) : Tensor();
    ops::linear_backward(dxr, p.g(p_.router), Tensor(), dlogits.to(ct), x, p.w(p_.router));
    if (tp_first_) {
        Tensor dxr32 = on_host(dxr.to(DType::f32));
        const float* d = dxr32.data<float>();
        for (int64_t i = 0; i < N * C; ++i) dxa[i] += d[i];
    }
    dx.copy_from(dxf);
}

namespace {

// Expert parallelism's two orders of the rows an owner receives: source-major, as
// all_to_all_v delivers them (from rank 0 its rows for local expert 0, 1, ..., then rank 1...),
// and expert-major (each local expert's rows contiguous, in source order), the order the expert
// runs them in. counts[j * P + q]: rows of local expert j from rank q.
struct EpBlocks {
    int64_t P = 1, El = 0;
    std::vector<int64_t> counts, src_off;  // [El * P]; offset of block (j, q) source-major
    EpBlocks(const std::vector<int64_t>& c, int64_t p, int64_t el)
        : P(p), El(el), counts(c), src_off(c.size()) {
        int64_t at = 0;
        for (int64_t q = 0; q < P; ++q) {
            for (int64_t j = 0; j < El; ++j) {
                src_off[static_cast<size_t>(j * P + q)] = at;
                at += counts[static_cast<size_t>(j * P + q)];
            }
        }
    }
    int64_t expert_rows(int64_t j) const {
        int64_t n = 0;
        for (int64_t q = 0; q < P; ++q) n += counts[static_cast<size_t>(j * P + q)];
        return n;
    }
    int64_t from(int64_t q) const {  // rows received from rank q
        int64_t n = 0;
        for (int64_t j = 0; j < El; ++j) n += counts[static_cast<size_t>(j * P + q)];
        return n;
    }
    // Local expert j's rows: out of the source-major buffer, and back into it.
    void gather(const Tensor& dst, const Tensor& source_major, int64_t j) const {
        int64_t at = 0;
        for (int64_t q = 0; q < P; ++q) {
            const auto b = static_cast<size_t>(j * P + q);
            if (counts[b] == 0) continue;
            dst.slice(0, at, at + counts[b])
                .copy_from(source_major.slice(0, src_off[b], src_off[b] + counts[b]));
            at += counts[b];
        }
    }
    void scatter(const Tensor& source_major, const Tensor& src, int64_t j) const {
        int64_t at = 0;
        for (int64_t q = 0; q < P; ++q) {
            const auto b = static_cast<size_t>(j * P + q);
            if (counts[b] == 0) continue;
            source_major.slice(0, src_off[b], src_off[b] + counts[b])
                .copy_from(src.slice(0, at, at + counts[b]));
            at += counts[b];
        }
    }
};

// TED: the rows every tp rank received (EpBlocks each), laid out rank after rank, and each local
// expert's rows over all of them (rank order, then each rank's expert-major order).
struct TedBlocks {
    std::vector<EpBlocks> ranks;
    std::vector<int64_t> rows, off;  // per tp rank: rows received, offset in the gathered buffer
    TedBlocks(const std::vector<int64_t>& all, int64_t T, int64_t P, int64_t El) {
        const int64_t E = P * El;
        int64_t at = 0;
        for (int64_t u = 0; u < T; ++u) {
            ranks.emplace_back(std::vector<int64_t>(all.begin() + u * E, all.begin() + (u + 1) * E),
                               P, El);
            int64_t n = 0;
            for (int64_t q = 0; q < P; ++q) n += ranks.back().from(q);
            rows.push_back(n);
            off.push_back(at);
            at += n;
        }
    }
    int64_t expert_rows(int64_t j) const {
        int64_t n = 0;
        for (const EpBlocks& b : ranks) n += b.expert_rows(j);
        return n;
    }
    void gather(const Tensor& dst, const Tensor& gathered, int64_t j) const {
        int64_t at = 0;
        for (size_t u = 0; u < ranks.size(); ++u) {
            const int64_t n = ranks[u].expert_rows(j);
            if (n > 0) {
                ranks[u].gather(dst.slice(0, at, at + n),
                                gathered.slice(0, off[u], off[u] + rows[u]), j);
            }
            at += n;
        }
    }
    void scatter(const Tensor& gathered, const Tensor& src, int64_t j) const {
        int64_t at = 0;
        for (size_t u = 0; u < ranks.size(); ++u) {
            const int64_t n = ranks[u].expert_rows(j);
            if (n > 0) {
                ranks[u].scatter(gathered.slice(0, off[u], off[u] + rows[u]),
                                 src.slice(0, at, at + n), j);
            }
            at += n;
        }
    }
};

}  // namespace

void Moe::forward_replicated(const ParamBinding& p, Saved& s, const Tensor& x) const {
    const int64_t N = x.size(0), C = x.size(1), E = cfg_->moe.n_experts;
    const int k = cfg_->moe.top_k;
    const int64_t P = ep_->size(), El = E / P, me = ep_->rank();
    const core::Device dev = x.device();
    // Every rank routed every row alike, so every rank knows every block's layout: rank q's
    // experts' rows (expert by expert, each in s.rows order), then q's slice of the shared
    // expert's rows [N q / P, N (q + 1) / P).
    auto slice = [&](int64_t q) { return std::pair{N * q / P, N * (q + 1) / P}; };
    std::vector<int64_t> block_rows(static_cast<size_t>(P), 0);
    for (int64_t e = 0; e < E; ++e) {
        block_rows[static_cast<size_t>(e / El)] +=
            static_cast<int64_t>(s.rows[static_cast<size_t>(e)].size());
    }
    const int64_t routed_mine = block_rows[static_cast<size_t>(me)];
    if (has_shared_) {
        for (int64_t q = 0; q < P; ++q) {
            const auto [lo, hi] = slice(q);
            block_rows[static_cast<size_t>(q)] += hi - lo;
        }
    }
    const int64_t W = *std::max_element(block_rows.begin(), block_rows.end());
    Tensor block = Tensor::empty({W, C}, DType::f32, dev);
    int64_t at = 0;
    for (int64_t j = 0; j < El; ++j) {
        const auto& rows = s.rows[static_cast<size_t>(me * El + j)];
        const auto ne = static_cast<int64_t>(rows.size());
        Tensor& xe = s.xe[static_cast<size_t>(j)];
        if (ne == 0) {
            xe = Tensor();
            continue;
        }
        ensure(xe, {ne, C}, x.dtype(), dev);
        for (int64_t r = 0; r < ne; ++r) {
            xe.select(0, r).copy_from(x.select(0, rows[static_cast<size_t>(r)] / k));
        }
        experts_[static_cast<size_t>(j)].run(p, s.mlp[static_cast<size_t>(j)],
                                             block.slice(0, at, at + ne), xe, 0.0f);
        expert_rows_ += ne;
        at += ne;
    }
    ZS_ASSERT(at == routed_mine, "MoE: {} expert rows, {} routed", at, routed_mine);
    if (has_shared_) {
        const auto [lo, hi] = slice(me);
        if (hi > lo)
            shared_.run(p, s.shared, block.slice(0, at, at + hi - lo), x.slice(0, lo, hi), 0.0f);
    }
    // One all-gather (blocks padded to the largest) instead of the dispatch and return.
    if (W == 0) return;
    s.ep_y = Tensor::empty({P * W, C}, DType::f32, dev);
    ep_->allgather(s.ep_y, block).wait();
    a2a_bytes_ += (P - 1) * W * C * static_cast<int64_t>(sizeof(float));
    at = 0;
    for (int64_t e = 0; e < E; ++e) {
        if (e % El == 0) at = (e / El) * W;
        const auto n = static_cast<int64_t>(s.rows[static_cast<size_t>(e)].size());
        s.ye[static_cast<size_t>(e)] = n > 0 ? s.ep_y.slice(0, at, at + n) : Tensor();
        at += n;
        if (has_shared_ && e % El == El - 1) {
            const auto [lo, hi] = slice(e / El);
            ensure(s.shared_y, {N, C}, DType::f32, dev);
            if (hi > lo) s.shared_y.slice(0, lo, hi).copy_from(s.ep_y.slice(0, at, at + hi - lo));
        }
    }
}

Tensor Moe::tp_allgather_rows(const Tensor& mine, const std::vector<int64_t>& rows) const {
    const int64_t C = mine.size(1), T = tp_->size(), me = rows[static_cast<size_t>(tp_->rank())];
    std::vector<int64_t> in(static_cast<size_t>(T), me * C), out(static_cast<size_t>(T));
    int64_t total = 0;
    for (int64_t u = 0; u < T; ++u) {
        out[static_cast<size_t>(u)] = rows[static_cast<size_t>(u)] * C;
        total += rows[static_cast<size_t>(u)];
    }
    Tensor send = Tensor::empty({T * me, C}, mine.dtype(), mine.device());
    for (int64_t u = 0; u < T && me > 0; ++u) send.slice(0, u * me, (u + 1) * me).copy_from(mine);
    Tensor recv = Tensor::empty({total, C}, mine.dtype(), mine.device());
    tp_->all_to_all_v(recv, out, send, in).wait();
    return recv;
}

Tensor Moe::tp_reduce_scatter_rows(const Tensor& blocks, const std::vector<int64_t>& rows) const {
    const int64_t C = blocks.size(1), T = tp_->size(), me = rows[static_cast<size_t>(tp_->rank())];
    std::vector<int64_t> in(static_cast<size_t>(T)), out(static_cast<size_t>(T), me * C);
    for (int64_t u = 0; u < T; ++u) in[static_cast<size_t>(u)] = rows[static_cast<size_t>(u)] * C;
    Tensor recv = Tensor::empty({T * me, C}, DType::f32, blocks.device());
    tp_->all_to_all_v(recv, out, blocks.to(DType::f32).contiguous(), in).wait();
    Tensor sum = Tensor::zeros({me, C}, DType::f32);
    const Tensor h = on_host(recv);
    for (int64_t u = 0; u < T; ++u) {
        const float* src = h.data<float>() + u * me * C;
        for (int64_t i = 0; i < me * C; ++i) sum.data<float>()[i] += src[i];
    }
    return sum.to(blocks.device());
}

Tensor Moe::exchange(const Tensor& send, const std::vector<int64_t>& send_counts,
                     const std::vector<int64_t>& recv_counts) const {
    const int64_t C = send.size(1);
    int64_t nr = 0;
    std::vector<int64_t> in(send_counts.size()), out(recv_counts.size());
    for (size_t q = 0; q < send_counts.size(); ++q) {
        in[q] = send_counts[q] * C;
        out[q] = recv_counts[q] * C;
        nr += recv_counts[q];
        if (static_cast<int>(q) != ep_->rank()) {
            a2a_bytes_ += in[q] * static_cast<int64_t>(core::dtype_size(send.dtype()));
        }
    }
    Tensor recv = Tensor::empty({nr, C}, send.dtype(), send.device());
    ep_->all_to_all_v(recv, out, send.contiguous(), in).wait();
    return recv;
}

void Moe::forward_ep(const ParamBinding& p, Saved& s, const Tensor& x) const {
    const int64_t C = x.size(1), E = cfg_->moe.n_experts;
    const int k = cfg_->moe.top_k;
    const int64_t P = ep_->size(), El = E / P;
    const core::Device dev = x.device();
    // Counts first: this rank's rows per expert (rank q's chunk: its experts' counts).
    Tensor cnt = Tensor::empty({E}, DType::i64), rcnt = Tensor::empty({E}, DType::i64);
    std::vector<int64_t> send_rows(static_cast<size_t>(P), 0);
    int64_t ns = 0;
    for (int64_t e = 0; e < E; ++e) {
        const auto n = static_cast<int64_t>(s.rows[static_cast<size_t>(e)].size());
        cnt.data<int64_t>()[e] = n;
        send_rows[static_cast<size_t>(e / El)] += n;
        ns += n;
    }
    ep_->all_to_all(rcnt, cnt).wait();
    a2a_bytes_ += (P - 1) * El * static_cast<int64_t>(sizeof(int64_t));
    s.ep_recv.assign(static_cast<size_t>(E), 0);
    for (int64_t q = 0; q < P; ++q) {
        for (int64_t j = 0; j < El; ++j) {
            s.ep_recv[static_cast<size_t>(j * P + q)] = rcnt.data<int64_t>()[q * El + j];
        }
    }
    const EpBlocks blocks(s.ep_recv, P, El);
    std::vector<int64_t> recv_rows(static_cast<size_t>(P));
    for (int64_t q = 0; q < P; ++q) recv_rows[static_cast<size_t>(q)] = blocks.from(q);
    // Then the rows: each routed token's input, expert-major (so in destination rank order).
    Tensor xs = Tensor::empty({ns, C}, x.dtype(), dev);
    int64_t at = 0;
    for (int64_t e = 0; e < E; ++e) {
        for (int64_t flat : s.rows[static_cast<size_t>(e)]) {
            xs.select(0, at++).copy_from(x.select(0, flat / k));
        }
    }
    const Tensor xr = exchange(xs, send_rows, recv_rows);
    // Each local expert once over every row it received (one GEMM per weight).
    Tensor yr = Tensor::empty({xr.size(0), C}, DType::f32, dev);
    if (tp_) {
        // TED: every tp rank's received rows, each expert's shard over all of them.
        const int64_t T = tp_->size();
        Tensor mine = Tensor::empty({E}, DType::i64), all = Tensor::empty({T * E}, DType::i64);
        for (int64_t i = 0; i < E; ++i) mine.data<int64_t>()[i] = s.ep_recv[static_cast<size_t>(i)];
        tp_->allgather(all, mine).wait();
        s.ted_recv.assign(all.data<int64_t>(), all.data<int64_t>() + T * E);
        const TedBlocks tb(s.ted_recv, T, P, El);
        const Tensor xg = tp_allgather_rows(xr, tb.rows);
        Tensor yg = Tensor::empty({xg.size(0), C}, DType::f32, dev);
        for (int64_t j = 0; j < El; ++j) {
            const int64_t ne = tb.expert_rows(j);
            Tensor& xe = s.xe[static_cast<size_t>(j)];
            if (ne == 0) {
                xe = Tensor();
                continue;
            }
            ensure(xe, {ne, C}, x.dtype(), dev);
            tb.gather(xe, xg, j);
            Tensor ye = Tensor::empty({ne, C}, DType::f32, dev);
            experts_[static_cast<size_t>(j)].run(p, s.mlp[static_cast<size_t>(j)], ye, xe, 0.0f);
            expert_rows_ += ne;
            tb.scatter(yg, ye, j);
        }
        yr = tp_reduce_scatter_rows(yg, tb.rows);
    }
    for (int64_t j = 0; j < El && !tp_; ++j) {
        const int64_t ne = blocks.expert_rows(j);
        Tensor& xe = s.xe[static_cast<size_t>(j)];
        if (ne == 0) {
            xe = Tensor();
            continue;
        }
        ensure(xe, {ne, C}, x.dtype(), dev);
        blocks.gather(xe, xr, j);
        Tensor ye = Tensor::empty({ne, C}, DType::f32, dev);
        experts_[static_cast<size_t>(j)].run(p, s.mlp[static_cast<size_t>(j)], ye, xe, 0.0f);
        expert_rows_ += ne;
        blocks.scatter(yr, ye, j);
    }
    // The outputs come back in send order: expert e's rows are one contiguous slice.
    s.ep_y = exchange(yr, recv_rows, send_rows);
    at = 0;
    for (int64_t e = 0; e < E; ++e) {
        const auto n = static_cast<int64_t>(s.rows[static_cast<size_t>(e)].size());
        s.ye[static_cast<size_t>(e)] = n > 0 ? s.ep_y.slice(0, at, at + n) : Tensor();
        at += n;
    }
}

Tensor Moe::backward_ep(const ParamBinding& p, const Saved& s, const Tensor& dys) const {
    const int64_t C = dys.size(1), E = cfg_->moe.n_experts;
    const int64_t P = ep_->size(), El = E / P;
    const core::Device dev = dys.device();
    const EpBlocks blocks(s.ep_recv, P, El);
    std::vector<int64_t> send_rows(static_cast<size_t>(P), 0), recv_rows(static_cast<size_t>(P));
    for (int64_t e = 0; e < E; ++e) {
        send_rows[static_cast<size_t>(e / El)] +=
            static_cast<int64_t>(s.rows[static_cast<size_t>(e)].size());
    }
    for (int64_t q = 0; q < P; ++q) recv_rows[static_cast<size_t>(q)] = blocks.from(q);
    const Tensor dyr = exchange(dys, send_rows, recv_rows);
    Tensor dxr = Tensor::empty({dyr.size(0), C}, dys.dtype(), dev);
    if (tp_) {
        // TED: the output gradients of every tp rank's rows through this shard; the partial
        // input gradients summed back over tp (in f32).
        const TedBlocks tb(s.ted_recv, tp_->size(), P, El);
        const Tensor dyg = tp_allgather_rows(dyr, tb.rows);
        Tensor dxg = Tensor::zeros({dyg.size(0), C}, DType::f32, dev);
        for (int64_t j = 0; j < El; ++j) {
            const int64_t ne = tb.expert_rows(j);
            if (ne == 0) continue;
            Tensor dye = Tensor::empty({ne, C}, dys.dtype(), dev);
            tb.gather(dye, dyg, j);
            Tensor dxe = Tensor::empty({ne, C}, dys.dtype(), dev);
            experts_[static_cast<size_t>(j)].run_backward(p, s.mlp[static_cast<size_t>(j)], dxe,
                                                          dye, s.xe[static_cast<size_t>(j)]);
            tb.scatter(dxg, dxe.to(DType::f32), j);
        }
        dxr = tp_reduce_scatter_rows(dxg, tb.rows).to(dys.dtype());
    }
    for (int64_t j = 0; j < El && !tp_; ++j) {
        const int64_t ne = blocks.expert_rows(j);
        if (ne == 0) continue;
        Tensor dye = Tensor::empty({ne, C}, dys.dtype(), dev);
        blocks.gather(dye, dyr, j);
        Tensor dxe = Tensor::empty({ne, C}, dys.dtype(), dev);
        experts_[static_cast<size_t>(j)].run_backward(p, s.mlp[static_cast<size_t>(j)], dxe, dye,
                                                      s.xe[static_cast<size_t>(j)]);
        blocks.scatter(dxr, dxe, j);
    }
    return exchange(dxr, recv_rows, send_rows);
}

}  // namespace zs::models
