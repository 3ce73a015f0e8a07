// PagedKvAttention: the KvAttention of the serving engine. One forward runs a ragged batch — a flat
// list of N tokens in which every sequence owns one contiguous run of rows (a prompt chunk or a
// single decode token) — and each sequence's keys and values live in fixed-size blocks of a
// KvBlockPool named by its block table. For every layer attend() first writes the new tokens' k/v
// into their slots, then computes causal attention of each sequence's new queries over that
// sequence's cached tokens [0, pos] (f32 accumulation, online softmax over blocks, GQA).
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
#pragma once

#include <span>
#include <vector>

#include "infer/block_pool.h"
#include "models/transformer.h"

namespace zs::infer {

// One sequence's run of rows in a ragged batch.
struct SeqSlice {
    int64_t start = 0;                // first row in the flat batch
    int64_t n_tokens = 0;             // rows [start, start + n_tokens), positions pos, pos + 1, ...
    int64_t pos = 0;                  // position of the first new token (= tokens already cached)
    std::span<const BlockId> blocks;  // block table, covering positions [0, pos + n_tokens)
};

// Store k, v [N, NKV, HS] (any float dtype, last dim contiguous) of every slice's rows into the
// caches [n_blocks, block_size, NKV, HS] at the slots of their positions.
void paged_kv_write(const Tensor& k_cache, const Tensor& v_cache, const Tensor& k, const Tensor& v,
                    std::span<const SeqSlice> seqs);

// out [N, NH, HS] = causal attention of q [N, NH, HS] over the cached keys/values of each
// slice's sequence, positions [0, pos + i] for its i-th row (with opts.window W > 0, only
// (pos + i - W, pos + i]). Query head h reads kv head h / (NH / NKV). opts.scale 0 means
// 1/sqrt(HS). Rows outside every slice are left untouched.
void paged_attention_forward(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                             const Tensor& v_cache, std::span<const SeqSlice> seqs,
                             const ops::AttentionOptions& opts = {});

class PagedKvAttention final : public models::KvAttention {
public:
    explicit PagedKvAttention(KvBlockPool& pool) : pool_(pool) {}

    // The layout of the next forward (slices in row order, tiling [0, N)). The block tables are
    // borrowed and must stay alive and unchanged until the forward ends.
    void set_batch(std::vector<SeqSlice> seqs);
    const std::vector<SeqSlice>& batch() const { return seqs_; }

    void attend(int layer, const ops::AttentionOptions& opts, const Tensor& q, const Tensor& k,
                const Tensor& v, const Tensor& out) override;

private:
    KvBlockPool& pool_;
    std::vector<SeqSlice> seqs_;
    int64_t n_rows_ = 0;
};

}  // namespace zs::infer
