#include "ops/softmax.h"

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;

void softmax_forward(const Tensor& out, const Tensor& x) {
    const char* op = "softmax_forward";
    for (auto [name, t] : {std::pair{"x", &x}, std::pair{"out", &out}}) {
        check::defined(op, name, *t);
        check::dtype(op, name, *t, {DType::f32, DType::bf16});
        check::rows(op, name, *t);
    }
    check::same_shape(op, "out", out, "x", x);
    check::same_device(op, {{"out", &out}, {"x", &x}});
    if (x.numel() == 0) return;
    kernels_for(x.device()).softmax_forward(out, x);
}

void softmax_backward(const Tensor& dx, const Tensor& dout, const Tensor& out) {
    const char* op = "softmax_backward";
    for (auto [name, t] :
         {std::pair{"dx", &dx}, std::pair{"dout", &dout}, std::pair{"out", &out}}) {
        check::defined(op, name, *t);
        check::dtype(op, name, *t, {DType::f32, DType::bf16});
        check::rows(op, name, *t);
    }
    check::same_shape(op, "dx", dx, "out", out);
    check::same_shape(op, "dout", dout, "out", out);
    check::dtype(op, "dx", dx, {out.dtype()});
    check::dtype(op, "dout", dout, {out.dtype()});
    check::same_device(op, {{"dx", &dx}, {"dout", &dout}, {"out", &out}});
    if (out.numel() == 0) return;
    kernels_for(out.device()).softmax_backward(dx, dout, out);
}

}  // namespace zs::ops
