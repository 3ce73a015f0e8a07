// Matmuls against block-quantized weights (core::QTensor): out = x @ w^T (+ beta out + bias).
//
// Decode (M <= kSkinnyMaxRows rows): the activation rows are quantized to Q8 per 32 elements once,
// then every weight row is streamed exactly once, split across threads by output rows, and dotted
// with all M rows in int8 (qdot.h). Prefill (more rows): tiles of weight rows are dequantized to
// the activations' dtype and multiplied by the dense matmul (exact up to the GEMM's rounding).
#pragma once

#include <cstdint>

#include "core/quant.h"
#include "core/tensor.h"

namespace zs::backends::cpu {

// Which dot-product kernel the decode path uses. `best` resolves at run time: AVX-512 VNNI where
// the CPU has it, else AVX2 (interleaved weights; file-layout rows take the scalar loop), else the
// portable scalar loop; ZS_QUANT_KERNEL=scalar|avx2|avx512_vnni forces one.
enum class QuantKernel { best, scalar, avx512_vnni, avx2 };
const char* to_string(QuantKernel k);
QuantKernel resolve(QuantKernel k);

// Quantize n (a multiple of 32) activations to the Q8 blocks qdot.h describes.
void quantize_q8_act(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0, int32_t* s1);
// The same with llama.cpp's Q8_K blocking: n a multiple of 256, one scale per 256 values
// (max|x| / 127, in f32) repeated in d for each of the block's eight 32-chunks; ties to even.
void quantize_q8k_act(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0, int32_t* s1);

// How the int8 kernels quantize activation rows (ZS_QUANT_ACT). q8 (the default): per 32 values
// with an f32 scale, the finer. ggml: llama.cpp's CPU rounding, to reproduce its results (e.g.
// its perplexities): per 32 with the scale rounded to f16 (its Q8_0) against q8_0 / q4_* / q5_*
// weights, per 256 (its Q8_K) against k-quant weights. ConfigError on another value.
enum class QActFormat { q8, ggml };
QActFormat act_format();

// The skinny (decode) path: x [M, K] f32/bf16 rows (M <= kSkinnyMaxRows), out [M, N] f32/bf16
// (row strides from the tensors), bias [N] optional.
void quant_gemv(const core::Tensor& out, const core::Tensor& x, const core::QTensor& w, float beta,
                const core::Tensor& bias, QuantKernel kernel);

// One row of swiglu_forward (pointwise.cpp), with its vectors and rounding: out = silu(gate) * up.
void swiglu_row(const float* gate, const float* up, float* out, int64_t n);
void swiglu_row(const core::bf16* gate, const core::bf16* up, core::bf16* out, int64_t n);

}  // namespace zs::backends::cpu
