#include "models/layers/layers.h"

#include <cstdlib>
#include <string_view>

#include "base/error.h"
#include "ops/activation.h"
#include "ops/matmul.h"
#include "ops/norm.h"

namespace zs::models {

void ensure(Tensor& t, const Shape& shape, DType dtype, core::Device device,
            core::MemCategory cat) {
    if (t.defined() && t.shape() == shape && t.dtype() == dtype && t.device() == device &&
        t.is_contiguous()) {
        return;
    }
    t = Tensor();  // release first, so peak memory does not hold both
    t = Tensor::empty(shape, dtype, device, cat);
}

namespace {

// The compute-dtype view of an f32 gradient: itself when ct is f32, else a converted copy.
Tensor as_compute(const Tensor& t, DType ct, Tensor& scratch) {
    if (t.dtype() == ct) return t;
    ensure(scratch, t.shape(), ct, t.device(), core::MemCategory::buffers);
    scratch.copy_from(t);
    return scratch;
}

const Tensor& opt(const ParamBinding& p, ParamId id) {
    static const Tensor kNone;
    return id == kNoParam ? kNone : p.w(id);
}
const Tensor& opt_grad(const ParamBinding& p, ParamId id) {
    static const Tensor kNone;
    return id == kNoParam ? kNone : p.g(id);
}

}  // namespace

void WeightGradQueue::push(const Tensor& dw, const Tensor& dbias, const Tensor& dout,
                           const Tensor& x, Operand dout_kind) {
    Item it{dw, dbias, dout_kind == Operand::temporary ? dout : dout.clone(),
            dw.defined() ? x.clone() : Tensor()};
    bytes_ += it.dout.nbytes() + (it.x.defined() ? it.x.nbytes() : 0);
    items_.push_back(std::move(it));
}

void WeightGradQueue::run() {
    for (const Item& it : items_) {
        // The GEMM the fused backward runs (ops::linear_backward's dw += dout^T x).
        if (it.dw.defined()) ops::matmul(it.dw, it.dout, it.x, {.trans_a = true, .beta = 1.0f});
        if (it.dbias.defined()) ops::sum_rows(it.dbias, it.dout, true);
    }
    items_.clear();
    bytes_ = 0;
}

void linear_backward(const ParamBinding& p, ParamId w, ParamId bias, const Tensor& dx,
                     const Tensor& dout, const Tensor& x, Operand dout_kind) {
    WeightGradQueue* q = p.deferred_weight_grads();
    if (q == nullptr) {
        ops::linear_backward(dx, p.g(w), opt_grad(p, bias), dout, x, p.w(w));
        return;
    }
    if (dx.defined()) ops::linear_backward(dx, Tensor(), Tensor(), dout, x, p.w(w));
    q->push(p.g(w), opt_grad(p, bias), dout, x, dout_kind);
}

void linear(const ParamBinding& p, ParamId w, const Tensor& out, const Tensor& x,
            const Tensor& bias, float beta) {
    if (const core::QTensor& q = p.qw(w); q.defined()) {
        ops::quant_linear_forward(out, x, q, bias, beta);
    } else if (beta == 0.0f) {
        ops::linear_forward(out, x, p.w(w), bias);
    } else {
        ops::matmul(out, x, p.w(w), {.trans_b = true, .beta = beta}, bias);
    }
}

// ---------------------------------------------------------------------------------------- Norm

void Norm::forward(const ParamBinding& p, const Tensor& out, const Tensor& mean, const Tensor& rstd,
                   const Tensor& x) const {
    switch (kind_) {
        case NormKind::layernorm:
            ops::layernorm_forward(out, mean, rstd, x, p.w(w_), p.w(b_), eps_);
            return;
        case NormKind::rmsnorm:
            ops::rmsnorm_forward(out, rstd, x, p.w(w_), eps_);
            return;
    }
}

void Norm::backward(const ParamBinding& p, const Tensor& dx, const Tensor& dout, const Tensor& x,
                    const Tensor& mean, const Tensor& rstd) const {
    switch (kind_) {
        case NormKind::layernorm:
            ops::layernorm_backward(dx, p.g(w_), p.g(b_), dout, x, p.w(w_), mean, rstd);
            return;
        case NormKind::rmsnorm:
            ops::rmsnorm_backward(dx, p.g(w_), dout, x, p.w(w_), rstd);
            return;
    }
}

// ----------------------------------------------------------------------------------- Attention

Tensor Attention::q_view(const Tensor& qkv, int64_t B, int64_t T) const {
    int64_t W = qkv.size(1), HS = cfg_->head_dim;
    return qkv.as_strided({B, T, cfg_->n_heads, HS}, {T * W, W, HS, 1}, 0);
}
Tensor Attention::k_view(const Tensor& qkv, int64_t B, int64_t T) const {
    int64_t W = qkv.size(1), HS = cfg_->head_dim;
    return qkv.as_strided({B, T, cfg_->n_kv_heads, HS}, {T * W, W, HS, 1}, cfg_->q_dim());
}
Tensor Attention::v_view(const Tensor& qkv, int64_t B, int64_t T) const {
    int64_t W = qkv.size(1), HS = cfg_->head_dim;
    return qkv.as_strided({B, T, cfg_->n_kv_heads, HS}, {T * W, W, HS, 1},
                          cfg_->q_dim() + cfg_->kv_dim());
}

void Attention::forward(const ParamBinding& p, Saved& s, const Tensor& residual, const Tensor& x,
                        int64_t B, int64_t T, const Tensor& positions, AttentionCore& core,
                        const PreNorm& pre) const {
    const int64_t N = B * T;
    DType ct = x.dtype();
    ensure(s.qkv, {N, cfg_->qkv_dim()}, ct, x.device());
    if (pre.norm && pre.norm->foldable() && p.qw(p_.wqkv).defined()) {
        ops::quant_linear_forward(s.qkv, pre.raw, pre.norm->fold(p, x), p.qw(p_.wqkv),
                                  opt(p, p_.bqkv));
    } else {
        if (pre.norm) pre.norm->forward(p, x, Tensor(), Tensor(), pre.raw);
        linear(p, p_.wqkv, s.qkv, x, opt(p, p_.bqkv));
    }
    if (rope_) {
        int64_t W = cfg_->qkv_dim(), HS = cfg_->head_dim;
        ops::rope_forward(s.qkv.as_strided({N, cfg_->n_heads, HS}, {W, HS, 1}, 0), positions,
                          *rope_);
        ops::rope_forward(s.qkv.as_strided({N, cfg_->n_kv_heads, HS}, {W, HS, 1}, cfg_->q_dim()),
                          positions, *rope_);
    }
    ensure(s.att, {N, cfg_->q_dim()}, ct, x.device());
    const bool save = core.supports_backward();
    if (save) ensure(s.lse, {B, cfg_->n_heads, T}, DType::f32, x.device());
    core.forward(layer_, opts_, s.att.view({B, T, cfg_->n_heads, cfg_->head_dim}),
                 save ? s.lse : Tensor(), q_view(s.qkv, B, T), k_view(s.qkv, B, T),
                 v_view(s.qkv, B, T));
    linear(p, p_.wo, residual, s.att, add_out_bias_ ? opt(p, p_.bo) : Tensor(), 1.0f);
}

void Attention::backward(const ParamBinding& p, const Saved& s, const Tensor& dx,
                         const Tensor& dres, const Tensor& x, int64_t B, int64_t T,
                         const Tensor& positions, AttentionCore& core) const {
    const int64_t N = B * T;
    DType ct = x.dtype();
    Tensor scratch;
    Tensor d = as_compute(dres, ct, scratch);
    Tensor datt = Tensor::empty({N, cfg_->q_dim()}, ct, x.device());
    linear_backward(p, p_.wo, p_.bo, datt, d, s.att);
    Tensor dqkv = Tensor::empty({N, cfg_->qkv_dim()}, ct, x.device());
    Shape heads{B, T, cfg_->n_heads, cfg_->head_dim};
    core.backward(layer_, opts_, q_view(dqkv, B, T), k_view(dqkv, B, T), v_view(dqkv, B, T),
                  datt.view(heads), q_view(s.qkv, B, T), k_view(s.qkv, B, T), v_view(s.qkv, B, T),
                  s.att.view(heads), s.lse);
    if (rope_) {
        int64_t W = cfg_->qkv_dim(), HS = cfg_->head_dim;
        ops::rope_backward(dqkv.as_strided({N, cfg_->n_heads, HS}, {W, HS, 1}, 0), positions,
                           *rope_);
        ops::rope_backward(dqkv.as_strided({N, cfg_->n_kv_heads, HS}, {W, HS, 1}, cfg_->q_dim()),
                           positions, *rope_);
    }
    linear_backward(p, p_.wqkv, p_.bqkv, dx, dqkv, x, Operand::temporary);
}

// ----------------------------------------------------------------------------------------- Mlp

bool Mlp::fused_quant_swiglu(const ParamBinding& p) const {
    // ZS_DECODE_FUSE=0: the three ops one by one (the A/B of docs/BENCHMARKS.md; same results).
    const char* e = std::getenv("ZS_DECODE_FUSE");
    if (e != nullptr && std::string_view(e) == "0") return false;
    return p_.up_bias == kNoParam && (p_.down_bias == kNoParam || !add_out_bias_) &&
           p.qw(p_.up).defined() && p.qw(p_.down).defined();
}

void Mlp::run(const ParamBinding& p, Saved& s, const Tensor& out, const Tensor& x, float beta,
              const PreNorm& pre) const {
    const int64_t N = x.size(0);
    DType ct = x.dtype();
    const bool fused = kind_ != MlpKind::gelu && fused_quant_swiglu(p);
    const bool fold = fused && pre.norm && pre.norm->foldable();  // the norm inside the MLP
    if (pre.norm && !fold) pre.norm->forward(p, x, Tensor(), Tensor(), pre.raw);
    switch (kind_) {
        case MlpKind::gelu:
            ensure(s.h, {N, ff_}, ct, x.device());
            ensure(s.a, {N, ff_}, ct, x.device());
            linear(p, p_.up, s.h, x, opt(p, p_.up_bias));
            ops::gelu_forward(s.a, s.h, gelu_);
            break;
        case MlpKind::swiglu:
        case MlpKind::moe:
            ensure(s.h, {N, 2 * ff_}, ct, x.device());
            ensure(s.a, {N, ff_}, ct, x.device());
            if (fold) {
                ops::quant_swiglu_forward(out, pre.raw, pre.norm->fold(p, x), p.qw(p_.up),
                                          p.qw(p_.down), s.h, s.a, beta);
                return;
            }
            if (fused) {
                ops::quant_swiglu_forward(out, x, p.qw(p_.up), p.qw(p_.down), s.h, s.a, beta);
                return;
            }
            linear(p, p_.up, s.h, x, opt(p, p_.up_bias));
            ops::swiglu_forward(s.a, s.h.slice(1, 0, ff_), s.h.slice(1, ff_, 2 * ff_));
            break;
    }
    linear(p, p_.down, out, s.a, add_out_bias_ ? opt(p, p_.down_bias) : Tensor(), beta);
}

void Mlp::run_backward(const ParamBinding& p, const Saved& s, const Tensor& dx, const Tensor& dout,
                       const Tensor& x) const {
    const int64_t N = x.size(0);
    DType ct = x.dtype();
    Tensor da = Tensor::empty({N, ff_}, ct, x.device());
    linear_backward(p, p_.down, p_.down_bias, da, dout, s.a);
    Tensor dh = Tensor::empty(s.h.shape(), ct, x.device());
    switch (kind_) {
        case MlpKind::gelu:
            ops::gelu_backward(dh, da, s.h, gelu_);
            break;
        case MlpKind::swiglu:
        case MlpKind::moe:
            ops::swiglu_backward(dh.slice(1, 0, ff_), dh.slice(1, ff_, 2 * ff_), da,
                                 s.h.slice(1, 0, ff_), s.h.slice(1, ff_, 2 * ff_));
            break;
    }
    linear_backward(p, p_.up, p_.up_bias, dx, dh, x, Operand::temporary);
}

void Mlp::forward(const ParamBinding& p, Saved& s, const Tensor& residual, const Tensor& x,
                  const PreNorm& pre) const {
    run(p, s, residual, x, 1.0f, pre);
}

void Mlp::backward(const ParamBinding& p, const Saved& s, const Tensor& dx, const Tensor& dres,
                   const Tensor& x) const {
    Tensor scratch;
    run_backward(p, s, dx, as_compute(dres, x.dtype(), scratch), x);
}

}  // namespace zs::models
