// PCRE2-backed Regex with match limits (see tokenizer_regex.h).
#include "io/tokenizer_regex.h"

#include <cctype>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "base/error.h"

namespace zs::io {

namespace {

std::string pcre2_message(int code) {
    PCRE2_UCHAR buf[256];
    int n = pcre2_get_error_message(code, buf, sizeof(buf));
    if (n < 0) return fmt::format("PCRE2 error {}", code);
    return std::string(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

pcre2_code* as_code(void* p) { return static_cast<pcre2_code*>(p); }

}  // namespace

// Per-call PCRE2 state: match data, a match context carrying the limits, and a JIT stack.
struct Regex::Scratch {
    pcre2_match_data* data = nullptr;
    pcre2_match_context* ctx = nullptr;
    pcre2_jit_stack* stack = nullptr;
    ~Scratch() {
        if (stack) pcre2_jit_stack_free(stack);
        if (ctx) pcre2_match_context_free(ctx);
        if (data) pcre2_match_data_free(data);
    }
};

Regex::Regex(std::string_view pattern, std::string what)
    : pattern_(pattern), what_(std::move(what)) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern_.data()), pattern_.size(),
                                     options, &err, &offset, nullptr);
    ZS_CHECK_T(IoError, code != nullptr, "{}: regex '{}' does not compile at offset {}: {}", what_,
               pattern_, offset, pcre2_message(err));
    code_ = code;
    jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() {
    if (code_) pcre2_code_free(as_code(code_));
}

std::unique_ptr<Regex::Scratch> Regex::acquire() const {
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (!pool_.empty()) {
            auto s = std::move(pool_.back());
            pool_.pop_back();
            return s;
        }
    }
    auto s = std::make_unique<Scratch>();
    s->data = pcre2_match_data_create_from_pattern(as_code(code_), nullptr);
    s->ctx = pcre2_match_context_create(nullptr);
    ZS_ASSERT(s->data && s->ctx, "PCRE2 allocation failed");
    pcre2_set_match_limit(s->ctx, kMatchLimit);
    pcre2_set_depth_limit(s->ctx, 100'000);
    pcre2_set_heap_limit(s->ctx, 64 * 1024);  // KiB
    if (jit_) {
        s->stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
        ZS_ASSERT(s->stack, "PCRE2 JIT stack allocation failed");
        pcre2_jit_stack_assign(s->ctx, nullptr, s->stack);
    }
    return s;
}

void Regex::release(std::unique_ptr<Scratch> s) const {
    std::lock_guard<std::mutex> lock(mu_);
    if (pool_.size() < 64) pool_.push_back(std::move(s));
}

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
    auto scratch = acquire();
    auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t pos = 0;
    while (pos < s.size()) {
        int rc =
            pcre2_match(as_code(code_), subject, s.size(), pos, 0, scratch->data, scratch->ctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            release(std::move(scratch));
            ZS_THROW(Error,
                     "{}: regex '{}' gave up on a {}-byte piece at byte {}: {} (the pattern "
                     "backtracks catastrophically; limit {} steps)",
                     what_, pattern_, s.size(), pos, pcre2_message(rc), kMatchLimit);
        }
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch->data);
        size_t b = ov[0], e = ov[1];
        if (e > b) {
            out.emplace_back(b, e);
            pos = e;
        } else {
            // An empty match contributes nothing; step over one byte so the scan advances
            // (MATCH_INVALID_UTF lets a match start at any byte).
            pos = e + 1;
        }
    }
    release(std::move(scratch));
}

std::string Regex::escape(std::string_view literal) {
    // A backslash before any non-alphanumeric ASCII character makes it literal in PCRE2.
    std::string out;
    for (char c : literal) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x80 && !std::isalnum(u)) out += '\\';
        out += c;
    }
    return out;
}

}  // namespace zs::io
