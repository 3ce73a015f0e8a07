// GGUF -> Hugging Face conversion (the tokenizer and generation config through
// train::write_hf_extras).
#pragma once

#include <string>

#include "cli/commands.h"
#include "models/config.h"

namespace zs::cli {

// `zerospeed convert --model M.gguf --to hf --output DIR [--dtype f32|bf16]`: the GGUF's weights
// dequantized (one parameter group at a time), llama.cpp's Q/K row order undone, as safetensors
// shards with an index, plus config.json and train::write_hf_extras. transformers loads the result.
int convert_gguf_to_hf(const ConvertOptions& o);

}  // namespace zs::cli
