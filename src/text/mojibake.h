// Mojibake repair as ftfy 6.1.1 does it (`ftfy.fix_encoding` with the default configuration):
// text that was UTF-8, decoded with a single-byte code page (Windows-125x, Latin-1, MacRoman,
// cp437) and so turned into "cafÃ©", is detected by ftfy's badness heuristic and decoded back.
//
// Exactness matters because CLIPTokenizer runs ftfy.fix_text on every prompt: any text this
// leaves different from ftfy gets different token ids than the reference pipeline.
#pragma once
#include <string>
#include <string_view>

namespace lcmd::text {

// ftfy.badness.is_bad: does the text contain a character sequence typical of mojibake?
bool is_bad(std::u32string_view text);

// ftfy.fix_encoding: repeats one repair step until the text stops changing.
std::u32string fix_encoding(std::u32string_view text);

// ftfy.fixes.fix_c1_controls: C1 control characters (U+0080..U+009F) become the Windows-1252
// characters of the same byte, as web browsers read them; bytes Windows-1252 leaves
// undefined stay as they are.
std::u32string fix_c1_controls(std::u32string_view text);

}  // namespace lcmd::text
