// The OpenAI wire format: request bodies of /v1/completions and /v1/chat/completions parsed and
// validated into a GenRequest, and the response, stream-chunk and error objects built back.
//
// Validation never trusts the body: it is parsed with bounded size and depth, every field is
// type- and range-checked, and a bad one raises ApiError (HTTP 400 with OpenAI's error JSON
// {"error": {"message", "type", "param", "code"}}, `param` naming the field). Unknown fields are
// ignored (clients send many: user, metadata, store), except features we do not implement
// (tools, suffix, best_of != n), which are rejected by name rather than
// silently dropped.
//
// response_format (both endpoints): {"type": "text"}; {"type": "json_object"}; {"type":
// "json_schema", "json_schema": {"name", "schema", "strict", "description"}}. The grammar is
// compiled here (infer/json_grammar.h), so a schema outside the supported subset is a 400 naming
// `response_format` and the keyword's location; it travels in GenRequest::sampling.grammar.
//
// Policies (docs/SERVING.md): prompt + max_tokens beyond the model's context is a 400 naming
// max_tokens (not clamped); chat without max_tokens generates up to the context; completions
// default to 16 tokens as OpenAI's do; n <= 16; at most 16 stop strings; logprobs <= 20.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "infer/chat_template.h"
#include "infer/sampler.h"

namespace zs::serve {

// An error answered to the client: status and OpenAI's error object.
struct ApiError {
    int status = 400;
    std::string message;
    std::string type = "invalid_request_error";
    std::string param;  // the offending field ("" -> null)
    std::string code;   // "" -> null
    nlohmann::json to_json() const;
};

// Thrown by the parsers; the server turns it into the HTTP answer.
class ApiException : public std::exception {
public:
    explicit ApiException(ApiError e) : err_(std::move(e)) {}
    const char* what() const noexcept override { return err_.message.c_str(); }
    const ApiError& error() const { return err_; }

private:
    ApiError err_;
};

[[noreturn]] void bad_request(std::string param, std::string message, std::string code = {});

enum class Endpoint { completions, chat };

struct GenRequest {
    Endpoint endpoint = Endpoint::completions;
    std::string model;
    // completions: one or more prompts, as text or as token ids; chat: the messages.
    std::vector<std::string> prompt_texts;
    std::vector<std::vector<int32_t>> prompt_ids;
    std::vector<infer::ChatMessage> messages;
    std::optional<int64_t> max_tokens;  // nullopt: the endpoint's default
    int n = 1;
    bool stream = false;
    bool include_usage = false;
    std::vector<std::string> stop;
    std::vector<int32_t> stop_token_ids;
    infer::SamplingParams sampling;
    bool seed_given = false;
    bool logprobs = false;  // completions: logprobs >= 0 given; chat: logprobs: true
    int top_logprobs = 0;
    bool echo = false;
    bool ignore_eos = false;
    bool skip_special_tokens = true;
    bool add_generation_prompt = true;

    int n_prompts() const {
        return static_cast<int>(
            endpoint == Endpoint::chat ? 1 : prompt_texts.size() + prompt_ids.size());
    }
};

struct ParseLimits {
    size_t max_body_bytes = size_t{8} << 20;
    int max_n = 16;
    int max_stops = 16;
    int max_prompts = 64;
    int64_t vocab_size = 0;  // token-id prompts are checked against it
};

// Parse and validate a request body (throws ApiException).
GenRequest parse_request(Endpoint ep, const std::string& body, const ParseLimits& limits);

// POST /tokenize (vLLM's): {"prompt": text, "add_special_tokens": true} or {"messages": [...],
// "add_generation_prompt": true} (rendered with the model's chat template, no specials added).
struct TokenizeRequest {
    std::string prompt;
    std::vector<infer::ChatMessage> messages;
    bool chat = false;
    bool add_special_tokens = true;
    bool add_generation_prompt = true;
};
TokenizeRequest parse_tokenize(const std::string& body, const ParseLimits& limits);
// POST /detokenize: {"tokens": [ids]} -> the ids, each checked against the vocabulary.
std::vector<int32_t> parse_detokenize(const std::string& body, const ParseLimits& limits);

// One generated token with what logprobs report about it.
struct TokenLogprob {
    std::string token;  // its text (bytes as decoded; invalid UTF-8 is replaced when serialised)
    float logprob = 0;
    bool unscored = false;  // the first prompt token (echo + logprobs): null logprob and top
    std::vector<std::pair<std::string, float>> top;
};

// The accumulated result of one choice.
struct ChoiceResult {
    int index = 0;
    std::string text;
    std::string finish_reason;  // stop, length
    std::vector<TokenLogprob> logprobs;
    int64_t n_prompt_tokens = 0, n_output_tokens = 0;
};

struct Usage {
    int64_t prompt_tokens = 0, completion_tokens = 0;
    nlohmann::json to_json() const;
};

// Response objects (ids like "cmpl-<hex>", created = unix seconds).
nlohmann::json completion_response(const std::string& id, int64_t created, const std::string& model,
                                   const std::vector<ChoiceResult>& choices, const Usage& usage,
                                   bool with_logprobs);
nlohmann::json chat_response(const std::string& id, int64_t created, const std::string& model,
                             const std::vector<ChoiceResult>& choices, const Usage& usage,
                             bool with_logprobs);
// One stream chunk for one choice: text delta (and logprobs of the tokens it covers), a finish
// reason on the last one; `first` adds the chat role delta. Chunks carry no `usage` key (the
// schema does not allow null there); with include_usage a usage_chunk() ends the stream.
// text_offset: where this chunk's first token starts in the choice's text (the bytes of the tokens
// streamed before it), so offsets continue across chunks as in a non-streamed response.
nlohmann::json completion_chunk(const std::string& id, int64_t created, const std::string& model,
                                int index, const std::string& text,
                                const std::vector<TokenLogprob>* logprobs, size_t text_offset,
                                const std::string& finish_reason);
nlohmann::json chat_chunk(const std::string& id, int64_t created, const std::string& model,
                          int index, const std::optional<std::string>& text, bool first,
                          const std::vector<TokenLogprob>* logprobs,
                          const std::string& finish_reason);
// The usage-only last chunk (choices: []) of stream_options.include_usage.
nlohmann::json usage_chunk(Endpoint ep, const std::string& id, int64_t created,
                           const std::string& model, const Usage& usage);

// JSON text with invalid UTF-8 replaced (token pieces may split characters).
std::string dump(const nlohmann::json& j);
// "data: <json>\n\n"
std::string sse(const nlohmann::json& j);

}  // namespace zs::serve
