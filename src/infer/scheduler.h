// Scheduler: which tokens the next forward computes. Dynamic SplitFuse (DeepSpeed-FastGen): every
// forward gets a fixed token budget; running sequences' decode tokens go first (one each), then
// prompt chunks — long prompts are split to fill what is left, short ones packed together. Blocks
// are reserved as tokens are scheduled; when a running sequence cannot get one, the most recently
// admitted sequence is preempted (blocks freed, requeued at the front of the waiting queue, its
// tokens recomputed later). The oldest running sequence is never preempted while another one
// runs, so it always progresses: no deadlock, no dropped request.
//
// schedule() is a few small named steps (TRT-LLM): schedule_decodes, schedule_running_prefills,
// admit_waiting; the prefill-first policy (vLLM v0) orders them differently. Single-threaded.
#pragma once

#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include "infer/block_pool.h"
#include "infer/sequence.h"

namespace zs::infer {

enum class SchedulePolicy {
    split_fuse,     // decodes first, then prompt chunks filling the token budget
    prefill_first,  // whole prompts first; decodes only in steps with no prompt work
};
const char* to_string(SchedulePolicy p);

struct SchedulerConfig {
    int64_t max_batch_tokens = 768;  // tokens per forward
    int64_t max_seqs = 256;          // running sequences at once (<= max_batch_tokens)
    SchedulePolicy policy = SchedulePolicy::split_fuse;
    bool prefix_caching = true;
    // Free blocks an admission must leave for the sequences already running (vLLM v0's
    // watermark), so a new prompt does not immediately cause a preemption.
    int64_t admission_reserve_blocks = 0;
};

// One sequence's share of a forward: tokens [pos, pos + n_tokens) of seq->tokens.
struct ScheduledSeq {
    Sequence* seq = nullptr;
    int64_t pos = 0;
    int64_t n_tokens = 0;
    bool decode = false;  // a generation step (else a prompt / recompute chunk)
    bool sample = false;  // this chunk reaches the end of the sequence: sample from its last row
};

struct Batch {
    std::vector<ScheduledSeq> seqs;  // in row order: decodes first, then prompt chunks
    int64_t n_tokens = 0;
    int64_t n_prefill_tokens = 0;
    int64_t n_decode_tokens = 0;
    int64_t n_preempted = 0;  // sequences preempted while building this batch
    bool empty() const { return seqs.empty(); }
};

class Scheduler {
public:
    // Throws ConfigError on an invalid config.
    Scheduler(const SchedulerConfig& cfg, KvBlockPool& pool);
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    const SchedulerConfig& config() const { return cfg_; }
    // Queue a new sequence (FCFS, behind every waiting one). Ids must be unique.
    void add(std::unique_ptr<Sequence> seq);
    // The next batch; empty when nothing can run. Reserves the blocks its tokens need.
    Batch schedule();
    // After the forward of `b`: its tokens are computed (num_computed advances) and full blocks
    // enter the prefix cache. Sampling and appending tokens is the caller's.
    void commit(const Batch& b);
    // End a sequence in any state now: its blocks are freed and the scheduler forgets it. Returns
    // it with status finished and `reason`, or null for an unknown id.
    std::unique_ptr<Sequence> finish(RequestId id, FinishReason reason);

    Sequence* find(RequestId id) const;
    int64_t n_waiting() const { return static_cast<int64_t>(waiting_.size()); }
    int64_t n_running() const { return static_cast<int64_t>(running_.size()); }
    bool idle() const { return seqs_.empty(); }
    int64_t n_preemptions() const { return n_preemptions_; }
    // Tokens admitted sequences took from the prefix cache instead of computing them.
    int64_t n_prefix_hit_tokens() const { return n_prefix_hit_tokens_; }

private:
    void schedule_decodes(Batch& b, int64_t& budget);
    void schedule_running_prefills(Batch& b, int64_t& budget);
    void admit_waiting(Batch& b, int64_t& budget);

    void push(Batch& b, Sequence& s, int64_t n, bool decode) const;
    // Blocks for tokens up to num_computed + n, leaving `keep_free` blocks; false: none taken.
    bool reserve(Sequence& s, int64_t n, int64_t keep_free);
    // Tokens s could compute now with its blocks and the free ones.
    int64_t fit_tokens(const Sequence& s) const;
    // reserve(s, n), preempting the most recent sequences until it succeeds; false when s itself
    // had to go.
    bool make_room(Sequence& s, int64_t n, Batch& b, int64_t& budget);
    void preempt(Sequence& victim, Batch& b, int64_t& budget);
    void release_blocks(Sequence& s);

    SchedulerConfig cfg_;
    KvBlockPool& pool_;
    std::unordered_map<RequestId, std::unique_ptr<Sequence>> seqs_;
    std::deque<Sequence*> waiting_;
    std::vector<Sequence*> running_;  // in admission order (the back is the preemption victim)
    int64_t next_admit_ = 0;
    int64_t n_preemptions_ = 0;
    int64_t n_prefix_hit_tokens_ = 0;
};

}  // namespace zs::infer
