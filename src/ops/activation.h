// Pointwise activations and the elementwise ops of the residual stream.
//
// All take f32 or bf16 (computing in f32), any shape whose rows have a contiguous last dim.
// Backward writes dx (=), as activation gradients are not on the residual stream.
#pragma once

#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

// GELU: x * Phi(x). kTanh is the tanh approximation (GPT-2's "gelu_new", "gelu_fast",
// "gelu_pytorch_tanh"; torch approximate="tanh"); kErf the exact form (HF "gelu", torch's default)
// with Phi(x) = (1 + erf(x / sqrt 2)) / 2.
enum class GeluKind { kTanh, kErf };
const char* to_string(GeluKind k);
void gelu_forward(const Tensor& out, const Tensor& x, GeluKind kind = GeluKind::kTanh);
void gelu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x,
                   GeluKind kind = GeluKind::kTanh);

// SiLU: x * sigmoid(x).
void silu_forward(const Tensor& out, const Tensor& x);
void silu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x);

// SwiGLU: out = silu(gate) * up. gate, up, out [..., H] (gate/up may be column slices of one
// fused [..., 2H] projection). Backward: dout, gate and up share one dtype, and dgate, dup another.
void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up);
void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout, const Tensor& gate,
                     const Tensor& up);

// out = a + b (same shapes; out may alias a or b): the residual add.
void add(const Tensor& out, const Tensor& a, const Tensor& b);
// out = alpha * a (out may alias a).
void scale(const Tensor& out, const Tensor& a, float alpha);

}  // namespace zs::ops
