#include "ops/rope.h"

#include <cmath>

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;
using core::Shape;

namespace {

std::vector<double> default_inv_freq(int rotary_dim, double theta) {
    ZS_CHECK_T(ShapeError, rotary_dim > 0 && rotary_dim % 2 == 0,
               "rope: rotary_dim must be a positive even number (got {})", rotary_dim);
    ZS_CHECK_T(ShapeError, theta > 0, "rope: rope_theta must be positive (got {})", theta);
    std::vector<double> f(static_cast<size_t>(rotary_dim / 2));
    for (size_t i = 0; i < f.size(); ++i) {
        f[i] = 1.0 / std::pow(theta, 2.0 * static_cast<double>(i) / rotary_dim);
    }
    return f;
}

}  // namespace

RopeTable::RopeTable(int64_t max_pos, int rdim, double theta, RopePairs p)
    : RopeTable(max_pos, default_inv_freq(rdim, theta), p) {}

RopeTable::RopeTable(int64_t max_pos, std::vector<double> freqs, RopePairs p)
    : max_positions(max_pos),
      rotary_dim(static_cast<int>(freqs.size() * 2)),
      pairs(p),
      inv_freq(std::move(freqs)) {
    ZS_CHECK_T(ShapeError, max_positions > 0 && rotary_dim > 0,
               "rope: need max_positions > 0 and rotary_dim > 0 (got {}, {})", max_positions,
               rotary_dim);
    int64_t half = rotary_dim / 2;
    cos = Tensor::empty(Shape{max_positions, half}, DType::f32, core::Device::cpu(),
                        core::MemCategory::buffers);
    sin = Tensor::empty(Shape{max_positions, half}, DType::f32, core::Device::cpu(),
                        core::MemCategory::buffers);
    float* c = cos.data<float>();
    float* s = sin.data<float>();
    for (int64_t pos = 0; pos < max_positions; ++pos) {
        for (int64_t i = 0; i < half; ++i) {
            // Angles in double, as position * inv_freq loses digits in f32 at long contexts.
            double a = static_cast<double>(pos) * inv_freq[static_cast<size_t>(i)];
            c[pos * half + i] = static_cast<float>(std::cos(a));
            s[pos * half + i] = static_cast<float>(std::sin(a));
        }
    }
}

namespace {

void rope_apply(const char* op, const Tensor& x, const Tensor& positions, const RopeTable& table,
                bool inverse) {
    check::defined(op, "x", x);
    check::defined(op, "positions", positions);
    check::dtype(op, "x", x, {DType::f32, DType::bf16});
    check::dtype(op, "positions", positions, {DType::i32, DType::i64});
    check::ndim(op, "x", x, 3);
    check::last_dim_contiguous(op, "x", x);
    check::contiguous(op, "positions", positions);
    check::shape(op, "positions", positions, Shape{x.size(0)});
    ZS_CHECK_T(ShapeError, table.rotary_dim <= x.size(2),
               "{}: rotary_dim {} exceeds the head dim of 'x' {}", op, table.rotary_dim,
               x.shape().str());
    check::same_device(op, {{"x", &x}, {"positions", &positions}});
    if (x.numel() == 0) return;
    kernels_for(x.device()).rope(x, positions, table, inverse);
}

}  // namespace

void rope_forward(const Tensor& x, const Tensor& positions, const RopeTable& table) {
    rope_apply("rope_forward", x, positions, table, false);
}

void rope_backward(const Tensor& dx, const Tensor& positions, const RopeTable& table) {
    rope_apply("rope_backward", dx, positions, table, true);
}

}  // namespace zs::ops
