// Hugging Face weights in and out: the name map of each family (gpt2/, llama/) and the loader
// and exporter built on it.
//
// An internal parameter is assembled from one or more HF tensors ("parts"): the fused
// blocks.i.attn.qkv.weight [QKV, C] is q_proj, k_proj, v_proj stacked by rows; GPT-2's Conv1D
// weights are stored [in, out] and are transposed. The same map drives export, so a model saved
// by `zerospeed convert` loads in transformers.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/config.h"
#include "models/params.h"

namespace zs::models {

class Transformer;
class DenseParams;

// One HF tensor's place inside an internal parameter: rows [row_begin, row_end) of the internal
// tensor's first dim (the whole tensor when row_end == -1), transposed when `transpose`.
struct HfPart {
    std::string hf_name;
    int64_t row_begin = 0;
    int64_t row_end = -1;
    bool transpose = false;
};

// The HF parts of internal parameter `name` for this config; empty when the parameter has no HF
// counterpart of its own (e.g. a tied output matrix).
std::vector<HfPart> hf_parts(const ModelConfig& cfg, const std::string& name);
std::vector<HfPart> gpt2_hf_parts(const ModelConfig& cfg, const std::string& name);
std::vector<HfPart> llama_hf_parts(const ModelConfig& cfg, const std::string& name);

// A source of named tensors in HF naming: a safetensors checkpoint, a GGUF file, a fixture.
class WeightSource {
public:
    virtual ~WeightSource() = default;
    virtual bool has(const std::string& name) const = 0;
    // The tensor (any float dtype, CPU). Throws IoError naming the source when absent.
    virtual Tensor get(const std::string& name) const = 0;
    virtual std::vector<std::string> names() const = 0;
    // "model.safetensors", "SmolLM2.gguf": for error messages.
    virtual std::string describe() const = 0;
    // The tensor as stored block-quantized rows [rows, cols] (HF row order), or nullopt when the
    // source keeps it in another form (every float format).
    virtual std::optional<core::QTensor> get_quantized(const std::string& name) const {
        (void)name;
        return std::nullopt;
    }
};

// Fill every parameter of `params` (laid out by `model`) from `src`, converting dtypes. A missing
// tensor or a shape mismatch raises IoError naming the tensor, the source and both shapes.
// Tensors of `src` that map to nothing are reported by the returned list (e.g. rotary caches).
// Under tensor parallelism (model.tp_size() > 1) each parameter gets this rank's tp_slice.
std::vector<std::string> load_hf_weights(const Transformer& model, const DenseParams& params,
                                         const WeightSource& src);

// Inference on block-quantized weights: for each parameter a linear layer reads (the blocks'
// qkv / out / up / down matrices and the output matrix, tied or not), the quantized matrix when
// every HF part of it is stored quantized in `src` with one type and untransposed (parts stacked
// by rows), else undefined. [n_params] (all undefined when `src` holds nothing quantized or the
// model is tensor-parallel). Pass it to DenseParams; load_hf_weights then fills the rest.
std::vector<core::QTensor> load_quantized_weights(const Transformer& model,
                                                  const WeightSource& src);

// Group g's values as one flat f32 tensor [numel(g)] in the layout's order (alignment gaps zero),
// assembled from `src`: what each ZeRO rank keeps a shard of. Errors as load_hf_weights.
Tensor load_hf_group(const Transformer& model, int g, const WeightSource& src);
// The same values written straight into `dst` [numel(g)] of any dtype (each parameter converted
// once into its slice; the gaps untouched): no f32 copy of the group is made.
void fill_hf_group(const Transformer& model, int g, const WeightSource& src, const Tensor& dst);
// The HF-named tensors of one group given its full f32 values (export after a ZeRO gather).
std::vector<std::pair<std::string, Tensor>> export_hf_group(const Transformer& model, int g,
                                                            const Tensor& full);

// The HF-named tensors of the model (f32 or the params' dtype), ready for save_safetensors.
std::vector<std::pair<std::string, Tensor>> export_hf_weights(const Transformer& model,
                                                              const DenseParams& params);

}  // namespace zs::models
