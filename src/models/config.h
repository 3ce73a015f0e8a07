// ModelConfig: a decoder-only transformer's hyperparameters, read from a Hugging Face config.json
// (HF field names) by the family parsers (gpt2/, llama/, mixtral/). Run-time choices (compute
// dtype, activation checkpointing) live apart, in RunConfig (llama.cpp's hparams vs cparams).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "ops/activation.h"

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
    int64_t n_experts = 0;       // E (0: dense MLP)
    int top_k = 2;               // experts per token
    bool renormalize = true;     // Mixtral: renormalise the top-k weights
    float aux_loss_coef = 0.0f;  // router load-balancing loss weight (HF router_aux_loss_coef)
    // HF output_router_logits: transformers adds the load-balancing loss to the training loss
    // only when this is set; so does zerospeed.
    bool output_router_logits = false;
    float train_aux_coef() const { return output_router_logits ? aux_loss_coef : 0.0f; }
    // DeepSpeed-MoE gating (deepspeed.moe.layer.MoE's arguments; ds_config "moe" section):
    // expert capacity max(min_capacity, ceil(k N / E x factor)) assignments per expert, the
    // factor capacity_factor in training and eval_capacity_factor in evaluation and inference
    // (DeepSpeed's self.training); factor 0 or drop_tokens false: no limit (HF Mixtral drops
    // nothing).
    float capacity_factor = 0.0f;
    float eval_capacity_factor = 0.0f;
    int64_t min_capacity = 4;
    bool drop_tokens = true;
    // ST-MoE router z-loss weight: coef x mean over routed rows (tokens x layers) of
    // logsumexp(router logits)^2, added to the training loss. 0: none.
    float z_loss_coef = 0.0f;
    // The capacity per expert for N tokens (N * top_k: no limit).
    int64_t capacity(int64_t n_tokens, bool training) const;
    // Qwen2-MoE: a shared expert (SwiGLU of this intermediate size, 0: none) every token goes
    // through, scaled by sigmoid(shared_expert_gate . x) and added to the routed experts' sum;
    // ModelConfig::intermediate is then moe_intermediate_size, and this the dense
    // intermediate_size (kept for export; no layer is dense: decoder_sparse_step 1).
    int64_t shared_intermediate = 0;
    int64_t dense_intermediate = 0;
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
    // GGUF rope_freqs.weight (llama.cpp's per-dimension RoPE divisors, written for Llama-3.1-style
    // scaling): inv_freq[i] /= rope_freq_factors[i]. Empty: none.
    std::vector<float> rope_freq_factors;
    MlpKind mlp = MlpKind::swiglu;
    ops::GeluKind gelu = ops::GeluKind::kTanh;  // MlpKind::gelu: HF activation_function
    // Attention scores are scaled by 1/sqrt(HS) (GPT-2 scale_attn_weights; false: not at all)
    // and, for GPT-2's scale_attn_by_inverse_layer_idx, also by 1/(layer + 1).
    bool scale_attn_weights = true;
    bool scale_attn_by_inverse_layer_idx = false;
    // Sliding-window attention (Mistral/Mixtral sliding_window, Qwen2 use_sliding_window +
    // max_window_layers or layer_types): each query sees the `sliding_window` keys ending at
    // its own position, in the layers marked in sliding_layers (empty: every layer).
    int64_t sliding_window = 0;  // 0: none
    std::vector<uint8_t> sliding_layers;
    bool qkv_bias = false;   // Qwen2, GPT-2
    bool proj_bias = false;  // attention output projection bias (GPT-2)
    bool mlp_bias = false;   // GPT-2
    bool norm_bias = false;  // LayerNorm has a bias
    bool tied_embeddings = false;
    MoeConfig moe;
    int64_t bos_token_id = -1;
    std::vector<int64_t> eos_token_ids;
    core::DType torch_dtype = core::DType::f32;  // dtype the checkpoint was saved in
    // Dropout probabilities the config asks for (resid/embd/attn_pdrop, attention_dropout): the
    // largest. zerospeed applies no dropout; the trainer says so when this is not 0.
    double dropout = 0.0;
    // Keys of config.json the parser neither uses nor knows to leave the computation unchanged
    // (transformers' model code does not read them either; each is logged as a warning).
    std::vector<std::string> unknown_keys;

    int64_t q_dim() const { return n_heads * head_dim; }
    int64_t kv_dim() const { return n_kv_heads * head_dim; }
    int64_t qkv_dim() const { return q_dim() + 2 * kv_dim(); }
    // Number of parameters (tied embeddings counted once).
    int64_t n_params() const;
    // The sliding window of layer l (0: full attention).
    int64_t window(int64_t layer) const;
    // The attention score scale of layer l (0 means the default 1/sqrt(HS)).
    float attention_scale(int64_t layer) const;
    // inv_freq for RoPE with this config's scaling applied.
    std::vector<double> rope_inv_freq() const;
    // Throws ConfigError naming the field when the numbers are inconsistent.
    void validate(const std::string& source) const;
};

// Read `dir/config.json` (or a config.json path) and build the config of its model_type.
// Unknown model_type or missing required fields: ConfigError naming the file and field.
//
// Every key is classified (config_key_class): *used* (read into the config), *irrelevant* to
// the computation (a documented list: bookkeeping, generation defaults, task heads, dropout,
// which zerospeed does not apply), or *unsupported* unless at its neutral value (refused with a
// ConfigError naming key and value: quantization_config, add_cross_attention, ...). Keys outside
// all three (not in transformers' config classes) are listed in unknown_keys and warned about.
ModelConfig load_hf_config(const std::string& path);
// The config.json transformers expects for this model (family field names), so an exported
// directory loads with AutoModelForCausalLM.from_pretrained. torch_dtype is cfg.torch_dtype: set
// it to the dtype of the weights written beside it.
std::string to_hf_config_json(const ModelConfig& cfg);

// Same from JSON text (used by the fuzz target and tests); `source` names it in errors.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& source);

// How the parser treats `key` of a config.json of `model_type`: "used", "irrelevant: <why>",
// "unsupported unless <neutral value>", or "" (unknown). For docs, `zerospeed info` and the
// classification test.
std::string config_key_class(const std::string& model_type, const std::string& key);

}  // namespace zs::models
