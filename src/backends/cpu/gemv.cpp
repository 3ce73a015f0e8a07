// Skinny matmuls (a few rows times a weight matrix): the decode step of generation. oneDNN's
// GEMM is built for large M; with M <= 4 the work is reading the weights once, so this kernel
// streams each weight row exactly once for all M rows, split across threads by output column
// blocks, and accumulates in f32 with four independent rows in flight.
//   out[m][n] = alpha * sum_k a[m][k] * w[n][k] + beta * out[m][n] + bias[n]
//   a [M, K] rows (stride lda), w [N, K] rows (stride ldw), out [M, N] (stride ldo)
#include "backends/cpu/gemv.h"

// GCC 12 reports the _mm512_undefined_* inside its own intrinsics as uninitialized once they are
// inlined into these unrolled loops (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <algorithm>
#include <vector>

#include <immintrin.h>
#include <omp.h>

#include "backends/cpu/parallel.h"

namespace zs::backends::cpu {

namespace {

// MR rows of a (f32) times NB weight rows: every weight vector loaded once feeds MR FMAs, and
// NB independent weight streams keep enough loads in flight to approach memory bandwidth. Rows
// past `nn` repeat the last valid one (read, never stored).
// Blocks ahead to prefetch: two for 2-byte weights (a block of short rows is little data).
template <class TW>
inline constexpr int64_t kAheadFor = sizeof(TW) == 2 ? 2 : 1;

template <int MR, int NB, class TW>
inline void gemv_block(const float* a, int64_t K, const TW* W, int64_t ldw, int64_t n0, int64_t nn,
                       float* res) {
    VecF acc[MR][NB];
    for (int m = 0; m < MR; ++m) {
        for (int j = 0; j < NB; ++j) acc[m][j] = vzero();
    }
    const TW* wr[NB];
    for (int j = 0; j < NB; ++j) wr[j] = W + (n0 + std::min<int64_t>(j, nn - 1)) * ldw;
    int64_t k = 0;
    // The next block's rows, fetched a block ahead (rows are short: the hardware prefetcher
    // alone restarts on every block).
    const char* next = reinterpret_cast<const char*>(W + (n0 + kAheadFor<TW> * NB) * ldw);
    const int64_t row_bytes = ldw * static_cast<int64_t>(sizeof(TW));
    for (; k + kLanes <= K; k += kLanes) {
        VecF wv[NB];
        for (int j = 0; j < NB; ++j) {
            _mm_prefetch(next + j * row_bytes + k * static_cast<int64_t>(sizeof(TW)), _MM_HINT_T0);
            wv[j] = vload(wr[j] + k);
        }
        for (int m = 0; m < MR; ++m) {
            const VecF av = vload(a + m * K + k);
            for (int j = 0; j < NB; ++j) acc[m][j] = vfma(wv[j], av, acc[m][j]);
        }
    }
    if (k < K) {
        const int c = static_cast<int>(K - k);
        VecF wv[NB];
        for (int j = 0; j < NB; ++j) wv[j] = vload(wr[j] + k, c);
        for (int m = 0; m < MR; ++m) {
            const VecF av = vload(a + m * K + k, c);
            for (int j = 0; j < NB; ++j) acc[m][j] = vfma(wv[j], av, acc[m][j]);
        }
    }
    for (int m = 0; m < MR; ++m) {
        for (int j = 0; j < NB; ++j) res[m * NB + j] = vsum(acc[m][j]);
    }
}

template <int MR, int NB, class TA, class TW, class TO, class TB>
void gemv_rows(const SkinnyArgs& g, const float* a) {
    const int64_t N = g.n, K = g.k;
    const auto* W = static_cast<const TW*>(g.w);
    auto* O = static_cast<TO*>(g.out);
    const auto* Bias = static_cast<const TB*>(g.bias);
    const int64_t blocks = (N + NB - 1) / NB;
#pragma omp parallel for schedule(static) if (N * K >= (1 << 16))
    for (int64_t bi = 0; bi < blocks; ++bi) {
        const int64_t n0 = bi * NB, nn = std::min<int64_t>(NB, N - n0);
        float res[MR * NB];
        gemv_block<MR, NB>(a, K, W, g.ldw, n0, nn, res);
        for (int m = 0; m < MR; ++m) {
            for (int64_t j = 0; j < nn; ++j) {
                float v = g.alpha * res[m * NB + j];
                TO* o = O + m * g.ldo + n0 + j;
                if (g.beta != 0.0f) v += g.beta * to_f32(*o);
                if (Bias) v += to_f32(Bias[n0 + j]);
                *o = from_f32<TO>(v);
            }
        }
    }
}

template <class TA, class TW, class TO, class TB>
void gemv_impl(const SkinnyArgs& g) {
    const int64_t M = g.m, K = g.k;
    const auto* A = static_cast<const TA*>(g.a);
    // Rows of a, converted to f32 once (they are reused for every output column).
    std::vector<float> af(static_cast<size_t>(M * K));
    for (int64_t m = 0; m < M; ++m) {
        for (int64_t k = 0; k < K; ++k)
            af[static_cast<size_t>(m * K + k)] = to_f32(A[m * g.lda + k]);
    }
    // Up to 8 rows per pass over the weights (the decode batch of several sequences): MR x NB
    // accumulators + NB weight vectors fit the 32 vector registers.
    for (int64_t m0 = 0; m0 < M; m0 += 8) {
        SkinnyArgs part = g;
        part.out = static_cast<TO*>(g.out) + m0 * g.ldo;
        const float* a = af.data() + m0 * K;
        switch (std::min<int64_t>(8, M - m0)) {
            case 1:
                gemv_rows<1, 8, TA, TW, TO, TB>(part, a);
                break;
            case 2:
                gemv_rows<2, 6, TA, TW, TO, TB>(part, a);
                break;
            case 3:
                gemv_rows<3, 4, TA, TW, TO, TB>(part, a);
                break;
            case 4:
                gemv_rows<4, 4, TA, TW, TO, TB>(part, a);
                break;
            case 5:
                gemv_rows<5, 3, TA, TW, TO, TB>(part, a);
                break;
            case 6:
                gemv_rows<6, 3, TA, TW, TO, TB>(part, a);
                break;
            case 7:
                gemv_rows<7, 3, TA, TW, TO, TB>(part, a);
                break;
            default:
                gemv_rows<8, 3, TA, TW, TO, TB>(part, a);
                break;
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
