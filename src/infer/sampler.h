// Token sampling for generation and serving: penalties, temperature, top-k, top-p, min-p, and a
// per-request seeded generator (same seed, same logits → same tokens).
//
// Order (as vLLM / HF apply them): logit bias (OpenAI's: added to the token's logit), the
// response_format mask (tokens the grammar forbids get -inf, so no later step can revive them;
// the engine computes the mask from the sequence's JsonMatcher), repetition penalty (HF: positive
// logits of seen tokens divided by the penalty, negative ones multiplied), frequency and presence
// penalties (OpenAI: logit -= frequency * count + presence * [count > 0], over generated tokens),
// then temperature 0 → greedy (argmax, lowest id on ties); otherwise logits / temperature, top-k,
// softmax, min-p (drop tokens with p < min_p * p_max), top-p (smallest set of most likely tokens
// with mass >= top_p), draw. Log-probabilities reported are log-softmax of the model's raw logits
// (before any processing, the mask included: a constrained token's logprob is the model's own
// belief in it).
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zs::infer {

class JsonGrammar;

struct SamplingParams {
    float temperature = 1.0f;         // 0: greedy
    int top_k = 0;                    // 0: no limit
    float top_p = 1.0f;               // (0, 1]
    float min_p = 0.0f;               // [0, 1]
    float repetition_penalty = 1.0f;  // > 0; applies to prompt and generated tokens
    float frequency_penalty = 0.0f;   // [-2, 2]; generated tokens
    float presence_penalty = 0.0f;    // [-2, 2]; generated tokens
    uint64_t seed = 0;
    int top_logprobs = 0;  // also return this many most likely tokens with their logprobs
    // Fill SampleResult::logprob / top (a pass of exp over the vocabulary per token); `generate`
    // without --logprobs turns it off (the token drawn is the same either way).
    bool logprobs = true;
    std::vector<std::pair<int32_t, float>> logit_bias;  // (token, bias in [-100, 100])
    // response_format: output constrained to this grammar (json_grammar.h); null = free text.
    // Immutable and shared by every choice of a request; each sequence runs its own matcher.
    std::shared_ptr<const JsonGrammar> grammar;
};

struct SampleResult {
    int32_t token = -1;
    float logprob = 0.0f;                        // of `token` under the raw model distribution
    std::vector<std::pair<int32_t, float>> top;  // top_logprobs entries, most likely first
};

// The raw model distribution's log-probability of `token` under logits [V] (f32), and the
// `top_n` most likely tokens with theirs (ties: lower id first), as Sampler::sample reports them.
SampleResult score_token(const float* logits, int64_t vocab_size, int32_t token, int top_n);

class Sampler {
public:
    Sampler(const SamplingParams& params, int64_t vocab_size);
    // Tokens of the prompt (repetition penalty only) and of the output (all penalties).
    void observe_prompt(const int32_t* tokens, int64_t n);
    void observe_output(int32_t token);
    // Pick the next token from logits [V] (f32). allowed [V] (optional): tokens with 0 are never
    // drawn; at least one must be 1. Does not call observe_output.
    SampleResult sample(const float* logits, const uint8_t* allowed = nullptr);
    const SamplingParams& params() const { return p_; }

private:
    SamplingParams p_;
    int64_t vocab_;
    std::mt19937_64 rng_;
    std::unordered_map<int32_t, int32_t> output_counts_;
    std::vector<int32_t> seen_;  // prompt ∪ output, for the repetition penalty
    std::vector<uint8_t> seen_mask_;
    std::vector<float> work_;
    std::vector<int32_t> idx_;
};

}  // namespace zs::infer
