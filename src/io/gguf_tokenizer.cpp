#include "io/gguf_tokenizer.h"

#include "base/error.h"

namespace zs::io {

namespace {

template <class T>
const std::vector<T>& array_of(const GgufFile& f, const char* key) {
    const GgufArray& a = f.get<GgufArray>(key);
    const auto* v = std::get_if<std::vector<T>>(&a);
    ZS_CHECK_T(IoError, v != nullptr,
               "{}: key '{}' has type ARRAY[{}]; expected another element type", f.path(), key,
               to_string(element_type(a)));
    return *v;
}

std::optional<int32_t> opt_id(const GgufFile& f, const char* key, size_t vocab) {
    if (!f.has(key)) return std::nullopt;
    int64_t v = f.get_int(key);
    ZS_CHECK_T(IoError, v >= 0 && static_cast<size_t>(v) < vocab,
               "{}: key '{}' = {} is outside the vocabulary of {} tokens", f.path(), key, v, vocab);
    return static_cast<int32_t>(v);
}

}  // namespace

TokenizerSpec tokenizer_spec_from_gguf(const GgufFile& f) {
    TokenizerSpec s;
    s.name = f.path();
    const std::string& model = f.get_string("tokenizer.ggml.model");
    s.tokens = array_of<std::string>(f, "tokenizer.ggml.tokens");
    const size_t V = s.tokens.size();
    std::vector<int32_t> types;
    if (f.has("tokenizer.ggml.token_type")) {
        types = array_of<int32_t>(f, "tokenizer.ggml.token_type");
        ZS_CHECK_T(IoError, types.size() == V,
                   "{}: tokenizer.ggml.token_type has {} entries; tokenizer.ggml.tokens has {}",
                   f.path(), types.size(), V);
        for (size_t i = 0; i < V; ++i) {
            int32_t t = types[i];
            ZS_CHECK_T(IoError, t >= 1 && t <= 6,
                       "{}: tokenizer.ggml.token_type[{}] = {} (expected 1-6)", f.path(), i, t);
            s.types.push_back(static_cast<TokenType>(t - 1));
        }
    }
    auto add_specials = [&](bool with_user_defined) {
        for (size_t i = 0; i < s.types.size(); ++i) {
            TokenType t = s.types[i];
            bool control = t == TokenType::kControl || t == TokenType::kUnknown;
            if (control || (with_user_defined && t == TokenType::kUserDefined)) {
                AddedToken a;
                a.id = static_cast<int32_t>(i);
                a.content = s.tokens[i];
                a.special = control;
                s.added_tokens.push_back(a);
            }
        }
    };
    if (model == "gpt2") {
        s.model = TokenizerModel::kByteLevelBpe;
        for (const std::string& m : array_of<std::string>(f, "tokenizer.ggml.merges")) {
            auto sp = m.find(' ');
            ZS_CHECK_T(IoError, sp != std::string::npos && sp > 0 && sp + 1 < m.size(),
                       "{}: tokenizer.ggml.merges entry '{}' is not 'a b'", f.path(), m);
            s.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
        }
        std::string pre =
            f.has("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "default";
        ZS_CHECK_T(NotSupported, gguf_pre_tokenizer(pre, s),
                   "{}: tokenizer.ggml.pre '{}' is not a pre-tokenizer this build knows", f.path(),
                   pre);
        add_specials(true);
    } else if (model == "llama") {
        s.model = TokenizerModel::kSentencePieceBpe;
        s.scores = array_of<float>(f, "tokenizer.ggml.scores");
        ZS_CHECK_T(IoError, s.scores.size() == V,
                   "{}: tokenizer.ggml.scores has {} entries; expected {}", f.path(),
                   s.scores.size(), V);
        s.add_prefix_space = f.has("tokenizer.ggml.add_space_prefix")
                                 ? f.get_bool("tokenizer.ggml.add_space_prefix")
                                 : true;
        for (TokenType t : s.types) s.byte_fallback = s.byte_fallback || t == TokenType::kByte;
        s.leading_space = LeadingSpace::kStripFirstPiece;
        add_specials(false);
    } else {
        ZS_THROW(NotSupported, "{}: tokenizer.ggml.model '{}' is not supported (gpt2, llama)",
                 f.path(), model);
    }
    s.bos_id = opt_id(f, "tokenizer.ggml.bos_token_id", V);
    s.eos_id = opt_id(f, "tokenizer.ggml.eos_token_id", V);
    s.unk_id = opt_id(f, "tokenizer.ggml.unknown_token_id", V);
    s.pad_id = opt_id(f, "tokenizer.ggml.padding_token_id", V);
    s.add_bos = f.has("tokenizer.ggml.add_bos_token") ? f.get_bool("tokenizer.ggml.add_bos_token")
                                                      : model == "llama";
    s.add_eos = f.has("tokenizer.ggml.add_eos_token") && f.get_bool("tokenizer.ggml.add_eos_token");
    if (f.has("tokenizer.chat_template")) s.chat_template = f.get_string("tokenizer.chat_template");
    return s;
}

}  // namespace zs::io
