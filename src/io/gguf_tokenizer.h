// The tokenizer a GGUF file carries in its metadata (tokenizer.ggml.*), as a TokenizerSpec, so
// a .gguf model is self-contained (llama.cpp's convention). Supports tokenizer.ggml.model "gpt2"
// (byte-level BPE with merges; pre-tokenizer from tokenizer.ggml.pre) and "llama" (SentencePiece
// BPE by scores with byte fallback). Missing or mistyped keys are IoErrors naming the key.
#pragma once

#include "io/gguf.h"
#include "io/tokenizer.h"

namespace zs::io {

TokenizerSpec tokenizer_spec_from_gguf(const GgufFile& file);
inline Tokenizer tokenizer_from_gguf(const GgufFile& file) {
    return Tokenizer::from_spec(tokenizer_spec_from_gguf(file));
}

}  // namespace zs::io
