#include "core/tensor.h"

#include <cstring>
#include <vector>

#include "core/half.h"

namespace zs::core {

namespace {

// Visit every element of a strided shape in row-major order, calling f(element offset) with the
// offset in elements. The innermost dimension is run as a tight loop by the callers' fast paths.
template <class F>
void for_each_offset(const Shape& shape, const Strides& strides, F&& f) {
    int n = shape.ndim();
    if (shape.numel() == 0) return;
    if (n == 0) {
        f(0);
        return;
    }
    int64_t idx[kMaxDims] = {};
    int64_t off = 0;
    for (;;) {
        f(off);
        int d = n - 1;
        for (; d >= 0; --d) {
            ++idx[d];
            off += strides[d];
            if (idx[d] < shape[d]) break;
            off -= strides[d] * shape[d];
            idx[d] = 0;
        }
        if (d < 0) return;
    }
}

double read_element(const void* p, DType t, size_t o) {
    switch (t) {
        case DType::i64:
            return static_cast<double>(static_cast<const int64_t*>(p)[o]);
        case DType::i32:
            return static_cast<const int32_t*>(p)[o];
        case DType::i8:
            return static_cast<const int8_t*>(p)[o];
        case DType::f32:
        case DType::bf16:
        case DType::f16:
            return load_f32(p, t, o);
    }
    return 0.0;
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, MemCategory category,
                     const AllocOptions& opts) {
    for (int64_t d : shape) {
        ZS_CHECK_T(ShapeError, d >= 0, "negative dimension in shape {}", shape.str());
    }
    Tensor t;
    t.buf_ = Buffer::allocate(static_cast<size_t>(shape.numel()) * dtype_size(dtype), device,
                              category, opts);
    t.dtype_ = dtype;
    t.shape_ = shape;
    t.strides_ = contiguous_strides(shape);
    return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device, MemCategory category) {
    Tensor t = empty(shape, dtype, device, category);
    t.zero();
    return t;
}

Tensor Tensor::from_buffer(std::shared_ptr<Buffer> buffer, size_t byte_offset, const Shape& shape,
                           DType dtype) {
    ZS_ASSERT(buffer != nullptr);
    size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
    ZS_CHECK_T(ShapeError, byte_offset <= buffer->size() && bytes <= buffer->size() - byte_offset,
               "tensor {} {} at byte offset {} does not fit in a buffer of {} bytes",
               to_string(dtype), shape.str(), byte_offset, buffer->size());
    Tensor t;
    t.buf_ = std::move(buffer);
    t.offset_ = byte_offset;
    t.dtype_ = dtype;
    t.shape_ = shape;
    t.strides_ = contiguous_strides(shape);
    return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, Device device) {
    size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
    return from_buffer(Buffer::wrap(data, bytes, device), 0, shape, dtype);
}

int Tensor::norm_dim(int d) const {
    int n = shape_.ndim();
    int r = d < 0 ? d + n : d;
    ZS_CHECK_T(ShapeError, r >= 0 && r < n, "dimension {} out of range for tensor {}", d, str());
    return r;
}

bool Tensor::is_contiguous() const {
    int64_t acc = 1;
    for (int i = shape_.ndim() - 1; i >= 0; --i) {
        if (shape_[i] != 1 && strides_[i] != acc) return false;
        acc *= shape_[i];
    }
    return true;
}

Tensor Tensor::view(const Shape& shape) const {
    ZS_CHECK_T(ShapeError, is_contiguous(), "view({}) of non-contiguous tensor {} (use reshape)",
               shape.str(), str());
    Shape s = shape;
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < s.ndim(); ++i) {
        if (s[i] == -1) {
            ZS_CHECK_T(ShapeError, infer < 0, "view({}): more than one -1", shape.str());
            infer = i;
        } else {
            known *= s[i];
        }
    }
    if (infer >= 0) {
        ZS_CHECK_T(ShapeError, known > 0 && numel() % known == 0,
                   "view({}) cannot hold the {} elements of {}", shape.str(), numel(), str());
        s[infer] = numel() / known;
    }
    ZS_CHECK_T(ShapeError, s.numel() == numel(), "view({}) has {} elements; tensor {} has {}",
               shape.str(), s.numel(), str(), numel());
    Tensor t = *this;
    t.shape_ = s;
    t.strides_ = contiguous_strides(s);
    return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
    return is_contiguous() ? view(shape) : contiguous().view(shape);
}

Tensor Tensor::slice(int d, int64_t start, int64_t end) const {
    int k = norm_dim(d);
    ZS_CHECK_T(ShapeError, 0 <= start && start <= end && end <= shape_[k],
               "slice [{}, {}) out of range for dimension {} of {}", start, end, d, str());
    Tensor t = *this;
    t.offset_ += static_cast<size_t>(start * strides_[k]) * element_size();
    t.shape_[k] = end - start;
    return t;
}

Tensor Tensor::select(int d, int64_t i) const {
    int k = norm_dim(d);
    ZS_CHECK_T(ShapeError, 0 <= i && i < shape_[k], "index {} out of range for dimension {} of {}",
               i, d, str());
    Tensor t;
    t.buf_ = buf_;
    t.dtype_ = dtype_;
    t.offset_ = offset_ + static_cast<size_t>(i * strides_[k]) * element_size();
    for (int j = 0; j < shape_.ndim(); ++j) {
        if (j == k) continue;
        t.shape_.push_back(shape_[j]);
        t.strides_.push_back(strides_[j]);
    }
    return t;
}

Tensor Tensor::transpose(int d0, int d1) const {
    int a = norm_dim(d0), b = norm_dim(d1);
    Tensor t = *this;
    std::swap(t.shape_[a], t.shape_[b]);
    std::swap(t.strides_[a], t.strides_[b]);
    return t;
}

Tensor Tensor::unsqueeze(int d) const {
    int n = shape_.ndim();
    int k = d < 0 ? d + n + 1 : d;
    ZS_CHECK_T(ShapeError, k >= 0 && k <= n, "unsqueeze({}) out of range for {}", d, str());
    Tensor t = *this;
    t.shape_ = Shape();
    t.strides_ = Strides();
    for (int j = 0; j <= n; ++j) {
        if (j == k) {
            t.shape_.push_back(1);
            t.strides_.push_back(j < n ? strides_[j] * shape_[j] : 1);
        }
        if (j < n) {
            t.shape_.push_back(shape_[j]);
            t.strides_.push_back(strides_[j]);
        }
    }
    return t;
}

Tensor Tensor::as_strided(const Shape& shape, const Strides& strides, int64_t elem_offset) const {
    ZS_CHECK_T(ShapeError, shape.ndim() == strides.ndim(), "as_strided: shape {} with strides {}",
               shape.str(), strides.str());
    int64_t lo = elem_offset, hi = elem_offset;  // element range touched, relative to this view
    if (shape.numel() > 0) {
        for (int i = 0; i < shape.ndim(); ++i) {
            int64_t ext = (shape[i] - 1) * strides[i];
            (ext < 0 ? lo : hi) += ext;
        }
    }
    auto base = static_cast<int64_t>(offset_ / element_size());
    auto cap = static_cast<int64_t>(buf_->size() / element_size());
    ZS_CHECK_T(ShapeError, base + lo >= 0 && (shape.numel() == 0 || base + hi < cap),
               "as_strided({}, {}, +{}) reaches outside the buffer of {}", shape.str(),
               strides.str(), elem_offset, str());
    Tensor t = *this;
    t.offset_ = static_cast<size_t>(base + elem_offset) * element_size();
    t.shape_ = shape;
    t.strides_ = strides;
    return t;
}

Tensor Tensor::contiguous() const {
    if (is_contiguous()) return *this;
    return clone();
}

Tensor Tensor::to(DType dtype) const {
    if (dtype == dtype_) return *this;
    Tensor t = empty(shape_, dtype, device(), buf_->category());
    t.copy_from(*this);
    return t;
}

Tensor Tensor::to(Device dev) const {
    if (dev == device()) return *this;
    Tensor t = empty(shape_, dtype_, dev, buf_->category());
    t.copy_from(*this);
    return t;
}

Tensor Tensor::clone(MemCategory category) const {
    Tensor t = empty(shape_, dtype_, device(), category);
    t.copy_from(*this);
    return t;
}

void Tensor::copy_from(const Tensor& src) const {
    ZS_CHECK_T(ShapeError, defined() && src.defined(), "copy_from: undefined tensor");
    ZS_CHECK_T(ShapeError, shape_ == src.shape_, "copy_from: shape {} into {}", src.str(), str());
    if (numel() == 0) return;
    Device dd = device(), sd = src.device();
    if (!dd.is_cpu() || !sd.is_cpu()) {
        // Device copies move contiguous bytes; strides and dtype changes happen on the host.
        if (is_contiguous() && src.is_contiguous() && dtype_ == src.dtype_) {
            if (dd.is_cpu()) {
                backend(sd).copy_to_host(data_ptr(), src.data_ptr(), nbytes());
            } else if (sd.is_cpu()) {
                backend(dd).copy_from_host(data_ptr(), src.data_ptr(), nbytes());
            } else {
                ZS_CHECK_T(NotSupported, dd == sd, "copy between devices {} and {}", sd.str(),
                           dd.str());
                backend(dd).copy_within(data_ptr(), src.data_ptr(), nbytes());
            }
            return;
        }
        Tensor host = sd.is_cpu() ? src : src.contiguous().to(Device::cpu());
        Tensor host_dst = empty(shape_, dtype_, Device::cpu(), MemCategory::buffers);
        host_dst.copy_from(host);
        copy_from(host_dst);
        return;
    }
    // CPU: contiguous fast path, else iterate the innermost dimension as a run.
    if (is_contiguous() && src.is_contiguous()) {
        convert(data_ptr(), dtype_, src.data_ptr(), src.dtype_, static_cast<size_t>(numel()));
        return;
    }
    int n = dim();
    int64_t inner = n ? shape_[n - 1] : 1;
    bool runs = n > 0 && strides_[n - 1] == 1 && src.strides_[n - 1] == 1;
    Shape outer_shape;
    Strides dst_outer, src_outer;
    int outer_dims = runs ? n - 1 : n;
    for (int i = 0; i < outer_dims; ++i) {
        outer_shape.push_back(shape_[i]);
        dst_outer.push_back(strides_[i]);
        src_outer.push_back(src.strides_[i]);
    }
    // Walk dst and src offsets together: iterate outer indices once, derive both offsets.
    std::vector<int64_t> src_offs;
    src_offs.reserve(static_cast<size_t>(outer_shape.numel()));
    for_each_offset(outer_shape, src_outer, [&](int64_t o) { src_offs.push_back(o); });
    size_t k = 0;
    auto* d = static_cast<char*>(data_ptr());
    const auto* s = static_cast<const char*>(src.data_ptr());
    size_t des = element_size(), ses = src.element_size();
    int64_t run = runs ? inner : 1;
    for_each_offset(outer_shape, dst_outer, [&](int64_t o) {
        convert(d + static_cast<size_t>(o) * des, dtype_,
                s + static_cast<size_t>(src_offs[k++]) * ses, src.dtype_, static_cast<size_t>(run));
    });
}

void Tensor::fill(double value) const {
    if (numel() == 0) return;
    if (!device().is_cpu()) {
        Tensor host = empty(shape_, dtype_, Device::cpu(), MemCategory::buffers);
        host.fill(value);
        copy_from(host);
        return;
    }
    // Convert the value once, then replicate its bytes.
    alignas(8) unsigned char pattern[8] = {};
    auto v = static_cast<float>(value);
    if (dtype_ == DType::i64) {
        auto x = static_cast<int64_t>(value);
        std::memcpy(pattern, &x, 8);
    } else if (dtype_ == DType::i32) {
        auto x = static_cast<int32_t>(value);
        std::memcpy(pattern, &x, 4);
    } else if (dtype_ == DType::i8) {
        auto x = static_cast<int8_t>(value);
        std::memcpy(pattern, &x, 1);
    } else {
        convert(pattern, dtype_, &v, DType::f32, 1);
    }
    size_t es = element_size();
    auto* base = static_cast<char*>(data_ptr());
    for_each_offset(shape_, strides_, [&](int64_t o) {
        std::memcpy(base + static_cast<size_t>(o) * es, pattern, es);
    });
}

void Tensor::zero() const {
    if (is_contiguous()) {
        backend(device()).memset_zero(data_ptr(), nbytes());
    } else {
        fill(0.0);
    }
}

double Tensor::item(std::initializer_list<int64_t> index) const {
    ZS_CHECK_T(ShapeError, static_cast<int>(index.size()) == dim(), "item: {} indices for {}",
               index.size(), str());
    ZS_CHECK_T(NotSupported, device().is_cpu(), "item() on {}", device().str());
    int64_t off = 0;
    int i = 0;
    for (int64_t v : index) {
        ZS_CHECK_T(ShapeError, v >= 0 && v < shape_[i], "item: index {} out of range in {}", v,
                   str());
        off += v * strides_[i++];
    }
    return read_element(data_ptr(), dtype_, static_cast<size_t>(off));
}

double Tensor::item() const {
    ZS_CHECK_T(ShapeError, numel() == 1, "item() of {} (needs one element)", str());
    Tensor c = contiguous().to(Device::cpu());
    return read_element(c.data_ptr(), c.dtype_, 0);
}

std::string Tensor::str() const {
    if (!defined()) return "undefined";
    return std::string(to_string(dtype_)) + shape_.str() + " " + device().str();
}

}  // namespace zs::core
