#include "ops/activation.h"

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;

namespace {

// Every argument is a defined f32/bf16 row tensor with the shape of the first, on one device.
void check_pointwise(const char* op,
                     std::initializer_list<std::pair<const char*, const Tensor*>> args) {
    const auto& [ref_name, ref] = *args.begin();
    for (const auto& [name, t] : args) {
        check::defined(op, name, *t);
        check::dtype(op, name, *t, {DType::f32, DType::bf16});
        check::same_shape(op, name, *t, ref_name, *ref);
        check::rows(op, name, *t);
    }
    check::same_device(op, args);
}

}  // namespace

const char* to_string(GeluKind k) {
    switch (k) {
        case GeluKind::kTanh:
            return "gelu (tanh approximation)";
        case GeluKind::kErf:
            return "gelu (exact, erf)";
    }
    return "?";
}

void gelu_forward(const Tensor& out, const Tensor& x, GeluKind kind) {
    check_pointwise("gelu_forward", {{"x", &x}, {"out", &out}});
    kernels_for(x.device()).gelu_forward(out, x, kind);
}

void gelu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x, GeluKind kind) {
    check_pointwise("gelu_backward", {{"x", &x}, {"dout", &dout}, {"dx", &dx}});
    kernels_for(x.device()).gelu_backward(dx, dout, x, kind);
}

void silu_forward(const Tensor& out, const Tensor& x) {
    check_pointwise("silu_forward", {{"x", &x}, {"out", &out}});
    kernels_for(x.device()).silu_forward(out, x);
}

void silu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x) {
    check_pointwise("silu_backward", {{"x", &x}, {"dout", &dout}, {"dx", &dx}});
    kernels_for(x.device()).silu_backward(dx, dout, x);
}

void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
    check_pointwise("swiglu_forward", {{"gate", &gate}, {"up", &up}, {"out", &out}});
    kernels_for(gate.device()).swiglu_forward(out, gate, up);
}

void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout, const Tensor& gate,
                     const Tensor& up) {
    check_pointwise(
        "swiglu_backward",
        {{"gate", &gate}, {"up", &up}, {"dout", &dout}, {"dgate", &dgate}, {"dup", &dup}});
    for (auto [name, t] : {std::pair{"up", &up}, std::pair{"dout", &dout}}) {
        check::dtype("swiglu_backward", name, *t, {gate.dtype()});
    }
    check::dtype("swiglu_backward", "dup", dup, {dgate.dtype()});
    kernels_for(gate.device()).swiglu_backward(dgate, dup, dout, gate, up);
}

void add(const Tensor& out, const Tensor& a, const Tensor& b) {
    check_pointwise("add", {{"a", &a}, {"b", &b}, {"out", &out}});
    kernels_for(a.device()).add(out, a, b);
}

void scale(const Tensor& out, const Tensor& a, float alpha) {
    check_pointwise("scale", {{"a", &a}, {"out", &out}});
    kernels_for(a.device()).scale(out, a, alpha);
}

}  // namespace zs::ops
