// What makes an exported Hugging Face directory usable as it is, besides config.json and the
// weights: the tokenizer files and generation_config.json, so zerospeed generate and transformers
// both load the directory. Used by train --export-hf, the 16-bit model a checkpoint carries with
// stage3_gather_16bit_weights_on_model_save, and convert --to hf.
#pragma once

#include <string>

#include "models/config.h"

namespace zs::train {

// Writes the tokenizer of `tokenizer_source` into `dir`: an HF model directory's tokenizer files
// are copied as they are (tokenizer.json, tokenizer_config.json, tokenizer.model, vocab.json +
// merges.txt, special_tokens_map.json); a tokenizer.json file is copied with its
// tokenizer_config.json; a .gguf's (or any other) tokenizer is written as tokenizer.json +
// tokenizer_config.json (io/tokenizer_writer.h). Then generation_config.json: the source
// directory's, else bos/eos from `mc`. A tokenizer that cannot be written is a warning naming
// why (the weights stay usable); an empty source warns that the directory has no tokenizer.
void write_hf_extras(const std::string& tokenizer_source, const models::ModelConfig& mc,
                     const std::string& dir);

}  // namespace zs::train
