// Service: the engine thread and the queues between it and the HTTP threads (llama.cpp's
// server_queue / server_response; vLLM's EngineCore loop).
//
//   HTTP thread                          engine thread (owns Engine, KV pool, model)
//   submit(choices) ──commands──▶        add_request per choice, ack (or error)
//   wait on Channel ◀──events───         step(): detokenize, stop strings, logprobs, finish
//   cancel(channel) ──commands──▶        abort: blocks freed at once
//
// The engine thread never blocks on an HTTP thread: events go into each request's Channel under
// its own mutex; a slow or vanished client only lets its channel grow until it is cancelled.
// Each choice (n > 1, several prompts) is an independent engine request.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "infer/engine.h"
#include "io/tokenizer.h"
#include "serve/metrics.h"
#include "serve/protocol.h"

namespace zs::serve {

using Clock = std::chrono::steady_clock;

// One choice to generate.
struct ChoiceSpec {
    std::vector<int32_t> prompt;
    infer::RequestOptions options;
    std::vector<std::string> stop;  // stop strings (matched on the detokenized output)
    bool skip_special = true;
    bool logprobs = false;
};

// What the engine thread reports for one choice.
struct Event {
    int choice = 0;
    std::string text;                    // newly shown text
    std::vector<TokenLogprob> logprobs;  // of the tokens behind `text` (when asked)
    // With the choice's first event when options.prompt_logprobs >= 0: every prompt token, the
    // first unscored.
    std::vector<TokenLogprob> prompt_logprobs;
    std::string finish_reason;  // set on the choice's last event: stop, length, abort
    int64_t n_prompt_tokens = 0, n_output_tokens = 0;
};

// A request's mailbox: filled by the engine thread, drained by its HTTP thread.
class Channel {
public:
    explicit Channel(int n_choices) : open_(n_choices) {}
    // Wait until events arrive, the request ends, or `timeout` passes; moves events into `out`.
    // Returns false once every choice has finished and no event is left.
    bool wait(std::vector<Event>& out, std::chrono::milliseconds timeout);
    // The server is shutting down without draining this request.
    bool aborted() const { return aborted_.load(); }

private:
    friend class Service;
    void push(Event e);
    void fail(std::string why);

    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Event> events_;
    int open_;  // choices not yet finished (guarded by mu_)
    std::atomic<bool> aborted_{false};
    std::string abort_reason_;
    // Engine side (engine thread only).
    std::vector<infer::RequestId> ids_;
};

struct ServiceConfig {
    infer::EngineConfig engine;
    std::vector<int32_t> extra_stop_ids;  // generation_config eos ids etc., besides the model's
};

class Service {
public:
    Service(models::Transformer& model, const io::Tokenizer& tok, const ServiceConfig& cfg,
            Metrics& metrics);
    ~Service();
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;

    // Queue the choices and wait until the engine accepted them all; throws ApiException when
    // the engine refuses one (none of them then runs). Thread-safe.
    std::shared_ptr<Channel> submit(std::vector<ChoiceSpec> choices, Clock::time_point arrival);
    // Abort every unfinished choice of `ch` (client gone); its blocks are freed at once.
    void cancel(const std::shared_ptr<Channel>& ch);
    // End every request now: each channel reports aborted (shutdown without drain).
    void abort_all(const std::string& why);
    // Requests the engine holds (running or waiting) plus those being submitted.
    int64_t active() const { return active_.load(); }
    // Blocks the pool has and those free now (for leak checks: equal once idle).
    EngineGauges gauges() const { return metrics_.gauges(); }
    const models::ModelConfig& model_config() const { return model_.config(); }
    int64_t kv_capacity_tokens() const;

private:
    struct Command;
    struct Live;
    void loop();
    void handle(Command& c);
    void on_output(const infer::RequestOutput& out);
    void end_choice(Live& l, const std::string& reason, std::string tail);
    void publish_gauges();
    void fail_all(const std::string& why);

    models::Transformer& model_;
    const io::Tokenizer& tok_;
    Metrics& metrics_;
    std::unique_ptr<infer::Engine> engine_;
    std::mutex mu_;  // guards commands_, stop_
    std::condition_variable cv_;
    std::deque<std::unique_ptr<Command>> commands_;
    bool stop_ = false;
    std::atomic<int64_t> active_{0};
    // engine thread only
    std::unordered_map<infer::RequestId, std::unique_ptr<Live>> live_;
    std::thread thread_;
};

}  // namespace zs::serve
