// Tokenizer against the reference implementations: the 63 golden strings for GPT-2 (js-tiktoken),
// Llama-3 and Mistral (@lenml/tokenizers = HF semantics) and Llama-2 (sentencepiece 0.1.97) must
// give exactly the reference ids; decode(encode(s)) == s; tiktoken's r50k_base equals GPT-2;
// special tokens, bos/eos and the loader's choice by path follow the files.
#include "io/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <unistd.h>

#include "base/error.h"
#include "io/tokenizer_test_util.h"

namespace zs::io::test {
namespace {

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, EncodesEveryCaseExactly) {
    const std::string fam = GetParam();
    const std::string ref = fam == "r50k" ? "gpt2" : fam;
    const Tokenizer& tok = family(fam);
    int matched = 0;
    for (size_t i = 0; i < golden().size(); ++i) {
        const GoldenCase& c = golden()[i];
        std::vector<int32_t> got = tok.encode(c.text);
        if (got == c.ids.at(ref)) {
            ++matched;
        } else {
            ADD_FAILURE() << fam << " case " << i << " '" << c.text.substr(0, 60) << "'";
            EXPECT_EQ(got, c.ids.at(ref));
        }
    }
    EXPECT_EQ(matched, static_cast<int>(golden().size()));
    std::printf("[ %s ] golden: %d/%zu exact\n", fam.c_str(), matched, golden().size());
}

TEST_P(Golden, DecodeInvertsEncode) {
    const Tokenizer& tok = family(GetParam());
    for (const GoldenCase& c : golden()) {
        EXPECT_EQ(tok.decode(tok.encode(c.text)), c.text);
        EXPECT_EQ(tok.decode(tok.encode(c.text, true, false), true), c.text);
    }
}

TEST_P(Golden, DecodesReferenceIds) {
    // The reference ids (not ours) decode to the original text.
    const std::string fam = GetParam();
    const Tokenizer& tok = family(fam);
    for (const GoldenCase& c : golden()) {
        EXPECT_EQ(tok.decode(c.ids.at(fam == "r50k" ? "gpt2" : fam)), c.text);
    }
}

INSTANTIATE_TEST_SUITE_P(Families, Golden,
                         ::testing::Values("gpt2", "llama3", "mistral", "llama2", "r50k"));

class Stress : public ::testing::TestWithParam<std::string> {};

TEST_P(Stress, MatchesReferenceOnRandomMultilineText) {
    // Mixed scripts, emoji/ZWJ, odd whitespace, CRLF, literal special tokens. sentencepiece never
    // parses "<s>" in text, so Llama-2 is compared with parse_special = false.
    const std::string fam = GetParam();
    const std::string ref = fam == "r50k" ? "gpt2" : fam;
    const Tokenizer& tok = family(fam);
    const bool parse_special = fam != "llama2";
    int matched = 0;
    for (size_t i = 0; i < stress().size(); ++i) {
        const GoldenCase& c = stress()[i];
        std::vector<int32_t> got = tok.encode(c.text, false, parse_special);
        if (got == c.ids.at(ref)) {
            ++matched;
        } else {
            EXPECT_EQ(got, c.ids.at(ref)) << fam << " stress case " << i;
        }
        // The reference ids decode as the reference decodes them (specials shown).
        auto d = c.decoded.find(ref);
        EXPECT_EQ(tok.decode(c.ids.at(ref)), d == c.decoded.end() ? c.text : d->second)
            << fam << " stress case " << i;
        // Without special-token parsing, decode inverts encode.
        EXPECT_EQ(tok.decode(tok.encode(c.text, false, false)), c.text)
            << fam << " stress case " << i;
    }
    std::printf("[ %s ] stress: %d/%zu exact\n", fam.c_str(), matched, stress().size());
}

INSTANTIATE_TEST_SUITE_P(Families, Stress,
                         ::testing::Values("gpt2", "r50k", "cl100k", "llama3", "mistral",
                                           "llama2"));

class Variant : public ::testing::TestWithParam<std::string> {};

TEST_P(Variant, MatchesHuggingFaceOnStressText) {
    // A real tokenizer.json with components replaced (Metaspace first/always/split, Digits,
    // every Split behaviour and invert, ByteLevel add_prefix_space, Metaspace decoder), as
    // stress.json's "variants" lists them; ids and decodes from HF tokenizers.
    const std::string name = GetParam();
    nlohmann::json v = stress_json().at("variants").at(name);
    std::string base = v.at("base").get<std::string>();
    std::ifstream f(fixture(base + "/tokenizer.json"), std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    nlohmann::json spec = nlohmann::json::parse(ss.str());
    for (const auto& [key, value] : v.at("replace").items()) spec[key] = value;
    std::string path = (std::filesystem::temp_directory_path() /
                        ("zs_tok_variant_" + std::to_string(::getpid()) + "_" + name + ".json"))
                           .string();
    std::ofstream(path, std::ios::binary) << spec.dump();
    Tokenizer tok = Tokenizer::load(path);
    std::filesystem::remove(path);
    int matched = 0;
    for (size_t i = 0; i < stress().size(); ++i) {
        const GoldenCase& c = stress()[i];
        std::vector<int32_t> got = tok.encode(c.text);
        if (got == c.ids.at(name)) {
            ++matched;
        } else {
            EXPECT_EQ(got, c.ids.at(name)) << name << " stress case " << i;
        }
        auto d = c.decoded.find(name);
        EXPECT_EQ(tok.decode(c.ids.at(name)), d == c.decoded.end() ? c.text : d->second)
            << name << " stress case " << i;
    }
    std::printf("[ %s ] stress: %d/%zu exact\n", name.c_str(), matched, stress().size());
}

INSTANTIATE_TEST_SUITE_P(TokenizerJson, Variant,
                         ::testing::Values("mistral_metaspace_first", "mistral_metaspace_split",
                                           "llama3_splits", "llama3_prefix", "llama3_added_flags",
                                           "mistral_added_flags"));

TEST(Tokenizer, VocabularyAndSpecials) {
    const Tokenizer& gpt2 = family("gpt2");
    EXPECT_EQ(gpt2.vocab_size(), 50257);
    EXPECT_EQ(gpt2.model(), TokenizerModel::kByteLevelBpe);
    EXPECT_EQ(gpt2.token_to_id("Ġthe"), 262);
    EXPECT_EQ(gpt2.id_to_token(262), "Ġthe");
    EXPECT_EQ(gpt2.eos_id(), 50256);

    const Tokenizer& llama3 = family("llama3");
    EXPECT_EQ(llama3.vocab_size(), 128256);
    EXPECT_EQ(llama3.bos_id(), 128000);  // tokenizer_config.json bos_token
    EXPECT_EQ(llama3.eos_id(), 128001);
    EXPECT_EQ(llama3.token_to_id("<|eot_id|>"), 128009);
    EXPECT_TRUE(llama3.is_special(128009));
    auto stops = llama3.stop_ids();
    EXPECT_NE(std::find(stops.begin(), stops.end(), 128009), stops.end());
    ASSERT_TRUE(llama3.chat_template().has_value());
    EXPECT_NE(llama3.chat_template()->find("<|start_header_id|>"), std::string::npos);

    const Tokenizer& mistral = family("mistral");
    EXPECT_EQ(mistral.vocab_size(), 32000);
    EXPECT_EQ(mistral.model(), TokenizerModel::kSentencePieceBpe);
    EXPECT_EQ(mistral.bos_id(), 1);
    EXPECT_EQ(mistral.eos_id(), 2);
    EXPECT_EQ(mistral.unk_id(), 0);
    EXPECT_TRUE(mistral.add_bos());
    EXPECT_EQ(mistral.token_type(13), TokenType::kByte);  // <0x0A>

    const Tokenizer& llama2 = family("llama2");
    EXPECT_EQ(llama2.vocab_size(), 32000);
    EXPECT_EQ(llama2.bos_id(), 1);
    EXPECT_EQ(llama2.eos_id(), 2);
    EXPECT_EQ(llama2.id_to_token(29871), "▁");
    EXPECT_EQ(llama2.token_type(2), TokenType::kControl);
    EXPECT_EQ(llama2.token_type(3), TokenType::kByte);
}

TEST(Tokenizer, AddSpecialFollowsTheFiles) {
    // Mistral's TemplateProcessing and Llama-2's convention add <s>; GPT-2 and this Llama-3 file
    // (post_processor ByteLevel only) add nothing.
    const std::string text = "Hello world";
    for (const char* fam : {"mistral", "llama2"}) {
        auto plain = family(fam).encode(text);
        auto with = family(fam).encode(text, true);
        ASSERT_EQ(with.size(), plain.size() + 1) << fam;
        EXPECT_EQ(with[0], 1) << fam;
        EXPECT_EQ(std::vector<int32_t>(with.begin() + 1, with.end()), plain) << fam;
        EXPECT_EQ(
            family(fam).decode(with),
            "<s>" + std::string(fam == std::string("mistral") ? " Hello world" : "Hello world"));
    }
    EXPECT_EQ(family("gpt2").encode(text, true), family("gpt2").encode(text));
    EXPECT_EQ(family("llama3").encode(text, true), family("llama3").encode(text));
}

TEST(Tokenizer, SpecialTokensSplitOutOfText) {
    const Tokenizer& llama3 = family("llama3");
    // Pieces around the specials encode as they would alone (ids from the golden file).
    std::vector<int32_t> hello = llama3.encode("Hello world, this is a test of the tokenizer.");
    ASSERT_EQ(hello, golden()[0].ids.at("llama3"));
    std::vector<int32_t> ids =
        llama3.encode("<|start_header_id|>Hello world, this is a test of the tokenizer.<|eot_id|>");
    std::vector<int32_t> want = {128006};
    want.insert(want.end(), hello.begin(), hello.end());
    want.push_back(128009);
    EXPECT_EQ(ids, want);
    // parse_special = false: the same text is plain text.
    std::vector<int32_t> plain = llama3.encode("<|eot_id|>", false, false);
    EXPECT_GT(plain.size(), 1u);
    EXPECT_EQ(llama3.decode(plain), "<|eot_id|>");
    EXPECT_EQ(llama3.decode(ids, true), "Hello world, this is a test of the tokenizer.");

    // GPT-2: golden case 18 is "<|endoftext|>" -> [50256] (js-tiktoken, specials allowed).
    EXPECT_EQ(family("gpt2").encode("a<|endoftext|>b"), (std::vector<int32_t>{64, 50256, 65}));

    // Mistral: "<s>" in text is the special; each segment gets its own "▁" (HF Prepend).
    const Tokenizer& mistral = family("mistral");
    std::vector<int32_t> m = mistral.encode("<s>Hello");
    ASSERT_GE(m.size(), 2u);
    EXPECT_EQ(m[0], 1);
    std::vector<int32_t> hello_m = mistral.encode("Hello");
    EXPECT_EQ(std::vector<int32_t>(m.begin() + 1, m.end()), hello_m);
}

TEST(Tokenizer, ByteFallbackRoundTrips) {
    // Characters outside the 32k vocabularies become <0xXX> tokens and decode back exactly.
    const std::string text = "\xF0\x9F\xA6\x99 \xE1\x9A\xA0 \xF0\x90\x8D\x88 \xEA\xAF\x8D";
    for (const char* fam : {"mistral", "llama2"}) {
        const Tokenizer& tok = family(fam);
        std::vector<int32_t> ids = tok.encode(text);
        int bytes = 0;
        for (int32_t id : ids) bytes += tok.token_type(id) == TokenType::kByte;
        EXPECT_GT(bytes, 0) << fam;
        EXPECT_EQ(tok.decode(ids), text) << fam;
    }
    // Invalid UTF-8 survives as raw bytes where the vocabulary has byte tokens.
    const std::string bad = "ab\xFF\xC3(cd";
    for (const char* fam : {"gpt2", "llama3", "mistral", "llama2"}) {
        const Tokenizer& tok = family(fam);
        std::string back;
        Tokenizer::DecodeState st;
        for (int32_t id : tok.encode(bad)) tok.append_bytes(id, false, st, back);
        EXPECT_EQ(back, bad) << fam;
        EXPECT_EQ(tok.decode(tok.encode(bad)), "ab\xEF\xBF\xBD\xEF\xBF\xBD(cd") << fam;
    }
}

TEST(Tokenizer, LeadingSpaceRules) {
    // SentencePiece drops the "▁" of the first piece only; HF's Strip drops one space.
    const Tokenizer& llama2 = family("llama2");
    EXPECT_EQ(llama2.decode(std::vector<int32_t>{29871, 29871, 8236}), "  leading");  // spm_decode
    EXPECT_EQ(llama2.decode(std::vector<int32_t>{13, 29871, 8236}), "\n  leading");
    EXPECT_EQ(llama2.decode(std::vector<int32_t>{1, 29871, 8236, 2913}, true), " leading space");
    const Tokenizer& mistral = family("mistral");
    EXPECT_EQ(mistral.decode(std::vector<int32_t>{28705, 5374, 2764}), " leading space");
    EXPECT_EQ(mistral.decode(std::vector<int32_t>{1, 22557}, true), "Hello");
}

TEST(Tokenizer, LoadPicksByPath) {
    // Directory preference and file kinds (family("llama3") loads the llama3/ directory).
    EXPECT_EQ(Tokenizer::load(fixture("mistral")).vocab_size(), 32000);
    EXPECT_EQ(Tokenizer::load(fixture("llama2")).vocab_size(), 32000);
    EXPECT_EQ(Tokenizer::load(fixture("gpt2/encoder.json")).vocab_size(), 50257);
    EXPECT_EQ(Tokenizer::load(fixture("tiktoken/r50k_base.tiktoken")).vocab_size(), 50257);
}

TEST(Tokenizer, SentencePieceWordSplitEqualsWholeTextMerge) {
    // SentencePiece text is merged word by word when no piece has a "▁" after another character.
    // Adding one such piece (which can never match here) forces whole-text merging: the ids of
    // every golden text, and of all of them joined, must not change.
    for (const char* fam : {"llama2", "mistral"}) {
        TokenizerSpec spec = load_tokenizer_spec(family_path(fam));
        Tokenizer words = Tokenizer::from_spec(spec);
        spec.tokens.push_back("\x01▁\x01");
        if (!spec.scores.empty()) spec.scores.push_back(-1e9f);
        if (!spec.types.empty()) spec.types.push_back(TokenType::kNormal);
        Tokenizer whole = Tokenizer::from_spec(spec);
        std::string all;
        for (const GoldenCase& c : golden()) {
            EXPECT_EQ(words.encode(c.text), whole.encode(c.text)) << fam;
            all += c.text + "  \n";
        }
        EXPECT_EQ(words.encode(all), whole.encode(all)) << fam;
    }
}

TEST(Tokenizer, ConcurrentEncodesAgreeWithSerial) {
    // encode/decode are const and thread-safe (the word cache and regex scratch are locked).
    for (const char* fam : {"llama3", "llama2"}) {
        const Tokenizer& tok = family(fam);
        std::vector<std::vector<int32_t>> serial;
        for (const GoldenCase& c : golden()) serial.push_back(c.ids.at(fam));
        std::vector<std::thread> threads;
        std::vector<int> mismatches(4, 0);
        for (int t = 0; t < 4; ++t) {
            threads.emplace_back([&, t] {
                for (int rep = 0; rep < 3; ++rep) {
                    for (size_t i = 0; i < golden().size(); ++i) {
                        size_t k = (i * 7 + static_cast<size_t>(t)) % golden().size();
                        if (tok.encode(golden()[k].text) != serial[k])
                            ++mismatches[static_cast<size_t>(t)];
                        if (tok.decode(serial[k]) != golden()[k].text)
                            ++mismatches[static_cast<size_t>(t)];
                    }
                }
            });
        }
        for (auto& th : threads) th.join();
        for (int m : mismatches) EXPECT_EQ(m, 0) << fam;
    }
}

TEST(Tokenizer, GgufStyleSpecEqualsLlama3) {
    // What a GGUF "gpt2" loader would hand over: tokens, types, merges and the "llama-bpe"
    // pre-tokenizer name. It must encode the golden texts as Llama-3 does.
    TokenizerSpec file = load_tokenizer_spec(family_path("llama3"));
    TokenizerSpec gguf;
    gguf.name = "gguf";
    gguf.model = TokenizerModel::kByteLevelBpe;
    gguf.tokens = file.tokens;
    gguf.merges = file.merges;
    ASSERT_TRUE(gguf_pre_tokenizer("llama-bpe", gguf));
    EXPECT_FALSE(gguf_pre_tokenizer("no-such-pre", gguf));
    gguf.types.assign(gguf.tokens.size(), TokenType::kNormal);
    for (size_t id = 128000; id < gguf.tokens.size(); ++id) {
        gguf.types[id] = TokenType::kControl;
        gguf.added_tokens.push_back({static_cast<int32_t>(id), gguf.tokens[id]});
    }
    gguf.bos_id = 128000;
    gguf.eos_id = 128001;
    Tokenizer tok = Tokenizer::from_spec(std::move(gguf));
    for (const GoldenCase& c : golden()) EXPECT_EQ(tok.encode(c.text), c.ids.at("llama3"));
    EXPECT_EQ(tok.encode("<|eot_id|>"), (std::vector<int32_t>{128009}));
}

TEST(Tokenizer, FromSpecSentencePieceByScore) {
    // A GGUF-style "llama" vocabulary. Worked on paper: "ab abc" -> "▁ab▁abc" -> symbols
    // ▁ a b ▁ a b c; "bc" (-0.5) merges first, then "▁a" (-1) at 0 and at 3 (leftmost first);
    // then "▁a"+"b" -> "▁ab" (-3); "▁a"+"bc" is no piece. Result: ▁ab ▁a bc.
    TokenizerSpec spec;
    spec.name = "tiny-spm";
    spec.model = TokenizerModel::kSentencePieceBpe;
    spec.tokens = {"<unk>", "<s>", "</s>", "▁", "a", "b", "c", "▁a", "ab", "▁ab", "bc", "<0x21>"};
    spec.scores = {0, 0, 0, 0, 0, 0, 0, -1.0f, -2.0f, -3.0f, -0.5f, 0};
    spec.types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl, TokenType::kNormal,
                  TokenType::kNormal,  TokenType::kNormal,  TokenType::kNormal,  TokenType::kNormal,
                  TokenType::kNormal,  TokenType::kNormal,  TokenType::kNormal,  TokenType::kByte};
    spec.unk_id = 0;
    spec.bos_id = 1;
    spec.eos_id = 2;
    spec.add_bos = true;
    spec.add_prefix_space = true;
    spec.byte_fallback = true;
    spec.leading_space = LeadingSpace::kStripFirstPiece;
    spec.added_tokens = {{1, "<s>"}, {2, "</s>"}};
    Tokenizer tok = Tokenizer::from_spec(spec);
    EXPECT_EQ(tok.encode("ab abc"), (std::vector<int32_t>{9, 7, 10}));
    EXPECT_EQ(tok.encode("ab abc", true), (std::vector<int32_t>{1, 9, 7, 10}));
    // "!" has a byte token; "?" has none and no byte token -> unk.
    EXPECT_EQ(tok.encode("a!?"), (std::vector<int32_t>{7, 11, 0}));
    EXPECT_EQ(tok.decode(std::vector<int32_t>{1, 9, 7, 10}, true), "ab abc");

    spec.tokens[10] = "ab";  // a repeated piece still builds (the first id wins for lookups)
    spec.scores.resize(3);
    EXPECT_THROW(Tokenizer::from_spec(spec), IoError);  // 3 scores for 12 tokens
}

}  // namespace
}  // namespace zs::io::test
