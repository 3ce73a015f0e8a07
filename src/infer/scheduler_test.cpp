// Scheduler rules without a model: a fake forward commits each batch and appends one token to
// every sequence that samples. Expected batches are worked out by hand from the rules: decodes
// first, prompt chunks fill the rest of the token budget, FCFS admission gated by free blocks and
// max_seqs, preemption of the most recently admitted sequence, and the prefill-first policy.
#include "infer/scheduler.h"

#include <gtest/gtest.h>

#include "base/error.h"

namespace zs::infer {
namespace {

struct Harness {
    Harness(int64_t n_blocks, int64_t block_size, SchedulerConfig cfg)
        : pool(spec(n_blocks, block_size)), sched(cfg, pool) {}

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

}  // namespace
}  // namespace zs::infer
