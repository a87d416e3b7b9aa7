// Unicode helpers for the text front end: UTF-8 <-> code points, the character classes that
// Python's `str` methods and the tokenizer's regex use, and normalization (via utf8proc).
//
// Text is handled as std::u32string (one element per code point), which is what a Python `str`
// is; that keeps ports of Python string logic (ftfy, CLIPTokenizer) index-for-index faithful.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace lcmd::text {

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF). Returns nullopt and,
// if `error_offset` is given, the byte offset of the first bad sequence.
std::optional<std::u32string> decode_utf8(std::string_view bytes, size_t* error_offset = nullptr);
std::string encode_utf8(std::u32string_view text);
void append_utf8(std::string& out, char32_t c);

// Unicode general categories as the tokenizer regex uses them: \p{L} and \p{N}.
bool is_letter(char32_t c);
bool is_number(char32_t c);
bool is_decimal_digit(char32_t c);  // Nd, what Python's re means by \d
bool is_mark(char32_t c);           // Mn, Mc, Me
// Python's str.isspace() and re's \s for str patterns (they agree).
bool is_python_space(char32_t c);
// Python re's \w for str patterns: letters, numbers and '_'.
bool is_word_char(char32_t c);

// Python's str.lower(): full lowercase mapping (U+0130 becomes "i\u0307") and the Final_Sigma
// rule for U+03A3.
std::u32string python_lower(std::u32string_view text);
// Python's str.upper() of one character, for the letters HTML entities name: the simple
// mapping, and U+00DF to "SS" (the only full-mapping expansion among them).
std::u32string python_upper(char32_t c);

// Unicode normalization forms C and KC.
std::u32string nfc(std::u32string_view text);
std::u32string nfkc(std::u32string_view text);

}  // namespace lcmd::text
