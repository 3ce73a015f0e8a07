#include "ops/norm.h"

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;
using core::Shape;

namespace {

constexpr auto kFloat = {DType::f32, DType::bf16};

// Validate x/out-like arguments as rows of C, a [C] weight, and per-row f32 statistics.
Rows check_rows_and_param(const char* op, const Tensor& x, const Tensor& w) {
    check::defined(op, "x", x);
    check::defined(op, "w", w);
    check::dtype(op, "x", x, kFloat);
    check::dtype(op, "w", w, kFloat);
    Rows r = check::rows(op, "x", x);
    check::shape(op, "w", w, Shape{r.cols});
    check::contiguous(op, "w", w);
    return r;
}

void check_stat(const char* op, const char* arg, const Tensor& s, const Rows& r) {
    if (!s.defined()) return;
    check::dtype(op, arg, s, {DType::f32});
    check::contiguous(op, arg, s);
    ZS_CHECK_T(ShapeError, s.numel() == r.n,
               "{}: argument '{}' {} must hold one value per row ({})", op, arg, s.shape().str(),
               r.n);
}

void check_like_x(const char* op, const char* arg, const Tensor& t, const Tensor& x,
                  bool same_dtype) {
    check::defined(op, arg, t);
    if (same_dtype) {
        check::dtype(op, arg, t, {x.dtype()});
    } else {
        check::dtype(op, arg, t, kFloat);
    }
    check::same_shape(op, arg, t, "x", x);
    check::rows(op, arg, t);
}

void check_param_grad(const char* op, const char* arg, const Tensor& g, const Tensor& w) {
    if (!g.defined()) return;
    check::dtype(op, arg, g, {DType::f32});
    check::same_shape(op, arg, g, "w", w);
    check::contiguous(op, arg, g);
}

}  // namespace

void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                       const Tensor& w, const Tensor& b, float eps) {
    const char* op = "layernorm_forward";
    Rows r = check_rows_and_param(op, x, w);
    check::defined(op, "b", b);
    check::dtype(op, "b", b, {w.dtype()});
    check::same_shape(op, "b", b, "w", w);
    check::contiguous(op, "b", b);
    check_like_x(op, "out", out, x, false);
    check_stat(op, "mean", mean, r);
    check_stat(op, "rstd", rstd, r);
    check::same_device(
        op, {{"out", &out}, {"x", &x}, {"w", &w}, {"b", &b}, {"mean", &mean}, {"rstd", &rstd}});
    if (r.n == 0) return;
    kernels_for(x.device()).layernorm_forward(out, mean, rstd, x, w, b, eps);
}

void layernorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dout,
                        const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd) {
    const char* op = "layernorm_backward";
    Rows r = check_rows_and_param(op, x, w);
    check_like_x(op, "dout", dout, x, false);
    check_like_x(op, "dx", dx, x, true);
    check_param_grad(op, "dw", dw, w);
    check_param_grad(op, "db", db, w);
    check::defined(op, "mean", mean);
    check::defined(op, "rstd", rstd);
    check_stat(op, "mean", mean, r);
    check_stat(op, "rstd", rstd, r);
    check::same_device(op, {{"dx", &dx},
                            {"dw", &dw},
                            {"db", &db},
                            {"dout", &dout},
                            {"x", &x},
                            {"w", &w},
                            {"mean", &mean},
                            {"rstd", &rstd}});
    if (r.n == 0) return;
    kernels_for(x.device()).layernorm_backward(dx, dw, db, dout, x, w, mean, rstd);
}

void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w,
                     float eps) {
    const char* op = "rmsnorm_forward";
    Rows r = check_rows_and_param(op, x, w);
    check_like_x(op, "out", out, x, false);
    check_stat(op, "rstd", rstd, r);
    check::same_device(op, {{"out", &out}, {"x", &x}, {"w", &w}, {"rstd", &rstd}});
    if (r.n == 0) return;
    kernels_for(x.device()).rmsnorm_forward(out, rstd, x, w, eps);
}

void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dout, const Tensor& x,
                      const Tensor& w, const Tensor& rstd) {
    const char* op = "rmsnorm_backward";
    Rows r = check_rows_and_param(op, x, w);
    check_like_x(op, "dout", dout, x, false);
    check_like_x(op, "dx", dx, x, true);
    check_param_grad(op, "dw", dw, w);
    check::defined(op, "rstd", rstd);
    check_stat(op, "rstd", rstd, r);
    check::same_device(
        op, {{"dx", &dx}, {"dw", &dw}, {"dout", &dout}, {"x", &x}, {"w", &w}, {"rstd", &rstd}});
    if (r.n == 0) return;
    kernels_for(x.device()).rmsnorm_backward(dx, dw, dout, x, w, rstd);
}

}  // namespace zs::ops
