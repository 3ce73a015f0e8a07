// Softmax over the last dimension, numerically stable (max-subtracted), f32 accumulation.
//   x, out, dout, dx [..., N] (f32 or bf16; rows may be strided, last dim contiguous)
#pragma once

#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

void softmax_forward(const Tensor& out, const Tensor& x);
// dx = out * (dout - sum(dout * out)) (overwritten). out is the forward's result; dx, dout and
// out share one dtype.
void softmax_backward(const Tensor& dx, const Tensor& dout, const Tensor& out);

}  // namespace zs::ops
