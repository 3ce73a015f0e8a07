// KvBlockPool: refcounts, the intrusive free list (eviction order) and the prefix-cache index.
#include "infer/block_pool.h"

#include <algorithm>
#include <limits>

#include "base/error.h"

namespace zs::infer {

int64_t KvCacheSpec::block_bytes() const {
    const int64_t row = quant == ops::KvQuant::none
                            ? head_dim * static_cast<int64_t>(core::dtype_size(dtype))
                            : head_dim + head_dim / ops::kKvQuantGroup * 2;
    return 2 * n_layers * n_kv_heads * block_size * row;
}

KvCacheDType parse_kv_cache_dtype(const std::string& name, DType compute, const char* flag) {
    if (name == "auto" || name.empty()) return {compute, ops::KvQuant::none};
    if (name == "f32" || name == "float32") return {DType::f32, ops::KvQuant::none};
    if (name == "bf16" || name == "bfloat16") return {DType::bf16, ops::KvQuant::none};
    if (name == "f16" || name == "float16" || name == "fp16")
        return {DType::f16, ops::KvQuant::none};
    if (name == "int8") return {DType::i8, ops::KvQuant::int8};
    if (name == "fp8" || name == "fp8_e4m3") return {DType::i8, ops::KvQuant::fp8_e4m3};
    ZS_THROW(ConfigError, "{}: '{}' is not a KV cache dtype (auto, bf16, f16, f32, int8 or fp8)",
             flag, name);
}

KvCacheSpec KvCacheSpec::for_blocks(const models::ModelConfig& model, int64_t n_blocks,
                                    int64_t block_size, DType dtype, ops::KvQuant quant) {
    KvCacheSpec s;
    s.n_layers = model.n_layers;
    s.n_kv_heads = model.n_kv_heads;
    s.head_dim = model.head_dim;
    s.block_size = block_size;
    s.dtype = quant == ops::KvQuant::none ? dtype : DType::i8;
    s.n_blocks = n_blocks;
    s.quant = quant;
    return s;
}

KvCacheSpec KvCacheSpec::for_memory(const models::ModelConfig& model, int64_t memory_bytes,
                                    int64_t block_size, DType dtype, ops::KvQuant quant) {
    KvCacheSpec s = for_blocks(model, 0, block_size, dtype, quant);
    ZS_CHECK_T(ConfigError, block_size > 0, "kv block size must be > 0 (got {})", block_size);
    const int64_t per_block = s.block_bytes();
    ZS_CHECK_T(ConfigError, per_block > 0, "kv cache block of {} has no bytes", model.model_type);
    s.n_blocks = std::min<int64_t>(memory_bytes / per_block, std::numeric_limits<BlockId>::max());
    ZS_CHECK_T(ConfigError, s.n_blocks > 0,
               "kv cache memory {} holds no block: one block of {} tokens needs {}",
               core::format_bytes(memory_bytes), block_size, core::format_bytes(per_block));
    return s;
}

KvBlockPool::KvBlockPool(const KvCacheSpec& spec) : spec_(spec) {
    ZS_CHECK_T(ConfigError,
               spec.quant != ops::KvQuant::none || spec.dtype == DType::f32 ||
                   spec.dtype == DType::bf16 || spec.dtype == DType::f16,
               "kv cache dtype must be f32, bf16, f16, int8 or fp8 (got {})",
               core::to_string(spec.dtype));
    ZS_CHECK_T(ConfigError,
               spec.quant == ops::KvQuant::none || spec.head_dim % ops::kKvQuantGroup == 0,
               "a {} kv cache needs a head size that is a multiple of {} (got {})",
               ops::to_string(spec.quant), ops::kKvQuantGroup, spec.head_dim);
    ZS_CHECK_T(ConfigError, spec.block_size > 0, "kv block size must be > 0 (got {})",
               spec.block_size);
    ZS_CHECK_T(ConfigError,
               spec.n_blocks > 0 && spec.n_blocks <= std::numeric_limits<BlockId>::max(),
               "kv cache block count must be in [1, 2^31) (got {})", spec.n_blocks);
    ZS_CHECK_T(ConfigError, spec.n_layers > 0 && spec.n_kv_heads > 0 && spec.head_dim > 0,
               "kv cache geometry must be positive (layers {}, kv heads {}, head dim {})",
               spec.n_layers, spec.n_kv_heads, spec.head_dim);
    const core::Shape shape{spec.n_blocks, spec.n_kv_heads, spec.block_size, spec.head_dim};
    const bool quant = spec.quant != ops::KvQuant::none;
    const DType dt = quant ? DType::i8 : spec.dtype;
    spec_.dtype = dt;
    const core::Shape scale_shape{spec.n_blocks, spec.n_kv_heads, spec.block_size,
                                  spec.head_dim / ops::kKvQuantGroup};
    auto alloc = [](const core::Shape& s, DType t) {
        return Tensor::empty(s, t, core::Device::cpu(), core::MemCategory::kv_cache);
    };
    for (int64_t l = 0; l < spec.n_layers; ++l) {
        k_.push_back(alloc(shape, dt));
        v_.push_back(alloc(shape, dt));
        if (quant) {
            ks_.push_back(alloc(scale_shape, DType::f16));
            vs_.push_back(alloc(scale_shape, DType::f16));
        }
    }
    meta_.resize(static_cast<size_t>(spec.n_blocks));
    for (BlockId b = 0; b < static_cast<BlockId>(spec.n_blocks); ++b) push_back(b);
}

ops::PagedKvCache KvBlockPool::cache(int64_t layer) const {
    const auto l = static_cast<size_t>(layer);
    ops::PagedKvCache c{spec_.quant, k_[l], v_[l], {}, {}};
    if (spec_.quant != ops::KvQuant::none) {
        c.k_scale = ks_[l];
        c.v_scale = vs_[l];
    }
    return c;
}

int64_t KvBlockPool::storage_bytes() const {
    int64_t n = 0;
    for (const auto* ts : {&k_, &v_, &ks_, &vs_}) {
        for (const Tensor& t : *ts) n += static_cast<int64_t>(t.nbytes());
    }
    return n;
}

KvPoolStats KvBlockPool::stats() const {
    KvPoolStats s;
    s.n_blocks = spec_.n_blocks;
    s.n_free = n_free_;
    s.n_used = n_used();
    s.n_used_peak = n_used_peak_;
    s.n_cached = static_cast<int64_t>(by_hash_.size());
    s.n_evictions = n_evictions_;
    s.prefix_queries = prefix_queries_;
    s.prefix_hits = prefix_hits_;
    return s;
}

void KvBlockPool::unlink(BlockId b) {
    Meta& m = meta_[static_cast<size_t>(b)];
    (m.prev >= 0 ? meta_[static_cast<size_t>(m.prev)].next : head_) = m.next;
    (m.next >= 0 ? meta_[static_cast<size_t>(m.next)].prev : tail_) = m.prev;
    m.prev = m.next = -1;
    --n_free_;
}

void KvBlockPool::push_front(BlockId b) {
    Meta& m = meta_[static_cast<size_t>(b)];
    m.prev = -1;
    m.next = head_;
    (head_ >= 0 ? meta_[static_cast<size_t>(head_)].prev : tail_) = b;
    head_ = b;
    ++n_free_;
}

void KvBlockPool::push_back(BlockId b) {
    Meta& m = meta_[static_cast<size_t>(b)];
    m.next = -1;
    m.prev = tail_;
    (tail_ >= 0 ? meta_[static_cast<size_t>(tail_)].next : head_) = b;
    tail_ = b;
    ++n_free_;
}

void KvBlockPool::evict(BlockId b) {
    Meta& m = meta_[static_cast<size_t>(b)];
    if (!m.cached) return;
    auto it = by_hash_.find(m.hash);
    if (it != by_hash_.end() && it->second == b) by_hash_.erase(it);
    m.cached = false;
    m.tokens.clear();
    ++n_evictions_;
}

std::optional<std::vector<BlockId>> KvBlockPool::allocate(int64_t n) {
    ZS_ASSERT(n >= 0);
    if (n > n_free_) return std::nullopt;
    std::vector<BlockId> out;
    out.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        BlockId b = head_;
        unlink(b);
        evict(b);
        meta_[static_cast<size_t>(b)].ref = 1;
        out.push_back(b);
    }
    n_used_peak_ = std::max(n_used_peak_, n_used());
    return out;
}

void KvBlockPool::free(std::span<const BlockId> blocks) {
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
        const BlockId b = *it;
        ZS_ASSERT(b >= 0 && b < static_cast<BlockId>(spec_.n_blocks), "block {} out of range", b);
        Meta& m = meta_[static_cast<size_t>(b)];
        ZS_ASSERT(m.ref > 0, "block {} freed more often than referenced", b);
        if (--m.ref > 0) continue;
        if (m.cached) {
            push_back(b);
        } else {
            push_front(b);
        }
    }
}

BlockHash KvBlockPool::hash_block(BlockHash parent, std::span<const int32_t> tokens) {
    // splitmix64's finaliser over (parent, length, tokens): cheap and well mixed. Collisions only
    // cost a miss, since find() compares the stored tokens and parent.
    auto mix = [](uint64_t x) {
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ull;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebull;
        x ^= x >> 31;
        return x;
    };
    uint64_t h = mix(parent ^ 0x9e3779b97f4a7c15ull) ^ mix(tokens.size());
    for (int32_t t : tokens) h = mix(h + 0x9e3779b97f4a7c15ull + static_cast<uint32_t>(t));
    return h;
}

BlockId KvBlockPool::find(BlockHash hash, BlockHash parent, std::span<const int32_t> tokens) const {
    auto it = by_hash_.find(hash);
    if (it == by_hash_.end()) return -1;
    const Meta& m = meta_[static_cast<size_t>(it->second)];
    if (m.parent != parent ||
        !std::equal(tokens.begin(), tokens.end(), m.tokens.begin(), m.tokens.end())) {
        return -1;
    }
    return it->second;
}

std::vector<BlockId> KvBlockPool::acquire_prefix(std::span<const int32_t> tokens,
                                                 int64_t max_blocks) {
    const int64_t bs = spec_.block_size;
    const int64_t n = std::min(max_blocks, static_cast<int64_t>(tokens.size()) / bs);
    std::vector<BlockId> out;
    BlockHash parent = kRootBlockHash;
    for (int64_t i = 0; i < n; ++i) {
        ++prefix_queries_;
        auto blk = tokens.subspan(static_cast<size_t>(i * bs), static_cast<size_t>(bs));
        const BlockHash h = hash_block(parent, blk);
        const BlockId b = find(h, parent, blk);
        if (b < 0) break;
        ++prefix_hits_;
        Meta& m = meta_[static_cast<size_t>(b)];
        if (m.ref++ == 0) unlink(b);
        out.push_back(b);
        parent = h;
    }
    n_used_peak_ = std::max(n_used_peak_, n_used());
    return out;
}

BlockHash KvBlockPool::cache_block(BlockId b, BlockHash parent, std::span<const int32_t> tokens) {
    ZS_ASSERT(static_cast<int64_t>(tokens.size()) == spec_.block_size);
    Meta& m = meta_[static_cast<size_t>(b)];
    ZS_ASSERT(m.ref > 0, "caching free block {}", b);
    const BlockHash h = hash_block(parent, tokens);
    if (m.cached) {  // already indexed (shared from the cache)
        ZS_ASSERT(m.hash == h, "cached block {} re-registered with other content", b);
        return h;
    }
    if (find(h, parent, tokens) >= 0 || by_hash_.count(h)) return h;
    m.cached = true;
    m.hash = h;
    m.parent = parent;
    m.tokens.assign(tokens.begin(), tokens.end());
    by_hash_.emplace(h, b);
    return h;
}

}  // namespace zs::infer
