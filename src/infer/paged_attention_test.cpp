// PagedKvAttention against ops::attention_forward on contiguous copies: random ragged batches of
// several sequences (cached history, prompt chunks, single decode tokens) with shuffled block
// tables, GQA/MQA/MHA, chunks crossing block boundaries, f32 and bf16 KV, f32 and bf16 queries,
// q/k/v as strided views of one fused projection (as the model passes them).
#include "infer/paged_attention.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

#include <gtest/gtest.h>

#include "base/error.h"
#include "ops/attention.h"
#include "tests/test_util.h"

namespace zs::infer {
namespace {

using zs::test::Rng;

struct Case {
    int64_t NH, NKV, HS, block_size;
    DType kv_dtype, q_dtype;
    int64_t window = 0;  // sliding window (0: none)
    float scale = 0.0f;  // 0: 1/sqrt(HS)
};

// f32 copy of x with values rounded through `dtype` (what the cache stores).
Tensor rounded(const Tensor& x, DType dtype) { return x.to(dtype).to(DType::f32); }

void run_case(const Case& c, uint64_t seed) {
    Rng rng(seed);
    const int64_t n_blocks = 64, L = 2, layer = 1;
    KvCacheSpec spec;
    spec.n_layers = L;
    spec.n_kv_heads = c.NKV;
    spec.head_dim = c.HS;
    spec.block_size = c.block_size;
    spec.dtype = c.kv_dtype;
    spec.n_blocks = n_blocks;
    KvBlockPool pool(spec);
    // Sequences: (cached history, new tokens). Decodes (1 new token), chunks, a fresh prompt,
    // histories ending inside and exactly at block boundaries.
    const int64_t bs = c.block_size;
    std::vector<std::pair<int64_t, int64_t>> shape = {
        {0, 7}, {bs * 2, 1}, {bs + 3, 2 * bs + 1}, {5, 1}, {3 * bs - 1, 1}, {1, bs}, {0, 1}};
    std::shuffle(shape.begin(), shape.end(), rng.gen());
    // Shuffled block ids, handed out in order.
    std::vector<BlockId> ids(static_cast<size_t>(n_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng.gen());
    size_t next_block = 0;
    struct Seq {
        int64_t hist, n;
        std::vector<BlockId> blocks;
        std::vector<BlockId> table;  // blocks, with kNoBlock for those wholly outside the window
        Tensor k, v;                 // [hist + n, NKV, HS] f32, the whole sequence
    };
    std::vector<Seq> seqs;
    int64_t N = 0;
    for (auto [hist, n] : shape) {
        Seq s{hist, n, {}, {}, {}, {}};
        for (int64_t b = 0; b < (hist + n + bs - 1) / bs; ++b)
            s.blocks.push_back(ids[next_block++]);
        s.k = zs::test::random_tensor(rng, {hist + n, c.NKV, c.HS}, DType::f32);
        s.v = zs::test::random_tensor(rng, {hist + n, c.NKV, c.HS}, DType::f32);
        seqs.push_back(std::move(s));
        N += n;
    }
    // History: written by earlier "steps", one sequence per call.
    for (Seq& s : seqs) {
        if (s.hist == 0) continue;
        std::vector<SeqSlice> one = {{0, s.hist, 0, s.blocks}};
        ops::paged_kv_write(pool.k_cache(layer), pool.v_cache(layer), s.k.slice(0, 0, s.hist),
                            s.v.slice(0, 0, s.hist), one);
    }
    // This step's fused projection [N, (NH + 2 NKV) * HS] and its q, k, v views.
    const int64_t W = (c.NH + 2 * c.NKV) * c.HS;
    Tensor qkv = zs::test::random_tensor(rng, {N, W}, c.q_dtype, -2.0, 2.0);
    Tensor q = qkv.as_strided({N, c.NH, c.HS}, {W, c.HS, 1}, 0);
    Tensor k = qkv.as_strided({N, c.NKV, c.HS}, {W, c.HS, 1}, c.NH * c.HS);
    Tensor v = qkv.as_strided({N, c.NKV, c.HS}, {W, c.HS, 1}, (c.NH + c.NKV) * c.HS);
    std::vector<SeqSlice> slices;
    int64_t row = 0;
    for (Seq& s : seqs) {
        // As the scheduler frees them: blocks below the first query's window start are gone.
        s.table = s.blocks;
        const int64_t n_dead = c.window > 0 ? std::max<int64_t>(0, s.hist - c.window + 1) / bs : 0;
        std::fill(s.table.begin(), s.table.begin() + n_dead, kNoBlock);
        s.k.slice(0, s.hist, s.hist + s.n).copy_from(k.slice(0, row, row + s.n));
        s.v.slice(0, s.hist, s.hist + s.n).copy_from(v.slice(0, row, row + s.n));
        slices.push_back({row, s.n, s.hist, s.table});
        row += s.n;
    }
    PagedKvAttention attn(pool);
    attn.set_batch(slices);
    Tensor out = Tensor::empty({N, c.NH, c.HS}, c.q_dtype);
    ops::AttentionOptions opts;
    opts.window = c.window;
    opts.scale = c.scale;
    attn.attend(static_cast<int>(layer), opts, q, k, v, out);

    row = 0;
    for (const Seq& s : seqs) {
        const int64_t T = s.hist + s.n;
        // The cache holds every token at its slot, rounded to the cache dtype.
        Tensor kc = Tensor::empty({T, c.NKV, c.HS}, DType::f32);
        for (int64_t p = 0; p < T; ++p) {
            kc.select(0, p).copy_from(pool.k_cache(layer)
                                          .select(0, s.blocks[static_cast<size_t>(p / bs)])
                                          .select(1, p % bs));
        }
        Tensor want_k = rounded(s.k, c.kv_dtype);
        EXPECT_TRUE(zs::test::all_close(kc, ops::reference::from_tensor(want_k), {0, 0}, "cache"));
        // Reference: dense causal attention of this sequence's queries over all its keys.
        Tensor qs = q.slice(0, row, row + s.n).to(DType::f32).contiguous();
        Tensor ref = Tensor::empty({1, s.n, c.NH, c.HS}, DType::f32);
        ops::attention_forward(ref, Tensor(), qs.unsqueeze(0), want_k.unsqueeze(0),
                               rounded(s.v, c.kv_dtype).unsqueeze(0), opts);
        zs::test::Tol tol =
            c.q_dtype == DType::bf16 ? zs::test::Tol{1e-2, 1e-2} : zs::test::Tol{2e-5, 2e-5};
        EXPECT_TRUE(zs::test::all_close(
            out.slice(0, row, row + s.n), ops::reference::from_tensor(ref.view({s.n, c.NH, c.HS})),
            tol,
            fmt::format("seq hist {} new {} (NH {} NKV {} HS {} bs {} "
                        "window {} scale {})",
                        s.hist, s.n, c.NH, c.NKV, c.HS, bs, c.window, c.scale)));
        row += s.n;
    }
}

TEST(PagedAttention, EqualsContiguousAttentionOnRaggedBatches) {
    const std::vector<Case> cases = {
        {4, 2, 16, 4, DType::f32, DType::f32},    // GQA, small blocks: many boundaries
        {4, 2, 16, 16, DType::bf16, DType::f32},  // bf16 KV
        {3, 1, 8, 4, DType::f32, DType::f32},     // MQA
        {2, 2, 20, 8, DType::bf16, DType::bf16},  // MHA, HS not a multiple of 16, bf16 compute
        {8, 2, 32, 16, DType::f32, DType::f32},
        // Sliding windows (Mistral, Qwen2): shorter than a block, across blocks, one key;
        // and GPT-2's explicit scales.
        {4, 2, 16, 4, DType::f32, DType::f32, 3},
        {4, 2, 16, 16, DType::bf16, DType::f32, 21},
        {2, 2, 20, 8, DType::f32, DType::f32, 1},
        {3, 1, 8, 4, DType::f32, DType::f32, 0, 1.0f},
        {3, 1, 8, 4, DType::f32, DType::f32, 6, 0.125f},
    };
    uint64_t seed = 11;
    for (const Case& c : cases) {
        for (int rep = 0; rep < 3; ++rep) run_case(c, seed++);
    }
}

// The engine relies on a query's result not depending on how its sequence was chunked or what
// else shares the forward: one 37-token slice and the same rows as three slices (as three chunks
// of consecutive steps would see them) give bit-identical outputs.
TEST(PagedAttention, ChunkingDoesNotChangeAnyBit) {
    Rng rng(5);
    const int64_t NH = 4, NKV = 2, HS = 16, bs = 4, T = 37;
    KvCacheSpec spec;
    spec.n_layers = 1;
    spec.n_kv_heads = NKV;
    spec.head_dim = HS;
    spec.block_size = bs;
    spec.dtype = DType::bf16;
    spec.n_blocks = 16;
    KvBlockPool pool(spec);
    std::vector<BlockId> blocks = {9, 3, 14, 0, 7, 11, 2, 5, 12, 1};  // covers 40 positions
    Tensor q = zs::test::random_tensor(rng, {T, NH, HS}, DType::f32, -3.0, 3.0);
    Tensor kv = zs::test::random_tensor(rng, {T, NKV, HS}, DType::f32);
    std::vector<SeqSlice> whole = {{0, T, 0, blocks}};
    ops::paged_kv_write(pool.k_cache(0), pool.v_cache(0), kv, kv, whole);
    Tensor a = Tensor::empty({T, NH, HS}, DType::f32), b = Tensor::empty({T, NH, HS}, DType::f32);
    ops::paged_attention_forward(a, q, pool.k_cache(0), pool.v_cache(0), whole);
    std::vector<SeqSlice> parts = {{0, 5, 0, blocks}, {5, 17, 5, blocks}, {22, 15, 22, blocks}};
    ops::paged_attention_forward(b, q, pool.k_cache(0), pool.v_cache(0), parts);
    EXPECT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()), 0);
}

// One layer, one KV head of size 4, four blocks of 4 tokens: for the table checks.
KvCacheSpec one_head_spec() {
    KvCacheSpec spec;
    spec.n_layers = 1;
    spec.n_kv_heads = 1;
    spec.head_dim = 4;
    spec.block_size = 4;
    spec.dtype = DType::f32;
    spec.n_blocks = 4;
    return spec;
}

TEST(PagedAttention, RejectsTablesThatDoNotCoverTheTokens) {
    KvBlockPool pool(one_head_spec());
    PagedKvAttention attn(pool);
    std::vector<BlockId> one = {2};
    attn.set_batch({{0, 2, 3, one}});  // positions 3, 4 but the table covers [0, 4)
    Tensor q = Tensor::zeros({2, 1, 4}, DType::f32), out = Tensor::empty({2, 1, 4}, DType::f32);
    EXPECT_THROW(attn.attend(0, {}, q, q, q, out), ShapeError);
    EXPECT_THROW(attn.set_batch({{1, 2, 0, one}}), ShapeError);  // rows must start at 0
    attn.set_batch({{0, 1, 0, one}});
    EXPECT_THROW(attn.attend(0, {}, q, q, q, out), ShapeError);  // 2 rows for a 1-row layout
}

TEST(PagedAttention, FreedSlotsAreAllowedOnlyBelowTheWindow) {
    KvBlockPool pool(one_head_spec());
    PagedKvAttention attn(pool);
    Tensor q = Tensor::zeros({2, 1, 4}, DType::f32), out = Tensor::empty({2, 1, 4}, DType::f32);
    // Positions 9, 10: with W = 6 the first query reads keys from 4, so block 0 may be gone...
    std::vector<BlockId> table = {kNoBlock, 1, 2};
    attn.set_batch({{0, 2, 9, table}});
    ops::AttentionOptions w6;
    w6.window = 6;
    EXPECT_NO_THROW(attn.attend(0, w6, q, q, q, out));
    // ...with W = 7 (from key 3) or full attention, it would be read: refused, never read.
    ops::AttentionOptions w7;
    w7.window = 7;
    EXPECT_THROW(attn.attend(0, w7, q, q, q, out), ShapeError);
    EXPECT_THROW(attn.attend(0, {}, q, q, q, out), ShapeError);
    // A freed slot where the new tokens are written is refused too.
    std::vector<BlockId> gone = {0, 1, kNoBlock};
    attn.set_batch({{0, 2, 9, gone}});
    EXPECT_THROW(attn.attend(0, w6, q, q, q, out), ShapeError);
}

}  // namespace
}  // namespace zs::infer
