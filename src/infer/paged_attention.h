// PagedKvAttention: the KvAttention (the inference attention core, models/attention_core.h) of
// the serving engine. One forward runs a ragged batch — a flat list of N tokens in which every
// sequence owns one contiguous run of rows (a prompt chunk or a single decode token) — and each
// sequence's keys and values live in fixed-size blocks of a KvBlockPool named by its block table.
// For every layer attend() writes the new tokens' k/v into their slots (ops::paged_kv_write),
// then computes causal attention of each sequence's new queries over that sequence's cached
// tokens [0, pos] (ops::paged_attention_forward, a kernel of the backend the cache lives on).
// ops/paged_attention.h has the worked example of the layout and the block-table rules.
#pragma once

#include <vector>

#include "infer/block_pool.h"
#include "models/attention_core.h"
#include "ops/paged_attention.h"

namespace zs::infer {

// One sequence's run of rows in a ragged batch, with its block table.
using ops::SeqSlice;

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
