// The CPU vector layer (whichever path the build takes: AVX-512, AVX2 or portable) against scalar
// references: bf16 and f16 stores (single and paired) round exactly like core::f32_to_bf16 and
// core::f32_to_f16 including NaN payloads, ties and tails; masked tails read and write only n
// lanes; pairs round-trip; sums follow the fixed addition trees; vexp is within its stated error
// of the double exp, exact at the edges and rounds subnormal results once.
#include "backends/cpu/vec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace zs::backends::cpu {
namespace {

std::vector<float> tricky_floats(size_t n) {
    std::vector<uint32_t> bits = {0x00000000, 0x80000000, 0x3f808000, 0x3f818000, 0x3f807fff,
                                  0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000, 0x7f800001,
                                  0x7fffffff, 0xffc00000, 0x7fc00001, 0x00000001, 0x007fffff,
                                  0x00008000, 0x00018000, 0x7f7f8000, 0x3effffff};
    std::mt19937 rng(7);
    while (bits.size() < n) bits.push_back(static_cast<uint32_t>(rng()));
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = std::bit_cast<float>(bits[i]);
    return out;
}

TEST(Vec, Bf16StoresRoundLikeTheScalarConversion) {
    std::vector<float> x = tricky_floats(64 * 40);
    for (int n : {32, 31, 17, 16, 15, 1}) {
        for (size_t base = 0; base + 32 <= x.size(); base += 32) {
            std::vector<bf16> single(33, bf16{0x1234}), paired(33, bf16{0x1234});
            vstore(single.data(), vload(x.data() + base, std::min(n, kLanes)), std::min(n, kLanes));
            if (n > kLanes)
                vstore(single.data() + kLanes, vload(x.data() + base + kLanes), n - kLanes);
            VecF a, b;
            vload2(x.data() + base, a, b, n);
            // vload2 of f32 is two consecutive vectors; a bf16 pair has its own lane order, so
            // pair-store what a bf16 pair load of the same values gives.
            std::vector<bf16> src(32);
            for (int i = 0; i < 32; ++i) src[i] = core::f32_to_bf16(x[base + i]);
            VecF c, d;
            vload2(src.data(), c, d, n);
            vstore2(paired.data(), c, d, n);
            for (int i = 0; i < 33; ++i) {
                uint16_t want = i < n ? core::f32_to_bf16(x[base + i]).bits : 0x1234;
                ASSERT_EQ(single[i].bits, want) << "vstore lane " << i << " n=" << n << " of "
                                                << std::hex << std::bit_cast<uint32_t>(x[base + i]);
                ASSERT_EQ(paired[i].bits, want) << "vstore2 lane " << i << " n=" << n;
            }
            (void)a;
            (void)b;
        }
    }
}

TEST(Vec, PairsRoundTripAndRoundOnStore) {
    std::vector<float> x = tricky_floats(96);
    for (int n : {32, 20, 3}) {
        // f32: exact round trip, nothing written past n.
        std::vector<float> out(33, -7.0f);
        VecF a, b;
        vload2(x.data(), a, b, n);
        vstore2(out.data(), a, b, n);
        for (int i = 0; i < 33; ++i) {
            uint32_t got = std::bit_cast<uint32_t>(out[i]);
            uint32_t want = std::bit_cast<uint32_t>(i < n ? x[i] : -7.0f);
            ASSERT_EQ(got, want) << "f32 lane " << i << " n=" << n;
        }
        // bf16 computed in f32: the store rounds the f32 result of each element.
        std::vector<bf16> in(32), res(32, bf16{0});
        for (int i = 0; i < 32; ++i)
            in[i] = core::f32_to_bf16(static_cast<float>(i) * 1.37f - 9.0f);
        vload2(in.data(), a, b, n);
        vstore2(res.data(), a * vset(1.01f), b * vset(1.01f), n);
        for (int i = 0; i < n; ++i) {
            float want = core::bf16_to_f32(in[i]) * 1.01f;
            ASSERT_EQ(res[i].bits, core::f32_to_bf16(want).bits) << "bf16 lane " << i;
        }
        // NaNs made from bf16 operands (a loaded NaN with a payload, inf * 0) stay NaNs, and
        // infinities stay infinities, through the pair store's rounding.
        std::vector<bf16> sp(32), sres(32);
        const uint16_t specials[] = {0x7fc1, 0xffbf, 0x7f81, 0x7f80, 0xff80, 0x7f7f};
        for (int i = 0; i < 32; ++i) sp[i] = bf16{specials[i % 6]};
        vload2(sp.data(), a, b, n);
        vstore2(sres.data(), a * vset(1.01f), b * vset(1.01f), n);
        for (int i = 0; i < n; ++i) {
            float want = core::bf16_to_f32(sp[i]) * 1.01f;
            float got = core::bf16_to_f32(sres[i]);
            if (std::isnan(want)) {
                ASSERT_TRUE(std::isnan(got)) << "NaN lane " << i;
            } else {
                ASSERT_EQ(sres[i].bits, core::f32_to_bf16(want).bits) << "special lane " << i;
            }
        }
        vstore2(sres.data(), a * vzero(), b * vzero(), n);
        for (int i = 0; i < n; ++i) {
            bool want_nan = (sp[i].bits & 0x7f80) == 0x7f80;  // NaN or inf times 0
            ASSERT_EQ(std::isnan(core::bf16_to_f32(sres[i])), want_nan) << "x*0 lane " << i;
        }
        // Fill: lanes holding elements >= n become the fill value, in either lane order.
        vload2(in.data(), a, b, 32);
        vfill2<bf16>(a, b, n, 0.0f);
        std::vector<bf16> filled(32);
        vstore2(filled.data(), a, b);
        for (int i = 0; i < 32; ++i) {
            ASSERT_EQ(filled[i].bits, i < n ? in[i].bits : uint16_t{0}) << "fill lane " << i;
        }
    }
}

// An exponential's kernel `f` against the double `ref`: max relative error `tol` over [lo, hi]
// (skipping results past f32's range), then 16 lanes at once whose first 8 are the edges 0,
// -inf, inf, NaN, an underflow, an overflow, -1e30, 1e30 (got: 1, 0, inf, NaN, 0, inf, 0, inf)
// and whose last 8 are ordinary arguments within `tol`.
template <class F, class Ref>
void check_exp_kernel(const char* name, F f, Ref ref, float lo, float hi, int steps, double tol,
                      float underflow, float overflow, const float (&tail)[8]) {
    double worst = 0.0;
    for (int i = 0; i <= steps; ++i) {
        float x = lo + (hi - lo) * static_cast<float>(i) / static_cast<float>(steps);
        float got[kLanes];
        vstore(got, f(vset(x)));
        double want = ref(static_cast<double>(x));
        if (want > 3.0e38) continue;
        worst = std::max(worst, std::abs(got[0] / want - 1.0));
    }
    EXPECT_LT(worst, tol) << "max relative error of " << name << " over [" << lo << ", " << hi
                          << "]";
    const float inf = std::numeric_limits<float>::infinity();
    float in[kLanes] = {0.0f, -inf, inf, std::nanf(""), underflow, overflow, -1e30f, 1e30f};
    for (int i = 0; i < 8; ++i) in[8 + i] = tail[i];
    float got[kLanes];
    vstore(got, f(vload(in)));
    EXPECT_EQ(got[0], 1.0f) << name;
    EXPECT_EQ(got[1], 0.0f) << name;
    EXPECT_EQ(got[2], inf) << name;
    EXPECT_TRUE(std::isnan(got[3])) << name;
    EXPECT_EQ(got[4], 0.0f) << name;
    EXPECT_EQ(got[5], inf) << name;
    EXPECT_EQ(got[6], 0.0f) << name;
    EXPECT_EQ(got[7], inf) << name;
    for (int i = 8; i < kLanes; ++i) {
        EXPECT_NEAR(got[i] / ref(static_cast<double>(in[i])), 1.0, tol)
            << name << "(" << in[i] << ")";
    }
}

TEST(Vec, ExpIsAccurateAndExactAtTheEdges) {
    check_exp_kernel(
        "vexp", [](VecF x) { return vexp(x); }, [](double x) { return std::exp(x); }, -87.0f, 88.0f,
        200000, 5e-7, -104.5f, 89.5f, {1.0f, -1.0f, 0.5f, -0.5f, 10.0f, -10.0f, 80.0f, -80.0f});
}

TEST(Vec, FourSumsAtOnce) {
    float in[4][kLanes];
    double want[4] = {0, 0, 0, 0};
    for (int v = 0; v < 4; ++v) {
        for (int i = 0; i < kLanes; ++i) {
            in[v][i] =
                static_cast<float>((v + 1) * 100 + i * (v + 3)) * (i % 3 == 0 ? -1.0f : 1.0f);
            want[v] += in[v][i];
        }
    }
    float got[4];
    vsum4(got, vload(in[0]), vload(in[1]), vload(in[2]), vload(in[3]));
    for (int v = 0; v < 4; ++v) EXPECT_EQ(got[v], static_cast<float>(want[v])) << "sum " << v;
}

TEST(Vec, Exp2IsAccurateWithoutClamps) {
    check_exp_kernel(
        "vexp2", [](VecF t) { return vexp2(t); }, [](double t) { return std::exp2(t); }, -125.0f,
        127.0f, 100000, 3e-7, -151.0f, 128.5f,
        {2.5f, -2.5f, 0.5f, -0.5f, 10.0f, -10.0f, 1.0f, -149.0f});
}

// Loads of n < kLanes elements read only those (the rest are 0); stores write only those.
TEST(Vec, MaskedTailsLoadZerosAndStoreOnlyN) {
    std::vector<float> x = tricky_floats(kLanes);
    for (float& v : x) v = std::isnan(v) ? 1.5f : v;  // compared with ==
    for (int n = 0; n <= kLanes; ++n) {
        // Each source ends exactly at n, so a read past it would be a different value.
        std::vector<float> src(x.begin(), x.begin() + n);
        src.push_back(-3.0f);
        std::vector<bf16> sb(static_cast<size_t>(n) + 1, bf16{0x4040});
        std::vector<core::f16> sh(static_cast<size_t>(n) + 1, core::f16{0x4200});
        for (int i = 0; i < n; ++i) {
            sb[static_cast<size_t>(i)] = core::f32_to_bf16(x[static_cast<size_t>(i)]);
            sh[static_cast<size_t>(i)] = core::f32_to_f16(x[static_cast<size_t>(i)]);
        }
        float got[kLanes], gotb[kLanes], goth[kLanes];
        vstore(got, vload(src.data(), n));
        vstore(gotb, vload(sb.data(), n));
        vstore(goth, vload(sh.data(), n));
        for (int i = 0; i < kLanes; ++i) {
            const auto u = static_cast<size_t>(i);
            ASSERT_EQ(got[i], i < n ? x[u] : 0.0f) << "f32 lane " << i << " n=" << n;
            ASSERT_EQ(gotb[i], i < n ? core::bf16_to_f32(sb[u]) : 0.0f) << "bf16 lane " << i;
            ASSERT_EQ(goth[i], i < n ? core::f16_to_f32(sh[u]) : 0.0f) << "f16 lane " << i;
        }
        std::vector<float> out(kLanes + 1, -7.0f);
        std::vector<bf16> outb(kLanes + 1, bf16{0x1234});
        std::vector<core::f16> outh(kLanes + 1, core::f16{0x1234});
        const VecF v = vload(x.data());
        vstore(out.data(), v, n);
        vstore(outb.data(), v, n);
        vstore(outh.data(), v, n);
        for (int i = 0; i <= kLanes; ++i) {
            const auto u = static_cast<size_t>(i);
            ASSERT_EQ(out[u], i < n ? x[u] : -7.0f) << "f32 store lane " << i << " n=" << n;
            ASSERT_EQ(outb[u].bits, i < n ? core::f32_to_bf16(x[u]).bits : 0x1234) << i;
            ASSERT_EQ(outh[u].bits, i < n ? core::f32_to_f16(x[u]).bits : 0x1234) << i;
        }
        // Fill: lanes >= n take the fill value, f32 pairs likewise over 2 * kLanes.
        float filled[kLanes];
        vstore(filled, vmask_fill(v, n, -1.0f));
        for (int i = 0; i < kLanes; ++i) {
            ASSERT_EQ(filled[i], i < n ? x[static_cast<size_t>(i)] : -1.0f) << "fill " << i;
        }
        VecF a = v, b = v;
        vfill2<float>(a, b, n + kLanes / 2, -1.0f);
        float fa[kLanes], fb[kLanes];
        vstore(fa, a);
        vstore(fb, b);
        for (int i = 0; i < kLanes; ++i) {
            ASSERT_EQ(fa[i], i < n + kLanes / 2 ? x[static_cast<size_t>(i)] : -1.0f) << i;
            ASSERT_EQ(fb[i], i + kLanes < n + kLanes / 2 ? x[static_cast<size_t>(i)] : -1.0f) << i;
        }
    }
}

// f16 stores round like core::f32_to_f16 (nearest even, subnormals, overflow, NaN payloads), and
// every f16 bit pattern loads as core::f16_to_f32 gives it.
TEST(Vec, F16RoundTripsLikeTheScalarConversion) {
    std::vector<float> x = tricky_floats(16 * 64);
    const uint32_t extra[] = {0x477fefff, 0x477ff000, 0x33000000, 0x33000001, 0x387fc000,
                              0x38800000, 0x3f801000, 0x3f803000, 0xc77ff000, 0x33800000};
    for (size_t i = 0; i < std::size(extra); ++i) x[32 + i] = std::bit_cast<float>(extra[i]);
    for (size_t base = 0; base < x.size(); base += kLanes) {
        core::f16 got[kLanes];
        vstore(got, vload(x.data() + base));
        for (int i = 0; i < kLanes; ++i) {
            const float f = x[base + static_cast<size_t>(i)];
            ASSERT_EQ(got[i].bits, core::f32_to_f16(f).bits)
                << "f16 store of " << std::hex << std::bit_cast<uint32_t>(f);
        }
    }
    for (uint32_t h0 = 0; h0 < 65536; h0 += kLanes) {
        core::f16 in[kLanes];
        for (int i = 0; i < kLanes; ++i) in[i] = core::f16{static_cast<uint16_t>(h0 + i)};
        float got[kLanes];
        vstore(got, vload(in));
        for (int i = 0; i < kLanes; ++i) {
            const float want = core::f16_to_f32(in[i]);
            if (std::isnan(want)) {
                ASSERT_TRUE(std::isnan(got[i])) << "f16 " << std::hex << in[i].bits;
            } else {
                ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want))
                    << "f16 " << std::hex << in[i].bits;
            }
        }
    }
}

// The reductions use one fixed addition tree on every path (GCC's _mm512_reduce_add_ps for vsum,
// vsum4's shuffle tree), written out here in scalar code; values of mixed magnitude make any other
// order round differently.
TEST(Vec, SumsFollowTheFixedTrees) {
    std::mt19937 rng(301);
    std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
    std::uniform_int_distribution<int> expo(-12, 12);
    for (int trial = 0; trial < 2000; ++trial) {
        float in[4][kLanes];
        for (auto& row : in) {
            for (float& v : row) v = std::ldexp(mant(rng), expo(rng));
        }
        auto tree = [](const float* a) {
            float h[8], q[4];
            for (int i = 0; i < 8; ++i) h[i] = a[i] + a[i + 8];
            for (int i = 0; i < 4; ++i) q[i] = h[i] + h[i + 4];
            return (q[0] + q[2]) + (q[1] + q[3]);
        };
        auto tree4 = [](const float* a) {
            float p[4];
            for (int l = 0; l < 4; ++l) {
                p[l] = (a[4 * l] + a[4 * l + 2]) + (a[4 * l + 1] + a[4 * l + 3]);
            }
            return (p[0] + p[2]) + (p[1] + p[3]);
        };
        float got4[4];
        vsum4(got4, vload(in[0]), vload(in[1]), vload(in[2]), vload(in[3]));
        for (int v = 0; v < 4; ++v) {
            ASSERT_EQ(vsum(vload(in[v])), tree(in[v])) << "vsum, trial " << trial;
            ASSERT_EQ(got4[v], tree4(in[v])) << "vsum4 " << v << ", trial " << trial;
            ASSERT_EQ(vhmax(vload(in[v])), *std::max_element(in[v], in[v] + kLanes));
        }
    }
}

// Results in f32's subnormal range round once, as a correctly scaled product does: within one
// subnormal step of the double exp.
TEST(Vec, ExpRoundsSubnormalResultsOnce) {
    const double step = std::ldexp(1.0, -149);
    for (int i = 0; i <= 20000; ++i) {
        const float x = -87.5f - 16.4f * static_cast<float>(i) / 20000.0f;
        float got[kLanes];
        vstore(got, vexp(vset(x)));
        ASSERT_LE(std::abs(static_cast<double>(got[0]) - std::exp(static_cast<double>(x))),
                  step * 0.5 + std::exp(static_cast<double>(x)) * 2e-7)
            << "vexp(" << x << ")";
        const float t = -126.0f - 24.9f * static_cast<float>(i) / 20000.0f;
        vstore(got, vexp2(vset(t)));
        ASSERT_LE(std::abs(static_cast<double>(got[0]) - std::exp2(static_cast<double>(t))),
                  step * 0.5 + std::exp2(static_cast<double>(t)) * 2e-7)
            << "vexp2(" << t << ")";
    }
}

// The reciprocal is within 3e-7 relative of the division, over many binades of both signs.
TEST(Vec, ReciprocalIsNearTheDivision) {
    for (int i = 0; i < 100000; ++i) {
        const float x = std::ldexp(1.0f + static_cast<float>(i % 1000) / 1000.0f, i % 200 - 100) *
                        (i % 2 ? -1.0f : 1.0f);
        float got[kLanes];
        vstore(got, vrcp(vset(x)));
        ASSERT_NEAR(static_cast<double>(got[0]) * x, 1.0, 3e-7) << "vrcp(" << x << ")";
        vstore(got, vrcp_bf16(vset(x)));
        ASSERT_NEAR(static_cast<double>(got[0]) * x, 1.0, 1.0 / 16384) << "vrcp_bf16(" << x << ")";
    }
}

}  // namespace
}  // namespace zs::backends::cpu
