// LayerNorm and RMSNorm on the CPU. Forward: one pass for the statistics, one to write (the row is
// in cache by then). Backward: per-thread f32 partial sums for dw/db, reduced in thread order so
// results are deterministic for a given thread count.
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/norm_row.h"
#include "backends/cpu/parallel.h"

namespace zs::backends::cpu {

namespace {

// One LayerNorm row with every operand of one dtype, loaded and stored in pairs (vec.h): returns
// {mean, rstd}. The second pass, over the row already in L1, prefetches the next row (`next`):
// the first pass of each row otherwise waits on DRAM with nothing else in flight.
template <class T>
std::pair<float, float> layernorm_row_pairs(T* orow, const T* xr, const T* next, const T* wp,
                                            const T* bp, int64_t C, float eps) {
    VecF s0 = vzero(), s1 = vzero();
    for_pairs(0, C, [&](int64_t c, int n) {
        VecF a, b;
        vload2(xr + c, a, b, n);  // zeros past the end
        s0 = s0 + a;
        s1 = s1 + b;
    });
    const float m = vsum(s0 + s1) / static_cast<float>(C);
    const VecF vm = vset(m);
    VecF v0 = vzero(), v1 = vzero();
    for_pairs(0, C, [&](int64_t c, int n) {
        VecF a, b;
        vprefetch2(next + c);
        vload2(xr + c, a, b, n);
        a = a - vm;
        b = b - vm;
        if (n < 2 * kLanes) vfill2<T>(a, b, n, 0.0f);
        v0 = vfma(a, a, v0);
        v1 = vfma(b, b, v1);
    });
    const float rs = 1.0f / std::sqrt(vsum(v0 + v1) / static_cast<float>(C) + eps);
    const VecF vrs = vset(rs);
    for_pairs(0, C, [&](int64_t c, int n) {
        VecF a, b, w0, w1, b0, b1;
        vload2(xr + c, a, b, n);
        vload2(wp + c, w0, w1, n);
        vload2(bp + c, b0, b1, n);
        vstore2(orow + c, vfma((a - vm) * vrs, w0, b0), vfma((b - vm) * vrs, w1, b1), n);
    });
    return {m, rs};
}

template <class TX, class TO, class TW>
void layernorm_fwd(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                   const Tensor& w, const Tensor& b, float eps) {
    Rows rx = *ops::rows_of(x), ro = *ops::rows_of(out);
    const int64_t C = rx.cols;
    const TW* wp = static_cast<const TW*>(w.data_ptr());
    const TW* bp = static_cast<const TW*>(b.data_ptr());
    float* mp = mean.defined() ? mean.data<float>() : nullptr;
    float* rp = rstd.defined() ? rstd.data<float>() : nullptr;
    for_rows(rx.n, C, [&](int64_t r) {
        const TX* xr = static_cast<const TX*>(x.data_ptr()) + r * rx.stride;
        TO* orow = static_cast<TO*>(out.data_ptr()) + r * ro.stride;
        if constexpr (std::is_same_v<TX, TO> && std::is_same_v<TX, TW>) {
            auto [m, rs] = layernorm_row_pairs(orow, xr, xr + rx.stride, wp, bp, C, eps);
            if (mp) mp[r] = m;
            if (rp) rp[r] = rs;
            return;
        }
        VecF s = vzero();
        for (int64_t c = 0; c < C; c += kLanes) s = s + vload(xr + c, lanes(c, C));
        float m = vsum(s) / static_cast<float>(C);
        VecF v = vzero();
        for (int64_t c = 0; c < C; c += kLanes) {
            int n = lanes(c, C);
            VecF d = vmask_fill(vload(xr + c, n) - vset(m), n, 0.0f);
            v = vfma(d, d, v);
        }
        float rs = 1.0f / std::sqrt(vsum(v) / static_cast<float>(C) + eps);
        for (int64_t c = 0; c < C; c += kLanes) {
            int n = lanes(c, C);
            VecF xh = (vload(xr + c, n) - vset(m)) * vset(rs);
            vstore(orow + c, vfma(xh, vload(wp + c, n), vload(bp + c, n)), n);
        }
        if (mp) mp[r] = m;
        if (rp) rp[r] = rs;
    });
}

template <class TX, class TG, class TW>
void layernorm_bwd(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dout,
                   const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd) {
    Rows rx = *ops::rows_of(x), rg = *ops::rows_of(dout), rd = *ops::rows_of(dx);
    const int64_t C = rx.cols, N = rx.n;
    const TW* wp = static_cast<const TW*>(w.data_ptr());
    const float* mp = mean.data<float>();
    const float* rp = rstd.data<float>();
    int nt = N * C >= kParallelMinElems ? omp_get_max_threads() : 1;
    // Per-thread partial parameter gradients [nt][2][C].
    std::vector<float> part(static_cast<size_t>(nt) * 2 * static_cast<size_t>(C), 0.0f);
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num();
        float* pdw = part.data() + static_cast<size_t>(tid) * 2 * static_cast<size_t>(C);
        float* pdb = pdw + C;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < N; ++r) {
            const TX* xr = static_cast<const TX*>(x.data_ptr()) + r * rx.stride;
            const TG* gr = static_cast<const TG*>(dout.data_ptr()) + r * rg.stride;
            TX* dr = static_cast<TX*>(dx.data_ptr()) + r * rd.stride;
            VecF m = vset(mp[r]), rs = vset(rp[r]);
            VecF s1 = vzero(), s2 = vzero();  // sum(dnorm), sum(dnorm * xhat)
            for (int64_t c = 0; c < C; c += kLanes) {
                int n = lanes(c, C);
                VecF xh = (vload(xr + c, n) - m) * rs;
                VecF g = vload(gr + c, n);
                VecF dn = g * vload(wp + c, n);
                s1 = s1 + dn;
                s2 = vfma(dn, xh, s2);
                vstore(pdw + c, vfma(g, xh, vload(pdw + c, n)), n);
                vstore(pdb + c, vload(pdb + c, n) + g, n);
            }
            VecF m1 = vset(vsum(s1) / static_cast<float>(C));
            VecF m2 = vset(vsum(s2) / static_cast<float>(C));
            for (int64_t c = 0; c < C; c += kLanes) {
                int n = lanes(c, C);
                VecF xh = (vload(xr + c, n) - m) * rs;
                VecF dn = vload(gr + c, n) * vload(wp + c, n);
                VecF d = rs * (dn - m1 - xh * m2);
                vstore(dr + c, vload(dr + c, n) + d, n);
            }
        }
    }
    float* dwp = dw.defined() ? dw.data<float>() : nullptr;
    float* dbp = db.defined() ? db.data<float>() : nullptr;
    for (int t = 0; t < nt; ++t) {
        const float* pdw = part.data() + static_cast<size_t>(t) * 2 * static_cast<size_t>(C);
        for (int64_t c = 0; c < C; ++c) {
            if (dwp) dwp[c] += pdw[c];
            if (dbp) dbp[c] += pdw[C + c];
        }
    }
}

template <class TX, class TO, class TW>
void rmsnorm_fwd(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w,
                 float eps) {
    Rows rx = *ops::rows_of(x), ro = *ops::rows_of(out);
    const int64_t C = rx.cols;
    const TW* wp = static_cast<const TW*>(w.data_ptr());
    float* rp = rstd.defined() ? rstd.data<float>() : nullptr;
    for_rows(rx.n, C, [&](int64_t r) {
        const TX* xr = static_cast<const TX*>(x.data_ptr()) + r * rx.stride;
        TO* orow = static_cast<TO*>(out.data_ptr()) + r * ro.stride;
        const float rs = rmsnorm_row<TX, TO, TW>(orow, xr, xr + rx.stride, wp, C, eps);
        if (rp) rp[r] = rs;
    });
}

template <class TX, class TG, class TW>
void rmsnorm_bwd(const Tensor& dx, const Tensor& dw, const Tensor& dout, const Tensor& x,
                 const Tensor& w, const Tensor& rstd) {
    Rows rx = *ops::rows_of(x), rg = *ops::rows_of(dout), rd = *ops::rows_of(dx);
    const int64_t C = rx.cols, N = rx.n;
    const TW* wp = static_cast<const TW*>(w.data_ptr());
    const float* rp = rstd.data<float>();
    int nt = N * C >= kParallelMinElems ? omp_get_max_threads() : 1;
    std::vector<float> part(static_cast<size_t>(nt) * static_cast<size_t>(C), 0.0f);
#pragma omp parallel num_threads(nt)
    {
        float* pdw =
            part.data() + static_cast<size_t>(omp_get_thread_num()) * static_cast<size_t>(C);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < N; ++r) {
            const TX* xr = static_cast<const TX*>(x.data_ptr()) + r * rx.stride;
            const TG* gr = static_cast<const TG*>(dout.data_ptr()) + r * rg.stride;
            TX* dr = static_cast<TX*>(dx.data_ptr()) + r * rd.stride;
            VecF rs = vset(rp[r]);
            VecF s2 = vzero();
            for (int64_t c = 0; c < C; c += kLanes) {
                int n = lanes(c, C);
                VecF xh = vload(xr + c, n) * rs;
                VecF g = vload(gr + c, n);
                s2 = vfma(g * vload(wp + c, n), xh, s2);
                vstore(pdw + c, vfma(g, xh, vload(pdw + c, n)), n);
            }
            VecF m2 = vset(vsum(s2) / static_cast<float>(C));
            for (int64_t c = 0; c < C; c += kLanes) {
                int n = lanes(c, C);
                VecF xh = vload(xr + c, n) * rs;
                VecF dn = vload(gr + c, n) * vload(wp + c, n);
                vstore(dr + c, vload(dr + c, n) + rs * (dn - xh * m2), n);
            }
        }
    }
    if (dw.defined()) {
        float* dwp = dw.data<float>();
        for (int t = 0; t < nt; ++t) {
            const float* pdw = part.data() + static_cast<size_t>(t) * static_cast<size_t>(C);
            for (int64_t c = 0; c < C; ++c) dwp[c] += pdw[c];
        }
    }
}

}  // namespace

void CpuKernels::layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd,
                                   const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
    dispatch_float(x.dtype(), [&](auto tx) {
        dispatch_float(out.dtype(), [&](auto to) {
            dispatch_float(w.dtype(), [&](auto tw) {
                layernorm_fwd<decltype(tx), decltype(to), decltype(tw)>(out, mean, rstd, x, w, b,
                                                                        eps);
            });
        });
    });
}

void CpuKernels::layernorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& db,
                                    const Tensor& dout, const Tensor& x, const Tensor& w,
                                    const Tensor& mean, const Tensor& rstd) {
    dispatch_float(x.dtype(), [&](auto tx) {
        dispatch_float(dout.dtype(), [&](auto tg) {
            dispatch_float(w.dtype(), [&](auto tw) {
                layernorm_bwd<decltype(tx), decltype(tg), decltype(tw)>(dx, dw, db, dout, x, w,
                                                                        mean, rstd);
            });
        });
    });
}

void CpuKernels::rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x,
                                 const Tensor& w, float eps) {
    dispatch_float(x.dtype(), [&](auto tx) {
        dispatch_float(out.dtype(), [&](auto to) {
            dispatch_float(w.dtype(), [&](auto tw) {
                rmsnorm_fwd<decltype(tx), decltype(to), decltype(tw)>(out, rstd, x, w, eps);
            });
        });
    });
}

void CpuKernels::rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dout,
                                  const Tensor& x, const Tensor& w, const Tensor& rstd) {
    dispatch_float(x.dtype(), [&](auto tx) {
        dispatch_float(dout.dtype(), [&](auto tg) {
            dispatch_float(w.dtype(), [&](auto tw) {
                rmsnorm_bwd<decltype(tx), decltype(tg), decltype(tw)>(dx, dw, dout, x, w, rstd);
            });
        });
    });
}

}  // namespace zs::backends::cpu
