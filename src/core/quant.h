// Block-quantized weights: GGUF's quantization types kept in their file layout, and QTensor, the
// [N, K] matrix of such rows that the linear kernels read directly (never widened at load).
//
// Why not more DType values: a Tensor is an element-strided view (select, transpose, as_strided,
// item(), element sizes in every dtype switch of comm/io/optim); a block of 32 or 256 elements
// packed into bytes has no element stride, and the only views a quantized matrix needs are whole
// rows. So a QTensor is its own small type beside Tensor: rows of `row_bytes()` bytes in one
// Buffer (accounted like any other), sliceable by rows, and nothing else.
//
// Block layouts (little-endian; f16 = IEEE half; K a multiple of the block size):
//   q8_0 (32 el, 34 B): f16 d | i8 q[32]                         x = d * q
//   q4_0 (32 el, 18 B): f16 d | u8 qs[16]                        x = d * (nib - 8)
//   q4_1 (32 el, 20 B): f16 d | f16 m | u8 qs[16]                x = d * nib + m
//   q5_0 (32 el, 22 B): f16 d | u32 qh | u8 qs[16]               x = d * (nib | hb << 4) - 16 d
//   q5_1 (32 el, 24 B): f16 d | f16 m | u32 qh | u8 qs[16]       x = d * (nib | hb << 4) + m
//     nib(i) = low nibble of qs[i] for i < 16, high nibble of qs[i - 16] after; hb(i) = bit i of qh
//   q4_k (256 el, 144 B): f16 d | f16 dmin | u8 scales[12] | u8 qs[128]
//   q5_k (256 el, 176 B): f16 d | f16 dmin | u8 scales[12] | u8 qh[32] | u8 qs[128]
//     8 sub-blocks of 32 with 6-bit scale sc[j] and min mn[j]: x = d sc[j] q - dmin mn[j]
//   q6_k (256 el, 210 B): u8 ql[128] | u8 qh[64] | i8 sc[16] | f16 d    x = d sc[j/16] (q - 32)
//   q8_k (256 el, 292 B): f32 d | i8 q[256] | i16 bsums[16]      x = d * q (activations)
// The bit-level details are in quant.cpp, next to the reference decoders.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/buffer.h"
#include "core/shape.h"

namespace zs::core {

enum class QType : uint8_t { q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q8_k };
inline constexpr int kNumQTypes = 9;

struct QTypeTraits {
    const char* name;    // "q4_1": our spelling (GGUF writes "Q4_1")
    int64_t block_size;  // elements per block
    int64_t block_bytes;
};
const QTypeTraits& qtype_traits(QType t);
inline const char* to_string(QType t) { return qtype_traits(t).name; }
// "q4_1" or "Q4_1"; nullopt for anything else.
std::optional<QType> qtype_from_string(std::string_view s);
// Bytes of a row of k elements (k a multiple of the block size).
inline int64_t qrow_bytes(QType t, int64_t k) {
    const QTypeTraits& tr = qtype_traits(t);
    return k / tr.block_size * tr.block_bytes;
}

// Encode n elements (whole blocks) of src into dst. q8_0, q4_0, q4_1, q5_0, q5_1: bit for bit as
// llama.cpp's reference quantizers (ggml-quants.c quantize_row_*_ref, restated by the gguf
// package's gguf.quants; tested against it). q4_k, q5_k, q6_k: llama.cpp's method without an
// importance matrix (quant.cpp); no package to test bit identity against, but measured
// byte-identical to llama-quantize's files (docs/BENCHMARKS.md). NotSupported for q8_k. Non-finite
// inputs give whatever the reference gives (no check).
void quantize(QType t, const float* src, void* dst, int64_t n);
bool can_quantize(QType t);

// The reference decoder: n elements (whole blocks) from src (any alignment) into dst[0..n).
void dequantize(QType t, const void* src, float* dst, int64_t n);

// How a QTensor's bytes are ordered. `rows`: the file's layout, rows `row_bytes()` apart.
// `interleaved16`: repacked once at load for the decode kernels (quant_pack.cpp states the byte
// order): the rows in groups of 16 (the last one padded with zero rows), each group's blocks
// side by side so that one 64-byte load holds 4 codes of each of the 16 rows and one int8 dot
// product instruction (vpdpbusd) advances all 16 rows. Scales and offsets are kept per block as
// in the file (f16 / 6-bit / int8), so a group holds the same bytes per row as the file (q4_k:
// 148 instead of 144 per 256 elements, its 6-bit scales unpacked to bytes).
enum class QLayout : uint8_t { rows, interleaved16 };
inline constexpr int64_t kInterleaveRows = 16;

// A matrix [rows, cols] of quantized rows, contiguous, rows `row_bytes()` apart. Cheap to copy
// (shares the Buffer). An undefined QTensor (default) has no buffer.
class QTensor {
public:
    QTensor() = default;
    // Allocate rows x cols (cols a multiple of the block size; ShapeError otherwise).
    static QTensor empty(QType type, int64_t rows, int64_t cols, Device device = Device::cpu(),
                         MemCategory category = MemCategory::params);
    // A view of `bytes` bytes of `buffer` at `byte_offset` (checked to fit).
    static QTensor from_buffer(std::shared_ptr<Buffer> buffer, size_t byte_offset, QType type,
                               int64_t rows, int64_t cols);

    bool defined() const { return buf_ != nullptr; }
    QType type() const { return type_; }
    QLayout layout() const { return layout_; }
    int64_t rows() const { return rows_; }
    int64_t cols() const { return cols_; }
    Shape shape() const { return {rows_, cols_}; }
    int64_t row_bytes() const { return qrow_bytes(type_, cols_); }
    size_t nbytes() const;
    Device device() const { return buf_ ? buf_->device() : Device::cpu(); }
    const uint8_t* data() const { return static_cast<const uint8_t*>(buf_->data()) + offset_; }
    uint8_t* mutable_data() const { return static_cast<uint8_t*>(buf_->data()) + offset_; }
    // Row r of a `rows` layout (asserted).
    const uint8_t* row(int64_t r) const;
    // Group g (rows [16 g, 16 g + 16)) of an `interleaved16` layout (asserted).
    const uint8_t* group(int64_t g) const;
    // Rows [begin, end): a view (interleaved16: begin a multiple of 16, end too or rows()).
    QTensor slice_rows(int64_t begin, int64_t end) const;
    // A copy on `device` (this tensor itself when it is there already). Off the CPU the copy
    // always has the `rows` layout (the file's): an interleaved16 tensor is restored row by row
    // on the host first, as the device kernels read GGUF blocks.
    QTensor to(Device device) const;
    // "q4_1[576, 576] cpu"
    std::string str() const;

private:
    std::shared_ptr<Buffer> buf_;
    size_t offset_ = 0;
    QType type_ = QType::q8_0;
    QLayout layout_ = QLayout::rows;
    int64_t rows_ = 0, cols_ = 0;
    friend QTensor interleave16(const QTensor& w);
};

// The interleaved16 layout (quant_pack.cpp): for q8_0, q4_0, q4_1, q5_0, q5_1, q4_k and q6_k.
bool can_interleave(QType t);
// Bytes of one group of 16 rows of k elements.
int64_t interleaved_group_bytes(QType t, int64_t k);
// A new QTensor (own buffer, same device category) holding w (layout rows) interleaved.
QTensor interleave16(const QTensor& w);
// Row r of an interleaved16 tensor, restored bit for bit in the file layout (row_bytes() at dst).
void deinterleave_row(const QTensor& w, int64_t r, uint8_t* dst);

// Q4_0 and Q5_0 blocks hold d (c - 8) and d (c - 16) with an f16 d: the same values are Q8_0
// blocks with that d and int8 codes c - 8 / c - 16, exactly. widen_to_q8_0 rewrites a
// rows-layout q4_0 / q5_0 / q8_0 tensor so (a new buffer; q8_0 is returned as is): a fused
// matrix whose parts the file stores in different ones of these types (llama-quantize's Q4_K_M
// keeps attn_v at q8_0 beside q5_0 attn_q / attn_k) stays quantized as one q8_0 matrix.
bool widens_to_q8_0(QType t);
QTensor widen_to_q8_0(const QTensor& w);

// The 32 six-bit codes (0..63, before the -32 offset) of sub-block j (0..7) of one Q6_K block
// `x` (210 bytes: ql, qh, scales, d), in element order: the kernels' shared unpacking.
void q6_k_codes(const uint8_t* x, int j, uint8_t* out);

}  // namespace zs::core
