#include "text/mojibake.h"

#include <array>
#include <bitset>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "text/unicode.h"

namespace lcmd::text {

namespace {

// ---------------------------------------------------------------------------------------------
// Single-byte code pages: what bytes 0x80..0xFF decode to. Bytes a code page leaves undefined
// hold the Latin-1 character of the same value, which is what ftfy's "sloppy" codecs do.
// ---------------------------------------------------------------------------------------------
using CodePage = std::array<uint16_t, 128>;

constexpr CodePage kWindows1252 = {{
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178, 0x00A0, 0x00A1, 0x00A2, 0x00A3,
    0x00A4, 0x00A5, 0x00A6, 0x00A7, 0x00A8, 0x00A9, 0x00AA, 0x00AB, 0x00AC, 0x00AD, 0x00AE, 0x00AF,
    0x00B0, 0x00B1, 0x00B2, 0x00B3, 0x00B4, 0x00B5, 0x00B6, 0x00B7, 0x00B8, 0x00B9, 0x00BA, 0x00BB,
    0x00BC, 0x00BD, 0x00BE, 0x00BF, 0x00C0, 0x00C1, 0x00C2, 0x00C3, 0x00C4, 0x00C5, 0x00C6, 0x00C7,
    0x00C8, 0x00C9, 0x00CA, 0x00CB, 0x00CC, 0x00CD, 0x00CE, 0x00CF, 0x00D0, 0x00D1, 0x00D2, 0x00D3,
    0x00D4, 0x00D5, 0x00D6, 0x00D7, 0x00D8, 0x00D9, 0x00DA, 0x00DB, 0x00DC, 0x00DD, 0x00DE, 0x00DF,
    0x00E0, 0x00E1, 0x00E2, 0x00E3, 0x00E4, 0x00E5, 0x00E6, 0x00E7, 0x00E8, 0x00E9, 0x00EA, 0x00EB,
    0x00EC, 0x00ED, 0x00EE, 0x00EF, 0x00F0, 0x00F1, 0x00F2, 0x00F3, 0x00F4, 0x00F5, 0x00F6, 0x00F7,
    0x00F8, 0x00F9, 0x00FA, 0x00FB, 0x00FC, 0x00FD, 0x00FE, 0x00FF
}};
constexpr CodePage kWindows1251 = {{
    0x0402, 0x0403, 0x201A, 0x0453, 0x201E, 0x2026, 0x2020, 0x2021, 0x20AC, 0x2030, 0x0409, 0x2039,
    0x040A, 0x040C, 0x040B, 0x040F, 0x0452, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x0098, 0x2122, 0x0459, 0x203A, 0x045A, 0x045C, 0x045B, 0x045F, 0x00A0, 0x040E, 0x045E, 0x0408,
    0x00A4, 0x0490, 0x00A6, 0x00A7, 0x0401, 0x00A9, 0x0404, 0x00AB, 0x00AC, 0x00AD, 0x00AE, 0x0407,
    0x00B0, 0x00B1, 0x0406, 0x0456, 0x0491, 0x00B5, 0x00B6, 0x00B7, 0x0451, 0x2116, 0x0454, 0x00BB,
    0x0458, 0x0405, 0x0455, 0x0457, 0x0410, 0x0411, 0x0412, 0x0413, 0x0414, 0x0415, 0x0416, 0x0417,
    0x0418, 0x0419, 0x041A, 0x041B, 0x041C, 0x041D, 0x041E, 0x041F, 0x0420, 0x0421, 0x0422, 0x0423,
    0x0424, 0x0425, 0x0426, 0x0427, 0x0428, 0x0429, 0x042A, 0x042B, 0x042C, 0x042D, 0x042E, 0x042F,
    0x0430, 0x0431, 0x0432, 0x0433, 0x0434, 0x0435, 0x0436, 0x0437, 0x0438, 0x0439, 0x043A, 0x043B,
    0x043C, 0x043D, 0x043E, 0x043F, 0x0440, 0x0441, 0x0442, 0x0443, 0x0444, 0x0445, 0x0446, 0x0447,
    0x0448, 0x0449, 0x044A, 0x044B, 0x044C, 0x044D, 0x044E, 0x044F
}};
constexpr CodePage kWindows1250 = {{
    0x20AC, 0x0081, 0x201A, 0x0083, 0x201E, 0x2026, 0x2020, 0x2021, 0x0088, 0x2030, 0x0160, 0x2039,
    0x015A, 0x0164, 0x017D, 0x0179, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x0098, 0x2122, 0x0161, 0x203A, 0x015B, 0x0165, 0x017E, 0x017A, 0x00A0, 0x02C7, 0x02D8, 0x0141,
    0x00A4, 0x0104, 0x00A6, 0x00A7, 0x00A8, 0x00A9, 0x015E, 0x00AB, 0x00AC, 0x00AD, 0x00AE, 0x017B,
    0x00B0, 0x00B1, 0x02DB, 0x0142, 0x00B4, 0x00B5, 0x00B6, 0x00B7, 0x00B8, 0x0105, 0x015F, 0x00BB,
    0x013D, 0x02DD, 0x013E, 0x017C, 0x0154, 0x00C1, 0x00C2, 0x0102, 0x00C4, 0x0139, 0x0106, 0x00C7,
    0x010C, 0x00C9, 0x0118, 0x00CB, 0x011A, 0x00CD, 0x00CE, 0x010E, 0x0110, 0x0143, 0x0147, 0x00D3,
    0x00D4, 0x0150, 0x00D6, 0x00D7, 0x0158, 0x016E, 0x00DA, 0x0170, 0x00DC, 0x00DD, 0x0162, 0x00DF,
    0x0155, 0x00E1, 0x00E2, 0x0103, 0x00E4, 0x013A, 0x0107, 0x00E7, 0x010D, 0x00E9, 0x0119, 0x00EB,
    0x011B, 0x00ED, 0x00EE, 0x010F, 0x0111, 0x0144, 0x0148, 0x00F3, 0x00F4, 0x0151, 0x00F6, 0x00F7,
    0x0159, 0x016F, 0x00FA, 0x0171, 0x00FC, 0x00FD, 0x0163, 0x02D9
}};
constexpr CodePage kWindows1253 = {{
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x0088, 0x2030, 0x008A, 0x2039,
    0x008C, 0x008D, 0x008E, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x0098, 0x2122, 0x009A, 0x203A, 0x009C, 0x009D, 0x009E, 0x009F, 0x00A0, 0x0385, 0x0386, 0x00A3,
    0x00A4, 0x00A5, 0x00A6, 0x00A7, 0x00A8, 0x00A9, 0x00AA, 0x00AB, 0x00AC, 0x00AD, 0x00AE, 0x2015,
    0x00B0, 0x00B1, 0x00B2, 0x00B3, 0x0384, 0x00B5, 0x00B6, 0x00B7, 0x0388, 0x0389, 0x038A, 0x00BB,
    0x038C, 0x00BD, 0x038E, 0x038F, 0x0390, 0x0391, 0x0392, 0x0393, 0x0394, 0x0395, 0x0396, 0x0397,
    0x0398, 0x0399, 0x039A, 0x039B, 0x039C, 0x039D, 0x039E, 0x039F, 0x03A0, 0x03A1, 0x00D2, 0x03A3,
    0x03A4, 0x03A5, 0x03A6, 0x03A7, 0x03A8, 0x03A9, 0x03AA, 0x03AB, 0x03AC, 0x03AD, 0x03AE, 0x03AF,
    0x03B0, 0x03B1, 0x03B2, 0x03B3, 0x03B4, 0x03B5, 0x03B6, 0x03B7, 0x03B8, 0x03B9, 0x03BA, 0x03BB,
    0x03BC, 0x03BD, 0x03BE, 0x03BF, 0x03C0, 0x03C1, 0x03C2, 0x03C3, 0x03C4, 0x03C5, 0x03C6, 0x03C7,
    0x03C8, 0x03C9, 0x03CA, 0x03CB, 0x03CC, 0x03CD, 0x03CE, 0x00FF
}};
constexpr CodePage kWindows1254 = {{
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x008E, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x009E, 0x0178, 0x00A0, 0x00A1, 0x00A2, 0x00A3,
    0x00A4, 0x00A5, 0x00A6, 0x00A7, 0x00A8, 0x00A9, 0x00AA, 0x00AB, 0x00AC, 0x00AD, 0x00AE, 0x00AF,
    0x00B0, 0x00B1, 0x00B2, 0x00B3, 0x00B4, 0x00B5, 0x00B6, 0x00B7, 0x00B8, 0x00B9, 0x00BA, 0x00BB,
    0x00BC, 0x00BD, 0x00BE, 0x00BF, 0x00C0, 0x00C1, 0x00C2, 0x00C3, 0x00C4, 0x00C5, 0x00C6, 0x00C7,
    0x00C8, 0x00C9, 0x00CA, 0x00CB, 0x00CC, 0x00CD, 0x00CE, 0x00CF, 0x011E, 0x00D1, 0x00D2, 0x00D3,
    0x00D4, 0x00D5, 0x00D6, 0x00D7, 0x00D8, 0x00D9, 0x00DA, 0x00DB, 0x00DC, 0x0130, 0x015E, 0x00DF,
    0x00E0, 0x00E1, 0x00E2, 0x00E3, 0x00E4, 0x00E5, 0x00E6, 0x00E7, 0x00E8, 0x00E9, 0x00EA, 0x00EB,
    0x00EC, 0x00ED, 0x00EE, 0x00EF, 0x011F, 0x00F1, 0x00F2, 0x00F3, 0x00F4, 0x00F5, 0x00F6, 0x00F7,
    0x00F8, 0x00F9, 0x00FA, 0x00FB, 0x00FC, 0x0131, 0x015F, 0x00FF
}};
constexpr CodePage kIso8859_2 = {{
    0x0080, 0x0081, 0x0082, 0x0083, 0x0084, 0x0085, 0x0086, 0x0087, 0x0088, 0x0089, 0x008A, 0x008B,
    0x008C, 0x008D, 0x008E, 0x008F, 0x0090, 0x0091, 0x0092, 0x0093, 0x0094, 0x0095, 0x0096, 0x0097,
    0x0098, 0x0099, 0x009A, 0x009B, 0x009C, 0x009D, 0x009E, 0x009F, 0x00A0, 0x0104, 0x02D8, 0x0141,
    0x00A4, 0x013D, 0x015A, 0x00A7, 0x00A8, 0x0160, 0x015E, 0x0164, 0x0179, 0x00AD, 0x017D, 0x017B,
    0x00B0, 0x0105, 0x02DB, 0x0142, 0x00B4, 0x013E, 0x015B, 0x02C7, 0x00B8, 0x0161, 0x015F, 0x0165,
    0x017A, 0x02DD, 0x017E, 0x017C, 0x0154, 0x00C1, 0x00C2, 0x0102, 0x00C4, 0x0139, 0x0106, 0x00C7,
    0x010C, 0x00C9, 0x0118, 0x00CB, 0x011A, 0x00CD, 0x00CE, 0x010E, 0x0110, 0x0143, 0x0147, 0x00D3,
    0x00D4, 0x0150, 0x00D6, 0x00D7, 0x0158, 0x016E, 0x00DA, 0x0170, 0x00DC, 0x00DD, 0x0162, 0x00DF,
    0x0155, 0x00E1, 0x00E2, 0x0103, 0x00E4, 0x013A, 0x0107, 0x00E7, 0x010D, 0x00E9, 0x0119, 0x00EB,
    0x011B, 0x00ED, 0x00EE, 0x010F, 0x0111, 0x0144, 0x0148, 0x00F3, 0x00F4, 0x0151, 0x00F6, 0x00F7,
    0x0159, 0x016F, 0x00FA, 0x0171, 0x00FC, 0x00FD, 0x0163, 0x02D9
}};
constexpr CodePage kMacRoman = {{
    0x00C4, 0x00C5, 0x00C7, 0x00C9, 0x00D1, 0x00D6, 0x00DC, 0x00E1, 0x00E0, 0x00E2, 0x00E4, 0x00E3,
    0x00E5, 0x00E7, 0x00E9, 0x00E8, 0x00EA, 0x00EB, 0x00ED, 0x00EC, 0x00EE, 0x00EF, 0x00F1, 0x00F3,
    0x00F2, 0x00F4, 0x00F6, 0x00F5, 0x00FA, 0x00F9, 0x00FB, 0x00FC, 0x2020, 0x00B0, 0x00A2, 0x00A3,
    0x00A7, 0x2022, 0x00B6, 0x00DF, 0x00AE, 0x00A9, 0x2122, 0x00B4, 0x00A8, 0x2260, 0x00C6, 0x00D8,
    0x221E, 0x00B1, 0x2264, 0x2265, 0x00A5, 0x00B5, 0x2202, 0x2211, 0x220F, 0x03C0, 0x222B, 0x00AA,
    0x00BA, 0x03A9, 0x00E6, 0x00F8, 0x00BF, 0x00A1, 0x00AC, 0x221A, 0x0192, 0x2248, 0x2206, 0x00AB,
    0x00BB, 0x2026, 0x00A0, 0x00C0, 0x00C3, 0x00D5, 0x0152, 0x0153, 0x2013, 0x2014, 0x201C, 0x201D,
    0x2018, 0x2019, 0x00F7, 0x25CA, 0x00FF, 0x0178, 0x2044, 0x20AC, 0x2039, 0x203A, 0xFB01, 0xFB02,
    0x2021, 0x00B7, 0x201A, 0x201E, 0x2030, 0x00C2, 0x00CA, 0x00C1, 0x00CB, 0x00C8, 0x00CD, 0x00CE,
    0x00CF, 0x00CC, 0x00D3, 0x00D4, 0xF8FF, 0x00D2, 0x00DA, 0x00DB, 0x00D9, 0x0131, 0x02C6, 0x02DC,
    0x00AF, 0x02D8, 0x02D9, 0x02DA, 0x00B8, 0x02DD, 0x02DB, 0x02C7
}};
constexpr CodePage kCp437 = {{
    0x00C7, 0x00FC, 0x00E9, 0x00E2, 0x00E4, 0x00E0, 0x00E5, 0x00E7, 0x00EA, 0x00EB, 0x00E8, 0x00EF,
    0x00EE, 0x00EC, 0x00C4, 0x00C5, 0x00C9, 0x00E6, 0x00C6, 0x00F4, 0x00F6, 0x00F2, 0x00FB, 0x00F9,
    0x00FF, 0x00D6, 0x00DC, 0x00A2, 0x00A3, 0x00A5, 0x20A7, 0x0192, 0x00E1, 0x00ED, 0x00F3, 0x00FA,
    0x00F1, 0x00D1, 0x00AA, 0x00BA, 0x00BF, 0x2310, 0x00AC, 0x00BD, 0x00BC, 0x00A1, 0x00AB, 0x00BB,
    0x2591, 0x2592, 0x2593, 0x2502, 0x2524, 0x2561, 0x2562, 0x2556, 0x2555, 0x2563, 0x2551, 0x2557,
    0x255D, 0x255C, 0x255B, 0x2510, 0x2514, 0x2534, 0x252C, 0x251C, 0x2500, 0x253C, 0x255E, 0x255F,
    0x255A, 0x2554, 0x2569, 0x2566, 0x2560, 0x2550, 0x256C, 0x2567, 0x2568, 0x2564, 0x2565, 0x2559,
    0x2558, 0x2552, 0x2553, 0x256B, 0x256A, 0x2518, 0x250C, 0x2588, 0x2584, 0x258C, 0x2590, 0x2580,
    0x03B1, 0x00DF, 0x0393, 0x03C0, 0x03A3, 0x03C3, 0x00B5, 0x03C4, 0x03A6, 0x0398, 0x03A9, 0x03B4,
    0x221E, 0x03C6, 0x03B5, 0x2229, 0x2261, 0x00B1, 0x2265, 0x2264, 0x2320, 0x2321, 0x00F7, 0x2248,
    0x00B0, 0x2219, 0x00B7, 0x221A, 0x207F, 0x00B2, 0x25A0, 0x00A0
}};

// Windows-1252 bytes with no character: a strict decoder rejects them.
bool undefined_in_windows1252(uint8_t b) { return b == 0x81 || b == 0x8D || b == 0x8F || b == 0x90 || b == 0x9D; }

constexpr char32_t kReplacementChar = 0xFFFD;
constexpr uint8_t kSubstituteByte = 0x1A;

// The code pages ftfy tries, in its order (chardata.CHARMAP_ENCODINGS). A "sloppy" code page
// also encodes U+FFFD as byte 0x1A, so that text with replacement characters can be decoded
// partially (see replace_lossy_sequences).
struct SingleByteCodec {
  const CodePage* high;  // nullptr for Latin-1
  bool sloppy;
};

enum CodecIndex { kLatin1 = 0, kSloppyWindows1252 = 1 };

constexpr std::array<SingleByteCodec, 9> kCodecs = {{
    {nullptr, false},
    {&kWindows1252, true},
    {&kWindows1251, true},
    {&kWindows1250, true},
    {&kWindows1253, true},
    {&kWindows1254, true},
    {&kIso8859_2, false},
    {&kMacRoman, false},
    {&kCp437, false},
}};

char32_t decode_byte(const SingleByteCodec& codec, uint8_t b) {
  if (b < 0x80) return codec.sloppy && b == kSubstituteByte ? kReplacementChar : b;
  return codec.high ? (*codec.high)[b - 0x80] : b;
}

using EncodeTable = std::unordered_map<char32_t, uint8_t>;

const EncodeTable& encode_table(size_t codec_index) {
  static const std::array<EncodeTable, kCodecs.size()> tables = [] {
    std::array<EncodeTable, kCodecs.size()> built;
    for (size_t k = 0; k < kCodecs.size(); ++k)
      for (int b = 0; b < 256; ++b) built[k].emplace(decode_byte(kCodecs[k], static_cast<uint8_t>(b)), b);
    return built;
  }();
  return tables[codec_index];
}

// The bytes the text would have been decoded from, or nullopt when some character is not in
// the code page (chardata.possible_encoding fails).
std::optional<std::string> encode_single_byte(std::u32string_view text, size_t codec_index) {
  const EncodeTable& table = encode_table(codec_index);
  std::string bytes;
  bytes.reserve(text.size());
  for (char32_t c : text) {
    auto it = table.find(c);
    if (it == table.end()) return std::nullopt;
    bytes.push_back(static_cast<char>(it->second));
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// "utf-8-variants": strict UTF-8, plus CESU-8 surrogate pairs and Java's C0 80 for U+0000.
// ---------------------------------------------------------------------------------------------
bool in_range(uint8_t b, uint8_t lo, uint8_t hi) { return b >= lo && b <= hi; }

bool is_cesu8_pair(std::string_view s, size_t i) {
  if (i + 6 > s.size()) return false;
  auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  return b(0) == 0xED && in_range(b(1), 0xA0, 0xAF) && in_range(b(2), 0x80, 0xBF) && b(3) == 0xED &&
         in_range(b(4), 0xB0, 0xBF) && in_range(b(5), 0x80, 0xBF);
}

char32_t decode_cesu8_pair(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<uint8_t>(s[i + k])); };
  return ((b(1) & 0x0F) << 16) + ((b(2) & 0x3F) << 10) + ((b(4) & 0x0F) << 6) + (b(5) & 0x3F) + 0x10000;
}

std::optional<std::u32string> decode_utf8_variants(std::string_view bytes) {
  std::u32string out;
  size_t start = 0;  // first byte not yet decoded
  auto flush_standard = [&](size_t end) {
    auto part = decode_utf8(bytes.substr(start, end - start));
    if (part) out += *part;
    return part.has_value();
  };
  for (size_t i = 0; i < bytes.size();) {
    const auto b = static_cast<uint8_t>(bytes[i]);
    const bool java_null = b == 0xC0 && i + 1 < bytes.size() && static_cast<uint8_t>(bytes[i + 1]) == 0x80;
    const bool cesu8 = b == 0xED && is_cesu8_pair(bytes, i);
    if (!java_null && !cesu8) {
      ++i;
      continue;
    }
    if (!flush_standard(i)) return std::nullopt;
    out.push_back(java_null ? 0 : decode_cesu8_pair(bytes, i));
    i += java_null ? 2 : 6;
    start = i;
  }
  if (!flush_standard(bytes.size())) return std::nullopt;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Byte patterns (ftfy's bytes regexes) as alternatives of byte-class sequences.
// ---------------------------------------------------------------------------------------------
using ByteClass = std::bitset<256>;

ByteClass bytes_of(std::initializer_list<std::pair<uint8_t, uint8_t>> ranges) {
  ByteClass set;
  for (auto [lo, hi] : ranges)
    for (int b = lo; b <= hi; ++b) set.set(static_cast<size_t>(b));
  return set;
}

using BytePattern = std::vector<ByteClass>;

bool matches_at(const BytePattern& pattern, std::string_view s, size_t i) {
  if (i + pattern.size() > s.size()) return false;
  for (size_t k = 0; k < pattern.size(); ++k)
    if (!pattern[k].test(static_cast<uint8_t>(s[i + k]))) return false;
  return true;
}

// Python's re.sub over alternatives tried in order at each position, left to right.
template <typename Replace>
std::string substitute(std::string_view s, const std::vector<BytePattern>& alternatives, Replace replace) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const BytePattern* hit = nullptr;
    for (const auto& alt : alternatives)
      if (matches_at(alt, s, i)) {
        hit = &alt;
        break;
      }
    if (!hit) {
      out.push_back(s[i++]);
      continue;
    }
    out += replace(s.substr(i, hit->size()));
    i += hit->size();
  }
  return out;
}

bool search(std::string_view s, const std::vector<BytePattern>& alternatives) {
  for (size_t i = 0; i < s.size(); ++i)
    for (const auto& alt : alternatives)
      if (matches_at(alt, s, i)) return true;
  return false;
}

// chardata.ALTERED_UTF8_RE: UTF-8 sequences that would be valid if a space were byte A0,
// restricted to the lead bytes that give likely characters.
const std::vector<BytePattern>& altered_utf8_patterns() {
  static const std::vector<BytePattern> patterns = [] {
    const ByteClass space = bytes_of({{0x20, 0x20}});
    const ByteClass cont = bytes_of({{0x80, 0xBF}});
    const ByteClass cont_not_85_a0 = bytes_of({{0x80, 0x84}, {0x86, 0x9F}, {0xA1, 0xBF}});
    const ByteClass f0 = bytes_of({{0xF0, 0xF0}});
    return std::vector<BytePattern>{
        {bytes_of({{0xC2, 0xC3}, {0xC5, 0xC5}, {0xCE, 0xCE}, {0xD0, 0xD0}, {0xD9, 0xD9}}), space},
        {bytes_of({{0xE2, 0xE3}}), space, cont_not_85_a0},
        {bytes_of({{0xE0, 0xE3}}), cont_not_85_a0, space},
        {f0, space, cont, cont},
        {f0, cont, space, cont},
        {f0, cont, cont, space},
    };
  }();
  return patterns;
}

// chardata.LOSSY_UTF8_RE: UTF-8 sequences some of whose bytes were lost (byte 1A stands for a
// byte that became U+FFFD; '?' is accepted once per sequence).
const std::vector<BytePattern>& lossy_utf8_patterns() {
  static const std::vector<BytePattern> patterns = [] {
    const ByteClass sub = bytes_of({{0x1A, 0x1A}});
    const ByteClass sub_or_q = bytes_of({{0x1A, 0x1A}, {'?', '?'}});
    const ByteClass sub_or_cont = bytes_of({{0x1A, 0x1A}, {0x80, 0xBF}});
    const ByteClass any_cont = bytes_of({{0x1A, 0x1A}, {'?', '?'}, {0x80, 0xBF}});
    const ByteClass ed = bytes_of({{0xED, 0xED}});
    const ByteClass high_surrogate = bytes_of({{0xA0, 0xAF}});
    const ByteClass low_surrogate = bytes_of({{0xB0, 0xBF}});
    const ByteClass lead3 = bytes_of({{0xE0, 0xEF}});
    const ByteClass lead4 = bytes_of({{0xF0, 0xF4}});
    return std::vector<BytePattern>{
        {bytes_of({{0xC2, 0xDF}}), sub},
        {bytes_of({{0xC2, 0xC3}}), bytes_of({{'?', '?'}})},
        {ed, high_surrogate, sub_or_q, ed, low_surrogate, any_cont},
        {ed, high_surrogate, any_cont, ed, low_surrogate, sub_or_q},
        {lead3, sub_or_q, sub_or_cont},
        {lead3, sub_or_cont, sub_or_q},
        {lead4, sub_or_q, sub_or_cont, sub_or_cont},
        {lead4, sub_or_cont, sub_or_q, sub_or_cont},
        {lead4, sub_or_cont, sub_or_cont, sub_or_q},
        {sub},
    };
  }();
  return patterns;
}

// fixes.A_GRAVE_WORD_RE, b"\xc3 (?! |quele|quela|quilo|s )": a lone "Ã " is usually the word
// "à", so a byte A0 is inserted before the space rather than replacing it.
std::string restore_a_grave_words(std::string_view s) {
  static constexpr std::string_view kExceptions[] = {" ", "quele", "quela", "quilo", "s "};
  std::string out;
  out.reserve(s.size() + 4);
  for (size_t i = 0; i < s.size(); ++i) {
    const bool candidate = static_cast<uint8_t>(s[i]) == 0xC3 && i + 1 < s.size() && s[i + 1] == ' ';
    bool excepted = false;
    if (candidate)
      for (auto word : kExceptions) excepted = excepted || s.substr(i + 2, word.size()) == word;
    if (candidate && !excepted) {
      out += "\xC3\xA0 ";
      ++i;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// fixes.restore_byte_a0
std::string restore_byte_a0(std::string_view s) {
  const std::string regraved = restore_a_grave_words(s);
  return substitute(regraved, altered_utf8_patterns(), [](std::string_view match) {
    std::string fixed(match);
    for (char& b : fixed)
      if (b == ' ') b = static_cast<char>(0xA0);
    return fixed;
  });
}

// fixes.replace_lossy_sequences
std::string replace_lossy_sequences(std::string_view s) {
  return substitute(s, lossy_utf8_patterns(), [](std::string_view) { return std::string("\xEF\xBF\xBD"); });
}

// ---------------------------------------------------------------------------------------------
// Character classes of ftfy's badness heuristic (badness.MOJIBAKE_CATEGORIES).
// ---------------------------------------------------------------------------------------------
enum Category : uint16_t {
  kC1 = 1 << 0,
  kBad = 1 << 1,
  kCurrency = 1 << 2,
  kStartPunct = 1 << 3,
  kEndPunct = 1 << 4,
  kNumeric = 1 << 5,
  kKaomoji = 1 << 6,
  kUpperAccented = 1 << 7,
  kLowerAccented = 1 << 8,
  kUpperCommon = 1 << 9,
  kLowerCommon = 1 << 10,
  kBox = 1 << 11,
  kCommon = 1 << 12,
};

struct CategoryMembers {
  Category category;
  std::u32string_view singles;                        // individual characters
  std::vector<std::pair<char32_t, char32_t>> ranges;  // inclusive ranges
};

const std::vector<CategoryMembers>& category_members() {
  static const std::vector<CategoryMembers> members = {
      // Characters that appear in many contexts; sequences with them are not mojibake per se.
      {kCommon, U"\u00A0\u00AD\u00B7\u00B4\u2013\u2014\u2015\u2026\u2019", {}},
      // C1 controls: no use outside of mojibake anymore.
      {kC1, U"", {{0x80, 0x9F}}},
      // Nearly always mojibake.
      {kBad, U"¦¤¨¬¯¶§¸ƒˆˇ˘˛˜†‡‰⌐◊\uFFFDªº", {}},
      {kCurrency, U"¢£¥₧€", {}},
      {kStartPunct, U"¡«¿©΄΅‘‚“„•‹\uF8FF", {}},
      {kEndPunct, U"®»˝”›™", {}},
      {kNumeric, U"²³¹±¼½¾×µ÷⁄∂∆∏∑√∞∩∫≈≠≡≤≥№", {}},
      // Letters that may be used in emoticons (kaomoji), so allowed in odd contexts.
      {kKaomoji, U"Ő°", {{0xD2, 0xD6}, {0xD9, 0xDC}, {0xF2, 0xF6}, {0xF8, 0xFC}}},
      {kUpperAccented, U"ØÜÝĂĄĆČĎĐĘĚĞİĹĽŁŃŇŒŘŚŞŠŢŤŮŰŸŹŻŽҐ", {{0xC0, 0xD1}}},
      {kLowerAccented, U"ßăąćčďđęěğĺľłœŕśşšťüźżžґﬁﬂ", {{0xE0, 0xF1}}},
      {kUpperCommon, U"ÞΆΈΉΊΌΎΏΪΫ", {{0x391, 0x3A9}, {0x401, 0x42F}}},
      {kLowerCommon, U"άέήίΰ", {{0x3B1, 0x3C9}, {0x430, 0x45F}}},
      {kBox, U"│┌┐┘├┤┬┼▀▄█▌▐░▒▓", {{0x2550, 0x256C}}},
  };
  return members;
}

uint16_t categories_of(char32_t c) {
  // Every categorized character is below U+2600 except a few, which the map holds.
  constexpr char32_t kTableSize = 0x2600;
  struct Tables {
    std::array<uint16_t, kTableSize> low{};
    std::unordered_map<char32_t, uint16_t> high;
  };
  static const Tables tables = [] {
    Tables built;
    auto add = [&](char32_t x, Category category) {
      if (x < kTableSize) built.low[x] |= category;
      else built.high[x] |= category;
    };
    for (const auto& m : category_members()) {
      for (char32_t s : m.singles) add(s, m.category);
      for (auto [lo, hi] : m.ranges)
        for (char32_t x = lo; x <= hi; ++x) add(x, m.category);
    }
    return built;
  }();
  if (c < kTableSize) return tables.low[c];
  auto it = tables.high.find(c);
  return it == tables.high.end() ? 0 : it->second;
}

// A regex character class: badness categories, listed characters and a few built-in sets.
enum Builtin : uint8_t {
  kAsciiLower = 1 << 0,  // [a-z]
  kAsciiUpper = 1 << 1,  // [A-Z]
  kSpace = 1 << 2,       // \s
  kWord = 1 << 3,        // \w
  kNotNewline = 1 << 4,  // .
};

struct CharClass {
  uint16_t categories = 0;
  std::u32string_view listed = U"";
  uint8_t builtins = 0;
  bool negated = false;

  bool contains(char32_t c) const {
    bool in = (categories_of(c) & categories) != 0 || listed.find(c) != std::u32string_view::npos;
    in = in || ((builtins & kAsciiLower) && c >= U'a' && c <= U'z');
    in = in || ((builtins & kAsciiUpper) && c >= U'A' && c <= U'Z');
    in = in || ((builtins & kSpace) && is_python_space(c));
    in = in || ((builtins & kWord) && is_word_char(c));
    in = in || ((builtins & kNotNewline) && c != U'\n');
    return in != negated;
  }
};

CharClass of(uint16_t categories, std::u32string_view listed = U"", uint8_t builtins = 0) {
  return CharClass{categories, listed, builtins, false};
}
CharClass listed(std::u32string_view chars) { return CharClass{0, chars, 0, false}; }
CharClass builtin(uint8_t builtins) { return CharClass{0, U"", builtins, false}; }

struct SequenceRule {
  std::vector<CharClass> sequence;
  bool at_start_only = false;  // the regex's ^

  bool matches_at(std::u32string_view text, size_t i) const {
    if (at_start_only && i != 0) return false;
    if (i + sequence.size() > text.size()) return false;
    for (size_t k = 0; k < sequence.size(); ++k)
      if (!sequence[k].contains(text[i + k])) return false;
    return true;
  }
};

// badness.BADNESS_RE, one rule per alternative (an optional \s? is written as two rules).
const std::vector<SequenceRule>& badness_rules() {
  constexpr uint16_t kAccented = kLowerAccented | kUpperAccented;
  constexpr uint16_t kPunct = kStartPunct | kEndPunct;
  static const std::vector<SequenceRule> rules = {
      {{of(kC1)}},
      {{of(kBad | kAccented | kBox | kPunct | kCurrency | kNumeric), of(kBad)}},
      {{builtin(kAsciiLower | kAsciiUpper), of(kLowerCommon | kUpperCommon), of(kBad)}},
      {{of(kBad), of(kAccented | kBox | kPunct | kCurrency | kNumeric)}},
      {{of(kLowerAccented | kLowerCommon | kBox | kEndPunct | kCurrency | kNumeric), of(kUpperAccented)}},
      {{of(kBox | kEndPunct | kCurrency | kNumeric), of(kLowerAccented)}},
      {{of(kLowerAccented | kBox | kEndPunct), of(kCurrency)}},
      {{builtin(kSpace), of(kUpperAccented), of(kCurrency)}},
      {{of(kUpperAccented | kBox), of(kNumeric)}},
      {{of(kAccented | kBox | kCurrency | kEndPunct), of(kStartPunct), of(kNumeric)}},
      {{of(kAccented | kCurrency | kNumeric | kBox), of(kEndPunct), of(kStartPunct)}},
      {{of(kCurrency | kNumeric | kBox), of(kStartPunct)}},
      {{builtin(kAsciiLower), of(kUpperAccented), of(kStartPunct | kCurrency)}},
      {{of(kBox), of(kKaomoji)}},
      {{of(kAccented | kCurrency | kNumeric | kPunct), of(kBox)}},
      {{of(kBox), of(kEndPunct)}},
      {{of(kAccented), of(kEndPunct), builtin(kWord)}},
      // The ligature œ when not followed by an unaccented Latin letter.
      {{listed(U"Œœ"), CharClass{0, U"", kAsciiLower | kAsciiUpper, true}}},
      // Common Windows-1252 2-character mojibake.
      {{listed(U"ÂÃÎÐ"), of(kPunct, U"€Šš¢£Ÿž\u00A0\u00AD®©°·»–—´")}},
      {{listed(U"×"), listed(U"²³")}},
      // Windows-1252 mojibake of Arabic words: four characters, as the 'common' ones are in it.
      {{listed(U"ØÙ"), of(kCommon | kCurrency | kBad | kNumeric | kStartPunct, U"ŸŠ®°µ»"), listed(U"ØÙ"),
        of(kCommon | kCurrency | kBad | kNumeric | kStartPunct, U"ŸŠ®°µ»")}},
      // Windows-1252 mojibake starting 3-character sequences of some South Asian alphabets.
      {{listed(U"à"), listed(U"²µ¹¼½¾")}},
      // MacRoman mojibake.
      {{listed(U"√"), listed(U"±∂†≠®™´≤≥¥µø")}},
      {{listed(U"≈"), listed(U"°¢")}},
      {{listed(U"‚"), listed(U"Ä"), listed(U"ìîïòôúùû†°¢π")}},
      {{listed(U"‚"), listed(U"âó"), listed(U"àä°ê")}},
      // Windows-1251 mojibake of characters in the U+2000 range, and of Latin-1 / Cyrillic.
      {{listed(U"в"), listed(U"Ђ")}},
      {{listed(U"ВГРС"), of(kC1 | kBad | kPunct | kCurrency, U"°µ"), listed(U"ВГРС")}},
      {{listed(U"Г"), listed(U"ў"), listed(U"В"), listed(U"Ђ"), listed(U"В"), builtin(kNotNewline),
        of(0, U" ", kAsciiLower | kAsciiUpper)}},
      // Windows-1252 encodings of 'à' and 'á', and of U+00A0 itself.
      {{listed(U"Ã"), listed(U"\u00A0¡")}},
      {{builtin(kAsciiLower), listed(U"ÃÂ"), listed(U" ")}},
      {{builtin(kAsciiLower), builtin(kSpace), listed(U"ÃÂ"), listed(U" ")}},
      {{listed(U"ÃÂ"), listed(U" ")}, true},
      // Â before a character it encodes exactly, for common characters.
      {{of(kEndPunct, U".,?!", kAsciiLower), listed(U"Â"), of(kPunct, U" ")}},
      // Windows-1253 mojibake of the U+2000 range and of Latin-1 / Greek.
      {{listed(U"β"), listed(U"€"), listed(U"™\u00A0Ά\u00AD®°")}},
      {{listed(U"ΒΓΞΟ"), of(kC1 | kBad | kPunct | kCurrency, U"°"), listed(U"ΒΓΞΟ")}},
  };
  return rules;
}

// ---------------------------------------------------------------------------------------------
// chardata.UTF8_DETECTOR_RE: runs of characters that look like UTF-8 read as a single-byte code
// page (a lead character followed by 1-3 continuation characters).
// ---------------------------------------------------------------------------------------------
constexpr std::u32string_view kUtf8FirstOf2 =
    U"ÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖ×ØÙÚÛÜÝÞßĂĆČĎĐĘĚĞİĹŃŇŐŘŞŢŮŰ"
    U"ΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩΪΫάέήίВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ";
constexpr std::u32string_view kUtf8FirstOf3 = U"àáâãäåæçèéêëìíîïăćčďęěĺŕΰαβγδεζηθικλμνξοабвгдежзийклмноп";
constexpr std::u32string_view kUtf8FirstOf4 = U"ðóđğπσру";
// Continuation characters other than U+0080..U+00BF. The strict set leaves out spaces, dashes,
// quotation marks and ellipses, which often stand for themselves next to mojibake.
constexpr std::u32string_view kUtf8ContinuationStrict =
    U"ĄąĽľŁłŒœŚśŞşŠšŤťŸŹźŻżŽžƒˆˇ˘˛˜˝΄΅ΆΈΉΊΌΎΏЁЂЃЄЅІЇЈЉЊЋЌЎЏёђѓєѕіїјљњћќўџҐґ†‡•‰‹›€№™";
constexpr std::u32string_view kUtf8ContinuationLoose = U"–—―‘’‚“”„… ";

bool is_utf8_continuation_strict(char32_t c) {
  return (c >= 0x80 && c <= 0xBF) || kUtf8ContinuationStrict.find(c) != std::u32string_view::npos;
}

bool is_utf8_continuation(char32_t c) {
  return is_utf8_continuation_strict(c) || kUtf8ContinuationLoose.find(c) != std::u32string_view::npos;
}

// Length of one lead-plus-continuations unit at i, or 0.
size_t utf8_lookalike_unit(std::u32string_view text, size_t i) {
  size_t continuations = 0;
  if (kUtf8FirstOf2.find(text[i]) != std::u32string_view::npos) continuations = 1;
  else if (kUtf8FirstOf3.find(text[i]) != std::u32string_view::npos) continuations = 2;
  else if (kUtf8FirstOf4.find(text[i]) != std::u32string_view::npos) continuations = 3;
  if (continuations == 0 || i + continuations >= text.size()) return 0;
  for (size_t k = 1; k <= continuations; ++k)
    if (!is_utf8_continuation(text[i + k])) return 0;
  return continuations + 1;
}

// Length of the detector's match starting at i (0 if none): the lookbehind, then a greedy run.
size_t utf8_lookalike_run(std::u32string_view text, size_t i) {
  if (i > 0 && is_utf8_continuation_strict(text[i - 1])) return 0;
  size_t end = i;
  while (end < text.size()) {
    const size_t unit = utf8_lookalike_unit(text, end);
    if (unit == 0) break;
    end += unit;
  }
  return end - i;
}

// fixes.decode_inconsistent_utf8: fixes mojibake runs embedded in otherwise fine text.
std::u32string decode_inconsistent_utf8(std::u32string_view text) {
  std::u32string out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t run = utf8_lookalike_run(text, i);
    if (run == 0) {
      out.push_back(text[i++]);
      continue;
    }
    const std::u32string_view piece = text.substr(i, run);
    // Only shorter pieces, so that this cannot recurse forever.
    out += piece.size() < text.size() && is_bad(piece) ? fix_encoding(piece) : std::u32string(piece);
    i += run;
  }
  return out;
}

bool contains_utf8_lookalike(std::u32string_view text) {
  for (size_t i = 0; i < text.size(); ++i)
    if (utf8_lookalike_run(text, i) > 0) return true;
  return false;
}

bool contains_c1_control(std::u32string_view text) {
  for (char32_t c : text)
    if (c >= 0x80 && c <= 0x9F) return true;
  return false;
}

bool is_ascii(std::u32string_view text) {
  for (char32_t c : text)
    if (c >= 0x80) return false;
  return true;
}

// Encodes with one code page and decodes as UTF-8, with ftfy's byte-level repairs in between.
std::optional<std::u32string> reinterpret_as_utf8(const std::string& encoded, size_t codec_index) {
  std::string bytes = encoded;
  if (search(bytes, altered_utf8_patterns())) bytes = restore_byte_a0(bytes);
  if (kCodecs[codec_index].sloppy) bytes = replace_lossy_sequences(bytes);
  return decode_utf8_variants(bytes);
}

// Latin-1 text that was meant as Windows-1252 (strictly: undefined bytes make it fail).
std::optional<std::u32string> latin1_as_windows1252(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c >= 0x80 && c <= 0xFF && undefined_in_windows1252(static_cast<uint8_t>(c))) return std::nullopt;
    out.push_back(c >= 0x80 && c <= 0xFF ? decode_byte(kCodecs[kSloppyWindows1252], static_cast<uint8_t>(c)) : c);
  }
  return out;
}

// ftfy._fix_encoding_one_step_and_explain
std::u32string fix_encoding_one_step(std::u32string_view text) {
  if (text.empty() || is_ascii(text) || !is_bad(text)) return std::u32string(text);

  bool latin1_possible = false;
  for (size_t k = 0; k < kCodecs.size(); ++k) {
    const auto encoded = encode_single_byte(text, k);
    if (!encoded) continue;
    latin1_possible = latin1_possible || k == kLatin1;
    if (auto fixed = reinterpret_as_utf8(*encoded, k)) return *fixed;
  }

  if (contains_utf8_lookalike(text)) {
    std::u32string fixed = decode_inconsistent_utf8(text);
    if (fixed != text) return fixed;
  }

  // Latin-1 characters outside Windows-1252 are C1 controls, which were surely meant as
  // Windows-1252. (ftfy's check for "windows-1252" among the possible code pages never holds,
  // since that list names only the sloppy variant, so this is always tried.)
  if (latin1_possible) {
    if (auto fixed = latin1_as_windows1252(text); fixed && *fixed != text) return *fixed;
  }

  if (contains_c1_control(text)) return fix_c1_controls(text);
  return std::u32string(text);
}

}  // namespace

bool is_bad(std::u32string_view text) {
  const auto& rules = badness_rules();
  for (size_t i = 0; i < text.size(); ++i)
    for (const auto& rule : rules)
      if (rule.matches_at(text, i)) return true;
  return false;
}

std::u32string fix_encoding(std::u32string_view text) {
  std::u32string current(text);
  while (true) {
    std::u32string next = fix_encoding_one_step(current);
    if (next == current) return next;
    current = std::move(next);
  }
}

std::u32string fix_c1_controls(std::u32string_view text) {
  std::u32string out(text);
  for (char32_t& c : out)
    if (c >= 0x80 && c <= 0x9F) c = decode_byte(kCodecs[kSloppyWindows1252], static_cast<uint8_t>(c));
  return out;
}

}  // namespace lcmd::text
