// JsonMatcher against independent references:
//   - nlohmann::json decides what a JSON document is: on many generated and mutated documents a
//     document is complete for the matcher iff nlohmann parses it, every prefix the matcher takes
//     completes into a document nlohmann parses, and the byte it refuses cannot be completed;
//   - the brute-force mask (each token's bytes tried on a copy of the matcher) decides what
//     fill_mask must return, on real vocabularies (GPT-2, Mistral) from tests/fixtures; the time
//     per mask on GPT-2's 50k vocabulary is printed.
#include "infer/json_constraint.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "infer/json_test_util.h"
#include "io/tokenizer.h"
#include "tests/test_util.h"

namespace zs::infer {
namespace {

using namespace jsontest;  // the shared test helpers
using zs::test::Rng;

// Whether a number outside strings has an exponent of kJsonMaxExpDigits + 1 digits or more:
// the matcher's documented bound (it keeps numbers in double range), stricter than nlohmann for
// exponents such as 0e999 or 1e-999 that still parse.
bool exceeds_exponent_bound(const std::string& s) {
    bool in_string = false;
    for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (in_string) {
            if (c == '\\') {
                ++i;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') in_string = true;
        if ((c == 'e' || c == 'E') && i > 0 && std::isdigit(static_cast<uint8_t>(s[i - 1]))) {
            size_t j = i + 1;
            if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
            size_t digits = 0;
            for (; j < s.size() && std::isdigit(static_cast<uint8_t>(s[j])); ++j) ++digits;
            if (digits > static_cast<size_t>(kJsonMaxExpDigits)) return true;
        }
    }
    return false;
}

// --- random documents -------------------------------------------------------------------------

std::string gen_ws(Rng& rng) {
    static const char kWs[] = {' ', '\t', '\n', '\r'};
    std::string s;
    if (rng.integer(0, 2) == 0) {
        for (int64_t n = rng.integer(1, 3); n > 0; --n) s += kWs[rng.integer(0, 3)];
    }
    return s;
}

std::string gen_string(Rng& rng) {
    static const std::vector<std::string> kPieces = {"a",
                                                     "Z",
                                                     " ",
                                                     "0",
                                                     "\\n",
                                                     "\\\"",
                                                     "\\\\",
                                                     "\\/",
                                                     "\\b",
                                                     "\\f",
                                                     "\\r",
                                                     "\\t",
                                                     "\\u00e9",
                                                     "\\u20AC",
                                                     "\\ud83d\\ude00",
                                                     "\xc3\xa9",
                                                     "\xe2\x82\xac",
                                                     "\xf0\x9f\x98\x80",
                                                     "\x7f",
                                                     "{",
                                                     "}",
                                                     ":",
                                                     ",",
                                                     "[",
                                                     "'"};
    std::string s = "\"";
    for (int64_t n = rng.integer(0, 8); n > 0; --n) {
        s += kPieces[static_cast<size_t>(rng.integer(0, static_cast<int64_t>(kPieces.size()) - 1))];
    }
    return s + "\"";
}

std::string gen_number(Rng& rng) {
    std::string s;
    if (rng.integer(0, 2) == 0) s += "-";
    if (rng.integer(0, 3) == 0) {
        s += "0";
    } else {
        s += static_cast<char>('1' + rng.integer(0, 8));
        for (int64_t n = rng.integer(0, 5); n > 0; --n)
            s += static_cast<char>('0' + rng.integer(0, 9));
    }
    if (rng.integer(0, 2) == 0) {
        s += ".";
        for (int64_t n = rng.integer(1, 4); n > 0; --n)
            s += static_cast<char>('0' + rng.integer(0, 9));
    }
    if (rng.integer(0, 3) == 0) {
        s += rng.integer(0, 1) ? "e" : "E";
        if (rng.integer(0, 1)) s += rng.integer(0, 1) ? "+" : "-";
        for (int64_t n = rng.integer(1, 2); n > 0; --n)
            s += static_cast<char>('0' + rng.integer(0, 9));
    }
    return s;
}

std::string gen_value(Rng& rng, int depth);

std::string gen_object(Rng& rng, int depth) {
    std::string s(1, '{');
    s += gen_ws(rng);
    const int64_t n = depth > 4 ? 0 : rng.integer(0, 4);
    for (int64_t i = 0; i < n; ++i) {
        if (i) {
            s += ',';
            s += gen_ws(rng);
        }
        s += gen_string(rng);
        s += gen_ws(rng);
        s += ':';
        s += gen_ws(rng);
        s += gen_value(rng, depth + 1);
        s += gen_ws(rng);
    }
    s += '}';
    return s;
}

std::string gen_value(Rng& rng, int depth) {
    switch (rng.integer(0, depth > 4 ? 3 : 5)) {
        case 0:
        case 3:
            return gen_string(rng);
        case 1:
            return gen_number(rng);
        case 2: {
            static const char* kLits[] = {"true", "false", "null"};
            return kLits[rng.integer(0, 2)];
        }
        case 4: {
            std::string s(1, '[');
            s += gen_ws(rng);
            for (int64_t i = 0, n = rng.integer(0, 4); i < n; ++i) {
                if (i) {
                    s += ',';
                    s += gen_ws(rng);
                }
                s += gen_value(rng, depth + 1);
                s += gen_ws(rng);
            }
            s += ']';
            return s;
        }
        default:
            return gen_object(rng, depth);
    }
}

// s with `n` bytes at `pos` replaced by `with` (built by appends: GCC 12's -Wrestrict misfires
// on std::string::insert).
std::string splice(const std::string& s, size_t pos, size_t n, const std::string& with) {
    std::string out;
    out.append(s, 0, pos);
    out += with;
    out.append(s, std::min(pos + n, s.size()), std::string::npos);
    return out;
}

std::string mutate(Rng& rng, std::string s) {
    static const std::string kAlphabet =
        "{}[]\":,\\ \t\n0123456789-+.eEtrufalsnbu/\x80\xbf\xc3\xe0\xed\xf0\xf4\xff\x01";
    for (int64_t n = rng.integer(1, 3); n > 0; --n) {
        if (s.empty()) s.push_back('{');
        const auto pos = static_cast<size_t>(rng.integer(0, static_cast<int64_t>(s.size()) - 1));
        const std::string a(1, kAlphabet[static_cast<size_t>(
                                   rng.integer(0, static_cast<int64_t>(kAlphabet.size()) - 1))]);
        switch (rng.integer(0, 5)) {
            case 0:
                s = splice(s, pos, 1, "");
                break;
            case 1:
                s = splice(s, pos, 0, a);
                break;
            case 2:
                s = splice(s, pos, 1, a);
                break;
            case 3:
                s = splice(s, pos, 0, std::string(1, static_cast<char>(rng.integer(0, 255))));
                break;
            case 4:
                s.resize(pos);
                break;
            default:
                s = splice(s, pos, 0, s.substr(pos, static_cast<size_t>(rng.integer(1, 6))));
                break;
        }
    }
    return s;
}

// Checks one document against nlohmann (see the file comment).
void check_document(const std::shared_ptr<const JsonGrammar>& g, const std::string& d,
                    bool object_only, int& n_complete, int& n_refused) {
    JsonMatcher m(g);
    const size_t k = feed(m, d);
    const bool mine = k == d.size() && m.can_end();
    ASSERT_EQ(mine, reference_complete(d, object_only))
        << show(d) << " (matcher took " << k << " of " << d.size() << " bytes)";
    n_complete += mine;
    n_refused += k < d.size();
    // All at once: the same verdict, and a refusal leaves the state as it was.
    JsonMatcher whole(g);
    ASSERT_EQ(whole.accept_bytes(d), k == d.size()) << show(d);
    if (k < d.size()) {
        ASSERT_TRUE(whole.accept_bytes(d.substr(0, k))) << show(d);
    }
    // Everything taken completes into a document nlohmann accepts.
    const std::string p = d.substr(0, k);
    const std::optional<std::string> c = greedy_completion(m);
    ASSERT_TRUE(c.has_value()) << "no completion of the accepted prefix " << show(p);
    ASSERT_TRUE(reference_complete(p + *c, object_only))
        << "accepted prefix " << show(p) << " completed as " << show(*c) << " does not parse";
    // The refused byte: no simple completion makes a document of it.
    if (k < d.size()) {
        const std::string q = d.substr(0, k + 1);
        static const std::vector<std::string> kTails = {"",           "\"",
                                                        "}",          "]",
                                                        "\"}",        "\"]",
                                                        "0",          "0}",
                                                        "0]",         ":0}",
                                                        "e",          "ue",
                                                        "lse",        "ull",
                                                        "0\"",        "000\"",
                                                        "C00\"",      "DC00\"",
                                                        "\\uDC00\"",  "\x80\"",
                                                        "\x80\x80\"", "\x80\x80\x80\"",
                                                        "1}",         "\":1}"};
        for (const std::string& t : kTails) {
            for (const std::string& tail : {t, t + *c}) {
                ASSERT_FALSE(reference_complete(q + tail, object_only))
                    << "the matcher refused byte " << k << " of " << show(d) << " but "
                    << show(q + tail) << " parses";
            }
        }
    }
}

TEST(JsonMatcher, AgreesWithNlohmannOnGeneratedAndMutatedDocuments) {
    for (bool object_only : {true, false}) {
        auto g =
            object_only ? JsonGrammar::json_object() : JsonGrammar::from_schema(ojson::object());
        Rng rng(object_only ? 7 : 8);
        int n_complete = 0, n_refused = 0;
        for (int i = 0; i < 3000; ++i) {
            std::string doc = gen_ws(rng);
            doc += object_only ? gen_object(rng, 0) : gen_value(rng, 0);
            const std::string d = i % 3 == 0 ? doc : mutate(rng, doc);
            if (exceeds_exponent_bound(d)) continue;
            check_document(g, d, object_only, n_complete, n_refused);
            if (HasFatalFailure()) return;
        }
        // Both outcomes are well represented.
        EXPECT_GT(n_complete, 1000);
        EXPECT_GT(n_refused, 1000);
    }
}

TEST(JsonMatcher, RefusesAtTheFirstBadByte) {
    auto any = JsonGrammar::from_schema(ojson::object());
    struct Case {
        std::string doc;
        size_t accepted;  // bytes taken before the refusal
    };
    const std::vector<Case> cases = {
        {"{\"a\":01}", 6},
        {"\"\\uDC00\"", 4},   // a lone low surrogate: refused at its second digit
        {"\"\\uD83Dx\"", 7},  // a high surrogate needs \u + a low one
        {"\"\\uD83D\\u0041\"", 9},
        {"[1,]", 3},
        {"{\"a\" 1}", 5},
        {"\"\xe0\x80\"", 2},
        {"\"\xed\xa0\x80\"", 2},  // UTF-8 encoded surrogate
        {"\"\xf4\x90\x80\x80\"", 2},
        {"\"\xc0\xaf\"", 1},  // overlong
        {"tru e", 3},
        {"{} ", 2},  // nothing after the value
        {"1 ", 1},
        {"-a", 1},
        {"1.e", 2},
        {"\"\x01\"", 1},
        {"{,}", 1},
        {"[\"a\" \"b\"]", 5},
    };
    for (const Case& c : cases) {
        JsonMatcher m(any);
        EXPECT_EQ(feed(m, c.doc), c.accepted) << show(c.doc);
    }
    JsonMatcher ok(any);
    const std::string good =
        "{\"a\":[1,-0.5e+3,true,false,null,\"\\u00e9\\ud83d\\ude00 \xc3\xa9\xf0\x9f\x98\x80\"],"
        "\"\":{}}";
    EXPECT_TRUE(ok.accept_bytes(good));
    EXPECT_TRUE(ok.done());
}

TEST(JsonMatcher, BoundsWhitespaceNestingAndDigits) {
    auto any = JsonGrammar::from_schema(ojson::object());
    {
        JsonMatcher m(JsonGrammar::json_object());
        EXPECT_TRUE(m.accept_bytes("{" + std::string(kJsonMaxWhitespace, ' ')));
        EXPECT_FALSE(m.accept_bytes(" "));
        EXPECT_FALSE(m.accept_bytes("\n"));
        EXPECT_TRUE(m.accept_bytes("\"k\""));  // a non-whitespace byte resets the count
        EXPECT_TRUE(m.accept_bytes(std::string(kJsonMaxWhitespace, '\t') + ":1}"));
        EXPECT_TRUE(m.done());
    }
    {
        JsonMatcher m(any);
        EXPECT_TRUE(m.accept_bytes(std::string(kJsonMaxNesting, '[')));
        EXPECT_FALSE(m.accept_bytes("["));
        EXPECT_FALSE(m.accept_bytes("{"));
        EXPECT_TRUE(m.accept_bytes("\"leaf\"" + std::string(kJsonMaxNesting, ']')));
        EXPECT_TRUE(m.done());
    }
    {
        JsonMatcher m(any);
        EXPECT_TRUE(m.accept_bytes("-" + std::string(kJsonMaxIntDigits, '9')));
        EXPECT_FALSE(m.accept_bytes("9"));
        EXPECT_TRUE(m.accept_bytes(".5e-9"));
        EXPECT_TRUE(m.can_end());
        EXPECT_FALSE(m.done());  // one more exponent digit may come
        EXPECT_TRUE(m.accept_bytes("9"));
        EXPECT_FALSE(m.accept_bytes("9"));
        EXPECT_TRUE(m.done());  // nothing can follow
    }
    {
        JsonMatcher m(any);
        EXPECT_TRUE(m.accept_bytes("0"));
        EXPECT_TRUE(m.can_end());
        EXPECT_FALSE(m.done());  // 0.5, 0e1
        JsonMatcher i(JsonGrammar::from_schema(ojson::parse(R"({"type": "integer"})")));
        EXPECT_TRUE(i.accept_bytes("-0"));
        EXPECT_TRUE(i.done());  // an integer 0 takes no more digits
    }
    {
        JsonMatcher m(any);
        EXPECT_TRUE(m.accept_bytes("tru"));
        EXPECT_FALSE(m.can_end());
        EXPECT_TRUE(m.accept_bytes("e"));
        EXPECT_TRUE(m.can_end());
        EXPECT_TRUE(m.done());
    }
    {
        JsonMatcher m(JsonGrammar::json_object());
        EXPECT_FALSE(m.accept_bytes("[]"));  // json_object: the top level is an object
        EXPECT_FALSE(m.accept_bytes("\"s\""));
        EXPECT_TRUE(m.accept_bytes(" {}"));
        EXPECT_TRUE(m.done());
    }
}

// --- masks on real vocabularies ---------------------------------------------------------------

struct Vocab {
    io::Tokenizer tok;
    std::shared_ptr<const TokenIndex> index;
};

Vocab load_vocab(const std::string& rel) {
    io::Tokenizer tok = io::Tokenizer::load(zs::test::source_path(rel));
    auto index = TokenIndex::from_tokenizer(tok, tok.vocab_size());
    return {std::move(tok), std::move(index)};
}

void expect_mask_is_brute_force(JsonMatcher& m, const TokenIndex& ix, const std::string& ctx) {
    std::vector<uint8_t> fast(static_cast<size_t>(ix.size()));
    const int64_t n = m.fill_mask(ix, fast.data());
    int64_t n_brute = 0, n_bad = 0;
    for (int64_t i = 0; i < ix.size(); ++i) {
        const std::string& b = ix.bytes(static_cast<int32_t>(i));
        JsonMatcher copy = m;
        const bool want = !b.empty() && copy.accept_bytes(b);
        n_brute += want;
        if (want != (fast[static_cast<size_t>(i)] != 0) && ++n_bad <= 5) {
            ADD_FAILURE() << "token " << i << " '" << show(b) << "': fill_mask "
                          << int(fast[static_cast<size_t>(i)]) << ", brute force " << want
                          << " after " << show(ctx);
        }
    }
    EXPECT_EQ(n, n_brute);
}

void mask_walks(const Vocab& v, uint64_t seed) {
    const TokenIndex& ix = *v.index;
    std::vector<std::shared_ptr<const JsonGrammar>> grammars = {JsonGrammar::json_object()};
    for (int s : {0, 5, 7, 17})
        grammars.push_back(JsonGrammar::from_schema(ojson::parse(kSchemas[s])));
    Rng rng(seed);
    std::vector<uint8_t> allowed(static_cast<size_t>(ix.size()));
    for (const auto& g : grammars) {
        for (int run = 0; run < 2; ++run) {
            JsonMatcher m(g);
            std::string out;
            for (int step = 0; step < 30 && !m.done(); ++step) {
                expect_mask_is_brute_force(m, ix, out);
                if (::testing::Test::HasFailure()) return;
                // Next token: half the time a short one (structure), else any allowed.
                const int64_t n = m.fill_mask(ix, allowed.data());
                ASSERT_GT(n, 0) << show(out);
                std::vector<int32_t> ids;
                for (int64_t i = 0; i < ix.size(); ++i) {
                    const auto& b = ix.bytes(static_cast<int32_t>(i));
                    if (allowed[static_cast<size_t>(i)] && (run == 0 || b.size() <= 2)) {
                        ids.push_back(static_cast<int32_t>(i));
                    }
                }
                if (ids.empty()) break;
                const int32_t t =
                    ids[static_cast<size_t>(rng.integer(0, static_cast<int64_t>(ids.size()) - 1))];
                ASSERT_TRUE(m.accept_bytes(ix.bytes(t)));
                out += ix.bytes(t);
            }
        }
    }
}

TEST(TokenMask, EqualsBruteForceOnGpt2) {
    Vocab v = load_vocab("tests/fixtures/tokenizers/gpt2");
    ASSERT_EQ(v.index->size(), 50257);
    // Byte-level pieces are mapped to raw bytes; the special token has none.
    EXPECT_EQ(v.index->bytes(*v.tok.token_to_id("\xc4\xa0the")), " the");
    EXPECT_EQ(v.index->bytes(*v.tok.token_to_id("<|endoftext|>")), "");
    mask_walks(v, 21);
}

TEST(TokenMask, EqualsBruteForceOnMistral) {
    Vocab v = load_vocab("tests/fixtures/tokenizers/mistral");
    // SentencePiece: "▁" is a space, <0x0A> is the byte, <s> and </s> have none.
    EXPECT_EQ(v.index->bytes(*v.tok.token_to_id("\xe2\x96\x81the")), " the");
    EXPECT_EQ(v.index->bytes(*v.tok.token_to_id("<0x0A>")), "\n");
    EXPECT_EQ(v.index->bytes(*v.tok.token_to_id("</s>")), "");
    mask_walks(v, 22);
}

// Time per fill_mask on a 50k vocabulary (GPT-2, the size of SmolLM2's 49k) at the states of
// generated documents; printed for docs/SERVING.md. The bound only catches a gross regression.
TEST(TokenMask, TimePerStepOn50kVocabulary) {
    Vocab v = load_vocab("tests/fixtures/tokenizers/gpt2");
    const TokenIndex& ix = *v.index;
    Rng rng(5);
    std::vector<uint8_t> allowed(static_cast<size_t>(ix.size()));
    std::vector<double> times;
    for (int s : {-1, 0, 5, 17}) {
        auto g = s < 0 ? JsonGrammar::json_object()
                       : JsonGrammar::from_schema(ojson::parse(kSchemas[s]));
        for (int run = 0; run < 4; ++run) {
            JsonMatcher m(g);
            for (int step = 0; step < 60 && !m.done(); ++step) {
                const auto t0 = std::chrono::steady_clock::now();
                const int64_t n = m.fill_mask(ix, allowed.data());
                times.push_back(
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
                ASSERT_GT(n, 0);
                std::vector<int32_t> ids;
                for (int64_t i = 0; i < ix.size(); ++i) {
                    if (allowed[static_cast<size_t>(i)]) ids.push_back(static_cast<int32_t>(i));
                }
                const int32_t t =
                    ids[static_cast<size_t>(rng.integer(0, static_cast<int64_t>(ids.size()) - 1))];
                ASSERT_TRUE(m.accept_bytes(ix.bytes(t)));
            }
        }
    }
    std::sort(times.begin(), times.end());
    double sum = 0;
    for (double t : times) sum += t;
    const double mean = sum / static_cast<double>(times.size());
    std::printf(
        "fill_mask over %lld tokens, %zu states: mean %.1f us, median %.1f us, p90 %.1f us, "
        "max %.1f us\n",
        static_cast<long long>(ix.size()), times.size(), mean * 1e6, times[times.size() / 2] * 1e6,
        times[times.size() * 9 / 10] * 1e6, times.back() * 1e6);
    EXPECT_LT(mean, 0.01);
    // Named states, median of 50 runs each.
    struct State {
        const char* name;
        int schema;  // -1: json_object
        const char* prefix;
    };
    const State states[] = {
        {"json_object, after '{'", -1, "{"},
        {"json_object, value position", -1, "{\"key\": "},
        {"json_object, inside a string", -1, "{\"key\": \"some te"},
        {"json_object, after a value", -1, "{\"key\": 12"},
        {"json_object, inside a key", -1, "{\"ke"},
        {"schema, inside a declared key", 0, "{\"na"},
        {"schema, string with maxLength", 0, "{\"name\": \"ab"},
        {"schema, integer value", 0, "{\"name\": \"ab\", \"age\": 3"},
        {"schema, enum item", 0, "{\"name\": \"ab\", \"age\": 3, \"tags\": [\"x\", "},
    };
    for (const State& st : states) {
        auto g = st.schema < 0 ? JsonGrammar::json_object()
                               : JsonGrammar::from_schema(ojson::parse(kSchemas[st.schema]));
        JsonMatcher m(g);
        ASSERT_TRUE(m.accept_bytes(st.prefix)) << st.prefix;
        std::vector<double> ts;
        int64_t n = 0;
        for (int rep = 0; rep < 50; ++rep) {
            const auto t0 = std::chrono::steady_clock::now();
            n = m.fill_mask(ix, allowed.data());
            ts.push_back(
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(ts.begin(), ts.end());
        std::printf("  %-34s %6lld allowed  %8.1f us\n", st.name, static_cast<long long>(n),
                    ts[ts.size() / 2] * 1e6);
    }
}

}  // namespace
}  // namespace zs::infer
