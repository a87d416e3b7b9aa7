// A local AWS Lambda Runtime API (version 2018-06-01), written from the documented API, to
// run the real lcmd binary as a Lambda bootstrap in tests:
//   GET  /2018-06-01/runtime/invocation/next            blocks until invoke() queues an event
//   POST /2018-06-01/runtime/invocation/{id}/response   202; 400 unknown or answered id; 413 > 6 MB
//   POST /2018-06-01/runtime/invocation/{id}/error      202 (Lambda-Runtime-Function-Error-Type kept)
//   POST /2018-06-01/runtime/init/error                 202
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
  // From now on /next answers 500 ("container error", which the runtime must exit on).
  void fail_next_calls();
  // Closes the port: the runtime's calls fail to connect from then on.
  void stop();

 private:
  void install_routes();

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
  bool failing_ = false, stopping_ = false;
  int next_id_ = 1;
};

}  // namespace lcmd::test
