// Top-k router: selection, weights and probs against the reference; backward (through the chosen
// weights and an auxiliary-loss gradient on probs) against finite differences.
#include "ops/moe.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace zs::ops {
namespace {

using namespace zs::test;
namespace ref = ops::reference;

TEST(Router, ForwardMatchesReference) {
    Rng rng(301);
    for (core::Device dev : test_devices()) {
        for (int k : {1, 2, 4}) {
            for (bool renorm : {true, false}) {
                const int64_t N = 37, E = 8;
                Tensor logits = random_tensor(rng, {N, E}, DType::f32, -3, 3);
                RouterOptions o{k, renorm};
                auto want = ref::topk_router(ref::from_tensor(logits), o);
                Tensor w = Tensor::empty({N, k}, DType::f32, dev),
                       p = Tensor::empty({N, E}, DType::f32, dev);
                Tensor idx = Tensor::empty({N, k}, DType::i32, dev);
                topk_router_forward(w, idx, p, logits.to(dev), o);
                EXPECT_EQ(ref::int_values(idx), want.indices);
                EXPECT_TRUE(all_close(w, want.weights, {1e-6, 1e-5}, "weights"));
                EXPECT_TRUE(all_close(p, want.probs, {1e-6, 1e-5}, "probs"));
            }
        }
    }
}

TEST(Router, TiesGoToTheLowerExpert) {
    float v[] = {1, 3, 3, 0};
    Tensor w = Tensor::empty({1, 2}, DType::f32), p = Tensor::empty({1, 4}, DType::f32);
    Tensor idx = Tensor::empty({1, 2}, DType::i32);
    topk_router_forward(w, idx, p, Tensor::wrap(v, {1, 4}, DType::f32), {2, true});
    EXPECT_EQ(idx.item({0, 0}), 1);
    EXPECT_EQ(idx.item({0, 1}), 2);
    EXPECT_FLOAT_EQ(w.item({0, 0}), 0.5f);
}

TEST(Router, BackwardMatchesFiniteDifferences) {
    Rng rng(7);
    const int64_t N = 5, E = 6;
    for (core::Device dev : test_devices()) {
        for (int k : {1, 2}) {
            for (bool renorm : {true, false}) {
                RouterOptions o{k, renorm};
                Tensor logits = random_tensor(rng, {N, E}, DType::f32, -2, 2);
                Tensor gw = random_tensor(rng, {N, k}, DType::f32);
                Tensor gp = random_tensor(rng, {N, E}, DType::f32);
                auto X = ref::from_tensor(logits), GW = ref::from_tensor(gw),
                     GP = ref::from_tensor(gp);
                auto chosen = ref::topk_router(X, o).indices;
                auto want = numeric_grad(
                    [&](const ref::DTensor& x) {
                        return dot(ref::router_weights_fixed(x, chosen, o), GW) +
                               dot(ref::softmax(x), GP);
                    },
                    X);
                Tensor w = Tensor::empty({N, k}, DType::f32, dev),
                       p = Tensor::empty({N, E}, DType::f32, dev);
                Tensor idx = Tensor::empty({N, k}, DType::i32, dev);
                topk_router_forward(w, idx, p, logits.to(dev), o);
                Tensor dl = Tensor::empty({N, E}, DType::f32, dev);
                topk_router_backward(dl, gw.to(dev), gp.to(dev), p, idx, o);
                EXPECT_TRUE(
                    all_close(dl, want, {1e-5, 1e-4}, fmt::format("k={} renorm={}", k, renorm)));
            }
        }
    }
}

TEST(Router, KOutOfRangeIsNamed) {
    Tensor logits = Tensor::zeros({2, 4}, DType::f32);
    EXPECT_THROW(
        topk_router_forward(Tensor::empty({2, 5}, DType::f32), Tensor::empty({2, 5}, DType::i32),
                            Tensor::empty({2, 4}, DType::f32), logits, {5, true}),
        ShapeError);
}

}  // namespace
}  // namespace zs::ops
