#include "fuzz_support.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace lcmd::fuzz {

std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("LCMD_SHARED"); env && *env) return env;
  return LCMD_SHARED_DIR;
}

MemoryFile::MemoryFile() : fd_(::memfd_create("lcmd-fuzz-input", MFD_CLOEXEC)) {
  if (fd_ < 0) throw std::runtime_error("memfd_create failed");
  path_ = "/proc/self/fd/" + std::to_string(fd_);
}

MemoryFile::~MemoryFile() { ::close(fd_); }

const std::filesystem::path& MemoryFile::write(const uint8_t* data, size_t size) {
  if (::ftruncate(fd_, 0) != 0) throw std::runtime_error("ftruncate failed");
  size_t written = 0;
  while (written < size) {
    const ssize_t n = ::pwrite(fd_, data + written, size - written, static_cast<off_t>(written));
    if (n <= 0) throw std::runtime_error("pwrite to the memfd failed");
    written += static_cast<size_t>(n);
  }
  return path_;
}

}  // namespace lcmd::fuzz
