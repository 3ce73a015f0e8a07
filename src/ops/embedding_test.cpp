// Embedding gather / scatter-add against the reference (repeated ids accumulate), and the
// out-of-vocabulary id error.
#include "ops/embedding.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace zs::ops {
namespace {

using namespace zs::test;
namespace ref = ops::reference;

TEST(Embedding, ForwardAndAccumulate) {
    Rng rng(301);
    for (core::Device dev : test_devices()) {
        for (DType dt : {DType::f32, DType::bf16}) {
            for (DType it : {DType::i32, DType::i64}) {
                const int64_t V = 50257, C = 24;
                Tensor table = random_tensor(rng, {V, C}, dt);
                Tensor ids = random_ints(rng, {3, 7}, it, 0, V - 1);
                auto want =
                    ref::embedding(ref::int_values(ids), ids.shape(), ref::from_tensor(table));
                Tensor out = Tensor::empty({3, 7, C}, DType::f32, dev);
                embedding_forward(out, ids.to(dev), table.to(dev));
                EXPECT_TRUE(all_close(out, want, {0, 0}, "gather is exact"));
                embedding_forward(out, ids.to(dev), table.to(dev), true);
                for (auto& v : want.data) v *= 2;
                EXPECT_TRUE(all_close(out, want, {0, 0}, "accumulate"));
            }
        }
    }
}

TEST(Embedding, BackwardScatterAddsRepeatedIds) {
    Rng rng(3);
    const int64_t V = 11, C = 70, N = 300;
    for (core::Device dev : test_devices()) {
        Tensor ids = random_ints(rng, {N}, DType::i64, 0, V - 1);
        Tensor g = random_tensor(rng, {N, C}, DType::f32);
        auto I = ref::int_values(ids);
        auto G = ref::from_tensor(g);
        ref::DTensor want(Shape{V, C}, 1.0);  // starts at 1: backward accumulates
        for (int64_t i = 0; i < N; ++i) {
            for (int64_t c = 0; c < C; ++c) want[I[static_cast<size_t>(i)] * C + c] += G[i * C + c];
        }
        Tensor dt = Tensor::empty({V, C}, DType::f32, dev);
        dt.fill(1.0);
        embedding_backward(dt, g.to(dev), ids.to(dev));
        EXPECT_TRUE(all_close(dt, want, {1e-5, 1e-5}));
    }
}

TEST(Embedding, IdOutsideVocabularyIsNamed) {
    Tensor table = Tensor::zeros({10, 4}, DType::f32);
    int32_t ids[] = {1, 10, 2};
    Tensor out = Tensor::empty({3, 4}, DType::f32);
    try {
        embedding_forward(out, Tensor::wrap(ids, {3}, DType::i32), table);
        FAIL();
    } catch (const Error& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("token id 10 at position 1"), std::string::npos) << m;
    }
    int32_t neg[] = {-1, 0, 0};
    EXPECT_THROW(embedding_forward(out, Tensor::wrap(neg, {3}, DType::i32), table), Error);
}

}  // namespace
}  // namespace zs::ops
