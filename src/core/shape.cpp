#include "core/shape.h"

#include "base/error.h"

namespace zs::core {

Shape::Shape(std::initializer_list<int64_t> dims) {
    ZS_CHECK_T(ShapeError, dims.size() <= kMaxDims, "shape has {} dims; at most {} supported",
               dims.size(), kMaxDims);
    for (int64_t v : dims) d_[n_++] = v;
}

Shape::Shape(std::span<const int64_t> dims) {
    ZS_CHECK_T(ShapeError, dims.size() <= kMaxDims, "shape has {} dims; at most {} supported",
               dims.size(), kMaxDims);
    for (int64_t v : dims) d_[n_++] = v;
}

void Shape::push_back(int64_t v) {
    ZS_CHECK_T(ShapeError, n_ < kMaxDims, "shape has {} dims; at most {} supported", n_ + 1,
               kMaxDims);
    d_[n_++] = v;
}

int64_t Shape::numel() const {
    int64_t n = 1;
    for (int i = 0; i < n_; ++i) n *= d_[i];
    return n;
}

bool Shape::operator==(const Shape& o) const {
    if (n_ != o.n_) return false;
    for (int i = 0; i < n_; ++i) {
        if (d_[i] != o.d_[i]) return false;
    }
    return true;
}

std::string Shape::str() const {
    std::string s = "[";
    for (int i = 0; i < n_; ++i) {
        if (i) s += ", ";
        s += std::to_string(d_[i]);
    }
    return s + "]";
}

Strides contiguous_strides(const Shape& s) {
    Strides st = s;
    int64_t acc = 1;
    for (int i = s.ndim() - 1; i >= 0; --i) {
        st[i] = acc;
        acc *= s[i];
    }
    return st;
}

}  // namespace zs::core
