// `zerospeed generate`: load a model (HF directory or GGUF), tokenize the prompt (optionally
// through the model's chat format), prefill it in one forward, then decode token by token with a
// KV cache, streaming text to stdout as whole UTF-8 characters. Stops at EOS / end-of-turn
// tokens, at any --stop string (not printed), or after --max-tokens. The last line, on stderr,
// reports prompt and generation throughput.
#include <cstdio>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "base/timer.h"
#include "cli/commands.h"
#include "cli/model_loader.h"
#include "infer/block_pool.h"
#include "infer/chat_template.h"
#include "infer/paged_attention.h"
#include "infer/sampler.h"
#include "infer/stop_filter.h"
#include "infer/thread_tuner.h"
#include "io/tokenizer_stream.h"
#include "models/kv_cache.h"

namespace zs::cli {

namespace {

// The cache generate decodes through: contiguous (f32/bf16) or paged (int8/fp8), with the
// contiguous cache's length/commit interface.
class GenerateKv {
public:
    GenerateKv(const models::Transformer& m, int64_t ctx, const infer::KvCacheDType& kd) {
        if (kd.quant == ops::KvQuant::none) {
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
    // Expert parallelism likewise: every rank runs the same tokens, each with its experts.
    ZS_CHECK_T(ConfigError, o.ep == 1 || o.tp == 1,
               "generate: --ep {} with --tp {} is not implemented (use one of them)", o.ep, o.tp);
    comm::Communicator* tp = o.ep > 1 ? nullptr : inference_tp_group(o.tp, world, "generate");
    comm::Communicator* ep = nullptr;
    if (o.ep > 1) {
        ZS_CHECK_T(ConfigError, world.size() == o.ep,
                   "generate --ep {}: running on {} rank(s); expert-parallel inference needs "
                   "exactly {} (zerospeed-run --num_procs {} zerospeed generate ... --ep {})",
                   o.ep, world.size(), o.ep, o.ep, o.ep);
        ep = &world;
    }
    comm::Communicator* group = tp ? tp : ep;  // the ranks that must take rank 0's token
    const bool lead = world.rank() == 0;
    LoadedModel lm = load_model(o.model, o.dtype, false, tp, ep);
    const models::ModelConfig& c = lm.model->config();
    const io::Tokenizer& tok = *lm.tokenizer;

    infer::SamplingParams sp = lm.generation_defaults;
    const bool jsonl = o.logprobs >= 0;
    if (jsonl) sp.top_logprobs = o.logprobs;
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

    // --kv-cache-dtype: f32/bf16 in a contiguous cache; int8/fp8 in the serving engine's paged
    // cache (one sequence, its blocks allocated up front), read in place by paged attention.
    const infer::KvCacheDType kd = infer::parse_kv_cache_dtype(
        o.kv_cache_dtype, lm.model->run_config().compute_dtype, "--kv-cache-dtype");
    GenerateKv kv(*lm.model, ctx, kd);
    infer::Sampler sampler(sp, c.vocab_size);
    sampler.observe_prompt(ids.data(), n_prompt);
    io::StreamDecoder stream(tok, true, true);
    infer::StopFilter filter(o.stops);
    Tensor pos = Tensor::empty({ctx}, DType::i32);
    for (int64_t i = 0; i < ctx; ++i) pos.data<int32_t>()[i] = static_cast<int32_t>(i);

    Timer t_prompt;
    Tensor logits =
        lm.model->forward_tokens(Tensor::wrap(ids.data(), {n_prompt}, DType::i32),
                                 pos.slice(0, 0, n_prompt), kv.next(n_prompt), {n_prompt - 1});
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
                                          kv.next(1), {0});
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
    return 0;
}

}  // namespace zs::cli
