// A whole file mapped read-only into memory. Model files are read through this so that
// tensors can be used in place (zero copy) and only the pages actually touched are read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>

namespace lcmd {

class MappedFile {
 public:
  MappedFile() = default;
  // Maps `path`. Throws ModelError("<path>: cannot open: <errno text>") and the like when the
  // file is missing, unreadable, not a regular file or cannot be mapped. An empty file gives an
  // empty mapping (data() == nullptr, size() == 0).
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const std::filesystem::path& path() const { return path_; }

  // Drops the whole pages inside [offset, offset + length) from this process's memory (they are
  // read again from the page cache if touched later). For data already copied elsewhere, so a
  // large file's pages do not stay resident next to the copy.
  void release(size_t offset, size_t length) const noexcept;
  // Asks the kernel to start reading [offset, offset + length) into the page cache in the
  // background (readahead), so later page faults find the pages there. Returns at once.
  void prefetch(size_t offset, size_t length) const noexcept;

 private:
  void unmap() noexcept;

  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace lcmd
