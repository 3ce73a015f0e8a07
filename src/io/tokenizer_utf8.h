// UTF-8 helpers for the tokenizers: strict sequence lengths, lossy repair (each maximal invalid
// subpart becomes one U+FFFD, as Unicode recommends and Rust's from_utf8_lossy does), the length of
// an incomplete trailing sequence (for streaming), and GPT-2's byte <-> unicode alphabet.
//
// "Strict" means: no overlong forms, no surrogates, nothing above U+10FFFF.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zs::io {

// Length (1-4) of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not a
// complete valid sequence.
size_t utf8_valid_len(std::string_view s, size_t i);

// Appends code point cp (<= U+10FFFF, not a surrogate) encoded as UTF-8.
void append_utf8(std::string& out, char32_t cp);

// Decodes the valid sequence of length len at s[i].
char32_t decode_utf8(std::string_view s, size_t i, size_t len);

// Appends s with every maximal ill-formed subpart replaced by U+FFFD.
void append_utf8_lossy(std::string& out, std::string_view s);
bool is_valid_utf8(std::string_view s);

// Number of trailing bytes of s (0-3) that form a proper prefix of a valid sequence, i.e. bytes a
// stream must hold back until more arrive.
size_t utf8_incomplete_tail(std::string_view s);

// GPT-2's reversible byte -> printable code point map ("Ġ" is the space byte 0x20).
class ByteUnicode {
public:
    ByteUnicode();
    char32_t to_unicode(uint8_t b) const { return to_cp_[b]; }
    // The byte a code point stands for, or -1 when cp is not in the alphabet.
    int to_byte(char32_t cp) const { return cp < from_cp_.size() ? from_cp_[cp] : -1; }
    // "Ġthe" -> " the". False (out unspecified) when a character is outside the alphabet.
    bool decode(std::string_view token, std::string& out) const;
    // " the" -> "Ġthe".
    std::string encode(std::string_view bytes) const;

private:
    std::array<char32_t, 256> to_cp_{};
    std::array<int16_t, 324> from_cp_{};  // every mapped code point is < 324
};

}  // namespace zs::io
