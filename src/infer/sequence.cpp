// Sequence construction and the enum names used in messages and metrics.
#include "infer/sequence.h"

#include <utility>

#include "infer/json_constraint.h"

namespace zs::infer {

const char* to_string(SeqStatus s) {
    switch (s) {
        case SeqStatus::waiting:
            return "waiting";
        case SeqStatus::running:
            return "running";
        case SeqStatus::preempted:
            return "preempted";
        case SeqStatus::finished:
            return "finished";
    }
    return "?";
}

const char* to_string(FinishReason r) {
    switch (r) {
        case FinishReason::none:
            return "none";
        case FinishReason::stop:
            return "stop";
        case FinishReason::length:
            return "length";
        case FinishReason::abort:
            return "abort";
        case FinishReason::error:
            return "error";
        case FinishReason::constraint:
            return "constraint";
    }
    return "?";
}

Sequence::Sequence(RequestId id_, std::vector<int32_t> prompt, RequestOptions opts_,
                   int64_t vocab_size)
    : id(id_),
      opts(std::move(opts_)),
      tokens(std::move(prompt)),
      prompt_len(static_cast<int64_t>(tokens.size())),
      sampler(opts.sampling, vocab_size) {
    sampler.observe_prompt(tokens.data(), prompt_len);
    if (opts.sampling.grammar) matcher = std::make_unique<JsonMatcher>(opts.sampling.grammar);
}

Sequence::~Sequence() = default;

}  // namespace zs::infer
