// Pointwise activations, residual add/scale and softmax on the CPU: 16-lane vector loops over
// rows, bf16 or f32 in and out, f32 math.
#include <cmath>
#include <type_traits>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/qgemv.h"

namespace zs::backends::cpu {

namespace {

constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluC = 0.044715f;
constexpr float kLog2e = 1.4426950408889634f;

// Iteration shape shared by all arguments of a pointwise op: rows (or one long row when every
// argument is contiguous, so that few long rows still parallelise).
struct Space {
    int64_t n_rows, cols;
    bool flat;
};

Space space_of(std::initializer_list<const Tensor*> ts) {
    const Tensor& ref = **ts.begin();
    bool flat = true;
    for (const Tensor* t : ts) flat = flat && t->is_contiguous();
    if (flat) return {1, ref.numel(), true};
    auto r = ops::rows_of(ref);
    return {r->n, r->cols, false};
}

inline int64_t stride_of(const Tensor& t, const Space& s) {
    return s.flat ? s.cols : row_arg(t).stride;
}

// out = f(x), elementwise; f maps VecF -> VecF.
template <class F>
void unary(const Tensor& out, const Tensor& x, F f) {
    Space sp = space_of({&out, &x});
    int64_t so = stride_of(out, sp), sx = stride_of(x, sp);
    dispatch_float(x.dtype(), [&](auto tx) {
        dispatch_float(out.dtype(), [&](auto to) {
            using TX = decltype(tx);
            using TO = decltype(to);
            auto* xb = static_cast<const TX*>(x.data_ptr());
            auto* ob = static_cast<TO*>(out.data_ptr());
            for_blocks(sp.n_rows, sp.cols, [&](int64_t r, int64_t c0, int64_t c1) {
                const TX* xr = xb + r * sx;
                TO* orow = ob + r * so;
                if constexpr (std::is_same_v<TX, TO>) {
                    for_pairs(c0, c1, [&](int64_t c, int n) {
                        VecF a, b;
                        vload2(xr + c, a, b, n);
                        vstore2(orow + c, f(a), f(b), n);
                    });
                    return;
                }
                for (int64_t c = c0; c < c1; c += kLanes) {
                    int n = static_cast<int>(std::min<int64_t>(kLanes, c1 - c));
                    vstore(orow + c, f(vload(xr + c, n)), n);
                }
            });
        });
    });
}

// out = f(a, b), elementwise.
template <class F>
void binary(const Tensor& out, const Tensor& a, const Tensor& b, F f) {
    Space sp = space_of({&out, &a, &b});
    int64_t so = stride_of(out, sp), sa = stride_of(a, sp), sb = stride_of(b, sp);
    dispatch_float(a.dtype(), [&](auto ta) {
        dispatch_float(b.dtype(), [&](auto tb) {
            dispatch_float(out.dtype(), [&](auto to) {
                using TA = decltype(ta);
                using TB = decltype(tb);
                using TO = decltype(to);
                auto* ab = static_cast<const TA*>(a.data_ptr());
                auto* bb = static_cast<const TB*>(b.data_ptr());
                auto* ob = static_cast<TO*>(out.data_ptr());
                for_blocks(sp.n_rows, sp.cols, [&](int64_t r, int64_t c0, int64_t c1) {
                    const TA* ar = ab + r * sa;
                    const TB* br = bb + r * sb;
                    TO* orow = ob + r * so;
                    if constexpr (std::is_same_v<TA, TO> && std::is_same_v<TB, TO>) {
                        for_pairs(c0, c1, [&](int64_t c, int n) {
                            VecF a0, a1, b0, b1;
                            vload2(ar + c, a0, a1, n);
                            vload2(br + c, b0, b1, n);
                            vstore2(orow + c, f(a0, b0), f(a1, b1), n);
                        });
                        return;
                    }
                    for (int64_t c = c0; c < c1; c += kLanes) {
                        int n = static_cast<int>(std::min<int64_t>(kLanes, c1 - c));
                        vstore(orow + c, f(vload(ar + c, n), vload(br + c, n)), n);
                    }
                });
            });
        });
    });
}

// Two outputs from three inputs (swiglu backward): (o1, o2) = f(a, b, c).
template <class F>
void ternary2(const Tensor& o1, const Tensor& o2, const Tensor& a, const Tensor& b, const Tensor& c,
              F f) {
    Space sp = space_of({&o1, &o2, &a, &b, &c});
    int64_t s1 = stride_of(o1, sp), s2 = stride_of(o2, sp), sa = stride_of(a, sp),
            sb = stride_of(b, sp), sc = stride_of(c, sp);
    // The op API guarantees: inputs share one dtype, outputs share one dtype.
    dispatch_float(a.dtype(), [&](auto ta) {
        dispatch_float(o1.dtype(), [&](auto to) {
            using TI = decltype(ta);
            using TO = decltype(to);
            auto* ab = static_cast<const TI*>(a.data_ptr());
            auto* bb = static_cast<const TI*>(b.data_ptr());
            auto* cb = static_cast<const TI*>(c.data_ptr());
            auto* p1 = static_cast<TO*>(o1.data_ptr());
            auto* p2 = static_cast<TO*>(o2.data_ptr());
            for_blocks(sp.n_rows, sp.cols, [&](int64_t r, int64_t c0, int64_t c1) {
                if constexpr (std::is_same_v<TI, TO>) {
                    for_pairs(c0, c1, [&](int64_t col, int n) {
                        VecF a0, a1, b0, b1, x0, x1, r1a, r1b, r2a, r2b;
                        vload2(ab + r * sa + col, a0, a1, n);
                        vload2(bb + r * sb + col, b0, b1, n);
                        vload2(cb + r * sc + col, x0, x1, n);
                        f(a0, b0, x0, r1a, r2a);
                        f(a1, b1, x1, r1b, r2b);
                        vstore2(p1 + r * s1 + col, r1a, r1b, n);
                        vstore2(p2 + r * s2 + col, r2a, r2b, n);
                    });
                    return;
                }
                for (int64_t col = c0; col < c1; col += kLanes) {
                    int n = static_cast<int>(std::min<int64_t>(kLanes, c1 - col));
                    VecF r1, r2;
                    f(vload(ab + r * sa + col, n), vload(bb + r * sb + col, n),
                      vload(cb + r * sc + col, n), r1, r2);
                    vstore(p1 + r * s1 + col, r1, n);
                    vstore(p2 + r * s2 + col, r2, n);
                }
            });
        });
    });
}

// gelu(x) = 0.5 x (1 + tanh(u)) = x sigmoid(2u) with u = sqrt(2/pi) (x + 0.044715 x^3): one exp
// and one reciprocal. s = sigmoid(2u) from x and x^2 (clamped so the reciprocal stays finite).
// kToBf16: the result is rounded to bf16 next, so the reciprocal's estimate is enough.
template <bool kToBf16 = false>
ZS_VINLINE VecF gelu_sig(VecF x, VecF x2) {
    // t = -2u log2(e); t <= 115 keeps 1 + 2^t finite for the reciprocal (2^-115 is 2.4e-35).
    VecF t = x * vfma(x2, vset(-2.0f * kGeluK * kGeluC * kLog2e), vset(-2.0f * kGeluK * kLog2e));
    VecF d = vset(1.0f) + vexp2(vmin(vset(115.0f), t));
    return kToBf16 ? vrcp_bf16(d) : vrcp(d);
}

template <bool kToBf16 = false>
ZS_VINLINE VecF gelu_v(VecF x) {
    return x * gelu_sig<kToBf16>(x, x * x);
}

// d/dx [x s(2u)] = s + x s (1 - s) 2u'.
ZS_VINLINE VecF gelu_grad_v(VecF x) {
    VecF x2 = x * x;
    VecF s = gelu_sig(x, x2);
    VecF du2 = vfma(x2, vset(6.0f * kGeluK * kGeluC), vset(2.0f * kGeluK));
    return vfma(x * s * (vset(1.0f) - s), du2, s);
}

// Exact GELU, x Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2. erf(z) for z = |x| / sqrt 2 >= 0
// is Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7): 1 - poly(t) exp(-z^2), t = 1 / (1 + p z).
// gelu(x) = x/2 + |x|/2 erf(|x|/sqrt 2) needs no sign; the gradient Phi(x) + x phi(x) takes it
// as x / max(|x|, tiny) (0 at x = 0, where erf is 0 anyway); phi(x) = exp(-z^2) / sqrt(2 pi)
// reuses the exponential.
struct ErfParts {
    VecF erf_abs;  // erf(|x| / sqrt 2)
    VecF e;        // exp(-x^2 / 2)
    VecF abs_x;
};
ZS_VINLINE ErfParts erf_parts(VecF x) {
    const VecF ax = vmax(x, vzero() - x);
    const VecF z = ax * vset(0.70710678118654752f);
    const VecF t = vrcp(vfma(z, vset(0.3275911f), vset(1.0f)));
    VecF poly = vfma(vset(1.061405429f), t, vset(-1.453152027f));
    poly = vfma(poly, t, vset(1.421413741f));
    poly = vfma(poly, t, vset(-0.284496736f));
    poly = vfma(poly, t, vset(0.254829592f));
    poly = poly * t;
    const VecF e = vexp(vzero() - z * z);
    return {vset(1.0f) - poly * e, e, ax};
}

ZS_VINLINE VecF gelu_erf_v(VecF x) {
    const ErfParts p = erf_parts(x);
    return vset(0.5f) * vfma(p.abs_x, p.erf_abs, x);
}

ZS_VINLINE VecF gelu_erf_grad_v(VecF x) {
    const ErfParts p = erf_parts(x);
    const VecF sign = x * vrcp(vmax(p.abs_x, vset(1e-30f)));
    const VecF phi = vset(0.5f) * vfma(sign, p.erf_abs, vset(1.0f));
    return vfma(x * p.e, vset(0.3989422804014327f), phi);
}

ZS_VINLINE VecF silu_v(VecF x) { return x * vsigmoid(x); }

ZS_VINLINE VecF silu_grad_v(VecF x) {
    VecF s = vsigmoid(x);
    return s * vfma(x, vset(1.0f) - s, vset(1.0f));
}

// One softmax row with every load and store in pairs (input and output of one dtype; e is the
// f32 row of exponentials: the output row itself for f32, else a buffer of C rounded up to 32,
// written whole so that bf16's pair order survives the round trip).
// Pass 2 prefetches the next row (`next`), as LayerNorm's does.
template <class T>
void softmax_row_pairs(T* orow, float* e, const T* xr, const T* next, int64_t C) {
    auto ne = [](int n) { return std::is_same_v<T, float> ? n : 2 * kLanes; };
    VecF m0 = vset(-INFINITY), m1 = m0;
    for_pairs(0, C, [&](int64_t c, int n) {
        VecF a, b;
        vload2(xr + c, a, b, n);
        if (n < 2 * kLanes) vfill2<T>(a, b, n, -INFINITY);
        m0 = vmax(m0, a);
        m1 = vmax(m1, b);
    });
    VecF m = vset(vhmax(vmax(m0, m1)));
    VecF s0 = vzero(), s1 = vzero();
    for_pairs(0, C, [&](int64_t c, int n) {
        VecF a, b;
        vprefetch2(next + c);
        vload2(xr + c, a, b, n);
        a = vexp2((a - m) * vset(kLog2e));  // exp(-inf) = 0 for masked logits
        b = vexp2((b - m) * vset(kLog2e));
        if (n < 2 * kLanes) vfill2<T>(a, b, n, 0.0f);
        vstore2(e + c, a, b, ne(n));
        s0 = s0 + a;
        s1 = s1 + b;
    });
    VecF inv = vset(1.0f / vsum(s0 + s1));
    for_pairs(0, C, [&](int64_t c, int n) {
        VecF a, b;
        vload2(e + c, a, b, ne(n));
        vstore2(orow + c, a * inv, b * inv, n);
    });
}

}  // namespace

void CpuKernels::gelu_forward(const Tensor& out, const Tensor& x, ops::GeluKind kind) {
    switch (kind) {
        case ops::GeluKind::kTanh:
            if (out.dtype() == core::DType::bf16) {
                unary(out, x, [](VecF v) { return gelu_v<true>(v); });
            } else {
                unary(out, x, [](VecF v) { return gelu_v(v); });
            }
            return;
        case ops::GeluKind::kErf:
            unary(out, x, [](VecF v) { return gelu_erf_v(v); });
            return;
    }
}

void CpuKernels::gelu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x,
                               ops::GeluKind kind) {
    switch (kind) {
        case ops::GeluKind::kTanh:
            binary(dx, dout, x, [](VecF g, VecF xv) { return g * gelu_grad_v(xv); });
            return;
        case ops::GeluKind::kErf:
            binary(dx, dout, x, [](VecF g, VecF xv) { return g * gelu_erf_grad_v(xv); });
            return;
    }
}

void CpuKernels::silu_forward(const Tensor& out, const Tensor& x) {
    unary(out, x, [](VecF v) { return silu_v(v); });
}

void CpuKernels::silu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x) {
    binary(dx, dout, x, [](VecF g, VecF xv) { return g * silu_grad_v(xv); });
}

namespace {
ZS_VINLINE VecF swiglu_v(VecF g, VecF u) { return silu_v(g) * u; }

// binary()'s same-dtype loop for one row.
template <class T>
void swiglu_row_impl(const T* gate, const T* up, T* out, int64_t n) {
    for_pairs(0, n, [&](int64_t c, int k) {
        VecF g0, g1, u0, u1;
        vload2(gate + c, g0, g1, k);
        vload2(up + c, u0, u1, k);
        vstore2(out + c, swiglu_v(g0, u0), swiglu_v(g1, u1), k);
    });
}
}  // namespace

void swiglu_row(const float* gate, const float* up, float* out, int64_t n) {
    swiglu_row_impl(gate, up, out, n);
}
void swiglu_row(const bf16* gate, const bf16* up, bf16* out, int64_t n) {
    swiglu_row_impl(gate, up, out, n);
}

void CpuKernels::swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
    binary(out, gate, up, swiglu_v);
}

void CpuKernels::swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                                 const Tensor& gate, const Tensor& up) {
    ternary2(dgate, dup, dout, gate, up, [](VecF d, VecF g, VecF u, VecF& dg, VecF& du) {
        dg = d * u * silu_grad_v(g);
        du = d * silu_v(g);
    });
}

void CpuKernels::add(const Tensor& out, const Tensor& a, const Tensor& b) {
    binary(out, a, b, [](VecF x, VecF y) { return x + y; });
}

void CpuKernels::scale(const Tensor& out, const Tensor& a, float alpha) {
    unary(out, a, [alpha](VecF x) { return vset(alpha) * x; });
}

void CpuKernels::softmax_forward(const Tensor& out, const Tensor& x) {
    Rows rx = *ops::rows_of(x), ro = *ops::rows_of(out);
    dispatch_float(x.dtype(), [&](auto tx) {
        dispatch_float(out.dtype(), [&](auto to) {
            using TX = decltype(tx);
            using TO = decltype(to);
            const int64_t C = rx.cols;
            // Pass 1: max. Pass 2: e = exp(x - max) kept in f32 (the output row itself when it
            // is f32, else a per-thread row buffer) with its sum. Pass 3: scale. One exp per
            // element.
            for_rows(rx.n, C, [&](int64_t r) {
                thread_local std::vector<float> row;
                const TX* xr = static_cast<const TX*>(x.data_ptr()) + r * rx.stride;
                TO* orow = static_cast<TO*>(out.data_ptr()) + r * ro.stride;
                float* e;
                if constexpr (std::is_same_v<TO, float>) {
                    e = orow;
                } else {
                    size_t need =
                        static_cast<size_t>((C + 2 * kLanes - 1) / (2 * kLanes) * 2 * kLanes);
                    if (row.size() < need) row.resize(need);
                    e = row.data();
                }
                if constexpr (std::is_same_v<TX, TO>) {
                    softmax_row_pairs(orow, e, xr, xr + rx.stride, C);
                    return;
                }
                VecF mx = vset(-INFINITY);
                for (int64_t c = 0; c < C; c += kLanes) {
                    int n = static_cast<int>(std::min<int64_t>(kLanes, C - c));
                    mx = vmax(mx, vmask_fill(vload(xr + c, n), n, -INFINITY));
                }
                VecF m = vset(vhmax(mx));
                VecF sum = vzero();
                for (int64_t c = 0; c < C; c += kLanes) {
                    int n = static_cast<int>(std::min<int64_t>(kLanes, C - c));
                    VecF ev = vmask_fill(vexp(vload(xr + c, n) - m), n, 0.0f);
                    vstore(e + c, ev, n);
                    sum = sum + ev;
                }
                VecF inv = vset(1.0f / vsum(sum));
                for (int64_t c = 0; c < C; c += kLanes) {
                    int n = static_cast<int>(std::min<int64_t>(kLanes, C - c));
                    vstore(orow + c, vload(e + c, n) * inv, n);
                }
            });
        });
    });
}

void CpuKernels::softmax_backward(const Tensor& dx, const Tensor& dout, const Tensor& out) {
    Rows rx = *ops::rows_of(dx), rd = *ops::rows_of(dout), ro = *ops::rows_of(out);
    dispatch_float(out.dtype(), [&](auto t) {
        using T = decltype(t);
        const int64_t C = ro.cols;
        for_rows(ro.n, C, [&](int64_t r) {
            const T* o = static_cast<const T*>(out.data_ptr()) + r * ro.stride;
            const T* g = static_cast<const T*>(dout.data_ptr()) + r * rd.stride;
            T* d = static_cast<T*>(dx.data_ptr()) + r * rx.stride;
            VecF dot = vzero();
            for (int64_t c = 0; c < C; c += kLanes) {
                int n = static_cast<int>(std::min<int64_t>(kLanes, C - c));
                dot = vfma(vload(o + c, n), vload(g + c, n), dot);
            }
            VecF s = vset(vsum(dot));
            for (int64_t c = 0; c < C; c += kLanes) {
                int n = static_cast<int>(std::min<int64_t>(kLanes, C - c));
                vstore(d + c, vload(o + c, n) * (vload(g + c, n) - s), n);
            }
        });
    });
}

}  // namespace zs::backends::cpu
