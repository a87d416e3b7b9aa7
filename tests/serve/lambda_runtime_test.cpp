// The real lcmd binary as an AWS Lambda bootstrap (started with no arguments, as Lambda
// starts it, with AWS_LAMBDA_RUNTIME_API set), against a Runtime API written from the
// documentation (fake_runtime_api.h): direct and Function URL events, base64 bodies, PNG
// answers, errors, deadline expiry, the log lines, init errors, and exiting when the Runtime
// API fails. Also the thread the runtime generates on (GenerationThread).
#include <gtest/gtest.h>
#include <pthread.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "fake_runtime_api.h"
#include "core/error.h"
#include "image/base64.h"
#include "serve/deadline.h"
#include "serve/lambda_runtime.h"
#include "serve_test_util.h"
#include "support/test_support.h"

namespace lcmd::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

const char* kPrompt = "a green teapot, studio light";

std::string request_json(uint64_t seed, int side = 64, int steps = 2) {
  return json{{"prompt", kPrompt}, {"seed", seed}, {"width", side}, {"height", side}, {"steps", steps}}.dump();
}

json function_url_event(const std::string& path, const std::string& body, bool base64 = false,
                        json headers = json::object()) {
  headers["content-type"] = "application/json";
  return {{"version", "2.0"},
          {"routeKey", "$default"},
          {"rawPath", path},
          {"rawQueryString", ""},
          {"headers", headers},
          {"requestContext",
           {{"http", {{"method", "POST"}, {"path", path}, {"protocol", "HTTP/1.1"}}}, {"requestId", "r"}}},
          {"body", body},
          {"isBase64Encoded", base64}};
}

std::vector<std::string> lambda_environment(const FakeRuntimeApi& api, const std::string& model) {
  return {"AWS_LAMBDA_RUNTIME_API=" + api.endpoint(), "LCMD_MODEL=" + model, "AWS_LAMBDA_FUNCTION_NAME=lcmd-test",
          "LCMD_THREADS=2"};
}

// One Runtime API and one bootstrap process for the whole suite, as in a warm Lambda
// execution environment: invocations are answered one after another by the same process.
class LambdaBootstrap : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    api_ = new FakeRuntimeApi();
    bootstrap_ = new ChildProcess({LCMD_BINARY}, lambda_environment(*api_, tiny_model().string()));
    ASSERT_TRUE(bootstrap_->wait_for_line("\"init\"", 60s)) << bootstrap_->stdout_text() << bootstrap_->stderr_text();
  }
  static void TearDownTestSuite() {
    delete bootstrap_;  // killed and reaped
    delete api_;
  }
  static FakeRuntimeApi::Reply invoke(const std::string& event, std::optional<int64_t> deadline = std::nullopt) {
    const std::string id = api_->invoke(event, deadline ? deadline : serve::unix_now_ms() + 60'000);
    const auto reply = api_->wait_reply(id, 60s);
    if (!reply) throw std::runtime_error("no reply for " + id + "; stderr: " + bootstrap_->stderr_text());
    return *reply;
  }

  static FakeRuntimeApi* api_;
  static ChildProcess* bootstrap_;
};
FakeRuntimeApi* LambdaBootstrap::api_ = nullptr;
ChildProcess* LambdaBootstrap::bootstrap_ = nullptr;

TEST_F(LambdaBootstrap, DirectInvokeReturnsTheCliImage) {
  const auto reply = invoke(request_json(31));
  ASSERT_EQ(reply.kind, "response") << reply.body;
  const json response = json::parse(reply.body);
  EXPECT_EQ(response.at("seed"), 31);
  EXPECT_EQ(response.at("width"), 64);
  EXPECT_TRUE(response.at("timings_ms").contains("unet_steps"));
  EXPECT_EQ(base64_decode(response.at("image_base64").get<std::string>()), cli_png(kPrompt, 31, 64, 64, 2));
}

TEST_F(LambdaBootstrap, FunctionUrlEventsWithJsonAndBase64Bodies) {
  const auto plain = invoke(function_url_event("/", request_json(32)).dump());
  ASSERT_EQ(plain.kind, "response") << plain.body;
  const json http = json::parse(plain.body);
  EXPECT_EQ(http.at("statusCode"), 200);
  EXPECT_EQ(http.at("isBase64Encoded"), false);
  const json body = json::parse(http.at("body").get<std::string>());
  const std::vector<uint8_t> expected = cli_png(kPrompt, 32, 64, 64, 2);
  EXPECT_EQ(base64_decode(body.at("image_base64").get<std::string>()), expected);

  const std::string encoded = base64_encode(bytes_of(request_json(32)));
  const auto png = invoke(function_url_event("/v1/generate", encoded, true, {{"accept", "image/png"}}).dump());
  const json png_http = json::parse(png.body);
  EXPECT_EQ(png_http.at("statusCode"), 200);
  EXPECT_EQ(png_http.at("isBase64Encoded"), true);
  EXPECT_EQ(png_http.at("headers").at("content-type"), "image/png");
  EXPECT_EQ(base64_decode(png_http.at("body").get<std::string>()), expected);
}

TEST_F(LambdaBootstrap, BadInputIsReportedAndTheRuntimeKeepsServing) {
  const auto direct = invoke(R"({"prompt":"x","guidance_scale":"high"})");
  EXPECT_EQ(direct.kind, "error");
  EXPECT_EQ(direct.error_type, "invalid_request_error");
  const json error = json::parse(direct.body);
  EXPECT_EQ(error.at("errorType"), "invalid_request_error");
  EXPECT_NE(error.at("errorMessage").get<std::string>().find("guidance_scale must be a number in 0..20"),
            std::string::npos);

  const auto http = invoke(function_url_event("/", R"({"prompt":"x","colour":"red"})").dump());
  EXPECT_EQ(http.kind, "response");  // an HTTP error is a normal response with a status
  const json reply = json::parse(http.body);
  EXPECT_EQ(reply.at("statusCode"), 400);
  EXPECT_NE(reply.at("body").get<std::string>().find("unknown field 'colour'"), std::string::npos);

  const auto not_base64 = invoke(function_url_event("/", "@@@", true).dump());
  EXPECT_EQ(json::parse(not_base64.body).at("statusCode"), 400);
  const auto garbage = invoke("\"just a string\"");
  EXPECT_EQ(garbage.kind, "error");

  EXPECT_EQ(invoke(request_json(33)).kind, "response");  // still serving
}

TEST_F(LambdaBootstrap, ExpiredDeadlineIsATimeoutError) {
  const auto direct = invoke(request_json(34), serve::unix_now_ms() + 50);
  EXPECT_EQ(direct.kind, "error");
  EXPECT_EQ(direct.error_type, "timeout");
  const auto http = invoke(function_url_event("/", request_json(34)).dump(), serve::unix_now_ms() + 50);
  EXPECT_EQ(json::parse(http.body).at("statusCode"), 504);
  EXPECT_EQ(invoke(request_json(34)).kind, "response");
}

TEST_F(LambdaBootstrap, LogsOneJsonLinePerInvocationWithoutThePrompt) {
  const std::string id = api_->invoke(request_json(35));
  ASSERT_TRUE(api_->wait_reply(id, 60s));
  const auto line = bootstrap_->wait_for_line("\"request_id\":\"" + id + "\"", 10s);
  ASSERT_TRUE(line) << bootstrap_->stdout_text();
  const json log = json::parse(*line);
  EXPECT_EQ(log.at("status"), 200);
  EXPECT_EQ(log.at("width"), 64);
  EXPECT_EQ(log.at("prompt_bytes"), std::string(kPrompt).size());
  EXPECT_TRUE(log.contains("peak_rss_mb"));
  EXPECT_TRUE(log.at("timings_ms").contains("vae_decode"));
  EXPECT_EQ(log.at("_aws").at("CloudWatchMetrics")[0].at("Namespace"), "lcmd");
  EXPECT_EQ(log.at("FunctionName"), "lcmd-test");
  EXPECT_EQ(bootstrap_->stdout_text().find(kPrompt), std::string::npos);  // no prompt in any log line
}

// The names of the threads of process `pid` (/proc/PID/task/TID/comm).
std::vector<std::string> thread_names(pid_t pid) {
  std::vector<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name)) names.push_back(name);
  }
  return names;
}

// The regression guard for invocations 5-30x slower than through `lcmd serve`: generating on
// the main thread made it the only OpenMP master, and libgomp then spun at full length in
// every wait (see run_lambda). The threads of the generation thread's OpenMP team are cloned
// from it and carry its name, so its name on LCMD_THREADS (2) threads shows that the team
// that generates is its own, not the main thread's.
TEST_F(LambdaBootstrap, GeneratesOnItsOwnThreadWithItsOwnOpenMpTeam) {
  ASSERT_EQ(invoke(request_json(36)).kind, "response");
  const std::vector<std::string> names = thread_names(bootstrap_->pid());
  std::string listing;
  for (const std::string& name : names) listing += name + " ";
  EXPECT_EQ(std::count(names.begin(), names.end(), serve::kGenerationThreadName), 2) << listing;
}

TEST(GenerationThread, RunsEveryJobOnOneNamedThreadThatIsNotTheCallers) {
  serve::GenerationThread generation;
  std::vector<std::thread::id> ran_on;
  std::string name;
  for (int i = 0; i < 3; ++i) generation.run([&] { ran_on.push_back(std::this_thread::get_id()); });
  generation.run([&] {
    char buffer[16] = {};
    pthread_getname_np(pthread_self(), buffer, sizeof(buffer));
    name = buffer;
  });
  ASSERT_EQ(ran_on.size(), 3u);  // run() returned only after each job had finished
  EXPECT_NE(ran_on[0], std::this_thread::get_id());
  EXPECT_EQ(ran_on[1], ran_on[0]);
  EXPECT_EQ(ran_on[2], ran_on[0]);
  EXPECT_EQ(name, serve::kGenerationThreadName);
}

TEST(GenerationThread, RethrowsWhatTheJobThrewAndKeepsRunningJobs) {
  serve::GenerationThread generation;
  EXPECT_THROW(generation.run([] { throw InputError("bad request"); }), InputError);
  bool ran = false;
  generation.run([&] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST(LambdaInit, BadModelIsAnInitErrorAndExitsNonZero) {
  FakeRuntimeApi api;
  const TempDir empty;
  ChildProcess bootstrap({LCMD_BINARY, "lambda"}, lambda_environment(api, empty.path().string()));
  const auto error = api.wait_init_error(30s);
  ASSERT_TRUE(error) << bootstrap.stderr_text();
  EXPECT_EQ(error->error_type, "model_error");
  const json body = json::parse(error->body);
  EXPECT_EQ(body.at("errorType"), "model_error");
  EXPECT_NE(body.at("errorMessage").get<std::string>().find(empty.path().string()), std::string::npos) << error->body;
  EXPECT_EQ(bootstrap.wait(30s), 1);
}

TEST(LambdaInit, BadSettingIsAConfigInitError) {
  FakeRuntimeApi api;
  std::vector<std::string> env = lambda_environment(api, tiny_model().string());
  env.push_back("LCMD_MAX_SIZE=huge");
  ChildProcess bootstrap({LCMD_BINARY}, env);
  const auto error = api.wait_init_error(30s);
  ASSERT_TRUE(error) << bootstrap.stderr_text();
  EXPECT_EQ(error->error_type, "config_error");
  EXPECT_NE(error->body.find("LCMD_MAX_SIZE must be an integer in 8..2048"), std::string::npos) << error->body;
  EXPECT_EQ(bootstrap.wait(30s), 2);
}

// The bad setting is still what the exit status says (2) when the Runtime API cannot be told.
TEST(LambdaInit, BadSettingExitsTwoWhenTheRuntimeApiIsUnreachable) {
  std::string endpoint;
  {
    FakeRuntimeApi closed;  // a port that was just free: nothing listens there now
    endpoint = closed.endpoint();
  }
  ChildProcess bootstrap({LCMD_BINARY},
                         {"AWS_LAMBDA_RUNTIME_API=" + endpoint, "LCMD_MODEL=" + tiny_model().string(), "LCMD_MAX_SIZE=huge"});
  EXPECT_EQ(bootstrap.wait(30s), 2) << bootstrap.stderr_text();
  EXPECT_NE(bootstrap.stderr_text().find("LCMD_MAX_SIZE must be an integer in 8..2048"), std::string::npos)
      << bootstrap.stderr_text();
  EXPECT_NE(bootstrap.stderr_text().find("the init error could not be reported"), std::string::npos)
      << bootstrap.stderr_text();
}

TEST(LambdaInit, ExitsWhenTheRuntimeApiReportsAContainerError) {
  FakeRuntimeApi api;
  ChildProcess bootstrap({LCMD_BINARY}, lambda_environment(api, tiny_model().string()));
  ASSERT_TRUE(bootstrap.wait_for_line("\"init\"", 60s));
  // /next answers 500 ("non-recoverable state, runtime should exit promptly"), every time.
  api.inject_fault(FakeRuntimeApi::Route::Next, FakeRuntimeApi::Fault::ServerError, FakeRuntimeApi::kForever);
  EXPECT_EQ(bootstrap.wait(10s), 1);
  EXPECT_NE(bootstrap.stdout_text().find("runtime API failed"), std::string::npos) << bootstrap.stdout_text();
}

TEST(LambdaInit, RetriesAnUnreachableRuntimeApiThenExitsNonZero) {
  std::string endpoint;
  {
    FakeRuntimeApi closed;  // a port that was just free: nothing listens there now
    endpoint = closed.endpoint();
  }
  const auto start = std::chrono::steady_clock::now();
  ChildProcess bootstrap({LCMD_BINARY}, {"AWS_LAMBDA_RUNTIME_API=" + endpoint, "LCMD_MODEL=" + tiny_model().string()});
  EXPECT_EQ(bootstrap.wait(30s), 1);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(seconds, 0.7);  // 5 tries, backing off 0.05 + 0.1 + 0.2 + 0.4 s
  EXPECT_NE(bootstrap.stdout_text().find("failed 5 times"), std::string::npos) << bootstrap.stdout_text();
}

TEST(LambdaInit, WithoutTheRuntimeApiVariableLambdaModeIsRefused) {
  const CommandResult r = run_command({LCMD_BINARY, "lambda"}, 30s, {"AWS_LAMBDA_RUNTIME_API"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("AWS_LAMBDA_RUNTIME_API is not set"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lcmd::test
