// The BPE merge loop against a naive oracle (rescan every adjacent pair, merge the leftmost of the
// lowest rank, repeat) on seeded random vocabularies, and the UTF-8 helpers against the Unicode
// Standard's own examples and GPT-2's published byte alphabet.
#include "io/bpe.h"

#include <map>
#include <random>

#include <gtest/gtest.h>

#include "io/tokenizer_utf8.h"

namespace zs::io {
namespace {

std::vector<int32_t> naive_bpe(
    std::vector<int32_t> ids,
    const std::map<std::pair<int32_t, int32_t>, std::pair<int, int>>& rules) {
    while (true) {
        int best = -1, best_rank = 0, merged = 0;
        for (size_t i = 0; i + 1 < ids.size(); ++i) {
            auto it = rules.find({ids[i], ids[i + 1]});
            if (it == rules.end()) continue;
            if (best < 0 || it->second.first < best_rank) {
                best = static_cast<int>(i);
                best_rank = it->second.first;
                merged = it->second.second;
            }
        }
        if (best < 0) return ids;
        ids[static_cast<size_t>(best)] = merged;
        ids.erase(ids.begin() + best + 1);
    }
}

TEST(Bpe, MatchesNaiveMergeOnRandomVocabularies) {
    std::mt19937 rng(301);
    for (int vocab = 0; vocab < 20; ++vocab) {
        Bpe bpe;
        std::map<std::pair<int32_t, int32_t>, std::pair<int, int>> rules;
        const int32_t n_base = 4 + static_cast<int32_t>(rng() % 5);
        int32_t next_id = n_base;
        const int n_rules = 10 + static_cast<int>(rng() % 40);
        for (int r = 0; r < n_rules; ++r) {
            int32_t a = static_cast<int32_t>(rng() % static_cast<uint32_t>(next_id));
            int32_t b = static_cast<int32_t>(rng() % static_cast<uint32_t>(next_id));
            // Ranks repeat sometimes (SentencePiece's equal scores): leftmost must win.
            int rank = static_cast<int>(rng() % static_cast<uint32_t>(n_rules));
            rules[{a, b}] = {rank, next_id};
            bpe.pairs().insert(a, b, {rank, next_id});
            ++next_id;
        }
        BpeWork work;
        for (int trial = 0; trial < 200; ++trial) {
            std::vector<int32_t> ids(1 + rng() % 40);
            for (auto& x : ids) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(n_base));
            std::vector<BpeSymbol> syms;
            for (int32_t x : ids) syms.push_back({x, 1, false});
            bpe.merge(syms, work);
            std::vector<int32_t> got;
            for (const auto& s : syms) got.push_back(s.id);
            ASSERT_EQ(got, naive_bpe(ids, rules)) << "vocab " << vocab << " trial " << trial;
        }
    }
}

TEST(Bpe, FrozenSymbolsNeverMerge) {
    Bpe bpe;
    bpe.pairs().insert(0, 1, {0, 2});
    BpeWork work;
    std::vector<BpeSymbol> syms = {{0, 1, false}, {1, 1, true}, {0, 1, false}, {1, 1, false}};
    bpe.merge(syms, work);
    ASSERT_EQ(syms.size(), 3u);
    EXPECT_EQ(syms[0].id, 0);
    EXPECT_EQ(syms[1].id, 1);
    EXPECT_EQ(syms[2].id, 2);
    EXPECT_EQ(syms[2].len, 2u);
}

TEST(PairTable, GrowsAndOverwrites) {
    PairTable t;
    for (int32_t i = 0; i < 5000; ++i) t.insert(i, -i, {i, i + 1});
    t.insert(7, -7, {99, 100});
    EXPECT_EQ(t.size(), 5000u);
    for (int32_t i = 0; i < 5000; ++i) {
        const PairTable::Rule* r = t.find(i, -i);
        ASSERT_NE(r, nullptr);
        EXPECT_EQ(r->rank, i == 7 ? 99 : i);
    }
    EXPECT_EQ(t.find(1, 1), nullptr);
}

TEST(Utf8, LossyFollowsUnicodeTable3_8) {
    // The Unicode Standard, section 3.9, Table 3-8: U+FFFD for maximal subparts.
    const std::string in = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
    const std::string fffd = "\xEF\xBF\xBD";
    std::string out;
    append_utf8_lossy(out, in);
    EXPECT_EQ(out, "a" + fffd + fffd + fffd + "b" + fffd + "c" + fffd + fffd + "d");
    // Surrogates and overlongs are ill-formed byte by byte (Table 3-7).
    out.clear();
    append_utf8_lossy(out, "\xED\xA0\x80\xC0\xAF");
    EXPECT_EQ(out, fffd + fffd + fffd + fffd + fffd);
    EXPECT_TRUE(is_valid_utf8("caf\xC3\xA9 \xF0\x9F\xA4\x96"));
}

TEST(Utf8, IncompleteTail) {
    EXPECT_EQ(utf8_incomplete_tail("ab"), 0u);
    EXPECT_EQ(utf8_incomplete_tail("a\xE6"), 1u);
    EXPECT_EQ(utf8_incomplete_tail("a\xE6\x97"), 2u);
    EXPECT_EQ(utf8_incomplete_tail("a\xE6\x97\xA5"), 0u);  // complete
    EXPECT_EQ(utf8_incomplete_tail("a\xF0\x9F\xA4"), 3u);
    EXPECT_EQ(utf8_incomplete_tail("a\xE0\x80"), 0u);  // E0 80 can never complete
    EXPECT_EQ(utf8_incomplete_tail("a\x80"), 0u);      // stray continuation: repair now
}

TEST(ByteUnicode, MatchesGpt2Alphabet) {
    // Values from GPT-2's encoder: ' ' -> U+0120 'Ġ', '\n' -> U+010A 'Ċ', '!' -> '!',
    // 0xAD -> U+0143 'Ń', 0x00 -> U+0100 'Ā'.
    ByteUnicode m;
    EXPECT_EQ(m.to_unicode(' '), 0x120u);
    EXPECT_EQ(m.to_unicode('\n'), 0x10Au);
    EXPECT_EQ(m.to_unicode('!'), static_cast<char32_t>('!'));
    EXPECT_EQ(m.to_unicode(0xAD), 0x143u);
    EXPECT_EQ(m.to_unicode(0x00), 0x100u);
    std::string raw;
    for (int b = 0; b < 256; ++b) raw += static_cast<char>(b);
    std::string back;
    ASSERT_TRUE(m.decode(m.encode(raw), back));
    EXPECT_EQ(back, raw);
}

}  // namespace
}  // namespace zs::io
