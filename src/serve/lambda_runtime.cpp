#include "serve/lambda_runtime.h"

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "core/error.h"

namespace lcmd::serve {

using json = nlohmann::json;

namespace {

constexpr const char* kApiVersion = "/2018-06-01";

// The connection failed (refused, reset, closed without an answer) or the API answered 5xx:
// worth another try.
class RetryableFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

size_t append_body(char* data, size_t size, size_t count, void* target) {
  static_cast<std::string*>(target)->append(data, size * count);
  return size * count;
}

size_t store_header(char* data, size_t size, size_t count, void* target) {
  const std::string line(data, size * count);
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const size_t start = line.find_first_not_of(' ', colon + 1);
    const size_t end = line.find_last_not_of("\r\n ");
    (*static_cast<std::map<std::string, std::string>*>(target))[name] =
        start == std::string::npos || end < start ? "" : line.substr(start, end - start + 1);
  }
  return size * count;
}

void log_line(const json& line) {
  const std::string text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);  // CloudWatch reads stdout; a buffered line would be lost with the process
}

std::string init_error_type(const std::exception& e) {
  if (dynamic_cast<const ModelError*>(&e)) return "model_error";
  if (dynamic_cast<const InputError*>(&e)) return "config_error";
  return "internal_error";
}

}  // namespace

RuntimeApiClient::RuntimeApiClient(const std::string& endpoint, RetryPolicy retry)
    : base_url_("http://" + endpoint + kApiVersion), retry_(retry) {
  static std::once_flag curl_initialised;
  std::call_once(curl_initialised, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_ = curl_easy_init();
  if (!curl_) throw RuntimeApiError("libcurl could not create a handle");
}

RuntimeApiClient::~RuntimeApiClient() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

RuntimeApiClient::Reply RuntimeApiClient::perform(const std::string& method, const std::string& path,
                                                  const std::string& body, const std::vector<std::string>& headers) {
  CURL* curl = static_cast<CURL*>(curl_);
  curl_easy_reset(curl);  // drops the last call's options; the open connection stays
  Reply reply;
  const std::string url = base_url_ + path;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");  // the Runtime API is local; never via a proxy
  curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 0L);  // no timeout: /next blocks while there is no event
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, store_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply.headers);
  if (method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  } else {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  }
  curl_slist* header_list = curl_slist_append(nullptr, "Expect:");  // no 100-continue round trip
  for (const std::string& h : headers) header_list = curl_slist_append(header_list, h.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, header_list);
  const CURLcode code = curl_easy_perform(curl);
  curl_slist_free_all(header_list);
  if (code != CURLE_OK) throw RetryableFailure(method + " " + url + ": " + curl_easy_strerror(code));
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
  // 500 is the API's "container error"; a transient fault of the local endpoint looks the
  // same, so it is retried a few times before the runtime exits.
  if (reply.status >= 500)
    throw RetryableFailure(method + " " + url + " answered HTTP " + std::to_string(reply.status) + ": " +
                           reply.body.substr(0, 200));
  return reply;
}

RuntimeApiClient::Reply RuntimeApiClient::perform_with_retries(const std::string& method, const std::string& path,
                                                               const std::string& body,
                                                               const std::vector<std::string>& headers) {
  std::chrono::milliseconds backoff = retry_.first_backoff;
  for (int attempt = 1;; ++attempt) {
    try {
      return perform(method, path, body, headers);
    } catch (const RetryableFailure& e) {
      if (attempt >= retry_.attempts)
        throw RuntimeApiError(std::string("the Runtime API failed ") + std::to_string(attempt) + " times: " + e.what());
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
  }
}

Invocation RuntimeApiClient::next() {
  const Reply reply = perform_with_retries("GET", "/runtime/invocation/next", "", {});
  if (reply.status != 200)
    throw RuntimeApiError("GET /runtime/invocation/next answered HTTP " + std::to_string(reply.status) + ": " +
                          reply.body);
  Invocation invocation;
  const auto header = [&](const char* name) {
    const auto it = reply.headers.find(name);
    return it == reply.headers.end() ? std::string() : it->second;
  };
  invocation.request_id = header("lambda-runtime-aws-request-id");
  if (invocation.request_id.empty())
    throw RuntimeApiError("GET /runtime/invocation/next gave no Lambda-Runtime-Aws-Request-Id header");
  const std::string deadline = header("lambda-runtime-deadline-ms");
  char* end = nullptr;
  const long long deadline_ms = std::strtoll(deadline.c_str(), &end, 10);
  if (!deadline.empty() && *end == '\0' && deadline_ms > 0) invocation.deadline_unix_ms = deadline_ms;
  invocation.function_arn = header("lambda-runtime-invoked-function-arn");
  invocation.trace_id = header("lambda-runtime-trace-id");
  // The X-Ray SDKs read the trace of the current invocation from this variable.
  if (invocation.trace_id.empty())
    unsetenv("_X_AMZN_TRACE_ID");
  else
    setenv("_X_AMZN_TRACE_ID", invocation.trace_id.c_str(), 1);
  invocation.event = reply.body;
  return invocation;
}

long RuntimeApiClient::post_response(const std::string& request_id, const std::string& body,
                                     const std::string& content_type) {
  const Reply reply = perform_with_retries("POST", "/runtime/invocation/" + request_id + "/response", body,
                                           {"Content-Type: " + content_type});
  return reply.status;
}

long RuntimeApiClient::post_error(const std::string& request_id, const std::string& error_type,
                                  const std::string& error_json) {
  const Reply reply =
      perform_with_retries("POST", "/runtime/invocation/" + request_id + "/error", error_json,
                           {"Content-Type: application/json", "Lambda-Runtime-Function-Error-Type: " + error_type});
  return reply.status;
}

void RuntimeApiClient::post_init_error(const std::string& error_type, const std::string& message) {
  const std::string body =
      json{{"errorMessage", message}, {"errorType", error_type}}.dump(-1, ' ', false, json::error_handler_t::replace);
  perform_with_retries("POST", "/runtime/init/error", body,
                       {"Content-Type: application/json", "Lambda-Runtime-Function-Error-Type: " + error_type});
}

namespace {

constexpr long kAccepted = 202;
constexpr long kTooLarge = 413;

// A reply the Runtime API did not take for a reason other than its size (e.g. 400: the id was
// answered already, by a post whose acknowledgement was lost and which was then retried).
void log_refused_reply(const Invocation& invocation, const char* kind, long status) {
  if (status == kAccepted) return;
  log_line({{"level", "warning"},
            {"message", std::string("the Runtime API refused the ") + kind},
            {"request_id", invocation.request_id},
            {"status", status}});
}

// Posts the reply; a response the Runtime API refuses as too large (413, past its payload
// limit) is replaced by a function error so the caller is not left waiting for the timeout.
void post_reply(RuntimeApiClient& api, const Invocation& invocation, LambdaReply& reply) {
  if (reply.function_error) {
    log_refused_reply(invocation, "error", api.post_error(invocation.request_id, reply.error_type, reply.payload));
    return;
  }
  const long status = api.post_response(invocation.request_id, reply.payload, "application/json");
  if (status != kTooLarge) return log_refused_reply(invocation, "response", status);
  reply.function_error = true;
  reply.error_type = "payload_too_large";
  reply.status = 413;
  reply.payload = json{{"errorMessage",
                        "the Runtime API refused the response (" + std::to_string(reply.payload.size()) + " bytes)"},
                       {"errorType", reply.error_type}}
                      .dump();
  log_refused_reply(invocation, "error", api.post_error(invocation.request_id, reply.error_type, reply.payload));
}

std::unique_ptr<ImageService> initialise(const LambdaOptions& options, RuntimeApiClient& api) {
  const auto start = std::chrono::steady_clock::now();
  try {
    std::shared_ptr<const Engine> engine = Engine::load(options.model_dir, options.engine);
    auto service = std::make_unique<ImageService>(std::move(engine), options.service);
    const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    log_line({{"level", "info"},
              {"message", "init"},
              {"model", options.model_dir.string()},
              {"threads", options.engine.threads},
              {"load_ms", std::round(load_ms)}});
    return service;
  } catch (const std::exception& e) {
    const std::string type = init_error_type(e);
    log_line({{"level", "error"}, {"message", "init failed"}, {"error_type", type}, {"error", e.what()}});
    api.post_init_error(type, e.what());
    return nullptr;
  }
}

}  // namespace

GenerationThread::GenerationThread() : thread_([this] { work(); }) {}

GenerationThread::~GenerationThread() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void GenerationThread::run(const std::function<void()>& job) {
  // Shared with the worker so that it may still hold the task when this call returns.
  auto task = std::make_shared<std::packaged_task<void()>>(job);
  std::future<void> done = task->get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_ = [task] { (*task)(); };
  }
  changed_.notify_all();
  done.get();  // rethrows what the job threw
}

void GenerationThread::work() {
  // The OpenMP team this thread starts is cloned from it and inherits the name: `top -H` and
  // gdb show which threads generate.
  pthread_setname_np(pthread_self(), kGenerationThreadName);
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stopping_ || pending_; });
    if (!pending_) return;  // stopping, nothing left to run
    const std::function<void()> job = std::exchange(pending_, nullptr);
    lock.unlock();
    job();
    lock.lock();
  }
}

int run_lambda(const LambdaOptions& options) {
  signal(SIGPIPE, SIG_IGN);  // a closed Runtime API connection is an error to handle, not a kill
  try {
    RuntimeApiClient api(options.runtime_api, options.retry);
    const std::unique_ptr<ImageService> service = initialise(options, api);
    if (!service) return 1;
    LambdaHandler handler(*service, options.settings);
    // Invocations are generated on a second long-lived thread, as `lcmd serve` generates on its
    // queue's worker, not on the main thread that loaded the engine. libgomp spins 300k
    // iterations (~3 ms by its estimate, up to ~20 ms on CPUs with a slow `pause`) in every
    // barrier and between parallel regions, unless it manages more threads than there are
    // CPUs: then it spins 100. The main thread's OpenMP team (started by Engine::load) plus this
    // thread's own team make 2*threads-1 managed threads, more than the CPUs when threads is
    // the CPU count (the default), as in the server. With the main thread as the only master,
    // on CPUs shared with other processes, its two threads spun while the other waited for a
    // CPU: 0.3-0.9 s of CPU and 5-30x the server's latency per 64x64 invocation.
    // Created after the engine loaded, so it inherits the main thread's denormal flushing.
    GenerationThread generation_thread;
    for (;;) {
      const Invocation invocation = api.next();
      const auto start = std::chrono::steady_clock::now();
      LambdaReply reply;
      generation_thread.run([&] { reply = handler.handle(invocation); });
      post_reply(api, invocation, reply);
      const double latency_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      const std::string line = invocation_log_line(invocation, reply, latency_ms, options.function_name,
                                                   options.metrics_namespace, unix_now_ms(), options.log_prompts);
      std::fwrite((line + "\n").data(), 1, line.size() + 1, stdout);
      std::fflush(stdout);
    }
  } catch (const RuntimeApiError& e) {
    // Exiting is the documented way out: Lambda then starts a fresh execution environment.
    log_line({{"level", "error"},
              {"message", "runtime API failed; exiting so that Lambda restarts the execution environment"},
              {"error", e.what()}});
    return 1;
  }
}

}  // namespace lcmd::serve
