// The text cleaning CLIPTokenizer applies to every prompt: ftfy 6.1.1's `fix_text` with its
// default configuration (HTML entities, mojibake, C1 controls, Latin ligatures, full-width
// characters, curly quotes, line breaks, terminal escapes, control characters, NFC).
//
// Every fixer is a port of the ftfy function of the same name, so prompts tokenize to the same
// ids as in the Python pipeline.
#pragma once
#include <string>
#include <string_view>

namespace lcmd::text {

// ftfy.fix_text: fixes the text line by line (each segment ends after a '\n'). HTML entities are
// decoded only until the first line that contains a '<', since that text may be real HTML.
std::u32string fix_text(std::u32string_view text);

// ftfy.fixes.unescape_html: "&amp;", "&eacute;", "&#39;", "&#x2019;" and the all-caps forms of
// lowercase entity names ("&EACUTE;"). Needs the trailing semicolon. Named entities are the
// HTML 4 set plus "&apos;".
std::u32string unescape_html(std::u32string_view text);
// ftfy.fixes.remove_terminal_escapes: ANSI "ESC [ digits/; letter" sequences.
std::u32string remove_terminal_escapes(std::u32string_view text);
// ftfy.fixes.fix_latin_ligatures: "ﬁ" -> "fi", "Ĳ" -> "IJ", ...
std::u32string fix_latin_ligatures(std::u32string_view text);
// ftfy.fixes.fix_character_width: full-width ASCII and half-width katakana to normal width,
// U+3000 IDEOGRAPHIC SPACE to a space.
std::u32string fix_character_width(std::u32string_view text);
// ftfy.fixes.uncurl_quotes: curly single and double quotes to ASCII ones.
std::u32string uncurl_quotes(std::u32string_view text);
// ftfy.fixes.fix_line_breaks: CRLF, CR, U+2028, U+2029 and U+0085 become '\n'.
std::u32string fix_line_breaks(std::u32string_view text);
// ftfy.fixes.remove_control_chars: C0 controls other than \t \n \f \r, DEL, deprecated Arabic
// format characters, the BOM and interlinear annotation characters.
std::u32string remove_control_chars(std::u32string_view text);

}  // namespace lcmd::text
