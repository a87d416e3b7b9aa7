// A local stand-in for the HuggingFace hub: one repository served in the hub's URL layout
// (/<repo>/resolve/<revision>/<path>) by an in-process HTTP server on 127.0.0.1, with the LFS files
// (*.safetensors) redirected, like the real hub, to a second server on another port (the "CDN")
// that honours Range requests. Faults can be switched on per file.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace httplib {
class Server;
}

namespace lcmd::test {

struct LoggedRequest {
  std::string server;         // "hub" or "cdn"
  std::string path;
  std::string authorization;  // the Authorization header, "" when absent
  std::string range;          // the Range header, "" when absent
};

class FakeHub {
 public:
  // Serves the files under `model_dir` as repository `repo` at revision "main".
  FakeHub(const std::filesystem::path& model_dir, std::string repo);
  ~FakeHub();
  FakeHub(const FakeHub&) = delete;
  FakeHub& operator=(const FakeHub&) = delete;

  std::string endpoint() const;  // http://127.0.0.1:PORT of the hub server

  // Serves `path` with the contents of the already served `existing` (e.g. a .fp16 variant).
  void add_copy(const std::string& path, const std::string& existing);
  void remove(const std::string& path);                 // answers 404 EntryNotFound
  void corrupt(const std::string& path);                // wrong bytes, right checksum header
  void require_token(const std::string& token);         // 401 without "Bearer <token>"

  std::string sha256_of(const std::string& path) const;
  std::vector<LoggedRequest> requests() const;

 private:
  struct Entry {
    std::filesystem::path file;  // in the layout dir
    bool lfs = false;
    std::string sha256, git_sha1;
    uint64_t size = 0;
    bool corrupt = false;
  };
  void add_file(const std::string& path, const std::filesystem::path& source);
  void serve_resolve(const std::string& repo, const std::string& revision, const std::string& path,
                     const std::string& authorization, void* response);
  void serve_blob(const std::string& sha256, void* response);
  void log(const std::string& server, const std::string& path, const std::string& authorization,
           const std::string& range);

  std::string repo_;
  TempDir layout_;  // <repo>/resolve/main/<path> for regular files, cdn/<sha256> for LFS blobs
  std::map<std::string, Entry> entries_;
  std::string token_;
  mutable std::mutex mutex_;
  std::vector<LoggedRequest> log_;
  std::unique_ptr<httplib::Server> hub_, cdn_;
  int hub_port_ = 0, cdn_port_ = 0;
  std::thread hub_thread_, cdn_thread_;
};

// A port on 127.0.0.1 where nothing listens (bound once, then released).
int closed_port();

}  // namespace lcmd::test
