// ZeRO-Inference: a model's transformer blocks stream from the offload tier for each forward, so
// a model larger than memory generates at a rate bound by the disk (DeepSpeed's ZeRO-Inference
// weight offload).
//
//   zero::StreamConfig sc;                     // tier nvme under sc.path, read ahead 2 blocks
//   zero::WeightStream ws(model, source, sc);  // embed + head bound in memory; blocks on the tier
//   model.forward_tokens(ids, pos, kv, rows, &ws);
//
// At construction each block group is read from the weight source (models::fill_hf_group, one group
// at a time, converted straight into the compute dtype) and written as one checksummed tensor file
// (io::AsyncIo, O_DIRECT: the page cache holds nothing of it) under <path>/zerospeed_swap/, or kept
// in a host buffer (cpu tier); the embedding and head groups stay in memory, bound. During a
// forward, before_forward(block) waits for that block's read, binds its weights and issues the
// reads of the next `prefetch` blocks (cyclically: the first blocks of the next forward are read
// while the last ones and the head compute); after_forward unbinds it and frees its buffer. The
// weights are the same bits as a dense load (each source tensor converted once to the compute
// dtype, as DenseParams gets it), so the logits are the in-memory ones bit for bit. Memory: the
// resident groups plus prefetch + 1 block buffers (stream_memory). Batch is the lever: one weight
// pass serves every token of the forward. The swap directory is removed by the destructor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/aio.h"
#include "models/kv_cache.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "zero/offload.h"

namespace zs::zero {

using core::Tensor;

struct StreamConfig {
    Tier tier = Tier::nvme;  // nvme or cpu
    std::string path;        // nvme: where the swap directory goes
    int64_t prefetch = 2;    // blocks read ahead (>= 1)
    bool pin = true;         // mlock the block buffers where allowed
    io::AioConfig aio;
    // > 0: the bytes the resident groups and the buffers may take; the read-ahead shrinks
    // (down to 1) until they fit, else ConfigError with the numbers, before anything is written.
    int64_t memory_cap = 0;
};

// Bytes WeightStream holds for `model` (compute dtype from its RunConfig): the embedding and
// head groups plus (prefetch + 1) buffers of the largest block group. The KV cache and
// activations come on top.
struct StreamMemory {
    int64_t resident = 0;       // embed + head groups
    int64_t buffers = 0;        // (prefetch + 1) * largest block
    int64_t streamed = 0;       // all block groups: bytes read per forward
    int64_t largest_block = 0;  // bytes
    int64_t total() const { return resident + buffers; }
};
StreamMemory stream_memory(const models::Transformer& model, int64_t prefetch);

class WeightStream final : public models::GroupHooks {
public:
    // NotSupported for tensor-parallel, expert-parallel or MoE models and non-CPU devices;
    // ConfigError for a bad tier / prefetch / missing path; IoError from the source or the tier.
    WeightStream(models::Transformer& model, const models::WeightSource& src, StreamConfig cfg);
    ~WeightStream() override;
    WeightStream(const WeightStream&) = delete;
    WeightStream& operator=(const WeightStream&) = delete;

    // A forward that threw between the two (the serving engine ends that batch's requests and
    // goes on) leaves its block bound: the next before_forward releases it first.
    void before_forward(int g) override;
    void after_forward(int g) override;

    // Wait for the reads in flight (read ahead for the next forward); the destructor does.
    void settle();
    const StreamMemory& memory() const { return mem_; }
    int64_t bytes_read() const { return store_->bytes_read(); }  // data + padding + footers
    const std::string& dir() const { return store_->dir(); }

private:
    bool streamed(int g) const;
    void issue(int g);  // start reading block group g into a free buffer (no-op when in flight)
    size_t bytes(int g) const;
    models::Transformer& model_;
    StreamConfig cfg_;
    core::DType ct_;
    StreamMemory mem_;
    std::unique_ptr<SwapStore> store_;
    std::vector<Tensor> resident_;  // per group: the in-memory weights (embed, head)
    std::vector<io::AlignedBuffer> bufs_;
    std::vector<int> free_;  // free buffer ids
    struct Slot {
        int buf = -1;        // the buffer holding (or being read into) the group; -1: none
        bool bound = false;  // between before_forward and after_forward
        io::AioWork read;
    };
    std::vector<Slot> slots_;  // per group
};

// B sequences in lockstep, one ContiguousKvCache each: a forward's flat batch is B equal
// segments of n tokens, segment b sequence b's (prefill: B prompts of one length; decode: one
// token each). What makes batch the lever of weight streaming without the serving engine.
class BatchKvCache final : public models::KvAttention {
public:
    BatchKvCache(const models::ModelConfig& cfg, int64_t batch, int64_t max_tokens,
                 core::DType dtype);
    void attend(int layer, const ops::AttentionOptions& opts, const Tensor& q, const Tensor& k,
                const Tensor& v, const Tensor& out) override;
    void commit(int64_t n_new);  // per sequence
    int64_t length() const { return seqs_.front().length(); }
    int64_t batch() const { return static_cast<int64_t>(seqs_.size()); }

private:
    std::vector<models::ContiguousKvCache> seqs_;
};

}  // namespace zs::zero
