#include "tests/test_util.h"

#include <cmath>

#include <fmt/format.h>

#include "ops/kernels.h"

namespace zs::test {

Tensor random_tensor(Rng& rng, const Shape& shape, DType dtype, double lo, double hi) {
    Tensor f = Tensor::empty(shape, DType::f32);
    float* p = f.data<float>();
    for (int64_t i = 0; i < f.numel(); ++i) p[i] = static_cast<float>(rng.uniform(lo, hi));
    return f.to(dtype);
}

Tensor random_ints(Rng& rng, const Shape& shape, DType dtype, int64_t lo, int64_t hi) {
    Tensor t = Tensor::empty(shape, DType::i64);
    int64_t* p = t.data<int64_t>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.integer(lo, hi);
    return t.to(dtype);
}

Tensor from_dtensor(const DTensor& d, DType dtype, core::Device device) {
    Tensor f = Tensor::empty(d.shape, DType::f32);
    float* p = f.data<float>();
    for (int64_t i = 0; i < d.numel(); ++i) p[i] = static_cast<float>(d[i]);
    return f.to(dtype).to(device);
}

Tol tol_for(DType dtype) {
    switch (dtype) {
        case DType::f32:
            return {1e-5, 1e-4};
        case DType::bf16:
            return {2e-2, 2e-2};
        case DType::f16:
            return {2e-3, 2e-3};
        case DType::i8:
        case DType::i32:
        case DType::i64:
            return {0, 0};
    }
    return {0, 0};
}

::testing::AssertionResult all_close(const DTensor& got, const DTensor& want, Tol tol,
                                     const std::string& what) {
    if (got.shape != want.shape) {
        return ::testing::AssertionFailure()
               << what << ": shape " << got.shape.str() << " vs reference " << want.shape.str();
    }
    int64_t bad = 0, worst = -1;
    double worst_excess = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
        double g = got[i], w = want[i];
        bool same_special = (std::isnan(g) && std::isnan(w)) || (std::isinf(g) && g == w);
        double lim = tol.atol + tol.rtol * std::fabs(w);
        double err = std::fabs(g - w);
        if (!same_special && !(err <= lim)) {
            ++bad;
            double excess = std::isfinite(err) ? err / lim : INFINITY;
            if (worst < 0 || excess > worst_excess) {
                worst_excess = excess;
                worst = i;
            }
        }
    }
    if (bad == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << what << ": " << bad << " of " << got.numel() << " elements off; worst at flat index "
           << worst << ": got " << fmt::format("{:.9g}", got[worst]) << ", want "
           << fmt::format("{:.9g}", want[worst]) << " (atol " << tol.atol << ", rtol " << tol.rtol
           << ")";
}

::testing::AssertionResult all_close(const Tensor& got, const DTensor& want, Tol tol,
                                     const std::string& what) {
    return all_close(ops::reference::from_tensor(got), want, tol, what);
}

DTensor numeric_grad(const std::function<double(const DTensor&)>& f, const DTensor& x, double eps) {
    DTensor g(x.shape);
    DTensor xp = x;
    for (int64_t i = 0; i < x.numel(); ++i) {
        double v = x[i];
        xp[i] = v + eps;
        double fp = f(xp);
        xp[i] = v - eps;
        double fm = f(xp);
        xp[i] = v;
        g[i] = (fp - fm) / (2 * eps);
    }
    return g;
}

double dot(const DTensor& a, const DTensor& b) {
    double s = 0;
    for (int64_t i = 0; i < a.numel(); ++i) s += a[i] * b[i];
    return s;
}

std::vector<core::Device> test_devices() {
    std::vector<core::Device> d{core::Device::cpu()};
    if (ops::has_kernels(core::DeviceType::cuda)) d.push_back(core::Device::cuda(0));
    return d;
}

std::string source_path(const std::string& rel) { return std::string(ZS_SOURCE_DIR) + "/" + rel; }

}  // namespace zs::test
