// Llama-family Hugging Face names (Llama 2/3, Mistral, SmolLM, TinyLlama, Qwen2, Mixtral).
// Our fused tensors: qkv = [q_proj; k_proj; v_proj] by rows, and each SwiGLU "up" =
// [gate_proj; up_proj] (Mixtral experts: [w1; w3]; w2 is down). Qwen2-MoE: the router is
// mlp.gate, experts mlp.experts.e.{gate,up,down}_proj, the shared expert mlp.shared_expert.* and
// its gate mlp.shared_expert_gate.
#include <cstdio>

#include <fmt/format.h>

#include "models/weights.h"

namespace zs::models {

std::vector<HfPart> llama_hf_parts(const ModelConfig& cfg, const std::string& name) {
    if (name == "embed.tokens") return {{"model.embed_tokens.weight"}};
    if (name == "head.norm.weight") return {{"model.norm.weight"}};
    if (name == "head.out.weight") return {{"lm_head.weight"}};
    int layer = -1;
    char rest[128] = {};
    if (std::sscanf(name.c_str(), "blocks.%d.%127s", &layer, rest) != 2) return {};
    std::string h = fmt::format("model.layers.{}.", layer);
    std::string r = rest;
    const int64_t q = cfg.q_dim(), kv = cfg.kv_dim(), ff = cfg.intermediate;
    if (r == "ln1.weight") return {{h + "input_layernorm.weight"}};
    if (r == "ln2.weight") return {{h + "post_attention_layernorm.weight"}};
    if (r == "attn.qkv.weight") {
        return {{h + "self_attn.q_proj.weight", 0, q},
                {h + "self_attn.k_proj.weight", q, q + kv},
                {h + "self_attn.v_proj.weight", q + kv, q + 2 * kv}};
    }
    if (r == "attn.qkv.bias") {
        return {{h + "self_attn.q_proj.bias", 0, q},
                {h + "self_attn.k_proj.bias", q, q + kv},
                {h + "self_attn.v_proj.bias", q + kv, q + 2 * kv}};
    }
    if (r == "attn.out.weight") return {{h + "self_attn.o_proj.weight"}};
    if (r == "attn.out.bias") return {{h + "self_attn.o_proj.bias"}};
    if (r == "mlp.up.weight") {
        return {{h + "mlp.gate_proj.weight", 0, ff}, {h + "mlp.up_proj.weight", ff, 2 * ff}};
    }
    if (r == "mlp.up.bias") {
        return {{h + "mlp.gate_proj.bias", 0, ff}, {h + "mlp.up_proj.bias", ff, 2 * ff}};
    }
    if (r == "mlp.down.weight") return {{h + "mlp.down_proj.weight"}};
    if (r == "mlp.down.bias") return {{h + "mlp.down_proj.bias"}};
    if (cfg.model_type == "qwen2_moe") {
        const int64_t fs = cfg.moe.shared_intermediate;
        if (r == "moe.router.weight") return {{h + "mlp.gate.weight"}};
        if (r == "moe.shared_gate.weight") return {{h + "mlp.shared_expert_gate.weight"}};
        if (r == "moe.shared.up.weight") {
            return {{h + "mlp.shared_expert.gate_proj.weight", 0, fs},
                    {h + "mlp.shared_expert.up_proj.weight", fs, 2 * fs}};
        }
        if (r == "moe.shared.down.weight") return {{h + "mlp.shared_expert.down_proj.weight"}};
        int e = -1;
        char leaf[32] = {};
        if (std::sscanf(r.c_str(), "moe.experts.%d.%31s", &e, leaf) == 2) {
            std::string x = fmt::format("{}mlp.experts.{}.", h, e);
            std::string l = leaf;
            if (l == "up.weight")
                return {{x + "gate_proj.weight", 0, ff}, {x + "up_proj.weight", ff, 2 * ff}};
            if (l == "down.weight") return {{x + "down_proj.weight"}};
        }
        return {};
    }
    if (r == "moe.router.weight") return {{h + "block_sparse_moe.gate.weight"}};
    int e = -1;
    char leaf[32] = {};
    if (std::sscanf(r.c_str(), "moe.experts.%d.%31s", &e, leaf) == 2) {
        std::string x = fmt::format("{}block_sparse_moe.experts.{}.", h, e);
        std::string l = leaf;
        if (l == "up.weight") return {{x + "w1.weight", 0, ff}, {x + "w3.weight", ff, 2 * ff}};
        if (l == "down.weight") return {{x + "w2.weight"}};
    }
    return {};
}

}  // namespace zs::models
