// One RMSNorm row on the CPU: the code CpuKernels::rmsnorm_forward runs per row, shared with the
// decode products that fold the norm into their own OpenMP region (qgemv.cpp, ops::RmsNormFold),
// so both give the same bits.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backends/cpu/parallel.h"
#include "backends/cpu/vec.h"

namespace zs::backends::cpu {

// orow[0, C) = xr * rsqrt(mean(xr^2) + eps) * wp; returns the rsqrt. With every operand of one
// dtype the row is loaded and stored in pairs (vec.h), and the second pass, over the row already
// in L1, prefetches the next row (`next`): the first pass of each row otherwise waits on DRAM.
template <class TX, class TO, class TW>
float rmsnorm_row(TO* orow, const TX* xr, const TX* next, const TW* wp, int64_t C, float eps) {
    if constexpr (std::is_same_v<TX, TO> && std::is_same_v<TX, TW>) {
        VecF s0 = vzero(), s1 = vzero();
        for_pairs(0, C, [&](int64_t c, int n) {
            VecF a, b;
            vload2(xr + c, a, b, n);
            s0 = vfma(a, a, s0);
            s1 = vfma(b, b, s1);
        });
        const float rs = 1.0f / std::sqrt(vsum(s0 + s1) / static_cast<float>(C) + eps);
        const VecF vrs = vset(rs);
        for_pairs(0, C, [&](int64_t c, int n) {
            vprefetch2(next + c);
            VecF a, b, w0, w1;
            vload2(xr + c, a, b, n);
            vload2(wp + c, w0, w1, n);
            vstore2(orow + c, a * vrs * w0, b * vrs * w1, n);
        });
        return rs;
    } else {
        (void)next;
        VecF ss = vzero();
        for (int64_t c = 0; c < C; c += kLanes) {
            VecF v = vload(xr + c, lanes(c, C));
            ss = vfma(v, v, ss);
        }
        const float rs = 1.0f / std::sqrt(vsum(ss) / static_cast<float>(C) + eps);
        for (int64_t c = 0; c < C; c += kLanes) {
            int n = lanes(c, C);
            vstore(orow + c, vload(xr + c, n) * vset(rs) * vload(wp + c, n), n);
        }
        return rs;
    }
}

}  // namespace zs::backends::cpu
