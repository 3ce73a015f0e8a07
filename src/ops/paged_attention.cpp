#include "ops/paged_attention.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "base/error.h"
#include "core/half.h"
#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;
using core::Shape;

namespace {

struct CacheDims {
    int64_t n_blocks, bs, nkv, hs;
};

CacheDims check_caches(const char* op, const Tensor& k_cache, const Tensor& v_cache,
                       bool quantized = false) {
    for (auto [name, t] : {std::pair{"k_cache", &k_cache}, std::pair{"v_cache", &v_cache}}) {
        check::defined(op, name, *t);
        check::ndim(op, name, *t, 4);
        if (quantized) {
            check::dtype(op, name, *t, {DType::i8});
        } else {
            check::dtype(op, name, *t, {DType::f32, DType::bf16, DType::f16});
        }
        check::contiguous(op, name, *t);
    }
    check::same_shape(op, "v_cache", v_cache, "k_cache", k_cache);
    check::dtype(op, "v_cache", v_cache, {k_cache.dtype()});
    return {k_cache.size(0), k_cache.size(2), k_cache.size(1), k_cache.size(3)};
}

// A float [N, heads, HS] with a contiguous last dim.
void check_rows(const char* op, const char* name, const Tensor& t, int64_t heads, int64_t hs) {
    check::defined(op, name, t);
    check::ndim(op, name, t, 3);
    check::dtype(op, name, t, {DType::f32, DType::bf16});
    check::shape(op, name, t, Shape{t.size(0), heads, hs});
    check::last_dim_contiguous(op, name, t);
}

// first_pos(s): the first position the op touches. Slots of blocks wholly below it may hold
// kNoBlock (freed outside a sliding window); every other one must name a block.
template <typename FirstPos>
void check_tables(const char* op, std::span<const SeqSlice> seqs, int64_t N, const CacheDims& c,
                  FirstPos first_pos) {
    for (const SeqSlice& s : seqs) {
        ZS_CHECK_T(ShapeError, s.start >= 0 && s.n_tokens >= 0 && s.start + s.n_tokens <= N,
                   "{}: slice rows [{}, {}) outside the batch of {}", op, s.start,
                   s.start + s.n_tokens, N);
        ZS_CHECK_T(ShapeError,
                   s.pos >= 0 && static_cast<int64_t>(s.blocks.size()) * c.bs >= s.pos + s.n_tokens,
                   "{}: block table of {} blocks cannot hold positions [0, {})", op,
                   s.blocks.size(), s.pos + s.n_tokens);
        const int64_t first_block = first_pos(s) / c.bs;
        for (size_t i = 0; i < s.blocks.size(); ++i) {
            const BlockId b = s.blocks[i];
            if (b == kNoBlock && static_cast<int64_t>(i) < first_block) continue;
            ZS_CHECK_T(ShapeError, b >= 0 && b < c.n_blocks,
                       "{}: block id {} in slot {} outside [0, {}) (slots from {} are read)", op, b,
                       i, c.n_blocks, first_block);
        }
    }
}

// paged_attention_forward's checks of the query, the output and the options against cache
// dimensions `c` (the dense and the quantized cache alike).
void check_query(const char* op, const Tensor& out, const Tensor& q, const CacheDims& c,
                 const AttentionOptions& opts) {
    check::defined(op, "q", q);
    check::ndim(op, "q", q, 3);
    ZS_CHECK_T(ShapeError, c.nkv > 0 && q.size(1) % c.nkv == 0,
               "{}: q must be [N, NH, HS] with NH a multiple of the cache's {} kv heads, got {}",
               op, c.nkv, q.str());
    check_rows(op, "q", q, q.size(1), c.hs);
    check_rows(op, "out", out, q.size(1), c.hs);
    check::same_shape(op, "out", out, "q", q);
    ZS_CHECK_T(ShapeError, opts.causal && opts.window >= 0,
               "{}: paged attention is causal with a window >= 0, got causal {} window {}", op,
               opts.causal, opts.window);
}

// Its block tables: the earliest key read is the window start of the slice's first query.
void check_read_tables(const char* op, std::span<const SeqSlice> seqs, int64_t N,
                       const CacheDims& c, int64_t window) {
    check_tables(op, seqs, N, c, [window](const SeqSlice& s) {
        return window > 0 ? std::max<int64_t>(0, s.pos - window + 1) : int64_t{0};
    });
}

// E4M3FN value of each non-negative finite code 0x00..0x7e (0x7f is NaN), increasing.
const std::array<float, 127>& e4m3_values() {
    static const std::array<float, 127> table = [] {
        std::array<float, 127> t{};
        for (int c = 0; c < 127; ++c) {
            const int e = c >> 3, m = c & 7;
            t[static_cast<size_t>(c)] =
                e == 0 ? std::ldexp(static_cast<float>(m), -9)
                       : std::ldexp(1.0f + static_cast<float>(m) / 8.0f, e - 7);
        }
        return t;
    }();
    return table;
}

// Round a = |value| / scale to the nearest E4M3 code, ties to the even code; saturates at 448; a
// NaN (a non-finite row) codes as 0. By bit arithmetic, not a search of the code table (a binary
// search per value made an fp8 cache's prefill a quarter slower than int8's on Zen 3): subnormal
// codes (a < 2^-6) are m = round(a * 2^9), code 8 being 2^-6 itself; normal ones round the f32
// mantissa to 3 bits, a carry moving the exponent up as it should.
uint8_t e4m3_code(float a) {
    if (!(a > 0.0f)) return 0;
    if (a >= 448.0f) return 0x7e;
    if (a < 0.015625f) return static_cast<uint8_t>(std::nearbyint(a * 512.0f));
    uint32_t u = core::f32_bits(a);
    u += 0x7ffffu + ((u >> 20) & 1u);
    return static_cast<uint8_t>(((u >> 23) - 120u) << 3 | ((u >> 20) & 7u));
}

float kv_quant_max(KvQuant q) { return q == KvQuant::int8 ? 127.0f : 448.0f; }

void check_quant_cache(const char* op, const PagedKvCache& c) {
    check_caches(op, c.k, c.v, true);
    for (auto [name, t] : {std::pair{"k_scale", &c.k_scale}, std::pair{"v_scale", &c.v_scale}}) {
        check::defined(op, name, *t);
        check::dtype(op, name, *t, {DType::f16});
        check::contiguous(op, name, *t);
    }
    ZS_CHECK_T(ShapeError, c.k.size(3) % kKvQuantGroup == 0,
               "{}: a {} cache needs a head size that is a multiple of {}, got {}", op,
               to_string(c.quant), kKvQuantGroup, c.k.size(3));
    const Shape want{c.k.size(0), c.k.size(1), c.k.size(2), c.k.size(3) / kKvQuantGroup};
    check::shape(op, "k_scale", c.k_scale, want);
    check::shape(op, "v_scale", c.v_scale, want);
    check::same_device(
        op, {{"k", &c.k}, {"v", &c.v}, {"k_scale", &c.k_scale}, {"v_scale", &c.v_scale}});
}

}  // namespace

const char* to_string(KvQuant q) {
    switch (q) {
        case KvQuant::none:
            return "none";
        case KvQuant::int8:
            return "int8";
        case KvQuant::fp8_e4m3:
            return "fp8";
    }
    return "?";
}

void kv_quantize_group(KvQuant q, const float* x, int8_t* dst, core::f16* scale) {
    float amax = 0.0f;
    for (int64_t i = 0; i < kKvQuantGroup; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float qmax = kv_quant_max(q);
    *scale = core::f32_to_f16(amax / qmax);
    const float d = core::f16_to_f32(*scale);
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;
    for (int64_t i = 0; i < kKvQuantGroup; ++i) {
        const float v = std::clamp(x[i] * inv, -qmax, qmax);
        if (q == KvQuant::int8) {
            dst[i] = static_cast<int8_t>(std::nearbyint(v));
        } else {
            const uint8_t c = e4m3_code(std::fabs(v));
            dst[i] =
                static_cast<int8_t>(static_cast<uint8_t>(std::signbit(v) && c ? 0x80u | c : c));
        }
    }
}

void kv_dequantize_group(KvQuant q, const int8_t* src, core::f16 scale, float* x) {
    const float d = core::f16_to_f32(scale);
    for (int64_t i = 0; i < kKvQuantGroup; ++i) {
        if (q == KvQuant::int8) {
            x[i] = d * static_cast<float>(src[i]);
        } else {
            const auto b = static_cast<uint8_t>(src[i]);
            const float v = e4m3_values()[std::min<size_t>(b & 0x7fu, 126)];
            x[i] = d * ((b & 0x80u) ? -v : v);
        }
    }
}

void paged_kv_write(const PagedKvCache& cache, const Tensor& k, const Tensor& v,
                    std::span<const SeqSlice> seqs) {
    if (cache.quant == KvQuant::none) return paged_kv_write(cache.k, cache.v, k, v, seqs);
    const char* op = "paged_kv_write";
    check_quant_cache(op, cache);
    const CacheDims c{cache.k.size(0), cache.k.size(2), cache.k.size(1), cache.k.size(3)};
    check_rows(op, "k", k, c.nkv, c.hs);
    check_rows(op, "v", v, c.nkv, c.hs);
    check::same_shape(op, "v", v, "k", k);
    check::same_device(op, {{"k_cache", &cache.k}, {"k", &k}, {"v", &v}});
    check_tables(op, seqs, k.size(0), c, [](const SeqSlice& s) { return s.pos; });
    if (seqs.empty() || k.numel() == 0) return;
    kernels_for(cache.k.device()).paged_kv_write_quant(cache, k, v, seqs);
}

void paged_attention_forward(const Tensor& out, const Tensor& q, const PagedKvCache& cache,
                             std::span<const SeqSlice> seqs, const AttentionOptions& opts) {
    if (cache.quant == KvQuant::none) {
        return paged_attention_forward(out, q, cache.k, cache.v, seqs, opts);
    }
    const char* op = "paged_attention_forward";
    check_quant_cache(op, cache);
    const CacheDims c{cache.k.size(0), cache.k.size(2), cache.k.size(1), cache.k.size(3)};
    check_query(op, out, q, c, opts);
    check::same_device(op, {{"out", &out}, {"q", &q}, {"k_cache", &cache.k}});
    check_read_tables(op, seqs, q.size(0), c, opts.window);
    if (seqs.empty() || q.numel() == 0) return;
    kernels_for(q.device()).paged_attention_forward_quant(out, q, cache, seqs, opts);
}

void paged_kv_write(const Tensor& k_cache, const Tensor& v_cache, const Tensor& k, const Tensor& v,
                    std::span<const SeqSlice> seqs) {
    const char* op = "paged_kv_write";
    const CacheDims c = check_caches(op, k_cache, v_cache);
    check_rows(op, "k", k, c.nkv, c.hs);
    check_rows(op, "v", v, c.nkv, c.hs);
    check::same_shape(op, "v", v, "k", k);
    check::same_device(op, {{"k_cache", &k_cache}, {"v_cache", &v_cache}, {"k", &k}, {"v", &v}});
    check_tables(op, seqs, k.size(0), c, [](const SeqSlice& s) { return s.pos; });
    if (seqs.empty() || k.numel() == 0) return;
    kernels_for(k_cache.device()).paged_kv_write(k_cache, v_cache, k, v, seqs);
}

void paged_attention_forward(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                             const Tensor& v_cache, std::span<const SeqSlice> seqs,
                             const AttentionOptions& opts) {
    const char* op = "paged_attention_forward";
    const CacheDims c = check_caches(op, k_cache, v_cache);
    check_query(op, out, q, c, opts);
    check::same_device(op,
                       {{"out", &out}, {"q", &q}, {"k_cache", &k_cache}, {"v_cache", &v_cache}});
    check_read_tables(op, seqs, q.size(0), c, opts.window);
    if (seqs.empty() || q.numel() == 0) return;
    kernels_for(q.device()).paged_attention_forward(out, q, k_cache, v_cache, seqs, opts);
}

}  // namespace zs::ops
