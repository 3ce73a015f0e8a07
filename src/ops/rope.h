// Rotary position embedding (RoPE), with rope_theta, partial rotary and both pair layouts.
//
// A RopeTable holds cos/sin for positions [0, max_positions) and the first `rotary_dim` dims of a
// head; it is built once per model. rope_forward rotates x in place:
//   x [N, H, D] (N tokens, H heads, head dim D; last dim contiguous, f32 or bf16)
//   positions [N] i32 or i64 (each in [0, max_positions))
// Pairs: half (HF "rotate_half", GPT-NeoX/Llama in HF layout): (i, i + rotary_dim/2);
//        interleaved (GPT-J / Meta's original Llama layout): (2i, 2i+1).
// Dims >= rotary_dim pass through (partial rotary, e.g. Phi / GPT-NeoX's rotary_pct).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

enum class RopePairs { half, interleaved };

struct RopeTable {
    // inv_freq[i] = theta^(-2i/rotary_dim), i < rotary_dim/2; scaling schemes may edit inv_freq
    // before build().
    RopeTable(int64_t max_positions, int rotary_dim, double theta,
              RopePairs pairs = RopePairs::half);
    explicit RopeTable(int64_t max_positions, std::vector<double> inv_freq,
                       RopePairs pairs = RopePairs::half);

    int64_t max_positions;
    int rotary_dim;
    RopePairs pairs;
    std::vector<double> inv_freq;  // [rotary_dim / 2]
    Tensor cos, sin;               // [max_positions, rotary_dim / 2] f32
};

void rope_forward(const Tensor& x, const Tensor& positions, const RopeTable& table);
// The inverse rotation applied to the gradient, in place: dx = R(-theta) dout.
void rope_backward(const Tensor& dx, const Tensor& positions, const RopeTable& table);

}  // namespace zs::ops
