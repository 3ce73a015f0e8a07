#include "serve/service.h"

#include <algorithm>
#include <future>
#include <unordered_map>

#include <fmt/format.h>

#include "base/error.h"
#include "base/log.h"
#include "infer/stop_filter.h"
#include "io/tokenizer_stream.h"

namespace zs::serve {

namespace {
// The engine config with the vocabulary's byte strings indexed for response_format's token masks
// (built once per model: ~20 ms and ~2 MB for a 50k vocabulary).
infer::EngineConfig with_token_index(infer::EngineConfig c, const io::Tokenizer& tok,
                                     int64_t vocab_size) {
    if (!c.token_index) c.token_index = infer::TokenIndex::from_tokenizer(tok, vocab_size);
    return c;
}
}  // namespace

bool Channel::wait(std::vector<Event>& out, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, timeout, [&] { return !events_.empty() || open_ == 0; });
    while (!events_.empty()) {
        out.push_back(std::move(events_.front()));
        events_.pop_front();
    }
    return open_ > 0 || !out.empty();
}

void Channel::push(Event e) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!e.finish_reason.empty()) --open_;
        events_.push_back(std::move(e));
    }
    cv_.notify_all();
}

void Channel::fail(std::string why) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        abort_reason_ = std::move(why);
        aborted_ = true;
        open_ = 0;
    }
    cv_.notify_all();
}

struct Service::Command {
    enum class Kind { submit, cancel, abort_all } kind = Kind::submit;
    std::shared_ptr<Channel> channel;
    std::vector<ChoiceSpec> choices;
    Clock::time_point arrival;
    std::string why;
    // submit's answer: nullopt once every choice is queued, else why none runs. The command itself
    // stays with the engine thread; submit() owns only the future.
    std::promise<std::optional<ApiError>> accepted;
};

// One running choice, as the engine thread sees it.
struct Service::Live {
    std::shared_ptr<Channel> channel;
    int choice = 0;
    io::StreamDecoder decoder;
    infer::StopFilter stops;
    bool logprobs = false;
    std::vector<int32_t> prompt;  // kept when the prompt is scored (prompt_logprobs)
    int64_t n_prompt = 0, n_output = 0;
    Clock::time_point arrival, first_token{}, last_token{};
    Live(const io::Tokenizer& tok, bool skip_special, std::vector<std::string> stop)
        : decoder(tok, skip_special, false), stops(std::move(stop)) {}
};

Service::Service(models::Transformer& model, const io::Tokenizer& tok, const ServiceConfig& cfg,
                 Metrics& metrics)
    : model_(model),
      tok_(tok),
      metrics_(metrics),
      engine_(std::make_unique<infer::Engine>(
          model, with_token_index(cfg.engine, tok, model.config().vocab_size))) {
    publish_gauges();
    thread_ = std::thread([this] { loop(); });
}

Service::~Service() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

int64_t Service::kv_capacity_tokens() const {
    // A sliding-window model holds only its window's blocks: unlimited when that fits the pool.
    return engine_->scheduler().max_seq_tokens();
}

std::shared_ptr<Channel> Service::submit(std::vector<ChoiceSpec> choices,
                                         Clock::time_point arrival) {
    auto cmd = std::make_unique<Command>();
    auto ch = std::make_shared<Channel>(static_cast<int>(choices.size()));
    cmd->kind = Command::Kind::submit;
    cmd->channel = ch;
    cmd->choices = std::move(choices);
    cmd->arrival = arrival;
    std::future<std::optional<ApiError>> accepted = cmd->accepted.get_future();
    active_ += 1;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) {
            active_ -= 1;
            throw ApiException(
                ApiError{503, "the server is shutting down", "server_error", "", ""});
        }
        commands_.push_back(std::move(cmd));
    }
    cv_.notify_all();
    // The engine thread answers within one step (or fails every command when it stops).
    std::optional<ApiError> err = accepted.get();
    if (err) {
        active_ -= 1;
        throw ApiException(*err);
    }
    return ch;
}

void Service::cancel(const std::shared_ptr<Channel>& ch) {
    auto cmd = std::make_unique<Command>();
    cmd->kind = Command::Kind::cancel;
    cmd->channel = ch;
    {
        std::lock_guard<std::mutex> lk(mu_);
        commands_.push_back(std::move(cmd));
    }
    cv_.notify_all();
}

void Service::abort_all(const std::string& why) {
    auto cmd = std::make_unique<Command>();
    cmd->kind = Command::Kind::abort_all;
    cmd->why = why;
    {
        std::lock_guard<std::mutex> lk(mu_);
        commands_.push_back(std::move(cmd));
    }
    cv_.notify_all();
}

void Service::loop() {
    for (;;) {
        std::deque<std::unique_ptr<Command>> cmds;
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return stop_ || !commands_.empty() || engine_->has_unfinished(); });
            if (stop_ && commands_.empty()) break;
            cmds.swap(commands_);
        }
        for (auto& c : cmds) {
            handle(*c);
        }
        if (!engine_->has_unfinished()) {
            publish_gauges();
            continue;
        }
        std::vector<infer::RequestOutput> outs;
        const Clock::time_point step_start = Clock::now();
        try {
            outs = engine_->step();
        } catch (const std::exception& e) {
            // A failed forward ends every request with an error rather than the process.
            log_error("engine step failed: {}", e.what());
            fail_all(fmt::format("engine error: {}", e.what()));
            publish_gauges();
            continue;
        }
        const infer::StepStats& st = engine_->last_step();
        for (const infer::RequestOutput& o : outs) on_output(o);
        if (st.n_tokens > 0) {
            metrics_.step(st.n_tokens, st.n_seqs, st.forward_seconds,
                          std::chrono::duration<double>(Clock::now() - step_start).count());
        }
        publish_gauges();
    }
    // Shutdown: nothing may wait forever on a channel or a submit.
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (auto& c : commands_) {
            if (c->kind == Command::Kind::submit) {
                c->accepted.set_value(ApiError{503, "the server stopped", "server_error", "", ""});
            }
        }
        commands_.clear();
    }
    for (auto& [id, l] : live_) l->channel->fail("the server stopped");
    live_.clear();
}

void Service::handle(Command& c) {
    if (c.kind == Command::Kind::submit) {
        std::vector<infer::RequestId> added;
        std::optional<ApiError> error;
        try {
            for (size_t i = 0; i < c.choices.size(); ++i) {
                ChoiceSpec& cs = c.choices[i];
                auto live = std::make_unique<Live>(tok_, cs.skip_special, cs.stop);
                live->channel = c.channel;
                live->choice = static_cast<int>(i);
                live->logprobs = cs.logprobs;
                live->n_prompt = static_cast<int64_t>(cs.prompt.size());
                if (cs.options.prompt_logprobs >= 0) live->prompt = cs.prompt;
                live->arrival = c.arrival;
                infer::RequestId id =
                    engine_->add_request(std::move(cs.prompt), std::move(cs.options));
                added.push_back(id);
                c.channel->ids_.push_back(id);
                live_[id] = std::move(live);
            }
        } catch (const ApiException& e) {
            error = e.error();
        } catch (const FieldError& e) {
            error = ApiError{400, e.what(), "invalid_request_error", e.field(), ""};
        } catch (const Error& e) {
            error = ApiError{400, e.what(), "invalid_request_error", "", ""};
        }
        if (error) {
            for (infer::RequestId id : added) {
                engine_->abort(id);
                live_.erase(id);
            }
        }
        c.accepted.set_value(std::move(error));
        return;
    }
    if (c.kind == Command::Kind::cancel) {
        bool any = false;
        for (infer::RequestId id : c.channel->ids_) {
            auto it = live_.find(id);
            if (it == live_.end()) continue;
            engine_->abort(id);
            live_.erase(it);
            any = true;
        }
        if (any) active_ -= 1;
        c.channel->ids_.clear();
        return;
    }
    fail_all(c.why);
}

void Service::fail_all(const std::string& why) {
    std::vector<std::shared_ptr<Channel>> chans;
    for (auto& [id, l] : live_) {
        engine_->abort(id);
        if (std::find(chans.begin(), chans.end(), l->channel) == chans.end()) {
            chans.push_back(l->channel);
        }
    }
    live_.clear();
    for (auto& ch : chans) {
        ch->fail(why);
        active_ -= 1;
    }
}

void Service::on_output(const infer::RequestOutput& out) {
    auto it = live_.find(out.id);
    if (it == live_.end()) return;
    Live& l = *it->second;
    Event ev;
    ev.choice = l.choice;
    const Clock::time_point now = Clock::now();
    auto token_logprob = [&](int32_t t, const infer::SampleResult* s) {
        TokenLogprob tl;
        tl.token = tok_.decode(std::span<const int32_t>(&t, 1), false);
        if (!s) {
            tl.unscored = true;
            return tl;
        }
        tl.logprob = s->logprob;
        for (const auto& [id, lp] : s->top) {
            tl.top.emplace_back(tok_.decode(std::span<const int32_t>(&id, 1), false), lp);
        }
        return tl;
    };
    if (!l.prompt.empty() && l.n_output == 0) {  // the choice's first event
        for (size_t i = 0; i < l.prompt.size(); ++i) {
            ev.prompt_logprobs.push_back(token_logprob(
                l.prompt[i],
                i == 0 || i > out.prompt_samples.size() ? nullptr : &out.prompt_samples[i - 1]));
        }
    }
    bool stopped = false;
    for (size_t k = 0; k < out.new_tokens.size() && !stopped; ++k) {
        const int32_t t = out.new_tokens[k];
        if (l.n_output == 0) l.first_token = now;
        l.last_token = now;
        ++l.n_output;
        std::string piece = l.decoder.push(t);
        ev.text += l.stops.push(piece, stopped);
        if (l.logprobs && k < out.new_samples.size()) {
            ev.logprobs.push_back(token_logprob(t, &out.new_samples[k]));
        }
    }
    ev.n_prompt_tokens = l.n_prompt;
    ev.n_output_tokens = l.n_output;
    if (stopped) {
        engine_->finish(out.id, infer::FinishReason::stop);
        ev.finish_reason = "stop";
    } else if (out.finished) {
        // A constrained generation that can no longer continue (response_format) did not end
        // its value: "length", so "stop" keeps meaning the output parses.
        ev.finish_reason = out.finish_reason == infer::FinishReason::length ||
                                   out.finish_reason == infer::FinishReason::constraint
                               ? "length"
                               : "stop";
        // A generation cut by max_tokens inside a character ends before it (no U+FFFD).
        l.decoder.drop_incomplete();
        ev.text += l.stops.flush();
    }
    const bool done = !ev.finish_reason.empty();
    if (done) {
        const double ttft =
            l.n_output > 0 ? std::chrono::duration<double>(l.first_token - l.arrival).count() : -1;
        const double tpot =
            l.n_output > 1 ? std::chrono::duration<double>(l.last_token - l.first_token).count() /
                                 static_cast<double>(l.n_output - 1)
                           : 0;
        metrics_.choice_done(l.n_prompt, l.n_output, ttft, tpot,
                             std::chrono::duration<double>(now - l.arrival).count());
    }
    std::shared_ptr<Channel> ch = l.channel;
    if (ev.text.empty() && ev.logprobs.empty() && ev.prompt_logprobs.empty() && !done) return;
    if (done) {
        live_.erase(it);
        // The request leaves the engine once its last choice is done.
        bool last = true;
        for (infer::RequestId id : ch->ids_) last = last && !live_.count(id);
        if (last) active_ -= 1;
    }
    ch->push(std::move(ev));
}

void Service::publish_gauges() {
    EngineGauges g;
    const infer::StepStats& st = engine_->last_step();
    g.waiting = static_cast<int64_t>(engine_->scheduler().n_waiting());
    g.running = static_cast<int64_t>(engine_->scheduler().n_running());
    g.kv_blocks_total = engine_->kv_pool().n_blocks();
    g.kv_blocks_free = engine_->kv_pool().n_free();
    g.kv_blocks_used = engine_->kv_pool().n_used();
    infer::EngineCounters c = engine_->counters();
    g.steps = c.n_steps;
    g.preemptions = c.n_preemptions;
    g.prefix_cache_hit_tokens = c.n_cached_prompt_tokens;
    (void)st;
    metrics_.set_gauges(g);
}

}  // namespace zs::serve
