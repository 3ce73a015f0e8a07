// Scheduler: which tokens the next forward computes. Dynamic SplitFuse (DeepSpeed-FastGen): every
// forward gets a fixed token budget; running sequences' decode tokens go first (one each), then
// prompt chunks — long prompts are split to fill what is left, short ones packed together. Blocks
// are reserved as tokens are scheduled; when a running sequence cannot get one, the most recently
// admitted sequence is preempted (blocks freed, requeued at the front of the waiting queue, its
// tokens recomputed later). The oldest running sequence is never preempted while another one
// runs, so it always progresses: no deadlock, no dropped request.
//
// Sliding window (vLLM): when every layer of the model attends only to the last W keys, a query at
// position q reads keys [q - W + 1, q], and later queries read later keys. So after each commit
// (and after a prefix-cache hit at admission) the blocks wholly below num_computed - W + 1 are
// returned to the pool (one reference dropped: a block shared through the prefix cache stays while
// others hold it) and their table slots set to kNoBlock. A sequence then holds at most
// ceil((W + max_batch_tokens) / block_size) + 1 blocks at once (its window before the step's
// first query plus the step's chunk), whatever its length (max_seq_blocks).
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
    // With a model whose every layer has a sliding window: free the blocks outside it (false:
    // keep every block for the sequence's life, as with full attention).
    bool free_outside_window = true;
};

// The window W every layer of `model` attends within (the largest, should they differ), or 0 when
// some layer attends to the whole context. One block holds the K/V of every layer, so a block can
// go only when no layer will read it again: with mixed layers (Qwen2 max_window_layers below
// num_hidden_layers, layer_types mixing full and sliding attention) nothing is ever freed early.
int64_t shared_kv_window(const models::ModelConfig& model);

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
    // kv_window: shared_kv_window(model), 0 for none. Throws ConfigError on an invalid config.
    Scheduler(const SchedulerConfig& cfg, KvBlockPool& pool, int64_t kv_window = 0);
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    const SchedulerConfig& config() const { return cfg_; }
    // The window outside which blocks are freed (0: none).
    int64_t kv_window() const { return window_; }
    // The most blocks one sequence of n_tokens tokens holds at once: all of them, or with a
    // window, at most ceil((W + max_batch_tokens) / block_size) + 1.
    int64_t max_seq_blocks(int64_t n_tokens) const;
    // The longest sequence the pool can hold: every slot, or with a window whose bound fits the
    // pool, unlimited (INT64_MAX).
    int64_t max_seq_tokens() const;
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
    // Register s's full blocks below num_computed with the prefix cache (block_hashes).
    void cache_full_blocks(Sequence& s);
    // Free s's leading blocks that lie wholly below num_computed - W + 1 (sliding window).
    void drop_outside_window(Sequence& s);

    SchedulerConfig cfg_;
    KvBlockPool& pool_;
    int64_t window_ = 0;  // kv_window when cfg_.free_outside_window, else 0
    std::unordered_map<RequestId, std::unique_ptr<Sequence>> seqs_;
    std::deque<Sequence*> waiting_;
    std::vector<Sequence*> running_;  // in admission order (the back is the preemption victim)
    int64_t next_admit_ = 0;
    int64_t n_preemptions_ = 0;
    int64_t n_prefix_hit_tokens_ = 0;
};

}  // namespace zs::infer
