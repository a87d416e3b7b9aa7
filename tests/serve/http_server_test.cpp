// `lcmd serve` as a user runs it, with real clients: curl and the official openai npm client
// get the CLI's image for the same seed; the bad-input matrix answers the right status and
// message while the server keeps serving; limits, timeouts, metrics, the result cache, a
// client that leaves while queued, and SIGTERM draining.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <nlohmann/json.hpp>

#include "image/base64.h"
#include "serve/httplib_include.h"
#include "serve_test_util.h"
#include "support/test_support.h"

namespace lcmd::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

const char* kPrompt = "an orange fox in the snow";

std::string request_json(uint64_t seed, int side = 64, int steps = 2) {
  return json{{"prompt", kPrompt}, {"seed", seed}, {"width", side}, {"height", side}, {"steps", steps}}.dump();
}

std::unique_ptr<httplib::Client> client_for(int port) {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
  client->set_connection_timeout(5, 0);
  client->set_read_timeout(60, 0);
  client->set_write_timeout(10, 0);
  return client;
}

httplib::Result post(int port, const std::string& path, const std::string& body, const httplib::Headers& headers = {}) {
  return client_for(port)->Post(path.c_str(), headers, body, "application/json");
}

fs::path openai_client_dir() { return fs::path(__FILE__).parent_path() / "openai_client"; }

// A raw TCP connection, for clients that misbehave (send half a request, hang up early).
class RawConnection {
 public:
  explicit RawConnection(int port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval timeout{20, 0};  // a bound on every read, so a test cannot hang here
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) throw std::runtime_error("connect");
  }
  ~RawConnection() { close(); }
  void send_text(const std::string& text) { (void)!::send(fd_, text.data(), text.size(), MSG_NOSIGNAL); }
  // The first bytes the server sends, or "" when it closes first (or the 20 s read bound passes).
  std::string read_some() {
    char buffer[4096];
    const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

std::string http_request(const std::string& body) {
  return "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

// One server for the tests that do not need a fresh one: queue bound 4, result cache on,
// 2-second read timeout.
class HttpServe : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServeProcess({"--max-queue", "4", "--result-cache", "16", "--read-timeout", "2"});
  }
  static void TearDownTestSuite() { delete server_; }
  static int port() { return server_->port(); }
  static void expect_healthy() {
    const auto res = client_for(port())->Get("/healthz");
    ASSERT_TRUE(res) << "the server stopped answering";
    EXPECT_EQ(res->status, 200);
  }
  static ServeProcess* server_;
};
ServeProcess* HttpServe::server_ = nullptr;

TEST_F(HttpServe, CurlGetsTheCliImage) {
  const CommandResult r =
      run_command({"/usr/bin/curl", "-sS", "--max-time", "60", "-H", "Content-Type: application/json", "-d",
                   request_json(41), server_->base_url() + "/v1/generate"},
                  90s);
  ASSERT_EQ(r.status, 0) << r.err;
  const json response = json::parse(r.out);
  EXPECT_EQ(response.at("seed"), 41);
  EXPECT_EQ(response.at("height"), 64);
  const std::vector<uint8_t> png = base64_decode(response.at("image_base64").get<std::string>());
  EXPECT_EQ(png_size(png), std::make_pair(64, 64));
  EXPECT_EQ(png, cli_png(kPrompt, 41, 64, 64, 2));
}

TEST_F(HttpServe, CurlAcceptPngGetsTheRawImage) {
  const TempDir dir;
  const fs::path out = dir.path() / "fox.png";
  const CommandResult r =
      run_command({"/usr/bin/curl", "-sS", "--max-time", "60", "-H", "Accept: image/png", "-d", request_json(42), "-o",
                   out.string(), "-w", "%{http_code} %{content_type}", server_->base_url() + "/v1/generate"},
                  90s);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "200 image/png");
  std::ifstream in(out, std::ios::binary);
  const std::vector<uint8_t> png{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  EXPECT_EQ(png, cli_png(kPrompt, 42, 64, 64, 2));
}

TEST_F(HttpServe, OpenAiNodeClientGetsTheCliImage) {
  ASSERT_TRUE(fs::exists(openai_client_dir() / "node_modules/openai"))
      << "the openai npm client is not installed: run scripts/setup.sh (npm ci in " << openai_client_dir() << ")";
  const std::string script = (openai_client_dir() / "generate_image.mjs").string();
  const CommandResult r = run_command(
      {"/usr/bin/env", "node", script, server_->base_url() + "/v1", kPrompt, "64x48", "b64_json", "43"}, 90s);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(base64_decode(r.out), cli_png(kPrompt, 43, 64, 48, 4));  // steps: the default 4

  const CommandResult url =
      run_command({"/usr/bin/env", "node", script, server_->base_url() + "/v1", kPrompt, "64x64", "url"}, 90s);
  EXPECT_EQ(url.status, 3) << url.err;
  EXPECT_EQ(url.out,
            "status 400: response_format \"url\" is not supported: lcmd keeps no images to link to; use \"b64_json\"");
}

TEST_F(HttpServe, RandomSeedIsEchoedAndReproducesTheImage) {
  const auto res =
      post(port(), "/v1/generate", R"({"prompt":"an orange fox in the snow","width":64,"height":64,"steps":1})");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json response = json::parse(res->body);
  const uint64_t seed = response.at("seed").get<uint64_t>();
  EXPECT_LT(seed, uint64_t(1) << 53);
  EXPECT_EQ(res->get_header_value("X-Lcmd-Seed"), std::to_string(seed));
  EXPECT_EQ(base64_decode(response.at("image_base64").get<std::string>()), cli_png(kPrompt, seed, 64, 64, 1));
}

TEST_F(HttpServe, BadInputMatrixAnswersStatusAndMessageAndKeepsServing) {
  struct Case {
    const char* path;
    std::string body;
    int status;
    const char* message_part;
  };
  const std::string long_prompt(2001, 'p');
  const Case cases[] = {
      {"/v1/generate", R"({"width":64})", 400, "prompt is required"},
      {"/v1/generate", R"({"prompt":7})", 400, "prompt must be a string of 1..2000 bytes of UTF-8; got 7"},
      {"/v1/generate", R"({"prompt":""})", 400, "got an empty string"},
      {"/v1/generate", "{\"prompt\":\"" + long_prompt + "\"}", 400, "got 2001 bytes"},
      {"/v1/generate", "{\"prompt\":\"bad \xfe byte\"}", 400, "UTF-8"},
      {"/v1/generate", R"({"prompt":"x","width":"64"})", 400, "width must be a multiple of 8 in 8..768; got \"64\""},
      {"/v1/generate", R"({"prompt":"x","width":1000})", 400, "width must be a multiple of 8 in 8..768; got 1000"},
      {"/v1/generate", R"({"prompt":"x","height":12})", 400, "height must be a multiple of 8 in 8..768; got 12"},
      {"/v1/generate", R"({"prompt":"x","steps":0})", 400, "steps must be an integer in 1..8; got 0"},
      {"/v1/generate", R"({"prompt":"x","steps":1e9})", 400, "steps must be an integer in 1..8"},
      {"/v1/generate", R"({"prompt":"x","guidance_scale":-0.5})", 400, "guidance_scale must be a number in 0..20"},
      {"/v1/generate", R"({"prompt":"x","guidance_scale":[8]})", 400,
       "guidance_scale must be a number in 0..20; got an array"},
      {"/v1/generate", R"({"prompt":"x","seed":-5})", 400,
       "seed must be an integer in 0..18446744073709551615; got -5"},
      {"/v1/generate", R"({"prompt":"x","seed":99999999999999999999999})", 400, "seed must be an integer in 0.."},
      {"/v1/generate", R"({"prompt":"x","output_format":"webp"})", 400, "output_format must be \"png\"; got \"webp\""},
      {"/v1/generate", R"({"prompt":"x","lora":"y"})", 400, "unknown field 'lora'"},
      {"/v1/generate", R"({"prompt":"x")", 400, "the request body is not valid JSON"},
      {"/v1/generate", "", 400, "the request body is empty"},
      {"/v1/generate", "[]", 400, "must be a JSON object"},
      {"/v1/generate", std::string(70 * 1024, ' '), 413, "larger than the 65536-byte limit"},
      {"/v1/images/generations", R"({"prompt":"x","n":3})", 400, "n must be 1"},
      {"/v1/images/generations", R"({"prompt":"x","size":"1792x1024"})", 400, "size must be \"WIDTHxHEIGHT\""},
      {"/v1/images/generations", R"({"prompt":"x","style":"vivid"})", 400, "unknown field 'style'"},
      {"/v2/generate", "{}", 404, "no route for POST /v2/generate"},
  };
  for (const Case& c : cases) {
    const auto res = post(port(), c.path, c.body);
    ASSERT_TRUE(res) << c.message_part << ": no answer";
    EXPECT_EQ(res->status, c.status) << c.message_part << ": " << res->body;
    const json error = json::parse(res->body).at("error");
    EXPECT_NE(error.at("message").get<std::string>().find(c.message_part), std::string::npos)
        << c.message_part << " vs " << error;
    EXPECT_FALSE(error.at("type").get<std::string>().empty());
    expect_healthy();
  }
  const auto wrong_method = client_for(port())->Get("/v1/generate");
  ASSERT_TRUE(wrong_method);
  EXPECT_EQ(wrong_method->status, 405);
  EXPECT_EQ(wrong_method->get_header_value("Allow"), "POST");
  const auto ok = post(port(), "/v1/generate", request_json(44));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST_F(HttpServe, APortInUseIsAnErrorNotASharedPort) {
  const CommandResult second =
      run_command({LCMD_BINARY, "serve", "--model", tiny_model().string(), "--port", std::to_string(port())}, 60s);
  EXPECT_EQ(second.status, 1);
  EXPECT_NE(second.err.find("cannot listen on 127.0.0.1:" + std::to_string(port())), std::string::npos) << second.err;
  expect_healthy();
}

TEST_F(HttpServe, StalledClientsAreCutOffByTheReadTimeout) {
  // Headers that never finish, and a body shorter than its Content-Length: the server gives
  // up after its 2-second read timeout instead of holding a thread forever.
  for (const std::string partial :
       {std::string("POST /v1/generate HTTP/1.1\r\nHost: x\r\n"), http_request(request_json(1)).substr(0, 120)}) {
    RawConnection connection(port());
    connection.send_text(partial);
    const auto start = std::chrono::steady_clock::now();
    const std::string answer = connection.read_some();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GE(seconds, 1.5);
    EXPECT_LT(seconds, 15.0);
    EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer;
  }
  expect_healthy();
}

TEST_F(HttpServe, ResultCacheHitsAreReportedInTimingsAndMetrics) {
  const double hits_before = server_->metric("lcmd_result_cache_hits_total");
  const std::string body = request_json(45, 64, 3);
  const auto first = post(port(), "/v1/generate", body);
  const auto second = post(port(), "/v1/generate", body);
  ASSERT_TRUE(first && second);
  const json a = json::parse(first->body), b = json::parse(second->body);
  EXPECT_EQ(a.at("timings_ms").at("cache_hits").at("result"), false);
  EXPECT_EQ(b.at("timings_ms").at("cache_hits").at("result"), true);
  EXPECT_EQ(b.at("timings_ms").at("cache_hits").at("text_embedding"), false);
  EXPECT_EQ(a.at("image_base64"), b.at("image_base64"));
  EXPECT_EQ(server_->metric("lcmd_result_cache_hits_total"), hits_before + 1);
}

TEST_F(HttpServe, MetricsAreServedInPrometheusFormat) {
  ASSERT_TRUE(post(port(), "/v1/generate", request_json(46)));
  ASSERT_TRUE(post(port(), "/v1/generate", R"({"prompt":""})"));
  const auto res = client_for(port())->Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4");
  EXPECT_GE(server_->metric(R"(lcmd_http_requests_total{endpoint="generate",status="200"})"), 1);
  EXPECT_GE(server_->metric(R"(lcmd_http_requests_total{endpoint="generate",status="400"})"), 1);
  EXPECT_GE(server_->metric(R"(lcmd_http_request_duration_seconds_count{endpoint="generate"})"), 2);
  EXPECT_GE(server_->metric(R"(lcmd_http_request_duration_seconds_bucket{endpoint="generate",le="+Inf"})"), 2);
  EXPECT_GE(server_->metric("lcmd_generation_duration_seconds_count"), 1);
  EXPECT_GT(server_->metric(R"(lcmd_stage_seconds_total{stage="unet"})"), 0);
  EXPECT_EQ(server_->metric("lcmd_queue_depth"), 0);
  EXPECT_EQ(server_->metric("lcmd_queue_capacity"), 4);
  EXPECT_EQ(server_->metric("lcmd_result_cache_enabled"), 1);
  EXPECT_GT(server_->metric("process_resident_memory_bytes"), 1e6);
}

TEST_F(HttpServe, LogLinesCarryNoPrompt) {
  ASSERT_TRUE(post(port(), "/v1/generate", request_json(47)));
  ASSERT_TRUE(server_->process().wait_for_line("\"seed\":47", 10s)) << server_->process().stdout_text();
  EXPECT_EQ(server_->process().stdout_text().find(kPrompt), std::string::npos);
}

// Starts a slow generation (512x512, 8 steps: seconds on the tiny model) on `server` and
// returns once it runs.
std::future<httplib::Result> start_slow_request(ServeProcess& server, uint64_t seed) {
  auto result = std::async(std::launch::async, [port = server.port(), seed] {
    return post(port, "/v1/generate", request_json(seed, 512, 8));
  });
  EXPECT_TRUE(eventually([&] { return server.metric("lcmd_generation_in_progress") == 1; }, 20s));
  return result;
}

TEST(HttpServeQueue, ClientThatDisconnectsWhileQueuedIsDropped) {
  ServeProcess server({"--max-queue", "4"});
  auto slow = start_slow_request(server, 50);
  {
    RawConnection queued(server.port());
    queued.send_text(http_request(request_json(51)));
    ASSERT_TRUE(eventually([&] { return server.metric("lcmd_queue_depth") == 1; }, 10s));
  }  // the client hangs up while its request waits
  EXPECT_TRUE(eventually([&] { return server.metric("lcmd_queue_dropped_total") == 1; }, 5s));
  EXPECT_EQ(server.metric("lcmd_queue_depth"), 0);
  EXPECT_EQ(server.metric("lcmd_generation_in_progress"), 1);  // dropped before its turn came
  const auto done = slow.get();
  ASSERT_TRUE(done);
  EXPECT_EQ(done->status, 200);
  EXPECT_TRUE(eventually([&] { return server.metric("lcmd_generation_in_progress") == 0; }, 5s));
  EXPECT_EQ(server.metric("lcmd_generations_total"), 1);  // the dropped request never ran
}

TEST(HttpServeQueue, SigtermFinishesTheRunningRequestRefusesNewOnesAndExitsZero) {
  ServeProcess server({"--max-queue", "4"});
  auto slow = start_slow_request(server, 52);
  auto queued =
      std::async(std::launch::async, [port = server.port()] { return post(port, "/v1/generate", request_json(53)); });
  ASSERT_TRUE(eventually([&] { return server.metric("lcmd_queue_depth") == 1; }, 10s));
  server.process().send_signal(SIGTERM);
  ASSERT_TRUE(server.process().wait_for_line("shutting down", 10s));

  const auto refused = post(server.port(), "/v1/generate", request_json(54));
  if (refused) {  // the listening socket may already be closed, which refuses too
    EXPECT_EQ(refused->status, 503);
    EXPECT_NE(refused->body.find("shutting down"), std::string::npos);
  }
  const auto waiting = queued.get();
  ASSERT_TRUE(waiting);
  EXPECT_EQ(waiting->status, 503);
  const auto finished = slow.get();
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->status, 200);
  EXPECT_EQ(png_size(base64_decode(json::parse(finished->body).at("image_base64").get<std::string>())),
            std::make_pair(512, 512));
  EXPECT_EQ(server.process().wait(30s), 0);
}

TEST(HttpServeLoad, TwentyConcurrentClientsWithQueueBoundFour) {
  ServeProcess server({"--max-queue", "4"});
  const std::string body = request_json(60, 256, 4);
  ASSERT_EQ(post(server.port(), "/v1/generate", body)->status, 200);

  // Two rounds of 20 clients at once. The first also sets up what a burst needs once (the
  // connection threads' malloc arenas, ~8 MB here); after it, another burst must not grow the
  // process: nothing a request allocates may outlive it.
  std::vector<int64_t> rss_after_round;
  for (int round = 0; round < 2; ++round) {
    constexpr int kClients = 20;
    std::vector<std::future<httplib::Result>> clients;
    std::promise<void> go;
    std::shared_future<void> start = go.get_future().share();
    for (int i = 0; i < kClients; ++i)
      clients.push_back(std::async(std::launch::async, [&, i] {
        start.wait();
        return post(server.port(), "/v1/generate", request_json(100 + 20 * round + i, 256, 4));
      }));
    go.set_value();
    int ok = 0, rejected = 0;
    std::vector<httplib::Result> results;
    for (auto& client : clients) results.push_back(client.get());
    for (auto& res : results) {
      ASSERT_TRUE(res) << "a client got no answer: " << httplib::to_string(res.error()) << "\nserver log:\n"
                       << server.process().stdout_text();
      if (res->status == 200) {
        ++ok;
      } else {
        ASSERT_EQ(res->status, 429) << res->body;
        ++rejected;
        const int retry_after = std::stoi(res->get_header_value("Retry-After"));
        EXPECT_GE(retry_after, 1);
        EXPECT_NE(res->body.find("queue_full"), std::string::npos);
      }
    }
    std::printf("[ load ] 20 clients, queue bound 4: %d answered 200, %d answered 429\n", ok, rejected);
    EXPECT_GE(ok, 1);
    EXPECT_GE(rejected, 1);  // 20 at once cannot all fit in 1 running + 4 waiting
    EXPECT_TRUE(server.process().running());
    EXPECT_EQ(server.metric("lcmd_queue_depth"), 0);
    ASSERT_EQ(post(server.port(), "/v1/generate", body)->status, 200);
    rss_after_round.push_back(server.resident_bytes());
  }
  std::printf("[ load ] RSS after the first burst %.1f MB, after the second %.1f MB\n", rss_after_round[0] / 1e6,
              rss_after_round[1] / 1e6);
  EXPECT_LE(std::abs(rss_after_round[1] - rss_after_round[0]), rss_after_round[0] / 10);
}

}  // namespace
}  // namespace lcmd::test

namespace lcmd::test {
namespace {

// The TAESD path through the server: a request asking for the tiny decoder gets diffusers'
// AutoencoderTiny image (golden tiny-taesd-cases run00, fp32), the default decoder stays the VAE.
TEST(HttpServeTaesd, DecoderFieldSelectsTheTinyDecoder) {
  ServeProcess server({"--precision", "fp32", "--taesd", (golden_dir() / "tiny-taesd").string()});
  const json body{{"prompt", "a photo of a cat"}, {"seed", 0}, {"steps", 4}, {"guidance_scale", 8.0},
                  {"negative_prompt", "blurry"}, {"decoder", "taesd"}};
  const auto res = post(server.port(), "/v1/generate", body.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const std::vector<uint8_t> png = base64_decode(json::parse(res->body).at("image_base64").get<std::string>());
  const std::vector<uint8_t> cli = [&] {
    TempDir dir;
    const CommandResult r = run_command({LCMD_BINARY, "generate", "--model", tiny_model().string(), "--prompt",
                                         "a photo of a cat", "--seed", "0", "--precision", "fp32", "--decoder", "taesd",
                                         "--taesd", (golden_dir() / "tiny-taesd").string(), "--output",
                                         (dir.path() / "t.png").string()},
                                        90s);
    EXPECT_EQ(r.status, 0) << r.err;
    std::ifstream in(dir.path() / "t.png", std::ios::binary);
    return std::vector<uint8_t>{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }();
  EXPECT_EQ(png, cli);
  const json vae_body{{"prompt", "a photo of a cat"}, {"seed", 0}, {"steps", 4}};
  const auto vae = post(server.port(), "/v1/generate", vae_body.dump());
  ASSERT_TRUE(vae);
  EXPECT_NE(base64_decode(json::parse(vae->body).at("image_base64").get<std::string>()), png);
}

TEST(HttpServeTaesd, TaesdRequestWithoutTaesdLoadedIsABadRequest) {
  ServeProcess server({"--precision", "fp32"});
  const auto res = post(server.port(), "/v1/generate", R"({"prompt":"x","steps":1,"decoder":"taesd"})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  EXPECT_NE(res->body.find("taesd"), std::string::npos) << res->body;
}

}  // namespace
}  // namespace lcmd::test
