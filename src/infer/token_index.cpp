// TokenIndex construction: token bytes from a tokenizer, the preorder tries, the plain tables.
#include "infer/token_index.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "base/error.h"
#include "io/tokenizer.h"

namespace zs::infer {

namespace {

TokenIndex::Trie build_trie(const std::vector<std::string>& bytes, std::vector<int32_t> ids) {
    std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
        const std::string& x = bytes[static_cast<size_t>(a)];
        const std::string& y = bytes[static_cast<size_t>(b)];
        return x != y ? x < y : a < b;
    });
    TokenIndex::Trie t;
    std::vector<uint32_t> path;  // path[d - 1]: the open node at depth d
    const std::string* prev = nullptr;
    for (int32_t id : ids) {
        const std::string& s = bytes[static_cast<size_t>(id)];
        size_t common = 0;
        if (prev) {
            const size_t n = std::min({prev->size(), s.size(), path.size()});
            while (common < n && (*prev)[common] == s[common]) ++common;
        }
        while (path.size() > common) {
            t.nodes[path.back()].end = static_cast<uint32_t>(t.nodes.size());
            path.pop_back();
        }
        for (size_t d = common; d < s.size(); ++d) {
            TokenIndex::Trie::Node n;
            n.tok_begin = static_cast<uint32_t>(t.tokens.size());
            n.depth = static_cast<uint16_t>(d + 1);
            n.byte = static_cast<uint8_t>(s[d]);
            path.push_back(static_cast<uint32_t>(t.nodes.size()));
            t.nodes.push_back(n);
        }
        t.tokens.push_back(id);
        prev = &s;
    }
    while (!path.empty()) {
        t.nodes[path.back()].end = static_cast<uint32_t>(t.nodes.size());
        path.pop_back();
    }
    TokenIndex::Trie::Node sentinel;
    sentinel.tok_begin = static_cast<uint32_t>(t.tokens.size());
    sentinel.end = static_cast<uint32_t>(t.nodes.size() + 1);
    t.nodes.push_back(sentinel);
    return t;
}

}  // namespace

TokenIndex::TokenIndex(std::vector<std::string> bytes) : bytes_(std::move(bytes)) {
    std::vector<int32_t> with_bytes, not_plain;
    for (size_t i = 0; i < bytes_.size(); ++i) {
        const std::string& s = bytes_[i];
        if (s.empty()) continue;
        ZS_CHECK_T(ConfigError, s.size() < 65535, "token {} is {} bytes long", i, s.size());
        max_len_ = std::max(max_len_, s.size());
        const auto id = static_cast<int32_t>(i);
        with_bytes.push_back(id);
        const bool plain = std::all_of(
            s.begin(), s.end(), [](char c) { return json_plain_byte(static_cast<uint8_t>(c)); });
        if (!plain) {
            not_plain.push_back(id);
            continue;
        }
        plain_.push_back(id);
        uint32_t chars = 0;
        for (char c : s) chars += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
        plain_chars_.push_back(chars);
        for (int entry = 0; entry < kUtf8States; ++entry) {
            uint8_t st = static_cast<uint8_t>(entry);
            for (char c : s) {
                st = utf8_step(st, static_cast<uint8_t>(c));
                if (st == kUtf8Bad) break;
            }
            plain_exit_.push_back(st);
        }
    }
    all_ = build_trie(bytes_, std::move(with_bytes));
    not_plain_ = build_trie(bytes_, std::move(not_plain));
}

std::shared_ptr<const TokenIndex> TokenIndex::from_tokenizer(const io::Tokenizer& tok,
                                                             int64_t n_vocab) {
    std::vector<std::string> bytes(static_cast<size_t>(n_vocab));
    const int64_t n = std::min<int64_t>(n_vocab, tok.vocab_size());
    for (int64_t i = 0; i < n; ++i) {
        const auto id = static_cast<int32_t>(i);
        const io::TokenType type = tok.token_type(id);
        if (tok.is_special(id) || type == io::TokenType::kControl ||
            type == io::TokenType::kUnknown || type == io::TokenType::kUnused) {
            continue;
        }
        io::Tokenizer::DecodeState state;
        state.at_start = false;  // the token's own bytes, no leading-space rule
        tok.append_bytes(id, false, state, bytes[static_cast<size_t>(i)]);
    }
    return std::make_shared<const TokenIndex>(std::move(bytes));
}

}  // namespace zs::infer
