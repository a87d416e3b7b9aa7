// An error a front end answers with: the HTTP status, a stable machine-readable type, and a
// message that names the field and its allowed range. Every front end (HTTP server, Lambda
// Function URL, direct Lambda invoke) turns the same ApiError into its own wire format.
#pragma once
#include <optional>
#include <stdexcept>
#include <string>

namespace lcmd::serve {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, const std::string& message)
      : std::runtime_error(message), status_(status), type_(std::move(type)) {}

  int status() const { return status_; }
  const std::string& type() const { return type_; }
  // For 429: seconds after which a retry has a fair chance (the Retry-After header).
  std::optional<int> retry_after_seconds;

 private:
  int status_;
  std::string type_;
};

// The types are OpenAI-style snake_case names so clients of either API can switch on them.
inline ApiError invalid_request(const std::string& message) { return {400, "invalid_request_error", message}; }
inline ApiError not_found(const std::string& message) { return {404, "not_found", message}; }
inline ApiError method_not_allowed(const std::string& message) { return {405, "method_not_allowed", message}; }
inline ApiError length_required(const std::string& message) { return {411, "length_required", message}; }
inline ApiError payload_too_large(const std::string& message) { return {413, "payload_too_large", message}; }
inline ApiError queue_full(const std::string& message, int retry_after_seconds) {
  ApiError e(429, "queue_full", message);
  e.retry_after_seconds = retry_after_seconds;
  return e;
}
inline ApiError internal_error(const std::string& message) { return {500, "internal_error", message}; }
inline ApiError shutting_down(const std::string& message) { return {503, "unavailable", message}; }
inline ApiError deadline_exceeded(const std::string& message) { return {504, "timeout", message}; }

}  // namespace lcmd::serve
