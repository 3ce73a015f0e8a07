#include "models/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/json.h"

namespace zs::models {

using nlohmann::json;

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

    bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

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
};

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
    std::string act = f.string("activation_function", "gelu_new");
    ZS_CHECK_T(
        ConfigError,
        act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast" || act == "gelu",
        "{}: activation_function '{}' is not supported (gelu_new, gelu_pytorch_tanh)", f.source(),
        act);
    c.mlp = MlpKind::gelu;
    c.qkv_bias = c.proj_bias = c.mlp_bias = c.norm_bias = true;
    c.tied_embeddings = f.boolean("tie_word_embeddings", true);
    c.bos_token_id = f.integer("bos_token_id", -1);
    c.eos_token_ids = f.int_list("eos_token_id");
    return c;
}

ModelConfig parse_llama_like(const Fields& f, Arch arch) {
    ModelConfig c;
    c.arch = arch;
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
        ZS_CHECK_T(ConfigError, c.moe.top_k <= c.moe.n_experts,
                   "{}: num_experts_per_tok ({}) exceeds num_local_experts ({})", f.source(),
                   c.moe.top_k, c.moe.n_experts);
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
    int64_t ff =
        mlp == MlpKind::moe ? moe.n_experts * 3 * C * intermediate + moe.n_experts * C : dense;
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
        c = parse_llama_like(f, Arch::llama);
    } else if (type == "qwen2") {
        c = parse_llama_like(f, Arch::qwen2);
    } else if (type == "mixtral") {
        c = parse_llama_like(f, Arch::mixtral);
    } else {
        ZS_THROW(ConfigError,
                 "{}: model_type '{}' is not supported (supported: gpt2, llama, mistral, qwen2, "
                 "mixtral)",
                 source, type);
    }
    c.model_type = type;
    c.torch_dtype = torch_dtype(f);
    c.validate(source);
    return c;
}

std::string to_hf_config_json(const ModelConfig& c) {
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
            j["activation_function"] = "gelu_new";
            break;
        case Arch::llama:
        case Arch::qwen2:
        case Arch::mixtral:
            j["architectures"] = {c.arch == Arch::llama   ? "LlamaForCausalLM"
                                  : c.arch == Arch::qwen2 ? "Qwen2ForCausalLM"
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
            j["hidden_act"] = "silu";
            if (c.arch == Arch::llama) {
                j["attention_bias"] = c.qkv_bias;
                j["mlp_bias"] = c.mlp_bias;
            }
            if (c.arch == Arch::mixtral) {
                j["num_local_experts"] = c.moe.n_experts;
                j["num_experts_per_tok"] = c.moe.top_k;
                j["router_aux_loss_coef"] = c.moe.aux_loss_coef;
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
