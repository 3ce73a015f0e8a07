#include "ops/matmul.h"

#include <cmath>
#include <utility>

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;
using core::Shape;

namespace {

bool unit_stride_2d(const Tensor& t) {
    return t.stride(-1) == 1 || t.stride(-2) == 1 || t.size(-1) <= 1 || t.size(-2) <= 1;
}

// [rows, C] view of a row-layout tensor [..., C].
Tensor as_2d(const char* op, const char* arg, const Tensor& t) {
    Rows r = check::rows(op, arg, t);
    return t.as_strided(Shape{r.n, r.cols}, Shape{r.stride, 1});
}

}  // namespace

void matmul(const Tensor& out, const Tensor& a, const Tensor& b, const MatmulOptions& opts,
            const Tensor& bias) {
    const char* op = "matmul";
    check::defined(op, "out", out);
    check::defined(op, "a", a);
    check::defined(op, "b", b);
    check::same_device(op, {{"out", &out}, {"a", &a}, {"b", &b}, {"bias", &bias}});
    check::dtype(op, "a", a, {DType::f32, DType::bf16});
    check::dtype(op, "b", b, {a.dtype()});
    check::dtype(op, "out", out, {DType::f32, DType::bf16});
    ZS_CHECK_T(ShapeError, a.dim() >= 2 && b.dim() >= 2,
               "matmul: 'a' {} and 'b' {} need at least 2 dims", a.shape().str(), b.shape().str());
    ZS_CHECK_T(ShapeError, b.dim() == 2 || b.dim() == a.dim(),
               "matmul: 'b' {} must be 2-D or have the batch dims of 'a' {}", b.shape().str(),
               a.shape().str());
    int64_t m = opts.trans_a ? a.size(-1) : a.size(-2);
    int64_t k = opts.trans_a ? a.size(-2) : a.size(-1);
    int64_t kb = opts.trans_b ? b.size(-1) : b.size(-2);
    int64_t n = opts.trans_b ? b.size(-2) : b.size(-1);
    ZS_CHECK_T(ShapeError, k == kb,
               "matmul: inner dims differ: 'a' {}{} has K={}, 'b' {}{} has K={}", a.shape().str(),
               opts.trans_a ? "^T" : "", k, b.shape().str(), opts.trans_b ? "^T" : "", kb);
    Shape expect;
    for (int i = 0; i < a.dim() - 2; ++i) expect.push_back(a.size(i));
    if (b.dim() > 2) {
        for (int i = 0; i < b.dim() - 2; ++i) {
            ZS_CHECK_T(ShapeError, b.size(i) == a.size(i),
                       "matmul: batch dims of 'b' {} differ from 'a' {}", b.shape().str(),
                       a.shape().str());
        }
    }
    expect.push_back(m);
    expect.push_back(n);
    check::shape(op, "out", out, expect);
    for (auto [name, t] : {std::pair{"a", &a}, std::pair{"b", &b}, std::pair{"out", &out}}) {
        ZS_CHECK_T(ShapeError, unit_stride_2d(*t),
                   "matmul: argument '{}' ({}) needs a unit stride in one of its last two dims",
                   name, t->str());
    }
    if (bias.defined()) {
        check::dtype(op, "bias", bias, {DType::f32, a.dtype()});
        check::shape(op, "bias", bias, Shape{n});
        check::contiguous(op, "bias", bias);
        ZS_CHECK_T(ShapeError, opts.alpha == 1.0f, "matmul: a bias needs alpha == 1 (got {})",
                   opts.alpha);
    }
    if (out.numel() == 0) return;
    kernels_for(out.device()).matmul(out, a, b, opts, bias);
}

void sum_rows(const Tensor& out, const Tensor& in, bool accumulate) {
    const char* op = "sum_rows";
    check::defined(op, "out", out);
    check::defined(op, "in", in);
    check::same_device(op, {{"out", &out}, {"in", &in}});
    check::dtype(op, "out", out, {DType::f32});
    check::dtype(op, "in", in, {DType::f32, DType::bf16});
    Rows r = check::rows(op, "in", in);
    check::shape(op, "out", out, Shape{r.cols});
    check::contiguous(op, "out", out);
    kernels_for(out.device()).sum_rows(out, in, accumulate);
}

void linear_forward(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
    const char* op = "linear_forward";
    check::defined(op, "out", out);
    check::defined(op, "x", x);
    check::defined(op, "w", w);
    check::ndim(op, "w", w, 2);
    ZS_CHECK_T(ShapeError, x.dim() >= 1 && x.size(-1) == w.size(1),
               "linear_forward: 'x' {} has {} input features; 'w' {} expects {}", x.shape().str(),
               x.dim() ? x.size(-1) : 0, w.shape().str(), w.size(1));
    ZS_CHECK_T(ShapeError, out.dim() == x.dim() && out.size(-1) == w.size(0),
               "linear_forward: 'out' {} must be 'x' {} with last dim {}", out.shape().str(),
               x.shape().str(), w.size(0));
    matmul(as_2d(op, "out", out), as_2d(op, "x", x), w, {.trans_b = true}, bias);
}

namespace {

// quant_linear_forward's checks (an RmsNormFold's product too, with x its `normed`): the 2-D views
// of out and x the kernels take.
std::pair<Tensor, Tensor> checked_quant_linear(const Tensor& out, const Tensor& x,
                                               const core::QTensor& w, const Tensor& bias) {
    const char* op = "quant_linear_forward";
    check::defined(op, "out", out);
    check::defined(op, "x", x);
    ZS_CHECK_T(ShapeError, w.defined(), "quant_linear_forward: 'w' is undefined");
    ZS_CHECK_T(ShapeError, x.dim() >= 1 && x.size(-1) == w.cols(),
               "quant_linear_forward: 'x' {} has {} input features; 'w' {} expects {}",
               x.shape().str(), x.dim() ? x.size(-1) : 0, w.str(), w.cols());
    ZS_CHECK_T(ShapeError, out.dim() == x.dim() && out.size(-1) == w.rows(),
               "quant_linear_forward: 'out' {} must be 'x' {} with last dim {}", out.shape().str(),
               x.shape().str(), w.rows());
    ZS_CHECK_T(ShapeError,
               core::is_floating(x.dtype()) && x.dtype() != core::DType::f16 &&
                   core::is_floating(out.dtype()) && out.dtype() != core::DType::f16,
               "quant_linear_forward: 'x' {} and 'out' {} must be f32 or bf16", x.str(), out.str());
    ZS_CHECK_T(ShapeError, out.device() == x.device() && x.device() == w.device(),
               "quant_linear_forward: 'out' {}, 'x' {} and 'w' {} must share a device", out.str(),
               x.str(), w.str());
    if (bias.defined()) {
        ZS_CHECK_T(ShapeError, bias.dim() == 1 && bias.size(0) == w.rows() && bias.stride(0) == 1,
                   "quant_linear_forward: 'bias' {} must be [{}] and contiguous", bias.str(),
                   w.rows());
    }
    Tensor o = as_2d(op, "out", out), a = as_2d(op, "x", x);
    ZS_CHECK_T(ShapeError, o.stride(1) == 1 && a.stride(1) == 1,
               "quant_linear_forward: 'out' {} and 'x' {} need contiguous rows", out.str(),
               x.str());
    return {o, a};
}

// quant_swiglu_forward's checks (an RmsNormFold's MLP too, with x its `normed`).
void check_quant_swiglu(const Tensor& out, const Tensor& x, const core::QTensor& w_gate_up,
                        const core::QTensor& w_down, const Tensor& h, const Tensor& a) {
    const char* op = "quant_swiglu_forward";
    check::defined(op, "h", h);
    check::defined(op, "a", a);
    ZS_CHECK_T(ShapeError, w_gate_up.defined() && w_down.defined(),
               "quant_swiglu_forward: 'w_gate_up' and 'w_down' must be defined");
    const int64_t F = w_down.cols();
    ZS_CHECK_T(ShapeError, w_gate_up.rows() == 2 * F && w_down.rows() == w_gate_up.cols(),
               "quant_swiglu_forward: 'w_gate_up' {} must be [2F, C] and 'w_down' {} [C, F]",
               w_gate_up.str(), w_down.str());
    ZS_CHECK_T(ShapeError,
               x.dim() == 2 && h.dim() == 2 && a.dim() == 2 && h.size(0) == x.size(0) &&
                   a.size(0) == x.size(0) && h.size(1) == 2 * F && a.size(1) == F &&
                   h.dtype() == x.dtype() && a.dtype() == x.dtype() && h.is_contiguous() &&
                   a.is_contiguous(),
               "quant_swiglu_forward: 'x' {}, 'h' {} and 'a' {} must be [N, C], [N, {}] and [N, "
               "{}] contiguous in x's dtype",
               x.str(), h.str(), a.str(), 2 * F, F);
    // The two products' own checks (shapes, dtypes, devices, strides).
    check::defined(op, "out", out);
    check::defined(op, "x", x);
    ZS_CHECK_T(ShapeError,
               x.size(1) == w_gate_up.cols() && out.dim() == 2 && out.size(0) == x.size(0) &&
                   out.size(1) == w_down.rows(),
               "quant_swiglu_forward: 'x' {} and 'out' {} must be [N, {}]", x.str(), out.str(),
               w_gate_up.cols());
    ZS_CHECK_T(ShapeError,
               core::is_floating(x.dtype()) && x.dtype() != core::DType::f16 &&
                   core::is_floating(out.dtype()) && out.dtype() != core::DType::f16,
               "quant_swiglu_forward: 'x' {} and 'out' {} must be f32 or bf16", x.str(), out.str());
    ZS_CHECK_T(ShapeError,
               out.device() == x.device() && x.device() == w_gate_up.device() &&
                   x.device() == w_down.device() && h.device() == x.device() &&
                   a.device() == x.device(),
               "quant_swiglu_forward: 'out' {}, 'x' {}, 'h', 'a' and the weights must share a "
               "device",
               out.str(), x.str());
    ZS_CHECK_T(ShapeError, out.stride(1) == 1 && x.stride(1) == 1,
               "quant_swiglu_forward: 'out' {} and 'x' {} need contiguous rows", out.str(),
               x.str());
}

// The norm of an RmsNormFold: x [N, C] f32/bf16 with contiguous rows, weight [C] contiguous,
// normed x's shape with contiguous rows, all on one device.
void check_fold(const char* op, const Tensor& x, const RmsNormFold& norm) {
    check::defined(op, "x", x);
    check::defined(op, "norm.weight", norm.weight);
    check::defined(op, "norm.normed", norm.normed);
    ZS_CHECK_T(
        ShapeError,
        x.dim() == 2 && x.stride(1) == 1 && (x.dtype() == DType::f32 || x.dtype() == DType::bf16),
        "{}: 'x' {} must be [N, C] f32 or bf16 with contiguous rows", op, x.str());
    ZS_CHECK_T(ShapeError,
               norm.weight.dim() == 1 && norm.weight.size(0) == x.size(1) &&
                   norm.weight.is_contiguous() &&
                   (norm.weight.dtype() == DType::f32 || norm.weight.dtype() == DType::bf16),
               "{}: 'norm.weight' {} must be [{}] f32 or bf16, contiguous", op, norm.weight.str(),
               x.size(1));
    ZS_CHECK_T(ShapeError, norm.normed.shape() == x.shape() && norm.normed.stride(1) == 1,
               "{}: 'norm.normed' {} must be x's shape {} with contiguous rows", op,
               norm.normed.str(), x.shape().str());
    ZS_CHECK_T(ShapeError, norm.eps >= 0.0f && std::isfinite(norm.eps),
               "{}: 'norm.eps' {} must be finite and >= 0", op, norm.eps);
    ZS_CHECK_T(ShapeError, norm.weight.device() == x.device() && norm.normed.device() == x.device(),
               "{}: 'x' {}, 'norm.weight' {} and 'norm.normed' {} must share a device", op, x.str(),
               norm.weight.str(), norm.normed.str());
}

}  // namespace

void quant_linear_forward(const Tensor& out, const Tensor& x, const core::QTensor& w,
                          const Tensor& bias, float beta) {
    auto [o, a] = checked_quant_linear(out, x, w, bias);
    kernels_for(out.device()).quant_linear(o, a, w, bias, beta);
}

void quant_linear_forward(const Tensor& out, const Tensor& x, const RmsNormFold& norm,
                          const core::QTensor& w, const Tensor& bias, float beta) {
    check_fold("quant_linear_forward", x, norm);
    auto [o, a] = checked_quant_linear(out, norm.normed, w, bias);
    kernels_for(out.device()).quant_norm_linear(o, x, norm, w, bias, beta);
}

void quant_swiglu_forward(const Tensor& out, const Tensor& x, const core::QTensor& w_gate_up,
                          const core::QTensor& w_down, const Tensor& h, const Tensor& a,
                          float beta) {
    check_quant_swiglu(out, x, w_gate_up, w_down, h, a);
    kernels_for(out.device()).quant_swiglu(out, x, w_gate_up, w_down, h, a, beta);
}

void quant_swiglu_forward(const Tensor& out, const Tensor& x, const RmsNormFold& norm,
                          const core::QTensor& w_gate_up, const core::QTensor& w_down,
                          const Tensor& h, const Tensor& a, float beta) {
    check_fold("quant_swiglu_forward", x, norm);
    check_quant_swiglu(out, norm.normed, w_gate_up, w_down, h, a);
    kernels_for(out.device()).quant_norm_swiglu(out, x, norm, w_gate_up, w_down, h, a, beta);
}

void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dbias, const Tensor& dout,
                     const Tensor& x, const Tensor& w) {
    const char* op = "linear_backward";
    check::defined(op, "dout", dout);
    check::defined(op, "w", w);
    check::ndim(op, "w", w, 2);
    Tensor dout2 = as_2d(op, "dout", dout);
    ZS_CHECK_T(ShapeError, dout2.size(1) == w.size(0),
               "linear_backward: 'dout' {} has {} features; 'w' {} has {} outputs",
               dout.shape().str(), dout2.size(1), w.shape().str(), w.size(0));
    if (dx.defined()) {
        matmul(as_2d(op, "dx", dx), dout2, w, {});
    }
    if (dw.defined()) {
        check::defined(op, "x", x);
        matmul(dw, dout2, as_2d(op, "x", x), {.trans_a = true, .beta = 1.0f});
    }
    if (dbias.defined()) sum_rows(dbias, dout2, true);
}

}  // namespace zs::ops
