// Issue 6, security: the optional API key (bearer token, compared in constant time), the
// headers of every response, the loopback default address, prompts kept out of the logs,
// and no request field that can name a file.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "fake_runtime_api.h"
#include "image/base64.h"
#include "serve/bearer_auth.h"
#include "serve/deadline.h"
#include "serve/httplib_include.h"
#include "serve/request.h"
#include "serve_test_util.h"
#include "support/test_support.h"

namespace lcmd::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using serve::BearerAuth;

const std::string kKey = "lcmd-test-key-0123456789abcdef";
// Distinctive, so that finding it in a log cannot be a coincidence.
const std::string kSecretPrompt = "zebra-quokka private prompt 7731";
const std::string kSecretNegative = "walrus-ibis negative 4419";

std::string last_byte_changed(std::string key) {
  key.back() = key.back() == 'f' ? 'e' : 'f';
  return key;
}

// ---- the comparison and the header check ----

TEST(BearerAuth, ConstantTimeEqualsIsExactEquality) {
  EXPECT_TRUE(serve::constant_time_equals(kKey, kKey));
  EXPECT_TRUE(serve::constant_time_equals("", ""));
  EXPECT_FALSE(serve::constant_time_equals(last_byte_changed(kKey), kKey));
  EXPECT_FALSE(serve::constant_time_equals("x" + kKey.substr(1), kKey));
  EXPECT_FALSE(serve::constant_time_equals(kKey.substr(0, kKey.size() - 1), kKey));  // a prefix
  EXPECT_FALSE(serve::constant_time_equals(kKey + "x", kKey));                        // longer
  EXPECT_FALSE(serve::constant_time_equals("", kKey));
  EXPECT_FALSE(serve::constant_time_equals(kKey, ""));
  // A NUL byte where the expected key ends must not count as "equal so far".
  EXPECT_FALSE(serve::constant_time_equals(std::string("ab\0", 3), "ab"));
}

TEST(BearerAuth, ChecksTheAuthorizationHeader) {
  const BearerAuth auth(kKey);
  EXPECT_EQ(auth.check("Bearer " + kKey), BearerAuth::Verdict::Allowed);
  EXPECT_EQ(auth.check("bearer " + kKey), BearerAuth::Verdict::Allowed);  // the scheme is case-insensitive
  EXPECT_EQ(auth.check(""), BearerAuth::Verdict::MissingCredentials);
  for (const std::string& wrong : {"Bearer " + last_byte_changed(kKey), "Bearer " + kKey.substr(0, kKey.size() - 1),
                                   "Bearer " + kKey + "0", std::string("Bearer "), std::string("Bearer"), kKey,
                                   "Basic " + kKey,
                                   "Bearer" + kKey, "Token " + kKey})
    EXPECT_EQ(auth.check(wrong), BearerAuth::Verdict::WrongCredentials) << wrong;
  EXPECT_EQ(BearerAuth().check(""), BearerAuth::Verdict::Allowed);  // no key: open
  EXPECT_FALSE(BearerAuth().enabled());
  EXPECT_THROW(BearerAuth("two words"), InputError);
  EXPECT_THROW(BearerAuth("tab\tkey"), InputError);
  EXPECT_THROW(BearerAuth(std::string(1025, 'k')), InputError);
}

// ---- lcmd serve --api-key ----

std::unique_ptr<httplib::Client> client_for(int port) {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
  client->set_connection_timeout(5, 0);
  client->set_read_timeout(60, 0);
  return client;
}

httplib::Headers bearer(const std::string& key) { return {{"Authorization", "Bearer " + key}}; }

const std::string kSmallRequest = R"({"prompt":"a red bicycle","seed":7,"width":64,"height":64,"steps":1})";

class ServeWithApiKey : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new ServeProcess({"--api-key", kKey}); }
  static void TearDownTestSuite() { delete server_; }
  static int port() { return server_->port(); }
  static ServeProcess* server_;
};
ServeProcess* ServeWithApiKey::server_ = nullptr;

void expect_unauthorized(const httplib::Result& res, const char* challenge_part, const char* message_part) {
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401) << res->body;
  EXPECT_EQ(res->get_header_value("WWW-Authenticate").rfind("Bearer", 0), 0u) << res->get_header_value("WWW-Authenticate");
  EXPECT_NE(res->get_header_value("WWW-Authenticate").find(challenge_part), std::string::npos);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  const json error = json::parse(res->body).at("error");
  EXPECT_EQ(error.at("type"), "authentication_error");
  EXPECT_NE(error.at("message").get<std::string>().find(message_part), std::string::npos) << error;
  EXPECT_EQ(res->body.find(kKey), std::string::npos);  // the key is never echoed
}

TEST_F(ServeWithApiKey, EveryRouteButHealthNeedsTheKey) {
  const auto health = client_for(port())->Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);  // liveness probes carry no credentials

  expect_unauthorized(client_for(port())->Get("/metrics"), "realm", "needs an API key");
  expect_unauthorized(client_for(port())->Post("/v1/generate", kSmallRequest, "application/json"), "realm",
                      "needs an API key");
  expect_unauthorized(client_for(port())->Post("/v1/images/generations", R"({"prompt":"x"})", "application/json"),
                      "realm", "needs an API key");
  // Unknown routes do not reveal themselves to a client without the key.
  expect_unauthorized(client_for(port())->Get("/v2/secret"), "realm", "needs an API key");

  const auto metrics = client_for(port())->Get("/metrics", bearer(kKey));
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  const auto generated = client_for(port())->Post("/v1/generate", bearer(kKey), kSmallRequest, "application/json");
  ASSERT_TRUE(generated);
  EXPECT_EQ(generated->status, 200) << generated->body;
}

TEST_F(ServeWithApiKey, WrongKeysAreRefused) {
  for (const std::string& key : {last_byte_changed(kKey), kKey.substr(0, kKey.size() - 1), kKey + "x",
                                 std::string("not-the-key"), std::string("")}) {
    expect_unauthorized(client_for(port())->Post("/v1/generate", bearer(key), kSmallRequest, "application/json"),
                        "invalid_token", "not valid");
  }
  const httplib::Headers basic = {{"Authorization", "Basic " + base64_encode(bytes_of("user:" + kKey))}};
  expect_unauthorized(client_for(port())->Post("/v1/generate", basic, kSmallRequest, "application/json"),
                      "invalid_token", "not valid");
  EXPECT_TRUE(server_->process().running());
}

// Sends the pieces over one raw connection, 100 ms apart (so that each arrives on its own),
// and returns everything the server writes until it closes.
std::string exchange_raw(int port, const std::vector<std::string>& pieces) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{15, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    close(fd);
    return "connect failed";
  }
  for (const std::string& piece : pieces) {
    (void)!send(fd, piece.data(), piece.size(), MSG_NOSIGNAL);
    std::this_thread::sleep_for(100ms);
  }
  std::string answer;
  char buffer[4096];
  for (ssize_t n; (n = recv(fd, buffer, sizeof buffer, 0)) > 0;) answer.append(buffer, static_cast<size_t>(n));
  close(fd);
  return answer;
}
std::string exchange_raw(int port, const std::string& request) { return exchange_raw(port, std::vector{request}); }

size_t count_responses(const std::string& answer) {
  size_t count = 0;
  for (size_t at = answer.find("HTTP/1.1 "); at != std::string::npos; at = answer.find("HTTP/1.1 ", at + 1)) ++count;
  return count;
}

TEST_F(ServeWithApiKey, RefusedRequestBodyIsNotParsedAsAnotherRequest) {
  // A refused POST whose body looks like a request of its own, then a real request on the same
  // connection: the body is read as a body (no answer of its own) and the connection goes on.
  const std::string smuggled = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string answer = exchange_raw(
      port(), {"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                   std::to_string(smuggled.size()) + "\r\n\r\n",
               smuggled, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"});
  EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0u) << answer;
  EXPECT_EQ(count_responses(answer), 2u) << answer;
  EXPECT_NE(answer.find("HTTP/1.1 200"), std::string::npos) << answer;
  EXPECT_NE(answer.find(R"({"status":"ok"})"), std::string::npos) << answer;
}

// cpp-httplib reads the body of a POST or PUT that declares no length until the connection
// closes: such a request used to wait out the 10 s read timeout. It has no body in HTTP/1.1, so
// it is answered at once (411), and the bytes after it are the next request.
TEST_F(ServeWithApiKey, BodyMethodsWithoutALengthAreAnsweredAtOnce) {
  const std::string key = "Authorization: Bearer " + kKey + "\r\n";
  for (const std::string method : {"POST", "PUT"}) {
    const auto start = std::chrono::steady_clock::now();
    const std::string answer =
        exchange_raw(port(), {method + " /v1/generate HTTP/1.1\r\nHost: x\r\n" + key + "\r\n",
                              "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"});
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5)) << method;
    EXPECT_EQ(answer.rfind("HTTP/1.1 411", 0), 0u) << answer;
    EXPECT_NE(answer.find("no Content-Length header"), std::string::npos) << answer;
    EXPECT_EQ(count_responses(answer), 2u) << answer;
    EXPECT_NE(answer.find(R"({"status":"ok"})"), std::string::npos) << answer;
  }
  // Without the key the answer is still the 401; chunked and explicitly empty bodies reach the route.
  EXPECT_EQ(exchange_raw(port(), "PUT /v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").rfind("HTTP/1.1 401", 0),
            0u);
  const std::string chunked = exchange_raw(port(), "POST /v1/generate HTTP/1.1\r\nHost: x\r\n" + key +
                                                       "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                                       "2\r\n{}\r\n0\r\n\r\n");
  EXPECT_EQ(chunked.rfind("HTTP/1.1 400", 0), 0u) << chunked;
  EXPECT_NE(chunked.find("prompt"), std::string::npos) << chunked;
  const std::string empty = exchange_raw(
      port(), "POST /v1/generate HTTP/1.1\r\nHost: x\r\n" + key + "Content-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(empty.rfind("HTTP/1.1 400", 0), 0u) << empty;
}

TEST_F(ServeWithApiKey, OversizedOrMisroutedRequestsWithoutTheKeyAre401) {
  const std::string big(70 * 1024, ' ');
  expect_unauthorized(client_for(port())->Post("/v1/generate", big, "application/json"), "realm", "needs an API key");
  expect_unauthorized(client_for(port())->Post("/healthz/x", "{}", "application/json"), "realm", "needs an API key");
  const auto wrong_method = client_for(port())->Post("/metrics", "{}", "application/json");
  expect_unauthorized(wrong_method, "realm", "needs an API key");
  EXPECT_FALSE(wrong_method->has_header("Allow"));
}

TEST(ServeApiKey, KeyFromTheEnvironmentAndEmptyKeyRefused) {
  const ServeProcess server({}, tiny_model(), {"LCMD_API_KEY=" + kKey});
  expect_unauthorized(client_for(server.port())->Get("/metrics"), "realm", "needs an API key");
  expect_unauthorized(client_for(server.port())->Get("/metrics", bearer(last_byte_changed(kKey))), "invalid_token",
                      "not valid");
  const auto ok = client_for(server.port())->Get("/metrics", bearer(kKey));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);

  const CommandResult empty =
      run_command({LCMD_BINARY, "serve", "--model", tiny_model().string(), "--port", "0", "--api-key", ""}, 60s);
  EXPECT_EQ(empty.status, 2);
  EXPECT_NE(empty.err.find("--api-key must not be empty"), std::string::npos) << empty.err;
  const CommandResult spaced = run_command(
      {LCMD_BINARY, "serve", "--model", tiny_model().string(), "--port", "0", "--api-key", "two words"}, 60s);
  EXPECT_EQ(spaced.status, 2);
  EXPECT_NE(spaced.err.find("printable ASCII without spaces"), std::string::npos) << spaced.err;
}

// ---- response headers ----

// The header block of a raw HTTP answer, names lower-cased.
std::map<std::string, std::string> headers_of(const std::string& answer) {
  std::map<std::string, std::string> headers;
  std::istringstream lines(answer.substr(0, answer.find("\r\n\r\n")));
  std::string line;
  std::getline(lines, line);  // the status line
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
  }
  return headers;
}

TEST(ServeHeaders, EveryResponseHasAContentTypeAndNosniff) {
  const ServeProcess server({"--max-body-bytes", "1024", "--read-timeout", "2"});
  const std::string post = "POST /v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
                           "application/json\r\n";
  auto with_body = [&](const std::string& body, const std::string& extra = "") {
    return post + extra + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  };
  struct Case {
    const char* what;
    std::string request;
    int status;
    const char* content_type;
  };
  const Case cases[] = {
      {"health", "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200, "application/json"},
      {"metrics", "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200, "text/plain; version=0.0.4"},
      {"image as JSON", with_body(kSmallRequest), 200, "application/json"},
      {"image as PNG", with_body(kSmallRequest, "Accept: image/png\r\n"), 200, "image/png"},
      {"bad request", with_body(R"({"prompt":""})"), 400, "application/json"},
      {"not found", "GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "application/json"},
      {"wrong method", "GET /v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "application/json"},
      {"too large", with_body(std::string(2048, ' ')), 413, "application/json"},
      {"not HTTP", "HELLO\r\n\r\n", 400, "application/json"},
  };
  for (const Case& c : cases) {
    const std::string answer = exchange_raw(server.port(), c.request);
    ASSERT_EQ(answer.rfind("HTTP/1.1 " + std::to_string(c.status), 0), 0u) << c.what << ":\n" << answer.substr(0, 300);
    const auto headers = headers_of(answer);
    EXPECT_EQ(headers.count("content-type") ? headers.at("content-type") : "(none)", c.content_type) << c.what;
    EXPECT_EQ(headers.count("x-content-type-options") ? headers.at("x-content-type-options") : "(none)", "nosniff")
        << c.what;
  }
}

// ---- the listening address ----

// The local addresses of the process's listening TCP sockets on `port`, as /proc/PID/net/tcp
// and tcp6 write them (hex, e.g. 0100007F = 127.0.0.1).
std::vector<std::string> listening_addresses(pid_t pid, int port) {
  std::vector<std::string> found;
  char port_hex[8];
  std::snprintf(port_hex, sizeof port_hex, "%04X", port);
  for (const char* table : {"tcp", "tcp6"}) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/net/" + table);
    std::string line;
    std::getline(in, line);  // the column names
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      fields >> slot >> local >> remote >> state;
      if (state == "0A" && local.substr(local.find(':') + 1) == port_hex) found.push_back(local.substr(0, local.find(':')));
    }
  }
  return found;
}

TEST(ServeAddress, BindsTheLoopbackAddressByDefault) {
  ChildProcess server({LCMD_BINARY, "serve", "--model", tiny_model().string(), "--port", "0"});
  const auto line = server.wait_for_line("\"listening\"", 60s);
  ASSERT_TRUE(line) << server.stderr_text();
  const json listening = json::parse(*line);
  const int port = listening.at("port").get<int>();
  EXPECT_EQ(listening.at("url"), "http://127.0.0.1:" + std::to_string(port));
  EXPECT_EQ(listening_addresses(server.pid(), port), std::vector<std::string>{"0100007F"});
}

// ---- prompts in logs ----

json secret_request() {
  return {{"prompt", kSecretPrompt}, {"negative_prompt", kSecretNegative}, {"seed", 3}, {"width", 64},
          {"height", 64}, {"steps", 1}, {"guidance_scale", 2.0}};
}

void expect_no_secret(const std::string& text, const char* where) {
  EXPECT_EQ(text.find(kSecretPrompt), std::string::npos) << where << ":\n" << text;
  EXPECT_EQ(text.find(kSecretNegative), std::string::npos) << where << ":\n" << text;
}

TEST(ServeLogs, NoPromptInAnyLogLineUnlessAsked) {
  json invalid = secret_request();
  invalid["steps"] = 99;  // parsed far enough to have read the prompt, then refused
  json openai = {{"prompt", kSecretPrompt}, {"size", "64x64"}, {"steps", 1}};
  {
    ServeProcess server;
    auto client = client_for(server.port());
    ASSERT_EQ(client->Post("/v1/generate", secret_request().dump(), "application/json")->status, 200);
    ASSERT_EQ(client->Post("/v1/generate", invalid.dump(), "application/json")->status, 400);
    ASSERT_EQ(client->Post("/v1/images/generations", openai.dump(), "application/json")->status, 200);
    server.process().send_signal(SIGTERM);
    ASSERT_EQ(server.process().wait(30s), 0);
    server.process().wait_for_output_end(5s);
    EXPECT_NE(server.process().stdout_text().find("\"prompt_bytes\":" + std::to_string(kSecretPrompt.size())),
              std::string::npos);
    expect_no_secret(server.process().stdout_text(), "stdout");
    expect_no_secret(server.process().stderr_text(), "stderr");
  }
  ServeProcess verbose({"--log-prompts"});
  ASSERT_EQ(client_for(verbose.port())->Post("/v1/generate", secret_request().dump(), "application/json")->status, 200);
  const auto line = verbose.process().wait_for_line("\"seed\":3", 10s);
  ASSERT_TRUE(line) << verbose.process().stdout_text();
  const json log = json::parse(*line);
  EXPECT_EQ(log.at("prompt"), kSecretPrompt);
  EXPECT_EQ(log.at("negative_prompt"), kSecretNegative);
}

TEST(LambdaLogs, NoPromptInAnyLogLineUnlessAsked) {
  for (const bool log_prompts : {false, true}) {
    FakeRuntimeApi api;
    std::vector<std::string> env = {"AWS_LAMBDA_RUNTIME_API=" + api.endpoint(), "LCMD_MODEL=" + tiny_model().string(),
                                    "LCMD_THREADS=2"};
    if (log_prompts) env.push_back("LCMD_LOG_PROMPTS=1");
    ChildProcess bootstrap({LCMD_BINARY}, env);
    ASSERT_TRUE(bootstrap.wait_for_line("\"init\"", 60s)) << bootstrap.stderr_text();
    json invalid = secret_request();
    invalid["width"] = 7;
    const json url_event = {{"version", "2.0"},
                            {"rawPath", "/"},
                            {"headers", {{"content-type", "application/json"}}},
                            {"requestContext", {{"http", {{"method", "POST"}, {"path", "/"}}}}},
                            {"body", secret_request().dump()},
                            {"isBase64Encoded", false}};
    std::vector<std::string> ids;
    for (const json& event : {secret_request(), invalid, url_event})
      ids.push_back(api.invoke(event.dump(), serve::unix_now_ms() + 60'000));
    for (const std::string& id : ids) {
      ASSERT_TRUE(api.wait_reply(id, 60s)) << bootstrap.stderr_text();
      ASSERT_TRUE(bootstrap.wait_for_line("\"request_id\":\"" + id + "\"", 10s)) << bootstrap.stdout_text();
    }
    if (!log_prompts) {
      expect_no_secret(bootstrap.stdout_text(), "stdout");
      expect_no_secret(bootstrap.stderr_text(), "stderr");
    } else {
      const json log = json::parse(*bootstrap.wait_for_line("\"request_id\":\"" + ids[0] + "\"", 1s));
      EXPECT_EQ(log.at("prompt"), kSecretPrompt);
      EXPECT_EQ(log.at("negative_prompt"), kSecretNegative);
    }
  }
}

// ---- no request field names a file ----

TEST(RequestFields, NoFieldCanNameAFile) {
  const serve::RequestLimits limits;
  const char* path = "/etc/passwd";
  // Every field that would load something is unknown to both schemas.
  for (const char* field : {"model", "lora", "loras", "taesd", "tokenizer", "config_dir", "output", "file", "path"}) {
    const std::string body = json{{"prompt", "x"}, {field, path}}.dump();
    try {
      serve::parse_generate_request(body, limits);
      ADD_FAILURE() << field << " accepted";
    } catch (const serve::ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_NE(std::string(e.what()).find("unknown field"), std::string::npos) << e.what();
    }
  }
  // The decoder is a name from a fixed set, never a folder.
  for (const char* decoder : {"/etc/passwd", "../tiny-taesd", "taesd/", "TAESD", "vae\n"}) {
    const std::string body = json{{"prompt", "x"}, {"decoder", decoder}}.dump();
    EXPECT_THROW(serve::parse_generate_request(body, limits), serve::ApiError) << decoder;
  }
  // OpenAI's "model" is accepted for compatibility and ignored: the request is the same as without it.
  const GenerateRequest with_model =
      serve::parse_openai_image_request(json{{"prompt", "x"}, {"model", path}, {"seed", 1}}.dump(), limits);
  const GenerateRequest without =
      serve::parse_openai_image_request(json{{"prompt", "x"}, {"seed", 1}}.dump(), limits);
  EXPECT_EQ(with_model.prompt, without.prompt);
  EXPECT_EQ(with_model.decoder, without.decoder);
  EXPECT_EQ(with_model.width, without.width);
  for (const char* field : {"lora", "taesd", "decoder", "tokenizer", "output"})
    EXPECT_THROW(serve::parse_openai_image_request(json{{"prompt", "x"}, {field, path}}.dump(), limits),
                 serve::ApiError)
        << field;
}

TEST(RequestFields, ServerRefusesAPathAsDecoder) {
  const ServeProcess server({"--taesd", (golden_dir() / "tiny-taesd").string()});
  const std::string taesd_dir = (golden_dir() / "tiny-taesd").string();
  const auto res = client_for(server.port())->Post(
      "/v1/generate", json{{"prompt", "x"}, {"steps", 1}, {"decoder", taesd_dir}}.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(res->body.find("decoder must be \\\"vae\\\" or \\\"taesd\\\""), std::string::npos) << res->body;
}

}  // namespace
}  // namespace lcmd::test
