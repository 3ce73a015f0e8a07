// Fused cross-entropy: losses and dlogits against the double reference (which is itself checked
// against finite differences of the loss), ignore_index, vocab 50257, in-place dlogits, errors.
#include "ops/loss.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace zs::ops {
namespace {

using namespace zs::test;
namespace ref = ops::reference;

TEST(CrossEntropy, MatchesReference) {
    Rng rng(301);
    for (core::Device dev : test_devices()) {
        for (DType dt : {DType::f32, DType::bf16}) {
            for (int64_t V : {int64_t{1}, int64_t{7}, int64_t{50257}}) {
                const int64_t N = 9;
                Tensor logits = random_tensor(rng, {N, V}, dt, -8, 8);
                Tensor targets = random_ints(rng, {N}, DType::i64, 0, V - 1);
                targets.data<int64_t>()[3] = -100;
                CrossEntropyOptions o{.ignore_index = -100, .grad_scale = 0.125f};
                auto want =
                    ref::cross_entropy(ref::from_tensor(logits), ref::int_values(targets), o);
                Tensor losses = Tensor::empty({N}, DType::f32, dev);
                Tensor dl = Tensor::empty({N, V}, DType::f32, dev);
                int64_t count = cross_entropy(losses, dl, logits.to(dev), targets.to(dev), o);
                EXPECT_EQ(count, want.count);
                std::string what = fmt::format("{} V={}", to_string(dt), V);
                EXPECT_TRUE(all_close(losses, want.losses, {1e-5, 1e-5}, what + " loss"));
                EXPECT_TRUE(all_close(dl, want.dlogits, {1e-7, 1e-4}, what + " dlogits"));
                // In place: dlogits overwrite the logits.
                Tensor inplace = logits.to(dev).clone();
                cross_entropy(losses, inplace, inplace, targets.to(dev), o);
                EXPECT_TRUE(all_close(inplace, want.dlogits, {dt == DType::f32 ? 1e-7 : 1e-3, 1e-2},
                                      what + " in place"));
            }
        }
    }
}

TEST(CrossEntropy, ReferenceGradientIsTheLossDerivative) {
    Rng rng(5);
    Tensor logits = random_tensor(rng, {3, 6}, DType::f32, -3, 3);
    std::vector<int64_t> t = {0, 5, 2};
    auto L = ref::from_tensor(logits);
    auto want = numeric_grad(
        [&](const ref::DTensor& x) {
            auto r = ref::cross_entropy(x, t, {});
            double s = 0;
            for (double v : r.losses.data) s += v;
            return s;
        },
        L);
    Tensor losses = Tensor::empty({3}, DType::f32), dl = Tensor::empty({3, 6}, DType::f32);
    cross_entropy(losses, dl, logits, Tensor::wrap(t.data(), {3}, DType::i64));
    EXPECT_TRUE(all_close(dl, want, {1e-6, 1e-4}));
}

TEST(CrossEntropy, ExtremeLogitsStayFinite) {
    float v[] = {1e4f, -1e4f, 0.0f, -1e4f, 1e4f, 1e4f};
    int32_t t[] = {1, 2};
    Tensor losses = Tensor::empty({2}, DType::f32);
    cross_entropy(losses, Tensor(), Tensor::wrap(v, {2, 3}, DType::f32),
                  Tensor::wrap(t, {2}, DType::i32));
    EXPECT_FLOAT_EQ(losses.item({0}), 2e4f);
    EXPECT_NEAR(losses.item({1}), std::log(2.0), 1e-6);
}

TEST(CrossEntropy, BadTargetIsNamed) {
    Tensor logits = Tensor::zeros({2, 5}, DType::f32);
    int64_t t[] = {4, 5};
    Tensor losses = Tensor::empty({2}, DType::f32);
    try {
        cross_entropy(losses, Tensor(), logits, Tensor::wrap(t, {2}, DType::i64));
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("target 5 at position 1"), std::string::npos)
            << e.what();
    }
}

}  // namespace
}  // namespace zs::ops
