// Embedding lookup (row gather) and its scatter-add backward on the CPU.
#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/parallel.h"

namespace zs::backends::cpu {

namespace {

// Every id in [0, V); ids come from users, so a bad one is an Error, not an abort.
template <class I>
void check_ids(const char* op, const I* ids, int64_t n, int64_t v) {
    for (int64_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= v) {
            ZS_THROW(Error, "{}: token id {} at position {} is outside the vocabulary [0, {})", op,
                     static_cast<int64_t>(ids[i]), i, v);
        }
    }
}

template <class F>
void dispatch_ids(const Tensor& ids, F&& f) {
    if (ids.dtype() == core::DType::i32) {
        f(ids.data<int32_t>());
    } else {
        f(ids.data<int64_t>());
    }
}

}  // namespace

void CpuKernels::embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table,
                                   bool accumulate) {
    const int64_t N = ids.numel(), V = table.size(0), C = table.size(1);
    Rows rt = *ops::rows_of(table), ro = *ops::rows_of(out);
    dispatch_ids(ids, [&](auto* id) {
        check_ids("embedding_forward", id, N, V);
        dispatch_float(table.dtype(), [&](auto tt) {
            dispatch_float(out.dtype(), [&](auto to) {
                using TT = decltype(tt);
                using TO = decltype(to);
                for_rows(N, C, [&](int64_t i) {
                    const TT* src = static_cast<const TT*>(table.data_ptr()) +
                                    static_cast<int64_t>(id[i]) * rt.stride;
                    TO* dst = static_cast<TO*>(out.data_ptr()) + i * ro.stride;
                    for (int64_t c = 0; c < C; c += kLanes) {
                        int n = static_cast<int>(std::min<int64_t>(kLanes, C - c));
                        VecF v = vload(src + c, n);
                        if (accumulate) v = v + vload(dst + c, n);
                        vstore(dst + c, v, n);
                    }
                });
            });
        });
    });
}

void CpuKernels::embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) {
    const int64_t N = ids.numel(), V = dtable.size(0), C = dtable.size(1);
    Rows rd = *ops::rows_of(dout);
    float* dt = dtable.data<float>();
    // Parallel over column blocks, tokens in order inside each: repeated ids accumulate without
    // races and the sum order is fixed (deterministic).
    constexpr int64_t kBlock = 64;
    const int64_t nb = (C + kBlock - 1) / kBlock;
    dispatch_ids(ids, [&](auto* id) {
        check_ids("embedding_backward", id, N, V);
        dispatch_float(dout.dtype(), [&](auto tg) {
            using TG = decltype(tg);
            const TG* g = static_cast<const TG*>(dout.data_ptr());
#pragma omp parallel for schedule(static) if (N * C >= kParallelMinElems)
            for (int64_t b = 0; b < nb; ++b) {
                int64_t c0 = b * kBlock, c1 = std::min(C, c0 + kBlock);
                for (int64_t i = 0; i < N; ++i) {
                    float* row = dt + static_cast<int64_t>(id[i]) * C;
                    const TG* gr = g + i * rd.stride;
                    for (int64_t c = c0; c < c1; c += kLanes) {
                        int n = static_cast<int>(std::min<int64_t>(kLanes, c1 - c));
                        vstore(row + c, vload(row + c, n) + vload(gr + c, n), n);
                    }
                }
            }
        });
    });
}

}  // namespace zs::backends::cpu
