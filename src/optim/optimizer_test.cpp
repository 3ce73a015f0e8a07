// Optimizers against naive double-precision restatements of the PyTorch formulas (AdamW, Adam
// with L2, SGD with momentum/Nesterov, Lion) over 10 steps; compute copies equal rounding the
// master; reductions against naive sums.
#include "optim/optimizer.h"

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "core/half.h"

namespace zs::optim {
namespace {

struct Ref {
    std::vector<double> p, m, v;
};

// One reference step (double), per torch.optim.
void ref_step(const Options& o, Ref& r, const std::vector<float>& g, double lr, int64_t t,
              double gs, bool decay) {
    double wd = decay ? o.weight_decay : 0.0;
    for (size_t i = 0; i < r.p.size(); ++i) {
        double gi = g[i] * gs;
        switch (o.kind) {
            case Kind::adamw:
            case Kind::adam: {
                if (o.kind == Kind::adamw) r.p[i] *= 1 - lr * wd;
                if (o.kind == Kind::adam) gi += wd * r.p[i];
                r.m[i] = o.beta1 * r.m[i] + (1 - o.beta1) * gi;
                r.v[i] = o.beta2 * r.v[i] + (1 - o.beta2) * gi * gi;
                double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
                r.p[i] -= lr / bc1 * r.m[i] / (std::sqrt(r.v[i]) / std::sqrt(bc2) + o.eps);
                break;
            }
            case Kind::sgd: {
                gi += wd * r.p[i];
                if (o.momentum != 0) {
                    r.m[i] = t == 1 ? gi : o.momentum * r.m[i] + gi;
                    gi = o.nesterov ? gi + o.momentum * r.m[i] : r.m[i];
                }
                r.p[i] -= lr * gi;
                break;
            }
            case Kind::adagrad: {  // torch.optim.Adagrad
                gi += wd * r.p[i];
                r.m[i] += gi * gi;
                const double clr = lr / (1 + (t - 1) * o.lr_decay);
                r.p[i] -= clr * gi / (std::sqrt(r.m[i]) + o.eps);
                break;
            }
            case Kind::lion: {
                double c = o.beta1 * r.m[i] + (1 - o.beta1) * gi;
                r.p[i] = r.p[i] * (1 - lr * wd) - lr * ((c > 0) - (c < 0));
                r.m[i] = o.beta2 * r.m[i] + (1 - o.beta2) * gi;
                break;
            }
        }
    }
}

// noinline: GCC 12 reports a false -Wfree-nonheap-object on a constant-propagated clone.
[[gnu::noinline]] void check_kind(const Options& o, int64_t n, bool decay) {
    std::mt19937 gen(301);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const auto sz = static_cast<size_t>(n);
    std::vector<float> p(sz);
    std::vector<float> m(sz, 0.0f);
    std::vector<float> v(sz, 0.0f);
    std::vector<float> g(sz);
    std::vector<core::bf16> cb(sz);
    for (float& x : p) x = nd(gen);
    Ref r{std::vector<double>(p.begin(), p.end()), std::vector<double>(p.size(), 0),
          std::vector<double>(p.size(), 0)};
    Optimizer opt(o);
    for (int64_t t = 1; t <= 10; ++t) {
        for (float& x : g) x = nd(gen);
        const float lr = 1e-2f, gs = 0.5f;
        Segment s{p.data(), g.data(), m.data(), v.data(), cb.data(), core::DType::bf16, n, decay};
        opt.step(std::span<const Segment>(&s, 1), lr, t, gs);
        ref_step(o, r, g, lr, t, gs, decay);
    }
    double worst = 0;
    for (size_t i = 0; i < p.size(); ++i) {
        worst = std::max(worst, std::fabs(p[i] - r.p[i]) / (std::fabs(r.p[i]) + 1e-2));
        ASSERT_EQ(cb[i].bits, core::f32_to_bf16(p[i]).bits) << "compute copy " << i;
    }
    // Relative to |p| + 0.01 so parameters crossing zero do not inflate the ratio. AdamW and
    // Adam hold 2e-6 (f32 rounding of the update); SGD/Lion accumulate plain lr * g sums.
    const bool adam = o.kind == Kind::adamw || o.kind == Kind::adam;
    EXPECT_LT(worst, adam ? 2e-6 : 1e-5) << to_string(o.kind) << " n=" << n;
}

TEST(Optimizer, MatchesPyTorchFormulas) {
    check_kind({Kind::adamw, 0.9f, 0.95f, 1e-8f, 0.1f}, 1000003, true);  // a large, odd partition
    for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{17}, int64_t{40001}}) {
        for (bool decay : {true, false}) {
            check_kind({Kind::adamw, 0.9f, 0.95f, 1e-8f, 0.1f}, n, decay);
            check_kind({Kind::adam, 0.9f, 0.999f, 1e-8f, 0.01f}, n, decay);
            check_kind({Kind::sgd, 0.9f, 0.999f, 1e-8f, 0.01f, true, 0.9f, false}, n, decay);
            check_kind({Kind::sgd, 0.9f, 0.999f, 1e-8f, 0.0f, true, 0.9f, true}, n, decay);
            check_kind({Kind::lion, 0.9f, 0.99f, 1e-8f, 0.1f}, n, decay);
            Options ada{Kind::adagrad, 0.9f, 0.999f, 1e-10f, 0.01f};
            ada.lr_decay = 0.05f;
            check_kind(ada, n, decay);
        }
    }
}

TEST(Optimizer, ManySegmentsOneStepIsDeterministic) {
    std::mt19937 gen(5);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> g(50000);
    for (float& x : g) x = nd(gen);
    auto run = [&]() {
        std::vector<float> p(50000, 0.5f), m(50000, 0), v(50000, 0);
        std::vector<Segment> segs;
        for (int64_t off = 0; off < 50000; off += 977) {
            int64_t len = std::min<int64_t>(977, 50000 - off);
            segs.push_back({p.data() + off, g.data() + off, m.data() + off, v.data() + off, nullptr,
                            core::DType::f32, len, (off / 977) % 2 == 0});
        }
        Optimizer opt({Kind::adamw, 0.9f, 0.999f, 1e-8f, 0.1f});
        for (int t = 1; t <= 3; ++t) opt.step(segs, 1e-3f, t, 1.0f);
        return p;
    };
    EXPECT_EQ(run(), run());
}

TEST(Reductions, SumSquaresAndFinite) {
    std::vector<float> a(100003), b(17);
    std::mt19937 gen(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    double want = 0;
    for (float& x : a) {
        x = nd(gen);
        want += static_cast<double>(x) * x;
    }
    for (float& x : b) {
        x = nd(gen);
        want += static_cast<double>(x) * x;
    }
    std::vector<Segment> segs = {
        {nullptr, a.data(), nullptr, nullptr, nullptr, core::DType::f32, 100003, true},
        {nullptr, b.data(), nullptr, nullptr, nullptr, core::DType::f32, 17, true}};
    EXPECT_NEAR(sum_squares(segs), want, 1e-9 * want);
    EXPECT_TRUE(all_finite(segs));
    a[77777] = INFINITY;
    EXPECT_FALSE(all_finite(segs));
    a[77777] = 0;
    b[16] = NAN;
    EXPECT_FALSE(all_finite(segs));
}

}  // namespace
}  // namespace zs::optim
