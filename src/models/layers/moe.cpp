// Mixture-of-experts layer: top-k softmax router, per-expert SwiGLU MLPs over the tokens routed
// to them (gathered into contiguous rows), gate-weighted scatter back into the residual.
//
// DeepSpeed-MoE capacity: with capacity_factor > 0 each expert takes at most
// max(min_capacity, ceil(k * N / E * capacity_factor)) assignments, first choices before second
// choices and tokens in order (DeepSpeed's cumsum locations); the rest are dropped (their gate
// contributes nothing). capacity_factor == 0 (Mixtral) drops nothing.
//
// Tensor parallelism: the router is replicated and routes identically on every rank (its input,
// the normed residual, is the same all-reduced value everywhere); each expert holds its rows of
// gate|up and columns of down (Megatron's MLP split), so the layer's output is a partial sum.
//
// Devices: the router and the experts run on the input's device; routing (which rows go to which
// expert), the gate-weighted scatter and the gate weights' gradient run on the host, over host
// copies (on_host) that are the tensors themselves on the CPU.
#include <cmath>

#include "base/error.h"
#include "comm/communicator.h"
#include "models/layers/layers.h"
#include "ops/matmul.h"

namespace zs::models {

void RouterStats::reset(int64_t n_experts) {
    sel_count.assign(static_cast<size_t>(n_experts), 0.0);
    prob_sum.assign(static_cast<size_t>(n_experts), 0.0);
    n_rows = 0;
}

double RouterStats::aux_loss(int64_t n_experts) const {
    if (n_rows == 0) return 0.0;
    double s = 0, n = static_cast<double>(n_rows);
    for (size_t e = 0; e < sel_count.size(); ++e) s += (sel_count[e] / n) * (prob_sum[e] / n);
    return static_cast<double>(n_experts) * s;
}

Moe::Moe(const ModelConfig& cfg, MoeParams p, comm::Communicator* tp)
    : cfg_(&cfg), p_(std::move(p)) {
    if (tp != nullptr && tp->size() > 1) {
        tp_ = tp;
        tp_first_ = tp->rank() == 0;
    }
    for (const MlpParams& e : p_.experts) {
        experts_.emplace_back(MlpKind::swiglu, cfg.intermediate, e, ops::GeluKind::kTanh,
                              tp_first_);
    }
}

void Moe::forward(const ParamBinding& p, Saved& s, const Tensor& residual, const Tensor& x,
                  RouterStats* stats) const {
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
    int64_t cap = N * k;
    if (cfg_->moe.capacity_factor > 0) {
        cap = static_cast<int64_t>(std::ceil(static_cast<double>(k * N) / static_cast<double>(E) *
                                             cfg_->moe.capacity_factor));
        cap = std::max(cap, cfg_->moe.min_capacity);
    }
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
    }

    s.xe.resize(static_cast<size_t>(E));
    s.ye.resize(static_cast<size_t>(E));
    s.mlp.resize(static_cast<size_t>(E));
    const Tensor weights = on_host(s.weights);
    const float* w = weights.data<float>();
    const Tensor residual_h = on_host(residual);
    float* res = residual_h.data<float>();
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
        const Tensor ye_h = on_host(ye);
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
                   const Tensor& x, const RouterStats* stats, double aux_scale) const {
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
    for (int64_t e = 0; e < E; ++e) {
        const auto& rows = s.rows[static_cast<size_t>(e)];
        auto ne = static_cast<int64_t>(rows.size());
        if (ne == 0) continue;
        const Tensor ye_h = on_host(s.ye[static_cast<size_t>(e)]);
        const float* y = ye_h.data<float>();
        Tensor dye = Tensor::empty({ne, C}, DType::f32);
        float* dy = dye.data<float>();
        for (int64_t r = 0; r < ne; ++r) {
            int64_t flat = rows[static_cast<size_t>(r)];
            const float* g = dr + (flat / k) * C;
            double dot = 0;
            for (int64_t c = 0; c < C; ++c) {
                dy[r * C + c] = w[flat] * g[c];
                dot += static_cast<double>(g[c]) * y[r * C + c];
            }
            dw[flat] = static_cast<float>(dot);
        }
        Tensor dxe = Tensor::empty({ne, C}, ct, dev);
        experts_[static_cast<size_t>(e)].run_backward(p, s.mlp[static_cast<size_t>(e)], dxe,
                                                      dye.to(ct).to(dev),
                                                      s.xe[static_cast<size_t>(e)]);
        Tensor dxe32 = on_host(dxe.to(DType::f32));
        const float* d = dxe32.data<float>();
        for (int64_t r = 0; r < ne; ++r) {
            float* dst = dxa + (rows[static_cast<size_t>(r)] / k) * C;
            for (int64_t c = 0; c < C; ++c) dst[c] += d[r * C + c];
        }
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

}  // namespace zs::models
