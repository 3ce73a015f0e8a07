// Regex: the PCRE2 pattern a pre-tokenizer splits text with.
//
// Patterns come from files (tokenizer.json, GGUF), so they are untrusted: a pattern such as
// `(a+)+$` backtracks exponentially. Every match runs under a PCRE2 match limit (and, without JIT,
// depth and heap limits), so such a pattern ends in a zs::Error naming it instead of hanging; see
// RELIABILITY.md "tokenizer.json regexes". Patterns compile with UTF + UCP (\s, \p{L}, \w follow
// Unicode properties, as Oniguruma does in HF tokenizers) and MATCH_INVALID_UTF (bytes that are not
// UTF-8 simply never match), then JIT-compile when the platform supports it.
//
// Thread-safety: find_all may run concurrently on one Regex (scratch state comes from a pool).
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zs::io {

class Regex {
public:
    // Backtracking budget of one match call. Linear patterns stay far below it on any input; an
    // exponential one reaches it within milliseconds.
    static constexpr uint32_t kMatchLimit = 2'000'000;

    // Compiles `pattern`; throws IoError naming `what` (where the pattern came from), the PCRE2
    // message and the offset when it does not compile.
    Regex(std::string_view pattern, std::string what);
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Appends the byte spans [begin, end) of the successive non-overlapping, non-empty matches in
    // s (leftmost-first, as a backtracking engine finds them). Throws zs::Error naming the pattern
    // when a match exceeds the limits.
    void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

    const std::string& pattern() const { return pattern_; }
    bool jit() const { return jit_; }

    // A pattern matching `literal` exactly (PCRE2 metacharacters escaped).
    static std::string escape(std::string_view literal);

private:
    struct Scratch;
    std::unique_ptr<Scratch> acquire() const;
    void release(std::unique_ptr<Scratch> s) const;

    std::string pattern_;
    std::string what_;
    void* code_ = nullptr;  // pcre2_code_8*
    bool jit_ = false;
    mutable std::mutex mu_;
    mutable std::vector<std::unique_ptr<Scratch>> pool_;  // GUARDED_BY(mu_)
};

}  // namespace zs::io
