// LayerNorm and RMSNorm over the last dimension, forward and backward.
//
// Shapes: x, out, dout, dx [..., C] (last dim contiguous, rows may be strided); w, b, dw, db [C];
// mean, rstd [...] f32 (one per row; pass undefined tensors at inference to skip saving them).
// Statistics and accumulation are f32 whatever the input dtype (f32 or bf16). out may differ in
// dtype from x, and so may dout from x in backward; dx has x's dtype; b has w's dtype.
//
// Backward follows the residual-stream convention (llm.c): dx += (it sits on the residual path),
// dw += and db += (parameter gradients accumulate).
#pragma once

#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

// y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps) (biased variance, as torch)
void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                       const Tensor& w, const Tensor& b, float eps);
void layernorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dout,
                        const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd);

// y = x * rstd * w,  rstd = 1 / sqrt(mean(x^2) + eps)  (Llama's RMSNorm)
void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w,
                     float eps);
void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dout, const Tensor& x,
                      const Tensor& w, const Tensor& rstd);

}  // namespace zs::ops
