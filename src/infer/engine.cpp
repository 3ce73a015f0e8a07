// Engine: request validation, the ragged batch build, sampling and stop conditions.
#include "infer/engine.h"

#include <algorithm>
#include <cstdlib>
#include <exception>

#include <omp.h>

#include "base/error.h"
#include "base/log.h"
#include "base/timer.h"
#include "infer/json_constraint.h"
#include "infer/tp_forward.h"

namespace zs::infer {

KvCacheSpec kv_cache_spec(const models::Transformer& model, const EngineConfig& cfg) {
    const models::ModelConfig& mc = model.local_config();  // this rank's KV heads
    return cfg.kv_blocks > 0 ? KvCacheSpec::for_blocks(mc, cfg.kv_blocks, cfg.block_size,
                                                       cfg.kv_dtype, cfg.kv_quant)
                             : KvCacheSpec::for_memory(mc, cfg.kv_cache_bytes, cfg.block_size,
                                                       cfg.kv_dtype, cfg.kv_quant);
}

Engine::Engine(models::Transformer& model, const EngineConfig& cfg) : model_(model), cfg_(cfg) {
    const models::ModelConfig& mc = model.config();
    if (cfg_.tp && cfg_.tp->size() == 1) cfg_.tp = nullptr;
    ZS_CHECK_T(ConfigError,
               !cfg_.tp || (cfg_.tp->rank() == 0 && model.tp_size() == cfg_.tp->size()),
               "engine: tensor-parallel serving runs the engine on rank 0 of a model sharded "
               "over the same group (rank {}, model tp {}, group of {})",
               cfg_.tp ? cfg_.tp->rank() : 0, model.tp_size(), cfg_.tp ? cfg_.tp->size() : 1);
    if (cfg_.ep && cfg_.ep->size() == 1) cfg_.ep = nullptr;
    ZS_CHECK_T(ConfigError,
               !cfg_.ep || !cfg_.tp ||
                   (cfg_.tp_ep && cfg_.tp_ep->rank() == 0 &&
                    cfg_.tp_ep->size() == cfg_.tp->size() * cfg_.ep->size()),
               "engine: expert- and tensor-parallel serving together runs the engine on rank 0 of "
               "a group of tp x ep ranks (EngineConfig::tp_ep)");
    ZS_CHECK_T(ConfigError,
               !cfg_.ep || (cfg_.ep->rank() == 0 && model.ep_size() == cfg_.ep->size()),
               "engine: expert-parallel serving runs the engine on rank 0 of a model whose "
               "experts are sharded over the same group (rank {}, model ep {}, group of {})",
               cfg_.ep ? cfg_.ep->rank() : 0, model.ep_size(), cfg_.ep ? cfg_.ep->size() : 1);
    ZS_CHECK_T(ConfigError, !cfg_.weight_hooks || (!cfg_.tp && !cfg_.ep),
               "engine: streamed weights (--offload-weights) with tensor- or expert-parallel "
               "serving are not implemented");
    followers_ = cfg_.tp && cfg_.ep ? cfg_.tp_ep : cfg_.tp ? cfg_.tp : cfg_.ep;
    // Every ep rank runs this engine's batches: each dispatches only its slice of the rows.
    if (cfg_.ep) model_.set_ep_replicated_inputs(true);
    const KvCacheSpec spec = kv_cache_spec(model, cfg_);
    pool_ = std::make_unique<KvBlockPool>(spec);
    if (followers_) tp_send_handshake(*followers_, spec);
    scheduler_ = std::make_unique<Scheduler>(cfg.scheduler, *pool_, shared_kv_window(mc));
    attn_ = std::make_unique<PagedKvAttention>(*pool_);
    if (cfg_.tune_threads && !cfg_.tp) tuner_ = std::make_unique<ThreadTuner>();
    for (int64_t e : mc.eos_token_ids) eos_ids_.push_back(static_cast<int32_t>(e));
}

Engine::~Engine() {
    if (!followers_) return;
    try {
        tp_send_stop(*followers_);
    } catch (const std::exception& e) {
        log_error("engine: stopping the {}-parallel ranks failed: {}",
                  cfg_.tp ? "tensor" : "expert", e.what());
    }
}

RequestId Engine::add_request(std::vector<int32_t> prompt, RequestOptions opts) {
    const models::ModelConfig& mc = model_.config();
    const auto n = static_cast<int64_t>(prompt.size());
    ZS_CHECK_FIELD(n > 0, "prompt", "prompt: must hold at least one token");
    for (int64_t i = 0; i < n; ++i) {
        const int32_t t = prompt[static_cast<size_t>(i)];
        ZS_CHECK_FIELD(t >= 0 && t < mc.vocab_size, "prompt",
                       "prompt: token {} at index {} is outside the vocabulary [0, {})", t, i,
                       mc.vocab_size);
    }
    ZS_CHECK_FIELD(opts.max_tokens >= 1, "max_tokens", "max_tokens: must be >= 1 (got {})",
                   opts.max_tokens);
    ZS_CHECK_FIELD(
        n + opts.max_tokens <= mc.max_positions, "max_tokens",
        "max_tokens: prompt ({} tokens) + max_tokens ({}) exceed the model's context of {} "
        "tokens",
        n, opts.max_tokens, mc.max_positions);
    const int64_t capacity = scheduler_->max_seq_tokens();
    ZS_CHECK_FIELD(
        n + opts.max_tokens <= capacity, "max_tokens",
        "max_tokens: prompt ({} tokens) + max_tokens ({}) exceed the KV cache's {} tokens", n,
        opts.max_tokens, capacity);
    ZS_CHECK_FIELD(opts.prompt_logprobs <= 20, "logprobs",
                   "logprobs: at most 20 alternatives per prompt token (got {})",
                   opts.prompt_logprobs);
    if (opts.sampling.grammar) {
        ZS_CHECK_FIELD(
            cfg_.token_index != nullptr, "response_format",
            "response_format: this engine has no token bytes (EngineConfig::token_index), "
            "so it cannot constrain the output");
        ZS_CHECK_FIELD(cfg_.token_index->size() <= mc.vocab_size, "response_format",
                       "response_format: the token index has {} tokens, the model {}",
                       cfg_.token_index->size(), mc.vocab_size);
    }
    const RequestId id = next_id_++;
    // The Sampler constructor validates the sampling parameters (ConfigError).
    auto seq = std::make_unique<Sequence>(id, std::move(prompt), std::move(opts), mc.vocab_size);
    seq->tokens.reserve(static_cast<size_t>(n + seq->opts.max_tokens));
    scheduler_->add(std::move(seq));
    ++totals_.n_requests;
    return id;
}

bool Engine::finish(RequestId id, FinishReason reason) {
    std::unique_ptr<Sequence> s = scheduler_->finish(id, reason);
    if (!s) return false;
    ++totals_.n_finished;
    return true;
}

EngineCounters Engine::counters() const {
    EngineCounters c = totals_;
    c.n_preemptions = scheduler_->n_preemptions();
    c.n_cached_prompt_tokens = scheduler_->n_prefix_hit_tokens();
    return c;
}

RequestOutput Engine::output_of(const Sequence& s) const {
    RequestOutput o;
    o.id = s.id;
    o.n_prompt_tokens = s.prompt_len;
    o.n_output_tokens = s.n_output();
    o.n_cached_prompt_tokens = s.n_cached_prompt;
    return o;
}

RequestOutput Engine::finish_seq(Sequence& s, FinishReason reason) {
    RequestOutput o = output_of(s);
    o.finished = true;
    o.finish_reason = reason;
    finish(s.id, reason);
    return o;
}

bool Engine::ends_sequence(const Sequence& s, int32_t token) const {
    const RequestOptions& o = s.opts;
    if (!o.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end()) {
        return true;
    }
    return std::find(o.stop_token_ids.begin(), o.stop_token_ids.end(), token) !=
           o.stop_token_ids.end();
}

FinishReason Engine::stop_reason(const Sequence& s, int32_t token) const {
    if (ends_sequence(s, token)) return FinishReason::stop;
    // The constrained value is complete: nothing but EOS could follow, so end here.
    if (s.matcher && s.matcher->done()) return FinishReason::stop;
    if (s.n_output() >= s.opts.max_tokens) return FinishReason::length;
    return FinishReason::none;
}

bool Engine::constraint_mask(Sequence& s) {
    const int64_t V = model_.config().vocab_size;
    mask_.assign(static_cast<size_t>(V), 0);
    int64_t n = s.matcher->fill_mask(*cfg_.token_index, mask_.data());
    // Tokens that end the sequence: only once a complete value exists, whatever their bytes.
    const uint8_t can_end = s.matcher->can_end() ? 1 : 0;
    auto set_enders = [&](const std::vector<int32_t>& ids) {
        for (int32_t t : ids) {
            if (t < 0 || t >= V) continue;
            n += static_cast<int64_t>(can_end) - mask_[static_cast<size_t>(t)];
            mask_[static_cast<size_t>(t)] = can_end;
        }
    };
    if (!s.opts.ignore_eos) set_enders(eos_ids_);
    set_enders(s.opts.stop_token_ids);
    return n > 0;
}

std::vector<RequestOutput> Engine::step() {
    Batch b = scheduler_->schedule();
    last_ = StepStats{};
    last_.n_seqs = static_cast<int64_t>(b.seqs.size());
    last_.n_tokens = b.n_tokens;
    last_.n_prefill_tokens = b.n_prefill_tokens;
    last_.n_decode_tokens = b.n_decode_tokens;
    last_.n_preempted = b.n_preempted;
    std::vector<RequestOutput> outputs;
    if (!b.empty()) {
        ++totals_.n_steps;
        totals_.n_prompt_tokens += b.n_prefill_tokens;
        // The ragged batch: each sequence's tokens as one run of rows (paged_attention.h).
        const int64_t N = b.n_tokens;
        Tensor ids =
            Tensor::empty({N}, DType::i32, core::Device::cpu(), core::MemCategory::buffers);
        Tensor pos =
            Tensor::empty({N}, DType::i32, core::Device::cpu(), core::MemCategory::buffers);
        auto* idp = ids.data<int32_t>();
        auto* pp = pos.data<int32_t>();
        std::vector<SeqSlice> slices;
        std::vector<int64_t> logit_rows;
        // Prompt positions to score (prompt_logprobs): their logits rows follow the sampled ones.
        struct PromptRow {
            Sequence* seq;
            int64_t pos;  // scores prompt token pos + 1
            int64_t row;
        };
        std::vector<PromptRow> prompt_rows;
        int64_t row = 0;
        for (const ScheduledSeq& e : b.seqs) {
            if (e.seq->opts.prompt_logprobs >= 0) {
                for (int64_t p = e.pos; p < e.pos + e.n_tokens && p + 1 < e.seq->prompt_len; ++p) {
                    prompt_rows.push_back({e.seq, p, row + (p - e.pos)});
                }
            }
            for (int64_t i = 0; i < e.n_tokens; ++i) {
                idp[row + i] = e.seq->tokens[static_cast<size_t>(e.pos + i)];
                pp[row + i] = static_cast<int32_t>(e.pos + i);
            }
            slices.push_back({row, e.n_tokens, e.pos, e.seq->blocks});
            if (e.sample) logit_rows.push_back(row + e.n_tokens - 1);
            row += e.n_tokens;
        }
        const auto n_sampled = static_cast<int64_t>(logit_rows.size());
        for (const PromptRow& pr : prompt_rows) logit_rows.push_back(pr.row);
        attn_->set_batch(std::move(slices));
        Tensor logits;
        // Decode-only steps are comparable from one to the next: they drive the thread count.
        const bool timed = tuner_ && b.n_prefill_tokens == 0;
        if (timed) {
            tuner_->begin_step();
        } else if (tuner_) {
            omp_set_num_threads(tuner_->threads());
        }
        Timer timer;
        try {
            if (followers_) tp_send_forward(*followers_, ids, pos, attn_->batch(), logit_rows);
            logits = model_.forward_tokens(ids, pos, *attn_, logit_rows, cfg_.weight_hooks);
        } catch (const std::exception& ex) {
            if (followers_) {
                // The other ranks are inside this forward's collectives: no step can follow.
                log_error("engine step failed under {} parallelism: {}; stopping",
                          cfg_.tp ? "tensor" : "expert", ex.what());
                std::abort();
            }
            // The batch's KV state is now unknown: end its requests, keep the engine serving.
            log_error("engine step failed for a batch of {} sequences: {}", b.seqs.size(),
                      ex.what());
            for (const ScheduledSeq& e : b.seqs) {
                outputs.push_back(finish_seq(*e.seq, FinishReason::error));
            }
            return outputs;
        }
        last_.forward_seconds = timer.seconds();
        if (timed) tuner_->end_step(last_.forward_seconds);
        scheduler_->commit(b);
        const int64_t V = model_.config().vocab_size;
        for (size_t i = 0; i < prompt_rows.size(); ++i) {
            Sequence& s = *prompt_rows[i].seq;
            s.prompt_samples.resize(static_cast<size_t>(s.prompt_len - 1));
            const int64_t p = prompt_rows[i].pos;
            s.prompt_samples[static_cast<size_t>(p)] =
                score_token(logits.data<float>() + (n_sampled + static_cast<int64_t>(i)) * V, V,
                            s.tokens[static_cast<size_t>(p + 1)], s.opts.prompt_logprobs);
        }
        int64_t r = 0;
        for (const ScheduledSeq& e : b.seqs) {
            if (!e.sample) continue;
            Sequence& s = *e.seq;
            const float* seq_logits = logits.data<float>() + (r++) * V;
            if (s.matcher && !constraint_mask(s)) {
                outputs.push_back(finish_seq(s, FinishReason::constraint));
                continue;
            }
            SampleResult sr = s.sampler.sample(seq_logits, s.matcher ? mask_.data() : nullptr);
            if (s.matcher && !ends_sequence(s, sr.token)) {
                const bool ok = s.matcher->accept_bytes(cfg_.token_index->bytes(sr.token));
                ZS_ASSERT(ok, "the sampler drew token {}, which the mask forbids", sr.token);
            }
            s.sampler.observe_output(sr.token);
            s.tokens.push_back(sr.token);
            ++totals_.n_generated_tokens;
            // The scored prompt goes out with the first token (before finish_seq, which may
            // release the sequence).
            std::vector<SampleResult> prompt_samples;
            if (s.opts.prompt_logprobs >= 0 && s.n_output() == 1) {
                s.prompt_samples.resize(static_cast<size_t>(s.prompt_len - 1));
                prompt_samples = std::move(s.prompt_samples);
            }
            const FinishReason reason = stop_reason(s, sr.token);
            RequestOutput o = reason == FinishReason::none ? output_of(s) : finish_seq(s, reason);
            o.new_tokens.push_back(sr.token);
            o.new_samples.push_back(std::move(sr));
            o.prompt_samples = std::move(prompt_samples);
            outputs.push_back(std::move(o));
        }
    }
    last_.n_waiting = scheduler_->n_waiting();
    last_.n_running = scheduler_->n_running();
    last_.kv_blocks_used = pool_->n_used();
    last_.kv_blocks_free = pool_->n_free();
    return outputs;
}

}  // namespace zs::infer
