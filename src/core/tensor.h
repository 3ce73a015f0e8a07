// Tensor: a typed, strided view into a Buffer. Cheap to copy (it shares the Buffer).
//
// Like std::span, a const Tensor handle does not make its elements const: ops take outputs as
// `const Tensor&` too, listed first. Views (slice, select, transpose, view) never copy;
// contiguous(), to() and clone() do. Strides are in elements; the last dimension is contiguous in
// every tensor the kernels produce, and kernels say in their header what layouts they accept.
//
//   Tensor x = Tensor::empty({B, T, C}, DType::bf16);        // [B, T, C], activations
//   Tensor row = x.select(0, 1);                             // [T, C], shares x's memory
//   Tensor xt = x.transpose(1, 2).contiguous();              // [B, C, T], a copy
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/error.h"
#include "core/buffer.h"
#include "core/dtype.h"
#include "core/shape.h"

namespace zs::core {

class Tensor {
public:
    Tensor() = default;  // undefined: defined() == false

    static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu(),
                        MemCategory category = MemCategory::activations,
                        const AllocOptions& opts = {});
    static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu(),
                        MemCategory category = MemCategory::activations);
    // A contiguous tensor over `buffer` starting at `byte_offset`; must fit inside the buffer.
    static Tensor from_buffer(std::shared_ptr<Buffer> buffer, size_t byte_offset,
                              const Shape& shape, DType dtype);
    // A contiguous, non-owning view of caller memory that must outlive every use.
    static Tensor wrap(void* data, const Shape& shape, DType dtype, Device device = Device::cpu());

    bool defined() const { return buf_ != nullptr; }
    DType dtype() const { return dtype_; }
    Device device() const { return buf_ ? buf_->device() : Device::cpu(); }
    const Shape& shape() const { return shape_; }
    const Strides& strides() const { return strides_; }
    int dim() const { return shape_.ndim(); }
    // Size / stride of dimension d; negative d counts from the end.
    int64_t size(int d) const { return shape_[norm_dim(d)]; }
    int64_t stride(int d) const { return strides_[norm_dim(d)]; }
    int64_t numel() const { return shape_.numel(); }
    size_t element_size() const { return dtype_size(dtype_); }
    size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
    size_t byte_offset() const { return offset_; }
    bool is_contiguous() const;
    const std::shared_ptr<Buffer>& buffer() const { return buf_; }

    void* data_ptr() const { return static_cast<char*>(buf_->data()) + offset_; }
    // Typed pointer; throws ShapeError when T does not match dtype().
    template <class T>
    T* data() const {
        ZS_CHECK_T(ShapeError, dtype_ == dtype_of<T>(), "tensor {} accessed as {}", str(),
                   to_string(dtype_of<T>()));
        return static_cast<T*>(data_ptr());
    }

    // ---- views (no copy) ----
    // Same elements, new shape; requires a contiguous tensor. One dimension may be -1.
    Tensor view(const Shape& shape) const;
    // view() when contiguous, otherwise a contiguous copy reshaped.
    Tensor reshape(const Shape& shape) const;
    // Elements [start, end) of dimension d.
    Tensor slice(int d, int64_t start, int64_t end) const;
    // Index i of dimension d; the dimension is dropped.
    Tensor select(int d, int64_t i) const;
    Tensor transpose(int d0, int d1) const;
    // Insert a dimension of size 1 at d.
    Tensor unsqueeze(int d) const;
    // A view with explicit shape and element strides, starting `elem_offset` elements after this
    // view's start. Throws ShapeError if any element would fall outside the buffer.
    Tensor as_strided(const Shape& shape, const Strides& strides, int64_t elem_offset = 0) const;

    // ---- copies ----
    Tensor contiguous() const;
    Tensor to(DType dtype) const;  // a copy unless dtype() already matches
    Tensor to(Device device) const;
    Tensor clone(MemCategory category = MemCategory::activations) const;
    // Copy src's elements into this tensor (same shape; converts dtype; any device pair).
    void copy_from(const Tensor& src) const;
    void fill(double value) const;
    void zero() const;

    // Read one element as double (any dtype, CPU). For tests and debugging, not hot loops.
    double item(std::initializer_list<int64_t> index) const;
    double item() const;  // a one-element tensor

    // "bf16[2, 3] cpu"
    std::string str() const;

private:
    int norm_dim(int d) const;

    std::shared_ptr<Buffer> buf_;
    size_t offset_ = 0;  // bytes
    DType dtype_ = DType::f32;
    Shape shape_;
    Strides strides_;
};

}  // namespace zs::core
