// Skinny matmuls (a few rows times a weight matrix): the decode step of generation. oneDNN's
// GEMM is built for large M; with M <= 4 the work is reading the weights once, so this kernel
// streams each weight row exactly once for all M rows, split across threads by output column
// blocks, and accumulates in f32 with four independent rows in flight.
//   out[m][n] = alpha * sum_k a[m][k] * w[n][k] + beta * out[m][n] + bias[n]
//   a [M, K] rows (stride lda), w [N, K] rows (stride ldw), out [M, N] (stride ldo)
#include "backends/cpu/gemv.h"

#include <vector>

#include <omp.h>

#include "backends/cpu/parallel.h"

namespace zs::backends::cpu {

namespace {

template <class TA, class TW, class TO, class TB>
void gemv_impl(const SkinnyArgs& g) {
    const int64_t M = g.m, N = g.n, K = g.k;
    const auto* A = static_cast<const TA*>(g.a);
    const auto* W = static_cast<const TW*>(g.w);
    auto* O = static_cast<TO*>(g.out);
    const auto* Bias = static_cast<const TB*>(g.bias);
    // Rows of a, converted to f32 once (they are reused for every output column).
    std::vector<float> af(static_cast<size_t>(M * K));
    for (int64_t m = 0; m < M; ++m) {
        for (int64_t k = 0; k < K; ++k)
            af[static_cast<size_t>(m * K + k)] = to_f32(A[m * g.lda + k]);
    }
    const float* a = af.data();
    constexpr int64_t kNB = 4;  // output columns per inner iteration
    const int64_t blocks = (N + kNB - 1) / kNB;
#pragma omp parallel for schedule(static) if (N * K >= (1 << 16))
    for (int64_t bi = 0; bi < blocks; ++bi) {
        const int64_t n0 = bi * kNB, nn = std::min(kNB, N - n0);
        for (int64_t m = 0; m < M; ++m) {
            VecF acc[kNB] = {vzero(), vzero(), vzero(), vzero()};
            const float* am = a + m * K;
            for (int64_t k = 0; k < K; k += kLanes) {
                int c = static_cast<int>(std::min<int64_t>(kLanes, K - k));
                VecF av = vload(am + k, c);
                for (int64_t j = 0; j < nn; ++j)
                    acc[j] = vfma(vload(W + (n0 + j) * g.ldw + k, c), av, acc[j]);
            }
            for (int64_t j = 0; j < nn; ++j) {
                float v = g.alpha * vsum(acc[j]);
                TO* o = O + m * g.ldo + n0 + j;
                if (g.beta != 0.0f) v += g.beta * to_f32(*o);
                if (Bias) v += to_f32(Bias[n0 + j]);
                *o = from_f32<TO>(v);
            }
        }
    }
}

}  // namespace

void skinny_matmul(const SkinnyArgs& g) {
    auto with_bias = [&](auto ta, auto tw, auto to) {
        using TA = decltype(ta);
        using TW = decltype(tw);
        using TO = decltype(to);
        if (g.bias == nullptr || g.bias_dtype == core::DType::f32) {
            gemv_impl<TA, TW, TO, float>(g);
        } else {
            gemv_impl<TA, TW, TO, bf16>(g);
        }
    };
    dispatch_float(g.a_dtype, [&](auto ta) {
        dispatch_float(g.w_dtype, [&](auto tw) {
            dispatch_float(g.out_dtype, [&](auto to) { with_bias(ta, tw, to); });
        });
    });
}

}  // namespace zs::backends::cpu
