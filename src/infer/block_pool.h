// KvBlockPool: the serving engine's paged KV cache — fixed-size blocks of block_size token slots
// carved from a pool sized by a memory budget, their K/V storage, and who holds which block.
//
// Invariants: a block is either used (refcount > 0, owned by one or more sequences' block tables)
// or free (refcount 0, on the free list). The free list is kept in eviction order (front = next
// to be handed out): blocks that hold nothing reusable sit at the front, freed prefix-cached
// blocks are appended at the back (least recently used first). A cached block stays findable by
// its hash until allocate() hands it out again (eviction). Only full blocks are cached, and they
// are never written again while cached, so sharing them between sequences is safe.
// Single-threaded: the engine thread owns the pool.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"
#include "models/config.h"
#include "ops/paged_attention.h"

namespace zs::infer {

using core::DType;
using core::Tensor;

// Block ids and kNoBlock are the paged-attention ops' (ops/paged_attention.h), which read the
// tables. kNoBlock marks a block-table slot whose block was returned to the pool: with a sliding
// window on every layer, the leading blocks no future query can read (scheduler.h). Never passed
// to the pool.
using ops::BlockId;
using ops::kNoBlock;
using BlockHash = uint64_t;

// The hash a chain of blocks starts from (the "parent" of a sequence's first block).
inline constexpr BlockHash kRootBlockHash = 0x5a17'0b10'c4a5'e001ull;

// Geometry of the paged cache.
struct KvCacheSpec {
    int64_t n_layers = 0;    // L
    int64_t n_kv_heads = 0;  // NKV
    int64_t head_dim = 0;    // HS
    int64_t block_size = 16;
    DType dtype = DType::bf16;  // f32, bf16 or f16 (ignored when quant is set)
    int64_t n_blocks = 0;
    // int8 / fp8: one byte per value plus an f16 scale per 32 (ops/paged_attention.h).
    ops::KvQuant quant = ops::KvQuant::none;

    // K and V bytes of one block over all layers: 2 * L * NKV * block_size * (HS * dtype size,
    // or HS + 2 HS / 32 quantized).
    int64_t block_bytes() const;
    // Bytes of one token's K and V over all layers (block_bytes / block_size).
    int64_t token_bytes() const { return block_bytes() / block_size; }

    // The spec for `model` with as many blocks as fit in `memory_bytes` (e.g. --kv-cache-memory).
    // Throws ConfigError when the budget holds no block at all.
    static KvCacheSpec for_memory(const models::ModelConfig& model, int64_t memory_bytes,
                                  int64_t block_size = 16, DType dtype = DType::bf16,
                                  ops::KvQuant quant = ops::KvQuant::none);
    static KvCacheSpec for_blocks(const models::ModelConfig& model, int64_t n_blocks,
                                  int64_t block_size = 16, DType dtype = DType::bf16,
                                  ops::KvQuant quant = ops::KvQuant::none);
};

// --kv-cache-dtype: "f32", "bf16", "f16", "int8" or "fp8" (E4M3) as (dtype, quant); "auto" =
// `compute` (the model's compute dtype). ConfigError naming `flag` and the choices otherwise.
struct KvCacheDType {
    DType dtype = DType::bf16;
    ops::KvQuant quant = ops::KvQuant::none;
};
KvCacheDType parse_kv_cache_dtype(const std::string& name, DType compute, const char* flag);

// Counters for metrics (gauges and totals since construction).
struct KvPoolStats {
    int64_t n_blocks = 0;
    int64_t n_used = 0;       // refcount > 0
    int64_t n_free = 0;       // refcount 0 (including cached ones that may still be reused)
    int64_t n_cached = 0;     // blocks findable by hash (used or free)
    int64_t n_used_peak = 0;  // the most blocks used at once
    int64_t n_evictions = 0;
    int64_t prefix_queries = 0;  // full blocks looked up by acquire_prefix
    int64_t prefix_hits = 0;     // of those, found in the cache
};

class KvBlockPool {
public:
    // Allocates the storage: per layer K and V [n_blocks, NKV, block_size, HS] of spec.dtype,
    // accounted as MemCategory::kv_cache. Throws ConfigError on an invalid spec.
    explicit KvBlockPool(const KvCacheSpec& spec);
    KvBlockPool(const KvBlockPool&) = delete;
    KvBlockPool& operator=(const KvBlockPool&) = delete;

    const KvCacheSpec& spec() const { return spec_; }
    int64_t n_blocks() const { return spec_.n_blocks; }
    int64_t block_size() const { return spec_.block_size; }
    int64_t n_free() const { return n_free_; }
    int64_t n_used() const { return spec_.n_blocks - n_free_; }
    KvPoolStats stats() const;

    // [n_blocks, NKV, block_size, HS] storage of layer `layer` (i8 when quantized).
    const Tensor& k_cache(int64_t layer) const { return k_[static_cast<size_t>(layer)]; }
    const Tensor& v_cache(int64_t layer) const { return v_[static_cast<size_t>(layer)]; }
    // Layer `layer` in any format, with its scales when quantized.
    ops::PagedKvCache cache(int64_t layer) const;
    // Bytes the pool allocated for K, V and scales (core::MemCategory::kv_cache).
    int64_t storage_bytes() const;

    // n fresh blocks (refcount 1) from the front of the free list, evicting cached ones as
    // needed; std::nullopt (nothing taken) when fewer than n are free.
    std::optional<std::vector<BlockId>> allocate(int64_t n);
    // Drop one reference to each block. Blocks reaching refcount 0 join the free list: cached
    // ones at the back, others at the front. A sequence's table is walked from its end, so the
    // tail of a cached chain is evicted before its head (a child is useless without its parent).
    void free(std::span<const BlockId> blocks);

    // ---- prefix caching ----
    // Hash of a full block from its parent's hash and its token ids.
    static BlockHash hash_block(BlockHash parent, std::span<const int32_t> tokens);
    // The longest chain of cached blocks holding tokens[0, k * block_size), k <= max_blocks,
    // with one new reference taken on each (free ones leave the free list). Empty on a miss.
    std::vector<BlockId> acquire_prefix(std::span<const int32_t> tokens, int64_t max_blocks);
    // Make used block `b`, now full with `tokens` (block_size ids) after a chain with hash
    // `parent`, findable by later acquire_prefix calls. Returns the block's hash (the parent of
    // the next). When another block already holds the same content, that one stays cached.
    BlockHash cache_block(BlockId b, BlockHash parent, std::span<const int32_t> tokens);

private:
    struct Meta {
        int32_t ref = 0;
        BlockId prev = -1, next = -1;  // free-list links (refcount 0 only)
        bool cached = false;
        BlockHash hash = 0, parent = 0;
        std::vector<int32_t> tokens;  // cached content, checked on every hit
    };
    void unlink(BlockId b);
    void push_front(BlockId b);
    void push_back(BlockId b);
    void evict(BlockId b);
    // The cached block holding `tokens` after `parent`, or -1.
    BlockId find(BlockHash hash, BlockHash parent, std::span<const int32_t> tokens) const;

    KvCacheSpec spec_;
    std::vector<Tensor> k_, v_;    // per layer [n_blocks, NKV, block_size, HS]
    std::vector<Tensor> ks_, vs_;  // quantized: per layer [n_blocks, NKV, block_size, HS / 32] f16
    std::vector<Meta> meta_;       // [n_blocks]
    BlockId head_ = -1, tail_ = -1;
    int64_t n_free_ = 0;
    int64_t n_used_peak_ = 0;
    std::unordered_map<BlockHash, BlockId> by_hash_;
    int64_t n_evictions_ = 0, prefix_queries_ = 0, prefix_hits_ = 0;
};

}  // namespace zs::infer
