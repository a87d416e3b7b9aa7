// `lcmd serve`: the HTTP front end (cpp-httplib). Routes:
//   POST /v1/generate               the native schema (request.h); "Accept: image/png" → raw PNG
//   POST /v1/images/generations     OpenAI Images API compatible (b64_json only)
//   GET  /healthz                   200 {"status":"ok"} (503 while shutting down); never needs the key
//   GET  /metrics                   Prometheus text format
// With an API key, every other request needs "Authorization: Bearer KEY" (401 otherwise). Every
// response carries a Content-Type and "X-Content-Type-Options: nosniff".
// One generation runs at a time; others wait in a bounded FIFO queue (429 + Retry-After past
// the bound); a client that disconnects while queued is dropped. Request bodies are capped
// (413), reads and writes time out, and shutdown() drains: the running request finishes,
// queued and new ones get 503.
#pragma once
#include <memory>
#include <string>

#include "serve/image_service.h"

namespace lcmd::serve {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;       // 0: any free port (bind() says which)
  size_t max_queue = 8;  // requests that may wait for the generation slot
  size_t max_body_bytes = size_t(64) << 10;
  int read_timeout_seconds = 10;   // per read while receiving headers and body
  int write_timeout_seconds = 30;  // per write while sending the response
  int keep_alive_seconds = 5;      // idle time before a kept-alive connection is closed
  size_t connection_threads = 8;   // connections served at once besides the queued ones
  // When set, every route but GET /healthz needs "Authorization: Bearer <api_key>" (else 401).
  std::string api_key;
  bool log_prompts = false;  // request log lines carry the prompts (off: only their length)
};

class HttpServer {
 public:
  HttpServer(ImageService& service, const HttpServerOptions& options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket and returns its port; std::runtime_error when it cannot.
  int bind();
  // Answers requests until shutdown() has drained the server.
  void serve();
  // Thread-safe, returns when the server has stopped: refuses new requests (503), fails the
  // queued ones (503), lets the running generation finish and its response be written.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;  // keeps cpp-httplib out of this header
};

}  // namespace lcmd::serve
