// The request/response core: every field of both schemas (missing, wrong type, out of range,
// huge, invalid UTF-8), invalid JSON, unknown and duplicate fields; the response and error
// JSON; Accept negotiation.
#include "serve/request.h"

#include <gtest/gtest.h>

#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "image/base64.h"

namespace lcmd::serve {
namespace {

using json = nlohmann::json;

// The ApiError a body raises (status 0 and "" when it parses).
struct Refusal {
  int status = 0;
  std::string type, message;
};

Refusal refusal_of(const std::string& body, bool openai = false, const RequestLimits& limits = {}) {
  try {
    openai ? parse_openai_image_request(body, limits) : parse_generate_request(body, limits);
  } catch (const ApiError& e) {
    return {e.status(), e.type(), e.what()};
  }
  return {};
}

struct BadInput {
  const char* what;
  std::string body;
  const char* message_part;  // the field and the allowed range must be named
};

void expect_all_refused(const std::vector<BadInput>& cases, bool openai) {
  for (const BadInput& c : cases) {
    const Refusal r = refusal_of(c.body, openai);
    EXPECT_EQ(r.status, 400) << c.what << ": " << c.body;
    EXPECT_EQ(r.type, "invalid_request_error") << c.what;
    EXPECT_NE(r.message.find(c.message_part), std::string::npos) << c.what << ": got \"" << r.message << "\"";
  }
}

TEST(Request, DefaultsFillEveryOptionalField) {
  const GenerateRequest r = parse_generate_request(R"({"prompt": "a photo of a cat"})", {});
  EXPECT_EQ(r.prompt, "a photo of a cat");
  EXPECT_EQ(r.width, 256);
  EXPECT_EQ(r.height, 256);
  EXPECT_EQ(r.steps, 4);
  EXPECT_EQ(r.guidance_scale, 8.0);
  EXPECT_FALSE(r.seed.has_value());
}

TEST(Request, EveryFieldIsRead) {
  const GenerateRequest r = parse_generate_request(
      R"({"prompt":"x","width":512,"height":64,"steps":8,"guidance_scale":1.5,"seed":18446744073709551615,"output_format":"png"})",
      {});
  EXPECT_EQ(r.width, 512);
  EXPECT_EQ(r.height, 64);
  EXPECT_EQ(r.steps, 8);
  EXPECT_EQ(r.guidance_scale, 1.5);
  EXPECT_EQ(r.seed, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(parse_generate_request(R"({"prompt":"x","guidance_scale":0,"seed":0})", {}).seed, 0u);
  EXPECT_EQ(parse_generate_request(R"({"prompt":"x","guidance_scale":20})", {}).guidance_scale, 20.0);
}

TEST(Request, NullMeansTheDefault) {
  const GenerateRequest r =
      parse_generate_request(R"({"prompt":"x","width":null,"steps":null,"seed":null,"guidance_scale":null})", {});
  EXPECT_EQ(r.width, 256);
  EXPECT_EQ(r.steps, 4);
  EXPECT_FALSE(r.seed.has_value());
}

TEST(Request, ConfiguredLimitsAreEnforcedAndStated) {
  RequestLimits limits;
  limits.max_side = 512;
  limits.max_steps = 2;
  const Refusal wide = refusal_of(R"({"prompt":"x","width":768})", false, limits);
  EXPECT_NE(wide.message.find("width must be a multiple of 8 in 8..512; got 768"), std::string::npos) << wide.message;
  const Refusal steps = refusal_of(R"({"prompt":"x","steps":3})", false, limits);
  EXPECT_NE(steps.message.find("steps must be an integer in 1..2; got 3"), std::string::npos) << steps.message;
  EXPECT_EQ(parse_generate_request(R"({"prompt":"x"})", limits).steps, 2);  // the default is capped too
  limits.max_side = 100;
  EXPECT_THROW(check_limits(limits), InputError);
  limits.max_side = 768;
  limits.max_steps = 51;
  EXPECT_THROW(check_limits(limits), InputError);
}

TEST(Request, BadNativeFieldsNameTheFieldAndRange) {
  const std::string long_prompt(2001, 'a');
  expect_all_refused(
      {
          {"prompt missing", R"({"width": 256})", "prompt is required: a string of 1..2000 bytes of UTF-8"},
          {"prompt wrong type", R"({"prompt": 42})", "prompt must be a string of 1..2000 bytes of UTF-8; got 42"},
          {"prompt empty", R"({"prompt": ""})",
           "prompt must be a string of 1..2000 bytes of UTF-8; got an empty string"},
          {"prompt huge", R"({"prompt": ")" + long_prompt + "\"}", "got 2001 bytes"},
          {"prompt array", R"({"prompt": ["a"]})", "prompt must be a string of 1..2000 bytes of UTF-8; got an array"},
          {"width wrong type", R"({"prompt":"x","width":"256"})",
           "width must be a multiple of 8 in 8..768; got \"256\""},
          {"width fraction", R"({"prompt":"x","width":256.5})", "width must be a multiple of 8 in 8..768; got 256.5"},
          {"width not multiple", R"({"prompt":"x","width":100})", "width must be a multiple of 8 in 8..768; got 100"},
          {"width zero", R"({"prompt":"x","width":0})", "width must be a multiple of 8 in 8..768; got 0"},
          {"width negative", R"({"prompt":"x","width":-8})", "width must be a multiple of 8 in 8..768; got -8"},
          {"width over max", R"({"prompt":"x","width":776})", "width must be a multiple of 8 in 8..768; got 776"},
          {"width huge", R"({"prompt":"x","width":99999999999999999999})", "width must be a multiple of 8 in 8..768"},
          {"height over max", R"({"prompt":"x","height":1024})", "height must be a multiple of 8 in 8..768; got 1024"},
          {"height boolean", R"({"prompt":"x","height":true})",
           "height must be a multiple of 8 in 8..768; got a boolean"},
          {"steps zero", R"({"prompt":"x","steps":0})", "steps must be an integer in 1..8; got 0"},
          {"steps over", R"({"prompt":"x","steps":9})", "steps must be an integer in 1..8; got 9"},
          {"steps fraction", R"({"prompt":"x","steps":2.5})", "steps must be an integer in 1..8; got 2.5"},
          {"steps string", R"({"prompt":"x","steps":"4"})", "steps must be an integer in 1..8; got \"4\""},
          {"guidance negative", R"({"prompt":"x","guidance_scale":-1})",
           "guidance_scale must be a number in 0..20; got -1"},
          {"guidance over", R"({"prompt":"x","guidance_scale":20.5})",
           "guidance_scale must be a number in 0..20; got 20.5"},
          {"guidance string", R"({"prompt":"x","guidance_scale":"8"})", "guidance_scale must be a number in 0..20"},
          {"guidance huge", R"({"prompt":"x","guidance_scale":1e300})", "guidance_scale must be a number in 0..20"},
          {"guidance overflow", R"({"prompt":"x","guidance_scale":1e400})", "number"},
          {"seed negative", R"({"prompt":"x","seed":-1})",
           "seed must be an integer in 0..18446744073709551615; got -1"},
          {"seed over u64", R"({"prompt":"x","seed":18446744073709551616})",
           "seed must be an integer in 0..18446744073709551615"},
          {"seed fraction", R"({"prompt":"x","seed":1.5})",
           "seed must be an integer in 0..18446744073709551615; got 1.5"},
          {"seed string", R"({"prompt":"x","seed":"7"})",
           "seed must be an integer in 0..18446744073709551615; got \"7\""},
          {"output_format jpeg", R"({"prompt":"x","output_format":"jpeg"})",
           "output_format must be \"png\"; got \"jpeg\""},
          {"output_format number", R"({"prompt":"x","output_format":1})", "output_format must be \"png\"; got 1"},
          {"unknown field", R"({"prompt":"x","style":"y"})",
           "unknown field 'style'; allowed fields: prompt, negative_prompt, width, height, steps, guidance_scale, "
           "seed, decoder, output_format"},
          {"duplicate field", R"({"prompt":"x","steps":2,"steps":3})", "field 'steps' appears more than once"},
      },
      false);
}

TEST(Request, InvalidJsonAndEncodingAreRefusedClearly) {
  expect_all_refused(
      {
          {"empty body", "", "the request body is empty"},
          {"not JSON", "prompt=cat", "the request body is not valid JSON"},
          {"truncated", R"({"prompt": "x")", "the request body is not valid JSON"},
          {"trailing garbage", R"({"prompt": "x"} x)", "the request body is not valid JSON"},
          {"array", R"(["prompt"])", "the request body must be a JSON object, got array"},
          {"number", "42", "the request body must be a JSON object, got a number"},
          {"string", R"("a cat")", "the request body must be a JSON object, got string"},
          {"invalid UTF-8 byte", "{\"prompt\": \"a \xff cat\"}", "UTF-8"},
          {"overlong UTF-8", "{\"prompt\": \"\xc0\xaf\"}", "UTF-8"},
          {"lone surrogate escape", R"({"prompt": "\ud800"})", "surrogate"},
      },
      false);
  // A quoted invalid byte is escaped, so the error itself is valid JSON.
  const Refusal r = refusal_of("{\"prompt\": \"\xff\"}");
  EXPECT_TRUE(json::accept(error_response_json(ApiError(r.status, r.type, r.message))));
  EXPECT_EQ(r.message.find('\xff'), std::string::npos);
}

TEST(Request, UnicodePromptsAreAccepted) {
  EXPECT_EQ(parse_generate_request(R"({"prompt":"ein Fuchs im Schnee \u2744 猫"})", {}).prompt,
            "ein Fuchs im Schnee \xe2\x9d\x84 \xe7\x8c\xab");
  const std::string two_thousand_bytes(2000, 'z');
  EXPECT_EQ(parse_generate_request(R"({"prompt":")" + two_thousand_bytes + "\"}", {}).prompt.size(), 2000u);
}

TEST(Request, OpenAiRequestsMapToTheNativeOne) {
  const GenerateRequest r = parse_openai_image_request(
      R"({"model":"lcmd","prompt":"a cat","n":1,"size":"512x256","response_format":"b64_json","user":"u1","seed":3,"steps":2})",
      {});
  EXPECT_EQ(r.prompt, "a cat");
  EXPECT_EQ(r.width, 512);
  EXPECT_EQ(r.height, 256);
  EXPECT_EQ(r.steps, 2);
  EXPECT_EQ(r.seed, 3u);
  const GenerateRequest d = parse_openai_image_request(R"({"prompt":"a cat"})", {});
  EXPECT_EQ(d.width, 256);
  EXPECT_EQ(d.height, 256);
}

TEST(Request, BadOpenAiFieldsNameTheFieldAndRange) {
  const char* size_rule = "size must be \"WIDTHxHEIGHT\" with each side a multiple of 8 in 8..768";
  expect_all_refused(
      {
          {"prompt missing", R"({"size":"256x256"})", "prompt is required"},
          {"url format", R"({"prompt":"x","response_format":"url"})",
           "response_format \"url\" is not supported: lcmd keeps no images to link to; use \"b64_json\""},
          {"other format", R"({"prompt":"x","response_format":"png"})",
           "response_format must be \"b64_json\"; got \"png\""},
          {"n two", R"({"prompt":"x","n":2})", "n must be 1 (one image per request); got 2"},
          {"n string", R"({"prompt":"x","n":"1"})", "n must be 1 (one image per request); got \"1\""},
          {"size 1024", R"({"prompt":"x","size":"1024x1024"})", size_rule},
          {"size no x", R"({"prompt":"x","size":"256"})", size_rule},
          {"size not multiple", R"({"prompt":"x","size":"250x256"})", size_rule},
          {"size signs", R"({"prompt":"x","size":"+256x256"})", size_rule},
          {"size number", R"({"prompt":"x","size":256})", size_rule},
          {"size huge digits", R"({"prompt":"x","size":"99999999999x8"})", size_rule},
          {"model number", R"({"prompt":"x","model":3})", "model must be a string; got 3"},
          {"unknown field", R"({"prompt":"x","quality":"hd"})", "unknown field 'quality'"},
          {"native field", R"({"prompt":"x","width":256})", "unknown field 'width'"},
      },
      true);
}

GenerateOutcome sample_outcome() {
  GenerateOutcome o;
  o.png = {0x89, 'P', 'N', 'G'};
  o.seed = 9007199254740991;
  o.width = 64;
  o.height = 128;
  o.steps = 2;
  o.guidance_scale = 8;
  o.timings.tokenize_ms = 0.5;
  o.timings.text_encoder_ms = 10;
  o.timings.unet_step_ms = {20, 30};
  o.timings.vae_decode_ms = 40;
  o.timings.png_ms = 1;
  o.timings.total_ms = 101.5;
  o.queue_ms = 7;
  o.text_embedding_cached = true;
  return o;
}

TEST(Response, NativeResponseCarriesImageSeedSizeAndTimings) {
  const json r = json::parse(generate_response_json(sample_outcome()));
  EXPECT_EQ(base64_decode(r.at("image_base64").get<std::string>()), sample_outcome().png);
  EXPECT_EQ(r.at("seed").get<uint64_t>(), 9007199254740991u);
  EXPECT_EQ(r.at("width"), 64);
  EXPECT_EQ(r.at("height"), 128);
  EXPECT_EQ(r.at("steps"), 2);
  const json& t = r.at("timings_ms");
  EXPECT_EQ(t.at("unet"), 50.0);
  EXPECT_EQ(t.at("unet_steps"), json::array({20.0, 30.0}));
  EXPECT_EQ(t.at("queue"), 7.0);
  EXPECT_EQ(t.at("generate"), 101.5);
  EXPECT_EQ(t.at("cache_hits").at("text_embedding"), true);
  EXPECT_EQ(t.at("cache_hits").at("result"), false);
}

TEST(Response, OpenAiResponseHasTheImagesResponseShape) {
  const json r = json::parse(openai_response_json(sample_outcome(), 1700000000));
  EXPECT_EQ(r.at("created"), 1700000000);
  ASSERT_EQ(r.at("data").size(), 1u);
  EXPECT_EQ(base64_decode(r.at("data")[0].at("b64_json").get<std::string>()), sample_outcome().png);
}

TEST(Response, ErrorsAreTypedAndSurviveInvalidBytes) {
  const json e = json::parse(error_response_json(invalid_request("width must be ...")));
  EXPECT_EQ(e.at("error").at("type"), "invalid_request_error");
  EXPECT_EQ(e.at("error").at("message"), "width must be ...");
  EXPECT_TRUE(json::accept(error_response_json(internal_error("bad byte \xff here"))));
}

TEST(Response, ExceptionsMapToStatuses) {
  EXPECT_EQ(to_api_error(InputError("x")).status(), 400);
  EXPECT_EQ(to_api_error(ModelError("x")).status(), 500);
  EXPECT_EQ(to_api_error(ModelError("x")).type(), "model_error");
  EXPECT_EQ(to_api_error(std::runtime_error("x")).status(), 500);
  EXPECT_EQ(to_api_error(std::bad_alloc()).type(), "out_of_memory");
  EXPECT_EQ(to_api_error(queue_full("full", 3)).retry_after_seconds, 3);
}

TEST(Response, AcceptNegotiation) {
  EXPECT_TRUE(accepts_png("image/png"));
  EXPECT_TRUE(accepts_png("IMAGE/PNG"));
  EXPECT_TRUE(accepts_png("image/png, application/json;q=0.5"));
  EXPECT_TRUE(accepts_png("text/html, image/png;q=0.9"));
  EXPECT_FALSE(accepts_png(""));
  EXPECT_FALSE(accepts_png("*/*"));
  EXPECT_FALSE(accepts_png("application/json"));
  EXPECT_FALSE(accepts_png("application/json, image/png"));  // a tie: JSON
  EXPECT_FALSE(accepts_png("image/png;q=0"));
  EXPECT_FALSE(accepts_png("image/png;q=0.4, application/json;q=0.8"));
}

TEST(Response, PrintableEscapesAndTruncates) {
  EXPECT_EQ(printable("a\xff\n"), "a\\xff\\x0a");
  EXPECT_EQ(printable(std::string(100, 'x'), 10), std::string(10, 'x') + "...");
}

}  // namespace
}  // namespace lcmd::serve

namespace lcmd::serve {
namespace {

TEST(Request, NegativePromptAndDecoderAreRead) {
  const GenerateRequest r =
      parse_generate_request(R"({"prompt":"a cat","negative_prompt":"blurry","decoder":"taesd"})", RequestLimits{});
  EXPECT_EQ(r.negative_prompt, "blurry");
  EXPECT_EQ(r.decoder, "taesd");
  const GenerateRequest d = parse_generate_request(R"({"prompt":"a cat","negative_prompt":""})", RequestLimits{});
  EXPECT_EQ(d.negative_prompt, "");
  EXPECT_EQ(d.decoder, "");  // the engine's default
}

TEST(Request, BadNegativePromptOrDecoderNamesTheField) {
  const std::string long_text(2001, 'a');
  expect_all_refused({
      {"negative_prompt wrong type", R"({"prompt":"x","negative_prompt":3})",
       "negative_prompt must be a string of 0..2000 bytes of UTF-8"},
      {"negative_prompt huge", R"({"prompt":"x","negative_prompt":")" + long_text + "\"}", "got 2001 bytes"},
      {"negative_prompt bad utf-8", "{\"prompt\":\"x\",\"negative_prompt\":\"a\xff\"}", "UTF-8"},
      {"decoder unknown", R"({"prompt":"x","decoder":"bilinear"})", "decoder must be \"vae\" or \"taesd\""},
      {"decoder wrong type", R"({"prompt":"x","decoder":1})", "decoder must be \"vae\" or \"taesd\""},
  }, /*openai=*/false);
}

}  // namespace
}  // namespace lcmd::serve
