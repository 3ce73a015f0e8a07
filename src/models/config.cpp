#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "io/json.h"

namespace zs::models {

using nlohmann::json;

int64_t MoeConfig::capacity(int64_t n_tokens, bool training) const {
    const double factor = training ? capacity_factor : eval_capacity_factor;
    if (!drop_tokens || factor <= 0) return n_tokens * top_k;
    const auto cap = static_cast<int64_t>(
        std::ceil(static_cast<double>(top_k * n_tokens) / static_cast<double>(n_experts) * factor));
    return std::max(cap, min_capacity);
}

const char* to_string(Arch a) {
    switch (a) {
        case Arch::gpt2:
            return "gpt2";
        case Arch::llama:
            return "llama";
        case Arch::mixtral:
            return "mixtral";
        case Arch::qwen2:
            return "qwen2";
    }
    return "?";
}

namespace {

// Typed access to config.json fields; every error names the source and the field.
class Fields {
public:
    Fields(const json& j, std::string source) : j_(j), src_(std::move(source)) {}

    // Every accessor records the key as read (config_key_class's "used" must cover it).
    bool has(const char* key) const {
        read_.insert(key);
        return j_.contains(key) && !j_.at(key).is_null();
    }

    int64_t integer(const char* key) const {
        const json& v = get(key);
        ZS_CHECK_T(ConfigError, v.is_number_integer() || (v.is_number_float() && is_whole(v)),
                   "{}: field '{}' must be an integer, got {}", src_, key, v.dump());
        return v.is_number_integer() ? v.get<int64_t>() : static_cast<int64_t>(v.get<double>());
    }
    int64_t integer(const char* key, int64_t def) const { return has(key) ? integer(key) : def; }
    int64_t positive(const char* key) const {
        int64_t v = integer(key);
        ZS_CHECK_T(ConfigError, v > 0, "{}: field '{}' must be positive, got {}", src_, key, v);
        return v;
    }
    int64_t positive(const char* key, int64_t def) const { return has(key) ? positive(key) : def; }

    double number(const char* key) const {
        const json& v = get(key);
        ZS_CHECK_T(ConfigError, v.is_number(), "{}: field '{}' must be a number, got {}", src_, key,
                   v.dump());
        return v.get<double>();
    }
    double number(const char* key, double def) const { return has(key) ? number(key) : def; }

    bool boolean(const char* key, bool def) const {
        if (!has(key)) return def;
        const json& v = j_.at(key);
        ZS_CHECK_T(ConfigError, v.is_boolean(), "{}: field '{}' must be true or false, got {}",
                   src_, key, v.dump());
        return v.get<bool>();
    }

    std::string string(const char* key, const std::string& def) const {
        if (!has(key)) return def;
        const json& v = j_.at(key);
        ZS_CHECK_T(ConfigError, v.is_string(), "{}: field '{}' must be a string, got {}", src_, key,
                   v.dump());
        return v.get<std::string>();
    }

    // An int or a list of ints (eos_token_id).
    std::vector<int64_t> int_list(const char* key) const {
        std::vector<int64_t> out;
        if (!has(key)) return out;
        const json& v = j_.at(key);
        if (v.is_number_integer()) return {v.get<int64_t>()};
        ZS_CHECK_T(ConfigError, v.is_array(), "{}: field '{}' must be an integer or a list, got {}",
                   src_, key, v.dump());
        for (const json& e : v) {
            ZS_CHECK_T(ConfigError, e.is_number_integer(),
                       "{}: field '{}' must hold integers, got {}", src_, key, e.dump());
            out.push_back(e.get<int64_t>());
        }
        return out;
    }

    const json& object(const char* key) const {
        const json& v = get(key);
        ZS_CHECK_T(ConfigError, v.is_object(), "{}: field '{}' must be an object, got {}", src_,
                   key, v.dump());
        return v;
    }
    const std::string& source() const { return src_; }
    const std::set<std::string>& read() const { return read_; }
    const json& raw() const { return j_; }

    // A key zerospeed does not implement is accepted only at its neutral value (absent, null, or
    // equal to `neutral`); otherwise ConfigError naming key and value.
    void require_neutral(const char* key, const json& neutral, const char* why) const {
        if (!has(key) || j_.at(key) == neutral) return;
        ZS_THROW(ConfigError, "{}: '{}' = {} is not supported ({}); expected {}", src_, key,
                 j_.at(key).dump(), why, neutral.is_null() ? "no such key" : neutral.dump());
    }

private:
    const json& get(const char* key) const {
        ZS_CHECK_T(ConfigError, has(key), "{}: missing required field '{}'", src_, key);
        return j_.at(key);
    }
    static bool is_whole(const json& v) {
        double d = v.get<double>();
        return std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15;
    }

    const json& j_;
    std::string src_;
    mutable std::set<std::string> read_;
};

// ------------------------------------------------------------------- key classification
// What each config key means to zerospeed. "used": some parser reads it (the parsers' Fields
// reads are checked against these lists). "irrelevant": it cannot change what the model computes
// here (with the reason). "neutral": refused unless at its neutral value (require_neutral).

struct KeyNote {
    const char* key;
    const char* why;
};

// Keys of PretrainedConfig (and common extras) that do not change the computation.
constexpr KeyNote kIrrelevant[] = {
    {"architectures", "names the HF class; model_type decides the architecture"},
    {"transformers_version", "bookkeeping"},
    {"_name_or_path", "bookkeeping"},
    {"_commit_hash", "bookkeeping"},
    {"auto_map", "remote-code entry points; zerospeed runs its own implementation"},
    {"tokenizer_class", "tokenizer bookkeeping"},
    {"torchscript", "PyTorch export setting"},
    {"use_bfloat16", "TensorFlow setting"},
    {"tf_legacy_loss", "TensorFlow setting"},
    {"_attn_implementation", "kernel choice; all implementations compute the same attention"},
    {"attn_implementation", "kernel choice; all implementations compute the same attention"},
    {"return_dict", "output format"},
    {"output_hidden_states", "output format"},
    {"output_attentions", "output format"},
    {"use_cache", "inference caching; the same result either way"},
    {"chunk_size_feed_forward", "chunked feed-forward; the same result"},
    {"id2label", "classification-head labels (not a causal LM setting)"},
    {"label2id", "classification-head labels"},
    {"problem_type", "classification-head setting"},
    {"finetuning_task", "classification-head setting"},
    {"task_specific_params", "pipeline defaults"},
    {"prefix", "pipeline prompt prefix"},
    {"pad_token_id", "padding; causal LM outputs for real tokens do not depend on it"},
    {"sep_token_id", "special-token id (tokenizer)"},
    {"decoder_start_token_id", "encoder-decoder setting"},
    {"is_decoder", "encoder-decoder setting"},
    {"tie_encoder_decoder", "encoder-decoder setting"},
    {"cross_attention_hidden_size", "encoder-decoder setting"},
    {"loss_type", "transformers' loss registry; causal LM cross-entropy is what zerospeed trains"},
    {"initializer_range",
     "random initialisation only (zerospeed initialises new weights with "
     "std 0.02, GPT-2 output projections scaled by 1/sqrt(2L))"},
    // Generation defaults: generate/serve take them from generation_config.json and requests.
    {"max_length", "generation default"},
    {"min_length", "generation default"},
    {"do_sample", "generation default"},
    {"early_stopping", "generation default"},
    {"num_beams", "generation default"},
    {"num_beam_groups", "generation default"},
    {"diversity_penalty", "generation default"},
    {"temperature", "generation default"},
    {"top_k", "generation default"},
    {"top_p", "generation default"},
    {"typical_p", "generation default"},
    {"repetition_penalty", "generation default"},
    {"length_penalty", "generation default"},
    {"no_repeat_ngram_size", "generation default"},
    {"encoder_no_repeat_ngram_size", "generation default"},
    {"bad_words_ids", "generation default"},
    {"num_return_sequences", "generation default"},
    {"output_scores", "generation default"},
    {"return_dict_in_generate", "generation default"},
    {"forced_bos_token_id", "generation default"},
    {"forced_eos_token_id", "generation default"},
    {"remove_invalid_values", "generation default"},
    {"exponential_decay_length_penalty", "generation default"},
    {"suppress_tokens", "generation default"},
    {"begin_suppress_tokens", "generation default"},
};
constexpr KeyNote kIrrelevantGpt2[] = {
    {"summary_type", "sequence-summary head of GPT2DoubleHeadsModel"},
    {"summary_use_proj", "sequence-summary head"},
    {"summary_activation", "sequence-summary head"},
    {"summary_proj_to_labels", "sequence-summary head"},
    {"summary_first_dropout", "sequence-summary head"},
};
constexpr KeyNote kIrrelevantLlama[] = {
    {"pretraining_tp", "splits the projections into slices whose sum is the same product"},
};
constexpr KeyNote kIrrelevantMistral[] = {
    {"layer_types", "MistralConfig ignores it (transformers warns)"},
};
constexpr KeyNote kNeutral[] = {
    {"is_encoder_decoder", "false"},
    {"add_cross_attention", "false"},
    {"pruned_heads", "{} (no pruned heads)"},
    {"quantization_config", "absent (quantized checkpoints are not read from safetensors)"},
};

// Keys each family's parser reads.
constexpr const char* kUsedCommon[] = {"model_type",   "vocab_size",   "tie_word_embeddings",
                                       "bos_token_id", "eos_token_id", "torch_dtype",
                                       "dtype"};
constexpr const char* kUsedGpt2[] = {"n_embd",
                                     "n_layer",
                                     "n_head",
                                     "n_inner",
                                     "n_positions",
                                     "n_ctx",
                                     "layer_norm_epsilon",
                                     "activation_function",
                                     "scale_attn_weights",
                                     "scale_attn_by_inverse_layer_idx",
                                     "reorder_and_upcast_attn",
                                     "resid_pdrop",
                                     "embd_pdrop",
                                     "attn_pdrop"};
constexpr const char* kUsedLlama[] = {"hidden_size",
                                      "num_hidden_layers",
                                      "num_attention_heads",
                                      "num_key_value_heads",
                                      "head_dim",
                                      "intermediate_size",
                                      "max_position_embeddings",
                                      "rms_norm_eps",
                                      "rope_theta",
                                      "rope_parameters",
                                      "rope_scaling",
                                      "partial_rotary_factor",
                                      "hidden_act",
                                      "attention_bias",
                                      "mlp_bias",
                                      "attention_dropout"};
constexpr const char* kUsedSliding[] = {"sliding_window"};  // mistral, mixtral
constexpr const char* kUsedQwen2[] = {"use_sliding_window", "sliding_window", "max_window_layers",
                                      "layer_types"};
constexpr const char* kUsedQwen2Moe[] = {"num_experts",
                                         "num_experts_per_tok",
                                         "norm_topk_prob",
                                         "moe_intermediate_size",
                                         "shared_expert_intermediate_size",
                                         "router_aux_loss_coef",
                                         "output_router_logits",
                                         "decoder_sparse_step",
                                         "mlp_only_layers",
                                         "qkv_bias"};
constexpr const char* kUsedMixtral[] = {"num_local_experts", "num_experts_per_tok",
                                        "router_aux_loss_coef", "output_router_logits",
                                        "router_jitter_noise"};

template <class T, size_t N>
bool in(const T (&list)[N], std::string_view key) {
    for (const T& e : list) {
        if constexpr (std::is_same_v<T, KeyNote>) {
            if (key == e.key) return true;
        } else {
            if (key == e) return true;
        }
    }
    return false;
}

template <size_t N>
const char* why_of(const KeyNote (&list)[N], std::string_view key) {
    for (const KeyNote& e : list)
        if (key == e.key) return e.why;
    return nullptr;
}

bool used_by(const std::string& type, std::string_view key) {
    if (in(kUsedCommon, key)) return true;
    if (type == "gpt2") return in(kUsedGpt2, key);
    if (!in(kUsedLlama, key)) {
        if (type == "mistral") return in(kUsedSliding, key);
        if (type == "mixtral") return in(kUsedSliding, key) || in(kUsedMixtral, key);
        if (type == "qwen2") return in(kUsedQwen2, key);
        if (type == "qwen2_moe") return in(kUsedQwen2, key) || in(kUsedQwen2Moe, key);
        return false;
    }
    return type == "llama" || type == "mistral" || type == "qwen2" || type == "mixtral" ||
           type == "qwen2_moe";
}

const char* irrelevant_why(const std::string& type, std::string_view key) {
    if (const char* w = why_of(kIrrelevant, key)) return w;
    if (type == "gpt2") return why_of(kIrrelevantGpt2, key);
    if (type != "gpt2" && in(kIrrelevantLlama, key)) return why_of(kIrrelevantLlama, key);
    if (type == "mistral") return why_of(kIrrelevantMistral, key);
    return nullptr;
}

core::DType torch_dtype(const Fields& f) {
    // transformers 5 writes "dtype"; earlier versions "torch_dtype".
    std::string s = f.string("torch_dtype", f.string("dtype", "float32"));
    if (s == "float32" || s == "float") return core::DType::f32;
    if (s == "bfloat16") return core::DType::bf16;
    if (s == "float16" || s == "half") return core::DType::f16;
    ZS_THROW(ConfigError, "{}: field 'torch_dtype' is '{}'; expected float32, bfloat16 or float16",
             f.source(), s);
}

ModelConfig parse_gpt2(const Fields& f) {
    ModelConfig c;
    c.arch = Arch::gpt2;
    c.vocab_size = f.positive("vocab_size");
    c.hidden_size = f.positive("n_embd");
    c.n_layers = f.positive("n_layer");
    c.n_heads = f.positive("n_head");
    c.n_kv_heads = c.n_heads;
    ZS_CHECK_T(ConfigError, c.hidden_size % c.n_heads == 0,
               "{}: n_embd ({}) must be divisible by n_head ({})", f.source(), c.hidden_size,
               c.n_heads);
    c.head_dim = c.hidden_size / c.n_heads;
    c.intermediate = f.positive("n_inner", 4 * c.hidden_size);
    c.max_positions = f.has("n_positions") ? f.positive("n_positions") : f.positive("n_ctx");
    c.norm = NormKind::layernorm;
    c.norm_eps = static_cast<float>(f.number("layer_norm_epsilon", 1e-5));
    c.pos = PosKind::learned;
    // HF's ACT2FN: "gelu" is the exact (erf) form; gelu_new / gelu_fast / gelu_pytorch_tanh
    // are the tanh approximation (gelu_fast's 0.7978845608 (x + 0.044715 x^3) is the same
    // expression).
    std::string act = f.string("activation_function", "gelu_new");
    if (act == "gelu") {
        c.gelu = ops::GeluKind::kErf;
    } else {
        ZS_CHECK_T(ConfigError,
                   act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast",
                   "{}: activation_function '{}' is not supported (gelu, gelu_new, gelu_fast, "
                   "gelu_pytorch_tanh)",
                   f.source(), act);
        c.gelu = ops::GeluKind::kTanh;
    }
    c.mlp = MlpKind::gelu;
    c.scale_attn_weights = f.boolean("scale_attn_weights", true);
    c.scale_attn_by_inverse_layer_idx = f.boolean("scale_attn_by_inverse_layer_idx", false);
    // reorder_and_upcast_attn computes the scores in f32 with the scale folded into the product:
    // what zerospeed's attention always does (f32 scores and softmax for every input dtype).
    (void)f.boolean("reorder_and_upcast_attn", false);
    for (const char* k : {"resid_pdrop", "embd_pdrop", "attn_pdrop"})
        c.dropout = std::max(c.dropout, f.number(k, 0.0));
    c.qkv_bias = c.proj_bias = c.mlp_bias = c.norm_bias = true;
    c.tied_embeddings = f.boolean("tie_word_embeddings", true);
    c.bos_token_id = f.integer("bos_token_id", -1);
    c.eos_token_ids = f.int_list("eos_token_id");
    return c;
}

// Sliding windows as transformers reads them: Mistral and Mixtral, `sliding_window` on every
// layer (null: none); Qwen2, only with use_sliding_window, on the layers layer_types marks
// "sliding_attention" (default: those from max_window_layers on). Llama has none.
void parse_sliding_window(const Fields& f, ModelConfig& c, Arch arch) {
    const std::string type = c.model_type;
    if (type != "mistral" && type != "mixtral" && arch != Arch::qwen2) return;
    // Qwen2-MoE's config writes 0 for "no window" (use_sliding_window false).
    const bool zero = arch == Arch::qwen2 && f.has("sliding_window") &&
                      f.raw().at("sliding_window").is_number_integer() &&
                      f.raw().at("sliding_window").get<int64_t>() == 0;
    int64_t window = f.has("sliding_window") && !zero ? f.positive("sliding_window") : 0;
    if (arch != Arch::qwen2) {
        c.sliding_window = window;
        return;
    }
    const bool use = f.boolean("use_sliding_window", false);
    std::vector<uint8_t> sliding(static_cast<size_t>(c.n_layers), 0);
    if (f.has("layer_types")) {
        const json& types = f.raw().at("layer_types");
        ZS_CHECK_T(ConfigError,
                   types.is_array() && static_cast<int64_t>(types.size()) == c.n_layers,
                   "{}: layer_types must list {} layer types, got {}", f.source(), c.n_layers,
                   types.dump());
        for (size_t i = 0; i < types.size(); ++i) {
            const std::string t = types[i].is_string() ? types[i].get<std::string>() : "";
            ZS_CHECK_T(ConfigError, t == "full_attention" || t == "sliding_attention",
                       "{}: layer_types[{}] = {} (expected \"full_attention\" or "
                       "\"sliding_attention\")",
                       f.source(), i, types[i].dump());
            sliding[i] = t == "sliding_attention";
        }
    } else {
        const int64_t from = f.integer("max_window_layers", 28);
        for (int64_t l = from < 0 ? 0 : from; l < c.n_layers; ++l)
            sliding[static_cast<size_t>(l)] = 1;
    }
    (void)f.has("max_window_layers");
    if (!use || window == 0) return;  // Qwen2Config drops the window unless use_sliding_window
    c.sliding_window = window;
    c.sliding_layers = sliding;
}

ModelConfig parse_llama_like(const Fields& f, Arch arch, const std::string& model_type) {
    ModelConfig c;
    c.arch = arch;
    c.model_type = model_type;
    c.vocab_size = f.positive("vocab_size");
    c.hidden_size = f.positive("hidden_size");
    c.n_layers = f.positive("num_hidden_layers");
    c.n_heads = f.positive("num_attention_heads");
    c.n_kv_heads = f.positive("num_key_value_heads", c.n_heads);
    if (f.has("head_dim")) {
        c.head_dim = f.positive("head_dim");
    } else {
        ZS_CHECK_T(ConfigError, c.hidden_size % c.n_heads == 0,
                   "{}: hidden_size ({}) must be divisible by num_attention_heads ({})", f.source(),
                   c.hidden_size, c.n_heads);
        c.head_dim = c.hidden_size / c.n_heads;
    }
    c.intermediate = f.positive("intermediate_size");
    c.max_positions = f.positive("max_position_embeddings");
    c.norm = NormKind::rmsnorm;
    c.norm_eps = static_cast<float>(f.number("rms_norm_eps", 1e-6));
    c.pos = PosKind::rope;
    c.rope_theta = f.number("rope_theta", 10000.0);
    // transformers 5 moves RoPE settings into "rope_parameters" (theta and scaling together).
    const char* scaling_key = "rope_scaling";
    if (f.has("rope_parameters")) {
        Fields rp(f.object("rope_parameters"), f.source() + ": rope_parameters");
        c.rope_theta = rp.number("rope_theta", c.rope_theta);
        scaling_key = "rope_parameters";
    }
    c.rotary_dim = c.head_dim;
    if (f.has("partial_rotary_factor")) {
        double p = f.number("partial_rotary_factor");
        ZS_CHECK_T(ConfigError, p > 0 && p <= 1,
                   "{}: partial_rotary_factor must be in (0, 1], got {}", f.source(), p);
        c.rotary_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * p) / 2 * 2;
    }
    if (f.has(scaling_key)) {
        Fields rs(f.object(scaling_key), f.source() + ": " + scaling_key);
        std::string type = rs.string("rope_type", rs.string("type", "default"));
        if (type == "llama3") {
            c.rope_scaling.kind = RopeScaling::Kind::llama3;
            c.rope_scaling.factor = rs.number("factor");
            c.rope_scaling.low_freq_factor = rs.number("low_freq_factor", 1.0);
            c.rope_scaling.high_freq_factor = rs.number("high_freq_factor", 4.0);
            c.rope_scaling.original_max_positions = rs.positive("original_max_position_embeddings");
        } else if (type == "linear") {
            c.rope_scaling.kind = RopeScaling::Kind::linear;
            c.rope_scaling.factor = rs.number("factor");
        } else if (type != "default") {
            ZS_THROW(ConfigError,
                     "{}: rope_scaling type '{}' is not supported (supported: linear, llama3)",
                     f.source(), type);
        }
    }
    std::string act = f.string("hidden_act", "silu");
    ZS_CHECK_T(ConfigError, act == "silu" || act == "swish",
               "{}: hidden_act '{}' is not supported (silu)", f.source(), act);
    c.dropout = f.number("attention_dropout", 0.0);
    parse_sliding_window(f, c, arch);
    c.qkv_bias = arch == Arch::qwen2 ? true : f.boolean("attention_bias", false);
    c.proj_bias = arch == Arch::qwen2 ? false : f.boolean("attention_bias", false);
    c.mlp_bias = f.boolean("mlp_bias", false);
    c.tied_embeddings = f.boolean("tie_word_embeddings", false);
    c.mlp = MlpKind::swiglu;
    if (arch == Arch::mixtral) {
        c.mlp = MlpKind::moe;
        c.moe.n_experts = f.positive("num_local_experts");
        c.moe.top_k = static_cast<int>(f.positive("num_experts_per_tok"));
        c.moe.renormalize = true;
        c.moe.aux_loss_coef = static_cast<float>(f.number("router_aux_loss_coef", 0.001));
        c.moe.output_router_logits = f.boolean("output_router_logits", false);
        // Multiplicative noise on the router input while training (HF, Switch Transformer).
        const double jitter = f.number("router_jitter_noise", 0.0);
        ZS_CHECK_T(ConfigError, jitter == 0.0,
                   "{}: 'router_jitter_noise' = {} is not supported (zerospeed routes without "
                   "noise); expected 0",
                   f.source(), jitter);
        ZS_CHECK_T(ConfigError, c.moe.top_k <= c.moe.n_experts,
                   "{}: num_experts_per_tok ({}) exceeds num_local_experts ({})", f.source(),
                   c.moe.top_k, c.moe.n_experts);
    }
    if (model_type == "qwen2_moe") {
        // Qwen2MoeSparseMoeBlock: softmax router, top-k (normalised with norm_topk_prob), routed
        // experts of moe_intermediate_size, plus a sigmoid-gated shared expert.
        c.mlp = MlpKind::moe;
        c.qkv_bias = f.boolean("qkv_bias", true);
        c.moe.n_experts = f.positive("num_experts");
        c.moe.top_k = static_cast<int>(f.positive("num_experts_per_tok"));
        c.moe.renormalize = f.boolean("norm_topk_prob", false);
        c.moe.aux_loss_coef = static_cast<float>(f.number("router_aux_loss_coef", 0.001));
        c.moe.output_router_logits = f.boolean("output_router_logits", false);
        c.moe.dense_intermediate = c.intermediate;
        c.intermediate = f.positive("moe_intermediate_size");
        c.moe.shared_intermediate = f.positive("shared_expert_intermediate_size");
        ZS_CHECK_T(ConfigError, c.moe.top_k <= c.moe.n_experts,
                   "{}: num_experts_per_tok ({}) exceeds num_experts ({})", f.source(), c.moe.top_k,
                   c.moe.n_experts);
        const int64_t step = f.integer("decoder_sparse_step", 1);
        ZS_CHECK_T(ConfigError, step == 1,
                   "{}: 'decoder_sparse_step' = {} is not supported (dense MLP layers between MoE "
                   "layers are not implemented); expected 1",
                   f.source(), step);
        if (f.has("mlp_only_layers")) {
            const json& only = f.raw().at("mlp_only_layers");
            ZS_CHECK_T(ConfigError, only.is_array() && only.empty(),
                       "{}: 'mlp_only_layers' = {} is not supported (dense MLP layers are not "
                       "implemented); expected []",
                       f.source(), only.dump());
        }
    }
    c.bos_token_id = f.integer("bos_token_id", -1);
    c.eos_token_ids = f.int_list("eos_token_id");
    return c;
}

}  // namespace

int64_t ModelConfig::n_params() const {
    int64_t C = hidden_size, n = vocab_size * C;
    if (pos == PosKind::learned) n += max_positions * C;
    int64_t norm_p = norm_bias ? 2 * C : C;
    int64_t attn = C * qkv_dim() + q_dim() * C + (qkv_bias ? qkv_dim() : 0) + (proj_bias ? C : 0);
    int64_t dense = mlp == MlpKind::gelu
                        ? 2 * C * intermediate + (mlp_bias ? intermediate + C : 0)
                        : 3 * C * intermediate + (mlp_bias ? 2 * intermediate + C : 0);
    int64_t ff = mlp == MlpKind::moe
                     ? moe.n_experts * 3 * C * intermediate + moe.n_experts * C +
                           (moe.shared_intermediate > 0 ? 3 * C * moe.shared_intermediate + C : 0)
                     : dense;
    n += n_layers * (2 * norm_p + attn + ff) + norm_p;
    if (!tied_embeddings) n += vocab_size * C;
    return n;
}

std::vector<double> ModelConfig::rope_inv_freq() const {
    std::vector<double> f(static_cast<size_t>(rotary_dim / 2));
    for (size_t i = 0; i < f.size(); ++i) {
        f[i] = 1.0 /
               std::pow(rope_theta, 2.0 * static_cast<double>(i) / static_cast<double>(rotary_dim));
    }
    if (!rope_freq_factors.empty()) {
        for (size_t i = 0; i < f.size(); ++i) f[i] /= static_cast<double>(rope_freq_factors[i]);
    }
    switch (rope_scaling.kind) {
        case RopeScaling::Kind::none:
            break;
        case RopeScaling::Kind::linear:
            for (double& x : f) x /= rope_scaling.factor;
            break;
        case RopeScaling::Kind::llama3: {
            // Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between.
            const auto& s = rope_scaling;
            double old_len = static_cast<double>(s.original_max_positions);
            double low_wl = old_len / s.low_freq_factor, high_wl = old_len / s.high_freq_factor;
            for (double& x : f) {
                double wl = 2.0 * M_PI / x;
                if (wl < high_wl) continue;
                if (wl > low_wl) {
                    x /= s.factor;
                } else {
                    double smooth = (old_len / wl - s.low_freq_factor) /
                                    (s.high_freq_factor - s.low_freq_factor);
                    x = (1.0 - smooth) * x / s.factor + smooth * x;
                }
            }
            break;
        }
    }
    return f;
}

void ModelConfig::validate(const std::string& source) const {
    ZS_CHECK_T(ConfigError, n_heads % n_kv_heads == 0,
               "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
               source, n_heads, n_kv_heads);
    ZS_CHECK_T(ConfigError, head_dim % 2 == 0 || pos == PosKind::learned,
               "{}: head_dim ({}) must be even for rotary embeddings", source, head_dim);
    // Bound sizes so a hostile config cannot request absurd allocations (2^40 parameters).
    ZS_CHECK_T(ConfigError,
               hidden_size <= (1 << 20) && vocab_size <= (1 << 24) && n_layers <= 4096 &&
                   n_heads <= 4096 && head_dim <= 4096 && intermediate <= (1 << 22) &&
                   max_positions <= (1 << 24) && moe.n_experts <= 4096,
               "{}: model dimensions are out of the supported range", source);
    ZS_CHECK_T(ConfigError, n_params() < (int64_t{1} << 40), "{}: {} parameters is too many",
               source, n_params());
}

ModelConfig parse_hf_config(const std::string& text, const std::string& source) {
    json j;
    try {
        j = io::parse_json(text, source);
    } catch (const IoError& e) {  // a config that is not JSON is a configuration error
        ZS_THROW(ConfigError, "{}", e.what());
    }
    ZS_CHECK_T(ConfigError, j.is_object(), "{}: expected a JSON object", source);
    Fields f(j, source);
    std::string type = f.string("model_type", "");
    ZS_CHECK_T(ConfigError, !type.empty(), "{}: missing required field 'model_type'", source);
    ModelConfig c;
    if (type == "gpt2") {
        c = parse_gpt2(f);
    } else if (type == "llama" || type == "mistral") {
        c = parse_llama_like(f, Arch::llama, type);
    } else if (type == "qwen2") {
        c = parse_llama_like(f, Arch::qwen2, type);
    } else if (type == "mixtral") {
        c = parse_llama_like(f, Arch::mixtral, type);
    } else if (type == "qwen2_moe") {
        c = parse_llama_like(f, Arch::qwen2, type);
    } else {
        ZS_THROW(ConfigError,
                 "{}: model_type '{}' is not supported (supported: gpt2, llama, mistral, qwen2, "
                 "qwen2_moe, mixtral)",
                 source, type);
    }
    c.model_type = type;
    c.torch_dtype = torch_dtype(f);
    for (const KeyNote& n : kNeutral) {
        f.require_neutral(n.key,
                          std::string_view(n.key) == "is_encoder_decoder" ||
                                  std::string_view(n.key) == "add_cross_attention"
                              ? json(false)
                          : std::string_view(n.key) == "pruned_heads" ? json::object()
                                                                      : json(nullptr),
                          "a setting zerospeed does not implement");
    }
    // Every key classified: a parser that reads a key its family's "used" list lacks is a bug
    // here; keys that are neither used nor known to be irrelevant are reported.
    for (const std::string& k : f.read()) {
        ZS_ASSERT(used_by(type, k) || in(kNeutral, k),
                  "config parser reads '{}', which is not "
                  "in the used-key list of {}",
                  k, type);
    }
    for (auto it = j.begin(); it != j.end(); ++it) {
        if (!config_key_class(type, it.key()).empty()) continue;
        c.unknown_keys.push_back(it.key());
        log_warn(
            "{}: key '{}' is not one transformers' {} config defines; ignored, as "
            "transformers ignores it",
            source, it.key(), type);
    }
    c.validate(source);
    return c;
}

std::string config_key_class(const std::string& type, const std::string& key) {
    if (used_by(type, key)) return "used";
    if (const char* why = irrelevant_why(type, key)) return fmt::format("irrelevant: {}", why);
    for (const KeyNote& n : kNeutral)
        if (key == n.key) return fmt::format("unsupported unless {}", n.why);
    return "";
}

int64_t ModelConfig::window(int64_t layer) const {
    if (sliding_window == 0) return 0;
    if (sliding_layers.empty()) return sliding_window;
    return sliding_layers[static_cast<size_t>(layer)] ? sliding_window : 0;
}

float ModelConfig::attention_scale(int64_t layer) const {
    if (scale_attn_weights && !scale_attn_by_inverse_layer_idx) return 0.0f;  // the default
    double s = scale_attn_weights ? 1.0 / std::sqrt(static_cast<double>(head_dim)) : 1.0;
    if (scale_attn_by_inverse_layer_idx) s /= static_cast<double>(layer + 1);
    return static_cast<float>(s);
}

namespace {

// GGUF rope_freqs factors as the rope_scaling transformers understands: llama.cpp writes them
// from a Llama-3.1 "llama3" rope_scaling, so find those parameters (the published combinations)
// and accept them only when they reproduce every frequency; anything else has no HF form.
RopeScaling rope_scaling_of_factors(const ModelConfig& c) {
    ModelConfig plain = c;
    plain.rope_freq_factors.clear();
    plain.rope_scaling = {};
    const std::vector<double> want = c.rope_inv_freq();
    for (double factor : {8.0, 16.0, 32.0, 4.0, 2.0, 64.0}) {
        for (int64_t orig : {8192, 4096, 2048, 16384, 32768, 131072}) {
            for (double low : {1.0, 2.0}) {
                for (double high : {4.0, 8.0, 2.0}) {
                    ModelConfig t = plain;
                    t.rope_scaling = {RopeScaling::Kind::llama3, factor, low, high, orig};
                    const std::vector<double> got = t.rope_inv_freq();
                    bool same = true;
                    for (size_t i = 0; i < got.size() && same; ++i)
                        same = std::fabs(got[i] - want[i]) <= 1e-6 * std::fabs(want[i]);
                    if (same) return t.rope_scaling;
                }
            }
        }
    }
    ZS_THROW(NotSupported,
             "the model's RoPE frequency factors (GGUF rope_freqs) match no llama3 rope_scaling, "
             "so no Hugging Face config.json can express them; not exported");
}

}  // namespace

std::string to_hf_config_json(const ModelConfig& c_in) {
    ModelConfig c = c_in;
    if (!c.rope_freq_factors.empty()) {
        ZS_CHECK_T(NotSupported, c.rope_scaling.kind == RopeScaling::Kind::none,
                   "rope_freqs factors together with a rope_scaling cannot be exported");
        c.rope_scaling = rope_scaling_of_factors(c);
        c.rope_freq_factors.clear();
    }
    json j;
    j["model_type"] = c.model_type;
    j["vocab_size"] = c.vocab_size;
    j["tie_word_embeddings"] = c.tied_embeddings;
    // The dtype of the weights written beside it (transformers loads them in it by default).
    j["torch_dtype"] = c.torch_dtype == core::DType::bf16  ? "bfloat16"
                       : c.torch_dtype == core::DType::f16 ? "float16"
                                                           : "float32";
    if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
    if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
    if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
    switch (c.arch) {
        case Arch::gpt2:
            j["architectures"] = {"GPT2LMHeadModel"};
            j["n_embd"] = c.hidden_size;
            j["n_layer"] = c.n_layers;
            j["n_head"] = c.n_heads;
            j["n_inner"] = c.intermediate;
            j["n_positions"] = c.max_positions;
            j["n_ctx"] = c.max_positions;
            j["layer_norm_epsilon"] = c.norm_eps;
            j["activation_function"] = c.gelu == ops::GeluKind::kErf ? "gelu" : "gelu_new";
            j["scale_attn_weights"] = c.scale_attn_weights;
            j["scale_attn_by_inverse_layer_idx"] = c.scale_attn_by_inverse_layer_idx;
            j["resid_pdrop"] = j["embd_pdrop"] = j["attn_pdrop"] = 0.0;  // none was applied
            break;
        case Arch::llama:
        case Arch::qwen2:
        case Arch::mixtral:
            j["architectures"] = {c.arch == Arch::llama         ? "LlamaForCausalLM"
                                  : c.model_type == "qwen2_moe" ? "Qwen2MoeForCausalLM"
                                  : c.arch == Arch::qwen2       ? "Qwen2ForCausalLM"
                                                                : "MixtralForCausalLM"};
            j["hidden_size"] = c.hidden_size;
            j["num_hidden_layers"] = c.n_layers;
            j["num_attention_heads"] = c.n_heads;
            j["num_key_value_heads"] = c.n_kv_heads;
            j["head_dim"] = c.head_dim;
            j["intermediate_size"] = c.intermediate;
            j["max_position_embeddings"] = c.max_positions;
            j["rms_norm_eps"] = c.norm_eps;
            j["rope_theta"] = c.rope_theta;
            if (c.rotary_dim != c.head_dim) {
                j["partial_rotary_factor"] =
                    static_cast<double>(c.rotary_dim) / static_cast<double>(c.head_dim);
            }
            switch (c.rope_scaling.kind) {
                case RopeScaling::Kind::none:
                    break;
                case RopeScaling::Kind::linear:
                    j["rope_scaling"] = {{"rope_type", "linear"},
                                         {"factor", c.rope_scaling.factor}};
                    break;
                case RopeScaling::Kind::llama3:
                    j["rope_scaling"] = {{"rope_type", "llama3"},
                                         {"factor", c.rope_scaling.factor},
                                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                                         {"original_max_position_embeddings",
                                          c.rope_scaling.original_max_positions}};
                    break;
            }
            j["hidden_act"] = "silu";
            j["attention_dropout"] = 0.0;
            if (c.model_type == "mistral" || c.arch == Arch::mixtral) {
                j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
            }
            if (c.arch == Arch::qwen2) {
                j["use_sliding_window"] = c.sliding_window > 0;
                j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
                if (c.sliding_window > 0) {
                    json types = json::array();
                    for (int64_t l = 0; l < c.n_layers; ++l)
                        types.push_back(c.window(l) > 0 ? "sliding_attention" : "full_attention");
                    j["layer_types"] = types;
                }
            }
            if (c.arch == Arch::llama) {
                j["attention_bias"] = c.qkv_bias;
                j["mlp_bias"] = c.mlp_bias;
            }
            if (c.model_type == "qwen2_moe") {
                j["intermediate_size"] = c.moe.dense_intermediate;
                j["moe_intermediate_size"] = c.intermediate;
                j["shared_expert_intermediate_size"] = c.moe.shared_intermediate;
                j["num_experts"] = c.moe.n_experts;
                j["num_experts_per_tok"] = c.moe.top_k;
                j["norm_topk_prob"] = c.moe.renormalize;
                j["decoder_sparse_step"] = 1;
                j["mlp_only_layers"] = json::array();
                j["qkv_bias"] = c.qkv_bias;
                j["router_aux_loss_coef"] = c.moe.aux_loss_coef;
                j["output_router_logits"] = c.moe.output_router_logits;
            }
            if (c.arch == Arch::mixtral) {
                j["num_local_experts"] = c.moe.n_experts;
                j["num_experts_per_tok"] = c.moe.top_k;
                j["router_aux_loss_coef"] = c.moe.aux_loss_coef;
                j["output_router_logits"] = c.moe.output_router_logits;
            }
            break;
    }
    return j.dump(2) + "\n";
}

ModelConfig load_hf_config(const std::string& path) {
    std::string file = path;
    std::ifstream probe(file + "/config.json");
    if (probe.good()) file += "/config.json";
    std::ifstream in(file, std::ios::binary);
    ZS_CHECK_T(IoError, in.good(), "cannot open model config '{}'", file);
    std::stringstream ss;
    ss << in.rdbuf();
    return parse_hf_config(ss.str(), file);
}

}  // namespace zs::models
