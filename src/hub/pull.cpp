#include "hub/pull.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <new>
#include <memory>
#include <system_error>

#include "core/error.h"
#include "hub/digest.h"
#include "hub/http_fetch.h"
#include "hub/hub_error.h"

namespace lcmd::hub {

namespace fs = std::filesystem;

namespace {

// A repository name part as the hub allows it: letters, digits, '-', '_', '.', not "." or "..".
bool valid_name_part(const std::string& s) {
  if (s.empty() || s == "." || s == ".." || s.size() > 96) return false;
  for (const char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  return true;
}

std::string percent_encode(const std::string& s) {
  std::unique_ptr<char, void (*)(void*)> encoded(curl_easy_escape(nullptr, s.c_str(), static_cast<int>(s.size())),
                                                 curl_free);
  if (!encoded) throw std::bad_alloc();
  return encoded.get();
}

std::string label_of(const PullOptions& o, const std::string& path) { return o.repo + ": " + path; }

// Why the hub refused a file, in words the user can act on. The hub marks its errors with
// X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) and answers 401 for a
// repository that does not exist so as not to reveal private ones.
std::string http_error_message(const PullOptions& o, const std::string& path, const FetchResult& r) {
  const std::string where = label_of(o, path) + ": HTTP " + std::to_string(r.status) + ": ";
  const std::string token_hint = o.token.empty() ? "set HF_TOKEN to a token with read access if it is private or gated"
                                                 : "the token in HF_TOKEN was refused or lacks read access";
  if (r.error_code == "RepoNotFound" || (r.status == 401 && r.error_code.empty()))
    return where + "repository '" + o.repo + "' not found at " + o.endpoint + " (" + token_hint + ")";
  if (r.error_code == "RevisionNotFound") return where + "revision '" + o.revision + "' not found in " + o.repo;
  if (r.error_code == "EntryNotFound" || r.status == 404)
    return where + "file '" + path + "' not found in " + o.repo + " at revision '" + o.revision + "'" +
           (o.variant.empty() ? "" : " (is there a " + o.variant + " variant?)");
  if (r.error_code == "GatedRepo" || r.status == 403)
    return where + "access denied; for a gated repository accept its terms on the hub, and " + token_hint;
  return where + (!r.error_message.empty() ? r.error_message
                  : r.status >= 500   ? "the server failed; try again later"
                                      : "unexpected answer from the server");
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove(p, ec);
}

void check_size(const std::string& label, const fs::path& partial, const FetchResult& r) {
  const uint64_t size = fs::file_size(partial);
  if (r.expected_size < 0 || size == static_cast<uint64_t>(r.expected_size)) return;
  remove_quietly(partial);
  throw PullError(label + ": the download has " + std::to_string(size) + " bytes, the hub announced " +
                  std::to_string(r.expected_size) + "; it was deleted, a re-run downloads it again");
}

// Compares the file with the hub's checksum: the sha256 of an LFS file (X-Linked-Etag), else the
// git blob id of a regular file (the hub's own ETag). A mismatch deletes the download.
std::string verify(const std::string& label, const fs::path& partial, const FetchResult& r) {
  const ExpectedDigest expected = parse_hub_etag(!r.linked_etag.empty() ? r.linked_etag : r.origin_etag);
  if (expected.kind == DigestKind::none) return digest_name(expected.kind);
  const std::string actual = file_digest_hex(partial, expected.kind);
  if (actual != expected.hex) {
    remove_quietly(partial);
    throw PullError(label + ": checksum mismatch: the hub's " + digest_name(expected.kind) + " is " + expected.hex +
                    ", the download's is " + actual + "; it was deleted, a re-run downloads it again");
  }
  return digest_name(expected.kind);
}

// Makes the verified bytes durable, then puts them under their real name in one step.
void commit(const std::string& label, const fs::path& partial, const fs::path& target) {
  int err = 0;
  const int fd = ::open(partial.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) err = errno;
  if (fd >= 0) ::close(fd);
  if (err == 0 && ::rename(partial.c_str(), target.c_str()) != 0) err = errno;
  if (err != 0)
    throw PullError(label + ": cannot move '" + partial.string() + "' to '" + target.string() +
                    "': " + std::generic_category().message(err));
}

PulledFile pull_file(const PullOptions& o, const fs::path& dir, const std::string& path) {
  PulledFile out;
  out.path = path;
  const fs::path target = dir / path;
  if (fs::is_regular_file(target)) {
    out.bytes = fs::file_size(target);
    out.already_present = true;
    return out;
  }
  FetchRequest req;
  req.url = resolve_url(o, path);
  req.token_origin = url_origin(o.endpoint);
  req.token = o.token;
  req.partial = target.string() + ".incomplete";
  req.label = label_of(o, path);
  req.progress = o.progress;
  req.progress_label = path;
  req.connect_timeout_s = o.connect_timeout_s;
  req.stall_timeout_s = o.stall_timeout_s;
  const FetchResult r = fetch_to_file(req);
  // 416: a resumed request for bytes past the end, i.e. an earlier run had every byte already.
  const bool complete_before = r.status == 416 && fs::is_regular_file(req.partial);
  if (r.status != 200 && r.status != 206 && !complete_before) throw PullError(http_error_message(o, path, r));
  check_size(req.label, req.partial, r);
  out.verified = verify(req.label, req.partial, r);
  commit(req.label, req.partial, target);
  out.bytes = fs::file_size(target);
  out.resumed_from = complete_before ? out.bytes : r.resumed_from;
  return out;
}

}  // namespace

void apply_environment(PullOptions& options) {
  if (const char* endpoint = std::getenv("HF_ENDPOINT"); endpoint && *endpoint) options.endpoint = endpoint;
  while (options.endpoint.size() > 1 && options.endpoint.back() == '/') options.endpoint.pop_back();
  if (const char* token = std::getenv("HF_TOKEN"); token && *token) options.token = token;
}

void validate(const PullOptions& o) {
  const size_t slash = o.repo.find('/');
  const bool repo_ok = slash == std::string::npos
                           ? valid_name_part(o.repo)
                           : valid_name_part(o.repo.substr(0, slash)) && valid_name_part(o.repo.substr(slash + 1));
  if (!repo_ok)
    throw InputError("repository must be 'owner/name' (letters, digits, '-', '_', '.'), got '" + o.repo + "'");
  if (o.revision.empty()) throw InputError("--revision must not be empty");
  if (!o.variant.empty() && o.variant != "fp16")
    throw InputError("--variant must be fp16 (or absent), got '" + o.variant + "'");
  const std::string origin = url_origin(o.endpoint);
  if (origin.rfind("http://", 0) != 0 && origin.rfind("https://", 0) != 0)
    throw InputError("HF_ENDPOINT must be an http:// or https:// URL, got '" + o.endpoint + "'");
}

std::vector<std::string> model_files(const std::string& variant) {
  const std::string weights = variant.empty() ? ".safetensors" : "." + variant + ".safetensors";
  return {"model_index.json",
          "scheduler/scheduler_config.json",
          "tokenizer/vocab.json",
          "tokenizer/merges.txt",
          "tokenizer/tokenizer_config.json",
          "tokenizer/special_tokens_map.json",
          "text_encoder/config.json",
          "unet/config.json",
          "vae/config.json",
          "text_encoder/model" + weights,
          "vae/diffusion_pytorch_model" + weights,
          "unet/diffusion_pytorch_model" + weights};
}

std::string resolve_url(const PullOptions& o, const std::string& path) {
  return o.endpoint + "/" + o.repo + "/resolve/" + percent_encode(o.revision) + "/" + path;
}

fs::path target_dir(const PullOptions& o) {
  if (!o.dir.empty()) return o.dir;
  const size_t slash = o.repo.find('/');
  return slash == std::string::npos ? o.repo : o.repo.substr(slash + 1);
}

std::vector<PulledFile> pull_model(const PullOptions& options, const std::function<void(const PulledFile&)>& on_file) {
  validate(options);
  const fs::path dir = target_dir(options);
  std::vector<PulledFile> pulled;
  for (const std::string& path : model_files(options.variant)) {
    pulled.push_back(pull_file(options, dir, path));
    if (on_file) on_file(pulled.back());
  }
  return pulled;
}

}  // namespace lcmd::hub
