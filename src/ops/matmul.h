// Matrix multiplication and the linear layer built on it.
//
// matmul: out = alpha * op(a) @ op(b) + beta * out (+ bias), fp32 accumulation.
//   a   [..., M, K]  ([..., K, M] when trans_a)      f32 or bf16
//   b   [..., K, N]  ([..., N, K] when trans_b)      same dtype as a; batch dims equal a's or
//   absent out [..., M, N]                                  f32 or bf16 bias [N] (optional) f32 or
//   a's dtype; needs alpha == 1
// Each matrix needs a unit stride in one of its two last dims (row- or column-major with any
// leading dimension); batch strides are free. So views (slices, transposes) go in without copies.
#pragma once

#include "core/quant.h"
#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

struct MatmulOptions {
    bool trans_a = false;
    bool trans_b = false;
    float alpha = 1.0f;
    float beta = 0.0f;  // 0: out is overwritten (its old contents may be NaN); 1: accumulate
};

void matmul(const Tensor& out, const Tensor& a, const Tensor& b, const MatmulOptions& opts = {},
            const Tensor& bias = {});

// Linear layer in the Hugging Face weight layout.
//   x [..., IC], w [OC, IC], bias [OC] (optional) -> out [..., OC]
void linear_forward(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias = {});
// dx = dout @ w (overwritten; skipped when dx is undefined), dw += dout^T @ x, dbias += sum(dout).
//   dout [..., OC]; dx [..., IC]; dw [OC, IC] (f32 or w's dtype); dbias [OC] f32 (optional)
void linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& dbias, const Tensor& dout,
                     const Tensor& x, const Tensor& w);

// The linear layer against a block-quantized weight (core/quant.h), forward only (inference):
//   out = x @ w^T + beta * out (+ bias)
//   x [..., IC] f32/bf16, w quantized [OC, IC], out [..., OC] f32/bf16, bias [OC] (optional)
// The result is the exact product up to the activations' Q8 rounding on the decode path (few
// rows: |error| <= sum_k |w_k| * step_k / 2, step_k = the activation block's scale) and up to the
// dense matmul's rounding of the dequantized weights for larger batches (backends/cpu/qgemv.h).
void quant_linear_forward(const Tensor& out, const Tensor& x, const core::QTensor& w,
                          const Tensor& bias = {}, float beta = 0.0f);

// An RMSNorm folded into a quantized product's input (decode): the product reads
// rmsnorm(x) * weight (ops/norm.h rmsnorm_forward with `eps`), which it also leaves in `normed`
// ([N, C], contiguous rows, the dtype the product's input would have) for later readers.
struct RmsNormFold {
    Tensor weight;  // [C] f32 or bf16
    float eps = 0.0f;
    Tensor normed;  // [N, C]
};

// quant_linear_forward on rmsnorm(x): x [N, C] f32/bf16. Bit for bit rmsnorm_forward(norm.normed,
// {}, x, norm.weight, norm.eps) then quant_linear_forward(out, norm.normed, w, bias, beta); on the
// CPU's decode path (few rows) every thread normalizes and quantizes the rows itself inside the
// product's OpenMP region (no serial norm between regions).
void quant_linear_forward(const Tensor& out, const Tensor& x, const RmsNormFold& norm,
                          const core::QTensor& w, const Tensor& bias = {}, float beta = 0.0f);

// The SwiGLU MLP against quantized weights in one call (inference):
//   h = x @ w_gate_up^T, a = silu(h[:, :F]) * h[:, F:], out = a @ w_down^T + beta * out
//   x [N, C], w_gate_up quantized [2F, C] (gate rows, then up rows), w_down quantized [C, F],
//   h [N, 2F] and a [N, F] in x's dtype (scratch, left holding the intermediates), out [N, C]
// Bit for bit the result of quant_linear_forward, swiglu_forward and quant_linear_forward in
// turn; on the CPU's decode path (few rows) all of it runs in one OpenMP region where the three
// ops open two (docs/ARCHITECTURE.md, "Decode").
void quant_swiglu_forward(const Tensor& out, const Tensor& x, const core::QTensor& w_gate_up,
                          const core::QTensor& w_down, const Tensor& h, const Tensor& a,
                          float beta = 0.0f);
// The same MLP on rmsnorm(x) (RmsNormFold; h, a in norm.normed's dtype): bit for bit
// rmsnorm_forward then quant_swiglu_forward, the norm inside the decode region on the CPU.
void quant_swiglu_forward(const Tensor& out, const Tensor& x, const RmsNormFold& norm,
                          const core::QTensor& w_gate_up, const core::QTensor& w_down,
                          const Tensor& h, const Tensor& a, float beta = 0.0f);

// out[j] (+)= sum_i in[i, j]: the bias gradient. in [..., N] -> out [N] f32.
void sum_rows(const Tensor& out, const Tensor& in, bool accumulate);

}  // namespace zs::ops
