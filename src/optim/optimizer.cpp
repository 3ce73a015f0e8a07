#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <omp.h>

#include "base/error.h"
#include "base/simd.h"
#include "core/half.h"

namespace zs::optim {

const char* to_string(Kind k) {
    switch (k) {
        case Kind::adamw:
            return "AdamW";
        case Kind::adam:
            return "Adam";
        case Kind::sgd:
            return "SGD";
        case Kind::lion:
            return "Lion";
        case Kind::adagrad:
            return "Adagrad";
        case Kind::lamb:
            return "Lamb";
    }
    return "?";
}

Optimizer::Optimizer(const Options& o) : o_(o) {
    ZS_CHECK_T(ConfigError, o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1,
               "optimizer betas must be in [0, 1), got ({}, {})", o.beta1, o.beta2);
    ZS_CHECK_T(ConfigError, o.eps >= 0, "optimizer eps must be >= 0, got {}", o.eps);
    if (o.kind == Kind::lamb) {
        ZS_CHECK_T(ConfigError, o.min_coeff >= 0 && o.min_coeff <= o.max_coeff,
                   "Lamb needs 0 <= min_coeff <= max_coeff, got min_coeff {} and max_coeff {}",
                   o.min_coeff, o.max_coeff);
    }
}

int Optimizer::n_states() const {
    switch (o_.kind) {
        case Kind::adamw:
        case Kind::adam:
        case Kind::lamb:
            return 2;
        case Kind::lion:
        case Kind::adagrad:
            return 1;
        case Kind::sgd:
            return o_.momentum != 0.0f ? 1 : 0;
    }
    return 0;
}

namespace {

// A unit of work: elements [begin, end) of segment `seg`.
struct Chunk {
    int seg;
    int64_t begin, end;
};

constexpr int64_t kChunk = 16384;

std::vector<Chunk> chunks_of(std::span<const Segment> segs) {
    std::vector<Chunk> c;
    for (size_t s = 0; s < segs.size(); ++s) {
        for (int64_t b = 0; b < segs[s].n; b += kChunk) {
            c.push_back({static_cast<int>(s), b, std::min(segs[s].n, b + kChunk)});
        }
    }
    return c;
}

// Write the compute copy of master[i0, i1).
void write_compute(const Segment& s, int64_t i0, int64_t i1) {
    if (s.compute == nullptr) return;
    const float* m = s.master + i0;
    auto n = static_cast<size_t>(i1 - i0);
    switch (s.compute_dtype) {
        case core::DType::f32:
            std::copy(m, m + n, static_cast<float*>(s.compute) + i0);
            return;
        case core::DType::bf16:
            core::convert_f32_to_bf16(static_cast<core::bf16*>(s.compute) + i0, m, n);
            return;
        case core::DType::f16:
            core::convert_f32_to_f16(static_cast<core::f16*>(s.compute) + i0, m, n);
            return;
        case core::DType::i8:
        case core::DType::i32:
        case core::DType::i64:
            ZS_ASSERT(false, "compute copies are float");
    }
}

// AdamW / Adam over [i0, i1): PyTorch's formulas, f32 arithmetic.
//   adamw: p -= lr * wd * p;  adam: g += wd * p
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
void adam_range(const Segment& s, int64_t i0, int64_t i1, const Options& o, float lr, float gs,
                float step_size, float inv_sqrt_bc2, bool decoupled) {
    const float wd = s.decay ? o.weight_decay : 0.0f;
    const float b1 = o.beta1, b2 = o.beta2, eps = o.eps;
    const float decay_mul = decoupled ? 1.0f - lr * wd : 1.0f;
    const float l2 = decoupled ? 0.0f : wd;
    float* p = s.master;
    const float* g = s.grad;
    float* m = s.state0;
    float* v = s.state1;
    int64_t i = i0;
#if defined(__AVX512F__)
    const __m512 vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2), vc1 = _mm512_set1_ps(1 - b1),
                 vc2 = _mm512_set1_ps(1 - b2), vgs = _mm512_set1_ps(gs), vl2 = _mm512_set1_ps(l2),
                 vdm = _mm512_set1_ps(decay_mul), vss = _mm512_set1_ps(step_size),
                 vib = _mm512_set1_ps(inv_sqrt_bc2), veps = _mm512_set1_ps(eps);
    for (; i + 16 <= i1; i += 16) {
        __m512 pv = _mm512_loadu_ps(p + i);
        __m512 gv = _mm512_mul_ps(_mm512_loadu_ps(g + i), vgs);
        gv = _mm512_fmadd_ps(vl2, pv, gv);
        pv = _mm512_mul_ps(pv, vdm);
        __m512 mv = _mm512_fmadd_ps(vb1, _mm512_loadu_ps(m + i), _mm512_mul_ps(vc1, gv));
        __m512 vv =
            _mm512_fmadd_ps(vb2, _mm512_loadu_ps(v + i), _mm512_mul_ps(vc2, _mm512_mul_ps(gv, gv)));
        __m512 den = _mm512_fmadd_ps(_mm512_sqrt_ps(vv), vib, veps);
        pv = _mm512_sub_ps(pv, _mm512_mul_ps(vss, _mm512_div_ps(mv, den)));
        _mm512_storeu_ps(m + i, mv);
        _mm512_storeu_ps(v + i, vv);
        _mm512_storeu_ps(p + i, pv);
    }
#endif
    // The tail rounds exactly as the vector body (the same fused multiply-adds), so an element's
    // update does not depend on where a segment starts: the offloaded step, which cuts segments
    // at sub-group boundaries, is bit for bit the in-memory one.
    for (; i < i1; ++i) {
        float gv = std::fma(l2, p[i], g[i] * gs);
        float pv = p[i] * decay_mul;
        float mv = std::fma(b1, m[i], (1 - b1) * gv);
        float vv = std::fma(b2, v[i], (1 - b2) * (gv * gv));
        float den = std::fma(std::sqrt(vv), inv_sqrt_bc2, eps);
        p[i] = pv - step_size * (mv / den);
        m[i] = mv;
        v[i] = vv;
    }
}

// SGD (torch): g += wd p; buf = momentum buf + g (first step: buf = g); g = nesterov ? g + mu buf
// : buf; p -= lr g.
template <bool First, bool Nesterov>
void sgd_momentum(float* __restrict p, const float* __restrict gr, float* __restrict buf,
                  int64_t i0, int64_t i1, float lr, float gs, float wd, float mu) {
    for (int64_t i = i0; i < i1; ++i) {
        float g = gr[i] * gs + wd * p[i];
        float b = First ? g : mu * buf[i] + g;
        buf[i] = b;
        p[i] -= lr * (Nesterov ? g + mu * b : b);
    }
}

void sgd_range(const Segment& s, int64_t i0, int64_t i1, const Options& o, float lr, float gs,
               bool first) {
    const float wd = s.decay ? o.weight_decay : 0.0f;
    const float mu = o.momentum;
    float* p = s.master;
    const float* gr = s.grad;
    // Branches hoisted out of the element loops so each loop vectorises.
    if (mu == 0.0f) {
        for (int64_t i = i0; i < i1; ++i) p[i] -= lr * (gr[i] * gs + wd * p[i]);
    } else if (first) {
        if (o.nesterov)
            sgd_momentum<true, true>(p, gr, s.state0, i0, i1, lr, gs, wd, mu);
        else
            sgd_momentum<true, false>(p, gr, s.state0, i0, i1, lr, gs, wd, mu);
    } else {
        if (o.nesterov)
            sgd_momentum<false, true>(p, gr, s.state0, i0, i1, lr, gs, wd, mu);
        else
            sgd_momentum<false, false>(p, gr, s.state0, i0, i1, lr, gs, wd, mu);
    }
}

// Lion (lion-pytorch): p *= 1 - lr wd; c = b1 m + (1 - b1) g; p -= lr sign(c);
// m = b2 m + (1 - b2) g.
void lion_range(const Segment& s, int64_t i0, int64_t i1, const Options& o, float lr, float gs) {
    const float wd = s.decay ? o.weight_decay : 0.0f;
    for (int64_t i = i0; i < i1; ++i) {
        float g = s.grad[i] * gs;
        float c = o.beta1 * s.state0[i] + (1 - o.beta1) * g;
        float p = s.master[i] * (1 - lr * wd);
        float sg = c > 0 ? 1.0f : (c < 0 ? -1.0f : 0.0f);
        s.master[i] = p - lr * sg;
        s.state0[i] = o.beta2 * s.state0[i] + (1 - o.beta2) * g;
    }
}

// Adagrad (torch.optim.Adagrad, DeepSpeedCPUAdagrad): g += wd p; sum += g^2;
// p -= clr g / (sqrt(sum) + eps), clr = lr / (1 + (step - 1) lr_decay).
void adagrad_range(const Segment& s, int64_t i0, int64_t i1, const Options& o, float clr,
                   float gs) {
    const float wd = s.decay ? o.weight_decay : 0.0f;
    float* __restrict p = s.master;
    const float* __restrict gr = s.grad;
    float* __restrict sum = s.state0;
    for (int64_t i = i0; i < i1; ++i) {
        const float g = gr[i] * gs + wd * p[i];
        const float acc = sum[i] + g * g;
        sum[i] = acc;
        p[i] -= clr * g / (std::sqrt(acc) + o.eps);
    }
}

// LAMB as DeepSpeed's FusedLamb computes it, per parameter tensor (lamb_cuda_kernel_part1 and
// part3 in csrc/lamb/fused_lamb_cuda_kernel.cu; step_size in fused_lamb_cuda() there):
//   g = grad * grad_scale        (FusedLamb divides by its combined scale, the inverse of ours)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   u = m / (sqrt(v) + eps) + wd w      (eps_inside_sqrt: m / sqrt(v + eps) + wd w)
//   ratio = clamp(||w|| / ||u||, min_coeff, max_coeff), but 1 when ||w|| or ||u|| is 0
//   w -= step_size * ratio * u,  step_size = lr sqrt(1 - b2^t) / (1 - b1^t)  (or lr, without
//   bias correction)
// NOTE(lamb): u uses the RAW moments, and eps is added to sqrt of the raw v (FusedLamb's default
// eps_mode 1, "eps outside square root"). Bias correction is only the scalar in step_size, outside
// the trust ratio, so unlike the LAMB paper (whose ratio of bias-corrected terms would cancel it)
// it scales the step. Weight decay is part of u: it enters ||u|| and is scaled by the ratio. ||w||
// is taken before the update. The clamp applies max_coeff first, then min_coeff.
inline float lamb_denom(float v, float eps, bool inside) {
    return inside ? std::sqrt(v + eps) : std::sqrt(v) + eps;
}

#if defined(__AVX512F__)
// a += x^2 in double, x's 16 lanes split over two 8-lane accumulators.
inline void add_squares_pd(__m512 x, __m512d& a0, __m512d& a1) {
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    a0 = _mm512_fmadd_pd(lo, lo, a0);
    a1 = _mm512_fmadd_pd(hi, hi, a1);
}

inline __m512 lamb_denom_ps(__m512 v, __m512 eps, bool inside) {
    return inside ? _mm512_sqrt_ps(_mm512_add_ps(v, eps)) : _mm512_add_ps(_mm512_sqrt_ps(v), eps);
}
#endif

// Phase 1 over [i0, i1): moments, and the sums of w^2 and u^2 (double).
void lamb_moments_range(const Segment& s, int64_t i0, int64_t i1, const Options& o, float gs,
                        double& w_sq, double& u_sq) {
    const float wd = s.decay ? o.weight_decay : 0.0f;
    const float b1 = o.beta1, b2 = o.beta2, eps = o.eps;
    const bool inside = o.eps_inside_sqrt;
    const float* p = s.master;
    const float* g = s.grad;
    float* m = s.state0;
    float* v = s.state1;
    double sw = 0, su = 0;
    int64_t i = i0;
#if defined(__AVX512F__)
    const __m512 vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2), vc1 = _mm512_set1_ps(1 - b1),
                 vc2 = _mm512_set1_ps(1 - b2), vgs = _mm512_set1_ps(gs), vwd = _mm512_set1_ps(wd),
                 veps = _mm512_set1_ps(eps);
    __m512d aw0 = _mm512_setzero_pd(), aw1 = _mm512_setzero_pd(), au0 = _mm512_setzero_pd(),
            au1 = _mm512_setzero_pd();
    for (; i + 16 <= i1; i += 16) {
        __m512 pv = _mm512_loadu_ps(p + i);
        __m512 gv = _mm512_mul_ps(_mm512_loadu_ps(g + i), vgs);
        __m512 mv = _mm512_fmadd_ps(vb1, _mm512_loadu_ps(m + i), _mm512_mul_ps(vc1, gv));
        __m512 vv =
            _mm512_fmadd_ps(vb2, _mm512_loadu_ps(v + i), _mm512_mul_ps(vc2, _mm512_mul_ps(gv, gv)));
        __m512 uv = _mm512_fmadd_ps(vwd, pv, _mm512_div_ps(mv, lamb_denom_ps(vv, veps, inside)));
        _mm512_storeu_ps(m + i, mv);
        _mm512_storeu_ps(v + i, vv);
        add_squares_pd(pv, aw0, aw1);
        add_squares_pd(uv, au0, au1);
    }
    sw = _mm512_reduce_add_pd(_mm512_add_pd(aw0, aw1));
    su = _mm512_reduce_add_pd(_mm512_add_pd(au0, au1));
#endif
    for (; i < i1; ++i) {
        const float gv = g[i] * gs;
        const float mv = b1 * m[i] + (1 - b1) * gv;
        const float vv = b2 * v[i] + (1 - b2) * (gv * gv);
        const float uv = mv / lamb_denom(vv, eps, inside) + wd * p[i];
        m[i] = mv;
        v[i] = vv;
        sw += static_cast<double>(p[i]) * p[i];
        su += static_cast<double>(uv) * uv;
    }
    w_sq = sw;
    u_sq = su;
}

// Phase 2 over [i0, i1): w -= coef * u, coef = step_size * ratio; u recomputed from the stored
// moments (as FusedLamb's part3 does) rather than kept in a third buffer.
void lamb_apply_range(const Segment& s, int64_t i0, int64_t i1, const Options& o, float coef) {
    const float wd = s.decay ? o.weight_decay : 0.0f;
    const float eps = o.eps;
    const bool inside = o.eps_inside_sqrt;
    float* p = s.master;
    const float* m = s.state0;
    const float* v = s.state1;
    int64_t i = i0;
#if defined(__AVX512F__)
    const __m512 vwd = _mm512_set1_ps(wd), veps = _mm512_set1_ps(eps), vcoef = _mm512_set1_ps(coef);
    for (; i + 16 <= i1; i += 16) {
        __m512 pv = _mm512_loadu_ps(p + i);
        __m512 den = lamb_denom_ps(_mm512_loadu_ps(v + i), veps, inside);
        __m512 uv = _mm512_fmadd_ps(vwd, pv, _mm512_div_ps(_mm512_loadu_ps(m + i), den));
        _mm512_storeu_ps(p + i, _mm512_sub_ps(pv, _mm512_mul_ps(vcoef, uv)));
    }
#endif
    for (; i < i1; ++i) {
        const float uv = m[i] / lamb_denom(v[i], eps, inside) + wd * p[i];
        p[i] = p[i] - coef * uv;
    }
}

// FusedLamb's lamb_coeff: ||w|| / ||u|| clamped, or 1 when either norm is 0 (a zero-initialised
// tensor, or no update at all) — kernel part3: `if (reg_w != 0 && reg_u != 0)`.
float lamb_ratio(double w_sq, double u_sq, const Options& o) {
    const double wn = std::sqrt(w_sq), un = std::sqrt(u_sq);
    if (wn == 0 || un == 0) return 1.0f;
    double r = wn / un;
    if (r > o.max_coeff) r = o.max_coeff;
    if (r < o.min_coeff) r = o.min_coeff;
    return static_cast<float>(r);
}

void check_segments(std::span<const Segment> segments, int n_states) {
    for (const Segment& s : segments) {
        ZS_ASSERT(s.master && s.grad, "segment without master or grad");
        ZS_ASSERT(n_states < 1 || s.state0, "segment without optimizer state 0");
        ZS_ASSERT(n_states < 2 || s.state1, "segment without optimizer state 1");
    }
}

void check_params(std::span<const Segment> segments, size_t n_sums) {
    for (const Segment& s : segments) {
        ZS_ASSERT(s.param >= 0 && 2 * static_cast<size_t>(s.param) + 1 < n_sums,
                  "Lamb segment with tensor index {} outside the {} norm sums", s.param, n_sums);
    }
}

}  // namespace

void Optimizer::lamb_moments(std::span<const Segment> segments, float grad_scale,
                             std::span<double> sq_norms) const {
    ZS_ASSERT(o_.kind == Kind::lamb, "lamb_moments on {}", to_string(o_.kind));
    check_segments(segments, n_states());
    check_params(segments, sq_norms.size());
    std::vector<Chunk> chunks = chunks_of(segments);
    const auto n = static_cast<int64_t>(chunks.size());
    std::vector<double> part(2 * chunks.size(), 0.0);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < n; ++k) {
        const auto kk = static_cast<size_t>(k);
        const Chunk& c = chunks[kk];
        lamb_moments_range(segments[static_cast<size_t>(c.seg)], c.begin, c.end, o_, grad_scale,
                           part[2 * kk], part[2 * kk + 1]);
    }
    for (size_t k = 0; k < chunks.size(); ++k) {  // fixed order: deterministic
        const auto t = static_cast<size_t>(segments[static_cast<size_t>(chunks[k].seg)].param);
        sq_norms[2 * t] += part[2 * k];
        sq_norms[2 * t + 1] += part[2 * k + 1];
    }
}

void Optimizer::lamb_apply(std::span<const Segment> segments, float lr, int64_t step,
                           std::span<const double> sq_norms) const {
    ZS_ASSERT(o_.kind == Kind::lamb, "lamb_apply on {}", to_string(o_.kind));
    ZS_CHECK(step >= 1, "optimizer step counts from 1 (got {})", step);
    check_segments(segments, n_states());
    check_params(segments, sq_norms.size());
    const auto t = static_cast<double>(step);
    const double step_size = o_.bias_correction ? lr * std::sqrt(1.0 - std::pow(o_.beta2, t)) /
                                                      (1.0 - std::pow(o_.beta1, t))
                                                : lr;
    std::vector<float> coef(segments.size());
    for (size_t i = 0; i < segments.size(); ++i) {
        const auto p = static_cast<size_t>(segments[i].param);
        coef[i] =
            static_cast<float>(step_size) * lamb_ratio(sq_norms[2 * p], sq_norms[2 * p + 1], o_);
    }
    std::vector<Chunk> chunks = chunks_of(segments);
    const auto n = static_cast<int64_t>(chunks.size());
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < n; ++k) {
        const Chunk& c = chunks[static_cast<size_t>(k)];
        const Segment& s = segments[static_cast<size_t>(c.seg)];
        lamb_apply_range(s, c.begin, c.end, o_, coef[static_cast<size_t>(c.seg)]);
        write_compute(s, c.begin, c.end);
    }
}

void Optimizer::step(std::span<const Segment> segments, float lr, int64_t step,
                     float grad_scale) const {
    ZS_CHECK(step >= 1, "optimizer step counts from 1 (got {})", step);
    if (o_.kind == Kind::lamb) {
        // Both phases, no reduction between them: runs sharing a `param` index form one tensor,
        // each run with -1 is a tensor of its own.
        std::vector<Segment> segs(segments.begin(), segments.end());
        int n_tensors = 0;
        for (const Segment& s : segs) n_tensors = std::max(n_tensors, s.param + 1);
        for (Segment& s : segs) {
            if (s.param < 0) s.param = n_tensors++;
        }
        std::vector<double> sq(2 * static_cast<size_t>(n_tensors), 0.0);
        lamb_moments(segs, grad_scale, sq);
        lamb_apply(segs, lr, step, sq);
        return;
    }
    check_segments(segments, n_states());
    std::vector<Chunk> chunks = chunks_of(segments);
    const auto t = static_cast<double>(step);
    const float bc1 = o_.bias_correction ? static_cast<float>(1.0 - std::pow(o_.beta1, t)) : 1.0f;
    const float bc2 = o_.bias_correction ? static_cast<float>(1.0 - std::pow(o_.beta2, t)) : 1.0f;
    const float step_size = lr / bc1;
    const float inv_sqrt_bc2 = 1.0f / std::sqrt(bc2);
    const auto n = static_cast<int64_t>(chunks.size());
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < n; ++k) {
        const Chunk& c = chunks[static_cast<size_t>(k)];
        const Segment& s = segments[static_cast<size_t>(c.seg)];
        switch (o_.kind) {
            case Kind::adamw:
            case Kind::adam:
                adam_range(s, c.begin, c.end, o_, lr, grad_scale, step_size, inv_sqrt_bc2,
                           o_.kind == Kind::adamw);
                break;
            case Kind::sgd:
                sgd_range(s, c.begin, c.end, o_, lr, grad_scale, step == 1);
                break;
            case Kind::lion:
                lion_range(s, c.begin, c.end, o_, lr, grad_scale);
                break;
            case Kind::adagrad:
                adagrad_range(s, c.begin, c.end, o_,
                              lr / (1.0f + static_cast<float>(step - 1) * o_.lr_decay), grad_scale);
                break;
            case Kind::lamb:
                ZS_ASSERT(false, "Lamb runs in two phases (handled above)");
        }
        write_compute(s, c.begin, c.end);
    }
}

double sum_squares(std::span<const Segment> segments) {
    std::vector<Chunk> chunks = chunks_of(segments);
    const auto n = static_cast<int64_t>(chunks.size());
    std::vector<double> part(chunks.size(), 0.0);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < n; ++k) {
        const Chunk& c = chunks[static_cast<size_t>(k)];
        const float* g = segments[static_cast<size_t>(c.seg)].grad;
        double acc = 0;
        int64_t i = c.begin;
#if defined(__AVX512F__)
        __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
        for (; i + 16 <= c.end; i += 16) {
            __m512 x = _mm512_loadu_ps(g + i);
            __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
            __m512d hi =
                _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
            a0 = _mm512_fmadd_pd(lo, lo, a0);
            a1 = _mm512_fmadd_pd(hi, hi, a1);
        }
        acc = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
#endif
        for (; i < c.end; ++i) acc += static_cast<double>(g[i]) * g[i];
        part[static_cast<size_t>(k)] = acc;
    }
    double total = 0;
    for (double p : part) total += p;  // fixed order: deterministic
    return total;
}

ops::AdamStep Optimizer::adam_step(float lr, int64_t step, float grad_scale, bool decay) const {
    ZS_ASSERT(o_.kind == Kind::adamw || o_.kind == Kind::adam, "adam_step for {}",
              to_string(o_.kind));
    ZS_CHECK(step >= 1, "optimizer step counts from 1 (got {})", step);
    // The expressions of step() and adam_range(), so the device update sees the same scalars.
    const auto t = static_cast<double>(step);
    const float bc1 = o_.bias_correction ? static_cast<float>(1.0 - std::pow(o_.beta1, t)) : 1.0f;
    const float bc2 = o_.bias_correction ? static_cast<float>(1.0 - std::pow(o_.beta2, t)) : 1.0f;
    ops::AdamStep a;
    a.lr = lr;
    a.beta1 = o_.beta1;
    a.beta2 = o_.beta2;
    a.eps = o_.eps;
    a.weight_decay = decay ? o_.weight_decay : 0.0f;
    a.decoupled = o_.kind == Kind::adamw;
    a.step_size = lr / bc1;
    a.inv_sqrt_bc2 = 1.0f / std::sqrt(bc2);
    a.grad_scale = grad_scale;
    return a;
}

bool all_finite(std::span<const Segment> segments) {
    std::vector<Chunk> chunks = chunks_of(segments);
    const auto n = static_cast<int64_t>(chunks.size());
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad)
    for (int64_t k = 0; k < n; ++k) {
        const Chunk& c = chunks[static_cast<size_t>(k)];
        const float* g = segments[static_cast<size_t>(c.seg)].grad;
        float acc = 0.0f;
        for (int64_t i = c.begin; i < c.end; ++i) acc += g[i] * 0.0f;  // NaN or Inf poison it
        bad |= !std::isfinite(acc) ? 1 : 0;
    }
    return bad == 0;
}

}  // namespace zs::optim
