// ModelConfig: a decoder-only transformer's hyperparameters, read from a Hugging Face config.json
// (HF field names) by the family parsers (gpt2/, llama/, mixtral/). Run-time choices (compute
// dtype, activation checkpointing) live apart, in RunConfig (llama.cpp's hparams vs cparams).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace zs::models {

enum class Arch { gpt2, llama, mixtral, qwen2 };
enum class NormKind { layernorm, rmsnorm };
enum class PosKind { learned, rope };
enum class MlpKind { gelu, swiglu, moe };

const char* to_string(Arch a);

struct RopeScaling {
    enum class Kind { none, linear, llama3 } kind = Kind::none;
    double factor = 1.0;
    double low_freq_factor = 1.0;
    double high_freq_factor = 4.0;
    int64_t original_max_positions = 0;
};

struct MoeConfig {
    int64_t n_experts = 0;         // E (0: dense MLP)
    int top_k = 2;                 // experts per token
    bool renormalize = true;       // Mixtral: renormalise the top-k weights
    float aux_loss_coef = 0.0f;    // router load-balancing loss weight (HF router_aux_loss_coef)
    float capacity_factor = 0.0f;  // DeepSpeed-MoE: 0 = no capacity limit (Mixtral, no dropping)
    int64_t min_capacity = 4;      // DeepSpeed-MoE min_capacity
};

struct ModelConfig {
    std::string model_type;  // HF model_type, e.g. "llama", "mistral", "gpt2"
    Arch arch = Arch::llama;
    int64_t vocab_size = 0;     // V
    int64_t hidden_size = 0;    // C
    int64_t n_layers = 0;       // L
    int64_t n_heads = 0;        // NH
    int64_t n_kv_heads = 0;     // NKV
    int64_t head_dim = 0;       // HS
    int64_t intermediate = 0;   // FF (per expert for MoE)
    int64_t max_positions = 0;  // learned positions / RoPE table length
    NormKind norm = NormKind::rmsnorm;
    float norm_eps = 1e-5f;
    PosKind pos = PosKind::rope;
    double rope_theta = 10000.0;
    int64_t rotary_dim = 0;  // HS unless partial rotary
    RopeScaling rope_scaling;
    MlpKind mlp = MlpKind::swiglu;
    bool qkv_bias = false;   // Qwen2, GPT-2
    bool proj_bias = false;  // attention output projection bias (GPT-2)
    bool mlp_bias = false;   // GPT-2
    bool norm_bias = false;  // LayerNorm has a bias
    bool tied_embeddings = false;
    MoeConfig moe;
    int64_t bos_token_id = -1;
    std::vector<int64_t> eos_token_ids;
    core::DType torch_dtype = core::DType::f32;  // dtype the checkpoint was saved in

    int64_t q_dim() const { return n_heads * head_dim; }
    int64_t kv_dim() const { return n_kv_heads * head_dim; }
    int64_t qkv_dim() const { return q_dim() + 2 * kv_dim(); }
    // Number of parameters (tied embeddings counted once).
    int64_t n_params() const;
    // inv_freq for RoPE with this config's scaling applied.
    std::vector<double> rope_inv_freq() const;
    // Throws ConfigError naming the field when the numbers are inconsistent.
    void validate(const std::string& source) const;
};

// Read `dir/config.json` (or a config.json path) and build the config of its model_type.
// Unknown model_type or missing required fields: ConfigError naming the file and field.
ModelConfig load_hf_config(const std::string& path);
// The config.json transformers expects for this model (family field names), so an exported
// directory loads with AutoModelForCausalLM.from_pretrained. torch_dtype is cfg.torch_dtype: set
// it to the dtype of the weights written beside it.
std::string to_hf_config_json(const ModelConfig& cfg);

// Same from JSON text (used by the fuzz target and tests); `source` names it in errors.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& source);

}  // namespace zs::models
