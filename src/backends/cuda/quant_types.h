// The block types the CUDA quantized kernels read (quant.cu), shared by launch.h (host glue) and
// quant_blocks.cuh (device code, also compiled on the host by quant_blocks_test.cpp): no includes
// beyond <cstdint>, so a build without the CUDA toolkit can use it.
#pragma once

#include <cstdint>

namespace zs::backends::cuda {

// GGUF block types in their file layout (core/quant.h).
enum class QuantType : unsigned char { q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k };
// Most activation rows the decode GEMV takes in one pass (the host glue sends more to prefill).
inline constexpr int64_t kQuantGemvMaxRows = 8;

}  // namespace zs::backends::cuda
