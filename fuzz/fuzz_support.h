// What every libFuzzer target shares: where the read-only reference data lives (for the targets
// that need the real CLIP vocabulary), and a file holding the fuzz input for parsers that read
// files. Nothing here writes outside memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>

namespace lcmd::fuzz {

// $LCMD_SHARED when set, else the ../shared next to the source tree (as the tests use).
std::filesystem::path shared_dir();

// An anonymous in-memory file (memfd), rewritten with each input and reachable by a path, so
// parsers that open files by name (SafetensorsFile::open) run unchanged on fuzz inputs.
class MemoryFile {
 public:
  MemoryFile();
  ~MemoryFile();
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  // Replaces the content with these bytes and returns the path that opens it.
  const std::filesystem::path& write(const uint8_t* data, size_t size);

 private:
  int fd_;
  std::filesystem::path path_;
};

}  // namespace lcmd::fuzz
