// Matmuls against block-quantized weights (core::QTensor): out = x @ w^T (+ beta out + bias).
//
// Decode (M <= kSkinnyMaxRows rows): the activation rows are quantized to Q8 per 32 elements once,
// then every weight row is streamed exactly once, split across threads by output rows, and dotted
// with all M rows in int8 (qdot.h). Prefill (more rows) takes one of two routes (QuantPrefill):
// the same int8 kernels over all M rows (an int8 GEMM), or tiles of weight rows dequantized to the
// activations' dtype and multiplied by the dense matmul (exact up to the GEMM's rounding).
#pragma once

#include <cstdint>

#include "core/quant.h"
#include "core/tensor.h"
#include "ops/matmul.h"

namespace zs::backends::cpu {

// Which dot-product kernel the decode path uses. `best` resolves at run time: AVX-512 VNNI where
// the CPU has it, else AVX2 (interleaved weights; file-layout rows take the scalar loop), else the
// portable scalar loop; ZS_QUANT_KERNEL=scalar|avx2|avx512_vnni forces one.
enum class QuantKernel { best, scalar, avx512_vnni, avx2 };
const char* to_string(QuantKernel k);
QuantKernel resolve(QuantKernel k);

// Quantize n (a multiple of 32) activations to the Q8 blocks qdot.h describes.
void quantize_q8_act(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0, int32_t* s1);
// The same as llama.cpp's x86 quantize_row_q8_0 (AVX2 / AVX-512) rounds: the multiplier is
// 127 / max|x| (not 1 / (max|x| / 127), which differs in the last bit for some maxima) and ties
// go to even. d = max|x| / 127 (f32; the caller rounds it to f16 as llama.cpp stores it).
void quantize_q8_act_ggml(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0, int32_t* s1);
// The same with llama.cpp's Q8_K blocking: n a multiple of 256, one scale per 256 values
// (max|x| / 127, in f32) repeated in d for each of the block's eight 32-chunks; ties to even.
void quantize_q8k_act(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0, int32_t* s1);

// How the int8 kernels quantize activation rows (ZS_QUANT_ACT). q8 (the default): per 32 values
// with an f32 scale, the finer. ggml: llama.cpp's CPU rounding, to reproduce its results (e.g.
// its perplexities): per 32 with the scale rounded to f16 (its Q8_0) against q8_0 / q4_* / q5_*
// weights, per 256 (its Q8_K) against k-quant weights. ConfigError on another value.
enum class QActFormat { q8, ggml };
QActFormat act_format();

// How prefill (more than kSkinnyMaxRows rows) multiplies quantized weights. dequant: tiles of
// weight rows dequantized to the activations' dtype, then the dense GEMM (exact up to its
// rounding). int8: every activation row Q8-quantized (act_format(), as llama.cpp's CPU paths do)
// and the int8 group kernels (qdot.h), an int8 GEMM. `best` resolves per CPU and weight layout
// (resolve_prefill): int8 where the weights are interleaved16 q4_0 / q4_1 / q5_0 / q5_1 and the
// CPU's int8 kernel is AVX2 (no AVX-512: 1.11x oneDNN's f32 GEMM on dequantized tiles on quiet
// cores, 2-4x on shared ones, docs/BENCHMARKS.md); dequant for q8_0 and the k-quants there
// (as fast or faster, and exact) and elsewhere (on Zen 4 the tiles + bf16 GEMM measured faster).
// ZS_QUANT_PREFILL=int8|dequant forces one wherever it can run (int8 on file-layout weights
// without VNNI takes the portable scalar loop).
enum class QuantPrefill { best, dequant, int8 };
const char* to_string(QuantPrefill p);
QuantPrefill resolve_prefill(QuantPrefill p, const core::QTensor& w);

// The int8 path: x [M, K] f32/bf16 rows (decode, or any M for the int8 prefill route), out
// [M, N] f32/bf16 (row strides from the tensors), bias [N] optional. With `norm` (decode only,
// M <= kSkinnyMaxRows) x is rmsnorm(raw) * norm->weight, computed by every thread inside the
// region (the first keeps it in x = norm->normed); raw [M, K] f32/bf16.
void quant_gemv(const core::Tensor& out, const core::Tensor& x, const core::QTensor& w, float beta,
                const core::Tensor& bias, QuantKernel kernel,
                const ops::RmsNormFold* norm = nullptr, const core::Tensor& raw = {});

// One row of swiglu_forward (pointwise.cpp), with its vectors and rounding: out = silu(gate) * up.
void swiglu_row(const float* gate, const float* up, float* out, int64_t n);
void swiglu_row(const core::bf16* gate, const core::bf16* up, core::bf16* out, int64_t n);

}  // namespace zs::backends::cpu
