#include "models/sources.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include <fmt/format.h>

#include "base/error.h"
#include "base/log.h"

namespace zs::models {

namespace fs = std::filesystem;

// ------------------------------------------------------------------------------ safetensors

SafetensorsSource::SafetensorsSource(const std::string& dir)
    : model_(io::SafetensorsModel::open_dir(dir)) {
    for (const std::string& n : model_.names()) {
        if (n.rfind("transformer.", 0) != 0 &&
            (n.rfind("h.", 0) == 0 || n.rfind("wte.", 0) == 0 || n.rfind("wpe.", 0) == 0 ||
             n.rfind("ln_f.", 0) == 0)) {
            alias_.emplace("transformer." + n, n);
        }
    }
}

bool SafetensorsSource::has(const std::string& name) const {
    return model_.contains(name) || alias_.count(name) != 0;
}

Tensor SafetensorsSource::get(const std::string& name) const {
    auto it = alias_.find(name);
    return model_.tensor(it == alias_.end() ? name : it->second);
}

std::vector<std::string> SafetensorsSource::names() const {
    std::vector<std::string> v;
    for (const std::string& n : model_.names()) {
        bool aliased = false;
        for (const auto& [k, target] : alias_) aliased = aliased || target == n;
        v.push_back(aliased ? "transformer." + n : n);
    }
    return v;
}

std::string SafetensorsSource::describe() const { return model_.dir(); }

// ------------------------------------------------------------------------------------- gguf

ModelConfig config_from_gguf(const io::GgufFile& f) {
    const std::string& arch = f.get_string("general.architecture");
    ZS_CHECK_T(NotSupported, arch == "llama",
               "{}: general.architecture '{}' is not supported (GGUF models: llama)", f.path(),
               arch);
    std::set<std::string> read;  // the <arch>.* keys this function looks at
    auto key = [&](const char* k) {
        std::string full = fmt::format("{}.{}", arch, k);
        read.insert(full);
        return full;
    };
    ModelConfig c;
    c.model_type = "llama";
    c.arch = Arch::llama;
    c.hidden_size = f.get_int(key("embedding_length"));
    c.n_layers = f.get_int(key("block_count"));
    c.intermediate = f.get_int(key("feed_forward_length"));
    c.n_heads = f.get_int(key("attention.head_count"));
    c.n_kv_heads = f.has(key("attention.head_count_kv")) ? f.get_int(key("attention.head_count_kv"))
                                                         : c.n_heads;
    c.max_positions = f.get_int(key("context_length"));
    c.norm_eps = static_cast<float>(f.get_float(key("attention.layer_norm_rms_epsilon")));
    c.rope_theta = f.has(key("rope.freq_base")) ? f.get_float(key("rope.freq_base")) : 10000.0;
    ZS_CHECK_T(IoError, c.n_heads > 0 && c.hidden_size % c.n_heads == 0,
               "{}: {} ({}) is not divisible by {} ({})", f.path(), key("embedding_length"),
               c.hidden_size, key("attention.head_count"), c.n_heads);
    c.head_dim = f.has(key("attention.key_length")) ? f.get_int(key("attention.key_length"))
                                                    : c.hidden_size / c.n_heads;
    c.rotary_dim =
        f.has(key("rope.dimension_count")) ? f.get_int(key("rope.dimension_count")) : c.head_dim;
    const io::GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
    ZS_CHECK_T(IoError, emb != nullptr, "{}: missing tensor 'token_embd.weight'", f.path());
    c.vocab_size = f.has(key("vocab_size")) ? f.get_int(key("vocab_size")) : emb->shape()[0];
    c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
    c.norm = NormKind::rmsnorm;
    c.pos = PosKind::rope;
    c.mlp = MlpKind::swiglu;
    if (f.has("tokenizer.ggml.bos_token_id"))
        c.bos_token_id = f.get_int("tokenizer.ggml.bos_token_id");
    if (f.has("tokenizer.ggml.eos_token_id"))
        c.eos_token_ids = {f.get_int("tokenizer.ggml.eos_token_id")};
    // The precision the file keeps its matrices in: f32, or reduced (f16, bf16, quantized).
    const io::GgufTensorInfo* q0 = f.find_tensor("blk.0.attn_q.weight");
    c.torch_dtype = q0 && q0->type != io::GgmlType::f32 ? core::DType::bf16 : core::DType::f32;
    // RoPE scaling as llama.cpp applies it: rope.scaling.type linear (factor) or none; yarn and
    // the rest are refused. Llama-3.1-style scaling comes as a rope_freqs.weight tensor of
    // per-dimension divisors.
    const std::string scaling =
        f.has(key("rope.scaling.type")) ? f.get_string(key("rope.scaling.type")) : "none";
    if (scaling == "linear") {
        c.rope_scaling.kind = RopeScaling::Kind::linear;
        c.rope_scaling.factor = f.get_float(key("rope.scaling.factor"));
        ZS_CHECK_T(IoError, c.rope_scaling.factor > 0, "{}: {} = {} (expected > 0)", f.path(),
                   key("rope.scaling.factor"), c.rope_scaling.factor);
    } else {
        ZS_CHECK_T(NotSupported, scaling == "none",
                   "{}: {} '{}' is not supported (none, linear; Llama-3 scaling comes as the "
                   "rope_freqs.weight tensor)",
                   f.path(), key("rope.scaling.type"), scaling);
    }
    (void)key("rope.scaling.original_context_length");  // informational
    (void)key("rope.scaling.finetuned");
    if (f.find_tensor("rope_freqs.weight")) {
        core::Tensor r = f.tensor("rope_freqs.weight", core::DType::f32);
        ZS_CHECK_T(IoError, r.numel() == c.rotary_dim / 2,
                   "{}: rope_freqs.weight has {} values; the model rotates {} dimensions, so {} "
                   "were expected",
                   f.path(), r.numel(), c.rotary_dim, c.rotary_dim / 2);
        const float* p = r.contiguous().data<float>();
        for (int64_t i = 0; i < r.numel(); ++i) {
            ZS_CHECK_T(IoError, std::isfinite(p[i]) && p[i] > 0,
                       "{}: rope_freqs.weight[{}] = {} (expected a positive factor)", f.path(), i,
                       p[i]);
            c.rope_freq_factors.push_back(p[i]);
        }
    }
    if (f.has(key("attention.sliding_window"))) {
        c.sliding_window = f.get_int(key("attention.sliding_window"));
        ZS_CHECK_T(IoError, c.sliding_window >= 0, "{}: {} = {} (expected >= 0)", f.path(),
                   key("attention.sliding_window"), c.sliding_window);
    }
    // Keys that describe the file, not the computation.
    for (const char* k : {"vocab_size", "rope.dimension_count", "context_length"}) (void)key(k);
    for (const io::GgufKv& kv : f.metadata()) {
        if (!kv.key.starts_with(arch + ".") || read.count(kv.key)) continue;
        c.unknown_keys.push_back(kv.key);
        log_warn("{}: key '{}' is not used by zerospeed's {} model", f.path(), kv.key, arch);
    }
    c.validate(f.path());
    return c;
}

GgufSource::GgufSource(std::shared_ptr<const io::GgufFile> file, const ModelConfig& cfg)
    : file_(std::move(file)), cfg_(cfg) {
    auto map = [&](const std::string& hf, const std::string& gg) {
        if (file_->find_tensor(gg)) hf_to_gguf_.emplace(hf, gg);
    };
    map("model.embed_tokens.weight", "token_embd.weight");
    map("model.norm.weight", "output_norm.weight");
    map("lm_head.weight", "output.weight");
    const char* pairs[][2] = {{"input_layernorm.weight", "attn_norm.weight"},
                              {"self_attn.q_proj.weight", "attn_q.weight"},
                              {"self_attn.k_proj.weight", "attn_k.weight"},
                              {"self_attn.v_proj.weight", "attn_v.weight"},
                              {"self_attn.o_proj.weight", "attn_output.weight"},
                              {"post_attention_layernorm.weight", "ffn_norm.weight"},
                              {"mlp.gate_proj.weight", "ffn_gate.weight"},
                              {"mlp.up_proj.weight", "ffn_up.weight"},
                              {"mlp.down_proj.weight", "ffn_down.weight"}};
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
        for (const auto& p : pairs) {
            map(fmt::format("model.layers.{}.{}", l, p[0]), fmt::format("blk.{}.{}", l, p[1]));
        }
    }
}

bool GgufSource::has(const std::string& name) const { return hf_to_gguf_.count(name) != 0; }

Tensor GgufSource::get(const std::string& name) const {
    auto it = hf_to_gguf_.find(name);
    ZS_CHECK_T(IoError, it != hf_to_gguf_.end(), "{}: no tensor for '{}'", file_->path(), name);
    Tensor t = file_->tensor(it->second, core::DType::f32);
    if (name.find("q_proj") != std::string::npos) return io::unpermute_llama_qk(t, cfg_.n_heads);
    if (name.find("k_proj") != std::string::npos) return io::unpermute_llama_qk(t, cfg_.n_kv_heads);
    return t;
}

std::optional<core::QTensor> GgufSource::get_quantized(const std::string& name) const {
    auto it = hf_to_gguf_.find(name);
    if (it == hf_to_gguf_.end()) return std::nullopt;
    const io::GgufTensorInfo* ti = file_->find_tensor(it->second);
    const std::optional<core::QType> qt = io::to_qtype(ti->type);
    if (!qt || *qt == core::QType::q8_k || ti->ne.size() != 2) return std::nullopt;
    const int64_t rows = ti->ne[1], cols = ti->ne[0];
    core::QTensor q = core::QTensor::empty(*qt, rows, cols);
    const std::span<const uint8_t> bytes = file_->raw_bytes(it->second);
    ZS_CHECK_T(IoError, bytes.size() == q.nbytes(), "{}: tensor '{}' holds {} bytes; {} expected",
               file_->path(), it->second, bytes.size(), q.nbytes());
    int64_t heads = 0;
    if (name.find("q_proj") != std::string::npos) heads = cfg_.n_heads;
    if (name.find("k_proj") != std::string::npos) heads = cfg_.n_kv_heads;
    if (heads == 0) {
        std::memcpy(q.mutable_data(), bytes.data(), bytes.size());
        return q;
    }
    // Rows are whole blocks: the row permutation moves them as opaque bytes.
    const Tensor raw =
        Tensor::wrap(const_cast<uint8_t*>(bytes.data()), {rows, q.row_bytes()}, core::DType::i8);
    const Tensor hf = io::unpermute_llama_qk(raw, heads);
    std::memcpy(q.mutable_data(), hf.data_ptr(), q.nbytes());
    return q;
}

std::vector<std::string> GgufSource::names() const {
    std::vector<std::string> v;
    for (const auto& [hf, gg] : hf_to_gguf_) v.push_back(hf);
    return v;
}

std::string GgufSource::describe() const { return file_->path(); }

std::vector<std::string> GgufSource::unused_tensors() const {
    std::set<std::string> mapped;
    for (const auto& [hf, gg] : hf_to_gguf_) mapped.insert(gg);
    mapped.insert("rope_freqs.weight");  // read by config_from_gguf
    std::vector<std::string> out;
    for (const io::GgufTensorInfo& t : file_->tensors())
        if (!mapped.count(t.name)) out.push_back(t.name);
    return out;
}

// ------------------------------------------------------------------------------- open_model

ModelFiles open_model(const std::string& path) {
    ModelFiles m;
    ZS_CHECK_T(IoError, fs::exists(path), "model path '{}' does not exist", path);
    if (fs::is_regular_file(path) && fs::path(path).extension() == ".gguf") {
        m.gguf = std::make_shared<io::GgufFile>(io::GgufFile::open(path));
        m.config = config_from_gguf(*m.gguf);
        auto src = std::make_unique<GgufSource>(m.gguf, m.config);
        for (const std::string& t : src->unused_tensors())
            log_warn("{}: tensor '{}' is not used by zerospeed's model", path, t);
        m.weights = std::move(src);
        m.tokenizer_path = path;
        return m;
    }
    ZS_CHECK_T(IoError, fs::is_directory(path),
               "model path '{}' is neither a directory with config.json nor a .gguf file", path);
    m.config = load_hf_config(path);
    m.weights = std::make_unique<SafetensorsSource>(path);
    m.tokenizer_path = path;
    return m;
}

}  // namespace zs::models
