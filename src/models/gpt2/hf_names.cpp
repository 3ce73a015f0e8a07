// GPT-2's Hugging Face names. Conv1D stores weights [in, out]; ours are [out, in] (transpose).
// Checkpoints saved by GPT2LMHeadModel prefix everything with "transformer."; the original hub
// checkpoint does not; the loader accepts both through the source (see cli's source adapters).
#include <fmt/format.h>

#include "models/weights.h"

namespace zs::models {

std::vector<HfPart> gpt2_hf_parts(const ModelConfig& cfg, const std::string& name) {
    const std::string t = "transformer.";
    if (name == "embed.tokens") return {{t + "wte.weight"}};
    if (name == "embed.positions") return {{t + "wpe.weight"}};
    if (name == "head.norm.weight") return {{t + "ln_f.weight"}};
    if (name == "head.norm.bias") return {{t + "ln_f.bias"}};
    if (name == "head.out.weight") return {{"lm_head.weight"}};
    int layer = -1;
    char rest[96] = {};
    if (std::sscanf(name.c_str(), "blocks.%d.%95s", &layer, rest) != 2) return {};
    std::string h = fmt::format("{}h.{}.", t, layer);
    std::string r = rest;
    (void)cfg;
    if (r == "ln1.weight") return {{h + "ln_1.weight"}};
    if (r == "ln1.bias") return {{h + "ln_1.bias"}};
    if (r == "ln2.weight") return {{h + "ln_2.weight"}};
    if (r == "ln2.bias") return {{h + "ln_2.bias"}};
    if (r == "attn.qkv.weight") return {{h + "attn.c_attn.weight", 0, -1, true}};
    if (r == "attn.qkv.bias") return {{h + "attn.c_attn.bias"}};
    if (r == "attn.out.weight") return {{h + "attn.c_proj.weight", 0, -1, true}};
    if (r == "attn.out.bias") return {{h + "attn.c_proj.bias"}};
    if (r == "mlp.up.weight") return {{h + "mlp.c_fc.weight", 0, -1, true}};
    if (r == "mlp.up.bias") return {{h + "mlp.c_fc.bias"}};
    if (r == "mlp.down.weight") return {{h + "mlp.c_proj.weight", 0, -1, true}};
    if (r == "mlp.down.bias") return {{h + "mlp.c_proj.bias"}};
    return {};
}

}  // namespace zs::models
