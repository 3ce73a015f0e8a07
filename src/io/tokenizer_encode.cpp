// Tokenizer::Impl::encode: the encoding pipeline.
//
//   text --split_added(raw)--> segments --normalize--> "▁Hello▁world" (SentencePiece) or as is
//        --split_added(normalized)--> --pre_split (regex steps)--> pieces --BPE--> ids
//
// Byte-level pieces are merged over byte symbols (cached per piece); SentencePiece pieces over
// characters, then symbols without a token fall back to <0xXX> byte tokens (or unk).
#include <algorithm>

#include "base/error.h"
#include "io/tokenizer_impl.h"

namespace zs::io {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 "▁"
constexpr size_t kCacheMaxEntries = 1 << 16;
constexpr size_t kCacheMaxPiece = 128;

// Unicode White_Space (what Rust's char::is_whitespace accepts), for added-token lstrip/rstrip.
bool is_space_cp(char32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

// Length of the whitespace character starting at s[i] (0 if none).
size_t space_at(std::string_view s, size_t i) {
    size_t n = utf8_valid_len(s, i);
    return n > 0 && is_space_cp(decode_utf8(s, i, n)) ? n : 0;
}

// Length of the whitespace character ending at s[i - 1] (0 if none).
size_t space_before(std::string_view s, size_t i) {
    for (size_t back = 1; back <= 4 && back <= i; ++back) {
        size_t n = utf8_valid_len(s, i - back);
        if (n == back) return is_space_cp(decode_utf8(s, i - back, n)) ? n : 0;
    }
    return 0;
}

// Applies a Split behaviour to one piece: `parts` lists the piece's consecutive ranges with
// whether each is a delimiter (a regex match, or a gap when inverted).
void apply_behavior(SplitBehavior behavior,
                    const std::vector<std::pair<std::pair<size_t, size_t>, bool>>& parts,
                    std::vector<std::pair<size_t, size_t>>& out) {
    switch (behavior) {
        case SplitBehavior::kIsolated:
            for (const auto& [r, delim] : parts) out.push_back(r);
            return;
        case SplitBehavior::kRemoved:
            for (const auto& [r, delim] : parts) {
                if (!delim) out.push_back(r);
            }
            return;
        case SplitBehavior::kMergedWithPrevious: {
            bool prev_text = false;  // the last emitted range may absorb a delimiter
            for (const auto& [r, delim] : parts) {
                if (delim && prev_text) {
                    out.back().second = r.second;
                    prev_text = false;
                } else {
                    out.push_back(r);
                    prev_text = !delim;
                }
            }
            return;
        }
        case SplitBehavior::kMergedWithNext: {
            bool pending = false;  // the last emitted range is a delimiter awaiting its text
            for (const auto& [r, delim] : parts) {
                if (pending && !delim) {
                    out.back().second = r.second;
                    pending = false;
                } else {
                    out.push_back(r);
                    pending = delim;
                }
            }
            return;
        }
        case SplitBehavior::kContiguous: {
            bool prev_delim = false;
            for (const auto& [r, delim] : parts) {
                if (delim && prev_delim) {
                    out.back().second = r.second;
                } else {
                    out.push_back(r);
                }
                prev_delim = delim;
            }
            return;
        }
    }
}

}  // namespace

bool Tokenizer::Impl::is_word_char(std::string_view s, size_t at, bool before) const {
    // The character just before (or at) `at`, tested against Unicode's \w (UTS #18), which is
    // what HF's single_word boundary uses: "²" is not a word character, "é", "٣", "_" are.
    size_t b = at, e = at;
    if (before) {
        if (at == 0) return false;
        b = at - 1;
        while (b > 0 && (static_cast<uint8_t>(s[b]) & 0xC0) == 0x80 && at - b < 4) --b;
    } else {
        if (at >= s.size()) return false;
        size_t n = utf8_valid_len(s, at);
        e = at + (n == 0 ? 1 : n);
    }
    if (before) e = at;
    std::vector<std::pair<size_t, size_t>> m;
    word_char->find_all(s.substr(b, e - b), m);
    return !m.empty();
}

void Tokenizer::Impl::split_added(std::string_view s, const TokenTrie& trie,
                                  std::vector<Segment>& out) const {
    size_t text_begin = 0, pos = 0;
    while (pos < s.size()) {
        size_t len = 0;
        int32_t idx = -1;
        if (!trie.longest_at(s, pos, len, idx)) {
            ++pos;
            continue;
        }
        const AddedToken& a = spec.added_tokens[static_cast<size_t>(idx)];
        size_t b = pos, e = pos + len;
        if (a.single_word && (is_word_char(s, b, true) || is_word_char(s, e, false))) {
            ++pos;
            continue;
        }
        if (a.lstrip) {
            while (b > text_begin) {
                size_t n = space_before(s, b);
                if (n == 0) break;
                b -= n;
            }
        }
        if (a.rstrip) {
            while (e < s.size()) {
                size_t n = space_at(s, e);
                if (n == 0) break;
                e += n;
            }
        }
        if (b > text_begin) out.push_back({text_begin, b, -1});
        out.push_back({b, e, a.id});
        text_begin = pos = e;
    }
    if (text_begin < s.size()) out.push_back({text_begin, s.size(), -1});
}

std::string Tokenizer::Impl::normalize(std::string_view segment, bool at_input_start) const {
    if (spec.model == TokenizerModel::kByteLevelBpe) return std::string(segment);
    std::string s;
    if (spec.remove_extra_whitespaces) {
        // SentencePiece: drop leading and trailing spaces, collapse inner runs to one.
        for (char c : segment) {
            if (c == ' ' && (s.empty() || s.back() == ' ')) continue;
            s += c;
        }
        if (!s.empty() && s.back() == ' ') s.pop_back();
    } else {
        s = segment;
    }
    std::string out;
    if (s.empty()) return out;
    out.reserve(s.size() + s.size() / 2 + 3);
    bool prefix =
        spec.add_prefix_space && (!spec.prefix_first_only || at_input_start) &&
        !(spec.prefix_unless_space && (s[0] == ' ' || std::string_view(s).substr(0, 3) == kSpace));
    if (prefix) out += kSpace;
    for (char c : s) {
        if (c == ' ') {
            out += kSpace;
        } else {
            out += c;
        }
    }
    return out;
}

void Tokenizer::Impl::encode(std::string_view text, bool add_special, bool parse_special,
                             std::vector<int32_t>& out) const {
    if (add_special && spec.add_bos) out.push_back(*spec.bos_id);
    std::vector<Segment> segments;
    if (parse_special && !raw_added.empty()) {
        split_added(text, raw_added, segments);
    } else if (!text.empty()) {
        segments.push_back({0, text.size(), -1});
    }
    BpeWork work;
    for (const Segment& seg : segments) {
        if (seg.token >= 0) {
            out.push_back(seg.token);
        } else {
            encode_segment(text.substr(seg.begin, seg.end - seg.begin), seg.begin == 0, work, out);
        }
    }
    if (add_special && spec.add_eos) out.push_back(*spec.eos_id);
}

void Tokenizer::Impl::encode_segment(std::string_view segment, bool at_input_start, BpeWork& work,
                                     std::vector<int32_t>& out) const {
    const bool byte_level = spec.model == TokenizerModel::kByteLevelBpe;
    std::string text = normalize(segment, at_input_start);
    if (byte_level && spec.add_prefix_space && !text.empty() && text[0] != ' ') {
        text.insert(text.begin(), ' ');
    }
    std::vector<Segment> parts;
    if (!normalized_added.empty()) {
        split_added(text, normalized_added, parts);
    } else if (!text.empty()) {
        parts.push_back({0, text.size(), -1});
    }
    std::vector<std::pair<size_t, size_t>> pieces;
    for (const Segment& part : parts) {
        if (part.token >= 0) {
            out.push_back(part.token);
            continue;
        }
        std::string_view t = std::string_view(text).substr(part.begin, part.end - part.begin);
        pieces.clear();
        pre_split(t, pieces);
        for (const auto& [b, e] : pieces) {
            std::string_view piece = t.substr(b, e - b);
            if (byte_level) {
                encode_bytes_piece(piece, work, out);
            } else {
                encode_spm_piece(piece, work, out);
            }
        }
    }
}

void Tokenizer::Impl::pre_split(std::string_view text,
                                std::vector<std::pair<size_t, size_t>>& pieces) const {
    pieces.push_back({0, text.size()});
    std::vector<std::pair<size_t, size_t>> next, matches;
    std::vector<std::pair<std::pair<size_t, size_t>, bool>> parts;
    for (size_t k = 0; k < splits.size(); ++k) {
        const PreSplit& step = spec.pre_splits[k];
        next.clear();
        for (const auto& [b, e] : pieces) {
            matches.clear();
            splits[k]->find_all(text.substr(b, e - b), matches);
            parts.clear();
            size_t at = b;
            for (const auto& [mb, me] : matches) {
                if (b + mb > at) parts.push_back({{at, b + mb}, step.invert});
                parts.push_back({{b + mb, b + me}, !step.invert});
                at = b + me;
            }
            if (at < e) parts.push_back({{at, e}, step.invert});
            apply_behavior(step.behavior, parts, next);
        }
        pieces.swap(next);
    }
    if (spec.split_on_space) {
        // HF Metaspace(split = true): every "▁" starts a new piece.
        next.clear();
        for (const auto& [b, e] : pieces) {
            size_t start = b;
            for (size_t i = b + 1; i + kSpace.size() <= e; ++i) {
                if (text.compare(i, kSpace.size(), kSpace) == 0) {
                    next.push_back({start, i});
                    start = i;
                }
            }
            next.push_back({start, e});
        }
        pieces.swap(next);
    }
}

void Tokenizer::Impl::encode_bytes_piece(std::string_view piece, BpeWork& work,
                                         std::vector<int32_t>& out) const {
    if (piece.empty()) return;
    if (spec.ignore_merges || piece.size() == 1) {
        auto it = raw_ids.find(piece);
        if (it != raw_ids.end()) {
            out.push_back(it->second);
            return;
        }
    }
    if (cache_get(piece, out)) return;
    std::vector<BpeSymbol> syms;
    syms.reserve(piece.size());
    for (char c : piece) {
        int32_t id = byte_ids[static_cast<uint8_t>(c)];
        if (id < 0 && spec.unk_id) id = *spec.unk_id;
        if (id >= 0) syms.push_back({id, 1, false});  // HF drops a byte it has no token for
    }
    bpe.merge(syms, work);
    size_t first = out.size();
    for (const BpeSymbol& s : syms) out.push_back(s.id);
    cache_put(piece, out.data() + first, out.size() - first);
}

bool Tokenizer::Impl::cache_get(std::string_view piece, std::vector<int32_t>& out) const {
    if (piece.size() > kCacheMaxPiece) return false;
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(piece);
    if (it == cache.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
}

void Tokenizer::Impl::cache_put(std::string_view piece, const int32_t* ids, size_t n) const {
    if (piece.size() > kCacheMaxPiece) return;
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache.size() >= kCacheMaxEntries) cache.clear();
    cache.emplace(std::string(piece), std::vector<int32_t>(ids, ids + n));
}

void Tokenizer::Impl::encode_spm_piece(std::string_view piece, BpeWork& work,
                                       std::vector<int32_t>& out) const {
    if (piece.empty()) return;
    if (spec.ignore_merges) {
        auto it = piece_ids.find(piece);
        if (it != piece_ids.end() && it->second < n_vocab) {
            out.push_back(it->second);
            return;
        }
        encode_spm_word(piece, work, out);  // HF: the whole piece is one word
        return;
    }
    if (!spm_words) {
        encode_spm_word(piece, work, out);
        return;
    }
    // Words start where "▁" follows another character: "▁▁the▁cat" -> "▁▁the", "▁cat".
    size_t start = 0;
    for (size_t i = 1; i + kSpace.size() <= piece.size(); ++i) {
        bool space_here = piece.compare(i, kSpace.size(), kSpace) == 0;
        bool space_before =
            i >= kSpace.size() && piece.compare(i - kSpace.size(), kSpace.size(), kSpace) == 0;
        if (space_here && !space_before) {
            encode_spm_word(piece.substr(start, i - start), work, out);
            start = i;
        }
    }
    encode_spm_word(piece.substr(start), work, out);
}

void Tokenizer::Impl::encode_spm_word(std::string_view piece, BpeWork& work,
                                      std::vector<int32_t>& out) const {
    if (cache_get(piece, out)) return;
    const size_t first = out.size();
    std::vector<BpeSymbol> syms;
    syms.reserve(piece.size());
    size_t pos = 0;
    while (pos < piece.size()) {
        size_t len = 0;
        int32_t id = -1;
        if (!user_defined.empty() && user_defined.longest_at(piece, pos, len, id)) {
            syms.push_back({id, static_cast<uint32_t>(len), true});
            pos += len;
            continue;
        }
        len = utf8_valid_len(piece, pos);
        if (len == 0) len = 1;  // a byte that is not UTF-8: kept as its own unknown symbol
        auto it = piece_ids.find(piece.substr(pos, len));
        syms.push_back(
            {it == piece_ids.end() ? -1 : it->second, static_cast<uint32_t>(len), false});
        pos += len;
    }
    std::unordered_map<int32_t, std::pair<int32_t, int32_t>> rev;
    bpe.merge(syms, work, has_unused ? &rev : nullptr);
    pos = 0;
    bool last_unk = false;
    for (const BpeSymbol& s : syms) {
        std::string_view span = piece.substr(pos, s.len);
        pos += s.len;
        if (s.id >= 0 && s.id < n_vocab) {
            last_unk = false;
            if (has_unused && types[static_cast<size_t>(s.id)] == TokenType::kUnused) {
                resegment(s.id, rev, out);
            } else {
                out.push_back(s.id);
            }
            continue;
        }
        bool bytes_ok = spec.byte_fallback;
        for (char c : span) bytes_ok = bytes_ok && byte_ids[static_cast<uint8_t>(c)] >= 0;
        if (bytes_ok) {
            for (char c : span) out.push_back(byte_ids[static_cast<uint8_t>(c)]);
            last_unk = false;
        } else if (spec.unk_id) {
            if (!(spec.fuse_unk && last_unk)) out.push_back(*spec.unk_id);
            last_unk = true;
        }
    }
    cache_put(piece, out.data() + first, out.size() - first);
}

void Tokenizer::Impl::resegment(int32_t id,
                                const std::unordered_map<int32_t, std::pair<int32_t, int32_t>>& rev,
                                std::vector<int32_t>& out) const {
    // SentencePiece: an unused piece is replaced by the two symbols that merged into it.
    auto it = rev.find(id);
    if (it == rev.end() || types[static_cast<size_t>(id)] != TokenType::kUnused) {
        out.push_back(id);
        return;
    }
    for (int32_t part : {it->second.first, it->second.second}) {
        if (part >= 0 && part < n_vocab) {
            resegment(part, rev, out);
        } else if (spec.unk_id) {
            out.push_back(*spec.unk_id);
        }
    }
}

}  // namespace zs::io
