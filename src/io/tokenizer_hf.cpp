// Hugging Face tokenizer files -> TokenizerSpec: tokenizer.json (+ tokenizer_config.json beside
// it) with a BPE model, and the older vocab.json / encoder.json + merges.txt / vocab.bpe pair.
//
// tokenizer.json components are mapped onto the spec's fields; a component this build does not
// implement (a Unigram model, an NFKC normalizer, a Whitespace pre-tokenizer, ...) raises
// NotSupported naming its JSON path, so nothing silently tokenizes differently.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/json.h"
#include "io/tokenizer_impl.h"

namespace zs::io {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 "▁"

// Typed accessors that name the file and the JSON path on a wrong type.
struct Reader {
    const std::string& path;

    const json* get(const json& obj, const char* key) const {
        if (!obj.is_object()) return nullptr;
        auto it = obj.find(key);
        if (it == obj.end() || it->is_null()) return nullptr;
        return &*it;
    }
    const json& need(const json& obj, const char* key, const std::string& where) const {
        const json* v = get(obj, key);
        ZS_CHECK_T(IoError, v != nullptr, "{}: {}.{} is missing", path, where, key);
        return *v;
    }
    std::string str(const json& obj, const char* key, const std::string& where,
                    std::string def = {}) const {
        const json* v = get(obj, key);
        if (!v) return def;
        ZS_CHECK_T(IoError, v->is_string(), "{}: {}.{} is {}, expected a string", path, where, key,
                   v->type_name());
        return v->get<std::string>();
    }
    bool flag(const json& obj, const char* key, const std::string& where, bool def) const {
        const json* v = get(obj, key);
        if (!v) return def;
        ZS_CHECK_T(IoError, v->is_boolean(), "{}: {}.{} is {}, expected true/false", path, where,
                   key, v->type_name());
        return v->get<bool>();
    }
    int32_t id(const json& v, const std::string& where) const {
        ZS_CHECK_T(IoError, v.is_number_integer(), "{}: {} is {}, expected a token id", path, where,
                   v.type_name());
        auto x = v.get<int64_t>();
        ZS_CHECK_T(IoError, x >= 0 && x < (int64_t{1} << 30), "{}: {} = {} is not a valid id", path,
                   where, x);
        return static_cast<int32_t>(x);
    }
};

// Flattens {"type": "Sequence", <list_key>: [...]} into its steps (nested sequences too).
void flatten(const json& node, const char* list_key, const std::string& where, const Reader& r,
             std::vector<std::pair<const json*, std::string>>& out) {
    if (r.str(node, "type", where) == "Sequence") {
        const json& list = r.need(node, list_key, where);
        ZS_CHECK_T(IoError, list.is_array(), "{}: {}.{} is not an array", r.path, where, list_key);
        for (size_t i = 0; i < list.size(); ++i) {
            flatten(list[i], list_key, fmt::format("{}.{}[{}]", where, list_key, i), r, out);
        }
        return;
    }
    out.emplace_back(&node, where);
}

SplitBehavior parse_behavior(const std::string& b, const std::string& where, const Reader& r) {
    if (b == "Isolated") return SplitBehavior::kIsolated;
    if (b == "Removed") return SplitBehavior::kRemoved;
    if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
    if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
    if (b == "Contiguous") return SplitBehavior::kContiguous;
    ZS_THROW(IoError, "{}: {}.behavior '{}' is not a split behavior", r.path, where, b);
}

struct Components {
    bool byte_level = false;
    bool sentencepiece = false;  // spaces become "▁" (normalizer or Metaspace)
};

void parse_normalizer(const json& root, const Reader& r, TokenizerSpec& spec, Components& c) {
    const json* n = r.get(root, "normalizer");
    if (!n) return;
    std::vector<std::pair<const json*, std::string>> steps;
    flatten(*n, "normalizers", "normalizer", r, steps);
    for (const auto& [step, where] : steps) {
        std::string type = r.str(*step, "type", where);
        if (type == "Prepend" && r.str(*step, "prepend", where) == kSpace) {
            spec.add_prefix_space = true;
            continue;
        }
        if (type == "Replace") {
            const json& pat = r.need(*step, "pattern", where);
            if (r.str(pat, "String", where + ".pattern") == " " &&
                r.str(*step, "content", where) == kSpace) {
                c.sentencepiece = true;
                continue;
            }
        }
        ZS_THROW(NotSupported, "{}: {} of type '{}' ({}) is not supported", r.path, where, type,
                 step->dump());
    }
}

void parse_pre_tokenizer(const json& root, const Reader& r, TokenizerSpec& spec, Components& c) {
    const json* p = r.get(root, "pre_tokenizer");
    if (!p) return;
    std::vector<std::pair<const json*, std::string>> steps;
    flatten(*p, "pretokenizers", "pre_tokenizer", r, steps);
    for (size_t i = 0; i < steps.size(); ++i) {
        const json& step = *steps[i].first;
        const std::string& where = steps[i].second;
        std::string type = r.str(step, "type", where);
        if (type == "Split") {
            const json& pat = r.need(step, "pattern", where);
            PreSplit s;
            if (r.get(pat, "Regex")) {
                s.regex = r.str(pat, "Regex", where + ".pattern");
            } else {
                s.regex = Regex::escape(r.str(pat, "String", where + ".pattern"));
            }
            s.behavior = parse_behavior(r.str(step, "behavior", where, "Isolated"), where, r);
            s.invert = r.flag(step, "invert", where, false);
            spec.pre_splits.push_back(std::move(s));
        } else if (type == "ByteLevel") {
            // Later steps would see GPT-2's byte alphabet, not the text ("²" is a digit there).
            ZS_CHECK_T(NotSupported, i + 1 == steps.size(),
                       "{}: {} is followed by another pre-tokenizer; only a final ByteLevel is "
                       "supported",
                       r.path, where);
            c.byte_level = true;
            if (r.flag(step, "add_prefix_space", where, true)) {
                ZS_CHECK_T(NotSupported, i == 0,
                           "{}: {} adds a prefix space after another pre-tokenizer; only a "
                           "leading ByteLevel may",
                           r.path, where);
                spec.add_prefix_space = true;
            }
            if (r.flag(step, "use_regex", where, true)) {
                spec.pre_splits.push_back({kGpt2Pattern, SplitBehavior::kIsolated, false});
            }
        } else if (type == "Metaspace") {
            ZS_CHECK_T(NotSupported, spec.pre_splits.empty(),
                       "{}: {} comes after a regex split, which would see spaces, not '▁'", r.path,
                       where);
            ZS_CHECK_T(NotSupported,
                       r.str(step, "replacement", where, std::string(kSpace)) == kSpace,
                       "{}: {}.replacement must be '▁'", r.path, where);
            c.sentencepiece = true;
            std::string scheme = r.str(step, "prepend_scheme", where, "");
            if (scheme.empty())
                scheme = r.flag(step, "add_prefix_space", where, true) ? "always" : "never";
            ZS_CHECK_T(IoError, scheme == "always" || scheme == "first" || scheme == "never",
                       "{}: {}.prepend_scheme '{}' is not always/first/never", r.path, where,
                       scheme);
            spec.add_prefix_space = scheme != "never";
            spec.prefix_first_only = scheme == "first";
            spec.prefix_unless_space = true;
            spec.split_on_space = r.flag(step, "split", where, true);
        } else if (type == "Digits") {
            bool each = r.flag(step, "individual_digits", where, false);
            spec.pre_splits.push_back(
                {each ? R"(\p{N})" : R"(\p{N}+)", SplitBehavior::kIsolated, false});
        } else {
            ZS_THROW(NotSupported, "{}: {} of type '{}' is not supported", r.path, where, type);
        }
    }
}

void parse_decoder(const json& root, const Reader& r, TokenizerSpec& spec) {
    const json* d = r.get(root, "decoder");
    if (!d) return;
    std::vector<std::pair<const json*, std::string>> steps;
    flatten(*d, "decoders", "decoder", r, steps);
    for (const auto& [step, where] : steps) {
        std::string type = r.str(*step, "type", where);
        if (type == "ByteLevel" || type == "ByteFallback" || type == "Fuse") continue;
        if (type == "Replace") {
            const json& pat = r.need(*step, "pattern", where);
            ZS_CHECK_T(NotSupported,
                       r.str(pat, "String", where + ".pattern") == kSpace &&
                           r.str(*step, "content", where) == " ",
                       "{}: {} only '▁' -> ' ' is supported ({})", r.path, where, step->dump());
            continue;
        }
        if (type == "Strip") {
            const json* start = r.get(*step, "start");
            const json* stop = r.get(*step, "stop");
            bool ok = r.str(*step, "content", where) == " " && start &&
                      start->is_number_integer() && start->get<int64_t>() <= 1 &&
                      (!stop || (stop->is_number_integer() && stop->get<int64_t>() == 0));
            ZS_CHECK_T(NotSupported, ok, "{}: {} only Strip(' ', start <= 1, stop 0) is supported",
                       r.path, where);
            if (start->get<int64_t>() == 1) spec.leading_space = LeadingSpace::kStripOutput;
            continue;
        }
        if (type == "Metaspace") {
            std::string scheme = r.str(*step, "prepend_scheme", where, "");
            bool prefix =
                scheme.empty() ? r.flag(*step, "add_prefix_space", where, true) : scheme != "never";
            if (prefix) spec.leading_space = LeadingSpace::kStripFirstToken;
            continue;
        }
        ZS_THROW(NotSupported, "{}: {} of type '{}' is not supported", r.path, where, type);
    }
}

// TemplateProcessing / Roberta / Bert post-processors -> bos / eos added by add_special.
void parse_post_processor(const json& node, const std::string& where, const Reader& r,
                          const StringMap& ids, TokenizerSpec& spec) {
    std::string type = r.str(node, "type", where);
    if (type == "Sequence") {
        const json& list = r.need(node, "processors", where);
        ZS_CHECK_T(IoError, list.is_array(), "{}: {}.processors is not an array", r.path, where);
        for (size_t i = 0; i < list.size(); ++i) {
            parse_post_processor(list[i], fmt::format("{}.processors[{}]", where, i), r, ids, spec);
        }
        return;
    }
    if (type == "ByteLevel") return;
    if (type == "RobertaProcessing" || type == "BertProcessing") {
        for (const char* key : {"cls", "sep"}) {
            const json& pair = r.need(node, key, where);
            ZS_CHECK_T(IoError, pair.is_array() && pair.size() == 2, "{}: {}.{} is not [token, id]",
                       r.path, where, key);
            int32_t id = r.id(pair[1], fmt::format("{}.{}[1]", where, key));
            if (std::string(key) == "cls") {
                spec.bos_id = id;
                spec.add_bos = true;
            } else {
                spec.eos_id = id;
                spec.add_eos = true;
            }
        }
        return;
    }
    ZS_CHECK_T(NotSupported, type == "TemplateProcessing", "{}: {} of type '{}' is not supported",
               r.path, where, type);
    const json& single = r.need(node, "single", where);
    ZS_CHECK_T(IoError, single.is_array(), "{}: {}.single is not an array", r.path, where);
    bool seen_a = false;
    for (size_t i = 0; i < single.size(); ++i) {
        std::string item = fmt::format("{}.single[{}]", where, i);
        if (r.get(single[i], "Sequence")) {
            seen_a = true;
            continue;
        }
        const json& st = r.need(single[i], "SpecialToken", item);
        std::string name = r.str(st, "id", item + ".SpecialToken");
        auto it = ids.find(name);
        ZS_CHECK_T(IoError, it != ids.end(), "{}: {} names '{}', which is not a token", r.path,
                   item, name);
        if (!seen_a) {
            ZS_CHECK_T(NotSupported, !spec.add_bos, "{}: {} adds a second prefix token", r.path,
                       item);
            spec.bos_id = it->second;
            spec.add_bos = true;
        } else {
            ZS_CHECK_T(NotSupported, !spec.add_eos, "{}: {} adds a second suffix token", r.path,
                       item);
            spec.eos_id = it->second;
            spec.add_eos = true;
        }
    }
}

// tokenizer_config.json: special token names, add_bos/eos_token, chat_template.
void apply_config(const std::string& path, const StringMap& ids, TokenizerSpec& spec) {
    json cfg = parse_json(read_tokenizer_file(path), path);
    Reader r{path};
    auto token = [&](const char* key) -> std::optional<int32_t> {
        const json* v = r.get(cfg, key);
        if (!v) return std::nullopt;
        std::string name = v->is_object() ? r.str(*v, "content", key) : r.str(cfg, key, "");
        auto it = ids.find(name);
        ZS_CHECK_T(IoError, it != ids.end(), "{}: {} '{}' is not a token of the tokenizer", path,
                   key, name);
        return it->second;
    };
    if (auto id = token("bos_token")) spec.bos_id = id;
    if (auto id = token("eos_token")) spec.eos_id = id;
    if (auto id = token("pad_token")) spec.pad_id = id;
    if (auto id = token("unk_token")) spec.unk_id = id;
    spec.add_bos = r.flag(cfg, "add_bos_token", "", spec.add_bos) && spec.bos_id;
    spec.add_eos = r.flag(cfg, "add_eos_token", "", spec.add_eos) && spec.eos_id;
    if (const json* t = r.get(cfg, "chat_template")) {
        if (t->is_string()) {
            spec.chat_template = t->get<std::string>();
        } else if (t->is_array()) {  // [{"name": "default", "template": ...}, ...]
            for (const json& e : *t) {
                if (r.str(e, "name", "chat_template[]") == "default") {
                    spec.chat_template = r.str(e, "template", "chat_template[]");
                }
            }
        }
    }
}

void guess_specials(const StringMap& ids, TokenizerSpec& spec) {
    auto first = [&](std::initializer_list<const char*> names) -> std::optional<int32_t> {
        for (const char* n : names) {
            auto it = ids.find(std::string_view(n));
            if (it != ids.end()) return it->second;
        }
        return std::nullopt;
    };
    if (!spec.bos_id) spec.bos_id = first({"<s>", "<|begin_of_text|>", "<|endoftext|>"});
    if (!spec.eos_id) spec.eos_id = first({"</s>", "<|end_of_text|>", "<|endoftext|>"});
}

}  // namespace

std::string read_tokenizer_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    ZS_CHECK_T(IoError, f.good(), "{}: cannot open tokenizer file", path);
    std::ostringstream ss;
    ss << f.rdbuf();
    ZS_CHECK_T(IoError, !f.bad(), "{}: read error", path);
    return ss.str();
}

TokenizerSpec load_hf_tokenizer_json(const std::string& path) {
    fs::path config = fs::path(path).parent_path() / "tokenizer_config.json";
    std::error_code ec;
    const bool with_config =
        fs::path(path).filename() == "tokenizer.json" && fs::is_regular_file(config, ec);
    return parse_hf_tokenizer_json(read_tokenizer_file(path), path,
                                   with_config ? config.string() : std::string());
}

TokenizerSpec parse_hf_tokenizer_json(const std::string& text, const std::string& path,
                                      const std::string& config_path) {
    json root = parse_json(text, path);
    Reader r{path};
    ZS_CHECK_T(IoError, root.is_object(), "{}: expected a JSON object at the top level", path);
    TokenizerSpec spec;
    spec.name = path;
    const json& model = r.need(root, "model", "");
    std::string type = r.str(model, "type", "model", "BPE");
    ZS_CHECK_T(NotSupported, type == "BPE",
               "{}: model.type '{}' is not supported (this build implements BPE models)", path,
               type);
    if (const json* dropout = r.get(model, "dropout")) {
        ZS_CHECK_T(NotSupported, dropout->is_number() && dropout->get<double>() == 0.0,
                   "{}: model.dropout {} is not supported", path, dropout->dump());
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        ZS_CHECK_T(NotSupported, r.str(model, key, "model").empty(),
                   "{}: model.{} is not supported", path, key);
    }
    const json& vocab = r.need(model, "vocab", "model");
    ZS_CHECK_T(IoError, vocab.is_object(), "{}: model.vocab is {}, expected an object", path,
               vocab.type_name());

    // Added tokens first, to size the id space.
    std::vector<AddedToken> added;
    if (const json* list = r.get(root, "added_tokens")) {
        ZS_CHECK_T(IoError, list->is_array(), "{}: added_tokens is not an array", path);
        for (size_t i = 0; i < list->size(); ++i) {
            const json& e = (*list)[i];
            std::string where = fmt::format("added_tokens[{}]", i);
            AddedToken a;
            a.id = r.id(r.need(e, "id", where), where + ".id");
            r.need(e, "content", where);
            a.content = r.str(e, "content", where);
            a.special = r.flag(e, "special", where, false);
            a.lstrip = r.flag(e, "lstrip", where, false);
            a.rstrip = r.flag(e, "rstrip", where, false);
            a.single_word = r.flag(e, "single_word", where, false);
            a.normalized = r.flag(e, "normalized", where, !a.special);
            added.push_back(std::move(a));
        }
    }
    size_t n = 0;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        n = std::max(
            n, static_cast<size_t>(r.id(it.value(), "model.vocab[\"" + it.key() + "\"]")) + 1);
    }
    // HF gives an added token that is already in the vocabulary the vocabulary's id.
    for (AddedToken& a : added) {
        auto it = vocab.find(a.content);
        if (it != vocab.end()) a.id = static_cast<int32_t>(it.value().get<int64_t>());
    }
    for (const AddedToken& a : added) n = std::max(n, static_cast<size_t>(a.id) + 1);
    // Ids come from the file: refuse a sparse id space before allocating it.
    ZS_CHECK_T(IoError, n <= vocab.size() + added.size(),
               "{}: token ids reach {} but there are only {} vocabulary entries and {} added "
               "tokens (ids must be dense)",
               path, n - 1, vocab.size(), added.size());
    spec.tokens.assign(n, std::string());
    std::vector<bool> filled(n, false);
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        auto id = static_cast<size_t>(it.value().get<int64_t>());
        spec.tokens[id] = it.key();
        filled[id] = true;
    }
    for (const AddedToken& a : added) {
        spec.tokens[static_cast<size_t>(a.id)] = a.content;
        filled[static_cast<size_t>(a.id)] = true;
    }
    for (size_t id = 0; id < n; ++id) {
        ZS_CHECK_T(IoError, filled[id], "{}: no token has id {} (ids must be dense)", path, id);
    }
    spec.added_tokens = std::move(added);

    const json& merges = r.need(model, "merges", "model");
    ZS_CHECK_T(IoError, merges.is_array(), "{}: model.merges is not an array", path);
    spec.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
        const json& m = merges[i];
        if (m.is_string()) {
            const std::string& s = m.get_ref<const std::string&>();
            size_t sp = s.find(' ');
            ZS_CHECK_T(IoError,
                       sp != std::string::npos && sp > 0 && sp + 1 < s.size() &&
                           s.find(' ', sp + 1) == std::string::npos,
                       "{}: model.merges[{}] '{}' is not 'left right'", path, i, s);
            spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else {
            ZS_CHECK_T(IoError,
                       m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                       "{}: model.merges[{}] is not a pair of strings", path, i);
            spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        }
    }
    spec.byte_fallback = r.flag(model, "byte_fallback", "model", false);
    spec.fuse_unk = r.flag(model, "fuse_unk", "model", false);
    spec.ignore_merges = r.flag(model, "ignore_merges", "model", false);

    StringMap ids;
    for (size_t id = 0; id < n; ++id) ids.emplace(spec.tokens[id], static_cast<int32_t>(id));
    std::string unk = r.str(model, "unk_token", "model");
    if (!unk.empty()) {
        auto it = ids.find(unk);
        ZS_CHECK_T(IoError, it != ids.end(), "{}: model.unk_token '{}' is not in the vocabulary",
                   path, unk);
        spec.unk_id = it->second;
    }

    Components c;
    parse_normalizer(root, r, spec, c);
    parse_pre_tokenizer(root, r, spec, c);
    if (c.byte_level) {
        ZS_CHECK_T(NotSupported, !c.sentencepiece && !r.get(root, "normalizer"),
                   "{}: a byte-level BPE with a normalizer is not supported", path);
        spec.model = TokenizerModel::kByteLevelBpe;
    } else {
        ZS_CHECK_T(NotSupported, c.sentencepiece,
                   "{}: BPE without a ByteLevel pre-tokenizer or SentencePiece-style '▁' "
                   "normalization is not supported",
                   path);
        spec.model = TokenizerModel::kSentencePieceBpe;
    }
    parse_decoder(root, r, spec);
    if (const json* pp = r.get(root, "post_processor")) {
        parse_post_processor(*pp, "post_processor", r, ids, spec);
    }
    if (!config_path.empty()) apply_config(config_path, ids, spec);
    guess_specials(ids, spec);
    return spec;
}

TokenizerSpec load_gpt2_vocab(const std::string& vocab_json, const std::string& merges_txt) {
    json vocab = parse_json(read_tokenizer_file(vocab_json), vocab_json);
    Reader r{vocab_json};
    ZS_CHECK_T(IoError, vocab.is_object(), "{}: expected an object of token -> id", vocab_json);
    TokenizerSpec spec;
    spec.name = vocab_json;
    spec.model = TokenizerModel::kByteLevelBpe;
    size_t n = 0;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        n = std::max(n, static_cast<size_t>(r.id(it.value(), "[\"" + it.key() + "\"]")) + 1);
    }
    ZS_CHECK_T(IoError, n == vocab.size(), "{}: ids reach {} for {} tokens (ids must be dense)",
               vocab_json, n == 0 ? 0 : n - 1, vocab.size());
    spec.tokens.assign(n, std::string());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        spec.tokens[static_cast<size_t>(it.value().get<int64_t>())] = it.key();
    }
    std::string text = read_tokenizer_file(merges_txt);
    std::istringstream lines(text);
    std::string line;
    size_t lineno = 0;
    while (std::getline(lines, line)) {
        ++lineno;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty() || (lineno == 1 && line.rfind("#version", 0) == 0)) continue;
        size_t sp = line.find(' ');
        ZS_CHECK_T(IoError, sp != std::string::npos && sp > 0 && sp + 1 < line.size(),
                   "{}:{}: '{}' is not 'left right'", merges_txt, lineno, line);
        spec.merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
    }
    spec.pre_splits.push_back({kGpt2Pattern, SplitBehavior::kIsolated, false});
    for (size_t id = 0; id < n; ++id) {
        if (spec.tokens[id] == "<|endoftext|>") {
            spec.added_tokens.push_back({static_cast<int32_t>(id), spec.tokens[id]});
            spec.bos_id = spec.eos_id = static_cast<int32_t>(id);
        }
    }
    return spec;
}

}  // namespace zs::io
