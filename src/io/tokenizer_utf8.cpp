// UTF-8 validation, lossy repair and GPT-2's byte alphabet (see tokenizer_utf8.h).
#include "io/tokenizer_utf8.h"

namespace zs::io {

namespace {

// Valid range for the second byte after lead byte b0 (Unicode Table 3-7), or {1, 0} when b0 is not
// a lead byte.
struct Range {
    uint8_t lo, hi;
};
Range second_byte_range(uint8_t b0) {
    if (b0 >= 0xC2 && b0 <= 0xDF) return {0x80, 0xBF};
    if (b0 == 0xE0) return {0xA0, 0xBF};
    if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) return {0x80, 0xBF};
    if (b0 == 0xED) return {0x80, 0x9F};
    if (b0 == 0xF0) return {0x90, 0xBF};
    if (b0 >= 0xF1 && b0 <= 0xF3) return {0x80, 0xBF};
    if (b0 == 0xF4) return {0x80, 0x8F};
    return {1, 0};
}

size_t sequence_len(uint8_t b0) {
    if (b0 < 0x80) return 1;
    if (b0 < 0xC2) return 0;
    if (b0 < 0xE0) return 2;
    if (b0 < 0xF0) return 3;
    if (b0 < 0xF5) return 4;
    return 0;
}

// Length of the longest prefix of a valid sequence starting at s[i] (>= 1 when s[i] is a lead
// byte), capped by the bytes available.
size_t valid_prefix_len(std::string_view s, size_t i) {
    auto b0 = static_cast<uint8_t>(s[i]);
    size_t n = sequence_len(b0);
    if (n <= 1) return n;
    size_t k = 1;
    Range r = second_byte_range(b0);
    while (k < n && i + k < s.size()) {
        auto b = static_cast<uint8_t>(s[i + k]);
        bool ok = k == 1 ? (b >= r.lo && b <= r.hi) : (b >= 0x80 && b <= 0xBF);
        if (!ok) break;
        ++k;
    }
    return k;
}

}  // namespace

size_t utf8_valid_len(std::string_view s, size_t i) {
    auto b0 = static_cast<uint8_t>(s[i]);
    size_t n = sequence_len(b0);
    if (n <= 1) return n;
    return valid_prefix_len(s, i) == n ? n : 0;
}

void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

char32_t decode_utf8(std::string_view s, size_t i, size_t len) {
    auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<uint8_t>(s[i + k])); };
    switch (len) {
        case 1:
            return b(0);
        case 2:
            return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
        case 3:
            return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
        default:
            return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) |
                   (b(3) & 0x3F);
    }
}

void append_utf8_lossy(std::string& out, std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        size_t n = utf8_valid_len(s, i);
        if (n > 0) {
            out.append(s.data() + i, n);
            i += n;
            continue;
        }
        // One U+FFFD per maximal subpart: a lead byte plus the continuation bytes that could
        // still have completed it, or a single stray byte.
        size_t k = valid_prefix_len(s, i);
        out += "\xEF\xBF\xBD";
        i += k == 0 ? 1 : k;
    }
}

bool is_valid_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        size_t n = utf8_valid_len(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

size_t utf8_incomplete_tail(std::string_view s) {
    for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
        size_t i = s.size() - back;
        auto b = static_cast<uint8_t>(s[i]);
        if (b < 0x80) return 0;
        if (b < 0xC0) continue;  // continuation byte: look further back for the lead
        size_t n = sequence_len(b);
        // A lead byte whose sequence would end beyond the data, with every byte so far valid.
        if (n > back && valid_prefix_len(s, i) == back) return back;
        return 0;
    }
    return 0;
}

ByteUnicode::ByteUnicode() {
    from_cp_.fill(-1);
    auto printable = [](int b) {
        return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
        char32_t cp = printable(b) ? static_cast<char32_t>(b) : next++;
        to_cp_[b] = cp;
        from_cp_[cp] = static_cast<int16_t>(b);
    }
}

bool ByteUnicode::decode(std::string_view token, std::string& out) const {
    size_t i = 0;
    while (i < token.size()) {
        size_t n = utf8_valid_len(token, i);
        if (n == 0) return false;
        int b = to_byte(decode_utf8(token, i, n));
        if (b < 0) return false;
        out += static_cast<char>(b);
        i += n;
    }
    return true;
}

std::string ByteUnicode::encode(std::string_view bytes) const {
    std::string out;
    out.reserve(bytes.size() * 2);
    for (char c : bytes) append_utf8(out, to_cp_[static_cast<uint8_t>(c)]);
    return out;
}

}  // namespace zs::io
