// One file over HTTP(S) with libcurl into a `.incomplete` file: redirects followed by hand (so the
// bearer token only goes to the origin it belongs to), Range-resumed, with an optional progress bar.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

namespace lcmd::hub {

struct FetchRequest {
  std::string url;
  // The origin (scheme://host:port) that may see the bearer token. A redirect to any other origin
  // (the hub's LFS CDN) is requested without it, as huggingface_hub does.
  std::string token_origin;
  std::string token;  // empty: anonymous
  // Bytes are written here, appended to what is already there when the server honours a Range
  // request. Created (with its parent directories) only once a body starts arriving.
  std::filesystem::path partial;
  std::string label;           // "<repo>: <file>" for error messages
  bool progress = false;       // a progress bar on stderr, labelled with progress_label
  std::string progress_label;
  long connect_timeout_s = 30;
  long stall_timeout_s = 60;  // give up when less than 1 byte/s arrives for this long
};

struct FetchResult {
  long status = 0;               // of the last response: 200, 206, 416 or an error status
  std::string linked_etag;       // X-Linked-Etag of any hop (the hub sets it on LFS redirects)
  std::string origin_etag;       // ETag of the last response from the token origin (the hub itself)
  std::string error_code;        // X-Error-Code / X-Error-Message of an error response from the hub
  std::string error_message;
  int64_t expected_size = -1;    // X-Linked-Size, else the total of Content-Range / Content-Length
  uint64_t resumed_from = 0;     // bytes that were already in `partial` and were kept
};

// The scheme://host:port of a URL, lower-case with the default port filled in; empty if unparsable.
std::string url_origin(const std::string& url);

// Performs the download. HTTP error statuses are returned (nothing is written for them); transport
// failures (no connection, a stalled or cut transfer, a full disk) throw PullError naming `label`.
FetchResult fetch_to_file(const FetchRequest& request);

}  // namespace lcmd::hub
