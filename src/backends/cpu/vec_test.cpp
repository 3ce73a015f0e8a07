// The CPU vector layer against scalar references: bf16 stores (single and paired) round exactly
// like core::f32_to_bf16 including NaN payloads, ties and tails; pairs round-trip; vexp is within
// its stated error of the double exp and exact at the edges.
#include "backends/cpu/vec.h"

#include <bit>
#include <cmath>
#include <cstdint>
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

}  // namespace
}  // namespace zs::backends::cpu
