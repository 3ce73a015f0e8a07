// Layout helpers shared by the op API (validation) and the backends (indexing).
//
// Most ops work on "rows": a tensor [..., C] whose last dim is contiguous and whose leading dims
// collapse into one uniform row stride. That admits contiguous tensors and column slices of a
// wider matrix (e.g. the gate half of a fused [N, 2H] projection) without copies.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <utility>

#include "core/tensor.h"

namespace zs::ops {

struct Rows {
    int64_t n = 0;       // number of rows (product of leading dims; 1 for a 1-D tensor)
    int64_t cols = 0;    // C
    int64_t stride = 0;  // elements between consecutive rows
};

// The row layout of t, or nullopt when its leading dims do not collapse or the last dim is not
// contiguous.
std::optional<Rows> rows_of(const core::Tensor& t);

namespace check {

using core::DType;
using core::Shape;
using core::Tensor;

// Each throws ShapeError naming the op and the argument, with what was got and what was expected.
void defined(const char* op, const char* arg, const Tensor& t);
void dtype(const char* op, const char* arg, const Tensor& t, std::initializer_list<DType> allowed);
void shape(const char* op, const char* arg, const Tensor& t, const Shape& expected);
void ndim(const char* op, const char* arg, const Tensor& t, int n);
void same_shape(const char* op, const char* arg, const Tensor& t, const char* ref_arg,
                const Tensor& ref);
// Every defined tensor in `ts` is on the same device as the first defined one.
void same_device(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> ts);
// rows_of(t) exists; returns it.
Rows rows(const char* op, const char* arg, const Tensor& t);
void contiguous(const char* op, const char* arg, const Tensor& t);
void last_dim_contiguous(const char* op, const char* arg, const Tensor& t);

}  // namespace check
}  // namespace zs::ops
