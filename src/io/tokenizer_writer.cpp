#include "io/tokenizer_writer.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/atomic_file.h"

namespace zs::io {

namespace {

// Keys come out sorted (std::map): the tokenizers library does not mind the order, and a sorted
// object takes a 128k-token vocabulary in O(n log n), where ordered_json would be quadratic.
using json = nlohmann::json;

constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581 "▁"

json added_token(const AddedToken& a) {
    return {{"id", a.id},          {"content", a.content}, {"single_word", a.single_word},
            {"lstrip", a.lstrip},  {"rstrip", a.rstrip},   {"normalized", a.normalized},
            {"special", a.special}};
}

// TemplateProcessing that adds bos and/or eos around one sequence (and a pair), as the spec asks.
json post_processor(const TokenizerSpec& s) {
    const bool bos = s.add_bos && s.bos_id, eos = s.add_eos && s.eos_id;
    if (!bos && !eos) return nullptr;
    json single = json::array(), pair = json::array(), specials = json::object();
    auto special = [&](int32_t id, int type_id) {
        const std::string& t = s.tokens[static_cast<size_t>(id)];
        specials[t] = {{"id", t}, {"ids", {id}}, {"tokens", {t}}};
        return json{{"SpecialToken", {{"id", t}, {"type_id", type_id}}}};
    };
    auto seq = [](const char* name, int type_id) {
        return json{{"Sequence", {{"id", name}, {"type_id", type_id}}}};
    };
    if (bos) single.push_back(special(*s.bos_id, 0));
    single.push_back(seq("A", 0));
    if (eos) single.push_back(special(*s.eos_id, 0));
    pair = single;
    if (bos) pair.push_back(special(*s.bos_id, 1));
    pair.push_back(seq("B", 1));
    if (eos) pair.push_back(special(*s.eos_id, 1));
    return {{"type", "TemplateProcessing"},
            {"single", single},
            {"pair", pair},
            {"special_tokens", specials}};
}

}  // namespace

std::string hf_tokenizer_json(const TokenizerSpec& s) {
    ZS_CHECK_T(NotSupported, !s.merges_from_ranks,
               "{}: a tiktoken tokenizer (merges from ranks) cannot be written as tokenizer.json",
               s.name);
    ZS_CHECK_T(NotSupported, !s.merges.empty() || s.tokens.empty(),
               "{}: this tokenizer merges by piece score (a SentencePiece model) and has no merge "
               "list; writing it as tokenizer.json is not supported (copy its tokenizer.model)",
               s.name);
    json root;
    root["version"] = "1.0";
    root["truncation"] = nullptr;
    root["padding"] = nullptr;
    json added = json::array();
    for (const AddedToken& a : s.added_tokens) added.push_back(added_token(a));
    root["added_tokens"] = added;

    json model = {
        {"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", s.unk_id ? json(s.tokens[static_cast<size_t>(*s.unk_id)]) : json(nullptr)},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", s.fuse_unk},
        {"byte_fallback", s.byte_fallback},
        {"ignore_merges", s.ignore_merges}};
    switch (s.model) {
        case TokenizerModel::kByteLevelBpe: {
            ZS_CHECK_T(NotSupported, !s.remove_extra_whitespaces && !s.split_on_space,
                       "{}: a byte-level BPE with SentencePiece whitespace rules cannot be "
                       "written as tokenizer.json",
                       s.name);
            root["normalizer"] = nullptr;
            json steps = json::array();
            if (s.add_prefix_space) {
                // The tokenizers library adds the prefix space only in a leading ByteLevel,
                // which then also splits with GPT-2's regex: the one form that can say this.
                ZS_CHECK_T(NotSupported,
                           s.pre_splits.size() == 1 && s.pre_splits[0].regex == kGpt2Pattern &&
                               s.pre_splits[0].behavior == SplitBehavior::kIsolated &&
                               !s.pre_splits[0].invert,
                           "{}: a byte-level BPE that adds a prefix space before splits other "
                           "than GPT-2's cannot be written as tokenizer.json",
                           s.name);
                steps.push_back({{"type", "ByteLevel"},
                                 {"add_prefix_space", true},
                                 {"trim_offsets", true},
                                 {"use_regex", true}});
            }
            for (const PreSplit& p : s.add_prefix_space ? std::vector<PreSplit>{} : s.pre_splits) {
                steps.push_back({{"type", "Split"},
                                 {"pattern", {{"Regex", p.regex}}},
                                 {"behavior", to_string(p.behavior)},
                                 {"invert", p.invert}});
            }
            if (!s.add_prefix_space) {
                steps.push_back({{"type", "ByteLevel"},
                                 {"add_prefix_space", false},
                                 {"trim_offsets", true},
                                 {"use_regex", false}});
            }
            root["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", steps}};
            root["post_processor"] = post_processor(s);
            root["decoder"] = {{"type", "ByteLevel"},
                               {"add_prefix_space", true},
                               {"trim_offsets", true},
                               {"use_regex", true}};
            break;
        }
        case TokenizerModel::kSentencePieceBpe: {
            ZS_CHECK_T(NotSupported,
                       s.pre_splits.empty() && !s.split_on_space && !s.prefix_unless_space &&
                           !s.prefix_first_only && !s.remove_extra_whitespaces &&
                           s.leading_space == LeadingSpace::kStripOutput,
                       "{}: only the Prepend + Replace normalizer form of a SentencePiece-style "
                       "tokenizer can be written as tokenizer.json",
                       s.name);
            json norm = json::array();
            if (s.add_prefix_space) norm.push_back({{"type", "Prepend"}, {"prepend", kSpace}});
            norm.push_back(
                {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}});
            root["normalizer"] = {{"type", "Sequence"}, {"normalizers", norm}};
            root["pre_tokenizer"] = nullptr;
            root["post_processor"] = post_processor(s);
            json dec = json::array();
            dec.push_back(
                {{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}});
            if (s.byte_fallback) dec.push_back({{"type", "ByteFallback"}});
            dec.push_back({{"type", "Fuse"}});
            dec.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
            root["decoder"] = {{"type", "Sequence"}, {"decoders", dec}};
            break;
        }
    }
    json vocab = json::object();
    for (size_t id = 0; id < s.tokens.size(); ++id) vocab[s.tokens[id]] = id;
    model["vocab"] = vocab;
    json merges = json::array();
    for (const auto& m : s.merges) merges.push_back({m.first, m.second});
    model["merges"] = merges;
    root["model"] = model;
    return root.dump(1) + "\n";
}

std::string hf_tokenizer_config_json(const TokenizerSpec& s) {
    json c;
    auto token = [&](const std::optional<int32_t>& id) -> json {
        return id ? json(s.tokens[static_cast<size_t>(*id)]) : json(nullptr);
    };
    c["tokenizer_class"] = "PreTrainedTokenizerFast";
    c["bos_token"] = token(s.bos_id);
    c["eos_token"] = token(s.eos_id);
    c["unk_token"] = token(s.unk_id);
    c["pad_token"] = token(s.pad_id);
    c["add_bos_token"] = s.add_bos;
    c["add_eos_token"] = s.add_eos;
    c["clean_up_tokenization_spaces"] = false;
    if (s.chat_template) c["chat_template"] = *s.chat_template;
    return c.dump(2) + "\n";
}

void save_hf_tokenizer(const TokenizerSpec& spec, const std::string& dir) {
    // Both texts first, so a spec that cannot be written leaves the directory untouched.
    const std::string tokenizer = hf_tokenizer_json(spec);
    const std::string config = hf_tokenizer_config_json(spec);
    std::filesystem::create_directories(dir);
    write_file_atomic(dir + "/tokenizer.json", tokenizer);
    write_file_atomic(dir + "/tokenizer_config.json", config);
}

}  // namespace zs::io
