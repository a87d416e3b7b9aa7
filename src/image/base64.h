// Base64 (RFC 4648 section 4: standard alphabet, '=' padding), for images in JSON replies
// and requests.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lcmd {

std::string base64_encode(const std::vector<uint8_t>& bytes);

// Strict decoding: only the standard alphabet, length a multiple of 4, '=' only as the final
// one or two characters, and zero padding bits (so every input has one canonical encoding).
// Throws InputError naming the problem and its position. Whitespace is not skipped.
std::vector<uint8_t> base64_decode(std::string_view text);

}  // namespace lcmd
