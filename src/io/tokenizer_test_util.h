// Shared by the tokenizer tests: the fixture paths, the real tokenizers (loaded once per test
// binary), the stress cases and the golden cases (tests/fixtures/tokenizers/tokenizers.json: 63
// strings with ids from js-tiktoken, @lenml/tokenizers and Debian's sentencepiece 0.1.97).
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/tokenizer.h"

namespace zs::io::test {

inline std::string fixture(const std::string& rel) {
    return std::string(ZS_SOURCE_DIR) + "/tests/fixtures/tokenizers/" + rel;
}

// The files each family's golden ids come from.
inline std::string family_path(const std::string& family) {
    if (family == "gpt2") return fixture("gpt2");
    if (family == "llama3") return fixture("llama3");  // tokenizer.json + tokenizer_config.json
    if (family == "mistral") return fixture("mistral/tokenizer.json");
    if (family == "llama2") return fixture("llama2/tokenizer.model");
    if (family == "r50k") return fixture("tiktoken/r50k_base.tiktoken");
    if (family == "cl100k") return fixture("tiktoken/cl100k_base.tiktoken");
    return {};
}

inline const Tokenizer& family(const std::string& name) {
    static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
    auto& slot = loaded[name];
    if (!slot) slot = std::make_unique<Tokenizer>(Tokenizer::load(family_path(name)));
    return *slot;
}

struct GoldenCase {
    std::string text;
    std::map<std::string, std::vector<int32_t>> ids;  // family -> ids
    std::map<std::string, std::string> decoded;       // family -> reference decode, if != text
};

inline const std::vector<GoldenCase>& golden() {
    static const std::vector<GoldenCase> cases = [] {
        std::ifstream f(fixture("tokenizers.json"), std::ios::binary);
        std::stringstream ss;
        ss << f.rdbuf();
        auto j = nlohmann::json::parse(ss.str());
        std::vector<GoldenCase> out;
        for (const auto& e : j) {
            GoldenCase c;
            c.text = e.at("text").get<std::string>();
            for (const char* fam : {"gpt2", "llama3", "mistral", "llama2"}) {
                c.ids[fam] = e.at(fam).get<std::vector<int32_t>>();
            }
            out.push_back(std::move(c));
        }
        return out;
    }();
    return cases;
}

inline nlohmann::json stress_json() {
    std::ifstream f(fixture("stress.json"), std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return nlohmann::json::parse(ss.str());
}

// tests/fixtures/tokenizers/stress.json (tools/reference/tokenizer_stress.py): 200 seeded random
// multi-line texts with ids from tiktoken (gpt2, cl100k), HF tokenizers (llama3, mistral and the
// tokenizer.json variants) and sentencepiece (llama2).
inline const std::vector<GoldenCase>& stress() {
    static const std::vector<GoldenCase> cases = [] {
        nlohmann::json j = stress_json();
        std::vector<GoldenCase> out;
        for (const auto& e : j.at("cases")) {
            GoldenCase c;
            c.text = e.at("text").get<std::string>();
            for (const auto& [fam, ids] : e.items()) {
                if (fam != "text" && fam != "decoded") c.ids[fam] = ids.get<std::vector<int32_t>>();
            }
            for (const auto& [fam, text] : e.at("decoded").items()) {
                c.decoded[fam] = text.get<std::string>();
            }
            out.push_back(std::move(c));
        }
        return out;
    }();
    return cases;
}

}  // namespace zs::io::test
