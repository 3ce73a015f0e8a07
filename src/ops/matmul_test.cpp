// matmul / linear against the double reference: transposes, batches, broadcast weights, bias,
// alpha/beta, strided views, odd sizes, f32 and bf16; linear_backward against finite differences.
#include "ops/matmul.h"

#include <gtest/gtest.h>

#include "ops/reference/reference.h"
#include "tests/test_util.h"

namespace zs::ops {
namespace {

using namespace zs::test;
namespace ref = ops::reference;

struct Case {
    Shape batch;
    int64_t m, k, n;
    bool ta, tb, batched_b, bias;
    float alpha, beta;
};

Shape with(const Shape& batch, int64_t r, int64_t c) {
    Shape s = batch;
    s.push_back(r);
    s.push_back(c);
    return s;
}

void run_case(const Case& c, DType dt, core::Device dev, Rng& rng) {
    Tensor a = random_tensor(rng, with(c.batch, c.ta ? c.k : c.m, c.ta ? c.m : c.k), dt);
    Tensor b = random_tensor(
        rng, with(c.batched_b ? c.batch : Shape{}, c.tb ? c.n : c.k, c.tb ? c.k : c.n), dt);
    Tensor out0 = random_tensor(rng, with(c.batch, c.m, c.n), DType::f32);
    Tensor bias = c.bias ? random_tensor(rng, {c.n}, DType::f32) : Tensor();
    MatmulOptions o{c.ta, c.tb, c.alpha, c.beta};
    ref::DTensor want =
        ref::matmul(ref::from_tensor(a), ref::from_tensor(b), o, ref::from_tensor(out0),
                    c.bias ? ref::from_tensor(bias) : ref::DTensor());
    for (DType odt : {DType::f32, DType::bf16}) {
        Tensor out = out0.to(odt).to(dev).clone();  // to() may alias out0; beta reads it
        matmul(out, a.to(dev), b.to(dev), o, c.bias ? bias.to(dev) : Tensor());
        Tol tol = tol_for(dt == DType::bf16 || odt == DType::bf16 ? DType::bf16 : DType::f32);
        tol.atol *= std::sqrt(static_cast<double>(c.k) + 1);
        EXPECT_TRUE(all_close(out, want, tol,
                              fmt::format("matmul {} m{} k{} n{} ta{} tb{} out {}", to_string(dt),
                                          c.m, c.k, c.n, c.ta, c.tb, to_string(odt))));
    }
}

TEST(Matmul, MatchesReference) {
    Rng rng(301);
    std::vector<Case> cases = {
        {{}, 1, 1, 1, false, false, false, false, 1, 0},
        {{}, 7, 13, 5, false, false, false, true, 1, 0},
        {{}, 33, 64, 17, true, false, false, false, 1, 0},
        {{}, 16, 31, 48, false, true, false, true, 1, 1},
        {{}, 9, 20, 11, true, true, false, false, 0.5f, 0.25f},
        {{3}, 5, 7, 9, false, false, true, false, 1, 0},
        {{2, 3}, 4, 8, 6, false, true, true, true, 1, 0},
        {{4}, 1, 64, 80, false, true, false, false, 1, 1},  // broadcast weight (linear)
        {{}, 128, 96, 130, false, true, false, true, 1, 0},
        // Decode shapes (the skinny-matmul path): a few rows against an [N, K] weight.
        {{}, 1, 64, 80, false, true, false, true, 1, 1},
        {{}, 3, 100, 7, false, true, false, false, 0.5f, 0},
        {{}, 4, 576, 1536, false, true, false, true, 1, 0},
        {{}, 2, 17, 33, false, true, false, false, 1, 0.25f},
        {{}, 1, 33, 13, false, true, false, true, 1, 0},       // a partial block of 8 columns
        {{}, 8, 40, 17, false, true, false, true, 1, 0},       // 8 rows, partial blocks of 3
        {{}, 13, 64, 10, false, true, false, false, 1, 0.5f},  // two passes (8 + 5)
    };
    for (core::Device dev : test_devices()) {
        for (DType dt : {DType::f32, DType::bf16}) {
            for (const Case& c : cases) run_case(c, dt, dev, rng);
        }
    }
}

TEST(Matmul, StridedViewsWithoutCopies) {
    Rng rng(7);
    for (core::Device dev : test_devices()) {
        Tensor big = random_tensor(rng, {10, 24}, DType::f32).to(dev);
        Tensor a = big.slice(1, 4, 14);  // [10, 10], row stride 24
        Tensor b = random_tensor(rng, {12, 10}, DType::f32).to(dev).transpose(0, 1);  // [10, 12]
        Tensor outbig = Tensor::zeros({10, 30}, DType::f32, dev);
        Tensor out = outbig.slice(1, 3, 15);  // [10, 12]
        matmul(out, a, b);
        auto want = ref::matmul(ref::from_tensor(a), ref::from_tensor(b), {}, {}, {});
        EXPECT_TRUE(all_close(out, want, {1e-5, 1e-5}, "strided"));
        // Columns outside the view are untouched.
        EXPECT_EQ(outbig.to(core::Device::cpu()).item({9, 2}), 0.0);
        EXPECT_EQ(outbig.to(core::Device::cpu()).item({9, 15}), 0.0);
    }
}

// f32 products big enough for the OpenBLAS path (B row-major [K, N], at least 2^27 multiply-adds):
// every transpose combination, alpha/beta, and operands that are strided or transposed views.
TEST(Matmul, LargeF32ProductsMatchReference) {
    Rng rng(88);
    const std::vector<Case> cases = {
        {{}, 512, 520, 516, false, false, false, false, 1, 0},    // dX = dY W
        {{}, 516, 512, 520, true, false, false, false, 1, 1},     // dW += dY^T X
        {{}, 520, 516, 512, false, true, false, false, 0.5f, 0},  // oneDNN's layout
        {{}, 512, 512, 520, true, true, false, false, 1, 0.25f},
    };
    for (const Case& c : cases) run_case(c, DType::f32, core::Device::cpu(), rng);
    // A: a column slice (row stride > K) and a transposed view; B: a column slice.
    Tensor abig = random_tensor(rng, {520, 530}, DType::f32);
    Tensor bbig = random_tensor(rng, {520, 540}, DType::f32);
    Tensor b = bbig.slice(1, 7, 527);  // [520, 520], row stride 540
    for (bool transposed : {false, true}) {
        Tensor a = transposed ? abig.slice(1, 3, 515).transpose(0, 1)    // [512, 520], col-major
                              : abig.slice(0, 0, 512).slice(1, 5, 525);  // [512, 520]
        Tensor outbig = Tensor::zeros({512, 530}, DType::f32);
        Tensor out = outbig.slice(1, 4, 524);
        matmul(out, a, b);
        auto want = ref::matmul(ref::from_tensor(a), ref::from_tensor(b), {}, {}, {});
        Tol tol = tol_for(DType::f32);
        tol.atol *= std::sqrt(521.0);
        EXPECT_TRUE(all_close(out, want, tol, fmt::format("strided, transposed {}", transposed)));
        EXPECT_EQ(outbig.item({511, 3}), 0.0);
        EXPECT_EQ(outbig.item({511, 524}), 0.0);
    }
}

TEST(Matmul, ZeroInnerDimension) {
    Tensor a = Tensor::empty({3, 0}, DType::f32);
    Tensor b = Tensor::empty({0, 4}, DType::f32);
    Tensor out = Tensor::empty({3, 4}, DType::f32);
    out.fill(2.0);
    Tensor bias = Tensor::empty({4}, DType::f32);
    bias.fill(1.0);
    matmul(out, a, b, {.beta = 0.5f}, bias);
    EXPECT_EQ(out.item({2, 3}), 2.0);
}

TEST(Matmul, BadShapesNameTheArgument) {
    Tensor a = Tensor::empty({4, 5}, DType::f32);
    Tensor b = Tensor::empty({6, 3}, DType::f32);
    Tensor out = Tensor::empty({4, 3}, DType::f32);
    try {
        matmul(out, a, b);
        FAIL();
    } catch (const ShapeError& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("matmul"), std::string::npos) << m;
        EXPECT_NE(m.find("[4, 5]"), std::string::npos) << m;
        EXPECT_NE(m.find("[6, 3]"), std::string::npos) << m;
    }
    EXPECT_THROW(matmul(out, a, Tensor::empty({5, 3}, DType::bf16)), ShapeError);
    EXPECT_THROW(matmul(Tensor::empty({4, 4}, DType::f32), a, Tensor::empty({5, 3}, DType::f32)),
                 ShapeError);
    EXPECT_THROW(
        matmul(out, a, Tensor::empty({5, 3}, DType::f32), {}, Tensor::empty({4}, DType::f32)),
        ShapeError);
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
    Rng rng(11);
    const int64_t B = 3, IC = 7, OC = 5;
    for (core::Device dev : test_devices()) {
        Tensor x = random_tensor(rng, {B, IC}, DType::f32);
        Tensor w = random_tensor(rng, {OC, IC}, DType::f32);
        Tensor bias = random_tensor(rng, {OC}, DType::f32);
        Tensor dout = random_tensor(rng, {B, OC}, DType::f32);
        auto dx_ = ref::from_tensor(x), dw_ = ref::from_tensor(w), db_ = ref::from_tensor(bias),
             dg = ref::from_tensor(dout);
        auto fwd = [&](const ref::DTensor& xx, const ref::DTensor& ww, const ref::DTensor& bb) {
            return dot(ref::matmul(xx, ww, {.trans_b = true}, {}, bb), dg);
        };
        auto gx = numeric_grad([&](const ref::DTensor& v) { return fwd(v, dw_, db_); }, dx_);
        auto gw = numeric_grad([&](const ref::DTensor& v) { return fwd(dx_, v, db_); }, dw_);
        auto gb = numeric_grad([&](const ref::DTensor& v) { return fwd(dx_, dw_, v); }, db_);

        Tensor out = Tensor::empty({B, OC}, DType::f32, dev);
        linear_forward(out, x.to(dev), w.to(dev), bias.to(dev));
        EXPECT_TRUE(
            all_close(out, ref::matmul(dx_, dw_, {.trans_b = true}, {}, db_), {1e-5, 1e-5}));
        Tensor dx = Tensor::empty({B, IC}, DType::f32, dev);
        Tensor dw = Tensor::zeros({OC, IC}, DType::f32, dev);
        Tensor db = Tensor::zeros({OC}, DType::f32, dev);
        linear_backward(dx, dw, db, dout.to(dev), x.to(dev), w.to(dev));
        EXPECT_TRUE(all_close(dx, gx, {1e-5, 1e-4}, "dx"));
        EXPECT_TRUE(all_close(dw, gw, {1e-5, 1e-4}, "dw"));
        EXPECT_TRUE(all_close(db, gb, {1e-5, 1e-4}, "db"));
        // Parameter gradients accumulate.
        linear_backward(Tensor(), dw, db, dout.to(dev), x.to(dev), w.to(dev));
        ref::DTensor gw2 = gw, gb2 = gb;
        for (auto& v : gw2.data) v *= 2;
        for (auto& v : gb2.data) v *= 2;
        EXPECT_TRUE(all_close(dw, gw2, {1e-5, 1e-4}, "dw accumulated"));
        EXPECT_TRUE(all_close(db, gb2, {1e-5, 1e-4}, "db accumulated"));
    }
}

TEST(Linear, Bf16TransformerShape) {
    Rng rng(3);
    Tensor x = random_tensor(rng, {2, 9, 64}, DType::bf16);
    Tensor w = random_tensor(rng, {96, 64}, DType::bf16);
    for (core::Device dev : test_devices()) {
        Tensor out = Tensor::empty({2, 9, 96}, DType::f32, dev);
        linear_forward(out, x.to(dev), w.to(dev));
        auto want =
            ref::matmul(ref::from_tensor(x), ref::from_tensor(w), {.trans_b = true}, {}, {});
        EXPECT_TRUE(all_close(out, want, {1e-4, 1e-4}, "bf16 inputs, f32 accumulate and output"));
    }
}

}  // namespace
}  // namespace zs::ops
