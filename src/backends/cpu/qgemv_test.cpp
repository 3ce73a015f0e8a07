// The quantized linear (ops::quant_linear_forward, backends/cpu/qgemv.*) against a double-precision
// dequantize-then-multiply reference, for every block type and both dot-product kernels (the
// scalar fallback and AVX-512 VNNI, chosen by argument), decode (M <= 16) and prefill shapes.
//
// Tolerances. The decode path quantizes each 32-element activation block to int8 with step d_c,
// so |a_k - d_c q_k| <= d_c / 2 and |out - exact| <= sum_k |w_k| d_c / 2 (+ f32 rounding): checked
// against the exact product with that bound, and against the product with the Q8-rounded
// activations (what the integer arithmetic computes) to 1e-5 of sum |w a|. Prefill by dequantized
// tiles dequantizes the weights exactly and runs the f32 GEMM: 1e-5 of sum |w a|; by the int8
// route (QuantPrefill::int8, the default on AVX2-only CPUs) it carries the decode path's bound.
#include "backends/cpu/qgemv.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/gemv.h"
#include "backends/cpu/qdot.h"
#include "core/half.h"
#include "core/quant.h"
#include "ops/activation.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "tests/test_util.h"

namespace zs::backends::cpu {
namespace {

using core::DType;
using core::QTensor;
using core::QType;
using core::Tensor;

void put_f16(uint8_t* p, float v) {
    const core::f16 h = core::f32_to_f16(v);
    std::memcpy(p, &h.bits, 2);
}

// Random blocks with finite scales (random bytes elsewhere: every code pattern appears).
QTensor random_weights(test::Rng& rng, QType t, int64_t n, int64_t k) {
    QTensor w = QTensor::empty(t, n, k);
    uint8_t* p = w.mutable_data();
    for (size_t i = 0; i < w.nbytes(); ++i) p[i] = static_cast<uint8_t>(rng.integer(0, 255));
    const core::QTypeTraits& tr = core::qtype_traits(t);
    for (int64_t b = 0; b < n * k / tr.block_size; ++b) {
        uint8_t* x = p + b * tr.block_bytes;
        const auto d = static_cast<float>(rng.uniform(0.002, 0.02));
        const auto m = static_cast<float>(rng.uniform(-0.1, 0.1));
        switch (t) {
            case QType::q8_0:
            case QType::q4_0:
            case QType::q5_0:
                put_f16(x, d);
                break;
            case QType::q4_1:
            case QType::q5_1:
                put_f16(x, d);
                put_f16(x + 2, m);
                break;
            case QType::q4_k:
            case QType::q5_k:
                put_f16(x, d * 0.1f);
                put_f16(x + 2, std::fabs(m) * 0.1f);
                break;
            case QType::q6_k:
                put_f16(x + 208, d * 0.1f);
                break;
            case QType::q8_k:
                std::memcpy(x, &d, 4);
                break;
        }
    }
    return w;
}

std::vector<float> dequantized(const QTensor& w) {
    std::vector<float> v(static_cast<size_t>(w.rows() * w.cols()));
    for (int64_t r = 0; r < w.rows(); ++r) {
        core::dequantize(w.type(), w.row(r), v.data() + r * w.cols(), w.cols());
    }
    return v;
}

// One activation row x[0, K) quantized by an activation quantizer (qgemv.h / qdot.h signature):
// codes, scales and half-sums per 32 values.
struct Q8Row {
    std::vector<int8_t> q;
    std::vector<float> d;
    std::vector<int32_t> s0, s1;
};
template <class Fn>
Q8Row quantized(Fn quantize, const float* x, int64_t K) {
    Q8Row r{std::vector<int8_t>(static_cast<size_t>(K)), std::vector<float>(K / 32),
            std::vector<int32_t>(K / 32), std::vector<int32_t>(K / 32)};
    quantize(x, K, r.q.data(), r.d.data(), r.s0.data(), r.s1.data());
    return r;
}

constexpr QType kAllTypes[] = {QType::q8_0, QType::q4_0, QType::q4_1, QType::q5_0, QType::q5_1,
                               QType::q4_k, QType::q5_k, QType::q6_k, QType::q8_k};

std::vector<QuantKernel> kernels() {
    std::vector<QuantKernel> v{QuantKernel::scalar};
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni")) {
        v.push_back(QuantKernel::avx512_vnni);
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c")) {
        v.push_back(QuantKernel::avx2);
    }
    return v;
}

// The file layout and, for the types that have one, the interleaved16 repacking (core/quant.h),
// with N = 37 rows: two whole groups of 16 and a padded one.
std::vector<QTensor> layouts(const QTensor& w) {
    std::vector<QTensor> v{w};
    if (core::can_interleave(w.type())) v.push_back(core::interleave16(w));
    return v;
}

TEST(QuantGemv, InterleavedRoundTripsBitForBit) {
    test::Rng rng(300);
    for (QType t : kAllTypes) {
        if (!core::can_interleave(t)) continue;
        for (int64_t n : {1, 16, 37}) {
            const QTensor w = random_weights(rng, t, n, 512);
            const QTensor p = core::interleave16(w);
            EXPECT_EQ(p.layout(), core::QLayout::interleaved16);
            EXPECT_EQ(p.nbytes(),
                      static_cast<size_t>((n + 15) / 16 * core::interleaved_group_bytes(t, 512)));
            std::vector<uint8_t> row(static_cast<size_t>(w.row_bytes()));
            for (int64_t r = 0; r < n; ++r) {
                core::deinterleave_row(p, r, row.data());
                ASSERT_EQ(std::memcmp(row.data(), w.row(r), row.size()), 0)
                    << to_string(t) << " row " << r << " of " << n;
            }
        }
    }
    const QTensor w = core::interleave16(random_weights(rng, QType::q4_0, 40, 64));
    EXPECT_EQ(w.slice_rows(16, 40).rows(), 24);
    EXPECT_THROW((void)w.slice_rows(8, 16), ShapeError);
    EXPECT_THROW((void)core::interleave16(random_weights(rng, QType::q8_k, 4, 256)), NotSupported);
}

TEST(QuantGemv, EveryTypeAndKernelMatchesDequantizedReference) {
    test::Rng rng(301);
    const int64_t N = 37, K = 512;
    for (QType t : kAllTypes) {
        const QTensor w0 = random_weights(rng, t, N, K);
        const std::vector<float> wf = dequantized(w0);
        // 21, 18, 35: the int8 prefill's 4-row blocks with tails of 1, 2 and 3 rows.
        for (int64_t M : {1, 3, 16, 21, 18, 35}) {
            Tensor x = test::random_tensor(rng, {M, K}, DType::f32);
            Tensor bias = test::random_tensor(rng, {N}, DType::f32);
            Tensor init = test::random_tensor(rng, {M, N}, DType::f32);
            const float* X = x.data<float>();
            // The Q8 activations the kernels compute with, dequantized.
            std::vector<float> xq(static_cast<size_t>(M * K));
            std::vector<float> step(static_cast<size_t>(M * K));
            for (int64_t m = 0; m < M; ++m) {
                const Q8Row r = quantized(quantize_q8_act, X + m * K, K);
                for (int64_t k = 0; k < K; ++k) {
                    const float dc = r.d[static_cast<size_t>(k / 32)];
                    xq[static_cast<size_t>(m * K + k)] = dc * r.q[static_cast<size_t>(k)];
                    step[static_cast<size_t>(m * K + k)] = dc;
                }
            }
            for (const QTensor& w : layouts(w0)) {
                for (QuantKernel kern : kernels()) {
                    Tensor out = init.clone();
                    quant_gemv(out, x, w, 1.0f, bias, kern);
                    for (int64_t m = 0; m < M; ++m) {
                        for (int64_t n = 0; n < N; ++n) {
                            double exact = init.data<float>()[m * N + n] + bias.data<float>()[n];
                            double on_q8 = exact, mag = std::fabs(exact), bound = 0.0;
                            for (int64_t k = 0; k < K; ++k) {
                                const double wv = wf[static_cast<size_t>(n * K + k)];
                                const auto i = static_cast<size_t>(m * K + k);
                                exact += wv * X[m * K + k];
                                on_q8 += wv * xq[i];
                                mag += std::fabs(wv * X[m * K + k]);
                                bound += std::fabs(wv) * step[i] / 2;
                            }
                            const double got = out.data<float>()[m * N + n];
                            ASSERT_NEAR(got, on_q8, 1e-5 * mag + 1e-6)
                                << w.str() << " " << to_string(kern) << " M=" << M << " m=" << m
                                << " n=" << n;
                            ASSERT_NEAR(got, exact, bound * 1.001 + 1e-5 * mag + 1e-6)
                                << w.str() << " " << to_string(kern) << " M=" << M;
                        }
                    }
                }
            }
        }
    }
}

// bf16 activations and output through the op API: prefill (M > 16, dequantized tiles + GEMM)
// and decode against the same reference.
TEST(QuantGemv, OpApiPrefillAndBf16) {
    test::Rng rng(302);
    const int64_t N = 300, K = 256;
    for (QType t : {QType::q4_1, QType::q6_k, QType::q8_0, QType::q4_k, QType::q5_0, QType::q5_k}) {
        const QTensor w0 = random_weights(rng, t, N, K);
        const std::vector<float> wf = dequantized(w0);
        for (const QTensor& w : layouts(w0)) {
            // The route the op API takes here (the int8 one: Q8 activations).
            const bool q8_prefill = resolve_prefill(QuantPrefill::best, w) == QuantPrefill::int8;
            for (int64_t M : {2, 40}) {
                for (DType dt : {DType::f32, DType::bf16}) {
                    Tensor x = test::random_tensor(rng, {M, K}, dt);
                    Tensor out = Tensor::empty({M, N}, dt);
                    ops::quant_linear_forward(out, x, w);
                    const Tensor xf = x.to(DType::f32), of = out.to(DType::f32);
                    for (int64_t m = 0; m < M; ++m) {
                        for (int64_t n = 0; n < N; ++n) {
                            double exact = 0.0, mag = 0.0, wabs = 0.0;
                            for (int64_t k = 0; k < K; ++k) {
                                const double wv = wf[static_cast<size_t>(n * K + k)];
                                exact += wv * xf.data<float>()[m * K + k];
                                mag += std::fabs(wv * xf.data<float>()[m * K + k]);
                                wabs += std::fabs(wv);
                            }
                            // Q8 steps are at most max|x| / 127 (|x| <= 1); bf16 output and, for
                            // prefill, bf16-rounded weights add 2^-8 relative each.
                            double tol = 1e-5 * mag + 1e-6;
                            if (M <= kSkinnyMaxRows || q8_prefill) tol += wabs / 127.0 / 2;
                            if (dt == DType::bf16) tol += std::fabs(exact) / 128.0 + mag / 256.0;
                            ASSERT_NEAR(of.data<float>()[m * N + n], exact, tol)
                                << w.str() << " M=" << M << " " << core::to_string(dt);
                        }
                    }
                }
            }
        }
    }
}

// The decode MLP in one region (ops::quant_swiglu_forward) against the three ops it fuses
// (quant_linear_forward, swiglu_forward, quant_linear_forward): out, h and a equal bit for bit,
// for each type and layout, f32 and bf16 activations, decode row counts and a prefill one (the
// composition), with the residual accumulated (beta = 1) into an f32 out.
TEST(QuantGemv, FusedSwigluEqualsTheThreeOpsBitForBit) {
    test::Rng rng(303);
    const int64_t C = 96, F = 160;  // C, F multiples of 32 (and of 256 for the K-quants below)
    for (QType t : {QType::q8_0, QType::q4_0, QType::q4_1, QType::q5_0, QType::q4_k, QType::q5_k,
                    QType::q6_k}) {
        const bool kq = t == QType::q4_k || t == QType::q5_k || t == QType::q6_k;
        const int64_t c = kq ? 256 : C, f = kq ? 512 : F;
        const QTensor up0 = random_weights(rng, t, 2 * f, c), down0 = random_weights(rng, t, c, f);
        const std::vector<QTensor> ups = layouts(up0), downs = layouts(down0);
        for (size_t li = 0; li < ups.size(); ++li) {
            for (int64_t M : {1, 3, 24}) {
                for (DType dt : {DType::f32, DType::bf16}) {
                    Tensor x = test::random_tensor(rng, {M, c}, dt);
                    Tensor res0 = test::random_tensor(rng, {M, c}, DType::f32);
                    Tensor h = Tensor::empty({M, 2 * f}, dt), a = Tensor::empty({M, f}, dt);
                    Tensor want = res0.clone();
                    ops::quant_linear_forward(h, x, ups[li]);
                    ops::swiglu_forward(a, h.slice(1, 0, f), h.slice(1, f, 2 * f));
                    ops::quant_linear_forward(want, a, downs[li], {}, 1.0f);
                    Tensor got = res0.clone();
                    Tensor h2 = Tensor::empty({M, 2 * f}, dt), a2 = Tensor::empty({M, f}, dt);
                    ops::quant_swiglu_forward(got, x, ups[li], downs[li], h2, a2, 1.0f);
                    const std::string what =
                        ups[li].str() + " M=" + std::to_string(M) + " " + core::to_string(dt);
                    EXPECT_EQ(std::memcmp(got.data_ptr(), want.data_ptr(), got.nbytes()), 0)
                        << what;
                    EXPECT_EQ(std::memcmp(h2.data_ptr(), h.data_ptr(), h.nbytes()), 0) << what;
                    EXPECT_EQ(std::memcmp(a2.data_ptr(), a.data_ptr(), a.nbytes()), 0) << what;
                }
            }
        }
    }
    // Mismatched matrices are refused, naming them.
    const QTensor up = random_weights(rng, QType::q8_0, 2 * F, C);
    const QTensor down = random_weights(rng, QType::q8_0, C, F + 32);
    Tensor x = Tensor::empty({1, C}, DType::f32), out = Tensor::empty({1, C}, DType::f32);
    Tensor h = Tensor::empty({1, 2 * F}, DType::f32), a = Tensor::empty({1, F}, DType::f32);
    EXPECT_THROW(ops::quant_swiglu_forward(out, x, up, down, h, a), ShapeError);
}

// An RMSNorm folded into the decode products (ops::RmsNormFold) against rmsnorm_forward then the
// product: out, the normed rows (and the MLP's h and a) equal bit for bit, for 1 and 2 threads
// (each thread normalizes for itself), f32 and bf16 normed rows, f32 and bf16 norm weights, decode
// row counts and a prefill one (the composition); the MLP accumulates into its own raw input (the
// residual stream, as the model runs it). Bad norm arguments are refused by name.
TEST(QuantGemv, FoldedRmsNormEqualsNormThenProduct) {
    test::Rng rng(305);
    // Sizes at which the products split across threads (parallel_gemv: N * K >= 2^16).
    const int64_t C = 96, F = 352, N = 704;
    const int threads = omp_get_max_threads();
    for (QType t : {QType::q8_0, QType::q4_0, QType::q4_k}) {
        const bool kq = t == QType::q4_k;
        const int64_t c = kq ? 256 : C, f = kq ? 512 : F;
        const std::vector<QTensor> ws = layouts(random_weights(rng, t, N, c));
        const std::vector<QTensor> ups = layouts(random_weights(rng, t, 2 * f, c));
        const std::vector<QTensor> downs = layouts(random_weights(rng, t, c, f));
        for (size_t li = 0; li < ws.size(); ++li) {
            for (int nt : {1, 2}) {
                omp_set_num_threads(nt);
                for (int64_t M : {1, 3, 24}) {
                    for (DType dt : {DType::f32, DType::bf16}) {
                        for (DType wt : {DType::f32, DType::bf16}) {
                            const std::string what = ws[li].str() + " M=" + std::to_string(M) +
                                                     " " + core::to_string(dt) + " weight " +
                                                     core::to_string(wt) + " threads " +
                                                     std::to_string(nt);
                            Tensor raw = test::random_tensor(rng, {M, c}, DType::f32);
                            Tensor nw = test::random_tensor(rng, {c}, wt);
                            Tensor xn = Tensor::empty({M, c}, dt), xn2 = Tensor::empty({M, c}, dt);
                            Tensor bias = test::random_tensor(rng, {N}, DType::f32);
                            Tensor want = Tensor::empty({M, N}, DType::f32);
                            ops::rmsnorm_forward(xn, Tensor(), raw, nw, 1e-5f);
                            ops::quant_linear_forward(want, xn, ws[li], bias);
                            Tensor got = Tensor::empty({M, N}, DType::f32);
                            ops::quant_linear_forward(got, raw, {nw, 1e-5f, xn2}, ws[li], bias);
                            EXPECT_EQ(std::memcmp(got.data_ptr(), want.data_ptr(), got.nbytes()), 0)
                                << "linear " << what;
                            EXPECT_EQ(std::memcmp(xn2.data_ptr(), xn.data_ptr(), xn.nbytes()), 0)
                                << "linear normed " << what;
                            // The MLP: out is raw itself (beta = 1 onto the residual stream).
                            Tensor h = Tensor::empty({M, 2 * f}, dt), a = Tensor::empty({M, f}, dt);
                            Tensor res = raw.clone();
                            ops::quant_swiglu_forward(res, xn, ups[li], downs[li], h, a, 1.0f);
                            Tensor h2 = Tensor::empty({M, 2 * f}, dt),
                                   a2 = Tensor::empty({M, f}, dt);
                            Tensor res2 = raw.clone();
                            ops::quant_swiglu_forward(res2, res2, {nw, 1e-5f, xn2}, ups[li],
                                                      downs[li], h2, a2, 1.0f);
                            EXPECT_EQ(std::memcmp(res2.data_ptr(), res.data_ptr(), res.nbytes()), 0)
                                << "mlp " << what;
                            EXPECT_EQ(std::memcmp(xn2.data_ptr(), xn.data_ptr(), xn.nbytes()), 0)
                                << "mlp normed " << what;
                            EXPECT_EQ(std::memcmp(a2.data_ptr(), a.data_ptr(), a.nbytes()), 0)
                                << "mlp a " << what;
                        }
                    }
                }
            }
        }
    }
    omp_set_num_threads(threads);
    const QTensor w = random_weights(rng, QType::q8_0, N, C);
    Tensor raw = Tensor::empty({1, C}, DType::f32), out = Tensor::empty({1, N}, DType::f32);
    Tensor xn = Tensor::empty({1, C}, DType::f32);
    EXPECT_THROW(
        ops::quant_linear_forward(out, raw, {Tensor::empty({C + 1}, DType::f32), 1e-5f, xn}, w),
        ShapeError);
    EXPECT_THROW(ops::quant_linear_forward(
                     out, raw,
                     {Tensor::empty({C}, DType::f32), 1e-5f, Tensor::empty({2, C}, DType::f32)}, w),
                 ShapeError);
    EXPECT_THROW(
        ops::quant_linear_forward(out, raw, {Tensor::empty({C}, DType::f32), -1.0f, xn}, w),
        ShapeError);
}

// Q4_0 / Q5_0 widened to Q8_0 (core::widen_to_q8_0, for fused matrices whose parts differ in
// type) hold the same values: dequantized, bit for bit equal to the source's dequantization.
TEST(QuantGemv, WidenedToQ8_0DequantizesIdentically) {
    test::Rng rng(304);
    for (QType t : {QType::q4_0, QType::q5_0, QType::q8_0}) {
        const QTensor w = random_weights(rng, t, 5, 96);
        const QTensor q8 = core::widen_to_q8_0(w);
        EXPECT_EQ(q8.type(), QType::q8_0);
        const std::vector<float> a = dequantized(w), b = dequantized(q8);
        EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
            << core::to_string(t);
    }
    EXPECT_THROW((void)core::widen_to_q8_0(random_weights(rng, QType::q4_1, 2, 32)), NotSupported);
}

// A vector activation quantizer's codes, scales and half-sums against the scalar one's, bit for
// bit, over x[0, K); returns its codes.
template <class Fn>
std::vector<int8_t> expect_quantizer_equals_scalar(Fn quantize, const float* x, int64_t K) {
    const Q8Row a = quantized(quantize_q8_act, x, K), b = quantized(quantize, x, K);
    EXPECT_EQ(a.q, b.q);
    EXPECT_EQ(a.d, b.d);
    EXPECT_EQ(a.s0, b.s0);
    EXPECT_EQ(a.s1, b.s1);
    return b.q;
}

// The AVX-512 activation quantizer against the scalar one (random inputs: no exact ties, where
// the two may round differently), zero blocks included.
TEST(QuantGemv, VectorActivationQuantizerMatchesScalar) {
    if (resolve(QuantKernel::best) != QuantKernel::avx512_vnni) GTEST_SKIP() << "no AVX-512 VNNI";
    test::Rng rng(304);
    const int64_t K = 1024;
    Tensor x = test::random_tensor(rng, {K}, DType::f32);
    float* X = x.data<float>();
    for (int k = 64; k < 96; ++k) X[k] = 0.0f;
    expect_quantizer_equals_scalar(quantize_q8_act_avx512, X, K);
}

// The AVX2 activation quantizer against the scalar one bit for bit, exact ties included (the
// scalar lround rounds them away from zero), and zero blocks.
TEST(QuantGemv, Avx2ActivationQuantizerEqualsScalar) {
    if (resolve(QuantKernel::best) != QuantKernel::avx2 &&
        resolve(QuantKernel::best) != QuantKernel::avx512_vnni) {
        GTEST_SKIP() << "no AVX2";
    }
    test::Rng rng(306);
    const int64_t K = 1024;
    Tensor x = test::random_tensor(rng, {K}, DType::f32);
    float* X = x.data<float>();
    for (int k = 64; k < 96; ++k) X[k] = 0.0f;
    // Block 3: max 127, so x * (1 / (127 / 127)) = x: half-integers are exact ties.
    for (int k = 96; k < 128; ++k) X[k] = static_cast<float>(k - 112) + 0.5f;
    X[127] = 127.0f;
    const std::vector<int8_t> q = expect_quantizer_equals_scalar(quantize_q8_act_avx2, X, K);
    EXPECT_EQ(q[96 + 16], 1);   // 0.5 -> 1
    EXPECT_EQ(q[96 + 15], -1);  // -0.5 -> -1
}

// ZS_QUANT_ACT=ggml's Q8_0 activations follow llama.cpp's x86 quantize_row_q8_0: multiplier
// 127 / max|x| and ties to even, checked against that formula computed here in double (the
// product x * (127 / max) of two floats, rounded once to float, is what the f32 code computes),
// with a block whose exact ties round to even where the default quantizer rounds them away.
TEST(QuantGemv, GgmlActivationsFollowLlamaCppRounding) {
    test::Rng rng(310);
    const int64_t K = 512;
    Tensor x = test::random_tensor(rng, {K}, DType::f32, -3.0, 3.0);
    float* X = x.data<float>();
    for (int k = 64; k < 96; ++k) X[k] = 0.0f;
    // Block 3: max 127, so the multiplier is 1: half-integers are exact ties.
    for (int k = 96; k < 128; ++k) X[k] = static_cast<float>(k - 112) + 0.5f;
    X[127] = 127.0f;
    const auto [q, d, s0, s1] = quantized(quantize_q8_act_ggml, X, K);
    for (int64_t c = 0; c < K / 32; ++c) {
        double amax = 0.0;
        for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(double{X[32 * c + l]}));
        const auto id = static_cast<float>(amax == 0.0 ? 0.0 : 127.0 / amax);
        int32_t a = 0, b = 0;
        for (int l = 0; l < 32; ++l) {
            const auto p = static_cast<float>(double{X[32 * c + l]} * double{id});
            const double r = std::round(p);
            const double want = std::fabs(p - std::trunc(p)) == 0.5  // a tie: the even one
                                    ? 2.0 * std::round(p / 2.0)
                                    : r;
            ASSERT_EQ(q[static_cast<size_t>(32 * c + l)], static_cast<int8_t>(want))
                << "block " << c << " element " << l << " x " << X[32 * c + l];
            (l < 16 ? a : b) += static_cast<int32_t>(want);
        }
        EXPECT_EQ(d[static_cast<size_t>(c)], static_cast<float>(amax / 127.0));
        EXPECT_EQ(s0[static_cast<size_t>(c)], a);
        EXPECT_EQ(s1[static_cast<size_t>(c)], b);
    }
    EXPECT_EQ(q[96 + 16], 0);  // 0.5 -> 0 (the default quantizer: 1)
    EXPECT_EQ(q[96 + 18], 2);  // 2.5 -> 2
    EXPECT_EQ(q[96 + 15], 0);  // -0.5 -> 0
}

// Decode on AVX2 reads up to four groups side by side (qdot_groups16_streams_avx2): every group's
// 16 values equal the one-group kernel's (m = 1) bit for bit, for every interleaved type and 1-4
// groups at once; and the whole GEMV over 9 groups and a padded one (each thread's share cut into
// runs of unequal length) equals the GEMV that reads one group at a time.
TEST(QuantGemv, Avx2DecodeStreamsEqualOneGroupAtATime) {
    if (resolve(QuantKernel::best) != QuantKernel::avx2 &&
        resolve(QuantKernel::best) != QuantKernel::avx512_vnni) {
        GTEST_SKIP() << "no AVX2";
    }
    test::Rng rng(309);
    const int64_t K = 512, G = 4;
    Tensor x = test::random_tensor(rng, {K}, DType::f32);
    const auto [q, d, s0, s1] = quantized(quantize_q8_act, x.data<float>(), K);
    std::vector<float> ds0(K / 32), ds1(K / 32);
    for (size_t c = 0; c < d.size(); ++c) {
        ds0[c] = d[c] * static_cast<float>(s0[c]);
        ds1[c] = d[c] * static_cast<float>(s1[c]);
    }
    const QActRow act{q.data(), d.data(), s0.data(), s1.data(), ds0.data(), ds1.data()};
    for (QType t : kAllTypes) {
        if (!core::can_interleave(t)) continue;
        const QTensor w = core::interleave16(random_weights(rng, t, 16 * G, K));
        std::vector<float> one(16 * G);
        for (int64_t g = 0; g < G; ++g) qdot_group16_avx2(t, w.group(g), K, &act, 1, &one[16 * g]);
        for (int n = 1; n <= G; ++n) {
            // Groups n-1, ..., 0: not in memory order.
            std::vector<const uint8_t*> gs;
            for (int i = n - 1; i >= 0; --i) gs.push_back(w.group(i));
            std::vector<float> got(16 * G, -1.0f);
            qdot_groups16_streams_avx2(t, gs.data(), n, K, act, got.data());
            for (int i = 0; i < n; ++i) {
                for (int r = 0; r < 16; ++r) {
                    ASSERT_EQ(got[16 * i + r], one[16 * (n - 1 - i) + r])
                        << to_string(t) << " n=" << n << " group " << n - 1 - i << " row " << r;
                }
            }
        }
        const QTensor big = core::interleave16(random_weights(rng, t, 16 * 9 + 5, K));
        Tensor out = Tensor::empty({1, big.rows()}, DType::f32);
        quant_gemv(out, x.view({1, K}), big, 0.0f, Tensor(), QuantKernel::avx2);
        std::vector<float> ref(16);
        for (int64_t g = 0; g < 10; ++g) {
            qdot_group16_avx2(t, big.group(g), K, &act, 1, ref.data());
            for (int64_t r = 0; r < 16 && 16 * g + r < big.rows(); ++r) {
                ASSERT_EQ(out.data<float>()[16 * g + r], ref[static_cast<size_t>(r)])
                    << to_string(t) << " row " << 16 * g + r;
            }
        }
    }
}

// Both prefill routes, chosen by argument, against the dequantize-then-multiply reference (f32
// activations, interleaved weights, M with every 4-row tail), bias and beta included; and one
// matrix of two dequantized tiles (K = 8192: 4 MiB of f32 rows is 128, so tiles of 256 rows).
TEST(QuantGemv, PrefillRoutesMatchDequantizedReference) {
    test::Rng rng(307);
    CpuKernels kernels;
    struct Case {
        QType t;
        int64_t N, K;
        std::vector<int64_t> Ms;
    };
    std::vector<Case> cases;
    for (QType t : kAllTypes) {
        if (core::can_interleave(t)) cases.push_back({t, 37, 512, {17, 18, 19, 20}});
    }
    cases.push_back({QType::q4_0, 300, 8192, {17}});
    for (const Case& c : cases) {
        const int64_t N = c.N, K = c.K;
        const QTensor w0 = random_weights(rng, c.t, N, K);
        const std::vector<float> wf = dequantized(w0);
        const QTensor w = core::interleave16(w0);
        for (int64_t M : c.Ms) {
            Tensor x = test::random_tensor(rng, {M, K}, DType::f32);
            Tensor bias = test::random_tensor(rng, {N}, DType::f32);
            Tensor init = test::random_tensor(rng, {M, N}, DType::f32);
            for (QuantPrefill route : {QuantPrefill::dequant, QuantPrefill::int8}) {
                Tensor out = init.clone();
                kernels.quant_prefill(out, x, w, bias, 0.5f, route);
                for (int64_t m = 0; m < M; ++m) {
                    for (int64_t n = 0; n < N; ++n) {
                        double exact = 0.5 * init.data<float>()[m * N + n] + bias.data<float>()[n];
                        double mag = std::fabs(exact), amax = 0.0, wabs = 0.0;
                        for (int64_t k = 0; k < K; ++k) {
                            const double wv = wf[static_cast<size_t>(n * K + k)];
                            const double xv = x.data<float>()[m * K + k];
                            exact += wv * xv;
                            mag += std::fabs(wv * xv);
                            wabs += std::fabs(wv);
                            amax = std::max(amax, std::fabs(xv));
                        }
                        double tol = 1e-5 * mag + 1e-6;
                        if (route == QuantPrefill::int8) tol += wabs * amax / 127.0 / 2;
                        ASSERT_NEAR(out.data<float>()[m * N + n], exact, tol)
                            << w.str() << " " << to_string(route) << " M=" << M;
                    }
                }
            }
        }
    }
}

// llama.cpp's Q8_K activation blocking (ZS_QUANT_ACT=ggml against k-quant weights), against a
// double-precision model of it: one scale max|x| / 127 per 256 values, every code the nearest
// integer to x / d (ties to even), in [-127, 127], and the chunk sums; zero blocks stay zero.
TEST(QuantGemv, Q8KActivationsUseOneScalePer256) {
    test::Rng rng(305);
    const int64_t K = 768;
    Tensor x = test::random_tensor(rng, {K}, DType::f32, -3.0, 3.0);
    float* X = x.data<float>();
    for (int k = 256; k < 512; ++k) X[k] = 0.0f;
    X[600] = -9.0f;  // the block's extreme, negative
    const auto [q, d, s0, s1] = quantized(quantize_q8k_act, X, K);
    for (int64_t b = 0; b < K / 256; ++b) {
        double amax = 0.0;
        for (int64_t l = 0; l < 256; ++l) amax = std::max(amax, std::fabs(double{X[256 * b + l]}));
        for (int64_t c = 8 * b; c < 8 * b + 8; ++c) {
            ASSERT_NEAR(d[static_cast<size_t>(c)], amax / 127.0, 1e-6 * amax) << "chunk " << c;
            int32_t a = 0, h = 0;
            for (int64_t l = 0; l < 32; ++l) {
                const int64_t k = 32 * c + l;
                const int v = q[static_cast<size_t>(k)];
                const double want = amax == 0.0 ? 0.0 : double{X[k]} * 127.0 / amax;
                ASSERT_LE(std::fabs(v - want), 0.5 + 1e-4) << "element " << k;
                ASSERT_LE(std::abs(v), 127);
                (l < 16 ? a : h) += v;
            }
            EXPECT_EQ(s0[static_cast<size_t>(c)], a);
            EXPECT_EQ(s1[static_cast<size_t>(c)], h);
        }
    }
    EXPECT_EQ(q[600], -127);
}

TEST(QuantGemv, RejectsMismatchedShapes) {
    test::Rng rng(303);
    const QTensor w = random_weights(rng, QType::q4_0, 8, 64);
    Tensor x = Tensor::zeros({1, 32}, DType::f32);
    Tensor out = Tensor::empty({1, 8}, DType::f32);
    EXPECT_THROW(ops::quant_linear_forward(out, x, w), ShapeError);
    EXPECT_THROW(QTensor::empty(QType::q4_k, 2, 100), ShapeError);
}

}  // namespace
}  // namespace zs::backends::cpu
