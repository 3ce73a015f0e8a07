// Tokenizer::Impl construction: validates a TokenizerSpec and builds the lookup tables (token ->
// id maps, decode bytes, byte symbols, the BPE pair table, the added-token tries, the regexes).
// Every inconsistency raises IoError naming spec.name and the field.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/error.h"
#include "io/tokenizer_impl.h"

namespace zs::io {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 "▁"

// "<0x0A>" -> 10; -1 when the token is not a byte token.
int parse_byte_token(std::string_view t) {
    if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
    auto hex = [](char c) {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
        if (s.compare(i, from.size(), from) == 0) {
            out += to;
            i += from.size();
        } else {
            out += s[i++];
        }
    }
    return out;
}

}  // namespace

void TokenTrie::insert(std::string_view s, int32_t value) {
    if (s.empty()) return;
    first_[static_cast<uint8_t>(s[0])] = true;
    int32_t node = 0;
    for (char c : s) {
        auto b = static_cast<uint8_t>(c);
        auto& next = nodes_[static_cast<size_t>(node)].next;
        auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(b, int32_t{-1}));
        if (it != next.end() && it->first == b) {
            node = it->second;
        } else {
            auto child = static_cast<int32_t>(nodes_.size());
            next.insert(it, {b, child});
            nodes_.emplace_back();
            node = child;
        }
    }
    nodes_[static_cast<size_t>(node)].value = value;
}

bool TokenTrie::longest_at(std::string_view s, size_t pos, size_t& len, int32_t& value) const {
    if (pos >= s.size() || !first_[static_cast<uint8_t>(s[pos])]) return false;
    int32_t node = 0;
    bool found = false;
    for (size_t i = pos; i < s.size(); ++i) {
        auto b = static_cast<uint8_t>(s[i]);
        const auto& next = nodes_[static_cast<size_t>(node)].next;
        auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(b, int32_t{-1}));
        if (it == next.end() || it->first != b) break;
        node = it->second;
        if (nodes_[static_cast<size_t>(node)].value >= 0) {
            found = true;
            len = i + 1 - pos;
            value = nodes_[static_cast<size_t>(node)].value;
        }
    }
    return found;
}

Tokenizer::Impl::Impl(TokenizerSpec s) : spec(std::move(s)) {
    const std::string& name = spec.name;
    ZS_CHECK_T(IoError, !spec.tokens.empty(), "{}: tokenizer has no tokens", name);
    ZS_CHECK_T(IoError, spec.tokens.size() < (size_t{1} << 30), "{}: {} tokens is too many", name,
               spec.tokens.size());
    n_vocab = static_cast<int32_t>(spec.tokens.size());
    ZS_CHECK_T(IoError, spec.scores.empty() || spec.scores.size() == spec.tokens.size(),
               "{}: {} scores for {} tokens", name, spec.scores.size(), spec.tokens.size());
    ZS_CHECK_T(IoError, spec.types.empty() || spec.types.size() == spec.tokens.size(),
               "{}: {} token types for {} tokens", name, spec.types.size(), spec.tokens.size());
    for (size_t i = 0; i < spec.scores.size(); ++i) {
        ZS_CHECK_T(IoError, !std::isnan(spec.scores[i]), "{}: the score of token {} is NaN", name,
                   i);
    }
    auto check_id = [&](const std::optional<int32_t>& id, const char* what) {
        ZS_CHECK_T(IoError, !id || (*id >= 0 && *id < n_vocab),
                   "{}: {} id {} is outside the vocabulary [0, {})", name, what, id.value_or(0),
                   n_vocab);
    };
    check_id(spec.bos_id, "bos");
    check_id(spec.eos_id, "eos");
    check_id(spec.unk_id, "unk");
    check_id(spec.pad_id, "pad");
    ZS_CHECK_T(IoError, !spec.add_bos || spec.bos_id, "{}: add_bos is set but there is no bos",
               name);
    ZS_CHECK_T(IoError, !spec.add_eos || spec.eos_id, "{}: add_eos is set but there is no eos",
               name);
    for (const AddedToken& t : spec.added_tokens) {
        ZS_CHECK_T(IoError, t.id >= 0 && t.id < n_vocab,
                   "{}: added token '{}' has id {} outside the vocabulary [0, {})", name, t.content,
                   t.id, n_vocab);
        ZS_CHECK_T(IoError, !t.content.empty(), "{}: added token {} has empty content", name, t.id);
    }
    build_vocab();
    build_merges();
    build_added();
    for (size_t i = 0; i < spec.pre_splits.size(); ++i) {
        splits.push_back(std::make_unique<Regex>(
            spec.pre_splits[i].regex, fmt::format("{}: pre-tokenizer split {}", name, i)));
    }
}

void Tokenizer::Impl::build_vocab() {
    const auto n = static_cast<size_t>(n_vocab);
    const bool byte_level = spec.model == TokenizerModel::kByteLevelBpe;
    std::vector<int32_t> added_at(n, -1);
    for (size_t i = 0; i < spec.added_tokens.size(); ++i) {
        added_at[static_cast<size_t>(spec.added_tokens[i].id)] = static_cast<int32_t>(i);
    }
    // Types: given, or derived (added specials control, added others user-defined, <0xXX> bytes
    // when byte fallback is on, unk unknown).
    types = spec.types;
    if (types.empty()) {
        types.assign(n, TokenType::kNormal);
        for (size_t id = 0; id < n; ++id) {
            if (added_at[id] >= 0) {
                types[id] = spec.added_tokens[static_cast<size_t>(added_at[id])].special
                                ? TokenType::kControl
                                : TokenType::kUserDefined;
            } else if (!byte_level && spec.byte_fallback &&
                       parse_byte_token(spec.tokens[id]) >= 0) {
                types[id] = TokenType::kByte;
            }
        }
        if (spec.unk_id) types[static_cast<size_t>(*spec.unk_id)] = TokenType::kUnknown;
    }
    special.assign(n, 0);
    out_bytes.resize(n);
    byte_ids.fill(-1);
    ByteUnicode alphabet;
    for (size_t id = 0; id < n; ++id) {
        const std::string& tok = spec.tokens[id];
        auto iid = static_cast<int32_t>(id);
        token_ids.emplace(tok, iid);  // the first id wins for a repeated spelling
        if (added_at[id] >= 0) {
            // Added tokens decode through the same per-token mapping as the rest (HF passes
            // them through its decoder): byte-level alphabet, or "▁" -> ' ' of the (normalized)
            // content.
            const AddedToken& a = spec.added_tokens[static_cast<size_t>(added_at[id])];
            special[id] = a.special ? 1 : 0;
            if (byte_level) {
                std::string raw;
                out_bytes[id] = alphabet.decode(a.content, raw) ? raw : a.content;
            } else {
                out_bytes[id] = replace_all(a.normalized ? normalize(a.content, false) : a.content,
                                            kSpace, " ");
            }
            continue;
        }
        TokenType type = types[id];
        if (type == TokenType::kControl) special[id] = 1;
        if (byte_level) {
            std::string raw;
            if (alphabet.decode(tok, raw)) {
                if (type == TokenType::kNormal) {
                    raw_ids.emplace(raw, iid);
                    if (raw.size() == 1) byte_ids[static_cast<uint8_t>(raw[0])] = iid;
                }
                out_bytes[id] = std::move(raw);
            } else {
                out_bytes[id] = tok;  // outside the byte alphabet: shown as spelled
            }
            continue;
        }
        switch (type) {
            case TokenType::kByte: {
                int b = parse_byte_token(tok);
                ZS_CHECK_T(IoError, b >= 0, "{}: token {} has type byte but is spelled '{}'",
                           spec.name, id, tok);
                out_bytes[id] = std::string(1, static_cast<char>(b));
                if (byte_ids[static_cast<size_t>(b)] < 0) byte_ids[static_cast<size_t>(b)] = iid;
                break;
            }
            case TokenType::kNormal:
            case TokenType::kUserDefined:
            case TokenType::kUnused:
                out_bytes[id] = replace_all(tok, kSpace, " ");
                piece_ids.emplace(tok, iid);
                if (type == TokenType::kUserDefined) user_defined.insert(tok, iid);
                if (type == TokenType::kUnused) has_unused = true;
                break;
            case TokenType::kControl:
            case TokenType::kUnknown:
                out_bytes[id] = tok;
                break;
        }
    }
    // Word-wise merging is exact when every mergeable piece is "▁"* then no "▁" (see spm_words).
    spm_words = !byte_level;
    for (size_t id = 0; id < n && spm_words; ++id) {
        TokenType t = types[id];
        if (added_at[id] >= 0 ||
            (t != TokenType::kNormal && t != TokenType::kUserDefined && t != TokenType::kUnused)) {
            continue;
        }
        std::string_view tok = spec.tokens[id];
        while (tok.substr(0, kSpace.size()) == kSpace) tok.remove_prefix(kSpace.size());
        spm_words = tok.find(kSpace) == std::string_view::npos;
    }
    // An added token spelled like an ordinary token maps to the added id (HF prefers added).
    for (const AddedToken& a : spec.added_tokens) token_ids[a.content] = a.id;
}

void Tokenizer::Impl::build_merges() {
    // Merge rules from (in order of preference) a merges list, tiktoken ranks, or piece scores.
    const bool byte_level = spec.model == TokenizerModel::kByteLevelBpe;
    PairTable& pairs = bpe.pairs();
    if (!spec.merges.empty()) {
        for (size_t i = 0; i < spec.merges.size(); ++i) {
            // Named references, not a structured binding: C++20 lambdas may not capture those
            // (clang 14 refuses; the fuzz build uses it).
            const std::string& a = spec.merges[i].first;
            const std::string& b = spec.merges[i].second;
            auto find = [&](const std::string& t) {
                auto it = token_ids.find(t);
                ZS_CHECK_T(IoError, it != token_ids.end(),
                           "{}: merge {} ('{} {}') names '{}', which is not in the vocabulary",
                           spec.name, i, a, b, t);
                return it->second;
            };
            int32_t l = find(a), r = find(b), m = find(a + b);
            pairs.insert(l, r, {static_cast<int32_t>(i), m});
        }
        return;
    }
    if (spec.merges_from_ranks) {
        // tiktoken: a+b merges with the rank (= id) of the token a+b, for every split of every
        // token into two tokens.
        for (const auto& [raw, id] : raw_ids) {
            for (size_t k = 1; k < raw.size(); ++k) {
                auto l = raw_ids.find(std::string_view(raw).substr(0, k));
                if (l == raw_ids.end()) continue;
                auto r = raw_ids.find(std::string_view(raw).substr(k));
                if (r == raw_ids.end()) continue;
                pairs.insert(l->second, r->second, {id, id});
            }
        }
        return;
    }
    if (byte_level || spec.scores.empty()) return;  // no merge rules: symbols stay as they are
    // SentencePiece by score: rank = dense rank of the score, highest first; every split of a
    // piece into two symbols (pieces, or single characters that are not pieces) merges into it.
    std::vector<int32_t> order(static_cast<size_t>(n_vocab));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) {
        return spec.scores[static_cast<size_t>(x)] > spec.scores[static_cast<size_t>(y)];
    });
    std::vector<int32_t> rank(static_cast<size_t>(n_vocab), 0);
    int32_t r = 0;
    for (size_t i = 0; i < order.size(); ++i) {
        if (i > 0 && spec.scores[static_cast<size_t>(order[i])] !=
                         spec.scores[static_cast<size_t>(order[i - 1])]) {
            ++r;
        }
        rank[static_cast<size_t>(order[i])] = r;
    }
    int32_t next_synthetic = n_vocab;
    auto symbol = [&](std::string_view s) -> int32_t {
        auto it = piece_ids.find(s);
        if (it != piece_ids.end()) return it->second;
        if (utf8_valid_len(s, 0) != s.size()) return -1;  // not a single character
        piece_ids.emplace(std::string(s), next_synthetic);
        return next_synthetic++;
    };
    std::vector<std::pair<std::string, int32_t>> pieces;
    for (size_t id = 0; id < spec.tokens.size(); ++id) {
        TokenType t = types[id];
        if (t == TokenType::kNormal || t == TokenType::kUserDefined || t == TokenType::kUnused) {
            pieces.emplace_back(spec.tokens[id], static_cast<int32_t>(id));
        }
    }
    for (const auto& [piece, id] : pieces) {
        std::string_view p = piece;
        size_t k = utf8_valid_len(p, 0);
        if (k == 0) k = 1;
        while (k < p.size()) {
            int32_t l = symbol(p.substr(0, k));
            int32_t rr = l < 0 ? -1 : symbol(p.substr(k));
            if (l >= 0 && rr >= 0) pairs.insert(l, rr, {rank[static_cast<size_t>(id)], id});
            size_t step = utf8_valid_len(p, k);
            k += step == 0 ? 1 : step;
        }
    }
    if (has_unused) {
        std::vector<bool> unused(static_cast<size_t>(n_vocab), false);
        for (size_t id = 0; id < types.size(); ++id) unused[id] = types[id] == TokenType::kUnused;
        bpe.set_unused(std::move(unused));
    }
}

void Tokenizer::Impl::build_added() {
    for (size_t i = 0; i < spec.added_tokens.size(); ++i) {
        const AddedToken& a = spec.added_tokens[i];
        if (a.single_word && !word_char) {
            word_char =
                std::make_unique<Regex>(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])",
                                        "Unicode word character class");
        }
        if (a.normalized) {
            normalized_added.insert(normalize(a.content, false), static_cast<int32_t>(i));
        } else {
            raw_added.insert(a.content, static_cast<int32_t>(i));
        }
    }
}

}  // namespace zs::io
