// Tokenizer: loading by path, the public accessors, and decoding (see tokenizer.h).
#include "io/tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "base/error.h"
#include "io/gguf_tokenizer.h"
#include "io/tokenizer_impl.h"

namespace zs::io {

namespace fs = std::filesystem;

const char* to_string(TokenizerModel m) {
    switch (m) {
        case TokenizerModel::kByteLevelBpe:
            return "byte-level BPE";
        case TokenizerModel::kSentencePieceBpe:
            return "SentencePiece BPE";
    }
    return "?";
}

const char* to_string(TokenType t) {
    switch (t) {
        case TokenType::kNormal:
            return "normal";
        case TokenType::kUnknown:
            return "unknown";
        case TokenType::kControl:
            return "control";
        case TokenType::kUserDefined:
            return "user-defined";
        case TokenType::kUnused:
            return "unused";
        case TokenType::kByte:
            return "byte";
    }
    return "?";
}

const char* to_string(SplitBehavior b) {
    switch (b) {
        case SplitBehavior::kIsolated:
            return "Isolated";
        case SplitBehavior::kRemoved:
            return "Removed";
        case SplitBehavior::kMergedWithPrevious:
            return "MergedWithPrevious";
        case SplitBehavior::kMergedWithNext:
            return "MergedWithNext";
        case SplitBehavior::kContiguous:
            return "Contiguous";
    }
    return "?";
}

const char* to_string(LeadingSpace s) {
    switch (s) {
        case LeadingSpace::kKeep:
            return "keep";
        case LeadingSpace::kStripOutput:
            return "strip-output";
        case LeadingSpace::kStripFirstPiece:
            return "strip-first-piece";
        case LeadingSpace::kStripFirstToken:
            return "strip-first-token";
    }
    return "?";
}

bool gguf_pre_tokenizer(std::string_view pre, TokenizerSpec& spec) {
    if (pre == "default" || pre == "gpt-2" || pre == "gpt2") {
        spec.pre_splits = {{kGpt2Pattern, SplitBehavior::kIsolated, false}};
        return true;
    }
    if (pre == "smollm") {
        // SmolLM's tokenizer.json: Digits(individual_digits) then ByteLevel's GPT-2 regex.
        spec.pre_splits = {{R"(\p{N})", SplitBehavior::kIsolated, false},
                           {kGpt2Pattern, SplitBehavior::kIsolated, false}};
        return true;
    }
    if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe") {
        spec.pre_splits = {{kLlama3Pattern, SplitBehavior::kIsolated, false}};
        spec.ignore_merges = true;
        return true;
    }
    return false;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_spec(TokenizerSpec spec) {
    return Tokenizer(std::make_unique<Impl>(std::move(spec)));
}

TokenizerSpec load_tokenizer_spec(const std::string& path, const TokenizerLoadOptions& options) {
    std::error_code ec;
    fs::path p(path);
    if (fs::is_directory(p, ec)) {
        auto has = [&](const char* f) { return fs::is_regular_file(p / f, ec); };
        if (has("tokenizer.json")) return load_hf_tokenizer_json((p / "tokenizer.json").string());
        if (has("tokenizer.model")) {
            return load_sentencepiece_model((p / "tokenizer.model").string());
        }
        if (has("vocab.json") && has("merges.txt")) {
            return load_gpt2_vocab((p / "vocab.json").string(), (p / "merges.txt").string());
        }
        if (has("encoder.json") && has("vocab.bpe")) {
            return load_gpt2_vocab((p / "encoder.json").string(), (p / "vocab.bpe").string());
        }
        ZS_THROW(IoError,
                 "{}: no tokenizer in this directory (looked for tokenizer.json, tokenizer.model, "
                 "vocab.json + merges.txt, encoder.json + vocab.bpe)",
                 path);
    }
    ZS_CHECK_T(IoError, fs::exists(p, ec), "{}: tokenizer file or directory does not exist", path);
    std::string ext = p.extension().string();
    std::string file = p.filename().string();
    if (file == "encoder.json" || file == "vocab.json") {
        fs::path merges = p.parent_path() / (file == "encoder.json" ? "vocab.bpe" : "merges.txt");
        return load_gpt2_vocab(path, merges.string());
    }
    if (ext == ".json") return load_hf_tokenizer_json(path);
    if (ext == ".model") return load_sentencepiece_model(path);
    if (ext == ".tiktoken") return load_tiktoken(path, options);
    if (ext == ".gguf") return tokenizer_spec_from_gguf(GgufFile::open(path));
    ZS_THROW(IoError,
             "{}: unknown tokenizer file type '{}' (expected a directory, *.json, *.model, "
             "*.tiktoken or *.gguf)",
             path, ext);
}

Tokenizer Tokenizer::load(const std::string& path, const TokenizerLoadOptions& options) {
    return from_spec(load_tokenizer_spec(path, options));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
    std::vector<int32_t> ids;
    impl_->encode(text, add_special, parse_special, ids);
    return ids;
}

void Tokenizer::append_bytes(int32_t id, bool skip_special, DecodeState& state,
                             std::string& out) const {
    const Impl& m = *impl_;
    ZS_CHECK(id >= 0 && id < m.n_vocab, "{}: token id {} is outside the vocabulary [0, {})",
             m.spec.name, id, m.n_vocab);
    const auto i = static_cast<size_t>(id);
    const bool is_special_id = m.special[i] != 0;
    if (is_special_id && skip_special) return;
    std::string_view bytes = m.out_bytes[i];
    switch (m.spec.leading_space) {
        case LeadingSpace::kKeep:
            break;
        case LeadingSpace::kStripOutput:
            // HF Strip(' ', 1, 0) after Fuse: one space off the start of the whole text.
            if (state.at_start && !bytes.empty()) {
                if (bytes[0] == ' ') bytes.remove_prefix(1);
                state.at_start = false;
            }
            break;
        case LeadingSpace::kStripFirstPiece:
        case LeadingSpace::kStripFirstToken: {
            // SentencePiece: the first piece that is not a control token loses its "▁"; HF's
            // Metaspace decoder looks at the first token shown, whatever it is.
            if (!state.at_start) break;
            if (is_special_id) {
                if (m.spec.leading_space == LeadingSpace::kStripFirstToken) state.at_start = false;
                break;
            }
            TokenType t = m.types[i];
            if ((t == TokenType::kNormal || t == TokenType::kUserDefined ||
                 t == TokenType::kUnused) &&
                !bytes.empty() && bytes[0] == ' ') {
                bytes.remove_prefix(1);
            }
            state.at_start = false;
            break;
        }
    }
    out.append(bytes);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
    std::string bytes;
    DecodeState state;
    for (int32_t id : ids) append_bytes(id, skip_special, state, bytes);
    std::string text;
    text.reserve(bytes.size());
    append_utf8_lossy(text, bytes);
    return text;
}

int32_t Tokenizer::vocab_size() const { return impl_->n_vocab; }

const std::string& Tokenizer::id_to_token(int32_t id) const {
    ZS_CHECK(id >= 0 && id < impl_->n_vocab, "{}: token id {} is outside the vocabulary [0, {})",
             impl_->spec.name, id, impl_->n_vocab);
    return impl_->spec.tokens[static_cast<size_t>(id)];
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
    auto it = impl_->token_ids.find(token);
    if (it == impl_->token_ids.end()) return std::nullopt;
    return it->second;
}

TokenType Tokenizer::token_type(int32_t id) const {
    ZS_CHECK(id >= 0 && id < impl_->n_vocab, "{}: token id {} is outside the vocabulary [0, {})",
             impl_->spec.name, id, impl_->n_vocab);
    return impl_->types[static_cast<size_t>(id)];
}

bool Tokenizer::is_special(int32_t id) const {
    return id >= 0 && id < impl_->n_vocab && impl_->special[static_cast<size_t>(id)] != 0;
}

TokenizerModel Tokenizer::model() const { return impl_->spec.model; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->spec.bos_id; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->spec.eos_id; }
std::optional<int32_t> Tokenizer::unk_id() const { return impl_->spec.unk_id; }
std::optional<int32_t> Tokenizer::pad_id() const { return impl_->spec.pad_id; }
bool Tokenizer::add_bos() const { return impl_->spec.add_bos; }
bool Tokenizer::add_eos() const { return impl_->spec.add_eos; }
const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->spec.added_tokens; }
const std::optional<std::string>& Tokenizer::chat_template() const {
    return impl_->spec.chat_template;
}
const std::string& Tokenizer::name() const { return impl_->spec.name; }

std::vector<int32_t> Tokenizer::stop_ids() const {
    std::vector<int32_t> ids;
    if (impl_->spec.eos_id) ids.push_back(*impl_->spec.eos_id);
    for (const char* t : {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>",
                          "<|end_of_text|>", "</s>", "<end_of_turn>"}) {
        auto id = token_to_id(t);
        if (id && is_special(*id) && std::find(ids.begin(), ids.end(), *id) == ids.end()) {
            ids.push_back(*id);
        }
    }
    return ids;
}

}  // namespace zs::io
