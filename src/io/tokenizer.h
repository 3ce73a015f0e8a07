// Tokenizer: text <-> token ids, exactly as the reference implementations of its files do.
//
//   auto tok = zs::io::Tokenizer::load("models/llama3");          // dir or file, see load()
//   std::vector<int32_t> ids = tok.encode("Hello world", /*add_special=*/true);
//   std::string text = tok.decode(ids, /*skip_special=*/true);
//
// Two model families cover GPT-2, Llama-3, Mistral and Llama-2 (and GGUF "gpt2" / "llama"):
// byte-level BPE (regex pre-tokenizer, bytes mapped to GPT-2's alphabet, merges by rank) and
// SentencePiece-style BPE (spaces as "▁", merges by rank or by piece score, byte fallback).
// Encoding runs: added/special tokens split out of the raw text -> per segment normalization
// ("▁") -> regex pre-tokenization -> BPE per piece. Decoding maps each id to bytes (byte-level
// reverse map, "▁" -> ' ', <0xXX> -> the byte), applies the leading-space rule of the format and
// repairs invalid UTF-8 with U+FFFD. StreamDecoder (tokenizer_stream.h) decodes incrementally
// with the same rules.
//
// Thread-safety: a loaded Tokenizer is immutable; encode/decode may run concurrently (the word
// cache and regex scratch are internally locked). Tokenizer is move-only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer_spec.h"

namespace zs::io {

struct TokenizerLoadOptions {
    // Pre-tokenizer regex for a *.tiktoken file whose name is not r50k_base / cl100k_base.
    std::optional<std::string> tiktoken_pattern;
    // Special tokens of such a file (appended after its ranks when id < 0).
    std::vector<AddedToken> tiktoken_specials;
};

// Reads a tokenizer's files into a format-independent spec (what Tokenizer::load builds from);
// same paths and errors as Tokenizer::load.
TokenizerSpec load_tokenizer_spec(const std::string& path,
                                  const TokenizerLoadOptions& options = {});

class Tokenizer {
public:
    // Loads by path. A directory: tokenizer.json (+ tokenizer_config.json) is preferred, else
    // tokenizer.model, else vocab.json + merges.txt, else encoder.json + vocab.bpe. A file:
    // *.json (a tokenizer.json; encoder.json / vocab.json pair with vocab.bpe / merges.txt
    // beside them), *.model (SentencePiece ModelProto), *.tiktoken (ranks; the pattern is known
    // for r50k_base and cl100k_base, else options.tiktoken_pattern is required), *.gguf (the
    // tokenizer in its metadata). Throws IoError
    // (missing/truncated/malformed file, naming it and the field), NotSupported (a valid file
    // using a model, normalizer or pre-tokenizer this build does not implement).
    static Tokenizer load(const std::string& path, const TokenizerLoadOptions& options = {});
    // Builds from a format-independent description; throws IoError naming spec.name and the
    // offending field when the spec is inconsistent (see tokenizer_spec.h).
    static Tokenizer from_spec(TokenizerSpec spec);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    // Token ids of `text` (UTF-8; invalid bytes are kept losslessly as byte tokens where the
    // vocabulary allows). add_special: prepend bos / append eos as the files ask. parse_special:
    // added tokens written literally in the text become their ids (false for untrusted text that
    // must not smuggle in control tokens such as "<|eot_id|>"). Throws zs::Error naming the
    // pattern when a pre-tokenizer regex from the files exceeds its backtracking limit.
    std::vector<int32_t> encode(std::string_view text, bool add_special = false,
                                bool parse_special = true) const;
    // Text of `ids`. skip_special drops special added tokens (bos, eos, ...). Throws zs::Error
    // naming the id when one is outside [0, vocab_size()).
    std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

    int32_t vocab_size() const;
    // The token as its file spells it ("Ġthe", "▁the", "<|eot_id|>"); throws on a bad id.
    const std::string& id_to_token(int32_t id) const;
    std::optional<int32_t> token_to_id(std::string_view token) const;
    TokenType token_type(int32_t id) const;
    bool is_special(int32_t id) const;  // skipped by decode(skip_special = true)

    TokenizerModel model() const;
    std::optional<int32_t> bos_id() const;
    std::optional<int32_t> eos_id() const;
    std::optional<int32_t> unk_id() const;
    std::optional<int32_t> pad_id() const;
    bool add_bos() const;
    bool add_eos() const;
    const std::vector<AddedToken>& added_tokens() const;
    // Ids that end a generation: eos plus the end-of-turn specials the vocabulary has
    // (<|eot_id|>, <|eom_id|>, <|im_end|>, <|end|>, <|endoftext|>, </s>, ...).
    std::vector<int32_t> stop_ids() const;
    const std::optional<std::string>& chat_template() const;
    const std::string& name() const;

    // Incremental decoding state: appends the bytes id contributes (possibly a partial UTF-8
    // character) to `out`. decode() is this over all ids followed by UTF-8 repair; StreamDecoder
    // uses it too, so both produce the same text.
    struct DecodeState {
        bool at_start = true;  // the leading-space rule has not been applied yet
    };
    void append_bytes(int32_t id, bool skip_special, DecodeState& state, std::string& out) const;

private:
    struct Impl;
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace zs::io
