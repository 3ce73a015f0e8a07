// Shape and Strides: a small fixed-capacity vector of int64 dimensions (no heap).
//
// Strides are in elements, not bytes. A rank-0 shape has numel() == 1.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

namespace zs::core {

inline constexpr int kMaxDims = 6;

class Shape {
public:
    Shape() = default;
    Shape(std::initializer_list<int64_t> dims);
    explicit Shape(std::span<const int64_t> dims);

    int ndim() const { return n_; }
    int64_t operator[](int i) const { return d_[i]; }
    int64_t& operator[](int i) { return d_[i]; }
    const int64_t* begin() const { return d_; }
    const int64_t* end() const { return d_ + n_; }
    int64_t back() const { return d_[n_ - 1]; }
    void push_back(int64_t v);

    int64_t numel() const;
    bool operator==(const Shape& o) const;
    bool operator!=(const Shape& o) const { return !(*this == o); }
    // "[2, 3, 4]"
    std::string str() const;

private:
    int64_t d_[kMaxDims] = {};
    int n_ = 0;
};

using Strides = Shape;

// Row-major (C-contiguous) strides for a shape.
Strides contiguous_strides(const Shape& s);

}  // namespace zs::core
