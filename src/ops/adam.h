// The AdamW / Adam update of one flat segment on the segment's device: the kernel behind
// zero::Engine's step off the CPU. On the CPU the engine keeps optim::Optimizer's fused
// multi-segment pass (optim/ sits above ops/, so a CPU kernel here could not call it); this op's
// arithmetic is that pass's (optim/optimizer.cpp adam_range), in f32 per element:
//   g = grad * grad_scale;  adam: g += wd * p;  adamw: p *= 1 - lr * wd
//   m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g^2
//   p -= step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)
// and the compute copy of p (f32 or bf16) written in the same pass. Backends without it throw
// NotSupported naming the backend and the op.
#pragma once

#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

struct AdamStep {
    float lr = 0;
    float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
    float weight_decay = 0;  // 0 for a segment exempt from decay
    bool decoupled = true;   // AdamW; false: Adam's L2 term added to the gradient
    float step_size = 0;     // lr / (1 - beta1^t); lr without bias correction
    float inv_sqrt_bc2 = 1;  // 1 / sqrt(1 - beta2^t); 1 without bias correction
    float grad_scale = 1;    // multiplies every gradient first (loss scale, clipping)
};

// master, m, v (updated in place) and grad: f32 [n], contiguous; compute: [n] f32 or bf16,
// contiguous, or undefined (no compute copy); all on one device.
void adam_update(const Tensor& master, const Tensor& m, const Tensor& v, const Tensor& compute,
                 const Tensor& grad, const AdamStep& step);

}  // namespace zs::ops
