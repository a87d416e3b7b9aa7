#include "text/text_fix.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <unordered_map>

#include "text/mojibake.h"
#include "text/unicode.h"

namespace lcmd::text {

namespace {

// ---------------------------------------------------------------------------------------------
// HTML entities
// ---------------------------------------------------------------------------------------------
struct NamedEntity {
  std::string_view name;
  char32_t value;
};

// The HTML 4 named character references and "apos", with their HTML5 values. ftfy knows every
// HTML5 name; these are the ones people actually type.
constexpr NamedEntity kNamedEntities[] = {
    {"AElig", 0x00C6}, {"Aacute", 0x00C1}, {"Acirc", 0x00C2}, {"Agrave", 0x00C0}, {"Alpha", 0x0391},
    {"Aring", 0x00C5}, {"Atilde", 0x00C3}, {"Auml", 0x00C4}, {"Beta", 0x0392}, {"Ccedil", 0x00C7},
    {"Chi", 0x03A7}, {"Dagger", 0x2021}, {"Delta", 0x0394}, {"ETH", 0x00D0}, {"Eacute", 0x00C9},
    {"Ecirc", 0x00CA}, {"Egrave", 0x00C8}, {"Epsilon", 0x0395}, {"Eta", 0x0397}, {"Euml", 0x00CB},
    {"Gamma", 0x0393}, {"Iacute", 0x00CD}, {"Icirc", 0x00CE}, {"Igrave", 0x00CC}, {"Iota", 0x0399},
    {"Iuml", 0x00CF}, {"Kappa", 0x039A}, {"Lambda", 0x039B}, {"Mu", 0x039C}, {"Ntilde", 0x00D1},
    {"Nu", 0x039D}, {"OElig", 0x0152}, {"Oacute", 0x00D3}, {"Ocirc", 0x00D4}, {"Ograve", 0x00D2},
    {"Omega", 0x03A9}, {"Omicron", 0x039F}, {"Oslash", 0x00D8}, {"Otilde", 0x00D5}, {"Ouml", 0x00D6},
    {"Phi", 0x03A6}, {"Pi", 0x03A0}, {"Prime", 0x2033}, {"Psi", 0x03A8}, {"Rho", 0x03A1}, {"Scaron", 0x0160},
    {"Sigma", 0x03A3}, {"THORN", 0x00DE}, {"Tau", 0x03A4}, {"Theta", 0x0398}, {"Uacute", 0x00DA},
    {"Ucirc", 0x00DB}, {"Ugrave", 0x00D9}, {"Upsilon", 0x03A5}, {"Uuml", 0x00DC}, {"Xi", 0x039E},
    {"Yacute", 0x00DD}, {"Yuml", 0x0178}, {"Zeta", 0x0396}, {"aacute", 0x00E1}, {"acirc", 0x00E2},
    {"acute", 0x00B4}, {"aelig", 0x00E6}, {"agrave", 0x00E0}, {"alefsym", 0x2135}, {"alpha", 0x03B1},
    {"amp", 0x0026}, {"and", 0x2227}, {"ang", 0x2220}, {"apos", 0x0027}, {"aring", 0x00E5},
    {"asymp", 0x2248}, {"atilde", 0x00E3}, {"auml", 0x00E4}, {"bdquo", 0x201E}, {"beta", 0x03B2},
    {"brvbar", 0x00A6}, {"bull", 0x2022}, {"cap", 0x2229}, {"ccedil", 0x00E7}, {"cedil", 0x00B8},
    {"cent", 0x00A2}, {"chi", 0x03C7}, {"circ", 0x02C6}, {"clubs", 0x2663}, {"cong", 0x2245},
    {"copy", 0x00A9}, {"crarr", 0x21B5}, {"cup", 0x222A}, {"curren", 0x00A4}, {"dArr", 0x21D3},
    {"dagger", 0x2020}, {"darr", 0x2193}, {"deg", 0x00B0}, {"delta", 0x03B4}, {"diams", 0x2666},
    {"divide", 0x00F7}, {"eacute", 0x00E9}, {"ecirc", 0x00EA}, {"egrave", 0x00E8}, {"empty", 0x2205},
    {"emsp", 0x2003}, {"ensp", 0x2002}, {"epsilon", 0x03B5}, {"equiv", 0x2261}, {"eta", 0x03B7},
    {"eth", 0x00F0}, {"euml", 0x00EB}, {"euro", 0x20AC}, {"exist", 0x2203}, {"fnof", 0x0192},
    {"forall", 0x2200}, {"frac12", 0x00BD}, {"frac14", 0x00BC}, {"frac34", 0x00BE}, {"frasl", 0x2044},
    {"gamma", 0x03B3}, {"ge", 0x2265}, {"gt", 0x003E}, {"hArr", 0x21D4}, {"harr", 0x2194},
    {"hearts", 0x2665}, {"hellip", 0x2026}, {"iacute", 0x00ED}, {"icirc", 0x00EE}, {"iexcl", 0x00A1},
    {"igrave", 0x00EC}, {"image", 0x2111}, {"infin", 0x221E}, {"int", 0x222B}, {"iota", 0x03B9},
    {"iquest", 0x00BF}, {"isin", 0x2208}, {"iuml", 0x00EF}, {"kappa", 0x03BA}, {"lArr", 0x21D0},
    {"lambda", 0x03BB}, {"lang", 0x27E8}, {"laquo", 0x00AB}, {"larr", 0x2190}, {"lceil", 0x2308},
    {"ldquo", 0x201C}, {"le", 0x2264}, {"lfloor", 0x230A}, {"lowast", 0x2217}, {"loz", 0x25CA},
    {"lrm", 0x200E}, {"lsaquo", 0x2039}, {"lsquo", 0x2018}, {"lt", 0x003C}, {"macr", 0x00AF},
    {"mdash", 0x2014}, {"micro", 0x00B5}, {"middot", 0x00B7}, {"minus", 0x2212}, {"mu", 0x03BC},
    {"nabla", 0x2207}, {"nbsp", 0x00A0}, {"ndash", 0x2013}, {"ne", 0x2260}, {"ni", 0x220B}, {"not", 0x00AC},
    {"notin", 0x2209}, {"nsub", 0x2284}, {"ntilde", 0x00F1}, {"nu", 0x03BD}, {"oacute", 0x00F3},
    {"ocirc", 0x00F4}, {"oelig", 0x0153}, {"ograve", 0x00F2}, {"oline", 0x203E}, {"omega", 0x03C9},
    {"omicron", 0x03BF}, {"oplus", 0x2295}, {"or", 0x2228}, {"ordf", 0x00AA}, {"ordm", 0x00BA},
    {"oslash", 0x00F8}, {"otilde", 0x00F5}, {"otimes", 0x2297}, {"ouml", 0x00F6}, {"para", 0x00B6},
    {"part", 0x2202}, {"permil", 0x2030}, {"perp", 0x22A5}, {"phi", 0x03C6}, {"pi", 0x03C0}, {"piv", 0x03D6},
    {"plusmn", 0x00B1}, {"pound", 0x00A3}, {"prime", 0x2032}, {"prod", 0x220F}, {"prop", 0x221D},
    {"psi", 0x03C8}, {"quot", 0x0022}, {"rArr", 0x21D2}, {"radic", 0x221A}, {"rang", 0x27E9},
    {"raquo", 0x00BB}, {"rarr", 0x2192}, {"rceil", 0x2309}, {"rdquo", 0x201D}, {"real", 0x211C},
    {"reg", 0x00AE}, {"rfloor", 0x230B}, {"rho", 0x03C1}, {"rlm", 0x200F}, {"rsaquo", 0x203A},
    {"rsquo", 0x2019}, {"sbquo", 0x201A}, {"scaron", 0x0161}, {"sdot", 0x22C5}, {"sect", 0x00A7},
    {"shy", 0x00AD}, {"sigma", 0x03C3}, {"sigmaf", 0x03C2}, {"sim", 0x223C}, {"spades", 0x2660},
    {"sub", 0x2282}, {"sube", 0x2286}, {"sum", 0x2211}, {"sup", 0x2283}, {"sup1", 0x00B9}, {"sup2", 0x00B2},
    {"sup3", 0x00B3}, {"supe", 0x2287}, {"szlig", 0x00DF}, {"tau", 0x03C4}, {"there4", 0x2234},
    {"theta", 0x03B8}, {"thetasym", 0x03D1}, {"thinsp", 0x2009}, {"thorn", 0x00FE}, {"tilde", 0x02DC},
    {"times", 0x00D7}, {"trade", 0x2122}, {"uArr", 0x21D1}, {"uacute", 0x00FA}, {"uarr", 0x2191},
    {"ucirc", 0x00FB}, {"ugrave", 0x00F9}, {"uml", 0x00A8}, {"upsih", 0x03D2}, {"upsilon", 0x03C5},
    {"uuml", 0x00FC}, {"weierp", 0x2118}, {"xi", 0x03BE}, {"yacute", 0x00FD}, {"yen", 0x00A5},
    {"yuml", 0x00FF}, {"zeta", 0x03B6}, {"zwj", 0x200D}, {"zwnj", 0x200C},
};

// "&name;" -> replacement, including ftfy's all-caps forms of all-lowercase names ("&EACUTE;"),
// which map to the uppercased character. A name that is itself an entity keeps its own value.
const std::unordered_map<std::u32string, std::u32string>& entity_table() {
  static const std::unordered_map<std::u32string, std::u32string> table = [] {
    std::unordered_map<std::u32string, std::u32string> built;
    auto key = [](std::string_view name) {
      std::u32string k = U"&";
      for (char ch : name) k.push_back(static_cast<char32_t>(ch));
      return k + U";";
    };
    for (const auto& e : kNamedEntities) built.emplace(key(e.name), std::u32string(1, e.value));
    for (const auto& e : kNamedEntities) {
      std::string upper(e.name);
      bool all_lowercase = true;
      for (char& ch : upper) {
        all_lowercase = all_lowercase && !(ch >= 'A' && ch <= 'Z');
        if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 32);
      }
      if (all_lowercase) built.emplace(key(upper), python_upper(e.value));
    }
    return built;
  }();
  return table;
}

bool is_ascii_alnum(char32_t c) {
  return (c >= U'0' && c <= U'9') || (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z');
}

int hex_value(char32_t c) {
  if (c >= U'0' && c <= U'9') return static_cast<int>(c - U'0');
  if (c >= U'a' && c <= U'f') return static_cast<int>(c - U'a') + 10;
  if (c >= U'A' && c <= U'F') return static_cast<int>(c - U'A') + 10;
  return -1;
}

bool is_noncharacter_or_control(char32_t n) {
  return (n >= 0x01 && n <= 0x08) || n == 0x0B || (n >= 0x0E && n <= 0x1F) || (n >= 0x7F && n <= 0x9F) ||
         (n >= 0xFDD0 && n <= 0xFDEF) || (n & 0xFFFE) == 0xFFFE;
}

// What Python's html.unescape makes of a complete numeric reference with value n.
std::u32string numeric_reference_value(uint64_t n) {
  if (n == 0) return U"\uFFFD";
  if (n == 0x0D) return U"\r";
  if (n >= 0x80 && n <= 0x9F) return fix_c1_controls(std::u32string(1, static_cast<char32_t>(n)));
  if ((n >= 0xD800 && n <= 0xDFFF) || n > 0x10FFFF) return U"\uFFFD";
  if (is_noncharacter_or_control(static_cast<char32_t>(n))) return U"";
  return std::u32string(1, static_cast<char32_t>(n));
}

// The body of "&#body;" (after '#'): decimal digits or x/X and hex digits, all of it, or nullopt
// (html.unescape would then decode only a prefix, which ftfy rejects).
std::optional<std::u32string> decode_numeric_reference(std::u32string_view body) {
  const bool hex = body[0] == U'x' || body[0] == U'X';
  const std::u32string_view digits = hex ? body.substr(1) : body;
  if (digits.empty()) return std::nullopt;
  uint64_t n = 0;
  for (char32_t c : digits) {
    const int d = hex ? hex_value(c) : (c >= U'0' && c <= U'9' ? static_cast<int>(c - U'0') : -1);
    if (d < 0) return std::nullopt;
    n = std::min<uint64_t>(n * (hex ? 16 : 10) + static_cast<uint64_t>(d), 0x110000);  // saturate
  }
  return numeric_reference_value(n);
}

// The replacement of one "&...;" match of ftfy's HTML_ENTITY_RE, or the match itself.
std::u32string replace_entity(std::u32string_view match) {
  if (match[1] != U'#') {
    const auto& table = entity_table();
    auto it = table.find(std::u32string(match));
    return it == table.end() ? std::u32string(match) : it->second;
  }
  auto decoded = decode_numeric_reference(match.substr(2, match.size() - 3));
  // ftfy keeps the text when the result still has a ';' (a partial decode, or "&#59;").
  if (!decoded || decoded->find(U';') != std::u32string::npos) return std::u32string(match);
  return *decoded;
}

// Length of a match of HTML_ENTITY_RE, r"&#?[0-9A-Za-z]{1,24};", at i (0 if none).
size_t entity_match_length(std::u32string_view text, size_t i) {
  if (text[i] != U'&') return 0;
  size_t j = i + 1;
  if (j < text.size() && text[j] == U'#') ++j;
  const size_t name_start = j;
  while (j < text.size() && is_ascii_alnum(text[j]) && j - name_start < 24) ++j;
  const size_t name_length = j - name_start;
  if (name_length == 0 || j >= text.size() || text[j] != U';') return 0;
  return j + 1 - i;
}

// ---------------------------------------------------------------------------------------------
// Character tables of the other fixers
// ---------------------------------------------------------------------------------------------
struct Ligature {
  char32_t ligature;
  std::u32string_view letters;
};

// chardata.LIGATURES: Latin ligatures and digraphs that exist only for legacy encodings.
constexpr Ligature kLigatures[] = {
    {U'Ĳ', U"IJ"}, {U'ĳ', U"ij"}, {U'ŉ', U"ʼn"}, {U'Ǳ', U"DZ"}, {U'ǲ', U"Dz"}, {U'ǳ', U"dz"},
    {U'Ǆ', U"DŽ"}, {U'ǅ', U"Dž"}, {U'ǆ', U"dž"}, {U'Ǉ', U"LJ"}, {U'ǈ', U"Lj"}, {U'ǉ', U"lj"},
    {U'Ǌ', U"NJ"}, {U'ǋ', U"Nj"}, {U'ǌ', U"nj"}, {U'ﬀ', U"ff"}, {U'ﬁ', U"fi"}, {U'ﬂ', U"fl"},
    {U'ﬃ', U"ffi"}, {U'ﬄ', U"ffl"}, {U'ﬅ', U"ſt"}, {U'ﬆ', U"st"},
};

constexpr char32_t kFirstWidthForm = 0xFF01, kLastWidthForm = 0xFFEF;

// chardata.WIDTH_MAP: the NFKC form of each halfwidth/fullwidth form that has one.
const std::array<std::u32string, kLastWidthForm - kFirstWidthForm + 1>& width_forms() {
  static const auto table = [] {
    std::array<std::u32string, kLastWidthForm - kFirstWidthForm + 1> built;
    for (char32_t c = kFirstWidthForm; c <= kLastWidthForm; ++c) {
      std::u32string normal = nfkc(std::u32string(1, c));
      if (normal != std::u32string(1, c)) built[c - kFirstWidthForm] = std::move(normal);
    }
    return built;
  }();
  return table;
}

bool is_removed_control_char(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

// ftfy's fix_and_explain with the default configuration, minus the explanation.
std::u32string fix_segment(std::u32string_view segment, bool decode_entities) {
  std::u32string text(segment);
  while (true) {
    const std::u32string before = text;
    if (decode_entities) text = unescape_html(text);
    text = fix_encoding(text);
    text = fix_c1_controls(text);
    text = fix_latin_ligatures(text);
    text = fix_character_width(text);
    text = uncurl_quotes(text);
    text = fix_line_breaks(text);
    // (fix_surrogates has nothing to do: this text comes from valid UTF-8 and has none.)
    text = remove_terminal_escapes(text);
    text = remove_control_chars(text);
    text = nfc(text);
    if (text == before) return text;
  }
}

}  // namespace

std::u32string unescape_html(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t length = entity_match_length(text, i);
    if (length == 0) {
      out.push_back(text[i++]);
      continue;
    }
    out += replace_entity(text.substr(i, length));
    i += length;
  }
  return out;
}

std::u32string remove_terminal_escapes(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == 0x1B && i + 1 < text.size() && text[i + 1] == U'[') {
      size_t j = i + 2;
      while (j < text.size() && (text[j] == U';' || is_decimal_digit(text[j]))) ++j;
      const bool ends_in_letter =
          j < text.size() && ((text[j] >= U'a' && text[j] <= U'z') || (text[j] >= U'A' && text[j] <= U'Z'));
      if (ends_in_letter) {
        i = j + 1;
        continue;
      }
    }
    out.push_back(text[i++]);
  }
  return out;
}

std::u32string fix_latin_ligatures(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    std::u32string_view replacement;
    for (const auto& lig : kLigatures)
      if (lig.ligature == c) replacement = lig.letters;
    if (replacement.empty()) out.push_back(c);
    else out += replacement;
  }
  return out;
}

std::u32string fix_character_width(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c == 0x3000) {
      out.push_back(U' ');
    } else if (c >= kFirstWidthForm && c <= kLastWidthForm && !width_forms()[c - kFirstWidthForm].empty()) {
      out += width_forms()[c - kFirstWidthForm];
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::u32string uncurl_quotes(std::u32string_view text) {
  std::u32string out(text);
  for (char32_t& c : out) {
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
    else if (c >= 0x201C && c <= 0x201F) c = U'"';
  }
  return out;
}

std::u32string fix_line_breaks(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (c == U'\r' && i + 1 < text.size() && text[i + 1] == U'\n') continue;  // CRLF: keep the LF
    out.push_back(c == U'\r' || c == 0x2028 || c == 0x2029 || c == 0x85 ? U'\n' : c);
  }
  return out;
}

std::u32string remove_control_chars(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text)
    if (!is_removed_control_char(c)) out.push_back(c);
  return out;
}

std::u32string fix_text(std::u32string_view text) {
  // ftfy splits text longer than this into segments even without line breaks.
  constexpr size_t kMaxSegmentLength = 1000000;
  std::u32string out;
  out.reserve(text.size());
  bool decode_entities = true;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t newline = text.find(U'\n', pos);
    size_t end = newline == std::u32string_view::npos ? text.size() : newline + 1;
    end = std::min(end, pos + kMaxSegmentLength);
    const std::u32string_view segment = text.substr(pos, end - pos);
    // Once a line holds a '<' the text may be HTML, and entities stay as written from then on.
    if (segment.find(U'<') != std::u32string_view::npos) decode_entities = false;
    out += fix_segment(segment, decode_entities);
    pos = end;
  }
  return out;
}

}  // namespace lcmd::text
