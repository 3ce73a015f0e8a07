// KvBlockPool against its contract: allocation is all-or-nothing, refcounts, the eviction order
// (uncached free blocks first, then cached ones least recently freed first, a chain's tail before
// its head), prefix hits that check tokens and parents, the memory-budget formula, and a random
// workload checked against a naive refcount model (no leak, no block handed out twice).
#include "infer/block_pool.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <tuple>

#include <gtest/gtest.h>

#include "base/error.h"

namespace zs::infer {
namespace {

KvCacheSpec tiny_spec(int64_t n_blocks, int64_t block_size = 4) {
    KvCacheSpec s;
    s.n_layers = 1;
    s.n_kv_heads = 1;
    s.head_dim = 2;
    s.block_size = block_size;
    s.dtype = DType::f32;
    s.n_blocks = n_blocks;
    return s;
}

std::vector<int32_t> iota_tokens(int64_t n, int32_t first) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    std::iota(t.begin(), t.end(), first);
    return t;
}

// Register blocks[i] as holding tokens [i * bs, (i + 1) * bs) of `toks`, as a sequence would.
void cache_chain(KvBlockPool& pool, const std::vector<BlockId>& blocks,
                 const std::vector<int32_t>& toks) {
    const auto bs = static_cast<size_t>(pool.block_size());
    BlockHash parent = kRootBlockHash;
    for (size_t i = 0; i < blocks.size(); ++i) {
        parent = pool.cache_block(blocks[i], parent, std::span(toks).subspan(i * bs, bs));
    }
}

TEST(KvBlockPool, AllocateIsAllOrNothingAndFreeReturnsBlocks) {
    KvBlockPool pool(tiny_spec(8));
    EXPECT_EQ(pool.n_free(), 8);
    auto a = pool.allocate(3);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->size(), 3u);
    EXPECT_EQ(std::set<BlockId>(a->begin(), a->end()).size(), 3u);
    EXPECT_EQ(pool.n_used(), 3);
    EXPECT_FALSE(pool.allocate(6).has_value());  // only 5 free: nothing is taken
    EXPECT_EQ(pool.n_free(), 5);
    auto b = pool.allocate(5);
    ASSERT_TRUE(b.has_value());
    std::set<BlockId> all(a->begin(), a->end());
    all.insert(b->begin(), b->end());
    EXPECT_EQ(all.size(), 8u);
    EXPECT_FALSE(pool.allocate(1).has_value());
    pool.free(*a);
    pool.free(*b);
    EXPECT_EQ(pool.n_used(), 0);
    EXPECT_EQ(pool.n_free(), 8);
    EXPECT_TRUE(pool.allocate(0).has_value());
}

TEST(KvBlockPool, StorageIsSizedAndAccountedAsKvCache) {
    KvCacheSpec s = tiny_spec(5, 16);
    s.n_layers = 3;
    s.n_kv_heads = 2;
    s.head_dim = 8;
    s.dtype = DType::bf16;
    const int64_t before = core::memory_stats().current_of(core::MemCategory::kv_cache);
    {
        KvBlockPool pool(s);
        EXPECT_EQ(pool.k_cache(2).shape(), core::Shape({5, 2, 16, 8}));
        EXPECT_EQ(pool.v_cache(0).dtype(), DType::bf16);
        const int64_t now = core::memory_stats().current_of(core::MemCategory::kv_cache);
        EXPECT_EQ(now - before, 5 * s.block_bytes());
    }
}

TEST(KvBlockPool, MemoryBudgetMapsToBlocks) {
    models::ModelConfig mc;
    mc.model_type = "llama";
    mc.n_layers = 4;
    mc.n_kv_heads = 2;
    mc.head_dim = 64;
    // One block: 2 (K and V) * 4 layers * 2 heads * 64 dims * 16 tokens * 2 bytes = 32 KiB.
    KvCacheSpec s = KvCacheSpec::for_memory(mc, int64_t{1} << 20, 16, DType::bf16);
    EXPECT_EQ(s.block_bytes(), 2 * 4 * 2 * 64 * 16 * 2);
    EXPECT_EQ(s.n_blocks, (int64_t{1} << 20) / (2 * 4 * 2 * 64 * 16 * 2));
    EXPECT_EQ(KvCacheSpec::for_memory(mc, (int64_t{1} << 20) + 5, 16, DType::f32).n_blocks,
              (int64_t{1} << 20) / (2 * 4 * 2 * 64 * 16 * 4));
    EXPECT_THROW(KvCacheSpec::for_memory(mc, 1000, 16, DType::bf16), ConfigError);
    EXPECT_THROW(KvBlockPool(tiny_spec(0)), ConfigError);
    KvCacheSpec ints = tiny_spec(2);
    ints.dtype = DType::i32;
    EXPECT_THROW(KvBlockPool{ints}, ConfigError);
}

// Quantized caches (int8, fp8): the bytes per token the allocator accounts against bf16's, and
// how many 256-token sequences a fixed budget holds (allocating their blocks until the pool
// refuses), for SmolLM2-135M's geometry (30 layers, 3 kv heads, head size 64). Expected from the
// layout: a value takes 1 byte plus an f16 scale per 32 (1.0625 bytes) against bf16's 2, so the
// bytes per token are 53.1% of bf16's and the sequences 2 / 1.0625 = 1.88x as many.
TEST(KvBlockPool, QuantizedCacheHalvesBytesPerTokenAndNearlyDoublesSequences) {
    models::ModelConfig mc;
    mc.model_type = "llama";
    mc.n_layers = 30;
    mc.n_kv_heads = 3;
    mc.head_dim = 64;
    const int64_t budget = int64_t{256} << 20, bs = 16, seq_blocks = 256 / bs;
    std::map<std::string, std::pair<double, int64_t>> got;  // bytes per token, sequences
    for (auto [name, quant, dt] : {std::tuple{"bf16", ops::KvQuant::none, DType::bf16},
                                   std::tuple{"f16", ops::KvQuant::none, DType::f16},
                                   std::tuple{"int8", ops::KvQuant::int8, DType::bf16},
                                   std::tuple{"fp8", ops::KvQuant::fp8_e4m3, DType::bf16}}) {
        const KvCacheSpec s = KvCacheSpec::for_memory(mc, budget, bs, dt, quant);
        const int64_t before = core::memory_stats().current_of(core::MemCategory::kv_cache);
        KvBlockPool pool(s);
        const int64_t bytes = core::memory_stats().current_of(core::MemCategory::kv_cache) - before;
        EXPECT_EQ(bytes, pool.storage_bytes()) << name;
        EXPECT_LE(bytes, budget) << name;
        int64_t seqs = 0;
        while (pool.allocate(seq_blocks)) ++seqs;
        got[name] = {static_cast<double>(bytes) / static_cast<double>(s.n_blocks * bs), seqs};
        const double per_value = quant == ops::KvQuant::none ? 2.0 : 1.0 + 2.0 / 32;
        EXPECT_DOUBLE_EQ(got[name].first, 2.0 * 30 * 3 * 64 * per_value) << name;
    }
    for (const char* q : {"int8", "fp8"}) {
        EXPECT_LE(got[q].first / got["bf16"].first, 0.54) << q;
        const double ratio =
            static_cast<double>(got[q].second) / static_cast<double>(got["bf16"].second);
        EXPECT_GE(ratio, 1.85) << q << ": " << got[q].second << " vs " << got["bf16"].second;
        EXPECT_LE(ratio, 2.0 / 1.0625 + 0.03) << q;
    }
    // Layout limits and the flag's spelling are refused by name.
    models::ModelConfig odd = mc;
    odd.head_dim = 40;
    EXPECT_THROW(KvBlockPool(KvCacheSpec::for_blocks(odd, 2, bs, DType::bf16, ops::KvQuant::int8)),
                 ConfigError);
    EXPECT_THROW(parse_kv_cache_dtype("int4", DType::bf16, "--kv-cache-dtype"), ConfigError);
    EXPECT_EQ(parse_kv_cache_dtype("auto", DType::f32, "--kv-cache-dtype").dtype, DType::f32);
    EXPECT_EQ(parse_kv_cache_dtype("fp8", DType::f32, "--kv-cache-dtype").quant,
              ops::KvQuant::fp8_e4m3);
    const KvCacheDType f16 = parse_kv_cache_dtype("f16", DType::bf16, "--kv-cache-dtype");
    EXPECT_EQ(f16.dtype, DType::f16);
    EXPECT_EQ(f16.quant, ops::KvQuant::none);
}

TEST(KvBlockPool, PrefixHitsShareBlocksWithRefcounts) {
    KvBlockPool pool(tiny_spec(8));
    const std::vector<int32_t> toks = iota_tokens(12, 100);
    auto a = *pool.allocate(3);
    cache_chain(pool, a, toks);
    // Same tokens: the whole chain, the same blocks.
    auto hit = pool.acquire_prefix(toks, 3);
    EXPECT_EQ(hit, a);
    EXPECT_EQ(pool.n_used(), 3);
    // max_blocks caps the match.
    auto two = pool.acquire_prefix(toks, 2);
    EXPECT_EQ(two, std::vector<BlockId>(a.begin(), a.begin() + 2));
    pool.free(two);
    // Freeing the owner keeps shared blocks used; freeing the sharer releases them.
    pool.free(a);
    EXPECT_EQ(pool.n_used(), 3);
    pool.free(hit);
    EXPECT_EQ(pool.n_used(), 0);
    // Free but cached: still findable, and taking it off the free list makes it used again.
    auto again = pool.acquire_prefix(toks, 3);
    EXPECT_EQ(again, a);
    EXPECT_EQ(pool.n_used(), 3);
    pool.free(again);
    const KvPoolStats st = pool.stats();
    EXPECT_EQ(st.prefix_queries, 3 + 2 + 3);
    EXPECT_EQ(st.prefix_hits, 3 + 2 + 3);
    EXPECT_EQ(st.n_cached, 3);
}

TEST(KvBlockPool, PrefixMatchChecksTokensAndParents) {
    KvBlockPool pool(tiny_spec(8));
    const std::vector<int32_t> toks = iota_tokens(12, 0);
    auto a = *pool.allocate(3);
    cache_chain(pool, a, toks);
    // Differs in block 1: only block 0 matches.
    std::vector<int32_t> t2 = toks;
    t2[5] = 99;
    auto h2 = pool.acquire_prefix(t2, 3);
    EXPECT_EQ(h2, std::vector<BlockId>{a[0]});
    pool.free(h2);
    // Block 1's tokens after a different block 0: no match at all (a block's key includes its
    // parent).
    std::vector<int32_t> t3 = toks;
    t3[0] = 77;
    EXPECT_TRUE(pool.acquire_prefix(t3, 3).empty());
    // Partial trailing block is never matched.
    EXPECT_EQ(pool.acquire_prefix(std::span(toks).first(7), 3).size(), 1u);
    pool.free(std::vector<BlockId>{a[0]});
    pool.free(a);
    EXPECT_EQ(pool.n_used(), 0);
}

TEST(KvBlockPool, EvictionOrderUncachedFirstThenLeastRecentlyFreedTailFirst) {
    KvBlockPool pool(tiny_spec(8));
    const std::vector<int32_t> x = iota_tokens(12, 0), y = iota_tokens(8, 50);
    auto all = *pool.allocate(8);
    std::vector<BlockId> cx(all.begin(), all.begin() + 3), cy(all.begin() + 3, all.begin() + 5);
    std::vector<BlockId> plain(all.begin() + 5, all.end());
    cache_chain(pool, cx, x);
    cache_chain(pool, cy, y);
    pool.free(cx);     // freed first: least recently used
    pool.free(plain);  // nothing cached in these: handed out before any cached block
    pool.free(cy);
    // The three uncached blocks go first; both chains survive.
    auto p = *pool.allocate(3);
    EXPECT_EQ(std::set<BlockId>(p.begin(), p.end()), std::set<BlockId>(plain.begin(), plain.end()));
    auto hx = pool.acquire_prefix(x, 3);
    EXPECT_EQ(hx.size(), 3u);
    pool.free(hx);  // x is now the most recently freed; y the least
    // Next: y's tail block, then y's head.
    auto e1 = *pool.allocate(1);
    EXPECT_EQ(e1[0], cy[1]);
    auto hy = pool.acquire_prefix(y, 2);
    EXPECT_EQ(hy, std::vector<BlockId>{cy[0]});
    pool.free(hy);  // y's head becomes the most recent
    auto e2 = *pool.allocate(1);
    EXPECT_EQ(e2[0], cx[2]);  // x's tail: x is older than y's head now
    EXPECT_EQ(pool.acquire_prefix(x, 3).size(), 2u);
    EXPECT_GE(pool.stats().n_evictions, 2);
}

TEST(KvBlockPool, DuplicateContentKeepsTheFirstCachedBlock) {
    KvBlockPool pool(tiny_spec(4));
    const std::vector<int32_t> t = iota_tokens(4, 3);
    auto a = *pool.allocate(1), b = *pool.allocate(1);
    const BlockHash ha = pool.cache_block(a[0], kRootBlockHash, t);
    const BlockHash hb = pool.cache_block(b[0], kRootBlockHash, t);
    EXPECT_EQ(ha, hb);
    EXPECT_EQ(ha, KvBlockPool::hash_block(kRootBlockHash, t));
    EXPECT_EQ(pool.stats().n_cached, 1);
    auto h = pool.acquire_prefix(t, 1);
    EXPECT_EQ(h, a);
    pool.free(b);  // b held nothing findable: it is handed out first
    EXPECT_EQ((*pool.allocate(1))[0], b[0]);
}

// A random workload of sequences allocating, sharing through the cache and freeing, checked
// against a naive model of refcounts after every operation.
TEST(KvBlockPool, RandomWorkloadMatchesNaiveRefcounts) {
    const int64_t bs = 4, n_blocks = 24;
    KvBlockPool pool(tiny_spec(n_blocks, bs));
    std::mt19937 gen(301);
    std::map<int, std::vector<BlockId>> live;  // sequence -> its blocks
    std::map<BlockId, int> refs;               // naive model
    int next = 0;
    for (int it = 0; it < 2000; ++it) {
        const bool add = live.empty() || gen() % 3 != 0;
        if (add) {
            // Prompts from a few shared prefixes so the cache gets hits.
            const int32_t family = static_cast<int32_t>(gen() % 3);
            const int64_t len = 1 + gen() % 20;
            std::vector<int32_t> toks(static_cast<size_t>(len));
            for (int64_t i = 0; i < len; ++i)
                toks[static_cast<size_t>(i)] = i < 8 ? family * 100 + static_cast<int32_t>(i)
                                                     : static_cast<int32_t>(gen() % 5);
            std::vector<BlockId> blocks = pool.acquire_prefix(toks, (len - 1) / bs);
            const int64_t need = (len + bs - 1) / bs - static_cast<int64_t>(blocks.size());
            const int64_t free_before = pool.n_free();
            auto got = pool.allocate(need);
            ASSERT_EQ(got.has_value(), need <= free_before);
            if (!got) {
                pool.free(blocks);
                continue;
            }
            blocks.insert(blocks.end(), got->begin(), got->end());
            for (BlockId b : *got) ASSERT_EQ(refs[b], 0) << "block " << b << " handed out twice";
            for (BlockId b : blocks) ++refs[b];
            cache_chain(pool, std::vector<BlockId>(blocks.begin(), blocks.begin() + len / bs),
                        toks);
            live[next++] = blocks;
        } else {
            auto itl = live.begin();
            std::advance(itl, static_cast<long>(gen() % live.size()));
            pool.free(itl->second);
            for (BlockId b : itl->second) --refs[b];
            live.erase(itl);
        }
        int64_t used = 0;
        for (auto& [b, r] : refs) used += r > 0;
        ASSERT_EQ(pool.n_used(), used) << "after operation " << it;
        ASSERT_EQ(pool.n_free(), n_blocks - used);
    }
    for (auto& [s, blocks] : live) pool.free(blocks);
    EXPECT_EQ(pool.n_used(), 0);
    EXPECT_GT(pool.stats().prefix_hits, 0);
}

}  // namespace
}  // namespace zs::infer
