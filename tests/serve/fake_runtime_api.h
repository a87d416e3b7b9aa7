// A local AWS Lambda Runtime API (version 2018-06-01), written from the documented API, to
// run the real lcmd binary as a Lambda bootstrap in tests:
//   GET  /2018-06-01/runtime/invocation/next            blocks until invoke() queues an event
//   POST /2018-06-01/runtime/invocation/{id}/response   202; 400 unknown or answered id; 413 > 6 MB
//   POST /2018-06-01/runtime/invocation/{id}/error      202 (Lambda-Runtime-Function-Error-Type kept)
//   POST /2018-06-01/runtime/init/error                 202
// Faults can be injected on /next and on the reply posts: an HTTP 500, or the connection
// closed without an answer.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace httplib {
class Server;
struct Request;
struct Response;
}

namespace lcmd::test {

class FakeRuntimeApi {
 public:
  struct Reply {
    std::string kind;  // "response" or "error"
    std::string body;
    std::string content_type;
    std::string error_type;  // the Lambda-Runtime-Function-Error-Type header of an error
  };

  FakeRuntimeApi();   // listens on 127.0.0.1, a free port
  ~FakeRuntimeApi();  // stop()

  std::string endpoint() const;  // host:port, for AWS_LAMBDA_RUNTIME_API
  // Queues an event for the next /next call; returns its request id.
  std::string invoke(const std::string& event, std::optional<int64_t> deadline_unix_ms = std::nullopt);
  std::optional<Reply> wait_reply(const std::string& request_id, std::chrono::milliseconds timeout);
  std::optional<Reply> wait_init_error(std::chrono::milliseconds timeout);
  enum class Route { Next, Reply };  // Reply: the /response and /error posts
  enum class Fault { ServerError, CloseConnection };
  static constexpr int kForever = -1;
  // The next `times` calls of the route (kForever: every call from now on, including one
  // waiting in /next) fail this way, before an event is handed out or a reply recorded.
  void inject_fault(Route route, Fault fault, int times);
  // How many calls of the route were failed so far.
  int faults_served(Route route) const;
  // Closes the port: the runtime's calls fail to connect from then on.
  void stop();

 private:
  void install_routes();
  // Takes one pending fault of the route, if any (needs mutex_).
  std::optional<Fault> take_fault(Route route);
  static void serve_fault(Fault fault, const httplib::Request& req, httplib::Response& res);

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  struct Event {
    std::string id, body;
    std::optional<int64_t> deadline_unix_ms;
  };
  std::deque<Event> events_;
  std::map<std::string, bool> handed_out_;  // request id → answered
  std::map<std::string, Reply> replies_;
  std::optional<Reply> init_error_;
  struct PendingFault {
    Fault fault = Fault::ServerError;
    int remaining = 0;  // kForever: never runs out
    int served = 0;
  };
  std::map<Route, PendingFault> faults_;
  bool stopping_ = false;
  int next_id_ = 1;
};

}  // namespace lcmd::test
