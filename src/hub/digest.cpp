#include "hub/digest.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <vector>

namespace lcmd::hub {

namespace {

bool is_hex(std::string_view s) {
  for (const char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// One EVP digest computation; the context is freed on every path.
class Hasher {
 public:
  explicit Hasher(DigestKind kind) : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    const EVP_MD* md = kind == DigestKind::sha256 ? EVP_sha256() : EVP_sha1();
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), md, nullptr) != 1) throw std::runtime_error("OpenSSL digest init failed");
  }
  void update(const void* data, size_t size) {
    if (EVP_DigestUpdate(ctx_.get(), data, size) != 1) throw std::runtime_error("OpenSSL digest update failed");
  }
  std::string hex() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), out, &size) != 1) throw std::runtime_error("OpenSSL digest final failed");
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned int i = 0; i < size; ++i) s += {digits[out[i] >> 4], digits[out[i] & 15]};
    return s;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

// git hashes a blob as sha1("blob <size>\0" + content).
void add_git_blob_header(Hasher& h, DigestKind kind, uint64_t size) {
  if (kind != DigestKind::git_blob_sha1) return;
  const std::string header = "blob " + std::to_string(size);
  h.update(header.c_str(), header.size() + 1);  // with the terminating NUL
}

void require_kind(DigestKind kind) {
  if (kind == DigestKind::none) throw std::invalid_argument("digest_hex: no digest kind");
}

}  // namespace

ExpectedDigest parse_hub_etag(std::string_view etag) {
  if (etag.substr(0, 2) == "W/") etag.remove_prefix(2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
  ExpectedDigest d;
  if (!is_hex(etag) || (etag.size() != 64 && etag.size() != 40)) return d;
  d.kind = etag.size() == 64 ? DigestKind::sha256 : DigestKind::git_blob_sha1;
  for (const char c : etag) d.hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return d;
}

std::string digest_hex(std::string_view bytes, DigestKind kind) {
  require_kind(kind);
  Hasher h(kind);
  add_git_blob_header(h, kind, bytes.size());
  h.update(bytes.data(), bytes.size());
  return h.hex();
}

std::string file_digest_hex(const std::filesystem::path& path, DigestKind kind) {
  require_kind(kind);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "cannot open '" + path.string() + "'");
  Hasher h(kind);
  add_git_blob_header(h, kind, std::filesystem::file_size(path));
  std::vector<char> chunk(1 << 20);
  for (;;) {
    const ssize_t n = ::read(fd, chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw std::system_error(err, std::generic_category(), "cannot read '" + path.string() + "'");
    }
    if (n == 0) break;
    h.update(chunk.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return h.hex();
}

const char* digest_name(DigestKind kind) {
  switch (kind) {
    case DigestKind::sha256: return "sha256";
    case DigestKind::git_blob_sha1: return "git sha1";
    case DigestKind::none: break;
  }
  return "none";
}

}  // namespace lcmd::hub
