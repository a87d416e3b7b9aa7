// Small file helpers: crash-safe replacement of a file, and reading a whole text file.
#pragma once
#include <cstddef>
#include <filesystem>
#include <functional>
#include <ostream>
#include <string>

namespace lcmd {

// Replaces `path` with new contents so that readers (and a crash at any moment) see either the
// old file or the complete new one, never a partial write: the bytes go to a uniquely named
// temporary file in the same directory, are fsync'ed, and the temporary is renamed over `path`.
// On any failure the temporary file is removed, `path` is left untouched, and the error is
// thrown: std::system_error naming the file and the errno text for I/O failures, or whatever the
// writer callback threw, unchanged.
void write_file_atomic(const std::filesystem::path& path, const void* data, size_t size);
void write_file_atomic(const std::filesystem::path& path, const std::function<void(std::ostream&)>& writer);

// The whole file as a string. Throws ModelError("<path>: cannot open: <errno text>") or
// ("<path>: cannot read: ...") when it cannot be read.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace lcmd
