// The quantized decode GEMV (qgemv.h): Q8 activations, the portable scalar dot products, the
// run-time choice of kernel and the threaded loop over output rows.
#include "backends/cpu/qgemv.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/gemv.h"
#include "backends/cpu/norm_row.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/qdot.h"
#include "base/error.h"
#include "core/half.h"

namespace zs::backends::cpu {

using core::QType;

namespace {

float f16_at(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return core::f16_to_f32(core::f16{h});
}

// Chunk j (32 elements) of block x as qdot.h reads it: codes u[32], per-half scale and offset.
struct Chunk {
    uint8_t u[32];
    float sc[2], mn[2];
};

void set_uniform(Chunk& c, float sc, float mn) {
    c.sc[0] = c.sc[1] = sc;
    c.mn[0] = c.mn[1] = mn;
}

void nibbles(const uint8_t* qs, uint8_t* u) {
    for (int i = 0; i < 16; ++i) {
        u[i] = qs[i] & 0x0F;
        u[i + 16] = static_cast<uint8_t>(qs[i] >> 4);
    }
}

void high_bits(const uint8_t* qh, uint8_t* u) {
    uint32_t h;
    std::memcpy(&h, qh, 4);
    for (int i = 0; i < 32; ++i) u[i] = static_cast<uint8_t>(u[i] | (((h >> i) & 1u) << 4));
}

void scale_min_k4(const uint8_t* s, int j, int* sc, int* mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

void unpack(QType t, const uint8_t* x, int j, Chunk& c) {
    switch (t) {
        case QType::q8_0: {
            const float d = f16_at(x);
            for (int i = 0; i < 32; ++i) c.u[i] = static_cast<uint8_t>(x[2 + i] ^ 0x80);
            return set_uniform(c, d, -128.0f * d);
        }
        case QType::q4_0: {
            const float d = f16_at(x);
            nibbles(x + 2, c.u);
            return set_uniform(c, d, -8.0f * d);
        }
        case QType::q4_1:
            nibbles(x + 4, c.u);
            return set_uniform(c, f16_at(x), f16_at(x + 2));
        case QType::q5_0: {
            const float d = f16_at(x);
            nibbles(x + 6, c.u);
            high_bits(x + 2, c.u);
            return set_uniform(c, d, -16.0f * d);
        }
        case QType::q5_1:
            nibbles(x + 8, c.u);
            high_bits(x + 4, c.u);
            return set_uniform(c, f16_at(x), f16_at(x + 2));
        case QType::q4_k:
        case QType::q5_k: {
            const bool five = t == QType::q5_k;
            const uint8_t* q = x + (five ? 48 : 16) + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; ++l) {
                int v = (q[l] >> shift) & 0x0F;
                if (five) v |= ((x[16 + l] >> j) & 1) << 4;
                c.u[l] = static_cast<uint8_t>(v);
            }
            int sc, mn;
            scale_min_k4(x + 4, j, &sc, &mn);
            return set_uniform(c, f16_at(x) * static_cast<float>(sc),
                               -f16_at(x + 2) * static_cast<float>(mn));
        }
        case QType::q6_k: {
            core::q6_k_codes(x, j, c.u);
            const auto* sc = reinterpret_cast<const int8_t*>(x + 192);
            const float d = f16_at(x + 208);
            for (int half = 0; half < 2; ++half) {
                c.sc[half] = d * static_cast<float>(sc[2 * j + half]);  // 8 (j / 4) + 2 (j % 4)
                c.mn[half] = -32.0f * c.sc[half];
            }
            return;
        }
        case QType::q8_k: {
            float d;
            std::memcpy(&d, x, 4);
            for (int i = 0; i < 32; ++i) c.u[i] = static_cast<uint8_t>(x[4 + 32 * j + i] ^ 0x80);
            return set_uniform(c, d, -128.0f * d);
        }
    }
}

QuantKernel from_env() {
    const char* e = std::getenv("ZS_QUANT_KERNEL");
    if (e == nullptr || *e == '\0') return QuantKernel::best;
    const std::string_view v(e);
    if (v == "scalar") return QuantKernel::scalar;
    if (v == "avx512_vnni") return QuantKernel::avx512_vnni;
    if (v == "avx2") return QuantKernel::avx2;
    ZS_THROW(ConfigError, "ZS_QUANT_KERNEL: '{}' is not a kernel (scalar, avx2 or avx512_vnni)", v);
}

bool cpu_has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

bool cpu_has_vnni() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni");
}

}  // namespace

void qdot_rows_scalar(QType t, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k,
                      const QActRow* acts, int m, float* res) {
    const core::QTypeTraits& tr = core::qtype_traits(t);
    const int64_t chunks = tr.block_size / 32;
    for (int64_t r = 0; r < rows; ++r) {
        for (int i = 0; i < m; ++i) res[r * m + i] = 0.0f;
        const uint8_t* row = w + r * row_bytes;
        for (int64_t c = 0; c < k / 32; ++c) {
            Chunk ch;
            unpack(t, row + (c / chunks) * tr.block_bytes, static_cast<int>(c % chunks), ch);
            for (int i = 0; i < m; ++i) {
                const QActRow& a = acts[i];
                const int8_t* q = a.q + 32 * c;
                int32_t p0 = 0, p1 = 0;
                for (int l = 0; l < 16; ++l) p0 += ch.u[l] * q[l];
                for (int l = 16; l < 32; ++l) p1 += ch.u[l] * q[l];
                res[r * m + i] += a.d[c] * (ch.sc[0] * static_cast<float>(p0) +
                                            ch.sc[1] * static_cast<float>(p1) +
                                            ch.mn[0] * static_cast<float>(a.s0[c]) +
                                            ch.mn[1] * static_cast<float>(a.s1[c]));
            }
        }
    }
}

const char* to_string(QuantKernel k) {
    switch (k) {
        case QuantKernel::best:
            return "best";
        case QuantKernel::scalar:
            return "scalar";
        case QuantKernel::avx512_vnni:
            return "avx512_vnni";
        case QuantKernel::avx2:
            return "avx2";
    }
    return "?";
}

QuantKernel resolve(QuantKernel k) {
    static const bool vnni = cpu_has_vnni(), avx2 = cpu_has_avx2();
    static const QuantKernel env = from_env();
    if (k == QuantKernel::best) k = env;
    if (k == QuantKernel::best) {
        return vnni ? QuantKernel::avx512_vnni : avx2 ? QuantKernel::avx2 : QuantKernel::scalar;
    }
    ZS_CHECK_T(NotSupported, k != QuantKernel::avx512_vnni || vnni,
               "the avx512_vnni quantized kernel needs AVX-512 VNNI, which this CPU lacks");
    ZS_CHECK_T(NotSupported, k != QuantKernel::avx2 || avx2,
               "the avx2 quantized kernel needs AVX2, FMA and F16C, which this CPU lacks");
    return k;
}

void quantize_q8_act(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0, int32_t* s1) {
    for (int64_t c = 0; c < n / 32; ++c) {
        const float* xc = x + 32 * c;
        float amax = 0.0f;
        for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(xc[l]));
        const float dc = amax / 127.0f;
        const float id = dc != 0.0f ? 1.0f / dc : 0.0f;
        int32_t a = 0, b = 0;
        for (int l = 0; l < 32; ++l) {
            const auto v = static_cast<int8_t>(std::lround(xc[l] * id));
            q[32 * c + l] = v;
            (l < 16 ? a : b) += v;
        }
        d[c] = dc;
        s0[c] = a;
        s1[c] = b;
    }
}

void quantize_q8_act_ggml(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0,
                          int32_t* s1) {
    for (int64_t c = 0; c < n / 32; ++c) {
        const float* xc = x + 32 * c;
        float amax = 0.0f;
        for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(xc[l]));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32_t a = 0, b = 0;
        for (int l = 0; l < 32; ++l) {
            const auto v = static_cast<int8_t>(std::nearbyint(xc[l] * id));  // ties to even
            q[32 * c + l] = v;
            (l < 16 ? a : b) += v;
        }
        d[c] = amax / 127.0f;
        s0[c] = a;
        s1[c] = b;
    }
}

void quantize_q8k_act(const float* x, int64_t n, int8_t* q, float* d, int32_t* s0, int32_t* s1) {
    constexpr int64_t kBlock = 256, kChunks = kBlock / 32;
    for (int64_t b = 0; b < n / kBlock; ++b) {
        const float* xb = x + kBlock * b;
        float amax = 0.0f;
        for (int64_t l = 0; l < kBlock; ++l) amax = std::max(amax, std::fabs(xb[l]));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const float db = amax != 0.0f ? 1.0f / id : 0.0f;
        for (int64_t c = 0; c < kChunks; ++c) {
            int32_t a = 0, h = 0;
            for (int l = 0; l < 32; ++l) {
                const float v = std::nearbyint(xb[32 * c + l] * id);  // ties to even
                const auto qv = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
                q[kBlock * b + 32 * c + l] = qv;
                (l < 16 ? a : h) += qv;
            }
            d[b * kChunks + c] = db;
            s0[b * kChunks + c] = a;
            s1[b * kChunks + c] = h;
        }
    }
}

QActFormat act_format() {
    static const QActFormat f = [] {
        const char* e = std::getenv("ZS_QUANT_ACT");
        if (e == nullptr || *e == '\0' || std::string_view(e) == "q8") return QActFormat::q8;
        if (std::string_view(e) == "ggml") return QActFormat::ggml;
        ZS_THROW(ConfigError, "ZS_QUANT_ACT: '{}' is not an activation format (q8 or ggml)", e);
    }();
    return f;
}

namespace {

bool is_k_quant(QType t) {
    return t == QType::q4_k || t == QType::q5_k || t == QType::q6_k || t == QType::q8_k;
}

// Q8 activations of M rows (qdot.h's QActRow views into the owned storage), quantized for
// weights of type `wt` in the format act_format() names.
struct QActs {
    std::vector<int8_t> q;
    std::vector<float> d, ds0, ds1;
    std::vector<int32_t> s0, s1;
    std::vector<QActRow> rows;
    bool q8k = false, d16 = false;  // ggml: Q8_K blocks of 256 / f16-rounded Q8_0 scales
    QActs(int64_t M, int64_t K, QType wt)
        : q(static_cast<size_t>(M * K)),
          d(static_cast<size_t>(M * K / 32)),
          ds0(d.size()),
          ds1(d.size()),
          s0(d.size()),
          s1(d.size()),
          rows(static_cast<size_t>(M)) {
        if (act_format() == QActFormat::ggml) {
            q8k = is_k_quant(wt) && K % 256 == 0;
            d16 = !q8k;
        }
    }
    // Row m from x[K] (any float type), through the caller's f32 scratch xf[K].
    template <class TX>
    void set(int64_t m, const TX* x, QuantKernel kern, std::vector<float>& xf) {
        const auto K = static_cast<int64_t>(xf.size()), C = K / 32;
        for (int64_t k = 0; k < K; ++k) xf[static_cast<size_t>(k)] = to_f32(x[k]);
        const auto o = static_cast<size_t>(m * C);
        (q8k                                ? quantize_q8k_act
         : d16                              ? quantize_q8_act_ggml
         : kern == QuantKernel::avx512_vnni ? quantize_q8_act_avx512
         : kern == QuantKernel::avx2        ? quantize_q8_act_avx2
                                            : quantize_q8_act)(xf.data(), K, q.data() + m * K,
                                                        d.data() + o, s0.data() + o, s1.data() + o);
        for (size_t c = o; c < o + static_cast<size_t>(C); ++c) {
            if (d16) d[c] = core::f16_to_f32(core::f32_to_f16(d[c]));
            ds0[c] = d[c] * static_cast<float>(s0[c]);
            ds1[c] = d[c] * static_cast<float>(s1[c]);
        }
        rows[static_cast<size_t>(m)] = {q.data() + m * K, d.data() + o,   s0.data() + o,
                                        s1.data() + o,    ds0.data() + o, ds1.data() + o};
    }
};

// How many groups one thread's decode GEMV reads side by side on AVX2 (qdot.h
// qdot_groups16_streams_avx2; ZS_DECODE_STREAMS at build time for experiments, 1: one at a time).
#ifndef ZS_DECODE_STREAMS
#define ZS_DECODE_STREAMS 4
#endif
constexpr int kDecodeStreams = ZS_DECODE_STREAMS;
static_assert(kDecodeStreams >= 1 && kDecodeStreams <= 4, "qdot_groups16_streams_avx2 takes 1-4");

// The GEMV's loop over 16-row output groups as an orphaned `omp for` (static schedule): it splits
// across the enclosing team, or runs whole outside a region. A barrier ends it unless `wait` is
// false (the region's last statement: its end is a barrier already, and each one costs ~0.85 us
// on two cores, ~90 per decoded token). Each output row's value depends only on its own group,
// never on the thread count or team.
template <class TO>
void gemv_groups(TO* O, int64_t ldo, const core::QTensor& w, const QActs& a, float beta,
                 const core::Tensor& bias, QuantKernel kern, bool wait = true) {
    const int64_t K = w.cols(), N = w.rows();
    const auto mi = static_cast<int>(a.rows.size());
    const int64_t M = mi;
    const bool grouped = w.layout() == core::QLayout::interleaved16;
    const QDotRowsFn fn = kern == QuantKernel::avx512_vnni ? qdot_rows_vnni : qdot_rows_scalar;
    constexpr int64_t kRows = core::kInterleaveRows;  // output rows per task (one group)
    const int64_t tasks = (N + kRows - 1) / kRows;
    const bool has_bias = bias.defined();
    const bool bias_bf16 = has_bias && bias.dtype() == core::DType::bf16;
    std::vector<float> res(static_cast<size_t>(kRows * M));
    std::vector<uint8_t> rows;  // the scalar kernel's file-layout copy of a group
    // Group t at g0 + t * group_bytes (hoisted: QTensor::group is out of line and checked).
    const uint8_t* g0 = grouped && tasks > 0 ? w.group(0) : nullptr;
    const int64_t group_bytes = grouped ? core::interleaved_group_bytes(w.type(), K) : 0;
    // Group t's epilogue: its outputs from r, the value of output row n0 + j for activation row m
    // at r[j * sj + m * sm] (the group kernels store by activation row: sj 1, sm 16).
    auto finish = [&](int64_t t, const float* r, int64_t sj, int64_t sm) {
        const int64_t n0 = t * kRows, nn = std::min(kRows, N - n0);
        if (sj == 1) {  // each activation row's outputs as one vector
            static_assert(kRows == kLanes);
            const int n = static_cast<int>(nn);
            VecF bv = vzero();
            if (has_bias) {
                bv = bias_bf16 ? vload(static_cast<const bf16*>(bias.data_ptr()) + n0, n)
                               : vload(static_cast<const float*>(bias.data_ptr()) + n0, n);
            }
            for (int64_t m = 0; m < M; ++m) {
                TO* o = O + m * ldo + n0;
                VecF v = vload(r + m * sm, n);
                if (has_bias) v = v + bv;
                if (beta != 0.0f) v = v + vset(beta) * vload(o, n);
                vstore(o, v, n);
            }
            return;
        }
        float b[kRows] = {};
        if (has_bias) {
            for (int64_t j = 0; j < nn; ++j) {
                b[j] = bias_bf16
                           ? core::bf16_to_f32(static_cast<const bf16*>(bias.data_ptr())[n0 + j])
                           : static_cast<const float*>(bias.data_ptr())[n0 + j];
            }
        }
        // Row by row of out (the prefill's M rows: one pass over each row's nn outputs).
        for (int64_t m = 0; m < M; ++m) {
            TO* o = O + m * ldo + n0;
            for (int64_t j = 0; j < nn; ++j) {
                float v = r[static_cast<size_t>(j * sj + m * sm)] + b[j];
                if (beta != 0.0f) v += beta * to_f32(o[j]);
                o[j] = from_f32<TO>(v);
            }
        }
    };
    if (M == 1 && grouped && kern == QuantKernel::avx2 && kDecodeStreams > 1) {
        // Decode on AVX2: this thread's share of the groups (a static split, as `omp for`'s) cut
        // into kDecodeStreams runs read side by side, group i of every run together.
        const int64_t nt = omp_get_num_threads(), me = omp_get_thread_num();
        const int64_t t0 = tasks * me / nt, t1 = tasks * (me + 1) / nt;
        const int64_t runs = std::min<int64_t>(kDecodeStreams, t1 - t0);
        const int64_t len = runs > 0 ? (t1 - t0 + runs - 1) / runs : 0;
        float rs[16 * kDecodeStreams];
        for (int64_t i = 0; i < len; ++i) {
            const uint8_t* gs[kDecodeStreams];
            int64_t ts[kDecodeStreams];
            int n = 0;
            for (int64_t r = 0; r < runs; ++r) {
                const int64_t t = t0 + r * len + i;
                if (t < t1) {
                    ts[n] = t;
                    gs[n++] = g0 + t * group_bytes;
                }
            }
            qdot_groups16_streams_avx2(w.type(), gs, n, K, a.rows[0], rs);
            for (int j = 0; j < n; ++j) finish(ts[j], rs + 16 * j, 1, 16);
        }
        if (wait) {
#pragma omp barrier
        }
        return;
    }
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < tasks; ++t) {
        const int64_t n0 = t * kRows, nn = std::min(kRows, N - n0);
        if (grouped && kern == QuantKernel::avx512_vnni) {
            qdot_group16_vnni(w.type(), g0 + t * group_bytes, K, a.rows.data(), mi, res.data());
            finish(t, res.data(), 1, kRows);
            continue;
        }
        if (grouped && kern == QuantKernel::avx2) {
            qdot_group16_avx2(w.type(), g0 + t * group_bytes, K, a.rows.data(), mi, res.data());
            finish(t, res.data(), 1, kRows);
            continue;
        }
        if (!grouped) {
            fn(w.type(), w.row(n0), w.row_bytes(), nn, K, a.rows.data(), mi, res.data());
        } else {
            rows.resize(static_cast<size_t>(nn * w.row_bytes()));
            for (int64_t j = 0; j < nn; ++j)
                core::deinterleave_row(w, n0 + j, rows.data() + j * w.row_bytes());
            fn(w.type(), rows.data(), w.row_bytes(), nn, K, a.rows.data(), mi, res.data());
        }
        finish(t, res.data(), M, 1);
    }
    if (wait) {
#pragma omp barrier
    }
}

bool parallel_gemv(const core::QTensor& w) { return w.rows() * w.cols() >= (1 << 16); }

// dst[m] = rmsnorm(raw[m]) * norm.weight for m < M (dst rows ldd apart): rmsnorm_forward's row
// code (norm_row.h), so the same bits as the unfused norm writing dst's dtype.
template <class TX>
void normalize_rows(TX* dst, int64_t ldd, const core::Tensor& raw, const ops::RmsNormFold& norm) {
    const int64_t M = raw.size(0), C = raw.size(1), lds = raw.stride(0);
    dispatch_float(raw.dtype(), [&](auto tr) {
        using TR = decltype(tr);
        const auto* R = static_cast<const TR*>(raw.data_ptr());
        dispatch_float(norm.weight.dtype(), [&](auto tw) {
            using TW = decltype(tw);
            const auto* W = static_cast<const TW*>(norm.weight.data_ptr());
            for (int64_t m = 0; m < M; ++m)
                rmsnorm_row<TR, TX, TW>(dst + m * ldd, R + m * lds, R + (m + 1) * lds, W, C,
                                        norm.eps);
        });
    });
}

// The Q8 activations of a decode region that folds a norm, for the calling thread: thread 0
// normalizes into the caller's `normed` (x), the others into a buffer of their own (the same
// values: cheaper than a serial norm and one more fork/join), then each quantizes its rows.
template <class TX>
QActs folded_acts(const core::Tensor& x, const core::Tensor& raw, const ops::RmsNormFold& norm,
                  QType wt, QuantKernel kern) {
    const int64_t M = x.size(0), K = x.size(1);
    std::vector<TX> mine;
    const TX* R = static_cast<const TX*>(x.data_ptr());
    int64_t ld = x.stride(0);
    if (omp_get_thread_num() == 0) {
        normalize_rows(static_cast<TX*>(x.data_ptr()), ld, raw, norm);
    } else {
        mine.resize(static_cast<size_t>(M * K));
        normalize_rows(mine.data(), K, raw, norm);
        R = mine.data();
        ld = K;
    }
    QActs acts(M, K, wt);
    std::vector<float> xf(static_cast<size_t>(K));
    for (int64_t m = 0; m < M; ++m) acts.set(m, R + m * ld, kern, xf);
    return acts;  // its row pointers point into its own buffers, which a move keeps
}

}  // namespace

void quant_gemv(const core::Tensor& out, const core::Tensor& x, const core::QTensor& w, float beta,
                const core::Tensor& bias, QuantKernel kernel, const ops::RmsNormFold* norm,
                const core::Tensor& raw) {
    const int64_t M = x.size(0), K = x.size(1);
    const QuantKernel kern = resolve(kernel);
    ZS_ASSERT(K == w.cols() && K % 32 == 0);
    QActs acts(norm ? 0 : M, K, w.type());  // folding: each thread quantizes its own
    dispatch_float(x.dtype(), [&](auto tx) {
        using TX = decltype(tx);
        const auto* X = static_cast<const TX*>(x.data_ptr());
        dispatch_float(out.dtype(), [&](auto to) {
            using TO = decltype(to);
            auto* O = static_cast<TO*>(out.data_ptr());
            if (norm != nullptr) {  // decode with the norm folded in: all of it in the region
                ZS_ASSERT(M <= kSkinnyMaxRows);
#pragma omp parallel if (parallel_gemv(w))
                {
                    const QActs own = folded_acts<TX>(x, raw, *norm, w.type(), kern);
                    gemv_groups(O, out.stride(0), w, own, beta, bias, kern, false);
                }
                return;
            }
            if (M <= kSkinnyMaxRows) {  // decode: quantize outside any region
                std::vector<float> xf(static_cast<size_t>(K));
                for (int64_t m = 0; m < M; ++m) acts.set(m, X + m * x.stride(0), kern, xf);
#pragma omp parallel if (parallel_gemv(w))
                gemv_groups(O, out.stride(0), w, acts, beta, bias, kern, false);
                return;
            }
            // Prefill: the rows' quantization and the groups in one region (one fork/join per
            // product: on shared cores each join can wait a scheduler quantum); the quantizing
            // loop's implicit barrier publishes every row before any group reads it.
#pragma omp parallel
            {
                std::vector<float> xf(static_cast<size_t>(K));
#pragma omp for schedule(static)
                for (int64_t m = 0; m < M; ++m) acts.set(m, X + m * x.stride(0), kern, xf);
                gemv_groups(O, out.stride(0), w, acts, beta, bias, kern, false);
            }
        });
    });
}

namespace {

// Whether two row-major 2-D tensors' element ranges share bytes.
bool overlaps(const Tensor& a, const Tensor& b) {
    auto range = [](const Tensor& t) {
        const auto* p = static_cast<const char*>(t.data_ptr());
        const int64_t n = (t.size(0) - 1) * t.stride(0) + t.size(1);
        return std::pair{p, p + n * static_cast<int64_t>(core::dtype_size(t.dtype()))};
    };
    const auto [a0, a1] = range(a);
    const auto [b0, b1] = range(b);
    return a0 < b1 && b0 < a1;
}

// CpuKernels::quant_swiglu's decode path (M <= kSkinnyMaxRows, F % 32 == 0), with the norm
// folded in when `norm` is given (x = norm->normed, from raw).
void swiglu_decode(const Tensor& out, const Tensor& x, const core::QTensor& w_gate_up,
                   const core::QTensor& w_down, const Tensor& h, const Tensor& a, float beta,
                   const ops::RmsNormFold* norm, const Tensor& raw) {
    const int64_t M = x.size(0), K = x.size(1), F = w_down.cols();
    const QuantKernel kern = resolve(QuantKernel::best);
    dispatch_float(x.dtype(), [&](auto tx) {
        using TX = decltype(tx);
        const auto* X = static_cast<const TX*>(x.data_ptr());
        auto* H = static_cast<TX*>(h.data_ptr());  // [M, 2F]
        auto* A = static_cast<TX*>(a.data_ptr());  // [M, F]
        QActs ax(norm ? 0 : M, K, w_gate_up.type());
        std::vector<float> xf(static_cast<size_t>(K));
        if (!norm) {
            for (int64_t m = 0; m < M; ++m) ax.set(m, X + m * x.stride(0), kern, xf);
        }
        dispatch_float(out.dtype(), [&](auto to) {
            using TO = decltype(to);
            auto* O = static_cast<TO*>(out.data_ptr());
#pragma omp parallel if (parallel_gemv(w_gate_up) || parallel_gemv(w_down))
            {
                // With the norm folded: every thread's own rows and Q8 activations (the gate|up
                // loop's barrier orders them before the down product writes into out = raw).
                const QActs own = norm ? folded_acts<TX>(x, raw, *norm, w_gate_up.type(), kern)
                                       : QActs(0, K, w_gate_up.type());
                gemv_groups(H, 2 * F, w_gate_up, norm ? own : ax, 0.0f, Tensor(), kern);
                const bool first = omp_get_thread_num() == 0;  // writes `a` for the caller
                std::vector<TX> mine(first ? 0 : static_cast<size_t>(M * F));
                TX* act = first ? A : mine.data();
                std::vector<float> af(static_cast<size_t>(F));
                QActs aa(M, F, w_down.type());
                for (int64_t m = 0; m < M; ++m) {
                    swiglu_row(H + m * 2 * F, H + m * 2 * F + F, act + m * F, F);
                    aa.set(m, act + m * F, kern, af);
                }
                gemv_groups(O, out.stride(0), w_down, aa, beta, Tensor(), kern, false);
            }
        });
    });
}

}  // namespace

// The decode MLP in one region: the gate|up GEMV's groups split across the team (an implicit
// barrier at the loop's end), then every thread computes the whole swiglu row and its Q8
// quantization for itself (F values: cheaper than a second barrier, and identical on every
// thread), then the down GEMV's groups. Each value is computed by the code the unfused ops run,
// so the result is theirs bit for bit.
void CpuKernels::quant_swiglu(const Tensor& out, const Tensor& x, const core::QTensor& w_gate_up,
                              const core::QTensor& w_down, const Tensor& h, const Tensor& a,
                              float beta) {
    if (x.size(0) > kSkinnyMaxRows || w_down.cols() % 32 != 0) {
        return Kernels::quant_swiglu(out, x, w_gate_up, w_down, h, a, beta);
    }
    swiglu_decode(out, x, w_gate_up, w_down, h, a, beta, nullptr, Tensor());
}

// The same with the block's RMSNorm inside the region (ops::RmsNormFold): one serial norm less
// between regions per block and token.
void CpuKernels::quant_norm_swiglu(const Tensor& out, const Tensor& x, const ops::RmsNormFold& norm,
                                   const core::QTensor& w_gate_up, const core::QTensor& w_down,
                                   const Tensor& h, const Tensor& a, float beta) {
    // Folded where the decode path runs and no thread's writes can land in rows another thread
    // is still normalizing from (out = x is fine: the gate|up barrier comes first).
    if (x.size(0) > kSkinnyMaxRows || w_down.cols() % 32 != 0 || overlaps(norm.normed, x) ||
        overlaps(norm.normed, out) || overlaps(h, x) || overlaps(a, x)) {
        return Kernels::quant_norm_swiglu(out, x, norm, w_gate_up, w_down, h, a, beta);
    }
    swiglu_decode(out, norm.normed, w_gate_up, w_down, h, a, beta, &norm, x);
}

void CpuKernels::quant_norm_linear(const Tensor& out, const Tensor& x, const ops::RmsNormFold& norm,
                                   const core::QTensor& w, const Tensor& bias, float beta) {
    // Folded where the decode GEMV runs and no thread's output can land in another's input.
    if (x.size(0) > kSkinnyMaxRows || overlaps(out, x) || overlaps(norm.normed, x) ||
        overlaps(norm.normed, out)) {
        return Kernels::quant_norm_linear(out, x, norm, w, bias, beta);
    }
    quant_gemv(out, norm.normed, w, beta, bias, QuantKernel::best, &norm, x);
}

const char* to_string(QuantPrefill p) {
    switch (p) {
        case QuantPrefill::best:
            return "best";
        case QuantPrefill::dequant:
            return "dequant";
        case QuantPrefill::int8:
            return "int8";
    }
    return "?";
}

QuantPrefill resolve_prefill(QuantPrefill p, const core::QTensor& w) {
    static const QuantPrefill env = [] {
        const char* e = std::getenv("ZS_QUANT_PREFILL");
        if (e == nullptr || *e == '\0') return QuantPrefill::best;
        const std::string_view v(e);
        if (v == "int8") return QuantPrefill::int8;
        if (v == "dequant") return QuantPrefill::dequant;
        ZS_THROW(ConfigError, "ZS_QUANT_PREFILL: '{}' is not a prefill route (int8 or dequant)", v);
    }();
    if (p == QuantPrefill::best) p = env;
    if (p != QuantPrefill::best) return p;
    // NOTE(prefill): a rule per CPU and type, from ops_bench's BM_prefill_quant and whole-model
    // prefills (docs/BENCHMARKS.md). On AVX2 without AVX-512 the int8 group kernel beats oneDNN's
    // f32 GEMM on dequantized tiles for the 32-element 4- and 5-bit types (Q4_0: 1.2x at one
    // thread with two activation rows per pass, 2-4x on shared cores: one fork/join per product);
    // the k-quants measured within 2-5% of the exact tiles (either way, by run), and q8_0's
    // signed codes cost it twice the multiplies (tiles 1.3x faster), so those keep the exact
    // product. On Zen 4 (VNNI, native bf16) the
    // tiles + bf16 GEMM measured faster.
    const bool grouped = w.layout() == core::QLayout::interleaved16;
    const bool avx2 = resolve(QuantKernel::best) == QuantKernel::avx2;
    const bool legacy4or5 = w.type() == QType::q4_0 || w.type() == QType::q4_1 ||
                            w.type() == QType::q5_0 || w.type() == QType::q5_1;
    return grouped && avx2 && legacy4or5 ? QuantPrefill::int8 : QuantPrefill::dequant;
}

void CpuKernels::quant_linear(const Tensor& out, const Tensor& x, const core::QTensor& w,
                              const Tensor& bias, float beta) {
    if (x.size(0) <= kSkinnyMaxRows) return quant_gemv(out, x, w, beta, bias, QuantKernel::best);
    quant_prefill(out, x, w, bias, beta, QuantPrefill::best);
}

// Prefill. int8: quant_gemv, whose group loop takes all M rows per 16-row group (4 activation
// rows per pass over a group). dequant: a tile of weight rows at a time dequantized (in parallel,
// by row) to the activations' dtype, then one dense GEMM per tile into its columns of out; no
// full-precision copy of the matrix exists. A tile holds up to 4 MiB (at least 256 rows): each
// tile costs two fork/joins (its dequantization, its GEMM), which on shared cores can each wait a
// scheduler quantum, and larger tiles measured no slower on one quiet core (docs/BENCHMARKS.md).
void CpuKernels::quant_prefill(const Tensor& out, const Tensor& x, const core::QTensor& w,
                               const Tensor& bias, float beta, QuantPrefill route) {
    const int64_t K = x.size(1), N = w.rows();
    if (resolve_prefill(route, w) == QuantPrefill::int8)
        return quant_gemv(out, x, w, beta, bias, QuantKernel::best);
    constexpr int64_t kTileBytes = int64_t{4} << 20, kMinTileRows = 256;
    const int64_t tile_rows = std::max(
        kMinTileRows, kTileBytes / (K * static_cast<int64_t>(core::dtype_size(x.dtype()))));
    Tensor tile = Tensor::empty({std::min(tile_rows, N), K}, x.dtype(), core::Device::cpu(),
                                core::MemCategory::buffers);
    std::vector<float> scratch;
    for (int64_t n0 = 0; n0 < N; n0 += tile_rows) {
        const int64_t nn = std::min(tile_rows, N - n0);
        Tensor t = tile.slice(0, 0, nn);
        dispatch_float(x.dtype(), [&](auto tx) {
            using TX = decltype(tx);
            auto* T = static_cast<TX*>(t.data_ptr());
#pragma omp parallel
            {
                std::vector<float> row(static_cast<size_t>(K));
                std::vector<uint8_t> file_row;
                if (w.layout() == core::QLayout::interleaved16)
                    file_row.resize(static_cast<size_t>(w.row_bytes()));
#pragma omp for schedule(static)
                for (int64_t r = 0; r < nn; ++r) {
                    const uint8_t* src = w.layout() == core::QLayout::rows ? w.row(n0 + r) : [&] {
                        core::deinterleave_row(w, n0 + r, file_row.data());
                        return static_cast<const uint8_t*>(file_row.data());
                    }();
                    core::dequantize(w.type(), src, row.data(), K);
                    for (int64_t k = 0; k < K; ++k)
                        T[r * K + k] = from_f32<TX>(row[static_cast<size_t>(k)]);
                }
            }
        });
        matmul(out.slice(1, n0, n0 + nn), x, t, {.trans_b = true, .beta = beta},
               bias.defined() ? bias.slice(0, n0, n0 + nn) : Tensor());
    }
}

}  // namespace zs::backends::cpu
