// Optimizers against naive double-precision restatements of the PyTorch formulas (AdamW, Adam
// with L2, SGD with momentum/Nesterov, Lion, Adagrad) and of DeepSpeed's FusedLamb over 10
// steps; compute copies equal rounding the master; a LAMB tensor cut into shards equals the
// whole; reductions against naive sums.
#include "optim/optimizer.h"

#include <algorithm>
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
            case Kind::lamb:  // per tensor, not per element: ref_lamb_step
                ADD_FAILURE() << "use ref_lamb_step for Lamb";
                return;
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

// One FusedLamb step on one whole tensor, in double, restated from DeepSpeed's
// csrc/lamb/fused_lamb_cuda_kernel.cu (not from optimizer.cpp): moments from the scaled
// gradient; u = m / (sqrt(v) + eps) + wd w on the raw moments (eps_inside_sqrt: sqrt(v + eps));
// lamb_coeff = clamp(||w|| / ||u||) unless a norm is 0, then 1; w -= step_size * coeff * u with
// step_size = lr sqrt(1 - b2^t) / (1 - b1^t). Returns the unclamped ||w|| / ||u|| (0 when a norm
// is 0) so the test can see which branch ran.
double ref_lamb_step(const Options& o, Ref& r, const std::vector<float>& g, double lr, int64_t t,
                     double gs, bool decay) {
    const double wd = decay ? o.weight_decay : 0.0;
    const size_t n = r.p.size();
    std::vector<double> u(n);
    double w2 = 0, u2 = 0;
    for (size_t i = 0; i < n; ++i) {
        const double gi = g[i] * gs;
        r.m[i] = o.beta1 * r.m[i] + (1 - o.beta1) * gi;
        r.v[i] = o.beta2 * r.v[i] + (1 - o.beta2) * gi * gi;
        const double den =
            o.eps_inside_sqrt ? std::sqrt(r.v[i] + o.eps) : std::sqrt(r.v[i]) + o.eps;
        u[i] = r.m[i] / den + wd * r.p[i];
        w2 += r.p[i] * r.p[i];
        u2 += u[i] * u[i];
    }
    const double raw = (w2 > 0 && u2 > 0) ? std::sqrt(w2) / std::sqrt(u2) : 0.0;
    const double coeff = raw == 0.0 ? 1.0 : std::clamp<double>(raw, o.min_coeff, o.max_coeff);
    const double step_size = o.bias_correction
                                 ? lr * std::sqrt(1 - std::pow(o.beta2, static_cast<double>(t))) /
                                       (1 - std::pow(o.beta1, static_cast<double>(t)))
                                 : lr;
    for (size_t i = 0; i < n; ++i) r.p[i] -= step_size * coeff * u[i];
    return raw;
}

struct LambTensor {
    int64_t n;
    float scale;  // initial weights: scale * N(0, 1) (0: all zero)
    bool decay;
    std::vector<float> p{}, m{}, v{}, g{};
    std::vector<core::bf16> cb{};
    Ref r{};
};

// Several tensors of different sizes stepped together (each its own trust ratio), 10 steps,
// against ref_lamb_step. The weight scales put tensors on each branch of the coefficient: in
// range (scale 1: ||u|| ~ sqrt(n) (1 - b1) / sqrt(1 - b2) at step 1), clamped to max_coeff
// (scale 1e3), clamped to min_coeff (scale 1e-5), and ||w|| = 0 (all-zero weights: coefficient 1,
// where a clamp would give min_coeff).
[[gnu::noinline]] void check_lamb(const Options& o) {
    std::vector<LambTensor> ts = {{40001, 1.0f, true},  {17, 1e3f, false}, {1000, 1e-5f, true},
                                  {100003, 0.0f, true}, {1, 1.0f, false},  {33, 1.0f, true}};
    std::mt19937 gen(301);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (LambTensor& t : ts) {
        const auto sz = static_cast<size_t>(t.n);
        t.p.resize(sz);
        for (float& x : t.p) x = t.scale * nd(gen);
        t.m.assign(sz, 0.0f);
        t.v.assign(sz, 0.0f);
        t.g.resize(sz);
        t.cb.resize(sz);
        t.r = {std::vector<double>(t.p.begin(), t.p.end()), std::vector<double>(sz, 0),
               std::vector<double>(sz, 0)};
    }
    Optimizer opt(o);
    bool hit_max = false, hit_min = false, hit_zero = false, hit_inside = false;
    for (int64_t step = 1; step <= 10; ++step) {
        std::vector<Segment> segs;
        for (LambTensor& t : ts) {
            for (float& x : t.g) x = nd(gen);
            segs.push_back({t.p.data(), t.g.data(), t.m.data(), t.v.data(), t.cb.data(),
                            core::DType::bf16, t.n, t.decay});
        }
        const float lr = 1e-2f, gs = 0.5f;
        opt.step(segs, lr, step, gs);
        for (LambTensor& t : ts) {
            const double raw = ref_lamb_step(o, t.r, t.g, lr, step, gs, t.decay);
            hit_zero |= raw == 0.0;
            hit_max |= raw > o.max_coeff;
            hit_min |= raw > 0.0 && raw < o.min_coeff;
            hit_inside |= raw >= o.min_coeff && raw <= o.max_coeff;
        }
    }
    EXPECT_TRUE(hit_max && hit_min && hit_zero && hit_inside)
        << "the tensors should exercise every branch of the trust ratio";
    for (const LambTensor& t : ts) {
        double rms = 0;
        for (double x : t.r.p) rms += x * x;
        rms = std::sqrt(rms / static_cast<double>(t.n));
        double worst = 0;
        for (size_t i = 0; i < t.p.size(); ++i) {
            worst = std::max(worst, std::fabs(t.p[i] - t.r.p[i]) / (std::fabs(t.r.p[i]) + rms));
            ASSERT_EQ(t.cb[i].bits, core::f32_to_bf16(t.p[i]).bits) << "compute copy " << i;
        }
        EXPECT_LT(worst, 2e-6) << "n=" << t.n << " scale=" << t.scale << " wd=" << o.weight_decay
                               << " bias_correction=" << o.bias_correction
                               << " eps_inside_sqrt=" << o.eps_inside_sqrt;
    }
}

TEST(Optimizer, LambMatchesFusedLambFormulas) {
    Options o{Kind::lamb, 0.9f, 0.999f, 1e-8f, 0.01f};
    check_lamb(o);  // FusedLamb's defaults but weight decay
    o.weight_decay = 0.0f;
    check_lamb(o);
    o = {Kind::lamb, 0.8f, 0.99f, 1e-6f, 0.1f};
    o.bias_correction = false;
    o.eps_inside_sqrt = true;
    o.max_coeff = 5.0f;
    o.min_coeff = 0.05f;
    check_lamb(o);
}

// A tensor cut into two runs (a ZeRO shard boundary) gives the result of the whole tensor: with
// one step() call over runs sharing `param`, and with the two phases run separately per "rank"
// and the norm sums added between them. The halves differ in scale, so per-run trust ratios
// (the bug this guards against) would give a visibly different answer, which is checked too.
TEST(Optimizer, LambSplitTensorEqualsWhole) {
    constexpr int64_t kN = 40001, kCut = 12345;
    const auto sz = static_cast<size_t>(kN);
    std::mt19937 gen(11);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> p0(sz);
    for (size_t i = 0; i < sz; ++i) p0[i] = (i < static_cast<size_t>(kCut) ? 1.0f : 3.0f) * nd(gen);
    std::vector<std::vector<float>> grads(5, std::vector<float>(sz));
    for (auto& g : grads) {
        for (float& x : g) x = nd(gen);
    }
    Options o{Kind::lamb, 0.9f, 0.999f, 1e-8f, 0.05f};
    Optimizer opt(o);
    enum class Mode { whole, runs, phases, per_run };
    auto run = [&](Mode mode) {
        std::vector<float> p = p0, m(sz, 0.0f), v(sz, 0.0f), c(sz, 0.0f);
        for (int64_t t = 1; t <= 5; ++t) {
            const float* g = grads[static_cast<size_t>(t - 1)].data();
            auto part = [&](int64_t b, int64_t e, int param) {
                return Segment{p.data() + b,     g + b, m.data() + b, v.data() + b, c.data() + b,
                               core::DType::f32, e - b, true,         param};
            };
            if (mode == Mode::whole) {
                Segment s = part(0, kN, -1);
                opt.step(std::span<const Segment>(&s, 1), 1e-2f, t, 1.0f);
            } else if (mode == Mode::runs || mode == Mode::per_run) {
                const int id = mode == Mode::runs ? 0 : -1;
                std::vector<Segment> segs = {part(0, kCut, id), part(kCut, kN, id)};
                opt.step(segs, 1e-2f, t, 1.0f);
            } else {  // two ranks, one run each; an all-reduce of the sums between the phases
                Segment a = part(0, kCut, 0), b = part(kCut, kN, 0);
                std::vector<double> sa(2, 0.0), sb(2, 0.0);
                opt.lamb_moments(std::span<const Segment>(&a, 1), 1.0f, sa);
                opt.lamb_moments(std::span<const Segment>(&b, 1), 1.0f, sb);
                std::vector<double> sum = {sa[0] + sb[0], sa[1] + sb[1]};
                opt.lamb_apply(std::span<const Segment>(&a, 1), 1e-2f, t, sum);
                opt.lamb_apply(std::span<const Segment>(&b, 1), 1e-2f, t, sum);
            }
        }
        EXPECT_EQ(p, c) << "f32 compute copy";
        return p;
    };
    auto max_rel = [](const std::vector<float>& a, const std::vector<float>& b) {
        double worst = 0;
        for (size_t i = 0; i < a.size(); ++i)
            worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]) /
                                        (std::fabs(static_cast<double>(b[i])) + 1.0));
        return worst;
    };
    const std::vector<float> whole = run(Mode::whole);
    EXPECT_LT(max_rel(run(Mode::runs), whole), 1e-7);
    EXPECT_LT(max_rel(run(Mode::phases), whole), 1e-7);
    EXPECT_GT(max_rel(run(Mode::per_run), whole), 1e-4) << "per-run ratios should differ";
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

// adam_step() (issue 13): the scalars a device kernel gets (ops/adam.h's formula, restated here in
// f32 as the CUDA kernel computes it) reproduce step() on the CPU, for AdamW and Adam, with and
// without decay and bias correction. The CUDA kernel itself is checked in cuda_test.
TEST(Optimizer, AdamStepScalarsReproduceStep) {
    std::mt19937 gen(11);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (Kind kind : {Kind::adamw, Kind::adam}) {
        for (bool decay : {true, false}) {
            Options o;
            o.kind = kind;
            o.weight_decay = 0.1f;
            o.bias_correction = decay;
            const Optimizer opt(o);
            const size_t n = 257;
            std::vector<float> p(n), g(n), m(n, 0.0f), v(n, 0.0f);
            for (size_t i = 0; i < n; ++i) p[i] = nd(gen);
            std::vector<float> kp = p, km = m, kv = v;
            for (int64_t t = 1; t <= 3; ++t) {
                for (size_t i = 0; i < n; ++i) g[i] = nd(gen);
                Segment seg{p.data(), g.data(), m.data(), v.data()};
                seg.n = static_cast<int64_t>(n);
                seg.decay = decay;
                opt.step({&seg, 1}, 1e-2f, t, 0.5f);
                const ops::AdamStep a = opt.adam_step(1e-2f, t, 0.5f, decay);
                const float decay_mul = a.decoupled ? 1.0f - a.lr * a.weight_decay : 1.0f;
                const float l2 = a.decoupled ? 0.0f : a.weight_decay;
                for (size_t i = 0; i < n; ++i) {
                    const float gv = std::fma(l2, kp[i], g[i] * a.grad_scale);
                    const float pv = kp[i] * decay_mul;
                    km[i] = std::fma(a.beta1, km[i], (1.0f - a.beta1) * gv);
                    kv[i] = std::fma(a.beta2, kv[i], (1.0f - a.beta2) * (gv * gv));
                    const float den = std::fma(std::sqrt(kv[i]), a.inv_sqrt_bc2, a.eps);
                    kp[i] = pv - a.step_size * (km[i] / den);
                }
            }
            for (size_t i = 0; i < n; ++i) {
                EXPECT_NEAR(kp[i], p[i], 1e-6 + 1e-6 * std::fabs(p[i])) << to_string(kind) << i;
                EXPECT_NEAR(km[i], m[i], 1e-6 + 1e-6 * std::fabs(m[i])) << to_string(kind) << i;
                EXPECT_NEAR(kv[i], v[i], 1e-6 + 1e-6 * std::fabs(v[i])) << to_string(kind) << i;
            }
        }
    }
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
