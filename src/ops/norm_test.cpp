// LayerNorm / RMSNorm forward against the double reference and backward against finite
// differences of that reference, for f32 and bf16, odd widths and strided rows.
#include "ops/norm.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace zs::ops {
namespace {

using namespace zs::test;
namespace ref = ops::reference;

TEST(LayerNorm, ForwardMatchesReference) {
    Rng rng(301);
    for (core::Device dev : test_devices()) {
        for (DType dt : {DType::f32, DType::bf16}) {
            for (auto [n, c] : {std::pair{1, 1}, {7, 13}, {5, 768}, {64, 80}, {3, 4099}}) {
                Tensor x = random_tensor(rng, {n, c}, dt, -2, 3);
                Tensor w = random_tensor(rng, {c}, dt);
                Tensor b = random_tensor(rng, {c}, dt);
                auto want = ref::layernorm(ref::from_tensor(x), ref::from_tensor(w),
                                           ref::from_tensor(b), 1e-5);
                Tensor out = Tensor::empty({n, c}, dt, dev);
                Tensor mean = Tensor::empty({n}, DType::f32, dev);
                Tensor rstd = Tensor::empty({n}, DType::f32, dev);
                layernorm_forward(out, mean, rstd, x.to(dev), w.to(dev), b.to(dev), 1e-5f);
                Tol t = tol_for(dt);
                EXPECT_TRUE(
                    all_close(out, want.out, t, fmt::format("out {} {}x{}", to_string(dt), n, c)));
                EXPECT_TRUE(all_close(mean, want.mean, {1e-5, 1e-5}, "mean"));
                EXPECT_TRUE(all_close(rstd, want.rstd, {1e-5, 1e-4}, "rstd"));
            }
        }
    }
}

TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
    Rng rng(5);
    const int64_t N = 4, C = 19;
    for (core::Device dev : test_devices()) {
        Tensor x = random_tensor(rng, {N, C}, DType::f32, -2, 2);
        Tensor w = random_tensor(rng, {C}, DType::f32);
        Tensor b = random_tensor(rng, {C}, DType::f32);
        Tensor dout = random_tensor(rng, {N, C}, DType::f32);
        auto X = ref::from_tensor(x), W = ref::from_tensor(w), Bb = ref::from_tensor(b),
             G = ref::from_tensor(dout);
        auto loss = [&](const ref::DTensor& xx, const ref::DTensor& ww, const ref::DTensor& bb) {
            return dot(ref::layernorm(xx, ww, bb, 1e-5).out, G);
        };
        auto gx = numeric_grad([&](const ref::DTensor& v) { return loss(v, W, Bb); }, X);
        auto gw = numeric_grad([&](const ref::DTensor& v) { return loss(X, v, Bb); }, W);
        auto gb = numeric_grad([&](const ref::DTensor& v) { return loss(X, W, v); }, Bb);

        Tensor out = Tensor::empty({N, C}, DType::f32, dev);
        Tensor mean = Tensor::empty({N}, DType::f32, dev),
               rstd = Tensor::empty({N}, DType::f32, dev);
        layernorm_forward(out, mean, rstd, x.to(dev), w.to(dev), b.to(dev), 1e-5f);
        // dx accumulates (residual stream): start from a known value and subtract it.
        Tensor dx = Tensor::empty({N, C}, DType::f32, dev);
        dx.fill(0.5);
        Tensor dw = Tensor::zeros({C}, DType::f32, dev), db = Tensor::zeros({C}, DType::f32, dev);
        layernorm_backward(dx, dw, db, dout.to(dev), x.to(dev), w.to(dev), mean, rstd);
        for (auto& v : gx.data) v += 0.5;
        EXPECT_TRUE(all_close(dx, gx, {1e-4, 1e-3}, "dx"));
        EXPECT_TRUE(all_close(dw, gw, {1e-4, 1e-3}, "dw"));
        EXPECT_TRUE(all_close(db, gb, {1e-4, 1e-3}, "db"));
    }
}

TEST(LayerNorm, ManyRowsParallelBackwardIsDeterministicAndCorrect) {
    // Enough rows to take the multi-threaded path; compare against the double reference's
    // analytic sums (dw = sum dout * xhat, db = sum dout).
    Rng rng(9);
    const int64_t N = 512, C = 96;
    Tensor x = random_tensor(rng, {N, C}, DType::f32), w = random_tensor(rng, {C}, DType::f32);
    Tensor b = random_tensor(rng, {C}, DType::f32), dout = random_tensor(rng, {N, C}, DType::f32);
    Tensor out = Tensor::empty({N, C}, DType::f32), mean = Tensor::empty({N}, DType::f32),
           rstd = Tensor::empty({N}, DType::f32);
    layernorm_forward(out, mean, rstd, x, w, b, 1e-5f);
    auto r = ref::layernorm(ref::from_tensor(x), ref::from_tensor(w), ref::from_tensor(b), 1e-5);
    ref::DTensor dw_want(Shape{C}), db_want(Shape{C});
    auto X = ref::from_tensor(x), G = ref::from_tensor(dout);
    for (int64_t i = 0; i < N; ++i) {
        for (int64_t j = 0; j < C; ++j) {
            dw_want[j] += G[i * C + j] * (X[i * C + j] - r.mean[i]) * r.rstd[i];
            db_want[j] += G[i * C + j];
        }
    }
    Tensor dx1 = Tensor::zeros({N, C}, DType::f32), dw1 = Tensor::zeros({C}, DType::f32),
           db1 = Tensor::zeros({C}, DType::f32);
    layernorm_backward(dx1, dw1, db1, dout, x, w, mean, rstd);
    EXPECT_TRUE(all_close(dw1, dw_want, {1e-4, 1e-4}, "dw"));
    EXPECT_TRUE(all_close(db1, db_want, {1e-4, 1e-4}, "db"));
    Tensor dx2 = Tensor::zeros({N, C}, DType::f32), dw2 = Tensor::zeros({C}, DType::f32),
           db2 = Tensor::zeros({C}, DType::f32);
    layernorm_backward(dx2, dw2, db2, dout, x, w, mean, rstd);
    EXPECT_EQ(std::memcmp(dw1.data_ptr(), dw2.data_ptr(), dw1.nbytes()), 0);
    EXPECT_EQ(std::memcmp(dx1.data_ptr(), dx2.data_ptr(), dx1.nbytes()), 0);
}

TEST(RmsNorm, ForwardMatchesReference) {
    Rng rng(17);
    for (core::Device dev : test_devices()) {
        for (DType dt : {DType::f32, DType::bf16}) {
            for (auto [n, c] : {std::pair{1, 1}, {7, 13}, {9, 576}, {2, 4100}}) {
                Tensor x = random_tensor(rng, {n, c}, dt, -2, 3);
                Tensor w = random_tensor(rng, {c}, dt);
                auto want = ref::rmsnorm(ref::from_tensor(x), ref::from_tensor(w), 1e-6);
                Tensor out = Tensor::empty({n, c}, DType::f32, dev);
                Tensor rstd = Tensor::empty({n}, DType::f32, dev);
                rmsnorm_forward(out, rstd, x.to(dev), w.to(dev), 1e-6f);
                EXPECT_TRUE(all_close(out, want.out, {1e-5, 1e-4},
                                      fmt::format("{} {}x{}", to_string(dt), n, c)));
                EXPECT_TRUE(all_close(rstd, want.rstd, {1e-5, 1e-4}, "rstd"));
            }
        }
    }
}

TEST(RmsNorm, BackwardMatchesFiniteDifferencesOnStridedRows) {
    Rng rng(23);
    const int64_t N = 5, C = 21;
    for (core::Device dev : test_devices()) {
        // x is a column slice of a wider matrix: rows are strided.
        Tensor xw = random_tensor(rng, {N, C + 6}, DType::f32, -2, 2);
        Tensor x = xw.slice(1, 3, 3 + C);
        Tensor w = random_tensor(rng, {C}, DType::f32);
        Tensor dout = random_tensor(rng, {N, C}, DType::f32);
        auto X = ref::from_tensor(x), W = ref::from_tensor(w), G = ref::from_tensor(dout);
        auto loss = [&](const ref::DTensor& xx, const ref::DTensor& ww) {
            return dot(ref::rmsnorm(xx, ww, 1e-6).out, G);
        };
        auto gx = numeric_grad([&](const ref::DTensor& v) { return loss(v, W); }, X);
        auto gw = numeric_grad([&](const ref::DTensor& v) { return loss(X, v); }, W);
        Tensor xd = xw.to(dev).slice(1, 3, 3 + C);
        Tensor out = Tensor::empty({N, C}, DType::f32, dev),
               rstd = Tensor::empty({N}, DType::f32, dev);
        rmsnorm_forward(out, rstd, xd, w.to(dev), 1e-6f);
        Tensor dx = Tensor::zeros({N, C}, DType::f32, dev),
               dw = Tensor::zeros({C}, DType::f32, dev);
        rmsnorm_backward(dx, dw, dout.to(dev), xd, w.to(dev), rstd);
        EXPECT_TRUE(all_close(dx, gx, {1e-4, 1e-3}, "dx"));
        EXPECT_TRUE(all_close(dw, gw, {1e-4, 1e-3}, "dw"));
    }
}

TEST(Norm, BadArgumentsAreNamed) {
    Tensor x = Tensor::empty({4, 8}, DType::f32), w = Tensor::empty({7}, DType::f32);
    Tensor out = Tensor::empty({4, 8}, DType::f32);
    try {
        rmsnorm_forward(out, Tensor(), x, w, 1e-6f);
        FAIL();
    } catch (const ShapeError& e) {
        EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
    }
    EXPECT_THROW(rmsnorm_forward(out, Tensor::empty({3}, DType::f32), x,
                                 Tensor::empty({8}, DType::f32), 1e-6f),
                 ShapeError);
    EXPECT_THROW(rmsnorm_forward(out, Tensor(), Tensor::empty({4, 8}, DType::i32),
                                 Tensor::empty({8}, DType::f32), 1e-6f),
                 ShapeError);
}

}  // namespace
}  // namespace zs::ops
