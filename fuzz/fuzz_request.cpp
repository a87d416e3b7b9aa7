// An HTTP request body (what `lcmd serve` hands its parsers, and a direct Lambda invoke's
// payload) through both schemas: the native /v1/generate one and the OpenAI Images one. Each
// either gives a request the engine accepts or an ApiError (400) whose JSON answer can be written.
#include <cstdlib>
#include <string_view>

#include "lcmd/engine.h"
#include "serve/request.h"

namespace {

void check(bool condition) {
  if (!condition) std::abort();
}

template <typename Parse>
void parse_or_refuse(Parse parse) {
  const lcmd::serve::RequestLimits limits;
  try {
    const lcmd::GenerateRequest request = parse(limits);
    lcmd::validate(request);  // what the schema accepts, the engine must accept too
    check(request.width <= limits.max_side && request.height <= limits.max_side && request.steps <= limits.max_steps);
  } catch (const lcmd::serve::ApiError& e) {
    check(e.status() == 400);
    const std::string answer = lcmd::serve::error_response_json(e);
    check(!answer.empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  parse_or_refuse([&](const lcmd::serve::RequestLimits& l) { return lcmd::serve::parse_generate_request(body, l); });
  parse_or_refuse([&](const lcmd::serve::RequestLimits& l) { return lcmd::serve::parse_openai_image_request(body, l); });
  return 0;
}
