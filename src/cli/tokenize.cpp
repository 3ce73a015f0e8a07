// `zerospeed tokenize`: encode UTF-8 text from stdin to a JSON array of token ids, or (--decode)
// a JSON array of ids from stdin back to text. stdin is taken byte for byte (a trailing newline
// is text too); decoded text is written without adding one.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "cli/commands.h"
#include "io/json.h"
#include "io/tokenizer.h"

namespace zs::cli {

namespace {

std::string read_stdin() {
    std::string s{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    ZS_CHECK_T(IoError, !std::cin.bad(), "stdin: read error");
    return s;
}

std::vector<int32_t> parse_ids(const std::string& text) {
    nlohmann::json j;
    try {
        j = io::parse_json(text, "stdin");
    } catch (const IoError& e) {
        ZS_THROW(ConfigError, "expected a JSON array of token ids: {}", e.what());
    }
    ZS_CHECK_T(ConfigError, j.is_array(), "stdin: expected a JSON array of token ids, got {}",
               j.type_name());
    std::vector<int32_t> ids;
    ids.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
        const auto& v = j[i];
        ZS_CHECK_T(ConfigError, v.is_number_integer(),
                   "stdin: element {} is {} ({}), expected a "
                   "token id",
                   i, v.dump(), v.type_name());
        auto x = v.get<int64_t>();
        ZS_CHECK_T(ConfigError, x >= INT32_MIN && x <= INT32_MAX,
                   "stdin: element {} = {} is not a token id", i, x);
        ids.push_back(static_cast<int32_t>(x));
    }
    return ids;
}

}  // namespace

int run_tokenize(const TokenizeOptions& opts) {
    io::TokenizerLoadOptions load;
    if (!opts.pattern.empty()) load.tiktoken_pattern = opts.pattern;
    io::Tokenizer tok = io::Tokenizer::load(opts.tokenizer, load);
    std::string input = read_stdin();
    if (opts.decode) {
        std::vector<int32_t> ids = parse_ids(input);
        for (size_t i = 0; i < ids.size(); ++i) {
            ZS_CHECK(ids[i] >= 0 && ids[i] < tok.vocab_size(),
                     "stdin: element {} = {} is outside the vocabulary of {} [0, {})", i, ids[i],
                     opts.tokenizer, tok.vocab_size());
        }
        std::string text = tok.decode(ids, opts.skip_special);
        std::fwrite(text.data(), 1, text.size(), stdout);
        return 0;
    }
    std::vector<int32_t> ids = tok.encode(input, opts.add_special);
    std::string out = "[";
    for (size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) out += ", ";
        out += std::to_string(ids[i]);
    }
    out += "]\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
}

}  // namespace zs::cli
