// The boundary between the CUDA backend's host glue (cuda_kernels.cpp, cuda_matmul.cpp: Tensors
// in, validated by the op API) and its .cu files (kernels): plain pointers, sizes and strides.
//
// nvcc compiles the .cu files and must not see fmt (its front end rejects fmt's consteval format
// strings), so nothing here includes core/ or ops/. Strides are in elements. Every launcher
// queues work on `stream` and returns without waiting; arguments were validated by the op API and
// the glue, so launchers only assert what the kernels themselves rely on.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "backends/cuda/quant_types.h"

namespace zs::backends::cuda {

enum class FloatType : unsigned char { f32, bf16 };
enum class IndexType : unsigned char { i32, i64 };

// A "rows" tensor [n, cols]: last dim contiguous, rows `stride` elements apart.
struct RowsArg {
    void* data = nullptr;
    int64_t stride = 0;
    FloatType type = FloatType::f32;
};

// Up to 6 strided dims (core::kMaxDims), for the matmul epilogue.
inline constexpr int kMaxNd = 6;
struct NdArg {
    void* data = nullptr;
    FloatType type = FloatType::f32;
    int ndim = 0;
    int64_t shape[kMaxNd] = {};
    int64_t strides[kMaxNd] = {};
};

// [B, T, H, HS] with any strides on the first three dims, HS contiguous.
struct HeadsArg {
    void* data = nullptr;
    FloatType type = FloatType::f32;
    int64_t sb = 0, st = 0, sh = 0;
};

// Where index-checking kernels report the first bad position: atomicMin into *bad, which the
// caller initialises to kNoBadIndex (all bits set).
inline constexpr unsigned long long kNoBadIndex = ~0ull;

// ---- matmul.cu ----
// dst = src_scale * src + bias[last index] elementwise over dst's shape. src may be dst itself
// (in place) or null (then src_scale is ignored and the term is 0; dst is not read, so it may
// hold NaN). bias may be null.
void launch_matmul_epilogue(cudaStream_t stream, const NdArg& dst, const NdArg* src,
                            float src_scale, const void* bias, FloatType bias_type);
// out[c] (+)= sum_r in[r, c] in a fixed order. scratch: sum_rows_scratch_floats(n, cols) floats.
size_t sum_rows_scratch_floats(int64_t n, int64_t cols);
void launch_sum_rows(cudaStream_t stream, float* out, const RowsArg& in, int64_t n, int64_t cols,
                     bool accumulate, float* scratch);

// ---- norm.cu ----
// Parameter-gradient scratch for the backward kernels (per-block partial sums).
size_t norm_backward_scratch_floats(int64_t n, int64_t cols);
void launch_layernorm_forward(cudaStream_t stream, const RowsArg& out, const RowsArg& x,
                              const void* w, const void* b, FloatType w_type, float* mean,
                              float* rstd, int64_t n, int64_t cols, float eps);
void launch_layernorm_backward(cudaStream_t stream, const RowsArg& dx, const RowsArg& dout,
                               const RowsArg& x, const void* w, FloatType w_type, const float* mean,
                               const float* rstd, float* dw, float* db, int64_t n, int64_t cols,
                               float* scratch);
void launch_rmsnorm_forward(cudaStream_t stream, const RowsArg& out, const RowsArg& x,
                            const void* w, FloatType w_type, float* rstd, int64_t n, int64_t cols,
                            float eps);
void launch_rmsnorm_backward(cudaStream_t stream, const RowsArg& dx, const RowsArg& dout,
                             const RowsArg& x, const void* w, FloatType w_type, const float* rstd,
                             float* dw, int64_t n, int64_t cols, float* scratch);

// ---- pointwise.cu ----
enum class UnaryOp : unsigned char { gelu, gelu_erf, silu, scale };
enum class BinaryOp : unsigned char {
    gelu_backward,
    gelu_erf_backward,
    silu_backward,
    swiglu,
    add
};
// out = op(x) (scale: alpha * x).
void launch_unary(cudaStream_t stream, UnaryOp op, const RowsArg& out, const RowsArg& x, int64_t n,
                  int64_t cols, float alpha);
// out = op(a, b); for the *_backward ops a is dout and b is x.
void launch_binary(cudaStream_t stream, BinaryOp op, const RowsArg& out, const RowsArg& a,
                   const RowsArg& b, int64_t n, int64_t cols);
// dgate, dup from dout, gate, up (inputs share one type, outputs another).
void launch_swiglu_backward(cudaStream_t stream, const RowsArg& dgate, const RowsArg& dup,
                            const RowsArg& dout, const RowsArg& gate, const RowsArg& up, int64_t n,
                            int64_t cols);
void launch_softmax_forward(cudaStream_t stream, const RowsArg& out, const RowsArg& x, int64_t n,
                            int64_t cols);
void launch_softmax_backward(cudaStream_t stream, const RowsArg& dx, const RowsArg& dout,
                             const RowsArg& out, int64_t n, int64_t cols);

// ---- rope.cu ----
// Largest rotary_dim / 2 the rope kernel takes (inv_freq travels in the kernel's parameters).
inline constexpr int64_t kRopeMaxPairs = 256;
struct RopeArgs {
    void* x = nullptr;  // [N, H, D], last dim contiguous
    FloatType type = FloatType::f32;
    int64_t n = 0, h = 0, stride_n = 0, stride_h = 0;
    const void* positions = nullptr;  // [N]
    IndexType pos_type = IndexType::i64;
    double inv_freq[kRopeMaxPairs] = {};  // [half]
    int64_t half = 0;                     // rotary_dim / 2
    int64_t max_positions = 0;
    bool interleaved = false;
    bool inverse = false;
};
// Rows whose position is outside [0, max_positions) are left untouched and reported in *bad.
void launch_rope(cudaStream_t stream, const RopeArgs& a, unsigned long long* bad);

// ---- attention.cu ----
struct AttnGeom {
    int64_t b = 0, tq = 0, tk = 0, nh = 0, nkv = 0, hs = 0;
    float scale = 0.0f;  // resolved (never 0)
    bool causal = true;
    int64_t window = 0;  // sliding window in keys (0: none)
};
// Largest head size the kernels support.
inline constexpr int64_t kAttnMaxHeadSize = 256;
// lse may be null.
void launch_attention_forward(cudaStream_t stream, const AttnGeom& g, const HeadsArg& out,
                              float* lse, const HeadsArg& q, const HeadsArg& k, const HeadsArg& v);
// scratch: attention_backward_scratch_floats(g) floats.
size_t attention_backward_scratch_floats(const AttnGeom& g);
void launch_attention_backward(cudaStream_t stream, const AttnGeom& g, const HeadsArg& dq,
                               const HeadsArg& dk, const HeadsArg& dv, const HeadsArg& dout,
                               const HeadsArg& q, const HeadsArg& k, const HeadsArg& v,
                               const HeadsArg& out, const float* lse, float* scratch);

// ---- paged_attention.cu ----
// A ragged batch (ops/paged_attention.h) on the device, one int64 array `layout`:
//   [0, n_rows)                      the slice owning each row, -1 for none
//   [n_rows, n_rows + 3 * n_seqs)    per slice: first row, position of its first row, and the
//                                    index in `layout` where its block table starts
//   then every slice's block table (kNoBlock = -1 only in slots no query reads).
struct PagedGeom {
    int64_t n_rows = 0, nh = 0, nkv = 0, hs = 0, block_size = 0;
    float scale = 0.0f;  // resolved (never 0)
    int64_t window = 0;  // sliding window in keys (0: none)
};
// caches [n_blocks, nkv, block_size, hs] contiguous, of cache_type. k, v, q, out are [N, H, HS]
// as HeadsArg with sb = 0 (st the row stride, sh the head stride).
void launch_paged_kv_write(cudaStream_t stream, const PagedGeom& g, const int64_t* layout,
                           void* k_cache, void* v_cache, FloatType cache_type, const HeadsArg& k,
                           const HeadsArg& v);
void launch_paged_attention_forward(cudaStream_t stream, const PagedGeom& g, const int64_t* layout,
                                    const void* k_cache, const void* v_cache, FloatType cache_type,
                                    const HeadsArg& out, const HeadsArg& q);

// ---- embedding.cu ----
// Reports the first id outside [0, v) in *bad.
void launch_check_ids(cudaStream_t stream, const void* ids, IndexType id_type, int64_t n, int64_t v,
                      unsigned long long* bad);
// out[i] (+)= table[ids[i]]; rows with a bad id are skipped (and reported in *bad).
void launch_embedding_forward(cudaStream_t stream, const RowsArg& out, const void* ids,
                              IndexType id_type, int64_t n, const RowsArg& table, int64_t v,
                              int64_t cols, bool accumulate, unsigned long long* bad);
// dtable[ids[i]] += dout[i], summed in token order for every (id, column): deterministic. Ids
// must have been checked.
void launch_embedding_backward(cudaStream_t stream, float* dtable, int64_t v, int64_t cols,
                               const RowsArg& dout, const void* ids, IndexType id_type, int64_t n);

// ---- loss.cu ----
struct CrossEntropyArgs {
    float* losses = nullptr;  // [n]
    RowsArg dlogits;          // data null: no gradient; may alias logits
    RowsArg logits;           // [n, v]
    const void* targets = nullptr;
    IndexType target_type = IndexType::i64;
    int64_t n = 0, v = 0;
    int64_t ignore_index = -100;
    float grad_scale = 1.0f;
};
// stats[0] += number of non-ignored targets; stats[1] = min over positions of a bad target
// (caller initialises stats to {0, kNoBadIndex}).
void launch_cross_entropy(cudaStream_t stream, const CrossEntropyArgs& a,
                          unsigned long long* stats);

// ---- moe.cu ----
// Largest expert count the router kernels support.
inline constexpr int64_t kRouterMaxExperts = 2048;
void launch_topk_router_forward(cudaStream_t stream, float* weights, int32_t* indices, float* probs,
                                const RowsArg& logits, int64_t n, int64_t e, int k,
                                bool renormalize);
// dprobs may be null.
void launch_topk_router_backward(cudaStream_t stream, const RowsArg& dlogits, const float* dweights,
                                 const float* dprobs, const float* probs, const int32_t* indices,
                                 int64_t n, int64_t e, int k, bool renormalize);

// ---- adam.cu ----
// ops::AdamStep's scalars (ops/adam.h), without core types.
struct AdamArgs {
    float beta1 = 0, beta2 = 0, eps = 0;
    float decay_mul = 1;  // adamw: 1 - lr * wd, else 1
    float l2 = 0;         // adam: wd, else 0
    float step_size = 0, inv_sqrt_bc2 = 1, grad_scale = 1;
};
// One flat segment of n elements: master, m, v updated in place from grad; compute (nullptr:
// none) receives the new master in compute_type.
void launch_adam_update(cudaStream_t stream, float* master, float* m, float* v, void* compute,
                        FloatType compute_type, const float* grad, int64_t n, const AdamArgs& a);

// ---- quant.cu ----
// Block-quantized weights [n, k] in their GGUF file layout (core/quant.h), rows `row_bytes`
// apart, k a multiple of the block size. Alignment of `data`: q8_0 (34-byte blocks) 2 bytes,
// q4_k (144-byte super-blocks) 4 bytes; q4_0, q4_1, q5_0, q5_1 and q6_k are read bytewise (any).
// QuantType and kQuantGemvMaxRows are in quant_types.h.
struct QuantArg {
    const void* data = nullptr;
    int64_t row_bytes = 0;
    QuantType type = QuantType::q8_0;
};
// out[m, :] = x[m, :] @ w^T + beta * out[m, :] (+ bias) for m < rows <= kQuantGemvMaxRows; out
// is not read when beta == 0. bias [n] may be null.
void launch_quant_gemv(cudaStream_t stream, const QuantArg& w, int64_t n, int64_t k,
                       const RowsArg& x, int64_t rows, const RowsArg& out, float beta,
                       const void* bias, FloatType bias_type);
// dst [n, k] (contiguous, dst_type) = w's rows [0, n) dequantized exactly as core::dequantize
// (then rounded once to bf16 for a bf16 dst).
void launch_quant_dequantize(cudaStream_t stream, const QuantArg& w, int64_t n, int64_t k,
                             void* dst, FloatType dst_type);

// ---- probe (matmul.cu) ----
// cudaSuccess when this build's kernels have an image the current device can run.
cudaError_t probe_kernel_image();

}  // namespace zs::backends::cuda
