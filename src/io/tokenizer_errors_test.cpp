// Malformed and hostile tokenizer inputs: every one ends in a zs::Error subclass whose message
// names the file and the field, never a crash, hang or blind allocation. Covers truncated and
// byte-flipped tokenizer.model files, bad tokenizer.json, unsupported model types, bad tiktoken
// files, and a catastrophic-backtracking regex (RELIABILITY.md, tokenizers PR #2060).
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>
#include <unistd.h>

#include "base/error.h"
#include "io/tokenizer.h"
#include "io/tokenizer_test_util.h"
#include "io/tokenizer_utf8.h"

namespace zs::io::test {
namespace {

namespace fs = std::filesystem;

class TokenizerErrors : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               ("zs_tok_" + std::to_string(::getpid()) + "_" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string write(const std::string& name, const std::string& bytes) {
        fs::path p = dir_ / name;
        std::ofstream(p, std::ios::binary) << bytes;
        return p.string();
    }
    static std::string read(const std::string& path) {
        std::ifstream f(path, std::ios::binary);
        return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    }
    // Runs load and returns the error message (failing the test when nothing is thrown).
    template <class E>
    std::string load_error(const std::string& path) {
        try {
            Tokenizer::load(path);
        } catch (const E& e) {
            return e.what();
        } catch (const std::exception& e) {
            ADD_FAILURE() << "unexpected exception type: " << e.what();
            return {};
        }
        ADD_FAILURE() << path << " loaded";
        return {};
    }

    fs::path dir_;
};

TEST_F(TokenizerErrors, MissingPathsAreNamed) {
    std::string missing = (dir_ / "nope.json").string();
    EXPECT_NE(load_error<IoError>(missing).find(missing), std::string::npos);
    EXPECT_NE(load_error<IoError>(dir_.string()).find("no tokenizer in this directory"),
              std::string::npos);
    std::string odd = write("vocab.txt", "x");
    EXPECT_NE(load_error<IoError>(odd).find("unknown tokenizer file type"), std::string::npos);
}

TEST_F(TokenizerErrors, TruncatedSentencePieceModel) {
    std::string model = read(fixture("llama2/tokenizer.model"));
    for (size_t cut : {size_t{1}, size_t{7}, size_t{1000}, model.size() / 2, model.size() - 3}) {
        std::string p = write("cut.model", model.substr(0, cut));
        std::string msg = load_error<IoError>(p);
        EXPECT_NE(msg.find(p), std::string::npos) << msg;
        EXPECT_TRUE(msg.find("truncated") != std::string::npos ||
                    msg.find("trainer_spec is missing") != std::string::npos)
            << msg;
    }
}

TEST_F(TokenizerErrors, CorruptedSentencePieceModelNeverCrashes) {
    // Seeded byte flips: each file either loads (a flipped score or character) or raises a
    // zs::Error; nothing else is acceptable.
    std::string model = read(fixture("llama2/tokenizer.model"));
    std::mt19937 rng(301);
    int errors = 0;
    for (int trial = 0; trial < 40; ++trial) {
        std::string bad = model;
        for (int k = 0; k < 3; ++k) bad[rng() % bad.size()] = static_cast<char>(rng() & 0xFF);
        std::string p = write("flip.model", bad);
        try {
            Tokenizer tok = Tokenizer::load(p);
            tok.decode(tok.encode("Hello world"));
        } catch (const Error&) {
            ++errors;
        }
    }
    std::printf("[ flips ] %d of 40 corrupted models rejected\n", errors);
}

// A minimal ModelProto written by hand (wire format from protobuf's encoding spec).
std::string varint(uint64_t v) {
    std::string s;
    while (v >= 0x80) {
        s += static_cast<char>((v & 0x7F) | 0x80);
        v >>= 7;
    }
    s += static_cast<char>(v);
    return s;
}
std::string field_bytes(int field, const std::string& payload) {
    return varint(static_cast<uint64_t>(field) << 3 | 2) + varint(payload.size()) + payload;
}
std::string field_varint(int field, uint64_t v) {
    return varint(static_cast<uint64_t>(field) << 3) + varint(v);
}

TEST_F(TokenizerErrors, UnsupportedSentencePieceModelType) {
    std::string pieces = field_bytes(1, field_bytes(1, "<unk>") + field_varint(3, 2)) +
                         field_bytes(1, field_bytes(1, "a"));
    std::string unigram = pieces + field_bytes(2, field_varint(3, 1));
    std::string msg = load_error<NotSupported>(write("uni.model", unigram));
    EXPECT_NE(msg.find("model_type is 1 (unigram)"), std::string::npos) << msg;
    // The same pieces as BPE load and encode ("a" is a piece; "b" is unknown -> <unk>).
    std::string bpe = pieces + field_bytes(2, field_varint(3, 2)) +
                      field_bytes(3, field_varint(3, 0) + field_varint(4, 0));
    Tokenizer tok = Tokenizer::load(write("bpe.model", bpe));
    EXPECT_EQ(tok.encode("ab"), (std::vector<int32_t>{1, 0}));
    // A NaN score would make the merge order undefined: refused.
    std::string nan_score =
        field_bytes(1, field_bytes(1, "a") + std::string("\x15\x00\x00\xc0\x7f", 5)) +
        field_bytes(2, field_varint(3, 2));
    EXPECT_NE(load_error<IoError>(write("nan.model", nan_score)).find("score of token 0 is NaN"),
              std::string::npos);
    std::string bad_type = field_bytes(1, field_bytes(1, "a") + field_varint(3, 9)) +
                           field_bytes(2, field_varint(3, 2));
    EXPECT_NE(load_error<IoError>(write("t.model", bad_type)).find("pieces[0].type is 9"),
              std::string::npos);
}

TEST_F(TokenizerErrors, BadTokenizerJson) {
    const std::string base = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
        "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel"}})";
    EXPECT_EQ(Tokenizer::load(write("ok.json", base)).encode("ab"), (std::vector<int32_t>{2}));

    EXPECT_NE(load_error<IoError>(write("a.json", "{\"model\": ")).find("invalid JSON"),
              std::string::npos);
    EXPECT_NE(load_error<IoError>(write("b.json", "{}")).find(".model is missing"),
              std::string::npos);
    std::string uni = R"({"model": {"type": "Unigram", "vocab": []}})";
    EXPECT_NE(load_error<NotSupported>(write("c.json", uni)).find("model.type 'Unigram'"),
              std::string::npos);
    std::string bad_merge = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a z"]},
        "pre_tokenizer": {"type": "ByteLevel"}})";
    EXPECT_NE(load_error<IoError>(write("d.json", bad_merge)).find("merge 0 ('a z') names 'z'"),
              std::string::npos);
    // A huge id must be refused before anything of that size is allocated (qxotic#3).
    std::string huge = R"({"model": {"type": "BPE", "vocab": {"a": 900000000}, "merges": []},
        "pre_tokenizer": {"type": "ByteLevel"}})";
    EXPECT_NE(load_error<IoError>(write("e.json", huge)).find("ids must be dense"),
              std::string::npos);
    std::string wrong_type = R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})";
    EXPECT_NE(load_error<IoError>(write("f.json", wrong_type)).find("expected a token id"),
              std::string::npos);
    std::string nfkc = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
        "normalizer": {"type": "NFKC"}, "pre_tokenizer": {"type": "ByteLevel"}})";
    EXPECT_NE(load_error<NotSupported>(write("g.json", nfkc)).find("normalizer of type 'NFKC'"),
              std::string::npos);
    std::string bad_regex = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"},
        "decoder": {"type": "ByteLevel"}})";
    // A Split alone is neither byte-level nor SentencePiece-style.
    EXPECT_NE(load_error<NotSupported>(write("h.json", bad_regex)).find("not supported"),
              std::string::npos);
    std::string bad_regex2 = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}})";
    EXPECT_NE(load_error<IoError>(write("i.json", bad_regex2)).find("does not compile"),
              std::string::npos);
    std::string late_split = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
            {"type": "Digits", "individual_digits": true}]}})";
    EXPECT_NE(load_error<NotSupported>(write("j.json", late_split)).find("only a final ByteLevel"),
              std::string::npos);
}

TEST_F(TokenizerErrors, MutatedTokenizerJsonNeverCrashes) {
    // A small tokenizer.json using most components; seeded byte edits (flip, delete, duplicate)
    // must each load and encode, or raise a zs::Error (never another exception, never a crash).
    const std::string base = R"({
  "added_tokens": [{"id": 0, "content": "<s>", "special": true, "lstrip": false,
                    "rstrip": true, "single_word": false, "normalized": false}],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits",
      "individual_digits": true}, {"type": "Split", "pattern": {"Regex": "[a-c]+"},
      "behavior": "MergedWithNext", "invert": false}]},
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>",
      "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String":
      "\u2581"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true, "unk_token": "<unk>",
    "vocab": {"<s>": 0, "<unk>": 1, "<0x41>": 2, "\u2581": 3, "a": 4, "b": 5, "ab": 6,
              "\u2581ab": 7, "1": 8},
    "merges": ["a b", "\u2581 ab"]}
})";
    Tokenizer ok = Tokenizer::load(write("base.json", base));
    // Worked by hand: "ab A" -> "▁ab▁A"; the Split makes "▁" and "ab" + "▁A" (MergedWithNext);
    // "ab" merges, "A" falls back to <0x41>.
    EXPECT_EQ(ok.encode("ab A", true), (std::vector<int32_t>{0, 3, 6, 3, 2}));
    std::mt19937 rng(301);
    const std::string_view kChars = "{}[]\":,0123456789-ab tfn\\";
    int rejected = 0;
    for (int trial = 0; trial < 400; ++trial) {
        std::string bad = base;
        for (int k = 0; k < 1 + static_cast<int>(rng() % 3); ++k) {
            size_t at = rng() % bad.size();
            switch (rng() % 3) {
                case 0:
                    bad[at] = kChars[rng() % kChars.size()];
                    break;
                case 1:
                    bad.erase(at, 1 + rng() % 8);
                    break;
                default:
                    bad.insert(at, bad.substr(rng() % bad.size(), 1 + rng() % 12));
                    break;
            }
        }
        std::string p = write("mut.json", bad);
        try {
            Tokenizer tok = Tokenizer::load(p);
            tok.decode(tok.encode("ab ab 12 A\xFF", true));
        } catch (const Error&) {
            ++rejected;
        } catch (const std::exception& e) {
            ADD_FAILURE() << "trial " << trial << ": not a zs::Error: " << e.what() << "\n" << bad;
        }
    }
    std::printf("[ mutate ] %d of 400 mutated tokenizer.json files rejected\n", rejected);
}

TEST_F(TokenizerErrors, BadTiktoken) {
    EXPECT_NE(load_error<ConfigError>(write("mystery.tiktoken", "YQ== 0\n"))
                  .find("no pre-tokenizer pattern"),
              std::string::npos);
    EXPECT_NE(load_error<IoError>(write("r50k_base.tiktoken", "Y!== 0\n")).find("not base64"),
              std::string::npos);
    EXPECT_NE(load_error<IoError>(write("p50k_base.tiktoken", "YQ== 0\nYg== 99999999\n"))
                  .find("rank 99999999 after only 2 lines"),
              std::string::npos);
    TokenizerLoadOptions opts;
    opts.tiktoken_pattern = R"(\S+|\s+)";
    Tokenizer tok = Tokenizer::load(write("mine.tiktoken", "YQ== 0\nYg== 1\nYWI= 2\n"), opts);
    EXPECT_EQ(tok.encode("ab"), (std::vector<int32_t>{2}));
}

TEST(TokenizerRegex, CatastrophicPatternFailsFast) {
    // (a+)+$ on "a"*30 + "b" needs ~2^30 steps in a backtracking engine. It must end within a
    // fraction of a second: a match-limit error naming the pattern, or a (JIT-optimised) result.
    TokenizerSpec spec;
    spec.name = "redos";
    spec.model = TokenizerModel::kByteLevelBpe;
    ByteUnicode alphabet;  // spell the 256 byte tokens in GPT-2's alphabet
    for (int b = 0; b < 256; ++b)
        spec.tokens.push_back(alphabet.encode(std::string(1, static_cast<char>(b))));
    spec.merges_from_ranks = true;
    spec.pre_splits.push_back({"(a+)+$", SplitBehavior::kIsolated, false});
    Tokenizer tok = Tokenizer::from_spec(spec);
    std::string text = std::string(30, 'a') + "b";
    auto t0 = std::chrono::steady_clock::now();
    std::string outcome;
    try {
        tok.encode(text);
        outcome = "completed";
    } catch (const Error& e) {
        outcome = e.what();
        EXPECT_NE(outcome.find("(a+)+$"), std::string::npos) << outcome;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ redos ] %.3f s: %s\n", secs, outcome.c_str());
    EXPECT_LT(secs, 1.0);

    // Nested quantifiers on a longer run stay bounded too.
    spec.pre_splits[0].regex = "(x+x+)+y";
    Tokenizer tok2 = Tokenizer::from_spec(spec);
    t0 = std::chrono::steady_clock::now();
    try {
        tok2.encode(std::string(5000, 'x'));
    } catch (const Error&) {
    }
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(secs, 2.0);
}

TEST(TokenizerRegex, LongWhitespaceRunsStayWithinTheLimit) {
    // A legitimate pattern on a pathological but valid input must not hit the limit: 1 MB of
    // spaces then a word, under Llama-3's regex.
    const Tokenizer& llama3 = family("llama3");
    std::string text(1 << 20, ' ');
    text += "word";
    std::vector<int32_t> ids = llama3.encode(text);
    EXPECT_EQ(llama3.decode(ids), text);
}

TEST(TokenizerDecode, OutOfRangeIdsAreNamed) {
    const Tokenizer& gpt2 = family("gpt2");
    try {
        gpt2.decode(std::vector<int32_t>{15496, 50257});
        ADD_FAILURE() << "decoded";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("token id 50257 is outside the vocabulary"),
                  std::string::npos);
    }
    EXPECT_THROW(gpt2.id_to_token(-1), Error);
}

}  // namespace
}  // namespace zs::io::test
