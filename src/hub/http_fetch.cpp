#include "hub/http_fetch.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <system_error>

#include "hub/hub_error.h"

namespace lcmd::hub {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxRedirects = 10;
using HeaderMap = std::map<std::string, std::string>;  // lower-case name -> value

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

std::string header(const HeaderMap& h, const std::string& name) {
  const auto it = h.find(name);
  return it == h.end() ? std::string() : it->second;
}

int64_t parse_size(const std::string& s) {
  if (s.empty() || s.size() > 18 ||
      !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c) != 0; }))
    return -1;
  return std::stoll(s);
}

// "bytes START-END/TOTAL" -> START and TOTAL (-1 when absent or "*").
void parse_content_range(const std::string& value, int64_t* start, int64_t* total) {
  *start = *total = -1;
  const std::string_view v = value;
  if (v.rfind("bytes ", 0) != 0) return;
  const size_t dash = v.find('-'), slash = v.find('/');
  if (dash != std::string_view::npos) *start = parse_size(std::string(v.substr(6, dash - 6)));
  if (slash != std::string_view::npos) *total = parse_size(std::string(v.substr(slash + 1)));
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* headers = static_cast<HeaderMap*>(user);
  const std::string_view line(data, size * count);
  if (line.rfind("HTTP/", 0) == 0) headers->clear();  // a new response (after a 100 Continue)
  const size_t colon = line.find(':');
  if (colon != std::string_view::npos) (*headers)[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  return size * count;
}

int write_all_at(int fd, const char* data, size_t size, uint64_t offset) {
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    data += n, size -= static_cast<size_t>(n), offset += static_cast<uint64_t>(n);
  }
  return 0;
}

// Where a response body goes. The status is known once the first body byte arrives: 200 and 206
// bodies go to the partial file, any other body (a redirect or an error page) is dropped.
class BodySink {
 public:
  BodySink(CURL* curl, const HeaderMap& headers, const fs::path& partial, uint64_t resume_from)
      : curl_(curl), headers_(headers), partial_(partial), resume_from_(resume_from) {}
  ~BodySink() {
    if (fd_ >= 0) ::close(fd_);
  }
  BodySink(const BodySink&) = delete;
  BodySink& operator=(const BodySink&) = delete;

  static size_t on_body(char* data, size_t size, size_t count, void* user) {
    return static_cast<BodySink*>(user)->write(data, size * count);
  }

  bool receiving_file() const { return fd_ >= 0; }
  uint64_t file_offset() const { return offset_; }
  const std::string& failure() const { return failure_; }

  // A 200/206 with an empty body never calls on_body: the file must still exist afterwards.
  bool ensure_file(long status) { return fd_ >= 0 || (status != 200 && status != 206) || open_file(status); }

 private:
  size_t write(const char* data, size_t size) {
    if (!started_) {
      started_ = true;
      long status = 0;
      curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &status);
      if ((status == 200 || status == 206) && !open_file(status)) return 0;
    }
    if (fd_ < 0) return size;  // not a file body: discard
    if (const int err = write_all_at(fd_, data, size, offset_)) {
      failure_ = "cannot write '" + partial_.string() + "': " + std::strerror(err);
      return 0;
    }
    offset_ += size;
    return size;
  }

  bool open_file(long status) {
    if (status == 206) {
      int64_t start = -1, total = -1;
      parse_content_range(header(headers_, "content-range"), &start, &total);
      if (start != static_cast<int64_t>(resume_from_)) {
        failure_ = "the server answered a request for bytes from " + std::to_string(resume_from_) +
                   " with Content-Range '" + header(headers_, "content-range") + "'";
        return false;
      }
    }
    std::error_code ec;
    fs::create_directories(partial_.parent_path(), ec);
    fd_ = ::open(partial_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      failure_ = "cannot create '" + partial_.string() + "': " + std::strerror(errno);
      return false;
    }
    offset_ = status == 206 ? resume_from_ : 0;
    if (status == 200 && ::ftruncate(fd_, 0) != 0) {  // the server ignored Range: start over
      failure_ = "cannot truncate '" + partial_.string() + "': " + std::strerror(errno);
      return false;
    }
    return true;
  }

  CURL* curl_;
  const HeaderMap& headers_;
  fs::path partial_;
  uint64_t resume_from_;
  bool started_ = false;
  int fd_ = -1;
  uint64_t offset_ = 0;
  std::string failure_;
};

// A one-line bar redrawn in place on stderr (only used when stderr is a terminal).
class ProgressBar {
 public:
  ProgressBar(const std::string& label, const BodySink& sink) : label_(label), sink_(sink) {}
  ~ProgressBar() {
    if (drawn_) std::fputc('\n', stderr);
  }

  static int on_progress(void* user, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
    static_cast<ProgressBar*>(user)->update(total, now);
    return 0;  // never cancels
  }

 private:
  void update(curl_off_t total, curl_off_t now) {
    if (!sink_.receiving_file()) return;
    const auto t = std::chrono::steady_clock::now();
    if (!drawn_) start_ = t, start_bytes_ = now;
    const bool done = total > 0 && now >= total;
    if (drawn_ && now == last_now_) return;  // curl also calls while no byte arrives
    if (drawn_ && !done && t - last_draw_ < std::chrono::milliseconds(200)) return;
    last_draw_ = t;
    last_now_ = now;
    drawn_ = true;
    const uint64_t got = static_cast<uint64_t>(now), offset = sink_.file_offset();
    const uint64_t base = offset > got ? offset - got : 0;  // bytes kept from an earlier run
    const double mb = 1e-6, have = (base + now) * mb, all = total > 0 ? (base + total) * mb : 0;
    const double seconds = std::chrono::duration<double>(t - start_).count();
    const double rate = seconds > 0 ? (now - start_bytes_) * mb / seconds : 0;
    const int width = 20, filled = all > 0 ? std::min(width, static_cast<int>(width * have / all)) : 0;
    std::fprintf(stderr, "\r%s [%-*s] %7.1f/%.1f MB %6.1f MB/s ", label_.c_str(), width,
                 std::string(filled, '#').c_str(), have, all, rate);
    std::fflush(stderr);
  }

  std::string label_;
  const BodySink& sink_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  curl_off_t start_bytes_ = 0, last_now_ = 0;
};

struct Hop {
  long status = 0;
  std::string location;  // absolute URL of a redirect
  HeaderMap headers;
};

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

std::string resume_hint(const fs::path& partial) {
  std::error_code ec;
  const auto size = fs::file_size(partial, ec);
  if (ec || size == 0) return "";
  return "; " + std::to_string(size) + " bytes are kept in '" + partial.string() + "', a re-run resumes";
}

// One request, no redirect following. Throws PullError on a transport failure.
Hop perform_hop(CURL* curl, const FetchRequest& req, const std::string& url, uint64_t resume_from) {
  Hop hop;
  std::unique_ptr<curl_slist, SlistDeleter> list;
  auto add = [&](const std::string& h) {
    if (curl_slist* grown = curl_slist_append(list.get(), h.c_str())) {
      (void)list.release();  // `grown` is the same list, one entry longer
      list.reset(grown);
    }
  };
  if (resume_from > 0) add("Range: bytes=" + std::to_string(resume_from) + "-");
  // The token only goes to the origin it was given for, never to a CDN on another host.
  if (!req.token.empty() && url_origin(url) == req.token_origin) add("Authorization: Bearer " + req.token);

  BodySink sink(curl, hop.headers, req.partial, resume_from);
  ProgressBar bar(req.progress_label, sink);
  char error_buffer[CURL_ERROR_SIZE] = "";
  curl_easy_reset(curl);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list.get());
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "lcmd-pull/0.1");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, req.connect_timeout_s);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, req.stall_timeout_s);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &hop.headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, BodySink::on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  if (req.progress) {
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, ProgressBar::on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &bar);
  }
  const CURLcode rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &hop.status);
  if (rc == CURLE_OK && !sink.ensure_file(hop.status)) throw PullError(req.label + ": " + sink.failure());
  if (rc != CURLE_OK) {
    const std::string why = !sink.failure().empty() ? sink.failure()
                            : error_buffer[0]       ? std::string(error_buffer)
                                                    : std::string(curl_easy_strerror(rc));
    throw PullError(req.label + ": download from " + url_origin(url) + " failed: " + why + resume_hint(req.partial));
  }
  if (hop.status >= 300 && hop.status < 400) {
    char* location = nullptr;
    curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &location);  // resolved against `url`
    if (location) hop.location = location;
  }
  return hop;
}

// Keeps what later steps need from each response: the hub's checksums and the expected size.
void record(FetchResult& result, const Hop& hop, bool from_token_origin) {
  if (result.linked_etag.empty()) result.linked_etag = header(hop.headers, "x-linked-etag");
  if (from_token_origin && !header(hop.headers, "etag").empty()) result.origin_etag = header(hop.headers, "etag");
  if (result.expected_size < 0) result.expected_size = parse_size(header(hop.headers, "x-linked-size"));
  if (!header(hop.headers, "x-error-code").empty()) result.error_code = header(hop.headers, "x-error-code");
  if (!header(hop.headers, "x-error-message").empty()) result.error_message = header(hop.headers, "x-error-message");
}

void record_final_size(FetchResult& result, const Hop& hop) {
  if (result.expected_size >= 0) return;
  if (hop.status == 206) {
    int64_t start = -1;
    parse_content_range(header(hop.headers, "content-range"), &start, &result.expected_size);
  } else if (hop.status == 200) {
    result.expected_size = parse_size(header(hop.headers, "content-length"));
  }
}

}  // namespace

std::string url_origin(const std::string& url) {
  init_curl_once();
  CURLU* u = curl_url();
  if (!u) return "";
  std::string origin;
  char *scheme = nullptr, *host = nullptr, *port = nullptr;
  if (curl_url_set(u, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK)
    origin = lower(scheme) + "://" + lower(host) + ":" + port;
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return origin;
}

FetchResult fetch_to_file(const FetchRequest& req) {
  init_curl_once();
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw PullError(req.label + ": cannot initialise libcurl");
  std::error_code ec;
  const uint64_t have = fs::is_regular_file(req.partial, ec) ? fs::file_size(req.partial, ec) : 0;

  FetchResult result;
  std::string url = req.url;
  for (int hops = 0;; ++hops) {
    const std::string origin = url_origin(url);
    if (origin.rfind("http://", 0) != 0 && origin.rfind("https://", 0) != 0)
      throw PullError(req.label + ": refusing to download from '" + url + "' (only http and https URLs)");
    const Hop hop = perform_hop(curl.get(), req, url, ec ? 0 : have);
    record(result, hop, origin == req.token_origin);
    result.status = hop.status;
    if (hop.status < 300 || hop.status >= 400) {
      record_final_size(result, hop);
      if (hop.status == 206) result.resumed_from = have;
      return result;
    }
    if (hop.location.empty())
      throw PullError(req.label + ": HTTP " + std::to_string(hop.status) + " redirect without a Location");
    if (hops == kMaxRedirects)
      throw PullError(req.label + ": more than " + std::to_string(kMaxRedirects) + " redirects");
    url = hop.location;
  }
}

}  // namespace lcmd::hub
