// StreamDecoder: pushing ids one at a time yields exactly Tokenizer::decode's text, every chunk
// is valid UTF-8 on its own (checked by an independent validator written from Unicode's Table 3-7),
// and after every prefix of ids, streamed text + flush() equals decode(prefix).
#include "io/tokenizer_stream.h"

#include <random>

#include <gtest/gtest.h>

#include "io/tokenizer_test_util.h"

namespace zs::io::test {
namespace {

// Well-formed UTF-8 per Unicode Table 3-7, written independently of tokenizer_utf8.cpp.
bool well_formed(const std::string& s) {
    size_t i = 0;
    auto in = [&](size_t k, int lo, int hi) {
        if (i + k >= s.size()) return false;
        int b = static_cast<unsigned char>(s[i + k]);
        return b >= lo && b <= hi;
    };
    while (i < s.size()) {
        int b = static_cast<unsigned char>(s[i]);
        size_t n = 0;
        if (b <= 0x7F)
            n = 1;
        else if (b >= 0xC2 && b <= 0xDF && in(1, 0x80, 0xBF))
            n = 2;
        else if (b == 0xE0 && in(1, 0xA0, 0xBF) && in(2, 0x80, 0xBF))
            n = 3;
        else if (((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) && in(1, 0x80, 0xBF) &&
                 in(2, 0x80, 0xBF))
            n = 3;
        else if (b == 0xED && in(1, 0x80, 0x9F) && in(2, 0x80, 0xBF))
            n = 3;
        else if (b == 0xF0 && in(1, 0x90, 0xBF) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF))
            n = 4;
        else if (b >= 0xF1 && b <= 0xF3 && in(1, 0x80, 0xBF) && in(2, 0x80, 0xBF) &&
                 in(3, 0x80, 0xBF))
            n = 4;
        else if (b == 0xF4 && in(1, 0x80, 0x8F) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF))
            n = 4;
        if (n == 0) return false;
        i += n;
    }
    return true;
}

// Streams ids and checks every step; returns how many pushes held back a partial character.
int check_stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special,
                 const std::string& label) {
    StreamDecoder sd(tok, skip_special);
    std::string streamed;
    int held = 0;
    for (size_t k = 0; k < ids.size(); ++k) {
        std::string chunk = sd.push(ids[k]);
        EXPECT_TRUE(well_formed(chunk)) << label << " chunk " << k;
        streamed += chunk;
        StreamDecoder copy = sd;
        std::string rest = copy.flush();
        if (!rest.empty()) ++held;
        std::vector<int32_t> prefix(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(k + 1));
        EXPECT_EQ(streamed + rest, tok.decode(prefix, skip_special)) << label << " prefix " << k;
        if (::testing::Test::HasFailure()) return held;
    }
    streamed += sd.flush();
    EXPECT_EQ(streamed, tok.decode(ids, skip_special)) << label;
    return held;
}

TEST(StreamDecoder, GoldenCasesMatchDecodeAtEveryPrefix) {
    for (const char* fam : {"gpt2", "llama3", "mistral", "llama2"}) {
        const Tokenizer& tok = family(fam);
        int held = 0;
        for (size_t i = 0; i < golden().size(); ++i) {
            const GoldenCase& c = golden()[i];
            held += check_stream(tok, c.ids.at(fam), false,
                                 std::string(fam) + " case " + std::to_string(i));
            std::vector<int32_t> with = tok.encode(c.text, true);
            check_stream(tok, with, true, std::string(fam) + " special case " + std::to_string(i));
        }
        // Byte-level BPE and byte fallback split characters across tokens: the stream held
        // partial characters back at some point (so the check above exercised it).
        EXPECT_GT(held, 0) << fam;
    }
}

TEST(StreamDecoder, RandomBytesRepairLikeDecode) {
    // Random byte tokens (<0x00>..<0xFF> are ids 3..258 in Mistral and Llama-2) make invalid
    // and truncated sequences; the stream must repair them exactly as decode does.
    std::mt19937 rng(301);
    for (const char* fam : {"mistral", "llama2"}) {
        const Tokenizer& tok = family(fam);
        for (int trial = 0; trial < 200; ++trial) {
            std::vector<int32_t> ids;
            int n = 1 + static_cast<int>(rng() % 12);
            for (int k = 0; k < n; ++k) {
                uint32_t r = rng() % 10;
                // Mostly lead/continuation bytes, sometimes ASCII and ordinary pieces.
                int32_t id = r < 4   ? 3 + 0x80 + static_cast<int32_t>(rng() % 64)
                             : r < 7 ? 3 + 0xC0 + static_cast<int32_t>(rng() % 64)
                             : r < 8 ? 3 + static_cast<int32_t>(rng() % 128)
                                     : 259 + static_cast<int32_t>(rng() % 2000);
                ids.push_back(id);
            }
            check_stream(tok, ids, false, std::string(fam) + " trial " + std::to_string(trial));
            if (HasFailure()) return;
        }
    }
}

TEST(StreamDecoder, AGenerationCutMidCharacterDropsTheIncompleteBytes) {
    // "é" then the first two of the four bytes of U+1F600 as byte tokens (<0xXX> = id 3 + XX).
    const Tokenizer& tok = family("mistral");
    StreamDecoder sd(tok);
    std::string shown;
    for (int32_t b : {0xC3, 0xA9, 0xF0, 0x9F}) shown += sd.push(3 + b);
    EXPECT_EQ(shown, "\xC3\xA9");  // "é", the emoji's bytes held back
    EXPECT_EQ(sd.drop_incomplete(), 2u);
    EXPECT_EQ(sd.flush(), "");  // nothing left to turn into U+FFFD
    StreamDecoder whole(tok);
    for (int32_t b : {0xF0, 0x9F}) whole.push(3 + b);
    EXPECT_EQ(whole.flush(), "\xEF\xBF\xBD");  // flush repairs as decode does
}

TEST(StreamDecoder, ContinuationKeepsTheLeadingSpace) {
    const Tokenizer& mistral = family("mistral");
    auto id = mistral.token_to_id("▁leading");
    ASSERT_TRUE(id.has_value());
    StreamDecoder start(mistral);
    EXPECT_EQ(start.push(*id), "leading");
    StreamDecoder cont(mistral, false, /*at_sequence_start=*/false);
    EXPECT_EQ(cont.push(*id), " leading");
    // Special tokens are skipped on request without disturbing the rule.
    StreamDecoder skip(mistral, true);
    EXPECT_EQ(skip.push(1), "");
    EXPECT_EQ(skip.push(*id), "leading");
}

}  // namespace
}  // namespace zs::io::test
