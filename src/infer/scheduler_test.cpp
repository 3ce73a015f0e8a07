// Scheduler rules without a model: a fake forward commits each batch and appends one token to
// every sequence that samples. Expected batches are worked out by hand from the rules: decodes
// first, prompt chunks fill the rest of the token budget, FCFS admission gated by free blocks and
// max_seqs, preemption of the most recently admitted sequence, and the prefill-first policy.
//
// Sliding windows: the blocks dropped after each commit, by hand; block accounting through
// preemption and aborts; then the engine end to end on tiny windowed models, against solo greedy
// runs through models::ContiguousKvCache and against the same engine keeping every block.
#include "infer/scheduler.h"

#include <algorithm>
#include <limits>
#include <map>

#include <gtest/gtest.h>

#include "base/error.h"
#include "infer/engine.h"
#include "infer/engine_test_util.h"
#include "models/kv_cache.h"
#include "ops/activation.h"
#include "tests/test_util.h"

namespace zs::infer {
namespace {

struct Harness {
    Harness(int64_t n_blocks, int64_t block_size, SchedulerConfig cfg, int64_t window = 0)
        : pool(spec(n_blocks, block_size)), sched(cfg, pool, window) {}

    static KvCacheSpec spec(int64_t n_blocks, int64_t block_size) {
        KvCacheSpec s;
        s.n_layers = 1;
        s.n_kv_heads = 1;
        s.head_dim = 2;
        s.block_size = block_size;
        s.dtype = DType::f32;
        s.n_blocks = n_blocks;
        return s;
    }

    RequestId add(int64_t prompt_len, int64_t max_tokens = 100) {
        std::vector<int32_t> p(static_cast<size_t>(prompt_len));
        for (int64_t i = 0; i < prompt_len; ++i)
            p[static_cast<size_t>(i)] = static_cast<int32_t>(next_id * 1000 + i);
        RequestOptions o;
        o.max_tokens = max_tokens;
        sched.add(std::make_unique<Sequence>(next_id, std::move(p), o, 100000));
        return next_id++;
    }

    // The fake forward: commit, then every sampling sequence gains one token (finishing at
    // max_tokens).
    void complete(const Batch& b) {
        sched.commit(b);
        std::vector<RequestId> done;
        for (const ScheduledSeq& e : b.seqs) {
            if (!e.sample) continue;
            e.seq->tokens.push_back(7);
            if (e.seq->n_output() >= e.seq->opts.max_tokens) done.push_back(e.seq->id);
        }
        for (RequestId id : done) sched.finish(id, FinishReason::length);
    }

    KvBlockPool pool;
    Scheduler sched;
    RequestId next_id = 1;
};

// (id, n_tokens, decode) of each batch entry, in row order.
using Entries = std::vector<std::tuple<RequestId, int64_t, bool>>;
Entries entries(const Batch& b) {
    Entries e;
    for (const ScheduledSeq& s : b.seqs) e.emplace_back(s.seq->id, s.n_tokens, s.decode);
    return e;
}

SchedulerConfig config(int64_t budget, SchedulePolicy p = SchedulePolicy::split_fuse,
                       int64_t max_seqs = 8) {
    SchedulerConfig c;
    c.max_batch_tokens = budget;
    c.max_seqs = max_seqs;
    c.policy = p;
    c.prefix_caching = false;
    return c;
}

TEST(Scheduler, DecodesFirstThenAPromptChunkFillsTheBudget) {
    Harness h(64, 4, config(16));
    for (int i = 0; i < 3; ++i) h.add(2);
    Batch b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 2, false}, {2, 2, false}, {3, 2, false}}));
    h.complete(b);
    h.add(40);
    // 13 = 16 - 3 decodes; the 40-token prompt runs in chunks 13, 13, 13, 1.
    int64_t computed = 0;
    for (int step = 0; step < 4; ++step) {
        b = h.sched.schedule();
        const int64_t chunk = std::min<int64_t>(13, 40 - computed);
        EXPECT_EQ(entries(b),
                  (Entries{{1, 1, true}, {2, 1, true}, {3, 1, true}, {4, chunk, false}}))
            << "step " << step;
        EXPECT_EQ(b.n_tokens, 3 + chunk);
        EXPECT_EQ(b.n_decode_tokens, 3);
        EXPECT_EQ(b.n_prefill_tokens, chunk);
        EXPECT_EQ(b.seqs.back().pos, computed);
        EXPECT_EQ(b.seqs.back().sample, computed + chunk == 40);
        computed += chunk;
        h.complete(b);
    }
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 1, true}, {2, 1, true}, {3, 1, true}, {4, 1, true}}));
}

TEST(Scheduler, SplitFusePacksShortPromptsAndSplitsTheOneThatOverflows) {
    Harness h(64, 4, config(16));
    h.add(5);
    h.add(6);
    h.add(9);
    Batch b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 5, false}, {2, 6, false}, {3, 5, false}}));
    h.complete(b);
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 1, true}, {2, 1, true}, {3, 4, false}}));
}

TEST(Scheduler, PrefillFirstRunsWholePromptsBeforeAnyDecode) {
    Harness h(64, 4, config(16, SchedulePolicy::prefill_first));
    h.add(5);
    h.add(6);
    h.add(9);
    Batch b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 5, false}, {2, 6, false}}));  // 9 waits: no split
    h.complete(b);
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{3, 9, false}}));  // prompt work pending: no decodes
    h.complete(b);
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 1, true}, {2, 1, true}, {3, 1, true}}));
    h.complete(b);
    // A prompt longer than the whole budget is chunked even under prefill-first.
    h.add(20);
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{4, 16, false}}));
    h.complete(b);
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{4, 4, false}}));
}

TEST(Scheduler, MaxSeqsCapsRunningSequences) {
    Harness h(64, 4, config(16, SchedulePolicy::split_fuse, 2));
    for (int i = 0; i < 3; ++i) h.add(2, 2);
    Batch b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 2, false}, {2, 2, false}}));
    h.complete(b);
    EXPECT_EQ(h.sched.n_running(), 2);
    EXPECT_EQ(h.sched.n_waiting(), 1);
    b = h.sched.schedule();  // both decode their last token and finish
    EXPECT_EQ(entries(b), (Entries{{1, 1, true}, {2, 1, true}}));
    h.complete(b);
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{3, 2, false}}));
    EXPECT_THROW(Scheduler(config(4, SchedulePolicy::split_fuse, 5), h.pool), ConfigError);
}

TEST(Scheduler, AdmissionIsFcfsAndNeedsTheChunksBlocks) {
    Harness h(6, 4, config(64));
    h.add(12);  // 3 blocks
    h.add(16);  // 4 blocks: only 3 left
    h.add(2);   // would fit, but may not overtake
    Batch b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 12, false}}));
    EXPECT_EQ(h.pool.n_used(), 3);
    EXPECT_EQ(h.sched.n_waiting(), 2);
    EXPECT_EQ(h.sched.find(2)->blocks.size(), 0u);
}

TEST(Scheduler, PreemptsTheMostRecentlyAdmittedAndRequeuesItFirst) {
    Harness h(4, 4, config(64));
    h.add(7);  // 2 blocks each: the pool is full after admission
    h.add(7);
    h.add(3);  // waits behind them
    Batch b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 7, false}, {2, 7, false}}));
    h.complete(b);           // both hold 8 tokens, 7 computed
    b = h.sched.schedule();  // position 7 still fits in block 1 of each
    EXPECT_EQ(entries(b), (Entries{{1, 1, true}, {2, 1, true}}));
    EXPECT_EQ(b.n_preempted, 0);
    h.complete(b);
    // Position 8 needs a third block for each; none is free: 2 (most recent) is preempted.
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 1, true}}));
    EXPECT_EQ(b.n_preempted, 1);
    EXPECT_EQ(h.sched.n_preemptions(), 1);
    const Sequence* s2 = h.sched.find(2);
    EXPECT_EQ(s2->status, SeqStatus::preempted);
    EXPECT_EQ(s2->num_computed, 0);
    EXPECT_TRUE(s2->blocks.empty());
    EXPECT_EQ(s2->num_tokens(), 9);  // its output is kept and will be recomputed
    EXPECT_EQ(h.sched.n_waiting(), 2);
    EXPECT_EQ(h.pool.n_used(), 3);
    h.complete(b);
    // 2 needs 3 blocks to recompute its 9 tokens and only 1 is free; 3 must not overtake it.
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 1, true}}));
    h.sched.finish(1, FinishReason::abort);
    EXPECT_EQ(h.pool.n_used(), 0);
    // Readmitted first; its 9 tokens are one recompute chunk that samples the 10th.
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{2, 9, false}, {3, 3, false}}));
    EXPECT_TRUE(b.seqs[0].sample);
}

TEST(Scheduler, ADecodeThatCannotGrowPreemptsItselfWhenMostRecent) {
    // 1: a 12-token prompt chunked by the budget; 2 joins when 1's last chunk leaves room.
    Harness h(5, 4, config(8));
    h.add(12);
    h.add(3);
    Batch b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 8, false}}));  // the budget is spent: 2 waits
    h.complete(b);
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 4, false}, {2, 3, false}}));
    h.complete(b);  // 1: 13 tokens, 12 computed, 3 blocks; 2: 4 tokens, 3 computed, 1 block
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 1, true}, {2, 1, true}}));  // 1 takes the last block
    h.complete(b);
    EXPECT_EQ(h.pool.n_free(), 0);
    // 1 (position 13) still has room in its last block; 2 (position 4) needs a new one and is
    // itself the most recently admitted: it steps aside.
    b = h.sched.schedule();
    EXPECT_EQ(entries(b), (Entries{{1, 1, true}}));
    EXPECT_EQ(b.n_tokens, 1);
    EXPECT_EQ(b.n_decode_tokens, 1);
    EXPECT_EQ(b.n_preempted, 1);
    EXPECT_EQ(h.sched.find(2)->status, SeqStatus::preempted);
    EXPECT_EQ(h.pool.n_used(), 4);
}

TEST(Scheduler, FinishFreesBlocksInAnyState) {
    Harness h(16, 4, config(8));
    h.add(20);
    h.add(4);
    Batch b = h.sched.schedule();
    h.complete(b);
    EXPECT_GT(h.pool.n_used(), 0);
    auto s = h.sched.finish(1, FinishReason::abort);  // mid-prefill
    ASSERT_TRUE(s);
    EXPECT_EQ(s->finish_reason, FinishReason::abort);
    EXPECT_EQ(s->status, SeqStatus::finished);
    EXPECT_NE(h.sched.finish(2, FinishReason::abort), nullptr);  // still waiting
    EXPECT_EQ(h.pool.n_used(), 0);
    EXPECT_TRUE(h.sched.idle());
    EXPECT_EQ(h.sched.finish(2, FinishReason::abort), nullptr);
    EXPECT_TRUE(h.sched.schedule().empty());
}

// ---- sliding window ----

// Blocks s still holds; its kNoBlock slots must be exactly the leading n_dropped_blocks.
int64_t live_blocks(const Sequence& s) {
    for (size_t k = 0; k < s.blocks.size(); ++k) {
        EXPECT_EQ(s.blocks[k] == kNoBlock, static_cast<int64_t>(k) < s.n_dropped_blocks)
            << "slot " << k << " of request " << s.id;
    }
    return static_cast<int64_t>(s.blocks.size()) - s.n_dropped_blocks;
}

TEST(Scheduler, SlidingWindowDropsExactlyTheBlocksNoFutureQueryReads) {
    // W = 6, blocks of 4: after computing c tokens the next query (position c) reads keys from
    // c - 5, so blocks wholly below c - 5 go: (c - 5) / 4 of them.
    const int64_t W = 6, bs = 4;
    Harness h(64, bs, config(8), W);
    EXPECT_EQ(h.sched.kv_window(), W);
    const RequestId id = h.add(10, 30);
    Sequence* s = h.sched.find(id);
    int64_t peak = 0, most_dropped = 0, steps = 0;
    while (!h.sched.idle()) {
        ASSERT_LT(++steps, 100);
        Batch b = h.sched.schedule();
        ASSERT_FALSE(b.empty());
        peak = std::max(peak, h.pool.n_used());  // reserved for the step, nothing dropped yet
        const int64_t c = s->num_computed + b.n_tokens;
        h.complete(b);
        if (h.sched.find(id) == nullptr) break;
        EXPECT_EQ(s->n_dropped_blocks, std::max<int64_t>(0, c - W + 1) / bs) << "at " << c;
        EXPECT_EQ(h.pool.n_used(), live_blocks(*s));
        most_dropped = std::max(most_dropped, s->n_dropped_blocks);
    }
    EXPECT_EQ(most_dropped, (39 - W + 1) / bs);  // 40 tokens: the last step computes 39
    EXPECT_LE(peak, h.sched.max_seq_blocks(40));
    EXPECT_EQ(h.sched.max_seq_blocks(40), (W + 8 + bs - 1) / bs + 1);
    EXPECT_EQ(h.sched.max_seq_tokens(), std::numeric_limits<int64_t>::max());  // any length
    Harness tiny(4, bs, config(8), W);  // the bound (5 blocks) does not fit: every slot
    EXPECT_EQ(tiny.sched.max_seq_tokens(), 4 * bs);
    EXPECT_EQ(h.pool.n_free(), h.pool.n_blocks());

    // Boundary: 8 computed, the next query reads from position 3: block 0 stays; at 9 it goes.
    Harness g(64, bs, config(8), W);
    g.add(8, 5);
    Sequence* t = g.sched.find(1);
    g.complete(g.sched.schedule());
    EXPECT_EQ(t->num_computed, 8);
    EXPECT_EQ(t->n_dropped_blocks, 0);
    g.complete(g.sched.schedule());
    EXPECT_EQ(t->num_computed, 9);
    EXPECT_EQ(t->n_dropped_blocks, 1);
    EXPECT_EQ(t->blocks[0], kNoBlock);
}

TEST(Scheduler, SlidingWindowOffOrWithoutAWindowKeepsEveryBlock) {
    SchedulerConfig off = config(8);
    off.free_outside_window = false;
    Harness h(64, 4, off, 6);
    EXPECT_EQ(h.sched.kv_window(), 0);
    EXPECT_EQ(h.sched.max_seq_blocks(40), 10);
    EXPECT_EQ(h.sched.max_seq_tokens(), 64 * 4);
    h.add(10, 20);
    Sequence* s = h.sched.find(1);
    for (int i = 0; i < 15; ++i) h.complete(h.sched.schedule());
    EXPECT_EQ(s->n_dropped_blocks, 0);
    EXPECT_EQ(h.pool.n_used(), (s->num_computed + 3) / 4);
}

TEST(Scheduler, WindowedPreemptionAbortAndFinishReturnEveryBlockOnce) {
    // 8 blocks of 4, W = 12, budget 8: a decoding sequence holds 4 or 5 blocks, so short prompts
    // admitted together outgrow the pool and the most recent ones get preempted. The pool
    // asserts on a double free; a leak shows as used blocks no sequence holds.
    const int64_t W = 12, bs = 4;
    SchedulerConfig cfg = config(8);
    cfg.prefix_caching = true;
    Harness h(8, bs, cfg, W);
    for (int i = 0; i < 5; ++i) h.add(3 + i, 30);
    bool aborted = false;
    for (int steps = 0; !h.sched.idle(); ++steps) {
        ASSERT_LT(steps, 500);
        Batch b = h.sched.schedule();
        ASSERT_FALSE(b.empty()) << "deadlock";
        h.complete(b);
        int64_t held = 0;
        for (RequestId id = 1; id < h.next_id; ++id) {
            if (const Sequence* s = h.sched.find(id)) held += live_blocks(*s);
        }
        ASSERT_EQ(h.pool.n_used(), held);  // distinct prompts: no block is shared
        // Abort one mid-generation, with blocks already dropped.
        Sequence* s3 = h.sched.find(3);
        if (!aborted && s3 && s3->n_dropped_blocks > 0) {
            ASSERT_TRUE(h.sched.finish(3, FinishReason::abort));
            aborted = true;
        }
    }
    EXPECT_TRUE(aborted);
    EXPECT_GT(h.sched.n_preemptions(), 0);
    EXPECT_EQ(h.pool.n_free(), h.pool.n_blocks());
}

TEST(Scheduler, SharedKvWindowNeedsAWindowOnEveryLayer) {
    const std::string base = R"("vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6)";
    auto window = [&](const std::string& extra) {
        return shared_kv_window(models::parse_hf_config("{" + base + ", " + extra + "}", "t"));
    };
    EXPECT_EQ(window(R"("model_type": "mistral", "sliding_window": 4096)"), 4096);
    EXPECT_EQ(window(R"("model_type": "mistral", "sliding_window": null)"), 0);
    EXPECT_EQ(window(R"("model_type": "llama")"), 0);
    const std::string qwen = R"("model_type": "qwen2", "use_sliding_window": true,
        "sliding_window": 512, )";
    EXPECT_EQ(window(qwen + R"("max_window_layers": 0)"), 512);  // sliding from layer 0 on
    EXPECT_EQ(window(qwen + R"("max_window_layers": 1)"), 0);    // layer 0 attends fully
    EXPECT_EQ(window(qwen + R"("layer_types": ["sliding_attention", "full_attention"])"), 0);
    EXPECT_EQ(window(qwen + R"("layer_types": ["sliding_attention", "sliding_attention"])"), 512);
    EXPECT_EQ(window(R"("model_type": "qwen2", "use_sliding_window": false,
        "sliding_window": 512, "max_window_layers": 0)"),
              0);
}

// ---- the engine on tiny windowed models ----

using models::Transformer;

struct TinyModel {
    std::unique_ptr<Transformer> model;
    std::unique_ptr<models::DenseParams> params;
};

// As engine_test.cpp: weights scaled up so attention over the context, not a bigram table,
// decides the next token; a wrong key or a block read after reuse changes the output.
TinyModel tiny_model(const std::string& json) {
    TinyModel m;
    m.model = std::make_unique<Transformer>(models::parse_hf_config(json, "test config"),
                                            models::RunConfig{.compute_dtype = DType::f32});
    m.params = std::make_unique<models::DenseParams>(m.model->layout(), DType::f32, false);
    m.params->init(5);
    for (int g = 0; g < m.model->layout().n_groups(); ++g) {
        const Tensor& w = m.params->group_weights(g);
        zs::ops::scale(w, w, 12.0f);
    }
    m.params->bind(m.model->binding());
    return m;
}

std::string tiny_json(const std::string& window_keys) {
    return R"({"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, )" +
           window_keys + "}";
}

EngineConfig engine_config(int64_t kv_blocks, bool free_outside_window, bool prefix_caching) {
    EngineConfig c;
    c.kv_blocks = kv_blocks;
    c.block_size = 4;
    c.kv_dtype = DType::f32;
    c.scheduler.max_batch_tokens = 16;
    c.scheduler.max_seqs = 4;
    c.scheduler.prefix_caching = prefix_caching;
    c.scheduler.free_outside_window = free_outside_window;
    return c;
}

struct EngineRun {
    std::map<RequestId, std::vector<int32_t>> tokens;
    std::map<RequestId, int64_t> cached_prompt;
    std::map<RequestId, FinishReason> reason;
    int64_t peak_used = 0;  // the pool's high-water mark
};

// Steps `e` until idle, adding `late` (prompt, max_tokens) after `late_after` steps.
EngineRun drain(Engine& e, int64_t late_after = -1, const std::vector<int32_t>& late = {},
                int64_t late_tokens = 0) {
    EngineRun r;
    for (int64_t step = 0; e.has_unfinished() || step <= late_after; ++step) {
        if (step == late_after) e.add_request(late, greedy(late_tokens));
        for (const RequestOutput& o : e.step()) {
            auto& t = r.tokens[o.id];
            t.insert(t.end(), o.new_tokens.begin(), o.new_tokens.end());
            r.cached_prompt[o.id] = o.n_cached_prompt_tokens;
            if (o.finished) r.reason[o.id] = o.finish_reason;
        }
        EXPECT_LT(step, 2000) << "no progress";
        if (step >= 2000) break;
    }
    r.peak_used = e.kv_pool().stats().n_used_peak;
    return r;
}

TEST(SlidingWindowEngine, LongGenerationHoldsOnlyTheWindowAndMatchesTheReference) {
    // W = 12, blocks of 4, 16 tokens per step: one sequence holds at most ceil(28 / 4) + 1 = 8
    // blocks, against ceil(229 / 4) = 58 without freeing.
    const int64_t W = 12, P = 30, T = 200;
    TinyModel m = tiny_model(tiny_json(R"("model_type": "mistral", "sliding_window": 12)"));
    zs::test::Rng rng(3);
    const std::vector<int32_t> prompt = random_prompt(rng, P, 64);
    const std::vector<int32_t> want = solo(*m.model, prompt, T).tokens;

    Engine windowed(*m.model, engine_config(64, true, false));
    EXPECT_EQ(windowed.scheduler().kv_window(), W);
    windowed.add_request(prompt, greedy(T));
    EngineRun a = drain(windowed);
    EXPECT_EQ(a.tokens[1], want);
    const int64_t bound = (W + 16 + 3) / 4 + 1;
    EXPECT_LE(a.peak_used, bound);
    EXPECT_EQ(windowed.kv_pool().n_free(), windowed.kv_pool().n_blocks());

    Engine keep_all(*m.model, engine_config(64, false, false));
    keep_all.add_request(prompt, greedy(T));
    EngineRun b = drain(keep_all);
    EXPECT_EQ(b.tokens[1], want);
    EXPECT_EQ(b.peak_used, (P + T - 1 + 3) / 4);
    EXPECT_EQ(keep_all.kv_pool().n_free(), keep_all.kv_pool().n_blocks());
    std::printf("max used blocks: window %lld, every block kept %lld (bound %lld)\n",
                static_cast<long long>(a.peak_used), static_cast<long long>(b.peak_used),
                static_cast<long long>(bound));

    // A pool of 12 blocks (48 tokens) takes the 230-token request only because of the window.
    Engine small(*m.model, engine_config(12, true, false));
    small.add_request(prompt, greedy(T));
    EXPECT_EQ(drain(small).tokens[1], want);
    Engine small_keep(*m.model, engine_config(12, false, false));
    EXPECT_THROW(small_keep.add_request(prompt, greedy(T)), ConfigError);
}

TEST(SlidingWindowEngine, PrefixSharingSurvivesTheOtherSequenceFreeing) {
    // A and B share a 32-token prefix (8 blocks). B arrives after A has run k steps, so it
    // takes the prefix from the cache: blocks A still holds (shared, refcount 2) and blocks A
    // already dropped (cached, back from the free list). A keeps dropping blocks B still reads.
    TinyModel m = tiny_model(tiny_json(R"("model_type": "mistral", "sliding_window": 16)"));
    zs::test::Rng rng(8);
    const std::vector<int32_t> prefix = random_prompt(rng, 32, 64);
    std::vector<int32_t> pa = prefix, pb = prefix;
    for (int32_t t : random_prompt(rng, 5, 64)) pa.push_back(t);
    for (int32_t t : random_prompt(rng, 7, 64)) pb.push_back(t);
    const int64_t T = 48;
    const std::vector<int32_t> want_a = solo(*m.model, pa, T).tokens;
    const std::vector<int32_t> want_b = solo(*m.model, pb, T).tokens;
    int64_t runs_with_hits = 0;
    for (int64_t k = 0; k <= 8; ++k) {
        Engine e(*m.model, engine_config(64, true, true));
        e.add_request(pa, greedy(T));
        EngineRun r = drain(e, k, pb, T);
        EXPECT_EQ(r.tokens[1], want_a) << "B after " << k << " steps";
        EXPECT_EQ(r.tokens[2], want_b) << "B after " << k << " steps";
        EXPECT_EQ(r.reason[1], FinishReason::length);
        EXPECT_EQ(r.reason[2], FinishReason::length);
        runs_with_hits += r.cached_prompt[2] > 0;
        EXPECT_EQ(e.kv_pool().n_free(), e.kv_pool().n_blocks()) << "B after " << k << " steps";
    }
    EXPECT_GE(runs_with_hits, 5);
}

TEST(SlidingWindowEngine, MixedFullAndWindowedLayersFreeNothing) {
    // Qwen2 with max_window_layers 1 of 2: layer 0 attends fully, so every block stays.
    const int64_t P = 21, T = 60;
    TinyModel m = tiny_model(tiny_json(R"("model_type": "qwen2", "use_sliding_window": true,
        "sliding_window": 8, "max_window_layers": 1)"));
    ASSERT_EQ(m.model->config().window(0), 0);
    ASSERT_EQ(m.model->config().window(1), 8);
    zs::test::Rng rng(4);
    const std::vector<int32_t> prompt = random_prompt(rng, P, 64);
    Engine e(*m.model, engine_config(64, true, true));
    EXPECT_EQ(e.scheduler().kv_window(), 0);
    e.add_request(prompt, greedy(T));
    EngineRun r = drain(e);
    EXPECT_EQ(r.tokens[1], solo(*m.model, prompt, T).tokens);
    EXPECT_EQ(r.peak_used, (P + T - 1 + 3) / 4);
    EXPECT_EQ(e.kv_pool().n_free(), e.kv_pool().n_blocks());
}

}  // namespace
}  // namespace zs::infer
