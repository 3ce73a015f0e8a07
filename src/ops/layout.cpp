#include "ops/layout.h"

#include <string>

#include "base/error.h"

namespace zs::ops {

std::optional<Rows> rows_of(const core::Tensor& t) {
    int n = t.dim();
    if (n == 0) return Rows{1, 1, 1};
    if (t.size(-1) > 1 && t.stride(-1) != 1) return std::nullopt;
    Rows r;
    r.cols = t.size(-1);
    r.n = 1;
    // Walk leading dims from the innermost outwards; each must continue the previous one.
    int64_t stride = -1;  // stride of one row, fixed by the innermost leading dim of size > 1
    int64_t span = 1;     // rows covered so far
    for (int i = n - 2; i >= 0; --i) {
        int64_t s = t.size(i);
        r.n *= s;
        if (s == 1) continue;
        if (stride < 0) {
            stride = t.stride(i);
        } else if (t.stride(i) != stride * span) {
            return std::nullopt;
        }
        span *= s;
    }
    r.stride = stride < 0 ? r.cols : stride;
    return r;
}

namespace check {

namespace {
std::string dtype_list(std::initializer_list<DType> allowed) {
    std::string s;
    for (DType d : allowed) {
        if (!s.empty()) s += " or ";
        s += to_string(d);
    }
    return s;
}
}  // namespace

void defined(const char* op, const char* arg, const Tensor& t) {
    ZS_CHECK_T(ShapeError, t.defined(), "{}: argument '{}' is required but undefined", op, arg);
}

void dtype(const char* op, const char* arg, const Tensor& t, std::initializer_list<DType> allowed) {
    for (DType d : allowed) {
        if (t.dtype() == d) return;
    }
    ZS_THROW(ShapeError, "{}: argument '{}' has dtype {}; expected {}", op, arg,
             to_string(t.dtype()), dtype_list(allowed));
}

void shape(const char* op, const char* arg, const Tensor& t, const Shape& expected) {
    ZS_CHECK_T(ShapeError, t.shape() == expected, "{}: argument '{}' has shape {}; expected {}", op,
               arg, t.shape().str(), expected.str());
}

void ndim(const char* op, const char* arg, const Tensor& t, int n) {
    ZS_CHECK_T(ShapeError, t.dim() == n, "{}: argument '{}' has shape {}; expected {} dims", op,
               arg, t.shape().str(), n);
}

void same_shape(const char* op, const char* arg, const Tensor& t, const char* ref_arg,
                const Tensor& ref) {
    ZS_CHECK_T(ShapeError, t.shape() == ref.shape(),
               "{}: argument '{}' has shape {}; expected the shape of '{}', {}", op, arg,
               t.shape().str(), ref_arg, ref.shape().str());
}

void same_device(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
    const char* first_name = nullptr;
    core::Device first;
    for (const auto& [name, t] : ts) {
        if (!t->defined()) continue;
        if (first_name == nullptr) {
            first_name = name;
            first = t->device();
            continue;
        }
        ZS_CHECK_T(ShapeError, t->device() == first, "{}: argument '{}' is on {} but '{}' is on {}",
                   op, name, t->device().str(), first_name, first.str());
    }
}

Rows rows(const char* op, const char* arg, const Tensor& t) {
    auto r = rows_of(t);
    ZS_CHECK_T(ShapeError, r.has_value(),
               "{}: argument '{}' ({}) needs a contiguous last dim and uniformly strided rows", op,
               arg, t.str());
    return *r;
}

void contiguous(const char* op, const char* arg, const Tensor& t) {
    ZS_CHECK_T(ShapeError, t.is_contiguous(), "{}: argument '{}' ({}) must be contiguous", op, arg,
               t.str());
}

void last_dim_contiguous(const char* op, const char* arg, const Tensor& t) {
    ZS_CHECK_T(ShapeError, t.dim() >= 1 && (t.size(-1) <= 1 || t.stride(-1) == 1),
               "{}: argument '{}' ({}) needs a contiguous last dim", op, arg, t.str());
}

}  // namespace check
}  // namespace zs::ops
