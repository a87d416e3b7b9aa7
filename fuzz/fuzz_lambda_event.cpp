// A Lambda invocation payload through LambdaHandler::handle: the Function URL / HTTP API 2.0
// event envelope (routing, headers, the base64 body, the stage prefix, the size limit) and the
// direct-invoke fallback, down to the request parsers. The reply must always be well-formed:
// valid JSON for a Function URL (a statusCode from the documented set) or a function error.
//
// No model is loaded: every invocation carries a deadline that has already passed, so a valid
// request stops at the deadline check (504) before the engine would run. That keeps each input
// at parser speed; the engine is covered by the test suite.
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "serve/image_service.h"
#include "serve/lambda_events.h"

namespace {

using nlohmann::json;
using lcmd::serve::LambdaReply;

void check(bool condition) {
  if (!condition) std::abort();
}

constexpr int64_t kNowMs = 1'700'000'000'000;

lcmd::serve::LambdaHandler& handler() {
  static lcmd::serve::ImageService service(std::shared_ptr<const lcmd::Engine>(), lcmd::serve::ServiceOptions{});
  static lcmd::serve::LambdaHandler instance(service, lcmd::serve::LambdaSettings{}, [] { return kNowMs; });
  return instance;
}

void check_reply(const LambdaReply& reply) {
  static const std::set<int> statuses = {200, 400, 404, 405, 413, 500, 504};
  check(statuses.count(reply.status) == 1);
  const json payload = json::parse(reply.payload, nullptr, /*allow_exceptions=*/false);
  check(payload.is_object());
  if (reply.function_error) {
    check(payload.contains("errorMessage") && payload.contains("errorType"));
  } else {
    check(payload.at("statusCode").get<int>() == reply.status);
    check(payload.at("body").is_string() && payload.at("headers").is_object());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lcmd::serve::Invocation invocation;
  invocation.request_id = "fuzz";
  invocation.deadline_unix_ms = kNowMs - 1;  // already past: nothing reaches the engine
  invocation.event.assign(reinterpret_cast<const char*>(data), size);
  check_reply(handler().handle(invocation));
  return 0;
}
