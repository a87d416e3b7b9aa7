// The checksums the HuggingFace hub publishes for a file, and computing them over a local file.
// LFS files (the weights) carry their sha256 in the `X-Linked-Etag` header; regular files (configs,
// tokenizer) carry their git blob id (sha1 of "blob <size>\0" + content) in the ETag.
#pragma once
#include <filesystem>
#include <string>
#include <string_view>

namespace lcmd::hub {

enum class DigestKind { none, sha256, git_blob_sha1 };

struct ExpectedDigest {
  DigestKind kind = DigestKind::none;
  std::string hex;  // lower-case hex, empty for DigestKind::none
};

// Reads an ETag value: a quoted (possibly weak, W/"...") hex string. 64 hex digits are a sha256,
// 40 a git blob sha1; anything else (a CDN's own ETag) cannot be checked and gives DigestKind::none.
ExpectedDigest parse_hub_etag(std::string_view etag);

// Lower-case hex digest of a byte string or of a file's contents (OpenSSL EVP).
// Throws std::system_error naming the file when it cannot be read.
std::string digest_hex(std::string_view bytes, DigestKind kind);
std::string file_digest_hex(const std::filesystem::path& path, DigestKind kind);

const char* digest_name(DigestKind kind);  // "sha256", "git sha1", "none"

}  // namespace lcmd::hub
