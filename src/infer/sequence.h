// Sequence: the state of one request in the serving engine — its tokens (prompt then output),
// how many of them have K/V in the cache (num_computed), its block table, its sampler, and where
// it is in its life: waiting → running → (preempted → running)* → finished.
//
// One counter covers prefill, chunked prefill, decode and recompute (vLLM v1): the next forward
// computes tokens [num_computed, num_tokens()); when that reaches num_tokens() the last row's
// logits are sampled and a token is appended. A preempted sequence drops its blocks and resets
// num_computed to 0; its prompt and output so far are recomputed on readmission (the sampler
// keeps its state, so the continuation is the same). Invariant: blocks cover [0, num_computed).
// With a sliding window on every layer, the leading blocks no future query can read are returned
// to the pool as the sequence advances; their slots hold kNoBlock (blocks[0, n_dropped_blocks)).
// A request with a response_format grammar carries a JsonMatcher fed with every output token's
// bytes (kept across preemption, like the sampler).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "infer/block_pool.h"
#include "infer/sampler.h"

namespace zs::infer {

class JsonMatcher;  // json_constraint.h

using RequestId = uint64_t;

enum class SeqStatus { waiting, running, preempted, finished };
// constraint: the response_format grammar allowed no token (a schema that needs more nesting
// than kJsonMaxNesting, or a byte the vocabulary lacks); the output so far is a valid prefix, not
// a complete document.
enum class FinishReason { none, stop, length, abort, error, constraint };

const char* to_string(SeqStatus s);
const char* to_string(FinishReason r);

// What a request asks for, apart from its prompt.
struct RequestOptions {
    SamplingParams sampling;
    int64_t max_tokens = 16;              // output tokens, >= 1
    std::vector<int32_t> stop_token_ids;  // finish (reason stop) after emitting one of these
    bool ignore_eos = false;              // do not stop at the model's EOS ids
    // >= 0: also score the prompt (OpenAI's echo + logprobs, vLLM's prompt_logprobs): the
    // logprob of each prompt token after the first, with this many top alternatives. Every prompt
    // position is computed (no prefix-cache hits) so each has its logits.
    int prompt_logprobs = -1;
};

struct Sequence {
    Sequence(RequestId id, std::vector<int32_t> prompt, RequestOptions opts, int64_t vocab_size);
    ~Sequence();
    Sequence(const Sequence&) = delete;
    Sequence& operator=(const Sequence&) = delete;

    RequestId id;
    RequestOptions opts;
    std::vector<int32_t> tokens;  // prompt followed by the output so far
    int64_t prompt_len;
    int64_t num_computed = 0;             // tokens whose K/V are in this sequence's blocks
    std::vector<BlockId> blocks;          // block table: position p is in blocks[p / block_size]
    int64_t n_dropped_blocks = 0;         // leading slots freed (kNoBlock), sliding window only
    std::vector<BlockHash> block_hashes;  // hashes of the leading full blocks, for the prefix cache
    Sampler sampler;
    std::unique_ptr<JsonMatcher> matcher;  // set when opts.sampling.grammar is
    SeqStatus status = SeqStatus::waiting;
    FinishReason finish_reason = FinishReason::none;
    int64_t admit_order = -1;  // when it last started running; higher = more recent
    int64_t n_preemptions = 0;
    int64_t n_cached_prompt = 0;  // prompt tokens served from the prefix cache (first admission)
    // opts.prompt_logprobs >= 0: [prompt_len - 1], entry i scores prompt token i + 1.
    std::vector<SampleResult> prompt_samples;

    int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
    int64_t n_output() const { return num_tokens() - prompt_len; }
    int64_t n_pending() const { return num_tokens() - num_computed; }
    // Generating: one new token per step, its prompt (and any recompute) done.
    bool is_decode() const { return n_pending() == 1 && num_computed >= prompt_len; }
    bool finished() const { return status == SeqStatus::finished; }
};

}  // namespace zs::infer
