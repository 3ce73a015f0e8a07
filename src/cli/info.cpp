// `zerospeed info`: what a model is and what it needs: architecture, shapes, parameter count,
// weight memory per dtype and KV-cache bytes per token; for a GGUF, its tensors' storage types
// (each tensor with --tensors). Reads only config.json / GGUF metadata.
#include <cstdio>
#include <map>
#include <string>
#include <utility>

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
    // The settings that change what the model computes.
    if (c.mlp == models::MlpKind::gelu) {
        std::printf("activation:       %s\n", ops::to_string(c.gelu));
    } else {
        std::printf("activation:       silu (SwiGLU%s)\n",
                    c.mlp == models::MlpKind::moe ? " experts" : "");
    }
    std::printf("biases:           qkv %s, attention output %s, mlp %s, norms %s\n", yn(c.qkv_bias),
                yn(c.proj_bias), yn(c.mlp_bias), yn(c.norm_bias));
    if (c.pos == models::PosKind::rope) {
        const char* kind = c.rope_scaling.kind == models::RopeScaling::Kind::llama3   ? "llama3"
                           : c.rope_scaling.kind == models::RopeScaling::Kind::linear ? "linear"
                                                                                      : "none";
        std::printf("rope scaling:     %s", kind);
        if (c.rope_scaling.kind != models::RopeScaling::Kind::none)
            std::printf(" (factor %g, original context %lld)", c.rope_scaling.factor,
                        static_cast<long long>(c.rope_scaling.original_max_positions));
        std::printf("; rotary dims %lld of %lld\n", static_cast<long long>(c.rotary_dim),
                    static_cast<long long>(c.head_dim));
    }
    if (c.sliding_window > 0) {
        int64_t n = 0;
        for (int64_t l = 0; l < c.n_layers; ++l) n += c.window(l) > 0;
        std::printf("sliding window:   %lld tokens on %lld of %lld layers\n",
                    static_cast<long long>(c.sliding_window), static_cast<long long>(n),
                    static_cast<long long>(c.n_layers));
    } else {
        std::printf("sliding window:   none\n");
    }
    if (!c.scale_attn_weights || c.scale_attn_by_inverse_layer_idx) {
        std::printf("attention scale:  %s%s\n", c.scale_attn_weights ? "1/sqrt(head dim)" : "1",
                    c.scale_attn_by_inverse_layer_idx ? " / (layer + 1)" : "");
    }
    if (c.mlp == models::MlpKind::moe) {
        std::printf("router aux loss:  %g%s\n", static_cast<double>(c.moe.aux_loss_coef),
                    c.moe.output_router_logits ? "" : " (not added: output_router_logits false)");
    }
    if (c.dropout > 0) std::printf("dropout:          %g in the config (not applied)\n", c.dropout);
    for (const std::string& k : c.unknown_keys)
        std::printf("unknown key:      %s (ignored, as transformers ignores it)\n", k.c_str());
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
    if (mf.gguf) {
        // The file's storage types: block-quantized matrices stay so under --dtype auto.
        std::map<std::string, std::pair<int, uint64_t>> by_type;  // type -> (tensors, bytes)
        uint64_t total = 0;
        for (const io::GgufTensorInfo& t : mf.gguf->tensors()) {
            auto& e = by_type[io::to_string(t.type)];
            ++e.first;
            e.second += t.nbytes;
            total += t.nbytes;
        }
        std::printf("file tensors:     %zu, %s:", mf.gguf->tensors().size(),
                    core::format_bytes(static_cast<int64_t>(total)).c_str());
        for (const auto& [type, e] : by_type) {
            std::printf(" %s x%d (%s)", type.c_str(), e.first,
                        core::format_bytes(static_cast<int64_t>(e.second)).c_str());
        }
        std::printf("\n");
        if (o.tensors) {
            for (const io::GgufTensorInfo& t : mf.gguf->tensors()) {
                std::printf("  %-32s %-6s %s\n", t.name.c_str(), io::to_string(t.type),
                            t.shape().str().c_str());
            }
        }
    }
    return 0;
}

}  // namespace zs::cli
