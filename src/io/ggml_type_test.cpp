// Dequantization of every supported GGML block type against values computed from the format's
// definition. Each test draws the logical contents of blocks (scales, mins, integer quants),
// packs them into bytes with a packer written here from the layout description (the inverse
// direction of the decoder), and expects x = f(d, m, scale, q) element by element, in double.
#include "io/ggml_type.h"

#include <cmath>
#include <cstring>
#include <functional>

#include <gtest/gtest.h>

#include "core/half.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
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
    EXPECT_THROW(core::quantize(core::QType::q4_k, x.data(), out.data(), 256), NotSupported);
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
