#include "hub/fake_hub.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "hub/digest.h"
#include "serve/httplib_include.h"

namespace lcmd::test {

namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("fake hub: cannot read " + p.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << bytes;
  if (!out) throw std::runtime_error("fake hub: cannot write " + p.string());
}

int start(httplib::Server& server, std::thread& thread) {
  const int port = server.bind_to_any_port("127.0.0.1");
  if (port <= 0) throw std::runtime_error("fake hub: cannot bind 127.0.0.1");
  thread = std::thread([&server] { server.listen_after_bind(); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!server.is_running() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return port;
}

}  // namespace

FakeHub::FakeHub(const fs::path& model_dir, std::string repo) : repo_(std::move(repo)) {
  for (const auto& e : fs::recursive_directory_iterator(model_dir))
    if (e.is_regular_file()) add_file(fs::relative(e.path(), model_dir).generic_string(), e.path());

  hub_ = std::make_unique<httplib::Server>();
  cdn_ = std::make_unique<httplib::Server>();
  hub_->Get(R"(/(.+)/resolve/([^/]+)/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    log("hub", req.path, req.get_header_value("Authorization"), req.get_header_value("Range"));
    serve_resolve(req.matches[1], req.matches[2], req.matches[3], req.get_header_value("Authorization"), &res);
  });
  cdn_->Get(R"(/cdn/([0-9a-f]{64}))", [this](const httplib::Request& req, httplib::Response& res) {
    log("cdn", req.path, req.get_header_value("Authorization"), req.get_header_value("Range"));
    serve_blob(req.matches[1], &res);
  });
  hub_port_ = start(*hub_, hub_thread_);
  cdn_port_ = start(*cdn_, cdn_thread_);
}

FakeHub::~FakeHub() {
  hub_->stop();
  cdn_->stop();
  if (hub_thread_.joinable()) hub_thread_.join();
  if (cdn_thread_.joinable()) cdn_thread_.join();
}

std::string FakeHub::endpoint() const { return "http://127.0.0.1:" + std::to_string(hub_port_); }

void FakeHub::add_file(const std::string& path, const fs::path& source) {
  const std::string bytes = read_bytes(source);
  Entry e;
  e.lfs = path.size() > 12 && path.substr(path.size() - 12) == ".safetensors";
  e.sha256 = hub::digest_hex(bytes, hub::DigestKind::sha256);
  e.git_sha1 = hub::digest_hex(bytes, hub::DigestKind::git_blob_sha1);
  e.size = bytes.size();
  e.file = e.lfs ? layout_.path() / "cdn" / e.sha256 : layout_.path() / repo_ / "resolve" / "main" / path;
  write_bytes(e.file, bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  entries_[path] = e;
}

void FakeHub::add_copy(const std::string& path, const std::string& existing) {
  fs::path source;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    source = entries_.at(existing).file;
  }
  add_file(path, source);
}

void FakeHub::remove(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.erase(path);
}

void FakeHub::corrupt(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.at(path).corrupt = true;
}

void FakeHub::require_token(const std::string& token) {
  std::lock_guard<std::mutex> lock(mutex_);
  token_ = token;
}

std::string FakeHub::sha256_of(const std::string& path) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.at(path).sha256;
}

std::vector<LoggedRequest> FakeHub::requests() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return log_;
}

void FakeHub::log(const std::string& server, const std::string& path, const std::string& authorization,
                  const std::string& range) {
  std::lock_guard<std::mutex> lock(mutex_);
  log_.push_back({server, path, authorization, range});
}

// The hub's answers: 401 RepoNotFound for an unknown (or unauthorised) repository, 404 for an
// unknown revision or file, a 302 to the CDN with X-Linked-Etag/X-Linked-Size for LFS files, and
// the file itself with its git blob id as ETag for regular files.
void FakeHub::serve_resolve(const std::string& repo, const std::string& revision, const std::string& path,
                            const std::string& authorization, void* response) {
  auto& res = *static_cast<httplib::Response*>(response);
  std::unique_lock<std::mutex> lock(mutex_);
  if (repo != repo_ || (!token_.empty() && authorization != "Bearer " + token_)) {
    res.status = 401;
    res.set_header("X-Error-Code", "RepoNotFound");
    res.set_header("X-Error-Message", "Repository not found");
    return;
  }
  const auto it = entries_.find(path);
  if (revision != "main" || it == entries_.end()) {
    res.status = 404;
    res.set_header("X-Error-Code", revision != "main" ? "RevisionNotFound" : "EntryNotFound");
    return;
  }
  const Entry e = it->second;
  lock.unlock();
  if (e.lfs) {
    res.status = 302;
    res.set_header("Location", "http://127.0.0.1:" + std::to_string(cdn_port_) + "/cdn/" + e.sha256);
    res.set_header("X-Linked-Etag", "\"" + e.sha256 + "\"");
    res.set_header("X-Linked-Size", std::to_string(e.size));
    return;
  }
  res.set_header("ETag", "\"" + e.git_sha1 + "\"");
  res.set_content(read_bytes(e.file), "application/octet-stream");  // httplib answers Range with 206
}

void FakeHub::serve_blob(const std::string& sha256, void* response) {
  auto& res = *static_cast<httplib::Response*>(response);
  std::unique_lock<std::mutex> lock(mutex_);
  const Entry* found = nullptr;
  for (const auto& [path, e] : entries_)
    if (e.sha256 == sha256) found = &e;
  if (!found) {
    res.status = 404;
    return;
  }
  const Entry e = *found;
  lock.unlock();
  std::string bytes = read_bytes(e.file);
  if (e.corrupt) bytes[bytes.size() / 2] ^= 0x55;
  res.set_header("ETag", "\"cdn-" + e.sha256.substr(0, 8) + "\"");  // a CDN's own ETag, not a checksum
  res.set_content(bytes, "application/octet-stream");
}

int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("cannot find a free port");
  ::close(fd);  // bound but never listening, and now released
  return ntohs(addr.sin_port);
}

}  // namespace lcmd::test
