// Writing a tokenizer as a Hugging Face tokenizer directory: tokenizer.json (the `tokenizers`
// library's format) and tokenizer_config.json (special tokens, add_bos/eos, chat template), so a
// model zerospeed exports (from a GGUF, say, whose tokenizer lives in its metadata) loads in
// transformers' AutoTokenizer and in zerospeed as it is.
//
// Written as the tokenizers library spells each part:
//   byte-level BPE: pre_tokenizer Sequence[Split(regex, behavior) for each pre-split...,
//     ByteLevel(add_prefix_space, use_regex=false)], decoder ByteLevel, model BPE with the vocab,
//     the merges in rank order and ignore_merges;
//   SentencePiece-style BPE with a merge list: normalizer Sequence[Prepend("▁"), Replace(" ",
//     "▁")], decoder Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(1, 0)], byte_fallback
//     and fuse_unk as the spec says;
//   both: added_tokens with their flags; a TemplateProcessing post-processor when bos/eos are
//     added.
// Specs this cannot express faithfully (SentencePiece merges by piece score, tiktoken ranks, the
// Metaspace variants) are refused with NotSupported naming what is missing; nothing is written
// then.
#pragma once

#include <string>

#include "io/tokenizer_spec.h"

namespace zs::io {

// The tokenizer.json text for `spec` (throws NotSupported as above).
std::string hf_tokenizer_json(const TokenizerSpec& spec);
// The tokenizer_config.json text: bos/eos/unk/pad token strings, add_bos_token, add_eos_token,
// chat_template, tokenizer_class PreTrainedTokenizerFast.
std::string hf_tokenizer_config_json(const TokenizerSpec& spec);
// Both files into `dir` (created if needed), each written atomically.
void save_hf_tokenizer(const TokenizerSpec& spec, const std::string& dir);

}  // namespace zs::io
