// Paged attention against the naive double reference (reference::paged_attention) on every
// backend: ragged batches of cached histories, prompt chunks and decode tokens through shuffled
// block tables; GQA, MQA, MHA and a kv group wider than one task's rows; head sizes that are and
// are not multiples of 16; block sizes 1 to 32; histories over several key tiles; sliding windows
// with the blocks below them freed (kNoBlock); f32, bf16 and f16 caches, f32 and bf16 queries
// and outputs; q as a view of a fused QKV projection; rows outside every slice left untouched. Also
// the KV write (slots, rounding, nothing else touched), bit-identical outputs under any chunking,
// and the argument checks.
#include "ops/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <tuple>

#include <gtest/gtest.h>
#include <omp.h>

#include "core/half.h"
#include "tests/test_util.h"

namespace zs::ops {
namespace {

using namespace zs::test;
namespace ref = ops::reference;

struct Case {
    int64_t NH, NKV, HS, bs;
    DType cache, q, out;
    int64_t window = 0;  // sliding window (0: none)
    float scale = 0.0f;  // 0: 1/sqrt(HS)
};

std::string describe(const Case& c) {
    return fmt::format("NH {} NKV {} HS {} bs {} cache {} q {} out {} window {} scale {}", c.NH,
                       c.NKV, c.HS, c.bs, to_string(c.cache), to_string(c.q), to_string(c.out),
                       c.window, c.scale);
}

// Where kv head h of slot `slot` of block `block` starts in a cache [n_blocks, NKV, bs, HS]
// (head-major blocks): the layout the write tests pin.
int64_t cache_offset(int64_t block, int64_t h, int64_t slot, int64_t NKV, int64_t bs, int64_t HS) {
    return ((block * NKV + h) * bs + slot) * HS;
}

// A ragged batch: sequences (cached history, new tokens) with shuffled block tables, one row left
// outside every slice (`gap`). With a window, the blocks wholly below each slice's first key are
// freed (kNoBlock), as the scheduler frees them.
struct Batch {
    std::vector<std::vector<BlockId>> tables;
    std::vector<SeqSlice> slices;
    int64_t N = 0, n_blocks = 0, gap = -1;
};

Batch make_batch(Rng& rng, int64_t bs, int64_t window) {
    std::vector<std::pair<int64_t, int64_t>> shape = {
        {0, 7},   {2 * bs, 1},     {bs + 3, 2 * bs + 1},
        {5, 1},   {3 * bs - 1, 1}, {1, bs},
        {0, 1},   {150, 1},        {70, 40},
        {200, 3}, {600, 1},        {500, 20}};  // the last two: several key segments
    std::shuffle(shape.begin(), shape.end(), rng.gen());
    Batch b;
    for (auto [hist, n] : shape) b.n_blocks += (hist + n + bs - 1) / bs;
    std::vector<BlockId> ids(static_cast<size_t>(b.n_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng.gen());
    size_t next = 0;
    for (auto [hist, n] : shape) {
        std::vector<BlockId> t(ids.begin() + static_cast<int64_t>(next),
                               ids.begin() + static_cast<int64_t>(next) + (hist + n + bs - 1) / bs);
        next += t.size();
        const int64_t dead = window > 0 ? std::max<int64_t>(0, hist - window + 1) / bs : 0;
        std::fill(t.begin(), t.begin() + dead, kNoBlock);
        b.tables.push_back(std::move(t));
    }
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i == shape.size() / 2) b.gap = b.N++;  // a row no slice owns
        b.slices.push_back({b.N, shape[i].second, shape[i].first, b.tables[i]});
        b.N += shape[i].second;
    }
    return b;
}

TEST(PagedAttention, ForwardMatchesReference) {
    const std::vector<Case> cases = {
        {4, 2, 16, 4, DType::f32, DType::f32, DType::f32},  // GQA, many block boundaries
        {4, 2, 16, 16, DType::bf16, DType::f32, DType::f32},
        {3, 1, 8, 4, DType::f32, DType::f32, DType::f32},       // MQA
        {2, 2, 20, 8, DType::bf16, DType::bf16, DType::bf16},   // MHA, HS not a multiple of 16
        {8, 2, 64, 16, DType::bf16, DType::f32, DType::f32},    // SmolLM2-like
        {9, 3, 64, 16, DType::f32, DType::f32, DType::f32},     // SmolLM2 as served (f32)
        {8, 2, 128, 16, DType::bf16, DType::bf16, DType::f32},  // Llama-like head size
        {48, 3, 16, 4, DType::f32, DType::f32, DType::f32},     // kv heads 2 + 1 per task
        {40, 1, 8, 5, DType::f32, DType::f32, DType::bf16},     // group wider than a task
        {4, 4, 16, 1, DType::f32, DType::f32, DType::f32},      // one token per block
        {6, 2, 24, 32, DType::f32, DType::bf16, DType::f32},
        // Sliding windows (Mistral, Qwen2) with freed blocks below them: shorter than a block,
        // across blocks, one key, longer than a key tile; and explicit scales (GPT-2).
        {4, 2, 16, 4, DType::f32, DType::f32, DType::f32, 3},
        {4, 2, 16, 16, DType::bf16, DType::f32, DType::f32, 21},
        {2, 2, 20, 8, DType::f32, DType::f32, DType::f32, 1},
        {8, 2, 64, 16, DType::bf16, DType::f32, DType::f32, 70},
        {3, 1, 8, 4, DType::f32, DType::f32, DType::f32, 6, 0.125f},
        {3, 1, 8, 4, DType::f32, DType::f32, DType::f32, 0, 1.0f},
        // f16 caches (--kv-cache-dtype f16, CPU): SmolLM2-like, a tail, a window, bf16 queries.
        {8, 2, 64, 16, DType::f16, DType::f32, DType::f32},
        {2, 2, 20, 8, DType::f16, DType::bf16, DType::f32},
        {4, 2, 16, 16, DType::f16, DType::f32, DType::bf16, 21},
    };
    Rng rng(301);
    for (core::Device dev : test_devices()) {
        for (const Case& c : cases) {
            if (c.cache == DType::f16 && !dev.is_cpu()) continue;  // a CPU cache dtype
            const Batch b = make_batch(rng, c.bs, c.window);
            Tensor kc = random_tensor(rng, {b.n_blocks, c.NKV, c.bs, c.HS}, c.cache);
            Tensor vc = random_tensor(rng, {b.n_blocks, c.NKV, c.bs, c.HS}, c.cache);
            // q as the model passes it: a strided view of the fused projection.
            const int64_t W = (c.NH + 2 * c.NKV) * c.HS;
            Tensor qkv = random_tensor(rng, {b.N, W}, c.q, -2.0, 2.0);
            Tensor q = qkv.as_strided({b.N, c.NH, c.HS}, {W, c.HS, 1}, 0);
            AttentionOptions o;
            o.window = c.window;
            o.scale = c.scale;
            ref::DTensor want = ref::paged_attention(ref::from_tensor(q), ref::from_tensor(kc),
                                                     ref::from_tensor(vc), b.slices, o);
            constexpr double kUntouched = 7.0;
            for (int64_t i = b.gap * c.NH * c.HS; i < (b.gap + 1) * c.NH * c.HS; ++i)
                want[i] = kUntouched;
            Tensor out = from_dtensor(ref::DTensor(Shape{b.N, c.NH, c.HS}, kUntouched), c.out, dev);
            Tensor qd = qkv.to(dev).as_strided({b.N, c.NH, c.HS}, {W, c.HS, 1}, 0);
            paged_attention_forward(out, qd, kc.to(dev), vc.to(dev), b.slices, o);
            const Tol tol = c.out == DType::bf16 ? Tol{1e-2, 1e-2} : Tol{2e-5, 1e-4};
            EXPECT_TRUE(all_close(out, want, tol, dev.str() + " " + describe(c)));
        }
    }
}

// The serving engine relies on a query's result not depending on what shares its forward: one
// 150-token slice and the same rows as four slices (as consecutive chunks would see them), next to
// another sequence, give bit-identical outputs, with a window, GQA and a bf16 cache.
TEST(PagedAttention, ChunkingDoesNotChangeAnyBit) {
    Rng rng(5);
    const int64_t NH = 6, NKV = 2, HS = 40, bs = 8, T = 150, n_blocks = 24;
    std::vector<BlockId> table(static_cast<size_t>(n_blocks - 4));  // covers 160 positions
    std::iota(table.begin(), table.end(), 4);
    std::shuffle(table.begin(), table.end(), rng.gen());
    std::vector<BlockId> other = {0, 1, 2, 3};
    for (core::Device dev : test_devices()) {
        Tensor kc = random_tensor(rng, {n_blocks, NKV, bs, HS}, DType::bf16).to(dev);
        Tensor vc = random_tensor(rng, {n_blocks, NKV, bs, HS}, DType::bf16).to(dev);
        Tensor q = random_tensor(rng, {T + 3, NH, HS}, DType::f32, -3.0, 3.0).to(dev);
        AttentionOptions o;
        o.window = 37;
        std::vector<SeqSlice> whole = {{0, T, 0, table}, {T, 3, 20, other}};
        std::vector<SeqSlice> parts = {{0, 3, 20, other},
                                       {3, 5, 0, table},
                                       {8, 1, 5, table},
                                       {9, 95, 6, table},
                                       {104, 49, 101, table}};
        Tensor a = Tensor::empty({T + 3, NH, HS}, DType::f32, dev);
        Tensor b = Tensor::empty({T + 3, NH, HS}, DType::f32, dev);
        paged_attention_forward(a, q, kc, vc, whole, o);
        // parts: the other sequence first, so the rows of `table` start at row 3.
        Tensor q2 = Tensor::empty({T + 3, NH, HS}, DType::f32, dev);
        q2.slice(0, 0, 3).copy_from(q.slice(0, T, T + 3));
        q2.slice(0, 3, T + 3).copy_from(q.slice(0, 0, T));
        paged_attention_forward(b, q2, kc, vc, parts, o);
        Tensor ah = a.to(core::Device::cpu()), bh = b.to(core::Device::cpu());
        EXPECT_EQ(std::memcmp(ah.slice(0, 0, T).data_ptr(), bh.slice(0, 3, T + 3).data_ptr(),
                              static_cast<size_t>(T * NH * HS) * sizeof(float)),
                  0);
        EXPECT_EQ(std::memcmp(ah.slice(0, T, T + 3).data_ptr(), bh.data_ptr(),
                              static_cast<size_t>(3 * NH * HS) * sizeof(float)),
                  0);
    }
}

// Long rows are cut into key segments that may run on different threads (the CPU kernel's work
// items when there are few tasks): a 700-key decode row and a 40-token chunk at position 600 give
// the same bits alone or beside other sequences, on 1, 2 or 3 threads.
TEST(PagedAttention, KeySegmentsDoNotDependOnThreadsOrBatch) {
    Rng rng(17);
    const int64_t NH = 9, NKV = 3, HS = 64, bs = 16, n_blocks = 120;
    std::vector<BlockId> ids(static_cast<size_t>(n_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng.gen());
    const std::vector<BlockId> ta(ids.begin(), ids.begin() + 45),
        tb(ids.begin() + 45, ids.begin() + 90), tc(ids.begin() + 90, ids.begin() + 120);
    Tensor kc = random_tensor(rng, {n_blocks, NKV, bs, HS}, DType::bf16);
    Tensor vc = random_tensor(rng, {n_blocks, NKV, bs, HS}, DType::bf16);
    Tensor q = random_tensor(rng, {43, NH, HS}, DType::f32, -3.0, 3.0);
    const std::vector<SeqSlice> alone_a = {{0, 1, 700, ta}}, alone_b = {{1, 40, 600, tb}};
    const std::vector<SeqSlice> all = {{0, 1, 700, ta}, {1, 40, 600, tb}, {41, 2, 300, tc}};
    auto run = [&](const std::vector<SeqSlice>& seqs, int threads) {
        Tensor o = Tensor::zeros({43, NH, HS}, DType::f32);
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
        paged_attention_forward(o, q, kc, vc, seqs, AttentionOptions{});
        omp_set_num_threads(saved);
        return o;
    };
    const Tensor want = run(all, 1);
    auto same_rows = [&](const Tensor& got, int64_t r0, int64_t r1) {
        return std::memcmp(got.slice(0, r0, r1).data_ptr(), want.slice(0, r0, r1).data_ptr(),
                           static_cast<size_t>((r1 - r0) * NH * HS) * sizeof(float)) == 0;
    };
    for (int threads : {1, 2, 3}) {
        EXPECT_TRUE(same_rows(run(all, threads), 0, 43)) << threads << " threads";
        EXPECT_TRUE(same_rows(run(alone_a, threads), 0, 1)) << threads << " threads";
        EXPECT_TRUE(same_rows(run(alone_b, threads), 1, 41)) << threads << " threads";
    }
    // And against the double-precision reference.
    ref::DTensor ref_out = ref::paged_attention(ref::from_tensor(q), ref::from_tensor(kc),
                                                ref::from_tensor(vc), all, AttentionOptions{});
    EXPECT_TRUE(all_close(want, ref_out, Tol{2e-5, 1e-4}, "segments"));
}

TEST(PagedAttention, KvWriteStoresEachRowAtItsSlot) {
    Rng rng(17);
    const int64_t NKV = 2, HS = 20, bs = 4, n_blocks = 8, W = 3 * NKV * HS;
    std::vector<BlockId> t0 = {5, 2}, t1 = {kNoBlock, 7, 0};
    // Rows: 3 of sequence 0 at positions 2..4, a row no slice owns, 2 of sequence 1 at 8, 9.
    std::vector<SeqSlice> slices = {{0, 3, 2, t0}, {4, 2, 8, t1}};
    for (core::Device dev : test_devices()) {
        for (DType cache : {DType::f32, DType::bf16, DType::f16}) {
            if (cache == DType::f16 && !dev.is_cpu()) continue;
            Tensor fused = random_tensor(rng, {6, W}, DType::f32);
            Tensor k = fused.as_strided({6, NKV, HS}, {W, HS, 1}, 0);
            Tensor v = fused.as_strided({6, NKV, HS}, {W, HS, 1}, NKV * HS);
            Tensor kc0 = random_tensor(rng, {n_blocks, NKV, bs, HS}, cache);
            Tensor vc0 = random_tensor(rng, {n_blocks, NKV, bs, HS}, cache);
            Tensor kc = kc0.to(dev), vc = vc0.to(dev);
            Tensor fd = fused.to(dev);
            paged_kv_write(kc, vc, fd.as_strided({6, NKV, HS}, {W, HS, 1}, 0),
                           fd.as_strided({6, NKV, HS}, {W, HS, 1}, NKV * HS), slices);
            // Expected: the old caches with each owned row at its slot, rounded to the cache dtype.
            ref::DTensor want_k = ref::from_tensor(kc0), want_v = ref::from_tensor(vc0);
            const ref::DTensor kr = ref::from_tensor(k.to(cache)),
                               vr = ref::from_tensor(v.to(cache));
            for (const SeqSlice& s : slices) {
                for (int64_t i = 0; i < s.n_tokens; ++i) {
                    const int64_t p = s.pos + i;
                    const int64_t blk = s.blocks[static_cast<size_t>(p / bs)];
                    for (int64_t e = 0; e < NKV * HS; ++e) {  // head-major [NKV, bs, HS] blocks
                        const int64_t at = cache_offset(blk, e / HS, p % bs, NKV, bs, HS) + e % HS;
                        want_k[at] = kr[(s.start + i) * NKV * HS + e];
                        want_v[at] = vr[(s.start + i) * NKV * HS + e];
                    }
                }
            }
            const std::string what = dev.str() + " " + std::string(to_string(cache));
            EXPECT_TRUE(all_close(kc, want_k, {0, 0}, what + " k_cache"));
            EXPECT_TRUE(all_close(vc, want_v, {0, 0}, what + " v_cache"));
        }
    }
}

TEST(PagedAttention, BadArgumentsAreRefused) {
    Tensor kc = Tensor::zeros({4, 1, 4, 4}, DType::f32),
           vc = Tensor::zeros({4, 1, 4, 4}, DType::f32);
    Tensor q = Tensor::zeros({2, 1, 4}, DType::f32), out = Tensor::empty({2, 1, 4}, DType::f32);
    std::vector<BlockId> one = {2};
    // Positions 3, 4 but the table covers [0, 4).
    std::vector<SeqSlice> short_table = {{0, 2, 3, one}};
    EXPECT_THROW(paged_attention_forward(out, q, kc, vc, short_table), ShapeError);
    EXPECT_THROW(paged_kv_write(kc, vc, q, q, short_table), ShapeError);
    std::vector<BlockId> bad = {4};
    std::vector<SeqSlice> bad_id = {{0, 2, 0, bad}};
    EXPECT_THROW(paged_attention_forward(out, q, kc, vc, bad_id), ShapeError);
    std::vector<SeqSlice> past_end = {{1, 2, 0, one}};  // rows [1, 3) of 2
    EXPECT_THROW(paged_attention_forward(out, q, kc, vc, past_end), ShapeError);
    // Positions 9, 10: with W = 6 the first query reads keys from 4, so block 0 may be freed;
    // with W = 7 (from key 3) or full attention it would be read: refused, never read.
    std::vector<BlockId> freed = {kNoBlock, 1, 2};
    std::vector<SeqSlice> late = {{0, 2, 9, freed}};
    AttentionOptions w6, w7;
    w6.window = 6;
    w7.window = 7;
    EXPECT_NO_THROW(paged_attention_forward(out, q, kc, vc, late, w6));
    EXPECT_THROW(paged_attention_forward(out, q, kc, vc, late, w7), ShapeError);
    EXPECT_THROW(paged_attention_forward(out, q, kc, vc, late), ShapeError);
    // The write touches positions 9, 10 only: block 0 may be freed; a freed block there may not.
    EXPECT_NO_THROW(paged_kv_write(kc, vc, q, q, late));
    std::vector<BlockId> gone = {0, 1, kNoBlock};
    std::vector<SeqSlice> gone_slot = {{0, 2, 9, gone}};
    EXPECT_THROW(paged_kv_write(kc, vc, q, q, gone_slot), ShapeError);
    // Not causal; query heads not a multiple of kv heads; caches of two dtypes.
    std::vector<SeqSlice> ok = {{0, 2, 0, one}};
    EXPECT_THROW(paged_attention_forward(out, q, kc, vc, ok, {.causal = false}), ShapeError);
    Tensor kc2 = Tensor::zeros({4, 2, 4, 4}, DType::f32);
    Tensor q3 = Tensor::zeros({2, 3, 4}, DType::f32), out3 = Tensor::empty({2, 3, 4}, DType::f32);
    EXPECT_THROW(paged_attention_forward(out3, q3, kc2, kc2, ok), ShapeError);
    EXPECT_THROW(paged_attention_forward(out, q, kc, vc.to(DType::bf16), ok), ShapeError);
}

// ---- Quantized caches (int8, fp8 E4M3) ----

// A quantized cache in a random valid state: random bytes (fp8: finite codes) and f16 scales,
// and the f32 cache the reference decoder (kv_dequantize_group) makes of it.
struct QuantCache {
    PagedKvCache cache;
    Tensor k_deq, v_deq;  // f32 [n_blocks, NKV, bs, HS]
};

QuantCache random_quant_cache(Rng& rng, KvQuant quant, int64_t n_blocks, int64_t bs, int64_t NKV,
                              int64_t HS) {
    const Shape shape{n_blocks, NKV, bs, HS}, sshape{n_blocks, NKV, bs, HS / kKvQuantGroup};
    QuantCache qc;
    qc.cache.quant = quant;
    qc.cache.k = Tensor::empty(shape, DType::i8);
    qc.cache.v = Tensor::empty(shape, DType::i8);
    qc.cache.k_scale = Tensor::empty(sshape, DType::f16);
    qc.cache.v_scale = Tensor::empty(sshape, DType::f16);
    qc.k_deq = Tensor::empty(shape, DType::f32);
    qc.v_deq = Tensor::empty(shape, DType::f32);
    for (auto [data, scale, deq] : {std::tuple{&qc.cache.k, &qc.cache.k_scale, &qc.k_deq},
                                    std::tuple{&qc.cache.v, &qc.cache.v_scale, &qc.v_deq}}) {
        auto* q = data->data<int8_t>();
        auto* s = scale->data<core::f16>();
        for (int64_t i = 0; i < data->numel(); ++i) {
            int64_t b = static_cast<int64_t>(rng.uniform(0.0, 255.99));
            if (quant == KvQuant::fp8_e4m3 && (b & 0x7f) == 0x7f) b &= 0xfe;  // not NaN
            if (quant == KvQuant::int8 && b == 128) b = 129;                  // -128 unused
            q[i] = static_cast<int8_t>(static_cast<uint8_t>(b));
        }
        const double hi = quant == KvQuant::int8 ? 1.0 / 127 : 1.0 / 448;
        for (int64_t i = 0; i < scale->numel(); ++i)
            s[i] = core::f32_to_f16(static_cast<float>(rng.uniform(0.1 * hi, 2.0 * hi)));
        for (int64_t g = 0; g < scale->numel(); ++g)
            kv_dequantize_group(quant, q + g * kKvQuantGroup, s[g],
                                deq->data<float>() + g * kKvQuantGroup);
    }
    return qc;
}

// The kernel over a quantized cache against the double reference over the reference decoder's
// values: ragged batches, GQA and MHA, windows, both formats, f32 and bf16 queries.
TEST(PagedAttention, QuantizedCacheMatchesReferenceOnDequantizedValues) {
    const std::vector<Case> cases = {
        {4, 2, 32, 4, DType::i8, DType::f32, DType::f32},
        {8, 2, 64, 16, DType::i8, DType::f32, DType::f32},  // SmolLM2-like
        {2, 2, 128, 8, DType::i8, DType::bf16, DType::f32},
        {8, 2, 64, 16, DType::i8, DType::f32, DType::f32, 21},
        {40, 1, 32, 5, DType::i8, DType::f32, DType::bf16},
        {9, 3, 64, 16, DType::i8, DType::f32, DType::f32},  // a task's kv heads side by side
        {48, 3, 32, 4, DType::i8, DType::f32, DType::f32},  // kv heads 2 + 1 per task
    };
    Rng rng(77);
    for (KvQuant quant : {KvQuant::int8, KvQuant::fp8_e4m3}) {
        for (const Case& c : cases) {
            const Batch b = make_batch(rng, c.bs, c.window);
            const QuantCache qc = random_quant_cache(rng, quant, b.n_blocks, c.bs, c.NKV, c.HS);
            Tensor q = random_tensor(rng, {b.N, c.NH, c.HS}, c.q, -2.0, 2.0);
            AttentionOptions o;
            o.window = c.window;
            ref::DTensor want =
                ref::paged_attention(ref::from_tensor(q), ref::from_tensor(qc.k_deq),
                                     ref::from_tensor(qc.v_deq), b.slices, o);
            constexpr double kUntouched = 7.0;
            for (int64_t i = b.gap * c.NH * c.HS; i < (b.gap + 1) * c.NH * c.HS; ++i)
                want[i] = kUntouched;
            Tensor out = from_dtensor(ref::DTensor(Shape{b.N, c.NH, c.HS}, kUntouched), c.out);
            paged_attention_forward(out, q, qc.cache, b.slices, o);
            const Tol tol = c.out == DType::bf16 ? Tol{1e-2, 1e-2} : Tol{2e-5, 1e-4};
            EXPECT_TRUE(
                all_close(out, want, tol, std::string(to_string(quant)) + " " + describe(c)));
        }
    }
}

// A zeroed quantized cache of n_blocks one-slot blocks of one kv head of HS values.
PagedKvCache one_slot_cache(KvQuant quant, int64_t n_blocks, int64_t HS) {
    PagedKvCache cache;
    cache.quant = quant;
    cache.k = Tensor::zeros({n_blocks, 1, 1, HS}, DType::i8);
    cache.v = Tensor::zeros({n_blocks, 1, 1, HS}, DType::i8);
    cache.k_scale = Tensor::zeros({n_blocks, 1, 1, HS / kKvQuantGroup}, DType::f16);
    cache.v_scale = Tensor::zeros({n_blocks, 1, 1, HS / kKvQuantGroup}, DType::f16);
    return cache;
}

// The kernel's own decoding of each code (not only kv_dequantize_group's): 8 one-key sequences
// whose V rows hold all 256 codes (fp8: the two NaN codes replaced). With one key the softmax
// weight is exactly 1, so each output row is its V row as the kernel decoded it: equal, bit for
// bit, to the reference decoder's values (the attention tests above compare within a tolerance;
// this pins every code, the signed zeros and the subnormals included).
TEST(PagedAttention, QuantizedCacheKernelDecodesEveryCodeExactly) {
    constexpr int64_t HS = 32, kSeqs = 8;
    static_assert(HS * kSeqs == 256 && HS == kKvQuantGroup);
    for (KvQuant quant : {KvQuant::int8, KvQuant::fp8_e4m3}) {
        PagedKvCache cache = one_slot_cache(quant, kSeqs, HS);
        std::vector<std::vector<BlockId>> tables;
        std::vector<SeqSlice> slices;
        for (int64_t i = 0; i < kSeqs; ++i) {
            for (int64_t j = 0; j < HS; ++j) {
                int c = static_cast<int>(i * HS + j);
                if (quant == KvQuant::fp8_e4m3 && (c & 0x7f) == 0x7f) c ^= 1;  // not NaN
                cache.v.data<int8_t>()[i * HS + j] = static_cast<int8_t>(static_cast<uint8_t>(c));
            }
            cache.k_scale.data<core::f16>()[i] = core::f32_to_f16(1.0f);
            cache.v_scale.data<core::f16>()[i] = core::f32_to_f16(0.75f + 0.125f * i);
            tables.push_back({static_cast<BlockId>(kSeqs - 1 - i)});  // shuffled blocks
        }
        for (int64_t i = 0; i < kSeqs; ++i) slices.push_back({i, 1, 0, tables[i]});
        // The V rows sit in block kSeqs - 1 - i: write them where sequence i reads them.
        Tensor v = cache.v.clone(), vs = cache.v_scale.clone();
        for (int64_t i = 0; i < kSeqs; ++i) {
            std::memcpy(cache.v.data<int8_t>() + (kSeqs - 1 - i) * HS, v.data<int8_t>() + i * HS,
                        HS);
            cache.v_scale.data<core::f16>()[kSeqs - 1 - i] = vs.data<core::f16>()[i];
        }
        Rng rng(78);
        Tensor q = random_tensor(rng, {kSeqs, 1, HS}, DType::f32, -1.0, 1.0);
        Tensor out = Tensor::empty({kSeqs, 1, HS}, DType::f32);
        paged_attention_forward(out, q, cache, slices, AttentionOptions{});
        for (int64_t i = 0; i < kSeqs; ++i) {
            float want[HS];
            kv_dequantize_group(quant, v.data<int8_t>() + i * HS, vs.data<core::f16>()[i], want);
            for (int64_t j = 0; j < HS; ++j) {
                ASSERT_EQ(out.data<float>()[i * HS + j], want[j])
                    << to_string(quant) << " code " << i * HS + j;
            }
        }
    }
}

// Every finite E4M3 code decodes to its OCP value (sign, 4-bit exponent with bias 7, 3-bit
// mantissa, subnormals at exponent 0), encodes back to itself, and a value halfway between two
// neighbours rounds to the one with the even mantissa; beyond 448 saturates.
TEST(PagedAttention, Fp8CodecIsE4M3) {
    auto value = [](int c) {
        const int e = (c >> 3) & 15, m = c & 7;
        const double mag =
            e == 0 ? m / 8.0 * std::ldexp(1.0, -6) : (1 + m / 8.0) * std::ldexp(1.0, e - 7);
        return (c & 0x80) ? -mag : mag;
    };
    const core::f16 one = core::f32_to_f16(1.0f);
    for (int c = 0; c < 256; ++c) {
        if ((c & 0x7f) == 0x7f) continue;  // NaN codes
        int8_t q[kKvQuantGroup];
        std::fill(q, q + kKvQuantGroup, static_cast<int8_t>(static_cast<uint8_t>(c)));
        float x[kKvQuantGroup];
        kv_dequantize_group(KvQuant::fp8_e4m3, q, one, x);
        EXPECT_EQ(x[0], static_cast<float>(value(c))) << "code " << c;
    }
    // Encode with a group whose max is 448 (scale exactly 1): element 0 pins the scale.
    for (int c = 0; c < 126; ++c) {
        float x[kKvQuantGroup] = {448.0f};
        x[1] = static_cast<float>(value(c));
        x[2] = static_cast<float>((value(c) + value(c + 1)) / 2);  // halfway: even mantissa wins
        x[3] = -static_cast<float>(value(c + 1));
        int8_t q[kKvQuantGroup];
        core::f16 d;
        kv_quantize_group(KvQuant::fp8_e4m3, x, q, &d);
        ASSERT_EQ(core::f16_to_f32(d), 1.0f);
        EXPECT_EQ(static_cast<uint8_t>(q[1]), c);
        EXPECT_EQ(static_cast<uint8_t>(q[2]), (c & 1) == 0 ? c : c + 1) << "code " << c;
        EXPECT_EQ(static_cast<uint8_t>(q[3]), 0x80 | (c + 1));
    }
    float big[kKvQuantGroup] = {448.0f, 1e6f};
    // 1e6 sets the scale; 448 then lies far below it.
    int8_t q[kKvQuantGroup];
    core::f16 d;
    kv_quantize_group(KvQuant::fp8_e4m3, big, q, &d);
    EXPECT_EQ(static_cast<uint8_t>(q[1]), 0x7e);  // 448 x d: the largest code
}

// The kernel's write encodes as the reference codec on the values where rounding is decided:
// every E4M3 value up to 448, the midpoints between neighbours (ties: the even code), one f32 ulp
// either side of each, and int8's integers and half-integers likewise; and (fp8) a NaN and an
// infinity in a row, coded as the reference codes them. A group's first element is
// 448 (fp8) or 127 (int8) times a power of two, so its scale is exact and each element x / d is the
// value meant; rows of 32 such values go through paged_kv_write and are compared byte for byte,
// and each E4M3 code with a search of the code table (the codec computes it by bit arithmetic).
TEST(PagedAttention, QuantizedKvWriteRoundsEveryTieAsTheReference) {
    for (KvQuant quant : {KvQuant::int8, KvQuant::fp8_e4m3}) {
        const float qmax = quant == KvQuant::int8 ? 127.0f : 448.0f;
        std::vector<float> vals, t;  // t: the E4M3 value of each finite code, increasing
        if (quant == KvQuant::fp8_e4m3) {
            for (int c = 0; c < 127; ++c) {
                int8_t q[kKvQuantGroup];
                std::fill(q, q + kKvQuantGroup, static_cast<int8_t>(c));
                float x[kKvQuantGroup];
                kv_dequantize_group(KvQuant::fp8_e4m3, q, core::f32_to_f16(1.0f), x);
                t.push_back(x[0]);
            }
            for (size_t c = 0; c < t.size(); ++c) {
                const float mid = c + 1 < t.size() ? (t[c] + t[c + 1]) / 2 : t[c];
                for (float x : {t[c], mid}) {
                    vals.push_back(x);
                    vals.push_back(std::nextafter(x, 0.0f));
                    vals.push_back(std::nextafter(x, 1e9f));
                }
            }
        } else {
            for (int i = 0; i <= 127; ++i) {
                for (float x : {static_cast<float>(i), i + 0.5f}) {
                    vals.push_back(x);
                    vals.push_back(std::nextafter(x, 0.0f));
                    vals.push_back(std::nextafter(x, 1e9f));
                }
            }
        }
        // Groups of 31 values behind the scale-setting element, alternately signed, times 2^-3.
        constexpr float kScale = 0.125f;
        const int64_t per = kKvQuantGroup - 1;
        const int64_t groups = (static_cast<int64_t>(vals.size()) + per - 1) / per;
        const int64_t HS = kKvQuantGroup, N = groups;
        Tensor k = Tensor::empty({N, 1, HS}, DType::f32);
        for (int64_t g = 0; g < groups; ++g) {
            float* row = k.data<float>() + g * HS;
            row[0] = qmax * kScale;
            for (int64_t e = 1; e < HS; ++e) {
                const auto at = static_cast<size_t>(g * per + e - 1);
                const float x = at < vals.size() ? std::min(vals[at], qmax) : 0.0f;
                row[e] = (e % 2 == 0 ? -x : x) * kScale;
            }
        }
        if (quant == KvQuant::fp8_e4m3) {  // a non-finite value codes as the reference codes it
            k.data<float>()[5] = std::numeric_limits<float>::quiet_NaN();
            k.data<float>()[HS + 7] = std::numeric_limits<float>::infinity();
        }
        std::vector<BlockId> table(static_cast<size_t>(N));
        std::iota(table.begin(), table.end(), 0);
        PagedKvCache cache = one_slot_cache(quant, N, HS);
        const std::vector<SeqSlice> slices = {{0, N, 0, table}};
        paged_kv_write(cache, k, k, slices);
        for (int64_t g = 0; g < groups; ++g) {
            int8_t want[kKvQuantGroup];
            core::f16 wd;
            kv_quantize_group(quant, k.data<float>() + g * HS, want, &wd);
            ASSERT_EQ(cache.k_scale.data<core::f16>()[g].bits, wd.bits);
            for (int64_t e = 0; e < HS; ++e) {
                ASSERT_EQ(cache.k.data<int8_t>()[g * HS + e], want[e])
                    << to_string(quant) << " value " << k.data<float>()[g * HS + e] / kScale;
            }
            // And the codec's E4M3 rounding against a search of the code table: the nearest
            // value, ties to the even code, 448 at most; a NaN codes as 0.
            const float d = core::f16_to_f32(wd), inv = d > 0.0f ? 1.0f / d : 0.0f;
            for (int64_t e = 0; e < HS && quant == KvQuant::fp8_e4m3; ++e) {
                const float a = std::min(std::fabs(k.data<float>()[g * HS + e] * inv), 448.0f);
                int code = 0;
                if (a > 0.0f) {  // false for a NaN
                    const auto hi = std::upper_bound(t.begin(), t.end(), a) - t.begin();
                    const auto lo = std::min<std::ptrdiff_t>(hi, 126) - (hi <= 126 ? 1 : 0);
                    const float dl = a - t[static_cast<size_t>(lo)];
                    const float dh = lo < 126 ? t[static_cast<size_t>(lo) + 1] - a : dl + 1.0f;
                    code = static_cast<int>(dl < dh || (dl == dh && lo % 2 == 0) ? lo : lo + 1);
                }
                EXPECT_EQ(static_cast<int>(static_cast<uint8_t>(want[e]) & 0x7f), code)
                    << "value " << a;
            }
        }
    }
}

// The quantized write: each owned row lands at its slot as the reference quantizer encodes it
// (bytes and scales bit-identical), nothing else changes; the decoded values are within half a
// step of the inputs (int8: d / 2 with d = max|x| / 127 per group) or an E4M3 half-ulp (fp8).
TEST(PagedAttention, QuantizedKvWriteMatchesReferenceQuantizer) {
    Rng rng(23);
    const int64_t NKV = 2, HS = 64, bs = 4, n_blocks = 8, W = 3 * NKV * HS;
    std::vector<BlockId> t0 = {5, 2}, t1 = {kNoBlock, 7, 0};
    std::vector<SeqSlice> slices = {{0, 3, 2, t0}, {4, 2, 8, t1}};
    for (KvQuant quant : {KvQuant::int8, KvQuant::fp8_e4m3}) {
        for (DType in : {DType::f32, DType::bf16}) {
            Tensor fused = random_tensor(rng, {6, W}, in, -3.0, 3.0);
            Tensor k = fused.as_strided({6, NKV, HS}, {W, HS, 1}, 0);
            Tensor v = fused.as_strided({6, NKV, HS}, {W, HS, 1}, NKV * HS);
            QuantCache qc = random_quant_cache(rng, quant, n_blocks, bs, NKV, HS);
            Tensor k0 = qc.cache.k.clone(), ks0 = qc.cache.k_scale.clone();
            paged_kv_write(qc.cache, k, v, slices);
            Tensor kf = k.to(DType::f32).contiguous(), vf = v.to(DType::f32).contiguous();
            std::vector<bool> written(static_cast<size_t>(n_blocks * bs), false);
            for (const SeqSlice& s : slices) {
                for (int64_t i = 0; i < s.n_tokens; ++i) {
                    const int64_t p = s.pos + i;
                    const int64_t blk = s.blocks[static_cast<size_t>(p / bs)];
                    written[static_cast<size_t>(blk * bs + p % bs)] = true;
                    for (auto [src, data, scale] :
                         {std::tuple{&kf, &qc.cache.k, &qc.cache.k_scale},
                          std::tuple{&vf, &qc.cache.v, &qc.cache.v_scale}}) {
                        for (int64_t g = 0; g < NKV * HS / kKvQuantGroup; ++g) {
                            const float* x =
                                src->data<float>() + (s.start + i) * NKV * HS + g * kKvQuantGroup;
                            int8_t want[kKvQuantGroup];
                            core::f16 wd;
                            kv_quantize_group(quant, x, want, &wd);
                            const int64_t c = g * kKvQuantGroup;  // head c / HS, offset c % HS
                            const int64_t at =
                                cache_offset(blk, c / HS, p % bs, NKV, bs, HS) + c % HS;
                            const int8_t* got = data->data<int8_t>() + at;
                            const core::f16 gd = scale->data<core::f16>()[at / kKvQuantGroup];
                            EXPECT_EQ(gd.bits, wd.bits);
                            EXPECT_EQ(std::memcmp(got, want, kKvQuantGroup), 0);
                            // Independent bound on the decoded values.
                            float amax = 0, dec[kKvQuantGroup];
                            for (int64_t e = 0; e < kKvQuantGroup; ++e)
                                amax = std::max(amax, std::fabs(x[e]));
                            kv_dequantize_group(quant, got, gd, dec);
                            for (int64_t e = 0; e < kKvQuantGroup; ++e) {
                                const double bound =
                                    quant == KvQuant::int8
                                        ? 0.5 * amax / 127 * 1.001 + 1e-7
                                        : std::max<double>(std::fabs(x[e]) / 16,
                                                           amax / 448 * std::ldexp(1.0, -10)) *
                                                  1.001 +
                                              1e-7;
                                EXPECT_LE(std::fabs(dec[e] - x[e]), bound)
                                    << to_string(quant) << " x " << x[e] << " amax " << amax;
                            }
                        }
                    }
                }
            }
            // Slots no slice owns keep their bytes.
            for (int64_t slot = 0; slot < n_blocks * bs; ++slot) {
                if (written[static_cast<size_t>(slot)]) continue;
                for (int64_t h = 0; h < NKV; ++h) {
                    const int64_t at = cache_offset(slot / bs, h, slot % bs, NKV, bs, HS);
                    EXPECT_EQ(std::memcmp(qc.cache.k.data<int8_t>() + at, k0.data<int8_t>() + at,
                                          static_cast<size_t>(HS)),
                              0);
                    EXPECT_EQ(std::memcmp(qc.cache.k_scale.data<core::f16>() + at / kKvQuantGroup,
                                          ks0.data<core::f16>() + at / kKvQuantGroup,
                                          static_cast<size_t>(HS / kKvQuantGroup) * 2),
                              0);
                }
            }
        }
    }
}

}  // namespace
}  // namespace zs::ops
