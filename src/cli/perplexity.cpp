// `zerospeed perplexity`: perplexity of a model over a text file, computed as llama.cpp's
// llama-perplexity does so the two can be compared on the same file: the text is tokenized once
// (with BOS where the tokenizer adds one), cut into chunks of --ctx tokens; each chunk is one
// forward from an empty cache whose first token is BOS (when the tokenizer has one), and only its
// second half is scored (each scored token sees at least ctx/2 tokens of context). The forward
// runs through the serving engine's paged KV cache in the --kv-cache-dtype, so a quantized cache
// is measured the way it serves. Reports exp(mean negative log-likelihood) over the scored tokens.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/log.h"
#include "base/timer.h"
#include "cli/commands.h"
#include "cli/model_loader.h"
#include "infer/block_pool.h"
#include "infer/paged_attention.h"

namespace zs::cli {

int run_perplexity(const PerplexityOptions& o) {
    std::ifstream in(o.file, std::ios::binary);
    ZS_CHECK_T(ConfigError, in.good(), "--file: cannot read '{}'", o.file);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (o.tail_bytes > 0 && static_cast<int64_t>(text.size()) > o.tail_bytes) {
        // The held-back slice: the file's last bytes from a line start.
        size_t at = text.size() - static_cast<size_t>(o.tail_bytes);
        const size_t nl = text.find('\n', at);
        at = nl == std::string::npos ? at : nl + 1;
        text = text.substr(at);
    }
    LoadedModel lm = load_model(o.model, o.dtype, false);
    const models::ModelConfig& c = lm.model->config();
    const io::Tokenizer& tok = *lm.tokenizer;
    const int64_t ctx = o.ctx;
    ZS_CHECK_T(ConfigError, ctx >= 4 && ctx <= c.max_positions,
               "--ctx {}: must be in [4, {}] (the model's context)", ctx, c.max_positions);
    const std::vector<int32_t> ids = tok.encode(text, true, false);
    const std::vector<int32_t> bos_probe = tok.encode("", true, false);
    const bool has_bos = !bos_probe.empty();
    const int32_t bos = has_bos ? bos_probe.front() : 0;
    int64_t n_chunks = static_cast<int64_t>(ids.size()) / ctx;
    if (o.chunks > 0) n_chunks = std::min(n_chunks, o.chunks);
    ZS_CHECK_T(ConfigError, n_chunks > 0,
               "--file '{}': {} tokens, fewer than one chunk of --ctx {} tokens", o.file,
               ids.size(), ctx);

    const infer::KvCacheDType kd = infer::parse_kv_cache_dtype(
        o.kv_cache_dtype, lm.model->run_config().compute_dtype, "--kv-cache-dtype");
    constexpr int64_t kBlock = 16;
    const int64_t n_blocks = (ctx + kBlock - 1) / kBlock;
    infer::KvBlockPool pool(infer::KvCacheSpec::for_blocks(lm.model->local_config(), n_blocks,
                                                           kBlock, kd.dtype, kd.quant));
    std::vector<ops::BlockId> table = *pool.allocate(n_blocks);
    infer::PagedKvAttention attn(pool);
    const int64_t first = ctx / 2;
    std::vector<int64_t> rows;
    for (int64_t i = first; i < ctx - 1; ++i) rows.push_back(i);
    Tensor pos = Tensor::empty({ctx}, DType::i32);
    for (int64_t i = 0; i < ctx; ++i) pos.data<int32_t>()[i] = static_cast<int32_t>(i);
    std::vector<int32_t> chunk(static_cast<size_t>(ctx));

    log_info("perplexity: {} tokens, {} chunks of {} (scoring the last {} of each), kv cache {}",
             ids.size(), n_chunks, ctx, ctx - 1 - first,
             kd.quant == ops::KvQuant::none ? core::to_string(kd.dtype) : ops::to_string(kd.quant));
    Timer t;
    double nll = 0.0;
    int64_t count = 0;
    for (int64_t ch = 0; ch < n_chunks; ++ch) {
        std::copy(ids.begin() + ch * ctx, ids.begin() + (ch + 1) * ctx, chunk.begin());
        if (has_bos) chunk[0] = bos;
        attn.set_batch({ops::SeqSlice{0, ctx, 0, table}});
        const Tensor logits = lm.model->forward_tokens(
            Tensor::wrap(chunk.data(), {ctx}, DType::i32), pos, attn, rows);
        const int64_t V = logits.size(1);
        for (size_t r = 0; r < rows.size(); ++r) {
            const float* l = logits.data<float>() + static_cast<int64_t>(r) * V;
            float mx = l[0];
            for (int64_t v = 1; v < V; ++v) mx = std::max(mx, l[v]);
            double sum = 0.0;
            for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(l[v] - mx));
            const int32_t target = chunk[static_cast<size_t>(rows[r] + 1)];
            nll += std::log(sum) - static_cast<double>(l[target] - mx);
            ++count;
        }
        if (!o.quiet) {
            std::fprintf(stderr, "[%lld/%lld] %.4f\n", static_cast<long long>(ch + 1),
                         static_cast<long long>(n_chunks),
                         std::exp(nll / static_cast<double>(count)));
        }
    }
    const double ppl = std::exp(nll / static_cast<double>(count));
    std::printf(
        "perplexity %.6f over %lld tokens (%lld chunks of %lld, kv cache %s, %.1f s)\n", ppl,
        static_cast<long long>(count), static_cast<long long>(n_chunks),
        static_cast<long long>(ctx),
        kd.quant == ops::KvQuant::none ? core::to_string(kd.dtype) : ops::to_string(kd.quant),
        t.seconds());
    return 0;
}

}  // namespace zs::cli
