// Block-quantized symmetric integers for ZeRO++'s quantized communication (qwZ: stage 3's weight
// all-gather; qgZ: the gradient reduce-scatter as an all-to-all): the group-wise quantization of
// ZeRO++, one f32 scale per block of `block` consecutive elements.
//
// Per block of values x (the last block of a buffer may be shorter: "ragged"):
//   scale = max|x| / qmax              f32 division; qmax = 127 (int8) or 7 (int4)
//   q     = clamp(nearbyint(x / scale), -qmax, qmax)    round to nearest, ties to even
//   x'    = q * scale                  f32 product (then rounded to bf16/f16 for such outputs)
// so |x - x'| <= scale / 2 = max|x| / (2 qmax) per element, up to f32 rounding
// (quantize_error_bound). A block of zeros (or of magnitudes so small that max|x| / qmax
// underflows to 0) has scale 0 and dequantizes to zeros. A block holding an Inf or NaN has scale
// NaN and dequantizes to NaNs, so overflow checks downstream still see it.
//
// Packed layout of n values (one buffer, so a rank's part of a collective is one byte range):
//   [ceil(n / block) f32 scales, native byte order][codes]
// codes: int8, one byte per value; int4, two values per byte, value i in byte i / 2, the low
// nibble for even i, each nibble holding q + 8 (1..15); an odd n leaves the last high nibble 0.
// Scales are read and written with memcpy: a packed buffer needs no alignment.
//
//   std::vector<std::byte> p(packed_bytes(n, f));
//   quantize(x, f, p.data());               // x: f32 / bf16 / f16 [n], contiguous, host
//   dequantize(p.data(), f, y);             // y: f32 / bf16 / f16 [n]
//   dequantize_add(p.data(), f, acc);       // acc: f32 [n] += the dequantized values
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/tensor.h"

namespace zs::zero {

// Elements per scale in ZeRO++'s exchanges (zero::Config::quant_block, the estimate).
inline constexpr int64_t kQuantBlock = 256;

struct QuantFormat {
    int bits = 8;                 // 8 (int8) or 4 (int4, two per byte)
    int64_t block = kQuantBlock;  // elements per scale; even for int4
};

// 127 for int8, 7 for int4 (symmetric: -qmax..qmax).
int quant_max(int bits);
// Scales (blocks) of n values.
int64_t quant_blocks(int64_t n, const QuantFormat& f);
// Bytes of n packed values: 4 * quant_blocks + n (int8) or ceil(n / 2) (int4).
int64_t packed_bytes(int64_t n, const QuantFormat& f);
// The bound on |x - x'| (f32 x') for one element of a block whose largest magnitude is
// `block_max`: block_max / (2 qmax), half a quantization step, plus the f32 rounding of the scale,
// the division and the product (under 8 units of roundoff, 2^-24, of block_max) and, for scales
// in or below the subnormal range, qmax of the smallest subnormal. bf16 / f16 outputs add their
// own rounding: half an ulp of x'.
double quantize_error_bound(double block_max, int bits);

// Quantize the n = x.numel() values of x (f32, bf16 or f16; contiguous, on the CPU) into
// `packed` (packed_bytes(n, f) bytes). Deterministic; parallel over blocks (OpenMP).
void quantize(const core::Tensor& x, const QuantFormat& f, std::byte* packed);
// out (f32, bf16 or f16 [n], contiguous, on the CPU) = the dequantized values of `packed`.
void dequantize(const std::byte* packed, const QuantFormat& f, const core::Tensor& out);
// acc (f32 [n], contiguous, on the CPU) += the dequantized values of `packed`, element by element
// (so a sum over ranks added in rank order is the same on every rank).
void dequantize_add(const std::byte* packed, const QuantFormat& f, const core::Tensor& acc);

}  // namespace zs::zero
