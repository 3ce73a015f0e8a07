// The OpenAI API over HTTP on a tiny random Llama with the real GPT-2 tokenizer. Oracles: a solo
// greedy run through models::ContiguousKvCache (tokens, text and logprobs), the model's own
// prompt scores, and OpenAI's error shape. Named RELIABILITY.md test: serve_validation_400.
#include "serve/server_test_util.h"

namespace zs::serve {
namespace {

using namespace test;  // NOLINT(google-build-using-namespace): the shared fixture

TEST(Serve, CompletionEqualsSoloRunWithUsageAndLogprobs) {
    TestServer ts;
    auto c = ts.client();
    const std::string prompt = "It is a truth universally acknowledged";
    const io::Tokenizer& tok = *fixture().tok;
    std::vector<int32_t> ids = tok.encode(prompt, true, false);
    infer::Solo want = solo(ids, 12);
    int st = 0;
    json r = post(c, "/v1/completions",
                  {{"model", "tiny"},
                   {"prompt", prompt},
                   {"max_tokens", 12},
                   {"temperature", 0},
                   {"ignore_eos", true},
                   {"logprobs", 2}},
                  &st);
    ASSERT_EQ(st, 200) << r;
    EXPECT_EQ(r["object"], "text_completion");
    EXPECT_EQ(r["choices"][0]["text"], tok.decode(want.tokens, true));
    EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
    EXPECT_EQ(r["usage"]["completion_tokens"], 12);
    const json& lp = r["choices"][0]["logprobs"];
    ASSERT_EQ(lp["token_logprobs"].size(), 12u);
    for (size_t i = 0; i < 12; ++i) {
        EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), want.logprobs[i], 1e-3);
        EXPECT_EQ(lp["top_logprobs"][i].size(), 2u);
    }
    // Streamed, the same tokens and logprobs arrive in chunks whose text_offset values continue
    // where the previous chunk's ended: together, the non-streamed offsets.
    Stream sr = stream(c, "/v1/completions",
                       {{"model", "tiny"},
                        {"prompt", prompt},
                        {"max_tokens", 12},
                        {"temperature", 0},
                        {"ignore_eos", true},
                        {"logprobs", 2},
                        {"stream", true}});
    ASSERT_TRUE(sr.done);
    std::vector<size_t> offsets;
    for (const json& ch : sr.chunks) {
        const json& l = ch["choices"][0]["logprobs"];
        if (l.is_null()) continue;
        for (const json& o : l["text_offset"]) offsets.push_back(o.get<size_t>());
    }
    EXPECT_GT(sr.chunks.size(), 2u);
    EXPECT_EQ(offsets, lp["text_offset"].get<std::vector<size_t>>());
    // Token-id prompt: same output.
    json r2 = post(c, "/v1/completions",
                   {{"model", "tiny"},
                    {"prompt", ids},
                    {"max_tokens", 12},
                    {"temperature", 0},
                    {"ignore_eos", true}},
                   &st);
    ASSERT_EQ(st, 200) << r2;
    EXPECT_EQ(r2["choices"][0]["text"], r["choices"][0]["text"]);
    ts.expect_idle_no_leak();
}

TEST(Serve, StreamsEqualNonStreamAndEndWithDone) {
    TestServer ts;
    auto c = ts.client();
    json body = {{"model", "tiny"},
                 {"messages", {{{"role", "user"}, {"content", "Tell me a story"}}}},
                 {"max_tokens", 10},
                 {"temperature", 0},
                 {"ignore_eos", true}};
    int st = 0;
    json full = post(c, "/v1/chat/completions", body, &st);
    ASSERT_EQ(st, 200) << full;
    EXPECT_EQ(full["object"], "chat.completion");
    EXPECT_EQ(full["choices"][0]["message"]["role"], "assistant");
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    Stream s = stream(c, "/v1/chat/completions", body);
    ASSERT_EQ(s.status, 200);
    EXPECT_TRUE(s.done);
    ASSERT_GE(s.chunks.size(), 3u);
    EXPECT_EQ(s.chunks[0]["choices"][0]["delta"]["role"], "assistant");
    std::string text, finish;
    for (size_t i = 0; i + 1 < s.chunks.size(); ++i) {
        const json& ch = s.chunks[i];
        EXPECT_EQ(ch["object"], "chat.completion.chunk");
        EXPECT_EQ(ch["id"], s.chunks[0]["id"]);
        const json& d = ch["choices"][0]["delta"];
        if (d.contains("content")) text += d["content"].get<std::string>();
        if (!ch["choices"][0]["finish_reason"].is_null())
            finish = ch["choices"][0]["finish_reason"];
    }
    EXPECT_EQ(text, full["choices"][0]["message"]["content"]);
    EXPECT_EQ(finish, "length");
    const json& last = s.chunks.back();
    EXPECT_TRUE(last["choices"].empty());
    EXPECT_EQ(last["usage"]["completion_tokens"], 10);
    EXPECT_EQ(last["usage"], full["usage"]);
    ts.expect_idle_no_leak();
}

TEST(Serve, StopStringsCutAtTheEarliestAndSeedsReproduce) {
    TestServer ts;
    auto c = ts.client();
    const std::string prompt = "The quick brown fox";
    std::string want = solo_text(prompt, 24);
    ASSERT_GE(want.size(), 12u);
    // Two stop strings from the solo text: the earlier one must win, whichever order.
    std::string s1 = want.substr(8, 3), s2 = want.substr(4, 3);
    size_t cut = std::min(want.find(s1), want.find(s2));
    int st = 0;
    json r = post(c, "/v1/completions",
                  {{"model", "tiny"},
                   {"prompt", prompt},
                   {"max_tokens", 24},
                   {"temperature", 0},
                   {"ignore_eos", true},
                   {"stop", {s1, s2}}},
                  &st);
    ASSERT_EQ(st, 200) << r;
    EXPECT_EQ(r["choices"][0]["text"], want.substr(0, cut));
    EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");

    // n = 3 with a seed: reproducible across requests; temperature 1 draws differ by choice.
    json body = {{"model", "tiny"}, {"prompt", prompt}, {"max_tokens", 8},   {"temperature", 1.0},
                 {"seed", 42},      {"n", 3},           {"ignore_eos", true}};
    json a = post(c, "/v1/completions", body, &st);
    ASSERT_EQ(st, 200) << a;
    json b = post(c, "/v1/completions", body, &st);
    ASSERT_EQ(a["choices"].size(), 3u);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(a["choices"][i]["text"], b["choices"][i]["text"]);
    EXPECT_EQ(a["usage"]["completion_tokens"], 24);
    ts.expect_idle_no_leak();
}

TEST(Serve, Validation400WithOpenAIErrorShape) {
    ServerConfig cfg;
    cfg.max_body_bytes = 64 << 10;
    TestServer ts(cfg);
    auto c = ts.client();
    const json base = {{"model", "tiny"}, {"prompt", "hello"}, {"max_tokens", 4}};
    struct Case {
        const char* field;
        json value;
        const char* param;
    };
    const std::vector<Case> cases = {
        {"temperature", -0.5, "temperature"},
        {"temperature", "hot", "temperature"},
        {"top_p", 1.5, "top_p"},
        {"top_p", 0, "top_p"},
        {"n", 0, "n"},
        {"n", 1000000, "n"},
        {"max_tokens", -1, "max_tokens"},
        {"max_tokens", 1.5, "max_tokens"},
        {"max_tokens", 100000, "max_tokens"},
        {"model", "gpt-9", "model"},
        {"model", 5, "model"},
        {"prompt", json::array(), "prompt"},
        {"prompt", json::array({-3}), "prompt"},
        {"prompt", json::array({60000}), "prompt"},
        {"prompt", 12, "prompt"},
        {"stop", 7, "stop"},
        {"logprobs", 50, "logprobs"},
        {"frequency_penalty", 3, "frequency_penalty"},
        {"seed", "x", "seed"},
        {"stream", "yes", "stream"},
        {"stream_options", json{{"include_usage", true}}, "stream_options"},
        {"logit_bias", json{{"x5", 10}}, "logit_bias"},
        {"logit_bias", json{{"99999999", 10}}, "logit_bias"},
        {"logit_bias", json{{"5", 101}}, "logit_bias"},
        {"logit_bias", json::array({5}), "logit_bias"},
        {"prompt",
         [] {
             std::string p;
             for (int i = 0; i < 300; ++i) p += " hello";
             return p;
         }(),
         "prompt"},  // longer than the context
    };
    for (const Case& k : cases) {
        json body = base;
        body[k.field] = k.value;
        int st = 0;
        json r = post(c, "/v1/completions", body, &st);
        EXPECT_EQ(st, 400) << k.field << " = " << k.value.dump().substr(0, 40) << ": " << r;
        expect_openai_error(r, k.param);
    }
    // A token-id prompt longer than the prompt-count limit is one prompt, not many (regression).
    {
        int st = 0;
        json r =
            post(c, "/v1/completions",
                 {{"model", "tiny"}, {"prompt", std::vector<int32_t>(100, 318)}, {"max_tokens", 2}},
                 &st);
        EXPECT_EQ(st, 200) << r;
    }
    // Chat specifics.
    for (const json& msgs :
         {json::array(), json("hi"), json::array({{{"role", "wizard"}, {"content", "x"}}}),
          json::array({{{"role", "user"}}})}) {
        int st = 0;
        json r = post(c, "/v1/chat/completions", {{"model", "tiny"}, {"messages", msgs}}, &st);
        EXPECT_EQ(st, 400) << msgs;
        expect_openai_error(r, "");
        EXPECT_TRUE(r["error"]["param"].get<std::string>().starts_with("messages")) << r;
    }
    // Malformed JSON, deep nesting, 1e309, bad UTF-8: 400, never a crash.
    for (const std::string& raw :
         {std::string("{\"model\": \"tiny\", "), std::string(60000, '['),
          std::string(R"({"model": "tiny", "prompt": "a", "temperature": 1e309})"),
          std::string("{\"model\": \"tiny\", \"prompt\": \"\xff\xfe\"}"), std::string("[]")}) {
        auto res = c.Post("/v1/completions", raw, "application/json");
        ASSERT_TRUE(res);
        EXPECT_EQ(res->status, 400) << raw.substr(0, 60);
        expect_openai_error(json::parse(res->body), "");
    }
    // Body over the limit: 413 with the error shape.
    auto big = c.Post("/v1/completions", std::string(100 << 10, ' '), "application/json");
    ASSERT_TRUE(big);
    EXPECT_EQ(big->status, 413);
    expect_openai_error(json::parse(big->body), "");
    auto nf = c.Get("/v1/nothing");
    ASSERT_TRUE(nf);
    EXPECT_EQ(nf->status, 404);
    expect_openai_error(json::parse(nf->body), "");
    ts.expect_idle_no_leak();
    // The server still answers.
    auto h = c.Get("/health");
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 200);
}

TEST(Serve, TokenizeAndDetokenize) {
    TestServer ts;
    auto c = ts.client();
    const io::Tokenizer& tok = *fixture().tok;
    const std::string text = "It is a truth universally acknowledged";
    int st = 0;
    json r = post(c, "/tokenize", {{"prompt", text}}, &st);
    ASSERT_EQ(st, 200) << r;
    EXPECT_EQ(r["tokens"].get<std::vector<int32_t>>(), tok.encode(text, true, false));
    EXPECT_EQ(r["count"], r["tokens"].size());
    EXPECT_EQ(r["max_model_len"], 256);
    EXPECT_EQ(r["token_strs"][0], tok.id_to_token(r["tokens"][0].get<int32_t>()));
    json d = post(c, "/detokenize", {{"tokens", r["tokens"]}}, &st);
    ASSERT_EQ(st, 200) << d;
    EXPECT_EQ(d["prompt"], tok.decode(r["tokens"].get<std::vector<int32_t>>(), false));
    // Chat: the rendered prompt's ids, as /v1/chat/completions would see them.
    const json msgs = json::array({{{"role", "user"}, {"content", "Hi"}}});
    json rc = post(c, "/tokenize", {{"messages", msgs}}, &st);
    ASSERT_EQ(st, 200) << rc;
    const std::string rendered =
        infer::render_chat(infer::detect_chat_template(tok), {{"user", "Hi"}}, true);
    EXPECT_EQ(rc["tokens"].get<std::vector<int32_t>>(), tok.encode(rendered, false, true));
    // Bad input: named 400s.
    post(c, "/detokenize", {{"tokens", {1, 99999999}}}, &st);
    EXPECT_EQ(st, 400);
    json e = post(c, "/tokenize", {{"prompt", 5}}, &st);
    EXPECT_EQ(st, 400);
    expect_openai_error(e, "prompt");
    e = post(c, "/tokenize", json::object(), &st);
    EXPECT_EQ(st, 400);
}

TEST(Serve, LogitBiasSteersGeneration) {
    TestServer ts;
    auto c = ts.client();
    int st = 0;
    json r = post(c, "/v1/completions",
                  {{"model", "tiny"},
                   {"prompt", "Hello"},
                   {"max_tokens", 6},
                   {"temperature", 0},
                   {"ignore_eos", true},
                   {"logit_bias", {{"318", 100}}},
                   {"logprobs", 0}},
                  &st);
    ASSERT_EQ(st, 200) << r;
    const json& toks = r["choices"][0]["logprobs"]["tokens"];
    ASSERT_EQ(toks.size(), 6u);
    const std::string want = fixture().tok->decode(std::vector<int32_t>{318}, false);
    for (const json& t : toks) EXPECT_EQ(t, want);
    ts.expect_idle_no_leak();
}

// response_format over HTTP: every choice of a sampled (temperature 1) chat completion under a
// JSON schema parses and has the schema's shape; json_object gives an object.
TEST(Serve, ResponseFormatOutputsParseAndFollowTheSchema) {
    TestServer ts;
    auto c = ts.client();
    const json schema = {
        {"type", "object"},
        {"properties",
         {{"name", {{"type", "string"}, {"maxLength", 6}}},
          {"age", {{"type", "integer"}}},
          {"tags", {{"type", "array"}, {"items", {{"enum", {"a", "b"}}}}, {"maxItems", 3}}}}},
        {"required", {"name", "age", "tags"}},
        {"additionalProperties", false}};
    int st = 0;
    json r = post(
        c, "/v1/chat/completions",
        {{"model", "tiny"},
         {"messages", {{{"role", "user"}, {"content", "Who?"}}}},
         {"n", 4},
         {"temperature", 1.0},
         {"seed", 3},
         {"max_tokens", 200},
         {"response_format",
          {{"type", "json_schema"}, {"json_schema", {{"name", "person"}, {"schema", schema}}}}}},
        &st);
    ASSERT_EQ(st, 200) << r;
    ASSERT_EQ(r["choices"].size(), 4u);
    int parsed = 0;
    for (const json& ch : r["choices"]) {
        const std::string text = ch["message"]["content"];
        if (ch["finish_reason"] != "stop") continue;  // cut by max_tokens: no claim
        const json v = json::parse(text, nullptr, false);
        ASSERT_FALSE(v.is_discarded()) << text;
        ASSERT_TRUE(v.is_object()) << text;
        EXPECT_EQ(v.size(), 3u) << text;
        ASSERT_TRUE(v.contains("name") && v["name"].is_string()) << text;
        // maxLength counts characters (code points), not bytes.
        const std::string name = v["name"].get<std::string>();
        EXPECT_LE(
            std::count_if(name.begin(), name.end(),
                          [](char b) { return (static_cast<unsigned char>(b) & 0xC0) != 0x80; }),
            6)
            << text;
        ASSERT_TRUE(v.contains("age") && v["age"].is_number_integer()) << text;
        ASSERT_TRUE(v.contains("tags") && v["tags"].is_array()) << text;
        EXPECT_LE(v["tags"].size(), 3u);
        for (const json& t : v["tags"]) EXPECT_TRUE(t == "a" || t == "b") << text;
        ++parsed;
    }
    EXPECT_GE(parsed, 2) << r;
    r = post(c, "/v1/completions",
             {{"model", "tiny"},
              {"prompt", "Data:"},
              {"temperature", 1.0},
              {"seed", 5},
              {"max_tokens", 120},
              {"response_format", {{"type", "json_object"}}}},
             &st);
    ASSERT_EQ(st, 200) << r;
    if (r["choices"][0]["finish_reason"] == "stop") {
        const json v = json::parse(r["choices"][0]["text"].get<std::string>(), nullptr, false);
        EXPECT_TRUE(v.is_object()) << r;
    }
    // A schema keyword that would change validity and is not supported: refused, named.
    r = post(
        c, "/v1/chat/completions",
        {{"model", "tiny"},
         {"messages", {{{"role", "user"}, {"content", "x"}}}},
         {"response_format",
          {{"type", "json_schema"},
           {"json_schema", {{"name", "n"}, {"schema", {{"type", "integer"}, {"minimum", 3}}}}}}}},
        &st);
    EXPECT_EQ(st, 400);
    expect_openai_error(r, "response_format");
    EXPECT_NE(r["error"]["message"].get<std::string>().find("minimum"), std::string::npos) << r;
    ts.expect_idle_no_leak();
}

// Prompt logprobs (echo + logprobs): each prompt token after the first scored as the model's
// full forward over the prompt scores it (contiguous cache, log-softmax in double), the first
// null; text_offset indexes the echoed text; streamed equals whole; max_tokens 0 returns the
// scored prompt alone.
std::vector<double> prompt_scores(const std::vector<int32_t>& prompt) {
    models::Transformer& m = *fixture().model;
    const auto P = static_cast<int64_t>(prompt.size());
    models::ContiguousKvCache kv(m.config(), P, DType::f32);
    Tensor ids = Tensor::empty({P}, DType::i32), pos = Tensor::empty({P}, DType::i32);
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < P; ++i) {
        ids.data<int32_t>()[i] = prompt[static_cast<size_t>(i)];
        pos.data<int32_t>()[i] = static_cast<int32_t>(i);
        if (i + 1 < P) rows.push_back(i);
    }
    Tensor logits = m.forward_tokens(ids, pos, kv, rows);
    const int64_t V = m.config().vocab_size;
    std::vector<double> out;
    for (int64_t i = 0; i + 1 < P; ++i) {
        const float* l = logits.data<float>() + i * V;
        double mx = l[0];
        for (int64_t v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(l[v]));
        double z = 0;
        for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(l[v]) - mx);
        out.push_back(static_cast<double>(l[prompt[static_cast<size_t>(i + 1)]]) - mx -
                      std::log(z));
    }
    return out;
}

TEST(Serve, EchoWithLogprobsScoresThePrompt) {
    TestServer ts;
    auto c = ts.client();
    const std::string prompt = "The quick brown fox jumps over the lazy dog";
    const std::vector<int32_t> ids = fixture().tok->encode(prompt, true, false);
    const std::vector<double> want = prompt_scores(ids);
    const infer::Solo gen = solo(ids, 3);
    int st = 0;
    const json body = {{"model", "tiny"}, {"prompt", prompt}, {"echo", true},
                       {"logprobs", 2},   {"max_tokens", 3},  {"temperature", 0}};
    json r = post(c, "/v1/completions", body, &st);
    ASSERT_EQ(st, 200) << r;
    const json& ch = r["choices"][0];
    const std::string text = ch["text"];
    const json& lp = ch["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), ids.size() + 3) << lp;
    EXPECT_TRUE(lp["token_logprobs"][0].is_null());
    EXPECT_TRUE(lp["top_logprobs"][0].is_null());
    for (size_t i = 1; i < ids.size(); ++i) {
        EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), want[i - 1], 1e-4)
            << "prompt token " << i;
        EXPECT_EQ(lp["top_logprobs"][i].size(), 2u);
    }
    for (size_t k = 0; k < 3; ++k) {
        EXPECT_NEAR(lp["token_logprobs"][ids.size() + k].get<double>(), gen.logprobs[k], 1e-4);
    }
    EXPECT_TRUE(text.starts_with(prompt)) << text;
    for (size_t i = 0; i < lp["tokens"].size(); ++i) {
        const std::string t = lp["tokens"][i];
        const size_t off = lp["text_offset"][i];
        EXPECT_EQ(text.substr(off, t.size()), t) << "token " << i;
    }
    EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
    EXPECT_EQ(r["usage"]["completion_tokens"], 3);

    // Streamed: the same tokens and scores, offsets continuing across chunks.
    json sb = body;
    sb["stream"] = true;
    Stream s = stream(c, "/v1/completions", sb);
    ASSERT_TRUE(s.done);
    std::vector<std::string> toks;
    std::vector<size_t> offs;
    std::string streamed;
    for (const json& chunk : s.chunks) {
        const json& cc = chunk["choices"][0];
        streamed += cc["text"].get<std::string>();
        if (cc["logprobs"].is_null()) continue;
        for (size_t i = 0; i < cc["logprobs"]["tokens"].size(); ++i) {
            toks.push_back(cc["logprobs"]["tokens"][i]);
            offs.push_back(cc["logprobs"]["text_offset"][i]);
        }
    }
    EXPECT_EQ(streamed, text);
    ASSERT_EQ(toks.size(), lp["tokens"].size());
    for (size_t i = 0; i < toks.size(); ++i) {
        EXPECT_EQ(toks[i], lp["tokens"][i]);
        EXPECT_EQ(offs[i], lp["text_offset"][i].get<size_t>()) << i;
    }

    // max_tokens 0: the scored prompt alone.
    json pb = body;
    pb["max_tokens"] = 0;
    r = post(c, "/v1/completions", pb, &st);
    ASSERT_EQ(st, 200) << r;
    EXPECT_EQ(r["choices"][0]["text"], prompt);
    EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(r["choices"][0]["logprobs"]["tokens"].size(), ids.size());
    EXPECT_EQ(r["usage"]["completion_tokens"], 0);
    EXPECT_NEAR(r["choices"][0]["logprobs"]["token_logprobs"][ids.size() - 1].get<double>(),
                want.back(), 1e-4);
    pb.erase("echo");
    r = post(c, "/v1/completions", pb, &st);
    EXPECT_EQ(st, 400);
    expect_openai_error(r, "max_tokens");
    ts.expect_idle_no_leak();
}

}  // namespace
}  // namespace zs::serve
