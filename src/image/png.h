// PNG encoding in memory (libpng), for the images the engine returns.
#pragma once
#include <cstdint>
#include <vector>

namespace lcmd {

// rgb: width*height*3 bytes, RGB interleaved, rows top to bottom. Returns a complete 8-bit
// RGB PNG file. Throws std::invalid_argument for non-positive sizes, std::runtime_error if
// libpng fails.
std::vector<uint8_t> encode_png(const uint8_t* rgb, int width, int height);

}  // namespace lcmd
