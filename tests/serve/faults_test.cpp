// Issue 6, faults: the Lambda Runtime API failing (HTTP 5xx, or the connection closed without
// an answer) on /next and on the reply posts — retried with backoff, then the runtime exits
// non-zero so that Lambda replaces the environment — and HTTP clients that hang up in the
// middle of their request, while it runs, or in the middle of the response.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "fake_runtime_api.h"
#include "serve/deadline.h"
#include "serve/httplib_include.h"
#include "serve_test_util.h"
#include "support/test_support.h"

namespace lcmd::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Route = FakeRuntimeApi::Route;
using Fault = FakeRuntimeApi::Fault;

std::string small_request(uint64_t seed) {
  return json{{"prompt", "a lighthouse at dusk"}, {"seed", seed}, {"width", 64}, {"height", 64}, {"steps", 1}}.dump();
}

std::vector<std::string> lambda_env(const FakeRuntimeApi& api) {
  return {"AWS_LAMBDA_RUNTIME_API=" + api.endpoint(), "LCMD_MODEL=" + tiny_model().string(), "LCMD_THREADS=2"};
}

const char* name_of(Fault fault) { return fault == Fault::ServerError ? "HTTP 500" : "closed connection"; }

// ---- the Lambda Runtime API ----

class LambdaFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    api_ = std::make_unique<FakeRuntimeApi>();
    bootstrap_ = std::make_unique<ChildProcess>(std::vector<std::string>{LCMD_BINARY}, lambda_env(*api_));
    ASSERT_TRUE(bootstrap_->wait_for_line("\"init\"", 60s)) << bootstrap_->stdout_text() << bootstrap_->stderr_text();
  }
  void TearDown() override {
    bootstrap_.reset();  // killed and reaped if still running
    api_.reset();
  }
  std::optional<FakeRuntimeApi::Reply> invoke(uint64_t seed) {
    const std::string id = api_->invoke(small_request(seed), serve::unix_now_ms() + 60'000);
    return api_->wait_reply(id, 60s);
  }
  std::unique_ptr<FakeRuntimeApi> api_;
  std::unique_ptr<ChildProcess> bootstrap_;
};

TEST_F(LambdaFaults, TransientFaultsOnNextAreRetried) {
  uint64_t seed = 1;
  for (const Fault fault : {Fault::ServerError, Fault::CloseConnection}) {
    const int before = api_->faults_served(Route::Next);
    api_->inject_fault(Route::Next, fault, 2);
    const auto reply = invoke(seed++);
    ASSERT_TRUE(reply) << name_of(fault) << "\n" << bootstrap_->stdout_text();
    EXPECT_EQ(reply->kind, "response") << reply->body;
    EXPECT_EQ(api_->faults_served(Route::Next) - before, 2) << name_of(fault);
  }
  EXPECT_TRUE(bootstrap_->running());
}

TEST_F(LambdaFaults, TransientFaultsOnTheResponsePostAreRetried) {
  uint64_t seed = 10;
  for (const Fault fault : {Fault::ServerError, Fault::CloseConnection}) {
    const int before = api_->faults_served(Route::Reply);
    api_->inject_fault(Route::Reply, fault, 2);
    const auto reply = invoke(seed++);
    ASSERT_TRUE(reply) << name_of(fault) << "\n" << bootstrap_->stdout_text();
    EXPECT_EQ(reply->kind, "response") << reply->body;
    EXPECT_EQ(json::parse(reply->body).at("seed"), seed - 1);
    EXPECT_EQ(api_->faults_served(Route::Reply) - before, 2) << name_of(fault);
  }
  // A function error is posted through the same retries.
  api_->inject_fault(Route::Reply, Fault::ServerError, 1);
  const std::string id = api_->invoke(R"({"prompt":""})", serve::unix_now_ms() + 60'000);
  const auto error = api_->wait_reply(id, 60s);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->kind, "error");
  EXPECT_TRUE(bootstrap_->running());
}

// Persistent faults: 5 tries backing off 50, 100, 200, 400 ms, then exit 1 with a message.
void expect_gives_up(ChildProcess& bootstrap, const std::string& failing_call,
                     std::chrono::steady_clock::time_point fault_start) {
  EXPECT_EQ(bootstrap.wait(20s), 1);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - fault_start).count();
  EXPECT_GE(seconds, 0.7);
  bootstrap.wait_for_output_end(5s);
  const std::string log = bootstrap.stdout_text();
  EXPECT_NE(log.find("the Runtime API failed 5 times"), std::string::npos) << log;
  EXPECT_NE(log.find(failing_call), std::string::npos) << log;
  EXPECT_NE(log.find("exiting so that Lambda restarts the execution environment"), std::string::npos) << log;
}

TEST_F(LambdaFaults, PersistentServerErrorsOnNextExitNonZero) {
  const auto start = std::chrono::steady_clock::now();
  api_->inject_fault(Route::Next, Fault::ServerError, FakeRuntimeApi::kForever);
  expect_gives_up(*bootstrap_, "GET http://" + api_->endpoint() + "/2018-06-01/runtime/invocation/next", start);
  EXPECT_GE(api_->faults_served(Route::Next), 5);
}

TEST_F(LambdaFaults, PersistentlyClosedConnectionsOnNextExitNonZero) {
  const auto start = std::chrono::steady_clock::now();
  api_->inject_fault(Route::Next, Fault::CloseConnection, FakeRuntimeApi::kForever);
  expect_gives_up(*bootstrap_, "/runtime/invocation/next", start);
}

TEST_F(LambdaFaults, PersistentFaultsOnTheResponsePostExitNonZero) {
  for (const Fault fault : {Fault::ServerError, Fault::CloseConnection}) {
    if (fault == Fault::CloseConnection) SetUp();  // a fresh runtime: the first one has exited
    api_->inject_fault(Route::Reply, fault, FakeRuntimeApi::kForever);
    const auto start = std::chrono::steady_clock::now();
    api_->invoke(small_request(20), serve::unix_now_ms() + 60'000);
    expect_gives_up(*bootstrap_, "/response", start);
  }
}

// ---- HTTP clients that hang up ----

// A raw client socket with bounded reads.
class RawClient {
 public:
  explicit RawClient(int port, int receive_buffer = 0) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    if (receive_buffer > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    timeval timeout{20, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) throw std::runtime_error("connect");
  }
  ~RawClient() { close(fd_); }
  void send_text(const std::string& text) { (void)!::send(fd_, text.data(), text.size(), MSG_NOSIGNAL); }
  std::string read_some() {
    char buffer[1024];
    const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
  }
  // Closes with a reset (SO_LINGER 0), as a crashed or killed client does.
  void reset() {
    const linger abort_on_close{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
  }

 private:
  int fd_;
};

std::string post_head(size_t content_length) {
  return "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(content_length) + "\r\n\r\n";
}

void expect_serves_next_request(const ServeProcess& server, uint64_t seed) {
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(60, 0);
  const auto res = client.Post("/v1/generate", small_request(seed), "application/json");
  ASSERT_TRUE(res) << "the server stopped answering";
  EXPECT_EQ(res->status, 200) << res->body;
}

class ClientDisconnects : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new ServeProcess({"--read-timeout", "2"}); }
  static void TearDownTestSuite() { delete server_; }
  static ServeProcess* server_;
};
ServeProcess* ClientDisconnects::server_ = nullptr;

TEST_F(ClientDisconnects, MidRequestBody) {
  const std::string body = small_request(30);
  for (const bool reset : {false, true}) {
    RawClient client(server_->port());
    client.send_text(post_head(body.size()) + body.substr(0, body.size() / 2));
    if (reset) client.reset();
  }  // gone with half a body
  RawClient headers_only(server_->port());
  headers_only.send_text("POST /v1/generate HTTP/1.1\r\nHost: 1");
  expect_serves_next_request(*server_, 31);
}

TEST_F(ClientDisconnects, WhileItsGenerationRuns) {
  const std::string slow = json{{"prompt", "a lighthouse"}, {"seed", 32}, {"width", 512}, {"height", 512}, {"steps", 8}}.dump();
  const double generations_before = server_->metric("lcmd_generations_total");
  {
    RawClient client(server_->port());
    client.send_text(post_head(slow.size()) + slow);
    ASSERT_TRUE(eventually([&] { return server_->metric("lcmd_generation_in_progress") == 1; }, 20s));
    client.reset();
  }
  // Stopped at the next denoising step, not run to the end, and not counted as a generation.
  EXPECT_TRUE(eventually([&] { return server_->metric("lcmd_generation_in_progress") == 0; }, 10s));
  EXPECT_EQ(server_->metric("lcmd_generations_total"), generations_before);
  EXPECT_TRUE(server_->process().running());
  expect_serves_next_request(*server_, 33);
}

TEST_F(ClientDisconnects, MidResponse) {
  // A 512x512 image answers ~1 MB of JSON; the client reads a few bytes with a small receive
  // buffer and resets the connection while the server is still writing.
  const std::string big = json{{"prompt", "a lighthouse"}, {"seed", 34}, {"width", 512}, {"height", 512}, {"steps", 1}}.dump();
  const int fds_before = open_fd_count(server_->process().pid());
  for (int i = 0; i < 3; ++i) {
    RawClient client(server_->port(), 4096);
    client.send_text(post_head(big.size()) + big);
    const std::string first = client.read_some();
    EXPECT_EQ(first.rfind("HTTP/1.1 200", 0), 0u) << first.substr(0, 100);
    client.reset();
  }
  EXPECT_TRUE(server_->process().running());
  expect_serves_next_request(*server_, 35);
  // The abandoned connections' sockets are closed, not leaked.
  EXPECT_TRUE(eventually([&] { return open_fd_count(server_->process().pid()) <= fds_before; }, 10s))
      << open_fd_count(server_->process().pid()) << " open descriptors, " << fds_before << " before";
}

}  // namespace
}  // namespace lcmd::test
