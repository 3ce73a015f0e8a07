#include "serve/server.h"

#include <csignal>
#include <ctime>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <pthread.h>

#include "base/error.h"
#include "base/log.h"
#include "serve/http.h"

namespace zs::serve {

using nlohmann::json;

namespace {

http::Response json_response(int status, std::string body) {
    http::Response r;
    r.status = status;
    r.body = std::move(body);
    return r;
}

http::Response error_response(const ApiError& e) {
    return json_response(e.status, dump(e.to_json()));
}

std::string random_id(const char* prefix) {
    static thread_local std::mt19937_64 rng(std::random_device{}());
    return fmt::format("{}{:016x}{:08x}", prefix, rng(), static_cast<uint32_t>(rng()));
}

// Constant-time comparison (the key length is not secret).
bool same_key(const std::string& a, const std::string& b) {
    unsigned char d = a.size() == b.size() ? 0 : 1;
    for (size_t i = 0; i < a.size(); ++i) {
        d |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
    }
    return d == 0;
}

const char* route_of(Endpoint ep) {
    return ep == Endpoint::chat ? "/v1/chat/completions" : "/v1/completions";
}

// A place among the generation requests in flight, held from admission until the answer is
// written: the count can neither leak nor be released twice.
class InflightSlot {
public:
    explicit InflightSlot(std::atomic<int64_t>& n) : n_(&n) {}
    ~InflightSlot() { *n_ -= 1; }
    InflightSlot(const InflightSlot&) = delete;
    InflightSlot& operator=(const InflightSlot&) = delete;

private:
    std::atomic<int64_t>* n_;
};

}  // namespace

// One accepted generation request: its choices' accumulated results and the stream state.
struct Server::Job {
    Endpoint ep = Endpoint::completions;
    std::unique_ptr<InflightSlot> slot;
    std::chrono::steady_clock::time_point arrival;
    GenRequest req;
    std::shared_ptr<Channel> channel;
    std::vector<std::string> prompt_texts;  // for echo
    std::vector<int64_t> prompt_lens;
    std::vector<ChoiceResult> results;
    std::vector<size_t> text_offset;  // stream: bytes of the tokens sent so far, per choice
    std::string id;
    int64_t created = 0;
    std::string model;
    bool prompt_only = false;  // echo with max_tokens 0: the (scored) prompt, nothing generated

    Usage usage() const {
        Usage u;
        for (const ChoiceResult& r : results) u.completion_tokens += r.n_output_tokens;
        for (int64_t n : prompt_lens) u.prompt_tokens += n;
        return u;
    }
    json body() const {
        return ep == Endpoint::chat
                   ? chat_response(id, created, model, results, usage(), req.logprobs)
                   : completion_response(id, created, model, results, usage(), req.logprobs);
    }
};

Server::Server(Service& service, ModelInfo model, ServerConfig cfg, Metrics& metrics)
    : service_(service),
      model_(std::move(model)),
      cfg_(std::move(cfg)),
      metrics_(metrics),
      created_(static_cast<int64_t>(std::time(nullptr))) {
    http::Options o;
    o.host = cfg_.host;
    o.port = cfg_.port;
    o.request_timeout_s = cfg_.request_timeout_s;
    o.max_body_bytes = cfg_.max_body_bytes;
    o.max_connections = cfg_.max_connections;
    // Every admitted generation holds a worker for its life; tokenization borrows one briefly.
    o.workers = static_cast<int>(cfg_.max_running + cfg_.max_queued + 16);
    o.error_body = [](int status, const std::string& code, const std::string& message) {
        return error_response(ApiError{
            status, message, status >= 500 ? "server_error" : "invalid_request_error", "", code});
    };
    http_ = std::make_unique<http::Server>(std::move(o));
    routes();
}

Server::~Server() { stop(); }

int Server::bind() {
    port_ = http_->bind();
    return port_;
}

void Server::listen() { http_->run(); }

void Server::stop() {
    if (http_) http_->stop();
}

void Server::shutdown(double timeout_s) {
    draining_ = true;
    log_info("serve: draining {} request(s) (timeout {} s)", service_.active(), timeout_s);
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    while (service_.active() > 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (service_.active() > 0) {
        log_warn("serve: aborting {} request(s) still running at the shutdown timeout",
                 service_.active());
        service_.abort_all("the server is shutting down");
    }
    // Let the handlers write their last bytes.
    auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (inflight_.load() > 0 && std::chrono::steady_clock::now() < grace) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    stop();
}

bool Server::authorized(const http::Request& req) const {
    if (cfg_.api_key.empty()) return true;
    const std::string h = req.header("authorization");
    const std::string bearer = "bearer ";
    if (h.size() < bearer.size()) return false;
    for (size_t i = 0; i < bearer.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(h[i])) != bearer[i]) return false;
    }
    return same_key(h.substr(bearer.size()), cfg_.api_key);
}

void Server::answer(const ExchangePtr& ex, const char* route, http::Response r) {
    metrics_.request_done(route, r.status);
    ex->respond(std::move(r));
}

void Server::answer_error(const ExchangePtr& ex, const char* route, const ApiError& e) {
    answer(ex, route, error_response(e));
}

ParseLimits Server::limits() const {
    ParseLimits lim;
    lim.max_body_bytes = cfg_.max_body_bytes;
    lim.vocab_size = model_.vocab_size;
    return lim;
}

namespace {
const ApiError kUnauthorized{401, "missing or invalid API key (Authorization: Bearer <key>)",
                             "invalid_request_error", "", "invalid_api_key"};
}

void Server::routes() {
    http::Server& s = *http_;
    s.route("GET", "/health", [this](const ExchangePtr& ex) {
        answer(ex, "/health", json_response(200, R"({"status":"ok"})"));
    });
    s.route("GET", "/ready", [this](const ExchangePtr& ex) { on_ready(ex); });
    s.route("GET", "/metrics", [this](const ExchangePtr& ex) { on_metrics(ex); });
    s.route("GET", "/v1/models", [this](const ExchangePtr& ex) { on_models(ex); });
    s.route("GET", "/v1/models/*", [this](const ExchangePtr& ex) { on_model(ex); });
    // Tokenization can take milliseconds on a long prompt: a worker does it.
    s.route("POST", "/tokenize",
            [this](const ExchangePtr& ex) { http_->post_work([this, ex] { on_tokenize(ex); }); });
    s.route("POST", "/detokenize",
            [this](const ExchangePtr& ex) { http_->post_work([this, ex] { on_detokenize(ex); }); });
    s.route("POST", "/v1/completions",
            [this](const ExchangePtr& ex) { on_generate(Endpoint::completions, ex); });
    s.route("POST", "/v1/chat/completions",
            [this](const ExchangePtr& ex) { on_generate(Endpoint::chat, ex); });
}

void Server::on_ready(const ExchangePtr& ex) {
    if (!authorized(ex->request())) return answer_error(ex, "/ready", kUnauthorized);
    answer(ex, "/ready",
           draining_ ? json_response(503, R"({"status":"draining"})")
                     : json_response(200, R"({"status":"ready"})"));
}

void Server::on_metrics(const ExchangePtr& ex) {
    if (!authorized(ex->request())) return answer_error(ex, "/metrics", kUnauthorized);
    metrics_.set_http_inflight(inflight_.load());
    http::Response r = json_response(200, metrics_.render());
    r.content_type = "text/plain; version=0.0.4";
    ex->respond(std::move(r));
}

namespace {
json model_object(const std::string& name, int64_t created) {
    return json{{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "zerospeed"}};
}
}  // namespace

void Server::on_models(const ExchangePtr& ex) {
    if (!authorized(ex->request())) return answer_error(ex, "/v1/models", kUnauthorized);
    answer(ex, "/v1/models",
           json_response(
               200, dump(json{{"object", "list"},
                              {"data", json::array({model_object(cfg_.model_name, created_)})}})));
}

void Server::on_model(const ExchangePtr& ex) {
    if (!authorized(ex->request())) return answer_error(ex, "/v1/models", kUnauthorized);
    const std::string name = ex->request().path.substr(std::string("/v1/models/").size());
    if (name != cfg_.model_name) {
        return answer_error(ex, "/v1/models",
                            ApiError{404, fmt::format("the model '{}' does not exist", name),
                                     "invalid_request_error", "model", "model_not_found"});
    }
    answer(ex, "/v1/models", json_response(200, dump(model_object(cfg_.model_name, created_))));
}

// vLLM's tokenizer endpoints: the model's own tokenizer and chat template.
void Server::on_tokenize(const ExchangePtr& ex) {
    if (!authorized(ex->request())) return answer_error(ex, "/tokenize", kUnauthorized);
    try {
        const TokenizeRequest t = parse_tokenize(ex->request().body, limits());
        const io::Tokenizer& tok = *model_.tokenizer;
        const std::vector<int32_t> ids =
            t.chat
                ? tok.encode(infer::render_chat(model_.chat, t.messages, t.add_generation_prompt),
                             t.add_special_tokens, true)
                : tok.encode(t.prompt, t.add_special_tokens, false);
        json strs = json::array();
        for (int32_t id : ids) strs.push_back(tok.id_to_token(id));
        answer(ex, "/tokenize",
               json_response(200, dump(json{{"count", ids.size()},
                                            {"max_model_len", model_.context},
                                            {"tokens", ids},
                                            {"token_strs", strs}})));
    } catch (const ApiException& e) {
        answer_error(ex, "/tokenize", e.error());
    } catch (const Error& e) {
        answer_error(ex, "/tokenize", ApiError{400, e.what(), "invalid_request_error", "", ""});
    }
}

void Server::on_detokenize(const ExchangePtr& ex) {
    if (!authorized(ex->request())) return answer_error(ex, "/detokenize", kUnauthorized);
    try {
        const std::vector<int32_t> ids = parse_detokenize(ex->request().body, limits());
        answer(ex, "/detokenize",
               json_response(200, dump(json{{"prompt", model_.tokenizer->decode(ids, false)}})));
    } catch (const ApiException& e) {
        answer_error(ex, "/detokenize", e.error());
    }
}

// On the I/O thread: the checks that cost nothing (draining, key, capacity), so a request we
// cannot take is answered before its body is parsed or anything is tokenized.
void Server::on_generate(Endpoint ep, const ExchangePtr& ex) {
    const char* route = route_of(ep);
    if (draining_) {
        return answer_error(ex, route,
                            ApiError{503, "the server is shutting down", "server_error", "", ""});
    }
    if (!authorized(ex->request())) return answer_error(ex, route, kUnauthorized);
    const int64_t capacity = cfg_.max_running + cfg_.max_queued;
    auto job = std::make_shared<Job>();
    job->ep = ep;
    job->arrival = std::chrono::steady_clock::now();
    const bool admitted = inflight_.fetch_add(1) < capacity;
    job->slot = std::make_unique<InflightSlot>(inflight_);
    if (!admitted) {
        http::Response r =
            error_response(ApiError{429,
                                    fmt::format("the server is at capacity ({} requests); retry "
                                                "later",
                                                capacity),
                                    "rate_limit_exceeded", "", "server_overloaded"});
        r.headers.emplace_back("Retry-After", "1");
        return answer(ex, route, std::move(r));
    }
    http_->post_work([this, job, ex] { generate(job, ex); });
}

void Server::generate(const std::shared_ptr<Job>& job, const ExchangePtr& ex) {
    const char* route = route_of(job->ep);
    try {
        std::vector<ChoiceSpec> choices = prepare(*job, ex->request());
        job->channel = service_.submit(std::move(choices), job->arrival);
    } catch (const ApiException& e) {
        return answer_error(ex, route, e.error());
    } catch (const FieldError& e) {
        return answer_error(ex, route,
                            ApiError{400, e.what(), "invalid_request_error", e.field(), ""});
    } catch (const std::exception& e) {
        return answer_error(ex, route, ApiError{400, e.what(), "invalid_request_error", "", ""});
    }
    if (job->req.stream) {
        stream(*job, ex);
    } else {
        respond_whole(*job, ex);
    }
}

std::vector<ChoiceSpec> Server::prepare(Job& job, const http::Request& req) {
    const Endpoint ep = job.ep;
    job.req = parse_request(ep, req.body, limits());
    GenRequest& r = job.req;
    if (r.model != cfg_.model_name) {
        bad_request("model",
                    fmt::format("the model '{}' does not exist; this server serves '{}'", r.model,
                                cfg_.model_name),
                    "model_not_found");
    }
    // Prompts to token ids.
    const io::Tokenizer& tok = *model_.tokenizer;
    std::vector<std::vector<int32_t>> prompts;
    if (ep == Endpoint::chat) {
        std::string text = infer::render_chat(model_.chat, r.messages, r.add_generation_prompt);
        prompts.push_back(tok.encode(text, false, true));
        job.prompt_texts.push_back(text);
    } else {
        for (const std::string& t : r.prompt_texts) {
            prompts.push_back(tok.encode(t, true, false));
            job.prompt_texts.push_back(t);
        }
        for (const auto& ids : r.prompt_ids) {
            prompts.push_back(ids);
            job.prompt_texts.push_back(r.echo ? tok.decode(std::span<const int32_t>(ids), false)
                                              : "");
        }
    }
    const char* pparam = ep == Endpoint::chat ? "messages" : "prompt";
    const int64_t ctx = std::min(model_.context, service_.kv_capacity_tokens());
    std::vector<ChoiceSpec> choices;
    const uint64_t base_seed =
        r.seed_given ? r.sampling.seed : ++seed_counter_ * 0x9E3779B97F4A7C15ull;
    for (const std::vector<int32_t>& prompt : prompts) {
        const auto n = static_cast<int64_t>(prompt.size());
        if (n == 0) bad_request(pparam, "the prompt is empty after tokenization");
        if (n >= ctx) {
            bad_request(pparam,
                        fmt::format("the prompt has {} tokens; this model's context is {} tokens "
                                    "(prompt + max_tokens must fit)",
                                    n, ctx),
                        "context_length_exceeded");
        }
        // max_tokens 0 (echo only): one token is generated and dropped, so the engine runs the
        // prompt's forward (and scores it).
        job.prompt_only = r.max_tokens && *r.max_tokens == 0;
        const int64_t max_tokens =
            job.prompt_only ? 1
                            : r.max_tokens.value_or(
                                  ep == Endpoint::chat ? ctx - n : std::min<int64_t>(16, ctx - n));
        if (n + max_tokens > ctx) {
            bad_request("max_tokens",
                        fmt::format("the prompt ({} tokens) + max_tokens ({}) exceed this model's "
                                    "context of {} tokens",
                                    n, max_tokens, ctx),
                        "context_length_exceeded");
        }
        job.prompt_lens.push_back(n);
        for (int j = 0; j < r.n; ++j) {
            ChoiceSpec c;
            c.prompt = prompt;
            c.options.sampling = r.sampling;
            c.options.sampling.seed = base_seed + static_cast<uint64_t>(choices.size());
            c.options.max_tokens = max_tokens;
            c.options.ignore_eos = r.ignore_eos;
            c.options.prompt_logprobs = r.echo && r.logprobs ? r.top_logprobs : -1;
            c.options.stop_token_ids = r.stop_token_ids;
            if (!r.ignore_eos) {
                c.options.stop_token_ids.insert(c.options.stop_token_ids.end(),
                                                model_.stop_ids.begin(), model_.stop_ids.end());
            }
            c.stop = r.stop;
            c.skip_special = r.skip_special_tokens;
            c.logprobs = r.logprobs;
            choices.push_back(std::move(c));
        }
    }
    job.results.resize(choices.size());
    job.text_offset.assign(choices.size(), 0);
    for (size_t i = 0; i < choices.size(); ++i) {
        const size_t p = i / static_cast<size_t>(r.n);
        job.results[i].index = static_cast<int>(i);
        job.results[i].n_prompt_tokens = job.prompt_lens[p];
        if (r.echo) job.results[i].text = job.prompt_texts[p];
    }
    job.id = random_id(ep == Endpoint::chat ? "chatcmpl-" : "cmpl-");
    job.created = static_cast<int64_t>(std::time(nullptr));
    job.model = cfg_.model_name;
    return choices;
}

namespace {
const ApiError kAborted{503, "the request was aborted: the server is shutting down", "server_error",
                        "", ""};
}

void Server::respond_whole(Job& job, const ExchangePtr& ex) {
    std::vector<Event> evs;
    while (job.channel->wait(evs, std::chrono::milliseconds(1000))) {
        for (Event& e : evs) {
            ChoiceResult& c = job.results[static_cast<size_t>(e.choice)];
            for (auto& l : e.prompt_logprobs) c.logprobs.push_back(std::move(l));
            if (job.prompt_only) {
                if (!e.finish_reason.empty()) c.finish_reason = "length";
                continue;
            }
            c.text += e.text;
            for (auto& l : e.logprobs) c.logprobs.push_back(std::move(l));
            c.n_output_tokens = e.n_output_tokens;
            if (!e.finish_reason.empty()) c.finish_reason = e.finish_reason;
        }
        evs.clear();
    }
    const char* route = route_of(job.ep);
    if (job.channel->aborted()) return answer_error(ex, route, kAborted);
    answer(ex, route, json_response(200, dump(job.body())));
}

// SSE chunks as the engine produces them, a keep-alive comment after each second of silence; a
// failed write (the client went away) cancels the request, which frees its KV blocks at once.
void Server::stream(Job& job, const ExchangePtr& ex) {
    const char* route = route_of(job.ep);
    const GenRequest& r = job.req;
    const bool chat = job.ep == Endpoint::chat;
    auto gone = [&] {
        service_.cancel(job.channel);
        metrics_.request_done(route, 499);  // client closed the stream
    };
    if (!ex->begin_stream(200, "text/event-stream",
                          {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}})) {
        return gone();
    }
    // The first chunk per choice: the assistant role (chat) or the echoed prompt.
    for (size_t i = 0; i < job.results.size(); ++i) {
        if (chat) {
            if (!ex->write(sse(chat_chunk(job.id, job.created, job.model, static_cast<int>(i),
                                          std::string(), true, nullptr, "")))) {
                return gone();
            }
        } else if (r.echo && !r.logprobs &&
                   !ex->write(
                       sse(completion_chunk(job.id, job.created, job.model, static_cast<int>(i),
                                            job.results[i].text, nullptr, 0, "")))) {
            return gone();
        }
    }
    // (With logprobs the echoed prompt goes out with its scores, in the choice's first event.)
    const auto keepalive = std::chrono::milliseconds(cfg_.keepalive_ms);
    auto last_write = std::chrono::steady_clock::now();
    std::vector<Event> evs;
    for (;;) {
        evs.clear();
        const bool more = job.channel->wait(evs, keepalive);
        for (Event& e : evs) {
            ChoiceResult& c = job.results[static_cast<size_t>(e.choice)];
            size_t& offset = job.text_offset[static_cast<size_t>(e.choice)];
            if (r.echo && r.logprobs && !e.prompt_logprobs.empty()) {
                if (!ex->write(sse(completion_chunk(job.id, job.created, job.model, e.choice,
                                                    c.text, &e.prompt_logprobs, 0, "")))) {
                    return gone();
                }
                for (const TokenLogprob& t : e.prompt_logprobs) offset += t.token.size();
            }
            if (job.prompt_only) {
                e.text.clear();
                e.logprobs.clear();
                if (!e.finish_reason.empty()) e.finish_reason = "length";
                if (e.finish_reason.empty()) continue;
            } else {
                c.n_output_tokens = e.n_output_tokens;
            }
            const std::vector<TokenLogprob>* lp = r.logprobs ? &e.logprobs : nullptr;
            const size_t chunk_offset = offset;
            for (const TokenLogprob& t : e.logprobs) offset += t.token.size();
            const json chunk = chat ? chat_chunk(job.id, job.created, job.model, e.choice,
                                                 e.text.empty() && !e.finish_reason.empty()
                                                     ? std::nullopt
                                                     : std::optional<std::string>(e.text),
                                                 false, lp, e.finish_reason)
                                    : completion_chunk(job.id, job.created, job.model, e.choice,
                                                       e.text, lp, chunk_offset, e.finish_reason);
            if (!ex->write(sse(chunk))) return gone();
            last_write = std::chrono::steady_clock::now();
        }
        if (job.channel->aborted()) {
            ex->write("data: " + dump(kAborted.to_json()) + "\n\n");
            ex->write("data: [DONE]\n\n");
            ex->end_stream();
            metrics_.request_done(route, 200);
            return;
        }
        if (!more) break;
        if (evs.empty() && std::chrono::steady_clock::now() - last_write >= keepalive) {
            // A comment line: clients ignore it; a vanished client makes it fail.
            if (!ex->write(": keep-alive\n\n")) return gone();
            last_write = std::chrono::steady_clock::now();
        }
    }
    if (r.include_usage &&
        !ex->write(sse(usage_chunk(job.ep, job.id, job.created, job.model, job.usage())))) {
        return gone();
    }
    if (!ex->write("data: [DONE]\n\n")) return gone();
    ex->end_stream();
    metrics_.request_done(route, 200);
}

namespace {
sigset_t shutdown_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    return set;
}
}  // namespace

void block_shutdown_signals() {
    sigset_t set = shutdown_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void serve_until_signal(Server& server, double shutdown_timeout_s) {
    block_shutdown_signals();
    sigset_t set = shutdown_signals();
    std::thread listener([&] { server.listen(); });
    std::thread waiter([&] {
        int sig = 0;
        sigwait(&set, &sig);
        log_info("serve: {} received", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        server.shutdown(shutdown_timeout_s);
    });
    listener.join();
    // listen() returned without a signal (e.g. a bind error): release the waiter.
    if (!server.draining()) {
        pthread_kill(waiter.native_handle(), SIGTERM);
    }
    waiter.join();
}

}  // namespace zs::serve
