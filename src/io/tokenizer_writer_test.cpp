// tokenizer.json written by zerospeed (io/tokenizer_writer.h), read back: for each family whose
// files it can express, the written directory must encode the golden and stress texts to the ids
// of the reference implementations (tiktoken, HF tokenizers) and decode them back, and keep the
// special tokens. Families it cannot express are refused naming the reason, writing nothing.
// (tests/e2e/convert_gguf_hf.sh checks the same files with transformers itself.)
#include "io/tokenizer_writer.h"

#include <filesystem>

#include <gtest/gtest.h>

#include "base/error.h"
#include "io/test_files_test.h"
#include "io/tokenizer_test_util.h"

namespace zs::io::test {
namespace {

void expect_round_trip(const TokenizerSpec& spec, const std::string& family_name) {
    zs::test::TempDir dir;
    save_hf_tokenizer(spec, dir.path());
    Tokenizer back = Tokenizer::load(dir.path());
    const Tokenizer& ref = family(family_name);
    EXPECT_EQ(back.vocab_size(), ref.vocab_size());
    EXPECT_EQ(back.bos_id(), ref.bos_id());
    EXPECT_EQ(back.eos_id(), ref.eos_id());
    EXPECT_EQ(back.add_bos(), ref.add_bos());
    EXPECT_EQ(back.chat_template(), ref.chat_template());
    int n = 0, bad = 0;
    for (const auto* cases : {&golden(), &stress()}) {
        for (const GoldenCase& c : *cases) {
            auto it = c.ids.find(family_name);
            if (it == c.ids.end()) continue;
            ++n;
            std::vector<int32_t> ids = back.encode(c.text);
            if (ids != it->second) ++bad;
            auto d = c.decoded.find(family_name);
            if (back.decode(ids) != (d == c.decoded.end() ? c.text : d->second)) ++bad;
            EXPECT_EQ(back.encode(c.text, true), ref.encode(c.text, true));
        }
    }
    EXPECT_GT(n, 200) << family_name;
    EXPECT_EQ(bad, 0) << family_name << ": " << bad << " of " << n << " texts differ";
}

TEST(TokenizerWriter, Gpt2RoundTrips) {
    expect_round_trip(load_tokenizer_spec(family_path("gpt2")), "gpt2");
}

TEST(TokenizerWriter, Llama3RoundTrips) {
    expect_round_trip(load_tokenizer_spec(family_path("llama3")), "llama3");
}

TEST(TokenizerWriter, MistralRoundTrips) {
    expect_round_trip(load_tokenizer_spec(family_path("mistral")), "mistral");
}

TEST(TokenizerWriter, RefusesWhatItCannotExpress) {
    // Llama-2's tokenizer.model merges by piece score, tiktoken by rank: neither has a merge
    // list for tokenizer.json. Nothing may be written.
    for (const char* fam : {"llama2", "r50k"}) {
        zs::test::TempDir dir;
        TokenizerSpec spec = load_tokenizer_spec(family_path(fam));
        EXPECT_THROW(save_hf_tokenizer(spec, dir.path()), NotSupported) << fam;
        EXPECT_FALSE(std::filesystem::exists(dir.file("tokenizer.json"))) << fam;
        EXPECT_FALSE(std::filesystem::exists(dir.file("tokenizer_config.json"))) << fam;
    }
}

}  // namespace
}  // namespace zs::io::test
