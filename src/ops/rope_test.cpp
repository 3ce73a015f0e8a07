// RoPE against the double reference for both pair layouts, partial rotary and large thetas;
// the backward (inverse rotation) against finite differences; bad positions are named errors.
#include "ops/rope.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace zs::ops {
namespace {

using namespace zs::test;
namespace ref = ops::reference;

TEST(Rope, ForwardMatchesReference) {
    Rng rng(301);
    for (core::Device dev : test_devices()) {
        for (RopePairs pairs : {RopePairs::half, RopePairs::interleaved}) {
            for (auto [hs, rot, theta] : {std::tuple{64, 64, 10000.0},
                                          {80, 32, 10000.0},
                                          {128, 128, 500000.0},
                                          {8, 4, 100.0}}) {
                for (DType dt : {DType::f32, DType::bf16}) {
                    const int64_t N = 9, H = 3;
                    RopeTable table(4096, rot, theta, pairs);
                    Tensor x = random_tensor(rng, {N, H, hs}, dt);
                    Tensor pos = random_ints(rng, {N}, DType::i64, 0, 4095);
                    auto want = ref::rope(ref::from_tensor(x), ref::int_values(pos), table.inv_freq,
                                          pairs, false);
                    Tensor xd = x.to(dev);
                    rope_forward(xd, pos.to(dev), table);
                    EXPECT_TRUE(
                        all_close(xd, want, {dt == DType::f32 ? 2e-6 : 1e-2, tol_for(dt).rtol},
                                  fmt::format("rope hs {} rot {} theta {}", hs, rot, theta)));
                }
            }
        }
    }
}

TEST(Rope, BackwardIsTheTransposeRotation) {
    Rng rng(5);
    const int64_t N = 4, H = 2, HS = 16;
    for (core::Device dev : test_devices()) {
        for (RopePairs pairs : {RopePairs::half, RopePairs::interleaved}) {
            RopeTable table(64, 12, 10000.0, pairs);
            Tensor x = random_tensor(rng, {N, H, HS}, DType::f32);
            Tensor g = random_tensor(rng, {N, H, HS}, DType::f32);
            Tensor pos = random_ints(rng, {N}, DType::i32, 0, 63);
            auto G = ref::from_tensor(g);
            auto P = ref::int_values(pos);
            auto want = numeric_grad(
                [&](const ref::DTensor& v) {
                    return dot(ref::rope(v, P, table.inv_freq, pairs, false), G);
                },
                ref::from_tensor(x));
            Tensor dx = g.to(dev).clone();
            rope_backward(dx, pos.to(dev), table);
            EXPECT_TRUE(all_close(dx, want, {1e-5, 1e-4}, "rope backward"));
        }
    }
}

TEST(Rope, StridedHeadsInsideFusedQkv) {
    // q as a view into a fused [N, (NH + 2 NKV) * HS] projection.
    Rng rng(9);
    const int64_t N = 5, NH = 4, NKV = 2, HS = 16;
    RopeTable table(32, HS, 10000.0);
    Tensor qkv = random_tensor(rng, {N, (NH + 2 * NKV) * HS}, DType::f32);
    Tensor pos = random_ints(rng, {N}, DType::i64, 0, 31);
    Tensor qv = qkv.slice(1, 0, NH * HS).as_strided({N, NH, HS}, {qkv.stride(0), HS, 1});
    auto want = ref::rope(ref::from_tensor(qv), ref::int_values(pos), table.inv_freq,
                          RopePairs::half, false);
    auto untouched = ref::from_tensor(qkv.slice(1, NH * HS, (NH + 2 * NKV) * HS));
    rope_forward(qv, pos, table);
    EXPECT_TRUE(all_close(qv, want, {2e-6, 1e-5}));
    EXPECT_TRUE(
        all_close(qkv.slice(1, NH * HS, (NH + 2 * NKV) * HS), untouched, {0, 0}, "k, v untouched"));
}

TEST(Rope, PositionOutOfRangeIsAnError) {
    RopeTable table(8, 4, 10000.0);
    Tensor x = Tensor::zeros({2, 1, 4}, DType::f32);
    int64_t p[] = {3, 8};
    try {
        rope_forward(x, Tensor::wrap(p, {2}, DType::i64), table);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("position 8"), std::string::npos) << e.what();
    }
    EXPECT_THROW(RopeTable(8, 3, 10000.0), ShapeError);
}

}  // namespace
}  // namespace zs::ops
