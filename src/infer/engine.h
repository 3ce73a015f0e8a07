// Engine: the serving loop's core. add_request() queues a prompt; each step() runs
//   schedule (Scheduler: token budget, decodes first, prompt chunks, preemption)
//   → build the ragged batch (ids, positions, one logit row per sequence that samples)
//   → Transformer::forward_tokens through a PagedKvAttention over the KvBlockPool
//   → sample per sequence → append tokens, check stop conditions
// and returns what each request produced in that step.
//
// response_format: a sequence whose sampling params carry a grammar samples under the mask its
// JsonMatcher computes over EngineConfig::token_index (EOS and stop_token_ids only once a
// complete value exists); it finishes with reason stop as soon as the value is complete, and
// with reason constraint if the grammar leaves no token.
//
// Threading: single-threaded; one thread owns the engine, its scheduler, KV pool and model (the
// HTTP server talks to it through queues). Stop *strings* need detokenized text, so the server
// matches them and ends the request with finish(id, FinishReason::stop). n > 1 choices are left to
// the server as n independent requests: with prefix caching on, the later ones reuse the prompt
// blocks of the first once its prompt is computed.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "infer/block_pool.h"
#include "infer/paged_attention.h"
#include "infer/scheduler.h"
#include "infer/sequence.h"
#include "infer/thread_tuner.h"
#include "infer/token_index.h"
#include "models/transformer.h"

namespace zs::infer {

struct EngineConfig {
    int64_t kv_cache_bytes = int64_t{1} << 30;   // KV memory budget (used when kv_blocks == 0)
    int64_t kv_blocks = 0;                       // explicit block count, overrides the budget
    int64_t block_size = 16;                     // tokens per KV block
    DType kv_dtype = DType::bf16;                // f32 or bf16
    ops::KvQuant kv_quant = ops::KvQuant::none;  // int8 / fp8 cache (then kv_dtype is ignored)
    // Choose the engine thread's OpenMP thread count from the measured time of decode-only steps
    // (infer/thread_tuner.h): serve sets it; off by default (and under tp).
    bool tune_threads = false;
    SchedulerConfig scheduler;
    // Token bytes for response_format constraints (TokenIndex::from_tokenizer); null: requests
    // with a grammar are refused.
    std::shared_ptr<const TokenIndex> token_index;
    // Tensor parallelism (the model's RunConfig::tp): this engine is rank 0 of the group and
    // sends every forward's inputs to the other ranks, which run infer::follow_forwards
    // (tp_forward.h). Null or size 1: none.
    comm::Communicator* tp = nullptr;
    // Expert parallelism (the model's RunConfig::ep, MoE models): likewise rank 0 of the ep
    // group sends every forward's inputs; every rank runs the whole ragged batch with its E / ep
    // experts (each routed row computed once over the group). Null or size 1: none.
    comm::Communicator* ep = nullptr;
    // Both tp and ep (DeepSpeed-TED; the ep group the same tp rank's peers): every rank of this
    // group (tp x ep of them; this engine its rank 0) runs each forward. Unused otherwise.
    comm::Communicator* tp_ep = nullptr;
    // ZeRO-Inference (zero::WeightStream, `serve --offload-weights`): the group hooks every
    // forward runs under, so each engine step (all its sequences' prefill chunks and decodes in
    // one ragged batch) streams every block's weights once. Must outlive the engine; not with
    // tp / ep (ConfigError). Null: the weights are bound in memory.
    models::GroupHooks* weight_hooks = nullptr;
};

// The paged KV cache `model` needs under `cfg`: this rank's KV heads (tensor parallelism) and the
// block count from cfg.kv_blocks or the memory budget.
KvCacheSpec kv_cache_spec(const models::Transformer& model, const EngineConfig& cfg);

// What one request produced in one step.
struct RequestOutput {
    RequestId id = 0;
    std::vector<int32_t> new_tokens;        // 0 or 1 per step today
    std::vector<SampleResult> new_samples;  // logprob (and top_logprobs) of each new token
    // With the first output token when RequestOptions::prompt_logprobs >= 0: entry i scores
    // prompt token i + 1 (the first prompt token has nothing to be scored against).
    std::vector<SampleResult> prompt_samples;
    bool finished = false;
    FinishReason finish_reason = FinishReason::none;
    int64_t n_prompt_tokens = 0;
    int64_t n_output_tokens = 0;  // all generated so far
    int64_t n_cached_prompt_tokens = 0;
};

// Per-step metrics (the last step's) for /metrics and `zerospeed bench serve`.
struct StepStats {
    int64_t n_seqs = 0;
    int64_t n_tokens = 0;
    int64_t n_prefill_tokens = 0;
    int64_t n_decode_tokens = 0;
    int64_t n_preempted = 0;
    int64_t n_waiting = 0;
    int64_t n_running = 0;
    int64_t kv_blocks_used = 0;
    int64_t kv_blocks_free = 0;
    double forward_seconds = 0;
};

// Totals since construction.
struct EngineCounters {
    int64_t n_steps = 0;
    int64_t n_requests = 0;
    int64_t n_finished = 0;
    int64_t n_prompt_tokens = 0;     // tokens computed as prompt / recompute chunks
    int64_t n_generated_tokens = 0;  // tokens sampled
    int64_t n_preemptions = 0;
    int64_t n_cached_prompt_tokens = 0;  // tokens taken from the prefix cache (incl. recomputes)
};

class Engine {
public:
    // `model` (with weights bound) must outlive the engine. Throws ConfigError on a bad config.
    Engine(models::Transformer& model, const EngineConfig& cfg);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Queue a request. Throws FieldError naming the field for an invalid one: empty prompt, a
    // token id outside the vocabulary, max_tokens < 1, prompt + max_tokens beyond the model's
    // context or beyond what the KV pool can hold for one sequence (the whole pool; for a model
    // whose every layer has a sliding window, the window's blocks), bad sampling parameters.
    RequestId add_request(std::vector<int32_t> prompt, RequestOptions opts);
    // End a request now in any state, freeing its blocks: reason abort (client gone) or stop (a
    // stop string the server matched). False for an unknown or already finished id.
    bool finish(RequestId id, FinishReason reason);
    bool abort(RequestId id) { return finish(id, FinishReason::abort); }

    // One forward over the next batch. Returns one entry per request that gained tokens or
    // finished in this step; empty when nothing is queued.
    std::vector<RequestOutput> step();

    bool has_unfinished() const { return !scheduler_->idle(); }
    const StepStats& last_step() const { return last_; }
    EngineCounters counters() const;
    const KvBlockPool& kv_pool() const { return *pool_; }
    const Scheduler& scheduler() const { return *scheduler_; }

private:
    RequestOutput output_of(const Sequence& s) const;
    // Ends s with `reason` and its final output (s is destroyed).
    RequestOutput finish_seq(Sequence& s, FinishReason reason);
    // The finish reason after s emitted `token`, or none.
    FinishReason stop_reason(const Sequence& s, int32_t token) const;
    // Tokens that end s (EOS unless ignore_eos, stop_token_ids).
    bool ends_sequence(const Sequence& s, int32_t token) const;
    // mask_ for s's matcher; false when no token is allowed.
    bool constraint_mask(Sequence& s);

    models::Transformer& model_;
    EngineConfig cfg_;
    std::unique_ptr<KvBlockPool> pool_;
    std::unique_ptr<Scheduler> scheduler_;
    std::unique_ptr<PagedKvAttention> attn_;
    std::unique_ptr<ThreadTuner> tuner_;  // tune_threads
    std::vector<int32_t> eos_ids_;
    std::vector<uint8_t> mask_;  // [V] allowed tokens of the sequence being sampled
    // The ranks that run each forward beside this one (cfg_.tp or cfg_.ep), or null.
    comm::Communicator* followers_ = nullptr;
    RequestId next_id_ = 1;
    StepStats last_;
    EngineCounters totals_;
};

}  // namespace zs::infer
