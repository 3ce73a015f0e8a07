#include "serve/protocol.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "base/error.h"
#include "infer/json_grammar.h"
#include "io/json.h"

namespace zs::serve {

using nlohmann::json;

json ApiError::to_json() const {
    return json{{"error",
                 {{"message", message},
                  {"type", type},
                  {"param", param.empty() ? json(nullptr) : json(param)},
                  {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

void bad_request(std::string param, std::string message, std::string code) {
    ApiError e;
    e.status = 400;
    e.param = std::move(param);
    e.message = std::move(message);
    e.code = std::move(code);
    throw ApiException(std::move(e));
}

namespace {

const char* type_name(const json& v) {
    switch (v.type()) {
        case json::value_t::null:
            return "null";
        case json::value_t::boolean:
            return "boolean";
        case json::value_t::string:
            return "string";
        case json::value_t::array:
            return "array";
        case json::value_t::object:
            return "object";
        case json::value_t::number_float:
            return "number";
        default:
            return "integer";
    }
}

// Typed, range-checked access to the body's top-level fields; errors name the field.
class Body {
public:
    explicit Body(const json& j) : j_(j) {}

    const json* get(const char* key) const {
        auto it = j_.find(key);
        if (it == j_.end() || it->is_null()) return nullptr;
        return &*it;
    }
    bool has(const char* key) const { return get(key) != nullptr; }

    std::optional<double> number(const char* key, double lo, double hi) const {
        const json* v = get(key);
        if (!v) return std::nullopt;
        if (!v->is_number()) {
            bad_request(key, fmt::format("'{}' must be a number, got {}", key, type_name(*v)));
        }
        double x = v->get<double>();
        if (!std::isfinite(x) || x < lo || x > hi) {
            bad_request(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, x));
        }
        return x;
    }
    std::optional<int64_t> integer(const char* key, int64_t lo, int64_t hi) const {
        const json* v = get(key);
        if (!v) return std::nullopt;
        if (v->is_number_integer()) {
            if (v->is_number_unsigned() &&
                v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                bad_request(key, fmt::format("'{}' must be in [{}, {}]", key, lo, hi));
            }
            int64_t x = v->get<int64_t>();
            if (x < lo || x > hi) {
                bad_request(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, x));
            }
            return x;
        }
        if (v->is_number_float()) {
            double d = v->get<double>();
            if (std::isfinite(d) && d == std::floor(d) && d >= static_cast<double>(lo) &&
                d <= static_cast<double>(hi)) {
                return static_cast<int64_t>(d);
            }
        }
        bad_request(key, fmt::format("'{}' must be an integer in [{}, {}], got {}", key, lo, hi,
                                     v->is_number() ? v->dump() : type_name(*v)));
    }
    std::optional<bool> boolean(const char* key) const {
        const json* v = get(key);
        if (!v) return std::nullopt;
        if (!v->is_boolean()) {
            bad_request(key, fmt::format("'{}' must be a boolean, got {}", key, type_name(*v)));
        }
        return v->get<bool>();
    }
    std::optional<std::string> string(const char* key) const {
        const json* v = get(key);
        if (!v) return std::nullopt;
        if (!v->is_string()) {
            bad_request(key, fmt::format("'{}' must be a string, got {}", key, type_name(*v)));
        }
        return v->get<std::string>();
    }

private:
    const json& j_;
};

std::vector<int32_t> token_ids(const json& arr, const char* param, int64_t vocab) {
    std::vector<int32_t> ids;
    ids.reserve(arr.size());
    for (const json& t : arr) {
        if (!t.is_number_integer()) {
            bad_request(
                param, fmt::format("'{}' token ids must be integers, got {}", param, type_name(t)));
        }
        int64_t x = t.is_number_unsigned() && t.get<uint64_t>() > (uint64_t{1} << 62)
                        ? -1
                        : t.get<int64_t>();
        if (x < 0 || (vocab > 0 && x >= vocab)) {
            bad_request(param, fmt::format("'{}': token id {} is outside the vocabulary [0, {})",
                                           param, t.dump(), vocab));
        }
        ids.push_back(static_cast<int32_t>(x));
    }
    if (ids.empty()) bad_request(param, fmt::format("'{}' must not be empty", param));
    return ids;
}

void parse_prompt(const json& p, GenRequest& r, const ParseLimits& lim) {
    auto too_many = [&](size_t n) {
        if (n > static_cast<size_t>(lim.max_prompts)) {
            bad_request("prompt",
                        fmt::format("at most {} prompts per request, got {}", lim.max_prompts, n));
        }
    };
    if (p.is_string()) {
        r.prompt_texts.push_back(p.get<std::string>());
    } else if (p.is_array()) {
        if (p.empty()) bad_request("prompt", "'prompt' must not be empty");
        if (p[0].is_string()) {
            too_many(p.size());
            for (const json& s : p) {
                if (!s.is_string()) {
                    bad_request("prompt", "'prompt' arrays must hold only strings or only ids");
                }
                r.prompt_texts.push_back(s.get<std::string>());
            }
        } else if (p[0].is_array()) {
            too_many(p.size());
            for (const json& a : p) {
                if (!a.is_array()) {
                    bad_request("prompt", "'prompt' must be an array of token-id arrays");
                }
                r.prompt_ids.push_back(token_ids(a, "prompt", lim.vocab_size));
            }
        } else {
            r.prompt_ids.push_back(token_ids(p, "prompt", lim.vocab_size));
        }
    } else {
        bad_request("prompt",
                    fmt::format("'prompt' must be a string, an array of strings, an array of "
                                "token ids or an array of token-id arrays, got {}",
                                type_name(p)));
    }
    for (const std::string& s : r.prompt_texts) {
        if (s.empty()) bad_request("prompt", "'prompt' must not be empty");
    }
}

std::string content_text(const json& c, size_t i) {
    if (c.is_string()) return c.get<std::string>();
    const std::string param = fmt::format("messages[{}].content", i);
    if (c.is_array()) {
        std::string out;
        for (const json& part : c) {
            if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
                bad_request(param, "content parts must be objects with a 'type'");
            }
            if (part["type"] != "text") {
                bad_request(param, fmt::format("content part type '{}' is not supported (only "
                                               "'text')",
                                               part["type"].get<std::string>()));
            }
            if (!part.contains("text") || !part["text"].is_string()) {
                bad_request(param, "a text content part needs a string 'text'");
            }
            out += part["text"].get<std::string>();
        }
        return out;
    }
    if (c.is_null()) return {};
    bad_request(param, fmt::format("'{}' must be a string or an array of text parts, got {}", param,
                                   type_name(c)));
}

void parse_messages(const json& m, GenRequest& r) {
    if (!m.is_array()) {
        bad_request("messages", fmt::format("'messages' must be an array, got {}", type_name(m)));
    }
    if (m.empty()) bad_request("messages", "'messages' must hold at least one message");
    for (size_t i = 0; i < m.size(); ++i) {
        const json& msg = m[i];
        const std::string param = fmt::format("messages[{}]", i);
        if (!msg.is_object()) bad_request(param, fmt::format("'{}' must be an object", param));
        auto role = msg.find("role");
        if (role == msg.end() || !role->is_string()) {
            bad_request(param + ".role", fmt::format("'{}.role' must be a string", param));
        }
        std::string rs = role->get<std::string>();
        if (rs == "developer") rs = "system";
        if (rs != "system" && rs != "user" && rs != "assistant") {
            bad_request(param + ".role",
                        fmt::format("'{}.role' must be system, developer, user or assistant "
                                    "(got '{}')",
                                    param, role->get<std::string>()));
        }
        auto content = msg.find("content");
        if (content == msg.end()) {
            bad_request(param + ".content", fmt::format("'{}.content' is required", param));
        }
        r.messages.push_back({rs, content_text(*content, i)});
    }
}

// The body again, keeping object key order (a schema's properties are generated in its order);
// it already passed io::parse_json's limits, so this non-throwing parse cannot fail on size.
nlohmann::ordered_json ordered_body(const std::string& body) {
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(body, nullptr, false);
    if (j.is_discarded()) bad_request("", "the request body is not valid JSON", "invalid_json");
    return j;
}

// response_format -> r.sampling.grammar (null for text).
void parse_response_format(const json& rf, const std::string& body, GenRequest& r) {
    const char* kParam = "response_format";
    if (!rf.is_object()) {
        bad_request(kParam,
                    fmt::format("'response_format' must be an object, got {}", type_name(rf)));
    }
    auto type = rf.find("type");
    if (type == rf.end() || !type->is_string()) {
        bad_request(kParam,
                    "'response_format.type' must be a string: text, json_object or "
                    "json_schema");
    }
    const std::string t = type->get<std::string>();
    if (t == "text") return;
    if (t == "json_object") {
        r.sampling.grammar = infer::JsonGrammar::json_object();
        return;
    }
    if (t != "json_schema") {
        bad_request(kParam, fmt::format("'response_format.type' must be text, json_object or "
                                        "json_schema, got '{}'",
                                        t.substr(0, 40)));
    }
    auto js = rf.find("json_schema");
    if (js == rf.end() || !js->is_object()) {
        bad_request(kParam, "'response_format.json_schema' must be an object holding the 'schema'");
    }
    for (const char* k : {"name", "description"}) {
        auto it = js->find(k);
        if (it != js->end() && !it->is_null() && !it->is_string()) {
            bad_request(kParam,
                        fmt::format("'response_format.json_schema.{}' must be a string", k));
        }
    }
    auto strict = js->find("strict");
    if (strict != js->end() && !strict->is_null() && !strict->is_boolean()) {
        bad_request(kParam, "'response_format.json_schema.strict' must be a boolean");
    }
    if (!js->contains("schema") || (*js)["schema"].is_null()) {
        bad_request(kParam, "'response_format.json_schema.schema' is required");
    }
    const nlohmann::ordered_json ordered = ordered_body(body);
    try {
        r.sampling.grammar =
            infer::JsonGrammar::from_schema(ordered.at(kParam).at("json_schema").at("schema"));
    } catch (const ConfigError& e) {
        bad_request(kParam, fmt::format("'response_format.json_schema.schema': {}", e.what()));
    } catch (const nlohmann::json::exception& e) {
        bad_request(kParam, fmt::format("'response_format.json_schema.schema': {}", e.what()));
    }
}

}  // namespace

namespace {

// A request body as a JSON object (bounded size and depth), or a 400.
json parse_body(const std::string& body, const ParseLimits& lim) {
    json j;
    try {
        io::JsonLimits jl;
        jl.max_bytes = lim.max_body_bytes;
        jl.max_depth = 32;
        jl.reject_duplicate_keys = false;
        j = io::parse_json(body, "request body", jl);
    } catch (const Error& e) {
        bad_request("", fmt::format("the request body is not valid JSON: {}", e.what()),
                    "invalid_json");
    }
    if (!j.is_object()) bad_request("", "the request body must be a JSON object");
    return j;
}

}  // namespace

TokenizeRequest parse_tokenize(const std::string& body, const ParseLimits& lim) {
    const json j = parse_body(body, lim);
    Body b(j);
    TokenizeRequest t;
    const json* m = b.get("messages");
    const json* p = b.get("prompt");
    if ((m == nullptr) == (p == nullptr))
        bad_request(m ? "messages" : "prompt", "give either 'prompt' (text) or 'messages'");
    if (p) {
        if (!p->is_string()) bad_request("prompt", "'prompt' must be a string");
        t.prompt = p->get<std::string>();
        t.add_special_tokens = b.boolean("add_special_tokens").value_or(true);
    } else {
        GenRequest g;
        parse_messages(*m, g);
        t.messages = std::move(g.messages);
        t.chat = true;
        t.add_generation_prompt = b.boolean("add_generation_prompt").value_or(true);
        t.add_special_tokens = b.boolean("add_special_tokens").value_or(false);
    }
    return t;
}

std::vector<int32_t> parse_detokenize(const std::string& body, const ParseLimits& lim) {
    const json j = parse_body(body, lim);
    Body b(j);
    const json* t = b.get("tokens");
    if (!t) bad_request("tokens", "'tokens' is required");
    if (!t->is_array()) bad_request("tokens", "'tokens' must be an array of token ids");
    if (t->empty()) return {};
    return token_ids(*t, "tokens", lim.vocab_size);
}

GenRequest parse_request(Endpoint ep, const std::string& body, const ParseLimits& lim) {
    const json j = parse_body(body, lim);
    Body b(j);
    GenRequest r;
    r.endpoint = ep;

    auto model = b.string("model");
    if (!model) bad_request("model", "'model' is required");
    r.model = *model;

    if (ep == Endpoint::completions) {
        const json* p = b.get("prompt");
        if (!p) bad_request("prompt", "'prompt' is required");
        parse_prompt(*p, r, lim);
        if (auto x = b.integer("max_tokens", 0, std::numeric_limits<int32_t>::max())) {
            r.max_tokens = *x;
        }
        if (auto lp = b.integer("logprobs", 0, 20)) {
            r.logprobs = true;
            r.top_logprobs = static_cast<int>(*lp);
        }
        r.echo = b.boolean("echo").value_or(false);
        // echo + logprobs scores the prompt too (its first token has none: null); max_tokens 0
        // with echo returns only the scored prompt, as OpenAI's legacy completions did.
        if (r.max_tokens && *r.max_tokens == 0 && !r.echo) {
            bad_request("max_tokens",
                        "'max_tokens' must be >= 1 (0 only with 'echo': the prompt "
                        "alone, scored when 'logprobs' is given)");
        }
        if (auto s = b.string("suffix"); s && !s->empty()) {
            bad_request("suffix", "'suffix' (insertion) is not supported");
        }
    } else {
        const json* m = b.get("messages");
        if (!m) bad_request("messages", "'messages' is required");
        parse_messages(*m, r);
        if (auto x = b.integer("max_completion_tokens", 1, std::numeric_limits<int32_t>::max())) {
            r.max_tokens = *x;
        } else if (auto y = b.integer("max_tokens", 1, std::numeric_limits<int32_t>::max())) {
            r.max_tokens = *y;
        }
        r.logprobs = b.boolean("logprobs").value_or(false);
        if (auto t = b.integer("top_logprobs", 0, 20)) {
            if (!r.logprobs) bad_request("top_logprobs", "'top_logprobs' needs 'logprobs': true");
            r.top_logprobs = static_cast<int>(*t);
        }
        r.add_generation_prompt = b.boolean("add_generation_prompt").value_or(true);
        for (const char* k : {"tools", "functions"}) {
            const json* t = b.get(k);
            if (t && !(t->is_array() && t->empty())) {
                bad_request(k, fmt::format("'{}' (tool calling) is not supported", k));
            }
        }
    }
    if (const json* rf = b.get("response_format")) parse_response_format(*rf, body, r);

    r.n = static_cast<int>(b.integer("n", 1, lim.max_n).value_or(1));
    if (auto bo = b.integer("best_of", 1, lim.max_n); bo && *bo != r.n) {
        bad_request("best_of", "'best_of' other than n is not supported");
    }
    if (r.n * r.n_prompts() > lim.max_prompts) {
        bad_request("n", fmt::format("n x prompts = {} exceeds the limit of {} choices",
                                     r.n * r.n_prompts(), lim.max_prompts));
    }
    r.stream = b.boolean("stream").value_or(false);
    if (const json* so = b.get("stream_options")) {
        if (!so->is_object()) bad_request("stream_options", "'stream_options' must be an object");
        if (!r.stream) bad_request("stream_options", "'stream_options' needs 'stream': true");
        auto iu = so->find("include_usage");
        if (iu != so->end() && !iu->is_null()) {
            if (!iu->is_boolean()) {
                bad_request("stream_options.include_usage",
                            "'stream_options.include_usage' must be a boolean");
            }
            r.include_usage = iu->get<bool>();
        }
    }
    if (const json* st = b.get("stop")) {
        if (st->is_string()) {
            r.stop.push_back(st->get<std::string>());
        } else if (st->is_array()) {
            if (st->size() > static_cast<size_t>(lim.max_stops)) {
                bad_request("stop", fmt::format("at most {} stop strings, got {}", lim.max_stops,
                                                st->size()));
            }
            for (const json& s : *st) {
                if (!s.is_string()) bad_request("stop", "'stop' must hold only strings");
                r.stop.push_back(s.get<std::string>());
            }
        } else {
            bad_request("stop", fmt::format("'stop' must be a string or an array of strings, "
                                            "got {}",
                                            type_name(*st)));
        }
    }
    if (const json* st = b.get("stop_token_ids")) {
        if (!st->is_array()) bad_request("stop_token_ids", "'stop_token_ids' must be an array");
        if (!st->empty()) r.stop_token_ids = token_ids(*st, "stop_token_ids", lim.vocab_size);
    }
    infer::SamplingParams& s = r.sampling;
    if (const json* lb = b.get("logit_bias")) {
        // OpenAI: {"token id": bias}, bias in [-100, 100] added to the token's logit.
        if (!lb->is_object()) bad_request("logit_bias", "'logit_bias' must be an object");
        if (lb->size() > 1024) bad_request("logit_bias", "'logit_bias' has more than 1024 entries");
        for (auto it = lb->begin(); it != lb->end(); ++it) {
            const std::string& k = it.key();
            int64_t id = -1;
            const bool digits = !k.empty() && k.size() <= 10 &&
                                k.find_first_not_of("0123456789") == std::string::npos;
            if (digits) id = std::stoll(k);
            if (!digits || id >= lim.vocab_size) {
                bad_request("logit_bias", fmt::format("'logit_bias' key '{}' is not a token id "
                                                      "of this model (0-{})",
                                                      k.substr(0, 20), lim.vocab_size - 1));
            }
            if (!it.value().is_number() || !std::isfinite(it.value().get<double>()) ||
                std::fabs(it.value().get<double>()) > 100.0) {
                bad_request("logit_bias", fmt::format("'logit_bias' value for token {} must be "
                                                      "a number in [-100, 100]",
                                                      id));
            }
            s.logit_bias.emplace_back(static_cast<int32_t>(id),
                                      static_cast<float>(it.value().get<double>()));
        }
    }
    s.temperature = static_cast<float>(b.number("temperature", 0.0, 2.0).value_or(1.0));
    s.top_p = static_cast<float>(b.number("top_p", 0.0, 1.0).value_or(1.0));
    if (s.top_p <= 0.0f) bad_request("top_p", "'top_p' must be in (0, 1]");
    s.top_k = static_cast<int>(b.integer("top_k", -1, 1 << 30).value_or(0));
    if (s.top_k < 0) s.top_k = 0;
    s.min_p = static_cast<float>(b.number("min_p", 0.0, 1.0).value_or(0.0));
    s.frequency_penalty =
        static_cast<float>(b.number("frequency_penalty", -2.0, 2.0).value_or(0.0));
    s.presence_penalty = static_cast<float>(b.number("presence_penalty", -2.0, 2.0).value_or(0.0));
    s.repetition_penalty =
        static_cast<float>(b.number("repetition_penalty", 1e-3, 100.0).value_or(1.0));
    if (auto seed = b.integer("seed", std::numeric_limits<int64_t>::min(),
                              std::numeric_limits<int64_t>::max())) {
        s.seed = static_cast<uint64_t>(*seed);
        r.seed_given = true;
    }
    s.top_logprobs = r.top_logprobs;
    // The sampler's pass of exp over the vocabulary per token only where the response carries
    // log-probabilities (always computing them cost ~0.2 ms of a 10 ms SmolLM2 token).
    s.logprobs = r.logprobs;
    r.ignore_eos = b.boolean("ignore_eos").value_or(false);
    r.skip_special_tokens = b.boolean("skip_special_tokens").value_or(true);
    b.string("user");  // type-checked, otherwise unused
    return r;
}

json Usage::to_json() const {
    return json{{"prompt_tokens", prompt_tokens},
                {"completion_tokens", completion_tokens},
                {"total_tokens", prompt_tokens + completion_tokens}};
}

namespace {

json bytes_of(const std::string& s) {
    json a = json::array();
    for (unsigned char c : s) a.push_back(static_cast<int>(c));
    return a;
}

json chat_logprobs(const std::vector<TokenLogprob>& lps) {
    json content = json::array();
    for (const TokenLogprob& t : lps) {
        json top = json::array();
        for (const auto& [tok, lp] : t.top) {
            top.push_back({{"token", tok}, {"logprob", lp}, {"bytes", bytes_of(tok)}});
        }
        content.push_back({{"token", t.token},
                           {"logprob", t.logprob},
                           {"bytes", bytes_of(t.token)},
                           {"top_logprobs", top}});
    }
    return json{{"content", content}, {"refusal", nullptr}};
}

json completion_logprobs(const std::vector<TokenLogprob>& lps, size_t text_offset) {
    json tokens = json::array(), lp = json::array(), top = json::array(), off = json::array();
    for (const TokenLogprob& t : lps) {
        tokens.push_back(t.token);
        if (t.unscored) {
            lp.push_back(nullptr);
            top.push_back(nullptr);
        } else {
            lp.push_back(t.logprob);
            json m = json::object();
            for (const auto& [tok, l] : t.top) m[tok] = l;
            top.push_back(m);
        }
        off.push_back(text_offset);
        text_offset += t.token.size();
    }
    return json{
        {"tokens", tokens}, {"token_logprobs", lp}, {"top_logprobs", top}, {"text_offset", off}};
}

}  // namespace

json completion_response(const std::string& id, int64_t created, const std::string& model,
                         const std::vector<ChoiceResult>& choices, const Usage& usage,
                         bool with_logprobs) {
    json cs = json::array();
    for (const ChoiceResult& c : choices) {
        cs.push_back({{"index", c.index},
                      {"text", c.text},
                      {"logprobs", with_logprobs ? completion_logprobs(c.logprobs, 0) : json()},
                      {"finish_reason", c.finish_reason}});
    }
    return json{{"id", id},
                {"object", "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", cs},
                {"usage", usage.to_json()},
                {"system_fingerprint", "zerospeed"}};
}

json chat_response(const std::string& id, int64_t created, const std::string& model,
                   const std::vector<ChoiceResult>& choices, const Usage& usage,
                   bool with_logprobs) {
    json cs = json::array();
    for (const ChoiceResult& c : choices) {
        cs.push_back(
            {{"index", c.index},
             {"message", {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}}},
             {"logprobs", with_logprobs ? chat_logprobs(c.logprobs) : json()},
             {"finish_reason", c.finish_reason}});
    }
    return json{{"id", id},
                {"object", "chat.completion"},
                {"created", created},
                {"model", model},
                {"choices", cs},
                {"usage", usage.to_json()},
                {"system_fingerprint", "zerospeed"}};
}

json completion_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                      const std::string& text, const std::vector<TokenLogprob>* logprobs,
                      size_t text_offset, const std::string& finish_reason) {
    json c = {{"index", index},
              {"text", text},
              {"logprobs", logprobs ? completion_logprobs(*logprobs, text_offset) : json()},
              {"finish_reason", finish_reason.empty() ? json() : json(finish_reason)}};
    json out = {
        {"id", id},       {"object", "text_completion"}, {"created", created},
        {"model", model}, {"choices", json::array({c})}, {"system_fingerprint", "zerospeed"}};
    return out;
}

json chat_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                const std::optional<std::string>& text, bool first,
                const std::vector<TokenLogprob>* logprobs, const std::string& finish_reason) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (text) delta["content"] = *text;
    json c = {{"index", index},
              {"delta", delta},
              {"logprobs", logprobs ? chat_logprobs(*logprobs) : json()},
              {"finish_reason", finish_reason.empty() ? json() : json(finish_reason)}};
    json out = {
        {"id", id},       {"object", "chat.completion.chunk"}, {"created", created},
        {"model", model}, {"choices", json::array({c})},       {"system_fingerprint", "zerospeed"}};
    return out;
}

json usage_chunk(Endpoint ep, const std::string& id, int64_t created, const std::string& model,
                 const Usage& usage) {
    return json{{"id", id},
                {"object", ep == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array()},
                {"usage", usage.to_json()},
                {"system_fingerprint", "zerospeed"}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

}  // namespace zs::serve
