#include "cli/serve_commands.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "cli/flags.h"
#include "core/error.h"
#include "serve/http_server.h"
#include "serve/lambda_runtime.h"
#include "serve/process_stats.h"

namespace lcmd {

namespace {

using serve::ServiceOptions;

// An integer setting from the environment variable `env`, or `fallback` when it is unset.
int64_t env_integer(const char* env, int64_t fallback, int64_t lo, int64_t hi) {
  const char* text = std::getenv(env);
  if (!text) return fallback;
  const std::string value = text;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno == ERANGE || x < lo || x > hi)
    throw InputError(std::string(env) + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi) +
                     ", got '" + value + "'");
  return x;
}

// A setting given as --flag, else as the environment variable (when `env` is not null), else the default.
int64_t flag_or_env_integer(const Flags& f, const std::string& flag, const char* env, int64_t fallback, int64_t lo,
                            int64_t hi) {
  if (f.has(flag) || !env) return f.integer(flag, fallback, lo, hi);
  return env_integer(env, fallback, lo, hi);
}

std::string env_string(const char* env, const std::string& fallback) {
  const char* value = std::getenv(env);
  return value && *value ? value : fallback;
}

std::string flag_or_env(const Flags& f, const std::string& flag, const char* env, const std::string& fallback) {
  if (f.has(flag) || !env) return f.str(flag, fallback);
  return env_string(env, fallback);
}

// The LoRAs to merge: the --lora flags, else (Lambda) LCMD_LORA's comma-separated list. A file
// that does not exist is a start-up error, not a model error found half-way through loading.
std::vector<LoraSpec> lora_options(std::vector<LoraSpec> flag_loras, bool lambda) {
  std::string source = "--lora";
  if (flag_loras.empty() && lambda && !env_string("LCMD_LORA", "").empty()) {
    source = "LCMD_LORA";
    flag_loras = parse_lora_list(env_string("LCMD_LORA", ""), source);
  }
  for (const LoraSpec& lora : flag_loras)
    if (!std::filesystem::is_regular_file(lora.path))
      throw InputError(source + " " + lora.path.string() + ": no such file (a .safetensors LoRA, FILE[:SCALE])");
  return flag_loras;
}

// lambda: settings may also come from the function's environment (LCMD_*).
EngineOptions engine_options(const Flags& f, bool lambda, std::vector<LoraSpec> loras) {
  EngineOptions options;
  options.loras = lora_options(std::move(loras), lambda);
  options.threads = static_cast<int>(flag_or_env_integer(f, "threads", lambda ? "LCMD_THREADS" : nullptr, 0, 0, 1024));
  if (options.threads == 0) options.threads = serve::default_thread_count();  // honours a cgroup CPU quota
  options.precision = flag_or_env(f, "precision", lambda ? "LCMD_PRECISION" : nullptr, options.precision);
  options.text_cache_entries =
      static_cast<size_t>(flag_or_env_integer(f, "text-cache", lambda ? "LCMD_TEXT_CACHE" : nullptr, 64, 0, 1000000));
  // Single-file checkpoints and the TAESD decoder, as for `lcmd generate`.
  options.tokenizer_dir = flag_or_env(f, "tokenizer", lambda ? "LCMD_TOKENIZER" : nullptr, "");
  options.config_dir = flag_or_env(f, "config-dir", lambda ? "LCMD_CONFIG_DIR" : nullptr, "");
  options.taesd_dir = flag_or_env(f, "taesd", lambda ? "LCMD_TAESD" : nullptr, "");
  options.default_decoder = flag_or_env(f, "decoder", lambda ? "LCMD_DECODER" : nullptr, "vae");
  if (options.default_decoder != "vae" && options.default_decoder != "taesd")
    throw InputError("decoder must be vae or taesd, got '" + options.default_decoder + "'");
  for (const auto& [name, dir] : {std::pair<const char*, const std::filesystem::path*>{"tokenizer", &options.tokenizer_dir},
                                  {"config-dir", &options.config_dir},
                                  {"taesd", &options.taesd_dir}})
    if (!dir->empty() && !std::filesystem::is_directory(*dir))
      throw InputError(std::string(name) + " " + dir->string() + ": no such directory");
  return options;
}

ServiceOptions service_options(const Flags& f, bool lambda) {
  ServiceOptions options;
  options.limits.max_side =
      static_cast<int>(flag_or_env_integer(f, "max-size", lambda ? "LCMD_MAX_SIZE" : nullptr, 768, 8, kMaxImageSide));
  options.limits.max_steps =
      static_cast<int>(flag_or_env_integer(f, "max-steps", lambda ? "LCMD_MAX_STEPS" : nullptr, 8, 1, kMaxSteps));
  options.result_cache_entries = static_cast<size_t>(
      flag_or_env_integer(f, "result-cache", lambda ? "LCMD_RESULT_CACHE" : nullptr, 0, 0, 1000000));
  options.result_cache_bytes = static_cast<size_t>(flag_or_env_integer(
                                   f, "result-cache-mb", lambda ? "LCMD_RESULT_CACHE_MB" : nullptr, 256, 1, 1 << 20))
                               << 20;
  serve::check_limits(options.limits);
  return options;
}

void print_json_line(const nlohmann::json& line) {
  const std::string text = line.dump() + "\n";
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

// SIGTERM/SIGINT are blocked in every thread (set before any thread starts) and taken by
// one waiting thread, which drains the server: no work happens in a signal handler.
class ShutdownSignals {
 public:
  ShutdownSignals() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGTERM);
    sigaddset(&signals_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
  }
  ~ShutdownSignals() { stop(); }
  // Stops waiting; after this returns the callback no longer runs.
  void stop() {
    stop_waiting_ = true;
    if (waiter_.joinable()) waiter_.join();
  }
  // Calls on_signal on the first signal; stops waiting when destroyed.
  void start(std::function<void(int)> on_signal) {
    waiter_ = std::thread([this, on_signal = std::move(on_signal)] {
      const timespec poll{0, 200 * 1000 * 1000};
      while (!stop_waiting_) {
        const int signal = sigtimedwait(&signals_, nullptr, &poll);
        if (signal > 0) return on_signal(signal);
      }
    });
  }

 private:
  sigset_t signals_;
  std::atomic<bool> stop_waiting_{false};
  std::thread waiter_;
};

}  // namespace

int cmd_serve(int argc, char** argv) {
  std::vector<LoraSpec> loras = take_loras(argc, argv);
  const Flags f(argc, argv,
                {"model", "host", "port", "max-queue", "max-body-bytes", "max-size", "max-steps", "result-cache",
                 "result-cache-mb", "threads", "precision", "text-cache", "read-timeout", "connection-threads",
                 "tokenizer", "config-dir", "taesd", "decoder", "api-key"},
                {"log-prompts"});
  const std::string model = f.required("model");
  serve::HttpServerOptions http;
  http.host = f.str("host", "127.0.0.1");
  http.port = static_cast<int>(f.integer("port", 8080, 0, 65535));
  http.max_queue = static_cast<size_t>(f.integer("max-queue", 8, 0, 10000));
  http.max_body_bytes = static_cast<size_t>(f.integer("max-body-bytes", 64 << 10, 1024, 64 << 20));
  http.read_timeout_seconds = static_cast<int>(f.integer("read-timeout", 10, 1, 3600));
  http.connection_threads = static_cast<size_t>(f.integer("connection-threads", 8, 1, 1024));
  // The environment keeps the key out of `ps` and /proc/PID/cmdline; the flag wins when both are set.
  http.api_key = flag_or_env(f, "api-key", "LCMD_API_KEY", "");
  if (f.has("api-key") && http.api_key.empty()) throw InputError("--api-key must not be empty");
  http.log_prompts = f.has("log-prompts");
  const ServiceOptions service_opts = service_options(f, false);
  const EngineOptions engine_opts = engine_options(f, false, std::move(loras));

  signal(SIGPIPE, SIG_IGN);  // a client that hangs up is an error on its socket, not a kill
  ShutdownSignals signals;   // before the engine and server start their threads
  serve::ImageService service(Engine::load(model, engine_opts), service_opts);
  serve::HttpServer server(service, http);
  const int port = server.bind();
  print_json_line({{"level", "info"},
                   {"message", "listening"},
                   {"url", "http://" + http.host + ":" + std::to_string(port)},
                   {"port", port},
                   {"model", model},
                   {"threads", engine_opts.threads},
                   {"loras", engine_opts.loras.size()},
                   {"max_queue", http.max_queue},
                   {"api_key", !http.api_key.empty()},
                   {"log_prompts", http.log_prompts}});
  signals.start([&server](int signal) {
    print_json_line(
        {{"level", "info"}, {"message", "shutting down: finishing the running request"}, {"signal", signal}});
    server.shutdown();
  });
  server.serve();
  signals.stop();  // before `server` goes away
  print_json_line({{"level", "info"}, {"message", "stopped"}});
  return 0;
}

int cmd_lambda(int argc, char** argv) {
  std::vector<LoraSpec> loras = take_loras(argc, argv);
  const Flags f(argc, argv,
                {"model", "runtime-api", "threads", "precision", "text-cache", "max-size", "max-steps", "result-cache",
                 "result-cache-mb", "tokenizer", "config-dir", "taesd", "decoder"},
                {"log-prompts"});
  serve::LambdaOptions options;
  options.runtime_api = flag_or_env(f, "runtime-api", "AWS_LAMBDA_RUNTIME_API", "");
  if (options.runtime_api.empty())
    throw InputError(
        "AWS_LAMBDA_RUNTIME_API is not set (lcmd lambda runs inside AWS Lambda, or the Runtime Interface "
        "Emulator; --runtime-api HOST:PORT sets it)");
  try {
    options.model_dir = flag_or_env(f, "model", "LCMD_MODEL", "/opt/sd_model");
    options.engine = engine_options(f, true, std::move(loras));
    options.service = service_options(f, true);
    options.settings.deadline_margin_ms = env_integer("LCMD_DEADLINE_MARGIN_MS", 500, 0, 600000);
    options.function_name = env_string("AWS_LAMBDA_FUNCTION_NAME", "local");
    options.metrics_namespace = env_string("LCMD_METRICS_NAMESPACE", "lcmd");
    options.log_prompts = f.has("log-prompts") || env_integer("LCMD_LOG_PROMPTS", 0, 0, 1) == 1;
  } catch (const InputError& e) {
    // A bad setting is an init failure of the function: Lambda shows it on the first invoke.
    // It stays a usage error (exit 2) when the Runtime API cannot be told.
    try {
      serve::RuntimeApiClient(options.runtime_api).post_init_error("config_error", e.what());
    } catch (const std::exception& report) {
      std::fprintf(stderr, "lcmd lambda: the init error could not be reported: %s\n", report.what());
    }
    throw;
  }
  return serve::run_lambda(options);
}

}  // namespace lcmd
