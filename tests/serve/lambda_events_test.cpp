// LambdaHandler in process on the real tiny engine: direct and Function URL events, PNG
// answers, routing, every error status, the response-size limit, the deadline checked
// between denoising steps (with a clock that runs fast), and the EMF log line.
#include "serve/lambda_events.h"

#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>

#include "image/base64.h"
#include "serve_test_util.h"

namespace lcmd::serve {
namespace {

using json = nlohmann::json;

const char* kPrompt = "a paper boat on a pond";

json http_event(const std::string& method, const std::string& path, const std::string& body, bool base64 = false,
                json headers = json::object()) {
  if (!headers.contains("content-type")) headers["content-type"] = "application/json";
  return {{"version", "2.0"},
          {"routeKey", "$default"},
          {"rawPath", path},
          {"rawQueryString", ""},
          {"headers", headers},
          {"requestContext",
           {{"http", {{"method", method}, {"path", path}, {"protocol", "HTTP/1.1"}, {"sourceIp", "203.0.113.7"}}},
            {"requestId", "abc"},
            {"timeEpoch", 1700000000000}}},
          {"body", body},
          {"isBase64Encoded", base64}};
}

Invocation invocation(const std::string& event, std::optional<int64_t> deadline = std::nullopt) {
  return {"req-1", deadline, "arn:aws:lambda:us-east-1:123456789012:function:lcmd", "", event};
}

// The engine's own image for the request: the handler must hand it over unchanged (the CLI
// and HTTP tests compare the same bytes with `lcmd generate`).
std::vector<uint8_t> engine_png(uint64_t seed, int steps = 2) {
  GenerateRequest r;
  r.prompt = kPrompt;
  r.width = r.height = 64;
  r.steps = steps;
  r.seed = seed;
  return test::tiny_engine()->generate(r).png;
}

std::string request_json(uint64_t seed, int side = 64) {
  return json{{"prompt", kPrompt}, {"seed", seed}, {"width", side}, {"height", side}, {"steps", 2}}.dump();
}

class LambdaEvents : public ::testing::Test {
 protected:
  LambdaReply handle(const std::string& event, std::optional<int64_t> deadline = std::nullopt) {
    return handler_.handle(invocation(event, deadline));
  }
  static json http_reply(const LambdaReply& r) {
    EXPECT_FALSE(r.function_error);
    return json::parse(r.payload);
  }
  static json body_of(const json& http) { return json::parse(http.at("body").get<std::string>()); }

  ImageService service_{test::tiny_engine(), {}};
  LambdaSettings settings_;
  LambdaHandler handler_{service_, settings_};
};

TEST_F(LambdaEvents, DirectInvokeAnswersTheResponseJson) {
  const LambdaReply r = handle(request_json(21));
  ASSERT_FALSE(r.function_error) << r.payload;
  EXPECT_EQ(r.event_kind, "direct");
  const json reply = json::parse(r.payload);
  EXPECT_EQ(reply.at("seed"), 21);
  EXPECT_EQ(base64_decode(reply.at("image_base64").get<std::string>()), engine_png(21));
  ASSERT_TRUE(r.request && r.outcome);
  EXPECT_TRUE(r.outcome->png.empty());  // the log keeps no image
}

TEST_F(LambdaEvents, FunctionUrlEventAnswersAnHttpResponse) {
  const json http = http_reply(handle(http_event("POST", "/", request_json(21)).dump()));
  EXPECT_EQ(http.at("statusCode"), 200);
  EXPECT_EQ(http.at("isBase64Encoded"), false);
  EXPECT_EQ(http.at("headers").at("content-type"), "application/json");
  EXPECT_EQ(http.at("headers").at("x-lcmd-seed"), "21");
  EXPECT_EQ(base64_decode(body_of(http).at("image_base64").get<std::string>()), engine_png(21));
}

TEST_F(LambdaEvents, Base64BodyAndAcceptPngAnswerTheRawPng) {
  const std::string body = request_json(22);
  const json event =
      http_event("POST", "/v1/generate", base64_encode(test::bytes_of(body)), true, {{"accept", "image/png"}});
  const json http = http_reply(handle(event.dump()));
  EXPECT_EQ(http.at("statusCode"), 200);
  EXPECT_EQ(http.at("isBase64Encoded"), true);
  EXPECT_EQ(http.at("headers").at("content-type"), "image/png");
  EXPECT_EQ(base64_decode(http.at("body").get<std::string>()), engine_png(22));
}

TEST_F(LambdaEvents, OpenAiPathAnswersTheImagesResponse) {
  const std::string body = json{{"prompt", kPrompt}, {"size", "64x64"}, {"seed", 23}, {"steps", 2}}.dump();
  const json http = http_reply(handle(http_event("POST", "/v1/images/generations", body).dump()));
  EXPECT_EQ(http.at("statusCode"), 200);
  EXPECT_EQ(base64_decode(body_of(http).at("data")[0].at("b64_json").get<std::string>()), engine_png(23));
}

TEST_F(LambdaEvents, FunctionUrlErrorsHaveStatusesAndNameTheProblem) {
  struct Case {
    json event;
    int status;
    const char* message_part;
  };
  const std::string too_big(settings_.max_body_bytes + 1, ' ');
  const Case cases[] = {
      {http_event("POST", "/", R"({"prompt":"x","steps":99})"), 400, "steps must be an integer in 1..8; got 99"},
      {http_event("POST", "/", "not json"), 400, "not valid JSON"},
      {http_event("POST", "/", "%%%", true), 400, "isBase64Encoded but is not valid base64"},
      {http_event("POST", "/", ""), 400, "the request body is empty"},
      {http_event("POST", "/nope", request_json(1)), 404, "no route for POST /nope"},
      {http_event("GET", "/v1/generate", ""), 405, "/v1/generate takes POST, got GET"},
      {http_event("POST", "/", too_big), 413, "the limit is 65536"},
      {{{"httpMethod", "POST"}, {"requestContext", json::object()}, {"body", "{}"}}, 400, "payload format 2.0"},
  };
  for (const Case& c : cases) {
    const LambdaReply r = handle(c.event.dump());
    const json http = http_reply(r);
    EXPECT_EQ(http.at("statusCode"), c.status) << c.message_part;
    EXPECT_EQ(r.status, c.status);
    const json error = body_of(http).at("error");
    EXPECT_NE(error.at("message").get<std::string>().find(c.message_part), std::string::npos)
        << c.message_part << " vs " << error;
  }
  EXPECT_EQ(http_reply(handle(http_event("GET", "/healthz", "").dump())).at("statusCode"), 200);
}

TEST_F(LambdaEvents, ApiGatewayStagePrefixIsNotPartOfTheRoute) {
  json event = http_event("POST", "/prod/v1/generate", request_json(24));
  event["requestContext"]["stage"] = "prod";
  EXPECT_EQ(http_reply(handle(event.dump())).at("statusCode"), 200);
}

TEST_F(LambdaEvents, DirectInvokeErrorsAreFunctionErrors) {
  const LambdaReply bad = handle(R"({"prompt":"x","width":7})");
  ASSERT_TRUE(bad.function_error);
  EXPECT_EQ(bad.error_type, "invalid_request_error");
  EXPECT_EQ(bad.status, 400);
  const json body = json::parse(bad.payload);
  EXPECT_EQ(body.at("errorType"), "invalid_request_error");
  EXPECT_NE(body.at("errorMessage").get<std::string>().find("width must be a multiple of 8"), std::string::npos);
  EXPECT_TRUE(handle("{\"prompt\":\"\xff\"}").function_error);
  EXPECT_TRUE(handle("[1,2]").function_error);
}

TEST_F(LambdaEvents, ResponsesOverTheLambdaLimitAre413) {
  settings_.max_response_bytes = 1000;  // a 64x64 PNG in JSON is larger
  LambdaHandler small(service_, settings_);
  const json http = json::parse(small.handle(invocation(http_event("POST", "/", request_json(1)).dump())).payload);
  EXPECT_EQ(http.at("statusCode"), 413);
  EXPECT_NE(body_of(http).at("error").at("message").get<std::string>().find("Lambda response limit"),
            std::string::npos);
  const LambdaReply direct = small.handle(invocation(request_json(1)));
  EXPECT_TRUE(direct.function_error);
  EXPECT_EQ(direct.error_type, "payload_too_large");
}

TEST_F(LambdaEvents, DeadlineStopsTheRunBetweenDenoisingSteps) {
  // A clock that moves 1 s each time it is read: every denoising step "takes" seconds, so
  // after step 1 the projection passes the deadline and the run is stopped there.
  std::atomic<int64_t> now{1'000'000};
  LambdaHandler handler(service_, settings_, [&] { return now += 1000; });
  const int64_t deadline = now + 10'000;
  const std::string body = json{{"prompt", kPrompt}, {"seed", 1}, {"width", 64}, {"height", 64}, {"steps", 4}}.dump();
  const LambdaReply http_reply = handler.handle(invocation(http_event("POST", "/", body).dump(), deadline));
  const json http = json::parse(http_reply.payload);
  EXPECT_EQ(http.at("statusCode"), 504);
  const json error = body_of(http).at("error");
  EXPECT_EQ(error.at("type"), "timeout");
  EXPECT_NE(error.at("message").get<std::string>().find("stopped after denoising step 1 of 4"), std::string::npos)
      << error;

  // Direct invoke: a function error of type "timeout"; a deadline already too close: not started.
  const LambdaReply late = handler.handle(invocation(body, now + 100));
  EXPECT_TRUE(late.function_error);
  EXPECT_EQ(late.error_type, "timeout");
  EXPECT_NE(late.payload.find("not started"), std::string::npos) << late.payload;

  // A far deadline completes.
  const LambdaReply fine = handler.handle(invocation(body, now + 1'000'000'000));
  EXPECT_FALSE(fine.function_error) << fine.payload;
}

TEST_F(LambdaEvents, LogLineIsAnEmfRecordWithoutThePrompt) {
  const Invocation inv = invocation(request_json(3));
  const LambdaReply r = handler_.handle(inv);
  const std::string line = invocation_log_line(inv, r, 123.4, "lcmd-fn", "lcmd", 1700000000123);
  EXPECT_EQ(line.find(kPrompt), std::string::npos);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const json j = json::parse(line);
  EXPECT_EQ(j.at("request_id"), "req-1");
  EXPECT_EQ(j.at("prompt_bytes"), std::string(kPrompt).size());
  EXPECT_EQ(j.at("width"), 64);
  EXPECT_EQ(j.at("steps"), 2);
  EXPECT_EQ(j.at("status"), 200);
  EXPECT_GT(j.at("peak_rss_mb").get<double>(), 1.0);
  EXPECT_EQ(j.at("Latency"), 123.4);
  const json& aws = j.at("_aws");
  EXPECT_EQ(aws.at("Timestamp"), 1700000000123);
  const json& directive = aws.at("CloudWatchMetrics")[0];
  EXPECT_EQ(directive.at("Namespace"), "lcmd");
  EXPECT_EQ(directive.at("Dimensions"), json::parse(R"([["FunctionName"]])"));
  EXPECT_EQ(j.at("FunctionName"), "lcmd-fn");
  for (const json& metric : directive.at("Metrics"))  // every declared metric has its value
    EXPECT_TRUE(j.contains(metric.at("Name").get<std::string>())) << metric;
  EXPECT_TRUE(j.contains("UNetTime"));
}

}  // namespace
}  // namespace lcmd::serve
