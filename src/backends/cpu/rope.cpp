// Rotary embedding on the CPU, in place, from the precomputed cos/sin table.
#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/parallel.h"

namespace zs::backends::cpu {

namespace {

template <class T, class P>
void rope_impl(const Tensor& x, const Tensor& positions, const ops::RopeTable& table,
               bool inverse) {
    const int64_t N = x.size(0), H = x.size(1);
    const int64_t sN = x.stride(0), sH = x.stride(1);
    const int64_t half = table.rotary_dim / 2;
    const P* pos = static_cast<const P*>(positions.data_ptr());
    const float* cs = table.cos.data<float>();
    const float* sn = table.sin.data<float>();
    T* base = static_cast<T*>(x.data_ptr());
    const VecF sign = vset(inverse ? -1.0f : 1.0f);
    for_rows(N, H * half, [&](int64_t t) {
        const float* c = cs + static_cast<int64_t>(pos[t]) * half;
        const float* s = sn + static_cast<int64_t>(pos[t]) * half;
        for (int64_t h = 0; h < H; ++h) {
            T* v = base + t * sN + h * sH;
            if (table.pairs == ops::RopePairs::half) {
                for (int64_t i = 0; i < half; i += kLanes) {
                    int n = static_cast<int>(std::min<int64_t>(kLanes, half - i));
                    VecF x0 = vload(v + i, n), x1 = vload(v + half + i, n);
                    VecF cv = vload(c + i, n), sv = vload(s + i, n) * sign;
                    vstore(v + i, x0 * cv - x1 * sv, n);
                    vstore(v + half + i, x1 * cv + x0 * sv, n);
                }
            } else {
                float sg = inverse ? -1.0f : 1.0f;
                for (int64_t i = 0; i < half; ++i) {
                    float x0 = to_f32(v[2 * i]), x1 = to_f32(v[2 * i + 1]);
                    float cv = c[i], sv = s[i] * sg;
                    v[2 * i] = from_f32<T>(x0 * cv - x1 * sv);
                    v[2 * i + 1] = from_f32<T>(x1 * cv + x0 * sv);
                }
            }
        }
    });
}

}  // namespace

void CpuKernels::rope(const Tensor& x, const Tensor& positions, const ops::RopeTable& table,
                      bool inverse) {
    // Positions come from users (requests, datasets): check them before any thread starts.
    auto check_range = [&](auto* p) {
        for (int64_t i = 0; i < positions.numel(); ++i) {
            if (p[i] < 0 || p[i] >= table.max_positions) {
                ZS_THROW(Error, "rope: position {} at index {} is outside [0, {})",
                         static_cast<int64_t>(p[i]), i, table.max_positions);
            }
        }
    };
    if (positions.dtype() == core::DType::i32) {
        check_range(positions.data<int32_t>());
    } else {
        check_range(positions.data<int64_t>());
    }
    dispatch_float(x.dtype(), [&](auto t) {
        using T = decltype(t);
        if (positions.dtype() == core::DType::i32) {
            rope_impl<T, int32_t>(x, positions, table, inverse);
        } else {
            rope_impl<T, int64_t>(x, positions, table, inverse);
        }
    });
}

}  // namespace zs::backends::cpu
