#include "io/bpe_trainer.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/tokenizer_regex.h"
#include "io/tokenizer_spec.h"

namespace zs::io {

namespace {

// GPT-2's reversible byte -> printable unicode character mapping, as UTF-8 strings.
std::vector<std::string> byte_alphabet() {
    std::vector<int> cps(256, -1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cps[static_cast<size_t>(b)] = printable ? b : next++;
    }
    std::vector<std::string> out(256);
    for (int b = 0; b < 256; ++b) {
        int cp = cps[static_cast<size_t>(b)];
        std::string s;
        if (cp < 0x80) {
            s += static_cast<char>(cp);
        } else {
            s += static_cast<char>(0xC0 | (cp >> 6));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        }
        out[static_cast<size_t>(b)] = s;
    }
    return out;
}

struct PairHash {
    size_t operator()(const std::pair<int32_t, int32_t>& p) const {
        return std::hash<uint64_t>()((static_cast<uint64_t>(static_cast<uint32_t>(p.first)) << 32) |
                                     static_cast<uint32_t>(p.second));
    }
};

}  // namespace

BpeTrainResult train_byte_level_bpe(const std::vector<std::string_view>& texts, int32_t vocab_size,
                                    const std::function<void(int64_t, int64_t)>& progress) {
    ZS_CHECK_T(ConfigError, vocab_size >= 257 && vocab_size <= 1'000'000,
               "tokenizer train: --vocab-size must be in [257, 1000000], got {}", vocab_size);
    // 1. Words and their counts.
    Regex re(kGpt2Pattern, "GPT-2 pre-tokenizer");
    std::unordered_map<std::string, int64_t> counts;
    std::vector<std::pair<size_t, size_t>> spans;
    for (std::string_view t : texts) {
        spans.clear();
        re.find_all(t, spans);
        for (auto [a, b] : spans) ++counts[std::string(t.substr(a, b - a))];
    }
    // Deterministic word order.
    std::vector<std::pair<std::string, int64_t>> words(counts.begin(), counts.end());
    std::sort(words.begin(), words.end());
    std::vector<std::vector<int32_t>> seqs(words.size());
    std::vector<int64_t> freq(words.size());
    for (size_t w = 0; w < words.size(); ++w) {
        for (unsigned char c : words[w].first) seqs[w].push_back(c);
        freq[w] = words[w].second;
    }
    // 2. Pair counts and where each pair occurs.
    std::unordered_map<std::pair<int32_t, int32_t>, int64_t, PairHash> pair_count;
    std::unordered_map<std::pair<int32_t, int32_t>, std::set<size_t>, PairHash> where;
    for (size_t w = 0; w < seqs.size(); ++w) {
        for (size_t i = 0; i + 1 < seqs[w].size(); ++i) {
            auto p = std::make_pair(seqs[w][i], seqs[w][i + 1]);
            pair_count[p] += freq[w];
            where[p].insert(w);
        }
    }
    // Ordered by (count desc, pair asc): the best merge is the first element.
    std::set<std::tuple<int64_t, int32_t, int32_t>> queue;
    for (const auto& [p, c] : pair_count) queue.emplace(-c, p.first, p.second);

    BpeTrainResult r;
    const std::vector<std::string> alpha = byte_alphabet();
    r.tokens.assign(alpha.begin(), alpha.end());
    const int64_t target = vocab_size - 1 - 256;  // last id is <|endoftext|>
    auto update = [&](const std::pair<int32_t, int32_t>& p, int64_t delta, size_t w,
                      bool add_where) {
        auto it = pair_count.find(p);
        int64_t old = it == pair_count.end() ? 0 : it->second;
        if (old > 0) queue.erase({-old, p.first, p.second});
        int64_t now = old + delta;
        if (now > 0) {
            pair_count[p] = now;
            queue.emplace(-now, p.first, p.second);
        } else if (it != pair_count.end()) {
            pair_count.erase(it);
        }
        if (add_where) where[p].insert(w);
    };
    while (static_cast<int64_t>(r.merges.size()) < target && !queue.empty()) {
        auto [negc, a, b] = *queue.begin();
        (void)negc;
        const auto new_id = static_cast<int32_t>(r.tokens.size());
        r.tokens.push_back(r.tokens[static_cast<size_t>(a)] + r.tokens[static_cast<size_t>(b)]);
        r.merges.emplace_back(r.tokens[static_cast<size_t>(a)], r.tokens[static_cast<size_t>(b)]);
        std::set<size_t> ws = std::move(where[{a, b}]);
        where.erase({a, b});
        for (size_t w : ws) {
            std::vector<int32_t>& s = seqs[w];
            const int64_t f = freq[w];
            // Remove every pair of the word, merge, add them back (words are short).
            for (size_t i = 0; i + 1 < s.size(); ++i) update({s[i], s[i + 1]}, -f, w, false);
            std::vector<int32_t> merged;
            for (size_t i = 0; i < s.size(); ++i) {
                if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
                    merged.push_back(new_id);
                    ++i;
                } else {
                    merged.push_back(s[i]);
                }
            }
            s = std::move(merged);
            for (size_t i = 0; i + 1 < s.size(); ++i) update({s[i], s[i + 1]}, f, w, true);
        }
        if (progress && r.merges.size() % 64 == 0)
            progress(static_cast<int64_t>(r.merges.size()), target);
    }
    r.eos_id = static_cast<int32_t>(r.tokens.size());
    r.tokens.emplace_back("<|endoftext|>");
    if (progress) progress(static_cast<int64_t>(r.merges.size()), target);
    return r;
}

std::string to_tokenizer_json(const BpeTrainResult& r) {
    nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
    for (size_t i = 0; i < r.tokens.size(); ++i) {
        if (static_cast<int32_t>(i) == r.eos_id) continue;
        vocab[r.tokens[i]] = i;
    }
    nlohmann::ordered_json merges = nlohmann::ordered_json::array();
    for (const auto& [a, b] : r.merges) merges.push_back(a + " " + b);
    nlohmann::ordered_json j;
    j["version"] = "1.0";
    j["truncation"] = nullptr;
    j["padding"] = nullptr;
    j["added_tokens"] = {{{"id", r.eos_id},
                          {"content", "<|endoftext|>"},
                          {"single_word", false},
                          {"lstrip", false},
                          {"rstrip", false},
                          {"normalized", false},
                          {"special", true}}};
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "ByteLevel"},
                          {"add_prefix_space", false},
                          {"trim_offsets", true},
                          {"use_regex", true}};
    j["post_processor"] = nullptr;
    j["decoder"] = {{"type", "ByteLevel"},
                    {"add_prefix_space", true},
                    {"trim_offsets", true},
                    {"use_regex", true}};
    j["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", false},
                  {"vocab", vocab},
                  {"merges", merges}};
    return j.dump(1) + "\n";
}

}  // namespace zs::io
