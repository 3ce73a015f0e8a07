// Paged attention: causal attention of a ragged batch's queries over a KV cache kept in
// fixed-size blocks (vLLM's PagedAttention), and the write of new keys/values into it. The block
// pool, the block tables and who owns which block live in infer/; these ops only read the tables.
//
//   k_cache, v_cache [n_blocks, NKV, block_size, HS]  f32, bf16 or f16, contiguous, one dtype
//   q, out           [N, NH, HS]                      f32 or bf16 (each its own), last dim
//                                                     contiguous (q may be a view of a fused QKV)
//   k, v             [N, NKV, HS]                     the N new tokens' keys and values
// A block is head-major: each kv head's block_size rows are one contiguous run, so decode reads
// a head's keys as a few long streams (token-major rows put one head's HS values every NKV * HS,
// which the CPU's prefetchers follow poorly: half the speed from memory on Zen 3).
// A ragged batch is a flat list of N rows in which every sequence owns one contiguous run (a
// prompt chunk or a single decode token), described by a SeqSlice with that sequence's block
// table. Query head h reads kv head h / (NH / NKV).
//
// Worked example (block_size 4). Three sequences share one forward of N = 10 rows:
//   A: a prompt chunk, positions 4..9 of a 12-token prompt (0..3 were computed last step)
//   B: one decode token at position 6
//   C: the first chunk of a new prompt, positions 0..2
//
//   row        0  1  2  3  4  5 | 6 | 7  8  9
//   sequence   A  A  A  A  A  A | B | C  C  C
//   position   4  5  6  7  8  9 | 6 | 0  1  2        (the positions tensor given to the model)
//
//   SeqSlice A {start 0, n_tokens 6, pos 4, blocks [7, 2, 5]}  positions 0-3 in block 7,
//                                                              4-7 in block 2, 8-9 in block 5
//   SeqSlice B {start 6, n_tokens 1, pos 6, blocks [3, 9]}     position 6 = block 9, slot 2
//   SeqSlice C {start 7, n_tokens 3, pos 0, blocks [4]}
//
// Row 4 (A at position 8) writes its k/v into block 5 slot 0 and attends keys 0..8: all of
// blocks 7 and 2, then slot 0 of block 5. Row 6 (B) attends keys 0..6 through blocks 3 and 9.
// Block tables must cover [0, pos + n_tokens); blocks a sequence shares through the prefix cache
// are full and lie below pos, so they are only read. With a sliding window W, slots of blocks
// wholly below pos - W + 1 (the first key of the slice's first query) may hold kNoBlock: no query
// of the slice reads them (a slot in range holding kNoBlock is a ShapeError, never a read).
//
// Block tables are host memory (spans) on every device; a device backend uploads what it needs.
// Each query's result depends only on its position and the cached values, never on how the
// batch was split into slices or chunks, nor on the thread count (the serving engine relies on
// it: a sequence decodes the same tokens whatever shares its forward).
#pragma once

#include <cstdint>
#include <span>

#include "core/tensor.h"
#include "ops/attention.h"

namespace zs::ops {

using BlockId = int32_t;

// A block-table slot whose block was returned to the pool (below a sliding window).
inline constexpr BlockId kNoBlock = -1;

// One sequence's run of rows in a ragged batch.
struct SeqSlice {
    int64_t start = 0;                // first row in the flat batch
    int64_t n_tokens = 0;             // rows [start, start + n_tokens), positions pos, pos + 1, ...
    int64_t pos = 0;                  // position of the first new token (= tokens already cached)
    std::span<const BlockId> blocks;  // block table, covering positions [0, pos + n_tokens)
};

// ---- Quantized caches (--kv-cache-dtype int8 / fp8) ----
// K and V stored as one byte per value with one f16 scale per kKvQuantGroup consecutive values
// of a head's row (HS a multiple of kKvQuantGroup):
//   int8      x = d * q, q in [-127, 127], d = max|x| / 127 of the group (f16-rounded)
//   fp8_e4m3  x = d * e4m3(q) (OCP E4M3FN: bias 7, max 448, no infinities), d = max|x| / 448
// Values are rounded to nearest even after dividing by the f16-rounded d (so |q| never exceeds
// the format's range). One token's K (or V) takes NKV * HS * (1 + 2 / 32) bytes: 53% of bf16.
enum class KvQuant : uint8_t { none, int8, fp8_e4m3 };
inline constexpr int64_t kKvQuantGroup = 32;
const char* to_string(KvQuant q);

// One layer's paged cache in any format. quant none: k, v f32 or bf16 and no scales; otherwise
// k, v i8 [n_blocks, NKV, block_size, HS] (raw bytes for fp8) and k_scale, v_scale f16
// [n_blocks, NKV, block_size, HS / kKvQuantGroup].
struct PagedKvCache {
    KvQuant quant = KvQuant::none;
    Tensor k, v, k_scale, v_scale;
};

// Reference codecs (scalar, the kernels' contract): one group of kKvQuantGroup values.
void kv_quantize_group(KvQuant q, const float* x, int8_t* dst, core::f16* scale);
void kv_dequantize_group(KvQuant q, const int8_t* src, core::f16 scale, float* x);

// Store k, v [N, NKV, HS] of every slice's rows into the caches at the slots of their positions
// (converted to the cache dtype, round to nearest even). Rows outside every slice are not read.
void paged_kv_write(const Tensor& k_cache, const Tensor& v_cache, const Tensor& k, const Tensor& v,
                    std::span<const SeqSlice> seqs);

// out [N, NH, HS] = causal attention of q [N, NH, HS] over the cached keys/values of each
// slice's sequence, positions [0, pos + i] for its i-th row (with opts.window W > 0, only
// (pos + i - W, pos + i]); f32 accumulation, online softmax. opts.causal must be true; opts.scale
// 0 means 1/sqrt(HS). Rows outside every slice are left untouched.
void paged_attention_forward(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                             const Tensor& v_cache, std::span<const SeqSlice> seqs,
                             const AttentionOptions& opts = {});

// The same ops over a cache in any format (quant none: the functions above). A quantized cache
// is read in place: the kernel dequantizes the keys and values of each tile it works on, never a
// full-precision copy of the cache.
void paged_kv_write(const PagedKvCache& cache, const Tensor& k, const Tensor& v,
                    std::span<const SeqSlice> seqs);
void paged_attention_forward(const Tensor& out, const Tensor& q, const PagedKvCache& cache,
                             std::span<const SeqSlice> seqs, const AttentionOptions& opts = {});

}  // namespace zs::ops
