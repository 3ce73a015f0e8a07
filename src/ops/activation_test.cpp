// GELU (tanh), SiLU, SwiGLU, add, scale and softmax against the double reference; backwards
// against finite differences; bf16 and strided (column-slice) arguments.
#include "ops/activation.h"

#include <cmath>

#include <gtest/gtest.h>

#include "ops/softmax.h"
#include "tests/test_util.h"

namespace zs::ops {
namespace {

using namespace zs::test;
namespace ref = ops::reference;

TEST(Activation, ForwardsMatchReference) {
    Rng rng(301);
    for (core::Device dev : test_devices()) {
        for (DType dt : {DType::f32, DType::bf16}) {
            for (Shape s : {Shape{1}, Shape{7, 13}, Shape{3, 5, 67}, Shape{40000}}) {
                Tensor x = random_tensor(rng, s, dt, -6, 6);
                Tensor y = random_tensor(rng, s, dt, -3, 3);
                Tol t = tol_for(dt);
                Tensor out = Tensor::empty(s, dt, dev);
                gelu_forward(out, x.to(dev));
                EXPECT_TRUE(all_close(out, ref::gelu(ref::from_tensor(x)), t, "gelu " + s.str()));
                gelu_forward(out, x.to(dev), GeluKind::kErf);
                EXPECT_TRUE(
                    all_close(out, ref::gelu_erf(ref::from_tensor(x)), t, "gelu erf " + s.str()));
                silu_forward(out, x.to(dev));
                EXPECT_TRUE(all_close(out, ref::silu(ref::from_tensor(x)), t, "silu " + s.str()));
                swiglu_forward(out, x.to(dev), y.to(dev));
                EXPECT_TRUE(all_close(out, ref::swiglu(ref::from_tensor(x), ref::from_tensor(y)), t,
                                      "swiglu " + s.str()));
                add(out, x.to(dev), y.to(dev));
                auto sum = ref::from_tensor(x);
                auto yd = ref::from_tensor(y);
                for (int64_t i = 0; i < sum.numel(); ++i) sum[i] += yd[i];
                EXPECT_TRUE(all_close(out, sum, t, "add"));
                scale(out, x.to(dev), -0.5f);
                auto sc = ref::from_tensor(x);
                for (auto& v : sc.data) v *= -0.5;
                EXPECT_TRUE(all_close(out, sc, t, "scale"));
            }
        }
    }
}

TEST(Activation, ExtremeInputsSaturate) {
    float vals[] = {-1e4f, -100.f, -30.f, 0.f, 30.f, 100.f, 1e4f, 87.f, -87.f, 89.f, -89.f};
    Tensor x = Tensor::wrap(vals, {11}, DType::f32);
    for (core::Device dev : test_devices()) {
        Tensor out = Tensor::empty({11}, DType::f32, dev);
        gelu_forward(out, x.to(dev));
        EXPECT_TRUE(all_close(out, ref::gelu(ref::from_tensor(x)), {1e-6, 1e-6}, "gelu extremes"));
        gelu_forward(out, x.to(dev), GeluKind::kErf);
        EXPECT_TRUE(
            all_close(out, ref::gelu_erf(ref::from_tensor(x)), {1e-6, 1e-6}, "gelu erf extremes"));
        silu_forward(out, x.to(dev));
        EXPECT_TRUE(all_close(out, ref::silu(ref::from_tensor(x)), {1e-6, 1e-6}, "silu extremes"));
    }
    // NaN stays NaN (the saturation clamps must not swallow it).
    float nan_in[16];
    for (float& v : nan_in) v = std::nanf("");
    Tensor xn = Tensor::wrap(nan_in, {16}, DType::f32);
    for (core::Device dev : test_devices()) {
        Tensor out = Tensor::empty({16}, DType::f32, dev);
        gelu_forward(out, xn.to(dev));
        EXPECT_TRUE(std::isnan(out.to(core::Device::cpu()).item({3})));
        gelu_forward(out, xn.to(dev), GeluKind::kErf);
        EXPECT_TRUE(std::isnan(out.to(core::Device::cpu()).item({5})));
        silu_forward(out, xn.to(dev));
        EXPECT_TRUE(std::isnan(out.to(core::Device::cpu()).item({15})));
    }
}

TEST(Activation, BackwardsMatchFiniteDifferences) {
    Rng rng(41);
    const Shape s{3, 37};
    for (core::Device dev : test_devices()) {
        Tensor x = random_tensor(rng, s, DType::f32, -4, 4);
        Tensor u = random_tensor(rng, s, DType::f32, -2, 2);
        Tensor g = random_tensor(rng, s, DType::f32);
        auto X = ref::from_tensor(x), U = ref::from_tensor(u), G = ref::from_tensor(g);
        Tensor dx = Tensor::empty(s, DType::f32, dev), du = Tensor::empty(s, DType::f32, dev);

        gelu_backward(dx, g.to(dev), x.to(dev));
        EXPECT_TRUE(all_close(
            dx, numeric_grad([&](const ref::DTensor& v) { return dot(ref::gelu(v), G); }, X),
            {1e-5, 1e-4}, "gelu'"));
        gelu_backward(dx, g.to(dev), x.to(dev), GeluKind::kErf);
        EXPECT_TRUE(all_close(
            dx, numeric_grad([&](const ref::DTensor& v) { return dot(ref::gelu_erf(v), G); }, X),
            {1e-5, 1e-4}, "gelu erf'"));
        silu_backward(dx, g.to(dev), x.to(dev));
        EXPECT_TRUE(all_close(
            dx, numeric_grad([&](const ref::DTensor& v) { return dot(ref::silu(v), G); }, X),
            {1e-5, 1e-4}, "silu'"));
        swiglu_backward(dx, du, g.to(dev), x.to(dev), u.to(dev));
        EXPECT_TRUE(all_close(
            dx, numeric_grad([&](const ref::DTensor& v) { return dot(ref::swiglu(v, U), G); }, X),
            {1e-5, 1e-4}, "swiglu dgate"));
        EXPECT_TRUE(all_close(
            du, numeric_grad([&](const ref::DTensor& v) { return dot(ref::swiglu(X, v), G); }, U),
            {1e-5, 1e-4}, "swiglu dup"));
    }
}

TEST(Activation, SwigluOnFusedProjectionHalves) {
    // gate and up as column halves of one [N, 2H] tensor (strided rows), as a fused projection
    // produces them.
    Rng rng(43);
    const int64_t N = 6, H = 40;
    for (core::Device dev : test_devices()) {
        Tensor gu = random_tensor(rng, {N, 2 * H}, DType::bf16, -3, 3);
        Tensor gud = gu.to(dev);
        Tensor out = Tensor::empty({N, H}, DType::bf16, dev);
        swiglu_forward(out, gud.slice(1, 0, H), gud.slice(1, H, 2 * H));
        auto want = ref::swiglu(ref::from_tensor(gu.slice(1, 0, H)),
                                ref::from_tensor(gu.slice(1, H, 2 * H)));
        EXPECT_TRUE(all_close(out, want, tol_for(DType::bf16), "swiglu fused halves"));
    }
}

TEST(Softmax, ForwardAndBackward) {
    Rng rng(47);
    for (core::Device dev : test_devices()) {
        for (DType dt : {DType::f32, DType::bf16}) {
            for (Shape s : {Shape{1, 1}, Shape{5, 7}, Shape{2, 3, 129}, Shape{2, 50257}}) {
                Tensor x = random_tensor(rng, s, dt, -10, 10);
                Tensor out = Tensor::empty(s, dt, dev);
                softmax_forward(out, x.to(dev));
                EXPECT_TRUE(all_close(out, ref::softmax(ref::from_tensor(x)),
                                      {1e-6, dt == DType::f32 ? 1e-5 : 1e-2},
                                      "softmax " + s.str()));
            }
        }
        Tensor x = random_tensor(rng, {3, 11}, DType::f32, -3, 3),
               g = random_tensor(rng, {3, 11}, DType::f32);
        Tensor out = Tensor::empty({3, 11}, DType::f32, dev),
               dx = Tensor::empty({3, 11}, DType::f32, dev);
        softmax_forward(out, x.to(dev));
        softmax_backward(dx, g.to(dev), out);
        auto G = ref::from_tensor(g);
        auto want = numeric_grad([&](const ref::DTensor& v) { return dot(ref::softmax(v), G); },
                                 ref::from_tensor(x));
        EXPECT_TRUE(all_close(dx, want, {1e-6, 1e-4}, "softmax'"));
    }
}

TEST(Softmax, HandlesHugeAndNegInfLogits) {
    float v[] = {1e30f, 1e30f, -INFINITY, 0.0f, -INFINITY, -INFINITY, -INFINITY, 5.0f};
    Tensor x = Tensor::wrap(v, {2, 4}, DType::f32);
    Tensor out = Tensor::empty({2, 4}, DType::f32);
    softmax_forward(out, x);
    EXPECT_FLOAT_EQ(out.item({0, 0}), 0.5f);
    EXPECT_FLOAT_EQ(out.item({0, 2}), 0.0f);
    EXPECT_FLOAT_EQ(out.item({1, 3}), 1.0f);
}

TEST(Activation, MismatchedShapesAreNamed) {
    Tensor a = Tensor::empty({3, 4}, DType::f32), b = Tensor::empty({4, 3}, DType::f32);
    try {
        add(a, a, b);
        FAIL();
    } catch (const ShapeError& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("add"), std::string::npos);
        EXPECT_NE(m.find("'b'"), std::string::npos) << m;
    }
}

}  // namespace
}  // namespace zs::ops
