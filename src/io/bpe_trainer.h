// Training a byte-level BPE tokenizer (GPT-2's scheme) on text: pre-tokenize with GPT-2's regex,
// count words, then repeatedly merge the most frequent adjacent pair (ties: the smallest pair in
// token-id order, so training is deterministic) until the vocabulary holds `vocab_size` tokens:
// 256 byte tokens, the merges, and <|endoftext|> last. The result is a Hugging Face tokenizer.json
// that io::Tokenizer (and HF tokenizers) load; `zerospeed tokenizer train` writes it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zs::io {

struct BpeTrainResult {
    std::vector<std::string> tokens;  // id -> token in GPT-2's byte-to-unicode alphabet
    std::vector<std::pair<std::string, std::string>> merges;  // rank order
    int32_t eos_id = -1;                                      // <|endoftext|>
};

// progress(merges_done, merges_total) is called now and then.
BpeTrainResult train_byte_level_bpe(const std::vector<std::string_view>& texts, int32_t vocab_size,
                                    const std::function<void(int64_t, int64_t)>& progress = {});

// The tokenizer.json text (ByteLevel pre-tokenizer with GPT-2's regex, BPE model, ByteLevel
// decoder, <|endoftext|> as a special added token).
std::string to_tokenizer_json(const BpeTrainResult& r);

}  // namespace zs::io
