// Issue 6, soak: 1000 sequential requests on the tiny model through `lcmd serve` (a new
// connection each) and through the Lambda bootstrap against the fake Runtime API. After a
// warm-up of 50 requests the resident memory (VmRSS) grows by less than 5% and the number of
// open file descriptors does not grow. Every request has its own prompt and seed, so neither
// the result cache (off by default anyway) nor the text-embedding cache hides work.
#include <gtest/gtest.h>

#include <filesystem>

#include <cstdio>
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

constexpr int kRequests = 1000;
constexpr int kWarmup = 50;
constexpr double kMaxRssGrowth = 0.05;

std::string soak_request(int i) {
  return json{{"prompt", "soak prompt number " + std::to_string(i)},
              {"seed", 1000 + i},
              {"width", 64},
              {"height", 64},
              {"steps", 1}}
      .dump();
}

struct Resources {
  int64_t rss_bytes = 0;
  int fds = 0;      // every open descriptor
  int sockets = 0;  // of which sockets
};

int socket_count(pid_t pid) {
  std::error_code error;
  int sockets = 0;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", error), end; !error && it != end;
       it.increment(error)) {
    std::error_code link_error;
    sockets += std::filesystem::read_symlink(it->path(), link_error).string().rfind("socket:", 0) == 0;
  }
  return sockets;
}

// What each descriptor is, for the failure message.
std::string fd_targets(pid_t pid) {
  std::string out;
  std::error_code error;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", error), end; !error && it != end;
       it.increment(error)) {
    std::error_code link_error;
    out += " " + it->path().filename().string() + "=" + std::filesystem::read_symlink(it->path(), link_error).string();
  }
  return out;
}

Resources resources_of(pid_t pid) { return {resident_bytes_of(pid), open_fd_count(pid), socket_count(pid)}; }

// Runs `request(i)` kRequests times; checks RSS and descriptors after the warm-up and at the
// end (descriptors may take a moment to settle while closed connections are reaped).
template <class Request>
void soak(const char* front_end, pid_t pid, Request request) {
  const auto start = std::chrono::steady_clock::now();
  Resources warm;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_NO_FATAL_FAILURE(request(i)) << "request " << i;
    if (i + 1 == kWarmup) warm = resources_of(pid);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // At most one descriptor more than after the warm-up: a keep-alive connection or a resolver's
  // pipe may be open at one sample and not the other. A leak of one per request would show as
  // hundreds.
  bool fds_settled = eventually([&] { return open_fd_count(pid) <= warm.fds + 1; }, 5s);
  const Resources end = resources_of(pid);
  const double growth = static_cast<double>(end.rss_bytes - warm.rss_bytes) / static_cast<double>(warm.rss_bytes);
  std::printf("[ soak ] %s: %d requests in %.1f s (%.1f ms each); RSS %.1f MB after %d, %.1f MB after %d (%+.2f%%); "
              "fds %d -> %d (sockets %d -> %d)\n",
              front_end, kRequests, seconds, seconds * 1000 / kRequests, warm.rss_bytes / 1e6, kWarmup,
              end.rss_bytes / 1e6, kRequests, growth * 100, warm.fds, end.fds, warm.sockets, end.sockets);
  EXPECT_GT(warm.rss_bytes, 0);
  EXPECT_LT(growth, kMaxRssGrowth) << front_end << ": RSS grew from " << warm.rss_bytes << " to " << end.rss_bytes;
  EXPECT_TRUE(fds_settled) << front_end << ": open descriptors grew from " << warm.fds << " (" << warm.sockets
                           << " sockets) to " << end.fds << " (" << end.sockets << " sockets):" << fd_targets(pid);
}

TEST(Soak, HttpServerThousandSequentialRequests) {
  ServeProcess server;
  soak("lcmd serve", server.process().pid(), [&](int i) {
    httplib::Client client("127.0.0.1", server.port());  // a new connection per request
    client.set_read_timeout(30, 0);
    const auto res = client.Post("/v1/generate", soak_request(i), "application/json");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    ASSERT_EQ(res->status, 200) << res->body;
    ASSERT_EQ(res->body.find(R"("result":true)"), std::string::npos);  // really generated
  });
  EXPECT_EQ(server.metric("lcmd_generations_total"), kRequests);
}

TEST(Soak, LambdaRuntimeThousandSequentialInvocations) {
  FakeRuntimeApi api;
  ChildProcess bootstrap({LCMD_BINARY}, {"AWS_LAMBDA_RUNTIME_API=" + api.endpoint(),
                                         "LCMD_MODEL=" + tiny_model().string(), "LCMD_THREADS=2"});
  ASSERT_TRUE(bootstrap.wait_for_line("\"init\"", 60s)) << bootstrap.stderr_text();
  soak("lcmd lambda", bootstrap.pid(), [&](int i) {
    const std::string id = api.invoke(soak_request(i), serve::unix_now_ms() + 60'000);
    const auto reply = api.wait_reply(id, 30s);
    ASSERT_TRUE(reply) << bootstrap.stderr_text();
    ASSERT_EQ(reply->kind, "response") << reply->body;
  });
}

}  // namespace
}  // namespace lcmd::test
