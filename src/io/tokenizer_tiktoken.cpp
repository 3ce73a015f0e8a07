// *.tiktoken rank files -> TokenizerSpec. Each line is "<base64 bytes> <rank>"; a token's rank is
// its id and merging a+b has the rank of the token a+b (merges_from_ranks). tiktoken emits a
// pre-token that is itself a token whole (ignore_merges). The files carry no pre-tokenizer
// regex or special tokens: r50k_base / p50k_base (GPT-2's regex, <|endoftext|> = 50256) and
// cl100k_base (Llama-3's regex plus its five specials) are known by file name; any other needs
// the caller's pattern.
#include <algorithm>
#include <climits>
#include <filesystem>

#include "base/error.h"
#include "io/tokenizer_impl.h"

namespace zs::io {

namespace {

int base64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

bool base64_decode(std::string_view s, std::string& out) {
    out.clear();
    if (s.size() % 4 != 0) return false;
    uint32_t acc = 0;
    int bits = 0;
    size_t pad = 0;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '=') {
            if (i + 2 < s.size()) return false;  // '=' only in the last two places
            ++pad;
            continue;
        }
        if (pad > 0) return false;
        int v = base64_value(s[i]);
        if (v < 0) return false;
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xFF);
        }
    }
    return true;
}

}  // namespace

TokenizerSpec load_tiktoken(const std::string& path, const TokenizerLoadOptions& options) {
    std::string data = read_tokenizer_file(path);
    std::string stem = std::filesystem::path(path).stem().string();
    TokenizerSpec spec;
    spec.name = path;
    spec.model = TokenizerModel::kByteLevelBpe;
    spec.merges_from_ranks = true;
    spec.ignore_merges = true;

    std::vector<AddedToken> specials = options.tiktoken_specials;
    std::string pattern;
    if (options.tiktoken_pattern) {
        pattern = *options.tiktoken_pattern;
    } else if (stem == "r50k_base" || stem == "p50k_base") {
        pattern = kGpt2Pattern;
        if (specials.empty()) specials.push_back({50256, "<|endoftext|>"});
    } else if (stem == "cl100k_base") {
        pattern = kLlama3Pattern;
        if (specials.empty()) {
            specials = {{100257, "<|endoftext|>"},
                        {100258, "<|fim_prefix|>"},
                        {100259, "<|fim_middle|>"},
                        {100260, "<|fim_suffix|>"},
                        {100276, "<|endofprompt|>"}};
        }
    } else {
        ZS_THROW(ConfigError,
                 "{}: no pre-tokenizer pattern is known for tiktoken encoding '{}' (known: "
                 "r50k_base, p50k_base, cl100k_base); pass one (--pattern)",
                 path, stem);
    }
    spec.pre_splits.push_back({pattern, SplitBehavior::kIsolated, false});

    ByteUnicode alphabet;
    std::vector<std::string> by_rank;
    std::vector<bool> seen;
    std::string raw;
    size_t lineno = 0, start = 0;
    while (start < data.size()) {
        size_t end = data.find('\n', start);
        if (end == std::string::npos) end = data.size();
        std::string_view line(data.data() + start, end - start);
        start = end + 1;
        ++lineno;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) continue;
        size_t sp = line.find(' ');
        ZS_CHECK_T(IoError, sp != std::string_view::npos,
                   "{}:{}: expected '<base64> <rank>', got '{}'", path, lineno, line);
        ZS_CHECK_T(IoError, base64_decode(line.substr(0, sp), raw) && !raw.empty(),
                   "{}:{}: '{}' is not base64", path, lineno, line.substr(0, sp));
        std::string_view num = line.substr(sp + 1);
        uint64_t rank = 0;
        bool ok = !num.empty() && num.size() <= 9;
        for (char c : num) {
            ok = ok && c >= '0' && c <= '9';
            rank = rank * 10 + static_cast<uint64_t>(c - '0');
        }
        ZS_CHECK_T(IoError, ok, "{}:{}: rank '{}' is not a non-negative integer", path, lineno,
                   num);
        // Ranks must be dense: a rank beyond the lines read so far would allocate blindly.
        ZS_CHECK_T(IoError, rank < lineno + 1024, "{}:{}: rank {} after only {} lines", path,
                   lineno, rank, lineno);
        if (rank >= by_rank.size()) {
            by_rank.resize(rank + 1);
            seen.resize(rank + 1, false);
        }
        ZS_CHECK_T(IoError, !seen[rank], "{}:{}: rank {} appears twice", path, lineno, rank);
        seen[rank] = true;
        by_rank[rank] = alphabet.encode(raw);
    }
    ZS_CHECK_T(IoError, !by_rank.empty(), "{}: no ranks", path);
    for (size_t r = 0; r < by_rank.size(); ++r) {
        ZS_CHECK_T(IoError, seen[r], "{}: rank {} is missing (ranks must be dense)", path, r);
    }
    spec.tokens = std::move(by_rank);
    std::stable_sort(specials.begin(), specials.end(),
                     [](const AddedToken& a, const AddedToken& b) {
                         return (a.id < 0 ? INT32_MAX : a.id) < (b.id < 0 ? INT32_MAX : b.id);
                     });
    spec.types.assign(spec.tokens.size(), TokenType::kNormal);
    for (AddedToken& s : specials) {
        if (s.id < 0) s.id = static_cast<int32_t>(spec.tokens.size());
        ZS_CHECK_T(ConfigError,
                   static_cast<size_t>(s.id) >= spec.tokens.size() &&
                       static_cast<size_t>(s.id) < spec.tokens.size() + 65536,
                   "{}: special token '{}' id {} collides with a rank or is far beyond them", path,
                   s.content, s.id);
        if (static_cast<size_t>(s.id) >= spec.tokens.size()) {
            size_t old = spec.tokens.size();
            spec.tokens.resize(static_cast<size_t>(s.id) + 1);
            spec.types.resize(spec.tokens.size(), TokenType::kUnused);
            for (size_t i = old; i < spec.tokens.size(); ++i) {
                spec.tokens[i] = fmt::format("<|unused_{}|>", i);
            }
        }
        spec.tokens[static_cast<size_t>(s.id)] = s.content;
        spec.types[static_cast<size_t>(s.id)] = TokenType::kControl;
        s.special = true;
    }
    spec.added_tokens = std::move(specials);
    if (!spec.added_tokens.empty() && spec.added_tokens[0].content == "<|endoftext|>") {
        spec.eos_id = spec.added_tokens[0].id;
    }
    return spec;
}

}  // namespace zs::io
