#include "fake_runtime_api.h"

#include <sys/socket.h>

#include <stdexcept>

#include "serve/connection_probe.h"
#include "serve/httplib_include.h"

namespace lcmd::test {

namespace {

constexpr size_t kMaxResponseBytes = 6 * 1024 * 1024;  // Lambda's synchronous payload limit

void api_error(httplib::Response& res, int status, const std::string& type, const std::string& message) {
  res.status = status;
  res.set_content(R"({"errorMessage":")" + message + R"(","errorType":")" + type + R"("})", "application/json");
}

}  // namespace

FakeRuntimeApi::FakeRuntimeApi() : server_(std::make_unique<httplib::Server>()) {
  // cpp-httplib writes headers and body apart; with Nagle on, curl's delayed ACK held every
  // /next answer ~40 ms, which made the Lambda runtime look slow in the soak test.
  server_->set_tcp_nodelay(true);
  install_routes();
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("the fake Runtime API cannot listen");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // stop() is a no-op until listening has begun: do not hand out a server that cannot stop.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!server_->is_running()) {
    if (std::chrono::steady_clock::now() > give_up) {
      thread_.detach();
      throw std::runtime_error("the fake Runtime API did not start");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

FakeRuntimeApi::~FakeRuntimeApi() { stop(); }

std::string FakeRuntimeApi::endpoint() const { return "127.0.0.1:" + std::to_string(port_); }

void FakeRuntimeApi::install_routes() {
  server_->Get("/2018-06-01/runtime/invocation/next", [this](const httplib::Request& req, httplib::Response& res) {
    std::unique_lock<std::mutex> lock(mutex_);
    // Blocks like the real API; bounded so a forgotten runtime cannot hold a test forever.
    changed_.wait_for(lock, std::chrono::seconds(120), [&] {
      return stopping_ || !events_.empty() || (faults_.count(Route::Next) && faults_.at(Route::Next).remaining != 0);
    });
    if (const auto fault = take_fault(Route::Next)) return serve_fault(*fault, req, res);
    if (stopping_ || events_.empty()) return api_error(res, 500, "ServiceException", "container error");
    const Event event = events_.front();
    events_.pop_front();
    handed_out_[event.id] = false;
    res.set_header("Lambda-Runtime-Aws-Request-Id", event.id);
    if (event.deadline_unix_ms) res.set_header("Lambda-Runtime-Deadline-Ms", std::to_string(*event.deadline_unix_ms));
    res.set_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:lcmd-test");
    res.set_header("Lambda-Runtime-Trace-Id",
                   "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1");
    res.set_content(event.body, "application/json");
  });
  server_->Post(R"(/2018-06-01/runtime/invocation/([^/]+)/(response|error))",
                [this](const httplib::Request& req, httplib::Response& res) {
                  const std::string id = req.matches[1], kind = req.matches[2];
                  std::lock_guard<std::mutex> lock(mutex_);
                  if (const auto fault = take_fault(Route::Reply)) return serve_fault(*fault, req, res);
                  const auto it = handed_out_.find(id);
                  if (it == handed_out_.end() || it->second)
                    return api_error(res, 400, "InvalidRequestID", "unknown or already answered request id");
                  if (kind == "response" && req.body.size() > kMaxResponseBytes)
                    return api_error(res, 413, "RequestEntityTooLarge", "response payload too large");
                  it->second = true;
                  replies_[id] = Reply{kind, req.body, req.get_header_value("Content-Type"),
                                       req.get_header_value("Lambda-Runtime-Function-Error-Type")};
                  changed_.notify_all();
                  res.status = 202;
                  res.set_content(R"({"status":"OK"})", "application/json");
                });
  server_->Post("/2018-06-01/runtime/init/error", [this](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mutex_);
    init_error_ = Reply{"init_error", req.body, req.get_header_value("Content-Type"),
                        req.get_header_value("Lambda-Runtime-Function-Error-Type")};
    changed_.notify_all();
    res.status = 202;
    res.set_content(R"({"status":"OK"})", "application/json");
  });
}

std::string FakeRuntimeApi::invoke(const std::string& event, std::optional<int64_t> deadline_unix_ms) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string id = "req-" + std::to_string(next_id_++);
  events_.push_back({id, event, deadline_unix_ms});
  changed_.notify_all();
  return id;
}

std::optional<FakeRuntimeApi::Reply> FakeRuntimeApi::wait_reply(const std::string& request_id,
                                                                std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] { return replies_.count(request_id) > 0; })) return std::nullopt;
  return replies_.at(request_id);
}

std::optional<FakeRuntimeApi::Reply> FakeRuntimeApi::wait_init_error(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return init_error_.has_value(); });
  return init_error_;
}

void FakeRuntimeApi::inject_fault(Route route, Fault fault, int times) {
  std::lock_guard<std::mutex> lock(mutex_);
  PendingFault& pending = faults_[route];
  pending.fault = fault;
  pending.remaining = times;
  changed_.notify_all();  // a /next call waiting for an event fails now
}

int FakeRuntimeApi::faults_served(Route route) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = faults_.find(route);
  return it == faults_.end() ? 0 : it->second.served;
}

std::optional<FakeRuntimeApi::Fault> FakeRuntimeApi::take_fault(Route route) {
  const auto it = faults_.find(route);
  if (it == faults_.end() || it->second.remaining == 0) return std::nullopt;
  if (it->second.remaining != kForever) --it->second.remaining;
  ++it->second.served;
  return it->second.fault;
}

void FakeRuntimeApi::serve_fault(Fault fault, const httplib::Request& req, httplib::Response& res) {
  if (fault == Fault::ServerError) return api_error(res, 500, "ServiceException", "injected fault");
  // cpp-httplib gives a handler no way to drop its connection: find the socket by its
  // addresses and shut it down, so the client reads end-of-file instead of an answer.
  const auto socket = serve::ConnectionProbe::find(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
  if (!socket) throw std::runtime_error("the fake Runtime API cannot find the connection to close");
  ::shutdown(socket->fd(), SHUT_RDWR);
}

void FakeRuntimeApi::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    changed_.notify_all();  // waiting /next calls answer 500 and return
  }
  server_->stop();
  thread_.join();
}

}  // namespace lcmd::test
