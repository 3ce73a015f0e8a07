// Internal: the runtime tables behind zs::io::Tokenizer (built once by from_spec, then read-only
// apart from the locked word cache), the literal-token trie, and the loaders that turn each file
// format into a TokenizerSpec. Not part of the public API; include only from src/io/tokenizer*.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/bpe.h"
#include "io/tokenizer.h"
#include "io/tokenizer_regex.h"
#include "io/tokenizer_utf8.h"

namespace zs::io {

struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Byte trie over literal strings; longest_at finds the longest one starting at a position.
class TokenTrie {
public:
    void insert(std::string_view s, int32_t value);
    bool empty() const { return nodes_.size() <= 1; }
    // Longest inserted string that starts at s[pos]: sets len and value, false when none does.
    bool longest_at(std::string_view s, size_t pos, size_t& len, int32_t& value) const;

private:
    struct Node {
        int32_t value = -1;
        std::vector<std::pair<uint8_t, int32_t>> next;  // sorted by byte
    };
    std::vector<Node> nodes_{Node{}};
    std::array<bool, 256> first_{};
};

// A text range, or an added token (token >= 0) found in it.
struct Segment {
    size_t begin, end;
    int32_t token;
};

struct Tokenizer::Impl {
    TokenizerSpec spec;
    int32_t n_vocab = 0;
    std::vector<TokenType> types;        // [V]
    std::vector<std::string> out_bytes;  // [V] bytes a token decodes to
    std::vector<uint8_t> special;        // [V] skipped by decode(skip_special)
    StringMap token_ids;                 // spelled token -> id
    std::array<int32_t, 256> byte_ids;   // byte-level: symbol of each byte; SPM: <0xXX>; -1 none

    // Byte-level: raw bytes of each ordinary token -> id (ignore_merges, tiktoken ranks).
    StringMap raw_ids;
    // SentencePiece: strings a symbol may hold -> id (pieces, plus single characters that only
    // occur inside pieces, given ids >= n_vocab).
    StringMap piece_ids;
    TokenTrie user_defined;  // SentencePiece user-defined pieces: matched first, never merged
    bool has_unused = false;

    Bpe bpe;
    std::vector<std::unique_ptr<Regex>> splits;  // one per spec.pre_splits entry
    TokenTrie raw_added, normalized_added;       // values index spec.added_tokens
    std::unique_ptr<Regex> word_char;            // Unicode \w, when a token is single_word

    // SentencePiece: every piece is "▁"* followed by non-"▁" characters, so no merge crosses a
    // point where "▁" follows another character; text is merged word by word between them.
    bool spm_words = false;

    mutable std::mutex cache_mu;
    mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>
        cache;  // GUARDED_BY(cache_mu): piece -> ids

    // Built in tokenizer_build.cpp.
    explicit Impl(TokenizerSpec s);

    // tokenizer_encode.cpp
    void encode(std::string_view text, bool add_special, bool parse_special,
                std::vector<int32_t>& out) const;
    std::string normalize(std::string_view segment, bool at_input_start) const;

private:
    void build_vocab();
    void build_merges();
    void build_added();
    void split_added(std::string_view s, const TokenTrie& trie, std::vector<Segment>& out) const;
    bool is_word_char(std::string_view s, size_t at, bool before) const;
    void encode_segment(std::string_view segment, bool at_input_start, BpeWork& work,
                        std::vector<int32_t>& out) const;
    void pre_split(std::string_view text, std::vector<std::pair<size_t, size_t>>& pieces) const;
    void encode_bytes_piece(std::string_view piece, BpeWork& work, std::vector<int32_t>& out) const;
    void encode_spm_piece(std::string_view piece, BpeWork& work, std::vector<int32_t>& out) const;
    void encode_spm_word(std::string_view word, BpeWork& work, std::vector<int32_t>& out) const;
    bool cache_get(std::string_view piece, std::vector<int32_t>& out) const;
    void cache_put(std::string_view piece, const int32_t* ids, size_t n) const;
    void resegment(int32_t id, const std::unordered_map<int32_t, std::pair<int32_t, int32_t>>& rev,
                   std::vector<int32_t>& out) const;
};

// Loaders (one file each): each returns a spec or throws IoError / NotSupported naming the file.
std::string read_tokenizer_file(const std::string& path);
TokenizerSpec load_hf_tokenizer_json(const std::string& path);
// A tokenizer.json's text (`path` names it in errors); config_path, when not empty, is the
// tokenizer_config.json whose special tokens and chat template apply.
TokenizerSpec parse_hf_tokenizer_json(const std::string& text, const std::string& path,
                                      const std::string& config_path = {});
TokenizerSpec load_gpt2_vocab(const std::string& vocab_json, const std::string& merges_txt);
TokenizerSpec load_sentencepiece_model(const std::string& path);
TokenizerSpec load_tiktoken(const std::string& path, const TokenizerLoadOptions& options);

}  // namespace zs::io
