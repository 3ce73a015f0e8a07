// Loading a model for inference from a path (HF directory or .gguf): config, weights in the
// chosen compute dtype, tokenizer, chat template and HF generation defaults. Shared by generate,
// info, serve and bench.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "comm/communicator.h"
#include "infer/sampler.h"
#include "io/tokenizer.h"
#include "models/params.h"
#include "models/sources.h"
#include "models/transformer.h"
#include "zero/inference.h"

namespace zs::cli {

using core::DType;
using core::Tensor;

struct LoadedModel {
    models::ModelFiles files;
    std::unique_ptr<models::Transformer> model;
    std::unique_ptr<models::DenseParams> params;
    std::unique_ptr<io::Tokenizer> tokenizer;
    std::optional<std::string> chat_template;   // tokenizer_config.json's, when present
    infer::SamplingParams generation_defaults;  // from generation_config.json (greedy without one)
    std::vector<int32_t> extra_stop_ids;        // generation_config.json eos_token_id
    // --offload-weights: the blocks stream from the tier (params then holds nothing); pass it to
    // forward_tokens as the hooks. Declared after model: destroyed first.
    std::unique_ptr<zero::WeightStream> stream;
};

// dtype: "f32", "bf16" or "auto": the checkpoint's own precision where this CPU computes it
// natively (a bf16/f16 checkpoint, or a GGUF with reduced-precision or quantized matrices, runs
// in bf16 on a CPU with AMX or AVX-512-BF16), f32 otherwise, as vLLM follows torch_dtype and
// llama.cpp the file's type. The choice and why is logged. weights_only = false also loads the
// tokenizer. `tp` (size > 1): the tensor-parallel group; the model holds this rank's shard.
// `ep` (size > 1): the expert-parallel group (MoE models); the model holds E / ep experts of each
// layer and exchanges routed rows over it (every rank runs the same tokens).
// `stream` (ZeRO-Inference, --offload-weights): the embedding and head load into memory and every
// block goes to the tier one at a time (zero::WeightStream); quantized GGUF matrices are
// dequantized to the compute dtype.
LoadedModel load_model(const std::string& path, const std::string& dtype, bool weights_only,
                       comm::Communicator* tp = nullptr, comm::Communicator* ep = nullptr,
                       const zero::StreamConfig* stream = nullptr);
// "4G", "512M", "1.5GiB", "1000000": bytes (K, M, G, T are powers of 1024, as cgroups and
// docker read them). ConfigError naming `flag` otherwise.
int64_t parse_memory_size(const std::string& s, const char* flag);
// The groups of generate/serve --tp T --ep E: the world must be exactly T x E ranks (inference
// runs no data parallelism). tp alone: the world; ep alone: the world; both (DeepSpeed-TED): tp
// groups of consecutive ranks, each ep group the same tp rank's peers. Null where the degree is
// 1. ConfigError naming the flags and the launch command otherwise.
struct InferenceGroups {
    comm::Communicator* tp = nullptr;
    comm::Communicator* ep = nullptr;
    std::unique_ptr<comm::Communicator> owned_tp, owned_ep;  // the split groups under TED
};
InferenceGroups inference_groups(int tp, int ep, comm::Communicator& world, const char* command);
// generate/serve --offload-weights and its flags: the WeightStream's settings, or nullopt without
// --offload-weights; `memory_cap` bytes (0: none) as the stream's budget. ConfigError naming
// `command` when --offload-path comes without --offload-weights, or when offloading would run on
// more than one rank or with --tp / --ep (tensor- and expert-parallel ranks stream no weights).
std::optional<zero::StreamConfig> offload_stream_config(const OffloadOptions& o, int64_t memory_cap,
                                                        int tp, int ep,
                                                        const comm::Communicator& world,
                                                        const char* command);
DType parse_dtype_flag(const std::string& s, const char* flag);

}  // namespace zs::cli
