#include "ops/reference/reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/error.h"

namespace zs::ops::reference {

using core::Shape;

DTensor::DTensor(const Shape& s, double fill)
    : shape(s), data(static_cast<size_t>(s.numel()), fill) {}

DTensor from_tensor(const core::Tensor& t) {
    // f32 holds every f32/bf16/f16 value exactly; integer tensors go through int_values.
    DTensor d(t.shape());
    if (!core::is_floating(t.dtype())) {
        std::vector<int64_t> v = int_values(t);
        for (int64_t i = 0; i < d.numel(); ++i)
            d[i] = static_cast<double>(v[static_cast<size_t>(i)]);
        return d;
    }
    core::Tensor c = t.to(core::Device::cpu()).contiguous().to(core::DType::f32);
    const float* p = c.data<float>();
    for (int64_t i = 0; i < d.numel(); ++i) d[i] = p[i];
    return d;
}

std::vector<int64_t> int_values(const core::Tensor& t) {
    core::Tensor c = t.to(core::Device::cpu()).contiguous().to(core::DType::i64);
    const int64_t* p = c.data<int64_t>();
    return std::vector<int64_t>(p, p + t.numel());
}

DTensor matmul(const DTensor& a, const DTensor& b, const MatmulOptions& o, const DTensor& c,
               const DTensor& bias) {
    int na = a.shape.ndim();
    int64_t m = o.trans_a ? a.shape[na - 1] : a.shape[na - 2];
    int64_t k = o.trans_a ? a.shape[na - 2] : a.shape[na - 1];
    int nb = b.shape.ndim();
    int64_t n = o.trans_b ? b.shape[nb - 2] : b.shape[nb - 1];
    int64_t batch = 1;
    Shape out_shape;
    for (int i = 0; i < na - 2; ++i) {
        batch *= a.shape[i];
        out_shape.push_back(a.shape[i]);
    }
    out_shape.push_back(m);
    out_shape.push_back(n);
    DTensor out(out_shape);
    bool b_batched = nb > 2;
    for (int64_t bi = 0; bi < batch; ++bi) {
        const double* A = a.data.data() + bi * m * k;
        const double* B = b.data.data() + (b_batched ? bi * k * n : 0);
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
                double s = 0;
                for (int64_t p = 0; p < k; ++p) {
                    double av = o.trans_a ? A[p * m + i] : A[i * k + p];
                    double bv = o.trans_b ? B[j * k + p] : B[p * n + j];
                    s += av * bv;
                }
                int64_t idx = bi * m * n + i * n + j;
                double r = o.alpha * s;
                if (o.beta != 0.0f) r += o.beta * c[idx];
                if (bias.numel() > 0) r += bias[j];
                out[idx] = r;
            }
        }
    }
    return out;
}

NormResult layernorm(const DTensor& x, const DTensor& w, const DTensor& b, double eps) {
    int64_t c = x.shape.back(), rows = x.numel() / c;
    NormResult r{DTensor(x.shape), DTensor(Shape{rows}), DTensor(Shape{rows})};
    for (int64_t i = 0; i < rows; ++i) {
        double mean = 0, var = 0;
        for (int64_t j = 0; j < c; ++j) mean += x[i * c + j];
        mean /= static_cast<double>(c);
        for (int64_t j = 0; j < c; ++j) var += (x[i * c + j] - mean) * (x[i * c + j] - mean);
        var /= static_cast<double>(c);
        double rstd = 1.0 / std::sqrt(var + eps);
        for (int64_t j = 0; j < c; ++j)
            r.out[i * c + j] = (x[i * c + j] - mean) * rstd * w[j] + b[j];
        r.mean[i] = mean;
        r.rstd[i] = rstd;
    }
    return r;
}

NormResult rmsnorm(const DTensor& x, const DTensor& w, double eps) {
    int64_t c = x.shape.back(), rows = x.numel() / c;
    NormResult r{DTensor(x.shape), DTensor(), DTensor(Shape{rows})};
    for (int64_t i = 0; i < rows; ++i) {
        double ss = 0;
        for (int64_t j = 0; j < c; ++j) ss += x[i * c + j] * x[i * c + j];
        double rstd = 1.0 / std::sqrt(ss / static_cast<double>(c) + eps);
        for (int64_t j = 0; j < c; ++j) r.out[i * c + j] = x[i * c + j] * rstd * w[j];
        r.rstd[i] = rstd;
    }
    return r;
}

namespace {
template <class F>
DTensor map(const DTensor& x, F f) {
    DTensor y(x.shape);
    for (int64_t i = 0; i < x.numel(); ++i) y[i] = f(x[i]);
    return y;
}
}  // namespace

DTensor gelu(const DTensor& x) {
    const double k = std::sqrt(2.0 / M_PI);
    return map(
        x, [&](double v) { return 0.5 * v * (1.0 + std::tanh(k * (v + 0.044715 * v * v * v))); });
}

DTensor gelu_erf(const DTensor& x) {
    return map(x, [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); });
}

DTensor silu(const DTensor& x) {
    return map(x, [](double v) { return v / (1.0 + std::exp(-v)); });
}

DTensor swiglu(const DTensor& gate, const DTensor& up) {
    DTensor y(gate.shape);
    for (int64_t i = 0; i < y.numel(); ++i) y[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
    return y;
}

DTensor softmax(const DTensor& x) {
    int64_t c = x.shape.back(), rows = x.numel() / c;
    DTensor y(x.shape);
    for (int64_t i = 0; i < rows; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < c; ++j) mx = std::max(mx, x[i * c + j]);
        double s = 0;
        for (int64_t j = 0; j < c; ++j) s += std::exp(x[i * c + j] - mx);
        for (int64_t j = 0; j < c; ++j) y[i * c + j] = std::exp(x[i * c + j] - mx) / s;
    }
    return y;
}

DTensor rope(const DTensor& x, const std::vector<int64_t>& positions,
             const std::vector<double>& inv_freq, RopePairs pairs, bool inverse) {
    int64_t n = x.shape[0], h = x.shape[1], d = x.shape[2];
    auto half = static_cast<int64_t>(inv_freq.size());
    DTensor y = x;
    for (int64_t t = 0; t < n; ++t) {
        for (int64_t hh = 0; hh < h; ++hh) {
            const double* src = x.data.data() + (t * h + hh) * d;
            double* dst = y.data.data() + (t * h + hh) * d;
            for (int64_t i = 0; i < half; ++i) {
                double a = static_cast<double>(positions[static_cast<size_t>(t)]) *
                           inv_freq[static_cast<size_t>(i)];
                double c = std::cos(a), s = inverse ? -std::sin(a) : std::sin(a);
                int64_t i0 = pairs == RopePairs::half ? i : 2 * i;
                int64_t i1 = pairs == RopePairs::half ? i + half : 2 * i + 1;
                dst[i0] = src[i0] * c - src[i1] * s;
                dst[i1] = src[i1] * c + src[i0] * s;
            }
        }
    }
    return y;
}

AttentionResult attention(const DTensor& q, const DTensor& k, const DTensor& v,
                          const AttentionOptions& opts) {
    int64_t B = q.shape[0], Tq = q.shape[1], NH = q.shape[2], HS = q.shape[3];
    int64_t Tk = k.shape[1], NKV = k.shape[2];
    double scale = opts.scale != 0.0f ? opts.scale : 1.0 / std::sqrt(static_cast<double>(HS));
    AttentionResult r{DTensor(q.shape), DTensor(Shape{B, NH, Tq})};
    std::vector<double> p(static_cast<size_t>(Tk));
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t h = 0; h < NH; ++h) {
            int64_t kh = h / (NH / NKV);
            for (int64_t i = 0; i < Tq; ++i) {
                int64_t last = opts.causal ? i + (Tk - Tq) : Tk - 1;  // inclusive
                // Sliding window: the `window` keys up to and including the query's own.
                int64_t first = opts.window > 0 ? std::max<int64_t>(0, last - opts.window + 1) : 0;
                if (opts.window > 0 && last < 0) first = 0;
                double mx = -INFINITY;
                for (int64_t j = 0; j < Tk; ++j) {
                    if (j > last || j < first) {
                        p[static_cast<size_t>(j)] = -INFINITY;
                        continue;
                    }
                    double s = 0;
                    for (int64_t d = 0; d < HS; ++d) {
                        s += q[((b * Tq + i) * NH + h) * HS + d] *
                             k[((b * Tk + j) * NKV + kh) * HS + d];
                    }
                    p[static_cast<size_t>(j)] = s * scale;
                    mx = std::max(mx, s * scale);
                }
                double sum = 0;
                for (int64_t j = first; j <= std::min(last, Tk - 1); ++j) {
                    sum += std::exp(p[static_cast<size_t>(j)] - mx);
                }
                // A row with no visible key (Tq > Tk, causal) outputs zeros and lse = -inf.
                r.lse[(b * NH + h) * Tq + i] = last < 0 ? -INFINITY : mx + std::log(sum);
                for (int64_t d = 0; d < HS; ++d) {
                    double o = 0;
                    for (int64_t j = first; j <= std::min(last, Tk - 1); ++j) {
                        o += std::exp(p[static_cast<size_t>(j)] - mx) / sum *
                             v[((b * Tk + j) * NKV + kh) * HS + d];
                    }
                    r.out[((b * Tq + i) * NH + h) * HS + d] = last < 0 ? 0.0 : o;
                }
            }
        }
    }
    return r;
}

DTensor paged_attention(const DTensor& q, const DTensor& k_cache, const DTensor& v_cache,
                        std::span<const SeqSlice> seqs, const AttentionOptions& opts) {
    const int64_t NH = q.shape[1], HS = q.shape[2];
    const int64_t NKV = k_cache.shape[1], bs = k_cache.shape[2], row = NKV * HS;
    DTensor out(q.shape);
    for (const SeqSlice& s : seqs) {
        const int64_t T = s.pos + s.n_tokens;
        DTensor k(Shape{1, T, NKV, HS}, NAN), v(Shape{1, T, NKV, HS}, NAN),
            qs(Shape{1, s.n_tokens, NH, HS});
        for (int64_t p = 0; p < T; ++p) {
            const BlockId b = s.blocks[static_cast<size_t>(p / bs)];
            if (b == kNoBlock) continue;
            for (int64_t h = 0; h < NKV; ++h) {  // head-major blocks [NKV, bs, HS]
                const int64_t src = ((b * NKV + h) * bs + p % bs) * HS;
                std::copy_n(k_cache.data.begin() + src, HS, k.data.begin() + p * row + h * HS);
                std::copy_n(v_cache.data.begin() + src, HS, v.data.begin() + p * row + h * HS);
            }
        }
        std::copy_n(q.data.begin() + s.start * NH * HS, s.n_tokens * NH * HS, qs.data.begin());
        const DTensor o = attention(qs, k, v, opts).out;
        std::copy_n(o.data.begin(), o.numel(), out.data.begin() + s.start * NH * HS);
    }
    return out;
}

DTensor embedding(const std::vector<int64_t>& ids, const Shape& ids_shape, const DTensor& table) {
    int64_t c = table.shape[1];
    Shape s = ids_shape;
    s.push_back(c);
    DTensor out(s);
    for (size_t i = 0; i < ids.size(); ++i) {
        for (int64_t j = 0; j < c; ++j)
            out[static_cast<int64_t>(i) * c + j] = table[ids[i] * c + j];
    }
    return out;
}

CrossEntropyResult cross_entropy(const DTensor& logits, const std::vector<int64_t>& targets,
                                 const CrossEntropyOptions& opts) {
    int64_t n = logits.shape[0], v = logits.shape[1];
    CrossEntropyResult r{DTensor(Shape{n}), DTensor(logits.shape), 0};
    DTensor p = softmax(logits);
    for (int64_t i = 0; i < n; ++i) {
        int64_t t = targets[static_cast<size_t>(i)];
        if (t == opts.ignore_index) continue;
        ++r.count;
        r.losses[i] = -std::log(p[i * v + t]);
        for (int64_t j = 0; j < v; ++j) {
            r.dlogits[i * v + j] = (p[i * v + j] - (j == t ? 1.0 : 0.0)) * opts.grad_scale;
        }
    }
    return r;
}

RouterResult topk_router(const DTensor& logits, const RouterOptions& opts) {
    int64_t n = logits.shape[0], e = logits.shape[1], k = opts.k;
    RouterResult r{DTensor(Shape{n, k}), softmax(logits),
                   std::vector<int64_t>(static_cast<size_t>(n * k))};
    std::vector<int64_t> order(static_cast<size_t>(e));
    for (int64_t i = 0; i < n; ++i) {
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
            return r.probs[i * e + a] > r.probs[i * e + b];
        });
        for (int64_t j = 0; j < k; ++j)
            r.indices[static_cast<size_t>(i * k + j)] = order[static_cast<size_t>(j)];
    }
    r.weights = router_weights_fixed(logits, r.indices, opts);
    return r;
}

DTensor router_weights_fixed(const DTensor& logits, const std::vector<int64_t>& indices,
                             const RouterOptions& opts) {
    int64_t n = logits.shape[0], e = logits.shape[1], k = opts.k;
    DTensor p = softmax(logits);
    DTensor w(Shape{n, k});
    for (int64_t i = 0; i < n; ++i) {
        double s = 0;
        for (int64_t j = 0; j < k; ++j) s += p[i * e + indices[static_cast<size_t>(i * k + j)]];
        for (int64_t j = 0; j < k; ++j) {
            double pj = p[i * e + indices[static_cast<size_t>(i * k + j)]];
            w[i * k + j] = opts.renormalize ? pj / s : pj;
        }
    }
    return w;
}

}  // namespace zs::ops::reference
