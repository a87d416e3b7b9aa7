// The request/response core every front end shares: the JSON request schema (native and
// OpenAI Images), its validation into an lcmd::GenerateRequest, and the JSON the server
// answers with. The HTTP server and the Lambda runtime both call these, so a request gets
// the same answer (and the same error message) whichever way it arrives.
#pragma once
#include <cstdint>
#include <exception>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "lcmd/engine.h"
#include "serve/api_error.h"

namespace lcmd::serve {

// What a deployment allows; the schema's ranges are read from here so that error messages
// always state the limits actually in force.
struct RequestLimits {
  int max_side = 768;              // width/height: positive multiples of 8 up to this
  int max_steps = 8;               // steps: 1..max_steps
  size_t max_prompt_bytes = 2000;  // prompt: 1..max_prompt_bytes bytes of UTF-8
  double max_guidance = 20.0;      // guidance_scale: 0..max_guidance
};

// InputError when a configured limit is outside what the engine can run.
void check_limits(const RequestLimits& limits);

// The native schema: {"prompt", "width", "height", "steps", "guidance_scale", "seed",
// "output_format"}. A null value means "use the default". Unknown fields, duplicate keys,
// wrong types and out-of-range values are ApiErrors (400) naming the field and its range.
GenerateRequest parse_generate_request(std::string_view body, const RequestLimits& limits);

// The OpenAI Images API (POST /v1/images/generations): prompt, n (1), size "WxH",
// response_format ("b64_json"; "url" is refused: the server keeps no images), model and user
// (accepted, ignored); plus the native seed, steps and guidance_scale as extensions.
GenerateRequest parse_openai_image_request(std::string_view body, const RequestLimits& limits);

// One finished generation, as the front ends report it.
struct GenerateOutcome {
  std::vector<uint8_t> png;
  uint64_t seed = 0;
  int width = 0, height = 0, steps = 0;
  double guidance_scale = 0;
  StageTimings timings;  // all zero for a result-cache hit (nothing ran)
  double queue_ms = 0;   // time spent waiting for the generation slot
  bool text_embedding_cached = false;
  bool result_cached = false;
};

// {"image_base64", "seed", "width", "height", "steps", "guidance_scale", "timings_ms"}.
std::string generate_response_json(const GenerateOutcome& outcome);
// {"created", "data": [{"b64_json"}], "seed", "timings_ms"}: the OpenAI ImagesResponse.
std::string openai_response_json(const GenerateOutcome& outcome, int64_t created_unix_seconds);
// {"error": {"type", "message"}}.
std::string error_response_json(const ApiError& error);
// Per-stage milliseconds and the cache hits (also used by the request logs).
nlohmann::json timings_json(const GenerateOutcome& outcome);

// Maps whatever a request raised to what the client is told: ApiError as is, InputError → 400,
// ModelError and everything else → 500. CancelledError is the caller's to map (it knows why).
ApiError to_api_error(const std::exception& error);

// True when the Accept header prefers image/png to JSON (then the raw PNG is answered).
bool accepts_png(std::string_view accept_header);

// `text` with every byte outside printable ASCII written as \xNN, for messages that quote input.
std::string printable(std::string_view text, size_t max_chars = 80);

}  // namespace lcmd::serve
