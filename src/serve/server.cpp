#include "serve/server.h"

#include <csignal>
#include <ctime>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <pthread.h>
#include <sys/socket.h>

#include "base/error.h"
#include "base/log.h"

namespace zs::serve {

using nlohmann::json;

namespace {

constexpr const char* kJson = "application/json";

void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(dump(e.to_json()), kJson);
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

// One accepted generation request: its choices' accumulated results and the stream state.
struct Job {
    GenRequest req;
    std::shared_ptr<Channel> channel;
    std::vector<std::string> prompt_texts;  // for echo
    std::vector<int64_t> prompt_lens;
    std::vector<ChoiceResult> results;
    std::vector<bool> started;        // stream: role chunk sent (chat)
    std::vector<size_t> text_offset;  // stream: bytes of the tokens sent so far, per choice
    std::string id;
    int64_t created = 0;
    std::string model;
    bool finished = false;
    std::chrono::steady_clock::time_point last_write;

    Usage usage() const {
        Usage u;
        for (size_t i = 0; i < results.size(); ++i) {
            u.completion_tokens += results[i].n_output_tokens;
        }
        for (int64_t n : prompt_lens) u.prompt_tokens += n;
        return u;
    }
};

}  // namespace

Server::Server(Service& service, ModelInfo model, ServerConfig cfg, Metrics& metrics)
    : service_(service),
      model_(std::move(model)),
      cfg_(std::move(cfg)),
      metrics_(metrics),
      http_(std::make_unique<httplib::Server>()),
      created_(static_cast<int64_t>(std::time(nullptr))) {
    const int threads = cfg_.http_threads > 0
                            ? cfg_.http_threads
                            : static_cast<int>(cfg_.max_running + cfg_.max_queued + 16);
    http_->new_task_queue = [threads] {
        return new httplib::ThreadPool(static_cast<size_t>(threads));
    };
    // Debian's libcpp-httplib is built with a listen backlog of 5, which drops connections under a
    // burst (the 200-stream soak); remember the listening socket and raise its backlog after bind.
    http_->set_socket_options([this](int sock) {
        httplib::default_socket_options(sock);
        listen_fd_ = sock;
    });
    http_->set_tcp_nodelay(true);
    http_->set_payload_max_length(cfg_.max_body_bytes);
    http_->set_read_timeout(cfg_.read_timeout_s, 0);
    http_->set_write_timeout(30, 0);
    http_->set_keep_alive_timeout(5);
    routes();
}

Server::~Server() { stop(); }

int Server::bind() {
    if (cfg_.port == 0) {
        port_ = http_->bind_to_any_port(cfg_.host);
        ZS_CHECK_T(IoError, port_ > 0, "serve: cannot bind {} (any port)", cfg_.host);
    } else {
        ZS_CHECK_T(IoError, http_->bind_to_port(cfg_.host, cfg_.port),
                   "serve: cannot bind {}:{} (in use, or not an address of this machine)",
                   cfg_.host, cfg_.port);
        port_ = cfg_.port;
    }
    if (listen_fd_ >= 0) ::listen(listen_fd_, 4096);
    return port_;
}

void Server::listen() { http_->listen_after_bind(); }

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

bool Server::authorized(const void* r) const {
    if (cfg_.api_key.empty()) return true;
    const auto& req = *static_cast<const httplib::Request*>(r);
    std::string h = req.get_header_value("Authorization");
    const std::string bearer = "Bearer ";
    if (h.size() < bearer.size()) return false;
    for (size_t i = 0; i < bearer.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(h[i])) !=
            std::tolower(static_cast<unsigned char>(bearer[i]))) {
            return false;
        }
    }
    return same_key(h.substr(bearer.size()), cfg_.api_key);
}

void Server::routes() {
    httplib::Server& s = *http_;
    auto unauthorized = [](httplib::Response& res) {
        send_error(res, ApiError{401, "missing or invalid API key (Authorization: Bearer <key>)",
                                 "invalid_request_error", "", "invalid_api_key"});
    };

    s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
        res.set_content(R"({"status":"ok"})", kJson);
        metrics_.request_done("/health", 200);
    });
    s.Get("/ready", [this, unauthorized](const httplib::Request& req, httplib::Response& res) {
        if (!authorized(&req)) return unauthorized(res);
        if (draining_) {
            res.status = 503;
            res.set_content(R"({"status":"draining"})", kJson);
        } else {
            res.set_content(R"({"status":"ready"})", kJson);
        }
        metrics_.request_done("/ready", res.status);
    });
    s.Get("/metrics", [this, unauthorized](const httplib::Request& req, httplib::Response& res) {
        if (!authorized(&req)) return unauthorized(res);
        metrics_.set_http_inflight(inflight_.load());
        res.set_content(metrics_.render(), "text/plain; version=0.0.4");
    });
    auto model_obj = [this] {
        return json{{"id", cfg_.model_name},
                    {"object", "model"},
                    {"created", created_},
                    {"owned_by", "zerospeed"}};
    };
    s.Get("/v1/models",
          [this, unauthorized, model_obj](const httplib::Request& req, httplib::Response& res) {
              if (!authorized(&req)) return unauthorized(res);
              res.set_content(dump(json{{"object", "list"}, {"data", json::array({model_obj()})}}),
                              kJson);
              metrics_.request_done("/v1/models", 200);
          });
    s.Get(R"(/v1/models/(.+))",
          [this, unauthorized, model_obj](const httplib::Request& req, httplib::Response& res) {
              if (!authorized(&req)) return unauthorized(res);
              if (req.matches[1] != cfg_.model_name) {
                  send_error(res, ApiError{404,
                                           fmt::format("the model '{}' does not exist",
                                                       std::string(req.matches[1])),
                                           "invalid_request_error", "model", "model_not_found"});
              } else {
                  res.set_content(dump(model_obj()), kJson);
              }
              metrics_.request_done("/v1/models", res.status);
          });

    auto generate = [this, unauthorized](Endpoint ep, const httplib::Request& req,
                                         httplib::Response& res) {
        const auto arrival = std::chrono::steady_clock::now();
        const char* route = ep == Endpoint::chat ? "/v1/chat/completions" : "/v1/completions";
        if (draining_) {
            send_error(res, ApiError{503, "the server is shutting down", "server_error", "", ""});
            metrics_.request_done(route, 503);
            return;
        }
        if (!authorized(&req)) {
            unauthorized(res);
            metrics_.request_done(route, 401);
            return;
        }
        // Capacity first: nothing is parsed or tokenized for a request we cannot take.
        const int64_t capacity = cfg_.max_running + cfg_.max_queued;
        if (inflight_.fetch_add(1) >= capacity) {
            inflight_ -= 1;
            res.set_header("Retry-After", "1");
            send_error(res, ApiError{429,
                                     fmt::format("the server is at capacity ({} requests); "
                                                 "retry later",
                                                 capacity),
                                     "rate_limit_exceeded", "", "server_overloaded"});
            metrics_.request_done(route, 429);
            return;
        }
        auto job = std::make_shared<Job>();
        bool streaming = false;
        try {
            ParseLimits lim;
            lim.max_body_bytes = cfg_.max_body_bytes;
            lim.vocab_size = model_.vocab_size;
            job->req = parse_request(ep, req.body, lim);
            GenRequest& r = job->req;
            if (r.model != cfg_.model_name) {
                bad_request("model",
                            fmt::format("the model '{}' does not exist; this server serves '{}'",
                                        r.model, cfg_.model_name),
                            "model_not_found");
            }
            // Prompts to token ids.
            const io::Tokenizer& tok = *model_.tokenizer;
            std::vector<std::vector<int32_t>> prompts;
            if (ep == Endpoint::chat) {
                std::string text =
                    infer::render_chat(model_.chat, r.messages, r.add_generation_prompt);
                prompts.push_back(tok.encode(text, false, true));
                job->prompt_texts.push_back(text);
            } else {
                for (const std::string& t : r.prompt_texts) {
                    prompts.push_back(tok.encode(t, true, false));
                    job->prompt_texts.push_back(t);
                }
                for (const auto& ids : r.prompt_ids) {
                    prompts.push_back(ids);
                    job->prompt_texts.push_back(
                        r.echo ? tok.decode(std::span<const int32_t>(ids), false) : "");
                }
            }
            const char* pparam = ep == Endpoint::chat ? "messages" : "prompt";
            const int64_t ctx = std::min(model_.context, service_.kv_capacity_tokens());
            std::vector<ChoiceSpec> choices;
            uint64_t base_seed =
                r.seed_given ? r.sampling.seed : ++seed_counter_ * 0x9E3779B97F4A7C15ull;
            for (size_t p = 0; p < prompts.size(); ++p) {
                const auto n = static_cast<int64_t>(prompts[p].size());
                if (n == 0) bad_request(pparam, "the prompt is empty after tokenization");
                if (n >= ctx) {
                    bad_request(pparam,
                                fmt::format("the prompt has {} tokens; this model's context is {} "
                                            "tokens (prompt + max_tokens must fit)",
                                            n, ctx),
                                "context_length_exceeded");
                }
                int64_t max_tokens = r.max_tokens.value_or(
                    ep == Endpoint::chat ? ctx - n : std::min<int64_t>(16, ctx - n));
                if (n + max_tokens > ctx) {
                    bad_request("max_tokens",
                                fmt::format("the prompt ({} tokens) + max_tokens ({}) exceed this "
                                            "model's context of {} tokens",
                                            n, max_tokens, ctx),
                                "context_length_exceeded");
                }
                job->prompt_lens.push_back(n);
                for (int j = 0; j < r.n; ++j) {
                    ChoiceSpec c;
                    c.prompt = prompts[p];
                    c.options.sampling = r.sampling;
                    c.options.sampling.seed = base_seed + static_cast<uint64_t>(choices.size());
                    c.options.max_tokens = max_tokens;
                    c.options.ignore_eos = r.ignore_eos;
                    c.options.stop_token_ids = r.stop_token_ids;
                    if (!r.ignore_eos) {
                        c.options.stop_token_ids.insert(c.options.stop_token_ids.end(),
                                                        model_.stop_ids.begin(),
                                                        model_.stop_ids.end());
                    }
                    c.stop = r.stop;
                    c.skip_special = r.skip_special_tokens;
                    c.logprobs = r.logprobs;
                    choices.push_back(std::move(c));
                }
            }
            job->results.resize(choices.size());
            job->started.assign(choices.size(), false);
            job->text_offset.assign(choices.size(), 0);
            for (size_t i = 0; i < choices.size(); ++i) {
                job->results[i].index = static_cast<int>(i);
                job->results[i].n_prompt_tokens = job->prompt_lens[i / static_cast<size_t>(r.n)];
                if (r.echo) job->results[i].text = job->prompt_texts[i / static_cast<size_t>(r.n)];
            }
            job->id = random_id(ep == Endpoint::chat ? "chatcmpl-" : "cmpl-");
            job->created = static_cast<int64_t>(std::time(nullptr));
            job->model = cfg_.model_name;
            job->channel = service_.submit(std::move(choices), arrival);
            streaming = r.stream;
        } catch (const ApiException& e) {
            inflight_ -= 1;
            send_error(res, e.error());
            metrics_.request_done(route, e.error().status);
            return;
        } catch (const std::exception& e) {
            inflight_ -= 1;
            send_error(res, ApiError{400, e.what(), "invalid_request_error", "", ""});
            metrics_.request_done(route, 400);
            return;
        }

        if (!streaming) {
            std::vector<Event> evs;
            while (job->channel->wait(evs, std::chrono::milliseconds(1000))) {
                for (Event& e : evs) {
                    ChoiceResult& c = job->results[static_cast<size_t>(e.choice)];
                    c.text += e.text;
                    for (auto& l : e.logprobs) c.logprobs.push_back(std::move(l));
                    c.n_output_tokens = e.n_output_tokens;
                    if (!e.finish_reason.empty()) c.finish_reason = e.finish_reason;
                }
                evs.clear();
            }
            if (job->channel->aborted()) {
                send_error(res,
                           ApiError{503, "the request was aborted: the server is shutting down",
                                    "server_error", "", ""});
            } else {
                json body =
                    ep == Endpoint::chat
                        ? chat_response(job->id, job->created, job->model, job->results,
                                        job->usage(), job->req.logprobs)
                        : completion_response(job->id, job->created, job->model, job->results,
                                              job->usage(), job->req.logprobs);
                res.set_content(dump(body), kJson);
            }
            inflight_ -= 1;
            metrics_.request_done(route, res.status);
            return;
        }

        // Streaming: SSE chunks as the engine produces them.
        res.set_header("Cache-Control", "no-cache");
        res.set_header("X-Accel-Buffering", "no");
        job->last_write = std::chrono::steady_clock::now();
        const int keepalive_ms = cfg_.keepalive_ms;
        auto provider = [job, ep, keepalive_ms](size_t, httplib::DataSink& sink) {
            auto write = [&](const std::string& text) {
                job->last_write = std::chrono::steady_clock::now();
                return sink.write(text.data(), text.size());
            };
            const GenRequest& r = job->req;
            const bool chat = ep == Endpoint::chat;
            if (chat) {
                for (size_t i = 0; i < job->started.size(); ++i) {
                    if (job->started[i]) continue;
                    job->started[i] = true;
                    if (!write(
                            sse(chat_chunk(job->id, job->created, job->model, static_cast<int>(i),
                                           std::string(), true, nullptr, "")))) {
                        return false;
                    }
                }
            } else if (r.echo) {
                for (size_t i = 0; i < job->started.size(); ++i) {
                    if (job->started[i]) continue;
                    job->started[i] = true;
                    if (!write(sse(completion_chunk(job->id, job->created, job->model,
                                                    static_cast<int>(i), job->results[i].text,
                                                    nullptr, 0, "")))) {
                        return false;
                    }
                }
            }
            std::vector<Event> evs;
            const bool more = job->channel->wait(evs, std::chrono::milliseconds(keepalive_ms));
            for (Event& e : evs) {
                ChoiceResult& c = job->results[static_cast<size_t>(e.choice)];
                c.n_output_tokens = e.n_output_tokens;
                const std::vector<TokenLogprob>* lp = r.logprobs ? &e.logprobs : nullptr;
                size_t& offset = job->text_offset[static_cast<size_t>(e.choice)];
                const size_t chunk_offset = offset;
                for (const TokenLogprob& t : e.logprobs) offset += t.token.size();
                json chunk = chat ? chat_chunk(job->id, job->created, job->model, e.choice,
                                               e.text.empty() && !e.finish_reason.empty()
                                                   ? std::nullopt
                                                   : std::optional<std::string>(e.text),
                                               false, lp, e.finish_reason)
                                  : completion_chunk(job->id, job->created, job->model, e.choice,
                                                     e.text, lp, chunk_offset, e.finish_reason);
                if (!write(sse(chunk))) return false;
            }
            if (job->channel->aborted()) {
                ApiError err{503, "the request was aborted: the server is shutting down",
                             "server_error", "", ""};
                write("data: " + dump(err.to_json()) + "\n\n");
                write("data: [DONE]\n\n");
                job->finished = true;
                sink.done();
                return true;
            }
            if (!more) {
                if (r.include_usage &&
                    !write(sse(usage_chunk(ep, job->id, job->created, job->model, job->usage())))) {
                    return false;
                }
                if (!write("data: [DONE]\n\n")) return false;
                job->finished = true;
                sink.done();
                return true;
            }
            if (evs.empty() && std::chrono::steady_clock::now() - job->last_write >=
                                   std::chrono::milliseconds(keepalive_ms)) {
                // A comment line: clients ignore it; a vanished client makes it fail.
                if (!write(": keep-alive\n\n")) return false;
            }
            return true;
        };
        auto releaser = [this, job, route](bool) {
            if (!job->finished) {
                service_.cancel(job->channel);
                metrics_.request_done(route, 499);  // client closed the stream
            } else {
                metrics_.request_done(route, 200);
            }
            inflight_ -= 1;
        };
        if (req.version == "HTTP/1.0") {
            // HTTP/1.0 has no chunked encoding: the stream is the body up to the closed
            // connection.
            res.set_header("Connection", "close");
            res.set_content_provider("text/event-stream", std::move(provider), std::move(releaser));
        } else {
            res.set_chunked_content_provider("text/event-stream", std::move(provider),
                                             std::move(releaser));
        }
    };
    // vLLM's tokenizer endpoints: the model's own tokenizer and chat template.
    auto with_limits = [this] {
        ParseLimits lim;
        lim.max_body_bytes = cfg_.max_body_bytes;
        lim.vocab_size = model_.vocab_size;
        return lim;
    };
    s.Post("/tokenize",
           [this, unauthorized, with_limits](const httplib::Request& req, httplib::Response& res) {
               if (!authorized(&req)) return unauthorized(res);
               try {
                   const TokenizeRequest t = parse_tokenize(req.body, with_limits());
                   const io::Tokenizer& tok = *model_.tokenizer;
                   std::vector<int32_t> ids =
                       t.chat ? tok.encode(infer::render_chat(model_.chat, t.messages,
                                                              t.add_generation_prompt),
                                           t.add_special_tokens, true)
                              : tok.encode(t.prompt, t.add_special_tokens, false);
                   json strs = json::array();
                   for (int32_t id : ids) strs.push_back(tok.id_to_token(id));
                   res.set_content(dump(json{{"count", ids.size()},
                                             {"max_model_len", model_.context},
                                             {"tokens", ids},
                                             {"token_strs", strs}}),
                                   kJson);
                   metrics_.request_done("/tokenize", 200);
               } catch (const ApiException& e) {
                   send_error(res, e.error());
                   metrics_.request_done("/tokenize", e.error().status);
               } catch (const Error& e) {
                   send_error(res, ApiError{400, e.what(), "invalid_request_error", "", ""});
                   metrics_.request_done("/tokenize", 400);
               }
           });
    s.Post("/detokenize", [this, unauthorized, with_limits](const httplib::Request& req,
                                                            httplib::Response& res) {
        if (!authorized(&req)) return unauthorized(res);
        try {
            const std::vector<int32_t> ids = parse_detokenize(req.body, with_limits());
            res.set_content(dump(json{{"prompt", model_.tokenizer->decode(ids, false)}}), kJson);
            metrics_.request_done("/detokenize", 200);
        } catch (const ApiException& e) {
            send_error(res, e.error());
            metrics_.request_done("/detokenize", e.error().status);
        }
    });
    s.Post("/v1/completions", [generate](const httplib::Request& req, httplib::Response& res) {
        generate(Endpoint::completions, req, res);
    });
    s.Post("/v1/chat/completions", [generate](const httplib::Request& req, httplib::Response& res) {
        generate(Endpoint::chat, req, res);
    });

    s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return;
        ApiError e;
        e.status = res.status;
        if (res.status == 404) {
            e.message = fmt::format("no route {} {}", req.method, req.path);
            e.code = "not_found";
        } else if (res.status == 413) {
            e.message = "the request body is too large";
            e.code = "payload_too_large";
        } else if (res.status == 400) {
            // cpp-httplib answers 400 itself when the body cannot be read whole.
            const std::string cl = req.get_header_value("Content-Length");
            e.message = cl.empty() ? "the request could not be read (malformed HTTP)"
                                   : fmt::format(
                                         "the request body ended before the {} bytes its "
                                         "Content-Length announced (or was not received in time)",
                                         cl);
            e.code = "invalid_request";
        } else {
            e.message = fmt::format("HTTP {}", res.status);
        }
        send_error(res, e);
    });
    s.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
            std::string what = "internal error";
            try {
                if (ep) std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                what = e.what();
            } catch (...) {
            }
            send_error(res, ApiError{500, what, "server_error", "", ""});
        });
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
