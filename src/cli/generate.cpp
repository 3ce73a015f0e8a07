// `zerospeed generate`: load a model (HF directory or GGUF), tokenize the prompt (optionally
// through the model's chat format), prefill it in one forward, then decode token by token with a
// KV cache, streaming text to stdout as whole UTF-8 characters. Stops at EOS / end-of-turn
// tokens, at any --stop string (not printed), or after --max-tokens. The last line, on stderr,
// reports prompt and generation throughput. --offload-weights streams the blocks' weights from
// NVMe or the cpu tier (ZeRO-Inference, zero/inference.h); --batch decodes several sequences in
// lockstep, one weight pass per step for all.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "base/timer.h"
#include "cli/commands.h"
#include "cli/model_loader.h"
#include "infer/block_pool.h"
#include "infer/chat_template.h"
#include "infer/expert_locality.h"
#include "infer/paged_attention.h"
#include "infer/sampler.h"
#include "infer/stop_filter.h"
#include "infer/thread_tuner.h"
#include "io/tokenizer_stream.h"
#include "models/kv_cache.h"
#include "zero/inference.h"

namespace zs::cli {

namespace {

// ZeRO-Inference: the weight bytes per forward and the rate they were read at.
void report_stream(const zero::WeightStream& ws, int64_t forwards, double seconds) {
    const double gb = static_cast<double>(ws.bytes_read()) / 1e9;
    std::fprintf(stderr,
                 "offload-weights: %.3f GB of block weights per forward, %lld forwards, %.2f GB "
                 "read in %.2f s (%.3f GB/s)\n",
                 static_cast<double>(ws.memory().streamed) / 1e9, static_cast<long long>(forwards),
                 gb, seconds, seconds > 0 ? gb / seconds : 0.0);
}

// --batch B: B copies of the prompt decoded in lockstep (each with its own sampler, seeded
// seed + b), one forward of B tokens per step; sequence 0's text is printed; every sequence runs
// to --max-tokens or its stop token (a finished one keeps decoding, unprinted, so the batch stays
// in lockstep; its tokens are not counted).
int generate_batch(const GenerateOptions& o, LoadedModel& lm, const infer::SamplingParams& sp,
                   const std::vector<int32_t>& prompt, int64_t ctx,
                   const std::vector<int32_t>& stop_ids) {
    const int64_t B = o.batch, n = static_cast<int64_t>(prompt.size());
    const int64_t V = lm.model->config().vocab_size;
    zero::BatchKvCache kv(lm.model->local_config(), B, ctx, lm.model->run_config().compute_dtype);
    std::vector<infer::Sampler> samplers;
    for (int64_t b = 0; b < B; ++b) {
        infer::SamplingParams p = sp;
        p.seed = sp.seed + static_cast<uint64_t>(b);
        samplers.emplace_back(p, V);
        samplers.back().observe_prompt(prompt.data(), n);
    }
    std::vector<int32_t> ids, pos;
    std::vector<int64_t> rows;
    for (int64_t b = 0; b < B; ++b) {
        ids.insert(ids.end(), prompt.begin(), prompt.end());
        for (int64_t i = 0; i < n; ++i) pos.push_back(static_cast<int32_t>(i));
        rows.push_back((b + 1) * n - 1);
    }
    io::StreamDecoder stream(*lm.tokenizer, true, true);
    std::vector<bool> done(static_cast<size_t>(B), false);
    int64_t generated = 0, forwards = 0;
    Timer t;
    double prompt_s = 0;
    for (int64_t step = 0; step < o.max_tokens && kv.length() < ctx; ++step) {
        const auto N = static_cast<int64_t>(ids.size());
        Tensor logits = lm.model->forward_tokens(Tensor::wrap(ids.data(), {N}, DType::i32),
                                                 Tensor::wrap(pos.data(), {N}, DType::i32), kv,
                                                 rows, lm.stream.get());
        kv.commit(N / B);
        ++forwards;
        if (step == 0) prompt_s = t.seconds();
        const int32_t p = static_cast<int32_t>(kv.length());
        ids.clear();
        pos.clear();
        rows.clear();
        for (int64_t b = 0; b < B; ++b) {
            const int32_t next =
                samplers[static_cast<size_t>(b)].sample(logits.data<float>() + b * V).token;
            if (!done[static_cast<size_t>(b)]) {
                if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
                    done[static_cast<size_t>(b)] = true;
                } else {
                    samplers[static_cast<size_t>(b)].observe_output(next);
                    ++generated;
                    if (b == 0) std::fputs(stream.push(next).c_str(), stdout);
                }
            }
            ids.push_back(next);
            pos.push_back(p);
            rows.push_back(b);
        }
        std::fflush(stdout);
        if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    }
    stream.drop_incomplete();
    std::fputc('\n', stdout);
    std::fflush(stdout);
    const double s = t.seconds(), gen_s = s - prompt_s;
    std::fprintf(stderr,
                 "batch %lld: prompt %lld tokens x %lld in %.2f s | generated: %lld tokens in "
                 "%.2f s (%.1f tokens/s, %lld forwards)\n",
                 static_cast<long long>(B), static_cast<long long>(n), static_cast<long long>(B),
                 prompt_s, static_cast<long long>(generated), gen_s,
                 gen_s > 0 ? static_cast<double>(generated) / gen_s : 0.0,
                 static_cast<long long>(forwards));
    if (lm.stream) report_stream(*lm.stream, forwards, s);
    return 0;
}

// Whether `kd` is a contiguous cache's: the compute dtype itself, or bf16 under f32 compute on
// the CPU (dense attention reads a bf16 cache with f32 queries there: half the bytes of f32 in
// the head-major layout the CPU kernels stream best). Any other (f16, int8, fp8) goes paged.
bool contiguous_kv(const infer::KvCacheDType& kd, core::DType compute, core::Device device) {
    return kd.quant == ops::KvQuant::none &&
           (kd.dtype == compute ||
            (device.is_cpu() && compute == DType::f32 && kd.dtype == DType::bf16));
}

// The cache generate decodes through: contiguous (the compute dtype) or paged (any other), with
// the contiguous cache's length/commit interface.
class GenerateKv {
public:
    GenerateKv(const models::Transformer& m, int64_t ctx, const infer::KvCacheDType& kd) {
        if (contiguous_kv(kd, m.run_config().compute_dtype, m.run_config().device)) {
            contiguous_ =
                std::make_unique<models::ContiguousKvCache>(m.local_config(), ctx, kd.dtype);
            return;
        }
        constexpr int64_t kBlock = 16;
        const int64_t n = (ctx + kBlock - 1) / kBlock;
        pool_ = std::make_unique<infer::KvBlockPool>(
            infer::KvCacheSpec::for_blocks(m.local_config(), n, kBlock, kd.dtype, kd.quant));
        table_ = *pool_->allocate(n);
        paged_ = std::make_unique<infer::PagedKvAttention>(*pool_);
    }
    // The attention for a forward of n new tokens.
    models::KvAttention& next(int64_t n) {
        if (contiguous_) return *contiguous_;
        paged_->set_batch({ops::SeqSlice{0, n, len_, table_}});
        return *paged_;
    }
    void commit(int64_t n) {
        if (contiguous_) contiguous_->commit(n);
        len_ += n;
    }
    int64_t length() const { return len_; }

private:
    std::unique_ptr<models::ContiguousKvCache> contiguous_;
    std::unique_ptr<infer::KvBlockPool> pool_;
    std::vector<ops::BlockId> table_;
    std::unique_ptr<infer::PagedKvAttention> paged_;
    int64_t len_ = 0;
};

}  // namespace

int run_generate(const GenerateOptions& o, comm::Communicator& world) {
    // Tensor parallelism: every rank runs this loop on its shard (the forwards' collectives keep
    // them in step; every rank gets the same logits); rank 0's sampled token is the one all
    // ranks take, and only rank 0 prints.
    // Expert parallelism likewise: every rank runs the same tokens, each with its experts. Both
    // (DeepSpeed-TED): tp groups of consecutive ranks, the ep group the same tp rank's peers.
    const int64_t cap =
        o.offload.memory_cap.empty() ? 0 : parse_memory_size(o.offload.memory_cap, "--memory-cap");
    const std::optional<zero::StreamConfig> sc =
        offload_stream_config(o.offload, cap, o.tp, o.ep, world, "generate");
    const InferenceGroups groups = inference_groups(o.tp, o.ep, world, "generate");
    comm::Communicator* tp = groups.tp;
    comm::Communicator* ep = groups.ep;
    comm::Communicator* group = tp || ep ? &world : nullptr;  // they must take rank 0's token
    const bool lead = world.rank() == 0;
    ZS_CHECK_T(ConfigError, o.batch == 1 || world.size() == 1,
               "generate --batch: one rank only (not with --tp / --ep)");
    ZS_CHECK_T(ConfigError, o.batch == 1 || o.logprobs < 0,
               "generate --batch {}: not with --logprobs (one sequence's tokens are printed)",
               o.batch);
    LoadedModel lm = load_model(o.model, o.dtype, false, tp, ep, sc ? &*sc : nullptr);
    models::GroupHooks* hooks = lm.stream.get();
    // Every ep rank runs the same tokens: each dispatches only its slice of them.
    if (ep) lm.model->set_ep_replicated_inputs(true);
    const models::ModelConfig& c = lm.model->config();
    const io::Tokenizer& tok = *lm.tokenizer;

    infer::SamplingParams sp = lm.generation_defaults;
    const bool jsonl = o.logprobs >= 0;
    if (jsonl) sp.top_logprobs = o.logprobs;
    sp.logprobs = jsonl;  // nothing else reads them
    if (o.temperature >= 0) sp.temperature = o.temperature;
    if (o.top_k >= 0) sp.top_k = o.top_k;
    if (o.top_p >= 0) sp.top_p = o.top_p;
    if (o.min_p >= 0) sp.min_p = o.min_p;
    if (o.repetition_penalty > 0) sp.repetition_penalty = o.repetition_penalty;
    sp.seed = o.seed;

    std::vector<int32_t> ids;
    if (o.chat) {
        infer::ChatTemplate ct = infer::detect_chat_template(tok, lm.chat_template);
        if (ct.format == infer::ChatFormat::plain) {
            log_warn("{}: no chat template recognised; using plain 'role: content' lines", o.model);
        }
        std::vector<infer::ChatMessage> msgs;
        if (!o.system.empty()) msgs.push_back({"system", o.system});
        msgs.push_back({"user", o.prompt});
        ids = tok.encode(infer::render_chat(ct, msgs), false, true);
    } else {
        ids = tok.encode(o.prompt, true, false);
    }
    ZS_CHECK_T(ConfigError, !ids.empty(), "--prompt: the prompt is empty after tokenization");
    const auto n_prompt = static_cast<int64_t>(ids.size());
    ZS_CHECK_T(ConfigError, n_prompt < c.max_positions,
               "--prompt: {} tokens do not fit the model's context of {}", n_prompt,
               c.max_positions);
    const int64_t ctx = std::min<int64_t>(c.max_positions, n_prompt + o.max_tokens);

    std::vector<int32_t> stop_ids;
    if (!o.ignore_eos) {
        stop_ids = tok.stop_ids();
        for (int64_t e : c.eos_token_ids) stop_ids.push_back(static_cast<int32_t>(e));
        for (int32_t e : lm.extra_stop_ids) stop_ids.push_back(e);
    }

    // --kv-cache-dtype: the compute dtype in a contiguous cache; any other in the serving engine's
    // paged cache (one sequence, its blocks allocated up front), read in place by paged attention.
    const infer::KvCacheDType kd = infer::parse_kv_cache_dtype(
        o.kv_cache_dtype, lm.model->run_config().compute_dtype, "--kv-cache-dtype");
    ZS_CHECK_T(ConfigError,
               o.batch == 1 || (kd.quant == ops::KvQuant::none &&
                                kd.dtype == lm.model->run_config().compute_dtype),
               "--batch {} with --kv-cache-dtype {}: lockstep batches decode through a contiguous "
               "cache of the compute dtype only",
               o.batch, o.kv_cache_dtype);
    if (cap > 0) {
        // What this run holds of the model: the weights (or the stream's resident groups and
        // buffers), the KV cache of every sequence and the f32 logits of every sequence's row.
        const models::ModelConfig& lc = lm.model->local_config();
        // K and V per token: the cache dtype's bytes, or an int8 / fp8 code and its group's f16
        // scale share.
        const double per_value = kd.quant != ops::KvQuant::none
                                     ? 1.0 + 2.0 / static_cast<double>(ops::kKvQuantGroup)
                                     : static_cast<double>(core::dtype_size(kd.dtype));
        const auto kv_bytes = static_cast<int64_t>(
            static_cast<double>(2 * lc.n_layers * ctx * lc.kv_dim() * o.batch) * per_value);
        const int64_t logit_bytes = o.batch * c.vocab_size * 4;
        const int64_t weights =
            lm.stream
                ? lm.stream->memory().total()
                : static_cast<int64_t>(c.n_params()) *
                      static_cast<int64_t>(core::dtype_size(lm.model->run_config().compute_dtype));
        const int64_t need = weights + kv_bytes + logit_bytes;
        ZS_CHECK_T(ConfigError, need <= cap,
                   "--memory-cap {}: the {} ({}), the KV cache of {} x {} tokens ({}) and the "
                   "logits of {} row(s) ({}) need {}{}",
                   core::format_bytes(cap),
                   lm.stream ? "stream's resident weights and buffers" : "weights",
                   core::format_bytes(weights), o.batch, ctx, core::format_bytes(kv_bytes), o.batch,
                   core::format_bytes(logit_bytes), core::format_bytes(need),
                   lm.stream ? "" : " (--offload-weights nvme streams the blocks from disk)");
    }
    if (o.batch > 1) return generate_batch(o, lm, sp, ids, ctx, stop_ids);
    GenerateKv kv(*lm.model, ctx, kd);
    infer::Sampler sampler(sp, c.vocab_size);
    sampler.observe_prompt(ids.data(), n_prompt);
    io::StreamDecoder stream(tok, true, true);
    infer::StopFilter filter(o.stops);
    Tensor pos = Tensor::empty({ctx}, DType::i32);
    for (int64_t i = 0; i < ctx; ++i) pos.data<int32_t>()[i] = static_cast<int32_t>(i);

    std::unique_ptr<infer::ExpertLocality> locality;
    if (o.expert_locality > 0) {
        ZS_CHECK_T(ConfigError, c.moe.n_experts > 0,
                   "--expert-locality: {} is not a mixture-of-experts model", o.model);
        const DType ct = lm.model->run_config().compute_dtype;
        locality = std::make_unique<infer::ExpertLocality>(
            c.n_layers, c.moe.n_experts, c.moe.top_k, o.expert_locality,
            c.hidden_size * static_cast<int64_t>(core::dtype_size(ct) + 4));
        lm.model->set_routing_observer([&](int64_t layer, const Tensor& idx) {
            locality->observe(layer, idx.data<int32_t>() + (idx.size(0) - 1) * idx.size(1));
        });
    }
    Timer t_prompt;
    Tensor logits = lm.model->forward_tokens(Tensor::wrap(ids.data(), {n_prompt}, DType::i32),
                                             pos.slice(0, 0, n_prompt), kv.next(n_prompt),
                                             {n_prompt - 1}, hooks);
    kv.commit(n_prompt);
    double prompt_s = t_prompt.seconds();

    Timer t_gen;
    // Decode's thread count from its measured speed (infer/thread_tuner.h); not under tp/ep,
    // whose ranks step together.
    infer::ThreadTuner tuner;
    const bool tune = group == nullptr && tuner.enabled();
    int64_t generated = 0;
    std::string reason = "length";
    bool stopped = false;
    std::string all_text;  // --logprobs: the text for the final line
    auto token_json = [&](int32_t id, float lp) {
        return nlohmann::json{{"id", id},
                              {"token", tok.decode(std::span<const int32_t>(&id, 1), false)},
                              {"logprob", lp}};
    };
    auto emit = [&](const std::string& text) {
        if (!lead) return;
        if (jsonl) {
            all_text += text;
            return;
        }
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
    };
    while (generated < o.max_tokens && kv.length() < ctx) {
        const infer::SampleResult sr = sampler.sample(logits.data<float>());
        int32_t next = sr.token;
        if (group) {
            Tensor t = Tensor::wrap(&next, {1}, DType::i32);
            group->broadcast(t, 0).wait();
        }
        if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
            reason = "eos";
            break;
        }
        if (jsonl && lead) {
            nlohmann::json line = token_json(next, sr.logprob);
            line["top"] = nlohmann::json::array();
            for (const auto& [id, lp] : sr.top) line["top"].push_back(token_json(id, lp));
            std::printf(
                "%s\n",
                line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        }
        sampler.observe_output(next);
        ++generated;
        emit(filter.push(stream.push(next), stopped));
        if (stopped) {
            reason = "stop string";
            break;
        }
        if (generated == o.max_tokens || kv.length() >= ctx) break;
        Tensor one = Tensor::wrap(&next, {1}, DType::i32);
        if (tune) tuner.begin_step();
        Timer t_step;
        logits = lm.model->forward_tokens(one, pos.slice(0, kv.length(), kv.length() + 1),
                                          kv.next(1), {0}, hooks);
        if (tune) tuner.end_step(t_step.seconds());
        kv.commit(1);
    }
    if (!stopped) {
        stream.drop_incomplete();  // cut inside a character: end before it, not with U+FFFD
        emit(filter.flush());
    }
    if (!lead) return 0;
    if (jsonl) {
        const nlohmann::json end = {{"text", all_text},
                                    {"finish_reason", reason},
                                    {"prompt_tokens", n_prompt},
                                    {"completion_tokens", generated}};
        std::printf("%s\n",
                    end.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
        std::fputc('\n', stdout);
    }
    std::fflush(stdout);
    double gen_s = t_gen.seconds();
    std::fprintf(stderr,
                 "prompt: %lld tokens in %.2f s (%.1f tokens/s) | generated: %lld tokens in %.2f s "
                 "(%.1f tokens/s) | stop: %s\n",
                 static_cast<long long>(n_prompt), prompt_s,
                 static_cast<double>(n_prompt) / prompt_s, static_cast<long long>(generated), gen_s,
                 gen_s > 0 ? static_cast<double>(generated) / gen_s : 0.0, reason.c_str());
    if (locality) std::fprintf(stderr, "%s\n", locality->report().c_str());
    if (lm.stream) report_stream(*lm.stream, 1 + generated, t_prompt.seconds());
    return 0;
}

}  // namespace zs::cli
