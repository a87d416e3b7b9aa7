// The AWS Lambda custom runtime: a client of the Runtime API (version 2018-06-01) on
// libcurl, and the loop a bootstrap runs: init (load the model once; report a failure on
// /runtime/init/error), then GET /runtime/invocation/next → handle → POST .../response or
// .../error, forever.
#pragma once
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
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

// Every call is retried when the connection fails (refused, reset, closed without an answer)
// or the API answers 5xx; after `attempts` tries the runtime gives up (RuntimeApiError) and
// exits, so that Lambda replaces the execution environment.
struct RetryPolicy {
  int attempts = 5;                             // tries per call
  std::chrono::milliseconds first_backoff{50};  // doubled after each failed try: 50+100+200+400 ms
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
  // The Runtime API's status for the reply: 202 accepted; 413 too large; 400 an unknown or
  // already answered id (e.g. a retry of a post whose answer was lost).
  long post_response(const std::string& request_id, const std::string& body, const std::string& content_type);
  long post_error(const std::string& request_id, const std::string& error_type, const std::string& error_json);
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

// The name of GenerationThread's thread (and of the OpenMP threads it starts), as
// /proc/PID/task/TID/comm shows it.
inline constexpr const char* kGenerationThreadName = "lcmd-generate";

// One long-lived thread that runs the jobs given to run(), one at a time, while the caller
// waits. The runtime generates on it rather than on the main thread (see run_lambda).
class GenerationThread {
 public:
  GenerationThread();
  ~GenerationThread();  // joins the thread
  GenerationThread(const GenerationThread&) = delete;
  GenerationThread& operator=(const GenerationThread&) = delete;

  // Runs `job` on the thread and returns when it has finished; rethrows what it threw.
  void run(const std::function<void()>& job);

 private:
  void work();

  std::mutex mutex_;
  std::condition_variable changed_;
  std::function<void()> pending_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the members above exist
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
  bool log_prompts = false;  // LCMD_LOG_PROMPTS: the prompts in the invocation log lines
};

// Runs the runtime until the Runtime API fails. Returns the process exit code: 1 after an
// init error (reported to /runtime/init/error) or when the Runtime API cannot be used.
int run_lambda(const LambdaOptions& options);

}  // namespace lcmd::serve
