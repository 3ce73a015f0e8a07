// bf16/f16 conversions: the vectorised span conversions equal the scalar ones bit for bit, the
// scalar ones equal an independent formulation (exact arithmetic on doubles), and special values
// (NaN, Inf, subnormals, ties) behave as IEEE round-to-nearest-even requires.
#include "core/half.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace zs::core {
namespace {

// Independent RNE to a format with `mant` mantissa bits and exponent range [emin, emax], computed
// on doubles (exact for every float input), returning the rounded value.
double round_to_format(double x, int mant, int emin, int emax) {
    if (std::isnan(x) || std::isinf(x) || x == 0) return x;
    double a = std::fabs(x);
    int e = std::ilogb(a);
    if (e < emin) e = emin;  // subnormal spacing
    double ulp = std::ldexp(1.0, e - mant);
    double q = a / ulp;
    double r = std::nearbyint(q);  // default rounding mode: to nearest, ties to even
    double v = r * ulp;
    double max = std::ldexp(2.0 - std::ldexp(1.0, -mant), emax);
    // Values at or beyond max + half an ulp(max) round to infinity.
    if (v > max) v = INFINITY;
    return std::copysign(v, x);
}

std::vector<float> special_values() {
    std::vector<float> v = {0.0f,     -0.0f,    1.0f,      -1.0f,       65504.0f,   65519.99f,
                            65520.0f, 1e-8f,    5.96e-8f,  2.98e-8f,    6.1e-5f,    1e38f,
                            3.4e38f,  INFINITY, -INFINITY, 1.00390625f, 1.01171875f};
    v.push_back(std::numeric_limits<float>::denorm_min());
    v.push_back(std::numeric_limits<float>::min());
    v.push_back(std::numeric_limits<float>::max());
    v.push_back(std::nanf(""));
    v.push_back(-std::nanf(""));
    v.push_back(f32_from_bits(0x7f800001u));  // signalling NaN: must stay NaN, not become Inf
    v.push_back(f32_from_bits(0xff800001u));
    v.push_back(f32_from_bits(0x7fffffffu));
    return v;
}

std::vector<float> test_values() {
    std::vector<float> v = special_values();
    std::mt19937 gen(301);
    for (int i = 0; i < 200000; ++i) v.push_back(f32_from_bits(static_cast<uint32_t>(gen())));
    // Exact halfway cases for bf16: low 16 bits = 0x8000.
    for (int i = 0; i < 1000; ++i)
        v.push_back(f32_from_bits((static_cast<uint32_t>(gen()) & 0xffff0000u) | 0x8000u));
    return v;
}

TEST(Half, Bf16ScalarMatchesExactRounding) {
    for (float f : test_values()) {
        float got = bf16_to_f32(f32_to_bf16(f));
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(got)) << f;
            EXPECT_EQ(std::signbit(got), std::signbit(f));
            continue;
        }
        double want = round_to_format(f, 7, -126, 127);
        EXPECT_EQ(static_cast<double>(got), want) << "input bits " << std::hex << f32_bits(f);
    }
}

TEST(Half, F16ScalarMatchesExactRounding) {
    for (float f : test_values()) {
        float got = f16_to_f32(f32_to_f16(f));
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(got)) << f;
            EXPECT_EQ(std::signbit(got), std::signbit(f));
            continue;
        }
        double want = round_to_format(f, 10, -14, 15);
        EXPECT_EQ(static_cast<double>(got), want) << "input bits " << std::hex << f32_bits(f);
    }
}

TEST(Half, F16ToF32IsExactForAllBitPatterns) {
    for (uint32_t b = 0; b < 65536; ++b) {
        f16 h{static_cast<uint16_t>(b)};
        float f = f16_to_f32(h);
        uint32_t exp = (b >> 10) & 0x1f, mant = b & 0x3ff;
        double want;
        if (exp == 31) {
            if (mant == 0) {
                want = (b & 0x8000) ? -INFINITY : INFINITY;
            } else {
                EXPECT_TRUE(std::isnan(f));
                continue;
            }
        } else if (exp == 0) {
            want = std::ldexp(static_cast<double>(mant), -24);
        } else {
            want = std::ldexp(1.0 + mant / 1024.0, static_cast<int>(exp) - 15);
        }
        if (b & 0x8000) want = -std::fabs(want);
        EXPECT_EQ(static_cast<double>(f), want) << b;
        if (exp != 31) {
            EXPECT_EQ(f32_to_f16(f).bits, b) << "round trip of " << b;
        }
    }
}

TEST(Half, VectorisedConversionsEqualScalar) {
    std::vector<float> v = test_values();
    for (size_t n : {v.size(), size_t{0}, size_t{1}, size_t{15}, size_t{17}, size_t{33}}) {
        std::vector<bf16> b(n);
        std::vector<f16> h(n);
        convert_f32_to_bf16(b.data(), v.data(), n);
        convert_f32_to_f16(h.data(), v.data(), n);
        for (size_t i = 0; i < n; ++i) {
            ASSERT_EQ(b[i].bits, f32_to_bf16(v[i]).bits) << i;
            ASSERT_EQ(h[i].bits, f32_to_f16_scalar(v[i]).bits) << i;
        }
        std::vector<float> fb(n), fh(n);
        convert_bf16_to_f32(fb.data(), b.data(), n);
        convert_f16_to_f32(fh.data(), h.data(), n);
        for (size_t i = 0; i < n; ++i) {
            ASSERT_EQ(f32_bits(fb[i]), f32_bits(bf16_to_f32(b[i]))) << i;
            ASSERT_EQ(f32_bits(fh[i]), f32_bits(f16_to_f32_scalar(h[i]))) << i;
        }
    }
}

TEST(Half, NanNeverBecomesInf) {
    for (uint32_t payload : {1u, 0x10u, 0x8000u, 0xffffu, 0x3fffffu, 0x7fffffu}) {
        for (uint32_t sign : {0u, 0x80000000u}) {
            float f = f32_from_bits(sign | 0x7f800000u | payload);
            EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f))));
            EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
        }
    }
}

TEST(Half, AnyToAnyConvert) {
    std::vector<float> src = {1.5f, -2.0f, 3.75f, 100.0f};
    std::vector<int32_t> i32(4);
    convert(i32.data(), DType::i32, src.data(), DType::f32, 4);
    EXPECT_EQ(i32, (std::vector<int32_t>{1, -2, 3, 100}));
    std::vector<int64_t> i64(4);
    convert(i64.data(), DType::i64, i32.data(), DType::i32, 4);
    EXPECT_EQ(i64, (std::vector<int64_t>{1, -2, 3, 100}));
    std::vector<bf16> b(4);
    convert(b.data(), DType::bf16, i64.data(), DType::i64, 4);
    EXPECT_EQ(bf16_to_f32(b[3]), 100.0f);
    std::vector<f16> h(4);
    convert(h.data(), DType::f16, b.data(), DType::bf16, 4);
    EXPECT_EQ(f16_to_f32(h[1]), -2.0f);
}

}  // namespace
}  // namespace zs::core
