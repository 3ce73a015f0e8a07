// Dequantization of every supported GGML block type against values computed from the format's
// definition. Each test draws the logical contents of blocks (scales, mins, integer quants),
// packs them into bytes with a packer written here from the layout description (the inverse
// direction of the decoder), and expects x = f(d, m, scale, q) element by element, in double.
#include "io/ggml_type.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include <gtest/gtest.h>

#include "core/half.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/quant_scheme.h"
#include "io/safetensors.h"
#include "tests/test_util.h"

namespace zs::io {
namespace {

struct Packed {
    std::vector<uint8_t> bytes;
    std::vector<double> want;  // one value per element
    double scale = 1;          // magnitude for the tolerance
};

// An f16-representable scale: the bits to store and the exact value they mean.
struct Half {
    uint16_t bits;
    double value;
};
Half half(test::Rng& rng, double lo, double hi) {
    core::f16 h = core::f32_to_f16(static_cast<float>(rng.uniform(lo, hi)));
    return {h.bits, static_cast<double>(core::f16_to_f32(h))};
}

void put16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
    b[at] = static_cast<uint8_t>(v);
    b[at + 1] = static_cast<uint8_t>(v >> 8);
}

// 32-element blocks with 4-bit quants: element e's low four bits go to byte e % 16, low nibble
// for e < 16 and high nibble otherwise.
void put_nibbles(std::vector<uint8_t>& b, size_t at, const int* q) {
    for (int e = 0; e < 32; ++e)
        b[at + e % 16] |= static_cast<uint8_t>((q[e] & 15) << (e < 16 ? 0 : 4));
}

Packed pack(GgmlType t, int64_t n_blocks, test::Rng& rng) {
    Packed p;
    const GgmlTypeTraits& tr = traits(t);
    p.bytes.assign(static_cast<size_t>(n_blocks * tr.type_size), 0);
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const size_t o = static_cast<size_t>(blk * tr.type_size);
        switch (t) {
            case GgmlType::q8_0:
            case GgmlType::q8_1: {
                Half d = half(rng, -0.1, 0.1);
                put16(p.bytes, o, d.bits);
                if (t == GgmlType::q8_1) put16(p.bytes, o + 2, half(rng, -1, 1).bits);  // unused
                const size_t qo = o + (t == GgmlType::q8_1 ? 4 : 2);
                for (int e = 0; e < 32; ++e) {
                    int q = static_cast<int>(rng.integer(-128, 127));
                    p.bytes[qo + e] = static_cast<uint8_t>(static_cast<int8_t>(q));
                    p.want.push_back(d.value * q);
                }
                p.scale = 0.1 * 128;
                break;
            }
            case GgmlType::q4_0:
            case GgmlType::q4_1: {
                const bool has_min = t == GgmlType::q4_1;
                Half d = half(rng, -0.1, 0.1), m = half(rng, -1, 1);
                put16(p.bytes, o, d.bits);
                if (has_min) put16(p.bytes, o + 2, m.bits);
                int q[32];
                for (int& v : q) v = static_cast<int>(rng.integer(0, 15));
                put_nibbles(p.bytes, o + (has_min ? 4 : 2), q);
                for (int e = 0; e < 32; ++e) {
                    p.want.push_back(has_min ? d.value * q[e] + m.value : d.value * (q[e] - 8));
                }
                p.scale = 2;
                break;
            }
            case GgmlType::q5_0:
            case GgmlType::q5_1: {
                const bool has_min = t == GgmlType::q5_1;
                Half d = half(rng, -0.1, 0.1), m = half(rng, -1, 1);
                put16(p.bytes, o, d.bits);
                if (has_min) put16(p.bytes, o + 2, m.bits);
                const size_t qh = o + (has_min ? 4 : 2);
                int q[32];
                for (int& v : q) v = static_cast<int>(rng.integer(0, 31));
                for (int e = 0; e < 32; ++e) {  // the fifth bit of element e is bit e of qh
                    if (q[e] & 16) p.bytes[qh + e / 8] |= static_cast<uint8_t>(1u << (e % 8));
                }
                put_nibbles(p.bytes, qh + 4, q);
                for (int e = 0; e < 32; ++e) {
                    p.want.push_back(has_min ? d.value * q[e] + m.value : d.value * (q[e] - 16));
                }
                p.scale = 4;
                break;
            }
            case GgmlType::q4_k: {
                // d | dmin | 12 bytes of eight 6-bit (scale, min) pairs | 128 bytes of nibbles.
                Half d = half(rng, -0.01, 0.01), dmin = half(rng, -0.01, 0.01);
                put16(p.bytes, o, d.bits);
                put16(p.bytes, o + 2, dmin.bits);
                int sc[8], mn[8];
                for (int j = 0; j < 8; ++j) {
                    sc[j] = static_cast<int>(rng.integer(0, 63));
                    mn[j] = static_cast<int>(rng.integer(0, 63));
                }
                uint8_t* s = p.bytes.data() + o + 4;
                for (int k = 0; k < 4; ++k) {
                    // Pairs 0..3 sit whole in bytes k and k + 4; pairs 4..7 keep their low four
                    // bits in byte k + 8 and their top two bits in the top of bytes k, k + 4.
                    s[k] = static_cast<uint8_t>(sc[k] | ((sc[k + 4] >> 4) << 6));
                    s[k + 4] = static_cast<uint8_t>(mn[k] | ((mn[k + 4] >> 4) << 6));
                    s[k + 8] = static_cast<uint8_t>((sc[k + 4] & 15) | ((mn[k + 4] & 15) << 4));
                }
                uint8_t* qs = p.bytes.data() + o + 16;
                for (int e = 0; e < 256; ++e) {
                    int q = static_cast<int>(rng.integer(0, 15));
                    // 64-element chunks: the first 32 in low nibbles of the chunk's 32 bytes.
                    qs[32 * (e / 64) + e % 32] |= static_cast<uint8_t>(q << (e % 64 < 32 ? 0 : 4));
                    const int j = e / 32;
                    p.want.push_back(d.value * sc[j] * q - dmin.value * mn[j]);
                }
                p.scale = 0.01 * 63 * 16;
                break;
            }
            case GgmlType::q6_k: {
                // ql[128] low nibbles | qh[64] 2-bit tops | int8 scales[16] | d. One scale per 16
                // consecutive elements.
                Half d = half(rng, -0.01, 0.01);
                put16(p.bytes, o + 208, d.bits);
                int sc[16];
                for (int j = 0; j < 16; ++j) {
                    sc[j] = static_cast<int>(rng.integer(-128, 127));
                    p.bytes[o + 192 + j] = static_cast<uint8_t>(static_cast<int8_t>(sc[j]));
                }
                for (int e = 0; e < 256; ++e) {
                    int q = static_cast<int>(rng.integer(0, 63));
                    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
                    p.bytes[o + 64 * h + l + 32 * (k % 2)] |=
                        static_cast<uint8_t>((q & 15) << (k < 2 ? 0 : 4));
                    p.bytes[o + 128 + 32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * k));
                    p.want.push_back(d.value * sc[e / 16] * (q - 32));
                }
                p.scale = 0.01 * 128 * 32;
                break;
            }
            default:
                ADD_FAILURE() << "no packer for " << tr.name;
                return p;
        }
    }
    return p;
}

const GgmlType kQuantTypes[] = {GgmlType::q8_0, GgmlType::q8_1, GgmlType::q4_0, GgmlType::q4_1,
                                GgmlType::q5_0, GgmlType::q5_1, GgmlType::q4_k, GgmlType::q6_k};

TEST(Dequantize, EveryBlockTypeMatchesItsDefinition) {
    test::Rng rng(17);
    for (GgmlType t : kQuantTypes) {
        const int64_t n_blocks = 5, n = n_blocks * traits(t).block_size;
        Packed p = pack(t, n_blocks, rng);
        ASSERT_EQ(static_cast<int64_t>(p.want.size()), n);
        // Decode from an odd address: block data in a file has no alignment guarantee.
        std::vector<uint8_t> shifted(p.bytes.size() + 1);
        std::memcpy(shifted.data() + 1, p.bytes.data(), p.bytes.size());
        std::vector<float> got(static_cast<size_t>(n));
        dequantize(t, shifted.data() + 1, got.data(), n);
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) {
            if (std::fabs(got[i] - p.want[i]) > 1e-6 * p.scale && ++bad < 4) {
                ADD_FAILURE() << to_string(t) << " element " << i << ": got " << got[i] << ", want "
                              << p.want[i];
            }
        }
    }
}

TEST(Dequantize, ThroughGgufTensorsWithShapeAndBf16Output) {
    test::Rng rng(23);
    GgufWriter w;
    std::vector<Packed> packed;
    for (GgmlType t : kQuantTypes) {
        // ne = [2 blocks per row, 3 rows] -> a [3, 2 * block] tensor.
        const int64_t bs = traits(t).block_size;
        packed.push_back(pack(t, 6, rng));
        w.add_tensor(to_string(t), t, {2 * bs, 3}, packed.back().bytes);
    }
    auto bytes = std::make_shared<std::vector<uint8_t>>(w.to_bytes());
    GgufFile g = GgufFile::from_memory(*bytes, bytes, "q.gguf");
    for (size_t k = 0; k < std::size(kQuantTypes); ++k) {
        const GgmlType t = kQuantTypes[k];
        const int64_t cols = 2 * traits(t).block_size;
        const Packed& p = packed[k];
        core::Tensor f = g.tensor(to_string(t));
        core::Tensor b = g.tensor(to_string(t), core::DType::bf16);
        ASSERT_EQ(f.shape(), core::Shape({3, cols}));
        ASSERT_EQ(b.dtype(), core::DType::bf16);
        for (int64_t r = 0; r < 3; ++r) {
            for (int64_t c = 0; c < cols; ++c) {
                const double want = p.want[static_cast<size_t>(r * cols + c)];
                EXPECT_NEAR(f.item({r, c}), want, 1e-6 * p.scale) << to_string(t);
                // bf16 keeps 8 bits of mantissa: relative error <= 2^-8.
                EXPECT_NEAR(b.item({r, c}), want, std::fabs(want) / 256 + 1e-6 * p.scale)
                    << to_string(t);
            }
        }
    }
}

// The decoders against llama.cpp's Python reference (gguf.quants): blocks it encoded from seeded
// rows (Q8_0..Q5_1) or random blocks (K-quants), and its decoding of them
// (tests/fixtures/quant, tools/reference/make_quant_fixture.py).
TEST(Dequantize, MatchesTheGgufPackage) {
    auto fx = SafetensorsFile::open(test::source_path("tests/fixtures/quant/blocks.safetensors"));
    for (GgmlType t : {GgmlType::q8_0, GgmlType::q4_0, GgmlType::q4_1, GgmlType::q5_0,
                       GgmlType::q5_1, GgmlType::q4_k, GgmlType::q5_k, GgmlType::q6_k}) {
        const std::string key = core::to_string(*to_qtype(t));
        const core::Tensor want = fx.tensor(key + ".dequant");  // f32 [R, K]
        const auto blocks = fx.raw_bytes(key + ".blocks");      // u8 [R, row bytes]
        const int64_t n = want.numel();
        ASSERT_EQ(static_cast<int64_t>(blocks.size()),
                  n / traits(t).block_size * traits(t).type_size)
            << key;
        std::vector<float> got(static_cast<size_t>(n));
        dequantize(t, blocks.data(), got.data(), n);
        const float* w = want.data<float>();
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) {
            // numpy groups the scale products differently for K-quants: a few ulps.
            if (std::fabs(got[i] - w[i]) > 4e-7 * std::fabs(w[i]) + 1e-30f && ++bad < 4) {
                ADD_FAILURE() << key << " element " << i << ": got " << got[i] << ", gguf " << w[i];
            }
        }
    }
}

// The encoders, bit for bit against gguf.quants.quantize on the same rows (including an all-zero
// row, a constant row and an outlier stretch).
TEST(Quantize, BitIdenticalToTheGgufPackage) {
    auto fx = SafetensorsFile::open(test::source_path("tests/fixtures/quant/blocks.safetensors"));
    for (core::QType t : {core::QType::q8_0, core::QType::q4_0, core::QType::q4_1,
                          core::QType::q5_0, core::QType::q5_1}) {
        const std::string key = core::to_string(t);
        const core::Tensor in = fx.tensor(key + ".input");  // f32 [R, K]
        const auto want = fx.raw_bytes(key + ".blocks");
        std::vector<uint8_t> got(want.size());
        core::quantize(t, in.data<float>(), got.data(), in.numel());
        size_t bad = 0;
        for (size_t i = 0; i < got.size(); ++i) bad += got[i] != want[i];
        EXPECT_EQ(bad, 0u) << key << ": bytes differ from gguf.quants";
    }
    std::vector<float> x(256, 1.0f);
    std::vector<uint8_t> out(256);
    EXPECT_THROW(core::quantize(core::QType::q8_k, x.data(), out.data(), 256), NotSupported);
}

// The k-quant encoders have no reference quantizer to match bit for bit (gguf.quants only decodes
// them), so they are held to what an encoder must do. (1) Every code is the nearest one on its
// sub-block's final grid (y = dj q - mj, q in the code range; dj, mj from the block's quantized
// scales), found here by trying every code: |x - y| <= dj / 2 inside the grid's span, the
// distance to the span's end outside it; a wrapped or unclamped code breaks this. (2) The
// round-trip RMSE (our encoder, then the decoder checked against gguf above) is at most that of
// a naive encoder written here: each sub-block's min/max grid, its scale and min rounded to 6
// bits (q6_k: 8) against the block's largest. On Gaussian rows, on heavy-tailed rows with
// outlier columns (as trained weights have), and on edge blocks (zeros, constants, all
// positive, one huge outlier, f16-subnormal magnitudes) that must decode to finite values.
struct KGrid {  // sub-block j's grid of a k-quant block
    float d, m;
    int qmin, qmax;
};

int kq_sub_size(core::QType t) { return t == core::QType::q6_k ? 16 : 32; }

KGrid k_grid(core::QType t, const uint8_t* b, int j) {
    auto f16at = [&](int off) {
        uint16_t bits;
        std::memcpy(&bits, b + off, 2);
        return core::f16_to_f32(core::f16{bits});
    };
    if (t == core::QType::q6_k) {
        const auto sc = static_cast<int8_t>(b[192 + j]);
        return {f16at(208) * static_cast<float>(sc), 0.0f, -32, 31};
    }
    const uint8_t* s = b + 4;  // get_scale_min_k4, restated
    const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    const int mn = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    return {f16at(0) * static_cast<float>(sc), f16at(2) * static_cast<float>(mn), 0,
            t == core::QType::q4_k ? 15 : 31};
}

// The naive reference: one super-block of 256 encoded and decoded in floats.
void naive_k(core::QType t, const float* x, float* y) {
    const int n = kq_sub_size(t), subs = 256 / n;
    const bool sym = t == core::QType::q6_k;
    const int nmax = t == core::QType::q4_k ? 15 : 31;
    std::vector<float> s(subs), m(subs);
    float smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < subs; ++j) {
        float lo = 0.0f, hi = 0.0f, amax = 0.0f;
        for (int l = 0; l < n; ++l) {
            lo = std::min(lo, x[n * j + l]);
            hi = std::max(hi, x[n * j + l]);
            amax = std::max(amax, std::fabs(x[n * j + l]));
        }
        s[j] = sym ? amax / 31.0f : (hi - lo) / static_cast<float>(nmax);
        m[j] = sym ? 0.0f : -lo;
        smax = std::max(smax, s[j]);
        mmax = std::max(mmax, m[j]);
    }
    const float levels = sym ? 127.0f : 63.0f;
    const float d = core::f16_to_f32(core::f32_to_f16(smax / levels));
    const float dmin = core::f16_to_f32(core::f32_to_f16(mmax / 63.0f));
    for (int j = 0; j < subs; ++j) {
        const float dj = d == 0.0f ? 0.0f : d * std::min(std::round(s[j] / d), levels);
        const float mj = dmin == 0.0f ? 0.0f : dmin * std::min(std::round(m[j] / dmin), 63.0f);
        for (int l = 0; l < n; ++l) {
            float q = dj == 0.0f ? 0.0f : std::round((x[n * j + l] + mj) / dj);
            q = sym ? std::clamp(q, -32.0f, 31.0f) : std::clamp(q, 0.0f, static_cast<float>(nmax));
            y[n * j + l] = dj * q - mj;
        }
    }
}

struct KStats {
    double ours = 0.0, naive = 0.0;  // sums of squared errors
    int64_t not_nearest = 0, non_finite = 0;
};

KStats check_k_encoder(core::QType t, const std::vector<float>& x) {
    const int64_t blocks = static_cast<int64_t>(x.size()) / 256;
    const int64_t bb = core::qtype_traits(t).block_bytes;
    std::vector<uint8_t> q(static_cast<size_t>(blocks * bb));
    core::quantize(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
    std::vector<float> y(x.size()), yn(256);
    core::dequantize(t, q.data(), y.data(), static_cast<int64_t>(x.size()));
    KStats st;
    const int n = kq_sub_size(t);
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const float* xb = x.data() + 256 * blk;
        const float* yb = y.data() + 256 * blk;
        naive_k(t, xb, yn.data());
        for (int j = 0; j < 256 / n; ++j) {
            const KGrid g = k_grid(t, q.data() + blk * bb, j);
            for (int l = 0; l < n; ++l) {
                const float xi = xb[n * j + l], yi = yb[n * j + l];
                if (!std::isfinite(yi)) ++st.non_finite;
                float best = INFINITY;
                for (int c = g.qmin; c <= g.qmax; ++c) {
                    best = std::min(best, std::fabs(g.d * static_cast<float>(c) - g.m - xi));
                }
                if (std::fabs(yi - xi) > best * (1.0f + 1e-5f) + 1e-30f) ++st.not_nearest;
                st.ours += static_cast<double>(yi - xi) * (yi - xi);
                st.naive += static_cast<double>(yn[n * j + l] - xi) * (yn[n * j + l] - xi);
            }
        }
    }
    return st;
}

TEST(Quantize, KQuantsPickNearestCodesAndBeatANaiveEncoder) {
    std::mt19937 rng(1907);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    std::exponential_distribution<float> expo(40.0f);
    std::uniform_real_distribution<float> unif(0.0f, 1.0f);
    const int64_t k = 1536, rows = 24;
    std::vector<float> gauss(k * rows), heavy(k * rows);
    for (float& v : gauss) v = normal(rng);
    std::vector<float> col_gain(k, 1.0f);
    for (int i = 0; i < 12; ++i) col_gain[static_cast<size_t>(rng() % k)] = 12.0f;
    for (int64_t r = 0; r < rows; ++r) {
        const float row_gain = 0.5f + unif(rng);
        for (int64_t c = 0; c < k; ++c) {  // Laplace, per-row and per-column gains
            const float v = expo(rng) * (unif(rng) < 0.5f ? -1.0f : 1.0f);
            heavy[static_cast<size_t>(r * k + c)] = v * row_gain * col_gain[static_cast<size_t>(c)];
        }
    }
    std::vector<float> edge(256 * 7, 0.0f);  // block 0: zeros
    for (int i = 0; i < 256; ++i) {
        edge[256 + i] = 0.3f;                                  // a positive constant
        edge[512 + i] = -0.7f;                                 // a negative constant
        edge[768 + i] = 1.0f + 0.01f * static_cast<float>(i);  // all positive, min > 0
        edge[1024 + i] = normal(rng);                          // ... with one huge outlier
        edge[1280 + i] = 3e-7f * normal(rng);                  // f16-subnormal scales
        edge[1536 + i] = i % 32 == 0 ? 0.0f : normal(rng) * static_cast<float>(i / 32 + 1);
    }
    edge[1024 + 77] = 40.0f;
    for (core::QType t : {core::QType::q4_k, core::QType::q5_k, core::QType::q6_k}) {
        const std::string key = core::to_string(t);
        for (const auto& [name, data] :
             {std::pair<const char*, const std::vector<float>*>{"gaussian", &gauss},
              {"heavy-tailed", &heavy},
              {"edge", &edge}}) {
            const KStats st = check_k_encoder(t, *data);
            EXPECT_EQ(st.not_nearest, 0) << key << " " << name << ": codes not the nearest";
            EXPECT_EQ(st.non_finite, 0) << key << " " << name;
            EXPECT_LE(st.ours, st.naive) << key << " " << name << ": squared error above naive";
            const double n = static_cast<double>(data->size());
            std::printf("%s %-12s rmse %.3e (naive %.3e)\n", key.c_str(), name,
                        std::sqrt(st.ours / n), std::sqrt(st.naive / n));
        }
        // An all-zero block decodes to zeros exactly.
        std::vector<uint8_t> b(static_cast<size_t>(core::qtype_traits(t).block_bytes));
        std::vector<float> y(256);
        core::quantize(t, edge.data(), b.data(), 256);
        core::dequantize(t, b.data(), y.data(), 256);
        for (int i = 0; i < 256; ++i) EXPECT_EQ(y[i], 0.0f) << key << " zero block, " << i;
    }
}

// The per-tensor rule against llama-quantize's, restated for a 30-layer model: use_more_bits
// picks layers 0-2, 26-29 and 5, 8, ..., 23 (i - 3 = 2 mod 3).
TEST(QuantScheme, FollowsLlamaQuantizesMixAndFallbacks) {
    using core::QType;
    const auto m = parse_quant_scheme("Q4_K_M");
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->file_type, 15u);
    EXPECT_FALSE(parse_quant_scheme("q3_k").has_value());
    std::vector<int> more;
    for (int i = 0; i < 30; ++i) {
        const std::string v = "blk." + std::to_string(i) + ".attn_v.weight";
        const std::string dn = "blk." + std::to_string(i) + ".ffn_down.weight";
        const std::string q = "blk." + std::to_string(i) + ".attn_q.weight";
        const QType tv = quant_type_for(*m, v, 512, 30, true);
        EXPECT_EQ(quant_type_for(*m, dn, 512, 30, true), tv) << i;
        EXPECT_EQ(quant_type_for(*m, q, 512, 30, true), QType::q4_k) << i;
        if (tv == QType::q6_k) more.push_back(i);
        // 576 columns: q6_k falls back to q8_0, q4_k to q5_0.
        EXPECT_EQ(quant_type_for(*m, v, 576, 30, true),
                  tv == QType::q6_k ? QType::q8_0 : QType::q5_0);
    }
    EXPECT_EQ(more, (std::vector<int>{0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}));
    const auto p = parse_quant_scheme("q4_k");
    EXPECT_EQ(quant_type_for(*p, "blk.0.attn_v.weight", 512, 30, true), QType::q4_k);
    EXPECT_EQ(quant_type_for(*p, "blk.0.ffn_down.weight", 576, 30, true), QType::q5_0);
    EXPECT_EQ(quant_type_for(*parse_quant_scheme("q5_k"), "x", 576, 30, true), QType::q5_1);
    // The head: output.weight, or the token embedding where the model ties it.
    EXPECT_EQ(quant_type_for(*p, "output.weight", 512, 30, true), QType::q6_k);
    EXPECT_EQ(quant_type_for(*p, "token_embd.weight", 512, 30, true), QType::q4_k);
    EXPECT_EQ(quant_type_for(*p, "token_embd.weight", 512, 30, false), QType::q6_k);
    EXPECT_EQ(quant_type_for(*p, "token_embd.weight", 576, 30, false), QType::q8_0);
    EXPECT_EQ(quant_type_for(*parse_quant_scheme("q4_0"), "output.weight", 576, 30, true),
              QType::q4_0);
}

TEST(GgmlType, TableMatchesBlockStructSizes) {
    // Sizes from the block structs: scale fields (f16 = 2 bytes) plus packed quants.
    EXPECT_EQ(traits(GgmlType::q4_0).type_size, 2 + 32 / 2);
    EXPECT_EQ(traits(GgmlType::q4_1).type_size, 2 * 2 + 32 / 2);
    EXPECT_EQ(traits(GgmlType::q5_0).type_size, 2 + 4 + 32 / 2);
    EXPECT_EQ(traits(GgmlType::q5_1).type_size, 2 * 2 + 4 + 32 / 2);
    EXPECT_EQ(traits(GgmlType::q8_0).type_size, 2 + 32);
    EXPECT_EQ(traits(GgmlType::q8_1).type_size, 2 * 2 + 32);
    EXPECT_EQ(traits(GgmlType::q4_k).type_size, 2 * 2 + 12 + 256 / 2);
    EXPECT_EQ(traits(GgmlType::q6_k).type_size, 2 + 256 / 16 + 3 * 256 / 4);
    EXPECT_EQ(traits(GgmlType::q2_k).type_size, 2 * 2 + 256 / 16 + 256 / 4);
    EXPECT_EQ(traits(GgmlType::q8_k).type_size, 4 + 256 + 256 / 16 * 2);
    EXPECT_FALSE(ggml_type_from_u32(4).has_value());   // removed Q4_2
    EXPECT_FALSE(ggml_type_from_u32(31).has_value());  // removed Q4_0_4_4
    EXPECT_FALSE(ggml_type_from_u32(43).has_value());
    EXPECT_EQ(ggml_type_from_u32(30), GgmlType::bf16);
    EXPECT_TRUE(can_dequantize(GgmlType::q6_k));
    EXPECT_FALSE(can_dequantize(GgmlType::iq2_xxs));
}

}  // namespace
}  // namespace zs::io
