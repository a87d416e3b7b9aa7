#include "serve/http_server.h"

#include <strings.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <optional>
#include <thread>

#include "serve/bearer_auth.h"
#include "serve/connection_probe.h"
#include "serve/generation_queue.h"
#include "serve/httplib_include.h"
#include "serve/metrics.h"
#include "serve/process_stats.h"

namespace lcmd::serve {

using json = nlohmann::json;

namespace {

enum class Api { Native, OpenAi };

constexpr int kClientClosedRequest = 499;  // nginx's code for "the client went away first"
constexpr const char* kRoutes = "POST /v1/generate, POST /v1/images/generations, GET /healthz, GET /metrics";

// What one request did, for its metrics and log line. cpp-httplib runs a request from
// routing to logging on one thread, so a thread_local carries it between the callbacks.
struct RequestRecord {
  std::optional<std::chrono::steady_clock::time_point> start;
  std::optional<GenerateRequest> request;
  std::optional<GenerateOutcome> outcome;  // its png dropped
  std::string error_type;
  bool counted = false;  // already in the metrics
  // Set when the server has an API key and the request lacks it: whatever route it names is
  // answered 401, after its body has been read (see HttpServer::Impl::check_credentials).
  std::optional<BearerAuth::Verdict> refused;
};
thread_local RequestRecord t_record;

// A bounded set of label values, whatever paths clients try.
std::string endpoint_label(const std::string& path) {
  if (path == "/v1/generate") return "generate";
  if (path == "/v1/images/generations") return "images_generations";
  if (path == "/healthz") return "healthz";
  if (path == "/metrics") return "metrics";
  return "other";
}

ApiError unauthorized(BearerAuth::Verdict verdict) {
  return ApiError(401, "authentication_error",
                  verdict == BearerAuth::Verdict::MissingCredentials
                      ? "this server needs an API key: send the header 'Authorization: Bearer KEY'"
                      : "the API key is not valid (send the header 'Authorization: Bearer KEY')");
}

void write_error(httplib::Response& res, const ApiError& error) {
  res.status = error.status();
  res.set_content(error_response_json(error), "application/json");
  if (error.retry_after_seconds) res.set_header("Retry-After", std::to_string(*error.retry_after_seconds));
  t_record.error_type = error.type();
}

void write_unauthorized(httplib::Response& res, BearerAuth::Verdict verdict) {
  res.headers.erase("Allow");
  res.set_header("WWW-Authenticate", verdict == BearerAuth::Verdict::MissingCredentials
                                         ? R"(Bearer realm="lcmd")"
                                         : R"(Bearer realm="lcmd", error="invalid_token")");
  write_error(res, unauthorized(verdict));
}

using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

// A route handler that runs only for requests that passed the API key check.
Handler authenticated(Handler handler) {
  return [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    if (t_record.refused) return write_unauthorized(res, *t_record.refused);
    handler(req, res);
  };
}

// The error for a response cpp-httplib produced itself (no handler ran, or it refused).
ApiError error_for_status(int status, const httplib::Request& req, size_t max_body_bytes) {
  switch (status) {
    case 400:
      return invalid_request("the request is not valid HTTP");
    case 404:
      return not_found("no route for " + printable(req.method) + " " + printable(req.path) + "; routes: " + kRoutes);
    case 413:
      return payload_too_large("the request body is larger than the " + std::to_string(max_body_bytes) + "-byte limit");
    case 414:
      return ApiError(414, "uri_too_long", "the request target is too long");
    default:
      return ApiError(status, "http_error", "HTTP " + std::to_string(status));
  }
}

// A request whose body cpp-httplib reads (its methods with a body) without saying how long it is.
bool declares_no_body_length(const httplib::Request& req) {
  const bool reads_body = req.method == "POST" || req.method == "PUT" || req.method == "PATCH" ||
                          req.method == "DELETE" || req.method == "PRI";
  const bool chunked = strcasecmp(req.get_header_value("Transfer-Encoding").c_str(), "chunked") == 0;  // as cpp-httplib reads it
  return reads_body && !req.has_header("Content-Length") && !chunked;
}

// Debian's cpp-httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into
// the library). A burst of clients overflows that: the kernel falls back to SYN cookies and
// some connections are reset before the server ever sees them. listen() on the bound socket
// again raises the backlog in place (Linux); the kernel caps it at net.core.somaxconn.
class Listener : public httplib::Server {
 public:
  bool raise_backlog(int backlog) { return ::listen(svr_sock_, backlog) == 0; }
};
constexpr int kListenBacklog = 1024;

GenerateOutcome without_image(GenerateOutcome outcome) {
  outcome.png.clear();
  outcome.png.shrink_to_fit();
  return outcome;
}

}  // namespace

struct HttpServer::Impl {
  Impl(ImageService& service, const HttpServerOptions& options)
      : service(service), options(options), auth(options.api_key), queue(service, options.max_queue) {}

  void install_routes();
  // Notes in t_record whether the request lacks the API key. The answer (401) comes from the
  // route handler or the error handler, after cpp-httplib has read the request body: answered
  // from the pre-routing hook, an unread body would be parsed as the next request.
  void check_credentials(const httplib::Request& req) const;
  void handle_generation(const httplib::Request& req, httplib::Response& res, Api api);
  void write_outcome(const httplib::Request& req, httplib::Response& res, const GenerateOutcome& outcome, Api api);
  void count_request(const httplib::Request& req, const httplib::Response& res);
  void log_request(const httplib::Request& req, const httplib::Response& res);
  std::string render_metrics() const;

  ImageService& service;
  HttpServerOptions options;
  BearerAuth auth;
  GenerationQueue queue;
  ServerMetrics metrics;
  Listener server;
  std::atomic<bool> draining{false};
  // cpp-httplib's stop() does nothing before listening has begun, so shutdown() and serve()
  // meet through these flags instead of racing (see shutdown()).
  std::atomic<bool> stop_requested{false}, serve_entered{false}, serve_returned{false};
};

void HttpServer::Impl::install_routes() {
  server.Post("/v1/generate", authenticated([this](const httplib::Request& req, httplib::Response& res) {
    handle_generation(req, res, Api::Native);
  }));
  server.Post("/v1/images/generations", authenticated([this](const httplib::Request& req, httplib::Response& res) {
    handle_generation(req, res, Api::OpenAi);
  }));
  server.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
    if (draining) return write_error(res, shutting_down("the server is shutting down"));
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  server.Get("/metrics", authenticated([this](const httplib::Request&, httplib::Response& res) {
    res.set_content(render_metrics(), "text/plain; version=0.0.4");
  }));
  server.Get("/v1/(generate|images/generations)",
             authenticated([](const httplib::Request& req, httplib::Response& res) {
               res.set_header("Allow", "POST");
               write_error(res, method_not_allowed(req.path + " takes POST"));
             }));
  server.Post("/(healthz|metrics)", authenticated([](const httplib::Request& req, httplib::Response& res) {
                res.set_header("Allow", "GET");
                write_error(res, method_not_allowed(req.path + " takes GET"));
              }));
}

void HttpServer::Impl::check_credentials(const httplib::Request& req) const {
  if (req.path == "/healthz") return;  // liveness probes carry no credentials
  const BearerAuth::Verdict verdict = auth.check(req.get_header_value("Authorization"));
  if (verdict != BearerAuth::Verdict::Allowed) t_record.refused = verdict;
}

void HttpServer::Impl::handle_generation(const httplib::Request& req, httplib::Response& res, Api api) {
  try {
    if (draining) throw shutting_down("the server is shutting down and takes no new requests");
    t_record.request = api == Api::Native ? parse_generate_request(req.body, service.limits())
                                          : parse_openai_image_request(req.body, service.limits());
    const auto ticket = queue.submit(*t_record.request);
    const auto probe = ConnectionProbe::find(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
    const std::optional<GenerateOutcome> outcome = queue.wait(ticket, [&] { return !probe || !probe->peer_closed(); });
    if (!outcome) {  // nobody to answer; count it here, the response write may never happen
      res.status = kClientClosedRequest;
      t_record.error_type = "client_closed_request";
      count_request(req, res);
      return;
    }
    metrics.count_generation(*outcome);
    write_outcome(req, res, *outcome, api);
    t_record.outcome = without_image(*outcome);
  } catch (const std::exception& e) {
    write_error(res, to_api_error(e));
  }
}

void HttpServer::Impl::write_outcome(const httplib::Request& req, httplib::Response& res,
                                     const GenerateOutcome& outcome, Api api) {
  res.status = 200;
  res.set_header("X-Lcmd-Seed", std::to_string(outcome.seed));
  if (api == Api::Native && accepts_png(req.get_header_value("Accept")))
    res.set_content(reinterpret_cast<const char*>(outcome.png.data()), outcome.png.size(), "image/png");
  else if (api == Api::Native)
    res.set_content(generate_response_json(outcome), "application/json");
  else
    res.set_content(openai_response_json(outcome, static_cast<int64_t>(std::time(nullptr))), "application/json");
}

// Counted before the response is written (cpp-httplib's post-routing hook runs for every
// response, its own errors included), so a client that reads /metrics right after its
// answer finds its request there.
void HttpServer::Impl::count_request(const httplib::Request& req, const httplib::Response& res) {
  if (t_record.counted) return;
  t_record.counted = true;
  const auto now = std::chrono::steady_clock::now();
  metrics.count_request(endpoint_label(req.path), res.status,
                        std::chrono::duration<double>(now - t_record.start.value_or(now)).count());
}

void HttpServer::Impl::log_request(const httplib::Request& req, const httplib::Response& res) {
  count_request(req, res);  // in case a response skipped the post-routing hook
  RequestRecord record = std::move(t_record);
  t_record = {};
  const double seconds =
      record.start ? std::chrono::duration<double>(std::chrono::steady_clock::now() - *record.start).count() : 0;
  const std::string endpoint = endpoint_label(req.path);
  if ((endpoint == "healthz" || endpoint == "metrics") && res.status < 400) return;  // probes: no log noise
  json line = {{"level", res.status >= 500 ? "error" : "info"},
               {"message", "request"},
               {"method", printable(req.method, 16)},
               {"path", printable(req.path, 100)},
               {"status", res.status},
               {"duration_ms", std::round(seconds * 1e6) / 1e3}};
  if (!record.error_type.empty()) line["error_type"] = record.error_type;
  if (record.request) {  // the prompt itself only when asked for (--log-prompts): it may be private
    line["prompt_bytes"] = record.request->prompt.size();
    if (options.log_prompts) {
      line["prompt"] = record.request->prompt;
      line["negative_prompt"] = record.request->negative_prompt;
    }
    line["width"] = record.request->width;
    line["height"] = record.request->height;
    line["steps"] = record.request->steps;
  }
  if (record.outcome) {
    line["seed"] = record.outcome->seed;
    line["timings_ms"] = timings_json(*record.outcome);
  }
  const std::string text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::fwrite(text.data(), 1, text.size(), stdout);  // one call: lines of concurrent requests never interleave
  std::fflush(stdout);
}

std::string HttpServer::Impl::render_metrics() const {
  ServerMetrics::Gauges gauges;
  gauges.queue_depth = queue.waiting();
  gauges.queue_capacity = queue.capacity();
  gauges.generating = queue.running();
  gauges.queue_dropped = queue.dropped();
  gauges.result_cache = service.result_cache_stats();
  gauges.result_cache_enabled = service.result_cache_enabled();
  gauges.resident_memory_bytes = resident_memory_bytes();
  return metrics.render(gauges);
}

HttpServer::HttpServer(ImageService& service, const HttpServerOptions& options)
    : impl_(std::make_unique<Impl>(service, options)) {
  httplib::Server& server = impl_->server;
  // Every queued request holds a connection thread while it waits, so the pool has room for
  // the whole queue, the running request, and the connections answered meanwhile (429s,
  // health checks, metrics).
  const size_t threads = options.max_queue + 1 + std::max<size_t>(options.connection_threads, 1);
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // cpp-httplib's default socket options add SO_REUSEPORT, which lets a second server bind the
  // same port and silently take part of the connections: a port in use must be an error.
  server.set_socket_options([](socket_t sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);  // restart while old connections linger
  });
  server.set_payload_max_length(options.max_body_bytes);
  server.set_read_timeout(options.read_timeout_seconds, 0);
  server.set_write_timeout(options.write_timeout_seconds, 0);
  server.set_keep_alive_timeout(options.keep_alive_seconds);
  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    t_record = {};
    t_record.start = std::chrono::steady_clock::now();
    impl_->check_credentials(req);
    if (declares_no_body_length(req)) {
      // cpp-httplib would read such a body until the client closes the connection: the request
      // would wait out the read timeout. HTTP/1.1 gives it no body (RFC 9112, 6.3), so it is
      // answered before that read, and what follows on the connection is the next request.
      write_error(res, length_required(printable(req.method) + " " + printable(req.path) +
                                       " has no Content-Length header (nor chunked transfer encoding)"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  const size_t max_body = options.max_body_bytes;
  server.set_error_handler(
      httplib::Server::HandlerWithResponse([max_body](const httplib::Request& req, httplib::Response& res) {
        if (t_record.refused && res.status != kClientClosedRequest) {  // unknown routes, oversized bodies
          write_unauthorized(res, *t_record.refused);
          return httplib::Server::HandlerResponse::Handled;
        }
        if (!res.body.empty() || res.status == kClientClosedRequest) return httplib::Server::HandlerResponse::Unhandled;
        write_error(res, error_for_status(res.status, req, max_body));
        return httplib::Server::HandlerResponse::Handled;
      }));
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      write_error(res, to_api_error(e));
    } catch (...) {
      write_error(res, internal_error("unknown failure"));
    }
  });
  server.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // Every response, cpp-httplib's own errors included: a declared type that browsers must
    // not second-guess (no sniffing a JSON error into HTML).
    if (!res.has_header("Content-Type")) res.set_header("Content-Type", "application/json");
    res.set_header("X-Content-Type-Options", "nosniff");
    impl_->count_request(req, res);
  });
  server.set_logger(
      [this](const httplib::Request& req, const httplib::Response& res) { impl_->log_request(req, res); });
  impl_->install_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  const HttpServerOptions& o = impl_->options;
  const int port =
      o.port == 0 ? impl_->server.bind_to_any_port(o.host) : (impl_->server.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port <= 0)
    throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                             " (the port is in use, or the host is not an address of this machine)");
  if (!impl_->server.raise_backlog(kListenBacklog)) throw std::runtime_error("cannot raise the listen backlog");
  return port;
}

void HttpServer::serve() {
  impl_->serve_entered = true;
  if (!impl_->stop_requested) impl_->server.listen_after_bind();
  impl_->serve_returned = true;
}

void HttpServer::shutdown() {
  if (impl_->draining.exchange(true)) return;
  impl_->queue.close();
  impl_->queue.wait_until_idle();
  // Either serve() sees the request and never listens, or it has entered and listening
  // starts soon: wait for that, so stop() finds a running server to stop.
  impl_->stop_requested = true;
  while (impl_->serve_entered && !impl_->serve_returned && !impl_->server.is_running())
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  impl_->server.stop();  // then listen_after_bind() joins the connection threads: responses are written
}

}  // namespace lcmd::serve
