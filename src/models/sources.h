// Weight sources for the loader (weights.h): a Hugging Face directory (safetensors, single or
// sharded) and a GGUF file (llama.cpp's format, Llama architecture), plus opening a model from
// either: its config, its weights, and the path to its tokenizer.
//
// GGUF tensors are renamed to HF names (blk.3.attn_q.weight -> model.layers.3.self_attn.
// q_proj.weight), dequantized to f32 on load, and llama.cpp's Q/K row permutation (made for its
// interleaved RoPE) is undone so HF's rotate-half RoPE applies.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "io/gguf.h"
#include "io/safetensors_model.h"
#include "models/config.h"
#include "models/weights.h"

namespace zs::models {

class SafetensorsSource final : public WeightSource {
public:
    explicit SafetensorsSource(const std::string& dir);
    bool has(const std::string& name) const override;
    Tensor get(const std::string& name) const override;
    std::vector<std::string> names() const override;
    std::string describe() const override;

private:
    io::SafetensorsModel model_;
    // GPT-2 checkpoints from the hub have no "transformer." prefix: map prefixed names onto them.
    std::unordered_map<std::string, std::string> alias_;
};

class GgufSource final : public WeightSource {
public:
    GgufSource(std::shared_ptr<const io::GgufFile> file, const ModelConfig& cfg);
    bool has(const std::string& name) const override;
    Tensor get(const std::string& name) const override;
    std::vector<std::string> names() const override;
    std::string describe() const override;
    // Q8_0 ... Q6_K tensors as their blocks (copied out of the mapping, Q/K rows unpermuted).
    std::optional<core::QTensor> get_quantized(const std::string& name) const override;
    // Tensors of the file the model does not read (listed as warnings when a model is opened).
    std::vector<std::string> unused_tensors() const;

private:
    std::shared_ptr<const io::GgufFile> file_;
    ModelConfig cfg_;
    std::unordered_map<std::string, std::string> hf_to_gguf_;
};

// The ModelConfig a GGUF file describes (general.architecture "llama"); IoError naming the key
// when a required one is missing.
ModelConfig config_from_gguf(const io::GgufFile& file);

// A model on disk: a directory with config.json (+ safetensors + tokenizer files) or a .gguf.
struct ModelFiles {
    ModelConfig config;
    std::unique_ptr<WeightSource> weights;
    std::string tokenizer_path;                // directory or file for io::Tokenizer::load
    std::shared_ptr<const io::GgufFile> gguf;  // set for GGUF models (its tokenizer lives here)
};
ModelFiles open_model(const std::string& path);

}  // namespace zs::models
