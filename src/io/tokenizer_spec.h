// TokenizerSpec: a tokenizer described independently of any file format.
//
// Every loader (tokenizer.json, tokenizer.model, encoder.json + vocab.bpe, *.tiktoken) produces
// one of these, and Tokenizer::from_spec builds the runtime tables from it. From GGUF metadata:
//   tokenizer.ggml.model "llama": kSentencePieceBpe; tokens, scores, types (token_type - 1);
//     add_prefix_space = add_space_prefix (default true); byte_fallback = has byte tokens;
//     leading_space = kStripFirstPiece; added_tokens = the control (and unknown) tokens.
//   tokenizer.ggml.model "gpt2": kByteLevelBpe; tokens, types, merges ("a b" split at the space);
//     pre_splits / ignore_merges from gguf_pre_tokenizer(tokenizer.ggml.pre); added_tokens = the
//     control and user-defined tokens.
//   Both: bos/eos/unk/padding_token_id, add_bos_token / add_eos_token, chat_template.
//
// Invariants (checked by from_spec, which names the field on failure): tokens.size() is the
// vocabulary size; scores/types are empty or tokens.size() long; every id (added tokens, bos, eos,
// unk, pad) is < tokens.size(); merges name tokens that exist and whose concatenation exists.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zs::io {

enum class TokenizerModel {
    kByteLevelBpe,      // GPT-2 style: regex pre-tokens -> bytes -> BPE over byte symbols
    kSentencePieceBpe,  // SentencePiece style: "▁" for spaces, BPE over characters, byte fallback
};
const char* to_string(TokenizerModel m);

// SentencePiece's piece types, in the order of GGUF's token_type values 1-6 (0 is "undefined").
enum class TokenType { kNormal, kUnknown, kControl, kUserDefined, kUnused, kByte };
const char* to_string(TokenType t);

// How a Split pre-tokenizer treats the regex matches (Hugging Face SplitDelimiterBehavior).
enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };
const char* to_string(SplitBehavior b);

// One regex split step; the steps apply in order, each to every piece the previous produced.
struct PreSplit {
    std::string regex;  // PCRE2 syntax, compiled with UTF + UCP
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;  // split on what does NOT match
};

// A token matched literally in the input before pre-tokenization (HF "added_tokens").
struct AddedToken {
    int32_t id = -1;
    std::string content;
    bool special = true;       // skipped by decode(skip_special = true)
    bool lstrip = false;       // the match swallows whitespace on its left
    bool rstrip = false;       // ... and on its right
    bool single_word = false;  // only matches when not inside a word
    bool normalized = false;   // matched against normalized text (else the raw input)
};

// How decode treats the space that encoding prepended.
enum class LeadingSpace {
    kKeep,             // byte-level: the text is exactly the bytes
    kStripOutput,      // HF Strip decoder: drop one ' ' at the start of the whole output
    kStripFirstPiece,  // SentencePiece: drop the '▁' of the first piece that is not control
    kStripFirstToken,  // HF Metaspace decoder: drop the '▁' of the first token shown
};
const char* to_string(LeadingSpace s);

// Pre-tokenizer regexes of the known families (GGUF tokenizer.ggml.pre "gpt-2" / "llama-bpe").
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama-3's Split regex, which is also tiktoken's cl100k_base pattern.
inline constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The pre-tokenizer of a GGUF tokenizer.ggml.pre name ("default", "gpt-2", "llama-bpe", ...):
// sets spec.pre_splits (and ignore_merges, as Llama-3's tokenizer.json does). False when the
// name is not one this build knows.
struct TokenizerSpec;
bool gguf_pre_tokenizer(std::string_view pre, TokenizerSpec& spec);

struct TokenizerSpec {
    TokenizerModel model = TokenizerModel::kByteLevelBpe;
    std::string name;  // where it came from (file path), for messages

    // id -> token as the format spells it: byte-level tokens in GPT-2's byte->unicode alphabet
    // ("Ġthe"), SentencePiece pieces with "▁" ("▁the", "<0x0A>"). Added tokens sit at their id.
    std::vector<std::string> tokens;
    std::vector<float> scores;     // SentencePiece: higher merges first; empty for rank merges
    std::vector<TokenType> types;  // empty = derived (added specials control, "<0xXX>" bytes)

    // Merge rules in rank order ("Ġ", "t"). Empty for a SentencePiece model merged by scores.
    std::vector<std::pair<std::string, std::string>> merges;
    // tiktoken: no merge list; merging a+b has the rank (id) of the token a+b.
    bool merges_from_ranks = false;
    // HF BPE "ignore_merges" (and tiktoken): a pre-token that is itself a token is emitted whole.
    bool ignore_merges = false;

    std::vector<PreSplit> pre_splits;
    std::vector<AddedToken> added_tokens;

    // SentencePiece normalization: spaces become "▁"; with add_prefix_space a "▁" is prepended
    // to each non-empty text segment (each segment between added tokens; only the first segment
    // of the input when prefix_first_only); remove_extra_whitespaces trims and collapses ' '.
    // Byte-level: add_prefix_space prepends ' ' to a piece that does not start with one.
    bool add_prefix_space = false;
    bool prefix_first_only = false;
    bool prefix_unless_space = false;  // HF Metaspace: no "▁" when the segment starts with one
    bool remove_extra_whitespaces = false;
    bool split_on_space = false;  // HF Metaspace(split = true): BPE per "▁word"
    bool byte_fallback = false;   // unknown characters become <0xXX> tokens
    bool fuse_unk = false;        // consecutive unknown tokens become one
    LeadingSpace leading_space = LeadingSpace::kKeep;

    std::optional<int32_t> bos_id, eos_id, unk_id, pad_id;
    bool add_bos = false;  // encode(add_special = true) prepends bos
    bool add_eos = false;  // ... and appends eos

    std::optional<std::string> chat_template;  // Jinja source, when the files carry one
};

}  // namespace zs::io
