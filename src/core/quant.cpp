// Reference decoders of the GGUF block types (ggml-quants.c's dequantize_row_* restated), the
// type table and QTensor. The kernels in backends/cpu/qgemv* are tested against these.
#include "core/quant.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "base/error.h"
#include "core/backend.h"
#include "core/half.h"

namespace zs::core {

namespace {

float load_f16(const uint8_t* p) {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    return f16_to_f32(f16{bits});
}

template <class T>
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}

// Element i (0..31) of a 32-element block with 4-bit quants in qs[16]: the low nibbles hold
// elements 0..15, the high nibbles elements 16..31.
int nibble(const uint8_t* qs, int i) { return i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4); }

void deq_q8_0(const uint8_t* b, float* y) {  // f16 d | int8 q[32]
    const float d = load_f16(b);
    const auto* q = reinterpret_cast<const int8_t*>(b + 2);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(q[i]);
}

void deq_q4_0(const uint8_t* b, float* y) {  // f16 d | u8 qs[16]
    const float d = load_f16(b);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(nibble(b + 2, i) - 8);
}

void deq_q4_1(const uint8_t* b, float* y) {  // f16 d | f16 m | u8 qs[16]
    const float d = load_f16(b), m = load_f16(b + 2);
    for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(nibble(b + 4, i)) + m;
}

void deq_q5_0(const uint8_t* b, float* y) {  // f16 d | u32 qh | u8 qs[16]
    const float d = load_f16(b);
    const uint32_t qh = load<uint32_t>(b + 2);
    for (int i = 0; i < 32; ++i) {
        int q = nibble(b + 6, i) | static_cast<int>(((qh >> i) & 1u) << 4);
        y[i] = d * static_cast<float>(q - 16);
    }
}

void deq_q5_1(const uint8_t* b, float* y) {  // f16 d | f16 m | u32 qh | u8 qs[16]
    const float d = load_f16(b), m = load_f16(b + 2);
    const uint32_t qh = load<uint32_t>(b + 4);
    for (int i = 0; i < 32; ++i) {
        int q = nibble(b + 8, i) | static_cast<int>(((qh >> i) & 1u) << 4);
        y[i] = d * static_cast<float>(q) + m;
    }
}

// The 6-bit scale and min of sub-block j (0..7) of a q4_k / q5_k super-block, packed in
// scales[12] as: j < 4: sc = s[j] & 63, mn = s[j+4] & 63; j >= 4: sc = (s[j+4] & 15) |
// (s[j-4] >> 6) << 4, mn = (s[j+4] >> 4) | (s[j] >> 6) << 4 (ggml's get_scale_min_k4).
void scale_min_k4(const uint8_t* s, int j, int* sc, int* mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// q4_k: elements 64c..64c+31 are the low nibbles of qs[32c..32c+31] (sub-block 2c), elements
// 64c+32..64c+63 their high nibbles (sub-block 2c+1).
void deq_q4_k(const uint8_t* b, float* y) {
    const float d = load_f16(b), dmin = load_f16(b + 2);
    const uint8_t* qs = b + 16;
    for (int j = 0; j < 8; ++j) {
        int sc, mn;
        scale_min_k4(b + 4, j, &sc, &mn);
        const float dj = d * static_cast<float>(sc), mj = dmin * static_cast<float>(mn);
        const uint8_t* q = qs + 32 * (j / 2);
        const int shift = (j % 2) * 4;
        for (int l = 0; l < 32; ++l) {
            y[32 * j + l] = dj * static_cast<float>((q[l] >> shift) & 0x0F) - mj;
        }
    }
}

// q5_k: as q4_k for the low 4 bits; bit 4 of element l of sub-block j is bit j of qh[l].
void deq_q5_k(const uint8_t* b, float* y) {
    const float d = load_f16(b), dmin = load_f16(b + 2);
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + 48;
    for (int j = 0; j < 8; ++j) {
        int sc, mn;
        scale_min_k4(b + 4, j, &sc, &mn);
        const float dj = d * static_cast<float>(sc), mj = dmin * static_cast<float>(mn);
        const uint8_t* q = qs + 32 * (j / 2);
        const int shift = (j % 2) * 4;
        for (int l = 0; l < 32; ++l) {
            const int v = ((q[l] >> shift) & 0x0F) | (((qh[l] >> j) & 1) << 4);
            y[32 * j + l] = dj * static_cast<float>(v) - mj;
        }
    }
}

// q6_k: two halves of 128 elements (h = 0, 1) use ql[64h..], qh[32h..], sc[8h..]. In a half,
// element 32k + l (k = 0..3, l = 0..31) takes its low 4 bits from ql[l + 32 (k % 2)] (low nibble
// for k < 2, high nibble otherwise) and its high 2 bits from bits 2k..2k+1 of qh[l]; its scale is
// sc[l / 16 + 2k].
void deq_q6_k(const uint8_t* b, float* y) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = load_f16(b + 208);
    for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 4; ++k) {
            for (int l = 0; l < 32; ++l) {
                int lo = (ql[64 * h + l + 32 * (k % 2)] >> (k < 2 ? 0 : 4)) & 0x0F;
                int hi = (qh[32 * h + l] >> (2 * k)) & 3;
                int q = (lo | (hi << 4)) - 32;
                float s = static_cast<float>(sc[8 * h + l / 16 + 2 * k]);
                y[128 * h + 32 * k + l] = d * s * static_cast<float>(q);
            }
        }
    }
}

void deq_q8_k(const uint8_t* b, float* y) {  // f32 d | int8 q[256] | int16 bsums[16]
    const float d = load<float>(b);
    const auto* q = reinterpret_cast<const int8_t*>(b + 4);
    for (int i = 0; i < 256; ++i) y[i] = d * static_cast<float>(q[i]);
}

// The encoders. quant.cpp is compiled with -ffp-contract=off: `x * id + 8.5f` must round twice,
// as numpy and ggml's C do, not fuse into an FMA.
void put_f16(uint8_t* p, float v) {
    const uint16_t bits = f32_to_f16(v).bits;
    std::memcpy(p, &bits, 2);
}

// The element of largest magnitude, with its sign (the first of equals, as numpy's argmax).
float signed_absmax(const float* x) {
    float amax = 0.0f, m = 0.0f;
    for (int i = 0; i < 32; ++i) {
        if (std::fabs(x[i]) > amax) {
            amax = std::fabs(x[i]);
            m = x[i];
        }
    }
    return m;
}

void enc_q8_0(const float* x, uint8_t* b) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int i = 0; i < 32; ++i)
        b[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[i] * id)));
}

// Symmetric 4/5-bit (q4_0: nmax 8, 4 bits; q5_0: nmax 16, 5 bits): d = max / -nmax.
void enc_sym(const float* x, uint8_t* b, float nmax, int qmax, uint8_t* qs, uint8_t* qh) {
    const float d = signed_absmax(x) / -nmax;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    uint8_t q[32];
    for (int i = 0; i < 32; ++i) {
        const float v = std::trunc(x[i] * id + (nmax + 0.5f));
        q[i] = static_cast<uint8_t>(std::min(static_cast<int>(v), qmax));
    }
    for (int i = 0; i < 16; ++i) qs[i] = static_cast<uint8_t>((q[i] & 0x0F) | (q[i + 16] << 4));
    if (qh) {
        uint32_t h = 0;
        for (int i = 0; i < 32; ++i) h |= static_cast<uint32_t>(q[i] >> 4) << i;
        std::memcpy(qh, &h, 4);
    }
}

// Asymmetric (q4_1: 15 levels; q5_1: 31): d = (max - min) / levels, m = min.
void enc_asym(const float* x, uint8_t* b, float levels, int qmax, uint8_t* qs, uint8_t* qh) {
    float mx = x[0], mn = x[0];
    for (int i = 1; i < 32; ++i) {
        mx = std::max(mx, x[i]);
        mn = std::min(mn, x[i]);
    }
    const float d = (mx - mn) / levels;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    put_f16(b + 2, mn);
    uint8_t q[32];
    for (int i = 0; i < 32; ++i) {
        const float v = std::trunc((x[i] - mn) * id + 0.5f);
        q[i] = static_cast<uint8_t>(std::min(static_cast<int>(v), qmax));
    }
    for (int i = 0; i < 16; ++i) qs[i] = static_cast<uint8_t>((q[i] & 0x0F) | (q[i + 16] << 4));
    if (qh) {
        uint32_t h = 0;
        for (int i = 0; i < 32; ++i) h |= static_cast<uint32_t>(q[i] >> 4) << i;
        std::memcpy(qh, &h, 4);
    }
}

// The k-quant encoders (q4_k, q5_k, q6_k). gguf.quants has no quantizer for them, so they are
// not bit-identical to a reference; they follow the method of llama.cpp's reference quantizers
// (no importance matrix), restated here: each sub-block's scale (and min) is fitted by weighted
// least squares on the rounded codes over a few stretched grids, then the sub-block scales are
// themselves quantized to 6 (q4_k, q5_k) or 8 (q6_k) bits against the block's f16 scale, and the
// codes are re-rounded on the grid those quantized scales give (so every code is the nearest
// one of its sub-block's final grid, clamped to the code range).

int round_int(float v) { return static_cast<int>(std::nearbyint(v)); }  // ties to even

// Asymmetric sub-block fit: x[i] ~ scale * q[i] + lo with q in [0, nmax] and lo <= 0, weights w.
// Starts from the min/max grid; then, for s = 0..nstep, the grid of nmax + rmin + rdelta s
// steps over [min, max]: codes rounded on it, scale and lo refitted in closed form (the 2x2
// normal equations; lo clamped to 0 with the scale refitted alone when the fit makes it
// positive), kept when the weighted squared error drops. Returns the scale; *neg_lo = -lo.
float fit_scale_min(const float* x, const float* w, int n, int nmax, float rmin, float rdelta,
                    int nstep, uint8_t* q, float* neg_lo) {
    float lo = x[0], hi = x[0], sw = w[0], swx = w[0] * x[0];
    for (int i = 1; i < n; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
        sw += w[i];
        swx += w[i] * x[i];
    }
    lo = std::min(lo, 0.0f);
    if (hi == lo) {
        for (int i = 0; i < n; ++i) q[i] = 0;
        *neg_lo = -lo;
        return 0.0f;
    }
    float inv = static_cast<float>(nmax) / (hi - lo);
    float scale = 1.0f / inv;
    float best = 0.0f;
    for (int i = 0; i < n; ++i) {
        const int l = std::clamp(round_int(inv * (x[i] - lo)), 0, nmax);
        q[i] = static_cast<uint8_t>(l);
        const float e = scale * static_cast<float>(l) + lo - x[i];
        best += w[i] * e * e;
    }
    uint8_t cand[32];
    for (int s = 0; s <= nstep; ++s) {
        inv = (rmin + rdelta * static_cast<float>(s) + static_cast<float>(nmax)) / (hi - lo);
        float sl = 0.0f, sl2 = 0.0f, sxl = 0.0f;
        for (int i = 0; i < n; ++i) {
            const int l = std::clamp(round_int(inv * (x[i] - lo)), 0, nmax);
            cand[i] = static_cast<uint8_t>(l);
            const float fl = static_cast<float>(l);
            sl += w[i] * fl;
            sl2 += w[i] * fl * fl;
            sxl += w[i] * fl * x[i];
        }
        const float det = sw * sl2 - sl * sl;
        if (det <= 0.0f) continue;
        float cs = (sw * sxl - swx * sl) / det;
        float cm = (sl2 * swx - sl * sxl) / det;
        if (cm > 0.0f) {
            cm = 0.0f;
            cs = sxl / sl2;
        }
        float err = 0.0f;
        for (int i = 0; i < n; ++i) {
            const float e = cs * static_cast<float>(cand[i]) + cm - x[i];
            err += w[i] * e * e;
        }
        if (err < best) {
            best = err;
            scale = cs;
            lo = cm;
            std::memcpy(q, cand, static_cast<size_t>(n));
        }
    }
    *neg_lo = -lo;
    return scale;
}

// Symmetric sub-block fit: x[i] ~ scale * q[i], q in [-nmax, nmax - 1], weights x^2. The grid
// through the element of largest magnitude (q = -nmax there), then the grids of nmax + 0.1 s
// steps (s = -9..9, s != 0): the least-squares scale on each grid's codes, kept when it
// explains more of x ((sum w x q)^2 / sum w q^2). Returns the scale (0 for an all-zero
// sub-block).
float fit_scale_sym(const float* x, int n, int nmax) {
    float amax = 0.0f, mx = 0.0f;
    for (int i = 0; i < n; ++i) {
        if (std::fabs(x[i]) > amax) {
            amax = std::fabs(x[i]);
            mx = x[i];
        }
    }
    if (amax < 1e-15f) return 0.0f;
    float best_scale = 0.0f, best = -1.0f;
    auto try_grid = [&](float steps) {
        const float inv = -steps / mx;
        float sxl = 0.0f, sl2 = 0.0f;
        for (int i = 0; i < n; ++i) {
            const float l = static_cast<float>(std::clamp(round_int(inv * x[i]), -nmax, nmax - 1));
            const float w = x[i] * x[i];
            sxl += w * x[i] * l;
            sl2 += w * l * l;
        }
        if (sl2 > 0.0f && (best < 0.0f || sxl * sxl > best * sl2)) {
            best_scale = sxl / sl2;
            best = best_scale * sxl;
        }
    };
    try_grid(static_cast<float>(nmax));
    for (int s = -9; s <= 9; ++s) {
        if (s != 0) try_grid(static_cast<float>(nmax) + 0.1f * static_cast<float>(s));
    }
    return best_scale;
}

// q4_k (nmax 15) and q5_k (nmax 31): 8 sub-blocks of 32, each fitted with weights
// rms(sub-block) + |x|; the 8 scales and 8 mins quantized to 6 bits against d = max scale / 63
// and dmin = max min / 63 (both f16), the codes re-rounded on the quantized grid.
void enc_k_asym(const float* x, uint8_t* b, int nmax) {
    const bool five = nmax == 31;
    float scale[8], neg_lo[8], w[32];
    uint8_t codes[256];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; ++j) {
        const float* xj = x + 32 * j;
        float s2 = 0.0f;
        for (int l = 0; l < 32; ++l) s2 += xj[l] * xj[l];
        const float rms = std::sqrt(s2 / 32.0f);
        for (int l = 0; l < 32; ++l) w[l] = rms + std::fabs(xj[l]);
        scale[j] = five ? fit_scale_min(xj, w, 32, 31, -0.5f, 0.1f, 15, codes + 32 * j, &neg_lo[j])
                        : fit_scale_min(xj, w, 32, 15, -1.0f, 0.1f, 20, codes + 32 * j, &neg_lo[j]);
        max_scale = std::max(max_scale, scale[j]);
        max_min = std::max(max_min, neg_lo[j]);
    }
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    uint8_t* s = b + 4;
    std::memset(s, 0, 12);
    int sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
        sc[j] = std::min(round_int(inv_scale * scale[j]), 63);
        mn[j] = std::min(round_int(inv_min * neg_lo[j]), 63);
        sc[j] = std::max(sc[j], 0);
        mn[j] = std::max(mn[j], 0);
        if (j < 4) {
            s[j] = static_cast<uint8_t>(sc[j]);
            s[j + 4] = static_cast<uint8_t>(mn[j]);
        } else {
            s[j + 4] = static_cast<uint8_t>((sc[j] & 0x0F) | ((mn[j] & 0x0F) << 4));
            s[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
            s[j] |= static_cast<uint8_t>((mn[j] >> 4) << 6);
        }
    }
    put_f16(b, max_scale / 63.0f);
    put_f16(b + 2, max_min / 63.0f);
    const float d = load_f16(b), dmin = load_f16(b + 2);
    for (int j = 0; j < 8; ++j) {
        const float dj = d * static_cast<float>(sc[j]);
        if (dj == 0.0f) continue;  // a zero scale: the fitted codes stand (they decode to -mj)
        const float mj = dmin * static_cast<float>(mn[j]);
        for (int l = 0; l < 32; ++l) {
            codes[32 * j + l] =
                static_cast<uint8_t>(std::clamp(round_int((x[32 * j + l] + mj) / dj), 0, nmax));
        }
    }
    uint8_t* qs = b + (five ? 48 : 16);
    for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
            qs[32 * c + l] = static_cast<uint8_t>((codes[64 * c + l] & 0x0F) |
                                                  ((codes[64 * c + 32 + l] & 0x0F) << 4));
        }
    }
    if (five) {
        uint8_t* qh = b + 16;
        for (int l = 0; l < 32; ++l) {
            uint8_t h = 0;
            for (int j = 0; j < 8; ++j) h |= static_cast<uint8_t>((codes[32 * j + l] >> 4) << j);
            qh[l] = h;
        }
    }
}

// q6_k: 16 sub-blocks of 16 fitted symmetrically (codes -32..31); their scales quantized to
// int8 against d = -(the scale of largest magnitude) / 128 (f16), so that scale becomes -128
// (or 127 after the clamp); the codes re-rounded on the quantized grid.
void enc_q6_k(const float* x, uint8_t* b) {
    float scale[16];
    float max_scale = 0.0f, max_abs = 0.0f;
    for (int j = 0; j < 16; ++j) {
        scale[j] = fit_scale_sym(x + 16 * j, 16, 32);
        if (std::fabs(scale[j]) > max_abs) {
            max_abs = std::fabs(scale[j]);
            max_scale = scale[j];
        }
    }
    std::memset(b, 0, 210);
    if (max_abs < 1e-15f) return;  // an all-zero block: d = 0, every code 32 (decodes to 0)
    const float inv = -128.0f / max_scale;
    put_f16(b + 208, 1.0f / inv);
    const float d = load_f16(b + 208);
    auto* sc = reinterpret_cast<int8_t*>(b + 192);
    uint8_t codes[256];
    for (int j = 0; j < 16; ++j) {
        sc[j] = static_cast<int8_t>(std::clamp(round_int(inv * scale[j]), -128, 127));
        const float dj = d * static_cast<float>(sc[j]);
        for (int l = 0; l < 16; ++l) {
            const int q = dj == 0.0f ? 0 : std::clamp(round_int(x[16 * j + l] / dj), -32, 31);
            codes[16 * j + l] = static_cast<uint8_t>(q + 32);
        }
    }
    // The layout deq_q6_k reads: element 128 h + 32 k + l of half h.
    uint8_t* ql = b;
    uint8_t* qh = b + 128;
    for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 4; ++k) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q = codes[128 * h + 32 * k + l];
                ql[64 * h + l + 32 * (k % 2)] |=
                    static_cast<uint8_t>((q & 0x0F) << (k < 2 ? 0 : 4));
                qh[32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * k));
            }
        }
    }
}

}  // namespace

bool can_quantize(QType t) { return t != QType::q8_k; }

void quantize(QType t, const float* src, void* dst, int64_t n) {
    const QTypeTraits& tr = qtype_traits(t);
    ZS_CHECK_T(NotSupported, can_quantize(t),
               "quantizing to {} is not supported (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)",
               tr.name);
    ZS_ASSERT(n % tr.block_size == 0, "{} elements of {} are not whole blocks", n, tr.name);
    auto* out = static_cast<uint8_t*>(dst);
    for (int64_t blk = 0; blk < n / tr.block_size; ++blk) {
        const float* x = src + tr.block_size * blk;
        uint8_t* b = out + blk * tr.block_bytes;
        switch (t) {
            case QType::q8_0:
                enc_q8_0(x, b);
                break;
            case QType::q4_0:
                enc_sym(x, b, 8.0f, 15, b + 2, nullptr);
                break;
            case QType::q5_0:
                enc_sym(x, b, 16.0f, 31, b + 6, b + 2);
                break;
            case QType::q4_1:
                enc_asym(x, b, 15.0f, 15, b + 4, nullptr);
                break;
            case QType::q5_1:
                enc_asym(x, b, 31.0f, 31, b + 8, b + 4);
                break;
            case QType::q4_k:
                enc_k_asym(x, b, 15);
                break;
            case QType::q5_k:
                enc_k_asym(x, b, 31);
                break;
            case QType::q6_k:
                enc_q6_k(x, b);
                break;
            case QType::q8_k:
                break;
        }
    }
}

const QTypeTraits& qtype_traits(QType t) {
    static constexpr QTypeTraits kQ8_0{"q8_0", 32, 34}, kQ4_0{"q4_0", 32, 18},
        kQ4_1{"q4_1", 32, 20}, kQ5_0{"q5_0", 32, 22}, kQ5_1{"q5_1", 32, 24},
        kQ4_K{"q4_k", 256, 144}, kQ5_K{"q5_k", 256, 176}, kQ6_K{"q6_k", 256, 210},
        kQ8_K{"q8_k", 256, 292};
    switch (t) {
        case QType::q8_0:
            return kQ8_0;
        case QType::q4_0:
            return kQ4_0;
        case QType::q4_1:
            return kQ4_1;
        case QType::q5_0:
            return kQ5_0;
        case QType::q5_1:
            return kQ5_1;
        case QType::q4_k:
            return kQ4_K;
        case QType::q5_k:
            return kQ5_K;
        case QType::q6_k:
            return kQ6_K;
        case QType::q8_k:
            return kQ8_K;
    }
    ZS_ASSERT(false, "bad QType {}", static_cast<int>(t));
    return kQ8_0;
}

std::optional<QType> qtype_from_string(std::string_view s) {
    std::string l(s);
    std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
    for (int i = 0; i < kNumQTypes; ++i) {
        const auto t = static_cast<QType>(i);
        if (l == qtype_traits(t).name) return t;
    }
    return std::nullopt;
}

void dequantize(QType t, const void* src, float* dst, int64_t n) {
    const QTypeTraits& tr = qtype_traits(t);
    ZS_ASSERT(n % tr.block_size == 0, "{} elements of {} are not whole blocks", n, tr.name);
    void (*fn)(const uint8_t*, float*) = nullptr;
    switch (t) {
        case QType::q8_0:
            fn = deq_q8_0;
            break;
        case QType::q4_0:
            fn = deq_q4_0;
            break;
        case QType::q4_1:
            fn = deq_q4_1;
            break;
        case QType::q5_0:
            fn = deq_q5_0;
            break;
        case QType::q5_1:
            fn = deq_q5_1;
            break;
        case QType::q4_k:
            fn = deq_q4_k;
            break;
        case QType::q5_k:
            fn = deq_q5_k;
            break;
        case QType::q6_k:
            fn = deq_q6_k;
            break;
        case QType::q8_k:
            fn = deq_q8_k;
            break;
    }
    const auto* s = static_cast<const uint8_t*>(src);
    for (int64_t b = 0; b < n / tr.block_size; ++b) {
        fn(s + b * tr.block_bytes, dst + b * tr.block_size);
    }
}

// ------------------------------------------------------------------------------------ QTensor

QTensor QTensor::empty(QType type, int64_t rows, int64_t cols, Device device,
                       MemCategory category) {
    ZS_CHECK_T(ShapeError, rows >= 0 && cols >= 0 && cols % qtype_traits(type).block_size == 0,
               "{}[{}, {}]: the row length must be a multiple of {}'s block of {}", to_string(type),
               rows, cols, to_string(type), qtype_traits(type).block_size);
    QTensor t;
    t.buf_ = Buffer::allocate(static_cast<size_t>(rows * qrow_bytes(type, cols)), device, category);
    t.type_ = type;
    t.rows_ = rows;
    t.cols_ = cols;
    return t;
}

QTensor QTensor::from_buffer(std::shared_ptr<Buffer> buffer, size_t byte_offset, QType type,
                             int64_t rows, int64_t cols) {
    ZS_CHECK_T(ShapeError, rows >= 0 && cols >= 0 && cols % qtype_traits(type).block_size == 0,
               "{}[{}, {}]: the row length must be a multiple of {}'s block of {}", to_string(type),
               rows, cols, to_string(type), qtype_traits(type).block_size);
    const auto bytes = static_cast<size_t>(rows * qrow_bytes(type, cols));
    ZS_CHECK_T(ShapeError, buffer && byte_offset + bytes <= buffer->size(),
               "{}[{}, {}] at byte {} does not fit a buffer of {} bytes", to_string(type), rows,
               cols, byte_offset, buffer ? buffer->size() : 0);
    QTensor t;
    t.buf_ = std::move(buffer);
    t.offset_ = byte_offset;
    t.type_ = type;
    t.rows_ = rows;
    t.cols_ = cols;
    return t;
}

size_t QTensor::nbytes() const {
    if (layout_ == QLayout::rows) return static_cast<size_t>(rows_ * row_bytes());
    return static_cast<size_t>((rows_ + kInterleaveRows - 1) / kInterleaveRows *
                               interleaved_group_bytes(type_, cols_));
}

const uint8_t* QTensor::row(int64_t r) const {
    ZS_ASSERT(layout_ == QLayout::rows, "row() of interleaved {}", str());
    return data() + r * row_bytes();
}

const uint8_t* QTensor::group(int64_t g) const {
    ZS_ASSERT(layout_ == QLayout::interleaved16, "group() of {} (not interleaved)", str());
    return data() + g * interleaved_group_bytes(type_, cols_);
}

QTensor QTensor::slice_rows(int64_t begin, int64_t end) const {
    ZS_CHECK_T(ShapeError, 0 <= begin && begin <= end && end <= rows_,
               "rows [{}, {}) of {} are out of range", begin, end, str());
    QTensor t = *this;
    if (layout_ == QLayout::rows) {
        t.offset_ += static_cast<size_t>(begin * row_bytes());
    } else {
        ZS_CHECK_T(ShapeError,
                   begin % kInterleaveRows == 0 && (end % kInterleaveRows == 0 || end == rows_),
                   "rows [{}, {}) of interleaved {} do not start and end on groups of {}", begin,
                   end, str(), kInterleaveRows);
        t.offset_ +=
            static_cast<size_t>(begin / kInterleaveRows * interleaved_group_bytes(type_, cols_));
    }
    t.rows_ = end - begin;
    return t;
}

QTensor QTensor::to(Device device) const {
    ZS_CHECK_T(ShapeError, defined(), "QTensor::to({}): the tensor is undefined", device.str());
    if (device == this->device()) return *this;
    ZS_CHECK_T(NotSupported, device.is_cpu() || this->device().is_cpu(),
               "QTensor::to: {} to {} (copies go through the host)", str(), device.str());
    QTensor t = empty(type_, rows_, cols_, device, buf_->category());
    if (device.is_cpu()) {  // from a device: always the rows layout there
        backend(this->device()).copy_to_host(t.mutable_data(), data(), t.nbytes());
        return t;
    }
    std::vector<uint8_t> file_rows;
    const uint8_t* src = data();
    if (layout_ == QLayout::interleaved16) {
        file_rows.resize(static_cast<size_t>(rows_ * row_bytes()));
        for (int64_t r = 0; r < rows_; ++r)
            deinterleave_row(*this, r, file_rows.data() + r * row_bytes());
        src = file_rows.data();
    }
    backend(device).copy_from_host(t.mutable_data(), src, t.nbytes());
    return t;
}

std::string QTensor::str() const {
    return fmt::format("{}[{}, {}]{} {}", to_string(type_), rows_, cols_,
                       layout_ == QLayout::interleaved16 ? " interleaved16" : "", device().str());
}

}  // namespace zs::core
