// The ftfy port, checked against examples from ftfy 6.1.1's own documentation and the behaviour
// of Python's str methods that the tokenizer relies on.
#include <gtest/gtest.h>

#include "text/mojibake.h"
#include "text/text_fix.h"
#include "text/unicode.h"

namespace lcmd::text {
namespace {

std::u32string u32(std::string_view utf8) {
  auto decoded = decode_utf8(utf8);
  if (!decoded) throw std::runtime_error("test string is not UTF-8");
  return *decoded;
}

std::string fixed(std::string_view utf8) { return encode_utf8(fix_text(u32(utf8))); }

TEST(Utf8, RoundTripsAndRejectsMalformedSequences) {
  const std::string text = "a\u00e9\u6771\U0001F431";
  ASSERT_TRUE(decode_utf8(text).has_value());
  EXPECT_EQ(decode_utf8(text)->size(), 4u);
  EXPECT_EQ(encode_utf8(*decode_utf8(text)), text);
  size_t offset = 99;
  EXPECT_FALSE(decode_utf8("ab\xc3", &offset).has_value());  // truncated
  EXPECT_EQ(offset, 2u);
  EXPECT_FALSE(decode_utf8("\xe0\x80\xaf").has_value());  // overlong
  EXPECT_FALSE(decode_utf8("\xed\xb0\x80").has_value());  // surrogate
  EXPECT_FALSE(decode_utf8("\xf4\x90\x80\x80").has_value());  // above U+10FFFF
}

TEST(PythonLower, UsesFullMappingAndFinalSigma) {
  EXPECT_EQ(python_lower(U"ÀB\u0130"), U"àbi\u0307");
  EXPECT_EQ(python_lower(U"ΟΔΟΣ ΟΔΟΣ."), U"οδος οδος.");
  EXPECT_EQ(python_lower(U"Σ"), U"σ");      // not preceded by a cased letter
  EXPECT_EQ(python_lower(U"ΑΣΑ"), U"ασα");  // followed by one
}

TEST(PythonSpace, MatchesStrIsspace) {
  for (char32_t c : {U' ', U'\t', U'\n', U'\x0b', U'\x1c', U'\x1f', char32_t{0x85}, char32_t{0xA0},
                     char32_t{0x2007}, char32_t{0x3000}})
    EXPECT_TRUE(is_python_space(c)) << std::hex << static_cast<uint32_t>(c);
  for (char32_t c : {U'a', U'_', char32_t{0x200B}, char32_t{0xFEFF}, char32_t{0x180E}})
    EXPECT_FALSE(is_python_space(c)) << std::hex << static_cast<uint32_t>(c);
}

TEST(UnescapeHtml, DecodesEntitiesLikeFtfy) {
  auto unescaped = [](std::string_view s) { return encode_utf8(unescape_html(u32(s))); };
  EXPECT_EQ(unescaped("&lt;tag&gt;"), "<tag>");
  EXPECT_EQ(unescaped("P&eacute;rez"), "P\u00e9rez");
  EXPECT_EQ(unescaped("P&EACUTE;REZ"), "P\u00c9REZ");
  EXPECT_EQ(unescaped("BUNDESSTRA&SZLIG;E"), "BUNDESSTRASSE");
  EXPECT_EQ(unescaped("&ntilde; &Ntilde; &NTILDE; &nTILDE;"), "\u00f1 \u00d1 \u00d1 &nTILDE;");
  EXPECT_EQ(unescaped("&#39;&#x2019;&#X41;&#65;"), "'\u2019AA");
  EXPECT_EQ(unescaped("&#128;&#0;&#1;"), "\u20ac\ufffd");  // Windows-1252, U+FFFD, dropped
  EXPECT_EQ(unescaped("&#59; &#12ab; &#x; &bogus; &amp"), "&#59; &#12ab; &#x; &bogus; &amp");
  EXPECT_EQ(unescaped("&amp;amp;"), "&amp;");  // one pass; fix_text repeats until stable
}

TEST(FixText, AppliesFtfyDefaults) {
  EXPECT_EQ(fixed("\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33"), "LOUD NOISES");
  EXPECT_EQ(fixed("\uff35\uff80\uff70\uff9d"), "U\u30bf\u30fc\u30f3");  // half-width katakana
  EXPECT_EQ(fixed("\ufb02u\ufb03e\ufb06"), "fluffiest");
  EXPECT_EQ(fixed("\u201chere\u2019s a test\u201d"), "\"here's a test\"");
  EXPECT_EQ(fixed("salt &amp;amp; pepper"), "salt & pepper");
  EXPECT_EQ(fixed("<b>bold</b> &amp; more"), "<b>bold</b> &amp; more");  // may be HTML: kept
  EXPECT_EQ(fixed("a &amp; b\n<i>\n&amp;"), "a & b\n<i>\n&amp;");  // from the first '<' line on
  EXPECT_EQ(fixed("\x1b[36;44mI'm blue, da ba dee\x1b[0m"), "I'm blue, da ba dee");
  EXPECT_EQ(encode_utf8(fix_line_breaks(U"a\r\nb\rc\u2028d\u0085e")), "a\nb\nc\nd\ne");
  // In fix_text, U+0085 is first read as the Windows-1252 byte it usually came from.
  EXPECT_EQ(fixed("a\r\nb\rc\u2028d\u0085e"), "a\nb\nc\nd\u2026e");
  EXPECT_EQ(fixed("\ufeffa\x01" "b\x7f\u206ac\ufffc"), "abc");
  EXPECT_EQ(fixed("zero\u200bwidth\u00a0kept"), "zero\u200bwidth\u00a0kept");
  EXPECT_EQ(fixed("e\u0301"), "\u00e9");  // NFC
  EXPECT_EQ(fixed("\u2026 \u2014 \u00b2"), "\u2026 \u2014 \u00b2");  // NFC, not NFKC
}

TEST(FixEncoding, RepairsMojibakeFromFtfyDocs) {
  auto repaired = [](std::string_view s) { return encode_utf8(fix_encoding(u32(s))); };
  EXPECT_EQ(repaired("\u00c3\u00b3"), "\u00f3");
  EXPECT_EQ(repaired("s\u00c3\u00b3"), "s\u00f3");
  EXPECT_EQ(repaired("sch\u00c3\u00b6n"), "sch\u00f6n");
  EXPECT_EQ(repaired("voil\u00c3 le travail"), "voil\u00e0 le travail");  // restore_byte_a0
  EXPECT_EQ(repaired("&ATILDE;&SUP3;"), "&ATILDE;&SUP3;");
  EXPECT_EQ(fixed("\u00e2\u0153\u201d No problems"), "\u2714 No problems");
  EXPECT_EQ(fixed("&macr;\\_(\u00e3\u0083\u0084)_/&macr;"), "\u00af\\_(\u30c4)_/\u00af");
  EXPECT_EQ(fixed("caf\u00c3\u00a9 \u00e2\u20ac\u0153quoted\u00e2\u20ac\u009d"), "caf\u00e9 \"quoted\"");
}

TEST(FixEncoding, LeavesGoodTextAlone) {
  for (std::string_view good : {"café naïve 東京", "Ångström, Øresund, Ærø", "Straße, İstanbul, Łódź", "Ελληνικά",
                                "50°C, 100¥, ½ cup", "(╯°□°)╯", "ZURÜCK", "señor Muñoz"}) {
    EXPECT_FALSE(is_bad(u32(good))) << good;
    EXPECT_EQ(encode_utf8(fix_encoding(u32(good))), good);
  }
}

TEST(FixEncoding, C1ControlsBecomeWindows1252) {
  EXPECT_EQ(encode_utf8(fix_c1_controls(U"\u0080\u0093\u009d")), "\u20ac\u201c\u009d");
}

}  // namespace
}  // namespace lcmd::text
