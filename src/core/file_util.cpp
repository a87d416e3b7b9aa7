#include "core/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <streambuf>
#include <system_error>
#include <vector>

#include "core/error.h"

namespace lcmd {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void throw_io_error(int err, const std::string& what) {
  throw std::system_error(err ? err : EIO, std::generic_category(), what);
}

// Writes all of [data, data + size), retrying partial writes and EINTR. Returns 0 or an errno.
int write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

// A name no other writer uses at the same time: the pid separates processes, the counter
// threads of one process, the clock reruns after a crash that left a stale temporary behind.
std::string unique_suffix() {
  static std::atomic<unsigned> counter{0};
  const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
  return std::to_string(::getpid()) + "." + std::to_string(counter++) + "." + std::to_string(ticks);
}

// A uniquely named file next to the target. Removed on destruction unless commit() renamed it.
class TempFile {
 public:
  explicit TempFile(const fs::path& target) : target_(target) {
    const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    for (int attempt = 0; attempt < 100; ++attempt) {
      path_ = dir / ("." + target.filename().string() + ".tmp." + unique_suffix());
      // 0666 filtered by the umask: the same permissions a plain create of `target` gets.
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0) return;
      if (errno != EEXIST) break;
    }
    throw_io_error(errno, "cannot write '" + target.string() + "': cannot create a temporary file in '" +
                              dir.string() + "'");
  }

  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }

  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  int fd() const { return fd_; }

  [[noreturn]] void fail(int err, const char* step) const {
    throw_io_error(err, "cannot write '" + target_.string() + "': " + step + " '" + path_.string() + "'");
  }

  // Makes the data durable, then atomically puts the file in place of the target.
  void commit() {
    if (::fsync(fd_) != 0) fail(errno, "fsync failed for");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail(errno, "close failed for");
    if (::rename(path_.c_str(), target_.c_str()) != 0) fail(errno, "cannot rename");
    committed_ = true;
    sync_directory();
  }

 private:
  // Persists the rename itself. Best effort: the new file is already in place, so a failure here
  // (some file systems refuse fsync on directories) must not report the write as failed.
  void sync_directory() const {
    const fs::path dir = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return;
    ::fsync(dfd);
    ::close(dfd);
  }

  fs::path target_;
  fs::path path_;
  int fd_ = -1;
  bool committed_ = false;
};

// A buffered std::streambuf over a file descriptor that remembers the errno of a failed write,
// so the caller can report why the stream went bad.
class FdStreamBuf : public std::streambuf {
 public:
  explicit FdStreamBuf(int fd) : fd_(fd), buffer_(1 << 16) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
  int error() const { return error_; }

 protected:
  int_type overflow(int_type ch) override {
    if (flush_buffer() != 0) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }

  std::streamsize xsputn(const char* s, std::streamsize n) override {
    // Large blocks (tensor data) skip the buffer to avoid a copy.
    if (n >= static_cast<std::streamsize>(buffer_.size())) {
      if (flush_buffer() != 0) return 0;
      if ((error_ = write_all(fd_, s, static_cast<size_t>(n))) != 0) return 0;
      return n;
    }
    return std::streambuf::xsputn(s, n);
  }

  int sync() override { return flush_buffer() == 0 ? 0 : -1; }

 private:
  int flush_buffer() {
    if (error_ != 0) return error_;
    error_ = write_all(fd_, pbase(), static_cast<size_t>(pptr() - pbase()));
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return error_;
  }

  int fd_;
  std::vector<char> buffer_;
  int error_ = 0;
};

}  // namespace

void write_file_atomic(const fs::path& path, const void* data, size_t size) {
  TempFile temp(path);
  if (const int err = write_all(temp.fd(), static_cast<const char*>(data), size)) temp.fail(err, "write failed for");
  temp.commit();
}

void write_file_atomic(const fs::path& path, const std::function<void(std::ostream&)>& writer) {
  TempFile temp(path);
  FdStreamBuf buf(temp.fd());
  std::ostream out(&buf);
  writer(out);  // an exception leaves through ~TempFile, which removes the temporary
  out.flush();
  if (!out) temp.fail(buf.error(), "write failed for");
  temp.commit();
}

std::string read_text_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ModelError(path.string() + ": cannot open: " + std::strerror(errno));
  std::string text;
  char chunk[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw ModelError(path.string() + ": cannot read: " + std::strerror(err));
    }
    if (n == 0) break;
    text.append(chunk, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

}  // namespace lcmd
