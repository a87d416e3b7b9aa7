#include "serve/lambda_events.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "image/base64.h"
#include "serve/process_stats.h"

namespace lcmd::serve {

using json = nlohmann::json;

namespace {

enum class Api { Native, OpenAi };

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// A string member of a JSON object, or "" when absent or not a string.
std::string string_member(const json& object, const char* name) {
  const auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Header lookup; Function URLs send lower-case names, API Gateway may not.
std::string header(const json& event, const std::string& name) {
  const auto headers = event.find("headers");
  if (headers == event.end() || !headers->is_object()) return {};
  for (const auto& [key, value] : headers->items())
    if (lower(key) == name && value.is_string()) return value.get<std::string>();
  return {};
}

json http_reply(int status, const std::string& content_type, const std::string& body, bool base64_body,
                json extra_headers = json::object()) {
  extra_headers["content-type"] = content_type;
  return {{"statusCode", status}, {"headers", extra_headers}, {"body", body}, {"isBase64Encoded", base64_body}};
}

LambdaReply http_error_reply(const ApiError& error) {
  json headers = json::object();
  if (error.status() == 405) headers["allow"] = "POST";
  LambdaReply reply;
  reply.event_kind = "http";
  reply.status = error.status();
  reply.error_type = error.type();
  reply.payload = http_reply(error.status(), "application/json", error_response_json(error), false, headers)
                      .dump(-1, ' ', false, json::error_handler_t::replace);
  return reply;
}

LambdaReply function_error_reply(const ApiError& error) {
  LambdaReply reply;
  reply.event_kind = "direct";
  reply.function_error = true;
  reply.error_type = error.type();
  reply.status = error.status();
  reply.payload = json{{"errorMessage", error.what()}, {"errorType", error.type()}}.dump(
      -1, ' ', false, json::error_handler_t::replace);
  return reply;
}

ApiError too_large_response(size_t bytes, size_t limit) {
  return payload_too_large("the response would be " + std::to_string(bytes) + " bytes, over the " +
                           std::to_string(limit) + "-byte Lambda response limit; request a smaller image");
}

// Which API a Function URL path and method select; ApiError 404/405 otherwise.
Api route(const std::string& method, const std::string& path) {
  const bool generate = path == "/" || path == "/v1/generate";
  const bool openai = path == "/v1/images/generations";
  if (!generate && !openai)
    throw not_found("no route for " + printable(method) + " " + printable(path) +
                    "; routes: POST / (or /v1/generate), POST /v1/images/generations, GET /healthz");
  if (method != "POST") throw method_not_allowed(printable(path) + " takes POST, got " + printable(method));
  return generate ? Api::Native : Api::OpenAi;
}

std::string request_body(const json& event, size_t limit) {
  const auto body_it = event.find("body");
  std::string body = body_it != event.end() && body_it->is_string() ? body_it->get<std::string>() : std::string();
  const auto encoded = event.find("isBase64Encoded");
  if (encoded != event.end() && encoded->is_boolean() && encoded->get<bool>()) {
    try {
      const std::vector<uint8_t> bytes = base64_decode(body);
      body.assign(bytes.begin(), bytes.end());
    } catch (const InputError& e) {
      throw invalid_request(std::string("the request body is marked isBase64Encoded but is not valid base64: ") +
                            e.what());
    }
  }
  if (body.size() > limit)
    throw payload_too_large("the request body is " + std::to_string(body.size()) + " bytes; the limit is " +
                            std::to_string(limit));
  return body;
}

GenerateOutcome without_image(GenerateOutcome outcome) {
  outcome.png.clear();
  outcome.png.shrink_to_fit();
  return outcome;
}

}  // namespace

LambdaHandler::LambdaHandler(ImageService& service, const LambdaSettings& settings, DeadlineGuard::Clock clock)
    : service_(service), settings_(settings), clock_(std::move(clock)) {}

LambdaReply LambdaHandler::handle(const Invocation& invocation) {
  // json::parse refuses invalid UTF-8 and numbers out of range; those payloads are direct
  // invokes (a Function URL event is always valid JSON), which then report the JSON error.
  const json event = json::parse(invocation.event, nullptr, /*allow_exceptions=*/false);
  if (event.is_object()) {
    const auto context = event.find("requestContext");
    const bool has_context = context != event.end() && context->is_object();
    if (has_context && context->contains("http")) return handle_http(invocation, event);
    if (has_context && event.contains("httpMethod"))
      return http_error_reply(invalid_request(
          "API Gateway REST API events (payload format 1.0) are not supported; use a Function URL or an HTTP API with "
          "payload format 2.0"));
  }
  return handle_direct(invocation);
}

LambdaReply LambdaHandler::handle_direct(const Invocation& invocation) {
  std::optional<GenerateRequest> request;
  try {
    request = parse_generate_request(invocation.event, service_.limits());
    const GenerateOutcome outcome = run(*request, invocation);
    return success_reply("direct", generate_response_json(outcome), *request, outcome);
  } catch (const std::exception& e) {
    LambdaReply reply = function_error_reply(to_api_error(e));
    reply.request = request;
    return reply;
  }
}

LambdaReply LambdaHandler::handle_http(const Invocation& invocation, const json& event) {
  std::optional<GenerateRequest> request;
  try {
    const json& context = event.at("requestContext");
    const json& http = context.at("http");
    const std::string method = http.is_object() ? string_member(http, "method") : std::string();
    std::string path = string_member(event, "rawPath");
    if (path.empty() && http.is_object()) path = string_member(http, "path");
    // An API Gateway stage other than $default prefixes the path with its name.
    const std::string stage = string_member(context, "stage");
    if (!stage.empty() && stage != "$default" && path.rfind("/" + stage + "/", 0) == 0) path.erase(0, stage.size() + 1);
    if (path == "/healthz" && method == "GET") {
      LambdaReply reply;
      reply.event_kind = "http";
      reply.payload = http_reply(200, "application/json", R"({"status":"ok"})", false).dump();
      return reply;
    }
    const Api api = route(method, path);
    const std::string body = request_body(event, settings_.max_body_bytes);
    request = api == Api::Native ? parse_generate_request(body, service_.limits())
                                 : parse_openai_image_request(body, service_.limits());
    const GenerateOutcome outcome = run(*request, invocation);
    const json seed_headers = {{"x-lcmd-seed", std::to_string(outcome.seed)}};
    json reply_json;
    if (api == Api::Native && accepts_png(header(event, "accept")))
      reply_json = http_reply(200, "image/png", base64_encode(outcome.png), true, seed_headers);
    else if (api == Api::Native)
      reply_json = http_reply(200, "application/json", generate_response_json(outcome), false, seed_headers);
    else
      reply_json =
          http_reply(200, "application/json", openai_response_json(outcome, clock_() / 1000), false, seed_headers);
    return success_reply("http", reply_json.dump(), *request, outcome);
  } catch (const std::exception& e) {
    LambdaReply reply = http_error_reply(to_api_error(e));
    reply.request = request;
    return reply;
  }
}

LambdaReply LambdaHandler::success_reply(const char* event_kind, std::string payload, const GenerateRequest& request,
                                         const GenerateOutcome& outcome) const {
  if (payload.size() > settings_.max_response_bytes)
    throw too_large_response(payload.size(), settings_.max_response_bytes);
  LambdaReply reply;
  reply.event_kind = event_kind;
  reply.payload = std::move(payload);
  reply.request = request;
  reply.outcome = without_image(outcome);
  return reply;
}

GenerateOutcome LambdaHandler::run(const GenerateRequest& request, const Invocation& invocation) {
  if (!invocation.deadline_unix_ms) return service_.generate(request);
  DeadlineGuard guard(*invocation.deadline_unix_ms, settings_.deadline_margin_ms, tail_estimate_ms_, clock_);
  if (!guard.can_start()) throw deadline_exceeded(guard.explain());
  GenerateOutcome outcome;
  try {
    outcome = service_.generate(request, guard.progress_callback());
  } catch (const CancelledError&) {
    throw deadline_exceeded(guard.explain());
  }
  if (!outcome.result_cached) tail_estimate_ms_ = outcome.timings.vae_decode_ms + outcome.timings.png_ms;
  return outcome;
}

std::string invocation_log_line(const Invocation& invocation, const LambdaReply& reply, double latency_ms,
                                const std::string& function_name, const std::string& metrics_namespace,
                                int64_t timestamp_unix_ms, bool log_prompts) {
  json line = {{"level", reply.status < 500 ? "info" : "error"},
               {"message", "invocation"},
               {"request_id", invocation.request_id},
               {"event", reply.event_kind},
               {"status", reply.status},
               {"peak_rss_mb", std::round(peak_rss_mb() * 10) / 10}};
  if (!reply.error_type.empty()) line["error_type"] = reply.error_type;
  if (reply.request) {
    line["prompt_bytes"] = reply.request->prompt.size();
    if (log_prompts) {
      line["prompt"] = reply.request->prompt;
      line["negative_prompt"] = reply.request->negative_prompt;
    }
    line["width"] = reply.request->width;
    line["height"] = reply.request->height;
    line["steps"] = reply.request->steps;
  }
  // EMF: the metrics named in the directive must be members of the same object.
  json metrics = json::array({{{"Name", "Latency"}, {"Unit", "Milliseconds"}}});
  line["Latency"] = std::round(latency_ms * 1000) / 1000;
  line["Errors"] = reply.status >= 500 ? 1 : 0;
  metrics.push_back({{"Name", "Errors"}, {"Unit", "Count"}});
  if (reply.outcome) {
    const GenerateOutcome& o = *reply.outcome;
    line["seed"] = o.seed;
    line["timings_ms"] = timings_json(o);
    const auto& steps = o.timings.unet_step_ms;
    const std::pair<const char*, double> stages[] = {{"TextEncoderTime", o.timings.text_encoder_ms},
                                                     {"UNetTime", std::accumulate(steps.begin(), steps.end(), 0.0)},
                                                     {"VaeDecodeTime", o.timings.vae_decode_ms},
                                                     {"PngTime", o.timings.png_ms}};
    for (const auto& [name, ms] : stages) {
      line[name] = std::round(ms * 1000) / 1000;
      metrics.push_back({{"Name", name}, {"Unit", "Milliseconds"}});
    }
    line["ResultCacheHit"] = o.result_cached ? 1 : 0;
    metrics.push_back({{"Name", "ResultCacheHit"}, {"Unit", "Count"}});
  }
  line["FunctionName"] = function_name;
  line["_aws"] = {{"Timestamp", timestamp_unix_ms},
                  {"CloudWatchMetrics", json::array({{{"Namespace", metrics_namespace},
                                                      {"Dimensions", json::array({json::array({"FunctionName"})})},
                                                      {"Metrics", metrics}}})}};
  return line.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace lcmd::serve
