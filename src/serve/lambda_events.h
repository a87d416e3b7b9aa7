// One AWS Lambda invocation, from event to reply, without any networking: the Runtime API
// loop (lambda_runtime.h) feeds events in and posts replies out. Two event shapes:
//  - a direct invoke, whose payload is the request JSON itself, answered with the response
//    JSON; a failure is a function error ({"errorMessage", "errorType"} on /error);
//  - a Function URL / API Gateway HTTP API (payload format 2.0) event, answered with
//    {statusCode, headers, body, isBase64Encoded}: 400 bad input, 404/405 routing, 413 over
//    a size limit, 500 engine fault, 504 deadline. "Accept: image/png" answers the raw PNG.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "serve/deadline.h"
#include "serve/image_service.h"

namespace lcmd::serve {

struct Invocation {
  std::string request_id;                   // Lambda-Runtime-Aws-Request-Id
  std::optional<int64_t> deadline_unix_ms;  // Lambda-Runtime-Deadline-Ms
  std::string function_arn;                 // Lambda-Runtime-Invoked-Function-Arn
  std::string trace_id;                     // Lambda-Runtime-Trace-Id
  std::string event;                        // the payload
};

struct LambdaSettings {
  size_t max_body_bytes = size_t(64) << 10;     // Function URL request bodies, as the HTTP server
  size_t max_response_bytes = 6 * 1024 * 1024;  // Lambda's synchronous response payload limit
  int64_t deadline_margin_ms = 500;             // kept free for encoding and posting the reply
};

struct LambdaReply {
  std::string payload;                     // the /response body, or the /error body
  bool function_error = false;             // post to /error instead of /response
  std::string error_type;                  // the error's type (errorType of a function error)
  int status = 200;                        // the HTTP status the reply stands for (logs, metrics)
  std::string event_kind;                  // "direct" or "http"
  std::optional<GenerateRequest> request;  // when the request was valid (for the log line)
  std::optional<GenerateOutcome> outcome;  // when an image was made (its png is dropped)
};

class LambdaHandler {
 public:
  LambdaHandler(ImageService& service, const LambdaSettings& settings, DeadlineGuard::Clock clock = unix_now_ms);

  LambdaReply handle(const Invocation& invocation);

 private:
  LambdaReply handle_direct(const Invocation& invocation);
  LambdaReply handle_http(const Invocation& invocation, const nlohmann::json& event);
  GenerateOutcome run(const GenerateRequest& request, const Invocation& invocation);
  // A successful reply: the payload within the response limit, the request and the outcome
  // (without its image) for the log line.
  LambdaReply success_reply(const char* event_kind, std::string payload, const GenerateRequest& request,
                            const GenerateOutcome& outcome) const;

  ImageService& service_;
  LambdaSettings settings_;
  DeadlineGuard::Clock clock_;
  double tail_estimate_ms_ = -1;  // VAE decode + PNG of the last run; unknown before the first
};

// The invocation's log line: one JSON object that is both the request log (request id,
// prompt length, size, steps, seed, stage timings, peak RSS) and a CloudWatch Embedded Metric
// Format record (latency and stage times as metrics). The prompts themselves only with
// log_prompts (LCMD_LOG_PROMPTS=1): they may be private.
std::string invocation_log_line(const Invocation& invocation, const LambdaReply& reply, double latency_ms,
                                const std::string& function_name, const std::string& metrics_namespace,
                                int64_t timestamp_unix_ms, bool log_prompts = false);

}  // namespace lcmd::serve
