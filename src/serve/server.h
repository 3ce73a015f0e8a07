// Server: the OpenAI-compatible HTTP front end (serve/http.h, Boost.Beast) over a Service.
//
// Routes: POST /v1/completions, POST /v1/chat/completions (both with stream: true as SSE ending
// "data: [DONE]"), GET /v1/models[/{id}], GET /health (liveness, never authenticated),
// GET /ready (503 while loading or draining), GET /metrics (Prometheus text).
//
// Every answer other than 2xx carries OpenAI's error JSON. Order of checks on a generation
// request: draining (503) → API key (401) → capacity (429 + Retry-After, before the body is
// parsed or anything is tokenized) → body (400/413) → model name (400) → prompt vs context (400)
// → the engine's own checks (400). A streaming client that goes away (a write fails, or the
// keep-alive comment sent every second of silence fails) aborts its request, which frees its KV
// blocks at once. shutdown() drains: new requests get 503, in-flight ones finish within the
// timeout, then the rest are aborted with an error event (streams) or a 503 (others).
//
// Threads: the HTTP layer's one I/O thread reads every connection (a request must arrive whole
// within request_timeout_s) and runs the cheap routes; a generation or tokenization runs on a
// worker, so a slow or idle client costs a socket, never a thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "infer/chat_template.h"
#include "io/tokenizer.h"
#include "serve/metrics.h"
#include "serve/service.h"

namespace zs::serve::http {
class Server;
class Exchange;
struct Request;
struct Response;
}  // namespace zs::serve::http

namespace zs::serve {

struct ServerConfig {
    std::string host = "127.0.0.1";
    int port = 8000;  // 0: any free port (see port())
    std::string api_key;
    std::string model_name = "zerospeed";
    int64_t max_running = 256;  // the scheduler's max_seqs
    int64_t max_queued = 256;   // generation requests beyond max_running before 429
    size_t max_body_bytes = size_t{8} << 20;
    double request_timeout_s = 10;    // a whole request (head + body) must arrive within this
    int64_t max_connections = 16384;  // open connections beyond this are closed at once
    int keepalive_ms = 1000;          // SSE keep-alive comment after this much silence
};

// What the server needs to know about the model besides the Service.
struct ModelInfo {
    const io::Tokenizer* tokenizer = nullptr;
    infer::ChatTemplate chat;
    std::vector<int32_t> stop_ids;   // end-of-turn ids (tokenizer, config, generation_config)
    infer::SamplingParams defaults;  // generation_config.json (used for fields a request omits)
    int64_t context = 0;             // max positions
    int64_t vocab_size = 0;
};

class Server {
public:
    Server(Service& service, ModelInfo model, ServerConfig cfg, Metrics& metrics);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Bind the socket (throws IoError naming host:port on failure); returns the port.
    int bind();
    // Serve until stop(); call after bind().
    void listen();
    // Drain (see above), then stop listening. Thread-safe; returns once stopped.
    void shutdown(double timeout_s);
    void stop();
    int port() const { return port_; }
    bool draining() const { return draining_.load(); }
    int64_t inflight() const { return inflight_.load(); }

private:
    struct Job;
    using ExchangePtr = std::shared_ptr<http::Exchange>;
    void routes();
    bool authorized(const http::Request& req) const;
    // Answer and count it under `route` in the metrics.
    void answer(const ExchangePtr& ex, const char* route, http::Response r);
    void answer_error(const ExchangePtr& ex, const char* route, const ApiError& e);
    // Routes.
    void on_ready(const ExchangePtr& ex);
    void on_metrics(const ExchangePtr& ex);
    void on_models(const ExchangePtr& ex);
    void on_model(const ExchangePtr& ex);
    void on_tokenize(const ExchangePtr& ex);
    void on_detokenize(const ExchangePtr& ex);
    void on_generate(Endpoint ep, const ExchangePtr& ex);
    // Generation, on a worker: parse, tokenize, check against the context, submit (throws
    // ApiException), then answer whole or as a stream.
    void generate(const std::shared_ptr<Job>& job, const ExchangePtr& ex);
    std::vector<ChoiceSpec> prepare(Job& job, const http::Request& req);
    void respond_whole(Job& job, const ExchangePtr& ex);
    void stream(Job& job, const ExchangePtr& ex);
    ParseLimits limits() const;

    Service& service_;
    ModelInfo model_;
    ServerConfig cfg_;
    Metrics& metrics_;
    std::unique_ptr<http::Server> http_;
    int port_ = 0;
    int64_t created_ = 0;
    std::atomic<bool> draining_{false};
    std::atomic<int64_t> inflight_{0};
    std::atomic<uint64_t> seed_counter_{0};
};

// Block SIGTERM and SIGINT in the calling thread and every thread it starts afterwards (call
// first thing in `serve`, before the engine thread exists), so serve_until_signal receives them.
void block_shutdown_signals();

// Run `server` until SIGTERM or SIGINT, then shut it down with `shutdown_timeout_s`. Blocks the
// signals in the calling thread (call before starting other threads).
void serve_until_signal(Server& server, double shutdown_timeout_s);

}  // namespace zs::serve
