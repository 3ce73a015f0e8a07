// TokenIndex: a vocabulary as the raw bytes each token appends to the output, arranged so that a
// constraint (JsonMatcher) can compute the set of allowed tokens at every decode step without
// trying 50k tokens one by one:
//
//   - a byte trie of all tokens in preorder (node i's subtree is nodes [i, end)): tokens sharing
//     a prefix are checked once, and a rejected byte skips its whole subtree;
//   - for JSON string content, the state in which nearly every token is valid: each "plain"
//     token (no '"', '\\' or control byte) has its UTF-8 exit state precomputed for each of the
//     8 UTF-8 entry states, and the tokens that are not plain get their own, small trie.
//
// Built once per model (from_tokenizer) and shared read-only by every sequence: immutable, safe to
// use from any thread. Token bytes: byte-level BPE pieces mapped back to raw bytes, SentencePiece
// "▁" as a space, byte-fallback <0xNN> as the byte; special, control and unknown tokens get ""
// (never allowed by a grammar; EOS is allowed separately by the engine).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace zs::io {
class Tokenizer;
}

namespace zs::infer {

// UTF-8 validation as an automaton (RFC 3629, as nlohmann::json checks it: no overlong forms, no
// surrogates, nothing above U+10FFFF). States: 0 between characters; 1 one continuation byte
// left; 2 two left; 3 two left, the first in A0-BF (after E0); 4 two left, the first in 80-9F
// (after ED); 5 three left; 6 three left, the first in 90-BF (after F0); 7 three left, the first
// in 80-8F (after F4).
inline constexpr uint8_t kUtf8Bad = 0xFF;
inline constexpr int kUtf8States = 8;
inline uint8_t utf8_step(uint8_t state, uint8_t c) {
    switch (state) {
        case 0:
            if (c < 0x80) return 0;
            if (c >= 0xC2 && c <= 0xDF) return 1;
            if (c == 0xE0) return 3;
            if (c == 0xED) return 4;
            if (c >= 0xE1 && c <= 0xEF) return 2;
            if (c == 0xF0) return 6;
            if (c >= 0xF1 && c <= 0xF3) return 5;
            if (c == 0xF4) return 7;
            return kUtf8Bad;
        case 1:
            return c >= 0x80 && c <= 0xBF ? 0 : kUtf8Bad;
        case 2:
            return c >= 0x80 && c <= 0xBF ? 1 : kUtf8Bad;
        case 3:
            return c >= 0xA0 && c <= 0xBF ? 1 : kUtf8Bad;
        case 4:
            return c >= 0x80 && c <= 0x9F ? 1 : kUtf8Bad;
        case 5:
            return c >= 0x80 && c <= 0xBF ? 2 : kUtf8Bad;
        case 6:
            return c >= 0x90 && c <= 0xBF ? 2 : kUtf8Bad;
        case 7:
            return c >= 0x80 && c <= 0x8F ? 2 : kUtf8Bad;
        default:
            return kUtf8Bad;
    }
}

// A byte of JSON string content that needs no escape and no special handling (UTF-8 aside).
inline bool json_plain_byte(uint8_t c) { return c >= 0x20 && c != '"' && c != '\\'; }

class TokenIndex {
public:
    // A byte trie over a set of tokens, in preorder. Node i (depth >= 1; the root is implicit)
    // spells the bytes on the path to it, its last one `byte`; its subtree is nodes [i, end);
    // the tokens spelled exactly by it are tokens[tok_begin, nodes[i + 1].tok_begin) (a sentinel
    // node ends the array).
    struct Trie {
        struct Node {
            uint32_t end = 0;
            uint32_t tok_begin = 0;
            uint16_t depth = 0;
            uint8_t byte = 0;
        };
        std::vector<Node> nodes;
        std::vector<int32_t> tokens;
        size_t n_nodes() const { return nodes.empty() ? 0 : nodes.size() - 1; }
    };

    // bytes[id]: what token id appends to the output; "" for a token no grammar allows.
    explicit TokenIndex(std::vector<std::string> bytes);
    // Token bytes of `tok` for ids [0, n_vocab) (a model may have more rows than the tokenizer
    // has tokens: those ids get "").
    static std::shared_ptr<const TokenIndex> from_tokenizer(const io::Tokenizer& tok,
                                                            int64_t n_vocab);
    TokenIndex(const TokenIndex&) = delete;
    TokenIndex& operator=(const TokenIndex&) = delete;

    int64_t size() const { return static_cast<int64_t>(bytes_.size()); }
    const std::string& bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }
    size_t max_token_bytes() const { return max_len_; }

    const Trie& all() const { return all_; }              // every token with bytes
    const Trie& not_plain() const { return not_plain_; }  // tokens with a non-plain byte
    // Plain tokens (every byte json_plain_byte): ids, and per token the UTF-8 state after it for
    // each entry state (plain_exit[i * 8 + s], kUtf8Bad: invalid) and the characters it starts.
    const std::vector<int32_t>& plain() const { return plain_; }
    const std::vector<uint8_t>& plain_exit() const { return plain_exit_; }
    const std::vector<uint32_t>& plain_chars() const { return plain_chars_; }

private:
    std::vector<std::string> bytes_;
    size_t max_len_ = 0;
    Trie all_, not_plain_;
    std::vector<int32_t> plain_;
    std::vector<uint8_t> plain_exit_;
    std::vector<uint32_t> plain_chars_;
};

}  // namespace zs::infer
