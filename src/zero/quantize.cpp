#include "zero/quantize.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "base/error.h"
#include "core/half.h"

namespace zs::zero {

using core::DType;
using core::Tensor;

namespace {

void check_format(const QuantFormat& f) {
    ZS_CHECK(f.bits == 8 || f.bits == 4, "quantize: {} bits (8 or 4)", f.bits);
    ZS_CHECK(f.block > 0 && (f.bits == 8 || f.block % 2 == 0),
             "quantize: block of {} elements (positive; even for int4)", f.block);
}

void check_values(const char* what, const Tensor& t) {
    ZS_CHECK(t.defined() && t.is_contiguous() && t.device().is_cpu(),
             "{}: a contiguous CPU tensor is needed, got {}", what, t.defined() ? t.str() : "none");
    ZS_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::bf16 || t.dtype() == DType::f16,
             "{}: f32, bf16 or f16 values, got {}", what, t.str());
}

// Run fn(block index, first element, count) over the blocks of n elements, in parallel when
// there are enough of them to pay for a team; fn only touches its own block's bytes.
template <class Fn>
void for_blocks(int64_t n, int64_t block, const Fn& fn) {
    const int64_t nb = (n + block - 1) / block;
#pragma omp parallel for schedule(static) if (n >= (int64_t{1} << 16))
    for (int64_t b = 0; b < nb; ++b) {
        const int64_t first = b * block;
        fn(b, first, std::min(block, n - first));
    }
}

// The largest |x| of n values as its f32 bit pattern without the sign: an integer max, which
// vectorises without -ffast-math and orders every finite value and Inf below any NaN.
uint32_t abs_max_bits(const float* x, int64_t n) {
    uint32_t m = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t u;
        std::memcpy(&u, x + i, 4);
        u &= 0x7fffffffu;
        m = u > m ? u : m;
    }
    return m;
}

// One block: its scale (returned) and codes q[0, n).
float quantize_block(const float* x, int64_t n, int qmax, int8_t* q) {
    const uint32_t mb = abs_max_bits(x, n);
    const float amax = core::f32_from_bits(mb);
    const float scale = mb >= 0x7f800000u ? std::numeric_limits<float>::quiet_NaN()
                                          : amax / static_cast<float>(qmax);
    if (!(scale > 0.0f)) {  // zeros, underflow, or a non-finite value: codes 0
        std::memset(q, 0, static_cast<size_t>(n));
        return scale;
    }
    const auto lim = static_cast<float>(qmax);
    for (int64_t i = 0; i < n; ++i) {
        float r = std::nearbyint(x[i] / scale);
        r = r < -lim ? -lim : r;
        r = r > lim ? lim : r;
        q[i] = static_cast<int8_t>(static_cast<int>(r));
    }
    return scale;
}

// n values of x as f32: the values themselves, or converted into tmp.
const float* as_f32(const Tensor& x, int64_t first, int64_t n, std::vector<float>& tmp) {
    if (x.dtype() == DType::f32) return x.data<float>() + first;
    tmp.resize(static_cast<size_t>(n));
    const size_t es = core::dtype_size(x.dtype());
    core::convert(tmp.data(), DType::f32,
                  static_cast<const char*>(x.data_ptr()) + static_cast<size_t>(first) * es,
                  x.dtype(), static_cast<size_t>(n));
    return tmp.data();
}

// The codes of block [first, first + n) as int8 (int4 nibbles unpacked into tmp).
const int8_t* block_codes(const std::byte* codes, int bits, int64_t first, int64_t n,
                          std::vector<int8_t>& tmp) {
    if (bits == 8) return reinterpret_cast<const int8_t*>(codes) + first;
    // int4: first is even (the block is), so the block starts at a byte boundary.
    tmp.resize(static_cast<size_t>(n) + 1);
    const auto* p = reinterpret_cast<const uint8_t*>(codes) + first / 2;
    for (int64_t k = 0; k < (n + 1) / 2; ++k) {
        tmp[static_cast<size_t>(2 * k)] = static_cast<int8_t>((p[k] & 0x0f) - 8);
        tmp[static_cast<size_t>(2 * k + 1)] = static_cast<int8_t>((p[k] >> 4) - 8);
    }
    return tmp.data();
}

float load_scale(const std::byte* packed, int64_t b) {
    float s;
    std::memcpy(&s, packed + 4 * b, 4);
    return s;
}

}  // namespace

int quant_max(int bits) { return bits == 4 ? 7 : 127; }

int64_t quant_blocks(int64_t n, const QuantFormat& f) {
    check_format(f);
    return (n + f.block - 1) / f.block;
}

int64_t packed_bytes(int64_t n, const QuantFormat& f) {
    return 4 * quant_blocks(n, f) + (f.bits == 8 ? n : (n + 1) / 2);
}

double quantize_error_bound(double block_max, int bits) {
    const int qmax = quant_max(bits);
    return block_max / (2.0 * qmax) + block_max * std::ldexp(1.0, -21) +
           qmax * static_cast<double>(std::numeric_limits<float>::denorm_min());
}

void quantize(const Tensor& x, const QuantFormat& f, std::byte* packed) {
    check_format(f);
    check_values("quantize", x);
    const int64_t n = x.numel();
    const int qmax = quant_max(f.bits);
    std::byte* codes = packed + 4 * quant_blocks(n, f);
    for_blocks(n, f.block, [&](int64_t b, int64_t first, int64_t len) {
        thread_local std::vector<float> tmp;
        thread_local std::vector<int8_t> q4;
        const float* v = as_f32(x, first, len, tmp);
        float scale = 0;
        if (f.bits == 8) {
            scale = quantize_block(v, len, qmax, reinterpret_cast<int8_t*>(codes) + first);
        } else {
            q4.resize(static_cast<size_t>(len));
            scale = quantize_block(v, len, qmax, q4.data());
            auto* p = reinterpret_cast<uint8_t*>(codes) + first / 2;
            for (int64_t k = 0; k < len / 2; ++k) {
                const auto lo = static_cast<uint8_t>(q4[static_cast<size_t>(2 * k)] + 8);
                const auto hi = static_cast<uint8_t>(q4[static_cast<size_t>(2 * k + 1)] + 8);
                p[k] = static_cast<uint8_t>(lo | (hi << 4));
            }
            if (len % 2) p[len / 2] = static_cast<uint8_t>(q4[static_cast<size_t>(len - 1)] + 8);
        }
        std::memcpy(packed + 4 * b, &scale, 4);
    });
}

void dequantize(const std::byte* packed, const QuantFormat& f, const Tensor& out) {
    check_format(f);
    check_values("dequantize", out);
    const int64_t n = out.numel();
    const std::byte* codes = packed + 4 * quant_blocks(n, f);
    for_blocks(n, f.block, [&](int64_t b, int64_t first, int64_t len) {
        thread_local std::vector<float> tmp;
        thread_local std::vector<int8_t> q4;
        const float scale = load_scale(packed, b);
        const int8_t* q = block_codes(codes, f.bits, first, len, q4);
        float* y = out.dtype() == DType::f32 ? out.data<float>() + first : nullptr;
        if (!y) {
            tmp.resize(static_cast<size_t>(len));
            y = tmp.data();
        }
        for (int64_t i = 0; i < len; ++i) y[i] = static_cast<float>(q[i]) * scale;
        if (out.dtype() != DType::f32) {
            const size_t es = core::dtype_size(out.dtype());
            core::convert(static_cast<char*>(out.data_ptr()) + static_cast<size_t>(first) * es,
                          out.dtype(), y, DType::f32, static_cast<size_t>(len));
        }
    });
}

void dequantize_add(const std::byte* packed, const QuantFormat& f, const Tensor& acc) {
    check_format(f);
    ZS_CHECK(
        acc.defined() && acc.dtype() == DType::f32 && acc.is_contiguous() && acc.device().is_cpu(),
        "dequantize_add: a contiguous f32 CPU accumulator is needed, got {}",
        acc.defined() ? acc.str() : "none");
    const int64_t n = acc.numel();
    const std::byte* codes = packed + 4 * quant_blocks(n, f);
    float* a = acc.data<float>();
    for_blocks(n, f.block, [&](int64_t b, int64_t first, int64_t len) {
        thread_local std::vector<int8_t> q4;
        const float scale = load_scale(packed, b);
        const int8_t* q = block_codes(codes, f.bits, first, len, q4);
        float* y = a + first;
        for (int64_t i = 0; i < len; ++i) y[i] += static_cast<float>(q[i]) * scale;
    });
}

}  // namespace zs::zero
