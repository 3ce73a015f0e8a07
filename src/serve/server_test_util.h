// Shared by the server tests: a tiny random Llama with the real GPT-2 tokenizer, a server on a
// loopback port, the greedy oracle (a solo run through models::ContiguousKvCache), SSE and raw
// HTTP clients, and OpenAI's error shape.
#pragma once

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
#include "serve/server.h"
#include "tests/test_util.h"

namespace zs::serve::test {

using core::DType;
using core::Tensor;
using nlohmann::json;

inline constexpr const char* kTiny =
    R"({"model_type": "llama", "vocab_size": 50257, "hidden_size": 32,
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

inline Fixture& fixture() {
    static Fixture f;
    return f;
}

// Greedy decoding through the contiguous cache (argmax, lowest id on ties), no EOS stop.
inline infer::Solo solo(const std::vector<int32_t>& prompt, int64_t max_tokens) {
    return infer::solo(*fixture().model, prompt, max_tokens);
}

inline std::string solo_text(const std::string& prompt, int64_t max_tokens) {
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

inline json post(httplib::Client& c, const std::string& path, const json& body, int* status,
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

inline Stream stream(httplib::Client& c, const std::string& path, const json& body,
                     int drop_after = -1) {
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
inline std::string raw_http(int port, const std::string& request, bool half_close,
                            double timeout_s) {
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

inline std::string lower(std::string s) {
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
}

inline void expect_openai_error(const json& j, const std::string& param) {
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

}  // namespace zs::serve::test
