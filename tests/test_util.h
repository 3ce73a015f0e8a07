// Helpers shared by the unit tests: seeded random tensors, comparison against double references
// with stated tolerances, finite differences, and the list of devices to test.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/tensor.h"
#include "ops/reference/reference.h"

namespace zs::test {

using core::DType;
using core::Shape;
using core::Tensor;
using ops::reference::DTensor;

// Seeded generator (fixed seeds keep failures reproducible).
class Rng {
public:
    explicit Rng(uint64_t seed = 301) : gen_(seed) {}
    double uniform(double lo = -1.0, double hi = 1.0) {
        return std::uniform_real_distribution<double>(lo, hi)(gen_);
    }
    double normal(double sd = 1.0) { return std::normal_distribution<double>(0.0, sd)(gen_); }
    int64_t integer(int64_t lo, int64_t hi) {  // [lo, hi]
        return std::uniform_int_distribution<int64_t>(lo, hi)(gen_);
    }
    std::mt19937_64& gen() { return gen_; }

private:
    std::mt19937_64 gen_;
};

// A CPU tensor with entries ~ U(lo, hi), stored as `dtype` (values rounded to it).
Tensor random_tensor(Rng& rng, const Shape& shape, DType dtype, double lo = -1.0, double hi = 1.0);
// Integer tensor with entries in [lo, hi].
Tensor random_ints(Rng& rng, const Shape& shape, DType dtype, int64_t lo, int64_t hi);
Tensor from_dtensor(const DTensor& d, DType dtype, core::Device device = core::Device::cpu());

// Tolerances per dtype for a result that accumulated in f32 from inputs of `dtype`: |a - b| <=
// atol + rtol * |b|.
struct Tol {
    double atol, rtol;
};
Tol tol_for(DType dtype);

// Expect every element of `got` (any dtype/device) to match `want`; reports the worst element.
::testing::AssertionResult all_close(const Tensor& got, const DTensor& want, Tol tol,
                                     const std::string& what = "");
::testing::AssertionResult all_close(const DTensor& got, const DTensor& want, Tol tol,
                                     const std::string& what = "");

// Central finite differences of L(x) = f(x) (a scalar function in double) w.r.t. every element
// of x. Used to check backward kernels against the double-precision reference forward.
DTensor numeric_grad(const std::function<double(const DTensor&)>& f, const DTensor& x,
                     double eps = 1e-6);

// sum(a * b) over all elements.
double dot(const DTensor& a, const DTensor& b);

// Devices whose kernels are registered in this process (cpu; cuda when present).
std::vector<core::Device> test_devices();

// Path of a file under the repository (tests read fixtures from the source tree).
std::string source_path(const std::string& rel);

}  // namespace zs::test
