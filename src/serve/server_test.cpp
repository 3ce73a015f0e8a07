// The HTTP server on loopback over a tiny random Llama with the real GPT-2 tokenizer. Oracles:
// a solo greedy run through models::ContiguousKvCache (tokens, text and logprobs), OpenAI's error
// shape, and the KV pool's own accounting (free blocks == total once idle: no leaks).
// Named RELIABILITY.md tests: serve_validation_400, serve_disconnect_soak (bounded: 200 streams,
// 30% dropped), serve_overload_reject, serve_graceful_drain, serve_auth_bind.
#include "serve/server.h"

#include <atomic>
#include <cctype>
#include <cmath>
#include <random>
#include <thread>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "infer/engine_test_util.h"
#include "models/kv_cache.h"
#include "models/params.h"
#include "ops/activation.h"
#include "serve/protocol.h"
#include "tests/test_util.h"

namespace zs::serve {
namespace {

using core::DType;
using core::Tensor;
using nlohmann::json;

const char* kTiny = R"({"model_type": "llama", "vocab_size": 50257, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
    "eos_token_id": 50256})";

struct Fixture {
    std::unique_ptr<models::Transformer> model;
    std::unique_ptr<models::DenseParams> params;
    std::unique_ptr<io::Tokenizer> tok;
    Fixture() {
        model = std::make_unique<models::Transformer>(models::parse_hf_config(kTiny, "tiny"),
                                                      models::RunConfig{});
        params = std::make_unique<models::DenseParams>(model->layout(), DType::f32, false);
        params->init(7);
        for (int g = 0; g < model->layout().n_groups(); ++g) {
            const Tensor& w = params->group_weights(g);
            ops::scale(w, w, 12.0f);
        }
        params->bind(model->binding());
        tok = std::make_unique<io::Tokenizer>(
            io::Tokenizer::load(std::string(ZS_SOURCE_DIR) + "/tests/fixtures/tokenizers/gpt2"));
    }
};

Fixture& fixture() {
    static Fixture f;
    return f;
}

// Greedy decoding through the contiguous cache (argmax, lowest id on ties), no EOS stop.
infer::Solo solo(const std::vector<int32_t>& prompt, int64_t max_tokens) {
    return infer::solo(*fixture().model, prompt, max_tokens);
}

std::string solo_text(const std::string& prompt, int64_t max_tokens) {
    const io::Tokenizer& tok = *fixture().tok;
    infer::Solo s = solo(tok.encode(prompt, true, false), max_tokens);
    return tok.decode(s.tokens, true);
}

// A server on a free loopback port, serving until destroyed.
struct TestServer {
    Metrics metrics;
    std::unique_ptr<Service> service;
    std::unique_ptr<Server> server;
    std::thread thread;
    int port = 0;

    explicit TestServer(ServerConfig cfg = {}, int64_t kv_blocks = 512, int64_t max_seqs = 64) {
        Fixture& f = fixture();
        ServiceConfig sc;
        sc.engine.kv_blocks = kv_blocks;
        sc.engine.kv_dtype = DType::f32;
        sc.engine.scheduler.max_seqs = max_seqs;
        sc.engine.scheduler.max_batch_tokens = 256;
        service = std::make_unique<Service>(*f.model, *f.tok, sc, metrics);
        ModelInfo mi;
        mi.tokenizer = f.tok.get();
        mi.chat = infer::detect_chat_template(*f.tok);
        mi.stop_ids = {50256};
        mi.context = 256;
        mi.vocab_size = 50257;
        cfg.port = 0;
        cfg.model_name = "tiny";
        cfg.max_running = max_seqs;
        server = std::make_unique<Server>(*service, mi, cfg, metrics);
        port = server->bind();
        thread = std::thread([this] { server->listen(); });
    }
    ~TestServer() {
        server->stop();
        thread.join();
    }
    httplib::Client client() const {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(60, 0);
        return c;
    }
    // Wait until the engine holds nothing; then every KV block must be free.
    void expect_idle_no_leak() {
        for (int i = 0; i < 500 && (service->active() > 0 || server->inflight() > 0); ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        EXPECT_EQ(service->active(), 0);
        EXPECT_EQ(server->inflight(), 0);
        // Gauges are published after the step that finished the last request.
        EngineGauges g;
        for (int i = 0; i < 100; ++i) {
            g = service->gauges();
            if (g.kv_blocks_free == g.kv_blocks_total && g.running == 0 && g.waiting == 0) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        EXPECT_EQ(g.kv_blocks_free, g.kv_blocks_total) << "KV blocks leaked";
        EXPECT_EQ(g.running, 0);
        EXPECT_EQ(g.waiting, 0);
    }
};

json post(httplib::Client& c, const std::string& path, const json& body, int* status,
          const httplib::Headers& h = {}) {
    auto res = c.Post(path, h, body.dump(), "application/json");
    if (!res) {
        *status = -1;
        return json();
    }
    *status = res->status;
    return json::parse(res->body, nullptr, false);
}

// The SSE events of a streamed response, and whether it ended with [DONE].
struct Stream {
    std::vector<json> chunks;
    bool done = false;
    int status = 0;
};

Stream stream(httplib::Client& c, const std::string& path, const json& body, int drop_after = -1) {
    Stream s;
    std::string buf;
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.response_handler = [&](const httplib::Response& r) {
        s.status = r.status;
        return true;
    };
    req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
        buf.append(d, n);
        size_t p;
        while ((p = buf.find("\n\n")) != std::string::npos) {
            std::string ev = buf.substr(0, p);
            buf.erase(0, p + 2);
            if (ev.starts_with(":")) continue;
            EXPECT_TRUE(ev.starts_with("data: ")) << ev;
            std::string payload = ev.substr(6);
            if (payload == "[DONE]") {
                s.done = true;
                continue;
            }
            s.chunks.push_back(json::parse(payload));
            if (drop_after >= 0 && static_cast<int>(s.chunks.size()) > drop_after) return false;
        }
        return true;
    };
    httplib::Response res;
    httplib::Error err;
    c.send(req, res, err);
    return s;
}

// One raw HTTP exchange over a socket (for what httplib's client will not send): writes
// `request`, optionally half-closes, and reads until the server closes or `timeout_s` passes.
std::string raw_http(int port, const std::string& request, bool half_close, double timeout_s) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return {};
    }
    (void)!::write(fd, request.data(), request.size());
    if (half_close) ::shutdown(fd, SHUT_WR);
    timeval tv{static_cast<time_t>(timeout_s), 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return out;
}

std::string lower(std::string s) {
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
}

void expect_openai_error(const json& j, const std::string& param) {
    ASSERT_TRUE(j.is_object()) << j;
    ASSERT_TRUE(j.contains("error")) << j;
    const json& e = j["error"];
    EXPECT_TRUE(e["message"].is_string());
    EXPECT_TRUE(e["type"].is_string());
    EXPECT_TRUE(e.contains("param"));
    EXPECT_TRUE(e.contains("code"));
    if (!param.empty()) {
        EXPECT_EQ(e["param"], param) << j;
    }
}

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

TEST(Serve, Http10StreamsWithoutChunkedEncoding) {
    // HTTP/1.0 has no chunked transfer encoding: the SSE stream is the body up to the close.
    TestServer ts;
    const std::string body =
        json{{"model", "tiny"}, {"prompt", "Hello"}, {"max_tokens", 5}, {"stream", true}}.dump();
    const std::string resp =
        raw_http(ts.port,
                 "POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
                 "Content-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body,
                 false, 30);
    const size_t head_end = resp.find("\r\n\r\n");
    ASSERT_NE(head_end, std::string::npos) << resp;
    const std::string head = lower(resp.substr(0, head_end));
    EXPECT_NE(head.find(" 200"), std::string::npos) << head;
    EXPECT_EQ(head.find("transfer-encoding"), std::string::npos) << head;
    EXPECT_NE(head.find("connection: close"), std::string::npos) << head;
    const std::string payload = resp.substr(head_end + 4);
    EXPECT_NE(payload.find("data: [DONE]"), std::string::npos) << payload;
    EXPECT_EQ(payload.find("\r\n0\r\n"), std::string::npos) << "chunk framing in the body";
    ts.expect_idle_no_leak();
}

TEST(Serve, BodyShorterThanContentLengthGetsANamedError) {
    ServerConfig cfg;
    cfg.request_timeout_s = 1;
    TestServer ts(cfg);
    // The client closes its side early: 400 at once, naming the announced length.
    {
        const std::string resp = raw_http(ts.port,
                                          "POST /v1/completions HTTP/1.1\r\nContent-Type: "
                                          "application/json\r\nContent-Length: 100\r\n\r\n"
                                          "{\"model\": \"tiny\"",
                                          true, 30);
        const size_t head_end = resp.find("\r\n\r\n");
        ASSERT_NE(head_end, std::string::npos) << resp;
        EXPECT_NE(resp.substr(0, head_end).find(" 400"), std::string::npos) << resp;
        json j = json::parse(resp.substr(head_end + 4), nullptr, false);
        expect_openai_error(j, "");
        EXPECT_NE(j["error"]["message"].get<std::string>().find("Content-Length"),
                  std::string::npos)
            << j;
    }
    // The client keeps the connection open: 408 when the whole-request deadline passes.
    const std::string resp = raw_http(ts.port,
                                      "POST /v1/completions HTTP/1.1\r\nContent-Type: "
                                      "application/json\r\nContent-Length: 100\r\n\r\n"
                                      "{\"model\": \"tiny\"",
                                      false, 30);
    const size_t head_end = resp.find("\r\n\r\n");
    ASSERT_NE(head_end, std::string::npos) << resp;
    EXPECT_NE(resp.substr(0, head_end).find(" 408"), std::string::npos) << resp;
    json j = json::parse(resp.substr(head_end + 4), nullptr, false);
    expect_openai_error(j, "");
    EXPECT_NE(j["error"]["message"].get<std::string>().find("Content-Length"), std::string::npos)
        << j;
}

// serve_slow_clients: 1,000 connections trickling a request one byte a second cost no thread
// and do not delay a normal request beyond 2x its idle latency (median of 9); each is answered
// 408 and closed once its whole-request deadline passes.
TEST(Serve, SlowClientsDoNotDelayOthersAndAreClosedAtTheDeadline) {
    // Each slow client holds two descriptors here (its socket and the server's).
    int n_slow = 1000;
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = std::max<rlim_t>(rl.rlim_cur, std::min<rlim_t>(rl.rlim_max, 4096));
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2 * static_cast<rlim_t>(n_slow) + 200) {
        n_slow = static_cast<int>((rl.rlim_cur - 200) / 2);
        std::printf("descriptor limit %llu: %d slow clients\n",
                    static_cast<unsigned long long>(rl.rlim_cur), n_slow);
    }
    ServerConfig cfg;
    cfg.request_timeout_s = 4;
    TestServer ts(cfg);
    auto c = ts.client();
    auto latency = [&] {
        std::vector<double> v;
        for (int i = 0; i < 9; ++i) {
            const auto t0 = std::chrono::steady_clock::now();
            int st = 0;
            post(c, "/v1/completions",
                 {{"model", "tiny"}, {"prompt", "hello"}, {"max_tokens", 4}, {"temperature", 0}},
                 &st);
            EXPECT_EQ(st, 200);
            v.push_back(
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(v.begin(), v.end());
        return v[4];
    };
    latency();  // warm-up
    const double idle = latency();

    const std::string head =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n";
    std::vector<int> fds;
    for (int i = 0; i < n_slow; ++i) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        ASSERT_GE(fd, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(ts.port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << i;
        fds.push_back(fd);
    }
    const auto t_connected = std::chrono::steady_clock::now();
    std::atomic<bool> stop{false};
    std::thread trickler([&] {
        // One byte a second on every connection, never a whole head.
        for (size_t k = 0; !stop && k < 3; ++k) {
            for (int fd : fds) (void)!::send(fd, head.data() + k, 1, MSG_NOSIGNAL);
            for (int i = 0; i < 100 && !stop; ++i) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const double busy = latency();
    stop = true;
    trickler.join();
    std::printf("normal request, median of 9: idle %.2f ms, with %d slow clients %.2f ms\n",
                idle * 1e3, n_slow, busy * 1e3);
    EXPECT_LE(busy, 2 * idle + 0.002);
    const double before_deadline =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_connected).count();
    EXPECT_LT(before_deadline, 3.5) << "the latency was measured after the deadline";

    // Every slow connection: 408 with OpenAI's error, then closed by the server.
    int answered = 0, closed = 0;
    for (int fd : fds) {
        timeval tv{8, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        std::string out;
        char buf[1024];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
        if (n == 0) ++closed;
        if (out.starts_with("HTTP/1.1 408") && out.find("\"error\"") != std::string::npos) {
            ++answered;
        }
        ::close(fd);
    }
    const double at =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_connected).count();
    EXPECT_EQ(answered, n_slow);
    EXPECT_EQ(closed, n_slow);
    EXPECT_LT(at, 4 + 3.0) << "closed long after the deadline";
    ts.expect_idle_no_leak();
}

TEST(Serve, ApiKeyGuardsEverythingButHealth) {
    ServerConfig cfg;
    cfg.api_key = "sekrit-key";
    TestServer ts(cfg);
    auto c = ts.client();
    EXPECT_EQ(c.Get("/health")->status, 200);
    EXPECT_EQ(c.Get("/v1/models")->status, 401);
    EXPECT_EQ(c.Get("/metrics")->status, 401);
    int st = 0;
    json r = post(c, "/v1/completions", {{"model", "tiny"}, {"prompt", "a"}}, &st);
    EXPECT_EQ(st, 401);
    expect_openai_error(r, "");
    post(c, "/v1/completions", {{"model", "tiny"}, {"prompt", "a"}}, &st,
         {{"Authorization", "Bearer sekrit-kex"}});
    EXPECT_EQ(st, 401);
    post(c, "/v1/completions", {{"model", "tiny"}, {"prompt", "a"}, {"max_tokens", 2}}, &st,
         {{"Authorization", "bearer sekrit-key"}});
    EXPECT_EQ(st, 200);
    auto m = c.Get("/v1/models", {{"Authorization", "Bearer sekrit-key"}});
    EXPECT_EQ(m->status, 200);
    EXPECT_EQ(json::parse(m->body)["data"][0]["id"], "tiny");
}

// serve_disconnect_soak (bounded): 200 concurrent streams, ~30% dropped at random moments, some
// invalid requests mixed in. Kept requests get exactly max_tokens tokens and the solo text.
TEST(Serve, DisconnectSoakNoLeaks) {
    TestServer ts(ServerConfig{}, 256, 64);
    const std::vector<std::string> prompts = {"Once upon a time", "In the beginning",
                                              "The sea was calm", "She opened the door",
                                              "Numbers: 1 2 3"};
    std::vector<std::string> want;
    for (const auto& p : prompts) want.push_back(solo_text(p, 8));
    std::atomic<int> kept_ok{0}, kept{0}, invalid_ok{0}, invalid{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 200; ++i) {
        threads.emplace_back([&, i] {
            std::mt19937 rng(static_cast<uint32_t>(i));
            auto c = ts.client();
            const size_t pi = static_cast<size_t>(i) % prompts.size();
            if (i % 10 == 3) {  // invalid
                ++invalid;
                int st = 0;
                json r = post(c, "/v1/completions",
                              {{"model", "tiny"}, {"prompt", prompts[pi]}, {"top_p", 7}}, &st);
                if (st == 400 && r.contains("error")) {
                    ++invalid_ok;
                } else {
                    ADD_FAILURE() << "invalid request got " << st << " " << r;
                }
                return;
            }
            json body = {{"model", "tiny"},
                         {"prompt", prompts[pi]},
                         {"max_tokens", 8},
                         {"temperature", 0},
                         {"ignore_eos", true},
                         {"stream", true},
                         {"stream_options", {{"include_usage", true}}}};
            const bool drop = rng() % 10 < 3;
            Stream s = stream(c, "/v1/completions", body, drop ? static_cast<int>(rng() % 5) : -1);
            if (drop) return;
            ++kept;
            std::string text;
            int64_t n = -1;
            for (const json& ch : s.chunks) {
                if (!ch["choices"].empty()) text += ch["choices"][0]["text"].get<std::string>();
                if (ch.contains("usage") && ch["usage"].is_object()) {
                    n = ch["usage"]["completion_tokens"];
                }
            }
            if (s.done && n == 8 && text == want[pi]) {
                ++kept_ok;
            } else {
                ADD_FAILURE() << "stream " << i << ": status " << s.status << " done " << s.done
                              << " tokens " << n << " text '" << text << "' want '" << want[pi]
                              << "'";
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(kept_ok.load(), kept.load());
    EXPECT_GT(kept.load(), 100);
    EXPECT_EQ(invalid_ok.load(), invalid.load());
    ts.expect_idle_no_leak();
    auto c = ts.client();
    EXPECT_EQ(c.Get("/health")->status, 200);
    // /metrics reports what happened.
    std::string m = c.Get("/metrics")->body;
    EXPECT_NE(m.find("zerospeed_requests_total{route=\"/v1/completions\",status=\"400\"} "),
              std::string::npos);
    EXPECT_NE(m.find("zerospeed_time_to_first_token_seconds_count"), std::string::npos);
    EXPECT_NE(m.find("zerospeed_kv_blocks_free 256"), std::string::npos) << m.substr(0, 2000);
}

// serve_overload_reject: capacity 2 running + 2 queued, a burst of 24 → the excess get 429 with
// Retry-After quickly; every admitted request completes.
TEST(Serve, OverloadRejectsWith429) {
    ServerConfig cfg;
    cfg.max_queued = 2;
    TestServer ts(cfg, 256, 2);
    std::atomic<int> ok{0}, rejected{0}, other{0};
    std::atomic<double> worst_reject{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 24; ++i) {
        threads.emplace_back([&] {
            auto c = ts.client();
            auto t0 = std::chrono::steady_clock::now();
            auto res = c.Post("/v1/completions",
                              json{{"model", "tiny"},
                                   {"prompt", "hello there"},
                                   {"max_tokens", 40},
                                   {"ignore_eos", true}}
                                  .dump(),
                              "application/json");
            double dt =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (!res) {
                ++other;
            } else if (res->status == 200) {
                ++ok;
            } else if (res->status == 429 && res->has_header("Retry-After") &&
                       json::parse(res->body).contains("error")) {
                ++rejected;
                double w = worst_reject.load();
                while (dt > w && !worst_reject.compare_exchange_weak(w, dt)) {
                }
            } else {
                ++other;
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(other.load(), 0);
    EXPECT_GE(ok.load(), 4);
    EXPECT_GT(rejected.load(), 0);
    EXPECT_EQ(ok.load() + rejected.load(), 24);
    EXPECT_LT(worst_reject.load(), 0.5);
    ts.expect_idle_no_leak();
}

// serve_graceful_drain: in-flight streams finish; new requests get 503; with timeout 0 the
// streams end with an explicit error event.
TEST(Serve, GracefulDrain) {
    for (double timeout : {30.0, 0.0}) {
        TestServer ts;
        std::atomic<int> finished{0}, aborted{0};
        std::vector<std::thread> streams;
        for (int i = 0; i < 6; ++i) {
            streams.emplace_back([&] {
                auto c = ts.client();
                Stream s = stream(c, "/v1/completions",
                                  {{"model", "tiny"},
                                   {"prompt", "drain me"},
                                   {"max_tokens", 120},
                                   {"ignore_eos", true},
                                   {"stream", true}});
                bool err = false;
                std::string finish;
                for (const json& ch : s.chunks) {
                    if (ch.contains("error")) err = true;
                    if (ch.contains("choices") && !ch["choices"].empty() &&
                        !ch["choices"][0]["finish_reason"].is_null()) {
                        finish = ch["choices"][0]["finish_reason"];
                    }
                }
                if (s.done && finish == "length") ++finished;
                if (s.done && err) ++aborted;
            });
        }
        // Let them start.
        for (int i = 0; i < 200 && ts.service->active() < 6; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        std::thread stopper([&] { ts.server->shutdown(timeout); });
        for (int i = 0; i < 200 && !ts.server->draining(); ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        if (timeout > 0) {
            auto c = ts.client();
            int st = 0;
            json r = post(c, "/v1/completions", {{"model", "tiny"}, {"prompt", "late"}}, &st);
            EXPECT_EQ(st, 503);
            expect_openai_error(r, "");
        }
        stopper.join();
        for (auto& t : streams) t.join();
        if (timeout > 0) {
            EXPECT_EQ(finished.load(), 6);
        } else {
            EXPECT_EQ(finished.load() + aborted.load(), 6);
            EXPECT_GT(aborted.load(), 0);
        }
        EXPECT_EQ(ts.service->active(), 0);
    }
}

}  // namespace
}  // namespace zs::serve
