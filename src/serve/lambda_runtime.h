// The AWS Lambda custom runtime: a client of the Runtime API (version 2018-06-01) on
// libcurl, and the loop a bootstrap runs: init (load the model once; report a failure on
// /runtime/init/error), then GET /runtime/invocation/next → handle → POST .../response or
// .../error, forever.
#pragma once
#include <chrono>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "lcmd/engine.h"
#include "serve/image_service.h"
#include "serve/lambda_events.h"

namespace lcmd::serve {

// The Runtime API cannot be used any more (unreachable after retries, or it reported a
// non-recoverable state): the runtime must exit.
class RuntimeApiError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RetryPolicy {
  int attempts = 5;                              // tries per call for connection failures
  std::chrono::milliseconds first_backoff{100};  // doubled after each failed try
};

class RuntimeApiClient {
 public:
  // endpoint: host:port, the value of AWS_LAMBDA_RUNTIME_API.
  explicit RuntimeApiClient(const std::string& endpoint, RetryPolicy retry = {});
  ~RuntimeApiClient();
  RuntimeApiClient(const RuntimeApiClient&) = delete;
  RuntimeApiClient& operator=(const RuntimeApiClient&) = delete;

  // Blocks (no timeout: Lambda may freeze the process while it waits) until an event comes.
  Invocation next();
  // False when the Runtime API refused the reply (e.g. 413 too large, 400 unknown id).
  bool post_response(const std::string& request_id, const std::string& body, const std::string& content_type);
  bool post_error(const std::string& request_id, const std::string& error_type, const std::string& error_json);
  void post_init_error(const std::string& error_type, const std::string& message);

 private:
  struct Reply {
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // names lower-cased
  };
  Reply perform(const std::string& method, const std::string& path, const std::string& body,
                const std::vector<std::string>& headers);
  Reply perform_with_retries(const std::string& method, const std::string& path, const std::string& body,
                             const std::vector<std::string>& headers);

  std::string base_url_;
  RetryPolicy retry_;
  void* curl_;  // one CURL easy handle for every call, so the connection is reused
};

struct LambdaOptions {
  std::string runtime_api;          // AWS_LAMBDA_RUNTIME_API
  std::filesystem::path model_dir;  // LCMD_MODEL, default /opt/sd_model
  EngineOptions engine;
  ServiceOptions service;
  LambdaSettings settings;
  std::string function_name;  // AWS_LAMBDA_FUNCTION_NAME, the metrics dimension
  std::string metrics_namespace = "lcmd";
  RetryPolicy retry;
};

// Runs the runtime until the Runtime API fails. Returns the process exit code: 1 after an
// init error (reported to /runtime/init/error) or when the Runtime API cannot be used.
int run_lambda(const LambdaOptions& options);

}  // namespace lcmd::serve
