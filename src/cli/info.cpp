// `zerospeed info`: what a model is and what it needs: architecture, shapes, parameter count,
// weight memory per dtype and KV-cache bytes per token. Reads only config.json / GGUF metadata.
#include <cstdio>

#include "base/error.h"
#include "cli/commands.h"
#include "core/memory.h"
#include "models/sources.h"

namespace zs::cli {

int run_info(const InfoOptions& o) {
    models::ModelFiles mf = models::open_model(o.model);
    const models::ModelConfig& c = mf.config;
    auto yn = [](bool b) { return b ? "yes" : "no"; };
    std::printf("model:            %s\n", o.model.c_str());
    std::printf("architecture:     %s (model_type %s)\n", models::to_string(c.arch),
                c.model_type.c_str());
    std::printf("layers:           %lld\n", static_cast<long long>(c.n_layers));
    std::printf("hidden size:      %lld\n", static_cast<long long>(c.hidden_size));
    std::printf("heads:            %lld query, %lld key/value, head dim %lld\n",
                static_cast<long long>(c.n_heads), static_cast<long long>(c.n_kv_heads),
                static_cast<long long>(c.head_dim));
    std::printf("intermediate:     %lld%s\n", static_cast<long long>(c.intermediate),
                c.mlp == models::MlpKind::moe ? " per expert" : "");
    if (c.mlp == models::MlpKind::moe) {
        std::printf("experts:          %lld, top-%d\n", static_cast<long long>(c.moe.n_experts),
                    c.moe.top_k);
    }
    std::printf("vocabulary:       %lld\n", static_cast<long long>(c.vocab_size));
    std::printf("context:          %lld positions (%s)\n", static_cast<long long>(c.max_positions),
                c.pos == models::PosKind::rope ? "RoPE" : "learned");
    if (c.pos == models::PosKind::rope) std::printf("rope_theta:       %g\n", c.rope_theta);
    std::printf("norm:             %s, eps %g\n",
                c.norm == models::NormKind::rmsnorm ? "RMSNorm" : "LayerNorm",
                static_cast<double>(c.norm_eps));
    std::printf("tied embeddings:  %s\n", yn(c.tied_embeddings));
    const int64_t n = c.n_params();
    std::printf("parameters:       %lld (%.2f M)\n", static_cast<long long>(n),
                static_cast<double>(n) / 1e6);
    std::printf("weights:          f32 %s | bf16 %s | f16 %s\n", core::format_bytes(4 * n).c_str(),
                core::format_bytes(2 * n).c_str(), core::format_bytes(2 * n).c_str());
    const int64_t kv_tok = 2 * c.n_layers * c.kv_dim();
    std::printf("KV cache:         %s per token in bf16 (%s for the full %lld-token context)\n",
                core::format_bytes(2 * kv_tok).c_str(),
                core::format_bytes(2 * kv_tok * c.max_positions).c_str(),
                static_cast<long long>(c.max_positions));
    std::printf("training (AdamW, fp32 master + bf16 compute, one rank): %s of model states\n",
                core::format_bytes(18 * n).c_str());
    return 0;
}

}  // namespace zs::cli
