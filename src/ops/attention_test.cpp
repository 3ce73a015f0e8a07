// Tiled attention against the naive double reference: causal and full, GQA/MQA, odd lengths
// (T = 1, 7, tile boundaries), head dims 64/80/128, decode against a longer cache (Tq < Tk), f32
// and bf16, q/k/v as views of a fused qkv projection. Backward against finite differences of the
// reference.
#include "ops/attention.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace zs::ops {
namespace {

using namespace zs::test;
namespace ref = ops::reference;

struct Case {
    int64_t b, tq, tk, nh, nkv, hs;
    bool causal;
    int64_t window = 0;  // sliding window (0: none)
};

TEST(Attention, ForwardMatchesReference) {
    Rng rng(301);
    std::vector<Case> cases = {
        {1, 1, 1, 1, 1, 64, true},
        {2, 7, 7, 4, 2, 64, true},
        {1, 33, 33, 2, 1, 80, true},
        {1, 65, 65, 2, 2, 128, true},
        {2, 1, 37, 4, 1, 64, true},
        {1, 5, 70, 3, 3, 32, true},
        {1, 31, 31, 2, 2, 16, false},
        {2, 17, 40, 6, 2, 80, false},
        {1, 129, 129, 1, 1, 8, true},
        {1, 3, 150, 9, 3, 64, true},  // a few queries (decode) over several key blocks, GQA
        {1, 4, 4, 9, 3, 64, true},    // a 4-token prompt: four queries of one head per tile
        {1, 4, 90, 9, 3, 64, true},
        // Decode with the query heads of a kv head as one tile (group x queries <= 4).
        {1, 1, 150, 9, 3, 80, true},
        {1, 2, 100, 4, 2, 64, true},
        {2, 2, 70, 4, 2, 16, false},
        // Decode, all kv heads in one pass over the cache (Tq = 1): MHA, groups of 2 and 4.
        {1, 1, 200, 4, 4, 64, true},
        {3, 1, 70, 4, 2, 32, true},
        {1, 1, 300, 8, 2, 64, true},
        // Decode over a long cache with few tasks: key ranges split across threads and merged.
        {1, 1, 300, 2, 1, 64, true},
        {1, 2, 400, 4, 2, 80, true},
        {1, 3, 260, 1, 1, 64, true},
        // Sliding windows: inside a tile, a whole key tile, one key, a prefill chunk against a
        // cache (Tq < Tk), decode (grouped and split across threads).
        {1, 100, 100, 2, 1, 64, true, 17},
        {1, 150, 150, 4, 2, 80, true, 64},
        {1, 5, 5, 1, 1, 8, true, 1},
        {1, 40, 200, 2, 2, 32, true, 33},
        {2, 1, 300, 9, 3, 64, true, 100},
        {1, 3, 260, 1, 1, 64, true, 70},
        {1, 2, 400, 4, 2, 80, true, 129},
    };
    for (core::Device dev : test_devices()) {
        for (DType dt : {DType::f32, DType::bf16}) {
            for (const Case& c : cases) {
                Tensor q = random_tensor(rng, {c.b, c.tq, c.nh, c.hs}, dt, -2, 2);
                Tensor k = random_tensor(rng, {c.b, c.tk, c.nkv, c.hs}, dt, -2, 2);
                Tensor v = random_tensor(rng, {c.b, c.tk, c.nkv, c.hs}, dt);
                AttentionOptions o{c.causal, 0.0f, c.window};
                auto want = ref::attention(ref::from_tensor(q), ref::from_tensor(k),
                                           ref::from_tensor(v), o);
                Tensor out = Tensor::empty({c.b, c.tq, c.nh, c.hs}, DType::f32, dev);
                Tensor lse = Tensor::empty({c.b, c.nh, c.tq}, DType::f32, dev);
                attention_forward(out, lse, q.to(dev), k.to(dev), v.to(dev), o);
                std::string what =
                    fmt::format("{} b{} tq{} tk{} nh{} nkv{} hs{} causal{} window{}", to_string(dt),
                                c.b, c.tq, c.tk, c.nh, c.nkv, c.hs, c.causal, c.window);
                EXPECT_TRUE(all_close(out, want.out, {2e-5, 1e-4}, what + " out"));
                EXPECT_TRUE(all_close(lse, want.lse, {2e-5, 1e-5}, what + " lse"));
            }
        }
    }
}

// A bf16 KV cache read by f32 queries (generate's --kv-cache-dtype bf16 under f32 compute, CPU):
// against the reference on the same bf16 values, decode and prefill shapes, as a head-major cache
// view; other devices refuse it, and backward keeps one dtype for q, k and v.
TEST(Attention, Bf16CacheUnderF32Queries) {
    Rng rng(303);
    const std::vector<Case> cases = {
        {1, 1, 600, 9, 3, 64, true}, {1, 4, 90, 9, 3, 64, true},       {2, 17, 40, 6, 2, 80, false},
        {1, 1, 300, 2, 1, 64, true}, {1, 40, 200, 2, 2, 32, true, 33},
    };
    for (core::Device dev : test_devices()) {
        for (const Case& c : cases) {
            Tensor q = random_tensor(rng, {c.b, c.tq, c.nh, c.hs}, DType::f32, -2, 2);
            // Head-major storage seen token-major, as models::ContiguousKvCache keeps it.
            Tensor k =
                random_tensor(rng, {c.b, c.nkv, c.tk, c.hs}, DType::bf16, -2, 2).transpose(1, 2);
            Tensor v = random_tensor(rng, {c.b, c.nkv, c.tk, c.hs}, DType::bf16).transpose(1, 2);
            AttentionOptions o{c.causal, 0.0f, c.window};
            Tensor out = Tensor::empty({c.b, c.tq, c.nh, c.hs}, DType::f32, dev);
            if (!dev.is_cpu()) {
                EXPECT_THROW(attention_forward(out, Tensor(), q.to(dev), k.to(dev), v.to(dev), o),
                             NotSupported);
                continue;
            }
            auto want =
                ref::attention(ref::from_tensor(q), ref::from_tensor(k), ref::from_tensor(v), o);
            attention_forward(out, Tensor(), q, k, v, o);
            EXPECT_TRUE(
                all_close(out, want.out, {2e-5, 1e-4},
                          fmt::format("tq{} tk{} nh{} nkv{} hs{}", c.tq, c.tk, c.nh, c.nkv, c.hs)));
        }
    }
    Tensor q = Tensor::zeros({1, 2, 2, 16}, DType::f32),
           k = Tensor::zeros({1, 2, 1, 16}, DType::bf16);
    Tensor g = Tensor::zeros({1, 2, 2, 16}, DType::f32), lse = Tensor::zeros({1, 2, 2}, DType::f32);
    Tensor dk = Tensor::zeros({1, 2, 1, 16}, DType::bf16);
    EXPECT_THROW(attention_backward(g, dk, dk, g, q, k, k, g, lse), ShapeError);
    // bf16 queries over an f32 cache: not a cache case.
    EXPECT_THROW(
        attention_forward(g, Tensor(), q.to(DType::bf16), k.to(DType::f32), k.to(DType::f32)),
        ShapeError);
}

TEST(Attention, FusedQkvViews) {
    Rng rng(7);
    const int64_t B = 2, T = 19, NH = 4, NKV = 2, HS = 16, W = (NH + 2 * NKV) * HS;
    Tensor qkv = random_tensor(rng, {B, T, W}, DType::f32);
    for (core::Device dev : test_devices()) {
        Tensor d = qkv.to(dev);
        auto view = [&](const Tensor& t, int64_t off, int64_t h) {
            return t.as_strided({B, T, h, HS}, {T * W, W, HS, 1}, off);
        };
        Tensor q = view(d, 0, NH), k = view(d, NH * HS, NKV), v = view(d, (NH + NKV) * HS, NKV);
        Tensor out = Tensor::empty({B, T, NH, HS}, DType::f32, dev);
        attention_forward(out, Tensor(), q, k, v);
        auto want = ref::attention(ref::from_tensor(view(qkv, 0, NH)),
                                   ref::from_tensor(view(qkv, NH * HS, NKV)),
                                   ref::from_tensor(view(qkv, (NH + NKV) * HS, NKV)), {});
        EXPECT_TRUE(all_close(out, want.out, {2e-5, 1e-4}));
    }
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
    Rng rng(11);
    std::vector<Case> cases = {{1, 5, 5, 2, 1, 8, true},      {2, 3, 6, 2, 2, 4, true},
                               {1, 4, 4, 3, 3, 5, false},     {1, 70, 70, 2, 1, 4, true},
                               {1, 9, 9, 2, 1, 4, true, 3},   {2, 4, 10, 2, 2, 4, true, 5},
                               {1, 70, 70, 2, 1, 4, true, 20}};
    for (core::Device dev : test_devices()) {
        for (const Case& c : cases) {
            Tensor q = random_tensor(rng, {c.b, c.tq, c.nh, c.hs}, DType::f32);
            Tensor k = random_tensor(rng, {c.b, c.tk, c.nkv, c.hs}, DType::f32);
            Tensor v = random_tensor(rng, {c.b, c.tk, c.nkv, c.hs}, DType::f32);
            Tensor g = random_tensor(rng, {c.b, c.tq, c.nh, c.hs}, DType::f32);
            AttentionOptions o{c.causal, 0.0f, c.window};
            auto Q = ref::from_tensor(q), K = ref::from_tensor(k), V = ref::from_tensor(v),
                 G = ref::from_tensor(g);
            auto gq = numeric_grad(
                [&](const ref::DTensor& x) { return dot(ref::attention(x, K, V, o).out, G); }, Q);
            auto gk = numeric_grad(
                [&](const ref::DTensor& x) { return dot(ref::attention(Q, x, V, o).out, G); }, K);
            auto gv = numeric_grad(
                [&](const ref::DTensor& x) { return dot(ref::attention(Q, K, x, o).out, G); }, V);
            Tensor out = Tensor::empty(q.shape(), DType::f32, dev);
            Tensor lse = Tensor::empty({c.b, c.nh, c.tq}, DType::f32, dev);
            attention_forward(out, lse, q.to(dev), k.to(dev), v.to(dev), o);
            Tensor dq = Tensor::empty(q.shape(), DType::f32, dev);
            Tensor dk = Tensor::empty(k.shape(), DType::f32, dev);
            Tensor dv = Tensor::empty(v.shape(), DType::f32, dev);
            attention_backward(dq, dk, dv, g.to(dev), q.to(dev), k.to(dev), v.to(dev), out, lse, o);
            std::string what = fmt::format("b{} tq{} tk{} nh{} nkv{} hs{} window{}", c.b, c.tq,
                                           c.tk, c.nh, c.nkv, c.hs, c.window);
            EXPECT_TRUE(all_close(dq, gq, {1e-4, 1e-3}, what + " dq"));
            EXPECT_TRUE(all_close(dk, gk, {1e-4, 1e-3}, what + " dk"));
            EXPECT_TRUE(all_close(dv, gv, {1e-4, 1e-3}, what + " dv"));
        }
    }
}

TEST(Attention, BackwardLargerShapesAgainstAnalyticReference) {
    // Larger than finite differences can afford: compare to gradients computed analytically in
    // double from the reference's probabilities (dV = P^T dO, dP = dO V^T, dS = P(dP - D)).
    Rng rng(13);
    const int64_t B = 1, T = 97, NH = 4, NKV = 2, HS = 80;
    for (DType dt : {DType::f32, DType::bf16}) {
        Tensor q = random_tensor(rng, {B, T, NH, HS}, dt),
               k = random_tensor(rng, {B, T, NKV, HS}, dt);
        Tensor v = random_tensor(rng, {B, T, NKV, HS}, dt),
               g = random_tensor(rng, {B, T, NH, HS}, dt);
        auto Q = ref::from_tensor(q), K = ref::from_tensor(k), V = ref::from_tensor(v),
             G = ref::from_tensor(g);
        double scale = 1.0 / std::sqrt(static_cast<double>(HS));
        ref::DTensor dq(q.shape()), dk(k.shape()), dv(v.shape());
        for (int64_t h = 0; h < NH; ++h) {
            int64_t kh = h / (NH / NKV);
            for (int64_t i = 0; i < T; ++i) {
                std::vector<double> p(static_cast<size_t>(i + 1)), dp(static_cast<size_t>(i + 1));
                double mx = -1e300, sum = 0, D = 0;
                for (int64_t j = 0; j <= i; ++j) {
                    double s = 0;
                    for (int64_t d = 0; d < HS; ++d)
                        s += Q[(i * NH + h) * HS + d] * K[(j * NKV + kh) * HS + d];
                    p[j] = s * scale;
                    mx = std::max(mx, p[j]);
                }
                for (auto& x : p) sum += (x = std::exp(x - mx));
                for (auto& x : p) x /= sum;
                for (int64_t j = 0; j <= i; ++j) {
                    double s = 0;
                    for (int64_t d = 0; d < HS; ++d)
                        s += G[(i * NH + h) * HS + d] * V[(j * NKV + kh) * HS + d];
                    dp[j] = s;
                    D += p[j] * s;
                }
                for (int64_t j = 0; j <= i; ++j) {
                    double ds = p[j] * (dp[j] - D);
                    for (int64_t d = 0; d < HS; ++d) {
                        dq[(i * NH + h) * HS + d] += scale * ds * K[(j * NKV + kh) * HS + d];
                        dk[(j * NKV + kh) * HS + d] += scale * ds * Q[(i * NH + h) * HS + d];
                        dv[(j * NKV + kh) * HS + d] += p[j] * G[(i * NH + h) * HS + d];
                    }
                }
            }
        }
        Tensor out = Tensor::empty(q.shape(), dt), lse = Tensor::empty({B, NH, T}, DType::f32);
        attention_forward(out, lse, q, k, v);
        Tensor gq = Tensor::empty(q.shape(), dt), gk = Tensor::empty(k.shape(), dt),
               gv = Tensor::empty(v.shape(), dt);
        attention_backward(gq, gk, gv, g, q, k, v, out, lse);
        Tol t = dt == DType::f32 ? Tol{1e-4, 1e-3} : Tol{5e-2, 5e-2};
        EXPECT_TRUE(all_close(gq, dq, t, std::string(to_string(dt)) + " dq"));
        EXPECT_TRUE(all_close(gk, dk, t, std::string(to_string(dt)) + " dk"));
        EXPECT_TRUE(all_close(gv, dv, t, std::string(to_string(dt)) + " dv"));
    }
}

// Ring attention's merge: attention over the keys cut into disjoint blocks, each attended alone
// and merged by log-sum-exp in turn into an accumulator starting at out = 0, lse = -inf, equals
// the reference over all keys; the accumulator may be a column view; a part row with lse = -inf
// (no visible key) leaves its row alone.
TEST(Attention, MergeOfKeyBlocksMatchesTheReferenceOverAllKeys) {
    Rng rng(17);
    const int64_t B = 2, Tq = 9, Tk = 23, NH = 4, NKV = 2, HS = 16;
    const std::vector<int64_t> cuts = {0, 5, 6, 17, 23};
    Tensor q = random_tensor(rng, {B, Tq, NH, HS}, DType::f32, -2, 2);
    Tensor k = random_tensor(rng, {B, Tk, NKV, HS}, DType::f32, -2, 2);
    Tensor v = random_tensor(rng, {B, Tk, NKV, HS}, DType::f32);
    const AttentionOptions full{false, 0.0f, 0};
    auto want = ref::attention(ref::from_tensor(q), ref::from_tensor(k), ref::from_tensor(v), full);
    Tensor wide = Tensor::zeros({B, Tq, NH, 2 * HS}, DType::f32);
    Tensor out = wide.slice(3, HS, 2 * HS);
    Tensor lse = Tensor::empty({B, NH, Tq}, DType::f32);
    lse.fill(-INFINITY);
    Tensor part = Tensor::empty({B, Tq, NH, HS}, DType::f32);
    Tensor part_lse = Tensor::empty({B, NH, Tq}, DType::f32);
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
        attention_forward(part, part_lse, q, k.slice(1, cuts[i], cuts[i + 1]),
                          v.slice(1, cuts[i], cuts[i + 1]), full);
        attention_merge(out, lse, part, part_lse);
    }
    EXPECT_TRUE(all_close(out, want.out, {1e-5, 1e-5}, "merged out"));
    EXPECT_TRUE(all_close(lse, want.lse, {1e-5, 1e-5}, "merged lse"));

    Tensor before = out.contiguous();
    part_lse.fill(-INFINITY);
    attention_merge(out, lse, random_tensor(rng, {B, Tq, NH, HS}, DType::f32), part_lse);
    EXPECT_TRUE(all_close(out, ref::from_tensor(before), {0, 0}, "a part that saw no key"));
}

TEST(Attention, BadHeadCountsAreNamed) {
    Tensor q = Tensor::empty({1, 4, 3, 8}, DType::f32), k = Tensor::empty({1, 4, 2, 8}, DType::f32);
    Tensor out = Tensor::empty({1, 4, 3, 8}, DType::f32);
    try {
        attention_forward(out, Tensor(), q, k, k);
        FAIL();
    } catch (const ShapeError& e) {
        EXPECT_NE(std::string(e.what()).find("multiple of kv heads"), std::string::npos)
            << e.what();
    }
    EXPECT_THROW(attention_forward(out, Tensor(), q, Tensor::empty({1, 4, 3, 4}, DType::f32),
                                   Tensor::empty({1, 4, 3, 4}, DType::f32)),
                 ShapeError);
}

}  // namespace
}  // namespace zs::ops
