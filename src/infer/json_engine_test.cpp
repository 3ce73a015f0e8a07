// response_format end to end through the Engine: a tiny random model over a small JSON-ish
// vocabulary samples at temperature 1 under a schema; every output must parse (nlohmann), match
// the schema (checked structurally here) and finish with reason stop — at EOS, or as soon as the
// value is complete. Also: a request with a grammar needs the engine's token bytes, and a
// schema the nesting limit cannot satisfy ends with reason constraint instead of garbage.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "infer/engine.h"
#include "infer/json_constraint.h"
#include "ops/activation.h"
#include "tests/test_util.h"

namespace zs::infer {
namespace {

using ojson = nlohmann::ordered_json;
using zs::test::Rng;

constexpr int32_t kEos = 0;

// Token 0 is EOS (no bytes); the rest are JSON pieces, single bytes and filler words.
std::vector<std::string> vocab_bytes() {
    std::vector<std::string> v = {""};
    for (const char* t :
         {"{",     "}",     "[",     "]",     "\"",       ":",        ",",        " ",
          "\n",    "  ",    "-",     ".",     "e",        "+",        "\\",       "u",
          "{\"",   "\":",   "\",",   "\"}",   "\"name\"", "\"age\"",  "\"tags\"", "\"ok\"",
          "\"x\"", "\"y\"", "\"z\"", "true",  "false",    "null",     "name",     "age",
          "tags",  "ok",    "x",     "y",     "z",        "\xc3\xa9", "\\u00e9",  "\\n",
          "12",    "345",   "\"a",   "hello", " world",   "\t",       "}\n",      "],",
          "]}",    "\":\"", "\": ",  "\", \""}) {
        v.emplace_back(t);
    }
    for (char c = '0'; c <= '9'; ++c) v.emplace_back(1, c);
    for (char c = 'a'; c <= 'w'; ++c) v.emplace_back(1, c);
    return v;
}

struct Model {
    std::unique_ptr<models::Transformer> model;
    std::unique_ptr<models::DenseParams> params;
};

Model make(int64_t vocab, float weight_scale) {
    const std::string cfg = fmt::format(
        R"({{"model_type": "llama", "vocab_size": {}, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "eos_token_id": {}}})",
        vocab, kEos);
    Model m;
    m.model = std::make_unique<models::Transformer>(models::parse_hf_config(cfg, "test config"),
                                                    models::RunConfig{.compute_dtype = DType::f32});
    m.params = std::make_unique<models::DenseParams>(m.model->layout(), DType::f32, false);
    m.params->init(9);
    for (int g = 0; g < m.model->layout().n_groups(); ++g) {
        const Tensor& w = m.params->group_weights(g);
        zs::ops::scale(w, w, weight_scale);
    }
    m.params->bind(m.model->binding());
    return m;
}

EngineConfig engine_config(std::shared_ptr<const TokenIndex> index) {
    EngineConfig c;
    c.kv_blocks = 2048;
    c.block_size = 16;
    c.kv_dtype = DType::f32;
    c.scheduler.max_batch_tokens = 256;
    c.scheduler.max_seqs = 16;
    c.token_index = std::move(index);
    return c;
}

struct Result {
    std::vector<int32_t> tokens;
    FinishReason reason = FinishReason::none;
};

std::map<RequestId, Result> drain(Engine& e) {
    std::map<RequestId, Result> out;
    for (int steps = 0; e.has_unfinished(); ++steps) {
        EXPECT_LT(steps, 20000) << "no progress";
        if (steps >= 20000) break;
        for (const RequestOutput& o : e.step()) {
            Result& r = out[o.id];
            r.tokens.insert(r.tokens.end(), o.new_tokens.begin(), o.new_tokens.end());
            if (o.finished) r.reason = o.finish_reason;
        }
    }
    return out;
}

// The output text: token bytes, without a final EOS.
std::string text_of(const std::vector<int32_t>& tokens, const std::vector<std::string>& bytes) {
    std::string s;
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] == kEos) {
            EXPECT_EQ(i + 1, tokens.size()) << "EOS before the end";
            break;
        }
        s += bytes[static_cast<size_t>(tokens[i])];
    }
    return s;
}

const char* kSchema = R"({"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 8},
    "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"enum": ["x", "y", "z"]}, "maxItems": 3},
    "ok": {"type": "boolean"}},
  "required": ["name", "age", "tags"], "additionalProperties": false})";

// kSchema, checked directly on the parsed document.
::testing::AssertionResult matches_schema(const nlohmann::json& v) {
    if (!v.is_object()) return ::testing::AssertionFailure() << "not an object";
    for (const char* k : {"name", "age", "tags"}) {
        if (!v.contains(k)) return ::testing::AssertionFailure() << "no '" << k << "'";
    }
    for (auto it = v.begin(); it != v.end(); ++it) {
        const std::string& k = it.key();
        if (k != "name" && k != "age" && k != "tags" && k != "ok") {
            return ::testing::AssertionFailure() << "extra key '" << k << "'";
        }
    }
    if (!v["name"].is_string()) return ::testing::AssertionFailure() << "name not a string";
    size_t chars = 0;
    for (char c : v["name"].get<std::string>()) chars += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
    if (chars > 8) return ::testing::AssertionFailure() << "name longer than 8";
    if (!v["age"].is_number_integer() && !v["age"].is_number_float()) {
        return ::testing::AssertionFailure() << "age not a number";
    }
    if (v["age"].is_number_float() &&
        v["age"].get<double>() != std::floor(v["age"].get<double>())) {
        return ::testing::AssertionFailure() << "age not an integer";
    }
    if (!v["tags"].is_array() || v["tags"].size() > 3) {
        return ::testing::AssertionFailure() << "tags not an array of at most 3";
    }
    for (const auto& t : v["tags"]) {
        if (t != "x" && t != "y" && t != "z") return ::testing::AssertionFailure() << "bad tag";
    }
    if (v.contains("ok") && !v["ok"].is_boolean()) {
        return ::testing::AssertionFailure() << "ok not a boolean";
    }
    return ::testing::AssertionSuccess();
}

TEST(EngineJson, SampledOutputUnderASchemaParsesValidatesAndStops) {
    const std::vector<std::string> bytes = vocab_bytes();
    const auto V = static_cast<int64_t>(bytes.size());
    auto index = std::make_shared<const TokenIndex>(bytes);
    auto grammar = JsonGrammar::from_schema(ojson::parse(kSchema));
    for (float scale : {1.0f, 6.0f}) {
        Model m = make(V, scale);
        Engine e(*m.model, engine_config(index));
        Rng rng(3);
        std::vector<RequestId> ids;
        for (int i = 0; i < 12; ++i) {
            RequestOptions o;
            o.sampling.temperature = 1.0f;
            o.sampling.seed = 100 + static_cast<uint64_t>(i);
            o.sampling.grammar = grammar;
            o.max_tokens = 1500;
            std::vector<int32_t> prompt;
            for (int64_t n = rng.integer(1, 12); n > 0; --n) {
                prompt.push_back(static_cast<int32_t>(rng.integer(1, V - 1)));
            }
            ids.push_back(e.add_request(prompt, o));
        }
        std::map<RequestId, Result> results = drain(e);
        int n_eos = 0;
        for (RequestId id : ids) {
            const Result& r = results[id];
            const std::string text = text_of(r.tokens, bytes);
            EXPECT_EQ(r.reason, FinishReason::stop) << text;
            nlohmann::json v;
            try {
                v = nlohmann::json::parse(text);
            } catch (const std::exception& ex) {
                ADD_FAILURE() << "scale " << scale << ": '" << text
                              << "' does not parse: " << ex.what();
                continue;
            }
            EXPECT_TRUE(matches_schema(v)) << text;
            n_eos += !r.tokens.empty() && r.tokens.back() == kEos;
        }
        // An object ends at '}', so generation stops there, before any EOS.
        EXPECT_EQ(n_eos, 0);
        EXPECT_EQ(e.kv_pool().n_used(), 0);
    }
}

// A number at the top level can mostly go on: there the model itself picks EOS.
TEST(EngineJson, TopLevelNumberEndsAtEos) {
    const std::vector<std::string> bytes = vocab_bytes();
    const auto V = static_cast<int64_t>(bytes.size());
    auto index = std::make_shared<const TokenIndex>(bytes);
    auto grammar = JsonGrammar::from_schema(ojson::parse(R"({"type": "integer"})"));
    Model m = make(V, 1.0f);
    Engine e(*m.model, engine_config(index));
    std::vector<RequestId> ids;
    for (int i = 0; i < 8; ++i) {
        RequestOptions o;
        o.sampling.seed = static_cast<uint64_t>(i);
        o.sampling.grammar = grammar;
        o.max_tokens = 400;
        ids.push_back(e.add_request({5, 6, 7}, o));
    }
    std::map<RequestId, Result> results = drain(e);
    for (RequestId id : ids) {
        const Result& r = results[id];
        const std::string text = text_of(r.tokens, bytes);
        if (r.reason == FinishReason::length) continue;  // 400 digits is allowed, if unlikely
        EXPECT_EQ(r.reason, FinishReason::stop);
        ASSERT_FALSE(r.tokens.empty());
        // At EOS, or where nothing can follow ("0", "-0", or the digit limit).
        if (r.tokens.back() != kEos) {
            JsonMatcher check(grammar);
            EXPECT_TRUE(check.accept_bytes(text) && check.done()) << text;
        }
        // Integers beyond 64 bits parse as doubles; JSON Schema's integer is any whole number.
        const nlohmann::json v = nlohmann::json::parse(text);
        EXPECT_TRUE(v.is_number_integer() ||
                    (v.is_number_float() && v.get<double>() == std::floor(v.get<double>())))
            << text;
    }
}

TEST(EngineJson, GrammarNeedsTokenBytes) {
    const auto V = static_cast<int64_t>(vocab_bytes().size());
    Model m = make(V, 1.0f);
    Engine e(*m.model, engine_config(nullptr));
    RequestOptions o;
    o.sampling.grammar = JsonGrammar::json_object();
    EXPECT_THROW(e.add_request({1, 2}, o), ConfigError);
}

// Arrays of arrays, 40 deep, each with an item: finite, but deeper than kJsonMaxNesting.
TEST(EngineJson, UnsatisfiableNestingEndsWithReasonConstraint) {
    const std::vector<std::string> bytes = vocab_bytes();
    const auto V = static_cast<int64_t>(bytes.size());
    ojson schema = {{"type", "integer"}};
    for (int i = 0; i < 40; ++i) {
        schema = ojson{{"type", "array"}, {"items", schema}, {"minItems", 1}, {"maxItems", 1}};
    }
    Model m = make(V, 1.0f);
    Engine e(*m.model, engine_config(std::make_shared<const TokenIndex>(bytes)));
    RequestOptions o;
    o.sampling.temperature = 0.0f;
    o.sampling.grammar = JsonGrammar::from_schema(schema);
    o.max_tokens = 200;
    const RequestId id = e.add_request({1, 2, 3}, o);
    std::map<RequestId, Result> results = drain(e);
    const Result& r = results[id];
    EXPECT_EQ(r.reason, FinishReason::constraint);
    const std::string text = text_of(r.tokens, bytes);
    size_t open = 0;
    for (char c : text) open += c == '[';
    EXPECT_EQ(open, static_cast<size_t>(kJsonMaxNesting)) << text;
    EXPECT_STREQ(to_string(FinishReason::constraint), "constraint");
}

// json_object, greedy: whatever the model prefers, a stop means a complete object.
TEST(EngineJson, JsonObjectGreedy) {
    const std::vector<std::string> bytes = vocab_bytes();
    const auto V = static_cast<int64_t>(bytes.size());
    Model m = make(V, 6.0f);
    Engine e(*m.model, engine_config(std::make_shared<const TokenIndex>(bytes)));
    std::vector<RequestId> ids;
    Rng rng(4);
    for (int i = 0; i < 6; ++i) {
        RequestOptions o;
        o.sampling.temperature = i % 2 ? 0.0f : 1.0f;
        o.sampling.seed = static_cast<uint64_t>(i);
        o.sampling.grammar = JsonGrammar::json_object();
        o.max_tokens = 300;
        ids.push_back(e.add_request({static_cast<int32_t>(rng.integer(1, V - 1))}, o));
    }
    std::map<RequestId, Result> results = drain(e);
    for (RequestId id : ids) {
        const Result& r = results[id];
        const std::string text = text_of(r.tokens, bytes);
        if (r.reason == FinishReason::length) continue;  // a long string is allowed
        ASSERT_EQ(r.reason, FinishReason::stop);
        EXPECT_TRUE(nlohmann::json::parse(text).is_object()) << text;
    }
}

}  // namespace
}  // namespace zs::infer
