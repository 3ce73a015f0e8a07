// Naive double-precision reference implementations of every op: the oracle the op tests compare
// each backend against, and whose forward the finite-difference gradient checks differentiate.
// Written for obviousness, not speed; used only by tests and benchmark self-checks.
//
// They work on DTensor, a contiguous row-major double tensor, so a test can perturb inputs in
// double precision (finite differences need more digits than f32 has).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "ops/attention.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "ops/moe.h"
#include "ops/paged_attention.h"
#include "ops/rope.h"

namespace zs::ops::reference {

struct DTensor {
    core::Shape shape;
    std::vector<double> data;  // row-major, shape.numel() elements

    DTensor() = default;
    explicit DTensor(const core::Shape& s, double fill = 0.0);
    int64_t numel() const { return static_cast<int64_t>(data.size()); }
    double& operator[](int64_t i) { return data[static_cast<size_t>(i)]; }
    double operator[](int64_t i) const { return data[static_cast<size_t>(i)]; }
};

// Read any CPU tensor (any dtype, any strides) into a DTensor.
DTensor from_tensor(const core::Tensor& t);

// out = alpha * op(a) @ op(b) + beta * c + bias. b may lack a's batch dims. c may be empty when
// beta == 0; bias may be empty.
DTensor matmul(const DTensor& a, const DTensor& b, const MatmulOptions& opts, const DTensor& c,
               const DTensor& bias);

struct NormResult {
    DTensor out, mean, rstd;
};
NormResult layernorm(const DTensor& x, const DTensor& w, const DTensor& b, double eps);
NormResult rmsnorm(const DTensor& x, const DTensor& w, double eps);

DTensor gelu(const DTensor& x);      // tanh approximation
DTensor gelu_erf(const DTensor& x);  // exact: x Phi(x)
DTensor silu(const DTensor& x);
DTensor swiglu(const DTensor& gate, const DTensor& up);
DTensor softmax(const DTensor& x);

// x [N, H, D], positions [N]; rotates the first 2*inv_freq.size() dims of each head.
DTensor rope(const DTensor& x, const std::vector<int64_t>& positions,
             const std::vector<double>& inv_freq, RopePairs pairs, bool inverse);

struct AttentionResult {
    DTensor out, lse;  // [B, Tq, NH, HS], [B, NH, Tq]
};
AttentionResult attention(const DTensor& q, const DTensor& k, const DTensor& v,
                          const AttentionOptions& opts);

// Paged attention (ops/paged_attention.h): each slice's queries q [N, NH, HS] against its
// sequence's keys gathered through the block table from k_cache, v_cache [n_blocks, NKV,
// block_size, HS], by attention() above. Rows outside every slice are 0; kNoBlock slots read as
// NaN, so a result that used one shows it.
DTensor paged_attention(const DTensor& q, const DTensor& k_cache, const DTensor& v_cache,
                        std::span<const SeqSlice> seqs, const AttentionOptions& opts);

DTensor embedding(const std::vector<int64_t>& ids, const core::Shape& ids_shape,
                  const DTensor& table);

struct CrossEntropyResult {
    DTensor losses, dlogits;
    int64_t count = 0;
};
CrossEntropyResult cross_entropy(const DTensor& logits, const std::vector<int64_t>& targets,
                                 const CrossEntropyOptions& opts);

struct RouterResult {
    DTensor weights, probs;
    std::vector<int64_t> indices;  // [N, k]
};
RouterResult topk_router(const DTensor& logits, const RouterOptions& opts);
// Weights as a differentiable function of logits for a fixed expert choice (for gradient checks).
DTensor router_weights_fixed(const DTensor& logits, const std::vector<int64_t>& indices,
                             const RouterOptions& opts);

// Ulysses layouts (ops/ulysses.h) over P ranks. pack_heads: x [B, Tl, H, HS] -> chunks
// [P, B, Tl, H * repeat / P, HS]; unpack_heads: chunks -> x [B, Tl, H, HS], each head the sum of
// its repeat copies; pack_seq: full [B, T, Hc, HS] -> chunks [P, B, T / P, Hc, HS]; unpack_seq:
// chunks -> full [B, P * Tl, Hc, HS].
DTensor ulysses_pack_heads(const DTensor& x, int64_t P, int64_t repeat);
DTensor ulysses_unpack_heads(const DTensor& chunks, int64_t H, int64_t repeat);
DTensor ulysses_pack_seq(const DTensor& full, int64_t P);
DTensor ulysses_unpack_seq(const DTensor& chunks);

// Integer tensor contents (ids, targets, positions) as int64.
std::vector<int64_t> int_values(const core::Tensor& t);

}  // namespace zs::ops::reference
