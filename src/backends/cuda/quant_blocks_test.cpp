// The CUDA quantized kernels' decoders and lane loops (quant_blocks.cuh) run on the CPU: this
// test is built in every configuration, GPU or not, so the bit layouts and lane splits of
// quant.cu are checked on every CI run. cuda_test checks the kernels themselves on a device.
//
// - dequant_element (the prefill tile's decoder) is bit-identical to core::dequantize, the
//   reference decoder tested against the gguf package.
// - The 32 lanes' GEMV loops together reproduce a double-precision dequantize-then-multiply
//   reference within 3e-5 of S = sum_k |w x| (f32 accumulation; q4_k and the 32-element types sum
//   d q x and m x apart, whose magnitudes can exceed |w x|). A lane that skipped or repeated a
//   block, or read a wrong nibble, bit or scale, is O(1) of S off.
#include "backends/cuda/quant_blocks.cuh"

#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "core/half.h"
#include "core/quant.h"
#include "tests/test_util.h"

namespace zs::backends::cuda {
namespace {

using core::QType;

void put_f16(uint8_t* p, float v) {
    const core::f16 h = core::f32_to_f16(v);
    std::memcpy(p, &h.bits, 2);
}

// Random blocks (every code and packed-scale pattern) with finite, moderate f16 scales.
core::QTensor random_qweights(test::Rng& rng, QType t, int64_t n, int64_t k) {
    core::QTensor w = core::QTensor::empty(t, n, k);
    uint8_t* p = w.mutable_data();
    for (size_t i = 0; i < w.nbytes(); ++i) p[i] = static_cast<uint8_t>(rng.integer(0, 255));
    const core::QTypeTraits& tr = core::qtype_traits(t);
    for (int64_t b = 0; b < n * k / tr.block_size; ++b) {
        uint8_t* x = p + b * tr.block_bytes;
        const auto d = static_cast<float>(rng.uniform(-0.02, 0.02));
        const auto m = static_cast<float>(rng.uniform(-0.1, 0.1));
        switch (t) {
            case QType::q8_0:
            case QType::q4_0:
            case QType::q5_0:
                put_f16(x, d);
                break;
            case QType::q4_1:
            case QType::q5_1:
                put_f16(x, d);
                put_f16(x + 2, m);
                break;
            case QType::q4_k:
            case QType::q5_k:
                put_f16(x, std::fabs(d) * 0.1f);
                put_f16(x + 2, std::fabs(m) * 0.1f);
                break;
            case QType::q6_k:
                put_f16(x + 208, d * 0.1f);
                break;
            case QType::q8_k:
                std::memcpy(x, &d, 4);
                break;
        }
    }
    return w;
}

constexpr QType kTypes[] = {QType::q8_0, QType::q4_0, QType::q4_1, QType::q5_0,
                            QType::q5_1, QType::q4_k, QType::q6_k};

// Call f(std::integral_constant<QuantType, ...>) for the kernel type of t.
template <class F>
void with_kernel_type(QType t, F&& f) {
    switch (t) {
        case QType::q8_0:
            return f(std::integral_constant<QuantType, QuantType::q8_0>{});
        case QType::q4_0:
            return f(std::integral_constant<QuantType, QuantType::q4_0>{});
        case QType::q4_1:
            return f(std::integral_constant<QuantType, QuantType::q4_1>{});
        case QType::q5_0:
            return f(std::integral_constant<QuantType, QuantType::q5_0>{});
        case QType::q5_1:
            return f(std::integral_constant<QuantType, QuantType::q5_1>{});
        case QType::q4_k:
            return f(std::integral_constant<QuantType, QuantType::q4_k>{});
        case QType::q6_k:
            return f(std::integral_constant<QuantType, QuantType::q6_k>{});
        case QType::q5_k:
        case QType::q8_k:
            break;
    }
    FAIL() << "no CUDA kernel type for " << core::to_string(t);
}

std::vector<int64_t> row_lengths(QType t) {
    if (core::qtype_traits(t).block_size == 256) return {256, 768, 2304};
    return {32, 96, 4160};  // 1, 3 and 130 blocks: not multiples of 256
}

TEST(CudaQuantBlocks, DequantElementIsBitExact) {
    test::Rng rng(1911);
    for (QType t : kTypes) {
        for (int64_t k : row_lengths(t)) {
            const int64_t n = 5;
            core::QTensor w = random_qweights(rng, t, n, k);
            std::vector<float> want(static_cast<size_t>(k));
            int bad = 0;
            for (int64_t r = 0; r < n; ++r) {
                core::dequantize(t, w.row(r), want.data(), k);
                with_kernel_type(t, [&](auto qt) {
                    for (int64_t c = 0; c < k; ++c) {
                        const float got =
                            qblocks::dequant_element<decltype(qt)::value>(w.row(r), c);
                        const float ref = want[static_cast<size_t>(c)];
                        if (std::memcmp(&got, &ref, 4) != 0 && bad++ < 3) {
                            ADD_FAILURE() << core::to_string(t) << " K=" << k << " row " << r
                                          << " element " << c << ": " << got << " vs " << ref;
                        }
                    }
                });
            }
        }
    }
}

TEST(CudaQuantBlocks, LaneLoopsMatchTheDoubleReference) {
    test::Rng rng(1912);
    for (QType t : kTypes) {
        for (int64_t k : row_lengths(t)) {
            for (int rows : {1, 3, static_cast<int>(kQuantGemvMaxRows)}) {
                const int64_t n = 7, ldx = k + 3;  // activation rows wider than K
                core::QTensor w = random_qweights(rng, t, n, k);
                std::vector<float> x(static_cast<size_t>(rows * ldx));
                for (float& v : x) v = static_cast<float>(rng.uniform(-1.0, 1.0));
                std::vector<float> wd(static_cast<size_t>(k));
                int bad = 0;
                for (int64_t r = 0; r < n; ++r) {
                    float sum[kQuantGemvMaxRows] = {};
                    with_kernel_type(t, [&](auto qt) {
                        for (int lane = 0; lane < 32; ++lane) {
                            float acc[kQuantGemvMaxRows] = {};
                            qblocks::gemv_lane<decltype(qt)::value>(w.row(r), k, x.data(), ldx,
                                                                    rows, lane, acc);
                            for (int m = 0; m < rows; ++m) sum[m] += acc[m];
                        }
                    });
                    core::dequantize(t, w.row(r), wd.data(), k);
                    for (int m = 0; m < rows; ++m) {
                        double ref = 0.0, s = 0.0;
                        for (int64_t c = 0; c < k; ++c) {
                            const double p = static_cast<double>(wd[static_cast<size_t>(c)]) *
                                             x[static_cast<size_t>(m * ldx + c)];
                            ref += p;
                            s += std::fabs(p);
                        }
                        const double tol = 3e-5 * s + 1e-7;
                        if (!(std::fabs(sum[m] - ref) <= tol) && bad++ < 3) {
                            ADD_FAILURE() << core::to_string(t) << " K=" << k << " rows=" << rows
                                          << ": out[" << m << ", " << r << "] = " << sum[m]
                                          << ", reference " << ref << " (tolerance " << tol << ")";
                        }
                    }
                }
            }
        }
    }
}

}  // namespace
}  // namespace zs::backends::cuda
